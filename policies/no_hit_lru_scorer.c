/* no-hit-lru-scorer (llm-d-inference-scheduler): spreads cold requests. When the prefix
 * scorer named by prefixPluginType/prefixPluginName (default prefix-cache-scorer) found
 * a cached prefix on any candidate, every pod scores 0.5 (neutral). For a cold request,
 * pods never used for a cold request rank first (in candidate order), then the others
 * from least to most recently used: score = 1 - rank/(N-1) (1.0 when N = 1). The pod a
 * cold request is routed to becomes the most recently used (pre_request).
 *
 * Deviation, on purpose: llm-d v0.5.1 treats a request as cold only when the prefix
 * state map is empty, and the precise scorer fills it with every pod (zeros included), so
 * the cold path never fires with it (docs/upstream/epp.md §1). Here "cold" means no candidate matched a
 * block, which is what the scorer is for. A missing prefix state counts as cold.
 * lruSize (default 1024) bounds how many pods are remembered; the least recent is
 * forgotten (scored as never used) beyond it. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "policy_util.h"

#define NHL_COLD_RING 64

typedef struct nhl_state {
    char key[PU_PREFIX_KEY_MAX];
    int64_t lru_size;
    int64_t tick;
    idmap last;                  /* endpoint id -> tick of last cold use; 0 = forgotten */
    int64_t remembered;
    uint64_t cold[NHL_COLD_RING];   /* hashes of recent cold request ids, for pre_request */
    size_t cold_next;
} nhl_state;

static int nhl_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    nhl_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    const char *type = "prefix-cache-scorer", *name = NULL;
    st->lru_size = 1024;
    if (pu_string(p, pp, pp->node, NULL, "prefixPluginType", &type, err) ||
        pu_string(p, pp, pp->node, NULL, "prefixPluginName", &name, err) ||
        pu_int(p, pp, pp->node, NULL, "lruSize", 1, INT32_MAX, &st->lru_size, err)) {
        free(st);
        return KV_EINVAL;
    }
    pu_prefix_key(st->key, sizeof st->key, type, name ? name : type);
    p->state = st;
    return KV_OK;
}

static void nhl_fini(sched_plugin *p)
{
    nhl_state *st = p->state;
    idmap_free(&st->last);
    free(st);
}

static uint64_t nhl_hash(const sched_request *r)
{
    const char *id = r->id ? r->id : "";
    return XXH64(id, strlen(id), 0) | 1; /* 0 marks an empty ring slot */
}

typedef struct nhl_rank {
    int64_t tick;
    size_t pos;
} nhl_rank;

static int nhl_cmp(const void *a, const void *b)
{
    const nhl_rank *x = a, *y = b;
    if (x->tick != y->tick)
        return x->tick < y->tick ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static void nhl_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    nhl_state *st = p->state;
    const pu_prefix_info *info = sched_cycle_get(c, st->key);
    bool hit = false;
    for (size_t i = 0; info && i < info->n && !hit; i++)
        hit = info->matched[i] > 0;
    if (hit) {
        for (size_t i = 0; i < n; i++)
            scores[i] = 0.5;
        return;
    }
    st->cold[st->cold_next++ % NHL_COLD_RING] = nhl_hash(sched_cycle_request(c));
    nhl_rank *rk = sched_cycle_alloc(c, (n ? n : 1) * sizeof *rk);
    if (!rk)
        return;
    for (size_t i = 0; i < n; i++)
        rk[i] = (nhl_rank){.tick = idmap_get(&st->last, eps[i]->id, 0), .pos = i};
    qsort(rk, n, sizeof *rk, nhl_cmp); /* never used (tick 0) first, then oldest use */
    for (size_t r = 0; r < n; r++)
        scores[rk[r].pos] = n == 1 ? 1.0 : 1.0 - (double)r / (double)(n - 1);
}

/* Forgets the least recently used pod (its tick becomes 0). */
static void nhl_forget_oldest(nhl_state *st)
{
    size_t at = SIZE_MAX;
    for (size_t i = 0; i < st->last.cap; i++)
        if (st->last.keys[i] && st->last.vals[i] > 0 && (at == SIZE_MAX || st->last.vals[i] < st->last.vals[at]))
            at = i;
    if (at != SIZE_MAX) {
        st->last.vals[at] = 0;
        st->remembered--;
    }
}

static void nhl_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    nhl_state *st = p->state;
    uint64_t h = nhl_hash(r);
    size_t i = 0;
    while (i < NHL_COLD_RING && st->cold[i] != h)
        i++;
    if (i == NHL_COLD_RING || !n)
        return;
    st->cold[i] = 0;
    int64_t *v = idmap_at(&st->last, targets[0]->id);
    if (!v)
        return;
    if (*v == 0)
        st->remembered++;
    *v = ++st->tick;
    if (st->remembered > st->lru_size)
        nhl_forget_oldest(st);
}

const sched_plugin_type no_hit_lru_scorer_type = {
    .type = "no-hit-lru-scorer",
    .kind = SCHED_SCORER,
    .init = nhl_init,
    .fini = nhl_fini,
    .score = nhl_score,
    .pre_request = nhl_pre_request,
};
