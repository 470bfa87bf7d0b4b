/* test_seqtrack: the status rules on a hand-written stream, and a long random stream over
 * many pods (with forgets, forcing growth and tombstones) against a naive model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "seqtrack.h"

static seqtrack_result observe(seqtrack *t, const char *pod, uint64_t seq)
{
    seqtrack_result r;
    assert_int_equal(seqtrack_observe(t, pod, strlen(pod), seq, &r, NULL), KV_OK);
    return r;
}

static void test_statuses(void **state)
{
    (void)state;
    seqtrack *t = seqtrack_new(NULL);
    seqtrack_result r = observe(t, "10.0.0.1:8000", 0);
    assert_int_equal(r.status, SEQTRACK_FIRST);
    assert_true(r.missed == 0);
    r = observe(t, "10.0.0.1:8000", 1);
    assert_int_equal(r.status, SEQTRACK_IN_ORDER);
    r = observe(t, "10.0.0.1:8000", 1);
    assert_int_equal(r.status, SEQTRACK_DUPLICATE);
    r = observe(t, "10.0.0.1:8000", 5);
    assert_int_equal(r.status, SEQTRACK_GAP);
    assert_true(r.last == 1);
    assert_true(r.missed == 3);
    assert_true(r.replay_from == 2);
    r = observe(t, "10.0.0.1:8000", 6);
    assert_int_equal(r.status, SEQTRACK_IN_ORDER);
    r = observe(t, "10.0.0.1:8000", 2);
    assert_int_equal(r.status, SEQTRACK_RESTART);
    assert_true(r.last == 6);
    assert_true(r.missed == 2);
    assert_true(r.replay_from == 0);
    r = observe(t, "10.0.0.1:8000", 3);
    assert_int_equal(r.status, SEQTRACK_IN_ORDER);
    /* another pod is independent; joining late reports what it never saw */
    r = observe(t, "10.0.0.2:8000", 40);
    assert_int_equal(r.status, SEQTRACK_FIRST);
    assert_true(r.missed == 40);
    /* a pod id that is a prefix of another is a different pod */
    assert_int_equal(seqtrack_observe(t, "10.0.0.2:8000", 8, 0, &r, NULL), KV_OK);
    assert_int_equal(r.status, SEQTRACK_FIRST);
    uint64_t last;
    assert_true(seqtrack_last(t, "10.0.0.1:8000", 13, &last));
    assert_true(last == 3);
    assert_false(seqtrack_last(t, "nope", 4, &last));
    seqtrack_forget(t, "10.0.0.1:8000", 13);
    assert_false(seqtrack_last(t, "10.0.0.1:8000", 13, &last));
    r = observe(t, "10.0.0.1:8000", 4);
    assert_int_equal(r.status, SEQTRACK_FIRST);
    seqtrack_stats st;
    seqtrack_get_stats(t, &st);
    assert_int_equal(st.pods, 3);
    assert_int_equal(st.by_status[SEQTRACK_FIRST], 4);
    assert_int_equal(st.by_status[SEQTRACK_IN_ORDER], 3);
    assert_int_equal(st.by_status[SEQTRACK_DUPLICATE], 1);
    assert_int_equal(st.by_status[SEQTRACK_GAP], 1);
    assert_int_equal(st.by_status[SEQTRACK_RESTART], 1);
    assert_int_equal(st.missed, 3);
    assert_string_equal(seqtrack_status_name(SEQTRACK_GAP), "gap");
    seqtrack_free(t);
}

enum { NPODS = 700 };

static void test_random_against_model(void **state)
{
    (void)state;
    seqtrack *t = seqtrack_new(NULL);
    static bool known[NPODS];
    static uint64_t last[NPODS];
    uint64_t rng = 88172645463325252ULL;
    uint64_t counts[SEQTRACK_STATUS_COUNT] = {0};
    for (int step = 0; step < 200000; step++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        size_t p = (size_t)(rng % NPODS);
        char name[32];
        snprintf(name, sizeof name, "pod-%zu", p);
        unsigned op = (unsigned)(rng >> 32) % 100;
        if (op < 2) {
            seqtrack_forget(t, name, strlen(name));
            known[p] = false;
            continue;
        }
        uint64_t seq;
        if (!known[p]) seq = (rng >> 20) % 5;
        else if (op < 80) seq = last[p] + 1;
        else if (op < 85) seq = last[p];
        else if (op < 95) seq = last[p] + 2 + (rng >> 40) % 10;
        else seq = last[p] ? (rng >> 40) % last[p] : 0;
        seqtrack_status want = !known[p] ? SEQTRACK_FIRST
                               : seq == last[p] + 1 ? SEQTRACK_IN_ORDER
                               : seq == last[p]     ? SEQTRACK_DUPLICATE
                               : seq > last[p]      ? SEQTRACK_GAP
                                                    : SEQTRACK_RESTART;
        seqtrack_result r = observe(t, name, seq);
        assert_int_equal(r.status, want);
        if (want == SEQTRACK_GAP) {
            assert_true(r.missed == seq - last[p] - 1);
            assert_true(r.replay_from == last[p] + 1);
        }
        counts[want]++;
        known[p] = true;
        last[p] = seq;
    }
    size_t live = 0;
    for (size_t p = 0; p < NPODS; p++) {
        char name[32];
        snprintf(name, sizeof name, "pod-%zu", p);
        uint64_t l;
        assert_int_equal(seqtrack_last(t, name, strlen(name), &l), known[p]);
        if (known[p]) assert_true(l == last[p]), live++;
    }
    seqtrack_stats st;
    seqtrack_get_stats(t, &st);
    assert_int_equal(st.pods, live);
    assert_memory_equal(st.by_status, counts, sizeof counts);
    seqtrack_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statuses),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
