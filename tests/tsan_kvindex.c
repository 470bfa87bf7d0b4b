/* tsan_kvindex: concurrent event writers and lookup readers on one index, built with
 * ThreadSanitizer. Writers own disjoint endpoints, so without evictions the final state
 * does not depend on the interleaving and must equal a serial replay of the same
 * streams; every lookup a reader sees must be internally consistent. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvindex.h"

#define WRITERS 3
#define READERS 3
#define OWNED 3              /* endpoints per writer */
#define OPS 6000             /* events per writer */
#define LOOKUPS 6000         /* lookups per reader */
#define N_CHAINS 24
#define CHAIN_LEN 16
#define MAX_EP 16

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t chains[N_CHAINS][CHAIN_LEN];
static uint64_t pinned_chain[CHAIN_LEN];

static void make_chains(void)
{
    uint64_t rng = 42;
    for (int c = 0; c < N_CHAINS; c++)
        for (int j = 0; j < CHAIN_LEN; j++)
            chains[c][j] = (c >= 4 && j < 6) ? chains[c % 4][j] : rng_next(&rng);
    for (int j = 0; j < CHAIN_LEN; j++) pinned_chain[j] = chains[0][j];
}

static uint64_t engine_key(int writer, int owned, uint64_t rk) { return rk * 131 + (uint64_t)(writer * 16 + owned + 1); }

static void ep_name(char *buf, size_t n, int writer, int owned) { snprintf(buf, n, "w%d-%d", writer, owned); }

/* One writer's event stream, generated from its own seed so a replay is identical. The
 * last owned endpoint is a scratch one that is repeatedly removed and re-added. */
static void apply_stream(kvindex *ix, int writer, atomic_int *errors)
{
    uint64_t rng = 1000 + (uint64_t)writer;
    int slot[OWNED];
    char name[32];
    for (int o = 0; o < OWNED; o++) {
        ep_name(name, sizeof name, writer, o);
        slot[o] = kvindex_endpoint_add(ix, name, NULL);
        if (slot[o] < 0) atomic_fetch_add(errors, 1);
    }
    for (int op = 0; op < OPS; op++) {
        int o = (int)(rng_next(&rng) % OWNED);
        unsigned r = (unsigned)(rng_next(&rng) % 100);
        kvtier tier = rng_next(&rng) % 4 == 0 ? KVTIER_CPU : KVTIER_GPU;
        const uint64_t *c = chains[rng_next(&rng) % N_CHAINS];
        size_t n = 1 + rng_next(&rng) % CHAIN_LEN;
        uint64_t eks[CHAIN_LEN];
        for (size_t i = 0; i < n; i++) eks[i] = engine_key(writer, o, c[i]);
        if (r < 2) {
            kvindex_clear_endpoint(ix, slot[o]);
        } else if (r < 4 && o == OWNED - 1) {
            kvindex_endpoint_remove(ix, slot[o]);
            ep_name(name, sizeof name, writer, o);
            slot[o] = kvindex_endpoint_add(ix, name, NULL);
            if (slot[o] < 0) atomic_fetch_add(errors, 1);
        } else if (r < 30) {
            size_t k = rng_next(&rng) % n;
            kvindex_remove(ix, slot[o], tier, eks + k, n - k);
        } else if (kvindex_store(ix, slot[o], tier, eks, n, c, n, NULL) != KV_OK) {
            atomic_fetch_add(errors, 1);
        }
    }
}

typedef struct {
    kvindex *ix;
    int id;
    int pinned;
    atomic_int *errors;
} worker;

static void *writer_main(void *arg)
{
    worker *w = arg;
    apply_stream(w->ix, w->id, w->errors);
    return NULL;
}

static void *reader_main(void *arg)
{
    worker *w = arg;
    uint64_t rng = 7 + (uint64_t)w->id;
    kvindex_match out[MAX_EP];
    for (int i = 0; i < LOOKUPS; i++) {
        size_t n = 1 + rng_next(&rng) % CHAIN_LEN;
        const uint64_t *keys = i % 2 ? pinned_chain : chains[rng_next(&rng) % N_CHAINS];
        uint32_t longest = kvindex_lookup(w->ix, keys, n, out), seen = 0;
        for (int s = 0; s < MAX_EP; s++) {
            if (out[s].blocks > n) atomic_fetch_add(w->errors, 1);
            /* every matched block weighs between cpu 0.8 and gpu 1.0 */
            if (out[s].score > out[s].blocks * 1.0f + 1e-3f || out[s].score < out[s].blocks * 0.8f - 1e-3f)
                atomic_fetch_add(w->errors, 1);
            if (out[s].blocks > seen) seen = out[s].blocks;
        }
        if (seen != longest) atomic_fetch_add(w->errors, 1);
        if (w->pinned >= 0 && keys == pinned_chain && out[w->pinned].blocks != n) atomic_fetch_add(w->errors, 1);
        if (kvindex_endpoint_find(w->ix, "pinned") != w->pinned) atomic_fetch_add(w->errors, 1);
        char name[32];
        ep_name(name, sizeof name, (int)(rng_next(&rng) % WRITERS), (int)(rng_next(&rng) % OWNED));
        int s = kvindex_endpoint_find(w->ix, name);
        if (s >= 0) kvindex_request_key(w->ix, s, engine_key(0, 0, chains[0][0]), NULL);
        kvindex_stats st;
        kvindex_get_stats(w->ix, &st);
        if (st.entries < st.blocks) atomic_fetch_add(w->errors, 1);   /* every block has a holder */
    }
    return NULL;
}

static kvindex *new_index(size_t capacity)
{
    kvindex_config cfg = {.capacity = capacity, .max_endpoints = MAX_EP};
    kvindex *ix = kvindex_new(&cfg, NULL);
    assert_non_null(ix);
    return ix;
}

static void test_concurrent_equals_serial(void **state)
{
    make_chains();
    atomic_int errors;
    atomic_init(&errors, 0);
    kvindex *ix = new_index(100000);
    int pinned = kvindex_endpoint_add(ix, "pinned", NULL);
    assert_true(pinned >= 0);
    assert_int_equal(kvindex_store(ix, pinned, KVTIER_GPU, NULL, 0, pinned_chain, CHAIN_LEN, NULL), KV_OK);

    pthread_t th[WRITERS + READERS];
    worker wk[WRITERS + READERS];
    for (int i = 0; i < WRITERS + READERS; i++) {
        wk[i] = (worker){ix, i < WRITERS ? i : i - WRITERS, pinned, &errors};
        assert_int_equal(pthread_create(&th[i], NULL, i < WRITERS ? writer_main : reader_main, &wk[i]), 0);
    }
    for (int i = 0; i < WRITERS + READERS; i++) pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&errors), 0);

    kvindex *serial = new_index(100000);
    int sp = kvindex_endpoint_add(serial, "pinned", NULL);
    assert_int_equal(kvindex_store(serial, sp, KVTIER_GPU, NULL, 0, pinned_chain, CHAIN_LEN, NULL), KV_OK);
    for (int w = 0; w < WRITERS; w++) apply_stream(serial, w, &errors);
    assert_int_equal(atomic_load(&errors), 0);

    kvindex_stats a, b;
    kvindex_get_stats(ix, &a);
    kvindex_get_stats(serial, &b);
    assert_int_equal(a.blocks, b.blocks);
    assert_int_equal(a.entries, b.entries);
    assert_int_equal(a.engine_keys, b.engine_keys);
    assert_int_equal(a.evictions, 0);
    assert_true(a.entries > 0);
    for (int w = 0; w < WRITERS; w++)
        for (int o = 0; o < OWNED; o++) {
            char name[32];
            ep_name(name, sizeof name, w, o);
            int s1 = kvindex_endpoint_find(ix, name), s2 = kvindex_endpoint_find(serial, name);
            assert_true(s1 >= 0 && s2 >= 0);
            for (int c = 0; c < N_CHAINS; c++)
                for (int j = 0; j < CHAIN_LEN; j++) {
                    uint64_t k = chains[c][j], r1 = 0, r2 = 0;
                    assert_int_equal(kvindex_tiers(ix, s1, k), kvindex_tiers(serial, s2, k));
                    uint64_t ek = engine_key(w, o, k);
                    bool g1 = kvindex_request_key(ix, s1, ek, &r1), g2 = kvindex_request_key(serial, s2, ek, &r2);
                    assert_int_equal(g1, g2);
                    assert_int_equal(r1, r2);
                }
        }
    kvindex_free(ix);
    kvindex_free(serial);
}

/* A capacity far below the working set: evictions race with lookups and removes. The
 * final state depends on the interleaving, so only invariants are checked. */
static void test_concurrent_evictions(void **state)
{
    make_chains();
    atomic_int errors;
    atomic_init(&errors, 0);
    kvindex *ix = new_index(64);
    pthread_t th[WRITERS + READERS];
    worker wk[WRITERS + READERS];
    for (int i = 0; i < WRITERS + READERS; i++) {
        wk[i] = (worker){ix, i < WRITERS ? i : i - WRITERS, -1, &errors};
        assert_int_equal(pthread_create(&th[i], NULL, i < WRITERS ? writer_main : reader_main, &wk[i]), 0);
    }
    for (int i = 0; i < WRITERS + READERS; i++) pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&errors), 0);
    kvindex_stats st;
    kvindex_get_stats(ix, &st);
    assert_true(st.blocks <= 64);
    assert_true(st.evictions > 0);
    assert_true(st.entries >= st.blocks);
    /* no mapping outlives its block */
    for (int w = 0; w < WRITERS; w++)
        for (int o = 0; o < OWNED; o++) {
            char name[32];
            ep_name(name, sizeof name, w, o);
            int s = kvindex_endpoint_find(ix, name);
            assert_true(s >= 0);
            for (int c = 0; c < N_CHAINS; c++)
                for (int j = 0; j < CHAIN_LEN; j++) {
                    uint64_t rk = 0;
                    if (kvindex_request_key(ix, s, engine_key(w, o, chains[c][j]), &rk))
                        assert_int_not_equal(kvindex_tiers(ix, s, rk), 0);
                }
        }
    kvindex_free(ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_equals_serial),
        cmocka_unit_test(test_concurrent_evictions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
