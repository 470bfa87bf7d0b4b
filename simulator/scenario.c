/* scenario: loading and validating a simulator scenario file (see scenario.h). */
#include "scenario.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profiles.h"
#include "registry.h"

static void scn_note(void *ctx, const char *msg)
{
    scenario *s = ctx;
    char **n = realloc(s->notes, (s->n_notes + 1) * sizeof *n);
    if (!n)
        return;           /* a lost note is not worth failing the run for */
    s->notes = n;
    if ((n[s->n_notes] = strdup(msg)))
        s->n_notes++;
}

static int scn_expect(const yt_doc *d, const yt_node *n, yt_kind kind, const char *path, kv_err *err)
{
    static const char *const what[] = {"a scalar", "a map", "a list"};
    if (n->kind != kind)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': expected %s", path, what[kind]);
    return KV_OK;
}

static int scn_dur(const yt_doc *d, const yt_node *map, const char *key, const char *path, sim_time *out,
                   kv_err *err)
{
    const yt_node *n = yt_get(map, key);
    if (yt_is_null(n))
        return KV_OK;
    char what[128];
    snprintf(what, sizeof what, "%s.%s", path, key);
    double s;
    int rc = yt_duration(d, n, what, &s, err);
    if (rc)
        return rc;
    if (s > 86400.0)
        return yt_error(d, n, err, KV_ERANGE, "field '%s': longer than a day", what);
    *out = (sim_time)llround(s * (double)SIM_US_PER_S);
    return KV_OK;
}

/* A profile by name: the scenario's own <sub>/ folder, the user's, the tree's; a name
 * ending .yaml is a file relative to the scenario's folder. */
static int scn_profile(scenario *s, const char *name, const char *sub, const char *user, const char *tree, void **out,
                       kv_err *err)
{
    size_t len = strlen(s->dir) + strlen(sub) + strlen(name) + 2;
    char *own = malloc(len);
    if (!own)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    bool file = strlen(name) > 5 && strcmp(name + strlen(name) - 5, ".yaml") == 0 && name[0] != '/';
    snprintf(own, len, "%s/%s", s->dir, file ? name : sub);
    const char *dirs[] = {own, user, tree};
    const char *what = file ? own : name;
    *out = strcmp(sub, "models") == 0 ? (void *)sm_model_find(dirs, 3, what, err)
                                      : (void *)sm_hardware_find(dirs, 3, what, err);
    free(own);
    return *out ? KV_OK : err && err->code ? err->code : KV_EINVAL;
}

/* A profile's own errors name its file; an unknown name is the scenario's error. */
static int scn_profile_error(const yt_doc *d, const yt_node *n, const char *what, kv_err *err)
{
    if (!err || err->code != KV_ENOTFOUND)
        return err ? err->code : KV_EINVAL;
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    return yt_error(d, n, err, KV_EINVAL, "field '%s': %s", what, msg);
}

static int scn_parse_cluster(scenario *s, const yt_node *c, const scn_dirs *dirs, kv_err *err)
{
    const yt_doc *d = s->doc;
    scn_cluster *k = &s->cluster;
    *k = (scn_cluster){.replicas = 8, .tp = 2, .block_size = 64, .gpu_memory_utilization = 0.9,
                       .prefix_caching = true, .kv_event_delay = 5000, .scrape_interval = 50000,
                       .metrics_staleness = 2 * SIM_US_PER_S, .speedup = 1};
    const char *model = "qwen3-32b", *hw = "h100-sxm";
    const yt_node *mn = NULL, *hn = NULL;
    int rc;
    if (c) {
        if ((rc = scn_expect(d, c, YT_MAP, "cluster", err)))
            return rc;
        uint32_t tp = 2;
        if ((rc = yt_opt_u32(d, c, "cluster", "replicas", 1, 4096, &k->replicas, err)) ||
            (rc = yt_opt_u32(d, c, "cluster", "tp", 1, 64, &tp, err)) ||
            (rc = yt_opt_u32(d, c, "cluster", "block_size", 1, 4096, &k->block_size, err)) ||
            (rc = yt_opt_u32(d, c, "cluster", "max_num_batched_tokens", 1, 10000000, &k->max_num_batched_tokens, err)) ||
            (rc = yt_opt_u32(d, c, "cluster", "max_num_seqs", 1, 1000000, &k->max_num_seqs, err)) ||
            (rc = yt_opt_u32(d, c, "cluster", "long_prefill_token_threshold", 0, 10000000,
                          &k->long_prefill_token_threshold, err)) ||
            (rc = yt_opt_u32(d, c, "cluster", "max_model_len", 0, 100000000, &k->max_model_len, err)) ||
            (rc = scn_dur(d, c, "kv_event_delay", "cluster", &k->kv_event_delay, err)) ||
            (rc = scn_dur(d, c, "scrape_interval", "cluster", &k->scrape_interval, err)) ||
            (rc = scn_dur(d, c, "metrics_staleness", "cluster", &k->metrics_staleness, err)))
            return rc;
        k->tp = (int)tp;
        const yt_node *n;
        if (!yt_is_null(n = yt_get(c, "num_gpu_blocks"))) {
            int64_t v;
            if ((rc = yt_int(d, n, "cluster.num_gpu_blocks", &v, err)))
                return rc;
            if (v < 1 || v > ((int64_t)1 << 40))
                return yt_error(d, n, err, KV_ERANGE, "field 'cluster.num_gpu_blocks': %lld is out of range",
                                (long long)v);
            k->num_gpu_blocks = (uint64_t)v;
        }
        if (!yt_is_null(n = yt_get(c, "gpu_memory_utilization"))) {
            if ((rc = yt_double(d, n, "cluster.gpu_memory_utilization", &k->gpu_memory_utilization, err)))
                return rc;
            if (!(k->gpu_memory_utilization > 0 && k->gpu_memory_utilization <= 1))
                return yt_error(d, n, err, KV_ERANGE, "field 'cluster.gpu_memory_utilization': must be in (0, 1]");
        }
        if (!yt_is_null(n = yt_get(c, "speedup"))) {
            if ((rc = yt_double(d, n, "cluster.speedup", &k->speedup, err)))
                return rc;
            if (!(k->speedup >= 1e-3 && k->speedup <= 1e6))
                return yt_error(d, n, err, KV_ERANGE, "field 'cluster.speedup': must be in [0.001, 1e6]");
        }
        if (!yt_is_null(n = yt_get(c, "prefix_caching")) &&
            (rc = yt_bool(d, n, "cluster.prefix_caching", &k->prefix_caching, err)))
            return rc;
        if (!yt_is_null(n = yt_get(c, "cascade_attention")) &&
            (rc = yt_bool(d, n, "cluster.cascade_attention", &k->cascade_attention, err)))
            return rc;
        if (!yt_is_null(mn = yt_get(c, "model")) && (rc = yt_string(d, mn, "cluster.model", &model, err)))
            return rc;
        if (!yt_is_null(hn = yt_get(c, "hardware")) && (rc = yt_string(d, hn, "cluster.hardware", &hw, err)))
            return rc;
        if (k->scrape_interval <= 0)
            return yt_error(d, yt_get(c, "scrape_interval"), err, KV_ERANGE,
                            "field 'cluster.scrape_interval': must be positive");
        if ((rc = wl_check_keys(d, c, "cluster", err)))
            return rc;
    }
    if ((rc = scn_profile(s, model, "models", dirs->user_models, dirs->models, (void **)&s->model, err)))
        return scn_profile_error(d, mn ? mn : c ? c : yt_root(d), "cluster.model", err);
    if ((rc = scn_profile(s, hw, "hardware", dirs->user_hardware, dirs->hardware, (void **)&s->hw, err)))
        return scn_profile_error(d, hn ? hn : c ? c : yt_root(d), "cluster.hardware", err);
    k->model = s->model;
    k->hw = s->hw;
    return KV_OK;
}

bool scn_name_ok(const char *s)
{
    if (!*s || *s == '.')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_' || *s == '.'))
            return false;
    return true;
}

static int scn_parse_router(scenario *s, const yt_node *r, size_t i, const char *presets_dir, kv_err *err)
{
    const yt_doc *d = s->doc;
    char p[48];
    snprintf(p, sizeof p, "routers[%zu]", i);
    int rc = scn_expect(d, r, YT_MAP, p, err);
    if (rc)
        return rc;
    scn_router *out = &s->routers[i];
    const yt_node *nn = yt_get(r, "name"), *pn = yt_get(r, "preset"), *cn = yt_get(r, "config");
    char what[64];
    snprintf(what, sizeof what, "%s.name", p);
    if (!nn)
        return yt_error(d, r, err, KV_EINVAL, "field '%s': required", what);
    if ((rc = yt_string(d, nn, what, &out->name, err)))
        return rc;
    if (!scn_name_ok(out->name))
        return yt_error(d, nn, err, KV_EINVAL, "field '%s': '%s' must be letters, digits, '.', '-' or '_' "
                        "(it names the output folder)", what, out->name);
    for (size_t j = 0; j < i; j++)
        if (strcmp(s->routers[j].name, out->name) == 0)
            return yt_error(d, nn, err, KV_EINVAL, "field '%s': '%s' is already used by routers[%zu]", what,
                            out->name, j);
    if (!pn == !cn)
        return yt_error(d, r, err, KV_EINVAL, "field '%s': give exactly one of 'preset' and 'config'", p);
    const yt_node *rp = yt_get(r, "request_path");
    if ((rc = wl_check_keys(d, r, p, err)))
        return rc;
    const char *text;
    if (pn) {
        snprintf(what, sizeof what, "%s.preset", p);
        if ((rc = yt_string(d, pn, what, &text, err)))
            return rc;
        kv_err e = {0};
        if (!(out->cfg = epc_load_preset(presets_dir, text, registry_types, &e)))
            return yt_error(d, pn, err, e.code ? e.code : KV_EINVAL, "field '%s': %s", what, e.msg);
        size_t len = strlen(text) + 8;
        if ((out->source = malloc(len)))
            snprintf(out->source, len, "preset:%s", text);
    } else if (cn->kind == YT_MAP) {
        kv_err e = {0};
        if (!(out->cfg = epc_load_node(d, cn, registry_types, &e))) {
            /* the config loader names fields from the config's root: say where that is */
            const char *f = strstr(e.msg, "field '");
            if (!f)
                return kv_err_set(err, e.code ? e.code : KV_EINVAL, "%s", e.msg);
            return kv_err_set(err, e.code ? e.code : KV_EINVAL, "%.*sfield '%s.config.%s", (int)(f - e.msg), e.msg, p,
                              f + 7);
        }
        out->source = strdup("inline");
    } else {
        snprintf(what, sizeof what, "%s.config", p);
        if ((rc = yt_string(d, cn, what, &text, err)))
            return rc;
        size_t len = strlen(s->dir) + strlen(text) + 2;
        if (!(out->source = malloc(len)))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        if (text[0] == '/')
            snprintf(out->source, len, "%s", text);
        else
            snprintf(out->source, len, "%s/%s", s->dir, text);
        kv_err e = {0};
        if (!(out->cfg = epc_load_file(out->source, registry_types, &e)))
            return yt_error(d, cn, err, e.code ? e.code : KV_EINVAL, "field '%s': %s", what, e.msg);
    }
    if (!out->source)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    out->path = reqpath_defaults(out->cfg);
    snprintf(what, sizeof what, "%s.request_path", p);
    return reqpath_parse(d, rp, what, &out->path, err);
}

static int scn_parse_outputs(scenario *s, const yt_node *o, kv_err *err)
{
    const yt_doc *d = s->doc;
    s->outputs = (scn_outputs){.report_stage = -1, .per_request = true, .plots = true};
    if (!o)
        return KV_OK;
    int rc = scn_expect(d, o, YT_MAP, "outputs", err);
    if (rc)
        return rc;
    const yt_node *n;
    if (!yt_is_null(n = yt_get(o, "report_stage"))) {
        int64_t v;
        if ((rc = yt_int(d, n, "outputs.report_stage", &v, err)))
            return rc;
        if (v < -1 || v >= (int64_t)s->workload.n_stages + (s->workload.load == WL_LOAD_TRACE_REPLAY))
            return yt_error(d, n, err, KV_ERANGE, "field 'outputs.report_stage': %lld is not a stage "
                            "(0..%zu, or -1 for the last)", (long long)v,
                            s->workload.n_stages ? s->workload.n_stages - 1 : 0);
        s->outputs.report_stage = (int)v;
    }
    const char *bools[] = {"per_request", "token_times", "plots"};
    bool *dst[] = {&s->outputs.per_request, &s->outputs.token_times, &s->outputs.plots};
    for (int i = 0; i < 3; i++) {
        char what[48];
        snprintf(what, sizeof what, "outputs.%s", bools[i]);
        if (!yt_is_null(n = yt_get(o, bools[i])) && (rc = yt_bool(d, n, what, dst[i], err)))
            return rc;
    }
    if (!yt_is_null(n = yt_get(o, "decisions"))) {
        const char *v;
        if (n->kind == YT_MAP) {
            s->outputs.decisions = SCN_DECISIONS_SAMPLE;
            s->outputs.decisions_every = 100;
            if (!yt_get(n, "sample"))
                return yt_error(d, n, err, KV_EINVAL, "field 'outputs.decisions.sample': required");
            if ((rc = yt_opt_u32(d, n, "outputs.decisions", "sample", 1, 1000000000, &s->outputs.decisions_every,
                              err)) ||
                (rc = wl_check_keys(d, n, "outputs.decisions", err)))
                return rc;
        } else if ((rc = yt_string(d, n, "outputs.decisions", &v, err))) {
            return rc;
        } else if (strcmp(v, "all") == 0) {
            s->outputs.decisions = SCN_DECISIONS_ALL;
        } else if (strcmp(v, "none") == 0) {
            s->outputs.decisions = SCN_DECISIONS_NONE;
        } else {
            return yt_error(d, n, err, KV_EINVAL, "field 'outputs.decisions': expected all, none or "
                            "{sample: N}, got '%s'", v);
        }
    }
    return wl_check_keys(d, o, "outputs", err);
}

static int scn_parse(scenario *s, const scn_dirs *dirs, kv_err *err)
{
    const yt_doc *d = s->doc;
    const yt_node *root = yt_root(d);
    if (!root)
        return kv_err_set(err, KV_EINVAL, "%s: the scenario is empty", s->path);
    int rc = scn_expect(d, root, YT_MAP, "<root>", err);
    if (rc)
        return rc;
    const yt_node *n;
    const char *name = NULL;
    if (!yt_is_null(n = yt_get(root, "name"))) {
        if ((rc = yt_string(d, n, "name", &name, err)))
            return rc;
        if (!scn_name_ok(name))
            return yt_error(d, n, err, KV_EINVAL, "field 'name': '%s' must be letters, digits, '.', '-' or '_' "
                            "(it names the output folder)", name);
        s->name = strdup(name);
    } else {
        const char *base = strrchr(s->path, '/');
        base = base ? base + 1 : s->path;
        size_t len = strlen(base);
        if (len > 5 && strcmp(base + len - 5, ".yaml") == 0)
            len -= 5;
        else if (len > 4 && strcmp(base + len - 4, ".yml") == 0)
            len -= 4;
        s->name = strndup(base, len);
    }
    if (!s->name)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    s->seed = 42;
    if (!yt_is_null(n = yt_get(root, "seed"))) {
        int64_t v;
        if ((rc = yt_int(d, n, "seed", &v, err)))
            return rc;
        if (v < 0)
            return yt_error(d, n, err, KV_ERANGE, "field 'seed': must be non-negative");
        s->seed = (uint64_t)v;
    }
    if ((rc = scn_parse_cluster(s, yt_get(root, "cluster"), dirs, err)))
        return rc;
    if ((s->workload_node = yt_get(root, "workload")) == NULL)
        return yt_error(d, root, err, KV_EINVAL, "field 'workload': required");
    if ((rc = wl_parse(d, s->workload_node, s->dir, scn_note, s, &s->workload, err)))
        return rc;
    if ((rc = scn_parse_outputs(s, yt_get(root, "outputs"), err)))
        return rc;
    const yt_node *rs = yt_get(root, "routers");
    if (!rs)
        return yt_error(d, root, err, KV_EINVAL, "field 'routers': required (a list of {name, preset|config})");
    if (rs->kind != YT_SEQ || rs->n == 0)
        return yt_error(d, rs, err, KV_EINVAL, "field 'routers': expected a non-empty list");
    if (!(s->routers = calloc(rs->n, sizeof *s->routers)))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    for (size_t i = 0; i < rs->n; i++) {
        s->n_routers = i + 1;
        if ((rc = scn_parse_router(s, rs->items[i], i, dirs->presets, err)))
            return rc;
    }
    const char **names = malloc(s->n_routers * sizeof *names);
    if (!names)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    for (size_t i = 0; i < s->n_routers; i++)
        names[i] = s->routers[i].name;
    rc = exp_parse(d, yt_get(root, "expect"), names, s->n_routers, s->workload.n_stages, &s->expect, err);
    free(names);
    if (rc || (rc = slo_parse(d, yt_get(root, "slo"), &s->slo, err)) ||
        (rc = sweep_parse(d, yt_get(root, "sweep"), yt_get(root, "plan"), s, err)))
        return rc;
    return wl_check_keys(d, root, "", err);
}

scenario *scn_load(const char *path, const char *presets_dir, kv_err *err)
{
    return scn_load_in(path, &(scn_dirs){.presets = presets_dir, .models = "models", .hardware = "hardware"}, err);
}

scenario *scn_load_in(const char *path, const scn_dirs *dirs, kv_err *err)
{
    scenario *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    const char *slash = strrchr(path, '/');
    s->dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
    if (!s->dir) {
        scn_free(s);
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    if (!(s->doc = yt_load_file(path, err)) || scn_parse(s, dirs, err)) {
        scn_free(s);
        return NULL;
    }
    return s;
}

void scn_free(scenario *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_routers; i++) {
        epc_free(s->routers[i].cfg);
        free(s->routers[i].source);
    }
    free(s->routers);
    exp_set_free(&s->expect);
    sweep_spec_free(&s->sweep, &s->plan);
    wl_spec_free(&s->workload);
    for (size_t i = 0; i < s->n_notes; i++)
        free(s->notes[i]);
    free(s->notes);
    yt_free(s->doc);
    free(s->model);
    free(s->hw);
    free(s->name);
    free(s->path);
    free(s->dir);
    free(s);
}
