/* test_gateway: ./epp's HTTP gateway (live/gateway.c) between a real HTTP client
 * (libcurl) and fake model servers (tests/support/fake_upstream.h) on ephemeral loopback
 * ports: answers passed through byte for byte, SSE chunks reaching the client while the
 * upstream is still holding the rest, the headers both ways, retries (503, 429, connect
 * error; none after the first byte), the circuit breaker opening and closing, the API
 * key, the bounded queue, the request timeout, a client's disconnect cancelling the
 * upstream request, the OpenAI-shaped errors; and the Done-when check: the same
 * requests through the ext-proc server and through the gateway pick the same endpoints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "extproc.h"
#include "gateway.h"
#include "promexp.h"
#include "support/extproc_client.h"
#include "support/fake_upstream.h"
#include "support/fx_pool.h"
#include "support/sched_fixture.h"

#define MODEL "m"
#define N_UP 3

/* queue-scorer alone: the endpoint with the shortest queue wins, so a test picks the
 * first target by setting the others' queues. */
static const char QUEUE_CONFIG[] =
    "plugins:\n"
    "- type: queue-scorer\n"
    "- type: max-score-picker\n"
    "schedulingProfiles:\n"
    "- name: default\n"
    "  plugins:\n"
    "  - {pluginRef: queue-scorer, weight: 1.0}\n"
    "  - {pluginRef: max-score-picker}\n";

/* Decisions that depend on the router's own history: approximate prefix cache (what was
 * routed where) and in-flight requests. */
static const char ALIKE_CONFIG[] =
    "plugins:\n"
    "- type: prefix-cache-scorer\n"
    "  parameters: {autoTune: false, blockSize: 16}\n"
    "- type: active-request-scorer\n"
    "- type: max-score-picker\n"
    "schedulingProfiles:\n"
    "- name: default\n"
    "  plugins:\n"
    "  - {pluginRef: prefix-cache-scorer, weight: 3.0}\n"
    "  - {pluginRef: active-request-scorer, weight: 1.0}\n"
    "  - {pluginRef: max-score-picker}\n";

typedef struct world {
    fx *f;
    fake_upstream *up[N_UP];
    gateway *gw;
    int port;
    pthread_mutex_t mu;
    int completions;
    route_completion last;        /* the last completion (strings not kept) */
} world;

static void on_complete(void *ctx, const route_completion *c)
{
    world *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->completions++;
    w->last = *c;
    pthread_mutex_unlock(&w->mu);
}

static int completions(world *w)
{
    pthread_mutex_lock(&w->mu);
    int n = w->completions;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* Waits (up to 10 s) for cond(w, arg) to hold. */
static bool wait_for(bool (*cond)(world *, void *), world *w, void *arg)
{
    for (int i = 0; i < 2000; i++) {
        if (cond(w, arg))
            return true;
        usleep(5000);
    }
    return false;
}

static bool have_completions(world *w, void *arg) { return completions(w) >= *(int *)arg; }

/* A fixture over N_UP fake upstreams (endpoint i is upstream i; dead_ep >= 0 names a
 * refused port instead); the gateway started with gc's limits. */
static world *world_new(const char *config, gateway_config gc, int dead_ep)
{
    world *w = calloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    w->f = fx_new(config, N_UP, 7);
    assert_non_null(w->f);
    for (int i = 0; i < N_UP; i++) {
        w->up[i] = fake_upstream_start(MODEL);
        assert_non_null(w->up[i]);
        int port = i == dead_ep ? fake_upstream_dead_port() : fake_upstream_port(w->up[i]);
        snprintf(w->f->names[i], sizeof w->f->names[i], "127.0.0.1:%d", port);
    }
    gc.host = "127.0.0.1";
    gc.threads = 2;
    gc.sched = w->f->s;
    gc.pool = fx_pool(w->f);
    gc.tokenize_timeout_ms = -1;
    gc.on_complete = on_complete;
    gc.hook_ctx = w;
    kv_err err = {0};
    w->gw = gateway_start(&gc, &err);
    if (!w->gw)
        fail_msg("gateway_start: %s", err.msg);
    w->port = gateway_port(w->gw);
    return w;
}

static void world_free(world *w)
{
    gateway_stop(w->gw);
    for (int i = 0; i < N_UP; i++)
        fake_upstream_stop(w->up[i]);
    fx_free(w->f);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* ---- an HTTP client ---------------------------------------------------------------------------- */

typedef struct resp {
    long status;
    char dest[64], rid[128], ctype[64];
    char *body;
    size_t len;
    atomic_int chunks;            /* write callbacks so far */
    CURLcode rc;
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    r->body = realloc(r->body, r->len + sz * n + 1);
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = 0;
    atomic_fetch_add(&r->chunks, 1);
    return sz * n;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t k = strlen(name);
    if (len <= k + 1 || strncasecmp(line, name, k) || line[k] != ':')
        return;
    const char *v = line + k + 1;
    while (*v == ' ')
        v++;
    size_t m = (size_t)(line + len - v);
    while (m && (v[m - 1] == '\r' || v[m - 1] == '\n'))
        m--;
    snprintf(out, cap, "%.*s", (int)m, v);
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    header_value(p, sz * n, "x-gateway-destination-endpoint", r->dest, sizeof r->dest);
    header_value(p, sz * n, "x-request-id", r->rid, sizeof r->rid);
    header_value(p, sz * n, "content-type", r->ctype, sizeof r->ctype);
    return sz * n;
}

typedef struct call {
    int port;
    const char *method, *path, *body;
    const char *hdr[4];           /* extra request headers, NULL-terminated */
    bool http10;                  /* HTTP/1.0: the connection closes after the answer */
    resp r;
} call;

static void perform(call *c)
{
    CURL *h = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", c->port, c->path);
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    for (int i = 0; i < 4 && c->hdr[i]; i++)
        hl = curl_slist_append(hl, c->hdr[i]);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
    if (c->body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &c->r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &c->r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (c->http10)
        curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_0);
    c->r.rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->r.status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
}

static void *perform_thread(void *arg)
{
    perform(arg);
    return NULL;
}

static call post(world *w, const char *body)
{
    call c = {.port = w->port, .method = "POST", .path = "/v1/completions", .body = body};
    perform(&c);
    return c;
}

static const char BODY[] = "{\"model\":\"m\",\"prompt\":\"hello there\",\"max_tokens\":4}";
static const char STREAM_BODY[] = "{\"model\":\"m\",\"prompt\":\"hello there\",\"max_tokens\":4,\"stream\":true}";

/* The OpenAI error shape, with that code. */
static void expect_error(const call *c, long status, const char *code)
{
    assert_int_equal(c->r.status, status);
    json_t *j = json_loads(c->r.body ? c->r.body : "", 0, NULL);
    if (!j)
        fail_msg("not JSON: %s", c->r.body ? c->r.body : "(none)");
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_true(json_is_string(json_object_get(e, "type")));
    assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    json_decref(j);
}

static void free_call(call *c) { free(c->r.body); }

static char *name_of(world *w, int i) { return w->f->names[i]; }

/* ---- tests ------------------------------------------------------------------------------------- */

static void test_unstreamed_passthrough_and_headers(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, -1);
    w->f->eps[0].m.waiting = 5, w->f->eps[2].m.waiting = 5; /* endpoint 1 wins */
    call c = {.port = w->port, .method = "POST", .path = "/v1/completions", .body = BODY,
              .hdr = {"x-request-id: client-id-1", "x-user: alice"}};
    perform(&c);
    assert_int_equal(c.r.status, 200);
    assert_string_equal(c.r.dest, name_of(w, 1));
    assert_string_equal(c.r.rid, "client-id-1");
    assert_non_null(strstr(c.r.ctype, "application/json"));
    /* the upstream's body, byte for byte; the request went there with its id and body */
    assert_non_null(c.r.body);
    assert_non_null(strstr(c.r.body, "\"text\":\" t0 t1 t2 t3\""));
    char rid[128], body[4096];
    fake_upstream_last(w->up[1], rid, sizeof rid, body, sizeof body);
    assert_string_equal(rid, "client-id-1");
    assert_string_equal(body, BODY);
    assert_int_equal(fake_upstream_requests(w->up[0]) + fake_upstream_requests(w->up[2]), 0);
    int one = 1;
    assert_true(wait_for(have_completions, w, &one));
    assert_int_equal(w->last.http_status, 200);
    assert_true(w->last.usage_found);
    assert_int_equal(w->last.completion_tokens, 4);
    assert_int_equal(w->f->eps[1].in_flight, 0);
    free_call(&c);

    /* no x-request-id: one is generated, returned and sent upstream */
    c = post(w, BODY);
    assert_int_equal(c.r.status, 200);
    assert_int_equal(strlen(c.r.rid), 36);
    fake_upstream_last(w->up[1], rid, sizeof rid, NULL, 0);
    assert_string_equal(rid, c.r.rid);
    free_call(&c);
    world_free(w);
}


static void test_stream_chunks_arrive_before_upstream_ends(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, -1);
    w->f->eps[1].m.waiting = 5, w->f->eps[2].m.waiting = 5; /* endpoint 0 */
    fake_upstream_set_mode(w->up[0], FU_HOLD, 0);
    call c = {.port = w->port, .method = "POST", .path = "/v1/chat/completions", .body = STREAM_BODY};
    pthread_t th;
    pthread_create(&th, NULL, perform_thread, &c);
    /* the first event reaches the client while the upstream holds the rest */
    for (int i = 0; i < 2000 && !(c.r.body && strstr(c.r.body, " t0")); i++)
        usleep(5000);
    assert_non_null(c.r.body);
    assert_non_null(strstr(c.r.body, "data: {"));
    assert_null(strstr(c.r.body, "[DONE]"));
    assert_int_equal(fake_upstream_finished(w->up[0]), 0);
    fake_upstream_release(w->up[0]);
    pthread_join(th, NULL);
    assert_int_equal(c.r.status, 200);
    assert_non_null(strstr(c.r.ctype, "text/event-stream"));
    assert_string_equal(c.r.dest, name_of(w, 0));
    assert_non_null(strstr(c.r.body, " t3"));
    assert_non_null(strstr(c.r.body, "data: [DONE]\n\n"));
    int one = 1;
    assert_true(wait_for(have_completions, w, &one));
    assert_true(w->last.usage_found); /* from the SSE usage event */
    assert_int_equal(w->last.completion_tokens, 4);
    free_call(&c);
    world_free(w);
}

/* The first pick (endpoint 0) answers status (or refuses connections): one retry on
 * endpoint 1, which serves; the retry is counted. */
static void retry_case(fu_mode mode, int status, bool dead)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, dead ? 0 : -1);
    w->f->eps[1].m.waiting = 1, w->f->eps[2].m.waiting = 5; /* 0, then 1 */
    if (!dead)
        fake_upstream_set_mode(w->up[0], mode, status);
    call c = post(w, BODY);
    assert_int_equal(c.r.status, 200);
    assert_string_equal(c.r.dest, name_of(w, 1));
    if (!dead)
        assert_int_equal(fake_upstream_requests(w->up[0]), 1);
    assert_int_equal(fake_upstream_requests(w->up[1]), 1);
    gateway_stats st;
    gateway_get_stats(w->gw, &st);
    assert_int_equal(st.retries, 1);
    assert_int_equal(st.upstream_failures, 1);
    int one = 1;
    assert_true(wait_for(have_completions, w, &one));
    assert_int_equal(w->f->eps[0].in_flight + w->f->eps[1].in_flight, 0); /* both attempts accounted */
    free_call(&c);
    world_free(w);
}

static void test_retry_on_503(void **state) { retry_case(FU_STATUS, 503, false); }
static void test_retry_on_429(void **state) { retry_case(FU_STATUS, 429, false); }
static void test_retry_on_connect_error(void **state) { retry_case(FU_OK, 0, true); }

static void test_no_other_endpoint_keeps_the_answer(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, -1);
    for (int i = 0; i < N_UP; i++)
        fake_upstream_set_mode(w->up[i], FU_STATUS, 503);
    w->f->n = 2; /* two endpoints: the retry's 503 stands */
    call c = post(w, BODY);
    assert_int_equal(c.r.status, 503);
    assert_non_null(strstr(c.r.body, "fake 503"));
    assert_int_equal(fake_upstream_requests(w->up[0]) + fake_upstream_requests(w->up[1]), 2);
    free_call(&c);
    w->f->n = 1; /* one endpoint: its own 503 comes back after no retry can be placed */
    c = post(w, BODY);
    assert_int_equal(c.r.status, 503);
    assert_non_null(strstr(c.r.body, "fake 503"));
    free_call(&c);
    w->f->n = N_UP;
    world_free(w);
}

static void test_no_retry_after_first_byte(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, -1);
    w->f->eps[1].m.waiting = 1, w->f->eps[2].m.waiting = 5;
    fake_upstream_set_mode(w->up[0], FU_CUT, 0); /* headers and one event, then gone */
    call c = {.port = w->port, .method = "POST", .path = "/v1/completions", .body = STREAM_BODY};
    perform(&c);
    assert_int_equal(c.r.status, 200);
    assert_int_not_equal(c.r.rc, CURLE_OK); /* the client sees a cut stream, not a clean end */
    assert_non_null(strstr(c.r.body, " t0"));
    assert_int_equal(fake_upstream_requests(w->up[1]), 0);
    gateway_stats st;
    gateway_get_stats(w->gw, &st);
    assert_int_equal(st.retries, 0);
    free_call(&c);
    world_free(w);
}

static bool breaker_is(world *w, void *arg);

typedef struct bq {
    const char *ep;
    breaker_state st;
    bool found;
} bq;

static void on_breaker(void *ctx, const char *ep, breaker_state st)
{
    bq *q = ctx;
    if (!strcmp(ep, q->ep))
        q->found = true, q->st = st;
}

static breaker_state state_of(world *w, int i)
{
    bq q = {.ep = name_of(w, i)};
    gateway_each_breaker(w->gw, on_breaker, &q);
    return q.found ? q.st : BREAKER_CLOSED;
}

static bool breaker_is(world *w, void *arg) { return state_of(w, 0) == *(breaker_state *)arg; }

/* The exposition's line starting with prefix, or "" (static buffer). */
static const char *metric_line(promexp *pm, const char *prefix)
{
    static char line[512];
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    promexp_write(pm, f);
    fclose(f);
    line[0] = 0;
    for (char *l = buf; l && *l;) {
        char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        if (!strncmp(l, prefix, strlen(prefix))) {
            snprintf(line, sizeof line, "%.*s", (int)n, l);
            break;
        }
        l = nl ? nl + 1 : NULL;
    }
    free(buf);
    return line;
}

static void test_breaker_opens_and_closes(void **state)
{
    kv_err err = {0};
    promexp *pm = promexp_start(-1, NULL, &err);
    assert_non_null(pm);
    world *w = world_new(QUEUE_CONFIG,
                         (gateway_config){.breaker_failures = 2, .breaker_cooldown_s = 2, .metrics = pm}, -1);
    promexp_set_gateway(pm, w->gw);
    w->f->eps[1].m.waiting = 1, w->f->eps[2].m.waiting = 5;
    fake_upstream_set_mode(w->up[0], FU_STATUS, 500); /* 500: no retry, but a failure */
    call c = post(w, BODY);
    assert_int_equal(c.r.status, 500);
    assert_int_equal(state_of(w, 0), BREAKER_CLOSED);
    free_call(&c);
    c = post(w, BODY);
    assert_int_equal(c.r.status, 500);
    assert_int_equal(state_of(w, 0), BREAKER_OPEN);
    free_call(&c);
    gateway_stats st;
    gateway_get_stats(w->gw, &st);
    assert_int_equal(st.breaker_opens, 1);
    char want[128];
    snprintf(want, sizeof want, "kvroute_gateway_circuit_breaker_state{endpoint=\"%s\"} 1", name_of(w, 0));
    assert_string_equal(metric_line(pm, "kvroute_gateway_circuit_breaker_state{"), want);
    assert_string_equal(metric_line(pm, "kvroute_gateway_circuit_breaker_opens_total"),
                        "kvroute_gateway_circuit_breaker_opens_total 1");
    assert_string_equal(metric_line(pm, "kvroute_gateway_requests_total{code=\"500\"}"),
                        "kvroute_gateway_requests_total{code=\"500\"} 2");
    /* open: endpoint 0 is out of routing although it scores best */
    c = post(w, BODY);
    assert_int_equal(c.r.status, 200);
    assert_string_equal(c.r.dest, name_of(w, 1));
    assert_int_equal(fake_upstream_requests(w->up[0]), 2);
    free_call(&c);
    /* after the cool-down a probe goes to endpoint 0; it answers, the breaker closes */
    fake_upstream_set_mode(w->up[0], FU_OK, 0);
    for (int i = 0; i < 500 && fake_upstream_requests(w->up[0]) == 2; i++) {
        c = post(w, BODY);
        assert_int_equal(c.r.status, 200);
        free_call(&c);
        usleep(20000);
    }
    assert_int_equal(fake_upstream_requests(w->up[0]), 3);
    breaker_state closed = BREAKER_CLOSED;
    assert_true(wait_for(breaker_is, w, &closed));
    snprintf(want, sizeof want, "kvroute_gateway_circuit_breaker_state{endpoint=\"%s\"} 0", name_of(w, 0));
    assert_string_equal(metric_line(pm, "kvroute_gateway_circuit_breaker_state{"), want);
    assert_string_equal(metric_line(pm, "kvroute_gateway_in_flight_requests"), "kvroute_gateway_in_flight_requests 0");
    promexp_set_gateway(pm, NULL);
    world_free(w);
    promexp_stop(pm);
}

static void test_api_key(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){.api_key = "sekret"}, -1);
    call c = post(w, BODY);
    expect_error(&c, 401, "invalid_api_key");
    free_call(&c);
    c = (call){.port = w->port, .method = "POST", .path = "/v1/completions", .body = BODY,
               .hdr = {"Authorization: Bearer wrong"}};
    perform(&c);
    expect_error(&c, 401, "invalid_api_key");
    free_call(&c);
    c = (call){.port = w->port, .method = "POST", .path = "/v1/completions", .body = BODY,
               .hdr = {"Authorization: Bearer sekret"}};
    perform(&c);
    assert_int_equal(c.r.status, 200);
    free_call(&c);
    c = (call){.port = w->port, .method = "GET", .path = "/health"};
    perform(&c);
    assert_int_equal(c.r.status, 200);
    free_call(&c);
    world_free(w);
}

static bool queued(world *w, void *arg)
{
    gateway_stats st;
    gateway_get_stats(w->gw, &st);
    return st.in_flight == 1 && st.queued == 1;
}

static void test_queue_full_answers_429(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){.max_concurrent = 1, .queue_size = 1}, -1);
    for (int i = 0; i < N_UP; i++)
        fake_upstream_set_mode(w->up[i], FU_HOLD, 0);
    call a = {.port = w->port, .method = "POST", .path = "/v1/completions", .body = STREAM_BODY};
    call b = a;
    pthread_t ta, tb;
    pthread_create(&ta, NULL, perform_thread, &a);
    for (int i = 0; i < 2000 && !a.r.body; i++) /* a is being answered */
        usleep(5000);
    pthread_create(&tb, NULL, perform_thread, &b);
    assert_true(wait_for(queued, w, NULL));
    call c = post(w, BODY);
    expect_error(&c, 429, "rate_limit_exceeded");
    free_call(&c);
    for (int i = 0; i < N_UP; i++) /* a ends; b gets the slot, its stream is held, then ends */
        fake_upstream_release(w->up[i]);
    for (int i = 0; i < 2000 && !b.r.body; i++)
        usleep(5000);
    for (int i = 0; i < N_UP; i++)
        fake_upstream_release(w->up[i]);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.r.status, 200);
    assert_int_equal(b.r.status, 200);
    assert_non_null(strstr(b.r.body, "[DONE]"));
    gateway_stats st;
    gateway_get_stats(w->gw, &st);
    assert_int_equal(st.queue_full, 1);
    free_call(&a);
    free_call(&b);
    world_free(w);
}

static void test_timeout_answers_504(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){.request_timeout_s = 0.3}, -1);
    for (int i = 0; i < N_UP; i++)
        fake_upstream_set_mode(w->up[i], FU_SILENT, 0);
    call c = post(w, BODY);
    expect_error(&c, 504, "timeout");
    gateway_stats st;
    gateway_get_stats(w->gw, &st);
    assert_int_equal(st.timeouts, 1);
    free_call(&c);
    world_free(w);
}

static bool upstream_cancelled(world *w, void *arg)
{
    unsigned n = 0;
    for (int i = 0; i < N_UP; i++)
        n += fake_upstream_cancelled(w->up[i]);
    return n == 1;
}

/* curl's progress callback: hang up once an upstream holds the request. */
static int hang_up_when_forwarded(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    world *w = ud;
    unsigned n = 0;
    for (int i = 0; i < N_UP; i++)
        n += fake_upstream_requests(w->up[i]);
    return n > 0;
}

static void test_client_disconnect_cancels_upstream(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, -1);
    for (int i = 0; i < N_UP; i++)
        fake_upstream_set_mode(w->up[i], FU_SILENT, 0);
    CURL *h = curl_easy_init();
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", w->port);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, BODY);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, hang_up_when_forwarded);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, w);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    assert_int_equal(curl_easy_perform(h), CURLE_ABORTED_BY_CALLBACK); /* it closes its connection */
    curl_easy_cleanup(h);
    assert_true(wait_for(upstream_cancelled, w, NULL));
    int one = 1;
    assert_true(wait_for(have_completions, w, &one));
    assert_int_equal(w->last.http_status, 499);
    gateway_stats st;
    gateway_get_stats(w->gw, &st);
    assert_int_equal(st.client_cancels, 1);
    assert_int_equal(st.in_flight, 0);
    world_free(w);
}

/* A client that reads the first event and hangs up: the held upstream stream is cut. */
static size_t first_event_only(char *p, size_t sz, size_t n, void *ud) { return 0; }

static void test_client_disconnect_mid_stream_cancels_upstream(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, -1);
    for (int i = 0; i < N_UP; i++)
        fake_upstream_set_mode(w->up[i], FU_HOLD, 0);
    CURL *h = curl_easy_init();
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", w->port);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, STREAM_BODY);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, first_event_only);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    assert_int_equal(curl_easy_perform(h), CURLE_WRITE_ERROR); /* it got bytes, then gave up */
    curl_easy_cleanup(h);
    assert_true(wait_for(upstream_cancelled, w, NULL));
    int one = 1;
    assert_true(wait_for(have_completions, w, &one));
    assert_int_equal(w->last.http_status, 499);
    unsigned finished = 0;
    for (int i = 0; i < N_UP; i++)
        finished += fake_upstream_finished(w->up[i]);
    assert_int_equal(finished, 0);
    world_free(w);
}

/* Clients whose connection closes with the answer (HTTP/1.0, Connection: close): the
 * last write may free the connection at once, and nothing of the request may be touched
 * through it after (ASan watches). */
static void test_clients_that_close_after_the_answer(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, -1);
    const char *bodies[] = {BODY, STREAM_BODY, "{\"prompt\":\"no model\"}"};
    long want[] = {200, 200, 400};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 3; i++) {
            call c = {.port = w->port, .method = "POST", .path = "/v1/completions", .body = bodies[i],
                      .http10 = k == 0, .hdr = {k == 1 ? "Connection: close" : NULL}};
            perform(&c);
            assert_int_equal(c.r.rc, CURLE_OK);
            assert_int_equal(c.r.status, want[i]);
            if (i == 1)
                assert_non_null(strstr(c.r.body, "[DONE]"));
            free_call(&c);
        }
    /* a 503 held for a retry, then passed on: one endpoint, the retry has nowhere to go */
    fake_upstream_set_mode(w->up[0], FU_STATUS, 503);
    w->f->n = 1;
    call c = {.port = w->port, .method = "POST", .path = "/v1/completions", .body = BODY, .http10 = true};
    perform(&c);
    assert_int_equal(c.r.status, 503);
    free_call(&c);
    w->f->n = N_UP;
    int all = 7;
    assert_true(wait_for(have_completions, w, &all));
    world_free(w);
}

static void test_bad_requests_are_openai_errors(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, -1);
    call c = post(w, "{\"model\": \"m\", \"prompt\": ");
    expect_error(&c, 400, "invalid_request");
    assert_non_null(strstr(c.r.body, "JSON"));
    free_call(&c);
    c = post(w, "{\"prompt\":\"x\"}");
    expect_error(&c, 400, "invalid_request");
    assert_non_null(strstr(c.r.body, "model"));
    free_call(&c);
    /* nested deeper than OAI_MAX_DEPTH: refused, not recursed into */
    size_t depth = OAI_MAX_DEPTH + 10;
    char *deep = malloc(depth * 2 + 64);
    size_t n = (size_t)sprintf(deep, "{\"model\":\"m\",\"prompt\":\"x\",\"a\":");
    for (size_t i = 0; i < depth; i++)
        deep[n++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[n++] = ']';
    deep[n++] = '}', deep[n] = 0;
    c = post(w, deep);
    expect_error(&c, 400, "invalid_request");
    assert_non_null(strstr(c.r.body, "1024"));
    free_call(&c);
    free(deep);
    for (int i = 0; i < N_UP; i++)
        assert_int_equal(fake_upstream_requests(w->up[i]), 0);
    c = (call){.port = w->port, .method = "POST", .path = "/v1/embeddings", .body = BODY};
    perform(&c);
    expect_error(&c, 404, "not_found");
    free_call(&c);
    c = (call){.port = w->port, .method = "GET", .path = "/v1/completions"};
    perform(&c);
    expect_error(&c, 405, "method_not_allowed");
    free_call(&c);
    world_free(w);
}

static void test_models_merged(void **state)
{
    world *w = world_new(QUEUE_CONFIG, (gateway_config){0}, -1);
    call c = {.port = w->port, .method = "GET", .path = "/v1/models"};
    perform(&c);
    assert_int_equal(c.r.status, 200);
    json_t *j = json_loads(c.r.body, 0, NULL);
    assert_non_null(j);
    json_t *d = json_object_get(j, "data");
    assert_int_equal(json_array_size(d), 1); /* three endpoints serve "m": listed once */
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "id")), MODEL);
    json_decref(j);
    free_call(&c);
    world_free(w);
}

/* ---- the Done-when check: ext-proc and the gateway route alike ---------------------------------- */

#define ALIKE_N 16

static const char *alike_prompt(int i, char *buf, size_t cap)
{
    /* three families sharing long prefixes, and a few one-offs */
    static const char *fam[] = {"You are a helpful assistant for the billing team. ",
                                "Translate the following passage into French, keeping names. ",
                                "Summarise this meeting transcript in five bullet points. "};
    if (i % 5 == 4)
        snprintf(buf, cap, "one-off question number %d about something else entirely", i);
    else
        snprintf(buf, cap, "%s%s%s question %d", fam[i % 3], fam[i % 3], fam[i % 3], i);
    return buf;
}

static void test_extproc_and_gateway_route_alike(void **state)
{
    /* the gateway's world: the fake upstreams serve the requests */
    world *w = world_new(ALIKE_CONFIG, (gateway_config){0}, -1);
    /* the ext-proc world: the same config, seed and endpoint names, its own sched */
    world *x = calloc(1, sizeof *x);
    pthread_mutex_init(&x->mu, NULL);
    x->f = fx_new(ALIKE_CONFIG, N_UP, 7);
    assert_non_null(x->f);
    for (int i = 0; i < N_UP; i++)
        snprintf(x->f->names[i], sizeof x->f->names[i], "%s", w->f->names[i]);
    extproc_config xc = {.addr = "127.0.0.1:0", .threads = 2, .sched = x->f->s,
                         .pool = fx_pool(x->f), .tokenize_timeout_ms = -1,
                         .on_complete = on_complete, .hook_ctx = x};
    kv_err err = {0};
    extproc_server *xs = extproc_start(&xc, &err);
    assert_non_null(xs);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", extproc_port(xs));
    xpc_client *cli = xpc_connect(target, NULL, NULL);

    char via_extproc[ALIKE_N][64], via_gateway[ALIKE_N][64], prompt[512], body[1024];
    for (int i = 0; i < ALIKE_N; i++) {
        snprintf(body, sizeof body, "{\"model\":\"m\",\"prompt\":\"%s\",\"max_tokens\":4}",
                 alike_prompt(i, prompt, sizeof prompt));
        /* ext-proc: headers and body in, the decision out, the response ends the request */
        xpc_stream *s = xpc_open(cli, 5000);
        const char *hdrs[] = {":method", "POST", ":path", "/v1/completions", "x-request-id", "r", NULL};
        assert_int_equal(xpc_send_request_headers(s, hdrs, false, NULL, 0, 0), 0);
        assert_int_equal(xpc_send_body(s, false, body, strlen(body), true), 0);
        xpc_resp *r = xpc_recv(s, 5000);
        assert_non_null(r);
        assert_int_equal(r->response_case,
                         ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS);
        size_t n;
        const char *d = xpc_header(r->request_headers->response->header_mutation, "x-gateway-destination-endpoint",
                                   &n);
        assert_non_null(d);
        snprintf(via_extproc[i], sizeof via_extproc[i], "%.*s", (int)n, d);
        xpc_resp_free(r);
        const char *rh[] = {":status", "200", "content-type", "application/json", NULL};
        assert_int_equal(xpc_send_response_headers(s, rh, true), 0);
        int want = i + 1;
        assert_true(wait_for(have_completions, x, &want));
        xpc_close(s);
        /* the gateway */
        call c = post(w, body);
        assert_int_equal(c.r.status, 200);
        snprintf(via_gateway[i], sizeof via_gateway[i], "%s", c.r.dest);
        free_call(&c);
        assert_true(wait_for(have_completions, w, &want));
    }
    int distinct = 0;
    for (int i = 0; i < ALIKE_N; i++) {
        assert_string_equal(via_gateway[i], via_extproc[i]);
        distinct += i > 0 && strcmp(via_extproc[i], via_extproc[0]);
    }
    assert_true(distinct > 0); /* the sequence exercised more than one endpoint */
    xpc_disconnect(cli);
    extproc_stop(xs);
    fx_free(x->f);
    pthread_mutex_destroy(&x->mu);
    free(x);
    world_free(w);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unstreamed_passthrough_and_headers),
        cmocka_unit_test(test_stream_chunks_arrive_before_upstream_ends),
        cmocka_unit_test(test_retry_on_503),
        cmocka_unit_test(test_retry_on_429),
        cmocka_unit_test(test_retry_on_connect_error),
        cmocka_unit_test(test_no_other_endpoint_keeps_the_answer),
        cmocka_unit_test(test_no_retry_after_first_byte),
        cmocka_unit_test(test_breaker_opens_and_closes),
        cmocka_unit_test(test_api_key),
        cmocka_unit_test(test_queue_full_answers_429),
        cmocka_unit_test(test_timeout_answers_504),
        cmocka_unit_test(test_client_disconnect_cancels_upstream),
        cmocka_unit_test(test_client_disconnect_mid_stream_cancels_upstream),
        cmocka_unit_test(test_clients_that_close_after_the_answer),
        cmocka_unit_test(test_bad_requests_are_openai_errors),
        cmocka_unit_test(test_models_merged),
        cmocka_unit_test(test_extproc_and_gateway_route_alike),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
