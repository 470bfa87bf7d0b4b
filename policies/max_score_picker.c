/* max-score-picker: GIE's default picker. Shuffle, then a stable sort by score, highest
 * first, then the top maxNumOfEndpoints: equal scores are broken at random (the cycle's
 * seeded generator standing in for GIE's time-seeded PCG). */
#include "policy_util.h"

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

static size_t msp_pick(sched_plugin *p, sched_cycle *c, const sched_scored *cands, size_t n, sched_endpoint **out,
                       size_t max)
{
    size_t k = pu_picker_count(p, max, n);
    if (k == 0)
        return 0;
    if (k == 1) {
        /* Shuffle-then-stable-sort puts a uniformly chosen one of the top-scoring
         * candidates first; reservoir sampling over the ties chooses the same way in one
         * pass, drawing only when there is a tie. */
        size_t best = 0, ties = 1;
        double top = cands[0].score;   /* cands[best].score, in a register across the draws */
        for (size_t i = 1; i < n; i++) {
            if (cands[i].score > top) {
                best = i;
                top = cands[i].score;
                ties = 1;
            } else if (cands[i].score == top && pu_below(c, ++ties) == 0) {
                best = i;
            }
        }
        out[0] = cands[best].ep;
        return 1;
    }
    sched_scored *a = pu_cands_copy(c, cands, n);
    if (!a)
        return 0;
    pu_shuffle(c, a, n);
    msp_sort_desc(a, n);
    return pu_picked(a, k, out);
}

const sched_plugin_type max_score_picker_type = {
    .type = "max-score-picker",
    .kind = SCHED_PICKER,
    .init = pu_picker_init,
    .pick = msp_pick,
};
