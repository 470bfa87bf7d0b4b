/* test_kvpayq: the KV payload FIFO hands back every payload, byte for byte, in push
 * order (against a reference queue, over random pushes and pops), and a queue that is
 * never empty keeps its buffer within a bound set by the payloads in flight, not by
 * everything ever pushed (the scale-1000 case the compaction exists for). Payloads go in
 * as a replica's do: appended to kvpayq_open's buffer, then committed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "grow.h"
#include "kvpayq.h"
#include "rng.h"

#define MAX_LEN 3000

/* Payload number id of length len: bytes derived from (id, offset), so a payload
 * handed back whole but from the wrong place, or shifted, is caught. */
static void fill(uint8_t *p, uint64_t id, size_t len)
{
    for (size_t k = 0; k < len; k++) p[k] = (uint8_t)((id * 131 + k * 7) ^ (id >> 3));
}

/* Appends data[0, len) to the queue's buffer, growing it as kvev_encode_append does. */
static bool append(kvev_buf *b, const uint8_t *data, size_t len)
{
    if (!grow_array((void **)&b->data, &b->cap, b->len + len, 1)) return false;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    return true;
}

static bool push_payload(kvpayq *q, const uint8_t *data, size_t len)
{
    return append(kvpayq_open(q), data, len) && kvpayq_commit(q);
}

static void test_empty(void **state)
{
    (void)state;
    kvpayq q = {0};
    size_t len = 99;
    assert_null(kvpayq_front(&q, &len));
    kvpayq_pop(&q);   /* no-op */
    assert_int_equal(kvpayq_len(&q), 0);
    kvpayq_free(&q);
}

/* What kvpayq_front returned stays readable after the pop, until the next kvpayq_open
 * (cl_kv_deliver pops before applying the payload). */
static void test_front_survives_pop(void **state)
{
    (void)state;
    kvpayq q = {0};
    uint8_t a[100], b[50];
    fill(a, 1, sizeof a);
    fill(b, 2, sizeof b);
    assert_true(push_payload(&q, a, sizeof a));
    assert_true(push_payload(&q, b, sizeof b));
    size_t len;
    const uint8_t *p = kvpayq_front(&q, &len);
    kvpayq_pop(&q);
    assert_int_equal(len, sizeof a);
    assert_memory_equal(p, a, sizeof a);
    p = kvpayq_front(&q, &len);
    kvpayq_pop(&q);   /* the last one: the queue rewinds */
    assert_int_equal(kvpayq_len(&q), 0);
    assert_int_equal(len, sizeof b);
    assert_memory_equal(p, b, sizeof b);
    kvpayq_free(&q);
}

typedef struct ref {
    uint64_t id;
    size_t len;
} ref;

/* The front is payload x, whole; then it is popped. want: scratch of MAX_LEN bytes. */
static void pop_expect(kvpayq *q, ref x, uint8_t *want)
{
    size_t len;
    const uint8_t *p = kvpayq_front(q, &len);
    assert_non_null(p);
    assert_int_equal(len, x.len);
    fill(want, x.id, x.len);
    if (len) assert_memory_equal(p, want, len);
    kvpayq_pop(q);
}

/* Random lengths (0 included), pushes and pops at random with the queue kept non-empty
 * for long stretches (so it rarely rewinds), 40 MB pushed in all. */
static void test_random_against_reference(void **state)
{
    (void)state;
    kvpayq q = {0};
    rng r;
    rng_seed(&r, 15, 2);
    size_t cap = 1 << 16, head = 0, tail = 0, live = 0, max_live = 0, pushed = 0;
    ref *fifo = malloc(cap * sizeof *fifo);
    uint8_t *buf = malloc(MAX_LEN), *want = malloc(MAX_LEN);
    assert_non_null(fifo);
    assert_non_null(buf);
    assert_non_null(want);
    uint64_t id = 0;
    while (pushed < (size_t)40 << 20) {
        /* push a little more often than pop while short, so the queue stays non-empty */
        bool push = tail - head < 4 || (tail - head < 64 && rng_below(&r, 2) == 0);
        if (push) {
            assert_true(tail - head < cap);
            ref x = {.id = id++, .len = (size_t)rng_below(&r, MAX_LEN + 1)};
            fill(buf, x.id, x.len);
            assert_true(push_payload(&q, buf, x.len));
            fifo[tail++ % cap] = x;
            live += x.len;
            pushed += x.len;
            max_live = live > max_live ? live : max_live;
        } else {
            ref x = fifo[head++ % cap];
            pop_expect(&q, x, want);
            live -= x.len;
        }
        assert_int_equal(kvpayq_len(&q), tail - head);
        /* the bound derived in kvpayq.c: growth only when live payloads fill over half */
        assert_true(kvpayq_capacity(&q) <= 4 * max_live + 2 * MAX_LEN + 16);
    }
    /* at most 64 payloads in flight: the buffer is a few hundred KB, not 40 MB */
    assert_true(kvpayq_capacity(&q) <= (size_t)1 << 20);
    while (head < tail)
        pop_expect(&q, fifo[head++ % cap], want);
    size_t len;
    assert_null(kvpayq_front(&q, &len));
    free(fifo);
    free(buf);
    free(want);
    kvpayq_free(&q);
}

/* Bytes appended after kvpayq_open but never committed (a replica's step that failed
 * while encoding) are not part of any payload: the next open drops them. Payloads
 * appended in one open are one payload, and an open with nothing appended commits an
 * empty one. */
static void test_uncommitted_dropped(void **state)
{
    (void)state;
    kvpayq q = {0};
    uint8_t a[40], b[30], c[20];
    fill(a, 1, sizeof a);
    fill(b, 2, sizeof b);
    fill(c, 3, sizeof c);
    assert_true(push_payload(&q, a, sizeof a));
    assert_true(append(kvpayq_open(&q), b, sizeof b));   /* never committed */
    kvev_buf *buf = kvpayq_open(&q);
    assert_true(append(buf, c, 10) && append(buf, c + 10, 10) && kvpayq_commit(&q));
    kvpayq_open(&q);
    assert_true(kvpayq_commit(&q));
    assert_int_equal(kvpayq_len(&q), 3);
    size_t len;
    const uint8_t *p = kvpayq_front(&q, &len);
    assert_int_equal(len, sizeof a);
    assert_memory_equal(p, a, sizeof a);
    kvpayq_pop(&q);
    p = kvpayq_front(&q, &len);
    assert_int_equal(len, sizeof c);
    assert_memory_equal(p, c, sizeof c);
    kvpayq_pop(&q);
    p = kvpayq_front(&q, &len);
    assert_non_null(p);
    assert_int_equal(len, 0);
    kvpayq_pop(&q);
    assert_null(kvpayq_front(&q, &len));
    kvpayq_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_front_survives_pop),
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_uncommitted_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
