/* monoclock: the one reading of the monotonic clock the drivers use for durations and
 * staleness (request timings, metric ages, scrape deadlines, the simulator's own wall
 * time). It lives outside engine/, which takes time from its caller (sched_env.now,
 * kvindex_config.clock_ns), so that simulated time stays the simulator's; live/ and a
 * real-time emulator read the same clock the same way. Threads: any. */
#ifndef KVROUTE_MONOCLOCK_H
#define KVROUTE_MONOCLOCK_H

#include <stdint.h>

/* Seconds on CLOCK_MONOTONIC (an arbitrary origin; only differences mean anything). */
double monoclock_s(void);
/* The same clock in whole microseconds (the emulator's step timers, a live run's times). */
int64_t monoclock_us(void);
/* The same clock in nanoseconds: the shape of kvindex_config.clock_ns (write-lock holds). */
uint64_t monoclock_ns(void);
/* The same, in the shape of the engine's clock hooks (sched_env.now, epset_new's now),
 * which take a context this clock does not use. */
double monoclock_now(void *ctx);

#endif
