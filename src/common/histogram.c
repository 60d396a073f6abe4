/* Fixed-bucket histograms (see histogram.h). */
#include "histogram.h"

#include <string.h>

#include "error.h"

int ch_hist_init(struct ch_hist *h, const uint64_t *bounds, size_t n)
{
    memset(h, 0, sizeof *h);
    if (n > CH_HIST_MAX_BOUNDS)
        return CH_EINVAL;
    for (size_t i = 1; i < n; i++)
        if (bounds[i] <= bounds[i - 1])
            return CH_EINVAL;
    if (n > 0)
        memcpy(h->bounds, bounds, n * sizeof *bounds);
    h->n_bounds = n;
    return 0;
}

int ch_hist_init_exp(struct ch_hist *h, uint64_t first, uint64_t factor, size_t n)
{
    uint64_t bounds[CH_HIST_MAX_BOUNDS];
    if (first == 0 || factor < 2 || n > CH_HIST_MAX_BOUNDS) {
        memset(h, 0, sizeof *h);
        return CH_EINVAL;
    }
    uint64_t b = first;
    for (size_t i = 0; i < n; i++) {
        bounds[i] = b;
        if (i + 1 < n && b > UINT64_MAX / factor) {
            memset(h, 0, sizeof *h);
            return CH_EINVAL;
        }
        b *= factor;
    }
    return ch_hist_init(h, bounds, n);
}

void ch_hist_observe(struct ch_hist *h, uint64_t v)
{
    /* binary search for the first bound >= v; n_bounds if none */
    size_t lo = 0, hi = h->n_bounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (h->bounds[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    h->buckets[lo]++;
    h->count++;
    h->sum += v;
}

uint64_t ch_hist_cumulative(const struct ch_hist *h, size_t i)
{
    if (i >= h->n_bounds)
        return h->count;
    uint64_t c = 0;
    for (size_t k = 0; k <= i; k++)
        c += h->buckets[k];
    return c;
}
