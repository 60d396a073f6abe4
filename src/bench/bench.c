/*
 * chorus-bench: measures a chorus cluster against the physical floor of the machine
 * it runs on (issue 6).  This file is the command line: options, the human table,
 * --json, --plot (gnuplot) and the progress line.  The modes run in floor_uv.c,
 * latency_uv.c, throughput_uv.c and crowd_uv.c (fanout, connections).
 *
 *   chorus-bench floor --data DIR [--samples N] [--json] [--plot FILE.png]
 *   chorus-bench latency --gateway HOST:PORT [--gateway2 HOST:PORT] [--count N]
 *                [--rate R] [--size BYTES] [--kind direct|group] [--timeout-ms MS]
 *                [--floor-data DIR [--floor-samples N]] [--json] [--plot FILE.png]
 *   chorus-bench throughput --gateway HOST:PORT [--gateway HOST:PORT ...]
 *                [--connections N] [--convs M] [--window W] [--duration S]
 *                [--size BYTES] [--json] [--plot FILE.png]
 *   chorus-bench fanout --gateway HOST:PORT [--gateway HOST:PORT ...] --members G
 *                [--repeats K] [--size BYTES] [--timeout-ms MS] [--json]
 *                [--plot FILE.png]
 *   chorus-bench connections --gateway HOST:PORT --connections N [--duration S]
 *                [--rate R] [--size BYTES] [--pid PID] [--json] [--plot FILE.png]
 *
 * Exit status: 0 the run completed without errors, 1 it failed or counted errors,
 * 2 usage.  Latencies in --json are microseconds (floats), percentiles by nearest
 * rank over every sample (stats.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "../common/error.h"
#include "bench.h"
#include "stats.h"
#include "ws_client.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: chorus-bench MODE [options]\n"
    "\n"
    "modes:\n"
    "  floor      the machine's floor: fsync latency of a disk and loopback TCP RTT\n"
    "    --data DIR           a directory on the disk to measure (a temp file, removed)\n"
    "    --samples N          samples of each (default 1000)\n"
    "    --fsync-writers W    W writers sync files of their own at once (default 1;\n"
    "                         3 = what three replicas sharing this disk pay)\n"
    "  latency    sequential sends: send->ack and send->delivered to another member\n"
    "    --gateway HOST:PORT  the sender's gateway (required)\n"
    "    --gateway2 HOST:PORT the receiver's gateway (default: the sender's)\n"
    "    --count N            messages (default 1000)\n"
    "    --rate R             messages per second at most, 0 = back to back (default "
    "40;\n"
    "                         the gateway's default send limit is 50/s per user)\n"
    "    --size BYTES         message body size (default 200)\n"
    "    --kind direct|group  the conversation (default direct)\n"
    "    --timeout-ms MS      per message: no ack or delivery by then is an error "
    "(10000)\n"
    "    --floor-data DIR     also measure the floor on DIR's disk and report\n"
    "                         floor_ratio = ack p99 / (fsync p99 + 2 * rtt p99)\n"
    "    --floor-samples N    floor samples (default 1000)\n"
    "    --fsync-writers W    the floor's fsync with W concurrent writers (default 1)\n"
    "  throughput N connections (one user each) over M group conversations, a window\n"
    "             of sends in flight per connection: acked/s, delivered/s, ack p99\n"
    "    --gateway HOST:PORT  a gateway (required; repeat it to spread connections)\n"
    "    --connections N      connections (default 64)\n"
    "    --convs M            group conversations (default 64)\n"
    "    --window W           sends in flight per connection (default 4)\n"
    "    --duration S         seconds of measurement after setup (default 10)\n"
    "    --size BYTES         message body size (default 200)\n"
    "                         (needs a config with raised gateway.rate.send_per_s /\n"
    "                         send_burst / login_per_s / login_burst: the defaults\n"
    "                         of 50/s per user and 5 logins/s per address throttle it)\n"
    "  fanout     one group of G members, each connected; one message at a time:\n"
    "             time from the send's write until the LAST member has it\n"
    "    --gateway HOST:PORT  a gateway (required; repeat it to spread the members)\n"
    "    --members G          receiving members, a user and a connection each "
    "(required)\n"
    "    --repeats K          messages (default 10)\n"
    "    --size BYTES         message body size (default 200)\n"
    "    --timeout-ms MS      per message: not every member has it by then is an error\n"
    "                         (default 30000)\n"
    "  connections N sessions held open on ONE gateway: opening time, the gateway's\n"
    "             memory per connection, then traffic over them: delivered/s, ack p99\n"
    "    --gateway HOST:PORT  the gateway (required)\n"
    "    --connections N      sessions (required; a few users, many sessions each)\n"
    "    --duration S         seconds of traffic once they are open (default 10)\n"
    "    --rate R             messages per second over all senders (default 20)\n"
    "    --size BYTES         message body size (default 200)\n"
    "    --pid PID            the gateway's chorusd (default: found by the port)\n"
    "                         (both raise RLIMIT_NOFILE; beyond the hard limit run as\n"
    "                         root; the gateway's chorusd needs a high limit too)\n"
    "\n"
    "common options:\n"
    "  --json                 one JSON object on stdout (latencies in microseconds)\n"
    "  --plot FILE.png        a latency distribution plot (needs gnuplot)\n"
    "  --no-batch             one message per WebSocket frame (default: batched frames,\n"
    "                         /ws?batch=1, as the web client does)\n"
    "  -h, --help             this text\n"
    "\n"
    "exit status: 0 ok, 1 the run failed or counted errors, 2 usage\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "chorus-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(chorus-bench --help for usage)\n");
    va_end(ap);
    return EXIT_USAGE;
}

/* ---- progress line ----------------------------------------------------------------- */

static int progress_shown;
static uint64_t progress_last_ns;

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_progress(int force, const char *fmt, ...)
{
    static int tty = -1;
    if (tty < 0)
        tty = isatty(STDERR_FILENO);
    if (!tty)
        return;
    uint64_t now = monotonic_ns();
    if (!force && progress_shown && now - progress_last_ns < 100000000u)
        return;
    progress_last_ns = now;
    char line[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    progress_shown = 1;
}

void bench_progress_done(void)
{
    if (!progress_shown)
        return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
    progress_shown = 0;
}

/* ---- options ------------------------------------------------------------------------
 */

struct options {
    const char *mode;
    const char *data;     /* floor --data, latency --floor-data */
    size_t samples;       /* floor samples */
    size_t fsync_writers; /* floor writers syncing at once (--fsync-writers) */
    int json;
    const char *plot;
    struct bench_latency_options lat;
    struct bench_throughput_options thr;
    struct bench_fanout_options fan;
    struct bench_connections_options con;
};

static int parse_size(const char *opt, const char *s, size_t min, size_t max, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != 0 || errno != 0 || v < min || v > max)
        return usage_error("%s: expected an integer in %zu..%zu, got \"%s\"", opt, min,
                           max, s);
    *out = (size_t)v;
    return 0;
}

static int parse_rate(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != 0 || errno != 0 || !(v >= 0) || v > 1e6)
        return usage_error(
            "%s: expected a rate in messages per second (0..1e6), got \"%s\"", opt, s);
    *out = v;
    return 0;
}

static int parse_hostport(const char *opt, const char *s, char *host, size_t hostlen,
                          int *port)
{
    const char *colon = strrchr(s, ':');
    size_t port_v;
    if (colon == NULL || colon == s || (size_t)(colon - s) >= hostlen)
        return usage_error("%s: expected HOST:PORT, got \"%s\"", opt, s);
    if (parse_size(opt, colon + 1, 1, 65535, &port_v) != 0)
        return EXIT_USAGE;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    *port = (int)port_v;
    return 0;
}

/* The options of fanout and connections (o already holds the defaults). */
static int parse_crowd_options(int argc, char **argv, struct options *o, int fanout)
{
    int have_members = 0, have_conns = 0, have_gw = 0;
    for (int i = 2; i < argc; i++) {
        char name[64];
        const char *arg = argv[i], *val = NULL;
        const char *eq = strchr(arg, '=');
        if (strncmp(arg, "--", 2) == 0 && eq != NULL &&
            (size_t)(eq - arg) < sizeof name) {
            memcpy(name, arg, (size_t)(eq - arg));
            name[eq - arg] = 0;
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
        }
        if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (strcmp(name, "--json") == 0) {
            if (val != NULL)
                return usage_error("--json takes no value");
            o->json = 1;
            continue;
        }
        static const char *const fanout_opts[] = {
            "--gateway",    "--members", "--repeats", "--size",
            "--timeout-ms", "--plot",    NULL};
        static const char *const connections_opts[] = {
            "--gateway", "--connections", "--duration", "--rate",
            "--size",    "--pid",         "--plot",     NULL};
        const char *const *known_opts = fanout ? fanout_opts : connections_opts;
        int known = 0;
        for (size_t k = 0; known_opts[k] != NULL; k++)
            known |= strcmp(name, known_opts[k]) == 0;
        if (!known)
            return usage_error("%s is not an option of the %s mode", name, o->mode);
        if (val == NULL) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", name);
            val = argv[++i];
        }
        int rv = 0;
        size_t v;
        if (strcmp(name, "--plot") == 0) {
            o->plot = val;
        } else if (strcmp(name, "--gateway") == 0 && fanout) {
            if (o->fan.n_gateways == BENCH_MAX_GATEWAYS)
                return usage_error("at most %d gateways", BENCH_MAX_GATEWAYS);
            struct bench_gateway *g = &o->fan.gateways[o->fan.n_gateways++];
            rv = parse_hostport(name, val, g->host, sizeof g->host, &g->port);
            have_gw = 1;
        } else if (strcmp(name, "--gateway") == 0) {
            if (have_gw)
                return usage_error("connections: one --gateway only");
            rv = parse_hostport(name, val, o->con.gateway.host,
                                sizeof o->con.gateway.host, &o->con.gateway.port);
            have_gw = 1;
        } else if (strcmp(name, "--members") == 0) {
            rv = parse_size(name, val, 1, 100000, &o->fan.members);
            have_members = 1;
        } else if (strcmp(name, "--repeats") == 0) {
            rv = parse_size(name, val, 1, 1000000, &o->fan.repeats);
        } else if (strcmp(name, "--size") == 0) {
            rv = parse_size(name, val, 1, 65536, fanout ? &o->fan.size : &o->con.size);
        } else if (strcmp(name, "--timeout-ms") == 0) {
            rv = parse_size(name, val, 1, 3600000, &v);
            o->fan.timeout_ms = (unsigned)v;
        } else if (strcmp(name, "--connections") == 0) {
            rv = parse_size(name, val, 2, 1000000, &o->con.connections);
            have_conns = 1;
        } else if (strcmp(name, "--duration") == 0) {
            rv = parse_size(name, val, 1, 86400, &v);
            o->con.duration_s = (double)v;
        } else if (strcmp(name, "--rate") == 0) {
            rv = parse_rate(name, val, &o->con.rate);
        } else if (strcmp(name, "--pid") == 0) {
            rv = parse_size(name, val, 1, 1u << 30, &v);
            o->con.pid = (long)v;
        }
        if (rv != 0)
            return EXIT_USAGE;
    }
    if (!have_gw)
        return usage_error("%s: --gateway HOST:PORT is required", o->mode);
    if (fanout && !have_members)
        return usage_error("fanout: --members G is required");
    if (!fanout && !have_conns)
        return usage_error("connections: --connections N is required");
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    memset(o, 0, sizeof *o);
    o->samples = 1000;
    o->fsync_writers = 1;
    o->lat.count = 1000;
    o->lat.rate = 40;
    o->lat.size = 200;
    o->lat.timeout_ms = 10000;
    o->thr.connections = 64;
    o->thr.convs = 64;
    o->thr.window = 4;
    o->thr.duration_s = 10;
    o->thr.size = 200;
    o->fan.repeats = 10;
    o->fan.size = 200;
    o->fan.timeout_ms = 30000;
    o->con.duration_s = 10;
    o->con.rate = 20;
    o->con.size = 200;
    int have_gw = 0, have_gw2 = 0;
    if (argc < 2)
        return usage_error(
            "a mode is required: floor, latency, throughput, fanout or connections");
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage_text, stdout);
        exit(0);
    }
    o->mode = argv[1];
    int floor_mode = strcmp(o->mode, "floor") == 0;
    int latency_mode = strcmp(o->mode, "latency") == 0;
    int throughput_mode = strcmp(o->mode, "throughput") == 0;
    int fanout_mode = strcmp(o->mode, "fanout") == 0;
    int connections_mode = strcmp(o->mode, "connections") == 0;
    if (!floor_mode && !latency_mode && !throughput_mode && !fanout_mode &&
        !connections_mode)
        return usage_error(
            "unknown mode \"%s\" (floor, latency, throughput, fanout or connections)",
            o->mode);
    if (fanout_mode || connections_mode)
        return parse_crowd_options(argc, argv, o, fanout_mode);
    for (int i = 2; i < argc; i++) {
        char name[64];
        const char *arg = argv[i], *val = NULL;
        const char *eq = strchr(arg, '=');
        if (strncmp(arg, "--", 2) == 0 && eq != NULL &&
            (size_t)(eq - arg) < sizeof name) {
            memcpy(name, arg, (size_t)(eq - arg));
            name[eq - arg] = 0;
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
        }
        if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (strcmp(name, "--json") == 0) {
            if (val != NULL)
                return usage_error("--json takes no value");
            o->json = 1;
            continue;
        }
        static const char *const with_value[] = {"--data",          "--samples",
                                                 "--plot",          "--gateway",
                                                 "--gateway2",      "--count",
                                                 "--rate",          "--size",
                                                 "--kind",          "--timeout-ms",
                                                 "--floor-data",    "--floor-samples",
                                                 "--fsync-writers", NULL};
        static const char *const throughput_with_value[] = {
            "--connections", "--convs", "--window", "--duration", NULL};
        int known = 0;
        for (size_t k = 0; with_value[k] != NULL; k++)
            known |= strcmp(name, with_value[k]) == 0;
        for (size_t k = 0; throughput_with_value[k] != NULL; k++)
            known |= strcmp(name, throughput_with_value[k]) == 0;
        if (!known)
            return usage_error("unknown option \"%s\"", arg);
        if (val == NULL) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", name);
            val = argv[++i];
        }
        int floor_only = strcmp(name, "--data") == 0 || strcmp(name, "--samples") == 0;
        int common = strcmp(name, "--plot") == 0;
        if (floor_only && !floor_mode)
            return usage_error(
                "%s is an option of the floor mode (latency: --floor-data, "
                "--floor-samples)",
                name);
        int writers = strcmp(name, "--fsync-writers") == 0; /* floor and latency */
        if (writers && throughput_mode)
            return usage_error(
                "--fsync-writers is an option of the floor and latency modes");
        common |= writers;
        int shared = strcmp(name, "--gateway") == 0 || strcmp(name, "--size") == 0;
        int throughput_only =
            strcmp(name, "--connections") == 0 || strcmp(name, "--convs") == 0 ||
            strcmp(name, "--window") == 0 || strcmp(name, "--duration") == 0;
        if (throughput_only && !throughput_mode)
            return usage_error("%s is an option of the throughput mode", name);
        if (!floor_only && !common && !shared && !throughput_only && !latency_mode)
            return usage_error("%s is an option of the latency mode", name);
        if (shared && floor_mode)
            return usage_error("%s is not an option of the floor mode", name);
        int rv = 0;
        if (throughput_mode && !common) {
            if (strcmp(name, "--gateway") == 0) {
                if (o->thr.n_gateways == BENCH_MAX_GATEWAYS)
                    return usage_error("at most %d gateways", BENCH_MAX_GATEWAYS);
                struct bench_gateway *g = &o->thr.gateways[o->thr.n_gateways++];
                rv = parse_hostport(name, val, g->host, sizeof g->host, &g->port);
            } else if (strcmp(name, "--size") == 0) {
                rv = parse_size(name, val, 1, 65536, &o->thr.size);
            } else if (strcmp(name, "--connections") == 0) {
                rv = parse_size(name, val, 2, 100000, &o->thr.connections);
            } else if (strcmp(name, "--convs") == 0) {
                rv = parse_size(name, val, 1, 100000, &o->thr.convs);
            } else if (strcmp(name, "--window") == 0) {
                rv = parse_size(name, val, 1, 1000, &o->thr.window);
            } else if (strcmp(name, "--duration") == 0) {
                size_t sec;
                rv = parse_size(name, val, 1, 86400, &sec);
                o->thr.duration_s = (double)sec;
            }
            if (rv != 0)
                return EXIT_USAGE;
            continue;
        }
        if (strcmp(name, "--data") == 0 || strcmp(name, "--floor-data") == 0)
            o->data = val;
        else if (strcmp(name, "--samples") == 0 || strcmp(name, "--floor-samples") == 0)
            rv = parse_size(name, val, 1, 10000000, &o->samples);
        else if (writers)
            rv = parse_size(name, val, 1, 64, &o->fsync_writers);
        else if (strcmp(name, "--plot") == 0)
            o->plot = val;
        else if (strcmp(name, "--gateway") == 0) {
            rv = parse_hostport(name, val, o->lat.host1, sizeof o->lat.host1,
                                &o->lat.port1);
            have_gw = 1;
        } else if (strcmp(name, "--gateway2") == 0) {
            rv = parse_hostport(name, val, o->lat.host2, sizeof o->lat.host2,
                                &o->lat.port2);
            have_gw2 = 1;
        } else if (strcmp(name, "--count") == 0)
            rv = parse_size(name, val, 1, 10000000, &o->lat.count);
        else if (strcmp(name, "--rate") == 0)
            rv = parse_rate(name, val, &o->lat.rate);
        else if (strcmp(name, "--size") == 0)
            rv = parse_size(name, val, 1, 65536, &o->lat.size);
        else if (strcmp(name, "--timeout-ms") == 0) {
            size_t ms;
            rv = parse_size(name, val, 1, 3600000, &ms);
            o->lat.timeout_ms = (unsigned)ms;
        } else if (strcmp(name, "--kind") == 0) {
            if (strcmp(val, "direct") == 0)
                o->lat.group = 0;
            else if (strcmp(val, "group") == 0)
                o->lat.group = 1;
            else
                rv = usage_error("--kind: expected direct or group, got \"%s\"", val);
        }
        if (rv != 0)
            return EXIT_USAGE;
    }
    if (floor_mode && o->data == NULL)
        return usage_error("floor: --data DIR is required");
    if (latency_mode && !have_gw)
        return usage_error("latency: --gateway HOST:PORT is required");
    if (throughput_mode && o->thr.n_gateways == 0)
        return usage_error("throughput: --gateway HOST:PORT is required");
    if (latency_mode && !have_gw2) {
        memcpy(o->lat.host2, o->lat.host1, sizeof o->lat.host2);
        o->lat.port2 = o->lat.port1;
    }
    if (o->data != NULL && access(o->data, W_OK) != 0)
        return usage_error("%s: not a writable directory (%s)", o->data, strerror(errno));
    return 0;
}

/* ---- output ---------------------------------------------------------------------------
 */

static double us(uint64_t ns)
{
    return (double)ns / 1e3;
}

/* Adds NAME_p50_us, NAME_p99_us, ... to obj (null when there were no samples). */
static void json_put_summary(json_t *obj, const char *name, const struct bench_summary *s)
{
    struct {
        const char *suffix;
        uint64_t v;
    } f[] = {{"p50", s->p50}, {"p90", s->p90}, {"p99", s->p99},  {"p999", s->p999},
             {"min", s->min}, {"max", s->max}, {"mean", s->mean}};
    char key[64];
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        snprintf(key, sizeof key, "%s_%s_us", name, f[i].suffix);
        json_object_set_new(obj, key, s->count ? json_real(us(f[i].v)) : json_null());
    }
    snprintf(key, sizeof key, "%s_samples", name);
    json_object_set_new(obj, key, json_integer((json_int_t)s->count));
}

static void json_print(json_t *obj)
{
    char *text = json_dumps(obj, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    if (text != NULL) {
        puts(text);
        free(text);
    }
    json_decref(obj);
}

static void table_header(void)
{
    printf("%-22s %8s %10s %10s %10s %10s %10s\n", "", "samples", "p50 us", "p99 us",
           "p999 us", "max us", "mean us");
}

static void table_row(const char *name, const struct bench_summary *s)
{
    if (s->count == 0) {
        printf("%-22s %8zu %10s %10s %10s %10s %10s\n", name, s->count, "-", "-", "-",
               "-", "-");
        return;
    }
    printf("%-22s %8zu %10.1f %10.1f %10.1f %10.1f %10.1f\n", name, s->count, us(s->p50),
           us(s->p99), us(s->p999), us(s->max), us(s->mean));
}

/* ack p99 / (fsync p99 + 2 * rtt p99); 0 when a figure is missing. */
static double floor_ratio(const struct bench_summary *ack,
                          const struct bench_summary *fsync,
                          const struct bench_summary *rtt)
{
    double floor = (double)fsync->p99 + 2.0 * (double)rtt->p99;
    if (ack->count == 0 || fsync->count == 0 || rtt->count == 0 || floor <= 0)
        return 0;
    return (double)ack->p99 / floor;
}

/* ---- plot
 * ------------------------------------------------------------------------------ */

static int have_gnuplot(void)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/bin:/bin";
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n < sizeof dir - 16) {
            memcpy(dir, path, n);
            snprintf(dir + n, sizeof dir - n, "/gnuplot");
            if (access(dir, X_OK) == 0)
                return 1;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return 0;
}

/* Writes a gnuplot string literal (single quotes, '' for a quote). */
static void gp_string(FILE *gp, const char *s)
{
    fputc('\'', gp);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', gp);
        if (*s != '\n' && *s != '\r')
            fputc(*s, gp);
    }
    fputc('\'', gp);
}

/*
 * One series as a datablock of (x, latency us) where x = 1 / (1 - p) for the
 * percentile p of each point, so a log x axis spreads the tail: 50% at 2, 99% at
 * 100, 99.9% at 1000.  About 1000 points, evenly spaced in log x.
 */
static void gp_series(FILE *gp, const char *name, struct bench_stats *s)
{
    size_t n;
    const uint64_t *v = bench_stats_sorted(s, &n);
    fprintf(gp, "$%s << EOD\n", name);
    if (n > 0) {
        double decades = log10((double)n);
        size_t last = (size_t)-1;
        for (int j = 0; j <= 1000; j++) {
            double p = 1.0 - pow(10.0, -decades * j / 1000.0); /* 0 .. 1 - 1/n */
            size_t k = (size_t)(p * (double)n);
            if (k >= n)
                k = n - 1;
            if (k == last)
                continue;
            last = k;
            double pk = ((double)k + 0.5) / (double)n;
            fprintf(gp, "%.6g %.3f\n", 1.0 / (1.0 - pk), us(v[k]));
        }
    }
    fprintf(gp, "EOD\n");
}

struct plot_series {
    const char *name;  /* datablock name */
    const char *title; /* legend */
    struct bench_stats *stats;
};

static int plot(const char *file, const char *title, const struct plot_series *series,
                size_t n)
{
    FILE *gp = popen("gnuplot", "w");
    if (gp == NULL) {
        fprintf(stderr, "chorus-bench: --plot: cannot run gnuplot: %s\n",
                strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        gp_series(gp, series[i].name, series[i].stats);
    fprintf(gp, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
                "  set terminal pngcairo size 1000,600 noenhanced\n"
                "} else {\n"
                "  set terminal png size 1000,600 noenhanced\n"
                "}\n");
    fprintf(gp, "set output ");
    gp_string(gp, file);
    fprintf(gp, "\nset title ");
    gp_string(gp, title);
    fprintf(gp, "\nset logscale xy\n"
                "set xrange [1:*]\n"
                "set xlabel 'percentile'\n"
                "set ylabel 'latency (us)'\n"
                /* tic labels are formats to gnuplot: %%%% prints a percent sign */
                "set xtics ('0%%%%' 1, '50%%%%' 2, '90%%%%' 10, '99%%%%' 100, "
                "'99.9%%%%' 1000, '99.99%%%%' 10000, '99.999%%%%' 100000)\n"
                "set grid xtics ytics mytics\n"
                "set key top left\n"
                "plot ");
    for (size_t i = 0; i < n; i++) {
        fprintf(gp, "%s$%s using 1:2 with lines linewidth 2 title ", i ? ", " : "",
                series[i].name);
        gp_string(gp, series[i].title);
    }
    fprintf(gp, "\nset output\n");
    int status = pclose(gp);
    if (status != 0) {
        fprintf(stderr, "chorus-bench: --plot: gnuplot failed (status %d)\n", status);
        return -1;
    }
    return 0;
}

/* ---- modes
 * ------------------------------------------------------------------------------ */

/* error_codes: {"code": count, ...} */
static void json_put_codes(json_t *obj, const struct bench_error_count *codes, size_t n)
{
    json_t *c = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(c, codes[i].code, json_integer((json_int_t)codes[i].count));
    json_object_set_new(obj, "error_codes", c);
}

static void print_errors(size_t errors, const struct bench_error_count *codes, size_t n)
{
    printf("\nerrors: %zu", errors);
    for (size_t i = 0; i < n; i++)
        printf("%s%s %zu", i ? ", " : " (", codes[i].code, codes[i].count);
    printf("%s\n", n ? ")" : "");
}

static int run_floor(const struct options *o)
{
    struct bench_floor_result fr;
    bench_stats_init(&fr.fsync);
    bench_stats_init(&fr.rtt);
    char err[256];
    int rv = bench_floor_run(o->data, o->samples, (unsigned)o->fsync_writers, &fr, err,
                             sizeof err);
    if (rv != 0) {
        fprintf(stderr, "chorus-bench: floor: %s\n", err);
        bench_stats_free(&fr.fsync);
        bench_stats_free(&fr.rtt);
        return EXIT_FAILED;
    }
    struct bench_summary fs, rs;
    bench_stats_summarize(&fr.fsync, &fs);
    bench_stats_summarize(&fr.rtt, &rs);
    if (o->json) {
        json_t *obj = json_object();
        json_object_set_new(obj, "mode", json_string("floor"));
        json_object_set_new(obj, "data", json_string(o->data));
        json_object_set_new(obj, "samples", json_integer((json_int_t)o->samples));
        json_put_summary(obj, "fsync", &fs);
        json_object_set_new(obj, "fsync_writers",
                            json_integer((json_int_t)o->fsync_writers));
        json_put_summary(obj, "rtt", &rs);
        json_print(obj);
    } else {
        printf("floor: %zu samples each; fsync = 4 KiB pwrite + fdatasync in %s,\n"
               "rtt = 64-byte TCP ping-pong on 127.0.0.1 between two event loops\n\n",
               o->samples, o->data);
        table_header();
        char label[40];
        snprintf(label, sizeof label,
                 o->fsync_writers > 1 ? "fsync (%zu writers)" : "fsync",
                 o->fsync_writers);
        table_row(label, &fs);
        table_row("loopback rtt", &rs);
        printf("\nfloor for one replicated write: fsync p99 + 2 x rtt p99 = %.1f us\n",
               us(fs.p99) + 2 * us(rs.p99));
    }
    int code = 0;
    if (o->plot != NULL) {
        struct plot_series s[] = {{"fsync", "fsync (4 KiB + fdatasync)", &fr.fsync},
                                  {"rtt", "loopback TCP round trip", &fr.rtt}};
        if (plot(o->plot, "chorus-bench floor", s, 2) != 0)
            code = EXIT_FAILED;
    }
    bench_stats_free(&fr.fsync);
    bench_stats_free(&fr.rtt);
    return code;
}

static int run_latency(const struct options *o)
{
    struct bench_floor_result fr;
    struct bench_latency_result lr;
    struct bench_summary fs, rs, as, ds;
    memset(&lr, 0, sizeof lr);
    bench_stats_init(&fr.fsync);
    bench_stats_init(&fr.rtt);
    bench_stats_init(&lr.ack);
    bench_stats_init(&lr.delivered);
    int code = 0;
    char err[256];
    if (o->data != NULL &&
        bench_floor_run(o->data, o->samples, (unsigned)o->fsync_writers, &fr, err,
                        sizeof err) != 0) {
        fprintf(stderr, "chorus-bench: floor: %s\n", err);
        code = EXIT_FAILED;
        goto out;
    }
    int rv = bench_latency_run(&o->lat, &lr);
    if (rv != 0) {
        fprintf(stderr, "chorus-bench: latency: %s\n", lr.failure);
        code = EXIT_FAILED;
    } else if (lr.errors > 0 || lr.interrupted) {
        code = EXIT_FAILED;
    }
    bench_stats_summarize(&fr.fsync, &fs);
    bench_stats_summarize(&fr.rtt, &rs);
    bench_stats_summarize(&lr.ack, &as);
    bench_stats_summarize(&lr.delivered, &ds);
    double ratio = floor_ratio(&as, &fs, &rs);
    if (o->json) {
        json_t *obj = json_object();
        json_object_set_new(obj, "mode", json_string("latency"));
        json_object_set_new(obj, "ok", json_boolean(code == 0));
        if (rv != 0)
            json_object_set_new(obj, "failure", json_string(lr.failure));
        json_object_set_new(obj, "gateway",
                            json_sprintf("%s:%d", o->lat.host1, o->lat.port1));
        json_object_set_new(obj, "gateway2",
                            json_sprintf("%s:%d", o->lat.host2, o->lat.port2));
        json_object_set_new(obj, "kind", json_string(o->lat.group ? "group" : "direct"));
        json_object_set_new(obj, "size", json_integer((json_int_t)o->lat.size));
        json_object_set_new(obj, "rate", json_real(o->lat.rate));
        json_object_set_new(obj, "conv", json_integer((json_int_t)lr.conv));
        json_object_set_new(obj, "count", json_integer((json_int_t)lr.sent));
        json_object_set_new(obj, "errors", json_integer((json_int_t)lr.errors));
        json_put_codes(obj, lr.codes, lr.n_codes);
        if (lr.interrupted)
            json_object_set_new(obj, "interrupted", json_true());
        json_put_summary(obj, "ack", &as);
        json_put_summary(obj, "delivered", &ds);
        if (o->data != NULL) {
            json_put_summary(obj, "fsync", &fs);
            json_object_set_new(obj, "fsync_writers",
                                json_integer((json_int_t)o->fsync_writers));
            json_put_summary(obj, "rtt", &rs);
            json_object_set_new(obj, "floor_ratio",
                                ratio > 0 ? json_real(ratio) : json_null());
        }
        json_print(obj);
    } else if (rv == 0 || lr.sent > 0) { /* a failed setup: the reason is on stderr */
        printf("latency: %zu of %zu messages sent, %zu-byte bodies, %s conversation, ",
               lr.sent, o->lat.count, o->lat.size, o->lat.group ? "group" : "direct");
        if (o->lat.rate > 0)
            printf("at most %g/s\n", o->lat.rate);
        else
            printf("back to back\n");
        printf("sender %s on %s:%d, receiver %s on %s:%d\n\n", lr.sender, o->lat.host1,
               o->lat.port1, lr.receiver, o->lat.host2, o->lat.port2);
        table_header();
        table_row("send->ack", &as);
        table_row("send->delivered", &ds);
        if (o->data != NULL) {
            char label[40];
            snprintf(label, sizeof label,
                     o->fsync_writers > 1 ? "floor: fsync (%zu wr.)" : "floor: fsync",
                     o->fsync_writers);
            table_row(label, &fs);
            table_row("floor: loopback rtt", &rs);
        }
        print_errors(lr.errors, lr.codes, lr.n_codes);
        if (lr.interrupted)
            printf("interrupted\n");
        if (o->data != NULL && ratio > 0)
            printf(
                "floor ratio: ack p99 / (fsync p99 + 2 x rtt p99) = %.1f / (%.1f + 2 x "
                "%.1f) = %.2f\n",
                us(as.p99), us(fs.p99), us(rs.p99), ratio);
    }
    if (o->plot != NULL && (as.count > 0 || ds.count > 0)) {
        struct plot_series s[4] = {{"ack", "send->ack", &lr.ack},
                                   {"delivered", "send->delivered", &lr.delivered},
                                   {"fsync", "floor: fsync", &fr.fsync},
                                   {"rtt", "floor: loopback rtt", &fr.rtt}};
        char title[128];
        snprintf(title, sizeof title, "chorus-bench latency: %zu sends of %zu bytes",
                 lr.sent, o->lat.size);
        if (plot(o->plot, title, s, o->data != NULL ? 4 : 2) != 0)
            code = EXIT_FAILED;
    }
out:
    bench_stats_free(&fr.fsync);
    bench_stats_free(&fr.rtt);
    bench_stats_free(&lr.ack);
    bench_stats_free(&lr.delivered);
    return code;
}

static int run_throughput(const struct options *o)
{
    const struct bench_throughput_options *t = &o->thr;
    struct bench_throughput_result tr;
    struct bench_summary as;
    memset(&tr, 0, sizeof tr);
    bench_stats_init(&tr.ack);
    int code = 0;
    int rv = bench_throughput_run(t, &tr);
    if (rv != 0) {
        fprintf(stderr, "chorus-bench: throughput: %s\n", tr.failure);
        code = EXIT_FAILED;
    } else if (tr.errors > 0 || tr.interrupted) {
        code = EXIT_FAILED;
    }
    bench_stats_summarize(&tr.ack, &as);
    double secs = tr.elapsed_s;
    double acked_per_s = secs > 0 ? (double)tr.acked / secs : 0;
    double delivered_per_s = secs > 0 ? (double)tr.delivered / secs : 0;
    static const char rate_warning[] =
        "sends were rate_limited: the figures measure the gateway's per-user limit, "
        "not the cluster; raise gateway.rate.send_per_s and send_burst";
    if (o->json) {
        json_t *obj = json_object();
        json_object_set_new(obj, "mode", json_string("throughput"));
        json_object_set_new(obj, "ok", json_boolean(code == 0));
        if (rv != 0)
            json_object_set_new(obj, "failure", json_string(tr.failure));
        json_t *gws = json_array();
        for (size_t i = 0; i < t->n_gateways; i++)
            json_array_append_new(
                gws, json_sprintf("%s:%d", t->gateways[i].host, t->gateways[i].port));
        json_object_set_new(obj, "gateways", gws);
        json_object_set_new(obj, "connections", json_integer((json_int_t)t->connections));
        json_object_set_new(obj, "convs", json_integer((json_int_t)t->convs));
        json_object_set_new(obj, "memberships", json_integer((json_int_t)tr.memberships));
        json_object_set_new(obj, "window", json_integer((json_int_t)t->window));
        json_object_set_new(obj, "size", json_integer((json_int_t)t->size));
        json_object_set_new(obj, "duration_s", json_real(secs));
        json_object_set_new(obj, "sent", json_integer((json_int_t)tr.sent));
        json_object_set_new(obj, "count", json_integer((json_int_t)tr.acked));
        json_object_set_new(obj, "acked", json_integer((json_int_t)tr.acked));
        json_object_set_new(obj, "delivered", json_integer((json_int_t)tr.delivered));
        json_object_set_new(obj, "unacked", json_integer((json_int_t)tr.unacked));
        json_object_set_new(obj, "acked_per_s", json_real(acked_per_s));
        json_object_set_new(obj, "delivered_per_s", json_real(delivered_per_s));
        json_object_set_new(obj, "errors", json_integer((json_int_t)tr.errors));
        json_put_codes(obj, tr.codes, tr.n_codes);
        json_object_set_new(obj, "rate_limited",
                            json_integer((json_int_t)tr.rate_limited));
        if (tr.rate_limited > 0)
            json_object_set_new(obj, "warning", json_string(rate_warning));
        if (tr.interrupted)
            json_object_set_new(obj, "interrupted", json_true());
        json_put_summary(obj, "ack", &as);
        json_print(obj);
    } else if (rv == 0 || tr.sent > 0) {
        printf("throughput: %zu connections over %zu group conversations (%zu "
               "memberships), window %zu, %zu-byte bodies, %zu gateway%s\n\n",
               t->connections, t->convs, tr.memberships, t->window, t->size,
               t->n_gateways, t->n_gateways == 1 ? "" : "s");
        printf("%.1f s: %zu sent, %zu acked (%.0f/s), %zu delivered (%.0f/s), %zu "
               "unacked at the end\n\n",
               secs, tr.sent, tr.acked, acked_per_s, tr.delivered, delivered_per_s,
               tr.unacked);
        table_header();
        table_row("send->ack under load", &as);
        print_errors(tr.errors, tr.codes, tr.n_codes);
        if (tr.rate_limited > 0)
            printf("WARNING: %zu %s\n", tr.rate_limited, rate_warning);
        if (tr.interrupted)
            printf("interrupted\n");
    }
    if (o->plot != NULL && as.count > 0) {
        struct plot_series s[1] = {{"ack", "send->ack under load", &tr.ack}};
        char title[160];
        snprintf(title, sizeof title,
                 "chorus-bench throughput: %zu connections, %zu convs, window %zu",
                 t->connections, t->convs, t->window);
        if (plot(o->plot, title, s, 1) != 0)
            code = EXIT_FAILED;
    }
    bench_stats_free(&tr.ack);
    return code;
}

static int run_fanout(const struct options *o)
{
    const struct bench_fanout_options *f = &o->fan;
    struct bench_fanout_result fr;
    struct bench_summary fs, ms, as;
    memset(&fr, 0, sizeof fr);
    bench_stats_init(&fr.fanout);
    bench_stats_init(&fr.member_p50);
    bench_stats_init(&fr.ack);
    int code = 0;
    int rv = bench_fanout_run(f, &fr);
    if (rv != 0) {
        fprintf(stderr, "chorus-bench: fanout: %s\n", fr.failure);
        code = EXIT_FAILED;
    } else if (fr.errors > 0 || fr.interrupted) {
        code = EXIT_FAILED;
    }
    bench_stats_summarize(&fr.fanout, &fs);
    bench_stats_summarize(&fr.member_p50, &ms);
    bench_stats_summarize(&fr.ack, &as);
    if (o->json) {
        json_t *obj = json_object();
        json_object_set_new(obj, "mode", json_string("fanout"));
        json_object_set_new(obj, "ok", json_boolean(code == 0));
        if (rv != 0)
            json_object_set_new(obj, "failure", json_string(fr.failure));
        json_t *gws = json_array();
        for (size_t i = 0; i < f->n_gateways; i++)
            json_array_append_new(
                gws, json_sprintf("%s:%d", f->gateways[i].host, f->gateways[i].port));
        json_object_set_new(obj, "gateways", gws);
        json_object_set_new(obj, "members", json_integer((json_int_t)f->members));
        json_object_set_new(obj, "repeats", json_integer((json_int_t)fr.sent));
        json_object_set_new(obj, "completed", json_integer((json_int_t)fr.completed));
        json_object_set_new(obj, "size", json_integer((json_int_t)f->size));
        json_object_set_new(obj, "conv", json_integer((json_int_t)fr.conv));
        json_object_set_new(obj, "setup_s", json_real(fr.setup_s));
        json_object_set_new(obj, "errors", json_integer((json_int_t)fr.errors));
        json_put_codes(obj, fr.codes, fr.n_codes);
        if (fr.interrupted)
            json_object_set_new(obj, "interrupted", json_true());
        json_put_summary(obj, "fanout", &fs);
        json_put_summary(obj, "member_p50", &ms);
        json_put_summary(obj, "ack", &as);
        json_print(obj);
    } else if (rv == 0 || fr.sent > 0) {
        printf("fanout: %zu of %zu messages to a group of %zu members (+ the sender), "
               "%zu-byte bodies, %zu gateway%s; setup %.1f s\n\n",
               fr.sent, f->repeats, f->members, f->size, f->n_gateways,
               f->n_gateways == 1 ? "" : "s", fr.setup_s);
        table_header();
        table_row("send->last member", &fs);
        table_row("send->median member", &ms);
        table_row("send->ack", &as);
        print_errors(fr.errors, fr.codes, fr.n_codes);
        if (fr.interrupted)
            printf("interrupted\n");
    }
    if (o->plot != NULL && (fs.count > 0 || as.count > 0)) {
        struct plot_series s[3] = {{"last", "send->last member", &fr.fanout},
                                   {"median", "send->median member", &fr.member_p50},
                                   {"ack", "send->ack", &fr.ack}};
        char title[160];
        snprintf(title, sizeof title, "chorus-bench fanout: %zu members, %zu messages",
                 f->members, fr.sent);
        if (plot(o->plot, title, s, 3) != 0)
            code = EXIT_FAILED;
    }
    bench_stats_free(&fr.fanout);
    bench_stats_free(&fr.member_p50);
    bench_stats_free(&fr.ack);
    return code;
}

static int run_connections(const struct options *o)
{
    const struct bench_connections_options *c = &o->con;
    struct bench_connections_result cr;
    struct bench_summary as;
    memset(&cr, 0, sizeof cr);
    bench_stats_init(&cr.ack);
    int code = 0;
    int rv = bench_connections_run(c, &cr);
    if (rv != 0) {
        fprintf(stderr, "chorus-bench: connections: %s\n", cr.failure);
        code = EXIT_FAILED;
    } else if (cr.errors > 0 || cr.interrupted) {
        code = EXIT_FAILED;
    }
    bench_stats_summarize(&cr.ack, &as);
    double secs = cr.elapsed_s;
    double delivered_per_s = secs > 0 ? (double)cr.delivered / secs : 0;
    int have_mem = cr.pid > 0 && cr.rss_before > 0 && cr.rss_after > 0 && cr.open > 0;
    double mem_per_conn =
        have_mem ? ((double)cr.rss_after - (double)cr.rss_before) / (double)cr.open : 0;
    static const char no_pid[] =
        "the gateway's process was not found or not readable (give --pid): no memory "
        "figure";
    if (o->json) {
        json_t *obj = json_object();
        json_object_set_new(obj, "mode", json_string("connections"));
        json_object_set_new(obj, "ok", json_boolean(code == 0));
        if (rv != 0)
            json_object_set_new(obj, "failure", json_string(cr.failure));
        json_object_set_new(obj, "gateway",
                            json_sprintf("%s:%d", c->gateway.host, c->gateway.port));
        json_object_set_new(obj, "connections", json_integer((json_int_t)c->connections));
        json_object_set_new(obj, "connections_open", json_integer((json_int_t)cr.open));
        json_object_set_new(obj, "users", json_integer((json_int_t)cr.users));
        json_object_set_new(obj, "senders", json_integer((json_int_t)cr.senders));
        json_object_set_new(obj, "open_s", json_real(cr.open_s));
        json_object_set_new(obj, "pid", cr.pid > 0 ? json_integer(cr.pid) : json_null());
        json_object_set_new(obj, "rss_before_bytes",
                            have_mem ? json_integer((json_int_t)cr.rss_before)
                                     : json_null());
        json_object_set_new(obj, "rss_after_bytes",
                            have_mem ? json_integer((json_int_t)cr.rss_after)
                                     : json_null());
        json_object_set_new(obj, "mem_per_conn_bytes",
                            have_mem ? json_real(mem_per_conn) : json_null());
        if (!have_mem)
            json_object_set_new(obj, "warning", json_string(no_pid));
        json_object_set_new(obj, "rate", json_real(c->rate));
        json_object_set_new(obj, "size", json_integer((json_int_t)c->size));
        json_object_set_new(obj, "duration_s", json_real(secs));
        json_object_set_new(obj, "sent", json_integer((json_int_t)cr.sent));
        json_object_set_new(obj, "acked", json_integer((json_int_t)cr.acked));
        json_object_set_new(obj, "delivered", json_integer((json_int_t)cr.delivered));
        json_object_set_new(obj, "delivered_per_s", json_real(delivered_per_s));
        json_object_set_new(obj, "errors", json_integer((json_int_t)cr.errors));
        json_put_codes(obj, cr.codes, cr.n_codes);
        if (cr.interrupted)
            json_object_set_new(obj, "interrupted", json_true());
        json_put_summary(obj, "ack", &as);
        json_print(obj);
    } else if (rv == 0 || cr.open > 0) {
        printf("connections: %zu of %zu sessions open on %s:%d (%zu users, %zu senders), "
               "opened in %.2f s (%.0f/s)\n",
               cr.open, c->connections, c->gateway.host, c->gateway.port, cr.users,
               cr.senders, cr.open_s, cr.open_s > 0 ? (double)cr.open / cr.open_s : 0);
        if (have_mem)
            printf("gateway pid %ld: VmRSS %.1f MiB -> %.1f MiB, %.0f bytes per "
                   "connection\n",
                   cr.pid, (double)cr.rss_before / 1048576.0,
                   (double)cr.rss_after / 1048576.0, mem_per_conn);
        else
            printf("%s\n", no_pid);
        printf("%.1f s of traffic at %g msg/s: %zu sent, %zu acked, %zu delivered "
               "(%.0f/s)\n\n",
               secs, c->rate, cr.sent, cr.acked, cr.delivered, delivered_per_s);
        table_header();
        table_row("send->ack", &as);
        print_errors(cr.errors, cr.codes, cr.n_codes);
        if (cr.interrupted)
            printf("interrupted\n");
    }
    if (o->plot != NULL && as.count > 0) {
        struct plot_series s[1] = {{"ack", "send->ack", &cr.ack}};
        char title[160];
        snprintf(title, sizeof title, "chorus-bench connections: %zu open, %g msg/s",
                 cr.open, c->rate);
        if (plot(o->plot, title, s, 1) != 0)
            code = EXIT_FAILED;
    }
    bench_stats_free(&cr.ack);
    return code;
}

int main(int argc, char **argv)
{
    /* --no-batch, an option of every mode, is taken out before the modes' parsers */
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 1 && strcmp(argv[i], "--no-batch") == 0)
            bench_ws_path = "/ws";
        else
            argv[n++] = argv[i];
    }
    argc = n;
    argv[argc] = NULL;
    struct options o;
    if (parse_options(argc, argv, &o) != 0)
        return EXIT_USAGE;
    if (o.plot != NULL && !have_gnuplot()) {
        fprintf(stderr, "chorus-bench: --plot needs gnuplot, which is not installed "
                        "(Debian: apt-get install gnuplot-nox)\n");
        return EXIT_FAILED;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(o.mode, "floor") == 0)
        return run_floor(&o);
    if (strcmp(o.mode, "throughput") == 0)
        return run_throughput(&o);
    if (strcmp(o.mode, "fanout") == 0)
        return run_fanout(&o);
    if (strcmp(o.mode, "connections") == 0)
        return run_connections(&o);
    return run_latency(&o);
}

void bench_random_tag(char *out, size_t len)
{
    uint32_t x = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &x, sizeof x) != (ssize_t)sizeof x)
        x = (uint32_t)uv_hrtime() ^ ((uint32_t)getpid() << 16);
    if (fd >= 0)
        close(fd);
    snprintf(out, len, "%08" PRIx32, x);
}
