/* debugapi: the /debug/ inspection endpoints (see debugapi.h). Each answer is built as a
 * jansson tree from the sources' own getters and dumped once. */
#include "debugapi.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct debugapi {
    debugapi_config cfg;
    pthread_rwlock_t mu;          /* a dry run reads router; debugapi_set_router waits for it */
    route_router *router;
};

debugapi *debugapi_new(const debugapi_config *cfg, kv_err *err)
{
    debugapi *d = calloc(1, sizeof *d);
    if (!d) {
        kv_err_set(err, KV_ENOMEM, "debugapi: out of memory");
        return NULL;
    }
    d->cfg = *cfg;
    pthread_rwlock_init(&d->mu, NULL);
    return d;
}

void debugapi_free(debugapi *d)
{
    if (!d)
        return;
    pthread_rwlock_destroy(&d->mu);
    free(d);
}

void debugapi_set_router(debugapi *d, route_router *r)
{
    pthread_rwlock_wrlock(&d->mu);
    d->router = r;
    pthread_rwlock_unlock(&d->mu);
}

/* A number, or null when it is not finite (a pod never scraped has an infinite age). */
static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static void reply(promexp_http *h, int status, json_t *body)
{
    h->status = status;
    h->content_type = "application/json";
    h->out = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (!h->out)
        h->status = 500;
    else
        h->out_len = strlen(h->out);
    json_decref(body);
}

static void reply_error(promexp_http *h, int status, const char *msg)
{
    reply(h, status, json_pack("{s:s}", "error", msg));
}

/* ---- GET /debug/endpoints -------------------------------------------------------------- */

/* Entries each index holds for the endpoint, summed over the ingests' sources; -1 when
 * there is no precise index. */
static long long held(const debugapi *d, const char *name)
{
    long long n = -1;
    for (size_t i = 0; i < d->cfg.n_ingests; i++) {
        size_t ns;
        const sched_kvsource *src = ingest_sources(d->cfg.ingests[i], &ns);
        for (size_t k = 0; k < ns; k++) {
            int slot = kvindex_endpoint_find(src[k].index, name);
            n = (n < 0 ? 0 : n) + (slot < 0 ? 0 : (long long)kvindex_endpoint_entries(src[k].index, slot));
        }
    }
    return n;
}

static json_t *endpoint_json(const debugapi *d, const sched_endpoint *ep)
{
    const sched_metrics *m = &ep->m;
    json_t *labels = json_object();
    for (size_t i = 0; labels && i < ep->n_labels; i++)
        json_object_set_new(labels, ep->labels[i].key, json_string(ep->labels[i].value));
    json_t *events = d->cfg.diag ? kvdiag_pod_json(d->cfg.diag, ep->name) : NULL;
    long long blocks = held(d, ep->name);
    json_t *problems = json_array();
    if (!m->valid)
        json_array_append_new(problems, json_string("metrics-stale"));
    if (blocks >= 0) {   /* a precise index is fed: its events matter */
        json_int_t msgs = json_integer_value(json_object_get(events, "messages"));
        if (!msgs)
            json_array_append_new(problems, json_string("no-kv-events"));
        else if (json_is_true(json_object_get(events, "stale")))
            json_array_append_new(problems, json_string("kv-events-stale"));
        if (msgs && !blocks)
            json_array_append_new(problems, json_string("index-empty"));
    }
    const char *health = json_array_size(problems) ? json_string_value(json_array_get(problems, 0)) : "ok";
    return json_pack("{s:s, s:s, s:s, s:o, s:{s:b, s:o, s:i, s:i, s:f, s:i, s:i}, s:o, s:o, s:s, s:o}", "name", ep->name,
                     "pod", ep->pod ? ep->pod : ep->name, "namespace", ep->ns ? ep->ns : "", "labels",
                     labels ? labels : json_null(), "metrics", "valid", m->valid, "ageSeconds",
                     num(epset_metrics_age(d->cfg.endpoints, ep)), "waiting", m->waiting, "running", m->running,
                     "kvCacheUsage", m->kv_usage, "blockSize", (int)m->block_size, "numGpuBlocks",
                     (int)m->num_gpu_blocks, "kvEvents", events ? events : json_null(), "blocksHeld",
                     blocks >= 0 ? json_integer(blocks) : json_null(), "health", health, "problems", problems);
}

static json_t *counts_json(kvdiag *diag)
{
    json_t *o = json_object();
    uint64_t n[KVDIAG_REASON_COUNT];
    kvdiag_counts(diag, n);
    for (int r = 0; o && r < KVDIAG_REASON_COUNT; r++)
        json_object_set_new(o, kvdiag_reason_name((kvdiag_reason)r), json_integer((json_int_t)n[r]));
    return o;
}

static void serve_endpoints(debugapi *d, promexp_http *h)
{
    if (d->cfg.diag)
        kvdiag_check(d->cfg.diag);
    json_t *list = json_array();
    sched_endpoint *const *eps;
    size_t n = epset_acquire(d->cfg.endpoints, &eps);
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(list, endpoint_json(d, eps[i]));
    epset_release(d->cfg.endpoints);
    reply(h, 200,
          json_pack("{s:o, s:b, s:o, s:o, s:o}", "endpoints", list ? list : json_array(), "preciseIndex",
                    d->cfg.n_ingests > 0, "issues", d->cfg.diag ? kvdiag_issues_json(d->cfg.diag) : json_array(),
                    "counts", d->cfg.diag ? counts_json(d->cfg.diag) : json_object(), "requestModels",
                    d->cfg.diag ? kvdiag_models_json(d->cfg.diag) : json_array()));
}

/* ---- GET /debug/index ------------------------------------------------------------------- */

static json_t *index_json(const sched_kvsource *src)
{
    kvindex *ix = src->index;
    kvindex_stats st;
    kvindex_get_stats(ix, &st);
    json_t *slots = json_array();
    size_t shown = 0, live = 0;
    for (uint32_t s = 0; slots && s < kvindex_max_endpoints(ix); s++) {
        const char *name = kvindex_endpoint_name(ix, (int)s);
        if (!name)
            continue;
        live++;
        if (shown++ < DEBUGAPI_MAX_SLOTS)
            json_array_append_new(slots, json_pack("{s:i, s:s, s:I}", "slot", (int)s, "name", name, "entries",
                                                   (json_int_t)kvindex_endpoint_entries(ix, (int)s)));
    }
    const pps_kvevents *ev = &src->events;
    return json_pack("{s:i, s:s, s:{s:s, s:s, s:b, s:i}, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, "
                     "s:o, s:I}",
                     "blockSize", (int)src->keys.block_size, "hashAlgorithm", blockkeys_algo_name(src->keys.algo),
                     "kvEvents", "zmqEndpoint", ev->zmq_endpoint, "topicFilter", ev->topic_filter, "discoverPods",
                     ev->discover_pods, "socketPort", ev->socket_port, "stats", "blocks", (json_int_t)st.blocks,
                     "entries", (json_int_t)st.entries, "engineKeys", (json_int_t)st.engine_keys, "bytes",
                     (json_int_t)st.bytes, "admissions", (json_int_t)st.admissions, "evictions",
                     (json_int_t)st.evictions, "stores", (json_int_t)st.stores, "removes", (json_int_t)st.removes,
                     "clears", (json_int_t)st.clears, "lookups", (json_int_t)st.lookups, "endpoints",
                     slots ? slots : json_array(), "endpointsNotShown",
                     (json_int_t)(live > DEBUGAPI_MAX_SLOTS ? live - DEBUGAPI_MAX_SLOTS : 0));
}

static json_t *ingest_json(ingest *g)
{
    ingest_stats st;
    ingest_get_stats(g, &st);
    uint64_t decode = 0;
    for (int r = 0; r < KVEV_ERR_COUNT; r++)
        decode += st.decode_errors[r];
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "boundEndpoint", ingest_endpoint(g),
                     "messages", (json_int_t)st.messages, "batches", (json_int_t)st.batches, "rejectedPods",
                     (json_int_t)st.rejected_pods, "decodeErrors", (json_int_t)decode, "orphans",
                     (json_int_t)st.orphans, "blocksStored", (json_int_t)st.blocks_stored, "lostBatches",
                     (json_int_t)st.lost, "staleEndpoints", (json_int_t)st.stale_endpoints);
}

static void serve_index(debugapi *d, promexp_http *h)
{
    json_t *indexes = json_array(), *ingests = json_array();
    for (size_t i = 0; indexes && ingests && i < d->cfg.n_ingests; i++) {
        size_t ns;
        const sched_kvsource *src = ingest_sources(d->cfg.ingests[i], &ns);
        for (size_t k = 0; k < ns; k++)
            json_array_append_new(indexes, index_json(&src[k]));
        json_array_append_new(ingests, ingest_json(d->cfg.ingests[i]));
    }
    reply(h, 200, json_pack("{s:o, s:o}", "indexes", indexes ? indexes : json_array(), "ingests",
                            ingests ? ingests : json_array()));
}

/* ---- POST /debug/score ------------------------------------------------------------------ */

/* The endpoint's entry in the answer's "endpoints" object, made on first use. */
static json_t *ep_entry(json_t *eps, const char *name)
{
    json_t *e = json_object_get(eps, name);
    if (!e) {
        e = json_pack("{s:[], s:[]}", "scores", "filteredBy");
        json_object_set_new(eps, name, e);
    }
    return e;
}

static void plugin_name(const sched_plugin *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", p->type->type, p->name);
}

/* route_req.inspect: the dry run's decision, read while its endpoints are valid. */
static void on_inspect(void *ctx, const route_decision *d)
{
    json_t *out = ctx, *eps = json_object(), *pick = json_array(), *others = json_array();
    const sched_trace *t = d->trace;
    char plugin[256];
    for (size_t i = 0; t && i < t->n_removed; i++) {
        plugin_name(t->removed[i].plugin, plugin, sizeof plugin);
        json_array_append_new(json_object_get(ep_entry(eps, t->removed[i].ep->name), "filteredBy"),
                              json_pack("{s:s, s:s}", "profile", t->removed[i].profile, "plugin", plugin));
    }
    for (size_t i = 0; t && i < t->n_scores; i++) {
        const sched_trace_score *sc = &t->scores[i];
        plugin_name(sc->plugin, plugin, sizeof plugin);
        json_array_append_new(json_object_get(ep_entry(eps, sc->ep->name), "scores"),
                              json_pack("{s:s, s:s, s:f, s:f, s:f}", "profile", sc->profile, "plugin", plugin,
                                        "score", sc->score, "weight", sc->weight, "weighted",
                                        sc->score * sc->weight));
    }
    for (size_t i = 0; t && i < t->n_totals; i++)
        json_object_set_new(ep_entry(eps, t->totals[i].ep->name), "total", json_real(t->totals[i].score));
    const sched_result *res = d->result;
    for (size_t i = 0; d->target && res && i < res->n_targets; i++)
        json_array_append_new(pick, json_string(res->targets[i]->name));
    for (size_t i = 0; d->target && res && i < res->n_others; i++)
        json_array_append_new(others, json_pack("{s:s, s:s}", "profile", res->others[i].profile, "target",
                                                res->others[i].target ? res->others[i].target->name : ""));
    json_object_set_new(out, "profile", d->profile ? json_string(d->profile) : json_null());
    json_object_set_new(out, "pick", pick);
    json_object_set_new(out, "others", others);
    json_object_set_new(out, "tokens", json_integer((json_int_t)d->n_tokens));
    json_object_set_new(out, "tokenizeFailed", json_boolean(d->tokenize_failed));
    json_object_set_new(out, "shed", json_boolean(d->shed));
    json_object_set_new(out, "endpoints", eps);
}

static void score(route_router *router, promexp_http *h)
{
    json_t *out = json_object();
    route_req q;
    route_req_init(&q, router);
    q.inspect = on_inspect;
    q.inspect_ctx = out;
    int status = 500;
    const char *err = "out of memory";
    if (out && route_begin(&q, h->n_headers) == KV_OK) {
        bool ok = true;
        for (size_t i = 0; ok && i < h->n_headers; i++)
            ok = route_add_header(&q, h->headers[i].key, h->headers[i].value, strlen(h->headers[i].value)) == KV_OK;
        if (ok && route_headers_end(&q) == KV_OK) {
            if (!route_body_append(&q, (const uint8_t *)h->body, h->body_len)) {
                status = 413;
                err = "request body larger than the EPP's buffer limit";
            } else {
                status = route_decide(&q);
                err = q.error;
            }
        }
    }
    if (!out) {
        route_req_free(&q);
        reply_error(h, 500, "out of memory");
        return;
    }
    json_object_set_new(out, "dryRun", json_true());
    json_object_set_new(out, "status", json_integer(status));
    if (status != 200)
        json_object_set_new(out, "error", json_string(err));
    json_object_set_new(out, "requestId", q.request_id ? json_string(q.request_id) : json_null());
    json_object_set_new(out, "model", q.oreq.model ? json_string(q.oreq.model) : json_null());
    json_object_set_new(out, "targetModel", q.sreq.target_model ? json_string(q.sreq.target_model)
                                                                : (q.oreq.model ? json_string(q.oreq.model) : json_null()));
    route_req_free(&q);
    reply(h, 200, out);
}

static void serve_score(debugapi *d, promexp_http *h)
{
    pthread_rwlock_rdlock(&d->mu);
    if (d->router)
        score(d->router, h);
    else
        reply_error(h, 503, "the router is not running");
    pthread_rwlock_unlock(&d->mu);
}

/* ---- dispatch --------------------------------------------------------------------------- */

void debugapi_serve(void *ctx, promexp_http *h)
{
    debugapi *d = ctx;
    static const struct {
        const char *path, *method;
        void (*fn)(debugapi *, promexp_http *);
    } routes[] = {
        {"/debug/endpoints", "GET", serve_endpoints},
        {"/debug/index", "GET", serve_index},
        {"/debug/score", "POST", serve_score},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(h->url, routes[i].path))
            continue;
        if (strcmp(h->method, routes[i].method))
            reply_error(h, 405, routes[i].method[0] == 'G' ? "use GET" : "use POST with a request body");
        else
            routes[i].fn(d, h);
        return;
    }
    reply_error(h, 404, "unknown path: /debug/endpoints, /debug/score (POST) and /debug/index are served");
}
