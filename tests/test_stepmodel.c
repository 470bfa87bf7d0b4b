/* test_stepmodel: the step-time model against the roofline estimates of
 * docs/upstream/vllm.md §4 (Qwen3-32B, TP=2, H100 SXM), with the tolerance stated
 * per case; its monotonicity; KV capacity against vLLM's logged figure and the
 * estimated band; vLLM's batch defaults per GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "profiles.h"
#include "stepmodel.h"

/* The shipped profiles (models/, hardware/; test_profiles checks the files). */
static sm_model *qwen_m, *llama_m;
static sm_hardware *h100_h, *l40s_h;

static int load_profiles(void **state)
{
    (void)state;
    const char *md[] = {"models"}, *hd[] = {"hardware"};
    qwen_m = sm_model_find(md, 1, "qwen3-32b", NULL);
    llama_m = sm_model_find(md, 1, "llama-3.1-8b", NULL);
    h100_h = sm_hardware_find(hd, 1, "h100-sxm", NULL);
    l40s_h = sm_hardware_find(hd, 1, "l40s", NULL);
    return qwen_m && llama_m && h100_h && l40s_h ? 0 : -1;
}

static int free_profiles(void **state)
{
    (void)state;
    free(qwen_m);
    free(llama_m);
    free(h100_h);
    free(l40s_h);
    return 0;
}

static const sm_model *qwen(void)
{
    return qwen_m;
}

static const sm_hardware *h100(void)
{
    return h100_h;
}

/* B sequences, each decoding one token over ctx tokens. */
static double decode_ms(const sm_model *m, const sm_hardware *h, int tp, size_t b, uint32_t ctx)
{
    sm_seq *s = calloc(b, sizeof *s);
    assert_non_null(s);
    for (size_t i = 0; i < b; i++) s[i] = (sm_seq){1, ctx};
    double t = sm_step_time_us(m, h, tp, s, b) / 1000.0;
    free(s);
    return t;
}

static double prefill_ms(const sm_model *m, const sm_hardware *h, int tp, uint32_t n, uint32_t ctx)
{
    sm_seq s = {n, ctx};
    return sm_step_time_us(m, h, tp, &s, 1) / 1000.0;
}

static void in_band(double v, double lo, double hi)
{
    if (v < lo || v > hi) fail_msg("%.3f ms outside [%.3f, %.3f]", v, lo, hi);
}

static void test_profiles(void **state)
{
    (void)state;
    const sm_model *m = qwen();
    /* 2 (K,V) x 64 layers x 8 heads x 128 x 2 bytes = 256 KiB per token, half per GPU. */
    assert_true(sm_kv_bytes_per_token(m, 1) == 262144.0);
    assert_true(sm_kv_bytes_per_token(m, 2) == 131072.0);
    /* Fewer KV heads than ranks: heads are replicated, not split below one. */
    assert_true(sm_kv_bytes_per_token(m, 16) == sm_kv_bytes_per_token(m, 8));
}

/* Spec §4 table. Decode: +-1 ms around 13-14 ms at B=1, +-10% elsewhere. Prefill: the
 * estimates assume 65% MFU ("general knowledge, not checked"); calibration against
 * the guide settled at 0.60 peak efficiency (docs/VALIDATION.md), about 17% slower, so
 * the band is -5%/+20%. At 512 tokens the spec also ignores the small-GEMM ramp: the
 * model must be slower than the estimated 27 ms but by less than half. */
static void test_spec_estimates(void **state)
{
    (void)state;
    const sm_model *m = qwen();
    const sm_hardware *h = h100();
    in_band(decode_ms(m, h, 2, 1, 1024), 12.5, 15.0);
    in_band(decode_ms(m, h, 2, 64, 2048), 18.0, 22.0);
    in_band(decode_ms(m, h, 2, 128, 2048), 27.0 * 0.9, 27.0 * 1.1);
    in_band(decode_ms(m, h, 2, 256, 4096), 62.0 * 0.9, 62.0 * 1.1);
    in_band(prefill_ms(m, h, 2, 2048, 0), 110.0 * 0.95, 110.0 * 1.2);
    in_band(prefill_ms(m, h, 2, 8192, 0), 450.0 * 0.95, 450.0 * 1.2);
    in_band(prefill_ms(m, h, 2, 512, 0), 27.0, 27.0 * 1.5);

    /* Decodes riding along a 2048-token chunk cost about the chunk alone. */
    sm_seq mix[65];
    mix[0] = (sm_seq){2048, 0};
    for (int i = 1; i < 65; i++) mix[i] = (sm_seq){1, 2048};
    double t = sm_step_time_us(m, h, 2, mix, 65) / 1000.0;
    double alone = prefill_ms(m, h, 2, 2048, 0);
    in_band(t, alone, alone * 1.1);
    assert_int_equal(sm_step_time_us(m, h, 2, NULL, 0), 0);
}

/* One mixed step worked by hand from the formula in simulator/stepmodel.c and the
 * Qwen3-32B / H100 profiles, TP 2: a 1584-token chunk over a 6000-token cached prefix
 * (the llm-d row's typical admission) plus 100 decodes at 8000 tokens of context.
 *   linear params L*(2*h*H*d + 2*h*Hkv*d + 3*h*I) = 64*(2*5120*8192 + 2*5120*1024
 *     + 3*5120*25600) = 31,205,621,760
 *   m = 1684 tokens, pairs = 1584*(6000 + 1585/2) + 100*(8000 + 1) = 11,559,420
 *   FLOPs/GPU = 31,205,621,760*1684 + 4*64*128*64/2*11,559,420 + 5120*151936*101
 *             = 5.2550267e13 + 1.2120930e13 + 7.8569e10 = 6.4749767e13
 *   eps(1684) = 0.6*1684/1812 = 0.557616; T_SM = 6.4749767e13/(989.4e12*0.557616) = 117.363 ms
 *   bytes = (32.76e9 - 151936*5120)*2/2 + 131072*(7584 + 100*8001) -> T_HBM = 45.72 ms at
 *     3.35e12*0.9 B/s (hidden under T_SM: max, not sum)
 *   T_NVL = 128 all-reduces * (8 us + 1684*5120*2 B/(450e9*0.9) B/s) = 128*50.58 us = 6.474 ms
 *   T_CPU = 126 + 32.1*64 + 4.42*101 us = 2.627 ms
 *   T = 117.363 + 6.474 + 2.627 = 126.464 ms */
static void test_mixed_step_by_hand(void **state)
{
    (void)state;
    const sm_model *m = qwen();
    const sm_hardware *h = h100();
    sm_seq mix[101];
    mix[0] = (sm_seq){1584, 6000};
    for (int i = 1; i < 101; i++) mix[i] = (sm_seq){1, 8000};
    int64_t t = sm_step_time_us(m, h, 2, mix, 101);
    assert_in_range(t, 126464 - 2, 126464 + 2);
    /* The running-sum form prices the same batch identically. */
    sm_batch b = {0};
    for (int i = 0; i < 101; i++) sm_batch_add(&b, mix[i].new_tokens, mix[i].context);
    assert_int_equal(sm_batch_time_us(m, h, 2, &b), t);
    /* in any order: the prefill's (1584 + 1) / 2 is a half, kept exactly (pairs doubled) */
    sm_batch r = {0};
    for (int i = 100; i >= 0; i--) sm_batch_add(&r, mix[i].new_tokens, mix[i].context);
    assert_int_equal(r.pairs2, b.pairs2);
    assert_int_equal(r.pairs2, 1584ull * (2 * 6000 + 1585) + 100ull * (2 * 8000 + 2));
    assert_int_equal(sm_batch_time_us(m, h, 2, &r), t);
}

static void test_monotonic(void **state)
{
    (void)state;
    const sm_model *m = qwen();
    const sm_hardware *h = h100();
    int64_t prev = 0;
    for (uint32_t n = 1; n <= 16384; n = n * 3 / 2 + 1) {
        int64_t t = (int64_t)(prefill_ms(m, h, 2, n, 0) * 1000);
        assert_true(t >= prev);
        prev = t;
    }
    prev = 0;
    for (uint32_t c = 0; c <= 40000; c += 2500) {   /* more context, never cheaper */
        int64_t t = (int64_t)(prefill_ms(m, h, 2, 512, c) * 1000);
        assert_true(t >= prev);
        prev = t;
    }
    prev = 0;
    for (size_t b = 1; b <= 512; b *= 2) {
        int64_t t = (int64_t)(decode_ms(m, h, 2, b, 4096) * 1000);
        assert_true(t > prev);
        prev = t;
    }
    /* Per token, a big chunk is cheaper than a small one (the GEMM ramp). */
    assert_true(prefill_ms(m, h, 2, 4096, 0) / 4096 < prefill_ms(m, h, 2, 256, 0) / 256);
    /* A prefix-cache hit saves most of the prefill: 1584 new tokens over 6000 cached
     * cost far less than the whole 7584-token prompt. */
    assert_true(prefill_ms(m, h, 2, 1584, 6000) < 0.4 * prefill_ms(m, h, 2, 7584, 0));
    /* TP=2 beats TP=1 on a prefill; the L40S is slower than the H100 everywhere. */
    assert_true(prefill_ms(m, h, 2, 2048, 0) < prefill_ms(m, h, 1, 2048, 0));
    const sm_hardware *l = l40s_h;
    const sm_model *small = llama_m;
    assert_true(decode_ms(small, l, 1, 32, 2048) > decode_ms(small, h, 1, 32, 2048));
    assert_true(prefill_ms(small, l, 1, 2048, 0) > prefill_ms(small, h, 1, 2048, 0));
}

static void test_kv_capacity(void **state)
{
    (void)state;
    const sm_hardware *h = h100();
    /* vLLM logs 447,088 tokens of KV for Llama-3.1-8B at TP=1 on an H100 (docs/upstream/vllm.md §3). */
    uint64_t llama = sm_kv_blocks(llama_m, h, 1, 0.9, 16) * 16;
    assert_true(llama > 447088 * 0.99 && llama < 447088 * 1.01);
    /* Qwen3-32B on 2xH100, TP=2: the estimated ~285k-313k (per rank, not x TP); the
     * 333.9k ceiling is what is left before any overhead. */
    uint64_t blocks = sm_kv_blocks(qwen(), h, 2, 0.9, 64);
    assert_true(blocks * 64 > 285000 && blocks * 64 < 333900);
    /* More memory utilisation, more blocks; smaller batch limits, smaller profile peak. */
    assert_true(sm_kv_blocks(qwen(), h, 2, 0.95, 64) > blocks);
    assert_true(sm_kv_blocks_for(qwen(), h, 2, 0.9, 64, 2048, 256) > blocks);
    /* Qwen3-32B does not fit one L40S at all. */
    assert_int_equal(sm_kv_blocks(qwen(), l40s_h, 1, 0.9, 16), 0);
}

static void test_defaults(void **state)
{
    (void)state;
    assert_int_equal(sm_default_max_num_batched_tokens(h100()), 8192);
    assert_int_equal(sm_default_max_num_seqs(h100()), 1024);
    const sm_hardware *l = l40s_h;
    assert_int_equal(sm_default_max_num_batched_tokens(l), 2048);
    assert_int_equal(sm_default_max_num_seqs(l), 256);
    sm_hardware a100 = *h100();
    a100.name = "a100-80gb";
    assert_int_equal(sm_default_max_num_batched_tokens(&a100), 2048);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profiles),
        cmocka_unit_test(test_spec_estimates),
        cmocka_unit_test(test_mixed_step_by_hand),
        cmocka_unit_test(test_monotonic),
        cmocka_unit_test(test_kv_capacity),
        cmocka_unit_test(test_defaults),
    };
    return cmocka_run_group_tests(tests, load_profiles, free_profiles);
}
