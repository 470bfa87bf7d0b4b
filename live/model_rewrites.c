/* model_rewrites: InferenceModelRewrite rules -> target model (see model_rewrites.h).
 * Each object is one heap block (its rules, targets, matches and strings laid out after
 * it), kept in a small array under a mutex: pools have a handful of rewrites, and a
 * request asks once, so a scan beats an index that every update would have to rebuild. */
#include "model_rewrites.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "manifests.h"
#include "grow.h"
#include "mix64.h"

struct model_rewrites {
    pthread_mutex_t mu;
    model_rewrite **v;            /* each a block from copy_rewrite */
    size_t n, cap;
    model_rewrites_rand rnd;
    void *rnd_ctx;
    uint64_t state;               /* the internal generator's (splitmix64) */
};

static uint64_t splitmix64(void *ctx) { return mix64_next(ctx); }

model_rewrites *model_rewrites_new(model_rewrites_rand rnd, void *rnd_ctx, kv_err *err)
{
    model_rewrites *t = calloc(1, sizeof *t);
    if (!t) {
        kv_err_set(err, KV_ENOMEM, "model rewrites: out of memory");
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t->state = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + ((uint64_t)getpid() << 40);
    t->rnd = rnd ? rnd : splitmix64;
    t->rnd_ctx = rnd ? rnd_ctx : &t->state;
    return t;
}

static void rewrites_free(model_rewrite **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void model_rewrites_free(model_rewrites *t)
{
    if (!t)
        return;
    rewrites_free(t->v, t->n);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* ---- one object as one block ---------------------------------------------------------------- */

typedef struct arena {
    char *p;                      /* NULL while sizing */
    size_t off;
} arena;

static void *take(arena *a, size_t size, size_t align)
{
    a->off = (a->off + align - 1) / align * align;
    void *r = a->p ? a->p + a->off : NULL;
    a->off += size;
    return r;
}

static const char *take_str(arena *a, const char *s)
{
    size_t len = strlen(s) + 1;
    char *r = take(a, len, 1);
    if (r)
        memcpy(r, s, len);
    return r;
}

/* Lays rw out in a (sizing only while a->p is NULL); returns the copy. */
static model_rewrite *lay_out(arena *a, const model_rewrite *rw)
{
    model_rewrite *c = take(a, sizeof *c, alignof(model_rewrite));
    model_rewrite_rule *rules = take(a, rw->n_rules * sizeof *rules, alignof(model_rewrite_rule));
    for (size_t i = 0; i < rw->n_rules; i++) {
        const model_rewrite_rule *r = &rw->rules[i];
        model_rewrite_target *tg = take(a, r->n_targets * sizeof *tg, alignof(model_rewrite_target));
        const char **models = take(a, r->n_models * sizeof *models, alignof(const char *));
        for (size_t j = 0; j < r->n_targets; j++) {
            const char *m = take_str(a, r->targets[j].model);
            if (tg)
                tg[j] = (model_rewrite_target){m, r->targets[j].weight};
        }
        for (size_t j = 0; j < r->n_models; j++) {
            const char *m = take_str(a, r->models[j]);
            if (models)
                models[j] = m;
        }
        if (rules)
            rules[i] = (model_rewrite_rule){models, r->n_models, tg, r->n_targets};
    }
    const char *name = take_str(a, rw->name);
    if (c)
        *c = (model_rewrite){name, rw->created, rules, rw->n_rules};
    return c;
}

static model_rewrite *copy_rewrite(const model_rewrite *rw)
{
    arena a = {0};
    lay_out(&a, rw);
    if (!(a.p = malloc(a.off)))
        return NULL;
    a.off = 0;
    return lay_out(&a, rw);
}

/* ---- the table ------------------------------------------------------------------------------- */

static size_t find(const model_rewrites *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->v[i]->name, name))
            return i;
    return SIZE_MAX;
}

int model_rewrites_put(model_rewrites *t, const model_rewrite *rw, kv_err *err)
{
    model_rewrite *c = copy_rewrite(rw);
    if (!c)
        return kv_err_set(err, KV_ENOMEM, "model rewrites: out of memory");
    int rc = KV_OK;
    pthread_mutex_lock(&t->mu);
    size_t i = find(t, rw->name);
    if (i != SIZE_MAX) {
        free(t->v[i]);
        t->v[i] = c;
    } else {
        if (grow_array((void **)&t->v, &t->cap, t->n + 1, sizeof *t->v))
            t->v[t->n++] = c;
        else
            rc = KV_ENOMEM;
    }
    pthread_mutex_unlock(&t->mu);
    if (rc != KV_OK) {
        free(c);
        return kv_err_set(err, KV_ENOMEM, "model rewrites: out of memory");
    }
    return KV_OK;
}

void model_rewrites_remove(model_rewrites *t, const char *name)
{
    pthread_mutex_lock(&t->mu);
    size_t i = find(t, name);
    if (i != SIZE_MAX) {
        free(t->v[i]);
        t->v[i] = t->v[--t->n];
    }
    pthread_mutex_unlock(&t->mu);
}

int model_rewrites_sync(model_rewrites *t, const model_rewrite *v, size_t n, kv_err *err)
{
    model_rewrite **nv = calloc(n ? n : 1, sizeof *nv);
    if (!nv)
        return kv_err_set(err, KV_ENOMEM, "model rewrites: out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!(nv[i] = copy_rewrite(&v[i]))) {
            rewrites_free(nv, i);
            return kv_err_set(err, KV_ENOMEM, "model rewrites: out of memory");
        }
    }
    pthread_mutex_lock(&t->mu);
    model_rewrite **old = t->v;
    size_t old_n = t->n;
    t->v = nv, t->n = n, t->cap = n ? n : 1;
    pthread_mutex_unlock(&t->mu);
    rewrites_free(old, old_n);
    return KV_OK;
}

size_t model_rewrites_count(model_rewrites *t)
{
    pthread_mutex_lock(&t->mu);
    size_t n = t->n;
    pthread_mutex_unlock(&t->mu);
    return n;
}

static bool older(const model_rewrite *a, const model_rewrite *b)
{
    return !b || a->created < b->created || (a->created == b->created && strcmp(a->name, b->name) < 0);
}

static bool names(const model_rewrite_rule *r, const char *model)
{
    for (size_t i = 0; i < r->n_models; i++)
        if (!strcmp(r->models[i], model))
            return true;
    return false;
}

/* The winning rule: an exact match from the oldest object, else the oldest catch-all. */
static const model_rewrite_rule *rule_for(const model_rewrites *t, const char *model)
{
    for (int exact = 1; exact >= 0; exact--) {
        const model_rewrite *best = NULL;
        const model_rewrite_rule *rule = NULL;
        for (size_t i = 0; i < t->n; i++) {
            const model_rewrite *o = t->v[i];
            for (size_t j = 0; j < o->n_rules; j++) {
                const model_rewrite_rule *r = &o->rules[j];
                if ((exact ? names(r, model) : r->n_models == 0) && r->n_targets > 0) {
                    if (older(o, best))
                        best = o, rule = r;
                    break; /* within one object the first matching rule wins */
                }
            }
        }
        if (rule)
            return rule;
    }
    return NULL;
}

static const char *choose(model_rewrites *t, const model_rewrite_rule *r)
{
    uint64_t total = 0;
    for (size_t i = 0; i < r->n_targets; i++)
        total += r->targets[i].weight;
    uint64_t x = t->rnd(t->rnd_ctx);
    if (total == 0)
        return r->targets[x % r->n_targets].model;
    x %= total;
    for (size_t i = 0;; i++) {
        if (x < r->targets[i].weight)
            return r->targets[i].model;
        x -= r->targets[i].weight;
    }
}

int model_rewrites_pick(model_rewrites *t, const char *model, char **target, kv_err *err)
{
    *target = NULL;
    int rc = KV_OK;
    pthread_mutex_lock(&t->mu);
    const model_rewrite_rule *r = t->n ? rule_for(t, model ? model : "") : NULL;
    if (r && !(*target = strdup(choose(t, r))))
        rc = kv_err_set(err, KV_ENOMEM, "model rewrites: out of memory");
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* ---- creationTimestamp ------------------------------------------------------------------------ */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool digits(const char *s, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *out = *out * 10 + (s[i] - '0');
    }
    return true;
}

int model_rewrites_parse_time(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec, oh = 0, om = 0;
    if (strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) || s[13] != ':' ||
        !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return KV_EINVAL;
    const char *p = s + 19;
    if (*p == '.') /* sub-second digits do not change which object is older in practice */
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    int sign = 0;
    if ((*p == 'Z' || *p == 'z') && !p[1])
        sign = 0;
    else if ((*p == '+' || *p == '-') && digits(p + 1, 2, &oh) && p[3] == ':' && digits(p + 4, 2, &om) && !p[6])
        sign = *p == '+' ? 1 : -1;
    else
        return KV_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || oh > 23 || om > 59)
        return KV_EINVAL;
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60);
    return KV_OK;
}

/* ---- --model-rewrites ------------------------------------------------------------------------- */

typedef struct file_ctx {
    model_rewrites *t;
    int64_t seq;                  /* manifests without creationTimestamp, in file order */
} file_ctx;

/* A required non-empty string field. */
static int req_string(const yt_doc *d, const yt_node *map, const char *path, const char *key, const char **out,
                      kv_err *err)
{
    char field[200];
    snprintf(field, sizeof field, "%s.%s", path, key);
    const yt_node *n = yt_get(map, key);
    if (yt_is_null(n))
        return yt_error(d, n ? n : map, err, KV_EINVAL, "field '%s': required", field);
    return yt_string(d, n, field, out, err) == KV_OK ? KV_OK : KV_EINVAL;
}

static const yt_node *seq_field(const yt_doc *d, const yt_node *map, const char *field, const char *key,
                                bool required, int *rc, kv_err *err)
{
    const yt_node *n = yt_get(map, key);
    if (yt_is_null(n)) {
        if (required)
            *rc = yt_error(d, n ? n : map, err, KV_EINVAL, "field '%s': required", field);
        return NULL;
    }
    if (n->kind != YT_SEQ) {
        *rc = yt_error(d, n, err, KV_EINVAL, "field '%s': expected a list", field);
        return NULL;
    }
    return n;
}

static int load_rule(const yt_doc *d, const yt_node *rn, const char *path, model_rewrite_rule *r,
                     const char **models, model_rewrite_target *targets, kv_err *err)
{
    char field[200];
    int rc = KV_OK;
    if (rn->kind != YT_MAP)
        return yt_error(d, rn, err, KV_EINVAL, "field '%s': expected a map", path);
    snprintf(field, sizeof field, "%s.matches", path);
    const yt_node *ms = seq_field(d, rn, field, "matches", false, &rc, err);
    for (size_t i = 0; rc == KV_OK && ms && i < ms->n; i++) {
        snprintf(field, sizeof field, "%s.matches[%zu].model", path, i);
        const yt_node *m = yt_get(ms->items[i], "model"), *type = yt_get(m, "type");
        const char *how = NULL;
        char tfield[220];
        snprintf(tfield, sizeof tfield, "%s.type", field);
        if (!m || m->kind != YT_MAP)
            rc = yt_error(d, m ? m : ms->items[i], err, KV_EINVAL, "field '%s': required (a map)", field);
        else if (!yt_is_null(type) && yt_string(d, type, tfield, &how, err) != KV_OK)
            rc = KV_EINVAL;
        else if (how && strcmp(how, "Exact"))
            rc = yt_error(d, type, err, KV_EINVAL, "field '%s': '%s' is not supported (only Exact)", tfield, how);
        else
            rc = req_string(d, m, field, "value", &models[r->n_models++], err);
    }
    snprintf(field, sizeof field, "%s.targets", path);
    const yt_node *ts = rc == KV_OK ? seq_field(d, rn, field, "targets", true, &rc, err) : NULL;
    if (ts && ts->n == 0)
        rc = yt_error(d, ts, err, KV_EINVAL, "field '%s': needs at least one target", field);
    size_t weighted = 0;
    for (size_t i = 0; rc == KV_OK && ts && i < ts->n; i++) {
        snprintf(field, sizeof field, "%s.targets[%zu]", path, i);
        model_rewrite_target *tg = &targets[r->n_targets++];
        if (ts->items[i]->kind != YT_MAP)
            rc = yt_error(d, ts->items[i], err, KV_EINVAL, "field '%s': expected a map", field);
        else if (req_string(d, ts->items[i], field, "modelRewrite", &tg->model, err) != KV_OK ||
                 yt_opt_u32(d, ts->items[i], field, "weight", 1, 1000000, &tg->weight, err) != KV_OK)
            rc = KV_EINVAL;
        else
            weighted += tg->weight > 0;
    }
    /* GIE's API: "If a weight is set for any targetModel, it must be set for all". */
    if (rc == KV_OK && weighted && weighted < r->n_targets)
        rc = yt_error(d, ts, err, KV_EINVAL,
                      "field '%s.targets': weight is set on %zu of %zu targets; set it on all or none", path,
                      weighted, r->n_targets);
    r->models = models;
    r->targets = targets;
    return rc;
}

static int load_object(void *ctx, const yt_doc *d, const yt_node *obj, const char *what, kv_err *err)
{
    file_ctx *fc = ctx;
    model_rewrite rw = {0};
    if (manifest_name(d, obj, what, "InferenceModelRewrite", &rw.name, err) != KV_OK)
        return KV_EINVAL;
    char field[160];
    snprintf(field, sizeof field, "%s.metadata.creationTimestamp", what);
    const yt_node *ct = yt_get(yt_get(obj, "metadata"), "creationTimestamp");
    const char *cts;
    if (yt_is_null(ct))
        rw.created = INT64_MIN + fc->seq++;
    else if (yt_string(d, ct, field, &cts, err) != KV_OK)
        return KV_EINVAL;
    else if (model_rewrites_parse_time(cts, &rw.created) != KV_OK)
        return yt_error(d, ct, err, KV_EINVAL, "field '%s': '%s' is not an RFC 3339 time", field, cts);
    snprintf(field, sizeof field, "%s.spec", what);
    const yt_node *spec = yt_get(obj, "spec");
    if (!spec || spec->kind != YT_MAP)
        return yt_error(d, spec ? spec : obj, err, KV_EINVAL, "field '%s': required (a map)", field);
    snprintf(field, sizeof field, "%s.spec.rules", what);
    int rc = KV_OK;
    const yt_node *rules = seq_field(d, spec, field, "rules", true, &rc, err);
    if (!rules)
        return rc;
    size_t n_m = 0, n_t = 0;
    for (size_t i = 0; i < rules->n; i++) {
        const yt_node *ms = yt_get(rules->items[i], "matches"), *ts = yt_get(rules->items[i], "targets");
        n_m += ms && ms->kind == YT_SEQ ? ms->n : 0;
        n_t += ts && ts->kind == YT_SEQ ? ts->n : 0;
    }
    model_rewrite_rule *rv = calloc(rules->n + 1, sizeof *rv);
    const char **models = calloc(n_m + 1, sizeof *models);
    model_rewrite_target *targets = calloc(n_t + 1, sizeof *targets);
    if (!rv || !models || !targets)
        rc = kv_err_set(err, KV_ENOMEM, "--model-rewrites: out of memory");
    size_t m_off = 0, t_off = 0;
    for (size_t i = 0; rc == KV_OK && i < rules->n; i++) {
        snprintf(field, sizeof field, "%s.spec.rules[%zu]", what, i);
        rc = load_rule(d, rules->items[i], field, &rv[i], models + m_off, targets + t_off, err);
        m_off += rv[i].n_models, t_off += rv[i].n_targets;
    }
    rw.rules = rv, rw.n_rules = rules->n;
    if (rc == KV_OK)
        rc = model_rewrites_put(fc->t, &rw, err);
    free(rv);
    free(models);
    free(targets);
    return rc;
}

int model_rewrites_load(model_rewrites *t, const char *path, kv_err *err)
{
    file_ctx fc = {t, 0};
    return manifests_load(path, "--model-rewrites", "InferenceModelRewrite", load_object, &fc, err);
}

/* ---- API objects -------------------------------------------------------------------------------- */

model_rewrite *model_rewrites_from_json(const void *obj)
{
    const json_t *md = json_object_get(obj, "metadata"), *spec = json_object_get(obj, "spec");
    const json_t *rules = json_object_get(spec, "rules");
    model_rewrite rw = {.name = json_string_value(json_object_get(md, "name"))};
    if (!rw.name)
        return NULL;
    const char *ct = json_string_value(json_object_get(md, "creationTimestamp"));
    if (!ct || model_rewrites_parse_time(ct, &rw.created) != KV_OK)
        rw.created = 0;
    size_t n_m = 0, n_t = 0, i, j;
    const json_t *rule, *x;
    json_array_foreach(rules, i, rule) {
        n_m += json_array_size(json_object_get(rule, "matches"));
        n_t += json_array_size(json_object_get(rule, "targets"));
    }
    model_rewrite_rule *rv = calloc(json_array_size(rules) + 1, sizeof *rv);
    const char **mbase = calloc(n_m + 1, sizeof *mbase), **models = mbase;
    model_rewrite_target *tbase = calloc(n_t + 1, sizeof *tbase), *targets = tbase;
    model_rewrite *out = NULL;
    if (!rv || !mbase || !tbase)
        goto done;
    json_array_foreach(rules, i, rule) {
        model_rewrite_rule *r = &rv[rw.n_rules];
        const json_t *ms = json_object_get(rule, "matches");
        r->models = models, r->targets = targets;
        json_array_foreach(ms, j, x) {
            const json_t *m = json_object_get(x, "model");
            const char *type = json_string_value(json_object_get(m, "type"));
            const char *value = json_string_value(json_object_get(m, "value"));
            if (value && *value && (!type || !strcmp(type, "Exact")))
                models[r->n_models++] = value;
        }
        json_array_foreach(json_object_get(rule, "targets"), j, x) {
            const char *to = json_string_value(json_object_get(x, "modelRewrite"));
            json_int_t w = json_integer_value(json_object_get(x, "weight"));
            if (to && *to)
                targets[r->n_targets++] =
                    (model_rewrite_target){to, w < 0 ? 0 : w > 1000000 ? 1000000 : (uint32_t)w};
        }
        if (r->n_targets && (r->n_models || !json_array_size(ms))) {
            models += r->n_models, targets += r->n_targets;
            rw.n_rules++;
        } else {
            *r = (model_rewrite_rule){0};
        }
    }
    rw.rules = rv;
    out = copy_rewrite(&rw);
done:
    free(rv);
    free(mbase);
    free(tbase);
    return out;
}
