/* saturation: GIE's utilization detector for sheddable requests (see saturation.h). */
#include "saturation.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void saturation_defaults(saturation_config *c)
{
    *c = (saturation_config){.queue_depth = 5, .kv_util = 0.8, .staleness_s = 0.2};
}

/* "200ms", "0.5s", "2" (seconds): Go's time.Duration spellings GIE users write. */
static bool parse_seconds(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || !isfinite(x))
        return false;
    if (!strcmp(end, "ms"))
        x /= 1000;
    else if (!strcmp(end, "us") || !strcmp(end, "µs"))
        x /= 1e6;
    else if (!strcmp(end, "m"))
        x *= 60;
    else if (*end && strcmp(end, "s"))
        return false;
    *out = x;
    return true;
}

int saturation_from_env(saturation_config *c, char *(*getenv_fn)(const char *name), kv_err *err)
{
    const char *v;
    if ((v = getenv_fn("SD_QUEUE_DEPTH_THRESHOLD")) && *v) {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (*end || errno || x <= 0 || x > 1000000)
            return kv_err_set(err, KV_EINVAL, "SD_QUEUE_DEPTH_THRESHOLD: expected a positive integer, got '%s'", v);
        c->queue_depth = (int)x;
    }
    if ((v = getenv_fn("SD_KV_CACHE_UTIL_THRESHOLD")) && *v) {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end || errno || !(x > 0 && x < 1))
            return kv_err_set(err, KV_EINVAL, "SD_KV_CACHE_UTIL_THRESHOLD: expected a number in (0, 1), got '%s'", v);
        c->kv_util = x;
    }
    if ((v = getenv_fn("SD_METRICS_STALENESS_THRESHOLD")) && *v) {
        double x;
        if (!parse_seconds(v, &x) || x <= 0)
            return kv_err_set(err, KV_EINVAL,
                              "SD_METRICS_STALENESS_THRESHOLD: expected a positive duration (\"200ms\"), got '%s'", v);
        c->staleness_s = x;
    }
    return KV_OK;
}

double saturation_level(const saturation_config *c, sched_endpoint *const *eps, size_t n,
                        double (*age)(void *ctx, const sched_endpoint *ep), void *ctx)
{
    if (n == 0)
        return 1.0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        const sched_endpoint *ep = eps[i];
        if (!ep->m.valid || !(age(ctx, ep) <= c->staleness_s)) {
            sum += 1.0;
            continue;
        }
        double q = (double)ep->m.waiting / c->queue_depth, kv = ep->m.kv_usage / c->kv_util;
        sum += q > kv ? q : kv;
    }
    return sum / (double)n;
}

bool saturation_saturated(const saturation_config *c, sched_endpoint *const *eps, size_t n,
                          double (*age)(void *ctx, const sched_endpoint *ep), void *ctx)
{
    return saturation_level(c, eps, n, age, ctx) >= 1.0;
}
