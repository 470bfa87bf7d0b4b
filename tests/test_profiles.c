/* test_profiles: model and hardware profiles as data (simulator/profiles.c). Every
 * shipped file loads and is found by its name and its Hugging Face name; the YAML of
 * the profiles that used to be compiled in gives exactly their old numbers (so every
 * scenario's output is unchanged); KV capacity stays per rank on every shipped pair;
 * a mixture of experts stores every expert and computes only the routed ones; a
 * user's file beside a scenario, in --models DIR, or named as a path is used; a bad
 * file is refused with its file, line, column and field. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "profiles.h"
#include "scenario.h"

static const char *const MODELS[] = {"models"}, *const HARDWARE[] = {"hardware"};

/* Every NAME.yaml of dir loads, names itself NAME, and (models) is found again by hf_name. */
static size_t check_dir(const char *dir, bool model)
{
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".yaml") != 0)
            continue;
        char path[512], base[256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(base, sizeof base, "%.*s", (int)(len - 5), e->d_name);
        kv_err err = {0};
        if (model) {
            sm_model *m = sm_model_load(path, &err);
            if (!m)
                fail_msg("%s", err.msg);
            assert_string_equal(m->name, base);
            sm_model *again = sm_model_find(MODELS, 1, m->hf_name, &err);
            assert_non_null(again);
            assert_string_equal(again->name, base);
            assert_true(m->kv_heads <= m->heads && m->max_model_len > 0 && m->params > 1e9);
            free(again);
            free(m);
        } else {
            sm_hardware *h = sm_hardware_load(path, &err);
            if (!h)
                fail_msg("%s", err.msg);
            assert_string_equal(h->name, base);
            assert_true(h->usable_gib <= h->mem_gib);
            free(h);
        }
        n++;
    }
    closedir(dp);
    return n;
}

static void test_shipped_files_load(void **state)
{
    (void)state;
    assert_true(check_dir("models", true) >= 7);
    assert_true(check_dir("hardware", false) >= 4);
    const char *models[] = {"qwen3-32b", "qwen3-8b", "qwen2.5-7b", "llama-3.1-8b", "llama-3.1-70b",
                            "mistral-nemo-12b", "qwen3-30b-a3b"};
    const char *gpus[] = {"h100-sxm", "h200", "a100-sxm", "l40s"};
    kv_err err = {0};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        sm_model *m = sm_model_find(MODELS, 1, models[i], &err);
        if (!m)
            fail_msg("%s: %s", models[i], err.msg);
        free(m);
    }
    for (size_t i = 0; i < sizeof gpus / sizeof *gpus; i++) {
        sm_hardware *h = sm_hardware_find(HARDWARE, 1, gpus[i], &err);
        if (!h)
            fail_msg("%s: %s", gpus[i], err.msg);
        free(h);
    }
}

/* The numbers simulator/profiles.c compiled in before the profiles became files,
 * compared with ==: a scenario's outputs stay byte-identical only if these do. */
static void test_files_reproduce_compiled_profiles(void **state)
{
    (void)state;
    const sm_model old_models[] = {
        {.name = "qwen3-32b", .hf_name = "Qwen/Qwen3-32B", .layers = 64, .hidden = 5120, .heads = 64, .kv_heads = 8,
         .head_dim = 128, .intermediate = 25600, .vocab = 151936, .params = 32.76e9, .dtype_bytes = 2,
         .max_model_len = 40960},
        {.name = "llama-3.1-8b", .hf_name = "meta-llama/Llama-3.1-8B-Instruct", .layers = 32, .hidden = 4096,
         .heads = 32, .kv_heads = 8, .head_dim = 128, .intermediate = 14336, .vocab = 128256, .params = 8.03e9,
         .dtype_bytes = 2, .max_model_len = 131072},
    };
    const sm_hardware old_hw[] = {
        {.name = "h100-sxm", .flops = 989.4e12, .hbm_bw = 3.35e12, .link_bw = 450e9, .mem_gib = 80.0,
         .usable_gib = 79.2},
        {.name = "l40s", .flops = 362.05e12, .hbm_bw = 864e9, .link_bw = 32e9, .mem_gib = 44.99, .usable_gib = 44.4},
    };
    kv_err err = {0};
    for (size_t i = 0; i < 2; i++) {
        const sm_model *o = &old_models[i];
        sm_model *m = sm_model_find(MODELS, 1, o->name, &err);
        assert_non_null(m);
        assert_string_equal(m->hf_name, o->hf_name);
        assert_int_equal(m->layers, o->layers);
        assert_int_equal(m->hidden, o->hidden);
        assert_int_equal(m->heads, o->heads);
        assert_int_equal(m->kv_heads, o->kv_heads);
        assert_int_equal(m->head_dim, o->head_dim);
        assert_int_equal(m->intermediate, o->intermediate);
        assert_int_equal(m->vocab, o->vocab);
        assert_true(m->params == o->params);
        assert_int_equal(m->dtype_bytes, o->dtype_bytes);
        assert_int_equal(m->max_model_len, o->max_model_len);
        assert_int_equal(m->experts, 0);
        /* and so every derived figure */
        for (int tp = 1; tp <= 8; tp *= 2) {
            sm_batch b = {0};
            sm_batch_add(&b, 2048, 1000);
            sm_batch_add(&b, 1, 5000);
            assert_int_equal(sm_batch_time_us(m, &old_hw[0], tp, &b), sm_batch_time_us(o, &old_hw[0], tp, &b));
            assert_int_equal(sm_kv_blocks(m, &old_hw[0], tp, 0.9, 64), sm_kv_blocks(o, &old_hw[0], tp, 0.9, 64));
        }
        free(m);
    }
    for (size_t i = 0; i < 2; i++) {
        const sm_hardware *o = &old_hw[i];
        sm_hardware *h = sm_hardware_find(HARDWARE, 1, o->name, &err);
        assert_non_null(h);
        assert_true(h->flops == o->flops);
        assert_true(h->hbm_bw == o->hbm_bw);
        assert_true(h->link_bw == o->link_bw);
        assert_true(h->mem_gib == o->mem_gib);
        assert_true(h->usable_gib == o->usable_gib);
        free(h);
    }
}

/* On every shipped model x GPU x TP, a replica's KV blocks fit the memory of one GPU
 * at its share of the KV heads: capacity is per rank, never multiplied by TP. */
static void test_kv_capacity_per_rank(void **state)
{
    (void)state;
    const char *models[] = {"qwen3-32b", "qwen3-8b", "qwen2.5-7b", "llama-3.1-8b", "llama-3.1-70b",
                            "mistral-nemo-12b", "qwen3-30b-a3b"};
    const char *gpus[] = {"h100-sxm", "h200", "a100-sxm", "l40s"};
    size_t fitting = 0;
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        sm_model *m = sm_model_find(MODELS, 1, models[i], NULL);
        assert_non_null(m);
        for (size_t g = 0; g < sizeof gpus / sizeof *gpus; g++) {
            sm_hardware *h = sm_hardware_find(HARDWARE, 1, gpus[g], NULL);
            assert_non_null(h);
            for (int tp = 1; tp <= 8; tp *= 2) {
                uint64_t blocks = sm_kv_blocks(m, h, tp, 0.9, 16);
                double kv_bytes = (double)blocks * 16 * sm_kv_bytes_per_token(m, tp);
                double weights = m->params * m->dtype_bytes / tp;
                if (blocks)
                    assert_true(kv_bytes + weights <= h->usable_gib * 0.9 * 1073741824.0);
                fitting += blocks > 0;
            }
            free(h);
        }
        free(m);
    }
    assert_true(fitting > 50);   /* most pairs hold some KV: the check above is not vacuous */
}

/* Qwen3-30B-A3B: a decode step streams all 30.5e9 parameters (every expert is
 * resident), but a prefill computes only the 8 routed experts of 128, so it is cheaper
 * than the dense Qwen3-8B's and far cheaper than if every expert ran. */
static void test_moe(void **state)
{
    (void)state;
    sm_model *moe = sm_model_find(MODELS, 1, "Qwen/Qwen3-30B-A3B", NULL);
    sm_model *dense = sm_model_find(MODELS, 1, "qwen3-8b", NULL);
    sm_hardware *h = sm_hardware_find(HARDWARE, 1, "h100-sxm", NULL);
    assert_non_null(moe);
    assert_non_null(dense);
    assert_non_null(h);
    assert_int_equal(moe->experts, 128);
    assert_int_equal(moe->experts_per_tok, 8);
    assert_int_equal(moe->moe_intermediate, 768);
    sm_seq one = {1, 100}, chunk = {4096, 0};
    double weights_s = (moe->params - (double)moe->vocab * moe->hidden) * moe->dtype_bytes / h->hbm_bw;
    assert_true(sm_step_time_us(moe, h, 1, &one, 1) > weights_s * 1e6);
    assert_true(sm_step_time_us(moe, h, 1, &chunk, 1) < sm_step_time_us(dense, h, 1, &chunk, 1));
    sm_model all = *moe;
    all.experts_per_tok = all.experts;
    assert_true(sm_step_time_us(&all, h, 1, &chunk, 1) > 8 * sm_step_time_us(moe, h, 1, &chunk, 1));
    /* weights take all experts' bytes: 61 GB of bf16 leaves an 80 GB H100 little KV */
    assert_true(sm_kv_blocks(moe, h, 1, 0.9, 16) < sm_kv_blocks(dense, h, 1, 0.9, 16) / 2);
    free(moe);
    free(dense);
    free(h);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static const char *const USER_MODEL =
    "name: tiny\n"
    "hf_name: me/Tiny-1B\n"
    "num_hidden_layers: 16\n"
    "hidden_size: 2048\n"
    "num_attention_heads: 16\n"
    "num_key_value_heads: 4\n"
    "intermediate_size: 8192\n"
    "vocab_size: 32000\n"
    "torch_dtype: bfloat16\n"
    "max_model_len: 8192\n"
    "params: 1.2e9\n";

static const char *const SCENARIO =
    "cluster: {replicas: 2, model: %s, hardware: h100-sxm, tp: 1, block_size: 16}\n"
    "routers: [{name: rr, preset: k8s-service}]\n"
    "workload:\n"
    "  data: {type: random, input_distribution: {min: 10, max: 20, mean: 15, total_count: 4}, "
    "output_distribution: {min: 1, max: 2, mean: 1, total_count: 4}}\n"
    "  load: {type: poisson, stages: [{rate: 1, duration: 1}]}\n";

/* A user's model: models/ beside the scenario, a --models DIR, or a path; each found
 * without recompiling, and its head_dim defaults to hidden / heads. */
static void test_user_model(void **state)
{
    (void)state;
    char root[] = "/tmp/test_profiles.XXXXXX";
    assert_non_null(mkdtemp(root));
    char p[256], q[256], text[1024];
    snprintf(p, sizeof p, "%s/models", root);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/models/tiny.yaml", root);
    write_file(p, USER_MODEL);
    snprintf(q, sizeof q, "%s/s.yaml", root);
    const char *names[] = {"tiny", "me/Tiny-1B", "models/tiny.yaml"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(text, sizeof text, SCENARIO, names[i]);
        write_file(q, text);
        kv_err err = {0};
        scenario *s = scn_load(q, "policies/presets", &err);
        if (!s)
            fail_msg("%s: %s", names[i], err.msg);
        assert_string_equal(s->cluster.model->hf_name, "me/Tiny-1B");
        assert_int_equal(s->cluster.model->head_dim, 128);
        assert_true(sm_kv_blocks(s->cluster.model, s->cluster.hw, 1, 0.9, 16) > 0);
        scn_free(s);
    }
    /* the same file in a --models DIR elsewhere: the scenario's folder has none */
    char other[] = "/tmp/test_profiles.XXXXXX";
    assert_non_null(mkdtemp(other));
    char q2[256];
    snprintf(q2, sizeof q2, "%s/s.yaml", other);
    snprintf(text, sizeof text, SCENARIO, "tiny");
    write_file(q2, text);
    kv_err err = {0};
    assert_null(scn_load(q2, "policies/presets", &err));
    snprintf(p, sizeof p, "%s/models", root);
    scenario *s = scn_load_in(q2, &(scn_dirs){.presets = "policies/presets", .user_models = p, .models = "models",
                                              .hardware = "hardware"}, &err);
    if (!s)
        fail_msg("%s", err.msg);
    assert_string_equal(s->cluster.model->name, "tiny");
    scn_free(s);
    unlink(q2);
    rmdir(other);
    snprintf(p, sizeof p, "%s/models/tiny.yaml", root);
    unlink(p);
    snprintf(p, sizeof p, "%s/models", root);
    rmdir(p);
    unlink(q);
    rmdir(root);
}

/* A bad file: its file, line, column and field, whatever the mistake. */
static void test_bad_files(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"name: x\nhf_name: y\n", ":1:1: field 'num_hidden_layers': required"},
        {"name: x\nhf_name: y\nnum_hidden_layers: many\n",
         ":3:20: field 'num_hidden_layers': expected an integer, got 'many'"},
        {"name: x\nhf_name: y\nnum_hidden_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\n"
         "num_key_value_heads: 8\n", ":6:22: field 'num_key_value_heads': 8 is out of range [1, 4]"},
        {"name: x\nhf_name: y\nnum_hidden_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\n"
         "num_key_value_heads: 4\nintermediate_size: 128\nvocab_size: 100\nparams: 2e6\ntorch_dtype: int3\n",
         ":10:14: field 'torch_dtype': 'int3' is not bfloat16, float16, float32, float8_e4m3fn or fp8"},
        {"name: x\nhf_name: y\nnum_hidden_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\n"
         "num_key_value_heads: 4\nintermediate_size: 128\nvocab_size: 100\nparams: 2e6\ntorch_dtype: bfloat16\n"
         "num_experts: 8\n",
         ":1:1: field 'num_experts_per_tok': a mixture of experts needs num_experts, num_experts_per_tok and "
         "moe_intermediate_size together"},
        {"name: x\nhf_name: y\nnum_hidden_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\n"
         "num_key_value_heads: 4\nintermediate_size: 128\nvocab_size: 100\nparams: 2e6\ntorch_dtype: bfloat16\n"
         "max_model_len: 100\nnum_layers: 3\n", ":12:1: field 'num_layers': unknown key"},
        {"- a list\n", ": a model profile is a map of fields"},
    };
    char path[] = "/tmp/test_profiles.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_file(path, cases[i][0]);
        kv_err err = {0};
        assert_null(sm_model_load(path, &err));
        char want[512];
        snprintf(want, sizeof want, "%s%s", path, cases[i][1]);
        assert_string_equal(err.msg, want);
    }
    write_file(path, "name: g\ndense_flops: 1e14\nhbm_bandwidth: 1e12\ninterconnect_bandwidth: 1e10\n"
                     "memory_gib: 40\nusable_gib: 41\n");
    kv_err err = {0};
    assert_null(sm_hardware_load(path, &err));
    char want[512];
    snprintf(want, sizeof want, "%s:6:13: field 'usable_gib': 41 is out of range [0.1, 40]", path);
    assert_string_equal(err.msg, want);
    unlink(path);
    /* unknown names say where they were looked for */
    const char *dirs[] = {NULL, "models"};
    assert_null(sm_model_find(dirs, 2, "gpt-5", &err));
    assert_int_equal(err.code, KV_ENOTFOUND);
    assert_string_equal(err.msg, "unknown model 'gpt-5' (searched models)");
    assert_null(sm_hardware_find(HARDWARE, 1, "../models/qwen3-32b", &err));
    assert_string_equal(err.msg, "unknown hardware '../models/qwen3-32b' (searched hardware)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_files_load),
        cmocka_unit_test(test_files_reproduce_compiled_profiles),
        cmocka_unit_test(test_kv_capacity_per_rank),
        cmocka_unit_test(test_moe),
        cmocka_unit_test(test_user_model),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
