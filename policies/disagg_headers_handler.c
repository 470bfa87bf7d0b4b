/* disagg-headers-handler (llm-d-router, deprecated in v0.9 for removal in v0.11): in llm-d
 * the request hook that writes the prefill pick into x-prefiller-host-port (and encode
 * picks into x-encoder-hosts-ports). In kvroute the scheduler hands the prefill pick to
 * the driver in sched_result.others, as for prefill-header-handler, so the type exists for
 * configs that list it: prefillProfile and encodeProfile are read, and the deprecation is
 * said once. */
#include "policy_util.h"

static int dhh_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    const char *prefill = "prefill", *encode = "encode";
    if (pu_string(p, pp, pp->node, NULL, "prefillProfile", &prefill, err) ||
        pu_string(p, pp, pp->node, NULL, "encodeProfile", &encode, err))
        return KV_EINVAL;
    sched_warn(env, "%s: plugin '%s': type 'disagg-headers-handler' is deprecated since llm-d-router v0.9 (removal "
               "planned in v0.11); disagg-profile-handler covers it", yt_name(pp->doc), p->name);
    return KV_OK;
}

const sched_plugin_type disagg_headers_handler_type = {
    .type = "disagg-headers-handler",
    .kind = SCHED_REQUEST_CONTROL,
    .init = dhh_init,
};
