/* The store RPC codec: frame parsing and the schema-generated message codecs. */
#include "proto.h"

#include <string.h>

#include "../common/error.h"

/* ---- field codecs, selected by the schema's type token ---------------------------- */

/*
 * A schema entry X(type, name) expands into PROTO__PUT_<type> / PROTO__GET_<type>,
 * so adding a field to a schema in proto.h updates the struct, the encoder and the
 * decoder at once.  Lengths are bounded on both sides: str by its u16 prefix (the
 * writer clamps to 65535), bytes by the largest frame we would ever accept.
 */
#define PROTO__PUT_u8(b, v) ch_put_u8((b), (v))
#define PROTO__PUT_u16(b, v) ch_put_u16((b), (v))
#define PROTO__PUT_u32(b, v) ch_put_u32((b), (v))
#define PROTO__PUT_u64(b, v) ch_put_u64((b), (v))
#define PROTO__PUT_str(b, v) ch_put_str16((b), (v))
#define PROTO__PUT_bytes(b, v) ch_put_bytes32((b), (v))

#define PROTO__GET_u8(r) ch_get_u8(r)
#define PROTO__GET_u16(r) ch_get_u16(r)
#define PROTO__GET_u32(r) ch_get_u32(r)
#define PROTO__GET_u64(r) ch_get_u64(r)
#define PROTO__GET_str(r) ch_get_str16(r)
#define PROTO__GET_bytes(r) ch_get_bytes32((r), PROTO_DEFAULT_MAX_FRAME)

#define PROTO__ENCODE_FIELD(type, name) PROTO__PUT_##type(b, m->name);
#define PROTO__DECODE_FIELD(type, name) m->name = PROTO__GET_##type(r);

/*
 * Reads the fields of one schema.  The reader's error sticks after the first
 * short read, so one check at the end covers every field; on failure *m is
 * cleared rather than left half-filled with zeros from the failed getters.
 */
#define PROTO__DECODE_BODY(FIELDS)                                                 \
    FIELDS(PROTO__DECODE_FIELD)                                                    \
    if (r->err) {                                                                  \
        memset(m, 0, sizeof *m);                                                   \
        return CH_EMALFORMED;                                                      \
    }                                                                              \
    return 0;

/* ---- frames ----------------------------------------------------------------------- */

static void frame_begin(struct ch_wbuf *b, uint8_t type, uint64_t req_id)
{
    ch_put_u32(b, 0); /* length, patched by proto_frame_end */
    ch_put_u8(b, type);
    ch_put_u8(b, 0); /* flags */
    ch_put_u16(b, 0); /* reserved */
    ch_put_u64(b, req_id);
}

void proto_frame_end(struct ch_wbuf *b, size_t start)
{
    ch_patch_u32(b, start, (uint32_t)(b->len - start - 4));
}

long proto_frame_parse(const uint8_t *buf, size_t len, size_t max_frame,
                       struct proto_frame *f)
{
    if (len < 4)
        return 0;
    uint32_t n = ch_load_u32(buf);
    /* Refuse an oversized frame from its first four bytes, before buffering it. */
    if ((uint64_t)n + 4 > max_frame)
        return -CH_ETOOLARGE;
    if (n < PROTO_HEADER_SIZE - 4)
        return -CH_EMALFORMED;
    if (len < 8)
        return 0;
    if (buf[6] != 0 || buf[7] != 0)
        return -CH_EMALFORMED;
    if (len - 4 < n)
        return 0;
    f->type = buf[4];
    f->flags = buf[5];
    f->req_id = (uint64_t)ch_load_u32(buf + 8) | (uint64_t)ch_load_u32(buf + 12) << 32;
    f->body.ptr = buf + PROTO_HEADER_SIZE;
    f->body.len = n - (PROTO_HEADER_SIZE - 4);
    return (long)n + 4;
}

const char *proto_type_name(int type)
{
    switch (type) {
#define PROTO__TYPE_NAME(NAME, code, FIELDS)                                       \
    case code:                                                                     \
        return #NAME;
        PROTO_MESSAGES(PROTO__TYPE_NAME)
#undef PROTO__TYPE_NAME
    default:
        return "?";
    }
}

/* ---- messages: encode writes a complete frame, decode reads the fixed fields ------ */

#define PROTO__DEFINE(NAME, lname, FIELDS)                                         \
    void proto_encode_##lname(struct ch_wbuf *b, uint64_t req_id,                  \
                              const struct proto_##lname *m)                       \
    {                                                                              \
        size_t start = b->len;                                                     \
        frame_begin(b, PROTO_##NAME, req_id);                                      \
        FIELDS(PROTO__ENCODE_FIELD)                                                \
        proto_frame_end(b, start);                                                 \
    }                                                                              \
    int proto_decode_##lname(struct ch_rbuf *r, struct proto_##lname *m)           \
    {                                                                              \
        PROTO__DECODE_BODY(FIELDS)                                                 \
    }

PROTO__DEFINE(ERROR, error, PROTO_ERROR_FIELDS)
PROTO__DEFINE(PING, ping, PROTO_PING_FIELDS)
PROTO__DEFINE(PONG, pong, PROTO_PING_FIELDS) /* struct proto_pong is proto_ping */
PROTO__DEFINE(SUBMIT, submit, PROTO_SUBMIT_FIELDS)
PROTO__DEFINE(SUBMIT_REPLY, submit_reply, PROTO_SUBMIT_REPLY_FIELDS)
PROTO__DEFINE(HISTORY, history, PROTO_HISTORY_FIELDS)
PROTO__DEFINE(HISTORY_REPLY, history_reply, PROTO_HISTORY_REPLY_FIELDS)
PROTO__DEFINE(CONV_GET, conv_get, PROTO_CONV_GET_FIELDS)
PROTO__DEFINE(CONV_GET_REPLY, conv_get_reply, PROTO_CONV_GET_REPLY_FIELDS)
PROTO__DEFINE(SUBSCRIBE, subscribe, PROTO_SUBSCRIBE_FIELDS)
PROTO__DEFINE(SUBSCRIBED, subscribed, PROTO_SUBSCRIBED_FIELDS)
PROTO__DEFINE(STREAM, stream, PROTO_STREAM_FIELDS)
PROTO__DEFINE(STATUS, status, PROTO_STATUS_FIELDS)
PROTO__DEFINE(STATUS_REPLY, status_reply, PROTO_STATUS_REPLY_FIELDS)
PROTO__DEFINE(USER_GET, user_get, PROTO_USER_GET_FIELDS)
PROTO__DEFINE(USER_GET_REPLY, user_get_reply, PROTO_USER_GET_REPLY_FIELDS)
PROTO__DEFINE(USER_CONVS, user_convs, PROTO_USER_CONVS_FIELDS)
PROTO__DEFINE(USER_CONVS_REPLY, user_convs_reply, PROTO_USER_CONVS_REPLY_FIELDS)
PROTO__DEFINE(PUBLISH, publish, PROTO_PUBLISH_FIELDS)
PROTO__DEFINE(UNSUBSCRIBE, unsubscribe, PROTO_UNSUBSCRIBE_FIELDS)
PROTO__DEFINE(TRANSFER, transfer, PROTO_TRANSFER_FIELDS)
PROTO__DEFINE(TRANSFER_REPLY, transfer_reply, PROTO_TRANSFER_REPLY_FIELDS)
PROTO__DEFINE(META_GET, meta_get, PROTO_META_GET_FIELDS)
PROTO__DEFINE(META_GET_REPLY, meta_get_reply, PROTO_META_GET_REPLY_FIELDS)
PROTO__DEFINE(META_PROPOSE, meta_propose, PROTO_META_PROPOSE_FIELDS)
PROTO__DEFINE(META_PROPOSE_REPLY, meta_propose_reply, PROTO_META_PROPOSE_REPLY_FIELDS)
PROTO__DEFINE(SHARD_CONF, shard_conf, PROTO_SHARD_CONF_FIELDS)
PROTO__DEFINE(SHARD_CONF_REPLY, shard_conf_reply, PROTO_SHARD_CONF_REPLY_FIELDS)
PROTO__DEFINE(SNAPSHOT, snapshot, PROTO_SNAPSHOT_FIELDS)
PROTO__DEFINE(SNAPSHOT_REPLY, snapshot_reply, PROTO_SNAPSHOT_REPLY_FIELDS)

/* ---- repeated elements: appended to an open frame, no header of their own --------- */

#define PROTO__DEFINE_ELEMENT(lname, FIELDS)                                       \
    void proto_put_##lname(struct ch_wbuf *b, const struct proto_##lname *m)       \
    {                                                                              \
        FIELDS(PROTO__ENCODE_FIELD)                                                \
    }                                                                              \
    int proto_get_##lname(struct ch_rbuf *r, struct proto_##lname *m)              \
    {                                                                              \
        PROTO__DECODE_BODY(FIELDS)                                                 \
    }

PROTO__DEFINE_ELEMENT(result, PROTO_RESULT_FIELDS)
PROTO__DEFINE_ELEMENT(member, PROTO_MEMBER_FIELDS)
PROTO__DEFINE_ELEMENT(shard_status, PROTO_SHARD_STATUS_FIELDS)
PROTO__DEFINE_ELEMENT(replica, PROTO_REPLICA_FIELDS)
PROTO__DEFINE_ELEMENT(user_conv, PROTO_USER_CONV_FIELDS)

void proto_put_error(struct ch_wbuf *b, uint64_t req_id, int err, uint32_t leader_hint,
                     uint64_t extra, const char *message)
{
    struct proto_error m = {
        .err = (uint16_t)err,
        .leader_hint = leader_hint,
        .extra = extra,
        .message = ch_slice_str(message),
    };
    proto_encode_error(b, req_id, &m);
}
