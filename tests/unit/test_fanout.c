/* Unit tests of fanout (src/fanout) and the session primitives (src/gateway/session). */
#include "test.h"

#include <jansson.h>

#include "common/error.h"
#include "fanout/fanout.h"
#include "gateway/session.h"
#include "raft-log/clog_cmd.h"

/* ---- a fake shell: records pushes and fetches, answers fetches from a log ---- */

#define MAX_PUSH 200000
#define MAX_FETCH 100000

struct push_rec {
    uint64_t conn, conv, seq;
    struct fan_msg *msg;
};

struct fetch_rec {
    uint64_t conn, conv, after;
};

static struct push_rec pushes[MAX_PUSH];
static size_t n_pushes;
static struct fetch_rec fetches[MAX_FETCH];
static size_t n_fetches;
static uint64_t full_conn;        /* push to this connection fails (queue full) */
static uint64_t overflowed[16];
static size_t n_overflowed;

static int fake_push(void *data, uint64_t conn, struct fan_msg *m)
{
    (void)data;
    if (conn == full_conn)
        return CH_ELIMIT;
    json_error_t e;
    json_t *j = json_loadb((const char *)fan_msg_payload(m), m->len, 0, &e);
    if (j == NULL || n_pushes >= MAX_PUSH) {
        json_decref(j);
        return CH_ELIMIT;
    }
    struct push_rec *p = &pushes[n_pushes++];
    p->conn = conn;
    p->conv = (uint64_t)json_integer_value(json_object_get(j, "conv"));
    p->seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
    p->msg = m;
    json_decref(j);
    return 0;
}

static void fake_fetch(void *data, uint64_t conn, uint64_t conv, uint64_t after)
{
    (void)data;
    if (n_fetches < MAX_FETCH)
        fetches[n_fetches++] = (struct fetch_rec){conn, conv, after};
}

static void fake_overflow(void *data, uint64_t conn)
{
    (void)data;
    if (n_overflowed < 16)
        overflowed[n_overflowed++] = conn;
}

/* The room callback: catch-up may queue on a connection while this is non-zero. */
static size_t room_left = SIZE_MAX;

static int fake_room(void *data, uint64_t conn)
{
    (void)data;
    (void)conn;
    return room_left > 0;
}

static int fake_push_counting(void *data, uint64_t conn, struct fan_msg *m)
{
    if (room_left != SIZE_MAX && room_left > 0)
        room_left--;
    return fake_push(data, conn, m);
}

static struct fan *new_fan(void)
{
    n_pushes = n_fetches = n_overflowed = 0;
    full_conn = 0;
    room_left = SIZE_MAX;
    struct fan_callbacks cb = {.data = NULL,
                               .push = fake_push_counting,
                               .fetch = fake_fetch,
                               .overflow = fake_overflow,
                               .room = fake_room};
    struct fan *f = NULL;
    if (fan_create(&cb, 16, &f) != 0)
        return NULL;
    return f;
}

/* A conversation's log as the store would hold it: event records by seq. */
struct log {
    uint64_t conv;
    struct ch_wbuf rec[2048]; /* rec[seq] */
    uint64_t last;
};

static void log_append(struct log *lg, uint8_t type, const char *actor, const char *target,
                       struct clog_event *out)
{
    struct clog_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.conv = lg->conv;
    ev.seq = ++lg->last;
    ev.ts = 1000 + ev.seq;
    ev.actor = ch_slice_str(actor);
    ev.target = ch_slice_str(target ? target : "");
    ev.body = ch_slice_str(type == CLOG_EV_MESSAGE ? "hello" : "");
    ch_wbuf_init(&lg->rec[ev.seq]);
    clog_event_encode(&lg->rec[ev.seq], &ev);
    if (out) {
        struct ch_rbuf r;
        ch_rbuf_init(&r, lg->rec[ev.seq].data, lg->rec[ev.seq].len);
        clog_event_decode(&r, out);
    }
}

static void log_event(const struct log *lg, uint64_t seq, struct clog_event *ev)
{
    struct ch_rbuf r;
    ch_rbuf_init(&r, lg->rec[seq].data, lg->rec[seq].len);
    clog_event_decode(&r, ev);
}

static void log_free(struct log *lg)
{
    for (uint64_t s = 1; s <= lg->last; s++)
        ch_wbuf_free(&lg->rec[s]);
    lg->last = 0;
}

/* Answers fetch i from the log with at most `limit` events; returns fan_fetched's value. */
static int answer_fetch(struct fan *f, const struct log *lg, size_t i, uint32_t limit)
{
    struct fetch_rec q = fetches[i];
    struct ch_wbuf page;
    ch_wbuf_init(&page);
    uint32_t n = 0;
    uint64_t s = q.after + 1;
    for (; s <= lg->last && n < limit; s++, n++)
        ch_put_raw(&page, lg->rec[s].data, lg->rec[s].len);
    int has_more = s <= lg->last;
    int done = fan_fetched(f, q.conn, q.conv, page.data, page.len, n, has_more, lg->last);
    ch_wbuf_free(&page);
    return done;
}

/* The seqs pushed to conn for conv, in push order. */
static size_t pushed_seqs(uint64_t conn, uint64_t conv, uint64_t *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < n_pushes; i++)
        if (pushes[i].conn == conn && pushes[i].conv == conv && n < cap)
            out[n++] = pushes[i].seq;
    return n;
}

/* ---- tests ---- */

static void in_order_and_duplicates(void)
{
    struct fan *f = new_fan();
    CHECK(f != NULL);
    static struct log lg = {.conv = 7};
    CHECK_EQ_INT(fan_conn_add(f, 1, "alice", 5), 0);
    CHECK_EQ_INT(fan_conn_add(f, 1, "alice", 5), CH_EEXISTS);
    CHECK_EQ_INT(fan_follow(f, 1, 7, 0, 0, 0), 0);
    struct clog_event ev;
    for (int i = 0; i < 5; i++) {
        log_append(&lg, CLOG_EV_MESSAGE, "bob", NULL, &ev);
        fan_event(f, &ev);
    }
    log_event(&lg, 3, &ev);
    fan_event(f, &ev); /* a replayed entry */
    uint64_t seqs[16];
    CHECK_EQ_INT(pushed_seqs(1, 7, seqs, 16), 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_U64(seqs[i], (uint64_t)i + 1);
    CHECK_EQ_INT(n_fetches, 0);
    CHECK_EQ_U64(fan_cursor(f, 1, 7), 5);
    struct fan_stats st;
    fan_stats(f, &st);
    CHECK_EQ_U64(st.duplicates, 1);
    fan_destroy(f);
    log_free(&lg);
}

static void gap_is_filled_by_a_read(void)
{
    struct fan *f = new_fan();
    static struct log lg = {.conv = 9};
    struct clog_event ev;
    for (int i = 0; i < 6; i++)
        log_append(&lg, CLOG_EV_MESSAGE, "bob", NULL, NULL);
    CHECK_EQ_INT(fan_conn_add(f, 1, "alice", 5), 0);
    CHECK_EQ_INT(fan_follow(f, 1, 9, 2, 2, 0), 0);
    CHECK_EQ_INT(n_fetches, 0);
    log_event(&lg, 5, &ev); /* 3 and 4 were lost */
    fan_event(f, &ev);
    CHECK_EQ_INT(n_pushes, 0);
    CHECK_EQ_INT(n_fetches, 1);
    CHECK_EQ_U64(fetches[0].after, 2);
    CHECK(fan_behind(f, 1, 9));
    log_event(&lg, 6, &ev); /* more arrives while the read is out: no second read */
    fan_event(f, &ev);
    CHECK_EQ_INT(n_fetches, 1);
    CHECK_EQ_INT(answer_fetch(f, &lg, 0, 100), 1);
    uint64_t seqs[16];
    CHECK_EQ_INT(pushed_seqs(1, 9, seqs, 16), 4);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_U64(seqs[i], (uint64_t)i + 3);
    CHECK(!fan_behind(f, 1, 9));
    fan_destroy(f);
    log_free(&lg);
}

static void cursor_past_the_end_is_clamped(void)
{
    struct fan *f = new_fan();
    static struct log lg = {.conv = 11};
    struct clog_event ev;
    for (int i = 0; i < 2; i++)
        log_append(&lg, CLOG_EV_MESSAGE, "bob", NULL, NULL);
    CHECK_EQ_INT(fan_conn_add(f, 1, "alice", 5), 0);
    /* sync claims seq 100 of a conversation that has 2 */
    CHECK_EQ_INT(fan_follow(f, 1, 11, 100, 0, FAN_RESET | FAN_READ), 0);
    CHECK_EQ_INT(n_fetches, 1);
    CHECK_EQ_INT(answer_fetch(f, &lg, 0, 100), 1);
    CHECK_EQ_U64(fan_cursor(f, 1, 11), 2);
    log_append(&lg, CLOG_EV_MESSAGE, "bob", NULL, &ev);
    fan_event(f, &ev); /* seq 3 is pushed, not taken for a duplicate */
    uint64_t seqs[4];
    CHECK_EQ_INT(pushed_seqs(1, 11, seqs, 4), 1);
    CHECK_EQ_U64(seqs[0], 3);
    fan_destroy(f);
    log_free(&lg);
}

/*
 * Session start: joins seen while the session's read of the shard is out are
 * tentative; the read settles them by Raft index.  Replayed old joins (index at
 * or below the read's) push nothing; a join after the read stands and is caught
 * up; listed conversations start at the read's last_seq.
 */
static void session_start_settles_joins_by_index(void)
{
    struct fan *f = new_fan();
    static struct log old = {.conv = 21}, fresh = {.conv = 22}, gone = {.conv = 23};
    struct clog_event ev;
    CHECK_EQ_INT(fan_conn_add(f, 1, "alice", 5), 0);
    CHECK_EQ_INT(fan_conn_loading(f, 1, 4), 0);
    /* replay after a restart: conv 21's creation (index 10) and 3 messages */
    log_append(&old, CLOG_EV_MEMBER_ADDED, "bob", "alice", &ev);
    fan_event_at(f, &ev, 2, 10);
    for (int i = 0; i < 3; i++) {
        log_append(&old, CLOG_EV_MESSAGE, "bob", NULL, &ev);
        fan_event_at(f, &ev, 2, 11 + (uint64_t)i);
    }
    /* conv 23: an old join, later undone by a removal, both before the read */
    log_append(&gone, CLOG_EV_MEMBER_ADDED, "bob", "alice", &ev);
    fan_event_at(f, &ev, 2, 14);
    /* conv 22: created after the read's state (index 40) */
    log_append(&fresh, CLOG_EV_MEMBER_ADDED, "bob", "alice", &ev);
    fan_event_at(f, &ev, 2, 41);
    log_append(&fresh, CLOG_EV_MESSAGE, "bob", NULL, &ev);
    fan_event_at(f, &ev, 2, 42);
    CHECK_EQ_INT(n_pushes, 0); /* nothing pushed while tentative */
    CHECK(!fan_follows(f, 1, 21));
    /* the read at index 40 lists conv 21 (last seq 4): not conv 23, not conv 22 */
    struct fan_start starts[1] = {{.conv = 21, .last_seq = 4}};
    CHECK_EQ_INT(fan_conn_shard_read(f, 1, 2, 40, starts, 1, 42), 0);
    CHECK(fan_follows(f, 1, 21) && fan_follows(f, 1, 22) && !fan_follows(f, 1, 23));
    CHECK_EQ_U64(fan_cursor(f, 1, 21), 4);
    /* conv 22 is caught up from before its join; conv 21 is read because the
     * stream (42) is past the read (40) */
    CHECK_EQ_INT(n_fetches, 2);
    for (size_t i = 0; i < n_fetches; i++)
        answer_fetch(f, fetches[i].conv == 22 ? &fresh : &old, i, 100);
    uint64_t seqs[8];
    CHECK_EQ_INT(pushed_seqs(1, 21, seqs, 8), 0);
    CHECK_EQ_INT(pushed_seqs(1, 22, seqs, 8), 2);
    CHECK(seqs[0] == 1 && seqs[1] == 2);
    /* later replays of joins at or below the read's index are ignored */
    log_event(&gone, 1, &ev);
    fan_event_at(f, &ev, 2, 14);
    CHECK(!fan_follows(f, 1, 23));
    /* and a new event of conv 21 is pushed from the read's cursor */
    log_append(&old, CLOG_EV_MESSAGE, "bob", NULL, &ev);
    fan_event_at(f, &ev, 2, 43);
    CHECK_EQ_INT(pushed_seqs(1, 21, seqs, 8), 1);
    CHECK_EQ_U64(seqs[0], 5);
    fan_destroy(f);
    log_free(&old);
    log_free(&fresh);
    log_free(&gone);
}

/* A catch-up larger than the client reads is paced: the read's events are pushed
 * while there is room, then it waits for fan_resume; nothing is dropped, nothing
 * overflows, nothing is pushed twice. */
static void catch_up_is_paced_by_room(void)
{
    struct fan *f = new_fan();
    static struct log lg = {.conv = 31};
    for (int i = 0; i < 10; i++)
        log_append(&lg, CLOG_EV_MESSAGE, "bob", NULL, NULL);
    CHECK_EQ_INT(fan_conn_add(f, 1, "alice", 5), 0);
    room_left = 3; /* the queue takes three more events */
    CHECK_EQ_INT(fan_follow(f, 1, 31, 0, 10, FAN_RESET | FAN_READ), 0);
    CHECK_EQ_INT(n_fetches, 1);
    CHECK_EQ_INT(answer_fetch(f, &lg, 0, 100), 0); /* not caught up */
    CHECK_EQ_U64(fan_cursor(f, 1, 31), 3);
    fan_resume(f, 1); /* still full: no read */
    CHECK_EQ_INT(n_fetches, 1);
    room_left = SIZE_MAX; /* the client read everything */
    fan_resume(f, 1);
    CHECK_EQ_INT(n_fetches, 2);
    CHECK_EQ_U64(fetches[1].after, 3);
    CHECK_EQ_INT(answer_fetch(f, &lg, 1, 100), 1);
    uint64_t seqs[16];
    CHECK_EQ_INT(pushed_seqs(1, 31, seqs, 16), 10);
    for (int i = 0; i < 10; i++)
        CHECK_EQ_U64(seqs[i], (uint64_t)i + 1);
    CHECK_EQ_INT(n_overflowed, 0);
    fan_destroy(f);
    log_free(&lg);
}

static void paged_reads_continue(void)
{
    struct fan *f = new_fan();
    static struct log lg = {.conv = 11};
    for (int i = 0; i < 25; i++)
        log_append(&lg, CLOG_EV_MESSAGE, "bob", NULL, NULL);
    CHECK_EQ_INT(fan_conn_add(f, 1, "alice", 5), 0);
    /* sync from cursor 3: reads pages of 10 until caught up */
    CHECK_EQ_INT(fan_follow(f, 1, 11, 3, 0, FAN_RESET | FAN_READ), 0);
    int done = 0;
    for (size_t i = 0; i < 10 && !done; i++) {
        CHECK_EQ_INT(n_fetches, i + 1);
        done = answer_fetch(f, &lg, i, 10);
    }
    CHECK(done);
    CHECK_EQ_INT(n_fetches, 3);
    uint64_t seqs[64];
    CHECK_EQ_INT(pushed_seqs(1, 11, seqs, 64), 22);
    for (int i = 0; i < 22; i++)
        CHECK_EQ_U64(seqs[i], (uint64_t)i + 4);
    /* a sync with the current cursor reads once and is done with nothing pushed */
    size_t before = n_pushes;
    CHECK_EQ_INT(fan_follow(f, 1, 11, 25, 0, FAN_RESET | FAN_READ), 0);
    CHECK_EQ_INT(n_fetches, 4);
    CHECK_EQ_INT(answer_fetch(f, &lg, 3, 10), 1);
    CHECK_EQ_INT(n_pushes, before);
    fan_destroy(f);
    log_free(&lg);
}

static void membership_events_drive_follows(void)
{
    struct fan *f = new_fan();
    static struct log lg = {.conv = 21};
    CHECK_EQ_INT(fan_conn_add(f, 1, "alice", 5), 0);
    CHECK_EQ_INT(fan_conn_add(f, 2, "alice", 5), 0); /* a second device */
    CHECK_EQ_INT(fan_conn_add(f, 3, "carol", 5), 0);
    /* CREATED naming alice: both of her connections follow from seq 1 */
    struct ch_wbuf members;
    ch_wbuf_init(&members);
    size_t at = clog_members_begin(&members);
    clog_members_put(&members, ch_slice_str("bob"), CLOG_ROLE_OWNER);
    clog_members_put(&members, ch_slice_str("alice"), CLOG_ROLE_MEMBER);
    clog_members_end(&members, at, 2);
    struct clog_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = CLOG_EV_CREATED;
    ev.kind = CLOG_GROUP;
    ev.conv = 21;
    ev.seq = ++lg.last;
    ev.actor = ch_slice_str("bob");
    ev.members = (struct ch_slice){.ptr = members.data, .len = members.len};
    ch_wbuf_init(&lg.rec[1]);
    clog_event_encode(&lg.rec[1], &ev);
    fan_event(f, &ev);
    CHECK(fan_follows(f, 1, 21) && fan_follows(f, 2, 21));
    CHECK(!fan_follows(f, 3, 21));
    log_append(&lg, CLOG_EV_MESSAGE, "bob", NULL, &ev);
    fan_event(f, &ev);
    /* carol is added: her connection starts at the MEMBER_ADDED event */
    log_append(&lg, CLOG_EV_MEMBER_ADDED, "bob", "carol", &ev);
    fan_event(f, &ev);
    CHECK(fan_follows(f, 3, 21));
    log_append(&lg, CLOG_EV_MESSAGE, "bob", NULL, &ev);
    fan_event(f, &ev);
    uint64_t seqs[16];
    CHECK_EQ_INT(pushed_seqs(1, 21, seqs, 16), 4);
    CHECK_EQ_INT(pushed_seqs(2, 21, seqs, 16), 4);
    CHECK_EQ_INT(pushed_seqs(3, 21, seqs, 16), 2);
    CHECK_EQ_U64(seqs[0], 3);
    CHECK_EQ_U64(seqs[1], 4);
    /* alice is removed: she sees her removal, then nothing more */
    log_append(&lg, CLOG_EV_MEMBER_REMOVED, "bob", "alice", &ev);
    fan_event(f, &ev);
    CHECK(!fan_follows(f, 1, 21) && !fan_follows(f, 2, 21));
    log_append(&lg, CLOG_EV_MESSAGE, "bob", NULL, &ev);
    fan_event(f, &ev);
    CHECK_EQ_INT(pushed_seqs(1, 21, seqs, 16), 5);
    CHECK_EQ_U64(seqs[4], 5);
    CHECK_EQ_INT(pushed_seqs(3, 21, seqs, 16), 4);
    /* carol leaves: likewise */
    log_append(&lg, CLOG_EV_MEMBER_LEFT, "carol", NULL, &ev);
    fan_event(f, &ev);
    CHECK(!fan_follows(f, 3, 21));
    struct fan_stats st;
    fan_stats(f, &st);
    CHECK_EQ_U64(st.follows, 0);
    CHECK_EQ_U64(st.convs, 0);
    ch_wbuf_free(&members);
    fan_destroy(f);
    log_free(&lg);
}

static void one_encoding_per_event(void)
{
    struct fan *f = new_fan();
    static struct log lg = {.conv = 31};
    char name[32];
    for (uint64_t c = 1; c <= 1000; c++) {
        snprintf(name, sizeof name, "u%" PRIu64, c);
        CHECK_EQ_INT(fan_conn_add(f, c, name, strlen(name)), 0);
        CHECK_EQ_INT(fan_follow(f, c, 31, 0, 0, 0), 0);
    }
    struct clog_event ev;
    log_append(&lg, CLOG_EV_MESSAGE, "u1", NULL, &ev);
    fan_event(f, &ev);
    CHECK_EQ_INT(n_pushes, 1000);
    for (size_t i = 1; i < n_pushes; i++)
        CHECK(pushes[i].msg == pushes[0].msg); /* the same shared message */
    struct fan_stats st;
    fan_stats(f, &st);
    CHECK_EQ_U64(st.encodes, 1);
    /* removing connections is cheap and leaves no follows behind */
    for (uint64_t c = 1; c <= 1000; c++)
        fan_conn_remove(f, c);
    fan_stats(f, &st);
    CHECK_EQ_U64(st.follows, 0);
    CHECK_EQ_U64(st.conns, 0);
    CHECK_EQ_U64(st.users, 0);
    fan_destroy(f);
    log_free(&lg);
}

static void full_queue_drops_only_that_connection(void)
{
    struct fan *f = new_fan();
    static struct log lg = {.conv = 41};
    for (uint64_t c = 1; c <= 3; c++) {
        char name[8];
        snprintf(name, sizeof name, "u%" PRIu64, c);
        CHECK_EQ_INT(fan_conn_add(f, c, name, strlen(name)), 0);
        CHECK_EQ_INT(fan_follow(f, c, 41, 0, 0, 0), 0);
    }
    full_conn = 2;
    struct clog_event ev;
    log_append(&lg, CLOG_EV_MESSAGE, "u1", NULL, &ev);
    fan_event(f, &ev);
    CHECK_EQ_INT(n_overflowed, 1);
    CHECK_EQ_U64(overflowed[0], 2);
    CHECK(!fan_follows(f, 2, 41));
    CHECK(fan_follows(f, 1, 41) && fan_follows(f, 3, 41));
    log_append(&lg, CLOG_EV_MESSAGE, "u1", NULL, &ev);
    fan_event(f, &ev);
    uint64_t seqs[4];
    CHECK_EQ_INT(pushed_seqs(1, 41, seqs, 4), 2);
    CHECK_EQ_INT(pushed_seqs(3, 41, seqs, 4), 2);
    fan_destroy(f);
    log_free(&lg);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/*
 * Property: whatever the stream does (drops, duplicates, replays of old entries,
 * late reads, short pages), each connection sees 1..N exactly once, in order.
 */
static void random_streams_give_exact_prefixes(void)
{
    for (uint64_t seed = 1; seed <= 30; seed++) {
        uint64_t rng = seed * 0x9e3779b97f4a7c15ull;
        struct fan *f = new_fan();
        static struct log lg;
        lg.conv = 100 + seed;
        const uint64_t n_conns = 5;
        for (uint64_t c = 1; c <= n_conns; c++) {
            char name[8];
            snprintf(name, sizeof name, "u%" PRIu64, c);
            CHECK_EQ_INT(fan_conn_add(f, c, name, strlen(name)), 0);
            CHECK_EQ_INT(fan_follow(f, c, lg.conv, 0, 0, 0), 0);
        }
        size_t answered = 0;
        for (int step = 0; step < 1500; step++) {
            uint64_t r = rng_next(&rng) % 100;
            struct clog_event ev;
            if (r < 60 && lg.last < 1000) {
                log_append(&lg, CLOG_EV_MESSAGE, "u1", NULL, &ev);
                if (rng_next(&rng) % 5 != 0) /* 20% of entries lost */
                    fan_event(f, &ev);
            } else if (r < 70 && lg.last > 0) {
                log_event(&lg, 1 + rng_next(&rng) % lg.last, &ev); /* a replay */
                fan_event(f, &ev);
            } else if (answered < n_fetches) {
                answer_fetch(f, &lg, answered++, 1 + (uint32_t)(rng_next(&rng) % 7));
            } else if (r < 75) {
                fan_refetch(f, NULL, NULL);
            }
        }
        /* drain: answer every outstanding read, sweep, until quiet */
        for (int round = 0; round < 1000 && answered < n_fetches; round++)
            while (answered < n_fetches)
                answer_fetch(f, &lg, answered++, 50);
        for (uint64_t c = 1; c <= n_conns; c++) {
            /* a connection that never saw the last entry (lost) reads on refetch */
            if (fan_cursor(f, c, lg.conv) < lg.last)
                fan_follow(f, c, lg.conv, 0, lg.last, 0);
        }
        while (answered < n_fetches)
            answer_fetch(f, &lg, answered++, 50);
        static uint64_t seqs[2048];
        for (uint64_t c = 1; c <= n_conns; c++) {
            size_t n = pushed_seqs(c, lg.conv, seqs, 2048);
            CHECK_EQ_U64(n, lg.last);
            for (size_t i = 0; i < n; i++)
                CHECK_EQ_U64(seqs[i], i + 1);
        }
        fan_destroy(f);
        log_free(&lg);
    }
}

static void buckets(void)
{
    struct sess_bucket b;
    uint64_t retry = 0;
    sess_bucket_init(&b, 5, 10, 1000);
    for (int i = 0; i < 10; i++)
        CHECK_EQ_INT(sess_bucket_take(&b, 1000, &retry), 0);
    CHECK_EQ_INT(sess_bucket_take(&b, 1000, &retry), CH_ERATELIMITED);
    CHECK_EQ_U64(retry, 200); /* one token per 200 ms at 5/s */
    CHECK_EQ_INT(sess_bucket_take(&b, 1199, &retry), CH_ERATELIMITED);
    CHECK_EQ_U64(retry, 1);
    CHECK_EQ_INT(sess_bucket_take(&b, 1200, &retry), 0);
    /* a long pause refills to the burst, not beyond */
    int ok = 0;
    while (sess_bucket_take(&b, 100000, &retry) == 0)
        ok++;
    CHECK_EQ_INT(ok, 10);
    /* time going backwards (another clock) never adds tokens */
    CHECK_EQ_INT(sess_bucket_take(&b, 50, &retry), CH_ERATELIMITED);
}

/* Batched frames: as many whole messages as fit, each followed by a newline, in
 * order; a message larger than the batch is left for a frame of its own. */
static void queue_take_batch(void)
{
    struct sess_queue q;
    sess_queue_init(&q, 1u << 20);
    struct fan_msg *a = fan_msg_new(16, "{\"a\":1}", 7);
    struct fan_msg *b = fan_msg_new(16, "{\"b\":22}", 8);
    struct fan_msg *big = fan_msg_new(16, "0123456789012345678901234567890123456789", 40);
    CHECK(a != NULL && b != NULL && big != NULL);
    uint8_t buf[32];
    size_t len = 99;
    CHECK_EQ_U64(sess_queue_take_batch(&q, buf, sizeof buf, &len), 0); /* empty */
    CHECK_EQ_U64(len, 0);
    CHECK_EQ_INT(sess_queue_push(&q, a), 0);
    CHECK_EQ_INT(sess_queue_push(&q, b), 0);
    CHECK_EQ_INT(sess_queue_push(&q, a), 0);
    CHECK_EQ_INT(sess_queue_push(&q, big), 0);
    CHECK_EQ_INT(sess_queue_push(&q, b), 0);
    /* a, b, a fit (8 + 9 + 8 = 25 <= 32); big does not */
    CHECK_EQ_U64(sess_queue_take_batch(&q, buf, sizeof buf, &len), 3);
    CHECK_EQ_U64(len, 25);
    CHECK(memcmp(buf, "{\"a\":1}\n{\"b\":22}\n{\"a\":1}\n", 25) == 0);
    CHECK_EQ_U64(q.bytes, 48);
    CHECK(sess_queue_peek(&q) == big);
    /* the oldest alone is too large: nothing is taken */
    CHECK_EQ_U64(sess_queue_take_batch(&q, buf, sizeof buf, &len), 0);
    CHECK(sess_queue_peek(&q) == big);
    sess_queue_pop(&q);
    /* exactly full: len + newline == cap */
    CHECK_EQ_U64(sess_queue_take_batch(&q, buf, 9, &len), 1);
    CHECK_EQ_U64(len, 9);
    CHECK(sess_queue_peek(&q) == NULL);
    CHECK_EQ_U64(q.bytes, 0);
    CHECK_EQ_INT(a->refs, 1); /* the queue dropped its references */
    CHECK_EQ_INT(b->refs, 1);
    fan_msg_unref(a);
    fan_msg_unref(b);
    fan_msg_unref(big);
    sess_queue_free(&q);
}

static void queue_bound(void)
{
    struct sess_queue q;
    sess_queue_init(&q, 100);
    struct fan_msg *m = fan_msg_new(16, "0123456789012345678901234567890123456789", 40);
    CHECK(m != NULL);
    CHECK_EQ_INT(sess_queue_push(&q, m), 0);
    CHECK_EQ_INT(sess_queue_push(&q, m), 0);
    CHECK_EQ_INT(sess_queue_push(&q, m), CH_ELIMIT); /* 120 > 100 */
    CHECK_EQ_INT(m->refs, 3);
    CHECK_EQ_INT(sess_queue_push_force(&q, m), 0); /* the goodbye path */
    CHECK_EQ_U64(q.bytes, 120);
    CHECK(sess_queue_peek(&q) == m);
    sess_queue_pop(&q);
    CHECK_EQ_U64(q.bytes, 80);
    /* wrap-around and growth keep order */
    struct fan_msg *ms[40];
    struct sess_queue q2;
    sess_queue_init(&q2, 1u << 20);
    for (int i = 0; i < 40; i++) {
        char c = (char)('a' + i % 26);
        ms[i] = fan_msg_new(0, &c, 1);
        CHECK_EQ_INT(sess_queue_push(&q2, ms[i]), 0);
        if (i % 3 == 0)
            sess_queue_pop(&q2);
    }
    int first = 14; /* 14 pops happened (i = 0, 3, ..., 39) */
    for (int i = first; i < 40; i++) {
        CHECK(sess_queue_peek(&q2) == ms[i]);
        sess_queue_pop(&q2);
    }
    CHECK(sess_queue_peek(&q2) == NULL);
    for (int i = 0; i < 40; i++)
        fan_msg_unref(ms[i]);
    sess_queue_free(&q2);
    sess_queue_free(&q);
    CHECK_EQ_INT(m->refs, 1);
    fan_msg_unref(m);
}

TEST_MAIN(TEST_CASE(in_order_and_duplicates), TEST_CASE(gap_is_filled_by_a_read),
          TEST_CASE(cursor_past_the_end_is_clamped), TEST_CASE(catch_up_is_paced_by_room),
          TEST_CASE(session_start_settles_joins_by_index),
          TEST_CASE(paged_reads_continue), TEST_CASE(membership_events_drive_follows),
          TEST_CASE(one_encoding_per_event), TEST_CASE(full_queue_drops_only_that_connection),
          TEST_CASE(random_streams_give_exact_prefixes), TEST_CASE(buckets),
          TEST_CASE(queue_bound), TEST_CASE(queue_take_batch))
