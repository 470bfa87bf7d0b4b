/* test_arena: engine/arena's promises: every allocation aligned for any type and never
 * moved or overlapped while later ones grow the arena; a reset keeps one chunk for all
 * that was handed out, so the same pattern of allocations after a reset is contiguous
 * (no allocation); free empties it; an absurd size is refused. */
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "arena.h"

#define N 1000
#define SIZE 1000   /* 1008 once aligned: 1000 of them span many 64 KiB chunks */

static size_t aligned(size_t n) { return (n + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1); }

static void fill(arena *a, unsigned char **p)
{
    for (int i = 0; i < N; i++) {
        p[i] = arena_alloc(a, SIZE);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % alignof(max_align_t), 0);
        memset(p[i], i & 0xff, SIZE);
    }
}

static void test_stable_aligned_and_reused(void **state)
{
    (void)state;
    arena a = {0};
    static unsigned char *p[N];
    fill(&a, p);
    assert_int_equal(a.total, N * aligned(SIZE));
    for (int i = 0; i < N; i++)   /* nothing moved, nothing overlapped */
        for (int k = 0; k < SIZE; k++)
            if (p[i][k] != (i & 0xff))
                fail_msg("allocation %d byte %d overwritten", i, k);
    /* after a reset the same calls fit one chunk: consecutive, in order */
    arena_reset(&a);
    assert_int_equal(a.total, 0);
    fill(&a, p);
    for (int i = 1; i < N; i++)
        assert_ptr_equal(p[i], p[i - 1] + aligned(SIZE));
    /* and again, still the same chunk */
    unsigned char *first = p[0];
    arena_reset(&a);
    assert_ptr_equal(arena_alloc(&a, 1), first);
    arena_free(&a);
    assert_null(a.head);
    assert_int_equal(a.total, 0);
    /* usable again after free; a size no memory could hold is refused */
    assert_non_null(arena_alloc(&a, 0));
    assert_null(arena_alloc(&a, SIZE_MAX - 8));
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stable_aligned_and_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
