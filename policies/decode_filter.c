/* decode-filter (llm-d): keeps pods whose llm-d.ai/role is decode or both, and pods with
 * no role label (a plain aggregated deployment has none). */
#include "policy_util.h"

static size_t df_filter(sched_plugin *p, sched_cycle *c, sched_endpoint **eps, size_t n)
{
    static const char *const roles[] = {"decode", "both"};
    return pu_filter_label(eps, n, "llm-d.ai/role", roles, 2, true);
}

const sched_plugin_type decode_filter_type = {
    .type = "decode-filter",
    .kind = SCHED_FILTER,
    .filter = df_filter,
};
