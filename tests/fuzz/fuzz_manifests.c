/* fuzz_manifests: a file of InferenceObjective or InferenceModelRewrite manifests as
 * ./epp --objectives / --model-rewrites reads it (objectives_load, model_rewrites_load,
 * both through live/manifests.c). The first byte picks the kind, the rest is the file.
 * Whatever loaded must then answer lookups: no objective without a name, and a pick for
 * a model returns a target name, or none. */
#define _GNU_SOURCE /* memfd_create, in fuzz_file.h */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_file.h"
#include "model_rewrites.h"
#include "objectives.h"

static uint64_t counter_rand(void *ctx)
{
    uint64_t *c = ctx;
    return *c += 0x9e3779b97f4a7c15ull;
}

static void fuzz_objectives(const char *path)
{
    kv_err err = {0};
    objectives *o = objectives_new(&err);
    if (!o)
        return;
    int prio = 1;
    if (objectives_load(o, path, &err) == KV_OK && (objectives_priority(o, NULL, &prio) || prio != 0))
        abort();
    objectives_free(o);
}

static void fuzz_rewrites(const char *path)
{
    kv_err err = {0};
    uint64_t seed = 0;
    model_rewrites *t = model_rewrites_new(counter_rand, &seed, &err);
    if (!t)
        return;
    if (model_rewrites_load(t, path, &err) == KV_OK) {
        static const char *const models[] = {"", "m", "llama", "qwen3-32b"};
        for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
            char *to = NULL;
            if (model_rewrites_pick(t, models[i], &to, &err) != KV_OK || (to && !model_rewrites_count(t)))
                abort();
            free(to);
        }
    }
    model_rewrites_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *path = fuzz_file_write(data + 1, size - 1);
    if (!path)
        return 0;
    if (data[0] & 1)
        fuzz_rewrites(path);
    else
        fuzz_objectives(path);
    return 0;
}
