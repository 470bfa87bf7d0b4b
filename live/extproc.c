/* extproc: Envoy ext-proc server, gRPC core completion-queue loop and the per-stream
 * state machine (see extproc.h for the protocol and thread rules).
 *
 * Each stream keeps at most one main operation in flight (receive, one send, or the
 * final status) plus gRPC's close notification, so its state is only touched by the
 * worker that holds the stream's mutex. Replies are queued as ready byte buffers and
 * sent in order; the next receive is posted only when the queue is empty. Envoy in
 * full-duplex mode keeps sending regardless, and HTTP/2 flow control holds the rest. */
#include "extproc.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "ext_proc.pb-c.h"
#include "log.h"
#include "openai_body.h"
#include "pbdepth.h"
#include "tokenize.h"

typedef Envoy__Service__ExtProc__V3__ProcessingRequest PReq;
typedef Envoy__Service__ExtProc__V3__ProcessingResponse PResp;
typedef Envoy__Service__ExtProc__V3__HttpHeaders HttpHeaders;
typedef Envoy__Service__ExtProc__V3__HttpBody HttpBody;
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

#define BODY_MODE_BUFFERED 2
#define BODY_MODE_BUFFERED_PARTIAL 3
#define DEST_HEADER "x-gateway-destination-endpoint"
#define SUBSET_NS "envoy.lb.subset_hint"
#define SUBSET_KEY "x-gateway-destination-endpoint-subset"

/* Completion tags carry their kind in the low bits of the stream pointer, so a worker
 * can dispatch an event without touching stream memory before it holds the stream's
 * lock. The main operation's own kind (receive, send, status) is stream state. */
enum tag_kind { TAG_NEW = 0, TAG_MAIN = 1, TAG_CLOSE = 2, TAG_SHUTDOWN = 3 };
enum op_kind { OP_RECV, OP_SEND, OP_STATUS };
typedef struct extproc_stream stream;
#define TAG(st, kind) ((void *)((uintptr_t)(st) | (uintptr_t)(kind)))
#define TAG_STREAM(t) ((stream *)((uintptr_t)(t) & ~(uintptr_t)7))
#define TAG_KIND(t) ((enum tag_kind)((uintptr_t)(t) & 7))

typedef struct hdr {
    char *key, *value;
} hdr;

enum phase { PH_HEADERS, PH_BODY, PH_ROUTED, PH_DONE };

struct extproc_stream {
    extproc_server *srv;
    pthread_mutex_t mu;
    int refs;
    enum op_kind main_kind;           /* the main operation in flight */
    bool started;                     /* the call arrived (counted in streams_active) */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *recv_buf, *sending;
    int cancelled;
    /* replies waiting to be sent, then optionally a final status */
    grpc_byte_buffer **outq;
    size_t out_n, out_i, out_cap;
    bool close_after;
    grpc_status_code close_code;
    grpc_slice close_details;
    /* the HTTP request */
    enum phase phase;
    double t_start;
    hdr *hdrs;
    size_t n_hdrs;
    const char *request_id;           /* points into hdrs */
    const char *objective, *fairness_id; /* control headers (point into hdrs or static) */
    bool req_buffered, resp_buffered; /* from protocol_config */
    bool have_subset;
    char **subset;
    size_t n_subset;
    char *body;                       /* request body, later the buffered response body */
    size_t body_len, body_cap;
    size_t request_bytes;
    oai_request oreq;
    void *rewritten;                  /* json_t of a body whose model was rewritten */
    uint32_t *tok;                    /* ids from /tokenize (owned) */
    size_t n_tok;
    sched_kv *skv;
    sched_request sreq;
    bool pre_requested;               /* sched_pre_request ran: completion owed */
    bool first_chunk;                    /* sched_response_started ran (first response chunk) */
    uint32_t target_id;
    char *target;
    int http_status;
    /* the HTTP response */
    bool resp_streaming, resp_passthrough, reported;
    oai_sse sse;
    oai_usage usage;
    size_t response_bytes;
};

struct extproc_server {
    extproc_config cfg;
    grpc_server *server;
    grpc_completion_queue *cq;
    void *method;
    int port;
    pthread_t *threads;
    int n_threads;
    pthread_rwlock_t gate;            /* stopping: read to start an operation, written to stop */
    bool stopping;
    pthread_mutex_t mu;               /* stats, shutdown_seen, rr */
    pthread_cond_t cv;
    bool shutdown_seen;
    extproc_stats stats;
    pthread_mutex_t sched_mu;         /* sched calls and the trace */
    sched_trace trace;
    uint64_t rr;                      /* round robin over endpoints for /tokenize */
    /* Release/acquire edge from a stream's creator to the worker that first sees it: the
     * real ordering goes through gRPC's completion queue, which TSan cannot see. */
    atomic_uint handoff;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define STAT_ADD(s, field, v)                 \
    do {                                      \
        pthread_mutex_lock(&(s)->mu);         \
        (s)->stats.field += (v);              \
        pthread_mutex_unlock(&(s)->mu);       \
    } while (0)

/* ---- logging ------------------------------------------------------------------------ */

/* llm-d's V(4) line, field for field, so `grep "Calculated score"` works unchanged. */
static void log_scores(const stream *st, const sched_trace *t)
{
    char plugin[256];
    for (size_t i = 0; i < t->n_scores; i++) {
        const sched_trace_score *sc = &t->scores[i];
        snprintf(plugin, sizeof plugin, "%s/%s", sc->plugin->type->type, sc->plugin->name);
        LOG_V(4, "Calculated score", "{s:s, s:s, s:s, s:s, s:{s:s, s:s}, s:f}", "x-request-id", st->request_id,
              "incomingModelName", st->sreq.model, "targetModelName",
              st->sreq.target_model ? st->sreq.target_model : st->sreq.model, "plugin", plugin, "endpoint",
              "name", sc->ep->pod ? sc->ep->pod : sc->ep->name, "namespace", sc->ep->ns ? sc->ep->ns : "", "score",
              sc->score);
    }
}

/* ---- protobuf <-> gRPC ------------------------------------------------------------------ */

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* A client's message, or NULL with *err saying why. protobuf-c recurses once per nested
 * message, so the nesting is bounded before it unpacks (pbdepth.h). */
static PReq *unpack(grpc_byte_buffer *bb, kv_err *err)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) {
        kv_err_set(err, KV_EPARSE, "ext_proc: cannot read ProcessingRequest");
        return NULL;
    }
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    const ProtobufCMessageDescriptor *d = &envoy__service__ext_proc__v3__processing_request__descriptor;
    PReq *m = NULL;
    if (pbdepth_check(d, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl), EXTPROC_MAX_NESTING, err) == KV_OK &&
        !(m = envoy__service__ext_proc__v3__processing_request__unpack(NULL, GRPC_SLICE_LENGTH(sl),
                                                                       GRPC_SLICE_START_PTR(sl))))
        kv_err_set(err, KV_EPARSE, "ext_proc: cannot decode ProcessingRequest");
    grpc_slice_unref(sl);
    return m;
}

static void push(stream *st, grpc_byte_buffer *bb)
{
    if (st->out_n == st->out_cap) {
        size_t cap = st->out_cap ? st->out_cap * 2 : 8;
        grpc_byte_buffer **q = realloc(st->outq, cap * sizeof *q);
        if (!q) {
            grpc_byte_buffer_destroy(bb);
            st->close_after = true;
            st->close_code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            return;
        }
        st->outq = q, st->out_cap = cap;
    }
    st->outq[st->out_n++] = bb;
}

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
    return k[0] == ':' || !strcasecmp(k, "content-length") || !strcasecmp(k, DEST_HEADER);
}

static void hset_echo(hset *h, const hdr *hs, size_t n)
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

static void reply_error(stream *st, int status, const char *msg)
{
    extproc_server *s = st->srv;
    char body[768];
    int len = snprintf(body, sizeof body, "inference gateway: %s - %s", code_name(status), msg);
    if (len < 0 || (size_t)len >= sizeof body)
        len = (int)strlen(body);
    HttpStatus hs = ENVOY__SERVICE__EXT_PROC__V3__HTTP_STATUS__INIT;
    hs.code = status;
    ImmediateResponse ir = ENVOY__SERVICE__EXT_PROC__V3__IMMEDIATE_RESPONSE__INIT;
    ir.status = &hs;
    ir.body.data = (uint8_t *)body;
    ir.body.len = (size_t)len;
    PResp pr = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
    pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_IMMEDIATE_RESPONSE;
    pr.immediate_response = &ir;
    push(st, pack(&pr.base));
    st->phase = PH_DONE;
    st->http_status = status;
    pthread_mutex_lock(&s->mu);
    if (status == 400)
        s->stats.errors_400++;
    else if (status == 429)
        s->stats.errors_429++;
    else if (status == 503)
        s->stats.errors_503++;
    else
        s->stats.errors_500++;
    pthread_mutex_unlock(&s->mu);
    LOG_V(2, "Request rejected", "{s:s, s:i, s:s%}", "x-request-id", st->request_id ? st->request_id : "", "status",
          status, "error", body, (size_t)len);
}

/* {"envoy.lb": {"x-gateway-destination-endpoint": target}} */
static grpc_byte_buffer *pack_with_metadata(PResp *pr, const char *target)
{
    PValue iv = ENVOY__SERVICE__EXT_PROC__V3__VALUE__INIT;
    iv.kind_case = ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRING_VALUE;
    iv.string_value = (char *)target;
    PField ie = ENVOY__SERVICE__EXT_PROC__V3__STRUCT__FIELDS_ENTRY__INIT;
    ie.key = DEST_HEADER;
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

/* The routing answer: headers (destination, Content-Length, echoed request headers) in
 * a RequestHeaders response, or, when Envoy buffers the body and already had its
 * headers answer, in the RequestBody response. */
static void reply_route(stream *st, bool with_body)
{
    hset h;
    char clen[32];
    if (!hset_init(&h, st->n_hdrs + 4)) {
        reply_error(st, 500, "out of memory");
        return;
    }
    hset_add(&h, DEST_HEADER, st->target);
    if (with_body && !st->req_buffered) {
        snprintf(clen, sizeof clen, "%zu", st->body_len);
        hset_add(&h, "Content-Length", clen);
    }
    hset_echo(&h, st->hdrs, st->n_hdrs);
    HeaderMutation hm = ENVOY__SERVICE__EXT_PROC__V3__HEADER_MUTATION__INIT;
    hm.n_set_headers = h.n, hm.set_headers = h.ptr;
    CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
    cr.header_mutation = &hm;
    cr.clear_route_cache = 1;
    PResp pr = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
    HeadersResponse hr = ENVOY__SERVICE__EXT_PROC__V3__HEADERS_RESPONSE__INIT;
    BodyResponse br = ENVOY__SERVICE__EXT_PROC__V3__BODY_RESPONSE__INIT;
    if (with_body && st->req_buffered) {
        br.response = &cr;
        pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY;
        pr.request_body = &br;
    } else {
        hr.response = &cr;
        pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS;
        pr.request_headers = &hr;
    }
    push(st, pack_with_metadata(&pr, st->target));
    hset_free(&h);
}

/* Body bytes back as streamed_response chunks of at most EXTPROC_CHUNK; request or response.
 * An empty body may have no buffer (data NULL: nothing was appended), and NULL + 0 is
 * undefined, so it is answered from an empty string's. */
static void reply_chunks(stream *st, bool request, const char *data, size_t len, bool eos)
{
    if (!data)
        data = "";
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
        push(st, pack(&pr.base));
        off += n;
    } while (off < len);
}

/* CONTINUE with no mutation: a body message in buffered modes, or trailers. */
static void reply_continue(stream *st, int which)
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
    push(st, pack(&pr.base));
}

/* ---- request state ---------------------------------------------------------------------------- */

static void set_error_oom(stream *st) { reply_error(st, 500, "out of memory"); }

static bool body_append(stream *st, const uint8_t *p, size_t n)
{
    if (!n)
        return true; /* an empty chunk (its data NULL once decoded): nothing to copy */
    size_t max = st->srv->cfg.max_body ? st->srv->cfg.max_body : (64u << 20);
    if (st->body_len + n > max)
        return false;
    /* room for the parser's read-ahead past the end (OAI_BODY_PADDING) saves a copy */
    if (st->body_len + n + OAI_BODY_PADDING > st->body_cap) {
        size_t cap = st->body_cap ? st->body_cap * 2 : 4096;
        while (cap < st->body_len + n + OAI_BODY_PADDING)
            cap *= 2;
        char *b = realloc(st->body, cap);
        if (!b)
            return false;
        st->body = b, st->body_cap = cap;
    }
    memcpy(st->body + st->body_len, p, n);
    st->body_len += n;
    return true;
}

static char *header_text(const HeaderValue *hv)
{
    if (hv->raw_value.len)
        return strndup((const char *)hv->raw_value.data, hv->raw_value.len);
    return strdup(hv->value ? hv->value : "");
}

static bool store_headers(stream *st, const HttpHeaders *h)
{
    size_t n = h->headers ? h->headers->n_headers : 0;
    st->hdrs = calloc(n + 1, sizeof *st->hdrs);
    st->skv = calloc(n + 1, sizeof *st->skv);
    if (!st->hdrs || !st->skv)
        return false;
    for (size_t i = 0; i < n; i++) {
        const HeaderValue *hv = h->headers->headers[i];
        char *k = strdup(hv->key ? hv->key : ""), *v = header_text(hv);
        if (!k || !v) {
            free(k), free(v);
            return false;
        }
        for (char *c = k; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c += 32;
        st->hdrs[st->n_hdrs++] = (hdr){k, v};
        if (!strcmp(k, "x-request-id") && !st->request_id)
            st->request_id = v;
    }
    if (!st->request_id) { /* GIE generates a UUID and sends it upstream */
        uint8_t u[16] = {0};
        if (getrandom(u, sizeof u, 0) != (ssize_t)sizeof u)
            for (size_t i = 0; i < sizeof u; i++)
                u[i] = (uint8_t)(rand() >> 7);
        u[6] = (u[6] & 0x0f) | 0x40, u[8] = (u[8] & 0x3f) | 0x80;
        char *id = malloc(37), *k = strdup("x-request-id");
        if (!id || !k) {
            free(id), free(k);
            return false;
        }
        snprintf(id, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
                 u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
        st->hdrs[st->n_hdrs++] = (hdr){k, id};
        st->request_id = id;
    }
    for (size_t i = 0; i < st->n_hdrs; i++)
        st->skv[i] = (sched_kv){st->hdrs[i].key, st->hdrs[i].value};
    return true;
}

static void subset_add(stream *st, const char *s, size_t len)
{
    char **v = realloc(st->subset, (st->n_subset + 1) * sizeof *v);
    if (!v)
        return;
    st->subset = v;
    if ((v[st->n_subset] = strndup(s, len)))
        st->n_subset++;
}

/* metadata_context["envoy.lb.subset_hint"]["x-gateway-destination-endpoint-subset"]:
 * a list of "ip:port" (a comma-separated string is accepted too). */
static void read_subset(stream *st, const Envoy__Service__ExtProc__V3__Metadata *md)
{
    for (size_t i = 0; md && i < md->n_filter_metadata; i++) {
        const Envoy__Service__ExtProc__V3__Metadata__FilterMetadataEntry *fe = md->filter_metadata[i];
        if (!fe->key || strcmp(fe->key, SUBSET_NS) || !fe->value)
            continue;
        for (size_t j = 0; j < fe->value->n_fields; j++) {
            const PField *f = fe->value->fields[j];
            if (!f->key || strcmp(f->key, SUBSET_KEY) || !f->value)
                continue;
            for (size_t k = 0; k < st->n_subset; k++)
                free(st->subset[k]);
            st->n_subset = 0;
            st->have_subset = true;
            const PValue *v = f->value;
            if (v->kind_case == ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_LIST_VALUE && v->list_value) {
                for (size_t k = 0; k < v->list_value->n_values; k++) {
                    const PValue *e = v->list_value->values[k];
                    if (e->kind_case == ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRING_VALUE && e->string_value[0])
                        subset_add(st, e->string_value, strlen(e->string_value));
                }
            } else if (v->kind_case == ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRING_VALUE) {
                for (const char *p = v->string_value; *p;) {
                    size_t n = strcspn(p, ",");
                    if (n)
                        subset_add(st, p, n);
                    p += n + (p[n] == ',');
                }
            }
        }
    }
}

static bool in_subset(const stream *st, const char *name)
{
    if (!st->have_subset)
        return true;
    size_t iplen = strcspn(name, ":");
    for (size_t i = 0; i < st->n_subset; i++) {
        const char *s = st->subset[i];
        if (!strcmp(s, name) || (!strchr(s, ':') && strlen(s) == iplen && !strncmp(s, name, iplen)))
            return true;
    }
    return false;
}

/* Candidates from the pool (caller holds the pool). Returns the count; *out malloc'd. */
static size_t candidates(const stream *st, sched_endpoint *const *eps, size_t n, sched_endpoint ***out)
{
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (in_subset(st, eps[i]->name))
            (*out)[k++] = eps[i];
    return k;
}

static const char *no_candidates_msg(const stream *st)
{
    return st->have_subset ? "failed to find candidate pods for serving the request: no eligible endpoint in the "
                             "subset hint"
                           : "failed to find candidate pods for serving the request";
}

/* A text prompt's token ids from one candidate's /tokenize; false on failure. */
static bool tokenize(stream *st, const char *model)
{
    extproc_server *s = st->srv;
    const extproc_pool *pool = &s->cfg.pool;
    sched_endpoint *const *eps;
    size_t n = pool->acquire(pool->ctx, &eps);
    char *ep = NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += in_subset(st, eps[i]->name);
    if (k) {
        pthread_mutex_lock(&s->mu);
        size_t pick = s->rr++ % k;
        pthread_mutex_unlock(&s->mu);
        for (size_t i = 0; i < n && !ep; i++)
            if (in_subset(st, eps[i]->name) && pick-- == 0)
                ep = strdup(eps[i]->name);
    }
    pool->release(pool->ctx);
    if (!ep)
        return false;
    kv_err e = {0};
    int timeout = s->cfg.tokenize_timeout_ms ? s->cfg.tokenize_timeout_ms : 1000;
    const oai_request *r = &st->oreq;
    int rc = tokenize_vllm(ep, model, r->prompt, r->prompt_len, r->chat ? r->messages_json : NULL, timeout,
                           &st->tok, &st->n_tok, &e);
    if (rc != KV_OK)
        LOG_V(2, "Tokenization failed, scoring by prefix text", "{s:s, s:s, s:s}", "x-request-id", st->request_id,
              "endpoint", ep, "error", e.msg);
    free(ep);
    if (rc == KV_OK)
        STAT_ADD(s, tokenize_ok, 1);
    else
        STAT_ADD(s, tokenize_failed, 1);
    return rc == KV_OK;
}

/* A control header by its GIE name, or by llm-d-router's newer alias, which wins. */
static const char *control_header(const stream *st, const char *gie, const char *llmd)
{
    const sched_request view = {.headers = st->skv, .n_headers = st->n_hdrs};
    const char *v = sched_header(&view, llmd);
    return v ? v : sched_header(&view, gie);
}

/* An InferenceModelRewrite rule for the body's model, else x-gateway-model-name-rewrite:
 * GIE sends the body upstream with `model` replaced, so the body is re-serialised (and
 * Content-Length follows). This rare path alone builds a JSON tree (kept for the new
 * name's lifetime); the parsed request keeps the incoming name for logs and hooks.
 * jansson reads strings holding \u0000 as the request reader does (JSON_ALLOW_NUL);
 * what it still cannot hold (an integer beyond 64 bits, \u0000 in a key) is the
 * client's to fix. Returns the model to route for, or NULL with *err set: KV_ENOMEM,
 * or KV_EINVAL quoting jansson's complaint. */
static const char *rewrite_model(stream *st, kv_err *err)
{
    const extproc_config *cfg = &st->srv->cfg;
    char *ruled = NULL;
    if (cfg->model_rewrite && cfg->model_rewrite(cfg->admission_ctx, st->oreq.model, &ruled) != KV_OK) {
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    const char *to =
        ruled ? ruled : control_header(st, "x-gateway-model-name-rewrite", "x-llm-d-router-model-name-rewrite");
    if (!to || !*to || !strcmp(to, st->oreq.model)) {
        free(ruled);
        return st->oreq.model;
    }
    json_error_t je;
    json_t *root = json_loadb(st->body, st->body_len, JSON_ALLOW_NUL, &je);
    if (!root && json_error_code(&je) != json_error_out_of_memory) {
        free(ruled);
        kv_err_set(err, KV_EINVAL, "request body: cannot rewrite 'model' (line %d column %d, byte %d): %s", je.line,
                   je.column, je.position, je.text);
        return NULL;
    }
    /* json_string refuses a name that is not UTF-8 (a header may carry any byte); a
     * name of a few bytes failing for memory is not worth telling apart */
    json_t *name = root ? json_string(to) : NULL;
    free(ruled);
    if (!name || json_object_set_new(root, "model", name)) {
        kv_err_set(err, root && !name ? KV_EINVAL : KV_ENOMEM,
                   root && !name ? "the rewritten model name is not valid UTF-8" : "out of memory");
        json_decref(root);
        return NULL;
    }
    st->rewritten = root;
    char *body = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!body) {
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    free(st->body);
    st->body = body;
    st->body_len = st->body_cap = strlen(body);
    return json_string_value(json_object_get(root, "model"));
}

static void route(stream *st)
{
    extproc_server *s = st->srv;
    kv_err e = {0};
    double t_body = now_s();
    int rc = oai_request_parse(st->body, st->body_len, st->body_cap, &st->oreq, &e);
    if (rc != KV_OK) {
        reply_error(st, rc == KV_ENOMEM ? 500 : 400, e.msg);
        return;
    }
    const oai_request *r = &st->oreq;
    const char *target_model = rewrite_model(st, &e);
    if (!target_model) {
        reply_error(st, e.code == KV_ENOMEM ? 500 : 400, e.msg);
        return;
    }
    int priority = 0;
    if (s->cfg.objective_priority)
        s->cfg.objective_priority(s->cfg.admission_ctx, st->objective, &priority);
    bool tok_failed = false;
    if (!r->tokens && s->cfg.tokenize_timeout_ms >= 0)
        tok_failed = !tokenize(st, target_model);
    st->sreq = (sched_request){
        .id = st->request_id,
        .model = r->model,
        .target_model = target_model == r->model ? NULL : target_model,
        .cache_salt = r->cache_salt,
        .tokens = r->tokens ? r->tokens : st->tok,
        .n_tokens = r->tokens ? r->n_tokens : st->n_tok,
        .prompt = r->chat ? r->messages_json : r->prompt,
        .prompt_len = r->chat ? r->messages_len : r->prompt_len,
        .headers = st->skv,
        .n_headers = st->n_hdrs,
        .priority = priority,
        .output_tokens_hint = r->max_tokens,
    };

    bool verbose = log_enabled(4), tracing = verbose || s->cfg.trace_decisions;
    const extproc_pool *pool = &s->cfg.pool;
    pthread_mutex_lock(&s->sched_mu);
    sched_endpoint *const *eps;
    size_t n = pool->acquire(pool->ctx, &eps);
    sched_endpoint **cand;
    size_t k = candidates(st, eps, n, &cand);
    sched_result res = {0};
    double t0 = now_s(), dt = 0;
    bool no_candidates = k == 0;
    /* GIE's admission: only sheddable requests are checked, after the candidates. */
    bool shed = !no_candidates && priority < 0 && s->cfg.saturated && s->cfg.saturated(s->cfg.admission_ctx, cand, k);
    if (no_candidates || shed) {
        rc = KV_ENOENDPOINTS;
    } else {
        if (tracing)
            sched_trace_reset(&s->trace);
        rc = sched_schedule(s->cfg.sched, &st->sreq, cand, k, &res, tracing ? &s->trace : NULL, &e);
        dt = now_s() - t0;
    }
    if (rc == KV_OK && res.n_targets > 0) {
        size_t len = 0;
        for (size_t i = 0; i < res.n_targets; i++)
            len += strlen(res.targets[i]->name) + 1;
        st->target = malloc(len);
        if (st->target) {
            st->target[0] = 0;
            for (size_t i = 0; i < res.n_targets; i++) {
                if (i)
                    strcat(st->target, ",");
                strcat(st->target, res.targets[i]->name);
            }
            st->target_id = res.targets[0]->id;
            sched_pre_request(s->cfg.sched, &st->sreq, &res);
            st->pre_requested = true;
        }
    }
    if (k > 0 && !shed && verbose)
        log_scores(st, &s->trace);
    if (k > 0 && s->cfg.on_decision) {
        extproc_decision d = {st->request_id, r->model, st->sreq.target_model, st->objective, st->fairness_id,
                              priority, shed, rc == KV_OK ? st->target : NULL, res.profile, st->sreq.n_tokens,
                              tok_failed, dt, now_s() - t_body, &res, tracing && !shed ? &s->trace : NULL};
        s->cfg.on_decision(s->cfg.hook_ctx, &d);
    }
    pool->release(pool->ctx);
    pthread_mutex_unlock(&s->sched_mu);
    free(cand);

    /* GIE: no candidates before scheduling is 503; any scheduler failure, filters that
     * leave nothing included, is 429 "failed to find target pod" (director.go). */
    if (no_candidates) {
        reply_error(st, 503, no_candidates_msg(st));
        return;
    }
    if (shed) {
        reply_error(st, 429, "system saturated, sheddable request dropped");
        return;
    }
    if (rc != KV_OK || res.n_targets == 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "failed to find target pod: %s", e.msg[0] ? e.msg : "no target");
        reply_error(st, 429, msg);
        return;
    }
    if (!st->target) {
        set_error_oom(st);
        return;
    }
    st->phase = PH_ROUTED;
    st->http_status = 200;
    STAT_ADD(s, requests, 1);
    reply_route(st, true);
    if (!st->req_buffered) /* in buffered mode Envoy forwards its own copy */
        reply_chunks(st, true, st->body, st->body_len, true);
    LOG_V(3, "Request handled", "{s:s, s:s, s:s, s:s?, s:s, s:i, s:I}", "x-request-id", st->request_id, "model",
          r->model, "endpoint", st->target, "objectiveKey", st->objective, "fairnessID", st->fairness_id, "priority",
          priority, "tokens", (json_int_t)st->sreq.n_tokens);
    st->body_len = 0; /* the buffer now serves the response */
}

/* A request without a body: GIE routes it to a random endpoint at once. */
static void route_headers_only(stream *st)
{
    extproc_server *s = st->srv;
    const extproc_pool *pool = &s->cfg.pool;
    sched_endpoint *const *eps;
    size_t n = pool->acquire(pool->ctx, &eps);
    sched_endpoint **cand;
    size_t k = candidates(st, eps, n, &cand);
    if (k) {
        uint64_t x;
        if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
            x = (uint64_t)rand();
        st->target = strdup(cand[x % k]->name);
    }
    pool->release(pool->ctx);
    free(cand);
    if (!st->target) {
        reply_error(st, 500, "no pods available in datastore");
        return;
    }
    st->phase = PH_ROUTED;
    st->http_status = 200;
    STAT_ADD(s, requests, 1);
    reply_route(st, false);
}

/* A response-side scheduler hook for the routed endpoint, under the scheduler lock. */
static void hook_target(stream *st, void (*hook)(sched *, const sched_request *, sched_endpoint *))
{
    extproc_server *s = st->srv;
    const extproc_pool *pool = &s->cfg.pool;
    pthread_mutex_lock(&s->sched_mu);
    sched_endpoint *const *eps;
    size_t n = pool->acquire(pool->ctx, &eps);
    for (size_t i = 0; i < n; i++)
        if (eps[i]->id == st->target_id) {
            hook(s->cfg.sched, &st->sreq, eps[i]);
            break;
        }
    pool->release(pool->ctx);
    pthread_mutex_unlock(&s->sched_mu);
}

static void report(stream *st)
{
    if (st->reported || st->phase == PH_HEADERS)
        return;
    st->reported = true;
    extproc_server *s = st->srv;
    if (st->pre_requested)
        hook_target(st, sched_response_complete);
    if (st->target)
        STAT_ADD(s, completed, 1);
    if (s->cfg.on_complete) {
        extproc_completion c = {st->request_id, st->oreq.model, st->sreq.target_model, st->target, st->http_status,
                                st->usage.found,
                                st->usage.prompt_tokens, st->usage.completion_tokens, st->usage.cached_tokens,
                                st->request_bytes, st->response_bytes, now_s() - st->t_start};
        s->cfg.on_complete(s->cfg.hook_ctx, &c);
    }
}

/* ---- message dispatch ------------------------------------------------------------------------ */

static void on_request_headers(stream *st, const HttpHeaders *h)
{
    if (st->phase != PH_HEADERS)
        return;
    st->t_start = now_s();
    if (!store_headers(st, h)) {
        set_error_oom(st);
        return;
    }
    st->objective = control_header(st, "x-gateway-inference-objective", "x-llm-d-router-inference-objective");
    st->fairness_id = control_header(st, "x-gateway-inference-fairness-id", "x-llm-d-router-inference-fairness-id");
    if (!st->fairness_id || !*st->fairness_id)
        st->fairness_id = "default-flow"; /* GIE's DefaultFairnessID */
    st->phase = PH_BODY;
    if (h->end_of_stream)
        route_headers_only(st);
    else if (st->req_buffered) /* Envoy waits for this answer before sending the body */
        reply_continue(st, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS);
}

static void on_request_body(stream *st, const HttpBody *b, bool eos)
{
    if (st->phase != PH_BODY)
        return;
    st->request_bytes += b ? b->body.len : 0;
    if (b && !body_append(st, b->body.data, b->body.len)) {
        reply_error(st, 400, "request body larger than the EPP's buffer limit");
        return;
    }
    if (eos)
        route(st);
    else if (st->req_buffered) /* BUFFERED_PARTIAL: every message wants an answer */
        reply_continue(st, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY);
}

static void on_response_headers(stream *st, const HttpHeaders *h)
{
    if (st->phase != PH_ROUTED)
        return;
    hdr *rh = NULL;
    size_t n = h->headers ? h->headers->n_headers : 0, k = 0;
    rh = calloc(n + 1, sizeof *rh);
    hset hs;
    if (!rh || !hset_init(&hs, n + 1)) {
        free(rh);
        set_error_oom(st);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const HeaderValue *hv = h->headers->headers[i];
        char *v = header_text(hv);
        if (!v)
            continue;
        if (hv->key && !strcasecmp(hv->key, "content-type") && strstr(v, "text/event-stream"))
            st->resp_streaming = true;
        rh[k++] = (hdr){hv->key ? hv->key : (char *)"", v};
    }
    hset_add(&hs, "x-went-into-resp-headers", "true");
    hset_echo(&hs, rh, k);
    HeaderMutation hm = ENVOY__SERVICE__EXT_PROC__V3__HEADER_MUTATION__INIT;
    hm.n_set_headers = hs.n, hm.set_headers = hs.ptr;
    CommonResponse cr = ENVOY__SERVICE__EXT_PROC__V3__COMMON_RESPONSE__INIT;
    cr.header_mutation = &hm;
    HeadersResponse hr = ENVOY__SERVICE__EXT_PROC__V3__HEADERS_RESPONSE__INIT;
    hr.response = &cr;
    PResp pr = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__INIT;
    pr.response_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_HEADERS;
    pr.response_headers = &hr;
    push(st, pack(&pr.base));
    hset_free(&hs);
    for (size_t i = 0; i < k; i++)
        free(rh[i].value);
    free(rh);
    if (h->end_of_stream)
        report(st);
}

static void on_response_body(stream *st, const HttpBody *b)
{
    if (st->phase != PH_ROUTED || st->reported)
        return;
    const uint8_t *data = b->body.data;
    size_t len = b->body.len;
    bool eos = b->end_of_stream;
    if (st->pre_requested && !st->first_chunk) {   /* llm-d's StartOfStream: prefill is done */
        st->first_chunk = true;
        hook_target(st, sched_response_started);
    }
    st->response_bytes += len;
    if (st->resp_buffered) {
        if (!st->resp_passthrough && !body_append(st, data, len))
            st->resp_passthrough = true;
        reply_continue(st, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_BODY);
        if (eos && !st->resp_passthrough)
            oai_usage_parse(st->body, st->body_len, &st->usage, NULL);
    } else if (st->resp_streaming) {
        oai_sse_feed(&st->sse, (const char *)data, len);
        reply_chunks(st, false, (const char *)data, len, eos);
        if (eos)
            st->usage = st->sse.usage;
    } else {
        if (!st->resp_passthrough && !body_append(st, data, len)) {
            /* Too large to hold: pass on what we have and stream the rest (no usage). */
            st->resp_passthrough = true;
            if (st->body_len)
                reply_chunks(st, false, st->body, st->body_len, false);
            st->body_len = 0;
        }
        if (st->resp_passthrough) {
            reply_chunks(st, false, (const char *)data, len, eos);
        } else if (eos) {
            oai_usage_parse(st->body, st->body_len, &st->usage, NULL);
            reply_chunks(st, false, st->body, st->body_len, true);
        }
    }
    if (eos)
        report(st);
}

static void process(stream *st, const PReq *m)
{
    if (m->protocol_config) {
        int rq = m->protocol_config->request_body_mode, rs = m->protocol_config->response_body_mode;
        st->req_buffered = (rq == BODY_MODE_BUFFERED || rq == BODY_MODE_BUFFERED_PARTIAL) &&
                           !m->protocol_config->send_body_without_waiting_for_header_response;
        st->resp_buffered = rs == BODY_MODE_BUFFERED || rs == BODY_MODE_BUFFERED_PARTIAL;
    }
    if (m->metadata_context)
        read_subset(st, m->metadata_context);
    switch (m->request_case) {
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_HEADERS:
        on_request_headers(st, m->request_headers);
        break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_BODY:
        on_request_body(st, m->request_body, m->request_body->end_of_stream);
        break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_HEADERS:
        on_response_headers(st, m->response_headers);
        break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_BODY:
        on_response_body(st, m->response_body);
        break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_TRAILERS:
        /* Trailers end a body that had no end_of_stream: route on what arrived. */
        on_request_body(st, NULL, true);
        if (st->phase != PH_DONE)
            reply_continue(st, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_TRAILERS);
        break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_TRAILERS:
        if (st->phase == PH_ROUTED) {
            if (st->resp_streaming)
                st->usage = st->sse.usage;
            report(st);
            reply_continue(st, ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_TRAILERS);
        }
        break;
    default:
        break;
    }
}

/* ---- gRPC plumbing ------------------------------------------------------------------------------ */

static void stream_free(stream *st)
{
    extproc_server *s = st->srv;
    report(st);
    if (st->call)
        grpc_call_unref(st->call);
    grpc_metadata_array_destroy(&st->md);
    for (size_t i = st->out_i; i < st->out_n; i++)
        grpc_byte_buffer_destroy(st->outq[i]);
    free(st->outq);
    if (st->recv_buf)
        grpc_byte_buffer_destroy(st->recv_buf);
    if (st->sending)
        grpc_byte_buffer_destroy(st->sending);
    grpc_slice_unref(st->close_details);
    for (size_t i = 0; i < st->n_hdrs; i++)
        free(st->hdrs[i].key), free(st->hdrs[i].value);
    free(st->hdrs);
    free(st->skv);
    for (size_t i = 0; i < st->n_subset; i++)
        free(st->subset[i]);
    free(st->subset);
    free(st->body);
    json_decref(st->rewritten);
    oai_request_free(&st->oreq);
    free(st->tok);
    free(st->target);
    oai_sse_free(&st->sse);
    pthread_mutex_destroy(&st->mu);
    if (st->started) {
        pthread_mutex_lock(&s->mu);
        s->stats.streams_active--;
        pthread_mutex_unlock(&s->mu);
    }
    free(st);
}

/* Called with st->mu held; returns true when the stream was freed (mutex gone). */
static bool unref(stream *st)
{
    if (--st->refs > 0)
        return false;
    pthread_mutex_unlock(&st->mu);
    stream_free(st);
    return true;
}

/* Starts a batch unless the server is stopping: once extproc_stop has closed the gate
 * no new operation may reach the completion queue it is about to shut down. */
static bool begin(extproc_server *s, grpc_call *call, const grpc_op *ops, size_t n, void *tag)
{
    pthread_rwlock_rdlock(&s->gate);
    bool ok = !s->stopping && grpc_call_start_batch(call, ops, n, tag, NULL) == GRPC_CALL_OK;
    pthread_rwlock_unlock(&s->gate);
    return ok;
}

static bool start(stream *st, const grpc_op *ops, size_t n, enum op_kind kind)
{
    st->main_kind = kind;
    return begin(st->srv, st->call, ops, n, TAG(st, TAG_MAIN));
}

/* Next step of the main chain: a queued reply, the final status, or the next receive.
 * Called with st->mu held; returns true when the stream was freed (chain could not go on). */
static bool advance(stream *st)
{
    grpc_op op = {0};
    enum op_kind kind;
    if (st->out_i < st->out_n) {
        op.op = GRPC_OP_SEND_MESSAGE;
        st->sending = st->outq[st->out_i++];
        op.data.send_message.send_message = st->sending;
        kind = OP_SEND;
    } else if (st->close_after) {
        st->out_i = st->out_n = 0;
        op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        op.data.send_status_from_server.status = st->close_code;
        op.data.send_status_from_server.status_details = &st->close_details;
        kind = OP_STATUS;
    } else {
        st->out_i = st->out_n = 0;
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &st->recv_buf;
        kind = OP_RECV;
    }
    return !start(st, &op, 1, kind) && unref(st);
}

static void close_with(stream *st, grpc_status_code code, const char *msg)
{
    st->close_after = true;
    st->close_code = code;
    grpc_slice_unref(st->close_details);
    st->close_details = grpc_slice_from_copied_string(msg);
}

static stream *stream_new(extproc_server *s)
{
    stream *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->srv = s;
    pthread_mutex_init(&st->mu, NULL);
    st->close_details = grpc_empty_slice();
    grpc_metadata_array_init(&st->md);
    return st;
}

static void request_stream(extproc_server *s)
{
    stream *st = stream_new(s);
    if (!st)
        return;
    atomic_fetch_add_explicit(&s->handoff, 1, memory_order_release);
    pthread_rwlock_rdlock(&s->gate);
    bool ok = !s->stopping && grpc_server_request_registered_call(s->server, s->method, &st->call, &st->deadline,
                                                                  &st->md, NULL, s->cq, s->cq, TAG(st, TAG_NEW)) == GRPC_CALL_OK;
    pthread_rwlock_unlock(&s->gate);
    if (!ok)
        stream_free(st);
}

static void stream_started(stream *st)
{
    extproc_server *s = st->srv;
    st->started = true;
    pthread_mutex_lock(&s->mu);
    s->stats.streams++;
    s->stats.streams_active++;
    pthread_mutex_unlock(&s->mu);
}

static void on_new(stream *st, bool ok)
{
    pthread_mutex_lock(&st->mu);
    extproc_server *s = st->srv;
    if (!ok) { /* the server is shutting down */
        pthread_mutex_unlock(&st->mu);
        stream_free(st);
        return;
    }
    stream_started(st);
    request_stream(s);
    st->refs = 2;
    grpc_op close_op = {0};
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &st->cancelled;
    if (!begin(s, st->call, &close_op, 1, TAG(st, TAG_CLOSE)))
        st->refs--;
    grpc_op ops[2] = {{0}, {0}};
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &st->recv_buf;
    if (!start(st, ops, 2, OP_RECV) && unref(st))
        return;
    pthread_mutex_unlock(&st->mu);
}

/* One received message through the state machine (bb NULL: Envoy half-closed, finish
 * with OK); the replies, and a final status, are queued on the stream. */
static void receive(stream *st, grpc_byte_buffer *bb)
{
    if (!bb) {
        close_with(st, GRPC_STATUS_OK, "");
        return;
    }
    kv_err e = {0};
    PReq *m = unpack(bb, &e);
    if (!m) {
        STAT_ADD(st->srv, bad_messages, 1);
        close_with(st, GRPC_STATUS_INVALID_ARGUMENT, e.msg);
        return;
    }
    process(st, m);
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void on_main(stream *st, bool ok)
{
    pthread_mutex_lock(&st->mu);
    enum op_kind kind = st->main_kind;
    if (kind == OP_SEND) {
        grpc_byte_buffer_destroy(st->sending);
        st->sending = NULL;
    }
    if (!ok || kind == OP_STATUS) {
        if (!unref(st))
            pthread_mutex_unlock(&st->mu);
        return;
    }
    if (kind == OP_RECV) {
        receive(st, st->recv_buf);
        if (st->recv_buf)
            grpc_byte_buffer_destroy(st->recv_buf);
        st->recv_buf = NULL;
    }
    if (!advance(st))
        pthread_mutex_unlock(&st->mu);
}

static void on_close(stream *st)
{
    pthread_mutex_lock(&st->mu);
    if (!unref(st))
        pthread_mutex_unlock(&st->mu);
}

static void *worker(void *arg)
{
    extproc_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        atomic_load_explicit(&s->handoff, memory_order_acquire);
        stream *st = TAG_STREAM(ev.tag);
        switch (TAG_KIND(ev.tag)) {
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&s->mu);
            s->shutdown_seen = true;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            break;
        case TAG_NEW: on_new(st, ev.success); break;
        case TAG_CLOSE: on_close(st); break;
        default: on_main(st, ev.success); break;
        }
    }
    return NULL;
}

/* What a served and a detached server share: the config, the locks, the tokenizer's and
 * gRPC's global state (byte buffers and slices; extproc_stop shuts gRPC down). */
static extproc_server *server_new(const extproc_config *cfg, kv_err *err)
{
    extproc_server *s = calloc(1, sizeof *s);
    if (!s) {
        kv_err_set(err, KV_ENOMEM, "extproc: out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_rwlock_init(&s->gate, NULL);
    pthread_mutex_init(&s->sched_mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    tokenize_global_init();
    grpc_init();
    return s;
}

extproc_server *extproc_start(const extproc_config *cfg, kv_err *err)
{
    if (!cfg->sched || !cfg->pool.acquire || !cfg->pool.release || !cfg->addr) {
        kv_err_set(err, KV_EINVAL, "extproc: sched, pool and addr are required");
        return NULL;
    }
    if (!cfg->cert_pem != !cfg->key_pem) {
        kv_err_set(err, KV_EINVAL, "extproc: TLS needs both a certificate and a key");
        return NULL;
    }
    extproc_server *s = server_new(cfg, err);
    if (!s)
        return NULL;
    s->cq = grpc_completion_queue_create_for_next(NULL);
    /* No SO_REUSEPORT: a busy port must be an error, not a silently shared socket. */
    grpc_arg args[2] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = 64 << 20},
    };
    grpc_channel_args ca = {2, args};
    s->server = grpc_server_create(&ca, NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    s->method = grpc_server_register_method(s->server, EXTPROC_METHOD, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
    grpc_server_credentials *creds;
    if (cfg->cert_pem) {
        grpc_ssl_pem_key_cert_pair pair = {cfg->key_pem, cfg->cert_pem};
        creds = grpc_ssl_server_credentials_create_ex(NULL, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    s->port = creds ? grpc_server_add_http2_port(s->server, cfg->addr, creds) : 0;
    if (creds)
        grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        kv_err_set(err, KV_EIO, "extproc: cannot listen on %s (port busy, bad address or bad certificate)",
                   cfg->addr);
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(s->cq);
        grpc_shutdown();
        pthread_mutex_destroy(&s->mu);
        pthread_rwlock_destroy(&s->gate);
        pthread_mutex_destroy(&s->sched_mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return NULL;
    }
    grpc_server_start(s->server);
    s->n_threads = cfg->threads > 0 ? cfg->threads : 4;
    for (int i = 0; i < 2 * s->n_threads; i++)
        request_stream(s);
    s->threads = calloc((size_t)s->n_threads, sizeof *s->threads);
    for (int i = 0; i < s->n_threads; i++)
        pthread_create(&s->threads[i], NULL, worker, s);
    return s;
}

void extproc_keep_heap(void)
{
    mallopt(M_MMAP_THRESHOLD, 16 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

int extproc_port(const extproc_server *s) { return s->port; }

void extproc_get_stats(const extproc_server *s, extproc_stats *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    *out = s->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
}

void extproc_stop(extproc_server *s)
{
    if (!s)
        return;
    if (s->server) { /* a detached server has no gRPC side */
        pthread_rwlock_wrlock(&s->gate);
        s->stopping = true;
        pthread_rwlock_unlock(&s->gate);
        grpc_server_shutdown_and_notify(s->server, s->cq, TAG(NULL, TAG_SHUTDOWN));
        grpc_server_cancel_all_calls(s->server);
        pthread_mutex_lock(&s->mu);
        while (!s->shutdown_seen)
            pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        for (int i = 0; i < s->n_threads; i++)
            pthread_join(s->threads[i], NULL);
        grpc_completion_queue_destroy(s->cq);
    }
    free(s->threads);
    sched_trace_free(&s->trace);
    pthread_mutex_destroy(&s->mu);
    pthread_rwlock_destroy(&s->gate);
    pthread_mutex_destroy(&s->sched_mu);
    pthread_cond_destroy(&s->cv);
    free(s);
    grpc_shutdown();
}

/* ---- detached streams ------------------------------------------------------------------------- */

extproc_server *extproc_detached(const extproc_config *cfg, kv_err *err)
{
    if (!cfg->sched || !cfg->pool.acquire || !cfg->pool.release) {
        kv_err_set(err, KV_EINVAL, "extproc: sched and pool are required");
        return NULL;
    }
    return server_new(cfg, err);
}

extproc_stream *extproc_stream_open(extproc_server *s)
{
    stream *st = stream_new(s);
    if (st)
        stream_started(st);
    return st;
}

int extproc_stream_feed(extproc_stream *st, const uint8_t *msg, size_t len,
                        void (*reply)(void *ctx, const uint8_t *msg, size_t len), void *ctx)
{
    pthread_mutex_lock(&st->mu);
    if (!st->close_after) { /* after the final status gRPC receives nothing more */
        grpc_byte_buffer *bb = NULL;
        if (msg) {
            grpc_slice sl = grpc_slice_from_copied_buffer((const char *)msg, len);
            bb = grpc_raw_byte_buffer_create(&sl, 1);
            grpc_slice_unref(sl);
        }
        receive(st, bb);
        if (bb)
            grpc_byte_buffer_destroy(bb);
    }
    for (; st->out_i < st->out_n; st->out_i++) {
        grpc_byte_buffer_reader r;
        if (grpc_byte_buffer_reader_init(&r, st->outq[st->out_i])) {
            grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
            grpc_byte_buffer_reader_destroy(&r);
            reply(ctx, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl));
            grpc_slice_unref(sl);
        }
        grpc_byte_buffer_destroy(st->outq[st->out_i]);
    }
    st->out_i = st->out_n = 0;
    int status = st->close_after ? (int)st->close_code : -1;
    pthread_mutex_unlock(&st->mu);
    return status;
}

void extproc_stream_close(extproc_stream *st)
{
    if (st)
        stream_free(st);
}
