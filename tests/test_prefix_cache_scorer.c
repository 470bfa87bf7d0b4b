/* test_prefix_cache_scorer: GIE's approximate prefix-cache scorer and the prefix_index
 * under it. Hash chains are checked against an independent computation (one-shot XXH64
 * over block || LE8(parent)); the index against a naive reference model (arrays, linear
 * search, written from prefix_index.h) over random operation streams; the scorer through
 * the real scheduler against hand-worked cases (matching, stop rule, LRU eviction,
 * truncation, autoTune, token ids). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "config.h"
#include "registry.h"
#include "prefix_index.h"
#include "support/sched_fixture.h"

/* ---- hashing ------------------------------------------------------------------------ */

static uint64_t ref_chain(uint64_t prev, const void *block, size_t len)
{
    unsigned char buf[512];
    assert_true(len + 8 <= sizeof buf);
    memcpy(buf, block, len);
    for (int i = 0; i < 8; i++)
        buf[len + i] = (unsigned char)(prev >> (8 * i));
    return XXH64(buf, len + 8, 0);
}

static void test_hash_text(void **state)
{
    (void)state;
    const char *prompt = "0123456789abcdefghijklmnopqrstuvwxyz"; /* 36 chars: 4 blocks of 8, 4 left over */
    sched_request r = fx_text("r", prompt);
    r.cache_salt = "salt";
    uint64_t h[8];
    size_t units = 0;
    size_t n = prefix_index_hash(&r, 8, 256, h, 8, &units);
    assert_int_equal(n, 4);
    assert_int_equal(units, 36);
    uint64_t prev = XXH64("msalt", 5, 0);
    for (size_t b = 0; b < 4; b++) {
        prev = ref_chain(prev, prompt + 8 * b, 8);
        assert_true(h[b] == prev);
    }
    /* target_model replaces model in the root; a different salt changes every key. */
    r.target_model = "m2";
    uint64_t h2[4];
    prefix_index_hash(&r, 8, 256, h2, 4, NULL);
    assert_true(h2[0] == ref_chain(XXH64("m2salt", 6, 0), prompt, 8));
    /* Truncation to maxBlocks, counting without output, shorter than one block. */
    assert_int_equal(prefix_index_hash(&r, 8, 3, NULL, 0, NULL), 3);
    assert_int_equal(prefix_index_hash(&r, 8, 3, h2, 2, NULL), 3);
    sched_request shortr = fx_text("s", "1234567");
    assert_int_equal(prefix_index_hash(&shortr, 8, 256, h, 8, &units), 0);
    assert_int_equal(units, 7);
    sched_request none = fx_text("n", NULL);
    assert_int_equal(prefix_index_hash(&none, 8, 256, h, 8, &units), 0);
    assert_int_equal(units, 0);
}

static void test_hash_tokens(void **state)
{
    (void)state;
    /* blockSize 12 characters -> 3 tokens a block; 7 tokens -> 2 blocks. */
    uint32_t tok[7] = {1, 0x01020304, 0xffffffffu, 7, 8, 9, 10};
    sched_request r = fx_tokens("t", tok, 7);
    uint64_t h[4];
    size_t units = 0;
    assert_int_equal(prefix_index_block_units(&r, 12), 3);
    assert_int_equal(prefix_index_hash(&r, 12, 256, h, 4, &units), 2);
    assert_int_equal(units, 7);
    unsigned char le[12];
    uint64_t prev = XXH64("m", 1, 0);
    for (size_t b = 0; b < 2; b++) {
        for (size_t k = 0; k < 3; k++)
            for (int s = 0; s < 4; s++)
                le[4 * k + (size_t)s] = (unsigned char)(tok[3 * b + k] >> (8 * s));
        prev = ref_chain(prev, le, 12);
        assert_true(h[b] == prev);
    }
    /* A text prompt wins over token ids. */
    r.prompt = "abcdefghijkl";
    r.prompt_len = 12;
    assert_int_equal(prefix_index_hash(&r, 12, 256, h, 4, NULL), 1);
    assert_true(h[0] == ref_chain(XXH64("m", 1, 0), "abcdefghijkl", 12));
}

/* ---- the index: hand cases ------------------------------------------------------------- */

static void test_index_match_rules(void **state)
{
    (void)state;
    prefix_index *ix = prefix_index_new();
    assert_non_null(ix);
    int a = prefix_index_slot(ix, 10, 100), b = prefix_index_slot(ix, 20, 100);
    assert_int_equal(a, 0);
    assert_int_equal(b, 1);
    assert_int_equal(prefix_index_slot(ix, 10, 5), 0);
    assert_int_equal(prefix_index_find(ix, 30), -1);
    uint64_t h[5] = {101, 102, 103, 104, 105};
    assert_int_equal(prefix_index_add(ix, a, h, 3, 0, false), KV_OK);      /* a: 101 102 103 */
    assert_int_equal(prefix_index_add(ix, b, h + 1, 3, 0, false), KV_OK);  /* b: 102 103 104 */
    uint32_t counts[2], run[2];
    /* GIE counts b on 102 and 103 although it misses 101; the walk goes on to 104 (b). */
    assert_int_equal(prefix_index_match(ix, h, 5, counts, run), 4);
    assert_int_equal(counts[0], 3);
    assert_int_equal(counts[1], 3);
    assert_int_equal(run[0], 3);
    assert_int_equal(run[1], 0);
    /* Stop rule: the first hash nobody holds ends the walk, later hits do not count. */
    uint64_t q[3] = {101, 999, 102};
    assert_int_equal(prefix_index_match(ix, q, 3, counts, NULL), 1);
    assert_int_equal(counts[0], 1);
    assert_int_equal(counts[1], 0);
    assert_int_equal(prefix_index_match(ix, q + 1, 2, counts, run), 0);
    assert_int_equal(counts[0] + counts[1] + run[0] + run[1], 0);
    prefix_index_free(ix);
}

static void test_index_lru(void **state)
{
    (void)state;
    prefix_index *ix = prefix_index_new();
    int a = prefix_index_slot(ix, 1, 3), b = prefix_index_slot(ix, 2, 3);
    uint64_t h[5] = {1, 2, 3, 4, 5};
    uint32_t counts[2];
    prefix_index_add(ix, a, h, 3, 0, false);
    prefix_index_add(ix, b, h, 1, 0, false);
    prefix_index_add(ix, a, h + 3, 1, 0, false);           /* a over capacity: 1 goes */
    assert_int_equal(prefix_index_size(ix, a), 3);
    assert_int_equal(prefix_index_match(ix, h, 1, counts, NULL), 1);
    assert_int_equal(counts[0], 0);                          /* b still holds 1 */
    assert_int_equal(counts[1], 1);
    prefix_index_add(ix, a, h + 1, 1, 0, false);           /* refresh 2: now 3 is oldest */
    prefix_index_add(ix, a, h + 4, 1, 0, false);
    uint64_t q2 = 2, q3 = 3;
    assert_int_equal(prefix_index_match(ix, &q2, 1, counts, NULL), 1);
    assert_int_equal(prefix_index_match(ix, &q3, 1, counts, NULL), 0);
    /* root_last touches the chain backwards, so trimming removes leaves first. */
    int c = prefix_index_slot(ix, 3, 100);
    uint64_t chain[4] = {41, 42, 43, 44};
    prefix_index_add(ix, c, chain, 4, 5.0, true);
    assert_int_equal(prefix_index_trim(ix, c, 2), 2);
    uint32_t run[3];
    assert_int_equal(prefix_index_match(ix, chain, 4, NULL, run), 2);
    assert_int_equal(run[2], 2);
    /* Expiry by insert time. */
    uint64_t late = 77;
    prefix_index_add(ix, c, &late, 1, 9.0, false);
    assert_int_equal(prefix_index_expire(ix, c, 6.0), 2);
    assert_int_equal(prefix_index_size(ix, c), 1);
    assert_int_equal(prefix_index_match(ix, &late, 1, NULL, run), 1);
    assert_int_equal(prefix_index_expire(ix, c, 100.0), 1);
    assert_int_equal(prefix_index_size(ix, c), 0);
    assert_int_equal(prefix_index_match(ix, &late, 1, NULL, run), 0);
    prefix_index_free(ix);
}

/* ---- the index against a reference model ------------------------------------------------ */

#define R_SLOTS 4
#define R_CAP 64

typedef struct {
    uint64_t h[R_CAP];
    double t[R_CAP];
    size_t n, cap;        /* h[0] is the most recent */
} ref_slot;

static void ref_remove_at(ref_slot *s, size_t i)
{
    memmove(s->h + i, s->h + i + 1, (s->n - i - 1) * sizeof *s->h);
    memmove(s->t + i, s->t + i + 1, (s->n - i - 1) * sizeof *s->t);
    s->n--;
}

static void ref_add(ref_slot *s, uint64_t h, double now)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->h[i] == h) {
            ref_remove_at(s, i);
            break;
        }
    if (s->n >= s->cap)
        s->n--;
    memmove(s->h + 1, s->h, s->n * sizeof *s->h);
    memmove(s->t + 1, s->t, s->n * sizeof *s->t);
    s->h[0] = h;
    s->t[0] = now;
    s->n++;
}

static bool ref_has(const ref_slot *s, uint64_t h)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->h[i] == h)
            return true;
    return false;
}

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void test_index_vs_reference(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        uint64_t x = seed * 0x9E3779B97F4A7C15ull;
        size_t alphabet = seed % 2 ? 12 : 300;   /* small: long holder chains; large: table churn */
        prefix_index *ix = prefix_index_new();
        ref_slot ref[R_SLOTS];
        for (int s = 0; s < R_SLOTS; s++) {
            ref[s] = (ref_slot){.cap = 1 + rnd(&x) % R_CAP};
            assert_int_equal(prefix_index_slot(ix, (uint32_t)(100 + s), ref[s].cap), s);
        }
        double now = 0;
        for (int op = 0; op < 3000; op++) {
            int s = (int)(rnd(&x) % R_SLOTS);
            uint64_t hs[8];
            size_t n = 1 + rnd(&x) % 8;
            for (size_t k = 0; k < n; k++)
                hs[k] = 0x1000 + rnd(&x) % alphabet;
            uint64_t kind = rnd(&x) % 20;
            now += 0.5;
            if (kind < 14) {
                bool root_last = rnd(&x) % 2;
                assert_int_equal(prefix_index_add(ix, s, hs, n, now, root_last), KV_OK);
                for (size_t k = 0; k < n; k++)
                    ref_add(&ref[s], hs[root_last ? n - 1 - k : k], now);
            } else if (kind < 16) {
                size_t max = rnd(&x) % (ref[s].cap + 1);
                size_t want = ref[s].n > max ? ref[s].n - max : 0;
                assert_int_equal(prefix_index_trim(ix, s, max), want);
                if (ref[s].n > max)
                    ref[s].n = max;
            } else if (kind < 17) {
                double cutoff = now - (double)(rnd(&x) % 40);
                size_t want = 0;
                while (ref[s].n && ref[s].t[ref[s].n - 1] < cutoff) {
                    ref[s].n--;
                    want++;
                }
                assert_int_equal(prefix_index_expire(ix, s, cutoff), want);
            } else {
                uint32_t counts[R_SLOTS], run[R_SLOTS], rc[R_SLOTS] = {0}, rr[R_SLOTS] = {0};
                size_t walked = 0;
                for (; walked < n; walked++) {
                    bool any = false;
                    for (int t = 0; t < R_SLOTS; t++)
                        if (ref_has(&ref[t], hs[walked])) {
                            any = true;
                            rc[t]++;
                            if (rr[t] == walked)
                                rr[t]++;
                        }
                    if (!any)
                        break;
                }
                assert_int_equal(prefix_index_match(ix, hs, n, counts, run), walked);
                for (int t = 0; t < R_SLOTS; t++) {
                    assert_int_equal(counts[t], rc[t]);
                    assert_int_equal(run[t], rr[t]);
                }
            }
            for (int t = 0; t < R_SLOTS; t++)
                assert_int_equal(prefix_index_size(ix, t), ref[t].n);
        }
        prefix_index_free(ix);
    }
}

/* ---- the scorer through the scheduler --------------------------------------------------- */

static char yaml[1024];

static const char *config(const char *params)
{
    snprintf(yaml, sizeof yaml,
             "plugins:\n"
             "- type: prefix-cache-scorer\n"
             "  parameters: %s\n"
             "- type: max-score-picker\n"
             "schedulingProfiles:\n"
             "- name: default\n"
             "  plugins:\n"
             "  - pluginRef: prefix-cache-scorer\n"
             "  - pluginRef: max-score-picker\n",
             params);
    return yaml;
}

#define PCS "prefix-cache-scorer"

static void test_scorer_matching(void **state)
{
    (void)state;
    fx *f = fx_new(config("{autoTune: false, blockSize: 8}"), 3, 1);
    assert_non_null(f);
    sched_request r1 = fx_text("r1", "AAAAAAAABBBBBBBBCCCCCCCC");
    assert_non_null(fx_pick(f, &r1));
    for (size_t i = 0; i < 3; i++)
        assert_true(fx_score(f, PCS, i) == 0.0);
    fx_assign(f, &r1, &f->eps[1]);
    sched_request r2 = fx_text("r2", "AAAAAAAABBBBBBBBDDDDDDDD");
    assert_ptr_equal(fx_pick(f, &r2), &f->eps[1]);
    assert_float_equal(fx_score(f, PCS, 1), 2.0 / 3.0, 1e-12);
    assert_true(fx_score(f, PCS, 0) == 0.0 && fx_score(f, PCS, 2) == 0.0);
    fx_assign(f, &r2, &f->eps[2]);
    /* 3 full blocks and a partial one (dropped): ep1 holds all 3, ep2 the first 2. */
    sched_request r3 = fx_text("r3", "AAAAAAAABBBBBBBBCCCCCCCCxyz");
    assert_ptr_equal(fx_pick(f, &r3), &f->eps[1]);
    assert_float_equal(fx_score(f, PCS, 1), 1.0, 1e-12);
    assert_float_equal(fx_score(f, PCS, 2), 2.0 / 3.0, 1e-12);
    /* Shorter than one block: nothing to match. */
    sched_request r4 = fx_text("r4", "AAAAAAA");
    assert_non_null(fx_pick(f, &r4));
    assert_true(fx_score(f, PCS, 1) == 0.0);
    /* Another model roots a different chain. */
    sched_request r5 = fx_text("r5", "AAAAAAAABBBBBBBBCCCCCCCC");
    r5.model = "other";
    assert_non_null(fx_pick(f, &r5));
    assert_true(fx_score(f, PCS, 1) == 0.0);
    fx_free(f);
}

static void test_scorer_lru_and_truncation(void **state)
{
    (void)state;
    /* Capacity 2: routing 3 blocks keeps the last 2; the walk stops at block 1. */
    fx *f = fx_new(config("{autoTune: false, blockSize: 8, lruCapacityPerServer: 2}"), 2, 1);
    assert_non_null(f);
    sched_request r1 = fx_text("r1", "AAAAAAAABBBBBBBBCCCCCCCC");
    fx_assign(f, &r1, &f->eps[0]);
    assert_non_null(fx_pick(f, &r1));
    assert_true(fx_score(f, PCS, 0) == 0.0);
    fx_free(f);

    /* maxPrefixBlocksToMatch 2: only the first 2 blocks are hashed, stored and matched. */
    f = fx_new(config("{autoTune: false, blockSize: 8, maxPrefixBlocksToMatch: 2}"), 2, 1);
    assert_non_null(f);
    fx_assign(f, &r1, &f->eps[0]);
    sched_request r2 = fx_text("r2", "AAAAAAAABBBBBBBBZZZZZZZZ");
    assert_ptr_equal(fx_pick(f, &r2), &f->eps[0]);
    assert_float_equal(fx_score(f, PCS, 0), 1.0, 1e-12);
    fx_free(f);
}

static void test_scorer_autotune(void **state)
{
    (void)state;
    fx *f = fx_new(config("{blockSize: 8}"), 2, 1);
    assert_non_null(f);
    f->eps[0].m.block_size = 4;   /* -> 16-character blocks */
    f->eps[1].m.block_size = 4;
    f->eps[1].m.num_gpu_blocks = 1;
    sched_request p1 = fx_text("p1", "AAAAAAAAAAAAAAAAXXXXXXXXXXXXXXXX");
    assert_non_null(fx_pick(f, &p1));
    fx_assign(f, &p1, &f->eps[0]);
    /* Differs at character 8: a hit with 8-character blocks, none with 16. */
    sched_request p2 = fx_text("p2", "AAAAAAAAZZZZZZZZZZZZZZZZZZZZZZZZ");
    assert_non_null(fx_pick(f, &p2));
    assert_true(fx_score(f, PCS, 0) == 0.0);
    sched_request p3 = fx_text("p3", "AAAAAAAAAAAAAAAAYYYYYYYYYYYYYYYY");
    assert_non_null(fx_pick(f, &p3));
    assert_float_equal(fx_score(f, PCS, 0), 0.5, 1e-12);
    /* ep1's LRU holds num_gpu_blocks = 1 entry: only p1's second block survives. GIE's walk
     * still credits it, because ep0 keeps block 1 alive in the map. */
    fx_assign(f, &p1, &f->eps[1]);
    assert_non_null(fx_pick(f, &p1));
    assert_float_equal(fx_score(f, PCS, 0), 1.0, 1e-12);
    assert_float_equal(fx_score(f, PCS, 1), 0.5, 1e-12);
    fx_free(f);
}

static void test_scorer_tokens(void **state)
{
    (void)state;
    fx *f = fx_new(config("{autoTune: false, blockSize: 8}"), 2, 1);   /* 2 tokens a block */
    assert_non_null(f);
    uint32_t t1[5] = {1, 2, 3, 4, 5}, t2[4] = {1, 2, 3, 9};
    sched_request r1 = fx_tokens("t1", t1, 5), r2 = fx_tokens("t2", t2, 4);
    fx_assign(f, &r1, &f->eps[0]);
    assert_ptr_equal(fx_pick(f, &r2), &f->eps[0]);
    assert_float_equal(fx_score(f, PCS, 0), 0.5, 1e-12);
    fx_free(f);
}

/* The match is published for no-hit-lru-scorer (default prefixPluginType/Name: this
 * scorer): a cold request is spread by LRU rank, a request with a hit gets 0.5 everywhere. */
static void test_scorer_feeds_no_hit_lru(void **state)
{
    (void)state;
    fx *f = fx_new("plugins:\n"
                   "- type: prefix-cache-scorer\n"
                   "  parameters: {autoTune: false, blockSize: 8}\n"
                   "- type: no-hit-lru-scorer\n"
                   "- type: max-score-picker\n",
                   3, 1);
    assert_non_null(f);
    sched_request cold = fx_text("cold", "AAAAAAAABBBBBBBB");
    assert_ptr_equal(fx_route(f, &cold), &f->eps[0]);            /* never-used pods rank by order */
    assert_float_equal(fx_score(f, "no-hit-lru-scorer", 0), 1.0, 1e-12);
    assert_float_equal(fx_score(f, "no-hit-lru-scorer", 2), 0.0, 1e-12);
    sched_request warm = fx_text("warm", "AAAAAAAACCCCCCCC");
    assert_ptr_equal(fx_pick(f, &warm), &f->eps[0]);
    for (size_t i = 0; i < 3; i++)
        assert_float_equal(fx_score(f, "no-hit-lru-scorer", i), 0.5, 1e-12);
    sched_request cold2 = fx_text("cold2", "ZZZZZZZZ");
    assert_ptr_equal(fx_pick(f, &cold2), &f->eps[1]);            /* ep0 is now the most recent */
    fx_free(f);
}

static void test_scorer_bad_params(void **state)
{
    (void)state;
    const char *bad[] = {"{blockSize: 0}", "{autoTune: maybe}", "{lruCapacityPerServer: -3}",
                         "{maxPrefixBlocksToMatch: x}"};
    const char *field[] = {"blockSize", "autoTune", "lruCapacityPerServer", "maxPrefixBlocksToMatch"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kv_err err = {0};
        const char *y = config(bad[i]);
        epc_config *cfg = epc_load_string(y, strlen(y), "bad.yaml", registry_types, &err);
        assert_non_null(cfg);
        sched_env env = {0};
        sched *s = sched_new(cfg, &env, &err);
        assert_null(s);
        assert_non_null(strstr(err.msg, field[i]));
        assert_non_null(strstr(err.msg, "bad.yaml:3:"));
        epc_free(cfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_text),
        cmocka_unit_test(test_hash_tokens),
        cmocka_unit_test(test_index_match_rules),
        cmocka_unit_test(test_index_lru),
        cmocka_unit_test(test_index_vs_reference),
        cmocka_unit_test(test_scorer_matching),
        cmocka_unit_test(test_scorer_lru_and_truncation),
        cmocka_unit_test(test_scorer_autotune),
        cmocka_unit_test(test_scorer_tokens),
        cmocka_unit_test(test_scorer_feeds_no_hit_lru),
        cmocka_unit_test(test_scorer_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
