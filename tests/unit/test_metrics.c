/*
 * Unit tests of the Prometheus exposition renderer (src/gateway/metrics).  The
 * output is read back by a strict little parser of text format 0.0.4: every line
 * is a HELP, a TYPE or a sample `name{labels} value`; every family has HELP and
 * TYPE exactly once, before its samples, which are contiguous; counters end in
 * _total; histogram buckets are cumulative, their `le` ascending, ending with
 * +Inf equal to _count; no series appears twice.
 */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/codec.h"
#include "common/error.h"
#include "common/histogram.h"
#include "gateway/metrics.h"
#include "test.h"

/* ---- the parser ------------------------------------------------------------------------ */

#define MAX_SAMPLES 4096
#define MAX_FAMILIES 256

struct sample {
    char name[128];
    char labels[512]; /* k="v",... in order, without le */
    char le[48];      /* "" when absent */
    double value;
};

struct family {
    char name[128];
    char type[16];
    int help, typed, samples;
};

static struct sample samples[MAX_SAMPLES];
static size_t n_samples;
static struct family families[MAX_FAMILIES];
static size_t n_families;
static char perr[256];

static int bad(int line, const char *why)
{
    snprintf(perr, sizeof perr, "line %d: %s", line, why);
    return -1;
}

static int name_char(int c, int first)
{
    return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

/* A metric or label name at *p; advances. */
static int read_name(const char **p, char *out, size_t len, int label)
{
    size_t n = 0;
    while (name_char((unsigned char)(*p)[0], n == 0) && !(label && (*p)[0] == ':')) {
        if (n + 1 >= len)
            return -1;
        out[n++] = *(*p)++;
    }
    out[n] = 0;
    return n == 0 ? -1 : 0;
}

static int strict_double(const char *s, double *out)
{
    if (strcmp(s, "+Inf") == 0) {
        *out = INFINITY;
        return 0;
    }
    if (*s == 0 || isspace((unsigned char)*s))
        return -1;
    char *end;
    *out = strtod(s, &end);
    return *end == 0 ? 0 : -1;
}

static struct family *family_of(const char *name)
{
    for (size_t i = 0; i < n_families; i++)
        if (strcmp(families[i].name, name) == 0)
            return &families[i];
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int parse_sample(int ln, const char *p, struct family *cur)
{
    if (n_samples == MAX_SAMPLES)
        return bad(ln, "too many samples");
    struct sample *s = &samples[n_samples];
    memset(s, 0, sizeof *s);
    if (read_name(&p, s->name, sizeof s->name, 0) != 0)
        return bad(ln, "bad metric name");
    if (*p == '{') {
        p++;
        size_t out = 0;
        while (*p != '}') {
            char key[64], val[256];
            size_t vn = 0;
            if (read_name(&p, key, sizeof key, 1) != 0 || *p++ != '=' || *p++ != '"')
                return bad(ln, "bad label");
            while (*p != '"') {
                if (*p == 0 || *p == '\n' || vn + 2 >= sizeof val)
                    return bad(ln, "unterminated label value");
                if (*p == '\\') {
                    p++;
                    if (*p != '\\' && *p != '"' && *p != 'n')
                        return bad(ln, "bad escape in label value");
                }
                val[vn++] = *p++;
            }
            val[vn] = 0;
            p++;
            if (strcmp(key, "le") == 0) {
                snprintf(s->le, sizeof s->le, "%s", val);
            } else {
                int n = snprintf(s->labels + out, sizeof s->labels - out, "%s%s=\"%s\"",
                                 out ? "," : "", key, val);
                out += (size_t)n;
            }
            if (*p == ',')
                p++;
            else if (*p != '}')
                return bad(ln, "expected , or } after a label");
        }
        p++;
    }
    if (*p++ != ' ')
        return bad(ln, "expected one space before the value");
    if (strict_double(p, &s->value) != 0)
        return bad(ln, "bad value (or a timestamp)");
    if (cur == NULL || !cur->help || !cur->typed)
        return bad(ln, "sample before its family's HELP and TYPE");
    int ok = strcmp(s->name, cur->name) == 0;
    if (strcmp(cur->type, "histogram") == 0) {
        char want[160];
        ok = 0;
        for (int i = 0; i < 3 && !ok; i++) {
            static const char *const sfx[] = {"_bucket", "_sum", "_count"};
            snprintf(want, sizeof want, "%s%s", cur->name, sfx[i]);
            ok = strcmp(s->name, want) == 0;
        }
        if ((s->le[0] != 0) != ends_with(s->name, "_bucket"))
            return bad(ln, "le on a non-bucket sample, or a bucket without le");
    } else if (s->le[0]) {
        return bad(ln, "le label outside a histogram");
    }
    if (!ok)
        return bad(ln, "sample does not belong to the current family");
    if (strstr(s->labels, "node=\"") != s->labels)
        return bad(ln, "sample without a leading node label");
    for (size_t i = 0; i < n_samples; i++)
        if (strcmp(samples[i].name, s->name) == 0 &&
            strcmp(samples[i].labels, s->labels) == 0 && strcmp(samples[i].le, s->le) == 0)
            return bad(ln, "duplicate series");
    cur->samples++;
    n_samples++;
    return 0;
}

/* Histograms: per series, buckets in ascending le, cumulative, +Inf last == _count. */
static int check_histograms(void)
{
    for (size_t f = 0; f < n_families; f++) {
        if (strcmp(families[f].type, "histogram") != 0)
            continue;
        char bucket[160], count[160], sum[160];
        snprintf(bucket, sizeof bucket, "%s_bucket", families[f].name);
        snprintf(count, sizeof count, "%s_count", families[f].name);
        snprintf(sum, sizeof sum, "%s_sum", families[f].name);
        for (size_t i = 0; i < n_samples; i++) {
            if (strcmp(samples[i].name, count) != 0)
                continue;
            double prev_le = -INFINITY, prev = 0;
            int seen_inf = 0, buckets = 0, have_sum = 0;
            for (size_t k = 0; k < n_samples; k++) {
                if (strcmp(samples[k].labels, samples[i].labels) != 0)
                    continue;
                if (strcmp(samples[k].name, sum) == 0)
                    have_sum = 1;
                if (strcmp(samples[k].name, bucket) != 0)
                    continue;
                double le;
                if (strict_double(samples[k].le, &le) != 0 || le <= prev_le || seen_inf)
                    return bad(0, "histogram le not ascending (or after +Inf)");
                if (samples[k].value < prev)
                    return bad(0, "histogram buckets not cumulative");
                prev_le = le;
                prev = samples[k].value;
                seen_inf = isinf(le);
                buckets++;
            }
            if (!seen_inf || prev != samples[i].value || !have_sum || buckets == 0)
                return bad(0, "histogram without +Inf == _count, or without _sum");
        }
    }
    return 0;
}

static int parse_exposition(const char *text, size_t len)
{
    n_samples = n_families = 0;
    perr[0] = 0;
    struct family *cur = NULL;
    const char *p = text, *end = text + len;
    int ln = 0;
    if (len == 0 || text[len - 1] != '\n')
        return bad(0, "text must end with a newline");
    while (p < end) {
        ln++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        char line[1024];
        size_t n = (size_t)(nl - p);
        if (n == 0 || n >= sizeof line)
            return bad(ln, "empty or overlong line");
        memcpy(line, p, n);
        line[n] = 0;
        p = nl + 1;
        if (line[0] != '#') {
            if (parse_sample(ln, line, cur) != 0)
                return -1;
            continue;
        }
        int help = strncmp(line, "# HELP ", 7) == 0, type = strncmp(line, "# TYPE ", 7) == 0;
        if (!help && !type)
            return bad(ln, "a comment that is neither HELP nor TYPE");
        const char *q = line + 7;
        char name[128];
        if (read_name(&q, name, sizeof name, 0) != 0 || *q++ != ' ' || *q == 0)
            return bad(ln, "bad HELP/TYPE line");
        struct family *f = family_of(name);
        if (f == NULL) {
            if (n_families == MAX_FAMILIES)
                return bad(ln, "too many families");
            f = &families[n_families++];
            memset(f, 0, sizeof *f);
            snprintf(f->name, sizeof f->name, "%s", name);
        } else if (f != cur) {
            return bad(ln, "family's lines are not contiguous");
        }
        if (f->samples > 0)
            return bad(ln, "HELP/TYPE after the family's samples");
        cur = f;
        if (help) {
            if (f->help++)
                return bad(ln, "second HELP");
        } else {
            if (f->typed++)
                return bad(ln, "second TYPE");
            if (strcmp(q, "counter") && strcmp(q, "gauge") && strcmp(q, "histogram"))
                return bad(ln, "unknown TYPE");
            snprintf(f->type, sizeof f->type, "%s", q);
            if (strcmp(q, "counter") == 0 && !ends_with(name, "_total"))
                return bad(ln, "a counter not named *_total");
        }
    }
    for (size_t i = 0; i < n_families; i++)
        if (!families[i].help || !families[i].typed)
            return bad(0, "family without HELP or TYPE");
    return check_histograms();
}

/* The value of one series; NAN if absent. */
static double value(const char *name, const char *labels, const char *le)
{
    for (size_t i = 0; i < n_samples; i++)
        if (strcmp(samples[i].name, name) == 0 && strcmp(samples[i].labels, labels) == 0 &&
            strcmp(samples[i].le, le ? le : "") == 0)
            return samples[i].value;
    return NAN;
}

/* ---- the tests ------------------------------------------------------------------------- */

static struct metrics_shard shards[2];
static struct metrics_gateway gateway;
static const struct metrics_count codes[] = {{"bad_request", 3}, {"rate_limited", 2}};

static struct metrics_node fixture(void)
{
    memset(shards, 0, sizeof shards);
    for (int i = 0; i < 2; i++) {
        struct metrics_shard *s = &shards[i];
        s->shard = (uint32_t)(i * 5);
        s->state = i == 0 ? METRICS_RAFT_LEADER : METRICS_RAFT_FOLLOWER;
        s->term = 3;
        s->commit_index = 100 + (uint64_t)i;
        s->applied_index = 99 + (uint64_t)i;
        s->entries_applied = 42;
        s->bytes_applied = 4096;
        s->batches_proposed = 7;
        s->snapshots_taken = 1;
        ch_hist_init_exp(&s->batch_commands, 1, 2, 13);
        const uint64_t lat[] = {100000, 250000, 500000, 1000000, 1000000000};
        ch_hist_init(&s->apply_latency_ns, lat, 5);
    }
    ch_hist_observe(&shards[0].batch_commands, 1);
    ch_hist_observe(&shards[0].batch_commands, 3);
    ch_hist_observe(&shards[0].batch_commands, 100000);
    ch_hist_observe(&shards[0].apply_latency_ns, 250000);
    ch_hist_observe(&shards[0].apply_latency_ns, 1500000000);
    memset(&gateway, 0, sizeof gateway);
    gateway.connections = 4;
    gateway.requests = 20;
    gateway.acks = 9;
    gateway.errors = 5;
    gateway.errors_by_code = codes;
    gateway.n_errors_by_code = 2;
    gateway.fan_events = 11;
    gateway.rpc_calls = 17;
    return (struct metrics_node){.node = 2,
                                 .version = "0.1.0 \"x\"\\y",
                                 .uptime_ms = 12345,
                                 .shards = shards,
                                 .n_shards = 2,
                                 .gateway = &gateway};
}

static int render(const struct metrics_node *m)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    int rv = metrics_render(m, &b);
    if (rv == 0) {
        rv = parse_exposition((const char *)b.data, b.len);
        if (rv != 0) {
            fprintf(stderr, "  parse: %s\n", perr);
            fwrite(b.data, 1, b.len, stderr);
        }
    }
    ch_wbuf_free(&b);
    return rv;
}

static void test_output_parses_and_carries_the_values(void)
{
    struct metrics_node m = fixture();
    CHECK_EQ_INT(render(&m), 0);
    CHECK(value("chorus_build_info", "node=\"2\",version=\"0.1.0 \"x\"\\y\"", NULL) == 1);
    CHECK(value("chorus_uptime_seconds", "node=\"2\"", NULL) == 12.345);
    const char *s0 = "node=\"2\",shard=\"0\"", *s5 = "node=\"2\",shard=\"5\"";
    CHECK(value("chorus_raft_state", "node=\"2\",shard=\"0\",state=\"leader\"", NULL) == 1);
    CHECK(value("chorus_raft_state", "node=\"2\",shard=\"0\",state=\"follower\"", NULL) == 0);
    CHECK(value("chorus_raft_state", "node=\"2\",shard=\"5\",state=\"leader\"", NULL) == 0);
    CHECK(value("chorus_raft_state", "node=\"2\",shard=\"5\",state=\"follower\"", NULL) == 1);
    CHECK(value("chorus_raft_commit_index", s0, NULL) == 100);
    CHECK(value("chorus_raft_applied_index", s5, NULL) == 100);
    CHECK(value("chorus_raft_term", s5, NULL) == 3);
    CHECK(value("chorus_shard_entries_applied_total", s0, NULL) == 42);
    CHECK(value("chorus_shard_applied_bytes_total", s0, NULL) == 4096);
    CHECK(value("chorus_shard_batches_proposed_total", s0, NULL) == 7);
    CHECK(value("chorus_shard_snapshots_taken_total", s0, NULL) == 1);
    CHECK(value("chorus_shard_snapshots_installed_total", s0, NULL) == 0);
    /* histograms: inclusive bounds, seconds as exact decimals */
    CHECK(value("chorus_shard_batch_commands_bucket", s0, "1") == 1);
    CHECK(value("chorus_shard_batch_commands_bucket", s0, "2") == 1);
    CHECK(value("chorus_shard_batch_commands_bucket", s0, "4") == 2);
    CHECK(value("chorus_shard_batch_commands_bucket", s0, "4096") == 2);
    CHECK(value("chorus_shard_batch_commands_bucket", s0, "+Inf") == 3);
    CHECK(value("chorus_shard_batch_commands_sum", s0, NULL) == 100004);
    CHECK(value("chorus_shard_apply_latency_seconds_bucket", s0, "0.0001") == 0);
    CHECK(value("chorus_shard_apply_latency_seconds_bucket", s0, "0.00025") == 1);
    CHECK(value("chorus_shard_apply_latency_seconds_bucket", s0, "1") == 1);
    CHECK(value("chorus_shard_apply_latency_seconds_bucket", s0, "+Inf") == 2);
    CHECK(value("chorus_shard_apply_latency_seconds_sum", s0, NULL) == 1.50025);
    CHECK(value("chorus_shard_apply_latency_seconds_count", s5, NULL) == 0);
    /* gateway */
    CHECK(value("chorus_gateway_connections", "node=\"2\"", NULL) == 4);
    CHECK(value("chorus_gateway_requests_total", "node=\"2\"", NULL) == 20);
    CHECK(value("chorus_gateway_acks_total", "node=\"2\"", NULL) == 9);
    CHECK(value("chorus_gateway_errors_total", "node=\"2\",code=\"bad_request\"", NULL) == 3);
    CHECK(value("chorus_gateway_errors_total", "node=\"2\",code=\"rate_limited\"", NULL) == 2);
    CHECK(isnan(value("chorus_gateway_errors_total", "node=\"2\"", NULL)));
    CHECK(value("chorus_fanout_events_total", "node=\"2\"", NULL) == 11);
    CHECK(value("chorus_rpc_calls_total", "node=\"2\"", NULL) == 17);
    CHECK(value("chorus_rpc_disconnects_total", "node=\"2\"", NULL) == 0);
    CHECK(family_of("chorus_gateway_slow_consumer_disconnects_total") != NULL);
    CHECK(family_of("chorus_gateway_queued_bytes") != NULL);
}

/* No shards, no gateway, no error split: still well-formed. */
static void test_minimal_node(void)
{
    struct metrics_node m = fixture();
    m.n_shards = 0;
    m.gateway = NULL;
    CHECK_EQ_INT(render(&m), 0);
    CHECK(family_of("chorus_raft_state") != NULL); /* families without samples */
    CHECK(family_of("chorus_gateway_requests_total") == NULL);
    m = fixture();
    gateway.errors_by_code = NULL;
    CHECK_EQ_INT(render(&m), 0);
    CHECK(value("chorus_gateway_errors_total", "node=\"2\"", NULL) == 5);
}

/* The parser itself refuses what Prometheus would refuse. */
static void test_parser_is_strict(void)
{
    static const char *const bad_texts[] = {
        "x 1\n",                                                   /* no HELP/TYPE */
        "# HELP x h\n# TYPE x gauge\nx 1",                         /* no final newline */
        "# HELP x h\n# TYPE x gauge\n# HELP x h\nx 1\n",           /* HELP twice */
        "# HELP x h\n# TYPE x counter\nx 1\n",                     /* counter name */
        "# HELP x h\n# TYPE x gauge\nx{a=\"1\"} 1\n",              /* no node label */
        "# HELP x h\n# TYPE x gauge\nx{node=\"1\"} one\n",         /* value */
        "# HELP x h\n# TYPE x gauge\nx{node=\"1\"} 1 1700000000\n", /* timestamp */
        "# HELP x h\n# TYPE x gauge\nx{node=\"1\"} 1\nx{node=\"1\"} 2\n", /* duplicate */
        "# HELP x h\n# TYPE x gauge\ny{node=\"1\"} 1\n",           /* wrong family */
        "# HELP h h\n# TYPE h histogram\nh_bucket{node=\"1\",le=\"1\"} 2\n"
        "h_bucket{node=\"1\",le=\"+Inf\"} 1\nh_sum{node=\"1\"} 1\nh_count{node=\"1\"} 1\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{node=\"1\",le=\"1\"} 1\n"
        "h_sum{node=\"1\"} 1\nh_count{node=\"1\"} 1\n", /* no +Inf */
    };
    for (size_t i = 0; i < sizeof bad_texts / sizeof bad_texts[0]; i++) {
        if (parse_exposition(bad_texts[i], strlen(bad_texts[i])) == 0)
            fprintf(stderr, "  accepted bad text %zu\n", i);
        CHECK(parse_exposition(bad_texts[i], strlen(bad_texts[i])) != 0);
    }
    const char *good = "# HELP h h\n# TYPE h histogram\nh_bucket{node=\"1\",le=\"1\"} 1\n"
                       "h_bucket{node=\"1\",le=\"+Inf\"} 1\nh_sum{node=\"1\"} 1\n"
                       "h_count{node=\"1\"} 1\n";
    CHECK_EQ_INT(parse_exposition(good, strlen(good)), 0);
}

TEST_MAIN(TEST_CASE(test_output_parses_and_carries_the_values), TEST_CASE(test_minimal_node),
          TEST_CASE(test_parser_is_strict))
