/* registry: the one table of plugin types, by the type names EndpointPickerConfig files
 * use. Adding a policy is adding its file and one line here. */
#include <string.h>

#include "scheduler.h"

extern const sched_plugin_type single_profile_handler_type, pd_profile_handler_type, prefill_header_handler_type;
extern const sched_plugin_type decode_filter_type, prefill_filter_type, by_label_type, by_label_selector_type;
extern const sched_plugin_type max_score_picker_type, random_picker_type, weighted_random_picker_type,
    round_robin_picker_type;
extern const sched_plugin_type precise_prefix_cache_scorer_type, kv_cache_utilization_scorer_type,
    queue_scorer_type, running_requests_size_scorer_type, load_aware_scorer_type, active_request_scorer_type,
    session_affinity_scorer_type, no_hit_lru_scorer_type, lora_affinity_scorer_type;
extern const sched_plugin_type prefix_cache_scorer_type, sglang_cache_aware_type, dynamo_kv_type;
extern const sched_plugin_type approx_prefix_cache_producer_type, precise_prefix_cache_producer_type,
    inflight_load_producer_type, prefix_cache_affinity_filter_type, token_load_scorer_type, token_producer_type,
    tokenizer_type, metrics_data_source_type, core_metrics_extractor_type, endpoint_notification_source_type;
/* llm-d-router types kvroute refuses with a reason (policies/unsupported.c) */
extern const sched_plugin_type mm_embeddings_cache_producer_type, mm_embeddings_cache_scorer_type,
    always_disagg_multimodal_decider_type, encode_filter_type, predicted_latency_producer_type, latency_scorer_type,
    slo_headroom_tier_filter_type, latency_slo_admitter_type, disagg_profile_handler_type,
    prefix_based_pd_decider_type, always_disagg_pd_decider_type, disagg_headers_handler_type,
    data_parallel_profile_handler_type, burst_prefix_cache_producer_type, dcgm_data_source_type, dcgm_extractor_type,
    endpoint_attribute_filter_type, endpoint_attribute_scorer_type,
    topology_extractor_type, topology_affinity_filter_type, topology_affinity_scorer_type,
    probabilistic_admitter_type, utilization_detector_type, program_aware_fairness_type,
    soft_reflective_ceiling_policy_type;

const sched_plugin_type *const sched_registry[] = {
    &single_profile_handler_type,
    &pd_profile_handler_type,
    &prefill_header_handler_type,
    &decode_filter_type,
    &prefill_filter_type,
    &by_label_type,
    &by_label_selector_type,
    &max_score_picker_type,
    &random_picker_type,
    &weighted_random_picker_type,
    &round_robin_picker_type,
    &precise_prefix_cache_scorer_type,
    &kv_cache_utilization_scorer_type,
    &queue_scorer_type,
    &running_requests_size_scorer_type,
    &load_aware_scorer_type,
    &active_request_scorer_type,
    &session_affinity_scorer_type,
    &no_hit_lru_scorer_type,
    &lora_affinity_scorer_type,
    &prefix_cache_scorer_type,
    &sglang_cache_aware_type,
    &dynamo_kv_type,
    &approx_prefix_cache_producer_type,
    &precise_prefix_cache_producer_type,
    &inflight_load_producer_type,
    &prefix_cache_affinity_filter_type,
    &token_load_scorer_type,
    &token_producer_type,
    &tokenizer_type,
    &metrics_data_source_type,
    &core_metrics_extractor_type,
    &endpoint_notification_source_type,
    &mm_embeddings_cache_producer_type,
    &mm_embeddings_cache_scorer_type,
    &always_disagg_multimodal_decider_type,
    &encode_filter_type,
    &predicted_latency_producer_type,
    &latency_scorer_type,
    &slo_headroom_tier_filter_type,
    &latency_slo_admitter_type,
    &disagg_profile_handler_type,
    &prefix_based_pd_decider_type,
    &always_disagg_pd_decider_type,
    &disagg_headers_handler_type,
    &data_parallel_profile_handler_type,
    &burst_prefix_cache_producer_type,
    &dcgm_data_source_type,
    &dcgm_extractor_type,
    &endpoint_attribute_filter_type,
    &endpoint_attribute_scorer_type,
    &topology_extractor_type,
    &topology_affinity_filter_type,
    &topology_affinity_scorer_type,
    &probabilistic_admitter_type,
    &utilization_detector_type,
    &program_aware_fairness_type,
    &soft_reflective_ceiling_policy_type,
    NULL,
};

const sched_plugin_type *sched_registry_find(const char *type)
{
    for (size_t i = 0; sched_registry[i]; i++)
        if (strcmp(sched_registry[i]->type, type) == 0)
            return sched_registry[i];
    return NULL;
}
