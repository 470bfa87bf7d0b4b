/* round-robin-picker: what a plain Kubernetes Service does (kube-proxy/Envoy round robin,
 * blind to load and cache), so users can compare llm-d against "no EPP". It cycles over
 * the candidates in the order the driver lists them, ignoring scores; deterministic. */
#include <stdlib.h>

#include "policy_util.h"

typedef struct rr_state {
    size_t max;
    uint64_t next;
} rr_state;

static int rr_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    rr_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    if (pu_picker_max(p, pp, &st->max, err)) {
        free(st);
        return KV_EINVAL;
    }
    p->state = st;
    return KV_OK;
}

static void rr_fini(sched_plugin *p) { free(p->state); }

static size_t rr_pick(sched_plugin *p, sched_cycle *c, const sched_scored *cands, size_t n, sched_endpoint **out,
                      size_t max)
{
    rr_state *st = p->state;
    if (!n)
        return 0;
    size_t k = st->max < max ? st->max : max;
    if (k > n)
        k = n;
    size_t start = (size_t)(st->next % n);
    for (size_t i = 0; i < k; i++)
        out[i] = cands[(start + i) % n].ep;
    st->next++;
    return k;
}

const sched_plugin_type round_robin_picker_type = {
    .type = "round-robin-picker",
    .kind = SCHED_PICKER,
    .init = rr_init,
    .fini = rr_fini,
    .pick = rr_pick,
};
