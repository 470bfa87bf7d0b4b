/* stats: the summary statistics inference-perf prints, computed the way NumPy does,
 * so a block from ./sim reads exactly like one from a real run.
 *
 * mean is np.mean (pairwise summation, same blocking as NumPy, so the last digit
 * agrees); percentiles are np.percentile's default "linear" method, including its
 * two-sided interpolation (a + d*t below t = 0.5, b - d*(1-t) from 0.5 up).
 * Order statistics are found by selection, not a full sort, and for the pooled
 * inter-token gaps (tens of millions of values in a ladder run) by counting them as they
 * stream past (stats_summarize_us_stream). */
#ifndef KVROUTE_SIM_STATS_H
#define KVROUTE_SIM_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys of a statistics block, in inference-perf's order. */
enum {
    STATS_MEAN, STATS_MIN, STATS_P0_1, STATS_P1, STATS_P5, STATS_P10, STATS_P25, STATS_MEDIAN,
    STATS_P75, STATS_P90, STATS_P95, STATS_P99, STATS_P99_9, STATS_MAX,
    STATS_NKEYS
};

typedef struct stats_block {
    bool valid;                 /* false when there were no items (inference-perf: null) */
    double v[STATS_NKEYS];
} stats_block;

/* "mean", "min", "p0.1", ... "median", ... "p99.9", "max" */
extern const char *const stats_key_names[STATS_NKEYS];
/* The same in llm-d benchmark report v0.1 spelling: "p0p1", "p50", "p99p9". */
extern const char *const stats_key_names_br[STATS_NKEYS];
/* The percentile each key stands for (0 for mean; min = 0, max = 100). */
extern const double stats_key_q[STATS_NKEYS];

/* np.mean: NumPy's pairwise sum divided by n. n = 0 gives NaN. */
double stats_mean(const double *v, size_t n);
/* Sorts v[0..n) ascending, for stats_percentile_sorted. */
void stats_sort(double *v, size_t n);
/* np.percentile(v, q) ("linear") on an ascending array. q in [0, 100]; n > 0. */
double stats_percentile_sorted(const double *sorted, size_t n, double q);
/* Fills a block from v[0..n). Reorders v (selection); n = 0 gives valid = false. */
void stats_summarize(double *v, size_t n, stats_block *out);
/* The same block, in seconds, for n integer microsecond values (the inter-token gaps of
 * a set) that next(ctx, buf, k) writes, k <= 128 at a time, in the set's order: every
 * value equal to stats_summarize's on the doubles v / 1e6. The values are not stored:
 * the mean is NumPy's pairwise sum taken as they arrive (the same split, so the same
 * additions), the order statistics come from counting them (a table by value for
 * 0 .. 2^20 - 1 us, selection among the rare others), so the tens of millions of gaps of
 * a ladder run need no array. next is called until exactly n values were taken.
 * false (and valid = false) when out of memory. */
bool stats_summarize_us_stream(size_t n, void (*next)(void *ctx, int64_t *buf, size_t k), void *ctx,
                               stats_block *out);

#endif
