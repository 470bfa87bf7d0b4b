/* workload: inference-perf's data generators and load timers (see workload.h). */
#include "workload.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grow.h"
#include "hugepage.h"
#include "mix64.h"
#include "rng.h"

#define WL_QWEN_VOCAB 151643u       /* Qwen3 tokenizer vocab_size: ids inference-perf draws */
#define WL_MAX_LEN 10000000u        /* per-prompt token cap: guards against typos, not a vLLM limit */

const char *wl_data_type_name(wl_data_type t)
{
    static const char *const names[] = {"shared_prefix", "random", "trace"};
    return (unsigned)t < 3 ? names[t] : "?";
}

const char *wl_load_type_name(wl_load_type t)
{
    static const char *const names[] = {"constant", "poisson", "concurrent", "trace_replay"};
    return (unsigned)t < 4 ? names[t] : "?";
}

/* ---- parsing ---------------------------------------------------------------------- */

typedef struct wl_unknown {
    const yt_doc *d;
    const char *path;
    kv_err *err;
    int rc;
} wl_unknown;

static void wl_unknown_key(void *ctx, const char *key, const yt_node *keynode)
{
    wl_unknown *u = ctx;
    if (u->rc == KV_OK)
        u->rc = yt_error(u->d, keynode, u->err, KV_EINVAL, "field '%s%s%s': unknown key", u->path,
                         *u->path ? "." : "", key);
}

int wl_check_keys(const yt_doc *d, const yt_node *map, const char *path, kv_err *err)
{
    wl_unknown u = {d, path, err, KV_OK};
    yt_each_unused(map, wl_unknown_key, &u);
    return u.rc;
}

static int wl_expect_map(const yt_doc *d, const yt_node *n, const char *path, kv_err *err)
{
    if (n->kind != YT_MAP)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': expected a map", path);
    return KV_OK;
}

static int wl_parse_dist(const yt_doc *d, const yt_node *n, const char *path, wl_dist *out, kv_err *err)
{
    int rc = wl_expect_map(d, n, path, err);
    if (rc)
        return rc;
    *out = (wl_dist){.min = 1, .max = 1, .mean = 1, .std_dev = 0, .total_count = 0};
    if ((rc = yt_opt_int(d, n, path, "min", 0, WL_MAX_LEN, &out->min, err)) ||
        (rc = yt_opt_int(d, n, path, "max", 0, WL_MAX_LEN, &out->max, err)) ||
        (rc = yt_opt_double(d, n, path, "mean", 0, WL_MAX_LEN, &out->mean, err)) ||
        (rc = yt_opt_double(d, n, path, "std_dev", 0, WL_MAX_LEN, &out->std_dev, err)) ||
        (rc = yt_opt_double(d, n, path, "std", 0, WL_MAX_LEN, &out->std_dev, err)) ||
        (rc = yt_opt_int(d, n, path, "total_count", 0, 100000000, &out->total_count, err)))
        return rc;
    if (out->min > out->max)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': min %lld is greater than max %lld", path,
                        (long long)out->min, (long long)out->max);
    if (out->mean < (double)out->min || out->mean > (double)out->max)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': mean %g is outside [min, max]", path, out->mean);
    if (out->total_count <= 0)
        return yt_error(d, n, err, KV_EINVAL, "field '%s.total_count': required and must be positive", path);
    if (out->min < 1)
        return yt_error(d, n, err, KV_EINVAL, "field '%s.min': lengths must be at least 1 token", path);
    return wl_check_keys(d, n, path, err);
}

static int wl_parse_data(const yt_doc *d, const yt_node *data, const char *base_dir, wl_spec *s, kv_err *err)
{
    int rc = wl_expect_map(d, data, "workload.data", err);
    if (rc)
        return rc;
    const yt_node *type = yt_get(data, "type");
    const char *t;
    if (!type)
        return yt_error(d, data, err, KV_EINVAL, "field 'workload.data.type': required "
                        "(shared_prefix, random or trace)");
    if ((rc = yt_string(d, type, "workload.data.type", &t, err)))
        return rc;
    if (strcmp(t, "shared_prefix") == 0) {
        s->data = WL_DATA_SHARED_PREFIX;
        s->sp.num_groups = 10, s->sp.num_prompts_per_group = 10;
        s->sp.system_prompt_len = 100, s->sp.question_len = 50, s->sp.output_len = 50;
        const yt_node *sp = yt_get(data, "shared_prefix");
        if (sp) {
            const char *p = "workload.data.shared_prefix";
            if ((rc = wl_expect_map(d, sp, p, err)) ||
                (rc = yt_opt_u32(d, sp, p, "num_groups", 1, 1000000, &s->sp.num_groups, err)) ||
                (rc = yt_opt_u32(d, sp, p, "num_prompts_per_group", 1, 1000000, &s->sp.num_prompts_per_group, err)) ||
                (rc = yt_opt_u32(d, sp, p, "system_prompt_len", 0, WL_MAX_LEN, &s->sp.system_prompt_len, err)) ||
                (rc = yt_opt_u32(d, sp, p, "question_len", 0, WL_MAX_LEN, &s->sp.question_len, err)) ||
                (rc = yt_opt_u32(d, sp, p, "output_len", 1, WL_MAX_LEN, &s->sp.output_len, err)))
                return rc;
            const yt_node *mt = yt_get(sp, "enable_multi_turn_chat");
            if (!yt_is_null(mt) &&
                (rc = yt_bool(d, mt, "workload.data.shared_prefix.enable_multi_turn_chat", &s->sp.multi_turn, err)))
                return rc;
            if ((rc = wl_check_keys(d, sp, p, err)))
                return rc;
        }
        if ((uint64_t)s->sp.num_groups * s->sp.num_prompts_per_group > 10000000u)
            return yt_error(d, sp ? sp : data, err, KV_ERANGE,
                            "field 'workload.data.shared_prefix': more than 10^7 prompts");
        if (s->sp.system_prompt_len + s->sp.question_len == 0)
            return yt_error(d, sp ? sp : data, err, KV_EINVAL,
                            "field 'workload.data.shared_prefix': prompts would be empty");
    } else if (strcmp(t, "random") == 0) {
        s->data = WL_DATA_RANDOM;
        const yt_node *in = yt_get(data, "input_distribution"), *out = yt_get(data, "output_distribution");
        if (!in || !out)
            return yt_error(d, data, err, KV_EINVAL, "field 'workload.data': random data needs "
                            "input_distribution and output_distribution");
        if ((rc = wl_parse_dist(d, in, "workload.data.input_distribution", &s->input, err)) ||
            (rc = wl_parse_dist(d, out, "workload.data.output_distribution", &s->output, err)))
            return rc;
    } else if (strcmp(t, "trace") == 0) {
        s->data = WL_DATA_TRACE;
        const yt_node *tr = yt_get(data, "trace");
        const char *file;
        if (!tr || wl_expect_map(d, tr, "workload.data.trace", NULL))
            return yt_error(d, tr ? tr : data, err, KV_EINVAL,
                            "field 'workload.data.trace': expected a map with 'file' (CSV or JSONL)");
        const yt_node *fn = yt_get(tr, "file");
        if (!fn)
            return yt_error(d, tr, err, KV_EINVAL, "field 'workload.data.trace.file': required");
        if ((rc = yt_string(d, fn, "workload.data.trace.file", &file, err)) ||
            (rc = wl_check_keys(d, tr, "workload.data.trace", err)))
            return rc;
        size_t need = strlen(base_dir) + strlen(file) + 2;
        if (!(s->trace_path = malloc(need)))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        if (file[0] == '/' || !*base_dir)
            snprintf(s->trace_path, need, "%s", file);
        else
            snprintf(s->trace_path, need, "%s/%s", base_dir, file);
        /* A missing trace is a fault of the scenario: say where it names the file. */
        FILE *f = fopen(s->trace_path, "r");
        if (!f)
            return yt_error(d, fn, err, KV_EINVAL, "field 'workload.data.trace.file': cannot open '%s': %s",
                            s->trace_path, strerror(errno));
        fclose(f);
    } else {
        return yt_error(d, type, err, KV_EINVAL, "field 'workload.data.type': '%s' is not supported "
                        "(shared_prefix, random or trace)", t);
    }
    return wl_check_keys(d, data, "workload.data", err);
}

static int wl_parse_stages(const yt_doc *d, const yt_node *st, wl_spec *s, kv_err *err)
{
    if (!st || st->kind != YT_SEQ || st->n == 0)
        return yt_error(d, st, err, KV_EINVAL, "field 'workload.load.stages': expected a non-empty list");
    if (!(s->stages = calloc(st->n, sizeof *s->stages)))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    s->n_stages = st->n;
    for (size_t i = 0; i < st->n; i++) {
        const yt_node *n = st->items[i];
        char p[64];
        snprintf(p, sizeof p, "workload.load.stages[%zu]", i);
        int rc = wl_expect_map(d, n, p, err);
        if (rc)
            return rc;
        wl_stage_spec *g = &s->stages[i];
        if (s->load == WL_LOAD_CONCURRENT) {
            const char *need[] = {"num_requests", "concurrency_level"};
            for (int k = 0; k < 2; k++)
                if (!yt_get(n, need[k]))
                    return yt_error(d, n, err, KV_EINVAL, "field '%s.%s': required for load type concurrent", p,
                                    need[k]);
            if ((rc = yt_opt_u32(d, n, p, "num_requests", 1, 100000000, &g->num_requests, err)) ||
                (rc = yt_opt_u32(d, n, p, "concurrency_level", 1, 1000000, &g->concurrency, err)))
                return rc;
        } else {
            const char *need[] = {"rate", "duration"};
            for (int k = 0; k < 2; k++)
                if (!yt_get(n, need[k]))
                    return yt_error(d, n, err, KV_EINVAL, "field '%s.%s': required for load type %s", p, need[k],
                                    wl_load_type_name(s->load));
            if ((rc = yt_opt_double(d, n, p, "rate", 1e-9, 1e6, &g->rate, err)) ||
                (rc = yt_opt_double(d, n, p, "duration", 1e-9, 1e7, &g->duration, err)))
                return rc;
            double count = g->rate * g->duration;
            if (count > 1e8)
                return yt_error(d, n, err, KV_ERANGE, "field '%s': rate*duration = %g requests is too many", p, count);
            wl_spec_set_rate(s, i, g->rate);
        }
        if ((rc = wl_check_keys(d, n, p, err)))
            return rc;
    }
    return KV_OK;
}

void wl_spec_set_rate(wl_spec *spec, size_t stage, double rate)
{
    wl_stage_spec *g = &spec->stages[stage];
    g->rate = rate;
    g->num_requests = (uint32_t)(rate * g->duration);   /* int(rate*duration), as inference-perf */
}

static int wl_parse_load(const yt_doc *d, const yt_node *load, wl_note_fn note, void *note_ctx, wl_spec *s,
                         kv_err *err)
{
    int rc = wl_expect_map(d, load, "workload.load", err);
    if (rc)
        return rc;
    const yt_node *type = yt_get(load, "type");
    const char *t = "constant";                     /* inference-perf's default */
    if (type && (rc = yt_string(d, type, "workload.load.type", &t, err)))
        return rc;
    if (strcmp(t, "constant") == 0) s->load = WL_LOAD_CONSTANT;
    else if (strcmp(t, "poisson") == 0) s->load = WL_LOAD_POISSON;
    else if (strcmp(t, "concurrent") == 0) s->load = WL_LOAD_CONCURRENT;
    else if (strcmp(t, "trace_replay") == 0) s->load = WL_LOAD_TRACE_REPLAY;
    else
        return yt_error(d, type, err, KV_EINVAL, "field 'workload.load.type': '%s' is not supported "
                        "(constant, poisson, concurrent or trace_replay)", t);
    if ((rc = yt_opt_double(d, load, "workload.load", "interval", 0, 1e6, &s->interval, err)))
        return rc;
    if (s->load == WL_LOAD_TRACE_REPLAY) {
        if (s->data != WL_DATA_TRACE)
            return yt_error(d, type, err, KV_EINVAL, "field 'workload.load.type': trace_replay needs data type trace");
        const yt_node *st = yt_get(load, "stages");
        if (st && !yt_is_null(st))
            return yt_error(d, st, err, KV_EINVAL, "field 'workload.load.stages': trace_replay takes its "
                            "arrivals from the trace, not from stages");
    } else {
        if (s->data == WL_DATA_TRACE)
            return yt_error(d, type ? type : load, err, KV_EINVAL,
                            "field 'workload.load.type': data type trace needs load type trace_replay");
        if ((rc = wl_parse_stages(d, yt_get(load, "stages"), s, err)))
            return rc;
        if (!yt_get(load, "stages"))
            return yt_error(d, load, err, KV_EINVAL, "field 'workload.load.stages': required");
    }
    /* Client-side knobs of a real load generator: the simulated client never limits. */
    static const char *const ignored[] = {"num_workers", "worker_max_concurrency", "worker_max_tcp_connections"};
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++)
        if (yt_get(load, ignored[i]) && note) {
            char msg[160];
            snprintf(msg, sizeof msg, "workload.load.%s: accepted and ignored (the simulated client "
                     "never limits concurrency)", ignored[i]);
            note(note_ctx, msg);
        }
    const yt_node *to = yt_get(load, "request_timeout");
    if (!yt_is_null(to))
        return yt_error(d, to, err, KV_EINVAL, "field 'workload.load.request_timeout': timeouts are not "
                        "simulated; remove it or set it to null");
    const yt_node *cb = yt_get(load, "circuit_breakers");
    if (!yt_is_null(cb))
        return yt_error(d, cb, err, KV_EINVAL, "field 'workload.load.circuit_breakers': not supported");
    const yt_node *sw = yt_get(load, "sweep");
    if (!yt_is_null(sw))
        return yt_error(d, sw, err, KV_EINVAL, "field 'workload.load.sweep': not supported; list the stages");
    return wl_check_keys(d, load, "workload.load", err);
}

/* The guide's output_length percentiles over 1000 generated tokens (
 * docs/upstream/inference-perf.md "Where the guide's numbers come from"), as counted/generated. */
static const double wl_guide_counted[][2] = {
    {0.00, 0.004}, {0.01, 0.033}, {0.05, 0.1927}, {0.10, 0.9449}, {0.25, 0.992},
    {0.50, 0.998}, {0.75, 1.000}, {0.99, 1.000},  {1.00, 1.999},
};

static int wl_parse_counted(const yt_doc *d, const yt_node *n, wl_spec *s, kv_err *err)
{
    const char *F = "workload.output_retokenize";
    if (n->kind == YT_SCALAR) {
        if (strcmp(n->str, "guide") != 0)
            return yt_error(d, n, err, KV_EINVAL, "field '%s': '%s' is not a built-in table (guide), "
                            "or give {points: [[quantile, ratio], ...]}", F, n->str);
        s->n_counted = sizeof wl_guide_counted / sizeof *wl_guide_counted;
        for (uint32_t i = 0; i < s->n_counted; i++) {
            s->counted[i].q = wl_guide_counted[i][0];
            s->counted[i].ratio = wl_guide_counted[i][1];
        }
        return KV_OK;
    }
    int rc = wl_expect_map(d, n, F, err);
    const yt_node *pts = rc ? NULL : yt_get(n, "points");
    if (!rc && (!pts || pts->kind != YT_SEQ || pts->n < 2 || pts->n > WL_COUNTED_MAX))
        return yt_error(d, pts ? pts : n, err, KV_EINVAL, "field '%s.points': expected a list of 2 to %d "
                        "[quantile, ratio] pairs", F, WL_COUNTED_MAX);
    for (size_t i = 0; !rc && i < pts->n; i++) {
        const yt_node *p = pts->items[i];
        char what[96];
        snprintf(what, sizeof what, "%s.points[%zu]", F, i);
        if (p->kind != YT_SEQ || p->n != 2)
            return yt_error(d, p, err, KV_EINVAL, "field '%s': expected [quantile, ratio]", what);
        double q, r;
        if ((rc = yt_double(d, p->items[0], what, &q, err)) || (rc = yt_double(d, p->items[1], what, &r, err)))
            return rc;
        double q_lo = i ? s->counted[i - 1].q : 0.0, r_lo = i ? s->counted[i - 1].ratio : 0.0;
        bool q_ok = i == 0 ? q == 0.0 : i + 1 == pts->n ? q == 1.0 : q > q_lo && q < 1.0;
        if (!q_ok)
            return yt_error(d, p->items[0], err, KV_ERANGE, "field '%s': quantile %g out of order (the first "
                            "is 0, the last 1, increasing between)", what, q);
        if (!(r >= r_lo && r <= 100.0))
            return yt_error(d, p->items[1], err, KV_ERANGE, "field '%s': ratio %g out of order (non-decreasing, "
                            "in [0, 100])", what, r);
        s->counted[i].q = q;
        s->counted[i].ratio = r;
    }
    if (!rc)
        rc = wl_check_keys(d, n, F, err);
    s->n_counted = rc ? 0 : (uint32_t)pts->n;
    return rc;
}

int wl_parse(const yt_doc *d, const yt_node *w, const char *base_dir, wl_note_fn note, void *note_ctx,
             wl_spec *s, kv_err *err)
{
    memset(s, 0, sizeof *s);
    s->interval = 1.0;
    s->vocab = WL_QWEN_VOCAB;
    int rc;
    if (!w)
        return kv_err_set(err, KV_EINVAL, "%s: field 'workload': required", yt_name(d));
    if ((rc = wl_expect_map(d, w, "workload", err)))
        return rc;
    const yt_node *data = yt_get(w, "data"), *load = yt_get(w, "load");
    if (!data)
        rc = yt_error(d, w, err, KV_EINVAL, "field 'workload.data': required");
    else if (!load)
        rc = yt_error(d, w, err, KV_EINVAL, "field 'workload.load': required");
    else if (!(rc = wl_parse_data(d, data, base_dir ? base_dir : "", s, err)))
        rc = wl_parse_load(d, load, note, note_ctx, s, err);
    const yt_node *rt = yt_get(w, "retokenize");
    if (!rc && rt) {
        if (!(rc = wl_expect_map(d, rt, "workload.retokenize", err)) &&
            !(rc = yt_opt_double(d, rt, "workload.retokenize", "mean", 0, 1, &s->drift_mean, err)) &&
            !(rc = yt_opt_double(d, rt, "workload.retokenize", "spread", 0, 1, &s->drift_spread, err)) &&
            !(rc = wl_check_keys(d, rt, "workload.retokenize", err)) && s->drift_spread > s->drift_mean)
            rc = yt_error(d, rt, err, KV_EINVAL, "field 'workload.retokenize.spread': larger than mean "
                          "(prompts would shrink)");
    }
    if (!rc && (rt = yt_get(w, "output_retokenize")))
        rc = wl_parse_counted(d, rt, s, err);
    if (!rc && !yt_is_null(yt_get(w, "vocab_size")))
        rc = yt_opt_u32(d, w, "workload", "vocab_size", 2, UINT32_MAX, &s->vocab, err);
    /* Sections of a pasted inference-perf config that a simulation has no use for. */
    static const char *const pasted[] = {"api", "server", "tokenizer", "report", "storage", "metrics"};
    for (size_t i = 0; !rc && i < sizeof pasted / sizeof *pasted; i++)
        if (yt_get(w, pasted[i]) && note) {
            char msg[128];
            snprintf(msg, sizeof msg, "workload.%s: accepted and ignored (inference-perf section the "
                     "simulation does not need)", pasted[i]);
            note(note_ctx, msg);
        }
    if (!rc)
        rc = wl_check_keys(d, w, "workload", err);
    if (rc)
        wl_spec_free(s);
    return rc;
}

void wl_spec_free(wl_spec *s)
{
    free(s->stages);
    free(s->trace_path);
    s->stages = NULL;
    s->trace_path = NULL;
    s->n_stages = 0;
}

/* ---- load timers ------------------------------------------------------------------- */

static sim_time wl_us(double seconds)
{
    return (sim_time)llround(seconds * (double)SIM_US_PER_S);
}

/* inference-perf's ConstantLoadTimer from t0: n exponential gaps scaled to 'span'.
 * Times accumulate in double, as the Python does, and are converted once. */
static void wl_scaled_gaps(rng *r, uint32_t n, double t0, double span, double *times)
{
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        times[i] = rng_exp(r, 1.0);
        sum += times[i];
    }
    double scale = span / sum, t = t0;
    for (uint32_t i = 0; i < n; i++) {
        t += times[i] * scale;
        times[i] = t;
    }
}

int wl_constant_offsets(double rate, double duration, uint32_t n, uint64_t seed, sim_time *out)
{
    (void)rate;   /* only n and the duration matter once the gaps are normalised */
    if (!n)
        return KV_OK;
    double *t = malloc(n * sizeof *t);
    if (!t)
        return KV_ENOMEM;
    rng r;
    rng_seed(&r, seed, RNG_STREAM_ARRIVALS);
    wl_scaled_gaps(&r, n, 0.0, duration, t);
    for (uint32_t i = 0; i < n; i++)
        out[i] = wl_us(t[i]);
    free(t);
    return KV_OK;
}

int wl_poisson_offsets(double rate, uint32_t n, uint64_t seed, sim_time *out)
{
    rng r;
    rng_seed(&r, seed, RNG_STREAM_ARRIVALS);
    double *t = NULL, window = 0.0;
    size_t cap = 0;
    uint32_t done = 0;
    while (done < n) {
        uint64_t k = rng_poisson(&r, rate);
        if (k == 0) {
            window += 1.0;
            continue;
        }
        if (k > cap) {
            double *nt = realloc(t, k * sizeof *t);
            if (!nt) {
                free(t);
                return KV_ENOMEM;
            }
            t = nt;
            cap = k;
        }
        wl_scaled_gaps(&r, (uint32_t)k, window, 1.0, t);
        for (uint64_t i = 0; i < k && done < n; i++)
            out[done++] = wl_us(t[i]);
        window = t[k - 1];        /* the next window starts where this one's last arrival is */
    }
    free(t);
    return KV_OK;
}

/* ---- building ----------------------------------------------------------------------- */

static uint32_t wl_drift(rng *r, uint32_t len, const wl_spec *s)
{
    if (s->drift_mean <= 0 || len == 0)
        return 0;
    double f = s->drift_mean + s->drift_spread * (2.0 * rng_01(r) - 1.0);
    return (uint32_t)llround((double)len * f);
}

static int wl_build_shared_prefix(workload *w, kv_err *err)
{
    const wl_spec *s = &w->spec;
    uint32_t G = s->sp.num_groups, Q = s->sp.num_prompts_per_group;
    size_t n = (size_t)G * Q;
    uint32_t *plen = malloc(G * sizeof *plen), *qlen = malloc(n * sizeof *qlen);
    w->prompts = calloc(n, sizeof *w->prompts);
    if (!plen || !qlen || !w->prompts) {
        free(plen);
        free(qlen);
        return kv_err_set(err, KV_ENOMEM, "out of memory building %zu prompts", n);
    }
    w->n_prompts = n;
    /* Lengths first, from their own stream, so turning drift on never changes token ids. */
    rng dr;
    rng_seed(&dr, w->seed, RNG_STREAM_DRIFT);
    size_t total = 0;
    for (uint32_t g = 0; g < G; g++) {
        plen[g] = s->sp.system_prompt_len + wl_drift(&dr, s->sp.system_prompt_len, s);
        for (uint32_t q = 0; q < Q; q++) {
            size_t i = (size_t)g * Q + q;
            qlen[i] = s->sp.question_len + wl_drift(&dr, s->sp.question_len, s);
            total += plen[g] + qlen[i];
        }
    }
    if (!(w->pool = hugepage_alloc((total ? total : 1) * sizeof *w->pool))) {
        free(plen);
        free(qlen);
        return kv_err_set(err, KV_ENOMEM, "out of memory for %zu prompt tokens", total);
    }
    rng tr;
    rng_seed(&tr, w->seed, RNG_STREAM_TOKENS);
    uint32_t *p = w->pool;
    for (uint32_t g = 0; g < G; g++) {
        const uint32_t *prefix = p;
        for (uint32_t q = 0; q < Q; q++) {
            size_t i = (size_t)g * Q + q;
            if (q == 0)
                rng_fill_below(&tr, s->vocab, p, plen[g]);
            else
                memcpy(p, prefix, plen[g] * sizeof *p);
            rng_fill_below(&tr, s->vocab, p + plen[g], qlen[i]);
            w->prompts[i] = (wl_prompt){p, plen[g] + qlen[i], s->sp.output_len, g, plen[g]};
            p += plen[g] + qlen[i];
        }
    }
    free(plen);
    free(qlen);
    /* One shuffle, Fisher-Yates from the end like Python's random.shuffle. */
    rng sh;
    rng_seed(&sh, w->seed, RNG_STREAM_SHUFFLE);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)rng_below(&sh, i + 1);
        wl_prompt t = w->prompts[i];
        w->prompts[i] = w->prompts[j];
        w->prompts[j] = t;
    }
    return KV_OK;
}

/* generate_distribution: normal(mean, std_dev), clipped to [min, max], rounded half to even. */
static int64_t *wl_lengths(const wl_dist *dd, rng *r)
{
    int64_t *v = malloc((size_t)dd->total_count * sizeof *v);
    if (!v)
        return NULL;
    for (int64_t i = 0; i < dd->total_count; i++) {
        double x = dd->mean + dd->std_dev * rng_normal(r);
        x = fmin(fmax(x, (double)dd->min), (double)dd->max);
        v[i] = (int64_t)nearbyint(x);
    }
    return v;
}

/* Trace rows: arrival (s), input and output lengths, optional prefix group and length. */
typedef struct wl_row {
    double t;
    int64_t in, out, group, prefix;
} wl_row;

static const char *const wl_col_names[5][4] = {
    {"timestamp", "arrival", "arrival_time", "time"},
    {"input_length", "input_tokens", "prompt_tokens", "ContextTokens"},
    {"output_length", "output_tokens", "max_tokens", "GeneratedTokens"},
    {"prefix_group", "group", NULL, NULL},
    {"prefix_length", "prefix_len", NULL, NULL},
};

static int wl_col_of(const char *name, size_t len)
{
    for (int c = 0; c < 5; c++)
        for (int a = 0; a < 4 && wl_col_names[c][a]; a++)
            if (strlen(wl_col_names[c][a]) == len && strncmp(wl_col_names[c][a], name, len) == 0)
                return c;
    return -1;
}

/* The integer columns' ranges (input and output lengths are required: a row starts with
 * them below range). */
static const struct {
    const char *name;
    double lo, hi;
} wl_int_cols[5] = {
    [1] = {"input_length", 1, WL_MAX_LEN},
    [2] = {"output_length", 1, WL_MAX_LEN},
    [3] = {"prefix_group", -1, UINT32_MAX - 1.0},
    [4] = {"prefix_length", 0, WL_MAX_LEN},
};

/* Column c of a row, the number x written as text[0..len): a timestamp is kept as it is
 * (wl_row_check judges it); an integer is range-checked as the double it was read as,
 * before the conversion (which is then defined), and an error quotes what the file says. */
static int wl_set_col(const char *path, size_t line, int c, double x, const char *text, size_t len, wl_row *r,
                      kv_err *err)
{
    if (c == 0) {
        r->t = x;
        return KV_OK;
    }
    if (!(x >= wl_int_cols[c].lo && x <= wl_int_cols[c].hi)) {
        char q[96];
        return kv_err_set(err, KV_ERANGE, "%s:%zu: field '%s': %s is out of range [%.0f, %.0f]", path, line,
                          wl_int_cols[c].name, kv_err_quote(q, sizeof q, text, len), wl_int_cols[c].lo,
                          wl_int_cols[c].hi);
    }
    int64_t v = (int64_t)x;
    *(c == 1 ? &r->in : c == 2 ? &r->out : c == 3 ? &r->group : &r->prefix) = v;
    return KV_OK;
}

static int wl_row_check(const char *path, size_t line, wl_row *r, const wl_row *prev, kv_err *err)
{
    if (!(r->t >= 0) || !isfinite(r->t))
        return kv_err_set(err, KV_EINVAL, "%s:%zu: field 'timestamp': must be a non-negative number", path, line);
    if (prev && r->t < prev->t)
        return kv_err_set(err, KV_EINVAL, "%s:%zu: field 'timestamp': %g is earlier than the previous row's %g",
                          path, line, r->t, prev->t);
    for (int c = 1; c <= 2; c++)
        if ((c == 1 ? r->in : r->out) < 1)
            return kv_err_set(err, KV_EINVAL, "%s:%zu: field '%s': required", path, line, wl_int_cols[c].name);
    /* a shared prefix longer than the prompt is the whole prompt */
    if (r->prefix > r->in)
        r->prefix = r->in;
    return KV_OK;
}

/* Walks a CSV line: the field at *at (its length in *len, without the comma), with *at
 * moved to the next field, NULL after the last; NULL once none is left. */
static char *wl_csv_field(char **at, size_t *len)
{
    char *f = *at;
    if (!f)
        return NULL;
    char *e = strchr(f, ',');
    *len = e ? (size_t)(e - f) : strlen(f);
    *at = e ? e + 1 : NULL;
    return f;
}

static int wl_parse_num(const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    bool none = end == buf;   /* blank: no number, not 0 */
    while (isspace((unsigned char)*end))
        end++;
    return (none || *end || errno) ? -1 : 0;
}

static int wl_read_trace(const char *path, wl_row **rows_out, size_t *n_out, kv_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return kv_err_set(err, KV_EIO, "%s: cannot open trace: %s", path, strerror(errno));
    size_t plen = strlen(path);
    bool jsonl = plen >= 6 && (strcmp(path + plen - 6, ".jsonl") == 0 || strcmp(path + plen - 5, ".json") == 0);
    wl_row *rows = NULL;
    size_t n = 0, cap = 0, lineno = 0;
    int cols[8], ncols = 0, rc = KV_OK;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0 || line[0] == '#')
            continue;
        wl_row r = {.group = -1, .prefix = 0, .t = NAN, .in = -1, .out = -1};
        if (jsonl) {
            json_error_t je;
            json_t *o = json_loadb(line, (size_t)len, 0, &je);
            if (!o || !json_is_object(o)) {
                json_decref(o);
                rc = kv_err_set(err, KV_EPARSE, "%s:%zu:%d: not a JSON object%s%s", path, lineno, o ? 1 : je.column,
                                o ? "" : ": ", o ? "" : je.text);
                break;
            }
            const char *k;
            json_t *v;
            json_object_foreach(o, k, v) {
                int c = wl_col_of(k, strlen(k));
                if (c < 0 || !json_is_number(v)) {
                    char q[96];
                    rc = kv_err_set(err, KV_EPARSE, "%s:%zu: field '%s': %s", path, lineno,
                                    kv_err_quote(q, sizeof q, k, strlen(k)), c < 0 ? "unknown key" : "expected a number");
                    break;
                }
                /* jansson keeps no source text: an integer is shown exactly, a real as %.17g */
                char text[32];
                int tl = json_is_integer(v) ? snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(v))
                                            : snprintf(text, sizeof text, "%.17g", json_real_value(v));
                if ((rc = wl_set_col(path, lineno, c, json_number_value(v), text, (size_t)tl, &r, err)))
                    break;
            }
            json_decref(o);
            if (rc)
                break;
        } else if (!ncols) {            /* the CSV header names the columns */
            size_t l;
            for (char *s, *at = line; (s = wl_csv_field(&at, &l));) {
                while (l && isspace((unsigned char)s[l - 1])) l--;
                while (l && isspace((unsigned char)*s)) s++, l--;
                if (ncols == 8 || (cols[ncols++] = wl_col_of(s, l)) < 0) {
                    char q[96];
                    rc = kv_err_set(err, KV_EPARSE, "%s:%zu: column '%s': unknown (timestamp, input_length, "
                                    "output_length, prefix_group, prefix_length)", path, lineno,
                                    kv_err_quote(q, sizeof q, s, l));
                    break;
                }
            }
            if (rc)
                break;
            continue;
        } else {
            int c = 0;
            size_t l;
            for (char *s, *at = line; (s = wl_csv_field(&at, &l)); c++) {
                double x;
                if (c >= ncols || wl_parse_num(s, l, &x)) {
                    char q[96];
                    rc = kv_err_set(err, KV_EPARSE, "%s:%zu: column %d: expected a number, got '%s'", path, lineno,
                                    c + 1, kv_err_quote(q, sizeof q, s, l));
                    break;
                }
                if ((rc = wl_set_col(path, lineno, cols[c], x, s, l, &r, err)))
                    break;
            }
            if (rc)
                break;
        }
        if ((rc = wl_row_check(path, lineno, &r, n ? &rows[n - 1] : NULL, err)))
            break;
        if (!grow_array((void **)&rows, &cap, n + 1, sizeof *rows)) {
            rc = kv_err_set(err, KV_ENOMEM, "out of memory reading %s", path);
            break;
        }
        rows[n++] = r;
    }
    free(line);
    fclose(f);
    if (!rc && n == 0)
        rc = kv_err_set(err, KV_EINVAL, "%s: the trace has no requests", path);
    if (rc) {
        free(rows);
        return rc;
    }
    *rows_out = rows;
    *n_out = n;
    return KV_OK;
}

static int wl_build_trace(workload *w, kv_err *err)
{
    wl_row *rows;
    size_t n;
    int rc = wl_read_trace(w->spec.trace_path, &rows, &n, err);
    if (rc)
        return rc;
    if (n > UINT32_MAX) {
        free(rows);
        return kv_err_set(err, KV_ERANGE, "%s: too many rows", w->spec.trace_path);
    }
    w->prompts = calloc(n, sizeof *w->prompts);
    w->stages = calloc(1, sizeof *w->stages);
    sim_time *off = malloc(n * sizeof *off);
    if (!w->prompts || !w->stages || !off) {
        free(rows);
        free(off);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    w->n_prompts = n;
    w->n_stages = 1;
    for (size_t i = 0; i < n; i++) {
        /* n_tokens holds the shared-prefix length here: tokens are made per request. */
        w->prompts[i] = (wl_prompt){NULL, (uint32_t)(rows[i].group >= 0 ? rows[i].prefix : 0),
                                    (uint32_t)rows[i].out, rows[i].group >= 0 ? (uint32_t)rows[i].group : UINT32_MAX,
                                    0};
        off[i] = wl_us(rows[i].t);
    }
    /* Input lengths ride in in_len so wl_request can build each prompt. */
    if (!(w->in_len = malloc(n * sizeof *w->in_len))) {
        free(rows);
        free(off);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        w->in_len[i] = rows[i].in;
    double span = rows[n - 1].t;
    w->stages[0] = (wl_stage){.rate = span > 0 ? (double)n / span : 0, .duration = span,
                              .n_requests = (uint32_t)n, .offsets = off};
    free(rows);
    return KV_OK;
}

workload *wl_build(const wl_spec *spec, uint64_t seed, kv_err *err)
{
    workload *w = calloc(1, sizeof *w);
    if (!w) {
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    w->spec = *spec;
    w->spec.stages = NULL;
    w->spec.trace_path = NULL;
    w->seed = seed;
    w->interval = wl_us(spec->interval);
    int rc = KV_OK;
    if (spec->n_stages) {
        w->spec.stages = malloc(spec->n_stages * sizeof *spec->stages);
        if (!w->spec.stages)
            rc = kv_err_set(err, KV_ENOMEM, "out of memory");
        else
            memcpy(w->spec.stages, spec->stages, spec->n_stages * sizeof *spec->stages);
        w->spec.n_stages = spec->n_stages;
    }
    if (!rc && spec->trace_path && !(w->spec.trace_path = strdup(spec->trace_path)))
        rc = kv_err_set(err, KV_ENOMEM, "out of memory");
    if (!rc) {
        switch (spec->data) {
        case WL_DATA_SHARED_PREFIX:
            rc = wl_build_shared_prefix(w, err);
            break;
        case WL_DATA_RANDOM: {
            rng r;
            rng_seed(&r, seed, RNG_STREAM_LENGTHS);
            w->in_len = wl_lengths(&spec->input, &r);
            w->out_len = wl_lengths(&spec->output, &r);
            if (!w->in_len || !w->out_len)
                rc = kv_err_set(err, KV_ENOMEM, "out of memory");
            break;
        }
        case WL_DATA_TRACE:
            rc = wl_build_trace(w, err);
            break;
        }
    }
    if (!rc && spec->load != WL_LOAD_TRACE_REPLAY) {
        if (!(w->stages = calloc(spec->n_stages, sizeof *w->stages)))
            rc = kv_err_set(err, KV_ENOMEM, "out of memory");
        else
            w->n_stages = spec->n_stages;
        for (size_t i = 0; !rc && i < spec->n_stages; i++) {
            const wl_stage_spec *g = &spec->stages[i];
            wl_stage *st = &w->stages[i];
            st->rate = g->rate;
            st->duration = g->duration;
            st->n_requests = g->num_requests;
            if (spec->load == WL_LOAD_CONCURRENT) {
                st->concurrency = g->concurrency;
                continue;
            }
            if (!(st->offsets = malloc((st->n_requests ? st->n_requests : 1) * sizeof *st->offsets))) {
                rc = kv_err_set(err, KV_ENOMEM, "out of memory");
                break;
            }
            uint64_t sseed = mix64(seed) + i;    /* a fresh timer per stage, as inference-perf */
            rc = spec->load == WL_LOAD_POISSON ? wl_poisson_offsets(g->rate, st->n_requests, sseed, st->offsets)
                                               : wl_constant_offsets(g->rate, g->duration, st->n_requests, sseed,
                                                                     st->offsets);
            if (rc)
                kv_err_set(err, rc, "out of memory");
        }
    }
    if (rc) {
        wl_free(w);
        return NULL;
    }
    return w;
}

void wl_free(workload *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_stages; i++)
        free(w->stages[i].offsets);
    free(w->stages);
    free(w->prompts);
    free(w->pool);
    free(w->in_len);
    free(w->out_len);
    wl_spec_free(&w->spec);
    free(w);
}

uint32_t wl_counted_output(const workload *w, uint64_t id, uint32_t generated)
{
    const wl_spec *s = &w->spec;
    if (s->n_counted < 2 || generated == 0)
        return generated;
    rng r;
    rng_seed(&r, w->seed ^ mix64(id), RNG_STREAM_COUNTED);
    double u = rng_01(&r);
    uint32_t k = 1;
    while (k + 1 < s->n_counted && s->counted[k].q <= u)
        k++;
    double q0 = s->counted[k - 1].q, q1 = s->counted[k].q;
    double r0 = s->counted[k - 1].ratio, r1 = s->counted[k].ratio;
    double ratio = r0 + (r1 - r0) * (u - q0) / (q1 - q0);
    double c = floor((double)generated * ratio + 0.5);
    return c < 1.0 ? 1u : c > (double)UINT32_MAX ? UINT32_MAX : (uint32_t)c;
}

uint64_t wl_total_requests(const workload *w)
{
    uint64_t n = 0;
    for (size_t i = 0; i < w->n_stages; i++)
        n += w->stages[i].n_requests;
    return n;
}

bool wl_multi_turn(const workload *w)
{
    return w->spec.data == WL_DATA_SHARED_PREFIX && w->spec.sp.multi_turn;
}

uint32_t wl_output_len(const workload *w, size_t stage, uint64_t i)
{
    (void)stage;   /* every stage replays the same sequence */
    switch (w->spec.data) {
    case WL_DATA_SHARED_PREFIX: return w->prompts[i % w->n_prompts].n_output;
    case WL_DATA_RANDOM: return (uint32_t)w->out_len[i % (uint64_t)w->spec.output.total_count];
    case WL_DATA_TRACE: return w->prompts[i].n_output;
    }
    return 0;
}

int wl_request(const workload *w, size_t stage, uint64_t i, wl_req *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    if (stage >= w->n_stages || i >= w->stages[stage].n_requests)
        return kv_err_set(err, KV_ERANGE, "request %llu of stage %zu does not exist", (unsigned long long)i, stage);
    switch (w->spec.data) {
    case WL_DATA_SHARED_PREFIX: {
        const wl_prompt *p = &w->prompts[i % w->n_prompts];
        *out = (wl_req){.tokens = p->tokens, .n_prompt = p->n_tokens, .n_output = p->n_output, .group = p->group,
                        .shared_len = p->n_tokens};
        return KV_OK;
    }
    case WL_DATA_RANDOM: {
        size_t k = (size_t)(i % (uint64_t)w->spec.input.total_count);
        size_t ko = (size_t)(i % (uint64_t)w->spec.output.total_count);
        uint32_t n = (uint32_t)w->in_len[k];
        if (!(out->owned = malloc(n * sizeof *out->owned)))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        rng r;   /* fresh tokens per (stage, request): random data never shares a block */
        rng_seed(&r, mix64(w->seed) ^ mix64(((uint64_t)stage << 40) ^ i), RNG_STREAM_TOKENS);
        rng_fill_below(&r, w->spec.vocab, out->owned, n);
        *out = (wl_req){.tokens = out->owned, .n_prompt = n, .n_output = (uint32_t)w->out_len[ko],
                        .group = UINT32_MAX, .shared_len = 0, .owned = out->owned};
        return KV_OK;
    }
    case WL_DATA_TRACE: {
        const wl_prompt *p = &w->prompts[i];
        uint32_t n = (uint32_t)w->in_len[i], shared = p->n_tokens;
        if (!(out->owned = malloc(n * sizeof *out->owned)))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        rng r;
        if (shared) {   /* the group's prefix: one stream per group, so shorter is a prefix of longer */
            rng_seed(&r, mix64(w->seed) ^ mix64(p->group), RNG_STREAM_TRACE);
            rng_fill_below(&r, w->spec.vocab, out->owned, shared);
        }
        rng_seed(&r, mix64(w->seed) ^ mix64(((uint64_t)1 << 63) | i), RNG_STREAM_TRACE);
        rng_fill_below(&r, w->spec.vocab, out->owned + shared, n - shared);
        *out = (wl_req){.tokens = out->owned, .n_prompt = n, .n_output = p->n_output, .group = p->group,
                        .shared_len = shared, .owned = out->owned};
        return KV_OK;
    }
    }
    return kv_err_set(err, KV_EINVAL, "unknown data type");
}

void wl_req_release(wl_req *r)
{
    free(r->owned);
    r->owned = NULL;
    r->tokens = NULL;
}
