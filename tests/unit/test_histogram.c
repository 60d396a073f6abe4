/* Unit tests of the fixed-bucket histograms (src/common/histogram). */
#include <stdint.h>
#include <string.h>

#include "common/error.h"
#include "common/histogram.h"
#include "test.h"

static void test_init_checks_bounds(void)
{
    struct ch_hist h;
    const uint64_t ok[] = {1, 5, 10};
    CHECK_EQ_INT(ch_hist_init(&h, ok, 3), 0);
    CHECK_EQ_INT(h.n_bounds, 3);
    CHECK_EQ_U64(h.count, 0);
    const uint64_t equal[] = {1, 5, 5};
    CHECK_EQ_INT(ch_hist_init(&h, equal, 3), CH_EINVAL);
    CHECK_EQ_INT(h.n_bounds, 0);
    const uint64_t down[] = {10, 5};
    CHECK_EQ_INT(ch_hist_init(&h, down, 2), CH_EINVAL);
    uint64_t many[CH_HIST_MAX_BOUNDS + 1];
    for (size_t i = 0; i < CH_HIST_MAX_BOUNDS + 1; i++)
        many[i] = i + 1;
    CHECK_EQ_INT(ch_hist_init(&h, many, CH_HIST_MAX_BOUNDS + 1), CH_EINVAL);
    CHECK_EQ_INT(ch_hist_init(&h, many, CH_HIST_MAX_BOUNDS), 0);
    CHECK_EQ_INT(ch_hist_init(&h, NULL, 0), 0); /* only the +Inf bucket */
    ch_hist_observe(&h, 42);
    CHECK_EQ_U64(ch_hist_cumulative(&h, 0), 1);
}

static void test_exponential_bounds(void)
{
    struct ch_hist h;
    CHECK_EQ_INT(ch_hist_init_exp(&h, 1, 2, 13), 0);
    CHECK_EQ_INT(h.n_bounds, 13);
    CHECK_EQ_U64(h.bounds[0], 1);
    CHECK_EQ_U64(h.bounds[12], 4096);
    CHECK_EQ_INT(ch_hist_init_exp(&h, 0, 2, 4), CH_EINVAL);
    CHECK_EQ_INT(ch_hist_init_exp(&h, 1, 1, 4), CH_EINVAL);
    CHECK_EQ_INT(ch_hist_init_exp(&h, UINT64_MAX / 2, 4, 3), CH_EINVAL); /* overflow */
    CHECK_EQ_INT(ch_hist_init_exp(&h, UINT64_MAX / 2, 4, 1), 0);
}

/* Bounds are inclusive: a value equal to a bound counts in that bucket. */
static void test_observe_edges(void)
{
    struct ch_hist h;
    const uint64_t b[] = {10, 20, 30};
    CHECK_EQ_INT(ch_hist_init(&h, b, 3), 0);
    const uint64_t v[] = {0, 10, 11, 20, 29, 30, 31, UINT64_MAX};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        ch_hist_observe(&h, v[i]);
    CHECK_EQ_U64(h.buckets[0], 2); /* 0, 10 */
    CHECK_EQ_U64(h.buckets[1], 2); /* 11, 20 */
    CHECK_EQ_U64(h.buckets[2], 2); /* 29, 30 */
    CHECK_EQ_U64(h.buckets[3], 2); /* 31, max */
    CHECK_EQ_U64(ch_hist_cumulative(&h, 0), 2);
    CHECK_EQ_U64(ch_hist_cumulative(&h, 1), 4);
    CHECK_EQ_U64(ch_hist_cumulative(&h, 2), 6);
    CHECK_EQ_U64(ch_hist_cumulative(&h, 3), 8);
    CHECK_EQ_U64(ch_hist_cumulative(&h, 99), 8);
    CHECK_EQ_U64(h.count, 8);
    CHECK_EQ_U64(h.sum, (uint64_t)(0 + 10 + 11 + 20 + 29 + 30 + 31) + UINT64_MAX);
}

/* Against a linear scan, over pseudo-random values (fixed seed). */
static void test_matches_linear_scan(void)
{
    struct ch_hist h;
    CHECK_EQ_INT(ch_hist_init_exp(&h, 3, 3, 20), 0);
    uint64_t want[CH_HIST_MAX_BOUNDS + 1];
    memset(want, 0, sizeof want);
    uint64_t x = 0x9e3779b97f4a7c15u, sum = 0;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t v = x >> (x % 64);
        size_t k = 0;
        while (k < h.n_bounds && h.bounds[k] < v)
            k++;
        want[k]++;
        sum += v;
        ch_hist_observe(&h, v);
    }
    for (size_t k = 0; k <= h.n_bounds; k++)
        CHECK_EQ_U64(h.buckets[k], want[k]);
    CHECK_EQ_U64(h.sum, sum);
    uint64_t prev = 0;
    for (size_t k = 0; k <= h.n_bounds; k++) {
        CHECK(ch_hist_cumulative(&h, k) >= prev);
        prev = ch_hist_cumulative(&h, k);
    }
    CHECK_EQ_U64(prev, 100000);
}

TEST_MAIN(TEST_CASE(test_init_checks_bounds), TEST_CASE(test_exponential_bounds),
          TEST_CASE(test_observe_edges), TEST_CASE(test_matches_linear_scan))
