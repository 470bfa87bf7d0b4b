/* monoclock: CLOCK_MONOTONIC as seconds, microseconds and nanoseconds (see monoclock.h). */
#include "monoclock.h"

#include <time.h>

double monoclock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint64_t monoclock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t monoclock_us(void)
{
    return (int64_t)(monoclock_ns() / 1000);
}

double monoclock_now(void *ctx)
{
    return monoclock_s();
}
