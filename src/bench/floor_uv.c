/*
 * The physical floor of this machine (bench_floor_run, see bench.h): what one
 * durable disk write and one loopback network hop cost, measured the same way in
 * the same run as the chat latencies they bound.
 *
 * fsync: 4 KiB pwrite + fdatasync, sequentially through a 1 MiB region of a
 * temporary file that was written and synced in full first, so every sample
 * flushes data only (no file growth, no block allocation): the cheapest durable
 * write the disk offers, which is what a floor should be.
 *
 * RTT: a 64-byte ping-pong over TCP on 127.0.0.1 with TCP_NODELAY, between a
 * client on this thread's libuv loop and an echo server on another thread's loop,
 * so every round trip pays what a hop between two event-loop processes pays: two
 * loopback transfers, two epoll wake-ups and four syscalls.
 */
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/error.h"
#include "bench.h"
#include "ws_client.h"

#define FSYNC_BLOCK 4096
#define FSYNC_REGION (1u << 20)
#define RTT_BYTES 64
#define RTT_WARMUP 50

/* ---- fsync --------------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static int measure_fsync(const char *dir, size_t samples, int progress,
                         struct bench_stats *out, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/.chorus-bench-fsync-XXXXXX", dir) >=
        (int)sizeof path)
        return ch_fail(err, errlen, CH_EINVAL, "--data: path too long");
    int fd = mkstemp(path);
    if (fd < 0)
        return ch_fail(err, errlen, CH_EIO, "cannot create a file in %s: %s", dir,
                       strerror(errno));
    static unsigned char block[FSYNC_BLOCK];
    int rv = 0;
    for (off_t off = 0; off < FSYNC_REGION; off += FSYNC_BLOCK) {
        memset(block, (int)(off / FSYNC_BLOCK), sizeof block);
        if (write_all(fd, block, sizeof block, off) != 0) {
            rv = ch_fail(err, errlen, CH_EIO, "write %s: %s", path, strerror(errno));
            goto out;
        }
    }
    if (fsync(fd) != 0) {
        rv = ch_fail(err, errlen, CH_EIO, "fsync %s: %s", path, strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < samples; i++) {
        off_t off = (off_t)((i * FSYNC_BLOCK) % FSYNC_REGION);
        memset(block, (int)(i & 0xff), 64); /* the block changes every time */
        uint64_t t0 = uv_hrtime();
        if (write_all(fd, block, sizeof block, off) != 0 || fdatasync(fd) != 0) {
            rv = ch_fail(err, errlen, CH_EIO, "write + fdatasync %s: %s", path,
                         strerror(errno));
            goto out;
        }
        uint64_t t1 = uv_hrtime();
        if (bench_stats_record(out, t1 - t0) != 0) {
            rv = ch_fail(err, errlen, CH_ENOMEM, "out of memory");
            goto out;
        }
        if (progress)
            bench_progress(0, "floor: fsync %zu/%zu", i + 1, samples);
    }
out:
    close(fd);
    unlink(path);
    return rv;
}

/* ---- loopback round trip --------------------------------------------------------- */

/* The echo server: one loop on its own thread, one connection, echoes until EOF. */
struct echo {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_tcp_t conn;
    uv_async_t stop; /* from the measuring thread: close everything, end the loop */
    int accepted;
    char buf[4096];
    int failed;
};

static void echo_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct echo *e = h->data;
    *buf = uv_buf_init(e->buf, sizeof e->buf);
}

static void echo_write_done(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void echo_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct echo *e = s->data;
    if (n < 0) { /* EOF or error: the client is done */
        bench_uv_close((uv_handle_t *)&e->conn);
        return;
    }
    if (n == 0)
        return;
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
    int w = uv_try_write(s, &b, 1);
    if (w == n)
        return;
    /* partial (never for 64 bytes on loopback, but be correct): queue the rest */
    size_t done = w > 0 ? (size_t)w : 0;
    uv_write_t *req = malloc(sizeof *req + (size_t)n - done);
    if (req == NULL) {
        e->failed = 1;
        bench_uv_close((uv_handle_t *)&e->conn);
        return;
    }
    char *copy = (char *)(req + 1);
    memcpy(copy, buf->base + done, (size_t)n - done);
    uv_buf_t rest = uv_buf_init(copy, (unsigned)((size_t)n - done));
    if (uv_write(req, s, &rest, 1, echo_write_done) != 0) {
        free(req);
        e->failed = 1;
        bench_uv_close((uv_handle_t *)&e->conn);
    }
}

static void echo_accept(uv_stream_t *listener, int status)
{
    struct echo *e = listener->data;
    if (status < 0 || e->accepted)
        return;
    uv_tcp_init(&e->loop, &e->conn);
    e->conn.data = e;
    e->accepted = 1; /* conn is initialised: echo_stop closes it */
    if (uv_accept(listener, (uv_stream_t *)&e->conn) != 0) {
        e->failed = 1;
        bench_uv_close((uv_handle_t *)&e->conn);
    } else {
        uv_tcp_nodelay(&e->conn, 1);
        uv_read_start((uv_stream_t *)&e->conn, echo_alloc, echo_read);
    }
    bench_uv_close((uv_handle_t *)&e->listener); /* one client only */
}

static void echo_stop(uv_async_t *a)
{
    struct echo *e = a->data;
    bench_uv_close((uv_handle_t *)&e->listener);
    if (e->accepted)
        bench_uv_close((uv_handle_t *)&e->conn);
    bench_uv_close((uv_handle_t *)&e->stop);
}

static void echo_thread(void *arg)
{
    struct echo *e = arg;
    uv_run(&e->loop, UV_RUN_DEFAULT);
}

/* The client: writes 64 bytes, waits for all 64 back, records, repeats. */
struct pinger {
    uv_loop_t loop;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_timer_t guard; /* gives up when the echo server stops answering */
    struct bench_stats *out;
    size_t samples, done, got;
    uint64_t t0;
    char buf[RTT_BYTES * 4];
    char ping[RTT_BYTES];
    int rv;
    char *err;
    size_t errlen;
};

static void pinger_close(struct pinger *p)
{
    if (!uv_is_closing((uv_handle_t *)&p->tcp))
        uv_close((uv_handle_t *)&p->tcp, NULL);
    if (!uv_is_closing((uv_handle_t *)&p->guard))
        uv_close((uv_handle_t *)&p->guard, NULL);
}

static void pinger_fail(struct pinger *p, int code, const char *what, int uverr)
{
    if (p->rv == 0)
        p->rv = ch_fail(p->err, p->errlen, code, "loopback round trip: %s%s%s", what,
                        uverr ? ": " : "", uverr ? uv_strerror(uverr) : "");
    pinger_close(p);
}

static void pinger_send(struct pinger *p)
{
    p->got = 0;
    p->ping[0] = (char)p->done;
    uv_buf_t b = uv_buf_init(p->ping, sizeof p->ping);
    p->t0 = uv_hrtime();
    int w = uv_try_write((uv_stream_t *)&p->tcp, &b, 1);
    if (w != (int)sizeof p->ping)
        pinger_fail(p, CH_EIO, "write", w < 0 ? w : 0);
    else
        uv_timer_again(&p->guard);
}

static void pinger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct pinger *p = h->data;
    *buf = uv_buf_init(p->buf, sizeof p->buf);
}

static void pinger_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct pinger *p = s->data;
    if (n < 0) {
        pinger_fail(p, CH_EIO, "the echo server closed", (int)n);
        return;
    }
    p->got += (size_t)n;
    if (p->got < RTT_BYTES)
        return;
    uint64_t t1 = uv_hrtime();
    if (p->got > RTT_BYTES) {
        pinger_fail(p, CH_EIO, "the echo server sent more than it got", 0);
        return;
    }
    if (p->done >= RTT_WARMUP) {
        if (bench_stats_record(p->out, t1 - p->t0) != 0) {
            pinger_fail(p, CH_ENOMEM, "out of memory", 0);
            return;
        }
        bench_progress(0, "floor: loopback round trip %zu/%zu", p->done + 1 - RTT_WARMUP,
                       p->samples);
    }
    p->done++;
    if (p->done >= p->samples + RTT_WARMUP)
        pinger_close(p); /* EOF tells the echo server to finish */
    else
        pinger_send(p);
}

static void pinger_connected(uv_connect_t *req, int status)
{
    struct pinger *p = req->data;
    if (status < 0) {
        pinger_fail(p, CH_EIO, "connect", status);
        return;
    }
    uv_tcp_nodelay(&p->tcp, 1);
    uv_read_start((uv_stream_t *)&p->tcp, pinger_alloc, pinger_read);
    pinger_send(p);
}

static void pinger_guard(uv_timer_t *t)
{
    pinger_fail(t->data, CH_ETIMEOUT, "no echo within 5 s", 0);
}

static int measure_rtt(size_t samples, struct bench_stats *out, char *err, size_t errlen)
{
    struct echo *e = calloc(1, sizeof *e);
    struct pinger *p = calloc(1, sizeof *p);
    int rv = 0;
    if (e == NULL || p == NULL) {
        free(e);
        free(p);
        return ch_fail(err, errlen, CH_ENOMEM, "out of memory");
    }
    /* the server's loop and listener are set up here, before its thread runs them */
    struct sockaddr_in any;
    uv_ip4_addr("127.0.0.1", 0, &any);
    int uverr;
    if ((uverr = uv_loop_init(&e->loop)) != 0) {
        free(e);
        free(p);
        return ch_fail(err, errlen, CH_EIO, "uv_loop_init: %s", uv_strerror(uverr));
    }
    uv_tcp_init(&e->loop, &e->listener);
    uv_async_init(&e->loop, &e->stop, echo_stop);
    e->listener.data = e->stop.data = e;
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    if ((uverr = uv_tcp_bind(&e->listener, (const struct sockaddr *)&any, 0)) != 0 ||
        (uverr = uv_listen((uv_stream_t *)&e->listener, 1, echo_accept)) != 0 ||
        (uverr = uv_tcp_getsockname(&e->listener, (struct sockaddr *)&bound, &blen)) !=
            0) {
        rv = ch_fail(err, errlen, CH_EIO, "loopback echo server: %s", uv_strerror(uverr));
        goto fail;
    }
    uv_thread_t thread;
    if ((uverr = uv_thread_create(&thread, echo_thread, e)) != 0) {
        rv = ch_fail(err, errlen, CH_EIO, "thread: %s", uv_strerror(uverr));
        goto fail;
    }

    p->out = out;
    p->samples = samples;
    p->err = err;
    p->errlen = errlen;
    uv_loop_init(&p->loop);
    uv_tcp_init(&p->loop, &p->tcp);
    uv_timer_init(&p->loop, &p->guard);
    p->tcp.data = p->guard.data = p->connect.data = p;
    uv_timer_start(&p->guard, pinger_guard, 5000, 5000);
    if ((uverr = uv_tcp_connect(&p->connect, &p->tcp, (const struct sockaddr *)&bound,
                                pinger_connected)) != 0)
        pinger_fail(p, CH_EIO, "connect", uverr);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    uv_loop_close(&p->loop);
    rv = p->rv;

    uv_async_send(&e->stop); /* whatever state the server is in, its loop ends */
    uv_thread_join(&thread);
    uv_loop_close(&e->loop);
    if (rv == 0 && e->failed)
        rv = ch_fail(err, errlen, CH_EIO, "loopback echo server failed");
    free(e);
    free(p);
    return rv;

fail: /* the server's loop never ran on its thread: stop and drain it here */
    echo_stop(&e->stop);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
    free(e);
    free(p);
    return rv;
}

/* One of the concurrent fsync writers (--fsync-writers): its own file and samples. */
struct fsync_writer {
    uv_thread_t thread;
    const char *dir;
    size_t samples;
    struct bench_stats stats;
    int rv;
    char err[256];
};

static void fsync_writer_main(void *arg)
{
    struct fsync_writer *w = arg;
    w->rv = measure_fsync(w->dir, w->samples, 0, &w->stats, w->err, sizeof w->err);
}

/*
 * writers - 1 threads write and fdatasync files of their own while this thread
 * measures too; every writer's samples count.  Three replicas on one machine share
 * its disk: their syncs queue behind each other, which one writer never sees.
 */
static int measure_fsync_shared(const char *dir, size_t samples, unsigned writers,
                                struct bench_stats *out, char *err, size_t errlen)
{
    struct fsync_writer *w = calloc(writers - 1, sizeof *w);
    if (w == NULL)
        return ch_fail(err, errlen, CH_ENOMEM, "out of memory");
    unsigned started = 0;
    int rv = 0;
    for (; started < writers - 1; started++) {
        w[started].dir = dir;
        w[started].samples = samples;
        bench_stats_init(&w[started].stats);
        if (bench_stats_reserve(&w[started].stats, samples) != 0 ||
            uv_thread_create(&w[started].thread, fsync_writer_main, &w[started]) != 0) {
            bench_stats_free(&w[started].stats);
            rv = ch_fail(err, errlen, CH_ENOMEM, "cannot start fsync writer %u",
                         started + 2);
            break;
        }
    }
    if (rv == 0)
        rv = measure_fsync(dir, samples, 1, out, err, errlen);
    for (unsigned i = 0; i < started; i++) {
        uv_thread_join(&w[i].thread);
        if (rv == 0 && w[i].rv != 0)
            rv = ch_fail(err, errlen, w[i].rv, "%s", w[i].err);
        size_t n = w[i].stats.count;
        for (size_t k = 0; rv == 0 && k < n; k++)
            if (bench_stats_record(out, w[i].stats.samples[k]) != 0)
                rv = ch_fail(err, errlen, CH_ENOMEM, "out of memory");
        bench_stats_free(&w[i].stats);
    }
    free(w);
    return rv;
}

int bench_floor_run(const char *dir, size_t samples, unsigned fsync_writers,
                    struct bench_floor_result *out, char *err, size_t errlen)
{
    if (samples == 0)
        return ch_fail(err, errlen, CH_EINVAL, "--samples must be at least 1");
    if (fsync_writers == 0)
        fsync_writers = 1;
    if (bench_stats_reserve(&out->fsync, samples * fsync_writers) != 0 ||
        bench_stats_reserve(&out->rtt, samples) != 0)
        return ch_fail(err, errlen, CH_ENOMEM, "out of memory");
    int rv = fsync_writers > 1 ? measure_fsync_shared(dir, samples, fsync_writers,
                                                      &out->fsync, err, errlen)
                               : measure_fsync(dir, samples, 1, &out->fsync, err, errlen);
    if (rv == 0)
        rv = measure_rtt(samples, &out->rtt, err, errlen);
    bench_progress_done();
    return rv;
}
