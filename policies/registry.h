/* registry: the policies' table of plugin types, which the drivers (and tests) pass to
 * the config loader (engine/config.h: epc_load_*). The engine declares the interface
 * (sched_plugin_type, sched_registry_find) and links without this table. Immutable;
 * any thread may read it. */
#ifndef KVROUTE_REGISTRY_H
#define KVROUTE_REGISTRY_H

#include "scheduler.h"

/* NULL-terminated, in no particular order; type names are unique. */
extern const sched_plugin_type *const registry_types[];

#endif
