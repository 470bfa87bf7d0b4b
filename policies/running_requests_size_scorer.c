/* running-requests-size-scorer (GIE): queue-scorer's min-max on vllm:num_requests_running
 * instead of the waiting queue: (max - r)/(max - min), all equal -> 1.0. Stale or
 * never-scraped metrics: as queue-scorer (last value; never scraped reads 0). */
#include "policy_util.h"

static void rrs_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    for (size_t i = 0; i < n; i++)
        scores[i] = eps[i]->m.running;
    pu_minmax_lower_better(scores, n);
}

const sched_plugin_type running_requests_size_scorer_type = {
    .type = "running-requests-size-scorer",
    .kind = SCHED_SCORER,
    .score = rrs_score,
    .metrics_only = true,
};
