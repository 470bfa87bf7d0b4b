/* decisionlog: ./epp --decision-log FILE, live routing decisions in SQLite with the
 * simulator's schema (runs + decisions tables, as simulator/simdb.c creates them and
 * docs/sim-outputs.md documents), so the same queries compare live and simulated
 * decisions. One runs row per daemon start (scenario "live", router "epp", config = the
 * config file, seed = the scheduler's seed); each decision adds a row per (profile,
 * scorer, endpoint) score and one "total" row per candidate, picked = 1 for the endpoint
 * routed to. request_id is the decision's sequence number in this run (the live
 * x-request-id is not an integer); endpoint is sched_endpoint.id.
 *
 * The decisions schema has no room for what only live requests carry, so a third table,
 * live_requests, holds one row per decision under the same (run_id, request_id): the
 * x-request-id, model and target model (after x-gateway-model-name-rewrite), the
 * InferenceObjective named by x-gateway-inference-objective and its priority, the
 * x-gateway-inference-fairness-id, the outcome ("routed", "failed": the scheduler found
 * nothing, "shed": sheddable while saturated, nothing scheduled) and the target.
 *
 * Rows are committed every 256 decisions and at close, so a crash loses at most that
 * many. Threads: calls are serialised by an internal mutex. */
#ifndef KVROUTE_DECISIONLOG_H
#define KVROUTE_DECISIONLOG_H

#include <stdint.h>

#include "route.h"
#include "kverr.h"

typedef struct decisionlog decisionlog;

/* Creates or appends to path; KV_EIO naming the file on failure. */
decisionlog *decisionlog_open(const char *path, const char *config, uint64_t seed, kv_err *err);
/* One decision as live/route.h reports it (its trace when traced, else only live_requests). */
int decisionlog_add(decisionlog *d, const route_decision *dec, kv_err *err);
void decisionlog_close(decisionlog *d);

#endif
