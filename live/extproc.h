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
 * Routing (body, model rewrites, objective, tokens, scheduling, the records) is
 * live/route.h's, the same code any front door calls; this server carries it over
 * gRPC. Threads: the scheduler is called only under the router's lock (a sched is
 * single-threaded); endpoints are borrowed from the pool between acquire and release,
 * which the pool implements with its own lock (taken after the router's lock). Text
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
#include "route.h"
#include "scheduler.h"

/* The endpoint set and the records are the routing's (live/route.h), named here as the
 * server's callers have always named them. */
typedef route_pool extproc_pool;
typedef route_decision extproc_decision;
typedef route_completion extproc_completion;

typedef struct extproc_config {
    const char *addr;             /* e.g. "0.0.0.0:9002"; port 0 picks a free port */
    const char *cert_pem;         /* PEM certificate chain and key: TLS; both NULL: plaintext */
    const char *key_pem;
    int threads;                  /* completion-queue workers; 0 = 4 */
    /* A router shared with another front door (./epp's HTTP gateway, live/gateway.h:
     * one sched, one lock, and its tokenisation counts in the stats); NULL: the server
     * makes its own from the routing's settings below. */
    route_router *router;
    /* The routing's settings (live/route.h: sched, pool, tokenisation, body limit,
     * tracing, admission, model rewrites, hooks), by their own names or as .route;
     * max_body bounds the buffered response body too. */
    union {
        route_config route;
        struct {
            ROUTE_CONFIG_FIELDS
        };
    };
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
/* The router the server routes with (route.h), e.g. for a dry run on the same sched. */
route_router *extproc_router(extproc_server *s);
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
