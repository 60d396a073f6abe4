/*
 * The fanout and connections modes (bench_fanout_run, bench_connections_run, see
 * bench.h): both need a crowd of logged-in sessions, far more than latency_uv.c's
 * two or throughput_uv.c's few dozen, so their setup is shared here:
 *
 *   REGISTERING -> every user registers on a short-lived connection of its own
 *                  (a connection cannot register twice); we keep the token and
 *                  close the connection.  At most REGISTER_WINDOW at a time.
 *   EARLY -> the creators' sessions (sessions 0..creators-1) open and `auth`.
 *   CREATING -> each creator creates its group with the first CREATE_BATCH members
 *               and adds the rest with add_member (ADD_WINDOW in flight).  The
 *               members are not connected yet, so nobody receives the O(members^2)
 *               member_added events a growing group would otherwise push.
 *   OPENING -> every other session opens and sends `auth`; the auth reply comes
 *              once the session follows all the user's conversations, so a
 *              session with its reply receives every later message.  At most
 *              OPEN_WINDOW handshakes at a time.
 *   MEASURING -> fanout: one message at a time until every member has it;
 *                connections: the senders post at --rate for --duration
 *   DONE -> timers closed, the client stopped from a zero timer, uv_run returns.
 *
 * Connections to a loopback gateway are bound to source addresses 127.0.0.2,
 * 127.0.0.3, ... in turn (SOURCE_ADDRESSES of them), each with its own ephemeral
 * port range, so 100,000 connections to one port do not run out of ports.
 *
 * New connections are opened from a pump timer, never from inside a
 * libwebsockets callback.
 */
#include <uv.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../common/error.h"
#include "bench.h"
#include "message.h"
#include "ws_client.h"

#define PASSWORD "chorus-bench-password"
#define REGISTER_WINDOW 64  /* registrations in progress at once (scrypt each) */
#define OPEN_WINDOW 256     /* session handshakes + auths in progress at once */
#define CREATE_BATCH 500    /* members listed in a create (the gateway allows 1000) */
#define ADD_WINDOW 64       /* add_member requests in flight */
#define PUMP_MS 2           /* how often the windows are topped up */
#define SOURCE_ADDRESSES 16 /* 127.0.0.2 .. 127.0.0.17 */
#define MAX_RETRY_AFTER_MS 5000
#define SETUP_STALL_MS 60000 /* setup making no progress for this long fails */

enum phase { REGISTERING, EARLY, CREATING, OPENING, MEASURING, DONE };

static const char *const phase_names[] = {"registering users",
                                          "connecting the creators",
                                          "creating the conversations",
                                          "opening the sessions",
                                          "measuring",
                                          "done"};

enum mode { FANOUT, CONNECTIONS };

struct run;

struct user {
    char name[48];
    char *token; /* owned, from the register reply */
};

/* One connection: a registration (temporary) or a session (auth with a token). */
struct sess {
    struct run *run;
    size_t index; /* in run->sessions, or the user index of a registration */
    size_t user;
    int registration;
    const struct bench_gateway *gw;
    struct bench_ws *ws; /* NULL once closed */
    int64_t next_id;
    int64_t setup_id;  /* the register / auth request */
    int done_setup;    /* registered / authenticated */
    uint64_t retry_at; /* rate_limited: re-send the setup request at this loop time */
    /* measuring */
    uint64_t last_repeat; /* fanout: the last message received (1-based) */
    int64_t send_id;      /* a send in flight (0: none) */
    uint64_t write_ns;
    size_t sends;
};

/* A group: its creator (a user with session index == creator) and members. */
struct group {
    size_t creator; /* user index; its session is sessions[creator] */
    size_t first;   /* members are users first, first + stride, ... */
    size_t stride;
    size_t n_members;  /* not counting the creator */
    size_t next_add;   /* members listed or added so far */
    size_t adds_done;  /* add_member replies */
    size_t in_flight;  /* add_member requests outstanding */
    int64_t create_id; /* 0 once answered */
    uint64_t conv;
};

struct run {
    enum mode mode;
    const struct bench_fanout_options *fo;
    struct bench_fanout_result *fr;
    const struct bench_connections_options *co;
    struct bench_connections_result *cr;
    const struct bench_gateway *gateways;
    size_t n_gateways;
    size_t size;
    int loopback; /* bind source addresses */
    unsigned next_source;

    uv_loop_t loop;
    struct bench_ws_client *client;
    enum phase phase;
    int rv;

    struct user *users;
    size_t n_users;
    struct sess *regs; /* one per user */
    size_t next_reg, regs_done, regs_live;
    struct sess *sessions;
    size_t n_sessions, n_early;
    size_t next_open, opened, opens_live;
    struct group *groups;
    size_t n_groups, groups_done;
    size_t retries; /* setup requests waiting for retry_at */
    uint64_t last_progress_ms;

    uv_timer_t pump, pace, deadline, progress;
    uv_signal_t sigint;

    uint64_t setup_start_ns, open_start_ns, start_ns, end_ns;
    char *frame;
    size_t frame_cap;
    char *body;
    char tag[16];

    /* fanout: the message in flight */
    uint64_t repeat; /* messages begun; the current is number repeat */
    uint64_t fan_write_ns;
    size_t fan_received;
    int fan_acked;
    struct bench_stats per_member; /* this message's member latencies */
    /* connections: round-robin over the senders */
    size_t next_sender;
};

static void finish(struct run *run, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fanout_next(struct run *run);

/* ---- small helpers ----------------------------------------------------------------- */

size_t bench_raise_nofile(size_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
            /* root may raise the hard limit up to fs.nr_open */
            rlim_t max = want;
            FILE *f = fopen("/proc/sys/fs/nr_open", "r");
            unsigned long long nr;
            if (f != NULL && fscanf(f, "%llu", &nr) == 1 && nr < max)
                max = (rlim_t)nr;
            if (f != NULL)
                fclose(f);
            struct rlimit up = {.rlim_cur = max, .rlim_max = max};
            if (max > rl.rlim_max && setrlimit(RLIMIT_NOFILE, &up) == 0)
                rl = up;
        }
        rlim_t cur = want;
        if (rl.rlim_max != RLIM_INFINITY && cur > rl.rlim_max)
            cur = rl.rlim_max;
        struct rlimit set = {.rlim_cur = cur, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &set) == 0)
            rl.rlim_cur = cur;
    }
    return rl.rlim_cur == RLIM_INFINITY ? want : (size_t)rl.rlim_cur;
}

/* VmRSS of pid in bytes, 0 when unreadable. */
static uint64_t read_vmrss(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    uint64_t kib = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtoull(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib * 1024;
}

/* The inode of a TCP socket listening on port (IPv4 or IPv6), 0 if none. */
static unsigned long listening_inode(int port)
{
    const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (size_t i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "r");
        if (f == NULL)
            continue;
        char line[512], local[128];
        unsigned st;
        unsigned long inode;
        while (fgets(line, sizeof line, f) != NULL) {
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, " %*s %127s %*s %x %*s %*s %*s %*s %*s %lu", local, &st,
                       &inode) != 3 ||
                st != 0x0A)
                continue;
            char *colon = strrchr(local, ':');
            if (colon != NULL && strtol(colon + 1, NULL, 16) == port) {
                fclose(f);
                return inode;
            }
        }
        fclose(f);
    }
    return 0;
}

/* The process holding the socket that listens on port, 0 if not found (another
 * user's processes cannot be looked into). */
static long find_pid_by_port(int port)
{
    unsigned long inode = listening_inode(port);
    if (inode == 0)
        return 0;
    char want[64];
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    DIR *proc = opendir("/proc");
    if (proc == NULL)
        return 0;
    long found = 0;
    struct dirent *e;
    while (found == 0 && (e = readdir(proc)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/fd", e->d_name);
        DIR *fds = opendir(path);
        if (fds == NULL)
            continue;
        struct dirent *fe;
        while ((fe = readdir(fds)) != NULL) {
            char link[600], target[64];
            snprintf(link, sizeof link, "%s/%s", path, fe->d_name);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n <= 0)
                continue;
            target[n] = 0;
            if (strcmp(target, want) == 0) {
                found = strtol(e->d_name, NULL, 10);
                break;
            }
        }
        closedir(fds);
    }
    closedir(proc);
    return found;
}

static uint64_t retry_wait(const struct bench_message *m)
{
    uint64_t wait = m->retry_after_ms ? m->retry_after_ms : 100;
    return wait > MAX_RETRY_AFTER_MS ? MAX_RETRY_AFTER_MS : wait;
}

static void count_error(struct run *run, const char *code)
{
    if (run->mode == FANOUT) {
        run->fr->errors++;
        bench_error_tally(run->fr->codes, &run->fr->n_codes, code);
    } else {
        run->cr->errors++;
        bench_error_tally(run->cr->codes, &run->cr->n_codes, code);
    }
}

static char *failure_buf(struct run *run)
{
    return run->mode == FANOUT ? run->fr->failure : run->cr->failure;
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
        vsnprintf(failure_buf(run), 256, fmt, ap);
        va_end(ap);
    }
    if (run->phase == MEASURING)
        run->end_ns = uv_hrtime();
    if (run->mode == CONNECTIONS && run->phase == OPENING) {
        /* stopped while opening (a limit, Ctrl-C): report what was open by then */
        struct bench_connections_result *r = run->cr;
        r->open = run->opened;
        r->open_s = (double)(uv_hrtime() - run->open_start_ns) / 1e9;
        if (r->pid > 0)
            r->rss_after = read_vmrss(r->pid);
    }
    run->rv = rv;
    run->phase = DONE;
    bench_uv_close((uv_handle_t *)&run->pump);
    bench_uv_close((uv_handle_t *)&run->pace);
    bench_uv_close((uv_handle_t *)&run->deadline);
    bench_uv_close((uv_handle_t *)&run->progress);
    bench_uv_close((uv_handle_t *)&run->sigint);
    bench_ws_client_stop_soon(run->client);
}

/* ---- requests ---------------------------------------------------------------------- */

/* Writes run->frame (n bytes) on s; 0, or -1 after finishing the run. */
static int write_frame(struct sess *s, int n, uint64_t tag)
{
    struct run *run = s->run;
    if (n < 0 || (size_t)n >= run->frame_cap) {
        finish(run, CH_EINTERNAL, "request too long");
        return -1;
    }
    if (s->ws == NULL || bench_ws_send(s->ws, run->frame, (size_t)n, tag) != 0) {
        finish(run, CH_EIO, "%s %zu to %s:%d: cannot send",
               s->registration ? "registration" : "session", s->index, s->gw->host,
               s->gw->port);
        return -1;
    }
    return 0;
}

static void send_setup(struct sess *s)
{
    struct run *run = s->run;
    struct user *u = &run->users[s->user];
    s->setup_id = ++s->next_id;
    int n;
    if (s->registration)
        n = snprintf(run->frame, run->frame_cap,
                     "{\"id\":%" PRId64 ",\"op\":\"register\",\"user\":\"%s\","
                     "\"password\":\"" PASSWORD "\"}",
                     s->setup_id, u->name);
    else
        n = snprintf(run->frame, run->frame_cap,
                     "{\"id\":%" PRId64 ",\"op\":\"auth\",\"token\":\"%s\"}", s->setup_id,
                     u->token);
    write_frame(s, n, 0);
}

static size_t group_member(const struct group *g, size_t k)
{
    return g->first + k * g->stride;
}

static void send_create(struct run *run, struct group *g)
{
    struct sess *creator = &run->sessions[g->creator];
    g->create_id = ++creator->next_id;
    int n = snprintf(run->frame, run->frame_cap,
                     "{\"id\":%" PRId64 ",\"op\":\"create\",\"kind\":\"group\","
                     "\"name\":\"chorus-bench-%s-%zu\",\"members\":[",
                     g->create_id, run->tag, g->creator);
    size_t k;
    for (k = 0;
         k < g->n_members && k < CREATE_BATCH && n > 0 && (size_t)n < run->frame_cap; k++)
        n += snprintf(run->frame + n, run->frame_cap - (size_t)n, "%s\"%s\"",
                      k ? "," : "", run->users[group_member(g, k)].name);
    g->next_add = k;
    g->adds_done = k;
    if (n > 0 && (size_t)n < run->frame_cap)
        n += snprintf(run->frame + n, run->frame_cap - (size_t)n, "]}");
    write_frame(creator, n, 0);
}

/* Keeps ADD_WINDOW add_member requests of g in flight.  Request ids of adds are
 * ADD_ID_BASE + member index, so a reply names its member. */
#define ADD_ID_BASE ((int64_t)1 << 40)

static void send_adds(struct run *run, struct group *g)
{
    struct sess *creator = &run->sessions[g->creator];
    while (run->phase == CREATING && g->conv != 0 && g->in_flight < ADD_WINDOW &&
           g->next_add < g->n_members) {
        size_t k = g->next_add++;
        int n = snprintf(run->frame, run->frame_cap,
                         "{\"id\":%" PRId64 ",\"op\":\"add_member\",\"conv\":%" PRIu64
                         ",\"user\":\"%s\"}",
                         ADD_ID_BASE + (int64_t)k, g->conv,
                         run->users[group_member(g, k)].name);
        if (write_frame(creator, n, 0) != 0)
            return;
        g->in_flight++;
    }
}

/* ---- the phases -------------------------------------------------------------------- */

static void progress_made(struct run *run)
{
    run->last_progress_ms = uv_now(&run->loop);
}

/* The next source address for a loopback gateway, else NULL. */
static const char *source_address(struct run *run, char *buf, size_t len)
{
    if (!run->loopback)
        return NULL;
    snprintf(buf, len, "127.0.0.%u", 2 + run->next_source++ % SOURCE_ADDRESSES);
    return buf;
}

static const struct bench_ws_callbacks callbacks;

static int open_conn(struct run *run, struct sess *s)
{
    char src[32], err[256];
    const char *iface = source_address(run, src, sizeof src);
    int rv = bench_ws_open_from(run->client, iface, s->gw->host, s->gw->port,
                                bench_ws_path, &callbacks, s, &s->ws, err, sizeof err);
    if (rv != 0) {
        finish(run, CH_EIO, "%s %zu: %s", s->registration ? "registration" : "session",
               s->index, err);
        return -1;
    }
    return 0;
}

static void start_measuring(struct run *run);

static void start_opening(struct run *run)
{
    run->phase = OPENING;
    if (run->mode == CONNECTIONS) {
        struct bench_connections_result *r = run->cr;
        if (r->pid > 0)
            r->rss_before = read_vmrss(r->pid);
    }
    run->open_start_ns = uv_hrtime();
    run->next_open = run->n_early;
    progress_made(run);
}

static void maybe_created(struct run *run)
{
    if (run->phase != CREATING || run->groups_done < run->n_groups)
        return;
    start_opening(run);
}

static void start_creating(struct run *run)
{
    run->phase = CREATING;
    progress_made(run);
    for (size_t i = 0; i < run->n_groups && run->phase == CREATING; i++)
        send_create(run, &run->groups[i]);
}

static void session_ready(struct run *run)
{
    run->opened++;
    progress_made(run);
    if (run->phase == EARLY && run->opened == run->n_early)
        start_creating(run);
    else if (run->phase == OPENING && run->opened == run->n_sessions)
        start_measuring(run);
}

/* Tops up the registration and opening windows; re-sends rate-limited requests;
 * fails a setup that stopped making progress. */
static void on_pump(uv_timer_t *t)
{
    struct run *run = t->data;
    uint64_t now = uv_now(&run->loop);
    if (run->phase == REGISTERING) {
        while (run->phase == REGISTERING && run->regs_live < REGISTER_WINDOW &&
               run->next_reg < run->n_users) {
            struct sess *s = &run->regs[run->next_reg++];
            run->regs_live++;
            open_conn(run, s);
        }
    } else if (run->phase == EARLY && run->next_open < run->n_early) {
        while (run->phase == EARLY && run->next_open < run->n_early)
            open_conn(run, &run->sessions[run->next_open++]);
    } else if (run->phase == OPENING) {
        for (int k = 0; k < 64 && run->phase == OPENING &&
                        run->opens_live < OPEN_WINDOW && run->next_open < run->n_sessions;
             k++) {
            run->opens_live++;
            open_conn(run, &run->sessions[run->next_open++]);
        }
    }
    if (run->phase == DONE || run->phase == MEASURING)
        return;
    /* rate-limited setup requests (few: the benchmark config raises the limits) */
    for (size_t i = 0; run->retries > 0 && i < run->n_users && run->phase == REGISTERING;
         i++) {
        struct sess *s = &run->regs[i];
        if (s->retry_at && s->retry_at <= now) {
            s->retry_at = 0;
            run->retries--;
            send_setup(s);
        }
    }
    for (size_t i = 0; run->retries > 0 && i < run->next_open && run->phase != DONE &&
                       run->phase != CREATING;
         i++) {
        struct sess *s = &run->sessions[i];
        if (s->retry_at && s->retry_at <= now) {
            s->retry_at = 0;
            run->retries--;
            send_setup(s);
        }
    }
    for (size_t i = 0; run->retries > 0 && i < run->n_groups && run->phase == CREATING;
         i++) {
        struct group *g = &run->groups[i];
        struct sess *creator = &run->sessions[g->creator];
        if (creator->retry_at == 0 || creator->retry_at > now)
            continue;
        creator->retry_at = 0;
        run->retries--;
        if (g->conv == 0 && g->create_id == 0)
            send_create(run, g);
        else
            send_adds(run, g);
    }
    if (run->phase != DONE && now - run->last_progress_ms > SETUP_STALL_MS)
        finish(run, CH_ETIMEOUT,
               "setup made no progress for %d s (still %s: %zu/%zu registered, %zu/%zu "
               "groups, %zu/%zu sessions open)",
               SETUP_STALL_MS / 1000, phase_names[run->phase], run->regs_done,
               run->n_users, run->groups_done, run->n_groups, run->opened,
               run->n_sessions);
}

/* ---- measuring: fanout ------------------------------------------------------------- */

static void fanout_complete(struct run *run)
{
    struct bench_fanout_result *r = run->fr;
    uv_timer_stop(&run->deadline);
    uint64_t last = 0;
    size_t n;
    const uint64_t *v = bench_stats_sorted(&run->per_member, &n);
    if (n > 0)
        last = v[n - 1];
    if (bench_stats_record(&r->fanout, last) != 0 ||
        bench_stats_record(&r->member_p50,
                           bench_stats_quantile(&run->per_member, 1, 2)) != 0) {
        finish(run, CH_ENOMEM, "out of memory");
        return;
    }
    r->completed++;
    fanout_next(run);
}

static void fanout_check(struct run *run)
{
    if (run->fan_acked && run->fan_received == run->fo->members)
        fanout_complete(run);
}

static void on_fanout_deadline(uv_timer_t *t)
{
    struct run *run = t->data;
    count_error(run, "timeout");
    fanout_next(run);
}

static void fanout_next(struct run *run)
{
    struct bench_fanout_result *r = run->fr;
    struct sess *sender = &run->sessions[0];
    if (run->phase != MEASURING)
        return;
    if (run->repeat == run->fo->repeats) {
        finish(run, 0, NULL);
        return;
    }
    run->repeat++;
    run->fan_received = 0;
    run->fan_acked = 0;
    run->fan_write_ns = 0;
    bench_stats_reset(&run->per_member);
    sender->send_id = ++sender->next_id;
    int n = snprintf(run->frame, run->frame_cap,
                     "{\"id\":%" PRId64 ",\"op\":\"send\",\"conv\":%" PRIu64
                     ",\"client_msg_id\":\"f%" PRIu64 "\",\"body\":\"%s\"}",
                     sender->send_id, run->groups[0].conv, run->repeat, run->body);
    if (write_frame(sender, n, (uint64_t)sender->send_id) != 0)
        return;
    r->sent++;
    uv_timer_start(&run->deadline, on_fanout_deadline, run->fo->timeout_ms, 0);
}

static void fanout_event(struct run *run, struct sess *s, const struct bench_message *m,
                         uint64_t recv_ns)
{
    if (s->index == 0 || m->client_msg_id[0] != 'f' || m->conv != run->groups[0].conv)
        return;
    uint64_t k = strtoull(m->client_msg_id + 1, NULL, 10);
    if (k != run->repeat || s->last_repeat == k)
        return; /* a late delivery of a message that timed out */
    s->last_repeat = k;
    uint64_t start = run->fan_write_ns ? run->fan_write_ns : recv_ns;
    if (bench_stats_record(&run->per_member, recv_ns > start ? recv_ns - start : 0) !=
        0) {
        finish(run, CH_ENOMEM, "out of memory");
        return;
    }
    run->fan_received++;
    fanout_check(run);
}

/* ---- measuring: connections -------------------------------------------------------- */

static void on_pace(uv_timer_t *t)
{
    struct run *run = t->data;
    struct bench_connections_result *r = run->cr;
    if (run->phase != MEASURING)
        return;
    /* the next sender without a send in flight (window 1 each) */
    for (size_t k = 0; k < r->senders; k++) {
        struct sess *s = &run->sessions[run->next_sender];
        run->next_sender = (run->next_sender + 1) % r->senders;
        if (s->send_id != 0)
            continue;
        s->send_id = ++s->next_id;
        s->write_ns = 0;
        int n = snprintf(run->frame, run->frame_cap,
                         "{\"id\":%" PRId64 ",\"op\":\"send\",\"conv\":%" PRIu64
                         ",\"client_msg_id\":\"c%zu-%zu\",\"body\":\"%s\"}",
                         s->send_id, run->groups[s->index].conv, s->index, s->sends++,
                         run->body);
        if (write_frame(s, n, (uint64_t)s->send_id) != 0)
            return;
        r->sent++;
        return;
    }
}

static void on_duration(uv_timer_t *t)
{
    finish(t->data, 0, NULL);
}

static void start_measuring(struct run *run)
{
    run->phase = MEASURING;
    if (run->mode == FANOUT) {
        run->fr->setup_s = (double)(uv_hrtime() - run->setup_start_ns) / 1e9;
        run->start_ns = uv_hrtime();
        fanout_next(run);
        return;
    }
    struct bench_connections_result *r = run->cr;
    r->open = run->opened;
    r->open_s = (double)(uv_hrtime() - run->open_start_ns) / 1e9;
    if (r->pid > 0)
        r->rss_after = read_vmrss(r->pid);
    run->start_ns = uv_hrtime();
    uv_timer_start(&run->deadline, on_duration, (uint64_t)(run->co->duration_s * 1000),
                   0);
    if (run->co->rate > 0) {
        double period = 1000.0 / run->co->rate;
        uv_timer_start(&run->pace, on_pace, 0, period < 1 ? 1 : (uint64_t)period);
    }
}

/* ---- replies and events ------------------------------------------------------------ */

static void on_setup_reply(struct sess *s, const struct bench_message *m)
{
    struct run *run = s->run;
    if (!m->ok) {
        if (strcmp(m->code, "rate_limited") == 0) {
            s->retry_at = uv_now(&run->loop) + retry_wait(m);
            run->retries++;
            return;
        }
        finish(run, CH_EIO, "%s %zu (%s) on %s:%d refused: %s",
               s->registration ? "register" : "auth", s->index, run->users[s->user].name,
               s->gw->host, s->gw->port, m->code);
        return;
    }
    s->done_setup = 1;
    if (s->registration) {
        if (m->result_token[0] == 0) {
            finish(run, CH_EIO, "register answered without a token");
            return;
        }
        run->users[s->user].token = strdup(m->result_token);
        if (run->users[s->user].token == NULL) {
            finish(run, CH_ENOMEM, "out of memory");
            return;
        }
        run->regs_done++;
        progress_made(run);
        bench_ws_close(s->ws); /* on_close frees the window slot */
        return;
    }
    if (run->phase == OPENING)
        run->opens_live--;
    session_ready(run);
}

static void on_creator_reply(struct sess *s, const struct bench_message *m)
{
    struct run *run = s->run;
    for (size_t i = 0; i < run->n_groups; i++) {
        struct group *g = &run->groups[i];
        if (g->creator != s->index)
            continue;
        if (g->create_id != 0 && m->id == g->create_id) {
            g->create_id = 0;
            if (!m->ok && strcmp(m->code, "rate_limited") == 0) {
                s->retry_at = uv_now(&run->loop) + retry_wait(m);
                run->retries++;
                return;
            }
            if (!m->ok || m->result_conv == 0) {
                finish(run, CH_EIO, "create refused: %s", m->ok ? "no conv" : m->code);
                return;
            }
            g->conv = m->result_conv;
        } else if (m->id >= ADD_ID_BASE && (size_t)(m->id - ADD_ID_BASE) < g->n_members) {
            g->in_flight--;
            if (!m->ok && strcmp(m->code, "rate_limited") == 0) {
                finish(run, CH_EIO,
                       "add_member was rate_limited: raise "
                       "gateway.rate.send_per_s / send_burst");
                return;
            }
            if (!m->ok) {
                finish(run, CH_EIO, "add_member %s refused: %s",
                       run->users[group_member(g, (size_t)(m->id - ADD_ID_BASE))].name,
                       m->code);
                return;
            }
            g->adds_done++;
        } else {
            continue;
        }
        progress_made(run);
        if (g->adds_done == g->n_members) {
            run->groups_done++;
            maybe_created(run);
        } else {
            send_adds(run, g);
        }
        return;
    }
}

static void on_reply(struct sess *s, const struct bench_message *m, uint64_t recv_ns)
{
    struct run *run = s->run;
    if (!m->has_id) {
        if (run->phase == MEASURING)
            count_error(run, m->ok ? "reply_without_id" : m->code);
        else
            finish(run, CH_EIO, "a reply without id during setup (%s)",
                   m->ok ? "ok" : m->code);
        return;
    }
    if (m->id == s->setup_id && !s->done_setup) {
        on_setup_reply(s, m);
        return;
    }
    if (run->phase == CREATING) {
        on_creator_reply(s, m);
        return;
    }
    if (run->phase != MEASURING || s->send_id == 0 || m->id != s->send_id)
        return;
    uint64_t start = s->write_ns ? s->write_ns : recv_ns;
    s->send_id = 0;
    struct bench_stats *ack = run->mode == FANOUT ? &run->fr->ack : &run->cr->ack;
    if (!m->ok) {
        count_error(run, m->code);
        if (run->mode == FANOUT) {
            uv_timer_stop(&run->deadline);
            fanout_next(run); /* the message failed: nobody will get it */
        }
        return;
    }
    if (bench_stats_record(ack, recv_ns > start ? recv_ns - start : 0) != 0) {
        finish(run, CH_ENOMEM, "out of memory");
        return;
    }
    if (run->mode == FANOUT) {
        run->fan_acked = 1;
        fanout_check(run);
    } else {
        run->cr->acked++;
    }
}

static void on_event(struct sess *s, const struct bench_message *m, uint64_t recv_ns)
{
    struct run *run = s->run;
    if (run->phase != MEASURING || strcmp(m->event, "message") != 0)
        return;
    if (run->mode == FANOUT) {
        fanout_event(run, s, m, recv_ns);
        return;
    }
    /* our sends carry client_msg_id c<session>-<n>: count other sessions' ones */
    if (m->client_msg_id[0] == 'c') {
        char *end;
        unsigned long long from = strtoull(m->client_msg_id + 1, &end, 10);
        if (*end == '-' && from != s->index)
            run->cr->delivered++;
    }
}

/* ---- connection callbacks ---------------------------------------------------------- */

static void on_open(struct bench_ws *ws, void *data)
{
    (void)ws;
    struct sess *s = data;
    if (s->run->phase == DONE)
        return;
    send_setup(s);
}

static void on_written(struct bench_ws *ws, void *data, uint64_t tag, uint64_t write_ns)
{
    (void)ws;
    struct sess *s = data;
    if (tag == 0 || s->run->phase != MEASURING || (int64_t)tag != s->send_id)
        return;
    s->write_ns = write_ns;
    if (s->run->mode == FANOUT)
        s->run->fan_write_ns = write_ns;
}

static void on_message(struct bench_ws *ws, void *data, const char *text, size_t len,
                       uint64_t recv_ns)
{
    (void)ws;
    struct sess *s = data;
    struct run *run = s->run;
    if (run->phase == DONE)
        return;
    struct bench_message m;
    char why[160];
    if (bench_message_decode(text, len, &m, why, sizeof why) != 0) {
        if (run->phase == MEASURING)
            count_error(run, "malformed");
        else
            finish(run, CH_EIO, "a malformed message from the gateway: %s", why);
        return;
    }
    switch (m.type) {
    case BENCH_MSG_REPLY:
        on_reply(s, &m, recv_ns);
        break;
    case BENCH_MSG_EVENT:
        on_event(s, &m, recv_ns);
        break;
    case BENCH_MSG_GOODBYE:
        finish(run, CH_EIO, "session %zu: the gateway said goodbye (%s)", s->index,
               m.code[0] ? m.code : "no code");
        break;
    default:
        break;
    }
}

static void on_close(struct bench_ws *ws, void *data, const char *why)
{
    (void)ws;
    struct sess *s = data;
    struct run *run = s->run;
    s->ws = NULL;
    if (s->registration && s->done_setup) {
        run->regs_live--;
        if (run->phase == REGISTERING && run->regs_done == run->n_users) {
            run->phase = EARLY;
            progress_made(run);
        }
        return;
    }
    finish(run, CH_EIO, "%s %zu to %s:%d: %s (%zu sessions were open)",
           s->registration ? "registration" : "session", s->index, s->gw->host,
           s->gw->port, why, run->opened);
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
    const char *name = run->mode == FANOUT ? "fanout" : "connections";
    if (run->phase != MEASURING) {
        bench_progress(1, "%s: %s (%zu/%zu registered, %zu/%zu groups, %zu/%zu open)",
                       name, phase_names[run->phase], run->regs_done, run->n_users,
                       run->groups_done, run->n_groups, run->opened, run->n_sessions);
        return;
    }
    double s = (double)(uv_hrtime() - run->start_ns) / 1e9;
    if (run->mode == FANOUT)
        bench_progress(1,
                       "fanout: message %" PRIu64 "/%zu, %zu/%zu members have it, "
                       "errors %zu",
                       run->repeat, run->fo->repeats, run->fan_received, run->fo->members,
                       run->fr->errors);
    else
        bench_progress(1,
                       "connections: %zu open, %.0f/%.0f s, %zu acked, %zu delivered "
                       "(%.0f/s), errors %zu",
                       run->opened, s, run->co->duration_s, run->cr->acked,
                       run->cr->delivered, s > 0 ? run->cr->delivered / s : 0,
                       run->cr->errors);
}

static void on_sigint(uv_signal_t *sig, int signum)
{
    (void)signum;
    struct run *run = sig->data;
    if (run->mode == FANOUT)
        run->fr->interrupted = 1;
    else
        run->cr->interrupted = 1;
    finish(run, 0, NULL);
}

/* ---- the run ----------------------------------------------------------------------- */

static void run_free(struct run *run)
{
    if (run->users != NULL)
        for (size_t i = 0; i < run->n_users; i++)
            free(run->users[i].token);
    free(run->users);
    free(run->regs);
    free(run->sessions);
    free(run->groups);
    free(run->frame);
    free(run->body);
    bench_stats_free(&run->per_member);
    free(run);
}

/* Allocates users, registrations, sessions (session i logs in as user i % users)
 * and groups; session i < n_groups is group i's creator. */
static int plan(struct run *run, size_t users, size_t sessions, size_t groups)
{
    run->n_users = users;
    run->n_sessions = sessions;
    run->n_groups = groups;
    run->n_early = groups;
    run->users = calloc(users, sizeof *run->users);
    run->regs = calloc(users, sizeof *run->regs);
    run->sessions = calloc(sessions, sizeof *run->sessions);
    run->groups = calloc(groups, sizeof *run->groups);
    run->frame_cap = CREATE_BATCH * 52 + run->size + 512;
    run->frame = malloc(run->frame_cap);
    run->body = malloc(run->size + 1);
    if (run->users == NULL || run->regs == NULL || run->sessions == NULL ||
        run->groups == NULL || run->frame == NULL || run->body == NULL)
        return CH_ENOMEM;
    memset(run->body, 'x', run->size);
    run->body[run->size] = 0;
    bench_random_tag(run->tag, sizeof run->tag);
    for (size_t i = 0; i < users; i++) {
        snprintf(run->users[i].name, sizeof run->users[i].name, "bench-%c-%s-%zu",
                 run->mode == FANOUT ? 'f' : 'c', run->tag, i);
        struct sess *s = &run->regs[i];
        s->run = run;
        s->index = i;
        s->user = i;
        s->registration = 1;
        s->gw = &run->gateways[i % run->n_gateways];
    }
    for (size_t i = 0; i < sessions; i++) {
        struct sess *s = &run->sessions[i];
        s->run = run;
        s->index = i;
        s->user = i % users;
        s->gw = &run->gateways[i % run->n_gateways];
    }
    return 0;
}

static int run_loop(struct run *run)
{
    uv_loop_init(&run->loop);
    uv_timer_t *timers[] = {&run->pump, &run->pace, &run->deadline, &run->progress};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(&run->loop, timers[i]);
        timers[i]->data = run;
    }
    uv_signal_init(&run->loop, &run->sigint);
    run->sigint.data = run;
    char err[256];
    int rv = bench_ws_client_new(&run->loop, &run->client, err, sizeof err);
    if (rv != 0) {
        snprintf(failure_buf(run), 256, "%s", err);
        for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
            bench_uv_close((uv_handle_t *)timers[i]);
        bench_uv_close((uv_handle_t *)&run->sigint);
        uv_run(&run->loop, UV_RUN_DEFAULT);
        uv_loop_close(&run->loop);
        return rv;
    }
    run->phase = REGISTERING;
    run->setup_start_ns = uv_hrtime();
    progress_made(run);
    uv_timer_start(&run->pump, on_pump, 0, PUMP_MS);
    if (isatty(STDERR_FILENO))
        uv_timer_start(&run->progress, on_progress, 100, 200);
    uv_signal_start(&run->sigint, on_sigint, SIGINT);
    uv_run(&run->loop, UV_RUN_DEFAULT);
    bench_ws_client_free(run->client);
    uv_run(&run->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&run->loop) != 0)
        fprintf(stderr, "chorus-bench: warning: handles left on the loop\n");
    bench_progress_done();
    return run->rv;
}

static int is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0;
}

int bench_fanout_run(const struct bench_fanout_options *o, struct bench_fanout_result *r)
{
    if (o->members < 1 || o->repeats < 1 || o->n_gateways < 1) {
        snprintf(r->failure, sizeof r->failure, "need 1+ members, 1+ repeats, a gateway");
        return CH_EINVAL;
    }
    struct run *run = calloc(1, sizeof *run);
    if (run == NULL) {
        snprintf(r->failure, sizeof r->failure, "out of memory");
        return CH_ENOMEM;
    }
    run->mode = FANOUT;
    run->fo = o;
    run->fr = r;
    run->gateways = o->gateways;
    run->n_gateways = o->n_gateways;
    run->size = o->size;
    run->loopback = 1;
    for (size_t i = 0; i < o->n_gateways; i++)
        run->loopback &= is_loopback(o->gateways[i].host);
    bench_stats_init(&run->per_member);
    size_t n = o->members + 1; /* user 0 sends; users 1..members receive */
    size_t limit = bench_raise_nofile(n + 1024);
    if (limit < n + 64) {
        snprintf(r->failure, sizeof r->failure,
                 "%zu connections need more file descriptors than RLIMIT_NOFILE allows "
                 "(%zu; raising the hard limit needs CAP_SYS_RESOURCE)",
                 n, limit);
        run_free(run);
        return CH_EINVAL;
    }
    if (plan(run, n, n, 1) != 0 ||
        bench_stats_reserve(&run->per_member, o->members) != 0) {
        snprintf(r->failure, sizeof r->failure, "out of memory");
        run_free(run);
        return CH_ENOMEM;
    }
    run->groups[0] =
        (struct group){.creator = 0, .first = 1, .stride = 1, .n_members = o->members};
    int rv = run_loop(run);
    r->conv = run->groups[0].conv;
    run_free(run);
    return rv;
}

int bench_connections_run(const struct bench_connections_options *o,
                          struct bench_connections_result *r)
{
    if (o->connections < 2) {
        snprintf(r->failure, sizeof r->failure, "need 2+ connections");
        return CH_EINVAL;
    }
    struct run *run = calloc(1, sizeof *run);
    if (run == NULL) {
        snprintf(r->failure, sizeof r->failure, "out of memory");
        return CH_ENOMEM;
    }
    run->mode = CONNECTIONS;
    run->co = o;
    run->cr = r;
    run->gateways = &o->gateway;
    run->n_gateways = 1;
    run->size = o->size;
    run->loopback = is_loopback(o->gateway.host);
    bench_stats_init(&run->per_member);
    size_t limit = bench_raise_nofile(o->connections + 1024);
    if (limit < o->connections + 64) {
        snprintf(r->failure, sizeof r->failure,
                 "%zu connections need more file descriptors than RLIMIT_NOFILE allows "
                 "(%zu; raising the hard limit needs CAP_SYS_RESOURCE)",
                 o->connections, limit);
        run_free(run);
        return CH_EINVAL;
    }
    /* a few users with many sessions each: logins cost an scrypt, auths do not */
    size_t users = (o->connections + 199) / 200;
    users = users < 2 ? 2 : users > 100 ? 100 : users;
    size_t senders = users / 2 < 4 ? users / 2 : 4;
    r->users = users;
    r->senders = senders;
    r->pid = o->pid > 0 ? o->pid : find_pid_by_port(o->gateway.port);
    if (plan(run, users, o->connections, senders) != 0) {
        snprintf(r->failure, sizeof r->failure, "out of memory");
        run_free(run);
        return CH_ENOMEM;
    }
    /* group s: created by user s, members the users u >= senders with u % senders
     * == s, so every session but the senders' own belongs to exactly one group */
    for (size_t s = 0; s < senders; s++) {
        struct group *g = &run->groups[s];
        g->creator = s;
        g->first = senders + s;
        g->stride = senders;
        g->n_members = users > g->first ? (users - g->first + senders - 1) / senders : 0;
    }
    int rv = run_loop(run);
    if (run->start_ns != 0 && run->end_ns > run->start_ns)
        r->elapsed_s = (double)(run->end_ns - run->start_ns) / 1e9;
    if (r->open == 0)
        r->open = run->opened;
    run_free(run);
    return rv;
}
