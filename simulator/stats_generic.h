/* stats_generic: the element-type-generic part of stats.c (NumPy's pairwise sum,
 * selection of order statistics), included by stats.c once per element type (today
 * double only: microsecond gaps stream through stats_summarize_us_stream instead).
 * Before including, stats.c defines:
 *   STG_T          the element type (ordered by < and >)
 *   STG_TO_D(x)    the element's value as the double NumPy would hold
 *   STG_NAME(n)    the name of this type's copy of function n
 * STG_TO_D must be monotonic, so ordering the elements orders their doubles and the
 * order statistics found among the elements are those of the doubles. Touched only by
 * stats.c; no state. */

/* NumPy's pairwise_sum for doubles: 8 accumulators up to a 128-item block, halves
 * (rounded down to a multiple of 8) above it. */
static double STG_NAME(pairwise_sum)(const STG_T *a, size_t n)
{
    if (n < 8) {
        double res = 0.;
        for (size_t i = 0; i < n; i++)
            res += STG_TO_D(a[i]);
        return res;
    }
    if (n <= 128) {
        double r[8];
        size_t i;
        for (int j = 0; j < 8; j++)
            r[j] = STG_TO_D(a[j]);
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += STG_TO_D(a[i + j]);
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += STG_TO_D(a[i]);
        return res;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    return STG_NAME(pairwise_sum)(a, n2) + STG_NAME(pairwise_sum)(a + n2, n - n2);
}

static int STG_NAME(cmp)(const void *a, const void *b)
{
    STG_T x = *(const STG_T *)a, y = *(const STG_T *)b;
    return (x > y) - (x < y);
}

static void STG_NAME(swap)(STG_T *a, size_t i, size_t j)
{
    STG_T t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* Puts the elements of rank ranks[0..nr) (ascending, within [lo, hi)) in place, as a
 * full sort would: one three-way partition serves every rank at once, and each side
 * recurses only with the ranks that fall in it, so a block's 24 ranks cost a few passes,
 * not 24. Three-way partitioning keeps runs of equal values (simulated inter-token gaps
 * are integer microseconds, mostly a handful of step times) linear; past the depth
 * budget a range is simply sorted. */
static void STG_NAME(multiselect)(STG_T *a, size_t lo, size_t hi, const size_t *ranks, size_t nr, int budget)
{
    while (nr > 0 && hi - lo > 1) {
        if (budget-- == 0 || hi - lo <= 16) {
            qsort(a + lo, hi - lo, sizeof *a, STG_NAME(cmp));
            return;
        }
        size_t mid = lo + (hi - lo) / 2;
        STG_T x = a[lo], y = a[mid], z = a[hi - 1];
        STG_T p = (x < y) ? ((y < z) ? y : (x < z ? z : x)) : ((x < z) ? x : (y < z ? z : y));
        /* a[lo..lt) < p, a[lt..i) == p, a[gt..hi) > p */
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            if (a[i] < p)
                STG_NAME(swap)(a, lt++, i++);
            else if (a[i] > p)
                STG_NAME(swap)(a, i, --gt);
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
            STG_NAME(multiselect)(a, lo, lt, ranks, nl, budget);
            ranks += nm, nr -= nm, lo = gt;
        } else {
            STG_NAME(multiselect)(a, gt, hi, ranks + nm, nr - nm, budget);
            nr = nl, hi = lt;
        }
    }
}

/* Puts the elements of rank ranks[0..nr) (ascending, below n) of v[0..n) in place, as a
 * full sort would; the depth budget is about 2 log2 n partitions before sorting. */
static void STG_NAME(select_ranks)(STG_T *v, size_t n, const size_t *ranks, size_t nr)
{
    int budget = 2;
    for (size_t m = n; m > 1; m >>= 1)
        budget += 2;
    STG_NAME(multiselect)(v, 0, n, ranks, nr, budget);
}
