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
 * Speculative indexing (speculativeIndexing, default false; speculativeTTL, default 2s,
 * a value <= 0 meaning the default): when a request is routed, its block keys count as
 * held by the primary pick (and by a profile named "prefill"'s pick) until the TTL ends,
 * so a burst of one prompt is not spread over the pool before the first KV events arrive.
 * As in llm-d-router the speculative entries sit beside the event-fed ones, which confirm
 * blocks for good; a pod's match is the longer of its confirmed and its live speculative
 * leading run. The engine reads no clock: the TTL runs on the scheduler's time (the
 * simulator's clock in ./sim, CLOCK_MONOTONIC in ./epp). Entries are (key, endpoint) ->
 * expiry in an open-addressing table, expired ones dropped when it is rebuilt. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"
#include "precise_index.h"
#include "precise_prefix_cache_scorer.h"

typedef struct spec_entry {
    uint64_t key;
    uint32_t ep1;                   /* endpoint id + 1; 0 = empty */
    double until;                   /* scheduler time the entry expires */
} spec_entry;

typedef struct ppp_state {
    precise_index *ix;
    char key[PU_PREFIX_KEY_MAX];
    bool spec;
    double ttl;
    sched_env env;
    spec_entry *tab;                /* power-of-two capacity */
    size_t cap, used;
    uint64_t stash_req;             /* request whose keys stash holds (pu_request_hash) */
    uint64_t *stash;
    size_t n_stash, cap_stash;
} ppp_state;

static size_t spec_home(const ppp_state *st, uint64_t key, uint32_t ep)
{
    return (size_t)((key ^ (uint64_t)ep * 0x9e3779b97f4a7c15ull) * 0xff51afd7ed558ccdull >> 17) & (st->cap - 1);
}

static spec_entry *spec_find(const ppp_state *st, uint64_t key, uint32_t ep)
{
    for (size_t i = spec_home(st, key, ep);; i = (i + 1) & (st->cap - 1)) {
        spec_entry *e = &st->tab[i];
        if (!e->ep1 || (e->key == key && e->ep1 == ep + 1))
            return e;
    }
}

static bool spec_live(const ppp_state *st, uint64_t key, uint32_t ep, double now)
{
    if (!st->cap)
        return false;
    const spec_entry *e = spec_find(st, key, ep);
    return e->ep1 && e->until > now;
}

/* Room for one more entry at load <= 1/2, dropping expired entries; false when out of memory. */
static bool spec_room(ppp_state *st, double now)
{
    if (st->cap && (st->used + 1) * 2 <= st->cap)
        return true;
    size_t live = 0;
    for (size_t i = 0; i < st->cap; i++)
        live += st->tab[i].ep1 && st->tab[i].until > now;
    size_t cap = 1024;
    while (cap < (live + 1) * 4)
        cap *= 2;
    spec_entry *old = st->tab;
    size_t old_cap = st->cap;
    if (!(st->tab = calloc(cap, sizeof *st->tab))) {
        st->tab = old;
        return false;
    }
    st->cap = cap;
    st->used = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].ep1 && old[i].until > now) {
            *spec_find(st, old[i].key, old[i].ep1 - 1) = old[i];
            st->used++;
        }
    free(old);
    return true;
}

static void spec_add(ppp_state *st, const sched_endpoint *ep, double now)
{
    for (size_t i = 0; i < st->n_stash; i++) {
        if (!spec_room(st, now))
            return;   /* best effort: a missed entry waits for the events */
        spec_entry *e = spec_find(st, st->stash[i], ep->id);
        st->used += !e->ep1;
        *e = (spec_entry){.key = st->stash[i], .ep1 = ep->id + 1, .until = now + st->ttl};
    }
}

static void ppp_fini(sched_plugin *p)
{
    ppp_state *st = p->state;
    if (!st)
        return;
    precise_index_free(st->ix);
    free(st->tab);
    free(st->stash);
    free(st);
    p->state = NULL;
}

static int ppp_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    ppp_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    p->state = st;
    st->ttl = 2.0;
    st->env = *env;
    int rc = (st->ix = precise_index_new(p, pp, env, err)) ? KV_OK : (err ? err->code : KV_ENOMEM);
    if (!rc && (pu_bool(p, pp, pp->node, NULL, "speculativeIndexing", &st->spec, err) ||
                pu_duration(p, pp, pp->node, NULL, "speculativeTTL", &st->ttl, err)))
        rc = KV_EINVAL;
    if (rc) {
        ppp_fini(p);
        return rc;
    }
    if (st->ttl <= 0)
        st->ttl = 2.0;
    pu_prefix_key(st->key, sizeof st->key, p->type->type, p->name);
    return KV_OK;
}

/* Lengthens each match to the pod's live speculative run, and keeps the request's keys
 * for its pre_request. */
static void ppp_speculate(ppp_state *st, sched_cycle *c, sched_endpoint *const *eps, size_t n, uint32_t *matched)
{
    size_t nk = 0;
    const uint64_t *keys = sched_cycle_keys(c, &precise_index_source(st->ix)->keys, &nk);
    double now = sched_cycle_now(c);
    for (size_t i = 0; i < n; i++) {
        uint32_t run = 0;
        while (run < nk && spec_live(st, keys[run], eps[i]->id, now))
            run++;
        matched[i] = run > matched[i] ? run : matched[i];
    }
    st->n_stash = 0;
    st->stash_req = pu_request_hash(sched_cycle_request(c));
    if (nk && grow_array((void **)&st->stash, &st->cap_stash, nk, sizeof *st->stash)) {
        memcpy(st->stash, keys, nk * sizeof *keys);
        st->n_stash = nk;
    }
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
    if (st->spec)
        ppp_speculate(st, c, eps, n, matched);
    *info = (pu_prefix_info){.total_blocks = nk, .n = n, .eps = eps, .matched = matched,
                             .block_tokens = precise_index_source(st->ix)->keys.block_size};
    sched_cycle_put(c, st->key, info);
    return info;
}

static void ppp_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    ppp_state *st = p->state;
    if (!st->spec || n == 0 || st->stash_req != pu_request_hash(r))
        return;
    double now = sched_env_now(&st->env);
    spec_add(st, targets[0], now);
    const sched_result *res = sched_pre_request_result(p->owner);
    for (size_t i = 0; res && i < res->n_others; i++)
        if (strcmp(res->others[i].profile, "prefill") == 0 && res->others[i].target != targets[0])
            spec_add(st, res->others[i].target, now);
    st->n_stash = 0;
}

static void *ppp_service(sched_plugin *p, const char *what)
{
    ppp_state *st = p->state;
    static const pu_prefix_source src = {.match = ppp_match};
    if (strcmp(what, PPS_KVSOURCE_SERVICE) == 0)
        return precise_index_source(st->ix);
    return strcmp(what, PU_PREFIX_SOURCE) == 0 ? (void *)&src : NULL;
}

static void ppp_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const ppp_state *st = p->state;
    int n = snprintf(buf, cap, "speculativeIndexing: %s\nspeculativeTTL: %gs\n", st->spec ? "true" : "false",
                     st->ttl);
    if (n > 0 && (size_t)n < cap)
        precise_index_describe(st->ix, buf + n, cap - (size_t)n);
}

const sched_plugin_type precise_prefix_cache_producer_type = {
    .type = "precise-prefix-cache-producer",
    .kind = SCHED_REQUEST_CONTROL,
    .init = ppp_init,
    .fini = ppp_fini,
    .service = ppp_service,
    .describe = ppp_describe,
    .pre_request = ppp_pre_request,
};
