/* stepmodel: the duration of one vLLM engine step (one forward pass over the
 * scheduled tokens of every running sequence), and the KV capacity of a replica.
 *
 * Per GPU of a TP group, for a batch whose sequences compute n_i new tokens over c_i
 * tokens already in context (m = sum n_i, B = number of sequences):
 *
 *   FLOPs  = 2*P_lin/tp * m                       linear layers (QKV, O, gate/up/down)
 *          + 4*H*d*L/tp * sum n_i*(c_i + (n_i+1)/2) causal attention: query i of the
 *                                                 chunk sees c_i + i + 1 keys
 *          + 2*h*V/tp * B                         lm_head: vLLM computes logits at one
 *                                                 position per scheduled sequence
 *   T_SM   = FLOPs / (peak * eps(m)),  eps(m) = EPS_MAX * m / (m + M_HALF)
 *   bytes  = W/tp                                 weights streamed once per step (all but
 *                                                 the input embedding table)
 *          + kv * sum (c_i + n_i)                 every sequence reads its whole context
 *                                                 once, shared prefix included (paged
 *                                                 attention does not dedupe across
 *                                                 sequences), and writes its new KV
 *   T_HBM  = bytes / (hbm_bw * HBM_EFF)
 *   T_NVL  = 2*L all-reduces of m*h*dtype bytes:  each AR_LAT + 2(tp-1)/tp*bytes/(link*LINK_EFF)
 *   T_CPU  = STEP_OVH + LAYER_OVH*L + SEQ_OVH*B   scheduler, launches, input prep, sampling
 *
 *   T = max(T_SM, T_HBM) + T_NVL + T_CPU
 *
 * Why max and not a sum of SM and HBM: within a GEMM the weight stream and the math
 * overlap, so a decode step costs its bytes and a prefill chunk its FLOPs; a sum
 * would charge a decode for the low-efficiency small-m GEMM math on top of the weight
 * stream (3-6 ms on a 12 ms step) and land outside the roofline estimates (docs/upstream/vllm.md §4)
 * (decode B=64 C=2k ~20 ms with 3.6 ms of compute hidden). The all-reduces and the CPU
 * work are serial with both in vLLM without async scheduling, so they add.
 *
 * The efficiency constants below are the model's only free numbers; docs/VALIDATION.md
 * gives each one's source. They are the same for every policy, rate and scenario.
 *
 * KV capacity per rank, vLLM's determine_available_memory:
 *   usable*util - weights/tp - activation peak of the profile run - non-torch memory,
 * divided by one block's bytes on one GPU. The replica's capacity is that (the engine
 * takes the minimum over ranks); it is not multiplied by tp. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "stepmodel.h"

/* The constants were calibrated once against the guide's rate-60 numbers
 * (docs/VALIDATION.md), starting from published values; the same for every policy,
 * rate and scenario.
 *
 * GEMM efficiency ramp: eps(m) = EPS_MAX * m / (m + M_HALF). Published end-to-end
 * prefill MFU on H100 spans 0.45 (BLIS's roofline prefill MFU) to 0.60-0.75 (large
 * GEMMs alone, docs/upstream/vllm.md §4); 0.60 is what the guide's k8s row (prefill-bound) supports.
 * M_HALF = 128 rows: tensor-core tiles fill at 128-256 rows. */
#define SM_EPS_MAX 0.60
#define SM_M_HALF 128.0
/* Achieved fraction of peak HBM bandwidth when streaming weights and KV. Large
 * streaming reads on H100 SXM reach ~90% of 3.35 TB/s; the decode-bound llm-d row
 * (ITL) lands within 5% with it, and the decode estimates (13-14 ms at B=1,
 * ~20 ms at B=64 C=2k, ~27 ms at B=128, ~62 ms at B=256 C=4k) are reproduced. */
#define SM_HBM_EFF 0.90
/* Per all-reduce launch + sync latency (NCCL/custom all-reduce on NVLink: 5-10 us)
 * and the fraction of the link's one-way bandwidth a ring all-reduce achieves. */
#define SM_AR_LAT_US 8.0
#define SM_LINK_EFF 0.90
/* Host and launch work per step, per layer, and per scheduled sequence: BLIS's fitted
 * H100 values (trained-physics beta7 = 126 us/step, beta5 = 32.1 us/layer,
 * beta6 = 4.42 us/request), i.e. 2.2 ms a step for a 64-layer model. */
#define SM_STEP_OVH_US 126.0
#define SM_LAYER_OVH_US 32.1
#define SM_SEQ_OVH_US 4.42

/* Memory vLLM's profile run does not give to KV besides the weights: CUDA context,
 * NCCL and allocator slack (non-torch), fitted so that Llama-3.1-8B TP1 on an H100
 * reproduces the 54.62 GiB of KV cache vLLM logs (docs/upstream/vllm.md §3). */
#define SM_NON_TORCH_GIB 0.56

#define GIB (1024.0 * 1024.0 * 1024.0)

/* The MLP width one token passes through (gate, up, down): a dense model's
 * intermediate size; a mixture of experts' routed experts together. */
static double mlp_width(const sm_model *m)
{
    return m->experts ? (double)m->experts_per_tok * m->moe_intermediate : (double)m->intermediate;
}

/* Per token: attention projections, the MLP (and a mixture's router logits). */
static double linear_params(const sm_model *m)
{
    double qo = 2.0 * m->hidden * ((double)m->heads * m->head_dim);
    double kv = 2.0 * m->hidden * ((double)m->kv_heads * m->head_dim);
    double mlp = 3.0 * m->hidden * mlp_width(m) + (double)m->hidden * m->experts;
    return (double)m->layers * (qo + kv + mlp);
}

double sm_kv_bytes_per_token(const sm_model *m, int tp)
{
    /* KV heads are split across ranks, replicated when there are fewer than tp. */
    int kvh = m->kv_heads / (tp > 0 ? tp : 1);
    if (kvh < 1) kvh = 1;
    return 2.0 * m->layers * kvh * (double)m->head_dim * m->dtype_bytes;
}

static double eps(double m)
{
    return SM_EPS_MAX * m / (m + SM_M_HALF);
}

int64_t sm_step_time_us(const sm_model *m, const sm_hardware *hw, int tp, const sm_seq *seqs, size_t n)
{
    sm_batch b = {0};
    for (size_t i = 0; i < n; i++) sm_batch_add(&b, seqs[i].new_tokens, seqs[i].context);
    return sm_batch_time_us(m, hw, tp, &b);
}

int64_t sm_batch_time_us(const sm_model *m, const sm_hardware *hw, int tp, const sm_batch *b)
{
    if (b->n == 0) return 0;
    if (tp < 1) tp = 1;
    double tokens = (double)b->tokens, pairs = (double)b->pairs2 / 2, ctx = (double)b->ctx, n = (double)b->n;
    double flops = 2.0 * linear_params(m) / tp * tokens
                 + 4.0 * m->heads * (double)m->head_dim * m->layers / tp * pairs
                 + 2.0 * m->hidden * (double)m->vocab / tp * n;
    double t_sm = tokens > 0 ? flops / (hw->flops * eps(tokens)) : 0;

    double weights = (m->params - (double)m->vocab * m->hidden) * m->dtype_bytes / tp;
    double bytes = weights + sm_kv_bytes_per_token(m, tp) * ctx;
    double t_hbm = bytes / (hw->hbm_bw * SM_HBM_EFF);

    double t_nvl = 0;
    if (tp > 1) {
        double ar_bytes = tokens * m->hidden * m->dtype_bytes;
        double per = SM_AR_LAT_US * 1e-6 + 2.0 * (tp - 1) / tp * ar_bytes / (hw->link_bw * SM_LINK_EFF);
        t_nvl = 2.0 * m->layers * per;
    }
    double t_cpu = (SM_STEP_OVH_US + SM_LAYER_OVH_US * m->layers + SM_SEQ_OVH_US * n) * 1e-6;

    double t = (t_sm > t_hbm ? t_sm : t_hbm) + t_nvl + t_cpu;
    return (int64_t)ceil(t * 1e6);
}

static uint64_t sm_cdiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

bool sm_cascade(const sm_model *m, const sm_hardware *hw, int tp, uint32_t prefix_len, size_t n_reqs,
                bool all_decode)
{
    /* vLLM's thresholds: a short prefix or few queries are not worth the two kernels */
    if (prefix_len < 256 || n_reqs < 8)
        return false;
    if (tp < 1) tp = 1;
    uint64_t q_heads = (uint64_t)m->heads / (uint64_t)tp, kv_heads = (uint64_t)m->kv_heads / (uint64_t)tp;
    if (kv_heads == 0) kv_heads = 1;
    uint64_t q_per_kv = q_heads / kv_heads;
    /* FlashDecoding (split-KV) is what normal attention would use: grouped queries and
     * one query token per sequence; without it, the cascade saves bandwidth outright */
    if (!(q_per_kv > 1 && all_decode))
        return true;
    /* the rough CTA-wave comparison, with vLLM's 128-token q and kv tiles */
    uint64_t tiles = sm_cdiv(prefix_len, 128), sms = hw->sms > 0 ? (uint64_t)hw->sms : 1;
    uint64_t cascade = sm_cdiv(q_heads * sm_cdiv(n_reqs, 128), sms) * tiles;
    uint64_t flash_decoding = sm_cdiv((uint64_t)n_reqs * kv_heads * sm_cdiv(q_per_kv, 128) * tiles, sms);
    return cascade < flash_decoding;
}

uint32_t sm_default_max_num_batched_tokens(const sm_hardware *hw)
{
    bool big = hw->mem_gib >= 70.0 && strncmp(hw->name, "a100", 4) != 0;
    return big ? 8192 : 2048;
}

uint32_t sm_default_max_num_seqs(const sm_hardware *hw)
{
    return sm_default_max_num_batched_tokens(hw) == 8192 ? 1024 : 256;
}

uint64_t sm_kv_blocks_for(const sm_model *m, const sm_hardware *hw, int tp, double gpu_mem_util,
                          uint32_t block_size, uint32_t max_num_batched_tokens, uint32_t max_num_seqs)
{
    if (tp < 1) tp = 1;
    if (block_size == 0) return 0;
    double budget = hw->usable_gib * GIB * gpu_mem_util;
    double weights = m->params * m->dtype_bytes / tp;
    /* Profile-run peak: the MLP's gate/up output (2I/tp) and activated product (I/tp)
     * for every batched token (I: the routed experts' width for a mixture), plus the sampler's fp32 logits over the full vocabulary
     * for max_num_seqs rows. */
    double act = (double)max_num_batched_tokens * 3.0 * mlp_width(m) / tp * m->dtype_bytes
               + (double)max_num_seqs * m->vocab * 4.0;
    double avail = budget - weights - act - SM_NON_TORCH_GIB * GIB;
    if (avail <= 0) return 0;
    return (uint64_t)floor(avail / (sm_kv_bytes_per_token(m, tp) * block_size));
}

uint64_t sm_kv_blocks(const sm_model *m, const sm_hardware *hw, int tp, double gpu_mem_util, uint32_t block_size)
{
    return sm_kv_blocks_for(m, hw, tp, gpu_mem_util, block_size, sm_default_max_num_batched_tokens(hw),
                            sm_default_max_num_seqs(hw));
}
