/* blockkeys: token ids -> chained 64-bit request keys, the keys the index and the
 * precise scorer agree on (llm-d's "request keys"; independent of vLLM's own hash).
 *
 * Two algorithms (docs/upstream/kv-events-and-index.md §3, golden vectors §5):
 *   BLOCKKEYS_XXH64       llm-d-router: init = XXH64(seed); one XXH64 per block over
 *                         parent(8B LE) || tokens(4B LE each) || per extra: len(8B LE) || bytes.
 *                         The root uses the model name as its single extra.
 *   BLOCKKEYS_FNV64A_CBOR llm-d-kv-cache: FNV-64a over canonical CBOR [parent, tokens, extra].
 * A partial trailing block is dropped. The model name is replaced by the LoRA name when set.
 * Pure functions; a blockkeys_ctx is immutable after init and may be shared across threads. */
#ifndef KVROUTE_BLOCKKEYS_H
#define KVROUTE_BLOCKKEYS_H

#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

typedef enum { BLOCKKEYS_XXH64 = 0, BLOCKKEYS_FNV64A_CBOR = 1 } blockkeys_algo;

typedef struct blockkeys_ctx {
    blockkeys_algo algo;
    uint32_t block_size;   /* tokens per block, > 0 */
    uint64_t init;         /* hash of the seed string */
} blockkeys_ctx;

/* Per-block extras: multimodal identifiers and, on block 0, the cache_salt.
 * ids[i] for i in [0, n_ids) belong to block 'block'. */
typedef struct blockkeys_extra {
    size_t block;
    const char *const *ids;
    size_t n_ids;
} blockkeys_extra;

int blockkeys_init(blockkeys_ctx *ctx, blockkeys_algo algo, uint32_t block_size, const char *seed, kv_err *err);
/* Parses "xxh64" / "fnv64a-cbor"; KV_EINVAL otherwise. */
int blockkeys_algo_parse(const char *name, blockkeys_algo *out, kv_err *err);
const char *blockkeys_algo_name(blockkeys_algo algo);

/* The chain root for a model (or LoRA name). The root itself is never a key. */
uint64_t blockkeys_root(const blockkeys_ctx *ctx, const char *model);

/* Keys for every full block of tokens, chained from parent (a root, or the key of the
 * block before tokens[0]). extras may be NULL; extras[] need not be sorted; cache_salt
 * (may be NULL) is folded into the extras of tokens[0]'s block (pass NULL when parent
 * is not the root). Block numbers in extras are relative to tokens[0]. Writes min(n_tokens/bs, cap) keys to
 * out and returns n_tokens/bs. */
size_t blockkeys_compute(const blockkeys_ctx *ctx, uint64_t parent, const uint32_t *tokens, size_t n_tokens,
                         const blockkeys_extra *extras, size_t n_extras, const char *cache_salt,
                         uint64_t *out, size_t cap);

#endif
