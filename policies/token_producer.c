/* token-producer (llm-d-router v0.9+) and its deprecated alias tokenizer (the precise
 * guide's plugin until v0.8; deprecated in v0.9, to be removed in v0.11): the plugin that
 * turns prompt text into token ids before the prefix producers hash it.
 *
 * kvroute's drivers already hand the scheduler token ids: the simulator's requests carry
 * them and ./epp asks the serving pods' vLLM /tokenize for text prompts
 * (--tokenize-timeout-ms), so this plugin runs no tokenizer of its own. It reads modelName
 * and accepts, with a warning naming each, the backends it does not use yet: vllm{url,
 * timeout, mmTimeout} (a separate render server), udsTokenizerConfig (llm-d's deprecated
 * sidecar) and estimate (llm-d's tokenizer-free backend, whose ids match no engine). */
#include <stdlib.h>

#include "policy_util.h"

static int tp_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    const char *model = NULL;
    if (pu_string(p, pp, pp->node, NULL, "modelName", &model, err))
        return KV_EINVAL;
    PU_IGNORE(p, pp, env,
              "kvroute's drivers supply token ids (./epp tokenises text prompts with the serving pods' vLLM "
              "/tokenize, --tokenize-timeout-ms)",
              "vllm", "udsTokenizerConfig", "estimate");
    return KV_OK;
}

/* The legacy name: the same plugin, with llm-d-router's deprecation notice. */
static int tokenizer_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    sched_warn(env, "%s: plugin '%s': type 'tokenizer' is deprecated since llm-d-router v0.9 (removal planned in v0.11); "
            "use 'token-producer'", yt_name(pp->doc), p->name);
    return tp_init(p, pp, env, err);
}

const sched_plugin_type token_producer_type = {
    .type = "token-producer",
    .kind = SCHED_REQUEST_CONTROL,
    .init = tp_init,
};

const sched_plugin_type tokenizer_type = {
    .type = "tokenizer",
    .kind = SCHED_REQUEST_CONTROL,
    .init = tokenizer_init,
};
