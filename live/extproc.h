/* extproc: the Envoy ext-proc gRPC server of ./epp (docs/upstream/epp.md §4).
 *
 * envoy.service.ext_proc.v3.ExternalProcessor/Process on gRPC core's C API: one
 * completion queue polled by a few worker threads; every HTTP request is one
 * bidirectional stream driven by a small state machine (request headers stored ->
 * body buffered, and parsed piece by piece as it arrives, to end of stream -> token
 * ids -> scheduled -> headers response with x-gateway-destination-endpoint + the
 * body streamed back in chunks of at most 62,000 bytes -> response headers and body passed through, usage read ->
 * sched_response_complete). Errors go back as GIE does: an ImmediateResponse whose body
 * is "inference gateway: <Code> - <msg>" (no candidate endpoint, e.g. an empty subset
 * hint: 503; any scheduler failure, filters leaving nothing included: 429 "failed to
 * find target pod", as GIE's director maps them); a malformed protobuf, or one nesting
 * messages deeper than EXTPROC_MAX_NESTING, closes that one stream with INVALID_ARGUMENT.
 * No bad request can take the server down.
 *
 * Body modes: FULL_DUPLEX_STREAMED (what GIE configures) is the default behaviour. When
 * Envoy announces BUFFERED/BUFFERED_PARTIAL in protocol_config (it then waits for the
 * headers response before sending the body), the headers are answered at once and the
 * routing decision travels in the request-body response's header mutation instead.
 * Without protocol_config there is no way to tell, and full duplex is assumed.
 * The body goes upstream byte for byte (Content-Length is its length), except that
 * x-gateway-model-name-rewrite re-serialises it with the new `model`, as GIE does.
 *
 * Control headers (GIE pkg/epp/handlers; llm-d-router's x-llm-d-router-* names are
 * accepted too and win when both are sent): x-gateway-inference-objective names the
 * InferenceObjective whose priority goes into the scheduler request (and decides
 * shedding), x-gateway-inference-fairness-id is recorded ("default-flow" when absent),
 * x-gateway-model-name-rewrite is the model sent upstream and scheduled for.
 *
 * Threads: the scheduler is called only under the server's lock (a sched is
 * single-threaded); endpoints are borrowed from the pool between acquire and release,
 * which the pool implements with its own lock (taken after the server's lock). Text
 * prompts are tokenised holding only their own stream's lock. All callbacks may run on any worker thread.
 * Logs go through live/log.h: V(4) gives llm-d's "Calculated score" line per scorer per
 * endpoint, V(3) "Request handled", V(2) rejected requests and tokenisation fallbacks.
 * Ownership: the config's sched, pool and strings must outlive the server. */
#ifndef KVROUTE_EXTPROC_H
#define KVROUTE_EXTPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"
#include "scheduler.h"

/* The live endpoint set. acquire returns the endpoints, which stay valid and unchanged
 * (except in_flight, which the sched updates) until the matching release. */
typedef struct extproc_pool {
    size_t (*acquire)(void *ctx, sched_endpoint *const **eps);
    void (*release)(void *ctx);
    void *ctx;
} extproc_pool;

/* One admission and scheduling call, reported right after it (every request with
 * candidates: scheduled, failed, or shed before scheduling). */
typedef struct extproc_decision {
    const char *request_id;
    const char *model;
    const char *target_model;     /* after InferenceModelRewrites and x-gateway-model-name-rewrite; NULL = model */
    const char *objective;        /* x-gateway-inference-objective; NULL if none */
    const char *fairness_id;      /* x-gateway-inference-fairness-id, or GIE's "default-flow" */
    int priority;                 /* the objective's (0 when unknown) */
    bool shed;                    /* sheddable and the pool saturated: 429, nothing scheduled */
    const char *target;           /* "ip:port[,ip:port...]"; NULL when scheduling failed or shed */
    const char *profile;
    size_t n_tokens;              /* token ids the decision used (0: text fallback) */
    bool tokenize_failed;         /* text prompt scored by prefix text */
    double sched_seconds;         /* sched_schedule alone */
    double decide_seconds;        /* the whole body in -> this decision: body parse, token
                                     ids, block keys, scheduling (wall time) */
    const sched_result *result;   /* endpoints valid only during the callback */
    const sched_trace *trace;     /* per-scorer scores when traced (see trace_decisions), else NULL */
} extproc_decision;

/* One finished request (response end of stream, or the stream ended early). */
typedef struct extproc_completion {
    const char *request_id;
    const char *model;            /* as the client sent it */
    const char *target_model;     /* after InferenceModelRewrites and x-gateway-model-name-rewrite; NULL = model */
    const char *target;           /* NULL if the request was never routed */
    int http_status;              /* 200 routed; the ImmediateResponse status otherwise */
    bool usage_found;
    uint64_t prompt_tokens, completion_tokens, cached_tokens;
    size_t request_bytes, response_bytes;
    double seconds;               /* request headers in -> response end */
} extproc_completion;

typedef struct extproc_config {
    const char *addr;             /* e.g. "0.0.0.0:9002"; port 0 picks a free port */
    const char *cert_pem;         /* PEM certificate chain and key: TLS; both NULL: plaintext */
    const char *key_pem;
    sched *sched;
    extproc_pool pool;
    int threads;                  /* completion-queue workers; 0 = 4 */
    int tokenize_timeout_ms;      /* vLLM /tokenize for text prompts; 0 = 1000; < 0 = never tokenise */
    size_t max_body;              /* request/response bytes buffered per stream; 0 = 64 MiB */
    bool trace_decisions;         /* trace every decision for on_decision (log V(4) does too) */
    /* Admission, as GIE's director: the request's InferenceObjective priority (false:
     * unknown objective, priority 0), and for sheddable requests (priority < 0) whether
     * the candidates are saturated (429 "system saturated, sheddable request dropped").
     * saturated runs with the pool acquired. Both optional: without them every request
     * has priority 0 and none is shed. */
    bool (*objective_priority)(void *ctx, const char *objective, int *priority);
    bool (*saturated)(void *ctx, sched_endpoint *const *candidates, size_t n);
    /* InferenceModelRewrite (live/model_rewrites.h): the target for the body's model, a
     * malloc'd name, or *to NULL when no rule matches; a rule wins over the
     * x-gateway-model-name-rewrite header, as in GIE's director. Optional; with ctx
     * admission_ctx. A failure (KV_ENOMEM) answers 500. */
    int (*model_rewrite)(void *ctx, const char *model, char **to);
    void *admission_ctx;
    /* Called under the scheduler lock, right after the decision: keep it short. */
    void (*on_decision)(void *ctx, const extproc_decision *d);   /* optional */
    void (*on_complete)(void *ctx, const extproc_completion *c); /* optional */
    void *hook_ctx;
} extproc_config;

typedef struct extproc_stats {
    uint64_t streams, streams_active;
    uint64_t requests;            /* routed */
    uint64_t errors_400, errors_429, errors_500, errors_503;
    uint64_t bad_messages;        /* streams closed for an undecodable message */
    uint64_t tokenize_ok, tokenize_failed;
    uint64_t completed;
} extproc_stats;

typedef struct extproc_server extproc_server;

/* Binds, starts the workers and returns; KV_EIO naming the address when it cannot
 * listen (busy port, bad address), KV_EINVAL for a bad certificate or key. */
extproc_server *extproc_start(const extproc_config *cfg, kv_err *err);
int extproc_port(const extproc_server *s);  /* the bound port */
/* Cancels every stream, joins the workers, frees everything. NULL is a no-op. */
void extproc_stop(extproc_server *s);
void extproc_get_stats(const extproc_server *s, extproc_stats *out);

/* Process-wide, once at start-up (the EPP's main, benchmarks): keeps freed memory in the
 * heap instead of giving it back to the kernel (mallopt: no mmap below 16 MiB, no trim
 * below 256 MiB). Every request allocates and frees several buffers of its body's size
 * (gRPC slices, the protobuf copy, the body, the reply chunks); returned to the kernel,
 * each comes back as page faults and, on a VM, cross-CPU TLB flushes: with 48 KB bodies
 * that was about half the CPU of a decision and most of its p50 at 1,000 req/s. The
 * heap then stays at its peak size. */
void extproc_keep_heap(void);

/* The stream state machine without gRPC, for the fuzz harness: a server that listens
 * nowhere (no port, no threads; extproc_stop frees it) and streams fed by hand, one
 * received message at a time, handled exactly as a message from gRPC is (decoded, then
 * the state machine; undecodable: INVALID_ARGUMENT). extproc_stream_feed takes one
 * ProcessingRequest's wire bytes (msg NULL: Envoy half-closed the stream), hands every
 * reply queued since the last call to reply (packed ProcessingResponses, in order), and
 * returns the final gRPC status once the stream is closed, -1 while it is open.
 * extproc_stream_close ends the stream as a gRPC call's end does (the completion is
 * reported). One thread per stream. */
typedef struct extproc_stream extproc_stream;
extproc_server *extproc_detached(const extproc_config *cfg, kv_err *err);
extproc_stream *extproc_stream_open(extproc_server *s);
int extproc_stream_feed(extproc_stream *st, const uint8_t *msg, size_t len,
                        void (*reply)(void *ctx, const uint8_t *msg, size_t len), void *ctx);
void extproc_stream_close(extproc_stream *st);

/* Building blocks shared with the health server and tests. */
#define EXTPROC_METHOD "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
#define EXTPROC_CHUNK 62000       /* GIE's body chunk size (pkg/common/chunking.go) */
/* How deep a ProcessingRequest may nest messages (protobuf C++'s default recursion limit;
 * Envoy's metadata uses a handful): unpacking recurses per level (live/pbdepth.h). */
#define EXTPROC_MAX_NESTING 100

#endif
