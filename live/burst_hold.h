/* burst_hold: ./epp's window for burst-prefix-cache-producer
 * (policies/burst_prefix_cache_producer.h). The first request to arrive opens a window
 * and waits windowDurationMs on the monotonic clock; requests arriving meanwhile join
 * it and wait too; then the opener has the window placed (the caller's place callback,
 * which calls burst_assign under the sched's lock) and every member goes on to its own
 * scheduling. A window holds at most maxBatchSize requests: one arriving at a full window
 * goes on at once, unplaced, as llm-d-router's Produce error leaves it.
 *
 * A held request keeps its ext-proc worker thread, so a window holds at most as many
 * requests as there are ext-proc threads (--threads) with no other work; llm-d-router's
 * goroutines have no such bound.
 *
 * Threads: any number of request threads call burst_hold_wait at once (one mutex and
 * condition variable). */
#ifndef KVROUTE_BURST_HOLD_H
#define KVROUTE_BURST_HOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"
#include "scheduler.h"

typedef struct burst_hold burst_hold;

/* window_s > 0; max_batch -1: no bound. */
burst_hold *burst_hold_new(double window_s, int64_t max_batch, kv_err *err);
void burst_hold_free(burst_hold *h);   /* no request may be waiting */

/* Holds r until its window is placed. place(ctx, reqs, n) runs once per window, on the
 * opener's thread, with the window's requests in arrival order (r among them). false,
 * without waiting, when the window is full. */
bool burst_hold_wait(burst_hold *h, const sched_request *r,
                     void (*place)(void *ctx, const sched_request *const *reqs, size_t n), void *ctx);

#endif
