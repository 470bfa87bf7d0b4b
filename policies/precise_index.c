/* precise_index: the KV-event index shared by the precise prefix-cache plugins (see
 * precise_index.h). */
#include "precise_index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"

struct precise_index {
    sched_kvsource src;
    kvindex_match *match;          /* one per index slot */
    uint32_t slots;
    size_t capacity;               /* inMemoryConfig.size; 0 = kvindex's default */
    idmap slot_of;              /* endpoint id -> version << 32 | (slot + 1, 0 = unknown) */
};

static int pix_copy(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
                    const char *key, char *dst, size_t cap, kv_err *err)
{
    const char *v = NULL;
    if (pu_string(p, pp, map, path, key, &v, err))
        return KV_EINVAL;
    if (!v)
        return KV_OK;
    if (strlen(v) >= cap)
        return pu_error(p, pp, yt_get(map, key), path, err, "'%s' is longer than %zu bytes", key, cap - 1);
    memcpy(dst, v, strlen(v) + 1);
    return KV_OK;
}

static int pix_tokens(sched_plugin *p, const sched_params *pp, precise_index *st, kv_err *err)
{
    int rc = KV_OK;
    const char *path = "tokenProcessorConfig";
    const yt_node *tp = pu_map(p, pp, pp->node, NULL, path, &rc, err);
    if (rc)
        return rc;
    int64_t bs = 16;
    const char *seed = "", *algo = "xxh64";
    if (pu_int(p, pp, tp, path, "blockSize", 1, 1 << 20, &bs, err) ||
        pu_int(p, pp, tp, path, "blockSizeTokens", 1, 1 << 20, &bs, err) ||
        pu_string(p, pp, tp, path, "hashSeed", &seed, err) || pu_string(p, pp, tp, path, "hashAlgorithm", &algo, err))
        return KV_EINVAL;
    blockkeys_algo a;
    if (blockkeys_algo_parse(algo, &a, NULL))
        return pu_error(p, pp, yt_get(tp, "hashAlgorithm"), "tokenProcessorConfig.hashAlgorithm", err,
                        "unknown algorithm '%s' (expected xxh64 or fnv64a-cbor)", algo);
    return blockkeys_init(&st->src.keys, a, (uint32_t)bs, seed, err);
}

static int pix_backends(sched_plugin *p, const sched_params *pp, const yt_node *list, const char *path,
                        kvindex_config *ic, kv_err *err)
{
    if (!list || yt_is_null(list))
        return KV_OK;
    if (list->kind != YT_SEQ)
        return pu_error(p, pp, list, path, err, "expected a list of {name, weight}");
    if (ic->tier_weight[KVTIER_GPU] == 0) {
        ic->tier_weight[KVTIER_GPU] = 1.0;
        ic->tier_weight[KVTIER_CPU] = 0.8;
        ic->tier_weight[KVTIER_OTHER] = 1.0;
    }
    for (size_t i = 0; i < list->n; i++) {
        const yt_node *e = list->items[i];
        char where[96];
        snprintf(where, sizeof where, "%s[%zu]", path, i);
        const char *name = NULL;
        double w = 1.0;
        if (e->kind != YT_MAP)
            return pu_error(p, pp, e, where, err, "expected {name, weight}");
        if (pu_string(p, pp, e, where, "name", &name, err) || pu_double(p, pp, e, where, "weight", 0, 1e6, &w, err))
            return KV_EINVAL;
        if (!name)
            return pu_error(p, pp, e, where, err, "missing 'name'");
        kvtier t = kvtier_from_medium(name, strlen(name));
        ic->tier_weight[t] = w;
    }
    return KV_OK;
}

static int pix_indexer(sched_plugin *p, const sched_params *pp, const sched_env *env, kvindex_config *ic,
                       kv_err *err)
{
    int rc = KV_OK;
    const char *path = "indexerConfig";
    const yt_node *ix = pu_map(p, pp, pp->node, NULL, path, &rc, err);
    if (rc)
        return rc;
    const yt_node *bi = pu_map(p, pp, ix, path, "kvBlockIndexConfig", &rc, err);
    const yt_node *mem = rc ? NULL : pu_map(p, pp, bi, "indexerConfig.kvBlockIndexConfig", "inMemoryConfig", &rc, err);
    const yt_node *sc = rc ? NULL : pu_map(p, pp, ix, path, "kvBlockScorerConfig", &rc, err);
    if (rc)
        return rc;
    int64_t size = 0;
    if (pu_int(p, pp, mem, "indexerConfig.kvBlockIndexConfig.inMemoryConfig", "size", 1, INT64_MAX, &size, err))
        return KV_EINVAL;
    ic->capacity = (size_t)size;
    /* The tokenizer pool is the sidecar's business: requests reach us as token ids. */
    pu_accept(yt_get(ix, "tokenizersPoolConfig"));
    if (mem) {
        const sched_params mp = {.doc = pp->doc, .node = mem};
        PU_IGNORE(p, &mp, env, "the index keeps every holder of a block (one bit per endpoint), so there is no "
                  "per-key pod bound", "podCacheSize");
    }
    if (bi) {
        const sched_params bp = {.doc = pp->doc, .node = bi};
        PU_IGNORE(p, &bp, env, "the index's metrics are always on ./epp's metrics port", "enableMetrics",
                  "metricsLoggingInterval");
    }
    const yt_node *spec = yt_get(ix, "speculativeIndexing");
    if (spec)
        sched_warn(env,
                "%s:%d:%d: plugin '%s': indexerConfig.speculativeIndexing is ignored (llm-d reads "
                "speculativeIndexing only as a top-level parameter)",
                yt_name(pp->doc), spec->line, spec->col, p->name);
    return pix_backends(p, pp, yt_get(sc, "backendConfigs"), "indexerConfig.kvBlockScorerConfig.backendConfigs", ic,
                        err);
}

static int pix_events(sched_plugin *p, const sched_params *pp, precise_index *st, kv_err *err)
{
    int rc = KV_OK;
    const char *path = "kvEventsConfig";
    const yt_node *ev = pu_map(p, pp, pp->node, NULL, path, &rc, err);
    if (rc)
        return rc;
    const yt_node *pd = pu_map(p, pp, ev, path, "podDiscoveryConfig", &rc, err);
    if (rc)
        return rc;
    typeof(st->src.events) *e = &st->src.events;
    snprintf(e->zmq_endpoint, sizeof e->zmq_endpoint, "tcp://*:5557");
    snprintf(e->topic_filter, sizeof e->topic_filter, "kv@");
    snprintf(e->pod_label_selector, sizeof e->pod_label_selector, "llm-d.ai/inference-serving=true");
    e->pod_namespace[0] = 0;
    e->discover_pods = true;
    int64_t conc = 4, port = 5557;
    const char *pdp = "kvEventsConfig.podDiscoveryConfig";
    if (pix_copy(p, pp, ev, path, "zmqEndpoint", e->zmq_endpoint, sizeof e->zmq_endpoint, err) ||
        pix_copy(p, pp, ev, path, "topicFilter", e->topic_filter, sizeof e->topic_filter, err) ||
        pu_int(p, pp, ev, path, "concurrency", 1, 1024, &conc, err) ||
        pu_bool(p, pp, ev, path, "discoverPods", &e->discover_pods, err) ||
        pu_int(p, pp, ev, path, "socketPort", 1, 65535, &port, err) ||
        pix_copy(p, pp, pd, pdp, "labelSelector", e->pod_label_selector, sizeof e->pod_label_selector, err) ||
        pix_copy(p, pp, pd, pdp, "podNamespace", e->pod_namespace, sizeof e->pod_namespace, err) ||
        pu_int(p, pp, pd, pdp, "socketPort", 1, 65535, &port, err))
        return KV_EINVAL;
    e->concurrency = (int)conc;
    e->socket_port = (int)port;
    return KV_OK;
}

void precise_index_free(precise_index *st)
{
    if (!st)
        return;
    kvindex_free(st->src.index);
    free(st->match);
    idmap_free(&st->slot_of);
    free(st);
}

precise_index *precise_index_new(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    precise_index *st = calloc(1, sizeof *st);
    if (!st) {
        kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
        return NULL;
    }
    kvindex_config ic = {0};
    int64_t max_eps = 256;
    int rc = pix_tokens(p, pp, st, err);
    if (!rc)
        rc = pix_indexer(p, pp, env, &ic, err);
    if (!rc)
        rc = pix_events(p, pp, st, err);
    if (!rc)
        rc = pix_backends(p, pp, yt_get(pp->node, "backendConfigs"), "backendConfigs", &ic, err);
    if (!rc)
        rc = pu_int(p, pp, pp->node, NULL, "maxEndpoints", 1, 4096, &max_eps, err);
    if (!rc) {
        ic.max_endpoints = (uint32_t)max_eps;
        st->capacity = ic.capacity;
        st->src.name = p->name;
        st->src.index = kvindex_new(&ic, err);
        if (!st->src.index)
            rc = err ? err->code : KV_ENOMEM;
    }
    if (!rc) {
        st->slots = kvindex_max_endpoints(st->src.index);
        st->match = calloc(st->slots, sizeof *st->match);
        if (!st->match)
            rc = kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    }
    if (rc) {
        precise_index_free(st);
        return NULL;
    }
    return st;
}

sched_kvsource *precise_index_source(precise_index *st) { return &st->src; }

/* The slot whose match counts for ep, -1 if the index does not know it. A cached
 * resolution is trusted only when it was made at the version the lookup ran under
 * (trusted false: slots changed during the lookup, so resolve afresh), so a recycled slot
 * never lends one pod's cache to another and a pod added or re-added under a new slot
 * counts at once. The version is kept to 32 bits: a stale entry would need exactly 2^32
 * slot changes between two calls to pass. */
static int pix_slot(precise_index *st, const sched_endpoint *ep, uint64_t version, bool trusted)
{
    uint64_t tag = (uint64_t)(uint32_t)version << 32;
    uint64_t cached = (uint64_t)idmap_get(&st->slot_of, ep->id, 0);
    if (trusted && cached && (cached & ~0xffffffffull) == tag)
        return (int)(cached & 0xffffffffull) - 1;
    int slot = pu_kvindex_slot(st->src.index, ep->name);
    int64_t *v = idmap_at(&st->slot_of, ep->id);
    if (v && trusted)
        *v = (int64_t)(tag | (uint64_t)(slot + 1));
    return slot;
}

size_t precise_index_match(precise_index *st, sched_cycle *c, sched_endpoint *const *eps, size_t n, uint32_t *blocks,
                           double *raw)
{
    size_t nk = 0;
    const uint64_t *keys = sched_cycle_keys(c, &st->src.keys, &nk);
    for (size_t i = 0; i < n; i++) {
        blocks[i] = 0;
        raw[i] = 0;
    }
    uint64_t version = kvindex_endpoints_version(st->src.index);
    if (nk == 0 || kvindex_lookup(st->src.index, keys, nk, st->match) == 0)
        return nk;
    bool trusted = kvindex_endpoints_version(st->src.index) == version;
    for (size_t i = 0; i < n; i++) {
        int slot = pix_slot(st, eps[i], version, trusted);
        if (slot < 0 || (uint32_t)slot >= st->slots)
            continue;
        blocks[i] = st->match[slot].blocks;
        raw[i] = blocks[i] ? st->match[slot].score : 0;
    }
    return nk;
}

void precise_index_describe(const precise_index *st, char *buf, size_t cap)
{
    const sched_kvsource *src = &st->src;
    const pps_kvevents *e = &src->events;
    char capacity[32] = "default (1e7)";
    if (st->capacity)
        snprintf(capacity, sizeof capacity, "%zu", st->capacity);
    snprintf(buf, cap,
             "tokenProcessorConfig: {blockSize: %u, hashAlgorithm: %s}\n"
             "index: %u endpoint slots, capacity %s keys\n"
             "kvEventsConfig: {zmqEndpoint: %s, topicFilter: %s, concurrency: %d, discoverPods: %s, "
             "socketPort: %d, labelSelector: %s, podNamespace: %s}\n",
             src->keys.block_size, blockkeys_algo_name(src->keys.algo), st->slots, capacity,
             e->zmq_endpoint, e->topic_filter, e->concurrency, e->discover_pods ? "true" : "false", e->socket_port,
             e->pod_label_selector, e->pod_namespace[0] ? e->pod_namespace : "(the pool's)");
}
