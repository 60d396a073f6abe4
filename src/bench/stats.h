/* A latency recorder for chorus-bench: keeps every sample, answers exact percentiles. */
#ifndef CHORUS_BENCH_STATS_H
#define CHORUS_BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Samples are unsigned integers in the caller's unit (chorus-bench records
 * nanoseconds).  Every sample is kept, so percentiles are exact order statistics
 * of what was measured, not bucket estimates: a benchmark run holds at most a few
 * million samples (8 bytes each).  The recorder reads no clock; the caller
 * measures and hands values in.
 *
 * Percentiles use the nearest-rank definition: the p-quantile of n samples is the
 * smallest sample such that at least p * n samples are <= it, i.e. the sample of
 * rank ceil(p * n) (1-based) in ascending order.  p is given as a fraction
 * num/den (p99 = 99/100, p999 = 999/1000) so that ranks are computed in integer
 * arithmetic, with no rounding surprises at p * n = whole numbers.
 */
struct bench_stats {
    uint64_t *samples; /* owned; samples[0..count) */
    size_t count;
    size_t cap;
    int sorted; /* samples are in ascending order (cleared by every record) */
    uint64_t sum;
};

/* Summary figures of a recorder; all zero (count 0) when it holds no samples. */
struct bench_summary {
    size_t count;
    uint64_t min, max, mean;
    uint64_t p50, p90, p99, p999;
};

/* An empty recorder (no allocation until the first sample). */
void bench_stats_init(struct bench_stats *s);

/* Releases the samples; the recorder is empty again and may be reused. */
void bench_stats_free(struct bench_stats *s);

/* Forgets every sample, keeping the memory. */
void bench_stats_reset(struct bench_stats *s);

/* Reserves room for n samples in all (0 or CH_ENOMEM, which changes nothing). */
int bench_stats_reserve(struct bench_stats *s, size_t n);

/* Adds one sample: 0, or CH_ENOMEM (the sample is not recorded, the recorder is
 * unchanged). */
int bench_stats_record(struct bench_stats *s, uint64_t value);

/* The num/den quantile by nearest rank (0 < num <= den <= 2^32 - 1); 0 when the
 * recorder is empty or the fraction is out of range.  Sorts the samples on the
 * first call after a record: O(n log n) once, then O(1). */
uint64_t bench_stats_quantile(struct bench_stats *s, uint64_t num, uint64_t den);

/* The samples in ascending order (count of them in *n), e.g. for a plot; NULL
 * when empty.  Valid until the next record, reset or free. */
const uint64_t *bench_stats_sorted(struct bench_stats *s, size_t *n);

#define BENCH_MAX_ERROR_CODES 16

struct bench_error_count {
    char code[40]; /* a gateway error code, or "timeout", "malformed", ... */
    size_t count;
};

/* Counts one error under its code in codes[0..*n): a new code takes a free slot;
 * once only the last slot is left, codes not seen yet count as "other". */
void bench_error_tally(struct bench_error_count codes[BENCH_MAX_ERROR_CODES], size_t *n,
                       const char *code);

/* Fills *out with count, min, max, mean (rounded down), p50, p90, p99, p999. */
void bench_stats_summarize(struct bench_stats *s, struct bench_summary *out);

#endif
