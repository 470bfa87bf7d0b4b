/* gen_corpus: writes the seed corpora that are easier made by the engine's own encoders
 * than by hand (`make fuzz-corpus`; the files are committed under tests/fuzz/corpus/).
 *
 *   kvevents/  KVEventBatch payloads in all three encodings: a stored chain with tokens
 *              (one batch crossing several 64-byte token windows, ids of one, two, three
 *              and five msgpack bytes), removals, clears, extra_keys, LoRA, cache groups,
 *              CPU-tier stores without tokens. Token arrays never end a 64-byte window
 *              with a multi-byte id, so the seeds stay valid for both token paths.
 *
 * Usage: gen_corpus DIR (DIR/kvevents/ is created). Prints nothing; exits 1 on error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kvevents.h"

static int write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "gen_corpus: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int write_batch(const char *dir, const char *name, const kvev_event *ev, size_t n)
{
    static const char *const enc_names[] = {"array", "map_events", "map_all"};
    kvev_batch b = {.ts = 1733300000.25, .has_dp_rank = true, .data_parallel_rank = 0, .events = ev, .n_events = n};
    for (int enc = KVEV_ENC_ARRAY; enc <= KVEV_ENC_MAP_ALL; enc++) {
        kvev_buf buf = {0};
        kv_err err;
        char file[256];
        snprintf(file, sizeof file, "%s-%s", name, enc_names[enc]);
        if (kvev_encode(&b, (kvev_encoding)enc, &buf, &err) != KV_OK) {
            fprintf(stderr, "gen_corpus: %s: %s\n", file, err.msg);
            return -1;
        }
        int rc = write_file(dir, file, buf.data, buf.len);
        kvev_buf_free(&buf);
        if (rc)
            return rc;
    }
    return 0;
}

static int gen_kvevents(const char *dir)
{
    static uint32_t tok[512];
    for (size_t i = 0; i < 512; i++)   /* mostly two- and three-byte ids, a few five-byte ones */
        tok[i] = i % 61 == 60 ? 70000 + (uint32_t)i : 1000 + (uint32_t)i * 37 % 150000;
    static uint32_t small[64];
    for (size_t i = 0; i < 64; i++)
        small[i] = (uint32_t)i % 100;  /* one-byte ids: 64 of them fill a window exactly */
    static const uint64_t h[8] = {11, 12, 13, 14, 0xfedcba9876543210ULL, 16, 17, 18};
    static const kvev_extra_item items[] = {
        {.kind = KVEV_EXTRA_STR, .id = {"image-hash-1", 12}},
        {.kind = KVEV_EXTRA_PAIR, .id = {"image-hash-2", 12}, .offset = 3},
    };
    static const kvev_block_extra extras[2] = {{.none = false, .items = items, .n_items = 2}, {.none = true}};
    const kvev_event chain[] = {
        {.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = 2, .token_ids = tok, .n_token_ids = 32,
         .block_size = 16, .medium = kvev_str_c("GPU")},
        {.type = KVEV_BLOCK_STORED, .block_hashes = h + 2, .n_block_hashes = 2, .has_parent = true,
         .parent_block_hash = h[1], .token_ids = tok + 32, .n_token_ids = 32, .block_size = 16,
         .medium = kvev_str_c("GPU")},
    };
    const kvev_event long_tokens[] = {
        {.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = 8, .token_ids = tok, .n_token_ids = 512,
         .block_size = 64, .medium = kvev_str_c("GPU")},
        {.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = 4, .token_ids = small, .n_token_ids = 64,
         .block_size = 16, .medium = kvev_str_c("GPU")},
        {.type = KVEV_ALL_BLOCKS_CLEARED},
    };
    const kvev_event removed[] = {
        {.type = KVEV_BLOCK_REMOVED, .block_hashes = h, .n_block_hashes = 3, .medium = kvev_str_c("GPU")},
        {.type = KVEV_BLOCK_REMOVED, .block_hashes = h + 3, .n_block_hashes = 1, .medium = kvev_str_c("CPU")},
    };
    const kvev_event cleared[] = {{.type = KVEV_ALL_BLOCKS_CLEARED}};
    const kvev_event extra[] = {
        {.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = 2, .token_ids = tok, .n_token_ids = 32,
         .block_size = 16, .medium = kvev_str_c("GPU"), .has_extra_keys = true, .extra_keys = extras,
         .n_extra_keys = 2, .lora_name = kvev_str_c("adapter-a"), .has_lora_id = true, .lora_id = 5},
    };
    const kvev_event groups[] = {
        {.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = 2, .token_ids = tok, .n_token_ids = 32,
         .block_size = 16, .medium = kvev_str_c("GPU"), .has_group_idx = true, .group_idx = 0,
         .kv_cache_spec_kind = kvev_str_c("full_attention")},
        {.type = KVEV_BLOCK_STORED, .block_hashes = h + 4, .n_block_hashes = 2, .token_ids = tok, .n_token_ids = 32,
         .block_size = 16, .medium = kvev_str_c("GPU"), .has_group_idx = true, .group_idx = 1,
         .kv_cache_spec_kind = kvev_str_c("sliding_window"), .has_sliding_window = true,
         .kv_cache_spec_sliding_window = 4096},
        {.type = KVEV_BLOCK_REMOVED, .block_hashes = h + 4, .n_block_hashes = 1, .has_group_idx = true,
         .group_idx = 1},
    };
    const kvev_event offload[] = {   /* CPU tier: hashes only, keys resolved from the GPU store */
        {.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = 2, .token_ids = tok, .n_token_ids = 32,
         .block_size = 16, .medium = kvev_str_c("GPU")},
        {.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = 2, .block_size = 16,
         .medium = kvev_str_c("CPU")},
    };
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "gen_corpus: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    return write_batch(dir, "chain", chain, 2) || write_batch(dir, "long-tokens", long_tokens, 3) ||
           write_batch(dir, "removed", removed, 2) || write_batch(dir, "cleared", cleared, 1) ||
           write_batch(dir, "extra-keys", extra, 1) || write_batch(dir, "groups", groups, 3) ||
           write_batch(dir, "offload", offload, 2) ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR\n");
        return 1;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/kvevents", argv[1]);
    return gen_kvevents(dir) ? 1 : 0;
}
