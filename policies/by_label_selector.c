/* by-label-selector (llm-d): keeps pods matching a Kubernetes LabelSelector given as the
 * parameters: matchLabels {k: v} and matchExpressions [{key, operator, values}] with
 * operators In, NotIn, Exists, DoesNotExist, all ANDed (Kubernetes semantics: NotIn also
 * matches a pod without the key; In/NotIn need values, Exists/DoesNotExist take none).
 * An empty selector matches every pod. label-selector-filter is its name since
 * llm-d-router v0.9, which deprecates by-label-selector (removal planned in v0.11); both
 * names load, the old one with that warning. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"

typedef enum { OP_IN, OP_NOT_IN, OP_EXISTS, OP_NOT_EXISTS } sel_op;

typedef struct sel_req {
    const char *key;
    sel_op op;
    const char **values;
    size_t n;
} sel_req;

typedef struct sel_state {
    sel_req *reqs;
    size_t n;
} sel_state;

static void sel_fini(sched_plugin *p)
{
    sel_state *st = p->state;
    if (!st)
        return;
    for (size_t i = 0; i < st->n; i++)
        free(st->reqs[i].values);
    free(st->reqs);
    free(st);
    p->state = NULL;
}

static int sel_expr(sched_plugin *p, const sched_params *pp, const yt_node *e, size_t idx, sel_req *r, kv_err *err)
{
    char path[64];
    snprintf(path, sizeof path, "matchExpressions[%zu]", idx);
    if (e->kind != YT_MAP)
        return pu_error(p, pp, e, path, err, "expected {key, operator, values}");
    const char *op = NULL;
    if (pu_string(p, pp, e, path, "key", &r->key, err) || pu_string(p, pp, e, path, "operator", &op, err))
        return KV_EINVAL;
    if (!r->key || !op)
        return pu_error(p, pp, e, path, err, "needs 'key' and 'operator'");
    static const char *const ops[] = {"In", "NotIn", "Exists", "DoesNotExist"};
    size_t o = 0;
    while (o < 4 && strcmp(op, ops[o]) != 0)
        o++;
    if (o == 4)
        return pu_error(p, pp, yt_get(e, "operator"), path, err,
                        "unknown operator '%s' (expected In, NotIn, Exists or DoesNotExist)", op);
    r->op = (sel_op)o;
    const yt_node *vals = yt_get(e, "values");
    size_t nv = vals && vals->kind == YT_SEQ ? vals->n : 0;
    if (vals && !yt_is_null(vals) && vals->kind != YT_SEQ)
        return pu_error(p, pp, vals, path, err, "'values' must be a list");
    if ((r->op == OP_IN || r->op == OP_NOT_IN) && nv == 0)
        return pu_error(p, pp, e, path, err, "operator %s needs a non-empty 'values'", op);
    if ((r->op == OP_EXISTS || r->op == OP_NOT_EXISTS) && nv > 0)
        return pu_error(p, pp, vals, path, err, "operator %s takes no 'values'", op);
    r->values = calloc(nv + 1, sizeof *r->values);
    if (!r->values)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    for (size_t i = 0; i < nv; i++, r->n++) {
        if (vals->items[i]->kind != YT_SCALAR)
            return pu_error(p, pp, vals->items[i], path, err, "values must be strings");
        r->values[i] = vals->items[i]->str;
    }
    return KV_OK;
}

static int sel_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    sel_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    p->state = st;
    int rc = KV_OK;
    const yt_node *ml = pu_map(p, pp, pp->node, NULL, "matchLabels", &rc, err);
    const yt_node *me = rc ? NULL : yt_get(pp->node, "matchExpressions");
    if (!rc && me && !yt_is_null(me) && me->kind != YT_SEQ)
        rc = pu_error(p, pp, me, "matchExpressions", err, "expected a list");
    size_t nml = ml ? ml->n : 0, nme = me && me->kind == YT_SEQ ? me->n : 0;
    if (!rc && !(st->reqs = calloc(nml + nme + 1, sizeof *st->reqs)))
        rc = kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    for (size_t i = 0; !rc && i < nml; i++) {
        sel_req *r = &st->reqs[st->n++];
        r->key = ml->keys[i];
        r->op = OP_IN;
        r->values = calloc(1, sizeof *r->values);
        if (!r->values)
            rc = kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
        else if (ml->items[i]->kind != YT_SCALAR)
            rc = pu_error(p, pp, ml->items[i], "matchLabels", err, "label values must be strings");
        else
            r->values[r->n++] = ml->items[i]->str;
    }
    for (size_t i = 0; !rc && i < nme; i++)
        rc = sel_expr(p, pp, me->items[i], i, &st->reqs[st->n++], err);
    if (rc)
        sel_fini(p);
    else
        pu_accept(ml); /* its keys are label names, not parameters */
    return rc;
}

static bool sel_match(const sel_state *st, const sched_endpoint *ep)
{
    for (size_t i = 0; i < st->n; i++) {
        const sel_req *r = &st->reqs[i];
        bool ok;
        switch (r->op) {
        case OP_IN: ok = pu_label_in(ep, r->key, r->values, r->n, false); break;
        case OP_NOT_IN: ok = !pu_label_in(ep, r->key, r->values, r->n, false); break;
        case OP_EXISTS: ok = sched_label(ep, r->key) != NULL; break;
        default: ok = sched_label(ep, r->key) == NULL; break;
        }
        if (!ok)
            return false;
    }
    return true;
}

static size_t sel_filter(sched_plugin *p, sched_cycle *c, sched_endpoint **eps, size_t n)
{
    const sel_state *st = p->state;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (sel_match(st, eps[i]))
            eps[k++] = eps[i];
    return k;
}

static int sel_init_deprecated(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    sched_warn(env, "%s: plugin '%s': type 'by-label-selector' is deprecated since llm-d-router v0.9 (removal planned "
               "in v0.11); use 'label-selector-filter'", yt_name(pp->doc), p->name);
    return sel_init(p, pp, env, err);
}

const sched_plugin_type by_label_selector_type = {
    .type = "by-label-selector",
    .kind = SCHED_FILTER,
    .init = sel_init_deprecated,
    .fini = sel_fini,
    .filter = sel_filter,
};

const sched_plugin_type label_selector_filter_type = {
    .type = "label-selector-filter",
    .kind = SCHED_FILTER,
    .init = sel_init,
    .fini = sel_fini,
    .filter = sel_filter,
};
