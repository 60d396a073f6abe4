/*
 * The throughput mode (bench_throughput_run, see bench.h): N connections, each its
 * own freshly registered user, over M group conversations; every connection keeps a
 * window of W sends in flight for the run's duration, sending to its conversations
 * round-robin.  We count acks and deliveries per second and time every ack.
 *
 * Who is in which conversation: conversation c has the connections i with
 * i % M == c, plus connections c % N and (c + 1) % N, so every conversation has at
 * least two members and every connection is in at least one conversation whatever
 * N and M are.  Conversation c is created by connection c % N.
 *
 * Everything runs on one libuv loop, like latency_uv.c:
 *
 *   CONNECTING/REGISTERING -> every connection registers its user (rate_limited
 *                register replies are retried after retry_after_ms)
 *   CREATING -> the creators create the conversations; we wait for every create's
 *               reply and for every member's `created` events
 *   MEASURING -> windows full on every connection until the duration timer fires;
 *                a rate_limited reply pauses that connection for retry_after_ms
 *   DONE -> timers closed, the client stopped from a zero timer, uv_run returns.
 *
 * A send's clock starts just before its frame is written to the socket (on_written)
 * and stops when the reply is whole in the client.  Sends still in flight when the
 * duration ends are reported as unacked, not waited for.
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

#define SETUP_TIMEOUT_MS 120000
#define MAX_RETRY_AFTER_MS 5000 /* the longest rate_limited wait we honour */
#define REFILL_MS 5             /* how often paused connections are looked at */
#define PASSWORD "chorus-bench-password"

enum phase { CONNECTING, REGISTERING, CREATING, MEASURING, DONE };

static const char *const phase_names[] = {
    "connecting", "registering", "creating the conversations", "measuring", "done"};

struct run;

/* One send in flight. */
struct slot {
    int64_t id;        /* its request id; 0 = the slot is free */
    uint64_t write_ns; /* when its frame was written (0: not yet) */
};

/* One connection and the user it registered. */
struct conn {
    struct run *run;
    size_t index;
    const struct bench_gateway *gw;
    struct bench_ws *ws; /* NULL once closed */
    char user[48];
    int64_t next_id;
    int64_t register_id;
    int registered;
    uint64_t retry_at_ms; /* setup: re-send register / creates at this loop time */
    size_t created_seen;  /* `created` events received */
    size_t *convs;        /* indexes of the conversations it is in */
    size_t n_convs;
    size_t next_conv; /* round-robin position */
    size_t sends;     /* sends begun, for client_msg_ids */
    struct slot *slots;
    size_t in_flight;
    uint64_t paused_until_ms; /* rate_limited: no sends before this loop time */
};

/* One conversation. */
struct conv {
    size_t *members; /* connection indexes */
    size_t n_members;
    int64_t create_id; /* the creator's request id */
    uint64_t id;       /* the conv, once the create is acked */
};

struct run {
    const struct bench_throughput_options *o;
    struct bench_throughput_result *r;
    uv_loop_t loop;
    struct bench_ws_client *client;
    struct conn *conns;
    struct conv *convs;
    size_t *membership; /* storage for every members / convs list */
    enum phase phase;
    int rv;
    size_t registered, opened, created;

    uv_timer_t setup_timer;
    uv_timer_t duration;
    uv_timer_t refill; /* retries setup requests, resumes paused connections */
    uv_timer_t progress;
    uv_signal_t sigint;

    uint64_t start_ns, end_ns;
    char *frame; /* a request, rebuilt per send around a fixed body */
    size_t frame_cap;
    char *body;
};

static void finish(struct run *run, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fill_window(struct conn *c);
static void on_duration(uv_timer_t *t);

/* ---- errors ------------------------------------------------------------------------ */

static void count_error(struct bench_throughput_result *r, const char *code)
{
    r->errors++;
    if (strcmp(code, "rate_limited") == 0)
        r->rate_limited++;
    bench_error_tally(r->codes, &r->n_codes, code);
}

/* ---- ending the run ---------------------------------------------------------------- */

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
    if (run->phase == MEASURING) {
        run->end_ns = uv_hrtime();
        for (size_t i = 0; i < run->o->connections; i++)
            run->r->unacked += run->conns[i].in_flight;
    }
    run->rv = rv;
    run->phase = DONE;
    bench_uv_close((uv_handle_t *)&run->setup_timer);
    bench_uv_close((uv_handle_t *)&run->duration);
    bench_uv_close((uv_handle_t *)&run->refill);
    bench_uv_close((uv_handle_t *)&run->progress);
    bench_uv_close((uv_handle_t *)&run->sigint);
    bench_ws_client_stop_soon(run->client);
}

/* ---- setup ------------------------------------------------------------------------- */

/* Writes run->frame (n bytes) on c; 0, or finishes the run. */
static int write_frame(struct conn *c, int n, uint64_t tag)
{
    struct run *run = c->run;
    if (n < 0 || (size_t)n >= run->frame_cap) {
        finish(run, CH_EINTERNAL, "request too long");
        return -1;
    }
    if (c->ws == NULL || bench_ws_send(c->ws, run->frame, (size_t)n, tag) != 0) {
        finish(run, CH_EIO, "connection %zu to %s:%d: cannot send", c->index, c->gw->host,
               c->gw->port);
        return -1;
    }
    return 0;
}

static void send_register(struct conn *c)
{
    c->register_id = ++c->next_id;
    int n = snprintf(c->run->frame, c->run->frame_cap,
                     "{\"id\":%" PRId64 ",\"op\":\"register\",\"user\":\"%s\","
                     "\"password\":\"" PASSWORD "\"}",
                     c->register_id, c->user);
    write_frame(c, n, 0);
}

static void send_create(struct run *run, size_t ci)
{
    struct conv *cv = &run->convs[ci];
    struct conn *creator = &run->conns[ci % run->o->connections];
    cv->create_id = ++creator->next_id;
    int n = snprintf(run->frame, run->frame_cap,
                     "{\"id\":%" PRId64 ",\"op\":\"create\",\"kind\":\"group\","
                     "\"name\":\"chorus-bench-%zu\",\"members\":[",
                     cv->create_id, ci);
    int first = 1;
    for (size_t k = 0; k < cv->n_members && n > 0 && (size_t)n < run->frame_cap; k++) {
        if (cv->members[k] == creator->index)
            continue;
        n += snprintf(run->frame + n, run->frame_cap - (size_t)n, "%s\"%s\"",
                      first ? "" : ",", run->conns[cv->members[k]].user);
        first = 0;
    }
    if (n > 0 && (size_t)n < run->frame_cap)
        n += snprintf(run->frame + n, run->frame_cap - (size_t)n, "]}");
    write_frame(creator, n, 0);
}

static uint64_t retry_wait(const struct bench_message *m)
{
    uint64_t wait = m->retry_after_ms ? m->retry_after_ms : 100;
    return wait > MAX_RETRY_AFTER_MS ? MAX_RETRY_AFTER_MS : wait;
}

static void maybe_measure(struct run *run);

static void start_creating(struct run *run)
{
    run->phase = CREATING;
    for (size_t ci = 0; ci < run->o->convs && run->phase == CREATING; ci++)
        send_create(run, ci);
}

static void on_setup_timeout(uv_timer_t *t)
{
    struct run *run = t->data;
    finish(run, CH_ETIMEOUT,
           "setup did not finish within %d s (still %s: %zu/%zu registered, %zu/%zu "
           "created)",
           SETUP_TIMEOUT_MS / 1000, phase_names[run->phase], run->registered,
           run->o->connections, run->created, run->o->convs);
}

/* ---- measuring --------------------------------------------------------------------- */

/* Sends from c until its window is full (or it is paused). */
static void fill_window(struct conn *c)
{
    struct run *run = c->run;
    if (c->paused_until_ms > uv_now(&run->loop))
        return;
    c->paused_until_ms = 0;
    while (run->phase == MEASURING && c->in_flight < run->o->window) {
        struct slot *s = NULL;
        for (size_t k = 0; k < run->o->window && s == NULL; k++)
            if (c->slots[k].id == 0)
                s = &c->slots[k];
        struct conv *cv = &run->convs[c->convs[c->next_conv]];
        c->next_conv = (c->next_conv + 1) % c->n_convs;
        s->id = ++c->next_id;
        s->write_ns = 0;
        c->in_flight++;
        int n = snprintf(run->frame, run->frame_cap,
                         "{\"id\":%" PRId64 ",\"op\":\"send\",\"conv\":%" PRIu64
                         ",\"client_msg_id\":\"t%zu-%zu\",\"body\":\"%s\"}",
                         s->id, cv->id, c->index, c->sends++, run->body);
        if (write_frame(c, n, (uint64_t)s->id) != 0)
            return;
        run->r->sent++;
    }
}

static void on_refill(uv_timer_t *t)
{
    struct run *run = t->data;
    uint64_t now = uv_now(&run->loop);
    for (size_t i = 0; i < run->o->connections && run->phase != DONE; i++) {
        struct conn *c = &run->conns[i];
        if (run->phase == REGISTERING && c->retry_at_ms && c->retry_at_ms <= now) {
            c->retry_at_ms = 0;
            send_register(c);
        } else if (run->phase == MEASURING && c->paused_until_ms &&
                   c->paused_until_ms <= now) {
            fill_window(c);
        }
    }
    if (run->phase == CREATING) {
        for (size_t ci = 0; ci < run->o->convs && run->phase == CREATING; ci++) {
            struct conn *creator = &run->conns[ci % run->o->connections];
            if (run->convs[ci].id == 0 && run->convs[ci].create_id == 0 &&
                creator->retry_at_ms <= now)
                send_create(run, ci);
        }
    }
}

static void maybe_measure(struct run *run)
{
    if (run->phase != CREATING || run->created < run->o->convs)
        return;
    for (size_t i = 0; i < run->o->connections; i++)
        if (run->conns[i].created_seen < run->conns[i].n_convs)
            return;
    run->phase = MEASURING;
    uv_timer_stop(&run->setup_timer);
    run->start_ns = uv_hrtime();
    uv_timer_start(&run->duration, on_duration, (uint64_t)(run->o->duration_s * 1000), 0);
    for (size_t i = 0; i < run->o->connections && run->phase == MEASURING; i++)
        fill_window(&run->conns[i]);
}

static void on_duration(uv_timer_t *t)
{
    finish(t->data, 0, NULL);
}

static void on_written(struct bench_ws *ws, void *data, uint64_t tag, uint64_t write_ns)
{
    (void)ws;
    struct conn *c = data;
    if (tag == 0 || c->run->phase != MEASURING)
        return;
    for (size_t k = 0; k < c->run->o->window; k++)
        if (c->slots[k].id == (int64_t)tag) {
            c->slots[k].write_ns = write_ns;
            return;
        }
}

/* ---- replies and events ------------------------------------------------------------ */

static void on_send_reply(struct conn *c, struct slot *s, const struct bench_message *m,
                          uint64_t recv_ns)
{
    struct run *run = c->run;
    uint64_t start = s->write_ns ? s->write_ns : recv_ns;
    s->id = 0;
    c->in_flight--;
    if (!m->ok) {
        count_error(run->r, m->code);
        if (strcmp(m->code, "rate_limited") == 0)
            c->paused_until_ms = uv_now(&run->loop) + retry_wait(m);
    } else {
        run->r->acked++;
        if (bench_stats_record(&run->r->ack, recv_ns > start ? recv_ns - start : 0) !=
            0) {
            finish(run, CH_ENOMEM, "out of memory");
            return;
        }
    }
    fill_window(c);
}

static void on_reply(struct conn *c, const struct bench_message *m, uint64_t recv_ns)
{
    struct run *run = c->run;
    if (!m->has_id) {
        if (run->phase == MEASURING)
            count_error(run->r, m->ok ? "reply_without_id" : m->code);
        else
            finish(run, CH_EIO, "connection %zu: a reply without id during setup (%s)",
                   c->index, m->ok ? "ok" : m->code);
        return;
    }
    if (m->id == c->register_id && !c->registered) {
        if (!m->ok) {
            if (strcmp(m->code, "rate_limited") == 0) {
                c->retry_at_ms = uv_now(&run->loop) + retry_wait(m);
                return;
            }
            finish(run, CH_EIO, "connection %zu: register on %s:%d refused: %s", c->index,
                   c->gw->host, c->gw->port, m->code);
            return;
        }
        c->registered = 1;
        if (++run->registered == run->o->connections && run->phase == REGISTERING)
            start_creating(run);
        return;
    }
    if (run->phase == CREATING) {
        for (size_t ci = c->index; ci < run->o->convs; ci += run->o->connections) {
            struct conv *cv = &run->convs[ci];
            if (cv->create_id != m->id || cv->id != 0)
                continue;
            if (!m->ok) {
                if (strcmp(m->code, "rate_limited") == 0) {
                    cv->create_id = 0; /* on_refill sends it again */
                    c->retry_at_ms = uv_now(&run->loop) + retry_wait(m);
                    return;
                }
                finish(run, CH_EIO, "connection %zu: create refused: %s", c->index,
                       m->code);
                return;
            }
            if (m->result_conv == 0) {
                finish(run, CH_EIO, "create answered without a conv");
                return;
            }
            cv->id = m->result_conv;
            run->created++;
            maybe_measure(run);
            return;
        }
    }
    if (run->phase == MEASURING) {
        for (size_t k = 0; k < run->o->window; k++)
            if (c->slots[k].id == m->id) {
                on_send_reply(c, &c->slots[k], m, recv_ns);
                return;
            }
    }
}

static void on_event(struct conn *c, const struct bench_message *m)
{
    struct run *run = c->run;
    if (strcmp(m->event, "created") == 0) {
        c->created_seen++;
        maybe_measure(run);
        return;
    }
    /* our sends carry client_msg_id t<connection>-<n>: count other members' ones */
    if (run->phase == MEASURING && strcmp(m->event, "message") == 0 &&
        m->client_msg_id[0] == 't') {
        char *end;
        unsigned long long from = strtoull(m->client_msg_id + 1, &end, 10);
        if (*end == '-' && from != c->index)
            run->r->delivered++;
    }
}

/* ---- connection callbacks ---------------------------------------------------------- */

static void on_open(struct bench_ws *ws, void *data)
{
    (void)ws;
    struct conn *c = data;
    struct run *run = c->run;
    if (run->phase == DONE)
        return;
    if (run->phase == CONNECTING)
        run->phase = REGISTERING;
    run->opened++;
    send_register(c);
}

static void on_message(struct bench_ws *ws, void *data, const char *text, size_t len,
                       uint64_t recv_ns)
{
    (void)ws;
    struct conn *c = data;
    struct run *run = c->run;
    if (run->phase == DONE)
        return;
    struct bench_message m;
    char why[160];
    if (bench_message_decode(text, len, &m, why, sizeof why) != 0) {
        if (run->phase == MEASURING)
            count_error(run->r, "malformed");
        else
            finish(run, CH_EIO,
                   "connection %zu: a malformed message from the gateway: %s", c->index,
                   why);
        return;
    }
    switch (m.type) {
    case BENCH_MSG_REPLY:
        on_reply(c, &m, recv_ns);
        break;
    case BENCH_MSG_EVENT:
        on_event(c, &m);
        break;
    case BENCH_MSG_GOODBYE:
        finish(run, CH_EIO, "connection %zu: the gateway said goodbye (%s)", c->index,
               m.code[0] ? m.code : "no code");
        break;
    default:
        break;
    }
}

static void on_close(struct bench_ws *ws, void *data, const char *why)
{
    (void)ws;
    struct conn *c = data;
    c->ws = NULL;
    finish(c->run, CH_EIO, "connection %zu to %s:%d: %s", c->index, c->gw->host,
           c->gw->port, why);
}

static const struct bench_ws_callbacks callbacks = {
    .on_open = on_open,
    .on_message = on_message,
    .on_written = on_written,
    .on_close = on_close,
};

/* ---- progress and signals ---------------------------------------------------------- */

static void on_progress(uv_timer_t *t)
{
    struct run *run = t->data;
    if (run->phase != MEASURING) {
        bench_progress(1, "throughput: %s (%zu/%zu registered, %zu/%zu created)",
                       phase_names[run->phase], run->registered, run->o->connections,
                       run->created, run->o->convs);
        return;
    }
    double s = (double)(uv_hrtime() - run->start_ns) / 1e9;
    bench_progress(1,
                   "throughput: %.0f/%.0f s, %zu acked (%.0f/s), %zu delivered, "
                   "errors %zu",
                   s, run->o->duration_s, run->r->acked, s > 0 ? run->r->acked / s : 0,
                   run->r->delivered, run->r->errors);
}

static void on_sigint(uv_signal_t *s, int signum)
{
    (void)signum;
    struct run *run = s->data;
    run->r->interrupted = 1;
    finish(run, 0, NULL);
}

/* ---- the run ----------------------------------------------------------------------- */

/* Allocates the connections, conversations and their membership lists. */
static int plan(struct run *run)
{
    size_t n = run->o->connections, m = run->o->convs;
    size_t total = 0;
    run->conns = calloc(n, sizeof *run->conns);
    run->convs = calloc(m, sizeof *run->convs);
    if (run->conns == NULL || run->convs == NULL)
        return CH_ENOMEM;
    /* pass 1: count (at most n / m + 3 members per conversation) */
    for (size_t c = 0; c < m; c++) {
        size_t extra[2] = {c % n, (c + 1) % n};
        for (size_t i = c; i < n; i += m)
            run->convs[c].n_members++;
        for (int k = 0; k < 2; k++)
            if (extra[k] % m != c && (k == 0 || extra[1] != extra[0]))
                run->convs[c].n_members++;
        total += run->convs[c].n_members;
    }
    run->r->memberships = total;
    run->membership = calloc(2 * total, sizeof *run->membership);
    if (run->membership == NULL)
        return CH_ENOMEM;
    size_t *next = run->membership;
    for (size_t c = 0; c < m; c++) {
        struct conv *cv = &run->convs[c];
        cv->members = next;
        size_t k = 0;
        size_t extra[2] = {c % n, (c + 1) % n};
        for (size_t i = c; i < n; i += m)
            cv->members[k++] = i;
        for (int e = 0; e < 2; e++)
            if (extra[e] % m != c && (e == 0 || extra[1] != extra[0]))
                cv->members[k++] = extra[e];
        next += cv->n_members;
        for (k = 0; k < cv->n_members; k++)
            run->conns[cv->members[k]].n_convs++;
    }
    for (size_t i = 0; i < n; i++) {
        run->conns[i].convs = next;
        next += run->conns[i].n_convs;
        run->conns[i].n_convs = 0;
        run->conns[i].slots = calloc(run->o->window, sizeof(struct slot));
        if (run->conns[i].slots == NULL)
            return CH_ENOMEM;
    }
    for (size_t c = 0; c < m; c++)
        for (size_t k = 0; k < run->convs[c].n_members; k++) {
            struct conn *cn = &run->conns[run->convs[c].members[k]];
            cn->convs[cn->n_convs++] = c;
        }
    return 0;
}

static void run_free(struct run *run)
{
    if (run->conns != NULL)
        for (size_t i = 0; i < run->o->connections; i++)
            free(run->conns[i].slots);
    free(run->conns);
    free(run->convs);
    free(run->membership);
    free(run->frame);
    free(run->body);
    free(run);
}

int bench_throughput_run(const struct bench_throughput_options *o,
                         struct bench_throughput_result *r)
{
    if (o->connections < 2 || o->convs < 1 || o->window < 1 || o->n_gateways < 1) {
        snprintf(r->failure, sizeof r->failure,
                 "need 2+ connections, 1+ conversations, a window and a gateway");
        return CH_EINVAL;
    }
    struct run *run = calloc(1, sizeof *run);
    if (run == NULL) {
        snprintf(r->failure, sizeof r->failure, "out of memory");
        return CH_ENOMEM;
    }
    run->o = o;
    run->r = r;
    /* the largest request: a create naming n / m + 3 members of up to 48 bytes */
    size_t create_cap = (o->connections / o->convs + 4) * 52 + 256;
    run->frame_cap = o->size + 256 > create_cap ? o->size + 256 : create_cap;
    run->frame = malloc(run->frame_cap);
    run->body = malloc(o->size + 1);
    if (run->frame == NULL || run->body == NULL || plan(run) != 0) {
        snprintf(r->failure, sizeof r->failure, "out of memory");
        run_free(run);
        return CH_ENOMEM;
    }
    memset(run->body, 'x', o->size);
    run->body[o->size] = 0;

    char tag[16];
    bench_random_tag(tag, sizeof tag);
    for (size_t i = 0; i < o->connections; i++) {
        struct conn *c = &run->conns[i];
        c->run = run;
        c->index = i;
        c->gw = &o->gateways[i % o->n_gateways];
        snprintf(c->user, sizeof c->user, "bench-t-%s-%zu", tag, i);
    }

    uv_loop_init(&run->loop);
    uv_timer_t *timers[] = {&run->setup_timer, &run->duration, &run->refill,
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
        for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
            bench_uv_close((uv_handle_t *)timers[i]);
        bench_uv_close((uv_handle_t *)&run->sigint);
        uv_run(&run->loop, UV_RUN_DEFAULT);
        uv_loop_close(&run->loop);
        run_free(run);
        return rv;
    }
    run->phase = CONNECTING;
    uv_timer_start(&run->setup_timer, on_setup_timeout, SETUP_TIMEOUT_MS, 0);
    uv_timer_start(&run->refill, on_refill, REFILL_MS, REFILL_MS);
    if (isatty(STDERR_FILENO))
        uv_timer_start(&run->progress, on_progress, 100, 200);
    uv_signal_start(&run->sigint, on_sigint, SIGINT);
    for (size_t i = 0; i < o->connections && run->phase != DONE; i++) {
        struct conn *c = &run->conns[i];
        rv = bench_ws_open(run->client, c->gw->host, c->gw->port, bench_ws_path,
                           &callbacks, c, &c->ws, err, sizeof err);
        if (rv != 0)
            finish(run, CH_EIO, "connection %zu: %s", i, err);
    }
    uv_run(&run->loop, UV_RUN_DEFAULT);
    bench_ws_client_free(run->client);
    uv_run(&run->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&run->loop) != 0)
        fprintf(stderr, "chorus-bench: warning: handles left on the loop\n");
    bench_progress_done();
    if (run->start_ns != 0 && run->end_ns > run->start_ns)
        r->elapsed_s = (double)(run->end_ns - run->start_ns) / 1e9;
    rv = run->rv;
    run_free(run);
    return rv;
}
