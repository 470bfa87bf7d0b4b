/* registry: the one table of plugin types, by the type names EndpointPickerConfig files
 * use (see registry.h). Adding a policy is adding its file, named after its type
 * (policies/<type with '_' for '-'>.c, defining <that>_type), and one line here. */
#include "registry.h"

#define REGISTRY_POLICIES(X)            \
    X(single_profile_handler)           \
    X(pd_profile_handler)               \
    X(prefill_header_handler)           \
    X(decode_filter)                    \
    X(prefill_filter)                   \
    X(by_label)                         \
    X(by_label_selector)                \
    X(max_score_picker)                 \
    X(random_picker)                    \
    X(weighted_random_picker)           \
    X(round_robin_picker)               \
    X(precise_prefix_cache_scorer)      \
    X(kv_cache_utilization_scorer)      \
    X(queue_scorer)                     \
    X(running_requests_size_scorer)     \
    X(load_aware_scorer)                \
    X(active_request_scorer)            \
    X(session_affinity_scorer)          \
    X(no_hit_lru_scorer)                \
    X(lora_affinity_scorer)             \
    X(prefix_cache_scorer)              \
    X(sglang_cache_aware_picker)        \
    X(dynamo_kv_picker)

#define REGISTRY_DECLARE(name) extern const sched_plugin_type name##_type;
#define REGISTRY_ENTRY(name) &name##_type,

REGISTRY_POLICIES(REGISTRY_DECLARE)

const sched_plugin_type *const registry_types[] = {REGISTRY_POLICIES(REGISTRY_ENTRY) NULL};
