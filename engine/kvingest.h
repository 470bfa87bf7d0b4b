/* kvingest: applies decoded vLLM KV-event batches from one pod to a kvindex, with llm-d's
 * semantics (docs/upstream/kv-events-and-index.md §3 "Event handling", llm-d-router pool.go):
 *   BlockStored   request keys are computed from the event's token_ids at the index
 *                 block size, chained from the parent's request key (kvindex_request_key);
 *                 an unknown parent makes the event an orphan: counted and skipped.
 *                 lora_name (non-empty) replaces the topic's model in the chain root.
 *                 extra_keys strings and [str, ...] identifiers taint their blocks,
 *                 realigned from engine blocks to index blocks. No tokens (CPU offload):
 *                 each engine key is resolved to its request key and stored in the tier.
 *                 medium -> tier. Events of a cache group whose kv_cache_spec_kind is not
 *                 full_attention / mla_attention / sink_full_attention are skipped, as are
 *                 grouped events whose tokens do not cover their hashes densely.
 *   BlockRemoved  kvindex_remove in the event's tier (grouped events only for groups
 *                 learned as prefix-indexable).
 *   AllBlocksCleared  kvindex_clear_endpoint (every tier).
 * The endpoint slot is the caller's to resolve (it knows which pods exist).
 *
 * Threads: one kvingest per ingest thread, and each pod's events always through the same
 * kvingest (the group catalog and event order are per pod). Several kvingest may share a
 * kvindex. kvingest_get_stats may be called from any thread. */
#ifndef KVROUTE_KVINGEST_H
#define KVROUTE_KVINGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockkeys.h"
#include "kverr.h"
#include "kvevents.h"
#include "kvindex.h"

typedef struct kvingest_stats {
    uint64_t batches;                     /* applied */
    uint64_t events[KVEV_TYPE_COUNT];     /* applied or skipped, by type */
    uint64_t blocks_stored;               /* request keys stored (incl. tier-only updates) */
    uint64_t blocks_removed;              /* holder entries removed */
    uint64_t clears;
    uint64_t orphans;                     /* BlockStored with an unknown parent: skipped */
    uint64_t skipped_kind;                /* events of non-prefix cache groups (sliding window, mamba...) */
    uint64_t skipped_unknown_group;       /* BlockRemoved for a group never seen in a BlockStored */
    uint64_t skipped_non_dense;           /* grouped BlockStored whose tokens != hashes * block_size, or bad size */
    uint64_t skipped_partial;             /* tokens shorter than one index block: nothing to key */
    uint64_t skipped_unresolved;          /* tier-only stores whose engine keys are all unknown */
    uint64_t decode_errors[KVEV_ERR_COUNT]; /* payloads rejected by kvingest_payload, by reason */
} kvingest_stats;

typedef struct kvingest kvingest;

/* ix is borrowed; keys is copied (its block size is the index block size). */
kvingest *kvingest_new(kvindex *ix, const blockkeys_ctx *keys, kv_err *err);
void kvingest_free(kvingest *g);

/* Applies every event of b as coming from the endpoint at slot; model is the topic's
 * model name. Skips are counted, not errors; returns KV_EINVAL for a bad slot or model,
 * or the kvindex error (KV_ENOMEM) that stopped the batch part-way. */
int kvingest_apply(kvingest *g, int slot, const char *model, const kvev_batch *b, kv_err *err);

/* Decodes a KVEventBatch payload with the kvingest's own decoder and applies it. Decode
 * errors are counted by reason and returned. */
int kvingest_payload(kvingest *g, int slot, const char *model, const void *payload, size_t len, kv_err *err);

/* Forgets what was learned about the slot's cache groups (call when the pod leaves). */
void kvingest_forget_endpoint(kvingest *g, int slot);

void kvingest_get_stats(const kvingest *g, kvingest_stats *out);

/* Whether a cache group of this kv_cache_spec_kind is prefix-indexed (full_attention,
 * mla_attention, sink_full_attention). */
bool kvingest_indexed_kind(kvev_str kind);

#endif
