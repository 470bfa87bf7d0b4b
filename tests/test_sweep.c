/* test_sweep: sweeps and plans (simulator/sweep.c, pointrun.c, slo.c). A sweep's points,
 * run in parallel child processes, equal the same points run one by one in this
 * process; the plan's bisections give the answers a brute-force pass over the whole
 * grid gives, with fewer points; the SLO reads its bounds in the metrics' units; bad
 * sweep:, plan: and slo: sections are refused with their file, line, column and field. */
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

#include "expect.h"
#include "pointrun.h"
#include "scenario.h"
#include "stats.h"
#include "sweep.h"

#define SCN "tests/data/scenarios/sweep-small.yaml"

static scenario *load(void)
{
    kv_err err = {0};
    scenario *s = scn_load(SCN, "policies/presets", &err);
    if (!s)
        fail_msg("%s", err.msg);
    return s;
}

static void same_block(const stats_block *a, const stats_block *b)
{
    assert_int_equal(a->valid, b->valid);
    for (int k = 0; a->valid && k < STATS_NKEYS; k++)
        assert_true(a->v[k] == b->v[k]);
}

static void same_metrics(const lc_metrics *a, const lc_metrics *b)
{
    assert_int_equal(a->count, b->count);
    assert_int_equal(a->n_success, b->n_success);
    assert_int_equal(a->n_failed, b->n_failed);
    assert_int_equal(a->output_tokens, b->output_tokens);
    assert_int_equal(a->cached_tokens, b->cached_tokens);
    assert_true(a->output_tokens_per_sec == b->output_tokens_per_sec);
    assert_true(a->achieved_rate == b->achieved_rate);
    same_block(&a->ttft, &b->ttft);
    same_block(&a->request_latency, &b->request_latency);
    same_block(&a->itl, &b->itl);
}

static void test_sweep_equals_points_one_by_one(void **state)
{
    (void)state;
    scenario *s = load();
    sweep_grid g;
    kv_err err = {0};
    assert_int_equal(sweep_grid_build(s, &g, &err), KV_OK);
    /* 2 routers x 2 replica counts x 2 rates, the precise router also x 2 weights */
    assert_int_equal(g.n, 4 + 8);
    pr_result *par = calloc(g.n, sizeof *par);
    assert_non_null(par);
    assert_int_equal(pr_run_all(s, g.points, g.n, 3, par, &err), KV_OK);
    for (size_t i = 0; i < g.n; i++) {
        assert_int_equal(par[i].rc, KV_OK);
        scenario *one = load();   /* a point changes its scenario: a fresh one each */
        pr_result r;
        pr_run_here(one, &g.points[i], &r);
        assert_int_equal(r.rc, KV_OK);
        same_metrics(&par[i].m, &r.m);
        assert_true(r.m.count > 0);
        scn_free(one);
    }
    /* the axes matter: more load, more throughput; different weights, different routing */
    assert_true(par[1].m.output_tokens_per_sec > par[0].m.output_tokens_per_sec);
    bool weights_differ = false;
    for (size_t i = 4; i + 2 < g.n; i += 4)
        weights_differ |= par[i + 1].m.ttft.v[STATS_P90] != par[i + 3].m.ttft.v[STATS_P90];
    assert_true(weights_differ);
    /* and the parent's scenario is untouched by its children */
    assert_int_equal(s->cluster.replicas, 2);
    assert_true(s->workload.stages[1].rate == 8);
    free(par);
    sweep_grid_free(&g);
    scn_free(s);
}

/* Every point of a list, run: whether the SLO holds at each. */
static void holds_all(const scenario *s, const pr_point *pts, size_t n, bool *ok)
{
    pr_result *r = calloc(n, sizeof *r);
    assert_non_null(r);
    kv_err err = {0};
    assert_int_equal(pr_run_all(s, pts, n, 0, r, &err), KV_OK);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(r[i].rc, KV_OK);
        ok[i] = slo_holds(&s->slo, &r[i].m, NULL, 0);
    }
    free(r);
}

static void test_plan_matches_brute_force(void **state)
{
    (void)state;
    scenario *s = load();
    plan_result p;
    kv_err err = {0};
    assert_int_equal(plan_run(s, 0, &p, &err), KV_OK);
    const plan_spec *pl = &s->plan;
    size_t ngrid = (size_t)((pl->rate_max - pl->rate_min) / pl->rate_step) + 1;
    assert_int_equal(ngrid, 16);
    size_t grid_points = 0, searched = 0;
    bool interior = false;
    for (size_t r = 0; r < s->n_routers; r++) {
        /* Q1: every replica count at the plan's rate */
        pr_point pts[64];
        bool ok[64];
        for (uint32_t k = 0; k < pl->max_replicas; k++)
            pts[k] = (pr_point){.router = r, .replicas = k + 1, .rate = pl->rate};
        holds_all(s, pts, pl->max_replicas, ok);
        uint32_t fewest = 0;
        for (uint32_t k = 0; k < pl->max_replicas && !fewest; k++)
            if (ok[k])
                fewest = k + 1;
        assert_int_equal(p.a[r].fewest_replicas, fewest);
        interior |= fewest > 1;
        grid_points += pl->max_replicas;
        searched += p.a[r].q1_points;
        /* Q2: every rate of the grid at each replica count */
        for (size_t i = 0; i < p.n_replicas; i++) {
            for (size_t k = 0; k < ngrid; k++)
                pts[k] = (pr_point){.router = r, .replicas = p.replicas[i], .rate = pl->rate_min + (double)k * pl->rate_step};
            holds_all(s, pts, ngrid, ok);
            double best = 0;
            for (size_t k = 0; k < ngrid && ok[k]; k++)
                best = pts[k].rate;
            assert_true(p.a[r].best_rate[i] == best);
            assert_int_equal(p.a[r].best_rate_capped[i], ok[ngrid - 1]);
            interior |= best > pl->rate_min && best < pl->rate_max;
            grid_points += ngrid;
        }
        searched += p.a[r].q2_points;
    }
    assert_true(interior);                 /* the answers are not the ranges' ends */
    assert_true(searched * 3 < grid_points);   /* a search, not the grid */
    plan_result_free(&p);
    scn_free(s);
}

static void test_slo_units(void **state)
{
    (void)state;
    kv_err err = {0};
    const char *text = "{ttft_p90: 1s, itl_p90: 80ms, output_tokens_per_sec: 5000, prefix_hit_rate: 40%}";
    yt_doc *d = yt_load_string(text, strlen(text), "slo", &err);
    assert_non_null(d);
    slo o;
    assert_int_equal(slo_parse(d, yt_root(d), &o, &err), KV_OK);
    assert_int_equal(o.n, 4);
    assert_true(o.bound[0] == 1.0 && o.bound[1] == 0.08 && o.bound[2] == 5000 && o.bound[3] == 0.4);
    lc_metrics m = {.ttft = {.valid = true}, .itl = {.valid = true}, .output_tokens_per_sec = 6000,
                    .input_tokens = 100, .cached_tokens = 50};
    m.ttft.v[STATS_P90] = 0.9;
    m.itl.v[STATS_P90] = 0.079;
    char why[128];
    assert_true(slo_holds(&o, &m, why, sizeof why));
    m.output_tokens_per_sec = 4000;   /* throughput: at least the bound */
    assert_false(slo_holds(&o, &m, why, sizeof why));
    assert_string_equal(why, "output_tokens_per_sec 4000.0/s < 5000.0/s");
    m.output_tokens_per_sec = 6000;
    m.ttft.valid = false;             /* nothing measured: not met */
    assert_false(slo_holds(&o, &m, why, sizeof why));
    char desc[256];
    slo_describe(&o, desc, sizeof desc);
    assert_string_equal(desc, "ttft_p90 <= 1 s, itl_p90 <= 80 ms, output_tokens_per_sec >= 5000.0/s, "
                              "prefix_hit_rate >= 40.00%");
    yt_free(d);
}

/* Each case replaces the tail of sweep-small.yaml from "slo:" on. */
static void test_bad_sections(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"plan: {rates: {min: 1, max: 2, step: 1}}\n", ":27:7: field 'plan': needs an slo: section"},
        {"slo: {ttft_p99.9: 1s}\n", ":27:7: field 'slo.ttft_p99.9': unknown metric"},
        {"slo: {ttft_p90: fast}\n", ":27:17: field 'slo.ttft_p90': expected a bound in the metric's unit"},
        {"sweep: {routers: [nope]}\n", ":27:19: field 'sweep.routers[0]': the scenario has no router 'nope'"},
        {"sweep: {rates: [0]}\n", ":27:17: field 'sweep.rates[0]': 0 is out of range (0, 1e6]"},
        {"sweep: {replicas: []}\n", ":27:19: field 'sweep.replicas': expected a non-empty list"},
        {"sweep: {weights: {plugin: load-scorer, values: [1]}}\n",
         ":27:27: field 'sweep.weights.plugin': no swept router has a plugin named 'load-scorer'"},
        {"sweep: {grid: 1}\n", ":27:9: field 'sweep.grid': unknown key"},
        {"slo: {ttft_p90: 1s}\nplan: {rates: {min: 5, max: 1, step: 1}}\n",
         ":28:15: field 'plan.rates': needs min <= max"},
    };
    FILE *f = fopen(SCN, "r");
    assert_non_null(f);
    char base[8192];
    size_t len = fread(base, 1, sizeof base - 1, f);
    fclose(f);
    base[len] = 0;
    char *cut = strstr(base, "slo:");
    assert_non_null(cut);
    *cut = 0;
    char path[] = "/tmp/test_sweep.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "%s%s", base, cases[i][0]);
        fclose(f);
        kv_err err = {0};
        scenario *s = scn_load(path, "policies/presets", &err);
        if (s)
            fail_msg("case %zu loaded", i);
        char want[256];
        snprintf(want, sizeof want, "%s%s", path, cases[i][1]);
        if (strncmp(err.msg, want, strlen(want)) != 0)
            fail_msg("case %zu: got\n  %s\nwant a message starting\n  %s", i, err.msg, want);
    }
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep_equals_points_one_by_one),
        cmocka_unit_test(test_plan_matches_brute_force),
        cmocka_unit_test(test_slo_units),
        cmocka_unit_test(test_bad_sections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
