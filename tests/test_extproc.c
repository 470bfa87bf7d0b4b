/* test_extproc: whole ext-proc streams against the in-process server on loopback
 * (live/extproc.c), driven by the C gRPC client (tests/support/extproc_client.c) the way
 * Envoy drives GIE's EPP: routing follows the precise scorer's index, the headers
 * response carries the destination in both the header mutation and the envoy.lb
 * metadata, the body comes back in 62,000-byte chunks, errors are ImmediateResponses with
 * GIE's codes and bodies, bad streams are survived, TLS and health work, text prompts are
 * tokenised through a fake vLLM /tokenize. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <microhttpd.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "decisionlog.h"
#include "extproc.h"
#include "support/extproc_client.h"
#include "health.h"
#include "log.h"
#include "model_rewrites.h"
#include "objectives.h"
#include "support/regress.h"
#include "support/sched_fixture.h"
#include "tls.h"
#include "tokenize.h"

#define BS 16 /* index block size in the test config */

static const char CONFIG[] =
    "plugins:\n"
    "- type: precise-prefix-cache-scorer\n"
    "  parameters:\n"
    "    tokenProcessorConfig: {blockSize: 16}\n"
    "- type: kv-cache-utilization-scorer\n"
    "- type: queue-scorer\n"
    "- type: max-score-picker\n"
    "schedulingProfiles:\n"
    "- name: default\n"
    "  plugins:\n"
    "  - {pluginRef: precise-prefix-cache-scorer, weight: 3.0}\n"
    "  - {pluginRef: kv-cache-utilization-scorer, weight: 2.0}\n"
    "  - {pluginRef: queue-scorer, weight: 2.0}\n"
    "  - {pluginRef: max-score-picker}\n";

/* ---- harness ----------------------------------------------------------------------------- */

typedef struct env {
    fx *f;
    pthread_mutex_t pool_mu;
    extproc_server *srv;
    xpc_client *cli;
    tls_pem pem;
    pthread_mutex_t mu; /* guards the fields below, written by server threads */
    char *log;
    size_t log_len;
    extproc_completion last;
    char last_target[64];
    int completions;
    decisionlog *dl;
    objectives *objs;
    model_rewrites *rewrites;
    uint64_t draws;               /* the rewrites' random source: 0, 1, 2, ... */
    bool saturated;               /* what the saturation hook answers */
    int saturation_asks;
    int decisions;
    struct {
        char objective[64], fairness[64], target_model[64];
        int priority;
        bool shed;
    } dec;                        /* the last decision's admission fields */
} env;

static size_t pool_acquire(void *ctx, sched_endpoint *const **eps)
{
    env *e = ctx;
    pthread_mutex_lock(&e->pool_mu);
    *eps = e->f->ptrs;
    return e->f->n;
}

static void pool_release(void *ctx) { pthread_mutex_unlock(&((env *)ctx)->pool_mu); }

static void on_log(void *ctx, const char *line)
{
    env *e = ctx;
    pthread_mutex_lock(&e->mu);
    size_t n = strlen(line);
    char *p = realloc(e->log, e->log_len + n + 2);
    if (p) {
        memcpy(p + e->log_len, line, n);
        p[e->log_len + n] = '\n';
        p[e->log_len + n + 1] = 0;
        e->log = p, e->log_len += n + 1;
    }
    pthread_mutex_unlock(&e->mu);
}

static void on_complete(void *ctx, const extproc_completion *c)
{
    env *e = ctx;
    pthread_mutex_lock(&e->mu);
    e->last = *c;
    snprintf(e->last_target, sizeof e->last_target, "%s", c->target ? c->target : "");
    e->completions++;
    pthread_mutex_unlock(&e->mu);
}

static void on_decision(void *ctx, const extproc_decision *d)
{
    env *e = ctx;
    if (e->dl)
        assert_int_equal(decisionlog_add(e->dl, d, NULL), KV_OK);
    pthread_mutex_lock(&e->mu);
    e->decisions++;
    snprintf(e->dec.objective, sizeof e->dec.objective, "%s", d->objective ? d->objective : "");
    snprintf(e->dec.fairness, sizeof e->dec.fairness, "%s", d->fairness_id ? d->fairness_id : "");
    snprintf(e->dec.target_model, sizeof e->dec.target_model, "%s", d->target_model ? d->target_model : "");
    e->dec.priority = d->priority;
    e->dec.shed = d->shed;
    pthread_mutex_unlock(&e->mu);
}

static bool objective_priority(void *ctx, const char *objective, int *priority)
{
    return objectives_priority(((env *)ctx)->objs, objective, priority);
}

static int rewrite_model(void *ctx, const char *model, char **to)
{
    return model_rewrites_pick(((env *)ctx)->rewrites, model, to, NULL);
}

static uint64_t counting(void *ctx) { return (*(uint64_t *)ctx)++; }

static bool saturated(void *ctx, sched_endpoint *const *cands, size_t n)
{
    env *e = ctx;
    pthread_mutex_lock(&e->mu);
    e->saturation_asks++;
    bool v = e->saturated;
    pthread_mutex_unlock(&e->mu);
    return v;
}

/* Whether the env's log has a line containing text. */
static bool logged(env *e, const char *text)
{
    pthread_mutex_lock(&e->mu);
    bool found = e->log && strstr(e->log, text);
    pthread_mutex_unlock(&e->mu);
    return found;
}

/* token-producer's vllm.url for the next env_new_cfg (NULL: render on the candidates). */
static const char *next_render_url;

static env *env_new_cfg(const char *config, bool tls, int tokenize_timeout_ms, const char *ep0_name,
                        decisionlog *dl)
{
    env *e = calloc(1, sizeof *e);
    e->f = fx_new(config, 4, 7);
    assert_non_null(e->f);
    if (ep0_name)
        snprintf(e->f->names[0], sizeof e->f->names[0], "%s", ep0_name);
    pthread_mutex_init(&e->pool_mu, NULL);
    pthread_mutex_init(&e->mu, NULL);
    extproc_config cfg = {
        .addr = "127.0.0.1:0",
        .sched = e->f->s,
        .pool = {pool_acquire, pool_release, e},
        .threads = 3,
        .tokenize_url = next_render_url,
        .tokenize_timeout_ms = tokenize_timeout_ms,
        .tokenize_chat_timeout_ms = tokenize_timeout_ms,
        .on_complete = on_complete,
        .on_decision = on_decision,
        .trace_decisions = dl != NULL,
        .hook_ctx = e,
        .objective_priority = objective_priority,
        .saturated = saturated,
        .model_rewrite = rewrite_model,
        .admission_ctx = e,
    };
    e->dl = dl;
    e->objs = objectives_new(NULL);
    e->rewrites = model_rewrites_new(counting, &e->draws, NULL);
    assert_non_null(e->objs);
    assert_non_null(e->rewrites);
    log_setup(4, on_log, e); /* process-wide: set before this env's server starts */
    if (tls) {
        kv_err err = {0};
        assert_int_equal(tls_self_signed("epp.test", &e->pem, &err), KV_OK);
        cfg.cert_pem = e->pem.cert;
        cfg.key_pem = e->pem.key;
    }
    kv_err err = {0};
    e->srv = extproc_start(&cfg, &err);
    if (!e->srv)
        fail_msg("extproc_start: %s", err.msg);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", extproc_port(e->srv));
    e->cli = xpc_connect(target, tls ? e->pem.cert : NULL, tls ? "localhost" : NULL);
    return e;
}

static env *env_new(bool tls, int tokenize_timeout_ms, const char *ep0_name)
{
    return env_new_cfg(CONFIG, tls, tokenize_timeout_ms, ep0_name, NULL);
}

static void env_free(env *e)
{
    xpc_disconnect(e->cli);
    extproc_stop(e->srv);
    log_setup(0, NULL, NULL);
    fx_free(e->f);
    tls_pem_free(&e->pem);
    free(e->log);
    objectives_free(e->objs);
    model_rewrites_free(e->rewrites);
    pthread_mutex_destroy(&e->pool_mu);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* Stores tokens[0..n) for endpoint i in the precise scorer's index, as KV events would. */
static void cache_on(env *e, size_t i, const uint32_t *tokens, size_t n)
{
    sched_kvsource *src = NULL;
    assert_int_equal(sched_services(e->f->s, "kvsource", (void **)&src, 1), 1);
    kv_err err = {0};
    int slot = kvindex_endpoint_add(src->index, e->f->names[i], &err);
    assert_true(slot >= 0);
    uint64_t keys[256];
    size_t nk = blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tokens, n, NULL, 0, NULL, keys, 256);
    assert_int_equal(kvindex_store(src->index, slot, KVTIER_GPU, NULL, 0, keys, nk, &err), KV_OK);
}

static char *token_body(const uint32_t *t, size_t n, const char *extra)
{
    size_t cap = 64 + n * 11 + strlen(extra);
    char *b = malloc(cap);
    size_t len = (size_t)snprintf(b, cap, "{\"model\":\"m\",%s\"prompt\":[", extra);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(b + len, cap - len, "%s%u", i ? "," : "", t[i]);
    snprintf(b + len, cap - len, "]}");
    return b;
}

static const char *const REQ_HDRS[] = {":method", "POST", ":path", "/v1/completions", "content-length", "999",
                                       "x-request-id", "req-1", "x-user", "alice", NULL};

/* Sends headers + body (in pieces of 'piece' bytes), returns the headers response. */
static xpc_resp *send_request(xpc_stream *s, const char *const *hdrs, const char *body, size_t piece,
                              const char *const *subset, size_t n_subset)
{
    assert_int_equal(xpc_send_request_headers(s, hdrs, false, subset, n_subset, 0), 0);
    size_t len = strlen(body);
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        assert_int_equal(xpc_send_body(s, false, body + off, n, off + n == len), 0);
    }
    return xpc_recv(s, 5000);
}

/* Receives the request-body chunks and checks them against body. */
static void expect_body_chunks(xpc_stream *s, const char *body)
{
    size_t len = strlen(body), off = 0;
    while (off < len) {
        xpc_resp *r = xpc_recv(s, 5000);
        assert_non_null(r);
        assert_int_equal(r->response_case, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY);
        const Envoy__Service__ExtProc__V3__BodyMutation *bm = r->request_body->response->body_mutation;
        assert_int_equal(bm->mutation_case, ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__MUTATION_STREAMED_RESPONSE);
        size_t n = bm->streamed_response->body.len;
        assert_true(n <= EXTPROC_CHUNK);
        assert_true(off + n <= len);
        assert_memory_equal(bm->streamed_response->body.data, body + off, n);
        off += n;
        assert_int_equal(bm->streamed_response->end_of_stream, off == len);
        if (off < len)
            assert_int_equal(n, EXTPROC_CHUNK);
        xpc_resp_free(r);
    }
}

static const char *dest_of(const xpc_resp *r)
{
    size_t n;
    const char *v = xpc_header(r->request_headers->response->header_mutation, "x-gateway-destination-endpoint", &n);
    static char buf[128];
    if (!v)
        return NULL;
    snprintf(buf, sizeof buf, "%.*s", (int)n, v);
    return buf;
}

/* An ImmediateResponse with that status and a body starting with prefix. */
static void expect_immediate(xpc_resp *r, int status, const char *prefix)
{
    assert_non_null(r);
    assert_int_equal(r->response_case, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_IMMEDIATE_RESPONSE);
    assert_int_equal(r->immediate_response->status->code, status);
    size_t n = strlen(prefix);
    if (r->immediate_response->body.len < n || memcmp(r->immediate_response->body.data, prefix, n))
        fail_msg("body '%.*s' does not start with '%s'", (int)r->immediate_response->body.len,
                 (const char *)r->immediate_response->body.data, prefix);
    xpc_resp_free(r);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_routes_to_cache_holder(void **state)
{
    env *e = env_new(false, -1, NULL);
    uint32_t t[128];
    for (size_t i = 0; i < 128; i++)
        t[i] = (uint32_t)(1000 + i);
    cache_on(e, 2, t, 128);        /* all 8 blocks on 10.0.0.3 */
    cache_on(e, 1, t, 3 * BS);     /* 3 blocks on 10.0.0.2 */
    char *body = token_body(t, 128, "\"max_tokens\":5,");

    xpc_stream *s = xpc_open(e->cli, 5000);
    assert_non_null(s);
    xpc_resp *r = send_request(s, REQ_HDRS, body, 100, NULL, 0);
    assert_non_null(r);
    assert_int_equal(r->response_case, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS);
    const Envoy__Service__ExtProc__V3__CommonResponse *cr = r->request_headers->response;
    assert_true(cr->clear_route_cache);
    assert_string_equal(dest_of(r), "10.0.0.3:8000");
    assert_string_equal(xpc_dest_metadata(r), "10.0.0.3:8000");
    size_t n;
    const char *cl = xpc_header(cr->header_mutation, "content-length", &n);
    assert_non_null(cl);
    char want[32];
    snprintf(want, sizeof want, "%zu", strlen(body));
    assert_int_equal(n, strlen(want));
    assert_memory_equal(cl, want, n);
    const char *user = xpc_header(cr->header_mutation, "x-user", &n);
    assert_non_null(user);
    assert_memory_equal(user, "alice", 5);
    const char *rid = xpc_header(cr->header_mutation, "x-request-id", &n);
    assert_non_null(rid);
    assert_memory_equal(rid, "req-1", 5);
    assert_null(xpc_header(cr->header_mutation, ":path", NULL));
    /* only our own Content-Length, not the client's */
    size_t n_cl = 0;
    for (size_t i = 0; i < cr->header_mutation->n_set_headers; i++)
        n_cl += !strcasecmp(cr->header_mutation->set_headers[i]->header->key, "content-length");
    assert_int_equal(n_cl, 1);
    xpc_resp_free(r);
    expect_body_chunks(s, body);
    assert_int_equal(e->f->eps[2].in_flight, 1);

    /* response: headers, then an unstreamed JSON body in two pieces */
    const char *rh[] = {":status", "200", "content-type", "application/json", "x-upstream", "u1", NULL};
    assert_int_equal(xpc_send_response_headers(s, rh, false), 0);
    r = xpc_recv(s, 5000);
    assert_non_null(r);
    assert_int_equal(r->response_case, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_HEADERS);
    const char *w = xpc_header(r->response_headers->response->header_mutation, "x-went-into-resp-headers", &n);
    assert_non_null(w);
    assert_memory_equal(w, "true", 4);
    assert_non_null(xpc_header(r->response_headers->response->header_mutation, "x-upstream", NULL));
    xpc_resp_free(r);
    const char *resp = "{\"choices\":[{\"text\":\"hi\"}],\"usage\":{\"prompt_tokens\":128,\"completion_tokens\":5,"
                       "\"total_tokens\":133,\"prompt_tokens_details\":{\"cached_tokens\":112}}}";
    size_t rl = strlen(resp);
    assert_int_equal(xpc_send_body(s, true, resp, 40, false), 0);
    assert_int_equal(xpc_send_body(s, true, resp + 40, rl - 40, true), 0);
    r = xpc_recv(s, 5000);
    assert_non_null(r);
    assert_int_equal(r->response_case, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_BODY);
    const Envoy__Service__ExtProc__V3__StreamedBodyResponse *sb =
        r->response_body->response->body_mutation->streamed_response;
    assert_int_equal(sb->body.len, rl);
    assert_memory_equal(sb->body.data, resp, rl);
    assert_true(sb->end_of_stream);
    xpc_resp_free(r);
    assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
    xpc_close(s);

    pthread_mutex_lock(&e->mu);
    assert_int_equal(e->completions, 1);
    assert_true(e->last.usage_found);
    assert_int_equal(e->last.prompt_tokens, 128);
    assert_int_equal(e->last.completion_tokens, 5);
    assert_int_equal(e->last.cached_tokens, 112);
    assert_string_equal(e->last_target, "10.0.0.3:8000");
    /* llm-d's V(4) score line, one per scorer per endpoint */
    assert_non_null(strstr(e->log, "\"msg\":\"Calculated score\",\"x-request-id\":\"req-1\",\"objectiveKey\":\"\","
                                   "\"incomingModelName\":\"m\",\"targetModelName\":\"m\",\"priority\":0,"
                                   "\"plugin\":\"precise-prefix-cache-scorer/precise-prefix-cache-scorer\","
                                   "\"endpoint\":{\"name\":\"10.0.0.3:8000\"},\"score\":1}"));
    /* integral scores are 1 and 0 as zap writes a Go float64, never 1.0 */
    assert_null(strstr(e->log, "\"score\":1.0"));
    assert_null(strstr(e->log, "\"score\":0.0"));
    assert_non_null(strstr(e->log, "{\"level\":\"Level(-4)\",\"ts\":\""));
    size_t lines = 0;
    for (const char *p = e->log; (p = strstr(p, "Calculated score")); p++)
        lines++;
    assert_int_equal(lines, 3 * 4);
    pthread_mutex_unlock(&e->mu);
    assert_int_equal(e->f->eps[2].in_flight, 0);
    free(body);
    env_free(e);
}

static void test_large_body_chunks(void **state)
{
    env *e = env_new(false, -1, NULL);
    size_t n = 40000;
    uint32_t *t = malloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++)
        t[i] = (uint32_t)(100000 + i);
    char *body = token_body(t, n, "");
    assert_true(strlen(body) > 3 * EXTPROC_CHUNK);
    xpc_stream *s = xpc_open(e->cli, 5000);
    xpc_resp *r = send_request(s, REQ_HDRS, body, 70001, NULL, 0);
    assert_non_null(r);
    assert_non_null(dest_of(r));
    xpc_resp_free(r);
    expect_body_chunks(s, body);
    assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
    xpc_close(s);
    free(t);
    free(body);
    env_free(e);
}

static void test_errors(void **state)
{
    env *e = env_new(false, -1, NULL);
    struct {
        const char *body;
        int status;
        const char *prefix;
    } cases[] = {
        {"{\"model\":\"m\",\"prompt\":[1,2", 400, "inference gateway: BadRequest - request body: invalid JSON"},
        {"{\"prompt\":[1,2,3]}", 400, "inference gateway: BadRequest - request body: field 'model' is required"},
        {"{\"model\":\"m\",\"prompt\":[-1]}", 400, "inference gateway: BadRequest - request body: field 'prompt[0]'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        xpc_stream *s = xpc_open(e->cli, 5000);
        expect_immediate(send_request(s, REQ_HDRS, cases[i].body, 7, NULL, 0), cases[i].status, cases[i].prefix);
        assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0); /* the stream ends cleanly */
        xpc_close(s);
    }
    uint32_t t[32] = {0};
    char *body = token_body(t, 32, "");
    /* empty subset hint -> 503 */
    const char *none[1] = {NULL};
    xpc_stream *s = xpc_open(e->cli, 5000);
    expect_immediate(send_request(s, REQ_HDRS, body, 1000, none, 0), 503, "inference gateway: ServiceUnavailable - ");
    xpc_close(s);
    /* a subset naming no known endpoint -> 503 */
    const char *stranger[] = {"192.168.9.9:8000"};
    s = xpc_open(e->cli, 5000);
    expect_immediate(send_request(s, REQ_HDRS, body, 1000, stranger, 1), 503, "inference gateway: ServiceUnavailable");
    xpc_close(s);
    /* the subset restricts the choice even against the cache */
    cache_on(e, 2, t, 32);
    const char *sub[] = {"10.0.0.2:8000"};
    s = xpc_open(e->cli, 5000);
    xpc_resp *r = send_request(s, REQ_HDRS, body, 1000, sub, 1);
    assert_string_equal(dest_of(r), "10.0.0.2:8000");
    assert_string_equal(xpc_dest_metadata(r), "10.0.0.2:8000");
    xpc_resp_free(r);
    expect_body_chunks(s, body);
    xpc_close(s); /* cancelled mid-response: in-flight must still be released */
    /* a request without a body goes to some endpoint at once */
    s = xpc_open(e->cli, 5000);
    const char *get[] = {":method", "GET", ":path", "/v1/models", NULL};
    assert_int_equal(xpc_send_request_headers(s, get, true, NULL, 0, 0), 0);
    r = xpc_recv(s, 5000);
    assert_non_null(r);
    assert_int_equal(r->response_case, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS);
    const char *d = dest_of(r);
    assert_non_null(d);
    assert_non_null(strstr(d, "10.0.0."));
    assert_string_equal(xpc_dest_metadata(r), d);
    xpc_resp_free(r);
    assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
    xpc_close(s);
    extproc_stats st;
    for (int i = 0; i < 200; i++) { /* the cancelled stream is reaped asynchronously */
        extproc_get_stats(e->srv, &st);
        if (st.streams_active == 0)
            break;
        usleep(10000);
    }
    assert_int_equal(st.errors_400, 3);
    assert_int_equal(st.errors_503, 2);
    assert_int_equal(st.streams_active, 0);
    assert_int_equal(e->f->eps[1].in_flight, 0);
    free(body);
    env_free(e);
}

/* Garbage, truncated and abandoned streams of every kind; then a good request works. */
static void test_bad_streams_survived(void **state)
{
    env *e = env_new(false, -1, NULL);
    uint32_t t[64];
    for (size_t i = 0; i < 64; i++)
        t[i] = (uint32_t)(7 * i);
    cache_on(e, 3, t, 64);
    char *body = token_body(t, 64, "");
    for (int i = 0; i < 60; i++) {
        xpc_stream *s = xpc_open(e->cli, 5000);
        assert_non_null(s);
        switch (i % 6) {
        case 0: { /* not a protobuf: the stream is closed with INVALID_ARGUMENT */
            assert_int_equal(xpc_send_raw(s, "\xff\xff\xff\xff", 4), 0);
            char det[128];
            assert_int_equal(xpc_finish(s, det, sizeof det, 5000), GRPC_STATUS_INVALID_ARGUMENT);
            assert_non_null(strstr(det, "ProcessingRequest"));
            break;
        }
        case 1: /* headers, half a body, then gone */
            assert_int_equal(xpc_send_request_headers(s, REQ_HDRS, false, NULL, 0, 0), 0);
            assert_int_equal(xpc_send_body(s, false, body, 10, false), 0);
            break;
        case 2: /* body before headers is ignored; the stream still closes cleanly */
            assert_int_equal(xpc_send_body(s, false, body, strlen(body), true), 0);
            assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
            break;
        case 3: /* response messages with no request */
            assert_int_equal(xpc_send_response_headers(s, REQ_HDRS, false), 0);
            assert_int_equal(xpc_send_body(s, true, "x", 1, true), 0);
            assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
            break;
        case 4: /* JSON that is not an object, then more messages after the error */
            expect_immediate(send_request(s, REQ_HDRS, "[1,2,3]", 3, NULL, 0), 400, "inference gateway: BadRequest");
            assert_int_equal(xpc_send_body(s, false, "more", 4, true), 0);
            assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
            break;
        default: /* nothing at all */
            assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
            break;
        }
        xpc_close(s);
    }
    xpc_stream *s = xpc_open(e->cli, 5000);
    xpc_resp *r = send_request(s, REQ_HDRS, body, 50, NULL, 0);
    assert_string_equal(dest_of(r), "10.0.0.4:8000");
    xpc_resp_free(r);
    expect_body_chunks(s, body);
    xpc_close(s);
    extproc_stats st;
    extproc_get_stats(e->srv, &st);
    assert_int_equal(st.bad_messages, 10);
    assert_int_equal(st.errors_400, 10);
    free(body);
    env_free(e);
}

static void test_streamed_response(void **state)
{
    env *e = env_new(false, -1, NULL);
    uint32_t t[20] = {1, 2, 3};
    char *body = token_body(t, 20, "\"stream\":true,");
    xpc_stream *s = xpc_open(e->cli, 5000);
    xpc_resp *r = send_request(s, REQ_HDRS, body, 1 << 20, NULL, 0);
    xpc_resp_free(r);
    expect_body_chunks(s, body);
    const char *rh[] = {":status", "200", "content-type", "text/event-stream; charset=utf-8", NULL};
    assert_int_equal(xpc_send_response_headers(s, rh, false), 0);
    xpc_resp_free(xpc_recv(s, 5000));
    const char *chunks[] = {"data: {\"choices\":[{\"text\":\"a\"}]}\n\nda",
                            "ta: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":1}}\n\n",
                            "data: [DONE]\n\n"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(xpc_send_body(s, true, chunks[i], strlen(chunks[i]), i == 2), 0);
        r = xpc_recv(s, 5000);
        assert_non_null(r);
        const Envoy__Service__ExtProc__V3__StreamedBodyResponse *sb =
            r->response_body->response->body_mutation->streamed_response;
        assert_int_equal(sb->body.len, strlen(chunks[i]));
        assert_memory_equal(sb->body.data, chunks[i], sb->body.len);
        assert_int_equal(sb->end_of_stream, i == 2);
        xpc_resp_free(r);
    }
    assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
    xpc_close(s);
    pthread_mutex_lock(&e->mu);
    assert_true(e->last.usage_found);
    assert_int_equal(e->last.prompt_tokens, 20);
    assert_int_equal(e->last.completion_tokens, 1);
    pthread_mutex_unlock(&e->mu);
    free(body);
    env_free(e);
}

/* Envoy in BUFFERED mode waits for the headers answer before it sends the body. */
static void test_buffered_mode(void **state)
{
    env *e = env_new(false, -1, NULL);
    uint32_t t[32] = {5};
    cache_on(e, 1, t, 32);
    char *body = token_body(t, 32, "");
    xpc_stream *s = xpc_open(e->cli, 5000);
    assert_int_equal(xpc_send_request_headers(s, REQ_HDRS, false, NULL, 0, 2), 0);
    xpc_resp *r = xpc_recv(s, 5000);
    assert_non_null(r);
    assert_int_equal(r->response_case, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS);
    assert_null(xpc_dest_metadata(r));
    xpc_resp_free(r);
    assert_int_equal(xpc_send_body(s, false, body, strlen(body), true), 0);
    r = xpc_recv(s, 5000);
    assert_non_null(r);
    assert_int_equal(r->response_case, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY);
    size_t n;
    const char *d = xpc_header(r->request_body->response->header_mutation, "x-gateway-destination-endpoint", &n);
    assert_non_null(d);
    assert_memory_equal(d, "10.0.0.2:8000", n);
    assert_true(r->request_body->response->clear_route_cache);
    assert_null(r->request_body->response->body_mutation);
    assert_string_equal(xpc_dest_metadata(r), "10.0.0.2:8000");
    xpc_resp_free(r);
    assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
    xpc_close(s);
    free(body);
    env_free(e);
}

static void test_tls_and_health(void **state)
{
    env *e = env_new(true, -1, NULL);
    uint32_t t[16] = {9};
    cache_on(e, 0, t, 16);
    char *body = token_body(t, 16, "");
    xpc_stream *s = xpc_open(e->cli, 5000);
    assert_non_null(s);
    xpc_resp *r = send_request(s, REQ_HDRS, body, 1000, NULL, 0);
    assert_non_null(r);
    assert_string_equal(dest_of(r), "10.0.0.1:8000");
    xpc_resp_free(r);
    expect_body_chunks(s, body);
    assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
    xpc_close(s);
    /* a plaintext client cannot talk to the TLS port */
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", extproc_port(e->srv));
    xpc_client *plain = xpc_connect(target, NULL, NULL);
    s = xpc_open(plain, 2000);
    if (s) {
        assert_null(xpc_recv(s, 2000));
        xpc_close(s);
    }
    xpc_disconnect(plain);
    free(body);
    env_free(e);

    kv_err err = {0};
    health_server *h = health_start("127.0.0.1:0", NULL, NULL, &err);
    assert_non_null(h);
    snprintf(target, sizeof target, "127.0.0.1:%d", health_port(h));
    xpc_client *c = xpc_connect(target, NULL, NULL);
    assert_int_equal(xpc_health_check(c, "inference-extension", 5000), 1);
    xpc_disconnect(c);
    /* the same port cannot be bound twice */
    char busy[64];
    snprintf(busy, sizeof busy, "127.0.0.1:%d", health_port(h));
    health_server *h2 = health_start(busy, NULL, NULL, &err);
    assert_null(h2);
    assert_non_null(strstr(err.msg, busy));
    health_stop(h);
}

static bool not_ready(void *ctx) { return *(bool *)ctx; }

static void test_health_not_ready(void **state)
{
    bool ready = false;
    kv_err err = {0};
    health_server *h = health_start("127.0.0.1:0", not_ready, &ready, &err);
    assert_non_null(h);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", health_port(h));
    xpc_client *c = xpc_connect(target, NULL, NULL);
    assert_int_equal(xpc_health_check(c, "", 5000), 2);
    ready = true;
    assert_int_equal(xpc_health_check(c, "envoy.service.ext_proc.v3.ExternalProcessor", 5000), 1);
    xpc_disconnect(c);
    health_stop(h);
}

/* ---- /tokenize ------------------------------------------------------------------------------ */

static const uint32_t TOK[48] = {11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
                                 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42,
                                 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58};

/* A vLLM tokenizer on loopback: "tokenize" mode is vLLM before the render API (render
 * 404, /tokenize answers); "render" mode answers both render endpoints in vLLM's shapes
 * (completions: a list of GenerateRequest; chat: one) and /tokenize 500, so a test sees
 * which one gave the ids; "fail" answers everything 500. */
typedef struct fake {
    const char *mode;
    int calls;
    char last[512], last_url[64], last_auth[64];
} fake;

static enum MHD_Result tokenize_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                        const char *version, const char *data, size_t *size, void **con_cls)
{
    fake *f = cls;
    if (!*con_cls) {
        *con_cls = calloc(1, 1024);
        return MHD_YES;
    }
    char *acc = *con_cls;
    if (*size) {
        size_t have = strlen(acc), n = *size < 1023 - have ? *size : 1023 - have;
        memcpy(acc + have, data, n);
        *size = 0;
        return MHD_YES;
    }
    __atomic_add_fetch(&f->calls, 1, __ATOMIC_SEQ_CST);
    snprintf(f->last, sizeof f->last, "%s", acc);
    snprintf(f->last_url, sizeof f->last_url, "%s", url);
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    snprintf(f->last_auth, sizeof f->last_auth, "%s", auth ? auth : "");
    bool render = !strcmp(url, "/v1/completions/render") || !strcmp(url, "/v1/chat/completions/render");
    bool chat = !strcmp(url, "/v1/chat/completions/render");
    char ids[400];
    size_t k = 0;
    for (int i = 0; i < 48; i++)
        k += (size_t)snprintf(ids + k, sizeof ids - k, "%s%u", i ? "," : "", TOK[i]);
    char out[1024];
    size_t len;
    unsigned status;
    if (!strcmp(f->mode, "render") && render) {
        len = (size_t)snprintf(out, sizeof out, "%s{\"request_id\":\"r\",\"token_ids\":[%s],\"model\":\"m\"}%s",
                               chat ? "" : "[", ids, chat ? "" : "]");
        status = 200;
    } else if (!strcmp(f->mode, "tokenize") && !strcmp(url, "/tokenize")) {
        len = (size_t)snprintf(out, sizeof out, "{\"count\":48,\"max_model_len\":4096,\"tokens\":[%s]}", ids);
        status = 200;
    } else {
        len = (size_t)snprintf(out, sizeof out, "{\"error\":{\"message\":\"no\"}}");
        status = !strcmp(f->mode, "tokenize") && render ? 404 : 500;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, out, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static void free_con(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
    free(*con_cls);
}

static void test_tokenize_text_prompts(void **state)
{
    tokenize_stats t0, t1;
    tokenize_get_stats(&t0);
    fake fk = {.mode = "tokenize"};
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, tokenize_handler, &fk,
                                            MHD_OPTION_NOTIFY_COMPLETED, free_con, NULL, MHD_OPTION_END);
    assert_non_null(d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    char name[32];
    snprintf(name, sizeof name, "127.0.0.1:%u", info->port);
    env *e = env_new(false, 2000, name);
    cache_on(e, 3, TOK, 48); /* the prompt's tokens live on 10.0.0.4 */
    const char *sub[] = {name, "10.0.0.4:8000"};
    xpc_stream *s = xpc_open(e->cli, 5000);
    const char *body = "{\"model\":\"m\",\"prompt\":\"hello world\"}";
    xpc_resp *r = send_request(s, REQ_HDRS, body, 1000, sub, 2); /* /tokenize goes to the fake */
    assert_string_equal(dest_of(r), "10.0.0.4:8000");
    xpc_resp_free(r);
    expect_body_chunks(s, body);
    xpc_close(s);
    assert_true(fk.calls >= 1);
    assert_non_null(strstr(fk.last, "\"prompt\":\"hello world\""));
    /* chat messages are sent as messages, so vLLM applies its chat template; \u0000,
     * which the request reader accepts, reaches /tokenize too (issue 10 finding 5) */
    const char *sub1[] = {name};
    static const char *const chats[][2] = {
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}",
         "\"content\":\"a\\u0000b\""},
    };
    for (size_t i = 0; i < 2; i++) {
        s = xpc_open(e->cli, 5000);
        r = send_request(s, REQ_HDRS, chats[i][0], 1000, sub1, 1);
        assert_string_equal(dest_of(r), name);
        xpc_resp_free(r);
        xpc_close(s);
        assert_non_null(strstr(fk.last, chats[i][1]));
    }
    MHD_stop_daemon(d);
    /* the tokenizer is gone: the request is still routed (prefix-text fallback) */
    s = xpc_open(e->cli, 5000);
    r = send_request(s, REQ_HDRS, "{\"model\":\"m\",\"prompt\":\"x\"}", 1000, sub1, 1);
    assert_non_null(r);
    assert_string_equal(dest_of(r), name);
    xpc_resp_free(r);
    xpc_close(s);
    extproc_stats st;
    extproc_get_stats(e->srv, &st);
    assert_int_equal(st.tokenize_ok, 3);
    assert_int_equal(st.tokenize_failed, 1);
    /* every prompt asked render first (404: vLLM before the render API), then /tokenize;
     * the failure is counted by its reason, and logged */
    tokenize_get_stats(&t1);
    assert_int_equal(t1.fell_back - t0.fell_back, 3);
    assert_int_equal(t1.rendered - t0.rendered, 0);
    assert_int_equal(t1.failures[TOKENIZE_TRANSPORT] - t0.failures[TOKENIZE_TRANSPORT], 1);
    assert_int_equal(fk.calls, 6);
    assert_true(logged(e, "Tokenization failed; routing without token ids"));
    assert_true(logged(e, "\"reason\":\"transport\""));
    env_free(e);
}

/* token-producer's vllm.url: prompts rendered on a separate render server, which gets the
 * request body as sent upstream (and the client's Authorization) and answers in vLLM's
 * render shapes; the ids route the request to the pod holding them. Failures are counted
 * by reason and the request is still routed. */
static void test_render_server(void **state)
{
    fake fk = {.mode = "render"};
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, tokenize_handler, &fk,
                                            MHD_OPTION_NOTIFY_COMPLETED, free_con, NULL, MHD_OPTION_END);
    assert_non_null(d);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);
    char trimmed[64];
    snprintf(trimmed, sizeof trimmed, "%.*s", (int)strlen(url) - 1, url);
    next_render_url = trimmed;   /* token_producer drops the trailing '/' */
    env *e = env_new(false, 2000, NULL);
    next_render_url = NULL;
    cache_on(e, 2, TOK, 48);
    tokenize_stats t0, t1;
    tokenize_get_stats(&t0);
    static const char *const hdrs[] = {":method", "POST", ":path", "/v1/chat/completions", "content-length", "999",
                                       "x-request-id", "req-r", "authorization", "Bearer sk-1", NULL};
    const char *bodies[] = {"{\"model\":\"m\",\"prompt\":\"hello\",\"max_tokens\":7}",
                            "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                            "\"chat_template_kwargs\":{\"enable_thinking\":false}}"};
    const char *paths[] = {"/v1/completions/render", "/v1/chat/completions/render"};
    for (size_t i = 0; i < 2; i++) {
        xpc_stream *s = xpc_open(e->cli, 5000);
        xpc_resp *r = send_request(s, i ? hdrs : REQ_HDRS, bodies[i], 1000, NULL, 0);
        assert_string_equal(dest_of(r), "10.0.0.3:8000");
        xpc_resp_free(r);
        xpc_close(s);
        assert_string_equal(fk.last_url, paths[i]);
        assert_string_equal(fk.last, bodies[i]);   /* verbatim: template arguments apply */
        assert_string_equal(fk.last_auth, i ? "Bearer sk-1" : "");
    }
    tokenize_get_stats(&t1);
    assert_int_equal(t1.rendered - t0.rendered, 2);
    /* the renderer fails: counted as http_status, routed anyway */
    fk.mode = "fail";
    xpc_stream *s = xpc_open(e->cli, 5000);
    xpc_resp *r = send_request(s, REQ_HDRS, bodies[0], 1000, NULL, 0);
    assert_non_null(dest_of(r));
    xpc_resp_free(r);
    xpc_close(s);
    tokenize_get_stats(&t0);
    assert_int_equal(t0.failures[TOKENIZE_HTTP_STATUS] - t1.failures[TOKENIZE_HTTP_STATUS], 1);
    assert_true(logged(e, "/v1/completions/render: HTTP status 500"));
    MHD_stop_daemon(d);
    env_free(e);
}

/* burst-prefix-cache-producer: three requests with one prompt, arriving together, wait in
 * one window and are placed together: each is routed to the same endpoint, where its
 * prefix score is 1 (the producer's assignment; with none every score is 0). */
static const char BURST_CONFIG[] = "plugins:\n"
                                   "- type: burst-prefix-cache-producer\n"
                                   "  parameters: {windowDurationMs: 1500}\n"
                                   "- type: prefix-cache-scorer\n"
                                   "  parameters: {prefixMatchInfoProducerName: burst-prefix-cache-producer}\n"
                                   "- type: max-score-picker\n";

typedef struct burst_arg {
    env *e;
    const char *body;
    char id[16];
    pthread_barrier_t *go;
    char dest[64];
} burst_arg;

static void *burst_send(void *p)
{
    burst_arg *a = p;
    const char *hdrs[] = {":method", "POST", ":path", "/v1/completions", "x-request-id", a->id, NULL};
    pthread_barrier_wait(a->go);
    xpc_stream *s = xpc_open(a->e->cli, 10000);
    if (s && xpc_send_request_headers(s, hdrs, false, NULL, 0, 0) == 0 &&
        xpc_send_body(s, false, a->body, strlen(a->body), true) == 0) {
        xpc_resp *r = xpc_recv(s, 10000);
        size_t n;
        const char *v = r && r->request_headers
                            ? xpc_header(r->request_headers->response->header_mutation, "x-gateway-destination-endpoint", &n)
                            : NULL;
        if (v)
            snprintf(a->dest, sizeof a->dest, "%.*s", (int)n, v);
        xpc_resp_free(r);
    }
    xpc_close(s);
    return NULL;
}

static void test_burst_window(void **state)
{
    env *e = env_new_cfg(BURST_CONFIG, false, -1, NULL, NULL);
    uint32_t t[128];
    for (uint32_t i = 0; i < 128; i++)
        t[i] = 500 + i;
    char *body = token_body(t, 128, "");
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 3);
    burst_arg a[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (burst_arg){.e = e, .body = body, .go = &go};
        snprintf(a[i].id, sizeof a[i].id, "burst-%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, burst_send, &a[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < 3; i++) {
        if (!a[i].dest[0])
            fail_msg("request %d was not routed", i);
        assert_string_equal(a[i].dest, a[0].dest);
        char want[128];
        snprintf(want, sizeof want, "\"x-request-id\":\"burst-%d\"", i);
        pthread_mutex_lock(&e->mu);
        bool scored = false;
        for (const char *l = e->log; l && (l = strstr(l, want)); l++) {
            const char *end = strchr(l, '\n');
            const char *hit = strstr(l, "\"plugin\":\"prefix-cache-scorer/prefix-cache-scorer\"");
            const char *one = hit ? strstr(hit, "\"score\":1") : NULL;
            scored |= one && (!end || one < end);
        }
        pthread_mutex_unlock(&e->mu);
        if (!scored)
            fail_msg("request %d: no prefix score of 1 on its endpoint", i);
    }
    free(body);
    env_free(e);
}

/* Issue 10 findings 1 and 2, each of which killed the server (stack overflow): a body
 * nesting arrays 100,000 deep in an unread field is answered 400 naming the limit; a
 * ProcessingRequest nesting ListValues 10,000 deep in its metadata_context closes its
 * stream with INVALID_ARGUMENT. The server goes on routing. */
static void test_nested_input_survived(void **state)
{
    env *e = env_new(false, -1, NULL);
    size_t n;
    char *deep = regress_read("openai_body", "nested-100k.json", &n);
    assert_non_null(deep);
    xpc_stream *s = xpc_open(e->cli, 5000);
    expect_immediate(send_request(s, REQ_HDRS, deep, 60000, NULL, 0), 400,
                     "inference gateway: BadRequest - request body: arrays and objects nested deeper than 1024 levels");
    xpc_close(s);
    free(deep);
    deep = regress_read("extproc_stream", "nested-listvalue.bin", &n);
    assert_non_null(deep);
    s = xpc_open(e->cli, 5000);
    assert_int_equal(xpc_send_raw(s, deep, n), 0);
    char det[256];
    assert_int_equal(xpc_finish(s, det, sizeof det, 5000), GRPC_STATUS_INVALID_ARGUMENT);
    if (!strstr(det, "ProcessingRequest: messages nested deeper than 100"))
        fail_msg("details '%s'", det);
    xpc_close(s);
    free(deep);
    uint32_t t[32] = {5};
    char *body = token_body(t, 32, "");
    s = xpc_open(e->cli, 5000);
    xpc_resp *r = send_request(s, REQ_HDRS, body, 1000, NULL, 0);
    assert_non_null(dest_of(r));
    xpc_resp_free(r);
    expect_body_chunks(s, body);
    xpc_close(s);
    free(body);
    extproc_stats st;
    extproc_get_stats(e->srv, &st);
    assert_int_equal(st.bad_messages, 1);
    assert_int_equal(st.errors_400, 1);
    env_free(e);
}

/* Sends body (model "m") with hdrs and checks that it goes upstream with model `to`
 * (Content-Length following), that the decision's target model is `to`, and that the
 * log line pairs the incoming and target names. */
static void expect_upstream_model(env *e, const char **hdrs, const char *body, const char *to)
{
    xpc_stream *s = xpc_open(e->cli, 5000);
    xpc_resp *r = send_request(s, hdrs, body, 1000, NULL, 0);
    assert_non_null(r);
    assert_int_equal(r->response_case, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS);
    size_t n;
    const char *cl = xpc_header(r->request_headers->response->header_mutation, "content-length", &n);
    assert_non_null(cl);
    const char *at = strstr(body, "\"model\":\"m\"");
    assert_non_null(at);
    char want[512];
    snprintf(want, sizeof want, "%.*s\"model\":\"%s\"%s", (int)(at - body), body, to, at + strlen("\"model\":\"m\""));
    char len[16];
    snprintf(len, sizeof len, "%zu", strlen(want));
    assert_int_equal(n, strlen(len));
    assert_memory_equal(cl, len, n);
    xpc_resp_free(r);
    expect_body_chunks(s, want);
    xpc_close(s);
    char line[160];
    snprintf(line, sizeof line, "\"incomingModelName\":\"m\",\"targetModelName\":\"%s\"", to);
    pthread_mutex_lock(&e->mu);
    assert_string_equal(e->dec.target_model, to);
    assert_non_null(strstr(e->log, line));
    pthread_mutex_unlock(&e->mu);
}

/* x-gateway-model-name-rewrite, then InferenceModelRewrites: the body goes upstream with
 * the new model name; a rule for the body's model wins over the header (GIE's director
 * applies the rule after the header), a 1:3 split follows the random draws, and a model
 * no rule names keeps the header's choice. */
static void test_model_rewrite(void **state)
{
    env *e = env_new(false, -1, NULL);
    uint32_t t[16] = {3};
    char *body = token_body(t, 16, "");
    const char *hdrs[] = {":path", "/v1/completions", "x-request-id", "rw-1", "x-gateway-model-name-rewrite",
                          "m-v2", NULL};
    const char *plain[] = {":path", "/v1/completions", NULL};
    expect_upstream_model(e, hdrs, body, "m-v2");

    const char *models[] = {"m"};
    model_rewrite_target split[] = {{"m-canary", 1}, {"m-stable", 3}};
    model_rewrite_rule rule = {models, 1, split, 2};
    model_rewrite rw = {"canary", 0, &rule, 1};
    assert_int_equal(model_rewrites_put(e->rewrites, &rw, NULL), KV_OK);
    expect_upstream_model(e, hdrs, body, "m-canary"); /* draw 0 */
    expect_upstream_model(e, hdrs, body, "m-stable"); /* draws 1..3 */
    expect_upstream_model(e, plain, body, "m-stable");
    expect_upstream_model(e, plain, body, "m-stable");
    expect_upstream_model(e, hdrs, body, "m-canary"); /* draw 4 */

    models[0] = "not-m";
    assert_int_equal(model_rewrites_put(e->rewrites, &rw, NULL), KV_OK);
    expect_upstream_model(e, hdrs, body, "m-v2");
    free(body);

    /* Issue 10 finding 5: \u0000 in a string is routed with or without a rewrite (it was
     * 500 "out of memory" with one); what jansson cannot hold is 400 on the rewrite path,
     * and so is a rewrite header that is not UTF-8, never 500. */
    body = token_body(t, 16, "\"user\":\"a\\u0000b\",");
    expect_upstream_model(e, hdrs, body, "m-v2");
    free(body);
    static const struct {
        const char *extra, *name, *prefix;
    } bad[] = {
        {"\"seed\":100000000000000000000,", "m-v2", "inference gateway: BadRequest - request body: cannot rewrite 'model'"},
        {"\"\\u0000\":1,", "m-v2", "inference gateway: BadRequest - request body: cannot rewrite 'model'"},
        {"", "m-\xff", "inference gateway: BadRequest - the rewritten model name is not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        body = token_body(t, 16, bad[i].extra);
        const char *h[] = {":path", "/v1/completions", "x-gateway-model-name-rewrite", bad[i].name, NULL};
        xpc_stream *s = xpc_open(e->cli, 5000);
        expect_immediate(send_request(s, h, body, 1000, NULL, 0), 400, bad[i].prefix);
        xpc_close(s);
        free(body);
    }
    extproc_stats st;
    extproc_get_stats(e->srv, &st);
    assert_int_equal(st.errors_500, 0);
    env_free(e);
}

/* Control headers as GIE reads them: the objective's priority goes with the decision
 * (unknown objective or none: 0), the fairness id defaults to "default-flow", a
 * sheddable request is turned away with 429 only while the candidates are saturated, and
 * a request with priority >= 0 is never checked; llm-d-router's newer header names win. */
static void test_objectives_and_shedding(void **state)
{
    env *e = env_new(false, -1, NULL);
    assert_int_equal(objectives_load(e->objs, "batch=-1,premium=10", NULL), KV_OK);
    uint32_t t[16] = {9};
    char *body = token_body(t, 16, "");
    const char *shed_hdrs[] = {":path", "/v1/completions", "x-gateway-inference-objective", "batch",
                               "x-gateway-inference-fairness-id", "tenant-a", NULL};
    const char *premium[] = {":path", "/v1/completions", "x-gateway-inference-objective", "premium", NULL};
    const char *unknown[] = {":path", "/v1/completions", "x-gateway-inference-objective", "nope", NULL};
    const char *aliased[] = {":path", "/v1/completions", "x-gateway-inference-objective", "batch",
                             "x-llm-d-inference-objective", "premium", "x-llm-d-inference-fairness-id",
                             "tenant-b", NULL};

    /* not saturated: the sheddable request is routed, its priority and fairness id recorded */
    xpc_stream *s = xpc_open(e->cli, 5000);
    xpc_resp *r = send_request(s, shed_hdrs, body, 1000, NULL, 0);
    assert_non_null(dest_of(r));
    xpc_resp_free(r);
    xpc_close(s);
    pthread_mutex_lock(&e->mu);
    assert_int_equal(e->dec.priority, -1);
    assert_string_equal(e->dec.objective, "batch");
    assert_string_equal(e->dec.fairness, "tenant-a");
    assert_false(e->dec.shed);
    assert_int_equal(e->saturation_asks, 1);
    e->saturated = true;
    pthread_mutex_unlock(&e->mu);

    /* saturated: shed with GIE's error, before any scheduling */
    s = xpc_open(e->cli, 5000);
    expect_immediate(send_request(s, shed_hdrs, body, 1000, NULL, 0), 429,
                     "inference gateway: InferencePoolResourceExhausted - system saturated, sheddable request dropped");
    xpc_close(s);
    pthread_mutex_lock(&e->mu);
    assert_true(e->dec.shed);
    assert_int_equal(e->saturation_asks, 2);
    pthread_mutex_unlock(&e->mu);

    /* priority >= 0 (known, unknown, aliased) passes a saturated pool without being checked */
    const char *const *ok[] = {premium, unknown, aliased};
    const int want_prio[] = {10, 0, 10};
    const char *want_fair[] = {"default-flow", "default-flow", "tenant-b"};
    for (int i = 0; i < 3; i++) {
        s = xpc_open(e->cli, 5000);
        r = send_request(s, ok[i], body, 1000, NULL, 0);
        assert_non_null(dest_of(r));
        xpc_resp_free(r);
        xpc_close(s);
        pthread_mutex_lock(&e->mu);
        assert_int_equal(e->dec.priority, want_prio[i]);
        assert_string_equal(e->dec.fairness, want_fair[i]);
        assert_false(e->dec.shed);
        assert_int_equal(e->saturation_asks, 2);
        pthread_mutex_unlock(&e->mu);
    }
    extproc_stats st;
    extproc_get_stats(e->srv, &st);
    assert_int_equal(st.errors_429, 1);
    assert_int_equal(st.requests, 4);
    free(body);
    env_free(e);
}

/* A filter that leaves nothing is a scheduler failure: 429, as GIE's director answers. */
static void test_scheduler_failure_429(void **state)
{
    static const char cfg[] = "plugins:\n- type: prefill-filter\n- type: queue-scorer\n";
    env *e = env_new_cfg(cfg, false, -1, NULL, NULL);
    uint32_t t[16] = {1};
    char *body = token_body(t, 16, "");
    xpc_stream *s = xpc_open(e->cli, 5000);
    expect_immediate(send_request(s, REQ_HDRS, body, 1000, NULL, 0), 429,
                     "inference gateway: InferencePoolResourceExhausted - failed to find target pod: ");
    assert_int_equal(xpc_finish(s, NULL, 0, 5000), 0);
    xpc_close(s);
    extproc_stats st;
    extproc_get_stats(e->srv, &st);
    assert_int_equal(st.errors_429, 1);
    assert_int_equal(st.errors_503, 0);
    free(body);
    env_free(e);
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* --decision-log: the simulator's decisions rows for every live decision. */
static void test_decision_log(void **state)
{
    char path[] = "/tmp/test_extproc_dl_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    kv_err err = {0};
    decisionlog *dl = decisionlog_open(path, "inline.yaml", 7, &err);
    if (!dl)
        fail_msg("%s", err.msg);
    env *e = env_new_cfg(CONFIG, false, -1, NULL, dl);
    e->f->eps[1].m.waiting = 3; /* queue-scorer tells the endpoints apart */
    uint32_t t[64];
    for (size_t i = 0; i < 64; i++)
        t[i] = (uint32_t)(50 + i);
    cache_on(e, 2, t, 64);
    char *body = token_body(t, 64, "");
    for (int i = 0; i < 2; i++) {
        xpc_stream *s = xpc_open(e->cli, 5000);
        xpc_resp *r = send_request(s, REQ_HDRS, body, 1000, NULL, 0);
        assert_string_equal(dest_of(r), "10.0.0.3:8000");
        xpc_resp_free(r);
        xpc_close(s);
    }
    env_free(e);
    decisionlog_close(dl);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(query_int(db, "SELECT count(*) FROM runs WHERE scenario='live' AND seed=7"), 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM live_requests WHERE x_request_id='req-1' AND model='m' AND "
                                   "target_model='m' AND objective IS NULL AND fairness_id='default-flow' AND "
                                   "priority=0 AND outcome='routed' AND target='10.0.0.3:8000'"),
                     2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM live_requests l JOIN decisions d USING(run_id, request_id) "
                                   "WHERE d.plugin='total' AND d.picked=1"),
                     2);
    /* 3 scorers x 4 endpoints + 4 totals, per decision */
    assert_int_equal(query_int(db, "SELECT count(*) FROM decisions"), 2 * 16);
    assert_int_equal(query_int(db, "SELECT count(DISTINCT request_id) FROM decisions"), 2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM decisions WHERE picked=1 AND endpoint<>2"), 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM decisions WHERE plugin='total' AND picked=1"), 2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM decisions WHERE plugin='precise-prefix-cache-scorer/"
                                   "precise-prefix-cache-scorer' AND endpoint=2 AND score=1.0 AND weight=3.0"),
                     2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM decisions WHERE plugin='queue-scorer/queue-scorer' "
                                   "AND endpoint=1 AND score=0.0"),
                     2);
    /* endpoint numbers have names: one row per endpoint of the run, joined by the pick */
    assert_int_equal(query_int(db, "SELECT count(*) FROM endpoints"), 4);
    assert_int_equal(query_int(db, "SELECT count(*) FROM decisions d JOIN endpoints e USING(run_id, endpoint) "
                                   "WHERE d.plugin='total' AND d.picked=1 AND e.name='10.0.0.3:8000'"),
                     2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM live_requests l JOIN decisions d USING(run_id, request_id) "
                                   "JOIN endpoints e USING(run_id, endpoint) WHERE d.picked=1 AND "
                                   "d.plugin='total' AND e.name=l.target"),
                     2);
    sqlite3_close(db);
    unlink(path);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_to_cache_holder), cmocka_unit_test(test_large_body_chunks),
        cmocka_unit_test(test_errors),                 cmocka_unit_test(test_bad_streams_survived),
        cmocka_unit_test(test_streamed_response),      cmocka_unit_test(test_buffered_mode),
        cmocka_unit_test(test_tls_and_health),         cmocka_unit_test(test_health_not_ready),
        cmocka_unit_test(test_tokenize_text_prompts),  cmocka_unit_test(test_render_server),
        cmocka_unit_test(test_burst_window),  cmocka_unit_test(test_decision_log),
        cmocka_unit_test(test_scheduler_failure_429),  cmocka_unit_test(test_model_rewrite),
        cmocka_unit_test(test_objectives_and_shedding), cmocka_unit_test(test_nested_input_survived),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
