/* test_u64map: engine/u64map against a reference model (a plain array of the live
 * keys): random puts, overwrites and deletes over a small key space, so probe chains
 * collide, wrap and are shifted back by deletion; after every step each key of the
 * space reads the model's value, and the count of entries is the model's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kverr.h"
#include "mix64.h"
#include "u64map.h"

#define KEYS 3000
#define STEPS 60000

static void test_matches_reference(void **state)
{
    (void)state;
    u64map m = {0};
    static uint32_t model[KEYS];   /* U64MAP_NONE: absent */
    static uint64_t key_of[KEYS];
    for (size_t k = 0; k < KEYS; k++) {
        model[k] = U64MAP_NONE;
        /* packed (slot, group) pairs and raw hashes, as the engine's two users key it */
        key_of[k] = k % 2 ? (uint64_t)(k % 7) << 32 | k : mix64(k);
    }
    assert_int_equal(u64map_get(&m, key_of[0]), U64MAP_NONE);   /* empty map: nothing */
    u64map_del(&m, key_of[0]);
    uint64_t rng = 11;
    size_t live = 0;
    for (size_t step = 0; step < STEPS; step++) {
        uint64_t r = mix64_next(&rng);
        size_t k = (size_t)(r % KEYS);
        if ((r >> 32) % 3 == 0) {
            u64map_del(&m, key_of[k]);
            live -= model[k] != U64MAP_NONE;
            model[k] = U64MAP_NONE;
        } else {
            uint32_t v = (uint32_t)(r >> 40);
            assert_int_equal(u64map_put(&m, key_of[k], v), KV_OK);
            live += model[k] == U64MAP_NONE;
            model[k] = v;
        }
        assert_int_equal(m.used, live);
        if (step % 97 == 0)
            for (size_t j = 0; j < KEYS; j++)
                assert_int_equal(u64map_get(&m, key_of[j]), model[j]);
    }
    for (size_t j = 0; j < KEYS; j++)
        assert_int_equal(u64map_get(&m, key_of[j]), model[j]);
    /* a walk of the table sees exactly the live entries */
    size_t seen = 0;
    for (size_t i = 0; i <= m.mask; i++)
        seen += m.t[i].val != U64MAP_NONE;
    assert_int_equal(seen, live);
    u64map_free(&m);
    assert_null(m.t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
