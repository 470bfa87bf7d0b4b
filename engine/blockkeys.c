/* blockkeys: llm-d's request-key chains (docs/upstream/kv-events-and-index.md §3, golden §5).
 *
 * Both algorithms hash one record per full block, chained through the previous key:
 *   xxh64:       XXH64(parent LE64 || tokens LE32... || per extra: len LE64 || bytes)
 *   fnv64a-cbor: FNV-64a(canonical CBOR [parent, [tokens...], extra])
 * where extra is CBOR null for text and [{"Hash": id}, ...] for multimodal blocks, as
 * llm-d-kv-cache's Go encoder (fxamacker canonical) writes a []MMHash. The root is the
 * same record with no tokens (CBOR null) and the model name as the extra.
 * FNV is fed incrementally, so no CBOR buffer is ever built. An xxh64 text block (no
 * extras: the common case) runs XXH64's steps over parent and token words in registers
 * (xxh_text), shaped for the chain's latency; blocks with extras use XXH64's streaming
 * state. */
#include "blockkeys.h"

#include <stdbool.h>
#include <string.h>

/* Inline: xxh_text needs the algorithm's constants (XXH_PRIME64_*), which only the
 * implementation part of the header defines. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#define FNV64_OFFSET 0xcbf29ce484222325ULL
#define FNV64_PRIME 0x100000001b3ULL

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= FNV64_PRIME;
    }
    return h;
}

static inline uint64_t fnv_byte(uint64_t h, unsigned b)
{
    return (h ^ (uint8_t)b) * FNV64_PRIME;
}

/* A CBOR head (major type + argument) in its shortest form, as canonical CBOR requires,
 * fed to FNV byte by byte (no staging buffer: this runs once per token). */
static inline uint64_t fnv_cbor_head(uint64_t h, unsigned major, uint64_t v)
{
    unsigned mt = major << 5;
    int n;   /* argument bytes after the initial byte */
    if (v < 24) return fnv_byte(h, mt | (unsigned)v);
    if (v <= 0xff) h = fnv_byte(h, mt | 24), n = 1;
    else if (v <= 0xffff) h = fnv_byte(h, mt | 25), n = 2;
    else if (v <= 0xffffffffULL) h = fnv_byte(h, mt | 26), n = 4;
    else h = fnv_byte(h, mt | 27), n = 8;
    for (int i = n - 1; i >= 0; i--) h = fnv_byte(h, (unsigned)(v >> (8 * i)));
    return h;
}

static uint64_t fnv_cbor_text(uint64_t h, const char *s, size_t len)
{
    h = fnv_cbor_head(h, 3, len);
    return fnv_bytes(h, s, len);
}

static uint64_t fnv_cbor_null(uint64_t h)
{
    static const uint8_t null = 0xf6;
    return fnv_bytes(h, &null, 1);
}

/* The ids that taint one block, gathered from the caller's extras plus cache_salt. */
typedef struct block_ids {
    const blockkeys_extra *extras;
    size_t n_extras;
    size_t block;
    const char *salt;   /* only for the first block */
} block_ids;

static size_t block_ids_count(const block_ids *b)
{
    size_t n = b->salt ? 1 : 0;
    for (size_t i = 0; i < b->n_extras; i++)
        if (b->extras[i].block == b->block) n += b->extras[i].n_ids;
    return n;
}

/* Calls fn for each id of the block in order: the extras in array order, then the salt
 * (llm-d-router appends cache_salt after the multimodal hashes). */
#define BLOCK_IDS_FOREACH(b, id, body)                                                  \
    do {                                                                                \
        for (size_t bi_ = 0; bi_ < (b)->n_extras; bi_++) {                              \
            if ((b)->extras[bi_].block != (b)->block) continue;                         \
            for (size_t bj_ = 0; bj_ < (b)->extras[bi_].n_ids; bj_++) {                 \
                const char *id = (b)->extras[bi_].ids[bj_];                             \
                body;                                                                   \
            }                                                                           \
        }                                                                               \
        if ((b)->salt) {                                                                \
            const char *id = (b)->salt;                                                 \
            body;                                                                       \
        }                                                                               \
    } while (0)

static uint64_t fnv_block(uint64_t parent, const uint32_t *tokens, size_t n, const block_ids *ids)
{
    uint64_t h = fnv_cbor_head(FNV64_OFFSET, 4, 3);
    h = fnv_cbor_head(h, 0, parent);
    h = fnv_cbor_head(h, 4, n);
    for (size_t i = 0; i < n; i++) h = fnv_cbor_head(h, 0, tokens[i]);
    size_t n_ids = ids ? block_ids_count(ids) : 0;
    if (n_ids == 0) return fnv_cbor_null(h);
    h = fnv_cbor_head(h, 4, n_ids);
    BLOCK_IDS_FOREACH(ids, id, {
        h = fnv_cbor_head(h, 5, 1);
        h = fnv_cbor_text(h, "Hash", 4);
        h = fnv_cbor_text(h, id, strlen(id));
    });
    return h;
}

static void le64(uint8_t out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (8 * i));
}

static void xxh_extra(XXH64_state_t *st, const char *s, size_t len)
{
    uint8_t b[8];
    le64(b, len);
    XXH64_update(st, b, 8);
    XXH64_update(st, s, len);
}

/* --- xxh64 text blocks ----------------------------------------------------------------
 * A text block's record is parent || tokens, so its 8-byte words are the parent, then
 * token pairs, then a lone 4-byte token when the block size is odd. xxh_text runs XXH64's
 * steps (xxhash's spec; bit for bit XXH64() of the record, test_blockkeys checks it
 * against libxxhash) on those words directly: the parent stays in a register (no stack
 * copy whose store the next block's load waits for), no library call, no length and
 * alignment dispatch.
 * Keys chain, so a prompt costs the latency from parent to key, not the work: only lane 1
 * of the first stripe sees the parent; lanes 2-4, the later stripes' token products and
 * the tail's rounds depend on tokens alone, and the out-of-order core computes them while
 * the previous block's chain runs. What is left is lane 1's rounds, four merges, the tail
 * rounds and the avalanche: ~55 cycles at block size 16 (3-cycle multiplies), 512 keys
 * in ~7.7 us where the stack copy + XXH64() took ~12. */
static inline uint64_t xxh_round(uint64_t acc, uint64_t word)
{
    return XXH_rotl64(acc + word * XXH_PRIME64_2, 31) * XXH_PRIME64_1;
}

static inline uint64_t xxh_merge(uint64_t h, uint64_t lane)
{
    return (h ^ xxh_round(0, lane)) * XXH_PRIME64_1 + XXH_PRIME64_4;
}

static inline uint64_t xxh_tail8(uint64_t h, uint64_t word)
{
    return XXH_rotl64(h ^ xxh_round(0, word), 27) * XXH_PRIME64_1 + XXH_PRIME64_4;
}

/* Tokens t[0], t[1] as the record's little-endian 8-byte word, whatever the host. */
static inline uint64_t tok_pair(const uint32_t *t)
{
    return (uint64_t)t[0] | (uint64_t)t[1] << 32;
}

static inline uint64_t xxh_text(uint64_t parent, const uint32_t *t, size_t n)
{
    const uint32_t *end = t + n;
    uint64_t len = 8 + 4 * (uint64_t)n, h;
    if (len >= 32) {
        /* Lane 1 is kept before its round's last multiply (v1 = u1 * P1), so the merge's
         * round(0, v1) = rotl(v1 * P2, 31) * P1 multiplies u1 by the constant P1 * P2
         * once instead of twice in a row: 3 cycles off the chain (~6% at block size 16). */
        uint64_t u1 = XXH_rotl64(XXH_PRIME64_1 + XXH_PRIME64_2 + parent * XXH_PRIME64_2, 31);
        uint64_t v2 = xxh_round(XXH_PRIME64_2, tok_pair(t));
        uint64_t v3 = xxh_round(0, tok_pair(t + 2));
        uint64_t v4 = xxh_round(-XXH_PRIME64_1, tok_pair(t + 4));
        for (t += 6; end - t >= 8; t += 8) {
            u1 = XXH_rotl64(u1 * XXH_PRIME64_1 + tok_pair(t) * XXH_PRIME64_2, 31);
            v2 = xxh_round(v2, tok_pair(t + 2));
            v3 = xxh_round(v3, tok_pair(t + 4));
            v4 = xxh_round(v4, tok_pair(t + 6));
        }
        uint64_t v1 = u1 * XXH_PRIME64_1;
        uint64_t r1 = XXH_rotl64(u1 * (XXH_PRIME64_1 * XXH_PRIME64_2), 31) * XXH_PRIME64_1;
        h = XXH_rotl64(v1, 1) + XXH_rotl64(v2, 7) + XXH_rotl64(v3, 12) + XXH_rotl64(v4, 18);
        h = (h ^ r1) * XXH_PRIME64_1 + XXH_PRIME64_4;
        h = xxh_merge(xxh_merge(xxh_merge(h, v2), v3), v4) + len;
    } else {
        h = xxh_tail8(XXH_PRIME64_5 + len, parent);
    }
    for (; end - t >= 2; t += 2) h = xxh_tail8(h, tok_pair(t));
    if (t < end) h = XXH_rotl64(h ^ *t * XXH_PRIME64_1, 23) * XXH_PRIME64_2 + XXH_PRIME64_3;
    h ^= h >> 33;
    h *= XXH_PRIME64_2;
    h ^= h >> 29;
    h *= XXH_PRIME64_3;
    return h ^ h >> 32;
}

/* Token bytes are little-endian whatever the host, so keys are portable. */
static void le32s(uint8_t *out, const uint32_t *tokens, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, tokens, 4 * n);
#else
    for (size_t j = 0; j < n; j++) {
        uint32_t t = tokens[j];
        out[4 * j] = (uint8_t)t;
        out[4 * j + 1] = (uint8_t)(t >> 8);
        out[4 * j + 2] = (uint8_t)(t >> 16);
        out[4 * j + 3] = (uint8_t)(t >> 24);
    }
#endif
}

/* A block with extras goes through XXH64's streaming state, its tokens little-endian in
 * stack-copied chunks of this many. */
#define XXH_CHUNK_TOKENS 1024

static uint64_t xxh_block(uint64_t parent, const uint32_t *tokens, size_t n, const block_ids *ids)
{
    if (!ids || block_ids_count(ids) == 0) return xxh_text(parent, tokens, n);
    uint8_t b[4 * XXH_CHUNK_TOKENS];
    XXH64_state_t st;
    XXH64_reset(&st, 0);
    le64(b, parent);
    XXH64_update(&st, b, 8);
    for (size_t i = 0; i < n;) {
        size_t m = n - i < XXH_CHUNK_TOKENS ? n - i : XXH_CHUNK_TOKENS;
        le32s(b, tokens + i, m);
        XXH64_update(&st, b, 4 * m);
        i += m;
    }
    BLOCK_IDS_FOREACH(ids, id, xxh_extra(&st, id, strlen(id)));
    return XXH64_digest(&st);
}

int blockkeys_init(blockkeys_ctx *ctx, blockkeys_algo algo, uint32_t block_size, const char *seed, kv_err *err)
{
    if (block_size == 0) return kv_err_set(err, KV_EINVAL, "blockkeys: block size must be > 0");
    if (algo != BLOCKKEYS_XXH64 && algo != BLOCKKEYS_FNV64A_CBOR)
        return kv_err_set(err, KV_EINVAL, "blockkeys: unknown algorithm %d", (int)algo);
    if (!seed) seed = "";
    ctx->algo = algo;
    ctx->block_size = block_size;
    ctx->init = algo == BLOCKKEYS_XXH64 ? XXH64(seed, strlen(seed), 0) : fnv_bytes(FNV64_OFFSET, seed, strlen(seed));
    return KV_OK;
}

int blockkeys_algo_parse(const char *name, blockkeys_algo *out, kv_err *err)
{
    if (name && strcmp(name, "xxh64") == 0) {
        *out = BLOCKKEYS_XXH64;
        return KV_OK;
    }
    if (name && strcmp(name, "fnv64a-cbor") == 0) {
        *out = BLOCKKEYS_FNV64A_CBOR;
        return KV_OK;
    }
    return kv_err_set(err, KV_EINVAL, "blockkeys: unknown hash algorithm \"%s\" (expected xxh64 or fnv64a-cbor)",
                      name ? name : "(null)");
}

const char *blockkeys_algo_name(blockkeys_algo algo)
{
    return algo == BLOCKKEYS_FNV64A_CBOR ? "fnv64a-cbor" : "xxh64";
}

uint64_t blockkeys_root(const blockkeys_ctx *ctx, const char *model)
{
    if (!model) model = "";
    size_t len = strlen(model);
    if (ctx->algo == BLOCKKEYS_XXH64) {
        XXH64_state_t st;
        uint8_t b[8];
        XXH64_reset(&st, 0);
        le64(b, ctx->init);
        XXH64_update(&st, b, 8);
        xxh_extra(&st, model, len);
        return XXH64_digest(&st);
    }
    uint64_t h = fnv_cbor_head(FNV64_OFFSET, 4, 3);
    h = fnv_cbor_head(h, 0, ctx->init);
    h = fnv_cbor_null(h);
    return fnv_cbor_text(h, model, len);
}

size_t blockkeys_compute(const blockkeys_ctx *ctx, uint64_t parent, const uint32_t *tokens, size_t n_tokens,
                         const blockkeys_extra *extras, size_t n_extras, const char *cache_salt,
                         uint64_t *out, size_t cap)
{
    size_t bs = ctx->block_size;
    size_t n_blocks = n_tokens / bs;
    size_t n_out = n_blocks < cap ? n_blocks : cap;
    bool salted = cache_salt && cache_salt[0];   /* an empty salt is no salt, as in llm-d */
    /* Text only: the xxh64 chain without the per-block extras bookkeeping (off the
     * chain's latency, but a fifth of the instructions at block size 16). */
    if (ctx->algo == BLOCKKEYS_XXH64 && !salted && (!extras || n_extras == 0)) {
        for (size_t i = 0; i < n_out; i++) out[i] = parent = xxh_text(parent, tokens + i * bs, bs);
        return n_blocks;
    }
    for (size_t i = 0; i < n_out; i++) {
        block_ids ids = {extras, extras ? n_extras : 0, i, (salted && i == 0) ? cache_salt : NULL};
        const block_ids *idp = (ids.n_extras || ids.salt) ? &ids : NULL;
        parent = ctx->algo == BLOCKKEYS_XXH64 ? xxh_block(parent, tokens + i * bs, bs, idp)
                                              : fnv_block(parent, tokens + i * bs, bs, idp);
        out[i] = parent;
    }
    return n_blocks;
}
