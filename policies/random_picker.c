/* random-picker (GIE): ignores scores; shuffles the candidates and takes the first
 * maxNumOfEndpoints. */
#include "policy_util.h"

static size_t rp_pick(sched_plugin *p, sched_cycle *c, const sched_scored *cands, size_t n, sched_endpoint **out,
                      size_t max)
{
    size_t k = pu_picker_count(p, max, n);
    sched_scored *a = pu_cands_copy(c, cands, n);
    if (!a)
        return 0;
    pu_shuffle(c, a, n);
    return pu_picked(a, k, out);
}

const sched_plugin_type random_picker_type = {
    .type = "random-picker",
    .kind = SCHED_PICKER,
    .init = pu_picker_init,
    .pick = rp_pick,
};
