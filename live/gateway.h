/* gateway: ./epp --http-port, a standalone OpenAI-compatible front door (issue 13 §1), so a
 * user can route real requests with no Envoy: POST /v1/completions and
 * /v1/chat/completions (streamed and not), GET /v1/models (the models the endpoints
 * serve, merged from their own /v1/models), GET /health.
 *
 * Each completion is routed by live/route.h, the same calls the ext-proc server makes
 * (so both doors pick the same endpoint for the same request and state), then forwarded
 * to the chosen endpoint with its headers (x-request-id: the client's, or the one route
 * generated) and the body route hands back (rewritten when the model was); the answer
 * streams back as it arrives, chunk by chunk (SSE passed through, nothing buffered whole),
 * with x-gateway-destination-endpoint (the endpoint that served it) and x-request-id.
 *
 * What users of SGLang's and vLLM's routers expect:
 *  - a client that disconnects cancels its upstream request;
 *  - request_timeout_s bounds a request from arrival to its last byte (504 before the
 *    answer started; after, the connection is cut);
 *  - a connect error, 429 or 503 from the endpoint before any response byte: one retry on
 *    the next-best endpoint (route_retry), never after a byte was sent to the client;
 *  - a circuit breaker per endpoint (live/breaker.h) fed by those failures and by 5xx
 *    answers, applied before routing as the request's endpoint_ok filter;
 *  - api_key: requests without "Authorization: Bearer <key>" get 401 (/health is open);
 *  - max_concurrent requests routed or forwarded at once, queue_size more waiting in
 *    arrival order, 429 beyond.
 * Errors are OpenAI-shaped: {"error":{"message","type","code"}} (route's answers, 401,
 * 404, 405, 413, 429, 502, 504). One exception: a body larger than max_body is refused
 * by libevent itself (413 with its own HTML body; libevent 2.1 has no hook for that).
 *
 * HTTP on both sides is libevent's evhttp. Threads: one event-loop thread owns every
 * connection and request; route decisions (which may wait on a vLLM /tokenize) run on
 * `threads` workers and come back to the loop through an event; the router's own locks
 * (live/route.h) make it safe to share with an ext-proc server in the same process.
 * gateway_get_stats may be called from any thread. Ownership: the config's sched, pool,
 * hooks and metrics must outlive the gateway. */
#ifndef KVROUTE_GATEWAY_H
#define KVROUTE_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "kverr.h"
#include "route.h"

struct promexp;

typedef struct gateway_config {
    const char *host;             /* bind address; NULL = 0.0.0.0 */
    int port;                     /* 0 picks a free port */
    int threads;                  /* routing workers; 0 = 4 */
    double request_timeout_s;     /* arrival -> last byte; 0 = none */
    int max_concurrent;           /* requests routed or forwarded at once; 0 = no limit */
    int queue_size;               /* requests waiting beyond max_concurrent (429 beyond) */
    const char *api_key;          /* NULL: no authentication */
    int breaker_failures;         /* consecutive failures that open a breaker; 0 = 5 */
    double breaker_cooldown_s;    /* how long it stays open; 0 = 10 */
    struct promexp *metrics;      /* the kvroute_gateway_* series go here; NULL = none */
    /* A router to share with another front door (the ext-proc server in ./epp: one
     * sched, one lock); NULL: the gateway makes its own from the fields below. */
    route_router *router;
    /* The routing's settings (live/route.h), when the gateway makes its router;
     * max_body (0 = 64 MiB) is the largest request body accepted either way. */
    union {
        route_config route;
        struct {
            ROUTE_CONFIG_FIELDS
        };
    };
} gateway_config;

typedef struct gateway_stats {
    uint64_t requests;            /* answered (any path, any status) */
    uint64_t retries;             /* second attempts on another endpoint */
    uint64_t upstream_failures;   /* connect errors, 429/503 before the first byte, 5xx */
    uint64_t client_cancels;      /* clients gone before their answer ended */
    uint64_t timeouts;            /* request_timeout_s expired */
    uint64_t queue_full;          /* 429: the queue was full */
    uint64_t in_flight;           /* now: routing or forwarding */
    uint64_t queued;              /* now: waiting for a slot */
    uint64_t breaker_opens;
} gateway_stats;

typedef struct gateway gateway;

/* Binds, starts the loop and the workers; KV_EIO naming the address when it cannot
 * listen, KV_EINVAL for a bad setting. */
gateway *gateway_start(const gateway_config *cfg, kv_err *err);
int gateway_port(const gateway *g);
/* Stops the loop and the workers, answers nothing more, frees everything; requests
 * still open are completed (route_complete) as 503. NULL is a no-op. */
void gateway_stop(gateway *g);
void gateway_get_stats(gateway *g, gateway_stats *out);
/* Calls fn for every endpoint the breaker has seen, with its state (for the metrics). */
void gateway_each_breaker(gateway *g, void (*fn)(void *ctx, const char *ep, breaker_state st), void *ctx);

#endif
