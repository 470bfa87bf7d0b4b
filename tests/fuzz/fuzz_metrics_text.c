/* fuzz_metrics_text: a vLLM /metrics body (Prometheus text) as live/scrape.c parses each
 * scrape (scrape_parse). The first byte picks the KV-usage metric the config names (the
 * default, or the pre-v0.10 name, whose fallback then never applies); the rest is the
 * body. On success the LoRA lists must point into the sample's own names. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scrape.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *kv_metric = data[0] & 1 ? "vllm:gpu_cache_usage_perc" : NULL;
    scrape_sample s;
    kv_err err = {0};
    if (scrape_parse((const char *)data + 1, size - 1, kv_metric, &s, &err) != KV_OK)
        return 0;
    const sched_metrics *m = &s.m;
    if (m->n_running_loras + m->n_waiting_loras != s.n_names)
        abort();
    for (size_t i = 0; i < m->n_running_loras; i++)
        if (m->running_loras[i] != s.names[i] || !*s.names[i])
            abort();
    for (size_t i = 0; i < m->n_waiting_loras; i++)
        if (m->waiting_loras[i] != s.names[m->n_running_loras + i] || !*m->waiting_loras[i])
            abort();
    scrape_sample_free(&s);
    return 0;
}
