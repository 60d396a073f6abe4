/*
 * The replicated placement map: its codec, its commands and their deterministic
 * apply (the state machine of the meta Raft group).
 *
 *   map:     u32 magic "CHP1" | u8 format (1) | u64 version | u32 n_shards |
 *            u32 replication | u32 n_meta | n_meta × u32 id | u32 n_nodes |
 *            n_nodes × node | n_shards × replication × u32 replica |
 *            n_shards × (u32 from, u32 to) | u32 crc32c(every byte before it)
 *   node:    u32 id | u8 state | raft, client, gateway: str16 host, u16 port
 *   command: u8 op, then per op
 *            SEED            bytes32 encoded map
 *            NODE_ADD        u32 id | raft, client, gateway (as in a node)
 *            NODE_SET_STATE  u32 id | u8 state
 *            MOVE_*          u32 shard | u32 from | u32 to
 *
 * The unseeded map (version 0) encodes as version 0 with every count 0, and only
 * that form of version 0 decodes, so a snapshot taken before SEED restores.
 *
 * A seeded map that decodes satisfies the invariants every command preserves, so the
 * decoder and the state machine share one validator: ids unique and non-zero,
 * addresses canonical "a.b.c.d:port" with the raft range [port, port + S] within
 * 65535, no two non-removed nodes sharing a port, R distinct non-removed replicas
 * per shard, moves from a replica to a non-removed non-replica, meta voters known
 * and not removed.  Everything is applied in a fixed order from the command and
 * the current state alone, so every replica of the meta group agrees.
 */
#include "placement.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../common/hash.h"

#define PLACEMENT_MAGIC 0x31504843u /* "CHP1" */
#define PLACEMENT_FORMAT 1
/* A SEED's encoded map: real ones are under 64 KiB (64 nodes, 1024 × 7 replicas). */
#define PLACEMENT_MAX_SEED (4u << 20)
/* magic, format, crc: the shortest input the decoder looks into */
#define PLACEMENT_FRAME (4 + 1 + 4)

/* ---- addresses -------------------------------------------------------------------- */

static const char *const roles[3] = {"raft", "client", "gateway"};

static void node_addrs(const struct cluster_node *n, const struct cluster_addr *out[3])
{
    out[0] = &n->raft;
    out[1] = &n->client;
    out[2] = &n->gateway;
}

static int addr_eq(const struct cluster_addr *a, const struct cluster_addr *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

static int same_addresses(const struct cluster_node *a, const struct cluster_node *b)
{
    return addr_eq(&a->raft, &b->raft) && addr_eq(&a->client, &b->client) &&
           addr_eq(&a->gateway, &b->gateway);
}

/* Is a exactly what cluster_addr_parse produces: a terminated dotted IPv4, port > 0? */
static int addr_valid(const struct cluster_addr *a)
{
    if (a->port == 0 || memchr(a->host, '\0', sizeof a->host) == NULL)
        return 0;
    char text[CLUSTER_HOST_MAX + 8];
    snprintf(text, sizeof text, "%s:%u", a->host, (unsigned)a->port);
    struct cluster_addr back;
    return cluster_addr_parse(text, &back) == 0 && strcmp(back.host, a->host) == 0 &&
           back.port == a->port;
}

/* Do the port ranges [a, a + a_n) and [b, b + b_n) on the same host intersect? */
static int ports_overlap(const struct cluster_addr *a, uint32_t a_n,
                         const struct cluster_addr *b, uint32_t b_n)
{
    return strcmp(a->host, b->host) == 0 && a->port < (uint32_t)b->port + b_n &&
           b->port < (uint32_t)a->port + a_n;
}

/*
 * Do two nodes listen on a common port?  A raft address stands for S + 1 ports,
 * one per shard and the meta group's last.  With a == b, compares the node's own
 * addresses with each other.  *ra / *rb name the roles that collide.
 */
static int nodes_collide(const struct cluster_node *a, const struct cluster_node *b,
                         uint32_t n_shards, int *ra, int *rb)
{
    const struct cluster_addr *aa[3], *bb[3];
    node_addrs(a, aa);
    node_addrs(b, bb);
    const uint32_t width[3] = {n_shards + 1, 1, 1};
    for (int x = 0; x < 3; x++)
        for (int y = a == b ? x + 1 : 0; y < 3; y++)
            if (ports_overlap(aa[x], width[x], bb[y], width[y])) {
                *ra = x;
                *rb = y;
                return 1;
            }
    return 0;
}

/* Checks one node's own addresses; 0 or CH_EINVAL with a message. */
static int check_node_addresses(const struct cluster_node *n, uint32_t n_shards,
                                char *err, size_t errlen)
{
    const struct cluster_addr *aa[3];
    node_addrs(n, aa);
    for (int k = 0; k < 3; k++)
        if (!addr_valid(aa[k]))
            return ch_fail(err, errlen, CH_EINVAL,
                           "node %u: %s address is not \"a.b.c.d:port\"", n->id,
                           roles[k]);
    if ((uint32_t)n->raft.port + n_shards > 65535)
        return ch_fail(
            err, errlen, CH_EINVAL,
            "node %u: raft ports %u..%u (%u shards and the meta group) go beyond "
            "65535",
            n->id, n->raft.port, n->raft.port + n_shards, n_shards);
    int x, y;
    if (nodes_collide(n, n, n_shards, &x, &y))
        return ch_fail(
            err, errlen, CH_EINVAL,
            "node %u: its %s and %s addresses overlap (raft takes ports [port, "
            "port + %u])",
            n->id, roles[x], roles[y], n_shards);
    return 0;
}

/* A copy of n with every byte of the host buffers after the terminator zeroed, so
 * equal nodes are equal bytes.  n's hosts must be terminated (addr_valid). */
static void clean_node(struct cluster_node *dst, const struct cluster_node *n)
{
    memset(dst, 0, sizeof *dst);
    dst->id = n->id;
    struct cluster_addr *d[3] = {&dst->raft, &dst->client, &dst->gateway};
    const struct cluster_addr *s[3];
    node_addrs(n, s);
    for (int k = 0; k < 3; k++) {
        memcpy(d[k]->host, s[k]->host, strnlen(s[k]->host, CLUSTER_HOST_MAX - 1));
        d[k]->port = s[k]->port;
    }
}

/* ---- lookups ---------------------------------------------------------------------- */

static int node_index(const struct placement *p, uint32_t id)
{
    if (id == 0)
        return -1;
    for (uint32_t i = 0; i < p->n_nodes; i++)
        if (p->nodes[i].addr.id == id)
            return (int)i;
    return -1;
}

/* Slot of id in shard s's replica list, or -1. */
static int replica_slot(const struct placement *p, uint32_t shard, uint32_t id)
{
    if (id == 0 || shard >= p->n_shards)
        return -1;
    for (uint32_t i = 0; i < p->replication; i++)
        if (p->replicas[shard * p->replication + i] == id)
            return (int)i;
    return -1;
}

static int is_meta(const struct placement *p, uint32_t id)
{
    for (uint32_t i = 0; i < p->n_meta; i++)
        if (p->meta[i] == id)
            return 1;
    return 0;
}

/* A shard whose move starts or ends at id, or -1. */
static int64_t move_of(const struct placement *p, uint32_t id)
{
    for (uint32_t s = 0; s < p->n_shards; s++)
        if (p->moves[s].to != 0 && (p->moves[s].from == id || p->moves[s].to == id))
            return s;
    return -1;
}

const struct placement_node *placement_node(const struct placement *p, uint32_t id)
{
    int at = node_index(p, id);
    return at < 0 ? NULL : &p->nodes[at];
}

int placement_hosts(const struct placement *p, uint32_t id, uint32_t shard)
{
    if (id == 0 || shard >= p->n_shards)
        return 0;
    return replica_slot(p, shard, id) >= 0 || p->moves[shard].to == id;
}

uint32_t placement_count(const struct placement *p, uint32_t id)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < p->n_shards; s++)
        n += (uint32_t)placement_hosts(p, id, s);
    return n;
}

/* ---- lifetime --------------------------------------------------------------------- */

void placement_init(struct placement *p)
{
    memset(p, 0, sizeof *p);
}

void placement_free(struct placement *p)
{
    free(p->replicas);
    free(p->moves);
    placement_init(p);
}

/* Allocates the replica and move arrays of an S × R map (moves all {0, 0}). */
static int alloc_arrays(struct placement *p, uint32_t n_shards, uint32_t replication)
{
    p->replicas = calloc((size_t)n_shards * replication, sizeof *p->replicas);
    p->moves = calloc(n_shards, sizeof *p->moves);
    if (p->replicas == NULL || p->moves == NULL) {
        placement_free(p);
        return CH_ENOMEM;
    }
    p->n_shards = n_shards;
    p->replication = replication;
    return 0;
}

int placement_from_config(struct placement *p, const struct cluster_config *cfg)
{
    placement_init(p);
    if (alloc_arrays(p, cfg->n_shards, cfg->replication) != 0)
        return CH_ENOMEM;
    memcpy(p->replicas, cfg->replicas,
           (size_t)cfg->n_shards * cfg->replication * sizeof *p->replicas);
    p->n_nodes = cfg->n_nodes;
    for (uint32_t i = 0; i < cfg->n_nodes; i++) {
        clean_node(&p->nodes[i].addr, &cfg->nodes[i]);
        p->nodes[i].state = PLACEMENT_NODE_ACTIVE;
    }
    p->n_meta = cfg->n_meta;
    memcpy(p->meta, cfg->meta, sizeof p->meta);
    p->version = 1;
    return 0;
}

int placement_copy(struct placement *dst, const struct placement *src)
{
    struct placement copy = *src;
    copy.replicas = NULL;
    copy.moves = NULL;
    if (src->replicas != NULL || src->moves != NULL) {
        if (alloc_arrays(&copy, src->n_shards, src->replication) != 0) {
            placement_init(dst);
            return CH_ENOMEM;
        }
        memcpy(copy.replicas, src->replicas,
               (size_t)src->n_shards * src->replication * sizeof *copy.replicas);
        memcpy(copy.moves, src->moves, (size_t)src->n_shards * sizeof *copy.moves);
    }
    *dst = copy;
    return 0;
}

/* ---- validation ------------------------------------------------------------------- */

/*
 * Everything a map must satisfy beyond its limits (which the decoder checks while
 * reading): see the comment at the top.  0 or CH_EMALFORMED with a message.
 */
static int validate(const struct placement *p, char *err, size_t errlen)
{
    const uint32_t S = p->n_shards, R = p->replication;
    for (uint32_t i = 0; i < p->n_nodes; i++) {
        const struct placement_node *n = &p->nodes[i];
        if (n->addr.id == 0)
            return ch_fail(err, errlen, CH_EMALFORMED, "placement: nodes[%u] has id 0",
                           i);
        if (n->state < PLACEMENT_NODE_ACTIVE || n->state > PLACEMENT_NODE_REMOVED)
            return ch_fail(err, errlen, CH_EMALFORMED, "placement: node %u has state %u",
                           n->addr.id, n->state);
        if (check_node_addresses(&n->addr, S, err, errlen) != 0)
            return CH_EMALFORMED;
        for (uint32_t j = 0; j < i; j++) {
            const struct placement_node *o = &p->nodes[j];
            int x, y;
            if (o->addr.id == n->addr.id)
                return ch_fail(err, errlen, CH_EMALFORMED, "placement: node id %u twice",
                               n->addr.id);
            if (n->state != PLACEMENT_NODE_REMOVED &&
                o->state != PLACEMENT_NODE_REMOVED &&
                nodes_collide(&o->addr, &n->addr, S, &x, &y))
                return ch_fail(
                    err, errlen, CH_EMALFORMED,
                    "placement: node %u's %s and node %u's %s addresses overlap",
                    o->addr.id, roles[x], n->addr.id, roles[y]);
        }
    }
    for (uint32_t i = 0; i < p->n_meta; i++) {
        int at = node_index(p, p->meta[i]);
        if (at < 0 || p->nodes[at].state == PLACEMENT_NODE_REMOVED)
            return ch_fail(err, errlen, CH_EMALFORMED,
                           "placement: meta voter %u is not a node of the map",
                           p->meta[i]);
        for (uint32_t j = 0; j < i; j++)
            if (p->meta[j] == p->meta[i])
                return ch_fail(err, errlen, CH_EMALFORMED,
                               "placement: meta voter %u twice", p->meta[i]);
    }
    for (uint32_t s = 0; s < S; s++) {
        const uint32_t *r = &p->replicas[s * R];
        for (uint32_t i = 0; i < R; i++) {
            int at = node_index(p, r[i]);
            if (at < 0 || p->nodes[at].state == PLACEMENT_NODE_REMOVED)
                return ch_fail(
                    err, errlen, CH_EMALFORMED,
                    "placement: shard %u's replica %u is not a node of the map", s, r[i]);
            for (uint32_t j = 0; j < i; j++)
                if (r[j] == r[i])
                    return ch_fail(err, errlen, CH_EMALFORMED,
                                   "placement: shard %u lists replica %u twice", s, r[i]);
        }
        const struct placement_move *m = &p->moves[s];
        if (m->to == 0 && m->from == 0)
            continue;
        int to = node_index(p, m->to);
        if (replica_slot(p, s, m->from) < 0 || to < 0 ||
            p->nodes[to].state == PLACEMENT_NODE_REMOVED ||
            replica_slot(p, s, m->to) >= 0)
            return ch_fail(err, errlen, CH_EMALFORMED,
                           "placement: shard %u's move %u -> %u is not from a replica to "
                           "another node",
                           s, m->from, m->to);
    }
    return 0;
}

/* ---- map codec -------------------------------------------------------------------- */

static void put_addr(struct ch_wbuf *b, const struct cluster_addr *a)
{
    struct ch_slice host = {(const uint8_t *)a->host, strnlen(a->host, CLUSTER_HOST_MAX)};
    ch_put_str16(b, host);
    ch_put_u16(b, a->port);
}

static void put_node_addrs(struct ch_wbuf *b, const struct cluster_node *n)
{
    put_addr(b, &n->raft);
    put_addr(b, &n->client);
    put_addr(b, &n->gateway);
}

/* Reads a host and port; a host that is too long or holds a NUL sets r's error. */
static void get_addr(struct ch_rbuf *r, struct cluster_addr *a)
{
    struct ch_slice host = ch_get_str16(r);
    a->port = ch_get_u16(r);
    memset(a->host, 0, sizeof a->host);
    if (host.len >= CLUSTER_HOST_MAX ||
        (host.len > 0 && memchr(host.ptr, '\0', host.len))) {
        r->err = CH_EMALFORMED;
        return;
    }
    if (host.len > 0)
        memcpy(a->host, host.ptr, host.len);
}

static void get_node_addrs(struct ch_rbuf *r, struct cluster_node *n)
{
    get_addr(r, &n->raft);
    get_addr(r, &n->client);
    get_addr(r, &n->gateway);
}

void placement_encode(const struct placement *p, struct ch_wbuf *b)
{
    size_t start = b->len;
    uint32_t n_meta =
        p->n_meta < CLUSTER_MAX_REPLICATION ? p->n_meta : CLUSTER_MAX_REPLICATION;
    uint32_t n_nodes = p->n_nodes < CLUSTER_MAX_NODES ? p->n_nodes : CLUSTER_MAX_NODES;
    ch_put_u32(b, PLACEMENT_MAGIC);
    ch_put_u8(b, PLACEMENT_FORMAT);
    ch_put_u64(b, p->version);
    ch_put_u32(b, p->n_shards);
    ch_put_u32(b, p->replication);
    ch_put_u32(b, n_meta);
    for (uint32_t i = 0; i < n_meta; i++)
        ch_put_u32(b, p->meta[i]);
    ch_put_u32(b, n_nodes);
    for (uint32_t i = 0; i < n_nodes; i++) {
        ch_put_u32(b, p->nodes[i].addr.id);
        ch_put_u8(b, p->nodes[i].state);
        put_node_addrs(b, &p->nodes[i].addr);
    }
    if (p->replicas != NULL && p->moves != NULL) {
        for (size_t i = 0; i < (size_t)p->n_shards * p->replication; i++)
            ch_put_u32(b, p->replicas[i]);
        for (uint32_t s = 0; s < p->n_shards; s++) {
            ch_put_u32(b, p->moves[s].from);
            ch_put_u32(b, p->moves[s].to);
        }
    }
    uint32_t crc = b->oom ? 0 : ch_crc32c(0, b->data + start, b->len - start);
    ch_put_u32(b, crc);
}

/* Reads the fields after the frame's header into out (which the caller frees). */
static int decode_body(struct ch_rbuf *r, struct placement *out, char *err, size_t errlen)
{
    uint64_t version = ch_get_u64(r);
    uint32_t n_shards = ch_get_u32(r);
    uint32_t replication = ch_get_u32(r);
    out->n_meta = ch_get_u32(r);
    if (r->err)
        return ch_fail(err, errlen, CH_EMALFORMED, "placement: truncated header");
    if (version == 0) {
        /* An unseeded map (a snapshot taken before SEED): nothing else may follow. */
        uint32_t n_nodes = ch_get_u32(r);
        if (r->err || n_shards != 0 || replication != 0 || out->n_meta != 0 ||
            n_nodes != 0 || r->left != 0)
            return ch_fail(err, errlen, CH_EMALFORMED,
                           "placement: version 0 is only the empty, unseeded map");
        out->n_meta = 0;
        return 0;
    }
    if (n_shards < 1 || n_shards > CLUSTER_MAX_SHARDS || replication < 1 ||
        replication > CLUSTER_MAX_REPLICATION)
        return ch_fail(err, errlen, CH_EMALFORMED,
                       "placement: %u shards x %u replicas (limits 1..%d x 1..%d)",
                       n_shards, replication, CLUSTER_MAX_SHARDS,
                       CLUSTER_MAX_REPLICATION);
    if (out->n_meta < 1 || out->n_meta > CLUSTER_MAX_REPLICATION)
        return ch_fail(err, errlen, CH_EMALFORMED, "placement: %u meta voters (1..%d)",
                       out->n_meta, CLUSTER_MAX_REPLICATION);
    for (uint32_t i = 0; i < out->n_meta; i++)
        out->meta[i] = ch_get_u32(r);
    out->n_nodes = ch_get_u32(r);
    if (r->err || out->n_nodes > CLUSTER_MAX_NODES)
        return ch_fail(err, errlen, CH_EMALFORMED,
                       "placement: bad node count (at most %d)", CLUSTER_MAX_NODES);
    for (uint32_t i = 0; i < out->n_nodes; i++) {
        out->nodes[i].addr.id = ch_get_u32(r);
        out->nodes[i].state = ch_get_u8(r);
        get_node_addrs(r, &out->nodes[i].addr);
    }
    if (r->err)
        return ch_fail(err, errlen, CH_EMALFORMED,
                       "placement: truncated node list or a host that is not a string of "
                       "1..%d bytes",
                       CLUSTER_HOST_MAX - 1);
    /* Both counts are bounded above, and the input must hold them before we allocate. */
    size_t cells = (size_t)n_shards * replication;
    if (r->left != cells * 4 + (size_t)n_shards * 8)
        return ch_fail(
            err, errlen, CH_EMALFORMED,
            "placement: %zu bytes for %u shards x %u replicas and moves, need %zu",
            r->left, n_shards, replication, cells * 4 + (size_t)n_shards * 8);
    if (alloc_arrays(out, n_shards, replication) != 0)
        return ch_fail(err, errlen, CH_ENOMEM, "placement: out of memory");
    for (size_t i = 0; i < cells; i++)
        out->replicas[i] = ch_get_u32(r);
    for (uint32_t s = 0; s < n_shards; s++) {
        out->moves[s].from = ch_get_u32(r);
        out->moves[s].to = ch_get_u32(r);
    }
    if (r->err || r->left != 0)
        return ch_fail(err, errlen, CH_EMALFORMED, "placement: bad length");
    int rv = validate(out, err, errlen);
    if (rv == 0)
        out->version = version;
    return rv;
}

int placement_decode(const void *buf, size_t len, struct placement *out, char *err,
                     size_t errlen)
{
    placement_init(out);
    struct ch_rbuf r;
    ch_rbuf_init(&r, buf, len);
    uint32_t magic = ch_get_u32(&r);
    uint8_t format = ch_get_u8(&r);
    if (r.err || magic != PLACEMENT_MAGIC)
        return ch_fail(err, errlen, CH_EMALFORMED, "placement: not a placement map");
    if (format != PLACEMENT_FORMAT)
        return ch_fail(err, errlen, CH_EVERSION,
                       "placement: format %u (this build reads %d)", format,
                       PLACEMENT_FORMAT);
    if (len < PLACEMENT_FRAME)
        return ch_fail(err, errlen, CH_EMALFORMED, "placement: truncated");
    const uint8_t *bytes = buf;
    if (ch_load_u32(bytes + len - 4) != ch_crc32c(0, bytes, len - 4))
        return ch_fail(err, errlen, CH_ECORRUPT, "placement: checksum mismatch");
    ch_rbuf_init(&r, bytes + 5, len - PLACEMENT_FRAME);
    int rv = decode_body(&r, out, err, errlen);
    if (rv != 0)
        placement_free(out);
    return rv;
}

/* ---- command codec ---------------------------------------------------------------- */

void placement_cmd_encode(const struct placement_cmd *c, struct ch_wbuf *b)
{
    ch_put_u8(b, c->op);
    switch (c->op) {
    case PLACEMENT_SEED:
        ch_put_bytes32(b, c->seed);
        break;
    case PLACEMENT_NODE_ADD:
        ch_put_u32(b, c->node.addr.id);
        put_node_addrs(b, &c->node.addr);
        break;
    case PLACEMENT_NODE_SET_STATE:
        ch_put_u32(b, c->node.addr.id);
        ch_put_u8(b, c->node.state);
        break;
    case PLACEMENT_MOVE_BEGIN:
    case PLACEMENT_MOVE_COMMIT:
    case PLACEMENT_MOVE_ABORT:
        ch_put_u32(b, c->shard);
        ch_put_u32(b, c->from);
        ch_put_u32(b, c->to);
        break;
    default: /* no fields: decoders answer CH_EUNKNOWN_OP */
        break;
    }
}

int placement_cmd_decode(const void *buf, size_t len, struct placement_cmd *c)
{
    memset(c, 0, sizeof *c);
    struct ch_rbuf r;
    ch_rbuf_init(&r, buf, len);
    c->op = ch_get_u8(&r);
    if (r.err)
        return CH_EMALFORMED;
    switch (c->op) {
    case PLACEMENT_SEED:
        c->seed = ch_get_bytes32(&r, PLACEMENT_MAX_SEED);
        break;
    case PLACEMENT_NODE_ADD:
        c->node.addr.id = ch_get_u32(&r);
        c->node.state = PLACEMENT_NODE_ACTIVE;
        get_node_addrs(&r, &c->node.addr);
        break;
    case PLACEMENT_NODE_SET_STATE:
        c->node.addr.id = ch_get_u32(&r);
        c->node.state = ch_get_u8(&r);
        break;
    case PLACEMENT_MOVE_BEGIN:
    case PLACEMENT_MOVE_COMMIT:
    case PLACEMENT_MOVE_ABORT:
        c->shard = ch_get_u32(&r);
        c->from = ch_get_u32(&r);
        c->to = ch_get_u32(&r);
        break;
    default:
        return CH_EUNKNOWN_OP;
    }
    return r.err || r.left != 0 ? CH_EMALFORMED : 0;
}

/* ---- apply ------------------------------------------------------------------------ */

/*
 * Every apply_* checks the whole command against the current state first and
 * changes the state only once nothing can fail any more.
 */

static int apply_seed(struct placement *p, const struct placement_cmd *c, char *msg,
                      size_t msglen)
{
    if (p->version != 0)
        return ch_fail(msg, msglen, CH_EEXISTS,
                       "the placement map is already seeded (version %llu)",
                       (unsigned long long)p->version);
    struct placement seeded;
    int rv = placement_decode(c->seed.ptr, c->seed.len, &seeded, msg, msglen);
    if (rv != 0)
        return rv;
    if (seeded.version == 0)
        return ch_fail(msg, msglen, CH_EMALFORMED, "the seed is an empty, unseeded map");
    placement_free(p);
    *p = seeded;
    return 0;
}

static int apply_node_add(struct placement *p, const struct placement_cmd *c, char *msg,
                          size_t msglen)
{
    const struct cluster_node *n = &c->node.addr;
    if (n->id == 0)
        return ch_fail(msg, msglen, CH_EINVAL, "node id 0 is reserved");
    int rv = check_node_addresses(n, p->n_shards, msg, msglen);
    if (rv != 0)
        return rv;
    int at = node_index(p, n->id);
    if (at >= 0 && p->nodes[at].state != PLACEMENT_NODE_REMOVED) {
        if (same_addresses(&p->nodes[at].addr, n))
            return 0;
        return ch_fail(msg, msglen, CH_EEXISTS,
                       "node %u already exists with other addresses (remove it first)",
                       n->id);
    }
    for (uint32_t i = 0; i < p->n_nodes; i++) {
        const struct placement_node *o = &p->nodes[i];
        int x, y;
        if ((int)i != at && o->state != PLACEMENT_NODE_REMOVED &&
            nodes_collide(&o->addr, n, p->n_shards, &x, &y))
            return ch_fail(
                msg, msglen, CH_EINVAL,
                "node %u: its %s address overlaps node %u's %s (raft takes ports "
                "[port, port + %u])",
                n->id, roles[y], o->addr.id, roles[x], p->n_shards);
    }
    if (at < 0 && p->n_nodes >= CLUSTER_MAX_NODES)
        return ch_fail(msg, msglen, CH_ELIMIT, "the map already has %d nodes",
                       CLUSTER_MAX_NODES);
    struct placement_node *dst = at >= 0 ? &p->nodes[at] : &p->nodes[p->n_nodes++];
    clean_node(&dst->addr, n);
    dst->state = PLACEMENT_NODE_ACTIVE;
    p->version++;
    return 0;
}

static int apply_set_state(struct placement *p, const struct placement_cmd *c, char *msg,
                           size_t msglen)
{
    uint32_t id = c->node.addr.id;
    uint8_t state = c->node.state;
    int at = node_index(p, id);
    if (at < 0)
        return ch_fail(msg, msglen, CH_ENOTFOUND, "node %u is not in the placement map",
                       id);
    if (state < PLACEMENT_NODE_ACTIVE || state > PLACEMENT_NODE_REMOVED)
        return ch_fail(msg, msglen, CH_EINVAL, "bad node state %u", state);
    struct placement_node *n = &p->nodes[at];
    if (n->state == state)
        return 0;
    if (state == PLACEMENT_NODE_REMOVED) {
        int64_t s = move_of(p, id);
        uint32_t held = placement_count(p, id);
        if (s >= 0)
            return ch_fail(
                msg, msglen, CH_EINVAL,
                "node %u is part of the move of shard %lld: commit or abort it first", id,
                (long long)s);
        if (held > 0)
            return ch_fail(msg, msglen, CH_EINVAL,
                           "node %u still holds %u replicas: move them away first", id,
                           held);
        if (is_meta(p, id))
            return ch_fail(msg, msglen, CH_EINVAL,
                           "node %u is a voter of the meta group and cannot be removed",
                           id);
    } else if (n->state == PLACEMENT_NODE_REMOVED) {
        return ch_fail(msg, msglen, CH_EINVAL,
                       "node %u was removed: add it again (node add) instead", id);
    }
    n->state = state;
    p->version++;
    return 0;
}

static int check_shard(const struct placement *p, uint32_t shard, char *msg,
                       size_t msglen)
{
    if (shard >= p->n_shards)
        return ch_fail(msg, msglen, CH_EINVAL, "no shard %u (the map has %u)", shard,
                       p->n_shards);
    return 0;
}

static int is_move(const struct placement *p, const struct placement_cmd *c)
{
    const struct placement_move *m = &p->moves[c->shard];
    return m->to != 0 && m->from == c->from && m->to == c->to;
}

static int apply_move_begin(struct placement *p, const struct placement_cmd *c, char *msg,
                            size_t msglen)
{
    int rv = check_shard(p, c->shard, msg, msglen);
    if (rv != 0)
        return rv;
    if (c->from == c->to)
        return ch_fail(msg, msglen, CH_EINVAL, "move of shard %u from node %u to itself",
                       c->shard, c->from);
    if (is_move(p, c))
        return 0;
    const struct placement_move *m = &p->moves[c->shard];
    if (m->to != 0)
        return ch_fail(msg, msglen, CH_EEXISTS,
                       "shard %u is already moving from node %u to node %u", c->shard,
                       m->from, m->to);
    if (replica_slot(p, c->shard, c->from) < 0)
        return ch_fail(msg, msglen, CH_EINVAL, "node %u holds no replica of shard %u",
                       c->from, c->shard);
    if (replica_slot(p, c->shard, c->to) >= 0)
        return ch_fail(msg, msglen, CH_EINVAL,
                       "node %u already holds a replica of shard %u", c->to, c->shard);
    const struct placement_node *to = placement_node(p, c->to);
    if (to == NULL || to->state != PLACEMENT_NODE_ACTIVE)
        return ch_fail(msg, msglen, CH_EINVAL, "node %u is %s", c->to,
                       to == NULL ? "not in the placement map" : "not active");
    p->moves[c->shard].from = c->from;
    p->moves[c->shard].to = c->to;
    p->version++;
    return 0;
}

static int apply_move_commit(struct placement *p, const struct placement_cmd *c,
                             char *msg, size_t msglen)
{
    int rv = check_shard(p, c->shard, msg, msglen);
    if (rv != 0)
        return rv;
    if (!is_move(p, c)) {
        if (p->moves[c->shard].to == 0 && replica_slot(p, c->shard, c->to) >= 0 &&
            replica_slot(p, c->shard, c->from) < 0)
            return 0; /* committed before */
        return ch_fail(msg, msglen, CH_EINVAL,
                       "shard %u has no move from node %u to node %u", c->shard, c->from,
                       c->to);
    }
    /* A valid map's move starts at a replica (validate, MOVE_BEGIN). */
    int slot = replica_slot(p, c->shard, c->from);
    if (slot < 0)
        return ch_fail(msg, msglen, CH_EINTERNAL,
                       "shard %u's move does not start at a replica", c->shard);
    p->replicas[c->shard * p->replication + (uint32_t)slot] = c->to;
    p->moves[c->shard].from = 0;
    p->moves[c->shard].to = 0;
    p->version++;
    return 0;
}

static int apply_move_abort(struct placement *p, const struct placement_cmd *c, char *msg,
                            size_t msglen)
{
    int rv = check_shard(p, c->shard, msg, msglen);
    if (rv != 0)
        return rv;
    struct placement_move *m = &p->moves[c->shard];
    if (m->to == 0)
        return 0;
    if (!is_move(p, c))
        return ch_fail(msg, msglen, CH_EINVAL,
                       "shard %u is moving from node %u to node %u, not from %u to %u",
                       c->shard, m->from, m->to, c->from, c->to);
    m->from = 0;
    m->to = 0;
    p->version++;
    return 0;
}

int placement_apply(struct placement *p, const struct placement_cmd *c, char *msg,
                    size_t msglen)
{
    if (c->op < PLACEMENT_SEED || c->op > PLACEMENT_MOVE_ABORT)
        return ch_fail(msg, msglen, CH_EUNKNOWN_OP, "unknown placement command %u",
                       c->op);
    if (c->op == PLACEMENT_SEED)
        return apply_seed(p, c, msg, msglen);
    if (p->version == 0)
        return ch_fail(msg, msglen, CH_EUNAVAILABLE,
                       "the placement map is not seeded yet");
    switch (c->op) {
    case PLACEMENT_NODE_ADD:
        return apply_node_add(p, c, msg, msglen);
    case PLACEMENT_NODE_SET_STATE:
        return apply_set_state(p, c, msg, msglen);
    case PLACEMENT_MOVE_BEGIN:
        return apply_move_begin(p, c, msg, msglen);
    case PLACEMENT_MOVE_COMMIT:
        return apply_move_commit(p, c, msg, msglen);
    default:
        return apply_move_abort(p, c, msg, msglen);
    }
}

/* ---- back to a config ------------------------------------------------------------- */

int placement_to_config(const struct placement *p, struct cluster_config *cfg, char *err,
                        size_t errlen)
{
    if (p->version == 0 || p->n_shards != cfg->n_shards ||
        p->replication != cfg->replication)
        return ch_fail(
            err, errlen, CH_ECONFIG,
            "the placement map has %u shards x %u replicas, the config %u x %u",
            p->n_shards, p->replication, cfg->n_shards, cfg->replication);
    /* Removed nodes hold nothing and others may have taken their ports: a config
     * that never knew them does not learn them. */
    uint32_t missing = 0;
    for (uint32_t i = 0; i < p->n_nodes; i++)
        if (p->nodes[i].state != PLACEMENT_NODE_REMOVED &&
            cluster_node_by_id(cfg, p->nodes[i].addr.id) == NULL)
            missing++;
    if (cfg->n_nodes + missing > CLUSTER_MAX_NODES)
        return ch_fail(err, errlen, CH_ECONFIG,
                       "the placement map adds %u nodes to the config's %u: more than %d",
                       missing, cfg->n_nodes, CLUSTER_MAX_NODES);
    size_t cells = (size_t)p->n_shards * p->replication;
    if (cfg->replicas == NULL &&
        (cfg->replicas = calloc(cells, sizeof *cfg->replicas)) == NULL)
        return ch_fail(err, errlen, CH_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < p->n_nodes; i++)
        if (p->nodes[i].state != PLACEMENT_NODE_REMOVED &&
            cluster_node_by_id(cfg, p->nodes[i].addr.id) == NULL)
            cfg->nodes[cfg->n_nodes++] = p->nodes[i].addr;
    memcpy(cfg->replicas, p->replicas, cells * sizeof *cfg->replicas);
    cfg->n_meta = p->n_meta;
    memcpy(cfg->meta, p->meta, sizeof cfg->meta);
    return 0;
}
