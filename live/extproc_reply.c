/* extproc_reply: ProcessingResponse messages as gRPC byte buffers (see extproc_reply.h).
 * Every message is built on the stack with protobuf-c's initialisers and packed at once,
 * so nothing here outlives the call but the returned buffer. */
#include "extproc_reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ext_proc.pb-c.h"
#include "extproc.h"

typedef Envoy__Service__ExtProc__V3__ProcessingResponse PResp;
typedef Envoy__Service__ExtProc__V3__HeaderValue HeaderValue;
typedef Envoy__Service__ExtProc__V3__HeaderValueOption HeaderValueOption;
typedef Envoy__Service__ExtProc__V3__HeaderMutation HeaderMutation;
typedef Envoy__Service__ExtProc__V3__CommonResponse CommonResponse;
typedef Envoy__Service__ExtProc__V3__HeadersResponse HeadersResponse;
typedef Envoy__Service__ExtProc__V3__BodyResponse BodyResponse;
typedef Envoy__Service__ExtProc__V3__BodyMutation BodyMutation;
typedef Envoy__Service__ExtProc__V3__StreamedBodyResponse StreamedBodyResponse;
typedef Envoy__Service__ExtProc__V3__TrailersResponse TrailersResponse;
typedef Envoy__Service__ExtProc__V3__ImmediateResponse ImmediateResponse;
typedef Envoy__Service__ExtProc__V3__HttpStatus HttpStatus;
typedef Envoy__Service__ExtProc__V3__Struct PStruct;
typedef Envoy__Service__ExtProc__V3__Struct__FieldsEntry PField;
typedef Envoy__Service__ExtProc__V3__Value PValue;

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* ---- header mutations ------------------------------------------------------------------------ */

/* A header mutation with preallocated room, so the pointers handed to protobuf-c stay put. */
typedef struct hset {
    size_t n, cap;
    HeaderValue *val;
    HeaderValueOption *opt;
    HeaderValueOption **ptr;
} hset;

static bool hset_init(hset *h, size_t cap)
{
    h->n = 0, h->cap = cap;
    h->val = calloc(cap, sizeof *h->val);
    h->opt = calloc(cap, sizeof *h->opt);
    h->ptr = calloc(cap, sizeof *h->ptr);
    return h->val && h->opt && h->ptr;
}

static void hset_free(hset *h)
{
    free(h->val), free(h->opt), free(h->ptr);
}

static void hset_add(hset *h, const char *k, const char *v)
{
    if (h->n == h->cap)
        return;
    HeaderValue *hv = &h->val[h->n];
    HeaderValueOption *o = &h->opt[h->n];
    *hv = (HeaderValue)ENVOY__SERVICE__EXT_PROC__V3__HEADER_VALUE__INIT;
    hv->key = (char *)k;
    hv->raw_value.data = (uint8_t *)v;
    hv->raw_value.len = strlen(v);
    *o = (HeaderValueOption)ENVOY__SERVICE__EXT_PROC__V3__HEADER_VALUE_OPTION__INIT;
    o->header = hv;
    o->append_action = ENVOY__SERVICE__EXT_PROC__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS_OR_ADD;
    h->ptr[h->n++] = o;
}

/* Headers that belong to the proxy or to us, never echoed back. */
static bool system_header(const char *k)
{
    return k[0] == ':' || !strcasecmp(k, "content-length") || !strcasecmp(k, EXTPROC_DEST_HEADER);
}

static void hset_echo(hset *h, const route_header *hs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!system_header(hs[i].key))
            hset_add(h, hs[i].key, hs[i].value);
}

/* ---- replies ------------------------------------------------------------------------------ */

static const char *code_name(int status)
{
    switch (status) {
    case 400: return "BadRequest";
    case 404: return "BadConfiguration";
    case 429: return "InferencePoolResourceExhausted";
    case 503: return "ServiceUnavailable";
    default: return "Internal";
    }
}

grpc_byte_buffer *extproc_reply_error(int status, const char *msg, char *body, size_t *len)
{
    int n = snprintf(body, EXTPROC_ERROR_BODY, "inference gateway: %s - %s", code_name(status), msg);
    *len = n < 0 || (size_t)n >= EXTPROC_ERROR_BODY ? strlen(body) : (size_t)n;
    HttpStatus hs = ENVOY__SERVICE__EXT_PROC__V3__HTTP_STATUS__INIT;
    hs.code = status;
    ImmediateResponse ir = ENVOY__SERVICE__EXT_PROC__V3__IMMEDIATE_RESPONSE__INIT;
    ir.status = &hs;
    ir.body.data = (uint8_t *)body;
    ir.body.len = *len;
    PResp pr = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
    pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_IMMEDIATE_RESPONSE;
    pr.immediate_response = &ir;
    return pack(&pr.base);
}

/* {"envoy.lb": {"x-gateway-destination-endpoint": target}} */
static grpc_byte_buffer *pack_with_metadata(PResp *pr, const char *target)
{
    PValue iv = ENVOY__SERVICE__EXT_PROC__V3__VALUE__INIT;
    iv.kind_case = ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRING_VALUE;
    iv.string_value = (char *)target;
    PField ie = ENVOY__SERVICE__EXT_PROC__V3__STRUCT__FIELDS_ENTRY__INIT;
    ie.key = EXTPROC_DEST_HEADER;
    ie.value = &iv;
    PField *iep = &ie;
    PStruct inner = ENVOY__SERVICE__EXT_PROC__V3__STRUCT__INIT;
    inner.n_fields = 1, inner.fields = &iep;
    PValue ov = ENVOY__SERVICE__EXT_PROC__V3__VALUE__INIT;
    ov.kind_case = ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRUCT_VALUE;
    ov.struct_value = &inner;
    PField oe = ENVOY__SERVICE__EXT_PROC__V3__STRUCT__FIELDS_ENTRY__INIT;
    oe.key = "envoy.lb";
    oe.value = &ov;
    PField *oep = &oe;
    PStruct top = ENVOY__SERVICE__EXT_PROC__V3__STRUCT__INIT;
    top.n_fields = 1, top.fields = &oep;
    pr->dynamic_metadata = &top;
    return pack(&pr->base);
}

grpc_byte_buffer *extproc_reply_route(const char *target, const route_header *hs, size_t n, const char *content_length,
                                      bool in_body)
{
    hset h;
    if (!hset_init(&h, n + 4)) {
        hset_free(&h);
        return NULL;
    }
    hset_add(&h, EXTPROC_DEST_HEADER, target);
    if (content_length)
        hset_add(&h, "Content-Length", content_length);
    hset_echo(&h, hs, n);
    HeaderMutation hm = ENVOY__SERVICE__EXT_PROC__V3__HEADER_MUTATION__INIT;
    hm.n_set_headers = h.n, hm.set_headers = h.ptr;
    CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
    cr.header_mutation = &hm;
    cr.clear_route_cache = 1;
    PResp pr = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
    HeadersResponse hr = ENVOY__SERVICE__EXT_PROC__V3__HEADERS_RESPONSE__INIT;
    BodyResponse br = ENVOY__SERVICE__EXT_PROC__V3__BODY_RESPONSE__INIT;
    if (in_body) {
        br.response = &cr;
        pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY;
        pr.request_body = &br;
    } else {
        hr.response = &cr;
        pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS;
        pr.request_headers = &hr;
    }
    grpc_byte_buffer *bb = pack_with_metadata(&pr, target);
    hset_free(&h);
    return bb;
}

void extproc_reply_chunks(bool request, const char *data, size_t len, bool eos,
                          void (*push)(void *ctx, grpc_byte_buffer *bb), void *ctx)
{
    size_t off = 0;
    do {
        size_t n = len - off > EXTPROC_CHUNK ? EXTPROC_CHUNK : len - off;
        StreamedBodyResponse sb = ENVOY__SERVICE__EXT_PROC__V3__STREAMED_BODY_RESPONSE__INIT;
        sb.body.data = (uint8_t *)data + off;
        sb.body.len = n;
        sb.end_of_stream = eos && off + n == len;
        BodyMutation bm = ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__INIT;
        bm.mutation_case = ENVOY__SERVICE__EXT_PROC__V3__BODY_MUTATION__MUTATION_STREAMED_RESPONSE;
        bm.streamed_response = &sb;
        CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
        cr.body_mutation = &bm;
        BodyResponse br = ENVOY__SERVICE__EXT_PROC__V3__BODY_RESPONSE__INIT;
        br.response = &cr;
        PResp pr = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
        if (request) {
            pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY;
            pr.request_body = &br;
        } else {
            pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_BODY;
            pr.response_body = &br;
        }
        push(ctx, pack(&pr.base));
        off += n;
    } while (off < len);
}

grpc_byte_buffer *extproc_reply_continue(extproc_reply_case which)
{
    CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
    BodyResponse br = ENVOY__SERVICE__EXT_PROC__V3__BODY_RESPONSE__INIT;
    HeadersResponse hr = ENVOY__SERVICE__EXT_PROC__V3__HEADERS_RESPONSE__INIT;
    TrailersResponse tr = ENVOY__SERVICE__EXT_PROC__V3__TRAILERS_RESPONSE__INIT;
    br.response = &cr;
    hr.response = &cr;
    PResp pr = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
    pr.response_case = which;
    switch (which) {
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS: pr.request_headers = &hr; break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY: pr.request_body = &br; break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_BODY: pr.response_body = &br; break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_TRAILERS: pr.request_trailers = &tr; break;
    default: pr.response_trailers = &tr; break;
    }
    return pack(&pr.base);
}

grpc_byte_buffer *extproc_reply_response_headers(const route_header *hs, size_t n)
{
    hset h;
    if (!hset_init(&h, n + 1)) {
        hset_free(&h);
        return NULL;
    }
    hset_add(&h, "x-went-into-resp-headers", "true");
    hset_echo(&h, hs, n);
    HeaderMutation hm = ENVOY__SERVICE__EXT_PROC__V3__HEADER_MUTATION__INIT;
    hm.n_set_headers = h.n, hm.set_headers = h.ptr;
    CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
    cr.header_mutation = &hm;
    HeadersResponse hr = ENVOY__SERVICE__EXT_PROC__V3__HEADERS_RESPONSE__INIT;
    hr.response = &cr;
    PResp pr = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
    pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_HEADERS;
    pr.response_headers = &hr;
    grpc_byte_buffer *bb = pack(&pr.base);
    hset_free(&h);
    return bb;
}
