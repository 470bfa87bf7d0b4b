/* test_route: the routing of one request (live/route.c) without gRPC or sockets, as any
 * front door drives it: headers, subset hint and body in; the decision (target or GIE's
 * status and message), the decision record and the completion record out; a retry on
 * the next-best endpoint and a front door's endpoint filter. The prefix
 * index is filled directly, so the expected target is known; the records are compared
 * field by field with what the request carried. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "route.h"
#include "support/fx_pool.h"
#include "support/sched_fixture.h"

static const char CONFIG[] =
    "plugins:\n"
    "- type: precise-prefix-cache-scorer\n"
    "  name: precise\n"
    "  parameters:\n"
    "    tokenProcessorConfig: {blockSize: 16}\n"
    "- type: queue-scorer\n"
    "- type: max-score-picker\n"
    "schedulingProfiles:\n"
    "- name: default\n"
    "  plugins:\n"
    "  - {pluginRef: precise, weight: 3.0}\n"
    "  - {pluginRef: queue-scorer, weight: 1.0}\n"
    "  - {pluginRef: max-score-picker}\n";

typedef struct world {
    fx *f;
    route_router *r;
    bool saturated;
    int priority;                 /* what every objective maps to */
    int decisions, completions;
    route_decision dec;           /* the last decision (pointers valid only in the callback) */
    char dec_target[64], dec_request_id[64], dec_fairness[64];
    route_completion done;
    char done_target[64];
} world;

static void on_decision(void *ctx, const route_decision *d)
{
    world *w = ctx;
    w->decisions++;
    w->dec = *d;
    snprintf(w->dec_target, sizeof w->dec_target, "%s", d->target ? d->target : "");
    snprintf(w->dec_request_id, sizeof w->dec_request_id, "%s", d->request_id);
    snprintf(w->dec_fairness, sizeof w->dec_fairness, "%s", d->fairness_id);
}

static void on_complete(void *ctx, const route_completion *c)
{
    world *w = ctx;
    w->completions++;
    w->done = *c;
    snprintf(w->done_target, sizeof w->done_target, "%s", c->target ? c->target : "");
}

static bool objective_priority(void *ctx, const char *objective, int *priority)
{
    *priority = objective ? ((world *)ctx)->priority : 0;
    return objective != NULL;
}

static bool saturated(void *ctx, sched_endpoint *const *cands, size_t n) { return ((world *)ctx)->saturated; }

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    w->f = fx_new(CONFIG, 4, 7);
    assert_non_null(w->f);
    const route_config cfg = {
        .sched = w->f->s,
        .pool = fx_pool(w->f),
        .tokenize_timeout_ms = -1,
        .max_body = 4096,
        .trace_decisions = true,
        .objective_priority = objective_priority,
        .saturated = saturated,
        .admission_ctx = w,
        .on_decision = on_decision,
        .on_complete = on_complete,
        .hook_ctx = w,
    };
    kv_err err = {0};
    w->r = route_new(&cfg, &err);
    assert_non_null(w->r);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    route_free(w->r);
    fx_free(w->f);
    free(w);
    return 0;
}

/* Stores tokens[0..n) for endpoint i in the precise scorer's index, as KV events would. */
static void cache_on(world *w, size_t i, const uint32_t *tokens, size_t n)
{
    sched_kvsource *src = NULL;
    assert_int_equal(sched_services(w->f->s, "kvsource", (void **)&src, 1), 1);
    kv_err err = {0};
    int slot = kvindex_endpoint_add(src->index, w->f->names[i], &err);
    assert_true(slot >= 0);
    uint64_t keys[64];
    size_t nk = blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tokens, n, NULL, 0, NULL, keys, 64);
    assert_int_equal(kvindex_store(src->index, slot, KVTIER_GPU, NULL, 0, keys, nk, &err), KV_OK);
}

/* Headers given as key, value, ..., NULL. */
static void begin(route_req *q, world *w, const char *const *kv)
{
    size_t n = 0;
    while (kv[2 * n])
        n++;
    route_req_init(q, w->r);
    assert_int_equal(route_begin(q, n), KV_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(route_add_header(q, kv[2 * i], kv[2 * i + 1], strlen(kv[2 * i + 1])), KV_OK);
    assert_int_equal(route_headers_end(q), KV_OK);
}

static void body(route_req *q, const char *b)
{
    q->request_bytes += strlen(b);
    assert_true(route_body_append(q, (const uint8_t *)b, strlen(b)));
}

/* 64 token ids 1..64 as a completions body. */
static const char *const TOKENS_BODY =
    "{\"model\":\"m\",\"max_tokens\":5,\"prompt\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,"
    "25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,"
    "62,63,64]}";

static void routes_to_the_holder_and_reports_both_records(void **state)
{
    world *w = *state;
    uint32_t t[64];
    for (uint32_t i = 0; i < 64; i++)
        t[i] = i + 1;
    cache_on(w, 2, t, 64);
    route_req q;
    begin(&q, w, (const char *const[]){"X-Request-Id", "req-7", "x-gateway-inference-objective", "chat", NULL});
    w->priority = 3;
    body(&q, TOKENS_BODY);
    assert_int_equal(route_decide(&q), 200);
    assert_string_equal(q.target, w->f->names[2]);
    assert_int_equal(w->decisions, 1);
    assert_string_equal(w->dec_target, w->f->names[2]);
    assert_string_equal(w->dec_request_id, "req-7");
    assert_string_equal(w->dec_fairness, "default-flow");
    assert_int_equal(w->dec.priority, 3);
    assert_int_equal(w->dec.n_tokens, 64);
    assert_false(w->dec.shed);
    assert_false(w->dec.tokenize_failed);
    assert_true(w->dec.decide_seconds >= w->dec.sched_seconds);
    q.usage = (oai_usage){.found = true, .prompt_tokens = 64, .completion_tokens = 5};
    q.response_bytes = 321;
    route_complete(&q);
    route_complete(&q); /* once only */
    assert_int_equal(w->completions, 1);
    assert_string_equal(w->done_target, w->f->names[2]);
    assert_int_equal(w->done.http_status, 200);
    assert_true(w->done.usage_found);
    assert_int_equal(w->done.prompt_tokens, 64);
    assert_int_equal(w->done.completion_tokens, 5);
    assert_int_equal(w->done.request_bytes, strlen(TOKENS_BODY));
    assert_int_equal(w->done.response_bytes, 321);
    assert_true(w->done.seconds >= 0);
    route_stats st;
    route_get_stats(w->r, &st);
    assert_int_equal(st.completed, 1);
    route_req_free(&q);
}

/* A retry: the sched hears the failed attempt is over, the next-best endpoint (the one
 * holding fewer blocks) is picked with the first excluded, a second decision is
 * reported; a retry with every candidate excluded is 503. */
static bool not_endpoint_3(void *ctx, const sched_endpoint *ep) { return strcmp(ep->name, (const char *)ctx); }

static void retry_picks_the_next_best_and_filters_apply(void **state)
{
    world *w = *state;
    uint32_t t[64];
    for (uint32_t i = 0; i < 64; i++)
        t[i] = i + 1;
    cache_on(w, 2, t, 64);
    cache_on(w, 1, t, 32);
    route_req q;
    begin(&q, w, (const char *const[]){"x-request-id", "r", NULL});
    body(&q, TOKENS_BODY);
    assert_int_equal(route_decide(&q), 200);
    assert_string_equal(q.target, w->f->names[2]);
    assert_int_equal(w->f->eps[2].in_flight, 1);
    assert_int_equal(route_retry(&q), 200);
    assert_string_equal(q.target, w->f->names[1]);
    assert_int_equal(w->f->eps[2].in_flight, 0);
    assert_int_equal(w->f->eps[1].in_flight, 1);
    assert_int_equal(w->decisions, 2);
    assert_string_equal(w->dec_target, w->f->names[1]);
    route_complete(&q);
    assert_int_equal(w->f->eps[1].in_flight, 0);
    route_req_free(&q);

    /* the front door's filter: endpoint 3 refused, so the holder of 2 blocks of 4 wins */
    begin(&q, w, (const char *const[]){NULL});
    q.endpoint_ok = not_endpoint_3;
    q.endpoint_ctx = w->f->names[2];
    body(&q, TOKENS_BODY);
    assert_int_equal(route_decide(&q), 200);
    assert_string_equal(q.target, w->f->names[1]);
    route_complete(&q);
    route_req_free(&q);

    /* a subset of one: its retry has no candidate left */
    begin(&q, w, (const char *const[]){NULL});
    route_subset_clear(&q);
    route_subset_add(&q, w->f->names[0], strlen(w->f->names[0]));
    body(&q, TOKENS_BODY);
    assert_int_equal(route_decide(&q), 200);
    assert_int_equal(route_retry(&q), 503);
    assert_null(q.target);
    assert_int_equal(w->f->eps[0].in_flight, 0);
    route_complete(&q);
    route_req_free(&q);
}

static char score_lines[8][1024];
static int n_score_lines;

static void score_sink(void *ctx, const char *line)
{
    if (strstr(line, "\"msg\":\"Calculated score\"") && n_score_lines < 8)
        snprintf(score_lines[n_score_lines++], sizeof score_lines[0], "%s", line);
}

/* llm-d-router's V(4) line, byte for byte after the timestamp and caller: the request
 * logger's values (x-request-id, objectiveKey, incomingModelName, targetModelName,
 * priority), the plugin as "<name>/<type>", the endpoint without an empty namespace and
 * an integral score without a fraction, so the guide's grep and jq pipelines match. */
static void score_lines_are_llmds(void **state)
{
    world *w = *state;
    uint32_t t[64];
    for (uint32_t i = 0; i < 64; i++)
        t[i] = i + 1;
    cache_on(w, 2, t, 64);
    n_score_lines = 0;
    log_setup(4, score_sink, NULL);
    route_req q;
    begin(&q, w, (const char *const[]){"X-Request-Id", "req-9", "x-gateway-inference-objective", "chat", NULL});
    w->priority = 3;
    body(&q, TOKENS_BODY);
    assert_int_equal(route_decide(&q), 200);
    log_setup(0, NULL, NULL);
    assert_int_equal(n_score_lines, 8);   /* 2 scorers x 4 endpoints */
    const char *want_hit = "\"msg\":\"Calculated score\",\"x-request-id\":\"req-9\",\"objectiveKey\":\"chat\","
                           "\"incomingModelName\":\"m\",\"targetModelName\":\"m\",\"priority\":3,"
                           "\"plugin\":\"precise/precise-prefix-cache-scorer\",\"endpoint\":{\"name\":\"10.0.0.3:8000\"},"
                           "\"score\":1}";
    const char *want_miss = "\"plugin\":\"precise/precise-prefix-cache-scorer\",\"endpoint\":{\"name\":\"10.0.0.1:8000\"},"
                            "\"score\":0}";
    bool hit = false, miss = false;
    for (int i = 0; i < n_score_lines; i++) {
        const char *head = "{\"level\":\"Level(-4)\",\"ts\":\"";
        assert_true(!strncmp(score_lines[i], head, strlen(head)));
        hit |= strstr(score_lines[i], want_hit) != NULL;
        miss |= strstr(score_lines[i], want_miss) != NULL;
    }
    assert_true(hit);
    assert_true(miss);
    route_complete(&q);
    route_req_free(&q);
}

static void generates_a_uuid_and_reads_llmd_aliases(void **state)
{
    world *w = *state;
    route_req q;
    begin(&q, w,
          (const char *const[]){"x-gateway-inference-fairness-id", "gie", "x-llm-d-inference-fairness-id",
                                "llmd", NULL});
    assert_non_null(q.request_id);
    assert_int_equal(strlen(q.request_id), 36);
    assert_int_equal(q.request_id[14], '4'); /* version 4 */
    assert_string_equal(q.hdrs[q.n_hdrs - 1].key, "x-request-id");
    assert_string_equal(q.fairness_id, "llmd");
    route_req_free(&q);
}

static void bad_body_is_400_without_a_decision(void **state)
{
    world *w = *state;
    route_req q;
    begin(&q, w, (const char *const[]){NULL});
    body(&q, "{\"prompt\":\"no model\"}");
    assert_int_equal(route_decide(&q), 400);
    assert_int_equal(q.http_status, 400);
    assert_non_null(strstr(q.error, "model"));
    assert_null(q.target);
    assert_int_equal(w->decisions, 0);
    route_complete(&q);
    assert_int_equal(w->done.http_status, 400);
    assert_string_equal(w->done_target, "");
    route_req_free(&q);
}

static void empty_subset_is_503_and_saturation_sheds(void **state)
{
    world *w = *state;
    route_req q;
    begin(&q, w, (const char *const[]){NULL});
    route_subset_clear(&q);
    route_subset_add(&q, "10.9.9.9:1", 10);
    body(&q, TOKENS_BODY);
    assert_int_equal(route_decide(&q), 503);
    assert_string_equal(q.error, "failed to find candidate pods for serving the request: no eligible endpoint in "
                                 "the subset hint");
    assert_int_equal(w->decisions, 0);
    route_req_free(&q);

    w->saturated = true, w->priority = -1;
    begin(&q, w, (const char *const[]){"x-gateway-inference-objective", "batch", NULL});
    body(&q, TOKENS_BODY);
    assert_int_equal(route_decide(&q), 429);
    assert_string_equal(q.error, "system saturated, sheddable request dropped");
    assert_int_equal(w->decisions, 1);
    assert_true(w->dec.shed);
    assert_string_equal(w->dec_target, "");
    route_req_free(&q);
}

static void subset_by_ip_and_headers_only(void **state)
{
    world *w = *state;
    route_req q;
    begin(&q, w, (const char *const[]){NULL});
    route_subset_clear(&q);
    route_subset_add(&q, "10.0.0.2", 8); /* an IP alone matches any port */
    assert_int_equal(route_decide_headers_only(&q), 200);
    assert_string_equal(q.target, w->f->names[1]);
    route_req_free(&q);
}

static void body_over_the_limit_is_refused(void **state)
{
    world *w = *state;
    route_req q;
    begin(&q, w, (const char *const[]){NULL});
    static uint8_t big[4097];
    assert_false(route_body_append(&q, big, sizeof big));
    assert_true(route_body_append(&q, big, 4096));
    assert_false(route_body_append(&q, big, 1));
    route_req_free(&q);
}

/* An empty body piece (a decoded empty chunk has NULL data) appends nothing; copying
 * from NULL, even 0 bytes, is undefined and UBSan stops on it. */
static void empty_piece_appends_nothing(void **state)
{
    world *w = *state;
    route_req q;
    begin(&q, w, (const char *const[]){NULL});
    assert_true(route_body_append(&q, NULL, 0));
    assert_int_equal(q.body_len, 0);
    body(&q, TOKENS_BODY);
    assert_true(route_body_append(&q, NULL, 0));
    assert_int_equal(route_decide(&q), 200);
    route_req_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(routes_to_the_holder_and_reports_both_records, setup, teardown),
        cmocka_unit_test_setup_teardown(retry_picks_the_next_best_and_filters_apply, setup, teardown),
        cmocka_unit_test_setup_teardown(score_lines_are_llmds, setup, teardown),
        cmocka_unit_test_setup_teardown(generates_a_uuid_and_reads_llmd_aliases, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_body_is_400_without_a_decision, setup, teardown),
        cmocka_unit_test_setup_teardown(empty_subset_is_503_and_saturation_sheds, setup, teardown),
        cmocka_unit_test_setup_teardown(subset_by_ip_and_headers_only, setup, teardown),
        cmocka_unit_test_setup_teardown(body_over_the_limit_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(empty_piece_appends_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
