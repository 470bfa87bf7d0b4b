/* stats: np.mean and np.percentile ("linear") in C, with selection (or, for integer
 * microseconds, counting) instead of a sort.
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

/* The ranks whose elements the percentile keys need (each key the elements of rank
 * floor(index) and the one after), ascending and distinct, and each key's index. */
typedef struct pct_plan {
    size_t ranks[2 * STATS_NKEYS], nr;
    size_t lo_of[STATS_NKEYS];
    double t_of[STATS_NKEYS];
} pct_plan;

static void pct_plan_make(size_t n, pct_plan *p)
{
    p->nr = 0;
    for (int key = STATS_P0_1; key <= STATS_P99_9; key++) {
        virtual_index(n, stats_key_q[key], &p->lo_of[key], &p->t_of[key]);
        for (size_t r = p->lo_of[key]; r <= p->lo_of[key] + 1 && r < n; r++)
            if (p->nr == 0 || r > p->ranks[p->nr - 1]) /* keys ascend, so ranks do */
                p->ranks[p->nr++] = r;
    }
}

/* The percentile keys from at[i], the value of rank p->ranks[i]. */
static void pct_plan_finish(const pct_plan *p, size_t n, const double *at, stats_block *out)
{
    size_t i = 0;
    for (int key = STATS_P0_1; key <= STATS_P99_9; key++) {
        while (p->ranks[i] < p->lo_of[key])
            i++;
        double a = at[i], b = p->lo_of[key] + 1 < n ? at[i + 1] : a;
        out->v[key] = lerp(a, b, p->t_of[key]);
    }
}

static void block_init(stats_block *out, size_t n)
{
    out->valid = n > 0;
    for (int i = 0; i < STATS_NKEYS; i++)
        out->v[i] = NAN;
}

#define STG_T double
#define STG_TO_D(x) (x)
#define STG_NAME(n) n##_d
#include "stats_generic.h"
#undef STG_T
#undef STG_TO_D
#undef STG_NAME

/* Microseconds as the seconds lifecycle.c's secs() makes of them: the same division. */
#define US_TO_S(x) ((double)(x) / (double)1000000)
#define STG_T uint32_t
#define STG_TO_D(x) US_TO_S(x)
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
    block_init(out, n);
    if (n == 0)
        return;
    out->v[STATS_MEAN] = pairwise_sum_d(v, n) / (double)n;
    double mn = v[0], mx = v[0];
    for (size_t i = 1; i < n; i++) {
        if (v[i] < mn)
            mn = v[i];
        if (v[i] > mx)
            mx = v[i];
    }
    out->v[STATS_MIN] = mn;
    out->v[STATS_MAX] = mx;
    pct_plan p;
    pct_plan_make(n, &p);
    select_ranks_d(v, n, p.ranks, p.nr);
    double at[2 * STATS_NKEYS];
    for (size_t i = 0; i < p.nr; i++)
        at[i] = v[p.ranks[i]];
    pct_plan_finish(&p, n, at, out);
}

/* Values below this are counted in a table indexed by value (gaps under a second); the
 * rare larger ones are copied out and selected among. */
#define US_DIRECT (1u << 20)

bool stats_summarize_us(const uint32_t *v, size_t n, stats_block *out)
{
    block_init(out, n);
    if (n == 0)
        return true;
    out->v[STATS_MEAN] = pairwise_sum_us(v, n) / (double)n;
    uint32_t mn = v[0], mx = v[0];
    size_t n_big = 0;
    for (size_t i = 0; i < n; i++) {
        mn = v[i] < mn ? v[i] : mn;
        mx = v[i] > mx ? v[i] : mx;
        n_big += v[i] >= US_DIRECT;
    }
    out->v[STATS_MIN] = US_TO_S(mn);
    out->v[STATS_MAX] = US_TO_S(mx);
    /* count[x - mn] for the values x < US_DIRECT: only the span the values cover */
    size_t span = mn < US_DIRECT ? (mx < US_DIRECT ? mx : US_DIRECT - 1) - mn + 1 : 0;
    size_t *count = calloc(span ? span : 1, sizeof *count);
    uint32_t *big = malloc((n_big ? n_big : 1) * sizeof *big);
    if (!count || !big) {
        free(count), free(big);
        block_init(out, 0);
        return false;
    }
    for (size_t i = 0, k = 0; i < n; i++) {
        if (v[i] < US_DIRECT)
            count[v[i] - mn]++;
        else
            big[k++] = v[i];
    }
    pct_plan p;
    pct_plan_make(n, &p);
    double at[2 * STATS_NKEYS];
    size_t i = 0, below = 0;   /* below: how many values precede count[x] */
    for (size_t x = 0; x < span && i < p.nr; x++) {
        below += count[x];
        for (; i < p.nr && p.ranks[i] < below; i++)
            at[i] = US_TO_S(mn + (uint32_t)x);
    }
    /* the remaining ranks lie among the big values, which all exceed the counted ones */
    size_t small = n - n_big, rb[2 * STATS_NKEYS] = {0};
    for (size_t j = i; j < p.nr; j++)
        rb[j - i] = p.ranks[j] - small;
    select_ranks_us(big, n_big, rb, p.nr - i);
    for (size_t j = i; j < p.nr; j++)
        at[j] = US_TO_S(big[rb[j - i]]);
    pct_plan_finish(&p, n, at, out);
    free(count), free(big);
    return true;
}
