/* Command, member-list and Raft-entry codecs of the conversation log. */
#include "clog_cmd.h"

#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

const char *clog_op_name(int op)
{
    static const char *const names[] = {
        "?", "create", "add_member", "remove_member", "leave", "post",
        "edit", "delete", "react", "cursor", "user_create", "user_update",
    };
    _Static_assert(sizeof names / sizeof names[0] == CLOG_OP__MAX, "one name per op");
    if (op <= 0 || op >= CLOG_OP__MAX)
        return "?";
    return names[op];
}

/*
 * Command layout: u8 op | u8 kind | u16 0 | u64 conv | u64 ref_seq |
 * str16 actor | str16 target | str16 client_msg_id | str16 name |
 * bytes32 body | bytes32 members
 */
void clog_cmd_encode(struct ch_wbuf *b, const struct clog_cmd *cmd)
{
    ch_put_u8(b, cmd->op);
    ch_put_u8(b, cmd->kind);
    ch_put_u16(b, 0);
    ch_put_u64(b, cmd->conv);
    ch_put_u64(b, cmd->ref_seq);
    ch_put_str16(b, cmd->actor);
    ch_put_str16(b, cmd->target);
    ch_put_str16(b, cmd->client_msg_id);
    ch_put_str16(b, cmd->name);
    ch_put_bytes32(b, cmd->body);
    ch_put_bytes32(b, cmd->members);
}

int clog_cmd_decode(struct ch_rbuf *r, struct clog_cmd *cmd)
{
    memset(cmd, 0, sizeof *cmd);
    cmd->op = ch_get_u8(r);
    cmd->kind = ch_get_u8(r);
    uint16_t reserved = ch_get_u16(r);
    cmd->conv = ch_get_u64(r);
    cmd->ref_seq = ch_get_u64(r);
    cmd->actor = ch_get_str16(r);
    cmd->target = ch_get_str16(r);
    cmd->client_msg_id = ch_get_str16(r);
    cmd->name = ch_get_str16(r);
    cmd->body = ch_get_bytes32(r, CLOG_MAX_BODY);
    cmd->members = ch_get_bytes32(r, CLOG_MAX_MEMBERS_BLOB);
    if (r->err || reserved != 0 || cmd->actor.len > CLOG_MAX_USER ||
        cmd->target.len > CLOG_MAX_USER || cmd->client_msg_id.len > CLOG_MAX_CLIENT_MSG_ID ||
        cmd->name.len > CLOG_MAX_NAME)
        return CH_EMALFORMED;
    if (cmd->op == 0 || cmd->op >= CLOG_OP__MAX)
        return CH_EUNKNOWN_OP;
    return 0;
}

/* ---- member lists ---- */

size_t clog_members_begin(struct ch_wbuf *b)
{
    size_t at = b->len;
    ch_put_u32(b, 0);
    return at;
}

void clog_members_put(struct ch_wbuf *b, struct ch_slice user, uint8_t role)
{
    ch_put_str16(b, user);
    ch_put_u8(b, role);
}

void clog_members_end(struct ch_wbuf *b, size_t begin, uint32_t count)
{
    ch_patch_u32(b, begin, count);
}

int clog_members_open(struct clog_members_iter *it, struct ch_slice blob, uint32_t *count)
{
    ch_rbuf_init(&it->r, blob.ptr, blob.len);
    it->left = ch_get_u32(&it->r);
    /* each member takes at least 3 bytes: a bound before anyone allocates by count */
    if (it->r.err || it->left > it->r.left / 3)
        return CH_EMALFORMED;
    if (count)
        *count = it->left;
    return 0;
}

int clog_members_next(struct clog_members_iter *it, struct ch_slice *user, uint8_t *role)
{
    if (it->left == 0)
        return it->r.left == 0 ? 0 : -CH_EMALFORMED;
    *user = ch_get_str16(&it->r);
    *role = ch_get_u8(&it->r);
    if (it->r.err || user->len == 0 || user->len > CLOG_MAX_USER)
        return -CH_EMALFORMED;
    it->left--;
    return 1;
}

/* ---- entries ---- */

void clog_batch_add(struct ch_wbuf *batch, const struct clog_cmd *cmd)
{
    size_t at = batch->len;
    ch_put_u32(batch, 0);
    clog_cmd_encode(batch, cmd);
    ch_patch_u32(batch, at, (uint32_t)(batch->len - at - 4));
}

static void put_header(uint8_t *p, const struct clog_entry_header *h, int flags,
                       uint32_t raw_len, uint32_t stored_len)
{
    struct ch_wbuf w;
    ch_wbuf_init(&w);
    ch_put_u32(&w, CLOG_ENTRY_MAGIC);
    ch_put_u8(&w, CLOG_ENTRY_VERSION);
    ch_put_u8(&w, (uint8_t)flags);
    ch_put_u16(&w, 0);
    ch_put_u32(&w, h->origin);
    ch_put_u64(&w, h->batch_id);
    ch_put_u64(&w, h->ts_ms);
    ch_put_u32(&w, h->n_cmds);
    ch_put_u32(&w, raw_len);
    ch_put_u32(&w, stored_len);
    if (w.len == CLOG_ENTRY_HEADER_SIZE && !w.oom)
        memcpy(p, w.data, CLOG_ENTRY_HEADER_SIZE);
    ch_wbuf_free(&w);
}

/* raft_uv requires entry lengths that are multiples of 8: zero padding. */
static size_t padded(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

int clog_entry_encode(const struct clog_entry_header *h, const void *cmds, size_t cmds_len,
                      size_t compress_min, void *(*alloc)(size_t), uint8_t **out,
                      size_t *out_len)
{
    if (cmds_len > CLOG_MAX_ENTRY)
        return CH_ETOOLARGE;
    size_t room = cmds_len;
    int try_lz4 = compress_min > 0 && cmds_len >= compress_min;
    if (try_lz4 && (size_t)LZ4_compressBound((int)cmds_len) > room)
        room = (size_t)LZ4_compressBound((int)cmds_len);
    uint8_t *buf = alloc(padded(CLOG_ENTRY_HEADER_SIZE + room));
    if (buf == NULL)
        return CH_ENOMEM;
    uint8_t *payload = buf + CLOG_ENTRY_HEADER_SIZE;
    size_t stored = cmds_len;
    int flags = 0;
    if (try_lz4) {
        int n = LZ4_compress_default(cmds, (char *)payload, (int)cmds_len, (int)room);
        if (n > 0 && (size_t)n < cmds_len) {
            stored = (size_t)n;
            flags = CLOG_ENTRY_FLAG_LZ4;
        }
    }
    if (!flags && cmds_len)
        memcpy(payload, cmds, cmds_len); /* did not pay (or not tried): store raw */
    put_header(buf, h, flags, (uint32_t)cmds_len, (uint32_t)stored);
    size_t len = CLOG_ENTRY_HEADER_SIZE + stored;
    memset(buf + len, 0, padded(len) - len);
    *out = buf;
    *out_len = padded(len);
    return 0;
}

static int read_header(const void *buf, size_t len, struct clog_entry_header *h, int *flags,
                       uint32_t *raw_len, uint32_t *stored_len)
{
    struct ch_rbuf r;
    ch_rbuf_init(&r, buf, len);
    uint32_t magic = ch_get_u32(&r);
    uint8_t version = ch_get_u8(&r);
    *flags = ch_get_u8(&r);
    uint16_t reserved = ch_get_u16(&r);
    h->origin = ch_get_u32(&r);
    h->batch_id = ch_get_u64(&r);
    h->ts_ms = ch_get_u64(&r);
    h->n_cmds = ch_get_u32(&r);
    *raw_len = ch_get_u32(&r);
    *stored_len = ch_get_u32(&r);
    if (r.err || magic != CLOG_ENTRY_MAGIC)
        return CH_EMALFORMED;
    if (version != CLOG_ENTRY_VERSION)
        return CH_EVERSION;
    /* the stored payload is followed by 0..7 zero bytes of padding */
    if (reserved != 0 || (*flags & ~CLOG_ENTRY_FLAG_LZ4) != 0 || r.left < *stored_len ||
        r.left - *stored_len > 7)
        return CH_EMALFORMED;
    for (size_t i = *stored_len; i < r.left; i++)
        if (r.p[i] != 0)
            return CH_EMALFORMED;
    if (*raw_len > CLOG_MAX_ENTRY)
        return CH_ETOOLARGE;
    if (!(*flags & CLOG_ENTRY_FLAG_LZ4) && *raw_len != *stored_len)
        return CH_EMALFORMED;
    /* a command takes at least 4 + 36 bytes: bound n_cmds by the payload */
    if (h->n_cmds > *raw_len / 40)
        return CH_EMALFORMED;
    return 0;
}

int clog_entry_peek(const void *buf, size_t len, struct clog_entry_header *h)
{
    int flags;
    uint32_t raw_len, stored_len;
    return read_header(buf, len, h, &flags, &raw_len, &stored_len);
}

int clog_entry_decode(const void *buf, size_t len, struct clog_entry_header *h,
                      struct ch_wbuf *scratch, const uint8_t **payload,
                      size_t *payload_len)
{
    int flags;
    uint32_t raw_len, stored_len;
    int rv = read_header(buf, len, h, &flags, &raw_len, &stored_len);
    if (rv != 0)
        return rv;
    const uint8_t *stored = (const uint8_t *)buf + CLOG_ENTRY_HEADER_SIZE;
    if (!(flags & CLOG_ENTRY_FLAG_LZ4)) {
        *payload = stored;
        *payload_len = raw_len;
        return 0;
    }
    ch_wbuf_reset(scratch);
    if (ch_wbuf_reserve(scratch, raw_len ? raw_len : 1) != 0)
        return CH_ENOMEM;
    int n = LZ4_decompress_safe((const char *)stored, (char *)scratch->data, (int)stored_len,
                                (int)raw_len);
    if (n < 0 || (uint32_t)n != raw_len)
        return CH_EMALFORMED;
    scratch->len = raw_len;
    *payload = scratch->data;
    *payload_len = raw_len;
    return 0;
}
