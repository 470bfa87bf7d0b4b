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

/* NumPy's pairwise_sum for doubles: 8 accumulators up to a 128-item block, halves
 * (rounded down to a multiple of 8) above it. */
static double pairwise_sum(const double *a, size_t n)
{
    if (n < 8) {
        double res = 0.;
        for (size_t i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        size_t i;
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i];
        return res;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

double stats_mean(const double *v, size_t n)
{
    if (n == 0)
        return NAN;
    return pairwise_sum(v, n) / (double)n;
}

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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void swap(double *a, size_t i, size_t j)
{
    double t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* Puts the elements of rank ranks[0..nr) (ascending, within [lo, hi)) in place, as a
 * full sort would: one three-way partition serves every rank at once, and each side
 * recurses only with the ranks that fall in it, so a block's 24 ranks cost a few passes,
 * not 24. Three-way partitioning keeps runs of equal values (simulated inter-token gaps
 * are integer microseconds, mostly a handful of step times) linear; past the depth
 * budget a range is simply sorted. */
static void multiselect(double *a, size_t lo, size_t hi, const size_t *ranks, size_t nr, int budget)
{
    while (nr > 0 && hi - lo > 1) {
        if (budget-- == 0 || hi - lo <= 16) {
            qsort(a + lo, hi - lo, sizeof *a, cmp_double);
            return;
        }
        size_t mid = lo + (hi - lo) / 2;
        double x = a[lo], y = a[mid], z = a[hi - 1];
        double p = (x < y) ? ((y < z) ? y : (x < z ? z : x)) : ((x < z) ? x : (y < z ? z : y));
        /* a[lo..lt) < p, a[lt..i) == p, a[gt..hi) > p */
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            if (a[i] < p)
                swap(a, lt++, i++);
            else if (a[i] > p)
                swap(a, i, --gt);
            else
                i++;
        }
        size_t nl = 0, nm;
        while (nl < nr && ranks[nl] < lt)
            nl++;
        nm = nl;
        while (nm < nr && ranks[nm] < gt)
            nm++;
        /* recurse into the smaller rank set, loop on the other */
        if (nl < nr - nm) {
            multiselect(a, lo, lt, ranks, nl, budget);
            ranks += nm, nr -= nm, lo = gt;
        } else {
            multiselect(a, gt, hi, ranks + nm, nr - nm, budget);
            nr = nl, hi = lt;
        }
    }
}

void stats_summarize(double *v, size_t n, stats_block *out)
{
    out->valid = n > 0;
    for (int i = 0; i < STATS_NKEYS; i++)
        out->v[i] = NAN;
    if (n == 0)
        return;
    out->v[STATS_MEAN] = stats_mean(v, n);
    double mn = v[0], mx = v[0];
    for (size_t i = 1; i < n; i++) {
        if (v[i] < mn)
            mn = v[i];
        if (v[i] > mx)
            mx = v[i];
    }
    out->v[STATS_MIN] = mn;
    out->v[STATS_MAX] = mx;
    /* Each percentile needs the elements of rank floor(index) and the one after. */
    size_t ranks[2 * STATS_NKEYS], nr = 0, lo_of[STATS_NKEYS];
    double t_of[STATS_NKEYS];
    for (int key = STATS_P0_1; key <= STATS_P99_9; key++) {
        virtual_index(n, stats_key_q[key], &lo_of[key], &t_of[key]);
        for (size_t r = lo_of[key]; r <= lo_of[key] + 1 && r < n; r++)
            if (nr == 0 || r > ranks[nr - 1]) /* keys ascend, so ranks do */
                ranks[nr++] = r;
    }
    int budget = 2;
    for (size_t m = n; m > 1; m >>= 1)
        budget += 2;
    multiselect(v, 0, n, ranks, nr, budget);
    for (int key = STATS_P0_1; key <= STATS_P99_9; key++) {
        size_t lo = lo_of[key];
        out->v[key] = lerp(v[lo], lo + 1 < n ? v[lo + 1] : v[lo], t_of[key]);
    }
}
