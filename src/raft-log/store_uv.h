/* The store RPC server: accepts gateway/tool connections and serves proto.h over libuv TCP. */
#ifndef CHORUS_STORE_UV_H
#define CHORUS_STORE_UV_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "../cluster/config.h"
#include "../proto/proto.h"
#include "shard_uv.h"

struct meta;
struct placement;

struct store;

struct store_options {
    const struct cluster_config *config;
    uint32_t node_id;
    struct shard **shards;    /* indexed by shard id; NULL where this node has no replica */
    uint64_t start_time_ms;   /* process start (for uptime) */
    size_t max_frame;         /* largest accepted request frame */
    size_t max_conn_backlog;  /* unsent reply bytes before a connection is dropped */
    /* Ephemeral PUBLISH notices from other gateways are handed here (may be NULL);
     * slices in m are valid only during the call. */
    void (*on_publish)(void *data, const struct proto_publish *m);
    void *publish_data;
    /* The meta group's replica on this node (NULL unless a meta voter), and the
     * newest placement map the node knows (the node updates it in place). */
    struct meta *meta;
    const struct placement *placement;
    /* The node's open WebSocket connections, for STATUS (may be NULL). */
    uint32_t (*connections)(void *data);
    void *connections_data;
    /* The data directory's free and total bytes, for STATUS (may be NULL; 0 ok). */
    int (*disk)(void *data, uint64_t *free_bytes, uint64_t *total_bytes);
};

/*
 * Listens on the node's client address.  Returns 0 or CH_EIO with a message (for
 * example "127.0.0.1:7201: address already in use").
 */
int store_listen(uv_loop_t *loop, const struct store_options *opt, struct store **out,
                 char *err, size_t errlen);

/* Sets (or replaces) the handler of PUBLISH notices. */
void store_set_publish(struct store *st, void (*fn)(void *data, const struct proto_publish *m),
                       void *data);

/* Stops accepting, closes every connection; cb runs once all handles closed and
 * the store is freed.  Call before closing the shards. */
void store_close(struct store *st, void (*cb)(void *data), void *data);

#endif
