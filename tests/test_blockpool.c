/* test_blockpool: vLLM v1 free-queue order and prefix-cache lookups, by hand-worked
 * cases and against an independent reference model (plain arrays, linear scans,
 * insertion-ordered hash list, private hashes entering it when published) driven by a
 * random operation sequence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "blockpool.h"

static void assert_order(const bpool *p, const uint32_t *want, size_t n)
{
    uint32_t got[64];
    assert_int_equal(bpool_free_order(p, got, 64), n);
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("free queue position %zu: block %u, want %u", i, got[i], want[i]);
}

static void test_free_queue_order(void **state)
{
    (void)state;
    bpool *p = bpool_new(6, NULL);
    assert_non_null(p);
    assert_order(p, (uint32_t[]){0, 1, 2, 3, 4, 5}, 6);

    uint32_t a[3];
    uint64_t ev[8];
    size_t nev;
    assert_int_equal(bpool_alloc(p, 3, a, ev, &nev), KV_OK);
    assert_int_equal(nev, 0);
    assert_int_equal(a[0], 0);
    assert_int_equal(a[2], 2);
    assert_int_equal(bpool_num_free(p), 3);
    assert_int_equal(bpool_set_hashes(p, a, (uint64_t[]){100, 101, 102}, 3), KV_OK);
    assert_int_equal(bpool_num_cached(p), 3);

    /* A request frees its blocks in reverse: the tail block joins the queue first and
     * so is evicted first; the prefix survives longest. */
    uint32_t rev[3] = {a[2], a[1], a[0]};
    bpool_release(p, rev, 3);
    assert_order(p, (uint32_t[]){3, 4, 5, 2, 1, 0}, 6);

    /* Allocation pops the head: the three never-used blocks, then block 2 (hash 102). */
    uint32_t b[4];
    assert_int_equal(bpool_alloc(p, 4, b, ev, &nev), KV_OK);
    assert_int_equal(b[3], 2);
    assert_int_equal(nev, 1);
    assert_true(ev[0] == 102);
    uint64_t h;
    assert_false(bpool_hash_of(p, 2, &h));
    assert_true(bpool_hash_of(p, 1, &h) && h == 101);

    /* A hit on a free cached block takes it out of the queue. */
    uint64_t chain[3] = {100, 101, 102};
    uint32_t hit[3];
    assert_int_equal(bpool_match(p, chain, 3, hit), 2);   /* 102 was evicted: stop there */
    assert_int_equal(hit[0], 0);
    assert_int_equal(hit[1], 1);
    bpool_touch(p, hit, 2);
    assert_int_equal(bpool_ref(p, 0), 1);
    assert_int_equal(bpool_num_free(p), 0);

    /* Not enough free blocks: KV_EFULL and nothing changes. */
    assert_int_equal(bpool_alloc(p, 1, b, ev, &nev), KV_EFULL);
    assert_int_equal(bpool_num_free(p), 0);

    /* Shared blocks: a second holder keeps a block out of the queue. */
    bpool_touch(p, hit, 1);
    assert_int_equal(bpool_ref(p, 0), 2);
    bpool_release(p, hit, 1);
    assert_int_equal(bpool_num_free(p), 0);
    bpool_release(p, (uint32_t[]){1, 0}, 2);
    assert_order(p, (uint32_t[]){1, 0}, 2);
    bpool_free(p);

    kv_err err = {0};
    assert_null(bpool_new(0, &err));
    assert_int_equal(err.code, KV_ERANGE);
}

static void test_duplicate_hashes(void **state)
{
    (void)state;
    bpool *p = bpool_new(4, NULL);
    uint32_t a[2];
    uint64_t ev[4];
    size_t nev;
    bpool_alloc(p, 2, a, ev, &nev);
    assert_int_equal(bpool_set_hashes(p, a, (uint64_t[]){7, 7}, 2), KV_OK);   /* the same block recomputed
                                                                               * (num_tokens-1 cap) */
    uint64_t key = 7;
    uint32_t hit;
    assert_int_equal(bpool_match(p, &key, 1, &hit), 1);
    assert_int_equal(hit, a[0]);      /* the one cached first */
    bpool_release(p, (uint32_t[]){a[0]}, 1);
    uint32_t b[3];
    bpool_alloc(p, 3, b, ev, &nev);   /* blocks 2, 3, then a[0]: its copy of 7 goes */
    assert_int_equal(nev, 1);
    assert_true(ev[0] == 7);
    assert_int_equal(bpool_match(p, &key, 1, &hit), 1);
    assert_int_equal(hit, a[1]);      /* the other copy still answers */
    bpool_free(p);
}

/* A private hash is counted, evicted and reported like any other, but is found only
 * once its holder publishes it. */
static void test_private_hashes(void **state)
{
    (void)state;
    bpool *p = bpool_new(3, NULL);
    uint32_t a[2];
    uint64_t ev[4];
    size_t nev;
    bpool_alloc(p, 2, a, ev, &nev);
    bpool_set_private_hashes(p, a, (uint64_t[]){5, 6}, 2);
    assert_int_equal(bpool_num_cached(p), 2);
    uint64_t chain[2] = {5, 6}, h;
    uint32_t hit[2];
    assert_int_equal(bpool_match(p, chain, 2, hit), 0);
    assert_true(bpool_hash_of(p, a[1], &h) && h == 6);
    assert_int_equal(bpool_set_hashes(p, a, (uint64_t[]){5}, 1), KV_OK);   /* a preempted holder publishes one */
    assert_int_equal(bpool_match(p, chain, 2, hit), 1);
    assert_int_equal(hit[0], a[0]);
    bpool_release(p, (uint32_t[]){a[1], a[0]}, 2);
    uint32_t b[3];
    assert_int_equal(bpool_alloc(p, 3, b, ev, &nev), KV_OK);   /* the fresh block, then a[1], a[0] */
    assert_int_equal(nev, 2);
    assert_true(ev[0] == 6 && ev[1] == 5);
    assert_int_equal(bpool_num_cached(p), 0);
    assert_int_equal(bpool_match(p, chain, 2, hit), 0);
    bpool_free(p);
}

/* --- reference model ------------------------------------------------------------ */

#define RN 150   /* the largest pool the reference model runs */
typedef struct ref {
    uint32_t ref[RN];
    bool hashed[RN], mapped[RN];      /* mapped: in the map (else a private hash) */
    uint64_t hash[RN];
    size_t nhashed;
    uint32_t q[RN];                   /* free queue, head first */
    size_t nq;
    uint32_t map_b[RN];               /* (hash, block) in insertion order */
    uint64_t map_h[RN];
    size_t nmap;
} ref;

static void ref_q_remove(ref *r, uint32_t b)
{
    for (size_t i = 0; i < r->nq; i++)
        if (r->q[i] == b) {
            memmove(r->q + i, r->q + i + 1, (r->nq - i - 1) * sizeof *r->q);
            r->nq--;
            return;
        }
    fail_msg("reference: block %u not queued", b);
}

static uint32_t ref_lookup(const ref *r, uint64_t h)
{
    for (size_t i = 0; i < r->nmap; i++)
        if (r->map_h[i] == h) return r->map_b[i];
    return BPOOL_NONE;
}

static void ref_map_remove(ref *r, uint32_t b)
{
    for (size_t i = 0; i < r->nmap; i++)
        if (r->map_b[i] == b) {
            memmove(r->map_b + i, r->map_b + i + 1, (r->nmap - i - 1) * sizeof *r->map_b);
            memmove(r->map_h + i, r->map_h + i + 1, (r->nmap - i - 1) * sizeof *r->map_h);
            r->nmap--;
            return;
        }
}

typedef struct holder {
    uint32_t b[8];
    size_t n;
} holder;

/* rn blocks: 48, full most of the time; 150, whose block array grows twice (from 64)
 * while blocks are handed out for the first time, between allocations of the rest. */
static void random_against_reference(uint32_t rn)
{
    bpool *p = bpool_new(rn, NULL);
    ref r = {0};
    for (uint32_t i = 0; i < rn; i++) r.q[r.nq++] = i;
    holder hold[32] = {0};
    size_t nhold = 0;
    srand(12345);
    for (int step = 0; step < 20000; step++) {
        int op = rand() % 4;
        if (op == 0 && nhold < 32) {                         /* a new request's blocks */
            size_t k = 1 + (size_t)rand() % 6;
            uint32_t out[8];
            size_t nev;
            uint64_t evicted[8];
            int rc = bpool_alloc(p, k, out, evicted, &nev);
            if (k > r.nq) {
                assert_int_equal(rc, KV_EFULL);
                continue;
            }
            assert_int_equal(rc, KV_OK);
            size_t want_ev = 0;
            for (size_t i = 0; i < k; i++) {
                uint32_t b = r.q[0];
                ref_q_remove(&r, b);
                assert_int_equal(out[i], b);
                if (r.hashed[b]) {
                    assert_true(evicted[want_ev++] == r.hash[b]);
                    if (r.mapped[b]) ref_map_remove(&r, b);
                    r.hashed[b] = r.mapped[b] = false;
                    r.nhashed--;
                }
                r.ref[b] = 1;
            }
            assert_int_equal(nev, want_ev);
            /* Hash some of them from a small key space so hits and duplicates occur
             * (the map grows from 16 slots to 128 on the way), a third privately. */
            uint32_t hb[8], pb[8];
            uint64_t hh[8], ph[8];
            size_t nh = 0, np = 0;
            for (size_t i = 0; i < k; i++)
                if (rand() % 2) {
                    uint64_t h = 1 + (uint64_t)(rand() % 40);
                    r.hashed[out[i]] = true;
                    r.hash[out[i]] = h;
                    r.nhashed++;
                    if (rand() % 3 == 0) {
                        pb[np] = out[i];
                        ph[np++] = h;
                        continue;
                    }
                    hb[nh] = out[i];
                    hh[nh++] = h;
                    r.mapped[out[i]] = true;
                    r.map_b[r.nmap] = out[i];
                    r.map_h[r.nmap++] = h;
                }
            assert_int_equal(bpool_set_hashes(p, hb, hh, nh), KV_OK);
            bpool_set_private_hashes(p, pb, ph, np);
            memcpy(hold[nhold].b, out, k * sizeof *out);
            hold[nhold++].n = k;
        } else if (op == 1 && nhold > 0) {                   /* a request finishes */
            size_t w = (size_t)rand() % nhold;
            uint32_t rev[8];
            for (size_t i = 0; i < hold[w].n; i++) rev[i] = hold[w].b[hold[w].n - 1 - i];
            bpool_release(p, rev, hold[w].n);
            for (size_t i = 0; i < hold[w].n; i++)
                if (--r.ref[rev[i]] == 0) r.q[r.nq++] = rev[i];
            hold[w] = hold[--nhold];
        } else if (op == 2 && nhold < 32) {                  /* a prefix hit */
            uint64_t chain[4];
            for (int i = 0; i < 4; i++) chain[i] = 1 + (uint64_t)(rand() % 40);
            uint32_t hit[4];
            size_t n = bpool_match(p, chain, 4, hit);
            size_t want = 0;
            while (want < 4 && ref_lookup(&r, chain[want]) != BPOOL_NONE) {
                assert_true(want < n);
                assert_int_equal(hit[want], ref_lookup(&r, chain[want]));
                want++;
            }
            assert_int_equal(n, want);
            /* The same block may be hit twice in one chain; take each once. */
            size_t u = 0;
            for (size_t i = 0; i < n; i++) {
                bool dup = false;
                for (size_t j = 0; j < u; j++) dup |= hit[j] == hit[i];
                if (!dup) hit[u++] = hit[i];
            }
            if (u == 0) continue;
            bpool_touch(p, hit, u);
            for (size_t i = 0; i < u; i++)
                if (r.ref[hit[i]]++ == 0) ref_q_remove(&r, hit[i]);
            memcpy(hold[nhold].b, hit, u * sizeof *hit);
            hold[nhold++].n = u;
        } else if (op == 3 && nhold > 0) {                   /* a holder publishes its private hashes */
            const holder *w = &hold[(size_t)rand() % nhold];
            uint32_t pb[8];
            uint64_t ph[8];
            size_t np = 0;
            for (size_t i = 0; i < w->n; i++) {      /* mapped ones too: those are skipped */
                uint32_t b = w->b[i];
                if (!r.hashed[b]) continue;
                pb[np] = b;
                ph[np++] = r.hash[b];
                if (r.mapped[b]) continue;
                r.mapped[b] = true;
                r.map_b[r.nmap] = b;
                r.map_h[r.nmap++] = r.hash[b];
            }
            assert_int_equal(bpool_set_hashes(p, pb, ph, np), KV_OK);
        }
        uint32_t got[RN];
        size_t nq = bpool_free_order(p, got, rn);
        assert_int_equal(nq, r.nq);
        assert_memory_equal(got, r.q, nq * sizeof *got);
        assert_int_equal(bpool_num_free(p), r.nq);
        assert_int_equal(bpool_num_cached(p), r.nhashed);
        for (uint32_t b = 0; b < rn; b++) {
            uint64_t h;
            assert_int_equal(bpool_hash_of(p, b, &h), r.hashed[b]);
            if (r.hashed[b]) assert_true(h == r.hash[b]);
        }
    }
    bpool_free(p);
}

static void test_random_against_reference(void **state)
{
    (void)state;
    random_against_reference(48);
}

static void test_random_against_reference_growing(void **state)
{
    (void)state;
    random_against_reference(RN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_queue_order),
        cmocka_unit_test(test_duplicate_hashes),
        cmocka_unit_test(test_private_hashes),
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_random_against_reference_growing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
