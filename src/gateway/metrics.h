/* Prometheus text exposition (format 0.0.4) of a node's metrics, rendered from plain structs. */
#ifndef CHORUS_METRICS_H
#define CHORUS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/codec.h"
#include "../common/histogram.h"

/*
 * The I/O shells gather numbers into these structs (shard_uv.c for the Raft
 * replicas, ops_uv.c / gateway_lws.c for the gateway, main.c for the process);
 * metrics_render turns them into the text that GET /metrics answers.  Every
 * sample carries a `node` label, shard replicas also `shard`.  Counters end in
 * _total; latencies are in seconds.  The family list is in docs/architecture.md.
 */

/* Raft states, in canonical/raft's order (enum raft_state). */
enum metrics_raft_state {
    METRICS_RAFT_UNAVAILABLE,
    METRICS_RAFT_FOLLOWER,
    METRICS_RAFT_CANDIDATE,
    METRICS_RAFT_LEADER,
    METRICS_RAFT_N_STATES
};

/* One shard replica hosted by this node. */
struct metrics_shard {
    uint32_t shard;
    int state; /* enum metrics_raft_state */
    uint64_t term, commit_index, applied_index, snapshot_index;
    uint64_t entries_applied, bytes_applied; /* FSM applies since start (all roles) */
    uint64_t batches_proposed;               /* entries handed to raft_apply */
    uint64_t snapshots_taken, snapshots_installed;
    struct ch_hist batch_commands;   /* commands per proposed entry */
    struct ch_hist apply_latency_ns; /* raft_apply -> apply callback, on the leader */
};

/* A counter split by one label value (e.g. errors by wire code). */
struct metrics_count {
    const char *label;
    uint64_t value;
};

struct metrics_gateway {
    uint64_t connections;  /* WebSockets now */
    uint64_t queued_bytes; /* unsent bytes over every connection's queue */
    uint64_t requests, replies, errors, sends, acks, rate_limited, auth_failures;
    uint64_t slow_consumers, pushes;
    const struct metrics_count *errors_by_code; /* may be NULL: then `errors` unsplit */
    size_t n_errors_by_code;
    /* fanout (fan_stats) */
    uint64_t fan_events, fan_encodes, fan_gaps, fan_fetches, fan_duplicates, fan_overflows;
    /* store client (rpc_stats) */
    uint64_t rpc_calls, rpc_retries, rpc_redirects, rpc_timeouts, rpc_unavailable;
    uint64_t rpc_connects, rpc_disconnects;
};

struct metrics_node {
    uint32_t node;
    const char *version;
    uint64_t uptime_ms;
    const struct metrics_shard *shards;
    size_t n_shards;
    const struct metrics_gateway *gateway; /* NULL: no gateway families */
    /* The data directory's file system (statvfs); have_disk 0: not rendered. */
    int have_disk;
    uint64_t disk_free_bytes, disk_total_bytes;
};

/* The Content-Type of the rendered text. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends the exposition text for m to out.  0, or CH_ENOMEM (out's error flag
 * is set and its contents are incomplete). */
int metrics_render(const struct metrics_node *m, struct ch_wbuf *out);

#endif
