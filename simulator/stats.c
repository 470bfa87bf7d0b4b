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

#define PAIRWISE_LEAF 128   /* NumPy's pairwise block: the most values one leaf sums */

/* How NumPy's pairwise_sum splits n > PAIRWISE_LEAF values: the left half, rounded down to a
 * multiple of 8 (pairwise_sum and the streamed us_sum must split alike). */
static size_t pairwise_left(size_t n)
{
    size_t n2 = n / 2;
    return n2 - n2 % 8;
}

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
    if (n <= PAIRWISE_LEAF) {
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
    size_t n2 = pairwise_left(n);
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void stats_sort(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_d);
}

static void swap_d(double *a, size_t i, size_t j)
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
            qsort(a + lo, hi - lo, sizeof *a, cmp_d);
            return;
        }
        size_t mid = lo + (hi - lo) / 2;
        double x = a[lo], y = a[mid], z = a[hi - 1];
        double p = (x < y) ? ((y < z) ? y : (x < z ? z : x)) : ((x < z) ? x : (y < z ? z : y));
        /* a[lo..lt) < p, a[lt..i) == p, a[gt..hi) > p */
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            if (a[i] < p)
                swap_d(a, lt++, i++);
            else if (a[i] > p)
                swap_d(a, i, --gt);
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

/* Puts the elements of rank ranks[0..nr) (ascending, below n) of v[0..n) in place, as a
 * full sort would; the depth budget is about 2 log2 n partitions before sorting. */
static void select_ranks(double *v, size_t n, const size_t *ranks, size_t nr)
{
    int budget = 2;
    for (size_t m = n; m > 1; m >>= 1)
        budget += 2;
    multiselect(v, 0, n, ranks, nr, budget);
}

/* Microseconds as the seconds lifecycle.c's secs() makes of them: the same division. */
#define US_TO_S(x) ((double)(x) / (double)1000000)

double stats_mean(const double *v, size_t n)
{
    if (n == 0)
        return NAN;
    return pairwise_sum(v, n) / (double)n;
}

void stats_summarize(double *v, size_t n, stats_block *out)
{
    block_init(out, n);
    if (n == 0)
        return;
    out->v[STATS_MEAN] = pairwise_sum(v, n) / (double)n;
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
    select_ranks(v, n, p.ranks, p.nr);
    double at[2 * STATS_NKEYS];
    for (size_t i = 0; i < p.nr; i++)
        at[i] = v[p.ranks[i]];
    pct_plan_finish(&p, n, at, out);
}

/* Integer microseconds in [0, US_DIRECT) (gaps under a second: nearly all) are counted
 * in a table by value; the others (negative, or a second and more) are kept as seconds
 * and selected among. */
#define US_DIRECT ((int64_t)1 << 20)

typedef struct us_stream {
    void (*next)(void *ctx, int64_t *buf, size_t k);
    void *ctx;
    size_t *count;                     /* count[x] for x in [0, US_DIRECT) */
    double *out;                       /* the values outside the table, in seconds */
    size_t n_out, cap_out, n_neg;      /* n_neg: how many of them are negative */
    int64_t mn, mx;
    bool ok;
} us_stream;

static void us_keep_out(us_stream *s, int64_t x)
{
    if (s->n_out == s->cap_out) {
        size_t cap = s->cap_out ? 2 * s->cap_out : 64;
        double *o = realloc(s->out, cap * sizeof *o);
        if (!o) {
            s->ok = false;
            return;
        }
        s->out = o, s->cap_out = cap;
    }
    s->out[s->n_out++] = US_TO_S(x);
    s->n_neg += x < 0;
}

/* The next k <= PAIRWISE_LEAF values: counted or kept, and summed as NumPy sums a leaf. */
static double us_leaf(us_stream *s, size_t k)
{
    int64_t b[PAIRWISE_LEAF];
    double d[PAIRWISE_LEAF];
    s->next(s->ctx, b, k);
    for (size_t i = 0; i < k; i++) {
        int64_t x = b[i];
        s->mn = x < s->mn ? x : s->mn;
        s->mx = x > s->mx ? x : s->mx;
        if (x >= 0 && x < US_DIRECT)
            s->count[x]++;
        else
            us_keep_out(s, x);
        d[i] = US_TO_S(x);
    }
    return pairwise_sum(d, k);
}

/* pairwise_sum's recursion over values that arrive in order: the same split, so the same
 * leaves and the same additions (the left half is read, and summed, first). */
static double us_sum(us_stream *s, size_t n)
{
    if (n <= PAIRWISE_LEAF)
        return us_leaf(s, n);
    size_t n2 = pairwise_left(n);
    double left = us_sum(s, n2);
    return left + us_sum(s, n - n2);
}

bool stats_summarize_us_stream(size_t n, void (*next)(void *ctx, int64_t *buf, size_t k), void *ctx,
                               stats_block *out)
{
    block_init(out, n);
    if (n == 0)
        return true;
    us_stream s = {.next = next, .ctx = ctx, .count = calloc(US_DIRECT, sizeof *s.count), .mn = INT64_MAX,
                   .mx = INT64_MIN, .ok = true};
    if (!s.count) {
        block_init(out, 0);
        return false;
    }
    double sum = us_sum(&s, n);
    if (!s.ok) {
        free(s.count), free(s.out);
        block_init(out, 0);
        return false;
    }
    out->v[STATS_MEAN] = sum / (double)n;
    out->v[STATS_MIN] = US_TO_S(s.mn);
    out->v[STATS_MAX] = US_TO_S(s.mx);
    /* ranks below n_neg are among the negative values, ranks from n_neg + n_tab on among
     * the large ones; those between are the table's */
    size_t n_tab = n - s.n_out;
    pct_plan p;
    pct_plan_make(n, &p);
    size_t rb[2 * STATS_NKEYS], nrb = 0;
    for (size_t i = 0; i < p.nr; i++) {
        size_t r = p.ranks[i];
        if (r < s.n_neg || r >= s.n_neg + n_tab)
            rb[nrb++] = r < s.n_neg ? r : r - n_tab;
    }
    select_ranks(s.out, s.n_out, rb, nrb);
    double at[2 * STATS_NKEYS];
    int64_t x = s.mn > 0 ? s.mn : 0;   /* the smallest value the table can hold */
    size_t below = s.n_neg, ib = 0;    /* below: how many values precede count[x] */
    for (size_t i = 0; i < p.nr; i++) {
        size_t r = p.ranks[i];
        if (r < s.n_neg || r >= s.n_neg + n_tab) {
            at[i] = s.out[rb[ib++]];
            continue;
        }
        while (below + s.count[x] <= r)
            below += s.count[x++];
        at[i] = US_TO_S(x);
    }
    pct_plan_finish(&p, n, at, out);
    free(s.count), free(s.out);
    return true;
}
