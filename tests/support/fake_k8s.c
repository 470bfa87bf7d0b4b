/* fake_k8s: pods, InferencePools, InferenceObjectives and InferenceModelRewrites over plain
 * HTTP (see the header). */
#include "fake_k8s.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum coll { C_PODS, C_POOLS, C_OBJS, C_REWRITES, C_N };

static const char *const coll_kind[C_N] = {"PodList", "InferencePoolList", "InferenceObjectiveList",
                                           "InferenceModelRewriteList"};

typedef struct event {
    long rv;
    enum coll c;
    char *name;
    json_t *obj;                  /* the object as of the event (for label selectors) */
    char *line;                   /* JSON + "\n" */
} event;

struct fake_k8s {
    struct MHD_Daemon *d;
    char token[128];
    pthread_mutex_t mu;           /* guards everything below */
    pthread_cond_t cv;
    bool stopping;
    json_t *objs[C_N];            /* per collection: name -> object */
    bool objectives_served;       /* the InferenceObjective CRD "is installed" */
    bool rewrites_served;         /* the InferenceModelRewrite CRD "is installed" */
    char pool_ns[128];
    long rv;
    event *events;
    size_t n_events;
    bool expire_next;
    unsigned break_gen;           /* bumped to end every open watch */
    char selector[512];
    unsigned lists, watches, unauthorized;
};

typedef struct watch_conn {
    fake_k8s *k;
    enum coll c;
    char name[128];               /* fieldSelector metadata.name, or "" */
    char selector[512];           /* pods: labelSelector, or "" */
    long cursor;
    bool expire, expired_sent;
    unsigned gen;
    time_t deadline;
} watch_conn;

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Equality-based label selector "k=v,k2=v2" ("" matches everything). */
static bool selected(json_t *obj, const char *selector)
{
    json_t *labels = json_object_get(json_object_get(obj, "metadata"), "labels");
    char buf[512];
    snprintf(buf, sizeof buf, "%s", selector);
    for (char *save, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return false;
        *eq = 0;
        const char *v = json_string_value(json_object_get(labels, kv));
        if (!v || strcmp(v, eq + 1))
            return false;
    }
    return true;
}

static ssize_t watch_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    watch_conn *w = cls;
    fake_k8s *k = w->k;
    if (w->expire) {
        if (w->expired_sent)
            return MHD_CONTENT_READER_END_OF_STREAM;
        w->expired_sent = true;
        const char *e = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\"}}\n";
        size_t n = strlen(e) < max ? strlen(e) : max;
        memcpy(buf, e, n);
        return (ssize_t)n;
    }
    pthread_mutex_lock(&k->mu);
    for (;;) {
        for (size_t i = 0; i < k->n_events; i++) {
            event *ev = &k->events[i];
            if (ev->rv <= w->cursor || ev->c != w->c || (w->name[0] && strcmp(ev->name, w->name)) ||
                !selected(ev->obj, w->selector))
                continue;
            size_t n = strlen(ev->line);
            if (n > max) {
                pthread_mutex_unlock(&k->mu);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            memcpy(buf, ev->line, n);
            w->cursor = ev->rv;
            pthread_mutex_unlock(&k->mu);
            return (ssize_t)n;
        }
        if (k->stopping || w->gen != k->break_gen || time(NULL) > w->deadline) {
            pthread_mutex_unlock(&k->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&k->cv, &k->mu, &ts);
    }
}

static void watch_free(void *cls) { free(cls); }

/* Which collection a path names; *name gets a trailing object name ("" for the collection). */
static int route(const char *url, char *name, size_t cap)
{
    static const struct {
        const char *prefix, *suffix;
        enum coll c;
    } routes[] = {
        {"/api/v1/namespaces/", "/pods", C_PODS},
        {"/apis/inference.networking.k8s.io/v1/namespaces/", "/inferencepools", C_POOLS},
        {"/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/", "/inferencepools", C_POOLS},
        {"/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/", "/inferenceobjectives", C_OBJS},
        {"/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/", "/inferencemodelrewrites", C_REWRITES},
    };
    name[0] = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t pl = strlen(routes[i].prefix);
        if (strncmp(url, routes[i].prefix, pl))
            continue;
        const char *slash = strchr(url + pl, '/');
        if (!slash || strncmp(slash, routes[i].suffix, strlen(routes[i].suffix)))
            continue;
        const char *rest = slash + strlen(routes[i].suffix);
        if (*rest == '/')
            snprintf(name, cap, "%s", rest + 1);
        else if (*rest)
            continue;
        return routes[i].c;
    }
    return -1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *data_size, void **con_cls)
{
    fake_k8s *k = cls;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    char want[160];
    snprintf(want, sizeof want, "Bearer %s", k->token);
    if (!auth || strcmp(auth, want)) {
        pthread_mutex_lock(&k->mu);
        k->unauthorized++;
        pthread_mutex_unlock(&k->mu);
        return reply(c, 401, "{\"kind\":\"Status\",\"code\":401}");
    }
    char name[128];
    int coll = route(url, name, sizeof name);
    pthread_mutex_lock(&k->mu);
    if (coll < 0 || (coll == C_OBJS && !k->objectives_served) || (coll == C_REWRITES && !k->rewrites_served)) {
        pthread_mutex_unlock(&k->mu);
        return reply(c, 404, "{\"kind\":\"Status\",\"code\":404}");
    }
    if (name[0]) { /* GET one object */
        json_t *o = json_object_get(k->objs[coll], name);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        pthread_mutex_unlock(&k->mu);
        enum MHD_Result r = s ? reply(c, 200, s) : reply(c, 404, "{\"kind\":\"Status\",\"code\":404}");
        free(s);
        return r;
    }
    const char *fs = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "fieldSelector");
    const char *only = fs && !strncmp(fs, "metadata.name=", 14) ? fs + 14 : "";
    const char *sel = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "labelSelector");
    if (!sel)
        sel = "";
    if (coll == C_PODS)
        snprintf(k->selector, sizeof k->selector, "%s", sel);
    const char *watch = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "watch");
    if (watch && !strcmp(watch, "1")) {
        const char *rv = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "resourceVersion");
        watch_conn *w = calloc(1, sizeof *w);
        w->k = k;
        w->c = (enum coll)coll;
        snprintf(w->name, sizeof w->name, "%s", only);
        snprintf(w->selector, sizeof w->selector, "%s", sel);
        w->cursor = rv ? atol(rv) : 0;
        w->expire = k->expire_next && coll == C_PODS;
        w->gen = k->break_gen;
        w->deadline = time(NULL) + 30;
        if (coll == C_PODS)
            k->expire_next = false;
        k->watches++;
        pthread_mutex_unlock(&k->mu);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, watch_read, w, watch_free);
        MHD_add_response_header(r, "Content-Type", "application/json");
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (coll == C_PODS)
        k->lists++;
    json_t *items = json_array();
    const char *n;
    json_t *o;
    json_object_foreach(k->objs[coll], n, o) if ((!*only || !strcmp(n, only)) && selected(o, sel))
        json_array_append(items, o);
    char rvs[32];
    snprintf(rvs, sizeof rvs, "%ld", k->rv);
    json_t *list = json_pack("{s:s, s:{s:s}, s:o}", "kind", coll_kind[coll], "metadata", "resourceVersion", rvs,
                             "items", items);
    char *s = json_dumps(list, JSON_COMPACT);
    json_decref(list);
    pthread_mutex_unlock(&k->mu);
    enum MHD_Result r = reply(c, 200, s);
    free(s);
    return r;
}

fake_k8s *fake_k8s_start(const char *token)
{
    fake_k8s *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    snprintf(k->token, sizeof k->token, "%s", token);
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    for (int i = 0; i < C_N; i++)
        k->objs[i] = json_object();
    k->rv = 100;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    k->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
                            on_request, k, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_END);
    if (!k->d) {
        fake_k8s_stop(k);
        return NULL;
    }
    return k;
}

int fake_k8s_port(const fake_k8s *k)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(k->d, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : 0;
}

static json_t *labels_obj(const char *labels)
{
    json_t *o = json_object();
    char buf[512];
    snprintf(buf, sizeof buf, "%s", labels ? labels : "");
    for (char *save, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (eq) {
            *eq = 0;
            json_object_set_new(o, kv, json_string(eq + 1));
        }
    }
    return o;
}

/* Under the lock: bumps rv, stamps the object, logs the event, wakes watchers. */
static void emit(fake_k8s *k, enum coll c, const char *type, const char *name, json_t *obj)
{
    char rvs[32];
    snprintf(rvs, sizeof rvs, "%ld", ++k->rv);
    json_object_set_new(json_object_get(obj, "metadata"), "resourceVersion", json_string(rvs));
    json_t *ev = json_pack("{s:s, s:O}", "type", type, "object", obj);
    char *s = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    size_t n = strlen(s);
    char *line = malloc(n + 2);
    memcpy(line, s, n);
    line[n] = '\n';
    line[n + 1] = 0;
    free(s);
    k->events = realloc(k->events, (k->n_events + 1) * sizeof *k->events);
    k->events[k->n_events++] = (event){k->rv, c, strdup(name), json_deep_copy(obj), line};
    pthread_cond_broadcast(&k->cv);
}

/* Adds or replaces (ADDED or MODIFIED), taking obj's reference. */
static void put(fake_k8s *k, enum coll c, const char *name, json_t *obj)
{
    pthread_mutex_lock(&k->mu);
    const char *type = json_object_get(k->objs[c], name) ? "MODIFIED" : "ADDED";
    json_object_set_new(k->objs[c], name, obj);
    emit(k, c, type, name, obj);
    pthread_mutex_unlock(&k->mu);
}

static void del(fake_k8s *k, enum coll c, const char *name)
{
    pthread_mutex_lock(&k->mu);
    json_t *o = json_incref(json_object_get(k->objs[c], name));
    if (o) {
        json_object_del(k->objs[c], name);
        emit(k, c, "DELETED", name, o);
        json_decref(o);
    }
    pthread_mutex_unlock(&k->mu);
}

void fake_k8s_set_pool(fake_k8s *k, const char *ns, const char *name, const char *match_labels, const int *ports,
                       int n_ports)
{
    json_t *tp = json_array();
    for (int i = 0; i < n_ports; i++)
        json_array_append_new(tp, json_pack("{s:i}", "number", ports[i]));
    json_t *pool = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:{s:o}, s:o, s:{s:s, s:{s:i}}}}", "apiVersion",
                             "inference.networking.k8s.io/v1", "kind", "InferencePool", "metadata", "name", name,
                             "namespace", ns, "spec", "selector", "matchLabels", labels_obj(match_labels), "targetPorts",
                             tp, "endpointPickerRef", "name", "epp", "port", "number", 9002);
    put(k, C_POOLS, name, pool);
}

void fake_k8s_delete_pool(fake_k8s *k, const char *name) { del(k, C_POOLS, name); }

void fake_k8s_put_objective(fake_k8s *k, const char *name, const char *pool, bool has_priority, int priority)
{
    json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:{s:s}}}", "apiVersion",
                          "inference.networking.x-k8s.io/v1alpha2", "kind", "InferenceObjective", "metadata", "name",
                          name, "namespace", "ns", "spec", "poolRef", "name", pool);
    if (has_priority)
        json_object_set_new(json_object_get(o, "spec"), "priority", json_integer(priority));
    pthread_mutex_lock(&k->mu);
    k->objectives_served = true;
    pthread_mutex_unlock(&k->mu);
    put(k, C_OBJS, name, o);
}

void fake_k8s_delete_objective(fake_k8s *k, const char *name) { del(k, C_OBJS, name); }

void fake_k8s_put_model_rewrite(fake_k8s *k, const char *name, const char *created, const char *spec_json)
{
    json_t *spec = json_loads(spec_json, 0, NULL);
    json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:o}", "apiVersion", "inference.networking.x-k8s.io/v1alpha2",
                          "kind", "InferenceModelRewrite", "metadata", "name", name, "namespace", "ns",
                          "creationTimestamp", created, "spec", spec ? spec : json_object());
    pthread_mutex_lock(&k->mu);
    k->rewrites_served = true;
    pthread_mutex_unlock(&k->mu);
    put(k, C_REWRITES, name, o);
}

void fake_k8s_delete_model_rewrite(fake_k8s *k, const char *name) { del(k, C_REWRITES, name); }

void fake_k8s_put_pod(fake_k8s *k, const char *name, const char *ip, bool ready, bool deleting, const char *labels)
{
    json_t *pod = json_pack("{s:s, s:s, s:{s:s, s:s, s:o}, s:{s:s, s:s, s:[{s:s, s:s}]}}", "apiVersion", "v1",
                            "kind", "Pod", "metadata", "name", name, "namespace", "ns", "labels", labels_obj(labels),
                            "status", "phase", "Running", "podIP", ip, "conditions", "type", "Ready", "status",
                            ready ? "True" : "False");
    if (deleting)
        json_object_set_new(json_object_get(pod, "metadata"), "deletionTimestamp", json_string("2026-01-01T00:00:00Z"));
    put(k, C_PODS, name, pod);
}

void fake_k8s_delete_pod(fake_k8s *k, const char *name) { del(k, C_PODS, name); }

void fake_k8s_expire_next_watch(fake_k8s *k)
{
    pthread_mutex_lock(&k->mu);
    k->expire_next = true;
    k->break_gen++;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

void fake_k8s_last_selector(fake_k8s *k, char *out, unsigned cap)
{
    pthread_mutex_lock(&k->mu);
    snprintf(out, cap, "%s", k->selector);
    pthread_mutex_unlock(&k->mu);
}

#define COUNTER(fn, field)                    \
    unsigned fn(fake_k8s *k)                  \
    {                                         \
        pthread_mutex_lock(&k->mu);           \
        unsigned n = k->field;                \
        pthread_mutex_unlock(&k->mu);         \
        return n;                             \
    }
COUNTER(fake_k8s_lists, lists)
COUNTER(fake_k8s_watches, watches)
COUNTER(fake_k8s_unauthorized, unauthorized)

void fake_k8s_stop(fake_k8s *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&k->mu);
    k->stopping = true;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    if (k->d)
        MHD_stop_daemon(k->d);
    for (size_t i = 0; i < k->n_events; i++) {
        free(k->events[i].line);
        free(k->events[i].name);
        json_decref(k->events[i].obj);
    }
    free(k->events);
    for (int i = 0; i < C_N; i++)
        json_decref(k->objs[i]);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
}
