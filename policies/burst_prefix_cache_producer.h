/* burst_prefix_cache_producer: the contract between llm-d-router's burst producer and the
 * drivers that hold requests for its window. The producer co-locates a burst of
 * prompt-sharing requests (an RL rollout's n samples of one prompt) that arrive while
 * every cache is cold: the driver holds each request up to windowDurationMs, hands the
 * window's requests to burst_assign in arrival order, then schedules each as usual; the
 * producer's PrefixCacheMatchInfo for a request is then a full match on the endpoint it
 * was assigned and none elsewhere (prefix-cache-scorer reads it by the producer's name).
 * ./sim holds requests on its event queue (the window ends in simulated time); ./epp
 * holds them in the router (the window ends on the monotonic clock).
 *
 * Threads: burst_assign and the scheduling cycles that read its assignments must be
 * serialised, as every call into one sched is (the drivers call it under the lock they
 * schedule under). */
#ifndef KVROUTE_BURST_PREFIX_CACHE_PRODUCER_H
#define KVROUTE_BURST_PREFIX_CACHE_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#include "kverr.h"
#include "scheduler.h"

#define BURST_SERVICE "burst-window"

typedef struct burst burst;

/* The first burst producer of s, or NULL when the config has none. */
burst *burst_of(const sched *s);
double burst_window_s(const burst *b);     /* windowDurationMs, in seconds */
int64_t burst_max_batch(const burst *b);   /* maxBatchSize: requests one window holds; -1 = no bound */

/* Places one window: reqs[0..n) in arrival order over the candidates eps[0..n_eps) (llm-d
 * places a window over its first request's candidates). Identical prompts form groups
 * kept on one endpoint up to maxPerReplica, then spilled to the next least loaded; with
 * minColocateBlocks, units sharing that many leading blocks prefer an endpoint already
 * holding one, under a fair share of the window. Each request's assignment is kept until
 * its scheduling cycle reads it (a request with no assignment matches nowhere, leaving the
 * choice to the other scorers). KV_ENOMEM leaves nothing assigned. */
int burst_assign(burst *b, const sched_request *const *reqs, size_t n, sched_endpoint *const *eps, size_t n_eps,
                 kv_err *err);

#endif
