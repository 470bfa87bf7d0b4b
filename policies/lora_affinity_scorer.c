/* lora-affinity-scorer (GIE): prefer pods that already serve the request's adapter.
 *   1.0  the adapter is active (vllm:lora_requests_info running_lora_adapters)
 *   0.8  not active, but active + waiting adapters < max_lora (room to load it)
 *   0.6  the adapter is waiting to load
 *   0    otherwise.
 * The adapter is the request's LoRA, else its target model (GIE matches TargetModel).
 * Missing metrics: no adapter lists and max_lora 0, so a pod with no scrape scores 0. */
#include <string.h>

#include "policy_util.h"

static bool lora_has(const char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] && strcmp(list[i], name) == 0)
            return true;
    return false;
}

static void lora_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    const sched_request *r = sched_cycle_request(c);
    const char *want = r->lora && r->lora[0] ? r->lora : r->target_model && r->target_model[0] ? r->target_model
                                                                                                : r->model;
    for (size_t i = 0; i < n; i++) {
        const sched_metrics *m = &eps[i]->m;
        bool active = want && lora_has(m->running_loras, m->n_running_loras, want);
        bool waiting = want && lora_has(m->waiting_loras, m->n_waiting_loras, want);
        bool room = (int)(m->n_running_loras + m->n_waiting_loras) < m->max_lora;
        scores[i] = active ? 1.0 : room ? 0.8 : waiting ? 0.6 : 0.0;
    }
}

const sched_plugin_type lora_affinity_scorer_type = {
    .type = "lora-affinity-scorer",
    .kind = SCHED_SCORER,
    .score = lora_score,
};
