/* session_affinity: the x-session-token value that session-affinity-scorer reads, for
 * whoever writes it (llm-d's EPP sets it on responses; no kvroute driver writes it yet,
 * the tests build requests with it). */
#ifndef KVROUTE_SESSION_AFFINITY_H
#define KVROUTE_SESSION_AFFINITY_H

#include <stddef.h>

#include "scheduler.h"

#define SESSION_AFFINITY_HEADER "x-session-token"

/* base64("<namespace>/<pod>") of the endpoint (pod falls back to name), NUL-terminated.
 * Returns its length, or KV_ERANGE when it does not fit in cap. */
int session_affinity_token(const sched_endpoint *ep, char *out, size_t cap);

#endif
