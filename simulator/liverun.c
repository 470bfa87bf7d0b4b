/* liverun: the scenario's workload against a live OpenAI-compatible endpoint, measured
 * as inference-perf measures it (liverun.h). One libevent loop on the calling thread
 * owns every request: an arrival timer per stage (re-armed for the next offset), one
 * evhttp_connection per request, a timeout timer per request, and a one-second
 * progress timer. Each response stream is read as it arrives by livesse (the HTTP
 * parsing is libevent's). Times are
 * CLOCK_MONOTONIC microseconds since the run began. */
#define _GNU_SOURCE
#include "liverun.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "livesse.h"
#include "monoclock.h"
#include "promtext.h"

static const char *const fail_names[LIVE_FAIL_N] = {"connect", "http_status", "timeout", "stream"};

const char *live_fail_name(live_fail f)
{
    return (unsigned)f < LIVE_FAIL_N ? fail_names[f] : "?";
}

/* ---- the target ----------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void live_target_free(live_target *t)
{
    free(t->url);
    free(t->host);
    free(t->path);
    free(t->label);
    free(t->model);
    free(t->api_key);
    for (size_t i = 0; i < t->n_pods; i++)
        free(t->pods[i]);
    free(t->pods);
    memset(t, 0, sizeof *t);
}

/* --target-pods: each entry http://host:port or host:port, kept as "host:port" (what
 * x-gateway-destination-endpoint names). */
static int parse_pods(const char *list, live_target *t, kv_err *err)
{
    size_t n = 1;
    for (const char *c = list; *c; c++)
        n += *c == ',';
    if (!(t->pods = calloc(n, sizeof *t->pods)))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    for (const char *p = list; t->n_pods < n; p = strchr(p, ',') + 1) {
        size_t len = strcspn(p, ",");
        char *url = NULL;
        if (asprintf(&url, "%s%.*s", strncmp(p, "http://", 7) ? "http://" : "", (int)len, p) < 0)
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        struct evhttp_uri *u = evhttp_uri_parse(url);
        const char *host = u ? evhttp_uri_get_host(u) : NULL;
        int port = u ? evhttp_uri_get_port(u) : -1;
        const char *path = u ? evhttp_uri_get_path(u) : NULL;
        int rc = KV_OK;
        if (!host || !*host || port <= 0 || (path && *path && strcmp(path, "/")))
            rc = kv_err_set(err, KV_EINVAL, "--target-pods: '%.*s' is not host:port or http://host:port", (int)len, p);
        else if (asprintf(&t->pods[t->n_pods], "%s:%d", host, port) < 0)
            rc = kv_err_set(err, KV_ENOMEM, "out of memory");
        else
            t->n_pods++;
        if (u)
            evhttp_uri_free(u);
        free(url);
        if (rc)
            return rc;
        if (!p[len])
            break;
    }
    return KV_OK;
}

/* The pod a host:port names (up to a ',' : GIE's header may list fallbacks), or -1. */
static int pod_index(const live_target *t, const char *hostport)
{
    if (!hostport)
        return -1;
    size_t len = strcspn(hostport, ",");
    for (size_t i = 0; i < t->n_pods; i++)
        if (strlen(t->pods[i]) == len && memcmp(t->pods[i], hostport, len) == 0)
            return (int)i;
    return -1;
}

/* The workload's inference-perf `server:` section, as inference-perf's config reads it. */
static int read_server(const scenario *s, const char **base_url, const char **model, const char **api_key,
                       bool *ignore_eos, kv_err *err)
{
    const yt_node *sv = s->workload_node ? yt_get(s->workload_node, "server") : NULL;
    if (!sv || yt_is_null(sv))
        return KV_OK;
    const yt_doc *d = s->doc;
    const yt_node *n;
    if (!yt_get(sv, "type") && !yt_get(sv, "base_url") && !yt_get(sv, "model_name"))
        return yt_error(d, sv, err, KV_EINVAL, "field 'workload.server': a map with type, base_url, model_name");
    const char *type = NULL;
    int rc = KV_OK;
    if ((n = yt_get(sv, "type")) && (rc = yt_string(d, n, "workload.server.type", &type, err)))
        return rc;
    if (type && strcmp(type, "vllm") && strcmp(type, "sglang") && strcmp(type, "tgi"))
        return yt_error(d, n, err, KV_EINVAL, "field 'workload.server.type': '%s' (a live run speaks the OpenAI "
                        "API of vllm, sglang or tgi)", type);
    if ((n = yt_get(sv, "base_url")) && !yt_is_null(n) && (rc = yt_string(d, n, "workload.server.base_url", base_url, err)))
        return rc;
    if ((n = yt_get(sv, "model_name")) && !yt_is_null(n) &&
        (rc = yt_string(d, n, "workload.server.model_name", model, err)))
        return rc;
    if ((n = yt_get(sv, "api_key")) && !yt_is_null(n) && (rc = yt_string(d, n, "workload.server.api_key", api_key, err)))
        return rc;
    if ((n = yt_get(sv, "ignore_eos")) && !yt_is_null(n) && (rc = yt_bool(d, n, "workload.server.ignore_eos", ignore_eos, err)))
        return rc;
    return KV_OK;
}

int live_target_resolve(const scenario *s, const char *url, const char *label, const char *pods, live_target *t,
                        kv_err *err)
{
    memset(t, 0, sizeof *t);
    const char *base = NULL, *model = NULL, *key = NULL;
    bool ignore_eos = true;
    int rc = read_server(s, &base, &model, &key, &ignore_eos, err);
    if (rc)
        return rc;
    if (label && (!*label || strspn(label, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") !=
                                 strlen(label) || strcmp(label, ".") == 0 || strcmp(label, "..") == 0))
        return kv_err_set(err, KV_EINVAL, "--target-label: '%s' is not [A-Za-z0-9._:-]+ (it names a directory)", label);
    const char *what = url ? "--target" : "workload.server.base_url";
    if (!url)
        url = base;
    if (!url)
        return kv_err_set(err, KV_EINVAL, "%s: no target: give --target URL or a workload.server.base_url", s->path);
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    if (!u || !scheme || !host || !*host) {
        rc = kv_err_set(err, KV_EINVAL, "%s: '%s' is not an absolute http:// URL", what, url);
    } else if (strcmp(scheme, "http") != 0) {
        rc = kv_err_set(err, KV_EINVAL, "%s: '%s': scheme '%s' not supported (./sim speaks plain http; put a TLS "
                        "proxy in front for https)", what, url, scheme);
    } else {
        int port = evhttp_uri_get_port(u);
        const char *p = evhttp_uri_get_path(u);
        size_t plen = p ? strlen(p) : 0;
        while (plen && p[plen - 1] == '/')
            plen--;
        char hostport[300];
        snprintf(hostport, sizeof hostport, "%s:%d", host, port < 0 ? 80 : port);
        *t = (live_target){.url = strdup(url), .host = strdup(host), .port = port < 0 ? 80 : port,
                           .label = strdup(label ? label : hostport),
                           .model = strdup(model ? model : s->cluster.model->hf_name), .api_key = dup_or_null(key),
                           .ignore_eos = ignore_eos};
        if (asprintf(&t->path, "%.*s/v1/completions", (int)plen, p ? p : "") < 0)
            t->path = NULL;
        if (!t->url || !t->host || !t->label || !t->model || !t->path || (key && !t->api_key))
            rc = kv_err_set(err, KV_ENOMEM, "out of memory");
        else if (pods)
            rc = parse_pods(pods, t, err);
    }
    if (u)
        evhttp_uri_free(u);
    if (rc)
        live_target_free(t);
    return rc;
}

/* ---- the run ----------------------------------------------------------------------------- */

typedef struct lr lr;

typedef struct lr_req {
    lr *lr;
    uint64_t id;
    struct evhttp_connection *con;
    struct evhttp_request *req;       /* NULL once libevent has finished with it */
    struct event *timeout;
    livesse sse;                      /* the response stream as read so far */
    bool headers, broken, timed_out, finished;   /* broken: the stream broke off */
    int status;
    int endpoint;                     /* the pod that served it (live_target.pods), -1 unknown */
    live_fail reason;
} lr_req;

struct lr {
    const workload *w;
    const live_target *t;
    const live_opts *o;
    sim_run *run;
    live_stats *st;
    struct event_base *base;
    struct event *arrive, *next_stage, *tick;
    int64_t t0;                       /* monoclock_us at the run's start */
    lr_req *reqs;
    size_t stage;
    uint64_t stage_first;             /* global id of the stage's request 0 */
    uint32_t stage_queued, stage_sent, stage_done, stage_failed;
    sim_time stage_begin, stage_start;
    int rc;
    bool tty;                         /* stderr is a terminal: progress redrawn in place */
    int target_pod;                   /* the target itself among the pods, or -1 */
    size_t scrapes_pending;           /* /metrics reads in flight */
    bool scraped_before;              /* the first round is done: the next one ends the run */
    kv_err *err;
};

static sim_time lr_now(const lr *l)
{
    return (sim_time)(monoclock_us() - l->t0);
}

static struct timeval tv_us(sim_time us)
{
    if (us < 0)
        us = 0;
    return (struct timeval){.tv_sec = us / SIM_US_PER_S, .tv_usec = us % SIM_US_PER_S};
}

/* Ends the run with an error (memory, libevent): the loop stops at once. */
static void lr_abort(lr *l, int rc)
{
    if (!l->rc)
        l->rc = rc;
    event_base_loopbreak(l->base);
}

static void lr_progress(lr *l, bool final)
{
    if (!l->o->progress)
        return;
    double el = (double)(lr_now(l) - l->stage_begin) / 1e6;
    fprintf(stderr, "%s%s stage %zu: %.1f s elapsed, %u sent, %u completed, %u failed%s", l->tty ? "\r" : "",
            l->t->label, l->stage, el, l->stage_sent, l->stage_done - l->stage_failed, l->stage_failed,
            final || !l->tty ? "\n" : "");
    fflush(stderr);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    lr_progress(arg, false);
}

static int lr_start_stage(lr *l, size_t stage);
static void lr_scrape_or(lr *l, void (*then)(lr *l));
static void lr_end(lr *l);

static void next_stage_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    lr *l = arg;
    int rc = lr_start_stage(l, l->stage + 1);
    if (rc)
        lr_abort(l, rc);
}

/* ---- the pods' prefix-cache counters ------------------------------------------------------ */

typedef struct lr_scrape {
    lr *l;
    size_t pod;
    struct evhttp_connection *con;
    void (*then)(lr *l);              /* after the last answer of the round */
} lr_scrape;

static void free_con_cb(evutil_socket_t fd, short what, void *arg);

/* One pod's /metrics answer (req NULL: no answer): the counters at the run's start, then
 * their increase at its end. A pod whose counters could not be read, or went down (it
 * restarted during the run), has none (counters_ok false), said once on stderr. */
static void scrape_done_cb(struct evhttp_request *req, void *arg)
{
    lr_scrape *sc = arg;
    lr *l = sc->l;
    simdb_live_pod *p = &l->st->pods[sc->pod];
    double q = 0, h = 0;
    const char *why = NULL;
    if (!req || evhttp_request_get_response_code(req) != 200) {
        why = "no 200 answer";
    } else {
        struct evbuffer *b = evhttp_request_get_input_buffer(req);
        const char *text = evbuffer_add(b, "", 1) == 0 ? (const char *)evbuffer_pullup(b, -1) : NULL;
        if (!text || promtext_sum(text, "vllm:prefix_cache_queries_total", &q) <= 0 ||
            promtext_sum(text, "vllm:prefix_cache_hits_total", &h) <= 0)
            why = "no vllm:prefix_cache_queries_total and _hits_total";
    }
    if (!why && l->scraped_before) {
        q -= p->prefix_cache_queries, h -= p->prefix_cache_hits;
        if (q < 0 || h < 0)
            why = "its counters went down (a restart during the run)";
    }
    if (why && p->counters_ok)
        fprintf(stderr, "sim: pod %s: /metrics: %s; its prefix-cache hit rate is not measured\n", p->address, why);
    if (why)
        p->counters_ok = false;
    p->prefix_cache_queries = q, p->prefix_cache_hits = h;
    struct timeval zero = {0, 0};
    if (event_base_once(l->base, -1, EV_TIMEOUT, free_con_cb, sc->con, &zero) != 0)
        lr_abort(l, kv_err_set(l->err, KV_ENOMEM, "out of memory (releasing a connection)"));
    void (*then)(lr *) = sc->then;
    free(sc);
    if (--l->scrapes_pending == 0) {
        l->scraped_before = true;
        then(l);
    }
}

/* Reads every pod's /metrics, then calls then; with no pods, calls it at once. */
static void lr_scrape_or(lr *l, void (*then)(lr *l))
{
    const live_target *t = l->t;
    l->scrapes_pending = t->n_pods;
    for (size_t i = 0; i < t->n_pods; i++) {
        const char *hp = t->pods[i], *colon = strrchr(hp, ':');
        char host[256];
        snprintf(host, sizeof host, "%.*s", (int)(colon - hp), hp);
        lr_scrape *sc = calloc(1, sizeof *sc);
        struct evhttp_request *req = sc ? evhttp_request_new(scrape_done_cb, sc) : NULL;
        if (sc)
            *sc = (lr_scrape){.l = l, .pod = i, .then = then,
                              .con = evhttp_connection_base_new(l->base, NULL, host, (unsigned short)atoi(colon + 1))};
        if (!req || !sc->con) {
            if (req)
                evhttp_request_free(req);
            if (sc && sc->con)
                evhttp_connection_free(sc->con);
            free(sc);
            return lr_abort(l, kv_err_set(l->err, KV_ENOMEM, "out of memory (reading a pod's /metrics)"));
        }
        evhttp_connection_set_timeout(sc->con, 10);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Host", hp);
        if (evhttp_make_request(sc->con, req, EVHTTP_REQ_GET, "/metrics") != 0)
            return lr_abort(l, kv_err_set(l->err, KV_EIO, "cannot send GET /metrics to %s", hp));
    }
    if (!t->n_pods)
        then(l);
}

static void lr_end(lr *l)
{
    event_base_loopexit(l->base, NULL);
}

static void lr_begin(lr *l)
{
    int rc = lr_start_stage(l, 0);
    if (rc)
        lr_abort(l, rc);
}

/* As the simulation's harness: polls once a second from the stage's beginning until
 * the stage has drained, then sleeps `interval`. */
static void lr_stage_drained(lr *l, sim_time drained)
{
    l->run->stages[l->stage].t_end = drained;
    lr_progress(l, true);
    if (l->stage + 1 >= l->w->n_stages) {
        lr_scrape_or(l, lr_end);
        return;
    }
    sim_time polls = (drained - l->stage_begin + SIM_US_PER_S - 1) / SIM_US_PER_S;
    struct timeval tv = tv_us(l->stage_begin + polls * SIM_US_PER_S + l->w->interval - lr_now(l));
    evtimer_add(l->next_stage, &tv);
}

static int lr_send(lr *l, uint64_t id);

/* A request has its outcome: its record, the stage's counters, the next closed-loop send. */
static void lr_finish(lr_req *q)
{
    if (q->finished)
        return;
    q->finished = true;
    lr *l = q->lr;
    sim_request_record *rec = &l->run->requests[q->id];
    rec->t_end = lr_now(l);
    rec->endpoint = q->endpoint;
    if (q->endpoint >= 0)
        l->st->pods[q->endpoint].routed++;
    if (q->timeout)
        event_free(q->timeout), q->timeout = NULL;
    livesse *sse = &q->sse;
    bool ok = !q->timed_out && q->status == 200 && sse->done_marker && !sse->malformed && !q->broken;
    if (!ok) {
        if (q->timed_out)
            q->reason = LIVE_FAIL_TIMEOUT;
        else if (!q->headers)
            q->reason = LIVE_FAIL_CONNECT;
        else if (q->status != 200)
            q->reason = LIVE_FAIL_STATUS;
        else
            q->reason = LIVE_FAIL_STREAM;
        rec->failed = true;
        l->st->failed++;
        l->st->failed_by[q->reason]++;
        l->stage_failed++;
    } else {
        l->st->completed++;
        if (sse->has_usage) {
            rec->prompt_tokens = sse->usage_prompt;
            rec->output_tokens = sse->usage_output;
            rec->cached_tokens = sse->usage_cached;
        } else {
            rec->output_tokens = sse->chunks;
        }
        rec->token_times = livesse_take_times(sse, &rec->n_token_times);
        rec->t_first_token = rec->n_token_times ? rec->token_times[0] : rec->t_end;
    }
    livesse_free(sse);
    l->stage_done++;
    const wl_stage *st = &l->w->stages[l->stage];
    if (!st->offsets && l->stage_queued < st->n_requests) {
        int rc = lr_send(l, l->stage_first + l->stage_queued++);
        if (rc)
            lr_abort(l, rc);
    } else if (l->stage_done == st->n_requests) {
        lr_stage_drained(l, rec->t_end);
    }
}

static void free_con_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    evhttp_connection_free(arg);
}

/* Frees the request's connection once libevent has left its callbacks. */
static void lr_release_con(lr_req *q)
{
    if (!q->con)
        return;
    struct timeval zero = {0, 0};
    if (event_base_once(q->lr->base, -1, EV_TIMEOUT, free_con_cb, q->con, &zero) != 0)
        lr_abort(q->lr, kv_err_set(q->lr->err, KV_ENOMEM, "out of memory (releasing a connection)"));
    q->con = NULL;
}

static int header_cb(struct evhttp_request *req, void *arg)
{
    lr_req *q = arg;
    q->headers = true;
    q->status = evhttp_request_get_response_code(req);
    const char *dst = evhttp_find_header(evhttp_request_get_input_headers(req), "x-gateway-destination-endpoint");
    if (dst)
        q->endpoint = pod_index(q->lr->t, dst);
    return 0;
}

/* libevent drains the input buffer after this callback; livesse keeps a partial line. */
static void chunk_cb(struct evhttp_request *req, void *arg)
{
    lr_req *q = arg;
    if (q->status != 200 || q->sse.malformed)
        return;
    sim_time now = lr_now(q->lr);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    const char *p = (const char *)evbuffer_pullup(in, -1);
    if (n && livesse_feed(&q->sse, p, n, now) != KV_OK)
        lr_abort(q->lr, kv_err_set(q->lr->err, KV_ENOMEM, "out of memory (response stream)"));
}

static void error_cb(enum evhttp_request_error e, void *arg)
{
    lr_req *q = arg;
    if (e == EVREQ_HTTP_TIMEOUT)
        q->timed_out = true;
    else if (q->headers && q->status == 200)
        q->broken = true;
}

static void done_cb(struct evhttp_request *req, void *arg)
{
    lr_req *q = arg;
    q->req = NULL;
    if (req && !q->headers && evhttp_request_get_response_code(req) > 0)
        header_cb(req, q);            /* a response whose headers came without the callback */
    lr_finish(q);
    lr_release_con(q);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    lr_req *q = arg;
    q->timed_out = true;
    if (q->req)
        evhttp_cancel_request(q->req);   /* frees it; no callback follows */
    q->req = NULL;
    lr_finish(q);
    if (q->con)
        evhttp_connection_free(q->con), q->con = NULL;
}

static json_t *lr_body(const lr *l, const wl_req *wr)
{
    json_t *ids = json_array();
    for (uint32_t i = 0; ids && i < wr->n_prompt; i++)
        if (json_array_append_new(ids, json_integer(wr->tokens[i])))
            return json_decref(ids), NULL;
    return ids ? json_pack("{s:s, s:o, s:i, s:b, s:b, s:{s:b}}", "model", l->t->model, "prompt", ids, "max_tokens",
                           (json_int_t)wr->n_output, "ignore_eos", l->t->ignore_eos, "stream", 1, "stream_options",
                           "include_usage", 1)
               : NULL;
}

/* Sends request id (global) now. A request libevent cannot even start is a connect failure. */
static int lr_send(lr *l, uint64_t id)
{
    lr_req *q = &l->reqs[id];
    sim_request_record *rec = &l->run->requests[id];
    wl_req wr;
    int rc = wl_request(l->w, l->stage, id - l->stage_first, &wr, l->err);
    if (rc)
        return rc;
    json_t *body = lr_body(l, &wr);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    *rec = (sim_request_record){.id = id, .stage = (int)l->stage, .prompt_tokens = wr.n_prompt,
                                .prefix_group = wr.group, .t_scheduled = rec->t_scheduled};
    wl_req_release(&wr);
    *q = (lr_req){.lr = l, .id = id, .endpoint = l->target_pod};
    q->timeout = evtimer_new(l->base, timeout_cb, q);
    q->con = evhttp_connection_base_new(l->base, NULL, l->t->host, (unsigned short)l->t->port);
    q->req = evhttp_request_new(done_cb, q);
    if (!text || !q->timeout || !q->con || !q->req) {
        free(text);
        if (q->req)
            evhttp_request_free(q->req), q->req = NULL;
        return kv_err_set(l->err, KV_ENOMEM, "out of memory (request %llu)", (unsigned long long)id);
    }
    struct timeval tv = tv_us((sim_time)(l->o->timeout_s * 1e6));
    evhttp_connection_set_timeout_tv(q->con, &tv);
    evtimer_add(q->timeout, &tv);
    evhttp_request_set_header_cb(q->req, header_cb);
    evhttp_request_set_chunked_cb(q->req, chunk_cb);
    evhttp_request_set_error_cb(q->req, error_cb);
    struct evkeyvalq *h = evhttp_request_get_output_headers(q->req);
    char hostport[300];
    snprintf(hostport, sizeof hostport, "%s:%d", l->t->host, l->t->port);
    evhttp_add_header(h, "Host", hostport);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Accept", "text/event-stream");
    if (l->t->api_key) {
        char auth[1024];
        snprintf(auth, sizeof auth, "Bearer %s", l->t->api_key);
        evhttp_add_header(h, "Authorization", auth);
    }
    evbuffer_add(evhttp_request_get_output_buffer(q->req), text, strlen(text));
    free(text);
    rec->t_start = lr_now(l);
    if (l->stage_sent++ == 0)
        l->run->stages[l->stage].t_begin = rec->t_start;
    l->st->sent++;
    if (evhttp_make_request(q->con, q->req, EVHTTP_REQ_POST, l->t->path) != 0) {
        q->req = NULL;                /* libevent freed it */
        lr_finish(q);
        lr_release_con(q);
    }
    return l->rc;
}

/* The stage's sends: an open-loop stage sends every request whose time has come and
 * re-arms for the next; a closed-loop stage sends concurrency_level requests at its
 * start (lr_finish sends one more per completion). */
static void arrive_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    lr *l = arg;
    const wl_stage *st = &l->w->stages[l->stage];
    uint32_t first = st->concurrency < st->n_requests ? st->concurrency : st->n_requests;
    sim_time now = lr_now(l);
    while (st->offsets ? l->stage_queued < st->n_requests && l->stage_start + st->offsets[l->stage_queued] <= now
                       : l->stage_queued < first) {
        uint64_t id = l->stage_first + l->stage_queued++;
        l->run->requests[id].t_scheduled = st->offsets ? l->stage_start + st->offsets[id - l->stage_first] : now;
        int rc = lr_send(l, id);
        if (rc)
            return lr_abort(l, rc);
    }
    if (st->offsets && l->stage_queued < st->n_requests) {
        struct timeval tv = tv_us(l->stage_start + st->offsets[l->stage_queued] - lr_now(l));
        evtimer_add(l->arrive, &tv);
    }
}

static int lr_start_stage(lr *l, size_t stage)
{
    const wl_stage *st = &l->w->stages[stage];
    if (stage > 0)
        l->stage_first += l->w->stages[stage - 1].n_requests;
    l->stage = stage;
    l->stage_queued = l->stage_sent = l->stage_done = l->stage_failed = 0;
    l->stage_begin = lr_now(l);
    l->stage_start = l->stage_begin + SIM_US_PER_S;   /* inference-perf's 1 s head start */
    l->run->stages[stage] = (sim_stage_info){.index = (int)stage, .rate = st->rate, .duration_s = st->duration,
                                             .concurrency = (int)st->concurrency, .num_requests = st->n_requests,
                                             .t_begin = l->stage_start, .t_end = l->stage_start};
    if (st->n_requests == 0) {
        lr_stage_drained(l, l->stage_begin);
        return KV_OK;
    }
    struct timeval tv = tv_us(l->stage_start + (st->offsets ? st->offsets[0] : 0) - l->stage_begin);
    return evtimer_add(l->arrive, &tv) == 0 ? KV_OK : kv_err_set(l->err, KV_ENOMEM, "cannot arm a timer");
}

int live_run(const scenario *s, const workload *w, const live_target *t, const live_opts *o, sim_run *out,
             live_stats *st, kv_err *err)
{
    memset(out, 0, sizeof *out);
    memset(st, 0, sizeof *st);
    if (wl_multi_turn(w))
        return kv_err_set(err, KV_EINVAL, "%s: field 'workload.data.shared_prefix.enable_multi_turn_chat': not "
                          "supported by a live run (each round's prompt depends on the previous response)", s->path);
    uint64_t n = wl_total_requests(w);
    lr l = {.w = w, .t = t, .o = o, .run = out, .st = st, .err = err};
    char self[300];
    snprintf(self, sizeof self, "%s:%d", t->host, t->port);
    l.target_pod = pod_index(t, self);
    st->n_pods = t->n_pods;
    st->pods = calloc(t->n_pods ? t->n_pods : 1, sizeof *st->pods);
    for (size_t i = 0; st->pods && i < t->n_pods; i++)
        st->pods[i] = (simdb_live_pod){.pod = (int)i, .address = t->pods[i], .counters_ok = true};
    out->router = t->label;
    out->config_path = t->url;
    out->n_requests = n;
    out->n_stages = w->n_stages;
    out->requests = calloc(n ? n : 1, sizeof *out->requests);
    out->stages = calloc(w->n_stages ? w->n_stages : 1, sizeof *out->stages);
    l.reqs = calloc(n ? n : 1, sizeof *l.reqs);
    l.base = event_base_new();
    if (l.base) {
        l.arrive = evtimer_new(l.base, arrive_cb, &l);
        l.next_stage = evtimer_new(l.base, next_stage_cb, &l);
        l.tick = event_new(l.base, -1, EV_PERSIST, tick_cb, &l);
    }
    int rc = KV_OK;
    if (!out->requests || !out->stages || !l.reqs || !l.base || !l.arrive || !l.next_stage || !l.tick || !st->pods) {
        rc = kv_err_set(err, KV_ENOMEM, "out of memory (live run of %llu requests)", (unsigned long long)n);
    } else {
        l.t0 = monoclock_us();
        struct timeval sec = {1, 0};
        l.tty = isatty(STDERR_FILENO);
        if (o->progress && l.tty)
            evtimer_add(l.tick, &sec);
        if (w->n_stages) {
            lr_scrape_or(&l, lr_begin);
            if (event_base_dispatch(l.base) < 0)
                rc = kv_err_set(err, KV_EIO, "the event loop failed");
        }
        if (!rc)
            rc = l.rc;
        /* the last request's connection is freed by a zero timer that may not have run */
        event_del(l.tick);
        if (!rc)
            event_base_loop(l.base, EVLOOP_NONBLOCK);
        out->wall_seconds = (double)lr_now(&l) / 1e6;
    }
    /* after an abort, requests still in flight: cancelled, their records failed */
    for (uint64_t i = 0; l.reqs && i < n; i++) {
        lr_req *q = &l.reqs[i];
        if (q->req)
            evhttp_cancel_request(q->req);
        if (q->con)
            evhttp_connection_free(q->con);
        if (q->timeout)
            event_free(q->timeout);
        livesse_free(&q->sse);
    }
    free(l.reqs);
    if (l.arrive)
        event_free(l.arrive);
    if (l.next_stage)
        event_free(l.next_stage);
    if (l.tick)
        event_free(l.tick);
    if (l.base)
        event_base_free(l.base);
    if (rc) {
        live_run_free(out);
        live_stats_free(st);
    }
    return rc;
}

void live_stats_free(live_stats *st)
{
    free(st->pods);
    st->pods = NULL;
    st->n_pods = 0;
}

void live_run_free(sim_run *run)
{
    for (size_t i = 0; run->requests && i < run->n_requests; i++)
        free((sim_time *)run->requests[i].token_times);
    free(run->requests);
    free(run->stages);
    memset(run, 0, sizeof *run);
}
