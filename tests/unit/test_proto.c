/* Unit tests of the store RPC codec (src/proto): frames, messages, repeated elements. */
#include <stdint.h>
#include <string.h>

#include "common/codec.h"
#include "common/error.h"
#include "proto/proto.h"
#include "raft-log/clog_cmd.h"
#include "raft-log/clog_event.h"
#include "test.h"

/* ---- helpers ---------------------------------------------------------------------- */

/* Parses the single complete frame in b and checks its header. */
static int parse_one(const struct ch_wbuf *b, int type, uint64_t req_id,
                     struct proto_frame *f)
{
    long n = proto_frame_parse(b->data, b->len, PROTO_DEFAULT_MAX_FRAME, f);
    return n == (long)b->len && f->type == type && f->flags == 0 && f->req_id == req_id &&
           f->body.len == b->len - PROTO_HEADER_SIZE;
}

/*
 * Schema-driven field values: every field of a message gets a distinct value
 * derived from a running counter, so a swapped, dropped or mis-sized field shows
 * up as a mismatch.  Values use the top bits of each width to catch truncation.
 */
static char strings[64][32];

#define FILL_u8(f, i) (f) = (uint8_t)(0x80 + (i))
#define FILL_u16(f, i) (f) = (uint16_t)(0xF000 + (i))
#define FILL_u32(f, i) (f) = 0xF0000000u + (uint32_t)(i)
#define FILL_u64(f, i) (f) = 0xF000000000000000ull + (uint64_t)(i) * 0x100000001ull
#define FILL_str(f, i) (f) = fill_slice(i)
#define FILL_bytes(f, i) (f) = fill_slice(i)
#define FILL_FIELD(type, name) FILL_##type(m->name, seed++);
#define SAME_FIELD(type, name) same = same && same_##type(a->name, b->name);

static struct ch_slice fill_slice(int i)
{
    /* Lengths vary with i (including 0) so offsets after a string shift around. */
    snprintf(strings[i % 64], sizeof strings[0], "%.*s", i % 20,
             "abcdefghijklmnopqrstuvwxyz");
    return ch_slice_str(strings[i % 64]);
}

/* same_<type>: equality of one field of each wire type. */
static int same_u8(uint8_t a, uint8_t b)
{
    return a == b;
}
static int same_u16(uint16_t a, uint16_t b)
{
    return a == b;
}
static int same_u32(uint32_t a, uint32_t b)
{
    return a == b;
}
static int same_u64(uint64_t a, uint64_t b)
{
    return a == b;
}
static int same_str(struct ch_slice a, struct ch_slice b)
{
    return ch_slice_eq(a, b);
}
static int same_bytes(struct ch_slice a, struct ch_slice b)
{
    return ch_slice_eq(a, b);
}

/* fill_<name>(m, seed), same_<name>(a, b) for every message and element struct. */
#define SCHEMA_HELPERS(lname, FIELDS)                                              \
    static void fill_##lname(struct proto_##lname *m, int seed)                    \
    {                                                                              \
        FIELDS(FILL_FIELD)                                                         \
    }                                                                              \
    static int same_##lname(const struct proto_##lname *a,                         \
                            const struct proto_##lname *b)                         \
    {                                                                              \
        int same = 1;                                                              \
        FIELDS(SAME_FIELD)                                                         \
        return same;                                                               \
    }
SCHEMA_HELPERS(error, PROTO_ERROR_FIELDS)
SCHEMA_HELPERS(ping, PROTO_PING_FIELDS)
SCHEMA_HELPERS(submit, PROTO_SUBMIT_FIELDS)
SCHEMA_HELPERS(submit_reply, PROTO_SUBMIT_REPLY_FIELDS)
SCHEMA_HELPERS(history, PROTO_HISTORY_FIELDS)
SCHEMA_HELPERS(history_reply, PROTO_HISTORY_REPLY_FIELDS)
SCHEMA_HELPERS(conv_get, PROTO_CONV_GET_FIELDS)
SCHEMA_HELPERS(conv_get_reply, PROTO_CONV_GET_REPLY_FIELDS)
SCHEMA_HELPERS(subscribe, PROTO_SUBSCRIBE_FIELDS)
SCHEMA_HELPERS(subscribed, PROTO_SUBSCRIBED_FIELDS)
SCHEMA_HELPERS(stream, PROTO_STREAM_FIELDS)
SCHEMA_HELPERS(status, PROTO_STATUS_FIELDS)
SCHEMA_HELPERS(status_reply, PROTO_STATUS_REPLY_FIELDS)
SCHEMA_HELPERS(result, PROTO_RESULT_FIELDS)
SCHEMA_HELPERS(member, PROTO_MEMBER_FIELDS)
SCHEMA_HELPERS(shard_status, PROTO_SHARD_STATUS_FIELDS)
SCHEMA_HELPERS(replica, PROTO_REPLICA_FIELDS)
SCHEMA_HELPERS(transfer, PROTO_TRANSFER_FIELDS)
SCHEMA_HELPERS(transfer_reply, PROTO_TRANSFER_REPLY_FIELDS)
#define fill_pong fill_ping /* PONG shares PING's struct */
#define same_pong same_ping

/*
 * For one message: encode with patterned fields, parse the frame, decode, compare,
 * require the body to be consumed exactly, then decode every strict prefix of the
 * body and require CH_EMALFORMED with a cleared struct.
 */
#define ROUND_TRIP(NAME, lname)                                                    \
    do {                                                                           \
        struct proto_##lname in, out, zero;                                        \
        memset(&zero, 0, sizeof zero);                                             \
        fill_##lname(&in, seed);                                                   \
        ch_wbuf_reset(&b);                                                         \
        proto_encode_##lname(&b, 0x1122334455667788ull + (uint64_t)seed, &in);     \
        CHECK_EQ_INT(ch_wbuf_error(&b), 0);                                        \
        struct proto_frame f;                                                      \
        CHECK(parse_one(&b, PROTO_##NAME, 0x1122334455667788ull + (uint64_t)seed, &f)); \
        struct ch_rbuf r;                                                          \
        ch_rbuf_init(&r, f.body.ptr, f.body.len);                                  \
        CHECK_EQ_INT(proto_decode_##lname(&r, &out), 0);                           \
        CHECK(same_##lname(&in, &out));                                            \
        CHECK_EQ_U64(r.left, 0);                                                   \
        for (size_t cut = 0; cut < f.body.len; cut++) {                            \
            ch_rbuf_init(&r, f.body.ptr, cut);                                     \
            CHECK_EQ_INT(proto_decode_##lname(&r, &out), CH_EMALFORMED);           \
            CHECK(memcmp(&out, &zero, sizeof out) == 0);                           \
        }                                                                          \
        seed += 7;                                                                 \
    } while (0)

#define ELEMENT_ROUND_TRIP(lname)                                                  \
    do {                                                                           \
        struct proto_##lname in, out;                                              \
        fill_##lname(&in, seed);                                                   \
        ch_wbuf_reset(&b);                                                         \
        proto_put_##lname(&b, &in);                                                \
        proto_put_##lname(&b, &in);                                                \
        CHECK_EQ_INT(ch_wbuf_error(&b), 0);                                        \
        struct ch_rbuf r;                                                          \
        ch_rbuf_init(&r, b.data, b.len);                                           \
        CHECK_EQ_INT(proto_get_##lname(&r, &out), 0);                              \
        CHECK(same_##lname(&in, &out));                                            \
        CHECK_EQ_U64(r.left, b.len / 2);                                           \
        CHECK_EQ_INT(proto_get_##lname(&r, &out), 0);                              \
        CHECK(same_##lname(&in, &out));                                            \
        CHECK_EQ_U64(r.left, 0);                                                   \
        CHECK_EQ_INT(proto_get_##lname(&r, &out), CH_EMALFORMED);                  \
        for (size_t cut = 0; cut < b.len / 2; cut++) {                             \
            ch_rbuf_init(&r, b.data, cut);                                         \
            CHECK_EQ_INT(proto_get_##lname(&r, &out), CH_EMALFORMED);              \
        }                                                                          \
        seed += 7;                                                                 \
    } while (0)

/* ---- messages --------------------------------------------------------------------- */

static void test_every_message_round_trips(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    int seed = 0;
    for (int round = 0; round < 6; round++) {
        ROUND_TRIP(ERROR, error);
        ROUND_TRIP(PING, ping);
        ROUND_TRIP(PONG, pong);
        ROUND_TRIP(SUBMIT, submit);
        ROUND_TRIP(SUBMIT_REPLY, submit_reply);
        ROUND_TRIP(HISTORY, history);
        ROUND_TRIP(HISTORY_REPLY, history_reply);
        ROUND_TRIP(CONV_GET, conv_get);
        ROUND_TRIP(CONV_GET_REPLY, conv_get_reply);
        ROUND_TRIP(SUBSCRIBE, subscribe);
        ROUND_TRIP(SUBSCRIBED, subscribed);
        ROUND_TRIP(STREAM, stream);
        ROUND_TRIP(STATUS, status);
        ROUND_TRIP(STATUS_REPLY, status_reply);
        ROUND_TRIP(TRANSFER, transfer);
        ROUND_TRIP(TRANSFER_REPLY, transfer_reply);
    }
    ch_wbuf_free(&b);
}

static void test_every_element_round_trips(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    int seed = 0;
    for (int round = 0; round < 6; round++) {
        ELEMENT_ROUND_TRIP(result);
        ELEMENT_ROUND_TRIP(member);
        ELEMENT_ROUND_TRIP(shard_status);
        ELEMENT_ROUND_TRIP(replica);
    }
    ch_wbuf_free(&b);
}

/* The wire layout is a contract with other implementations: pin it byte by byte. */
static void test_wire_layout_is_pinned(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct proto_ping ping = {.nonce = 0x0807060504030201ull};
    proto_encode_ping(&b, 0x1112131415161718ull, &ping);
    static const uint8_t want_ping[] = {
        20, 0, 0, 0,                                    /* length after this field */
        PROTO_PING, 0, 0, 0,                            /* type, flags, reserved */
        0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, /* req_id */
        1, 2, 3, 4, 5, 6, 7, 8,                         /* nonce */
    };
    CHECK_EQ_U64(b.len, sizeof want_ping);
    CHECK(memcmp(b.data, want_ping, sizeof want_ping) == 0);

    ch_wbuf_reset(&b);
    proto_put_error(&b, 9, CH_ENOTLEADER, 3, 0x42, "no");
    static const uint8_t want_error[] = {
        30, 0, 0, 0, PROTO_ERROR, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0,
        CH_ENOTLEADER, 0,                               /* err u16 */
        3, 0, 0, 0,                                     /* leader_hint u32 */
        0x42, 0, 0, 0, 0, 0, 0, 0,                      /* extra u64 */
        2, 0, 'n', 'o',                                 /* message str16 */
    };
    CHECK_EQ_U64(b.len, sizeof want_error);
    CHECK(memcmp(b.data, want_error, sizeof want_error) == 0);
    ch_wbuf_free(&b);
}

static void test_put_error_is_a_complete_frame(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    proto_put_error(&b, 77, CH_ETOOOLD, 0, 123456, "index compacted");
    struct proto_frame f;
    CHECK(parse_one(&b, PROTO_ERROR, 77, &f));
    struct ch_rbuf r;
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    struct proto_error e;
    CHECK_EQ_INT(proto_decode_error(&r, &e), 0);
    CHECK_EQ_INT(e.err, CH_ETOOOLD);
    CHECK_EQ_INT(e.leader_hint, 0);
    CHECK_EQ_U64(e.extra, 123456);
    CHECK(ch_slice_eq(e.message, ch_slice_str("index compacted")));
    CHECK_EQ_U64(r.left, 0);

    /* A NULL message is an empty string. */
    ch_wbuf_reset(&b);
    proto_put_error(&b, 78, CH_EUNAVAILABLE, 2, 0, NULL);
    CHECK(parse_one(&b, PROTO_ERROR, 78, &f));
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    CHECK_EQ_INT(proto_decode_error(&r, &e), 0);
    CHECK_EQ_U64(e.message.len, 0);
    ch_wbuf_free(&b);
}

/* A str field holds at most 65535 bytes: longer input is clamped, never mis-framed. */
static void test_long_string_is_clamped(void)
{
    static char big[70000];
    memset(big, 'x', sizeof big - 1);
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    proto_put_error(&b, 1, CH_EINTERNAL, 0, 0, big);
    struct proto_frame f;
    CHECK(parse_one(&b, PROTO_ERROR, 1, &f));
    struct ch_rbuf r;
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    struct proto_error e;
    CHECK_EQ_INT(proto_decode_error(&r, &e), 0);
    CHECK_EQ_U64(e.message.len, 65535);
    CHECK_EQ_U64(r.left, 0);
    ch_wbuf_free(&b);
}

static void test_type_names(void)
{
    static const struct {
        int type;
        const char *name;
    } want[] = {
        {PROTO_ERROR, "ERROR"},
        {PROTO_PING, "PING"},
        {PROTO_PONG, "PONG"},
        {PROTO_SUBMIT, "SUBMIT"},
        {PROTO_SUBMIT_REPLY, "SUBMIT_REPLY"},
        {PROTO_HISTORY, "HISTORY"},
        {PROTO_HISTORY_REPLY, "HISTORY_REPLY"},
        {PROTO_CONV_GET, "CONV_GET"},
        {PROTO_CONV_GET_REPLY, "CONV_GET_REPLY"},
        {PROTO_SUBSCRIBE, "SUBSCRIBE"},
        {PROTO_SUBSCRIBED, "SUBSCRIBED"},
        {PROTO_STREAM, "STREAM"},
        {PROTO_STATUS, "STATUS"},
        {PROTO_STATUS_REPLY, "STATUS_REPLY"},
        {PROTO_TRANSFER, "TRANSFER"},
        {PROTO_TRANSFER_REPLY, "TRANSFER_REPLY"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK(strcmp(proto_type_name(want[i].type), want[i].name) == 0);
    CHECK(strcmp(proto_type_name(0), "?") == 0);
    CHECK(strcmp(proto_type_name(99), "?") == 0);
    CHECK(strcmp(proto_type_name(-1), "?") == 0);
    CHECK(strcmp(proto_type_name(1000), "?") == 0);
}

/* ---- repeated sections ------------------------------------------------------------ */

static void test_submit_carries_clog_batch(void)
{
    struct ch_wbuf members, batch, b;
    ch_wbuf_init(&members);
    ch_wbuf_init(&batch);
    ch_wbuf_init(&b);

    size_t at = clog_members_begin(&members);
    clog_members_put(&members, ch_slice_str("alice"), CLOG_ROLE_OWNER);
    clog_members_put(&members, ch_slice_str("bob"), CLOG_ROLE_MEMBER);
    clog_members_end(&members, at, 2);

    struct clog_cmd cmds[3] = {
        {.op = CLOG_OP_CREATE, .kind = CLOG_GROUP, .conv = 42,
         .actor = ch_slice_str("alice"), .name = ch_slice_str("team"),
         .members = {members.data, members.len}},
        {.op = CLOG_OP_POST, .conv = 42, .actor = ch_slice_str("bob"),
         .client_msg_id = ch_slice_str("m-1"), .body = ch_slice_str("hello")},
        {.op = CLOG_OP_CURSOR, .kind = CLOG_CURSOR_READ, .conv = 42, .ref_seq = 2,
         .actor = ch_slice_str("alice")},
    };
    for (int i = 0; i < 3; i++)
        clog_batch_add(&batch, &cmds[i]);
    CHECK_EQ_INT(ch_wbuf_error(&batch), 0);

    struct proto_submit in = {.n_cmds = 3, .cmds = {batch.data, batch.len}};
    proto_encode_submit(&b, 5, &in);
    struct proto_frame f;
    CHECK(parse_one(&b, PROTO_SUBMIT, 5, &f));
    struct ch_rbuf r;
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    struct proto_submit out;
    CHECK_EQ_INT(proto_decode_submit(&r, &out), 0);
    CHECK_EQ_INT(out.n_cmds, 3);
    CHECK(ch_slice_eq(out.cmds, in.cmds));

    /* The receiver walks n_cmds × (u32 length, command) and gets the commands back. */
    struct ch_rbuf cr;
    ch_rbuf_init(&cr, out.cmds.ptr, out.cmds.len);
    for (uint32_t i = 0; i < out.n_cmds; i++) {
        uint32_t len = ch_get_u32(&cr);
        struct ch_slice one = ch_get_raw(&cr, len);
        CHECK_EQ_INT(cr.err, 0);
        struct ch_rbuf one_r;
        ch_rbuf_init(&one_r, one.ptr, one.len);
        struct clog_cmd c;
        CHECK_EQ_INT(clog_cmd_decode(&one_r, &c), 0);
        CHECK_EQ_U64(one_r.left, 0);
        CHECK_EQ_INT(c.op, cmds[i].op);
        CHECK_EQ_INT(c.kind, cmds[i].kind);
        CHECK_EQ_U64(c.conv, cmds[i].conv);
        CHECK_EQ_U64(c.ref_seq, cmds[i].ref_seq);
        CHECK(ch_slice_eq(c.actor, cmds[i].actor));
        CHECK(ch_slice_eq(c.client_msg_id, cmds[i].client_msg_id));
        CHECK(ch_slice_eq(c.name, cmds[i].name));
        CHECK(ch_slice_eq(c.body, cmds[i].body));
        CHECK(ch_slice_eq(c.members, cmds[i].members));
    }
    CHECK_EQ_U64(cr.left, 0);

    ch_wbuf_free(&members);
    ch_wbuf_free(&batch);
    ch_wbuf_free(&b);
}

static void test_submit_reply_with_results(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    ch_put_raw(&b, "junk", 4); /* frames may start anywhere in a buffer */
    size_t start = b.len;
    struct proto_submit_reply sr = {.n_results = 3};
    proto_encode_submit_reply(&b, 11, &sr);
    struct proto_result res[3] = {
        {.err = 0, .dup = 0, .conv = 7, .seq = 1, .ts = 1000},
        {.err = 0, .dup = 1, .conv = 7, .seq = 1, .ts = 1000},
        {.err = CH_ENOTMEMBER, .leader_hint = 2, .conv = 8},
    };
    for (int i = 0; i < 3; i++)
        proto_put_result(&b, &res[i]);
    proto_frame_end(&b, start);
    proto_frame_end(&b, start); /* harmless twice */
    CHECK_EQ_INT(ch_wbuf_error(&b), 0);

    struct proto_frame f;
    long n =
        proto_frame_parse(b.data + start, b.len - start, PROTO_DEFAULT_MAX_FRAME, &f);
    CHECK_EQ_INT(n, (long)(b.len - start));
    CHECK_EQ_INT(f.type, PROTO_SUBMIT_REPLY);
    CHECK_EQ_U64(f.req_id, 11);
    struct ch_rbuf r;
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    struct proto_submit_reply got;
    CHECK_EQ_INT(proto_decode_submit_reply(&r, &got), 0);
    CHECK_EQ_INT(got.n_results, 3);
    for (uint32_t i = 0; i < got.n_results; i++) {
        struct proto_result x;
        CHECK_EQ_INT(proto_get_result(&r, &x), 0);
        CHECK(same_result(&x, &res[i]));
    }
    CHECK_EQ_U64(r.left, 0);
    struct proto_result extra;
    CHECK_EQ_INT(proto_get_result(&r, &extra), CH_EMALFORMED);
    ch_wbuf_free(&b);
}

static void test_conv_get_reply_with_members(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct proto_conv_get_reply g = {
        .conv = 99, .kind = CLOG_GROUP, .name = ch_slice_str("ops"),
        .created_by = ch_slice_str("carol"), .created_ts = 5, .last_seq = 12,
        .n_members = 2,
    };
    proto_encode_conv_get_reply(&b, 3, &g);
    struct proto_member m[2] = {
        {.user = ch_slice_str("carol"),
         .role = CLOG_ROLE_OWNER,
         .delivered = 12,
         .read = 10},
        {.user = ch_slice_str("dave"),
         .role = CLOG_ROLE_MEMBER,
         .delivered = 3,
         .read = 0},
    };
    proto_put_member(&b, &m[0]);
    proto_put_member(&b, &m[1]);
    proto_frame_end(&b, 0);

    struct proto_frame f;
    CHECK(parse_one(&b, PROTO_CONV_GET_REPLY, 3, &f));
    struct ch_rbuf r;
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    struct proto_conv_get_reply got;
    CHECK_EQ_INT(proto_decode_conv_get_reply(&r, &got), 0);
    CHECK(same_conv_get_reply(&got, &g));
    for (int i = 0; i < 2; i++) {
        struct proto_member x;
        CHECK_EQ_INT(proto_get_member(&r, &x), 0);
        CHECK(same_member(&x, &m[i]));
    }
    CHECK_EQ_U64(r.left, 0);
    ch_wbuf_free(&b);
}

/* STATUS_REPLY nests: n_shards × (shard_status, n_replicas × replica). */
static void test_status_reply_nested(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct proto_status_reply sr = {.node_id = 2, .uptime_ms = 12345,
                                    .version = ch_slice_str("0.1.0"), .n_shards = 2};
    proto_encode_status_reply(&b, 4, &sr);
    for (uint32_t s = 0; s < 2; s++) {
        struct proto_shard_status ss;
        fill_shard_status(&ss, (int)s);
        ss.shard = s;
        ss.role = s == 0 ? PROTO_ROLE_LEADER : PROTO_ROLE_FOLLOWER;
        ss.n_replicas = s == 0 ? 3 : 0;
        proto_put_shard_status(&b, &ss);
        for (uint32_t i = 0; i < ss.n_replicas; i++) {
            struct proto_replica rep = {.node_id = i + 1, .match_index = 100 + i};
            proto_put_replica(&b, &rep);
        }
    }
    proto_frame_end(&b, 0);

    struct proto_frame f;
    CHECK(parse_one(&b, PROTO_STATUS_REPLY, 4, &f));
    struct ch_rbuf r;
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    struct proto_status_reply got;
    CHECK_EQ_INT(proto_decode_status_reply(&r, &got), 0);
    CHECK(same_status_reply(&got, &sr));
    for (uint32_t s = 0; s < got.n_shards; s++) {
        struct proto_shard_status ss;
        CHECK_EQ_INT(proto_get_shard_status(&r, &ss), 0);
        CHECK_EQ_INT(ss.shard, s);
        CHECK_EQ_INT(ss.role, s == 0 ? PROTO_ROLE_LEADER : PROTO_ROLE_FOLLOWER);
        CHECK_EQ_INT(ss.n_replicas, s == 0 ? 3 : 0);
        for (uint32_t i = 0; i < ss.n_replicas; i++) {
            struct proto_replica rep;
            CHECK_EQ_INT(proto_get_replica(&r, &rep), 0);
            CHECK_EQ_INT(rep.node_id, i + 1);
            CHECK_EQ_U64(rep.match_index, 100 + i);
        }
    }
    CHECK_EQ_U64(r.left, 0);
    ch_wbuf_free(&b);
}

/* HISTORY_REPLY and STREAM carry raw clog event records after their fixed fields. */
static void test_history_and_stream_carry_events(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct clog_event ev[2] = {
        {.type = CLOG_EV_MESSAGE, .conv = 5, .seq = 1, .ts = 10,
         .actor = ch_slice_str("eve"), .client_msg_id = ch_slice_str("c1"),
         .body = ch_slice_str("hi")},
        {.type = CLOG_EV_EDITED, .conv = 5, .seq = 2, .ts = 11, .ref_seq = 1,
         .actor = ch_slice_str("eve"), .body = ch_slice_str("hello")},
    };
    struct proto_history_reply hr = {
        .conv = 5, .last_seq = 2, .has_more = 0, .n_events = 2};
    proto_encode_history_reply(&b, 8, &hr);
    for (int i = 0; i < 2; i++)
        clog_event_encode(&b, &ev[i]);
    proto_frame_end(&b, 0);
    size_t second = b.len;
    struct proto_stream st = {.shard = 3, .index = 77, .n_events = 2};
    proto_encode_stream(&b, 9, &st);
    for (int i = 0; i < 2; i++)
        clog_event_encode(&b, &ev[i]);
    proto_frame_end(&b, second);
    CHECK_EQ_INT(ch_wbuf_error(&b), 0);

    struct proto_frame f;
    long n = proto_frame_parse(b.data, b.len, PROTO_DEFAULT_MAX_FRAME, &f);
    CHECK_EQ_INT(n, (long)second);
    CHECK_EQ_INT(f.type, PROTO_HISTORY_REPLY);
    struct ch_rbuf r;
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    struct proto_history_reply hgot;
    CHECK_EQ_INT(proto_decode_history_reply(&r, &hgot), 0);
    CHECK(same_history_reply(&hgot, &hr));
    for (uint32_t i = 0; i < hgot.n_events; i++) {
        struct clog_event e;
        CHECK_EQ_INT(clog_event_decode(&r, &e), 0);
        CHECK_EQ_U64(e.seq, ev[i].seq);
        CHECK(ch_slice_eq(e.body, ev[i].body));
    }
    CHECK_EQ_U64(r.left, 0);

    long n2 =
        proto_frame_parse(b.data + n, b.len - (size_t)n, PROTO_DEFAULT_MAX_FRAME, &f);
    CHECK_EQ_INT(n2, (long)(b.len - second));
    CHECK_EQ_INT(f.type, PROTO_STREAM);
    CHECK_EQ_U64(f.req_id, 9);
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    struct proto_stream sgot;
    CHECK_EQ_INT(proto_decode_stream(&r, &sgot), 0);
    CHECK(same_stream(&sgot, &st));
    for (uint32_t i = 0; i < sgot.n_events; i++) {
        struct clog_event e;
        CHECK_EQ_INT(clog_event_decode(&r, &e), 0);
        CHECK_EQ_INT(e.type, ev[i].type);
    }
    CHECK_EQ_U64(r.left, 0);
    ch_wbuf_free(&b);
}

/* ---- frame parsing ---------------------------------------------------------------- */

/* Builds three back-to-back frames of different shapes into b. */
static void three_frames(struct ch_wbuf *b, size_t ends[3])
{
    struct proto_ping ping = {.nonce = 1};
    proto_encode_ping(b, 1, &ping);
    ends[0] = b->len;
    proto_put_error(b, 2, CH_ENOTFOUND, 0, 0, "no such conversation");
    ends[1] = b->len;
    struct proto_submit_reply sr = {.n_results = 1};
    size_t start = b->len;
    proto_encode_submit_reply(b, 3, &sr);
    struct proto_result res = {.conv = 4, .seq = 5, .ts = 6};
    proto_put_result(b, &res);
    proto_frame_end(b, start);
    ends[2] = b->len;
}

static void test_back_to_back_frames(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    size_t ends[3];
    three_frames(&b, ends);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        struct proto_frame f;
        long n =
            proto_frame_parse(b.data + off, b.len - off, PROTO_DEFAULT_MAX_FRAME, &f);
        CHECK_EQ_INT(n, (long)(ends[i] - off));
        CHECK_EQ_U64(f.req_id, (uint64_t)i + 1);
        CHECK(f.body.ptr == b.data + off + PROTO_HEADER_SIZE);
        off += (size_t)n;
    }
    CHECK_EQ_U64(off, b.len);
    struct proto_frame f;
    CHECK_EQ_INT(proto_frame_parse(b.data + off, 0, PROTO_DEFAULT_MAX_FRAME, &f), 0);
    ch_wbuf_free(&b);
}

/*
 * Resumability: every strict prefix of a frame needs more input (0), and the
 * full frame (plus any bytes of the next one) yields exactly that frame.
 */
static void test_partial_input_at_every_split(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    size_t ends[3];
    three_frames(&b, ends);
    size_t start = 0;
    for (int i = 0; i < 3; i++) {
        for (size_t have = 0; have < ends[i] - start; have++) {
            struct proto_frame f;
            CHECK_EQ_INT(
                proto_frame_parse(b.data + start, have, PROTO_DEFAULT_MAX_FRAME, &f), 0);
        }
        for (size_t have = ends[i] - start; have <= b.len - start; have++) {
            struct proto_frame f;
            long n = proto_frame_parse(b.data + start, have, PROTO_DEFAULT_MAX_FRAME, &f);
            CHECK_EQ_INT(n, (long)(ends[i] - start));
            CHECK_EQ_U64(f.req_id, (uint64_t)i + 1);
        }
        start = ends[i];
    }

    /* The same stream fed one byte at a time through a reassembly buffer. */
    uint8_t acc[512];
    size_t acc_len = 0, frames = 0;
    CHECK(b.len <= sizeof acc);
    for (size_t i = 0; i < b.len; i++) {
        acc[acc_len++] = b.data[i];
        struct proto_frame f;
        long n = proto_frame_parse(acc, acc_len, PROTO_DEFAULT_MAX_FRAME, &f);
        CHECK(n >= 0);
        if (n > 0) {
            CHECK_EQ_U64(f.req_id, frames + 1);
            CHECK_EQ_U64(i + 1, ends[frames]);
            memmove(acc, acc + n, acc_len - (size_t)n);
            acc_len -= (size_t)n;
            frames++;
        }
    }
    CHECK_EQ_U64(frames, 3);
    CHECK_EQ_U64(acc_len, 0);
    ch_wbuf_free(&b);
}

static void test_oversize_frame(void)
{
    uint8_t hdr[PROTO_HEADER_SIZE] = {0};
    struct proto_frame f;

    /* Refused from the length field alone, before the body arrives. */
    ch_store_u32(hdr, 1000);
    CHECK_EQ_INT(proto_frame_parse(hdr, 4, 1003, &f), -CH_ETOOLARGE);
    CHECK_EQ_INT(proto_frame_parse(hdr, sizeof hdr, 1003, &f), -CH_ETOOLARGE);
    /* length + 4 == max_frame is allowed (then it just needs more input). */
    CHECK_EQ_INT(proto_frame_parse(hdr, sizeof hdr, 1004, &f), 0);

    ch_store_u32(hdr, 0xffffffffu);
    CHECK_EQ_INT(proto_frame_parse(hdr, 4, PROTO_DEFAULT_MAX_FRAME, &f), -CH_ETOOLARGE);
    ch_store_u32(hdr, PROTO_DEFAULT_MAX_FRAME - 3);
    CHECK_EQ_INT(proto_frame_parse(hdr, 4, PROTO_DEFAULT_MAX_FRAME, &f), -CH_ETOOLARGE);
    ch_store_u32(hdr, PROTO_DEFAULT_MAX_FRAME - 4);
    CHECK_EQ_INT(proto_frame_parse(hdr, sizeof hdr, PROTO_DEFAULT_MAX_FRAME, &f), 0);

    /* A real frame against a max_frame one byte too small. */
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct proto_ping ping = {.nonce = 3};
    proto_encode_ping(&b, 1, &ping);
    CHECK_EQ_INT(proto_frame_parse(b.data, b.len, b.len - 1, &f), -CH_ETOOLARGE);
    CHECK_EQ_INT(proto_frame_parse(b.data, b.len, b.len, &f), (long)b.len);
    ch_wbuf_free(&b);
}

static void test_bad_header(void)
{
    uint8_t hdr[PROTO_HEADER_SIZE] = {0};
    struct proto_frame f;

    /* Length below the fixed header: malformed as soon as the length is known. */
    for (uint32_t n = 0; n < PROTO_HEADER_SIZE - 4; n++) {
        ch_store_u32(hdr, n);
        CHECK_EQ_INT(proto_frame_parse(hdr, 4, PROTO_DEFAULT_MAX_FRAME, &f),
                     -CH_EMALFORMED);
        CHECK_EQ_INT(proto_frame_parse(hdr, sizeof hdr, PROTO_DEFAULT_MAX_FRAME, &f),
                     -CH_EMALFORMED);
    }
    /* Exactly 12: a frame with an empty body. */
    ch_store_u32(hdr, 12);
    hdr[4] = 200; /* unknown types are the dispatcher's business */
    hdr[5] = 0xff;
    CHECK_EQ_INT(proto_frame_parse(hdr, sizeof hdr, PROTO_DEFAULT_MAX_FRAME, &f), 16);
    CHECK_EQ_INT(f.type, 200);
    CHECK_EQ_INT(f.flags, 0xff);
    CHECK_EQ_U64(f.body.len, 0);

    /* Reserved bits set: malformed once those bytes have arrived. */
    for (int at = 6; at < 8; at++) {
        memset(hdr, 0, sizeof hdr);
        ch_store_u32(hdr, 100);
        hdr[at] = 0x01;
        CHECK_EQ_INT(proto_frame_parse(hdr, 7, PROTO_DEFAULT_MAX_FRAME, &f), 0);
        CHECK_EQ_INT(proto_frame_parse(hdr, 8, PROTO_DEFAULT_MAX_FRAME, &f),
                     -CH_EMALFORMED);
        CHECK_EQ_INT(proto_frame_parse(hdr, sizeof hdr, PROTO_DEFAULT_MAX_FRAME, &f),
                     -CH_EMALFORMED);
    }
}

/* Fixed fields that are present but out of bounds, and repeated sections cut short. */
static void test_truncated_and_hostile_bodies(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);

    /* A SUBMIT whose cmds length claims more than the frame could ever hold. */
    ch_put_u32(&b, 1);
    ch_put_u32(&b, PROTO_DEFAULT_MAX_FRAME + 1);
    struct ch_rbuf r;
    ch_rbuf_init(&r, b.data, b.len);
    struct proto_submit s;
    CHECK_EQ_INT(proto_decode_submit(&r, &s), CH_EMALFORMED);
    CHECK_EQ_INT(s.n_cmds, 0);

    /* ... and one that claims more than is present. */
    ch_wbuf_reset(&b);
    ch_put_u32(&b, 1);
    ch_put_u32(&b, 10);
    ch_put_raw(&b, "123456789", 9);
    ch_rbuf_init(&r, b.data, b.len);
    CHECK_EQ_INT(proto_decode_submit(&r, &s), CH_EMALFORMED);

    /* A str length beyond the body. */
    ch_wbuf_reset(&b);
    ch_put_u16(&b, CH_EINTERNAL);
    ch_put_u32(&b, 0);
    ch_put_u64(&b, 0);
    ch_put_u16(&b, 0xffff);
    ch_put_raw(&b, "short", 5);
    ch_rbuf_init(&r, b.data, b.len);
    struct proto_error e;
    CHECK_EQ_INT(proto_decode_error(&r, &e), CH_EMALFORMED);

    /* A reply that declares more elements than it carries. */
    ch_wbuf_reset(&b);
    struct proto_submit_reply sr = {.n_results = 2};
    proto_encode_submit_reply(&b, 1, &sr);
    struct proto_result res = {.conv = 1, .seq = 1};
    proto_put_result(&b, &res);
    proto_frame_end(&b, 0);
    struct proto_frame f;
    CHECK(parse_one(&b, PROTO_SUBMIT_REPLY, 1, &f));
    ch_rbuf_init(&r, f.body.ptr, f.body.len);
    struct proto_submit_reply got;
    CHECK_EQ_INT(proto_decode_submit_reply(&r, &got), 0);
    CHECK_EQ_INT(got.n_results, 2);
    CHECK_EQ_INT(proto_get_result(&r, &res), 0);
    CHECK_EQ_INT(proto_get_result(&r, &res), CH_EMALFORMED);
    CHECK_EQ_U64(res.conv, 0);

    /* A reader that already failed keeps failing. */
    ch_rbuf_init(&r, b.data, 1);
    (void)ch_get_u16(&r);
    struct proto_ping p;
    CHECK_EQ_INT(proto_decode_ping(&r, &p), CH_EMALFORMED);
    ch_wbuf_free(&b);
}

TEST_MAIN(
    TEST_CASE(test_every_message_round_trips), TEST_CASE(test_every_element_round_trips),
    TEST_CASE(test_wire_layout_is_pinned), TEST_CASE(test_put_error_is_a_complete_frame),
    TEST_CASE(test_long_string_is_clamped), TEST_CASE(test_type_names),
    TEST_CASE(test_submit_carries_clog_batch), TEST_CASE(test_submit_reply_with_results),
    TEST_CASE(test_conv_get_reply_with_members), TEST_CASE(test_status_reply_nested),
    TEST_CASE(test_history_and_stream_carry_events), TEST_CASE(test_back_to_back_frames),
    TEST_CASE(test_partial_input_at_every_split), TEST_CASE(test_oversize_frame),
    TEST_CASE(test_bad_header), TEST_CASE(test_truncated_and_hostile_bodies))
