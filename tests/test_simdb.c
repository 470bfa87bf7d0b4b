/* test_simdb: a run written to runs.db and read back with plain SQL (every table, the
 * decision rows from a scheduler trace, the headline metrics equal to lc_compute's),
 * the documented queries run, errors for misuse, and two writes giving identical bytes. */
#define _GNU_SOURCE
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

#include "simdb.h"

#define US(s) ((sim_time)((s) * 1000000.0 + 0.5))

static const sim_time tt0[] = {US(1.5), US(1.6)};
static const sim_time tt1[] = {US(2.2), US(2.4)};
static sim_request_record recs[] = {
    {.id = 0, .stage = 0, .t_scheduled = US(1.0), .t_start = US(1.0), .t_first_token = US(1.5), .t_end = US(2.0),
     .prompt_tokens = 100, .output_tokens = 1, .cached_tokens = 64, .endpoint = 1, .token_times = tt0,
     .n_token_times = 2, .prefix_group = 3},
    {.id = 1, .stage = 0, .t_scheduled = US(2.0), .t_start = US(2.0), .t_first_token = US(2.2), .t_end = US(3.0),
     .prompt_tokens = 50, .output_tokens = 1, .preemptions = 1, .endpoint = 0, .token_times = tt1,
     .n_token_times = 2, .prefix_group = UINT32_MAX},
};
static sim_stage_info stages[] = {{.index = 0, .rate = 2, .duration_s = 1, .num_requests = 2, .t_begin = US(1.0),
                                   .t_end = US(3.0)}};
static sim_server_sample samples[] = {
    {.t = US(0.05), .server = 0, .waiting = 1, .running = 2, .kv_usage = 0.25, .hit_rate = 0.5, .preemptions = 0},
    {.t = US(0.05), .server = 1, .waiting = 0, .running = 1, .kv_usage = 0.75, .hit_rate = 0.0, .preemptions = 3},
};
static sim_run fixture = {.router = "precise", .config_path = "presets/precise.yaml", .requests = recs,
                          .n_requests = 2, .stages = stages, .n_stages = 1, .samples = samples, .n_samples = 2,
                          .events_delivered = 42};

static const sched_plugin_type prefix_type = {.type = "precise-prefix-cache-scorer", .kind = SCHED_SCORER};
static const sched_plugin_type queue_type = {.type = "queue-scorer", .kind = SCHED_SCORER};

/* Writes the fixture (with one traced decision for request 0) to path. */
static void write_db(const char *path)
{
    sched_plugin prefix = {.type = &prefix_type, .name = "prefix"}, queue = {.type = &queue_type, .name = NULL};
    sched_endpoint eps[2] = {{.id = 0, .name = "10.0.0.1:8000"}, {.id = 1, .name = "10.0.0.2:8000"}};
    sched_trace_score scores[] = {
        {.profile = "default", .plugin = &prefix, .ep = &eps[0], .score = 0.0, .weight = 3},
        {.profile = "default", .plugin = &prefix, .ep = &eps[1], .score = 0.5, .weight = 3},
        {.profile = "default", .plugin = &queue, .ep = &eps[0], .score = 1.0, .weight = 1},
        {.profile = "default", .plugin = &queue, .ep = &eps[1], .score = 0.0, .weight = 1},
    };
    sched_scored totals[] = {{.ep = &eps[0], .score = 1.0}, {.ep = &eps[1], .score = 1.5}};
    sched_trace t = {.scores = scores, .n_scores = 4, .totals = totals, .n_totals = 2};
    sched_result res = {.profile = "default", .targets = {&eps[1]}, .n_targets = 1};

    kv_err e = {0};
    simdb *db = simdb_open(path, &e);
    assert_non_null(db);
    simdb_run_info info = {.scenario = "small", .router = "precise", .config = "presets/precise.yaml", .seed = 7};
    int64_t run_id = 0;
    assert_int_equal(simdb_begin_run(db, &info, &run_id, &e), KV_OK);
    assert_int_equal(run_id, 1);
    assert_int_equal(simdb_begin_run(db, &info, &run_id, &e), KV_ESTATE);
    assert_int_equal(simdb_add_decision(db, run_id, 0, &t, &res, &e), KV_OK);
    lc_run m;
    assert_int_equal(lc_run_compute(&fixture, &m, &e), KV_OK);
    assert_int_equal(simdb_end_run(db, run_id, &fixture, &m, &e), KV_OK);
    assert_int_equal(simdb_end_run(db, run_id, &fixture, &m, &e), KV_ESTATE);
    assert_non_null(strstr(e.msg, path));
    lc_run_free(&m);
    simdb_close(db);
}

static double q1(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    double v = sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
    return v;
}

static char dir[] = "/tmp/test_simdb_XXXXXX";

static void test_round_trip(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/runs.db", dir);
    write_db(path);
    write_db(path); /* replaces, never appends */
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_true(q1(db, "SELECT count(*) FROM runs") == 1);
    assert_true(q1(db, "SELECT seed FROM runs WHERE router='precise' AND scenario='small'") == 7);
    assert_true(q1(db, "SELECT events_delivered FROM runs") == 42);
    assert_true(q1(db, "SELECT created IS NULL FROM runs") == 1);
    /* stage headline metrics equal the report's: total_time 3.0 - 1.0, 2 successes */
    assert_true(q1(db, "SELECT requests_per_sec FROM stages WHERE stage=0") == 2 / 2.0);
    assert_true(q1(db, "SELECT ttft_mean FROM stages WHERE stage=0") == (0.5 + 0.2) / 2);
    assert_true(q1(db, "SELECT cached_tokens FROM stages") == 64);
    assert_true(q1(db, "SELECT count(*) FROM requests") == 2);
    assert_true(q1(db, "SELECT t_first_token - t_start FROM requests WHERE id=0") == 0.5);
    assert_true(q1(db, "SELECT prefix_group FROM requests WHERE id=0") == 3);
    assert_true(q1(db, "SELECT prefix_group IS NULL FROM requests WHERE id=1") == 1);
    assert_true(q1(db, "SELECT preemptions FROM requests WHERE id=1") == 1);
    /* both request indexes, whichever way the writer builds them, hold every row */
    assert_true(q1(db, "SELECT count(*) FROM sqlite_master WHERE type='index' AND name LIKE 'requests_by_%'") == 2);
    assert_true(q1(db, "SELECT count(*) FROM requests INDEXED BY requests_by_endpoint WHERE run_id=1 AND endpoint=1") == 1);
    assert_true(q1(db, "SELECT count(*) FROM requests INDEXED BY requests_by_stage WHERE run_id=1 AND stage=0") == 2);
    assert_true(q1(db, "SELECT count(*) FROM samples") == 2);
    assert_true(q1(db, "SELECT kv_usage FROM samples WHERE server=1") == 0.75);
    /* decisions: 4 scorer rows + 2 totals; endpoint 1 picked */
    assert_true(q1(db, "SELECT count(*) FROM decisions WHERE request_id=0") == 6);
    assert_true(q1(db, "SELECT count(*) FROM decisions WHERE picked=1 AND endpoint<>1") == 0);
    assert_true(q1(db, "SELECT score FROM decisions WHERE plugin='total' AND endpoint=1") == 1.5);
    assert_true(q1(db, "SELECT weight IS NULL FROM decisions WHERE plugin='total' LIMIT 1") == 1);
    assert_true(q1(db, "SELECT count(*) FROM decisions WHERE plugin='precise-prefix-cache-scorer/prefix'") == 2);
    assert_true(q1(db, "SELECT count(*) FROM decisions WHERE plugin='queue-scorer/queue-scorer'") == 2);
    /* endpoint numbers have names, one row each however many decisions name them */
    assert_true(q1(db, "SELECT count(*) FROM endpoints WHERE run_id=1") == 2);
    assert_true(q1(db, "SELECT count(*) FROM decisions d JOIN endpoints e USING(run_id, endpoint) "
                       "WHERE d.picked=1 AND e.name='10.0.0.2:8000'") == 3);
    /* a documented query: per-endpoint request share */
    assert_true(q1(db, "SELECT 100.0 * count(*) / (SELECT count(*) FROM requests r2 WHERE r2.run_id = r.run_id) "
                       "FROM requests r WHERE endpoint=1 GROUP BY run_id, endpoint") == 50.0);
    sqlite3_close(db);
    unlink(path);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* A runs.db written before the endpoints table existed can still be appended to: the
 * writer creates the table, the old rows stay readable. */
static void test_append_to_a_db_without_endpoints(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/old.db", dir);
    write_db(path);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE endpoints", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    kv_err e = {0};
    simdb *d = simdb_open_append(path, &e);
    if (!d)
        fail_msg("%s", e.msg);
    simdb_run_info info = {.scenario = "small", .router = "again", .seed = 8};
    int64_t run_id = 0;
    assert_int_equal(simdb_begin_run(d, &info, &run_id, &e), KV_OK);
    assert_int_equal(run_id, 2);
    sched_endpoint ep = {.id = 5, .name = "10.0.0.9:8000", .pod = "pod-9"};
    sched_trace_score sc = {.profile = "default", .plugin = NULL, .ep = &ep, .score = 1, .weight = 1};
    sched_trace t = {.scores = &sc, .n_scores = 1};
    sched_result res = {.profile = "default", .targets = {&ep}, .n_targets = 1};
    assert_int_equal(simdb_add_decision(d, run_id, 0, &t, &res, &e), KV_OK);
    lc_run m;
    assert_int_equal(lc_run_compute(&fixture, &m, &e), KV_OK);
    assert_int_equal(simdb_end_run(d, run_id, &fixture, &m, &e), KV_OK);
    lc_run_free(&m);
    simdb_close(d);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_true(q1(db, "SELECT count(*) FROM decisions WHERE run_id=1") == 6);
    /* the appended run's requests are in the index the first run's commit built */
    assert_true(q1(db, "SELECT count(*) FROM requests INDEXED BY requests_by_endpoint WHERE endpoint=1") == 2);
    assert_true(q1(db, "SELECT count(*) FROM requests INDEXED BY requests_by_endpoint WHERE run_id=2") == 2);
    assert_true(q1(db, "SELECT count(*) FROM endpoints") == 1);
    assert_true(q1(db, "SELECT count(*) FROM endpoints WHERE run_id=2 AND endpoint=5 AND name='10.0.0.9:8000' "
                       "AND pod='pod-9'") == 1);
    sqlite3_close(db);
    unlink(path);
}

static void test_identical_bytes(void **state)
{
    (void)state;
    char p1[300], p2[300];
    snprintf(p1, sizeof p1, "%s/a.db", dir);
    snprintf(p2, sizeof p2, "%s/b.db", dir);
    write_db(p1);
    write_db(p2);
    size_t n1, n2;
    char *b1 = slurp(p1, &n1), *b2 = slurp(p2, &n2);
    assert_true(n1 > 0 && n1 == n2 && memcmp(b1, b2, n1) == 0);
    free(b1), free(b2);
    unlink(p1), unlink(p2);
}

static void test_errors(void **state)
{
    (void)state;
    kv_err e = {0};
    assert_null(simdb_open("/proc/no/such/dir/runs.db", &e));
    assert_non_null(strstr(e.msg, "/proc/no/such/dir/runs.db"));
    char path[300];
    snprintf(path, sizeof path, "%s/c.db", dir);
    simdb *db = simdb_open(path, &e);
    assert_non_null(db);
    assert_int_equal(simdb_add_decision(db, 1, 0, NULL, NULL, &e), KV_ESTATE);
    simdb_run_info info = {.scenario = NULL, .router = "x"};
    int64_t id;
    assert_int_equal(simdb_begin_run(db, &info, &id, &e), KV_EINVAL);
    simdb_close(db);
    unlink(path);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_append_to_a_db_without_endpoints),
        cmocka_unit_test(test_identical_bytes),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
