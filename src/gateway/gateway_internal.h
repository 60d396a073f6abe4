/* Shared between the gateway's lws shell (gateway_lws.c) and its request logic (ops_uv.c). */
#ifndef CHORUS_GATEWAY_INTERNAL_H
#define CHORUS_GATEWAY_INTERNAL_H

#include <stdint.h>

#include <uv.h>

#include "../cluster/config.h"
#include "../common/error.h"
#include "../common/hash.h"
#include "../fanout/fanout.h"
#include "gateway_lws.h"
#include "rpc_uv.h"
#include "session.h"
#include "wire.h"

struct gw_sync;

/*
 * One client: a WebSocket connection, or one REST request (http = 1: it gets
 * exactly one reply, which the shell turns into the HTTP response).  Async work
 * refers to clients by id, never by pointer, so a client may go away at any
 * time; work for a vanished client is dropped when it completes.
 */
struct gw_client {
    uint64_t id; /* map key */
    struct gw *gw;
    void *wsi; /* struct lws *, NULL once the connection is gone */
    int http;
    int authed;
    int account_checked; /* REST: the bearer's account was read and is enabled */
    int followed; /* registered with fanout */
    char user[WIRE_MAX_USER + 1];
    size_t user_len;
    uint64_t token_exp;
    struct sess_queue q;
    struct sess_bucket login_bucket;
    char peer[48]; /* source address, for the per-address login bucket */
    struct gw_sync *syncs;
    int closing; /* a goodbye is queued: close once it is written */
    int batch;   /* connected with /ws?batch=1: newline-separated messages per frame */
    /* REST: the reply (JSON text of a WS reply) and its state */
    char *http_reply;
    size_t http_reply_len;
    int http_status;
};

/*
 * A user seen by this gateway: WebSocket connections (presence) and the token
 * buckets of its requests (WebSocket and REST alike).  It outlives the user's
 * connections by GW_USER_IDLE_MS, so reconnecting does not refill the buckets.
 */
struct gw_user {
    uint32_t conns;
    uint64_t idle_since; /* loop ms when conns dropped to 0 (or it was created) */
    struct sess_bucket send;
    struct sess_bucket typing;
    uint16_t len;
    char name[]; /* map key */
};

/* Login attempts from one source address (register/login bucket). */
struct gw_addr {
    uint64_t idle_since; /* last attempt */
    struct sess_bucket login;
    uint16_t len;
    char name[]; /* map key: the address as text */
};

struct gw {
    uv_loop_t *loop;
    const struct cluster_config *cfg;
    uint32_t node_id;
    void *ctx; /* struct lws_context * */
    char web_dir[512];
    int (*disk_fn)(void *data, uint64_t *free_bytes, uint64_t *total_bytes);
    unsigned (*admin_fn)(void *data, const char *path, const char *query,
                         struct ch_wbuf *out);
    void *admin_data;
    void *admin_vhost; /* struct lws_vhost * of the admin address, or NULL */
    void *disk_data;
    struct rpc *rpc;
    struct rpc_sub **subs; /* per shard: this gateway's follow of its committed stream */
    struct fan *fan;
    struct ch_map clients; /* id -> gw_client */
    uint64_t next_client_id;
    struct ch_map users;    /* name -> gw_user */
    struct ch_map addrs;    /* source address -> gw_addr */
    struct ch_map presence; /* name -> remote presence */
    struct ch_map watchers; /* name -> watch list */
    uv_timer_t timer;
    int timer_open;
    int stopped;
    uint64_t headroom;
    uint8_t *batch_buf; /* LWS_PRE + GW_BATCH_BYTES: a batched frame being written */
    void *protocols; /* struct lws_protocols[2]: the client protocol, the terminator */
    uint64_t presence_refresh_at;
    struct {
        uint64_t connections, requests, replies, errors, rate_limited, auth_failures;
        uint64_t slow_consumers, pushes;
        uint64_t sends, acks; /* send requests; writes acknowledged (committed) */
        uint64_t errors_by_code[CH__ERR_COUNT]; /* error replies by error enum */
    } st;
    /* GET /metrics: this node's shard replicas (set by gw_set_metrics_source) */
    gw_shard_metrics_fn shard_metrics;
    void *shard_metrics_data;
    uint64_t start_ms;
};

/* ---- provided by gateway_lws.c ---- */

/* Queues an encoded message (the client takes a reference).  0 or CH_ELIMIT when
 * the queue is full (the caller closes the client as a slow consumer). */
int gw_client_push(struct gw_client *c, struct fan_msg *m);
/* Queues a copy of JSON text (replies): ignores the queue bound. */
void gw_client_send_text(struct gw_client *c, const void *text, size_t len);
/* Sends a goodbye notice with this code, then closes the connection. */
void gw_client_goodbye(struct gw_client *c, const char *code, const char *message);
struct gw_client *gw_client_find(struct gw *gw, uint64_t id);

/* ---- provided by ops_uv.c ---- */

int gw_core_open(struct gw *gw, char *err, size_t errlen);
void gw_core_stop(struct gw *gw);
void gw_core_free(struct gw *gw);
/* Handles one request text from a client (WS frame or translated REST call). */
void gw_handle_request(struct gw_client *c, const char *text, size_t len);
/* Authenticates a REST client from a bearer token: 0 or an error code. */
int gw_auth_token(struct gw_client *c, const char *token, size_t len);
/* The client's output queue drained (some of it was written): paused catch-up
 * reads continue. */
void gw_client_drained(struct gw_client *c);
/* The client is going away: forget its follows, presence and watches. */
void gw_client_gone(struct gw_client *c);
/* PUBLISH notices from other gateways (store_options.on_publish). */
void gw_on_publish(void *data, const struct proto_publish *m);

#endif
