/* extproc_client: a blocking gRPC core client that plays Envoy's side of ext-proc
 * streams (and grpc.health.v1 checks) in tests and benchmarks.
 *
 * One completion queue per stream, every operation waited for with a deadline, so a
 * test can never hang on a server bug: a timed-out operation cancels the stream.
 * Threads: a client (channel) may be shared; a stream belongs to one thread. */
#ifndef KVROUTE_EXTPROC_CLIENT_H
#define KVROUTE_EXTPROC_CLIENT_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>

#include "ext_proc.pb-c.h"

typedef Envoy__Service__ExtProc__V3__ProcessingResponse xpc_resp;

typedef struct xpc_client xpc_client;
typedef struct xpc_stream xpc_stream;

/* target "127.0.0.1:port"; root_pem NULL = plaintext, else TLS trusting root_pem with
 * the server name checked against name_override (e.g. "localhost"). */
xpc_client *xpc_connect(const char *target, const char *root_pem, const char *name_override);
void xpc_disconnect(xpc_client *c);

xpc_stream *xpc_open(xpc_client *c, int timeout_ms);
/* Request headers from a NULL-terminated k, v, k, v ... list. subset: NULL = no
 * metadata_context, otherwise the endpoints of the subset hint (n_subset may be 0).
 * body_mode: 0 = no protocol_config, else the request/response body mode announced. */
int xpc_send_request_headers(xpc_stream *s, const char *const *kv, bool eos, const char *const *subset,
                             size_t n_subset, int body_mode);
int xpc_send_response_headers(xpc_stream *s, const char *const *kv, bool eos);
int xpc_send_body(xpc_stream *s, bool response, const void *data, size_t len, bool eos);
int xpc_send_raw(xpc_stream *s, const void *bytes, size_t len); /* arbitrary bytes as a message */
/* Next reply; NULL when the server ended the stream or the wait timed out. Free with
 * xpc_resp_free. */
xpc_resp *xpc_recv(xpc_stream *s, int timeout_ms);
void xpc_resp_free(xpc_resp *r);
/* Half-closes, waits for the status; returns the gRPC status code (details copied). */
int xpc_finish(xpc_stream *s, char *details, size_t cap, int timeout_ms);
void xpc_close(xpc_stream *s);  /* cancels if unfinished, frees */

/* The value of a set_headers entry of a header mutation, or NULL (points into r). */
const char *xpc_header(const Envoy__Service__ExtProc__V3__HeaderMutation *m, const char *key, size_t *len);
/* dynamic_metadata["envoy.lb"]["x-gateway-destination-endpoint"], or NULL. */
const char *xpc_dest_metadata(const xpc_resp *r);

/* grpc.health.v1 Check: returns the ServingStatus (>= 0) or -grpc_status_code. */
int xpc_health_check(xpc_client *c, const char *service, int timeout_ms);

#endif
