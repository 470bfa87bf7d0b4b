/* scenario: one simulator experiment as a YAML file — the cluster, the routers to
 * compare, the inference-perf workload, the seed and what to write.
 *
 *   name: rate60                     # default: the file name without .yaml
 *   seed: 42
 *   cluster: {replicas: 8, model: qwen3-32b, hardware: h100-sxm, tp: 2, block_size: 64,
 *             # model and hardware: profiles (models/NAME.yaml, hardware/NAME.yaml) or a
 *             # file path ending .yaml, relative to the scenario's folder
 *             num_gpu_blocks: 18000,  # optional, as vLLM logs it; else from memory
 *             gpu_memory_utilization: 0.9, max_num_batched_tokens, max_num_seqs,
 *             long_prefill_token_threshold, max_model_len, prefix_caching: true,
 *             cascade_attention: false,
 *             kv_event_delay: 5ms, scrape_interval: 50ms, metrics_staleness: 2s,
 *             speedup: 1}                   # step times / speedup (sim serve --speedup)
 *   routers:
 *     - {name: k8s, preset: k8s-service}            # policies/presets/<preset>.yaml
 *     - {name: mine, config: my-epp.yaml}           # relative to the scenario's folder
 *     - {name: inline, config: {plugins: [...], schedulingProfiles: [...]}}
 *       request_path: {hop, gateway, scoring, body_per_token, tokenize_per_token,
 *                      server_tokenize_per_token}   # optional overrides (reqpath.h)
 *   workload: {data: ..., load: ...}                # inference-perf's sections (workload.h)
 *   outputs: {report_stage: -1, per_request: true, token_times: false, plots: true,
 *             decisions: none | all | {sample: N}}
 *   expect: {tolerance: 5%, checks: [{router, stage, tolerance, that: [...]}]}   # expect.h
 *   slo: {ttft_p90: 1s, itl_p90: 80ms}                                          # slo.h
 *   sweep: {...}  plan: {...}       # a grid of points, a capacity plan (sweep.h)
 *
 * Every error is "file:line:col: field 'a.b': ...", unknown keys included. Notes about
 * accepted-but-ignored input are collected for the console.
 * Ownership: a scenario owns its YAML document, strings, configs and notes. */
#ifndef KVROUTE_SIM_SCENARIO_H
#define KVROUTE_SIM_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "expect.h"
#include "kverr.h"
#include "records.h"
#include "reqpath.h"
#include "slo.h"
#include "stepmodel.h"
#include "sweep.h"
#include "workload.h"
#include "yamltree.h"

typedef struct scn_cluster {
    uint32_t replicas;
    const sm_model *model;
    const sm_hardware *hw;
    int tp;
    uint32_t block_size;
    uint64_t num_gpu_blocks;               /* 0 = derive from memory */
    double gpu_memory_utilization;
    uint32_t max_num_batched_tokens;       /* 0 = vLLM default for the hardware */
    uint32_t max_num_seqs;
    uint32_t long_prefill_token_threshold;
    uint32_t max_model_len;
    bool prefix_caching;
    bool cascade_attention;                /* opt-in: vLLM's shared-prefix attention (server.h) */
    sim_time kv_event_delay;               /* publish -> in the router's index */
    sim_time scrape_interval;              /* metrics reach the router this often */
    sim_time metrics_staleness;            /* older metrics are marked invalid */
    double speedup;                        /* step times divided by this (1): the pods of ./sim serve
                                            * --speedup X simulated on their wall clock, in which the
                                            * scenario's other times (load, delays) are then read */
} scn_cluster;

typedef struct scn_router {
    const char *name;                      /* unique, [A-Za-z0-9._-]+ (a directory name) */
    char *source;                          /* "preset:<name>", the config path, or "inline" */
    epc_config *cfg;
    reqpath path;                          /* defaults by config, request_path overrides */
} scn_router;

typedef enum { SCN_DECISIONS_NONE = 0, SCN_DECISIONS_ALL, SCN_DECISIONS_SAMPLE } scn_decisions;

typedef struct scn_outputs {
    int report_stage;                      /* stage the console table shows; -1 = last */
    bool per_request;                      /* per_request_lifecycle_metrics.json */
    bool token_times;                      /* include output_token_times in it */
    bool plots;
    scn_decisions decisions;
    uint32_t decisions_every;              /* SAMPLE: every Nth request */
} scn_outputs;

typedef struct scenario {
    yt_doc *doc;
    sm_model *model;                       /* cluster.model and cluster.hw point here */
    sm_hardware *hw;
    char *path, *dir;                      /* the file and its folder */
    char *name;
    uint64_t seed;
    scn_cluster cluster;
    scn_router *routers;
    size_t n_routers;
    wl_spec workload;
    const yt_node *workload_node;          /* as written (the reports' load.args) */
    scn_outputs outputs;
    exp_set expect;                        /* empty when the scenario has none */
    slo slo;                               /* slo: (n = 0 when absent) */
    sweep_spec sweep;                      /* sweep: and plan: (on = false when absent) */
    plan_spec plan;
    char **notes;
    size_t n_notes;
} scenario;

/* Where a scenario's names are looked up. cluster.model and cluster.hardware: the
 * scenario's own models/ and hardware/ folders first, then --models and --hardware
 * (NULL when not given), then the tree's (profiles.h). */
typedef struct scn_dirs {
    const char *presets;                   /* policies/presets */
    const char *user_models, *user_hardware;
    const char *models, *hardware;         /* the tree's models/ and hardware/ */
} scn_dirs;

/* Whether s can name a file or folder: [A-Za-z0-9._-]+, not starting with '.'. */
bool scn_name_ok(const char *s);

/* Loads and validates a scenario. */
scenario *scn_load_in(const char *path, const scn_dirs *dirs, kv_err *err);
/* The same with the repository's layout under the current directory: presets_dir
 * (e.g. "policies/presets"), models/ and hardware/ (tests and tools). */
scenario *scn_load(const char *path, const char *presets_dir, kv_err *err);
void scn_free(scenario *s);

#endif
