/*
 * The gateway's store client (see rpc_uv.h).
 *
 * Everything runs on the loop thread.  A call is a heap object holding a copy of
 * its request frame; each attempt gives it a fresh request id and registers it
 * in the pending map of the node connection it was written to.  A 25 ms tick
 * handles what needs a clock: attempt timeouts, backoff wake-ups, deadlines and
 * reconnects.  Output to a node is appended to its buffer and written once per
 * loop iteration from a uv_check handle.
 */
#include "rpc_uv.h"

#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../common/hash.h"
#include "../common/log.h"

#define RPC_TICK_MS 25
#define RPC_BACKOFF_MIN_MS 20
#define RPC_BACKOFF_MAX_MS 500
#define RPC_READ_CHUNK 65536

enum pend_kind { PEND_CALL = 1, PEND_SUB = 2 };

/* Common head of calls and subscriptions: what a node's pending map points to. */
struct pend {
    int kind;
    uint64_t req_id; /* the map key points here; 0 when not in flight */
    struct node *node;
};

struct call {
    struct pend p;
    struct rpc *r;
    uint32_t shard;
    uint8_t *frame;
    size_t len;
    rpc_cb cb;
    void *data;
    uint64_t deadline;
    uint64_t attempt_deadline;
    uint64_t retry_at; /* 0: not waiting */
    uint32_t next_node; /* node to try at retry_at (0: choose) */
    uint32_t tries;
    uint32_t backoff;
    int delivered; /* some node received it: outcome may be unknown */
    struct call *prev, *next;
};

struct rpc_sub {
    struct pend p;
    struct rpc *r;
    uint32_t shard;
    uint64_t want; /* next Raft index wanted */
    void (*on_entry)(void *, uint32_t, uint64_t, const uint8_t *, size_t, uint32_t);
    void (*on_gap)(void *, uint32_t, uint64_t);
    void *data;
    uint64_t retry_at;
    uint32_t tries;
    uint32_t backoff;
    int live;          /* SUBSCRIBED received on p.node */
    uint64_t moved_at; /* last move to the leader (at most one a second) */
    struct rpc_sub *next;
};

enum node_state { NODE_IDLE, NODE_CONNECTING, NODE_UP, NODE_CLOSING };

struct node {
    struct rpc *r;
    uint32_t id;
    struct sockaddr_in addr;
    enum node_state state;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uint8_t *in;
    size_t in_len, in_cap;
    struct ch_wbuf out; /* frames waiting for the connection or the next flush */
    struct ch_map pending;
    uint64_t reconnect_at;
    uint32_t backoff;
    int dirty;
};

struct rpc {
    uv_loop_t *loop;
    struct rpc_options opt;
    struct node *nodes; /* config order */
    uint32_t n_nodes;
    uint32_t *leader;   /* per shard: believed leader node id, 0 unknown */
    uint64_t next_req_id;
    struct call *calls; /* every call not yet completed */
    struct rpc_sub *subs;
    uv_timer_t tick;
    uv_check_t flush;
    int closing;
    int handles_open;
    void (*close_cb)(void *);
    void *close_data;
    void (*connect_fn)(void *, uint32_t);
    void *connect_data;
    struct rpc_stats stats;
};

static struct node *node_by_id(struct rpc *r, uint32_t id)
{
    for (uint32_t i = 0; i < r->n_nodes; i++)
        if (r->nodes[i].id == id)
            return &r->nodes[i];
    return NULL;
}

/* The i-th replica of a shard in placement order; "shard" n_shards is the meta
 * group (its voters). */
static uint32_t replica(const struct rpc *r, uint32_t shard, uint32_t i)
{
    const struct cluster_config *cfg = r->opt.config;
    if (shard == cfg->n_shards)
        return cfg->meta[i % cfg->n_meta];
    uint32_t rf = cfg->replication;
    return cfg->replicas[shard * rf + i % rf];
}

/*
 * May a leader hint be followed?  When it names a node the client knows: a hint
 * comes from Raft, and during a shard move the leader may be the joining
 * replica, which the placement lists only once the move commits.
 */
static int known_node(const struct rpc *r, uint32_t node)
{
    return node_by_id((struct rpc *)r, node) != NULL;
}

/* ---- node connections ------------------------------------------------------------- */

static void node_connect(struct node *n);
static void node_fail(struct node *n, const char *why);
static void call_send(struct call *c, uint32_t node_id);
static void sub_send(struct rpc_sub *s, uint32_t node_id);

static void mark_dirty(struct node *n)
{
    n->dirty = 1;
}

struct wreq {
    uv_write_t req;
    uint8_t *data;
};

static void write_cb(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct node *n = req->handle->data;
    free(w->data);
    free(w);
    if (status < 0 && status != UV_ECANCELED && n->state == NODE_UP)
        node_fail(n, uv_strerror(status));
}

static void node_flush(struct node *n)
{
    n->dirty = 0;
    if (n->state != NODE_UP || n->out.len == 0)
        return;
    struct wreq *w = malloc(sizeof *w);
    if (w == NULL) {
        node_fail(n, "out of memory");
        return;
    }
    size_t len;
    w->data = ch_wbuf_take(&n->out, &len);
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)len);
    int rv = uv_write(&w->req, (uv_stream_t *)&n->tcp, &buf, 1, write_cb);
    if (rv != 0) {
        free(w->data);
        free(w);
        node_fail(n, uv_strerror(rv));
    }
}

static void flush_cb(uv_check_t *h)
{
    struct rpc *r = h->data;
    for (uint32_t i = 0; i < r->n_nodes; i++)
        if (r->nodes[i].dirty)
            node_flush(&r->nodes[i]);
}

/* One of the client's handles finished closing; the last one frees the client. */
static void handle_gone(struct rpc *r)
{
    r->handles_open--;
    if (!r->closing || r->handles_open > 0)
        return;
    void (*cb)(void *) = r->close_cb;
    void *data = r->close_data;
    for (uint32_t i = 0; i < r->n_nodes; i++) {
        free(r->nodes[i].in);
        ch_wbuf_free(&r->nodes[i].out);
        ch_map_free(&r->nodes[i].pending);
    }
    free(r->nodes);
    free(r->leader);
    free(r);
    if (cb)
        cb(data);
}

static void node_closed_cb(uv_handle_t *h)
{
    struct node *n = h->data;
    n->state = NODE_IDLE;
    handle_gone(n->r);
}

/* Takes every request off a failed node and schedules it elsewhere. */
static void node_fail(struct node *n, const char *why)
{
    struct rpc *r = n->r;
    if (n->state == NODE_CONNECTING || n->state == NODE_UP) {
        if (n->state == NODE_UP)
            r->stats.disconnects++;
        CH_DEBUG(-1, "rpc: node %u: %s", n->id, why);
        n->state = NODE_CLOSING;
        uv_close((uv_handle_t *)&n->tcp, node_closed_cb);
    }
    n->in_len = 0;
    ch_wbuf_reset(&n->out);
    n->backoff = n->backoff ? n->backoff * 2 : RPC_BACKOFF_MIN_MS;
    if (n->backoff > 1000)
        n->backoff = 1000;
    n->reconnect_at = uv_now(r->loop) + n->backoff;
    /* Collect first: the map must not change while it is iterated. */
    size_t count = n->pending.count, k = 0;
    struct pend **list = count ? malloc(count * sizeof *list) : NULL;
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (list != NULL && ch_map_next(&n->pending, &it, &slot))
        list[k++] = slot->val;
    ch_map_free(&n->pending);
    ch_map_init(&n->pending);
    uint64_t now = uv_now(r->loop);
    for (size_t i = 0; i < k; i++) {
        struct pend *p = list[i];
        p->req_id = 0;
        p->node = NULL;
        if (p->kind == PEND_CALL) {
            struct call *c = (struct call *)p;
            c->retry_at = now + RPC_BACKOFF_MIN_MS;
            c->next_node = 0;
            c->tries++;
        } else {
            struct rpc_sub *s = (struct rpc_sub *)p;
            s->live = 0;
            s->tries++;
            s->retry_at = now + RPC_BACKOFF_MIN_MS;
        }
    }
    free(list);
    /* If allocation failed the requests stay orphaned without a node; their
     * deadlines (calls) and the tick's resubscribe sweep (subscriptions) recover. */
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct node *n = h->data;
    (void)suggested;
    if (n->in_cap - n->in_len < RPC_READ_CHUNK) {
        size_t cap = n->in_cap ? n->in_cap * 2 : RPC_READ_CHUNK * 2;
        while (cap - n->in_len < RPC_READ_CHUNK)
            cap *= 2;
        uint8_t *p = realloc(n->in, cap);
        if (p == NULL) {
            buf->base = NULL;
            buf->len = 0;
            return;
        }
        n->in = p;
        n->in_cap = cap;
    }
    buf->base = (char *)n->in + n->in_len;
    buf->len = n->in_cap - n->in_len;
}

static void call_finish(struct call *c, int err, const struct proto_frame *f);
static void on_call_reply(struct call *c, struct node *n, const struct proto_frame *f);
static void on_sub_frame(struct rpc_sub *s, struct node *n, const struct proto_frame *f);

static void dispatch(struct node *n, const struct proto_frame *f)
{
    struct pend *p = ch_map_get(&n->pending, &f->req_id, sizeof f->req_id);
    if (p == NULL)
        return; /* a late answer to an attempt that was already retried elsewhere */
    if (p->kind == PEND_CALL) {
        ch_map_del(&n->pending, &f->req_id, sizeof f->req_id);
        p->req_id = 0;
        p->node = NULL;
        on_call_reply((struct call *)p, n, f);
    } else {
        on_sub_frame((struct rpc_sub *)p, n, f);
    }
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct node *n = stream->data;
    (void)buf;
    if (nread < 0) {
        node_fail(n, nread == UV_EOF ? "closed by peer" : uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    n->in_len += (size_t)nread;
    size_t off = 0;
    while (n->state == NODE_UP) {
        struct proto_frame f;
        long used = proto_frame_parse(n->in + off, n->in_len - off, n->r->opt.max_frame, &f);
        if (used == 0)
            break;
        if (used < 0) {
            node_fail(n, "malformed frame from store");
            return;
        }
        off += (size_t)used;
        dispatch(n, &f);
    }
    if (n->state != NODE_UP)
        return;
    memmove(n->in, n->in + off, n->in_len - off);
    n->in_len -= off;
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct node *n = req->data;
    struct rpc *r = n->r;
    if (n->state != NODE_CONNECTING)
        return;
    if (status != 0) {
        node_fail(n, uv_strerror(status));
        return;
    }
    n->state = NODE_UP;
    n->backoff = 0;
    r->stats.connects++;
    int rv = uv_read_start((uv_stream_t *)&n->tcp, alloc_cb, read_cb);
    if (rv != 0) {
        node_fail(n, uv_strerror(rv));
        return;
    }
    uv_tcp_nodelay(&n->tcp, 1);
    mark_dirty(n);
    if (r->connect_fn)
        r->connect_fn(r->connect_data, n->id);
}

static void node_connect(struct node *n)
{
    struct rpc *r = n->r;
    if (n->state != NODE_IDLE || r->closing)
        return;
    if (uv_now(r->loop) < n->reconnect_at)
        return;
    if (uv_tcp_init(r->loop, &n->tcp) != 0)
        return;
    n->tcp.data = n;
    r->handles_open++;
    n->state = NODE_CONNECTING;
    n->creq.data = n;
    int rv = uv_tcp_connect(&n->creq, &n->tcp, (const struct sockaddr *)&n->addr, connect_cb);
    if (rv != 0)
        node_fail(n, uv_strerror(rv));
}

/* Appends a frame with its request id set; the node connects if needed.  The
 * caller registers the pending entry. */
static int node_write(struct node *n, const uint8_t *frame, size_t len, uint64_t req_id)
{
    size_t at = n->out.len;
    ch_put_raw(&n->out, frame, len);
    if (ch_wbuf_error(&n->out)) {
        n->out.len = at;
        return CH_ENOMEM;
    }
    ch_store_u32(n->out.data + at + 8, (uint32_t)req_id);
    ch_store_u32(n->out.data + at + 12, (uint32_t)(req_id >> 32));
    if (n->state == NODE_IDLE)
        node_connect(n);
    mark_dirty(n);
    return 0;
}

/* ---- calls ---------------------------------------------------------------------- */

static void call_unlink(struct call *c)
{
    struct rpc *r = c->r;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void call_finish(struct call *c, int err, const struct proto_frame *f)
{
    if (c->p.node != NULL) {
        ch_map_del(&c->p.node->pending, &c->p.req_id, sizeof c->p.req_id);
        c->p.node = NULL;
    }
    call_unlink(c);
    if (err == CH_ETIMEOUT)
        c->r->stats.timeouts++;
    else if (err == CH_EUNAVAILABLE)
        c->r->stats.unavailable++;
    c->cb(c->data, err, f);
    free(c->frame);
    free(c);
}

/* Picks the node for the next attempt: a hint, the cached leader, or the next
 * replica in placement order. */
static uint32_t call_target(struct call *c, uint32_t hint)
{
    struct rpc *r = c->r;
    if (hint != 0 && known_node(r, hint))
        return hint;
    if (c->tries == 0 && r->leader[c->shard] != 0)
        return r->leader[c->shard];
    return replica(r, c->shard, c->tries);
}

static void call_send(struct call *c, uint32_t node_id)
{
    struct rpc *r = c->r;
    struct node *n = node_by_id(r, node_id);
    uint64_t now = uv_now(r->loop);
    c->retry_at = 0;
    if (n == NULL || n->state == NODE_CLOSING ||
        (n->state == NODE_IDLE && now < n->reconnect_at)) {
        /* that node is down right now: try the next one after a pause */
        c->tries++;
        c->retry_at = now + RPC_BACKOFF_MIN_MS;
        return;
    }
    /* The map hashes the key bytes when they are inserted, and the key points at
     * c->p.req_id: it must hold the new id before the put. */
    c->p.req_id = ++r->next_req_id;
    if (node_write(n, c->frame, c->len, c->p.req_id) != 0) {
        c->p.req_id = 0;
        c->retry_at = now + RPC_BACKOFF_MIN_MS;
        return;
    }
    /* From here on the store may execute it: a later give-up is "outcome unknown"
     * (even if the pending entry cannot be registered: the frame goes out). */
    c->delivered = 1;
    if (ch_map_put(&n->pending, &c->p.req_id, sizeof c->p.req_id, c) != 0) {
        c->p.req_id = 0;
        c->retry_at = now + RPC_BACKOFF_MIN_MS;
        return;
    }
    c->p.node = n;
    c->attempt_deadline = now + r->opt.attempt_timeout_ms;
}

/* Schedules the next attempt after a retryable answer or failure. */
static void call_retry(struct call *c, uint32_t hint)
{
    struct rpc *r = c->r;
    r->stats.retries++;
    uint64_t now = uv_now(r->loop);
    if (hint != 0 && known_node(r, hint)) {
        r->stats.redirects++;
        r->leader[c->shard] = hint;
        c->next_node = hint;
        /* a fresh hint is worth following at once, but not in a tight loop */
        c->retry_at = c->backoff == 0 ? now : now + c->backoff;
        c->backoff = c->backoff ? c->backoff * 2 : 1;
    } else {
        r->leader[c->shard] = 0;
        c->tries++;
        c->next_node = 0;
        c->backoff = c->backoff < RPC_BACKOFF_MIN_MS ? RPC_BACKOFF_MIN_MS : c->backoff * 2;
        c->retry_at = now + c->backoff;
    }
    if (c->backoff > RPC_BACKOFF_MAX_MS)
        c->backoff = RPC_BACKOFF_MAX_MS;
    if (c->retry_at <= now)
        call_send(c, call_target(c, c->next_node));
}

static int retryable(int err)
{
    return err == CH_ENOTLEADER || err == CH_ENOSHARD || err == CH_EUNAVAILABLE ||
           err == CH_ESHUTDOWN;
}

/* Is this answer definitive, or must the call go elsewhere?  Returns the error
 * to retry on (0: definitive) and the leader hint. */
static int classify(const struct proto_frame *f, uint32_t *hint)
{
    struct ch_rbuf body;
    ch_rbuf_init(&body, f->body.ptr, f->body.len);
    *hint = 0;
    if (f->type == PROTO_ERROR) {
        struct proto_error e;
        if (proto_decode_error(&body, &e) != 0)
            return 0;
        *hint = e.leader_hint;
        return retryable(e.err) ? e.err : 0;
    }
    if (f->type == PROTO_SUBMIT_REPLY) {
        struct proto_submit_reply m;
        struct proto_result res;
        if (proto_decode_submit_reply(&body, &m) != 0 || m.n_results == 0 ||
            proto_get_result(&body, &res) != 0)
            return 0;
        *hint = res.leader_hint;
        return retryable(res.err) ? res.err : 0;
    }
    return 0;
}

static void on_call_reply(struct call *c, struct node *n, const struct proto_frame *f)
{
    uint32_t hint;
    c->delivered = 1;
    if (classify(f, &hint) != 0) {
        call_retry(c, hint);
        return;
    }
    c->r->leader[c->shard] = n->id;
    call_finish(c, 0, f);
}

int rpc_call(struct rpc *r, uint32_t shard, const uint8_t *frame, size_t len, rpc_cb cb,
             void *data)
{
    if (r->closing)
        return CH_ESHUTDOWN;
    if (shard > r->opt.config->n_shards || len < PROTO_HEADER_SIZE) /* n_shards: meta */
        return CH_EINVAL;
    struct call *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CH_ENOMEM;
    c->frame = malloc(len);
    if (c->frame == NULL) {
        free(c);
        return CH_ENOMEM;
    }
    memcpy(c->frame, frame, len);
    c->p.kind = PEND_CALL;
    c->r = r;
    c->shard = shard;
    c->len = len;
    c->cb = cb;
    c->data = data;
    c->deadline = uv_now(r->loop) + r->opt.deadline_ms;
    c->next = r->calls;
    if (r->calls)
        r->calls->prev = c;
    r->calls = c;
    r->stats.calls++;
    call_send(c, call_target(c, 0));
    return 0;
}

/* ---- subscriptions ---------------------------------------------------------------- */

static int node_usable(const struct rpc *r, uint32_t id)
{
    for (uint32_t i = 0; i < r->n_nodes; i++) {
        const struct node *n = &r->nodes[i];
        if (n->id == id)
            return n->state == NODE_UP || n->state == NODE_CONNECTING ||
                   (n->state == NODE_IDLE && uv_now(r->loop) >= n->reconnect_at);
    }
    return 0;
}

/*
 * Where to follow a shard's stream: its leader when known (a follower applies a
 * commit only when the leader's next message, at worst a heartbeat, tells it —
 * that would add up to a heartbeat interval to every delivery), else this node's
 * own replica (no network hop), then the others in turn.
 */
static uint32_t sub_target(const struct rpc_sub *s)
{
    const struct rpc *r = s->r;
    uint32_t leader = r->leader[s->shard];
    if (leader != 0 && s->tries == 0 && known_node(r, leader) &&
        node_usable(r, leader))
        return leader;
    uint32_t rf = r->opt.config->replication;
    uint32_t self_at = rf;
    for (uint32_t i = 0; i < rf; i++)
        if (replica(r, s->shard, i) == r->opt.self)
            self_at = i;
    if (self_at == rf)
        return replica(r, s->shard, s->tries);
    return replica(r, s->shard, self_at + s->tries);
}

static void sub_send(struct rpc_sub *s, uint32_t node_id)
{
    struct rpc *r = s->r;
    struct node *n = node_by_id(r, node_id);
    uint64_t now = uv_now(r->loop);
    s->retry_at = 0;
    if (n == NULL || n->state == NODE_CLOSING ||
        (n->state == NODE_IDLE && now < n->reconnect_at)) {
        s->tries++;
        s->retry_at = now + RPC_BACKOFF_MIN_MS;
        return;
    }
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct proto_subscribe m = {.shard = s->shard, .from_index = s->want};
    proto_encode_subscribe(&b, 0, &m);
    s->p.req_id = ++r->next_req_id; /* before the put: see call_send */
    if (ch_wbuf_error(&b) || node_write(n, b.data, b.len, s->p.req_id) != 0 ||
        ch_map_put(&n->pending, &s->p.req_id, sizeof s->p.req_id, s) != 0) {
        s->p.req_id = 0;
        s->retry_at = now + RPC_BACKOFF_MIN_MS;
    } else {
        s->p.node = n;
    }
    ch_wbuf_free(&b);
}

static void sub_detach(struct rpc_sub *s)
{
    s->live = 0;
    if (s->p.node != NULL) {
        ch_map_del(&s->p.node->pending, &s->p.req_id, sizeof s->p.req_id);
        s->p.node = NULL;
        s->p.req_id = 0;
    }
}

static void on_sub_frame(struct rpc_sub *s, struct node *n, const struct proto_frame *f)
{
    struct rpc *r = s->r;
    struct ch_rbuf body;
    ch_rbuf_init(&body, f->body.ptr, f->body.len);
    if (f->type == PROTO_STREAM) {
        struct proto_stream m;
        if (proto_decode_stream(&body, &m) != 0 || m.shard != s->shard) {
            node_fail(n, "malformed stream frame");
            return;
        }
        s->tries = 0;
        s->backoff = 0;
        if (m.index < s->want)
            return; /* replayed by a replica we moved to: already seen */
        s->want = m.index + 1;
        s->on_entry(s->data, s->shard, m.index, body.p, body.left,
                    m.n_events);
        return;
    }
    if (f->type == PROTO_SUBSCRIBED) {
        struct proto_subscribed m;
        if (proto_decode_subscribed(&body, &m) != 0 || m.shard != s->shard) {
            node_fail(n, "malformed subscribed frame");
            return;
        }
        /* "From the next entry" is now a definite index: a resubscription after a
         * break must resume there, not at whatever is next by then. */
        if (s->want == 0)
            s->want = m.next_index;
        s->live = 1;
        if (m.leader_hint != 0 && known_node(r, m.leader_hint))
            r->leader[s->shard] = m.leader_hint; /* the tick moves there if it is not n */
        CH_DEBUG((int)s->shard, "rpc: following the committed stream on node %u from %llu",
                 n->id, (unsigned long long)s->want);
        return;
    }
    /* An error ends this subscription on that node. */
    struct proto_error e;
    memset(&e, 0, sizeof e);
    if (f->type == PROTO_ERROR)
        proto_decode_error(&body, &e);
    sub_detach(s);
    uint64_t now = uv_now(r->loop);
    if (e.err == CH_ETOOOLD && e.extra > s->want) {
        /* The store no longer has what we wanted: resume at its oldest entry and
         * let the subscriber re-read the conversations it follows. */
        uint64_t at = e.extra;
        s->want = at;
        s->on_gap(s->data, s->shard, at);
        s->retry_at = now;
        return;
    }
    s->tries++;
    s->backoff = s->backoff ? s->backoff * 2 : RPC_BACKOFF_MIN_MS;
    if (s->backoff > RPC_BACKOFF_MAX_MS)
        s->backoff = RPC_BACKOFF_MAX_MS;
    s->retry_at = now + s->backoff;
}

int rpc_subscribe(struct rpc *r, uint32_t shard, uint64_t from_index,
                  void (*on_entry)(void *data, uint32_t shard, uint64_t index,
                                   const uint8_t *events, size_t len, uint32_t n_events),
                  void (*on_gap)(void *data, uint32_t shard, uint64_t resumed_at),
                  void *data, struct rpc_sub **out)
{
    if (shard >= r->opt.config->n_shards)
        return CH_EINVAL;
    struct rpc_sub *s = calloc(1, sizeof *s);
    if (s == NULL)
        return CH_ENOMEM;
    s->p.kind = PEND_SUB;
    s->r = r;
    s->shard = shard;
    s->want = from_index;
    s->on_entry = on_entry;
    s->on_gap = on_gap;
    s->data = data;
    s->next = r->subs;
    r->subs = s;
    sub_send(s, sub_target(s));
    if (out)
        *out = s;
    return 0;
}

/* Follows the shard's stream on its leader instead: the old replica is told to
 * stop (frames it sent meanwhile carry the old request id and are dropped) and
 * the new one replays from the next wanted index, so nothing is missed or seen
 * twice. */
static void sub_move(struct rpc_sub *s, uint32_t leader)
{
    struct node *old = s->p.node;
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    struct proto_unsubscribe m = {.shard = s->shard, .sub_id = s->p.req_id};
    proto_encode_unsubscribe(&b, 0, &m);
    if (!ch_wbuf_error(&b))
        node_write(old, b.data, b.len, 0);
    ch_wbuf_free(&b);
    sub_detach(s);
    s->moved_at = uv_now(s->r->loop);
    s->tries = 0;
    sub_send(s, leader);
}

int rpc_sub_started(const struct rpc_sub *s)
{
    return s->want != 0;
}

uint64_t rpc_sub_position(const struct rpc_sub *s)
{
    return s->want ? s->want - 1 : 0;
}

/* ---- the tick ---------------------------------------------------------------------- */

static void tick_cb(uv_timer_t *t)
{
    struct rpc *r = t->data;
    uint64_t now = uv_now(r->loop);
    for (struct call *c = r->calls, *next; c != NULL; c = next) {
        next = c->next;
        if (now >= c->deadline) {
            call_finish(c, c->delivered ? CH_ETIMEOUT : CH_EUNAVAILABLE, NULL);
            continue;
        }
        if (c->p.node != NULL && now >= c->attempt_deadline) {
            /* no answer from that node in time: it may be partitioned */
            ch_map_del(&c->p.node->pending, &c->p.req_id, sizeof c->p.req_id);
            c->p.node = NULL;
            c->p.req_id = 0;
            call_retry(c, 0);
            continue;
        }
        if (c->p.node == NULL && c->retry_at != 0 && now >= c->retry_at)
            call_send(c, call_target(c, c->next_node));
        else if (c->p.node == NULL && c->retry_at == 0)
            c->retry_at = now; /* orphaned by an allocation failure: resend next tick */
    }
    for (struct rpc_sub *s = r->subs; s != NULL; s = s->next) {
        if (s->p.node == NULL && (s->retry_at == 0 || now >= s->retry_at)) {
            sub_send(s, sub_target(s));
            continue;
        }
        uint32_t leader = r->leader[s->shard];
        if (s->live && leader != 0 && leader != s->p.node->id && s->want != 0 &&
            now - s->moved_at >= 1000 && known_node(r, leader) &&
            node_usable(r, leader))
            sub_move(s, leader);
    }
    for (uint32_t i = 0; i < r->n_nodes; i++) {
        struct node *n = &r->nodes[i];
        if (n->state == NODE_IDLE && n->out.len > 0)
            node_connect(n);
    }
}

/* ---- lifetime ---------------------------------------------------------------------- */

void rpc_sync_nodes(struct rpc *r)
{
    const struct cluster_config *cfg = r->opt.config;
    while (r->n_nodes < cfg->n_nodes && r->n_nodes < CLUSTER_MAX_NODES) {
        struct node *n = &r->nodes[r->n_nodes];
        const struct cluster_node *cn = &cfg->nodes[r->n_nodes];
        n->r = r;
        n->id = cn->id;
        uv_ip4_addr(cn->client.host, cn->client.port, &n->addr);
        ch_wbuf_init(&n->out);
        ch_map_init(&n->pending);
        r->n_nodes++;
    }
}

int rpc_open(uv_loop_t *loop, const struct rpc_options *opt, struct rpc **out)
{
    struct rpc *r = calloc(1, sizeof *r);
    if (r == NULL)
        return CH_ENOMEM;
    r->loop = loop;
    r->opt = *opt;
    /* Room for every node a placement change may add (rpc_sync_nodes): entries
     * hold uv handles and must never move. */
    r->nodes = calloc(CLUSTER_MAX_NODES, sizeof *r->nodes);
    r->leader = calloc(opt->config->n_shards + 1, sizeof *r->leader);
    if (r->nodes == NULL || r->leader == NULL) {
        free(r->nodes);
        free(r->leader);
        free(r);
        return CH_ENOMEM;
    }
    rpc_sync_nodes(r);
    uv_timer_init(loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, tick_cb, RPC_TICK_MS, RPC_TICK_MS);
    uv_check_init(loop, &r->flush);
    r->flush.data = r;
    uv_check_start(&r->flush, flush_cb);
    r->handles_open = 2;
    *out = r;
    return 0;
}

static void own_handle_closed(uv_handle_t *h)
{
    handle_gone(h->data);
}

void rpc_close(struct rpc *r, void (*cb)(void *data), void *data)
{
    r->closing = 1;
    r->close_cb = cb;
    r->close_data = data;
    /* a call some store may have received has an unknown outcome, not a failed one */
    while (r->calls != NULL)
        call_finish(r->calls, r->calls->delivered ? CH_ETIMEOUT : CH_ESHUTDOWN, NULL);
    for (struct rpc_sub *s = r->subs, *next; s != NULL; s = next) {
        next = s->next;
        sub_detach(s);
        free(s);
    }
    r->subs = NULL;
    for (uint32_t i = 0; i < r->n_nodes; i++) {
        struct node *n = &r->nodes[i];
        if (n->state == NODE_CONNECTING || n->state == NODE_UP) {
            n->state = NODE_CLOSING;
            uv_close((uv_handle_t *)&n->tcp, node_closed_cb);
        }
    }
    uv_close((uv_handle_t *)&r->tick, own_handle_closed);
    uv_close((uv_handle_t *)&r->flush, own_handle_closed);
}

void rpc_publish(struct rpc *r, const uint8_t *frame, size_t len)
{
    for (uint32_t i = 0; i < r->n_nodes; i++) {
        struct node *n = &r->nodes[i];
        if (n->id == r->opt.self || n->state == NODE_CLOSING)
            continue;
        if (n->state == NODE_IDLE && uv_now(r->loop) < n->reconnect_at)
            continue;
        node_write(n, frame, len, 0);
    }
}

void rpc_on_connect(struct rpc *r, void (*fn)(void *data, uint32_t node), void *data)
{
    r->connect_fn = fn;
    r->connect_data = data;
}

void rpc_stats(const struct rpc *r, struct rpc_stats *st)
{
    *st = r->stats;
}
