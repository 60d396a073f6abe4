/* Unit tests of chorus-bench's latency recorder (src/bench/stats). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench/stats.h"
#include "common/error.h"
#include "test.h"

/* An empty recorder answers 0 for everything and has no sorted view. */
static void test_empty(void)
{
    struct bench_stats s;
    bench_stats_init(&s);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 999, 1000), 0);
    size_t n = 99;
    CHECK(bench_stats_sorted(&s, &n) == NULL);
    CHECK_EQ_INT(n, 0);
    struct bench_summary sum;
    bench_stats_summarize(&s, &sum);
    CHECK_EQ_INT(sum.count, 0);
    CHECK_EQ_U64(sum.p50, 0);
    CHECK_EQ_U64(sum.max, 0);
    bench_stats_free(&s);
}

/* One sample is every percentile. */
static void test_single(void)
{
    struct bench_stats s;
    bench_stats_init(&s);
    CHECK_EQ_INT(bench_stats_record(&s, 42), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 1000), 42);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 42);
    CHECK_EQ_U64(bench_stats_quantile(&s, 999, 1000), 42);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 1), 42);
    bench_stats_free(&s);
}

/* Fractions outside (0, 1] or with a denominator over 2^32 - 1 answer 0. */
static void test_bad_fractions(void)
{
    struct bench_stats s;
    bench_stats_init(&s);
    CHECK_EQ_INT(bench_stats_record(&s, 7), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 0, 100), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 101, 100), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 0), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, (uint64_t)UINT32_MAX + 1), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, UINT32_MAX), 7);
    bench_stats_free(&s);
}

/* Nearest rank: rank ceil(p * n), 1-based, on exact fractions. */
static void test_nearest_rank(void)
{
    struct bench_stats s;
    bench_stats_init(&s);
    /* 1..100 recorded in descending order: the recorder sorts */
    for (uint64_t v = 100; v >= 1; v--)
        CHECK_EQ_INT(bench_stats_record(&s, v), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 50);       /* ceil(50) */
    CHECK_EQ_U64(bench_stats_quantile(&s, 99, 100), 99);    /* ceil(99), not the max */
    CHECK_EQ_U64(bench_stats_quantile(&s, 999, 1000), 100); /* ceil(99.9) */
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 100), 1);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 1000), 1); /* ceil(0.1) = 1 */
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 1), 100);
    CHECK_EQ_U64(bench_stats_quantile(&s, 9, 10), 90);
    bench_stats_free(&s);

    /* n = 1000: p99 is the 990th, p999 the 999th smallest */
    bench_stats_init(&s);
    for (uint64_t v = 1; v <= 1000; v++)
        CHECK_EQ_INT(bench_stats_record(&s, v * 10), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 99, 100), 9900);
    CHECK_EQ_U64(bench_stats_quantile(&s, 999, 1000), 9990);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 5000);
    bench_stats_free(&s);

    /* odd n: the median of 1..5 is 3; of 1..4 it is 2 (ceil(2) = 2) */
    bench_stats_init(&s);
    for (uint64_t v = 1; v <= 5; v++)
        CHECK_EQ_INT(bench_stats_record(&s, v), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 3);
    bench_stats_reset(&s);
    for (uint64_t v = 1; v <= 4; v++)
        CHECK_EQ_INT(bench_stats_record(&s, v), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 2);
    CHECK_EQ_U64(bench_stats_quantile(&s, 99, 100), 4); /* ceil(3.96) */
    bench_stats_free(&s);
}

/* Recording after a query re-sorts; ties and extreme values are kept as they are. */
static void test_record_after_query(void)
{
    struct bench_stats s;
    bench_stats_init(&s);
    const uint64_t v[] = {5, 5, 5, 1, UINT64_MAX, 0};
    for (size_t i = 0; i < 3; i++)
        CHECK_EQ_INT(bench_stats_record(&s, v[i]), 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 5);
    for (size_t i = 3; i < 6; i++)
        CHECK_EQ_INT(bench_stats_record(&s, v[i]), 0);
    size_t n;
    const uint64_t *sorted = bench_stats_sorted(&s, &n);
    CHECK_EQ_INT(n, 6);
    const uint64_t want[] = {0, 1, 5, 5, 5, UINT64_MAX};
    for (size_t i = 0; i < 6; i++)
        CHECK_EQ_U64(sorted[i], want[i]);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 5);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 1), UINT64_MAX);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 6), 0);
    bench_stats_free(&s);
}

static void test_summary(void)
{
    struct bench_stats s;
    bench_stats_init(&s);
    for (uint64_t v = 1; v <= 2000; v++)
        CHECK_EQ_INT(bench_stats_record(&s, v), 0);
    struct bench_summary sum;
    bench_stats_summarize(&s, &sum);
    CHECK_EQ_INT(sum.count, 2000);
    CHECK_EQ_U64(sum.min, 1);
    CHECK_EQ_U64(sum.max, 2000);
    CHECK_EQ_U64(sum.mean, 1000); /* 2001000 / 2000 = 1000.5, rounded down */
    CHECK_EQ_U64(sum.p50, 1000);
    CHECK_EQ_U64(sum.p90, 1800);
    CHECK_EQ_U64(sum.p99, 1980);
    CHECK_EQ_U64(sum.p999, 1998);
    CHECK(sum.p50 <= sum.p99 && sum.p99 <= sum.p999 && sum.p999 <= sum.max);
    bench_stats_free(&s);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Against a reference computed from a separately sorted copy, over pseudo-random
 * samples and sizes (fixed seed): every answer is one of the samples, at its rank. */
static void test_matches_reference(void)
{
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t n = 1; n <= 3000; n += 37) {
        struct bench_stats s;
        bench_stats_init(&s);
        uint64_t *copy = malloc(n * sizeof *copy);
        CHECK(copy != NULL);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            copy[i] = x % 100000; /* many ties */
            CHECK_EQ_INT(bench_stats_record(&s, copy[i]), 0);
        }
        qsort(copy, n, sizeof *copy, cmp_u64);
        const uint64_t fr[][2] = {{1, 2},      {9, 10}, {99, 100},
                                  {999, 1000}, {1, 3},  {2, 3}};
        for (size_t f = 0; f < sizeof fr / sizeof fr[0]; f++) {
            /* smallest rank r with r / n >= num / den */
            size_t r = 1;
            while ((uint64_t)r * fr[f][1] < (uint64_t)n * fr[f][0])
                r++;
            uint64_t got = bench_stats_quantile(&s, fr[f][0], fr[f][1]);
            CHECK_EQ_U64(got, copy[r - 1]);
        }
        free(copy);
        bench_stats_free(&s);
    }
}

/* Growing past the first allocation keeps every sample; reserve is idempotent. */
static void test_growth_and_reserve(void)
{
    struct bench_stats s;
    bench_stats_init(&s);
    CHECK_EQ_INT(bench_stats_reserve(&s, 10), 0);
    CHECK_EQ_INT(s.cap, 10);
    CHECK_EQ_INT(bench_stats_reserve(&s, 5), 0);
    CHECK_EQ_INT(s.cap, 10);
    CHECK_EQ_INT(bench_stats_reserve(&s, SIZE_MAX), CH_ENOMEM);
    CHECK_EQ_INT(s.cap, 10);
    for (uint64_t v = 0; v < 100000; v++)
        CHECK_EQ_INT(bench_stats_record(&s, 100000 - v), 0);
    CHECK_EQ_INT(s.count, 100000);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 50000);
    CHECK_EQ_U64(bench_stats_quantile(&s, 999, 1000), 99900);
    bench_stats_reset(&s);
    CHECK_EQ_INT(s.count, 0);
    CHECK_EQ_U64(bench_stats_quantile(&s, 1, 2), 0);
    bench_stats_free(&s);
    CHECK(s.samples == NULL);
}

/* Error codes: one slot each; when only the last slot is left, new codes go to
 * "other" (and "other" itself may take it). */
static void test_error_tally(void)
{
    struct bench_error_count codes[BENCH_MAX_ERROR_CODES];
    size_t n = 0;
    bench_error_tally(codes, &n, "timeout");
    bench_error_tally(codes, &n, "timeout");
    CHECK(n == 1 && strcmp(codes[0].code, "timeout") == 0 && codes[0].count == 2);
    char name[16];
    for (int i = 0; i < BENCH_MAX_ERROR_CODES + 5; i++) {
        snprintf(name, sizeof name, "code%d", i);
        bench_error_tally(codes, &n, name);
    }
    CHECK(n == BENCH_MAX_ERROR_CODES);
    CHECK(strcmp(codes[BENCH_MAX_ERROR_CODES - 1].code, "other") == 0);
    /* 1 + (BENCH_MAX_ERROR_CODES - 2) named codes fit before the reserved slot */
    CHECK(codes[BENCH_MAX_ERROR_CODES - 1].count == (size_t)(BENCH_MAX_ERROR_CODES + 5) -
                                                        (BENCH_MAX_ERROR_CODES - 2));
    bench_error_tally(codes, &n, "timeout"); /* known codes still count as themselves */
    CHECK(codes[0].count == 3 && n == BENCH_MAX_ERROR_CODES);
}

TEST_MAIN(TEST_CASE(test_empty), TEST_CASE(test_single), TEST_CASE(test_bad_fractions),
          TEST_CASE(test_nearest_rank), TEST_CASE(test_record_after_query),
          TEST_CASE(test_summary), TEST_CASE(test_matches_reference),
          TEST_CASE(test_growth_and_reserve), TEST_CASE(test_error_tally))
