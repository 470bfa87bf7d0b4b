/* test_blockkeys: the golden vectors (docs/upstream/kv-events-and-index.md §5) exactly, and
 * everything else against an independent reference written here: it materialises the
 * full CBOR document / XXH64 input bytes for every block with its own encoder, then
 * hashes them one-shot (XXH64) or with its own FNV loop. KV events are keyed by kvingest
 * against the same reference: LoRA events (the adapter name in extra_keys is no extra) and
 * engine hashes shared across pods (vLLM's deterministic NONE_HASH). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "blockkeys.h"
#include "kvevents.h"
#include "kvindex.h"
#include "kvingest.h"

/* --- reference ---------------------------------------------------------------- */

typedef struct rbuf {
    uint8_t b[1 << 16];
    size_t n;
} rbuf;

static void rput(rbuf *r, const void *p, size_t n)
{
    assert_true(r->n + n <= sizeof r->b);
    memcpy(r->b + r->n, p, n);
    r->n += n;
}

/* RFC 8949 §4.2.1 preferred serialisation: the argument in 0, 1, 2, 4 or 8 bytes. */
static void rcbor(rbuf *r, int major, uint64_t arg)
{
    int extra_bytes = arg < 24 ? 0 : arg < 0x100 ? 1 : arg < 0x10000 ? 2 : arg < 0x100000000ULL ? 4 : 8;
    int info = extra_bytes == 0 ? (int)arg : extra_bytes == 1 ? 24 : extra_bytes == 2 ? 25 : extra_bytes == 4 ? 26 : 27;
    uint8_t first = (uint8_t)(major * 32 + info);
    rput(r, &first, 1);
    for (int k = extra_bytes - 1; k >= 0; k--) {
        uint8_t byte = (uint8_t)((arg >> (8 * k)) & 0xff);
        rput(r, &byte, 1);
    }
}

static void rcbor_str(rbuf *r, const char *s)
{
    rcbor(r, 3, strlen(s));
    rput(r, s, strlen(s));
}

static uint64_t rfnv(const rbuf *r)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < r->n; i++) h = (h ^ r->b[i]) * 1099511628211ULL;
    return h;
}

typedef struct rblock {
    const uint32_t *tok;   /* NULL: the root record */
    size_t n_tok;
    const char *ids[8];    /* multimodal ids then salt, or for the root: the model */
    size_t n_ids;
} rblock;

static void rcbor_record(rbuf *r, uint64_t parent, const rblock *blk)
{
    r->n = 0;
    rcbor(r, 4, 3);
    rcbor(r, 0, parent);
    if (!blk->tok) {
        uint8_t nul = 0xf6;
        rput(r, &nul, 1);
        rcbor_str(r, blk->ids[0]);
        return;
    }
    rcbor(r, 4, blk->n_tok);
    for (size_t i = 0; i < blk->n_tok; i++) rcbor(r, 0, blk->tok[i]);
    if (blk->n_ids == 0) {
        uint8_t nul = 0xf6;
        rput(r, &nul, 1);
        return;
    }
    rcbor(r, 4, blk->n_ids);
    for (size_t i = 0; i < blk->n_ids; i++) {
        rcbor(r, 5, 1);
        rcbor_str(r, "Hash");
        rcbor_str(r, blk->ids[i]);
    }
}

static void rxxh_record(rbuf *r, uint64_t parent, const rblock *blk)
{
    r->n = 0;
    for (int i = 0; i < 8; i++) {
        uint8_t byte = (uint8_t)(parent >> (8 * i));
        rput(r, &byte, 1);
    }
    for (size_t t = 0; blk->tok && t < blk->n_tok; t++)
        for (int i = 0; i < 4; i++) {
            uint8_t byte = (uint8_t)(blk->tok[t] >> (8 * i));
            rput(r, &byte, 1);
        }
    for (size_t k = 0; k < blk->n_ids; k++) {
        uint64_t len = strlen(blk->ids[k]);
        for (int i = 0; i < 8; i++) {
            uint8_t byte = (uint8_t)(len >> (8 * i));
            rput(r, &byte, 1);
        }
        rput(r, blk->ids[k], len);
    }
}

static uint64_t rhash(blockkeys_algo algo, uint64_t parent, const rblock *blk)
{
    static rbuf r;
    if (algo == BLOCKKEYS_XXH64) {
        rxxh_record(&r, parent, blk);
        return XXH64(r.b, r.n, 0);
    }
    rcbor_record(&r, parent, blk);
    return rfnv(&r);
}

static uint64_t rinit(blockkeys_algo algo, const char *seed)
{
    if (algo == BLOCKKEYS_XXH64) return XXH64(seed, strlen(seed), 0);
    rbuf *r = calloc(1, sizeof *r);
    rput(r, seed, strlen(seed));
    uint64_t h = rfnv(r);
    free(r);
    return h;
}

static uint64_t rroot(blockkeys_algo algo, const char *seed, const char *model)
{
    rblock root = {NULL, 0, {model}, 1};
    return rhash(algo, rinit(algo, seed), &root);
}

static void hex(char *out, const rbuf *r)
{
    for (size_t i = 0; i < r->n; i++) sprintf(out + 2 * i, "%02x", r->b[i]);
}

static uint32_t seq_tokens[256];

static void fill_seq(void)
{
    for (uint32_t i = 0; i < 256; i++) seq_tokens[i] = i + 1;
}

/* --- golden vectors -------------------------------------------------------------- */

static void test_golden_fnv64a_cbor(void **state)
{
    (void)state;
    fill_seq();
    blockkeys_ctx ctx;
    assert_int_equal(blockkeys_init(&ctx, BLOCKKEYS_FNV64A_CBOR, 16, "", NULL), KV_OK);
    assert_true(ctx.init == 0xcbf29ce484222325ULL);
    uint64_t root = blockkeys_root(&ctx, "test-model");
    assert_true(root == 0xf31309635ef2add0ULL);

    /* the reference encoder reproduces the CBOR bytes of docs/upstream/kv-events-and-index.md §5 */
    static rbuf r;
    char h[512];
    rblock rb = {NULL, 0, {"test-model"}, 1};
    rcbor_record(&r, ctx.init, &rb);
    hex(h, &r);
    assert_string_equal(h, "831bcbf29ce484222325f66a746573742d6d6f64656c");
    rblock b0 = {seq_tokens, 16, {0}, 0}, b1 = {seq_tokens + 16, 16, {0}, 0};
    rcbor_record(&r, root, &b0);
    hex(h, &r);
    assert_string_equal(h, "831bf31309635ef2add0900102030405060708090a0b0c0d0e0f10f6");
    rcbor_record(&r, 0x8464eee8f2cf3412ULL, &b1);
    hex(h, &r);
    assert_string_equal(h, "831b8464eee8f2cf3412901112131415161718181819181a181b181c181d181e181f1820f6");

    uint64_t k[2];
    assert_int_equal(blockkeys_compute(&ctx, root, seq_tokens, 32, NULL, 0, NULL, k, 2), 2);
    assert_true(k[0] == 9540012594951042066ULL);
    assert_true(k[1] == 16921089685996993662ULL);
}

static void test_golden_xxh64(void **state)
{
    (void)state;
    fill_seq();
    blockkeys_ctx ctx;
    assert_int_equal(blockkeys_init(&ctx, BLOCKKEYS_XXH64, 16, "", NULL), KV_OK);
    assert_true(ctx.init == 17241709254077376921ULL);
    uint64_t root = blockkeys_root(&ctx, "test-model");
    assert_true(root == 658786475292698776ULL);
    uint64_t k[2];
    assert_int_equal(blockkeys_compute(&ctx, root, seq_tokens, 32, NULL, 0, NULL, k, 2), 2);
    assert_true(k[0] == 13553460584553255540ULL);
    assert_true(k[1] == 9887990258693334188ULL);
}

/* --- against the reference --------------------------------------------------------- */

static const blockkeys_algo ALGOS[] = {BLOCKKEYS_XXH64, BLOCKKEYS_FNV64A_CBOR};

/* Chains n_tok/bs blocks with the reference; ids[b] lists block b's ids. */
static void rchain(blockkeys_algo algo, uint64_t parent, const uint32_t *tok, size_t n_tok, size_t bs,
                   const char *const ids[][8], const size_t *n_ids, uint64_t *out)
{
    for (size_t b = 0; b < n_tok / bs; b++) {
        rblock blk = {tok + b * bs, bs, {0}, n_ids ? n_ids[b] : 0};
        for (size_t i = 0; i < blk.n_ids; i++) blk.ids[i] = ids[b][i];
        parent = rhash(algo, parent, &blk);
        out[b] = parent;
    }
}

static void test_seeds_and_models(void **state)
{
    (void)state;
    fill_seq();
    const char *seeds[] = {"", "42", "a much longer hash seed with spaces"};
    const char *models[] = {"test-model", "Qwen/Qwen3-32B", "", "meta-llama/Llama-3.1-8B-Instruct-with-a-name-over-23"};
    for (size_t a = 0; a < 2; a++)
        for (size_t s = 0; s < 3; s++)
            for (size_t m = 0; m < 4; m++) {
                blockkeys_ctx ctx;
                assert_int_equal(blockkeys_init(&ctx, ALGOS[a], 16, seeds[s], NULL), KV_OK);
                assert_true(ctx.init == rinit(ALGOS[a], seeds[s]));
                uint64_t root = blockkeys_root(&ctx, models[m]);
                assert_true(root == rroot(ALGOS[a], seeds[s], models[m]));
                uint64_t got[4], want[4];
                assert_int_equal(blockkeys_compute(&ctx, root, seq_tokens, 64, NULL, 0, NULL, got, 4), 4);
                rchain(ALGOS[a], root, seq_tokens, 64, 16, NULL, NULL, want);
                assert_memory_equal(got, want, sizeof got);
            }
}

/* Token values across every CBOR head width, and parents across them too. */
static void test_integer_boundaries(void **state)
{
    (void)state;
    static const uint32_t edge[] = {0, 1, 23, 24, 25, 255, 256, 257, 65535, 65536, 65537, 151643, 0x7fffffff,
                                    0xfffffffe, 0xffffffff, 1000000};
    uint32_t tok[64];
    for (size_t i = 0; i < 64; i++) tok[i] = edge[(i * 7) % 16];
    static const uint64_t parents[] = {0, 23, 24, 255, 256, 65535, 65536, 0xffffffffULL, 0x100000000ULL,
                                       0x7fffffffffffffffULL, 0xffffffffffffffffULL};
    for (size_t a = 0; a < 2; a++)
        for (size_t p = 0; p < sizeof parents / sizeof parents[0]; p++) {
            blockkeys_ctx ctx;
            assert_int_equal(blockkeys_init(&ctx, ALGOS[a], 16, "7", NULL), KV_OK);
            uint64_t got[4], want[4];
            assert_int_equal(blockkeys_compute(&ctx, parents[p], tok, 64, NULL, 0, NULL, got, 4), 4);
            rchain(ALGOS[a], parents[p], tok, 64, 16, NULL, NULL, want);
            assert_memory_equal(got, want, sizeof got);
        }
}

static void test_block_sizes_partial_and_cap(void **state)
{
    (void)state;
    uint32_t tok[300];
    for (size_t i = 0; i < 300; i++) tok[i] = (uint32_t)(i * 2654435761u % 200000);
    for (size_t a = 0; a < 2; a++) {
        uint32_t sizes[] = {16, 64, 1, 5};
        for (size_t s = 0; s < 4; s++) {
            uint32_t bs = sizes[s];
            blockkeys_ctx ctx;
            assert_int_equal(blockkeys_init(&ctx, ALGOS[a], bs, "", NULL), KV_OK);
            uint64_t root = blockkeys_root(&ctx, "m");
            uint64_t got[300], want[300];
            size_t nb = 300 / bs;
            /* the trailing 300 % bs tokens never produce a key */
            assert_int_equal(blockkeys_compute(&ctx, root, tok, 300, NULL, 0, NULL, got, 300), nb);
            rchain(ALGOS[a], root, tok, 300, bs, NULL, NULL, want);
            assert_memory_equal(got, want, nb * sizeof got[0]);
            /* a partial block adds nothing; dropping it leaves earlier keys unchanged */
            uint64_t shorter[300];
            size_t n2 = blockkeys_compute(&ctx, root, tok, nb * bs - 1, NULL, 0, NULL, shorter, 300);
            assert_int_equal(n2, nb - 1);
            assert_memory_equal(shorter, got, n2 * sizeof got[0]);
            /* cap: fewer written, the full count returned, nothing beyond cap touched */
            uint64_t capped[3] = {0, 0, 0xdeadbeef};
            assert_int_equal(blockkeys_compute(&ctx, root, tok, 300, NULL, 0, NULL, capped, 2), nb);
            assert_memory_equal(capped, got, 2 * sizeof got[0]);
            assert_true(capped[2] == 0xdeadbeef);
            /* chaining from the middle gives the same keys */
            uint64_t tail[300];
            size_t half = nb / 2;
            blockkeys_compute(&ctx, got[half - 1], tok + half * bs, (nb - half) * bs, NULL, 0, NULL, tail, 300);
            assert_memory_equal(tail, got + half, (nb - half) * sizeof got[0]);
        }
    }
    blockkeys_ctx ctx;
    uint64_t none = 1;
    assert_int_equal(blockkeys_init(&ctx, BLOCKKEYS_XXH64, 16, "", NULL), KV_OK);
    assert_int_equal(blockkeys_compute(&ctx, 5, tok, 15, NULL, 0, NULL, &none, 1), 0);
    assert_true(none == 1);
}

/* Blocks far larger than any stack copy (xxh64 hashes those records in pieces) and the
 * largest token ids still match the reference encoder. */
static void test_huge_blocks(void **state)
{
    (void)state;
    enum { BS = 2500, N = 2 * BS + 7 };
    static uint32_t tok[N];
    for (size_t i = 0; i < N; i++) tok[i] = i % 3 == 0 ? UINT32_MAX - (uint32_t)i : (uint32_t)(i * 2654435761u);
    for (size_t a = 0; a < 2; a++) {
        blockkeys_ctx ctx;
        assert_int_equal(blockkeys_init(&ctx, ALGOS[a], BS, "s", NULL), KV_OK);
        uint64_t root = blockkeys_root(&ctx, "m"), got[2], want[2];
        assert_int_equal(blockkeys_compute(&ctx, root, tok, N, NULL, 0, NULL, got, 2), 2);
        rchain(ALGOS[a], root, tok, N, BS, NULL, NULL, want);
        assert_memory_equal(got, want, sizeof got);
    }
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* xxh64 computes text blocks word by word rather than through XXH64(): every block size
 * that changes its shape (records shorter than one 32-byte stripe, each stripe count, each
 * tail of 8-byte words with and without a lone token), random tokens over the whole
 * 32-bit range, random parents and seeds must still give XXH64 of the record's bytes.
 * Every fourth repetition gives block 1 an extra, so text blocks beside a multimodal one
 * (routed per block) are covered too. */
static void test_xxh64_text_blocks_random(void **state)
{
    (void)state;
    enum { MAX_BS = 256, BLOCKS = 4 };
    static uint32_t tok[BLOCKS * MAX_BS + MAX_BS];
    uint64_t got[BLOCKS], want[BLOCKS], rng = 2024;
    const char *img[] = {"img-7f3a"};
    blockkeys_extra ex[] = {{1, img, 1}};
    const char *ids[BLOCKS][8] = {{0}, {"img-7f3a"}};
    size_t n_ids[BLOCKS] = {0, 1, 0, 0};
    size_t sizes[72], n_sizes = 0;
    for (size_t bs = 1; bs <= 70; bs++) sizes[n_sizes++] = bs;
    sizes[n_sizes++] = 128;
    sizes[n_sizes++] = MAX_BS;
    for (size_t z = 0; z < n_sizes; z++)
        for (int rep = 0; rep < 8; rep++) {
            size_t bs = sizes[z], n = BLOCKS * bs + splitmix(&rng) % bs;   /* plus a partial block */
            for (size_t i = 0; i < n; i++) {
                uint64_t r = splitmix(&rng);
                /* a third small ids, a third beyond 16 bits, a third anywhere in 32 bits */
                tok[i] = r % 3 == 0 ? (uint32_t)(r >> 32) % 300 : r % 3 == 1 ? 65536 + (uint32_t)(r >> 32) % 200000
                                                                              : (uint32_t)(r >> 32);
            }
            char seed[24];
            snprintf(seed, sizeof seed, "%llu", (unsigned long long)splitmix(&rng));
            blockkeys_ctx ctx;
            assert_int_equal(blockkeys_init(&ctx, BLOCKKEYS_XXH64, (uint32_t)bs, seed, NULL), KV_OK);
            uint64_t parent = rep % 2 ? splitmix(&rng) : blockkeys_root(&ctx, "m");
            int mm = rep % 4 == 3;
            assert_int_equal(blockkeys_compute(&ctx, parent, tok, n, mm ? ex : NULL, mm ? 1 : 0, NULL, got, BLOCKS),
                             BLOCKS);
            rchain(BLOCKKEYS_XXH64, parent, tok, BLOCKS * bs, bs, ids, mm ? n_ids : NULL, want);
            assert_memory_equal(got, want, sizeof got);
        }
}

static void test_multimodal_extras_and_salt(void **state)
{
    (void)state;
    fill_seq();
    char long_id[300];
    memset(long_id, 'z', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    const char *b1a[] = {"img-0123456789abcdef0123456789abcdef"};
    const char *b1b[] = {"img-second", long_id};
    const char *b3[] = {"audio-x"};
    /* two entries for block 1, given out of order with block 3 */
    blockkeys_extra ex[] = {{3, b3, 1}, {1, b1a, 1}, {1, b1b, 2}};
    const char *ids[4][8] = {{0}, {b1a[0], b1b[0], b1b[1]}, {0}, {b3[0]}};
    size_t n_ids[4] = {0, 3, 0, 1};
    for (size_t a = 0; a < 2; a++) {
        blockkeys_ctx ctx;
        assert_int_equal(blockkeys_init(&ctx, ALGOS[a], 16, "s", NULL), KV_OK);
        uint64_t root = blockkeys_root(&ctx, "vision-model");
        uint64_t got[4], want[4], plain[4];
        assert_int_equal(blockkeys_compute(&ctx, root, seq_tokens, 64, ex, 3, NULL, got, 4), 4);
        rchain(ALGOS[a], root, seq_tokens, 64, 16, ids, n_ids, want);
        assert_memory_equal(got, want, sizeof got);
        blockkeys_compute(&ctx, root, seq_tokens, 64, NULL, 0, NULL, plain, 4);
        assert_true(got[0] == plain[0]);
        assert_true(got[1] != plain[1]);

        /* cache_salt goes after block 0's ids, block 0 only (then the chain differs) */
        const char *b0[] = {"img-first"};
        blockkeys_extra ex0[] = {{0, b0, 1}};
        const char *sids[4][8] = {{"img-first", "tenant-salt"}};
        size_t sn[4] = {2, 0, 0, 0};
        assert_int_equal(blockkeys_compute(&ctx, root, seq_tokens, 64, ex0, 1, "tenant-salt", got, 4), 4);
        rchain(ALGOS[a], root, seq_tokens, 64, 16, sids, sn, want);
        assert_memory_equal(got, want, sizeof got);
        const char *only_salt[4][8] = {{"tenant-salt"}};
        size_t on[4] = {1, 0, 0, 0};
        blockkeys_compute(&ctx, root, seq_tokens, 64, NULL, 0, "tenant-salt", got, 4);
        rchain(ALGOS[a], root, seq_tokens, 64, 16, only_salt, on, want);
        assert_memory_equal(got, want, sizeof got);
        /* an empty salt is no salt */
        blockkeys_compute(&ctx, root, seq_tokens, 64, NULL, 0, "", got, 4);
        assert_memory_equal(got, plain, sizeof got);
        /* an extras entry with zero ids is text */
        blockkeys_extra empty[] = {{0, NULL, 0}};
        blockkeys_compute(&ctx, root, seq_tokens, 64, empty, 1, NULL, got, 4);
        assert_memory_equal(got, plain, sizeof got);
    }
}

static void test_lora_root(void **state)
{
    (void)state;
    for (size_t a = 0; a < 2; a++) {
        blockkeys_ctx ctx;
        assert_int_equal(blockkeys_init(&ctx, ALGOS[a], 16, "", NULL), KV_OK);
        uint64_t base = blockkeys_root(&ctx, "base-model");
        uint64_t lora = blockkeys_root(&ctx, "sql-lora");
        assert_true(base != lora);
        assert_true(lora == rroot(ALGOS[a], "", "sql-lora"));
    }
}

/* --- KV events keyed as requests are (kvingest), against the reference ------------------ */

typedef struct evfx {
    kvindex *ix;
    kvingest *g;
    blockkeys_ctx keys;
    int a, b;
} evfx;

static void evfx_init(evfx *f, blockkeys_algo algo)
{
    kvindex_config cfg = {.capacity = 10000, .max_endpoints = 8};
    assert_non_null(f->ix = kvindex_new(&cfg, NULL));
    f->a = kvindex_endpoint_add(f->ix, "10.0.0.1:8000", NULL);
    f->b = kvindex_endpoint_add(f->ix, "10.0.0.2:8000", NULL);
    assert_int_equal(blockkeys_init(&f->keys, algo, 16, "", NULL), KV_OK);
    assert_non_null(f->g = kvingest_new(f->ix, &f->keys, NULL));
}

static void evfx_fini(evfx *f)
{
    kvingest_free(f->g);
    kvindex_free(f->ix);
}

/* One BlockStored of 3 blocks of 16 tokens (seq_tokens) from slot, model "base". */
static void evfx_store(evfx *f, int slot, const uint64_t *hashes, const char *lora, const kvev_block_extra *x)
{
    kvev_event e = {.type = KVEV_BLOCK_STORED, .block_hashes = hashes, .n_block_hashes = 3, .token_ids = seq_tokens,
                    .n_token_ids = 48, .block_size = 16, .medium = kvev_str_c("GPU")};
    if (lora)
        e.lora_name = kvev_str_c(lora);
    if (x)
        e.has_extra_keys = true, e.extra_keys = x, e.n_extra_keys = 3;
    kvev_batch b = {1.0, true, 0, &e, 1};
    kv_err err = {0};
    if (kvingest_apply(f->g, slot, "base", &b, &err) != KV_OK)
        fail_msg("apply: %s", err.msg);
}

static uint32_t evfx_held(evfx *f, int slot, const uint64_t *keys)
{
    kvindex_match m[8];
    kvindex_lookup(f->ix, keys, 3, m);
    return m[slot].blocks;
}

/* vLLM's extra_keys for a LoRA request start with the adapter name (a bare string,
 * generate_block_hash_extra_keys), then multimodal ids, then cache_salt. The adapter is
 * the chain root's model, never an extra (llm-d-router #2927): a LoRA event must land on
 * exactly the keys the reference gives a LoRA request -- alone, salted, with an image. */
static void test_lora_extra_keys(void **state)
{
    (void)state;
    fill_seq();
    static const uint64_t h[3] = {11, 12, 13};
    static kvev_extra_item lora[1], lora_salt[2], lora_img[2], img_first[1];
    lora[0] = (kvev_extra_item){KVEV_EXTRA_STR, kvev_str_c("adapter-116"), 0};
    lora_salt[0] = lora[0];
    lora_salt[1] = (kvev_extra_item){KVEV_EXTRA_STR, kvev_str_c("tenant-7"), 0};
    lora_img[0] = lora[0];
    lora_img[1] = (kvev_extra_item){KVEV_EXTRA_PAIR, kvev_str_c("img-9f"), 0};
    img_first[0] = (kvev_extra_item){KVEV_EXTRA_STR, kvev_str_c("img-9f"), 0};
    static const struct {
        const char *name;
        const char *lora;
        kvev_block_extra x[3];
        const char *ids[3][8];   /* what the reference hashes into each block */
        size_t n_ids[3];
    } cases[] = {
        {"adapter alone", "adapter-116", {{false, lora, 1}, {false, lora, 1}, {false, lora, 1}}, {{0}}, {0, 0, 0}},
        {"adapter + cache_salt", "adapter-116", {{false, lora_salt, 2}, {false, lora, 1}, {false, lora, 1}},
         {{"tenant-7"}}, {1, 0, 0}},
        {"adapter + image", "adapter-116", {{false, lora, 1}, {false, lora_img, 2}, {false, lora, 1}},
         {{0}, {"img-9f"}}, {0, 1, 0}},
        /* without a LoRA a leading bare string is a multimodal id (vLLM >= 0.18) */
        {"base model + image", NULL, {{false, img_first, 1}, {true, NULL, 0}, {true, NULL, 0}}, {{"img-9f"}}, {1, 0, 0}},
        /* only the adapter's own name is dropped */
        {"adapter + other first string", "adapter-116", {{false, img_first, 1}, {false, lora, 1}, {false, lora, 1}},
         {{"img-9f"}}, {1, 0, 0}},
    };
    for (size_t a = 0; a < 2; a++) {
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            evfx f = {0};
            evfx_init(&f, ALGOS[a]);
            evfx_store(&f, f.a, h, cases[c].lora, cases[c].x);
            uint64_t want[3];
            rchain(ALGOS[a], rroot(ALGOS[a], "", cases[c].lora ? cases[c].lora : "base"), seq_tokens, 48, 16,
                   cases[c].ids, cases[c].n_ids, want);
            if (evfx_held(&f, f.a, want) != 3)
                fail_msg("%s, %s: the event's keys are not the request's", blockkeys_algo_name(ALGOS[a]),
                         cases[c].name);
            evfx_fini(&f);
        }
    }
}

/* vLLM PR #51875 (2026-08) seeds NONE_HASH, the root of vLLM's own block hashes, from a
 * fixed default instead of os.urandom when PYTHONHASHSEED is unset, so every pod now
 * sends the same engine hashes for the same content. Request keys are llm-d's, computed
 * from the event's tokens (root: the hash seed and the model), so they do not change: the
 * same tokens give the reference's keys whatever the engine hashes, and engine hashes
 * stay per pod -- removing a block on one pod leaves the pod with the same hashes whole. */
static void test_engine_hashes_shared_across_pods(void **state)
{
    (void)state;
    fill_seq();
    static const uint64_t random_a[3] = {0x9e3779b97f4a7c15ULL, 7, 8}, random_b[3] = {0x1234, 0x5678, 0x9abc},
                          fixed[3] = {0xfeed0001, 0xfeed0002, 0xfeed0003};
    for (size_t a = 0; a < 2; a++) {
        uint64_t want[3];
        rchain(ALGOS[a], rroot(ALGOS[a], "", "base"), seq_tokens, 48, 16, NULL, NULL, want);
        evfx f = {0};
        evfx_init(&f, ALGOS[a]);
        evfx_store(&f, f.a, random_a, NULL, NULL);   /* before #51875: per-process hashes */
        evfx_store(&f, f.b, random_b, NULL, NULL);
        assert_int_equal(evfx_held(&f, f.a, want), 3);
        assert_int_equal(evfx_held(&f, f.b, want), 3);
        evfx_fini(&f);
        evfx_init(&f, ALGOS[a]);
        evfx_store(&f, f.a, fixed, NULL, NULL);       /* after: the same hashes on both pods */
        evfx_store(&f, f.b, fixed, NULL, NULL);
        assert_int_equal(evfx_held(&f, f.a, want), 3);
        assert_int_equal(evfx_held(&f, f.b, want), 3);
        kvev_event r = {.type = KVEV_BLOCK_REMOVED, .block_hashes = fixed + 2, .n_block_hashes = 1,
                        .medium = kvev_str_c("GPU")};
        kvev_batch b = {2.0, true, 1, &r, 1};
        kv_err err = {0};
        assert_int_equal(kvingest_apply(f.g, f.a, "base", &b, &err), KV_OK);
        assert_int_equal(evfx_held(&f, f.a, want), 2);
        assert_int_equal(evfx_held(&f, f.b, want), 3);
        evfx_fini(&f);
    }
}

static void test_init_and_names(void **state)
{
    (void)state;
    blockkeys_ctx ctx;
    kv_err err;
    assert_int_equal(blockkeys_init(&ctx, BLOCKKEYS_XXH64, 0, "", &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "block size"));
    assert_int_equal(blockkeys_init(&ctx, (blockkeys_algo)7, 16, "", &err), KV_EINVAL);
    assert_int_equal(blockkeys_init(&ctx, BLOCKKEYS_FNV64A_CBOR, 64, NULL, NULL), KV_OK);
    assert_true(ctx.init == 0xcbf29ce484222325ULL);
    blockkeys_algo a;
    assert_int_equal(blockkeys_algo_parse("xxh64", &a, NULL), KV_OK);
    assert_int_equal(a, BLOCKKEYS_XXH64);
    assert_int_equal(blockkeys_algo_parse("fnv64a-cbor", &a, NULL), KV_OK);
    assert_int_equal(a, BLOCKKEYS_FNV64A_CBOR);
    assert_int_equal(blockkeys_algo_parse("sha256", &a, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "sha256"));
    assert_string_equal(blockkeys_algo_name(BLOCKKEYS_XXH64), "xxh64");
    assert_string_equal(blockkeys_algo_name(BLOCKKEYS_FNV64A_CBOR), "fnv64a-cbor");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_fnv64a_cbor),
        cmocka_unit_test(test_golden_xxh64),
        cmocka_unit_test(test_seeds_and_models),
        cmocka_unit_test(test_integer_boundaries),
        cmocka_unit_test(test_block_sizes_partial_and_cap),
        cmocka_unit_test(test_huge_blocks),
        cmocka_unit_test(test_xxh64_text_blocks_random),
        cmocka_unit_test(test_multimodal_extras_and_salt),
        cmocka_unit_test(test_lora_root),
        cmocka_unit_test(test_lora_extra_keys),
        cmocka_unit_test(test_engine_hashes_shared_across_pods),
        cmocka_unit_test(test_init_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
