/* Unit tests of the store RPC codec (src/proto). */
#include "test.h"

#include "common/error.h"
#include "proto/proto.h"
#include "raft-log/clog_cmd.h"

static void parse_one(const struct ch_wbuf *b, struct proto_frame *f, struct ch_rbuf *body)
{
    long n = proto_frame_parse(b->data, b->len, PROTO_DEFAULT_MAX_FRAME, f);
    if (n != (long)b->len)
        abort();
    ch_rbuf_init(body, f->body.ptr, f->body.len);
}

static void fixed_messages_round_trip(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct proto_history h = {.conv = 42, .after = 7, .before = 0, .limit = 50,
                              .flags = PROTO_FLAG_STALE_OK};
    proto_encode_history(&b, 99, &h);
    struct proto_frame f;
    struct ch_rbuf body;
    parse_one(&b, &f, &body);
    CHECK_EQ_INT(f.type, PROTO_HISTORY);
    CHECK_EQ_U64(f.req_id, 99);
    struct proto_history d;
    CHECK_EQ_INT(proto_decode_history(&body, &d), 0);
    CHECK(d.conv == 42 && d.after == 7 && d.before == 0 && d.limit == 50 &&
          d.flags == PROTO_FLAG_STALE_OK);
    CHECK_EQ_INT(body.left, 0);

    ch_wbuf_reset(&b);
    proto_put_error(&b, 5, CH_ENOTLEADER, 3, 17, "not the leader");
    parse_one(&b, &f, &body);
    struct proto_error e;
    CHECK_EQ_INT(f.type, PROTO_ERROR);
    CHECK_EQ_INT(proto_decode_error(&body, &e), 0);
    CHECK(e.err == CH_ENOTLEADER && e.leader_hint == 3 && e.extra == 17);
    CHECK(ch_slice_eq(e.message, ch_slice_str("not the leader")));

    ch_wbuf_reset(&b);
    struct proto_ping p = {.nonce = 0xfeedface};
    proto_encode_pong(&b, 1, &p);
    parse_one(&b, &f, &body);
    CHECK_EQ_INT(f.type, PROTO_PONG);
    CHECK_EQ_INT(proto_decode_pong(&body, &p), 0);
    CHECK_EQ_U64(p.nonce, 0xfeedface);
    CHECK(strcmp(proto_type_name(PROTO_SUBMIT), "SUBMIT") == 0);
    CHECK(strcmp(proto_type_name(250), "?") == 0);
    ch_wbuf_free(&b);
}

static void repeated_sections(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    size_t start = b.len;
    struct proto_status_reply sr = {.node_id = 2, .uptime_ms = 1234,
                                    .version = ch_slice_str("0.1.0"), .n_shards = 2};
    proto_encode_status_reply(&b, 8, &sr);
    for (uint32_t s = 0; s < 2; s++) {
        struct proto_shard_status ss = {.shard = s, .role = PROTO_ROLE_LEADER, .term = 3,
                                        .commit_index = 100 + s, .applied_index = 99,
                                        .leader_id = 2, .n_replicas = 3};
        proto_put_shard_status(&b, &ss);
        for (uint32_t r = 1; r <= 3; r++) {
            struct proto_replica rep = {.node_id = r, .match_index = 10 * r};
            proto_put_replica(&b, &rep);
        }
    }
    proto_frame_end(&b, start);
    struct proto_frame f;
    struct ch_rbuf body;
    parse_one(&b, &f, &body);
    struct proto_status_reply d;
    CHECK_EQ_INT(proto_decode_status_reply(&body, &d), 0);
    CHECK(d.node_id == 2 && d.n_shards == 2 && ch_slice_eq(d.version, ch_slice_str("0.1.0")));
    for (uint32_t s = 0; s < 2; s++) {
        struct proto_shard_status ss;
        CHECK_EQ_INT(proto_get_shard_status(&body, &ss), 0);
        CHECK(ss.shard == s && ss.commit_index == 100 + s && ss.n_replicas == 3);
        for (uint32_t r = 1; r <= 3; r++) {
            struct proto_replica rep;
            CHECK_EQ_INT(proto_get_replica(&body, &rep), 0);
            CHECK(rep.node_id == r && rep.match_index == 10 * r);
        }
    }
    CHECK_EQ_INT(body.left, 0);
    struct proto_replica extra;
    CHECK_EQ_INT(proto_get_replica(&body, &extra), CH_EMALFORMED);
    ch_wbuf_free(&b);
}

static void submit_carries_clog_commands(void)
{
    struct ch_wbuf batch, b;
    ch_wbuf_init(&batch);
    ch_wbuf_init(&b);
    struct clog_cmd cmd = {.op = CLOG_OP_POST, .conv = 5, .actor = ch_slice_str("ann"),
                           .client_msg_id = ch_slice_str("c1"), .body = ch_slice_str("hey")};
    clog_batch_add(&batch, &cmd);
    clog_batch_add(&batch, &cmd);
    struct proto_submit m = {.n_cmds = 2, .cmds = {batch.data, batch.len}};
    proto_encode_submit(&b, 3, &m);
    struct proto_frame f;
    struct ch_rbuf body;
    parse_one(&b, &f, &body);
    struct proto_submit d;
    CHECK_EQ_INT(proto_decode_submit(&body, &d), 0);
    CHECK_EQ_INT(d.n_cmds, 2);
    struct ch_rbuf r;
    ch_rbuf_init(&r, d.cmds.ptr, d.cmds.len);
    for (int i = 0; i < 2; i++) {
        struct ch_slice one = ch_get_bytes32(&r, d.cmds.len);
        struct ch_rbuf cr;
        ch_rbuf_init(&cr, one.ptr, one.len);
        struct clog_cmd got;
        CHECK_EQ_INT(clog_cmd_decode(&cr, &got), 0);
        CHECK(got.conv == 5 && ch_slice_eq(got.body, cmd.body));
    }
    ch_wbuf_free(&batch);
    ch_wbuf_free(&b);
}

static void parser_resumes_at_every_split(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct proto_conv_get g = {.conv = 77, .flags = 0};
    proto_encode_conv_get(&b, 1, &g);
    size_t first = b.len;
    struct proto_ping p = {.nonce = 5};
    proto_encode_ping(&b, 2, &p);
    struct proto_frame f;
    for (size_t cut = 0; cut < first; cut++)
        CHECK_EQ_INT(proto_frame_parse(b.data, cut, PROTO_DEFAULT_MAX_FRAME, &f), 0);
    /* two frames back to back */
    long n = proto_frame_parse(b.data, b.len, PROTO_DEFAULT_MAX_FRAME, &f);
    CHECK_EQ_INT(n, (long)first);
    CHECK_EQ_INT(f.type, PROTO_CONV_GET);
    n = proto_frame_parse(b.data + first, b.len - first, PROTO_DEFAULT_MAX_FRAME, &f);
    CHECK_EQ_INT(n, (long)(b.len - first));
    CHECK(f.type == PROTO_PING && f.req_id == 2);
    ch_wbuf_free(&b);
}

static void bad_frames(void)
{
    uint8_t buf[32] = {0};
    struct proto_frame f;
    ch_store_u32(buf, 1u << 30); /* too large: refused from the first 4 bytes */
    CHECK_EQ_INT(proto_frame_parse(buf, 4, PROTO_DEFAULT_MAX_FRAME, &f), -CH_ETOOLARGE);
    ch_store_u32(buf, 11); /* shorter than a header */
    CHECK_EQ_INT(proto_frame_parse(buf, 32, PROTO_DEFAULT_MAX_FRAME, &f), -CH_EMALFORMED);
    ch_store_u32(buf, 12);
    buf[6] = 1; /* reserved bits */
    CHECK_EQ_INT(proto_frame_parse(buf, 32, PROTO_DEFAULT_MAX_FRAME, &f), -CH_EMALFORMED);
    buf[6] = 0;
    CHECK_EQ_INT(proto_frame_parse(buf, 32, PROTO_DEFAULT_MAX_FRAME, &f), 16);
    CHECK_EQ_INT(f.body.len, 0);
    /* a body too short for the message's fields */
    struct ch_rbuf body;
    uint8_t short_body[5] = {1, 2, 3, 4, 5};
    ch_rbuf_init(&body, short_body, sizeof short_body);
    struct proto_history h;
    CHECK_EQ_INT(proto_decode_history(&body, &h), CH_EMALFORMED);
    /* a bytes field longer than the body */
    uint8_t sub[8] = {1, 0, 0, 0, 0xff, 0xff, 0, 0};
    ch_rbuf_init(&body, sub, sizeof sub);
    struct proto_submit s;
    CHECK_EQ_INT(proto_decode_submit(&body, &s), CH_EMALFORMED);
}

TEST_MAIN(TEST_CASE(fixed_messages_round_trip), TEST_CASE(repeated_sections),
          TEST_CASE(submit_carries_clog_commands), TEST_CASE(parser_resumes_at_every_split),
          TEST_CASE(bad_frames))
