/* promexp: the ./epp metric set and its /metrics endpoint (see promexp.h).
 *
 * Labelled series live in small fixed tables (label values interned on first sight under
 * a mutex, values updated with atomics), so the observe path is a short scan and a few
 * atomic adds; label sets beyond the table's size are folded into one overflow series
 * rather than growing without bound on hostile model names. */
#include "promexp.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "policy_util.h"
#include "tokenize.h"

#define MAX_SERIES 256
#define OVERFLOW_LABEL "_other"

/* GIE metrics.go buckets. */
static const double request_buckets[] = {0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3,
                                          4, 5, 6, 8, 10, 15, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480,
                                          600, 900, 1200, 1800, 2700, 3600};
/* scheduler_e2e_duration_seconds and plugin_duration_seconds */
static const double sched_buckets[] = {0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1};
/* llm-d-kv-cache's lookup_latency_seconds: Prometheus' default buckets */
static const double lookup_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
/* vLLM's time_to_first_token_seconds and time_per_output_token_seconds buckets */
static const double ttft_buckets[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                      2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double tpot_buckets[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                                      2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
#define N_TTFT_B (sizeof ttft_buckets / sizeof ttft_buckets[0])
#define N_TPOT_B (sizeof tpot_buckets / sizeof tpot_buckets[0])
#define N_REQ_B (sizeof request_buckets / sizeof request_buckets[0])
#define N_SCHED_B (sizeof sched_buckets / sizeof sched_buckets[0])
#define N_LOOKUP_B (sizeof lookup_buckets / sizeof lookup_buckets[0])

typedef struct hist {
    atomic_uint_fast64_t buckets[N_REQ_B + 1];   /* per bucket (not cumulative); last = +Inf */
    atomic_uint_fast64_t count;
    _Atomic double sum;
} hist;

static void hist_observe(hist *h, const double *bounds, size_t n, double v)
{
    size_t i = 0;
    while (i < n && v > bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    double old = atomic_load_explicit(&h->sum, memory_order_relaxed);
    while (!atomic_compare_exchange_weak(&h->sum, &old, old + v))
        ;
}

/* One (model_name, target_model_name) series. */
typedef struct req_series {
    char model[128], target[128];
    atomic_uint_fast64_t total;
    atomic_uint_fast64_t errors[5];   /* by error_codes[] */
    hist duration;
} req_series;

static const struct { int status; const char *code; } error_codes[] = {
    {400, "BadRequest"}, {429, "InferencePoolResourceExhausted"}, {503, "ServiceUnavailable"},
    {500, "Internal"}, {0, "Unknown"},
};
#define N_CODES (sizeof error_codes / sizeof error_codes[0])

/* One scheduler plugin: a duration series per extension point it is called at, and for a
 * precise prefix scorer the key of the match record it publishes in the cycle and its
 * index lookups (kvcache_index_lookup_*, rendered with its index). */
typedef struct plugin_series {
    const char *type, *name;        /* borrowed from the sched */
    hist duration[SCHED_POINT_COUNT];
    char prefix_key[PU_PREFIX_KEY_MAX];   /* "" unless precise-prefix-cache-scorer */
    hist lookup;
    atomic_uint_fast64_t lookup_hits;
} plugin_series;

/* One precise scorer's index, under its plugin name (the scorer label). */
typedef struct index_source {
    char *scorer;
    kvindex *index;
} index_source;

/* One KV-event subscription, labelled by the plugin names of the sources it feeds. */
typedef struct events_source {
    char *scorers;
    ingest *ingest;
} events_source;

struct promexp {
    promexp_sources src;
    char pool_name[128];
    struct MHD_Daemon *mhd;
    int port;
    pthread_mutex_t mu;                 /* guards series interning */
    req_series series[MAX_SERIES];
    atomic_size_t n_series;
    hist sched;
    atomic_uint_fast64_t sched_ok, sched_fail;
    plugin_series *plugins;             /* set once by promexp_observe_sched */
    atomic_size_t n_plugins;            /* published after plugins[] is filled */
    index_source *indexes;              /* copied from the sources at start */
    size_t n_indexes;
    events_source *events;
    size_t n_events;
    /* the gateway's */
    atomic_uint_fast64_t gw_codes[600];  /* answers by HTTP status */
    hist gw_ttft, gw_tpot;
    gateway *gw;                         /* under mu */
};

const char *promexp_error_code(int http_status)
{
    for (size_t i = 0; i < N_CODES - 1; i++)
        if (error_codes[i].status == http_status)
            return error_codes[i].code;
    return error_codes[N_CODES - 1].code;
}

static size_t code_index(int http_status)
{
    for (size_t i = 0; i < N_CODES - 1; i++)
        if (error_codes[i].status == http_status)
            return i;
    return N_CODES - 1;
}

static req_series *series_find(promexp *p, const char *model, const char *target)
{
    size_t n = atomic_load(&p->n_series);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p->series[i].model, model) && !strcmp(p->series[i].target, target))
            return &p->series[i];
    return NULL;
}

static req_series *series_get(promexp *p, const char *model, const char *target)
{
    req_series *s = series_find(p, model, target);
    if (s)
        return s;
    pthread_mutex_lock(&p->mu);
    if (!(s = series_find(p, model, target))) {
        size_t n = atomic_load(&p->n_series);
        if (n >= MAX_SERIES - 1) {
            model = target = OVERFLOW_LABEL;
            s = series_find(p, model, target);
        }
        if (!s) {
            s = &p->series[n];
            snprintf(s->model, sizeof s->model, "%s", model);
            snprintf(s->target, sizeof s->target, "%s", target);
            atomic_store(&p->n_series, n + 1);   /* publishes the names written above */
        }
    }
    pthread_mutex_unlock(&p->mu);
    return s;
}

void promexp_observe_request(promexp *p, const char *model, const char *target_model, int http_status,
                             double seconds)
{
    req_series *s = series_get(p, model ? model : "", target_model ? target_model : (model ? model : ""));
    atomic_fetch_add_explicit(&s->total, 1, memory_order_relaxed);
    if (http_status != 200)
        atomic_fetch_add_explicit(&s->errors[code_index(http_status)], 1, memory_order_relaxed);
    else
        hist_observe(&s->duration, request_buckets, N_REQ_B, seconds);
}

void promexp_observe_schedule(promexp *p, double seconds, bool ok)
{
    hist_observe(&p->sched, sched_buckets, N_SCHED_B, seconds);
    atomic_fetch_add_explicit(ok ? &p->sched_ok : &p->sched_fail, 1, memory_order_relaxed);
}

void promexp_observe_gateway(promexp *p, int http_status, double ttft_s, double tpot_s)
{
    if (!p)
        return;
    if (http_status >= 100 && http_status < 600)
        atomic_fetch_add_explicit(&p->gw_codes[http_status], 1, memory_order_relaxed);
    if (ttft_s >= 0)
        hist_observe(&p->gw_ttft, ttft_buckets, N_TTFT_B, ttft_s);
    if (tpot_s >= 0)
        hist_observe(&p->gw_tpot, tpot_buckets, N_TPOT_B, tpot_s);
}

void promexp_set_gateway(promexp *p, gateway *gw)
{
    pthread_mutex_lock(&p->mu);
    p->gw = gw;
    pthread_mutex_unlock(&p->mu);
}

/* The scheduler's observer: lock-free, allocation-free. */
static void on_plugin_call(void *ctx, const sched_cycle *c, sched_point pt, size_t plugin, double seconds)
{
    promexp *p = ctx;
    plugin_series *ps = &p->plugins[plugin];
    hist_observe(&ps->duration[pt], sched_buckets, N_SCHED_B, seconds);
    if (pt != SCHED_POINT_SCORER || !ps->prefix_key[0])
        return;
    const pu_prefix_info *info = sched_cycle_get(c, ps->prefix_key);
    if (!info || info->total_blocks == 0)
        return; /* no blocks, no index lookup */
    uint32_t longest = 0;
    for (size_t i = 0; i < info->n; i++)
        longest = info->matched[i] > longest ? info->matched[i] : longest;
    hist_observe(&ps->lookup, lookup_buckets, N_LOOKUP_B, seconds);
    atomic_fetch_add_explicit(&ps->lookup_hits, longest, memory_order_relaxed);
}

int promexp_observe_sched(promexp *p, sched *s, kv_err *err)
{
    size_t n = sched_plugin_count(s);
    if (p->plugins)
        return kv_err_set(err, KV_ESTATE, "metrics: a scheduler is already observed");
    if (!(p->plugins = calloc(n ? n : 1, sizeof *p->plugins)))
        return kv_err_set(err, KV_ENOMEM, "metrics: out of memory");
    for (size_t i = 0; i < n; i++) {
        const sched_plugin *sp = sched_plugin_at(s, i);
        p->plugins[i].type = sp->type->type;
        p->plugins[i].name = sp->name;
        if (!strcmp(sp->type->type, "precise-prefix-cache-scorer"))
            pu_prefix_key(p->plugins[i].prefix_key, sizeof p->plugins[i].prefix_key, sp->type->type, sp->name);
    }
    atomic_store(&p->n_plugins, n);
    sched_set_observer(s, on_plugin_call, p);
    return KV_OK;
}

/* ---- rendering ----------------------------------------------------------------------------- */

/* A label value with the exposition format's escapes (backslash, quote, newline). */
static void put_label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fputc('\\', f), fputc(*v, f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void model_labels(FILE *f, const void *series)
{
    const req_series *s = series;
    fputs("model_name=\"", f);
    put_label(f, s->model);
    fputs("\",target_model_name=\"", f);
    put_label(f, s->target);
    fputc('"', f);
}

static uint64_t ld(const atomic_uint_fast64_t *a) { return atomic_load_explicit((atomic_uint_fast64_t *)a, memory_order_relaxed); }

/* labels: a callback writing the series' labels (without braces), or NULL. */
static void put_hist(FILE *f, const char *name, hist *h, const double *bounds, size_t n,
                     void (*labels)(FILE *, const void *), const void *s)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= n; i++) {
        cum += ld(&h->buckets[i]);
        fprintf(f, "%s_bucket{", name);
        if (labels) {
            labels(f, s);
            fputc(',', f);
        }
        if (i < n)
            fprintf(f, "le=\"%g\"} %llu\n", bounds[i], (unsigned long long)cum);
        else
            fprintf(f, "le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    fprintf(f, "%s_sum", name);
    if (labels) {
        fputc('{', f);
        labels(f, s);
        fputc('}', f);
    }
    fprintf(f, " %.9g\n%s_count", atomic_load(&h->sum), name);
    if (labels) {
        fputc('{', f);
        labels(f, s);
        fputc('}', f);
    }
    fprintf(f, " %llu\n", (unsigned long long)ld(&h->count));
}

static void write_requests(promexp *p, FILE *f)
{
    size_t n = atomic_load(&p->n_series);
    head(f, "inference_objective_request_total", "counter", "Counter of inference objective requests broken out for each model and target model.");
    for (size_t i = 0; i < n; i++) {
        fputs("inference_objective_request_total{", f);
        model_labels(f, &p->series[i]);
        fprintf(f, "} %llu\n", (unsigned long long)ld(&p->series[i].total));
    }
    head(f, "inference_objective_request_error_total", "counter", "Counter of inference objective requests errors broken out for each model and target model.");
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < N_CODES; c++) {
            uint64_t v = ld(&p->series[i].errors[c]);
            if (!v)
                continue;
            fputs("inference_objective_request_error_total{", f);
            model_labels(f, &p->series[i]);
            fprintf(f, ",error_code=\"%s\"} %llu\n", error_codes[c].code, (unsigned long long)v);
        }
    head(f, "inference_objective_request_duration_seconds", "histogram", "Inference objective response latency distribution in seconds for each model and target model.");
    for (size_t i = 0; i < n; i++)
        put_hist(f, "inference_objective_request_duration_seconds", &p->series[i].duration, request_buckets, N_REQ_B,
                 model_labels, &p->series[i]);
    head(f, "inference_extension_scheduler_e2e_duration_seconds", "histogram", "End-to-end scheduling latency distribution in seconds.");
    put_hist(f, "inference_extension_scheduler_e2e_duration_seconds", &p->sched, sched_buckets, N_SCHED_B, NULL, NULL);
    head(f, "inference_extension_scheduler_attempts_total", "counter", "Total number of scheduling attempts.");
    fprintf(f, "inference_extension_scheduler_attempts_total{status=\"success\"} %llu\n",
            (unsigned long long)ld(&p->sched_ok));
    fprintf(f, "inference_extension_scheduler_attempts_total{status=\"failure\"} %llu\n",
            (unsigned long long)ld(&p->sched_fail));
}

typedef struct plugin_labels {
    const plugin_series *ps;
    sched_point pt;
} plugin_labels;

static void put_plugin_labels(FILE *f, const void *v)
{
    const plugin_labels *l = v;
    fprintf(f, "extension_point=\"%s\",plugin_type=\"", sched_point_name(l->pt));
    put_label(f, l->ps->type);
    fputs("\",plugin_name=\"", f);
    put_label(f, l->ps->name);
    fputc('"', f);
}

/* Only the (point, plugin) pairs that were called, as a Prometheus HistogramVec shows. */
static void write_plugins(promexp *p, FILE *f)
{
    static const char *const name = "inference_extension_plugin_duration_seconds";
    size_t n = atomic_load(&p->n_plugins);
    head(f, name, "histogram", "Plugin processing latency distribution in seconds for each extension point, plugin type and plugin name.");
    for (size_t i = 0; i < n; i++)
        for (int pt = 0; pt < SCHED_POINT_COUNT; pt++) {
            hist *h = &p->plugins[i].duration[pt];
            if (ld(&h->count))
                put_hist(f, name, h, sched_buckets, N_SCHED_B, put_plugin_labels,
                         &(plugin_labels){.ps = &p->plugins[i], .pt = (sched_point)pt});
        }
}

static void gauge(FILE *f, const char *name, const char *help, const char *pool, double v)
{
    head(f, name, "gauge", help);
    fprintf(f, "%s{name=\"", name);
    put_label(f, pool);
    fprintf(f, "\"} %.9g\n", v);
}

static void plain(FILE *f, const char *name, const char *type, const char *help, double v)
{
    head(f, name, type, help);
    fprintf(f, "%s %.9g\n", name, v);
}

/* One sample: name, its labels (scorer="..." when scorer is not NULL, then extra, a
 * preformatted key="value" or NULL) and the value. */
static void sample(FILE *f, const char *name, const char *scorer, const char *extra, const char *value)
{
    fputs(name, f);
    if (scorer || extra) {
        fputc('{', f);
        if (scorer) {
            fputs("scorer=\"", f);
            put_label(f, scorer);
            fputc('"', f);
        }
        if (extra)
            fprintf(f, "%s%s", scorer ? "," : "", extra);
        fputc('}', f);
    }
    fprintf(f, " %s\n", value);
}

/* A sample value as the unlabelled metrics have always printed it (%.9g)... */
static const char *num(char *buf, size_t cap, double v)
{
    snprintf(buf, cap, "%.9g", v);
    return buf;
}

/* ...and as the by-type and by-reason counters do (exact integers). */
static const char *count(char *buf, size_t cap, uint64_t v)
{
    snprintf(buf, cap, "%llu", (unsigned long long)v);
    return buf;
}

/* An ingest_stats field rendered as one kvroute_kv_events_* metric. */
typedef struct events_metric {
    const char *name, *type, *help;
    size_t off;
    bool dbl;                       /* a double field, else uint64_t */
} events_metric;
#define EV_U(field, n, t, h) {.name = n, .type = t, .help = h, .off = offsetof(ingest_stats, field), .dbl = false}
#define EV_D(field, n, t, h) {.name = n, .type = t, .help = h, .off = offsetof(ingest_stats, field), .dbl = true}

static const events_metric events_head[] = {
    EV_U(messages, "kvroute_kv_events_messages_total", "counter", "ZMQ KV-event messages received with three frames."),
    EV_U(bad_frames, "kvroute_kv_events_bad_frames_total", "counter", "ZMQ messages without exactly three frames."),
    EV_U(batches, "kvroute_kv_events_batches_total", "counter", "KV-event batches applied to the index."),
};
static const events_metric events_tail[] = {
    EV_U(blocks_stored, "kvroute_kv_events_blocks_stored_total", "counter", "Request keys stored from BlockStored events."),
    EV_U(blocks_removed, "kvroute_kv_events_blocks_removed_total", "counter", "Index entries removed by BlockRemoved events."),
    EV_U(orphans, "kvroute_kv_events_orphans_total", "counter", "BlockStored events whose parent block is unknown."),
    EV_U(rejected_pods, "kvroute_kv_events_rejected_pods_total", "counter", "Messages from pods that are not known endpoints."),
    EV_U(loose_matches, "kvroute_kv_events_loose_matches_total", "counter", "Messages whose topic pod id matched an endpoint by IP only."),
    EV_U(duplicates, "kvroute_kv_events_duplicates_total", "counter", "Messages dropped as duplicates (same seq)."),
    EV_U(gaps, "kvroute_kv_events_gaps_total", "counter", "Sequence gaps detected."),
    EV_U(restarts, "kvroute_kv_events_restarts_total", "counter", "Publisher restarts detected (seq went back)."),
    EV_U(missed, "kvroute_kv_events_missed_batches_total", "counter", "Batches skipped by gaps and restarts."),
    EV_U(replays, "kvroute_kv_events_replays_total", "counter", "Replay requests sent to pods."),
    EV_U(replayed_batches, "kvroute_kv_events_replayed_batches_total", "counter", "Batches recovered by replay."),
    EV_U(replay_failures, "kvroute_kv_events_replay_failures_total", "counter", "Replay requests that failed."),
    EV_U(lost, "kvroute_kv_events_lost_batches_total", "counter", "Missed batches not recovered."),
    EV_U(stale_endpoints, "kvroute_kv_events_stale_endpoints", "gauge", "Endpoints with unrecovered event losses (entries possibly stale)."),
    EV_U(endpoints_removed, "kvroute_kv_events_endpoints_removed_total", "counter", "Index slots dropped because their endpoint left."),
    EV_U(apply_errors, "kvroute_kv_events_apply_errors_total", "counter", "Batches the index could not fully apply."),
    EV_D(lag_last_s, "kvroute_kv_events_lag_seconds", "gauge", "Receive time minus the last batch's timestamp."),
    EV_D(lag_max_s, "kvroute_kv_events_lag_max_seconds", "gauge", "Largest lag seen."),
    EV_D(lag_sum_s, "kvroute_kv_events_lag_seconds_sum", "counter", "Sum of batch lags."),
    EV_U(lag_count, "kvroute_kv_events_lag_seconds_count", "counter", "Batches with a timestamp."),
    EV_U(queued_bytes, "kvroute_kv_events_queue_bytes", "gauge", "KV-event bytes received, not yet applied."),
    EV_U(queue_peak_bytes, "kvroute_kv_events_queue_peak_bytes", "gauge", "Most KV-event bytes queued at once."),
    EV_U(queue_limit_bytes, "kvroute_kv_events_queue_limit_bytes", "gauge", "Memory bound on queued KV events (--kv-events-queue-mib)."),
    EV_U(queue_dropped, "kvroute_kv_events_queue_dropped_total", "counter", "KV-event messages dropped because the queue was full."),
    EV_U(memory_trims, "kvroute_kv_events_memory_trims_total", "counter", "Times memory was given back after a KV-event backlog drained."),
};

static void write_events_metrics(FILE *f, const events_metric *m, size_t n_m, const ingest_stats *st,
                                 const char *const *scorer, size_t n)
{
    char buf[32];
    for (size_t k = 0; k < n_m; k++) {
        head(f, m[k].name, m[k].type, m[k].help);
        for (size_t i = 0; i < n; i++) {
            const char *field = (const char *)&st[i] + m[k].off;
            double v = m[k].dbl ? *(const double *)field : (double)*(const uint64_t *)field;
            sample(f, m[k].name, scorer[i], NULL, num(buf, sizeof buf, v));
        }
    }
}

/* Every subscription's kvroute_kv_events_*; with several, each labelled by its scorers. */
static void write_events(promexp *p, FILE *f)
{
    static const char *const type_names[KVEV_TYPE_COUNT] = {"BlockStored", "BlockRemoved", "AllBlocksCleared"};
    size_t n = p->n_events;
    ingest_stats st[n];
    const char *scorer[n];
    for (size_t i = 0; i < n; i++) {
        ingest_get_stats(p->events[i].ingest, &st[i]);
        scorer[i] = n > 1 ? p->events[i].scorers : NULL;
    }
    char buf[32], label[64];
    write_events_metrics(f, events_head, sizeof events_head / sizeof *events_head, st, scorer, n);
    head(f, "kvroute_kv_events_events_total", "counter", "KV events applied, by type.");
    for (size_t i = 0; i < n; i++)
        for (int t = 0; t < KVEV_TYPE_COUNT; t++) {
            snprintf(label, sizeof label, "type=\"%s\"", type_names[t]);
            sample(f, "kvroute_kv_events_events_total", scorer[i], label, count(buf, sizeof buf, st[i].events[t]));
        }
    head(f, "kvroute_kv_events_decode_errors_total", "counter", "KV-event messages rejected, by reason.");
    for (size_t i = 0; i < n; i++)
        for (int r = 0; r < KVEV_ERR_COUNT; r++) {
            snprintf(label, sizeof label, "reason=\"%s\"", kvev_reason_name((kvev_reason)r));
            sample(f, "kvroute_kv_events_decode_errors_total", scorer[i], label,
                   count(buf, sizeof buf, st[i].decode_errors[r]));
        }
    write_events_metrics(f, events_tail, sizeof events_tail / sizeof *events_tail, st, scorer, n);
}

/* The observed plugin named scorer (its lookup series), or NULL before promexp_observe_sched. */
static plugin_series *lookup_series(promexp *p, const char *scorer)
{
    size_t n = atomic_load(&p->n_plugins);
    for (size_t i = 0; i < n; i++)
        if (p->plugins[i].prefix_key[0] && !strcmp(p->plugins[i].name, scorer))
            return &p->plugins[i];
    return NULL;
}

static void scorer_label(FILE *f, const void *scorer)
{
    fputs("scorer=\"", f);
    put_label(f, scorer);
    fputc('"', f);
}

/* Every precise scorer's kvcache_index_*; with several, each labelled by its plugin name.
 * The lookup counters and latency are the observer's, per scorer. */
static void write_indexes(promexp *p, FILE *f)
{
    size_t n = p->n_indexes;
    kvindex_stats st[n];
    plugin_series *ps[n];
    const char *scorer[n];
    for (size_t i = 0; i < n; i++) {
        kvindex_get_stats(p->indexes[i].index, &st[i]);
        ps[i] = lookup_series(p, p->indexes[i].scorer);
        scorer[i] = n > 1 ? p->indexes[i].scorer : NULL;
    }
    static hist none;   /* a scorer not observed: nothing looked up */
    char buf[32];
#define INDEX_METRIC(name, type, help, value)                                                     \
    do {                                                                                          \
        head(f, name, type, help);                                                                \
        for (size_t i = 0; i < n; i++)                                                            \
            sample(f, name, scorer[i], NULL, num(buf, sizeof buf, (double)(value)));              \
    } while (0)
    INDEX_METRIC("kvcache_index_admissions_total", "counter", "Total number of KV-block admissions (request keys stored).", st[i].admissions);
    INDEX_METRIC("kvcache_index_evictions_total", "counter", "Total number of KV-block evictions.", st[i].evictions);
    INDEX_METRIC("kvcache_index_lookup_requests_total", "counter", "Total number of lookup calls.", st[i].lookups);
    /* KVC adds the longest per-pod match to both counters; so do we */
    INDEX_METRIC("kvcache_index_lookup_hits_total", "counter", "Number of keys found in the cache on Lookup() (longest candidate match, blocks).",
                 ps[i] ? ld(&ps[i]->lookup_hits) : 0);
    INDEX_METRIC("kvcache_index_max_pod_hit_count_total", "counter", "Maximum cache hits on a single pod on Lookup(), summed over lookups.",
                 ps[i] ? ld(&ps[i]->lookup_hits) : 0);
    head(f, "kvcache_index_lookup_latency_seconds", "histogram", "Latency of Lookup calls in seconds (precise prefix scorer calls).");
    for (size_t i = 0; i < n; i++)
        put_hist(f, "kvcache_index_lookup_latency_seconds", ps[i] ? &ps[i]->lookup : &none, lookup_buckets, N_LOOKUP_B,
                 scorer[i] ? scorer_label : NULL, scorer[i]);
    INDEX_METRIC("kvcache_index_size_blocks", "gauge", "Request keys held by the index.", st[i].blocks);
    INDEX_METRIC("kvcache_index_size_entries", "gauge", "(block, pod, tier) entries held by the index.", st[i].entries);
    INDEX_METRIC("kvcache_index_size_bytes", "gauge", "Memory used by the index's tables.", st[i].bytes);
#undef INDEX_METRIC
}

static void put_breaker(void *ctx, const char *ep, breaker_state st)
{
    FILE *f = ctx;
    fputs("kvroute_gateway_circuit_breaker_state{endpoint=\"", f);
    put_label(f, ep);
    fprintf(f, "\"} %d\n", (int)st);
}

static void write_gateway(promexp *p, FILE *f)
{
    bool any = false;
    for (int c = 100; c < 600 && !any; c++)
        any = ld(&p->gw_codes[c]) != 0;
    pthread_mutex_lock(&p->mu);
    if (!any && !p->gw) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    head(f, "kvroute_gateway_requests_total", "counter", "Requests the HTTP gateway answered, by HTTP status.");
    for (int c = 100; c < 600; c++)
        if (ld(&p->gw_codes[c]))
            fprintf(f, "kvroute_gateway_requests_total{code=\"%d\"} %llu\n", c, (unsigned long long)ld(&p->gw_codes[c]));
    head(f, "kvroute_gateway_ttft_seconds", "histogram", "Time from a request's arrival to the first response byte the gateway passed on.");
    put_hist(f, "kvroute_gateway_ttft_seconds", &p->gw_ttft, ttft_buckets, N_TTFT_B, NULL, NULL);
    head(f, "kvroute_gateway_time_per_output_token_seconds", "histogram", "Streamed responses: time after the first byte per further output token.");
    put_hist(f, "kvroute_gateway_time_per_output_token_seconds", &p->gw_tpot, tpot_buckets, N_TPOT_B, NULL, NULL);
    if (p->gw) {
        gateway_stats s;
        gateway_get_stats(p->gw, &s);
        plain(f, "kvroute_gateway_retries_total", "counter", "Requests retried on the next-best endpoint.", (double)s.retries);
        plain(f, "kvroute_gateway_upstream_failures_total", "counter", "Connect errors, 429/503 before the first byte and 5xx answers from endpoints.", (double)s.upstream_failures);
        plain(f, "kvroute_gateway_client_cancels_total", "counter", "Clients gone before their answer ended (upstream request cancelled).", (double)s.client_cancels);
        plain(f, "kvroute_gateway_timeouts_total", "counter", "Requests past --request-timeout.", (double)s.timeouts);
        plain(f, "kvroute_gateway_queue_full_total", "counter", "Requests answered 429 because the queue was full.", (double)s.queue_full);
        plain(f, "kvroute_gateway_in_flight_requests", "gauge", "Requests being routed or forwarded.", (double)s.in_flight);
        plain(f, "kvroute_gateway_queued_requests", "gauge", "Requests waiting for a slot (--max-concurrent-requests).", (double)s.queued);
        plain(f, "kvroute_gateway_circuit_breaker_opens_total", "counter", "Circuit breakers opened (an endpoint taken out of routing).", (double)s.breaker_opens);
        head(f, "kvroute_gateway_circuit_breaker_state", "gauge", "Per endpoint: 0 closed, 1 open, 2 half-open.");
        gateway_each_breaker(p->gw, put_breaker, f);
    }
    pthread_mutex_unlock(&p->mu);
}

void promexp_write(promexp *p, FILE *f)
{
    write_gateway(p, f);
    write_requests(p, f);
    write_plugins(p, f);
    if (p->src.endpoints) {
        epset_summary s;
        epset_get_summary(p->src.endpoints, &s);
        gauge(f, "inference_pool_ready_pods", "The number of ready pods in the inference server pool.", p->pool_name, (double)s.ready);
        gauge(f, "inference_pool_average_kv_cache_utilization", "The average kv cache utilization for an inference server pool.", p->pool_name, s.avg_kv_usage);
        gauge(f, "inference_pool_average_queue_size", "The average number of requests pending in the model server queue.", p->pool_name, s.avg_waiting);
    }
    if (p->n_indexes)
        write_indexes(p, f);
    if (p->n_events)
        write_events(p, f);
    if (p->src.scrape) {
        scrape_stats s;
        scrape_get_stats(p->src.scrape, &s);
        plain(f, "kvroute_metrics_scrapes_total", "counter", "Pod /metrics scrapes accepted.", (double)s.ok);
        head(f, "kvroute_metrics_scrape_failures_total", "counter", "Pod /metrics scrapes that failed, by reason.");
        const struct { const char *reason; uint64_t n; } fails[] = {
            {"transfer", s.failed_transfer}, {"http", s.failed_http}, {"parse", s.failed_parse}, {"value", s.failed_value}};
        for (size_t i = 0; i < sizeof fails / sizeof *fails; i++)
            fprintf(f, "kvroute_metrics_scrape_failures_total{reason=\"%s\"} %llu\n", fails[i].reason,
                    (unsigned long long)fails[i].n);
    }
    if (p->src.tokenize) {
        tokenize_stats t;
        tokenize_get_stats(&t);
        head(f, "kvroute_tokenize_requests_total", "counter",
             "Prompts tokenised, by the vLLM endpoint that answered (tokenize: render answered 404).");
        fprintf(f, "kvroute_tokenize_requests_total{endpoint=\"render\"} %llu\n", (unsigned long long)t.rendered);
        fprintf(f, "kvroute_tokenize_requests_total{endpoint=\"tokenize\"} %llu\n", (unsigned long long)t.fell_back);
        head(f, "kvroute_tokenize_failures_total", "counter",
             "Prompts routed without token ids because tokenisation failed, by reason.");
        for (int r = 0; r < TOKENIZE_REASONS; r++)
            fprintf(f, "kvroute_tokenize_failures_total{reason=\"%s\"} %llu\n", tokenize_reason_name(r),
                    (unsigned long long)t.failures[r]);
    }
    if (p->src.diag) {
        uint64_t n[KVDIAG_REASON_COUNT];
        kvdiag_counts(p->src.diag, n);
        head(f, "kvroute_score_zero_causes_total", "counter",
             "KV-event misconfigurations that keep precise prefix scores at 0, by reason (GET /debug/endpoints).");
        for (int r = 0; r < KVDIAG_REASON_COUNT; r++)
            fprintf(f, "kvroute_score_zero_causes_total{reason=\"%s\"} %llu\n", kvdiag_reason_name((kvdiag_reason)r),
                    (unsigned long long)n[r]);
    }
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

/* One connection's request: its /debug/ body as it arrives. */
typedef struct conn_req {
    char *body;
    size_t len;
    bool too_big;
} conn_req;

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    conn_req *cr = *con_cls;
    if (cr)
        free(cr->body);
    free(cr);
    *con_cls = NULL;
}

typedef struct header_list {
    sched_kv kv[64];
    size_t n;
} header_list;

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    header_list *h = cls;
    if (h->n < sizeof h->kv / sizeof h->kv[0])
        h->kv[h->n++] = (sched_kv){key, value ? value : ""};
    return MHD_YES;
}

static struct MHD_Response *serve_debug(promexp *p, struct MHD_Connection *c, const char *url, const char *method,
                                        conn_req *cr, unsigned *status)
{
    if (cr->too_big) {
        *status = MHD_HTTP_CONTENT_TOO_LARGE;
        return MHD_create_response_from_buffer(strlen("request body larger than 8 MiB\n"),
                                               "request body larger than 8 MiB\n", MHD_RESPMEM_PERSISTENT);
    }
    header_list hl = {.n = 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_header, &hl);
    promexp_http h = {.method = method, .url = url, .body = cr->body ? cr->body : "", .body_len = cr->len,
                      .headers = hl.kv, .n_headers = hl.n, .status = 404, .content_type = "text/plain"};
    p->src.debug(p->src.debug_ctx, &h);
    *status = (unsigned)h.status;
    struct MHD_Response *r = h.out ? MHD_create_response_from_buffer(h.out_len, h.out, MHD_RESPMEM_MUST_FREE)
                                   : MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (r)
        MHD_add_response_header(r, "Content-Type", h.content_type);
    else
        free(h.out);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    promexp *p = cls;
    conn_req *cr = *con_cls;
    if (!cr) {   /* headers only so far: the body, if any, follows in the next calls */
        if (!(cr = calloc(1, sizeof *cr)))
            return MHD_NO;
        *con_cls = cr;
        return MHD_YES;
    }
    bool debug = p->src.debug && !strncmp(url, "/debug/", 7);
    if (*upload_size) {
        if (debug && !cr->too_big && cr->len + *upload_size <= PROMEXP_MAX_BODY) {
            char *b = realloc(cr->body, cr->len + *upload_size + 1);
            if (!b)
                return MHD_NO;
            memcpy(b + cr->len, upload, *upload_size);
            cr->body = b;
            cr->len += *upload_size;
            b[cr->len] = 0;
        } else {
            cr->too_big = true;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r;
    unsigned status = MHD_HTTP_OK;
    if (debug) {
        r = serve_debug(p, c, url, method, cr, &status);
    } else if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    } else if (strcmp(url, "/metrics")) {
        status = MHD_HTTP_NOT_FOUND;
        r = MHD_create_response_from_buffer(10, "not found\n", MHD_RESPMEM_PERSISTENT);
    } else {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
            return MHD_NO;
        promexp_write(p, f);
        fclose(f);
        r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    }
    if (!r)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* The plugin names of the sources g feeds, comma-separated (the label of its series). */
static char *feeds(const ingest *g)
{
    size_t n, len = 0;
    const sched_kvsource *fed = ingest_sources(g, &n);
    for (size_t i = 0; i < n; i++)
        len += strlen(fed[i].name ? fed[i].name : "") + 1;
    char *out = malloc(len ? len : 1);
    if (!out)
        return NULL;
    out[0] = 0;
    for (size_t i = 0, at = 0; i < n; i++)
        at += (size_t)sprintf(out + at, "%s%s", i ? "," : "", fed[i].name ? fed[i].name : "");
    return out;
}

/* The index and subscription lists, copied with their labels so the caller's arrays need
 * not outlive the exporter (the indexes and ingests themselves must). */
static int copy_sources(promexp *p)
{
    const promexp_sources *src = &p->src;
    if ((src->n_kvsources && !(p->indexes = calloc(src->n_kvsources, sizeof *p->indexes))) ||
        (src->n_ingests && !(p->events = calloc(src->n_ingests, sizeof *p->events))))
        return KV_ENOMEM;
    for (; p->n_indexes < src->n_kvsources; p->n_indexes++) {
        const sched_kvsource *k = src->kvsources[p->n_indexes];
        index_source *ix = &p->indexes[p->n_indexes];
        if (!(ix->scorer = strdup(k->name ? k->name : "")))
            return KV_ENOMEM;
        ix->index = k->index;
    }
    for (; p->n_events < src->n_ingests; p->n_events++) {
        events_source *ev = &p->events[p->n_events];
        if (!(ev->scorers = feeds(src->ingests[p->n_events])))
            return KV_ENOMEM;
        ev->ingest = src->ingests[p->n_events];
    }
    p->src.kvsources = NULL;   /* borrowed only until here */
    p->src.ingests = NULL;
    return KV_OK;
}

promexp *promexp_start(int port, const promexp_sources *src, kv_err *err)
{
    promexp *p = calloc(1, sizeof *p);
    if (!p) {
        kv_err_set(err, KV_ENOMEM, "metrics: out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    if (src)
        p->src = *src;
    snprintf(p->pool_name, sizeof p->pool_name, "%s", p->src.pool_name ? p->src.pool_name : "");
    p->src.pool_name = p->pool_name;
    if (copy_sources(p) != KV_OK) {
        kv_err_set(err, KV_ENOMEM, "metrics: out of memory");
        promexp_stop(p);
        return NULL;
    }
    if (port >= 0) {
        p->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL,
                                  on_request, p, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                  MHD_OPTION_END);
        if (!p->mhd) {
            kv_err_set(err, KV_EIO, "metrics: cannot listen on port %d (--metrics-port)", port);
            promexp_stop(p);
            return NULL;
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(p->mhd, MHD_DAEMON_INFO_BIND_PORT);
        p->port = info ? info->port : port;
    }
    return p;
}

int promexp_port(const promexp *p) { return p->port; }

void promexp_stop(promexp *p)
{
    if (!p)
        return;
    if (p->mhd)
        MHD_stop_daemon(p->mhd);
    pthread_mutex_destroy(&p->mu);
    free(p->plugins);
    for (size_t i = 0; i < p->n_indexes; i++)
        free(p->indexes[i].scorer);
    free(p->indexes);
    for (size_t i = 0; i < p->n_events; i++)
        free(p->events[i].scorers);
    free(p->events);
    free(p);
}
