/* Fixed-bucket histograms of integer observations (latencies, batch sizes) for metrics. */
#ifndef CHORUS_HISTOGRAM_H
#define CHORUS_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#define CH_HIST_MAX_BOUNDS 24

/*
 * Observations are unsigned integers in the caller's unit (nanoseconds, commands
 * per batch); the bucket bounds are inclusive upper bounds in the same unit, in
 * ascending order, with an implicit +Inf bucket after the last.  Buckets are kept
 * non-cumulative; ch_hist_cumulative gives Prometheus' `le` counts.  No
 * allocation: a histogram is a plain value that can be embedded and copied.
 */
struct ch_hist {
    size_t n_bounds;
    uint64_t bounds[CH_HIST_MAX_BOUNDS];
    uint64_t buckets[CH_HIST_MAX_BOUNDS + 1]; /* buckets[n_bounds]: above the last bound */
    uint64_t count;
    uint64_t sum; /* wraps around after 2^64 (centuries of nanoseconds) */
};

/* Sets the bounds (n <= CH_HIST_MAX_BOUNDS, strictly ascending) and clears the
 * counts.  0 or CH_EINVAL, which leaves h empty with no bounds (one +Inf bucket). */
int ch_hist_init(struct ch_hist *h, const uint64_t *bounds, size_t n);

/* Bounds first, first * factor, first * factor^2, ... (n of them, factor >= 2). */
int ch_hist_init_exp(struct ch_hist *h, uint64_t first, uint64_t factor, size_t n);

/* Counts one observation in the first bucket whose bound is >= v. */
void ch_hist_observe(struct ch_hist *h, uint64_t v);

/* Observations <= bounds[i]; for i >= n_bounds (the +Inf bucket) the total count. */
uint64_t ch_hist_cumulative(const struct ch_hist *h, size_t i);

#endif
