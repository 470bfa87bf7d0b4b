/* fuzz_metrics_text: a vLLM /metrics body (Prometheus text) as live/scrape.c parses each
 * scrape (scrape_parse), twice: with the default KV-usage metric and with the pre-v0.10
 * name configured (whose fallback then never applies). On success the LoRA lists must
 * point into the sample's own names, and the gauges must be what the scheduler can use:
 * queues not negative, KV usage in [0, 1]. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scrape.h"

static void parse(const uint8_t *data, size_t size, const char *kv_metric)
{
    scrape_sample s;
    kv_err err = {0};
    if (scrape_parse((const char *)data, size, kv_metric, &s, &err) != KV_OK)
        return;
    const sched_metrics *m = &s.m;
    if (m->waiting < 0 || m->running < 0 || !(m->kv_usage >= 0 && m->kv_usage <= 1))
        abort();
    if (m->n_running_loras + m->n_waiting_loras != s.n_names)
        abort();
    for (size_t i = 0; i < m->n_running_loras; i++)
        if (m->running_loras[i] != s.names[i] || !*s.names[i])
            abort();
    for (size_t i = 0; i < m->n_waiting_loras; i++)
        if (m->waiting_loras[i] != s.names[m->n_running_loras + i] || !*m->waiting_loras[i])
            abort();
    scrape_sample_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse(data, size, NULL);
    parse(data, size, "vllm:gpu_cache_usage_perc");
    return 0;
}
