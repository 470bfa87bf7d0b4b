/* inflight-load-producer (llm-d-router v0.9+): counts, per endpoint, the requests this
 * router sent and the prompt tokens they still have to prefill, for token-load-scorer and
 * prefix-cache-affinity-filter's TTFT gate (InFlightLoad), and tells them what the request
 * being scheduled would add on each candidate (UncachedRequestTokens).
 *
 *   input     = the request's token count (text only: its length / 4, llm-d's estimate)
 *   uncached  = (total - matched) * blockTokens + max(0, input - total * blockTokens)
 *               with the prefix producer's match on that endpoint; input without one
 *   tokens(e) = uncached, plus with addEstimatedOutputTokens
 *               min(round(input * outputRatio), max_tokens, maxEstimatedOutputTokens)
 * pre_request adds tokens and one request on the primary pick and on every other profile's
 * pick (llm-d tracks each profile's first target). The first response chunk
 * (sched_response_started, llm-d's StartOfStream) releases the tokens of every pick when
 * output is not estimated, and the whole entry of a profile named "prefill"; completion
 * releases the rest. Counters never go below 0.
 *
 * Parameters (llm-d-router defaults): addEstimatedOutputTokens false, outputRatio 1.5
 * (>= 0), maxEstimatedOutputTokens (>= 0, none), prefixMatchInfoProducerName (default: the
 * config's approx-prefix-cache-producer when it has one, else no discount);
 * syncCrossReplicaState is accepted and ignored with a warning (one replica here).
 *
 * What a request adds is computed in the cycle (the producer's match needs it) and kept
 * for the pre_request of that request; a pre_request with no such cycle figure uses input.
 * Requests in flight sit in arrival order; lookups scan from the oldest, which is where
 * first chunks and completions mostly land. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"

#define IFL_DEFAULT_PREFIX "approx-prefix-cache-producer"

typedef struct ifl_entry {
    uint64_t req;                   /* pu_request_hash */
    uint32_t ep;
    bool prefill;                   /* picked by the profile named "prefill" */
    int64_t tokens;                 /* still counted */
    int64_t requests;               /* 1 until released */
} ifl_entry;

typedef struct ifl {
    bool add_output;
    double ratio;
    int64_t max_output;             /* -1 = no cap */
    const char *prefix_name;
    sched_plugin *prefix;
    const pu_prefix_source *prefix_src;
    idmap tokens, requests;      /* endpoint id -> in flight */
    idmap planned;               /* endpoint id -> tokens the cycle's request adds there */
    uint64_t planned_req;           /* whose figures planned holds */
    ifl_entry *q;                   /* live entries are q[head..n) (released ones may remain) */
    size_t head, n, cap;
} ifl;

static int ifl_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    bool add = false, sync = true;
    double ratio = 1.5;
    int64_t maxo = -1;
    const char *prefix = NULL;
    if (pu_bool(p, pp, pp->node, NULL, "addEstimatedOutputTokens", &add, err) ||
        pu_double(p, pp, pp->node, NULL, "outputRatio", 0, 1e9, &ratio, err) ||
        pu_int(p, pp, pp->node, NULL, "maxEstimatedOutputTokens", 0, INT64_MAX, &maxo, err) ||
        pu_string(p, pp, pp->node, NULL, "prefixMatchInfoProducerName", &prefix, err) ||
        pu_bool(p, pp, pp->node, NULL, "syncCrossReplicaState", &sync, err))
        return KV_EINVAL;
    const yt_node *n = yt_get(pp->node, "syncCrossReplicaState");
    if (n)
        sched_warn(env, "%s:%d:%d: plugin '%s': syncCrossReplicaState is ignored (kvroute runs one EPP replica; there "
                "is no cross-replica syncer)", yt_name(pp->doc), n->line, n->col, p->name);
    ifl *s = calloc(1, sizeof *s);
    if (!s)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    *s = (ifl){.add_output = add, .ratio = ratio, .max_output = maxo, .prefix_name = prefix};
    p->state = s;
    return KV_OK;
}

static void ifl_fini(sched_plugin *p)
{
    ifl *s = p->state;
    idmap_free(&s->tokens);
    idmap_free(&s->requests);
    idmap_free(&s->planned);
    free(s->q);
    free(s);
}

static int ifl_bind(sched_plugin *p, kv_err *err)
{
    ifl *s = p->state;
    if (!s->prefix_name && !sched_plugin_by_name(p->owner, IFL_DEFAULT_PREFIX))
        return KV_OK;   /* optional in llm-d: no discount */
    return pu_bind_producer(p, "prefixMatchInfoProducerName", s->prefix_name, IFL_DEFAULT_PREFIX, PU_PREFIX_SOURCE,
                            &s->prefix, (const void **)&s->prefix_src, err);
}

static int64_t ifl_output(const ifl *s, const sched_request *r, int64_t input)
{
    if (!s->add_output || input <= 0)
        return 0;
    int64_t est = llround((double)input * s->ratio);
    if (r->output_tokens_hint && (int64_t)r->output_tokens_hint < est)
        est = r->output_tokens_hint;
    if (s->max_output >= 0 && s->max_output < est)
        est = s->max_output;
    return est;
}

static int64_t ifl_uncached(const pu_prefix_info *info, size_t i, int64_t input)
{
    if (!info || info->block_tokens == 0)
        return input;
    int64_t bs = info->block_tokens, indexed = (int64_t)info->total_blocks * bs;
    int64_t uncached = indexed - (int64_t)info->matched[i] * bs, tail = input - indexed;
    return (uncached > 0 ? uncached : 0) + (tail > 0 ? tail : 0);
}

static bool ifl_load(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, pu_inflight *out)
{
    ifl *s = p->state;
    const sched_request *r = sched_cycle_request(c);
    const pu_prefix_info *info = s->prefix ? s->prefix_src->match(s->prefix, c, eps, n) : NULL;
    if (s->prefix && !info)
        return false;
    int64_t input = pu_input_tokens(r), output = ifl_output(s, r, input);
    uint64_t h = pu_request_hash(r);
    s->planned_req = h;   /* every endpoint it can be routed to is among eps: figures of older requests are overwritten */
    for (size_t i = 0; i < n; i++) {
        out[i] = (pu_inflight){.tokens = idmap_get(&s->tokens, eps[i]->id, 0),
                               .requests = idmap_get(&s->requests, eps[i]->id, 0),
                               .uncached = ifl_uncached(info, i, input) + output};
        int64_t *v = idmap_at(&s->planned, eps[i]->id);
        if (v)
            *v = out[i].uncached + 1;   /* 0 = no figure */
    }
    return true;
}

static void ifl_add(idmap *m, uint32_t ep, int64_t delta)
{
    int64_t *v = idmap_at(m, ep);
    if (v)
        *v = *v + delta > 0 ? *v + delta : 0;
}

static void ifl_track(ifl *s, const sched_request *r, const sched_endpoint *ep, bool prefill)
{
    uint64_t h = pu_request_hash(r);
    int64_t planned = h == s->planned_req ? idmap_get(&s->planned, ep->id, 0) : 0;
    int64_t input = pu_input_tokens(r);
    int64_t tokens = planned ? planned - 1 : input + ifl_output(s, r, input);
    if (s->head > 0 && s->head * 2 >= s->n) {   /* reclaim the released prefix */
        memmove(s->q, s->q + s->head, (s->n - s->head) * sizeof *s->q);
        s->n -= s->head;
        s->head = 0;
    }
    if (!grow_array((void **)&s->q, &s->cap, s->n + 1, sizeof *s->q))
        return;   /* not counted: best effort, like a lost hint */
    s->q[s->n++] = (ifl_entry){.req = h, .ep = ep->id, .prefill = prefill, .tokens = tokens, .requests = 1};
    ifl_add(&s->tokens, ep->id, tokens);
    ifl_add(&s->requests, ep->id, 1);
}

static void ifl_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    ifl *s = p->state;
    if (n == 0)
        return;
    ifl_track(s, r, targets[0], false);
    const sched_result *res = sched_pre_request_result(p->owner);
    for (size_t i = 0; res && i < res->n_others; i++)
        if (res->others[i].target)
            ifl_track(s, r, res->others[i].target, strcmp(res->others[i].profile, "prefill") == 0);
}

/* Releases r's entries: tokens only, or the whole entry (all, or only a prefill pick). */
static void ifl_release(ifl *s, const sched_request *r, bool whole, bool prefill_only)
{
    uint64_t h = pu_request_hash(r);
    for (size_t i = s->head; i < s->n; i++) {
        ifl_entry *e = &s->q[i];
        if (e->req != h || (prefill_only && !e->prefill))
            continue;
        ifl_add(&s->tokens, e->ep, -e->tokens);
        e->tokens = 0;
        if (whole) {
            ifl_add(&s->requests, e->ep, -e->requests);
            e->requests = 0;
        }
    }
    while (s->head < s->n && s->q[s->head].requests == 0)
        s->head++;
}

static void ifl_started(sched_plugin *p, const sched_request *r, const sched_endpoint *target)
{
    (void)target;
    ifl *s = p->state;
    ifl_release(s, r, true, true);
    if (!s->add_output)
        ifl_release(s, r, false, false);
}

static void ifl_complete(sched_plugin *p, const sched_request *r, const sched_endpoint *target)
{
    (void)target;
    ifl_release(p->state, r, true, false);
}

static void *ifl_service(sched_plugin *p, const char *what)
{
    (void)p;
    static const pu_inflight_source src = {.load = ifl_load};
    return strcmp(what, PU_INFLIGHT_SOURCE) == 0 ? (void *)&src : NULL;
}

static void ifl_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const ifl *s = p->state;
    char maxo[32] = "none";
    if (s->max_output >= 0)
        snprintf(maxo, sizeof maxo, "%lld", (long long)s->max_output);
    snprintf(buf, cap,
             "addEstimatedOutputTokens: %s\noutputRatio: %g\nmaxEstimatedOutputTokens: %s\n"
             "prefixMatchInfoProducerName: %s\n",
             s->add_output ? "true" : "false", s->ratio, maxo, s->prefix ? s->prefix->name : "- (no discount)");
}

const sched_plugin_type inflight_load_producer_type = {
    .type = "inflight-load-producer",
    .kind = SCHED_REQUEST_CONTROL,
    .init = ifl_init,
    .fini = ifl_fini,
    .pre_request = ifl_pre_request,
    .response_started = ifl_started,
    .response_complete = ifl_complete,
    .service = ifl_service,
    .bind = ifl_bind,
    .describe = ifl_describe,
};
