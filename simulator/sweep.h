/* sweep: a scenario's questions beyond one run — a grid of points, and a capacity plan.
 *
 *   slo: {ttft_p90: 1s, itl_p90: 80ms}            # slo.h; a plan needs one
 *   sweep:
 *     routers: [k8s-service, llm-d-precise]        # default: every router of the scenario
 *     replicas: [4, 8]                             # default: cluster.replicas
 *     rates: [10, 20, 40]                          # the measured stage's rate (default: as written)
 *     weights: {plugin: precise-prefix-cache-scorer, values: [1, 2, 4]}   # that scorer's weight
 *   plan:
 *     rate: 60                  # Q1: the fewest replicas per router meeting slo: at this rate
 *                               #     (default: the measured stage's rate)
 *     max_replicas: 16          #     searched in 1..max_replicas (default 4 x cluster.replicas)
 *     rates: {min: 5, max: 100, step: 5}   # Q2: the highest rate per router within slo:, on
 *     replicas: [8]             #     this grid, at each of these replica counts (default the cluster's)
 *
 * The measured stage is outputs.report_stage (default the last); a rate replaces that
 * stage's rate and request count (poisson or constant load). Each point runs in its own
 * process (pointrun.h), across the cores. The grid runs every point; the plan searches:
 * it bisects, taking latency to rise with rate and fall with replicas, so it runs about
 * log2 of the range per answer instead of the whole grid.
 *
 * Output: a table on stdout; DIR/sweep.csv (every point at full precision),
 * DIR/plan.txt (the plan's answer as printed), DIR/charts/sweep.dat and the chart
 * sweep.png (plots/sweep.gp: TTFT p90 and output throughput against rate, one line per
 * router, replicas and weight).
 * Ownership: a spec points into the scenario's YAML strings and lives with the scenario.
 * Main thread only. */
#ifndef KVROUTE_SIM_SWEEP_H
#define KVROUTE_SIM_SWEEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kverr.h"
#include "pointrun.h"
#include "slo.h"
#include "yamltree.h"

struct scenario;

typedef struct sweep_spec {
    bool on;
    const char **routers;             /* names; NULL: every router */
    size_t n_routers;
    uint32_t *replicas;               /* NULL: the cluster's */
    size_t n_replicas;
    double *rates;                    /* NULL: the stage's own */
    size_t n_rates;
    const char *weight_plugin;        /* NULL: no weight axis */
    double *weights;
    size_t n_weights;
} sweep_spec;

typedef struct plan_spec {
    bool on;
    double rate;                      /* Q1's rate; 0: the measured stage's */
    uint32_t max_replicas;
    double rate_min, rate_max, rate_step;   /* Q2's grid */
    uint32_t *replicas;               /* Q2's replica counts; NULL: the cluster's */
    size_t n_replicas;
} plan_spec;

/* Parses sweep: and plan: (either may be NULL or null). The scenario's routers, cluster,
 * workload, outputs and slo must be parsed already. */
int sweep_parse(const yt_doc *d, const yt_node *sweep, const yt_node *plan, struct scenario *s, kv_err *err);
void sweep_spec_free(sweep_spec *sw, plan_spec *pl);

/* The grid: every (router, replicas, weight, rate) of sw, routers in scenario order. */
typedef struct sweep_grid {
    pr_point *points;
    size_t n;
} sweep_grid;
int sweep_grid_build(const struct scenario *s, sweep_grid *g, kv_err *err);
void sweep_grid_free(sweep_grid *g);

/* The plan's answers, per router (scenario order), per Q2 replica count. */
typedef struct plan_answer {
    const char *router;
    uint32_t fewest_replicas;         /* 0: none up to max_replicas */
    size_t q1_points;                 /* points the search ran */
    double *best_rate;                /* per plan replica count: highest rate within the SLO; 0: none */
    bool *best_rate_capped;           /* the grid's top passed: the real limit is higher */
    size_t q2_points;
} plan_answer;

typedef struct plan_result {
    plan_answer *a;
    size_t n;
    uint32_t *replicas;               /* Q2's replica counts (n_replicas) */
    size_t n_replicas;
    double rate;                      /* Q1's rate */
} plan_result;

int plan_run(const struct scenario *s, unsigned jobs, plan_result *out, kv_err *err);
void plan_result_free(plan_result *r);

/* ./sim's part: runs the sweep and/or the plan, prints to out, writes DIR/sweep.csv,
 * DIR/plan.txt and the chart (run_gnuplot false: its data only; svg_dir: also as
 * svg_dir/sweep.svg). */
int sweep_main(const struct scenario *s, const char *dir, unsigned jobs, bool run_gnuplot, const char *svg_dir,
               FILE *out, kv_err *err);

#endif
