/* monoclock: CLOCK_MONOTONIC as seconds (see monoclock.h). */
#include "monoclock.h"

#include <time.h>

double monoclock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int64_t monoclock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

double monoclock_now(void *ctx)
{
    return monoclock_s();
}
