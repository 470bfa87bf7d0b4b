/* queue-scorer (GIE): min-max over the candidates' waiting queues, shorter is better:
 * (maxQ - q)/(maxQ - minQ), all equal -> 1.0.
 * Metrics: like GIE, the last scraped value is used whether or not it is stale
 * (staleness is the saturation detector's concern); a never-scraped pod reads 0. */
#include "policy_util.h"

static void queue_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    for (size_t i = 0; i < n; i++)
        scores[i] = eps[i]->m.waiting;
    pu_minmax_lower_better(scores, n);
}

const sched_plugin_type queue_scorer_type = {
    .type = "queue-scorer",
    .kind = SCHED_SCORER,
    .score = queue_score,
    .metrics_only = true,
};
