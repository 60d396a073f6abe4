/* Blocking store-RPC client (see client.h). */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../common/error.h"

#define CC_CONNECT_TIMEOUT_MS 2000
#define CC_CALL_TIMEOUT_MS 5000
#define CC_RECONNECT_DELAY_MS 100

uint64_t cc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t cc_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int cc_init(struct cc *c, const struct cluster_config *cfg)
{
    memset(c, 0, sizeof *c);
    c->cfg = cfg;
    c->deadline_ms = 10000;
    for (int i = 0; i < CLUSTER_MAX_NODES; i++)
        c->conns[i].fd = -1;
    c->leader = calloc(cfg->n_shards + 1, sizeof *c->leader); /* + the meta group */
    ch_wbuf_init(&c->frame);
    return c->leader ? 0 : CH_ENOMEM;
}

void cc_close(struct cc *c)
{
    for (int i = 0; i < CLUSTER_MAX_NODES; i++) {
        if (c->conns[i].fd >= 0)
            close(c->conns[i].fd);
        free(c->conns[i].in);
    }
    free(c->leader);
    ch_wbuf_free(&c->frame);
}

int cc_node_index(const struct cc *c, uint32_t node)
{
    for (uint32_t i = 0; i < c->cfg->n_nodes; i++)
        if (c->cfg->nodes[i].id == node)
            return (int)i;
    return -1;
}

void cc_drop(struct cc *c, uint32_t node)
{
    int i = cc_node_index(c, node);
    if (i < 0 || c->conns[i].fd < 0)
        return;
    close(c->conns[i].fd);
    c->conns[i].fd = -1;
    c->conns[i].in_len = 0;
    c->conns[i].retry_at = cc_now_ms() + CC_RECONNECT_DELAY_MS;
}

static int dial(const struct cluster_addr *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(a->port);
    inet_pton(AF_INET, a->host, &sin.sin_addr);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int rv = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    if (rv != 0 && errno == EINPROGRESS) {
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, CC_CONNECT_TIMEOUT_MS) == 1) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            rv = err == 0 ? 0 : -1;
        }
    }
    if (rv != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, flags);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static struct cc_conn *conn_for(struct cc *c, uint32_t node, int *err)
{
    int i = cc_node_index(c, node);
    if (i < 0) {
        *err = CH_EINVAL;
        return NULL;
    }
    struct cc_conn *cn = &c->conns[i];
    if (cn->fd >= 0)
        return cn;
    if (cc_now_ms() < cn->retry_at) {
        *err = CH_EUNAVAILABLE;
        return NULL;
    }
    cn->fd = dial(&c->cfg->nodes[i].client);
    if (cn->fd < 0) {
        cn->retry_at = cc_now_ms() + CC_RECONNECT_DELAY_MS;
        *err = CH_EUNAVAILABLE;
        return NULL;
    }
    cn->in_len = 0;
    return cn;
}

int cc_send(struct cc *c, uint32_t node, const struct ch_wbuf *frame)
{
    int err = 0;
    struct cc_conn *cn = conn_for(c, node, &err);
    if (cn == NULL)
        return err;
    size_t off = 0;
    while (off < frame->len) {
        ssize_t n = send(cn->fd, frame->data + off, frame->len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            cc_drop(c, node);
            return CH_EIO;
        }
        off += (size_t)n;
    }
    return 0;
}

/* Moves one complete frame from a connection's input into c->frame, if any. */
static int take_frame(struct cc *c, struct cc_conn *cn, uint32_t node, struct cc_reply *r)
{
    struct proto_frame f;
    long n = proto_frame_parse(cn->in, cn->in_len, PROTO_DEFAULT_MAX_FRAME * 4, &f);
    if (n == 0)
        return 0;
    if (n < 0)
        return -1;
    ch_wbuf_reset(&c->frame);
    ch_put_raw(&c->frame, cn->in, (size_t)n);
    if (ch_wbuf_error(&c->frame))
        return -1;
    memmove(cn->in, cn->in + n, cn->in_len - (size_t)n);
    cn->in_len -= (size_t)n;
    r->node = node;
    r->f = f;
    r->f.body.ptr = c->frame.data + PROTO_HEADER_SIZE;
    return 1;
}

int cc_recv(struct cc *c, int timeout_ms, struct cc_reply *r)
{
    uint64_t end = cc_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        /* a frame already buffered? */
        for (uint32_t i = 0; i < c->cfg->n_nodes; i++) {
            struct cc_conn *cn = &c->conns[i];
            if (cn->fd < 0)
                continue;
            int got = take_frame(c, cn, c->cfg->nodes[i].id, r);
            if (got < 0) {
                r->node = c->cfg->nodes[i].id;
                cc_drop(c, r->node);
                return CH_EIO;
            }
            if (got > 0)
                return 0;
        }
        struct pollfd fds[CLUSTER_MAX_NODES];
        int idx[CLUSTER_MAX_NODES];
        int nfds = 0;
        for (uint32_t i = 0; i < c->cfg->n_nodes; i++) {
            if (c->conns[i].fd < 0)
                continue;
            fds[nfds].fd = c->conns[i].fd;
            fds[nfds].events = POLLIN;
            fds[nfds].revents = 0;
            idx[nfds++] = (int)i;
        }
        uint64_t now = cc_now_ms();
        if (now >= end && timeout_ms >= 0)
            return CH_ETIMEOUT;
        if (nfds == 0) {
            sleep_ms((unsigned)(end - now > 10 ? 10 : end - now));
            continue;
        }
        int rv = poll(fds, (nfds_t)nfds, (int)(end - now));
        if (rv < 0 && errno == EINTR)
            continue;
        if (rv <= 0)
            return CH_ETIMEOUT;
        for (int k = 0; k < nfds; k++) {
            if (!(fds[k].revents & (POLLIN | POLLERR | POLLHUP)))
                continue;
            struct cc_conn *cn = &c->conns[idx[k]];
            if (cn->in_cap - cn->in_len < 65536) {
                size_t cap = cn->in_cap ? cn->in_cap * 2 : 131072;
                uint8_t *p = realloc(cn->in, cap);
                if (p == NULL)
                    return CH_ENOMEM;
                cn->in = p;
                cn->in_cap = cap;
            }
            ssize_t n = recv(cn->fd, cn->in + cn->in_len, cn->in_cap - cn->in_len, 0);
            if (n <= 0 && !(n < 0 && errno == EINTR)) {
                r->node = c->cfg->nodes[idx[k]].id;
                cc_drop(c, r->node);
                return CH_EIO;
            }
            if (n > 0)
                cn->in_len += (size_t)n;
        }
    }
}

int cc_call(struct cc *c, uint32_t node, const struct ch_wbuf *frame, uint64_t req_id,
            int timeout_ms, struct cc_reply *r)
{
    int rv = cc_send(c, node, frame);
    if (rv != 0)
        return rv;
    uint64_t end = cc_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = cc_now_ms();
        if (now >= end) {
            cc_drop(c, node); /* the late reply must not be mistaken for another */
            return CH_ETIMEOUT;
        }
        rv = cc_recv(c, (int)(end - now), r);
        if (rv == CH_EIO && r->node == node)
            return CH_EIO;
        if (rv == 0 && r->node == node && r->f.req_id == req_id)
            return 0;
        if (rv == CH_ETIMEOUT) {
            cc_drop(c, node);
            return rv;
        }
    }
}

/* The node to try for a shard: the cached leader, else its replicas in turn. */
static uint32_t pick_node(struct cc *c, uint32_t shard, unsigned attempt)
{
    if (c->leader[shard] != 0 && attempt % 4 != 3)
        return c->leader[shard];
    if (shard == c->cfg->n_shards) /* the meta group */
        return c->cfg->meta[attempt % c->cfg->n_meta];
    uint32_t R = c->cfg->replication;
    return c->cfg->replicas[shard * R + attempt % R];
}

static void backoff(unsigned attempt)
{
    unsigned ms = 20u << (attempt < 5 ? attempt : 5);
    sleep_ms(ms > 500 ? 500 : ms);
}

int cc_route_call(struct cc *c, struct ch_wbuf *frame, uint32_t shard, uint32_t node,
                  struct cc_reply *r)
{
    uint64_t end = cc_now_ms() + (uint64_t)c->deadline_ms;
    for (unsigned attempt = 0;; attempt++) {
        if (attempt > 0) {
            if (cc_now_ms() >= end)
                return CH_EUNAVAILABLE;
            backoff(attempt);
        }
        uint32_t target = node ? node : pick_node(c, shard, attempt);
        uint64_t id = cc_req_id(c);
        for (int k = 0; k < 8; k++) /* patch the request id in place */
            frame->data[8 + k] = (uint8_t)(id >> (8 * k));
        int rv = cc_call(c, target, frame, id, CC_CALL_TIMEOUT_MS, r);
        if (rv != 0) {
            if (!node)
                c->leader[shard] = 0;
            if (node && attempt >= 2)
                return CH_EUNAVAILABLE;
            continue;
        }
        if (r->f.type != PROTO_ERROR) {
            if (!node)
                c->leader[shard] = target;
            return 0;
        }
        struct ch_rbuf body;
        ch_rbuf_init(&body, r->f.body.ptr, r->f.body.len);
        struct proto_error e;
        if (proto_decode_error(&body, &e) != 0)
            return CH_EMALFORMED;
        if (node)
            return e.err;
        if (e.err == CH_ENOTLEADER || e.err == CH_EUNAVAILABLE || e.err == CH_ESHUTDOWN ||
            e.err == CH_ENOSHARD) {
            c->leader[shard] = e.leader_hint;
            continue;
        }
        return e.err;
    }
}

int cc_submit(struct cc *c, const struct clog_cmd *cmds, uint32_t n,
              struct proto_result *results)
{
    if (n == 0)
        return 0;
    uint32_t shard = cluster_shard_of_cmd(&cmds[0], c->cfg->n_shards);
    struct ch_wbuf batch, frame;
    ch_wbuf_init(&batch);
    ch_wbuf_init(&frame);
    for (uint32_t i = 0; i < n; i++)
        clog_batch_add(&batch, &cmds[i]);
    struct proto_submit m = {.n_cmds = n, .cmds = {batch.data, batch.len}};
    proto_encode_submit(&frame, 0, &m);
    int rv = ch_wbuf_error(&batch) || ch_wbuf_error(&frame) ? CH_ENOMEM : 0;
    uint64_t end = cc_now_ms() + (uint64_t)c->deadline_ms;
    for (unsigned attempt = 0; rv == 0; attempt++) {
        if (attempt > 0) {
            if (cc_now_ms() >= end) {
                rv = CH_EUNAVAILABLE;
                break;
            }
            backoff(attempt);
        }
        struct cc_reply r;
        int saved = c->deadline_ms;
        c->deadline_ms = (int)(end > cc_now_ms() ? end - cc_now_ms() : 1);
        rv = cc_route_call(c, &frame, shard, 0, &r);
        c->deadline_ms = saved;
        if (rv != 0)
            break;
        if (r.f.type != PROTO_SUBMIT_REPLY) {
            rv = CH_EMALFORMED;
            break;
        }
        struct ch_rbuf body;
        ch_rbuf_init(&body, r.f.body.ptr, r.f.body.len);
        struct proto_submit_reply sr;
        if (proto_decode_submit_reply(&body, &sr) != 0 || sr.n_results != n) {
            rv = CH_EMALFORMED;
            break;
        }
        int retry = 0;
        for (uint32_t i = 0; i < n && rv == 0; i++) {
            if (proto_get_result(&body, &results[i]) != 0)
                rv = CH_EMALFORMED;
            else if (results[i].err == CH_ENOTLEADER || results[i].err == CH_EUNAVAILABLE ||
                     results[i].err == CH_ESHUTDOWN || results[i].err == CH_ENOSHARD) {
                /* ENOSHARD: that node's replica moved away since we read the map */
                retry = 1;
                c->leader[shard] = results[i].leader_hint;
            }
        }
        if (rv != 0 || !retry)
            break;
        /* Resubmitting everything is safe only because of client_msg_ids or the
         * idempotent nature of the other commands (create, membership, cursors). */
    }
    ch_wbuf_free(&batch);
    ch_wbuf_free(&frame);
    return rv;
}
