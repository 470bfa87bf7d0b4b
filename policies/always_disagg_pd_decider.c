/* always-disagg-pd-decider (llm-d-router v0.9+): approves prefill/decode disaggregation
 * for every request (tests, or pools where the prefill pods should always run). No
 * parameters. */
#include <string.h>

#include "policy_util.h"

static bool adp_disaggregate(sched_plugin *p, sched_cycle *c, sched_endpoint *pick)
{
    (void)p;
    (void)c;
    return pick != NULL;
}

static void *adp_service(sched_plugin *p, const char *what)
{
    (void)p;
    static const pu_pd_decider d = {.disaggregate = adp_disaggregate};
    return strcmp(what, PU_PD_DECIDER) == 0 ? (void *)&d : NULL;
}

const sched_plugin_type always_disagg_pd_decider_type = {
    .type = "always-disagg-pd-decider",
    .kind = SCHED_REQUEST_CONTROL,
    .service = adp_service,
};
