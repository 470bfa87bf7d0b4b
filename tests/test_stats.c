/* test_stats: np.mean / np.percentile ("linear") semantics, hand-derived:
 * interpolation values worked out on paper, NumPy's pairwise summation shown by inputs
 * where it gives a different double than a left-to-right sum (and where a different
 * block split would too), and the selection path against a full sort. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stats.h"

static void test_percentile_hand_values(void **state)
{
    (void)state;
    const double v[] = {1, 2, 3, 4};
    /* q=25: index 0.75 -> t >= 0.5, so b - d*(1-t) = 2 - 0.25 */
    assert_true(stats_percentile_sorted(v, 4, 25) == 1.75);
    assert_true(stats_percentile_sorted(v, 4, 50) == 2.5);
    assert_true(stats_percentile_sorted(v, 4, 0) == 1);
    assert_true(stats_percentile_sorted(v, 4, 100) == 4);
    /* q=0.1: index 3*0.001 = 0.003 -> 1.003; q=99.9: index 2.997 -> 4 - 0.003 */
    assert_true(fabs(stats_percentile_sorted(v, 4, 0.1) - 1.003) < 1e-12);
    assert_true(fabs(stats_percentile_sorted(v, 4, 99.9) - 3.997) < 1e-12);
    assert_true(fabs(stats_percentile_sorted(v, 4, 90) - 3.7) < 1e-12);
    const double w[] = {10, 20};
    assert_true(fabs(stats_percentile_sorted(w, 2, 0.1) - 10.01) < 1e-12);
    const double u[] = {1, 2, 3, 4, 5};
    assert_true(fabs(stats_percentile_sorted(u, 5, 10) - 1.4) < 1e-12);
    /* integers 196, 197 with 60 items: the example report's p0.1 = 196.059 */
    double pl[60];
    for (int i = 0; i < 60; i++)
        pl[i] = 196 + i; /* sorted; index 0.059 lies between 196 and 197 */
    assert_true(fabs(stats_percentile_sorted(pl, 60, 0.1) - 196.059) < 1e-9);
}

static void test_percentile_upper_half_is_exact_at_b(void **state)
{
    (void)state;
    /* With t >= 0.5 NumPy computes b - d*(1-t): for t = 1 - 2^-53 that lands on b
     * minus a rounding-sized step; a + d*t on the same input gives a different double
     * for a large a. Both ends stay exact: q = 100 returns the max bit for bit. */
    const double v[] = {1e300, 3e300};
    assert_true(stats_percentile_sorted(v, 2, 100) == 3e300);
    assert_true(stats_percentile_sorted(v, 2, 0) == 1e300);
    assert_true(stats_percentile_sorted(v, 2, 50) == 2e300);
}

/* The benches' percentiles: an unsorted sample, sorted by stats_sort, then np.percentile
 * (np.percentile([3, -1, 2, 2, 0, 7.5], [50, 99]) = 2.0, 7.275). */
static void test_sort_then_percentile(void **state)
{
    (void)state;
    double v[] = {3, -1, 2, 2, 0, 7.5};
    stats_sort(v, 6);
    const double want[] = {-1, 0, 2, 2, 3, 7.5};
    for (int i = 0; i < 6; i++)
        assert_true(v[i] == want[i]);
    assert_true(stats_percentile_sorted(v, 6, 50) == 2.0);
    assert_true(fabs(stats_percentile_sorted(v, 6, 99) - 7.275) < 1e-12);
    stats_sort(v, 0);   /* nothing to sort: no access */
}

static void test_mean_pairwise_small_block(void **state)
{
    (void)state;
    /* 2^53 then eight 1.0s. Left to right every +1 is lost (ties to even): 2^53.
     * NumPy: r[j] = a[j] (j < 8), no full block of 8 follows, so
     * ((r0+r1)+(r2+r3)) + ((r4+r5)+(r6+r7)) = (2^53 + 2) + 4 = 2^53 + 6, then the
     * leftover a8: 2^53 + 7 is a tie between +6 and +8 and rounds to even, +8. */
    double v[9] = {0x1p53, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_true(stats_mean(v, 9) == (0x1p53 + 8) / 9.0);
    assert_true(stats_mean(v, 9) != 0x1p53 / 9.0);
}

static void test_mean_pairwise_split(void **state)
{
    (void)state;
    /* n = 200 splits at 96 (100 rounded down to a multiple of 8).
     * First 96: r0 = 2^53 (its 11 added ones lost), r1..r7 = 12 each:
     *   ((2^53 + 12) + 24) + (24 + 24) = 2^53 + 84.
     * Last 104 ones: 104. Total 2^53 + 188. A split at 100 would give another sum. */
    double v[200];
    for (int i = 0; i < 200; i++)
        v[i] = 1;
    v[0] = 0x1p53;
    assert_true(stats_mean(v, 200) == (0x1p53 + 188) / 200.0);
    assert_true(isnan(stats_mean(v, 0)));
}

static void test_summarize_matches_sorted_reference(void **state)
{
    (void)state;
    /* Many duplicates (like simulated inter-token gaps) and a few outliers. */
    uint64_t x = 88172645463325252ULL;
    for (size_t n = 1; n < 3000; n = n * 3 + 1) {
        double *v = malloc(n * sizeof *v), *sorted = malloc(n * sizeof *sorted);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            v[i] = (x % 10 == 0) ? (double)(x % 100000) / 7.0 : (double)(x % 5);
        }
        memcpy(sorted, v, n * sizeof *v);
        double mean = stats_mean(v, n);
        for (size_t i = 1; i < n; i++) /* insertion sort: independent of the selection code */
            for (size_t j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
                double t = sorted[j];
                sorted[j] = sorted[j - 1];
                sorted[j - 1] = t;
            }
        stats_block b;
        stats_summarize(v, n, &b);
        assert_true(b.valid);
        assert_true(b.v[STATS_MEAN] == mean);
        assert_true(b.v[STATS_MIN] == sorted[0]);
        assert_true(b.v[STATS_MAX] == sorted[n - 1]);
        for (int k = STATS_P0_1; k <= STATS_P99_9; k++)
            assert_true(b.v[k] == stats_percentile_sorted(sorted, n, stats_key_q[k]));
        free(v);
        free(sorted);
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Large inputs in the shapes that break naive quickselect: sorted, reversed, all equal,
 * few distinct values. Reference: libc qsort. */
static void test_summarize_large_shapes(void **state)
{
    (void)state;
    const size_t n = 200003;
    double *v = malloc(n * sizeof *v), *ref = malloc(n * sizeof *ref);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int shape = 0; shape < 4; shape++) {
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            v[i] = shape == 0 ? (double)i : shape == 1 ? (double)(n - i) : shape == 2 ? 0.063 : (double)(x % 7) * 0.01;
        }
        memcpy(ref, v, n * sizeof *v);
        qsort(ref, n, sizeof *ref, cmp_d);
        stats_block b;
        stats_summarize(v, n, &b);
        for (int k = STATS_P0_1; k <= STATS_P99_9; k++)
            assert_true(b.v[k] == stats_percentile_sorted(ref, n, stats_key_q[k]));
        assert_true(b.v[STATS_MIN] == ref[0] && b.v[STATS_MAX] == ref[n - 1]);
    }
    free(v);
    free(ref);
}

static void test_summarize_edges(void **state)
{
    (void)state;
    stats_block b;
    stats_summarize(NULL, 0, &b);
    assert_false(b.valid);
    double one = 0.25;
    stats_summarize(&one, 1, &b);
    assert_true(b.valid);
    for (int k = 0; k < STATS_NKEYS; k++)
        assert_true(b.v[k] == 0.25);
    assert_string_equal(stats_key_names[STATS_P0_1], "p0.1");
    assert_string_equal(stats_key_names[STATS_MEDIAN], "median");
    assert_string_equal(stats_key_names_br[STATS_MEDIAN], "p50");
    assert_string_equal(stats_key_names_br[STATS_P99_9], "p99p9");
}

/* stats_summarize_us_stream's source: an array handed out k values at a time. */
typedef struct us_src {
    const int64_t *v;
    size_t at;
} us_src;

static void next_us(void *ctx, int64_t *buf, size_t k)
{
    us_src *s = ctx;
    assert_true(k >= 1 && k <= 128);
    memcpy(buf, s->v + s->at, k * sizeof *buf);
    s->at += k;
}

/* One stream of microsecond values against the double path on the same values in
 * seconds: every key bit-identical, and exactly n values taken. */
static void check_us_against_seconds(const int64_t *us, size_t n)
{
    double *sec = malloc((n ? n : 1) * sizeof *sec);
    for (size_t i = 0; i < n; i++)
        sec[i] = (double)us[i] / (double)1000000;   /* lifecycle.c's secs() */
    stats_block bu, bd;
    us_src src = {.v = us};
    assert_true(stats_summarize_us_stream(n, next_us, &src, &bu));
    assert_int_equal(src.at, n);
    stats_summarize(sec, n, &bd);
    assert_int_equal(bu.valid, bd.valid);
    for (int k = 0; bd.valid && k < STATS_NKEYS; k++)
        assert_memory_equal(&bu.v[k], &bd.v[k], sizeof bu.v[k]);
    free(sec);
}

/* For sizes on both sides of the pairwise split (128) and up to where selection of the
 * double path falls back to sorting, with gaps that look like a step model's (a few step
 * times, preemption outliers), the 32-bit extremes and beyond, negative gaps, and values
 * either side of the counting table's 2^20 us limit; then adversarial shapes: n = 1 and
 * 2, all equal, all above the table, all negative, one outlier, every value distinct. */
static void test_summarize_us_equals_seconds(void **state)
{
    (void)state;
    uint64_t x = 0x2545F4914F6CDD1DULL;
    for (size_t n = 1; n < 400000; n = n * 5 + 3) {
        int64_t *us = malloc(n * sizeof *us);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            us[i] = x % 50 == 0   ? (int64_t)(x >> 32)
                    : x % 97 == 0 ? UINT32_MAX
                    : x % 83 == 0 ? (int64_t)UINT32_MAX * 3
                    : x % 79 == 0 ? -(int64_t)(x % 5000)
                    : x % 89 == 0 ? (1 << 20) - 1 + (int64_t)(x % 3)
                                  : 20000 + (int64_t)(x % 6) * 1373;
        }
        check_us_against_seconds(us, n);
        free(us);
    }
    check_us_against_seconds(NULL, 0);
    const int64_t one[] = {7}, two[] = {UINT32_MAX, 0}, two_eq[] = {5, 5}, neg[] = {-3, 4, -7};
    check_us_against_seconds(one, 1);
    check_us_against_seconds(two, 2);
    check_us_against_seconds(two_eq, 2);
    check_us_against_seconds(neg, 3);
    enum { N = 5000 };
    int64_t *v = malloc(N * sizeof *v);
    for (int shape = 0; shape < 6; shape++) {
        for (int64_t i = 0; i < N; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            v[i] = shape == 0   ? 40000                                    /* all equal */
                   : shape == 1 ? (1 << 20) + (int64_t)(x % 1000)          /* all above the table */
                   : shape == 2 ? (i == N / 2 ? UINT32_MAX : 30000)        /* one huge outlier */
                   : shape == 3 ? N - i                                    /* distinct, descending */
                   : shape == 4 ? -1 - (int64_t)(x % 100)                  /* all negative */
                                : (int64_t)(uint32_t)x;                    /* anywhere in 32 bits */
        }
        check_us_against_seconds(v, N);
    }
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentile_hand_values),
        cmocka_unit_test(test_percentile_upper_half_is_exact_at_b),
        cmocka_unit_test(test_sort_then_percentile),
        cmocka_unit_test(test_mean_pairwise_small_block),
        cmocka_unit_test(test_mean_pairwise_split),
        cmocka_unit_test(test_summarize_matches_sorted_reference),
        cmocka_unit_test(test_summarize_large_shapes),
        cmocka_unit_test(test_summarize_edges),
        cmocka_unit_test(test_summarize_us_equals_seconds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
