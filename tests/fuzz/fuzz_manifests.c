/* fuzz_manifests: a file of manifests as ./epp --objectives and --model-rewrites read it
 * (objectives_load, model_rewrites_load, both through live/manifests.c): every input is
 * read as both kinds, so a stored manifest file is an input as it is.
 * Whatever loaded must then answer lookups: no objective without a name, and a pick for
 * a model returns a target name, or none. */
#include <stdint.h>
#include <stdlib.h>

#include "model_rewrites.h"
#include "objectives.h"
#include "../support/fuzz_file.h"

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
    const char *path = fuzz_file_write("manifests.yaml", data, size);
    if (!path)
        return 0;
    fuzz_objectives(path);
    fuzz_rewrites(path);
    return 0;
}
