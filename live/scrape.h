/* scrape: polls every endpoint's vLLM /metrics (spec epp.md §5, GIE backend/metrics) and
 * stores what the scheduler reads into the endpoint set.
 *
 * Read from the Prometheus text format (a small line parser: name, {labels}, value):
 *   vllm:num_requests_waiting, vllm:num_requests_running   -> waiting, running
 *   <kv metric> (default vllm:kv_cache_usage_perc; vllm:gpu_cache_usage_perc accepted
 *     when the configured one is absent, as vLLM before v0.10 names it) -> kv_usage
 *   vllm:lora_requests_info{running_lora_adapters,waiting_lora_adapters,max_lora}: the
 *     series with the largest value (vLLM sets it to a timestamp) -> LoRA lists
 *   vllm:cache_config_info{block_size,num_gpu_blocks}      -> block_size, num_gpu_blocks
 * When a gauge has several series (model_name, engine labels), the first one in the
 * response is used, as GIE's extractor does. A response without waiting, running and KV
 * usage is a failed scrape, and so is one where any of them is NaN, infinite or negative.
 * Larger values are clamped: queues to SCRAPE_MAX_REQUESTS (far above any pod's, far
 * below int's range, so sums over a pool cannot overflow), KV usage to 1; so are the
 * counts in labels (max_lora to SCRAPE_MAX_REQUESTS, block size and blocks to 2^32-1).
 *
 * Failures (unreachable, timeout, non-200, unparsable, a bad value) keep the endpoint's last metrics,
 * which turn invalid (sched_metrics.valid = false) 2 s after the last success -- the
 * endpoint set's staleness rule, GIE's: the endpoint stays a candidate and scorers see it
 * as having no metrics.
 *
 * Threads: one scraper thread drives every transfer through one curl multi handle; it
 * follows the endpoint set by generation. scrape_get_stats may be called from any thread.
 * A rejected body is logged (warn, with the parser's message) once per pod until a scrape
 * of that pod succeeds again. */
#ifndef KVROUTE_SCRAPE_H
#define KVROUTE_SCRAPE_H

#include <stddef.h>
#include <stdint.h>

#include "endpoints.h"
#include "kverr.h"
#include "scheduler.h"

#define SCRAPE_MAX_REQUESTS 1000000

/* One parsed /metrics response; owns the LoRA name strings m points at. */
typedef struct scrape_sample {
    sched_metrics m;
    char **names;                 /* running adapters, then waiting ones */
    size_t n_names;
} scrape_sample;
void scrape_sample_free(scrape_sample *s);

/* Parses a /metrics body. KV_EPARSE naming the line for a malformed sample line,
 * KV_ERANGE naming the line, metric and value for a gauge that is NaN, infinite or
 * negative, or KV_ENOTFOUND naming the missing metric; out is then freed. */
int scrape_parse(const char *text, size_t len, const char *kv_metric, scrape_sample *out, kv_err *err);

typedef struct scrape_config {
    epset *endpoints;             /* borrowed */
    int interval_ms;              /* <= 0: 50 */
    int timeout_ms;               /* per request; <= 0: 1000 */
    const char *kv_metric;        /* NULL: vllm:kv_cache_usage_perc; copied */
} scrape_config;

typedef struct scrape_stats {
    uint64_t ok, failed_http, failed_parse, failed_transfer;
    uint64_t failed_value;        /* parsed, but a gauge was NaN, infinite or negative */
} scrape_stats;

typedef struct scraper scraper;

scraper *scrape_start(const scrape_config *cfg, kv_err *err);
void scrape_stop(scraper *s);
void scrape_get_stats(const scraper *s, scrape_stats *out);

#endif
