/* file_discovery: the contract between the file-discovery plugin (llm-d-router's
 * EndpointDiscovery from a YAML or JSON file, for bare metal, Slurm and local runs) and
 * the drivers. The plugin owns its parameters; ./epp reads and watches the file
 * (live/endpoint_file.h) when the config's dataLayer.discovery names the plugin; ./sim's
 * endpoints are its scenario's replicas, so it only warns that the plugin is unused there.
 *
 * Threads: the parameters are set when the scheduler is built and read-only after. */
#ifndef KVROUTE_FILE_DISCOVERY_H
#define KVROUTE_FILE_DISCOVERY_H

#include <stdbool.h>

#include "config.h"
#include "kverr.h"
#include "scheduler.h"

#define FILE_DISCOVERY_SERVICE "endpoint-discovery"

typedef struct file_discovery {
    const char *plugin;   /* the plugin's name, for messages */
    const char *path;     /* 'path': the endpoints file (required) */
    bool watch_file;      /* 'watchFile': reload it when it changes (default false) */
} file_discovery;

/* The discovery plugin the config's dataLayer.discovery names: *out NULL when it names
 * none. KV_EINVAL naming the plugin when it names one that discovers no endpoints. */
int file_discovery_of(const sched *s, const epc_config *cfg, const file_discovery **out, kv_err *err);

#endif
