/* registry: the one table of plugin types, by the type names EndpointPickerConfig files
 * use. Adding a policy is adding its file and one line here. */
#include <string.h>

#include "scheduler.h"

extern const sched_plugin_type single_profile_handler_type;
extern const sched_plugin_type max_score_picker_type, round_robin_picker_type;
extern const sched_plugin_type queue_scorer_type, kv_cache_utilization_scorer_type;
extern const sched_plugin_type precise_prefix_cache_scorer_type;

const sched_plugin_type *const sched_registry[] = {
    &single_profile_handler_type,
    &max_score_picker_type,
    &round_robin_picker_type,
    &queue_scorer_type,
    &kv_cache_utilization_scorer_type,
    &precise_prefix_cache_scorer_type,
    NULL,
};

const sched_plugin_type *sched_registry_find(const char *type)
{
    for (size_t i = 0; sched_registry[i]; i++)
        if (strcmp(sched_registry[i]->type, type) == 0)
            return sched_registry[i];
    return NULL;
}
