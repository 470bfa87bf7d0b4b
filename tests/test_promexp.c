/* test_promexp: the /metrics exposition over real HTTP on loopback -- exact sample lines
 * for request counters, error codes, cumulative histogram buckets, label escaping, the
 * series bound, pool gauges from the endpoint set, index sizes from a kvindex, and the
 * plugin durations and lookup hit counters a scheduler's observer feeds. */
#include <curl/curl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "endpoints.h"
#include "promexp.h"
#include "support/sched_fixture.h"

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

static long get(int port, const char *path, body *b)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    long code = 0;
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    return code;
}

static void has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p += n)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || !p[n]))
            return;
    fail_msg("missing line: %s", line);
}

static void test_exposition(void **state)
{
    (void)state;
    epset *eps = epset_new(0, NULL, NULL, NULL);
    assert_int_equal(epset_parse_list(eps, "10.0.0.1:8000,10.0.0.2:8000", "t", NULL), KV_OK);
    sched_metrics m = {.valid = true, .waiting = 3, .kv_usage = 0.5};
    assert_true(epset_set_metrics(eps, "10.0.0.1:8000", &m));
    kvindex_config ic = {.capacity = 100, .max_endpoints = 8};
    kvindex *ix = kvindex_new(&ic, NULL);
    int slot = kvindex_endpoint_add(ix, "10.0.0.1:8000", NULL);
    uint64_t keys[3] = {1, 2, 3};
    assert_int_equal(kvindex_store(ix, slot, KVTIER_GPU, NULL, 0, keys, 3, NULL), KV_OK);

    sched_kvsource kvs = {.name = "pp", .index = ix}, *kvss[] = {&kvs};
    promexp_sources src = {.pool_name = "pool-a", .endpoints = eps, .kvsources = kvss, .n_kvsources = 1};
    kv_err err = {0};
    promexp *p = promexp_start(0, &src, &err);
    if (!p)
        fail_msg("%s", err.msg);
    assert_true(promexp_port(p) > 0);
    promexp_observe_request(p, "m", NULL, 200, 0.01);
    promexp_observe_request(p, "m", "m", 200, 0.3);
    promexp_observe_request(p, "m", "m", 429, 0);
    promexp_observe_request(p, "a\"b\\c\nd", "t", 400, 0);
    promexp_observe_schedule(p, 0.00015, true);
    promexp_observe_schedule(p, 0.5, false);

    body b = {0};
    assert_int_equal(get(promexp_port(p), "/metrics", &b), 200);
    has_line(b.data, "# TYPE inference_objective_request_total counter");
    has_line(b.data, "inference_objective_request_total{model_name=\"m\",target_model_name=\"m\"} 3");
    has_line(b.data, "inference_objective_request_error_total{model_name=\"m\",target_model_name=\"m\","
                     "error_code=\"InferencePoolResourceExhausted\"} 1");
    has_line(b.data, "inference_objective_request_error_total{model_name=\"a\\\"b\\\\c\\nd\",target_model_name=\"t\","
                     "error_code=\"BadRequest\"} 1");
    has_line(b.data, "inference_objective_request_duration_seconds_bucket{model_name=\"m\",target_model_name=\"m\",le=\"0.005\"} 0");
    has_line(b.data, "inference_objective_request_duration_seconds_bucket{model_name=\"m\",target_model_name=\"m\",le=\"0.025\"} 1");
    has_line(b.data, "inference_objective_request_duration_seconds_bucket{model_name=\"m\",target_model_name=\"m\",le=\"0.2\"} 1");
    has_line(b.data, "inference_objective_request_duration_seconds_bucket{model_name=\"m\",target_model_name=\"m\",le=\"0.4\"} 2");
    has_line(b.data, "inference_objective_request_duration_seconds_bucket{model_name=\"m\",target_model_name=\"m\",le=\"+Inf\"} 2");
    has_line(b.data, "inference_objective_request_duration_seconds_sum{model_name=\"m\",target_model_name=\"m\"} 0.31");
    has_line(b.data, "inference_objective_request_duration_seconds_count{model_name=\"m\",target_model_name=\"m\"} 2");
    has_line(b.data, "inference_extension_scheduler_e2e_duration_seconds_bucket{le=\"0.0001\"} 0");
    has_line(b.data, "inference_extension_scheduler_e2e_duration_seconds_bucket{le=\"0.0002\"} 1");
    has_line(b.data, "inference_extension_scheduler_e2e_duration_seconds_bucket{le=\"0.1\"} 1");
    has_line(b.data, "inference_extension_scheduler_e2e_duration_seconds_bucket{le=\"+Inf\"} 2");
    has_line(b.data, "inference_extension_scheduler_attempts_total{status=\"failure\"} 1");
    has_line(b.data, "inference_pool_ready_pods{name=\"pool-a\"} 2");
    has_line(b.data, "inference_pool_average_kv_cache_utilization{name=\"pool-a\"} 0.5");
    has_line(b.data, "inference_pool_average_queue_size{name=\"pool-a\"} 3");
    has_line(b.data, "kvcache_index_size_blocks 3");
    has_line(b.data, "kvcache_index_admissions_total 3");   /* keys, not store calls */
    assert_null(strstr(b.data, "scorer="));   /* one precise scorer: llm-d-kv-cache's unlabelled series */
    assert_null(strstr(b.data, "kvroute_kv_events_"));   /* no ingest given */
    free(b.data);

    b = (body){0};
    assert_int_equal(get(promexp_port(p), "/other", &b), 404);
    free(b.data);

    /* Hostile label values cannot grow the table without bound. */
    for (int i = 0; i < 1000; i++) {
        char model[32];
        snprintf(model, sizeof model, "m%d", i);
        promexp_observe_request(p, model, NULL, 200, 1);
    }
    b = (body){0};
    assert_int_equal(get(promexp_port(p), "/metrics", &b), 200);
    has_line(b.data, "inference_objective_request_total{model_name=\"_other\",target_model_name=\"_other\"} 747");
    free(b.data);

    assert_string_equal(promexp_error_code(503), "ServiceUnavailable");
    assert_string_equal(promexp_error_code(418), "Unknown");
    promexp_stop(p);
    kvindex_free(ix);
    epset_free(eps);
}

static void test_busy_port(void **state)
{
    (void)state;
    promexp *a = promexp_start(0, NULL, NULL);
    assert_non_null(a);
    kv_err err = {0};
    assert_null(promexp_start(promexp_port(a), NULL, &err));
    assert_int_equal(err.code, KV_EIO);
    assert_non_null(strstr(err.msg, "--metrics-port"));
    promexp_stop(a);
}

static char *render(promexp *p)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    promexp_write(p, f);
    fclose(f);
    return text;
}

/* What an exporter over src alone renders (it is stopped before the sources are). */
static char *render_sources(const promexp_sources *src)
{
    promexp *p = promexp_start(-1, src, NULL);
    assert_non_null(p);
    char *text = render(p);
    promexp_stop(p);
    return text;
}

/* The kv-event counters of a running ingest, labelled by reason and event type. */
static void test_ingest_counters(void **state)
{
    (void)state;
    epset *eps = epset_new(0, NULL, NULL, NULL);
    kvindex_config ic = {.capacity = 100, .max_endpoints = 8};
    kvindex *ix = kvindex_new(&ic, NULL);
    sched_kvsource kvs = {.index = ix}, *srcs[] = {&kvs};
    ingest_config cfg = {.sources = srcs, .n_sources = 1, .endpoints = eps, .concurrency = 1};
    assert_int_equal(blockkeys_init(&kvs.keys, BLOCKKEYS_FNV64A_CBOR, 16, "", NULL), KV_OK);
    snprintf(cfg.zmq_endpoint, sizeof cfg.zmq_endpoint, "tcp://127.0.0.1:*");
    snprintf(cfg.topic_filter, sizeof cfg.topic_filter, "kv@");
    kv_err err = {0};
    ingest *g = ingest_start(&cfg, &err);
    if (!g)
        fail_msg("%s", err.msg);
    char *text = render_sources(&(promexp_sources){.ingests = &g, .n_ingests = 1});
    has_line(text, "# TYPE kvroute_kv_events_batches_total counter");
    has_line(text, "kvroute_kv_events_messages_total 0");
    has_line(text, "kvroute_kv_events_events_total{type=\"BlockStored\"} 0");
    has_line(text, "kvroute_kv_events_decode_errors_total{reason=\"truncated\"} 0");
    has_line(text, "kvroute_kv_events_stale_endpoints 0");
    has_line(text, "kvroute_kv_events_queue_limit_bytes 67108864");   /* the 64 MiB default */
    has_line(text, "kvroute_kv_events_queue_dropped_total 0");
    assert_null(strstr(text, "inference_pool_ready_pods"));   /* no endpoint set given */
    free(text);
    ingest_stop(g);
    kvindex_free(ix);
    epset_free(eps);
}

/* The scraper's counters: accepted scrapes, and failures by reason (value: a NaN,
 * infinite or negative gauge). */
static void test_scrape_counters(void **state)
{
    (void)state;
    epset *eps = epset_new(0, NULL, NULL, NULL);
    scrape_config sc = {.endpoints = eps};
    scraper *s = scrape_start(&sc, NULL);
    assert_non_null(s);
    char *text = render_sources(&(promexp_sources){.scrape = s});
    has_line(text, "# TYPE kvroute_metrics_scrapes_total counter");
    has_line(text, "kvroute_metrics_scrapes_total 0");
    has_line(text, "# TYPE kvroute_metrics_scrape_failures_total counter");
    has_line(text, "kvroute_metrics_scrape_failures_total{reason=\"transfer\"} 0");
    has_line(text, "kvroute_metrics_scrape_failures_total{reason=\"value\"} 0");
    free(text);
    scrape_stop(s);
    epset_free(eps);
}

/* Plugin durations per (extension point, plugin) as the observer reports them, and the
 * lookup metrics KVC defines: per index lookup, the longest candidate match in blocks. */
static void test_plugin_and_lookup_metrics(void **state)
{
    (void)state;
    fx *f = fx_new("plugins:\n- type: precise-prefix-cache-scorer\n  name: pp\n"
                   "  parameters: {tokenProcessorConfig: {blockSize: 4}}\n- type: queue-scorer\n"
                   "schedulingProfiles:\n- name: main\n  plugins: [{pluginRef: pp, weight: 3}, "
                   "{pluginRef: queue-scorer}]\n",
                   3, 1);
    assert_non_null(f);
    void *svc[1];
    assert_int_equal(sched_services(f->s, "kvsource", svc, 1), 1);
    sched_kvsource *src = svc[0];
    uint32_t tok[16];
    for (int i = 0; i < 16; i++)
        tok[i] = 7 + (uint32_t)i;
    uint64_t keys[4];
    blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tok, 16, NULL, 0, NULL, keys, 4);
    kv_err err = {0};
    int s1 = kvindex_endpoint_add(src->index, f->names[1], &err), s2 = kvindex_endpoint_add(src->index, f->names[2], &err);
    assert_int_equal(kvindex_store(src->index, s1, KVTIER_GPU, NULL, 0, keys, 3, &err), KV_OK);
    assert_int_equal(kvindex_store(src->index, s2, KVTIER_GPU, NULL, 0, keys, 1, &err), KV_OK);

    promexp_sources ps = {.kvsources = &src, .n_kvsources = 1};
    promexp *p = promexp_start(-1, &ps, NULL);
    assert_non_null(p);
    assert_int_equal(promexp_observe_sched(p, f->s, &err), KV_OK);
    assert_int_equal(promexp_observe_sched(p, f->s, &err), KV_ESTATE);
    sched_request r = fx_tokens("a", tok, 16), shorter = fx_tokens("b", tok, 3); /* 4 blocks; none */
    assert_ptr_equal(fx_pick(f, &r), &f->eps[1]);
    assert_ptr_equal(fx_pick(f, &r), &f->eps[1]);
    assert_non_null(fx_pick(f, &shorter));

    char *text = render(p);
    has_line(text, "# TYPE inference_extension_plugin_duration_seconds histogram");
    static const char *const series[][2] = {
        {"ProfilePicker", "single-profile-handler\",plugin_name=\"single-profile-handler"},
        {"Scorer", "precise-prefix-cache-scorer\",plugin_name=\"pp"},
        {"Scorer", "queue-scorer\",plugin_name=\"queue-scorer"},
        {"Picker", "max-score-picker\",plugin_name=\"max-score-picker"},
        {"ProcessProfilesResults", "single-profile-handler\",plugin_name=\"single-profile-handler"},
    };
    for (size_t i = 0; i < sizeof series / sizeof series[0]; i++) {
        char line[256];
        snprintf(line, sizeof line,
                 "inference_extension_plugin_duration_seconds_count{extension_point=\"%s\",plugin_type=\"%s\"} 3",
                 series[i][0], series[i][1]);
        has_line(text, line);
        snprintf(line, sizeof line,
                 "inference_extension_plugin_duration_seconds_bucket{extension_point=\"%s\",plugin_type=\"%s\","
                 "le=\"+Inf\"} 3",
                 series[i][0], series[i][1]);
        has_line(text, line);
    }
    assert_null(strstr(text, "extension_point=\"Filter\""));   /* no filter configured, no series */
    /* two lookups (the 3-token request has no block), longest match 3 blocks each */
    has_line(text, "kvcache_index_lookup_requests_total 2");
    has_line(text, "kvcache_index_lookup_hits_total 6");
    has_line(text, "kvcache_index_max_pod_hit_count_total 6");
    has_line(text, "kvcache_index_lookup_latency_seconds_count 2");
    has_line(text, "kvcache_index_lookup_latency_seconds_bucket{le=\"+Inf\"} 2");
    free(text);
    promexp_stop(p);
    fx_free(f);
}

/* Several precise scorers: every index and every KV-event subscription has its own
 * series, labelled by plugin name (a shared subscription by the scorers it feeds), each
 * HELP and TYPE once; each scorer's lookups count in its own series. */
static void test_several_precise_scorers(void **state)
{
    (void)state;
#define EVENTS(topic) "kvEventsConfig: {discoverPods: false, zmqEndpoint: 'tcp://127.0.0.1:*', topicFilter: " topic "}"
    fx *f = fx_new("plugins:\n"
                   "- type: precise-prefix-cache-scorer\n  name: pa\n"
                   "  parameters: {tokenProcessorConfig: {blockSize: 4}, " EVENTS("kv@") "}\n"
                   "- type: precise-prefix-cache-scorer\n  name: pb\n"
                   "  parameters: {tokenProcessorConfig: {blockSize: 4}, " EVENTS("kv@") "}\n"
                   "- type: precise-prefix-cache-scorer\n  name: pc\n"
                   "  parameters: {tokenProcessorConfig: {blockSize: 4}, " EVENTS("kv2@") "}\n"
                   "schedulingProfiles:\n- name: main\n"
                   "  plugins: [{pluginRef: pa}, {pluginRef: pb}, {pluginRef: pc}]\n",
                   3, 1);
#undef EVENTS
    assert_non_null(f);
    sched_kvsource *srcs[3];
    assert_int_equal(pps_kvsources(f->s, srcs, 3), 3);
    assert_string_equal(srcs[0]->name, "pa");
    assert_string_equal(srcs[2]->name, "pc");
    /* pa and pb declare the same kvEventsConfig (one subscription), pc another */
    kv_err err = {0};
    epset *eps = epset_new(0, NULL, NULL, NULL);
    assert_int_equal(epset_parse_list(eps, "10.0.0.1:8000,10.0.0.2:8000,10.0.0.3:8000", "t", NULL), KV_OK);
    ingest *ings[3];
    size_t n_ing = 0;
    assert_int_equal(ingest_start_sources(srcs, 3, eps, NULL, ings, &n_ing, &err), KV_OK);
    assert_int_equal(n_ing, 2);
    /* pa's index holds the request's first 3 blocks on endpoint 1, pb's its first on 2 */
    uint32_t tok[16];
    for (int i = 0; i < 16; i++)
        tok[i] = 7 + (uint32_t)i;
    uint64_t keys[4];
    blockkeys_compute(&srcs[0]->keys, blockkeys_root(&srcs[0]->keys, "m"), tok, 16, NULL, 0, NULL, keys, 4);
    int sa = kvindex_endpoint_add(srcs[0]->index, f->names[1], &err);
    int sb = kvindex_endpoint_add(srcs[1]->index, f->names[2], &err);
    assert_int_equal(kvindex_store(srcs[0]->index, sa, KVTIER_GPU, NULL, 0, keys, 3, &err), KV_OK);
    assert_int_equal(kvindex_store(srcs[1]->index, sb, KVTIER_GPU, NULL, 0, keys, 1, &err), KV_OK);

    promexp_sources ps = {.kvsources = srcs, .n_kvsources = 3, .ingests = ings, .n_ingests = n_ing};
    promexp *p = promexp_start(-1, &ps, NULL);
    assert_non_null(p);
    assert_int_equal(promexp_observe_sched(p, f->s, &err), KV_OK);
    sched_request r = fx_tokens("a", tok, 16);
    assert_non_null(fx_pick(f, &r));
    char *text = render(p);
    has_line(text, "kvcache_index_size_blocks{scorer=\"pa\"} 3");
    has_line(text, "kvcache_index_size_blocks{scorer=\"pb\"} 1");
    has_line(text, "kvcache_index_size_blocks{scorer=\"pc\"} 0");
    has_line(text, "kvcache_index_admissions_total{scorer=\"pa\"} 3");   /* keys, not store calls */
    has_line(text, "kvcache_index_admissions_total{scorer=\"pc\"} 0");
    has_line(text, "kvcache_index_lookup_hits_total{scorer=\"pa\"} 3");
    has_line(text, "kvcache_index_lookup_hits_total{scorer=\"pb\"} 1");
    has_line(text, "kvcache_index_lookup_hits_total{scorer=\"pc\"} 0");
    has_line(text, "kvcache_index_max_pod_hit_count_total{scorer=\"pa\"} 3");
    has_line(text, "kvcache_index_lookup_latency_seconds_count{scorer=\"pa\"} 1");
    has_line(text, "kvcache_index_lookup_latency_seconds_bucket{scorer=\"pb\",le=\"+Inf\"} 1");
    has_line(text, "kvroute_kv_events_messages_total{scorer=\"pa,pb\"} 0");
    has_line(text, "kvroute_kv_events_messages_total{scorer=\"pc\"} 0");
    has_line(text, "kvroute_kv_events_events_total{scorer=\"pc\",type=\"BlockStored\"} 0");
    has_line(text, "kvroute_kv_events_decode_errors_total{scorer=\"pa,pb\",reason=\"truncated\"} 0");
    has_line(text, "kvroute_kv_events_queue_limit_bytes{scorer=\"pc\"} 67108864");
    /* no unlabelled series beside them, and one HELP and TYPE per name */
    assert_null(strstr(text, "\nkvcache_index_size_blocks "));
    assert_null(strstr(text, "\nkvroute_kv_events_messages_total "));
    const char *once[] = {"# TYPE kvcache_index_size_blocks gauge", "# TYPE kvcache_index_lookup_latency_seconds histogram",
                          "# TYPE kvroute_kv_events_events_total counter", "# HELP kvroute_kv_events_lag_seconds "};
    for (size_t i = 0; i < sizeof once / sizeof *once; i++) {
        const char *at = strstr(text, once[i]);
        assert_non_null(at);
        assert_null(strstr(at + 1, once[i]));
    }
    free(text);
    promexp_stop(p);
    for (size_t i = 0; i < n_ing; i++)
        ingest_stop(ings[i]);
    epset_free(eps);
    fx_free(f);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_exposition),
    cmocka_unit_test(test_ingest_counters),
    cmocka_unit_test(test_scrape_counters),
    cmocka_unit_test(test_plugin_and_lookup_metrics),
    cmocka_unit_test(test_several_precise_scorers),
    cmocka_unit_test(test_busy_port),
};

int main(void) { return cmocka_run_group_tests(tests, NULL, NULL); }
