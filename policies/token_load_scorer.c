/* token-load-scorer (llm-d-router v0.9+, the guides' load scorer since llm-d PR #2071):
 * prefers endpoints with fewer tokens in flight, as the inflight-load producer counts them.
 *
 *   load(e)  = InFlightLoad.Tokens(e) + UncachedRequestTokens(e)   (this request's share)
 *   score(e) = 1                                  when load <= 0
 *            = 1 - min(load, queueThresholdTokens) / queueThresholdTokens  otherwise
 * (llm-d-router's README states the formula on InFlightLoad alone; its code, followed here,
 * adds the request's own uncached tokens.)
 *
 * Parameters: queueThresholdTokens (default 4194304 = 4 Mi tokens; a value <= 0 means the
 * default, as in llm-d-router), inFlightLoadProducerName (default inflight-load-producer). */
#include <stdio.h>
#include <stdlib.h>

#include "policy_util.h"

typedef struct tls {
    double threshold;
    const char *producer_name;
    sched_plugin *producer;
    const pu_inflight_source *src;
} tls;

#define TLS_DEFAULT_THRESHOLD 4194304   /* 128 requests of 32K tokens */

static int tls_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    (void)env;
    int64_t thr = TLS_DEFAULT_THRESHOLD;
    const char *name = NULL;
    if (pu_int(p, pp, pp->node, NULL, "queueThresholdTokens", INT64_MIN, INT64_MAX, &thr, err) ||
        pu_string(p, pp, pp->node, NULL, "inFlightLoadProducerName", &name, err))
        return KV_EINVAL;
    tls *s = calloc(1, sizeof *s);
    if (!s)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    s->threshold = (double)(thr > 0 ? thr : TLS_DEFAULT_THRESHOLD);
    s->producer_name = name;
    p->state = s;
    return KV_OK;
}

static void tls_fini(sched_plugin *p) { free(p->state); }

static int tls_bind(sched_plugin *p, kv_err *err)
{
    tls *s = p->state;
    return pu_bind_producer(p, "inFlightLoadProducerName", s->producer_name, "inflight-load-producer",
                            PU_INFLIGHT_SOURCE, &s->producer, (const void **)&s->src, err);
}

static void tls_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    tls *s = p->state;
    pu_inflight *load = sched_cycle_alloc(c, (n ? n : 1) * sizeof *load);
    if (!load || !s->src->load(s->producer, c, eps, n, load))
        return;
    for (size_t i = 0; i < n; i++) {
        double t = (double)(load[i].tokens + load[i].uncached);
        scores[i] = t <= 0 ? 1.0 : 1.0 - (t < s->threshold ? t : s->threshold) / s->threshold;
    }
}

static void tls_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const tls *s = p->state;
    snprintf(buf, cap, "queueThresholdTokens: %.0f\ninFlightLoadProducerName: %s\n", s->threshold, s->producer->name);
}

const sched_plugin_type token_load_scorer_type = {
    .type = "token-load-scorer",
    .kind = SCHED_SCORER,
    .init = tls_init,
    .fini = tls_fini,
    .score = tls_score,
    .bind = tls_bind,
    .describe = tls_describe,
};
