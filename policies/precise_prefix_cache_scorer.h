/* precise_prefix_cache_scorer: the kvsource contract, what a precise-prefix-cache-scorer
 * (and a precise-prefix-cache-producer, which owns the same precise_index) offers the drivers that feed it vLLM's KV events: its kvindex, the request-key context
 * its lookups use (tokenProcessorConfig) and its kvEventsConfig. ./sim ingests every
 * simulated replica's events into every source; ./epp subscribes once per distinct
 * kvEventsConfig and applies each batch to every source that declared it
 * (live/ingest.h), so a config with several precise scorers behaves the same in both.
 *
 * Threads: a source's fields are set when the scheduler is built and read-only after; the
 * index is thread-safe (kvindex.h) and outlives the sched's users until sched_free. */
#ifndef KVROUTE_PRECISE_PREFIX_CACHE_SCORER_H
#define KVROUTE_PRECISE_PREFIX_CACHE_SCORER_H

#include <stdbool.h>
#include <stddef.h>

#include "blockkeys.h"
#include "kvindex.h"
#include "scheduler.h"

/* The name the scorer also answers through sched_services (scheduler.h), for plugins and
 * tests that look a source up generically. */
#define PPS_KVSOURCE_SERVICE "kvsource"

/* kvEventsConfig, as the ingester reads it. */
typedef struct pps_kvevents {
    char zmq_endpoint[256];    /* default "tcp://" "*:5557" (bind all) */
    char topic_filter[64];     /* default "kv@" */
    int concurrency;           /* default 4 */
    bool discover_pods;        /* default true (llm-d); the guide sets false */
    int socket_port;           /* default 5557 */
    char pod_label_selector[256];
    char pod_namespace[128];
} pps_kvevents;

/* Read-only for the drivers, except the index, which they feed. */
typedef struct sched_kvsource {
    const char *name;          /* the plugin's name in the config (the EPP's metrics label) */
    kvindex *index;
    blockkeys_ctx keys;        /* tokenProcessorConfig: blockSize, hashSeed, algorithm */
    pps_kvevents events;
} sched_kvsource;

/* The sources of every precise-prefix-cache-scorer and -producer of s, in config order: the first max
 * of them in out, and how many s has (call with max 0 to size out). */
size_t pps_kvsources(const sched *s, sched_kvsource **out, size_t max);

#endif
