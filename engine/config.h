/* config: llm-d's EndpointPickerConfig YAML, loaded, defaulted and validated the way
 * GIE's config loader does it (docs/upstream/epp.md §2), so users' files load unchanged.
 *
 * Accepted: apiVersion inference.networking.x-k8s.io/v1alpha1 or llm-d.ai/v1alpha1,
 * kind EndpointPickerConfig, plugins[]{name, type, parameters},
 * schedulingProfiles[]{name, plugins[]{pluginRef, weight}}, featureGates[],
 * saturationDetector{queueDepthThreshold, kvCacheUtilThreshold, metricsStalenessThreshold},
 * data, dataLayer{injectDefaults, sources[]{pluginRef, extractors[]{pluginRef}},
 * discovery{pluginRef}} (llm-d-router; refs must name declared plugins). Unknown top-level (and plugin-entry, profile-entry, saturationDetector) fields are
 * errors, as GIE's strict decoder makes them; plugin parameters are read by the plugin
 * (unknown ones become warnings when a sched is built).
 *
 * Decision: a document with neither apiVersion nor kind is accepted as the config body.
 * Users paste exactly that body from Helm values (the precise guide's pluginsCustomConfig
 * shows plugins/schedulingProfiles only), and nothing else in this format could be meant.
 * If either field is present, both must be present and valid.
 *
 * Defaults applied (GIE config/loader/defaults.go): a plugin's name defaults to its type;
 * no profiles -> one profile "default" with every filter, scorer and picker; one profile
 * and no handler -> a single-profile-handler is added; a profile without a picker gets a
 * max-score-picker (an existing plugin of that type, or one added); a missing weight is 1.
 * Weights are floats (llm-d-router); "3.0" and "3" both load. A profile handler cannot be
 * referenced in a profile; a request-control plugin (a producer, the tokenizer) can, and has
 * no effect there, as in llm-d-router (the scheduler warns).
 *
 * Errors are "file:line:col: field '<path>': <message>" (yamltree positions).
 * Ownership: an epc_config owns its YAML document and every string; plugins built from it
 * may keep pointers into it, so it must outlive every sched built from it. Immutable after
 * load, so any number of threads may build scheds from one config. */
#ifndef KVROUTE_CONFIG_H
#define KVROUTE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "kverr.h"
#include "scheduler.h"
#include "yamltree.h"

#define EPC_API_GIE "inference.networking.x-k8s.io/v1alpha1"
#define EPC_API_LLMD "llm-d.ai/v1alpha1"

typedef struct epc_plugin {
    const char *name;                 /* unique; defaults to type */
    const char *type;                 /* registry name */
    const sched_plugin_type *impl;    /* resolved from the loader's registry */
    const yt_node *params;            /* 'parameters', or NULL */
    const yt_node *node;              /* the plugins[] entry; NULL for a defaulted plugin */
} epc_plugin;

typedef struct epc_ref {
    size_t plugin;                    /* index into epc_config.plugins */
    double weight;                    /* scorers only; 1 when absent */
} epc_ref;

typedef struct epc_profile {
    const char *name;
    epc_ref *refs;                    /* in file order; a defaulted picker comes last */
    size_t n_refs;
} epc_profile;

typedef struct epc_saturation {
    int queue_depth;                  /* queueDepthThreshold, default 5 */
    double kv_util;                   /* kvCacheUtilThreshold, default 0.8 */
    double staleness_s;               /* metricsStalenessThreshold, default 0.2 (200ms) */
} epc_saturation;

typedef struct epc_config {
    const yt_doc *doc;                /* the document the config was read from */
    yt_doc *owned;                    /* == doc when the config owns it, else NULL */
    const char *api_version;          /* "" when the file is only the body */
    epc_plugin *plugins;
    size_t n_plugins;
    epc_profile *profiles;
    size_t n_profiles;
    size_t handler;                   /* index of the one profile handler */
    const char **feature_gates;
    size_t n_feature_gates;
    epc_saturation saturation;
    const yt_node *data;              /* 'data' as written, or NULL */
    const yt_node *data_layer;        /* 'dataLayer' as written (validated), or NULL */
    const char *discovery;            /* dataLayer.discovery.pluginRef (a declared plugin), or NULL */
} epc_config;

/* Plugin types are looked up in registry (sched_registry_find): the drivers pass the
 * policies' table (policies/registry.h), which the engine does not link. */
epc_config *epc_load_file(const char *path, const sched_plugin_type *const *registry, kv_err *err);
/* name is used in messages in place of a file name (e.g. "scenario.yaml:inline"). */
epc_config *epc_load_string(const char *text, size_t len, const char *name, const sched_plugin_type *const *registry,
                            kv_err *err);
/* Loads a map node of an already parsed document (e.g. the inline config of a scenario
 * file). The config borrows doc, which must outlive it. */
epc_config *epc_load_node(const yt_doc *doc, const yt_node *root, const sched_plugin_type *const *registry,
                          kv_err *err);
void epc_free(epc_config *cfg);

/* "<dir>/<name>.yaml" for a preset name such as "llm-d-precise" (dir is the presets
 * folder, e.g. "policies/presets"). Names are [A-Za-z0-9._-]+ and must not start with a
 * dot, so a name can never leave the folder. KV_ENOTFOUND when no such file exists. */
int epc_preset_path(const char *dir, const char *name, char *out, size_t cap, kv_err *err);
epc_config *epc_load_preset(const char *dir, const char *name, const sched_plugin_type *const *registry,
                            kv_err *err);

/* Index of the plugin with that name, or -1. */
int epc_plugin_index(const epc_config *cfg, const char *name);

#endif
