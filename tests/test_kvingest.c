/* test_kvingest: llm-d's event-handling rules applied to the real kvindex. Expected
 * request keys come straight from blockkeys (chain root, parent, extras as the rules say
 * they should be), so each test states the rule it checks in its expected keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "blockkeys.h"
#include "kvevents.h"
#include "kvindex.h"
#include "kvingest.h"

typedef struct fx {
    kvindex *ix;
    kvingest *g;
    blockkeys_ctx keys;
    int a, b;   /* two pods' slots */
    uint32_t tok[256];
} fx;

static fx *fx_new(uint32_t index_bs)
{
    fx *f = calloc(1, sizeof *f);
    kvindex_config cfg = {.capacity = 100000, .max_endpoints = 64};
    f->ix = kvindex_new(&cfg, NULL);
    assert_non_null(f->ix);
    f->a = kvindex_endpoint_add(f->ix, "10.0.0.1", NULL);
    f->b = kvindex_endpoint_add(f->ix, "10.0.0.2", NULL);
    assert_true(f->a >= 0 && f->b >= 0 && f->a != f->b);
    assert_int_equal(blockkeys_init(&f->keys, BLOCKKEYS_XXH64, index_bs, "", NULL), KV_OK);
    f->g = kvingest_new(f->ix, &f->keys, NULL);
    assert_non_null(f->g);
    for (uint32_t i = 0; i < 256; i++) f->tok[i] = 1000 + i * 37;
    return f;
}

static void fx_free(fx *f)
{
    kvingest_free(f->g);
    kvindex_free(f->ix);
    free(f);
}

static kvev_event stored(const uint64_t *h, size_t nh, const uint32_t *tok, size_t nt, uint32_t bs)
{
    return (kvev_event){.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = nh, .token_ids = tok,
                        .n_token_ids = nt, .block_size = bs, .medium = kvev_str_c("GPU")};
}

static void apply1(fx *f, int slot, const char *model, kvev_event e)
{
    kvev_batch b = {1.0, true, 0, &e, 1};
    kv_err err;
    if (kvingest_apply(f->g, slot, model, &b, &err) != KV_OK) fail_msg("apply: %s", err.msg);
}

/* Matched leading blocks of keys for a slot. */
static uint32_t held(fx *f, int slot, const uint64_t *keys, size_t n)
{
    kvindex_match m[64];
    kvindex_lookup(f->ix, keys, n, m);
    return m[slot].blocks;
}

static kvingest_stats stats(fx *f)
{
    kvingest_stats s;
    kvingest_get_stats(f->g, &s);
    return s;
}

static void test_chain_and_orphan(void **state)
{
    (void)state;
    fx *f = fx_new(16);
    uint64_t want[3];
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 48, NULL, 0, NULL, want, 3);

    static const uint64_t h01[2] = {100, 101}, h2[1] = {102};
    apply1(f, f->a, "m", stored(h01, 2, f->tok, 32, 16));
    assert_int_equal(held(f, f->a, want, 3), 2);
    uint64_t rk;
    assert_true(kvindex_request_key(f->ix, f->a, 101, &rk));
    assert_true(rk == want[1]);
    /* the child chains from its parent's request key, not from the root */
    kvev_event child = stored(h2, 1, f->tok + 32, 16, 16);
    child.has_parent = true;
    child.parent_block_hash = 101;
    apply1(f, f->a, "m", child);
    assert_int_equal(held(f, f->a, want, 3), 3);
    assert_int_equal(held(f, f->b, want, 3), 0);
    /* an unknown parent (here: known on another pod only) is an orphan, and skipped */
    apply1(f, f->b, "m", child);
    assert_int_equal(held(f, f->b, want, 3), 0);
    kvingest_stats s = stats(f);
    assert_int_equal(s.orphans, 1);
    assert_int_equal(s.blocks_stored, 3);
    assert_int_equal(s.events[KVEV_BLOCK_STORED], 3);
    assert_int_equal(s.batches, 3);
    /* parent 0 is llm-d's "no parent": chains from the root */
    kvev_event zero = stored(h01, 2, f->tok, 32, 16);
    zero.has_parent = true;
    apply1(f, f->b, "m", zero);
    assert_int_equal(held(f, f->b, want, 3), 2);
    fx_free(f);
}

/* Pods whose vLLM hashes differ share request keys; the model and the LoRA name pick the root. */
static void test_pods_models_and_lora(void **state)
{
    (void)state;
    fx *f = fx_new(16);
    static const uint64_t ha[2] = {1, 2}, hb[2] = {0xdead0001, 0xdead0002};
    apply1(f, f->a, "base", stored(ha, 2, f->tok, 32, 16));
    apply1(f, f->b, "base", stored(hb, 2, f->tok, 32, 16));
    uint64_t base[2], lora[2];
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "base"), f->tok, 32, NULL, 0, NULL, base, 2);
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "sql-lora"), f->tok, 32, NULL, 0, NULL, lora, 2);
    assert_int_equal(held(f, f->a, base, 2), 2);
    assert_int_equal(held(f, f->b, base, 2), 2);
    kvev_event e = stored(ha, 2, f->tok, 32, 16);
    e.lora_name = kvev_str_c("sql-lora");
    apply1(f, f->a, "base", e);
    assert_int_equal(held(f, f->a, lora, 2), 2);
    assert_int_equal(held(f, f->b, lora, 2), 0);
    /* an empty lora_name is no LoRA */
    e.lora_name = kvev_str_c("");
    apply1(f, f->b, "other-model", e);
    uint64_t other[2];
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "other-model"), f->tok, 32, NULL, 0, NULL, other, 2);
    assert_int_equal(held(f, f->b, other, 2), 2);
    fx_free(f);
}

/* Engine blocks of 64 over index blocks of 16, and the reverse. */
static void test_block_size_ratio(void **state)
{
    (void)state;
    fx *f = fx_new(16);
    uint64_t want[8];
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 128, NULL, 0, NULL, want, 8);
    static const uint64_t e0[1] = {500}, e1[1] = {501};
    apply1(f, f->a, "m", stored(e0, 1, f->tok, 64, 64));
    assert_int_equal(held(f, f->a, want, 8), 4);
    uint64_t rk;
    assert_true(kvindex_request_key(f->ix, f->a, 500, &rk));
    assert_true(rk == want[3]);   /* the last request key of the engine block */
    kvev_event c = stored(e1, 1, f->tok + 64, 64, 64);
    c.has_parent = true;
    c.parent_block_hash = 500;
    apply1(f, f->a, "m", c);
    assert_int_equal(held(f, f->a, want, 8), 8);
    /* removing one engine block drops its four index blocks */
    kvev_event r = {.type = KVEV_BLOCK_REMOVED, .block_hashes = e0, .n_block_hashes = 1, .medium = kvev_str_c("GPU")};
    apply1(f, f->a, "m", r);
    assert_int_equal(held(f, f->a, want, 8), 0);
    assert_int_equal(held(f, f->a, want + 4, 4), 4);
    assert_int_equal(stats(f).blocks_removed, 4);
    fx_free(f);

    f = fx_new(64);
    uint64_t big[1];
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 64, NULL, 0, NULL, big, 1);
    static const uint64_t four[4] = {10, 11, 12, 13};
    apply1(f, f->a, "m", stored(four, 4, f->tok, 64, 16));
    assert_int_equal(held(f, f->a, big, 1), 1);
    assert_true(kvindex_request_key(f->ix, f->a, 13, &rk));
    assert_true(rk == big[0]);
    fx_free(f);
}

static kvev_block_extra bx_none(void)
{
    return (kvev_block_extra){.none = true};
}

/* extra_keys taint their blocks, and are realigned when block sizes differ. */
static void test_extra_keys_realigned(void **state)
{
    (void)state;
    static kvev_extra_item ia[1], ib[2], salt[1];
    ia[0] = (kvev_extra_item){KVEV_EXTRA_STR, kvev_str_c("img-a"), 0};
    ib[0] = (kvev_extra_item){KVEV_EXTRA_PAIR, kvev_str_c("img-b"), 3};
    ib[1] = (kvev_extra_item){KVEV_EXTRA_OTHER, {NULL, 0}, 0};   /* ignored, like llm-d */
    salt[0] = (kvev_extra_item){KVEV_EXTRA_STR, kvev_str_c("tenant"), 0};
    static const uint64_t h4[4] = {1, 2, 3, 4}, h2[2] = {7, 8};

    /* same block size: per block */
    fx *f = fx_new(16);
    kvev_block_extra x4[4] = {{false, salt, 1}, {false, ia, 1}, {false, ib, 2}, bx_none()};
    kvev_event e = stored(h4, 4, f->tok, 64, 16);
    e.has_extra_keys = true, e.extra_keys = x4, e.n_extra_keys = 4;
    apply1(f, f->a, "m", e);
    const char *s0[] = {"tenant"}, *s1[] = {"img-a"}, *s2[] = {"img-b"};
    blockkeys_extra want_ex[] = {{0, s0, 1}, {1, s1, 1}, {2, s2, 1}};
    uint64_t want[4], plain[4];
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 64, want_ex, 3, NULL, want, 4);
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 64, NULL, 0, NULL, plain, 4);
    assert_true(want[0] != plain[0]);
    assert_int_equal(held(f, f->a, want, 4), 4);
    assert_int_equal(held(f, f->a, plain, 4), 0);
    fx_free(f);

    /* engine blocks of 32 over index 16: each engine block's ids go to both its index blocks */
    f = fx_new(16);
    kvev_block_extra x2[2] = {{false, ia, 1}, bx_none()};
    e = stored(h2, 2, f->tok, 64, 32);
    e.has_extra_keys = true, e.extra_keys = x2, e.n_extra_keys = 2;
    apply1(f, f->a, "m", e);
    blockkeys_extra rep[] = {{0, s1, 1}, {1, s1, 1}};
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 64, rep, 2, NULL, want, 4);
    assert_int_equal(held(f, f->a, want, 4), 4);
    fx_free(f);

    /* engine blocks of 16 over index 64: ids of the four merge, in engine order */
    f = fx_new(64);
    kvev_block_extra m4[4] = {{false, ib, 2}, bx_none(), {false, ia, 1}, bx_none()};
    e = stored(h4, 4, f->tok, 64, 16);
    e.has_extra_keys = true, e.extra_keys = m4, e.n_extra_keys = 4;
    apply1(f, f->a, "m", e);
    const char *merged[] = {"img-b", "img-a"};
    blockkeys_extra mg[] = {{0, merged, 2}};
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 64, mg, 1, NULL, want, 1);
    assert_int_equal(held(f, f->a, want, 1), 1);
    fx_free(f);
}

/* CPU offload: a store without tokens adds the tier to known engine keys. */
static void test_tiers(void **state)
{
    (void)state;
    fx *f = fx_new(16);
    static const uint64_t h[2] = {40, 41}, unknown[2] = {90, 91};
    apply1(f, f->a, "m", stored(h, 2, f->tok, 32, 16));
    uint64_t want[2];
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 32, NULL, 0, NULL, want, 2);
    kvev_event cpu = stored(h, 2, NULL, 0, 16);
    cpu.medium = kvev_str_c("CPU");
    apply1(f, f->a, "m", cpu);
    assert_int_equal(kvindex_tiers(f->ix, f->a, want[0]), (1u << KVTIER_GPU) | (1u << KVTIER_CPU));
    assert_int_equal(kvindex_tiers(f->ix, f->a, want[1]), (1u << KVTIER_GPU) | (1u << KVTIER_CPU));
    /* the GPU copy goes; the CPU one remains (medium picks the tier on removal too) */
    kvev_event r = {.type = KVEV_BLOCK_REMOVED, .block_hashes = h, .n_block_hashes = 2};
    apply1(f, f->a, "m", r);
    assert_int_equal(kvindex_tiers(f->ix, f->a, want[0]), 1u << KVTIER_CPU);
    kvindex_match m[64];
    kvindex_lookup(f->ix, want, 2, m);
    assert_int_equal(m[f->a].blocks, 2);
    assert_float_equal(m[f->a].score, 1.6, 1e-5);
    /* a storage tier */
    kvev_event disk = stored(h, 2, NULL, 0, 16);
    disk.medium = kvev_str_c("STORAGE");
    apply1(f, f->a, "m", disk);
    assert_int_equal(kvindex_tiers(f->ix, f->a, want[1]), (1u << KVTIER_CPU) | (1u << KVTIER_OTHER));
    /* unknown engine keys resolve to nothing */
    kvev_event lost = stored(unknown, 2, NULL, 0, 16);
    lost.medium = kvev_str_c("CPU");
    apply1(f, f->a, "m", lost);
    /* fewer tokens than one index block: nothing to key */
    apply1(f, f->a, "m", stored(unknown, 1, f->tok, 10, 16));
    kvingest_stats s = stats(f);
    assert_int_equal(s.skipped_unresolved, 1);
    assert_int_equal(s.skipped_partial, 1);
    assert_int_equal(s.blocks_stored, 6);
    assert_int_equal(s.blocks_removed, 2);
    fx_free(f);
}

/* Cache groups: only prefix-indexable kinds; the kind is learned per (pod, group). */
static void test_cache_groups(void **state)
{
    (void)state;
    fx *f = fx_new(16);
    static const uint64_t h[2] = {1, 2}, hs[2] = {5, 6}, h3[3] = {7, 8, 9};
    uint64_t want[2];
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 32, NULL, 0, NULL, want, 2);

    kvev_event sw = stored(hs, 2, f->tok, 32, 16);
    sw.has_group_idx = true, sw.group_idx = 1, sw.kv_cache_spec_kind = kvev_str_c("sliding_window");
    apply1(f, f->a, "m", sw);
    assert_int_equal(held(f, f->a, want, 2), 0);

    kvev_event fa = stored(h, 2, f->tok, 32, 16);
    fa.has_group_idx = true, fa.group_idx = 0, fa.kv_cache_spec_kind = kvev_str_c("full_attention");
    apply1(f, f->a, "m", fa);
    assert_int_equal(held(f, f->a, want, 2), 2);

    /* no kind: the catalog knows group 0 on pod a, not on pod b, and not group 5 */
    kvev_event nokind = stored(h, 2, f->tok, 32, 16);
    nokind.has_group_idx = true, nokind.group_idx = 0;
    apply1(f, f->b, "m", nokind);
    assert_int_equal(held(f, f->b, want, 2), 0);
    nokind.group_idx = 5;
    apply1(f, f->a, "m", nokind);
    /* a grouped event whose tokens do not match its hashes */
    kvev_event sparse = stored(h3, 3, f->tok, 32, 16);
    sparse.has_group_idx = true, sparse.group_idx = 0;
    apply1(f, f->a, "m", sparse);
    /* mla and sink kinds are indexable */
    kvev_event mla = stored(h, 2, f->tok, 32, 16);
    mla.has_group_idx = true, mla.group_idx = 0, mla.kv_cache_spec_kind = kvev_str_c("mla_attention");
    apply1(f, f->b, "m", mla);
    assert_int_equal(held(f, f->b, want, 2), 2);

    /* removals: group 1 is sliding window, group 7 never seen, group 0 prefix */
    kvev_event r = {.type = KVEV_BLOCK_REMOVED, .block_hashes = h, .n_block_hashes = 2, .has_group_idx = true};
    r.group_idx = 1;
    apply1(f, f->a, "m", r);
    r.group_idx = 7;
    apply1(f, f->a, "m", r);
    assert_int_equal(held(f, f->a, want, 2), 2);
    r.group_idx = 0;
    apply1(f, f->a, "m", r);
    assert_int_equal(held(f, f->a, want, 2), 0);

    kvingest_stats s = stats(f);
    assert_int_equal(s.skipped_kind, 4);            /* sw store, pod b no-kind, group 5, sw remove */
    assert_int_equal(s.skipped_unknown_group, 1);
    assert_int_equal(s.skipped_non_dense, 1);
    /* forgetting pod a's groups makes its group 0 unknown again */
    kvingest_forget_endpoint(f->g, f->a);
    apply1(f, f->a, "m", r);
    assert_int_equal(stats(f).skipped_unknown_group, 2);
    fx_free(f);
}

static void test_clear_payload_and_errors(void **state)
{
    (void)state;
    fx *f = fx_new(16);
    static const uint64_t h[2] = {1, 2};
    kvev_event ev[2] = {stored(h, 2, f->tok, 32, 16), {.type = KVEV_ALL_BLOCKS_CLEARED}};
    uint64_t want[2];
    blockkeys_compute(&f->keys, blockkeys_root(&f->keys, "m"), f->tok, 32, NULL, 0, NULL, want, 2);

    /* through the wire format: stored, then the same batch's clear */
    kvev_batch one = {1.0, true, 0, ev, 1}, both = {2.0, true, 0, ev, 2};
    kvev_buf buf = {0};
    kv_err err;
    assert_int_equal(kvev_encode(&one, KVEV_ENC_MAP_EVENTS, &buf, NULL), KV_OK);
    assert_int_equal(kvingest_payload(f->g, f->a, "m", buf.data, buf.len, &err), KV_OK);
    assert_int_equal(held(f, f->a, want, 2), 2);
    assert_int_equal(kvev_encode(&both, KVEV_ENC_ARRAY, &buf, NULL), KV_OK);
    assert_int_equal(kvingest_payload(f->g, f->a, "m", buf.data, buf.len, &err), KV_OK);
    assert_int_equal(held(f, f->a, want, 2), 0);
    assert_int_equal(stats(f).clears, 1);
    /* the slot stays usable after a clear */
    assert_int_equal(kvingest_payload(f->g, f->a, "m", buf.data, buf.len - 1, &err), KV_EPARSE);
    assert_int_equal(kvingest_payload(f->g, f->a, "m", buf.data, 0, &err), KV_EPARSE);
    kvingest_stats s = stats(f);
    assert_int_equal(s.decode_errors[KVEV_ERR_TRUNCATED], 2);
    assert_int_equal(s.batches, 2);

    /* a free slot or no model is the caller's error */
    assert_int_equal(kvingest_apply(f->g, 63, "m", &one, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "slot 63"));
    assert_int_equal(kvingest_apply(f->g, -1, "m", &one, &err), KV_EINVAL);
    assert_int_equal(kvingest_apply(f->g, f->a, NULL, &one, &err), KV_EINVAL);
    kvev_event odd = {.type = (kvev_type)9};
    kvev_batch oddb = {1.0, false, 0, &odd, 1};
    assert_int_equal(kvingest_apply(f->g, f->a, "m", &oddb, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "bad type 9"));
    blockkeys_ctx bad = {0};
    assert_null(kvingest_new(f->ix, &bad, &err));
    kvev_buf_free(&buf);
    fx_free(f);
}


static uint64_t rng = 0x853c49e6748fea9bULL;
static uint64_t rnd(uint64_t n)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng % n;
}

/* Random but well-formed batches with every odd combination the rules branch on (zero
 * block size, tokens without hashes, unknown parents, foreign kinds, ratios either way,
 * clears mid-batch), through the wire format: never an error, never a sanitizer report,
 * and every event accounted for. */
static void test_random_batches(void **state)
{
    (void)state;
    fx *f = fx_new(16);
    static const char *const media[] = {"GPU", "CPU", "STORAGE", NULL};
    static const char *const kinds[] = {"full_attention", "sliding_window", "mla_attention", NULL};
    static const uint32_t sizes[] = {16, 64, 8, 0, 5};
    static uint64_t hashes[8][6];
    static kvev_extra_item items[2] = {{KVEV_EXTRA_STR, {"img", 3}, 0}, {KVEV_EXTRA_PAIR, {"v", 1}, 2}};
    static kvev_block_extra bx[4];
    kvev_event ev[8];
    kvev_buf buf = {0};
    uint64_t n_events = 0;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = 1 + rnd(8);
        for (size_t i = 0; i < n; i++) {
            size_t nh = rnd(6);
            for (size_t h = 0; h < nh; h++) hashes[i][h] = 1 + rnd(200);
            const char *m = media[rnd(4)];
            ev[i] = (kvev_event){.type = (kvev_type)(rnd(10) < 6 ? KVEV_BLOCK_STORED : rnd(10) < 8 ? KVEV_BLOCK_REMOVED
                                                                                                 : KVEV_ALL_BLOCKS_CLEARED),
                                 .block_hashes = hashes[i], .n_block_hashes = nh, .medium = kvev_str_c(m)};
            if (rnd(4) == 0) ev[i].has_group_idx = true, ev[i].group_idx = (int64_t)rnd(3);
            if (ev[i].type != KVEV_BLOCK_STORED) continue;
            ev[i].block_size = sizes[rnd(5)];
            ev[i].token_ids = f->tok;
            ev[i].n_token_ids = rnd(3) == 0 ? 0 : rnd(200);
            ev[i].has_parent = rnd(2);
            ev[i].parent_block_hash = rnd(3) ? 1 + rnd(200) : 0;
            if (rnd(5) == 0) ev[i].lora_name = kvev_str_c("lora-x");
            const char *k = kinds[rnd(4)];
            ev[i].kv_cache_spec_kind = kvev_str_c(k);
            if (rnd(3) == 0) {
                size_t nb = rnd(5);
                for (size_t b = 0; b < nb; b++) bx[b] = (kvev_block_extra){rnd(2), items, rnd(3)};
                ev[i].has_extra_keys = true, ev[i].extra_keys = bx, ev[i].n_extra_keys = nb;
            }
        }
        kvev_batch b = {1.0, true, 0, ev, n};
        assert_int_equal(kvev_encode(&b, (kvev_encoding)rnd(3), &buf, NULL), KV_OK);
        kv_err err;
        int rc = kvingest_payload(f->g, rnd(2) ? f->a : f->b, "m", buf.data, buf.len, &err);
        if (rc) fail_msg("iteration %d: %s", iter, err.msg);
        n_events += n;
    }
    kvingest_stats s = stats(f);
    assert_true(s.events[0] + s.events[1] + s.events[2] == n_events);
    assert_int_equal(s.batches, 3000);
    assert_true(s.blocks_stored > 0 && s.orphans > 0 && s.skipped_kind > 0 && s.skipped_non_dense > 0);
    kvev_buf_free(&buf);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_and_orphan),
        cmocka_unit_test(test_pods_models_and_lora),
        cmocka_unit_test(test_block_size_ratio),
        cmocka_unit_test(test_extra_keys_realigned),
        cmocka_unit_test(test_tiers),
        cmocka_unit_test(test_cache_groups),
        cmocka_unit_test(test_clear_payload_and_errors),
        cmocka_unit_test(test_random_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
