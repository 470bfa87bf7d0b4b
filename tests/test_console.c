/* test_console: the comparison table reproduces the llm-d guide's own rate-60 table
 * (precise-prefix-cache-aware README) from its means: same deltas, same percentages,
 * same number formatting; more than two routers each compare against the first. The
 * progress line's ETA: none before 1% of the run, sent requests counted half done. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "console.h"

static void set_means(lc_metrics *m, double rps, double in, double out, double lat, double ttft, double itl_ms)
{
    memset(m, 0, sizeof *m);
    m->stage = 16;
    m->requested_rate = 60;
    m->requests_per_sec = rps;
    m->input_tokens_per_sec = in;
    m->output_tokens_per_sec = out;
    m->total_tokens_per_sec = in + out;
    m->request_latency.valid = m->ttft.valid = m->itl.valid = true;
    m->request_latency.v[STATS_MEAN] = lat;
    m->ttft.v[STATS_MEAN] = ttft;
    m->itl.v[STATS_MEAN] = itl_ms / 1000;
}

static char *render(const char *const *names, const lc_run *const *runs, size_t n, int stage)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    console_compare(f, names, runs, n, stage);
    fclose(f);
    return buf;
}

static void expect_row(const char *text, const char *label, const char *const *cells, size_t n)
{
    const char *line = strstr(text, label);
    if (!line)
        fail_msg("no row '%s' in:\n%s", label, text);
    const char *eol = strchr(line, '\n');
    const char *p = line + strlen(label);
    for (size_t i = 0; i < n; i++) {
        const char *c = strstr(p, cells[i]);
        if (!c || c > eol)
            fail_msg("row '%s': cell %zu '%s' missing in '%.*s'", label, i, cells[i], (int)(eol - line), line);
        p = c + strlen(cells[i]);
    }
}

static void test_guide_table(void **state)
{
    (void)state;
    lc_metrics k8s, llmd;
    set_means(&k8s, 5.7306, 43417.86, 5362.16, 105.4133, 34.9145, 70.42);
    set_means(&llmd, 14.8719, 112795.47, 13931.99, 63.3376, 0.1916, 63.07);
    lc_run rk = {.stages = &k8s, .n_stages = 1}, rl = {.stages = &llmd, .n_stages = 1};
    const lc_run *runs[] = {&rk, &rl};
    const char *names[] = {"k8s", "llmd"};
    char *t = render(names, runs, 2, -1);
    assert_non_null(strstr(t, "Stage 16 (rate 60): k8s vs llmd"));
    assert_non_null(strstr(t, "k8s (Mean)"));
    assert_non_null(strstr(t, "Δ (llmd - k8s)"));
    expect_row(t, "Requests/sec", (const char *[]){"5.7306", "14.8719", "+9.1413", "+159.5%"}, 4);
    expect_row(t, "Input tokens/sec", (const char *[]){"43,417.86", "112,795.47", "+69,377.61", "+159.8%"}, 4);
    expect_row(t, "Output tokens/sec", (const char *[]){"5,362.16", "13,931.99", "+8,569.83", "+159.8%"}, 4);
    expect_row(t, "Total tokens/sec", (const char *[]){"48,780.02", "126,727.46", "+77,947.44", "+159.8%"}, 4);
    expect_row(t, "Request latency (s)", (const char *[]){"105.4133", "63.3376", "-42.0757", "-39.9%"}, 4);
    expect_row(t, "TTFT (s)", (const char *[]){"34.9145", "0.1916", "-34.7229", "-99.5%"}, 4);
    expect_row(t, "Inter-token latency (ms)", (const char *[]){"70.42", "63.07", "-7.35", "-10.4%"}, 4);
    free(t);

    /* three routers: two tables, each against the first; a missing stage is noted */
    lc_metrics same;
    set_means(&same, 5.7306, 43417.86, 5362.16, 105.4133, 34.9145, 70.42);
    lc_run rs = {.stages = &same, .n_stages = 1};
    const lc_run *three[] = {&rk, &rl, &rs};
    const char *names3[] = {"k8s", "llmd", "twin"};
    t = render(names3, three, 3, 16);
    assert_non_null(strstr(t, "k8s vs llmd"));
    assert_non_null(strstr(t, "k8s vs twin"));
    expect_row(strstr(t, "k8s vs twin"), "Requests/sec", (const char *[]){"5.7306", "5.7306", "+0.0000", "+0.0%"},
               4);
    free(t);
    t = render(names, runs, 2, 3);
    assert_non_null(strstr(t, "stage 3: not run by k8s"));
    free(t);
}

static void test_stage_lines(void **state)
{
    (void)state;
    lc_metrics s;
    set_means(&s, 14.8719, 112795.47, 13931.99, 63.3376, 0.1916, 63.07);
    lc_run r = {.stages = &s, .n_stages = 1};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    console_stage_lines(f, "llmd", &r);
    fclose(f);
    assert_non_null(strstr(buf, "req/s"));
    assert_non_null(strstr(buf, "llmd"));
    assert_non_null(strstr(buf, "14.872"));
    assert_non_null(strstr(buf, "13932.0"));
    assert_non_null(strstr(buf, "63.07"));
    free(buf);
}

static char *progress_line(uint64_t sent, uint64_t completed, uint64_t total, double wall_s)
{
    cluster_progress p = {.stage = 0, .n_stages = 1, .sim_s = 2.0, .sent = sent, .completed = completed,
                          .total = total};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    console_progress(f, "k8s-service", &p, wall_s);
    fclose(f);
    return buf;
}

static void expect_eta(uint64_t sent, uint64_t completed, uint64_t total, double wall_s, const char *want)
{
    char *line = progress_line(sent, completed, total, wall_s), copy[256];
    snprintf(copy, sizeof copy, "%s", line);
    free(line);
    if (!strstr(copy, want))
        fail_msg("sent %llu, completed %llu of %llu at %.1f s: want '%s' in '%s'", (unsigned long long)sent,
                 (unsigned long long)completed, (unsigned long long)total, wall_s, want, copy);
}

static void test_progress_eta(void **state)
{
    (void)state;
    /* A 100,000-request run's first redraw: one request back, 17,000 sent. Counting
     * completions alone said "ETA 23943 s" for a run that took 2 s. */
    expect_eta(17000, 1, 100000, 0.2, "ETA 2 s");
    /* Under 1% of the run done: no estimate. */
    expect_eta(1000, 0, 100000, 0.1, "ETA -");
    expect_eta(1998, 0, 100000, 0.1, "ETA -");
    expect_eta(2000, 0, 100000, 0.1, "ETA 10 s");
    /* Half the work done in 10 s: 10 s left (all sent, 0 back is 50%). */
    expect_eta(100000, 0, 100000, 10, "ETA 10 s");
    expect_eta(60000, 40000, 100000, 10, "ETA 10 s");
    /* Done. */
    expect_eta(150, 150, 150, 0.5, "ETA 0 s");
    char *line = progress_line(60000, 40000, 100000, 10);
    assert_non_null(strstr(line, "\r  k8s-service      stage 1/1  sim 2.0 s  40000/100000 requests  wall 10.0 s"));
    free(line);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guide_table),
        cmocka_unit_test(test_stage_lines),
        cmocka_unit_test(test_progress_eta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
