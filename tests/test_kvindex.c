/* test_kvindex: the KV-block index against hand-worked cases and, in the property
 * test, against a naive reference model (plain arrays, linear search, written from
 * the semantics in kvindex.h, not from kvindex.c) over long random event streams. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvindex.h"

static kvindex *new_index(size_t capacity, uint32_t max_ep)
{
    kv_err err = {0};
    kvindex_config cfg = {.capacity = capacity, .max_endpoints = max_ep};
    kvindex *ix = kvindex_new(&cfg, &err);
    if (!ix) fail_msg("kvindex_new: %s", err.msg);
    return ix;
}

static int add_ep(kvindex *ix, const char *name)
{
    kv_err err = {0};
    int s = kvindex_endpoint_add(ix, name, &err);
    if (s < 0) fail_msg("endpoint_add %s: %s", name, err.msg);
    return s;
}

static void store(kvindex *ix, int slot, kvtier tier, const uint64_t *ek, size_t ne, const uint64_t *rk, size_t nr)
{
    kv_err err = {0};
    int rc = kvindex_store(ix, slot, tier, ek, ne, rk, nr, &err);
    if (rc != KV_OK) fail_msg("kvindex_store: %s", err.msg);
}

static void test_store_remove_clear(void **state)
{
    kvindex *ix = new_index(0, 8);
    int a = add_ep(ix, "10.0.0.1:8000"), b = add_ep(ix, "10.0.0.2:8000");
    uint64_t ek[3] = {101, 102, 103}, rk[3] = {11, 12, 13};
    store(ix, a, KVTIER_GPU, ek, 3, rk, 3);
    store(ix, b, KVTIER_GPU, NULL, 0, rk, 2);   /* pure request-key store */
    assert_int_equal(kvindex_tiers(ix, a, 13), 1u << KVTIER_GPU);
    assert_int_equal(kvindex_tiers(ix, b, 13), 0);

    kvindex_match m[8];
    assert_int_equal(kvindex_lookup(ix, rk, 3, m), 3);
    assert_int_equal(m[a].blocks, 3);
    assert_int_equal(m[b].blocks, 2);
    assert_true(fabsf(m[a].score - 3.0f) < 1e-6f);

    uint64_t got = 0;
    assert_true(kvindex_request_key(ix, a, 102, &got));
    assert_int_equal(got, 12);
    assert_false(kvindex_request_key(ix, b, 102, &got));   /* mappings are per endpoint */

    /* BlockRemoved of the middle block: a's prefix is cut at block 1. */
    assert_int_equal(kvindex_remove(ix, a, KVTIER_GPU, &ek[1], 1), 1);
    assert_false(kvindex_request_key(ix, a, 102, NULL));
    assert_int_equal(kvindex_lookup(ix, rk, 3, m), 2);
    assert_int_equal(m[a].blocks, 1);
    assert_int_equal(m[b].blocks, 2);
    /* Removing in a tier the block is not held in, or an unknown key, removes nothing. */
    assert_int_equal(kvindex_remove(ix, a, KVTIER_CPU, ek, 1), 0);
    uint64_t unknown = 999;
    assert_int_equal(kvindex_remove(ix, a, KVTIER_GPU, &unknown, 1), 0);

    kvindex_stats st;
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.blocks, 3);       /* 13 still held by a */
    assert_int_equal(st.entries, 4);      /* a: 11, 13; b: 11, 12 */
    assert_int_equal(st.engine_keys, 2);
    assert_int_equal(kvindex_endpoint_entries(ix, a), 2);
    assert_int_equal(kvindex_endpoint_entries(ix, b), 2);

    kvindex_clear_endpoint(ix, a);
    assert_string_equal(kvindex_endpoint_name(ix, a), "10.0.0.1:8000");
    assert_int_equal(kvindex_tiers(ix, a, 11), 0);
    assert_false(kvindex_request_key(ix, a, 101, NULL));
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.blocks, 2);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.engine_keys, 0);
    assert_int_equal(st.stores, 2);
    assert_int_equal(st.admissions, 5);   /* keys, as llm-d-kv-cache counts them: 3 + 2 */
    assert_int_equal(kvindex_endpoint_entries(ix, a), 0);
    assert_int_equal(kvindex_endpoint_entries(ix, b), 2);
    assert_int_equal(st.removes, 3);
    assert_int_equal(st.clears, 1);
    assert_int_equal(st.lookups, 2);
    assert_true(st.bytes > 0);
    kvindex_free(ix);
}

static void test_tiers_and_weights(void **state)
{
    kvindex *ix = new_index(0, 8);
    int g = add_ep(ix, "g"), c = add_ep(ix, "c"), mixed = add_ep(ix, "mixed"), o = add_ep(ix, "o"), both = add_ep(ix, "both");
    uint64_t rk[4] = {1, 2, 3, 4}, ek[4] = {41, 42, 43, 44}, ekc[2] = {7, 8};
    store(ix, g, KVTIER_GPU, ek, 4, rk, 4);
    store(ix, c, KVTIER_CPU, NULL, 0, rk, 4);
    store(ix, mixed, KVTIER_GPU, ek, 2, rk, 2);
    store(ix, mixed, KVTIER_CPU, ekc, 2, rk + 2, 2);
    store(ix, o, KVTIER_OTHER, NULL, 0, rk, 3);
    store(ix, both, KVTIER_GPU, NULL, 0, rk, 4);
    store(ix, both, KVTIER_CPU, NULL, 0, rk, 4);
    assert_int_equal(kvindex_tiers(ix, both, 2), (1u << KVTIER_GPU) | (1u << KVTIER_CPU));

    kvindex_match m[8];
    assert_int_equal(kvindex_lookup(ix, rk, 4, m), 4);
    assert_true(fabsf(m[g].score - 4.0f) < 1e-5f);
    assert_true(fabsf(m[c].score - 3.2f) < 1e-5f);
    assert_true(fabsf(m[mixed].score - 3.6f) < 1e-5f);
    assert_true(fabsf(m[o].score - 3.0f) < 1e-5f);   /* unknown tiers weigh 1.0 */
    assert_int_equal(m[o].blocks, 3);
    assert_true(fabsf(m[both].score - 4.0f) < 1e-5f); /* the best tier counts */
    kvindex_free(ix);

    /* Configured weights where cpu outweighs gpu. */
    kv_err err = {0};
    kvindex_config cfg = {.max_endpoints = 4, .tier_weight = {0.5, 2.0, 0.25}};
    ix = kvindex_new(&cfg, &err);
    assert_non_null(ix);
    g = add_ep(ix, "g");
    both = add_ep(ix, "both");
    o = add_ep(ix, "o");
    store(ix, g, KVTIER_GPU, NULL, 0, rk, 2);
    store(ix, both, KVTIER_GPU, NULL, 0, rk, 2);
    store(ix, both, KVTIER_CPU, NULL, 0, rk + 1, 1);
    store(ix, o, KVTIER_OTHER, NULL, 0, rk, 2);
    m[0].blocks = 77; /* lookup must overwrite every slot */
    assert_int_equal(kvindex_lookup(ix, rk, 2, m), 2);
    assert_true(fabsf(m[g].score - 1.0f) < 1e-6f);
    assert_true(fabsf(m[both].score - 2.5f) < 1e-6f);
    assert_true(fabsf(m[o].score - 0.5f) < 1e-6f);
    assert_int_equal(m[3].blocks, 0);
    assert_true(m[3].score == 0);
    kvindex_free(ix);

    assert_int_equal(kvtier_from_medium("GPU", 3), KVTIER_GPU);
    assert_int_equal(kvtier_from_medium("cpu", 3), KVTIER_CPU);
    assert_int_equal(kvtier_from_medium("CPU_X", 3), KVTIER_CPU);   /* length-bounded */
    assert_int_equal(kvtier_from_medium("STORAGE", 7), KVTIER_OTHER);
    assert_int_equal(kvtier_from_medium(NULL, 0), KVTIER_GPU);
    assert_int_equal(kvtier_from_medium("", 0), KVTIER_GPU);
    assert_string_equal(kvtier_name(KVTIER_CPU), "cpu");
}

static void test_ratio_mapping(void **state)
{
    kvindex *ix = new_index(0, 4);
    int s = add_ep(ix, "p");
    /* Engine block 2x the index block: each engine key owns two request keys. */
    uint64_t ek2[2] = {500, 501}, rk4[4] = {1, 2, 3, 4}, got = 0;
    store(ix, s, KVTIER_GPU, ek2, 2, rk4, 4);
    assert_true(kvindex_request_key(ix, s, 500, &got));
    assert_int_equal(got, 2);   /* the last one mapped: the parent of the next block */
    assert_true(kvindex_request_key(ix, s, 501, &got));
    assert_int_equal(got, 4);
    kvindex_stats st;
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.engine_keys, 4);
    assert_int_equal(kvindex_remove(ix, s, KVTIER_GPU, ek2, 1), 2);
    assert_int_equal(kvindex_tiers(ix, s, 1), 0);
    assert_int_equal(kvindex_tiers(ix, s, 2), 0);
    assert_int_equal(kvindex_tiers(ix, s, 3), 1u << KVTIER_GPU);

    /* Engine block half the index block: two engine keys share a request key, and
     * BlockRemoved of either drops the endpoint's hold (llm-d semantics). */
    uint64_t ek4[4] = {600, 601, 602, 603}, rk2[2] = {21, 22};
    store(ix, s, KVTIER_GPU, ek4, 4, rk2, 2);
    assert_true(kvindex_request_key(ix, s, 601, &got));
    assert_int_equal(got, 21);
    assert_true(kvindex_request_key(ix, s, 602, &got));
    assert_int_equal(got, 22);
    assert_int_equal(kvindex_remove(ix, s, KVTIER_GPU, &ek4[1], 1), 1);
    assert_false(kvindex_request_key(ix, s, 600, NULL));
    assert_int_equal(kvindex_remove(ix, s, KVTIER_GPU, &ek4[0], 1), 0);
    assert_true(kvindex_request_key(ix, s, 603, &got));
    assert_int_equal(got, 22);

    /* A store replaces the engine key's earlier mapping. */
    uint64_t rk_new = 77;
    store(ix, s, KVTIER_GPU, &ek4[3], 1, &rk_new, 1);
    assert_true(kvindex_request_key(ix, s, 603, &got));
    assert_int_equal(got, 77);
    assert_int_equal(kvindex_tiers(ix, s, 22), 1u << KVTIER_GPU);   /* the hold stays */

    /* CPU offload: the gpu copy goes, the cpu copy keeps the mapping alive. */
    store(ix, s, KVTIER_CPU, NULL, 0, &rk_new, 1);
    assert_int_equal(kvindex_remove(ix, s, KVTIER_GPU, &ek4[3], 1), 1);
    assert_true(kvindex_request_key(ix, s, 603, &got));
    assert_int_equal(got, 77);
    assert_int_equal(kvindex_remove(ix, s, KVTIER_CPU, &ek4[3], 1), 1);
    assert_false(kvindex_request_key(ix, s, 603, NULL));
    kvindex_free(ix);
}

static void test_key_zero_and_errors(void **state)
{
    kvindex *ix = new_index(0, 4);
    int s = add_ep(ix, "p");
    uint64_t zero = 0, got = 1;
    store(ix, s, KVTIER_GPU, &zero, 1, &zero, 1);
    assert_true(kvindex_request_key(ix, s, 0, &got));
    assert_int_equal(got, 0);
    kvindex_match m[4];
    assert_int_equal(kvindex_lookup(ix, &zero, 1, m), 1);
    assert_int_equal(kvindex_remove(ix, s, KVTIER_GPU, &zero, 1), 1);
    assert_int_equal(kvindex_lookup(ix, &zero, 1, m), 0);
    assert_int_equal(kvindex_lookup(ix, NULL, 0, m), 0);

    kv_err err = {0};
    assert_int_equal(kvindex_store(ix, 3, KVTIER_GPU, NULL, 0, &zero, 1, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "slot 3"));
    assert_int_equal(kvindex_store(ix, -1, KVTIER_GPU, NULL, 0, &zero, 1, &err), KV_EINVAL);
    assert_int_equal(kvindex_store(ix, s, (kvtier)7, NULL, 0, &zero, 1, &err), KV_EINVAL);
    assert_int_equal(kvindex_store(ix, s, KVTIER_GPU, NULL, 2, &zero, 1, &err), KV_EINVAL);
    assert_int_equal(kvindex_remove(ix, 9, KVTIER_GPU, &zero, 1), 0);
    kvindex_free(ix);

    kvindex_config big = {.max_endpoints = 5000};
    assert_null(kvindex_new(&big, &err));
    assert_int_equal(err.code, KV_ERANGE);
    kvindex_config nan = {.tier_weight = {1.0, NAN, 1.0}};
    assert_null(kvindex_new(&nan, &err));
    assert_int_equal(err.code, KV_EINVAL);
    assert_non_null(strstr(err.msg, "cpu"));
    kvindex_config neg = {.tier_weight = {1.0, -0.5, 1.0}};
    assert_null(kvindex_new(&neg, &err));
}

static void test_capacity_eviction_order(void **state)
{
    kvindex *ix = new_index(3, 4);
    int s = add_ep(ix, "p");
    uint64_t k[5] = {1, 2, 3, 4, 5}, e[5] = {91, 92, 93, 94, 95};
    for (int i = 0; i < 3; i++) store(ix, s, KVTIER_GPU, &e[i], 1, &k[i], 1);
    store(ix, s, KVTIER_CPU, NULL, 0, &k[0], 1);   /* refreshes 1: order 2,3,1 */
    store(ix, s, KVTIER_GPU, &e[3], 1, &k[3], 1);  /* evicts 2 */
    assert_int_equal(kvindex_tiers(ix, s, 2), 0);
    assert_false(kvindex_request_key(ix, s, 92, NULL));   /* no dangling mapping */
    kvindex_match m[4];
    kvindex_lookup(ix, &k[2], 1, m);   /* lookups do not refresh */
    store(ix, s, KVTIER_GPU, &e[4], 1, &k[4], 1);  /* evicts 3 */
    assert_int_equal(kvindex_tiers(ix, s, 3), 0);
    assert_int_equal(kvindex_tiers(ix, s, 1), (1u << KVTIER_GPU) | (1u << KVTIER_CPU));
    assert_int_equal(kvindex_tiers(ix, s, 4), 1u << KVTIER_GPU);
    kvindex_stats st;
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.blocks, 3);
    assert_int_equal(st.evictions, 2);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.engine_keys, 3);

    /* A chain longer than the capacity keeps its tail. */
    uint64_t chain[6] = {50, 51, 52, 53, 54, 55};
    store(ix, s, KVTIER_GPU, NULL, 0, chain, 6);
    assert_int_equal(kvindex_tiers(ix, s, 52), 0);
    assert_int_equal(kvindex_tiers(ix, s, 53), 1u << KVTIER_GPU);
    assert_int_equal(kvindex_lookup(ix, chain + 3, 3, m), 3);
    kvindex_free(ix);
}

static void test_endpoints(void **state)
{
    kvindex *ix = new_index(0, 3);
    kv_err err = {0};
    int a = add_ep(ix, "a"), b = add_ep(ix, "b"), c = add_ep(ix, "c");
    assert_int_equal(a, 0);
    assert_int_equal(b, 1);
    assert_int_equal(c, 2);
    assert_int_equal(add_ep(ix, "b"), 1);   /* existing slot */
    assert_int_equal(kvindex_endpoint_add(ix, "d", &err), KV_EFULL);
    assert_non_null(strstr(err.msg, "\"d\""));
    assert_int_equal(kvindex_endpoint_add(ix, "", &err), KV_EINVAL);
    assert_int_equal(kvindex_endpoint_add(ix, NULL, &err), KV_EINVAL);
    assert_int_equal(kvindex_endpoint_find(ix, "c"), 2);
    assert_int_equal(kvindex_endpoint_find(ix, "zz"), -1);
    assert_null(kvindex_endpoint_name(ix, 3));
    assert_null(kvindex_endpoint_name(ix, -1));

    uint64_t rk[2] = {1, 2}, ek[2] = {10, 20};
    store(ix, b, KVTIER_GPU, ek, 2, rk, 2);
    store(ix, a, KVTIER_GPU, ek, 1, rk, 1);
    kvindex_endpoint_remove(ix, b);
    assert_null(kvindex_endpoint_name(ix, b));
    assert_int_equal(kvindex_endpoint_find(ix, "b"), -1);
    assert_int_equal(kvindex_store(ix, b, KVTIER_GPU, NULL, 0, rk, 1, &err), KV_EINVAL);
    int d = add_ep(ix, "d");
    assert_int_equal(d, b);   /* the freed slot is reused, empty */
    assert_string_equal(kvindex_endpoint_name(ix, d), "d");
    assert_int_equal(kvindex_tiers(ix, d, 1), 0);
    assert_false(kvindex_request_key(ix, d, 10, NULL));
    kvindex_stats st;
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.blocks, 1);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.engine_keys, 1);
    kvindex_free(ix);
}

/* Lookups scan bitmap words only up to the highest slot in use: a holder in a high word
 * must count while that slot lives, and again when the slot is taken anew after the
 * highest slots were freed (the scanned width shrinks and grows back). */
static void test_lookup_width_follows_slots(void **state)
{
    kvindex *ix = new_index(0, 200);
    char name[16];
    int slot[200];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "e%d", i);
        slot[i] = add_ep(ix, name);
    }
    uint64_t rk[3] = {7, 8, 9};
    kvindex_match m[200];
    store(ix, slot[0], KVTIER_GPU, NULL, 0, rk, 2);
    store(ix, slot[150], KVTIER_GPU, NULL, 0, rk, 3);
    store(ix, slot[199], KVTIER_CPU, NULL, 0, rk, 1);
    assert_int_equal(kvindex_lookup(ix, rk, 3, m), 3);
    assert_int_equal(m[0].blocks, 2);
    assert_int_equal(m[150].blocks, 3);
    assert_int_equal(m[199].blocks, 1);
    for (int i = 64; i < 200; i++) kvindex_endpoint_remove(ix, slot[i]);   /* one word left */
    assert_int_equal(kvindex_lookup(ix, rk, 3, m), 2);
    assert_int_equal(m[0].blocks, 2);
    assert_int_equal(m[150].blocks, 0);
    int again = add_ep(ix, "late");
    assert_int_equal(again, 64);   /* the lowest free slot: the scan widens to word 1 */
    store(ix, again, KVTIER_CPU, NULL, 0, rk, 3);
    assert_int_equal(kvindex_lookup(ix, rk, 3, m), 3);
    assert_int_equal(m[0].blocks, 2);
    assert_int_equal(m[64].blocks, 3);
    assert_true(m[64].score > 2.3f && m[64].score < 2.5f);   /* three cpu blocks at 0.8 */
    kvindex_free(ix);
}

/* Enough blocks and mappings to grow every array and table several times over, with
 * side (cpu) bitmaps and three bitmap words per tier. */
/* Keys shared and unshared over and over: each second holder takes a wide entry and gives
 * it back when it leaves, so the index does not grow with the number of times keys were
 * shared, and the one holder left is found as before. */
static void test_sharing_reuses_wide_entries(void **state)
{
    enum { N = 3000 };
    kvindex *ix = new_index(0, 1024);
    int a = add_ep(ix, "pod-a");
    for (int i = 0; i < 700; i++) {   /* b in a later word of the bitmaps than a */
        char name[16];
        snprintf(name, sizeof name, "pad-%d", i);
        add_ep(ix, name);
    }
    int b = add_ep(ix, "pod-b");
    static uint64_t rk[N], ek[N];
    for (int i = 0; i < N; i++) {
        rk[i] = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
        ek[i] = rk[i] ^ 0xABCDEFULL;
    }
    store(ix, a, KVTIER_GPU, NULL, 0, rk, N);
    kvindex_stats st;
    uint64_t bytes_after_first = 0;
    kvindex_match *m = calloc(1024, sizeof *m);
    for (int cycle = 0; cycle < 4; cycle++) {
        store(ix, b, KVTIER_CPU, ek, N, rk, N);
        store(ix, b, KVTIER_GPU, ek, N / 2, rk, N / 2);
        assert_int_equal(kvindex_tiers(ix, b, rk[0]), (1u << KVTIER_GPU) | (1u << KVTIER_CPU));
        assert_int_equal(kvindex_endpoint_entries(ix, b), N + N / 2);
        assert_int_equal(kvindex_lookup(ix, rk, N, m), N);
        assert_int_equal(m[b].blocks, N);
        assert_int_equal(m[a].blocks, N);
        if (cycle % 2) {
            kvindex_clear_endpoint(ix, b);
        } else {
            assert_int_equal(kvindex_remove(ix, b, KVTIER_CPU, ek, N), N);
            assert_int_equal(kvindex_tiers(ix, b, rk[0]), 1u << KVTIER_GPU);
            assert_int_equal(kvindex_remove(ix, b, KVTIER_GPU, ek, N), N / 2);
        }
        assert_int_equal(kvindex_tiers(ix, b, rk[0]), 0);
        assert_int_equal(kvindex_tiers(ix, a, rk[N - 1]), 1u << KVTIER_GPU);
        assert_int_equal(kvindex_endpoint_entries(ix, b), 0);
        assert_int_equal(kvindex_lookup(ix, rk, N, m), N);
        assert_int_equal(m[a].blocks, N);
        assert_int_equal(m[b].blocks, 0);
        kvindex_get_stats(ix, &st);
        assert_int_equal(st.blocks, N);
        assert_int_equal(st.entries, N);
        if (cycle == 0) bytes_after_first = st.bytes;
        assert_int_equal(st.bytes, bytes_after_first);
    }
    free(m);
    kvindex_free(ix);
}

static void test_growth(void **state)
{
    enum { N = 5000 };
    kvindex *ix = new_index(0, 130);
    int a = add_ep(ix, "a"), b = add_ep(ix, "b");
    for (int i = 0; i < 128; i++) {   /* slots 2..129: the last one is in the third word */
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        add_ep(ix, name);
    }
    uint64_t *rk = malloc(N * sizeof *rk), *ek = malloc(N * sizeof *ek);
    for (uint64_t i = 0; i < N; i++) {
        rk[i] = i * 0x9E3779B97F4A7C15ULL;
        ek[i] = ~rk[i];
    }
    for (size_t i = 0; i < N; i += 50) {
        store(ix, a, KVTIER_GPU, ek + i, 50, rk + i, 50);
        store(ix, 129, KVTIER_CPU, NULL, 0, rk + i, 50);
        if (i % 100 == 0) store(ix, b, KVTIER_OTHER, ek + i, 50, rk + i, 50);
    }
    kvindex_stats st;
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.blocks, N);
    assert_int_equal(st.entries, 2 * N + N / 2);
    assert_int_equal(st.engine_keys, N + N / 2);
    for (size_t i = 0; i < N; i++) {
        uint64_t got = 0;
        assert_true(kvindex_request_key(ix, a, ek[i], &got));
        assert_int_equal(got, rk[i]);
        assert_int_equal(kvindex_tiers(ix, 129, rk[i]), 1u << KVTIER_CPU);
        assert_int_equal(kvindex_tiers(ix, b, rk[i]), (i % 100) < 50 ? 1u << KVTIER_OTHER : 0);
    }
    kvindex_match m[130];
    assert_int_equal(kvindex_lookup(ix, rk, N, m), N);
    assert_int_equal(m[a].blocks, N);
    assert_int_equal(m[129].blocks, N);
    assert_int_equal(m[b].blocks, 50);
    assert_true(fabsf(m[129].score - 0.8f * N) < 0.5f);
    /* a drops every other block: the cpu holder keeps them all alive */
    for (size_t i = 0; i < N; i += 2) assert_int_equal(kvindex_remove(ix, a, KVTIER_GPU, &ek[i], 1), 1);
    kvindex_endpoint_remove(ix, 129);
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.blocks, N / 2 + N / 4);   /* a's odd blocks, plus b's even ones */
    assert_int_equal(kvindex_lookup(ix, rk + 1, 1, m), 1);
    assert_int_equal(m[a].blocks, 1);
    kvindex_clear_endpoint(ix, a);
    kvindex_clear_endpoint(ix, b);
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.blocks, 0);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.engine_keys, 0);
    free(rk);
    free(ek);
    kvindex_free(ix);
}

/* ---- reference model ---------------------------------------------------------------- */

#define M_EP 130

typedef struct {
    uint64_t key;
    uint64_t stamp;             /* last store: the smallest is evicted first */
    unsigned char tiers[M_EP];  /* bit t: held in tier t */
} mblock;

typedef struct {
    int slot;
    uint64_t ek, rk;
    unsigned pos;
} mmapping;

typedef struct {
    mblock *b;
    size_t nb;
    mmapping *m;
    size_t nm, cm;
    size_t capacity;
    int max_ep;
    double w[KVTIER_COUNT];
    uint64_t clock, evictions, entries;
    char names[M_EP][16];
} model;

static long m_find(const model *md, uint64_t key)
{
    for (size_t i = 0; i < md->nb; i++)
        if (md->b[i].key == key) return (long)i;
    return -1;
}

static void m_drop(model *md, int slot, uint64_t rk)   /* slot < 0: every slot */
{
    size_t o = 0;
    for (size_t i = 0; i < md->nm; i++)
        if (!(md->m[i].rk == rk && (slot < 0 || md->m[i].slot == slot))) md->m[o++] = md->m[i];
    md->nm = o;
}

static void m_delete_block(model *md, size_t i) { md->b[i] = md->b[--md->nb]; }

static bool m_empty(const model *md, size_t i)
{
    for (int s = 0; s < md->max_ep; s++)
        if (md->b[i].tiers[s]) return false;
    return true;
}

static void m_store(model *md, int slot, int tier, const uint64_t *E, size_t ne, const uint64_t *R, size_t nr)
{
    if (!nr) return;
    size_t n = ne > nr ? ne : nr, group = SIZE_MAX;
    unsigned pos = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t rk = R[i * nr / n];
        long bi = m_find(md, rk);
        if (bi < 0) {
            if (md->nb == md->capacity) {
                size_t old = 0;
                for (size_t j = 1; j < md->nb; j++)
                    if (md->b[j].stamp < md->b[old].stamp) old = j;
                for (int s = 0; s < md->max_ep; s++) md->entries -= (uint64_t)__builtin_popcount(md->b[old].tiers[s]);
                m_drop(md, -1, md->b[old].key);
                m_delete_block(md, old);
                md->evictions++;
            }
            bi = (long)md->nb++;
            memset(&md->b[bi], 0, sizeof md->b[bi]);
            md->b[bi].key = rk;
        }
        md->b[bi].stamp = ++md->clock;
        if (!(md->b[bi].tiers[slot] & (1 << tier))) md->entries++;
        md->b[bi].tiers[slot] |= (unsigned char)(1 << tier);
        if (!ne) continue;
        size_t g = i * ne / n;
        if (g != group) {
            size_t o = 0;
            for (size_t k = 0; k < md->nm; k++)
                if (!(md->m[k].slot == slot && md->m[k].ek == E[g])) md->m[o++] = md->m[k];
            md->nm = o;
            group = g;
            pos = 0;
        } else {
            pos++;
        }
        if (md->nm == md->cm) {
            md->cm = md->cm ? md->cm * 2 : 256;
            md->m = realloc(md->m, md->cm * sizeof *md->m);
        }
        md->m[md->nm++] = (mmapping){slot, E[g], rk, pos};
    }
}

static bool m_request_key(const model *md, int slot, uint64_t ek, uint64_t *rk)
{
    long best = -1;
    for (size_t i = 0; i < md->nm; i++)
        if (md->m[i].slot == slot && md->m[i].ek == ek && (best < 0 || md->m[i].pos > md->m[best].pos)) best = (long)i;
    if (best >= 0) *rk = md->m[best].rk;
    return best >= 0;
}

static size_t m_remove(model *md, int slot, int tier, const uint64_t *E, size_t n)
{
    size_t removed = 0;
    for (size_t k = 0; k < n; k++) {
        for (;;) {
            long bi = -1;
            for (size_t i = 0; i < md->nm && bi < 0; i++) {
                if (md->m[i].slot != slot || md->m[i].ek != E[k]) continue;
                long c = m_find(md, md->m[i].rk);
                if (c >= 0 && (md->b[c].tiers[slot] & (1 << tier))) bi = c;
            }
            if (bi < 0) break;
            md->b[bi].tiers[slot] &= (unsigned char)~(1 << tier);
            md->entries--;
            removed++;
            if (!md->b[bi].tiers[slot]) m_drop(md, slot, md->b[bi].key);
            if (m_empty(md, (size_t)bi)) m_delete_block(md, (size_t)bi);
        }
    }
    return removed;
}

static void m_clear(model *md, int slot)
{
    for (size_t i = 0; i < md->nb;) {
        if (md->b[i].tiers[slot]) {
            md->entries -= (uint64_t)__builtin_popcount(md->b[i].tiers[slot]);
            md->b[i].tiers[slot] = 0;
            m_drop(md, slot, md->b[i].key);
            if (m_empty(md, i)) {
                m_delete_block(md, i);
                continue;
            }
        }
        i++;
    }
}

static uint32_t m_lookup(const model *md, const uint64_t *keys, size_t n, uint32_t *blocks, double *score)
{
    uint32_t longest = 0;
    for (int s = 0; s < md->max_ep; s++) {
        blocks[s] = 0;
        score[s] = 0;
        for (size_t j = 0; j < n; j++) {
            long bi = m_find(md, keys[j]);
            if (bi < 0 || !md->b[bi].tiers[s]) break;
            double best = 0;
            for (int t = 0; t < KVTIER_COUNT; t++)
                if ((md->b[bi].tiers[s] & (1 << t)) && md->w[t] > best) best = md->w[t];
            score[s] += best;
            blocks[s]++;
        }
        if (blocks[s] > longest) longest = blocks[s];
    }
    return longest;
}

/* ---- property test ------------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static size_t rng_below(uint64_t *s, size_t n) { return (size_t)(rng_next(s) % n); }

#define N_CHAINS 24
#define CHAIN_LEN 12
#define MAX_USED 4096

typedef struct {
    uint64_t chain[N_CHAINS][CHAIN_LEN];
    uint64_t used_ek[MAX_USED];
    int used_slot[MAX_USED];
    size_t n_used;
} universe;

/* Chains share prefixes (a chain continues another chain's first half), and one key is
 * 0, so lookups see partial matches and the zero key is exercised. */
static void make_universe(universe *u, uint64_t *rng)
{
    for (int c = 0; c < N_CHAINS; c++) {
        int shared = c >= 4 ? (int)rng_below(rng, CHAIN_LEN / 2 + 1) : 0;
        for (int j = 0; j < CHAIN_LEN; j++)
            u->chain[c][j] = j < shared ? u->chain[c % 4][j] : rng_next(rng);
    }
    u->chain[1][0] = 0;
    u->n_used = 0;
}

static void note_ek(universe *u, int slot, uint64_t ek)
{
    if (u->n_used < MAX_USED) {
        u->used_slot[u->n_used] = slot;
        u->used_ek[u->n_used++] = ek;
    }
}

/* Engine keys as a pod would make them: its own seed over what the block covers. A
 * small pool of colliding values exercises the replace-on-store rule. */
static uint64_t engine_key(uint64_t *rng, int slot, uint64_t rk, unsigned part)
{
    if (rng_below(rng, 20) == 0) return rng_below(rng, 3);
    uint64_t s = rk * 31 + (uint64_t)slot * 1000003 + part;
    return rng_next(&s);
}

static void check_equal(const kvindex *ix, const model *md, const universe *u, uint64_t *rng, const char *where)
{
    kvindex_stats st;
    kvindex_get_stats(ix, &st);
    if (st.blocks != md->nb || st.entries != md->entries || st.engine_keys != md->nm || st.evictions != md->evictions)
        fail_msg("%s: stats blocks %llu/%zu entries %llu/%llu engine_keys %llu/%zu evictions %llu/%llu", where,
                 (unsigned long long)st.blocks, md->nb, (unsigned long long)st.entries, (unsigned long long)md->entries,
                 (unsigned long long)st.engine_keys, md->nm, (unsigned long long)st.evictions,
                 (unsigned long long)md->evictions);
    for (int s = 0; s < md->max_ep; s++) {
        uint64_t held = 0;   /* the slot's share of the entries, through every path that changes them */
        for (size_t i = 0; i < md->nb; i++) held += (uint64_t)__builtin_popcount(md->b[i].tiers[s]);
        if (kvindex_endpoint_entries(ix, s) != held)
            fail_msg("%s: slot %d entries %llu, model %llu", where, s,
                     (unsigned long long)kvindex_endpoint_entries(ix, s), (unsigned long long)held);
        const char *name = kvindex_endpoint_name(ix, s);
        if ((name == NULL) != (md->names[s][0] == 0) || (name && strcmp(name, md->names[s])))
            fail_msg("%s: slot %d name %s, model %s", where, s, name ? name : "(free)", md->names[s]);
        if (name && kvindex_endpoint_find(ix, name) != s) fail_msg("%s: find(%s) != %d", where, name, s);
    }
    /* Holders of every key the stream can produce, and of none other. */
    for (int c = 0; c < N_CHAINS; c++)
        for (int j = 0; j < CHAIN_LEN; j++) {
            uint64_t k = u->chain[c][j];
            long bi = m_find(md, k);
            for (int s = 0; s < md->max_ep; s++) {
                unsigned want = bi < 0 ? 0 : md->b[bi].tiers[s], got = kvindex_tiers(ix, s, k);
                if (want != got) fail_msg("%s: key %llx slot %d tiers %u, model %u", where, (unsigned long long)k, s, got, want);
            }
        }
    /* Every mapping ever made: same answer, and never pointing at a block not held. */
    for (size_t i = 0; i < u->n_used; i++) {
        uint64_t want = 0, got = 0;
        bool w = m_request_key(md, u->used_slot[i], u->used_ek[i], &want);
        bool g = kvindex_request_key(ix, u->used_slot[i], u->used_ek[i], &got);
        if (w != g || (w && want != got))
            fail_msg("%s: request_key(slot %d, ek %llx) = %d/%llx, model %d/%llx", where, u->used_slot[i],
                     (unsigned long long)u->used_ek[i], g, (unsigned long long)got, w, (unsigned long long)want);
        if (g && kvindex_tiers(ix, u->used_slot[i], got) == 0)
            fail_msg("%s: mapping of slot %d points at a block it does not hold", where, u->used_slot[i]);
    }
    /* Lookups of random prefixes, some with a foreign key in the middle. */
    kvindex_match out[M_EP];
    uint32_t blocks[M_EP];
    double score[M_EP];
    for (int q = 0; q < 12; q++) {
        uint64_t keys[CHAIN_LEN];
        size_t n = rng_below(rng, CHAIN_LEN + 1);
        memcpy(keys, u->chain[rng_below(rng, N_CHAINS)], sizeof keys);
        if (n && rng_below(rng, 4) == 0) keys[rng_below(rng, n)] = rng_next(rng);
        uint32_t want = m_lookup(md, keys, n, blocks, score), got = kvindex_lookup(ix, keys, n, out);
        if (want != got) fail_msg("%s: lookup of %zu keys = %u, model %u", where, n, got, want);
        for (int s = 0; s < md->max_ep; s++)
            if (out[s].blocks != blocks[s] || fabs(out[s].score - score[s]) > 1e-4 * (1 + score[s]))
                fail_msg("%s: lookup slot %d: %u blocks score %g, model %u %g", where, s, out[s].blocks,
                         (double)out[s].score, blocks[s], score[s]);
    }
}

static int m_live_slot(const model *md, uint64_t *rng)
{
    int live[M_EP], n = 0;
    for (int s = 0; s < md->max_ep; s++)
        if (md->names[s][0]) live[n++] = s;
    return n ? live[rng_below(rng, (size_t)n)] : -1;
}

static void add_endpoint(kvindex *ix, model *md, int *next_name)
{
    char name[16];
    snprintf(name, sizeof name, "pod-%d", (*next_name)++);
    int want = -1;
    for (int s = 0; s < md->max_ep && want < 0; s++)
        if (!md->names[s][0]) want = s;
    kv_err err = {0};
    int got = kvindex_endpoint_add(ix, name, &err);
    if (want < 0) {
        assert_int_equal(got, KV_EFULL);
        return;
    }
    assert_int_equal(got, want);
    strcpy(md->names[want], name);
}

static void run_stream(uint64_t seed, uint32_t max_ep, size_t capacity, const double w[KVTIER_COUNT], int batches)
{
    uint64_t rng = seed;
    kv_err err = {0};
    kvindex_config cfg = {.capacity = capacity, .max_endpoints = max_ep};
    memcpy(cfg.tier_weight, w, sizeof cfg.tier_weight);
    kvindex *ix = kvindex_new(&cfg, &err);
    assert_non_null(ix);
    model *md = calloc(1, sizeof *md);
    universe *u = calloc(1, sizeof *u);
    md->b = calloc(N_CHAINS * CHAIN_LEN + 1, sizeof *md->b);
    md->capacity = capacity;
    md->max_ep = (int)max_ep;
    memcpy(md->w, w, sizeof md->w);
    make_universe(u, &rng);
    int next_name = 0;
    for (uint32_t i = 0; i < max_ep && i < 6; i++) add_endpoint(ix, md, &next_name);

    char where[96];
    for (int batch = 0; batch < batches; batch++) {
        for (int op = 0; op < 25; op++) {
            unsigned r = (unsigned)rng_below(&rng, 100);
            int slot = m_live_slot(md, &rng);
            int tier = (int)rng_below(&rng, 10);
            tier = tier < 6 ? KVTIER_GPU : tier < 9 ? KVTIER_CPU : KVTIER_OTHER;
            if (r < 4 || slot < 0) {
                add_endpoint(ix, md, &next_name);
            } else if (r < 6) {
                kvindex_endpoint_remove(ix, slot);
                m_clear(md, slot);
                md->names[slot][0] = 0;
            } else if (r < 9) {
                kvindex_clear_endpoint(ix, slot);
                m_clear(md, slot);
            } else if (r < 30) {
                /* BlockRemoved: engine keys this slot used, sometimes unknown ones. */
                uint64_t eks[4];
                size_t n = 1 + rng_below(&rng, 4);
                for (size_t k = 0; k < n; k++) {
                    eks[k] = rng_next(&rng);
                    for (int tries = 0; tries < 8 && u->n_used; tries++) {
                        size_t i = rng_below(&rng, u->n_used);
                        if (u->used_slot[i] == slot) {
                            eks[k] = u->used_ek[i];
                            break;
                        }
                    }
                }
                size_t want = m_remove(md, slot, tier, eks, n), got = kvindex_remove(ix, slot, (kvtier)tier, eks, n);
                if (want != got) fail_msg("seed %llu batch %d: remove %zu, model %zu", (unsigned long long)seed, batch, got, want);
            } else {
                /* BlockStored of a chain segment in one of three engine/index ratios. */
                const uint64_t *c = u->chain[rng_below(&rng, N_CHAINS)];
                size_t start = rng_below(&rng, 3) == 0 ? rng_below(&rng, CHAIN_LEN) : 0;
                size_t nr = 1 + rng_below(&rng, CHAIN_LEN - start);
                uint64_t eks[2 * CHAIN_LEN];
                size_t ne = 0;
                unsigned mode = (unsigned)rng_below(&rng, 10);
                if (mode < 5) {
                    ne = nr;
                    for (size_t i = 0; i < nr; i++) eks[i] = engine_key(&rng, slot, c[start + i], 0);
                } else if (mode < 7) {
                    ne = (nr + 1) / 2;   /* engine blocks twice the index block */
                    for (size_t i = 0; i < ne; i++) eks[i] = engine_key(&rng, slot, c[start + 2 * i], 1);
                } else if (mode < 9) {
                    ne = 2 * nr;         /* engine blocks half the index block */
                    for (size_t i = 0; i < ne; i++) eks[i] = engine_key(&rng, slot, c[start + i / 2], 2 + i % 2);
                }
                for (size_t i = 0; i < ne; i++) note_ek(u, slot, eks[i]);
                assert_int_equal(kvindex_store(ix, slot, (kvtier)tier, ne ? eks : NULL, ne, c + start, nr, &err), KV_OK);
                m_store(md, slot, tier, eks, ne, c + start, nr);
            }
        }
        snprintf(where, sizeof where, "seed %llu ep %u cap %zu batch %d", (unsigned long long)seed, max_ep, capacity, batch);
        check_equal(ix, md, u, &rng, where);
    }
    kvindex_free(ix);
    free(md->b);
    free(md->m);
    free(md);
    free(u);
}

/* The write-hold clock: every read is 300 ns after the previous one, so each hold (one
 * read as the write lock is taken, one as it is released) lasts exactly 300 ns. */
static uint64_t tick_ns;
static uint64_t ticking_clock(void) { return tick_ns += 300; }

/* A store longer than one write-lock slice is applied whole, with the engine keys'
 * grouping intact across slice boundaries (3 request keys per engine key, so groups
 * straddle them), and with a clock the index counts and times one hold per slice. */
static void test_sliced_store_and_hold_times(void **state)
{
    (void)state;
    enum { NE = 700, NR = 3 * NE };
    kvindex_config cfg = {.capacity = 4 * NR, .max_endpoints = 8, .clock_ns = ticking_clock};
    kv_err err;
    kvindex *ix = kvindex_new(&cfg, &err);
    assert_non_null(ix);
    int s = kvindex_endpoint_add(ix, "a", &err);
    assert_int_equal(s, 0);
    static uint64_t ek[NE], rk[NR];
    for (int i = 0; i < NE; i++) ek[i] = 1000000 + (uint64_t)i;
    for (int i = 0; i < NR; i++) rk[i] = 5000000 + (uint64_t)i;
    assert_int_equal(kvindex_store(ix, s, KVTIER_GPU, ek, NE, rk, NR, &err), KV_OK);
    for (int i = 0; i < NR; i++) assert_int_equal(kvindex_tiers(ix, s, rk[i]), 1u << KVTIER_GPU);
    for (int i = 0; i < NE; i++) {
        uint64_t r;
        assert_true(kvindex_request_key(ix, s, ek[i], &r));
        assert_int_equal(r, rk[3 * i + 2]);   /* the last of its group */
    }
    kvindex_stats st;
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.blocks, NR);
    assert_int_equal(st.engine_keys, NR);
    /* endpoint_add, then ceil(NR / slice) slices of the store, each preceded by at most
     * one short hold that swaps in grown tables (built outside the lock) */
    size_t slices = (NR + KVINDEX_STORE_SLICE - 1) / KVINDEX_STORE_SLICE;
    assert_true(st.write_holds >= 1 + slices && st.write_holds <= 1 + 2 * slices);
    /* the index's time is the clock's: two reads per hold, every hold 300 ns, whose
     * 99th percentile is the top of its 250 ns bucket */
    assert_int_equal(tick_ns, 2 * 300 * st.write_holds);
    assert_int_equal(st.write_hold_max_ns, 300);
    assert_int_equal(st.write_hold_p99_ns, 500);

    /* Clearing the endpoint also runs in slices, and leaves another holder whole. */
    int t = kvindex_endpoint_add(ix, "b", &err);
    assert_int_equal(kvindex_store(ix, t, KVTIER_GPU, NULL, 0, rk + 100, 10, &err), KV_OK);
    kvindex_get_stats(ix, &st);
    uint64_t holds = st.write_holds;
    kvindex_clear_endpoint(ix, s);
    kvindex_get_stats(ix, &st);
    assert_true(st.write_holds - holds >= (NR + KVINDEX_CLEAR_SLICE - 1) / KVINDEX_CLEAR_SLICE);
    assert_int_equal(st.blocks, 10);
    assert_int_equal(st.entries, 10);
    assert_int_equal(st.engine_keys, 0);
    for (int i = 0; i < NR; i++)
        assert_int_equal(kvindex_tiers(ix, s, rk[i]), 0);
    for (int i = 100; i < 110; i++) assert_int_equal(kvindex_tiers(ix, t, rk[i]), 1u << KVTIER_GPU);
    assert_false(kvindex_request_key(ix, s, ek[0], NULL));
    kvindex_free(ix);

    /* without a clock nothing is timed, and the clock is never read */
    uint64_t ticks = tick_ns;
    cfg.clock_ns = NULL;
    assert_non_null(ix = kvindex_new(&cfg, &err));
    s = kvindex_endpoint_add(ix, "a", &err);
    assert_int_equal(kvindex_store(ix, s, KVTIER_GPU, ek, NE, rk, NR, &err), KV_OK);
    kvindex_get_stats(ix, &st);
    assert_int_equal(st.blocks, NR);
    assert_int_equal(st.write_holds, 0);
    assert_int_equal(st.write_hold_max_ns, 0);
    assert_int_equal(tick_ns, ticks);
    kvindex_free(ix);
}

static void test_property_small_capacity(void **state)
{
    const double w[KVTIER_COUNT] = {1.0, 0.8, 1.0};
    for (uint64_t seed = 1; seed <= 4; seed++) run_stream(seed, 8, 40, w, 150);
    run_stream(77, 130, 60, w, 100);   /* three bitmap words per tier */
}

static void test_property_large_capacity(void **state)
{
    const double w[KVTIER_COUNT] = {0.5, 0.9, 0.25};   /* cpu outweighs gpu */
    for (uint64_t seed = 11; seed <= 13; seed++) run_stream(seed, 70, 100000, w, 150);
    const double d[KVTIER_COUNT] = {1.0, 0.8, 1.0};
    run_stream(99, 64, 100000, d, 150);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_remove_clear),
        cmocka_unit_test(test_tiers_and_weights),
        cmocka_unit_test(test_ratio_mapping),
        cmocka_unit_test(test_key_zero_and_errors),
        cmocka_unit_test(test_capacity_eviction_order),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_lookup_width_follows_slots),
        cmocka_unit_test(test_sharing_reuses_wide_entries),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_sliced_store_and_hold_times),
        cmocka_unit_test(test_property_small_capacity),
        cmocka_unit_test(test_property_large_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
