/* The replicated placement map: the state machine of the meta Raft group. */
#ifndef CHORUS_CLUSTER_PLACEMENT_H
#define CHORUS_CLUSTER_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/codec.h"
#include "config.h"

/*
 * Which nodes belong to the cluster and which of them hold each shard's
 * replicas.  It lives in the meta group (a small Raft group on the config's
 * "meta" nodes), so membership changes and shard moves survive restarts and
 * every node and gateway learns the same map.  The static config seeds it once,
 * when the meta group is created (PLACEMENT_SEED); after that the config's
 * placement is never read again.
 *
 * Pure: no I/O, deterministic.  Every replica of the meta group applies the same
 * commands in the same order and reaches the same state; a rejected command
 * changes nothing (and is rejected on every replica alike).
 *
 * A shard move from node A to node B is three commands around the Raft
 * membership change of the shard itself (docs/operations.md):
 *   MOVE_BEGIN(s, A, B)  -> B hosts a (joining) replica of s, A still does
 *   ... the shard's leader adds B, catches it up, promotes it, removes A ...
 *   MOVE_COMMIT(s, A, B) -> B replaces A in s's replica list; A drops its copy
 * or MOVE_ABORT(s, A, B) -> nothing changed; B drops its partial copy.
 */

enum placement_node_state {
    PLACEMENT_NODE_ACTIVE = 1,   /* may receive replicas and leaders */
    PLACEMENT_NODE_DRAINING = 2, /* keeps its replicas; gets no new ones, no leaders */
    PLACEMENT_NODE_REMOVED =
        3, /* holds nothing; kept so its id is never reused silently */
};

struct placement_node {
    struct cluster_node addr; /* id and addresses */
    uint8_t state;            /* enum placement_node_state */
};

/* A move in progress of one shard: from -> to.  to == 0: no move. */
struct placement_move {
    uint32_t from, to;
};

struct placement {
    uint64_t version; /* successful changes applied; 0 = not seeded yet */
    uint32_t n_shards, replication;
    uint32_t n_meta;
    uint32_t meta[CLUSTER_MAX_REPLICATION]; /* node ids of the meta group's voters */
    uint32_t n_nodes;
    struct placement_node nodes[CLUSTER_MAX_NODES];
    uint32_t *replicas;           /* replicas[s * replication + i], like the config's */
    struct placement_move *moves; /* moves[s] */
};

enum placement_op {
    PLACEMENT_SEED = 1,           /* seed: an encoded placement (placement_encode) */
    PLACEMENT_NODE_ADD = 2,       /* node: id and addresses (state ignored: ACTIVE) */
    PLACEMENT_NODE_SET_STATE = 3, /* node.addr.id, node.state */
    PLACEMENT_MOVE_BEGIN = 4,     /* shard, from, to */
    PLACEMENT_MOVE_COMMIT = 5,    /* shard, from, to */
    PLACEMENT_MOVE_ABORT = 6,     /* shard, from, to */
};

struct placement_cmd {
    uint8_t op;
    uint32_t shard, from, to;
    struct placement_node node;
    struct ch_slice seed; /* SEED: borrowed encoded placement */
};

/* An empty, unseeded map (version 0). */
void placement_init(struct placement *p);
void placement_free(struct placement *p);

/*
 * The map a config describes: every config node ACTIVE, the config's placement,
 * no moves, version 1, meta = cfg's meta voters.  0 or CH_ENOMEM.
 */
int placement_from_config(struct placement *p, const struct cluster_config *cfg);

/* Deep copy (dst is overwritten; free it first if it held a map). 0 or CH_ENOMEM. */
int placement_copy(struct placement *dst, const struct placement *src);

/*
 * Snapshot / wire form of a whole map: format version, fields, CRC32C trailer.
 * placement_decode is bounded and checks everything: limits of config.h, known
 * and distinct node ids, R distinct replicas per shard among non-removed nodes,
 * moves between known nodes, meta voters known; CH_EMALFORMED, CH_ECORRUPT,
 * CH_EVERSION or CH_ENOMEM with a message.  On error *out is left unseeded
 * (needs no free beyond placement_free, which is always safe).
 */
void placement_encode(const struct placement *p, struct ch_wbuf *b);
int placement_decode(const void *buf, size_t len, struct placement *out, char *err,
                     size_t errlen);

/* Commands (the meta group's Raft entries).  decode: 0 or CH_EMALFORMED /
 * CH_EUNKNOWN_OP; SEED's slice borrows buf. */
void placement_cmd_encode(const struct placement_cmd *c, struct ch_wbuf *b);
int placement_cmd_decode(const void *buf, size_t len, struct placement_cmd *c);

/*
 * Applies one command.  Returns 0 (applied, or an idempotent repeat that
 * changes nothing) or an error with a message in msg, the state unchanged:
 *   SEED: CH_EEXISTS when already seeded; decode errors of the seed.
 *   any other op before SEED: CH_EUNAVAILABLE.
 *   NODE_ADD: CH_EINVAL (id 0, an address or raft port range [port, port+S]
 *     that overlaps another non-removed node's); CH_EEXISTS (id known with
 *     other addresses and not removed); CH_ELIMIT (CLUSTER_MAX_NODES);
 *     re-adding a REMOVED node makes it ACTIVE with the new addresses.
 *   NODE_SET_STATE: CH_ENOTFOUND; CH_EINVAL for a bad state, for REMOVED while
 *     the node holds replicas, is part of a move, or is a meta voter, and for
 *     ACTIVE/DRAINING of a removed node (add it again instead).
 *   MOVE_BEGIN: CH_EINVAL (shard out of range, from not a replica of it, to
 *     already one, to unknown or not ACTIVE, from == to); CH_EEXISTS when
 *     another move of the shard is in progress (the same move again: 0).
 *   MOVE_COMMIT: replaces from by to in the same slot.  The same move already
 *     committed (no move, to a replica, from not): 0.  Otherwise CH_EINVAL.
 *   MOVE_ABORT: clears the move; no move in progress: 0; another move: CH_EINVAL.
 * Every applied change increments version.
 */
int placement_apply(struct placement *p, const struct placement_cmd *c, char *msg,
                    size_t msglen);

/* The node record with this id, or NULL. */
const struct placement_node *placement_node(const struct placement *p, uint32_t id);

/* Should node `id` host a replica of shard s: a replica, or the target of its move? */
int placement_hosts(const struct placement *p, uint32_t id, uint32_t shard);

/* Number of replicas node `id` holds (targets of moves included). */
uint32_t placement_count(const struct placement *p, uint32_t id);

/*
 * Makes cfg describe the map: cfg->replicas takes p's replicas; nodes of p that
 * cfg lacks are appended to cfg->nodes (existing ones keep their addresses).
 * CH_ECONFIG with a message when shards or replication differ, or a node cannot
 * be added (CLUSTER_MAX_NODES).  Safe to call while others hold pointers into
 * cfg->nodes (entries never move) and cfg->replicas (rewritten in place).
 */
int placement_to_config(const struct placement *p, struct cluster_config *cfg, char *err,
                        size_t errlen);

#endif
