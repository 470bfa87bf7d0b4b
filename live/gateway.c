/* gateway: the OpenAI-compatible front door (see gateway.h).
 *
 * A completion's life, all on the loop thread except the decision: arrival (method,
 * path, key, headers and body into a route_req) -> a slot (max_concurrent) or the queue
 * -> a worker runs route_decide -> the loop forwards it (one evhttp connection per
 * attempt, so cancelling is freeing it) -> response headers: 429/503 with a retry left
 * are held back, anything else starts the client's answer -> body chunks passed on as
 * they come -> the end (or a failure before the first byte: route_retry on a worker,
 * once) -> route_complete, the metrics, the next queued request.
 *
 * libevent 2.1 lifetimes this relies on: an outgoing connection is the gateway's to free
 * (libevent's free-on-completion misses failed requests): freeing it while its request
 * is pending cancels the request silently (no callback); after the request's final
 * callback it is freed from the loop's next turn, never inside libevent's own call
 * chain. An incoming request whose connection failed (the client went away) is unlinked
 * from it, and the gateway frees it; one still linked goes with its connection. */
#include "gateway.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "log.h"
#include "monoclock.h"
#include "promexp.h"

#define USAGE_COPY_MAX (1u << 20)  /* an unstreamed answer kept for its usage, at most */

typedef enum phase { PH_QUEUED, PH_ROUTING, PH_FORWARDING, PH_DONE } phase;

typedef struct gwreq gwreq;
struct gwreq {
    gateway *gw;
    struct evhttp_request *req;        /* the client's */
    struct evhttp_connection *ccon;
    route_req q;
    phase ph;
    bool retry;                        /* the worker's job is route_retry */
    bool retried;
    bool client_gone, timed_out;
    struct event *wake;                /* a worker's decision is back */
    struct event *watch;               /* the client's socket: its EOF means gone */
    struct event *timer;               /* request_timeout_s */
    double t_in, t_first;
    /* the current attempt */
    char target[128];                  /* the endpoint forwarded to */
    struct evhttp_connection *ucon;    /* NULL when none is pending */
    bool hold;                         /* a 429/503 held back for a retry */
    int up_code;
    char up_reason[64];
    struct evbuffer *held;             /* its body */
    bool started;                      /* the client's answer started */
    bool streaming;                    /* text/event-stream */
    oai_sse sse;
    struct evbuffer *copy;             /* unstreamed answer, for usage */
    TAILQ_ENTRY(gwreq) all, waiting;
    gwreq *next_job;
};

struct gateway {
    gateway_config cfg;
    struct event_base *base;
    struct evhttp *http;
    int port;
    breaker *brk;
    pthread_t loop;
    struct event *stop_ev;
    /* workers */
    pthread_t *workers;
    int n_workers;
    pthread_mutex_t mu;                /* jobs, stop, stats */
    pthread_cond_t cv;
    gwreq *job_head, *job_tail;
    bool stopping;
    gateway_stats stats;
    /* loop thread only */
    TAILQ_HEAD(, gwreq) reqs, queue;
    route_router *router;
    bool own_router;
    bool stopping_loop;
    struct evhttp_connection **dead;   /* outgoing connections to free (release_conn) */
    size_t n_dead, cap_dead;
    struct event *reap_ev;
};

/* ---- small helpers --------------------------------------------------------------------------- */

static void count(gateway *g, uint64_t *field)
{
    pthread_mutex_lock(&g->mu);
    (*field)++;
    pthread_mutex_unlock(&g->mu);
}

static const char *error_type(int status)
{
    if (status == 401)
        return "authentication_error";
    if (status == 429)
        return "rate_limit_error";
    return status >= 500 ? "server_error" : "invalid_request_error";
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
    }
}

/* Answers req with an OpenAI-shaped error body (counted by the caller). */
static void reply_error(struct evhttp_request *req, int status, const char *code, const char *msg,
                        const char *request_id)
{
    json_t *j = json_pack("{s:{s:s, s:s, s:s}}", "error", "message", msg, "type", error_type(status), "code", code);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    struct evbuffer *b = evbuffer_new();
    if (b && s)
        evbuffer_add(b, s, strlen(s));
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    if (request_id)
        evhttp_add_header(h, "x-request-id", request_id);
    if (status == 401)
        evhttp_add_header(h, "WWW-Authenticate", "Bearer");
    evhttp_send_reply(req, status, reason(status), b);
    if (b)
        evbuffer_free(b);
    free(s);
}

/* An error answered before any routing (no route_req to complete), counted here. */
static void send_error(gateway *g, struct evhttp_request *req, int status, const char *code, const char *msg,
                       const char *request_id)
{
    reply_error(req, status, code, msg, request_id);
    count(g, &g->stats.requests);
    promexp_observe_gateway(g->cfg.metrics, status, -1, -1);
}

/* Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded. */
static bool hop_by_hop(const char *k)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                                        "trailer", "upgrade", "proxy-authorization", "proxy-authenticate",
                                        "content-length", "host"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcasecmp(k, names[i]))
            return true;
    return false;
}

/* ---- the end of a request ---------------------------------------------------------------------- */

static void start_next(gateway *g);
static void dispatch(gwreq *r);

/* Everything about r ends here: the route completion, the metrics, its slot. */
static void finish(gwreq *r, int status)
{
    gateway *g = r->gw;
    if (r->ph == PH_DONE)
        return;
    bool had_slot = r->ph != PH_QUEUED;
    if (r->ph == PH_QUEUED)
        TAILQ_REMOVE(&g->queue, r, waiting);
    r->ph = PH_DONE;
    if (r->ucon) /* cancels the upstream request: no callback comes */
        evhttp_connection_free(r->ucon), r->ucon = NULL;
    if (r->ccon)
        evhttp_connection_set_closecb(r->ccon, NULL, NULL);
    if (r->client_gone && r->req) /* unlinked from its failed connection: ours */
        evhttp_request_free(r->req);
    r->req = NULL;
    route_req *q = &r->q;
    q->http_status = status;
    if (r->streaming)
        q->usage = r->sse.usage;
    else if (r->copy && evbuffer_get_length(r->copy))
        oai_usage_parse((const char *)evbuffer_pullup(r->copy, -1), evbuffer_get_length(r->copy), &q->usage, NULL);
    route_complete(q);
    double now = monoclock_s(), ttft = -1, tpot = -1;
    if (r->t_first > 0) {
        ttft = r->t_first - r->t_in;
        uint64_t n = q->usage.found ? q->usage.completion_tokens : r->sse.events;
        if (r->streaming && n > 1)
            tpot = (now - r->t_first) / (double)(n - 1);
    }
    count(g, &g->stats.requests);
    promexp_observe_gateway(g->cfg.metrics, status, ttft, tpot);
    pthread_mutex_lock(&g->mu);
    if (had_slot)
        g->stats.in_flight--;
    else
        g->stats.queued--;
    pthread_mutex_unlock(&g->mu);
    TAILQ_REMOVE(&g->reqs, r, all);
    event_free(r->wake);
    event_free(r->timer);
    if (r->watch)
        event_free(r->watch);
    if (r->held)
        evbuffer_free(r->held);
    if (r->copy)
        evbuffer_free(r->copy);
    oai_sse_free(&r->sse);
    route_req_free(q);
    free(r);
    if (had_slot)
        start_next(g);
}

/* Ends r with an error answer when its client is still there and nothing was sent yet;
 * after the answer started, the client's connection is cut (a truncated stream, never
 * a well-formed end). */
static void fail(gwreq *r, int status, const char *code, const char *msg)
{
    if (r->req && !r->client_gone) {
        if (!r->started) {
            evhttp_connection_set_closecb(r->ccon, NULL, NULL);
            reply_error(r->req, status, code, msg, r->q.request_id);
        } else {
            evhttp_connection_set_closecb(r->ccon, NULL, NULL);
            evhttp_connection_free(r->ccon); /* frees the request with it */
            r->ccon = NULL;
        }
        r->req = NULL;
    }
    finish(r, status);
}

/* ---- the client side ------------------------------------------------------------------------- */

static void on_client_close(struct evhttp_connection *con, void *arg)
{
    gwreq *r = arg;
    r->client_gone = true;
    r->ccon = NULL;
    /* libevent unlinks the request of a failed connection (then it is ours to free); a
     * request still linked is freed with its connection, right after this callback */
    if (r->req && evhttp_request_get_connection(r->req))
        r->req = NULL;
    count(r->gw, &r->gw->stats.client_cancels);
    if (r->ph != PH_ROUTING) /* a worker holds it: finished when the decision is back */
        finish(r, 499);
}

/* libevent reads nothing from a client while its answer is pending, so a client that
 * hangs up before the first byte goes unnoticed: the gateway watches the socket itself.
 * EOF or an error: the connection is freed (on_client_close follows); bytes (a
 * pipelined request): the watch ends, and a failed write will tell instead. */
static void on_client_readable(evutil_socket_t fd, short what, void *arg)
{
    gwreq *r = arg;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK);
    if (n > 0 || !r->ccon)
        return;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        event_add(r->watch, NULL);
        return;
    }
    evhttp_connection_free(r->ccon); /* calls on_client_close, frees the request */
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    gwreq *r = arg;
    r->timed_out = true;
    count(r->gw, &r->gw->stats.timeouts);
    if (r->ph != PH_ROUTING)
        fail(r, 504, "timeout", "the request timed out");
}

/* ---- upstream -------------------------------------------------------------------------------- */

static void upstream_failed(gwreq *r, const char *why);

static int on_up_headers(struct evhttp_request *ureq, void *arg)
{
    gwreq *r = arg;
    gateway *g = r->gw;
    int code = evhttp_request_get_response_code(ureq);
    const char *line = evhttp_request_get_response_code_line(ureq);
    r->up_code = code;
    snprintf(r->up_reason, sizeof r->up_reason, "%s", line ? line : reason(code));
    if (code == 429 || code >= 500) {
        breaker_failure(g->brk, r->target, monoclock_s());
        count(g, &g->stats.upstream_failures);
    } else {
        breaker_success(g->brk, r->target);
    }
    if ((code == 429 || code == 503) && !r->retried) {
        r->hold = true;
        return 0;
    }
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
    const struct evkeyvalq *in = evhttp_request_get_input_headers(ureq);
    for (const struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next) {
        if (hop_by_hop(h->key) || !strcasecmp(h->key, "x-gateway-destination-endpoint") ||
            !strcasecmp(h->key, "x-request-id"))
            continue;
        if (!strcasecmp(h->key, "content-type") && strstr(h->value, "text/event-stream"))
            r->streaming = true;
        evhttp_add_header(out, h->key, h->value);
    }
    evhttp_add_header(out, "x-gateway-destination-endpoint", r->target);
    evhttp_add_header(out, "x-request-id", r->q.request_id);
    if (!r->streaming)
        r->copy = evbuffer_new();
    evhttp_send_reply_start(r->req, code, r->up_reason);
    r->started = true;
    return 0;
}

static void on_up_chunk(struct evhttp_request *ureq, void *arg)
{
    gwreq *r = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(ureq);
    size_t len = evbuffer_get_length(in);
    if (!len)
        return;
    if (r->hold) {
        if (!r->held)
            r->held = evbuffer_new();
        if (r->held && evbuffer_get_length(r->held) < USAGE_COPY_MAX)
            evbuffer_add_buffer(r->held, in);
        return;
    }
    if (!r->started)
        return;
    if (r->t_first == 0) {
        r->t_first = monoclock_s();
        route_response_started(&r->q);
    }
    r->q.response_bytes += len;
    if (r->streaming)
        oai_sse_feed(&r->sse, (const char *)evbuffer_pullup(in, -1), len);
    else if (r->copy && evbuffer_get_length(r->copy) + len <= USAGE_COPY_MAX)
        evbuffer_add(r->copy, evbuffer_pullup(in, -1), len);
    evhttp_send_reply_chunk(r->req, in);
}

/* Frees the released outgoing connections (on the loop, or at the stop). */
static void reap(gateway *g)
{
    for (size_t i = 0; i < g->n_dead; i++)
        evhttp_connection_free(g->dead[i]);
    g->n_dead = 0;
}

static void on_reap(evutil_socket_t fd, short what, void *arg) { reap(arg); }

/* Frees an outgoing connection once libevent's call chain that ended its request has
 * returned (the loop's next turn). */
static void release_conn(gateway *g, struct evhttp_connection *c)
{
    if (g->n_dead == g->cap_dead) {
        size_t cap = g->cap_dead ? g->cap_dead * 2 : 16;
        struct evhttp_connection **d = realloc(g->dead, cap * sizeof *d);
        if (!d) {
            LOG_E("gateway: out of memory releasing a connection (leaked)", NULL);
            return;
        }
        g->dead = d, g->cap_dead = cap;
    }
    g->dead[g->n_dead++] = c;
    event_active(g->reap_ev, 0, 0);
}

/* The upstream request ended. */
static void on_up_done(struct evhttp_request *ureq, void *arg)
{
    gwreq *r = arg;
    release_conn(r->gw, r->ucon);
    r->ucon = NULL;
    if (!ureq || evhttp_request_get_response_code(ureq) == 0) {
        upstream_failed(r, "cannot connect to the endpoint or it closed the connection");
        return;
    }
    if (r->hold) { /* a 429/503 before any byte: the next-best endpoint, once */
        r->retried = true;
        r->hold = false;
        count(r->gw, &r->gw->stats.retries);
        r->retry = true;
        dispatch(r);
        return;
    }
    if (r->started)
        evhttp_send_reply_end(r->req), r->req = NULL;
    finish(r, r->up_code);
}

static void on_up_error(enum evhttp_request_error e, void *arg)
{
    gwreq *r = arg;
    LOG_V(2, "Upstream request failed", "{s:s, s:s, s:i}", "x-request-id", r->q.request_id, "endpoint", r->target,
          "error", (int)e);
}

/* A connect error, or the endpoint went away: before the first byte, a retry (once),
 * else 502; after it, the client's connection is cut. */
static void upstream_failed(gwreq *r, const char *why)
{
    gateway *g = r->gw;
    if (!r->hold) { /* a held 429/503 was counted at its headers */
        breaker_failure(g->brk, r->target, monoclock_s());
        count(g, &g->stats.upstream_failures);
    }
    if (!r->started && !r->retried) {
        r->retried = true;
        r->hold = false;
        count(g, &g->stats.retries);
        r->retry = true;
        dispatch(r);
        return;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "endpoint %s: %s", r->target, why);
    fail(r, 502, "upstream_error", msg);
}

/* Sends r's request to its target (r->q.target's first endpoint). */
static void forward(gwreq *r)
{
    gateway *g = r->gw;
    route_req *q = &r->q;
    size_t len = strcspn(q->target, ",");
    snprintf(r->target, sizeof r->target, "%.*s", (int)len, q->target);
    char host[128];
    snprintf(host, sizeof host, "%s", r->target);
    char *colon = strrchr(host, ':');
    int port = colon ? atoi(colon + 1) : 80;
    if (colon)
        *colon = 0;
    r->streaming = false;
    r->started = false;
    if (r->held)
        evbuffer_drain(r->held, evbuffer_get_length(r->held));
    struct evhttp_request *ureq = evhttp_request_new(on_up_done, r);
    r->ucon = ureq ? evhttp_connection_base_new(g->base, NULL, host, (uint16_t)port) : NULL;
    if (!r->ucon) {
        if (ureq)
            evhttp_request_free(ureq);
        fail(r, 500, "internal_error", "out of memory");
        return;
    }
    evhttp_connection_set_timeout(r->ucon, g->cfg.request_timeout_s > 0 ? (int)g->cfg.request_timeout_s + 1 : 3600);
    evhttp_request_set_header_cb(ureq, on_up_headers);
    evhttp_request_set_chunked_cb(ureq, on_up_chunk);
    evhttp_request_set_error_cb(ureq, on_up_error);
    struct evkeyvalq *h = evhttp_request_get_output_headers(ureq);
    for (size_t i = 0; i < q->n_hdrs; i++) {
        const char *k = q->hdrs[i].key;
        if (hop_by_hop(k) || (g->cfg.api_key && !strcmp(k, "authorization")))
            continue;
        evhttp_add_header(h, k, q->hdrs[i].value);
    }
    evhttp_add_header(h, "Host", r->target);
    /* one connection per attempt: libevent frees a completed connection only when it
     * closes, and cancelling is freeing it */
    evhttp_add_header(h, "Connection", "close");
    char cl[32];
    snprintf(cl, sizeof cl, "%zu", q->body_len);
    evhttp_add_header(h, "Content-Length", cl);
    evbuffer_add(evhttp_request_get_output_buffer(ureq), q->body, q->body_len);
    const char *uri = evhttp_request_get_uri(r->req);
    if (evhttp_make_request(r->ucon, ureq, EVHTTP_REQ_POST, uri) != 0) {
        /* libevent freed the request */
        evhttp_connection_free(r->ucon);
        r->ucon = NULL;
        upstream_failed(r, "cannot send the request");
        return;
    }
    breaker_sent(g->brk, r->target, monoclock_s());
}

/* ---- routing on the workers ------------------------------------------------------------------ */

/* Hands r to a worker (route_decide, or route_retry when r->retry). */
static void dispatch(gwreq *r)
{
    gateway *g = r->gw;
    r->ph = PH_ROUTING;
    pthread_mutex_lock(&g->mu);
    r->next_job = NULL;
    if (g->job_tail)
        g->job_tail->next_job = r;
    else
        g->job_head = r;
    g->job_tail = r;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void *worker(void *arg)
{
    gateway *g = arg;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->job_head && !g->stopping)
            pthread_cond_wait(&g->cv, &g->mu);
        if (g->stopping)
            break;
        gwreq *r = g->job_head;
        if (!(g->job_head = r->next_job))
            g->job_tail = NULL;
        pthread_mutex_unlock(&g->mu);
        if (r->retry)
            route_retry(&r->q);
        else
            route_decide(&r->q);
        event_active(r->wake, 0, 0); /* r is the loop's again */
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* A decision is back on the loop. */
static void on_decided(evutil_socket_t fd, short what, void *arg)
{
    gwreq *r = arg;
    route_req *q = &r->q;
    r->ph = PH_FORWARDING;
    if (r->client_gone) {
        finish(r, 499);
        return;
    }
    if (r->timed_out) {
        fail(r, 504, "timeout", "the request timed out");
        return;
    }
    if (q->http_status == 200) {
        forward(r);
        return;
    }
    if (r->retry && r->up_code) { /* no other endpoint: the first one's answer stands */
        struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
        evhttp_add_header(out, "Content-Type", "application/json");
        evhttp_add_header(out, "x-gateway-destination-endpoint", r->target);
        evhttp_add_header(out, "x-request-id", q->request_id);
        evhttp_connection_set_closecb(r->ccon, NULL, NULL);
        evhttp_send_reply(r->req, r->up_code, r->up_reason, r->held);
        r->req = NULL;
        finish(r, r->up_code);
        return;
    }
    if (r->retry) { /* a connect error and no other endpoint */
        char msg[256];
        snprintf(msg, sizeof msg, "endpoint %s: cannot connect, and no other endpoint can serve: %s", r->target,
                 q->error);
        fail(r, 502, "upstream_error", msg);
        return;
    }
    fail(r, q->http_status, q->http_status == 400 ? "invalid_request" : "routing_failed", q->error);
}

/* Starts queued requests while slots are free. */
static void start_next(gateway *g)
{
    while (!g->stopping_loop) {
        gwreq *r = TAILQ_FIRST(&g->queue);
        if (!r)
            return;
        pthread_mutex_lock(&g->mu);
        bool slot = !g->cfg.max_concurrent || g->stats.in_flight < (uint64_t)g->cfg.max_concurrent;
        if (slot)
            g->stats.in_flight++, g->stats.queued--;
        pthread_mutex_unlock(&g->mu);
        if (!slot)
            return;
        TAILQ_REMOVE(&g->queue, r, waiting);
        dispatch(r);
    }
}

/* ---- arrival --------------------------------------------------------------------------------- */

/* The breaker as route's candidate filter. */
static bool endpoint_ok(void *ctx, const sched_endpoint *ep)
{
    return breaker_allows(((gateway *)ctx)->brk, ep->name, monoclock_s());
}

static bool authorized(const gateway *g, struct evhttp_request *req)
{
    if (!g->cfg.api_key)
        return true;
    const char *a = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!a || strncasecmp(a, "Bearer ", 7))
        return false;
    a += 7;
    size_t n = strlen(g->cfg.api_key), m = strlen(a);
    unsigned char diff = n != m;
    for (size_t i = 0; i < n; i++) /* every byte compared: the time does not tell the prefix */
        diff |= (unsigned char)(g->cfg.api_key[i] ^ (i < m ? a[i] : 0));
    return !diff;
}

static void completion(gateway *g, struct evhttp_request *req)
{
    gwreq *r = calloc(1, sizeof *r);
    if (!r) {
        send_error(g, req, 500, "internal_error", "out of memory", NULL);
        return;
    }
    *r = (gwreq){.gw = g, .req = req, .ccon = evhttp_request_get_connection(req), .t_in = monoclock_s()};
    route_req_init(&r->q, g->router);
    route_req *q = &r->q;
    q->endpoint_ok = endpoint_ok;
    q->endpoint_ctx = g;
    const struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    size_t n = 0;
    for (const struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next)
        n++;
    bool ok = route_begin(q, n) == KV_OK;
    for (const struct evkeyval *h = in->tqh_first; ok && h; h = h->next.tqe_next)
        ok = route_add_header(q, h->key, h->value, strlen(h->value)) == KV_OK;
    ok = ok && route_headers_end(q) == KV_OK;
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    q->request_bytes = len;
    bool body_ok = ok && route_body_append(q, evbuffer_pullup(body, -1), len);
    r->wake = event_new(g->base, -1, 0, on_decided, r);
    r->timer = evtimer_new(g->base, on_timeout, r);
    if (!ok || !body_ok || !r->wake || !r->timer) {
        const char *id = q->request_id;
        if (ok && !body_ok && r->wake && r->timer)
            send_error(g, req, 413, "request_too_large", "request body larger than the gateway's limit", id);
        else
            send_error(g, req, 500, "internal_error", "out of memory", id);
        if (r->wake)
            event_free(r->wake);
        if (r->timer)
            event_free(r->timer);
        route_req_free(q);
        free(r);
        return;
    }
    pthread_mutex_lock(&g->mu);
    bool slot = !g->cfg.max_concurrent || g->stats.in_flight < (uint64_t)g->cfg.max_concurrent;
    bool queue = !slot && g->stats.queued < (uint64_t)g->cfg.queue_size;
    if (slot)
        g->stats.in_flight++;
    else if (queue)
        g->stats.queued++;
    else
        g->stats.queue_full++;
    pthread_mutex_unlock(&g->mu);
    if (!slot && !queue) {
        send_error(g, req, 429, "rate_limit_exceeded", "too many requests: every slot is busy and the queue is full",
                   q->request_id);
        event_free(r->wake);
        event_free(r->timer);
        route_req_free(q);
        free(r);
        return;
    }
    TAILQ_INSERT_TAIL(&g->reqs, r, all);
    evhttp_connection_set_closecb(r->ccon, on_client_close, r);
    evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(r->ccon));
    if (fd >= 0 && (r->watch = event_new(g->base, fd, EV_READ, on_client_readable, r)))
        event_add(r->watch, NULL);
    if (g->cfg.request_timeout_s > 0) {
        double t = g->cfg.request_timeout_s;
        struct timeval tv = {.tv_sec = (time_t)t, .tv_usec = (suseconds_t)((t - (double)(time_t)t) * 1e6)};
        evtimer_add(r->timer, &tv);
    }
    if (slot) {
        dispatch(r);
    } else {
        r->ph = PH_QUEUED;
        TAILQ_INSERT_TAIL(&g->queue, r, waiting);
    }
}

/* ---- GET /v1/models: every endpoint's list, merged by id ------------------------------------ */

typedef struct models_req {
    gateway *g;
    struct evhttp_connection **conns;   /* one per endpoint asked, released at the end */
    size_t n_conns;
    struct evhttp_request *req;
    struct evhttp_connection *ccon;
    bool client_gone;
    size_t pending;
    json_t *data;                       /* merged "data" array */
} models_req;

static void models_reply(models_req *m)
{
    if (m->client_gone) {
        if (m->req) /* unlinked from its failed connection: ours */
            evhttp_request_free(m->req);
    } else {
        evhttp_connection_set_closecb(m->ccon, NULL, NULL);
        if (!json_array_size(m->data)) {
            send_error(m->g, m->req, 503, "no_endpoints", "no endpoint answered /v1/models", NULL);
        } else {
            json_t *j = json_pack("{s:s, s:O}", "object", "list", "data", m->data);
            char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
            json_decref(j);
            struct evbuffer *b = evbuffer_new();
            if (b && s)
                evbuffer_add(b, s, strlen(s));
            evhttp_add_header(evhttp_request_get_output_headers(m->req), "Content-Type", "application/json");
            evhttp_send_reply(m->req, s ? 200 : 500, s ? "OK" : reason(500), b);
            if (b)
                evbuffer_free(b);
            free(s);
            count(m->g, &m->g->stats.requests);
            promexp_observe_gateway(m->g->cfg.metrics, s ? 200 : 500, -1, -1);
        }
    }
    for (size_t i = 0; i < m->n_conns; i++)
        release_conn(m->g, m->conns[i]);
    free(m->conns);
    json_decref(m->data);
    free(m);
}

static void on_models_close(struct evhttp_connection *con, void *arg)
{
    models_req *m = arg;
    m->client_gone = true;
    if (evhttp_request_get_connection(m->req)) /* freed with its connection (see on_client_close) */
        m->req = NULL;
}

static void on_models_done(struct evhttp_request *ureq, void *arg)
{
    models_req *m = arg;
    struct evbuffer *in = ureq ? evhttp_request_get_input_buffer(ureq) : NULL;
    if (in && evhttp_request_get_response_code(ureq) == 200) {
        json_t *j = json_loadb((const char *)evbuffer_pullup(in, -1), evbuffer_get_length(in), 0, NULL);
        json_t *d = json_object_get(j, "data");
        size_t i, k;
        json_t *e, *have;
        json_array_foreach(d, i, e) {
            const char *id = json_string_value(json_object_get(e, "id"));
            bool dup = !id;
            json_array_foreach(m->data, k, have)
                dup = dup || !strcmp(id, json_string_value(json_object_get(have, "id")));
            if (!dup)
                json_array_append(m->data, e);
        }
        json_decref(j);
    }
    if (--m->pending == 0)
        models_reply(m);
}

static void list_models(gateway *g, struct evhttp_request *req)
{
    models_req *m = calloc(1, sizeof *m);
    json_t *data = json_array();
    if (!m || !data) {
        free(m);
        json_decref(data);
        send_error(g, req, 500, "internal_error", "out of memory", NULL);
        return;
    }
    *m = (models_req){.g = g, .req = req, .ccon = evhttp_request_get_connection(req), .data = data, .pending = 1};
    evhttp_connection_set_closecb(m->ccon, on_models_close, m);
    const route_pool *pool = &g->cfg.pool;
    sched_endpoint *const *eps;
    size_t n = pool->acquire(pool->ctx, &eps);
    m->conns = calloc(n ? n : 1, sizeof *m->conns);
    for (size_t i = 0; i < n && m->conns; i++) {
        char host[128];
        snprintf(host, sizeof host, "%s", eps[i]->name);
        char *colon = strrchr(host, ':');
        if (!colon)
            continue;
        *colon = 0;
        struct evhttp_connection *c = evhttp_connection_base_new(g->base, NULL, host, (uint16_t)atoi(colon + 1));
        struct evhttp_request *ureq = c ? evhttp_request_new(on_models_done, m) : NULL;
        if (!ureq) {
            if (c)
                evhttp_connection_free(c);
            continue;
        }
        evhttp_connection_set_timeout(c, 5);
        evhttp_add_header(evhttp_request_get_output_headers(ureq), "Host", eps[i]->name);
        evhttp_add_header(evhttp_request_get_output_headers(ureq), "Connection", "close");
        if (evhttp_make_request(c, ureq, EVHTTP_REQ_GET, "/v1/models") != 0) {
            evhttp_connection_free(c);
            continue;
        }
        m->conns[m->n_conns++] = c;
        m->pending++;
    }
    pool->release(pool->ctx);
    if (--m->pending == 0) /* no endpoint to ask */
        models_reply(m);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    gateway *g = arg;
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (!path)
        path = "";
    bool is_completion = !strcmp(path, "/v1/completions") || !strcmp(path, "/v1/chat/completions");
    bool is_get = !strcmp(path, "/health") || !strcmp(path, "/v1/models");
    if (!is_completion && !is_get) {
        char msg[300];
        snprintf(msg, sizeof msg, "no route for %.200s (the gateway serves /v1/completions, /v1/chat/completions, "
                                  "/v1/models and /health)", path);
        send_error(g, req, 404, "not_found", msg, NULL);
        return;
    }
    if ((is_completion && cmd != EVHTTP_REQ_POST) || (is_get && cmd != EVHTTP_REQ_GET)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", is_completion ? "POST" : "GET");
        send_error(g, req, 405, "method_not_allowed", is_completion ? "use POST" : "use GET", NULL);
        return;
    }
    if (!strcmp(path, "/health")) {
        evhttp_send_reply(req, 200, "OK", NULL);
        count(g, &g->stats.requests);
        promexp_observe_gateway(g->cfg.metrics, 200, -1, -1);
        return;
    }
    if (!authorized(g, req)) {
        send_error(g, req, 401, "invalid_api_key", "missing or incorrect API key (Authorization: Bearer <key>)",
                   NULL);
        return;
    }
    if (is_completion)
        completion(g, req);
    else
        list_models(g, req);
}

/* ---- start and stop -------------------------------------------------------------------------- */

static void *loop_main(void *arg)
{
    gateway *g = arg;
    event_base_loop(g->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* On the loop: every open request is completed as 503 (nothing more is sent), then the
 * loop ends. */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    gateway *g = arg;
    g->stopping_loop = true;
    gwreq *r;
    while ((r = TAILQ_FIRST(&g->reqs)))
        finish(r, 503);
    event_base_loopbreak(g->base);
}

static void stop_workers(gateway *g)
{
    pthread_mutex_lock(&g->mu);
    g->stopping = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    for (int i = 0; i < g->n_workers; i++)
        pthread_join(g->workers[i], NULL);
}

/* Frees what gateway_start built (the loop thread has ended, or never started). */
static void teardown(gateway *g)
{
    reap(g);
    free(g->dead);
    free(g->workers);
    if (g->stop_ev)
        event_free(g->stop_ev);
    if (g->reap_ev)
        event_free(g->reap_ev);
    if (g->http)
        evhttp_free(g->http);
    if (g->base)
        event_base_free(g->base);
    breaker_free(g->brk);
    if (g->own_router)
        route_free(g->router);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

gateway *gateway_start(const gateway_config *cfg, kv_err *err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, (void (*)(void))evthread_use_pthreads);
    if (cfg->max_concurrent < 0 || cfg->queue_size < 0 || cfg->request_timeout_s < 0 || cfg->threads < 0) {
        kv_err_set(err, KV_EINVAL, "gateway: negative limit (max concurrent %d, queue %d, timeout %g, threads %d)",
                   cfg->max_concurrent, cfg->queue_size, cfg->request_timeout_s, cfg->threads);
        return NULL;
    }
    gateway *g = calloc(1, sizeof *g);
    if (!g) {
        kv_err_set(err, KV_ENOMEM, "gateway: out of memory");
        return NULL;
    }
    g->cfg = *cfg;
    TAILQ_INIT(&g->reqs);
    TAILQ_INIT(&g->queue);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->own_router = !cfg->router;
    g->router = cfg->router ? cfg->router : route_new(&cfg->route, err);
    if (!g->router)
        goto fail;
    if (!(g->brk = breaker_new(cfg->breaker_failures ? cfg->breaker_failures : 5,
                               cfg->breaker_cooldown_s > 0 ? cfg->breaker_cooldown_s : 10, err)))
        goto fail;
    if (!(g->base = event_base_new()) || !(g->http = evhttp_new(g->base)) ||
        !(g->stop_ev = event_new(g->base, -1, 0, on_stop, g)) || !(g->reap_ev = event_new(g->base, -1, 0, on_reap, g))) {
        kv_err_set(err, KV_ENOMEM, "gateway: cannot create the event loop");
        goto fail;
    }
    size_t max_body = cfg->max_body ? cfg->max_body : (64u << 20);
    evhttp_set_max_body_size(g->http, (ev_ssize_t)max_body);
    evhttp_set_allowed_methods(g->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(g->http, on_request, g);
    const char *host = cfg->host ? cfg->host : "0.0.0.0";
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(g->http, host, (uint16_t)cfg->port);
    if (!bs) {
        kv_err_set(err, KV_EIO, "gateway: cannot listen on %s:%d (port in use?)", host, cfg->port);
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == 0)
        g->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    g->n_workers = cfg->threads ? cfg->threads : 4;
    if (!(g->workers = calloc((size_t)g->n_workers, sizeof *g->workers))) {
        kv_err_set(err, KV_ENOMEM, "gateway: out of memory");
        goto fail;
    }
    for (int i = 0; i < g->n_workers; i++)
        if (pthread_create(&g->workers[i], NULL, worker, g)) {
            g->n_workers = i;
            kv_err_set(err, KV_EIO, "gateway: cannot start a worker thread");
            goto fail;
        }
    if (pthread_create(&g->loop, NULL, loop_main, g)) {
        kv_err_set(err, KV_EIO, "gateway: cannot start the event loop thread");
        goto fail;
    }
    return g;
fail:
    stop_workers(g);
    teardown(g);
    return NULL;
}

int gateway_port(const gateway *g) { return g->port; }

void gateway_stop(gateway *g)
{
    if (!g)
        return;
    stop_workers(g);
    event_active(g->stop_ev, 0, 0);
    pthread_join(g->loop, NULL);
    teardown(g);
}

void gateway_get_stats(gateway *g, gateway_stats *out)
{
    pthread_mutex_lock(&g->mu);
    *out = g->stats;
    pthread_mutex_unlock(&g->mu);
    out->breaker_opens = breaker_opens(g->brk);
}

void gateway_each_breaker(gateway *g, void (*fn)(void *ctx, const char *ep, breaker_state st), void *ctx)
{
    breaker_each(g->brk, fn, ctx);
}
