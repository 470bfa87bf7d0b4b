/* liverun: a scenario's workload sent in real time to a live OpenAI-compatible endpoint
 * (./sim SCENARIO --target URL): a ./sim serve pod, ./epp's HTTP front door or a real
 * vLLM. The same prompts (token ids from the seeded workload), arrival times and stage
 * timing as a simulation, streamed POST /v1/completions with ignore_eos and
 * stream_options.include_usage, measured as inference-perf does: t_start before the
 * POST, one timestamp per content chunk and one for [DONE], output tokens from the
 * usage chunk, E when the stream has ended. The result is a sim_run (records.h), so the
 * simulator's report, runs.db and chart writers take it unchanged.
 * The target comes from --target URL or from the workload's inference-perf `server:`
 * section (type vllm|sglang|tgi, base_url, model_name, ignore_eos, api_key).
 * The pods behind it (--target-pods, optional) are read, not loaded: their /metrics
 * prefix-cache counters before the first request and after the last (the run's
 * measured hit rate, the pods' own), and each request's endpoint is the pod its
 * response's x-gateway-destination-endpoint names (the target itself when it is one of
 * them and sends no such header; -1 when unknown).
 * Threads: one; live_run runs one libevent loop (HTTP client, arrival and timeout
 * timers) on the calling thread. Only this module reads a wall clock.
 * Ownership: a live_target owns its strings (live_target_free); live_run fills a sim_run
 * whose arrays (and each record's token_times) belong to it until live_run_free. */
#ifndef KVROUTE_SIM_LIVERUN_H
#define KVROUTE_SIM_LIVERUN_H

#include <stdbool.h>
#include <stdint.h>

#include "kverr.h"
#include "records.h"
#include "simdb.h"
#include "scenario.h"
#include "workload.h"

typedef struct live_target {
    char *url;                        /* base URL as given, e.g. http://127.0.0.1:8000 */
    char *host;
    int port;
    char *path;                       /* the completions path: base path + /v1/completions */
    char *label;                      /* router name in the outputs (default host:port) */
    char *model;                      /* the request's "model" */
    char *api_key;                    /* Bearer token, NULL = none */
    bool ignore_eos;
    char **pods;                      /* host:port of each pod behind the target (--target-pods) */
    size_t n_pods;
} live_target;

/* The target: url (NULL = the workload's server.base_url), label (NULL = host:port),
 * pods (NULL = none: a comma-separated list of http://host:port or host:port).
 * The model is server.model_name, else the cluster model's HF name. Errors name the
 * scenario's file, line and field, or the flag. */
int live_target_resolve(const scenario *s, const char *url, const char *label, const char *pods, live_target *t,
                        kv_err *err);
void live_target_free(live_target *t);

/* Why a request failed (inference-perf: any non-200 or exception). */
typedef enum {
    LIVE_FAIL_CONNECT = 0,            /* no response: connection refused, reset or closed before the status line */
    LIVE_FAIL_STATUS,                 /* an HTTP status other than 200 */
    LIVE_FAIL_TIMEOUT,                /* no end of stream within the request timeout */
    LIVE_FAIL_STREAM,                 /* 200 but the SSE stream was malformed or ended before [DONE] */
    LIVE_FAIL_N
} live_fail;

const char *live_fail_name(live_fail f);

typedef struct live_opts {
    double timeout_s;                 /* per request, from the POST to the end of the stream */
    bool progress;                    /* a line per stage on stderr */
} live_opts;

typedef struct live_stats {
    uint64_t sent, completed, failed;
    uint64_t failed_by[LIVE_FAIL_N];
    simdb_live_pod *pods;             /* one per target pod: counter increases, requests routed */
    size_t n_pods;
} live_stats;
void live_stats_free(live_stats *st);

/* Sends the workload to the target; every request gets a record (failed ones flagged).
 * Returns an error only when the run itself cannot proceed (memory, the event loop),
 * never for what the target answers. */
int live_run(const scenario *s, const workload *w, const live_target *t, const live_opts *o, sim_run *out,
             live_stats *st, kv_err *err);
void live_run_free(sim_run *run);

#endif
