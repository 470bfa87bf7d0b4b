/* stats: np.mean and np.percentile ("linear") in C, with selection instead of a sort.
 * See stats.h for why the arithmetic copies NumPy's exactly. */
#include "stats.h"

#include <math.h>
#include <stdlib.h>

const char *const stats_key_names[STATS_NKEYS] = {
    "mean", "min", "p0.1", "p1", "p5", "p10", "p25", "median", "p75", "p90", "p95", "p99", "p99.9", "max",
};
const char *const stats_key_names_br[STATS_NKEYS] = {
    "mean", "min", "p0p1", "p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p99p9", "max",
};
const double stats_key_q[STATS_NKEYS] = {
    0, 0, 0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100,
};

/* np.percentile's _lerp: exact at both ends, the form switching at t = 0.5. */
static double lerp(double a, double b, double t)
{
    double d = b - a;
    return t >= 0.5 ? b - d * (1 - t) : a + d * t;
}

/* Virtual index (n-1)*q/100 split into floor and fraction, as np.percentile does. */
static void virtual_index(size_t n, double q, size_t *lo, double *t)
{
    double vi = (double)(n - 1) * (q / 100.0);
    if (vi >= (double)(n - 1)) {
        *lo = n - 1;
        *t = 0;
        return;
    }
    if (vi < 0)
        vi = 0;
    double f = floor(vi);
    *lo = (size_t)f;
    *t = vi - f;
}

double stats_percentile_sorted(const double *sorted, size_t n, double q)
{
    size_t lo;
    double t;
    virtual_index(n, q, &lo, &t);
    double b = lo + 1 < n ? sorted[lo + 1] : sorted[lo];
    return lerp(sorted[lo], b, t);
}

#define STG_T double
#define STG_TO_D(x) (x)
#define STG_NAME(n) n##_d
#include "stats_generic.h"
#undef STG_T
#undef STG_TO_D
#undef STG_NAME

/* Microseconds as the seconds lifecycle.c's secs() makes of them: the same division. */
#define STG_T uint32_t
#define STG_TO_D(x) ((double)(x) / (double)1000000)
#define STG_NAME(n) n##_us
#include "stats_generic.h"
#undef STG_T
#undef STG_TO_D
#undef STG_NAME

double stats_mean(const double *v, size_t n)
{
    if (n == 0)
        return NAN;
    return pairwise_sum_d(v, n) / (double)n;
}

void stats_summarize(double *v, size_t n, stats_block *out)
{
    summarize_d(v, n, out);
}

void stats_summarize_us(uint32_t *v, size_t n, stats_block *out)
{
    summarize_us(v, n, out);
}
