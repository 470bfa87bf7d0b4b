/* promtext: one counter read from a Prometheus text exposition (format 0.0.4), the
 * /metrics body of a vLLM pod (or ./sim serve's emulated one). A live run reads the
 * pods' prefix-cache counters with it before and after its load (liverun.c), so the
 * hit rate it reports is the pods' own, as a Prometheus query of the deltas would give.
 * Only sample lines are read: comments (# HELP, # TYPE) and other metrics are skipped;
 * a sample is `name[{labels}] value [timestamp]`, label values may hold any escaped
 * text, and a metric with several series (engines, models) is their sum.
 * Threads: pure functions. */
#ifndef KVROUTE_SIM_PROMTEXT_H
#define KVROUTE_SIM_PROMTEXT_H

#include <stddef.h>

/* The sum of every sample named exactly `name` in the NUL-terminated text into *sum;
 * returns the number of samples, 0 when there is none, -1 when one of them is malformed
 * (a label set that does not close, a value that is not a number). */
int promtext_sum(const char *text, const char *name, double *sum);

#endif
