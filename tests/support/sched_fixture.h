/* sched_fixture: a scheduler built from an inline EndpointPickerConfig over a few
 * endpoints, a settable clock and a trace, for tests that drive plugins through the
 * real framework (sched_schedule, sched_pre_request, sched_response_complete).
 * Linked into every test and benchmark, so it does not use cmocka: failures print the
 * scheduler's message to stderr and return NULL (or -1) for the caller to assert on. */
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
    double now;                         /* the sched's clock, seconds */
    sched_endpoint eps[FX_MAX_EPS];     /* ids 0..n-1, names "10.0.0.<i+1>:8000" */
    sched_endpoint *ptrs[FX_MAX_EPS];
    char names[FX_MAX_EPS][32];
    size_t n;
    sched_trace trace;
} fx;

/* A warning sink (sched_env.warn and the like) keeping every message, one per line. */
typedef struct fx_warnbuf {
    char text[4096];
    size_t len;
} fx_warnbuf;
void fx_collect(void *warnbuf, const char *msg);

/* Heap-allocated (endpoint pointers must stay put); NULL if the config or sched fails. */
fx *fx_new(const char *yaml, size_t n_eps, uint64_t seed);
void fx_free(fx *f);
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
