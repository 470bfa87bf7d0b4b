/* precise_index: the KV-event index behind llm-d's precise prefix cache, shared by the
 * two plugin types that own one: precise-prefix-cache-scorer (the v0.5-v0.8 scorer that
 * reads it itself) and precise-prefix-cache-producer (llm-d-router v0.9+, which publishes
 * the match for prefix-cache-scorer, prefix-cache-affinity-filter and inflight-load-producer).
 *
 * It reads the parameters both types take and builds the kvindex and the request-key
 * context (tokenProcessorConfig) they offer the drivers as the "kvsource" service: the
 * live ingester and the simulator feed events into that index with those keys.
 *
 * Parameters (llm-d's, plus one of kvroute's):
 *   tokenProcessorConfig{blockSize | blockSizeTokens (16), hashSeed (""), hashAlgorithm
 *     ("xxh64" | "fnv64a-cbor", default xxh64)};
 *   indexerConfig{kvBlockIndexConfig{inMemoryConfig{size}} -> index capacity,
 *     kvBlockScorerConfig{backendConfigs[]{name, weight}} -> tier weights,
 *     tokenizersPoolConfig (accepted: requests arrive as token ids),
 *     speculativeIndexing (ignored with a warning, as llm-d ignores it there)};
 *   backendConfigs[] (same as above, top level); kvEventsConfig{zmqEndpoint, topicFilter,
 *     concurrency, discoverPods, socketPort, podDiscoveryConfig{labelSelector,
 *     podNamespace, socketPort}} -> sched_kvsource.events for the ingester;
 *   maxEndpoints (kvroute: index slots, default 256, at most 4096).
 *
 * Endpoints are looked up in the index by name ("ip:port", llm-d v0.7+), falling back to
 * the IP alone (v0.5 topics "kv@<ip>@<model>"), by pu_kvindex_slot; the resolution is cached
 * per endpoint id, tagged with kvindex_endpoints_version (see pix_slot), so a call resolves
 * names only after the ingester added or removed a slot.
 *
 * Threads: as its owning plugin (one scheduling thread); the kvindex itself is thread-safe. */
#ifndef KVROUTE_PRECISE_INDEX_H
#define KVROUTE_PRECISE_INDEX_H

#include "precise_prefix_cache_scorer.h"
#include "scheduler.h"

typedef struct precise_index precise_index;

/* Reads the parameters above from pp (errors name p's field) and builds the index. */
precise_index *precise_index_new(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err);
void precise_index_free(precise_index *ix);
sched_kvsource *precise_index_source(precise_index *ix);
/* The settings in force, defaults included, as "key: value" lines (for kvctl config). */
void precise_index_describe(const precise_index *ix, char *buf, size_t cap);

/* The cycle's request against the index: blocks[i] leading blocks eps[i] holds and raw[i]
 * their tier-weighted count (kvindex_lookup), 0 for an endpoint the index does not know.
 * Returns the request's number of blocks. */
size_t precise_index_match(precise_index *ix, sched_cycle *c, sched_endpoint *const *eps, size_t n, uint32_t *blocks,
                           double *raw);

#endif
