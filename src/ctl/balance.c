/*
 * Leader balancing (see balance.h).
 *
 * Shards are unit jobs, nodes are machines, and a shard may only run on the up
 * nodes of its placement: a semi-matching.  An assignment minimises the largest
 * load (and every convex cost of the loads) exactly when it has no cost-reducing
 * path -- a chain u0 -> u1 -> ... -> uk where each step hands one of u_i's shards
 * to u_{i+1} (a replica of that shard) and load(uk) <= load(u0) - 2 (Harvey,
 * Ladner, Lovasz, Tamir, "Semi-matchings for bipartite graphs and load
 * balancing", 2003).  So: search such paths breadth-first and apply them until
 * none is left.  Each applied path lowers the sum of squared loads by at least
 * 2, which bounds the loop.  The plan is then the difference between the first
 * and the final assignment, one move per shard whose leader changed (moves of
 * different shards are independent, so the intermediate steps of a chain are
 * never executed as such).
 */
#include "balance.h"

#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

/* Index of a node id, or -1. */
static int node_index(const struct balance_input *in, uint32_t id)
{
    for (uint32_t i = 0; i < in->n_nodes; i++)
        if (in->node_ids[i] == id)
            return (int)i;
    return -1;
}

uint32_t balance_spread(const struct balance_input *in, const uint32_t *counts)
{
    uint32_t lo = UINT32_MAX, hi = 0;
    for (uint32_t i = 0; i < in->n_nodes; i++) {
        if (!in->node_up[i])
            continue;
        lo = counts[i] < lo ? counts[i] : lo;
        hi = counts[i] > hi ? counts[i] : hi;
    }
    return lo == UINT32_MAX ? 0 : hi - lo;
}

struct state {
    const struct balance_input *in;
    int *assign;    /* per shard: node index leading it, -1 if it does not take part */
    int *cand;      /* per shard x replication: node index of an up replica, or -1 */
    uint32_t *load; /* per node index */
    /* BFS scratch, per node index */
    int *parent_node, *parent_shard, *queue, *order;
    char *seen;
};

/*
 * Looks for a cost-reducing path starting at node u and applies the one that
 * ends at the least loaded reachable node (shortest such path on ties).
 * Returns 1 when it changed the assignment.
 */
static int improve_from(struct state *st, int u)
{
    const struct balance_input *in = st->in;
    uint32_t R = in->replication;
    memset(st->seen, 0, in->n_nodes);
    int head = 0, tail = 0, best = -1;
    st->queue[tail++] = u;
    st->seen[u] = 1;
    st->parent_node[u] = -1;
    while (head < tail) {
        int v = st->queue[head++];
        for (uint32_t s = 0; s < in->n_shards; s++) {
            if (st->assign[s] != v)
                continue;
            for (uint32_t k = 0; k < R; k++) {
                int w = st->cand[s * R + k];
                if (w < 0 || st->seen[w])
                    continue;
                st->seen[w] = 1;
                st->parent_node[w] = v;
                st->parent_shard[w] = (int)s;
                st->queue[tail++] = w;
                if (st->load[w] + 2 <= st->load[u] && (best < 0 || st->load[w] < st->load[best]))
                    best = w;
            }
        }
    }
    if (best < 0)
        return 0;
    for (int w = best; st->parent_node[w] >= 0; w = st->parent_node[w])
        st->assign[st->parent_shard[w]] = w;
    st->load[u]--;
    st->load[best]++;
    return 1;
}

/* Tries the up nodes as sources, busiest first; 1 if some path was applied. */
static int improve(struct state *st)
{
    const struct balance_input *in = st->in;
    int n = 0;
    for (uint32_t i = 0; i < in->n_nodes; i++) {
        if (!in->node_up[i])
            continue;
        int j = n++;
        while (j > 0 && st->load[st->order[j - 1]] < st->load[i]) {
            st->order[j] = st->order[j - 1];
            j--;
        }
        st->order[j] = (int)i;
    }
    for (int k = 0; k < n; k++)
        if (improve_from(st, st->order[k]))
            return 1;
    return 0;
}

void balance_plan_free(struct balance_plan *plan)
{
    free(plan->moves);
    free(plan->counts);
    memset(plan, 0, sizeof *plan);
}

int balance_plan(const struct balance_input *in, struct balance_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    uint32_t S = in->n_shards, R = in->replication, N = in->n_nodes;
    struct state st = {.in = in};
    st.assign = malloc((S ? S : 1) * sizeof *st.assign);
    st.cand = malloc((S * R > 0 ? S * R : 1) * sizeof *st.cand);
    st.load = calloc(N ? N : 1, sizeof *st.load);
    st.parent_node = malloc((N ? N : 1) * sizeof(int));
    st.parent_shard = malloc((N ? N : 1) * sizeof(int));
    st.queue = malloc((N ? N : 1) * sizeof(int));
    st.order = malloc((N ? N : 1) * sizeof(int));
    st.seen = malloc(N ? N : 1);
    int *first = malloc((S ? S : 1) * sizeof *first);
    plan->moves = malloc((S ? S : 1) * sizeof *plan->moves);
    plan->counts = calloc(N ? N : 1, sizeof *plan->counts);
    int err = 0;
    if (!st.assign || !st.cand || !st.load || !st.parent_node || !st.parent_shard ||
        !st.queue || !st.order || !st.seen || !first || !plan->moves || !plan->counts)
        err = CH_ENOMEM;
    for (uint32_t s = 0; s < S && err == 0; s++) {
        st.assign[s] = -1;
        int l = in->leader[s] ? node_index(in, in->leader[s]) : -1;
        if (in->leader[s] && l < 0)
            err = CH_EINVAL;
        for (uint32_t k = 0; k < R && err == 0; k++) {
            int c = node_index(in, in->replicas[s * R + k]);
            if (c < 0)
                err = CH_EINVAL;
            st.cand[s * R + k] = c >= 0 && in->node_up[c] ? c : -1;
        }
        if (l >= 0 && in->node_up[l]) {
            st.assign[s] = l;
            st.load[l]++;
        }
    }
    if (err == 0) {
        memcpy(first, st.assign, S * sizeof *first);
        while (improve(&st))
            ;
        /* The moves, busiest giver first, simulated on the starting loads. */
        uint32_t *load = plan->counts;
        for (uint32_t s = 0; s < S; s++)
            if (first[s] >= 0)
                load[first[s]]++;
        for (;;) {
            int pick = -1;
            long best_gap = 0;
            for (uint32_t s = 0; s < S; s++) {
                if (first[s] == st.assign[s])
                    continue;
                long gap = (long)load[first[s]] - (long)load[st.assign[s]];
                if (pick < 0 || gap > best_gap) {
                    pick = (int)s;
                    best_gap = gap;
                }
            }
            if (pick < 0)
                break;
            plan->moves[plan->n_moves++] = (struct balance_move){
                .shard = (uint32_t)pick,
                .from = in->node_ids[first[pick]],
                .to = in->node_ids[st.assign[pick]],
            };
            load[first[pick]]--;
            load[st.assign[pick]]++;
            first[pick] = st.assign[pick];
        }
    }
    free(st.assign);
    free(st.cand);
    free(st.load);
    free(st.parent_node);
    free(st.parent_shard);
    free(st.queue);
    free(st.order);
    free(st.seen);
    free(first);
    if (err != 0)
        balance_plan_free(plan);
    return err;
}
