/* precise-prefix-cache-producer (llm-d-router v0.9+): owns the KV-event index
 * (precise_index: the same parameters, index and "kvsource" service as
 * precise-prefix-cache-scorer, so the live ingester and the simulator feed it alike) and
 * publishes each candidate's match (PrefixCacheMatchInfo: matched blocks, request blocks,
 * block size) for the consumers that name it through prefixMatchInfoProducerName:
 * prefix-cache-scorer, prefix-cache-affinity-filter, inflight-load-producer.
 *
 * Matched blocks are the endpoint's leading blocks held in any tier (llm-d weights them by
 * tier here, gpu 1.0 and cpu 0.8 by default; kvroute's consumers count blocks).
 *
 * speculativeIndexing (default false) and speculativeTTL (2s) are read; speculative
 * entries are not implemented yet, so speculativeIndexing: true draws a warning. */
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"
#include "precise_index.h"

typedef struct ppp_state {
    precise_index *ix;
    char key[PU_PREFIX_KEY_MAX];
} ppp_state;

static void ppp_fini(sched_plugin *p)
{
    ppp_state *st = p->state;
    if (!st)
        return;
    precise_index_free(st->ix);
    free(st);
    p->state = NULL;
}

static int ppp_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    ppp_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    p->state = st;
    bool spec = false;
    double ttl = 2.0;
    int rc = (st->ix = precise_index_new(p, pp, env, err)) ? KV_OK : (err ? err->code : KV_ENOMEM);
    if (!rc && (pu_bool(p, pp, pp->node, NULL, "speculativeIndexing", &spec, err) ||
                pu_duration(p, pp, pp->node, NULL, "speculativeTTL", &ttl, err)))
        rc = KV_EINVAL;
    if (rc) {
        ppp_fini(p);
        return rc;
    }
    if (spec) {
        const yt_node *n = yt_get(pp->node, "speculativeIndexing");
        pu_warn(env, "%s:%d:%d: plugin '%s': speculativeIndexing is not implemented by kvroute yet; ignored "
                "(blocks count only once KV events report them)", yt_name(pp->doc), n->line, n->col, p->name);
    }
    pu_prefix_key(st->key, sizeof st->key, p->type->type, p->name);
    return KV_OK;
}

static const pu_prefix_info *ppp_match(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n)
{
    ppp_state *st = p->state;
    pu_prefix_info *info = sched_cycle_get(c, st->key);
    if (info && info->eps == eps && info->n == n)
        return info;
    info = sched_cycle_alloc(c, sizeof *info);
    uint32_t *matched = sched_cycle_alloc(c, (n ? n : 1) * sizeof *matched);
    double *raw = sched_cycle_alloc(c, (n ? n : 1) * sizeof *raw);
    if (!info || !matched || !raw)
        return NULL;
    size_t nk = precise_index_match(st->ix, c, eps, n, matched, raw);
    *info = (pu_prefix_info){.total_blocks = nk, .n = n, .eps = eps, .matched = matched,
                             .block_tokens = precise_index_source(st->ix)->keys.block_size};
    sched_cycle_put(c, st->key, info);
    return info;
}

static void *ppp_service(sched_plugin *p, const char *what)
{
    ppp_state *st = p->state;
    static const pu_prefix_source src = {.match = ppp_match};
    if (strcmp(what, "kvsource") == 0)
        return precise_index_source(st->ix);
    return strcmp(what, PU_PREFIX_SOURCE) == 0 ? (void *)&src : NULL;
}

const sched_plugin_type precise_prefix_cache_producer_type = {
    .type = "precise-prefix-cache-producer",
    .kind = SCHED_REQUEST_CONTROL,
    .init = ppp_init,
    .fini = ppp_fini,
    .service = ppp_service,
};
