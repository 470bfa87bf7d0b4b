/* profiles: loading model and hardware profiles from YAML (see profiles.h).
 *
 * A model file holds config.json facts under config.json's own key names, so that a
 * user copies them across: num_hidden_layers, hidden_size, num_attention_heads,
 * num_key_value_heads, head_dim (default hidden_size / num_attention_heads: set it when
 * config.json does, Qwen3 and Mistral-Nemo differ), intermediate_size, vocab_size,
 * torch_dtype, and for a mixture of experts num_experts (num_local_experts in Mixtral's
 * config), num_experts_per_tok and moe_intermediate_size (Mixtral: its
 * intermediate_size); besides them name, hf_name, params (the total parameter count,
 * every expert included) and max_model_len (vLLM's default: max_position_embeddings).
 * A hardware file holds datasheet figures in base units: dense_flops (dense BF16
 * FLOP/s), hbm_bandwidth (B/s), interconnect_bandwidth (B/s each way), memory_gib and
 * usable_gib (what torch sees), and streaming_multiprocessors (vLLM's cascade-attention
 * heuristic reads the SM count). Unknown keys are errors: a misspelt key must not leave
 * a zero behind. */
#include "profiles.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"
#include "workload.h"
#include "yamltree.h"

/* A profile and its two strings in one allocation (free() releases all). */
static void *alloc_with(size_t size, const char *a, const char *b, const char **pa, const char **pb)
{
    size_t la = strlen(a) + 1, lb = b ? strlen(b) + 1 : 0;
    char *p = calloc(1, size + la + lb);
    if (!p)
        return NULL;
    *pa = memcpy(p + size, a, la);
    if (b)
        *pb = memcpy(p + size + la, b, lb);
    return p;
}

/* Required: a missing key names the file and the map's position. */
static int req_int(const yt_doc *d, const yt_node *root, const char *key, int64_t lo, int64_t hi, int *out,
                   kv_err *err)
{
    const yt_node *n = yt_get(root, key);
    if (yt_is_null(n))
        return yt_error(d, root, err, KV_EINVAL, "field '%s': required", key);
    int64_t v;
    int rc = yt_int_range(d, n, key, lo, hi, &v, err);
    if (!rc)
        *out = (int)v;
    return rc;
}

static int req_double(const yt_doc *d, const yt_node *root, const char *key, double lo, double hi, double *out,
                      kv_err *err)
{
    const yt_node *n = yt_get(root, key);
    if (yt_is_null(n))
        return yt_error(d, root, err, KV_EINVAL, "field '%s': required", key);
    return yt_double_range(d, n, key, lo, hi, out, err);
}

static int req_string(const yt_doc *d, const yt_node *root, const char *key, const char **out, kv_err *err)
{
    const yt_node *n = yt_get(root, key);
    if (yt_is_null(n))
        return yt_error(d, root, err, KV_EINVAL, "field '%s': required", key);
    return yt_string(d, n, key, out, err);
}

static int dtype_bytes(const yt_doc *d, const yt_node *root, int *out, kv_err *err)
{
    static const struct { const char *name; int bytes; } types[] = {
        {"bfloat16", 2}, {"float16", 2}, {"float32", 4}, {"float8_e4m3fn", 1}, {"fp8", 1},
    };
    const char *s;
    int rc = req_string(d, root, "torch_dtype", &s, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (strcmp(types[i].name, s) == 0)
            return *out = types[i].bytes, KV_OK;
    return yt_error(d, yt_get(root, "torch_dtype"), err, KV_EINVAL,
                    "field 'torch_dtype': '%s' is not bfloat16, float16, float32, float8_e4m3fn or fp8", s);
}

/* The mixture-of-experts keys: all three or none. */
static int parse_moe(const yt_doc *d, const yt_node *root, sm_model *m, kv_err *err)
{
    static const char *const keys[] = {"num_experts", "num_experts_per_tok", "moe_intermediate_size"};
    size_t given = 0;
    for (size_t i = 0; i < 3; i++)
        given += !yt_is_null(yt_get(root, keys[i]));
    if (given == 0)
        return KV_OK;
    if (given != 3)
        return yt_error(d, root, err, KV_EINVAL, "field '%s': a mixture of experts needs num_experts, "
                        "num_experts_per_tok and moe_intermediate_size together",
                        yt_is_null(yt_get(root, keys[0])) ? keys[0] : yt_is_null(yt_get(root, keys[1])) ? keys[1]
                                                                                                        : keys[2]);
    int rc;
    if ((rc = req_int(d, root, keys[0], 1, 65536, &m->experts, err)) ||
        (rc = req_int(d, root, keys[1], 1, m->experts, &m->experts_per_tok, err)) ||
        (rc = req_int(d, root, keys[2], 1, 10000000, &m->moe_intermediate, err)))
        return rc;
    return KV_OK;
}

static int parse_model(const yt_doc *d, const yt_node *root, sm_model *m, kv_err *err)
{
    int rc;
    if ((rc = req_int(d, root, "num_hidden_layers", 1, 10000, &m->layers, err)) ||
        (rc = req_int(d, root, "hidden_size", 1, 1000000, &m->hidden, err)) ||
        (rc = req_int(d, root, "num_attention_heads", 1, 100000, &m->heads, err)) ||
        (rc = req_int(d, root, "num_key_value_heads", 1, m->heads, &m->kv_heads, err)) ||
        (rc = req_int(d, root, "intermediate_size", 1, 10000000, &m->intermediate, err)) ||
        (rc = req_int(d, root, "vocab_size", 1, 100000000, &m->vocab, err)) ||
        (rc = req_double(d, root, "params", 1e6, 1e15, &m->params, err)) ||
        (rc = dtype_bytes(d, root, &m->dtype_bytes, err)) ||
        (rc = parse_moe(d, root, m, err)))
        return rc;
    m->head_dim = m->hidden / m->heads;
    if (!yt_is_null(yt_get(root, "head_dim")) && (rc = req_int(d, root, "head_dim", 1, 100000, &m->head_dim, err)))
        return rc;
    int mml;
    if ((rc = req_int(d, root, "max_model_len", 1, 100000000, &mml, err)))
        return rc;
    m->max_model_len = (uint32_t)mml;
    return KV_OK;
}

static int parse_hardware(const yt_doc *d, const yt_node *root, sm_hardware *h, kv_err *err)
{
    int rc;
    if ((rc = req_double(d, root, "dense_flops", 1e9, 1e18, &h->flops, err)) ||
        (rc = req_double(d, root, "hbm_bandwidth", 1e9, 1e15, &h->hbm_bw, err)) ||
        (rc = req_double(d, root, "interconnect_bandwidth", 1e6, 1e15, &h->link_bw, err)) ||
        (rc = req_double(d, root, "memory_gib", 0.1, 1e6, &h->mem_gib, err)) ||
        (rc = req_double(d, root, "usable_gib", 0.1, h->mem_gib, &h->usable_gib, err)) ||
        (rc = req_int(d, root, "streaming_multiprocessors", 1, 100000, &h->sms, err)))
        return rc;
    return KV_OK;
}

typedef enum { PROF_MODEL, PROF_HARDWARE } prof_kind;

static const char *const kind_name[] = {"model", "hardware"};

/* Loads one file; *hf (models) is the hf_name for the lookup by Hugging Face name. */
static void *prof_load(prof_kind kind, const char *path, kv_err *err)
{
    yt_doc *d = yt_load_file(path, err);
    if (!d)
        return NULL;
    const yt_node *root = yt_root(d);
    void *out = NULL;
    int rc;
    const char *name = NULL, *hf = NULL;
    if (!root || root->kind != YT_MAP) {
        rc = kv_err_set(err, KV_EINVAL, "%s: a %s profile is a map of fields", path, kind_name[kind]);
    } else if (!(rc = req_string(d, root, "name", &name, err)) &&
               !(kind == PROF_MODEL && (rc = req_string(d, root, "hf_name", &hf, err)))) {
        if (kind == PROF_MODEL) {
            sm_model m = {0};
            if (!(rc = parse_model(d, root, &m, err)) && !(rc = wl_check_keys(d, root, "", err)) &&
                (out = alloc_with(sizeof m, name, hf, &m.name, &m.hf_name)))
                memcpy(out, &m, sizeof m);
        } else {
            sm_hardware h = {0};
            if (!(rc = parse_hardware(d, root, &h, err)) && !(rc = wl_check_keys(d, root, "", err)) &&
                (out = alloc_with(sizeof h, name, NULL, &h.name, NULL)))
                memcpy(out, &h, sizeof h);
        }
        if (!rc && !out)
            kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    yt_free(d);
    return out;
}

sm_model *sm_model_load(const char *path, kv_err *err)
{
    return prof_load(PROF_MODEL, path, err);
}

sm_hardware *sm_hardware_load(const char *path, kv_err *err)
{
    return prof_load(PROF_HARDWARE, path, err);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* The profile in dir whose hf_name (models) or name is `name`, by reading each *.yaml;
 * NULL with err unset when none is, with err set when a file is broken. */
static void *prof_scan(prof_kind kind, const char *dir, const char *name, kv_err *err)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return NULL;
    void *found = NULL;
    struct dirent *e;
    char path[4096];
    while (!found && (e = readdir(dp))) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".yaml"))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        void *p = prof_load(kind, path, err);
        if (!p)
            break;
        const char *n = kind == PROF_MODEL ? ((sm_model *)p)->hf_name : ((sm_hardware *)p)->name;
        if (strcmp(n, name) == 0)
            found = p;
        else
            free(p);
    }
    closedir(dp);
    return found;
}

static void *prof_find(prof_kind kind, const char *const *dirs, size_t n_dirs, const char *name, kv_err *err)
{
    if (!name || !*name) {
        kv_err_set(err, KV_EINVAL, "no %s named", kind_name[kind]);
        return NULL;
    }
    if (ends_with(name, ".yaml"))
        return prof_load(kind, name, err);
    char path[4096];
    for (size_t i = 0; scn_name_ok(name) && i < n_dirs; i++) {
        if (!dirs[i])
            continue;
        snprintf(path, sizeof path, "%s/%s.yaml", dirs[i], name);
        FILE *f = fopen(path, "r");
        if (f) {
            fclose(f);
            return prof_load(kind, path, err);
        }
    }
    for (size_t i = 0; i < n_dirs; i++) {
        if (!dirs[i])
            continue;
        kv_err e = {0};
        void *p = prof_scan(kind, dirs[i], name, &e);
        if (p)
            return p;
        if (e.code) {
            kv_err_set(err, e.code, "%s", e.msg);
            return NULL;
        }
    }
    char searched[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < n_dirs && used < sizeof searched; i++)
        if (dirs[i])
            used += (size_t)snprintf(searched + used, sizeof searched - used, "%s%s", used ? ", " : "", dirs[i]);
    kv_err_set(err, KV_ENOTFOUND, "unknown %s '%s' (searched %s)", kind_name[kind], name, used ? searched : "nothing");
    return NULL;
}

sm_model *sm_model_find(const char *const *dirs, size_t n_dirs, const char *name, kv_err *err)
{
    return prof_find(PROF_MODEL, dirs, n_dirs, name, err);
}

sm_hardware *sm_hardware_find(const char *const *dirs, size_t n_dirs, const char *name, kv_err *err)
{
    return prof_find(PROF_HARDWARE, dirs, n_dirs, name, err);
}
