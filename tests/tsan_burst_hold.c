/* tsan_burst_hold: ./epp's burst window under TSan. Requests that arrive together wait
 * in one window, which is placed once, on one thread, with all of them, before any of
 * them goes on; a full window (maxBatchSize) lets the extra request go on at once,
 * unplaced; the next arrival opens a new window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>

#include "burst_hold.h"

#define N 4

typedef struct place_log {
    atomic_int calls;
    atomic_size_t last_n;
    atomic_int gone_on;           /* held members past burst_hold_wait */
    atomic_int early;             /* of them, when place ran (must be 0) */
    const sched_request *seen[N];
} place_log;

typedef struct arg {
    burst_hold *h;
    place_log *log;
    sched_request r;
    pthread_barrier_t *go;
    bool held;
} arg;

static void place(void *ctx, const sched_request *const *reqs, size_t n)
{
    place_log *l = ctx;
    atomic_fetch_add(&l->calls, 1);
    atomic_store(&l->last_n, n);
    for (size_t i = 0; i < n && i < N; i++)
        l->seen[i] = reqs[i];
    atomic_store(&l->early, atomic_load(&l->gone_on));
}

static void *run(void *p)
{
    arg *a = p;
    pthread_barrier_wait(a->go);
    a->held = burst_hold_wait(a->h, &a->r, place, a->log);
    if (a->held)
        atomic_fetch_add(&a->log->gone_on, 1);
    return NULL;
}

static void window_of(burst_hold *h, place_log *log, size_t n, arg *args)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)n);
    pthread_t th[N];
    for (size_t i = 0; i < n; i++) {
        args[i] = (arg){.h = h, .log = log, .r = {.id = "r"}, .go = &go};
        assert_int_equal(pthread_create(&th[i], NULL, run, &args[i]), 0);
    }
    for (size_t i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
}

static void test_one_window(void **state)
{
    (void)state;
    /* 2 s: the threads leave the barrier together, long before it ends */
    burst_hold *h = burst_hold_new(2.0, -1, NULL);
    assert_non_null(h);
    place_log log = {0};
    arg args[N];
    window_of(h, &log, N, args);
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_int_equal(atomic_load(&log.last_n), N);
    assert_int_equal(atomic_load(&log.early), 0);   /* nobody went on before the placement */
    for (size_t i = 0; i < N; i++) {
        assert_true(args[i].held);
        bool found = false;
        for (size_t j = 0; j < N; j++)
            found |= log.seen[j] == &args[i].r;
        assert_true(found);
    }
    /* a later arrival opens a window of its own */
    log = (place_log){0};
    window_of(h, &log, 1, args);
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_int_equal(atomic_load(&log.last_n), 1);
    burst_hold_free(h);
}

static void test_full_window(void **state)
{
    (void)state;
    burst_hold *h = burst_hold_new(2.0, N - 1, NULL);
    assert_non_null(h);
    place_log log = {0};
    arg args[N];
    window_of(h, &log, N, args);
    int held = 0;
    for (size_t i = 0; i < N; i++)
        held += args[i].held;
    assert_int_equal(held, N - 1);
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_int_equal(atomic_load(&log.last_n), N - 1);
    burst_hold_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_window),
        cmocka_unit_test(test_full_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
