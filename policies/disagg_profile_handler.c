/* disagg-profile-handler (llm-d-router v0.9+, successor of pd-profile-handler): runs the
 * decode profile, then the prefill profile when the prefill decider named in
 * deciders.prefill approves the decode pick (prefix-based-pd-decider,
 * always-disagg-pd-decider); no decider: decode only. The decode result is primary; the
 * prefill pick travels in sched_result.others.
 *
 * Parameters (llm-d-router defaults): profiles{decode ("decode"), prefill ("prefill"),
 * encode ("encode")}, deciders{prefill, encode}. An encode decider (E/P/D) needs the
 * multimodal encode stage, which kvroute does not model: an error naming it. */
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"

typedef struct dph {
    pu_pd pd;                     /* first: the shared P/D flow reads it */
    const char *decider_name;
    sched_plugin *decider;
    const pu_pd_decider *decide;
} dph;

static bool dph_needs_prefill(const void *ctx, sched_cycle *c, sched_endpoint *pick)
{
    const dph *s = ctx;
    return s->decider && s->decide->disaggregate(s->decider, c, pick);
}

static int dph_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    (void)env;
    dph s = {.pd = {.decode = "decode", .prefill = "prefill", .needs = dph_needs_prefill}};
    const char *encode = "encode", *enc_decider = NULL;
    int rc = KV_OK;
    const yt_node *prof = pu_map(p, pp, pp->node, NULL, "profiles", &rc, err);
    const yt_node *dec = rc ? NULL : pu_map(p, pp, pp->node, NULL, "deciders", &rc, err);
    if (rc || pu_string(p, pp, prof, "profiles", "decode", &s.pd.decode, err) ||
        pu_string(p, pp, prof, "profiles", "prefill", &s.pd.prefill, err) ||
        pu_string(p, pp, prof, "profiles", "encode", &encode, err) ||
        pu_string(p, pp, dec, "deciders", "prefill", &s.decider_name, err) ||
        pu_string(p, pp, dec, "deciders", "encode", &enc_decider, err))
        return KV_EINVAL;
    if (enc_decider)
        return pu_error(p, pp, yt_get(dec, "encode"), "deciders.encode", err,
                        "encode disaggregation (E/P/D) needs a multimodal encode stage, which kvroute does not model");
    dph *st = malloc(sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    *st = s;
    p->state = st;
    return KV_OK;
}

static void dph_fini(sched_plugin *p) { free(p->state); }

static int dph_bind(sched_plugin *p, kv_err *err)
{
    dph *s = p->state;
    if (!s->decider_name)
        return KV_OK;
    return pu_bind_producer(p, "deciders.prefill", s->decider_name, NULL, PU_PD_DECIDER, &s->decider,
                            (const void **)&s->decide, err);
}

const sched_plugin_type disagg_profile_handler_type = {
    .type = "disagg-profile-handler",
    .kind = SCHED_PROFILE_HANDLER,
    .init = dph_init,
    .fini = dph_fini,
    .profiles = pu_pd_profiles,
    .primary = pu_pd_primary,
    .bind = dph_bind,
};
