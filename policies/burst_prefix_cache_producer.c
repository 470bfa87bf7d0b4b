/* burst-prefix-cache-producer (llm-d-router): co-locates a burst of prompt-sharing
 * requests (see burst_prefix_cache_producer.h for the window the drivers hold).
 *
 * Parameters, llm-d-router's defaults and bounds: windowDurationMs 100 (1..10000),
 * maxPerReplica -1 (unbounded; else >= 1), blockSizeTokens 64, maxPrefixTokensToMatch 0
 * (2048 blocks; else >= blockSizeTokens), minColocateBlocks 0, maxBatchSize 1000 (-1 = no
 * bound), balanceBy requests | tokens.
 *
 * Placement is llm-d-router's assign.go: requests whose prompts hash to the same blocks
 * form a group; a group of two or more is a unit, a single request only when
 * minColocateBlocks > 0 and another request of the window shares that many leading
 * blocks. Groups are placed first, then single units, longest prefix first. A unit's
 * first endpoint is, with minColocateBlocks, the one already holding the longest run of
 * its leading blocks (at least minColocateBlocks) among those under the window's fair
 * share (ceil(window load / endpoints)) and under maxPerReplica for it; otherwise the
 * least loaded (window load, then running requests, then name). A unit fills an endpoint
 * up to maxPerReplica and spills to the next least loaded. Load counts requests, or with
 * balanceBy tokens the blocks an endpoint must still prefill (a unit's blocks less the
 * leading ones already placed there, once per endpoint).
 *
 * Hashing is the approximate producer's (prefix_index): token ids when the request has
 * them, else its text at 4 characters a token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "burst_prefix_cache_producer.h"
#include "policy_util.h"
#include "prefix_index.h"

#define BURST_CHARS_PER_TOKEN 4
#define BURST_DEFAULT_MAX_BLOCKS 2048

typedef struct assignment {
    char *id;                   /* the request's id */
    uint32_t ep;                /* the endpoint id it was assigned */
    size_t total;               /* its prefix blocks */
    uint64_t window;            /* the window that placed it */
} assignment;

struct burst {
    int64_t window_ms, max_per, block_tokens, max_tokens, min_colo, max_batch;
    bool by_tokens;
    size_t max_blocks;
    assignment *as;
    size_t n_as, cap_as;
    uint64_t windows;           /* burst_assign calls so far */
    char key[PU_PREFIX_KEY_MAX];
};

static int bp_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    (void)env;
    burst b = {.window_ms = 100, .max_per = -1, .block_tokens = 64, .max_batch = 1000};
    const char *balance = "requests";
    if (pu_int(p, pp, pp->node, NULL, "windowDurationMs", 1, 10000, &b.window_ms, err) ||
        pu_int(p, pp, pp->node, NULL, "maxPerReplica", -1, INT32_MAX, &b.max_per, err) ||
        pu_int(p, pp, pp->node, NULL, "blockSizeTokens", 1, 1 << 20, &b.block_tokens, err) ||
        pu_int(p, pp, pp->node, NULL, "maxPrefixTokensToMatch", 0, INT32_MAX, &b.max_tokens, err) ||
        pu_int(p, pp, pp->node, NULL, "minColocateBlocks", 0, INT32_MAX, &b.min_colo, err) ||
        pu_int(p, pp, pp->node, NULL, "maxBatchSize", -1, INT32_MAX, &b.max_batch, err) ||
        pu_string(p, pp, pp->node, NULL, "balanceBy", &balance, err))
        return KV_EINVAL;
    if (b.max_per == 0)
        return pu_error(p, pp, yt_get(pp->node, "maxPerReplica"), "maxPerReplica", err, "must be -1 (unbounded) or >= 1");
    if (b.max_batch == 0)
        return pu_error(p, pp, yt_get(pp->node, "maxBatchSize"), "maxBatchSize", err, "must be -1 (unbounded) or >= 1");
    if (b.max_tokens > 0 && b.max_tokens < b.block_tokens)
        return pu_error(p, pp, yt_get(pp->node, "maxPrefixTokensToMatch"), "maxPrefixTokensToMatch", err,
                        "must be 0 or >= blockSizeTokens (%lld): a smaller value yields no prefix block",
                        (long long)b.block_tokens);
    if (strcmp(balance, "requests") && strcmp(balance, "tokens"))
        return pu_error(p, pp, yt_get(pp->node, "balanceBy"), "balanceBy", err,
                        "must be \"requests\" or \"tokens\", got \"%s\"", balance);
    b.by_tokens = !strcmp(balance, "tokens");
    b.max_blocks = b.max_tokens > 0 ? (size_t)(b.max_tokens / b.block_tokens) : BURST_DEFAULT_MAX_BLOCKS;
    burst *st = malloc(sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: plugin '%s': out of memory", yt_name(pp->doc), p->name);
    *st = b;
    pu_prefix_key(st->key, sizeof st->key, p->type->type, p->name);
    p->state = st;
    return KV_OK;
}

static void forget(burst *b, size_t i)
{
    free(b->as[i].id);
    b->as[i] = b->as[--b->n_as];
}

static void bp_fini(sched_plugin *p)
{
    burst *b = p->state;
    if (!b)
        return;
    while (b->n_as)
        forget(b, 0);
    free(b->as);
    free(b);
}

static assignment *find(burst *b, const char *id)
{
    for (size_t i = 0; id && i < b->n_as; i++)
        if (!strcmp(b->as[i].id, id))
            return &b->as[i];
    return NULL;
}

/* ---- placement -------------------------------------------------------------------------- */

typedef struct placer {
    const burst *b;
    size_t n, n_eps;
    uint64_t **h;               /* h[i]: request i's block hashes */
    size_t *nb;                 /* their counts */
    sched_endpoint *const *eps;
    int64_t *load;              /* per endpoint: window load */
    int64_t *unit_on;           /* per endpoint: members of the unit being placed */
    int *placed;                /* per request: endpoint index, or -1 */
    int64_t share;              /* fair share of the window's load */
} placer;

/* Leading blocks of request u's prompt that endpoint e already holds through a placed
 * request, counted until a block nobody placed holds (the hashes chain, so a block at
 * the same position is the same prefix). */
static size_t held(const placer *pl, size_t u, size_t e)
{
    size_t best = 0;
    for (size_t j = 0; j < pl->nb[u]; j++) {
        bool anyone = false, here = false;
        for (size_t v = 0; v < pl->n && !here; v++) {
            if (pl->placed[v] < 0 || pl->nb[v] <= j || pl->h[v][j] != pl->h[u][j])
                continue;
            anyone = true;
            here = (size_t)pl->placed[v] == e;
        }
        if (!anyone)
            break;
        best += here;
    }
    return best;
}

static bool less(const placer *pl, size_t a, size_t b)
{
    if (pl->load[a] != pl->load[b])
        return pl->load[a] < pl->load[b];
    if (pl->eps[a]->m.running != pl->eps[b]->m.running)
        return pl->eps[a]->m.running < pl->eps[b]->m.running;
    return strcmp(pl->eps[a]->name, pl->eps[b]->name) < 0;
}

static bool full(const placer *pl, size_t e)
{
    return pl->b->max_per > 0 && pl->unit_on[e] >= pl->b->max_per;
}

static size_t pick(const placer *pl, size_t u, bool prefer)
{
    size_t best = SIZE_MAX, best_m = 0;
    for (size_t e = 0; prefer && e < pl->n_eps; e++) {
        size_t m = held(pl, u, e);
        if (full(pl, e) || pl->load[e] >= pl->share || m < (size_t)pl->b->min_colo)
            continue;
        if (best == SIZE_MAX || m > best_m || (m == best_m && less(pl, e, best)))
            best = e, best_m = m;
    }
    if (best != SIZE_MAX)
        return best;
    for (size_t e = 0; e < pl->n_eps; e++)
        if (!full(pl, e) && (best == SIZE_MAX || less(pl, e, best)))
            best = e;
    for (size_t e = 0; best == SIZE_MAX && e < pl->n_eps; e++)   /* every endpoint at its cap */
        if (best == SIZE_MAX || less(pl, e, best))
            best = e;
    return best;
}

/* Places the unit of requests members[0..m) (one prompt). */
static void place_unit(placer *pl, const size_t *members, size_t m)
{
    size_t u = members[0];
    memset(pl->unit_on, 0, pl->n_eps * sizeof *pl->unit_on);
    bool prefer = pl->b->min_colo > 0;
    size_t *matches = NULL;
    if (pl->b->by_tokens && (matches = calloc(pl->n_eps, sizeof *matches)))
        for (size_t e = 0; e < pl->n_eps; e++)
            matches[e] = held(pl, u, e);
    for (size_t i = 0; i < m;) {
        size_t e = pick(pl, u, prefer);
        size_t run = m - i;
        if (pl->b->max_per > 0) {
            int64_t left = pl->b->max_per - pl->unit_on[e];
            if (left < 1)
                left = 1;   /* more members than maxPerReplica x endpoints: one, then rebalance */
            if ((size_t)left < run)
                run = (size_t)left;
        }
        bool first = pl->unit_on[e] == 0;
        pl->unit_on[e] += (int64_t)run;
        if (!pl->b->by_tokens)
            pl->load[e] += (int64_t)run;
        else if (first)
            pl->load[e] += (int64_t)pl->nb[u] - (int64_t)(matches ? matches[e] : 0);
        for (size_t j = 0; j < run; j++)
            pl->placed[members[i + j]] = (int)e;
        i += run;
        prefer = false;   /* only the unit's first endpoint follows the prefix */
    }
    free(matches);
}

static bool same_prompt(const placer *pl, size_t a, size_t b)
{
    return pl->nb[a] == pl->nb[b] && !memcmp(pl->h[a], pl->h[b], pl->nb[a] * sizeof **pl->h);
}

/* Sorts unit leaders by prefix length, longest first, keeping arrival order on ties. */
static void sort_units(const placer *pl, size_t *lead, size_t n)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && pl->nb[lead[j]] > pl->nb[lead[j - 1]]; j--) {
            size_t t = lead[j];
            lead[j] = lead[j - 1];
            lead[j - 1] = t;
        }
}

static int place(placer *pl)
{
    size_t n = pl->n, *group = malloc(n * sizeof *group), *size = calloc(n, sizeof *size),
           *lead = malloc(n * sizeof *lead), *members = malloc(n * sizeof *members);
    int rc = group && size && lead && members ? KV_OK : KV_ENOMEM;
    for (size_t i = 0; rc == KV_OK && i < n; i++) {
        group[i] = i;
        for (size_t j = 0; j < i && group[i] == i; j++)
            if (group[j] == j && pl->nb[i] && same_prompt(pl, i, j))
                group[i] = j;
        size[group[i]] += pl->nb[i] > 0;
    }
    /* units: groups of two or more, then (minColocateBlocks) single requests sharing that
     * many leading blocks with another request of the window */
    size_t n_lead = 0;
    int64_t total = 0;
    for (int pass = 0; rc == KV_OK && pass < 2; pass++) {
        size_t from = n_lead;
        for (size_t i = 0; i < n; i++) {
            if (group[i] != i || !size[i] || (pass == 0) != (size[i] >= 2))
                continue;
            if (pass == 1) {
                size_t mc = (size_t)pl->b->min_colo;
                bool shared = false;
                for (size_t j = 0; mc && pl->nb[i] >= mc && j < n && !shared; j++)
                    shared = j != i && pl->nb[j] >= mc && !memcmp(pl->h[i], pl->h[j], mc * sizeof **pl->h);
                if (!shared)
                    continue;
            }
            lead[n_lead++] = i;
            total += pl->b->by_tokens ? (int64_t)pl->nb[i] : (int64_t)size[i];
        }
        sort_units(pl, lead + from, n_lead - from);
    }
    pl->share = (total + (int64_t)pl->n_eps - 1) / (int64_t)pl->n_eps;
    for (size_t k = 0; rc == KV_OK && k < n_lead; k++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (group[i] == lead[k] && pl->nb[i])
                members[m++] = i;
        place_unit(pl, members, m);
    }
    free(group);
    free(size);
    free(lead);
    free(members);
    return rc;
}

int burst_assign(burst *b, const sched_request *const *reqs, size_t n, sched_endpoint *const *eps, size_t n_eps,
                 kv_err *err)
{
    b->windows++;
    for (size_t i = 0; i < b->n_as;)   /* assignments no cycle read: two windows old */
        if (b->as[i].window + 1 < b->windows)
            forget(b, i);
        else
            i++;
    if (!n || !n_eps)
        return KV_OK;
    placer pl = {.b = b, .n = n, .n_eps = n_eps, .eps = eps};
    pl.h = calloc(n, sizeof *pl.h);
    pl.nb = calloc(n, sizeof *pl.nb);
    pl.load = calloc(n_eps, sizeof *pl.load);
    pl.unit_on = calloc(n_eps, sizeof *pl.unit_on);
    pl.placed = malloc(n * sizeof *pl.placed);
    uint32_t chars = (uint32_t)b->block_tokens * BURST_CHARS_PER_TOKEN;
    int rc = pl.h && pl.nb && pl.load && pl.unit_on && pl.placed ? KV_OK : KV_ENOMEM;
    for (size_t i = 0; rc == KV_OK && i < n; i++) {
        pl.placed[i] = -1;
        size_t k = prefix_index_hash(reqs[i], chars, b->max_blocks, NULL, 0, NULL);
        if (k && !(pl.h[i] = malloc(k * sizeof **pl.h)))
            rc = KV_ENOMEM;
        else if (k)
            pl.nb[i] = prefix_index_hash(reqs[i], chars, b->max_blocks, pl.h[i], k, NULL);
    }
    if (rc == KV_OK)
        rc = place(&pl);
    for (size_t i = 0; rc == KV_OK && i < n; i++) {
        if (pl.placed[i] < 0 || !reqs[i]->id)
            continue;
        if (b->n_as == b->cap_as) {
            size_t cap = b->cap_as ? 2 * b->cap_as : 64;
            assignment *g = realloc(b->as, cap * sizeof *g);
            if (!g) {
                rc = KV_ENOMEM;
                break;
            }
            b->as = g, b->cap_as = cap;
        }
        char *id = strdup(reqs[i]->id);
        if (!id) {
            rc = KV_ENOMEM;
            break;
        }
        b->as[b->n_as++] = (assignment){id, eps[pl.placed[i]]->id, pl.nb[i], b->windows};
    }
    for (size_t i = 0; pl.h && i < n; i++)
        free(pl.h[i]);
    free(pl.h);
    free(pl.nb);
    free(pl.load);
    free(pl.unit_on);
    free(pl.placed);
    return rc == KV_OK ? KV_OK : kv_err_set(err, rc, "burst-prefix-cache-producer: out of memory placing %zu requests", n);
}

/* ---- the producer ------------------------------------------------------------------------ */

static const pu_prefix_info *bp_match(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n)
{
    burst *b = p->state;
    pu_prefix_info *info = sched_cycle_get(c, b->key);
    if (info && info->eps == eps && info->n == n)
        return info;
    info = sched_cycle_alloc(c, sizeof *info);
    uint32_t *matched = sched_cycle_alloc(c, (n ? n : 1) * sizeof *matched);
    if (!info || !matched)
        return NULL;
    const sched_request *r = sched_cycle_request(c);
    const assignment *a = find(b, r->id);
    size_t total = a ? a->total
                     : prefix_index_hash(r, (uint32_t)b->block_tokens * BURST_CHARS_PER_TOKEN, b->max_blocks, NULL, 0,
                                         NULL);
    for (size_t i = 0; i < n; i++)
        matched[i] = a && eps[i]->id == a->ep ? (uint32_t)total : 0;
    *info = (pu_prefix_info){.total_blocks = total, .n = n, .eps = eps, .matched = matched,
                             .block_tokens = (uint32_t)b->block_tokens};
    sched_cycle_put(c, b->key, info);
    return info;
}

/* Routed: the request's assignment has served. */
static void bp_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    burst *b = p->state;
    assignment *a = find(b, r->id);
    if (a)
        forget(b, (size_t)(a - b->as));
}

static void *bp_service(sched_plugin *p, const char *what)
{
    static const pu_prefix_source src = {.match = bp_match};
    if (strcmp(what, PU_PREFIX_SOURCE) == 0)
        return (void *)&src;
    return strcmp(what, BURST_SERVICE) == 0 ? p->state : NULL;
}

static void bp_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const burst *b = p->state;
    snprintf(buf, cap,
             "windowDurationMs: %lld\nmaxPerReplica: %lld\nblockSizeTokens: %lld\nmaxPrefixTokensToMatch: %lld "
             "(%zu blocks)\nminColocateBlocks: %lld\nmaxBatchSize: %lld\nbalanceBy: %s\n",
             (long long)b->window_ms, (long long)b->max_per, (long long)b->block_tokens, (long long)b->max_tokens,
             b->max_blocks, (long long)b->min_colo, (long long)b->max_batch, b->by_tokens ? "tokens" : "requests");
}

burst *burst_of(const sched *s)
{
    void *b = NULL;
    return sched_services(s, BURST_SERVICE, &b, 1) ? b : NULL;
}

double burst_window_s(const burst *b) { return (double)b->window_ms / 1000.0; }
int64_t burst_max_batch(const burst *b) { return b->max_batch; }

const sched_plugin_type burst_prefix_cache_producer_type = {
    .type = "burst-prefix-cache-producer",
    .kind = SCHED_REQUEST_CONTROL,
    .init = bp_init,
    .fini = bp_fini,
    .pre_request = bp_pre_request,
    .service = bp_service,
    .describe = bp_describe,
};
