/* dynamo-kv-picker: NVIDIA Dynamo's KV router cost function (docs/upstream/peer-routers.md §2;
 * ai-dynamo/dynamo docs/components/router/router-concepts.md, router-configuration.md,
 * lib/kv-router scheduling selector). A picker, because Dynamo decides alone (argmin or
 * softmax sampling over its own cost); a profile holds only this picker, and scores from
 * other plugins in the profile are ignored.
 *
 * For endpoint w, in blocks of the request's block size:
 *   credit_w  = overlapScoreCredit x device_blocks + hostCacheHitWeight x host_blocks
 *               + diskCacheHitWeight x disk_blocks
 *   cost_w    = prefillLoadScale x max(active_prefill_w + prompt_blocks - credit_w, 0)
 *               + active_decode_w + request_blocks
 * prompt_blocks = prompt length / block (fractional, as Dynamo divides tokens by the block
 * size); request_blocks = ceil of it. active_prefill_w / active_decode_w are this router's
 * own bookkeeping: pre_request adds the routed request's uncached prompt blocks
 * max(prompt_blocks - credit, 0) and its request_blocks to the target; response_complete
 * takes them off again.
 * Selection: routerTemperature 0 -> argmin; ties go to the endpoint with the smaller
 * tracked tree (approximate mode), then uniformly at random (cycle generator).
 * routerTemperature > 0 -> softmax over min-max normalised costs:
 * p_w ~ exp(-(cost_w - min) / ((max - min) x T)), uniform when all costs are equal.
 *
 * Overlap: when the scheduler has a kvsource (a precise-prefix-cache-scorer plugin in the
 * same config, fed by KV events — Dynamo's default, event-driven mode), the request's keys
 * in that source's block size are walked per endpoint: the leading blocks the endpoint
 * holds in some tier, each counted in its best tier (GPU = device, CPU = host, other =
 * disk). Without one, Dynamo's --no-router-kv-events mode: an approximate tracker of the
 * router's own routing decisions (prefix_index), where every routed prompt counts as
 * device-cached on its target for approxTtlSecs; blocks are blockSize tokens (blockSize x 4
 * characters for text-only requests).
 *
 * Defaults and their source (router-configuration.md unless noted):
 *   overlapScoreCredit 1.0   --router-kv-overlap-score-credit
 *   hostCacheHitWeight 0.75  --router-host-cache-hit-weight
 *   diskCacheHitWeight 0.25  --router-disk-cache-hit-weight
 *   prefillLoadScale 1.0     --router-prefill-load-scale
 *   routerTemperature 0.0    --router-temperature
 *   approxTtlSecs 120        ApproxKvIndexer's TTL (docs/architecture/kv_cache_routing.md)
 *   blockSize 16             --kv-cache-block-size is backend-specific; vLLM's default is 16
 *                            (ignored with a kvsource, whose block size is used)
 * Not modelled: the overlap-credit decay (default 0, off), output-block tracking (off by
 * default), router queueing (off by default), the lmetric policy, and prefill completion
 * at first token: this picker does not implement the framework's response_started hook
 * (first chunk), so a request's prefill load is held until it completes, overstating
 * prefill load for long generations. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"
#include "precise_prefix_cache_scorer.h"
#include "prefix_index.h"
#include "scheduler.h"

typedef struct {
    uint64_t id_hash;
    uint32_t ep;
    double prefill, decode;
} dkv_flight;

typedef struct {
    double prefill, decode;
} dkv_load;

typedef struct {
    double credit, host_w, disk_w, prefill_scale, temperature, ttl;
    uint32_t block_size;
    prefix_index *ix;            /* approximate tracker, and endpoint id -> slot for loads */
    dkv_load *load;              /* by slot */
    size_t cap_load;
    dkv_flight *flights;
    size_t n_flights, cap_flights;
    dkv_flight picked;           /* what pick decided, for pre_request of the same request */
    bool have_picked;
    sched_env env;
} dkv;

static int dkv_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    double credit = 1.0, host = 0.75, disk = 0.25, scale = 1.0, temp = 0.0, ttl = 120;
    int64_t bs = 16;
    if (pu_double(p, pp, pp->node, NULL, "overlapScoreCredit", 0, 1e6, &credit, err) ||
        pu_double(p, pp, pp->node, NULL, "hostCacheHitWeight", 0, 1, &host, err) ||
        pu_double(p, pp, pp->node, NULL, "diskCacheHitWeight", 0, 1, &disk, err) ||
        pu_double(p, pp, pp->node, NULL, "prefillLoadScale", 0, 1e6, &scale, err) ||
        pu_double(p, pp, pp->node, NULL, "routerTemperature", 0, 1e6, &temp, err) ||
        pu_double(p, pp, pp->node, NULL, "approxTtlSecs", 0, 1e9, &ttl, err) ||
        pu_int(p, pp, pp->node, NULL, "blockSize", 1, 1 << 16, &bs, err))
        return KV_EINVAL;
    dkv *s = calloc(1, sizeof *s);
    if (!s || !(s->ix = prefix_index_new())) {
        free(s);
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    }
    *s = (dkv){.credit = credit, .host_w = host, .disk_w = disk, .prefill_scale = scale, .temperature = temp,
               .ttl = ttl, .block_size = (uint32_t)bs, .ix = s->ix, .env = *env};
    p->state = s;
    return KV_OK;
}

static void dkv_fini(sched_plugin *p)
{
    dkv *s = p->state;
    if (!s)
        return;
    prefix_index_free(s->ix);
    free(s->load);
    free(s->flights);
    free(s);
    p->state = NULL;
}

/* The load record of an endpoint, created empty; NULL when out of memory. */
static dkv_load *dkv_load_of(dkv *s, uint32_t ep)
{
    int slot = prefix_index_slot(s->ix, ep, SIZE_MAX);
    if (slot < 0)
        return NULL;
    size_t old = s->cap_load;
    if (!grow_array((void **)&s->load, &s->cap_load, (size_t)slot + 1, sizeof *s->load))
        return NULL;
    memset(s->load + old, 0, (s->cap_load - old) * sizeof *s->load);
    return &s->load[slot];
}

static const sched_kvsource *dkv_source(const sched_plugin *p)
{
    sched_kvsource *src = NULL;
    return p->owner && pps_kvsources(p->owner, &src, 1) > 0 ? src : NULL;
}

/* Per-candidate credit from the KV-event index; false when the cycle has no keys. */
static bool dkv_credit_events(const dkv *s, sched_cycle *c, const sched_kvsource *src, const sched_scored *cands,
                              size_t n, double *credit, double *prompt_blocks, uint32_t *request_blocks)
{
    size_t nk = 0;
    const uint64_t *keys = sched_cycle_keys(c, &src->keys, &nk);
    const sched_request *r = sched_cycle_request(c);
    if (!r->tokens)
        return false;
    *prompt_blocks = (double)r->n_tokens / src->keys.block_size;
    *request_blocks = (uint32_t)((r->n_tokens + src->keys.block_size - 1) / src->keys.block_size);
    kvindex_match *m = sched_cycle_alloc(c, kvindex_max_endpoints(src->index) * sizeof *m);
    if (!m)
        return false;
    for (size_t i = 0; i < n; i++)
        credit[i] = 0;
    if (!keys || nk == 0)
        return true;
    kvindex_lookup(src->index, keys, nk, m);
    for (size_t i = 0; i < n; i++) {
        int slot = pu_kvindex_slot(src->index, cands[i].ep->name);
        if (slot < 0 || (uint32_t)slot >= kvindex_max_endpoints(src->index))
            continue;
        for (uint32_t b = 0; b < m[slot].blocks; b++) {
            unsigned t = kvindex_tiers(src->index, slot, keys[b]);
            credit[i] += t & (1u << KVTIER_GPU) ? s->credit : t & (1u << KVTIER_CPU) ? s->host_w : s->disk_w;
        }
    }
    return true;
}

static void dkv_credit_approx(dkv *s, sched_cycle *c, const sched_scored *cands, size_t n, double *credit,
                              double *prompt_blocks, uint32_t *request_blocks)
{
    const sched_request *r = sched_cycle_request(c);
    uint32_t block_chars = s->block_size * 4;
    uint32_t bu = prefix_index_block_units(r, block_chars);
    size_t units = 0;
    prefix_index_hash(r, block_chars, SIZE_MAX, NULL, 0, &units);
    *prompt_blocks = (double)units / bu;
    *request_blocks = (uint32_t)((units + bu - 1) / bu);
    for (size_t i = 0; i < n; i++)
        credit[i] = 0;
    double cutoff = sched_cycle_now(c) - s->ttl;
    uint32_t slots = prefix_index_slots(s->ix);
    for (uint32_t slot = 0; slot < slots; slot++)
        prefix_index_expire(s->ix, (int)slot, cutoff);
    uint32_t *run;
    if (!prefix_index_match_cycle(s->ix, c, block_chars, SIZE_MAX, NULL, &run))
        return;
    for (size_t i = 0; i < n; i++) {
        int slot = prefix_index_find(s->ix, cands[i].ep->id);
        if (slot >= 0)
            credit[i] = s->credit * run[slot];
    }
}

static size_t dkv_pick(sched_plugin *p, sched_cycle *c, const sched_scored *cands, size_t n, sched_endpoint **out,
                       size_t max)
{
    dkv *s = p->state;
    s->have_picked = false;
    if (n == 0 || max == 0)
        return 0;
    double *credit = sched_cycle_alloc(c, n * sizeof *credit);
    double *cost = sched_cycle_alloc(c, n * sizeof *cost);
    if (!credit || !cost) {
        out[0] = cands[0].ep;
        return 1;
    }
    double prompt_blocks = 0;
    uint32_t request_blocks = 0;
    const sched_kvsource *src = dkv_source(p);
    bool approx = !src || !dkv_credit_events(s, c, src, cands, n, credit, &prompt_blocks, &request_blocks);
    if (approx)
        dkv_credit_approx(s, c, cands, n, credit, &prompt_blocks, &request_blocks);
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        int slot = prefix_index_find(s->ix, cands[i].ep->id);
        dkv_load l = slot >= 0 && (size_t)slot < s->cap_load ? s->load[slot] : (dkv_load){0, 0};
        cost[i] = s->prefill_scale * fmax(l.prefill + prompt_blocks - credit[i], 0) + l.decode + request_blocks;
        lo = fmin(lo, cost[i]);
        hi = fmax(hi, cost[i]);
    }
    size_t pick = 0;
    if (s->temperature > 0 && hi > lo) {
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += exp(-(cost[i] - lo) / ((hi - lo) * s->temperature));
        double u = sched_cycle_rand01(c) * sum, acc = 0;
        for (pick = 0; pick < n - 1; pick++) {
            acc += exp(-(cost[pick] - lo) / ((hi - lo) * s->temperature));
            if (u < acc)
                break;
        }
    } else {
        /* Argmin; ties go to the smaller tracked tree (Dynamo's tree-size tie-break), then
         * uniformly at random. Sampling with max == min lands here: uniform over all. */
        size_t *ties = sched_cycle_alloc(c, n * sizeof *ties);
        size_t best_size = SIZE_MAX, n_ties = 0;
        for (size_t i = 0; i < n && ties; i++) {
            if (cost[i] != lo)
                continue;
            size_t sz = approx && s->temperature == 0 ? prefix_index_size(s->ix, prefix_index_find(s->ix, cands[i].ep->id)) : 0;
            if (sz < best_size) {
                best_size = sz;
                n_ties = 0;
            }
            if (sz == best_size)
                ties[n_ties++] = i;
        }
        if (n_ties > 0)
            pick = n_ties > 1 ? ties[sched_cycle_rand(c) % n_ties] : ties[0];
    }
    s->picked = (dkv_flight){.id_hash = pu_request_hash(sched_cycle_request(c)), .ep = cands[pick].ep->id,
                             .prefill = fmax(prompt_blocks - credit[pick], 0), .decode = request_blocks};
    s->have_picked = true;
    out[0] = cands[pick].ep;
    return 1;
}

static void dkv_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    dkv *s = p->state;
    if (n == 0)
        return;
    uint32_t ep = targets[0]->id;
    uint32_t block_chars = s->block_size * 4;
    size_t units = 0;
    prefix_index_hash(r, block_chars, SIZE_MAX, NULL, 0, &units);
    dkv_flight f = s->picked;
    if (!s->have_picked || f.id_hash != pu_request_hash(r) || f.ep != ep) {
        /* Routed without this picker's decision (e.g. another profile's result): charge
         * the whole prompt, as if nothing were cached. */
        uint32_t bu = prefix_index_block_units(r, block_chars);
        f = (dkv_flight){.id_hash = pu_request_hash(r), .ep = ep, .prefill = (double)units / bu,
                         .decode = (double)((units + bu - 1) / bu)};
    }
    s->have_picked = false;
    dkv_load *l = dkv_load_of(s, ep);
    if (!l)
        return;
    if (!grow_array((void **)&s->flights, &s->cap_flights, s->n_flights + 1, sizeof *s->flights))
        return;   /* untracked: the load model misses one request rather than failing routing */
    s->flights[s->n_flights++] = f;
    l->prefill += f.prefill;
    l->decode += f.decode;
    /* The tracker learns whenever it is what pick consults (no events for this request). */
    if (dkv_source(p) && r->tokens)
        return;
    prefix_index_learn(s->ix, r, block_chars, SIZE_MAX, ep, SIZE_MAX, sched_env_now(&s->env), false);
}

static void dkv_response_complete(sched_plugin *p, const sched_request *r, const sched_endpoint *target)
{
    dkv *s = p->state;
    uint64_t h = pu_request_hash(r);
    for (size_t i = 0; i < s->n_flights; i++) {
        dkv_flight f = s->flights[i];
        if (f.id_hash != h || f.ep != target->id)
            continue;
        int slot = prefix_index_find(s->ix, f.ep);
        if (slot >= 0 && (size_t)slot < s->cap_load) {
            s->load[slot].prefill = fmax(s->load[slot].prefill - f.prefill, 0);
            s->load[slot].decode = fmax(s->load[slot].decode - f.decode, 0);
        }
        s->flights[i] = s->flights[--s->n_flights];
        return;
    }
}

const sched_plugin_type dynamo_kv_picker_type = {
    .type = "dynamo-kv-picker",
    .kind = SCHED_PICKER,
    .init = dkv_init,
    .fini = dkv_fini,
    .pick = dkv_pick,
    .pre_request = dkv_pre_request,
    .response_complete = dkv_response_complete,
};
