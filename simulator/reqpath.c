/* reqpath: the request path's defaults, scenario overrides and delays (see reqpath.h). */
#include "reqpath.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scheduler.h"
#include "workload.h"

/* Plugin types whose presence means the EPP tokenises the prompt itself (llm-d's
 * precise prefix-cache routing and its token producer; the approximate producers hash
 * the text and do not). */
static const char *const reqpath_tokenisers[] = {"precise-prefix-cache-scorer", "precise-prefix-cache-producer",
                                                 "token-producer", "tokenizer"};
/* Pickers that stand for a Service or a plain L4/L7 balancer: no EPP in the path. */
static const char *const reqpath_service_pickers[] = {"kube-proxy-picker", "round-robin-picker"};

static bool reqpath_in(const char *type, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(type, set[i]) == 0)
            return true;
    return false;
}

reqpath reqpath_defaults(const epc_config *cfg)
{
    bool service = true, tokenises = false;
    for (size_t i = 0; cfg && i < cfg->n_plugins; i++) {
        const epc_plugin *pl = &cfg->plugins[i];
        if (reqpath_in(pl->type, reqpath_tokenisers, sizeof reqpath_tokenisers / sizeof *reqpath_tokenisers))
            tokenises = true;
        if (pl->impl->kind != SCHED_PROFILE_HANDLER &&
            !reqpath_in(pl->type, reqpath_service_pickers,
                        sizeof reqpath_service_pickers / sizeof *reqpath_service_pickers))
            service = false;
    }
    /* docs/VALIDATION.md "Request path" gives each figure's source */
    reqpath p = {.hop_us = 100, .server_tokenize_us = 1.0};
    if (!service) {
        p.gateway_us = 500;
        p.body_us = 2.9;
        p.scoring_us = 1000;
    }
    if (tokenises)
        p.tokenize_us = 1.5;
    return p;
}

int reqpath_parse(const yt_doc *d, const yt_node *n, const char *path, reqpath *inout, kv_err *err)
{
    if (!n || yt_is_null(n))
        return KV_OK;
    if (n->kind != YT_MAP)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': expected a map", path);
    const struct {
        const char *key;
        double *us;
    } fields[] = {
        {"hop", &inout->hop_us},
        {"gateway", &inout->gateway_us},
        {"scoring", &inout->scoring_us},
        {"body_per_token", &inout->body_us},
        {"tokenize_per_token", &inout->tokenize_us},
        {"server_tokenize_per_token", &inout->server_tokenize_us},
    };
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        const yt_node *v = yt_get(n, fields[i].key);
        if (yt_is_null(v))
            continue;
        char what[128];
        snprintf(what, sizeof what, "%s.%s", path, fields[i].key);
        double s;
        if (yt_duration(d, v, what, &s, err))
            return KV_EINVAL;
        if (s > 60.0)
            return yt_error(d, v, err, KV_ERANGE, "field '%s': longer than a minute", what);
        *fields[i].us = s * 1e6;
    }
    return wl_check_keys(d, n, path, err);
}

sim_time reqpath_inbound(const reqpath *p, uint32_t n_prompt)
{
    double per_token = p->body_us + p->tokenize_us + p->server_tokenize_us;
    return (sim_time)llround(p->hop_us + p->gateway_us + p->scoring_us + per_token * (double)n_prompt);
}

sim_time reqpath_outbound(const reqpath *p)
{
    return (sim_time)llround(p->hop_us + p->gateway_us);
}
