/* test_peer_policies: the peer routers' policies through the real scheduler, against
 * cases worked by hand from their formulas (docs/upstream/peer-routers.md §1-2).
 *   sglang-cache-aware-picker: both branches of the imbalance gate and both of its edges,
 *     loads from the sched's counts over stale endpoint structs,
 *     the cache-threshold edge, the min-load fallback, insertion on the imbalanced branch,
 *     interval eviction, token-id prompts.
 *   dynamo-kv-picker: the cost arithmetic pinned by where decisions flip as the credit and
 *     prefill scale move, the in-flight bookkeeping, TTL expiry of the approximate tracker,
 *     per-tier credit from a KV-event index, argmin ties, softmax frequencies. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "blockkeys.h"
#include "config.h"
#include "registry.h"
#include "kvindex.h"
#include "support/sched_fixture.h"

static char yaml[2048];

static fx *picker(const char *type, const char *params, size_t n_eps, uint64_t seed)
{
    snprintf(yaml, sizeof yaml,
             "plugins:\n"
             "- type: %s\n"
             "  parameters: %s\n"
             "schedulingProfiles:\n"
             "- name: default\n"
             "  plugins:\n"
             "  - pluginRef: %s\n",
             type, params, type);
    fx *f = fx_new(yaml, n_eps, seed);
    assert_non_null(f);
    return f;
}

/* Raises an endpoint's in-flight count with requests that carry no prompt. */
static void load(fx *f, size_t ep, int n)
{
    sched_request empty = fx_text("load", NULL);
    for (int i = 0; i < n; i++)
        fx_assign(f, &empty, &f->eps[ep]);
}

static void unload(fx *f, size_t ep, int n)
{
    sched_request empty = fx_text("load", NULL);
    for (int i = 0; i < n; i++)
        fx_done(f, &empty, &f->eps[ep]);
}

/* ---- SGLang ------------------------------------------------------------------------------ */

#define SGL "sglang-cache-aware-picker"
#define P32 "AAAAAAAABBBBBBBBCCCCCCCCDDDDDDDD"   /* 4 blocks of 8 characters */

static void test_sglang_cache_and_fallback(void **state)
{
    (void)state;
    fx *f = picker(SGL, "{blockSize: 8}", 3, 1);
    sched_request p = fx_text("p", P32);
    fx_assign(f, &p, &f->eps[2]);                                  /* ep2: tree P, load 1 */
    assert_ptr_equal(fx_pick(f, &p), &f->eps[2]);                  /* rate 1.0 > 0.3 */
    sched_request cold = fx_text("c", "ZZZZZZZZYYYYYYYYXXXXXXXXWWWWWWWW");
    assert_ptr_equal(fx_pick(f, &cold), &f->eps[0]);               /* no match: first least loaded */
    sched_request quarter = fx_text("q", "AAAAAAAAZZZZZZZZZZZZZZZZZZZZZZZZ");
    assert_ptr_equal(fx_pick(f, &quarter), &f->eps[0]);            /* 0.25 <= 0.3: min load */
    fx_free(f);

    f = picker(SGL, "{blockSize: 8, cacheThreshold: 0.2}", 3, 1);
    fx_assign(f, &p, &f->eps[2]);
    assert_ptr_equal(fx_pick(f, &quarter), &f->eps[2]);            /* 0.25 > 0.2 */
    sched_request shortp = fx_text("s", "AAAAAAA");                /* no full block: rate 0 */
    assert_ptr_equal(fx_pick(f, &shortp), &f->eps[0]);
    fx_free(f);
}

static void test_sglang_threshold_edge(void **state)
{
    (void)state;
    sched_request p = fx_text("p", P32), half = fx_text("h", "AAAAAAAABBBBBBBBZZZZZZZZZZZZZZZZ");
    fx *f = picker(SGL, "{blockSize: 8, cacheThreshold: 0.5}", 2, 1);
    fx_assign(f, &p, &f->eps[1]);
    assert_ptr_equal(fx_pick(f, &half), &f->eps[0]);               /* 0.5 is not > 0.5 */
    fx_free(f);
    f = picker(SGL, "{blockSize: 8, cacheThreshold: 0.49}", 2, 1);
    fx_assign(f, &p, &f->eps[1]);
    assert_ptr_equal(fx_pick(f, &half), &f->eps[1]);
    fx_free(f);
}

static void test_sglang_imbalance_gate(void **state)
{
    (void)state;
    sched_request p = fx_text("p", P32);
    sched_request q = fx_text("q", "QQQQQQQQRRRRRRRRSSSSSSSSTTTTTTTT");
    fx *f = picker(SGL, "{blockSize: 8, balanceAbsThreshold: 2, balanceRelThreshold: 1.5}", 3, 1);
    fx_assign(f, &p, &f->eps[0]);
    load(f, 0, 3);   /* loads 4, 1, 2: 4-1 = 3 > 2 and 4 > 1.5 x 1 */
    load(f, 1, 1);
    load(f, 2, 2);
    assert_ptr_equal(fx_pick(f, &p), &f->eps[1]);                  /* shortest queue despite the match */
    assert_ptr_equal(fx_route(f, &q), &f->eps[1]);                 /* Q inserted into ep1's tree */
    unload(f, 0, 3);                                               /* loads 1, 2, 2: balanced */
    assert_ptr_equal(fx_pick(f, &q), &f->eps[1]);                  /* cache route to ep1, not min ep0 */
    fx_free(f);

    /* The loads are the sched's counts, not whatever a driver's endpoint structs hold
     * (a snapshot rebuilt each request): the picker reads in_flight, so sched_schedule
     * refreshes it. Stale 0 and 9 would send p to ep0. */
    f = picker(SGL, "{blockSize: 8, balanceAbsThreshold: 2, balanceRelThreshold: 1.5}", 2, 1);
    fx_assign(f, &p, &f->eps[0]);
    load(f, 0, 3);                                                 /* loads 4, 1 */
    load(f, 1, 1);
    f->eps[0].in_flight = 0;
    f->eps[1].in_flight = 9;
    assert_ptr_equal(fx_pick(f, &p), &f->eps[1]);
    assert_int_equal(f->eps[0].in_flight, 4);
    fx_free(f);

    /* Absolute edge: 3 - 1 = 2 is not > 2. */
    f = picker(SGL, "{blockSize: 8, balanceAbsThreshold: 2, balanceRelThreshold: 1.5}", 2, 1);
    fx_assign(f, &p, &f->eps[0]);
    load(f, 0, 2);
    load(f, 1, 1);
    assert_ptr_equal(fx_pick(f, &p), &f->eps[0]);
    load(f, 0, 1);                                                 /* 4 - 1 = 3: imbalanced */
    assert_ptr_equal(fx_pick(f, &p), &f->eps[1]);
    fx_free(f);

    /* Relative edge: 6 is not > 1.5 x 4. */
    f = picker(SGL, "{blockSize: 8, balanceAbsThreshold: 1, balanceRelThreshold: 1.5}", 2, 1);
    fx_assign(f, &p, &f->eps[0]);
    load(f, 0, 5);
    load(f, 1, 4);
    assert_ptr_equal(fx_pick(f, &p), &f->eps[0]);
    load(f, 0, 1);                                                 /* 7 > 6 */
    assert_ptr_equal(fx_pick(f, &p), &f->eps[1]);
    fx_free(f);
}

static void test_sglang_eviction(void **state)
{
    (void)state;
    /* maxTreeSize 16 characters = 2 blocks, checked every 10 s. */
    fx *f = picker(SGL, "{blockSize: 8, cacheThreshold: 0.6, maxTreeSize: 16, evictionIntervalSecs: 10}", 2, 1);
    sched_request p = fx_text("p", P32);
    assert_non_null(fx_pick(f, &p));                               /* t=0 starts the interval */
    fx_assign(f, &p, &f->eps[1]);
    f->now = 5;
    assert_ptr_equal(fx_pick(f, &p), &f->eps[1]);                  /* all 4 blocks */
    f->now = 11;
    assert_ptr_equal(fx_pick(f, &p), &f->eps[0]);                  /* leaves gone: 0.5 <= 0.6 */
    fx_free(f);
    /* The same with the interval disabled keeps the whole tree. */
    f = picker(SGL, "{blockSize: 8, cacheThreshold: 0.6, maxTreeSize: 16, evictionIntervalSecs: 0}", 2, 1);
    assert_non_null(fx_pick(f, &p));
    fx_assign(f, &p, &f->eps[1]);
    f->now = 11;
    assert_ptr_equal(fx_pick(f, &p), &f->eps[1]);
    fx_free(f);
}

static void test_sglang_tokens(void **state)
{
    (void)state;
    fx *f = picker(SGL, "{blockSize: 8, cacheThreshold: 0.45}", 2, 1);   /* 2 tokens a block */
    uint32_t t1[8] = {1, 2, 3, 4, 5, 6, 7, 8}, t2[8] = {1, 2, 3, 4, 9, 9, 9, 9}, t3[9] = {1, 2, 3, 4, 9, 9, 9, 9, 9};
    sched_request r1 = fx_tokens("t1", t1, 8), r2 = fx_tokens("t2", t2, 8), r3 = fx_tokens("t3", t3, 9);
    fx_assign(f, &r1, &f->eps[1]);
    assert_ptr_equal(fx_pick(f, &r2), &f->eps[1]);                 /* 4/8 tokens */
    assert_ptr_equal(fx_pick(f, &r3), &f->eps[0]);                 /* 4/9 tokens <= 0.45 */
    fx_free(f);
}

/* ---- Dynamo ------------------------------------------------------------------------------ */

#define DYN "dynamo-kv-picker"

static const uint32_t R1[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint32_t R2[12] = {1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 23};

/* ep0 is serving R1 (2 blocks of 4 tokens: prefill 2, decode 2) and holds its 2 blocks;
 * R2 shares those 2 blocks and adds 1. By hand, with scale s and credit c:
 *   ep0 = s x max(2 + 3 - 2c, 0) + (2 + 3)      ep1 = s x 3 + 3. */
/* The index of the endpoint f picks for r; f is freed. */
static size_t pick_and_free(fx *f, const sched_request *r)
{
    sched_endpoint *ep = fx_pick(f, r);
    assert_non_null(ep);
    size_t i = (size_t)(ep - f->eps);
    fx_free(f);
    return i;
}

static size_t dynamo_r2(const char *params, bool complete_r1)
{
    fx *f = picker(DYN, params, 2, 7);
    sched_request r1 = fx_tokens("r1", R1, 8), r2 = fx_tokens("r2", R2, 12);
    fx_assign(f, &r1, &f->eps[0]);
    if (complete_r1)
        fx_done(f, &r1, &f->eps[0]);
    return pick_and_free(f, &r2);
}

static void test_dynamo_cost_arithmetic(void **state)
{
    (void)state;
    assert_int_equal(dynamo_r2("{blockSize: 4, overlapScoreCredit: 2.5}", false), 0);   /* 5 < 6 */
    assert_int_equal(dynamo_r2("{blockSize: 4, overlapScoreCredit: 1.5}", false), 1);   /* 7 > 6 */
    assert_int_equal(dynamo_r2("{blockSize: 4}", false), 1);                           /* 8 > 6 */
    /* s = 2: ep0 = 2(5 - 2c) + 5, ep1 = 9; flips at c = 1.5. */
    assert_int_equal(dynamo_r2("{blockSize: 4, prefillLoadScale: 2, overlapScoreCredit: 1.6}", false), 0);
    assert_int_equal(dynamo_r2("{blockSize: 4, prefillLoadScale: 2, overlapScoreCredit: 1.4}", false), 1);
    /* c = 2: 6 = 6, a tie broken by the smaller tracked tree (ep1 holds nothing). */
    assert_int_equal(dynamo_r2("{blockSize: 4, overlapScoreCredit: 2}", false), 1);
    /* R1 complete: its load is gone, its blocks stay: ep0 = max(3 - 2, 0) + 3 = 4 < 6. */
    assert_int_equal(dynamo_r2("{blockSize: 4}", true), 0);
    /* Credit 0 ignores the cache: ep0 = 5 + 5 with R1 in flight, 3 + 3 when done: a tie
     * (tree 2 vs 0) that goes to ep1. */
    assert_int_equal(dynamo_r2("{blockSize: 4, overlapScoreCredit: 0}", true), 1);
}

static void test_dynamo_ttl(void **state)
{
    (void)state;
    fx *f = picker(DYN, "{blockSize: 4, overlapScoreCredit: 2.5, approxTtlSecs: 10}", 2, 7);
    sched_request r1 = fx_tokens("r1", R1, 8), r2 = fx_tokens("r2", R2, 12);
    fx_assign(f, &r1, &f->eps[0]);
    f->now = 5;
    assert_ptr_equal(fx_pick(f, &r2), &f->eps[0]);                 /* 5 < 6 */
    f->now = 10.5;
    assert_ptr_equal(fx_pick(f, &r2), &f->eps[1]);                 /* expired: 10 > 6 */
    fx_free(f);
}

static void test_dynamo_ties_random(void **state)
{
    (void)state;
    fx *f = picker(DYN, "{blockSize: 4}", 2, 11);
    uint32_t t[4] = {9, 9, 9, 9};
    sched_request r = fx_tokens("r", t, 4);
    int hits[2] = {0, 0};
    for (int i = 0; i < 400; i++) {
        sched_endpoint *ep = fx_pick(f, &r);
        assert_non_null(ep);
        hits[ep - f->eps]++;
    }
    assert_true(hits[0] > 140 && hits[1] > 140);
    fx_free(f);
}

/* Costs 2, 4, 6 (ep1 serves one 1-block request, ep2 two): normalised 0, 0.5, 1, so at
 * temperature 1 the probabilities are e^0, e^-0.5, e^-1 over their sum. */
static void test_dynamo_softmax(void **state)
{
    (void)state;
    const char *params[] = {"{blockSize: 4, routerTemperature: 1.0}", "{blockSize: 4}"};
    for (int k = 0; k < 2; k++) {
        fx *f = picker(DYN, params[k], 3, 2024);
        uint32_t a[4] = {100, 101, 102, 103}, b[4] = {200, 201, 202, 203}, c[4] = {300, 301, 302, 303};
        uint32_t x[4] = {7, 7, 7, 8};
        sched_request ra = fx_tokens("a", a, 4), rb = fx_tokens("b", b, 4), rc = fx_tokens("c", c, 4);
        sched_request rx = fx_tokens("x", x, 4);
        fx_assign(f, &ra, &f->eps[1]);
        fx_assign(f, &rb, &f->eps[2]);
        fx_assign(f, &rc, &f->eps[2]);
        int hits[3] = {0, 0, 0};
        const int n = 6000;
        for (int i = 0; i < n; i++) {
            sched_endpoint *ep = fx_pick(f, &rx);
            assert_non_null(ep);
            hits[ep - f->eps]++;
        }
        if (k == 1) {
            assert_int_equal(hits[0], n);                          /* temperature 0: argmin */
        } else {
            double z = 1 + exp(-0.5) + exp(-1.0);
            double want[3] = {1 / z, exp(-0.5) / z, exp(-1.0) / z};
            assert_true(hits[0] > hits[1] && hits[1] > hits[2]);
            for (int i = 0; i < 3; i++)
                assert_true(fabs((double)hits[i] / n - want[i]) < 0.03);
        }
        fx_free(f);
    }
}

/* With a precise-prefix-cache-scorer in the config its index is the overlap source, and
 * each leading block counts in its best tier. Request: 16 tokens = 4 blocks of 4. ep0 holds
 * block 0 on GPU, ep1 blocks 0-1 on CPU, ep2 blocks 0-3 on disk. cost = (4 - credit) + 4. */
static size_t dynamo_tiers(const char *params)
{
    snprintf(yaml, sizeof yaml,
             "plugins:\n"
             "- type: precise-prefix-cache-scorer\n"
             "  parameters: {tokenProcessorConfig: {blockSize: 4}}\n"
             "- type: dynamo-kv-picker\n"
             "  parameters: %s\n"
             "schedulingProfiles:\n"
             "- name: default\n"
             "  plugins:\n"
             "  - pluginRef: dynamo-kv-picker\n",
             params);
    fx *f = fx_new(yaml, 3, 5);
    assert_non_null(f);
    void *v = NULL;
    assert_int_equal(sched_services(f->s, "kvsource", &v, 1), 1);
    sched_kvsource *src = v;
    uint32_t tok[16];
    for (int i = 0; i < 16; i++)
        tok[i] = (uint32_t)(1000 + i);
    uint64_t keys[4];
    assert_int_equal(blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tok, 16, NULL, 0, NULL, keys, 4),
                     4);
    kv_err err = {0};
    const kvtier tier[3] = {KVTIER_GPU, KVTIER_CPU, KVTIER_OTHER};
    const size_t held[3] = {1, 2, 4};
    for (int e = 0; e < 3; e++) {
        int slot = kvindex_endpoint_add(src->index, f->names[e], &err);
        assert_true(slot >= 0);
        assert_int_equal(kvindex_store(src->index, slot, tier[e], NULL, 0, keys, held[e], &err), KV_OK);
    }
    sched_request r = fx_tokens("r", tok, 16);
    return pick_and_free(f, &r);
}

static void test_dynamo_tier_credit(void **state)
{
    (void)state;
    /* credits 1, 2 x 0.75, 4 x 0.25 -> costs 7, 6.5, 7 */
    assert_int_equal(dynamo_tiers("{}"), 1);
    /* host 0.4, disk 0.3: credits 1, 0.8, 1.2 -> 7, 7.2, 6.8 */
    assert_int_equal(dynamo_tiers("{hostCacheHitWeight: 0.4, diskCacheHitWeight: 0.3}"), 2);
    /* host 0.4, disk 0.2: credits 1, 0.8, 0.8 -> 7, 7.2, 7.2 */
    assert_int_equal(dynamo_tiers("{hostCacheHitWeight: 0.4, diskCacheHitWeight: 0.2}"), 0);
    /* device credit 0.1: credits 0.1, 1.5, 1 -> 7.9, 6.5, 7 */
    assert_int_equal(dynamo_tiers("{overlapScoreCredit: 0.1, diskCacheHitWeight: 0.3}"), 1);
}

static void test_bad_params(void **state)
{
    (void)state;
    struct {
        const char *type, *params, *field;
    } bad[] = {
        {SGL, "{cacheThreshold: 1.5}", "cacheThreshold"},
        {SGL, "{balanceAbsThreshold: -1}", "balanceAbsThreshold"},
        {SGL, "{blockSize: 2}", "blockSize"},
        {DYN, "{routerTemperature: -1}", "routerTemperature"},
        {DYN, "{hostCacheHitWeight: 2}", "hostCacheHitWeight"},
        {DYN, "{blockSize: zero}", "blockSize"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(yaml, sizeof yaml, "plugins:\n- type: %s\n  parameters: %s\n", bad[i].type, bad[i].params);
        kv_err err = {0};
        epc_config *cfg = epc_load_string(yaml, strlen(yaml), "bad.yaml", registry_types, &err);
        assert_non_null(cfg);
        sched_env env = {0};
        assert_null(sched_new(cfg, &env, &err));
        assert_non_null(strstr(err.msg, bad[i].field));
        assert_non_null(strstr(err.msg, "bad.yaml:3:"));
        epc_free(cfg);
    }
}

/* The three presets route token-id and text requests end to end; with every pod alike,
 * a repeated prompt goes back where the first one went (the approximate scorers have
 * learnt it; the Dynamo preset's event index is empty, so it balances by load instead). */
static void test_presets_route(void **state)
{
    (void)state;
    const char *names[] = {"llm-d-approximate", "sglang-cache-aware", "dynamo-kv"};
    const bool sticky[] = {true, true, false};
    uint32_t tok[256];
    for (int i = 0; i < 256; i++)
        tok[i] = (uint32_t)(i * 7 + 1);
    for (size_t k = 0; k < 3; k++) {
        fx *f = fx_preset(names[k], 3, 3);
        if (!f)
            fail_msg("preset %s did not build", names[k]);
        for (int i = 0; i < 3; i++)
            f->eps[i].m = (sched_metrics){.valid = true, .block_size = 16, .num_gpu_blocks = 1000};
        sched_request r = fx_tokens("a", tok, 256);
        sched_result res1, res2;
        assert_int_equal(fx_run(f, &r, 3, NULL, &res1), KV_OK);
        sched_pre_request(f->s, &r, &res1);
        assert_int_equal(fx_run(f, &r, 3, NULL, &res2), KV_OK);
        if (sticky[k])
            assert_ptr_equal(res1.targets[0], res2.targets[0]);
        else
            assert_ptr_not_equal(res1.targets[0], res2.targets[0]);
        fx_done(f, &r, res1.targets[0]);
        sched_request t = fx_text("b", "a text prompt that is long enough for a few blocks of sixteen");
        assert_int_equal(fx_run(f, &t, 3, NULL, &res1), KV_OK);
        fx_free(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sglang_cache_and_fallback),
        cmocka_unit_test(test_sglang_threshold_edge),
        cmocka_unit_test(test_sglang_imbalance_gate),
        cmocka_unit_test(test_sglang_eviction),
        cmocka_unit_test(test_sglang_tokens),
        cmocka_unit_test(test_dynamo_cost_arithmetic),
        cmocka_unit_test(test_dynamo_ttl),
        cmocka_unit_test(test_dynamo_ties_random),
        cmocka_unit_test(test_dynamo_softmax),
        cmocka_unit_test(test_dynamo_tier_credit),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_presets_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
