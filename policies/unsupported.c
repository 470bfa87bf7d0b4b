/* unsupported: llm-d-router plugin types kvroute knows by name and does not have, each
 * with the reason, so a config naming one fails with "plugin 'X' (type): not available in
 * kvroute: <why>" instead of "unknown plugin type". Each is registered with the kind
 * llm-d-router gives it, so the config loader places it as llm-d would and the refusal
 * comes from building the scheduler (./epp and ./sim at start-up, ./kvctl config). */
#include "policy_util.h"

#define REFUSE(var, tname, k, why)                                                                               \
    static int var##_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)          \
    {                                                                                                           \
        pu_accept(pp->node);                                                                                    \
        return kv_err_set(err, KV_EINVAL, "%s: plugin '%s' (%s): not available in kvroute: %s", yt_name(pp->doc), \
                          p->name, tname, why);                                                                  \
    }                                                                                                           \
    const sched_plugin_type var##_type = {.type = tname, .kind = k, .init = var##_init};

#define NO_MM "it needs a multimodal encoder (embeddings) cache, which kvroute does not model"
#define NO_LATENCY "it needs llm-d's trained latency predictor (a sidecar model), which kvroute does not model"
#define NO_FLOW "llm-d-router's flow control (request queueing and fairness) is not modelled by kvroute"

REFUSE(mm_embeddings_cache_producer, "mm-embeddings-cache-producer", SCHED_REQUEST_CONTROL, NO_MM)
REFUSE(mm_embeddings_cache_scorer, "mm-embeddings-cache-scorer", SCHED_SCORER, NO_MM)
REFUSE(always_disagg_multimodal_decider, "always-disagg-multimodal-decider", SCHED_REQUEST_CONTROL, NO_MM)
REFUSE(encode_filter, "encode-filter", SCHED_FILTER, "kvroute models no encode (E/P/D) role")
REFUSE(predicted_latency_producer, "predicted-latency-producer", SCHED_REQUEST_CONTROL, NO_LATENCY)
REFUSE(latency_scorer, "latency-scorer", SCHED_SCORER, NO_LATENCY)
REFUSE(slo_headroom_tier_filter, "slo-headroom-tier-filter", SCHED_FILTER, NO_LATENCY)
REFUSE(latency_slo_admitter, "latency-slo-admitter", SCHED_REQUEST_CONTROL, NO_LATENCY)
REFUSE(data_parallel_profile_handler, "data-parallel-profile-handler", SCHED_PROFILE_HANDLER,
       "kvroute routes to each data-parallel rank as its own endpoint instead")
REFUSE(multicluster_file_discovery, "multicluster-file-discovery", SCHED_REQUEST_CONTROL,
       "it discovers peer clusters' gateways as endpoints (multi-cluster routing), which kvroute does not model; "
       "file-discovery lists model-server endpoints")
REFUSE(dcgm_data_source, "dcgm-data-source", SCHED_REQUEST_CONTROL, "kvroute scrapes no DCGM GPU metrics")
REFUSE(dcgm_extractor, "dcgm-extractor", SCHED_REQUEST_CONTROL, "kvroute scrapes no DCGM GPU metrics")
REFUSE(endpoint_attribute_filter, "endpoint-attribute-filter", SCHED_FILTER,
       "it reads data-layer attributes (e.g. DCGM GPU metrics) kvroute does not collect")
REFUSE(endpoint_attribute_scorer, "endpoint-attribute-scorer", SCHED_SCORER,
       "it reads data-layer attributes (e.g. DCGM GPU metrics) kvroute does not collect")
REFUSE(topology_extractor, "topology-extractor", SCHED_REQUEST_CONTROL, "kvroute models no network topology")
REFUSE(topology_affinity_filter, "topology-affinity-filter", SCHED_FILTER, "kvroute models no network topology")
REFUSE(topology_affinity_scorer, "topology-affinity-scorer", SCHED_SCORER, "kvroute models no network topology")
REFUSE(probabilistic_admitter, "probabilistic-admitter", SCHED_REQUEST_CONTROL, NO_FLOW)
REFUSE(utilization_detector, "utilization-detector", SCHED_REQUEST_CONTROL,
       "kvroute's saturation detector is the top-level saturationDetector section")
REFUSE(program_aware_fairness, "program-aware-fairness", SCHED_REQUEST_CONTROL, NO_FLOW)
REFUSE(soft_reflective_ceiling_policy, "soft-reflective-ceiling-policy", SCHED_REQUEST_CONTROL, NO_FLOW)
