/*
 * The latency mode (bench_latency_run, see bench.h): one sender sends messages one
 * at a time to a conversation with one receiver, and we time each send's ack at
 * the sender and its event at the receiver.  A port of scripts/chat-latency.py to
 * the C client, so the figures carry microseconds of client overhead, not tens.
 *
 * Everything runs on one libuv loop: two WebSocket connections (ws_client_lws.c)
 * and a few timers.  The run is a small state machine:
 *
 *   CONNECTING -> (both open) each side registers a fresh user
 *   REGISTERING -> (both registered) the sender creates the conversation
 *   CREATING -> (create acked, and both sides got its `created` event)
 *   MEASURING -> N sends, each waiting for its ack and its delivery (or an error or
 *                the per-message timeout) before the next, paced at --rate
 *   DONE -> timers closed, the client stopped from a zero timer (never from inside
 *           a libwebsockets callback), uv_run returns.
 *
 * A send's clock starts just before its frame is written to the socket and stops
 * when the reply / event message is whole in the client, before it is parsed; both
 * clients share this thread and its monotonic clock.
 */
#include <uv.h>

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/error.h"
#include "bench.h"
#include "message.h"
#include "ws_client.h"

#define SETUP_TIMEOUT_MS 30000
#define SETUP_ATTEMPTS 20       /* tries of register / create after rate_limited */
#define MAX_RETRY_AFTER_MS 5000 /* the longest rate_limited wait we honour */
#define PASSWORD "chorus-bench-password"

enum phase { CONNECTING, REGISTERING, CREATING, MEASURING, DONE };

static const char *const phase_names[] = {
    "connecting", "registering", "creating the conversation", "measuring", "done"};

struct run;

/* One side: a connection and the user it registered. */
struct peer {
    struct run *run;
    const char *role; /* "sender" or "receiver", for messages */
    const char *host;
    int port;
    struct bench_ws *ws; /* NULL once closed */
    char user[40];
    int64_t next_id; /* request ids, from 1 */
    int64_t register_id;
    int registered;
    int attempts;          /* of the current setup request */
    uint64_t created_conv; /* the conv of a `created` event seen here */
    uv_timer_t retry;      /* re-sends a setup request after rate_limited */
};

struct run {
    const struct bench_latency_options *o;
    struct bench_latency_result *r;
    uv_loop_t loop;
    struct bench_ws_client *client;
    struct peer sender, receiver;
    enum phase phase;
    int rv;

    uv_timer_t setup_timer; /* the whole setup must finish in SETUP_TIMEOUT_MS */
    uv_timer_t pace;        /* when the next send may go */
    uv_timer_t deadline;    /* the current message's timeout */
    uv_timer_t progress;
    uv_signal_t sigint;

    int64_t create_id;
    uint64_t conv;

    /* the message in flight */
    size_t index;    /* messages begun so far; the current is index - 1 */
    int64_t send_id; /* its request id */
    char client_msg_id[24];
    uint64_t write_ns; /* when its frame was written (0: not yet) */
    int acked, delivered, failed, in_flight;
    uint64_t next_send_ns; /* pacing: the earliest write time of the next send */
    uint64_t gap_ns;
    uint64_t extra_wait_ms; /* rate_limited asked us to wait this long */

    char *frame; /* a send request, rebuilt per message around a fixed body */
    size_t frame_cap;
    char *body;
};

static void finish(struct run *run, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_next(struct run *run);

/* ---- errors ------------------------------------------------------------------------ */

void bench_count_error(struct bench_latency_result *r, const char *code)
{
    r->errors++;
    bench_error_tally(r->codes, &r->n_codes, code);
}

/* ---- ending the run ------------------------------------------------------------------
 */

/* Ends the run: rv 0 = it reached its end, else the failure (first one wins). */
static void finish(struct run *run, int rv, const char *fmt, ...)
{
    if (run->phase == DONE)
        return;
    if (rv != 0 && fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(run->r->failure, sizeof run->r->failure, fmt, ap);
        va_end(ap);
    }
    run->rv = rv;
    run->phase = DONE;
    bench_uv_close((uv_handle_t *)&run->setup_timer);
    bench_uv_close((uv_handle_t *)&run->pace);
    bench_uv_close((uv_handle_t *)&run->deadline);
    bench_uv_close((uv_handle_t *)&run->progress);
    bench_uv_close((uv_handle_t *)&run->sigint);
    bench_uv_close((uv_handle_t *)&run->sender.retry);
    bench_uv_close((uv_handle_t *)&run->receiver.retry);
    bench_ws_client_stop_soon(run->client);
}

/* ---- requests ------------------------------------------------------------------------
 */

/* Sends {"id":N,<fields>} on p; returns the id, or 0 after finishing the run. */
static int64_t request(struct peer *p, const char *fields)
{
    char buf[512];
    int64_t id = ++p->next_id;
    int n = snprintf(buf, sizeof buf, "{\"id\":%" PRId64 ",%s}", id, fields);
    if (n < 0 || (size_t)n >= sizeof buf) {
        finish(p->run, CH_EINTERNAL, "request too long");
        return 0;
    }
    if (p->ws == NULL || bench_ws_send(p->ws, buf, (size_t)n, 0) != 0) {
        finish(p->run, CH_EIO, "%s: cannot send a request", p->role);
        return 0;
    }
    return id;
}

static void send_register(struct peer *p)
{
    char fields[256];
    snprintf(fields, sizeof fields,
             "\"op\":\"register\",\"user\":\"%s\",\"password\":\"" PASSWORD "\"",
             p->user);
    p->register_id = request(p, fields);
}

static void send_create(struct run *run)
{
    char fields[256];
    if (run->o->group)
        snprintf(fields, sizeof fields,
                 "\"op\":\"create\",\"kind\":\"group\",\"name\":\"chorus-bench\","
                 "\"members\":[\"%s\"]",
                 run->receiver.user);
    else
        snprintf(fields, sizeof fields,
                 "\"op\":\"create\",\"kind\":\"direct\",\"members\":[\"%s\"]",
                 run->receiver.user);
    run->create_id = request(&run->sender, fields);
}

static void on_retry(uv_timer_t *t)
{
    struct peer *p = t->data;
    struct run *run = p->run;
    if (run->phase == REGISTERING && !p->registered)
        send_register(p);
    else if (run->phase == CREATING && p == &run->sender && run->conv == 0)
        send_create(run);
}

/* A setup request failed with m's error: retry after rate_limited, else give up. */
static void setup_refused(struct peer *p, const char *what, const struct bench_message *m)
{
    if (strcmp(m->code, "rate_limited") == 0 && ++p->attempts < SETUP_ATTEMPTS) {
        uint64_t wait = m->retry_after_ms ? m->retry_after_ms : 100;
        if (wait > MAX_RETRY_AFTER_MS)
            wait = MAX_RETRY_AFTER_MS;
        uv_timer_start(&p->retry, on_retry, wait, 0);
        return;
    }
    finish(p->run, CH_EIO, "%s: %s on %s:%d refused: %s", p->role, what, p->host, p->port,
           m->code);
}

/* ---- setup
 * ----------------------------------------------------------------------------- */

static void maybe_measure(struct run *run)
{
    if (run->phase != CREATING || run->conv == 0 ||
        run->sender.created_conv != run->conv || run->receiver.created_conv != run->conv)
        return;
    run->phase = MEASURING;
    run->r->conv = run->conv;
    uv_timer_stop(&run->setup_timer);
    send_next(run);
}

static void on_setup_timeout(uv_timer_t *t)
{
    struct run *run = t->data;
    finish(run, CH_ETIMEOUT, "setup did not finish within %d s (still %s)",
           SETUP_TIMEOUT_MS / 1000, phase_names[run->phase]);
}

/* ---- measuring
 * ------------------------------------------------------------------------- */

static void on_pace(uv_timer_t *t)
{
    send_next(t->data);
}

/* The current message is over (acked and delivered, or failed): schedule the next. */
static void message_done(struct run *run)
{
    run->in_flight = 0;
    uv_timer_stop(&run->deadline);
    uint64_t now = uv_hrtime();
    uint64_t wait_ns = run->next_send_ns > now ? run->next_send_ns - now : 0;
    uint64_t wait_ms = (wait_ns + 999999) / 1000000 + run->extra_wait_ms;
    run->extra_wait_ms = 0;
    if (wait_ms == 0)
        send_next(run);
    else
        uv_timer_start(&run->pace, on_pace, wait_ms, 0);
}

static void on_deadline(uv_timer_t *t)
{
    struct run *run = t->data;
    if (!run->in_flight)
        return;
    bench_count_error(run->r, run->acked ? "delivery_timeout" : "timeout");
    message_done(run);
}

static void send_next(struct run *run)
{
    if (run->phase != MEASURING)
        return;
    if (run->index >= run->o->count) {
        finish(run, 0, NULL);
        return;
    }
    size_t i = run->index++;
    snprintf(run->client_msg_id, sizeof run->client_msg_id, "m%zu", i);
    run->send_id = ++run->sender.next_id;
    int n = snprintf(run->frame, run->frame_cap,
                     "{\"id\":%" PRId64 ",\"op\":\"send\",\"conv\":%" PRIu64
                     ",\"client_msg_id\":\"%s\",\"body\":\"%s\"}",
                     run->send_id, run->conv, run->client_msg_id, run->body);
    if (n < 0 || (size_t)n >= run->frame_cap) {
        finish(run, CH_EINTERNAL, "send request too long");
        return;
    }
    run->write_ns = 0;
    run->acked = run->delivered = run->failed = 0;
    run->in_flight = 1;
    if (run->sender.ws == NULL ||
        bench_ws_send(run->sender.ws, run->frame, (size_t)n, i) != 0) {
        finish(run, CH_EIO, "sender: cannot send");
        return;
    }
    run->r->sent++;
    uv_timer_start(&run->deadline, on_deadline, run->o->timeout_ms, 0);
}

static void on_written(struct bench_ws *ws, void *data, uint64_t tag, uint64_t write_ns)
{
    (void)ws;
    struct peer *p = data;
    struct run *run = p->run;
    if (p != &run->sender || run->phase != MEASURING || !run->in_flight ||
        tag != run->index - 1)
        return;
    run->write_ns = write_ns;
    run->next_send_ns = write_ns + run->gap_ns;
}

static void record(struct run *run, struct bench_stats *s, uint64_t recv_ns)
{
    uint64_t start = run->write_ns ? run->write_ns : recv_ns;
    if (bench_stats_record(s, recv_ns > start ? recv_ns - start : 0) != 0)
        finish(run, CH_ENOMEM, "out of memory");
}

static void on_ack(struct run *run, const struct bench_message *m, uint64_t recv_ns)
{
    if (!m->ok) {
        bench_count_error(run->r, m->code);
        if (strcmp(m->code, "rate_limited") == 0)
            run->extra_wait_ms = m->retry_after_ms < MAX_RETRY_AFTER_MS
                                     ? m->retry_after_ms
                                     : MAX_RETRY_AFTER_MS;
        run->failed = 1;
        message_done(run); /* no delivery will follow: the send did not happen */
        return;
    }
    if (m->result_conv != run->conv) {
        bench_count_error(run->r, "wrong_conv");
        run->failed = 1;
        message_done(run);
        return;
    }
    record(run, &run->r->ack, recv_ns);
    run->acked = 1;
    if (run->delivered)
        message_done(run);
}

static void on_delivered(struct run *run, uint64_t recv_ns)
{
    record(run, &run->r->delivered, recv_ns);
    run->delivered = 1;
    if (run->acked)
        message_done(run);
}

/* ---- connection callbacks
 * -------------------------------------------------------------- */

static void on_open(struct bench_ws *ws, void *data)
{
    (void)ws;
    struct peer *p = data;
    struct run *run = p->run;
    if (run->phase == DONE)
        return;
    run->phase = REGISTERING;
    send_register(p);
}

static void on_reply(struct peer *p, const struct bench_message *m, uint64_t recv_ns)
{
    struct run *run = p->run;
    if (!m->has_id) {
        /* the gateway could not read a request of ours: a bug on one side */
        if (run->phase == MEASURING)
            bench_count_error(run->r, m->ok ? "reply_without_id" : m->code);
        else
            finish(run, CH_EIO, "%s: a reply without id during setup (%s)", p->role,
                   m->ok ? "ok" : m->code);
        return;
    }
    if (m->id == p->register_id && !p->registered) {
        if (!m->ok) {
            setup_refused(p, "register", m);
            return;
        }
        p->registered = 1;
        p->attempts = 0;
        if (run->sender.registered && run->receiver.registered &&
            run->phase == REGISTERING) {
            run->phase = CREATING;
            send_create(run);
        }
        return;
    }
    if (p == &run->sender && m->id == run->create_id && run->conv == 0) {
        if (!m->ok) {
            setup_refused(p, "create", m);
            return;
        }
        if (m->result_conv == 0) {
            finish(run, CH_EIO, "sender: create answered without a conv");
            return;
        }
        run->conv = m->result_conv;
        maybe_measure(run);
        return;
    }
    if (p == &run->sender && run->phase == MEASURING && run->in_flight &&
        m->id == run->send_id && !run->acked)
        on_ack(run, m, recv_ns);
    /* anything else: a late reply to a message that already timed out */
}

static void on_event(struct peer *p, const struct bench_message *m, uint64_t recv_ns)
{
    struct run *run = p->run;
    if (strcmp(m->event, "created") == 0) {
        p->created_conv = m->conv;
        maybe_measure(run);
        return;
    }
    if (p == &run->receiver && run->phase == MEASURING && run->in_flight &&
        !run->delivered && m->conv == run->conv && strcmp(m->event, "message") == 0 &&
        strcmp(m->client_msg_id, run->client_msg_id) == 0)
        on_delivered(run, recv_ns);
}

static void on_message(struct bench_ws *ws, void *data, const char *text, size_t len,
                       uint64_t recv_ns)
{
    (void)ws;
    struct peer *p = data;
    struct run *run = p->run;
    if (run->phase == DONE)
        return;
    struct bench_message m;
    char why[160];
    if (bench_message_decode(text, len, &m, why, sizeof why) != 0) {
        if (run->phase == MEASURING)
            bench_count_error(run->r, "malformed");
        else
            finish(run, CH_EIO, "%s: a malformed message from the gateway: %s", p->role,
                   why);
        return;
    }
    switch (m.type) {
    case BENCH_MSG_REPLY:
        on_reply(p, &m, recv_ns);
        break;
    case BENCH_MSG_EVENT:
        on_event(p, &m, recv_ns);
        break;
    case BENCH_MSG_GOODBYE:
        finish(run, CH_EIO, "%s: the gateway said goodbye (%s)", p->role,
               m.code[0] ? m.code : "no code");
        break;
    default:
        break;
    }
}

static void on_close(struct bench_ws *ws, void *data, const char *why)
{
    (void)ws;
    struct peer *p = data;
    p->ws = NULL;
    finish(p->run, CH_EIO, "%s connection to %s:%d: %s", p->role, p->host, p->port, why);
}

static const struct bench_ws_callbacks callbacks = {
    .on_open = on_open,
    .on_message = on_message,
    .on_written = on_written,
    .on_close = on_close,
};

/* ---- progress and signals
 * ---------------------------------------------------------------- */

static void on_progress(uv_timer_t *t)
{
    struct run *run = t->data;
    if (run->phase != MEASURING) {
        bench_progress(1, "latency: %s", phase_names[run->phase]);
        return;
    }
    uint64_t p50 = bench_stats_quantile(&run->r->ack, 1, 2);
    uint64_t d50 = bench_stats_quantile(&run->r->delivered, 1, 2);
    bench_progress(1,
                   "latency: %zu/%zu sent, ack p50 %.0f us, delivered p50 %.0f us, "
                   "errors %zu",
                   run->r->sent, run->o->count, (double)p50 / 1e3, (double)d50 / 1e3,
                   run->r->errors);
}

static void on_sigint(uv_signal_t *s, int signum)
{
    (void)signum;
    struct run *run = s->data;
    run->r->interrupted = 1;
    finish(run, 0, NULL);
}

/* ---- the run
 * ------------------------------------------------------------------------------ */

static void peer_init(struct run *run, struct peer *p, const char *role, const char *host,
                      int port, const char *user)
{
    p->run = run;
    p->role = role;
    p->host = host;
    p->port = port;
    snprintf(p->user, sizeof p->user, "%s", user);
    uv_timer_init(&run->loop, &p->retry);
    p->retry.data = p;
}

int bench_latency_run(const struct bench_latency_options *o,
                      struct bench_latency_result *r)
{
    struct run *run = calloc(1, sizeof *run);
    if (run == NULL) {
        snprintf(r->failure, sizeof r->failure, "out of memory");
        return CH_ENOMEM;
    }
    run->o = o;
    run->r = r;
    run->gap_ns = o->rate > 0 ? (uint64_t)(1e9 / o->rate) : 0;
    run->body = malloc(o->size + 1);
    run->frame_cap = o->size + 256;
    run->frame = malloc(run->frame_cap);
    if (run->body == NULL || run->frame == NULL) {
        snprintf(r->failure, sizeof r->failure, "out of memory");
        free(run->body);
        free(run->frame);
        free(run);
        return CH_ENOMEM;
    }
    memset(run->body, 'x', o->size);
    run->body[o->size] = 0;
    if (bench_stats_reserve(&r->ack, o->count) != 0 ||
        bench_stats_reserve(&r->delivered, o->count) != 0) {
        snprintf(r->failure, sizeof r->failure, "out of memory");
        free(run->body);
        free(run->frame);
        free(run);
        return CH_ENOMEM;
    }

    char tag[16], user[40];
    bench_random_tag(tag, sizeof tag);
    uv_loop_init(&run->loop);
    snprintf(user, sizeof user, "bench-s-%s", tag);
    peer_init(run, &run->sender, "sender", o->host1, o->port1, user);
    snprintf(user, sizeof user, "bench-r-%s", tag);
    peer_init(run, &run->receiver, "receiver", o->host2, o->port2, user);
    snprintf(r->sender, sizeof r->sender, "%s", run->sender.user);
    snprintf(r->receiver, sizeof r->receiver, "%s", run->receiver.user);
    uv_timer_t *timers[] = {&run->setup_timer, &run->pace, &run->deadline,
                            &run->progress};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(&run->loop, timers[i]);
        timers[i]->data = run;
    }
    uv_signal_init(&run->loop, &run->sigint);
    run->sigint.data = run;

    char err[256];
    int rv = bench_ws_client_new(&run->loop, &run->client, err, sizeof err);
    if (rv != 0) {
        snprintf(r->failure, sizeof r->failure, "%s", err);
        run->phase = DONE; /* nothing to stop: close our handles and let the loop end */
        for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
            bench_uv_close((uv_handle_t *)timers[i]);
        bench_uv_close((uv_handle_t *)&run->sigint);
        bench_uv_close((uv_handle_t *)&run->sender.retry);
        bench_uv_close((uv_handle_t *)&run->receiver.retry);
        uv_run(&run->loop, UV_RUN_DEFAULT);
        uv_loop_close(&run->loop);
        free(run->body);
        free(run->frame);
        free(run);
        return rv;
    }
    run->phase = CONNECTING;
    uv_timer_start(&run->setup_timer, on_setup_timeout, SETUP_TIMEOUT_MS, 0);
    if (isatty(STDERR_FILENO))
        uv_timer_start(&run->progress, on_progress, 100, 200);
    uv_signal_start(&run->sigint, on_sigint, SIGINT);

    struct peer *peers[2] = {&run->sender, &run->receiver};
    for (int i = 0; i < 2 && run->phase != DONE; i++) {
        rv = bench_ws_open(run->client, peers[i]->host, peers[i]->port, bench_ws_path,
                           &callbacks, peers[i], &peers[i]->ws, err, sizeof err);
        if (rv != 0)
            finish(run, CH_EIO, "%s: %s", peers[i]->role, err);
    }
    uv_run(&run->loop, UV_RUN_DEFAULT);
    bench_ws_client_free(run->client);
    uv_run(&run->loop, UV_RUN_DEFAULT); /* anything the second destroy closed */
    if (uv_loop_close(&run->loop) != 0)
        fprintf(stderr, "chorus-bench: warning: handles left on the loop\n");
    bench_progress_done();
    rv = run->rv;
    free(run->body);
    free(run->frame);
    free(run);
    return rv;
}
