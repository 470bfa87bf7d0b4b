/* report: the files a real benchmark leaves behind, one set per router directory:
 * inference-perf's stage_N_lifecycle_metrics.json, summary_lifecycle_metrics.json and
 * per_request_lifecycle_metrics.json, and llm-d-benchmark's report v0.1 per stage,
 * "benchmark_report,_stage_N_lifecycle_metrics.json.yaml" (docs/sim-outputs.md),
 * and config.yaml (the workload config, when given).
 * Byte-identical for the same run: no wall-clock, no host names, Python float repr.
 * Ownership: reads the run and its metrics; returned json_t trees belong to the caller
 * (json_decref). */
#ifndef KVROUTE_SIM_REPORT_H
#define KVROUTE_SIM_REPORT_H

#include <jansson.h>
#include <stdbool.h>

#include "kverr.h"
#include "lifecycle.h"
#include "records.h"
#include "yamltree.h"

typedef struct report_opts {
    bool per_request;                 /* write per_request_lifecycle_metrics.json (default on) */
    bool token_times;                 /* include each request's output_token_times (big; off) */
    bool benchmark_report;            /* write the v0.1 YAML per stage (default on) */
    const char *model_name;           /* scenario.model.name and the request payload's model */
    const char *description;          /* scenario.description (NULL = omitted) */
    /* scenario.load.args: the workload config (inference-perf's config.yaml), as a YAML
     * subtree; NULL = omitted. Scalars are typed like yaml.safe_load would type them. */
    const yt_node *load_args;
} report_opts;

/* per_request on, token_times off, benchmark_report on, model "unknown". */
void report_opts_default(report_opts *o);

/* Writes every file for one router into dir (created if missing). */
int report_write_router(const sim_run *run, const lc_run *m, const char *dir, const report_opts *o, kv_err *err);

/* The trees behind the files, for tests and other writers. */
json_t *report_lifecycle_json(const lc_metrics *m);            /* stage (m->stage >= 0) or summary */
json_t *report_per_request_json(const sim_run *run, const report_opts *o);
json_t *report_benchmark_v01(const lc_metrics *m, const report_opts *o);
/* A YAML subtree as yaml.safe_load would give it (null, bool, int, float, str). */
json_t *report_yaml_to_json(const yt_node *n);

#endif
