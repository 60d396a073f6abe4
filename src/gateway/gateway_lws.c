/*
 * The gateway's libwebsockets shell.  libwebsockets runs on the node's own libuv
 * loop (LWS_SERVER_OPTION_LIBUV with a foreign loop), so chat sessions, Raft
 * groups and the store RPC share one thread.  The vhost is created explicitly so
 * that a failed bind is reported instead of leaving a half-dead context.
 */
#include <uv.h>
#include <libwebsockets.h>

#include "gateway_lws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../common/log.h"

struct gw {
    struct lws_context *ctx;
    uint32_t node_id;
    int stopped;
};

/* One complete small response, written in LWS_CALLBACK_HTTP. */
static int respond(struct lws *wsi, unsigned status, const char *type, const char *body)
{
    unsigned char buf[LWS_PRE + 1024];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    size_t len = strlen(body);
    if (lws_add_http_common_headers(wsi, status, type, (lws_filepos_t)len, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (len > sizeof buf - LWS_PRE - 1)
        return -1;
    memcpy(start, body, len);
    if (lws_write(wsi, start, len, LWS_WRITE_HTTP_FINAL) != (int)len)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int http_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    (void)user;
    (void)len;
    if (reason != LWS_CALLBACK_HTTP)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    struct gw *gw = lws_context_user(lws_get_context(wsi));
    const char *path = in;
    char body[256];
    if (strcmp(path, "/healthz") == 0) {
        snprintf(body, sizeof body, "{\"status\":\"ok\",\"node\":%u}\n", gw->node_id);
        return respond(wsi, HTTP_STATUS_OK, "application/json", body);
    }
    snprintf(body, sizeof body,
             "{\"error\":{\"code\":\"not_found\",\"message\":\"no such endpoint\"}}\n");
    return respond(wsi, HTTP_STATUS_NOT_FOUND, "application/json", body);
}

static const struct lws_protocols protocols[] = {
    {"http", http_cb, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log_bridge(int level, const char *line)
{
    /* libwebsockets' lines end in a newline; ours are added by ch_log */
    int n = (int)strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    ch_log(level == LLL_ERR ? CH_LOG_ERROR : CH_LOG_WARN, -1, "lws: %.*s", n, line);
}

int gw_open(uv_loop_t *loop, const struct cluster_config *cfg, uint32_t node_id,
            struct gw **out, char *err, size_t errlen)
{
    const struct cluster_node *self = cluster_node_by_id(cfg, node_id);
    *out = NULL;
    if (self == NULL) {
        snprintf(err, errlen, "node %u is not in the config", node_id);
        return CH_ECONFIG;
    }
    struct gw *gw = calloc(1, sizeof *gw);
    if (gw == NULL) {
        snprintf(err, errlen, "out of memory");
        return CH_ENOMEM;
    }
    gw->node_id = node_id;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_bridge);

    void *foreign_loops[1] = {loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN |
                   LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.foreign_loops = foreign_loops;
    info.user = gw;
    gw->ctx = lws_create_context(&info);
    if (gw->ctx == NULL) {
        free(gw);
        snprintf(err, errlen, "gateway: cannot create the libwebsockets context");
        return CH_EIO;
    }
    *out = gw; /* from here on the caller stops and frees it, also on failure */
    struct lws_context_creation_info vinfo;
    memset(&vinfo, 0, sizeof vinfo);
    vinfo.port = self->gateway.port;
    vinfo.iface = self->gateway.host;
    vinfo.protocols = protocols;
    vinfo.vhost_name = "chorus";
    if (lws_create_vhost(gw->ctx, &vinfo) == NULL) {
        snprintf(err, errlen, "gateway on %s:%u: cannot listen (port in use?)",
                 self->gateway.host, self->gateway.port);
        return CH_EIO;
    }
    CH_INFO(-1, "gateway listening on http://%s:%u", self->gateway.host, self->gateway.port);
    return 0;
}

void gw_stop(struct gw *gw)
{
    if (gw == NULL || gw->stopped)
        return;
    gw->stopped = 1;
    lws_context_destroy(gw->ctx); /* first call: closes lws' handles on the loop */
}

void gw_free(struct gw *gw)
{
    if (gw == NULL)
        return;
    lws_context_destroy(gw->ctx); /* second call, after uv_run: frees the context */
    free(gw);
}
