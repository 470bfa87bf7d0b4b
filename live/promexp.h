/* promexp: ./epp's Prometheus metrics, under the names llm-d users already chart
 * (GIE pkg/epp/metrics, llm-d-kv-cache kvcache/metrics; docs/upstream/epp.md §5), served as
 * text exposition format 0.0.4 on --metrics-port (9090) at /metrics by libmicrohttpd; the
 * same port hands /debug/... to the inspection endpoints (src.debug).
 *
 *   inference_objective_request_total{model_name,target_model_name}          counter
 *   inference_objective_request_error_total{model_name,target_model_name,error_code}
 *   inference_objective_request_duration_seconds{model_name,target_model_name} histogram
 *   inference_extension_scheduler_e2e_duration_seconds                       histogram
 *   inference_extension_scheduler_attempts_total{status}                      counter
 *   inference_extension_plugin_duration_seconds{extension_point,plugin_type,plugin_name}
 *                                                                             histogram (observer)
 *   inference_pool_ready_pods{name}, inference_pool_average_kv_cache_utilization{name},
 *   inference_pool_average_queue_size{name}                                   gauges (epset)
 *   kvcache_index_admissions_total, _evictions_total, _lookup_requests_total,
 *   kvcache_index_size_blocks, _entries, _bytes                               (kvindex)
 *   kvcache_index_lookup_hits_total, _max_pod_hit_count_total,
 *   kvcache_index_lookup_latency_seconds                                      (observer)
 *   kvroute_kv_events_*                                                       (ingest, §1)
 *     With one precise scorer these carry no scorer label, as llm-d-kv-cache's; with
 *     several, every index and every subscription has its own series, labelled
 *     scorer="<plugin name>" (a subscription: the names of the scorers it feeds).
 *   kvroute_metrics_scrapes_total, kvroute_metrics_scrape_failures_total{reason}
 *     (reason: transfer, http, parse, value)                                  (scrape)
 *   kvroute_gateway_requests_total{code}, kvroute_gateway_ttft_seconds,
 *   kvroute_gateway_time_per_output_token_seconds (histograms),
 *   kvroute_gateway_retries_total, _upstream_failures_total, _client_cancels_total,
 *   _timeouts_total, _queue_full_total, _in_flight_requests, _queued_requests,
 *   kvroute_gateway_circuit_breaker_state{endpoint} (0 closed, 1 open, 2 half-open),
 *   kvroute_gateway_circuit_breaker_opens_total                             (gateway)
 *   kvroute_tokenize_requests_total{endpoint}, kvroute_tokenize_failures_total{reason}
 *     (endpoint: render, tokenize; reason: timeout, transport, http_status, bad_reply,
 *     no_endpoint)                                                            (tokenize)
 *   kvroute_score_zero_causes_total{reason}                                   (kvdiag)
 * Plugin durations and the lookup hit metrics come from the scheduler's plugin-call
 * observer (sched_set_observer), which promexp_observe_sched installs.
 *
 * Threads: the observe calls may come from any thread (C11 atomics; a label set seen for
 * the first time takes a short mutex). Scrapes run on libmicrohttpd's thread and read the
 * sources through their own thread-safe getters. Sources (the endpoint set, indexes,
 * ingests and scraper; not the arrays naming them) are borrowed and must outlive the
 * exporter (promexp_stop first). */
#ifndef KVROUTE_PROMEXP_H
#define KVROUTE_PROMEXP_H

#include <stdbool.h>
#include <stdio.h>

#include "endpoints.h"
#include "ingest.h"
#include "kvdiag.h"
#include "kverr.h"
#include "kvindex.h"
#include "scheduler.h"
#include "scrape.h"

/* A request on the metrics port under /debug/ (the inspection endpoints, live/debugapi.h):
 * method, path, body and headers in (valid during the call); status, content type and a
 * malloc'd body out. */
typedef struct promexp_http {
    const char *method, *url;
    const char *body;
    size_t body_len;
    const sched_kv *headers;
    size_t n_headers;
    int status;                   /* out */
    const char *content_type;     /* out: a static string */
    char *out;                    /* out: malloc'd, freed by promexp */
    size_t out_len;
} promexp_http;

#define PROMEXP_MAX_BODY ((size_t)8 << 20)   /* a larger /debug/ body is answered 413 */

typedef struct promexp_sources {
    const char *pool_name;        /* the inference_pool_* name label */
    epset *endpoints;             /* NULL: no pool gauges */
    /* Every precise scorer's source (pps_kvsources): kvcache_index_* for each index; with
     * several, each series is labelled scorer="<the plugin's name>". None: no kvcache_index_*. */
    sched_kvsource *const *kvsources;
    size_t n_kvsources;
    /* Every KV-event subscription (ingest_start_sources): kvroute_kv_events_* for each; with
     * several, each series is labelled scorer="<the names of the plugins it feeds,
     * comma-separated>". None: no kvroute_kv_events_*. */
    ingest *const *ingests;
    size_t n_ingests;
    const scraper *scrape;        /* NULL: no kvroute_metrics_scrape* */
    bool tokenize;                /* kvroute_tokenize_* (live/tokenize.h's process-wide counts) */
    kvdiag *diag;                 /* NULL: no kvroute_score_zero_causes_total */
    /* Serves /debug/... (NULL: 404); runs on libmicrohttpd's thread. */
    void (*debug)(void *ctx, promexp_http *h);
    void *debug_ctx;
} promexp_sources;

typedef struct promexp promexp;

/* Creates the metric set; with port >= 0 also serves it (0 picks a free port); port < 0
 * serves nothing (promexp_write still renders). KV_EIO naming the port when it cannot
 * listen. */
promexp *promexp_start(int port, const promexp_sources *src, kv_err *err);
int promexp_port(const promexp *p);
void promexp_stop(promexp *p);

/* One finished request: http_status 200 counts as success, anything else also counts as
 * an error with GIE's error code for the status. target_model NULL = model. */
void promexp_observe_request(promexp *p, const char *model, const char *target_model, int http_status,
                             double seconds);
/* One scheduling call (sched_schedule alone) and whether it produced a target. */
void promexp_observe_schedule(promexp *p, double seconds, bool ok);

/* Installs p as s's plugin-call observer: every plugin call's duration goes into
 * inference_extension_plugin_duration_seconds, and each precise-prefix-cache-scorer call
 * that looked the index up (the request had at least one block) into
 * kvcache_index_lookup_latency_seconds, its longest candidate match (blocks) into
 * kvcache_index_lookup_hits_total and _max_pod_hit_count_total, as llm-d-kv-cache counts
 * them. Call once, before scheduling starts; s must outlive p (its plugin names are
 * borrowed). The observe path allocates nothing and takes no lock. */
int promexp_observe_sched(promexp *p, sched *s, kv_err *err);

/* One answer of the gateway (live/gateway.h): its status, and the time to first token
 * and per output token as the gateway saw them (< 0: not measured). NULL p: no-op. */
void promexp_observe_gateway(promexp *p, int http_status, double ttft_s, double tpot_s);
/* The gateway whose counters, gauges and breakers each scrape renders; NULL before the
 * gateway stops (a scrape in progress is waited for). */
struct gateway;
void promexp_set_gateway(promexp *p, struct gateway *gw);

/* Renders the whole exposition into f (what GET /metrics returns). */
void promexp_write(promexp *p, FILE *f);

/* GIE's error_code label for an ImmediateResponse status (400 -> "BadRequest", ...). */
const char *promexp_error_code(int http_status);

#endif
