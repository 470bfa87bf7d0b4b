/* max-score-picker: GIE's default picker. Shuffle, then a stable sort by score, highest
 * first, then the top maxNumOfEndpoints: equal scores are broken at random (the cycle's
 * seeded generator standing in for GIE's time-seeded PCG). */
#include <stdlib.h>

#include "policy_util.h"

static int msp_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    size_t max;
    if (pu_picker_max(p, pp, &max, err))
        return KV_EINVAL;
    p->state = (void *)(uintptr_t)max;
    return KV_OK;
}

/* Insertion sort: stable and allocation-free; candidate lists are a few hundred at most. */
static void msp_sort_desc(sched_scored *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        sched_scored v = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1].score < v.score) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
}

static size_t msp_pick(sched_plugin *p, sched_cycle *c, sched_scored *cands, size_t n, sched_endpoint **out,
                       size_t max)
{
    size_t want = (size_t)(uintptr_t)p->state;
    if (want > max)
        want = max;
    if (n == 0)
        return 0;
    if (want == 1) {
        /* Shuffle-then-stable-sort puts a uniformly chosen one of the top-scoring
         * candidates first; reservoir sampling over the ties chooses the same way in one
         * pass, drawing only when there is a tie. */
        size_t best = 0, ties = 1;
        for (size_t i = 1; i < n; i++) {
            if (cands[i].score > cands[best].score) {
                best = i;
                ties = 1;
            } else if (cands[i].score == cands[best].score && pu_below(c, ++ties) == 0) {
                best = i;
            }
        }
        out[0] = cands[best].ep;
        return 1;
    }
    pu_shuffle(c, cands, n);
    msp_sort_desc(cands, n);
    size_t k = n < want ? n : want;
    for (size_t i = 0; i < k; i++)
        out[i] = cands[i].ep;
    return k;
}

const sched_plugin_type max_score_picker_type = {
    .type = "max-score-picker",
    .kind = SCHED_PICKER,
    .init = msp_init,
    .pick = msp_pick,
};
