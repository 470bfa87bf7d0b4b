/* test_evq: the event queue pops in the total order (time, kind, push sequence), and
 * peeks the next two events, checked against a sorted reference over random pushes
 * interleaved with pops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "evq.h"
#include "kverr.h"
#include "rng.h"

static void test_empty(void **state)
{
    (void)state;
    evq q;
    evq_init(&q);
    evq_event e;
    assert_false(evq_pop(&q, &e));
    assert_null(evq_peek(&q));
    assert_int_equal(evq_len(&q), 0);
    evq_free(&q);
}

static void test_ties_by_kind_then_fifo(void **state)
{
    (void)state;
    evq q;
    evq_init(&q);
    /* Same time: kind 3 pushed first, then kind 1 twice, then kind 2: expect 1,1,2,3,
     * with the two kind-1 events in push order (arg 10 before 11). */
    assert_int_equal(evq_push(&q, 100, 3, 0, 1), KV_OK);
    assert_int_equal(evq_push(&q, 100, 1, 0, 10), KV_OK);
    assert_int_equal(evq_push(&q, 100, 1, 0, 11), KV_OK);
    assert_int_equal(evq_push(&q, 100, 2, 0, 20), KV_OK);
    assert_int_equal(evq_push(&q, 99, 9, 0, 99), KV_OK);   /* earlier time beats any kind */
    uint64_t want[] = {99, 10, 11, 20, 1};
    for (int i = 0; i < 5; i++) {
        evq_event e;
        assert_true(evq_pop(&q, &e));
        assert_int_equal(e.arg, want[i]);
    }
    evq_event none;
    assert_false(evq_pop(&q, &none));
    evq_free(&q);
}

typedef struct ref {
    sim_time t;
    uint32_t kind;
    uint64_t seq;
} ref;

static int ref_cmp(const void *a, const void *b)
{
    const ref *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    if (x->kind != y->kind) return x->kind < y->kind ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Random pushes (few distinct times and kinds, so ties abound) interleaved with pops:
 * every pop must be the minimum of what a plain array holds. */
static void test_random_against_reference(void **state)
{
    (void)state;
    evq q;
    evq_init(&q);
    rng r;
    rng_seed(&r, 7, 99);
    size_t cap = 20000, n = 0;
    ref *pool = malloc(cap * sizeof *pool);
    assert_non_null(pool);
    uint64_t seq = 0;
    for (int round = 0; round < 20000; round++) {
        if (n == 0 || rng_below(&r, 3) != 0) {
            ref x = {(sim_time)rng_below(&r, 50), (uint32_t)rng_below(&r, 4), seq++};
            assert_int_equal(evq_push(&q, x.t, x.kind, (int32_t)x.kind, x.seq), KV_OK);
            pool[n++] = x;
        } else {
            size_t best = 0;
            for (size_t i = 1; i < n; i++)
                if (ref_cmp(&pool[i], &pool[best]) < 0) best = i;
            evq_event e;
            assert_true(evq_pop(&q, &e));
            assert_int_equal(e.t, pool[best].t);
            assert_int_equal(e.kind, pool[best].kind);
            assert_int_equal(e.arg, pool[best].seq);   /* arg carries the push index */
            assert_int_equal(e.seq, pool[best].seq);
            pool[best] = pool[--n];
        }
        assert_int_equal(evq_len(&q), n);
        /* evq_peek_second: the event the pop after next would return */
        if (n < 2) {
            assert_null(evq_peek_second(&q));
            continue;
        }
        size_t first = 0, second = SIZE_MAX;
        for (size_t i = 1; i < n; i++) {
            if (ref_cmp(&pool[i], &pool[first]) < 0) {
                second = first;
                first = i;
            } else if (second == SIZE_MAX || ref_cmp(&pool[i], &pool[second]) < 0) {
                second = i;
            }
        }
        const evq_event *e2 = evq_peek_second(&q);
        assert_non_null(e2);
        assert_int_equal(e2->seq, pool[second].seq);
        assert_int_equal(evq_peek(&q)->seq, pool[first].seq);
    }
    qsort(pool, n, sizeof *pool, ref_cmp);
    for (size_t i = 0; i < n; i++) {
        evq_event e;
        assert_true(evq_pop(&q, &e));
        assert_int_equal(e.arg, pool[i].seq);
    }
    assert_int_equal(evq_len(&q), 0);
    free(pool);
    evq_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_ties_by_kind_then_fifo),
        cmocka_unit_test(test_random_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
