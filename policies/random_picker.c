/* random-picker (GIE): ignores scores; shuffles the candidates and takes the first
 * maxNumOfEndpoints. */
#include <stdint.h>

#include "policy_util.h"

static int rp_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    size_t max;
    if (pu_picker_max(p, pp, &max, err))
        return KV_EINVAL;
    p->state = (void *)(uintptr_t)max;
    return KV_OK;
}

static size_t rp_pick(sched_plugin *p, sched_cycle *c, sched_scored *cands, size_t n, sched_endpoint **out,
                      size_t max)
{
    size_t k = (size_t)(uintptr_t)p->state;
    k = k < max ? k : max;
    k = k < n ? k : n;
    pu_shuffle(c, cands, n);
    for (size_t i = 0; i < k; i++)
        out[i] = cands[i].ep;
    return k;
}

const sched_plugin_type random_picker_type = {
    .type = "random-picker",
    .kind = SCHED_PICKER,
    .init = rp_init,
    .pick = rp_pick,
};
