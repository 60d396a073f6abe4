/* Leader balancing for chorusctl: plans leadership moves that spread shard leaders evenly (pure). */
#ifndef CHORUS_CTL_BALANCE_H
#define CHORUS_CTL_BALANCE_H

#include <stddef.h>
#include <stdint.h>

/*
 * The cluster as `chorusctl status` saw it.  All arrays are borrowed.  A shard
 * takes part when its leader is an up node; its leader may move only to another
 * up node of its placement (replicas).
 */
struct balance_input {
    uint32_t n_nodes;
    const uint32_t *node_ids; /* n_nodes */
    const uint8_t *node_up;   /* n_nodes: non-zero when the node answered */
    uint32_t n_shards;
    uint32_t replication;
    const uint32_t *replicas; /* n_shards x replication node ids: the placement */
    const uint32_t *leader;   /* n_shards: the current leader's node id, 0 if none */
};

/* One leadership transfer: shard's leader moves from node `from` to node `to`. */
struct balance_move {
    uint32_t shard;
    uint32_t from, to;
};

struct balance_plan {
    struct balance_move *moves; /* at most one per shard, in the order to run them */
    size_t n_moves;
    uint32_t *counts; /* n_nodes: leaders per node (by index) once the plan ran */
};

/*
 * Computes a plan after which the leader counts of the up nodes are as even as
 * the placement allows: no node can give a leader away, directly or through a
 * chain of moves, to a node with at least two fewer (for unit loads on a
 * bipartite placement that is the optimum: the largest count is the smallest
 * possible and the smallest the largest possible).  Each shard moves at most
 * once, from its current leader; moves are ordered so that the busiest node
 * gives first.  Already balanced input gives an empty plan.
 * Returns 0 (free the plan with balance_plan_free), CH_EINVAL for inconsistent
 * input (a node id outside node_ids in leader/replicas) or CH_ENOMEM; on error
 * *plan is empty.
 */
int balance_plan(const struct balance_input *in, struct balance_plan *plan);

void balance_plan_free(struct balance_plan *plan);

/* max - min of counts over the up nodes (0 with no up node). */
uint32_t balance_spread(const struct balance_input *in, const uint32_t *counts);

#endif
