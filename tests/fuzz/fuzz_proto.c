/*
 * Fuzz target: store RPC frames from arbitrary bytes, as a connection sees them.
 * Every frame is run through its message decoder and the repeated elements it
 * declares (the counts are attacker-controlled, so each loop stops at the first
 * failed getter).  Beyond "no crash", it checks two properties and aborts when
 * they fail: a frame's strict prefixes need more input, and re-encoding what a
 * decoder accepted reproduces exactly the bytes it consumed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/codec.h"
#include "common/error.h"
#include "proto/proto.h"
#include "raft-log/clog_cmd.h"
#include "raft-log/clog_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ch_wbuf out;

/* Bytes between two reader positions must equal what the encoder writes. */
static void same_bytes(const uint8_t *from, const struct ch_rbuf *r, size_t header)
{
    size_t used = (size_t)(r->p - from);
    if (out.len != header + used ||
        (used > 0 && memcmp(out.data + header, from, used) != 0))
        abort();
}

/* Decodes the fixed fields; on success re-encodes them as a frame and compares. */
#define FIXED(lname, m)                                                                  \
    do {                                                                                 \
        const uint8_t *from = r->p;                                                      \
        if (proto_decode_##lname(r, &(m)) != 0)                                          \
            return;                                                                      \
        ch_wbuf_reset(&out);                                                             \
        proto_encode_##lname(&out, 0, &(m));                                             \
        same_bytes(from, r, PROTO_HEADER_SIZE);                                          \
    } while (0)

/* get_<element>: 1 when the next element decodes (and re-encodes identically), else 0. */
#define ELEMENT(lname)                                                                   \
    static int get_##lname(struct ch_rbuf *r, struct proto_##lname *e)                   \
    {                                                                                    \
        const uint8_t *from = r->p;                                                      \
        if (proto_get_##lname(r, e) != 0)                                                \
            return 0;                                                                    \
        ch_wbuf_reset(&out);                                                             \
        proto_put_##lname(&out, e);                                                      \
        same_bytes(from, r, 0);                                                          \
        return 1;                                                                        \
    }
ELEMENT(result)
ELEMENT(member)
ELEMENT(shard_status)
ELEMENT(replica)

static void submit_commands(struct ch_slice cmds, uint32_t n_cmds)
{
    struct ch_rbuf c;
    ch_rbuf_init(&c, cmds.ptr, cmds.len);
    for (uint32_t i = 0; i < n_cmds && c.left > 0; i++) {
        struct ch_slice one = ch_get_bytes32(&c, cmds.len);
        if (c.err)
            return;
        struct ch_rbuf cr;
        ch_rbuf_init(&cr, one.ptr, one.len);
        struct clog_cmd cmd;
        if (clog_cmd_decode(&cr, &cmd) == 0 && cmd.op == CLOG_OP_CREATE) {
            struct clog_members_iter it;
            struct ch_slice user;
            uint8_t role;
            if (clog_members_open(&it, cmd.members, NULL) == 0)
                while (clog_members_next(&it, &user, &role) == 1)
                    ;
        }
    }
}

static void events(struct ch_rbuf *r, uint32_t n)
{
    struct clog_event ev;
    for (uint32_t i = 0; i < n && r->left > 0 && clog_event_decode(r, &ev) == 0; i++)
        ;
}

static void body(const struct proto_frame *f)
{
    struct ch_rbuf rb, *r = &rb;
    ch_rbuf_init(r, f->body.ptr, f->body.len);
    switch (f->type) {
    case PROTO_ERROR: {
        struct proto_error m;
        FIXED(error, m);
        break;
    }
    case PROTO_PING:
    case PROTO_PONG: {
        struct proto_ping m;
        if (f->type == PROTO_PING)
            FIXED(ping, m);
        else
            FIXED(pong, m);
        break;
    }
    case PROTO_SUBMIT: {
        struct proto_submit m;
        FIXED(submit, m);
        submit_commands(m.cmds, m.n_cmds);
        break;
    }
    case PROTO_SUBMIT_REPLY: {
        struct proto_submit_reply m;
        struct proto_result e;
        FIXED(submit_reply, m);
        for (uint32_t i = 0; i < m.n_results && get_result(r, &e); i++)
            ;
        break;
    }
    case PROTO_HISTORY: {
        struct proto_history m;
        FIXED(history, m);
        break;
    }
    case PROTO_HISTORY_REPLY: {
        struct proto_history_reply m;
        FIXED(history_reply, m);
        events(r, m.n_events);
        break;
    }
    case PROTO_CONV_GET: {
        struct proto_conv_get m;
        FIXED(conv_get, m);
        break;
    }
    case PROTO_CONV_GET_REPLY: {
        struct proto_conv_get_reply m;
        struct proto_member e;
        FIXED(conv_get_reply, m);
        for (uint32_t i = 0; i < m.n_members && get_member(r, &e); i++)
            ;
        break;
    }
    case PROTO_SUBSCRIBE: {
        struct proto_subscribe m;
        FIXED(subscribe, m);
        break;
    }
    case PROTO_SUBSCRIBED: {
        struct proto_subscribed m;
        FIXED(subscribed, m);
        break;
    }
    case PROTO_STREAM: {
        struct proto_stream m;
        FIXED(stream, m);
        events(r, m.n_events);
        break;
    }
    case PROTO_STATUS: {
        struct proto_status m;
        FIXED(status, m);
        break;
    }
    case PROTO_STATUS_REPLY: {
        struct proto_status_reply m;
        struct proto_shard_status s;
        struct proto_replica e;
        FIXED(status_reply, m);
        for (uint32_t i = 0; i < m.n_shards && get_shard_status(r, &s); i++)
            for (uint32_t k = 0; k < s.n_replicas && get_replica(r, &e); k++)
                ;
        break;
    }
    case PROTO_USER_GET: {
        struct proto_user_get m;
        FIXED(user_get, m);
        break;
    }
    case PROTO_USER_GET_REPLY: {
        struct proto_user_get_reply m;
        FIXED(user_get_reply, m);
        break;
    }
    case PROTO_USER_CONVS: {
        struct proto_user_convs m;
        FIXED(user_convs, m);
        break;
    }
    case PROTO_USER_CONVS_REPLY: {
        struct proto_user_convs_reply m;
        struct proto_user_conv e;
        FIXED(user_convs_reply, m);
        for (uint32_t i = 0; i < m.n_convs && proto_get_user_conv(r, &e) == 0; i++)
            ;
        break;
    }
    case PROTO_PUBLISH: {
        struct proto_publish m;
        FIXED(publish, m);
        break;
    }
    case PROTO_UNSUBSCRIBE: {
        struct proto_unsubscribe m;
        FIXED(unsubscribe, m);
        break;
    }
    case PROTO_TRANSFER: {
        struct proto_transfer m;
        FIXED(transfer, m);
        break;
    }
    case PROTO_TRANSFER_REPLY: {
        struct proto_transfer_reply m;
        FIXED(transfer_reply, m);
        break;
    }
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        struct proto_frame f;
        long n = proto_frame_parse(data + off, size - off, PROTO_DEFAULT_MAX_FRAME, &f);
        if (n <= 0)
            break;
        if ((size_t)n > size - off || (size_t)n != f.body.len + PROTO_HEADER_SIZE ||
            f.body.ptr != data + off + PROTO_HEADER_SIZE)
            abort();
        /* Resumability: a strict prefix of a complete frame is never an error. */
        static const size_t cuts[] = {0, 3, 4, 7, 8, 15, 16};
        struct proto_frame g;
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
            if (cuts[i] < (size_t)n &&
                proto_frame_parse(data + off, cuts[i], PROTO_DEFAULT_MAX_FRAME, &g) != 0)
                abort();
        if (proto_frame_parse(data + off, (size_t)n - 1, PROTO_DEFAULT_MAX_FRAME, &g) !=
            0)
            abort();
        body(&f);
        off += (size_t)n;
    }
    ch_wbuf_free(&out);
    return 0;
}
