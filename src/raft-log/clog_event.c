/* Event record codec. */
#include "clog_event.h"

#include <string.h>

#include "../common/error.h"
#include "clog_cmd.h"

const char *clog_event_type_name(int type)
{
    static const char *const names[] = {
        "?", "created", "member_added", "member_removed", "member_left",
        "message", "edited", "deleted", "reaction", "receipt", "user_disabled",
    };
    if (type <= 0 || type >= CLOG_EV__MAX)
        return "?";
    return names[type];
}

void clog_event_encode(struct ch_wbuf *b, const struct clog_event *ev)
{
    size_t at = b->len;
    ch_put_u32(b, 0);
    ch_put_u8(b, ev->type);
    ch_put_u8(b, ev->kind);
    ch_put_u16(b, 0);
    ch_put_u64(b, ev->conv);
    ch_put_u64(b, ev->seq);
    ch_put_u64(b, ev->ts);
    ch_put_u64(b, ev->ref_seq);
    ch_put_str16(b, ev->actor);
    ch_put_str16(b, ev->target);
    ch_put_str16(b, ev->client_msg_id);
    ch_put_bytes32(b, ev->body);
    ch_put_bytes32(b, ev->members);
    ch_patch_u32(b, at, (uint32_t)(b->len - at));
}

int clog_event_decode(struct ch_rbuf *r, struct clog_event *ev)
{
    memset(ev, 0, sizeof *ev);
    uint32_t len = ch_get_u32(r);
    if (r->err || len < CLOG_EVENT_MIN_SIZE || len - 4 > r->left) {
        r->err = CH_EMALFORMED;
        r->left = 0;
        return CH_EMALFORMED;
    }
    struct ch_rbuf rec;
    ch_rbuf_init(&rec, r->p, len - 4);
    r->p += len - 4;
    r->left -= len - 4;
    ev->type = ch_get_u8(&rec);
    ev->kind = ch_get_u8(&rec);
    uint16_t reserved = ch_get_u16(&rec);
    ev->conv = ch_get_u64(&rec);
    ev->seq = ch_get_u64(&rec);
    ev->ts = ch_get_u64(&rec);
    ev->ref_seq = ch_get_u64(&rec);
    ev->actor = ch_get_str16(&rec);
    ev->target = ch_get_str16(&rec);
    ev->client_msg_id = ch_get_str16(&rec);
    ev->body = ch_get_bytes32(&rec, CLOG_MAX_BODY);
    ev->members = ch_get_bytes32(&rec, CLOG_MAX_MEMBERS_BLOB);
    if (rec.err || rec.left != 0 || reserved != 0 || ev->actor.len > CLOG_MAX_USER ||
        ev->target.len > CLOG_MAX_USER || ev->client_msg_id.len > CLOG_MAX_CLIENT_MSG_ID) {
        r->err = CH_EMALFORMED;
        return CH_EMALFORMED;
    }
    if (ev->type == 0 || ev->type >= CLOG_EV__MAX)
        return CH_EUNKNOWN_OP;
    return 0;
}
