/* prefix-based-pd-decider (llm-d-router v0.9+): approves prefill/decode disaggregation
 * when the part of the prompt the decode pick has not cached is long enough.
 *
 *   nonCachedTokens == 0                          -> no (the decider is off; the default)
 *   promptTokens > 0 and input < promptTokens     -> no
 *   input < nonCachedTokens                       -> no
 *   input - matched(decode pick) * blockTokens >= nonCachedTokens -> yes
 * input is the prompt's token count (pu_input_tokens); the match is the
 * approx-prefix-cache-producer's (llm-d's default producer of PrefixCacheMatchInfo), which
 * the config must declare. */
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"

typedef struct pbd {
    int64_t non_cached, prompt;
    sched_plugin *producer;
    const pu_prefix_source *src;
} pbd;

static int pbd_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    (void)env;
    pbd s = {0};
    if (pu_int(p, pp, pp->node, NULL, "nonCachedTokens", 0, INT32_MAX, &s.non_cached, err) ||
        pu_int(p, pp, pp->node, NULL, "promptTokens", 0, INT32_MAX, &s.prompt, err))
        return KV_EINVAL;
    pbd *st = malloc(sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    *st = s;
    p->state = st;
    return KV_OK;
}

static void pbd_fini(sched_plugin *p) { free(p->state); }

static int pbd_bind(sched_plugin *p, kv_err *err)
{
    pbd *s = p->state;
    if (s->non_cached == 0)
        return KV_OK;
    return pu_bind_producer(p, "prefixMatchInfoProducerName", NULL, "approx-prefix-cache-producer", PU_PREFIX_SOURCE,
                            &s->producer, (const void **)&s->src, err);
}

static bool pbd_disaggregate(sched_plugin *p, sched_cycle *c, sched_endpoint *pick)
{
    const pbd *s = p->state;
    if (s->non_cached == 0 || !pick)
        return false;
    int64_t input = pu_input_tokens(sched_cycle_request(c));
    if ((s->prompt > 0 && input < s->prompt) || input < s->non_cached)
        return false;
    sched_endpoint **one = sched_cycle_alloc(c, sizeof *one);
    if (!one)
        return false;
    one[0] = pick;
    const pu_prefix_info *info = s->src->match(s->producer, c, one, 1);
    if (!info)
        return false;
    return input - (int64_t)info->matched[0] * info->block_tokens >= s->non_cached;
}

static void *pbd_service(sched_plugin *p, const char *what)
{
    (void)p;
    static const pu_pd_decider d = {.disaggregate = pbd_disaggregate};
    return strcmp(what, PU_PD_DECIDER) == 0 ? (void *)&d : NULL;
}

const sched_plugin_type prefix_based_pd_decider_type = {
    .type = "prefix-based-pd-decider",
    .kind = SCHED_REQUEST_CONTROL,
    .init = pbd_init,
    .fini = pbd_fini,
    .service = pbd_service,
    .bind = pbd_bind,
};
