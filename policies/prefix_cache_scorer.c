/* prefix-cache-scorer: the prefix-cache scorer of GIE and llm-d-router, in both forms.
 *
 * llm-d-router v0.9+ (llm-d-router `pkg/plugins/scorer/prefix`): a stateless scorer of the
 * PrefixCacheMatchInfo a producer publishes, named by prefixMatchInfoProducerName
 * (approx-prefix-cache-producer or precise-prefix-cache-producer); without that parameter
 * it reads the config's plugin named approx-prefix-cache-producer when there is one (llm-d's
 * default producer for that data).
 *   score = w * min(1, matched * blockTokens / matchLengthScaleTokens)^2 + (1 - w) * matched / total
 * with w = matchLengthWeight (default 0, in [0,1]) and matchLengthScaleTokens (8192, > 0
 * when w > 0); 0 when the request has no block.
 *
 * GIE (docs/upstream/epp.md §3; GIE v1.3.1 `multi/prefix/plugin.go`, `indexer.go`): with no producer
 * to read (llm-d-router would auto-create an approx-prefix-cache-producer), the scorer keeps
 * its own approximate index, so GIE configs load as they always did. It never sees the
 * engines' caches: it remembers which endpoint each request was routed to and scores
 * endpoints by how much of the new prompt they were sent before.
 * Parameters (GIE defaults): autoTune true, blockSize 64 (characters),
 * maxPrefixBlocksToMatch 256, lruCapacityPerServer 31250 (blocks); with a producer they
 * are ignored with a warning (the producer's own apply).
 * Match = matched blocks / request blocks, matching per GIE (prefix_index_match: walk
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
 * Either way the match is published for no-hit-lru-scorer under pu_prefix_key(type, name). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"
#include "prefix_index.h"
#include "scheduler.h"

#define AVG_CHARS_PER_TOKEN 4
#define DEFAULT_PRODUCER "approx-prefix-cache-producer"

typedef struct {
    bool auto_tune;
    uint32_t block_chars;    /* configured blockSize */
    uint32_t tuned_chars;    /* autoTune: last block size derived from metrics; 0 = none */
    size_t max_blocks;
    size_t lru_cap;
    prefix_index *ix;
    sched_env env;
    char key[PU_PREFIX_KEY_MAX];
    double len_weight;              /* matchLengthWeight */
    int64_t len_scale;              /* matchLengthScaleTokens */
    const char *producer_name;      /* prefixMatchInfoProducerName, or NULL */
    const yt_node *index_param;     /* a GIE index parameter as written, for the warning */
    const char *doc_name;
    sched_plugin *producer;         /* bound producer, or NULL: the own index */
    const pu_prefix_source *src;
} pcs;

static int pcs_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    bool auto_tune = true;
    int64_t bs = 64, maxb = 256, lru = 31250, scale = 8192;
    double w = 0;
    const char *producer = NULL;
    if (pu_bool(p, pp, pp->node, NULL, "autoTune", &auto_tune, err) ||
        pu_int(p, pp, pp->node, NULL, "blockSize", 1, 1 << 20, &bs, err) ||
        pu_int(p, pp, pp->node, NULL, "maxPrefixBlocksToMatch", 1, 1 << 20, &maxb, err) ||
        pu_int(p, pp, pp->node, NULL, "lruCapacityPerServer", 1, (int64_t)1 << 31, &lru, err) ||
        pu_double(p, pp, pp->node, NULL, "matchLengthWeight", 0, 1, &w, err) ||
        pu_int(p, pp, pp->node, NULL, "matchLengthScaleTokens", INT32_MIN, INT32_MAX, &scale, err) ||
        pu_string(p, pp, pp->node, NULL, "prefixMatchInfoProducerName", &producer, err))
        return KV_EINVAL;
    if (w > 0 && scale <= 0)
        return pu_error(p, pp, yt_get(pp->node, "matchLengthScaleTokens"), "matchLengthScaleTokens", err,
                        "must be greater than 0 when matchLengthWeight is greater than 0, got %lld", (long long)scale);
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
    s->len_weight = w;
    s->len_scale = scale;
    s->producer_name = producer && producer[0] ? producer : NULL;
    s->doc_name = yt_name(pp->doc);
    static const char *const gie[] = {"autoTune", "blockSize", "maxPrefixBlocksToMatch", "lruCapacityPerServer"};
    for (size_t i = 0; i < sizeof gie / sizeof *gie && !s->index_param; i++)
        s->index_param = yt_get(pp->node, gie[i]);
    pu_prefix_key(s->key, sizeof s->key, p->type->type, p->name);
    p->state = s;
    return KV_OK;
}

/* The named producer, else the default one when the config has it, else the own index. */
static int pcs_bind(sched_plugin *p, kv_err *err)
{
    pcs *s = p->state;
    if (!s->producer_name && !sched_plugin_by_name(p->owner, DEFAULT_PRODUCER))
        return KV_OK;
    if (pu_bind_producer(p, "prefixMatchInfoProducerName", s->producer_name, DEFAULT_PRODUCER, PU_PREFIX_SOURCE,
                         &s->producer, (const void **)&s->src, err))
        return KV_EINVAL;
    if (s->index_param)
        sched_warn(&s->env, "%s:%d:%d: plugin '%s': GIE index parameters (autoTune, blockSize, maxPrefixBlocksToMatch, "
                "lruCapacityPerServer) are ignored: the scorer reads producer '%s', whose parameters apply",
                s->doc_name, s->index_param->line, s->index_param->col, p->name, s->producer->name);
    return KV_OK;
}

/* llm-d-router's formula on a producer's match. */
static double pcs_formula(const pcs *s, uint32_t matched, size_t total, uint32_t block_tokens)
{
    if (total == 0)
        return 0;
    double ratio = (double)matched / (double)total, len = 0;
    if (s->len_weight > 0 && block_tokens > 0) {
        len = fmin(1.0, (double)matched * block_tokens / (double)s->len_scale);
        len *= len;
    }
    return s->len_weight * len + (1.0 - s->len_weight) * ratio;
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
    if (s->producer) {
        const pu_prefix_info *info = s->src->match(s->producer, c, eps, n);
        for (size_t i = 0; info && i < n; i++)
            scores[i] = pcs_formula(s, info->matched[i], info->total_blocks, info->block_tokens);
        if (info)
            sched_cycle_put(c, s->key, (void *)info);
        return;
    }
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
    info->block_tokens = pcs_block_chars(s) / AVG_CHARS_PER_TOKEN;   /* tokens hashed, or text at 4 a token */
    for (size_t i = 0; i < n; i++) {
        int slot = prefix_index_find(s->ix, eps[i]->id);
        if (slot >= 0) {
            matched[i] = counts[slot];
            scores[i] = pcs_formula(s, counts[slot], total, info->block_tokens);
        }
    }
}

static void pcs_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    pcs *s = p->state;
    if (n == 0 || s->producer)
        return;
    const sched_endpoint *ep = targets[0];
    size_t cap = s->auto_tune && ep->m.num_gpu_blocks ? ep->m.num_gpu_blocks : s->lru_cap;
    /* learning is best effort: a failed insert is retried by the next request */
    prefix_index_learn(s->ix, r, pcs_block_chars(s), s->max_blocks, ep->id, cap, sched_env_now(&s->env), false);
}

static void pcs_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const pcs *s = p->state;
    int n = snprintf(buf, cap, "matchLengthWeight: %g\nmatchLengthScaleTokens: %lld\n", s->len_weight,
                     (long long)s->len_scale);
    if (n < 0 || (size_t)n >= cap)
        return;
    if (s->producer)
        snprintf(buf + n, cap - (size_t)n, "prefixMatchInfoProducerName: %s\n", s->producer->name);
    else
        snprintf(buf + n, cap - (size_t)n,
                 "prefixMatchInfoProducerName: - (own GIE index)\nautoTune: %s\nblockSize: %u\n"
                 "maxPrefixBlocksToMatch: %zu\nlruCapacityPerServer: %zu\n",
                 s->auto_tune ? "true" : "false", s->block_chars, s->max_blocks, s->lru_cap);
}

const sched_plugin_type prefix_cache_scorer_type = {
    .type = "prefix-cache-scorer",
    .kind = SCHED_SCORER,
    .init = pcs_init,
    .fini = pcs_fini,
    .score = pcs_score,
    .pre_request = pcs_pre_request,
    .bind = pcs_bind,
    .describe = pcs_describe,
};
