/* test_llmd_plugins: llm-d-router's v0.9+ plugin set (producers, the generic prefix scorer,
 * the affinity filter, the token-load scorer, the data-layer plugins) against reference
 * computations of the Go source's formulas, and every stored sample EndpointPickerConfig
 * (tests/data/llm-d-router/SOURCES.md) loaded as ./epp and ./sim load it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "blockkeys.h"
#include "burst_prefix_cache_producer.h"
#include "config.h"
#include "file_discovery.h"
#include "kvindex.h"
#include "precise_prefix_cache_scorer.h"
#include "registry.h"
#include "scheduler.h"
#include "token_producer.h"
#include "support/sched_fixture.h"

/* ---- references: the Go formulas, written out independently ------------------------- */

/* token-load-scorer: 1 - min(load, threshold) / threshold, 1 when nothing is in flight. */
static double ref_token_load(double inflight, double uncached, double threshold)
{
    double t = inflight + uncached;
    return t <= 0 ? 1.0 : 1.0 - fmin(t, threshold) / threshold;
}

/* prefix-cache-scorer on a producer's match. */
static double ref_prefix(double matched, double total, double block, double w, double scale)
{
    double len = fmin(1.0, matched * block / scale);
    return w * len * len + (1 - w) * matched / total;
}

/* ---- helpers ------------------------------------------------------------------------- */

#define BLOCK 64

/* n tokens: the first `shared` blocks of a common prefix, then tokens unique to salt. */
static void tokens(uint32_t *out, size_t n, size_t shared_blocks, uint32_t salt)
{
    for (size_t i = 0; i < n; i++)
        out[i] = i < shared_blocks * BLOCK ? (uint32_t)(1000 + i) : salt * 100000u + (uint32_t)i;
}

static char yaml[4096];

static const char *optimized(const char *filter_params, const char *ifl_params)
{
    snprintf(yaml, sizeof yaml,
             "plugins:\n"
             "- type: approx-prefix-cache-producer\n"
             "  parameters: {autoTune: false, blockSizeTokens: 64}\n"
             "- type: inflight-load-producer\n"
             "  parameters: {%s}\n"
             "- type: prefix-cache-affinity-filter\n"
             "  parameters: {%s}\n"
             "- type: token-load-scorer\n"
             "  parameters: {queueThresholdTokens: 1000}\n"
             "- type: max-score-picker\n"
             "schedulingProfiles:\n"
             "- name: default\n"
             "  plugins:\n"
             "  - pluginRef: prefix-cache-affinity-filter\n"
             "  - pluginRef: token-load-scorer\n"
             "  - pluginRef: max-score-picker\n",
             ifl_params, filter_params);
    return yaml;
}

#define TLS "token-load-scorer"

/* ---- token-load-scorer and inflight-load-producer ------------------------------------ */

static void test_token_load_formula(void **state)
{
    (void)state;
    fx *f = fx_new(optimized("", ""), 4, 1);
    assert_non_null(f);
    uint32_t a[256], b[128];
    tokens(a, 256, 0, 1);
    tokens(b, 128, 0, 2);
    sched_request r1 = fx_tokens("r1", a, 256);
    fx_assign(f, &r1, &f->eps[0]);                   /* 256 uncached tokens in flight on ep0 */
    sched_request r2 = fx_tokens("r2", b, 128);
    sched_endpoint *got = fx_pick(f, &r2);
    assert_non_null(got);
    assert_ptr_not_equal(got, &f->eps[0]);
    assert_float_equal(fx_score(f, TLS, 0), ref_token_load(256, 128, 1000), 1e-12);
    for (size_t i = 1; i < 4; i++)
        assert_float_equal(fx_score(f, TLS, i), ref_token_load(0, 128, 1000), 1e-12);
    /* The first response chunk releases the prompt's tokens (prefill done). */
    sched_response_started(f->s, &r1, &f->eps[0]);
    assert_non_null(fx_pick(f, &r2));
    assert_float_equal(fx_score(f, TLS, 0), ref_token_load(0, 128, 1000), 1e-12);
    fx_done(f, &r1, &f->eps[0]);
    fx_free(f);
}

static void test_inflight_output_estimate(void **state)
{
    (void)state;
    fx *f = fx_new(optimized("", "addEstimatedOutputTokens: true, maxEstimatedOutputTokens: 100"), 2, 1);
    assert_non_null(f);
    uint32_t a[100], b[100];
    tokens(a, 100, 0, 3);
    tokens(b, 100, 0, 4);
    sched_request r1 = fx_tokens("r1", a, 100);
    r1.output_tokens_hint = 120;
    /* min(round(100 x 1.5), max_tokens 120, maxEstimatedOutputTokens 100) = 100 */
    assert_non_null(fx_pick(f, &r1));
    assert_float_equal(fx_score(f, TLS, 0), ref_token_load(0, 200, 1000), 1e-12);
    fx_assign(f, &r1, &f->eps[0]);
    sched_request r2 = fx_tokens("r2", b, 100);
    r2.output_tokens_hint = 120;
    assert_ptr_equal(fx_pick(f, &r2), &f->eps[1]);
    assert_float_equal(fx_score(f, TLS, 0), ref_token_load(200, 200, 1000), 1e-12);
    /* With output estimated, the first chunk releases nothing (no prefill profile). */
    sched_response_started(f->s, &r1, &f->eps[0]);
    assert_non_null(fx_pick(f, &r2));
    assert_float_equal(fx_score(f, TLS, 0), ref_token_load(200, 200, 1000), 1e-12);
    fx_done(f, &r1, &f->eps[0]);
    assert_non_null(fx_pick(f, &r2));
    assert_float_equal(fx_score(f, TLS, 0), ref_token_load(0, 200, 1000), 1e-12);
    fx_free(f);
}

/* ---- prefix-cache-affinity-filter ------------------------------------------------------ */

static void test_affinity_sticks_and_gate_breaks(void **state)
{
    (void)state;
    uint32_t a[256];
    tokens(a, 256, 4, 0);
    sched_request r1 = fx_tokens("r1", a, 256), r2 = fx_tokens("r2", a, 256), r3 = fx_tokens("r3", a, 256);
    /* Default gate (18 s): two copies in flight on ep0 cost 512/15928 s; it stays sticky
     * although the token-load scorer alone would send the request elsewhere. */
    fx *f = fx_new(optimized("", ""), 4, 1);
    assert_non_null(f);
    fx_assign(f, &r1, &f->eps[0]);
    fx_assign(f, &r2, &f->eps[0]);
    assert_ptr_equal(fx_pick(f, &r3), &f->eps[0]);
    assert_true(fx_score(f, TLS, 1) < 0);            /* filtered out before scoring */
    /* The uncached share on ep0 is 0: all 4 blocks are held there. */
    assert_float_equal(fx_score(f, TLS, 0), ref_token_load(512, 0, 1000), 1e-12);
    fx_free(f);
    /* Gate at 10 ms with 1000 tokens/s: ep0's 512 ms over the others' 0 breaks it. */
    f = fx_new(optimized("maxTTFTPenaltyMs: 10, peakPrefillThroughput: 1000", ""), 4, 1);
    assert_non_null(f);
    fx_assign(f, &r1, &f->eps[0]);
    fx_assign(f, &r2, &f->eps[0]);
    sched_endpoint *got = fx_pick(f, &r3);
    assert_ptr_not_equal(got, &f->eps[0]);
    assert_float_equal(fx_score(f, TLS, 0), ref_token_load(512, 0, 1000), 1e-12);
    assert_float_equal(fx_score(f, TLS, 1), ref_token_load(0, 256, 1000), 1e-12);
    /* Once both prefills are done nothing is in flight: sticky again. */
    sched_response_started(f->s, &r1, &f->eps[0]);
    sched_response_started(f->s, &r2, &f->eps[0]);
    assert_ptr_equal(fx_pick(f, &r3), &f->eps[0]);
    fx_free(f);
}

static void test_affinity_threshold(void **state)
{
    (void)state;
    uint32_t a[256], b[256];
    tokens(a, 256, 4, 0);
    tokens(b, 256, 3, 7);                            /* shares 3 of a's 4 blocks: 0.75 */
    sched_request r1 = fx_tokens("r1", a, 256), r2 = fx_tokens("r2", a, 256), q = fx_tokens("q", b, 256);
    fx *f = fx_new(optimized("", ""), 4, 1);         /* 0.75 < 0.80: nobody is sticky */
    assert_non_null(f);
    fx_assign(f, &r1, &f->eps[0]);
    fx_assign(f, &r2, &f->eps[0]);
    assert_ptr_not_equal(fx_pick(f, &q), &f->eps[0]);
    for (size_t i = 0; i < 4; i++)
        assert_true(fx_score(f, TLS, i) >= 0);       /* all kept */
    fx_free(f);
    f = fx_new(optimized("affinityThreshold: 0.7", ""), 4, 1);
    assert_non_null(f);
    fx_assign(f, &r1, &f->eps[0]);
    fx_assign(f, &r2, &f->eps[0]);
    assert_ptr_equal(fx_pick(f, &q), &f->eps[0]);
    /* uncached on ep0: (4 - 3) blocks x 64 */
    assert_float_equal(fx_score(f, TLS, 0), ref_token_load(512, 64, 1000), 1e-12);
    fx_free(f);
    /* Exploration 1: the gate is always skipped. */
    f = fx_new(optimized("affinityThreshold: 0.7, explorationProbability: 1", ""), 4, 1);
    assert_non_null(f);
    fx_assign(f, &r1, &f->eps[0]);
    fx_assign(f, &r2, &f->eps[0]);
    assert_ptr_not_equal(fx_pick(f, &q), &f->eps[0]);
    fx_free(f);
}

/* ---- prefix-cache-scorer reading a producer ------------------------------------------- */

static void test_prefix_scorer_on_producer(void **state)
{
    (void)state;
    const char *cfg = "plugins:\n"
                      "- type: approx-prefix-cache-producer\n"
                      "  parameters: {autoTune: false, blockSizeTokens: 64}\n"
                      "- type: prefix-cache-scorer\n"
                      "  parameters: {prefixMatchInfoProducerName: approx-prefix-cache-producer,\n"
                      "               matchLengthWeight: 0.5, matchLengthScaleTokens: 512}\n"
                      "- type: max-score-picker\n";
    fx *f = fx_new(cfg, 3, 1);
    assert_non_null(f);
    uint32_t a[256], b[256];
    tokens(a, 256, 4, 0);
    tokens(b, 256, 3, 9);
    sched_request r1 = fx_tokens("r1", a, 256), q = fx_tokens("q", b, 256);
    fx_assign(f, &r1, &f->eps[2]);
    assert_ptr_equal(fx_pick(f, &q), &f->eps[2]);
    assert_float_equal(fx_score(f, "prefix-cache-scorer", 2), ref_prefix(3, 4, 64, 0.5, 512), 1e-12);
    assert_true(fx_score(f, "prefix-cache-scorer", 0) == 0.0);
    fx_free(f);
}

static void test_precise_producer_feeds_scorer(void **state)
{
    (void)state;
    const char *cfg = "plugins:\n"
                      "- type: precise-prefix-cache-producer\n"
                      "  parameters: {tokenProcessorConfig: {blockSizeTokens: 64}}\n"
                      "- type: prefix-cache-scorer\n"
                      "  parameters: {prefixMatchInfoProducerName: precise-prefix-cache-producer}\n"
                      "- type: max-score-picker\n";
    fx *f = fx_new(cfg, 3, 1);
    assert_non_null(f);
    sched_kvsource *src = NULL;
    assert_int_equal(pps_kvsources(f->s, &src, 1), 1);
    uint32_t a[256];
    tokens(a, 256, 4, 0);
    uint64_t keys[4];
    assert_int_equal(blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), a, 256, NULL, 0, NULL, keys, 4), 4);
    kv_err err = {0};
    int slot = kvindex_endpoint_add(src->index, "10.0.0.2:8000", &err);
    assert_true(slot >= 0);
    assert_int_equal(kvindex_store(src->index, slot, KVTIER_GPU, NULL, 0, keys, 3, &err), KV_OK);
    sched_request q = fx_tokens("q", a, 256);
    assert_ptr_equal(fx_pick(f, &q), &f->eps[1]);
    assert_float_equal(fx_score(f, "prefix-cache-scorer", 1), 0.75, 1e-12);
    fx_free(f);
}

static void test_speculative_indexing(void **state)
{
    (void)state;
    const char *cfg = "plugins:\n"
                      "- type: precise-prefix-cache-producer\n"
                      "  parameters: {tokenProcessorConfig: {blockSizeTokens: 64}, speculativeIndexing: true,\n"
                      "               speculativeTTL: 2s}\n"
                      "- type: prefix-cache-scorer\n"
                      "  parameters: {prefixMatchInfoProducerName: precise-prefix-cache-producer}\n"
                      "- type: max-score-picker\n";
    fx *f = fx_new(cfg, 4, 1);
    assert_non_null(f);
    uint32_t a[256];
    tokens(a, 256, 4, 0);
    sched_request r1 = fx_tokens("r1", a, 256), r2 = fx_tokens("r2", a, 256), r3 = fx_tokens("r3", a, 256);
    /* No event yet: the first request goes anywhere, and its pick then holds all 4 blocks. */
    sched_endpoint *first = fx_route(f, &r1);
    assert_non_null(first);
    f->now = 1.9;
    assert_ptr_equal(fx_pick(f, &r2), first);
    assert_float_equal(fx_score(f, "prefix-cache-scorer", first->id), 1.0, 1e-12);
    /* The TTL ends: nothing is held any more. */
    f->now = 2.1;
    assert_non_null(fx_pick(f, &r2));
    for (size_t i = 0; i < 4; i++)
        assert_true(fx_score(f, "prefix-cache-scorer", i) == 0.0);
    /* Events confirm 2 blocks on a pod: they stay after every speculative entry expired. */
    fx_route(f, &r2);
    sched_kvsource *src = NULL;
    assert_int_equal(pps_kvsources(f->s, &src, 1), 1);
    uint64_t keys[4];
    assert_int_equal(blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), a, 256, NULL, 0, NULL, keys, 4), 4);
    kv_err err = {0};
    int slot = kvindex_endpoint_add(src->index, f->names[3], &err);
    assert_true(slot >= 0);
    assert_int_equal(kvindex_store(src->index, slot, KVTIER_GPU, NULL, 0, keys, 2, &err), KV_OK);
    f->now = 10;
    assert_ptr_equal(fx_pick(f, &r3), &f->eps[3]);
    assert_float_equal(fx_score(f, "prefix-cache-scorer", 3), 0.5, 1e-12);
    fx_free(f);
}

/* ---- disagg-profile-handler and its deciders ------------------------------------------- */

static size_t prefill_runs(fx *f, const sched_request *r, sched_result *res)
{
    kv_err err = {0};
    assert_int_equal(sched_schedule(f->s, r, f->ptrs, f->n, res, NULL, &err), KV_OK);
    return res->n_others;
}

static void test_disagg_prefix_based(void **state)
{
    (void)state;
    const char *cfg = "plugins:\n"
                      "- type: approx-prefix-cache-producer\n"
                      "  parameters: {autoTune: false, blockSizeTokens: 64}\n"
                      "- type: prefix-based-pd-decider\n"
                      "  parameters: {nonCachedTokens: 100, promptTokens: 150}\n"
                      "- type: disagg-profile-handler\n"
                      "  parameters: {deciders: {prefill: prefix-based-pd-decider}}\n"
                      "- type: prefix-cache-scorer\n"
                      "- type: max-score-picker\n"
                      "schedulingProfiles:\n"
                      "- name: prefill\n"
                      "  plugins: [{pluginRef: max-score-picker}]\n"
                      "- name: decode\n"
                      "  plugins: [{pluginRef: prefix-cache-scorer}, {pluginRef: max-score-picker}]\n";
    fx *f = fx_new(cfg, 4, 1);
    assert_non_null(f);
    uint32_t a[256], b[128];
    tokens(a, 256, 4, 0);
    tokens(b, 128, 0, 5);
    sched_request r1 = fx_tokens("r1", a, 256), r2 = fx_tokens("r2", a, 256), shortr = fx_tokens("s", b, 128);
    sched_result res;
    /* Cold: 256 uncached tokens >= 100 -> prefill runs; decode stays primary. */
    assert_int_equal(prefill_runs(f, &r1, &res), 1);
    assert_string_equal(res.profile, "decode");
    assert_string_equal(res.others[0].profile, "prefill");
    fx_assign(f, &r1, res.targets[0]);
    /* Warm on the decode pick: 256 - 4 x 64 = 0 uncached -> decode only. */
    assert_int_equal(prefill_runs(f, &r2, &res), 0);
    /* Under promptTokens (150): decode only, whatever is cached. */
    assert_int_equal(prefill_runs(f, &shortr, &res), 0);
    fx_free(f);
    /* always-disagg-pd-decider: prefill always runs; no decider: it never does. */
    static const struct {
        const char *handler, *decider;
        size_t want;
    } cases[] = {
        {"  parameters: {deciders: {prefill: always-disagg-pd-decider}}\n", "- type: always-disagg-pd-decider\n", 1},
        {"", "", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(yaml, sizeof yaml,
                 "plugins:\n%s- type: disagg-profile-handler\n%s- type: max-score-picker\n"
                 "schedulingProfiles:\n"
                 "- {name: prefill, plugins: [{pluginRef: max-score-picker}]}\n"
                 "- {name: decode, plugins: [{pluginRef: max-score-picker}]}\n",
                 cases[i].decider, cases[i].handler);
        assert_non_null(f = fx_new(yaml, 2, 1));
        assert_int_equal(prefill_runs(f, &shortr, &res), cases[i].want);
        fx_free(f);
    }
}

/* label-selector-filter: by-label-selector's name since llm-d-router v0.9. */
static void test_label_selector_filter(void **state)
{
    (void)state;
    fx *f = fx_new("plugins:\n- type: label-selector-filter\n  parameters: {matchLabels: {app: vllm}}\n"
                   "- type: random-picker\n",
                   3, 1);
    assert_non_null(f);
    static const sched_kv app = {"app", "vllm"};
    f->eps[1].labels = &app;
    f->eps[1].n_labels = 1;
    uint32_t a[64];
    tokens(a, 64, 0, 1);
    sched_request r = fx_tokens("r", a, 64);
    for (int i = 0; i < 8; i++)
        assert_ptr_equal(fx_pick(f, &r), &f->eps[1]);
    fx_free(f);
}

/* ---- loading ---------------------------------------------------------------------------- */

/* Loads path as ./epp does (config, then the scheduler); KV_OK or the error in err. */
static int load(const char *path, fx_warnbuf *w, kv_err *err)
{
    epc_config *c = epc_load_file(path, registry_types, err);
    if (!c)
        return err->code;
    sched_env env = {.seed = 1, .warn = fx_collect, .warn_ctx = w};
    sched *s = sched_new(c, &env, err);
    int rc = s ? KV_OK : err->code;
    sched_free(s);
    epc_free(c);
    return rc;
}

static const struct {
    const char *file;
    const char *error;        /* NULL: loads; else a substring of the error */
} samples[] = {
    {"epp-config.yaml", NULL},
    {"epp-estimate-prefix-cache-config.yaml", NULL},
    {"epp-precise-prefix-cache-config.yaml", NULL},
    {"sim-epp-config.yaml", NULL},
    {"sim-epp-kvcache-config.yaml", NULL},
    {"sim-epp-no-hit-lru.yaml", NULL},
    {"sim-epp-tokenizer-vllm-http-config.yaml", NULL},
    {"guide-precise-prefix-cache-routing.yaml", NULL},
    {"guide-optimized-baseline.yaml", NULL},
    {"guide-precise-prefix-cache-aware-v0.8.yaml", NULL},
    {"epp-burst-prefix-cache-config.yaml", NULL},
    {"epp-mm-embeddings-cache-config.yaml", "multimodal encoder (embeddings) cache"},
    {"pd-epp-config.yaml", NULL},
    {"sim-pd-epp-config.yaml", NULL},
    {"pd-topology-epp-config.yaml", "not available in kvroute"},
    {"sim-e-p-d-epp-config.yaml", "not available in kvroute"},
    {"sim-e-pd-epp-config.yaml", "not available in kvroute"},
    {"dp-epp-config.yaml", "data-parallel rank as its own endpoint"},
    {"sim-epp-gpu-config.yaml", "not available in kvroute"},
    {"probabilistic-admitter-epp-config.yaml", "flowControl"},
    {"sim-program-aware-config.yaml", "flowControl"},
    {"soft-reflective-ceiling-epp-config.yaml", "flowControl"},
};

static void test_samples_load(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/data/llm-d-router/%s", samples[i].file);
        fx_warnbuf w = {0};
        kv_err err = {0};
        int rc = load(path, &w, &err);
        if (!samples[i].error && rc != KV_OK)
            fail_msg("%s: %s", samples[i].file, err.msg);
        if (samples[i].error && (rc == KV_OK || !strstr(err.msg, samples[i].error)))
            fail_msg("%s: want an error with \"%s\", got %s", samples[i].file, samples[i].error,
                     rc ? err.msg : "success");
    }
}

static void test_guide_warnings_named(void **state)
{
    (void)state;
    fx_warnbuf w = {0};
    kv_err err = {0};
    assert_int_equal(load("tests/data/llm-d-router/guide-optimized-baseline.yaml", &w, &err), KV_OK);
    assert_non_null(strstr(w.text, "guide-optimized-baseline.yaml:22:31: plugin 'prefix-cache-affinity-filter': "
                                   "maxTokensInFlightPenalty was removed in llm-d-router v0.9"));
    w = (fx_warnbuf){0};
    assert_int_equal(load("tests/data/llm-d-router/guide-precise-prefix-cache-aware-v0.8.yaml", &w, &err), KV_OK);
    assert_non_null(strstr(w.text, "type 'tokenizer' is deprecated"));
    assert_non_null(strstr(w.text, "parameter 'udsTokenizerConfig' is accepted and ignored"));
    assert_non_null(strstr(w.text, "profile 'default': plugin 'tokenizer' (tokenizer) is not a filter, scorer or "
                                   "picker"));
}

static void test_bad_wiring_named(void **state)
{
    (void)state;
    kv_err err = {0};
    const char *nop = "plugins:\n- type: prefix-cache-affinity-filter\n- type: max-score-picker\n";
    epc_config *c = epc_load_string(nop, strlen(nop), "t.yaml", registry_types, &err);
    assert_non_null(c);
    sched_env env = {.seed = 1};
    assert_null(sched_new(c, &env, &err));
    assert_string_equal(err.msg, "plugin 'prefix-cache-affinity-filter' (prefix-cache-affinity-filter): default "
                                 "producer 'approx-prefix-cache-producer' names no plugin of this config (declare it "
                                 "under plugins:)");
    epc_free(c);
    const char *bad = "plugins:\n- type: token-load-scorer\n  parameters: {inFlightLoadProducerName: nope}\n"
                      "- type: max-score-picker\n";
    assert_non_null(c = epc_load_string(bad, strlen(bad), "t.yaml", registry_types, &err));
    assert_null(sched_new(c, &env, &err));
    assert_non_null(strstr(err.msg, "inFlightLoadProducerName 'nope' names no plugin"));
    epc_free(c);
    const char *lat = "plugins:\n- type: approx-prefix-cache-producer\n- type: prefix-cache-affinity-filter\n"
                      "  parameters: {ttftSource: latencyPredictor}\n- type: max-score-picker\n";
    assert_non_null(c = epc_load_string(lat, strlen(lat), "t.yaml", registry_types, &err));
    assert_null(sched_new(c, &env, &err));
    assert_non_null(strstr(err.msg, "ttftSource"));
    assert_non_null(strstr(err.msg, "latency predictor"));
    epc_free(c);
    const char *dl = "plugins:\n- type: max-score-picker\ndataLayer:\n  sources:\n  - pluginRef: scrape\n";
    assert_null(epc_load_string(dl, strlen(dl), "t.yaml", registry_types, &err));
    assert_string_equal(err.msg, "t.yaml:5:16: field 'dataLayer.sources[0].pluginRef': unknown plugin 'scrape'");
}

/* ---- burst-prefix-cache-producer ------------------------------------------------------- */

static const char *burst_cfg(const char *params)
{
    snprintf(yaml, sizeof yaml,
             "plugins:\n"
             "- type: burst-prefix-cache-producer\n"
             "  parameters: {%s}\n"
             "- type: prefix-cache-scorer\n"
             "  parameters: {prefixMatchInfoProducerName: burst-prefix-cache-producer}\n"
             "- type: max-score-picker\n",
             params);
    return yaml;
}

/* A window of n requests (prompt[i] tokens: blocks[i] blocks, 3 when blocks is NULL)
 * placed, then each scheduled as the drivers do; got[i] is the endpoint index request i
 * was routed to, -1 when its prefix score was 0 everywhere (no assignment). */
static void burst_window_of(fx *f, uint32_t (*prompt)[3 * BLOCK], const size_t *blocks, size_t n, int *got)
{
    char ids[16][8];
    sched_request rq[16];
    const sched_request *ptrs[16];
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "b%zu", i);
        rq[i] = fx_tokens(ids[i], prompt[i], (blocks ? blocks[i] : 3) * BLOCK);
        ptrs[i] = &rq[i];
    }
    burst *b = burst_of(f->s);
    assert_non_null(b);
    kv_err err = {0};
    assert_int_equal(burst_assign(b, ptrs, n, f->ptrs, f->n, &err), KV_OK);
    for (size_t i = 0; i < n; i++) {
        sched_endpoint *ep = fx_route(f, &rq[i]);
        assert_non_null(ep);
        got[i] = -1;
        for (size_t e = 0; e < f->n; e++)
            if (fx_score(f, "prefix-cache-scorer", e) == 1.0)
                got[i] = (int)e;
        if (got[i] >= 0)
            assert_ptr_equal(ep, &f->eps[got[i]]);
    }
}

static void burst_window(fx *f, uint32_t (*prompt)[3 * BLOCK], size_t n, int *got)
{
    burst_window_of(f, prompt, NULL, n, got);
}

/* llm-d-router's placement: identical prompts stay together on the least loaded endpoint,
 * maxPerReplica spills a group, a request alone gets no affinity unless it shares
 * minColocateBlocks leading blocks with another, which then share an endpoint. */
static void test_burst_placement(void **state)
{
    (void)state;
    uint32_t p[16][3 * BLOCK];
    int got[16];
    /* 4 x A, 3 x B, C alone */
    fx *f = fx_new(burst_cfg(""), 4, 1);
    assert_non_null(f);
    for (size_t i = 0; i < 8; i++)
        tokens(p[i], 3 * BLOCK, 0, i < 4 ? 1 : i < 7 ? 2 : 3);
    burst_window(f, p, 8, got);
    assert_true(got[0] >= 0 && got[4] >= 0 && got[0] != got[4]);
    for (size_t i = 1; i < 4; i++)
        assert_int_equal(got[i], got[0]);
    for (size_t i = 5; i < 7; i++)
        assert_int_equal(got[i], got[4]);
    assert_int_equal(got[7], -1);
    fx_free(f);

    /* maxPerReplica 2: five samples of one prompt fill two endpoints, then a third */
    f = fx_new(burst_cfg("maxPerReplica: 2, windowDurationMs: 50"), 4, 1);
    for (size_t i = 0; i < 5; i++)
        tokens(p[i], 3 * BLOCK, 0, 9);
    burst_window(f, p, 5, got);
    int per[4] = {0};
    for (size_t i = 0; i < 5; i++) {
        assert_true(got[i] >= 0);
        per[got[i]]++;
    }
    int twos = 0, ones = 0, zeros = 0;
    for (size_t e = 0; e < 4; e++)
        twos += per[e] == 2, ones += per[e] == 1, zeros += per[e] == 0;
    assert_true(twos == 2 && ones == 1 && zeros == 1);
    assert_true(burst_window_s(burst_of(f->s)) == 0.05);
    fx_free(f);

    /* four different prompts sharing their first 2 of 3 blocks, one sharing nothing, over
     * two endpoints: with minColocateBlocks 2 they pair up under the fair share (2 each) */
    for (int colo = 0; colo <= 2; colo += 2) {
        char params[64];
        snprintf(params, sizeof params, "minColocateBlocks: %d", colo);
        f = fx_new(burst_cfg(params), 2, 1);
        for (size_t i = 0; i < 4; i++)
            tokens(p[i], 3 * BLOCK, 2, 21 + (uint32_t)i);
        tokens(p[4], 3 * BLOCK, 0, 29);
        burst_window(f, p, 5, got);
        if (colo) {
            assert_true(got[0] >= 0 && got[2] >= 0 && got[0] != got[2]);
            assert_int_equal(got[1], got[0]);
            assert_int_equal(got[3], got[2]);
        } else {
            for (size_t i = 0; i < 4; i++)
                assert_int_equal(got[i], -1);
        }
        assert_int_equal(got[4], -1);
        fx_free(f);
    }
}

/* balanceBy: A (3 blocks) x 2, B (1 block) x 3, C (1 block) x 2 over two endpoints. By
 * requests C joins A (2 requests against B's 3); by tokens it joins B (1 block against
 * A's 3). */
static void test_burst_balance(void **state)
{
    (void)state;
    uint32_t p[16][3 * BLOCK];
    static const size_t blocks[7] = {3, 3, 1, 1, 1, 1, 1};
    int got[16];
    for (int by_tokens = 0; by_tokens < 2; by_tokens++) {
        fx *f = fx_new(burst_cfg(by_tokens ? "balanceBy: tokens" : "balanceBy: requests"), 2, 1);
        assert_non_null(f);
        for (size_t i = 0; i < 7; i++)
            tokens(p[i], 3 * BLOCK, 0, i < 2 ? 1 : i < 5 ? 2 : 3);
        burst_window_of(f, p, blocks, 7, got);
        assert_true(got[0] >= 0 && got[2] >= 0 && got[0] != got[2] && got[5] >= 0);
        assert_int_equal(got[5], by_tokens ? got[2] : got[0]);
        fx_free(f);
    }
}

static void test_burst_parameters(void **state)
{
    (void)state;
    static const struct {
        const char *params, *error;
    } bad[] = {
        {"windowDurationMs: 0", "'burst-prefix-cache-producer.parameters.windowDurationMs': 0 is out of range [1, 10000]"},
        {"maxPerReplica: 0", "maxPerReplica': must be -1 (unbounded) or >= 1"},
        {"maxPrefixTokensToMatch: 10", "must be 0 or >= blockSizeTokens (64)"},
        {"balanceBy: bytes", "must be \"requests\" or \"tokens\", got \"bytes\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *y = burst_cfg(bad[i].params);
        kv_err err = {0};
        epc_config *c = epc_load_string(y, strlen(y), "t.yaml", registry_types, &err);
        assert_non_null(c);
        sched_env env = {.seed = 1};
        assert_null(sched_new(c, &env, &err));
        if (!strstr(err.msg, bad[i].error))
            fail_msg("%s: got %s", bad[i].params, err.msg);
        epc_free(c);
    }
}

/* file-discovery: its parameters and the dataLayer.discovery reference the drivers read; a
 * dataLayer section with a discovery and no sources loads and is kept. */
static void test_file_discovery_config(void **state)
{
    (void)state;
    kv_err err = {0};
    const char *ok = "plugins:\n- type: queue-scorer\n- type: file-discovery\n  name: eps\n"
                     "  parameters: {path: /etc/epp/endpoints.yaml, watchFile: true}\n"
                     "dataLayer:\n  discovery:\n    pluginRef: eps\n";
    epc_config *c = epc_load_string(ok, strlen(ok), "t.yaml", registry_types, &err);
    assert_non_null(c);
    assert_non_null(c->data_layer);
    assert_string_equal(c->discovery, "eps");
    sched_env env = {.seed = 1};
    sched *s = sched_new(c, &env, &err);
    assert_non_null(s);
    const file_discovery *fd = NULL;
    assert_int_equal(file_discovery_of(s, c, &fd, &err), KV_OK);
    assert_non_null(fd);
    assert_string_equal(fd->path, "/etc/epp/endpoints.yaml");
    assert_true(fd->watch_file);
    sched_free(s);
    epc_free(c);
    /* watchFile defaults to false; without dataLayer.discovery nothing is discovered */
    const char *plain = "plugins:\n- type: queue-scorer\n- type: file-discovery\n  parameters: {path: e.yaml}\n";
    assert_non_null(c = epc_load_string(plain, strlen(plain), "t.yaml", registry_types, &err));
    assert_non_null(s = sched_new(c, &env, &err));
    assert_int_equal(file_discovery_of(s, c, &fd, &err), KV_OK);
    assert_null(fd);
    assert_false(((const file_discovery *)sched_plugin_by_name(s, "file-discovery")->state)->watch_file);
    sched_free(s);
    epc_free(c);
    const char *nopath = "plugins:\n- type: queue-scorer\n- type: file-discovery\n  parameters: {watchFile: true}\n";
    assert_non_null(c = epc_load_string(nopath, strlen(nopath), "t.yaml", registry_types, &err));
    assert_null(sched_new(c, &env, &err));
    assert_string_equal(err.msg, "t.yaml:4:15: field 'file-discovery.parameters.path': required (the endpoints file)");
    epc_free(c);
    const char *mc = "plugins:\n- type: queue-scorer\n- type: multicluster-file-discovery\n  parameters: {path: p}\n";
    assert_non_null(c = epc_load_string(mc, strlen(mc), "t.yaml", registry_types, &err));
    assert_null(sched_new(c, &env, &err));
    assert_non_null(strstr(err.msg, "plugin 'multicluster-file-discovery' (multicluster-file-discovery): not available in "
                                    "kvroute: it discovers peer clusters"));
    epc_free(c);
    const char *wrong = "plugins:\n- type: queue-scorer\ndataLayer:\n  discovery: {pluginRef: queue-scorer}\n";
    assert_non_null(c = epc_load_string(wrong, strlen(wrong), "t.yaml", registry_types, &err));
    assert_non_null(s = sched_new(c, &env, &err));
    assert_int_equal(file_discovery_of(s, c, &fd, &err), KV_EINVAL);
    assert_string_equal(err.msg, "t.yaml: field 'dataLayer.discovery.pluginRef': plugin 'queue-scorer' (queue-scorer) "
                                 "discovers no endpoints (kvroute's endpoint discovery plugin is file-discovery)");
    sched_free(s);
    epc_free(c);
}

/* token-producer: where ./epp renders prompts, and its timeouts, as llm-d-router reads
 * vllm{url, endpointDiscovery, timeout, mmTimeout}. */
static void test_token_producer_render_target(void **state)
{
    (void)state;
    static const struct {
        const char *params;
        const char *url;            /* NULL: the serving pods */
        double timeout, chat;
        const char *warning;        /* a substring of the warnings, or NULL */
    } cases[] = {
        {"{modelName: m, vllm: {url: 'http://render:8000/'}}", "http://render:8000", 5, 30, NULL},
        {"{modelName: m, vllm: {url: 'http://r:1', timeout: 2s, mmTimeout: 1s}}", "http://r:1", 2, 2, NULL},
        {"{modelName: m, vllm: {endpointDiscovery: {portRules: []}, timeout: 500ms}}", NULL, 0.5, 30,
         "parameter 'portRules' is accepted and ignored"},
        {"{modelName: m}", "http://localhost:8000", 5, 30, "renders on http://localhost:8000, llm-d-router's default"},
        {"{modelName: m, udsTokenizerConfig: {socketFile: /tmp/t.sock}}", NULL, 5, 30,
         "parameter 'udsTokenizerConfig' is accepted and ignored"},
        {"{modelName: m, vllm: {url: 'https://r:1', caCertPath: /ca.crt}}", "https://r:1", 5, 30,
         "parameter 'caCertPath' is accepted and ignored"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char yaml[400];
        int n = snprintf(yaml, sizeof yaml, "plugins:\n- type: token-producer\n  parameters: %s\n- type: queue-scorer\n",
                         cases[i].params);
        kv_err err = {0};
        epc_config *c = epc_load_string(yaml, (size_t)n, "t.yaml", registry_types, &err);
        assert_non_null(c);
        fx_warnbuf w = {0};
        sched_env env = {.seed = 1, .warn = fx_collect, .warn_ctx = &w};
        sched *s = sched_new(c, &env, &err);
        if (!s)
            fail_msg("case %zu: %s", i, err.msg);
        const token_producer *tp = token_producer_of(s);
        assert_non_null(tp);
        if (cases[i].url)
            assert_string_equal(tp->url, cases[i].url);
        else
            assert_null(tp->url);
        assert_true(tp->timeout_s == cases[i].timeout && tp->chat_timeout_s == cases[i].chat);
        if (cases[i].warning && !strstr(w.text, cases[i].warning))
            fail_msg("case %zu: no warning \"%s\" in:\n%s", i, cases[i].warning, w.text);
        sched_free(s);
        epc_free(c);
    }
    const char *both = "plugins:\n- type: token-producer\n  parameters: {vllm: {url: 'http://r:1', endpointDiscovery: {}}}\n"
                       "- type: queue-scorer\n";
    kv_err err = {0};
    epc_config *c = epc_load_string(both, strlen(both), "t.yaml", registry_types, &err);
    sched_env env = {.seed = 1};
    assert_null(sched_new(c, &env, &err));
    assert_string_equal(err.msg, "t.yaml:3:22: field 'token-producer.parameters.vllm': url and endpointDiscovery are "
                                 "exclusive (llm-d-router)");
    epc_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_load_formula),
        cmocka_unit_test(test_inflight_output_estimate),
        cmocka_unit_test(test_affinity_sticks_and_gate_breaks),
        cmocka_unit_test(test_affinity_threshold),
        cmocka_unit_test(test_prefix_scorer_on_producer),
        cmocka_unit_test(test_precise_producer_feeds_scorer),
        cmocka_unit_test(test_speculative_indexing),
        cmocka_unit_test(test_disagg_prefix_based),
        cmocka_unit_test(test_label_selector_filter),
        cmocka_unit_test(test_samples_load),
        cmocka_unit_test(test_guide_warnings_named),
        cmocka_unit_test(test_bad_wiring_named),
        cmocka_unit_test(test_file_discovery_config),
        cmocka_unit_test(test_burst_placement),
        cmocka_unit_test(test_burst_balance),
        cmocka_unit_test(test_burst_parameters),
        cmocka_unit_test(test_token_producer_render_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
