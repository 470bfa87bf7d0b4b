/* debugapi: ./epp's inspection endpoints, served on the metrics port (promexp's /debug/
 * hook), for a user asking "why is the score 0" and for `kvctl doctor` (live/kvctl.c):
 *
 *   GET  /debug/endpoints  per endpoint: its scraped metrics and their age, its KV events
 *                          (messages, last sequence number, age of the last, models,
 *                          requests routed since), the entries each index holds for it,
 *                          and a health word with the problems behind it; plus the
 *                          "score is 0" issues found (live/kvdiag.h), the counts by
 *                          reason and the models requests asked for.
 *   POST /debug/score      an inference request body (headers as for the gateway) in;
 *                          every candidate's per-plugin scores (clamped, weight,
 *                          weighted), what each filter removed, the totals and the pick
 *                          out. Routed by the same route_decide as the ext-proc server
 *                          (route.h's dry run): nothing is forwarded or recorded.
 *   GET  /debug/index      a bounded summary of each precise index: its settings and
 *                          stats, and up to 256 endpoint slots with their entries; the
 *                          ingests' message counts.
 * Answers are JSON (jansson); an unknown path is 404, a wrong method 405.
 *
 * The body of /debug/score is read by the request reader every inference request goes
 * through (oai_request_parse, fuzzed by fuzz_openai_body), so this module parses no
 * untrusted input of its own.
 *
 * Threads: debugapi_serve runs on libmicrohttpd's thread; the sources are thread-safe
 * (epset, kvindex, kvdiag, ingest stats, the router). The router is set once the ext-proc
 * server exists (debugapi_set_router); until then, and once it is set back to NULL
 * (which waits for a dry run in progress) before the server stops, /debug/score answers 503. A dry run
 * holds the router's lock like any request, and a text prompt is tokenised first (up to
 * --tokenize-timeout-ms), during which other /debug and /metrics requests wait. */
#ifndef KVROUTE_DEBUGAPI_H
#define KVROUTE_DEBUGAPI_H

#include <stddef.h>

#include "endpoints.h"
#include "ingest.h"
#include "kvdiag.h"
#include "kverr.h"
#include "promexp.h"
#include "route.h"

#define DEBUGAPI_MAX_SLOTS 256

typedef struct debugapi_config {
    epset *endpoints;
    kvdiag *diag;                 /* optional */
    ingest *const *ingests;       /* borrowed array, n_ingests long; may be empty */
    size_t n_ingests;
} debugapi_config;

typedef struct debugapi debugapi;

debugapi *debugapi_new(const debugapi_config *cfg, kv_err *err);
void debugapi_free(debugapi *d);
void debugapi_set_router(debugapi *d, route_router *r);
/* promexp_sources.debug (ctx = the debugapi). */
void debugapi_serve(void *ctx, promexp_http *h);

#endif
