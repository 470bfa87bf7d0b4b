/* scrape: vLLM /metrics parsing and the polling thread (see scrape.h). */
#include "scrape.h"
#include "monoclock.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define DEFAULT_KV_METRIC "vllm:kv_cache_usage_perc"
#define LEGACY_KV_METRIC "vllm:gpu_cache_usage_perc"
#define MAX_BODY (8u << 20)
#define MAX_LABELS 16

/* ---- parser -------------------------------------------------------------------------------- */

typedef struct label {
    const char *key;
    size_t key_len;
    char value[512];              /* unescaped, truncated */
} label;

typedef struct sample_line {
    const char *name;
    size_t name_len;
    label labels[MAX_LABELS];
    size_t n_labels;
    double value;
    char text[64];                /* the value as written, for errors */
} sample_line;

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* One sample line "name{k="v",...} value [timestamp]"; false if malformed. */
static bool parse_line(const char *p, const char *end, sample_line *out)
{
    out->name = p;
    while (p < end && *p != '{' && *p != ' ' && *p != '\t')
        p++;
    out->name_len = (size_t)(p - out->name);
    out->n_labels = 0;
    if (!out->name_len)
        return false;
    if (p < end && *p == '{') {
        p++;
        for (;;) {
            p = skip_ws(p, end);
            if (p < end && *p == '}') {
                p++;
                break;
            }
            const char *k = p;
            while (p < end && *p != '=' && *p != '}' && *p != ',')
                p++;
            if (p >= end || *p != '=' || p == k)
                return false;
            label *l = out->n_labels < MAX_LABELS ? &out->labels[out->n_labels++] : NULL;
            if (l) {
                l->key = k;
                l->key_len = (size_t)(p - k);
            }
            p++;
            if (p >= end || *p != '"')
                return false;
            p++;
            size_t n = 0;
            while (p < end && *p != '"') {
                char c = *p++;
                if (c == '\\') {
                    if (p >= end)
                        return false;
                    c = *p++;
                    if (c == 'n')
                        c = '\n';
                }
                if (l && n + 1 < sizeof l->value)
                    l->value[n++] = c;
            }
            if (p >= end)
                return false;
            p++;
            if (l)
                l->value[n] = 0;
            p = skip_ws(p, end);
            if (p < end && *p == ',')
                p++;
        }
    }
    p = skip_ws(p, end);
    char *num = out->text;
    size_t n = 0;
    while (p < end && *p != ' ' && *p != '\t' && n + 1 < sizeof out->text)
        num[n++] = *p++;
    num[n] = 0;
    if (!n)
        return false;
    char *e;
    errno = 0;
    out->value = strtod(num, &e);   /* accepts NaN, +Inf, -Inf, exponents; gauge() judges them */
    return !*e;
}

static bool name_is(const sample_line *s, const char *name)
{
    return strlen(name) == s->name_len && !memcmp(s->name, name, s->name_len);
}

static const char *label_of(const sample_line *s, const char *key)
{
    for (size_t i = 0; i < s->n_labels; i++)
        if (strlen(key) == s->labels[i].key_len && !memcmp(s->labels[i].key, key, s->labels[i].key_len))
            return s->labels[i].value;
    return NULL;
}

void scrape_sample_free(scrape_sample *s)
{
    for (size_t i = 0; i < s->n_names; i++)
        free(s->names[i]);
    free(s->names);
    free((void *)s->m.running_loras);
    *s = (scrape_sample){0};
}

/* Splits "a,b" into out->names (appending); returns how many were added, -1 out of memory. */
static long split_names(scrape_sample *out, const char *list)
{
    long added = 0;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n) {
            char **g = realloc(out->names, (out->n_names + 1) * sizeof *g);
            if (!g)
                return -1;
            out->names = g;
            if (!(g[out->n_names] = strndup(p, n)))
                return -1;
            out->n_names++;
            added++;
        }
        p += n + (p[n] == ',');
    }
    return added;
}

/* A gauge the scheduler reads, into *out: a NaN, infinite or negative one fails the scrape
 * (KV_ERANGE naming the line, metric and value as written): cast to int it would be
 * undefined, and a queue of NaN or -5 would win every queue score and never saturate.
 * Values above max read max. */
static int gauge(const sample_line *s, int lineno, double max, double *out, kv_err *err)
{
    if (!isfinite(s->value) || s->value < 0)
        return kv_err_set(err, KV_ERANGE, "/metrics line %d: %.*s is %s, expected a finite number >= 0", lineno,
                          (int)s->name_len, s->name, s->text);
    *out = s->value > max ? max : s->value;
    return KV_OK;
}

/* A count in a label value ("8", "4096"): decimal, clamped to [0, max]; anything else
 * reads 0, "unknown" to the scorers. */
static long label_count(const char *v, long max)
{
    if (!v)
        return 0;
    char *e;
    errno = 0;
    long x = strtol(v, &e, 10);
    if (e == v || *e || x < 0)
        return 0;
    return x > max || errno == ERANGE ? max : x;
}

enum { HAVE_WAITING = 1, HAVE_RUNNING = 2, HAVE_KV = 4, HAVE_LEGACY_KV = 8 };

int scrape_parse(const char *text, size_t len, const char *kv_metric, scrape_sample *out, kv_err *err)
{
    *out = (scrape_sample){0};
    if (!kv_metric)
        kv_metric = DEFAULT_KV_METRIC;
    unsigned have = 0;
    double legacy_kv = 0, lora_best = -INFINITY;
    char run_l[512] = "", wait_l[512] = "";
    bool have_lora = false;
    const char *end = text + len;
    int lineno = 0;
    for (const char *p = text; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        const char *q = skip_ws(p, le);
        if (le > q && le[-1] == '\r')
            le--;
        if (q < le && *q != '#') {
            sample_line s;
            if (!parse_line(q, le, &s)) {
                scrape_sample_free(out);
                return kv_err_set(err, KV_EPARSE, "/metrics line %d: not a Prometheus sample: '%.*s'", lineno,
                                  (int)(le - q > 80 ? 80 : le - q), q);
            }
            int rc = KV_OK;
            double v = 0;
            if (name_is(&s, "vllm:num_requests_waiting") && !(have & HAVE_WAITING)) {
                if (!(rc = gauge(&s, lineno, SCRAPE_MAX_REQUESTS, &v, err)))
                    out->m.waiting = (int)v;
                have |= HAVE_WAITING;
            } else if (name_is(&s, "vllm:num_requests_running") && !(have & HAVE_RUNNING)) {
                if (!(rc = gauge(&s, lineno, SCRAPE_MAX_REQUESTS, &v, err)))
                    out->m.running = (int)v;
                have |= HAVE_RUNNING;
            } else if (name_is(&s, kv_metric) && !(have & HAVE_KV)) {
                rc = gauge(&s, lineno, 1.0, &out->m.kv_usage, err);
                have |= HAVE_KV;
            } else if (name_is(&s, LEGACY_KV_METRIC) && !(have & HAVE_LEGACY_KV)) {
                rc = gauge(&s, lineno, 1.0, &legacy_kv, err);
                have |= HAVE_LEGACY_KV;
            } else if (name_is(&s, "vllm:lora_requests_info") && s.value > lora_best) {
                const char *r = label_of(&s, "running_lora_adapters"), *w = label_of(&s, "waiting_lora_adapters");
                const char *m = label_of(&s, "max_lora");
                lora_best = s.value;
                have_lora = true;
                snprintf(run_l, sizeof run_l, "%s", r ? r : "");
                snprintf(wait_l, sizeof wait_l, "%s", w ? w : "");
                out->m.max_lora = (int)label_count(m, SCRAPE_MAX_REQUESTS);
            } else if (name_is(&s, "vllm:cache_config_info")) {
                out->m.block_size = (uint32_t)label_count(label_of(&s, "block_size"), UINT32_MAX);
                out->m.num_gpu_blocks = (uint32_t)label_count(label_of(&s, "num_gpu_blocks"), UINT32_MAX);
            }
            if (rc) {
                scrape_sample_free(out);
                return rc;
            }
        }
        p = nl ? nl + 1 : end;
    }
    if (!(have & HAVE_KV) && (have & HAVE_LEGACY_KV)) {
        out->m.kv_usage = legacy_kv;
        have |= HAVE_KV;
    }
    const char *missing = !(have & HAVE_WAITING) ? "vllm:num_requests_waiting"
                          : !(have & HAVE_RUNNING) ? "vllm:num_requests_running"
                          : !(have & HAVE_KV)      ? kv_metric
                                                   : NULL;
    if (missing) {
        scrape_sample_free(out);
        return kv_err_set(err, KV_ENOTFOUND, "/metrics: no %s sample", missing);
    }
    if (have_lora) {
        long nr = split_names(out, run_l);
        long nw = nr < 0 ? -1 : split_names(out, wait_l);
        const char **ptrs = nw < 0 ? NULL : calloc(out->n_names ? out->n_names : 1, sizeof *ptrs);
        if (!ptrs) {
            scrape_sample_free(out);
            return kv_err_set(err, KV_ENOMEM, "/metrics: out of memory");
        }
        for (size_t i = 0; i < out->n_names; i++)
            ptrs[i] = out->names[i];
        out->m.running_loras = ptrs;
        out->m.n_running_loras = (size_t)nr;
        out->m.waiting_loras = ptrs + nr;
        out->m.n_waiting_loras = (size_t)nw;
    }
    out->m.valid = true;
    return KV_OK;
}

/* ---- poller ---------------------------------------------------------------------------------- */

typedef struct xfer {
    struct scraper *s;
    char name[256];
    char url[300];
    char *body;
    size_t len;
    bool overflow;
    bool rejecting;               /* the last body was rejected and logged: log again only after a success */
    CURL *easy;                   /* non-NULL while in flight */
} xfer;

struct scraper {
    scrape_config cfg;
    char kv_metric[256];
    CURLM *multi;
    pthread_t th;
    atomic_bool stop;
    atomic_uint_fast64_t ok, failed_http, failed_parse, failed_value, failed_transfer;
};

static size_t on_body(char *p, size_t sz, size_t n, void *ctx)
{
    xfer *x = ctx;
    size_t add = sz * n;
    if (x->len + add > MAX_BODY) {
        x->overflow = true;
        return 0;   /* aborts the transfer */
    }
    char *g = realloc(x->body, x->len + add + 1);
    if (!g)
        return 0;
    memcpy(g + x->len, p, add);
    x->body = g;
    x->len += add;
    g[x->len] = 0;
    return add;
}

static void finish(scraper *s, xfer *x, CURLcode rc)
{
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (rc != CURLE_OK)
        atomic_fetch_add(&s->failed_transfer, 1);
    else if (code != 200)
        atomic_fetch_add(&s->failed_http, 1);
    else {
        scrape_sample smp;
        kv_err err;
        int prc = scrape_parse(x->body ? x->body : "", x->len, s->kv_metric, &smp, &err);
        if (prc == KV_OK) {
            epset_set_metrics(s->cfg.endpoints, x->name, &smp.m);
            scrape_sample_free(&smp);
            atomic_fetch_add(&s->ok, 1);
            if (x->rejecting)
                LOG_I("metrics scrape accepted again", "{s:s}", "pod", x->name);
            x->rejecting = false;
        } else {
            atomic_fetch_add(prc == KV_ERANGE ? &s->failed_value : &s->failed_parse, 1);
            /* a pod that keeps sending bad values would otherwise log every interval */
            if (!x->rejecting)
                LOG_W("metrics scrape rejected; the pod's metrics go stale until it recovers", "{s:s, s:s}", "pod",
                      x->name, "error", err.msg);
            x->rejecting = true;
        }
    }
    curl_multi_remove_handle(s->multi, x->easy);
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
    free(x->body);
    x->body = NULL;
    x->len = 0;
}

static bool start_xfer(scraper *s, xfer *x)
{
    if (!(x->easy = curl_easy_init()))
        return false;
    x->overflow = false;
    curl_easy_setopt(x->easy, CURLOPT_URL, x->url);
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)s->cfg.timeout_ms);
    curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    if (curl_multi_add_handle(s->multi, x->easy) != CURLM_OK) {
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
        return false;
    }
    return true;
}

/* Rebuilds the transfer list for a new endpoint set; transfers of departed endpoints are
 * dropped, those of staying ones keep running. */
static void follow(scraper *s, xfer **xs, size_t *n, epset_snap *snap)
{
    xfer *nx = calloc(snap->n ? snap->n : 1, sizeof *nx);
    if (!nx)
        return;
    for (size_t i = 0; i < snap->n; i++) {
        nx[i].s = s;
        snprintf(nx[i].name, sizeof nx[i].name, "%s", snap->names[i]);
        snprintf(nx[i].url, sizeof nx[i].url, "http://%s/metrics", snap->names[i]);
    }
    for (size_t j = 0; j < *n; j++) {
        xfer *old = &(*xs)[j];
        for (size_t i = 0; old->rejecting && i < snap->n; i++)
            if (!strcmp(nx[i].name, old->name))
                nx[i].rejecting = true;
        if (!old->easy)
            continue;
        /* In-flight transfers point at their xfer; they are finished here rather than moved. */
        curl_multi_remove_handle(s->multi, old->easy);
        curl_easy_cleanup(old->easy);
        free(old->body);
    }
    free(*xs);
    *xs = nx;
    *n = snap->n;
    /* One kept-alive connection per endpoint. By default libcurl caches 4 per easy handle
     * still added, so the last transfers of a round, done with few handles left, closed
     * connections that the next round opened again. */
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)(snap->n ? snap->n : 1));
}

static void *scrape_main(void *arg)
{
    scraper *s = arg;
    xfer *xs = NULL;
    size_t n = 0;
    uint64_t gen = UINT64_MAX;
    double next = monoclock_s() * 1e3;
    while (!atomic_load(&s->stop)) {
        uint64_t g = epset_generation(s->cfg.endpoints);
        if (g != gen) {
            epset_snap snap;
            if (epset_snapshot(s->cfg.endpoints, &snap, NULL) == KV_OK) {
                follow(s, &xs, &n, &snap);
                epset_snap_free(&snap);
                gen = g;
            }
        }
        double now = monoclock_s() * 1e3;
        if (now >= next) {
            /* An endpoint still busy with the previous scrape is skipped this round. */
            for (size_t i = 0; i < n; i++)
                if (!xs[i].easy)
                    start_xfer(s, &xs[i]);
            next += s->cfg.interval_ms;
            if (next < now)
                next = now + s->cfg.interval_ms;
        }
        int running = 0;
        curl_multi_perform(s->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(s->multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                xfer *x = NULL;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
                finish(s, x, m->data.result);
            }
        int wait = (int)(next - monoclock_s() * 1e3);
        curl_multi_poll(s->multi, NULL, 0, wait < 1 ? 1 : wait, NULL);
    }
    for (size_t i = 0; i < n; i++)
        if (xs[i].easy) {
            curl_multi_remove_handle(s->multi, xs[i].easy);
            curl_easy_cleanup(xs[i].easy);
            free(xs[i].body);
        }
    free(xs);
    return NULL;
}

scraper *scrape_start(const scrape_config *cfg, kv_err *err)
{
    if (!cfg->endpoints) {
        kv_err_set(err, KV_EINVAL, "scrape: no endpoint set");
        return NULL;
    }
    scraper *s = calloc(1, sizeof *s);
    if (!s) {
        kv_err_set(err, KV_ENOMEM, "scrape: out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    snprintf(s->kv_metric, sizeof s->kv_metric, "%s", cfg->kv_metric ? cfg->kv_metric : DEFAULT_KV_METRIC);
    s->cfg.kv_metric = s->kv_metric;
    if (s->cfg.interval_ms <= 0)
        s->cfg.interval_ms = 50;
    if (s->cfg.timeout_ms <= 0)
        s->cfg.timeout_ms = 1000;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!(s->multi = curl_multi_init()) || pthread_create(&s->th, NULL, scrape_main, s)) {
        if (s->multi)
            curl_multi_cleanup(s->multi);
        free(s);
        kv_err_set(err, KV_EIO, "scrape: cannot start the scraper");
        return NULL;
    }
    return s;
}

void scrape_stop(scraper *s)
{
    if (!s)
        return;
    atomic_store(&s->stop, true);
    curl_multi_wakeup(s->multi);
    pthread_join(s->th, NULL);
    curl_multi_cleanup(s->multi);
    free(s);
}

void scrape_get_stats(const scraper *s, scrape_stats *out)
{
    scraper *m = (scraper *)s;
    out->ok = atomic_load(&m->ok);
    out->failed_http = atomic_load(&m->failed_http);
    out->failed_parse = atomic_load(&m->failed_parse);
    out->failed_value = atomic_load(&m->failed_value);
    out->failed_transfer = atomic_load(&m->failed_transfer);
}
