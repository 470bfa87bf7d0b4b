/* sglang-cache-aware-picker: SGLang's cache-aware routing policy (docs/upstream/peer-routers.md §1;
 * sgl-project/sglang sgl-model-gateway/src/policies/cache_aware.rs), as a picker that
 * decides alone: a profile holds only this picker (scores from other plugins in the
 * profile are ignored).
 *
 * Decision, per request over the candidates:
 *  1. Imbalance gate: loads are the router's own in-flight counts (sched_endpoint.in_flight).
 *     Imbalanced when (max - min) > balanceAbsThreshold AND max > balanceRelThreshold x min:
 *     route to the least-loaded endpoint (first in candidate order, as Rust's min_by_key).
 *  2. Otherwise match_rate = matched / prompt length (characters, or tokens for requests
 *     that carry only token ids). match_rate > cacheThreshold: the best-matching endpoint
 *     (ties: lower in-flight, then candidate order); else the least-loaded endpoint (current
 *     SMG; older builds took the smallest tree).
 *  Either way the routed prompt is inserted into the chosen endpoint's tree (pre_request).
 *
 * Defaults are SGLang's command-line defaults, which is what a launched router runs:
 * cacheThreshold 0.3, balanceAbsThreshold 64, balanceRelThreshold 1.5,
 * evictionIntervalSecs 120, maxTreeSize 2^26 (characters). The Rust library's
 * CacheAwareConfig::default() differs (0.5, 32, 1.1, 30 s, 10000) and newer SMG evicts
 * every 60 s; neither is what `--policy cache_aware` gets.
 *
 * The tree, approximated: SGLang keeps a per-model radix tree of raw characters with a
 * per-tenant LRU. Here each endpoint's prompts are a chain of block hashes in the shared
 * prefix_index (blockSize characters a block, default 16, or blockSize/4 token ids; the
 * model name roots the chain, so models never share entries). A match is therefore
 * counted in whole blocks: up to blockSize-1 characters shorter than SGLang's, and a
 * partial trailing block never matches. Insertion touches a chain leaf first and root
 * last, so the LRU end is always a leaf, and every evictionIntervalSecs (sim or wall time,
 * checked at each pick) an endpoint holding more than maxTreeSize characters' worth of
 * blocks loses its least recently used leaves, as SGLang's evict_tenant_by_size does. */
#include <stdint.h>
#include <stdlib.h>

#include "policy_util.h"
#include "prefix_index.h"
#include "scheduler.h"

typedef struct {
    double cache_threshold;
    int64_t abs_threshold;
    double rel_threshold;
    double eviction_interval;
    size_t max_tree_blocks;  /* maxTreeSize in blocks */
    uint32_t block_chars;
    prefix_index *ix;
    sched_env env;
    bool evict_started;
    double last_evict;
} sca;

static int sca_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    double thr = 0.3, rel = 1.5, interval = 120;
    int64_t abs_thr = 64, max_tree = (int64_t)1 << 26, bs = 16;
    if (pu_double(p, pp, pp->node, NULL, "cacheThreshold", 0, 1, &thr, err) ||
        pu_int(p, pp, pp->node, NULL, "balanceAbsThreshold", 0, INT32_MAX, &abs_thr, err) ||
        pu_double(p, pp, pp->node, NULL, "balanceRelThreshold", 0, 1e9, &rel, err) ||
        pu_double(p, pp, pp->node, NULL, "evictionIntervalSecs", 0, 1e9, &interval, err) ||
        pu_int(p, pp, pp->node, NULL, "maxTreeSize", 1, INT64_MAX / 2, &max_tree, err) ||
        pu_int(p, pp, pp->node, NULL, "blockSize", 4, 1 << 16, &bs, err))
        return KV_EINVAL;
    sca *s = calloc(1, sizeof *s);
    if (!s || !(s->ix = prefix_index_new())) {
        free(s);
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    }
    s->cache_threshold = thr;
    s->abs_threshold = abs_thr;
    s->rel_threshold = rel;
    s->eviction_interval = interval;
    s->block_chars = (uint32_t)bs;
    s->max_tree_blocks = (size_t)(max_tree / bs);
    s->env = *env;
    p->state = s;
    return KV_OK;
}

static void sca_fini(sched_plugin *p)
{
    sca *s = p->state;
    if (!s)
        return;
    prefix_index_free(s->ix);
    free(s);
    p->state = NULL;
}

static void sca_maybe_evict(sca *s, double now)
{
    if (s->eviction_interval <= 0)
        return;
    if (!s->evict_started) {
        s->evict_started = true;
        s->last_evict = now;
        return;
    }
    if (now - s->last_evict < s->eviction_interval)
        return;
    s->last_evict = now;
    for (uint32_t slot = 0; slot < prefix_index_slots(s->ix); slot++)
        prefix_index_trim(s->ix, (int)slot, s->max_tree_blocks);
}

/* The least-loaded candidate, first among equals. */
static size_t sca_min_load(const sched_scored *cands, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (cands[i].ep->in_flight < cands[best].ep->in_flight)
            best = i;
    return best;
}

static size_t sca_pick(sched_plugin *p, sched_cycle *c, const sched_scored *cands, size_t n, sched_endpoint **out,
                       size_t max)
{
    sca *s = p->state;
    if (n == 0 || max == 0)
        return 0;
    sca_maybe_evict(s, sched_cycle_now(c));
    int lo = cands[0].ep->in_flight, hi = lo;
    for (size_t i = 1; i < n; i++) {
        if (cands[i].ep->in_flight < lo)
            lo = cands[i].ep->in_flight;
        if (cands[i].ep->in_flight > hi)
            hi = cands[i].ep->in_flight;
    }
    size_t min_idx = sca_min_load(cands, n);
    bool imbalanced = (int64_t)hi - lo > s->abs_threshold && (double)hi > s->rel_threshold * (double)lo;
    out[0] = cands[min_idx].ep;
    if (imbalanced)
        return 1;

    const sched_request *r = sched_cycle_request(c);
    size_t units = 0;
    prefix_index_hash(r, s->block_chars, SIZE_MAX, NULL, 0, &units);
    uint32_t *run;
    if (!prefix_index_match_cycle(s->ix, c, s->block_chars, SIZE_MAX, NULL, &run))
        return 1;
    size_t best = SIZE_MAX;
    uint32_t best_run = 0;
    for (size_t i = 0; i < n; i++) {
        int slot = prefix_index_find(s->ix, cands[i].ep->id);
        uint32_t m = slot >= 0 ? run[slot] : 0;
        if (m > best_run || (m == best_run && m > 0 && cands[i].ep->in_flight < cands[best].ep->in_flight)) {
            best = i;
            best_run = m;
        }
    }
    double matched = (double)best_run * prefix_index_block_units(r, s->block_chars);
    double rate = matched / (double)units;
    if (best != SIZE_MAX && rate > s->cache_threshold)
        out[0] = cands[best].ep;
    return 1;
}

static void sca_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    sca *s = p->state;
    if (n == 0)
        return;
    /* root last: the LRU end stays a leaf, as SGLang evicts leaves */
    prefix_index_learn(s->ix, r, s->block_chars, SIZE_MAX, targets[0]->id, SIZE_MAX, sched_env_now(&s->env), true);
}

const sched_plugin_type sglang_cache_aware_picker_type = {
    .type = "sglang-cache-aware-picker",
    .kind = SCHED_PICKER,
    .reads_in_flight = true,
    .init = sca_init,
    .fini = sca_fini,
    .pick = sca_pick,
    .pre_request = sca_pre_request,
};
