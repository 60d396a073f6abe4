/* Unit tests of the replicated placement map (src/cluster/placement.c). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/config.h"
#include "cluster/placement.h"
#include "common/error.h"
#include "common/hash.h"
#include "test.h"

static char msg[512];

/* One node with all three addresses on one host. */
#define NODE(id, host, raft, client, gateway)                                           \
    "{\"id\":" #id ",\"raft\":\"" host ":" #raft "\",\"client\":\"" host ":" #client     \
    "\",\"gateway\":\"" host ":" #gateway "\"}"

/*
 * Five nodes on one host, 4 shards × 3 replicas: raft ranges [7000, 7004],
 * [7010, 7014], ...  Node 5 holds nothing; the meta voters default to 1, 2, 3.
 *   shard 0: 1 2 3   shard 1: 2 3 4   shard 2: 3 4 1   shard 3: 4 1 2
 */
#define NODES5                                                                          \
    NODE(1, "127.0.0.1", 7000, 7100, 7101) ","                                          \
    NODE(2, "127.0.0.1", 7010, 7102, 7103) ","                                          \
    NODE(3, "127.0.0.1", 7020, 7104, 7105) ","                                          \
    NODE(4, "127.0.0.1", 7030, 7106, 7107) ","                                          \
    NODE(5, "127.0.0.1", 7040, 7108, 7109)
#define PLACEMENT4                                                                      \
    "\"placement\":{\"0\":[1,2,3],\"1\":[2,3,4],\"2\":[3,4,1],\"3\":[4,1,2]}"
static const char base_json[] = "{\"name\":\"p\",\"shards\":4,\"replication\":3,"
                                "\"nodes\":[" NODES5 "]," PLACEMENT4 "}";

static int parse(const char *json, struct cluster_config *cfg)
{
    int rv = cluster_config_parse(json, strlen(json), cfg, msg, sizeof msg);
    if (rv != 0)
        fprintf(stderr, "  config: %s\n", msg);
    return rv;
}

/* p = the map of a config; 0 on success. */
static int seeded(struct placement *p, const char *json)
{
    struct cluster_config cfg;
    int rv = parse(json, &cfg);
    if (rv != 0)
        return rv;
    rv = placement_from_config(p, &cfg);
    cluster_config_free(&cfg);
    return rv;
}

static void encode(const struct placement *p, struct ch_wbuf *b)
{
    ch_wbuf_init(b);
    placement_encode(p, b);
}

/* Do two maps encode to the same bytes? */
static int same_map(const struct placement *a, const struct placement *b)
{
    struct ch_wbuf x, y;
    encode(a, &x);
    encode(b, &y);
    int same = !x.oom && !y.oom && x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    ch_wbuf_free(&x);
    ch_wbuf_free(&y);
    return same;
}

/* ---- commands --------------------------------------------------------------------- */

static struct placement_cmd move_cmd(uint8_t op, uint32_t shard, uint32_t from,
                                     uint32_t to)
{
    struct placement_cmd c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.shard = shard;
    c.from = from;
    c.to = to;
    return c;
}

static struct placement_cmd state_cmd(uint32_t id, uint8_t state)
{
    struct placement_cmd c;
    memset(&c, 0, sizeof c);
    c.op = PLACEMENT_NODE_SET_STATE;
    c.node.addr.id = id;
    c.node.state = state;
    return c;
}

static void set_addr(struct cluster_addr *a, const char *host, uint16_t port)
{
    memset(a->host, 0, sizeof a->host);
    snprintf(a->host, sizeof a->host, "%s", host);
    a->port = port;
}

static struct placement_cmd add_cmd(uint32_t id, const char *host, uint16_t raft,
                                    uint16_t client, uint16_t gateway)
{
    struct placement_cmd c;
    memset(&c, 0, sizeof c);
    c.op = PLACEMENT_NODE_ADD;
    c.node.addr.id = id;
    set_addr(&c.node.addr.raft, host, raft);
    set_addr(&c.node.addr.client, host, client);
    set_addr(&c.node.addr.gateway, host, gateway);
    return c;
}

static int apply(struct placement *p, struct placement_cmd c)
{
    msg[0] = '\0';
    return placement_apply(p, &c, msg, sizeof msg);
}

/* Applies c expecting `code`, a message, and the map unchanged byte for byte. */
static int rejected(struct placement *p, struct placement_cmd c, int code, int line)
{
    struct placement before;
    if (placement_copy(&before, p) != 0)
        return 0;
    int rv = apply(p, c);
    int same = same_map(&before, p) && before.version == p->version;
    int ok = rv == code && msg[0] != '\0' && same;
    if (!ok)
        fprintf(stderr, "  line %d: %s (wanted %s), \"%s\", map %s\n", line,
                ch_errname(rv), ch_errname(code), msg, same ? "unchanged" : "CHANGED");
    placement_free(&before);
    return ok;
}

/* Applies c expecting 0 and no change at all (an idempotent repeat). */
static int noop(struct placement *p, struct placement_cmd c, int line)
{
    struct placement before;
    if (placement_copy(&before, p) != 0)
        return 0;
    int rv = apply(p, c);
    int same = same_map(&before, p);
    if (rv != 0 || !same)
        fprintf(stderr, "  line %d: %s, \"%s\", map %s\n", line, ch_errname(rv), msg,
                same ? "unchanged" : "CHANGED");
    placement_free(&before);
    return rv == 0 && same;
}

/* Applies c expecting a change: 0 and version + 1. */
static int applied(struct placement *p, struct placement_cmd c, int line)
{
    uint64_t version = p->version;
    int rv = apply(p, c);
    if (rv != 0 || p->version != version + 1)
        fprintf(stderr, "  line %d: %s, \"%s\", version %llu -> %llu\n", line,
                ch_errname(rv), msg, (unsigned long long)version,
                (unsigned long long)p->version);
    return rv == 0 && p->version == version + 1;
}

#define CHECK_REJECTED(p, c, code) CHECK(rejected((p), (c), (code), __LINE__))
#define CHECK_NOOP(p, c) CHECK(noop((p), (c), __LINE__))
#define CHECK_APPLIED(p, c) CHECK(applied((p), (c), __LINE__))

/* Encodes p (valid or not) and answers what the decoder says of it. */
static int redecode(const struct placement *p)
{
    struct ch_wbuf b;
    encode(p, &b);
    struct placement out;
    msg[0] = '\0';
    int rv = placement_decode(b.data, b.len, &out, msg, sizeof msg);
    if (rv != 0 && (out.version != 0 || out.replicas != NULL || msg[0] == '\0'))
        rv = -1;
    if (rv == 0 && !same_map(&out, p))
        rv = -2;
    placement_free(&out);
    ch_wbuf_free(&b);
    return rv;
}

/* ---- from_config and the codec ---------------------------------------------------- */

static void test_from_config_round_trip(void)
{
    struct cluster_config cfg;
    CHECK_EQ_INT(parse(base_json, &cfg), 0);
    struct placement p;
    CHECK_EQ_INT(placement_from_config(&p, &cfg), 0);
    CHECK_EQ_U64(p.version, 1);
    CHECK_EQ_INT(p.n_shards, 4);
    CHECK_EQ_INT(p.replication, 3);
    CHECK_EQ_INT(p.n_nodes, 5);
    CHECK_EQ_INT(p.n_meta, 3);
    CHECK(p.meta[0] == 1 && p.meta[1] == 2 && p.meta[2] == 3);
    for (uint32_t i = 0; i < 5; i++) {
        CHECK_EQ_INT(p.nodes[i].state, PLACEMENT_NODE_ACTIVE);
        CHECK_EQ_INT(p.nodes[i].addr.id, cfg.nodes[i].id);
        CHECK(strcmp(p.nodes[i].addr.raft.host, "127.0.0.1") == 0);
        CHECK_EQ_INT(p.nodes[i].addr.raft.port, cfg.nodes[i].raft.port);
        CHECK_EQ_INT(p.nodes[i].addr.gateway.port, cfg.nodes[i].gateway.port);
        CHECK(placement_node(&p, i + 1) == &p.nodes[i]);
    }
    CHECK(placement_node(&p, 0) == NULL && placement_node(&p, 6) == NULL);
    for (uint32_t s = 0; s < 4; s++) {
        CHECK(p.moves[s].from == 0 && p.moves[s].to == 0);
        for (uint32_t id = 0; id <= 6; id++)
            CHECK_EQ_INT(placement_hosts(&p, id, s), cluster_node_has_shard(&cfg, id, s));
    }
    CHECK(!placement_hosts(&p, 1, 4));
    CHECK_EQ_INT(placement_count(&p, 1), 3);
    CHECK_EQ_INT(placement_count(&p, 5), 0);
    CHECK_EQ_INT(placement_count(&p, 9), 0);
    CHECK_EQ_INT(memcmp(p.replicas, cfg.replicas, 12 * sizeof *p.replicas), 0);

    /* encode -> decode -> encode is the identity */
    struct ch_wbuf a, b;
    encode(&p, &a);
    CHECK_EQ_INT(ch_wbuf_error(&a), 0);
    struct placement q;
    CHECK_EQ_INT(placement_decode(a.data, a.len, &q, msg, sizeof msg), 0);
    encode(&q, &b);
    CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    CHECK_EQ_U64(q.version, 1);
    CHECK_EQ_INT(q.n_nodes, 5);
    CHECK(strcmp(q.nodes[4].addr.client.host, "127.0.0.1") == 0);
    CHECK_EQ_INT(q.nodes[4].addr.client.port, 7108);
    CHECK_EQ_INT(memcmp(q.replicas, p.replicas, 12 * sizeof *q.replicas), 0);
    CHECK_EQ_INT(memcmp(q.meta, p.meta, sizeof q.meta), 0);
    /* the CRC trailer covers everything before it */
    CHECK_EQ_INT(ch_load_u32(a.data + a.len - 4), ch_crc32c(0, a.data, a.len - 4));

    struct placement copy;
    CHECK_EQ_INT(placement_copy(&copy, &q), 0);
    CHECK(copy.replicas != q.replicas && copy.moves != q.moves);
    CHECK(same_map(&copy, &p));

    /* an unseeded map copies, encodes, decodes (a snapshot before SEED) and frees */
    struct placement empty, empty2;
    placement_init(&empty);
    CHECK_EQ_INT(placement_copy(&empty2, &empty), 0);
    CHECK(empty2.version == 0 && empty2.replicas == NULL);
    placement_free(&empty2);
    CHECK_EQ_INT(redecode(&empty), 0);
    {
        struct ch_wbuf e;
        encode(&empty, &e);
        CHECK_EQ_INT(e.len, 4 + 1 + 8 + 4 + 4 + 4 + 4 + 4);
        CHECK_EQ_INT(placement_decode(e.data, e.len, &empty2, msg, sizeof msg), 0);
        CHECK(empty2.version == 0 && empty2.n_nodes == 0 && empty2.replicas == NULL);
        ch_wbuf_free(&e);
    }
    placement_free(&empty);
    placement_free(&empty);

    placement_free(&copy);
    placement_free(&q);
    placement_free(&p);
    CHECK(p.replicas == NULL && p.version == 0);
    ch_wbuf_free(&a);
    ch_wbuf_free(&b);
    cluster_config_free(&cfg);
}

static void test_cmd_codec(void)
{
    struct placement p;
    CHECK_EQ_INT(seeded(&p, base_json), 0);
    struct ch_wbuf seed;
    encode(&p, &seed);
    struct placement_cmd cmds[6];
    cmds[0] = move_cmd(PLACEMENT_SEED, 0, 0, 0);
    cmds[0].seed.ptr = seed.data;
    cmds[0].seed.len = seed.len;
    cmds[1] = add_cmd(77, "10.1.2.3", 7000, 7100, 7101);
    cmds[1].node.addr.client.port = 9;
    snprintf(cmds[1].node.addr.gateway.host, CLUSTER_HOST_MAX, "10.9.9.9");
    cmds[2] = state_cmd(3, PLACEMENT_NODE_DRAINING);
    cmds[3] = move_cmd(PLACEMENT_MOVE_BEGIN, 3, 4, 5);
    cmds[4] = move_cmd(PLACEMENT_MOVE_COMMIT, 1023, 0xffffffffu, 1);
    cmds[5] = move_cmd(PLACEMENT_MOVE_ABORT, 0, 2, 0);
    for (int i = 0; i < 6; i++) {
        struct ch_wbuf b, again;
        ch_wbuf_init(&b);
        placement_cmd_encode(&cmds[i], &b);
        CHECK_EQ_INT(ch_wbuf_error(&b), 0);
        struct placement_cmd d;
        CHECK_EQ_INT(placement_cmd_decode(b.data, b.len, &d), 0);
        CHECK_EQ_INT(d.op, cmds[i].op);
        CHECK_EQ_INT(d.shard, cmds[i].shard);
        CHECK_EQ_INT(d.from, cmds[i].from);
        CHECK_EQ_INT(d.to, cmds[i].to);
        CHECK_EQ_INT(d.node.addr.id, cmds[i].node.addr.id);
        if (cmds[i].op == PLACEMENT_NODE_ADD) {
            CHECK(strcmp(d.node.addr.raft.host, "10.1.2.3") == 0);
            CHECK(strcmp(d.node.addr.gateway.host, "10.9.9.9") == 0);
            CHECK_EQ_INT(d.node.addr.client.port, 9);
            CHECK_EQ_INT(d.node.addr.gateway.port, 7101);
            CHECK_EQ_INT(d.node.state, PLACEMENT_NODE_ACTIVE);
        } else if (cmds[i].op == PLACEMENT_NODE_SET_STATE) {
            CHECK_EQ_INT(d.node.state, PLACEMENT_NODE_DRAINING);
        } else if (cmds[i].op == PLACEMENT_SEED) {
            /* the seed borrows the command's buffer */
            CHECK(d.seed.len == seed.len && d.seed.ptr == b.data + 5);
            CHECK_EQ_INT(memcmp(d.seed.ptr, seed.data, seed.len), 0);
        }
        ch_wbuf_init(&again);
        placement_cmd_encode(&d, &again);
        CHECK(again.len == b.len && memcmp(again.data, b.data, b.len) == 0);
        ch_wbuf_free(&again);
        /* every truncation is malformed, and so is a trailing byte */
        for (size_t n = 0; n < b.len; n++)
            CHECK_EQ_INT(placement_cmd_decode(b.data, n, &d), CH_EMALFORMED);
        ch_put_u8(&b, 0);
        CHECK_EQ_INT(placement_cmd_decode(b.data, b.len, &d), CH_EMALFORMED);
        ch_wbuf_free(&b);
    }
    /* unknown ops */
    static const uint8_t ops[] = {0, 7, 200, 255};
    for (size_t i = 0; i < sizeof ops; i++) {
        struct placement_cmd d;
        uint8_t buf[13] = {ops[i]};
        CHECK_EQ_INT(placement_cmd_decode(buf, 1, &d), CH_EUNKNOWN_OP);
        CHECK_EQ_INT(placement_cmd_decode(buf, sizeof buf, &d), CH_EUNKNOWN_OP);
    }
    /* hosts: 63 bytes fit the codec (the state machine then rejects them), 64 do not;
     * a NUL inside is malformed */
    for (int len = 63; len <= 64; len++) {
        struct ch_wbuf b;
        ch_wbuf_init(&b);
        ch_put_u8(&b, PLACEMENT_NODE_ADD);
        ch_put_u32(&b, 9);
        char host[64];
        memset(host, '1', sizeof host);
        struct ch_slice h = {(const uint8_t *)host, (size_t)len};
        for (int k = 0; k < 3; k++) {
            ch_put_str16(&b, h);
            ch_put_u16(&b, 7000);
        }
        struct placement_cmd d;
        CHECK_EQ_INT(placement_cmd_decode(b.data, b.len, &d),
                     len == 63 ? 0 : CH_EMALFORMED);
        if (len == 63) {
            CHECK_EQ_INT(strlen(d.node.addr.raft.host), 63);
            CHECK_REJECTED(&p, d, CH_EINVAL);
        }
        ch_wbuf_free(&b);
    }
    {
        struct placement_cmd c = add_cmd(9, "10.0.0.1", 7000, 7100, 7101);
        struct ch_wbuf b;
        ch_wbuf_init(&b);
        placement_cmd_encode(&c, &b);
        b.data[1 + 4 + 2 + 3] = '\0'; /* "10.\0.0.1" in the raft host */
        struct placement_cmd d;
        CHECK_EQ_INT(placement_cmd_decode(b.data, b.len, &d), CH_EMALFORMED);
        ch_wbuf_free(&b);
    }
    /* a seed longer than the 4 MiB bound is refused before it is looked at */
    {
        uint8_t buf[5] = {PLACEMENT_SEED};
        ch_store_u32(buf + 1, (4u << 20) + 1);
        struct placement_cmd d;
        CHECK_EQ_INT(placement_cmd_decode(buf, sizeof buf, &d), CH_EMALFORMED);
        CHECK_EQ_INT(placement_cmd_decode(NULL, 0, &d), CH_EMALFORMED);
    }
    ch_wbuf_free(&seed);
    placement_free(&p);
}

/* ---- SEED and unseeded maps ------------------------------------------------------- */

static void test_seed(void)
{
    struct placement src, p;
    CHECK_EQ_INT(seeded(&src, base_json), 0);
    placement_init(&p);
    /* before SEED every other op is unavailable */
    CHECK_REJECTED(&p, add_cmd(9, "10.0.0.9", 7000, 7100, 7101), CH_EUNAVAILABLE);
    CHECK_REJECTED(&p, state_cmd(1, PLACEMENT_NODE_DRAINING), CH_EUNAVAILABLE);
    CHECK_REJECTED(&p, move_cmd(PLACEMENT_MOVE_BEGIN, 0, 1, 5), CH_EUNAVAILABLE);
    CHECK_REJECTED(&p, move_cmd(PLACEMENT_MOVE_COMMIT, 0, 1, 5), CH_EUNAVAILABLE);
    CHECK_REJECTED(&p, move_cmd(PLACEMENT_MOVE_ABORT, 0, 1, 5), CH_EUNAVAILABLE);
    CHECK_REJECTED(&p, move_cmd(0, 0, 0, 0), CH_EUNKNOWN_OP);
    CHECK_REJECTED(&p, move_cmd(7, 0, 0, 0), CH_EUNKNOWN_OP);

    struct ch_wbuf b;
    encode(&src, &b);
    struct placement_cmd seed = move_cmd(PLACEMENT_SEED, 0, 0, 0);
    /* seeds that do not decode: nothing changes, the decoder's error comes back */
    seed.seed.ptr = b.data;
    seed.seed.len = b.len - 1;
    CHECK_REJECTED(&p, seed, CH_ECORRUPT);
    seed.seed.len = 3;
    CHECK_REJECTED(&p, seed, CH_EMALFORMED);
    seed.seed.ptr = NULL;
    seed.seed.len = 0;
    CHECK_REJECTED(&p, seed, CH_EMALFORMED);
    b.data[20] ^= 1;
    seed.seed.ptr = b.data;
    seed.seed.len = b.len;
    CHECK_REJECTED(&p, seed, CH_ECORRUPT);
    b.data[20] ^= 1;
    b.data[4] = 2; /* format */
    CHECK_REJECTED(&p, seed, CH_EVERSION);
    b.data[4] = 1;
    CHECK_EQ_U64(p.version, 0);
    /* an unseeded map decodes, but is no seed */
    {
        struct ch_wbuf e;
        encode(&p, &e);
        struct placement_cmd empty_seed = seed;
        empty_seed.seed.ptr = e.data;
        empty_seed.seed.len = e.len;
        CHECK_REJECTED(&p, empty_seed, CH_EMALFORMED);
        ch_wbuf_free(&e);
    }

    /* the seed's map, version included */
    CHECK_EQ_INT(apply(&p, seed), 0);
    CHECK(same_map(&p, &src));
    CHECK_EQ_U64(p.version, 1);
    /* once seeded, a seed is refused, even the same one */
    CHECK_REJECTED(&p, seed, CH_EEXISTS);
    CHECK_REJECTED(&p, move_cmd(9, 0, 0, 0), CH_EUNKNOWN_OP);
    /* and the seeded map takes commands */
    CHECK_APPLIED(&p, state_cmd(5, PLACEMENT_NODE_DRAINING));
    ch_wbuf_free(&b);
    placement_free(&p);
    placement_free(&src);
}

/* ---- NODE_ADD --------------------------------------------------------------------- */

static void test_node_add(void)
{
    struct placement p;
    CHECK_EQ_INT(seeded(&p, base_json), 0);

    /* a new node: appended, ACTIVE whatever the command's state says */
    struct placement_cmd six = add_cmd(6, "127.0.0.1", 7050, 7110, 7111);
    six.node.state = PLACEMENT_NODE_REMOVED;
    CHECK_APPLIED(&p, six);
    CHECK_EQ_INT(p.n_nodes, 6);
    CHECK_EQ_INT(p.nodes[5].addr.id, 6);
    CHECK_EQ_INT(p.nodes[5].state, PLACEMENT_NODE_ACTIVE);
    CHECK_EQ_INT(p.nodes[5].addr.raft.port, 7050);
    CHECK_EQ_INT(p.nodes[5].addr.gateway.port, 7111);
    CHECK_EQ_INT(redecode(&p), 0);
    /* the same again: nothing changes */
    CHECK_NOOP(&p, six);
    /* a known id with other addresses */
    CHECK_REJECTED(&p, add_cmd(6, "127.0.0.1", 7060, 7112, 7113), CH_EEXISTS);
    CHECK_REJECTED(&p, add_cmd(1, "10.0.0.1", 7000, 7100, 7101), CH_EEXISTS);

    /* bad ids and addresses */
    CHECK_REJECTED(&p, add_cmd(0, "10.0.0.7", 7000, 7100, 7101), CH_EINVAL);
    CHECK_REJECTED(&p, add_cmd(7, "localhost", 7000, 7100, 7101), CH_EINVAL);
    CHECK_REJECTED(&p, add_cmd(7, "10.0.0.256", 7000, 7100, 7101), CH_EINVAL);
    CHECK_REJECTED(&p, add_cmd(7, "10.0.0.07", 7000, 7100, 7101), CH_EINVAL);
    CHECK_REJECTED(&p, add_cmd(7, "", 7000, 7100, 7101), CH_EINVAL);
    CHECK_REJECTED(&p, add_cmd(7, "10.0.0.7", 0, 7100, 7101), CH_EINVAL);
    CHECK_REJECTED(&p, add_cmd(7, "10.0.0.7", 7000, 0, 7101), CH_EINVAL);
    CHECK_REJECTED(&p, add_cmd(7, "10.0.0.7", 7000, 7100, 0), CH_EINVAL);
    {
        struct placement_cmd c = add_cmd(7, "10.0.0.7", 7000, 7100, 7101);
        memset(c.node.addr.client.host, '1', CLUSTER_HOST_MAX); /* no terminator */
        CHECK_REJECTED(&p, c, CH_EINVAL);
    }
    /* raft ranges: [port, port + 4] must stay within 65535 */
    CHECK_REJECTED(&p, add_cmd(7, "10.0.0.7", 65532, 7100, 7101), CH_EINVAL);
    /* a node's own addresses overlap: client in its raft range (the meta port), or
     * client == gateway */
    CHECK_REJECTED(&p, add_cmd(7, "10.0.0.7", 7000, 7004, 7101), CH_EINVAL);
    CHECK_REJECTED(&p, add_cmd(7, "10.0.0.7", 7000, 7100, 7100), CH_EINVAL);

    /* collisions with another non-removed node on the same host */
    struct {
        uint16_t raft, client, gateway;
        const char *why;
    } collide[] = {
        {7300, 7100, 7201, "client == node 1's client"},
        {7300, 7201, 7101, "gateway == node 1's gateway"},
        {7300, 7101, 7201, "client == node 1's gateway"},
        {7004, 7201, 7202, "raft range [7004, 7008] meets node 1's meta port 7004"},
        {6996, 7201, 7202, "raft range [6996, 7000] meets node 1's shard 0 port"},
        {7012, 7201, 7202, "raft range inside node 2's"},
        {7300, 7004, 7201, "client on node 1's meta port"},
        {7300, 7201, 7012, "gateway inside node 2's raft range"},
        {7096, 7201, 7202, "raft range [7096, 7100] holds node 1's client port"},
        {7101, 7201, 7202, "raft range [7101, 7105] holds node 1's gateway port"},
        {7048, 7201, 7202, "raft range [7048, 7052] overlaps node 6's [7050, 7054]"},
    };
    for (size_t i = 0; i < sizeof collide / sizeof collide[0]; i++) {
        struct placement_cmd c = add_cmd(7, "127.0.0.1", collide[i].raft,
                                         collide[i].client, collide[i].gateway);
        if (!rejected(&p, c, CH_EINVAL, __LINE__))
            fprintf(stderr, "  collision case %zu: %s\n", i, collide[i].why);
        CHECK(rejected(&p, c, CH_EINVAL, __LINE__));
    }
    /* the same ports on another host, and ranges that just touch, are fine */
    CHECK_APPLIED(&p, add_cmd(7, "10.0.0.7", 7000, 7100, 7101));
    CHECK_APPLIED(&p, add_cmd(8, "127.0.0.1", 7005, 7200, 7201)); /* [7005, 7009] */
    CHECK_APPLIED(&p, add_cmd(9, "127.0.0.1", 7095, 7202, 7203)); /* [7095, 7099] */
    CHECK_EQ_INT(p.n_nodes, 9);
    CHECK_EQ_INT(redecode(&p), 0);

    /* a removed node's ports are free again, and its id comes back with new addresses */
    CHECK_APPLIED(&p, state_cmd(8, PLACEMENT_NODE_REMOVED));
    CHECK_APPLIED(&p, add_cmd(10, "127.0.0.1", 7005, 7204, 7205));
    /* 8's old ports are 10's now */
    CHECK_REJECTED(&p, add_cmd(8, "127.0.0.1", 7005, 7200, 7201), CH_EINVAL);
    CHECK_APPLIED(&p, add_cmd(8, "127.0.0.1", 7300, 7200, 7201));
    const struct placement_node *eight = placement_node(&p, 8);
    CHECK(eight == &p.nodes[7]); /* same slot */
    CHECK_EQ_INT(eight->state, PLACEMENT_NODE_ACTIVE);
    CHECK_EQ_INT(eight->addr.raft.port, 7300);
    CHECK_EQ_INT(p.n_nodes, 10);
    CHECK_EQ_INT(redecode(&p), 0);
    /* a removed node re-added with its old addresses counts as a change too */
    CHECK_APPLIED(&p, state_cmd(8, PLACEMENT_NODE_REMOVED));
    CHECK_APPLIED(&p, add_cmd(8, "127.0.0.1", 7300, 7200, 7201));
    CHECK_EQ_INT(placement_node(&p, 8)->state, PLACEMENT_NODE_ACTIVE);

    /* CLUSTER_MAX_NODES: fill up, then one more is refused; re-adding a removed
     * node needs no new slot */
    for (uint32_t id = 11; p.n_nodes < CLUSTER_MAX_NODES; id++) {
        char host[32];
        snprintf(host, sizeof host, "10.0.1.%u", id);
        CHECK_APPLIED(&p, add_cmd(id, host, 7000, 7100, 7101));
    }
    uint32_t last = p.nodes[CLUSTER_MAX_NODES - 1].addr.id;
    CHECK_REJECTED(&p, add_cmd(1000, "10.0.2.1", 7000, 7100, 7101), CH_ELIMIT);
    CHECK_APPLIED(&p, state_cmd(last, PLACEMENT_NODE_REMOVED));
    CHECK_REJECTED(&p, add_cmd(1000, "10.0.2.1", 7000, 7100, 7101), CH_ELIMIT);
    CHECK_APPLIED(&p, add_cmd(last, "10.0.2.1", 7000, 7100, 7101));
    /* a known id is still answered as known when the map is full */
    CHECK_NOOP(&p, add_cmd(last, "10.0.2.1", 7000, 7100, 7101));
    CHECK_EQ_INT(redecode(&p), 0);
    placement_free(&p);
}

/* ---- NODE_SET_STATE --------------------------------------------------------------- */

static void test_node_set_state(void)
{
    struct placement p;
    CHECK_EQ_INT(seeded(&p, base_json), 0);
    CHECK_REJECTED(&p, state_cmd(99, PLACEMENT_NODE_DRAINING), CH_ENOTFOUND);
    CHECK_REJECTED(&p, state_cmd(0, PLACEMENT_NODE_DRAINING), CH_ENOTFOUND);
    CHECK_REJECTED(&p, state_cmd(4, 0), CH_EINVAL);
    CHECK_REJECTED(&p, state_cmd(4, 4), CH_EINVAL);
    CHECK_REJECTED(&p, state_cmd(4, 255), CH_EINVAL);

    /* ACTIVE <-> DRAINING; repeats change nothing */
    CHECK_NOOP(&p, state_cmd(4, PLACEMENT_NODE_ACTIVE));
    CHECK_APPLIED(&p, state_cmd(4, PLACEMENT_NODE_DRAINING));
    CHECK_EQ_INT(placement_node(&p, 4)->state, PLACEMENT_NODE_DRAINING);
    CHECK_NOOP(&p, state_cmd(4, PLACEMENT_NODE_DRAINING));
    CHECK_EQ_INT(placement_count(&p, 4), 3); /* a draining node keeps its replicas */
    CHECK_APPLIED(&p, state_cmd(4, PLACEMENT_NODE_ACTIVE));

    /* REMOVED needs a node that holds nothing, moves nothing, and votes in no meta */
    CHECK_REJECTED(&p, state_cmd(4, PLACEMENT_NODE_REMOVED), CH_EINVAL); /* replicas */
    CHECK_APPLIED(&p, move_cmd(PLACEMENT_MOVE_BEGIN, 0, 1, 5));
    CHECK_REJECTED(&p, state_cmd(5, PLACEMENT_NODE_REMOVED), CH_EINVAL); /* move target */
    CHECK_APPLIED(&p, move_cmd(PLACEMENT_MOVE_ABORT, 0, 1, 5));
    CHECK_APPLIED(&p, state_cmd(5, PLACEMENT_NODE_DRAINING));
    CHECK_APPLIED(&p, state_cmd(5, PLACEMENT_NODE_REMOVED));
    CHECK_EQ_INT(placement_node(&p, 5)->state, PLACEMENT_NODE_REMOVED);
    CHECK_NOOP(&p, state_cmd(5, PLACEMENT_NODE_REMOVED));
    /* a removed node comes back only through NODE_ADD */
    CHECK_REJECTED(&p, state_cmd(5, PLACEMENT_NODE_ACTIVE), CH_EINVAL);
    CHECK_REJECTED(&p, state_cmd(5, PLACEMENT_NODE_DRAINING), CH_EINVAL);
    CHECK_REJECTED(&p, move_cmd(PLACEMENT_MOVE_BEGIN, 0, 1, 5), CH_EINVAL);
    CHECK_EQ_INT(redecode(&p), 0);
    placement_free(&p);

    /* a meta voter that holds nothing still cannot go */
    CHECK_EQ_INT(seeded(&p, "{\"name\":\"p\",\"shards\":4,\"replication\":3,"
                            "\"meta\":[1,2,5],\"nodes\":[" NODES5 "]," PLACEMENT4 "}"),
                 0);
    CHECK_EQ_INT(placement_count(&p, 5), 0);
    CHECK_REJECTED(&p, state_cmd(5, PLACEMENT_NODE_REMOVED), CH_EINVAL);
    CHECK(strstr(msg, "meta") != NULL);
    CHECK_APPLIED(&p, state_cmd(5, PLACEMENT_NODE_DRAINING)); /* draining is fine */
    placement_free(&p);
}

/* ---- moves ------------------------------------------------------------------------ */

static void test_move_begin_errors(void)
{
    struct placement p;
    CHECK_EQ_INT(seeded(&p, base_json), 0);
    CHECK_APPLIED(&p, add_cmd(6, "127.0.0.1", 7050, 7110, 7111));
    CHECK_APPLIED(&p, state_cmd(6, PLACEMENT_NODE_DRAINING));
    CHECK_APPLIED(&p, add_cmd(7, "127.0.0.1", 7060, 7112, 7113));
    CHECK_APPLIED(&p, state_cmd(7, PLACEMENT_NODE_REMOVED));

    const uint8_t B = PLACEMENT_MOVE_BEGIN;
    CHECK_REJECTED(&p, move_cmd(B, 4, 1, 5), CH_EINVAL);          /* no shard 4 */
    CHECK_REJECTED(&p, move_cmd(B, 0xffffffffu, 1, 5), CH_EINVAL);
    CHECK_REJECTED(&p, move_cmd(B, 0, 1, 1), CH_EINVAL);          /* from == to */
    CHECK_REJECTED(&p, move_cmd(B, 0, 5, 5), CH_EINVAL);
    CHECK_REJECTED(&p, move_cmd(B, 0, 4, 5), CH_EINVAL);          /* 4 is not a replica */
    CHECK_REJECTED(&p, move_cmd(B, 0, 0, 5), CH_EINVAL);
    CHECK_REJECTED(&p, move_cmd(B, 0, 99, 5), CH_EINVAL);
    CHECK_REJECTED(&p, move_cmd(B, 0, 1, 2), CH_EINVAL);          /* 2 already is one */
    CHECK_REJECTED(&p, move_cmd(B, 0, 1, 99), CH_EINVAL);         /* unknown */
    CHECK_REJECTED(&p, move_cmd(B, 0, 1, 0), CH_EINVAL);
    CHECK_REJECTED(&p, move_cmd(B, 0, 1, 6), CH_EINVAL);          /* draining */
    CHECK_REJECTED(&p, move_cmd(B, 0, 1, 7), CH_EINVAL);          /* removed */

    /* one move per shard; the same move again is a no-op */
    CHECK_APPLIED(&p, move_cmd(B, 0, 1, 5));
    CHECK_NOOP(&p, move_cmd(B, 0, 1, 5));
    CHECK_REJECTED(&p, move_cmd(B, 0, 2, 4), CH_EEXISTS);
    CHECK_REJECTED(&p, move_cmd(B, 0, 1, 4), CH_EEXISTS);
    /* the target turning DRAINING does not make the same move an error */
    CHECK_APPLIED(&p, state_cmd(5, PLACEMENT_NODE_DRAINING));
    CHECK_NOOP(&p, move_cmd(B, 0, 1, 5));
    CHECK_APPLIED(&p, state_cmd(5, PLACEMENT_NODE_ACTIVE));
    /* other shards move independently, also to the same node or from a draining one */
    CHECK_APPLIED(&p, move_cmd(B, 2, 1, 5));
    CHECK_APPLIED(&p, state_cmd(3, PLACEMENT_NODE_DRAINING));
    CHECK_APPLIED(&p, move_cmd(B, 1, 3, 5));
    CHECK_EQ_INT(placement_count(&p, 5), 3);
    CHECK_EQ_INT(redecode(&p), 0);
    placement_free(&p);
}

static void test_move_commit(void)
{
    struct placement p;
    CHECK_EQ_INT(seeded(&p, base_json), 0);
    const uint8_t B = PLACEMENT_MOVE_BEGIN, C = PLACEMENT_MOVE_COMMIT;
    /* shard 0: 1 2 3 -> move 2 to 5 */
    CHECK(placement_hosts(&p, 2, 0) && !placement_hosts(&p, 5, 0));
    CHECK_REJECTED(&p, move_cmd(C, 0, 2, 5), CH_EINVAL); /* nothing begun */
    CHECK_APPLIED(&p, move_cmd(B, 0, 2, 5));
    CHECK(p.moves[0].from == 2 && p.moves[0].to == 5);
    CHECK(placement_hosts(&p, 2, 0) && placement_hosts(&p, 5, 0)); /* both, meanwhile */
    CHECK_EQ_INT(placement_count(&p, 5), 1);
    CHECK_EQ_INT(placement_count(&p, 2), 3);
    CHECK_EQ_INT(p.replicas[1], 2);
    CHECK_EQ_INT(redecode(&p), 0);

    CHECK_REJECTED(&p, move_cmd(C, 4, 2, 5), CH_EINVAL);  /* no such shard */
    CHECK_REJECTED(&p, move_cmd(C, 0, 3, 5), CH_EINVAL);  /* another move */
    CHECK_REJECTED(&p, move_cmd(C, 0, 2, 4), CH_EINVAL);
    CHECK_REJECTED(&p, move_cmd(C, 1, 2, 5), CH_EINVAL);  /* another shard */

    CHECK_APPLIED(&p, move_cmd(C, 0, 2, 5));
    /* 5 took 2's slot; the others kept theirs */
    CHECK(p.replicas[0] == 1 && p.replicas[1] == 5 && p.replicas[2] == 3);
    CHECK(p.moves[0].from == 0 && p.moves[0].to == 0);
    CHECK(!placement_hosts(&p, 2, 0) && placement_hosts(&p, 5, 0));
    CHECK_EQ_INT(placement_count(&p, 2), 2);
    CHECK_EQ_INT(placement_count(&p, 5), 1);
    CHECK_EQ_INT(redecode(&p), 0);
    /* the same commit again: already done */
    CHECK_NOOP(&p, move_cmd(C, 0, 2, 5));
    /* not "already done": from still a replica, to not one, or a move in progress */
    CHECK_REJECTED(&p, move_cmd(C, 0, 1, 5), CH_EINVAL);
    CHECK_REJECTED(&p, move_cmd(C, 0, 4, 2), CH_EINVAL);
    CHECK_APPLIED(&p, move_cmd(B, 0, 5, 2));
    CHECK_REJECTED(&p, move_cmd(C, 0, 2, 5), CH_EINVAL);
    /* and back: 2 returns to the same slot */
    CHECK_APPLIED(&p, move_cmd(C, 0, 5, 2));
    CHECK(p.replicas[0] == 1 && p.replicas[1] == 2 && p.replicas[2] == 3);
    CHECK_EQ_U64(p.version, 5);
    placement_free(&p);
}

static void test_move_abort(void)
{
    struct placement p, before;
    CHECK_EQ_INT(seeded(&p, base_json), 0);
    const uint8_t B = PLACEMENT_MOVE_BEGIN, A = PLACEMENT_MOVE_ABORT;
    CHECK_NOOP(&p, move_cmd(A, 1, 2, 5));   /* no move in progress */
    CHECK_NOOP(&p, move_cmd(A, 1, 0, 0));
    CHECK_REJECTED(&p, move_cmd(A, 4, 2, 5), CH_EINVAL);
    CHECK_EQ_INT(placement_copy(&before, &p), 0);
    CHECK_APPLIED(&p, move_cmd(B, 1, 2, 5));
    CHECK(placement_hosts(&p, 5, 1));
    CHECK_REJECTED(&p, move_cmd(A, 1, 3, 5), CH_EINVAL); /* another move */
    CHECK_REJECTED(&p, move_cmd(A, 1, 2, 1), CH_EINVAL);
    CHECK_REJECTED(&p, move_cmd(A, 1, 0, 0), CH_EINVAL);
    CHECK_APPLIED(&p, move_cmd(A, 1, 2, 5));
    /* nothing changed but the version */
    CHECK_EQ_U64(p.version, before.version + 2);
    before.version = p.version;
    CHECK(same_map(&p, &before));
    CHECK(!placement_hosts(&p, 5, 1) && placement_hosts(&p, 2, 1));
    CHECK_NOOP(&p, move_cmd(A, 1, 2, 5));
    /* a commit after the abort is an error, a new move is fine */
    CHECK_REJECTED(&p, move_cmd(PLACEMENT_MOVE_COMMIT, 1, 2, 5), CH_EINVAL);
    CHECK_APPLIED(&p, move_cmd(B, 1, 3, 5));
    placement_free(&before);
    placement_free(&p);
}

/* ---- decoder ---------------------------------------------------------------------- */

static void test_decode_rejects_bad_input(void)
{
    struct placement p, out;
    CHECK_EQ_INT(seeded(&p, base_json), 0);
    CHECK_APPLIED(&p, move_cmd(PLACEMENT_MOVE_BEGIN, 2, 4, 5));
    struct ch_wbuf b;
    encode(&p, &b);
    CHECK_EQ_INT(placement_decode(b.data, b.len, &out, msg, sizeof msg), 0);
    placement_free(&out);

    /* every truncation fails and leaves out unseeded */
    for (size_t n = 0; n < b.len; n++) {
        msg[0] = '\0';
        int rv = placement_decode(b.data, n, &out, msg, sizeof msg);
        CHECK(rv == CH_EMALFORMED || rv == CH_ECORRUPT);
        CHECK(out.version == 0 && out.replicas == NULL && out.moves == NULL);
        CHECK(msg[0] != '\0');
        placement_free(&out);
    }
    /* every single bit flip fails (the CRC, or the magic / format before it) */
    for (size_t i = 0; i < b.len; i++)
        for (int bit = 0; bit < 8; bit += 3) {
            b.data[i] ^= (uint8_t)(1u << bit);
            int rv = placement_decode(b.data, b.len, &out, msg, sizeof msg);
            b.data[i] ^= (uint8_t)(1u << bit);
            CHECK(rv == (i < 4 ? CH_EMALFORMED : i == 4 ? CH_EVERSION : CH_ECORRUPT));
            CHECK(out.version == 0 && out.replicas == NULL);
        }
    CHECK_EQ_INT(placement_decode(b.data, b.len, &out, NULL, 0), 0);
    placement_free(&out);
    /* a trailing byte with a CRC that covers it */
    {
        struct ch_wbuf t;
        ch_wbuf_init(&t);
        ch_put_raw(&t, b.data, b.len - 4);
        ch_put_u8(&t, 0);
        ch_put_u32(&t, ch_crc32c(0, t.data, t.len));
        CHECK_EQ_INT(placement_decode(t.data, t.len, &out, msg, sizeof msg),
                     CH_EMALFORMED);
        ch_wbuf_free(&t);
    }
    ch_wbuf_free(&b);

    /* Contents with a correct CRC: p mutated, encoded, decoded. */
    struct placement q;
#define MUTATED(stmt)                                                                    \
    do {                                                                                 \
        CHECK_EQ_INT(placement_copy(&q, &p), 0);                                         \
        stmt;                                                                            \
        int rv__ = redecode(&q);                                                         \
        if (rv__ != CH_EMALFORMED)                                                       \
            fprintf(stderr, "  line %d: %s accepted (%d)\n", __LINE__, #stmt, rv__);     \
        placement_free(&q);                                                              \
        CHECK_EQ_INT(rv__, CH_EMALFORMED);                                               \
    } while (0)
    MUTATED(q.version = 0); /* version 0 is only the empty map */
    {
        struct placement empty;
        placement_init(&empty);
        MUTATED((placement_free(&q), placement_init(&q), q.n_nodes = 1));
        MUTATED((placement_free(&q), placement_init(&q), q.n_meta = 1));
        MUTATED((placement_free(&q), placement_init(&q), q.n_shards = 1));
        CHECK_EQ_INT(redecode(&empty), 0);
    }
    MUTATED(q.replicas[4] = q.replicas[3]);  /* shard 1 lists 2 twice */
    MUTATED(q.replicas[0] = 9);              /* unknown node */
    MUTATED(q.replicas[0] = 0);
    MUTATED(q.replicas[6] = 5);              /* shard 2's move target */
    MUTATED(q.nodes[4].addr.id = 1);         /* duplicate node id */
    MUTATED(q.nodes[4].addr.id = 0);
    MUTATED(q.nodes[0].state = 0);
    MUTATED(q.nodes[0].state = 4);
    MUTATED(q.nodes[4].state = PLACEMENT_NODE_REMOVED); /* a move's target */
    MUTATED(q.nodes[0].state = PLACEMENT_NODE_REMOVED); /* holds replicas, meta */
    MUTATED(q.n_meta = 0);
    MUTATED(q.n_meta = CLUSTER_MAX_REPLICATION + 1);
    MUTATED(q.meta[1] = 9);
    MUTATED(q.meta[1] = 1);
    MUTATED(q.meta[1] = 0);
    MUTATED(q.n_shards = 0);
    MUTATED(q.n_nodes = 2);                  /* replicas of unknown nodes */
    MUTATED(q.moves[2].from = 2);            /* not a replica of shard 2 */
    MUTATED(q.moves[2].to = 3);              /* already a replica */
    MUTATED(q.moves[2].to = 9);              /* unknown */
    MUTATED(q.moves[2].to = 0);              /* {4, 0} */
    MUTATED(q.moves[0].to = 5);              /* {0, 5} */
    MUTATED(q.moves[0].from = 1);            /* {1, 0} */
    MUTATED(snprintf(q.nodes[1].addr.raft.host, CLUSTER_HOST_MAX, "localhost"));
    MUTATED(snprintf(q.nodes[1].addr.client.host, CLUSTER_HOST_MAX, "1.2.3"));
    MUTATED(q.nodes[1].addr.gateway.port = 0);
    MUTATED(q.nodes[1].addr.raft.port = 65532);         /* [65532, 65536] */
    MUTATED(q.nodes[1].addr.raft.port = 7004);          /* node 1's meta port */
    MUTATED(q.nodes[1].addr.client.port = 7100);        /* node 1's client */
    MUTATED(q.nodes[1].addr.gateway.port = 7102);       /* its own client */
    MUTATED(q.nodes[1].addr.client.port = 7014);        /* its own meta port */
    MUTATED(memset(q.nodes[1].addr.raft.host, '1', CLUSTER_HOST_MAX - 1)); /* 63 bytes */
#undef MUTATED

    /* limits that need arrays of another size */
    CHECK_EQ_INT(placement_copy(&q, &p), 0);
    q.replication = CLUSTER_MAX_REPLICATION + 1;
    q.n_shards = 1;
    CHECK_EQ_INT(redecode(&q), CH_EMALFORMED); /* (8 cells fit in the 12 allocated) */
    q.n_shards = 4;
    q.replication = 3;
    free(q.replicas);
    free(q.moves);
    q.n_shards = CLUSTER_MAX_SHARDS + 1;
    q.replicas = calloc((size_t)q.n_shards * 3, sizeof *q.replicas);
    q.moves = calloc(q.n_shards, sizeof *q.moves);
    CHECK(q.replicas != NULL && q.moves != NULL);
    CHECK_EQ_INT(redecode(&q), CH_EMALFORMED);
    placement_free(&q);

    /* what stays valid: a removed node's addresses may overlap a live node's */
    CHECK_EQ_INT(placement_copy(&q, &p), 0);
    q.moves[2].from = q.moves[2].to = 0;
    q.nodes[4].state = PLACEMENT_NODE_REMOVED;
    q.nodes[4].addr.client.port = 7100;
    CHECK_EQ_INT(redecode(&q), 0);
    /* ... and a one-voter meta group, in any order */
    q.n_meta = 1;
    q.meta[0] = 4;
    CHECK_EQ_INT(redecode(&q), 0);
    placement_free(&q);
    placement_free(&p);
}

/* ---- back to a config ------------------------------------------------------------- */

static void test_to_config(void)
{
    struct placement p;
    CHECK_EQ_INT(seeded(&p, base_json), 0);
    CHECK_APPLIED(&p, add_cmd(6, "10.0.0.6", 7000, 7100, 7101));
    CHECK_APPLIED(&p, move_cmd(PLACEMENT_MOVE_BEGIN, 1, 3, 6));
    CHECK_APPLIED(&p, move_cmd(PLACEMENT_MOVE_COMMIT, 1, 3, 6));
    CHECK_APPLIED(&p, move_cmd(PLACEMENT_MOVE_BEGIN, 2, 4, 5)); /* not in a config */
    CHECK_APPLIED(&p, add_cmd(7, "10.0.0.7", 7000, 7100, 7101));
    CHECK_APPLIED(&p, state_cmd(7, PLACEMENT_NODE_REMOVED));    /* not appended */
    /* node 5 (in the config) removed and re-added elsewhere: the config keeps its
     * entry as it is */
    CHECK_APPLIED(&p, move_cmd(PLACEMENT_MOVE_ABORT, 2, 4, 5));
    CHECK_APPLIED(&p, state_cmd(5, PLACEMENT_NODE_REMOVED));
    CHECK_APPLIED(&p, add_cmd(5, "10.0.0.5", 7000, 7100, 7101));

    struct cluster_config cfg;
    CHECK_EQ_INT(parse(base_json, &cfg), 0);
    const struct cluster_node *first = &cfg.nodes[0];
    const uint32_t *replicas = cfg.replicas;
    CHECK_EQ_INT(placement_to_config(&p, &cfg, msg, sizeof msg), 0);
    CHECK(cfg.replicas == replicas && &cfg.nodes[0] == first && first->id == 1);
    CHECK_EQ_INT(cfg.n_nodes, 6);
    const struct cluster_node *six = cluster_node_by_id(&cfg, 6);
    CHECK(six == &cfg.nodes[5]);
    CHECK(strcmp(six->raft.host, "10.0.0.6") == 0 && six->raft.port == 7000);
    CHECK(strcmp(six->gateway.host, "10.0.0.6") == 0 && six->gateway.port == 7101);
    CHECK(cluster_node_by_id(&cfg, 7) == NULL);
    CHECK(strcmp(cluster_node_by_id(&cfg, 5)->raft.host, "127.0.0.1") == 0);
    /* shard 1 was 2 3 4: 6 took 3's slot */
    CHECK(cfg.replicas[3] == 2 && cfg.replicas[4] == 6 && cfg.replicas[5] == 4);
    CHECK(cluster_node_has_shard(&cfg, 6, 1) && !cluster_node_has_shard(&cfg, 3, 1));
    CHECK(!cluster_node_has_shard(&cfg, 5, 2));
    for (uint32_t s = 0; s < 4; s++)
        for (uint32_t id = 1; id <= 7; id++)
            CHECK_EQ_INT(cluster_node_has_shard(&cfg, id, s),
                         placement_hosts(&p, id, s) && p.moves[s].to != id);
    CHECK(cluster_node_is_meta(&cfg, 1) && !cluster_node_is_meta(&cfg, 6));
    /* again: nothing more to append */
    CHECK_EQ_INT(placement_to_config(&p, &cfg, msg, sizeof msg), 0);
    CHECK_EQ_INT(cfg.n_nodes, 6);
    cluster_config_free(&cfg);

    /* shapes that differ */
    static const char *const other[] = {
        "{\"name\":\"p\",\"shards\":5,\"replication\":3,\"nodes\":[" NODES5 "]}",
        "{\"name\":\"p\",\"shards\":4,\"replication\":2,\"nodes\":[" NODES5 "]}",
    };
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(parse(other[i], &cfg), 0);
        uint32_t before = cfg.replicas[0];
        msg[0] = '\0';
        CHECK_EQ_INT(placement_to_config(&p, &cfg, msg, sizeof msg), CH_ECONFIG);
        CHECK(strstr(msg, "shards") != NULL);
        CHECK_EQ_INT(cfg.n_nodes, 5);
        CHECK_EQ_INT(cfg.replicas[0], before);
        cluster_config_free(&cfg);
    }
    struct placement empty;
    placement_init(&empty);
    CHECK_EQ_INT(parse(base_json, &cfg), 0);
    CHECK_EQ_INT(placement_to_config(&empty, &cfg, msg, sizeof msg), CH_ECONFIG);

    /* more nodes than CLUSTER_MAX_NODES in all: refused, cfg unchanged */
    for (uint32_t id = 100; p.n_nodes < CLUSTER_MAX_NODES; id++) {
        char host[32];
        snprintf(host, sizeof host, "10.0.1.%u", id);
        CHECK_APPLIED(&p, add_cmd(id, host, 7000, 7100, 7101));
    }
    CHECK_EQ_INT(placement_to_config(&p, &cfg, msg, sizeof msg), 0);
    CHECK_EQ_INT(cfg.n_nodes, CLUSTER_MAX_NODES - 1); /* all but the removed node 7 */
    cluster_config_free(&cfg);
    CHECK_EQ_INT(parse("{\"name\":\"p\",\"shards\":4,\"replication\":3,\"nodes\":["
                       NODE(201, "10.9.0.1", 7000, 7100, 7101) ","
                       NODE(202, "10.9.0.2", 7000, 7100, 7101) ","
                       NODE(203, "10.9.0.3", 7000, 7100, 7101) "]}",
                       &cfg),
                 0);
    uint32_t r0 = cfg.replicas[0];
    CHECK_EQ_INT(placement_to_config(&p, &cfg, msg, sizeof msg), CH_ECONFIG);
    CHECK(strstr(msg, "64") != NULL);
    CHECK_EQ_INT(cfg.n_nodes, 3);
    CHECK_EQ_INT(cfg.replicas[0], r0);
    cluster_config_free(&cfg);
    placement_free(&p);
}

/* ---- randomized: replicas of the map agree ---------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* Mostly plausible commands: ids 0..8, shards 0..4, a small pool of addresses. */
static struct placement_cmd random_cmd(const struct placement *p, struct ch_wbuf *seed)
{
    static const char *const hosts[] = {"127.0.0.1", "10.0.0.9"};
    static const uint16_t rafts[] = {7000, 7004, 7005, 7010, 7050, 7060, 7070, 7080};
    static const uint16_t ports[] = {7004, 7055, 7100, 7101, 7110, 7111, 7112,
                                     7113, 7114, 7115, 7116, 7117, 7118, 7119};
    uint32_t roll = rnd(100);
    if (roll < 2) {
        struct placement_cmd c = move_cmd(PLACEMENT_SEED, 0, 0, 0);
        ch_wbuf_reset(seed);
        placement_encode(p, seed);
        c.seed.ptr = seed->data;
        c.seed.len = seed->len;
        return c;
    }
    if (roll < 3)
        return move_cmd((uint8_t)(rnd(2) ? 0 : 7 + rnd(10)), 0, 0, 0);
    if (roll < 23) {
        const char *host = hosts[rnd(2)];
        return add_cmd(rnd(9), host, rafts[rnd(8)], ports[rnd(14)], ports[rnd(14)]);
    }
    if (roll < 43)
        return state_cmd(rnd(9), (uint8_t)(rnd(10) ? 1 + rnd(3) : rnd(256)));
    uint8_t op = (uint8_t)(PLACEMENT_MOVE_BEGIN + rnd(3));
    uint32_t shard = rnd(p->n_shards + 1);
    uint32_t from = rnd(9), to = rnd(9);
    if (shard < p->n_shards && rnd(4) != 0) {
        const struct placement_move *m = &p->moves[shard];
        if (op != PLACEMENT_MOVE_BEGIN && m->to != 0 && rnd(4) != 0) {
            from = m->from;
            to = m->to;
        } else {
            from = p->replicas[shard * p->replication + rnd(p->replication)];
        }
    }
    return move_cmd(op, shard, from, to);
}

static void test_random_sequences_agree(void)
{
    rng_state = 0x2545f4914f6cdd1dULL;
    uint32_t changes[8] = {0}, rejections = 0;
    struct ch_wbuf seed, enc;
    ch_wbuf_init(&seed);
    ch_wbuf_init(&enc);
    for (int trial = 0; trial < 200; trial++) {
        struct placement a, b;
        CHECK_EQ_INT(seeded(&a, base_json), 0);
        CHECK_EQ_INT(placement_copy(&b, &a), 0);
        for (int step = 0; step < 300; step++) {
            struct placement_cmd c = random_cmd(&a, &seed);
            char msg_a[256], msg_b[256];
            uint64_t version = a.version;
            int ra = placement_apply(&a, &c, msg_a, sizeof msg_a);
            int rb = placement_apply(&b, &c, msg_b, sizeof msg_b);
            if (ra != rb || (ra != 0 && strcmp(msg_a, msg_b) != 0) || !same_map(&a, &b)) {
                fprintf(stderr, "  trial %d step %d op %u: %s / %s (%s)\n", trial, step,
                        c.op, ch_errname(ra), ch_errname(rb), ra ? msg_a : "");
                CHECK(0);
            }
            CHECK(ra != CH_ENOMEM && ra != CH_EINTERNAL);
            if (ra == 0 && a.version != version) {
                CHECK_EQ_U64(a.version, version + 1);
                changes[c.op]++;
            } else if (ra != 0) {
                CHECK_EQ_U64(a.version, version);
                rejections++;
            }
            /* every state is a valid map */
            if (rnd(4) == 0)
                CHECK_EQ_INT(redecode(&a), 0);
            /* now and then b restarts from a's encoding (a snapshot install) */
            if (rnd(10) == 0) {
                ch_wbuf_reset(&enc);
                placement_encode(&a, &enc);
                placement_free(&b);
                CHECK_EQ_INT(placement_decode(enc.data, enc.len, &b, msg, sizeof msg), 0);
            }
        }
        placement_free(&a);
        placement_free(&b);
    }
    /* the sequences did exercise the state machine */
    for (int op = PLACEMENT_NODE_ADD; op <= PLACEMENT_MOVE_ABORT; op++) {
        if (changes[op] < 50)
            fprintf(stderr, "  op %d: only %u changes\n", op, changes[op]);
        CHECK(changes[op] >= 50);
    }
    CHECK(rejections > 1000);
    ch_wbuf_free(&seed);
    ch_wbuf_free(&enc);
}

TEST_MAIN(TEST_CASE(test_from_config_round_trip), TEST_CASE(test_cmd_codec),
          TEST_CASE(test_seed), TEST_CASE(test_node_add), TEST_CASE(test_node_set_state),
          TEST_CASE(test_move_begin_errors), TEST_CASE(test_move_commit),
          TEST_CASE(test_move_abort), TEST_CASE(test_decode_rejects_bad_input),
          TEST_CASE(test_to_config), TEST_CASE(test_random_sequences_agree))
