/* kvdiag: the causes of a precise score of 0, counted and explained (see kvdiag.h).
 *
 * State: pods (by endpoint name, or the sender's address for topics that name none),
 * the models requests asked for, and the issues found, each issue keyed by (reason, pod,
 * model) so that its warning is logged once. */
#include "kvdiag.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "monoclock.h"

#define NAME_CAP 256
#define POD_MODELS 4              /* models remembered per pod (one in practice) */
#define CHECK_EVERY_S 1.0

typedef struct pod_rec {
    char name[NAME_CAP];
    uint64_t messages;
    uint64_t last_seq;
    double last_event_s;          /* 0: no event yet */
    char models[POD_MODELS][NAME_CAP];
    int n_models;
    uint64_t routed_pending;      /* requests routed since its last event */
    double routed_since_s;        /* when the first of them was routed */
    bool stale;                   /* this silence was judged stale (counted once) */
} pod_rec;

typedef struct issue {
    kvdiag_reason reason;
    char pod[NAME_CAP], model[NAME_CAP];
    uint64_t count;
    double last_s;
    char message[768];
} issue;

struct kvdiag {
    kvdiag_config cfg;
    pthread_mutex_t mu;
    uint64_t counts[KVDIAG_REASON_COUNT];
    pod_rec *pods;
    size_t n_pods, cap_pods;
    char models[KVDIAG_MAX_MODELS][NAME_CAP];   /* requests asked for */
    size_t n_models;
    char published[KVDIAG_MAX_MODELS][NAME_CAP];   /* some pod's events carry */
    size_t n_published;
    issue *issues;                /* KVDIAG_MAX_ISSUES */
    size_t n_issues;
    double checked_s;
};

const char *kvdiag_reason_name(kvdiag_reason r)
{
    static const char *const names[KVDIAG_REASON_COUNT] = {"empty_topic", "foreign_topic", "model_mismatch",
                                                           "stale", "block_size"};
    return (unsigned)r < KVDIAG_REASON_COUNT ? names[r] : "unknown";
}

static double now_s(const kvdiag *d) { return d->cfg.now ? d->cfg.now(d->cfg.now_ctx) : monoclock_s(); }

kvdiag *kvdiag_new(const kvdiag_config *cfg, kv_err *err)
{
    kvdiag *d = calloc(1, sizeof *d);
    if (d)
        d->issues = calloc(KVDIAG_MAX_ISSUES, sizeof *d->issues);
    if (!d || !d->issues) {
        free(d);
        kv_err_set(err, KV_ENOMEM, "kvdiag: out of memory");
        return NULL;
    }
    if (cfg)
        d->cfg = *cfg;
    if (d->cfg.stale_after_s <= 0)
        d->cfg.stale_after_s = 30;
    pthread_mutex_init(&d->mu, NULL);
    return d;
}

void kvdiag_free(kvdiag *d)
{
    if (!d)
        return;
    pthread_mutex_destroy(&d->mu);
    free(d->pods);
    free(d->issues);
    free(d);
}

static void copy(char *dst, const char *src)
{
    snprintf(dst, NAME_CAP, "%s", src ? src : "");
}

static pod_rec *pod_find(kvdiag *d, const char *name)
{
    for (size_t i = 0; i < d->n_pods; i++)
        if (!strcmp(d->pods[i].name, name))
            return &d->pods[i];
    return NULL;
}

static pod_rec *pod_get(kvdiag *d, const char *name)
{
    pod_rec *p = pod_find(d, name);
    if (p || d->n_pods == KVDIAG_MAX_PODS)
        return p;
    if (d->n_pods == d->cap_pods) {
        size_t cap = d->cap_pods ? d->cap_pods * 2 : 16;
        pod_rec *g = realloc(d->pods, cap * sizeof *g);
        if (!g)
            return NULL;
        d->pods = g;
        d->cap_pods = cap;
    }
    p = &d->pods[d->n_pods++];
    *p = (pod_rec){0};
    copy(p->name, name);
    return p;
}

static bool listed(const char (*list)[NAME_CAP], size_t n, const char *model)
{
    for (size_t i = 0; i < n; i++)
        if (!strncmp(list[i], model, NAME_CAP - 1))
            return true;
    return false;
}

static bool requested(const kvdiag *d, const char *model) { return listed(d->models, d->n_models, model); }

/* (reason, pod, model) was seen: the first time it is kept as an issue and logged with
 * its message (fmt), later times only update the issue. The caller counts the
 * occurrence in d->counts. */
static void vnote(kvdiag *d, kvdiag_reason r, const char *pod, const char *model, double now, const char *fmt,
                  va_list ap)
{
    for (size_t i = 0; i < d->n_issues; i++) {
        issue *is = &d->issues[i];
        if (is->reason == r && !strncmp(is->pod, pod, NAME_CAP - 1) && !strncmp(is->model, model, NAME_CAP - 1)) {
            is->count++;
            is->last_s = now;
            return;
        }
    }
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (d->n_issues < KVDIAG_MAX_ISSUES) {
        issue *is = &d->issues[d->n_issues++];
        *is = (issue){.reason = r, .count = 1, .last_s = now};
        copy(is->pod, pod);
        copy(is->model, model);
        snprintf(is->message, sizeof is->message, "%s", msg);
    }
    LOG_W("Precise prefix scores will stay 0", "{s:s, s:s, s:s, s:s}", "reason", kvdiag_reason_name(r), "pod", pod,
          "model", model, "fix", msg);
}

static void note(kvdiag *d, kvdiag_reason r, const char *pod, const char *model, double now, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void note(kvdiag *d, kvdiag_reason r, const char *pod, const char *model, double now, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vnote(d, r, pod, model, now, fmt, ap);
    va_end(ap);
}

/* One counted occurrence, noted as above. */
static void occur(kvdiag *d, kvdiag_reason r, const char *pod, const char *model, double now, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void occur(kvdiag *d, kvdiag_reason r, const char *pod, const char *model, double now, const char *fmt, ...)
{
    d->counts[r]++;
    va_list ap;
    va_start(ap, fmt);
    vnote(d, r, pod, model, now, fmt, ap);
    va_end(ap);
}

/* The most recent model a request asked for (the one to name in a message). */
static const char *last_model(const kvdiag *d) { return d->n_models ? d->models[d->n_models - 1] : ""; }

/* Pod's events carry model, requests ask for another (the newest one named). */
static void note_mismatch(kvdiag *d, const char *pod, const char *model, double now)
{
    note(d, KVDIAG_MODEL_MISMATCH, pod, model, now,
          "events for model %s on pod %s, requests ask for %s: set --served-model-name %s on the pod (its topic "
          "kv@<ip:port>@<model> must carry the model requests name), or make the requests' model (or the "
          "scorer's modelName) %s",
          model, pod, last_model(d), last_model(d), model);
}

void kvdiag_topic(kvdiag *d, const char *peer, const void *topic, size_t len, const char *filter)
{
    pthread_mutex_lock(&d->mu);
    double now = now_s(d);
    const char *who = peer && *peer ? peer : "(unknown sender)";
    if (len == 0) {
        occur(d, KVDIAG_EMPTY_TOPIC, who, "", now,
              "KV events from %s carry vLLM's default empty topic, which names no pod or model, so they are "
              "dropped: start vLLM with --kv-events-config '{\"enable_kv_cache_events\":true,\"publisher\":\"zmq\","
              "\"topic\":\"kv@<ip:port as the EPP lists the pod>@<the model requests name>\", ...}'",
              who);
    } else {
        char t[NAME_CAP];
        size_t n = len < NAME_CAP - 1 ? len : NAME_CAP - 1;
        memcpy(t, topic, n);
        t[n] = 0;
        for (char *c = t; *c; c++)   /* for the log and the issue: printable ASCII */
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                *c = '?';
        occur(d, KVDIAG_FOREIGN_TOPIC, who, t, now,
              "KV events from %s on topic '%s' do not start with kvEventsConfig.topicFilter '%s', so they are "
              "dropped: publish on kv@<ip:port as the EPP lists the pod>@<the model requests name>",
              who, t, filter ? filter : "");
    }
    pthread_mutex_unlock(&d->mu);
}

void kvdiag_events(kvdiag *d, const char *pod, const char *model, uint64_t seq, uint32_t engine_block_size,
                   uint32_t index_block_size)
{
    pthread_mutex_lock(&d->mu);
    double now = now_s(d);
    pod_rec *p = pod_get(d, pod);
    if (p) {
        p->messages++;
        p->last_seq = seq;
        p->last_event_s = now;
        p->routed_pending = 0;
        p->stale = false;
        bool known = false;
        for (int i = 0; i < p->n_models && !known; i++)
            known = !strncmp(p->models[i], model, NAME_CAP - 1);
        if (!known && p->n_models < POD_MODELS)
            copy(p->models[p->n_models++], model);
    }
    if (!listed(d->published, d->n_published, model) && d->n_published < KVDIAG_MAX_MODELS)
        copy(d->published[d->n_published++], model);
    /* Keys are computed per index block from each event's tokens: an engine block shorter
     * than an index block (or not a multiple of one) leaves tokens that key nothing, and
     * every later event of that chain is keyed from the wrong place or dropped. */
    if (engine_block_size && index_block_size &&
        (engine_block_size < index_block_size || engine_block_size % index_block_size))
        occur(d, KVDIAG_BLOCK_SIZE, pod, model, now,
              "vLLM on pod %s stores blocks of %u tokens, the index keys blocks of %u "
              "(tokenProcessorConfig.blockSize): set blockSize: %u, or start vLLM with --block-size %u",
              pod, engine_block_size, index_block_size, engine_block_size, index_block_size);
    if (d->n_models && !requested(d, model)) {   /* no request can match these events */
        d->counts[KVDIAG_MODEL_MISMATCH]++;
        note_mismatch(d, pod, model, now);
    }
    pthread_mutex_unlock(&d->mu);
}

static void check_locked(kvdiag *d, double now)
{
    d->checked_s = now;
    for (size_t i = 0; i < d->n_pods; i++) {
        pod_rec *p = &d->pods[i];
        if (!p->routed_pending || p->stale || now - p->routed_since_s < d->cfg.stale_after_s)
            continue;
        p->stale = true;   /* counted once per silence; events end it */
        double waited = now - p->routed_since_s;
        if (p->last_event_s > 0)
            occur(d, KVDIAG_STALE, p->name, last_model(d), now,
                  "pod %s was routed %llu request(s) over the last %.0f s and sent no KV event since its last one "
                  "%.0f s ago: check that its vLLM still publishes (--kv-events-config) and reaches the EPP",
                  p->name, (unsigned long long)p->routed_pending, waited, now - p->last_event_s);
        else
            occur(d, KVDIAG_STALE, p->name, last_model(d), now,
                  "pod %s was routed %llu request(s) over the last %.0f s and never sent a KV event: start its "
                  "vLLM with --kv-events-config '{\"enable_kv_cache_events\":true,\"publisher\":\"zmq\","
                  "\"endpoint\":\"tcp://<epp>:5557\" (centralised) or \"tcp://*:<socketPort>\" (discoverPods),"
                  "\"topic\":\"kv@%s@<model>\"}'",
                  p->name, (unsigned long long)p->routed_pending, waited, p->name);
    }
}

void kvdiag_request(kvdiag *d, const char *model, const char *target)
{
    pthread_mutex_lock(&d->mu);
    double now = now_s(d);
    bool fresh = model && !requested(d, model);
    if (fresh) {
        if (d->n_models == KVDIAG_MAX_MODELS) {   /* forget the oldest */
            memmove(d->models[0], d->models[1], (KVDIAG_MAX_MODELS - 1) * sizeof d->models[0]);
            d->n_models--;
        }
        copy(d->models[d->n_models++], model);
    }
    /* Pods publish, but none under this model: its keys can match nothing (an alias).
     * Counted per such request; the pods are named once, when the model is new. */
    if (model && d->n_published && !listed(d->published, d->n_published, model)) {
        d->counts[KVDIAG_MODEL_MISMATCH]++;
        for (size_t i = 0; fresh && i < d->n_pods; i++)
            for (int k = 0; k < d->pods[i].n_models; k++)
                note_mismatch(d, d->pods[i].name, d->pods[i].models[k], now);
    }
    pod_rec *p = target ? pod_get(d, target) : NULL;
    if (p && !p->routed_pending++)
        p->routed_since_s = now;
    if (now - d->checked_s >= CHECK_EVERY_S)
        check_locked(d, now);
    pthread_mutex_unlock(&d->mu);
}

void kvdiag_check(kvdiag *d)
{
    pthread_mutex_lock(&d->mu);
    check_locked(d, now_s(d));
    pthread_mutex_unlock(&d->mu);
}

void kvdiag_counts(kvdiag *d, uint64_t out[KVDIAG_REASON_COUNT])
{
    pthread_mutex_lock(&d->mu);
    memcpy(out, d->counts, sizeof d->counts);
    pthread_mutex_unlock(&d->mu);
}

json_t *kvdiag_pod_json(kvdiag *d, const char *pod)
{
    pthread_mutex_lock(&d->mu);
    double now = now_s(d);
    const pod_rec *p = pod_find(d, pod);
    json_t *o = NULL, *models = p ? json_array() : NULL;
    for (int i = 0; models && i < p->n_models; i++)
        json_array_append_new(models, json_string(p->models[i]));
    if (p && models)
        o = json_pack("{s:I, s:I, s:o, s:o, s:I, s:b}", "messages", (json_int_t)p->messages, "lastSeq",
                      (json_int_t)p->last_seq, "lastEventAgeSeconds",
                      p->last_event_s > 0 ? json_real(now - p->last_event_s) : json_null(), "models", models,
                      "routedSinceLastEvent", (json_int_t)p->routed_pending, "stale", p->stale);
    else
        json_decref(models);
    pthread_mutex_unlock(&d->mu);
    return o;
}

json_t *kvdiag_issues_json(kvdiag *d)
{
    json_t *a = json_array();
    pthread_mutex_lock(&d->mu);
    double now = now_s(d);
    for (size_t i = 0; a && i < d->n_issues; i++) {
        const issue *is = &d->issues[i];
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:I, s:f, s:s}", "reason", kvdiag_reason_name(is->reason),
                                           "pod", is->pod, "model", is->model, "count", (json_int_t)is->count,
                                           "ageSeconds", now - is->last_s, "message", is->message));
    }
    pthread_mutex_unlock(&d->mu);
    return a;
}

json_t *kvdiag_models_json(kvdiag *d)
{
    json_t *a = json_array();
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; a && i < d->n_models; i++)
        json_array_append_new(a, json_string(d->models[i]));
    pthread_mutex_unlock(&d->mu);
    return a;
}
