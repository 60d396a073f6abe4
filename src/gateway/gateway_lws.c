/*
 * The gateway's libwebsockets shell.  libwebsockets runs on the node's own libuv
 * loop (LWS_SERVER_OPTION_LIBUV with a foreign loop), so chat sessions, Raft
 * groups and the store RPC share one thread.  The vhost is created explicitly so
 * that a failed bind is reported instead of leaving a half-dead context.
 *
 * What is served:
 *   /ws        WebSocket, one JSON request or push per text frame (ops_uv.c)
 *   /api/v1/.. REST: translated into the same JSON requests, replies translated
 *              back into HTTP statuses and bodies
 *   /healthz   liveness
 *   /metrics   Prometheus text metrics (bearer admin.token when configured)
 *   /          the web client's static files (web/), when the directory exists
 *
 * Output to a WebSocket goes through the client's bounded queue (session.h) and
 * is written from LWS_CALLBACK_SERVER_WRITEABLE, as many messages per callback
 * as the socket takes without choking.
 */
#include <uv.h>
#include <libwebsockets.h>

#include "gateway_lws.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "../common/error.h"
#include "../common/log.h"
#include "gateway_internal.h"
#include "metrics.h"

#define GW_MAX_HTTP_BODY (1u << 20)
#define GW_WRITES_PER_CALLBACK 64
/* The largest batched frame (/ws?batch=1) the gateway writes. */
#define GW_BATCH_BYTES 32768

/* Per-wsi state kept by libwebsockets (per_session_data_size). */
struct pss_http {
    int method; /* 'G', 'P', 'D' */
    char path[256];
    char query_after[64], query_before[64], query_limit[64]; /* "name=" + value */
    char auth[WIRE_MAX_TOKEN + 16];
    uint8_t *body;
    size_t body_len;
    int body_too_large;
    int rest_op;
    int rest_status_ok; /* 200 or 201 */
};

/* Kept small: libwebsockets allocates one for every connection, and a WebSocket's
 * costs its memory for as long as it is open.  An HTTP transaction's state is
 * allocated when its first HTTP callback comes. */
struct pss {
    struct gw_client *c;
    struct pss_http *h; /* HTTP transaction, NULL on a WebSocket */
    /* WebSocket reassembly */
    uint8_t *rx;
    size_t rx_len, rx_cap;
    int rx_binary;
};

/* ---- clients --------------------------------------------------------------------------- */

struct gw_client *gw_client_find(struct gw *gw, uint64_t id)
{
    return ch_map_get(&gw->clients, &id, sizeof id);
}

static struct gw_client *client_new(struct gw *gw, struct lws *wsi, int http)
{
    struct gw_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->id = ++gw->next_client_id;
    c->gw = gw;
    c->wsi = wsi;
    c->http = http;
    sess_queue_init(&c->q, gw->cfg->gateway.max_queue_bytes);
    const struct cluster_rate *r = &gw->cfg->gateway.rate;
    sess_bucket_init(&c->login_bucket, r->login_per_s, r->login_burst, uv_now(gw->loop));
    if (lws_get_peer_simple(wsi, c->peer, sizeof c->peer) == NULL)
        snprintf(c->peer, sizeof c->peer, "?");
    if (ch_map_put(&gw->clients, &c->id, sizeof c->id, c) != 0) {
        free(c);
        return NULL;
    }
    if (!http)
        gw->st.connections++;
    return c;
}

static void client_free(struct gw_client *c)
{
    struct gw *gw = c->gw;
    gw_client_gone(c);
    ch_map_del(&gw->clients, &c->id, sizeof c->id);
    if (!c->http)
        gw->st.connections--;
    sess_queue_free(&c->q);
    free(c->http_reply);
    free(c);
}

int gw_client_push(struct gw_client *c, struct fan_msg *m)
{
    if (c->wsi == NULL || c->closing)
        return 0;
    int rv = sess_queue_push(&c->q, m);
    if (rv != 0)
        return CH_ELIMIT;
    lws_callback_on_writable(c->wsi);
    return 0;
}

void gw_client_send_text(struct gw_client *c, const void *text, size_t len)
{
    if (c->wsi == NULL)
        return;
    if (c->http) {
        if (c->http_reply != NULL)
            return; /* one reply per REST request */
        c->http_reply = malloc(len + 1);
        if (c->http_reply == NULL)
            return;
        memcpy(c->http_reply, text, len);
        c->http_reply[len] = 0;
        c->http_reply_len = len;
        lws_callback_on_writable(c->wsi);
        return;
    }
    if (c->closing)
        return;
    struct fan_msg *m = fan_msg_new(LWS_PRE, text, len);
    if (m == NULL)
        return;
    if (sess_queue_push_force(&c->q, m) == 0)
        lws_callback_on_writable(c->wsi);
    fan_msg_unref(m);
}

void gw_client_goodbye(struct gw_client *c, const char *code, const char *message)
{
    if (c->wsi == NULL || c->closing || c->http)
        return;
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "{\"type\":\"goodbye\",\"code\":\"%s\",\"message\":\"%s\"}", code,
                     message);
    struct fan_msg *m = fan_msg_new(LWS_PRE, buf, (size_t)n);
    if (m != NULL) {
        sess_queue_push_force(&c->q, m);
        fan_msg_unref(m);
    }
    c->closing = 1;
    if (c->followed) {
        gw_client_gone(c); /* stop fanning out to it now */
    }
    lws_callback_on_writable(c->wsi);
    /* a client that reads nothing never becomes writeable: close it anyway */
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, 5);
}

/* ---- small HTTP responses ---------------------------------------------------------------- */

static int http_write_type(struct lws *wsi, unsigned status, const char *type,
                           const char *body, size_t len)
{
    size_t cap = LWS_PRE + 1024 + len;
    unsigned char *buf = malloc(cap);
    if (buf == NULL)
        return -1;
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + cap - 1;
    if (lws_add_http_common_headers(wsi, status, type, (lws_filepos_t)len, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end)) {
        free(buf);
        return -1;
    }
    memcpy(start, body, len);
    int n = lws_write(wsi, start, len, LWS_WRITE_HTTP_FINAL);
    free(buf);
    if (n != (int)len)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int http_write(struct lws *wsi, unsigned status, const char *body, size_t len)
{
    return http_write_type(wsi, status, "application/json", body, len);
}

static int http_error(struct lws *wsi, unsigned status, const char *code, const char *message)
{
    char body[512];
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n",
                     code, message);
    return http_write(wsi, status, body, (size_t)n);
}

static unsigned status_of(const char *code)
{
    static const struct {
        const char *code;
        unsigned status;
    } map[] = {
        {"bad_request", 400},    {"unknown_op", 400},     {"too_large", 413},
        {"unauthorized", 401},   {"forbidden", 403},      {"not_found", 404},
        {"conflict", 409},       {"limit_exceeded", 422}, {"rate_limited", 429},
        {"unavailable", 503},    {"timeout", 503},        {"not_leader", 503},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].code, code) == 0)
            return map[i].status;
    return 500;
}

/*
 * Turns the WS-style reply of a REST request into its HTTP response.  The write
 * completes the HTTP transaction, after which libwebsockets frees or reuses the
 * per-session data: callers must not touch pss afterwards.
 */
static int rest_respond(struct lws *wsi, unsigned status_ok, struct gw_client *c)
{
    json_error_t jerr;
    json_t *reply = json_loadb(c->http_reply, c->http_reply_len, 0, &jerr);
    json_t *ok = reply ? json_object_get(reply, "ok") : NULL;
    if (reply == NULL || ok == NULL) {
        json_decref(reply);
        return http_error(wsi, 500, "internal", "malformed reply");
    }
    unsigned status = status_ok;
    json_t *out;
    if (json_is_true(ok)) {
        out = json_incref(json_object_get(reply, "result"));
    } else {
        json_t *e = json_object_get(reply, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        status = status_of(code ? code : "internal");
        out = json_pack("{sO}", "error", e);
    }
    json_decref(reply);
    char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (text == NULL)
        return http_error(wsi, 500, "internal", "out of memory");
    int rv = http_write(wsi, status, text, strlen(text));
    free(text);
    return rv;
}

/* ---- REST -------------------------------------------------------------------------------- */

static int parse_u64(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

/* A numeric path or query parameter as the JSON request field: a number when it
 * fits JSON's integers, else the text (so the op answers bad_request instead of
 * the value wrapping around). */
static void set_u64_arg(json_t *req, const char *name, const char *text, uint64_t v)
{
    if (v > INT64_MAX)
        json_object_set_new(req, name, json_string(text));
    else
        json_object_set_new(req, name, json_integer((json_int_t)v));
}

/* Maps method + path onto an op and its path parameters; sets *status_ok. */
static const char *rest_route(struct pss *pss, json_t *req, int *status_ok)
{
    const char *p = pss->h->path + strlen("/api/v1");
    char seg[4][128];
    int n = 0;
    while (*p == '/' && n < 4) {
        p++;
        size_t len = strcspn(p, "/");
        if (len == 0 || len >= sizeof seg[0])
            return NULL;
        memcpy(seg[n], p, len);
        seg[n][len] = 0;
        n++;
        p += len;
    }
    if (*p != 0)
        return NULL;
    *status_ok = 200;
    char m = (char)pss->h->method;
    if (n == 1 && strcmp(seg[0], "register") == 0 && m == 'P') {
        *status_ok = 201;
        return "register";
    }
    if (n == 1 && strcmp(seg[0], "login") == 0 && m == 'P')
        return "login";
    if (n < 1 || strcmp(seg[0], "conversations") != 0)
        return NULL;
    if (n == 1)
        return m == 'G' ? "conversations" : m == 'P' ? (*status_ok = 201, "create") : NULL;
    uint64_t conv;
    if (parse_u64(seg[1], &conv) != 0)
        return NULL;
    set_u64_arg(req, "conv", seg[1], conv);
    if (n == 2)
        return m == 'G' ? "get" : NULL;
    if (strcmp(seg[2], "members") == 0) {
        if (n == 3 && m == 'P') {
            *status_ok = 201;
            return "add_member";
        }
        if (n == 4 && m == 'D') {
            json_object_set_new(req, "user", json_string(seg[3]));
            return json_object_get(req, "user") ? "remove_member" : NULL;
        }
        return NULL;
    }
    if (n == 3 && strcmp(seg[2], "messages") == 0) {
        if (m == 'P') {
            *status_ok = 201;
            return "send";
        }
        if (m != 'G')
            return NULL;
        const char *names[3] = {"after", "before", "limit"};
        const char *vals[3] = {pss->h->query_after, pss->h->query_before, pss->h->query_limit};
        for (int i = 0; i < 3; i++) {
            uint64_t v;
            if (vals[i][0] == 0)
                continue;
            if (parse_u64(vals[i], &v) != 0)
                json_object_set_new(req, names[i], json_string(vals[i])); /* typed error */
            else
                set_u64_arg(req, names[i], vals[i], v);
        }
        return "history";
    }
    if (n == 3 && strcmp(seg[2], "receipts") == 0 && m == 'P')
        return "receipt";
    return NULL;
}

static int rest_dispatch(struct lws *wsi, struct pss *pss)
{
    struct gw *gw = lws_context_user(lws_get_context(wsi));
    /* Every early answer below completes the transaction (and frees pss): nothing
     * may stay owned by pss past an http_error. */
    uint8_t *body = pss->h->body;
    size_t body_len = pss->h->body_len;
    int too_large = pss->h->body_too_large;
    pss->h->body = NULL;
    pss->h->body_len = 0;
    pss->h->body_too_large = 0;
    if (too_large) {
        free(body);
        return http_error(wsi, 413, "too_large", "request body too large");
    }
    json_t *req;
    if (body_len == 0) {
        req = json_object();
        free(body);
    } else {
        json_error_t jerr;
        req = json_loadb((const char *)body, body_len, JSON_REJECT_DUPLICATES, &jerr);
        free(body);
        if (req == NULL || !json_is_object(req)) {
            json_decref(req);
            return http_error(wsi, 400, "bad_request", "the body must be a JSON object");
        }
    }
    int status_ok = 200;
    const char *op = rest_route(pss, req, &status_ok);
    if (op == NULL) {
        json_decref(req);
        return http_error(wsi, 404, "not_found", "no such endpoint or method");
    }
    json_object_set_new(req, "op", json_string(op));
    json_object_set_new(req, "id", json_integer(1));
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (text == NULL)
        return http_error(wsi, 500, "internal", "out of memory");
    struct gw_client *c = client_new(gw, wsi, 1);
    if (c == NULL) {
        free(text);
        return http_error(wsi, 500, "internal", "out of memory");
    }
    pss->c = c;
    pss->h->rest_status_ok = status_ok;
    if (strcmp(op, "register") != 0 && strcmp(op, "login") != 0) {
        const char *a = pss->h->auth;
        int rv = CH_EUNAUTHORIZED;
        if (strncmp(a, "Bearer ", 7) == 0)
            rv = gw_auth_token(c, a + 7, strlen(a + 7));
        if (rv != 0) {
            free(text);
            pss->c = NULL;
            c->wsi = NULL;
            client_free(c);
            return http_error(wsi, 401, "unauthorized",
                              rv == CH_ETOKEN_EXPIRED ? "token expired"
                                                      : "missing or invalid bearer token");
        }
    }
    gw_handle_request(c, text, strlen(text));
    free(text);
    return 0;
}

/* Ends the HTTP transaction's state: its body, its client, and (free_h) the
 * pss_http itself. */
static void pss_http_reset(struct pss *pss, int free_h)
{
    if (pss->h != NULL) {
        free(pss->h->body);
        pss->h->body = NULL;
        pss->h->body_len = 0;
        pss->h->body_too_large = 0;
        if (free_h) {
            free(pss->h);
            pss->h = NULL;
        }
    }
    if (pss->c != NULL) {
        pss->c->wsi = NULL;
        client_free(pss->c);
        pss->c = NULL;
    }
}

static void copy_arg(struct lws *wsi, const char *name, char *out, int len)
{
    out[0] = 0;
    if (lws_get_urlarg_by_name(wsi, name, out, len) == NULL)
        out[0] = 0;
    else
        memmove(out, out + strlen(name), strlen(out + strlen(name)) + 1);
}

/* ---- /admin/v1 ---------------------------------------------------------------------------- */

static int metrics_authorized(struct lws *wsi, const struct gw *gw);

static int admin_respond(struct lws *wsi, struct gw *gw, const char *uri, char method)
{
    if (!metrics_authorized(wsi, gw))
        return http_error(wsi, 401, "unauthorized", "missing or invalid admin token");
    if (method != 'G')
        return http_error(wsi, 405, "bad_request", "method not allowed");
    if (gw->admin_fn == NULL)
        return http_error(wsi, 503, "unavailable", "the node is starting");
    char query[128] = "";
    copy_arg(wsi, "digest=", query, sizeof query);
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    unsigned status = gw->admin_fn(gw->admin_data, uri, query, &b);
    int rv;
    if (ch_wbuf_error(&b) != 0)
        rv = http_error(wsi, 500, "internal", "out of memory");
    else
        rv = http_write_type(wsi, status, "application/json", (const char *)b.data, b.len);
    ch_wbuf_free(&b);
    return rv;
}

/* ---- /metrics ------------------------------------------------------------------------------ */

void gw_set_metrics_source(struct gw *gw, gw_shard_metrics_fn fn, void *data,
                           uint64_t start_ms)
{
    gw->shard_metrics = fn;
    gw->shard_metrics_data = data;
    gw->start_ms = start_ms;
}

/* Does the request carry "Bearer <admin.token>" (or is there no token)?  The
 * comparison takes the same time wherever the first difference is. */
static int metrics_authorized(struct lws *wsi, const struct gw *gw)
{
    const char *token = gw->cfg->admin.token;
    if (token[0] == 0)
        return 1;
    char auth[sizeof gw->cfg->admin.token + 16];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n <= 0 || n >= (int)sizeof auth ||
        lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION) != n ||
        strncmp(auth, "Bearer ", 7) != 0)
        return 0;
    const char *got = auth + 7;
    size_t want_len = strlen(token), got_len = strlen(got);
    unsigned diff = got_len != want_len;
    for (size_t i = 0; i < want_len; i++)
        diff |= (unsigned)(token[i] ^ (i < got_len ? got[i] : 0));
    return diff == 0;
}

/* The gateway's own numbers; codes[] receives the error counts by wire code. */
static void metrics_gather_gateway(struct gw *gw, struct metrics_gateway *g,
                                   struct metrics_count *codes)
{
    memset(g, 0, sizeof *g);
    g->connections = gw->st.connections;
    g->requests = gw->st.requests;
    g->replies = gw->st.replies;
    g->errors = gw->st.errors;
    g->sends = gw->st.sends;
    g->acks = gw->st.acks;
    g->rate_limited = gw->st.rate_limited;
    g->auth_failures = gw->st.auth_failures;
    g->slow_consumers = gw->st.slow_consumers;
    g->pushes = gw->st.pushes;
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(&gw->clients, &it, &slot)) {
        const struct gw_client *c = slot->val;
        if (!c->http)
            g->queued_bytes += c->q.bytes;
    }
    /* Several error enums share a wire code: one series per wire code, zeros
     * included, so that series never appear out of nowhere. */
    size_t n = 0;
    for (int e = CH_OK + 1; e < CH__ERR_COUNT; e++) {
        const char *code = ch_errcode(e);
        size_t i = 0;
        while (i < n && strcmp(codes[i].label, code) != 0)
            i++;
        if (i == n)
            codes[n++] = (struct metrics_count){code, 0};
        codes[i].value += gw->st.errors_by_code[e];
    }
    g->errors_by_code = codes;
    g->n_errors_by_code = n;
    if (gw->fan != NULL) {
        struct fan_stats f;
        fan_stats(gw->fan, &f);
        g->fan_events = f.events;
        g->fan_encodes = f.encodes;
        g->fan_gaps = f.gaps;
        g->fan_fetches = f.fetches;
        g->fan_duplicates = f.duplicates;
        g->fan_overflows = f.overflows;
    }
    if (gw->rpc != NULL) {
        struct rpc_stats r;
        rpc_stats(gw->rpc, &r);
        g->rpc_calls = r.calls;
        g->rpc_retries = r.retries;
        g->rpc_redirects = r.redirects;
        g->rpc_timeouts = r.timeouts;
        g->rpc_unavailable = r.unavailable;
        g->rpc_connects = r.connects;
        g->rpc_disconnects = r.disconnects;
    }
}

static int metrics_respond(struct lws *wsi, struct gw *gw)
{
    if (!metrics_authorized(wsi, gw))
        return http_error(wsi, 401, "unauthorized", "missing or invalid admin token");
    struct metrics_count codes[CH__ERR_COUNT];
    struct metrics_gateway g;
    metrics_gather_gateway(gw, &g, codes);
    struct metrics_shard *shards = calloc(gw->cfg->n_shards, sizeof *shards);
    if (shards == NULL)
        return http_error(wsi, 500, "internal", "out of memory");
    struct metrics_node m = {
        .node = gw->node_id,
        .version = CHORUS_VERSION,
        .uptime_ms = uv_now(gw->loop) - gw->start_ms,
        .shards = shards,
        .n_shards = gw->shard_metrics
                        ? gw->shard_metrics(gw->shard_metrics_data, shards, gw->cfg->n_shards)
                        : 0,
        .gateway = &g,
    };
    if (gw->disk_fn != NULL)
        m.have_disk = gw->disk_fn(gw->disk_data, &m.disk_free_bytes, &m.disk_total_bytes) == 0;
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    int rv = metrics_render(&m, &b);
    free(shards);
    if (rv != 0) {
        ch_wbuf_free(&b);
        return http_error(wsi, 500, "internal", "out of memory");
    }
    rv = http_write_type(wsi, 200, METRICS_CONTENT_TYPE, (const char *)b.data, b.len);
    ch_wbuf_free(&b);
    return rv;
}

/* ---- the protocol callback ----------------------------------------------------------------- */

static int ws_writeable(struct lws *wsi, struct gw_client *c)
{
    for (int i = 0; i < GW_WRITES_PER_CALLBACK; i++) {
        struct fan_msg *m = sess_queue_peek(&c->q);
        if (m == NULL)
            break;
        if (c->batch) {
            /* as many queued messages as fit, one frame, one send(2); libwebsockets
             * keeps whatever the socket did not take, so the buffer is reusable */
            uint8_t *buf = c->gw->batch_buf + LWS_PRE;
            size_t len = 0;
            if (sess_queue_take_batch(&c->q, buf, GW_BATCH_BYTES, &len) > 0) {
                if (lws_write(wsi, buf, len, LWS_WRITE_TEXT) < (int)len)
                    return -1;
                if (lws_send_pipe_choked(wsi))
                    break;
                continue;
            }
            /* the oldest message alone is larger than a batch: a frame of its own */
        }
        if (m->headroom < LWS_PRE)
            return -1; /* every message is built with LWS_PRE headroom */
        int len = (int)m->len;
        int n = lws_write(wsi, fan_msg_payload(m), m->len, LWS_WRITE_TEXT);
        sess_queue_pop(&c->q); /* may free m */
        if (n < len)
            return -1;
        if (lws_send_pipe_choked(wsi))
            break;
    }
    gw_client_drained(c);
    if (sess_queue_peek(&c->q) != NULL) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (c->closing) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, NULL, 0);
        return -1;
    }
    return 0;
}

/* One whole WebSocket message from the client: its request(s). */
static void ws_message(struct gw_client *c, const char *text, size_t len, int binary)
{
    if (c->closing)
        return;
    if (binary) {
        struct ch_wbuf b;
        ch_wbuf_init(&b);
        wire_reply_error(&b, "null", CH_EMALFORMED, "binary frames are not accepted: send JSON text", 0);
        if (!ch_wbuf_error(&b))
            gw_client_send_text(c, b.data, b.len);
        ch_wbuf_free(&b);
    } else if (c->batch) {
        /* one request per line; blank lines are skipped */
        const char *p = text, *end = text + len;
        while (p < end && !c->closing) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *eol = nl ? nl : end;
            const char *q = p;
            while (q < eol && (*q == ' ' || *q == '\t' || *q == '\r'))
                q++;
            if (q < eol)
                gw_handle_request(c, p, (size_t)(eol - p));
            p = nl ? nl + 1 : end;
        }
    } else {
        gw_handle_request(c, text, len);
    }
}

/*
 * A message that arrives whole (one frame, all of it in this callback: nearly
 * every request) is handled where libwebsockets holds it; only fragmented ones
 * are copied together in pss->rx, which is freed again after each of them, so an
 * idle connection holds no receive buffer of its own.
 */
static int ws_receive(struct lws *wsi, struct pss *pss, const void *in, size_t len)
{
    struct gw_client *c = pss->c;
    struct gw *gw = c->gw;
    size_t max = gw->cfg->gateway.max_frame;
    int first = lws_is_first_fragment(wsi);
    int last = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (first) {
        pss->rx_len = 0;
        pss->rx_binary = lws_frame_is_binary(wsi);
    }
    if (pss->rx_len + len > max) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"message too large", 17);
        return -1;
    }
    if (first && last) {
        ws_message(c, in, len, pss->rx_binary);
        return 0;
    }
    if (pss->rx_cap < pss->rx_len + len) {
        size_t cap = pss->rx_cap ? pss->rx_cap : 4096;
        while (cap < pss->rx_len + len)
            cap *= 2;
        uint8_t *p = realloc(pss->rx, cap);
        if (p == NULL)
            return -1;
        pss->rx = p;
        pss->rx_cap = cap;
    }
    memcpy(pss->rx + pss->rx_len, in, len);
    pss->rx_len += len;
    if (!last)
        return 0;
    ws_message(c, (const char *)pss->rx, pss->rx_len, pss->rx_binary);
    pss->rx_len = 0;
    free(pss->rx);
    pss->rx = NULL;
    pss->rx_cap = 0;
    return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct pss *pss = user;
    struct gw *gw = lws_context_user(lws_get_context(wsi));
    /*
     * Per-session data exists only once libwebsockets has bound the connection to
     * our protocol: a connection closed before its first request (a port probe, a
     * health checker's bare connect) reaches CLOSED_HTTP with none.
     */
    if (pss == NULL && reason != LWS_CALLBACK_HTTP && reason != LWS_CALLBACK_ESTABLISHED)
        return reason == LWS_CALLBACK_CLOSED_HTTP || reason == LWS_CALLBACK_CLOSED
                   ? 0
                   : lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: {
        char uri[64];
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 ||
            strcmp(uri, "/ws") != 0)
            return -1;
        if (gw->st.connections >= gw->cfg->gateway.max_connections) {
            lws_close_reason(wsi, (enum lws_close_status)1013, NULL, 0);
            return -1;
        }
        pss_http_reset(pss, 1); /* (nothing, unless a request preceded the upgrade) */
        memset(pss, 0, sizeof *pss);
        pss->c = client_new(gw, wsi, 0);
        if (pss->c == NULL)
            return -1;
        char arg[16];
        const char *v = lws_get_urlarg_by_name(wsi, "batch=", arg, (int)sizeof arg);
        pss->c->batch = v != NULL && strcmp(v, "1") == 0;
        return 0;
    }
    case LWS_CALLBACK_RECEIVE:
        if (pss->c == NULL)
            return -1;
        return ws_receive(wsi, pss, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (pss->c == NULL)
            return -1;
        return ws_writeable(wsi, pss->c);
    case LWS_CALLBACK_CLOSED:
        if (pss->c != NULL) {
            pss->c->wsi = NULL;
            client_free(pss->c);
            pss->c = NULL;
        }
        free(pss->rx);
        pss->rx = NULL;
        return 0;

    case LWS_CALLBACK_HTTP: {
        const char *path = in;
        char uri[256];
        pss_http_reset(pss, 0);
        if (pss->h == NULL && (pss->h = calloc(1, sizeof *pss->h)) == NULL)
            return -1;
        pss->h->method = 0;
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) > 0)
            pss->h->method = 'G';
        else if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_POST_URI) > 0)
            pss->h->method = 'P';
        else if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_DELETE_URI) > 0)
            pss->h->method = 'D';
        else
            return http_error(wsi, 405, "bad_request", "method not allowed");
        (void)path;
        snprintf(pss->h->path, sizeof pss->h->path, "%s", uri);
        if (strcmp(uri, "/healthz") == 0) {
            char body[128];
            int n = snprintf(body, sizeof body, "{\"status\":\"ok\",\"node\":%u}\n",
                             gw->node_id);
            return http_write(wsi, 200, body, (size_t)n);
        }
        if (strcmp(uri, "/metrics") == 0) {
            if (pss->h->method != 'G')
                return http_error(wsi, 405, "bad_request", "method not allowed");
            return metrics_respond(wsi, gw);
        }
        int on_admin = gw->admin_vhost != NULL && lws_get_vhost(wsi) == gw->admin_vhost;
        if (strncmp(uri, "/admin/", 7) == 0 && (on_admin || gw->admin_vhost == NULL))
            return admin_respond(wsi, gw, uri, pss->h->method);
        if (on_admin)
            return http_error(wsi, 404, "not_found", "the admin address serves /admin/v1, "
                                                     "/metrics and /healthz only");
        if (strncmp(uri, "/api/v1/", 8) != 0)
            return http_error(wsi, 404, "not_found", "no such endpoint");
        copy_arg(wsi, "after=", pss->h->query_after, sizeof pss->h->query_after);
        copy_arg(wsi, "before=", pss->h->query_before, sizeof pss->h->query_before);
        copy_arg(wsi, "limit=", pss->h->query_limit, sizeof pss->h->query_limit);
        pss->h->auth[0] = 0;
        if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) < (int)sizeof pss->h->auth)
            lws_hdr_copy(wsi, pss->h->auth, sizeof pss->h->auth, WSI_TOKEN_HTTP_AUTHORIZATION);
        if (pss->h->method == 'P')
            return 0; /* wait for the body */
        return rest_dispatch(wsi, pss);
    }
    case LWS_CALLBACK_HTTP_BODY:
        if (pss->h == NULL)
            return -1;
        if (pss->h->body_too_large)
            return 0;
        if (pss->h->body_len + len > GW_MAX_HTTP_BODY) {
            pss->h->body_too_large = 1;
            return 0;
        }
        {
            uint8_t *p = realloc(pss->h->body, pss->h->body_len + len);
            if (p == NULL)
                return -1;
            pss->h->body = p;
            memcpy(pss->h->body + pss->h->body_len, in, len);
            pss->h->body_len += len;
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pss->h == NULL)
            return -1;
        return rest_dispatch(wsi, pss);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (pss->c == NULL || pss->c->http_reply == NULL)
            return 0;
        {
            /* detach everything from pss first: the response completes the
             * transaction, and libwebsockets then frees pss */
            struct gw_client *c = pss->c;
            unsigned status_ok = (unsigned)pss->h->rest_status_ok;
            pss->c = NULL;
            pss_http_reset(pss, 1);
            int rv = rest_respond(wsi, status_ok, c);
            c->wsi = NULL;
            client_free(c);
            return rv;
        }
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL: /* libwebsockets frees pss next */
        pss_http_reset(pss, 1);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* The client protocol; its rx_buffer_size is gateway.rx_buffer (gw_open). */
static const struct lws_protocols protocol_template = {"chorus", callback, sizeof(struct pss),
                                                       65536, 0, NULL, 0};

static void lws_log_bridge(int level, const char *line)
{
    /* libwebsockets' lines end in a newline; ours are added by ch_log */
    int n = (int)strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    /* libwebsockets reports peers' misbehaviour (oversized headers, bad frames) as
     * errors; to this node those are warnings, its own failures are logged by us */
    (void)level;
    ch_log(CH_LOG_WARN, -1, "lws: %.*s", n, line);
}

/* The web client's directory: --web, else web/ beside the build directory. */
static void find_web_dir(struct gw *gw, const char *web_dir)
{
    gw->web_dir[0] = 0;
    if (web_dir != NULL) {
        snprintf(gw->web_dir, sizeof gw->web_dir, "%s", web_dir);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash == NULL)
        return;
    *slash = 0;
    const char *tries[] = {"/../web", "/../../web", "/../share/chorus/web"};
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s%s/index.html", exe, tries[i]);
        if (access(path, R_OK) == 0) {
            char dir[PATH_MAX + 32];
            snprintf(dir, sizeof dir, "%s%s", exe, tries[i]);
            char real[PATH_MAX];
            if (realpath(dir, real) != NULL)
                snprintf(gw->web_dir, sizeof gw->web_dir, "%s", real);
            return;
        }
    }
}

static struct lws_http_mount mount_web, mount_api, mount_health, mount_metrics, mount_admin;
static struct lws_http_mount amount_admin, amount_metrics, amount_health;

/* A mount whose requests reach our callback (LWSMPRO_CALLBACK, protocol "chorus"). */
static void callback_mount(struct lws_http_mount *m, const char *path,
                           const struct lws_http_mount *next)
{
    memset(m, 0, sizeof *m);
    m->mountpoint = path;
    m->mountpoint_len = (unsigned char)strlen(path);
    m->origin = "chorus";
    m->origin_protocol = LWSMPRO_CALLBACK;
    m->mount_next = next;
}

int gw_open(uv_loop_t *loop, const struct cluster_config *cfg, uint32_t node_id,
            const char *web_dir, struct gw **out, char *err, size_t errlen)
{
    const struct cluster_node *self = cluster_node_by_id(cfg, node_id);
    *out = NULL;
    if (self == NULL) {
        snprintf(err, errlen, "node %u is not in the config", node_id);
        return CH_ECONFIG;
    }
    struct gw *gw = calloc(1, sizeof *gw);
    struct lws_protocols *protos = calloc(2, sizeof *protos); /* [1]: the terminator */
    uint8_t *batch_buf = malloc(LWS_PRE + GW_BATCH_BYTES);
    if (gw == NULL || protos == NULL || batch_buf == NULL) {
        free(gw);
        free(protos);
        free(batch_buf);
        snprintf(err, errlen, "out of memory");
        return CH_ENOMEM;
    }
    /* libwebsockets allocates the receive buffer for every connection and, on
     * this version, reads a socket in chunks of it: big favours throughput, small
     * many idle connections (cluster-conf/README.md) */
    protos[0] = protocol_template;
    protos[0].rx_buffer_size = cfg->gateway.rx_buffer;
    gw->protocols = protos;
    gw->batch_buf = batch_buf;
    gw->loop = loop;
    gw->start_ms = uv_now(loop);
    gw->cfg = cfg;
    gw->node_id = node_id;
    gw->headroom = LWS_PRE;
    find_web_dir(gw, web_dir);
    int rv = gw_core_open(gw, err, errlen);
    if (rv != 0) {
        *out = gw;
        return rv;
    }
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_bridge);

    void *foreign_loops[1] = {loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN |
                   LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.foreign_loops = foreign_loops;
    info.user = gw;
    gw->ctx = lws_create_context(&info);
    *out = gw; /* from here on the caller stops and frees it, also on failure */
    if (gw->ctx == NULL) {
        snprintf(err, errlen, "gateway: cannot create the libwebsockets context");
        return CH_EIO;
    }
    struct lws_context_creation_info vinfo;
    memset(&vinfo, 0, sizeof vinfo);
    vinfo.port = self->gateway.port;
    vinfo.iface = self->gateway.host;
    vinfo.protocols = gw->protocols;
    vinfo.vhost_name = "chorus";
    /* Listen on the configured address only.  With IPv6 enabled libwebsockets binds
     * an IPv6 socket to in6addr_any and ignores an IPv4 `iface`; cluster addresses
     * are IPv4 (raft_uv_tcp takes nothing else). */
    vinfo.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    /* /api, /healthz, /metrics and /admin reach our callback; everything else is a
     * web client file */
    callback_mount(&mount_api, "/api", &mount_health);
    callback_mount(&mount_health, "/healthz", &mount_metrics);
    callback_mount(&mount_metrics, "/metrics", &mount_admin);
    callback_mount(&mount_admin, "/admin", NULL);
    if (gw->web_dir[0]) {
        memset(&mount_web, 0, sizeof mount_web);
        mount_web.mountpoint = "/";
        mount_web.mountpoint_len = 1;
        mount_web.origin = gw->web_dir;
        mount_web.def = "index.html";
        mount_web.origin_protocol = LWSMPRO_FILE;
        mount_admin.mount_next = &mount_web;
    }
    vinfo.mounts = &mount_api;
    if (lws_create_vhost(gw->ctx, &vinfo) == NULL) {
        snprintf(err, errlen, "gateway on %s:%u: cannot listen (port in use?)",
                 self->gateway.host, self->gateway.port);
        return CH_EIO;
    }
    CH_INFO(-1, "gateway listening on http://%s:%u (web client: %s)", self->gateway.host,
            self->gateway.port, gw->web_dir[0] ? gw->web_dir : "not found");
    if (self->admin.port != 0) {
        /* the admin API on its own address (firewalled apart from the public one) */
        callback_mount(&amount_admin, "/admin", &amount_metrics);
        callback_mount(&amount_metrics, "/metrics", &amount_health);
        callback_mount(&amount_health, "/healthz", NULL);
        struct lws_context_creation_info ainfo = vinfo;
        ainfo.port = self->admin.port;
        ainfo.iface = self->admin.host;
        ainfo.vhost_name = "chorus-admin";
        ainfo.mounts = &amount_admin;
        gw->admin_vhost = lws_create_vhost(gw->ctx, &ainfo);
        if (gw->admin_vhost == NULL) {
            snprintf(err, errlen, "admin API on %s:%u: cannot listen (port in use?)",
                     self->admin.host, self->admin.port);
            return CH_EIO;
        }
        CH_INFO(-1, "admin API listening on http://%s:%u/admin/v1/", self->admin.host,
                self->admin.port);
    }
    return 0;
}

void gw_set_admin_source(struct gw *gw, gw_admin_fn fn, void *data)
{
    gw->admin_fn = fn;
    gw->admin_data = data;
}

void gw_set_disk_source(struct gw *gw, gw_disk_fn fn, void *data)
{
    gw->disk_fn = fn;
    gw->disk_data = data;
}

uint32_t gw_connections(const struct gw *gw)
{
    return gw != NULL ? (uint32_t)gw->st.connections : 0;
}

void gw_sync_nodes(struct gw *gw)
{
    if (gw != NULL && gw->rpc != NULL)
        rpc_sync_nodes(gw->rpc);
}

void gw_stop(struct gw *gw)
{
    if (gw == NULL || gw->stopped)
        return;
    gw->stopped = 1; /* clients closing now do not publish presence */
    if (gw->ctx)
        lws_context_destroy(gw->ctx); /* first call: closes lws' handles on the loop */
    gw_core_stop(gw);
}

void gw_free(struct gw *gw)
{
    if (gw == NULL)
        return;
    if (gw->ctx)
        lws_context_destroy(gw->ctx); /* second call, after uv_run: frees the context */
    gw_core_free(gw);
    free(gw->batch_buf);
    free(gw->protocols);
    free(gw);
}
