/* doctor: misconfigurations from an EPP's /debug/ answers (see doctor.h). */
#include "doctor.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static int problem(FILE *out, const char *fix, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int problem(FILE *out, const char *fix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("PROBLEM ", out);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fprintf(out, "\n  fix: %s\n", fix);
    return 1;
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static json_int_t num(const json_t *o, const char *key) { return json_integer_value(json_object_get(o, key)); }

/* The first index's block size (0: no precise index). */
static int index_block_size(const json_t *index)
{
    return (int)num(json_array_get(json_object_get(index, "indexes"), 0), "blockSize");
}

static int check_endpoint(const json_t *ep, int index_bs, bool precise, FILE *out)
{
    int n = 0;
    const char *name = str(ep, "name");
    const json_t *m = json_object_get(ep, "metrics"), *ev = json_object_get(ep, "kvEvents");
    if (!json_is_true(json_object_get(m, "valid")))
        n += problem(out,
                     "check that the pod serves vLLM's /metrics on the endpoint's port and that the EPP can reach it "
                     "(kvroute_metrics_scrape_failures_total says why scrapes fail)",
                     "pod %s: no fresh /metrics (the load scorers see it without metrics)", name);
    int vllm_bs = (int)num(m, "blockSize");
    if (precise && vllm_bs > 0 && index_bs > 0 && (vllm_bs < index_bs || vllm_bs % index_bs)) {
        char fix[256];
        snprintf(fix, sizeof fix, "set tokenProcessorConfig.blockSize: %d (vLLM's --block-size), or start vLLM with "
                                  "--block-size %d", vllm_bs, index_bs);
        n += problem(out, fix, "pod %s: vLLM's block size is %d, the index keys blocks of %d", name, vllm_bs, index_bs);
    }
    if (!precise)
        return n;
    if (json_is_null(ev) || !ev) {
        fprintf(out, "note    pod %s: no KV events and no request routed to it yet (send a request, then ask again)\n",
                name);
        return n;
    }
    /* "stale": routed to, and silent for the EPP's stale_after (30 s); sooner, the pod may
     * simply not have served the request yet */
    if (!num(ev, "messages") && json_is_true(json_object_get(ev, "stale")))
        n += problem(out,
                     "start vLLM with --kv-events-config '{\"enable_kv_cache_events\":true,\"publisher\":\"zmq\","
                     "\"endpoint\":\"tcp://<epp>:5557\",\"topic\":\"kv@<ip:port>@<model>\"}' (or tcp://*:<socketPort> "
                     "with discoverPods)",
                     "pod %s: %lld request(s) routed to it, no KV event ever received from it", name,
                     (long long)num(ev, "routedSinceLastEvent"));
    else if (json_is_true(json_object_get(ev, "stale")))
        n += problem(out, "check that the pod's vLLM still publishes KV events and reaches the EPP",
                     "pod %s: routed to, no KV event for %.0f s", name,
                     json_real_value(json_object_get(ev, "lastEventAgeSeconds")));
    if (num(ev, "messages") && json_is_integer(json_object_get(ep, "blocksHeld")) && !num(ep, "blocksHeld"))
        n += problem(out,
                     "compare the events with `kvctl listen` and the request keys with `kvctl keys`: events for "
                     "another model, or blocks shorter than blockSize, are received but key nothing",
                     "pod %s: %lld KV event message(s) received, the index holds nothing for it", name,
                     (long long)num(ev, "messages"));
    return n;
}

int doctor_check(const json_t *endpoints, const json_t *index, double since_s, FILE *out)
{
    int n = 0;
    const json_t *list = json_object_get(endpoints, "endpoints");
    bool precise = json_is_true(json_object_get(endpoints, "preciseIndex"));
    size_t i;
    const json_t *v;
    if (!json_array_size(list))
        n += problem(out, "check --endpoints, or the InferencePool's selector and targetPorts",
                     "the EPP has no endpoints: every request is answered 503");
    /* the EPP's own findings first: they carry the most specific fix */
    json_array_foreach(json_object_get(endpoints, "issues"), i, v) {
        if (json_real_value(json_object_get(v, "ageSeconds")) > since_s)
            continue;
        n += problem(out, str(v, "message"), "%s: pod %s, model '%s' (%lld time(s))", str(v, "reason"), str(v, "pod"),
                     str(v, "model"), (long long)num(v, "count"));
    }
    int bs = index_block_size(index);
    json_array_foreach(list, i, v) n += check_endpoint(v, bs, precise, out);
    json_array_foreach(json_object_get(index, "ingests"), i, v) {
        if (num(v, "rejectedPods"))
            n += problem(out,
                         "the topic's pod id must be the endpoint's ip:port exactly as the EPP lists it "
                         "(GET /debug/endpoints): kv@<ip:port>@<model>",
                         "%lld KV event message(s) rejected: their topic names no known endpoint",
                         (long long)num(v, "rejectedPods"));
        if (num(v, "decodeErrors"))
            n += problem(out, "check the publisher: kvroute_kv_events_decode_errors_total{reason} says what is wrong",
                         "%lld KV event message(s) could not be decoded", (long long)num(v, "decodeErrors"));
    }
    if (!precise)
        fprintf(out, "note    the config has no precise prefix index: KV events are not used\n");
    return n;
}

typedef struct buf {
    char *data;
    size_t len;
} buf;

static size_t on_data(char *p, size_t sz, size_t n, void *ctx)
{
    buf *b = ctx;
    char *g = realloc(b->data, b->len + sz * n + 1);
    if (!g)
        return 0;
    memcpy(g + b->len, p, sz * n);
    b->data = g;
    b->len += sz * n;
    g[b->len] = 0;
    return sz * n;
}

static json_t *fetch(const char *base, const char *path, kv_err *err)
{
    char url[1024];
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    snprintf(url, sizeof url, "%.*s%s", (int)bl, base, path);
    buf b = {0};
    CURL *c = curl_easy_init();
    if (!c) {
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    json_t *o = NULL;
    json_error_t je;
    if (rc != CURLE_OK)
        kv_err_set(err, KV_EIO, "%s: %s", url, curl_easy_strerror(rc));
    else if (status != 200)
        kv_err_set(err, KV_EIO, "%s: HTTP %ld (is this the EPP's --metrics-port, and the EPP new enough?)", url,
                   status);
    else if (!(o = json_loadb(b.data ? b.data : "", b.len, 0, &je)))
        kv_err_set(err, KV_EPARSE, "%s: not JSON: %s", url, je.text);
    free(b.data);
    return o;
}

int doctor_run(const char *base_url, double since_s, FILE *out, kv_err *err)
{
    json_t *eps = fetch(base_url, "/debug/endpoints", err);
    json_t *ix = eps ? fetch(base_url, "/debug/index", err) : NULL;
    int n = ix ? doctor_check(eps, ix, since_s, out) : -1;
    json_decref(eps);
    json_decref(ix);
    return n;
}
