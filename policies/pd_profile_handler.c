/* pd-profile-handler (llm-d-inference-scheduler v0.5): prefill/decode disaggregation.
 * Runs the decode profile first; if it picked a pod, decides whether the request also
 * needs a prefill pod, and if so runs the prefill profile. The decode result is primary;
 * the prefill pick travels in sched_result.others (the EPP's x-prefiller-host-port).
 *
 * Decision (threshold > 0): prefill runs unless the part of the prompt the decode pod
 * has not cached is shorter than `threshold` characters: (1 - hit) * promptLength <
 * threshold -> decode only. threshold 0 (the default) always runs prefill.
 * promptLength is the prompt's bytes (upstream's measure), or 4 per token when only
 * token ids are known. hit is the decode pod's matched/total blocks in the prefix state
 * of prefixPluginType/prefixPluginName (default prefix-cache-scorer); no state, hit 0.
 * Upstream converts matched blocks to characters with hashBlockSize and 4 characters per
 * token instead; the ratio of blocks is the same quantity without the unit guess, so
 * hashBlockSize is accepted and not needed. primaryPort (data-parallel port rewrite) is
 * accepted and validated; kvroute routes to the endpoint as listed and warns. */
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"

typedef struct pd_state {
    pu_pd pd;                     /* first: the shared P/D flow reads it */
    int64_t threshold;
    char key[PU_PREFIX_KEY_MAX];
} pd_state;

/* Whether the part of the prompt the decode pod lacks is long enough to prefill apart. */
static bool pd_needs_prefill(const void *ctx, sched_cycle *c, sched_endpoint *decode_pod)
{
    const pd_state *st = ctx;
    if (st->threshold <= 0)
        return true;
    const sched_request *r = sched_cycle_request(c);
    double len = r->prompt ? (double)r->prompt_len : 4.0 * (double)r->n_tokens;
    double hit = 0;
    const pu_prefix_info *info = sched_cycle_get(c, st->key);
    for (size_t i = 0; info && info->total_blocks && i < info->n; i++)
        if (info->eps[i] == decode_pod)
            hit = (double)info->matched[i] / (double)info->total_blocks;
    return (1.0 - hit) * len >= (double)st->threshold;
}

static int pd_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    pd_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    const char *type = "prefix-cache-scorer", *name = NULL;
    int64_t hbs = 64, port = 0;
    st->pd = (pu_pd){.decode = "decode", .prefill = "prefill", .needs = pd_needs_prefill};
    if (pu_int(p, pp, pp->node, NULL, "threshold", 0, INT32_MAX, &st->threshold, err) ||
        pu_string(p, pp, pp->node, NULL, "decodeProfile", &st->pd.decode, err) ||
        pu_string(p, pp, pp->node, NULL, "prefillProfile", &st->pd.prefill, err) ||
        pu_string(p, pp, pp->node, NULL, "prefixPluginType", &type, err) ||
        pu_string(p, pp, pp->node, NULL, "prefixPluginName", &name, err) ||
        pu_int(p, pp, pp->node, NULL, "hashBlockSize", 1, INT32_MAX, &hbs, err) ||
        pu_int(p, pp, pp->node, NULL, "primaryPort", 0, 65535, &port, err)) {
        free(st);
        return KV_EINVAL;
    }
    if (port)
        sched_warn(env, "%s: plugin '%s': primaryPort %lld (data-parallel port rewrite) is not supported; ignored",
                yt_name(pp->doc), p->name, (long long)port);
    pu_prefix_key(st->key, sizeof st->key, type, name ? name : type);
    p->state = st;
    return KV_OK;
}

static void pd_fini(sched_plugin *p) { free(p->state); }

const sched_plugin_type pd_profile_handler_type = {
    .type = "pd-profile-handler",
    .kind = SCHED_PROFILE_HANDLER,
    .init = pd_init,
    .fini = pd_fini,
    .profiles = pu_pd_profiles,
    .primary = pu_pd_primary,
};
