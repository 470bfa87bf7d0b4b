/* k8s: pod discovery through the Kubernetes API server (see k8s.h). */
#include "k8s.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount/"
#define MAX_BODY (64u << 20)
#define WATCH_TIMEOUT_S 60

typedef struct pod {
    char *name;
    char ip[64];
    bool eligible;
    json_t *labels;               /* metadata.labels (owned reference) */
} pod;

struct k8s_watcher {
    k8s_config cfg;
    char base[512], ns[256], selector[1024], token[8192], ca[512], group[128];
    bool https;
    pod *pods;
    size_t n_pods;
    char rv[64];                  /* resourceVersion to watch from */
    pthread_t th;
    bool started;
    atomic_bool stop, synced;
    atomic_uint_fast64_t lists, watches, events, relists, errors, pods_ready;
};

/* ---- HTTP --------------------------------------------------------------------------------- */

typedef struct sink {
    k8s_watcher *w;
    char *buf;
    size_t len;
    bool watch;                   /* split into lines and apply as watch events */
    bool failed;
} sink;

static int apply_event(k8s_watcher *w, const char *line, size_t len);

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
            if (line && apply_event(s->w, s->buf, line) != KV_OK)
                s->failed = true;
            memmove(s->buf, nl + 1, s->len - line - 1);
            s->len -= line + 1;
        }
    }
    return add;
}

static int on_progress(void *ctx, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    return atomic_load(&((k8s_watcher *)ctx)->stop) ? 1 : 0;
}

/* GET base+path into s; *status gets the HTTP status. KV_EIO naming the URL. */
static int http_get(k8s_watcher *w, const char *path, sink *s, long timeout_s, long *status, kv_err *err)
{
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
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, w);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (w->https && w->ca[0])
        curl_easy_setopt(c, CURLOPT_CAINFO, w->ca);
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
    sink s = {.w = w};
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

/* Hands the eligible pods x target ports to the endpoint set. */
static int publish(k8s_watcher *w, kv_err *err)
{
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

static int apply_event(k8s_watcher *w, const char *line, size_t len)
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
            snprintf(w->rv, sizeof w->rv, "%s", rv);
        if (strcmp(type, "BOOKMARK")) {
            atomic_fetch_add(&w->events, 1);
            if (!strcmp(type, "DELETED")) {
                const char *name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
                pod *p = name ? pod_find(w, name) : NULL;
                if (p)
                    pod_drop(w, p);
            } else
                rc = pod_put(w, obj);
            kv_err err = {0};
            if (rc == KV_OK && (rc = publish(w, &err)) != KV_OK)
                LOG_E("Endpoint set update failed", "{s:s}", "error", err.msg);
        }
    }
    json_decref(ev);
    return rc;
}

/* ---- list / watch ---------------------------------------------------------------------------- */

static void pods_path(k8s_watcher *w, char *out, size_t cap, bool watch)
{
    char *sel = curl_easy_escape(NULL, w->selector, 0);
    char *rv = curl_easy_escape(NULL, w->rv, 0);
    snprintf(out, cap, "/api/v1/namespaces/%s/pods?labelSelector=%s%s%s%s", w->ns, sel ? sel : "",
             watch ? "&watch=1&allowWatchBookmarks=true&resourceVersion=" : "", watch && rv ? rv : "",
             watch ? "&timeoutSeconds=" "60" : "");
    curl_free(sel);
    curl_free(rv);
}

static int list_pods(k8s_watcher *w, kv_err *err)
{
    char path[2048];
    pods_path(w, path, sizeof path, false);
    json_t *list;
    int rc = get_json(w, path, &list, err);
    if (rc != KV_OK)
        return rc;
    for (size_t i = 0; i < w->n_pods; i++) {
        free(w->pods[i].name);
        json_decref(w->pods[i].labels);
    }
    w->n_pods = 0;
    const char *rv = json_string_value(json_object_get(json_object_get(list, "metadata"), "resourceVersion"));
    snprintf(w->rv, sizeof w->rv, "%s", rv ? rv : "");
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(list, "items"), i, item) {
        if ((rc = pod_put(w, item)) != KV_OK) {
            rc = kv_err_set(err, rc, "k8s: pod list item %zu: no metadata.name (or out of memory)", i);
            break;
        }
    }
    json_decref(list);
    if (rc == KV_OK)
        rc = publish(w, err);
    atomic_fetch_add(&w->lists, 1);
    return rc;
}

static void *watch_main(void *arg)
{
    k8s_watcher *w = arg;
    bool need_list = false;
    while (!atomic_load(&w->stop)) {
        kv_err err = {0};
        if (need_list) {
            atomic_fetch_add(&w->relists, 1);
            if (list_pods(w, &err) != KV_OK) {
                atomic_fetch_add(&w->errors, 1);
                LOG_W("Pod list failed; retrying", "{s:s}", "error", err.msg);
                for (int t = 0; t < w->cfg.retry_ms / 10 && !atomic_load(&w->stop); t++)
                    usleep(10000);
                continue;
            }
            need_list = false;
        }
        char path[2048];
        pods_path(w, path, sizeof path, true);
        sink s = {.w = w, .watch = true};
        long status;
        atomic_fetch_add(&w->watches, 1);
        int rc = http_get(w, path, &s, WATCH_TIMEOUT_S + 5, &status, &err);
        free(s.buf);
        if (atomic_load(&w->stop))
            break;
        if (rc != KV_OK || status != 200 || s.failed) {
            atomic_fetch_add(&w->errors, 1);
            if (rc != KV_OK || status != 200)
                LOG_W("Pod watch failed; re-listing", "{s:s, s:i}", "error", err.msg, "status", (int)status);
            need_list = true;
            for (int t = 0; t < w->cfg.retry_ms / 10 && !atomic_load(&w->stop); t++)
                usleep(10000);
        }
    }
    return NULL;
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

/* spec.selector.matchLabels (v1) or a flat spec.selector (v1alpha2), and the ports. */
static int read_pool(k8s_watcher *w, kv_err *err)
{
    char path[1024];
    snprintf(path, sizeof path, "/apis/%s/v1/namespaces/%s/inferencepools/%s", w->group, w->ns, w->cfg.pool_name);
    json_t *pool;
    int rc = get_json(w, path, &pool, err);
    if (rc != KV_OK)
        return rc;
    json_t *spec = json_object_get(pool, "spec"), *sel = json_object_get(spec, "selector");
    json_t *ml = json_object_get(sel, "matchLabels");
    if (!json_is_object(ml))
        ml = sel;
    size_t off = 0;
    const char *k;
    json_t *v;
    w->selector[0] = 0;
    json_object_foreach(ml, k, v) {
        if (!json_is_string(v))
            continue;
        off += (size_t)snprintf(w->selector + off, off < sizeof w->selector ? sizeof w->selector - off : 0, "%s%s=%s",
                                off ? "," : "", k, json_string_value(v));
    }
    w->cfg.n_target_ports = 0;
    size_t i;
    json_t *tp;
    json_array_foreach(json_object_get(spec, "targetPorts"), i, tp) {
        json_int_t port = json_integer_value(json_object_get(tp, "number"));
        if (port >= 1 && port <= 65535 && w->cfg.n_target_ports < K8S_MAX_PORTS)
            w->cfg.target_ports[w->cfg.n_target_ports++] = (int)port;
    }
    json_int_t legacy = json_integer_value(json_object_get(spec, "targetPortNumber"));
    if (!w->cfg.n_target_ports && legacy >= 1 && legacy <= 65535)
        w->cfg.target_ports[w->cfg.n_target_ports++] = (int)legacy;
    json_decref(pool);
    if (!w->selector[0] || off >= sizeof w->selector)
        return kv_err_set(err, KV_EINVAL, "k8s: InferencePool %s/%s: spec.selector.matchLabels is empty or too long",
                          w->ns, w->cfg.pool_name);
    if (!w->cfg.n_target_ports)
        return kv_err_set(err, KV_EINVAL, "k8s: InferencePool %s/%s: no spec.targetPorts[].number", w->ns,
                          w->cfg.pool_name);
    return KV_OK;
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

k8s_watcher *k8s_start(const k8s_config *cfg, kv_err *err)
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
    w->cfg = *cfg;
    if (w->cfg.retry_ms <= 0)
        w->cfg.retry_ms = 1000;
    const char *ns = cfg->ns ? cfg->ns : getenv("NAMESPACE");
    snprintf(w->ns, sizeof w->ns, "%s", ns && *ns ? ns : "default");
    snprintf(w->group, sizeof w->group, "%s", cfg->pool_group ? cfg->pool_group : "inference.networking.k8s.io");
    if (cfg->base_url)
        snprintf(w->base, sizeof w->base, "%s", cfg->base_url);
    else {
        const char *h = getenv("KUBERNETES_SERVICE_HOST"), *p = getenv("KUBERNETES_SERVICE_PORT");
        if (!h || !p) {
            kv_err_set(err, KV_EINVAL, "k8s: KUBERNETES_SERVICE_HOST/PORT are not set (not running in a cluster?)");
            free(w);
            return NULL;
        }
        snprintf(w->base, sizeof w->base, strchr(h, ':') ? "https://[%s]:%s" : "https://%s:%s", h, p);
    }
    w->https = !strncmp(w->base, "https:", 6);
    snprintf(w->ca, sizeof w->ca, "%s", cfg->ca_path ? cfg->ca_path : SA_DIR "ca.crt");
    const char *tok = cfg->token_path ? cfg->token_path : SA_DIR "token";
    if (read_file(tok, w->token, sizeof w->token, err) != KV_OK && (cfg->token_path || w->https)) {
        free(w);
        return NULL;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (cfg->selector)
        snprintf(w->selector, sizeof w->selector, "%s", cfg->selector);
    if ((cfg->pool_name && !cfg->selector && read_pool(w, err) != KV_OK) || list_pods(w, err) != KV_OK) {
        k8s_stop(w);
        return NULL;
    }
    atomic_store(&w->synced, true);
    if (pthread_create(&w->th, NULL, watch_main, w)) {
        kv_err_set(err, KV_EIO, "k8s: cannot start the watcher");
        k8s_stop(w);
        return NULL;
    }
    w->started = true;
    return w;
}

void k8s_stop(k8s_watcher *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, true);
    if (w->started)
        pthread_join(w->th, NULL);
    for (size_t i = 0; i < w->n_pods; i++) {
        free(w->pods[i].name);
        json_decref(w->pods[i].labels);
    }
    free(w->pods);
    free(w);
}

bool k8s_synced(const k8s_watcher *w) { return atomic_load(&((k8s_watcher *)w)->synced); }

const char *k8s_selector(const k8s_watcher *w) { return w->selector; }

void k8s_get_stats(const k8s_watcher *w, k8s_stats *out)
{
    k8s_watcher *m = (k8s_watcher *)w;
    *out = (k8s_stats){atomic_load(&m->lists), atomic_load(&m->watches), atomic_load(&m->events),
                       atomic_load(&m->relists), atomic_load(&m->errors), atomic_load(&m->pods_ready)};
}
