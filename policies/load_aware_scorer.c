/* load-aware-scorer (llm-d-inference-scheduler): an empty waiting queue scores 0.5; a
 * queue of w scores 0.5 * (1 - min(w, threshold)/threshold), so loaded pods rank below
 * idle ones and the score never exceeds a cache scorer's full 1.0. Parameter threshold
 * (default 128). Metrics: the last scraped queue, never scraped reads 0 (score 0.5). */
#include <stdint.h>

#include "policy_util.h"

static int las_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    int64_t thr = 128;
    if (pu_int(p, pp, pp->node, NULL, "threshold", 1, INT32_MAX, &thr, err))
        return KV_EINVAL;
    p->state = (void *)(uintptr_t)thr;
    return KV_OK;
}

static void las_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    double thr = (double)(uintptr_t)p->state;
    for (size_t i = 0; i < n; i++) {
        double w = eps[i]->m.waiting > 0 ? eps[i]->m.waiting : 0;
        scores[i] = w == 0 ? 0.5 : 0.5 * (1.0 - (w < thr ? w : thr) / thr);
    }
}

const sched_plugin_type load_aware_scorer_type = {
    .type = "load-aware-scorer",
    .kind = SCHED_SCORER,
    .init = las_init,
    .score = las_score,
    .metrics_only = true,
};
