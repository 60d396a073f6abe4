/*
 * `chorusctl debug load`: a pipelined append load with Jepsen-style retries.
 *
 * Creates C group conversations, then posts M messages round-robin over them
 * with up to W requests in flight, each routed to its shard's leader.  Every
 * message has a unique client_msg_id; a timeout, a lost connection, not_leader
 * or unavailable requeue it with the same id, so a retry of a message that was
 * in fact committed returns its first seq (dup) instead of appending it twice.
 * Each ack is written as a JSON line; the summary reports throughput and ack
 * latency (first send to ack).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../common/hash.h"
#include "client.h"
#include "ctl.h"

#define LOAD_REQUEST_TIMEOUT_MS 3000
#define LOAD_RETRY_DELAY_MS 50

enum { MSG_PENDING, MSG_INFLIGHT, MSG_ACKED, MSG_FAILED };

struct msg {
    uint8_t state;
    uint32_t attempts;
    uint64_t first_send_us;
    uint64_t ready_at;
    uint64_t seq;
    uint64_t req_id; /* of the attempt in flight */
};

struct slot {
    uint64_t req_id; /* map key */
    uint32_t msg;
    uint32_t node;
    uint64_t sent_ms;
    int used;
};

struct load {
    struct cc c;
    const struct cluster_config *cfg;
    uint32_t n_convs, n_members, size;
    uint64_t n_msgs, seed;
    uint64_t *convs;
    struct msg *msgs;
    struct slot *slots;
    uint32_t window, inflight;
    struct ch_map by_req;
    uint64_t *queue; /* ring of message indices waiting to be sent */
    uint64_t q_head, q_len, q_cap;
    uint64_t acked, failed, retries, dups;
    uint64_t *latency_us;
    FILE *out;
    struct ch_wbuf frame, batch;
    char body[65536];
};

static void user_name(char *buf, size_t len, uint64_t i)
{
    snprintf(buf, len, "u%" PRIu64, i);
}

static void enqueue(struct load *l, uint64_t m, uint64_t delay_ms)
{
    l->msgs[m].state = MSG_PENDING;
    l->msgs[m].ready_at = cc_now_ms() + delay_ms;
    l->queue[(l->q_head + l->q_len) % l->q_cap] = m;
    l->q_len++;
}

static void slot_free(struct load *l, struct slot *s)
{
    ch_map_del(&l->by_req, &s->req_id, sizeof s->req_id);
    s->used = 0;
    l->inflight--;
}

static struct slot *slot_alloc(struct load *l)
{
    for (uint32_t i = 0; i < l->window; i++)
        if (!l->slots[i].used)
            return &l->slots[i];
    return NULL;
}

static uint32_t pick(struct load *l, uint32_t shard, uint32_t attempt)
{
    if (l->c.leader[shard] != 0 && attempt % 4 != 3)
        return l->c.leader[shard];
    return l->cfg->replicas[shard * l->cfg->replication + attempt % l->cfg->replication];
}

static int send_one(struct load *l, uint64_t m)
{
    struct msg *msg = &l->msgs[m];
    uint64_t conv = l->convs[m % l->n_convs];
    uint32_t shard = cluster_shard_of_conv(conv, l->cfg->n_shards);
    char actor[32], cmid[64];
    user_name(actor, sizeof actor, m % l->n_members);
    snprintf(cmid, sizeof cmid, "load-%" PRIu64 "-%" PRIu64, l->seed, m);
    int prefix = snprintf(l->body, sizeof l->body, "m%" PRIu64 " ", m);
    size_t blen = l->size > (uint32_t)prefix ? l->size : (size_t)prefix;
    struct clog_cmd cmd = {
        .op = CLOG_OP_POST,
        .conv = conv,
        .actor = ch_slice_str(actor),
        .client_msg_id = ch_slice_str(cmid),
        .body = {(const uint8_t *)l->body, blen},
    };
    ch_wbuf_reset(&l->batch);
    ch_wbuf_reset(&l->frame);
    clog_batch_add(&l->batch, &cmd);
    struct slot *s = slot_alloc(l);
    s->req_id = cc_req_id(&l->c);
    struct proto_submit sm = {.n_cmds = 1, .cmds = {l->batch.data, l->batch.len}};
    proto_encode_submit(&l->frame, s->req_id, &sm);
    uint32_t node = pick(l, shard, msg->attempts);
    msg->attempts++;
    if (msg->attempts > 1)
        l->retries++;
    if (msg->first_send_us == 0)
        msg->first_send_us = cc_now_us();
    if (cc_send(&l->c, node, &l->frame) != 0) {
        l->c.leader[shard] = 0;
        enqueue(l, m, LOAD_RETRY_DELAY_MS);
        return 0;
    }
    s->msg = (uint32_t)m;
    s->node = node;
    s->sent_ms = cc_now_ms();
    s->used = 1;
    msg->state = MSG_INFLIGHT;
    msg->req_id = s->req_id;
    l->inflight++;
    if (ch_map_put(&l->by_req, &s->req_id, sizeof s->req_id, s) != 0)
        return CH_ENOMEM;
    return 0;
}

static void on_reply(struct load *l, const struct cc_reply *r)
{
    struct slot *s = ch_map_get(&l->by_req, &r->f.req_id, sizeof r->f.req_id);
    if (s == NULL)
        return; /* a reply to an attempt we already gave up on */
    uint64_t m = s->msg;
    uint32_t shard = cluster_shard_of_conv(l->convs[m % l->n_convs], l->cfg->n_shards);
    slot_free(l, s);
    struct msg *msg = &l->msgs[m];
    struct ch_rbuf body;
    ch_rbuf_init(&body, r->f.body.ptr, r->f.body.len);
    struct proto_submit_reply sr;
    struct proto_result res;
    if (r->f.type != PROTO_SUBMIT_REPLY || proto_decode_submit_reply(&body, &sr) != 0 ||
        sr.n_results != 1 || proto_get_result(&body, &res) != 0) {
        enqueue(l, m, LOAD_RETRY_DELAY_MS);
        return;
    }
    switch (res.err) {
    case 0:
        if (msg->state == MSG_ACKED)
            return;
        msg->state = MSG_ACKED;
        msg->seq = res.seq;
        l->dups += res.dup;
        l->latency_us[l->acked++] = cc_now_us() - msg->first_send_us;
        l->c.leader[shard] = r->node;
        if (l->out) {
            char actor[32], cmid[64];
            user_name(actor, sizeof actor, m % l->n_members);
            snprintf(cmid, sizeof cmid, "load-%" PRIu64 "-%" PRIu64, l->seed, m);
            fprintf(l->out,
                    "{\"conv\":%" PRIu64 ",\"cmid\":\"%s\",\"actor\":\"%s\",\"seq\":%" PRIu64
                    ",\"ts\":%" PRIu64 ",\"dup\":%s,\"body\":\"m%" PRIu64 "\"}\n",
                    l->convs[m % l->n_convs], cmid, actor, res.seq, res.ts,
                    res.dup ? "true" : "false", m);
        }
        return;
    case CH_ENOTLEADER:
    case CH_EUNAVAILABLE:
    case CH_ESHUTDOWN:
    case CH_ENOSHARD:
        /* a fresh hint is followed at once; no hint (or "ask me") waits a little */
        l->c.leader[shard] = res.leader_hint;
        enqueue(l, m,
                res.leader_hint && res.leader_hint != r->node ? 0 : LOAD_RETRY_DELAY_MS);
        return;
    default:
        fprintf(stderr, "message %" PRIu64 ": %s (%s)\n", m, ch_errcode(res.err),
                ch_strerror(res.err));
        msg->state = MSG_FAILED;
        l->failed++;
        return;
    }
}

/* A connection failed: everything in flight on it is retried. */
static void on_node_lost(struct load *l, uint32_t node)
{
    for (uint32_t i = 0; i < l->window; i++) {
        struct slot *s = &l->slots[i];
        if (s->used && s->node == node) {
            uint32_t m = s->msg;
            slot_free(l, s);
            enqueue(l, m, LOAD_RETRY_DELAY_MS);
        }
    }
    for (uint32_t s = 0; s < l->cfg->n_shards; s++)
        if (l->c.leader[s] == node)
            l->c.leader[s] = 0;
}

static void expire(struct load *l)
{
    uint64_t now = cc_now_ms();
    for (uint32_t i = 0; i < l->window; i++) {
        struct slot *s = &l->slots[i];
        if (s->used && now - s->sent_ms > LOAD_REQUEST_TIMEOUT_MS) {
            uint32_t m = s->msg;
            uint32_t shard =
                cluster_shard_of_conv(l->convs[m % l->n_convs], l->cfg->n_shards);
            if (l->c.leader[shard] == s->node)
                l->c.leader[shard] = 0;
            slot_free(l, s);
            enqueue(l, m, 0);
        }
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int create_convs(struct load *l)
{
    struct ch_wbuf members;
    ch_wbuf_init(&members);
    size_t at = clog_members_begin(&members);
    char name[32];
    for (uint32_t i = 0; i < l->n_members; i++) {
        user_name(name, sizeof name, i);
        clog_members_put(&members, ch_slice_str(name), CLOG_ROLE_MEMBER);
    }
    clog_members_end(&members, at, l->n_members);
    int rv = 0;
    for (uint32_t i = 0; i < l->n_convs && rv == 0; i++) {
        user_name(name, sizeof name, 0);
        char title[48];
        snprintf(title, sizeof title, "load %" PRIu64 "/%u", l->seed, i);
        struct clog_cmd cmd = {
            .op = CLOG_OP_CREATE,
            .kind = CLOG_GROUP,
            .conv = l->convs[i],
            .actor = ch_slice_str(name),
            .name = ch_slice_str(title),
            .members = {members.data, members.len},
        };
        struct proto_result res;
        rv = cc_submit(&l->c, &cmd, 1, &res);
        if (rv == 0 && res.err != 0)
            rv = res.err;
        if (rv != 0)
            fprintf(stderr, "create conversation %" PRIu64 ": %s (%s)\n", l->convs[i],
                    ch_errcode(rv), ch_strerror(rv));
    }
    ch_wbuf_free(&members);
    return rv;
}

int ctl_load(struct ctl_env *env, int argc, char **argv)
{
    uint64_t convs = 10, msgs = 1000, window = 64, members = 3, size = 64, seed = 1;
    uint64_t deadline_s = 300;
    const char *out = NULL;
    for (int i = 0; i < argc; i++) {
        uint64_t *dst = NULL;
        if (strcmp(argv[i], "--convs") == 0)
            dst = &convs;
        else if (strcmp(argv[i], "--messages") == 0)
            dst = &msgs;
        else if (strcmp(argv[i], "--window") == 0)
            dst = &window;
        else if (strcmp(argv[i], "--members") == 0)
            dst = &members;
        else if (strcmp(argv[i], "--size") == 0)
            dst = &size;
        else if (strcmp(argv[i], "--seed") == 0)
            dst = &seed;
        else if (strcmp(argv[i], "--deadline") == 0)
            dst = &deadline_s;
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
            continue;
        }
        char *end;
        if (dst == NULL || i + 1 >= argc || (*dst = strtoull(argv[i + 1], &end, 10), *end)) {
            fprintf(stderr, "chorusctl debug load: bad option %s\n", argv[i]);
            return CTL_USAGE;
        }
        i++;
    }
    if (convs == 0 || convs > 1000000 || msgs == 0 || msgs > 100000000 || window == 0 ||
        window > 65536 || members == 0 || members > 100000 || size > 65000) {
        fprintf(stderr, "chorusctl debug load: option out of range\n");
        return CTL_USAGE;
    }
    struct cluster_config cfg;
    int rv = ctl_load_config(env, &cfg);
    if (rv)
        return rv;
    struct load *l = calloc(1, sizeof *l);
    if (l == NULL || cc_init(&l->c, &cfg) != 0)
        return CTL_FAILED;
    l->cfg = &cfg;
    l->n_convs = (uint32_t)convs;
    l->n_msgs = msgs;
    l->window = (uint32_t)window;
    l->n_members = (uint32_t)members;
    l->size = (uint32_t)size;
    l->seed = seed;
    l->convs = calloc(convs, sizeof *l->convs);
    l->msgs = calloc(msgs, sizeof *l->msgs);
    l->slots = calloc(window, sizeof *l->slots);
    l->q_cap = msgs;
    l->queue = calloc(msgs, sizeof *l->queue);
    l->latency_us = calloc(msgs, sizeof *l->latency_us);
    ch_map_init(&l->by_req);
    ch_wbuf_init(&l->frame);
    ch_wbuf_init(&l->batch);
    memset(l->body, 'x', sizeof l->body);
    if (!l->convs || !l->msgs || !l->slots || !l->queue || !l->latency_us) {
        fprintf(stderr, "out of memory\n");
        return CTL_FAILED;
    }
    for (uint64_t i = 0; i < convs; i++)
        l->convs[i] = ch_mix64(seed * 0x9e3779b97f4a7c15ULL + i + 1) | 1;
    if (out && (l->out = fopen(out, "w")) == NULL) {
        perror(out);
        return CTL_FAILED;
    }
    rv = create_convs(l);
    uint64_t start = cc_now_ms(), end = start + deadline_s * 1000, last_report = start;
    for (uint64_t m = 0; m < msgs; m++)
        enqueue(l, m, 0);
    while (rv == 0 && l->acked + l->failed < msgs && cc_now_ms() < end) {
        /* fill the window with messages whose retry delay has passed */
        uint64_t scan = l->q_len;
        while (l->inflight < l->window && scan-- > 0) {
            uint64_t m = l->queue[l->q_head];
            l->q_head = (l->q_head + 1) % l->q_cap;
            l->q_len--;
            if (l->msgs[m].ready_at > cc_now_ms()) {
                l->queue[(l->q_head + l->q_len) % l->q_cap] = m;
                l->q_len++;
                continue;
            }
            if ((rv = send_one(l, m)) != 0)
                break;
        }
        struct cc_reply r;
        int err = cc_recv(&l->c, l->inflight ? 20 : 5, &r);
        if (err == 0)
            on_reply(l, &r);
        else if (err == CH_EIO)
            on_node_lost(l, r.node);
        expire(l);
        uint64_t now = cc_now_ms();
        if (now - last_report >= 1000) {
            fprintf(stderr, "\rload: %" PRIu64 "/%" PRIu64 " acked, %u in flight, %" PRIu64
                            " retries",
                    l->acked, msgs, l->inflight, l->retries);
            last_report = now;
        }
    }
    uint64_t elapsed = cc_now_ms() - start;
    fprintf(stderr, "\r");
    if (l->out)
        fclose(l->out);
    qsort(l->latency_us, l->acked, sizeof *l->latency_us, cmp_u64);
#define PCT(p) (l->acked ? l->latency_us[(size_t)((double)(l->acked - 1) * (p))] : 0)
    double rate = elapsed ? (double)l->acked * 1000.0 / (double)elapsed : 0;
    if (env->json)
        printf("{\"acked\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"unacked\":%" PRIu64
               ",\"retries\":%" PRIu64 ",\"dups\":%" PRIu64 ",\"elapsed_ms\":%" PRIu64
               ",\"acked_per_s\":%.0f,\"ack_p50_us\":%" PRIu64 ",\"ack_p99_us\":%" PRIu64
               ",\"ack_max_us\":%" PRIu64 "}\n",
               l->acked, l->failed, msgs - l->acked - l->failed, l->retries, l->dups, elapsed,
               rate, PCT(0.5), PCT(0.99), PCT(1.0));
    else
        printf("load: %" PRIu64 " acked, %" PRIu64 " failed, %" PRIu64 " never acked in %.2fs"
               " (%.0f msg/s); ack latency p50 %.2f ms p99 %.2f ms max %.2f ms; %" PRIu64
               " retries, %" PRIu64 " dups\n",
               l->acked, l->failed, msgs - l->acked - l->failed, (double)elapsed / 1000.0,
               rate, (double)PCT(0.5) / 1000.0, (double)PCT(0.99) / 1000.0,
               (double)PCT(1.0) / 1000.0, l->retries, l->dups);
#undef PCT
    int ok = rv == 0 && l->acked == msgs;
    cc_close(&l->c);
    ch_map_free(&l->by_req);
    ch_wbuf_free(&l->frame);
    ch_wbuf_free(&l->batch);
    free(l->convs);
    free(l->msgs);
    free(l->slots);
    free(l->queue);
    free(l->latency_us);
    free(l);
    cluster_config_free(&cfg);
    return ok ? CTL_OK : CTL_FAILED;
}
