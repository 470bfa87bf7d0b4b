/* fuzz_sched_hostile: scorers and pickers fed hostile endpoint state through sched_*
 * with each shipped preset (every .yaml in policies/presets): metrics that are NaN, infinite,
 * negative, huge or stale (valid = false), LoRA lists and role labels, all decoded from
 * the input. Whatever they say, the picked endpoint is one of the candidates and no
 * score leaves [0,1] (sched_check.h; abort() otherwise).
 *
 * Input: preset selector, endpoint count (1-8), per endpoint a flags byte and its
 * metrics, then the request's token ids (two bytes each). A number is either one byte
 * below 16 picking a hostile constant, or that byte followed by its raw bytes. Running
 * out of input gives zeros. The presets are loaded once (read-only configs); each input
 * builds fresh schedulers, so inputs do not depend on each other. Single-threaded. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/sched_check.h"

static epc_config **presets;
static size_t n_presets;

typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader;

static uint8_t take_u8(reader *r)
{
    if (!r->left)
        return 0;
    r->left--;
    return *r->p++;
}

static uint64_t take_raw(reader *r, size_t bytes)
{
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; i++)
        v = v << 8 | take_u8(r);
    return v;
}

static int take_int(reader *r)
{
    static const int hostile[16] = {INT_MIN, INT_MIN + 1, -1000000, -5, -1, 0, 1, 2, 5, 6, 127, 1000000,
                                    INT_MAX - 1, INT_MAX, 1 << 30, -(1 << 30)};
    uint8_t sel = take_u8(r);
    return sel < 16 ? hostile[sel] : (int)(uint32_t)take_raw(r, 4);
}

static double take_double(reader *r)
{
    static const double hostile[16] = {NAN, -NAN, INFINITY, -INFINITY, -1, -0.0, 0, 0.5, 0.8, 1, 1.0000001, 2,
                                       DBL_MAX, -DBL_MAX, DBL_MIN, 1e-320};
    uint8_t sel = take_u8(r);
    if (sel < 16)
        return hostile[sel];
    uint64_t bits = take_raw(r, 8);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (!(presets = sched_check_presets("policies/presets")))
        abort();
    while (presets[n_presets])
        n_presets++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const loras[] = {"lora-a", "lora-b", "lora-c"};
    static const char *const roles[] = {"decode", "prefill", "both"};
    reader r = {data, size};
    const epc_config *cfg = presets[take_u8(&r) % n_presets];
    size_t n = 1 + take_u8(&r) % 8;
    sched_endpoint eps[8], *ptrs[8];
    sched_kv labels[8];
    char names[8][32];
    for (size_t i = 0; i < n; i++) {
        uint8_t f = take_u8(&r);
        snprintf(names[i], sizeof names[i], "10.0.0.%zu:8000", i + 1);
        labels[i] = (sched_kv){"llm-d.ai/role", roles[(f >> 5) % 3]};
        eps[i] = (sched_endpoint){.id = (uint32_t)i, .name = names[i], .pod = names[i], .ns = "",
                                  .labels = &labels[i], .n_labels = f >> 7};
        sched_metrics *m = &eps[i].m;
        m->valid = f & 1;
        m->running_loras = loras;
        m->n_running_loras = (f >> 1) & 3;
        m->waiting_loras = loras + 1;
        m->n_waiting_loras = (f >> 3) & 1;
        m->waiting = take_int(&r);
        m->running = take_int(&r);
        m->kv_usage = take_double(&r);
        m->max_lora = take_int(&r);
        m->block_size = (uint32_t)take_int(&r);
        m->num_gpu_blocks = (uint32_t)take_int(&r);
        ptrs[i] = &eps[i];
    }
    uint8_t rf = take_u8(&r);
    uint32_t tokens[256];
    size_t nt = 0;
    while (r.left >= 2 && nt < 256)
        tokens[nt++] = (uint32_t)take_raw(&r, 2);
    sched_kv session = {"x-session-token", names[rf % n]};
    sched_request req = {.id = "fuzz", .model = "m", .lora = rf & 8 ? loras[0] : NULL, .tokens = nt ? tokens : NULL,
                         .n_tokens = nt, .prompt = "hello", .prompt_len = 5, .headers = &session,
                         .n_headers = (rf >> 4) & 1, .priority = rf & 32 ? -1 : 0};
    bool built;
    if (!sched_check_route(cfg, &req, ptrs, n, &built) || !built)
        abort();
    return 0;
}
