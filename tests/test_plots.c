/* test_plots: the chart data files hold the stage metrics in achieved-rate order, one
 * gnuplot index per router or server; gnuplot (when installed) turns the scripts in
 * plots/ into real PNGs; without gnuplot on PATH the data is still written. */
#define _GNU_SOURCE
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "plots.h"

#define US(s) ((sim_time)((s) * 1000000.0 + 0.5))

static const sim_time tta[] = {US(1.1), US(1.2), US(1.3)};
static const sim_time ttb[] = {US(5.4), US(5.5)};
static sim_request_record recs[] = {
    {.id = 0, .stage = 0, .t_start = US(1.0), .t_end = US(1.3), .prompt_tokens = 10, .output_tokens = 2,
     .token_times = tta, .n_token_times = 3},
    {.id = 1, .stage = 0, .t_start = US(2.0), .t_end = US(2.1), .failed = true},
    {.id = 2, .stage = 1, .t_start = US(5.0), .t_end = US(5.5), .prompt_tokens = 20, .output_tokens = 1,
     .token_times = ttb, .n_token_times = 2},
};
/* stage 0 is the faster one (2 requests in 1 s), so it must come second in stages.dat */
static sim_stage_info stages[] = {{.index = 0, .rate = 2}, {.index = 1, .rate = 1}};
static sim_server_sample samples[] = {
    {.t = US(0.05), .server = 0, .kv_usage = 0.5, .hit_rate = 0.25},
    {.t = US(0.05), .server = 1, .kv_usage = 0.125, .hit_rate = 1},
    {.t = US(0.10), .server = 0, .kv_usage = 0.75, .hit_rate = 0},
    {.t = US(0.15), .server = 0, .kv_usage = 0.75, .hit_rate = NAN},   /* nothing admitted: a gap */
};
static sim_run run_a = {.router = "k8s service", .requests = recs, .n_requests = 3, .stages = stages,
                        .n_stages = 2, .samples = samples, .n_samples = 4};

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s missing", path);
    char *b = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&b, &cap, '\0', f);
    fclose(f);
    assert_true(n >= 0);
    return b;
}

static char dir[] = "/tmp/test_plots_XXXXXX";

static void write_two_routers(bool gnuplot)
{
    sim_run run_b = run_a;
    run_b.router = "llm-d";
    lc_run ma, mb;
    assert_int_equal(lc_run_compute(&run_a, &ma, NULL), KV_OK);
    assert_int_equal(lc_run_compute(&run_b, &mb, NULL), KV_OK);
    const sim_run *runs[] = {&run_a, &run_b};
    const lc_run *ms[] = {&ma, &mb};
    plots_opts o = {.run_gnuplot = gnuplot, .script_dir = "plots"};
    kv_err e = {0};
    int rc = plots_write(runs, ms, 2, dir, &o, &e);
    if (rc)
        fail_msg("plots_write: %s", e.msg);
    lc_run_free(&ma);
    lc_run_free(&mb);
}

static void test_data_files(void **state)
{
    (void)state;
    write_two_routers(false);
    char p[300];
    snprintf(p, sizeof p, "%s/charts/stages.dat", dir);
    char *s = slurp(p);
    /* router names are made file- and gnuplot-safe; two indexes */
    assert_non_null(strstr(s, "# router k8s service\n"));
    assert_non_null(strstr(s, "\n\n\n# router llm-d\n"));
    /* stage 1 (achieved 0: one request) before stage 0 (2 requests over 1 s = 2/s);
     * stage 1: TTFT 400 ms, NTPOT 500 ms, ITL 100 ms; stage 0: TTFT 100, NTPOT 150, ITL 100 */
    char *l1 = strstr(s, "\n1 1 0 400 500 100 "), *l0 = strstr(s, "\n0 2 2 100 150 100 ");
    assert_non_null(l1);
    assert_non_null(l0);
    assert_true(l1 < l0);
    free(s);
    snprintf(p, sizeof p, "%s/charts/ttft_cdf.dat", dir);
    s = slurp(p);
    assert_non_null(strstr(s, "0.1 0.5\n0.4 1\n"));
    free(s);
    snprintf(p, sizeof p, "%s/charts/servers_k8s_service.dat", dir);
    s = slurp(p);
    assert_non_null(strstr(s, "# server 0\n# t_s kv_usage_pct hit_rate_pct waiting running preemptions\n"
                              "0.050000 50 25 0 0 0\n0.100000 75 0 0 0 0\n0.150000 75 NaN 0 0 0\n\n\n# server 1\n"));
    free(s);
}

static bool have_gnuplot(void)
{
    return system("gnuplot -e 'exit' >/dev/null 2>&1") == 0;
}

static void test_pngs(void **state)
{
    (void)state;
    if (!have_gnuplot()) {
        print_message("gnuplot not installed: PNG check skipped\n");
        skip();
    }
    write_two_routers(true);
    const char *pngs[] = {"latency_vs_qps.png", "throughput_vs_qps.png", "throughput_vs_latency.png",
                          "ttft_cdf.png", "servers_k8s_service.png", "servers_llm-d.png"};
    for (size_t i = 0; i < sizeof pngs / sizeof *pngs; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/charts/%s", dir, pngs[i]);
        FILE *f = fopen(p, "rb");
        if (!f)
            fail_msg("%s not drawn", p);
        unsigned char magic[8] = {0};
        assert_int_equal(fread(magic, 1, 8, f), 8);
        fclose(f);
        assert_memory_equal(magic, "\x89PNG\r\n\x1a\n", 8);
    }
}

static void test_without_gnuplot(void **state)
{
    (void)state;
    const char *old = getenv("PATH");
    char *saved = old ? strdup(old) : NULL;
    setenv("PATH", "/nonexistent", 1);
    char p[300];
    snprintf(p, sizeof p, "%s/charts/stages.dat", dir);
    unlink(p);
    write_two_routers(true); /* succeeds, says so on stderr */
    assert_int_equal(access(p, R_OK), 0);
    if (saved)
        setenv("PATH", saved, 1);
    free(saved);
}

/* A long series is cut to two rows per time bucket, the bucket's minima then maxima, so a
 * one-sample spike survives: 3,000 samples of one server make 1,000 buckets of three. */
static void test_long_series_buckets(void **state)
{
    (void)state;
    enum { N = 3000, SPIKE = 1234 };
    sim_server_sample *x = calloc(N, sizeof *x);
    for (int i = 0; i < N; i++)
        x[i] = (sim_server_sample){.t = (sim_time)(i + 1) * 50000, .kv_usage = 0.25, .hit_rate = NAN,
                                   .waiting = i % 3, .preemptions = (uint64_t)i};
    x[SPIKE].kv_usage = 0.875;
    x[SPIKE + 1].hit_rate = 0.5;
    sim_run run = {.router = "long", .samples = x, .n_samples = N};
    lc_run m;
    assert_int_equal(lc_run_compute(&run, &m, NULL), KV_OK);
    const sim_run *runs[] = {&run};
    const lc_run *ms[] = {&m};
    plots_opts o = {.run_gnuplot = false};
    kv_err e = {0};
    assert_int_equal(plots_write(runs, ms, 1, dir, &o, &e), KV_OK);
    lc_run_free(&m);
    char p[300];
    snprintf(p, sizeof p, "%s/charts/servers_long.dat", dir);
    char *s = slurp(p);
    int rows = 0, spikes = 0, hits = 0;
    double last_t = 0;
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        double t, kv;
        char hit[16];
        int w, r;
        unsigned long long pre;
        assert_int_equal(sscanf(line, "%lf %lf %15s %d %d %llu", &t, &kv, hit, &w, &r, &pre), 6);
        assert_true(t > last_t);                          /* min row at the first time, max at the last */
        last_t = t;
        assert_true(kv == 25 || kv == 87.5);
        spikes += kv == 87.5;
        hits += strcmp(hit, "50") == 0;
        assert_true(rows % 2 ? w == 2 : w == 0);          /* every bucket spans waiting 0..2 */
        assert_int_equal(pre, rows % 2 ? (unsigned long long)(rows / 2) * 3 + 2 : (unsigned long long)(rows / 2) * 3);
        rows++;
    }
    assert_int_equal(rows, 2 * 1000);
    assert_int_equal(spikes, 1);
    assert_int_equal(hits, 2);                            /* the bucket's only hit rate: its min and max */
    free(s);
    free(x);
}

static int teardown(void **state)
{
    (void)state;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_files),
        cmocka_unit_test(test_pngs),
        cmocka_unit_test(test_without_gnuplot),
        cmocka_unit_test(test_long_series_buckets),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
