/* kvdiag: why the precise prefix score is 0 on every pod. A new user's KV events can
 * be received and still never match a request: the topic names another model than the
 * requests (a --served-model-name alias), vLLM publishes on its default empty topic (the
 * receiver cannot tell which pod or model sent it), a pod the EPP routes to sends no
 * events at all, or vLLM's block size is not the index's. Each such cause is counted by
 * reason and logged once per (pod, model) with the fix, and kept as an "issue" for the
 * inspection endpoints (live/debugapi.h) and `kvctl doctor`.
 *
 * A model mismatch is counted for each event message whose model no request asked for
 * (once a request was seen), and for each request whose model no pod's events carry
 * (once events were seen); a pool serving several models, each with its events, has
 * none.
 *
 * Who calls what: the KV-event ingest (live/ingest.h) reports every message whose topic
 * is outside the topic filter (kvdiag_topic) and every event message it applies
 * (kvdiag_events); ./epp's decision hook reports each routed request's model and target
 * (kvdiag_request). Staleness is judged against the routing: a pod that was routed
 * requests stale_after_s ago and sent no event since is stale (an idle pod sending
 * nothing is not); it is checked at most once a second, on a kvdiag_request or a
 * kvdiag_check.
 *
 * Why no hash-seed reason: kvroute computes request keys from the events' token ids
 * with the config's own tokenProcessorConfig (hashSeed, algorithm), so vLLM's
 * PYTHONHASHSEED and its block hashes never need to equal anything of the EPP's; keys
 * that never match while the tokens do can then only come from the model (or LoRA)
 * name in the chain root, which is the model-mismatch reason.
 *
 * Bounded: at most KVDIAG_MAX_PODS pods, KVDIAG_MAX_MODELS requested models and
 * KVDIAG_MAX_ISSUES issues are remembered; past that, occurrences are still counted.
 *
 * Threads: every function may be called from any thread (one mutex; each call is a few
 * string compares over small arrays, once per event message or routed request). */
#ifndef KVROUTE_KVDIAG_H
#define KVROUTE_KVDIAG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

typedef enum kvdiag_reason {
    KVDIAG_EMPTY_TOPIC = 0,       /* vLLM's default topic "": dropped, no pod or model named */
    KVDIAG_FOREIGN_TOPIC = 1,     /* a topic that does not start with the topic filter */
    KVDIAG_MODEL_MISMATCH = 2,    /* events for a model no request asks for */
    KVDIAG_STALE = 3,             /* routed to, and no events from the pod since */
    KVDIAG_BLOCK_SIZE = 4,        /* vLLM's block size cannot be keyed at the index's */
    KVDIAG_REASON_COUNT = 5,
} kvdiag_reason;

/* "empty_topic", "foreign_topic", "model_mismatch", "stale", "block_size" */
const char *kvdiag_reason_name(kvdiag_reason r);

#define KVDIAG_MAX_PODS 4096
#define KVDIAG_MAX_MODELS 64
#define KVDIAG_MAX_ISSUES 256

typedef struct kvdiag_config {
    double stale_after_s;         /* <= 0: 30 */
    double (*now)(void *ctx);     /* seconds, monotonic; NULL: monoclock_s */
    void *now_ctx;
} kvdiag_config;

typedef struct kvdiag kvdiag;

kvdiag *kvdiag_new(const kvdiag_config *cfg, kv_err *err);
void kvdiag_free(kvdiag *d);   /* NULL is a no-op */

/* A message whose topic frame (topic[0..len)) does not start with filter; peer is the
 * sender's address as libzmq reports it, or NULL when unknown. */
void kvdiag_topic(kvdiag *d, const char *peer, const void *topic, size_t len, const char *filter);
/* An event message from endpoint pod (as resolved from its topic) for model, applied with
 * sequence number seq. engine_block_size is the block_size of its first BlockStored (0:
 * none in the batch), index_block_size the index's (tokenProcessorConfig.blockSize). */
void kvdiag_events(kvdiag *d, const char *pod, const char *model, uint64_t seq, uint32_t engine_block_size,
                   uint32_t index_block_size);
/* A routed request: the model its keys were computed for, and the chosen endpoint (NULL
 * when scheduling failed). */
void kvdiag_request(kvdiag *d, const char *model, const char *target);
/* Judges staleness now (also done by kvdiag_request, at most once a second). */
void kvdiag_check(kvdiag *d);

/* Occurrences by reason since start. */
void kvdiag_counts(kvdiag *d, uint64_t out[KVDIAG_REASON_COUNT]);
/* What is known of a pod's events: {"messages", "lastSeq", "lastEventAgeSeconds" (null:
 * none yet), "models": [...], "routedSinceLastEvent", "stale" (that silence was judged
 * stale)}; a new reference, or NULL when the pod never sent events and was never routed
 * to. */
json_t *kvdiag_pod_json(kvdiag *d, const char *pod);
/* The issues, oldest first: [{"reason", "pod", "model", "count", "ageSeconds" (since the
 * last occurrence), "message"}]; a new reference (NULL on memory). */
json_t *kvdiag_issues_json(kvdiag *d);
/* The models requests asked for, oldest first; a new reference. */
json_t *kvdiag_models_json(kvdiag *d);

#endif
