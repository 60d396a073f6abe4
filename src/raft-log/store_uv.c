/*
 * The store RPC server (proto.h over TCP).
 *
 * Requests are decoded completely before any shard sees them, so a malformed
 * request is refused whole and never half-applied.  Writes go to the shard
 * batcher and are answered from the FSM apply of their committed entry; reads
 * take a shared raft_barrier on the leader unless the client asked for a stale
 * read of this replica.  Replies and stream frames for one connection are
 * appended to its output buffer and written with one uv_write per loop
 * iteration.  A connection whose unsent output grows beyond max_conn_backlog
 * (a subscriber that does not keep up) is closed; it resumes from its cursor.
 */
#include "store_uv.h"

#include "../cluster/meta_uv.h"
#include "../cluster/placement.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bugs.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../proto/proto.h"

#define STORE_MAX_CMDS_PER_SUBMIT 65536
#define STORE_MAX_HISTORY_LIMIT 1000
#define STORE_READ_CHUNK 65536

struct conn;

struct sub {
    struct shard_sub base;
    struct conn *conn;
    uint64_t req_id;
    uint32_t shard;
    struct sub *next_in_conn;
};

struct conn {
    uv_tcp_t tcp;
    struct store *st;
    uint64_t id;
    uint8_t *in;
    size_t in_len, in_cap;
    struct ch_wbuf out;
    size_t unsent; /* bytes handed to uv_write and not yet completed */
    int refs;      /* async requests still holding this connection */
    int closing;
    int dirty;
    const char *doom; /* set: close (with this reason) at the next flush, not inline */
    struct conn *prev, *next;           /* all connections */
    struct conn *next_dirty;            /* connections with output to flush */
    struct sub *subs;
    char peer[64];
};

struct store {
    uv_loop_t *loop;
    struct store_options opt;
    uv_tcp_t listener;
    uv_check_t flush_check;
    uv_idle_t wake_idle;
    int wake_active;
    struct conn *conns;
    struct conn *dirty;
    uint64_t next_conn_id;
    struct ch_wbuf scratch;
    int closing;
    int handles_open;
    void (*close_cb)(void *);
    void *close_data;
};

struct write_req {
    uv_write_t req;
    struct conn *conn;
    uint8_t *data;
    size_t len;
};

/* ---- connection lifetime ------------------------------------------------------------ */

static void conn_release(struct conn *c)
{
    if (--c->refs > 0)
        return;
    ch_wbuf_free(&c->out);
    free(c->in);
    free(c);
}

static void conn_closed(uv_handle_t *h)
{
    conn_release(h->data);
}

static void conn_close(struct conn *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = 1;
    struct store *st = c->st;
    if (why)
        CH_INFO(-1, "closing client connection %s: %s", c->peer, why);
    for (struct sub *s = c->subs; s != NULL;) {
        struct sub *next = s->next_in_conn;
        if (st->opt.shards[s->shard])
            shard_unsubscribe(st->opt.shards[s->shard], &s->base);
        free(s);
        s = next;
    }
    c->subs = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        st->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* ---- output ----------------------------------------------------------------------- */

static void wake_idle_cb(uv_idle_t *h)
{
    (void)h; /* only there to make the next poll non-blocking */
}

static void store_wake(struct store *st)
{
    if (!st->wake_active && !st->closing) {
        uv_idle_start(&st->wake_idle, wake_idle_cb);
        st->wake_active = 1;
    }
}

static void write_done(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *c = w->conn;
    c->unsent -= w->len;
    free(w->data);
    free(w);
    if (status != 0 && !c->closing)
        conn_close(c, uv_strerror(status));
    conn_release(c);
}

static void conn_flush(struct conn *c)
{
    c->dirty = 0;
    if (c->closing || c->out.len == 0)
        return;
    struct write_req *w = malloc(sizeof *w);
    if (w == NULL) {
        conn_close(c, "out of memory");
        return;
    }
    w->conn = c;
    w->data = ch_wbuf_take(&c->out, &w->len);
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)w->len);
    int rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, write_done);
    if (rv != 0) {
        free(w->data);
        free(w);
        conn_close(c, uv_strerror(rv));
        return;
    }
    c->unsent += w->len;
    c->refs++;
}

/*
 * Marks the connection for the end-of-iteration flush.  A connection that ran
 * out of memory or is too far behind is doomed rather than closed here, because
 * this runs inside shard callbacks that are iterating subscriber lists.
 */
static void conn_touch(struct conn *c)
{
    struct store *st = c->st;
    if (c->closing)
        return;
    if (ch_wbuf_error(&c->out))
        c->doom = "out of memory";
    else if (c->unsent + c->out.len > st->opt.max_conn_backlog)
        c->doom = "client too slow: reply backlog over limit";
    if (!c->dirty) {
        c->dirty = 1;
        c->refs++;
        c->next_dirty = st->dirty;
        st->dirty = c;
        store_wake(st);
    }
}

static void flush_all(struct store *st)
{
    struct conn *c = st->dirty;
    st->dirty = NULL;
    while (c != NULL) {
        struct conn *next = c->next_dirty;
        if (c->doom) {
            c->dirty = 0;
            conn_close(c, c->doom);
        } else {
            conn_flush(c);
        }
        conn_release(c);
        c = next;
    }
}

static void flush_check_cb(uv_check_t *h)
{
    struct store *st = h->data;
    if (st->wake_active) {
        uv_idle_stop(&st->wake_idle);
        st->wake_active = 0;
    }
    flush_all(st);
}

static void send_error(struct conn *c, uint64_t req_id, int err, uint32_t hint,
                       uint64_t extra)
{
    if (c->closing)
        return;
    proto_put_error(&c->out, req_id, err, hint, extra, ch_strerror(err));
    conn_touch(c);
}

/* ---- SUBMIT ---------------------------------------------------------------------- */

struct submit_ctx {
    struct conn *conn;
    uint64_t req_id;
    uint32_t n, left;
    struct proto_result results[];
};

static void submit_reply(struct submit_ctx *ctx)
{
    struct conn *c = ctx->conn;
    if (!c->closing) {
        size_t start = c->out.len;
        struct proto_submit_reply r = {.n_results = ctx->n};
        proto_encode_submit_reply(&c->out, ctx->req_id, &r);
        for (uint32_t i = 0; i < ctx->n; i++)
            proto_put_result(&c->out, &ctx->results[i]);
        proto_frame_end(&c->out, start);
        conn_touch(c);
    }
    conn_release(c);
    free(ctx);
}

static void submit_done(void *data, uint32_t slot, const struct clog_result *res,
                        uint32_t leader_hint)
{
    struct submit_ctx *ctx = data;
    struct proto_result *r = &ctx->results[slot];
    r->err = res->err;
    r->dup = res->dup;
    r->leader_hint = leader_hint;
    if (res->err == 0) {
        r->conv = res->conv;
        r->seq = res->seq;
        r->ts = res->ts;
    }
    if (--ctx->left == 0)
        submit_reply(ctx);
}

static uint32_t first_replica(const struct store *st, uint32_t shard)
{
    return st->opt.config->replicas[shard * st->opt.config->replication];
}

static void handle_submit(struct conn *c, uint64_t req_id, struct ch_rbuf *body)
{
    struct store *st = c->st;
    struct proto_submit m;
    if (proto_decode_submit(body, &m) != 0 || m.n_cmds > STORE_MAX_CMDS_PER_SUBMIT) {
        send_error(c, req_id, m.n_cmds > STORE_MAX_CMDS_PER_SUBMIT ? CH_ETOOLARGE
                                                                   : CH_EMALFORMED, 0, 0);
        return;
    }
    /* Pass 1: the framing of every command must be sound before anything is queued. */
    struct clog_cmd *cmds = m.n_cmds ? calloc(m.n_cmds, sizeof *cmds) : NULL;
    int *decode_err = m.n_cmds ? calloc(m.n_cmds, sizeof *decode_err) : NULL;
    struct submit_ctx *ctx = malloc(sizeof *ctx + m.n_cmds * sizeof ctx->results[0]);
    if ((m.n_cmds && (cmds == NULL || decode_err == NULL)) || ctx == NULL) {
        free(cmds);
        free(decode_err);
        free(ctx);
        send_error(c, req_id, CH_ENOMEM, 0, 0);
        return;
    }
    struct ch_rbuf r;
    ch_rbuf_init(&r, m.cmds.ptr, m.cmds.len);
    for (uint32_t i = 0; i < m.n_cmds; i++) {
        struct ch_slice one = ch_get_bytes32(&r, m.cmds.len);
        if (r.err)
            break;
        struct ch_rbuf cr;
        ch_rbuf_init(&cr, one.ptr, one.len);
        decode_err[i] = clog_cmd_decode(&cr, &cmds[i]);
        if (decode_err[i] == 0 && cr.left != 0)
            decode_err[i] = CH_EMALFORMED;
    }
    if (r.err || r.left != 0) {
        free(cmds);
        free(decode_err);
        free(ctx);
        send_error(c, req_id, CH_EMALFORMED, 0, 0);
        return;
    }
    /* Pass 2: route each command to its shard's batcher. */
    memset(ctx, 0, sizeof *ctx + m.n_cmds * sizeof ctx->results[0]);
    ctx->conn = c;
    ctx->req_id = req_id;
    ctx->n = m.n_cmds;
    ctx->left = m.n_cmds + 1; /* +1 held until the loop below is done */
    c->refs++;
    for (uint32_t i = 0; i < m.n_cmds; i++) {
        struct proto_result *res = &ctx->results[i];
        res->conv = cmds[i].conv;
        int err = decode_err[i];
        uint32_t hint = 0;
        if (err == 0) {
            uint32_t shard = cluster_shard_of_cmd(&cmds[i], st->opt.config->n_shards);
            struct shard *s = st->opt.shards[shard];
            if (s == NULL) {
                err = CH_ENOSHARD;
                hint = first_replica(st, shard);
            } else {
                err = shard_submit(s, &cmds[i], submit_done, ctx, i, &hint);
            }
        }
        if (err != 0) {
            res->err = (uint16_t)err;
            res->leader_hint = hint;
            ctx->left--;
        }
    }
    free(cmds);
    free(decode_err);
    if (--ctx->left == 0)
        submit_reply(ctx);
}

/* ---- reads ------------------------------------------------------------------------ */

/* Keeps the reply under the frame limit: drops records from the end (after-pages)
 * or from the front (before-pages) and reports has_more. */
static void trim_page(struct ch_wbuf *recs, uint32_t *n, int *has_more, int from_front,
                      size_t budget)
{
    if (recs->len <= budget)
        return;
    size_t off = 0, keep_bytes = 0;
    uint32_t count = 0;
    if (!from_front) {
        while (count < *n) {
            uint32_t len = ch_load_u32(recs->data + off);
            if (keep_bytes + len > budget)
                break;
            keep_bytes += len;
            off += len;
            count++;
        }
        recs->len = keep_bytes;
    } else {
        /* find the smallest suffix start that fits */
        size_t total = recs->len;
        uint32_t skip = 0;
        while (total - off > budget && skip < *n) {
            off += ch_load_u32(recs->data + off);
            skip++;
        }
        memmove(recs->data, recs->data + off, total - off);
        recs->len = total - off;
        count = *n - skip;
    }
    *n = count;
    *has_more = 1;
}

static void serve_history(struct conn *c, uint64_t req_id, const struct clog *clog,
                          const struct proto_history *m)
{
    struct store *st = c->st;
    uint32_t limit = m->limit > STORE_MAX_HISTORY_LIMIT ? STORE_MAX_HISTORY_LIMIT : m->limit;
    uint32_t n = 0;
    int has_more = 0;
    struct clog_conv_info info;
    int err = clog_conv_info(clog, m->conv, &info);
    ch_wbuf_reset(&st->scratch);
    if (err == 0)
        err = clog_history(clog, m->conv, m->after, m->before, limit, &st->scratch, &n,
                           &has_more);
    if (err != 0) {
        send_error(c, req_id, err, 0, 0);
        return;
    }
    trim_page(&st->scratch, &n, &has_more, m->before != 0 && m->after == 0,
              st->opt.max_frame - 1024);
    size_t start = c->out.len;
    struct proto_history_reply r = {.conv = m->conv,
                                    .last_seq = info.last_seq,
                                    .has_more = (uint8_t)has_more,
                                    .n_events = n};
    proto_encode_history_reply(&c->out, req_id, &r);
    ch_put_raw(&c->out, st->scratch.data, st->scratch.len);
    proto_frame_end(&c->out, start);
    conn_touch(c);
}

static int member_out(void *arg, const struct clog_member *m)
{
    struct proto_member pm = {
        .user = m->user, .role = m->role, .delivered = m->delivered, .read = m->read};
    proto_put_member(arg, &pm);
    return 0;
}

static void serve_conv_get(struct conn *c, uint64_t req_id, const struct clog *clog,
                           uint64_t conv)
{
    struct clog_conv_info info;
    int err = clog_conv_info(clog, conv, &info);
    if (err != 0) {
        send_error(c, req_id, err, 0, 0);
        return;
    }
    size_t start = c->out.len;
    struct proto_conv_get_reply r = {.conv = conv,
                                     .kind = info.kind,
                                     .name = info.name,
                                     .created_by = info.created_by,
                                     .created_ts = info.created_ts,
                                     .last_seq = info.last_seq,
                                     .n_members = info.n_members};
    proto_encode_conv_get_reply(&c->out, req_id, &r);
    clog_members_foreach(clog, conv, member_out, &c->out);
    proto_frame_end(&c->out, start);
    conn_touch(c);
}

struct user_convs_scan {
    const struct clog *clog;
    struct ch_slice user;
    struct ch_wbuf *out;
    uint32_t n;
};

static int user_conv_out(void *arg, uint64_t conv)
{
    struct user_convs_scan *scan = arg;
    struct clog_conv_info info;
    struct clog_member m;
    if (clog_conv_info(scan->clog, conv, &info) != 0 ||
        clog_member_get(scan->clog, conv, scan->user, &m) != 0)
        return 0; /* the index and the conversation agree; be defensive anyway */
    struct proto_user_conv uc = {.conv = conv,
                                 .kind = info.kind,
                                 .name = info.name,
                                 .last_seq = info.last_seq,
                                 .delivered = m.delivered,
                                 .read = m.read,
                                 .n_members = info.n_members};
    proto_put_user_conv(scan->out, &uc);
    scan->n++;
    return 0;
}

static void serve_user_convs(struct conn *c, uint64_t req_id, const struct clog *clog,
                             uint32_t shard, uint64_t applied_index, struct ch_slice user)
{
    size_t start = c->out.len;
    struct proto_user_convs_reply r = {
        .shard = shard, .n_convs = 0, .applied_index = applied_index};
    proto_encode_user_convs_reply(&c->out, req_id, &r);
    struct user_convs_scan scan = {.clog = clog, .user = user, .out = &c->out, .n = 0};
    clog_user_convs_foreach(clog, user, user_conv_out, &scan);
    /* n_convs sits right after the u32 shard in the fixed part */
    ch_patch_u32(&c->out, start + PROTO_HEADER_SIZE + 4, scan.n);
    proto_frame_end(&c->out, start);
    conn_touch(c);
}

static void serve_user_get(struct conn *c, uint64_t req_id, const struct clog *clog,
                           struct ch_slice user)
{
    struct clog_user u;
    int err = clog_user_get(clog, user, &u);
    if (err != 0) {
        send_error(c, req_id, err, 0, 0);
        return;
    }
    struct proto_user_get_reply r = {.user = u.user,
                                     .password_record = u.password_record,
                                     .display_name = u.display_name,
                                     .status = u.status,
                                     .settings = u.settings,
                                     .created_ts = u.created_ts,
                                     .last_seen = u.last_seen,
                                     .disabled = u.disabled};
    proto_encode_user_get_reply(&c->out, req_id, &r);
    conn_touch(c);
}

/* A decoded read request; strings are copied so the request can wait for a barrier
 * after the connection's input buffer moved on. */
struct read_req {
    uint8_t type;
    uint32_t shard;
    union {
        struct proto_history history;
        struct proto_conv_get conv_get;
        struct proto_user_get user_get;
        struct proto_user_convs user_convs;
    } m;
    uint8_t flags;
    struct ch_slice user; /* points into user_buf */
    char user_buf[CLOG_MAX_USER];
};

struct read_ctx {
    struct conn *conn;
    struct shard *shard;
    uint64_t req_id;
    struct read_req req;
};

static void serve_read(struct conn *c, uint64_t req_id, struct shard *s,
                       const struct read_req *q)
{
    const struct clog *clog = shard_clog(s);
    switch (q->type) {
    case PROTO_HISTORY:
        if (q->user.len > 0) {
            struct clog_member m;
            int err = clog_member_get(clog, q->m.history.conv, q->user, &m);
            if (err != 0) {
                send_error(c, req_id, err, 0, 0);
                break;
            }
        }
        serve_history(c, req_id, clog, &q->m.history);
        break;
    case PROTO_CONV_GET:
        serve_conv_get(c, req_id, clog, q->m.conv_get.conv);
        break;
    case PROTO_USER_GET:
        serve_user_get(c, req_id, clog, q->user);
        break;
    default:
        serve_user_convs(c, req_id, clog, q->shard, shard_applied_index(s),
                         q->user);
        break;
    }
}

static void read_ready(void *data, int status, uint32_t leader_hint)
{
    struct read_ctx *ctx = data;
    struct conn *c = ctx->conn;
    if (!c->closing) {
        if (status != 0)
            send_error(c, ctx->req_id, status, leader_hint, 0);
        else
            serve_read(c, ctx->req_id, ctx->shard, &ctx->req);
    }
    conn_release(c);
    free(ctx);
}

/* Decodes a read request and finds its shard; 0 or an error code. */
static int decode_read(const struct store *st, uint8_t type, struct ch_rbuf *body,
                       struct read_req *q)
{
    uint32_t n_shards = st->opt.config->n_shards;
    struct ch_slice user = {0};
    memset(q, 0, sizeof *q);
    q->type = type;
    switch (type) {
    case PROTO_HISTORY:
        if (proto_decode_history(body, &q->m.history) != 0)
            return CH_EMALFORMED;
        q->flags = q->m.history.flags;
        q->shard = cluster_shard_of_conv(q->m.history.conv, n_shards);
        user = q->m.history.actor;
        if (user.len == 0)
            return 0;
        break;
    case PROTO_CONV_GET:
        if (proto_decode_conv_get(body, &q->m.conv_get) != 0)
            return CH_EMALFORMED;
        q->flags = q->m.conv_get.flags;
        q->shard = cluster_shard_of_conv(q->m.conv_get.conv, n_shards);
        return 0;
    case PROTO_USER_GET:
        if (proto_decode_user_get(body, &q->m.user_get) != 0)
            return CH_EMALFORMED;
        q->flags = q->m.user_get.flags;
        user = q->m.user_get.user;
        q->shard = cluster_shard_of_user(user.ptr, user.len, n_shards);
        break;
    default:
        if (proto_decode_user_convs(body, &q->m.user_convs) != 0)
            return CH_EMALFORMED;
        q->flags = q->m.user_convs.flags;
        user = q->m.user_convs.user;
        q->shard = q->m.user_convs.shard;
        if (q->shard >= n_shards)
            return CH_EINVAL;
        break;
    }
    if (user.len == 0 || user.len > CLOG_MAX_USER)
        return CH_EINVAL;
    memcpy(q->user_buf, user.ptr, user.len);
    q->user = (struct ch_slice){.ptr = (const uint8_t *)q->user_buf, .len = user.len};
    if (type == PROTO_HISTORY)
        q->m.history.actor = (struct ch_slice){0};
    else if (type == PROTO_USER_GET)
        q->m.user_get.user = (struct ch_slice){0};
    else
        q->m.user_convs.user = (struct ch_slice){0};
    return 0;
}

/* Routes a read: stale reads are served at once from this replica; others wait
 * for a barrier on the leader. */
static void handle_read(struct conn *c, uint64_t req_id, uint8_t type, struct ch_rbuf *body)
{
    struct store *st = c->st;
    struct read_req q;
    int err = decode_read(st, type, body, &q);
    if (err != 0) {
        send_error(c, req_id, err, 0, 0);
        return;
    }
    struct shard *s = st->opt.shards[q.shard];
    if (s == NULL) {
        send_error(c, req_id, CH_ENOSHARD, first_replica(st, q.shard), 0);
        return;
    }
    if (q.flags & PROTO_FLAG_STALE_OK) {
        serve_read(c, req_id, s, &q);
        return;
    }
    if (ch_bug(CH_BUG_STALE_READ) && q.type != PROTO_USER_GET) {
        /* DELIBERATE BUG for the Jepsen suite (CHORUS_BUG=stale-read): conversation
         * reads are served from this replica's applied state, like stale ones,
         * whatever replica this is -- no leader check, no barrier.  A follower that
         * is behind, or an old leader cut off from the majority, answers without
         * the writes acknowledged elsewhere.  (User records keep the real path so
         * that a test's register-then-login setup is not what breaks.) */
        serve_read(c, req_id, s, &q);
        return;
    }
    struct read_ctx *ctx = malloc(sizeof *ctx);
    if (ctx == NULL) {
        send_error(c, req_id, CH_ENOMEM, 0, 0);
        return;
    }
    ctx->conn = c;
    ctx->shard = s;
    ctx->req_id = req_id;
    ctx->req = q;
    ctx->req.user.ptr = (const uint8_t *)ctx->req.user_buf;
    uint32_t hint = 0;
    err = shard_read(s, read_ready, ctx, &hint);
    if (err != 0) {
        free(ctx);
        send_error(c, req_id, err, hint, 0);
        return;
    }
    c->refs++;
}

/* ---- SUBSCRIBE ----------------------------------------------------------------------- */

static void sub_on_entry(struct shard_sub *base, uint32_t shard, uint64_t index,
                         const uint8_t *events, size_t len, uint32_t n_events)
{
    struct sub *s = (struct sub *)base;
    struct conn *c = s->conn;
    if (c->closing)
        return;
    size_t start = c->out.len;
    struct proto_stream m = {.shard = shard, .index = index, .n_events = n_events};
    proto_encode_stream(&c->out, s->req_id, &m);
    ch_put_raw(&c->out, events, len);
    proto_frame_end(&c->out, start);
    conn_touch(c);
}

static void sub_on_reset(struct shard_sub *base, uint32_t shard, int err)
{
    struct sub *s = (struct sub *)base;
    struct conn *c = s->conn;
    (void)shard;
    for (struct sub **p = &c->subs; *p != NULL; p = &(*p)->next_in_conn) {
        if (*p == s) {
            *p = s->next_in_conn;
            break;
        }
    }
    send_error(c, s->req_id, err, 0, 0);
    free(s);
}

static void handle_subscribe(struct conn *c, uint64_t req_id, struct ch_rbuf *body)
{
    struct store *st = c->st;
    struct proto_subscribe m;
    if (proto_decode_subscribe(body, &m) != 0) {
        send_error(c, req_id, CH_EMALFORMED, 0, 0);
        return;
    }
    if (m.shard >= st->opt.config->n_shards) {
        send_error(c, req_id, CH_EINVAL, 0, 0);
        return;
    }
    struct shard *sh = st->opt.shards[m.shard];
    if (sh == NULL) {
        send_error(c, req_id, CH_ENOSHARD, first_replica(st, m.shard), 0);
        return;
    }
    struct sub *s = calloc(1, sizeof *s);
    if (s == NULL) {
        send_error(c, req_id, CH_ENOMEM, 0, 0);
        return;
    }
    s->base.data = s;
    s->base.on_entry = sub_on_entry;
    s->base.on_reset = sub_on_reset;
    s->conn = c;
    s->req_id = req_id;
    s->shard = m.shard;
    /* SUBSCRIBED must precede the replayed STREAM frames: reserve its place. */
    size_t at = c->out.len;
    uint64_t next = 0;
    int err = shard_subscribe(sh, &s->base, m.from_index, &next);
    if (err != 0) {
        free(s);
        send_error(c, req_id, err, 0, next);
        return;
    }
    s->next_in_conn = c->subs;
    c->subs = s;
    struct ch_wbuf head;
    ch_wbuf_init(&head);
    struct proto_subscribed r = {
        .shard = m.shard, .next_index = next, .leader_hint = shard_leader_hint(sh)};
    proto_encode_subscribed(&head, req_id, &r);
    if (ch_wbuf_error(&head) || ch_wbuf_reserve(&c->out, head.len) != 0) {
        ch_wbuf_free(&head);
        conn_close(c, "out of memory");
        return;
    }
    memmove(c->out.data + at + head.len, c->out.data + at, c->out.len - at);
    memcpy(c->out.data + at, head.data, head.len);
    c->out.len += head.len;
    ch_wbuf_free(&head);
    conn_touch(c);
}

static void handle_unsubscribe(struct conn *c, struct ch_rbuf *body)
{
    struct store *st = c->st;
    struct proto_unsubscribe m;
    if (proto_decode_unsubscribe(body, &m) != 0 || m.shard >= st->opt.config->n_shards)
        return; /* no reply by definition; a bad one changes nothing */
    for (struct sub **p = &c->subs; *p != NULL; p = &(*p)->next_in_conn) {
        struct sub *s = *p;
        if (s->req_id == m.sub_id && s->shard == m.shard) {
            *p = s->next_in_conn;
            if (st->opt.shards[s->shard] != NULL)
                shard_unsubscribe(st->opt.shards[s->shard], &s->base);
            free(s);
            return;
        }
    }
}

/* ---- TRANSFER ------------------------------------------------------------------------- */

/* Raft gives up on a transfer after an election timeout; this guard only catches a
 * transfer raft never finishes. */
#define STORE_TRANSFER_GUARD_MS 5000

struct transfer_ctx {
    struct conn *conn;
    uint64_t req_id;
    uint32_t shard;
    unsigned guard_ms;
};

static void send_error_msg(struct conn *c, uint64_t req_id, int err, uint32_t hint,
                           const char *msg)
{
    if (c->closing)
        return;
    proto_put_error(&c->out, req_id, err, hint, 0, msg);
    conn_touch(c);
}

static void transfer_finished(void *data, int status, uint32_t leader)
{
    struct transfer_ctx *ctx = data;
    struct conn *c = ctx->conn;
    char msg[160];
    if (status == 0 && !c->closing) {
        struct proto_transfer_reply r = {.shard = ctx->shard, .leader = leader};
        proto_encode_transfer_reply(&c->out, ctx->req_id, &r);
        conn_touch(c);
    } else if (status == CH_EUNAVAILABLE) {
        if (leader == c->st->opt.node_id)
            snprintf(msg, sizeof msg, "leadership transfer of shard %u failed: node %u still "
                     "leads it", ctx->shard, leader);
        else
            snprintf(msg, sizeof msg, "leadership transfer of shard %u did not complete "
                     "within %u ms", ctx->shard, ctx->guard_ms);
        send_error_msg(c, ctx->req_id, status, leader, msg);
    } else if (status != 0) {
        send_error(c, ctx->req_id, status, 0, 0);
    }
    conn_release(c);
    free(ctx);
}

/* Admin messages carry admin.token: equal (in constant time) or refused. */
static int admin_ok(struct conn *c, uint64_t req_id, struct ch_slice token)
{
    const char *want = c->st->opt.config->admin.token;
    size_t n = strlen(want);
    if (n == 0)
        return 1;
    unsigned diff = token.len != n;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(want[i] ^ (i < token.len ? token.ptr[i] : 0));
    if (diff == 0)
        return 1;
    send_error_msg(c, req_id, CH_EUNAUTHORIZED, 0,
                   token.len ? "wrong admin token"
                             : "this cluster requires the admin token");
    return 0;
}

/* The local replica an admin message names, or NULL (answered here: no such
 * shard, or no replica of it on this node — with a hint). */
static struct shard *admin_shard(struct conn *c, uint64_t req_id, uint32_t shard)
{
    struct store *st = c->st;
    if (shard >= st->opt.config->n_shards) {
        char msg[96];
        snprintf(msg, sizeof msg, "no shard %u (the cluster has %u)", shard,
                 st->opt.config->n_shards);
        send_error_msg(c, req_id, CH_EINVAL, 0, msg);
        return NULL;
    }
    struct shard *sh = st->opt.shards[shard];
    if (sh == NULL)
        send_error(c, req_id, CH_ENOSHARD, first_replica(st, shard), 0);
    return sh;
}

static void handle_transfer(struct conn *c, uint64_t req_id, struct ch_rbuf *body)
{
    struct store *st = c->st;
    struct proto_transfer m;
    char msg[160];
    if (proto_decode_transfer(body, &m) != 0) {
        send_error(c, req_id, CH_EMALFORMED, 0, 0);
        return;
    }
    if (!admin_ok(c, req_id, m.admin_token))
        return;
    struct shard *sh = admin_shard(c, req_id, m.shard);
    if (sh == NULL)
        return;
    struct transfer_ctx *ctx = malloc(sizeof *ctx);
    if (ctx == NULL) {
        send_error(c, req_id, CH_ENOMEM, 0, 0);
        return;
    }
    ctx->conn = c;
    ctx->req_id = req_id;
    ctx->shard = m.shard;
    unsigned guard = 2 * st->opt.config->raft.election_timeout_ms + 1000;
    if (guard < STORE_TRANSFER_GUARD_MS)
        guard = STORE_TRANSFER_GUARD_MS;
    ctx->guard_ms = guard;
    uint32_t hint = 0;
    c->refs++; /* held by ctx */
    int err = shard_transfer(sh, m.to_node, guard, transfer_finished, ctx, &hint);
    if (err == 0)
        return;
    free(ctx);
    switch (err) {
    case CH_ENOTLEADER:
        snprintf(msg, sizeof msg, "node %u does not lead shard %u (leader: %u)",
                 st->opt.node_id, m.shard, hint);
        break;
    case CH_EINVAL:
        snprintf(msg, sizeof msg, "node %u is not a voting replica of shard %u", m.to_node,
                 m.shard);
        break;
    case CH_EUNAVAILABLE:
        snprintf(msg, sizeof msg, "shard %u: a leadership transfer is already in progress, "
                 "or no voter can take over", m.shard);
        break;
    default:
        snprintf(msg, sizeof msg, "%s", ch_strerror(err));
        break;
    }
    send_error_msg(c, req_id, err, hint, msg);
    conn_release(c);
}

/* ---- META_GET, META_PROPOSE, SHARD_CONF
 * ------------------------------------------------ */

static void send_meta_map(struct conn *c, uint64_t req_id, const struct placement *p,
                          uint32_t leader)
{
    if (c->closing)
        return;
    struct ch_wbuf map;
    ch_wbuf_init(&map);
    if (p != NULL && p->version > 0)
        placement_encode(p, &map);
    if (ch_wbuf_error(&map) != 0) {
        ch_wbuf_free(&map);
        send_error(c, req_id, CH_ENOMEM, 0, 0);
        return;
    }
    struct proto_meta_get_reply r = {
        .version = map.len > 0 ? p->version : 0,
        .meta_leader = leader,
        .map = {map.data, map.len},
    };
    proto_encode_meta_get_reply(&c->out, req_id, &r);
    ch_wbuf_free(&map);
    conn_touch(c);
}

/* A META_GET or META_PROPOSE waiting for the meta group. */
struct meta_ctx {
    struct conn *conn;
    uint64_t req_id;
};

/* The context of a request only the meta group's leader can answer, or NULL
 * (answered here: not a meta voter, out of memory).  Holds a ref on c. */
static struct meta_ctx *meta_begin(struct conn *c, uint64_t req_id)
{
    struct store *st = c->st;
    if (st->opt.meta == NULL) {
        char msg[120];
        snprintf(msg, sizeof msg, "node %u is not a voter of the meta group",
                 st->opt.node_id);
        send_error_msg(c, req_id, CH_ENOTLEADER, 0, msg);
        return NULL;
    }
    struct meta_ctx *ctx = malloc(sizeof *ctx);
    if (ctx == NULL) {
        send_error(c, req_id, CH_ENOMEM, 0, 0);
        return NULL;
    }
    ctx->conn = c;
    ctx->req_id = req_id;
    c->refs++;
    return ctx;
}

static void meta_read_done(void *data, int status, uint32_t leader_hint)
{
    struct meta_ctx *ctx = data;
    struct conn *c = ctx->conn;
    struct meta *m = c->st->opt.meta;
    if (status == 0 && m != NULL)
        send_meta_map(c, ctx->req_id, meta_placement(m), meta_leader_hint(m));
    else
        send_error(c, ctx->req_id, status ? status : CH_ESHUTDOWN, leader_hint, 0);
    conn_release(c);
    free(ctx);
}

static void handle_meta_get(struct conn *c, uint64_t req_id, struct ch_rbuf *body)
{
    struct store *st = c->st;
    struct proto_meta_get m;
    if (proto_decode_meta_get(body, &m) != 0) {
        send_error(c, req_id, CH_EMALFORMED, 0, 0);
        return;
    }
    if (m.flags & PROTO_FLAG_STALE_OK) {
        const struct placement *p = st->opt.placement;
        uint32_t leader = 0;
        if (st->opt.meta != NULL) {
            const struct placement *mine = meta_placement(st->opt.meta);
            if (p == NULL || mine->version >= p->version)
                p = mine;
            leader = meta_leader_hint(st->opt.meta);
        }
        send_meta_map(c, req_id, p, leader);
        return;
    }
    struct meta_ctx *ctx = meta_begin(c, req_id);
    if (ctx == NULL)
        return;
    uint32_t hint = 0;
    int err = meta_read(st->opt.meta, meta_read_done, ctx, &hint);
    if (err == 0)
        return;
    free(ctx);
    send_error(c, req_id, err, hint, 0);
    conn_release(c);
}

static void meta_proposed(void *data, int status, const char *msg, uint64_t version,
                          uint32_t leader_hint)
{
    struct meta_ctx *ctx = data;
    struct conn *c = ctx->conn;
    if (status == 0 && !c->closing) {
        struct proto_meta_propose_reply r = {.version = version};
        proto_encode_meta_propose_reply(&c->out, ctx->req_id, &r);
        conn_touch(c);
    } else if (status != 0) {
        send_error_msg(c, ctx->req_id, status, leader_hint, msg);
    }
    conn_release(c);
    free(ctx);
}

static void handle_meta_propose(struct conn *c, uint64_t req_id, struct ch_rbuf *body)
{
    struct store *st = c->st;
    struct proto_meta_propose m;
    struct placement_cmd cmd;
    char msg[160];
    if (proto_decode_meta_propose(body, &m) != 0 ||
        placement_cmd_decode(m.cmd.ptr, m.cmd.len, &cmd) != 0) {
        send_error(c, req_id, CH_EMALFORMED, 0, 0);
        return;
    }
    if (!admin_ok(c, req_id, m.admin_token))
        return;
    struct meta_ctx *ctx = meta_begin(c, req_id);
    if (ctx == NULL)
        return;
    uint32_t hint = 0;
    int err = meta_propose(st->opt.meta, &cmd, meta_proposed, ctx, &hint);
    if (err == 0)
        return;
    free(ctx);
    if (err == CH_ENOTLEADER)
        snprintf(msg, sizeof msg, "node %u does not lead the meta group (leader: %u)",
                 st->opt.node_id, hint);
    else
        snprintf(msg, sizeof msg, "%s", ch_strerror(err));
    send_error_msg(c, req_id, err, hint, msg);
    conn_release(c);
}

struct conf_ctx {
    struct conn *conn;
    uint64_t req_id;
    uint32_t shard, node;
};

static void conf_finished(void *data, int status, int role)
{
    struct conf_ctx *ctx = data;
    struct conn *c = ctx->conn;
    if (status == 0 && !c->closing) {
        struct proto_shard_conf_reply r = {
            .shard = ctx->shard, .node = ctx->node, .role = (uint8_t)role};
        proto_encode_shard_conf_reply(&c->out, ctx->req_id, &r);
        conn_touch(c);
    } else if (status != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "shard %u: membership change for node %u failed: %s",
                 ctx->shard, ctx->node, ch_strerror(status));
        send_error_msg(c, ctx->req_id, status, 0, msg);
    }
    conn_release(c);
    free(ctx);
}

static void handle_shard_conf(struct conn *c, uint64_t req_id, struct ch_rbuf *body)
{
    struct store *st = c->st;
    struct proto_shard_conf m;
    char msg[200];
    if (proto_decode_shard_conf(body, &m) != 0) {
        send_error(c, req_id, CH_EMALFORMED, 0, 0);
        return;
    }
    if (!admin_ok(c, req_id, m.admin_token))
        return;
    /* shard == n_shards: the meta group */
    uint32_t n_shards = st->opt.config->n_shards;
    const struct cluster_node *node = cluster_node_by_id(st->opt.config, m.node);
    if (m.shard > n_shards || node == NULL) {
        snprintf(msg, sizeof msg, "no shard %u or no node %u in this cluster", m.shard,
                 m.node);
        send_error_msg(c, req_id, CH_EINVAL, 0, msg);
        return;
    }
    struct shard *sh = m.shard < n_shards ? st->opt.shards[m.shard] : NULL;
    if (m.shard < n_shards && sh == NULL) {
        send_error(c, req_id, CH_ENOSHARD, first_replica(st, m.shard), 0);
        return;
    }
    if (m.shard == n_shards && st->opt.meta == NULL) {
        snprintf(msg, sizeof msg, "node %u is not a voter of the meta group",
                 st->opt.node_id);
        send_error_msg(c, req_id, CH_ENOTLEADER, 0, msg);
        return;
    }
    struct conf_ctx *ctx = malloc(sizeof *ctx);
    if (ctx == NULL) {
        send_error(c, req_id, CH_ENOMEM, 0, 0);
        return;
    }
    *ctx =
        (struct conf_ctx){.conn = c, .req_id = req_id, .shard = m.shard, .node = m.node};
    char addr[64];
    cluster_raft_address(node, m.shard, addr, sizeof addr); /* + n_shards: meta's */
    uint32_t hint = 0;
    int role = 0;
    c->refs++;
    int err = sh != NULL
                  ? shard_conf(sh, m.op, m.node, addr, conf_finished, ctx, &role, &hint)
                  : meta_conf(st->opt.meta, m.op, m.node, addr, conf_finished, ctx, &role,
                              &hint);
    if (err == 0)
        return;
    free(ctx);
    if (err == CH_EEXISTS) { /* already there: the answer is the current role */
        struct proto_shard_conf_reply r = {
            .shard = m.shard, .node = m.node, .role = (uint8_t)role};
        if (!c->closing) {
            proto_encode_shard_conf_reply(&c->out, req_id, &r);
            conn_touch(c);
        }
        conn_release(c);
        return;
    }
    switch (err) {
    case CH_ENOTLEADER:
        snprintf(msg, sizeof msg, "node %u does not lead shard %u (leader: %u)",
                 st->opt.node_id, m.shard, hint);
        break;
    case CH_EINVAL:
        snprintf(msg, sizeof msg,
                 "shard %u: op %u for node %u is not possible (promote needs "
                 "a standby; the leader cannot remove itself: transfer first)",
                 m.shard, m.op, m.node);
        break;
    case CH_EUNAVAILABLE:
        snprintf(msg, sizeof msg, "shard %u: another membership change is in progress",
                 m.shard);
        break;
    default:
        snprintf(msg, sizeof msg, "%s", ch_strerror(err));
        break;
    }
    send_error_msg(c, req_id, err, hint, msg);
    conn_release(c);
}

/* ---- SNAPSHOT ------------------------------------------------------------------------- */

#define STORE_SNAPSHOT_TIMEOUT_MS 5000

static void snapshot_done(void *data, int status, uint64_t index)
{
    struct conf_ctx *ctx = data;
    struct conn *c = ctx->conn;
    if (status == 0 && !c->closing) {
        struct proto_snapshot_reply r = {.shard = ctx->shard, .index = index};
        proto_encode_snapshot_reply(&c->out, ctx->req_id, &r);
        conn_touch(c);
    } else if (status != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "shard %u on node %u: %s", ctx->shard, c->st->opt.node_id,
                 status == CH_ETIMEOUT ? "no entry was applied in time (is the shard's "
                                         "leader reachable?)"
                                       : ch_strerror(status));
        send_error_msg(c, ctx->req_id, status, 0, msg);
    }
    conn_release(c);
    free(ctx);
}

static void handle_snapshot(struct conn *c, uint64_t req_id, struct ch_rbuf *body)
{
    struct proto_snapshot m;
    if (proto_decode_snapshot(body, &m) != 0) {
        send_error(c, req_id, CH_EMALFORMED, 0, 0);
        return;
    }
    if (!admin_ok(c, req_id, m.admin_token))
        return;
    struct shard *sh = admin_shard(c, req_id, m.shard);
    if (sh == NULL)
        return;
    struct conf_ctx *ctx = malloc(sizeof *ctx);
    if (ctx == NULL) {
        send_error(c, req_id, CH_ENOMEM, 0, 0);
        return;
    }
    *ctx = (struct conf_ctx){.conn = c, .req_id = req_id, .shard = m.shard};
    c->refs++;
    int err = shard_snapshot_now(sh, STORE_SNAPSHOT_TIMEOUT_MS, snapshot_done, ctx);
    if (err == 0)
        return;
    free(ctx);
    send_error_msg(c, req_id, err, 0,
                   err == CH_EUNAVAILABLE ? "a snapshot of this replica is already pending"
                                          : ch_strerror(err));
    conn_release(c);
}

/* ---- STATUS --------------------------------------------------------------------------- */

static void handle_status(struct conn *c, uint64_t req_id, struct ch_rbuf *body)
{
    struct store *st = c->st;
    struct proto_status m;
    if (proto_decode_status(body, &m) != 0) {
        send_error(c, req_id, CH_EMALFORMED, 0, 0);
        return;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < st->opt.config->n_shards; i++)
        n += st->opt.shards[i] != NULL;
    size_t start = c->out.len;
    struct proto_status_reply r = {
        .node_id = st->opt.node_id,
        .uptime_ms = uv_now(st->loop) - st->opt.start_time_ms,
        .version = ch_slice_str(CHORUS_VERSION),
        .gw_connections =
            st->opt.connections ? st->opt.connections(st->opt.connections_data) : 0,
        .n_shards = n,
    };
    if (st->opt.disk != NULL &&
        st->opt.disk(st->opt.connections_data, &r.disk_free_bytes, &r.disk_total_bytes) != 0)
        r.disk_free_bytes = r.disk_total_bytes = 0;
    proto_encode_status_reply(&c->out, req_id, &r);
    for (uint32_t i = 0; i < st->opt.config->n_shards; i++) {
        struct shard *sh = st->opt.shards[i];
        if (sh == NULL)
            continue;
        struct raft *raft = shard_raft(sh);
        struct clog_stats cs;
        clog_stats(shard_clog(sh), &cs);
        int leader = raft_state(raft) == RAFT_LEADER;
        struct proto_shard_status ss = {
            .shard = i,
            .role = (uint8_t)raft_state(raft),
            .term = raft_current_term(raft),
            .commit_index = raft_commit_index(raft),
            .applied_index = raft_last_applied(raft),
            .last_index = raft_last_index(raft),
            .leader_id = shard_leader_hint(sh),
            .digest = (m.flags & PROTO_STATUS_FLAG_DIGEST) ? clog_digest(shard_clog(sh)) : 0,
            .snapshot_index = shard_snapshot_index(sh),
            .conversations = cs.conversations,
            .events = cs.events,
            .n_replicas = raft->configuration.n,
        };
        proto_put_shard_status(&c->out, &ss);
        for (unsigned k = 0; k < raft->configuration.n; k++) {
            struct proto_replica rep = {
                .node_id = (uint32_t)raft->configuration.servers[k].id,
                .raft_role = (uint8_t)shard_raft_role(
                    sh, (uint32_t)raft->configuration.servers[k].id),
            };
            raft_index match = 0;
            if (leader && raft_match_index(raft, raft->configuration.servers[k].id,
                                           &match) == 0)
                rep.match_index = match;
            proto_put_replica(&c->out, &rep);
        }
    }
    proto_frame_end(&c->out, start);
    conn_touch(c);
}

/* ---- input ---------------------------------------------------------------------- */

static void dispatch(struct conn *c, const struct proto_frame *f)
{
    struct ch_rbuf body;
    ch_rbuf_init(&body, f->body.ptr, f->body.len);
    switch (f->type) {
    case PROTO_PING: {
        struct proto_ping m;
        if (proto_decode_ping(&body, &m) != 0) {
            send_error(c, f->req_id, CH_EMALFORMED, 0, 0);
            return;
        }
        proto_encode_pong(&c->out, f->req_id, &m);
        conn_touch(c);
        return;
    }
    case PROTO_SUBMIT:
        handle_submit(c, f->req_id, &body);
        return;
    case PROTO_HISTORY:
    case PROTO_CONV_GET:
    case PROTO_USER_GET:
    case PROTO_USER_CONVS:
        handle_read(c, f->req_id, f->type, &body);
        return;
    case PROTO_PUBLISH: {
        struct proto_publish m;
        if (proto_decode_publish(&body, &m) != 0) {
            send_error(c, f->req_id, CH_EMALFORMED, 0, 0);
            return;
        }
        if (c->st->opt.on_publish != NULL)
            c->st->opt.on_publish(c->st->opt.publish_data, &m);
        return;
    }
    case PROTO_SUBSCRIBE:
        handle_subscribe(c, f->req_id, &body);
        return;
    case PROTO_UNSUBSCRIBE:
        handle_unsubscribe(c, &body);
        return;
    case PROTO_STATUS:
        handle_status(c, f->req_id, &body);
        return;
    case PROTO_TRANSFER:
        handle_transfer(c, f->req_id, &body);
        return;
    case PROTO_META_GET:
        handle_meta_get(c, f->req_id, &body);
        return;
    case PROTO_META_PROPOSE:
        handle_meta_propose(c, f->req_id, &body);
        return;
    case PROTO_SHARD_CONF:
        handle_shard_conf(c, f->req_id, &body);
        return;
    case PROTO_SNAPSHOT:
        handle_snapshot(c, f->req_id, &body);
        return;
    default:
        send_error(c, f->req_id, CH_EUNKNOWN_OP, 0, 0);
        return;
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    if (c->in_cap - c->in_len < STORE_READ_CHUNK) {
        size_t cap = c->in_cap ? c->in_cap * 2 : STORE_READ_CHUNK * 2;
        while (cap - c->in_len < STORE_READ_CHUNK)
            cap *= 2;
        uint8_t *p = realloc(c->in, cap);
        if (p == NULL) {
            buf->base = NULL;
            buf->len = 0;
            return;
        }
        c->in = p;
        c->in_cap = cap;
    }
    buf->base = (char *)c->in + c->in_len;
    buf->len = c->in_cap - c->in_len;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    (void)buf;
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? NULL : uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    c->in_len += (size_t)nread;
    size_t off = 0;
    c->refs++; /* dispatch may close the connection */
    while (!c->closing) {
        struct proto_frame f;
        long n = proto_frame_parse(c->in + off, c->in_len - off, c->st->opt.max_frame, &f);
        if (n == 0)
            break;
        if (n < 0) {
            /* The byte stream cannot be resynchronised: say why, then hang up. */
            send_error(c, 0, (int)-n, 0, 0);
            conn_flush(c);
            conn_close(c, ch_strerror((int)-n));
            break;
        }
        dispatch(c, &f);
        off += (size_t)n;
    }
    if (!c->closing) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
        /* Give back memory after a large frame. */
        if (c->in_cap > 4 * STORE_READ_CHUNK && c->in_len < STORE_READ_CHUNK) {
            uint8_t *p = realloc(c->in, STORE_READ_CHUNK * 2);
            if (p != NULL) {
                c->in = p;
                c->in_cap = STORE_READ_CHUNK * 2;
            }
        }
    }
    conn_release(c);
}

static void accept_cb(uv_stream_t *server, int status)
{
    struct store *st = server->data;
    if (status != 0 || st->closing)
        return;
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->st = st;
    c->id = ++st->next_conn_id;
    c->refs = 1; /* released by conn_closed */
    ch_wbuf_init(&c->out);
    uv_tcp_init(st->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    snprintf(c->peer, sizeof c->peer, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0 &&
        ss.ss_family == AF_INET) {
        char ip[32];
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        uv_ip4_name(sin, ip, sizeof ip);
        snprintf(c->peer, sizeof c->peer, "%s:%u", ip, ntohs(sin->sin_port));
    }
    c->next = st->conns;
    if (st->conns)
        st->conns->prev = c;
    st->conns = c;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* ---- listen / close ------------------------------------------------------------------- */

static void store_handle_closed(uv_handle_t *h)
{
    struct store *st = h->data;
    if (--st->handles_open > 0)
        return;
    void (*cb)(void *) = st->close_cb;
    void *data = st->close_data;
    ch_wbuf_free(&st->scratch);
    free(st);
    if (cb)
        cb(data);
}

int store_listen(uv_loop_t *loop, const struct store_options *opt, struct store **out,
                 char *err, size_t errlen)
{
    const struct cluster_node *self = cluster_node_by_id(opt->config, opt->node_id);
    struct store *st = calloc(1, sizeof *st);
    if (st == NULL || self == NULL) {
        free(st);
        snprintf(err, errlen, self ? "out of memory" : "node not in config");
        return self ? CH_ENOMEM : CH_ECONFIG;
    }
    st->loop = loop;
    st->opt = *opt;
    ch_wbuf_init(&st->scratch);
    uv_tcp_init(loop, &st->listener);
    st->listener.data = st;
    uv_check_init(loop, &st->flush_check);
    st->flush_check.data = st;
    uv_idle_init(loop, &st->wake_idle);
    st->wake_idle.data = st;
    st->handles_open = 3;

    struct sockaddr_in addr;
    int rv = uv_ip4_addr(self->client.host, self->client.port, &addr);
    if (rv == 0)
        rv = uv_tcp_bind(&st->listener, (const struct sockaddr *)&addr, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&st->listener, 1024, accept_cb);
    if (rv != 0) {
        snprintf(err, errlen, "store RPC on %s:%u: %s", self->client.host,
                 self->client.port, uv_strerror(rv));
        st->closing = 1;
        uv_close((uv_handle_t *)&st->listener, store_handle_closed);
        uv_close((uv_handle_t *)&st->flush_check, store_handle_closed);
        uv_close((uv_handle_t *)&st->wake_idle, store_handle_closed);
        return CH_EIO;
    }
    uv_check_start(&st->flush_check, flush_check_cb);
    CH_INFO(-1, "store RPC listening on %s:%u", self->client.host, self->client.port);
    *out = st;
    return 0;
}

void store_close(struct store *st, void (*cb)(void *data), void *data)
{
    if (st->closing)
        return;
    flush_all(st);
    st->closing = 1;
    st->close_cb = cb;
    st->close_data = data;
    while (st->conns != NULL)
        conn_close(st->conns, NULL);
    if (st->wake_active)
        uv_idle_stop(&st->wake_idle);
    uv_close((uv_handle_t *)&st->listener, store_handle_closed);
    uv_close((uv_handle_t *)&st->flush_check, store_handle_closed);
    uv_close((uv_handle_t *)&st->wake_idle, store_handle_closed);
}

void store_set_publish(struct store *st, void (*fn)(void *data, const struct proto_publish *m),
                       void *data)
{
    st->opt.on_publish = fn;
    st->opt.publish_data = data;
}
