/* extproc: Envoy ext-proc server, gRPC core completion-queue loop and the per-stream
 * state machine (see extproc.h for the protocol and thread rules). The routing of each
 * request is live/route.c's and the messages sent are built by live/extproc_reply.c;
 * this file reads the messages, drives both, and queues and sends the replies.
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
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ext_proc.pb-c.h"
#include "extproc_reply.h"
#include "grow.h"
#include "log.h"
#include "pbdepth.h"

typedef Envoy__Service__ExtProc__V3__ProcessingRequest PReq;
typedef Envoy__Service__ExtProc__V3__HttpHeaders HttpHeaders;
typedef Envoy__Service__ExtProc__V3__HttpBody HttpBody;
typedef Envoy__Service__ExtProc__V3__HeaderValue HeaderValue;
typedef Envoy__Service__ExtProc__V3__Struct__FieldsEntry PField;
typedef Envoy__Service__ExtProc__V3__Value PValue;

#define BODY_MODE_BUFFERED 2
#define BODY_MODE_BUFFERED_PARTIAL 3
#define SUBSET_NS "envoy.lb.subset_hint"
#define SUBSET_KEY "x-gateway-destination-endpoint-subset"
#define CASE(name) ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_##name

/* Completion tags carry their kind in the low bits of the stream pointer, so a worker
 * can dispatch an event without touching stream memory before it holds the stream's
 * lock. The main operation's own kind (receive, send, status) is stream state. */
enum tag_kind { TAG_NEW = 0, TAG_MAIN = 1, TAG_CLOSE = 2, TAG_SHUTDOWN = 3 };
enum op_kind { OP_RECV, OP_SEND, OP_STATUS };
typedef struct extproc_stream stream;
#define TAG(st, kind) ((void *)((uintptr_t)(st) | (uintptr_t)(kind)))
#define TAG_STREAM(t) ((stream *)((uintptr_t)(t) & ~(uintptr_t)7))
#define TAG_KIND(t) ((enum tag_kind)((uintptr_t)(t) & 7))

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
    /* the HTTP request: its routing; its body buffer later holds a buffered response */
    enum phase phase;
    bool req_buffered, resp_buffered; /* from protocol_config */
    route_req req;
    /* the HTTP response */
    bool resp_streaming, resp_passthrough;
    oai_sse sse;
};

struct extproc_server {
    extproc_config cfg;
    route_router *router;
    grpc_server *server;
    grpc_completion_queue *cq;
    void *method;
    int port;
    pthread_t *threads;
    int n_threads;
    pthread_rwlock_t gate;            /* stopping: read to start an operation, written to stop */
    bool stopping;
    pthread_mutex_t mu;               /* stats, shutdown_seen */
    pthread_cond_t cv;
    bool shutdown_seen;
    extproc_stats stats;
    /* Release/acquire edge from a stream's creator to the worker that first sees it: the
     * real ordering goes through gRPC's completion queue, which TSan cannot see. */
    atomic_uint handoff;
};

#define STAT_ADD(s, field, v)                 \
    do {                                      \
        pthread_mutex_lock(&(s)->mu);         \
        (s)->stats.field += (v);              \
        pthread_mutex_unlock(&(s)->mu);       \
    } while (0)

/* ---- protobuf <-> gRPC ------------------------------------------------------------------ */

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
    if (!grow_array((void **)&st->outq, &st->out_cap, st->out_n + 1, sizeof *st->outq)) {
        grpc_byte_buffer_destroy(bb);
        st->close_after = true;
        st->close_code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        return;
    }
    st->outq[st->out_n++] = bb;
}

static void push_to(void *st, grpc_byte_buffer *bb) { push(st, bb); }

/* ---- replies ------------------------------------------------------------------------------ */

static void reply_error(stream *st, int status, const char *msg)
{
    extproc_server *s = st->srv;
    char body[EXTPROC_ERROR_BODY];
    size_t len;
    push(st, extproc_reply_error(status, msg, body, &len));
    st->phase = PH_DONE;
    st->req.http_status = status;
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
    LOG_V(2, "Request rejected", "{s:s, s:i, s:s%}", "x-request-id", st->req.request_id ? st->req.request_id : "",
          "status", status, "error", body, len);
}

static void set_error_oom(stream *st) { reply_error(st, 500, "out of memory"); }

/* The routing answer: headers (destination, Content-Length, echoed request headers) in
 * a RequestHeaders response, or, when Envoy buffers the body and already had its
 * headers answer, in the RequestBody response. */
static void reply_route(stream *st, bool with_body)
{
    char clen[32];
    snprintf(clen, sizeof clen, "%zu", st->req.body_len);
    grpc_byte_buffer *bb = extproc_reply_route(st->req.target, st->req.hdrs, st->req.n_hdrs,
                                               with_body && !st->req_buffered ? clen : NULL,
                                               with_body && st->req_buffered);
    if (bb)
        push(st, bb);
    else
        set_error_oom(st);
}

static void reply_chunks(stream *st, bool request, const char *data, size_t len, bool eos)
{
    extproc_reply_chunks(request, data, len, eos, push_to, st);
}

/* ---- request state ---------------------------------------------------------------------------- */

/* A header's value and its length: raw_value when set, else the string form. */
static const char *header_value(const HeaderValue *hv, size_t *len)
{
    if (hv->raw_value.len) {
        *len = hv->raw_value.len;
        return (const char *)hv->raw_value.data;
    }
    const char *v = hv->value ? hv->value : "";
    *len = strlen(v);
    return v;
}

static bool store_headers(stream *st, const HttpHeaders *h)
{
    size_t n = h->headers ? h->headers->n_headers : 0;
    if (route_begin(&st->req, n) != KV_OK)
        return false;
    for (size_t i = 0; i < n; i++) {
        const HeaderValue *hv = h->headers->headers[i];
        size_t len;
        const char *v = header_value(hv, &len);
        if (route_add_header(&st->req, hv->key ? hv->key : "", v, len) != KV_OK)
            return false;
    }
    return route_headers_end(&st->req) == KV_OK;
}

/* metadata_context["envoy.lb.subset_hint"]["x-gateway-destination-endpoint-subset"]:
 * a list of "ip:port" (a comma-separated string is accepted too). */
static void read_subset(stream *st, const Envoy__Service__ExtProc__V3__Metadata *md)
{
    route_req *q = &st->req;
    for (size_t i = 0; md && i < md->n_filter_metadata; i++) {
        const Envoy__Service__ExtProc__V3__Metadata__FilterMetadataEntry *fe = md->filter_metadata[i];
        if (!fe->key || strcmp(fe->key, SUBSET_NS) || !fe->value)
            continue;
        for (size_t j = 0; j < fe->value->n_fields; j++) {
            const PField *f = fe->value->fields[j];
            if (!f->key || strcmp(f->key, SUBSET_KEY) || !f->value)
                continue;
            route_subset_clear(q);
            const PValue *v = f->value;
            if (v->kind_case == ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_LIST_VALUE && v->list_value) {
                for (size_t k = 0; k < v->list_value->n_values; k++) {
                    const PValue *e = v->list_value->values[k];
                    if (e->kind_case == ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRING_VALUE && e->string_value[0])
                        route_subset_add(q, e->string_value, strlen(e->string_value));
                }
            } else if (v->kind_case == ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRING_VALUE) {
                for (const char *p = v->string_value; *p;) {
                    size_t n = strcspn(p, ",");
                    if (n)
                        route_subset_add(q, p, n);
                    p += n + (p[n] == ',');
                }
            }
        }
    }
}

static void routed(stream *st, bool with_body)
{
    st->phase = PH_ROUTED;
    STAT_ADD(st->srv, requests, 1);
    reply_route(st, with_body);
}

static void route(stream *st)
{
    int status = route_decide(&st->req);
    if (status != 200) {
        reply_error(st, status, st->req.error);
        return;
    }
    routed(st, true);
    if (!st->req_buffered) /* in buffered mode Envoy forwards its own copy */
        reply_chunks(st, true, st->req.body, st->req.body_len, true);
    st->req.body_len = 0; /* the buffer now serves the response */
}

/* A request without a body: GIE routes it to a random endpoint at once. */
static void route_headers_only(stream *st)
{
    if (route_decide_headers_only(&st->req) != 200)
        reply_error(st, st->req.http_status, st->req.error);
    else
        routed(st, false);
}

static void report(stream *st)
{
    if (st->phase != PH_HEADERS)
        route_complete(&st->req);
}

/* ---- message dispatch ------------------------------------------------------------------------ */

static void on_request_headers(stream *st, const HttpHeaders *h)
{
    if (st->phase != PH_HEADERS)
        return;
    if (!store_headers(st, h)) {
        set_error_oom(st);
        return;
    }
    st->phase = PH_BODY;
    if (h->end_of_stream)
        route_headers_only(st);
    else if (st->req_buffered) /* Envoy waits for this answer before sending the body */
        push(st, extproc_reply_continue(CASE(REQUEST_HEADERS)));
}

static void on_request_body(stream *st, const HttpBody *b, bool eos)
{
    if (st->phase != PH_BODY)
        return;
    st->req.request_bytes += b ? b->body.len : 0;
    if (b && !route_body_append(&st->req, b->body.data, b->body.len)) {
        reply_error(st, 400, "request body larger than the EPP's buffer limit");
        return;
    }
    if (eos)
        route(st);
    else if (st->req_buffered) /* BUFFERED_PARTIAL: every message wants an answer */
        push(st, extproc_reply_continue(CASE(REQUEST_BODY)));
}

static void on_response_headers(stream *st, const HttpHeaders *h)
{
    if (st->phase != PH_ROUTED)
        return;
    size_t n = h->headers ? h->headers->n_headers : 0, k = 0;
    route_header *rh = calloc(n + 1, sizeof *rh);
    if (!rh) {
        set_error_oom(st);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const HeaderValue *hv = h->headers->headers[i];
        size_t len;
        const char *raw = header_value(hv, &len);
        char *v = strndup(raw, len);
        if (!v)
            continue;
        if (hv->key && !strcasecmp(hv->key, "content-type") && strstr(v, "text/event-stream"))
            st->resp_streaming = true;
        rh[k++] = (route_header){.key = hv->key ? hv->key : (char *)"", .value = v};
    }
    grpc_byte_buffer *bb = extproc_reply_response_headers(rh, k);
    for (size_t i = 0; i < k; i++)
        free(rh[i].value);
    free(rh);
    if (!bb) {
        set_error_oom(st);
        return;
    }
    push(st, bb);
    if (h->end_of_stream)
        report(st);
}

static void on_response_body(stream *st, const HttpBody *b)
{
    route_req *q = &st->req;
    if (st->phase != PH_ROUTED || q->reported)
        return;
    const uint8_t *data = b->body.data;
    size_t len = b->body.len;
    bool eos = b->end_of_stream;
    route_response_started(q);
    q->response_bytes += len;
    if (st->resp_buffered) {
        if (!st->resp_passthrough && !route_body_append(q, data, len))
            st->resp_passthrough = true;
        push(st, extproc_reply_continue(CASE(RESPONSE_BODY)));
        if (eos && !st->resp_passthrough)
            oai_usage_parse(q->body, q->body_len, &q->usage, NULL);
    } else if (st->resp_streaming) {
        oai_sse_feed(&st->sse, (const char *)data, len);
        reply_chunks(st, false, (const char *)data, len, eos);
        if (eos)
            q->usage = st->sse.usage;
    } else {
        if (!st->resp_passthrough && !route_body_append(q, data, len)) {
            /* Too large to hold: pass on what we have and stream the rest (no usage). */
            st->resp_passthrough = true;
            if (q->body_len)
                reply_chunks(st, false, q->body, q->body_len, false);
            q->body_len = 0;
        }
        if (st->resp_passthrough) {
            reply_chunks(st, false, (const char *)data, len, eos);
        } else if (eos) {
            oai_usage_parse(q->body, q->body_len, &q->usage, NULL);
            reply_chunks(st, false, q->body, q->body_len, true);
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
            push(st, extproc_reply_continue(CASE(REQUEST_TRAILERS)));
        break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_TRAILERS:
        if (st->phase == PH_ROUTED) {
            if (st->resp_streaming)
                st->req.usage = st->sse.usage;
            report(st);
            push(st, extproc_reply_continue(CASE(RESPONSE_TRAILERS)));
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
    route_req_free(&st->req);
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
    route_req_init(&st->req, s->router);
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

/* What server_new set up (and the worker array); ends gRPC's use. */
static void server_free(extproc_server *s)
{
    if (!s->cfg.router)
        route_free(s->router);
    pthread_cond_destroy(&s->cv);
    pthread_rwlock_destroy(&s->gate);
    pthread_mutex_destroy(&s->mu);
    free(s->threads);
    free(s);
    grpc_shutdown();
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
    if (!(s->router = cfg->router ? cfg->router : route_new(&cfg->route, err))) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_rwlock_init(&s->gate, NULL);
    pthread_cond_init(&s->cv, NULL);
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
        server_free(s);
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

route_router *extproc_router(extproc_server *s) { return s->router; }

void extproc_get_stats(const extproc_server *s, extproc_stats *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    *out = s->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    route_stats rs;
    route_get_stats(s->router, &rs);
    out->tokenize_ok = rs.tokenize_ok;
    out->tokenize_failed = rs.tokenize_failed;
    out->completed = rs.completed;
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
    server_free(s);
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
