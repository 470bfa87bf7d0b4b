/* prefill-filter (llm-d): keeps only pods labelled llm-d.ai/role=prefill; unlabelled
 * pods are not prefill workers. */
#include "policy_util.h"

static size_t pf_filter(sched_plugin *p, sched_cycle *c, sched_endpoint **eps, size_t n)
{
    static const char *const roles[] = {"prefill"};
    return pu_filter_label(eps, n, "llm-d.ai/role", roles, 1, false);
}

const sched_plugin_type prefill_filter_type = {
    .type = "prefill-filter",
    .kind = SCHED_FILTER,
    .filter = pf_filter,
};
