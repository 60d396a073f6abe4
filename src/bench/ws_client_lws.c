/*
 * chorus-bench's WebSocket client (see ws_client.h): one libwebsockets context on
 * the caller's libuv loop (LWS_SERVER_OPTION_LIBUV with a foreign loop, no
 * listening port), and any number of client connections on it.
 *
 * Each connection has a queue of outgoing messages, each built with LWS_PRE bytes
 * of headroom; one frame is written per CLIENT_WRITEABLE callback, re-arming while
 * the queue is non-empty (libwebsockets allows one lws_write per writeable
 * callback).  Incoming frames are reassembled until the final fragment of a
 * message.  On a batched connection (a path with batch=1, docs/protocol.md) that
 * frame carries as many queued messages as fit in BATCH_BYTES, one per line, and
 * each line of an incoming message is handed to on_message on its own.
 *
 * A connection's memory is released in one place, finish(), when libwebsockets
 * reports the connection failed or closed, or when the client stops; finish()
 * detaches the connection from its wsi first, so any callback libwebsockets makes
 * later for that wsi finds no connection and is ignored.
 */
#include <uv.h> /* before libwebsockets.h (LWS_WITH_LIBUV types) */

#include <libwebsockets.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "ws_client.h"

const char *bench_ws_path = "/ws?batch=1";

/* The largest batched frame the client writes (the gateway's own is 32 KiB). */
#define BATCH_BYTES 32768
#define BATCH_MAX_MESSAGES 256

struct out_msg {
    struct out_msg *next;
    uint64_t tag;
    size_t len;
    unsigned char bytes[]; /* LWS_PRE headroom, then len bytes of text */
};

struct bench_ws {
    struct bench_ws_client *client;
    struct bench_ws *prev, *next; /* in client->conns */
    struct lws *wsi;              /* NULL once finished */
    const struct bench_ws_callbacks *cb;
    void *data;
    unsigned id;
    int open;       /* handshake completed */
    int closing;    /* bench_ws_close: close once the queue is written */
    int connecting; /* inside lws_client_connect_via_info */
    int failed;     /* finished while connecting (no callback ran) */
    char fail_why[128];
    int close_status; /* the server's close status, 0 if none */
    struct out_msg *head, *tail;
    char *rx;
    size_t rx_len, rx_cap;
    int rx_binary;
    int batch; /* connected with batch=1 */
};

struct bench_ws_client {
    uv_loop_t *loop;
    struct lws_context *ctx;
    struct bench_ws *conns;
    unsigned next_id;
    int stopped;
    unsigned char *wbuf;   /* LWS_PRE + BATCH_BYTES: a batched frame being written */
    uv_timer_t stop_timer; /* bench_ws_client_stop_soon; closes itself */
    int stopping;
};

static void free_queue(struct bench_ws *ws)
{
    while (ws->head != NULL) {
        struct out_msg *m = ws->head;
        ws->head = m->next;
        free(m);
    }
    ws->tail = NULL;
}

static void unlink_conn(struct bench_ws_client *c, struct bench_ws *ws)
{
    if (ws->prev != NULL)
        ws->prev->next = ws->next;
    else
        c->conns = ws->next;
    if (ws->next != NULL)
        ws->next->prev = ws->prev;
}

/* The end of a connection: detach it from libwebsockets, tell the caller, free it.
 * While lws_client_connect_via_info is still running, only records why: the
 * connect call then fails and bench_ws_open frees it (no callback runs). */
static void finish(struct bench_ws *ws, const char *why)
{
    struct bench_ws_client *c = ws->client;
    if (ws->wsi != NULL)
        lws_set_opaque_user_data(ws->wsi, NULL);
    ws->wsi = NULL;
    if (ws->connecting) {
        ws->failed = 1;
        snprintf(ws->fail_why, sizeof ws->fail_why, "%s", why);
        return;
    }
    unlink_conn(c, ws);
    free_queue(ws);
    free(ws->rx);
    ws->rx = NULL;
    ws->cb->on_close(ws, ws->data, why);
    free(ws);
}

/* Appends one fragment; when the message is whole, hands it to on_message.
 * -1 closes the connection (finish has run). */
static int on_receive(struct lws *wsi, struct bench_ws *ws, const void *in, size_t len)
{
    uint64_t now = uv_hrtime();
    if (lws_is_first_fragment(wsi)) {
        ws->rx_len = 0;
        ws->rx_binary = lws_frame_is_binary(wsi);
    }
    if (len > BENCH_WS_MAX_MESSAGE - ws->rx_len) {
        char why[96];
        snprintf(why, sizeof why, "the server sent a message over %u bytes",
                 BENCH_WS_MAX_MESSAGE);
        finish(ws, why);
        return -1;
    }
    if (ws->rx_len + len > ws->rx_cap) {
        size_t cap = ws->rx_cap ? ws->rx_cap : 4096;
        while (cap < ws->rx_len + len)
            cap *= 2;
        char *p = realloc(ws->rx, cap);
        if (p == NULL) {
            finish(ws, "out of memory");
            return -1;
        }
        ws->rx = p;
        ws->rx_cap = cap;
    }
    if (len > 0)
        memcpy(ws->rx + ws->rx_len, in, len);
    ws->rx_len += len;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0)
        return 0;
    if (ws->rx_binary) {
        finish(ws, "the server sent a binary message");
        return -1;
    }
    size_t n = ws->rx_len;
    ws->rx_len = 0;
    if (!ws->batch) {
        ws->cb->on_message(ws, ws->data, ws->rx, n, now);
        return ws->wsi == NULL ? -1 : 0; /* the callback cannot free ws: finish() does */
    }
    const char *p = ws->rx, *end = ws->rx + n;
    while (p < end && ws->wsi != NULL) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl != NULL ? nl : end;
        if (eol > p)
            ws->cb->on_message(ws, ws->data, p, (size_t)(eol - p), now);
        p = nl != NULL ? nl + 1 : end;
    }
    return ws->wsi == NULL ? -1 : 0;
}

/* A batched frame: the queued messages that fit, one per line, one lws_write;
 * on_written for each.  1 when written, 0 when the oldest message alone is too
 * large (the caller writes it on its own), -1 when the connection finished. */
static int write_batch(struct lws *wsi, struct bench_ws *ws)
{
    unsigned char *buf = ws->client->wbuf + LWS_PRE;
    size_t used = 0, k = 0;
    uint64_t tags[BATCH_MAX_MESSAGES];
    for (struct out_msg *m = ws->head;
         m != NULL && k < BATCH_MAX_MESSAGES && m->len + 1 <= BATCH_BYTES - used;
         m = m->next) {
        memcpy(buf + used, m->bytes + LWS_PRE, m->len);
        used += m->len;
        buf[used++] = '\n';
        tags[k++] = m->tag;
    }
    if (k == 0)
        return 0;
    for (size_t i = 0; i < k; i++) {
        struct out_msg *m = ws->head;
        ws->head = m->next;
        free(m);
    }
    if (ws->head == NULL)
        ws->tail = NULL;
    uint64_t now = uv_hrtime();
    if (lws_write(wsi, buf, used, LWS_WRITE_TEXT) < 0) {
        finish(ws, "write failed");
        return -1;
    }
    for (size_t i = 0; i < k && ws->wsi != NULL; i++)
        if (ws->cb->on_written != NULL)
            ws->cb->on_written(ws, ws->data, tags[i], now);
    return 1;
}

static int on_writeable(struct lws *wsi, struct bench_ws *ws)
{
    struct out_msg *m = ws->head;
    if (m == NULL) {
        if (!ws->closing)
            return 0;
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
        return -1; /* CLIENT_CLOSED follows */
    }
    if (ws->batch) {
        int rv = write_batch(wsi, ws);
        if (rv < 0)
            return -1;
        if (rv > 0) {
            if (ws->wsi != NULL && (ws->head != NULL || ws->closing))
                lws_callback_on_writable(wsi);
            return 0;
        }
    }
    ws->head = m->next;
    if (ws->head == NULL)
        ws->tail = NULL;
    uint64_t now = uv_hrtime();
    int n = lws_write(wsi, m->bytes + LWS_PRE, m->len, LWS_WRITE_TEXT);
    uint64_t tag = m->tag;
    free(m);
    if (n < 0) {
        finish(ws, "write failed");
        return -1;
    }
    if (ws->cb->on_written != NULL)
        ws->cb->on_written(ws, ws->data, tag, now);
    if (ws->wsi != NULL && (ws->head != NULL || ws->closing))
        lws_callback_on_writable(wsi);
    return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                    void *in, size_t len)
{
    (void)user;
    struct bench_ws *ws = wsi != NULL ? lws_get_opaque_user_data(wsi) : NULL;
    if (ws == NULL)
        return 0; /* not ours, or already finished */
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        /* `in` is the reason when libwebsockets has one (len is its length) */
        char why[160];
        const char *text = in != NULL ? (const char *)in : "unknown error";
        int n = in != NULL && len > 0 && len < 120 ? (int)len : 120;
        snprintf(why, sizeof why, "cannot connect: %.*s", n, text);
        finish(ws, why);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        ws->open = 1;
        ws->cb->on_open(ws, ws->data);
        if (ws->wsi != NULL && (ws->head != NULL || ws->closing))
            lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return on_receive(wsi, ws, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return on_writeable(wsi, ws);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (in != NULL && len >= 2) {
            const unsigned char *p = in;
            ws->close_status = (p[0] << 8) | p[1];
        }
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED: {
        char why[96];
        if (ws->close_status != 0)
            snprintf(why, sizeof why, "closed by the server (status %d)",
                     ws->close_status);
        else
            snprintf(why, sizeof why, ws->closing ? "closed" : "connection lost");
        finish(ws, why);
        return 0;
    }
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    {.name = "chorus-bench", .callback = callback},
    {.name = NULL, .callback = NULL},
};

static void lws_log_line(int level, const char *line)
{
    (void)level;
    fprintf(stderr, "chorus-bench: libwebsockets: %s", line);
}

int bench_ws_client_new(uv_loop_t *loop, struct bench_ws_client **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    struct bench_ws_client *c = calloc(1, sizeof *c);
    if (c == NULL || (c->wbuf = malloc(LWS_PRE + BATCH_BYTES)) == NULL) {
        free(c);
        return ch_fail(err, errlen, CH_ENOMEM, "out of memory");
    }
    c->loop = loop;
    lws_set_log_level(LLL_ERR, lws_log_line);
    void *foreign_loops[1] = {loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN;
    info.foreign_loops = foreign_loops;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.gid = -1;
    info.uid = -1;
    info.user = c;
    c->ctx = lws_create_context(&info);
    if (c->ctx == NULL) {
        free(c->wbuf);
        free(c);
        return ch_fail(err, errlen, CH_EIO,
                       "cannot create the libwebsockets context (is the package "
                       "libwebsockets-evlib-uv installed?)");
    }
    *out = c;
    return 0;
}

void bench_ws_client_stop(struct bench_ws_client *c)
{
    if (c == NULL || c->stopped)
        return;
    c->stopped = 1;
    while (c->conns != NULL)
        finish(c->conns, "client stopped");
    lws_context_destroy(c->ctx); /* first call: closes lws' handles on the loop */
}

void bench_uv_close(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_stop_timer(uv_timer_t *t)
{
    bench_ws_client_stop(t->data);
    bench_uv_close((uv_handle_t *)t);
}

void bench_ws_client_stop_soon(struct bench_ws_client *c)
{
    if (c == NULL || c->stopping)
        return;
    c->stopping = 1;
    uv_timer_init(c->loop, &c->stop_timer);
    c->stop_timer.data = c;
    uv_timer_start(&c->stop_timer, on_stop_timer, 0, 0);
}

void bench_ws_client_free(struct bench_ws_client *c)
{
    if (c == NULL)
        return;
    bench_ws_client_stop(c);
    lws_context_destroy(c->ctx); /* second call, after uv_run: frees the context */
    free(c->wbuf);
    free(c);
}

int bench_ws_open(struct bench_ws_client *c, const char *host, int port, const char *path,
                  const struct bench_ws_callbacks *cb, void *data, struct bench_ws **out,
                  char *err, size_t errlen)
{
    return bench_ws_open_from(c, NULL, host, port, path, cb, data, out, err, errlen);
}

int bench_ws_open_from(struct bench_ws_client *c, const char *iface, const char *host,
                       int port, const char *path, const struct bench_ws_callbacks *cb,
                       void *data, struct bench_ws **out, char *err, size_t errlen)
{
    *out = NULL;
    if (c->stopped)
        return ch_fail(err, errlen, CH_EIO, "client stopped");
    struct bench_ws *ws = calloc(1, sizeof *ws);
    if (ws == NULL)
        return ch_fail(err, errlen, CH_ENOMEM, "out of memory");
    char host_header[300];
    snprintf(host_header, sizeof host_header, "%s:%d", host, port);
    ws->client = c;
    ws->cb = cb;
    ws->data = data;
    ws->id = ++c->next_id;
    ws->batch = strstr(path, "batch=1") != NULL;
    ws->next = c->conns;
    if (c->conns != NULL)
        c->conns->prev = ws;
    c->conns = ws;

    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = c->ctx;
    ci.address = host;
    ci.port = port;
    ci.path = path;
    ci.iface = iface;
    ci.host = host_header;
    ci.origin = host_header;
    ci.local_protocol_name = protocols[0].name;
    ci.opaque_user_data = ws;
    ci.pwsi = &ws->wsi;
    ws->connecting = 1;
    struct lws *wsi = lws_client_connect_via_info(&ci);
    ws->connecting = 0;
    if (wsi == NULL || ws->failed) {
        if (wsi != NULL)
            lws_set_opaque_user_data(wsi, NULL);
        int rv = ch_fail(err, errlen, CH_EIO, "ws://%s%s: %s", host_header, path,
                         ws->failed ? ws->fail_why : "cannot start the connection");
        ws->wsi = NULL;
        ws->cb = NULL;
        /* unlink and free without a callback */
        unlink_conn(c, ws);
        free(ws);
        return rv;
    }
    ws->wsi = wsi;
    *out = ws;
    return 0;
}

int bench_ws_send(struct bench_ws *ws, const char *text, size_t len, uint64_t tag)
{
    if (ws->wsi == NULL || ws->closing)
        return CH_EIO;
    struct out_msg *m = malloc(sizeof *m + LWS_PRE + len);
    if (m == NULL)
        return CH_ENOMEM;
    m->next = NULL;
    m->tag = tag;
    m->len = len;
    memcpy(m->bytes + LWS_PRE, text, len);
    if (ws->tail != NULL)
        ws->tail->next = m;
    else
        ws->head = m;
    ws->tail = m;
    if (ws->open)
        lws_callback_on_writable(ws->wsi);
    return 0;
}

void bench_ws_close(struct bench_ws *ws)
{
    if (ws->wsi == NULL || ws->closing)
        return;
    ws->closing = 1;
    if (ws->open)
        lws_callback_on_writable(ws->wsi);
}

unsigned bench_ws_id(const struct bench_ws *ws)
{
    return ws->id;
}
