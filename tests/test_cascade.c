/* test_cascade: shared-prefix (cascade) attention, opt-in. sm_cascade against vLLM's
 * use_cascade_attention worked by hand for Qwen3-32B at TP 2 on an H100 (32 query and 4
 * KV heads per rank, 132 SMs); then a simulated server whose 40 running requests share
 * a 1,024-token prefix prices its decode step with that prefix read once (the exact
 * duration recomputed from the step model), the same server without the option reads it
 * 40 times, and two groups with different prefixes never share (no block is held by
 * every running request, vLLM's condition). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "profiles.h"
#include "server.h"
#include "stepmodel.h"

/* The shipped profiles (models/, hardware/), loaded once for the group. */
static sm_model *qwen;
static sm_hardware *h100;

static int load_profiles(void **state)
{
    (void)state;
    const char *md[] = {"models"}, *hd[] = {"hardware"};
    qwen = sm_model_find(md, 1, "qwen3-32b", NULL);
    h100 = sm_hardware_find(hd, 1, "h100-sxm", NULL);
    return qwen && h100 ? 0 : -1;
}

static int free_profiles(void **state)
{
    (void)state;
    free(qwen);
    free(h100);
    return 0;
}

static void test_heuristic(void **state)
{
    (void)state;
    const sm_model *m = qwen;
    const sm_hardware *h = h100;
    /* thresholds: prefix < 256 tokens, fewer than 8 requests */
    assert_false(sm_cascade(m, h, 2, 255, 100, false));
    assert_false(sm_cascade(m, h, 2, 6000, 7, false));
    /* any prefill in the batch: FlashDecoding is not in play, the cascade wins */
    assert_true(sm_cascade(m, h, 2, 256, 8, false));
    /* all decode, 6,000-token prefix (47 tiles of 128): cascade = ceil(32*1/132) * 47 = 47
     * waves; FlashDecoding = ceil(B*4*1*47/132): 47 at B=33 (no), 49 at B=34 (yes) */
    assert_false(sm_cascade(m, h, 2, 6000, 33, true));
    assert_true(sm_cascade(m, h, 2, 6000, 34, true));
    assert_true(sm_cascade(m, h, 2, 6000, 115, true));
    /* 1,024 tokens (8 tiles): ceil(B*32/132) against 8: 3 at B=10 (no), 10 at B=40 (yes) */
    assert_false(sm_cascade(m, h, 2, 1024, 10, true));
    assert_true(sm_cascade(m, h, 2, 1024, 40, true));
}

#define NREQ 40
#define PREFIX 1024
#define TAIL 64

typedef struct rig {
    simsrv *s;
    simsrv_req q[NREQ];
    uint32_t *tok[NREQ];
} rig;

/* Request 0 alone first (its prefix blocks become cached), then the others, which hit
 * them: every running request then holds the same 64 leading blocks when share is 1;
 * with share 2, requests alternate between two prefixes. Steps until all decode. */
static void rig_open(rig *r, bool cascade, int share)
{
    simsrv_config c = {.model = qwen, .hw = h100, .tp = 2,
                       .block_size = 16, .num_gpu_blocks = 4000, .max_num_batched_tokens = 8192,
                       .max_num_seqs = 256, .prefix_caching = true, .cascade_attention = cascade};
    kv_err err = {0};
    r->s = simsrv_new(&c, &err);
    if (!r->s)
        fail_msg("%s", err.msg);
    simsrv_step_result res;
    for (int i = 0; i < NREQ; i++) {
        uint32_t *t = r->tok[i] = malloc((PREFIX + TAIL) * sizeof *t);
        assert_non_null(t);
        for (uint32_t k = 0; k < PREFIX; k++)
            t[k] = 1000 + (uint32_t)(i % share) * 50000 + k;
        for (uint32_t k = 0; k < TAIL; k++)
            t[PREFIX + k] = 200000 + (uint32_t)i * TAIL + k;
        r->q[i] = (simsrv_req){.id = (uint64_t)i + 1, .tokens = t, .n_prompt = PREFIX + TAIL, .n_output = 50};
        assert_int_equal(simsrv_submit(r->s, &r->q[i]), KV_OK);
        if (i < share)                 /* each prefix computed once before the rest arrive */
            while (r->q[i].n_generated == 0)
                assert_int_equal(simsrv_step(r->s, 0, &res), KV_OK);
    }
    for (int guard = 0; guard < 100; guard++) {
        bool all = true;
        for (int i = 0; i < NREQ; i++)
            all &= r->q[i].n_generated > 0;
        if (all)
            return;
        assert_int_equal(simsrv_step(r->s, 0, &res), KV_OK);
    }
    fail_msg("requests never all reached decode");
}

static void rig_close(rig *r)
{
    simsrv_free(r->s);
    for (int i = 0; i < NREQ; i++)
        free(r->tok[i]);
}

/* The decode step's expected duration: every sequence one new token over its context,
 * the common prefix read once when shared. */
static int64_t expected(const rig *r, bool shared)
{
    sm_batch b = {0};
    for (int i = 0; i < NREQ; i++)
        sm_batch_add(&b, 1, r->q[i].n_computed);
    if (shared)
        sm_batch_share_prefix(&b, PREFIX);
    return sm_batch_time_us(qwen, h100, 2, &b);
}

static void test_server_shares_common_prefix(void **state)
{
    (void)state;
    rig on, off;
    rig_open(&on, true, 1);
    rig_open(&off, false, 1);
    int64_t want_on = expected(&on, true), want_off = expected(&off, false);
    simsrv_step_result a, b;
    assert_int_equal(simsrv_step(on.s, 0, &a), KV_OK);
    assert_int_equal(simsrv_step(off.s, 0, &b), KV_OK);
    assert_int_equal(a.n_decode_seqs, NREQ);
    assert_true(a.cascade);
    assert_false(b.cascade);
    assert_int_equal(a.duration, want_on);
    assert_int_equal(b.duration, want_off);
    assert_true(a.duration < b.duration);     /* 39 x 1,024 tokens of KV not read again */
    rig_close(&on);
    rig_close(&off);
}

static void test_two_prefixes_never_share(void **state)
{
    (void)state;
    rig r;
    rig_open(&r, true, 2);
    simsrv_step_result a;
    int64_t want = expected(&r, false);
    assert_int_equal(simsrv_step(r.s, 0, &a), KV_OK);
    assert_false(a.cascade);
    assert_int_equal(a.duration, want);
    rig_close(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heuristic),
        cmocka_unit_test(test_server_shares_common_prefix),
        cmocka_unit_test(test_two_prefixes_never_share),
    };
    return cmocka_run_group_tests(tests, load_profiles, free_profiles);
}
