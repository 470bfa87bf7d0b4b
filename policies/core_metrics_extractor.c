/* core-metrics-extractor (llm-d-router data layer): reads the queue, running, KV-usage,
 * LoRA and cache-config metrics out of a metrics-data-source's scrape. kvroute's scraper
 * extracts exactly these, by vLLM's metric names (./epp --kv-metric picks the KV-usage
 * name), so the plugin declares what happens anyway. engineLabelKey, defaultEngine and
 * engineConfigs (other engines' metric names) are accepted with a warning naming each:
 * kvroute reads vLLM's names only. */
#include "policy_util.h"

static int cme_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    (void)err;
    PU_IGNORE(p, pp, env,
              "kvroute reads vLLM's metric names only (./epp --kv-metric for the KV-usage one)",
              "engineLabelKey", "defaultEngine", "engineConfigs");
    return KV_OK;
}

const sched_plugin_type core_metrics_extractor_type = {
    .type = "core-metrics-extractor",
    .kind = SCHED_REQUEST_CONTROL,
    .init = cme_init,
};
