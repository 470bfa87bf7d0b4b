/* fuzz_kvevents: a KVEventBatch payload as a vLLM pod publishes it (the third ZMQ frame),
 * through what ./epp and ./sim do with it: kvev_decode_batch, then kvingest_apply into
 * a kvindex (live/ingest.c's order).
 *
 * Invariants checked (abort() when one breaks):
 *   - the scalar and the AVX-512 VBMI token paths agree: same return code, same batch
 *     (kvevents.h promises identical results; on a CPU without VBMI both are scalar);
 *   - decode -> encode -> decode is a fixed point in each of the three encodings: the
 *     re-decoded batch equals the first one, and re-encoding it gives the same bytes.
 *     Batches holding extra_keys items the encoder cannot write (KVEV_EXTRA_OTHER) are
 *     only ingested.
 * Everything is allocated and freed per input. Single-threaded. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blockkeys.h"
#include "kvevents.h"
#include "kvindex.h"
#include "kvingest.h"

static bool str_eq(kvev_str a, kvev_str b)
{
    if (!a.s || !b.s)
        return !a.s && !b.s;
    return a.len == b.len && memcmp(a.s, b.s, a.len) == 0;
}

static bool extra_eq(const kvev_block_extra *a, const kvev_block_extra *b)
{
    if (a->none != b->none || a->n_items != b->n_items)
        return false;
    for (size_t i = 0; i < a->n_items; i++) {
        const kvev_extra_item *x = &a->items[i], *y = &b->items[i];
        if (x->kind != y->kind || !str_eq(x->id, y->id) || x->offset != y->offset)
            return false;
    }
    return true;
}

static bool event_eq(const kvev_event *a, const kvev_event *b)
{
    if (a->type != b->type || a->n_block_hashes != b->n_block_hashes || !str_eq(a->medium, b->medium) ||
        a->has_group_idx != b->has_group_idx || (a->has_group_idx && a->group_idx != b->group_idx) ||
        a->has_parent != b->has_parent || (a->has_parent && a->parent_block_hash != b->parent_block_hash) ||
        a->n_token_ids != b->n_token_ids || a->block_size != b->block_size || a->has_lora_id != b->has_lora_id ||
        (a->has_lora_id && a->lora_id != b->lora_id) || !str_eq(a->lora_name, b->lora_name) ||
        a->has_extra_keys != b->has_extra_keys || a->n_extra_keys != b->n_extra_keys ||
        !str_eq(a->kv_cache_spec_kind, b->kv_cache_spec_kind) || a->has_sliding_window != b->has_sliding_window ||
        (a->has_sliding_window && a->kv_cache_spec_sliding_window != b->kv_cache_spec_sliding_window))
        return false;
    if ((a->n_block_hashes && memcmp(a->block_hashes, b->block_hashes, a->n_block_hashes * sizeof *a->block_hashes)) ||
        (a->n_token_ids && memcmp(a->token_ids, b->token_ids, a->n_token_ids * sizeof *a->token_ids)))
        return false;
    for (size_t i = 0; i < a->n_extra_keys; i++)
        if (!extra_eq(&a->extra_keys[i], &b->extra_keys[i]))
            return false;
    return true;
}

/* Timestamps compare by bits: a NaN ts must come back as the same NaN. */
static bool batch_eq(const kvev_batch *a, const kvev_batch *b)
{
    if (memcmp(&a->ts, &b->ts, sizeof a->ts) != 0 || a->has_dp_rank != b->has_dp_rank ||
        (a->has_dp_rank && a->data_parallel_rank != b->data_parallel_rank) || a->n_events != b->n_events)
        return false;
    for (size_t i = 0; i < a->n_events; i++)
        if (!event_eq(&a->events[i], &b->events[i]))
            return false;
    return true;
}

static bool encodable(const kvev_batch *b)
{
    for (size_t i = 0; i < b->n_events; i++)
        for (size_t k = 0; k < b->events[i].n_extra_keys; k++)
            for (size_t j = 0; j < b->events[i].extra_keys[k].n_items; j++)
                if (b->events[i].extra_keys[k].items[j].kind == KVEV_EXTRA_OTHER)
                    return false;
    return true;
}

/* decode -> encode -> decode -> encode in one encoding; d is a decoder of its own (the
 * batch b lives in another decoder's arena). */
static void check_fixed_point(const kvev_batch *b, kvev_encoding enc, kvev_decoder *d)
{
    kvev_buf first = {0}, second = {0};
    kvev_batch again;
    if (kvev_encode(b, enc, &first, NULL) != KV_OK || kvev_decode_batch(d, first.data, first.len, &again, NULL) != KV_OK ||
        !batch_eq(b, &again) || kvev_encode(&again, enc, &second, NULL) != KV_OK || first.len != second.len ||
        memcmp(first.data, second.data, first.len) != 0)
        abort();
    kvev_buf_free(&first);
    kvev_buf_free(&second);
}

static void ingest(const kvev_batch *b)
{
    kvindex_config cfg = {.capacity = 4096, .max_endpoints = 4};
    kvindex *ix = kvindex_new(&cfg, NULL);
    blockkeys_ctx keys;
    if (!ix || blockkeys_init(&keys, BLOCKKEYS_XXH64, 16, "", NULL) != KV_OK)
        abort();
    kvingest *g = kvingest_new(ix, &keys, NULL);
    int slot = kvindex_endpoint_add(ix, "10.0.0.1:8000", NULL);
    if (!g || slot < 0)
        abort();
    /* Twice: the second pass meets every parent and block already stored. */
    kvingest_apply(g, slot, "m", b, NULL);
    kvingest_apply(g, slot, "m", b, NULL);
    kvingest_free(g);
    kvindex_free(ix);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kvev_decoder *scalar = kvev_decoder_new(0, NULL), *vector = kvev_decoder_new(0, NULL),
                 *re = kvev_decoder_new(0, NULL);
    if (!scalar || !vector || !re)
        abort();
    kvev_decoder_set_tokens_path(scalar, KVEV_TOKENS_SCALAR);
    kvev_decoder_set_tokens_path(vector, KVEV_TOKENS_VECTOR);
    kvev_batch bs, bv;
    int rs = kvev_decode_batch(scalar, data, size, &bs, NULL);
    int rv = kvev_decode_batch(vector, data, size, &bv, NULL);
    if (rs != rv || (rs == KV_OK && !batch_eq(&bs, &bv)) ||
        (rs != KV_OK && kvev_decoder_last_reason(scalar) != kvev_decoder_last_reason(vector)))
        abort();
    if (rs == KV_OK) {
        if (encodable(&bs))
            for (kvev_encoding enc = KVEV_ENC_ARRAY; enc <= KVEV_ENC_MAP_ALL; enc++)
                check_fixed_point(&bs, enc, re);
        ingest(&bs);
    }
    kvev_decoder_free(scalar);
    kvev_decoder_free(vector);
    kvev_decoder_free(re);
    return 0;
}
