/* saturation: GIE's default saturation detector (the utilization detector of
 * pkg/epp/saturationdetector; flow control's admission), which decides when sheddable
 * requests (priority < 0) are turned away with 429 "system saturated, sheddable request
 * dropped". Requests with priority >= 0 are never checked.
 *
 * The pool's saturation is the mean, over the request's candidate endpoints, of each
 * endpoint's most constrained resource: max(waiting / queue_depth, kv_usage / kv_util);
 * an endpoint whose metrics are missing or older than staleness_s counts as 1.0, and no
 * candidates at all as 1.0. The pool is saturated at >= 1.0. Defaults as GIE's: queue
 * depth 5, KV-cache utilisation 0.8, staleness 200 ms; GIE's environment variables
 * SD_QUEUE_DEPTH_THRESHOLD, SD_KV_CACHE_UTIL_THRESHOLD and SD_METRICS_STALENESS_THRESHOLD
 * override them.
 *
 * Pure functions; the caller supplies each endpoint's metrics age. */
#ifndef KVROUTE_SATURATION_H
#define KVROUTE_SATURATION_H

#include <stdbool.h>
#include <stddef.h>

#include "kverr.h"
#include "scheduler.h"

typedef struct saturation_config {
    int queue_depth;              /* waiting requests at which an endpoint is full (> 0) */
    double kv_util;               /* KV-cache utilisation at which it is full, in (0, 1) */
    double staleness_s;           /* metrics older than this make it count as full (> 0) */
} saturation_config;

void saturation_defaults(saturation_config *c);
/* Reads the SD_* variables through getenv_fn (getenv in ./epp); KV_EINVAL naming the
 * variable and its value when one is set but out of range. */
int saturation_from_env(saturation_config *c, char *(*getenv_fn)(const char *name), kv_err *err);

/* age(ctx, ep): seconds since ep's metrics were scraped (INFINITY if never). */
double saturation_level(const saturation_config *c, sched_endpoint *const *eps, size_t n,
                        double (*age)(void *ctx, const sched_endpoint *ep), void *ctx);
bool saturation_saturated(const saturation_config *c, sched_endpoint *const *eps, size_t n,
                          double (*age)(void *ctx, const sched_endpoint *ep), void *ctx);

#endif
