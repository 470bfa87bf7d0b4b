/* stepmodel: how long one vLLM engine step takes, from first principles.
 * Model profile (layers, hidden, heads, KV heads, head_dim, intermediate, vocab,
 * parameters, dtype bytes) x hardware profile (dense FLOP/s, HBM B/s, interconnect
 * B/s, memory) x TP. Terms: prefill GEMMs with an efficiency ramp, attention over the
 * tokens already in context, decode weight and KV reads, TP all-reduces, per-step CPU
 * overhead (docs/upstream/vllm.md §4). The efficiency constants are documented in
 * docs/VALIDATION.md and are the same for every policy, rate and scenario. The profiles
 * are data (models/, hardware/; simulator/profiles.h loads them). */
#ifndef KVROUTE_SIM_STEPMODEL_H
#define KVROUTE_SIM_STEPMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

typedef struct sm_model {
    const char *name;           /* "qwen3-32b" */
    const char *hf_name;        /* "Qwen/Qwen3-32B" */
    int layers, hidden, heads, kv_heads, head_dim, intermediate, vocab;
    double params;              /* total parameters */
    int dtype_bytes;            /* 2 for bf16 */
    uint32_t max_model_len;
    /* Mixture of experts (0 when dense): every expert's weights are resident and
     * counted in params; a token's MLP FLOPs are those of its experts_per_tok experts. */
    int experts, experts_per_tok, moe_intermediate;
} sm_model;

typedef struct sm_hardware {
    const char *name;           /* "h100-sxm" */
    double flops;               /* dense bf16 FLOP/s per GPU */
    double hbm_bw;              /* B/s per GPU */
    double link_bw;             /* interconnect B/s per GPU, one direction */
    double mem_gib;             /* GiB per GPU */
    double usable_gib;          /* what torch sees (e.g. 79.2 on H100-80GB) */
    int sms;                    /* streaming multiprocessors (vLLM's cascade heuristic) */
} sm_hardware;

/* One sequence's share of a step: new tokens computed and context already cached. */
typedef struct sm_seq {
    uint32_t new_tokens;        /* 1 for a decode */
    uint32_t context;           /* tokens already in KV before this step */
} sm_seq;

/* Step duration in microseconds for a batch. */
int64_t sm_step_time_us(const sm_model *m, const sm_hardware *hw, int tp, const sm_seq *seqs, size_t n);

/* The same batch as running sums, so a scheduler can price a step while it builds it
 * instead of keeping a per-sequence array: sm_batch_add once per scheduled sequence,
 * then sm_batch_time_us. sm_step_time_us(seqs) == sm_batch_time_us(sum of seqs).
 * The sums are integers (the pairs doubled, since (n_i + 1) / 2 may be a half), so the
 * order of the sequences cannot change them, and adding one costs a step no
 * floating-point chain per sequence: a step adds thousands. */
typedef struct sm_batch {
    uint64_t tokens;            /* sum n_i */
    uint64_t pairs2;            /* sum n_i * (2 c_i + n_i + 1): twice the causal attention pairs */
    int64_t ctx;                /* sum (c_i + n_i): KV read and written (sm_batch_share_prefix takes from it) */
    size_t n;                   /* sequences */
} sm_batch;

static inline void sm_batch_add(sm_batch *b, uint32_t new_tokens, uint32_t context)
{
    uint64_t nt = new_tokens, c = context;
    b->tokens += nt;
    b->pairs2 += nt * (2 * c + nt + 1);
    b->ctx += (int64_t)(c + nt);
    b->n++;
}

int64_t sm_batch_time_us(const sm_model *m, const sm_hardware *hw, int tp, const sm_batch *b);

/* Cascade attention (opt-in, docs/VALIDATION.md "Shared-prefix attention"): vLLM's
 * use_cascade_attention (vllm/v1/attention/backends/flash_attn.py) for n_reqs scheduled
 * sequences whose first prefix_len tokens are the same KV blocks in every running
 * request: no for a prefix under 256 tokens or fewer than 8 requests; yes for a batch
 * with any prefill; for an all-decode batch, yes when its rough CTA-wave model says
 * the cascade kernel beats FlashDecoding (per-rank heads; hw->sms). */
bool sm_cascade(const sm_model *m, const sm_hardware *hw, int tp, uint32_t prefix_len, size_t n_reqs,
                bool all_decode);
/* A cascade step reads the common prefix's KV once for all n sequences instead of once
 * each; the attention FLOPs do not change (every query still attends to it). */
static inline void sm_batch_share_prefix(sm_batch *b, uint32_t prefix_len)
{
    if (b->n > 1)
        b->ctx -= (int64_t)(b->n - 1) * prefix_len;
}

/* KV capacity in blocks per replica, vLLM's way: per rank, not multiplied by TP. */
uint64_t sm_kv_blocks(const sm_model *m, const sm_hardware *hw, int tp, double gpu_mem_util, uint32_t block_size);
/* KV bytes per token per GPU. */
double sm_kv_bytes_per_token(const sm_model *m, int tp);

/* vLLM's defaults for the API server (get_batch_defaults): a GPU of >= 70 GiB that is
 * not an A100 gets 8192 batched tokens and 1024 sequences, any other 2048 and 256. */
uint32_t sm_default_max_num_batched_tokens(const sm_hardware *hw);
uint32_t sm_default_max_num_seqs(const sm_hardware *hw);

/* The same as sm_kv_blocks with the activation peak of a profile run of the given
 * batch limits (sm_kv_blocks uses the hardware defaults). */
uint64_t sm_kv_blocks_for(const sm_model *m, const sm_hardware *hw, int tp, double gpu_mem_util,
                          uint32_t block_size, uint32_t max_num_batched_tokens, uint32_t max_num_seqs);

#endif
