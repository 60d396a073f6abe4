/*
 * The latency recorder (see stats.h): a growing array of samples, sorted lazily
 * when a percentile is asked for.
 */
#include "stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

void bench_stats_init(struct bench_stats *s)
{
    memset(s, 0, sizeof *s);
    s->sorted = 1;
}

void bench_stats_free(struct bench_stats *s)
{
    free(s->samples);
    bench_stats_init(s);
}

void bench_stats_reset(struct bench_stats *s)
{
    s->count = 0;
    s->sum = 0;
    s->sorted = 1;
}

int bench_stats_reserve(struct bench_stats *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    if (n > SIZE_MAX / sizeof *s->samples)
        return CH_ENOMEM;
    uint64_t *p = realloc(s->samples, n * sizeof *p);
    if (p == NULL)
        return CH_ENOMEM;
    s->samples = p;
    s->cap = n;
    return 0;
}

int bench_stats_record(struct bench_stats *s, uint64_t value)
{
    if (s->count == s->cap) {
        size_t want = s->cap ? s->cap * 2 : 1024;
        if (want < s->cap || bench_stats_reserve(s, want) != 0)
            return CH_ENOMEM;
    }
    s->samples[s->count++] = value;
    s->sum += value;
    s->sorted = s->count <= 1 || (s->sorted && s->samples[s->count - 2] <= value);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void sort_samples(struct bench_stats *s)
{
    if (!s->sorted && s->count > 1)
        qsort(s->samples, s->count, sizeof *s->samples, cmp_u64);
    s->sorted = 1;
}

uint64_t bench_stats_quantile(struct bench_stats *s, uint64_t num, uint64_t den)
{
    if (s->count == 0 || num == 0 || num > den || den > UINT32_MAX)
        return 0;
    sort_samples(s);
    /* rank = ceil(count * num / den) without overflow: with count = q * den + r,
     * count * num / den = q * num + r * num / den, and r * num < den^2 <= 2^64 */
    uint64_t n = (uint64_t)s->count;
    uint64_t q = n / den, r = n % den;
    uint64_t part = r * num;
    uint64_t rank = q * num + part / den + (part % den != 0);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return s->samples[rank - 1];
}

const uint64_t *bench_stats_sorted(struct bench_stats *s, size_t *n)
{
    *n = s->count;
    if (s->count == 0)
        return NULL;
    sort_samples(s);
    return s->samples;
}

void bench_stats_summarize(struct bench_stats *s, struct bench_summary *out)
{
    memset(out, 0, sizeof *out);
    if (s->count == 0)
        return;
    sort_samples(s);
    out->count = s->count;
    out->min = s->samples[0];
    out->max = s->samples[s->count - 1];
    out->mean = s->sum / s->count;
    out->p50 = bench_stats_quantile(s, 1, 2);
    out->p90 = bench_stats_quantile(s, 9, 10);
    out->p99 = bench_stats_quantile(s, 99, 100);
    out->p999 = bench_stats_quantile(s, 999, 1000);
}

void bench_error_tally(struct bench_error_count codes[BENCH_MAX_ERROR_CODES], size_t *n,
                       const char *code)
{
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < *n; i++) {
            if (strcmp(codes[i].code, code) == 0) {
                codes[i].count++;
                return;
            }
        }
        /* a new code takes a free slot; the last slot is kept for "other" */
        if (*n < BENCH_MAX_ERROR_CODES - 1 || strcmp(code, "other") == 0)
            break;
        code = "other";
    }
    struct bench_error_count *c = &codes[(*n)++];
    snprintf(c->code, sizeof c->code, "%s", code);
    c->count = 1;
}
