/* endpoints: the live endpoint set of ./epp -- which model-server endpoints exist now,
 * their labels and their latest scraped metrics -- shared by the ext-proc workers (they
 * schedule over it), the scraper (writes metrics), KV-event ingestion (matches topic pod
 * ids, follows arrivals and departures) and the Prometheus exporter (pool gauges).
 *
 * Sources: a static list (--endpoints ip:port,... or a file, epset_parse_list) or the
 * Kubernetes watcher (live/k8s.h), both of which hand the whole desired set to
 * epset_sync; an endpoint keeps its id, metrics and in-flight count across syncs for as
 * long as its name stays in the set.
 *
 * Threads: one mutex. epset_acquire/epset_release bracket a scheduling call (they are
 * the extproc_pool callbacks: the endpoints stay valid and unchanged until release);
 * every other call takes the lock briefly and copies out. Writers bump a generation
 * counter that readers poll (epset_generation) instead of registering callbacks, so no
 * foreign code ever runs under the lock.
 *
 * Staleness (GIE backend/metrics): metrics older than stale_s (default 2 s) read as
 * sched_metrics.valid = false at acquire. A scrape failure keeps the last values, which
 * thus turn invalid after stale_s; the endpoint itself stays a candidate, since GIE only
 * drops endpoints on Kubernetes readiness, never on scrape failures -- scorers then see
 * it as an endpoint without metrics. */
#ifndef KVROUTE_ENDPOINTS_H
#define KVROUTE_ENDPOINTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"
#include "scheduler.h"

/* One desired endpoint; epset_sync copies every string. */
typedef struct ep_spec {
    const char *name;             /* "ip:port": the address routed to and scraped */
    const char *pod;              /* "<pod>-rank-<idx>" for logs; NULL = name */
    const char *ns;               /* namespace; NULL = "" */
    const sched_kv *labels;
    size_t n_labels;
} ep_spec;

typedef struct epset epset;

/* stale_s <= 0: 2 s. now: the clock staleness is measured on (CLOCK_MONOTONIC seconds
 * when NULL; tests pass their own). */
epset *epset_new(double stale_s, double (*now)(void *ctx), void *now_ctx, kv_err *err);
void epset_free(epset *s);

/* Makes the set exactly specs (names must be unique ip:port). KV_EINVAL naming the
 * entry for a bad or duplicate name; the set is then unchanged. */
int epset_sync(epset *s, const ep_spec *specs, size_t n, kv_err *err);
/* A static list: "ip:port" items separated by commas, blanks or newlines; '#' starts a
 * comment to the end of the line (so a file can be passed as text). what names the
 * source in messages ("--endpoints", a file name). Syncs the set to it. */
int epset_parse_list(epset *s, const char *text, const char *what, kv_err *err);
int epset_load_file(epset *s, const char *path, kv_err *err);

/* extproc_pool callbacks (ctx = the epset). */
size_t epset_acquire(void *ctx, sched_endpoint *const **eps);
void epset_release(void *ctx);
/* Between acquire and release (ctx = the epset, ep one of the acquired endpoints):
 * seconds since ep's last successful scrape, INFINITY if it never had one. */
double epset_metrics_age(void *ctx, const sched_endpoint *ep);

uint64_t epset_generation(const epset *s);
size_t epset_count(const epset *s);

/* A copy of the names (and generation) for threads that follow the set. */
typedef struct epset_snap {
    uint64_t generation;
    char **names;
    size_t n;
} epset_snap;
int epset_snapshot(const epset *s, epset_snap *out, kv_err *err);
void epset_snap_free(epset_snap *snap);
bool epset_snap_has(const epset_snap *snap, const char *name);

/* Records a successful scrape of the endpoint (copied; the LoRA name arrays too), stamped
 * now. false if the endpoint has left the set. */
bool epset_set_metrics(epset *s, const char *name, const sched_metrics *m);

/* KV-event topics name a pod by "ip" (llm-d up to v0.6) or "ip:port" (v0.7 on). Exact:
 * pod equals an endpoint name. Loose: pod is a bare ip and an endpoint has that ip (the
 * lowest port wins when a pod has several ranks). An ip:port naming no endpoint never
 * matches another port: with data-parallel ranks that would credit one rank's cache to
 * another. Writes the endpoint name; EPSET_NO_MATCH when nothing matches. */
typedef enum { EPSET_NO_MATCH = 0, EPSET_EXACT = 1, EPSET_LOOSE = 2 } epset_match;
epset_match epset_match_pod(const epset *s, const char *pod, size_t len, char *name, size_t cap);

/* Data-parallel ranks. A DP pod serves rank i on its own ip:port, the i-th lowest port of
 * its host (llm-d's RankIndex: the endpoint's position in the pool's targetPorts), and vLLM
 * offsets each rank's KV-event and replay sockets by the rank (socketPort + i).
 * epset_rank_index: that position of endpoint name, -1 when it is not in the set.
 * epset_match_rank: the endpoint a batch with data_parallel_rank rank belongs to, when its
 * topic named endpoint name. All ranks of a pod share one topic (kv@<ip:port>@<model>,
 * the pod's first port) and tell themselves apart by the batch's rank, so from a host's
 * rank-0 endpoint rank r > 0 maps to the host's rank-r endpoint; a topic naming any other
 * endpoint names that rank itself, and rank 0 or no rank keeps the topic's endpoint (two
 * servers without DP on one host both send rank 0; name is then not looked up: the
 * caller matched it). false when the rank's endpoint does not exist (a rank the set does
 * not list). */
int epset_rank_index(const epset *s, const char *name);
bool epset_match_rank(const epset *s, const char *name, int64_t rank, char *out, size_t cap);

/* Pool gauges over endpoints with valid metrics: ready = endpoints in the set. */
typedef struct epset_summary {
    size_t ready, with_metrics;
    double avg_kv_usage, avg_waiting;
} epset_summary;
void epset_get_summary(epset *s, epset_summary *out);

#endif
