/* scheduler: GIE's scheduling framework (see scheduler.h). Owns plugin instances built
 * from a config, runs profiles for a request, keeps the picker-side in-flight counts and
 * the cycle state plugins share.
 *
 * Per-call memory comes from a cycle arena kept across calls, so a warm scheduling call
 * does not touch malloc (the trace, which the caller owns, may grow). Randomness is one
 * splitmix64 stream per sched seeded from env.seed, so a run is a function of the seed and
 * the call order. */
#include "scheduler.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "arena.h"
#include "config.h"
#include "grow.h"
#include "idmap.h"
#include "mix64.h"

#define NO_PODS_MSG "no pods available for the given request"

/* The scores of a profile's metrics_only scorers under one metrics epoch
 * (sched_set_metrics_epoch), for the candidate list eps[0..n). */
typedef struct score_memo {
    uint64_t epoch;           /* 0: nothing kept */
    sched_endpoint **eps;
    size_t n, cap;            /* cap: the length of eps and of every sc[j] */
    double **sc;              /* per scorer of the profile: room for its scores (NULL: not metrics_only) */
    bool *have;               /* per scorer: sc[j] holds its scores of eps under epoch */
} score_memo;

/* A profile without scorers: its candidates are its list (the driver's, or what the filters
 * kept of it), each scored 0, the same from one decision to the next while that list is
 * (pickers do not write them), so they are built when the list changes instead of every
 * decision. */
typedef struct kept_cands {
    sched_endpoint **eps;     /* the list they were built from */
    sched_scored *cands;
    size_t n, cap;
} kept_cands;

typedef struct sched_profile {
    const char *name;
    sched_plugin **filters;
    size_t n_filters;
    sched_plugin **scorers;
    double *weights;
    size_t n_scorers;
    sched_plugin *picker;
    score_memo *memo;         /* NULL: no metrics_only scorer */
    kept_cands kept;          /* used only without scorers */
} sched_profile;

typedef struct cycle_keyset {
    blockkeys_algo algo;
    uint32_t block_size;
    uint64_t init;
    const char *model;
    const uint64_t *keys;
    size_t n;
} cycle_keyset;

struct sched_cycle {
    sched *s;
    const sched_request *r;
    double now;
    arena mem;                /* per-call memory (sched_cycle_alloc) */
    /* Both tables grow (kept across calls, so a warm call does not allocate); a put or an
     * arena block that cannot be had sets oom, and the call fails with KV_ENOMEM rather than
     * scoring on with a value silently missing. */
    cycle_keyset *keysets;
    size_t n_keysets, cap_keysets;
    struct cycle_kv {
        const char *key;
        void *value;
    } *kv;
    size_t n_kv, cap_kv;
    bool oom;
    /* per profile, valid during one sched_schedule */
    sched_result *results;
    int *rcs;                 /* 0 ok, 1 not run, < 0 failure */
    bool *done;
    const sched_scored **totals; /* the picker's candidates with their sums, for the trace */
    size_t *n_totals;
};

struct sched {
    sched_env env;
    sched_plugin *plugins;
    size_t n_plugins;
    sched_profile *profiles;
    size_t n_profiles;
    sched_plugin *handler;
    uint64_t rng;
    idmap in_flight;
    bool refresh_in_flight;            /* a plugin reads sched_endpoint.in_flight */
    uint64_t metrics_epoch;            /* sched_set_metrics_epoch; 0: scores are not reused */
    sched_cycle cycle;
    const sched_result *hook_result;   /* during sched_pre_request */
    sched_observer obs;                /* NULL: plugin calls are not timed */
    void *obs_ctx;
};

/* ---- views --------------------------------------------------------------------------- */

const sched_plugin_type *sched_registry_find(const sched_plugin_type *const *registry, const char *type)
{
    for (size_t i = 0; registry && registry[i]; i++)
        if (strcmp(registry[i]->type, type) == 0)
            return registry[i];
    return NULL;
}

double sched_env_now(const sched_env *env)
{
    return env->now ? env->now(env->clock_ctx) : 0;
}

void sched_warn(const sched_env *env, const char *fmt, ...)
{
    if (!env || !env->warn)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    env->warn(env->warn_ctx, msg);
}

const char *sched_label(const sched_endpoint *ep, const char *key)
{
    for (size_t i = 0; i < ep->n_labels; i++)
        if (strcmp(ep->labels[i].key, key) == 0)
            return ep->labels[i].value;
    return NULL;
}

const char *sched_header(const sched_request *r, const char *key)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].key, key) == 0)
            return r->headers[i].value;
    return NULL;
}

/* ---- cycle ----------------------------------------------------------------------------- */

const sched_request *sched_cycle_request(const sched_cycle *c) { return c->r; }
double sched_cycle_now(const sched_cycle *c) { return c->now; }
uint64_t sched_cycle_rand(sched_cycle *c) { return mix64_next(&c->s->rng); }
double sched_cycle_rand01(sched_cycle *c) { return (double)(sched_cycle_rand(c) >> 11) * 0x1.0p-53; }

void *sched_cycle_alloc(sched_cycle *c, size_t size)
{
    void *p = arena_alloc(&c->mem, size);
    if (!p)
        c->oom = true;
    return p;
}

static void cycle_reset(sched_cycle *c)
{
    arena_reset(&c->mem);
    c->n_keysets = 0;
    c->n_kv = 0;
    c->oom = false;
    c->r = NULL;
}

static void cycle_free(sched_cycle *c)
{
    arena_free(&c->mem);
    free(c->keysets);
    free(c->kv);
}

static const char *cycle_model(const sched_request *r)
{
    if (r->lora && r->lora[0])
        return r->lora;
    if (r->target_model && r->target_model[0])
        return r->target_model;
    return r->model ? r->model : "";
}

const uint64_t *sched_cycle_keys(sched_cycle *c, const blockkeys_ctx *kc, size_t *n)
{
    const sched_request *r = c->r;
    *n = 0;
    const char *model = cycle_model(r);
    for (size_t i = 0; i < c->n_keysets; i++) {
        cycle_keyset *k = &c->keysets[i];
        if (k->algo == kc->algo && k->block_size == kc->block_size && k->init == kc->init &&
            strcmp(k->model, model) == 0) {
            *n = k->n;
            return k->keys;
        }
    }
    const uint64_t *keys = NULL;
    size_t nk = 0;
    if (r->keys && r->keys_ctx && r->keys_ctx->algo == kc->algo && r->keys_ctx->block_size == kc->block_size &&
        r->keys_ctx->init == kc->init) {
        keys = r->keys;
        nk = r->n_keys;
    } else if (r->tokens && r->n_tokens >= kc->block_size) {
        size_t nb = r->n_tokens / kc->block_size;
        uint64_t *out = sched_cycle_alloc(c, nb * sizeof *out);
        if (!out)
            return NULL;
        nk = blockkeys_compute(kc, blockkeys_root(kc, model), r->tokens, r->n_tokens, NULL, 0, r->cache_salt, out,
                               nb);
        keys = out;
    }
    /* Without room the keys are still right, only hashed again by the next asker. */
    if (grow_array((void **)&c->keysets, &c->cap_keysets, c->n_keysets + 1, sizeof *c->keysets))
        c->keysets[c->n_keysets++] = (cycle_keyset){
            .algo = kc->algo, .block_size = kc->block_size, .init = kc->init, .model = model, .keys = keys, .n = nk};
    *n = nk;
    return keys;
}

void sched_cycle_put(sched_cycle *c, const char *key, void *value)
{
    for (size_t i = 0; i < c->n_kv; i++)
        if (strcmp(c->kv[i].key, key) == 0) {
            c->kv[i].value = value;
            return;
        }
    if (!grow_array((void **)&c->kv, &c->cap_kv, c->n_kv + 1, sizeof *c->kv)) {
        c->oom = true;
        return;
    }
    c->kv[c->n_kv++] = (struct cycle_kv){.key = key, .value = value};
}

void *sched_cycle_get(const sched_cycle *c, const char *key)
{
    for (size_t i = 0; i < c->n_kv; i++)
        if (strcmp(c->kv[i].key, key) == 0)
            return c->kv[i].value;
    return NULL;
}

const char *sched_cycle_profile_name(const sched_cycle *c, size_t profile)
{
    return profile < c->s->n_profiles ? c->s->profiles[profile].name : NULL;
}

const sched_result *sched_cycle_result(const sched_cycle *c, size_t profile)
{
    if (profile >= c->s->n_profiles || !c->rcs || c->rcs[profile] != 0)
        return NULL;
    return &c->results[profile];
}

/* ---- trace ------------------------------------------------------------------------------ */

void sched_trace_reset(sched_trace *t)
{
    t->n_scores = t->n_removed = t->n_totals = 0;
}

void sched_trace_free(sched_trace *t)
{
    free(t->scores);
    free(t->removed);
    free(t->totals);
    *t = (sched_trace){0};
}

/* ---- building ------------------------------------------------------------------------------ */

/* Warns about every parameter no plugin read, with its full path and position. */
static void warn_unused(const sched *s, const sched_plugin *p, const yt_doc *d, const yt_node *n, char *path,
                        size_t len, size_t cap)
{
    if (!n || n->kind == YT_SCALAR)
        return;
    for (size_t i = 0; i < n->n; i++) {
        size_t l = len;
        if (n->kind == YT_MAP)
            l += (size_t)snprintf(path + len, cap - len, "%s%s", len ? "." : "", n->keys[i]);
        else
            l += (size_t)snprintf(path + len, cap - len, "[%zu]", i);
        if (l >= cap)
            l = cap - 1;
        if (n->kind == YT_MAP && !n->keynodes[i]->used)
            sched_warn(&s->env, "%s:%d:%d: plugin '%s' (%s): unknown parameter '%s' ignored", yt_name(d),
                    n->keynodes[i]->line, n->keynodes[i]->col, p->name, p->type->type, path);
        else
            warn_unused(s, p, d, n->items[i], path, l, cap);
        path[len] = 0;
    }
}

static int build_profiles(sched *s, const epc_config *cfg, kv_err *err)
{
    s->profiles = calloc(cfg->n_profiles, sizeof *s->profiles);
    if (!s->profiles)
        return kv_err_set(err, KV_ENOMEM, "scheduler: out of memory");
    s->n_profiles = cfg->n_profiles;
    for (size_t i = 0; i < cfg->n_profiles; i++) {
        const epc_profile *ep = &cfg->profiles[i];
        sched_profile *sp = &s->profiles[i];
        sp->name = ep->name;
        sp->filters = calloc(ep->n_refs + 1, sizeof *sp->filters);
        sp->scorers = calloc(ep->n_refs + 1, sizeof *sp->scorers);
        sp->weights = calloc(ep->n_refs + 1, sizeof *sp->weights);
        if (!sp->filters || !sp->scorers || !sp->weights)
            return kv_err_set(err, KV_ENOMEM, "scheduler: out of memory");
        for (size_t j = 0; j < ep->n_refs; j++) {
            sched_plugin *p = &s->plugins[ep->refs[j].plugin];
            switch (p->type->kind) {
            case SCHED_FILTER: sp->filters[sp->n_filters++] = p; break;
            case SCHED_SCORER:
                sp->weights[sp->n_scorers] = ep->refs[j].weight;
                sp->scorers[sp->n_scorers++] = p;
                break;
            case SCHED_PICKER: sp->picker = p; break;
            case SCHED_REQUEST_CONTROL:
                /* llm-d's profiles skip a plugin that is no filter, scorer or picker (the
                 * precise guide lists its tokenizer there); said once, not refused */
                sched_warn(&s->env, "profile '%s': plugin '%s' (%s) is not a filter, scorer or picker; it has no "
                        "effect in a profile (it runs as a request hook)", sp->name, p->name, p->type->type);
                break;
            case SCHED_PROFILE_HANDLER: break; /* the config loader rejects these */
            }
        }
        if (!sp->picker)
            return kv_err_set(err, KV_EINVAL, "profile '%s' has no picker", sp->name);
        bool any = false;
        for (size_t j = 0; j < sp->n_scorers; j++)
            any |= sp->scorers[j]->type->metrics_only;
        if (any && (!(sp->memo = calloc(1, sizeof *sp->memo)) ||
                    !(sp->memo->sc = calloc(sp->n_scorers, sizeof *sp->memo->sc)) ||
                    !(sp->memo->have = calloc(sp->n_scorers, sizeof *sp->memo->have))))
            return kv_err_set(err, KV_ENOMEM, "scheduler: out of memory");
    }
    return KV_OK;
}

sched *sched_new(const epc_config *cfg, const sched_env *env, kv_err *err)
{
    sched *s = calloc(1, sizeof *s);
    if (!s) {
        kv_err_set(err, KV_ENOMEM, "scheduler: out of memory");
        return NULL;
    }
    if (env)
        s->env = *env;
    s->rng = s->env.seed;
    s->cycle.s = s;
    s->plugins = calloc(cfg->n_plugins ? cfg->n_plugins : 1, sizeof *s->plugins);
    if (!s->plugins) {
        kv_err_set(err, KV_ENOMEM, "scheduler: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        const epc_plugin *cp = &cfg->plugins[i];
        sched_plugin *p = &s->plugins[i];
        *p = (sched_plugin){.type = cp->impl, .name = cp->name, .owner = s};
        sched_params params = {.doc = cfg->doc, .node = cp->params};
        if (p->type->init && p->type->init(p, &params, &s->env, err))
            goto fail;
        s->n_plugins = i + 1;
        s->refresh_in_flight |= p->type->reads_in_flight;
        char path[512] = "";
        warn_unused(s, p, cfg->doc, cp->params, path, 0, sizeof path);
    }
    for (size_t i = 0; i < s->n_plugins; i++)
        if (s->plugins[i].type->bind && s->plugins[i].type->bind(&s->plugins[i], err))
            goto fail;
    s->handler = &s->plugins[cfg->handler];
    if (build_profiles(s, cfg, err))
        goto fail;
    size_t np = s->n_profiles;
    sched_cycle *c = &s->cycle;
    c->results = calloc(np, sizeof *c->results);
    c->rcs = calloc(np, sizeof *c->rcs);
    c->done = calloc(np, sizeof *c->done);
    c->totals = calloc(np, sizeof *c->totals);
    c->n_totals = calloc(np, sizeof *c->n_totals);
    if (!c->results || !c->rcs || !c->done || !c->totals || !c->n_totals) {
        kv_err_set(err, KV_ENOMEM, "scheduler: out of memory");
        goto fail;
    }
    return s;
fail:
    sched_free(s);
    return NULL;
}

void sched_free(sched *s)
{
    if (!s)
        return;
    for (size_t i = s->n_plugins; i-- > 0;)
        if (s->plugins[i].type->fini)
            s->plugins[i].type->fini(&s->plugins[i]);
    free(s->plugins);
    for (size_t i = 0; i < s->n_profiles; i++) {
        sched_profile *pf = &s->profiles[i];
        if (pf->memo) {
            for (size_t j = 0; pf->memo->sc && j < pf->n_scorers; j++)
                free(pf->memo->sc[j]);
            free(pf->memo->sc);
            free(pf->memo->have);
            free(pf->memo->eps);
            free(pf->memo);
        }
        free(pf->kept.eps);
        free(pf->kept.cands);
        free(pf->filters);
        free(pf->scorers);
        free(pf->weights);
    }
    free(s->profiles);
    sched_cycle *c = &s->cycle;
    free(c->results);
    free(c->rcs);
    free(c->done);
    free(c->totals);
    free(c->n_totals);
    cycle_free(c);
    idmap_free(&s->in_flight);
    free(s);
}

/* ---- observer -------------------------------------------------------------------------------- */

const char *sched_point_name(sched_point pt)
{
    static const char *const names[SCHED_POINT_COUNT] = {"ProfilePicker", "Filter", "Scorer", "Picker",
                                                         "ProcessProfilesResults"};
    return (unsigned)pt < SCHED_POINT_COUNT ? names[pt] : "Unknown";
}

void sched_set_metrics_epoch(sched *s, uint64_t epoch)
{
    s->metrics_epoch = epoch;
}

void sched_set_observer(sched *s, sched_observer fn, void *ctx)
{
    s->obs = fn;
    s->obs_ctx = ctx;
}

/* Runs call (a statement invoking plugin p); with an observer, timed on the driver's
 * clock and reported. The call is written twice so that the unobserved path costs one
 * branch and no clock read. */
#define OBSERVED(s, pt, p, call)                                                                   \
    do {                                                                                           \
        if (__builtin_expect((s)->obs != NULL, 0)) {                                               \
            double t0_ = sched_env_now(&(s)->env);                                                               \
            call;                                                                                  \
            (s)->obs((s)->obs_ctx, &(s)->cycle, (pt), (size_t)((p) - (s)->plugins), sched_env_now(&(s)->env) - t0_); \
        } else {                                                                                   \
            call;                                                                                  \
        }                                                                                          \
    } while (0)

/* ---- running -------------------------------------------------------------------------------- */

static int trace_removed(sched_trace *t, const char *profile, const sched_plugin *p, sched_endpoint **before,
                         size_t nb, sched_endpoint **after, size_t na)
{
    size_t j = 0;
    for (size_t i = 0; i < nb; i++) {
        if (j < na && after[j] == before[i]) {
            j++;
            continue;
        }
        if (!grow_array((void **)&t->removed, &t->cap_removed, t->n_removed + 1, sizeof *t->removed))
            return KV_ENOMEM;
        t->removed[t->n_removed++] = (sched_trace_filter){.profile = profile, .plugin = p, .ep = before[i]};
    }
    return KV_OK;
}

/* GIE's enforceScoreRange: a scorer's value clamped to [0, 1]; NaN (which GIE would pass
 * on) counts as 0. */
static inline double score_range(double v)
{
    v = v >= 0 ? v : 0;
    return v > 1 ? 1 : v;
}

/* tot[i] += score_range(sc[i]) * w, two candidates at a time where SSE2 is there: a
 * compare and branch per candidate was half of a decision's own time at 1,000 endpoints
 * and three scorers. Each sum takes the same additions in the same order as ever. MAXPD
 * gives its second operand for a NaN, as the range wants, and +0 where score_range keeps
 * -0: the same to the sum, which never holds -0 (it starts at +0, and x + -0 == x + +0
 * for every other x). */
static void weigh_in(double *restrict tot, const double *restrict sc, size_t k, double w)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128d zero = _mm_setzero_pd(), one = _mm_set1_pd(1), vw = _mm_set1_pd(w);
    for (; i + 2 <= k; i += 2) {
        __m128d v = _mm_min_pd(_mm_max_pd(_mm_loadu_pd(sc + i), zero), one);
        _mm_storeu_pd(tot + i, _mm_add_pd(_mm_loadu_pd(tot + i), _mm_mul_pd(v, vw)));
    }
#endif
    for (; i < k; i++)
        tot[i] += score_range(sc[i]) * w;
}

/* The profile's memo, made current for candidates eps[0..n) under the sched's metrics
 * epoch: kept as it is when both match what its scores were computed for, else emptied
 * (have[] all false: run_profile computes them again into sc[]). NULL: nothing to reuse
 * or keep (no metrics_only scorer, no epoch, or no memory), and the scores are computed
 * as ever. */
static score_memo *memo_for(const sched *s, const sched_profile *pf, sched_endpoint *const *eps, size_t n)
{
    score_memo *mm = pf->memo;
    if (!mm || !s->metrics_epoch)
        return NULL;
    if (mm->epoch == s->metrics_epoch && mm->n == n && memcmp(mm->eps, eps, n * sizeof *eps) == 0)
        return mm;
    mm->epoch = 0;
    memset(mm->have, 0, pf->n_scorers * sizeof *mm->have);
    if (n > mm->cap) {
        mm->cap = 0;   /* until every array has the new size */
        free(mm->eps);
        if (!(mm->eps = malloc(n * sizeof *mm->eps)))
            return NULL;
        for (size_t j = 0; j < pf->n_scorers; j++) {
            if (!pf->scorers[j]->type->metrics_only)
                continue;
            free(mm->sc[j]);
            if (!(mm->sc[j] = malloc(n * sizeof *mm->sc[j])))
                return NULL;
        }
        mm->cap = n;
    }
    memcpy(mm->eps, eps, n * sizeof *eps);
    mm->n = n;
    mm->epoch = s->metrics_epoch;
    return mm;
}

/* The zero-score candidates of eps[0..n), rebuilt only when the list differs from the
 * last one's; NULL when out of memory. */
static const sched_scored *kept_for(kept_cands *kc, sched_endpoint *const *eps, size_t n)
{
    if (kc->n == n && memcmp(kc->eps, eps, n * sizeof *eps) == 0)
        return kc->cands;
    if (n > kc->cap) {
        kc->n = kc->cap = 0;   /* until both arrays have the new size */
        free(kc->eps);
        free(kc->cands);
        kc->eps = malloc(n * sizeof *kc->eps);
        kc->cands = malloc(n * sizeof *kc->cands);
        if (!kc->eps || !kc->cands)
            return NULL;
        kc->cap = n;
    }
    memcpy(kc->eps, eps, n * sizeof *eps);
    for (size_t i = 0; i < n; i++)
        kc->cands[i] = (sched_scored){.ep = eps[i], .score = 0};
    kc->n = n;
    return kc->cands;
}

/* One profile, exactly as GIE's SchedulerProfile.Run: filters, weighted clamped scores,
 * picker. Returns 0, KV_ENOENDPOINTS, KV_ESTATE (picker chose nothing) or KV_ENOMEM.
 * A profile without filters reads the driver's list as it is, and one without scorers
 * gives every candidate 0 without summing, from a list kept between decisions: at 1,000
 * endpoints the copy, the sums' zeroing and the list's building were 15.8k of the 17.5k
 * instructions of a decision whose picker (a Kubernetes Service's) reads one candidate. */
static int run_profile(sched *s, size_t idx, sched_endpoint *const *eps, size_t n, sched_trace *t)
{
    sched_cycle *c = &s->cycle;
    sched_profile *pf = &s->profiles[idx];
    size_t k = n;
    if (pf->n_filters) {
        sched_endpoint **work = sched_cycle_alloc(c, n * sizeof *work);
        sched_endpoint **before = t ? sched_cycle_alloc(c, n * sizeof *before) : NULL;
        if (!work || (t && !before))
            return KV_ENOMEM;
        memcpy(work, eps, n * sizeof *work);
        for (size_t f = 0; f < pf->n_filters && k > 0; f++) {
            sched_plugin *p = pf->filters[f];
            if (t)
                memcpy(before, work, k * sizeof *work);
            size_t m;
            OBSERVED(s, SCHED_POINT_FILTER, p, m = p->type->filter(p, c, work, k));
            if (m > k)
                m = k;
            if (t && trace_removed(t, pf->name, p, before, k, work, m))
                return KV_ENOMEM;
            k = m;
        }
        if (k == 0)
            return KV_ENOENDPOINTS;
        eps = work;
    }
    const sched_scored *cands;
    if (pf->n_scorers == 0) {
        if (!(cands = kept_for(&pf->kept, eps, k)))
            return KV_ENOMEM;
    } else {
        sched_scored *sum = sched_cycle_alloc(c, k * sizeof *sum);
        double *scratch = sched_cycle_alloc(c, k * sizeof *scratch), *tot = sched_cycle_alloc(c, k * sizeof *tot);
        if (!sum || !scratch || !tot)
            return KV_ENOMEM;
        memset(tot, 0, k * sizeof *tot);
        score_memo *mm = memo_for(s, pf, eps, k);
        for (size_t j = 0; j < pf->n_scorers; j++) {
            sched_plugin *p = pf->scorers[j];
            double w = pf->weights[j];
            bool keep = mm && p->type->metrics_only;
            double *sc = keep ? mm->sc[j] : scratch;
            if (!keep || !mm->have[j]) {
                memset(sc, 0, k * sizeof *sc);
                OBSERVED(s, SCHED_POINT_SCORER, p, p->type->score(p, c, eps, k, sc));
                if (keep)
                    mm->have[j] = true;
            }
            if (t) {
                if (!grow_array((void **)&t->scores, &t->cap_scores, t->n_scores + k, sizeof *t->scores))
                    return KV_ENOMEM;
                for (size_t i = 0; i < k; i++)
                    t->scores[t->n_scores++] = (sched_trace_score){
                        .profile = pf->name, .plugin = p, .ep = eps[i], .score = score_range(sc[i]), .weight = w};
            }
            weigh_in(tot, sc, k, w);
        }
        for (size_t i = 0; i < k; i++)
            sum[i] = (sched_scored){.ep = eps[i], .score = tot[i]};
        cands = sum;
    }
    if (t) {
        c->totals[idx] = cands;
        c->n_totals[idx] = k;
    }
    sched_result *res = &c->results[idx];
    *res = (sched_result){.profile = pf->name};
    size_t got;
    OBSERVED(s, SCHED_POINT_PICKER, pf->picker,
             got = pf->picker->type->pick(pf->picker, c, cands, k, res->targets, SCHED_MAX_TARGETS));
    res->n_targets = got > SCHED_MAX_TARGETS ? SCHED_MAX_TARGETS : got;
    return res->n_targets ? KV_OK : KV_ESTATE;
}

/* The defaults of a handler without hooks: every profile once; the single result primary. */
static size_t default_profiles(size_t np, const bool *done, size_t *next, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < np && k < max; i++)
        if (!done[i])
            next[k++] = i;
    return k;
}

static int default_primary(const sched *s, kv_err *err)
{
    if (s->n_profiles != 1)
        return kv_err_set(err, KV_ESTATE,
                          "failed to find target pod: single profile handler is intended to be used with a single "
                          "profile, but %zu profiles were found",
                          s->n_profiles);
    return 0;
}

int sched_schedule(sched *s, const sched_request *r, sched_endpoint *const *eps, size_t n, sched_result *res,
                   sched_trace *trace, kv_err *err)
{
    sched_cycle *c = &s->cycle;
    cycle_reset(c);
    c->r = r;
    c->now = sched_env_now(&s->env);
    *res = (sched_result){0};
    if (trace)
        sched_trace_reset(trace);
    if (n == 0)
        return kv_err_set(err, KV_ENOENDPOINTS, NO_PODS_MSG);
    for (size_t i = 0; s->refresh_in_flight && i < n; i++)
        eps[i]->in_flight = (int)idmap_get(&s->in_flight, eps[i]->id, 0);
    size_t np = s->n_profiles;
    for (size_t i = 0; i < np; i++) {
        c->rcs[i] = 1;
        c->done[i] = false;
        c->totals[i] = NULL;
        c->n_totals[i] = 0;
    }
    size_t *next = sched_cycle_alloc(c, np * sizeof *next);
    if (!next)
        return kv_err_set(err, KV_ENOMEM, "scheduler: out of memory");
    sched_plugin *h = s->handler;
    /* Each round must run a profile not yet run, so at most np rounds. */
    for (size_t round = 0; round < np; round++) {
        size_t k;
        OBSERVED(s, SCHED_POINT_PROFILE_PICKER, h,
                 k = h->type->profiles ? h->type->profiles(h, c, np, c->done, next, np)
                                       : default_profiles(np, c->done, next, np));
        size_t ran = 0;
        for (size_t i = 0; i < k && i < np; i++) {
            size_t idx = next[i];
            if (idx >= np || c->done[idx])
                continue;
            c->done[idx] = true;
            c->rcs[idx] = run_profile(s, idx, eps, n, trace);
            if (c->rcs[idx] == KV_ENOMEM)
                return kv_err_set(err, KV_ENOMEM, "scheduler: out of memory");
            ran++;
        }
        if (!ran)
            break;
    }
    int primary;
    OBSERVED(s, SCHED_POINT_PROCESS_RESULTS, h,
             primary = h->type->primary ? h->type->primary(h, c, np, err) : default_primary(s, err));
    if (c->oom)
        return kv_err_set(err, KV_ENOMEM, "scheduler: out of memory (cycle state or scratch)");
    if (primary < 0)
        return primary;
    if ((size_t)primary >= np)
        return kv_err_set(err, KV_ESTATE, "failed to find target pod: handler '%s' chose profile %d of %zu", h->name,
                          primary, np);
    int rc = c->rcs[primary];
    if (rc == KV_ENOENDPOINTS)
        return kv_err_set(err, KV_ENOENDPOINTS, NO_PODS_MSG);
    if (rc == KV_ESTATE)
        return kv_err_set(err, KV_ESTATE, "failed to find target pod: profile '%s' picked no endpoint",
                          s->profiles[primary].name);
    if (rc != 0)
        return kv_err_set(err, KV_ESTATE, "failed to find target pod: profile '%s' did not run",
                          s->profiles[primary].name);
    *res = c->results[primary];
    for (size_t i = 0; i < np && res->n_others < SCHED_MAX_PROFILES; i++)
        if (i != (size_t)primary && c->rcs[i] == 0) {
            res->others[res->n_others].profile = c->results[i].profile;
            res->others[res->n_others++].target = c->results[i].targets[0];
        }
    if (trace && c->totals[primary]) {
        size_t k = c->n_totals[primary];
        if (!grow_array((void **)&trace->totals, &trace->cap_totals, k, sizeof *trace->totals))
            return kv_err_set(err, KV_ENOMEM, "scheduler: out of memory");
        memcpy(trace->totals, c->totals[primary], k * sizeof *trace->totals);
        trace->n_totals = k;
    }
    return KV_OK;
}

/* ---- hooks and lookups ------------------------------------------------------------------------ */

void sched_pre_request(sched *s, const sched_request *r, const sched_result *res)
{
    for (size_t i = 0; i < res->n_targets; i++) {
        int64_t *v = idmap_at(&s->in_flight, res->targets[i]->id);
        if (v)
            res->targets[i]->in_flight = (int)++*v;
    }
    s->hook_result = res;
    for (size_t i = 0; i < s->n_plugins; i++)
        if (s->plugins[i].type->pre_request)
            s->plugins[i].type->pre_request(&s->plugins[i], r, res->targets, res->n_targets);
    s->hook_result = NULL;
}

const sched_result *sched_pre_request_result(const sched *s) { return s->hook_result; }

void sched_response_complete(sched *s, const sched_request *r, sched_endpoint *target)
{
    if (target) {
        int64_t *v = idmap_at(&s->in_flight, target->id);
        if (v && *v > 0)
            --*v;
        if (v)
            target->in_flight = (int)*v;
    }
    for (size_t i = 0; i < s->n_plugins; i++)
        if (s->plugins[i].type->response_complete)
            s->plugins[i].type->response_complete(&s->plugins[i], r, target);
}

void sched_response_started(sched *s, const sched_request *r, sched_endpoint *target)
{
    for (size_t i = 0; i < s->n_plugins; i++)
        if (s->plugins[i].type->response_started)
            s->plugins[i].type->response_started(&s->plugins[i], r, target);
}

size_t sched_plugin_count(const sched *s) { return s->n_plugins; }
const sched_plugin *sched_plugin_at(const sched *s, size_t i) { return i < s->n_plugins ? &s->plugins[i] : NULL; }

sched_plugin *sched_plugin_by_name(const sched *s, const char *name)
{
    for (size_t i = 0; i < s->n_plugins; i++)
        if (strcmp(s->plugins[i].name, name) == 0)
            return &s->plugins[i];
    return NULL;
}

size_t sched_services(const sched *s, const char *what, void **out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n_plugins && k < max; i++) {
        sched_plugin *p = &s->plugins[i];
        void *v = p->type->service ? p->type->service(p, what) : NULL;
        if (v)
            out[k++] = v;
    }
    return k;
}
