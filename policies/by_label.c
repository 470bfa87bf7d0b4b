/* by-label (llm-d): keeps pods whose label `label` takes one of `validValues`; pods without
 * the label pass iff `allowsNoLabel`. Parameters: label (required), validValues (list of
 * strings; required unless allowsNoLabel), allowsNoLabel (default false). */
#include <stdlib.h>

#include "policy_util.h"

typedef struct bl_state {
    const char *label;
    const char **values;
    size_t n;
    bool allow_missing;
} bl_state;

static void bl_fini(sched_plugin *p)
{
    bl_state *st = p->state;
    if (st)
        free(st->values);
    free(st);
}

static int bl_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    bl_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    p->state = st;
    int rc = pu_string(p, pp, pp->node, NULL, "label", &st->label, err);
    if (!rc)
        rc = pu_bool(p, pp, pp->node, NULL, "allowsNoLabel", &st->allow_missing, err);
    const yt_node *vv = yt_get(pp->node, "validValues");
    if (!rc && !st->label)
        rc = pu_error(p, pp, pp->node, NULL, err, "missing 'label'");
    if (!rc && vv && !yt_is_null(vv)) {
        if (vv->kind != YT_SEQ)
            rc = pu_error(p, pp, vv, "validValues", err, "expected a list of strings");
        else if (!(st->values = calloc(vv->n + 1, sizeof *st->values)))
            rc = kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
        for (size_t i = 0; !rc && i < vv->n; i++, st->n++)
            if (vv->items[i]->kind != YT_SCALAR)
                rc = pu_error(p, pp, vv->items[i], "validValues", err, "expected a string");
            else
                st->values[i] = vv->items[i]->str;
    }
    if (!rc && st->n == 0 && !st->allow_missing)
        rc = pu_error(p, pp, pp->node, NULL, err, "validValues must not be empty when allowsNoLabel is false");
    if (rc) {
        bl_fini(p);
        p->state = NULL;
    }
    return rc;
}

static size_t bl_filter(sched_plugin *p, sched_cycle *c, sched_endpoint **eps, size_t n)
{
    const bl_state *st = p->state;
    return pu_filter_label(eps, n, st->label, st->values, st->n, st->allow_missing);
}

const sched_plugin_type by_label_type = {
    .type = "by-label",
    .kind = SCHED_FILTER,
    .init = bl_init,
    .fini = bl_fini,
    .filter = bl_filter,
};
