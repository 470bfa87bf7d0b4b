/* test_config: the EndpointPickerConfig loader accepts the precise guide's file verbatim
 * and every preset, applies GIE's defaults, and rejects bad files with the exact message
 * (file:line:col included) a user needs. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "registry.h"
#include "precise_prefix_cache_scorer.h"
#include "scheduler.h"

#define D "tests/data/configs/"

typedef struct warnings {
    char msg[8][512];
    int n;
} warnings;

static void collect(void *ctx, const char *msg)
{
    warnings *w = ctx;
    if (w->n < 8)
        snprintf(w->msg[w->n], sizeof w->msg[0], "%s", msg);
    w->n++;
}

static const epc_plugin *plugin_of(const epc_config *c, size_t i) { return &c->plugins[c->profiles[0].refs[i].plugin]; }

static void test_guide_file_loads_verbatim(void **state)
{
    kv_err err = {0};
    epc_config *c = epc_load_file(D "guide-precise.yaml", registry_types, &err);
    assert_non_null(c);
    assert_string_equal(c->api_version, "");
    assert_int_equal(c->n_plugins, 5);
    assert_string_equal(c->plugins[c->handler].type, "single-profile-handler");
    assert_int_equal(c->n_profiles, 1);
    assert_string_equal(c->profiles[0].name, "default");
    assert_int_equal(c->profiles[0].n_refs, 4);
    assert_string_equal(plugin_of(c, 0)->name, "precise-prefix-cache-scorer");
    assert_true(c->profiles[0].refs[0].weight == 3.0);
    assert_string_equal(plugin_of(c, 1)->name, "kv-cache-utilization-scorer");
    assert_true(c->profiles[0].refs[1].weight == 2.0);
    assert_string_equal(plugin_of(c, 2)->name, "queue-scorer");
    assert_true(c->profiles[0].refs[2].weight == 2.0);
    assert_string_equal(plugin_of(c, 3)->type, "max-score-picker");
    /* GIE saturation defaults when the section is absent */
    assert_int_equal(c->saturation.queue_depth, 5);
    assert_true(c->saturation.kv_util == 0.8);
    assert_true(c->saturation.staleness_s == 0.2);

    /* The scheduler builds it with no warnings, and the kvsource carries the guide's settings. */
    warnings w = {0};
    sched_env env = {.seed = 1, .warn = collect, .warn_ctx = &w};
    sched *s = sched_new(c, &env, &err);
    assert_non_null(s);
    assert_int_equal(w.n, 0);
    void *svc[2];
    assert_int_equal(sched_services(s, "kvsource", svc, 2), 1);
    sched_kvsource *src = svc[0];
    assert_int_equal(src->keys.block_size, 64);
    assert_int_equal(src->keys.algo, BLOCKKEYS_XXH64);
    assert_string_equal(src->events.zmq_endpoint, "tcp://*:5557");
    assert_string_equal(src->events.topic_filter, "kv@");
    assert_int_equal(src->events.concurrency, 4);
    assert_false(src->events.discover_pods);
    assert_int_equal(src->events.socket_port, 5557);
    assert_string_equal(src->events.pod_label_selector, "llm-d.ai/inference-serving=true");
    assert_non_null(src->index);
    assert_int_equal(sched_services(s, "nothing", svc, 2), 0);
    sched_free(s);
    epc_free(c);
}

/* Identical bytes: the preset is the guide's file, not a paraphrase of it. */
static void test_precise_preset_is_the_guide(void **state)
{
    FILE *a = fopen("policies/presets/llm-d-precise.yaml", "rb"), *b = fopen(D "guide-precise.yaml", "rb");
    assert_non_null(a);
    assert_non_null(b);
    char x[8192], y[8192];
    size_t na = fread(x, 1, sizeof x, a), nb = fread(y, 1, sizeof y, b);
    fclose(a);
    fclose(b);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
}

static void test_every_preset_loads_and_builds(void **state)
{
    DIR *dir = opendir("policies/presets");
    assert_non_null(dir);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(dir))) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".yaml") != 0)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(len - 5), de->d_name);
        kv_err err = {0};
        epc_config *c = epc_load_preset("policies/presets", name, registry_types, &err);
        if (!c)
            fail_msg("preset %s: %s", name, err.msg);
        warnings w = {0};
        sched_env env = {.seed = 7, .warn = collect, .warn_ctx = &w};
        sched *s = sched_new(c, &env, &err);
        if (!s)
            fail_msg("preset %s: %s", name, err.msg);
        if (w.n)
            fail_msg("preset %s warns: %s", name, w.msg[0]);
        sched_free(s);
        epc_free(c);
        n++;
    }
    closedir(dir);
    assert_true(n >= 3);
}

static void test_preset_names(void **state)
{
    char path[256];
    kv_err err = {0};
    assert_int_equal(epc_preset_path("policies/presets", "k8s-service", path, sizeof path, &err), KV_OK);
    assert_string_equal(path, "policies/presets/k8s-service.yaml");
    assert_int_equal(epc_preset_path("policies/presets", "../Makefile", path, sizeof path, &err), KV_EINVAL);
    assert_string_equal(err.msg, "preset name '../Makefile': must be letters, digits, '.', '_' or '-'");
    assert_int_equal(epc_preset_path("policies/presets", "no-such", path, sizeof path, &err), KV_ENOTFOUND);
    assert_string_equal(err.msg, "preset 'no-such': no file policies/presets/no-such.yaml");
    assert_int_equal(epc_preset_path("policies/presets", "", path, sizeof path, &err), KV_EINVAL);
    assert_int_equal(epc_preset_path("policies/presets", "k8s-service", path, 10, &err), KV_ERANGE);
    assert_null(epc_load_preset("policies/presets", "nope", registry_types, &err));
}

static void test_gie_defaults(void **state)
{
    kv_err err = {0};
    epc_config *c = epc_load_file(D "good-defaults.yaml", registry_types, &err);
    assert_non_null(c);
    assert_string_equal(c->api_version, EPC_API_LLMD);
    /* decode-filter, queue-scorer, kv + added max-score-picker and single-profile-handler */
    assert_int_equal(c->n_plugins, 5);
    assert_string_equal(c->plugins[1].name, "queue-scorer");
    assert_string_equal(c->plugins[2].name, "kv");
    assert_string_equal(c->plugins[3].name, "max-score-picker");
    assert_null(c->plugins[3].node);
    assert_string_equal(c->plugins[c->handler].name, "single-profile-handler");
    assert_int_equal(c->n_profiles, 1);
    assert_string_equal(c->profiles[0].name, "default");
    assert_int_equal(c->profiles[0].n_refs, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(c->profiles[0].refs[i].plugin, i);
        assert_true(c->profiles[0].refs[i].weight == 1.0);
    }
    assert_int_equal(c->n_feature_gates, 1);
    assert_string_equal(c->feature_gates[0], "prepareDataPlugins");
    assert_int_equal(c->saturation.queue_depth, 7);
    assert_true(c->saturation.kv_util == 0.9);
    assert_true(c->saturation.staleness_s > 0.2499 && c->saturation.staleness_s < 0.2501);
    assert_non_null(c->data);
    assert_int_equal(epc_plugin_index(c, "kv"), 2);
    assert_int_equal(epc_plugin_index(c, "kv-cache-utilization-scorer"), -1);
    epc_free(c);
}

static void test_load_from_string_and_node(void **state)
{
    const char *text = "plugins:\n- type: round-robin-picker\n";
    kv_err err = {0};
    epc_config *c = epc_load_string(text, strlen(text), "inline", registry_types, &err);
    assert_non_null(c);
    assert_int_equal(c->n_plugins, 2); /* + single-profile-handler; the picker is there */
    assert_int_equal(c->profiles[0].n_refs, 1);
    assert_string_equal(c->plugins[c->profiles[0].refs[0].plugin].type, "round-robin-picker");
    epc_free(c);

    /* a config nested in another document (a scenario's inline config) */
    const char *scen = "name: x\nrouter:\n  plugins:\n  - type: queue-scorer\n  - type: bogus\n";
    yt_doc *doc = yt_load_string(scen, strlen(scen), "scenario.yaml", &err);
    assert_non_null(doc);
    c = epc_load_node(doc, yt_get(yt_root(doc), "router"), registry_types, &err);
    assert_null(c);
    assert_string_equal(err.msg, "scenario.yaml:5:11: field 'plugins[1].type': unknown plugin type 'bogus'");
    yt_free(doc);

    /* an empty document */
    assert_null(epc_load_string("", 0, "empty.yaml", registry_types, &err));
    assert_string_equal(err.msg, "empty.yaml: empty config");
    /* a list is not a config */
    assert_null(epc_load_string("- a\n", 4, "list.yaml", registry_types, &err));
    assert_string_equal(err.msg, "list.yaml:1:1: field '(document)': expected a mapping, got a list");
    /* kind without apiVersion */
    assert_null(epc_load_string("kind: EndpointPickerConfig\n", 27, "k.yaml", registry_types, &err));
    assert_string_equal(err.msg, "k.yaml:1:1: missing field 'apiVersion' (kind is set)");
}

static void test_unknown_parameters_warn(void **state)
{
    kv_err err = {0};
    epc_config *c = epc_load_file(D "good-unknown-param.yaml", registry_types, &err);
    assert_non_null(c);
    warnings w = {0};
    sched_env env = {.seed = 1, .warn = collect, .warn_ctx = &w};
    sched *s = sched_new(c, &env, &err);
    assert_non_null(s);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.msg[0], D "good-unknown-param.yaml:5:5: plugin 'load-aware-scorer' (load-aware-scorer): "
                                    "unknown parameter 'treshold' ignored");
    assert_string_equal(w.msg[1], D "good-unknown-param.yaml:6:5: plugin 'load-aware-scorer' (load-aware-scorer): "
                                    "unknown parameter 'extra' ignored");
    sched_free(s);
    epc_free(c);
}

static const struct {
    const char *file, *msg;
} bad_load[] = {
    {"bad-unknown-field.yaml", "3:1: unknown field 'plugin' (expected apiVersion, kind, plugins, "
                               "schedulingProfiles, featureGates, saturationDetector, data, dataLayer)"},
    {"bad-duplicate-name.yaml", "4:9: field 'plugins[1]': duplicate plugin name 'queue-scorer' (first used at line 2)"},
    {"bad-unknown-type.yaml", "4:9: field 'plugins[1].type': unknown plugin type 'magic-scorer'"},
    {"bad-unknown-ref.yaml", "6:16: field 'schedulingProfiles[0].plugins[0].pluginRef': unknown plugin 'queue'"},
    {"bad-two-handlers.yaml",
     "3:3: field 'plugins[1]': more than one profile handler ('single-profile-handler' and 'second')"},
    {"bad-single-two-profiles.yaml",
     "5:1: field 'schedulingProfiles': single-profile-handler 'single-profile-handler' cannot run 2 profiles"},
    {"bad-no-handler.yaml", "4:1: field 'schedulingProfiles': 2 profiles need a profile handler plugin"},
    {"bad-weight.yaml", "6:39: field 'schedulingProfiles[0].plugins[0].weight': expected a number, got 'heavy'"},
    {"bad-api-version.yaml", "1:13: field 'apiVersion': unsupported 'inference.networking.k8s.io/v1' (expected "
                             "inference.networking.x-k8s.io/v1alpha1 or llm-d.ai/v1alpha1)"},
    {"bad-kind.yaml", "2:7: field 'kind': unsupported 'InferencePool' (expected EndpointPickerConfig)"},
    {"bad-missing-type.yaml", "2:3: field 'plugins[0]': missing field 'type'"},
    {"bad-plugin-field.yaml", "3:3: field 'plugins[0]': unknown field 'params' (expected name, type, parameters)"},
    {"bad-two-pickers.yaml", "9:16: field 'schedulingProfiles[0].plugins[1].pluginRef': profile 'default' already "
                             "has picker 'max-score-picker'"},
    {"bad-saturation.yaml", "3:25: field 'saturationDetector.kvCacheUtilThreshold': 1.5 is out of range [0, 1]"},
    {"bad-default-two-pickers.yaml", "3:3: field 'plugins[1]': the default profile would have two pickers "
                                     "('random-picker' and 'max-score-picker'); list schedulingProfiles"},
    {"bad-handler-in-profile.yaml", "7:16: field 'schedulingProfiles[0].plugins[0].pluginRef': "
                                    "'single-profile-handler' is a profile handler; it has no place in a profile"},
};

/* Fails unless err is exactly "<path>:<msg>". */
static void assert_positioned(const char *path, const char *msg, const kv_err *err)
{
    char want[640];
    snprintf(want, sizeof want, "%s:%s", path, msg);
    if (strcmp(err->msg, want) != 0)
        fail_msg("%s:\n got  %s\n want %s", path, err->msg, want);
}

static void test_bad_files_rejected_with_position(void **state)
{
    for (size_t i = 0; i < sizeof bad_load / sizeof bad_load[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, D "%s", bad_load[i].file);
        kv_err err = {0};
        epc_config *c = epc_load_file(path, registry_types, &err);
        if (c)
            fail_msg("%s loaded", path);
        assert_positioned(path, bad_load[i].msg, &err);
        assert_int_equal(err.code, KV_EINVAL);
    }
}

/* Parameter errors surface when the plugins are built. */
static const struct {
    const char *file, *msg;
} bad_build[] = {
    {"bad-param-range.yaml", "4:16: field 'load-aware-scorer.parameters.threshold': 0 is out of range [1, 2147483647]"},
    {"bad-hash-algorithm.yaml", "6:22: field 'precise-prefix-cache-scorer.parameters.tokenProcessorConfig."
                                "hashAlgorithm': unknown algorithm 'sha256' (expected xxh64 or fnv64a-cbor)"},
};

static void test_bad_parameters_rejected_at_build(void **state)
{
    for (size_t i = 0; i < sizeof bad_build / sizeof bad_build[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, D "%s", bad_build[i].file);
        kv_err err = {0};
        epc_config *c = epc_load_file(path, registry_types, &err);
        if (!c)
            fail_msg("%s: %s", path, err.msg);
        sched_env env = {.seed = 1};
        sched *s = sched_new(c, &env, &err);
        if (s)
            fail_msg("%s built", path);
        assert_positioned(path, bad_build[i].msg, &err);
        epc_free(c);
    }
}

/* Every truncation and many one-byte corruptions of the guide's file either load (and
 * then build or fail with a message) or fail with a positioned message; none crashes or
 * leaks (ASan). */
static void test_mutated_guide_never_crashes(void **state)
{
    FILE *f = fopen(D "guide-precise.yaml", "rb");
    assert_non_null(f);
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    static const char subst[] = {':', '-', '{', '}', '[', ' ', '\n', 'x', '"', '#', '&', '*', '\0'};
    int loaded = 0, rejected = 0;
    for (size_t cut = 0; cut <= n; cut++) {
        for (size_t k = 0; k <= sizeof subst; k++) {
            char buf[4096];
            memcpy(buf, text, n);
            size_t len = cut;
            if (k < sizeof subst) { /* corrupt one byte, keep the length */
                buf[cut < n ? cut : n - 1] = subst[k];
                len = n;
            }
            kv_err err = {0};
            epc_config *c = epc_load_string(buf, len, "m.yaml", registry_types, &err);
            if (!c) {
                assert_true(err.code < 0);
                assert_true(err.msg[0] != 0);
                rejected++;
                continue;
            }
            loaded++;
            sched *s = sched_new(c, &(sched_env){.seed = 1}, &err);
            if (!s)
                assert_true(err.msg[0] != 0);
            sched_free(s);
            epc_free(c);
        }
    }
    assert_true(loaded > 0 && rejected > 0);
}

static void test_missing_file(void **state)
{
    kv_err err = {0};
    assert_null(epc_load_file(D "does-not-exist.yaml", registry_types, &err));
    assert_non_null(strstr(err.msg, "does-not-exist.yaml"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guide_file_loads_verbatim),
        cmocka_unit_test(test_precise_preset_is_the_guide),
        cmocka_unit_test(test_every_preset_loads_and_builds),
        cmocka_unit_test(test_preset_names),
        cmocka_unit_test(test_gie_defaults),
        cmocka_unit_test(test_load_from_string_and_node),
        cmocka_unit_test(test_unknown_parameters_warn),
        cmocka_unit_test(test_bad_files_rejected_with_position),
        cmocka_unit_test(test_bad_parameters_rejected_at_build),
        cmocka_unit_test(test_mutated_guide_never_crashes),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
