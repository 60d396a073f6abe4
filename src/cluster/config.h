/* Cluster configuration: nodes, shard count, replication factor, placement, tuning. */
#ifndef CHORUS_CLUSTER_CONFIG_H
#define CHORUS_CLUSTER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "../raft-log/clog.h"

#define CLUSTER_MAX_NODES 64
#define CLUSTER_MAX_SHARDS 1024
#define CLUSTER_MAX_REPLICATION 7
#define CLUSTER_HOST_MAX 64

/* An IPv4 dotted address and a port (raft_uv_tcp takes IPv4 only). */
struct cluster_addr {
    char host[CLUSTER_HOST_MAX];
    uint16_t port;
};

/*
 * One node.  Shard s's Raft group listens on raft.host:(raft.port + s) and the meta
 * group on raft.port + shards, so a node uses the ports [raft.port, raft.port +
 * shards].  `client` serves the store RPC,
 * `gateway` the WebSocket/HTTP API (used once the gateway role exists).
 */
struct cluster_node {
    uint32_t id; /* > 0, unique; also the Raft server id in every group */
    struct cluster_addr raft;
    struct cluster_addr client;
    struct cluster_addr gateway;
    /* Optional ("admin"): the node's admin HTTP API (/admin/v1, /metrics) on its
     * own listener; port 0 = served on the gateway address instead. */
    struct cluster_addr admin;
};

struct cluster_raft_tuning {
    uint32_t election_timeout_ms;  /* default 1000 */
    uint32_t heartbeat_timeout_ms; /* default 100 */
    uint32_t snapshot_threshold;   /* entries between snapshots, default 4096 */
    uint32_t snapshot_trailing;    /* entries kept after a snapshot, default 2048 */
    uint32_t max_inflight_entries; /* default 1024 */
    uint32_t max_inflight_batches; /* a shard's uncommitted entries of its own, default 2 */
    uint32_t segment_size;         /* raft_uv open segment bytes, default 1 MiB */
    int pre_vote;                  /* default 1 */
};

/* Authentication of chat users (gateway role). */
struct cluster_auth {
    char secret[257];     /* HS256 key for tokens; required by the gateway role */
    uint32_t token_ttl_s; /* default 86400 */
    uint32_t scrypt_log2_n; /* password KDF cost (N = 2^x), default 14 */
};

/* Operator access: the bearer token GET /metrics requires (empty: no token). */
struct cluster_admin {
    char token[257];
};

/* Token buckets, per user and gateway (login: per connection). */
struct cluster_rate {
    uint32_t send_per_s, send_burst;     /* writes; default 50 / 200 */
    uint32_t typing_per_s, typing_burst; /* default 5 / 10 */
    uint32_t login_per_s, login_burst;   /* register/login; default 5 / 10 */
};

struct cluster_gateway_tuning {
    uint32_t max_frame;       /* bytes of one client message, default 98304 */
    uint32_t rx_buffer;       /* libwebsockets' receive buffer per connection, 65536 */
    uint32_t max_queue_bytes; /* unsent bytes per connection before it is dropped, 4 MiB */
    uint32_t deadline_ms;     /* a write's routing deadline before `unavailable`, 10000 */
    uint32_t max_connections; /* per gateway, default 200000 */
    struct cluster_rate rate;
};

struct cluster_config {
    char name[64];
    uint32_t n_shards;    /* S */
    uint32_t replication; /* R */
    uint32_t n_nodes;
    struct cluster_node nodes[CLUSTER_MAX_NODES];
    /* replicas[s * replication + i]: node id of shard s's i-th replica. */
    uint32_t *replicas;
    struct cluster_raft_tuning raft;
    struct clog_limits limits;
    struct cluster_auth auth;
    struct cluster_gateway_tuning gateway;
    struct cluster_admin admin;
    /* Voters of the meta group (the replicated placement map, placement.h):
     * "meta": [ids], an odd count; default the first min(3, nodes) nodes in file
     * order, but 1 of 2 nodes (an odd number of voters).  The meta group listens
     * on raft.host:(raft.port + shards). */
    uint32_t n_meta;
    uint32_t meta[CLUSTER_MAX_REPLICATION];
};

/*
 * Parses a JSON config (jansson).  Format:
 *   { "name": "local-3", "shards": 16, "replication": 3,
 *     "nodes": [ { "id": 1, "raft": "127.0.0.1:7100", "client": "127.0.0.1:7200",
 *                  "gateway": "127.0.0.1:7300" }, ... ],
 *     "placement": "round-robin" | { "0": [1, 2, 3], ... },   (optional)
 *     "raft": { "election_timeout_ms": 1000, ... },              (optional)
 *     "limits": { "max_body": 65536, "max_members": 100000 },   (optional)
 *     "auth": { "secret": "...", "token_ttl_s": 86400 },         (gateway role)
 *     "gateway": { "max_frame": 98304, "rate": { "send_per_s": 50 } },  (optional)
 *     "admin": { "token": "..." },          (optional: protects /metrics, 16+ chars)
 *     "meta": [1, 2, 3] }                  (optional: meta group voters, odd count)
 * Validates everything (unique ids and addresses, port ranges that fit S shards,
 * R <= nodes, placements of R distinct known nodes, heartbeat < election).  On
 * error returns CH_ECONFIG (or CH_ENOMEM) and writes a message naming the field
 * into err; cfg then needs no free.  On success free with cluster_config_free.
 */
int cluster_config_parse(const char *json, size_t len, struct cluster_config *cfg,
                         char *err, size_t errlen);

/* Reads and parses a file: 0, CH_EIO with a message if it cannot be read, or any
 * error of cluster_config_parse.  ("name", "shards" and "nodes" are required.) */
int cluster_config_load(const char *path, struct cluster_config *cfg, char *err,
                        size_t errlen);

void cluster_config_free(struct cluster_config *cfg);

/* The node with this id, or NULL. */
const struct cluster_node *cluster_node_by_id(const struct cluster_config *cfg, uint32_t id);

/* Does node `id` hold a replica of shard s? */
int cluster_node_has_shard(const struct cluster_config *cfg, uint32_t id, uint32_t shard);

/* Shard of a conversation id / of a user id: stable hashes, uniform over S. */
uint32_t cluster_shard_of_conv(uint64_t conv, uint32_t n_shards);
uint32_t cluster_shard_of_user(const void *user, size_t len, uint32_t n_shards);
/* Shard that owns a command: its user's for user ops (conv 0), else its conversation's. */
struct clog_cmd;
uint32_t cluster_shard_of_cmd(const struct clog_cmd *cmd, uint32_t n_shards);

/* The Raft address of node's replica of shard s, "host:port", into buf. */
void cluster_raft_address(const struct cluster_node *node, uint32_t shard, char *buf,
                          size_t len);

/* Is node `id` a voter of the meta group? */
int cluster_node_is_meta(const struct cluster_config *cfg, uint32_t id);

/* The Raft address of node's replica of the meta group ("host:port + shards"). */
void cluster_meta_address(const struct cluster_node *node, uint32_t n_shards, char *buf,
                          size_t len);

/* Parses "a.b.c.d:port" strictly; 0 or CH_ECONFIG. */
int cluster_addr_parse(const char *s, struct cluster_addr *a);

#endif
