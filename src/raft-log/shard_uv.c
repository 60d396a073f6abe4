/*
 * One shard replica: the raft_uv shell around the pure conversation log.
 *
 * Everything here runs on the node's single libuv loop.  The interesting parts:
 *
 *  - Batching.  shard_submit appends the encoded command to `pending` and wakes
 *    the loop (an idle handle makes the next poll non-blocking); the check
 *    handle then turns everything pending into one Raft entry.  Entries are
 *    pipelined: raft_apply does not wait for the previous entry to commit.
 *
 *  - Answering.  Each proposed entry carries (origin node, batch id).  The FSM
 *    apply of a committed entry whose origin is this node looks the batch up in
 *    the in-flight list and answers its waiters with the per-command results the
 *    state machine produced.  So an ack always means "committed and applied".
 *    batch ids embed a per-boot id so entries proposed by an earlier run of this
 *    node (replayed from the log after a restart) never match a new batch.
 *
 *  - The committed stream.  Every applied entry's events are kept in a ring of
 *    recent entries for subscribers; `floor` is the lowest Raft index from which
 *    the ring is complete (it moves on eviction and on snapshot install).
 */
#include "shard_uv.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../common/bugs.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../proto/proto.h"
#include "raft_conf.h"
#include "raft_err.h"
#include "raft_tcp.h"

#define SHARD_MAX_ENTRY_BYTES (4u << 20) /* flush a batch early beyond this */
#define SHARD_COMPRESS_MIN 4096          /* lz4 entries at least this large */

struct waiter {
    shard_done_cb cb;
    void *data;
    uint32_t slot;
};

struct batch {
    struct raft_apply req;
    struct shard *shard;
    uint64_t batch_id;
    struct waiter *waiters;
    uint32_t n_waiters;
    int answered;
    uint64_t proposed_ns; /* uv_hrtime() at raft_apply, for the apply latency */
    struct clog_result *early; /* CHORUS_BUGS ack-before-commit only: what it was acked with */
    struct batch *prev, *next;
};

struct reader {
    shard_read_cb cb;
    void *data;
};

struct read_batch {
    struct raft_barrier req;
    struct shard *shard;
    struct reader *readers;
    size_t n_readers;
};

/*
 * A leadership transfer.  Raft holds `req` from raft_transfer until transfer_done
 * runs (it always does: on success, after an election timeout, or when raft
 * closes), so the struct lives until then even when the caller was already
 * answered by the timeout; the timer is closed last and its close callback frees
 * the struct.
 */
struct transfer {
    struct raft_transfer req;
    uv_timer_t timer; /* the caller's deadline, then polls until a leader is known */
    struct shard *shard;
    uint32_t target; /* 0: Raft's choice */
    uint64_t deadline; /* uv_now() ms */
    shard_transfer_cb cb;
    void *data;
    int in_raft;  /* raft still holds req */
    int answered; /* cb ran */
};

struct ring_entry {
    uint64_t index;
    uint8_t *events;
    size_t len;
    uint32_t n_events;
};

struct shard {
    uv_loop_t *loop;
    uint32_t id;
    uint32_t node_id;
    char dir[PATH_MAX];
    char address[64];

    struct raft raft;
    struct raft_io io;
    struct ch_raft_tcp transport; /* raft_uv_tcp with TCP_NODELAY */
    struct raft_fsm fsm;
    int raft_initialized;

    struct clog *clog;
    struct clog_output out;
    int restore_err; /* last clog_restore error, for the log line */

    /* proposals not yet handed to raft */
    struct ch_wbuf pending;
    struct waiter *pending_waiters;
    uint32_t n_pending, cap_pending;
    struct reader *pending_readers;
    size_t n_readers, cap_readers;
    uv_check_t flush_check;
    uv_idle_t wake_idle;
    int wake_active;

    uint64_t boot_id;
    uint32_t next_batch;
    struct batch *inflight_head, *inflight_tail;
    uint32_t n_inflight;           /* batches proposed and not yet applied */
    uint32_t max_inflight_batches; /* group commit: more waits in `pending` */

    /* committed stream */
    struct ring_entry *ring;
    size_t ring_cap, ring_start, ring_count;
    uint64_t floor;
    int restored;
    struct shard_sub *subs;
    uint64_t snapshot_index;
    struct shard_stats stats; /* counters and histograms; Raft fields filled on read */

    struct transfer *transfer; /* the leadership transfer in progress, if any */

    /* an operator's snapshot request (shard_snapshot_now) */
    struct {
        shard_snapshot_cb cb;
        void *data;
        uint64_t deadline;   /* uv_now() ms */
        int barriers_left;   /* a leader commits a few entries to trigger it */
        int taken;           /* fsm_snapshot ran since the request */
        uint64_t index;
        uint32_t threshold;  /* the configured threshold, restored afterwards */
    } snap;

    /* leadership watch (for logs) */
    int last_state;
    uint32_t last_leader;
    uint64_t last_term;

    int closing;
    int handles_open;
    void (*close_cb)(void *data);
    void *close_data;
};

/* ---- helpers ---------------------------------------------------------------------- */

/* A tenth of the heartbeat, 2..10 ms (see the comment at the end of shard_open). */
static unsigned shard_probe_resend_ms(unsigned heartbeat_ms)
{
    unsigned ms = heartbeat_ms / 10;
    return ms < 2 ? (heartbeat_ms < 2 ? heartbeat_ms : 2) : ms > 10 ? 10 : ms;
}

uint32_t shard_leader_hint(struct shard *s)
{
    raft_id id = 0;
    const char *addr = NULL;
    if (!s->raft_initialized)
        return 0;
    raft_leader(&s->raft, &id, &addr);
    return (uint32_t)id;
}

const struct clog *shard_clog(const struct shard *s)
{
    return s->clog;
}

struct raft *shard_raft(struct shard *s)
{
    return &s->raft;
}

uint32_t shard_id(const struct shard *s)
{
    return s->id;
}

uint64_t shard_applied_index(struct shard *s)
{
    return raft_last_applied(&s->raft);
}

uint64_t shard_snapshot_index(const struct shard *s)
{
    return s->snapshot_index;
}

/* Apply latency buckets: 100 us .. 10 s (fsync + a round trip is ~1 ms here). */
static const uint64_t shard_latency_bounds_ns[] = {
    100000,    250000,    500000,     1000000,    2500000,    5000000,
    10000000,  25000000,  50000000,   100000000,  250000000,  500000000,
    1000000000, 2500000000, 5000000000, 10000000000,
};

void shard_stats(struct shard *s, struct shard_stats *out)
{
    *out = s->stats;
    if (!s->raft_initialized)
        return;
    out->state = (int)raft_state(&s->raft);
    out->term = raft_current_term(&s->raft);
    out->commit_index = raft_commit_index(&s->raft);
    out->applied_index = raft_last_applied(&s->raft);
    out->snapshot_index = s->snapshot_index;
}

static void answer_waiters(struct waiter *w, uint32_t n, int err, uint32_t hint)
{
    for (uint32_t i = 0; i < n; i++) {
        struct clog_result res;
        memset(&res, 0, sizeof res);
        res.err = (uint16_t)err;
        w[i].cb(w[i].data, w[i].slot, &res, hint);
    }
}

static void answer_readers(struct reader *r, size_t n, int err, uint32_t hint)
{
    for (size_t i = 0; i < n; i++)
        r[i].cb(r[i].data, err, hint);
}

/* ---- committed stream ring ---------------------------------------------------------- */

static void ring_clear(struct shard *s)
{
    for (size_t i = 0; i < s->ring_count; i++)
        free(s->ring[(s->ring_start + i) % s->ring_cap].events);
    s->ring_start = 0;
    s->ring_count = 0;
}

static void ring_sync_floor(struct shard *s)
{
    if (s->restored) {
        s->floor = raft_last_applied(&s->raft) + 1;
        s->restored = 0;
    }
}

static void ring_push(struct shard *s, uint64_t index, const uint8_t *events, size_t len,
                      uint32_t n_events)
{
    if (s->ring_cap == 0)
        return;
    if (s->ring_count == s->ring_cap) {
        struct ring_entry *old = &s->ring[s->ring_start];
        free(old->events);
        s->floor = old->index + 1;
        s->ring_start = (s->ring_start + 1) % s->ring_cap;
        s->ring_count--;
    }
    uint8_t *copy = NULL;
    if (len > 0) {
        copy = malloc(len);
        if (copy == NULL) {
            /* Cannot keep it: the stream restarts after this index. */
            ring_clear(s);
            s->floor = index + 1;
            return;
        }
        memcpy(copy, events, len);
    }
    struct ring_entry *e = &s->ring[(s->ring_start + s->ring_count) % s->ring_cap];
    e->index = index;
    e->events = copy;
    e->len = len;
    e->n_events = n_events;
    s->ring_count++;
}

static void reset_subscribers(struct shard *s, int err)
{
    struct shard_sub *sub = s->subs;
    s->subs = NULL;
    while (sub != NULL) {
        struct shard_sub *next = sub->next;
        sub->next = NULL;
        if (sub->on_reset)
            sub->on_reset(sub, s->id, err);
        sub = next;
    }
}

int shard_subscribe(struct shard *s, struct shard_sub *sub, uint64_t from_index,
                    uint64_t *next_index)
{
    if (s->closing)
        return CH_ESHUTDOWN;
    ring_sync_floor(s);
    uint64_t next = raft_last_applied(&s->raft) + 1;
    if (from_index == 0 || from_index >= next) {
        /* From now on (a from_index in the future starts at the next entry). */
        from_index = next;
    } else if (from_index < s->floor) {
        *next_index = s->floor;
        return CH_ETOOOLD;
    }
    *next_index = from_index;
    for (size_t i = 0; i < s->ring_count; i++) {
        struct ring_entry *e = &s->ring[(s->ring_start + i) % s->ring_cap];
        if (e->index >= from_index)
            sub->on_entry(sub, s->id, e->index, e->events, e->len, e->n_events);
    }
    sub->next = s->subs;
    s->subs = sub;
    return 0;
}

void shard_unsubscribe(struct shard *s, struct shard_sub *sub)
{
    for (struct shard_sub **p = &s->subs; *p != NULL; p = &(*p)->next) {
        if (*p == sub) {
            *p = sub->next;
            sub->next = NULL;
            return;
        }
    }
}

/* ---- FSM -------------------------------------------------------------------------- */

static struct batch *inflight_find(struct shard *s, uint64_t batch_id)
{
    for (struct batch *b = s->inflight_head; b != NULL; b = b->next)
        if (b->batch_id == batch_id)
            return b;
    return NULL;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct shard *s = fsm->data;
    *result = NULL;
    ring_sync_floor(s);
    uint64_t index = raft_last_applied(&s->raft) + 1;

    s->stats.entries_applied++;
    s->stats.bytes_applied += buf->len;
    int rv = clog_apply(s->clog, buf->base, buf->len, &s->out);
    if (rv == CH_ENOMEM) {
        CH_ERROR((int)s->id, "out of memory applying entry %" PRIu64 "; stopping", index);
        abort();
    }
    if (rv != 0) {
        /* Every replica skips the same undecodable entry the same way. */
        CH_WARN((int)s->id, "skipped undecodable entry %" PRIu64 ": %s", index,
                ch_strerror(rv));
    } else {
        struct clog_entry_header h;
        if (clog_entry_peek(buf->base, buf->len, &h) == 0 && h.origin == s->node_id) {
            struct batch *b = inflight_find(s, h.batch_id);
            if (b != NULL && !b->answered) {
                b->answered = 1;
                for (uint32_t i = 0; i < b->n_waiters; i++) {
                    struct waiter *w = &b->waiters[i];
                    if (i < s->out.n_results) {
                        w->cb(w->data, w->slot, &s->out.results[i], 0);
                    } else {
                        struct clog_result res;
                        memset(&res, 0, sizeof res);
                        res.err = CH_EINTERNAL;
                        w->cb(w->data, w->slot, &res, 0);
                    }
                }
            }
        }
    }

    const uint8_t *events = rv == 0 ? s->out.events.data : NULL;
    size_t len = rv == 0 ? s->out.events.len : 0;
    uint32_t n_events = rv == 0 ? (uint32_t)s->out.n_events : 0;
    ring_push(s, index, events, len, n_events);
    for (struct shard_sub *sub = s->subs; sub != NULL;) {
        struct shard_sub *next = sub->next; /* on_entry may unsubscribe itself */
        sub->on_entry(sub, s->id, index, events, len, n_events);
        sub = next;
    }
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct shard *s = fsm->data;
    uint8_t *data;
    size_t len;
    int rv = clog_snapshot(s->clog, raft_malloc, &data, &len);
    if (rv != 0)
        return RAFT_NOMEM;
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL) {
        raft_free(data);
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = data;
    (*bufs)[0].len = len;
    *n_bufs = 1;
    s->snapshot_index = raft_last_applied(&s->raft);
    s->stats.snapshots_taken++;
    if (s->snap.cb != NULL && !s->snap.taken) {
        /* ours: back to the configured threshold before the next apply */
        s->snap.taken = 1;
        s->snap.index = s->snapshot_index;
        raft_set_snapshot_threshold(&s->raft, s->snap.threshold);
    }
    CH_INFO((int)s->id, "snapshot taken at index %" PRIu64 " (%zu bytes)",
            s->snapshot_index, len);
    return 0;
}

/* Does the replica's directory hold raft_uv's snapshot-TERM-INDEX-TIME(.meta)
 * files of this index? */
static int snapshot_on_disk(const struct shard *s, uint64_t index)
{
    DIR *d = opendir(s->dir);
    if (d == NULL)
        return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        unsigned long long term, idx, ts;
        char tail[8] = "";
        if (sscanf(e->d_name, "snapshot-%llu-%llu-%llu%7s", &term, &idx, &ts, tail) >= 3 &&
            idx == index && tail[0] == 0)
            found = 1;
    }
    closedir(d);
    return found;
}

static void snap_answer(struct shard *s, int status)
{
    shard_snapshot_cb cb = s->snap.cb;
    if (cb == NULL)
        return;
    s->snap.cb = NULL;
    if (!s->closing)
        raft_set_snapshot_threshold(&s->raft, s->snap.threshold);
    cb(s->snap.data, status, s->snap.index);
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                                 unsigned *n_bufs)
{
    struct shard *s = fsm->data;
    if (s->snap.cb != NULL && s->snap.taken) {
        /* raft calls finalize whether or not the write worked: look for the file */
        if (snapshot_on_disk(s, s->snap.index)) {
            CH_INFO((int)s->id, "snapshot at index %" PRIu64 " written (operator request)",
                    s->snap.index);
            snap_answer(s, 0);
        } else {
            CH_ERROR((int)s->id, "snapshot at index %" PRIu64 " was not written (operator "
                                 "request): is the disk full?", s->snap.index);
            snap_answer(s, CH_EIO);
        }
    }
    for (unsigned i = 0; i < *n_bufs; i++)
        raft_free((*bufs)[i].base);
    raft_free(*bufs);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct shard *s = fsm->data;
    int rv = clog_restore(s->clog, buf->base, buf->len);
    if (rv != 0) {
        /* raft keeps ownership of buf on failure; the node refuses to go on. */
        s->restore_err = rv;
        CH_ERROR((int)s->id, "snapshot restore failed: %s (%s)", ch_strerror(rv),
                 ch_errname(rv));
        return rv == CH_ENOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
    }
    raft_free(buf->base);
    ring_clear(s);
    s->restored = 1;
    s->snapshot_index = 0;
    s->stats.snapshots_installed++;
    reset_subscribers(s, CH_ETOOOLD);
    struct clog_stats st;
    clog_stats(s->clog, &st);
    CH_INFO((int)s->id, "snapshot restored: %" PRIu64 " conversations, %" PRIu64 " events",
            st.conversations, st.events);
    return 0;
}

/* ---- proposals -------------------------------------------------------------------- */

static void wake(struct shard *s);

static void inflight_unlink(struct shard *s, struct batch *b)
{
    s->n_inflight--;
    if (b->prev)
        b->prev->next = b->next;
    else
        s->inflight_head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        s->inflight_tail = b->prev;
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct batch *b = req->data;
    struct shard *s = b->shard;
    (void)result;
    if (status == 0)
        ch_hist_observe(&s->stats.apply_latency_ns, uv_hrtime() - b->proposed_ns);
    if (!b->answered) {
        int err = status == 0 ? CH_EINTERNAL : ch_from_raft(status);
        if (s->closing)
            err = CH_ESHUTDOWN;
        answer_waiters(b->waiters, b->n_waiters, err,
                       err == CH_ENOTLEADER ? shard_leader_hint(s) : 0);
    }
    inflight_unlink(s, b);
    if (ch_bug(CH_BUG_ACK_BEFORE_COMMIT))
        free(b->early);
    free(b->waiters);
    free(b);
    if (s->n_pending > 0)
        wake(s); /* a slot is free: what waited goes out as one entry this iteration */
}

/* ---- deliberate bug: ack-before-commit (CHORUS_BUGS) ---------------------------------
 *
 * DELIBERATE BUG for the Jepsen suite (CHORUS_BUG=ack-before-commit).  The mistake:
 * "the leader is the only writer, so it knows the outcome as soon as it proposes".
 * A batch's waiters are answered once raft_apply has accepted it -- before any
 * replica has it on disk, let alone a majority -- with the results the leader
 * predicts: err 0, the conversation's next seq as the leader sees it (applied state
 * plus what it has already promised), the batch's timestamp.  In a healthy cluster
 * the prediction is usually right; when the leader loses its majority before the
 * entry commits, the next leader never has the entry and the acknowledged write is
 * gone (or another write takes its seq).  The real results are discarded.
 */

static int bug_makes_event(uint8_t op)
{
    return op >= CLOG_OP_CREATE && op <= CLOG_OP_REACT;
}

/* The highest seq of conv applied here or promised by a batch still in flight, or
 * among the first n_cur results of the batch being built. */
static uint64_t bug_last_promised(const struct shard *s, uint64_t conv,
                                  const struct clog_result *cur, uint32_t n_cur)
{
    struct clog_conv_info info;
    uint64_t last = clog_conv_info(s->clog, conv, &info) == 0 ? info.last_seq : 0;
    for (const struct batch *b = s->inflight_head; b != NULL; b = b->next)
        for (uint32_t i = 0; b->early != NULL && i < b->n_waiters; i++)
            if (b->early[i].conv == conv && b->early[i].seq > last)
                last = b->early[i].seq;
    for (uint32_t i = 0; i < n_cur; i++)
        if (cur[i].conv == conv && cur[i].seq > last)
            last = cur[i].seq;
    return last;
}

/* The predicted results of the n commands in `pending` (call before it is reset);
 * NULL if they cannot be worked out, and the batch is then answered normally. */
static struct clog_result *bug_predict(const struct shard *s, uint32_t n, uint64_t ts_ms)
{
    struct clog_result *res = calloc(n, sizeof *res);
    if (res == NULL)
        return NULL;
    struct ch_rbuf r;
    ch_rbuf_init(&r, s->pending.data, s->pending.len);
    for (uint32_t i = 0; i < n; i++) {
        struct ch_slice one = ch_get_bytes32(&r, s->pending.len);
        struct ch_rbuf cr;
        struct clog_cmd cmd;
        ch_rbuf_init(&cr, one.ptr, one.len);
        if (r.err || clog_cmd_decode(&cr, &cmd) != 0) {
            free(res);
            return NULL;
        }
        res[i].conv = cmd.conv;
        res[i].ts = ts_ms;
        if (cmd.op == CLOG_OP_CREATE)
            res[i].seq = 1;
        else if (bug_makes_event(cmd.op))
            res[i].seq = bug_last_promised(s, cmd.conv, res, i) + 1;
    }
    return res;
}

/* Answers every waiter of a just-proposed batch with its predicted result.  (When a
 * batch over SHARD_MAX_ENTRY_BYTES is flushed from shard_submit this runs inline,
 * against shard_done_cb's promise; the store's handle_submit holds its own count
 * until its loop ends, so it copes.) */
static void bug_ack_proposed(struct batch *b)
{
    b->answered = 1; /* the FSM apply and apply_cb stay silent */
    for (uint32_t i = 0; i < b->n_waiters; i++) {
        struct waiter *w = &b->waiters[i];
        w->cb(w->data, w->slot, &b->early[i], 0);
    }
}

/* Proposes everything pending as one entry. */
static void flush_writes(struct shard *s)
{
    if (s->n_pending == 0)
        return;
    struct waiter *waiters = s->pending_waiters;
    uint32_t n = s->n_pending;
    s->pending_waiters = NULL;
    s->n_pending = 0;
    s->cap_pending = 0;

    struct batch *b = calloc(1, sizeof *b);
    uint8_t *entry = NULL;
    size_t entry_len = 0;
    int err = b == NULL ? CH_ENOMEM : 0;
    if (err == 0) {
        struct clog_entry_header h = {
            .origin = s->node_id,
            .batch_id = s->boot_id << 32 | ++s->next_batch,
            .n_cmds = n,
        };
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        h.ts_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        err = clog_entry_encode(&h, s->pending.data, s->pending.len, SHARD_COMPRESS_MIN,
                                raft_malloc, &entry, &entry_len);
        b->batch_id = h.batch_id;
        if (err == 0 && ch_bug(CH_BUG_ACK_BEFORE_COMMIT))
            b->early = bug_predict(s, n, h.ts_ms); /* while `pending` holds the batch */
    }
    ch_wbuf_reset(&s->pending);
    if (err == 0) {
        b->shard = s;
        b->waiters = waiters;
        b->n_waiters = n;
        b->req.data = b;
        struct raft_buffer rb = {.base = entry, .len = entry_len};
        b->proposed_ns = uv_hrtime();
        int rv = raft_apply(&s->raft, &b->req, &rb, 1, apply_cb);
        if (rv == 0) {
            s->stats.batches_proposed++;
            ch_hist_observe(&s->stats.batch_commands, n);
            b->prev = s->inflight_tail;
            if (s->inflight_tail)
                s->inflight_tail->next = b;
            else
                s->inflight_head = b;
            s->inflight_tail = b;
            s->n_inflight++;
            if (ch_bug(CH_BUG_ACK_BEFORE_COMMIT) && b->early != NULL) {
                /* DELIBERATE BUG (see above): acked before it is committed. */
                bug_ack_proposed(b);
            }
            return;
        }
        /* raft 0.22.1 still owns nothing when it refuses up front (not leader, no
         * capacity), but frees the buffer itself when a later stage fails. */
        if (rv == RAFT_NOTLEADER || rv == RAFT_NOSPACE)
            raft_free(entry);
        err = ch_from_raft(rv);
        if (rv != RAFT_NOTLEADER)
            CH_WARN((int)s->id, "raft_apply failed: %s (%s)", raft_strerror(rv),
                    raft_errmsg(&s->raft));
    }
    if (ch_bug(CH_BUG_ACK_BEFORE_COMMIT) && b != NULL)
        free(b->early);
    free(b);
    answer_waiters(waiters, n, err, err == CH_ENOTLEADER ? shard_leader_hint(s) : 0);
    free(waiters);
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct read_batch *rb = req->data;
    struct shard *s = rb->shard;
    int err = ch_from_raft(status);
    answer_readers(rb->readers, rb->n_readers, err,
                   err == CH_ENOTLEADER ? shard_leader_hint(s) : 0);
    free(rb->readers);
    free(rb);
}

static void flush_reads(struct shard *s)
{
    if (s->n_readers == 0)
        return;
    struct read_batch *rb = malloc(sizeof *rb);
    struct reader *readers = s->pending_readers;
    size_t n = s->n_readers;
    s->pending_readers = NULL;
    s->n_readers = 0;
    s->cap_readers = 0;
    int err = CH_ENOMEM;
    if (rb != NULL) {
        rb->shard = s;
        rb->readers = readers;
        rb->n_readers = n;
        rb->req.data = rb;
        int rv = raft_barrier(&s->raft, &rb->req, barrier_cb);
        if (rv == 0)
            return;
        err = ch_from_raft(rv);
        free(rb);
    }
    answer_readers(readers, n, err, err == CH_ENOTLEADER ? shard_leader_hint(s) : 0);
    free(readers);
}

static void flush_check_cb(uv_check_t *h)
{
    struct shard *s = h->data;
    if (s->wake_active) {
        uv_idle_stop(&s->wake_idle);
        s->wake_active = 0;
    }
    /* Group commit: while max_inflight_batches entries of this shard are on their
     * way to a majority, new commands gather in `pending` and leave as one entry
     * when one of them is applied (apply_cb wakes the loop).  Under load entries
     * grow (fewer entries, appends and fsyncs per message); an idle shard's first
     * command still leaves in the iteration it arrived. */
    if (s->n_inflight < s->max_inflight_batches)
        flush_writes(s);
    flush_reads(s);
}

static void wake_idle_cb(uv_idle_t *h)
{
    (void)h; /* only there to make the next poll non-blocking */
}

static void wake(struct shard *s)
{
    if (!s->wake_active) {
        uv_idle_start(&s->wake_idle, wake_idle_cb);
        s->wake_active = 1;
    }
}

static int check_leader(struct shard *s, uint32_t *leader_hint)
{
    if (s->closing)
        return CH_ESHUTDOWN;
    if (raft_state(&s->raft) != RAFT_LEADER) {
        *leader_hint = shard_leader_hint(s);
        return CH_ENOTLEADER;
    }
    return 0;
}

int shard_submit(struct shard *s, const struct clog_cmd *cmd, shard_done_cb cb, void *data,
                 uint32_t slot, uint32_t *leader_hint)
{
    *leader_hint = 0;
    int err = check_leader(s, leader_hint);
    if (err != 0)
        return err;
    if (s->n_pending == s->cap_pending) {
        uint32_t cap = s->cap_pending ? s->cap_pending * 2 : 64;
        struct waiter *w = realloc(s->pending_waiters, cap * sizeof *w);
        if (w == NULL)
            return CH_ENOMEM;
        s->pending_waiters = w;
        s->cap_pending = cap;
    }
    size_t before = s->pending.len;
    clog_batch_add(&s->pending, cmd);
    if (ch_wbuf_error(&s->pending)) {
        s->pending.len = before;
        s->pending.oom = 0;
        return CH_ENOMEM;
    }
    s->pending_waiters[s->n_pending++] = (struct waiter){cb, data, slot};
    if (s->pending.len >= SHARD_MAX_ENTRY_BYTES)
        flush_writes(s);
    else
        wake(s);
    return 0;
}

int shard_read(struct shard *s, shard_read_cb cb, void *data, uint32_t *leader_hint)
{
    *leader_hint = 0;
    int err = check_leader(s, leader_hint);
    if (err != 0)
        return err;
    if (s->n_readers == s->cap_readers) {
        size_t cap = s->cap_readers ? s->cap_readers * 2 : 16;
        struct reader *r = realloc(s->pending_readers, cap * sizeof *r);
        if (r == NULL)
            return CH_ENOMEM;
        s->pending_readers = r;
        s->cap_readers = cap;
    }
    s->pending_readers[s->n_readers++] = (struct reader){cb, data};
    wake(s);
    return 0;
}

/* ---- leadership transfer ------------------------------------------------------------- */

#define SHARD_TRANSFER_POLL_MS 20

static void transfer_answer(struct transfer *t, int status, uint32_t leader)
{
    if (t->answered)
        return;
    t->answered = 1;
    t->cb(t->data, status, leader);
}

static void transfer_free(uv_handle_t *h)
{
    free(h->data);
}

/* The transfer is over for the shard: a new one may start. */
static void transfer_end(struct transfer *t)
{
    if (t->shard->transfer == t)
        t->shard->transfer = NULL;
    uv_close((uv_handle_t *)&t->timer, transfer_free);
}

/*
 * Answers from what Raft sees now; 0 while undecided (this replica stepped down
 * but does not know the new leader yet, e.g. the election is still running).
 */
static int transfer_decide(struct transfer *t)
{
    struct shard *s = t->shard;
    uint32_t leader = shard_leader_hint(s);
    int leading = raft_state(&s->raft) == RAFT_LEADER;
    if (t->target == s->node_id ? leading : leader != 0 && leader != s->node_id && !leading) {
        transfer_answer(t, 0, leader);
        return 1;
    }
    if (leading || leader == s->node_id) {
        transfer_answer(t, CH_EUNAVAILABLE, s->node_id); /* raft gave up */
        return 1;
    }
    if (t->target == s->node_id && leader != 0) {
        transfer_answer(t, CH_EUNAVAILABLE, leader); /* lost it meanwhile */
        return 1;
    }
    return 0;
}

static void transfer_timer_cb(uv_timer_t *h)
{
    struct transfer *t = h->data;
    if (t->in_raft) {
        /* The guard: raft has not called back in time.  Answer now; req stays
         * with raft and transfer_done finishes the job when it runs. */
        CH_WARN((int)t->shard->id, "leadership transfer to %u: no outcome from raft in time",
                t->target);
        transfer_answer(t, CH_EUNAVAILABLE, shard_leader_hint(t->shard));
        uv_timer_stop(h);
        return;
    }
    if (!t->answered && !transfer_decide(t) && uv_now(h->loop) < t->deadline)
        return; /* poll again */
    transfer_answer(t, CH_EUNAVAILABLE, 0); /* no-op once answered */
    uv_timer_stop(h);
    transfer_end(t);
}

/* raft's callback: the transfer succeeded, or raft gave up (an election timeout). */
static void transfer_done(struct raft_transfer *req)
{
    struct transfer *t = req->data;
    struct shard *s = t->shard;
    t->in_raft = 0;
    if (s->closing || t->answered || transfer_decide(t)) {
        uv_timer_stop(&t->timer);
        transfer_end(t);
        return;
    }
    /* Stepped down, new leader not known yet: poll until it is or the deadline. */
    uv_timer_start(&t->timer, transfer_timer_cb, SHARD_TRANSFER_POLL_MS,
                   SHARD_TRANSFER_POLL_MS);
}

int shard_transfer(struct shard *s, uint32_t to_node, unsigned timeout_ms,
                   shard_transfer_cb cb, void *data, uint32_t *leader_hint)
{
    *leader_hint = 0;
    int err = check_leader(s, leader_hint);
    if (err != 0)
        return err;
    if (to_node != 0) {
        const struct raft_configuration *conf = &s->raft.configuration;
        unsigned i = 0;
        while (i < conf->n && conf->servers[i].id != to_node)
            i++;
        if (i == conf->n || conf->servers[i].role != RAFT_VOTER)
            return CH_EINVAL;
    }
    if (s->transfer != NULL || raft_transferee(&s->raft) != 0)
        return CH_EUNAVAILABLE;
    struct transfer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return CH_ENOMEM;
    t->shard = s;
    t->target = to_node;
    t->cb = cb;
    t->data = data;
    t->req.data = t;
    t->deadline = uv_now(s->loop) + timeout_ms;
    uv_timer_init(s->loop, &t->timer);
    t->timer.data = t;
    if (to_node == s->node_id) {
        /* Already there: answer from the loop, as promised, not inline. */
        uv_timer_start(&t->timer, transfer_timer_cb, 0, SHARD_TRANSFER_POLL_MS);
        s->transfer = t;
        return 0;
    }
    /* Set up as if raft had taken it, in case it calls back before returning. */
    t->in_raft = 1;
    s->transfer = t;
    uv_timer_start(&t->timer, transfer_timer_cb, timeout_ms, 0);
    int rv = raft_transfer(&s->raft, &t->req, to_node, transfer_done);
    if (rv != 0) {
        /* raft kept nothing and never calls back. */
        s->transfer = NULL;
        uv_close((uv_handle_t *)&t->timer, transfer_free);
        if (rv == RAFT_NOTLEADER)
            *leader_hint = shard_leader_hint(s);
        return rv == RAFT_BADID      ? CH_EINVAL
               : rv == RAFT_NOTFOUND ? CH_EUNAVAILABLE
                                     : ch_from_raft(rv);
    }
    CH_INFO((int)s->id, "leadership transfer to %u started", to_node);
    return 0;
}

/* ---- membership changes (raft_conf.c) ----------------------------------------------- */

int shard_raft_role(struct shard *s, uint32_t node)
{
    return raft_conf_role(&s->raft, node);
}

int shard_conf(struct shard *s, int op, uint32_t node, const char *address,
               shard_conf_cb cb, void *data, int *role, uint32_t *leader_hint)
{
    *leader_hint = 0;
    *role = shard_raft_role(s, node);
    int err = check_leader(s, leader_hint);
    if (err != 0)
        return err;
    err = raft_conf_change(&s->raft, (int)s->id, op, node, address, cb, data, role);
    if (err == CH_ENOTLEADER)
        *leader_hint = shard_leader_hint(s);
    return err;
}

/* ---- leadership watch ---------------------------------------------------------------- */

/* ---- snapshots on request ---------------------------------------------------------- */

struct snap_barrier {
    struct raft_barrier req;
};

static void snap_barrier_cb(struct raft_barrier *req, int status)
{
    (void)status;
    free(req->data);
}

/* On a leader, commits an entry so every armed replica applies one more. */
static void snap_kick(struct shard *s)
{
    if (s->snap.barriers_left <= 0 || raft_state(&s->raft) != RAFT_LEADER)
        return;
    s->snap.barriers_left--;
    struct snap_barrier *b = calloc(1, sizeof *b);
    if (b == NULL)
        return;
    b->req.data = b;
    if (raft_barrier(&s->raft, &b->req, snap_barrier_cb) != 0)
        free(b);
}

int shard_snapshot_now(struct shard *s, unsigned timeout_ms, shard_snapshot_cb cb,
                       void *data)
{
    if (s->closing)
        return CH_ESHUTDOWN;
    if (s->snap.cb != NULL)
        return CH_EUNAVAILABLE;
    s->snap.cb = cb;
    s->snap.data = data;
    s->snap.deadline = uv_now(s->loop) + timeout_ms;
    s->snap.barriers_left = 3;
    s->snap.taken = 0;
    s->snap.index = 0;
    /* raft snapshots when applied - snapshot index >= threshold, checked after
     * applying: with 1 the next applied entry (a leader's barrier) does it */
    raft_set_snapshot_threshold(&s->raft, 1);
    snap_kick(s);
    CH_INFO((int)s->id, "snapshot requested by an operator");
    return 0;
}

static void snap_watch(struct shard *s)
{
    if (s->snap.cb == NULL)
        return;
    if (!s->snap.taken && uv_now(s->loop) >= s->snap.deadline) {
        CH_WARN((int)s->id, "operator snapshot: no entry applied in time, not taken");
        snap_answer(s, CH_ETIMEOUT);
        return;
    }
    if (!s->snap.taken)
        snap_kick(s);
}

void shard_watch(struct shard *s)
{
    if (s->closing)
        return;
    snap_watch(s);
    int state = (int)raft_state(&s->raft);
    uint32_t leader = shard_leader_hint(s);
    uint64_t term = raft_current_term(&s->raft);
    if (state != s->last_state || leader != s->last_leader || term != s->last_term) {
        CH_INFO((int)s->id, "raft state=%s term=%" PRIu64 " leader=%u commit=%" PRIu64
                " applied=%" PRIu64,
                raft_state_name(state), term, leader, (uint64_t)raft_commit_index(&s->raft),
                (uint64_t)raft_last_applied(&s->raft));
        s->last_state = state;
        s->last_leader = leader;
        s->last_term = term;
    }
}

/* ---- open / close -------------------------------------------------------------------- */

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static void free_shard(struct shard *s)
{
    ring_clear(s);
    free(s->ring);
    clog_output_free(&s->out);
    if (s->clog)
        clog_destroy(s->clog);
    ch_wbuf_free(&s->pending);
    free(s->pending_waiters);
    free(s->pending_readers);
    free(s);
}

static void handle_closed(uv_handle_t *h)
{
    struct shard *s = h->data;
    if (--s->handles_open > 0)
        return;
    void (*cb)(void *) = s->close_cb;
    void *data = s->close_data;
    free_shard(s);
    if (cb)
        cb(data);
}

static void raft_closed(struct raft *r)
{
    struct shard *s = r->data;
    if (s->transfer != NULL) {
        /* raft is done with the request even if it never called back. */
        s->transfer->in_raft = 0;
        transfer_end(s->transfer);
    }
    raft_uv_close(&s->io);
    ch_raft_tcp_close(&s->transport);
    uv_close((uv_handle_t *)&s->flush_check, handle_closed);
    uv_close((uv_handle_t *)&s->wake_idle, handle_closed);
}

void shard_close(struct shard *s, void (*cb)(void *data), void *data)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->close_cb = cb;
    s->close_data = data;
    /* Nothing pending was proposed: those clients never got an ack. */
    answer_waiters(s->pending_waiters, s->n_pending, CH_ESHUTDOWN, 0);
    s->n_pending = 0;
    answer_readers(s->pending_readers, s->n_readers, CH_ESHUTDOWN, 0);
    s->n_readers = 0;
    reset_subscribers(s, CH_ESHUTDOWN);
    snap_answer(s, CH_ESHUTDOWN);
    if (s->transfer != NULL) {
        transfer_answer(s->transfer, CH_ESHUTDOWN, 0);
        if (!s->transfer->in_raft)
            transfer_end(s->transfer);
    }
    if (s->wake_active) {
        uv_idle_stop(&s->wake_idle);
        s->wake_active = 0;
    }
    s->handles_open = 2;
    raft_close(&s->raft, raft_closed);
}

/* Failure before raft_init succeeded: release what exists; the two uv handles
 * close asynchronously and free the shard from handle_closed. */
static int open_fail_early(struct shard *s, int io_ready, int transport_ready, int code)
{
    if (io_ready)
        raft_uv_close(&s->io);
    if (transport_ready)
        ch_raft_tcp_close(&s->transport);
    s->closing = 1;
    s->handles_open = 2;
    uv_close((uv_handle_t *)&s->flush_check, handle_closed);
    uv_close((uv_handle_t *)&s->wake_idle, handle_closed);
    return code;
}

int shard_open(uv_loop_t *loop, const struct shard_options *opt, struct shard **out,
               char *err, size_t errlen)
{
    const struct cluster_config *cfg = opt->config;
    const struct cluster_node *self = cluster_node_by_id(cfg, opt->node_id);
    if (self == NULL) {
        snprintf(err, errlen, "node %u is not in the config", opt->node_id);
        return CH_ECONFIG;
    }
    struct shard *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return CH_ENOMEM;
    }
    s->loop = loop;
    s->id = opt->shard;
    s->node_id = opt->node_id;
    s->boot_id = opt->boot_id & 0xffffffffu;
    s->floor = 1;
    s->last_state = -1;
    ch_hist_init_exp(&s->stats.batch_commands, 1, 2, 13); /* 1 .. 4096 commands */
    ch_hist_init(&s->stats.apply_latency_ns, shard_latency_bounds_ns,
                 sizeof shard_latency_bounds_ns / sizeof shard_latency_bounds_ns[0]);
    clog_output_init(&s->out);
    ch_wbuf_init(&s->pending);
    s->ring_cap = opt->stream_retain_entries;
    if ((s->ring_cap > 0 && (s->ring = calloc(s->ring_cap, sizeof *s->ring)) == NULL) ||
        clog_create(&cfg->limits, &s->clog) != 0) {
        free_shard(s);
        snprintf(err, errlen, "out of memory");
        return CH_ENOMEM;
    }
    snprintf(s->dir, sizeof s->dir, "%s/shard-%u", opt->data_dir, opt->shard);
    if (mkdir_p(s->dir) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", s->dir, strerror(errno));
        free_shard(s);
        return CH_EIO;
    }
    cluster_raft_address(self, opt->shard, s->address, sizeof s->address);
    uv_check_init(loop, &s->flush_check);
    s->flush_check.data = s;
    uv_idle_init(loop, &s->wake_idle);
    s->wake_idle.data = s;

    s->fsm.version = 2;
    s->fsm.data = s;
    s->fsm.apply = fsm_apply;
    s->fsm.snapshot = fsm_snapshot;
    s->fsm.snapshot_finalize = fsm_snapshot_finalize;
    s->fsm.restore = fsm_restore;

    int rv;
    if ((rv = ch_raft_tcp_init(&s->transport, loop)) != 0) {
        snprintf(err, errlen, "raft transport: %s", raft_strerror(rv));
        return open_fail_early(s, 0, 0, CH_EIO);
    }
    if ((rv = raft_uv_init(&s->io, loop, s->dir, &s->transport.outer)) != 0) {
        snprintf(err, errlen, "raft storage in %s: %s", s->dir, s->io.errmsg);
        return open_fail_early(s, 0, 1, CH_EIO);
    }
    raft_uv_set_segment_size(&s->io, cfg->raft.segment_size);
    raft_uv_set_connect_retry_delay(&s->io, 100);
    if ((rv = raft_init(&s->raft, &s->io, &s->fsm, opt->node_id, s->address)) != 0) {
        snprintf(err, errlen, "raft init in %s: %s", s->dir, raft_errmsg(&s->raft));
        return open_fail_early(s, 1, 1, CH_EIO);
    }
    s->raft.data = s;
    s->raft_initialized = 1;
    ch_raft_quiet_tracer(&s->raft, &s->io);
    raft_set_election_timeout(&s->raft, cfg->raft.election_timeout_ms);
    raft_set_heartbeat_timeout(&s->raft, cfg->raft.heartbeat_timeout_ms);
    raft_set_pre_vote(&s->raft, cfg->raft.pre_vote ? true : false);
    raft_set_snapshot_threshold(&s->raft, cfg->raft.snapshot_threshold);
    s->snap.threshold = cfg->raft.snapshot_threshold;
    raft_set_snapshot_trailing(&s->raft, cfg->raft.snapshot_trailing);
    raft_set_max_inflight_entries(&s->raft, cfg->raft.max_inflight_entries);
    s->max_inflight_batches = cfg->raft.max_inflight_batches;
    /* raft refuses entries (RAFT_NOSPACE) when a majority reports less free,
     * pre-allocated log capacity than this many KiB; its default of 4 MiB can never
     * be met with segments smaller than that, so ask for one segment's worth. */
    raft_set_capacity_threshold(&s->raft, (unsigned short)(cfg->raft.segment_size / 1024 > 65535
                                                               ? 65535
                                                               : cfg->raft.segment_size / 1024));
    raft_seed(&s->raft, (unsigned)(opt->boot_id * 2654435761u + opt->shard * 40503u +
                                   opt->node_id));

    /* Every replica bootstraps the same configuration; on restart raft refuses
     * (RAFT_CANTBOOTSTRAP) because the data dir already holds state. */
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    rv = 0;
    for (uint32_t i = 0; i < cfg->replication && rv == 0; i++) {
        uint32_t id = cfg->replicas[opt->shard * cfg->replication + i];
        char addr[64];
        cluster_raft_address(cluster_node_by_id(cfg, id), opt->shard, addr, sizeof addr);
        rv = raft_configuration_add(&conf, id, addr, RAFT_VOTER);
    }
    if (rv == 0 && !opt->join)
        rv = raft_bootstrap(&s->raft, &conf);
    else if (rv == 0)
        CH_INFO((int)s->id, "joining an existing group (no bootstrap) in %s", s->dir);
    raft_configuration_close(&conf);
    int code = 0;
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
        snprintf(err, errlen, "shard %u: raft bootstrap: %s", s->id, raft_errmsg(&s->raft));
        code = CH_EIO;
    } else {
        if (rv == 0 && !opt->join)
            CH_INFO((int)s->id, "bootstrapped new replica in %s", s->dir);
        if ((rv = raft_start(&s->raft)) != 0) {
            if (s->restore_err != 0)
                snprintf(err, errlen, "shard %u: snapshot restore failed: %s", s->id,
                         ch_strerror(s->restore_err));
            else if (raft_errmsg(&s->raft)[0] != 0)
                snprintf(err, errlen, "shard %u: raft start on %s failed: %s: %s", s->id,
                         s->address, raft_strerror(rv), raft_errmsg(&s->raft));
            else /* raft says nothing when, for example, the port is taken */
                snprintf(err, errlen, "shard %u: raft start on %s failed: %s (is the "
                         "address in use by another process?)", s->id, s->address,
                         raft_strerror(rv));
            code = s->restore_err ? s->restore_err : CH_EIO;
        }
    }
    if (code != 0) {
        /* raft is initialised: close through the normal asynchronous path. */
        shard_close(s, NULL, NULL);
        return code;
    }
    /*
     * Sporadic traffic: on each tick (every heartbeat_timeout ms, a period raft_uv
     * fixes at raft_start) a leader drops a follower it has not heard from since
     * the previous tick from pipeline to probe mode, and a probing follower gets
     * new entries only once heartbeat_timeout has passed since the last send — so
     * the first message after a quiet spell waited up to a whole heartbeat (p99
     * 101 ms at 4 msg/s; docs/benchmarks.md).  Lowering heartbeat_timeout after
     * the start keeps the tick (and so the heartbeat traffic and the step-down
     * check) at the configured period, while a probing follower gets new entries
     * as soon as SHARD_PROBE_RESEND_MS have passed since the last send.
     */
    raft_set_heartbeat_timeout(&s->raft, shard_probe_resend_ms(cfg->raft.heartbeat_timeout_ms));
    uv_check_start(&s->flush_check, flush_check_cb);
    /* floor stays 1 unless raft_start restored a snapshot (fsm_restore set
     * `restored`): then the stream is complete only after the snapshot's index. */
    *out = s;
    return 0;
}
