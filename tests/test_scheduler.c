/* test_scheduler: the GIE profile run (filters in order, clamped weighted sums with float
 * weights and no division, the picker; a profile without scorers), the typed no-endpoint error, the trace contents,
 * determinism under a seed, the in-flight counters, the plugin-call observer, the reuse of
 * metrics-only scores under a metrics epoch and the small view helpers. */
#include <math.h>
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
#include "support/sched_fixture.h"

static const sched_request req = {.id = "q", .model = "m"};

static const char *weighted_yaml = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n"
                                   "- type: kv-cache-utilization-scorer\n  name: kv\n- type: queue-scorer\n"
                                   "schedulingProfiles:\n- name: main\n  plugins:\n"
                                   "  - {pluginRef: kv, weight: 2.5}\n  - {pluginRef: queue-scorer, weight: 0.5}\n";

static void test_weighted_clamped_sum_and_trace(void **state)
{
    fx *f = fx_new(weighted_yaml, 6, 1);
    assert_non_null(f);
    /* kv: 1-0.2 = 0.8; 1-(-0.5) = 1.5 -> 1; 1-1.7 -> 0.  queue (4,0,2): 0, 1, 0.5 */
    double usage[] = {0.2, -0.5, 1.7};
    int waiting[] = {4, 0, 2};
    for (int i = 0; i < 3; i++)
        f->eps[i].m.kv_usage = usage[i], f->eps[i].m.waiting = waiting[i];
    sched_trace tr = {0};
    sched_result res;
    kv_err err = {0};
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 3, &res, &tr, &err), KV_OK);
    assert_string_equal(res.profile, "main");
    assert_int_equal(res.n_targets, 1);
    assert_ptr_equal(res.targets[0], &f->eps[1]);
    /* every scorer's clamped score and weight per endpoint, scorers in profile order */
    double want_s[] = {0.8, 1.0, 0.0, 0.0, 1.0, 0.5}, want_w[] = {2.5, 2.5, 2.5, 0.5, 0.5, 0.5};
    const char *want_p[] = {"kv", "kv", "kv", "queue-scorer", "queue-scorer", "queue-scorer"};
    assert_int_equal(tr.n_scores, 6);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(tr.scores[i].profile, "main");
        assert_string_equal(tr.scores[i].plugin->name, want_p[i]);
        assert_ptr_equal(tr.scores[i].ep, &f->eps[i % 3]);
        assert_true(fabs(tr.scores[i].score - want_s[i]) < 1e-12);
        assert_true(tr.scores[i].weight == want_w[i]);
    }
    /* totals: sum of score*weight, not divided by the weight sum */
    double want_t[] = {2.0, 3.0, 0.25};
    assert_int_equal(tr.n_totals, 3);
    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(tr.totals[i].ep, &f->eps[i]);
        assert_true(fabs(tr.totals[i].score - want_t[i]) < 1e-12);
    }
    assert_int_equal(tr.n_removed, 0);
    /* the trace is reset, not appended to, on the next call; NULL trace is fine */
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 2, &res, &tr, &err), KV_OK);
    assert_int_equal(tr.n_scores, 4);
    assert_int_equal(tr.n_totals, 2);
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 3, &res, NULL, &err), KV_OK);
    assert_ptr_equal(res.targets[0], &f->eps[1]);
    sched_trace_free(&tr);
    fx_free(f);
}

static void test_filters_in_order_and_no_endpoints(void **state)
{
    fx *f = fx_new("plugins:\n- type: decode-filter\n- type: by-label\n  parameters: {label: zone, validValues: [a]}\n"
                   "- type: queue-scorer\n", 6, 1);
    assert_non_null(f);
    sched_kv pre_a[] = {{"llm-d.ai/role", "prefill"}, {"zone", "a"}}, dec_a[] = {{"llm-d.ai/role", "decode"}, {"zone", "a"}},
             dec_b[] = {{"llm-d.ai/role", "decode"}, {"zone", "b"}}, none[] = {{"zone", "a"}};
    f->eps[0].labels = pre_a, f->eps[0].n_labels = 2;
    f->eps[1].labels = dec_b, f->eps[1].n_labels = 2;
    f->eps[2].labels = dec_a, f->eps[2].n_labels = 2;
    f->eps[3].labels = none, f->eps[3].n_labels = 1;
    sched_trace tr = {0};
    sched_result res;
    kv_err err = {0};
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 4, &res, &tr, &err), KV_OK);
    /* decode-filter drops ep0, then by-label drops ep1 */
    assert_int_equal(tr.n_removed, 2);
    assert_ptr_equal(tr.removed[0].ep, &f->eps[0]);
    assert_string_equal(tr.removed[0].plugin->type->type, "decode-filter");
    assert_ptr_equal(tr.removed[1].ep, &f->eps[1]);
    assert_string_equal(tr.removed[1].plugin->type->type, "by-label");
    assert_string_equal(tr.removed[1].profile, "default");
    assert_int_equal(tr.n_totals, 2);
    assert_int_equal(tr.n_scores, 2); /* only survivors are scored */
    assert_true(res.targets[0] == &f->eps[2] || res.targets[0] == &f->eps[3]);
    /* nothing left after the filters: the typed error GIE returns */
    err = (kv_err){0};
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 2, &res, &tr, &err), KV_ENOENDPOINTS);
    assert_string_equal(err.msg, "no pods available for the given request");
    assert_int_equal(res.n_targets, 0);
    assert_int_equal(tr.n_scores, 0);
    /* and no candidates at all */
    err = (kv_err){0};
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 0, &res, &tr, &err), KV_ENOENDPOINTS);
    assert_string_equal(err.msg, "no pods available for the given request");
    sched_trace_free(&tr);
    fx_free(f);
}

static void picks(const char *yaml, uint64_t seed, int *out, int n)
{
    fx *f = fx_new(yaml, 6, seed);
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        sched_result res;
        kv_err err;
        assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 6, &res, NULL, &err), KV_OK);
        out[i] = (int)(res.targets[0] - f->eps);
    }
    fx_free(f);
}

/* A profile without scorers totals every candidate at exactly +0, in the driver's order
 * without filters and the survivors' order with them, and the picker sees all of them;
 * the driver's list is never written, with filters or without. The list is kept between
 * decisions: it must follow the driver's list (or the survivors) when that changes, and a
 * picker that shuffles (max-score-picker with several endpoints) must not reorder it. */
static void test_profile_without_scorers(void **state)
{
    const char *yamls[] = {"plugins:\n- type: max-score-picker\n  parameters: {maxNumOfEndpoints: 6}\n",
                           "plugins:\n- type: by-label\n  parameters: {label: zone, validValues: [a]}\n"
                           "- type: max-score-picker\n  parameters: {maxNumOfEndpoints: 6}\n"};
    for (int y = 0; y < 2; y++) {
        fx *f = fx_new(yamls[y], 6, 1);
        assert_non_null(f);
        sched_kv za[] = {{"zone", "a"}}, zb[] = {{"zone", "b"}};
        for (size_t i = 0; i < 6; i++)
            f->eps[i].labels = i % 3 == 1 ? zb : za, f->eps[i].n_labels = 1;
        sched_endpoint *all[6] = {&f->eps[0], &f->eps[1], &f->eps[2], &f->eps[3], &f->eps[4], &f->eps[5]};
        sched_endpoint *given[4][6] = {{0}, {0}, {&f->eps[5], &f->eps[4], &f->eps[3]}, {0}};
        for (int d = 0; d < 4; d++)
            if (d != 2)
                memcpy(given[d], all, sizeof all);
        size_t n_given[4] = {6, 6, 3, 6};
        for (int d = 0; d < 4; d++) {
            sched_endpoint *list[6];
            memcpy(list, given[d], sizeof list);
            sched_trace tr = {0};
            sched_result res;
            kv_err err = {0};
            assert_int_equal(sched_schedule(f->s, &req, given[d], n_given[d], &res, &tr, &err), KV_OK);
            sched_endpoint *want[6];   /* the survivors, in the driver's order */
            size_t n = 0;
            for (size_t i = 0; i < n_given[d]; i++)
                if (y == 0 || given[d][i]->labels == za)
                    want[n++] = given[d][i];
            assert_int_equal(tr.n_scores, 0);
            assert_int_equal(tr.n_totals, n);
            assert_int_equal(res.n_targets, n);
            unsigned seen = 0, all = 0;
            for (size_t i = 0; i < n; i++) {
                assert_ptr_equal(tr.totals[i].ep, want[i]);
                assert_true(tr.totals[i].score == 0 && !signbit(tr.totals[i].score));
                seen |= 1u << (res.targets[i] - f->eps);
                all |= 1u << (want[i] - f->eps);
            }
            assert_int_equal(seen, all);
            assert_memory_equal(list, given[d], sizeof list);
            sched_trace_free(&tr);
        }
        fx_free(f);
    }
}

static void test_deterministic_with_seed(void **state)
{
    /* six tied endpoints: every pick is the random tie-break */
    const char *yaml = "plugins:\n- type: queue-scorer\n- type: max-score-picker\n";
    int a[64], b[64], c[64];
    picks(yaml, 2024, a, 64);
    picks(yaml, 2024, b, 64);
    picks(yaml, 2025, c, 64);
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, c, sizeof a) != 0);
    int seen[6] = {0};
    for (int i = 0; i < 64; i++)
        seen[a[i]]++;
    for (int i = 0; i < 6; i++)
        assert_true(seen[i] > 0);
}

static void test_in_flight_counters(void **state)
{
    fx *f = fx_new(weighted_yaml, 6, 1);
    assert_non_null(f);
    sched_result res = {.n_targets = 1, .targets = {&f->eps[2]}};
    sched_pre_request(f->s, &req, &res);
    sched_pre_request(f->s, &req, &res);
    assert_int_equal(f->eps[2].in_flight, 2);
    /* the hooks keep the target's count; a decision by plugins that do not read the counts
     * leaves them as they are (test_peer_policies: one that reads them gets the sched's
     * counts over a driver's stale structs) */
    sched_result out;
    kv_err err;
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 3, &out, NULL, &err), KV_OK);
    assert_int_equal(f->eps[2].in_flight, 2);
    assert_int_equal(f->eps[1].in_flight, 0);
    sched_response_complete(f->s, &req, &f->eps[2]);
    sched_response_complete(f->s, &req, &f->eps[2]);
    sched_response_complete(f->s, &req, &f->eps[2]); /* never below zero */
    assert_int_equal(f->eps[2].in_flight, 0);
    sched_response_complete(f->s, &req, NULL);
    fx_free(f);
}

static double read_clock(void *ctx) { return *(const double *)ctx; }

static void test_views_and_lookups(void **state)
{
    sched_kv labels[] = {{"llm-d.ai/role", "decode"}};
    sched_endpoint ep = {.labels = labels, .n_labels = 1};
    assert_string_equal(sched_label(&ep, "llm-d.ai/role"), "decode");
    assert_null(sched_label(&ep, "LLM-D.ai/role"));
    sched_kv hdr[] = {{"x-session-token", "abc"}};
    sched_request r = {.headers = hdr, .n_headers = 1};
    assert_string_equal(sched_header(&r, "X-Session-Token"), "abc");
    assert_null(sched_header(&r, "x-other"));
    /* the driver's clock, or time standing still at 0 without one */
    assert_true(sched_env_now(&(sched_env){0}) == 0);
    double t = 12.5;
    assert_true(sched_env_now(&(sched_env){.now = read_clock, .clock_ctx = &t}) == 12.5);

    fx *f = fx_new(weighted_yaml, 6, 1);
    assert_non_null(f);
    assert_non_null(sched_plugin_by_name(f->s, "kv"));
    assert_string_equal(sched_plugin_by_name(f->s, "kv")->type->type, "kv-cache-utilization-scorer");
    assert_non_null(sched_plugin_by_name(f->s, "single-profile-handler"));
    assert_non_null(sched_plugin_by_name(f->s, "max-score-picker"));
    assert_null(sched_plugin_by_name(f->s, "nope"));
    void *svc[1];
    assert_int_equal(sched_services(f->s, "kvsource", svc, 1), 0);
    fx_free(f);
}

/* Two precise scorers with the same key context (blockSize and its alias) in one profile
 * read the cycle's keys for that context and each its own index. */
static void test_two_precise_scorers_agree(void **state)
{
    fx *f = fx_new("plugins:\n- type: precise-prefix-cache-scorer\n  name: p1\n  parameters: {tokenProcessorConfig: "
                   "{blockSize: 2}}\n- type: precise-prefix-cache-scorer\n  name: p2\n  parameters: {tokenProcessorConfig: "
                   "{blockSizeTokens: 2}, normalization: minmax}\n", 6, 1);
    assert_non_null(f);
    void *svc[2];
    assert_int_equal(sched_services(f->s, "kvsource", svc, 2), 2);
    uint32_t tok[6] = {5, 6, 7, 8, 9, 10};
    for (int k = 0; k < 2; k++) {
        sched_kvsource *src = svc[k];
        uint64_t keys[3];
        blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tok, 6, NULL, 0, NULL, keys, 3);
        kv_err err;
        int slot = kvindex_endpoint_add(src->index, f->names[1], &err);
        assert_int_equal(kvindex_store(src->index, slot, KVTIER_GPU, NULL, 0, keys, 2, &err), KV_OK);
    }
    sched_request r = {.id = "x", .model = "m", .tokens = tok, .n_tokens = 6};
    sched_trace tr = {0};
    sched_result res;
    kv_err err;
    assert_int_equal(sched_schedule(f->s, &r, f->ptrs, 3, &res, &tr, &err), KV_OK);
    assert_ptr_equal(res.targets[0], &f->eps[1]);
    assert_int_equal(tr.n_scores, 6);
    assert_true(fabs(tr.scores[1].score - 2.0 / 3.0) < 1e-6); /* p1: 2 of 3 blocks */
    assert_true(tr.scores[4].score == 1.0);                    /* p2: min-max, alone in the map */
    assert_true(tr.scores[0].score == 0 && tr.scores[3].score == 0);
    sched_trace_free(&tr);
    fx_free(f);
}

static double clamp01(double v) { return v > 1 ? 1 : v >= 0 ? v : 0; }

/* An independent model of the profile run: random metrics (some out of range) through
 * four load scorers with float weights; the trace must hold the formulas' clamped values
 * and the sums, and max-score-picker must return an endpoint with the largest sum. */
static void test_profile_matches_reference_model(void **state)
{
    fx *f = fx_new("plugins:\n- type: kv-cache-utilization-scorer\n- type: queue-scorer\n"
                   "- type: running-requests-size-scorer\n- type: load-aware-scorer\n  parameters: {threshold: 10}\n"
                   "schedulingProfiles:\n- name: p\n  plugins:\n  - {pluginRef: kv-cache-utilization-scorer, weight: 1.5}\n"
                   "  - {pluginRef: queue-scorer, weight: 0.25}\n  - {pluginRef: running-requests-size-scorer, weight: 2}\n"
                   "  - {pluginRef: load-aware-scorer, weight: 3}\n", 6, 99);
    assert_non_null(f);
    const double wt[4] = {1.5, 0.25, 2, 3};
    uint64_t rng = 7;
    sched_trace tr = {0};
    for (int trial = 0; trial < 300; trial++) {
        size_t n = 1 + trial % 6;
        for (size_t i = 0; i < n; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            f->eps[i].m.kv_usage = (double)((rng >> 33) % 1400) / 1000.0 - 0.2; /* -0.2 .. 1.2 */
            f->eps[i].m.waiting = (int)((rng >> 20) % 14);
            f->eps[i].m.running = (int)((rng >> 8) % 5);
        }
        double ref[6][4], total[6], best = -1;
        double qlo = 1e9, qhi = -1, rlo = 1e9, rhi = -1;
        for (size_t i = 0; i < n; i++) {
            qlo = fmin(qlo, f->eps[i].m.waiting), qhi = fmax(qhi, f->eps[i].m.waiting);
            rlo = fmin(rlo, f->eps[i].m.running), rhi = fmax(rhi, f->eps[i].m.running);
        }
        for (size_t i = 0; i < n; i++) {
            double q = f->eps[i].m.waiting, rr = f->eps[i].m.running;
            ref[i][0] = clamp01(1 - f->eps[i].m.kv_usage);
            ref[i][1] = qhi == qlo ? 1 : (qhi - q) / (qhi - qlo);
            ref[i][2] = rhi == rlo ? 1 : (rhi - rr) / (rhi - rlo);
            ref[i][3] = q == 0 ? 0.5 : 0.5 * (1 - fmin(q, 10) / 10);
            total[i] = 0;
            for (int k = 0; k < 4; k++)
                total[i] += ref[i][k] * wt[k];
            best = fmax(best, total[i]);
        }
        sched_result res;
        kv_err err;
        assert_int_equal(sched_schedule(f->s, &req, f->ptrs, n, &res, &tr, &err), KV_OK);
        assert_int_equal(tr.n_scores, 4 * n);
        for (size_t j = 0; j < tr.n_scores; j++) {
            size_t i = (size_t)(tr.scores[j].ep - f->eps), k = j / n;
            assert_true(fabs(tr.scores[j].score - ref[i][k]) < 1e-12);
            assert_true(tr.scores[j].weight == wt[k]);
        }
        for (size_t j = 0; j < tr.n_totals; j++)
            assert_true(fabs(tr.totals[j].score - total[tr.totals[j].ep - f->eps]) < 1e-9);
        assert_true(fabs(total[res.targets[0] - f->eps] - best) < 1e-9);
    }
    sched_trace_free(&tr);
    fx_free(f);
}

/* A scorer that stores 100 cycle entries and asks for 12 key contexts twice: every entry
 * reads back, and the second ask of each context gets the cached keys (the same array).
 * It also takes more scratch than one arena chunk holds, so the cycle's memory spans
 * chunks and the next call starts from a consolidated one (ASan sees any pointer the
 * scheduler kept across calls). */
#define PUTS 100
#define KEYSETS 12
static char put_keys[PUTS][8];
static int put_vals[PUTS];
static int cycle_checks;

static void many_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    unsigned char *big = sched_cycle_alloc(c, 200000);
    assert_non_null(big);
    memset(big, 0xa5, 200000);
    for (int i = 0; i < PUTS; i++)
        sched_cycle_put(c, put_keys[i], &put_vals[i]);
    for (int i = 0; i < PUTS; i++)
        assert_ptr_equal(sched_cycle_get(c, put_keys[i]), &put_vals[i]);
    const uint64_t *first[KEYSETS];
    blockkeys_ctx kc[KEYSETS];
    for (int i = 0; i < KEYSETS; i++) {
        char seed[8];
        snprintf(seed, sizeof seed, "s%d", i);
        assert_int_equal(blockkeys_init(&kc[i], BLOCKKEYS_XXH64, 4, seed, NULL), KV_OK);
        size_t nk = 0;
        first[i] = sched_cycle_keys(c, &kc[i], &nk);
        assert_non_null(first[i]);
        assert_int_equal(nk, 2);
    }
    for (int i = 0; i < KEYSETS; i++) {
        size_t nk = 0;
        assert_ptr_equal(sched_cycle_keys(c, &kc[i], &nk), first[i]);
        assert_int_equal(nk, 2);
        for (int j = 0; j < i; j++)
            assert_true(first[i][0] != first[j][0]);
    }
    cycle_checks++;
}

static const sched_plugin_type many_type = {.type = "test-many-entries", .kind = SCHED_SCORER, .score = many_score};

static void test_cycle_tables_grow(void **state)
{
    for (int i = 0; i < PUTS; i++)
        snprintf(put_keys[i], sizeof put_keys[i], "k%d", i);
    kv_err err = {0};
    epc_config *cfg = epc_load_string(weighted_yaml, strlen(weighted_yaml), "t.yaml", registry_types, &err);
    assert_non_null(cfg);
    int kv = epc_plugin_index(cfg, "kv");
    assert_true(kv >= 0);
    cfg->plugins[kv].impl = &many_type; /* a test scorer in the real profile run */
    sched *s = sched_new(cfg, &(sched_env){.seed = 1}, &err);
    assert_non_null(s);
    sched_endpoint ep = {.id = 1, .name = "10.1.0.1:8000"}, *eps[] = {&ep};
    uint32_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    sched_request r = {.id = "g", .model = "m", .tokens = tokens, .n_tokens = 8};
    sched_result res;
    cycle_checks = 0;
    for (int round = 0; round < 2; round++) /* the second call reuses the grown tables */
        assert_int_equal(sched_schedule(s, &r, eps, 1, &res, NULL, &err), KV_OK);
    assert_int_equal(cycle_checks, 2);
    assert_ptr_equal(res.targets[0], &ep);
    sched_free(s);
    epc_free(cfg);
}

/* llm-d's P/D: decode first, prefill only when the decode pod lacks enough of the prompt. */
static void test_pd_profile_handler(void **state)
{
    fx *f = fx_new("plugins:\n- type: prefill-header-handler\n- type: prefill-filter\n- type: decode-filter\n"
                   "- type: max-score-picker\n- type: queue-scorer\n- type: precise-prefix-cache-scorer\n"
                   "  parameters: {tokenProcessorConfig: {blockSize: 4}}\n- type: pd-profile-handler\n"
                   "  parameters: {threshold: 20, prefixPluginType: precise-prefix-cache-scorer}\n"
                   "schedulingProfiles:\n- name: prefill\n  plugins: [{pluginRef: prefill-filter}, "
                   "{pluginRef: queue-scorer}, {pluginRef: max-score-picker}]\n- name: decode\n"
                   "  plugins: [{pluginRef: decode-filter}, {pluginRef: precise-prefix-cache-scorer, weight: 10}, "
                   "{pluginRef: queue-scorer}, {pluginRef: max-score-picker}]\n", 6, 3);
    assert_non_null(f);
    sched_kv pre[] = {{"llm-d.ai/role", "prefill"}}, dec[] = {{"llm-d.ai/role", "decode"}};
    int waiting[] = {0, 5, 0, 3};
    for (int i = 0; i < 4; i++) {
        f->eps[i].labels = i < 2 ? pre : dec;
        f->eps[i].n_labels = 1;
        f->eps[i].m.waiting = waiting[i];
    }
    uint32_t tok[16];
    for (int i = 0; i < 16; i++)
        tok[i] = 40 + (uint32_t)i;
    sched_request r = {.id = "pd", .model = "m", .tokens = tok, .n_tokens = 16}; /* 64 characters */
    sched_result res;
    kv_err err = {0};
    /* cold: 64 uncached characters >= 20 -> prefill on the idler prefill pod */
    assert_int_equal(sched_schedule(f->s, &r, f->ptrs, 4, &res, NULL, &err), KV_OK);
    assert_string_equal(res.profile, "decode");
    assert_ptr_equal(res.targets[0], &f->eps[2]);
    assert_int_equal(res.n_others, 1);
    assert_string_equal(res.others[0].profile, "prefill");
    assert_ptr_equal(res.others[0].target, &f->eps[0]);
    assert_null(sched_pre_request_result(f->s));
    sched_pre_request(f->s, &r, &res); /* the decode pod only is in flight */
    assert_int_equal(f->eps[2].in_flight, 1);
    assert_int_equal(f->eps[0].in_flight, 0);
    assert_null(sched_pre_request_result(f->s));
    /* ep3 caches 2 of 4 blocks: it wins decode, 32 characters left >= 20 -> prefill */
    void *svc[1];
    assert_int_equal(sched_services(f->s, "kvsource", svc, 1), 1);
    sched_kvsource *src = svc[0];
    uint64_t keys[4];
    blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tok, 16, NULL, 0, NULL, keys, 4);
    int slot = kvindex_endpoint_add(src->index, f->names[3], &err);
    assert_int_equal(kvindex_store(src->index, slot, KVTIER_GPU, NULL, 0, keys, 2, &err), KV_OK);
    assert_int_equal(sched_schedule(f->s, &r, f->ptrs, 4, &res, NULL, &err), KV_OK);
    assert_ptr_equal(res.targets[0], &f->eps[3]);
    assert_int_equal(res.n_others, 1);
    /* 3 of 4: 16 characters < 20 -> decode only */
    assert_int_equal(kvindex_store(src->index, slot, KVTIER_GPU, NULL, 0, keys, 3, &err), KV_OK);
    assert_int_equal(sched_schedule(f->s, &r, f->ptrs, 4, &res, NULL, &err), KV_OK);
    assert_ptr_equal(res.targets[0], &f->eps[3]);
    assert_int_equal(res.n_others, 0);
    /* no decode pod: the primary profile failed */
    assert_int_equal(sched_schedule(f->s, &r, f->ptrs, 2, &res, NULL, &err), KV_ENOENDPOINTS);
    assert_string_equal(err.msg, "no pods available for the given request");
    fx_free(f);
}

/* ---- observer ---- */

typedef struct obs_log {
    const sched *s;
    char calls[16][64];   /* "<point> <plugin name>" */
    double seconds[16];   /* each call's reported duration */
    size_t n;
    bool bad;             /* a cycle without the request */
} obs_log;

static void obs_record(void *ctx, const sched_cycle *c, sched_point pt, size_t plugin, double seconds)
{
    obs_log *l = ctx;
    const sched_plugin *p = sched_plugin_at(l->s, plugin);
    if (!p || strcmp(sched_cycle_request(c)->id, "q"))
        l->bad = true;
    if (l->n < 16) {
        snprintf(l->calls[l->n], sizeof l->calls[0], "%s %s", sched_point_name(pt), p ? p->name : "?");
        l->seconds[l->n] = seconds;
    }
    l->n++;
}

static void test_observer_sees_every_plugin_call(void **state)
{
    fx *f = fx_new("plugins:\n- type: decode-filter\n- type: by-label\n  parameters: {label: zone, validValues: [a]}\n"
                   "- type: queue-scorer\n- type: kv-cache-utilization-scorer\n", 6, 1);
    assert_non_null(f);
    sched_kv dec_a[] = {{"llm-d.ai/role", "decode"}, {"zone", "a"}}, dec_b[] = {{"llm-d.ai/role", "decode"}, {"zone", "b"}};
    f->eps[0].labels = dec_b, f->eps[0].n_labels = 2;
    f->eps[1].labels = dec_a, f->eps[1].n_labels = 2;
    obs_log log = {.s = f->s};
    sched_set_observer(f->s, obs_record, &log);
    /* durations are read on the driver's clock (the engine reads none): one that moves
     * a quarter second per read times every call, none of which reads it, at 0.25 s */
    f->tick = 0.25;
    sched_result res;
    kv_err err = {0};
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 2, &res, NULL, &err), KV_OK);
    assert_ptr_equal(res.targets[0], &f->eps[1]);
    /* GIE's extension points, in the order the framework calls the plugins */
    const char *want[] = {"ProfilePicker single-profile-handler", "Filter decode-filter", "Filter by-label",
                          "Scorer queue-scorer", "Scorer kv-cache-utilization-scorer", "Picker max-score-picker",
                          "ProcessProfilesResults single-profile-handler"};
    assert_int_equal(log.n, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(log.calls[i], want[i]);
        assert_true(log.seconds[i] == 0.25);
    }
    assert_false(log.bad);
    /* filters leaving nothing: no scorer or picker runs, the handler still reports */
    log.n = 0;
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 1, &res, NULL, &err), KV_ENOENDPOINTS);
    const char *want_empty[] = {"ProfilePicker single-profile-handler", "Filter decode-filter", "Filter by-label",
                                "ProcessProfilesResults single-profile-handler"};
    assert_int_equal(log.n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(log.calls[i], want_empty[i]);
    /* removed: silence, and the same pick */
    sched_set_observer(f->s, NULL, NULL);
    log.n = 0;
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 2, &res, NULL, &err), KV_OK);
    assert_ptr_equal(res.targets[0], &f->eps[1]);
    assert_int_equal(log.n, 0);
    assert_string_equal(sched_point_name(SCHED_POINT_SCORER), "Scorer");
    assert_string_equal(sched_point_name(SCHED_POINT_COUNT), "Unknown");
    assert_null(sched_plugin_at(f->s, sched_plugin_count(f->s)));
    fx_free(f);
}

/* Counts each plugin's scorer calls (by config index). */
typedef struct score_calls {
    size_t n[8];
} score_calls;

static void count_scorer_calls(void *ctx, const sched_cycle *c, sched_point pt, size_t plugin, double seconds)
{
    score_calls *k = ctx;
    if (pt == SCHED_POINT_SCORER && plugin < 8)
        k->n[plugin]++;
}

/* Under a metrics epoch (sched_set_metrics_epoch) the metrics-only scorers run once per
 * epoch and candidate list and their scores are reused; every decision stays what a
 * scheduler without an epoch decides, bit for bit (scores, sums and picks), checked on a
 * random walk of metrics, candidate lists and epochs. A request-dependent scorer
 * (active-request-scorer, not metrics-only) runs every time. */
static const char *epoch_yaml = "plugins:\n- type: kv-cache-utilization-scorer\n- type: queue-scorer\n"
                                "- type: running-requests-size-scorer\n- type: load-aware-scorer\n"
                                "- type: active-request-scorer\n";

static void set_metrics(fx *a, fx *b, size_t i, double kv, int waiting, int running)
{
    a->eps[i].m.kv_usage = b->eps[i].m.kv_usage = kv;
    a->eps[i].m.waiting = b->eps[i].m.waiting = waiting;
    a->eps[i].m.running = b->eps[i].m.running = running;
}

static void test_metrics_epoch_reuses_scores(void **state)
{
    fx *f = fx_new(epoch_yaml, 6, 5), *ref = fx_new(epoch_yaml, 6, 5);   /* ref: no epoch */
    assert_non_null(f);
    assert_non_null(ref);
    score_calls calls = {0};
    sched_set_observer(f->s, count_scorer_calls, &calls);
    sched_trace tr = {0}, rtr = {0};
    sched_result res, rres;
    kv_err err = {0};

    /* One epoch, the same candidates: the four metrics-only scorers run once. */
    for (size_t i = 0; i < 6; i++)
        set_metrics(f, ref, i, 0.1 * (double)i, (int)(i % 3), (int)(5 - i));
    sched_set_metrics_epoch(f->s, 1);
    for (int k = 0; k < 3; k++)
        assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 6, &res, NULL, &err), KV_OK);
    assert_int_equal(calls.n[0], 1);
    assert_int_equal(calls.n[3], 1);
    assert_int_equal(calls.n[4], 3);   /* active-request-scorer: every decision */
    /* Metrics changed without a new epoch are not seen (the driver's promise broken):
     * the scores are reused, which is how the test knows they are. */
    f->eps[5].m.kv_usage = 0.99;
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 6, &res, &tr, &err), KV_OK);
    assert_true(fabs(tr.scores[5].score - 0.5) < 1e-12);   /* kv scorer, endpoint 5: 1 - 0.5 */
    assert_int_equal(calls.n[0], 1);
    /* A new epoch, or another candidate list, computes them again. */
    sched_set_metrics_epoch(f->s, 2);
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 6, &res, &tr, &err), KV_OK);
    assert_true(fabs(tr.scores[5].score - 0.01) < 1e-12);
    assert_int_equal(calls.n[0], 2);
    assert_int_equal(sched_schedule(f->s, &req, f->ptrs, 5, &res, NULL, &err), KV_OK);
    assert_int_equal(calls.n[0], 3);
    sched_endpoint *swapped[6] = {f->ptrs[1], f->ptrs[0], f->ptrs[2], f->ptrs[3], f->ptrs[4], f->ptrs[5]};
    assert_int_equal(sched_schedule(f->s, &req, swapped, 6, &res, NULL, &err), KV_OK);
    assert_int_equal(calls.n[0], 4);
    /* Epoch 0 reuses nothing. */
    sched_set_metrics_epoch(f->s, 0);
    assert_int_equal(sched_schedule(f->s, &req, swapped, 6, &res, NULL, &err), KV_OK);
    assert_int_equal(sched_schedule(f->s, &req, swapped, 6, &res, NULL, &err), KV_OK);
    assert_int_equal(calls.n[0], 6);

    /* The random walk against the scheduler without an epoch. */
    f->eps[5].m.kv_usage = ref->eps[5].m.kv_usage;
    uint64_t rng = 11, epoch = 100;
    size_t reused = 0, n = 6, rot = 0;
    for (int trial = 0; trial < 400; trial++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        unsigned what = (unsigned)(rng >> 60);
        if (what < 5) {   /* new metrics for one endpoint, and a new epoch */
            size_t i = (size_t)(rng >> 8) % 6;
            set_metrics(f, ref, i, (double)((rng >> 16) % 1300) / 1000.0 - 0.1, (int)((rng >> 28) % 9),
                        (int)((rng >> 36) % 6));
            sched_set_metrics_epoch(f->s, ++epoch);
        }
        if (what == 5 || what == 6) {   /* another candidate list: a prefix of a rotation */
            n = 1 + (size_t)(rng >> 44) % 6;
            rot = (size_t)(rng >> 52) % 6;
        }
        sched_endpoint *cand[6], *rcand[6];
        for (size_t i = 0; i < n; i++) {
            cand[i] = f->ptrs[(i + rot) % 6];
            rcand[i] = ref->ptrs[(i + rot) % 6];
        }
        size_t before = calls.n[0];
        assert_int_equal(sched_schedule(f->s, &req, cand, n, &res, &tr, &err), KV_OK);
        assert_int_equal(sched_schedule(ref->s, &req, rcand, n, &rres, &rtr, &err), KV_OK);
        reused += calls.n[0] == before;
        assert_int_equal(tr.n_scores, rtr.n_scores);
        for (size_t j = 0; j < tr.n_scores; j++) {
            assert_int_equal(tr.scores[j].ep - f->eps, rtr.scores[j].ep - ref->eps);
            assert_memory_equal(&tr.scores[j].score, &rtr.scores[j].score, sizeof(double));
        }
        assert_int_equal(tr.n_totals, rtr.n_totals);
        for (size_t j = 0; j < tr.n_totals; j++)
            assert_memory_equal(&tr.totals[j].score, &rtr.totals[j].score, sizeof(double));
        assert_int_equal(res.targets[0] - f->eps, rres.targets[0] - ref->eps);
    }
    assert_true(reused > 100);   /* the walk does reuse, often */
    assert_true(reused < 390);   /* and recomputes too */
    sched_trace_free(&tr);
    sched_trace_free(&rtr);
    fx_free(f);
    fx_free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weighted_clamped_sum_and_trace),
        cmocka_unit_test(test_filters_in_order_and_no_endpoints),
        cmocka_unit_test(test_profile_without_scorers),
        cmocka_unit_test(test_deterministic_with_seed),
        cmocka_unit_test(test_in_flight_counters),
        cmocka_unit_test(test_views_and_lookups),
        cmocka_unit_test(test_two_precise_scorers_agree),
        cmocka_unit_test(test_pd_profile_handler),
        cmocka_unit_test(test_profile_matches_reference_model),
        cmocka_unit_test(test_cycle_tables_grow),
        cmocka_unit_test(test_observer_sees_every_plugin_call),
        cmocka_unit_test(test_metrics_epoch_reuses_scores),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
