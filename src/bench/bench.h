/* chorus-bench's modes and their results, shared by the CLI (bench.c) and the
 * runners (floor_uv.c, latency_uv.c, throughput_uv.c). */
#ifndef CHORUS_BENCH_H
#define CHORUS_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "stats.h"

/* ---- progress ------------------------------------------------------------------ */

/* Rewrites the live progress line on stderr (only when stderr is a terminal; at
 * most ten times a second unless force).  printf-style. */
void bench_progress(int force, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Erases the progress line (before the results are printed). */
void bench_progress_done(void);

/* ---- floor: what this machine's disk and loopback cost ------------------------- */

struct bench_floor_result {
    struct bench_stats fsync; /* ns per 4 KiB pwrite + fdatasync */
    struct bench_stats rtt;   /* ns per 64-byte loopback TCP round trip */
};

/*
 * Measures samples fsyncs of a temporary file in dir (removed afterwards) and
 * samples loopback TCP round trips to an echo server on a thread of its own.
 * out's recorders must be initialised by the caller (who frees them).  0, or an
 * error code with a reason in err.
 */
int bench_floor_run(const char *dir, size_t samples, struct bench_floor_result *out,
                    char *err, size_t errlen);

/* ---- latency: one sender, sequential sends ------------------------------------- */

struct bench_latency_options {
    char host1[256];
    int port1; /* the sender's gateway */
    char host2[256];
    int port2;           /* the receiver's gateway */
    size_t count;        /* messages to send */
    double rate;         /* messages per second at most; 0 = back to back */
    size_t size;         /* body bytes */
    int group;           /* a group conversation instead of a direct one */
    unsigned timeout_ms; /* per message: no ack or delivery by then is an error */
};

struct bench_latency_result {
    struct bench_stats ack;       /* ns from the send's write to the sender's ack */
    struct bench_stats delivered; /* ns from the write to the receiver's event */
    size_t sent;                  /* messages sent */
    size_t errors;                /* failed sends, timeouts, malformed messages */
    struct bench_error_count codes[BENCH_MAX_ERROR_CODES];
    size_t n_codes;
    uint64_t conv;   /* the conversation used */
    char sender[40]; /* the user names registered */
    char receiver[40];
    int interrupted;   /* stopped by SIGINT */
    char failure[256]; /* why the run failed, when bench_latency_run says so */
};

/*
 * Registers two fresh users, makes a conversation of them and measures count
 * sequential sends.  r's recorders must be initialised by the caller (who frees
 * them).  0 when the run reached its end (r->errors may be non-zero), else
 * CH_EIO with r->failure set (a gateway unreachable, a lost connection, setup
 * refused); r holds whatever was measured up to then.
 */
int bench_latency_run(const struct bench_latency_options *o,
                      struct bench_latency_result *r);

/* Counts one error under code in r (codes beyond the table go to "other"). */
void bench_count_error(struct bench_latency_result *r, const char *code);
/* (the per-code tally of either mode is bench_error_tally, stats.h) */

/* ---- throughput: many connections, a window of sends each ---------------------- */

#define BENCH_MAX_GATEWAYS 16

struct bench_gateway {
    char host[256];
    int port;
};

struct bench_throughput_options {
    /* the gateways; connections are spread over them round-robin */
    struct bench_gateway gateways[BENCH_MAX_GATEWAYS];
    size_t n_gateways;
    size_t connections; /* each its own registered user (>= 2) */
    size_t convs;       /* group conversations */
    size_t window;      /* sends in flight per connection */
    double duration_s;  /* of the measurement, after setup */
    size_t size;        /* body bytes */
};

struct bench_throughput_result {
    struct bench_stats ack; /* ns from a send's write to its ack, under load */
    size_t sent;            /* sends written during the measurement */
    size_t acked;           /* successful acks received during it */
    size_t delivered;       /* message events received by members other than the sender */
    size_t unacked;         /* sends still in flight when the measurement ended */
    size_t errors;          /* failed sends, malformed messages */
    size_t rate_limited;    /* of which rate_limited replies */
    struct bench_error_count codes[BENCH_MAX_ERROR_CODES];
    size_t n_codes;
    size_t memberships; /* (connection, conversation) pairs */
    double elapsed_s;   /* the measurement's actual length */
    int interrupted;    /* stopped by SIGINT */
    char failure[256];  /* why the run failed, when bench_throughput_run says so */
};

/*
 * Registers o->connections fresh users (one per connection, spread over the
 * gateways), creates o->convs group conversations among them, then keeps
 * o->window sends in flight on every connection for o->duration_s, each
 * connection sending to its conversations round-robin.  r->ack must be
 * initialised by the caller (who frees it).  0 when the run reached its end
 * (r->errors may be non-zero), else CH_EIO / CH_ETIMEOUT / CH_ENOMEM with
 * r->failure set; r holds whatever was measured up to then.
 */
int bench_throughput_run(const struct bench_throughput_options *o,
                         struct bench_throughput_result *r);

/* A random hex tag for fresh user names, so runs never collide (len >= 9). */
void bench_random_tag(char *out, size_t len);

#endif
