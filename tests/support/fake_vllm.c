/* fake_vllm: /metrics and /tokenize of a vLLM server, for tests (see the header). */
#include "fake_vllm.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fake_vllm {
    struct MHD_Daemon *d;
    pthread_mutex_t mu;           /* guards everything below */
    int status;
    char *body;
    unsigned n_metrics, n_tokenize, n_connections;
};

typedef struct upload {
    char *data;
    size_t len;
} upload;

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result tokenize(fake_vllm *v, struct MHD_Connection *c, const upload *u)
{
    json_t *req = json_loadb(u->data ? u->data : "", u->len, 0, NULL);
    const char *prompt = json_string_value(json_object_get(req, "prompt"));
    if (!prompt) {
        json_decref(req);
        return reply(c, 400, "application/json", "{\"error\":\"prompt required\"}");
    }
    json_t *toks = json_array();
    for (const unsigned char *p = (const unsigned char *)prompt; *p; p++)
        json_array_append_new(toks, json_integer(*p));
    json_t *res = json_pack("{s:I, s:i, s:o}", "count", (json_int_t)json_array_size(toks), "max_model_len", 8192,
                            "tokens", toks);
    char *s = json_dumps(res, JSON_COMPACT);
    enum MHD_Result ret = reply(c, 200, "application/json", s);
    free(s);
    json_decref(res);
    json_decref(req);
    pthread_mutex_lock(&v->mu);
    v->n_tokenize++;
    pthread_mutex_unlock(&v->mu);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *data_size, void **con_cls)
{
    fake_vllm *v = cls;
    upload *u = *con_cls;
    if (!u) {
        /* The first call has only the headers. A reply queued now makes MHD close the
         * connection after it (it cannot know the request is whole), where vLLM keeps
         * connections alive: a scraper would open one per scrape. */
        *con_cls = calloc(1, sizeof *u);
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (!strcmp(method, "POST")) {
        if (*data_size) {
            char *g = realloc(u->data, u->len + *data_size);
            if (!g)
                return MHD_NO;
            memcpy(g + u->len, data, *data_size);
            u->data = g;
            u->len += *data_size;
            *data_size = 0;
            return MHD_YES;
        }
        return strcmp(url, "/tokenize") ? reply(c, 404, "text/plain", "not found\n") : tokenize(v, c, u);
    }
    if (strcmp(url, "/metrics"))
        return reply(c, 404, "text/plain", "not found\n");
    pthread_mutex_lock(&v->mu);
    v->n_metrics++;
    char *body = strdup(v->body ? v->body : "");
    int status = v->status;
    pthread_mutex_unlock(&v->mu);
    enum MHD_Result ret = reply(c, (unsigned)status, "text/plain; version=0.0.4", body ? body : "");
    free(body);
    return ret;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
    upload *u = *con_cls;
    if (u) {
        free(u->data);
        free(u);
        *con_cls = NULL;
    }
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx, enum MHD_ConnectionNotificationCode t)
{
    fake_vllm *v = cls;
    if (t != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    pthread_mutex_lock(&v->mu);
    v->n_connections++;
    pthread_mutex_unlock(&v->mu);
}

fake_vllm *fake_vllm_start(void)
{
    fake_vllm *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    pthread_mutex_init(&v->mu, NULL);
    fake_vllm_set_gauges(v, 0, 0, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    v->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, v, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, v, MHD_OPTION_END);
    if (!v->d) {
        fake_vllm_stop(v);
        return NULL;
    }
    return v;
}

int fake_vllm_port(const fake_vllm *v)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(v->d, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : 0;
}

void fake_vllm_set_metrics(fake_vllm *v, int status, const char *body)
{
    pthread_mutex_lock(&v->mu);
    free(v->body);
    v->body = strdup(body);
    v->status = status;
    pthread_mutex_unlock(&v->mu);
}

void fake_vllm_set_gauges(fake_vllm *v, int waiting, int running, double kv_usage)
{
    char body[1024];
    snprintf(body, sizeof body,
             "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
             "# TYPE vllm:num_requests_running gauge\n"
             "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} %d.0\n"
             "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} %d.0\n"
             "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} %g\n"
             "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"1000\"} 1.0\n"
             "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"\",waiting_lora_adapters=\"\"} 1.7e9\n",
             running, waiting, kv_usage);
    fake_vllm_set_metrics(v, 200, body);
}

unsigned fake_vllm_requests(fake_vllm *v, const char *path)
{
    pthread_mutex_lock(&v->mu);
    unsigned n = !strcmp(path, "/tokenize") ? v->n_tokenize : v->n_metrics;
    pthread_mutex_unlock(&v->mu);
    return n;
}

unsigned fake_vllm_connections(fake_vllm *v)
{
    pthread_mutex_lock(&v->mu);
    unsigned n = v->n_connections;
    pthread_mutex_unlock(&v->mu);
    return n;
}

void fake_vllm_stop(fake_vllm *v)
{
    if (!v)
        return;
    if (v->d)
        MHD_stop_daemon(v->d);
    free(v->body);
    pthread_mutex_destroy(&v->mu);
    free(v);
}
