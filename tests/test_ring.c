/* test_ring: engine/ring's growth keeps a ring's order, checked against a reference
 * queue (a plain array) through random pushes at both ends and pops from the front, so
 * that growth happens with the elements wrapped at every offset; and a size no memory
 * could hold is refused with the ring untouched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mix64.h"
#include "ring.h"

#define OPS 20000

static void test_order_kept_through_growth(void **state)
{
    (void)state;
    uint64_t *q = NULL;
    size_t cap = 0, head = 0, n = 0;
    static uint64_t ref[2 * OPS + 1];   /* the same queue: ref[lo..hi) */
    size_t lo = OPS, hi = OPS;
    uint64_t rng = 7;
    size_t grew = 0;
    for (uint64_t v = 1; v <= OPS; v++) {
        uint64_t r = mix64_next(&rng) % 8;
        if (r < 3 && n) {                 /* pop the front */
            assert_int_equal(q[head], ref[lo]);
            head = (head + 1) % cap, n--, lo++;
            continue;
        }
        size_t before = cap;
        assert_true(ring_reserve((void **)&q, &cap, &head, n, sizeof *q));
        grew += cap != before;
        if (r < 5) {                      /* push at the front */
            head = (head + cap - 1) % cap;
            q[head] = v;
            ref[--lo] = v;
        } else {                          /* push at the back */
            q[(head + n) % cap] = v;
            ref[hi++] = v;
        }
        n++;
        for (size_t i = 0; i < n; i += 1 + n / 16)   /* sampled: the whole ring is the same queue */
            assert_int_equal(q[(head + i) % cap], ref[lo + i]);
    }
    assert_int_equal(n, hi - lo);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(q[(head + i) % cap], ref[lo + i]);
    assert_true(grew >= 5);
    /* an element size no array of twice the capacity could hold: refused, untouched */
    uint64_t *was = q;
    size_t cap0 = cap, head0 = head;
    assert_false(ring_grow((void **)&q, &cap, &head, n, SIZE_MAX / 2));
    assert_ptr_equal(q, was);
    assert_int_equal(cap, cap0);
    assert_int_equal(head, head0);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_kept_through_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
