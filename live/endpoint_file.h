/* endpoint_file: ./epp's endpoints from the file of llm-d-router's file-discovery plugin
 * (policies/file_discovery.h), read at start-up and, with watchFile, re-read whenever the
 * file changes, for running without Kubernetes (bare metal, Slurm, a laptop).
 *
 * The file (YAML or JSON, at most 1 MiB), as llm-d-router reads it:
 *   endpoints:
 *   - name: vllm-0            # required, unique in the file
 *     namespace: prod         # optional, default "default"
 *     address: 10.0.0.1       # required, a literal IPv4 address
 *     port: "8000"            # required, 1-65535 (llm-d wants a string; a number loads too)
 *     metricsHost: ...        # optional; kvroute scrapes address:port, so another value warns
 *     labels: {llm-d.ai/role: decode}
 * Each entry becomes the endpoint "address:port" (routed to, scraped, matched against
 * KV-event topics), with name and namespace for logs and labels for the label filters.
 *
 * Errors are "file:line:col: field 'endpoints[i].port': ..." At start-up any error fails
 * (llm-d-router: the discovery plugin never becomes ready). On a reload, a file that
 * cannot be read or parsed leaves the set as it was; a bad entry is skipped with its error
 * and the others are applied (llm-d-router's reload: valid entries upserted, the rest of
 * the set deleted). Change detection polls stat (inode, size, mtime, ctime): an edit in
 * place, an atomic rename and a ConfigMap symlink swap all change one of them; a change is
 * loaded once stat has stayed the same for one poll interval (default 250 ms).
 *
 * Threads: epfile_load runs on the caller's thread; epfile_start's watcher is one thread
 * that only calls epset_sync (endpoints.h: locked) and the warning sink. */
#ifndef KVROUTE_ENDPOINT_FILE_H
#define KVROUTE_ENDPOINT_FILE_H

#include <stdbool.h>

#include "endpoints.h"
#include "kverr.h"

#define EPFILE_MAX_BYTES (1u << 20)

/* Reads path and makes s exactly its endpoints. strict: any bad entry fails and s is
 * unchanged; otherwise bad entries are skipped and each error goes to warn. warn also
 * receives what is accepted and ignored (unknown fields, metricsHost). warn may be NULL. */
int epfile_load(epset *s, const char *path, bool strict, void (*warn)(void *ctx, const char *msg), void *warn_ctx,
                kv_err *err);

typedef struct epfile_config {
    epset *endpoints;
    const char *path;
    bool watch;                  /* watchFile */
    int poll_ms;                 /* stat interval when watching; <= 0: 250 */
    void (*warn)(void *ctx, const char *msg);   /* warnings and reload errors; NULL: none */
    void *warn_ctx;
} epfile_config;

typedef struct epfile epfile;
/* The strict first load (its error, NULL returned), then the watcher when watch is set. */
epfile *epfile_start(const epfile_config *cfg, kv_err *err);
/* Reloads so far that changed the file's content as seen (tests wait on it). */
unsigned long epfile_reloads(epfile *w);
void epfile_stop(epfile *w);

#endif
