/* Unit tests of the conversation-log state machine (src/raft-log/clog*). */
#include "test.h"

#include "common/error.h"
#include "common/hash.h"
#include "raft-log/clog.h"

/* ---- helpers ---------------------------------------------------------------------- */

static struct clog *fresh(uint32_t max_body, uint32_t max_members)
{
    struct clog_limits l;
    clog_limits_default(&l);
    if (max_body)
        l.max_body = max_body;
    if (max_members)
        l.max_members = max_members;
    struct clog *c = NULL;
    if (clog_create(&l, &c) != 0)
        abort();
    return c;
}

static struct clog_output out;
static uint64_t now_ms = 1000;

/* Applies one command directly; returns its result. */
static struct clog_result run(struct clog *c, const struct clog_cmd *cmd)
{
    clog_output_reset(&out);
    if (clog_apply_cmd(c, cmd, now_ms++, &out) != 0)
        abort();
    return out.results[0];
}

static struct ch_wbuf members_buf;

static struct ch_slice members(const char *csv)
{
    ch_wbuf_reset(&members_buf);
    size_t at = clog_members_begin(&members_buf);
    uint32_t n = 0;
    char copy[512];
    snprintf(copy, sizeof copy, "%s", csv);
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        uint8_t role = CLOG_ROLE_MEMBER;
        char *colon = strchr(tok, ':');
        if (colon) {
            *colon = 0;
            role = (uint8_t)atoi(colon + 1);
        }
        /* the token lives in `copy`: copy it into the buffer right away */
        clog_members_put(&members_buf, ch_slice_str(tok), role);
        n++;
    }
    clog_members_end(&members_buf, at, n);
    struct ch_slice s = {members_buf.data, members_buf.len};
    return s;
}

static struct clog_result create(struct clog *c, uint64_t conv, int kind, const char *actor,
                                 const char *list)
{
    struct clog_cmd cmd = {.op = CLOG_OP_CREATE,
                           .kind = (uint8_t)kind,
                           .conv = conv,
                           .actor = ch_slice_str(actor),
                           .name = ch_slice_str("room"),
                           .members = members(list)};
    return run(c, &cmd);
}

static struct clog_result post(struct clog *c, uint64_t conv, const char *actor,
                               const char *cmid, const char *body)
{
    struct clog_cmd cmd = {.op = CLOG_OP_POST,
                           .conv = conv,
                           .actor = ch_slice_str(actor),
                           .client_msg_id = ch_slice_str(cmid),
                           .body = ch_slice_str(body)};
    return run(c, &cmd);
}

static struct clog_result simple(struct clog *c, int op, uint64_t conv, const char *actor,
                                 uint64_t ref, int kind, const char *target_or_body)
{
    struct clog_cmd cmd = {.op = (uint8_t)op,
                           .kind = (uint8_t)kind,
                           .conv = conv,
                           .ref_seq = ref,
                           .actor = ch_slice_str(actor)};
    if (op == CLOG_OP_ADD_MEMBER || op == CLOG_OP_REMOVE_MEMBER)
        cmd.target = ch_slice_str(target_or_body);
    else
        cmd.body = ch_slice_str(target_or_body);
    return run(c, &cmd);
}

static int role_of(struct clog *c, uint64_t conv, const char *user)
{
    struct clog_member m;
    if (clog_member_get(c, conv, ch_slice_str(user), &m) != 0)
        return 0;
    return m.role;
}

static struct clog_event event_at(struct clog *c, uint64_t conv, uint64_t seq)
{
    struct ch_slice rec;
    struct clog_event ev;
    memset(&ev, 0, sizeof ev);
    if (clog_event_get(c, conv, seq, &rec) == 0) {
        struct ch_rbuf r;
        ch_rbuf_init(&r, rec.ptr, rec.len);
        clog_event_decode(&r, &ev);
    }
    return ev;
}

/* ---- conversations and membership ------------------------------------------------- */

static void create_group(void)
{
    struct clog *c = fresh(0, 0);
    struct clog_result r = create(c, 7, CLOG_GROUP, "alice", "bob,carol:2,dave:1,bob");
    CHECK_EQ_INT(r.err, 0);
    CHECK_EQ_U64(r.seq, 1);
    CHECK_EQ_INT(role_of(c, 7, "alice"), CLOG_ROLE_OWNER);
    CHECK_EQ_INT(role_of(c, 7, "bob"), CLOG_ROLE_MEMBER);
    CHECK_EQ_INT(role_of(c, 7, "carol"), CLOG_ROLE_ADMIN);
    CHECK_EQ_INT(role_of(c, 7, "dave"), CLOG_ROLE_ADMIN); /* owner in list -> admin */
    struct clog_conv_info info;
    CHECK_EQ_INT(clog_conv_info(c, 7, &info), 0);
    CHECK_EQ_INT(info.n_members, 4);
    CHECK_EQ_U64(info.last_seq, 1);
    CHECK(ch_slice_eq(info.name, ch_slice_str("room")));
    CHECK(ch_slice_eq(info.created_by, ch_slice_str("alice")));
    struct clog_event ev = event_at(c, 7, 1);
    CHECK_EQ_INT(ev.type, CLOG_EV_CREATED);
    CHECK_EQ_INT(ev.kind, CLOG_GROUP);
    CHECK_EQ_INT(out.n_events, 1);
    /* the CREATED event lists the members in join order */
    struct clog_members_iter it;
    uint32_t n;
    CHECK_EQ_INT(clog_members_open(&it, ev.members, &n), 0);
    CHECK_EQ_INT(n, 4);
    struct ch_slice u;
    uint8_t role;
    CHECK_EQ_INT(clog_members_next(&it, &u, &role), 1);
    CHECK(ch_slice_eq(u, ch_slice_str("alice")) && role == CLOG_ROLE_OWNER);
    /* idempotent re-create by the creator; conflicting create by someone else */
    r = create(c, 7, CLOG_GROUP, "alice", "bob");
    CHECK(r.err == 0 && r.dup && r.seq == 1);
    r = create(c, 7, CLOG_GROUP, "bob", "alice");
    CHECK_EQ_INT(r.err, CH_EEXISTS);
    r = create(c, 7, CLOG_DIRECT, "alice", "alice,bob");
    CHECK_EQ_INT(r.err, CH_EEXISTS);
    clog_destroy(c);
}

static void create_rejects_bad_input(void)
{
    struct clog *c = fresh(0, 3);
    uint64_t before = clog_digest(c);
    CHECK_EQ_INT(create(c, 0, CLOG_GROUP, "alice", "bob").err, CH_EINVAL);
    CHECK_EQ_INT(create(c, 1, 9, "alice", "bob").err, CH_EINVAL);
    CHECK_EQ_INT(create(c, 1, CLOG_GROUP, "", "bob").err, CH_EINVAL);
    CHECK_EQ_INT(create(c, 1, CLOG_GROUP, "alice", "a,b,c").err, CH_ELIMIT);
    CHECK_EQ_INT(create(c, 1, CLOG_DIRECT, "alice", "bob,carol").err, CH_EINVAL);
    CHECK_EQ_INT(create(c, 1, CLOG_DIRECT, "alice", "alice").err, CH_EINVAL);
    CHECK_EQ_INT(create(c, 1, CLOG_DIRECT, "alice", "alice,bob,carol").err, CH_EINVAL);
    CHECK_EQ_INT(create(c, 1, CLOG_GROUP, "alice", "bob:7").err, CH_EINVAL);
    struct clog_cmd bad = {.op = CLOG_OP_CREATE, .kind = CLOG_GROUP, .conv = 1,
                           .actor = ch_slice_str("alice"), .members = ch_slice_str("xx")};
    CHECK_EQ_INT(run(c, &bad).err, CH_EMALFORMED);
    CHECK_EQ_U64(clog_digest(c), before); /* nothing changed */
    CHECK_EQ_INT(create(c, 1, CLOG_DIRECT, "alice", "alice,bob").err, 0);
    CHECK_EQ_INT(role_of(c, 1, "alice"), CLOG_ROLE_MEMBER);
    clog_destroy(c);
}

static void membership_rules(void)
{
    struct clog *c = fresh(0, 5);
    create(c, 5, CLOG_GROUP, "own", "adm:2,mem");
    /* members cannot add; admins add members only; owner adds admins */
    CHECK_EQ_INT(simple(c, CLOG_OP_ADD_MEMBER, 5, "mem", 0, 0, "x").err, CH_EFORBIDDEN);
    CHECK_EQ_INT(simple(c, CLOG_OP_ADD_MEMBER, 5, "adm", 0, CLOG_ROLE_ADMIN, "x").err,
                 CH_EFORBIDDEN);
    CHECK_EQ_INT(simple(c, CLOG_OP_ADD_MEMBER, 5, "own", 0, CLOG_ROLE_OWNER, "x").err,
                 CH_EINVAL);
    CHECK_EQ_INT(simple(c, CLOG_OP_ADD_MEMBER, 5, "outsider", 0, 0, "x").err, CH_ENOTMEMBER);
    struct clog_result r = simple(c, CLOG_OP_ADD_MEMBER, 5, "adm", 0, 0, "m2");
    CHECK(r.err == 0 && r.seq == 2);
    r = simple(c, CLOG_OP_ADD_MEMBER, 5, "adm", 0, 0, "m2"); /* already in */
    CHECK(r.err == 0 && r.dup && r.seq == 0);
    r = simple(c, CLOG_OP_ADD_MEMBER, 5, "own", 0, CLOG_ROLE_ADMIN, "adm2");
    CHECK(r.err == 0 && r.seq == 3);
    CHECK_EQ_INT(simple(c, CLOG_OP_ADD_MEMBER, 5, "own", 0, 0, "full").err, CH_ELIMIT);
    /* removal */
    CHECK_EQ_INT(simple(c, CLOG_OP_REMOVE_MEMBER, 5, "adm", 0, 0, "adm2").err, CH_EFORBIDDEN);
    CHECK_EQ_INT(simple(c, CLOG_OP_REMOVE_MEMBER, 5, "mem", 0, 0, "m2").err, CH_EFORBIDDEN);
    CHECK_EQ_INT(simple(c, CLOG_OP_REMOVE_MEMBER, 5, "own", 0, 0, "own").err, CH_EINVAL);
    r = simple(c, CLOG_OP_REMOVE_MEMBER, 5, "adm", 0, 0, "m2");
    CHECK(r.err == 0 && r.seq == 4);
    CHECK_EQ_INT(role_of(c, 5, "m2"), 0);
    r = simple(c, CLOG_OP_REMOVE_MEMBER, 5, "own", 0, 0, "m2");
    CHECK(r.err == 0 && r.dup);
    /* the owner leaves: the earliest admin becomes owner */
    r = simple(c, CLOG_OP_LEAVE, 5, "own", 0, 0, "");
    CHECK(r.err == 0 && r.seq == 5);
    CHECK_EQ_INT(role_of(c, 5, "own"), 0);
    CHECK_EQ_INT(role_of(c, 5, "adm"), CLOG_ROLE_OWNER);
    struct clog_event ev = event_at(c, 5, 5);
    CHECK(ev.type == CLOG_EV_MEMBER_LEFT && ch_slice_eq(ev.target, ch_slice_str("adm")));
    CHECK_EQ_INT(simple(c, CLOG_OP_LEAVE, 5, "own", 0, 0, "").err, CH_ENOTMEMBER);
    /* direct conversations have fixed members */
    create(c, 6, CLOG_DIRECT, "a", "a,b");
    CHECK_EQ_INT(simple(c, CLOG_OP_ADD_MEMBER, 6, "a", 0, 0, "c").err, CH_EFORBIDDEN);
    CHECK_EQ_INT(simple(c, CLOG_OP_REMOVE_MEMBER, 6, "a", 0, 0, "b").err, CH_EFORBIDDEN);
    CHECK_EQ_INT(simple(c, CLOG_OP_LEAVE, 6, "a", 0, 0, "").err, CH_EFORBIDDEN);
    clog_destroy(c);
}

/* ---- messages ---------------------------------------------------------------------- */

static void post_assigns_contiguous_seqs(void)
{
    struct clog *c = fresh(100, 0);
    create(c, 9, CLOG_GROUP, "a", "b");
    for (uint64_t i = 0; i < 50; i++) {
        struct clog_result r = post(c, 9, i % 2 ? "a" : "b", "", "hi");
        CHECK_EQ_INT(r.err, 0);
        CHECK_EQ_U64(r.seq, i + 2);
    }
    CHECK_EQ_INT(post(c, 9, "z", "", "hi").err, CH_ENOTMEMBER);
    CHECK_EQ_INT(post(c, 10, "a", "", "hi").err, CH_ENOTFOUND);
    CHECK_EQ_INT(post(c, 9, "a", "", "").err, CH_EINVAL);
    char big[102];
    memset(big, 'x', 101);
    big[101] = 0;
    CHECK_EQ_INT(post(c, 9, "a", "", big).err, CH_ETOOLARGE);
    big[100] = 0;
    CHECK_EQ_INT(post(c, 9, "a", "", big).err, 0);
    struct clog_conv_info info;
    clog_conv_info(c, 9, &info);
    CHECK_EQ_U64(info.last_seq, 52);
    /* timestamps never go back within a conversation */
    now_ms = 10;
    struct clog_result r = post(c, 9, "a", "", "late clock");
    CHECK(r.ts >= event_at(c, 9, r.seq - 1).ts);
    now_ms = 100000;
    clog_destroy(c);
}

static void idempotent_retries(void)
{
    struct clog *c = fresh(0, 0);
    create(c, 3, CLOG_GROUP, "a", "b");
    struct clog_result first = post(c, 3, "a", "m-1", "hello");
    struct clog_result again = post(c, 3, "a", "m-1", "different body, same id");
    CHECK(first.err == 0 && !first.dup);
    CHECK(again.err == 0 && again.dup);
    CHECK_EQ_U64(again.seq, first.seq);
    CHECK_EQ_U64(again.ts, first.ts);
    CHECK_EQ_INT(out.n_events, 0); /* a retry emits nothing */
    /* same id from another sender is another message */
    struct clog_result other = post(c, 3, "b", "m-1", "mine");
    CHECK(other.err == 0 && !other.dup && other.seq == first.seq + 1);
    /* no window: thousands of messages later the key still deduplicates */
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "bulk-%d", i);
        post(c, 3, "a", id, "x");
    }
    again = post(c, 3, "a", "m-1", "hello");
    CHECK(again.dup && again.seq == first.seq);
    again = post(c, 3, "a", "bulk-17", "x");
    CHECK(again.dup && again.seq == first.seq + 2 + 17);
    /* a removed member's retry is refused, not deduplicated */
    simple(c, CLOG_OP_REMOVE_MEMBER, 3, "a", 0, 0, "b");
    CHECK_EQ_INT(post(c, 3, "b", "m-1", "mine").err, CH_ENOTMEMBER);
    struct clog_stats st;
    clog_stats(c, &st);
    CHECK_EQ_U64(st.idempotency_keys, 5002);
    clog_destroy(c);
}

static void edit_delete_react(void)
{
    struct clog *c = fresh(0, 0);
    create(c, 4, CLOG_GROUP, "own", "adm:2,a,b");
    uint64_t m = post(c, 4, "a", "", "hello").seq;
    CHECK_EQ_INT(simple(c, CLOG_OP_EDIT, 4, "b", m, 0, "hijack").err, CH_EFORBIDDEN);
    CHECK_EQ_INT(simple(c, CLOG_OP_EDIT, 4, "a", 1, 0, "x").err, CH_ENOMESSAGE); /* created */
    CHECK_EQ_INT(simple(c, CLOG_OP_EDIT, 4, "a", 99, 0, "x").err, CH_ENOMESSAGE);
    CHECK_EQ_INT(simple(c, CLOG_OP_EDIT, 4, "a", m, 0, "").err, CH_EINVAL);
    struct clog_result e = simple(c, CLOG_OP_EDIT, 4, "a", m, 0, "hello!");
    CHECK(e.err == 0 && e.seq == m + 1);
    struct clog_event ev = event_at(c, 4, e.seq);
    CHECK(ev.type == CLOG_EV_EDITED && ev.ref_seq == m);
    CHECK(ch_slice_eq(ev.body, ch_slice_str("hello!")));
    CHECK_EQ_INT(simple(c, CLOG_OP_REACT, 4, "b", m, 7, "+1").err, CH_EINVAL);
    CHECK_EQ_INT(simple(c, CLOG_OP_REACT, 4, "b", m, CLOG_REACT_ADD, "").err, CH_EINVAL);
    CHECK_EQ_INT(simple(c, CLOG_OP_REACT, 4, "b", m, CLOG_REACT_ADD, "+1").err, 0);
    /* members may delete only their own; admins moderate */
    CHECK_EQ_INT(simple(c, CLOG_OP_DELETE, 4, "b", m, 0, "").err, CH_EFORBIDDEN);
    uint64_t m2 = post(c, 4, "b", "", "spam").seq;
    CHECK_EQ_INT(simple(c, CLOG_OP_DELETE, 4, "adm", m2, 0, "").err, 0);
    CHECK_EQ_INT(simple(c, CLOG_OP_DELETE, 4, "a", m, 0, "").err, 0);
    CHECK_EQ_INT(simple(c, CLOG_OP_DELETE, 4, "a", m, 0, "").err, CH_ENOMESSAGE);
    CHECK_EQ_INT(simple(c, CLOG_OP_EDIT, 4, "a", m, 0, "zombie").err, CH_ENOMESSAGE);
    CHECK_EQ_INT(simple(c, CLOG_OP_REACT, 4, "b", m, CLOG_REACT_ADD, "+1").err, CH_ENOMESSAGE);
    /* the original message is still in the log: append-only */
    CHECK_EQ_INT(event_at(c, 4, m).type, CLOG_EV_MESSAGE);
    clog_destroy(c);
}

static void cursors_are_monotonic(void)
{
    struct clog *c = fresh(0, 0);
    create(c, 2, CLOG_GROUP, "a", "b");
    for (int i = 0; i < 5; i++)
        post(c, 2, "a", "", "x"); /* seqs 2..6 */
    struct clog_result r = simple(c, CLOG_OP_CURSOR, 2, "b", 4, CLOG_CURSOR_DELIVERED, "");
    CHECK(r.err == 0 && !r.dup && r.seq == 0);
    CHECK_EQ_INT(out.n_events, 1);
    struct ch_rbuf rd;
    ch_rbuf_init(&rd, out.events.data, out.events.len);
    struct clog_event ev;
    CHECK_EQ_INT(clog_event_decode(&rd, &ev), 0);
    CHECK(ev.type == CLOG_EV_RECEIPT && ev.seq == 0 && ev.ref_seq == 4);
    r = simple(c, CLOG_OP_CURSOR, 2, "b", 3, CLOG_CURSOR_DELIVERED, ""); /* backwards */
    CHECK(r.err == 0 && r.dup);
    CHECK_EQ_INT(out.n_events, 0);
    r = simple(c, CLOG_OP_CURSOR, 2, "b", 100, CLOG_CURSOR_READ, ""); /* clamped */
    CHECK_EQ_INT(r.err, 0);
    struct clog_member m;
    CHECK_EQ_INT(clog_member_get(c, 2, ch_slice_str("b"), &m), 0);
    CHECK_EQ_U64(m.read, 6);
    CHECK_EQ_U64(m.delivered, 6); /* read implies delivered */
    CHECK_EQ_INT(simple(c, CLOG_OP_CURSOR, 2, "b", 1, 9, "").err, CH_EINVAL);
    CHECK_EQ_INT(simple(c, CLOG_OP_CURSOR, 2, "z", 1, CLOG_CURSOR_READ, "").err,
                 CH_ENOTMEMBER);
    /* receipts take no seq */
    struct clog_conv_info info;
    clog_conv_info(c, 2, &info);
    CHECK_EQ_U64(info.last_seq, 6);
    /* leaving loses the cursors; coming back starts from zero */
    simple(c, CLOG_OP_REMOVE_MEMBER, 2, "a", 0, 0, "b");
    simple(c, CLOG_OP_ADD_MEMBER, 2, "a", 0, 0, "b");
    CHECK_EQ_INT(clog_member_get(c, 2, ch_slice_str("b"), &m), 0);
    CHECK_EQ_U64(m.read, 0);
    clog_destroy(c);
}

/* Does clog_history return seqs first..first+count-1 and has_more == more? */
static int page_is(struct clog *c, struct ch_wbuf *b, uint64_t after, uint64_t before,
                   uint32_t limit, uint64_t first, uint32_t count, int more)
{
    uint32_t n;
    int has_more;
    ch_wbuf_reset(b);
    if (clog_history(c, 8, after, before, limit, b, &n, &has_more) != 0 || n != count ||
        has_more != more)
        return 0;
    struct ch_rbuf r;
    ch_rbuf_init(&r, b->data, b->len);
    for (uint32_t k = 0; k < count; k++) {
        struct clog_event ev;
        if (clog_event_decode(&r, &ev) != 0 || ev.seq != first + k)
            return 0;
    }
    return r.left == 0;
}

static void history_pages(void)
{
    struct clog *c = fresh(0, 0);
    create(c, 8, CLOG_GROUP, "a", "");
    for (int i = 0; i < 20; i++)
        post(c, 8, "a", "", "m"); /* seqs 2..21 */
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    int more;
#define PAGE(after, before, limit, first, count, more_)                        \
    CHECK(page_is(c, &b, after, before, limit, first, count, more_))
    PAGE(0, 0, 5, 1, 5, 1);    /* first page */
    PAGE(5, 0, 5, 6, 5, 1);    /* next page */
    PAGE(18, 0, 5, 19, 3, 0);  /* last, partial */
    PAGE(21, 0, 5, 0, 0, 0);   /* nothing newer */
    PAGE(0, 22, 5, 17, 5, 1);  /* newest page */
    PAGE(0, 6, 10, 1, 5, 0);   /* before 6: 1..5 */
    PAGE(3, 9, 100, 4, 5, 0);  /* window (3, 9) */
    PAGE(0, 0, 0, 0, 0, 1);    /* limit 0 tells whether anything exists */
    PAGE(0, 1, 5, 0, 0, 0);    /* nothing before 1 */
    uint32_t n2;
    CHECK_EQ_INT(clog_history(c, 99, 0, 0, 5, &b, &n2, &more), CH_ENOTFOUND);
    ch_wbuf_free(&b);
    clog_destroy(c);
}

/* ---- entries ---------------------------------------------------------------------- */

static uint8_t *make_entry(const struct clog_cmd *cmds, int n, size_t compress_min,
                           size_t *len)
{
    struct ch_wbuf batch;
    ch_wbuf_init(&batch);
    for (int i = 0; i < n; i++)
        clog_batch_add(&batch, &cmds[i]);
    struct clog_entry_header h = {.origin = 2, .batch_id = 77, .ts_ms = 5000,
                                  .n_cmds = (uint32_t)n};
    uint8_t *e = NULL;
    if (clog_entry_encode(&h, batch.data, batch.len, compress_min, malloc, &e, len) != 0)
        abort();
    ch_wbuf_free(&batch);
    return e;
}

static void entries_round_trip_with_and_without_lz4(void)
{
    struct clog_cmd cmds[40];
    char bodies[40][64];
    for (int i = 0; i < 40; i++) {
        snprintf(bodies[i], sizeof bodies[i], "a fairly repetitive message body number %d", i);
        cmds[i] = (struct clog_cmd){.op = CLOG_OP_POST, .conv = 11,
                                    .actor = ch_slice_str("bob"),
                                    .body = ch_slice_str(bodies[i])};
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t len;
        uint8_t *e = make_entry(cmds, 40, pass ? 64 : 0, &len);
        CHECK_EQ_INT(len % 8, 0);
        struct clog_entry_header h;
        struct ch_wbuf scratch;
        ch_wbuf_init(&scratch);
        const uint8_t *payload;
        size_t plen;
        CHECK_EQ_INT(clog_entry_decode(e, len, &h, &scratch, &payload, &plen), 0);
        CHECK_EQ_INT(e[5], pass ? CLOG_ENTRY_FLAG_LZ4 : 0);
        CHECK(h.origin == 2 && h.batch_id == 77 && h.ts_ms == 5000 && h.n_cmds == 40);
        struct ch_rbuf r;
        ch_rbuf_init(&r, payload, plen);
        for (int i = 0; i < 40; i++) {
            struct ch_slice one = ch_get_bytes32(&r, plen);
            struct ch_rbuf cr;
            ch_rbuf_init(&cr, one.ptr, one.len);
            struct clog_cmd d;
            CHECK_EQ_INT(clog_cmd_decode(&cr, &d), 0);
            CHECK(ch_slice_eq(d.body, cmds[i].body) && d.conv == 11);
        }
        CHECK_EQ_INT(r.left, 0);
        ch_wbuf_free(&scratch);
        free(e);
    }
}

static void bad_entries_are_skipped_without_change(void)
{
    struct clog *c = fresh(0, 0);
    create(c, 1, CLOG_GROUP, "a", "b");
    struct clog_cmd cmd = {.op = CLOG_OP_POST, .conv = 1, .actor = ch_slice_str("a"),
                           .body = ch_slice_str("hi")};
    size_t len;
    uint8_t *e = make_entry(&cmd, 1, 0, &len);
    uint64_t before = clog_digest(c);
    uint8_t *copy = malloc(len);
    /* bad magic, future version, reserved bits, truncation, non-zero padding */
    memcpy(copy, e, len);
    copy[0] ^= 1;
    CHECK_EQ_INT(clog_apply(c, copy, len, &out), CH_EMALFORMED);
    memcpy(copy, e, len);
    copy[4] = 2;
    CHECK_EQ_INT(clog_apply(c, copy, len, &out), CH_EVERSION);
    memcpy(copy, e, len);
    copy[6] = 1;
    CHECK_EQ_INT(clog_apply(c, copy, len, &out), CH_EMALFORMED);
    CHECK_EQ_INT(clog_apply(c, e, len - 8, &out), CH_EMALFORMED);
    CHECK_EQ_INT(clog_apply(c, e, 10, &out), CH_EMALFORMED);
    memcpy(copy, e, len);
    copy[len - 1] = 1; /* padding must be zero (the entry is 40+... bytes, padded) */
    CHECK(len > 83); /* 40-byte header + 43-byte command, padded to 88 */
    CHECK_EQ_INT(clog_apply(c, copy, len, &out), CH_EMALFORMED);
    CHECK_EQ_U64(clog_digest(c), before);
    free(copy);
    free(e);
    /* a decodable entry with one broken command: that command fails alone */
    struct clog_cmd two[2] = {cmd, cmd};
    two[0].op = 99;
    e = make_entry(two, 2, 0, &len);
    CHECK_EQ_INT(clog_apply(c, e, len, &out), 0);
    CHECK_EQ_INT(out.n_results, 2);
    CHECK_EQ_INT(out.results[0].err, CH_EUNKNOWN_OP);
    CHECK_EQ_INT(out.results[1].err, 0);
    free(e);
    clog_destroy(c);
}

/* ---- snapshots and determinism -------------------------------------------------------- */

/* A deterministic random workload encoded as entries. */
static void random_entries(uint64_t seed, int n_entries, uint8_t ***entries, size_t **lens)
{
    *entries = calloc((size_t)n_entries, sizeof **entries);
    *lens = calloc((size_t)n_entries, sizeof **lens);
    static const char *users[] = {"u0", "u1", "u2", "u3", "u4", "u5"};
    uint64_t x = seed;
    char bufs[32][48];
    struct ch_wbuf mb;
    ch_wbuf_init(&mb);
    for (int e = 0; e < n_entries; e++) {
        struct clog_cmd cmds[32];
        int n = 1 + (int)(ch_mix64(x++) % 32);
        for (int i = 0; i < n; i++) {
            uint64_t r = ch_mix64(x++);
            struct clog_cmd *c = &cmds[i];
            memset(c, 0, sizeof *c);
            c->conv = 1 + r % 12;
            c->actor = ch_slice_str(users[(r >> 8) % 6]);
            snprintf(bufs[i], sizeof bufs[i], "id-%" PRIu64, (r >> 16) % 500);
            switch ((r >> 32) % 10) {
            case 0: {
                ch_wbuf_reset(&mb);
                size_t at = clog_members_begin(&mb);
                for (int k = 0; k < 6; k++)
                    clog_members_put(&mb, ch_slice_str(users[k]), CLOG_ROLE_MEMBER);
                clog_members_end(&mb, at, 6);
                c->op = CLOG_OP_CREATE;
                c->kind = CLOG_GROUP;
                c->name = ch_slice_str("g");
                /* members blob must outlive the batch: copy into bufs? keep in mb */
                c->members.ptr = mb.data;
                c->members.len = mb.len;
                break;
            }
            case 1:
                c->op = CLOG_OP_CURSOR;
                c->kind = (r >> 40) % 2 ? CLOG_CURSOR_READ : CLOG_CURSOR_DELIVERED;
                c->ref_seq = (r >> 44) % 50;
                break;
            case 2:
                c->op = CLOG_OP_EDIT;
                c->ref_seq = (r >> 44) % 40;
                c->body = ch_slice_str("edited");
                break;
            case 3:
                c->op = CLOG_OP_DELETE;
                c->ref_seq = (r >> 44) % 40;
                break;
            default:
                c->op = CLOG_OP_POST;
                c->client_msg_id = ch_slice_str(bufs[i]);
                c->body = ch_slice_str(bufs[i]);
                break;
            }
        }
        struct ch_wbuf batch;
        ch_wbuf_init(&batch);
        for (int i = 0; i < n; i++)
            clog_batch_add(&batch, &cmds[i]);
        struct clog_entry_header h = {.origin = 1, .batch_id = (uint64_t)e,
                                      .ts_ms = 1000 + (uint64_t)e, .n_cmds = (uint32_t)n};
        if (clog_entry_encode(&h, batch.data, batch.len, e % 2 ? 256 : 0, malloc,
                              &(*entries)[e], &(*lens)[e]) != 0)
            abort();
        ch_wbuf_free(&batch);
    }
    ch_wbuf_free(&mb);
}

static void replicas_converge_and_snapshots_round_trip(void)
{
    enum { N = 400 };
    uint8_t **entries;
    size_t *lens;
    random_entries(99, N, &entries, &lens);
    struct clog *a = fresh(0, 0), *b = fresh(0, 0);
    struct clog_output oa, ob;
    clog_output_init(&oa);
    clog_output_init(&ob);
    for (int i = 0; i < N / 2; i++) {
        CHECK_EQ_INT(clog_apply(a, entries[i], lens[i], &oa), 0);
        CHECK_EQ_INT(clog_apply(b, entries[i], lens[i], &ob), 0);
        CHECK_EQ_INT(oa.events.len, ob.events.len);
        CHECK(memcmp(oa.events.data, ob.events.data, oa.events.len) == 0);
    }
    CHECK_EQ_U64(clog_digest(a), clog_digest(b));
    struct clog_stats st;
    clog_stats(a, &st);
    CHECK(st.events > 100 && st.conversations == 12);
    /* snapshot a, restore into a fresh c: same digest; all three continue equally */
    uint8_t *snap;
    size_t snap_len;
    CHECK_EQ_INT(clog_snapshot(a, malloc, &snap, &snap_len), 0);
    struct clog *c = fresh(0, 0);
    CHECK_EQ_INT(clog_restore(c, snap, snap_len), 0);
    CHECK_EQ_U64(clog_digest(c), clog_digest(a));
    struct clog_output oc;
    clog_output_init(&oc);
    for (int i = N / 2; i < N; i++) {
        clog_apply(a, entries[i], lens[i], &oa);
        clog_apply(b, entries[i], lens[i], &ob);
        clog_apply(c, entries[i], lens[i], &oc);
        CHECK_EQ_INT(oa.n_results, oc.n_results);
        for (size_t k = 0; k < oa.n_results; k++) {
            /* same results, including idempotent dups (the index survived) */
            CHECK_EQ_INT(oa.results[k].err, oc.results[k].err);
            CHECK_EQ_U64(oa.results[k].seq, oc.results[k].seq);
            CHECK_EQ_INT(oa.results[k].dup, oc.results[k].dup);
        }
    }
    CHECK_EQ_U64(clog_digest(a), clog_digest(b));
    CHECK_EQ_U64(clog_digest(a), clog_digest(c));
    /* a different history gives a different digest */
    struct clog *d = fresh(0, 0);
    for (int i = 0; i < N - 1; i++)
        clog_apply(d, entries[i], lens[i], &oc);
    CHECK(clog_digest(d) != clog_digest(a));
    for (int i = 0; i < N; i++)
        free(entries[i]);
    free(entries);
    free(lens);
    free(snap);
    clog_output_free(&oa);
    clog_output_free(&ob);
    clog_output_free(&oc);
    clog_destroy(a);
    clog_destroy(b);
    clog_destroy(c);
    clog_destroy(d);
}

static void corrupt_snapshots_are_refused_and_change_nothing(void)
{
    struct clog *a = fresh(0, 0);
    create(a, 1, CLOG_GROUP, "a", "b,c");
    for (int i = 0; i < 300; i++)
        post(a, 1, "b", "", "some message text that compresses well well well");
    uint8_t *snap;
    size_t len;
    CHECK_EQ_INT(clog_snapshot(a, malloc, &snap, &len), 0);
    struct clog *t = fresh(0, 0);
    create(t, 50, CLOG_GROUP, "x", "y"); /* the target already holds state */
    uint64_t before = clog_digest(t);
    uint8_t *bad = malloc(len);
    /* a flipped payload byte: payload checksum */
    memcpy(bad, snap, len);
    bad[len / 2] ^= 0x20;
    CHECK_EQ_INT(clog_restore(t, bad, len), CH_ECORRUPT);
    /* a flipped header byte: header checksum */
    memcpy(bad, snap, len);
    bad[10] ^= 1;
    CHECK_EQ_INT(clog_restore(t, bad, len), CH_ECORRUPT);
    /* a future version with a valid header checksum */
    memcpy(bad, snap, len);
    bad[4] = 9;
    ch_store_u32(bad + 28, ch_crc32c(0, bad, 28));
    CHECK_EQ_INT(clog_restore(t, bad, len), CH_EVERSION);
    /* truncated, wrong magic */
    CHECK_EQ_INT(clog_restore(t, snap, len - 1), CH_EMALFORMED);
    CHECK_EQ_INT(clog_restore(t, snap, 20), CH_EMALFORMED);
    memcpy(bad, snap, len);
    bad[0] = 'X';
    CHECK_EQ_INT(clog_restore(t, bad, len), CH_EMALFORMED);
    CHECK_EQ_U64(clog_digest(t), before);
    CHECK_EQ_INT(post(t, 50, "x", "", "still works").err, 0);
    /* and the genuine one restores */
    CHECK_EQ_INT(clog_restore(t, snap, len), 0);
    CHECK_EQ_U64(clog_digest(t), clog_digest(a));
    CHECK_EQ_INT(post(t, 50, "x", "", "gone").err, CH_ENOTFOUND);
    free(bad);
    free(snap);
    clog_destroy(a);
    clog_destroy(t);
}

static void empty_snapshot(void)
{
    struct clog *a = fresh(0, 0), *b = fresh(0, 0);
    uint8_t *snap;
    size_t len;
    CHECK_EQ_INT(clog_snapshot(a, malloc, &snap, &len), 0);
    create(b, 3, CLOG_GROUP, "a", "");
    CHECK_EQ_INT(clog_restore(b, snap, len), 0);
    CHECK_EQ_U64(clog_digest(b), clog_digest(a));
    free(snap);
    clog_destroy(a);
    clog_destroy(b);
}

static void cleanup(void)
{
    clog_output_free(&out);
    ch_wbuf_free(&members_buf);
}

int test__failed_checks;

int main(void)
{
    static const struct test_case cases[] = {
        TEST_CASE(create_group),
        TEST_CASE(create_rejects_bad_input),
        TEST_CASE(membership_rules),
        TEST_CASE(post_assigns_contiguous_seqs),
        TEST_CASE(idempotent_retries),
        TEST_CASE(edit_delete_react),
        TEST_CASE(cursors_are_monotonic),
        TEST_CASE(history_pages),
        TEST_CASE(entries_round_trip_with_and_without_lz4),
        TEST_CASE(bad_entries_are_skipped_without_change),
        TEST_CASE(replicas_converge_and_snapshots_round_trip),
        TEST_CASE(corrupt_snapshots_are_refused_and_change_nothing),
        TEST_CASE(empty_snapshot),
    };
    clog_output_init(&out);
    ch_wbuf_init(&members_buf);
    int rv = test_run_all(cases, sizeof cases / sizeof cases[0]);
    cleanup();
    return rv;
}
