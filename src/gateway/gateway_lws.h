/* The gateway role's HTTP/WebSocket server: libwebsockets on the node's libuv loop. */
#ifndef CHORUS_GATEWAY_LWS_H
#define CHORUS_GATEWAY_LWS_H

#include <stdint.h>

#include <uv.h>

#include "../cluster/config.h"

struct gw;

/*
 * Starts serving on the node's gateway address, on `loop` (libwebsockets with a
 * foreign libuv loop: it never runs a loop of its own).  Serves GET /healthz so
 * far; the chat API and the web client are added by the gateways milestone.
 * Returns 0, or CH_EIO with a message (for example when the port is taken).
 * Whenever *out is set (also on failure) the caller must gw_stop and gw_free it.
 */
int gw_open(uv_loop_t *loop, const struct cluster_config *cfg, uint32_t node_id,
            struct gw **out, char *err, size_t errlen);

/*
 * Shutdown is two-phase because libwebsockets closes its libuv handles
 * asynchronously: gw_stop starts it (call it when the node begins to stop);
 * gw_free finishes it after uv_run has returned, before uv_loop_close.
 */
void gw_stop(struct gw *gw);
void gw_free(struct gw *gw);

#endif
