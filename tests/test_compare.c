/* test_compare: ./sim compare's sim-versus-live table, golden. A runs.db written through
 * simdb (runs, live_pods) with hand-set stage and request rows: per router the latest
 * simulated run and the latest live run (`<router>-live` or `<router>`, config an http://
 * URL) are paired, an older live run is ignored, the report stage's figures and the
 * whole run's hit rates are printed with their differences (the hit rate in points), the
 * time base follows the scenario's speedup, a live run whose pods' counters were not all
 * read has no measured hit rate, and a router without a live run is named and makes the
 * call fail with KV_ENOTFOUND. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "compare.h"
#include "scenario.h"
#include "simdb.h"

static int64_t add_run(simdb *db, const char *router, const char *config, const simdb_live_pod *pods, size_t n)
{
    kv_err err = {0};
    int64_t id;
    simdb_run_info info = {.scenario = "demo-live-small", .router = router, .config = config, .seed = 7};
    assert_int_equal(simdb_begin_run(db, &info, &id, &err), KV_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(simdb_add_live_pod(db, id, &pods[i], &err), KV_OK);
    sim_run run = {.router = router};
    lc_run m = {0};
    assert_int_equal(simdb_end_run(db, id, &run, &m, &err), KV_OK);
    return id;
}

/* stage 0 (not reported) and stage 1 rows, and two requests: prompt 1000 each, cached as given */
static void add_figures(const char *path, int64_t id, double rps, double ttft, int cached0, int cached1)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO stages(run_id, stage, rate, duration, requests_per_sec, output_tokens_per_sec, ttft_mean, "
             "ttft_p90, latency_mean) VALUES(%lld, 0, 30, 2, 999, 999, 999, 999, 999), "
             "(%lld, 1, 60, 3, %.17g, %.17g, %.17g, %.17g, %.17g);"
             "INSERT INTO requests(run_id, id, stage, prompt_tokens, cached_tokens, failed) VALUES"
             "(%lld, 0, 0, 1000, %d, 0), (%lld, 1, 1, 1000, %d, 0), (%lld, 2, 1, 1000, 1000, 1);",
             (long long)id, (long long)id, rps, rps * 8, ttft, 2 * ttft, 4 * ttft, (long long)id, cached0,
             (long long)id, cached1, (long long)id);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static char *print_table(const scenario *s, const char *path, int want_rc)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    kv_err err = {0};
    assert_int_equal(compare_print(f, s, path, &err), want_rc);
    fclose(f);
    return text;
}

static void test_table(void **state)
{
    (void)state;
    char path[] = "/tmp/test_compare_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    kv_err err = {0};
    simdb *db = simdb_open(path, &err);
    assert_non_null(db);
    simdb_live_pod pods[3] = {
        {.pod = 0, .address = "127.0.0.1:8000", .counters_ok = true, .prefix_cache_queries = 1000, .prefix_cache_hits = 700, .routed = 1},
        {.pod = 1, .address = "127.0.0.1:8001", .counters_ok = true, .prefix_cache_queries = 1000, .prefix_cache_hits = 800, .routed = 1},
        {.pod = 2, .address = "127.0.0.1:8002", .counters_ok = true, .prefix_cache_queries = 0, .prefix_cache_hits = 0, .routed = 0},
    };
    int64_t k_sim = add_run(db, "k8s-service", "preset:k8s-service", NULL, 0);
    int64_t k_old = add_run(db, "k8s-service-live", "http://127.0.0.1:9", pods, 3);
    int64_t k_live = add_run(db, "k8s-service-live", "http://127.0.0.1:9000", pods, 3);
    int64_t p_sim = add_run(db, "llm-d-precise", "preset:llm-d-precise", NULL, 0);
    pods[2].counters_ok = false;      /* one pod unread: no measured rate */
    int64_t p_live = add_run(db, "llm-d-precise", "http://127.0.0.1:9001", pods, 3);
    simdb_close(db);
    add_figures(path, k_sim, 60.5, 0.002, 500, 900);
    add_figures(path, k_old, 1, 1, 0, 0);
    add_figures(path, k_live, 60.25, 0.003, 0, 0);
    add_figures(path, p_sim, 60.5, 0.001, 800, 1000);
    add_figures(path, p_live, 59.5, 0.001, 0, 0);

    scenario *s = scn_load("tests/data/scenarios/demo-live-small.yaml", "policies/presets", &err);
    assert_non_null(s);
    char *text = print_table(s, path, KV_OK);
    assert_string_equal(text,
        "Sim versus live: demo-live-small, stage 1 (rate 60 req/s for 3 s); prefix-cache hit rate over the whole run\n"
        "Time base: wall clock at speedup 20 (the pods' step times are the model's / 20): the model's times are 20 x "
        "these, its rates / 20; a router's own time does not scale\n"
        "Router           Metric                        Simulated     Measured   Δ (meas - sim)       Δ%\n"
        "k8s-service      Requests/sec                     60.500       60.250           -0.250    -0.4%\n"
        "                 Output tokens/sec                 484.0        482.0             -2.0    -0.4%\n"
        "                 TTFT mean (s)                    0.0020       0.0030          +0.0010   +50.0%\n"
        "                 TTFT p90 (s)                     0.0040       0.0060          +0.0020   +50.0%\n"
        "                 E2E latency mean (s)             0.0080       0.0120          +0.0040   +50.0%\n"
        "                 Prefix-cache hit rate (%)          70.0         75.0         +5.0 pts\n"
        "llm-d-precise    Requests/sec                     60.500       59.500           -1.000    -1.7%\n"
        "                 Output tokens/sec                 484.0        476.0             -8.0    -1.7%\n"
        "                 TTFT mean (s)                    0.0010       0.0010          +0.0000    +0.0%\n"
        "                 TTFT p90 (s)                     0.0020       0.0020          +0.0000    +0.0%\n"
        "                 E2E latency mean (s)             0.0040       0.0040          +0.0000    +0.0%\n"
        "                 Prefix-cache hit rate (%)          90.0            -                -\n");
    free(text);

    /* a scenario of speedup 1 says so; a router with no live run is named and fails the call */
    s->cluster.speedup = 1;
    s->routers[1].name = "sglang";
    text = print_table(s, path, KV_ENOTFOUND);
    assert_non_null(strstr(text, "\nTime base: wall clock, speedup 1 (the model's own times)\n"));
    assert_non_null(strstr(text, "\nsglang           Requests/sec                          -            -                -        -\n"));
    assert_non_null(strstr(text, "\nsglang: no simulated run in /tmp/test_compare_"));
    free(text);
    s->routers[1].name = "llm-d-precise";
    scn_free(s);

    /* a database that is not there */
    unlink(path);
    s = scn_load("tests/data/scenarios/demo-live-small.yaml", "policies/presets", &err);
    FILE *f = fopen("/dev/null", "w");
    assert_int_equal(compare_print(f, s, path, &err), KV_EIO);
    fclose(f);
    assert_non_null(strstr(err.msg, path));
    scn_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
