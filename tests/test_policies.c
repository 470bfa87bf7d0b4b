/* test_policies: every filter, scorer and picker of policies/ (engineer C's) against values
 * computed by hand from the formulas in docs/upstream/epp.md §1, driven through the public scheduler the
 * way a config uses them (tests/support/sched_fixture): one plugin per profile, its scores
 * read back from the trace.
 * Covers ties, empty inputs, all-equal scores and missing metrics. */
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
#include "support/sched_fixture.h"
#include "scheduler.h"
#include "session_affinity.h"

#define NEP 8

static void assert_scores(const double *got, const double *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fabs(got[i] - want[i]) > 1e-6)
            fail_msg("endpoint %zu: score %.12g, want %.12g", i, got[i], want[i]);
}

static const sched_request plain = {.id = "r1", .model = "m"};

#define SCORER(type, params) "plugins:\n- type: " type "\n" params

/* ---- load scorers ------------------------------------------------------------------ */

static void test_queue_scorer(void **state)
{
    fx *f = fx_new(SCORER("queue-scorer", ""), NEP, 1);
    assert_non_null(f);
    double s[4];
    f->eps[0].m.waiting = 2, f->eps[1].m.waiting = 5, f->eps[2].m.waiting = 8, f->eps[3].m.waiting = 5;
    assert_int_equal(fx_run(f, &plain, 4, s, NULL), KV_OK);
    assert_scores(s, (double[]){1.0, 0.5, 0.0, 0.5}, 4);
    /* all equal -> 1.0 each, including a single candidate */
    for (int i = 0; i < 4; i++)
        f->eps[i].m.waiting = 3;
    fx_run(f, &plain, 4, s, NULL);
    assert_scores(s, (double[]){1, 1, 1, 1}, 4);
    fx_run(f, &plain, 1, s, NULL);
    assert_scores(s, (double[]){1}, 1);
    /* a never-scraped pod (valid=false, zeros) reads an empty queue: the best */
    f->eps[1] = (sched_endpoint){.id = 101, .name = "x"};
    f->eps[0].m.waiting = 4;
    fx_run(f, &plain, 2, s, NULL);
    assert_scores(s, (double[]){0, 1}, 2);
    fx_free(f);
}

static void test_running_requests_size_scorer(void **state)
{
    fx *f = fx_new(SCORER("running-requests-size-scorer", ""), NEP, 1);
    assert_non_null(f);
    double s[3];
    f->eps[0].m.running = 10, f->eps[1].m.running = 0, f->eps[2].m.running = 4;
    f->eps[0].m.waiting = 0, f->eps[1].m.waiting = 50; /* ignored */
    fx_run(f, &plain, 3, s, NULL);
    assert_scores(s, (double[]){0.0, 1.0, 0.6}, 3);
    fx_free(f);
}

static void test_kv_cache_utilization_scorer(void **state)
{
    fx *f = fx_new(SCORER("kv-cache-utilization-scorer", ""), NEP, 1);
    assert_non_null(f);
    double s[4];
    f->eps[0].m.kv_usage = 0.25, f->eps[1].m.kv_usage = 1.0, f->eps[2].m.kv_usage = 0;
    f->eps[3].m.kv_usage = 1.25; /* a bogus scrape: 1 - 1.25 < 0, clamped */
    fx_run(f, &plain, 4, s, NULL);
    assert_scores(s, (double[]){0.75, 0.0, 1.0, 0.0}, 4);
    fx_free(f);
}

static void test_load_aware_scorer(void **state)
{
    fx *f = fx_new(SCORER("load-aware-scorer", "  parameters: {threshold: 100}\n"), NEP, 1);
    assert_non_null(f);
    double s[4];
    f->eps[0].m.waiting = 0, f->eps[1].m.waiting = 25, f->eps[2].m.waiting = 100, f->eps[3].m.waiting = 400;
    fx_run(f, &plain, 4, s, NULL);
    assert_scores(s, (double[]){0.5, 0.375, 0.0, 0.0}, 4);
    fx_free(f);
    f = fx_new(SCORER("load-aware-scorer", ""), NEP, 1); /* default threshold 128 */
    assert_non_null(f);
    f->eps[0].m.waiting = 32;
    fx_run(f, &plain, 1, s, NULL);
    assert_scores(s, (double[]){0.375}, 1);
    fx_free(f);
}

static void test_lora_affinity_scorer(void **state)
{
    fx *f = fx_new(SCORER("lora-affinity-scorer", ""), NEP, 1);
    assert_non_null(f);
    const char *run_a[] = {"sql-lora"}, *run_b[] = {"other"}, *wait_c[] = {"sql-lora"}, *two[] = {"x", "y"};
    f->eps[0].m = (sched_metrics){.running_loras = run_a, .n_running_loras = 1, .max_lora = 1};      /* active */
    f->eps[1].m = (sched_metrics){.running_loras = run_b, .n_running_loras = 1, .max_lora = 2};      /* room */
    f->eps[2].m = (sched_metrics){.running_loras = two, .n_running_loras = 2, .waiting_loras = wait_c,
                                .n_waiting_loras = 1, .max_lora = 2};                               /* waiting */
    f->eps[3].m = (sched_metrics){.running_loras = two, .n_running_loras = 2, .max_lora = 2};        /* full */
    /* ep[4]: never scraped: no lists, max_lora 0 */
    sched_request req = {.id = "r", .model = "base", .lora = "sql-lora"};
    double s[5];
    fx_run(f, &req, 5, s, NULL);
    assert_scores(s, (double[]){1.0, 0.8, 0.6, 0.0, 0.0}, 5);
    /* without a LoRA the target model is matched */
    sched_request base = {.id = "r", .model = "other"};
    fx_run(f, &base, 2, s, NULL);
    assert_scores(s, (double[]){0.0, 1.0}, 2);
    fx_free(f);
}

/* ---- stateful scorers -------------------------------------------------------------------- */

static void test_active_request_scorer(void **state)
{
    fx *f = fx_new(SCORER("active-request-scorer", "  parameters: {requestTimeout: 10s}\n"), NEP, 1);
    assert_non_null(f);
    double s[3];
    fx_run(f, &plain, 3, s, NULL);
    assert_scores(s, (double[]){1, 1, 1}, 3); /* nothing in flight */
    /* two requests to ep0, one to ep1 */
    const char *ids[] = {"a", "b", "c"};
    int to[] = {0, 0, 1};
    for (int i = 0; i < 3; i++) {
        sched_request q = {.id = ids[i], .model = "m"};
        sched_result res = {.n_targets = 1, .targets = {&f->eps[to[i]]}};
        sched_pre_request(f->s, &q, &res);
    }
    assert_int_equal(f->eps[0].in_flight, 2);
    fx_run(f, &plain, 3, s, NULL);
    assert_scores(s, (double[]){0.0, 0.5, 1.0}, 3);
    /* completing "a" leaves one on each of ep0 and ep1 */
    sched_response_complete(f->s, &(sched_request){.id = "a"}, &f->eps[0]);
    fx_run(f, &plain, 3, s, NULL);
    assert_scores(s, (double[]){0.0, 0.0, 1.0}, 3);
    assert_int_equal(f->eps[0].in_flight, 1);
    /* past the timeout the lost completions stop counting */
    f->now = 10.5;
    fx_run(f, &plain, 3, s, NULL);
    assert_scores(s, (double[]){1, 1, 1}, 3);
    fx_free(f);
}

static void test_session_affinity_scorer(void **state)
{
    fx *f = fx_new(SCORER("session-affinity-scorer", ""), NEP, 1);
    assert_non_null(f);
    /* the tokens name pods by namespace and pod name */
    const char *pods[] = {"pod-a", "pod-b", "pod-c"};
    for (int i = 0; i < 3; i++)
        f->eps[i].ns = "llm", f->eps[i].pod = pods[i];
    double s[3];
    /* base64("llm/pod-b") */
    sched_kv hdr[] = {{"x-session-token", "bGxtL3BvZC1i"}};
    sched_request q = {.id = "r", .model = "m", .headers = hdr, .n_headers = 1};
    sched_result res;
    fx_run(f, &q, 3, s, &res);
    assert_scores(s, (double[]){0, 1, 0}, 3);
    assert_ptr_equal(res.targets[0], &f->eps[1]);
    /* no header, garbage, or another namespace: nobody */
    fx_run(f, &plain, 3, s, NULL);
    assert_scores(s, (double[]){0, 0, 0}, 3);
    hdr[0].value = "!!not base64!!";
    fx_run(f, &q, 3, s, NULL);
    assert_scores(s, (double[]){0, 0, 0}, 3);
    hdr[0].value = "ZGV2L3BvZC1i"; /* dev/pod-b */
    fx_run(f, &q, 3, s, NULL);
    assert_scores(s, (double[]){0, 0, 0}, 3);
    hdr[0].value = "bGxtL3BvZC1h"; /* llm/pod-a */
    fx_run(f, &q, 3, s, NULL);
    assert_scores(s, (double[]){1, 0, 0}, 3);
    /* the token a driver writes on the response brings the next request back */
    char tok[64];
    assert_int_equal(session_affinity_token(&f->eps[2], tok, sizeof tok), 12);
    assert_string_equal(tok, "bGxtL3BvZC1j"); /* llm/pod-c */
    hdr[0].value = tok;
    fx_run(f, &q, 3, s, NULL);
    assert_scores(s, (double[]){0, 0, 1}, 3);
    assert_int_equal(session_affinity_token(&f->eps[2], tok, 12), KV_ERANGE);
    /* padding, as Go's base64.StdEncoding writes it (RFC 4648 test vectors' shapes) */
    sched_endpoint one = {.name = "x", .ns = "ab", .pod = "c"}, two = {.name = "x", .ns = "ab", .pod = "cd"};
    assert_int_equal(session_affinity_token(&one, tok, sizeof tok), 8);
    assert_string_equal(tok, "YWIvYw=="); /* ab/c */
    assert_int_equal(session_affinity_token(&two, tok, sizeof tok), 8);
    assert_string_equal(tok, "YWIvY2Q="); /* ab/cd */
    fx_free(f);
}

/* ---- precise prefix scorer and no-hit-lru -------------------------------------------- */

static sched_kvsource *kvsource(fx *f)
{
    void *svc[1];
    assert_int_equal(sched_services(f->s, "kvsource", svc, 1), 1);
    return svc[0];
}

/* Stores the first nblocks request keys of tokens on endpoint name, tier t. */
static void hold(sched_kvsource *src, const char *name, const uint32_t *tokens, size_t ntok, size_t nblocks,
                 kvtier t)
{
    uint64_t keys[64];
    size_t nk = blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tokens, ntok, NULL, 0, NULL, keys, 64);
    assert_true(nblocks <= nk);
    kv_err err = {0};
    int slot = kvindex_endpoint_add(src->index, name, &err);
    assert_true(slot >= 0);
    assert_int_equal(kvindex_store(src->index, slot, t, NULL, 0, keys, nblocks, &err), KV_OK);
}

#define PRECISE(norm)                                                                                          \
    "plugins:\n- type: precise-prefix-cache-scorer\n  parameters:\n    tokenProcessorConfig: {blockSize: 4}\n" \
    "    normalization: " #norm "\n"

static void test_precise_matched_total(void **state)
{
    fx *f = fx_new(PRECISE(matched-total), NEP, 1);
    assert_non_null(f);
    sched_kvsource *src = kvsource(f);
    uint32_t tok[18];
    for (int i = 0; i < 18; i++)
        tok[i] = 1000 + (uint32_t)i; /* 4 full blocks of 4, 2 tokens dropped */
    sched_request q = {.id = "r", .model = "m", .tokens = tok, .n_tokens = 18};
    double s[4];
    /* cold index: everyone 0 */
    fx_run(f, &q, 4, s, NULL);
    assert_scores(s, (double[]){0, 0, 0, 0}, 4);
    hold(src, "10.0.0.1:8000", tok, 18, 3, KVTIER_GPU);  /* 3/4 */
    hold(src, "10.0.0.2:8000", tok, 18, 2, KVTIER_CPU);  /* 2 * 0.8 / 4 */
    hold(src, "10.0.0.3", tok, 18, 4, KVTIER_GPU);       /* a v0.5 IP-only topic: 4/4 */
    sched_result res;
    fx_run(f, &q, 4, s, &res);
    assert_scores(s, (double[]){0.75, 0.4, 1.0, 0.0}, 4);
    assert_ptr_equal(res.targets[0], &f->eps[2]);
    /* the same keys handed in precomputed give the same scores */
    uint64_t keys[4];
    assert_int_equal(blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tok, 18, NULL, 0, NULL, keys, 4),
                     4);
    sched_request pre = {.id = "r", .model = "m", .keys_ctx = &src->keys, .keys = keys, .n_keys = 4};
    fx_run(f, &pre, 4, s, NULL);
    assert_scores(s, (double[]){0.75, 0.4, 1.0, 0.0}, 4);
    /* another model hashes to other keys: no match */
    sched_request other = {.id = "r", .model = "m2", .tokens = tok, .n_tokens = 18};
    fx_run(f, &other, 4, s, NULL);
    assert_scores(s, (double[]){0, 0, 0, 0}, 4);
    /* fewer tokens than a block: no keys, all 0 */
    sched_request tiny = {.id = "r", .model = "m", .tokens = tok, .n_tokens = 3};
    fx_run(f, &tiny, 4, s, NULL);
    assert_scores(s, (double[]){0, 0, 0, 0}, 4);
    fx_free(f);
}

static void test_precise_minmax_quirks(void **state)
{
    fx *f = fx_new(PRECISE(minmax), NEP, 1);
    assert_non_null(f);
    sched_kvsource *src = kvsource(f);
    uint32_t tok[16];
    for (int i = 0; i < 16; i++)
        tok[i] = 7 * (uint32_t)i;
    sched_request q = {.id = "r", .model = "m", .tokens = tok, .n_tokens = 16};
    double s[4];
    /* one pod with 1 of 4 blocks: the whole map is that pod, min == max -> 1.0 (the quirk) */
    hold(src, "10.0.0.1:8000", tok, 16, 1, KVTIER_GPU);
    fx_run(f, &q, 4, s, NULL);
    assert_scores(s, (double[]){1.0, 0, 0, 0}, 4);
    /* raw 1 (gpu), 3*0.8 = 2.4 (cpu), 4 (gpu): (s - 1)/(4 - 1) */
    hold(src, "10.0.0.2:8000", tok, 16, 3, KVTIER_CPU);
    hold(src, "10.0.0.3:8000", tok, 16, 4, KVTIER_GPU);
    fx_run(f, &q, 4, s, NULL);
    assert_scores(s, (double[]){0.0, 1.4 / 3.0, 1.0, 0.0}, 4);
    fx_free(f);
}

/* The ingester may free a pod's slot and give it to another pod: the scorer must not
 * lend the new pod's cache to the old name, and must find a pod re-added elsewhere. */
static void test_precise_recycled_slots(void **state)
{
    fx *f = fx_new(PRECISE(matched-total), NEP, 1);
    assert_non_null(f);
    sched_kvsource *src = kvsource(f);
    uint32_t tok[8] = {9, 8, 7, 6, 5, 4, 3, 2};
    sched_request q = {.id = "r", .model = "m", .tokens = tok, .n_tokens = 8};
    double s[4];
    hold(src, "10.0.0.1:8000", tok, 8, 1, KVTIER_GPU);
    fx_run(f, &q, 4, s, NULL);
    assert_scores(s, (double[]){0.5, 0, 0, 0}, 4);
    int old = kvindex_endpoint_find(src->index, "10.0.0.1:8000");
    kvindex_endpoint_remove(src->index, old);
    hold(src, "10.0.0.9:8000", tok, 8, 2, KVTIER_GPU); /* not a candidate; likely reuses the slot */
    fx_run(f, &q, 4, s, NULL);
    assert_scores(s, (double[]){0, 0, 0, 0}, 4);
    /* ep1 appears in the index after being cached as unknown: counted at once */
    hold(src, "10.0.0.2:8000", tok, 8, 2, KVTIER_GPU);
    fx_run(f, &q, 4, s, NULL);
    assert_scores(s, (double[]){0, 1.0, 0, 0}, 4);
    /* ep0, cached at a slot that matches nothing, leaves; a stranger takes that slot and
     * ep0 returns under another one: the index's endpoint version changed, so the very next
     * call re-resolves every cached slot */
    double s8[8];
    hold(src, "10.0.0.1:8000", tok, 8, 1, KVTIER_GPU);
    fx_run(f, &q, 8, s8, NULL); /* caches ep0's slot */
    assert_true(s8[0] == 0.5);
    int slot0 = kvindex_endpoint_find(src->index, "10.0.0.1:8000");
    kvindex_endpoint_remove(src->index, slot0);
    kv_err err = {0};
    assert_int_equal(kvindex_endpoint_add(src->index, "10.0.0.50:8000", &err), slot0);
    hold(src, "10.0.0.1:8000", tok, 8, 1, KVTIER_GPU);
    assert_int_not_equal(kvindex_endpoint_find(src->index, "10.0.0.1:8000"), slot0);
    fx_run(f, &q, 8, s8, NULL);
    assert_scores(s8, (double[]){0.5, 1.0, 0, 0, 0, 0, 0, 0}, 8);
    fx_free(f);
}

static void test_no_hit_lru_scorer(void **state)
{
    fx *f = fx_new(PRECISE(matched-total) "- type: no-hit-lru-scorer\n  parameters: {prefixPluginType: "
                   "precise-prefix-cache-scorer}\n"
                   "schedulingProfiles:\n- name: default\n  plugins:\n"
                   "  - pluginRef: precise-prefix-cache-scorer\n    weight: 0\n"
                   "  - pluginRef: no-hit-lru-scorer\n", NEP, 1);
    assert_non_null(f);
    sched_plugin *lru = sched_plugin_by_name(f->s, "no-hit-lru-scorer");
    assert_non_null(lru);
    uint32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    kv_err err = {0};
    double lru_s[4];
    /* cold: nobody used yet -> candidate order: 1, 2/3, 1/3, 0 */
    const char *ids[] = {"c1", "c2", "c3"};
    int sent[] = {2, 0, 3};
    for (int k = 0; k < 3; k++) {
        sched_request q = {.id = ids[k], .model = "m", .tokens = tok, .n_tokens = 8};
        sched_result res;
        assert_int_equal(sched_schedule(f->s, &q, f->ptrs, 4, &res, &f->trace, &err), KV_OK);
        for (int i = 0; i < 4; i++)
            for (size_t j = 0; j < f->trace.n_scores; j++)
                if (f->trace.scores[j].plugin == lru && f->trace.scores[j].ep == &f->eps[i])
                    lru_s[i] = f->trace.scores[j].score;
        if (k == 0)
            assert_scores(lru_s, (double[]){1.0, 2.0 / 3, 1.0 / 3, 0.0}, 4);
        if (k == 1) /* ep2 used: never-used 0,1,3 first, then 2 */
            assert_scores(lru_s, (double[]){1.0, 2.0 / 3, 0.0, 1.0 / 3}, 4);
        if (k == 2) /* ep2 then ep0 used: 1, 3 never used; then 2 (older), 0 */
            assert_scores(lru_s, (double[]){0.0, 1.0, 1.0 / 3, 2.0 / 3}, 4);
        res.targets[0] = &f->eps[sent[k]];
        sched_pre_request(f->s, &q, &res);
    }
    /* a warm request (some pod holds a block): 0.5 for all */
    hold(kvsource(f), "10.0.0.2:8000", tok, 8, 1, KVTIER_GPU);
    sched_request warm = {.id = "w", .model = "m", .tokens = tok, .n_tokens = 8};
    sched_result res;
    assert_int_equal(sched_schedule(f->s, &warm, f->ptrs, 4, &res, &f->trace, &err), KV_OK);
    for (size_t j = 0; j < f->trace.n_scores; j++)
        if (f->trace.scores[j].plugin == lru)
            assert_true(f->trace.scores[j].score == 0.5);
    fx_free(f);
}

/* ---- filters -------------------------------------------------------------------------- */

static void set_label(fx *f, int i, sched_kv *kv, size_t n)
{
    f->eps[i].labels = kv;
    f->eps[i].n_labels = n;
}

/* Which of the first n endpoints survived the filters (from the trace's totals). */
static unsigned kept(fx *f, size_t n, int *rc)
{
    kv_err err = {0};
    sched_result res;
    *rc = sched_schedule(f->s, &plain, f->ptrs, n, &res, &f->trace, &err);
    unsigned mask = 0;
    for (size_t j = 0; j < f->trace.n_totals; j++)
        mask |= 1u << (f->trace.totals[j].ep - f->eps);
    return mask;
}

static void test_role_filters(void **state)
{
    sched_kv dec[] = {{"llm-d.ai/role", "decode"}}, both[] = {{"llm-d.ai/role", "both"}},
             pre[] = {{"llm-d.ai/role", "prefill"}}, other[] = {{"app", "x"}};
    int rc;
    fx *f = fx_new("plugins:\n- type: decode-filter\n", NEP, 1);
    assert_non_null(f);
    set_label(f, 0, dec, 1), set_label(f, 1, both, 1), set_label(f, 2, pre, 1), set_label(f, 3, other, 1);
    assert_int_equal(kept(f, 5, &rc), 0x1b); /* 0, 1, 3 (no role), 4 (no labels) */
    assert_int_equal(f->trace.n_removed, 1);
    assert_ptr_equal(f->trace.removed[0].ep, &f->eps[2]);
    assert_string_equal(f->trace.removed[0].plugin->name, "decode-filter");
    fx_free(f);
    f = fx_new("plugins:\n- type: prefill-filter\n", NEP, 1);
    assert_non_null(f);
    set_label(f, 0, dec, 1), set_label(f, 1, both, 1), set_label(f, 2, pre, 1), set_label(f, 3, other, 1);
    assert_int_equal(kept(f, 5, &rc), 0x04);
    /* no prefill pod at all -> the typed error */
    assert_int_equal(kept(f, 2, &rc), 0);
    assert_int_equal(rc, KV_ENOENDPOINTS);
    fx_free(f);
}

static void test_by_label(void **state)
{
    sched_kv a[] = {{"tier", "gold"}}, b[] = {{"tier", "silver"}}, c[] = {{"tier", "bronze"}};
    int rc;
    fx *f = fx_new("plugins:\n- type: by-label\n  parameters: {label: tier, validValues: [gold, silver]}\n", NEP, 1);
    assert_non_null(f);
    set_label(f, 0, a, 1), set_label(f, 1, b, 1), set_label(f, 2, c, 1);
    assert_int_equal(kept(f, 4, &rc), 0x3);
    fx_free(f);
    f = fx_new("plugins:\n- type: by-label\n  parameters: {label: tier, validValues: [bronze], allowsNoLabel: true}\n",
               NEP, 1);
    assert_non_null(f);
    set_label(f, 0, a, 1), set_label(f, 1, b, 1), set_label(f, 2, c, 1);
    assert_int_equal(kept(f, 4, &rc), 0xc);
    fx_free(f);
    /* validValues may only be empty when unlabelled pods pass */
    kv_err err = {0};
    const char *bad = "plugins:\n- type: by-label\n  parameters: {label: tier}\n";
    epc_config *cfg = epc_load_string(bad, strlen(bad), "b.yaml", registry_types, &err);
    assert_null(sched_new(cfg, &(sched_env){0}, &err));
    assert_string_equal(err.msg,
                        "b.yaml:3:15: field 'by-label.parameters': validValues must not be empty when allowsNoLabel is false");
    epc_free(cfg);
}

static void test_by_label_selector(void **state)
{
    sched_kv a[] = {{"app", "vllm"}, {"zone", "a"}}, b[] = {{"app", "vllm"}, {"zone", "b"}, {"canary", "1"}},
             c[] = {{"app", "sglang"}, {"zone", "a"}}, d[] = {{"app", "vllm"}};
    int rc;
    fx *f = fx_new("plugins:\n- type: by-label-selector\n  parameters:\n    matchLabels: {app: vllm}\n"
                   "    matchExpressions:\n    - {key: zone, operator: NotIn, values: [b]}\n"
                   "    - {key: canary, operator: DoesNotExist}\n", NEP, 1);
    assert_non_null(f);
    set_label(f, 0, a, 2), set_label(f, 1, b, 3), set_label(f, 2, c, 2), set_label(f, 3, d, 1);
    assert_int_equal(kept(f, 5, &rc), 0x9); /* a; d (NotIn matches a missing key); not e (no app) */
    fx_free(f);
    f = fx_new("plugins:\n- type: by-label-selector\n  parameters:\n    matchExpressions:\n"
               "    - {key: zone, operator: In, values: [a, c]}\n    - {key: app, operator: Exists}\n", NEP, 1);
    assert_non_null(f);
    set_label(f, 0, a, 2), set_label(f, 1, b, 3), set_label(f, 2, c, 2), set_label(f, 3, d, 1);
    assert_int_equal(kept(f, 5, &rc), 0x5);
    fx_free(f);
    /* an empty selector keeps everybody */
    f = fx_new("plugins:\n- type: by-label-selector\n", NEP, 1);
    assert_non_null(f);
    assert_int_equal(kept(f, 3, &rc), 0x7);
    fx_free(f);
    kv_err err = {0};
    const char *bad = "plugins:\n- type: by-label-selector\n  parameters:\n    matchExpressions:\n"
                      "    - {key: zone, operator: Near, values: [a]}\n";
    epc_config *cfg = epc_load_string(bad, strlen(bad), "s.yaml", registry_types, &err);
    assert_null(sched_new(cfg, &(sched_env){0}, &err));
    assert_string_equal(err.msg, "s.yaml:5:29: field 'by-label-selector.parameters.matchExpressions[0]': unknown "
                                 "operator 'Near' (expected In, NotIn, Exists or DoesNotExist)");
    epc_free(cfg);
}

/* ---- pickers ------------------------------------------------------------------------------ */

#define PICKER(type, params)                                                                                   \
    "plugins:\n- type: queue-scorer\n- type: " type "\n" params                                                \
    "schedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n  - pluginRef: " type "\n"

static void test_max_score_picker(void **state)
{
    fx *f = fx_new(PICKER("max-score-picker", "  parameters: {maxNumOfEndpoints: 3}\n"), NEP, 42);
    assert_non_null(f);
    /* queue scores: ep0 1.0, ep1 0.75, ep2 0.75, ep3 0.0, ep4 0.5 */
    int q[] = {0, 1, 1, 4, 2};
    for (int i = 0; i < 5; i++)
        f->eps[i].m.waiting = q[i];
    int second_ep1 = 0;
    for (int t = 0; t < 200; t++) {
        sched_result res;
        assert_int_equal(fx_run(f, &plain, 5, NULL, &res), KV_OK);
        assert_int_equal(res.n_targets, 3);
        assert_ptr_equal(res.targets[0], &f->eps[0]);
        assert_true((res.targets[1] == &f->eps[1] && res.targets[2] == &f->eps[2]) ||
                    (res.targets[1] == &f->eps[2] && res.targets[2] == &f->eps[1]));
        second_ep1 += res.targets[1] == &f->eps[1];
    }
    /* the tie between ep1 and ep2 is broken at random, both ways */
    assert_true(second_ep1 > 60 && second_ep1 < 140);
    fx_free(f);
    /* maxNumOfEndpoints default 1; more than the candidates returns them all */
    f = fx_new(PICKER("max-score-picker", "  parameters: {maxNumOfEndpoints: 8}\n"), NEP, 42);
    assert_non_null(f);
    sched_result res;
    assert_int_equal(fx_run(f, &plain, 2, NULL, &res), KV_OK);
    assert_int_equal(res.n_targets, 2);
    fx_free(f);
}

/* trials picks over the first n endpoints, each returning want_targets; hits[i] counts
 * ep i picked first. */
static void fx_hits(fx *f, size_t n, int trials, size_t want_targets, int *hits)
{
    for (int t = 0; t < trials; t++) {
        sched_result res;
        assert_int_equal(fx_run(f, &plain, n, NULL, &res), KV_OK);
        assert_int_equal(res.n_targets, want_targets);
        hits[res.targets[0] - f->eps]++;
    }
}

static void test_random_picker(void **state)
{
    fx *f = fx_new(PICKER("random-picker", ""), NEP, 5);
    assert_non_null(f);
    f->eps[0].m.waiting = 0, f->eps[1].m.waiting = 100, f->eps[2].m.waiting = 100;
    int hits[3] = {0};
    fx_hits(f, 3, 3000, 1, hits);
    for (int i = 0; i < 3; i++) /* scores ignored: ~1000 each */
        assert_true(hits[i] > 850 && hits[i] < 1150);
    fx_free(f);
}

static void test_weighted_random_picker(void **state)
{
    /* queue scores 1.0, 1/3, 0 for queues 0, 2, 3 */
    fx *f = fx_new(PICKER("weighted-random-picker", ""), NEP, 9);
    assert_non_null(f);
    f->eps[0].m.waiting = 0, f->eps[1].m.waiting = 2, f->eps[2].m.waiting = 3;
    int hits[3] = {0};
    fx_hits(f, 3, 4000, 1, hits);
    /* A-Res with k = 1 picks i with probability w_i / sum w: 0.75 and 0.25; a 0 never */
    assert_int_equal(hits[2], 0);
    assert_true(hits[0] > 2850 && hits[0] < 3150);
    fx_free(f);
    /* every score 0 (full KV caches): a uniform random pick */
    f = fx_new("plugins:\n- type: kv-cache-utilization-scorer\n- type: weighted-random-picker\n"
               "  parameters: {maxNumOfEndpoints: 2}\n", NEP, 9);
    assert_non_null(f);
    for (int i = 0; i < 4; i++)
        f->eps[i].m.kv_usage = 1.0;
    int seen[4] = {0};
    for (int t = 0; t < 400; t++) {
        sched_result res;
        fx_run(f, &plain, 4, NULL, &res);
        assert_int_equal(res.n_targets, 2);
        assert_ptr_not_equal(res.targets[0], res.targets[1]);
        seen[res.targets[0] - f->eps]++;
    }
    for (int i = 0; i < 4; i++) /* uniform fallback */
        assert_true(seen[i] > 60);
    fx_free(f);
}

static void test_round_robin_picker(void **state)
{
    fx *f = fx_new("plugins:\n- type: round-robin-picker\n", NEP, 1);
    assert_non_null(f);
    f->eps[0].m.waiting = 100; /* ignored */
    for (int t = 0; t < 7; t++) {
        sched_result res;
        assert_int_equal(fx_run(f, &plain, 3, NULL, &res), KV_OK);
        assert_ptr_equal(res.targets[0], &f->eps[t % 3]);
    }
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_scorer),
        cmocka_unit_test(test_running_requests_size_scorer),
        cmocka_unit_test(test_kv_cache_utilization_scorer),
        cmocka_unit_test(test_load_aware_scorer),
        cmocka_unit_test(test_lora_affinity_scorer),
        cmocka_unit_test(test_active_request_scorer),
        cmocka_unit_test(test_session_affinity_scorer),
        cmocka_unit_test(test_precise_matched_total),
        cmocka_unit_test(test_precise_minmax_quirks),
        cmocka_unit_test(test_precise_recycled_slots),
        cmocka_unit_test(test_no_hit_lru_scorer),
        cmocka_unit_test(test_role_filters),
        cmocka_unit_test(test_by_label),
        cmocka_unit_test(test_by_label_selector),
        cmocka_unit_test(test_max_score_picker),
        cmocka_unit_test(test_random_picker),
        cmocka_unit_test(test_weighted_random_picker),
        cmocka_unit_test(test_round_robin_picker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
