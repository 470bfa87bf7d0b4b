/* breaker: the gateway's per-endpoint circuit breaker (live/gateway.h). An endpoint whose
 * requests keep failing (connect errors, 429/503 answers, timeouts before the first byte)
 * is taken out of routing for a cool-down, then let through for one probe request
 * (half-open): the probe's success closes the breaker, its failure opens it again. This
 * is what SGLang's router and Envoy's outlier detection do, so a dead pod stops costing
 * every request a failed attempt and a retry.
 *
 * States: closed (routable; consecutive failures counted) -> open after `failures`
 * consecutive failures (not routable until `cooldown_s` has passed) -> half-open (routable
 * until one request is sent to it: breaker_sent marks the probe) -> closed on a success,
 * open on a failure. Endpoints are keyed by name ("ip:port"); an endpoint never seen is
 * closed. Times are the caller's (monotonic seconds), so tests drive the clock.
 *
 * Threads: every call takes the breaker's mutex; any thread may call any function. */
#ifndef KVROUTE_BREAKER_H
#define KVROUTE_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "kverr.h"

typedef enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN = 1, BREAKER_HALF_OPEN = 2 } breaker_state;

typedef struct breaker breaker;

/* failures >= 1 consecutive failures open it; cooldown_s > 0. KV_EINVAL, KV_ENOMEM. */
breaker *breaker_new(int failures, double cooldown_s, kv_err *err);
void breaker_free(breaker *b); /* NULL is a no-op */

/* Whether a request may be routed to ep now (closed; open past its cool-down, which
 * turns it half-open; half-open with no probe sent yet). */
bool breaker_allows(breaker *b, const char *ep, double now);
/* A request was sent to ep: in half-open, that request is the probe. A probe whose
 * outcome never comes (its client went away) lets another through a cool-down later. */
void breaker_sent(breaker *b, const char *ep, double now);
/* The outcome of a request sent to ep. */
void breaker_success(breaker *b, const char *ep);
void breaker_failure(breaker *b, const char *ep, double now);

breaker_state breaker_get(breaker *b, const char *ep);
uint64_t breaker_opens(breaker *b); /* closed/half-open -> open transitions, ever */
/* Calls fn for every endpoint seen, with its state (for the metrics). */
void breaker_each(breaker *b, void (*fn)(void *ctx, const char *ep, breaker_state st), void *ctx);
const char *breaker_state_name(breaker_state st);

#endif
