/* pointrun: one point of a sweep or a plan — the scenario with one router, a replica
 * count, the measured stage's rate and a scorer's weight changed — run to its measured
 * stage's metrics; and many points at once, one forked process per point across the
 * cores, their results gathered in the points' order.
 *
 * A point changes the scenario it runs on, so each runs in its own child process (the
 * parent's scenario is never touched) and depends on nothing but the scenario, its
 * seed and the point: a sweep's results equal the same points run one by one.
 * Called from the main thread; the children are single-threaded. */
#ifndef KVROUTE_SIM_POINTRUN_H
#define KVROUTE_SIM_POINTRUN_H

#include <stddef.h>
#include <stdint.h>

#include "kverr.h"
#include "lifecycle.h"

struct scenario;

typedef struct pr_point {
    size_t router;                    /* index into the scenario's routers */
    uint32_t replicas;                /* 0: as the scenario says */
    double rate;                      /* the measured stage's rate; 0: as the scenario says */
    const char *weight_plugin;        /* NULL: weights as configured */
    double weight;                    /* that scorer's weight in every profile using it */
} pr_point;

typedef struct pr_result {
    int rc;                           /* KV_OK, or the run's error (msg says what) */
    char msg[256];
    lc_metrics m;                     /* the measured stage */
} pr_result;

/* The stage a point is measured on: outputs.report_stage, -1 being the last. */
size_t pr_stage(const struct scenario *s);

/* Applies the point to s and runs it in this process (s is changed: a child's copy, or
 * a scenario the caller frees next). */
void pr_run_here(struct scenario *s, const pr_point *p, pr_result *out);

/* Runs n points, at most jobs at a time (0: one per online CPU), each in a forked
 * child; out[i] is point i's result. An error here is the machinery's (fork, pipe);
 * a point's own failure is out[i].rc. */
int pr_run_all(const struct scenario *s, const pr_point *points, size_t n, unsigned jobs, pr_result *out, kv_err *err);

#endif
