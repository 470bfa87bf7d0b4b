/* k8s: Kubernetes endpoint discovery for ./epp (docs/upstream/epp.md §5; GIE pod reconciler and
 * datastore), through the API server with the pod's service account, libcurl + jansson.
 *
 * Which pods: those matching a label selector -- given directly (--endpoint-selector
 * k=v,... with target ports), or read once at start from an InferencePool
 * (--pool-name/--pool-namespace: GET .../inferencepools/<name>, spec.selector.matchLabels
 * and spec.targetPorts[].number; v1alpha2's flat spec.selector and targetPortNumber are
 * read too). Only Ready pods with a podIP and no deletionTimestamp count. Each pod x
 * target port i is one endpoint "<pod>-rank-<i>" at podIP:port, labels = the pod's.
 *
 * How: LIST pods (labelSelector), then WATCH from the list's resourceVersion, applying
 * ADDED/MODIFIED/DELETED events one line at a time and handing the whole resulting set
 * to epset_sync after each change; a watch that ends is resumed from the last
 * resourceVersion, an ERROR event (410 Gone) or a failed request leads to a fresh LIST
 * after a short back-off.
 *
 * The InferencePool is followed the same way (fieldSelector metadata.name=<pool>), as
 * GIE's pool reconciler does: a new selector re-lists the pods with it (the pod watch is
 * ended and restarted), new target ports re-publish the endpoints, and a deleted pool
 * empties the endpoint set until it is created again (the index entries of endpoints
 * that leave are purged by ingestion, as for any departing endpoint).
 *
 * With cfg.objectives, the pool namespace's InferenceObjectives
 * (inference.networking.x-k8s.io/v1alpha2) whose spec.poolRef.name is the pool (any, in
 * selector mode) are kept in that table: name -> spec.priority (absent: 0). Without the
 * CRD (404) the watcher says so once and looks again now and then; requests then have
 * priority 0.
 *
 * With cfg.model_rewrites, the namespace's InferenceModelRewrites whose spec.poolRef.name
 * is the pool are kept in that table the same way (a missing CRD is waited out likewise:
 * no rewrites meanwhile).
 *
 * In-cluster defaults (base_url NULL): https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
 * bearer token and CA from /var/run/secrets/kubernetes.io/serviceaccount/. With base_url
 * (out of cluster, from a kubeconfig: live/kubeconfig.h) only the credentials given are
 * used: a token or token file (none: no Authorization header), a CA file or PEM in memory
 * (none: the system's CA store), or no verification at all; http:// is accepted (tests
 * use a plain-http fake API server).
 *
 * Threads: one thread per followed collection (pods, pool, objectives, rewrites), each owning its
 * HTTP transfers; the pod table, selector and ports are under one mutex (the pool thread
 * changes them); they write only to the epset and the objectives and rewrites tables
 * (all thread-safe). k8s_synced/k8s_selector/k8s_get_stats may be called from any thread. */
#ifndef KVROUTE_K8S_H
#define KVROUTE_K8S_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "endpoints.h"
#include "kverr.h"

#define K8S_MAX_PORTS 8

typedef struct k8s_config {
    epset *endpoints;             /* borrowed */
    const char *base_url;         /* NULL: in-cluster https URL from the environment */
    const char *token_path;       /* NULL: in cluster the service-account token, else none */
    const char *token;            /* the bearer token itself; wins over token_path */
    const char *ca_path;          /* NULL: in cluster the service-account ca.crt, else ca_pem */
    const char *ca_pem;           /* CA bundle in memory, NUL-terminated (certificate-authority-data) */
    bool insecure_skip_tls_verify;
    const char *ns;               /* namespace; NULL: $NAMESPACE, then "default" (GIE) */
    const char *selector;         /* "k=v,..." (with target_ports), or NULL with pool_name */
    int target_ports[K8S_MAX_PORTS];
    size_t n_target_ports;
    const char *pool_name;        /* InferencePool to read selector and ports from */
    const char *pool_group;       /* NULL: "inference.networking.k8s.io" (v1) */
    int retry_ms;                 /* back-off before a re-list; <= 0: 1000 */
    struct objectives *objectives; /* InferenceObjectives to follow (borrowed); NULL: not followed */
    struct model_rewrites *model_rewrites; /* InferenceModelRewrites to follow (borrowed); NULL: not */
} k8s_config;

typedef struct k8s_stats {
    uint64_t lists, watches, events, relists, errors;
    uint64_t pods_ready;          /* eligible pods now */
    uint64_t pool_changes;        /* InferencePool selector/port changes, deletions, re-creations */
} k8s_stats;

typedef struct k8s_watcher k8s_watcher;

/* Reads the pool (when named) and does the first LIST before returning, so a bad
 * selector, a missing pool, a refused token or an unreachable API server fail start-up
 * with a message naming the URL and status. Then watches on its own thread. */
k8s_watcher *k8s_start(const k8s_config *cfg, kv_err *err);
void k8s_stop(k8s_watcher *w);
bool k8s_synced(const k8s_watcher *w);
void k8s_get_stats(const k8s_watcher *w, k8s_stats *out);
/* The selector in use ("k=v,..."), e.g. read from the pool, copied into out. */
void k8s_selector(k8s_watcher *w, char *out, size_t cap);

/* Without HTTP or threads, for the fuzz harness: a watcher (k8s_stop frees it) whose
 * API-server replies are handed in and read exactly as its feeds read theirs. A LIST
 * reply replaces the collection's state (KV_EPARSE for bad JSON, else what applying it
 * returns); a WATCH reply's body is fed to the line splitter in chunks of chunk bytes
 * (0: whole), each event applied as it completes; false when an event failed or the
 * body overflowed (the feed would then re-list). Only followed collections are fed, as
 * k8s_start follows them: the pool when named without a selector, objectives and
 * rewrites when cfg names their tables. */
typedef enum k8s_collection { K8S_PODS, K8S_POOL, K8S_OBJECTIVES, K8S_REWRITES } k8s_collection;
k8s_watcher *k8s_detached(const k8s_config *cfg, kv_err *err);
int k8s_feed_list(k8s_watcher *w, k8s_collection c, const char *body, size_t len, kv_err *err);
bool k8s_feed_watch(k8s_watcher *w, k8s_collection c, const char *body, size_t len, size_t chunk);

/* Parses "8000,8001" into ports; KV_EINVAL naming the item. */
int k8s_parse_ports(const char *list, int *ports, size_t *n, kv_err *err);

#endif
