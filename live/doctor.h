/* doctor: `kvctl doctor URL`, the known misconfigurations of a running ./epp read from its
 * inspection endpoints (live/debugapi.h: GET /debug/endpoints and /debug/index on the
 * metrics port), each printed with its fix:
 *   - the "score is 0" issues the EPP found (live/kvdiag.h: empty or foreign topic,
 *     model alias, stale pod, block size), those seen within the last since_s seconds;
 *   - no endpoints at all;
 *   - with a precise index: a pod that was routed requests and never sent a KV event,
 *     whose events went stale, or whose events are received and keyed to nothing;
 *   - vLLM's block size (its cache_config_info metric) that the index's blockSize cannot
 *     key, before any event arrives;
 *   - KV events rejected because their topic names no endpoint (the pod id must be the
 *     endpoint's ip:port as listed), undecodable events;
 *   - pods whose /metrics cannot be scraped.
 * A pod that neither sent events nor was routed to yet is only noted (nothing to judge).
 *
 * Threads: none of its own; a plain function of its input (doctor_check) and one HTTP
 * client call per endpoint (doctor_run). */
#ifndef KVROUTE_DOCTOR_H
#define KVROUTE_DOCTOR_H

#include <jansson.h>
#include <stdio.h>

#include "kverr.h"

/* Prints each finding ("PROBLEM ...", then "  fix: ...") and note to out; returns the
 * number of findings. endpoints and index are the two answers' JSON (index may be NULL). */
int doctor_check(const json_t *endpoints, const json_t *index, double since_s, FILE *out);

/* Fetches base_url + /debug/endpoints and /debug/index and runs doctor_check: the number
 * of findings, or -1 with err set when the EPP cannot be asked (connection, HTTP status,
 * an answer that is not JSON). */
int doctor_run(const char *base_url, double since_s, FILE *out, kv_err *err);

#endif
