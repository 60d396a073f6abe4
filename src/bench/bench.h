/* chorus-bench's modes and their results, shared by the CLI (bench.c) and the
 * runners (floor_uv.c, latency_uv.c). */
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

#define BENCH_MAX_ERROR_CODES 16

struct bench_error_count {
    char code[40]; /* a gateway error code, or "timeout", "malformed", ... */
    size_t count;
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

#endif
