/* ingest: vLLM KV events over ZMQ into the kvindex (docs/upstream/kv-events-and-index.md §1, §3;
 * llm-d-kv-cache's events pool).
 *
 * Modes: centralised (discover_pods false) binds one SUB socket on zmq_endpoint that
 * every vLLM pod connects to; pod discovery connects the SUB to tcp://<ip>:<socket_port>
 * of every endpoint in the epset and follows it as pods come and go. The SUB takes every
 * topic and the receiver filters on topic_filter ("kv@"), so that a message on another
 * topic -- vLLM's default is the empty one -- is seen and reported (cfg.diag) instead of
 * vanishing in libzmq; a message must be exactly [topic, seq >= 8 bytes, payload].
 *
 * Trust: a topic's pod id must name a known endpoint (epset_match_pod: "ip:port", or a
 * bare "ip" matched loosely, with one warning per pod saying which form it uses); events
 * of any other pod are rejected and counted, so a stray publisher cannot steer traffic.
 * Index slots are named by the endpoint name (what the precise scorer looks up). When an
 * endpoint leaves the set, its entries are removed from every source's index
 * (kvindex_endpoint_remove).
 *
 * Order and sharding: events go to concurrency worker threads by FNV-1a-32 of the
 * endpoint name a topic resolves to, modulo concurrency (llm-d shards by the topic pod
 * id; resolving first keeps ip and ip:port topics of one endpoint, and that endpoint's
 * removal, on one worker, so a removal can never interleave with its own stores).
 *
 * Sequence numbers: per endpoint (seqtrack). A duplicate is dropped. On a gap or a
 * publisher restart, with replay_port set, the worker asks tcp://<ip>:<replay_port> for
 * the missing batches (live/replay.h) and applies those before the live one (the fetch
 * blocks that worker, and so the other pods of its shard, for at most replay_timeout_ms
 * per reply: gaps are rare, and order within a pod must hold); without a
 * replay socket, or when replay fails, the loss is counted, a warning says the pod's
 * entries may be stale and the endpoint is marked so (stale_endpoints) until it sends
 * AllBlocksCleared or leaves (llm-d has no gap handling at all).
 *
 * Backlog bound: when the workers fall behind (a stalled process, a busy machine), what
 * waits is bounded in bytes by queue_bytes, half for the hand-off queue (the receiver
 * drops a message that would pass it, counted in queue_dropped; the pod's next message
 * shows the gap, handled as above) and half for libzmq's receive pipes (ZMQ_RCVHWM per
 * pod, from the largest message seen; past it libzmq stops reading and the publisher's
 * PUB drops, which again shows as a gap). After a backlog of more than
 * min(queue_bytes / 4, 8 MiB) (queued for the workers, or found waiting in the receive
 * pipes in one go), once none was seen for a second, the receiver calls malloc_trim, so
 * the memory it took goes back to the system (memory_trims).
 *
 * Threads: the receiver thread owns the SUB socket, the epset following, pod matching and
 * the hand-off (inproc PUSH/PULL, frames moved without copying); each worker owns its
 * decoder, one kvingest per source and its seqtrack, and writes the sources' shared
 * kvindexes (thread-safe). Counters are
 * C11 atomics; ingest_get_stats may be called from any thread. ingest_stop joins all. */
#ifndef KVROUTE_INGEST_H
#define KVROUTE_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "blockkeys.h"
#include "endpoints.h"
#include "kverr.h"
#include "kvdiag.h"
#include "kvevents.h"
#include "kvindex.h"
#include "precise_prefix_cache_scorer.h"
#include "replay.h"
#include "scheduler.h"

typedef struct ingest_config {
    /* The indexes this subscription feeds, each with its key context: ingest_start copies
     * the sources; their indexes are borrowed and must outlive the ingest. Each batch is
     * decoded once and applied to every one of them. */
    sched_kvsource *const *sources;
    size_t n_sources;
    epset *endpoints;             /* borrowed */
    char zmq_endpoint[256];       /* centralised mode: bind address ("tcp://" "*:5557") */
    char topic_filter[64];        /* "kv@" */
    int concurrency;              /* worker threads; <= 0: 4 */
    bool discover_pods;
    int socket_port;              /* pod discovery: the pods' PUB port */
    int replay_port;              /* vLLM replay ROUTER port on each pod; 0 = none */
    int replay_timeout_ms;        /* per reply; <= 0: 1000 */
    size_t queue_bytes;           /* backlog bound (see above); 0: INGEST_QUEUE_BYTES_DEFAULT */
    kvdiag *diag;                 /* borrowed, optional: told of every message outside
                                     topic_filter and every event message applied */
} ingest_config;

#define INGEST_QUEUE_BYTES_DEFAULT ((size_t)64 << 20)

/* Fills cfg for sources that share one kvEventsConfig (the first's settings are used);
 * replay stays off until ingest_parse_replay sets it. */
void ingest_config_from_kvsource(ingest_config *cfg, sched_kvsource *const *srcs, size_t n, epset *endpoints);

/* --kv-events-replay-endpoint: the value of vLLM's kv_events_config.replay_endpoint as
 * the pods are started with ("tcp://" "*:5558", a wildcard host, since every pod binds its
 * own), or just the port. The replay ROUTER of a pod is then tcp://<pod-ip>:<port>, in
 * both centralised and discovery mode. Sets cfg->replay_port; KV_EINVAL naming the value. */
int ingest_parse_replay(ingest_config *cfg, const char *spec, kv_err *err);

typedef struct ingest_stats {
    uint64_t messages;                    /* 3-frame messages received */
    uint64_t bad_frames;                  /* messages without exactly 3 frames */
    uint64_t rejected_pods;               /* topics naming no known endpoint */
    uint64_t loose_matches;               /* messages whose pod id matched only loosely */
    uint64_t decode_errors[KVEV_ERR_COUNT]; /* by reason, topic and seq frame included */
    uint64_t batches;                     /* applied (once, however many sources) */
    uint64_t events[KVEV_TYPE_COUNT];     /* likewise */
    uint64_t blocks_stored, blocks_removed, orphans;   /* summed over the sources' indexes */
    uint64_t apply_errors;                /* kvindex refused a batch part-way (out of memory) */
    uint64_t duplicates, gaps, restarts;
    uint64_t missed;                      /* batches a gap or restart skipped */
    uint64_t replays, replayed_batches, replay_failures;
    uint64_t lost;                        /* missed batches not recovered by replay */
    uint64_t endpoints_removed;           /* index slots dropped because the endpoint left */
    uint64_t stale_endpoints;             /* now: endpoints with unrecovered losses since their last
                                             AllBlocksCleared (their entries may be stale) */
    uint64_t lag_count;                   /* batches with a timestamp */
    double lag_last_s, lag_max_s, lag_sum_s; /* receive time - batch ts (vLLM's wall clock) */
    uint64_t queued_bytes;                /* now: received, not yet applied (hand-off queue) */
    uint64_t queue_peak_bytes;            /* the most queued_bytes has been */
    uint64_t queue_limit_bytes;           /* cfg.queue_bytes (the hand-off queue gets half) */
    uint64_t queue_dropped;               /* messages dropped because the queue was full */
    uint64_t memory_trims;                /* malloc_trim calls after a backlog drained */
} ingest_stats;

typedef struct ingest ingest;

/* Binds (centralised mode) and starts the threads. KV_EIO naming the address when the
 * bind fails (busy port, bad endpoint), KV_EINVAL for a bad config. */
ingest *ingest_start(const ingest_config *cfg, kv_err *err);
/* ./epp's wiring: feeds every source of srcs[0..n), with one ingest per distinct
 * kvEventsConfig (sources that declare the same one share its socket), with opts's
 * replay_port, replay_timeout_ms, queue_bytes and diag for all, and opts's zmq_endpoint
 * (when not "") in place of every kvEventsConfig's zmqEndpoint (--kv-events-zmq-endpoint) (opts NULL: the defaults, no
 * replay). out (room for n) receives the ingests in the order of their first source,
 * *n_out how many; on error none is left running. */
int ingest_start_sources(sched_kvsource *const *srcs, size_t n, epset *endpoints, const ingest_config *opts,
                         ingest **out, size_t *n_out, kv_err *err);
/* The sources an ingest feeds (its copies of cfg.sources), and how many. */
const sched_kvsource *ingest_sources(const ingest *g, size_t *n);
/* The address actually bound (port resolved when zmq_endpoint used "*"); "" in discovery mode. */
const char *ingest_endpoint(const ingest *g);
void ingest_stop(ingest *g);
void ingest_get_stats(const ingest *g, ingest_stats *out);

/* Without sockets or threads, for the fuzz harness: an ingest (one worker, no replay:
 * cfg->replay_port must be 0) whose messages are handed in by ingest_feed and handled on
 * the calling thread exactly as the receiver and then a worker handle a received one:
 * frame count, topic, seq and pod checks, sequence tracking, decoding, applying to
 * every source's index. f holds the first min(n, 3) frames of an n-frame message (replay.h's frame
 * view). ingest_stop frees it; ingest_get_stats counts as for a running ingest. */
typedef replay_frame ingest_frame;
ingest *ingest_detached(const ingest_config *cfg, kv_err *err);
void ingest_feed(ingest *g, const ingest_frame *f, size_t n);

/* FNV-1a 32-bit (llm-d's shard hash). */
uint32_t ingest_fnv1a32(const char *s, size_t len);

#endif
