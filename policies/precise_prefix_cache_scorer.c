/* precise-prefix-cache-scorer (llm-d-inference-scheduler): scores each endpoint by the
 * longest prefix of the request's blocks it holds according to vLLM's own KV events.
 *
 * It owns the kvindex and the request-key context (tokenProcessorConfig), and offers
 * both, with the kvEventsConfig settings, to the drivers as its kvsource
 * (precise_prefix_cache_scorer.h): the live ingester and the simulator feed events into
 * that index with those keys.
 *
 * Parameters (llm-d's, plus two of kvroute's):
 *   tokenProcessorConfig{blockSize | blockSizeTokens (16), hashSeed (""), hashAlgorithm
 *     ("xxh64" | "fnv64a-cbor", default xxh64)};
 *   indexerConfig{kvBlockIndexConfig{inMemoryConfig{size}} -> index capacity,
 *     kvBlockScorerConfig{backendConfigs[]{name, weight}} -> tier weights,
 *     tokenizersPoolConfig (accepted: requests arrive as token ids),
 *     speculativeIndexing (ignored with a warning, as llm-d ignores it there)};
 *   backendConfigs[] (same as above, top level); kvEventsConfig{zmqEndpoint, topicFilter,
 *     concurrency, discoverPods, socketPort, podDiscoveryConfig{labelSelector,
 *     podNamespace, socketPort}} -> sched_kvsource.events for the ingester;
 *   normalization (kvroute: "matched-total" | "minmax"); maxEndpoints (kvroute: index
 *     slots, default 256, at most 4096).
 *
 * Raw score: kvindex_lookup's tier-weighted count of leading blocks (gpu 1.0, cpu 0.8 by
 * default). Normalisation, parameter `normalization`:
 *   "matched-total" (default): raw / number of request blocks, as llm-d-router after
 *       PR #1107. A pod holding 1 of 500 blocks scores 0.002, not 1.0.
 *   "minmax": llm-d v0.5.1. Min-max over the map of pods that matched at least one block;
 *       if min == max every pod in the map gets 1.0; pods not in the map get 0. A request
 *       with no full block, or a cold cache, leaves the map empty (all 0, as in the guide's
 *       first-request log).
 * matched-total is the default because min-max discards how much matched: one matching
 * block on one pod is worth the full prefix weight (weight 3 in the guide), enough to
 * outvote both load scorers together and pile a cold workload onto whichever pod cached a
 * shared system prompt first (docs/upstream/epp.md §7 issue 4; inference-sim issue #1007).
 *
 * Endpoints are looked up in the index by name ("ip:port", llm-d v0.7+), falling back to
 * the IP alone (v0.5 topics "kv@<ip>@<model>"), by pu_kvindex_slot; the resolution is cached per endpoint
 * id, tagged with kvindex_endpoints_version (see pps_slot), so a call resolves names only after the
 * ingester added or removed a slot.
 *
 * Publishes the per-endpoint matched blocks for no-hit-lru (policy_util.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"
#include "precise_prefix_cache_scorer.h"

enum { NORM_MATCHED_TOTAL, NORM_MINMAX };

typedef struct pps_state {
    sched_kvsource src;
    int norm;
    kvindex_match *match;          /* one per index slot */
    uint32_t slots;
    idmap slot_of;              /* endpoint id -> version << 32 | (slot + 1, 0 = unknown) */
    char info_key[PU_PREFIX_KEY_MAX];
} pps_state;

static int pps_copy(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
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

static int pps_tokens(sched_plugin *p, const sched_params *pp, pps_state *st, kv_err *err)
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

static int pps_backends(sched_plugin *p, const sched_params *pp, const yt_node *list, const char *path,
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

static int pps_indexer(sched_plugin *p, const sched_params *pp, const sched_env *env, kvindex_config *ic,
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
    const yt_node *spec = yt_get(ix, "speculativeIndexing");
    if (spec)
        sched_warn(env,
                "%s:%d:%d: plugin '%s': indexerConfig.speculativeIndexing is ignored (llm-d reads "
                "speculativeIndexing only as a top-level parameter)",
                yt_name(pp->doc), spec->line, spec->col, p->name);
    return pps_backends(p, pp, yt_get(sc, "backendConfigs"), "indexerConfig.kvBlockScorerConfig.backendConfigs", ic,
                        err);
}

static int pps_events(sched_plugin *p, const sched_params *pp, pps_state *st, kv_err *err)
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
    if (pps_copy(p, pp, ev, path, "zmqEndpoint", e->zmq_endpoint, sizeof e->zmq_endpoint, err) ||
        pps_copy(p, pp, ev, path, "topicFilter", e->topic_filter, sizeof e->topic_filter, err) ||
        pu_int(p, pp, ev, path, "concurrency", 1, 1024, &conc, err) ||
        pu_bool(p, pp, ev, path, "discoverPods", &e->discover_pods, err) ||
        pu_int(p, pp, ev, path, "socketPort", 1, 65535, &port, err) ||
        pps_copy(p, pp, pd, pdp, "labelSelector", e->pod_label_selector, sizeof e->pod_label_selector, err) ||
        pps_copy(p, pp, pd, pdp, "podNamespace", e->pod_namespace, sizeof e->pod_namespace, err) ||
        pu_int(p, pp, pd, pdp, "socketPort", 1, 65535, &port, err))
        return KV_EINVAL;
    e->concurrency = (int)conc;
    e->socket_port = (int)port;
    return KV_OK;
}

static void pps_fini(sched_plugin *p)
{
    pps_state *st = p->state;
    if (!st)
        return;
    kvindex_free(st->src.index);
    free(st->match);
    idmap_free(&st->slot_of);
    free(st);
    p->state = NULL;
}

static int pps_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    pps_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    p->state = st;
    kvindex_config ic = {0};
    const char *norm = "matched-total";
    int64_t max_eps = 256;
    int rc = pps_tokens(p, pp, st, err);
    if (!rc)
        rc = pps_indexer(p, pp, env, &ic, err);
    if (!rc)
        rc = pps_events(p, pp, st, err);
    if (!rc)
        rc = pps_backends(p, pp, yt_get(pp->node, "backendConfigs"), "backendConfigs", &ic, err);
    if (!rc)
        rc = pu_string(p, pp, pp->node, NULL, "normalization", &norm, err);
    if (!rc)
        rc = pu_int(p, pp, pp->node, NULL, "maxEndpoints", 1, 4096, &max_eps, err);
    if (!rc) {
        const yt_node *spec = yt_get(pp->node, "speculativeIndexing");
        if (spec)
            sched_warn(env, "%s:%d:%d: plugin '%s': speculativeIndexing is not implemented; ignored",
                    yt_name(pp->doc), spec->line, spec->col, p->name);
        if (strcmp(norm, "matched-total") == 0)
            st->norm = NORM_MATCHED_TOTAL;
        else if (strcmp(norm, "minmax") == 0)
            st->norm = NORM_MINMAX;
        else
            rc = pu_error(p, pp, yt_get(pp->node, "normalization"), "normalization", err,
                          "unknown '%s' (expected matched-total or minmax)", norm);
    }
    if (!rc) {
        ic.max_endpoints = (uint32_t)max_eps;
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
        pps_fini(p);
        return rc;
    }
    pu_prefix_key(st->info_key, sizeof st->info_key, p->type->type, p->name);
    return KV_OK;
}

/* The slot whose match counts for ep, -1 if the index does not know it. A cached
 * resolution is trusted only when it was made at the version the lookup ran under
 * (trusted false: slots changed during the lookup, so resolve afresh), so a recycled slot
 * never lends one pod's cache to another and a pod added or re-added under a new slot
 * counts at once. The version is kept to 32 bits: a stale entry would need exactly 2^32
 * slot changes between two calls to pass. */
static int pps_slot(pps_state *st, const sched_endpoint *ep, uint64_t version, bool trusted)
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

static void pps_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    pps_state *st = p->state;
    size_t nk = 0;
    const uint64_t *keys = sched_cycle_keys(c, &st->src.keys, &nk);
    uint32_t *matched = sched_cycle_alloc(c, (n ? n : 1) * sizeof *matched);
    pu_prefix_info *info = sched_cycle_alloc(c, sizeof *info);
    if (!matched || !info)
        return;
    memset(matched, 0, (n ? n : 1) * sizeof *matched);
    uint64_t version = kvindex_endpoints_version(st->src.index);
    if (nk > 0 && kvindex_lookup(st->src.index, keys, nk, st->match) > 0) {
        bool trusted = kvindex_endpoints_version(st->src.index) == version;
        double lo = 0, hi = 0;
        bool any = false;
        for (size_t i = 0; i < n; i++) {
            int slot = pps_slot(st, eps[i], version, trusted);
            if (slot < 0 || (uint32_t)slot >= st->slots || st->match[slot].blocks == 0)
                continue;
            double raw = st->match[slot].score;
            matched[i] = st->match[slot].blocks;
            scores[i] = raw;
            lo = any && lo < raw ? lo : raw;
            hi = any && hi > raw ? hi : raw;
            any = true;
        }
        for (size_t i = 0; i < n; i++) {
            if (!matched[i])
                continue;
            if (st->norm == NORM_MATCHED_TOTAL)
                scores[i] /= (double)nk;
            else
                scores[i] = hi == lo ? 1.0 : (scores[i] - lo) / (hi - lo);
        }
    }
    *info = (pu_prefix_info){.total_blocks = nk, .n = n, .eps = eps, .matched = matched};
    sched_cycle_put(c, st->info_key, info);
}

static void *pps_service(sched_plugin *p, const char *what)
{
    pps_state *st = p->state;
    return strcmp(what, PPS_KVSOURCE_SERVICE) == 0 ? &st->src : NULL;
}

extern const sched_plugin_type precise_prefix_cache_scorer_type;

size_t pps_kvsources(const sched *s, sched_kvsource **out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < sched_plugin_count(s); i++) {
        const sched_plugin *p = sched_plugin_at(s, i);
        if (p->type != &precise_prefix_cache_scorer_type)
            continue;
        if (k < max)
            out[k] = &((pps_state *)p->state)->src;
        k++;
    }
    return k;
}

const sched_plugin_type precise_prefix_cache_scorer_type = {
    .type = "precise-prefix-cache-scorer",
    .kind = SCHED_SCORER,
    .init = pps_init,
    .fini = pps_fini,
    .score = pps_score,
    .service = pps_service,
};
