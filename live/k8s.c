/* k8s: pod discovery through the Kubernetes API server (see k8s.h). */
#include "k8s.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "model_rewrites.h"
#include "objectives.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount/"
#define MAX_BODY (64u << 20)
#define WATCH_TIMEOUT_S 60

typedef struct pod {
    char *name;
    char ip[64];
    bool eligible;
    json_t *labels;               /* metadata.labels (owned reference) */
} pod;

/* One followed collection: LIST, then WATCH from the list's resourceVersion, on its own
 * thread. list replaces the collection's state from a LIST response; event applies one
 * watch event. */
typedef struct feed feed;
struct feed {
    k8s_watcher *w;
    const char *what;             /* "pod", "InferencePool", "InferenceObjective", ... (logs) */
    void (*path)(feed *f, char *out, size_t cap, bool watch);
    int (*list)(feed *f, json_t *items, kv_err *err);
    int (*event)(feed *f, const char *type, json_t *obj);
    char rv[64];                  /* resourceVersion to watch from */
    atomic_uint restart;          /* bumped by another feed: end the watch, LIST again */
    unsigned restart_seen;
    bool optional;                /* a 404 (CRD not installed) is waited out with one log line */
    bool need_list;
    pthread_t th;
    bool started;
};

struct k8s_watcher {
    k8s_config cfg;
    char base[1024], ns[256], token[8192], ca[1024], group[128];
    char *ca_pem;                 /* copy of cfg.ca_pem */
    bool https;
    pthread_mutex_t mu;           /* the pod table, selector, ports and pool_gone */
    char selector[1024];
    bool pool_gone;               /* the followed InferencePool was deleted: no endpoints */
    pod *pods;
    size_t n_pods;
    feed pods_feed, pool_feed, obj_feed, rw_feed;
    atomic_bool stop, synced;
    atomic_uint_fast64_t lists, watches, events, relists, errors, pods_ready, pool_changes;
};

/* ---- HTTP --------------------------------------------------------------------------------- */

typedef struct sink {
    feed *f;
    char *buf;
    size_t len;
    bool watch;                   /* split into lines and apply as watch events */
    bool failed;
} sink;

static int apply_event(feed *f, const char *line, size_t len);

static size_t on_data(char *p, size_t sz, size_t n, void *ctx)
{
    sink *s = ctx;
    size_t add = sz * n;
    if (s->len + add > MAX_BODY)
        return 0;
    char *g = realloc(s->buf, s->len + add + 1);
    if (!g)
        return 0;
    memcpy(g + s->len, p, add);
    s->buf = g;
    s->len += add;
    g[s->len] = 0;
    if (s->watch) {
        char *nl;
        while ((nl = memchr(s->buf, '\n', s->len))) {
            size_t line = (size_t)(nl - s->buf);
            if (line && apply_event(s->f, s->buf, line) != KV_OK)
                s->failed = true;
            memmove(s->buf, nl + 1, s->len - line - 1);
            s->len -= line + 1;
        }
    }
    return add;
}

/* Ends a transfer on shutdown, and a watch whose feed was asked to re-list. */
static int on_progress(void *ctx, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    const sink *s = ctx;
    return atomic_load(&s->f->w->stop) || (s->watch && atomic_load(&s->f->restart) != s->f->restart_seen);
}

/* GET base+path into s; *status gets the HTTP status. KV_EIO naming the URL. */
static int http_get(k8s_watcher *w, const char *path, sink *s, long timeout_s, long *status, kv_err *err)
{
    if (!s->f)
        s->f = &w->pods_feed; /* a one-off GET: only the stop flag matters */
    char url[4096];
    snprintf(url, sizeof url, "%s%s", w->base, path);
    CURL *c = curl_easy_init();
    if (!c)
        return kv_err_set(err, KV_ENOMEM, "k8s: out of memory");
    char auth[8300];
    struct curl_slist *h = NULL;
    if (w->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->token);
        h = curl_slist_append(h, auth);
    }
    h = curl_slist_append(h, "Accept: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (w->https && w->ca_pem) {
        struct curl_blob blob = {.data = w->ca_pem, .len = strlen(w->ca_pem), .flags = CURL_BLOB_COPY};
        curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
    } else if (w->https && w->ca[0]) {
        curl_easy_setopt(c, CURLOPT_CAINFO, w->ca);
    }
    if (w->https && w->cfg.insecure_skip_tls_verify) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    CURLcode rc = curl_easy_perform(c);
    *status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK && !(rc == CURLE_OPERATION_TIMEDOUT && s->watch))
        return kv_err_set(err, KV_EIO, "k8s: GET %s: %s", url, curl_easy_strerror(rc));
    return KV_OK;
}

static int get_json(k8s_watcher *w, const char *path, json_t **out, kv_err *err)
{
    sink s = {0};
    long status;
    int rc = http_get(w, path, &s, 30, &status, err);
    if (rc == KV_OK && status != 200)
        rc = kv_err_set(err, status == 404 ? KV_ENOTFOUND : KV_EIO, "k8s: GET %s%s: HTTP %ld%s%.200s", w->base, path,
                        status, s.len ? ": " : "", s.buf ? s.buf : "");
    if (rc == KV_OK) {
        json_error_t je;
        if (!(*out = json_loadb(s.buf ? s.buf : "", s.len, 0, &je)))
            rc = kv_err_set(err, KV_EPARSE, "k8s: GET %s%s: bad JSON at line %d: %s", w->base, path, je.line, je.text);
    }
    free(s.buf);
    return rc;
}

/* ---- pod table -> endpoint set ------------------------------------------------------------- */

static bool pod_ready(json_t *obj, const char **ip)
{
    json_t *md = json_object_get(obj, "metadata"), *st = json_object_get(obj, "status");
    *ip = json_string_value(json_object_get(st, "podIP"));
    if (json_object_get(md, "deletionTimestamp") && !json_is_null(json_object_get(md, "deletionTimestamp")))
        return false;
    if (!*ip || !**ip)
        return false;
    size_t i;
    json_t *cond;
    json_array_foreach(json_object_get(st, "conditions"), i, cond) {
        const char *t = json_string_value(json_object_get(cond, "type"));
        const char *v = json_string_value(json_object_get(cond, "status"));
        if (t && v && !strcmp(t, "Ready"))
            return !strcmp(v, "True");
    }
    return false;
}

static pod *pod_find(k8s_watcher *w, const char *name)
{
    for (size_t i = 0; i < w->n_pods; i++)
        if (!strcmp(w->pods[i].name, name))
            return &w->pods[i];
    return NULL;
}

static void pod_drop(k8s_watcher *w, pod *p)
{
    free(p->name);
    json_decref(p->labels);
    *p = w->pods[--w->n_pods];
}

/* Records a pod object (ADDED/MODIFIED or a list item). */
static int pod_put(k8s_watcher *w, json_t *obj)
{
    const char *name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    if (!name)
        return KV_EPARSE;
    const char *ip;
    bool ok = pod_ready(obj, &ip);
    pod *p = pod_find(w, name);
    if (!p) {
        pod *g = realloc(w->pods, (w->n_pods + 1) * sizeof *g);
        if (!g)
            return KV_ENOMEM;
        w->pods = g;
        p = &w->pods[w->n_pods];
        *p = (pod){.name = strdup(name)};
        if (!p->name)
            return KV_ENOMEM;
        w->n_pods++;
    }
    p->eligible = ok;
    snprintf(p->ip, sizeof p->ip, "%s", ip ? ip : "");
    json_decref(p->labels);
    p->labels = json_incref(json_object_get(json_object_get(obj, "metadata"), "labels"));
    return KV_OK;
}

static int cmp_pod(const void *a, const void *b) { return strcmp(((const pod *)a)->name, ((const pod *)b)->name); }

/* Hands the eligible pods x target ports to the endpoint set (none while the pool is
 * deleted). Caller holds w->mu. */
static int publish(k8s_watcher *w, kv_err *err)
{
    if (w->pool_gone) {
        atomic_store(&w->pods_ready, 0);
        return epset_sync(w->cfg.endpoints, NULL, 0, err);
    }
    if (w->n_pods)
        qsort(w->pods, w->n_pods, sizeof *w->pods, cmp_pod);
    size_t np = w->cfg.n_target_ports, n = 0, ready = 0, nl = 0;
    for (size_t i = 0; i < w->n_pods; i++)
        if (w->pods[i].eligible) {
            ready++;
            nl += json_object_size(w->pods[i].labels);
        }
    ep_spec *specs = calloc(ready * np + 1, sizeof *specs);
    char (*names)[96] = calloc(ready * np + 1, sizeof *names);
    char (*pods)[300] = calloc(ready * np + 1, sizeof *pods);
    sched_kv *labels = calloc(nl + 1, sizeof *labels);
    int rc = KV_OK;
    if (!specs || !names || !pods || !labels)
        rc = kv_err_set(err, KV_ENOMEM, "k8s: out of memory");
    size_t li = 0;
    for (size_t i = 0; rc == KV_OK && i < w->n_pods; i++) {
        pod *p = &w->pods[i];
        if (!p->eligible)
            continue;
        size_t first = li;
        const char *k;
        json_t *v;
        json_object_foreach(p->labels, k, v) labels[li++] = (sched_kv){k, json_string_value(v) ? json_string_value(v) : ""};
        for (size_t j = 0; j < np; j++, n++) {
            /* IPv6 pod IPs need brackets to stay "host:port". */
            snprintf(names[n], sizeof names[n], strchr(p->ip, ':') ? "[%s]:%d" : "%s:%d", p->ip, w->cfg.target_ports[j]);
            snprintf(pods[n], sizeof pods[n], "%s-rank-%zu", p->name, j);
            specs[n] = (ep_spec){.name = names[n], .pod = pods[n], .ns = w->ns, .labels = labels + first,
                                 .n_labels = li - first};
        }
    }
    if (rc == KV_OK)
        rc = epset_sync(w->cfg.endpoints, specs, n, err);
    atomic_store(&w->pods_ready, ready);
    free(specs);
    free(names);
    free(pods);
    free(labels);
    return rc;
}

static int apply_event(feed *f, const char *line, size_t len)
{
    json_t *ev = json_loadb(line, len, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *obj = json_object_get(ev, "object");
    int rc = KV_OK;
    if (!type || !json_is_object(obj))
        rc = KV_EPARSE;
    else if (!strcmp(type, "ERROR"))
        rc = KV_ESTATE;   /* e.g. 410 Gone: the resourceVersion is too old; re-list */
    else {
        const char *rv = json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
        if (rv)
            snprintf(f->rv, sizeof f->rv, "%s", rv);
        if (strcmp(type, "BOOKMARK")) {
            atomic_fetch_add(&f->w->events, 1);
            rc = f->event(f, type, obj);
        }
    }
    json_decref(ev);
    return rc;
}

static const char *obj_name(json_t *obj)
{
    return json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
}

static int pods_event(feed *f, const char *type, json_t *obj)
{
    k8s_watcher *w = f->w;
    int rc = KV_OK;
    pthread_mutex_lock(&w->mu);
    if (!strcmp(type, "DELETED")) {
        const char *name = obj_name(obj);
        pod *p = name ? pod_find(w, name) : NULL;
        if (p)
            pod_drop(w, p);
    } else
        rc = pod_put(w, obj);
    kv_err err = {0};
    if (rc == KV_OK && (rc = publish(w, &err)) != KV_OK)
        LOG_E("Endpoint set update failed", "{s:s}", "error", err.msg);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* ---- list / watch ---------------------------------------------------------------------------- */

/* A collection path; the watch form resumes from f->rv. query: "" or "&..." filters. */
static void feed_path(feed *f, char *out, size_t cap, const char *collection, const char *query, bool watch)
{
    char *rv = curl_easy_escape(NULL, f->rv, 0);
    snprintf(out, cap, "%s?limit=0%s%s%s%s", collection, query, watch ? "&watch=1&allowWatchBookmarks=true&resourceVersion=" : "",
             watch && rv ? rv : "", watch ? "&timeoutSeconds=" "60" : "");
    curl_free(rv);
}

static void pods_path(feed *f, char *out, size_t cap, bool watch)
{
    k8s_watcher *w = f->w;
    char coll[512], query[1200];
    snprintf(coll, sizeof coll, "/api/v1/namespaces/%s/pods", w->ns);
    pthread_mutex_lock(&w->mu);
    char *sel = curl_easy_escape(NULL, w->selector, 0);
    pthread_mutex_unlock(&w->mu);
    snprintf(query, sizeof query, "&labelSelector=%s", sel ? sel : "");
    curl_free(sel);
    feed_path(f, out, cap, coll, query, watch);
}

static int pods_list(feed *f, json_t *items, kv_err *err)
{
    k8s_watcher *w = f->w;
    int rc = KV_OK;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_pods; i++) {
        free(w->pods[i].name);
        json_decref(w->pods[i].labels);
    }
    w->n_pods = 0;
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item) {
        if ((rc = pod_put(w, item)) != KV_OK) {
            rc = kv_err_set(err, rc, "k8s: pod list item %zu: no metadata.name (or out of memory)", i);
            break;
        }
    }
    if (rc == KV_OK)
        rc = publish(w, err);
    pthread_mutex_unlock(&w->mu);
    atomic_fetch_add(&w->lists, 1);
    return rc;
}

/* A LIST reply into the feed's state, and the resourceVersion to watch from. */
static int feed_list_reply(feed *f, json_t *list, kv_err *err)
{
    const char *rv = json_string_value(json_object_get(json_object_get(list, "metadata"), "resourceVersion"));
    snprintf(f->rv, sizeof f->rv, "%s", rv ? rv : "");
    return f->list(f, json_object_get(list, "items"), err);
}

/* LIST into the feed's state; KV_ENOTFOUND when the collection does not exist. */
static int feed_list(feed *f, kv_err *err)
{
    char path[2048];
    f->restart_seen = atomic_load(&f->restart); /* a bump from here on ends the next watch */
    f->path(f, path, sizeof path, false);
    json_t *list;
    int rc = get_json(f->w, path, &list, err);
    if (rc != KV_OK)
        return rc;
    rc = feed_list_reply(f, list, err);
    json_decref(list);
    return rc;
}

static void backoff(k8s_watcher *w, int ms)
{
    for (int t = 0; t < ms / 10 && !atomic_load(&w->stop); t++)
        usleep(10000);
}

static void *feed_main(void *arg)
{
    feed *f = arg;
    k8s_watcher *w = f->w;
    bool said_missing = false;
    while (!atomic_load(&w->stop)) {
        kv_err err = {0};
        if (f->need_list) {
            atomic_fetch_add(&w->relists, 1);
            int rc = feed_list(f, &err);
            if (rc == KV_ENOTFOUND && f->optional) {
                if (!said_missing)
                    LOG_I("Collection not served (CRD not installed?); will look again", "{s:s, s:s}", "kind", f->what,
                          "error", err.msg);
                said_missing = true;
                backoff(w, 10 * w->cfg.retry_ms);
                continue;
            }
            if (rc != KV_OK) {
                atomic_fetch_add(&w->errors, 1);
                LOG_W("List failed; retrying", "{s:s, s:s}", "kind", f->what, "error", err.msg);
                backoff(w, w->cfg.retry_ms);
                continue;
            }
            f->need_list = false;
        }
        char path[2048];
        f->path(f, path, sizeof path, true);
        sink s = {.f = f, .watch = true};
        long status;
        atomic_fetch_add(&w->watches, 1);
        int rc = http_get(w, path, &s, WATCH_TIMEOUT_S + 5, &status, &err);
        free(s.buf);
        if (atomic_load(&w->stop))
            break;
        if (atomic_load(&f->restart) != f->restart_seen) {
            f->need_list = true; /* asked to (the selector changed), not a failure */
        } else if (rc != KV_OK || status != 200 || s.failed) {
            atomic_fetch_add(&w->errors, 1);
            if (rc != KV_OK || status != 200)
                LOG_W("Watch failed; re-listing", "{s:s, s:s, s:i}", "kind", f->what, "error", err.msg, "status",
                      (int)status);
            f->need_list = true;
            backoff(w, w->cfg.retry_ms);
        }
    }
    return NULL;
}

/* ---- the InferencePool ------------------------------------------------------------------------ */

/* spec.selector.matchLabels (v1) or a flat spec.selector (v1alpha2), and the ports. */
static int parse_pool(k8s_watcher *w, json_t *pool, char *sel, size_t cap, int *ports, size_t *n, kv_err *err)
{
    json_t *spec = json_object_get(pool, "spec"), *js = json_object_get(spec, "selector");
    json_t *ml = json_object_get(js, "matchLabels");
    if (!json_is_object(ml))
        ml = js;
    size_t off = 0;
    const char *k;
    json_t *v;
    sel[0] = 0;
    json_object_foreach(ml, k, v) {
        if (!json_is_string(v))
            continue;
        off += (size_t)snprintf(sel + off, off < cap ? cap - off : 0, "%s%s=%s", off ? "," : "", k,
                                json_string_value(v));
    }
    *n = 0;
    size_t i;
    json_t *tp;
    json_array_foreach(json_object_get(spec, "targetPorts"), i, tp) {
        json_int_t port = json_integer_value(json_object_get(tp, "number"));
        if (port >= 1 && port <= 65535 && *n < K8S_MAX_PORTS)
            ports[(*n)++] = (int)port;
    }
    json_int_t legacy = json_integer_value(json_object_get(spec, "targetPortNumber"));
    if (!*n && legacy >= 1 && legacy <= 65535)
        ports[(*n)++] = (int)legacy;
    if (!sel[0] || off >= cap)
        return kv_err_set(err, KV_EINVAL, "k8s: InferencePool %s/%s: spec.selector.matchLabels is empty or too long",
                          w->ns, w->cfg.pool_name);
    if (!*n)
        return kv_err_set(err, KV_EINVAL, "k8s: InferencePool %s/%s: no spec.targetPorts[].number", w->ns,
                          w->cfg.pool_name);
    return KV_OK;
}

/* The pool (re)appeared or changed: a new selector means a new pod LIST (the pods feed
 * is told to restart), new ports only a new endpoint set. */
static void pool_apply(feed *f, json_t *pool)
{
    k8s_watcher *w = f->w;
    char sel[sizeof w->selector];
    int ports[K8S_MAX_PORTS];
    size_t n;
    kv_err err = {0};
    if (parse_pool(w, pool, sel, sizeof sel, ports, &n, &err) != KV_OK) {
        atomic_fetch_add(&w->errors, 1);
        LOG_W("InferencePool change ignored", "{s:s}", "error", err.msg);
        return;
    }
    pthread_mutex_lock(&w->mu);
    bool was_gone = w->pool_gone, sel_changed = strcmp(sel, w->selector) != 0;
    bool ports_changed = n != w->cfg.n_target_ports || memcmp(ports, w->cfg.target_ports, n * sizeof *ports);
    if (was_gone || sel_changed || ports_changed) {
        memcpy(w->selector, sel, sizeof sel);
        memcpy(w->cfg.target_ports, ports, n * sizeof *ports);
        w->cfg.n_target_ports = n;
        w->pool_gone = false;
        atomic_fetch_add(&w->pool_changes, 1);
        if (was_gone || sel_changed)
            atomic_fetch_add(&w->pods_feed.restart, 1);
        else if (publish(w, &err) != KV_OK)
            LOG_E("Endpoint set update failed", "{s:s}", "error", err.msg);
        LOG_I("InferencePool changed", "{s:s, s:s, s:i}", "pool", w->cfg.pool_name, "selector", sel, "targetPorts",
              (int)n);
    }
    pthread_mutex_unlock(&w->mu);
}

static void pool_deleted(feed *f)
{
    k8s_watcher *w = f->w;
    kv_err err = {0};
    pthread_mutex_lock(&w->mu);
    if (!w->pool_gone) {
        w->pool_gone = true;
        atomic_fetch_add(&w->pool_changes, 1);
        LOG_W("InferencePool deleted; no endpoints until it is back", "{s:s}", "pool", w->cfg.pool_name);
        if (publish(w, &err) != KV_OK)
            LOG_E("Endpoint set update failed", "{s:s}", "error", err.msg);
    }
    pthread_mutex_unlock(&w->mu);
}

/* GIE's two pool groups: inference.networking.x-k8s.io serves only v1alpha2. */
static const char *pool_version(const k8s_watcher *w)
{
    return strcmp(w->group, "inference.networking.x-k8s.io") ? "v1" : "v1alpha2";
}

static void pool_path(feed *f, char *out, size_t cap, bool watch)
{
    k8s_watcher *w = f->w;
    char coll[768], query[400];
    snprintf(coll, sizeof coll, "/apis/%s/%s/namespaces/%s/inferencepools", w->group, pool_version(w), w->ns);
    char *name = curl_easy_escape(NULL, w->cfg.pool_name, 0);
    snprintf(query, sizeof query, "&fieldSelector=metadata.name%%3D%s", name ? name : "");
    curl_free(name);
    feed_path(f, out, cap, coll, query, watch);
}

static int pool_list(feed *f, json_t *items, kv_err *err)
{
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item) {
        const char *name = obj_name(item);
        if (name && !strcmp(name, f->w->cfg.pool_name)) {
            pool_apply(f, item);
            return KV_OK;
        }
    }
    pool_deleted(f);
    return KV_OK;
}

static int pool_event(feed *f, const char *type, json_t *obj)
{
    const char *name = obj_name(obj);
    if (!name || strcmp(name, f->w->cfg.pool_name))
        return KV_OK;
    if (!strcmp(type, "DELETED"))
        pool_deleted(f);
    else
        pool_apply(f, obj);
    return KV_OK;
}

/* ---- InferenceObjectives ------------------------------------------------------------------------ */

/* Whether a GIE object's spec.poolRef names our pool (any pool, in selector mode). */
static bool of_our_pool(k8s_watcher *w, json_t *obj)
{
    json_t *ref = json_object_get(json_object_get(obj, "spec"), "poolRef");
    const char *pool = json_string_value(json_object_get(ref, "name"));
    return !w->cfg.pool_name || (pool && !strcmp(pool, w->cfg.pool_name));
}

/* The objective's name and priority when it belongs to our pool (any pool without one). */
static bool objective_of_pool(k8s_watcher *w, json_t *obj, const char **name, int *priority)
{
    json_int_t p = json_integer_value(json_object_get(json_object_get(obj, "spec"), "priority"));
    *name = obj_name(obj);
    *priority = p < INT_MIN ? INT_MIN : p > INT_MAX ? INT_MAX : (int)p;
    return *name && of_our_pool(w, obj);
}

/* A collection of GIE's x-k8s.io v1alpha2 group in the pool's namespace. */
static void x_k8s_path(feed *f, const char *resource, char *out, size_t cap, bool watch)
{
    char coll[512];
    snprintf(coll, sizeof coll, "/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/%s/%s", f->w->ns, resource);
    feed_path(f, out, cap, coll, "", watch);
}

static void obj_path(feed *f, char *out, size_t cap, bool watch)
{
    x_k8s_path(f, "inferenceobjectives", out, cap, watch);
}

static int obj_list(feed *f, json_t *items, kv_err *err)
{
    size_t n = json_array_size(items), k = 0;
    objective_spec *specs = calloc(n ? n : 1, sizeof *specs);
    if (!specs)
        return kv_err_set(err, KV_ENOMEM, "k8s: out of memory");
    for (size_t i = 0; i < n; i++)
        if (objective_of_pool(f->w, json_array_get(items, i), &specs[k].name, &specs[k].priority))
            k++;
    int rc = objectives_sync(f->w->cfg.objectives, specs, k, err);
    free(specs);
    return rc;
}

static int obj_event(feed *f, const char *type, json_t *obj)
{
    const char *name;
    int priority;
    bool ours = objective_of_pool(f->w, obj, &name, &priority);
    if (!name)
        return KV_EPARSE;
    if (!ours || !strcmp(type, "DELETED")) /* deleted, or moved to another pool */
        objectives_remove(f->w->cfg.objectives, name);
    else if (objectives_put(f->w->cfg.objectives, name, priority, NULL) != KV_OK)
        return KV_ENOMEM;
    return KV_OK;
}

/* ---- InferenceModelRewrites ----------------------------------------------------------------------- */

static void rw_path(feed *f, char *out, size_t cap, bool watch)
{
    x_k8s_path(f, "inferencemodelrewrites", out, cap, watch);
}

static int rw_list(feed *f, json_t *items, kv_err *err)
{
    size_t n = json_array_size(items), k = 0;
    model_rewrite **blocks = calloc(n ? n : 1, sizeof *blocks);
    model_rewrite *v = calloc(n ? n : 1, sizeof *v);
    int rc = blocks && v ? KV_OK : kv_err_set(err, KV_ENOMEM, "k8s: out of memory");
    for (size_t i = 0; rc == KV_OK && i < n; i++) {
        json_t *obj = json_array_get(items, i);
        if (of_our_pool(f->w, obj) && (blocks[k] = model_rewrites_from_json(obj)))
            v[k] = *blocks[k], k++;
    }
    if (rc == KV_OK)
        rc = model_rewrites_sync(f->w->cfg.model_rewrites, v, k, err);
    for (size_t i = 0; i < k; i++)
        free(blocks[i]);
    free(blocks);
    free(v);
    return rc;
}

static int rw_event(feed *f, const char *type, json_t *obj)
{
    const char *name = obj_name(obj);
    if (!name)
        return KV_EPARSE;
    if (!of_our_pool(f->w, obj) || !strcmp(type, "DELETED")) { /* deleted, or moved to another pool */
        model_rewrites_remove(f->w->cfg.model_rewrites, name);
        return KV_OK;
    }
    model_rewrite *rw = model_rewrites_from_json(obj);
    int rc = rw ? model_rewrites_put(f->w->cfg.model_rewrites, rw, NULL) : KV_ENOMEM;
    free(rw);
    return rc;
}

/* ---- set-up ------------------------------------------------------------------------------- */

int k8s_parse_ports(const char *list, int *ports, size_t *n, kv_err *err)
{
    *n = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        char item[16];
        snprintf(item, sizeof item, "%.*s", (int)(len < 15 ? len : 15), p);
        char *end;
        long v = strtol(item, &end, 10);
        if (!len || len > 5 || *end || v < 1 || v > 65535)
            return kv_err_set(err, KV_EINVAL, "target ports: '%.*s' is not a port", (int)len, p);
        if (*n == K8S_MAX_PORTS)
            return kv_err_set(err, KV_ERANGE, "target ports: more than %d", K8S_MAX_PORTS);
        ports[(*n)++] = (int)v;
        p += len + (p[len] == ',');
    }
    return *n ? KV_OK : kv_err_set(err, KV_EINVAL, "target ports: none given");
}

/* The pool as it is at start-up: a missing or unusable pool fails start-up. */
static int read_pool(k8s_watcher *w, kv_err *err)
{
    char path[1024];
    snprintf(path, sizeof path, "/apis/%s/%s/namespaces/%s/inferencepools/%s", w->group, pool_version(w), w->ns,
             w->cfg.pool_name);
    json_t *pool;
    int rc = get_json(w, path, &pool, err);
    if (rc != KV_OK)
        return rc;
    rc = parse_pool(w, pool, w->selector, sizeof w->selector, w->cfg.target_ports, &w->cfg.n_target_ports, err);
    const char *rv = json_string_value(json_object_get(json_object_get(pool, "metadata"), "resourceVersion"));
    snprintf(w->pool_feed.rv, sizeof w->pool_feed.rv, "%s", rv ? rv : "");
    json_decref(pool);
    return rc;
}

static int read_file(const char *path, char *out, size_t cap, kv_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return kv_err_set(err, KV_EIO, "k8s: %s: %s", path, strerror(errno));
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        n--;
    out[n] = 0;
    return KV_OK;
}

static void feed_init(feed *f, k8s_watcher *w, const char *what, void (*path)(feed *, char *, size_t, bool),
                      int (*list)(feed *, json_t *, kv_err *), int (*event)(feed *, const char *, json_t *))
{
    *f = (feed){.w = w, .what = what, .path = path, .list = list, .event = event};
}

static int feed_start(feed *f, kv_err *err)
{
    if (pthread_create(&f->th, NULL, feed_main, f))
        return kv_err_set(err, KV_EIO, "k8s: cannot start the %s watcher", f->what);
    f->started = true;
    return KV_OK;
}

/* The watcher without its HTTP side: config, feeds, namespace, group, selector. */
static k8s_watcher *watcher_new(const k8s_config *cfg, kv_err *err)
{
    if (!cfg->endpoints || (!cfg->selector && !cfg->pool_name)) {
        kv_err_set(err, KV_EINVAL, "k8s: an endpoint set and a selector or pool name are required");
        return NULL;
    }
    if (cfg->selector && !cfg->pool_name && !cfg->n_target_ports) {
        kv_err_set(err, KV_EINVAL, "k8s: --endpoint-selector needs target ports (--endpoint-target-ports)");
        return NULL;
    }
    k8s_watcher *w = calloc(1, sizeof *w);
    if (!w) {
        kv_err_set(err, KV_ENOMEM, "k8s: out of memory");
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    w->cfg = *cfg;
    feed_init(&w->pods_feed, w, "pod", pods_path, pods_list, pods_event);
    feed_init(&w->pool_feed, w, "InferencePool", pool_path, pool_list, pool_event);
    feed_init(&w->obj_feed, w, "InferenceObjective", obj_path, obj_list, obj_event);
    w->obj_feed.optional = w->obj_feed.need_list = true;
    feed_init(&w->rw_feed, w, "InferenceModelRewrite", rw_path, rw_list, rw_event);
    w->rw_feed.optional = w->rw_feed.need_list = true;
    if (w->cfg.retry_ms <= 0)
        w->cfg.retry_ms = 1000;
    const char *ns = cfg->ns ? cfg->ns : getenv("NAMESPACE");
    snprintf(w->ns, sizeof w->ns, "%s", ns && *ns ? ns : "default");
    snprintf(w->group, sizeof w->group, "%s", cfg->pool_group ? cfg->pool_group : "inference.networking.k8s.io");
    if (cfg->selector)
        snprintf(w->selector, sizeof w->selector, "%s", cfg->selector);
    return w;
}

k8s_watcher *k8s_start(const k8s_config *cfg, kv_err *err)
{
    k8s_watcher *w = watcher_new(cfg, err);
    if (!w)
        return NULL;
    if (cfg->base_url)
        snprintf(w->base, sizeof w->base, "%s", cfg->base_url);
    else {
        const char *h = getenv("KUBERNETES_SERVICE_HOST"), *p = getenv("KUBERNETES_SERVICE_PORT");
        if (!h || !p) {
            kv_err_set(err, KV_EINVAL, "k8s: KUBERNETES_SERVICE_HOST/PORT are not set (not running in a cluster?)");
            k8s_stop(w);
            return NULL;
        }
        snprintf(w->base, sizeof w->base, strchr(h, ':') ? "https://[%s]:%s" : "https://%s:%s", h, p);
    }
    w->https = !strncmp(w->base, "https:", 6);
    bool in_cluster = !cfg->base_url;
    const char *ca = cfg->ca_path ? cfg->ca_path : in_cluster ? SA_DIR "ca.crt" : "";
    snprintf(w->ca, sizeof w->ca, "%s", ca);
    if (cfg->ca_pem && !(w->ca_pem = strdup(cfg->ca_pem))) {
        kv_err_set(err, KV_ENOMEM, "k8s: out of memory");
        k8s_stop(w);
        return NULL;
    }
    const char *tok = cfg->token_path ? cfg->token_path : in_cluster ? SA_DIR "token" : NULL;
    if (cfg->token) {
        if (strlen(cfg->token) >= sizeof w->token) {
            kv_err_set(err, KV_EINVAL, "k8s: bearer token longer than %zu bytes", sizeof w->token - 1);
            k8s_stop(w);
            return NULL;
        }
        snprintf(w->token, sizeof w->token, "%s", cfg->token);
    } else if (tok && read_file(tok, w->token, sizeof w->token, err) != KV_OK && (cfg->token_path || w->https)) {
        k8s_stop(w);
        return NULL;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    bool follow_pool = cfg->pool_name && !cfg->selector;
    if ((follow_pool && read_pool(w, err) != KV_OK) || feed_list(&w->pods_feed, err) != KV_OK) {
        k8s_stop(w);
        return NULL;
    }
    atomic_store(&w->synced, true);
    if (feed_start(&w->pods_feed, err) != KV_OK || (follow_pool && feed_start(&w->pool_feed, err) != KV_OK) ||
        (cfg->objectives && feed_start(&w->obj_feed, err) != KV_OK) ||
        (cfg->model_rewrites && feed_start(&w->rw_feed, err) != KV_OK)) {
        k8s_stop(w);
        return NULL;
    }
    return w;
}

void k8s_stop(k8s_watcher *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, true);
    feed *feeds[] = {&w->pods_feed, &w->pool_feed, &w->obj_feed, &w->rw_feed};
    for (size_t i = 0; i < 4; i++)
        if (feeds[i]->started)
            pthread_join(feeds[i]->th, NULL);
    for (size_t i = 0; i < w->n_pods; i++) {
        free(w->pods[i].name);
        json_decref(w->pods[i].labels);
    }
    free(w->pods);
    free(w->ca_pem);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

k8s_watcher *k8s_detached(const k8s_config *cfg, kv_err *err) { return watcher_new(cfg, err); }

static feed *feed_of(k8s_watcher *w, k8s_collection c)
{
    switch (c) {
    case K8S_POOL: return w->cfg.pool_name && !w->cfg.selector ? &w->pool_feed : NULL;
    case K8S_OBJECTIVES: return w->cfg.objectives ? &w->obj_feed : NULL;
    case K8S_REWRITES: return w->cfg.model_rewrites ? &w->rw_feed : NULL;
    default: return &w->pods_feed;
    }
}

int k8s_feed_list(k8s_watcher *w, k8s_collection c, const char *body, size_t len, kv_err *err)
{
    feed *f = feed_of(w, c);
    if (!f)
        return kv_err_set(err, KV_EINVAL, "k8s: that collection is not followed");
    json_error_t je;
    json_t *list = json_loadb(body, len, 0, &je);
    if (!list)
        return kv_err_set(err, KV_EPARSE, "k8s: LIST reply: bad JSON at line %d: %s", je.line, je.text);
    int rc = feed_list_reply(f, list, err);
    json_decref(list);
    return rc;
}

bool k8s_feed_watch(k8s_watcher *w, k8s_collection c, const char *body, size_t len, size_t chunk)
{
    feed *f = feed_of(w, c);
    if (!f)
        return false;
    sink s = {.f = f, .watch = true};
    for (size_t off = 0; off < len && !s.failed;) {
        size_t n = chunk && chunk < len - off ? chunk : len - off;
        if (on_data((char *)body + off, 1, n, &s) != n)
            s.failed = true;
        off += n;
    }
    free(s.buf);
    return !s.failed;
}

bool k8s_synced(const k8s_watcher *w) { return atomic_load(&((k8s_watcher *)w)->synced); }

void k8s_selector(k8s_watcher *w, char *out, size_t cap)
{
    pthread_mutex_lock(&w->mu);
    snprintf(out, cap, "%s", w->selector);
    pthread_mutex_unlock(&w->mu);
}

void k8s_get_stats(const k8s_watcher *w, k8s_stats *out)
{
    k8s_watcher *m = (k8s_watcher *)w;
    *out = (k8s_stats){atomic_load(&m->lists),  atomic_load(&m->watches),    atomic_load(&m->events),
                       atomic_load(&m->relists), atomic_load(&m->errors),    atomic_load(&m->pods_ready),
                       atomic_load(&m->pool_changes)};
}
