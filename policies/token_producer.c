/* token-producer (llm-d-router v0.9+) and its deprecated alias tokenizer (the precise
 * guide's plugin until v0.8; deprecated in v0.9, to be removed in v0.11): the plugin that
 * turns prompt text into token ids before the prefix producers hash it (see
 * token_producer.h for where the ids come from).
 *
 * The simulator's requests carry token ids, so only ./epp asks the renderer. Parameters:
 * modelName; vllm{url, endpointDiscovery, timeout, mmTimeout}. Accepted with a warning
 * naming each, since kvroute does not use them: vllm's TLS settings (caCertPath,
 * clientCertPath, clientKeyPath, insecureSkipVerify), messagesRenderMode (kvroute routes no
 * Messages API), prefillOnly, endpointDiscovery's portRules, loadBalancer and probes,
 * udsTokenizerConfig (llm-d's deprecated sidecar) and estimate (llm-d's tokenizer-free
 * backend, whose ids match no engine). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_util.h"
#include "token_producer.h"

#define DEFAULT_URL "http://localhost:8000"

static int tp_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    int rc = KV_OK;
    token_producer tp = {.plugin = p->name, .timeout_s = TOKEN_PRODUCER_TIMEOUT_S};
    double mm = TOKEN_PRODUCER_MM_TIMEOUT_S;
    const char *url = NULL;
    const yt_node *vllm = pu_map(p, pp, pp->node, NULL, "vllm", &rc, err), *disc = NULL;
    if (rc || pu_string(p, pp, pp->node, NULL, "modelName", &tp.model_name, err))
        return KV_EINVAL;
    if (vllm) {
        disc = pu_map(p, pp, vllm, "vllm", "endpointDiscovery", &rc, err);
        if (rc || pu_string(p, pp, vllm, "vllm", "url", &url, err) ||
            pu_duration(p, pp, vllm, "vllm", "timeout", &tp.timeout_s, err) ||
            pu_duration(p, pp, vllm, "vllm", "mmTimeout", &mm, err))
            return KV_EINVAL;
        if (url && disc)
            return pu_error(p, pp, vllm, "vllm", err, "url and endpointDiscovery are exclusive (llm-d-router)");
        const sched_params sub = {.doc = pp->doc, .node = vllm};
        PU_IGNORE(p, &sub, env, "kvroute renders over plain HTTP, Completions and Chat Completions only, with the "
                  "request's own output budget", "caCertPath", "clientCertPath", "clientKeyPath", "insecureSkipVerify",
                  "messagesRenderMode", "prefillOnly");
        if (disc) {
            const sched_params dsub = {.doc = pp->doc, .node = disc};
            PU_IGNORE(p, &dsub, env, "kvroute renders on each request's candidate pods in turn, on their own port",
                      "portRules", "loadBalancer", "attemptTimeout", "discoverModelLimits", "minModelLen",
                      "contextLimitLabel");
        }
    }
    const yt_node *uds = yt_get(pp->node, "udsTokenizerConfig"), *est = yt_get(pp->node, "estimate");
    PU_IGNORE(p, pp, env, "kvroute renders text prompts with vLLM (on the serving pods unless vllm.url names a render "
              "server)", "udsTokenizerConfig", "estimate");
    if (url) {
        size_t n = strlen(url);
        while (n && url[n - 1] == '/')
            n--;
        if (!(tp.url = strndup(url, n)))
            return kv_err_set(err, KV_ENOMEM, "%s: plugin '%s': out of memory", yt_name(pp->doc), p->name);
    } else if (!disc && !uds && !est && (vllm || tp.model_name)) {
        tp.url = strdup(DEFAULT_URL);
        sched_warn(env, "%s: plugin '%s' (%s): renders on %s, llm-d-router's default (a vllm launch render sidecar); "
                   "set vllm.endpointDiscovery: {} to render on the serving pods", yt_name(pp->doc), p->name,
                   p->type->type, DEFAULT_URL);
    }
    tp.chat_timeout_s = mm > tp.timeout_s ? mm : tp.timeout_s;
    token_producer *st = malloc(sizeof *st);
    if (!st) {
        free((char *)tp.url);
        return kv_err_set(err, KV_ENOMEM, "%s: plugin '%s': out of memory", yt_name(pp->doc), p->name);
    }
    *st = tp;
    p->state = st;
    return KV_OK;
}

static void tp_fini(sched_plugin *p)
{
    token_producer *st = p->state;
    if (st)
        free((char *)st->url);
    free(st);
}

static void *tp_service(sched_plugin *p, const char *what)
{
    return strcmp(what, TOKEN_PRODUCER_SERVICE) == 0 ? p->state : NULL;
}

static void tp_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const token_producer *st = p->state;
    snprintf(buf, cap, "modelName: %s\nrender: %s\ntimeout: %gs (completions)\nchat timeout: %gs\n",
             st->model_name ? st->model_name : "(none)", st->url ? st->url : "the serving pods", st->timeout_s,
             st->chat_timeout_s);
}

const token_producer *token_producer_of(const sched *s)
{
    void *tp = NULL;
    return sched_services(s, TOKEN_PRODUCER_SERVICE, &tp, 1) ? tp : NULL;
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
    .fini = tp_fini,
    .service = tp_service,
    .describe = tp_describe,
};

const sched_plugin_type tokenizer_type = {
    .type = "tokenizer",
    .kind = SCHED_REQUEST_CONTROL,
    .init = tokenizer_init,
    .fini = tp_fini,
    .service = tp_service,
    .describe = tp_describe,
};
