/* fx_pool: see fx_pool.h. */
#include "fx_pool.h"

static size_t fx_pool_acquire(void *ctx, sched_endpoint *const **eps)
{
    fx *f = ctx;
    *eps = f->ptrs;
    return f->n;
}

static void fx_pool_release(void *ctx) {}

route_pool fx_pool(fx *f)
{
    return (route_pool){.acquire = fx_pool_acquire, .release = fx_pool_release, .ctx = f};
}
