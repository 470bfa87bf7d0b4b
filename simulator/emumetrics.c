/* emumetrics: vLLM's metric catalogue and Prometheus text for an emulated pod (see
 * emumetrics.h). Bucket bounds are vLLM v1's (vllm/v1/metrics/loggers.py). */
#include "emumetrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct hist_def {
    const char *name, *help;
    const double *bounds;
    size_t n;                 /* finite bounds; +Inf is the bucket after them */
} hist_def;

static const double ttft_b[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double itl_b[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                               0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double req_b[] = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,   5.0,   10.0,  15.0, 20.0,
                               30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
#define N(a) (sizeof a / sizeof *a)
static const hist_def hists[EMUMET_N_HIST] = {
    [EMUMET_TTFT] = {"vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttft_b,
                     N(ttft_b)},
    [EMUMET_ITL] = {"vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", itl_b,
                    N(itl_b)},
    [EMUMET_E2E] = {"vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", req_b,
                    N(req_b)},
    [EMUMET_QUEUE] = {"vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
                      req_b, N(req_b)},
};

void emumet_observe(emumet_pod *m, emumet_hist_id h, double seconds)
{
    const hist_def *d = &hists[h];
    size_t b = 0;
    while (b < d->n && seconds > d->bounds[b]) b++;
    m->h[h].counts[b]++;
    m->h[h].count++;
    m->h[h].sum += seconds;
}

typedef struct out {
    char *s;
    size_t len, cap;
    int oom;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !o->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(o->s + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < o->cap - o->len) {
            o->len += (size_t)k;
            return;
        }
        size_t cap = (o->cap + (size_t)k + 1) * 2;
        char *p = realloc(o->s, cap);
        if (!p) o->oom = 1;
        else o->s = p, o->cap = cap;
    }
}

/* A double as Python's repr writes it (the client library vLLM uses): the shortest
 * text that reads back the same, positional from 1e-4 to 1e16 with ".0" on whole
 * numbers ("0.005", "2560.0"), else in exponent form ("1e-05"). */
static const char *num(double v, char buf[32])
{
    double a = v < 0 ? -v : v;
    bool positional = v == 0 || (a >= 1e-4 && a < 1e16);
    for (int prec = positional ? 0 : 1; prec <= 17; prec++) {
        snprintf(buf, 32, positional ? "%.*f" : "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (positional && !strchr(buf, '.')) strcat(buf, ".0");
    return buf;
}

static void metric(out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(out *o, const char *base, const char *help, const char *labels, double v)
{
    metric(o, base, "counter", help);
    char b[32];
    put(o, "%s_total{%s} %s\n", base, labels, num(v, b));
}

static void gauge(out *o, const char *name, const char *help, const char *labels, double v)
{
    metric(o, name, "gauge", help);
    char b[32];
    put(o, "%s{%s} %s\n", name, labels, num(v, b));
}

static void histogram(out *o, const hist_def *d, const emumet_hist *h, const char *labels)
{
    metric(o, d->name, "histogram", d->help);
    uint64_t cum = 0;
    char b1[32], b2[32];
    for (size_t b = 0; b < d->n; b++) {
        cum += h->counts[b];
        put(o, "%s_bucket{%s,le=\"%s\"} %s\n", d->name, labels, num(d->bounds[b], b1), num((double)cum, b2));
    }
    put(o, "%s_bucket{%s,le=\"+Inf\"} %s\n", d->name, labels, num((double)h->count, b1));
    put(o, "%s_count{%s} %s\n", d->name, labels, num((double)h->count, b1));
    put(o, "%s_sum{%s} %s\n", d->name, labels, num(h->sum, b2));
}

char *emumet_render(const emumet_pod *m, const emumet_view *v, size_t *len)
{
    out o = {.cap = 8192};
    if (!(o.s = malloc(o.cap))) return NULL;
    char lab[512];
    snprintf(lab, sizeof lab, "engine=\"0\",model_name=\"%s\"", v->model_name);
    gauge(&o, "vllm:num_requests_running", "Number of requests in model execution batches.", lab, v->running);
    gauge(&o, "vllm:num_requests_waiting", "Number of requests waiting to be processed.", lab, v->waiting);
    gauge(&o, "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lab, v->kv_usage);
    metric(&o, "vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig");
    put(&o, "vllm:cache_config_info{block_size=\"%u\",cache_dtype=\"auto\",enable_prefix_caching=\"True\","
            "engine=\"0\",num_gpu_blocks=\"%llu\"} 1.0\n",
        v->block_size, (unsigned long long)v->num_gpu_blocks);
    metric(&o, "vllm:lora_requests_info", "gauge", "Running stats on lora requests.");
    char b[32];
    put(&o, "vllm:lora_requests_info{max_lora=\"0\",running_lora_adapters=\"\",waiting_lora_adapters=\"\"} %s\n",
        num((double)time(NULL), b));
    counter(&o, "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", lab,
            (double)v->prefix_queries);
    counter(&o, "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", lab,
            (double)v->prefix_hits);
    counter(&o, "vllm:num_preemptions", "Cumulative number of preemption from the engine.", lab,
            (double)v->preemptions);
    counter(&o, "vllm:prompt_tokens", "Number of prefill tokens processed.", lab, (double)m->prompt_tokens);
    counter(&o, "vllm:generation_tokens", "Number of generation tokens processed.", lab, (double)m->generation_tokens);
    char fin[600];
    snprintf(fin, sizeof fin, "%s,finished_reason=\"length\"", lab);
    counter(&o, "vllm:request_success", "Count of successfully processed requests.", fin, (double)m->requests_ok);
    for (int h = 0; h < EMUMET_N_HIST; h++) histogram(&o, &hists[h], &m->h[h], lab);
    if (o.oom) {
        free(o.s);
        return NULL;
    }
    *len = o.len;
    return o.s;
}
