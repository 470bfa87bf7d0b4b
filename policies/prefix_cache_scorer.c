/* prefix-cache-scorer: GIE's approximate prefix-cache scorer (docs/upstream/epp.md §3; GIE
 * v1.3.1 `multi/prefix/plugin.go`, `indexer.go`). It never sees the engines' caches: it
 * remembers which endpoint each request was routed to and scores endpoints by how much
 * of the new prompt they were sent before.
 *
 * Parameters (GIE defaults): autoTune true, blockSize 64 (characters),
 * maxPrefixBlocksToMatch 256, lruCapacityPerServer 31250 (blocks).
 * Score = matched blocks / request blocks, matching per GIE (prefix_index_match: walk
 * the chained hashes, every holder of a hash gets +1, stop at the first hash nobody
 * holds); 0 for a request shorter than one block.
 * autoTune: the block size becomes the endpoint's vLLM block_size x 4 characters, from
 * the first candidate whose metrics report it; an endpoint's LRU capacity becomes its
 * num_gpu_blocks when known at the endpoint's first insert (GIE sizes the LRU once).
 * Simulator requests carry token ids and no text: their ids are hashed with blockSize/4
 * tokens a block (prefix_index.h), so autoTune makes a block exactly one vLLM block.
 *
 * Differences from GIE, deliberate: PreRequest inserts synchronously (GIE uses a
 * goroutine), so simulated runs are deterministic; only the primary result's first target
 * is inserted (GIE also inserts for the pod of a profile named "prefill"; not done here,
 * though sched_pre_request_result now offers that pick); endpoints are never dropped from the index (GIE
 * sweeps pods gone from the datastore every 2 minutes), their LRU bound still holds.
 * The match is published for no-hit-lru-scorer under pu_prefix_key(type, name). */
#include <stdlib.h>

#include "policy_util.h"
#include "prefix_index.h"
#include "scheduler.h"

#define AVG_CHARS_PER_TOKEN 4

typedef struct {
    bool auto_tune;
    uint32_t block_chars;    /* configured blockSize */
    uint32_t tuned_chars;    /* autoTune: last block size derived from metrics; 0 = none */
    size_t max_blocks;
    size_t lru_cap;
    prefix_index *ix;
    sched_env env;
    char key[PU_PREFIX_KEY_MAX];
} pcs;

static int pcs_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    bool auto_tune = true;
    int64_t bs = 64, maxb = 256, lru = 31250;
    if (pu_bool(p, pp, pp->node, NULL, "autoTune", &auto_tune, err) ||
        pu_int(p, pp, pp->node, NULL, "blockSize", 1, 1 << 20, &bs, err) ||
        pu_int(p, pp, pp->node, NULL, "maxPrefixBlocksToMatch", 1, 1 << 20, &maxb, err) ||
        pu_int(p, pp, pp->node, NULL, "lruCapacityPerServer", 1, (int64_t)1 << 31, &lru, err))
        return KV_EINVAL;
    pcs *s = calloc(1, sizeof *s);
    if (!s || !(s->ix = prefix_index_new())) {
        free(s);
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    }
    s->auto_tune = auto_tune;
    s->block_chars = (uint32_t)bs;
    s->max_blocks = (size_t)maxb;
    s->lru_cap = (size_t)lru;
    s->env = *env;
    pu_prefix_key(s->key, sizeof s->key, p->type->type, p->name);
    p->state = s;
    return KV_OK;
}

static void pcs_fini(sched_plugin *p)
{
    pcs *s = p->state;
    if (!s)
        return;
    prefix_index_free(s->ix);
    free(s);
    p->state = NULL;
}

static uint32_t pcs_block_chars(const pcs *s)
{
    return s->tuned_chars ? s->tuned_chars : s->block_chars;
}

static void pcs_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    pcs *s = p->state;
    const sched_request *r = sched_cycle_request(c);
    for (size_t i = 0; i < n; i++)
        scores[i] = 0;
    if (s->auto_tune) {
        for (size_t i = 0; i < n; i++) {
            if (eps[i]->m.block_size) {
                s->tuned_chars = eps[i]->m.block_size * AVG_CHARS_PER_TOKEN;
                break;
            }
        }
    }
    size_t total = prefix_index_hash(r, pcs_block_chars(s), s->max_blocks, NULL, 0, NULL);
    pu_prefix_info *info = sched_cycle_alloc(c, sizeof *info);
    uint32_t *matched = sched_cycle_alloc(c, (n ? n : 1) * sizeof *matched);
    if (!info || !matched)
        return;
    for (size_t i = 0; i < n; i++)
        matched[i] = 0;
    *info = (pu_prefix_info){.total_blocks = total, .n = n, .eps = eps, .matched = matched};
    sched_cycle_put(c, s->key, info);
    uint32_t *counts;
    if (!prefix_index_match_cycle(s->ix, c, pcs_block_chars(s), s->max_blocks, &counts, NULL))
        return;
    for (size_t i = 0; i < n; i++) {
        int slot = prefix_index_find(s->ix, eps[i]->id);
        if (slot >= 0) {
            matched[i] = counts[slot];
            scores[i] = (double)counts[slot] / (double)total;
        }
    }
}

static void pcs_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    pcs *s = p->state;
    if (n == 0)
        return;
    const sched_endpoint *ep = targets[0];
    size_t cap = s->auto_tune && ep->m.num_gpu_blocks ? ep->m.num_gpu_blocks : s->lru_cap;
    /* learning is best effort: a failed insert is retried by the next request */
    prefix_index_learn(s->ix, r, pcs_block_chars(s), s->max_blocks, ep->id, cap, pu_now(&s->env), false);
}

const sched_plugin_type prefix_cache_scorer_type = {
    .type = "prefix-cache-scorer",
    .kind = SCHED_SCORER,
    .init = pcs_init,
    .fini = pcs_fini,
    .score = pcs_score,
    .pre_request = pcs_pre_request,
};
