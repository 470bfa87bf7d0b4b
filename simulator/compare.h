/* compare: the sim-versus-live table (`./sim compare SCENARIO [--out DIR]`, printed by
 * `make demo-live`). Per router of the scenario, its latest simulated run and its latest
 * live run (`./sim SCENARIO --target URL --target-label <router>-live` or `<router>`: the
 * run whose config is the http:// URL; `-live` keeps its report folder apart from the
 * simulated one's) in DIR/runs.db, side by side: requests/s, output tokens/s, TTFT
 * mean and p90 and end-to-end latency of the scenario's report stage, and the
 * prefix-cache hit rate of the whole run (simulated: the requests' cached / prompt
 * tokens; measured: the pods' own counters, table live_pods, written with
 * --target-pods), with the difference measured - simulated. Both runs use the
 * scenario's time base: with cluster.speedup X, wall seconds of pods X times faster
 * than the model, which the table's header says.
 * Threads: one; reads the database only. */
#ifndef KVROUTE_SIM_COMPARE_H
#define KVROUTE_SIM_COMPARE_H

#include <stdbool.h>
#include <stdio.h>

#include "kverr.h"
#include "scenario.h"

/* The table's figures, in its row order. */
enum { COMPARE_RPS, COMPARE_OUT_TPS, COMPARE_TTFT, COMPARE_TTFT_P90, COMPARE_E2E, COMPARE_HIT, COMPARE_N };

/* One side (simulated or live) of one router. */
typedef struct compare_side {
    bool found;                       /* the run exists */
    double v[COMPARE_N];              /* NaN: not known; COMPARE_HIT in percent */
    int stage;                        /* the report stage found (-1: none) */
    double rate, duration;            /* its configured rate and duration */
} compare_side;

/* Reads both sides of every router of s (sim[r], live[r] for s->routers[r]). KV_OK, or
 * KV_EIO when the database cannot be read. */
int compare_read(const scenario *s, const char *db_path, compare_side *sim, compare_side *live, kv_err *err);

/* Prints the table to f. Returns KV_OK when every router had both runs, KV_ENOTFOUND when
 * one lacked a side (its cells print "-" and a line says which), another code when
 * the database cannot be read. */
int compare_print(FILE *f, const scenario *s, const char *db_path, kv_err *err);

#endif
