/* file-discovery (llm-d-router data layer): the EndpointDiscovery plugin reading the
 * endpoints from a file instead of Kubernetes (see file_discovery.h). Parameters as
 * llm-d-router's: path (required), watchFile (default false). The file itself is the
 * driver's business: the plugin is built in ./sim and ./kvctl config too, where nothing
 * reads it, so a path that exists only on the EPP's host still loads there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_discovery.h"
#include "policy_util.h"

static int fd_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    (void)env;
    file_discovery fd = {.plugin = p->name};
    if (pu_string(p, pp, pp->node, NULL, "path", &fd.path, err) ||
        pu_bool(p, pp, pp->node, NULL, "watchFile", &fd.watch_file, err))
        return KV_EINVAL;
    if (!fd.path || !*fd.path)
        return pu_error(p, pp, pp->node, "path", err, "required (the endpoints file)");
    file_discovery *st = malloc(sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: plugin '%s': out of memory", yt_name(pp->doc), p->name);
    *st = fd;
    p->state = st;
    return KV_OK;
}

static void fd_fini(sched_plugin *p) { free(p->state); }

static void *fd_service(sched_plugin *p, const char *what)
{
    return strcmp(what, FILE_DISCOVERY_SERVICE) == 0 ? p->state : NULL;
}

static void fd_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const file_discovery *st = p->state;
    snprintf(buf, cap, "path: %s\nwatchFile: %s\n", st->path, st->watch_file ? "true" : "false");
}

int file_discovery_of(const sched *s, const epc_config *cfg, const file_discovery **out, kv_err *err)
{
    *out = NULL;
    if (!cfg->discovery)
        return KV_OK;
    sched_plugin *p = sched_plugin_by_name(s, cfg->discovery);
    void *st = p && p->type->service ? p->type->service(p, FILE_DISCOVERY_SERVICE) : NULL;
    if (!st)
        return kv_err_set(err, KV_EINVAL,
                          "%s: field 'dataLayer.discovery.pluginRef': plugin '%s' (%s) discovers no endpoints "
                          "(kvroute's endpoint discovery plugin is file-discovery)",
                          yt_name(cfg->doc), cfg->discovery, p ? p->type->type : "?");
    *out = st;
    return KV_OK;
}

const sched_plugin_type file_discovery_type = {
    .type = "file-discovery",
    .kind = SCHED_REQUEST_CONTROL,
    .init = fd_init,
    .fini = fd_fini,
    .service = fd_service,
    .describe = fd_describe,
};
