/* console: what ./sim prints. Per-stage lines for each router, the guide's comparison
 * table for one stage: every router against the first (the baseline), rows
 * Requests/sec .. Inter-token latency (ms), columns baseline mean, other mean, delta and
 * delta % vs baseline; and the progress line. Writes only to the FILE it is given (the
 * progress line's is stderr, main.c's choice). */
#ifndef KVROUTE_SIM_CONSOLE_H
#define KVROUTE_SIM_CONSOLE_H

#include <stddef.h>
#include <stdio.h>

#include "cluster.h"
#include "lifecycle.h"
#include "records.h"

/* "router  stage  rate  req/s  out tok/s  TTFT  latency  ITL" lines, one per stage. */
void console_stage_lines(FILE *f, const char *router, const lc_run *m);
/* The comparison table for stage (< 0: the last stage) between names[0] (baseline) and
 * each other router. n >= 2; a router without that stage is skipped with a note. */
void console_compare(FILE *f, const char *const *names, const lc_run *const *m, size_t n, int stage);
/* The progress line ("\r  router  stage 2/17  sim ...  ETA 41 s"), wall_s seconds into
 * the router's run. The ETA counts a request half done once sent and done once
 * completed (a request's work is spread over its life, and completions alone lag by a
 * request's latency), and is "-" until 1% of the run is done. */
void console_progress(FILE *f, const char *router, const cluster_progress *p, double wall_s);

#endif
