/* kvingest: one pod's KV events -> kvindex (semantics in kvingest.h).
 *
 * Per-event work is a handful of scratch-buffer appends and one kvindex call, and per
 * batch one prefetch hint for its events' first index probes; no allocation in steady
 * state. The chain root of the last model is cached because consecutive events almost
 * always name the same model. The cache-group catalog is a
 * small open-addressing table keyed by (slot, group). Counters are updated with relaxed
 * atomics so a metrics thread may read them while events are applied. */
#include "kvingest.h"
#include "grow.h"
#include "u64map.h"

#include <stdlib.h>
#include <string.h>

enum { GROUP_UNKNOWN = 0, GROUP_PREFIX = 1, GROUP_OTHER = 2 };

struct kvingest {
    kvindex *ix;
    blockkeys_ctx keys;
    kvev_decoder *dec;
    kvingest_stats st;

    char *root_model;       /* the model (or LoRA) whose root is cached */
    uint64_t root;

    uint64_t *rk;
    size_t rk_cap;
    blockkeys_extra *ex;
    size_t ex_cap;
    const char **ids;
    size_t ids_cap;

    u64map groups;          /* (slot << 32 | group) -> GROUP_PREFIX or GROUP_OTHER (GROUP_UNKNOWN once forgotten) */
};

#define BUMP(g, field, n) __atomic_fetch_add(&(g)->st.field, (uint64_t)(n), __ATOMIC_RELAXED)

kvingest *kvingest_new(kvindex *ix, const blockkeys_ctx *keys, kv_err *err)
{
    if (!ix || !keys || keys->block_size == 0) {
        kv_err_set(err, KV_EINVAL, "kvingest: an index and initialised block keys are required");
        return NULL;
    }
    kvingest *g = calloc(1, sizeof *g);
    if (!g) {
        kv_err_set(err, KV_ENOMEM, "kvingest: out of memory");
        return NULL;
    }
    g->ix = ix;
    g->keys = *keys;
    g->dec = kvev_decoder_new(0, err);
    if (!g->dec) {
        free(g);
        return NULL;
    }
    return g;
}

void kvingest_free(kvingest *g)
{
    if (!g) return;
    kvev_decoder_free(g->dec);
    free(g->root_model);
    free(g->rk);
    free(g->ex);
    free(g->ids);
    u64map_free(&g->groups);
    free(g);
}

void kvingest_get_stats(const kvingest *g, kvingest_stats *out)
{
    const uint64_t *src = (const uint64_t *)&g->st;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++) dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* --- cache-group catalog ------------------------------------------------------------ */

static int group_get(const kvingest *g, int slot, int64_t group)
{
    if (group > UINT32_MAX) return GROUP_UNKNOWN;
    uint32_t cls = u64map_get(&g->groups, (uint64_t)slot << 32 | (uint64_t)group);
    return cls == U64MAP_NONE ? GROUP_UNKNOWN : (int)cls;
}

static int group_learn(kvingest *g, int slot, int64_t group, int cls)
{
    if (group > UINT32_MAX) return KV_OK;   /* never seen in practice; stays unknown */
    return u64map_put(&g->groups, (uint64_t)slot << 32 | (uint64_t)group, (uint32_t)cls);
}

void kvingest_forget_endpoint(kvingest *g, int slot)
{
    /* Entries stay as keys with an unknown class: the table never shrinks, but a slot is
     * reused by the next pod, which overwrites them as it learns. */
    for (size_t i = 0; g->groups.t && i <= g->groups.mask; i++) {
        u64map_ent *e = &g->groups.t[i];
        if (e->val != U64MAP_NONE && (e->key >> 32) == (uint64_t)(uint32_t)slot) e->val = GROUP_UNKNOWN;
    }
}

bool kvingest_indexed_kind(kvev_str kind)
{
    static const char *const prefix_kinds[] = {"full_attention", "mla_attention", "sink_full_attention"};
    for (size_t i = 0; i < 3; i++)
        if (kind.len == strlen(prefix_kinds[i]) && memcmp(kind.s, prefix_kinds[i], kind.len) == 0) return true;
    return false;
}

static int kind_class(kvev_str kind) { return kvingest_indexed_kind(kind) ? GROUP_PREFIX : GROUP_OTHER; }

/* --- BlockStored ---------------------------------------------------------------------- */

static uint64_t root_for(kvingest *g, const char *model)
{
    if (!g->root_model || strcmp(g->root_model, model) != 0) {
        char *copy = strdup(model);
        if (!copy) return blockkeys_root(&g->keys, model);   /* correct, just uncached */
        free(g->root_model);
        g->root_model = copy;
        g->root = blockkeys_root(&g->keys, model);
    }
    return g->root;
}

/* Whether item i of a block's extra_keys is the adapter name vLLM puts first for a LoRA
 * request (generate_block_hash_extra_keys: lora_name, then multimodal identifiers, then
 * cache_salt). The chain root already carries the adapter, so it is no extra: hashing it
 * as a multimodal id made adapter blocks unmatchable (llm-d-router #2927; fixed there,
 * PR #2929, by skipping a first entry equal to the event's lora_name). */
static bool lora_item(const kvev_event *e, const kvev_block_extra *bx, size_t i)
{
    const kvev_extra_item *it = &bx->items[i];
    return i == 0 && it->kind == KVEV_EXTRA_STR && e->lora_name.len && it->id.len == e->lora_name.len &&
           memcmp(it->id.s, e->lora_name.s, it->id.len) == 0;
}

/* extra_keys (per engine block) -> blockkeys extras per index block, as llm-d realigns
 * them: more engine blocks than index blocks merge (ids concatenated in engine order),
 * fewer are replicated to each index block they cover. */
static int build_extras(kvingest *g, const kvev_event *e, size_t n_index, size_t *n_out)
{
    *n_out = 0;
    size_t E = e->n_extra_keys, total = 0;
    if (!e->has_extra_keys || E == 0) return KV_OK;
    for (size_t b = 0; b < E; b++)
        for (size_t i = 0; i < e->extra_keys[b].n_items; i++)
            total += e->extra_keys[b].items[i].kind != KVEV_EXTRA_OTHER && !lora_item(e, &e->extra_keys[b], i);
    if (total == 0) return KV_OK;
    size_t need = E < n_index ? E + n_index : E;
    if (!grow_array((void **)&g->ids, &g->ids_cap, total, sizeof *g->ids) ||
        !grow_array((void **)&g->ex, &g->ex_cap, need, sizeof *g->ex))
        return KV_ENOMEM;
    size_t at = 0;
    for (size_t b = 0; b < E; b++) {
        const kvev_block_extra *bx = &e->extra_keys[b];
        g->ex[b] = (blockkeys_extra){b, g->ids + at, 0};
        for (size_t i = 0; i < bx->n_items; i++)
            if (bx->items[i].kind != KVEV_EXTRA_OTHER && !lora_item(e, bx, i)) g->ids[at++] = bx->items[i].id.s;
        g->ex[b].n_ids = (size_t)(g->ids + at - g->ex[b].ids);
    }
    if (E >= n_index) {
        for (size_t b = 0; b < E; b++) g->ex[b].block = b * n_index / E;
        *n_out = E;
        return KV_OK;
    }
    blockkeys_extra *out = g->ex + E;
    for (size_t i = 0; i < n_index; i++) {
        out[i] = g->ex[i * E / n_index];
        out[i].block = i;
    }
    memmove(g->ex, out, n_index * sizeof *out);
    *n_out = n_index;
    return KV_OK;
}

/* CPU offload and other location-only stores: the engine keys are already mapped, the
 * tier is new. */
static int tier_update(kvingest *g, int slot, kvtier tier, const kvev_event *e, kv_err *err)
{
    if (!grow_array((void **)&g->rk, &g->rk_cap, e->n_block_hashes, sizeof *g->rk))
        return kv_err_set(err, KV_ENOMEM, "kvingest: out of memory");
    size_t n = 0;
    for (size_t i = 0; i < e->n_block_hashes; i++)
        if (kvindex_request_key(g->ix, slot, e->block_hashes[i], &g->rk[n])) n++;
    if (n == 0) {
        BUMP(g, skipped_unresolved, 1);
        return KV_OK;
    }
    int rc = kvindex_store(g->ix, slot, tier, NULL, 0, g->rk, n, err);
    if (rc == KV_OK) BUMP(g, blocks_stored, n);
    return rc;
}

static int on_stored(kvingest *g, int slot, const char *model, const kvev_event *e, kv_err *err)
{
    kvtier tier = kvtier_from_medium(e->medium.s, e->medium.len);
    if (e->has_group_idx) {
        int cls;
        if (e->kv_cache_spec_kind.s) {
            cls = kind_class(e->kv_cache_spec_kind);
            if (group_learn(g, slot, e->group_idx, cls)) return kv_err_set(err, KV_ENOMEM, "kvingest: out of memory");
        } else {
            cls = group_get(g, slot, e->group_idx);
        }
        if (cls != GROUP_PREFIX) {
            BUMP(g, skipped_kind, 1);
            return KV_OK;
        }
        if (e->n_token_ids &&
            (e->block_size == 0 || e->n_token_ids % e->block_size || e->n_token_ids / e->block_size != e->n_block_hashes)) {
            BUMP(g, skipped_non_dense, 1);
            return KV_OK;
        }
    }
    uint64_t parent;
    if (e->has_parent && e->parent_block_hash != 0) {
        if (!kvindex_request_key(g->ix, slot, e->parent_block_hash, &parent)) {
            BUMP(g, orphans, 1);
            return KV_OK;
        }
    } else {
        parent = root_for(g, e->lora_name.s && e->lora_name.len ? e->lora_name.s : model);
    }
    size_t n_index = e->n_token_ids / g->keys.block_size;
    if (n_index == 0) {
        if (e->n_token_ids == 0 && e->n_block_hashes > 0) return tier_update(g, slot, tier, e, err);
        BUMP(g, skipped_partial, 1);
        return KV_OK;
    }
    size_t n_ex;
    if (build_extras(g, e, n_index, &n_ex) || !grow_array((void **)&g->rk, &g->rk_cap, n_index, sizeof *g->rk))
        return kv_err_set(err, KV_ENOMEM, "kvingest: out of memory");
    blockkeys_compute(&g->keys, parent, e->token_ids, e->n_token_ids, n_ex ? g->ex : NULL, n_ex, NULL, g->rk, n_index);
    int rc = kvindex_store(g->ix, slot, tier, e->block_hashes, e->n_block_hashes, g->rk, n_index, err);
    if (rc == KV_ERANGE) {   /* an absurd engine/index ratio: the event, not the index, is wrong */
        BUMP(g, skipped_non_dense, 1);
        return KV_OK;
    }
    if (rc == KV_OK) BUMP(g, blocks_stored, n_index);
    return rc;
}

static void on_removed(kvingest *g, int slot, const kvev_event *e)
{
    if (e->has_group_idx) {
        int cls = group_get(g, slot, e->group_idx);
        if (cls != GROUP_PREFIX) {
            if (cls == GROUP_UNKNOWN) BUMP(g, skipped_unknown_group, 1);
            else BUMP(g, skipped_kind, 1);
            return;
        }
    }
    kvtier tier = kvtier_from_medium(e->medium.s, e->medium.len);
    size_t n = kvindex_remove(g->ix, slot, tier, e->block_hashes, e->n_block_hashes);
    BUMP(g, blocks_removed, n);
}

/* Each BlockStored probes the index for its parent's engine key (the chain's request
 * key) and for its first block's (the mapping it replaces) before its own pipeline gets
 * going; most events of a step are one decoded block each, so those probes were the
 * event's whole wait on memory, one event after another. Started for the batch at once,
 * they overlap. A hint only: what is stored is unchanged. */
#define BATCH_PREFETCH 64
static void prefetch_batch(kvingest *g, int slot, const kvev_batch *b)
{
    uint64_t keys[BATCH_PREFETCH];
    size_t n = 0;
    for (size_t i = 0; i < b->n_events && n + 2 <= BATCH_PREFETCH; i++) {
        const kvev_event *e = &b->events[i];
        if (e->type != KVEV_BLOCK_STORED) continue;
        if (e->has_parent && e->parent_block_hash != 0) keys[n++] = e->parent_block_hash;
        if (e->n_block_hashes) keys[n++] = e->block_hashes[0];
    }
    kvindex_prefetch_engine_keys(g->ix, slot, keys, n);
}

int kvingest_apply(kvingest *g, int slot, const char *model, const kvev_batch *b, kv_err *err)
{
    if (!model) return kv_err_set(err, KV_EINVAL, "kvingest: no model name");
    if (!kvindex_endpoint_name(g->ix, slot))
        return kv_err_set(err, KV_EINVAL, "kvingest: endpoint slot %d is not in use", slot);
    prefetch_batch(g, slot, b);
    for (size_t i = 0; i < b->n_events; i++) {
        const kvev_event *e = &b->events[i];
        if ((unsigned)e->type >= KVEV_TYPE_COUNT)   /* only a hand-built batch can do this */
            return kv_err_set(err, KV_EINVAL, "kvingest: event %zu of %zu has bad type %d", i, b->n_events, (int)e->type);
        BUMP(g, events[e->type], 1);
        int rc = KV_OK;
        if (e->type == KVEV_BLOCK_STORED) {
            rc = on_stored(g, slot, model, e, err);
        } else if (e->type == KVEV_BLOCK_REMOVED) {
            on_removed(g, slot, e);
        } else {
            kvindex_clear_endpoint(g->ix, slot);
            BUMP(g, clears, 1);
        }
        if (rc) {
            kv_err_prefix(err, "event %zu of %zu: ", i, b->n_events);
            return rc;
        }
    }
    BUMP(g, batches, 1);
    return KV_OK;
}

int kvingest_payload(kvingest *g, int slot, const char *model, const void *payload, size_t len, kv_err *err)
{
    kvev_batch b;
    int rc = kvev_decode_batch(g->dec, payload, len, &b, err);
    if (rc) {
        BUMP(g, decode_errors[kvev_decoder_last_reason(g->dec)], 1);
        return rc;
    }
    return kvingest_apply(g, slot, model, &b, err);
}
