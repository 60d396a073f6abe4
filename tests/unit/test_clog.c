/* Unit tests of the conversation-log state machine (src/raft-log/clog*). */
#include "test.h"

#include <lz4.h>

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
    /* a direct conversation: the other member's create is a repeat, with the
     * first create's seq and ts; a third user's is a conflict */
    r = create(c, 8, CLOG_DIRECT, "alice", "alice,bob");
    CHECK_EQ_INT(r.err, 0);
    uint64_t ts = r.ts;
    r = create(c, 8, CLOG_DIRECT, "bob", "bob,alice");
    CHECK(r.err == 0 && r.dup && r.seq == 1 && r.ts == ts);
    struct clog_conv_info info8;
    CHECK_EQ_INT(clog_conv_info(c, 8, &info8), 0);
    CHECK_EQ_U64(info8.last_seq, 1);
    CHECK_EQ_INT(create(c, 8, CLOG_DIRECT, "carol", "carol,alice").err, CH_EEXISTS);
    CHECK_EQ_INT(create(c, 8, CLOG_GROUP, "bob", "alice").err, CH_EEXISTS);
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

/* ---- messages --------------------------------------------------------------------- */

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

/* ---- snapshots and determinism ---------------------------------------------------- */

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
            case 4:
                /* user ops: conv 0; passwords and values from a small set */
                c->conv = 0;
                c->op = (r >> 40) % 3 ? CLOG_OP_USER_UPDATE : CLOG_OP_USER_CREATE;
                c->kind = (uint8_t)(1 + (r >> 44) % 6);
                c->ref_seq = (r >> 48) % 4;
                c->body = ch_slice_str(users[(r >> 52) % 3]);
                c->name = ch_slice_str(bufs[i]);
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
    CHECK(st.events > 100 && st.conversations == 12 && st.users == 6);
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

/* ---- users ------------------------------------------------------------------------ */

static struct clog_result user_create(struct clog *c, const char *user,
                                      const char *password, const char *name)
{
    struct clog_cmd cmd = {.op = CLOG_OP_USER_CREATE,
                           .actor = ch_slice_str(user),
                           .body = ch_slice_str(password),
                           .name = ch_slice_str(name)};
    return run(c, &cmd);
}

/* USER_UPDATE of one field: the string goes to name or body, the number to ref_seq. */
static struct clog_result user_update(struct clog *c, const char *user, int field,
                                      const char *value, uint64_t ref)
{
    struct clog_cmd cmd = {.op = CLOG_OP_USER_UPDATE,
                           .kind = (uint8_t)field,
                           .ref_seq = ref,
                           .actor = ch_slice_str(user)};
    if (field == CLOG_USER_DISPLAY_NAME)
        cmd.name = ch_slice_str(value);
    else
        cmd.body = ch_slice_str(value);
    return run(c, &cmd);
}

static struct clog_user user_of(struct clog *c, const char *user)
{
    struct clog_user u;
    memset(&u, 0, sizeof u);
    clog_user_get(c, ch_slice_str(user), &u);
    return u;
}

static int slice_is(struct ch_slice s, const char *str)
{
    return ch_slice_eq(s, ch_slice_str(str));
}

/* A string of n copies of ch (static: one at a time). */
static const char *repeat(char ch, size_t n)
{
    static char buf[8192];
    if (n >= sizeof buf)
        abort();
    memset(buf, ch, n);
    buf[n] = 0;
    return buf;
}

static void user_create_rules(void)
{
    struct clog *c = fresh(0, 0);
    now_ms = 5000;
    struct clog_result r = user_create(c, "alice", "pw-record-1", "");
    CHECK(r.err == 0 && !r.dup && r.seq == 0 && r.conv == 0);
    CHECK_EQ_U64(r.ts, 5000);
    CHECK_EQ_INT(out.n_events, 0); /* users emit no events */
    struct clog_user u;
    CHECK_EQ_INT(clog_user_get(c, ch_slice_str("alice"), &u), 0);
    CHECK(slice_is(u.user, "alice") && slice_is(u.password_record, "pw-record-1"));
    CHECK(slice_is(u.display_name, "alice")); /* empty display name: the user id */
    CHECK(u.status.len == 0 && u.settings.len == 0);
    CHECK(u.disabled == 0 && u.last_seen == 0);
    CHECK_EQ_U64(u.created_ts, 5000);
    CHECK_EQ_INT(clog_user_get(c, ch_slice_str("bob"), &u), CH_ENOUSER);
    CHECK_EQ_INT(clog_user_get(c, ch_slice_str("alic"), &u), CH_ENOUSER);
    r = user_create(c, "bob", "pw-b", "Bob B.");
    CHECK_EQ_INT(r.err, 0);
    CHECK(slice_is(user_of(c, "bob").display_name, "Bob B."));
    /* a retry with the same record is a dup carrying the first ts, whatever the name */
    r = user_create(c, "alice", "pw-record-1", "Someone Else");
    CHECK(r.err == 0 && r.dup && r.seq == 0);
    CHECK_EQ_U64(r.ts, 5000);
    CHECK(slice_is(user_of(c, "alice").display_name, "alice"));
    /* another record: the name is taken */
    uint64_t before = clog_digest(c);
    CHECK_EQ_INT(user_create(c, "alice", "pw-record-2", "").err, CH_EEXISTS);
    CHECK_EQ_INT(user_create(c, "alice", "pw-record-", "").err, CH_EEXISTS);
    /* invalid commands */
    struct clog_cmd with_conv = {.op = CLOG_OP_USER_CREATE, .conv = 3,
                                 .actor = ch_slice_str("carol"),
                                 .body = ch_slice_str("p")};
    CHECK_EQ_INT(run(c, &with_conv).err, CH_EINVAL);
    CHECK_EQ_INT(user_create(c, "", "p", "").err, CH_EINVAL);
    CHECK_EQ_INT(user_create(c, repeat('u', 65), "p", "").err, CH_EINVAL);
    CHECK_EQ_INT(user_create(c, "carol", "", "").err, CH_EINVAL);
    char pw[300];
    snprintf(pw, sizeof pw, "%s", repeat('p', 257));
    CHECK_EQ_INT(user_create(c, "carol", pw, "").err, CH_ETOOLARGE);
    CHECK_EQ_INT(user_create(c, "carol", "p", repeat('n', 65)).err, CH_ETOOLARGE);
    CHECK_EQ_U64(clog_digest(c), before);
    struct clog_stats st;
    clog_stats(c, &st);
    CHECK_EQ_U64(st.users, 2);
    /* the bounds themselves are fine */
    pw[256] = 0;
    CHECK_EQ_INT(user_create(c, repeat('u', 64), pw, "").err, 0);
    CHECK_EQ_INT(user_create(c, "carol", "p", repeat('n', 64)).err, 0);
    CHECK_EQ_INT(user_of(c, "carol").display_name.len, 64);
    clog_stats(c, &st);
    CHECK_EQ_U64(st.users, 4);
    /* users are not conversations: conversation commands ignore them */
    CHECK_EQ_INT(post(c, 1, "alice", "", "hi").err, CH_ENOTFOUND);
    clog_destroy(c);
}

static void user_update_rules(void)
{
    struct clog *c = fresh(0, 0);
    now_ms = 7000;
    user_create(c, "alice", "pw-1", "");
    /* each field: set, then the same value again is a dup */
    struct clog_result r = user_update(c, "alice", CLOG_USER_DISPLAY_NAME, "Alice", 0);
    CHECK(r.err == 0 && !r.dup && r.seq == 0 && r.conv == 0);
    CHECK_EQ_U64(r.ts, 7001);
    CHECK_EQ_INT(out.n_events, 0);
    CHECK(slice_is(user_of(c, "alice").display_name, "Alice"));
    r = user_update(c, "alice", CLOG_USER_DISPLAY_NAME, "Alice", 0);
    CHECK(r.err == 0 && r.dup && r.seq == 0);
    CHECK_EQ_U64(r.ts, 7002); /* the entry's ts, also for dups */
    r = user_update(c, "alice", CLOG_USER_STATUS, "out for lunch", 0);
    CHECK(r.err == 0 && !r.dup);
    CHECK(user_update(c, "alice", CLOG_USER_STATUS, "out for lunch", 0).dup);
    CHECK(slice_is(user_of(c, "alice").status, "out for lunch"));
    r = user_update(c, "alice", CLOG_USER_SETTINGS, "{\"theme\":\"dark\"}", 0);
    CHECK(r.err == 0 && !r.dup);
    CHECK(user_update(c, "alice", CLOG_USER_SETTINGS, "{\"theme\":\"dark\"}", 0).dup);
    CHECK(slice_is(user_of(c, "alice").settings, "{\"theme\":\"dark\"}"));
    r = user_update(c, "alice", CLOG_USER_PASSWORD, "pw-2", 0);
    CHECK(r.err == 0 && !r.dup);
    CHECK(user_update(c, "alice", CLOG_USER_PASSWORD, "pw-2", 0).dup);
    CHECK(slice_is(user_of(c, "alice").password_record, "pw-2"));
    /* the retry rule follows the current record */
    CHECK_EQ_INT(user_create(c, "alice", "pw-1", "").err, CH_EEXISTS);
    CHECK(user_create(c, "alice", "pw-2", "").dup);
    r = user_update(c, "alice", CLOG_USER_DISABLED, "", 1);
    CHECK(r.err == 0 && !r.dup && user_of(c, "alice").disabled == 1);
    /* disabling (only that) tells the gateways: one stream-only event, conv 0 */
    CHECK_EQ_INT((int)out.n_events, 1);
    {
        struct ch_rbuf er;
        struct clog_event ev;
        ch_rbuf_init(&er, out.events.data, out.events.len);
        CHECK(clog_event_decode(&er, &ev) == 0 && ev.type == CLOG_EV_USER_DISABLED &&
              ev.conv == 0 && ev.seq == 0 && slice_is(ev.actor, "alice"));
    }
    CHECK(user_update(c, "alice", CLOG_USER_DISABLED, "", 1).dup);
    CHECK_EQ_INT((int)out.n_events, 0);
    r = user_update(c, "alice", CLOG_USER_DISABLED, "", 0);
    CHECK(r.err == 0 && !r.dup && user_of(c, "alice").disabled == 0);
    CHECK_EQ_INT((int)out.n_events, 0);
    CHECK(user_update(c, "alice", CLOG_USER_DISABLED, "", 0).dup);
    /* last seen only moves forward */
    r = user_update(c, "alice", CLOG_USER_LAST_SEEN, "", 90000);
    CHECK(r.err == 0 && !r.dup && user_of(c, "alice").last_seen == 90000);
    r = user_update(c, "alice", CLOG_USER_LAST_SEEN, "", 80000);
    CHECK(r.err == 0 && r.dup && user_of(c, "alice").last_seen == 90000);
    CHECK(user_update(c, "alice", CLOG_USER_LAST_SEEN, "", 90000).dup);
    CHECK(!user_update(c, "alice", CLOG_USER_LAST_SEEN, "", 90001).dup);
    /* clearing what may be empty; an empty display name shows the user id again */
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_STATUS, "", 0).err, 0);
    CHECK_EQ_INT(user_of(c, "alice").status.len, 0);
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_SETTINGS, "", 0).err, 0);
    CHECK_EQ_INT(user_of(c, "alice").settings.len, 0);
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_DISPLAY_NAME, "", 0).err, 0);
    CHECK(slice_is(user_of(c, "alice").display_name, "alice"));
    CHECK(user_update(c, "alice", CLOG_USER_DISPLAY_NAME, "", 0).dup);
    /* errors change nothing */
    uint64_t before = clog_digest(c);
    CHECK_EQ_INT(user_update(c, "nobody", CLOG_USER_STATUS, "x", 0).err, CH_ENOUSER);
    CHECK_EQ_INT(user_update(c, "nobody", CLOG_USER_LAST_SEEN, "", 5).err, CH_ENOUSER);
    CHECK_EQ_INT(user_update(c, "alice", 0, "x", 0).err, CH_EINVAL);
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_LAST_SEEN + 1, "x", 0).err, CH_EINVAL);
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_DISPLAY_NAME, repeat('n', 65), 0).err,
                 CH_ETOOLARGE);
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_STATUS, repeat('s', 257), 0).err,
                 CH_ETOOLARGE);
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_SETTINGS, repeat('s', 4097), 0).err,
                 CH_ETOOLARGE);
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_PASSWORD, repeat('p', 257), 0).err,
                 CH_ETOOLARGE);
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_PASSWORD, "", 0).err, CH_EINVAL);
    CHECK_EQ_INT(user_update(c, "alice", CLOG_USER_DISABLED, "", 2).err, CH_EINVAL);
    CHECK_EQ_INT(user_update(c, "", CLOG_USER_STATUS, "x", 0).err, CH_EINVAL);
    struct clog_cmd with_conv = {.op = CLOG_OP_USER_UPDATE, .kind = CLOG_USER_STATUS,
                                 .conv = 1, .actor = ch_slice_str("alice"),
                                 .body = ch_slice_str("x")};
    CHECK_EQ_INT(run(c, &with_conv).err, CH_EINVAL);
    CHECK_EQ_U64(clog_digest(c), before);
    /* the bounds themselves are fine */
    struct clog_result ok[4];
    ok[0] = user_update(c, "alice", CLOG_USER_SETTINGS, repeat('s', 4096), 0);
    ok[1] = user_update(c, "alice", CLOG_USER_STATUS, repeat('s', 256), 0);
    ok[2] = user_update(c, "alice", CLOG_USER_PASSWORD, repeat('p', 256), 0);
    ok[3] = user_update(c, "alice", CLOG_USER_DISPLAY_NAME, repeat('n', 64), 0);
    for (int i = 0; i < 4; i++)
        CHECK(ok[i].err == 0 && !ok[i].dup);
    struct clog_user u = user_of(c, "alice");
    CHECK(u.settings.len == 4096 && u.status.len == 256 && u.password_record.len == 256 &&
          u.display_name.len == 64);
    CHECK_EQ_U64(u.created_ts, 7000);
    clog_destroy(c);
}

static void user_ops_travel_in_entries(void)
{
    CHECK(strcmp(clog_op_name(CLOG_OP_USER_CREATE), "user_create") == 0);
    CHECK(strcmp(clog_op_name(CLOG_OP_USER_UPDATE), "user_update") == 0);
    CHECK(strcmp(clog_op_name(CLOG_OP__MAX), "?") == 0);
    struct clog *c = fresh(0, 0);
    struct clog_cmd cmds[4] = {
        {.op = CLOG_OP_USER_CREATE, .actor = ch_slice_str("zed"),
         .body = ch_slice_str("rec"), .name = ch_slice_str("Zed")},
        {.op = CLOG_OP_USER_UPDATE, .kind = CLOG_USER_LAST_SEEN, .ref_seq = 4242,
         .actor = ch_slice_str("zed")},
        {.op = CLOG_OP_USER_UPDATE, .kind = CLOG_USER_SETTINGS,
         .actor = ch_slice_str("zed"), .body = ch_slice_str("{}")},
        {.op = CLOG_OP__MAX, .actor = ch_slice_str("zed")},
    };
    for (int pass = 0; pass < 2; pass++) {
        size_t len;
        uint8_t *e = make_entry(cmds, 4, pass ? 16 : 0, &len);
        CHECK_EQ_INT(clog_apply(c, e, len, &out), 0);
        free(e);
        CHECK_EQ_INT(out.n_results, 4);
        for (int i = 0; i < 3; i++) {
            CHECK_EQ_INT(out.results[i].err, 0);
            CHECK_EQ_INT(out.results[i].dup, pass); /* the second pass repeats */
            CHECK_EQ_U64(out.results[i].ts, 5000);
            CHECK_EQ_U64(out.results[i].conv, 0);
        }
        CHECK_EQ_INT(out.results[3].err, CH_EUNKNOWN_OP);
        CHECK_EQ_INT(out.n_events, 0);
    }
    struct clog_user u = user_of(c, "zed");
    CHECK(slice_is(u.display_name, "Zed") && slice_is(u.settings, "{}") &&
          u.last_seen == 4242 && u.created_ts == 5000);
    clog_destroy(c);
}

/* ---- the per-user conversation index ---------------------------------------------- */

struct id_list {
    uint64_t ids[1024];
    size_t n;
    int stop_at; /* 1-based call that returns 7; 0 = never */
};

static int collect(void *arg, uint64_t conv)
{
    struct id_list *l = arg;
    if (l->n < sizeof l->ids / sizeof l->ids[0])
        l->ids[l->n] = conv;
    l->n++;
    return l->stop_at != 0 && (int)l->n == l->stop_at ? 7 : 0;
}

static struct id_list convs_of_list;

/* "3,7,10": the user's conversations as the index reports them. */
static const char *convs_of(struct clog *c, const char *user)
{
    static char buf[256];
    struct id_list *l = &convs_of_list;
    l->n = 0;
    l->stop_at = 0;
    if (clog_user_convs_foreach(c, ch_slice_str(user), collect, l) != 0)
        return "error";
    buf[0] = 0;
    for (size_t i = 0; i < l->n && i < 32; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%" PRIu64, i ? "," : "",
                 l->ids[i]);
    return buf;
}

#define CHECK_CONVS(c, user, expect) CHECK(strcmp(convs_of(c, user), expect) == 0)

static void user_convs_follow_membership(void)
{
    struct clog *c = fresh(0, 0);
    CHECK_CONVS(c, "a", "");
    create(c, 10, CLOG_GROUP, "a", "b,c:2");
    create(c, 3, CLOG_DIRECT, "a", "a,b");
    create(c, 7, CLOG_GROUP, "c", "a:2");
    CHECK_CONVS(c, "a", "3,7,10"); /* ascending, whatever the creation order */
    CHECK_CONVS(c, "b", "3,10");
    CHECK_CONVS(c, "c", "7,10");
    CHECK_CONVS(c, "d", "");
    /* failed and duplicate commands leave the index alone */
    create(c, 10, CLOG_GROUP, "d", "e");
    simple(c, CLOG_OP_ADD_MEMBER, 10, "b", 0, 0, "d"); /* forbidden */
    simple(c, CLOG_OP_ADD_MEMBER, 10, "a", 0, 0, "b"); /* already a member */
    simple(c, CLOG_OP_REMOVE_MEMBER, 10, "a", 0, 0, "zz");
    CHECK_CONVS(c, "d", "");
    CHECK_CONVS(c, "e", "");
    CHECK_CONVS(c, "b", "3,10");
    /* add / remove */
    CHECK_EQ_INT(simple(c, CLOG_OP_ADD_MEMBER, 10, "c", 0, 0, "d").err, 0);
    CHECK_EQ_INT(simple(c, CLOG_OP_ADD_MEMBER, 7, "c", 0, 0, "d").err, 0);
    CHECK_CONVS(c, "d", "7,10");
    CHECK_EQ_INT(simple(c, CLOG_OP_REMOVE_MEMBER, 10, "a", 0, 0, "d").err, 0);
    CHECK_CONVS(c, "d", "7");
    /* leave, with ownership passing to the earliest admin */
    CHECK_EQ_INT(simple(c, CLOG_OP_LEAVE, 10, "a", 0, 0, "").err, 0);
    CHECK_EQ_INT(role_of(c, 10, "c"), CLOG_ROLE_OWNER);
    CHECK_CONVS(c, "a", "3,7");
    CHECK_CONVS(c, "c", "7,10");
    CHECK_EQ_INT(simple(c, CLOG_OP_LEAVE, 10, "c", 0, 0, "").err, 0);
    CHECK_EQ_INT(role_of(c, 10, "b"), CLOG_ROLE_OWNER);
    CHECK_CONVS(c, "c", "7");
    CHECK_CONVS(c, "b", "3,10");
    /* the last member leaves: the conversation stays, with nobody in it */
    CHECK_EQ_INT(simple(c, CLOG_OP_LEAVE, 10, "b", 0, 0, "").err, 0);
    CHECK_CONVS(c, "b", "3");
    /* coming back */
    CHECK_EQ_INT(simple(c, CLOG_OP_ADD_MEMBER, 7, "c", 0, 0, "b").err, 0);
    CHECK_CONVS(c, "b", "3,7");
    /* early stop returns fn's value */
    struct id_list l = {.stop_at = 1};
    CHECK_EQ_INT(clog_user_convs_foreach(c, ch_slice_str("b"), collect, &l), 7);
    CHECK_EQ_INT(l.n, 1);
    CHECK_EQ_U64(l.ids[0], 3);
    /* membership needs no user record, and user records no membership */
    struct clog_user u;
    CHECK_EQ_INT(clog_user_get(c, ch_slice_str("b"), &u), CH_ENOUSER);
    user_create(c, "loner", "pw", "");
    CHECK_CONVS(c, "loner", "");
    clog_destroy(c);
}

/* A member list of `n` users named prefix0..prefix(n-1), all MEMBER. */
static struct ch_slice many_members(struct ch_wbuf *b, const char *prefix, int n)
{
    ch_wbuf_reset(b);
    size_t at = clog_members_begin(b);
    char name[32];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s%d", prefix, i);
        clog_members_put(b, ch_slice_str(name), CLOG_ROLE_MEMBER);
    }
    clog_members_end(b, at, (uint32_t)n);
    struct ch_slice s = {b->data, b->len};
    return s;
}

static void user_convs_scale(void)
{
    struct clog *c = fresh(0, 0);
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    /* a 2000-member group */
    struct clog_cmd cmd = {.op = CLOG_OP_CREATE, .kind = CLOG_GROUP, .conv = 42,
                           .actor = ch_slice_str("hub"), .name = ch_slice_str("big"),
                           .members = many_members(&b, "m", 2000)};
    CHECK_EQ_INT(run(c, &cmd).err, 0);
    char name[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "m%d", i);
        CHECK_CONVS(c, name, "42");
    }
    for (int i = 0; i < 2000; i += 2) {
        snprintf(name, sizeof name, "m%d", i);
        CHECK_EQ_INT(simple(c, CLOG_OP_REMOVE_MEMBER, 42, "hub", 0, 0, name).err, 0);
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "m%d", i);
        CHECK_CONVS(c, name, i % 2 ? "42" : "");
    }
    /* one user in 500 conversations, joined in scrambled id order */
    for (uint64_t k = 0; k < 500; k++) {
        uint64_t conv = 1000 + (k * 337) % 500; /* 337 is coprime with 500 */
        if (k % 2)
            create(c, conv, CLOG_GROUP, "hub", "");
        else {
            create(c, conv, CLOG_GROUP, "other", "");
            simple(c, CLOG_OP_ADD_MEMBER, conv, "other", 0, 0, "hub");
        }
    }
    struct id_list *l = &convs_of_list;
    l->n = 0;
    l->stop_at = 0;
    CHECK_EQ_INT(clog_user_convs_foreach(c, ch_slice_str("hub"), collect, l), 0);
    CHECK_EQ_INT(l->n, 501);
    CHECK_EQ_U64(l->ids[0], 42);
    for (size_t i = 1; i < l->n; i++)
        CHECK_EQ_U64(l->ids[i], 1000 + i - 1);
    /* leave every third; the rest stay in order */
    for (uint64_t conv = 1000; conv < 1500; conv += 3)
        CHECK_EQ_INT(simple(c, CLOG_OP_LEAVE, conv, "hub", 0, 0, "").err, 0);
    l->n = 0;
    clog_user_convs_foreach(c, ch_slice_str("hub"), collect, l);
    CHECK_EQ_INT(l->n, 1 + 500 - 167);
    for (size_t i = 1; i < l->n; i++) {
        CHECK(l->ids[i] > l->ids[i - 1]);
        CHECK((l->ids[i] - 1000) % 3 != 0);
    }
    ch_wbuf_free(&b);
    clog_destroy(c);
}

/* Do a and b report the same conversations for every member of every conversation
 * (and for the given extra users)? */
struct index_cmp {
    struct clog *a, *b;
    int differ;
};

static int index_cmp_member(void *arg, const struct clog_member *m)
{
    struct index_cmp *ic = arg;
    struct id_list la = {.n = 0}, lb = {.n = 0};
    clog_user_convs_foreach(ic->a, m->user, collect, &la);
    clog_user_convs_foreach(ic->b, m->user, collect, &lb);
    if (la.n != lb.n || memcmp(la.ids, lb.ids, la.n * sizeof la.ids[0]) != 0)
        ic->differ = 1;
    return 0;
}

static int index_cmp_conv(void *arg, uint64_t conv)
{
    struct index_cmp *ic = arg;
    clog_members_foreach(ic->a, conv, index_cmp_member, ic);
    clog_members_foreach(ic->b, conv, index_cmp_member, ic);
    return 0;
}

static int same_index(struct clog *a, struct clog *b)
{
    struct index_cmp ic = {a, b, 0};
    clog_convs_foreach(a, index_cmp_conv, &ic);
    clog_convs_foreach(b, index_cmp_conv, &ic);
    return !ic.differ;
}

static int same_user(struct clog *a, struct clog *b, const char *user)
{
    struct clog_user x, y;
    int ra = clog_user_get(a, ch_slice_str(user), &x);
    int rb = clog_user_get(b, ch_slice_str(user), &y);
    if (ra != rb)
        return 0;
    if (ra != 0)
        return 1;
    return ch_slice_eq(x.user, y.user) &&
           ch_slice_eq(x.password_record, y.password_record) &&
           ch_slice_eq(x.display_name, y.display_name) &&
           ch_slice_eq(x.status, y.status) && ch_slice_eq(x.settings, y.settings) &&
           x.created_ts == y.created_ts &&
           x.last_seen == y.last_seen && x.disabled == y.disabled;
}

/* Users with every field set, and conversations with churned membership. */
static struct clog *users_state(void)
{
    struct clog *c = fresh(0, 0);
    user_create(c, "alice", "pw-a", "Alice");
    user_create(c, "bob", "pw-b", "");
    user_create(c, "al", "pw-al", "");
    user_create(c, "carol", "pw-c", "C");
    user_update(c, "alice", CLOG_USER_STATUS, "busy", 0);
    user_update(c, "alice", CLOG_USER_SETTINGS, "{\"n\":1}", 0);
    user_update(c, "alice", CLOG_USER_LAST_SEEN, "", 123456);
    user_update(c, "bob", CLOG_USER_DISABLED, "", 1);
    create(c, 5, CLOG_GROUP, "alice", "bob,carol:2,dave");
    create(c, 2, CLOG_DIRECT, "alice", "alice,bob");
    create(c, 9, CLOG_GROUP, "carol", "dave");
    post(c, 5, "bob", "k1", "hello");
    simple(c, CLOG_OP_REMOVE_MEMBER, 5, "alice", 0, 0, "dave");
    simple(c, CLOG_OP_LEAVE, 5, "alice", 0, 0, "");
    simple(c, CLOG_OP_ADD_MEMBER, 9, "carol", 0, 0, "alice");
    return c;
}

static void snapshots_carry_users(void)
{
    struct clog *a = users_state();
    uint8_t *snap;
    size_t len;
    CHECK_EQ_INT(clog_snapshot(a, malloc, &snap, &len), 0);
    CHECK_EQ_INT(snap[4], 2); /* format version 2 */
    /* into a fresh state and into one that already holds other users */
    struct clog *b = fresh(0, 0), *t = fresh(0, 0);
    user_create(t, "alice", "other-record", "");
    user_create(t, "zoe", "pw-z", "");
    create(t, 77, CLOG_GROUP, "zoe", "alice");
    CHECK_EQ_INT(clog_restore(b, snap, len), 0);
    CHECK_EQ_INT(clog_restore(t, snap, len), 0);
    CHECK_EQ_U64(clog_digest(b), clog_digest(a));
    CHECK_EQ_U64(clog_digest(t), clog_digest(a));
    static const char *names[] = {"alice", "bob", "al", "carol", "dave", "zoe"};
    for (int i = 0; i < 6; i++) {
        CHECK(same_user(a, b, names[i]));
        CHECK(same_user(a, t, names[i]));
        char expect[256]; /* convs_of reuses one buffer */
        snprintf(expect, sizeof expect, "%s", convs_of(a, names[i]));
        CHECK_CONVS(b, names[i], expect);
        CHECK_CONVS(t, names[i], expect);
    }
    CHECK_CONVS(b, "alice", "2,9");
    CHECK_CONVS(b, "dave", "9");
    CHECK_CONVS(t, "zoe", ""); /* the old state is gone, index included */
    CHECK(same_index(a, b) && same_index(a, t));
    struct clog_stats sa, sb;
    clog_stats(a, &sa);
    clog_stats(t, &sb);
    CHECK(sa.users == 4 && sb.users == 4 && sb.conversations == 3);
    /* the restored state keeps working like the live one */
    struct clog *states[2] = {a, t};
    for (int i = 0; i < 2; i++) {
        struct clog *s = states[i];
        CHECK(user_create(s, "bob", "pw-b", "").dup);
        CHECK_EQ_INT(user_create(s, "bob", "pw-x", "").err, CH_EEXISTS);
        CHECK(user_update(s, "alice", CLOG_USER_LAST_SEEN, "", 100).dup);
        CHECK_EQ_INT(simple(s, CLOG_OP_ADD_MEMBER, 9, "carol", 0, 0, "bob").err, 0);
        CHECK_EQ_INT(simple(s, CLOG_OP_LEAVE, 9, "alice", 0, 0, "").err, 0);
    }
    CHECK_CONVS(t, "bob", "2,5,9");
    CHECK_CONVS(t, "alice", "2");
    CHECK(same_index(a, t));
    free(snap);
    clog_destroy(a);
    clog_destroy(b);
    clog_destroy(t);
}

/* Wraps a raw payload in a snapshot header of the given version (no compression). */
static uint8_t *wrap_snapshot(uint16_t version, const uint8_t *raw, size_t raw_len,
                              size_t *len)
{
    uint8_t *buf = malloc(32 + raw_len);
    if (buf == NULL)
        abort();
    ch_store_u32(buf, 0x31534843u);
    buf[4] = (uint8_t)version;
    buf[5] = (uint8_t)(version >> 8);
    buf[6] = buf[7] = 0;
    ch_store_u32(buf + 8, (uint32_t)raw_len);
    ch_store_u32(buf + 12, 0);
    ch_store_u32(buf + 16, (uint32_t)raw_len);
    ch_store_u32(buf + 20, 0);
    memcpy(buf + 32, raw, raw_len);
    ch_store_u32(buf + 24, ch_crc32c(0, buf + 32, raw_len));
    ch_store_u32(buf + 28, ch_crc32c(0, buf, 28));
    *len = 32 + raw_len;
    return buf;
}

/* The raw payload of a snapshot (decompressed); caller frees. */
static uint8_t *snapshot_payload(const uint8_t *snap, size_t len, size_t *raw_len)
{
    *raw_len = ch_load_u32(snap + 8);
    uint8_t *raw = malloc(*raw_len + 1);
    if (raw == NULL)
        abort();
    if (snap[6] & 1) {
        int n = LZ4_decompress_safe((const char *)snap + 32, (char *)raw, (int)(len - 32),
                                    (int)*raw_len);
        if (n < 0 || (size_t)n != *raw_len)
            abort();
    } else {
        memcpy(raw, snap + 32, *raw_len);
    }
    return raw;
}

/* A version-1 payload written field by field in the old layout: one group
 * conversation (id 4) created by "ann" with "bob", holding one message. */
static void v1_payload(struct ch_wbuf *b)
{
    struct ch_wbuf rec;
    ch_wbuf_init(&rec);
    struct ch_wbuf mb;
    ch_wbuf_init(&mb);
    size_t at = clog_members_begin(&mb);
    clog_members_put(&mb, ch_slice_str("ann"), CLOG_ROLE_OWNER);
    clog_members_put(&mb, ch_slice_str("bob"), CLOG_ROLE_MEMBER);
    clog_members_end(&mb, at, 2);
    struct clog_event ev = {.type = CLOG_EV_CREATED, .kind = CLOG_GROUP, .conv = 4,
                            .seq = 1, .ts = 100, .actor = ch_slice_str("ann"),
                            .body = ch_slice_str("room"),
                            .members = {mb.data, mb.len}};
    clog_event_encode(&rec, &ev);
    struct clog_event msg = {.type = CLOG_EV_MESSAGE, .conv = 4, .seq = 2, .ts = 101,
                             .actor = ch_slice_str("bob"),
                             .client_msg_id = ch_slice_str("c1"),
                             .body = ch_slice_str("hi")};
    clog_event_encode(&rec, &msg);
    ch_put_u64(b, 3); /* applied entries */
    ch_put_u64(b, 3); /* applied commands */
    ch_put_u64(b, 1); /* conversations */
    ch_put_u64(b, 4);   /* id */
    ch_put_u64(b, 101); /* last_ts */
    ch_put_u64(b, 2);   /* n_events */
    ch_put_u32(b, 2);   /* n_members: user, role, delivered, read */
    ch_put_str16(b, ch_slice_str("ann"));
    ch_put_u8(b, CLOG_ROLE_OWNER);
    ch_put_u64(b, 2);
    ch_put_u64(b, 2);
    ch_put_str16(b, ch_slice_str("bob"));
    ch_put_u8(b, CLOG_ROLE_MEMBER);
    ch_put_u64(b, 1);
    ch_put_u64(b, 0);
    ch_put_u64(b, rec.len); /* arena_len, then the records */
    ch_put_raw(b, rec.data, rec.len);
    ch_wbuf_free(&rec);
    ch_wbuf_free(&mb);
}

static void version_1_snapshots_restore(void)
{
    struct ch_wbuf raw;
    ch_wbuf_init(&raw);
    v1_payload(&raw);
    size_t len;
    uint8_t *snap = wrap_snapshot(1, raw.data, raw.len, &len);
    struct clog *t = users_state(); /* users and conversations that must all go */
    CHECK_EQ_INT(clog_restore(t, snap, len), 0);
    struct clog_stats st;
    clog_stats(t, &st);
    CHECK(st.users == 0 && st.conversations == 1 && st.events == 2 &&
          st.idempotency_keys == 1 && st.applied_entries == 3);
    CHECK_EQ_INT(role_of(t, 4, "ann"), CLOG_ROLE_OWNER);
    CHECK_CONVS(t, "ann", "4");
    CHECK_CONVS(t, "bob", "4");
    CHECK_CONVS(t, "alice", "");
    struct clog_user u;
    CHECK_EQ_INT(clog_user_get(t, ch_slice_str("alice"), &u), CH_ENOUSER);
    CHECK(post(t, 4, "bob", "c1", "again").dup); /* the idempotency index is rebuilt */
    /* its re-snapshot is version 2 and restores to the same digest */
    uint8_t *again;
    size_t again_len;
    CHECK_EQ_INT(clog_snapshot(t, malloc, &again, &again_len), 0);
    struct clog *d = fresh(0, 0);
    CHECK_EQ_INT(clog_restore(d, again, again_len), 0);
    CHECK_EQ_U64(clog_digest(d), clog_digest(t));
    /* the same payload with the (empty) users section is version 2, not 1 */
    ch_put_u64(&raw, 0);
    free(snap);
    snap = wrap_snapshot(2, raw.data, raw.len, &len);
    struct clog *e = fresh(0, 0);
    CHECK_EQ_INT(clog_restore(e, snap, len), 0);
    CHECK_EQ_U64(clog_digest(e), clog_digest(d));
    free(snap);
    snap = wrap_snapshot(1, raw.data, raw.len, &len);
    CHECK_EQ_INT(clog_restore(e, snap, len), CH_EMALFORMED); /* trailing bytes in v1 */
    snap[4] = 3;
    ch_store_u32(snap + 28, ch_crc32c(0, snap, 28));
    CHECK_EQ_INT(clog_restore(e, snap, len), CH_EVERSION);
    free(snap);
    /* a version-2 snapshot of a state without users, minus its empty users section,
     * is the version-1 snapshot of that state */
    struct clog *convs = fresh(0, 0);
    create(convs, 8, CLOG_GROUP, "a", "b,c");
    for (int i = 0; i < 200; i++)
        post(convs, 8, "b", "", "compressible compressible compressible");
    CHECK_EQ_INT(clog_snapshot(convs, malloc, &snap, &len), 0);
    CHECK_EQ_INT(snap[6], 1); /* lz4 */
    size_t raw_len;
    uint8_t *payload = snapshot_payload(snap, len, &raw_len);
    free(snap);
    CHECK_EQ_U64(ch_load_u32(payload + raw_len - 8), 0); /* n_users, u64 */
    CHECK_EQ_U64(ch_load_u32(payload + raw_len - 4), 0);
    snap = wrap_snapshot(1, payload, raw_len - 8, &len);
    struct clog *old = users_state();
    CHECK_EQ_INT(clog_restore(old, snap, len), 0);
    CHECK_EQ_U64(clog_digest(old), clog_digest(convs));
    CHECK(same_index(old, convs));
    free(payload);
    free(snap);
    clog_destroy(convs);
    clog_destroy(old);
    free(again);
    ch_wbuf_free(&raw);
    clog_destroy(t);
    clog_destroy(d);
    clog_destroy(e);
}

/* One user record in the snapshot layout. */
static void put_user_rec(struct ch_wbuf *b, const char *user, uint64_t created,
                         uint64_t last_seen, uint8_t disabled, struct ch_slice password,
                         struct ch_slice display, struct ch_slice status,
                         struct ch_slice settings)
{
    ch_put_str16(b, ch_slice_str(user));
    ch_put_u64(b, created);
    ch_put_u64(b, last_seen);
    ch_put_u8(b, disabled);
    ch_put_str16(b, password);
    ch_put_str16(b, display);
    ch_put_str16(b, status);
    ch_put_str16(b, settings);
}

static void corrupt_user_snapshots_change_nothing(void)
{
    struct clog *a = users_state();
    uint8_t *snap;
    size_t len;
    CHECK_EQ_INT(clog_snapshot(a, malloc, &snap, &len), 0);
    struct clog *t = fresh(0, 0);
    user_create(t, "zoe", "pw-z", "Zoe");
    user_update(t, "zoe", CLOG_USER_SETTINGS, "{}", 0);
    create(t, 77, CLOG_GROUP, "zoe", "alice");
    uint64_t before = clog_digest(t);
    uint8_t *bad = malloc(len);
    /* every single-byte flip is caught by a checksum */
    for (size_t at = 0; at < len; at += 7) {
        memcpy(bad, snap, len);
        bad[at] ^= 0x04;
        int rv = clog_restore(t, bad, len);
        CHECK(rv == CH_ECORRUPT || rv == CH_EMALFORMED || rv == CH_EVERSION);
    }
    CHECK_EQ_INT(clog_restore(t, snap, len - 3), CH_EMALFORMED);
    /* well-checksummed payloads with bad users: the conversations before them are
     * valid, and still nothing changes */
    struct ch_slice pw = ch_slice_str("pw"), none = {NULL, 0};
    struct ch_slice big_settings = {(const uint8_t *)repeat('s', 4097), 4097};
    enum { CASES = 9 };
    for (int k = 0; k < CASES; k++) {
        struct ch_wbuf p;
        ch_wbuf_init(&p);
        v1_payload(&p);
        switch (k) {
        case 0: /* out of order */
            ch_put_u64(&p, 2);
            put_user_rec(&p, "bob", 1, 0, 0, pw, none, none, none);
            put_user_rec(&p, "alice", 1, 0, 0, pw, none, none, none);
            break;
        case 1: /* duplicate */
            ch_put_u64(&p, 2);
            put_user_rec(&p, "bob", 1, 0, 0, pw, none, none, none);
            put_user_rec(&p, "bob", 1, 0, 0, pw, none, none, none);
            break;
        case 2: /* a prefix after its extension */
            ch_put_u64(&p, 2);
            put_user_rec(&p, "bob", 1, 0, 0, pw, none, none, none);
            put_user_rec(&p, "bo", 1, 0, 0, pw, none, none, none);
            break;
        case 3: /* empty password record */
            ch_put_u64(&p, 1);
            put_user_rec(&p, "bob", 1, 0, 0, none, none, none, none);
            break;
        case 4: /* disabled must be 0 or 1 */
            ch_put_u64(&p, 1);
            put_user_rec(&p, "bob", 1, 0, 2, pw, none, none, none);
            break;
        case 5: /* settings too long */
            ch_put_u64(&p, 1);
            put_user_rec(&p, "bob", 1, 0, 0, pw, none, none, big_settings);
            break;
        case 6: /* count larger than the records */
            ch_put_u64(&p, 3);
            put_user_rec(&p, "bob", 1, 0, 0, pw, none, none, none);
            break;
        case 7: /* truncated record */
            ch_put_u64(&p, 1);
            put_user_rec(&p, "bob", 1, 0, 0, pw, none, none, none);
            p.len -= 1;
            break;
        case 8: /* empty user id */
            ch_put_u64(&p, 1);
            put_user_rec(&p, "", 1, 0, 0, pw, none, none, none);
            break;
        }
        size_t l;
        uint8_t *s = wrap_snapshot(2, p.data, p.len, &l);
        CHECK_EQ_INT(clog_restore(t, s, l), CH_EMALFORMED);
        free(s);
        ch_wbuf_free(&p);
        CHECK_EQ_U64(clog_digest(t), before);
    }
    /* and a good hand-written one restores */
    {
        struct ch_wbuf p;
        ch_wbuf_init(&p);
        v1_payload(&p);
        ch_put_u64(&p, 2);
        put_user_rec(&p, "bo", 11, 0, 0, pw, none, none, none);
        put_user_rec(&p, "bob", 12, 99, 1, pw, ch_slice_str("Bob"), ch_slice_str("hi"),
                     ch_slice_str("{}"));
        size_t l;
        uint8_t *s = wrap_snapshot(2, p.data, p.len, &l);
        struct clog *g = fresh(0, 0);
        CHECK_EQ_INT(clog_restore(g, s, l), 0);
        struct clog_user u = user_of(g, "bob");
        CHECK(u.created_ts == 12 && u.last_seen == 99 && u.disabled == 1 &&
              slice_is(u.display_name, "Bob") && slice_is(u.status, "hi") &&
              slice_is(u.settings, "{}"));
        CHECK(slice_is(user_of(g, "bo").display_name, "bo"));
        free(s);
        ch_wbuf_free(&p);
        clog_destroy(g);
    }
    /* the target is intact: users, index and conversations */
    CHECK_EQ_U64(clog_digest(t), before);
    CHECK(slice_is(user_of(t, "zoe").settings, "{}"));
    CHECK_CONVS(t, "alice", "77");
    CHECK_CONVS(t, "bob", "");
    CHECK(user_create(t, "zoe", "pw-z", "").dup);
    free(bad);
    free(snap);
    clog_destroy(a);
    clog_destroy(t);
}

/* A state with one user; `variant` changes one field (0 = none). */
static struct clog *one_user(int variant, int order)
{
    struct clog *c = fresh(0, 0);
    struct clog_output o;
    clog_output_init(&o);
    const char *names[2] = {"u1", variant == 1 ? "u2x" : "u2"};
    for (int i = 0; i < 2; i++) {
        const char *name = names[order ? 1 - i : i];
        struct clog_cmd cmd = {.op = CLOG_OP_USER_CREATE, .actor = ch_slice_str(name),
                               .body = ch_slice_str(variant == 2 ? "pw!" : "pw"),
                               .name = ch_slice_str(variant == 3 ? "N2" : "N")};
        clog_apply_cmd(c, &cmd, variant == 4 ? 11 : 10, &o);
    }
    struct clog_cmd up[4] = {
        {.kind = CLOG_USER_STATUS, .body = ch_slice_str(variant == 5 ? "away" : "here")},
        {.kind = CLOG_USER_SETTINGS,
         .body = ch_slice_str(variant == 6 ? "{\"a\":2}" : "{\"a\":1}")},
        {.kind = CLOG_USER_LAST_SEEN, .ref_seq = variant == 7 ? 501 : 500},
        {.kind = CLOG_USER_DISABLED, .ref_seq = variant == 8 ? 1 : 0},
    };
    for (int i = 0; i < 4; i++) {
        up[i].op = CLOG_OP_USER_UPDATE;
        up[i].actor = ch_slice_str("u1");
        clog_apply_cmd(c, &up[i], 20, &o);
    }
    clog_output_free(&o);
    return c;
}

static void digest_covers_every_user_field(void)
{
    struct clog *base = one_user(0, 0);
    struct clog *reordered = one_user(0, 1);
    CHECK_EQ_U64(clog_digest(reordered), clog_digest(base)); /* independent of layout */
    for (int v = 1; v <= 8; v++) {
        struct clog *c = one_user(v, 0);
        if (clog_digest(c) == clog_digest(base)) {
            fprintf(stderr, "  variant %d does not change the digest\n", v);
            CHECK(0);
        }
        clog_destroy(c);
    }
    /* a display name moved from one field to another is a different state */
    struct clog *x = fresh(0, 0), *y = fresh(0, 0);
    user_create(x, "u", "pw", "");
    user_update(x, "u", CLOG_USER_STATUS, "ab", 0);
    user_create(y, "u", "pw", "");
    user_update(y, "u", CLOG_USER_SETTINGS, "ab", 0);
    CHECK(clog_digest(x) != clog_digest(y));
    /* no users: the digest of conversations alone is unchanged by the users table */
    struct clog *e = fresh(0, 0), *f = fresh(0, 0);
    CHECK_EQ_U64(clog_digest(e), clog_digest(f));
    user_create(f, "u", "pw", "");
    CHECK(clog_digest(e) != clog_digest(f));
    clog_destroy(x);
    clog_destroy(y);
    clog_destroy(e);
    clog_destroy(f);
    clog_destroy(base);
    clog_destroy(reordered);
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
        TEST_CASE(user_create_rules),
        TEST_CASE(user_update_rules),
        TEST_CASE(user_ops_travel_in_entries),
        TEST_CASE(user_convs_follow_membership),
        TEST_CASE(user_convs_scale),
        TEST_CASE(snapshots_carry_users),
        TEST_CASE(version_1_snapshots_restore),
        TEST_CASE(corrupt_user_snapshots_change_nothing),
        TEST_CASE(digest_covers_every_user_field),
    };
    clog_output_init(&out);
    ch_wbuf_init(&members_buf);
    int rv = test_run_all(cases, sizeof cases / sizeof cases[0]);
    cleanup();
    return rv;
}
