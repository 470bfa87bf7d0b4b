/* sched_check: what a scheduling call must guarantee whatever the endpoints report, for
 * the fuzz harnesses (tests/fuzz/fuzz_config.c, fuzz_sched_hostile.c) and test_sched_hostile:
 * every target, and every other profile's pick, is one of the candidates; every scorer's
 * traced score is in [0,1]; every candidate's total is finite and is the weighted sum of
 * its traced scores in the primary profile.
 * Also runs one request through a preset the way the drivers do (schedule, pre_request,
 * schedule again, response_complete), checking each result. No cmocka, no output:
 * callers decide how to fail. Single-threaded. */
#ifndef KVROUTE_TEST_SCHED_CHECK_H
#define KVROUTE_TEST_SCHED_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "scheduler.h"

/* True when res and the trace t of one sched_schedule over eps[0..n) hold the invariants. */
bool sched_check_result(const sched_result *res, const sched_trace *t, sched_endpoint *const *eps, size_t n);

/* Builds a sched from cfg (fixed seed and clock), routes r twice over eps as above and
 * frees it. Returns false when an invariant broke; a scheduling error the API allows
 * (no endpoint left, no result) is not a failure. *built is false when sched_new
 * refused the config. */
bool sched_check_route(const epc_config *cfg, const sched_request *r, sched_endpoint *const *eps, size_t n,
                       bool *built);

/* The presets shipped in dir (policies/presets), each loaded; NULL-terminated, free
 * with sched_check_presets_free. NULL if one fails to load or dir cannot be read. */
epc_config **sched_check_presets(const char *dir);
void sched_check_presets_free(epc_config **cfgs);

#endif
