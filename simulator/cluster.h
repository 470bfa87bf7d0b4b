/* cluster: the discrete-event driver — one router in front of a fresh set of simulated
 * vLLM replicas, replaying the scenario's workload, producing a sim_run (records.h).
 *
 * Events (evq.h) at equal times run in this order: KV events reaching the router's
 * index, metrics scrapes, engine step ends, multi-turn rounds released by the previous
 * round's end, request arrivals, stage starts, requests reaching the end of their request
 * path; within a kind, in the order they were
 * scheduled. Nothing else decides the order, so a run is
 * a pure function of (scenario, workload, seed).
 *
 *   arrival   -> the client sends (the record's start); the router's request path
 *                (reqpath.h: gateway, EPP body and tokenisation, scoring, vLLM's own
 *                tokenisation) takes reqpath_inbound, then
 *   route     -> sched_request (prompt tokens) -> sched_schedule over the endpoints
 *                ("10.0.0.<i+1>:8000", id = replica index) -> sched_pre_request ->
 *                simsrv_submit; an idle server starts a step at once.
 *   step end  -> every token of the step is stamped at the step's end time plus
 *                reqpath_outbound (one SSE event each, when the client reads it), a
 *                time kept once per step in sim_run.servers, of which each record
 *                holds runs (records.h); a finished request gets inference-perf's [DONE] event
 *                CLUSTER_DONE_DELAY_US later, which is also its end time E; then
 *                sched_response_complete. The step's KV-event payload (vLLM msgpack)
 *                reaches the router kv_event_delay later, through kvevents decode and
 *                kvingest into the index of every precise-prefix-cache-scorer (kvsource)
 *                of the router's config, however many it declares
 *                (a router without one gets none: its servers do not publish, which
 *                changes nothing else about them). The next step starts.
 *   scrape    -> each server's waiting/running/KV usage/cache config reaches its
 *                endpoint every scrape_interval; at each decision, metrics older than
 *                metrics_staleness are marked invalid. A sim_server_sample is recorded.
 *   sessions  -> multi-turn (wl_multi_turn): a round whose user is busy waits and is
 *                sent when the previous round ends; its prompt is the user's context
 *                (prompt + response token ids of the previous round) + the question.
 *   stages    -> inference-perf's timing: all requests of a stage are scheduled from the
 *                stage's start + 1 s head start; the harness polls each second until the
 *                stage has drained, then sleeps `interval`, then starts the next stage.
 * Ownership: cluster_run fills a sim_run whose arrays belong to it until
 * cluster_run_free (the records' token times index its servers' step times and token
 * runs). Single-threaded; runs for different routers are independent. */
#ifndef KVROUTE_SIM_CLUSTER_H
#define KVROUTE_SIM_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "kverr.h"
#include "records.h"
#include "scenario.h"
#include "scheduler.h"
#include "workload.h"

#define CLUSTER_DONE_DELAY_US 20     /* [DONE] after the last token: same-read SSE events */

/* Where a run stands, for a progress line. */
typedef struct cluster_progress {
    size_t stage, n_stages;           /* the stage being sent or drained (0-based) */
    double sim_s;                     /* simulated time */
    uint64_t sent;                    /* requests that have arrived at the router */
    uint64_t completed, total;        /* requests finished (or failed) of the run's */
} cluster_progress;

typedef struct cluster_opts {
    /* Called as requests complete, at most ~1,000 times a run (and never more often than
     * every 1/1000 of the requests), so it costs nothing measurable. */
    void (*progress)(void *ctx, const cluster_progress *p);
    void *progress_ctx;
    /* Called for traced decisions (scenario outputs.decisions); trace and result are
     * valid during the call only. */
    int (*decision)(void *ctx, uint64_t request_id, const sched_trace *t, const sched_result *res, kv_err *err);
    void *decision_ctx;
    /* Warnings from building the scheduler (unknown plugin parameters...). */
    void (*warn)(void *ctx, const char *msg);
    void *warn_ctx;
} cluster_opts;

typedef struct cluster_stats {
    uint64_t steps;                   /* engine steps over all servers */
    uint64_t cascade_steps;           /* of which read a common prefix once (cascade_attention) */
    bool kv_published;                /* false: the router has no kvsource, servers publish nothing */
    uint64_t kv_batches;              /* payloads published */
    uint64_t kv_events_delivered;     /* events ingested into a kvsource index */
    uint64_t kv_decode_errors;
    uint64_t failed;                  /* unroutable or unservable requests */
    uint64_t preemptions;
    uint64_t sim_end_us;              /* simulated time at the end */
    uint64_t num_gpu_blocks;          /* per replica, as the servers sized their pools */
    uint32_t max_num_batched_tokens, max_num_seqs;
} cluster_stats;

/* Runs router r of the scenario over the workload. stats may be NULL. */
int cluster_run(const scenario *s, const workload *w, size_t r, const cluster_opts *o, sim_run *out,
                cluster_stats *stats, kv_err *err);
void cluster_run_free(sim_run *run);

/* Bytes one request generating n_output tokens costs a simulation of scenario s, for
 * refusing at load time a scenario the machine cannot hold: what each router's finished
 * run keeps (its record and token times), what one run holds while it runs (server and
 * workload state, the arrival offset, multi-turn links), and a measured residual. The
 * per-request report is written item by item and adds nothing per request. */
uint64_t cluster_request_bytes(const scenario *s, uint32_t n_output);

#endif
