/* extproc_reply: the ProcessingResponse messages the ext-proc server sends, built with
 * protobuf-c and packed into gRPC byte buffers: GIE's error ImmediateResponse, the
 * routing answer (destination header, echoed request headers, envoy.lb metadata), body
 * chunks of at most EXTPROC_CHUNK bytes, CONTINUE answers and the response-headers
 * answer. Kept apart from the stream plumbing (extproc.c), which only queues and sends
 * what these return, and from the routing (route.c), which knows no protobuf.
 * Threads: pure functions of their arguments; any thread. */
#ifndef KVROUTE_EXTPROC_REPLY_H
#define KVROUTE_EXTPROC_REPLY_H

#include <grpc/byte_buffer.h>
#include <stdbool.h>
#include <stddef.h>

#include "route.h"

#define EXTPROC_DEST_HEADER "x-gateway-destination-endpoint"
#define EXTPROC_ERROR_BODY 768    /* bytes of an error body, its text included */

/* A ProcessingResponse oneof case (ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_*). */
typedef int extproc_reply_case;

/* The ImmediateResponse for an error: status and body "inference gateway: <GIE code> -
 * <msg>", which is also written to body (EXTPROC_ERROR_BODY bytes) with its length in
 * *len, for the log. */
grpc_byte_buffer *extproc_reply_error(int status, const char *msg, char *body, size_t *len);

/* The routing answer: x-gateway-destination-endpoint: target (also in the envoy.lb
 * dynamic metadata), Content-Length when content_length is not NULL, and the request's
 * own headers but the proxy's; in the RequestBody response when in_body, else the
 * RequestHeaders response. NULL on memory. */
grpc_byte_buffer *extproc_reply_route(const char *target, const route_header *hs, size_t n, const char *content_length,
                                      bool in_body);

/* Body bytes as streamed_response chunks of at most EXTPROC_CHUNK, of the request
 * (request true) or the response; each chunk goes to push(ctx, buffer). */
void extproc_reply_chunks(bool request, const char *data, size_t len, bool eos,
                          void (*push)(void *ctx, grpc_byte_buffer *bb), void *ctx);

/* CONTINUE with no mutation, for the message the case names (headers, body, trailers). */
grpc_byte_buffer *extproc_reply_continue(extproc_reply_case which);

/* The response-headers answer: the upstream's headers echoed (but the proxy's) plus
 * x-went-into-resp-headers, as GIE sends. NULL on memory. */
grpc_byte_buffer *extproc_reply_response_headers(const route_header *hs, size_t n);

#endif
