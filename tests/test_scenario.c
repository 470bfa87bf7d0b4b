/* test_scenario: scenario files load with their defaults, and every bad scenario stops
 * with the file, line, column and field at fault (the exact text is asserted). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "rng.h"
#include "scenario.h"

static void test_rate60(void **state)
{
    (void)state;
    kv_err e = {0};
    scenario *s = scn_load("scenarios/rate60.yaml", "policies/presets", &e);
    if (!s) fprintf(stderr, "%s\n", e.msg);
    assert_non_null(s);
    assert_string_equal(s->name, "rate60");
    assert_int_equal(s->seed, 42);
    assert_int_equal(s->cluster.replicas, 8);
    assert_string_equal(s->cluster.model->name, "qwen3-32b");
    assert_string_equal(s->cluster.hw->name, "h100-sxm");
    assert_int_equal(s->cluster.tp, 2);
    assert_int_equal(s->cluster.block_size, 64);
    assert_int_equal(s->cluster.num_gpu_blocks, 5500);   /* calibrated, docs/VALIDATION.md */
    assert_int_equal(s->cluster.kv_event_delay, 5000);
    assert_int_equal(s->cluster.scrape_interval, 50000);
    assert_int_equal(s->cluster.metrics_staleness, 2000000);
    assert_int_equal(s->n_routers, 2);
    assert_string_equal(s->routers[0].name, "k8s-service");
    assert_string_equal(s->routers[0].source, "preset:k8s-service");
    assert_string_equal(s->routers[1].name, "llm-d-precise");
    assert_non_null(s->routers[1].cfg);
    assert_int_equal(s->workload.data, WL_DATA_SHARED_PREFIX);
    assert_int_equal(s->workload.sp.num_groups, 150);
    assert_int_equal(s->workload.load, WL_LOAD_POISSON);
    assert_int_equal(s->workload.n_stages, 2);
    assert_int_equal(s->workload.stages[1].num_requests, 1500);
    assert_int_equal(s->workload.n_counted, 9);          /* output_retokenize: guide */
    assert_true(s->workload.counted[2].ratio == 0.1927);
    assert_int_equal(s->outputs.report_stage, 1);
    assert_int_equal(s->outputs.decisions, SCN_DECISIONS_SAMPLE);
    assert_int_equal(s->outputs.decisions_every, 50);
    scn_free(s);
}

/* The ladder pastes a whole inference-perf workload: the extra sections are noted. */
static void test_ladder_notes(void **state)
{
    (void)state;
    kv_err e = {0};
    scenario *s = scn_load("scenarios/precise-guide-ladder.yaml", "policies/presets", &e);
    assert_non_null(s);
    assert_int_equal(s->workload.n_stages, 17);
    assert_int_equal(s->n_notes, 5);    /* api, server, tokenizer, report, storage */
    assert_int_equal(s->workload.n_counted, 9);          /* output_retokenize: guide */
    assert_non_null(strstr(s->notes[0], "workload.api: accepted and ignored"));
    scn_free(s);
}

/* Defaults when the cluster and outputs sections are left out or partial; inline
 * router configs load. */
static void test_defaults(void **state)
{
    (void)state;
    kv_err e = {0};
    scenario *s = scn_load("tests/data/scenarios/small-concurrent.yaml", "policies/presets", &e);
    assert_non_null(s);
    assert_int_equal(s->seed, 3);
    assert_int_equal(s->cluster.tp, 2);
    assert_int_equal(s->cluster.block_size, 64);
    assert_true(s->cluster.gpu_memory_utilization == 0.9);
    assert_true(s->cluster.prefix_caching);
    assert_true(s->cluster.speedup == 1);
    assert_int_equal(s->outputs.report_stage, -1);
    assert_true(s->outputs.per_request);
    assert_false(s->outputs.plots);
    assert_int_equal(s->outputs.decisions, SCN_DECISIONS_NONE);
    scn_free(s);
    s = scn_load("scenarios/small-random.yaml", "policies/presets", &e);
    assert_non_null(s);
    assert_string_equal(s->routers[1].source, "inline");
    assert_non_null(s->routers[1].cfg);
    scn_free(s);
}

static void test_errors(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"tests/data/scenarios/bad-config-file.yaml",
         "tests/data/scenarios/bad-config-file.yaml:3:24: field 'routers[0].config': tests/data/scenarios/missing-epp.yaml: cannot open: No such file or directory"},
        {"tests/data/scenarios/bad-dup-router.yaml",
         "tests/data/scenarios/bad-dup-router.yaml:4:12: field 'routers[1].name': 'rr' is already used by routers[0]"},
        {"tests/data/scenarios/bad-duration.yaml",
         "tests/data/scenarios/bad-duration.yaml:3:20: field 'cluster.scrape_interval': expected a duration such as 50ms, 2s or 2m, got '5 parsecs'"},
        {"tests/data/scenarios/bad-inline-config.yaml",
         "tests/data/scenarios/bad-inline-config.yaml:6:17: field 'routers[0].config.plugins[0].type': unknown plugin type 'no-such-scorer'"},
        /* user text is echoed with its control bytes escaped */
        {"tests/data/scenarios/bad-control-bytes.yaml",
         "tests/data/scenarios/bad-control-bytes.yaml:3:10: field 'cluster.model': unknown model 'qwen\\x1b[2J\\r\\nERROR all clear\\x7f' "
         "(searched tests/data/scenarios/models, models)"},
        {"tests/data/scenarios/bad-model.yaml",
         "tests/data/scenarios/bad-model.yaml:3:10: field 'cluster.model': unknown model 'gpt-5' "
         "(searched tests/data/scenarios/models, models)"},
        {"tests/data/scenarios/bad-name.yaml",
         "tests/data/scenarios/bad-name.yaml:1:7: field 'name': 'bad/../x' must be letters, digits, '.', '-' or '_' (it names the output folder)"},
        {"tests/data/scenarios/bad-no-routers.yaml",
         "tests/data/scenarios/bad-no-routers.yaml:1:1: field 'routers': required (a list of {name, preset|config})"},
        {"tests/data/scenarios/bad-preset.yaml",
         "tests/data/scenarios/bad-preset.yaml:3:24: field 'routers[0].preset': preset 'no-such-preset': no file policies/presets/no-such-preset.yaml"},
        {"tests/data/scenarios/bad-report-stage.yaml",
         "tests/data/scenarios/bad-report-stage.yaml:7:25: field 'outputs.report_stage': 5 is not a stage (0..1, or -1 for the last)"},
        {"tests/data/scenarios/bad-router-both.yaml",
         "tests/data/scenarios/bad-router-both.yaml:3:5: field 'routers[0]': give exactly one of 'preset' and 'config'"},
        {"tests/data/scenarios/bad-seed.yaml",
         "tests/data/scenarios/bad-seed.yaml:2:7: field 'seed': must be non-negative"},
        {"tests/data/scenarios/bad-speedup.yaml",
         "tests/data/scenarios/bad-speedup.yaml:3:54: field 'cluster.speedup': must be in [0.001, 1e6]"},
        {"tests/data/scenarios/bad-top-key.yaml",
         "tests/data/scenarios/bad-top-key.yaml:2:1: field 'routerz': unknown key"},
        {"tests/data/scenarios/bad-unknown-key.yaml",
         "tests/data/scenarios/bad-unknown-key.yaml:2:24: field 'cluster.gpus': unknown key"},
        {"tests/data/scenarios/bad-yaml.yaml",
         "tests/data/scenarios/bad-yaml.yaml:2:1: did not find expected ',' or ']' while parsing a flow sequence"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kv_err e = {0};
        scenario *s = scn_load(cases[i][0], "policies/presets", &e);
        assert_null(s);
        assert_string_equal(e.msg, cases[i][1]);
    }
    kv_err e = {0};
    assert_null(scn_load("tests/data/scenarios/no-such-file.yaml", "policies/presets", &e));
    assert_non_null(strstr(e.msg, "tests/data/scenarios/no-such-file.yaml"));
}

/* Random byte edits of a valid scenario never crash or leak: each load either succeeds
 * or returns an error whose message names the file. */
static void test_mutations_never_crash(void **state)
{
    (void)state;
    FILE *f = fopen("scenarios/rate60.yaml", "rb");
    assert_non_null(f);
    char base[8192];
    size_t n = fread(base, 1, sizeof base - 1, f);
    fclose(f);
    assert_true(n > 100 && n < sizeof base - 1);
    static const char alphabet[] = ":{}[],-# \n\t'\"0123456789.abcxyz&*!|>";
    char path[] = "/tmp/kvroute_scn_XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    close(fd);
    rng r;
    rng_seed(&r, 2024, 1);
    int ok = 0, bad = 0;
    for (int iter = 0; iter < 300; iter++) {
        char buf[8192];
        size_t len = n;
        memcpy(buf, base, n);
        for (int k = 0, edits = 1 + (int)rng_below(&r, 4); k < edits; k++) {
            size_t at = (size_t)rng_below(&r, len);
            switch (rng_below(&r, 3)) {
            case 0: buf[at] = alphabet[rng_below(&r, sizeof alphabet - 1)]; break;
            case 1: memmove(buf + at, buf + at + 1, len - at - 1); len--; break;
            default:
                if (len + 1 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = alphabet[rng_below(&r, sizeof alphabet - 1)];
                    len++;
                }
            }
        }
        f = fopen(path, "wb");
        assert_non_null(f);
        fwrite(buf, 1, len, f);
        fclose(f);
        kv_err e = {0};
        scenario *s = scn_load(path, "policies/presets", &e);
        if (s) {
            ok++;
            scn_free(s);
        } else {
            bad++;
            assert_non_null(strstr(e.msg, "kvroute_scn_"));
        }
    }
    remove(path);
    assert_true(ok > 0 && bad > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate60),
        cmocka_unit_test(test_ladder_notes),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_mutations_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
