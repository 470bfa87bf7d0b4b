/* sched_fixture: the one fixture of the policy and scheduler tests: a scheduler built
 * from an inline EndpointPickerConfig over a few endpoints, a settable clock and a trace,
 * for tests that drive plugins through the real framework (sched_schedule,
 * sched_pre_request, sched_response_complete) and read their scores back from the trace.
 * docs/CONTRIBUTING.md shows a scorer's test on it.
 * Linked into every test and benchmark, so it does not use cmocka: failures print the
 * config's or scheduler's message to stderr and return NULL (or -1) for the caller to
 * assert on. Single-threaded, like the scheduler it drives. */
#ifndef KVROUTE_TEST_SCHED_FIXTURE_H
#define KVROUTE_TEST_SCHED_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "precise_prefix_cache_scorer.h"
#include "scheduler.h"

#define FX_MAX_EPS 8

typedef struct fx {
    epc_config *cfg;
    sched *s;
    double now;                         /* the sched's clock (sched_env.now), seconds */
    double tick;                        /* added to now after every read (0: time stands still) */
    sched_endpoint eps[FX_MAX_EPS];     /* ids 0..n-1, names "10.0.0.<i+1>:8000" */
    sched_endpoint *ptrs[FX_MAX_EPS];
    char names[FX_MAX_EPS][32];
    size_t n;
    sched_trace trace;                  /* the last fx_run's */
    kv_err err;                         /* the last fx_run's error */
} fx;

/* A warning sink (sched_env.warn and the like) keeping every message, one per line. */
typedef struct fx_warnbuf {
    char text[4096];
    size_t len;
} fx_warnbuf;
void fx_collect(void *warnbuf, const char *msg);

/* Heap-allocated (endpoint pointers must stay put); NULL if the config or sched fails.
 * Endpoints start with valid, zero metrics and no labels; tests set eps[i] as they need. */
fx *fx_new(const char *yaml, size_t n_eps, uint64_t seed);
/* The same over a preset of policies/presets (run from the repository root). */
fx *fx_preset(const char *name, size_t n_eps, uint64_t seed);
void fx_free(fx *f);
/* Schedules r over the first n endpoints (into f->trace) and returns sched_schedule's
 * code. res, when not NULL, receives the result; scores, when not NULL, receives per
 * endpoint i < n the clamped score the trace holds for it (the last scorer's: in a
 * one-scorer profile, that scorer's), or -1 when it was not scored. */
int fx_run(fx *f, const sched_request *r, size_t n, double *scores, sched_result *res);
/* Schedules over every endpoint; the single target, or NULL on error. */
sched_endpoint *fx_pick(fx *f, const sched_request *r);
/* fx_pick, then sched_pre_request with the result. */
sched_endpoint *fx_route(fx *f, const sched_request *r);
/* Routes r to ep without scheduling (sched_pre_request with a one-target result). */
void fx_assign(fx *f, const sched_request *r, sched_endpoint *ep);
void fx_done(fx *f, const sched_request *r, sched_endpoint *ep);
/* The last fx_pick's clamped score of the plugin of that type for endpoint i; -1 if absent. */
double fx_score(const fx *f, const char *type, size_t i);
/* A request for model "m" with a text prompt, or with token ids (prompt NULL). */
sched_request fx_text(const char *id, const char *prompt);
sched_request fx_tokens(const char *id, const uint32_t *tokens, size_t n);

#endif
