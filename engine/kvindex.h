/* kvindex: which endpoint holds which prompt block, fed by vLLM KV events.
 *
 * Dual-key (llm-d design, docs/upstream/kv-events-and-index.md §3):
 *   request key -> holders: one endpoint and its tiers inline, or, for a key two or
 *   more endpoints hold, one bitmap over endpoint slots per tier (gpu/cpu/other);
 *   (endpoint, engine key) -> request key, so BlockRemoved can resolve vLLM's own hashes
 *   even when pods use different hash seeds or algorithms.
 * Endpoints are small integer slots (0..max_endpoints-1) fixed at creation, so a
 * block's holders are at most a few machine words and the longest-prefix lookup for
 * every endpoint at once is a running AND over the request's keys.
 * Bounded: at most capacity request keys, least-recently-stored evicted first; a key
 * held by two or more endpoints has one set of holder bitmaps (8 + 24 x ceil(max_endpoints
 * / 64) bytes), so there are never more sets than keys.
 *
 * Threads: any number of concurrent readers (kvindex_lookup, kvindex_stats, getters)
 * while one or more writers apply events; writers are serialised internally. */
#ifndef KVROUTE_KVINDEX_H
#define KVROUTE_KVINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

typedef enum { KVTIER_GPU = 0, KVTIER_CPU = 1, KVTIER_OTHER = 2, KVTIER_COUNT = 3 } kvtier;

/* vLLM's medium string ("GPU", "CPU", "STORAGE", NULL) -> tier; NULL/empty is gpu. */
kvtier kvtier_from_medium(const char *medium, size_t len);
const char *kvtier_name(kvtier t);

typedef struct kvindex_config {
    size_t capacity;            /* max request keys held (LRU beyond); 0 = default 1e7 */
    uint32_t max_endpoints;     /* endpoint slots; 0 = default 256; at most 4096 */
    double tier_weight[KVTIER_COUNT]; /* all zero = defaults gpu 1.0, cpu 0.8, other 1.0 */
    /* Nanoseconds on a monotonic clock the driver supplies (the engine reads none), to
     * record how long each write-lock hold lasts (stats.write_hold_*): two reads per
     * hold. NULL: holds are not timed. */
    uint64_t (*clock_ns)(void);
} kvindex_config;

typedef struct kvindex kvindex;

kvindex *kvindex_new(const kvindex_config *cfg, kv_err *err);
void kvindex_free(kvindex *ix);
uint32_t kvindex_max_endpoints(const kvindex *ix);

/* Endpoint slots, named by the pod id the events use (e.g. "10.0.0.7:8000"). */
int kvindex_endpoint_add(kvindex *ix, const char *name, kv_err *err);  /* slot, or existing slot */
int kvindex_endpoint_find(const kvindex *ix, const char *name);        /* slot or -1 */
const char *kvindex_endpoint_name(const kvindex *ix, int slot);        /* NULL if free; valid until the slot is removed */
/* Removes every entry of the endpoint and frees its slot. */
void kvindex_endpoint_remove(kvindex *ix, int slot);
/* Changes whenever a slot is added or removed (never otherwise), so a caller may cache
 * name -> slot resolutions and trust them while it reads the same value. Lock-free. */
uint64_t kvindex_endpoints_version(const kvindex *ix);

/* Writers hold the lock for at most KVINDEX_STORE_SLICE pairs of one store (a long
 * BlockStored is applied in slices, readers may run between them), so lookups never wait
 * behind a whole event; growing the hash tables and arrays for a slice happens between
 * slices, outside the lock (writers are serialised by a mutex of their own), so lookups
 * do not wait behind a rehash either; the other writes are short or, like endpoint
 * removal, rare. */
#define KVINDEX_STORE_SLICE 256
/* Clearing an endpoint (AllBlocksCleared, removal) scans every record: the write lock is
 * let go after KVINDEX_CLEAR_SCAN records or KVINDEX_CLEAR_SLICE blocks cleared
 * (each a few random cache lines), whichever comes first. */
#define KVINDEX_CLEAR_SCAN 16384
#define KVINDEX_CLEAR_SLICE 128

/* BlockStored. engine_keys (may be NULL with n_engine 0 for pure request-key stores)
 * and request_keys may have different lengths (engine and index block sizes differ):
 * n = max(E, R), pair i maps engine_keys[i*E/n] -> request_keys[i*R/n].
 * Pairs are applied in order: each request key is stored (or refreshed in LRU order),
 * then its engine key's mapping is set; a store replaces what the endpoint's engine key
 * mapped to before. A mapping lives only while the endpoint holds its request key in
 * some tier: losing the last tier (remove, clear, eviction) drops it.
 * KV_EINVAL for a free slot or bad tier, KV_ERANGE beyond 65535 request keys per engine key. */
int kvindex_store(kvindex *ix, int slot, kvtier tier, const uint64_t *engine_keys, size_t n_engine,
                  const uint64_t *request_keys, size_t n_request, kv_err *err);
/* The request key an endpoint's engine key maps to (the last one mapped); false if none. */
bool kvindex_request_key(const kvindex *ix, int slot, uint64_t engine_key, uint64_t *request_key);
/* A hint, changing nothing: starts fetching the table lines that kvindex_request_key and
 * a store's mapping of the endpoint's engine keys will probe, so that a batch's events,
 * each one such probe after another, wait on memory together rather than in turn. */
void kvindex_prefetch_engine_keys(const kvindex *ix, int slot, const uint64_t *engine_keys, size_t n);
/* Tiers in which the endpoint holds the request key: bit (1 << kvtier) per tier, 0 if none. */
unsigned kvindex_tiers(const kvindex *ix, int slot, uint64_t request_key);
/* BlockRemoved: drops the endpoint's tier entry for each engine key's request keys;
 * request keys left with no holder are deleted. Returns the number of entries removed. */
size_t kvindex_remove(kvindex *ix, int slot, kvtier tier, const uint64_t *engine_keys, size_t n);
/* AllBlocksCleared: every entry of the endpoint, all tiers; the slot stays. */
void kvindex_clear_endpoint(kvindex *ix, int slot);

/* Longest consecutive prefix, every endpoint in one pass. For each slot s:
 * out[s].blocks = number of leading keys the endpoint holds in some tier,
 * out[s].score  = sum over those blocks of the highest tier weight it holds them in.
 * out must have kvindex_max_endpoints() entries. Returns the longest match. */
typedef struct kvindex_match {
    uint32_t blocks;
    float score;
} kvindex_match;
uint32_t kvindex_lookup(const kvindex *ix, const uint64_t *keys, size_t n, kvindex_match *out);

typedef struct kvindex_stats {
    uint64_t blocks;        /* request keys held */
    uint64_t entries;       /* (request key, endpoint, tier) holder bits set */
    uint64_t engine_keys;   /* (endpoint, engine key) mappings */
    uint64_t bytes;         /* memory used by the index's tables */
    uint64_t evictions;     /* request keys dropped by the capacity bound */
    uint64_t stores, removes, clears, lookups;  /* calls on a live slot (lookups: all calls) */
    uint64_t admissions;    /* request keys passed to those stores (llm-d-kv-cache's admissions) */
    /* With cfg.clock_ns: write-lock holds, the longest, and the 99th percentile (to
     * 250 ns resolution, capped at 1 ms); zero otherwise. */
    uint64_t write_holds, write_hold_max_ns, write_hold_p99_ns;
} kvindex_stats;
/* The endpoint's (request key, tier) entries: what it holds now (0 for a free slot). */
uint64_t kvindex_endpoint_entries(const kvindex *ix, int slot);
void kvindex_get_stats(const kvindex *ix, kvindex_stats *out);

#endif
