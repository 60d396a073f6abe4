/* The gateway role's HTTP/WebSocket server: libwebsockets on the node's libuv loop. */
#ifndef CHORUS_GATEWAY_LWS_H
#define CHORUS_GATEWAY_LWS_H

#include <stdint.h>

#include <uv.h>

#include "../cluster/config.h"
#include "../common/codec.h"

struct gw;
struct metrics_shard;

/* Fills out[0..max) with this node's shard replicas for GET /metrics and returns
 * how many it filled (main.c gathers them from shard_uv.c). */
typedef size_t (*gw_shard_metrics_fn)(void *data, struct metrics_shard *out, size_t max);

/*
 * Starts serving on the node's gateway address, on `loop` (libwebsockets with a
 * foreign libuv loop: it never runs a loop of its own): the WebSocket and REST
 * chat API (docs/protocol.md), /healthz and the web client from web_dir (NULL:
 * web/ found beside the binary's build directory).  The gateway reaches the
 * stores through the cluster's client addresses, including this node's own.
 * Returns 0, or CH_EIO / CH_ECONFIG with a message (for example when the port is
 * taken or auth.secret is missing).  Whenever *out is set (also on failure) the
 * caller must gw_stop and gw_free it.
 */
int gw_open(uv_loop_t *loop, const struct cluster_config *cfg, uint32_t node_id,
            const char *web_dir, struct gw **out, char *err, size_t errlen);

/* Handler for ephemeral PUBLISH notices that reach this node's store RPC server
 * (typing, presence from other gateways); data is the gw. */
struct proto_publish;
void gw_on_publish(void *data, const struct proto_publish *m);

/* Sets where GET /metrics finds the shard replicas, and the process start time
 * (uv_now ms) for its uptime.  Without it /metrics shows no shards. */
void gw_set_metrics_source(struct gw *gw, gw_shard_metrics_fn fn, void *data,
                           uint64_t start_ms);

/* Sets where GET /metrics reads the data directory's free and total bytes
 * (returns 0 when it could). */
typedef int (*gw_disk_fn)(void *data, uint64_t *free_bytes, uint64_t *total_bytes);
void gw_set_disk_source(struct gw *gw, gw_disk_fn fn, void *data);

/*
 * The admin HTTP API (GET /admin/v1/...): fn writes the JSON body for `path`
 * (e.g. "/admin/v1/status") and `query` (may be empty) into out and returns the
 * HTTP status.  Served, behind the admin token, on the node's admin address when
 * the config gives one, else on the gateway address.
 */
typedef unsigned (*gw_admin_fn)(void *data, const char *path, const char *query,
                                struct ch_wbuf *out);
void gw_set_admin_source(struct gw *gw, gw_admin_fn fn, void *data);

/* Open WebSocket connections right now. */
uint32_t gw_connections(const struct gw *gw);

/* The config gained nodes (a placement change): let the store client know them. */
void gw_sync_nodes(struct gw *gw);

/*
 * Shutdown is two-phase because libwebsockets closes its libuv handles
 * asynchronously: gw_stop starts it (call it when the node begins to stop);
 * gw_free finishes it after uv_run has returned, before uv_loop_close.
 */
void gw_stop(struct gw *gw);
void gw_free(struct gw *gw);

#endif
