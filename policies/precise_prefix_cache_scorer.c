/* precise-prefix-cache-scorer (llm-d-inference-scheduler v0.5-v0.8): scores each endpoint
 * by the longest prefix of the request's blocks it holds according to vLLM's own KV
 * events. The index, its parameters and the "kvsource" service are precise_index's
 * (shared with precise-prefix-cache-producer); this file adds the score.
 *
 * Parameters beyond precise_index's: normalization (kvroute: "matched-total" |
 * "minmax"); speculativeIndexing is accepted with a warning (this scorer never had it; the
 * producer has).
 *
 * Raw score: kvindex_lookup's tier-weighted count of leading blocks (gpu 1.0, cpu 0.8 by
 * default). Normalisation, parameter `normalization`:
 *   "matched-total" (default): raw / number of request blocks, as llm-d-router after
 *       PR #1107. A pod holding 1 of 500 blocks scores 0.002, not 1.0.
 *   "minmax": llm-d v0.5.1. Min-max over the map of pods that matched at least one block;
 *       if min == max every pod in the map gets 1.0; pods not in the map get 0. A request
 *       with no full block, or a cold cache, leaves the map empty (all 0, as in the guide's
 *       first-request log).
 * matched-total is the default because min-max discards how much matched: one matching
 * block on one pod is worth the full prefix weight (weight 3 in the guide), enough to
 * outvote both load scorers together and pile a cold workload onto whichever pod cached a
 * shared system prompt first (docs/upstream/epp.md §7 issue 4; inference-sim issue #1007).
 *
 * Publishes the per-endpoint matched blocks for no-hit-lru (policy_util.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"
#include "precise_index.h"
#include "precise_prefix_cache_scorer.h"

enum { NORM_MATCHED_TOTAL, NORM_MINMAX };

typedef struct pps_state {
    precise_index *ix;
    int norm;
    char info_key[PU_PREFIX_KEY_MAX];
} pps_state;

static void pps_fini(sched_plugin *p)
{
    pps_state *st = p->state;
    if (!st)
        return;
    precise_index_free(st->ix);
    free(st);
    p->state = NULL;
}

static int pps_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    pps_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    p->state = st;
    const char *norm = "matched-total";
    int rc = (st->ix = precise_index_new(p, pp, env, err)) ? KV_OK : (err ? err->code : KV_ENOMEM);
    if (!rc)
        rc = pu_string(p, pp, pp->node, NULL, "normalization", &norm, err);
    if (!rc) {
        const yt_node *spec = yt_get(pp->node, "speculativeIndexing");
        if (spec)
            sched_warn(env,
                    "%s:%d:%d: plugin '%s': speculativeIndexing is not a parameter of precise-prefix-cache-scorer; "
                    "ignored (precise-prefix-cache-producer has it)",
                    yt_name(pp->doc), spec->line, spec->col, p->name);
        if (strcmp(norm, "matched-total") == 0)
            st->norm = NORM_MATCHED_TOTAL;
        else if (strcmp(norm, "minmax") == 0)
            st->norm = NORM_MINMAX;
        else
            rc = pu_error(p, pp, yt_get(pp->node, "normalization"), "normalization", err,
                          "unknown '%s' (expected matched-total or minmax)", norm);
    }
    if (rc) {
        pps_fini(p);
        return rc;
    }
    pu_prefix_key(st->info_key, sizeof st->info_key, p->type->type, p->name);
    return KV_OK;
}

static void pps_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    pps_state *st = p->state;
    uint32_t *matched = sched_cycle_alloc(c, (n ? n : 1) * sizeof *matched);
    pu_prefix_info *info = sched_cycle_alloc(c, sizeof *info);
    if (!matched || !info)
        return;
    size_t nk = precise_index_match(st->ix, c, eps, n, matched, scores);
    double lo = 0, hi = 0;
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!matched[i])
            continue;
        lo = any && lo < scores[i] ? lo : scores[i];
        hi = any && hi > scores[i] ? hi : scores[i];
        any = true;
    }
    /* any: some endpoint matched; with random prompts none ever does */
    for (size_t i = 0; any && i < n; i++) {
        if (!matched[i])
            continue;
        if (st->norm == NORM_MATCHED_TOTAL)
            scores[i] /= (double)nk;
        else
            scores[i] = hi == lo ? 1.0 : (scores[i] - lo) / (hi - lo);
    }
    *info = (pu_prefix_info){.total_blocks = nk, .n = n, .eps = eps, .matched = matched};
    sched_cycle_put(c, st->info_key, info);
}

static void *pps_service(sched_plugin *p, const char *what)
{
    pps_state *st = p->state;
    return strcmp(what, PPS_KVSOURCE_SERVICE) == 0 ? precise_index_source(st->ix) : NULL;
}

/* Every plugin owning a precise_index answers the kvsource service: this scorer and
 * precise-prefix-cache-producer. */
size_t pps_kvsources(const sched *s, sched_kvsource **out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < sched_plugin_count(s); i++) {
        sched_plugin *p = (sched_plugin *)sched_plugin_at(s, i);   /* the service only reads its state */
        void *src = p->type->service ? p->type->service(p, PPS_KVSOURCE_SERVICE) : NULL;
        if (!src)
            continue;
        if (k < max)
            out[k] = src;
        k++;
    }
    return k;
}

static void pps_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const pps_state *st = p->state;
    int n = snprintf(buf, cap, "normalization: %s\n", st->norm == NORM_MINMAX ? "minmax" : "matched-total");
    if (n > 0 && (size_t)n < cap)
        precise_index_describe(st->ix, buf + n, cap - (size_t)n);
}

const sched_plugin_type precise_prefix_cache_scorer_type = {
    .type = "precise-prefix-cache-scorer",
    .kind = SCHED_SCORER,
    .init = pps_init,
    .fini = pps_fini,
    .score = pps_score,
    .service = pps_service,
    .describe = pps_describe,
};
