/* Unit tests of leader balancing (src/ctl/balance): plans for hand-made and random clusters. */
#include <stdint.h>
#include <string.h>

#include "common/error.h"
#include "ctl/balance.h"
#include "test.h"

/* ---- helpers ---------------------------------------------------------------------- */

#define MAX_NODES 8
#define MAX_SHARDS 64
#define MAX_R 3

struct cluster {
    uint32_t ids[MAX_NODES];
    uint8_t up[MAX_NODES];
    uint32_t replicas[MAX_SHARDS * MAX_R];
    uint32_t leader[MAX_SHARDS];
    struct balance_input in;
};

/* n nodes with ids 1..n, all up; round-robin placement; every leader 0. */
static void cluster_init(struct cluster *c, uint32_t n, uint32_t shards, uint32_t r)
{
    memset(c, 0, sizeof *c);
    for (uint32_t i = 0; i < n; i++) {
        c->ids[i] = i + 1;
        c->up[i] = 1;
    }
    for (uint32_t s = 0; s < shards; s++)
        for (uint32_t k = 0; k < r; k++)
            c->replicas[s * r + k] = (s + k) % n + 1;
    c->in = (struct balance_input){.n_nodes = n,
                                   .node_ids = c->ids,
                                   .node_up = c->up,
                                   .n_shards = shards,
                                   .replication = r,
                                   .replicas = c->replicas,
                                   .leader = c->leader};
}

static int is_up_replica(const struct cluster *c, uint32_t shard, uint32_t node)
{
    for (uint32_t k = 0; k < c->in.replication; k++)
        if (c->replicas[shard * c->in.replication + k] == node)
            return c->up[node - 1];
    return 0;
}

/*
 * The best spread any placement-respecting assignment reaches, by Hall-type
 * bounds over every set T of up nodes: the largest count is at least
 * ceil(#shards confined to T / |T|), the smallest at most
 * floor(#shards touching T / |T|), and the optimum meets both.
 */
static uint32_t best_spread(const struct cluster *c)
{
    const struct balance_input *in = &c->in;
    uint32_t hi = 0, lo = UINT32_MAX;
    for (uint32_t T = 1; T < (1u << in->n_nodes); T++) {
        uint32_t size = 0, inside = 0, touching = 0;
        int ok = 1;
        for (uint32_t i = 0; i < in->n_nodes; i++)
            if (T & (1u << i)) {
                size++;
                ok = ok && c->up[i];
            }
        if (!ok)
            continue;
        for (uint32_t s = 0; s < in->n_shards; s++) {
            if (c->leader[s] == 0 || !c->up[c->leader[s] - 1])
                continue;
            uint32_t in_t = 0, up = 0;
            for (uint32_t k = 0; k < in->replication; k++) {
                uint32_t node = c->replicas[s * in->replication + k];
                if (!c->up[node - 1])
                    continue;
                up++;
                in_t += (T >> (node - 1)) & 1;
            }
            inside += in_t == up;
            touching += in_t > 0;
        }
        uint32_t need = (inside + size - 1) / size, give = touching / size;
        hi = need > hi ? need : hi;
        lo = give < lo ? give : lo;
    }
    return lo == UINT32_MAX ? 0 : hi - lo;
}

/* Plans, checks that every move is legal and that the counts add up; returns the
 * spread after the plan (UINT32_MAX when a check failed). */
static uint32_t plan_and_check(const struct cluster *c, struct balance_plan *p)
{
    if (balance_plan(&c->in, p) != 0)
        return UINT32_MAX;
    uint32_t leader[MAX_SHARDS], counts[MAX_NODES] = {0};
    memcpy(leader, c->leader, sizeof leader);
    for (size_t m = 0; m < p->n_moves; m++) {
        const struct balance_move *mv = &p->moves[m];
        if (mv->shard >= c->in.n_shards || leader[mv->shard] != mv->from ||
            mv->from != c->leader[mv->shard] || mv->to == mv->from ||
            !is_up_replica(c, mv->shard, mv->to))
            return UINT32_MAX; /* illegal, or a shard moved twice */
        leader[mv->shard] = mv->to;
    }
    for (uint32_t s = 0; s < c->in.n_shards; s++)
        if (leader[s] != 0 && c->up[leader[s] - 1])
            counts[leader[s] - 1]++;
    for (uint32_t i = 0; i < c->in.n_nodes; i++)
        if (counts[i] != p->counts[i])
            return UINT32_MAX;
    return balance_spread(&c->in, p->counts);
}

/* ---- cases ------------------------------------------------------------------------ */

static void test_skewed_all_on_one_node(void)
{
    struct cluster c;
    cluster_init(&c, 3, 16, 3);
    for (uint32_t s = 0; s < 16; s++)
        c.leader[s] = 1;
    struct balance_plan p;
    CHECK_EQ_INT(plan_and_check(&c, &p), 1);
    CHECK_EQ_U64(p.n_moves, 10); /* 16 -> 6/5/5 */
    CHECK_EQ_INT(p.counts[0], 6);
    CHECK_EQ_INT(p.counts[1] + p.counts[2], 10);
    balance_plan_free(&p);
}

static void test_already_balanced_is_empty(void)
{
    struct cluster c;
    cluster_init(&c, 3, 16, 3);
    for (uint32_t s = 0; s < 16; s++)
        c.leader[s] = s % 3 + 1;
    struct balance_plan p;
    CHECK_EQ_INT(plan_and_check(&c, &p), 1);
    CHECK_EQ_U64(p.n_moves, 0);
    balance_plan_free(&p);

    /* exactly even: spread 0, nothing to do */
    cluster_init(&c, 3, 15, 3);
    for (uint32_t s = 0; s < 15; s++)
        c.leader[s] = s % 3 + 1;
    CHECK_EQ_INT(plan_and_check(&c, &p), 0);
    CHECK_EQ_U64(p.n_moves, 0);
    balance_plan_free(&p);
}

static void test_node_down_gets_nothing(void)
{
    struct cluster c;
    cluster_init(&c, 3, 12, 3);
    c.up[2] = 0;
    for (uint32_t s = 0; s < 12; s++)
        c.leader[s] = s < 10 ? 1 : 2;
    struct balance_plan p;
    CHECK_EQ_INT(plan_and_check(&c, &p), 0);
    CHECK_EQ_INT(p.counts[0], 6);
    CHECK_EQ_INT(p.counts[1], 6);
    CHECK_EQ_INT(p.counts[2], 0);
    for (size_t m = 0; m < p.n_moves; m++)
        CHECK(p.moves[m].to != 3);
    balance_plan_free(&p);
}

static void test_shards_without_leader_are_left_alone(void)
{
    struct cluster c;
    cluster_init(&c, 3, 6, 3);
    c.leader[0] = c.leader[1] = c.leader[2] = 1; /* 3..5: electing */
    struct balance_plan p;
    CHECK_EQ_INT(plan_and_check(&c, &p), 0);
    CHECK_EQ_U64(p.n_moves, 2);
    for (size_t m = 0; m < p.n_moves; m++)
        CHECK(p.moves[m].shard < 3);
    balance_plan_free(&p);
}

/* A leader can only go to a replica of its shard: the best spread may be > 1. */
static void test_placement_limits_the_spread(void)
{
    struct cluster c;
    cluster_init(&c, 3, 6, 2);
    for (uint32_t s = 0; s < 6; s++) {
        c.replicas[s * 2] = 1;
        c.replicas[s * 2 + 1] = 2; /* node 3 holds no shard */
        c.leader[s] = 1;
    }
    struct balance_plan p;
    CHECK_EQ_INT(plan_and_check(&c, &p), 3); /* 3/3/0 is the best */
    CHECK_EQ_INT(best_spread(&c), 3);
    CHECK_EQ_INT(p.counts[0], 3);
    CHECK_EQ_INT(p.counts[1], 3);
    balance_plan_free(&p);
}

/*
 * Node 1 leads 3 shards placed on {1,2}, node 2 leads 2 placed on {2,3}, node 3
 * none: no single move helps (1 -> 2 only evens 1 and 2), the chain 1 -> 2 -> 3
 * does.  The plan still moves each shard once.
 */
static void test_chain_through_a_middle_node(void)
{
    struct cluster c;
    cluster_init(&c, 3, 5, 2);
    for (uint32_t s = 0; s < 5; s++) {
        c.replicas[s * 2] = s < 3 ? 1 : 2;
        c.replicas[s * 2 + 1] = s < 3 ? 2 : 3;
        c.leader[s] = s < 3 ? 1 : 2;
    }
    struct balance_plan p;
    CHECK_EQ_INT(plan_and_check(&c, &p), 1);
    CHECK_EQ_U64(p.n_moves, 2);
    CHECK_EQ_INT(p.counts[0], 2);
    CHECK_EQ_INT(p.counts[2], 1);
    balance_plan_free(&p);
}

static void test_bad_input(void)
{
    struct cluster c;
    cluster_init(&c, 3, 4, 3);
    c.leader[2] = 9; /* not a node */
    struct balance_plan p;
    CHECK_EQ_INT(balance_plan(&c.in, &p), CH_EINVAL);
    CHECK(p.moves == NULL && p.n_moves == 0 && p.counts == NULL);
    cluster_init(&c, 3, 4, 3);
    c.replicas[5] = 0;
    CHECK_EQ_INT(balance_plan(&c.in, &p), CH_EINVAL);
    /* nothing at all */
    cluster_init(&c, 3, 0, 3);
    CHECK_EQ_INT(balance_plan(&c.in, &p), 0);
    CHECK_EQ_U64(p.n_moves, 0);
    balance_plan_free(&p);
}

/* Random placements, failures and leaders (fixed seed): always legal, always optimal. */
static void test_random_clusters_reach_the_best_spread(void)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
#define RND(n) ((uint32_t)((x = x * 6364136223846793005ull + 1442695040888963407ull) >> 33) % (n))
    for (int round = 0; round < 3000; round++) {
        struct cluster c;
        uint32_t n = 2 + RND(MAX_NODES - 1), r = 1 + RND(n < MAX_R ? n : MAX_R);
        uint32_t shards = RND(MAX_SHARDS + 1);
        cluster_init(&c, n, shards, r);
        for (uint32_t s = 0; s < shards; s++) {
            /* r distinct random nodes */
            for (uint32_t k = 0; k < r; k++) {
                uint32_t v;
                int dup;
                do {
                    v = 1 + RND(n);
                    dup = 0;
                    for (uint32_t j = 0; j < k; j++)
                        dup |= c.replicas[s * r + j] == v;
                } while (dup);
                c.replicas[s * r + k] = v;
            }
        }
        for (uint32_t i = 0; i < n; i++)
            c.up[i] = RND(5) != 0;
        for (uint32_t s = 0; s < shards; s++) {
            uint32_t v = c.replicas[s * r + RND(r)];
            /* mostly skewed towards the shard's first up replica */
            for (uint32_t k = 0; k < r && RND(3) != 0; k++)
                if (c.up[c.replicas[s * r + k] - 1]) {
                    v = c.replicas[s * r + k];
                    break;
                }
            c.leader[s] = c.up[v - 1] && RND(10) != 0 ? v : 0;
        }
        struct balance_plan p;
        uint32_t spread = plan_and_check(&c, &p);
        if (spread != best_spread(&c))
            fprintf(stderr, "  round %d: n=%u r=%u shards=%u spread %u, best %u\n", round, n,
                    r, shards, spread, best_spread(&c));
        CHECK_EQ_INT(spread, best_spread(&c));
        balance_plan_free(&p);
    }
#undef RND
}

TEST_MAIN(TEST_CASE(test_skewed_all_on_one_node), TEST_CASE(test_already_balanced_is_empty),
          TEST_CASE(test_node_down_gets_nothing),
          TEST_CASE(test_shards_without_leader_are_left_alone),
          TEST_CASE(test_placement_limits_the_spread),
          TEST_CASE(test_chain_through_a_middle_node), TEST_CASE(test_bad_input),
          TEST_CASE(test_random_clusters_reach_the_best_spread))
