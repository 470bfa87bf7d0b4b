/* metrics-data-source (llm-d-router data layer): polls each endpoint's Prometheus metrics.
 * kvroute's drivers always do this (./epp scrapes http://<endpoint>/metrics every 50 ms;
 * the simulator samples its servers every scrape_interval), so the plugin is what a
 * config declaring it expects: the scrape it describes. scheme "http" and path "/metrics"
 * are the scrape's own; any other scheme or path, TLS settings (insecureSkipVerify,
 * caCertPath, clientCertPath, clientKeyPath) and interval are accepted with a warning
 * naming each, since the scraper does not change for them. */
#include <string.h>

#include "policy_util.h"

static int mds_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    const char *scheme = "http", *path = "/metrics";
    if (pu_string(p, pp, pp->node, NULL, "scheme", &scheme, err) || pu_string(p, pp, pp->node, NULL, "path", &path, err))
        return KV_EINVAL;
    if (strcmp(scheme, "http") != 0 || strcmp(path, "/metrics") != 0)
        sched_warn(env, "%s: plugin '%s' (metrics-data-source): scheme '%s' and path '%s' are ignored: kvroute scrapes "
                "http://<endpoint>/metrics", yt_name(pp->doc), p->name, scheme, path);
    PU_IGNORE(p, pp, env,
              "kvroute scrapes over plain HTTP at its own interval (50 ms in ./epp, scrape_interval in ./sim)",
              "insecureSkipVerify", "caCertPath", "clientCertPath", "clientKeyPath", "interval");
    return KV_OK;
}

const sched_plugin_type metrics_data_source_type = {
    .type = "metrics-data-source",
    .kind = SCHED_REQUEST_CONTROL,
    .init = mds_init,
};
