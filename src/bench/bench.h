/* chorus-bench's modes and their results, shared by the CLI (bench.c) and the
 * runners (floor_uv.c, latency_uv.c, throughput_uv.c, crowd_uv.c). */
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
 * Measures samples fsyncs of a temporary file in dir (removed afterwards; with
 * fsync_writers > 1, that many threads each sync a file of their own at the same
 * time and all their samples count) and
 * samples loopback TCP round trips to an echo server on a thread of its own.
 * out's recorders must be initialised by the caller (who frees them).  0, or an
 * error code with a reason in err.
 */
int bench_floor_run(const char *dir, size_t samples, unsigned fsync_writers,
                    struct bench_floor_result *out, char *err, size_t errlen);

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

/* ---- fanout and connections: many sessions (crowd_uv.c) ---------------------- */

struct bench_fanout_options {
    /* the gateways; member connections are spread over them round-robin */
    struct bench_gateway gateways[BENCH_MAX_GATEWAYS];
    size_t n_gateways;
    size_t members;      /* receiving members, each its own user and connection */
    size_t repeats;      /* messages, sent one at a time */
    size_t size;         /* body bytes */
    unsigned timeout_ms; /* per message: not every member has it by then: an error */
};

struct bench_fanout_result {
    struct bench_stats fanout;     /* ns from a send's write to the LAST member's event */
    struct bench_stats member_p50; /* per message: the median member's ns */
    struct bench_stats ack;        /* ns from the write to the sender's ack */
    size_t sent;                   /* messages sent */
    size_t completed;              /* messages every member received in time */
    size_t errors;                 /* failed sends, timeouts, malformed messages */
    struct bench_error_count codes[BENCH_MAX_ERROR_CODES];
    size_t n_codes;
    uint64_t conv;     /* the group conversation */
    double setup_s;    /* registering, creating the group, connecting the members */
    int interrupted;   /* stopped by SIGINT */
    char failure[256]; /* why the run failed, when bench_fanout_run says so */
};

/*
 * Registers o->members + 1 fresh users, makes one group of them (create with the
 * first few hundred, add_member for the rest) before the members connect, connects
 * every member (auth with its token) and then sends o->repeats messages one at a
 * time from the sender, each waiting until every member has it.  r's recorders
 * must be initialised by the caller (who frees them).  0 when the run reached its
 * end (r->errors may be non-zero), else CH_EIO / CH_ETIMEOUT / CH_ENOMEM with
 * r->failure set; r holds whatever was measured up to then.
 */
int bench_fanout_run(const struct bench_fanout_options *o, struct bench_fanout_result *r);

struct bench_connections_options {
    struct bench_gateway gateway; /* every connection goes to this one gateway */
    size_t connections;           /* sessions to hold open */
    double duration_s;            /* of traffic over them, after they are open */
    double rate;                  /* messages per second over all the senders */
    size_t size;                  /* body bytes */
    long pid;                     /* the gateway's chorusd; 0 = find it by the port */
};

struct bench_connections_result {
    struct bench_stats ack; /* ns from a send's write to its ack, during the traffic */
    size_t users;           /* registered users the sessions log in as */
    size_t senders;         /* of the sessions, how many send */
    size_t open;            /* sessions open and authenticated at the end of opening */
    double open_s;          /* how long opening them took */
    long pid;               /* the process whose memory was read (0: none) */
    uint64_t rss_before;    /* its VmRSS in bytes before opening the sessions */
    uint64_t rss_after;     /* and once they were open */
    size_t sent, acked;     /* sends during the traffic, and successful acks */
    size_t delivered;       /* message events at sessions other than the sending one */
    size_t errors;          /* failed sends, malformed messages */
    struct bench_error_count codes[BENCH_MAX_ERROR_CODES];
    size_t n_codes;
    double elapsed_s;  /* the traffic's actual length */
    int interrupted;   /* stopped by SIGINT */
    char failure[256]; /* why the run failed, when bench_connections_run says so */
};

/*
 * Registers a few users (one per 200 sessions, at least 2, at most 100), makes
 * a group per sender whose members are the other users, reads the gateway
 * process's VmRSS, opens o->connections sessions (auth with the users' tokens,
 * source addresses 127.0.0.2... for a loopback gateway), reads VmRSS again, then
 * has the senders post o->rate messages per second for o->duration_s.  r->ack
 * must be initialised by the caller (who frees it).  0 when the run reached its
 * end, else CH_EIO / CH_ETIMEOUT / CH_ENOMEM with r->failure set.
 */
int bench_connections_run(const struct bench_connections_options *o,
                          struct bench_connections_result *r);

/* Raises this process's RLIMIT_NOFILE soft limit to at least want (and the hard
 * limit too when allowed, up to /proc/sys/fs/nr_open).  Returns the soft limit in
 * force afterwards.  Call it before creating a libwebsockets context: the context
 * sizes its fd table from the limit. */
size_t bench_raise_nofile(size_t want);

/* A random hex tag for fresh user names, so runs never collide (len >= 9). */
void bench_random_tag(char *out, size_t len);

#endif
