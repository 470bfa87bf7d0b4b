/* policy_util: shared plugin helpers (see policy_util.h). */
#include "policy_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- parameters ------------------------------------------------------------------ */

#define PU_FIELD_MAX 256

static void pu_field(char *out, size_t cap, const sched_plugin *p, const char *path, const char *key)
{
    if (path && key)
        snprintf(out, cap, "%s.parameters.%s.%s", p->name, path, key);
    else if (path || key)
        snprintf(out, cap, "%s.parameters.%s", p->name, path ? path : key);
    else
        snprintf(out, cap, "%s.parameters", p->name);
}

static const yt_node *pu_value(const yt_node *map, const char *key)
{
    const yt_node *n = yt_get(map, key);
    return n && !yt_is_null(n) ? n : NULL;
}

/* map[key] unless absent or null, with its field name in f for the messages. */
static const yt_node *pu_param(const sched_plugin *p, const yt_node *map, const char *path, const char *key,
                               char f[PU_FIELD_MAX])
{
    const yt_node *n = pu_value(map, key);
    if (n)
        pu_field(f, PU_FIELD_MAX, p, path, key);
    return n;
}

int pu_error(const sched_plugin *p, const sched_params *pp, const yt_node *at, const char *path, kv_err *err,
             const char *fmt, ...)
{
    char field[PU_FIELD_MAX], msg[320];
    pu_field(field, sizeof field, p, path, NULL);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return yt_error(pp->doc, at, err, KV_EINVAL, "field '%s': %s", field, msg);
}

int pu_int(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path, const char *key,
           int64_t lo, int64_t hi, int64_t *inout, kv_err *err)
{
    char f[PU_FIELD_MAX];
    const yt_node *n = pu_param(p, map, path, key, f);
    if (!n)
        return KV_OK;
    return yt_int_range(pp->doc, n, f, lo, hi, inout, err);
}

int pu_double(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
              const char *key, double lo, double hi, double *inout, kv_err *err)
{
    char f[PU_FIELD_MAX];
    const yt_node *n = pu_param(p, map, path, key, f);
    if (!n)
        return KV_OK;
    return yt_double_range(pp->doc, n, f, lo, hi, inout, err);
}

int pu_bool(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path, const char *key,
            bool *inout, kv_err *err)
{
    char f[PU_FIELD_MAX];
    const yt_node *n = pu_param(p, map, path, key, f);
    return n ? yt_bool(pp->doc, n, f, inout, err) : KV_OK;
}

int pu_string(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
              const char *key, const char **inout, kv_err *err)
{
    const yt_node *n = yt_get(map, key);
    if (!n || (yt_is_null(n) && !n->quoted))
        return KV_OK;
    char f[PU_FIELD_MAX];
    pu_field(f, sizeof f, p, path, key);
    return yt_string(pp->doc, n, f, inout, err);
}

int pu_duration(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
                const char *key, double *inout, kv_err *err)
{
    char f[PU_FIELD_MAX];
    const yt_node *n = pu_param(p, map, path, key, f);
    if (!n)
        return KV_OK;
    double v;
    if (yt_duration(pp->doc, n, f, &v, err))
        return KV_EINVAL;
    if (v < 0)
        return yt_error(pp->doc, n, err, KV_EINVAL, "field '%s': a duration must not be negative", f);
    *inout = v;
    return KV_OK;
}

const yt_node *pu_map(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
                      const char *key, int *rc, kv_err *err)
{
    char f[PU_FIELD_MAX];
    const yt_node *n = pu_param(p, map, path, key, f);
    if (!n || n->kind == YT_MAP)
        return n;
    *rc = yt_error(pp->doc, n, err, KV_EINVAL, "field '%s': expected a mapping", f);
    return NULL;
}

void pu_accept(const yt_node *n)
{
    if (!n)
        return;
    yt_node *w = (yt_node *)n; /* 'used' is bookkeeping, not content */
    w->used = true;
    for (size_t i = 0; n->kind != YT_SCALAR && i < n->n; i++) {
        if (n->kind == YT_MAP)
            n->keynodes[i]->used = true;
        pu_accept(n->items[i]);
    }
}

int pu_picker_max(const sched_plugin *p, const sched_params *pp, size_t *out, kv_err *err)
{
    int64_t v = 1;
    if (pu_int(p, pp, pp->node, NULL, "maxNumOfEndpoints", 1, SCHED_MAX_TARGETS, &v, err))
        return KV_EINVAL;
    *out = (size_t)v;
    return KV_OK;
}

int pu_picker_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    size_t max;
    if (pu_picker_max(p, pp, &max, err))
        return KV_EINVAL;
    p->state = (void *)(uintptr_t)max; /* a count, not a pointer: nothing to free */
    return KV_OK;
}

size_t pu_picker_count(const sched_plugin *p, size_t max, size_t n)
{
    size_t k = (size_t)(uintptr_t)p->state;
    k = k < max ? k : max;
    return k < n ? k : n;
}

size_t pu_picked(const sched_scored *cands, size_t k, sched_endpoint **out)
{
    for (size_t i = 0; i < k; i++)
        out[i] = cands[i].ep;
    return k;
}

/* ---- scoring helpers ---------------------------------------------------------------- */

void pu_minmax_lower_better(double *scores, size_t n)
{
    if (!n)
        return;
    double lo = scores[0], hi = lo;
    for (size_t i = 1; i < n; i++) {
        lo = scores[i] < lo ? scores[i] : lo;
        hi = scores[i] > hi ? scores[i] : hi;
    }
    if (hi == lo) {
        for (size_t i = 0; i < n; i++)
            scores[i] = 1.0;
        return;
    }
    /* Loads are queue lengths and request counts, a few small integers over 1,000
     * endpoints: a value equal (bit for bit) to the one before takes that one's result,
     * the same quotient without a divide (a divide per endpoint was most of the call). */
    double range = hi - lo, v = scores[0], r = (hi - v) / range;
    uint64_t vbits;
    memcpy(&vbits, &v, sizeof vbits);
    scores[0] = r;
    for (size_t i = 1; i < n; i++) {
        uint64_t b;
        memcpy(&b, &scores[i], sizeof b);
        if (b != vbits) {
            vbits = b;
            r = (hi - scores[i]) / range;
        }
        scores[i] = r;
    }
}

size_t pu_below(sched_cycle *c, size_t n)
{
    /* Lemire's multiply-shift: no division on the hot path; the bias is below 2^-50 */
    return (size_t)(((unsigned __int128)sched_cycle_rand(c) * n) >> 64);
}

sched_scored *pu_cands_copy(sched_cycle *c, const sched_scored *cands, size_t n)
{
    sched_scored *a = sched_cycle_alloc(c, n * sizeof *a);
    return a ? memcpy(a, cands, n * sizeof *a) : NULL;
}

void pu_shuffle(sched_cycle *c, sched_scored *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = pu_below(c, i);
        sched_scored t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

uint64_t pu_request_hash(const sched_request *r)
{
    const char *id = r->id ? r->id : "";
    return XXH64(id, strlen(id), 0);
}

int pu_kvindex_slot(const kvindex *ix, const char *name)
{
    int slot = kvindex_endpoint_find(ix, name);
    const char *colon = strrchr(name, ':');
    if (slot < 0 && colon && (size_t)(colon - name) < 256) {
        char ip[256];
        memcpy(ip, name, (size_t)(colon - name));
        ip[colon - name] = 0;
        slot = kvindex_endpoint_find(ix, ip);
    }
    return slot;
}

bool pu_label_in(const sched_endpoint *ep, const char *label, const char *const *values, size_t n,
                 bool allow_missing)
{
    const char *v = sched_label(ep, label);
    if (!v)
        return allow_missing;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v, values[i]) == 0)
            return true;
    return false;
}

size_t pu_filter_label(sched_endpoint **eps, size_t n, const char *label, const char *const *values, size_t nv,
                       bool allow_missing)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (pu_label_in(eps[i], label, values, nv, allow_missing))
            eps[k++] = eps[i];
    return k;
}

void pu_prefix_key(char *out, size_t cap, const char *type, const char *name)
{
    snprintf(out, cap, "prefix-match:%s/%s", type, name);
}

int pu_bind_producer(sched_plugin *p, const char *param, const char *name, const char *dflt, const char *what,
                     sched_plugin **producer, const void **svc, kv_err *err)
{
    const char *want = name ? name : dflt;
    sched_plugin *q = sched_plugin_by_name(p->owner, want);
    const void *v = q && q->type->service ? q->type->service(q, what) : NULL;
    if (!q)
        return kv_err_set(err, KV_EINVAL,
                          "plugin '%s' (%s): %s '%s' names no plugin of this config (declare it under plugins:)",
                          p->name, p->type->type, name ? param : "default producer", want);
    if (!v)
        return kv_err_set(err, KV_EINVAL, "plugin '%s' (%s): %s '%s' is a %s, which produces no %s", p->name,
                          p->type->type, name ? param : "default producer", want, q->type->type, what);
    *producer = q;
    *svc = v;
    return KV_OK;
}

void pu_ignore(const sched_plugin *p, const sched_params *pp, const sched_env *env, const char *const *keys, size_t n,
               const char *why)
{
    for (size_t i = 0; i < n; i++) {
        const yt_node *v = yt_get(pp->node, keys[i]);
        if (!v)
            continue;
        pu_accept(v);
        sched_warn(env, "%s:%d:%d: plugin '%s' (%s): parameter '%s' is accepted and ignored: %s", yt_name(pp->doc),
                v->line, v->col, p->name, p->type->type, keys[i], why);
    }
}

int64_t pu_input_tokens(const sched_request *r)
{
    if (r->tokens && r->n_tokens)
        return (int64_t)r->n_tokens;
    return (int64_t)(r->prompt_len / 4);
}

int pu_profile_index(const sched_cycle *c, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(sched_cycle_profile_name(c, i), name) == 0)
            return (int)i;
    return -1;
}

size_t pu_pd_profiles(sched_plugin *p, sched_cycle *c, size_t n, const bool *done, size_t *next, size_t max)
{
    const pu_pd *pd = p->state;
    int d = pu_profile_index(c, n, pd->decode), f = pu_profile_index(c, n, pd->prefill);
    if (d < 0 || max == 0)
        return 0;
    if (!done[d]) {
        next[0] = (size_t)d;
        return 1;
    }
    const sched_result *dr = sched_cycle_result(c, (size_t)d);
    if (f < 0 || done[f] || !dr || !pd->needs(p->state, c, dr->targets[0]))
        return 0;
    next[0] = (size_t)f;
    return 1;
}

int pu_pd_primary(sched_plugin *p, sched_cycle *c, size_t n, kv_err *err)
{
    const pu_pd *pd = p->state;
    int d = pu_profile_index(c, n, pd->decode);
    if (d < 0)
        return kv_err_set(err, KV_ESTATE, "failed to find target pod: %s: no profile named '%s'", p->name, pd->decode);
    return d;
}
