/* monoclock: CLOCK_MONOTONIC as seconds (see monoclock.h). */
#include "monoclock.h"

#include <time.h>

double monoclock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double monoclock_now(void *ctx)
{
    return monoclock_s();
}
