/* fake_k8s: pods list/watch and an InferencePool over plain HTTP (see the header). */
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

typedef struct event {
    long rv;
    char *line;                   /* JSON + "\n" */
} event;

struct fake_k8s {
    struct MHD_Daemon *d;
    char token[128];
    pthread_mutex_t mu;           /* guards everything below */
    pthread_cond_t cv;
    bool stopping;
    json_t *pods;                 /* name -> pod object */
    json_t *pool;
    char pool_path[512];
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
        for (size_t i = 0; i < k->n_events; i++)
            if (k->events[i].rv > w->cursor) {
                size_t n = strlen(k->events[i].line);
                if (n > max) {
                    pthread_mutex_unlock(&k->mu);
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                }
                memcpy(buf, k->events[i].line, n);
                w->cursor = k->events[i].rv;
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
    pthread_mutex_lock(&k->mu);
    if (k->pool && !strcmp(url, k->pool_path)) {
        char *s = json_dumps(k->pool, JSON_COMPACT);
        pthread_mutex_unlock(&k->mu);
        enum MHD_Result r = reply(c, 200, s);
        free(s);
        return r;
    }
    if (strncmp(url, "/api/v1/namespaces/", 19) || !strstr(url, "/pods")) {
        pthread_mutex_unlock(&k->mu);
        return reply(c, 404, "{\"kind\":\"Status\",\"code\":404}");
    }
    const char *sel = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "labelSelector");
    snprintf(k->selector, sizeof k->selector, "%s", sel ? sel : "");
    const char *watch = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "watch");
    if (watch && !strcmp(watch, "1")) {
        const char *rv = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "resourceVersion");
        watch_conn *w = calloc(1, sizeof *w);
        w->k = k;
        w->cursor = rv ? atol(rv) : 0;
        w->expire = k->expire_next;
        w->gen = k->break_gen;
        w->deadline = time(NULL) + 30;
        k->expire_next = false;
        k->watches++;
        pthread_mutex_unlock(&k->mu);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, watch_read, w, watch_free);
        MHD_add_response_header(r, "Content-Type", "application/json");
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    k->lists++;
    json_t *items = json_array();
    const char *name;
    json_t *pod;
    json_object_foreach(k->pods, name, pod) json_array_append(items, pod);
    char rvs[32];
    snprintf(rvs, sizeof rvs, "%ld", k->rv);
    json_t *list = json_pack("{s:s, s:s, s:{s:s}, s:o}", "kind", "PodList", "apiVersion", "v1", "metadata",
                             "resourceVersion", rvs, "items", items);
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
    k->pods = json_object();
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
    pthread_mutex_lock(&k->mu);
    json_decref(k->pool);
    k->pool = pool;
    snprintf(k->pool_path, sizeof k->pool_path, "/apis/inference.networking.k8s.io/v1/namespaces/%s/inferencepools/%s",
             ns, name);
    pthread_mutex_unlock(&k->mu);
}

/* Under the lock: bumps rv, stamps the object, logs the event, wakes watchers. */
static void emit(fake_k8s *k, const char *type, json_t *pod)
{
    char rvs[32];
    snprintf(rvs, sizeof rvs, "%ld", ++k->rv);
    json_object_set_new(json_object_get(pod, "metadata"), "resourceVersion", json_string(rvs));
    json_t *ev = json_pack("{s:s, s:O}", "type", type, "object", pod);
    char *s = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    size_t n = strlen(s);
    char *line = malloc(n + 2);
    memcpy(line, s, n);
    line[n] = '\n';
    line[n + 1] = 0;
    free(s);
    k->events = realloc(k->events, (k->n_events + 1) * sizeof *k->events);
    k->events[k->n_events++] = (event){k->rv, line};
    pthread_cond_broadcast(&k->cv);
}

void fake_k8s_put_pod(fake_k8s *k, const char *name, const char *ip, bool ready, bool deleting, const char *labels)
{
    json_t *pod = json_pack("{s:s, s:s, s:{s:s, s:s, s:o}, s:{s:s, s:s, s:[{s:s, s:s}]}}", "apiVersion", "v1",
                            "kind", "Pod", "metadata", "name", name, "namespace", "ns", "labels", labels_obj(labels),
                            "status", "phase", "Running", "podIP", ip, "conditions", "type", "Ready", "status",
                            ready ? "True" : "False");
    if (deleting)
        json_object_set_new(json_object_get(pod, "metadata"), "deletionTimestamp", json_string("2026-01-01T00:00:00Z"));
    pthread_mutex_lock(&k->mu);
    const char *type = json_object_get(k->pods, name) ? "MODIFIED" : "ADDED";
    json_object_set_new(k->pods, name, pod);
    emit(k, type, pod);
    pthread_mutex_unlock(&k->mu);
}

void fake_k8s_delete_pod(fake_k8s *k, const char *name)
{
    pthread_mutex_lock(&k->mu);
    json_t *pod = json_incref(json_object_get(k->pods, name));
    if (pod) {
        json_object_del(k->pods, name);
        emit(k, "DELETED", pod);
        json_decref(pod);
    }
    pthread_mutex_unlock(&k->mu);
}

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
    for (size_t i = 0; i < k->n_events; i++)
        free(k->events[i].line);
    free(k->events);
    json_decref(k->pods);
    json_decref(k->pool);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
}
