/* approx-prefix-cache-producer (llm-d-router v0.9+): the approximate prefix cache as a
 * producer. It guesses each endpoint's cache from this router's own routing decisions (no
 * KV events), as GIE's prefix-cache-scorer did, and publishes the match (PrefixCacheMatchInfo:
 * matched blocks, request blocks, block size in tokens) for prefix-cache-scorer,
 * prefix-cache-affinity-filter and inflight-load-producer, which name it through
 * prefixMatchInfoProducerName (its default name is its type, which is also their default).
 *
 * Parameters (llm-d-router defaults): autoTune true; blockSizeTokens 16; blockSize
 * (deprecated: taken as blockSizeTokens when that is not set, with a warning);
 * maxPrefixBlocksToMatch 2048, used only when maxPrefixTokensToMatch is 0;
 * maxPrefixTokensToMatch 131072 (max blocks = it / block size); both 0 = no cap;
 * lruCapacityPerServer 31250 (blocks).
 * Block size: the configured one, or with autoTune the first candidate's vLLM block_size,
 * and never under 64 tokens (llm-d-router #1158 clamps it at request time).
 * LRU capacity of an endpoint: its num_gpu_blocks with autoTune when known, else
 * lruCapacityPerServer, fixed at its first insert.
 *
 * Hashing and matching are prefix_index's: token ids when the request has them, block =
 * blockSizeTokens tokens; a text-only request hashes 4 characters a token, which is what
 * llm-d's tokenizer-free "estimate" token producer approximates.
 *
 * Differences from llm-d-router, deliberate: the index learns synchronously in pre_request
 * (llm-d uses a goroutine) so simulated runs are deterministic; a request with several
 * prompts is hashed as one; endpoints leave the index only through their LRU bound. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"
#include "prefix_index.h"

#define APX_MIN_BLOCK_TOKENS 64
#define APX_CHARS_PER_TOKEN 4   /* prefix_index hashes block_chars / 4 tokens a block */

typedef struct apx {
    bool auto_tune;
    uint32_t block_tokens;      /* configured */
    uint32_t cur_tokens;        /* of the running cycle */
    int64_t max_blocks, max_tokens;
    size_t lru_cap;
    prefix_index *ix;
    sched_env env;
    char key[PU_PREFIX_KEY_MAX];
} apx;

static int apx_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    bool auto_tune = true;
    int64_t bst = 16, bs = 0, maxb = 2048, maxt = 131072, lru = 31250;
    if (pu_bool(p, pp, pp->node, NULL, "autoTune", &auto_tune, err) ||
        pu_int(p, pp, pp->node, NULL, "blockSizeTokens", 1, 1 << 20, &bst, err) ||
        pu_int(p, pp, pp->node, NULL, "blockSize", 1, 1 << 20, &bs, err) ||
        pu_int(p, pp, pp->node, NULL, "maxPrefixBlocksToMatch", 0, INT32_MAX, &maxb, err) ||
        pu_int(p, pp, pp->node, NULL, "maxPrefixTokensToMatch", 0, INT32_MAX, &maxt, err) ||
        pu_int(p, pp, pp->node, NULL, "lruCapacityPerServer", 1, (int64_t)1 << 31, &lru, err))
        return KV_EINVAL;
    if (bs) {
        const yt_node *n = yt_get(pp->node, "blockSize");
        sched_warn(env, "%s:%d:%d: plugin '%s': 'blockSize' is deprecated; use 'blockSizeTokens'%s", yt_name(pp->doc),
                n->line, n->col, p->name, yt_get(pp->node, "blockSizeTokens") ? " (set too: blockSize ignored)" : "");
        if (!yt_get(pp->node, "blockSizeTokens"))
            bst = bs;
    }
    apx *s = calloc(1, sizeof *s);
    if (!s || !(s->ix = prefix_index_new())) {
        free(s);
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    }
    *s = (apx){.auto_tune = auto_tune, .block_tokens = (uint32_t)bst, .max_blocks = maxb, .max_tokens = maxt,
               .lru_cap = (size_t)lru, .ix = s->ix, .env = *env};
    pu_prefix_key(s->key, sizeof s->key, p->type->type, p->name);
    p->state = s;
    return KV_OK;
}

static void apx_fini(sched_plugin *p)
{
    apx *s = p->state;
    prefix_index_free(s->ix);
    free(s);
}

/* GetBlockSize: the first candidate's metric with autoTune, clamped up to 64 tokens. */
static uint32_t apx_block_tokens(const apx *s, sched_endpoint *const *eps, size_t n)
{
    uint32_t bs = s->block_tokens;
    if (s->auto_tune && n > 0 && eps[0]->m.block_size)
        bs = eps[0]->m.block_size;
    return bs < APX_MIN_BLOCK_TOKENS ? APX_MIN_BLOCK_TOKENS : bs;
}

static size_t apx_max_blocks(const apx *s, uint32_t bs)
{
    if (s->max_tokens > 0)
        return (size_t)s->max_tokens / bs;
    return s->max_blocks ? (size_t)s->max_blocks : SIZE_MAX;
}

static const pu_prefix_info *apx_match(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n)
{
    apx *s = p->state;
    pu_prefix_info *info = sched_cycle_get(c, s->key);
    if (info && info->eps == eps && info->n == n)
        return info;
    uint32_t bs = apx_block_tokens(s, eps, n);
    s->cur_tokens = bs;
    uint32_t chars = bs * APX_CHARS_PER_TOKEN;
    size_t maxb = apx_max_blocks(s, bs);
    info = sched_cycle_alloc(c, sizeof *info);
    uint32_t *matched = sched_cycle_alloc(c, (n ? n : 1) * sizeof *matched);
    if (!info || !matched)
        return NULL;
    size_t total = prefix_index_hash(sched_cycle_request(c), chars, maxb, NULL, 0, NULL);
    uint32_t *counts = NULL;
    if (!prefix_index_match_cycle(s->ix, c, chars, maxb, &counts, NULL))
        counts = NULL;
    for (size_t i = 0; i < n; i++) {
        int slot = counts ? prefix_index_find(s->ix, eps[i]->id) : -1;
        matched[i] = slot >= 0 ? counts[slot] : 0;
    }
    *info = (pu_prefix_info){.total_blocks = total, .n = n, .eps = eps, .matched = matched, .block_tokens = bs};
    sched_cycle_put(c, s->key, info);
    return info;
}

static void apx_learn(apx *s, const sched_request *r, const sched_endpoint *ep)
{
    size_t cap = s->auto_tune && ep->m.num_gpu_blocks ? ep->m.num_gpu_blocks : s->lru_cap;
    uint32_t bs = s->cur_tokens ? s->cur_tokens : apx_block_tokens(s, NULL, 0);
    /* best effort: a failed insert costs one affinity chance, never a routing failure */
    prefix_index_learn(s->ix, r, bs * APX_CHARS_PER_TOKEN, apx_max_blocks(s, bs), ep->id, cap, sched_env_now(&s->env),
                       false);
}

/* The primary pick learns the prompt, and so does the pick of a profile named "prefill"
 * (llm-d-router's experimentalDefaultPrefillProfile). */
static void apx_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    apx *s = p->state;
    if (n == 0)
        return;
    apx_learn(s, r, targets[0]);
    const sched_result *res = sched_pre_request_result(p->owner);
    for (size_t i = 0; res && i < res->n_others; i++)
        if (strcmp(res->others[i].profile, "prefill") == 0 && res->others[i].target != targets[0])
            apx_learn(s, r, res->others[i].target);
}

static void *apx_service(sched_plugin *p, const char *what)
{
    (void)p;
    static const pu_prefix_source src = {.match = apx_match};
    return strcmp(what, PU_PREFIX_SOURCE) == 0 ? (void *)&src : NULL;
}

static void apx_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const apx *s = p->state;
    snprintf(buf, cap,
             "autoTune: %s\nblockSizeTokens: %u (at least %d when used)\nmaxPrefixBlocksToMatch: %lld\n"
             "maxPrefixTokensToMatch: %lld\nlruCapacityPerServer: %zu\n",
             s->auto_tune ? "true" : "false", s->block_tokens, APX_MIN_BLOCK_TOKENS, (long long)s->max_blocks,
             (long long)s->max_tokens, s->lru_cap);
}

const sched_plugin_type approx_prefix_cache_producer_type = {
    .type = "approx-prefix-cache-producer",
    .kind = SCHED_REQUEST_CONTROL,
    .init = apx_init,
    .fini = apx_fini,
    .pre_request = apx_pre_request,
    .service = apx_service,
    .describe = apx_describe,
};
