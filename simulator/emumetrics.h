/* emumetrics: the emulated pods' /metrics (./sim serve) in vLLM's exposition: the
 * `vllm:` series a router scrapes (num_requests_waiting, num_requests_running,
 * kv_cache_usage_perc, cache_config_info, lora_requests_info) and the ones dashboards
 * chart (prefix-cache queries and hits, prompt and generation tokens, request success,
 * preemptions, TTFT / inter-token / end-to-end / queue-time histograms), with vLLM's
 * names, labels (model_name, engine) and bucket bounds (vllm/v1/metrics/loggers.py).
 *
 * A pod records into its emumet_pod; emumet_render writes the text. Times are the
 * wall-clock seconds a client sees. Single-threaded (the serve event loop). */
#ifndef KVROUTE_SIM_EMUMETRICS_H
#define KVROUTE_SIM_EMUMETRICS_H

#include <stddef.h>
#include <stdint.h>

#define EMUMET_MAX_BUCKETS 24

typedef enum emumet_hist_id {
    EMUMET_TTFT = 0,          /* vllm:time_to_first_token_seconds */
    EMUMET_ITL,               /* vllm:inter_token_latency_seconds */
    EMUMET_E2E,               /* vllm:e2e_request_latency_seconds */
    EMUMET_QUEUE,             /* vllm:request_queue_time_seconds */
    EMUMET_N_HIST
} emumet_hist_id;

typedef struct emumet_hist {
    uint64_t counts[EMUMET_MAX_BUCKETS];   /* per bucket (not cumulative); last = +Inf */
    uint64_t count;
    double sum;
} emumet_hist;

/* What a pod counts itself (the engine's own counters come in emumet_view). */
typedef struct emumet_pod {
    emumet_hist h[EMUMET_N_HIST];
    uint64_t prompt_tokens, generation_tokens;
    uint64_t requests_ok;                  /* vllm:request_success_total{finished_reason="length"} */
} emumet_pod;

void emumet_observe(emumet_pod *m, emumet_hist_id h, double seconds);

/* The engine's state at render time. */
typedef struct emumet_view {
    const char *model_name;                /* the served model name (label model_name) */
    int running, waiting;
    double kv_usage;                       /* 0..1 */
    uint32_t block_size;
    uint64_t num_gpu_blocks;
    uint64_t prefix_queries, prefix_hits;  /* tokens */
    uint64_t preemptions;
} emumet_view;

/* The exposition text (malloc'd, NUL-terminated; *len its length), NULL when out of memory. */
char *emumet_render(const emumet_pod *m, const emumet_view *v, size_t *len);

#endif
