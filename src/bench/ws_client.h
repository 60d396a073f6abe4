/* chorus-bench's WebSocket client: many connections on one libuv loop, through one
 * libwebsockets context (ws_client_lws.c). */
#ifndef CHORUS_BENCH_WS_CLIENT_H
#define CHORUS_BENCH_WS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;
struct uv_handle_s;
struct bench_ws_client;
struct bench_ws;

/* The path every mode connects to: "/ws?batch=1" (batched frames, the default) or
 * "/ws" (one message per frame: `--no-batch`, to compare). */
extern const char *bench_ws_path;

/* The largest message the client reassembles; a longer one closes the connection
 * (on_close says why). */
#define BENCH_WS_MAX_MESSAGE (4u << 20)

/*
 * What a connection reports, all on the loop thread from inside libwebsockets'
 * callbacks (so they may send, but must not stop the client: schedule that).
 * Times are uv_hrtime() nanoseconds taken as close to the socket as the library
 * allows.
 */
struct bench_ws_callbacks {
    /* The WebSocket handshake completed: the connection can send. */
    void (*on_open)(struct bench_ws *ws, void *data);
    /* One whole text message (fragments reassembled), received at recv_ns.  The
     * text is valid only during the call and is not NUL-terminated. */
    void (*on_message)(struct bench_ws *ws, void *data, const char *text, size_t len,
                       uint64_t recv_ns);
    /* The message sent with `tag` was handed to the socket; write_ns was taken just
     * before the write.  Optional (NULL). */
    void (*on_written)(struct bench_ws *ws, void *data, uint64_t tag, uint64_t write_ns);
    /* The connection failed or closed; why is a short reason.  The last callback:
     * the connection's memory is released when it returns, so drop every pointer
     * to ws. */
    void (*on_close)(struct bench_ws *ws, void *data, const char *why);
};

/*
 * Creates a client on loop (a libwebsockets context on a foreign libuv loop; it
 * adds its own handles to the loop).  0, or CH_EIO with a reason in err: then
 * *out is NULL and nothing is left on the loop.
 */
int bench_ws_client_new(struct uv_loop_s *loop, struct bench_ws_client **out, char *err,
                        size_t errlen);

/*
 * Closes every connection (each gets on_close) and the client's handles on the
 * loop.  Not from inside a bench_ws callback: call it from a uv callback of the
 * caller's own (e.g. a zero timer).  Then let uv_run return and call
 * bench_ws_client_free.
 */
void bench_ws_client_stop(struct bench_ws_client *c);

/* bench_ws_client_stop from a zero timer of the client's own: callable from inside
 * a bench_ws callback (a run that ends on a reply).  c may be NULL. */
void bench_ws_client_stop_soon(struct bench_ws_client *c);

/* uv_close(h, NULL) unless h is already closing (the runners' teardown). */
void bench_uv_close(struct uv_handle_s *h);

/* Frees the client after bench_ws_client_stop and uv_run have returned. */
void bench_ws_client_free(struct bench_ws_client *c);

/*
 * Starts a connection to ws://host:port/path.  On 0 *out is the connection and
 * exactly one on_close will follow (after on_open, or instead of it when the
 * connection fails).  On error (CH_ENOMEM, CH_EIO with a reason in err) no
 * callback runs.  The client owns the connection's memory; data is the caller's.
 */
int bench_ws_open(struct bench_ws_client *c, const char *host, int port, const char *path,
                  const struct bench_ws_callbacks *cb, void *data, struct bench_ws **out,
                  char *err, size_t errlen);

/* As bench_ws_open, with the socket bound to the local address iface first (an
 * IP such as "127.0.0.2", or NULL for any): each source address has its own range
 * of ephemeral ports, so many addresses allow more connections to one server port
 * than one range holds. */
int bench_ws_open_from(struct bench_ws_client *c, const char *iface, const char *host,
                       int port, const char *path, const struct bench_ws_callbacks *cb,
                       void *data, struct bench_ws **out, char *err, size_t errlen);

/* Queues one text message (copied); on_written(tag) follows once it is written.
 * 0, CH_ENOMEM, or CH_EIO when the connection is not open. */
int bench_ws_send(struct bench_ws *ws, const char *text, size_t len, uint64_t tag);

/* Closes the connection once its queue is written (WebSocket status 1000);
 * on_close follows. */
void bench_ws_close(struct bench_ws *ws);

/* The connection's number (1, 2, ... in the order they were opened), for messages. */
unsigned bench_ws_id(const struct bench_ws *ws);

#endif
