/* registry: the one table of plugin types, by the type names EndpointPickerConfig files
 * use (see registry.h). Adding a policy is adding its file and one line here. */
#include "registry.h"

extern const sched_plugin_type single_profile_handler_type, pd_profile_handler_type, prefill_header_handler_type;
extern const sched_plugin_type decode_filter_type, prefill_filter_type, by_label_type, by_label_selector_type;
extern const sched_plugin_type max_score_picker_type, random_picker_type, weighted_random_picker_type,
    round_robin_picker_type;
extern const sched_plugin_type precise_prefix_cache_scorer_type, kv_cache_utilization_scorer_type,
    queue_scorer_type, running_requests_size_scorer_type, load_aware_scorer_type, active_request_scorer_type,
    session_affinity_scorer_type, no_hit_lru_scorer_type, lora_affinity_scorer_type;
extern const sched_plugin_type prefix_cache_scorer_type, sglang_cache_aware_type, dynamo_kv_type;

const sched_plugin_type *const registry_types[] = {
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
    NULL,
};
