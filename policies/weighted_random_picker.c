/* weighted-random-picker (GIE): A-Res weighted sampling without replacement. Each
 * candidate draws key = U^(1/score), U uniform in (0,1); the largest keys win. A score of
 * 0 gets key 0 (never chosen ahead of a positive score); when every score is 0 the pick is
 * uniformly random, as GIE falls back to its random picker. */
#include <math.h>

#include "policy_util.h"

static size_t wrp_pick(sched_plugin *p, sched_cycle *c, const sched_scored *given, size_t n, sched_endpoint **out,
                       size_t max)
{
    size_t k = pu_picker_count(p, max, n);
    sched_scored *cands = pu_cands_copy(c, given, n);
    if (!cands)
        return 0;
    bool any = false;
    for (size_t i = 0; i < n; i++)
        any |= cands[i].score > 0;
    if (!any) {
        pu_shuffle(c, cands, n);
    } else {
        /* replace each score by its key, then select the k largest */
        for (size_t i = 0; i < n; i++) {
            double u = sched_cycle_rand01(c);
            if (u <= 0)
                u = 0x1.0p-53;
            cands[i].score = cands[i].score > 0 ? pow(u, 1.0 / cands[i].score) : 0;
        }
        for (size_t i = 0; i < k; i++) {
            size_t best = i;
            for (size_t j = i + 1; j < n; j++)
                if (cands[j].score > cands[best].score)
                    best = j;
            sched_scored t = cands[i];
            cands[i] = cands[best];
            cands[best] = t;
        }
    }
    return pu_picked(cands, k, out);
}

const sched_plugin_type weighted_random_picker_type = {
    .type = "weighted-random-picker",
    .kind = SCHED_PICKER,
    .init = pu_picker_init,
    .pick = wrp_pick,
};
