/* test_policies: every filter, scorer and picker of policies/ (engineer C's) against values
 * computed by hand from the formulas in docs/upstream/epp.md §1, driven through the public scheduler the
 * way a config uses them: one plugin per profile, its scores read back from the trace.
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
#include "scheduler.h"
#include "session_affinity.h"

#define NEP 8

typedef struct rig {
    epc_config *cfg;
    sched *s;
    sched_trace tr;
    double now;
    sched_endpoint ep[NEP];
    sched_endpoint *eps[NEP];
    char names[NEP][32], pods[NEP][32];
} rig;

static double rig_clock(void *ctx) { return *(double *)ctx; }

static void rig_open(rig *r, const char *yaml, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    kv_err err = {0};
    r->cfg = epc_load_string(yaml, strlen(yaml), "test.yaml", registry_types, &err);
    if (!r->cfg)
        fail_msg("config: %s", err.msg);
    sched_env env = {.seed = seed, .now = rig_clock, .clock_ctx = &r->now};
    r->s = sched_new(r->cfg, &env, &err);
    if (!r->s)
        fail_msg("sched: %s", err.msg);
    for (int i = 0; i < NEP; i++) {
        snprintf(r->names[i], sizeof r->names[i], "10.0.0.%d:8000", i + 1);
        snprintf(r->pods[i], sizeof r->pods[i], "pod-%c", 'a' + i);
        r->ep[i] = (sched_endpoint){.id = 100 + (uint32_t)i, .name = r->names[i], .pod = r->pods[i], .ns = "llm"};
        r->eps[i] = &r->ep[i];
    }
}

static void rig_close(rig *r)
{
    sched_trace_free(&r->tr);
    sched_free(r->s);
    epc_free(r->cfg);
}

/* Schedules req over the first n endpoints; returns the rc and fills scores[i] with the
 * (clamped) score the profile's only scorer gave ep[i] (-1 if it was not scored). */
static int rig_run(rig *r, const sched_request *req, size_t n, double *scores, sched_result *res)
{
    kv_err err = {0};
    sched_result tmp;
    int rc = sched_schedule(r->s, req, r->eps, n, res ? res : &tmp, &r->tr, &err);
    for (size_t i = 0; scores && i < n; i++) {
        scores[i] = -1;
        for (size_t j = 0; j < r->tr.n_scores; j++)
            if (r->tr.scores[j].ep == &r->ep[i])
                scores[i] = r->tr.scores[j].score;
    }
    return rc;
}

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
    rig r;
    rig_open(&r, SCORER("queue-scorer", ""), 1);
    double s[4];
    r.ep[0].m.waiting = 2, r.ep[1].m.waiting = 5, r.ep[2].m.waiting = 8, r.ep[3].m.waiting = 5;
    assert_int_equal(rig_run(&r, &plain, 4, s, NULL), KV_OK);
    assert_scores(s, (double[]){1.0, 0.5, 0.0, 0.5}, 4);
    /* all equal -> 1.0 each, including a single candidate */
    for (int i = 0; i < 4; i++)
        r.ep[i].m.waiting = 3;
    rig_run(&r, &plain, 4, s, NULL);
    assert_scores(s, (double[]){1, 1, 1, 1}, 4);
    rig_run(&r, &plain, 1, s, NULL);
    assert_scores(s, (double[]){1}, 1);
    /* a never-scraped pod (valid=false, zeros) reads an empty queue: the best */
    r.ep[1] = (sched_endpoint){.id = 101, .name = "x"};
    r.ep[0].m.waiting = 4;
    rig_run(&r, &plain, 2, s, NULL);
    assert_scores(s, (double[]){0, 1}, 2);
    rig_close(&r);
}

static void test_running_requests_size_scorer(void **state)
{
    rig r;
    rig_open(&r, SCORER("running-requests-size-scorer", ""), 1);
    double s[3];
    r.ep[0].m.running = 10, r.ep[1].m.running = 0, r.ep[2].m.running = 4;
    r.ep[0].m.waiting = 0, r.ep[1].m.waiting = 50; /* ignored */
    rig_run(&r, &plain, 3, s, NULL);
    assert_scores(s, (double[]){0.0, 1.0, 0.6}, 3);
    rig_close(&r);
}

static void test_kv_cache_utilization_scorer(void **state)
{
    rig r;
    rig_open(&r, SCORER("kv-cache-utilization-scorer", ""), 1);
    double s[4];
    r.ep[0].m.kv_usage = 0.25, r.ep[1].m.kv_usage = 1.0, r.ep[2].m.kv_usage = 0;
    r.ep[3].m.kv_usage = 1.25; /* a bogus scrape: 1 - 1.25 < 0, clamped */
    rig_run(&r, &plain, 4, s, NULL);
    assert_scores(s, (double[]){0.75, 0.0, 1.0, 0.0}, 4);
    rig_close(&r);
}

static void test_load_aware_scorer(void **state)
{
    rig r;
    rig_open(&r, SCORER("load-aware-scorer", "  parameters: {threshold: 100}\n"), 1);
    double s[4];
    r.ep[0].m.waiting = 0, r.ep[1].m.waiting = 25, r.ep[2].m.waiting = 100, r.ep[3].m.waiting = 400;
    rig_run(&r, &plain, 4, s, NULL);
    assert_scores(s, (double[]){0.5, 0.375, 0.0, 0.0}, 4);
    rig_close(&r);
    rig_open(&r, SCORER("load-aware-scorer", ""), 1); /* default threshold 128 */
    r.ep[0].m.waiting = 32;
    rig_run(&r, &plain, 1, s, NULL);
    assert_scores(s, (double[]){0.375}, 1);
    rig_close(&r);
}

static void test_lora_affinity_scorer(void **state)
{
    rig r;
    rig_open(&r, SCORER("lora-affinity-scorer", ""), 1);
    const char *run_a[] = {"sql-lora"}, *run_b[] = {"other"}, *wait_c[] = {"sql-lora"}, *two[] = {"x", "y"};
    r.ep[0].m = (sched_metrics){.running_loras = run_a, .n_running_loras = 1, .max_lora = 1};      /* active */
    r.ep[1].m = (sched_metrics){.running_loras = run_b, .n_running_loras = 1, .max_lora = 2};      /* room */
    r.ep[2].m = (sched_metrics){.running_loras = two, .n_running_loras = 2, .waiting_loras = wait_c,
                                .n_waiting_loras = 1, .max_lora = 2};                               /* waiting */
    r.ep[3].m = (sched_metrics){.running_loras = two, .n_running_loras = 2, .max_lora = 2};        /* full */
    /* ep[4]: never scraped: no lists, max_lora 0 */
    sched_request req = {.id = "r", .model = "base", .lora = "sql-lora"};
    double s[5];
    rig_run(&r, &req, 5, s, NULL);
    assert_scores(s, (double[]){1.0, 0.8, 0.6, 0.0, 0.0}, 5);
    /* without a LoRA the target model is matched */
    sched_request base = {.id = "r", .model = "other"};
    rig_run(&r, &base, 2, s, NULL);
    assert_scores(s, (double[]){0.0, 1.0}, 2);
    rig_close(&r);
}

/* ---- stateful scorers -------------------------------------------------------------------- */

static void test_active_request_scorer(void **state)
{
    rig r;
    rig_open(&r, SCORER("active-request-scorer", "  parameters: {requestTimeout: 10s}\n"), 1);
    double s[3];
    rig_run(&r, &plain, 3, s, NULL);
    assert_scores(s, (double[]){1, 1, 1}, 3); /* nothing in flight */
    /* two requests to ep0, one to ep1 */
    const char *ids[] = {"a", "b", "c"};
    int to[] = {0, 0, 1};
    for (int i = 0; i < 3; i++) {
        sched_request q = {.id = ids[i], .model = "m"};
        sched_result res = {.n_targets = 1, .targets = {&r.ep[to[i]]}};
        sched_pre_request(r.s, &q, &res);
    }
    assert_int_equal(r.ep[0].in_flight, 2);
    rig_run(&r, &plain, 3, s, NULL);
    assert_scores(s, (double[]){0.0, 0.5, 1.0}, 3);
    /* completing "a" leaves one on each of ep0 and ep1 */
    sched_response_complete(r.s, &(sched_request){.id = "a"}, &r.ep[0]);
    rig_run(&r, &plain, 3, s, NULL);
    assert_scores(s, (double[]){0.0, 0.0, 1.0}, 3);
    assert_int_equal(r.ep[0].in_flight, 1);
    /* past the timeout the lost completions stop counting */
    r.now = 10.5;
    rig_run(&r, &plain, 3, s, NULL);
    assert_scores(s, (double[]){1, 1, 1}, 3);
    rig_close(&r);
}

static void test_session_affinity_scorer(void **state)
{
    rig r;
    rig_open(&r, SCORER("session-affinity-scorer", ""), 1);
    double s[3];
    /* base64("llm/pod-b") */
    sched_kv hdr[] = {{"x-session-token", "bGxtL3BvZC1i"}};
    sched_request q = {.id = "r", .model = "m", .headers = hdr, .n_headers = 1};
    sched_result res;
    rig_run(&r, &q, 3, s, &res);
    assert_scores(s, (double[]){0, 1, 0}, 3);
    assert_ptr_equal(res.targets[0], &r.ep[1]);
    /* no header, garbage, or another namespace: nobody */
    rig_run(&r, &plain, 3, s, NULL);
    assert_scores(s, (double[]){0, 0, 0}, 3);
    hdr[0].value = "!!not base64!!";
    rig_run(&r, &q, 3, s, NULL);
    assert_scores(s, (double[]){0, 0, 0}, 3);
    hdr[0].value = "ZGV2L3BvZC1i"; /* dev/pod-b */
    rig_run(&r, &q, 3, s, NULL);
    assert_scores(s, (double[]){0, 0, 0}, 3);
    hdr[0].value = "bGxtL3BvZC1h"; /* llm/pod-a */
    rig_run(&r, &q, 3, s, NULL);
    assert_scores(s, (double[]){1, 0, 0}, 3);
    /* the token a driver writes on the response brings the next request back */
    char tok[64];
    assert_int_equal(session_affinity_token(&r.ep[2], tok, sizeof tok), 12);
    assert_string_equal(tok, "bGxtL3BvZC1j"); /* llm/pod-c */
    hdr[0].value = tok;
    rig_run(&r, &q, 3, s, NULL);
    assert_scores(s, (double[]){0, 0, 1}, 3);
    assert_int_equal(session_affinity_token(&r.ep[2], tok, 12), KV_ERANGE);
    /* padding, as Go's base64.StdEncoding writes it (RFC 4648 test vectors' shapes) */
    sched_endpoint one = {.name = "x", .ns = "ab", .pod = "c"}, two = {.name = "x", .ns = "ab", .pod = "cd"};
    assert_int_equal(session_affinity_token(&one, tok, sizeof tok), 8);
    assert_string_equal(tok, "YWIvYw=="); /* ab/c */
    assert_int_equal(session_affinity_token(&two, tok, sizeof tok), 8);
    assert_string_equal(tok, "YWIvY2Q="); /* ab/cd */
    rig_close(&r);
}

/* ---- precise prefix scorer and no-hit-lru -------------------------------------------- */

static sched_kvsource *kvsource(rig *r)
{
    void *svc[1];
    assert_int_equal(sched_services(r->s, "kvsource", svc, 1), 1);
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
    rig r;
    rig_open(&r, PRECISE(matched-total), 1);
    sched_kvsource *src = kvsource(&r);
    uint32_t tok[18];
    for (int i = 0; i < 18; i++)
        tok[i] = 1000 + (uint32_t)i; /* 4 full blocks of 4, 2 tokens dropped */
    sched_request q = {.id = "r", .model = "m", .tokens = tok, .n_tokens = 18};
    double s[4];
    /* cold index: everyone 0 */
    rig_run(&r, &q, 4, s, NULL);
    assert_scores(s, (double[]){0, 0, 0, 0}, 4);
    hold(src, "10.0.0.1:8000", tok, 18, 3, KVTIER_GPU);  /* 3/4 */
    hold(src, "10.0.0.2:8000", tok, 18, 2, KVTIER_CPU);  /* 2 * 0.8 / 4 */
    hold(src, "10.0.0.3", tok, 18, 4, KVTIER_GPU);       /* a v0.5 IP-only topic: 4/4 */
    sched_result res;
    rig_run(&r, &q, 4, s, &res);
    assert_scores(s, (double[]){0.75, 0.4, 1.0, 0.0}, 4);
    assert_ptr_equal(res.targets[0], &r.ep[2]);
    /* the same keys handed in precomputed give the same scores */
    uint64_t keys[4];
    assert_int_equal(blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tok, 18, NULL, 0, NULL, keys, 4),
                     4);
    sched_request pre = {.id = "r", .model = "m", .keys_ctx = &src->keys, .keys = keys, .n_keys = 4};
    rig_run(&r, &pre, 4, s, NULL);
    assert_scores(s, (double[]){0.75, 0.4, 1.0, 0.0}, 4);
    /* another model hashes to other keys: no match */
    sched_request other = {.id = "r", .model = "m2", .tokens = tok, .n_tokens = 18};
    rig_run(&r, &other, 4, s, NULL);
    assert_scores(s, (double[]){0, 0, 0, 0}, 4);
    /* fewer tokens than a block: no keys, all 0 */
    sched_request tiny = {.id = "r", .model = "m", .tokens = tok, .n_tokens = 3};
    rig_run(&r, &tiny, 4, s, NULL);
    assert_scores(s, (double[]){0, 0, 0, 0}, 4);
    rig_close(&r);
}

static void test_precise_minmax_quirks(void **state)
{
    rig r;
    rig_open(&r, PRECISE(minmax), 1);
    sched_kvsource *src = kvsource(&r);
    uint32_t tok[16];
    for (int i = 0; i < 16; i++)
        tok[i] = 7 * (uint32_t)i;
    sched_request q = {.id = "r", .model = "m", .tokens = tok, .n_tokens = 16};
    double s[4];
    /* one pod with 1 of 4 blocks: the whole map is that pod, min == max -> 1.0 (the quirk) */
    hold(src, "10.0.0.1:8000", tok, 16, 1, KVTIER_GPU);
    rig_run(&r, &q, 4, s, NULL);
    assert_scores(s, (double[]){1.0, 0, 0, 0}, 4);
    /* raw 1 (gpu), 3*0.8 = 2.4 (cpu), 4 (gpu): (s - 1)/(4 - 1) */
    hold(src, "10.0.0.2:8000", tok, 16, 3, KVTIER_CPU);
    hold(src, "10.0.0.3:8000", tok, 16, 4, KVTIER_GPU);
    rig_run(&r, &q, 4, s, NULL);
    assert_scores(s, (double[]){0.0, 1.4 / 3.0, 1.0, 0.0}, 4);
    rig_close(&r);
}

/* The ingester may free a pod's slot and give it to another pod: the scorer must not
 * lend the new pod's cache to the old name, and must find a pod re-added elsewhere. */
static void test_precise_recycled_slots(void **state)
{
    rig r;
    rig_open(&r, PRECISE(matched-total), 1);
    sched_kvsource *src = kvsource(&r);
    uint32_t tok[8] = {9, 8, 7, 6, 5, 4, 3, 2};
    sched_request q = {.id = "r", .model = "m", .tokens = tok, .n_tokens = 8};
    double s[4];
    hold(src, "10.0.0.1:8000", tok, 8, 1, KVTIER_GPU);
    rig_run(&r, &q, 4, s, NULL);
    assert_scores(s, (double[]){0.5, 0, 0, 0}, 4);
    int old = kvindex_endpoint_find(src->index, "10.0.0.1:8000");
    kvindex_endpoint_remove(src->index, old);
    hold(src, "10.0.0.9:8000", tok, 8, 2, KVTIER_GPU); /* not a candidate; likely reuses the slot */
    rig_run(&r, &q, 4, s, NULL);
    assert_scores(s, (double[]){0, 0, 0, 0}, 4);
    /* ep1 appears in the index after being cached as unknown: counted at once */
    hold(src, "10.0.0.2:8000", tok, 8, 2, KVTIER_GPU);
    rig_run(&r, &q, 4, s, NULL);
    assert_scores(s, (double[]){0, 1.0, 0, 0}, 4);
    /* ep0, cached at a slot that matches nothing, leaves; a stranger takes that slot and
     * ep0 returns under another one: the index's endpoint version changed, so the very next
     * call re-resolves every cached slot */
    double s8[8];
    hold(src, "10.0.0.1:8000", tok, 8, 1, KVTIER_GPU);
    rig_run(&r, &q, 8, s8, NULL); /* caches ep0's slot */
    assert_true(s8[0] == 0.5);
    int slot0 = kvindex_endpoint_find(src->index, "10.0.0.1:8000");
    kvindex_endpoint_remove(src->index, slot0);
    kv_err err = {0};
    assert_int_equal(kvindex_endpoint_add(src->index, "10.0.0.50:8000", &err), slot0);
    hold(src, "10.0.0.1:8000", tok, 8, 1, KVTIER_GPU);
    assert_int_not_equal(kvindex_endpoint_find(src->index, "10.0.0.1:8000"), slot0);
    rig_run(&r, &q, 8, s8, NULL);
    assert_scores(s8, (double[]){0.5, 1.0, 0, 0, 0, 0, 0, 0}, 8);
    rig_close(&r);
}

static void test_no_hit_lru_scorer(void **state)
{
    rig r;
    rig_open(&r,
             PRECISE(matched-total) "- type: no-hit-lru-scorer\n  parameters: {prefixPluginType: "
                                    "precise-prefix-cache-scorer}\n"
                                    "schedulingProfiles:\n- name: default\n  plugins:\n"
                                    "  - pluginRef: precise-prefix-cache-scorer\n    weight: 0\n"
                                    "  - pluginRef: no-hit-lru-scorer\n",
             1);
    sched_plugin *lru = sched_plugin_by_name(r.s, "no-hit-lru-scorer");
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
        assert_int_equal(sched_schedule(r.s, &q, r.eps, 4, &res, &r.tr, &err), KV_OK);
        for (int i = 0; i < 4; i++)
            for (size_t j = 0; j < r.tr.n_scores; j++)
                if (r.tr.scores[j].plugin == lru && r.tr.scores[j].ep == &r.ep[i])
                    lru_s[i] = r.tr.scores[j].score;
        if (k == 0)
            assert_scores(lru_s, (double[]){1.0, 2.0 / 3, 1.0 / 3, 0.0}, 4);
        if (k == 1) /* ep2 used: never-used 0,1,3 first, then 2 */
            assert_scores(lru_s, (double[]){1.0, 2.0 / 3, 0.0, 1.0 / 3}, 4);
        if (k == 2) /* ep2 then ep0 used: 1, 3 never used; then 2 (older), 0 */
            assert_scores(lru_s, (double[]){0.0, 1.0, 1.0 / 3, 2.0 / 3}, 4);
        res.targets[0] = &r.ep[sent[k]];
        sched_pre_request(r.s, &q, &res);
    }
    /* a warm request (some pod holds a block): 0.5 for all */
    hold(kvsource(&r), "10.0.0.2:8000", tok, 8, 1, KVTIER_GPU);
    sched_request warm = {.id = "w", .model = "m", .tokens = tok, .n_tokens = 8};
    sched_result res;
    assert_int_equal(sched_schedule(r.s, &warm, r.eps, 4, &res, &r.tr, &err), KV_OK);
    for (size_t j = 0; j < r.tr.n_scores; j++)
        if (r.tr.scores[j].plugin == lru)
            assert_true(r.tr.scores[j].score == 0.5);
    rig_close(&r);
}

/* ---- filters -------------------------------------------------------------------------- */

static void set_label(rig *r, int i, sched_kv *kv, size_t n)
{
    r->ep[i].labels = kv;
    r->ep[i].n_labels = n;
}

/* Which of the first n endpoints survived the filters (from the trace's totals). */
static unsigned kept(rig *r, size_t n, int *rc)
{
    kv_err err = {0};
    sched_result res;
    *rc = sched_schedule(r->s, &plain, r->eps, n, &res, &r->tr, &err);
    unsigned mask = 0;
    for (size_t j = 0; j < r->tr.n_totals; j++)
        mask |= 1u << (r->tr.totals[j].ep - r->ep);
    return mask;
}

static void test_role_filters(void **state)
{
    sched_kv dec[] = {{"llm-d.ai/role", "decode"}}, both[] = {{"llm-d.ai/role", "both"}},
             pre[] = {{"llm-d.ai/role", "prefill"}}, other[] = {{"app", "x"}};
    rig r;
    int rc;
    rig_open(&r, "plugins:\n- type: decode-filter\n", 1);
    set_label(&r, 0, dec, 1), set_label(&r, 1, both, 1), set_label(&r, 2, pre, 1), set_label(&r, 3, other, 1);
    assert_int_equal(kept(&r, 5, &rc), 0x1b); /* 0, 1, 3 (no role), 4 (no labels) */
    assert_int_equal(r.tr.n_removed, 1);
    assert_ptr_equal(r.tr.removed[0].ep, &r.ep[2]);
    assert_string_equal(r.tr.removed[0].plugin->name, "decode-filter");
    rig_close(&r);
    rig_open(&r, "plugins:\n- type: prefill-filter\n", 1);
    set_label(&r, 0, dec, 1), set_label(&r, 1, both, 1), set_label(&r, 2, pre, 1), set_label(&r, 3, other, 1);
    assert_int_equal(kept(&r, 5, &rc), 0x04);
    /* no prefill pod at all -> the typed error */
    assert_int_equal(kept(&r, 2, &rc), 0);
    assert_int_equal(rc, KV_ENOENDPOINTS);
    rig_close(&r);
}

static void test_by_label(void **state)
{
    sched_kv a[] = {{"tier", "gold"}}, b[] = {{"tier", "silver"}}, c[] = {{"tier", "bronze"}};
    rig r;
    int rc;
    rig_open(&r, "plugins:\n- type: by-label\n  parameters: {label: tier, validValues: [gold, silver]}\n", 1);
    set_label(&r, 0, a, 1), set_label(&r, 1, b, 1), set_label(&r, 2, c, 1);
    assert_int_equal(kept(&r, 4, &rc), 0x3);
    rig_close(&r);
    rig_open(&r,
             "plugins:\n- type: by-label\n  parameters: {label: tier, validValues: [bronze], allowsNoLabel: true}\n",
             1);
    set_label(&r, 0, a, 1), set_label(&r, 1, b, 1), set_label(&r, 2, c, 1);
    assert_int_equal(kept(&r, 4, &rc), 0xc);
    rig_close(&r);
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
    rig r;
    int rc;
    rig_open(&r,
             "plugins:\n- type: by-label-selector\n  parameters:\n    matchLabels: {app: vllm}\n"
             "    matchExpressions:\n    - {key: zone, operator: NotIn, values: [b]}\n"
             "    - {key: canary, operator: DoesNotExist}\n",
             1);
    set_label(&r, 0, a, 2), set_label(&r, 1, b, 3), set_label(&r, 2, c, 2), set_label(&r, 3, d, 1);
    assert_int_equal(kept(&r, 5, &rc), 0x9); /* a; d (NotIn matches a missing key); not e (no app) */
    rig_close(&r);
    rig_open(&r,
             "plugins:\n- type: by-label-selector\n  parameters:\n    matchExpressions:\n"
             "    - {key: zone, operator: In, values: [a, c]}\n    - {key: app, operator: Exists}\n",
             1);
    set_label(&r, 0, a, 2), set_label(&r, 1, b, 3), set_label(&r, 2, c, 2), set_label(&r, 3, d, 1);
    assert_int_equal(kept(&r, 5, &rc), 0x5);
    rig_close(&r);
    /* an empty selector keeps everybody */
    rig_open(&r, "plugins:\n- type: by-label-selector\n", 1);
    assert_int_equal(kept(&r, 3, &rc), 0x7);
    rig_close(&r);
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
    rig r;
    rig_open(&r, PICKER("max-score-picker", "  parameters: {maxNumOfEndpoints: 3}\n"), 42);
    /* queue scores: ep0 1.0, ep1 0.75, ep2 0.75, ep3 0.0, ep4 0.5 */
    int q[] = {0, 1, 1, 4, 2};
    for (int i = 0; i < 5; i++)
        r.ep[i].m.waiting = q[i];
    int second_ep1 = 0;
    for (int t = 0; t < 200; t++) {
        sched_result res;
        assert_int_equal(rig_run(&r, &plain, 5, NULL, &res), KV_OK);
        assert_int_equal(res.n_targets, 3);
        assert_ptr_equal(res.targets[0], &r.ep[0]);
        assert_true((res.targets[1] == &r.ep[1] && res.targets[2] == &r.ep[2]) ||
                    (res.targets[1] == &r.ep[2] && res.targets[2] == &r.ep[1]));
        second_ep1 += res.targets[1] == &r.ep[1];
    }
    /* the tie between ep1 and ep2 is broken at random, both ways */
    assert_true(second_ep1 > 60 && second_ep1 < 140);
    rig_close(&r);
    /* maxNumOfEndpoints default 1; more than the candidates returns them all */
    rig_open(&r, PICKER("max-score-picker", "  parameters: {maxNumOfEndpoints: 8}\n"), 42);
    sched_result res;
    assert_int_equal(rig_run(&r, &plain, 2, NULL, &res), KV_OK);
    assert_int_equal(res.n_targets, 2);
    rig_close(&r);
}

/* trials picks over the first n endpoints, each returning want_targets; hits[i] counts
 * ep i picked first. */
static void rig_hits(rig *r, size_t n, int trials, size_t want_targets, int *hits)
{
    for (int t = 0; t < trials; t++) {
        sched_result res;
        assert_int_equal(rig_run(r, &plain, n, NULL, &res), KV_OK);
        assert_int_equal(res.n_targets, want_targets);
        hits[res.targets[0] - r->ep]++;
    }
}

static void test_random_picker(void **state)
{
    rig r;
    rig_open(&r, PICKER("random-picker", ""), 5);
    r.ep[0].m.waiting = 0, r.ep[1].m.waiting = 100, r.ep[2].m.waiting = 100;
    int hits[3] = {0};
    rig_hits(&r, 3, 3000, 1, hits);
    for (int i = 0; i < 3; i++) /* scores ignored: ~1000 each */
        assert_true(hits[i] > 850 && hits[i] < 1150);
    rig_close(&r);
}

static void test_weighted_random_picker(void **state)
{
    rig r;
    /* queue scores 1.0, 1/3, 0 for queues 0, 2, 3 */
    rig_open(&r, PICKER("weighted-random-picker", ""), 9);
    r.ep[0].m.waiting = 0, r.ep[1].m.waiting = 2, r.ep[2].m.waiting = 3;
    int hits[3] = {0};
    rig_hits(&r, 3, 4000, 1, hits);
    /* A-Res with k = 1 picks i with probability w_i / sum w: 0.75 and 0.25; a 0 never */
    assert_int_equal(hits[2], 0);
    assert_true(hits[0] > 2850 && hits[0] < 3150);
    rig_close(&r);
    /* every score 0 (full KV caches): a uniform random pick */
    rig_open(&r,
             "plugins:\n- type: kv-cache-utilization-scorer\n- type: weighted-random-picker\n"
             "  parameters: {maxNumOfEndpoints: 2}\n",
             9);
    for (int i = 0; i < 4; i++)
        r.ep[i].m.kv_usage = 1.0;
    int seen[4] = {0};
    for (int t = 0; t < 400; t++) {
        sched_result res;
        rig_run(&r, &plain, 4, NULL, &res);
        assert_int_equal(res.n_targets, 2);
        assert_ptr_not_equal(res.targets[0], res.targets[1]);
        seen[res.targets[0] - r.ep]++;
    }
    for (int i = 0; i < 4; i++) /* uniform fallback */
        assert_true(seen[i] > 60);
    rig_close(&r);
}

static void test_round_robin_picker(void **state)
{
    rig r;
    rig_open(&r, "plugins:\n- type: round-robin-picker\n", 1);
    r.ep[0].m.waiting = 100; /* ignored */
    for (int t = 0; t < 7; t++) {
        sched_result res;
        assert_int_equal(rig_run(&r, &plain, 3, NULL, &res), KV_OK);
        assert_ptr_equal(res.targets[0], &r.ep[t % 3]);
    }
    rig_close(&r);
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
