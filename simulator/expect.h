/* expect: a scenario's `expect:` section — what must hold after the run, so that a
 * policy change that makes things worse fails CI with a readable message.
 *
 *   expect:
 *     tolerance: 5%                  # --baseline: how much worse a metric may get (default 5%)
 *     checks:
 *       - router: llm-d-precise
 *         stage: 1                   # default: the last stage; -1 also means the last
 *         tolerance: 10%             # this group's --baseline tolerance
 *         that:
 *           - ttft_p90 < 1s
 *           - failed == 0
 *           - output_tokens_per_sec >= 1.8 * k8s-service.output_tokens_per_sec
 *
 * A check is METRIC OP BOUND, OP one of < <= > >= ==; BOUND a number (durations take
 * ns/us/ms/s/m/h, ratios take %), or [FACTOR *] ROUTER.METRIC for the same stage of
 * another router of the run. Metrics are the stage figures runs.db keeps
 * (docs/policy-regression.md lists them).
 * With a baseline runs.db, every metric a check names on its left is also held to be no
 * worse than the baseline's same router and stage by more than the tolerance (without
 * checks: ttft_p90, output_tokens_per_sec and failed of every router's last stage).
 *
 * Results are PASS, FAIL or SKIP (a router left out with --router, or missing from the
 * baseline). Ownership: an exp_set points into its YAML document's strings and lives as
 * long as the scenario that owns both; an exp_report owns its results. Single-threaded. */
#ifndef KVROUTE_SIM_EXPECT_H
#define KVROUTE_SIM_EXPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "kverr.h"
#include "lifecycle.h"
#include "yamltree.h"

typedef enum { EXP_LT, EXP_LE, EXP_GT, EXP_GE, EXP_EQ } exp_op;

typedef struct exp_check {
    const char *text;                 /* as written, for messages and the JUnit name */
    const char *router;
    int stage;                        /* -1 = the router's last stage */
    int metric;                       /* index into expect.c's metric table */
    exp_op op;
    double bound;                     /* the bound, or the factor when ref_router is set */
    const char *ref_router;           /* NULL: an absolute bound */
    int ref_metric;
    double tolerance;                 /* --baseline: allowed worsening, a fraction */
} exp_check;

typedef struct exp_set {
    exp_check *checks;
    size_t n;
    double tolerance;                 /* the section's default */
} exp_set;

typedef enum { EXP_PASS, EXP_FAIL, EXP_SKIP } exp_status;

typedef struct exp_result {
    char *router;                     /* the JUnit classname's tail */
    char *name;                       /* "stage 1: ttft_p90 < 1s" */
    char *detail;                     /* "0.412 s (bound 1 s, margin 0.588 s)" or why skipped */
    exp_status status;
} exp_result;

typedef struct exp_report {
    exp_result *r;
    size_t n, n_failed, n_skipped;
} exp_report;

/* The metric table, shared with the sections that name metrics (slo:). */
int exp_metric_find(const char *name, size_t len);           /* -1 when unknown */
const char *exp_metric_name(int metric);
bool exp_metric_higher_better(int metric);
/* The metric's value in one stage's figures; NaN when there is nothing to measure. */
double exp_metric_value(int metric, const lc_metrics *m);
/* A bound in the metric's unit: durations as yt_duration reads them, ratios with an
 * optional %, the rest plain numbers. */
bool exp_metric_parse(const char *text, int metric, double *out);
/* "0.412 s", "12345.6/s"-style text of a value in its metric's unit. */
void exp_metric_format(char *buf, size_t cap, int metric, double v);

/* Parses an expect: node (NULL or null: an empty set). routers are the scenario's
 * router names, n_stages its workload's; an unknown router, metric or stage is an error
 * "file:line:col: field 'expect.checks[i].that[j]': ...". */
int exp_parse(const yt_doc *d, const yt_node *n, const char *const *routers, size_t n_routers, size_t n_stages,
              exp_set *out, kv_err *err);
void exp_set_free(exp_set *e);

/* Evaluates every check against the routers that ran (names[i] with metrics m[i]).
 * A report starts zeroed; exp_eval and exp_baseline append to it. */
int exp_eval(const exp_set *e, const char *const *names, const lc_run *m, size_t n, exp_report *rep,
             kv_err *err);
/* Adds the baseline checks against a runs.db written by an earlier ./sim. */
int exp_baseline(const exp_set *e, const char *db_path, const char *const *names, const lc_run *m, size_t n,
                 exp_report *rep, kv_err *err);
void exp_report_free(exp_report *rep);

/* "PASS  router stage 1: ttft_p90 < 1s: 0.412 s (bound 1 s, margin 0.588 s)", one a line. */
void exp_print(FILE *f, const exp_report *rep);
/* JUnit XML: one testsuite named after the scenario, one testcase per result. */
int exp_write_junit(const char *path, const char *suite, const exp_report *rep, kv_err *err);

/* What ./sim does after a run: evaluate, compare with the baseline (NULL: none), print
 * the results to out and write the JUnit file (NULL: none). *failed = how many failed. */
int exp_check_run(const exp_set *e, const char *baseline, const char *junit, const char *suite,
                  const char *const *names, const lc_run *m, size_t n, FILE *out, size_t *failed, kv_err *err);

#endif
