/* profiles: the model and hardware profiles the step-time model and KV sizing read.
 * Every number is a published figure (model config.json, GPU datasheet); the source is
 * named next to each profile. Nothing here is fitted: the fitted efficiency constants
 * live in simulator/stepmodel.c. */
#include <string.h>

#include "stepmodel.h"

/* Qwen/Qwen3-32B config.json: num_hidden_layers 64, hidden_size 5120,
 * num_attention_heads 64, num_key_value_heads 8, head_dim 128 (explicit in the
 * config; not hidden/heads = 80), intermediate_size 25600, vocab_size 151936,
 * tie_word_embeddings false, max_position_embeddings 40960, bfloat16.
 * 32.76e9 parameters per the model card ("Number of Parameters: 32.8B"; the
 * safetensors total is 32,762,123,264). */
static const sm_model qwen3_32b = {
    .name = "qwen3-32b", .hf_name = "Qwen/Qwen3-32B",
    .layers = 64, .hidden = 5120, .heads = 64, .kv_heads = 8, .head_dim = 128,
    .intermediate = 25600, .vocab = 151936, .params = 32.76e9, .dtype_bytes = 2,
    .max_model_len = 40960,
};

/* meta-llama/Llama-3.1-8B-Instruct config.json: 32 layers, hidden 4096, 32 heads,
 * 8 KV heads (head_dim 4096/32 = 128), intermediate 14336, vocab 128256, untied
 * embeddings, max_position_embeddings 131072, bfloat16; 8.03e9 parameters. */
static const sm_model llama31_8b = {
    .name = "llama-3.1-8b", .hf_name = "meta-llama/Llama-3.1-8B-Instruct",
    .layers = 32, .hidden = 4096, .heads = 32, .kv_heads = 8, .head_dim = 128,
    .intermediate = 14336, .vocab = 128256, .params = 8.03e9, .dtype_bytes = 2,
    .max_model_len = 131072,
};

/* NVIDIA H100 SXM5 80GB datasheet: 989.4 TFLOP/s dense BF16 (1979 with sparsity),
 * 3.35 TB/s HBM3, NVLink 4 900 GB/s bidirectional = 450 GB/s each way. torch reports
 * 79.19 GiB total (vLLM logs), so 79.2 is what gpu_memory_utilization multiplies. */
static const sm_hardware h100_sxm = {
    .name = "h100-sxm", .flops = 989.4e12, .hbm_bw = 3.35e12, .link_bw = 450e9,
    .mem_gib = 80.0, .usable_gib = 79.2, .sms = 132,
};

/* NVIDIA L40S datasheet: 362.05 TFLOP/s dense BF16 (733 with sparsity), 48 GB GDDR6
 * at 864 GB/s, no NVLink: TP traffic crosses PCIe Gen4 x16, 32 GB/s each way.
 * nvidia-smi shows 46068 MiB; about 44.4 GiB is left to torch after the CUDA context
 * (approximate: scaled from the H100's 80 GB -> 79.2 GiB). */
static const sm_hardware l40s = {
    .name = "l40s", .flops = 362.05e12, .hbm_bw = 864e9, .link_bw = 32e9,
    .mem_gib = 44.99, .usable_gib = 44.4, .sms = 142,
};

static const sm_model *const models[] = {&qwen3_32b, &llama31_8b};
static const sm_hardware *const hardware[] = {&h100_sxm, &l40s};

const char *const sm_model_names[] = {"qwen3-32b", "llama-3.1-8b", NULL};
const char *const sm_hardware_names[] = {"h100-sxm", "l40s", NULL};

/* Profiles are found by short name or (models) by Hugging Face name. */
const sm_model *sm_model_find(const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        if (strcmp(models[i]->name, name) == 0 || strcmp(models[i]->hf_name, name) == 0) return models[i];
    return NULL;
}

const sm_hardware *sm_hardware_find(const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof hardware / sizeof hardware[0]; i++)
        if (strcmp(hardware[i]->name, name) == 0) return hardware[i];
    return NULL;
}
