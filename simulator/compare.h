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

#include <stdio.h>

#include "kverr.h"
#include "scenario.h"

/* Prints the table to f. Returns KV_OK when every router had both runs, KV_ENOTFOUND when
 * one lacked a side (its cells print "-" and a line says which), another code when
 * the database cannot be read. */
int compare_print(FILE *f, const scenario *s, const char *db_path, kv_err *err);

#endif
