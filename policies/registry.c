/* registry: the one table of plugin types, by the type names EndpointPickerConfig files
 * use (see registry.h). Adding a policy is adding its file, named after its type
 * (policies/<type with '_' for '-'>.c, defining <that>_type), and one line here. */
#include "registry.h"

#define REGISTRY_POLICIES(X)              \
    X(single_profile_handler)             \
    X(pd_profile_handler)                 \
    X(prefill_header_handler)             \
    X(decode_filter)                      \
    X(prefill_filter)                     \
    X(by_label)                           \
    X(by_label_selector)                  \
    X(label_selector_filter)              \
    X(max_score_picker)                   \
    X(random_picker)                      \
    X(weighted_random_picker)             \
    X(round_robin_picker)                 \
    X(kube_proxy_picker)                  \
    X(precise_prefix_cache_scorer)        \
    X(kv_cache_utilization_scorer)        \
    X(queue_scorer)                       \
    X(running_requests_size_scorer)       \
    X(load_aware_scorer)                  \
    X(active_request_scorer)              \
    X(session_affinity_scorer)            \
    X(no_hit_lru_scorer)                  \
    X(lora_affinity_scorer)               \
    X(prefix_cache_scorer)                \
    X(sglang_cache_aware_picker)          \
    X(dynamo_kv_picker)                   \
    X(approx_prefix_cache_producer)       \
    X(precise_prefix_cache_producer)      \
    X(inflight_load_producer)             \
    X(prefix_cache_affinity_filter)       \
    X(token_load_scorer)                  \
    X(token_producer)                     \
    X(tokenizer)                          \
    X(metrics_data_source)                \
    X(core_metrics_extractor)             \
    X(endpoint_notification_source)       \
    X(file_discovery)                     \
    X(disagg_profile_handler)             \
    X(prefix_based_pd_decider)            \
    X(always_disagg_pd_decider)           \
    X(disagg_headers_handler)             \
    /* llm-d-router types kvroute refuses with a reason (policies/unsupported.c) */ \
    X(mm_embeddings_cache_producer)       \
    X(mm_embeddings_cache_scorer)         \
    X(always_disagg_multimodal_decider)   \
    X(encode_filter)                      \
    X(predicted_latency_producer)         \
    X(latency_scorer)                     \
    X(slo_headroom_tier_filter)           \
    X(latency_slo_admitter)               \
    X(data_parallel_profile_handler)      \
    X(burst_prefix_cache_producer)        \
    X(multicluster_file_discovery)        \
    X(dcgm_data_source)                   \
    X(dcgm_extractor)                     \
    X(endpoint_attribute_filter)          \
    X(endpoint_attribute_scorer)          \
    X(topology_extractor)                 \
    X(topology_affinity_filter)           \
    X(topology_affinity_scorer)           \
    X(probabilistic_admitter)             \
    X(utilization_detector)               \
    X(program_aware_fairness)             \
    X(soft_reflective_ceiling_policy)

#define REGISTRY_DECLARE(name) extern const sched_plugin_type name##_type;
#define REGISTRY_ENTRY(name) &name##_type,

REGISTRY_POLICIES(REGISTRY_DECLARE)

const sched_plugin_type *const registry_types[] = {REGISTRY_POLICIES(REGISTRY_ENTRY) NULL};
