/* prefix-cache-affinity-filter (llm-d-router v0.9+, the optimized-baseline and precise
 * guides since llm-d PR #2071): narrows the candidates to the "sticky" ones, those holding
 * at least affinityThreshold of the request's prefix, unless that would cost too much TTFT.
 *
 *   n <= 1 or affinityThreshold <= 0                -> keep all
 *   with probability explorationProbability         -> keep all (exploration)
 *   sticky = {e : matched(e) / total >= affinityThreshold}  (total 0: match 0)
 *   no sticky                                       -> keep all
 *   maxTTFTPenaltyMs > 0, some non-sticky, and
 *     min TTFT(sticky) - min TTFT(non-sticky) > maxTTFTPenaltyMs -> keep all
 *   otherwise                                       -> keep the sticky ones, in order
 * TTFT(e) = inFlightTokens(e) / peakPrefillThroughput * 1000 (ms), in-flight tokens from
 * the inflight-load producer (InFlightLoad.Tokens, without this request's own).
 *
 * Parameters (llm-d-router defaults): affinityThreshold 0.80 (<= 1), explorationProbability
 * 0 ([0,1]), maxTTFTPenaltyMs 18000 (>= 0; 0 = always stick), ttftSource
 * "prefillThroughput" ("latencyPredictor" needs llm-d's latency predictor, which kvroute does
 * not model: an error), peakPrefillThroughput 15928 tokens/s (> 0 when the gate is on),
 * prefixMatchInfoProducerName (default approx-prefix-cache-producer),
 * inFlightLoadProducerName (default inflight-load-producer; needed only when the gate is
 * on), latencyPredictionInfoProducerName (read only with latencyPredictor).
 * maxTokensInFlightPenalty, the gate of llm-d-router before #1547 (v0.9 removed it and
 * rejects it; the optimized-baseline guide still sets it), is ignored with a warning.
 *
 * The exploration draw comes from the cycle's generator, and only when the probability is
 * above 0, so a config without exploration leaves other plugins' random streams as they
 * were. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"

typedef struct paf {
    double threshold, explore, max_penalty_ms, peak;
    const char *prefix_name, *load_name;
    sched_plugin *prefix, *load;
    const pu_prefix_source *prefix_src;
    const pu_inflight_source *load_src;
} paf;

static int paf_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    paf s = {.threshold = 0.80, .max_penalty_ms = 18000, .peak = 15928};
    const char *source = "prefillThroughput", *lat = NULL;
    int64_t legacy = 0;
    if (pu_double(p, pp, pp->node, NULL, "affinityThreshold", -DBL_MAX, 1.0, &s.threshold, err) ||
        pu_double(p, pp, pp->node, NULL, "explorationProbability", 0, 1, &s.explore, err) ||
        pu_double(p, pp, pp->node, NULL, "maxTTFTPenaltyMs", 0, DBL_MAX, &s.max_penalty_ms, err) ||
        pu_double(p, pp, pp->node, NULL, "peakPrefillThroughput", 0, DBL_MAX, &s.peak, err) ||
        pu_string(p, pp, pp->node, NULL, "ttftSource", &source, err) ||
        pu_string(p, pp, pp->node, NULL, "prefixMatchInfoProducerName", &s.prefix_name, err) ||
        pu_string(p, pp, pp->node, NULL, "inFlightLoadProducerName", &s.load_name, err) ||
        pu_string(p, pp, pp->node, NULL, "latencyPredictionInfoProducerName", &lat, err) ||
        pu_int(p, pp, pp->node, NULL, "maxTokensInFlightPenalty", 0, INT64_MAX, &legacy, err))
        return KV_EINVAL;
    if (strcmp(source, "latencyPredictor") == 0)
        return pu_error(p, pp, yt_get(pp->node, "ttftSource"), "ttftSource", err,
                        "'latencyPredictor' needs llm-d's latency predictor (predicted-latency-producer), which "
                        "kvroute does not model; use 'prefillThroughput'");
    if (strcmp(source, "prefillThroughput") != 0)
        return pu_error(p, pp, yt_get(pp->node, "ttftSource"), "ttftSource", err,
                        "must be \"latencyPredictor\" or \"prefillThroughput\", got \"%s\"", source);
    if (s.max_penalty_ms > 0 && s.peak == 0)
        return pu_error(p, pp, yt_get(pp->node, "peakPrefillThroughput"), "peakPrefillThroughput", err,
                        "must be > 0 when ttftSource is prefillThroughput");
    const yt_node *n = yt_get(pp->node, "maxTokensInFlightPenalty");
    if (n)
        sched_warn(env, "%s:%d:%d: plugin '%s': maxTokensInFlightPenalty was removed in llm-d-router v0.9 (#1547), "
                "which rejects it; ignored (the TTFT gate maxTTFTPenaltyMs = %g ms applies)", yt_name(pp->doc),
                n->line, n->col, p->name, s.max_penalty_ms);
    n = yt_get(pp->node, "latencyPredictionInfoProducerName");
    if (n)
        sched_warn(env, "%s:%d:%d: plugin '%s': latencyPredictionInfoProducerName is read only with ttftSource "
                "latencyPredictor; ignored", yt_name(pp->doc), n->line, n->col, p->name);
    paf *st = malloc(sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    *st = s;
    p->state = st;
    return KV_OK;
}

static void paf_fini(sched_plugin *p) { free(p->state); }

static int paf_bind(sched_plugin *p, kv_err *err)
{
    paf *s = p->state;
    if (pu_bind_producer(p, "prefixMatchInfoProducerName", s->prefix_name, "approx-prefix-cache-producer",
                         PU_PREFIX_SOURCE, &s->prefix, (const void **)&s->prefix_src, err))
        return KV_EINVAL;
    if (s->max_penalty_ms > 0 &&
        pu_bind_producer(p, "inFlightLoadProducerName", s->load_name, "inflight-load-producer", PU_INFLIGHT_SOURCE,
                         &s->load, (const void **)&s->load_src, err))
        return KV_EINVAL;
    return KV_OK;
}

/* The TTFT load gate: is the best sticky endpoint more than the penalty slower? */
static bool paf_gate_broken(const paf *s, sched_cycle *c, sched_endpoint **eps, size_t n, const bool *sticky)
{
    pu_inflight *load = sched_cycle_alloc(c, n * sizeof *load);
    if (!load || !s->load_src->load(s->load, c, eps, n, load))
        return false;
    double best[2] = {DBL_MAX, DBL_MAX};   /* [non-sticky, sticky] */
    for (size_t i = 0; i < n; i++) {
        double ttft = (double)load[i].tokens / s->peak * 1000.0;
        if (ttft < best[sticky[i]])
            best[sticky[i]] = ttft;
    }
    return best[1] - best[0] > s->max_penalty_ms;
}

static size_t paf_filter(sched_plugin *p, sched_cycle *c, sched_endpoint **eps, size_t n)
{
    paf *s = p->state;
    if (n <= 1 || s->threshold <= 0)
        return n;
    if (s->explore > 0 && sched_cycle_rand01(c) < s->explore)
        return n;
    const pu_prefix_info *info = s->prefix_src->match(s->prefix, c, eps, n);
    bool *sticky = sched_cycle_alloc(c, n * sizeof *sticky);
    if (!info || !sticky)
        return n;
    size_t n_sticky = 0;
    for (size_t i = 0; i < n; i++) {
        double score = info->total_blocks ? (double)info->matched[i] / (double)info->total_blocks : 0;
        sticky[i] = score >= s->threshold;
        n_sticky += sticky[i];
    }
    if (n_sticky == 0)
        return n;
    if (s->max_penalty_ms > 0 && n_sticky < n && paf_gate_broken(s, c, eps, n, sticky))
        return n;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (sticky[i])
            eps[k++] = eps[i];
    return k;
}

static void paf_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const paf *s = p->state;
    snprintf(buf, cap,
             "affinityThreshold: %g\nexplorationProbability: %g\nmaxTTFTPenaltyMs: %g\nttftSource: prefillThroughput\n"
             "peakPrefillThroughput: %g\nprefixMatchInfoProducerName: %s\ninFlightLoadProducerName: %s\n",
             s->threshold, s->explore, s->max_penalty_ms, s->peak, s->prefix ? s->prefix->name : "-",
             s->load ? s->load->name : "- (gate off)");
}

const sched_plugin_type prefix_cache_affinity_filter_type = {
    .type = "prefix-cache-affinity-filter",
    .kind = SCHED_FILTER,
    .init = paf_init,
    .fini = paf_fini,
    .filter = paf_filter,
    .bind = paf_bind,
    .describe = paf_describe,
};
