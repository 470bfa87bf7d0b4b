/* test_debugapi: the /debug/ inspection endpoints over real HTTP on the metrics port
 * (promexp's hook), against a real sched with a precise scorer, an endpoint set, an
 * ingest fed through its receive path and the router ./epp routes with:
 *   - /debug/endpoints reports each pod's metrics, KV events and entries held, and names
 *     the pod that never sent events;
 *   - POST /debug/score shows every endpoint's per-plugin scores and the pick for a body,
 *     exactly as the router would decide, and records nothing (no decision hook, no
 *     in-flight count, no pre-request state);
 *   - /debug/index is a bounded summary naming the index's settings and slots;
 *   - wrong paths and methods are 404 and 405, a bad body is the router's 400. */
#include <curl/curl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "debugapi.h"
#include "endpoints.h"
#include "ingest.h"
#include "kvdiag.h"
#include "log.h"
#include "promexp.h"
#include "route.h"
#include "support/sched_fixture.h"

#define POD_A "10.0.0.1:8000"
#define POD_B "10.0.0.2:8000"
#define MODEL "Qwen/Qwen3-32B"
#define N_TOK 64

static const char *yaml =
    "apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
    "kind: EndpointPickerConfig\n"
    "plugins:\n"
    "- type: precise-prefix-cache-scorer\n"
    "  parameters:\n"
    "    tokenProcessorConfig:\n"
    "      blockSize: 16\n"
    "- type: queue-scorer\n"
    "- type: max-score-picker\n"
    "schedulingProfiles:\n"
    "- name: default\n"
    "  plugins:\n"
    "  - pluginRef: precise-prefix-cache-scorer\n"
    "    weight: 3\n"
    "  - pluginRef: queue-scorer\n"
    "    weight: 1\n"
    "  - pluginRef: max-score-picker\n";

typedef struct env {
    fx *f;                        /* its sched; its own endpoints are not used */
    epset *eps;
    kvdiag *diag;
    ingest *g;
    route_router *router;
    debugapi *dbg;
    promexp *pm;
    int decisions;                /* on_decision calls: a dry run makes none */
} env;

static void quiet(void *ctx, const char *line) {}

static void on_decision(void *ctx, const route_decision *d) { ((env *)ctx)->decisions++; }

static void feed(env *e, const char *topic, uint64_t seq)
{
    uint32_t tok[N_TOK];
    uint64_t hashes[N_TOK / 16];
    for (size_t i = 0; i < N_TOK; i++)
        tok[i] = (uint32_t)(7 + i * 13);
    for (size_t i = 0; i < N_TOK / 16; i++)
        hashes[i] = 100 + i;
    kvev_event ev = {.type = KVEV_BLOCK_STORED, .block_hashes = hashes, .n_block_hashes = N_TOK / 16,
                     .token_ids = tok, .n_token_ids = N_TOK, .block_size = 16};
    kvev_batch b = {.ts = 1.0, .events = &ev, .n_events = 1};
    kvev_buf buf = {0};
    assert_int_equal(kvev_encode(&b, KVEV_ENC_ARRAY, &buf, NULL), KV_OK);
    uint8_t s[8];
    for (int i = 0; i < 8; i++)
        s[i] = (uint8_t)(seq >> (56 - 8 * i));
    ingest_frame fr[3] = {{topic, strlen(topic)}, {s, 8}, {buf.data, buf.len}};
    ingest_feed(e->g, fr, 3);
    kvev_buf_free(&buf);
}

static int setup(void **state)
{
    log_setup(0, quiet, NULL);
    env *e = calloc(1, sizeof *e);
    assert_non_null(e->f = fx_new(yaml, 1, 1));
    assert_non_null(e->eps = epset_new(0, NULL, NULL, NULL));
    assert_int_equal(epset_parse_list(e->eps, POD_A "," POD_B, "test", NULL), KV_OK);
    sched_metrics m = {.valid = true, .waiting = 1, .kv_usage = 0.25, .block_size = 16};
    assert_true(epset_set_metrics(e->eps, POD_A, &m));
    assert_true(epset_set_metrics(e->eps, POD_B, &m));
    assert_non_null(e->diag = kvdiag_new(NULL, NULL));
    sched_kvsource *srcs[1];
    assert_int_equal(pps_kvsources(e->f->s, srcs, 1), 1);
    ingest_config ic;
    ingest_config_from_kvsource(&ic, srcs, 1, e->eps);
    ic.diag = e->diag;
    assert_non_null(e->g = ingest_detached(&ic, NULL));
    feed(e, "kv@" POD_A "@" MODEL, 0);
    route_config rc = {.sched = e->f->s, .pool = {epset_acquire, epset_release, e->eps},
                       .tokenize_timeout_ms = -1, .on_decision = on_decision, .hook_ctx = e};
    assert_non_null(e->router = route_new(&rc, NULL));
    assert_non_null(e->dbg = debugapi_new(&(debugapi_config){.endpoints = e->eps, .diag = e->diag,
                                                             .ingests = &e->g, .n_ingests = 1},
                                          NULL));
    debugapi_set_router(e->dbg, e->router);
    promexp_sources ps = {.endpoints = e->eps, .debug = debugapi_serve, .debug_ctx = e->dbg};
    assert_non_null(e->pm = promexp_start(0, &ps, NULL));
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env *e = *state;
    promexp_stop(e->pm);
    debugapi_free(e->dbg);
    route_free(e->router);
    ingest_stop(e->g);
    kvdiag_free(e->diag);
    epset_free(e->eps);
    fx_free(e->f);
    free(e);
    return 0;
}

typedef struct body {
    char *data;
    size_t len;
} body;

static size_t on_data(char *p, size_t sz, size_t n, void *ctx)
{
    body *b = ctx;
    b->data = realloc(b->data, b->len + sz * n + 1);
    memcpy(b->data + b->len, p, sz * n);
    b->len += sz * n;
    b->data[b->len] = 0;
    return sz * n;
}

/* One HTTP request; post NULL is a GET. The answer parsed as JSON into *out. */
static long http(env *e, const char *method, const char *path, const char *post, json_t **out)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", promexp_port(e->pm), path);
    body b = {0};
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (post)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
    struct curl_slist *h = curl_slist_append(NULL, "x-request-id: dry-1");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    long code = 0;
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    json_error_t je;
    *out = b.data ? json_loads(b.data, 0, &je) : NULL;
    if (!*out)
        fail_msg("not JSON (%s): %s", je.text, b.data ? b.data : "(empty)");
    free(b.data);
    return code;
}

static json_t *find_ep(json_t *list, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) if (!strcmp(json_string_value(json_object_get(v, "name")), name)) return v;
    fail_msg("no endpoint %s", name);
    return NULL;
}

static void test_endpoints(void **state)
{
    env *e = *state;
    json_t *o;
    assert_int_equal(http(e, "GET", "/debug/endpoints", NULL, &o), 200);
    json_t *list = json_object_get(o, "endpoints");
    assert_int_equal(json_array_size(list), 2);
    json_t *a = find_ep(list, POD_A), *b = find_ep(list, POD_B);
    assert_true(json_is_true(json_object_get(json_object_get(a, "metrics"), "valid")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(a, "metrics"), "blockSize")), 16);
    assert_true(json_real_value(json_object_get(json_object_get(a, "metrics"), "ageSeconds")) >= 0);
    json_t *ev = json_object_get(a, "kvEvents");
    assert_int_equal(json_integer_value(json_object_get(ev, "messages")), 1);
    assert_int_equal(json_integer_value(json_object_get(ev, "lastSeq")), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(ev, "models"), 0)), MODEL);
    assert_int_equal(json_integer_value(json_object_get(a, "blocksHeld")), N_TOK / 16);
    assert_string_equal(json_string_value(json_object_get(a, "health")), "ok");
    /* POD_B never published: nothing can ever match it */
    assert_true(json_is_null(json_object_get(b, "kvEvents")));
    assert_int_equal(json_integer_value(json_object_get(b, "blocksHeld")), 0);
    assert_string_equal(json_string_value(json_object_get(b, "health")), "no-kv-events");
    assert_true(json_is_true(json_object_get(o, "preciseIndex")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "counts"), "empty_topic")), 0);
    json_decref(o);
}

static void test_score_dry_run(void **state)
{
    env *e = *state;
    char body[1024];
    int n = snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":[", MODEL);
    for (int i = 0; i < N_TOK; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s%d", i ? "," : "", 7 + i * 13);
    snprintf(body + n, sizeof body - (size_t)n, "],\"max_tokens\":8}");
    json_t *o;
    assert_int_equal(http(e, "POST", "/debug/score", body, &o), 200);
    assert_true(json_is_true(json_object_get(o, "dryRun")));
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
    assert_string_equal(json_string_value(json_object_get(o, "requestId")), "dry-1");
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "pick"), 0)), POD_A);
    assert_int_equal(json_integer_value(json_object_get(o, "tokens")), N_TOK);
    json_t *eps = json_object_get(o, "endpoints");
    json_t *sa = json_object_get(json_object_get(eps, POD_A), "scores");
    json_t *sb = json_object_get(json_object_get(eps, POD_B), "scores");
    assert_int_equal(json_array_size(sa), 2);
    json_t *pa = json_array_get(sa, 0), *pb = json_array_get(sb, 0);
    assert_string_equal(json_string_value(json_object_get(pa, "plugin")),
                        "precise-prefix-cache-scorer/precise-prefix-cache-scorer");
    assert_true(json_real_value(json_object_get(pa, "score")) == 1.0);   /* every block held */
    assert_true(json_real_value(json_object_get(pb, "score")) == 0.0);
    assert_true(json_real_value(json_object_get(pa, "weighted")) == 3.0);
    assert_true(json_real_value(json_object_get(json_object_get(eps, POD_A), "total")) >
                json_real_value(json_object_get(json_object_get(eps, POD_B), "total")));
    json_decref(o);
    /* nothing recorded: no decision hook, no in-flight request */
    assert_int_equal(e->decisions, 0);
    sched_endpoint *const *list;
    size_t k = epset_acquire(e->eps, &list);
    for (size_t i = 0; i < k; i++)
        assert_int_equal(list[i]->in_flight, 0);
    epset_release(e->eps);
    /* the same body through the router for real is recorded */
    route_req q;
    route_req_init(&q, e->router);
    assert_int_equal(route_begin(&q, 0), KV_OK);
    assert_int_equal(route_headers_end(&q), KV_OK);
    assert_true(route_body_append(&q, (const uint8_t *)body, strlen(body)));
    assert_int_equal(route_decide(&q), 200);
    assert_string_equal(q.target, POD_A);
    assert_int_equal(e->decisions, 1);
    route_complete(&q);
    route_req_free(&q);
}

static void test_score_errors(void **state)
{
    env *e = *state;
    json_t *o;
    assert_int_equal(http(e, "POST", "/debug/score", "{\"prompt\":\"no model\"}", &o), 200);
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 400);
    assert_non_null(strstr(json_string_value(json_object_get(o, "error")), "model"));
    json_decref(o);
    assert_int_equal(http(e, "GET", "/debug/score", NULL, &o), 405);
    json_decref(o);
    assert_int_equal(http(e, "POST", "/debug/endpoints", "{}", &o), 405);
    json_decref(o);
    assert_int_equal(http(e, "GET", "/debug/nothing", NULL, &o), 404);
    json_decref(o);
    debugapi_set_router(e->dbg, NULL);   /* as ./epp does before its server stops */
    assert_int_equal(http(e, "POST", "/debug/score", "{}", &o), 503);
    json_decref(o);
}

static void test_index(void **state)
{
    env *e = *state;
    json_t *o;
    assert_int_equal(http(e, "GET", "/debug/index", NULL, &o), 200);
    json_t *ix = json_array_get(json_object_get(o, "indexes"), 0);
    assert_int_equal(json_integer_value(json_object_get(ix, "blockSize")), 16);
    assert_string_equal(json_string_value(json_object_get(ix, "hashAlgorithm")), "xxh64");
    assert_string_equal(json_string_value(json_object_get(json_object_get(ix, "kvEvents"), "topicFilter")), "kv@");
    json_t *st = json_object_get(ix, "stats");
    assert_int_equal(json_integer_value(json_object_get(st, "blocks")), N_TOK / 16);
    assert_int_equal(json_integer_value(json_object_get(st, "admissions")), N_TOK / 16);
    json_t *slots = json_object_get(ix, "endpoints");
    assert_int_equal(json_array_size(slots), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(slots, 0), "name")), POD_A);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(slots, 0), "entries")), N_TOK / 16);
    assert_int_equal(json_integer_value(json_object_get(ix, "endpointsNotShown")), 0);
    json_t *ing = json_array_get(json_object_get(o, "ingests"), 0);
    assert_int_equal(json_integer_value(json_object_get(ing, "messages")), 1);
    assert_int_equal(json_integer_value(json_object_get(ing, "batches")), 1);
    json_decref(o);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_endpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_score_dry_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_score_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
