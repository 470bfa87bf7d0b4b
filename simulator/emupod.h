/* emupod: one emulated vLLM pod of ./sim serve: the simulator's own replica model
 * (simulator/server.c, not a copy) stepped against the wall clock, its KV events
 * published on ZMQ exactly as vLLM's ZmqEventPublisher does, and its replay socket.
 *
 * Engine loop: a step starts when the pod has work and no step is in flight; the
 * model's step time (divided by srv.speedup, in simsrv_step) later a libevent timer ends it: every token
 * of the step leaves through its request's sink, finished requests complete, and the
 * step's KVEventBatch is published as [topic "kv@<ip:port>@<model>", seq (8 bytes
 * big-endian), payload] and kept in a bounded replay buffer. The next step starts at
 * the previous one's scheduled end (not at the timer's late firing), so timer lateness
 * delays tokens but never accumulates. Only this file reads a clock; the model itself
 * stays a pure function of what is submitted.
 *
 * Replay: a ROUTER bound per pod answers vLLM's protocol: [id, "", start_seq(8 BE)] ->
 * [id, "", seq, payload] for every buffered seq >= start_seq, then [id, "", 2^64-1, ""].
 *
 * Faults: a batch may be dropped on the PUB side (it stays in the replay buffer, so a
 * router fills the gap by replay; never the first after a start or restart, since no
 * router could see that gap); emupod_restart is a pod restart (in-flight requests
 * fail, the KV cache and metrics start empty, the sequence restarts at 0 with an
 * AllBlocksCleared batch).
 *
 * Threads: every pod of a process runs on one libevent event loop (the serve main
 * thread); nothing here is thread-safe, and sinks are called from that loop. */
#ifndef KVROUTE_SIM_EMUPOD_H
#define KVROUTE_SIM_EMUPOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "emumetrics.h"
#include "kverr.h"
#include "kvevents.h"
#include "server.h"

struct event_base;

typedef struct emupod_config {
    simsrv_config srv;                 /* the replica model (emit_kv_events, pod_id, model_name set here;
                                        * srv.speedup: step time / speedup = wall time, > 0) */
    const char *pod_id;                /* "ip:port" (the topic's pod, the HTTP address) */
    const char *served_model;          /* the topic's model and /metrics model_name */
    const char *kv_bind;               /* PUB binds here ("tcp://ip:port"), or */
    const char *kv_connect;            /* PUB connects here; both NULL: no events */
    const char *replay_bind;           /* ROUTER binds here, or NULL */
    size_t replay_steps;               /* batches kept for replay (> 0 with replay_bind) */
    double drop_batches;               /* probability a batch is not sent on PUB */
    uint64_t seed;                     /* for the drop draws */
} emupod_config;

/* Where a request's output goes; called from the event loop. */
typedef struct emupod_sink {
    void (*token)(void *ctx, uint32_t token_id);
    /* KV_OK after the last token; KV_EIO when the pod restarted under it. */
    void (*done)(void *ctx, int status);
    void *ctx;
} emupod_sink;

typedef struct emupod emupod;
typedef struct emupod_req emupod_req;

emupod *emupod_new(struct event_base *base, void *zctx, const emupod_config *cfg, kv_err *err);
void emupod_free(emupod *p);

/* Queues a request (tokens copied) generating exactly max_tokens tokens. KV_ERANGE when
 * the model could never serve it (simsrv_submit's rule), KV_ENOMEM. *out identifies it
 * for emupod_detach until its sink's done ran. */
int emupod_submit(emupod *p, const uint32_t *tokens, uint32_t n, uint32_t max_tokens, const emupod_sink *sink,
                  emupod_req **out);
/* The client went away: no more sink calls, and the request leaves the model as vLLM
 * aborts one (simsrv_abort: its blocks are freed, their hashes stay cached). */
void emupod_detach(emupod_req *r);

int emupod_restart(emupod *p, kv_err *err);

uint32_t emupod_vocab(const emupod *p);
uint32_t emupod_max_model_len(const emupod *p);
/* The metrics a /metrics reply shows. */
void emupod_view(const emupod *p, emumet_view *v, const emumet_pod **m);

typedef struct emupod_stats {
    uint64_t batches, dropped, replays;
} emupod_stats;
void emupod_stats_get(const emupod *p, emupod_stats *st);

#endif
