/* test_breaker: the gateway's circuit breaker (live/breaker.c) driven by a hand-set
 * clock through every transition: closed -> open after N consecutive failures (a success
 * in between resets the count), open for the cool-down, half-open letting exactly one
 * probe through, the probe's success closing it and its failure re-opening it, a lost
 * probe replaced a cool-down later; endpoints are independent; opens are counted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "breaker.h"

static const char *A = "10.0.0.1:8000", *B = "10.0.0.2:8000";

static void test_opens_after_consecutive_failures(void **state)
{
    kv_err err = {0};
    breaker *b = breaker_new(3, 10, &err);
    assert_non_null(b);
    assert_true(breaker_allows(b, A, 0));
    breaker_failure(b, A, 1);
    breaker_failure(b, A, 2);
    breaker_success(b, A); /* resets the count */
    breaker_failure(b, A, 3);
    breaker_failure(b, A, 4);
    assert_int_equal(breaker_get(b, A), BREAKER_CLOSED);
    assert_true(breaker_allows(b, A, 4));
    breaker_failure(b, A, 5);
    assert_int_equal(breaker_get(b, A), BREAKER_OPEN);
    assert_int_equal(breaker_opens(b), 1);
    assert_false(breaker_allows(b, A, 5));
    assert_false(breaker_allows(b, A, 14.9));
    assert_true(breaker_allows(b, B, 5)); /* B is unaffected */
    assert_int_equal(breaker_get(b, B), BREAKER_CLOSED);
    breaker_free(b);
}

static void test_half_open_probe(void **state)
{
    breaker *b = breaker_new(1, 10, NULL);
    breaker_failure(b, A, 0);
    assert_false(breaker_allows(b, A, 9));
    /* past the cool-down: half-open, one probe */
    assert_true(breaker_allows(b, A, 10));
    assert_int_equal(breaker_get(b, A), BREAKER_HALF_OPEN);
    breaker_sent(b, A, 10);
    assert_false(breaker_allows(b, A, 11)); /* the probe is out */
    breaker_failure(b, A, 12);              /* it failed: open again, a new cool-down */
    assert_int_equal(breaker_get(b, A), BREAKER_OPEN);
    assert_int_equal(breaker_opens(b), 2);
    assert_false(breaker_allows(b, A, 21));
    assert_true(breaker_allows(b, A, 22));
    breaker_sent(b, A, 22);
    breaker_success(b, A); /* the probe answered: closed */
    assert_int_equal(breaker_get(b, A), BREAKER_CLOSED);
    assert_true(breaker_allows(b, A, 22));
    breaker_sent(b, A, 22); /* closed: sending marks nothing */
    assert_true(breaker_allows(b, A, 22));
    assert_int_equal(breaker_opens(b), 2);
    breaker_free(b);
}

static void test_lost_probe_is_replaced(void **state)
{
    breaker *b = breaker_new(1, 5, NULL);
    breaker_failure(b, A, 0);
    assert_true(breaker_allows(b, A, 5));
    breaker_sent(b, A, 5); /* its client goes away: no outcome ever */
    assert_false(breaker_allows(b, A, 9.9));
    assert_true(breaker_allows(b, A, 10)); /* another probe a cool-down later */
    assert_int_equal(breaker_get(b, A), BREAKER_HALF_OPEN);
    breaker_free(b);
}

typedef struct seen {
    int n;
    breaker_state st[4];
    char ep[4][32];
} seen;

static void collect(void *ctx, const char *ep, breaker_state st)
{
    seen *s = ctx;
    snprintf(s->ep[s->n], sizeof s->ep[0], "%s", ep);
    s->st[s->n++] = st;
}

static void test_each_and_bad_settings(void **state)
{
    breaker *b = breaker_new(2, 1, NULL);
    breaker_failure(b, A, 0);
    breaker_failure(b, B, 0);
    breaker_failure(b, B, 0);
    seen s = {0};
    breaker_each(b, collect, &s);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ep[0], A);
    assert_int_equal(s.st[0], BREAKER_CLOSED);
    assert_string_equal(s.ep[1], B);
    assert_int_equal(s.st[1], BREAKER_OPEN);
    assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
    breaker_free(b);
    kv_err err = {0};
    assert_null(breaker_new(0, 1, &err));
    assert_int_equal(err.code, KV_EINVAL);
    assert_null(breaker_new(1, 0, &err));
    breaker_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_consecutive_failures),
        cmocka_unit_test(test_half_open_probe),
        cmocka_unit_test(test_lost_probe_is_replaced),
        cmocka_unit_test(test_each_and_bad_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
