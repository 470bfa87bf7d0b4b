/* route: the routing of one HTTP inference request, whatever front door it came through
 * (the ext-proc server of live/extproc.c today, an HTTP gateway next): request headers
 * and body in; model, InferenceModelRewrites and x-gateway-model-name-rewrite, the
 * InferenceObjective's priority and GIE's shedding; token ids (the body's, or a text
 * prompt's from one candidate's vLLM /tokenize); block keys and scheduling (the sched's
 * plugins); the decision (a target, or the HTTP status GIE's director answers) and the
 * decision and completion records out. It knows nothing of gRPC, protobuf or sockets: a
 * front door calls exactly these functions, so every door routes a request the same way.
 *
 * Use, per request: route_req_init; route_begin, route_add_header for each header,
 * route_headers_end; route_subset_* for a subset hint (optional); route_body_append per
 * body piece; route_decide (or route_decide_headers_only for a request without a body);
 * route_retry when the target failed before answering (at most as often as the front
 * door allows); the front door forwards the request and reads the response, fills the usage and
 * response_bytes; route_complete; route_req_free.
 *
 * Answers follow GIE: 400 for a body that is not a request (bad JSON, no model), 503
 * when no endpoint is a candidate, 429 when a sheddable request meets saturated
 * candidates or the scheduler finds no target, 500 for memory; q->error says why.
 *
 * Threads: a router serves any number of threads. The sched is single-threaded, so
 * route_decide and route_complete call it under the router's lock, and the pool is
 * acquired inside that lock (the pool's own lock is taken after it); on_decision runs
 * under it. A text prompt is tokenised outside it. A route_req belongs to one thread at
 * a time (the front door's per-request lock). Logs (live/log.h): V(4) llm-d's
 * "Calculated score" line per scorer and endpoint, V(3) "Request handled", V(2)
 * tokenisation fallbacks.
 * Ownership: the config's sched, pool, callbacks and contexts must outlive the router. */
#ifndef KVROUTE_ROUTE_H
#define KVROUTE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"
#include "openai_body.h"
#include "scheduler.h"

/* The live endpoint set. acquire returns the endpoints, which stay valid and unchanged
 * (except in_flight, which the sched updates) until the matching release. */
typedef struct route_pool {
    size_t (*acquire)(void *ctx, sched_endpoint *const **eps);
    void (*release)(void *ctx);
    void *ctx;
} route_pool;

/* One admission and scheduling call, reported right after it (every request with
 * candidates: scheduled, failed, or shed before scheduling). */
typedef struct route_decision {
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
    bool tokenize_failed;         /* text prompt routed without token ids (scored by prefix text) */
    double sched_seconds;         /* sched_schedule alone */
    double decide_seconds;        /* the whole body in -> this decision: body parse, token
                                     ids, block keys, scheduling (wall time) */
    const sched_result *result;   /* endpoints valid only during the callback */
    const sched_trace *trace;     /* per-scorer scores when traced (see trace_decisions), else NULL */
} route_decision;

/* One finished request (response end of stream, or the request ended early). */
typedef struct route_completion {
    const char *request_id;
    const char *model;            /* as the client sent it */
    const char *target_model;     /* after InferenceModelRewrites and x-gateway-model-name-rewrite; NULL = model */
    const char *target;           /* NULL if the request was never routed */
    int http_status;              /* 200 routed; the error answered otherwise */
    bool usage_found;
    uint64_t prompt_tokens, completion_tokens, cached_tokens;
    size_t request_bytes, response_bytes;
    double seconds;               /* request headers in -> response end */
} route_completion;

/* The routing's settings; a front door's own config may embed them as an anonymous
 * member (extproc_config does), so its callers name them as before. */
#define ROUTE_CONFIG_FIELDS \
    sched *sched;                                                                                       \
    route_pool pool;                                                                                    \
    /* Token ids of text and chat prompts (live/tokenize.h): rendered on tokenize_url            \
     * (token-producer's vllm.url) or, when NULL, on one of the request's candidates in turn.   \
     * Timeouts: completions' (0 = 5000 ms; < 0 = never tokenise) and chat's (0 = 30000 ms). */ \
    const char *tokenize_url;                                                                           \
    int tokenize_timeout_ms;                                                                            \
    int tokenize_chat_timeout_ms;                                                                       \
    size_t max_body;              /* request body bytes held per request; 0 = 64 MiB */                 \
    bool trace_decisions;         /* trace every decision for on_decision (log V(4) does too) */        \
    /* Admission, as GIE's director: the request's InferenceObjective priority (false:                  \
     * unknown objective, priority 0), and for sheddable requests (priority < 0) whether                \
     * the candidates are saturated (429 "system saturated, sheddable request dropped").                \
     * saturated runs with the pool acquired. Both optional: without them every request                 \
     * has priority 0 and none is shed. */                                                              \
    bool (*objective_priority)(void *ctx, const char *objective, int *priority);                        \
    bool (*saturated)(void *ctx, sched_endpoint *const *candidates, size_t n);                          \
    /* InferenceModelRewrite (live/model_rewrites.h): the target for the body's model, a                \
     * malloc'd name, or *to NULL when no rule matches; a rule wins over the                            \
     * x-gateway-model-name-rewrite header, as in GIE's director. Optional; with ctx                    \
     * admission_ctx. A failure (KV_ENOMEM) answers 500. */                                             \
    int (*model_rewrite)(void *ctx, const char *model, char **to);                                      \
    void *admission_ctx;                                                                                \
    /* Called under the router's lock, right after the decision: keep it short. */                      \
    void (*on_decision)(void *ctx, const route_decision *d);   /* optional */                           \
    void (*on_complete)(void *ctx, const route_completion *c); /* optional */                           \
    void *hook_ctx;

typedef struct route_config {
    ROUTE_CONFIG_FIELDS
} route_config;

typedef struct route_stats {
    uint64_t tokenize_ok, tokenize_failed;
    uint64_t completed;           /* routed requests whose completion was reported */
} route_stats;

typedef struct route_router route_router;

typedef struct route_header {
    char *key, *value;            /* key lower-cased; both owned by the route_req */
} route_header;

/* One request. Fields are grouped as libuv does: public (the front door writes),
 * read-only (route writes, the front door reads), private. */
typedef struct route_req {
    /* public */
    int http_status;              /* route_decide* sets it; the front door sets it when it
                                     answers an error itself (then route_complete reports it) */
    size_t request_bytes;         /* every request body byte received, held or not */
    oai_usage usage;              /* the response's usage, before route_complete */
    size_t response_bytes;
    /* Whether an endpoint may be a candidate for this request (the gateway's circuit
     * breaker, live/breaker.h), with ctx endpoint_ctx; runs with the pool acquired and
     * the router's lock held. Optional: without it every endpoint may be. */
    bool (*endpoint_ok)(void *ctx, const sched_endpoint *ep);
    void *endpoint_ctx;
    /* A dry run (set before route_decide): the request is scheduled exactly as it would be,
     * traced, and inspect receives the decision under the router's lock (endpoints valid
     * during the call only); nothing is recorded -- no pre-request hook (in-flight counts,
     * stateful scorers), no on_decision, no score log lines -- so the request must not be
     * forwarded. Pickers that draw random numbers still draw them. */
    void (*inspect)(void *ctx, const route_decision *d);
    void *inspect_ctx;
    /* read-only */
    route_router *router;
    double t_start;               /* route_begin, monotonic seconds */
    route_header *hdrs;           /* as received, plus a generated x-request-id when absent */
    size_t n_hdrs;
    const char *request_id;       /* points into hdrs */
    const char *objective, *fairness_id; /* control headers (point into hdrs or static) */
    bool have_subset;             /* a subset hint was given: only its endpoints are candidates */
    char **subset;
    size_t n_subset;
    /* The request body (with the parser's padding); after route_decide the body to send
     * upstream (rewritten when the model was). The front door may then reuse the buffer
     * (body_len = 0, route_body_append) to hold the response. */
    char *body;
    size_t body_len, body_cap;
    oai_request oreq;             /* the parsed body (model as the client sent it) */
    char *target;                 /* "ip:port[,ip:port...]" once routed */
    sched_request sreq;           /* what was scheduled (n_tokens, target_model) */
    char error[600];              /* why, when http_status is not 200 */
    bool reported;                /* route_complete ran */
    /* private */
    void *rewritten;              /* json_t of a body whose model was rewritten */
    uint32_t *tok;                /* ids from render (or /tokenize) */
    size_t n_tok;
    sched_kv *skv;
    bool pre_requested;           /* sched_pre_request ran: completion owed */
    bool first_chunk;             /* route_response_started ran */
    uint32_t target_id;
    int priority;                 /* the objective's, for a retry's decision */
    bool tok_failed;
    char **excluded;              /* endpoints a retry must not pick (earlier targets) */
    size_t n_excluded;
} route_req;

/* A router over cfg (copied); KV_EINVAL without a sched or a pool, KV_ENOMEM. */
route_router *route_new(const route_config *cfg, kv_err *err);
void route_free(route_router *r); /* NULL is a no-op */
void route_get_stats(route_router *r, route_stats *out);

void route_req_init(route_req *q, route_router *r);
void route_req_free(route_req *q); /* frees what the request holds, not q */

/* Request headers: route_begin with their count, route_add_header for each (copies the key,
 * lower-cased, and value_len bytes of value), route_headers_end (generates a UUID
 * x-request-id when none came, as GIE does, and reads the control headers). KV_ENOMEM
 * on memory; then answer 500. */
int route_begin(route_req *q, size_t n_headers);
int route_add_header(route_req *q, const char *key, const char *value, size_t value_len);
int route_headers_end(route_req *q);

/* A subset hint: route_subset_clear starts one (replacing any earlier), then each
 * "ip:port" or "ip" it lists. */
void route_subset_clear(route_req *q);
void route_subset_add(route_req *q, const char *s, size_t len);

/* Appends request body bytes; false when the body would pass max_body or memory runs
 * out (answer 400 "request body larger than the EPP's buffer limit"). */
bool route_body_append(route_req *q, const uint8_t *p, size_t n);

/* Routes the whole body: returns the HTTP status, 200 with q->target set, otherwise
 * q->error says why. Reports on_decision when there were candidates. */
int route_decide(route_req *q);
/* The routed endpoint failed before answering (connect error, 429 or 503 before any
 * response byte): the sched is told its request is over, and the request is scheduled
 * again with every endpoint it was routed to so far excluded (the next best, as the
 * scheduler sees it now). Reports on_decision again; returns as route_decide does. */
int route_retry(route_req *q);
/* A request without a body: GIE sends it to a random candidate (200), else 500. */
int route_decide_headers_only(route_req *q);

/* The response's first body chunk arrived: the scheduler's response_started hook for the
 * routed endpoint (llm-d's StartOfStream: in-flight prefill load is released), once. */
void route_response_started(route_req *q);
/* The request has ended (response complete, or the request ended early): tells the
 * sched the response is complete and reports on_complete, once. */
void route_complete(route_req *q);

#endif
