/* fake_upstream: an OpenAI-style model server for the gateway's tests and benchmark
 * (libevent evhttp on its own thread, 127.0.0.1, ephemeral port). POST to any path:
 *   FU_OK      200; a body with "stream": true gets SSE (FU_CHUNKS data events with
 *              usage in the last, then [DONE]), else one JSON completion with usage
 *   FU_HOLD    streamed: the first event at once, the rest only after
 *              fake_upstream_release (so a test sees chunks before the answer ends)
 *   FU_STATUS  the status set with fake_upstream_set_mode, an OpenAI error body
 *   FU_SILENT  never answers (until the server stops): timeouts, cancellation
 *   FU_CUT     the status line, headers and one event, then the connection is closed
 * GET /v1/models lists the model name given at start. Counts requests, answers finished,
 * and requests whose client went away before their answer ended (cancelled); keeps the
 * last request's x-request-id and body and when it arrived (monoclock_s).
 * Thread-safe getters and setters. */
#ifndef KVROUTE_FAKE_UPSTREAM_H
#define KVROUTE_FAKE_UPSTREAM_H

#include <stddef.h>

#define FU_CHUNKS 4

typedef enum fu_mode { FU_OK, FU_HOLD, FU_STATUS, FU_SILENT, FU_CUT } fu_mode;

typedef struct fake_upstream fake_upstream;

fake_upstream *fake_upstream_start(const char *model);
int fake_upstream_port(const fake_upstream *u);
void fake_upstream_set_mode(fake_upstream *u, fu_mode mode, int status);
void fake_upstream_release(fake_upstream *u);      /* FU_HOLD: finish the held streams */
unsigned fake_upstream_requests(fake_upstream *u);
unsigned fake_upstream_finished(fake_upstream *u);
unsigned fake_upstream_cancelled(fake_upstream *u);
/* The last request's x-request-id and body (copied into buf, "" if none); the
 * monotonic time its headers and body had arrived. */
void fake_upstream_last(fake_upstream *u, char *request_id, size_t id_cap, char *body, size_t body_cap);
double fake_upstream_last_arrival(fake_upstream *u);
void fake_upstream_stop(fake_upstream *u);

/* A loopback port nothing listens on (bound, then closed): connections are refused,
 * and a server started next may take it. */
int fake_upstream_dead_port(void);

#endif
