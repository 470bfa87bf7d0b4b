/* simdb: the simulator's SQLite database (DIR/runs.db), one row per run, stage, request,
 * scheduling score and server sample, so runs can be compared with SQL after the fact.
 * Schema and example queries: docs/sim-outputs.md.
 *
 * Deterministic: no wall-clock goes in (runs.created is whatever the caller passes,
 * NULL by default), rows go in in a fixed order inside one transaction per run, so the
 * same scenario and seed give the same database bytes.
 * Threads: one simdb per thread. Ownership: the simdb copies what it stores. */
#ifndef KVROUTE_SIM_SIMDB_H
#define KVROUTE_SIM_SIMDB_H

#include <stdbool.h>
#include <stdint.h>

#include "kverr.h"
#include "lifecycle.h"
#include "records.h"
#include "scheduler.h"

typedef struct simdb simdb;

typedef struct simdb_run_info {
    const char *scenario;             /* scenario name */
    const char *router;               /* router name */
    const char *config;               /* EndpointPickerConfig path or preset name */
    uint64_t seed;
    const char *created;              /* free text, NULL = NULL (keep it deterministic) */
} simdb_run_info;

/* Creates path afresh (an existing file is replaced) with the schema and indexes; the
 * requests_by_endpoint index is built when the first run ends (simdb_end_run), from its
 * rows, so a database that never ends a run has no rows it would index. */
simdb *simdb_open(const char *path, kv_err *err);
/* Opens path to add runs beside those it holds (a live run next to simulated ones);
 * creates it with the schema when it does not exist. */
simdb *simdb_open_append(const char *path, kv_err *err);
/* Commits nothing left open (a run without simdb_end_run is rolled back). */
void simdb_close(simdb *db);

/* Opens a run: inserts its runs row and starts its transaction. One run at a time. */
int simdb_begin_run(simdb *db, const simdb_run_info *info, int64_t *run_id, kv_err *err);
/* One scheduling decision: a decisions row per (profile, scorer, endpoint) score in the
 * trace, plus one row per primary candidate with plugin "total" (weight NULL);
 * picked = 1 for the endpoint routed to (res->targets[0]). Endpoints are stored by
 * sched_endpoint.id, which the simulator sets to the replica index. */
int simdb_add_decision(simdb *db, int64_t run_id, uint64_t request_id, const sched_trace *t,
                       const sched_result *res, kv_err *err);
/* One pod behind a live run's target (./sim --target-pods): the increase of its prefix-cache
 * counters over the run as its /metrics showed them (counters_ok false: not read), and the
 * requests it served (requests.endpoint: named by x-gateway-destination-endpoint, or the
 * target itself). A row of table
 * live_pods, which the first such row creates (a simulation's runs.db has none). */
typedef struct simdb_live_pod {
    int pod;                          /* index in --target-pods (requests.endpoint) */
    const char *address;              /* host:port */
    bool counters_ok;
    double prefix_cache_queries, prefix_cache_hits;   /* tokens */
    uint64_t routed;
} simdb_live_pod;
/* Inside the run (between simdb_begin_run and simdb_end_run). */
int simdb_add_live_pod(simdb *db, int64_t run_id, const simdb_live_pod *p, kv_err *err);

/* Stages (with the headline metrics), requests and server samples; commits the run. */
int simdb_end_run(simdb *db, int64_t run_id, const sim_run *run, const lc_run *m, kv_err *err);

/* One stage of a run as runs.db holds it (report.html's "simulated and measured"). */
typedef struct simdb_stage_row {
    int64_t run_id;
    const char *router, *config;      /* valid during the callback only */
    int stage;
    double rate, achieved_rate, output_tokens_per_sec, ttft_mean, ttft_p90, itl_mean, latency_p90;
    int64_t count, failures;
    double hit_rate;                  /* cached / input tokens; NaN when none */
} simdb_stage_row;

/* Calls fn for every stage of every run the database holds, by run then stage. */
int simdb_each_stage(simdb *db, void (*fn)(void *ctx, const simdb_stage_row *row), void *ctx, kv_err *err);

#endif
