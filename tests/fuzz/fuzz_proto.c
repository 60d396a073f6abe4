/* Fuzz target: store RPC frames and every message decoder, as chorusd sees them. */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/common/error.h"
#include "../../src/proto/proto.h"
#include "../../src/raft-log/clog_cmd.h"
#include "../../src/raft-log/clog_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void body(const struct proto_frame *f)
{
    struct ch_rbuf r;
    ch_rbuf_init(&r, f->body.ptr, f->body.len);
    union {
        struct proto_error error;
        struct proto_ping ping;
        struct proto_submit submit;
        struct proto_submit_reply submit_reply;
        struct proto_history history;
        struct proto_history_reply history_reply;
        struct proto_conv_get conv_get;
        struct proto_conv_get_reply conv_get_reply;
        struct proto_subscribe subscribe;
        struct proto_subscribed subscribed;
        struct proto_stream stream;
        struct proto_status status;
        struct proto_status_reply status_reply;
    } m;
    uint32_t n = 0;
    switch (f->type) {
    case PROTO_ERROR: proto_decode_error(&r, &m.error); break;
    case PROTO_PING: proto_decode_ping(&r, &m.ping); break;
    case PROTO_PONG: proto_decode_pong(&r, &m.ping); break;
    case PROTO_SUBMIT:
        if (proto_decode_submit(&r, &m.submit) == 0) {
            struct ch_rbuf c;
            ch_rbuf_init(&c, m.submit.cmds.ptr, m.submit.cmds.len);
            for (uint32_t i = 0; i < m.submit.n_cmds && !c.err; i++) {
                struct ch_slice one = ch_get_bytes32(&c, m.submit.cmds.len);
                struct ch_rbuf cr;
                ch_rbuf_init(&cr, one.ptr, one.len);
                struct clog_cmd cmd;
                if (!c.err && clog_cmd_decode(&cr, &cmd) == 0 && cmd.op == CLOG_OP_CREATE) {
                    struct clog_members_iter it;
                    struct ch_slice u;
                    uint8_t role;
                    if (clog_members_open(&it, cmd.members, NULL) == 0)
                        while (clog_members_next(&it, &u, &role) == 1)
                            ;
                }
            }
        }
        break;
    case PROTO_SUBMIT_REPLY:
        if (proto_decode_submit_reply(&r, &m.submit_reply) == 0) {
            struct proto_result res;
            for (n = 0; n < m.submit_reply.n_results && proto_get_result(&r, &res) == 0; n++)
                ;
        }
        break;
    case PROTO_HISTORY: proto_decode_history(&r, &m.history); break;
    case PROTO_HISTORY_REPLY:
    case PROTO_STREAM: {
        uint32_t count = 0;
        if (f->type == PROTO_HISTORY_REPLY && proto_decode_history_reply(&r, &m.history_reply) == 0)
            count = m.history_reply.n_events;
        if (f->type == PROTO_STREAM && proto_decode_stream(&r, &m.stream) == 0)
            count = m.stream.n_events;
        struct clog_event ev;
        for (n = 0; n < count && clog_event_decode(&r, &ev) != CH_EMALFORMED; n++)
            ;
        break;
    }
    case PROTO_CONV_GET: proto_decode_conv_get(&r, &m.conv_get); break;
    case PROTO_CONV_GET_REPLY:
        if (proto_decode_conv_get_reply(&r, &m.conv_get_reply) == 0) {
            struct proto_member pm;
            for (n = 0; n < m.conv_get_reply.n_members && proto_get_member(&r, &pm) == 0; n++)
                ;
        }
        break;
    case PROTO_SUBSCRIBE: proto_decode_subscribe(&r, &m.subscribe); break;
    case PROTO_SUBSCRIBED: proto_decode_subscribed(&r, &m.subscribed); break;
    case PROTO_STATUS: proto_decode_status(&r, &m.status); break;
    case PROTO_STATUS_REPLY:
        if (proto_decode_status_reply(&r, &m.status_reply) == 0) {
            struct proto_shard_status ss;
            struct proto_replica rep;
            for (n = 0; n < m.status_reply.n_shards && proto_get_shard_status(&r, &ss) == 0;
                 n++)
                for (uint32_t k = 0; k < ss.n_replicas && proto_get_replica(&r, &rep) == 0; k++)
                    ;
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        struct proto_frame f;
        long n = proto_frame_parse(data + off, size - off, 1 << 20, &f);
        if (n <= 0)
            break;
        if ((size_t)n > size - off)
            abort();
        body(&f);
        off += (size_t)n;
    }
    return 0;
}
