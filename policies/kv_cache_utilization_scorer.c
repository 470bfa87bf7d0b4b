/* kv-cache-utilization-scorer (GIE): 1 - KVCacheUsagePercent (vllm:kv_cache_usage_perc).
 * Metrics: the last scraped value is used even when stale, as GIE does; a never-scraped
 * pod reads 0 usage and so scores 1.0. Values outside [0,1] are clamped by the framework. */
#include "policy_util.h"

static void kvu_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    for (size_t i = 0; i < n; i++)
        scores[i] = 1.0 - eps[i]->m.kv_usage;
}

const sched_plugin_type kv_cache_utilization_scorer_type = {
    .type = "kv-cache-utilization-scorer",
    .kind = SCHED_SCORER,
    .score = kvu_score,
    .metrics_only = true,
};
