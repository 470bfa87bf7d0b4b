/* extproc_client: Envoy's side of ext-proc streams for tests (see extproc_client.h). */
#include "extproc_client.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>

#include "extproc.h"
#include "health.pb-c.h"

struct xpc_client {
    grpc_channel *ch;
};

struct xpc_stream {
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_metadata_array initial, trailing;
    bool got_initial, finished, broken;
    grpc_status_code status;
    grpc_slice details;
    int tagc;
};

static gpr_timespec after_ms(int ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

xpc_client *xpc_connect(const char *target, const char *root_pem, const char *name_override)
{
    grpc_init();
    xpc_client *c = calloc(1, sizeof *c);
    grpc_channel_credentials *cr =
        root_pem ? grpc_ssl_credentials_create(root_pem, NULL, NULL, NULL) : grpc_insecure_credentials_create();
    grpc_arg a[2];
    size_t na = 0;
    a[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = 64 << 20};
    if (root_pem && name_override)
        a[na++] = (grpc_arg){.type = GRPC_ARG_STRING, .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                             .value.string = (char *)name_override};
    grpc_channel_args args = {na, a};
    c->ch = grpc_channel_create(target, cr, &args);
    grpc_channel_credentials_release(cr);
    return c;
}

void xpc_disconnect(xpc_client *c)
{
    if (!c)
        return;
    grpc_channel_destroy(c->ch);
    free(c);
    grpc_shutdown();
}

/* Runs one batch and waits for it; false on failure or timeout (the call is cancelled). */
static bool run(xpc_stream *s, const grpc_op *ops, size_t n, int timeout_ms)
{
    void *tag = (void *)(intptr_t)(++s->tagc);
    if (s->broken || grpc_call_start_batch(s->call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return false;
    grpc_event ev = grpc_completion_queue_pluck(s->cq, tag, after_ms(timeout_ms), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        grpc_call_cancel(s->call, NULL);
        ev = grpc_completion_queue_pluck(s->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        s->broken = true;
        return false;
    }
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

xpc_stream *xpc_open(xpc_client *c, int timeout_ms)
{
    xpc_stream *s = calloc(1, sizeof *s);
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    s->details = grpc_empty_slice();
    grpc_metadata_array_init(&s->initial);
    grpc_metadata_array_init(&s->trailing);
    s->call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq,
                                       grpc_slice_from_static_string(EXTPROC_METHOD), NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_op op = {0};
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    if (!run(s, &op, 1, timeout_ms)) {
        xpc_close(s);
        return NULL;
    }
    return s;
}

/* Sends one message made of the slice; takes the caller's reference to it. */
static int send_slice(xpc_stream *s, grpc_slice sl)
{
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_op op = {0};
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    bool ok = run(s, &op, 1, 5000);
    grpc_byte_buffer_destroy(bb);
    return ok ? 0 : -1;
}

static int send_msg(xpc_stream *s, const ProtobufCMessage *m)
{
    grpc_slice sl = grpc_slice_malloc(protobuf_c_message_get_packed_size(m));
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    return send_slice(s, sl);
}

int xpc_send_raw(xpc_stream *s, const void *bytes, size_t len)
{
    return send_slice(s, grpc_slice_from_copied_buffer(bytes, len));
}

static int send_headers(xpc_stream *s, bool response, const char *const *kv, bool eos, const char *const *subset,
                        size_t n_subset, int body_mode)
{
    size_t n = 0;
    while (kv && kv[2 * n])
        n++;
    Envoy__Service__ExtProc__V3__HeaderValue *hv = calloc(n + 1, sizeof *hv);
    Envoy__Service__ExtProc__V3__HeaderValue **hp = calloc(n + 1, sizeof *hp);
    for (size_t i = 0; i < n; i++) {
        envoy__service__ext_proc__v3__header_value__init(&hv[i]);
        hv[i].key = (char *)kv[2 * i];
        hv[i].raw_value.data = (uint8_t *)kv[2 * i + 1];
        hv[i].raw_value.len = strlen(kv[2 * i + 1]);
        hp[i] = &hv[i];
    }
    Envoy__Service__ExtProc__V3__HeaderMap hm = ENVOY__SERVICE__EXT_PROC__V3__HEADER_MAP__INIT;
    hm.n_headers = n, hm.headers = hp;
    Envoy__Service__ExtProc__V3__HttpHeaders hh = ENVOY__SERVICE__EXT_PROC__V3__HTTP_HEADERS__INIT;
    hh.headers = &hm;
    hh.end_of_stream = eos;
    Envoy__Service__ExtProc__V3__ProcessingRequest m = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__INIT;
    if (response) {
        m.request_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_HEADERS;
        m.response_headers = &hh;
    } else {
        m.request_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_HEADERS;
        m.request_headers = &hh;
    }
    /* metadata_context {"envoy.lb.subset_hint": {"x-gateway-destination-endpoint-subset": [..]}} */
    Envoy__Service__ExtProc__V3__Value *sv = calloc(n_subset + 1, sizeof *sv);
    Envoy__Service__ExtProc__V3__Value **svp = calloc(n_subset + 1, sizeof *svp);
    for (size_t i = 0; i < n_subset; i++) {
        envoy__service__ext_proc__v3__value__init(&sv[i]);
        sv[i].kind_case = ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRING_VALUE;
        sv[i].string_value = (char *)subset[i];
        svp[i] = &sv[i];
    }
    Envoy__Service__ExtProc__V3__ListValue lv = ENVOY__SERVICE__EXT_PROC__V3__LIST_VALUE__INIT;
    lv.n_values = n_subset, lv.values = svp;
    Envoy__Service__ExtProc__V3__Value v = ENVOY__SERVICE__EXT_PROC__V3__VALUE__INIT;
    v.kind_case = ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_LIST_VALUE;
    v.list_value = &lv;
    Envoy__Service__ExtProc__V3__Struct__FieldsEntry fe = ENVOY__SERVICE__EXT_PROC__V3__STRUCT__FIELDS_ENTRY__INIT;
    fe.key = "x-gateway-destination-endpoint-subset";
    fe.value = &v;
    Envoy__Service__ExtProc__V3__Struct__FieldsEntry *fep = &fe;
    Envoy__Service__ExtProc__V3__Struct st = ENVOY__SERVICE__EXT_PROC__V3__STRUCT__INIT;
    st.n_fields = 1, st.fields = &fep;
    Envoy__Service__ExtProc__V3__Metadata__FilterMetadataEntry me =
        ENVOY__SERVICE__EXT_PROC__V3__METADATA__FILTER_METADATA_ENTRY__INIT;
    me.key = "envoy.lb.subset_hint";
    me.value = &st;
    Envoy__Service__ExtProc__V3__Metadata__FilterMetadataEntry *mep = &me;
    Envoy__Service__ExtProc__V3__Metadata md = ENVOY__SERVICE__EXT_PROC__V3__METADATA__INIT;
    md.n_filter_metadata = 1, md.filter_metadata = &mep;
    if (subset)
        m.metadata_context = &md;
    Envoy__Service__ExtProc__V3__ProtocolConfiguration pc = ENVOY__SERVICE__EXT_PROC__V3__PROTOCOL_CONFIGURATION__INIT;
    pc.request_body_mode = pc.response_body_mode = body_mode;
    if (body_mode)
        m.protocol_config = &pc;
    int rc = send_msg(s, &m.base);
    free(hv), free(hp), free(sv), free(svp);
    return rc;
}

int xpc_send_request_headers(xpc_stream *s, const char *const *kv, bool eos, const char *const *subset,
                             size_t n_subset, int body_mode)
{
    return send_headers(s, false, kv, eos, subset, n_subset, body_mode);
}

int xpc_send_response_headers(xpc_stream *s, const char *const *kv, bool eos)
{
    return send_headers(s, true, kv, eos, NULL, 0, 0);
}

int xpc_send_body(xpc_stream *s, bool response, const void *data, size_t len, bool eos)
{
    Envoy__Service__ExtProc__V3__HttpBody b = ENVOY__SERVICE__EXT_PROC__V3__HTTP_BODY__INIT;
    b.body.data = (uint8_t *)data;
    b.body.len = len;
    b.end_of_stream = eos;
    Envoy__Service__ExtProc__V3__ProcessingRequest m = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__INIT;
    if (response) {
        m.request_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_RESPONSE_BODY;
        m.response_body = &b;
    } else {
        m.request_case = ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_REQUEST__REQUEST_REQUEST_BODY;
        m.request_body = &b;
    }
    return send_msg(s, &m.base);
}

xpc_resp *xpc_recv(xpc_stream *s, int timeout_ms)
{
    grpc_byte_buffer *bb = NULL;
    grpc_op ops[2] = {{0}, {0}};
    size_t n = 0;
    if (!s->got_initial) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->initial;
        s->got_initial = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &bb;
    if (!run(s, ops, n, timeout_ms) || !bb) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        return NULL;
    }
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, bb);
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(bb);
    xpc_resp *m = envoy__service__ext_proc__v3__processing_response__unpack(NULL, GRPC_SLICE_LENGTH(sl),
                                                                            GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    return m;
}

void xpc_resp_free(xpc_resp *r)
{
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

int xpc_finish(xpc_stream *s, char *details, size_t cap, int timeout_ms)
{
    grpc_op ops[3] = {{0}, {0}, {0}};
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (!s->got_initial) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->initial;
        s->got_initial = true;
    }
    ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[n].data.recv_status_on_client.trailing_metadata = &s->trailing;
    ops[n].data.recv_status_on_client.status = &s->status;
    ops[n++].data.recv_status_on_client.status_details = &s->details;
    bool ok = run(s, ops, n, timeout_ms);
    s->finished = true;
    if (details && cap) {
        size_t len = GRPC_SLICE_LENGTH(s->details);
        if (len >= cap)
            len = cap - 1;
        memcpy(details, GRPC_SLICE_START_PTR(s->details), len);
        details[len] = 0;
    }
    return ok ? (int)s->status : -1;
}

void xpc_close(xpc_stream *s)
{
    if (!s)
        return;
    if (!s->finished)
        grpc_call_cancel(s->call, NULL);
    grpc_call_unref(s->call);
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_pluck(s->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(s->cq);
    grpc_metadata_array_destroy(&s->initial);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_slice_unref(s->details);
    free(s);
}

const char *xpc_header(const Envoy__Service__ExtProc__V3__HeaderMutation *m, const char *key, size_t *len)
{
    for (size_t i = 0; m && i < m->n_set_headers; i++) {
        const Envoy__Service__ExtProc__V3__HeaderValue *h = m->set_headers[i]->header;
        if (h && h->key && !strcasecmp(h->key, key)) {
            if (len)
                *len = h->raw_value.len;
            return (const char *)h->raw_value.data;
        }
    }
    return NULL;
}

const char *xpc_dest_metadata(const xpc_resp *r)
{
    const Envoy__Service__ExtProc__V3__Struct *top = r->dynamic_metadata;
    for (size_t i = 0; top && i < top->n_fields; i++) {
        const Envoy__Service__ExtProc__V3__Value *v = top->fields[i]->value;
        if (strcmp(top->fields[i]->key, "envoy.lb") || !v ||
            v->kind_case != ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRUCT_VALUE)
            continue;
        for (size_t j = 0; j < v->struct_value->n_fields; j++) {
            const Envoy__Service__ExtProc__V3__Struct__FieldsEntry *f = v->struct_value->fields[j];
            if (!strcmp(f->key, "x-gateway-destination-endpoint") && f->value &&
                f->value->kind_case == ENVOY__SERVICE__EXT_PROC__V3__VALUE__KIND_STRING_VALUE)
                return f->value->string_value;
        }
    }
    return NULL;
}

int xpc_health_check(xpc_client *c, const char *service, int timeout_ms)
{
    xpc_stream s = {0};
    s.cq = grpc_completion_queue_create_for_pluck(NULL);
    s.details = grpc_empty_slice();
    grpc_metadata_array_init(&s.initial);
    grpc_metadata_array_init(&s.trailing);
    s.call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s.cq,
                                      grpc_slice_from_static_string("/grpc.health.v1.Health/Check"), NULL,
                                      after_ms(timeout_ms), NULL);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    size_t n = grpc__health__v1__health_check_request__get_packed_size(&req);
    grpc_slice sl = grpc_slice_malloc(n);
    grpc__health__v1__health_check_request__pack(&req, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *out = grpc_raw_byte_buffer_create(&sl, 1), *in = NULL;
    grpc_slice_unref(sl);
    grpc_op ops[6] = {{0}};
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = out;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s.initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &in;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s.trailing;
    ops[5].data.recv_status_on_client.status = &s.status;
    ops[5].data.recv_status_on_client.status_details = &s.details;
    bool ok = run(&s, ops, 6, timeout_ms);
    s.finished = true;
    int rc = -(int)GRPC_STATUS_UNAVAILABLE;
    if (ok && s.status != GRPC_STATUS_OK) {
        rc = -(int)s.status;
    } else if (ok && in) {
        grpc_byte_buffer_reader r;
        grpc_byte_buffer_reader_init(&r, in);
        grpc_slice body = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        Grpc__Health__V1__HealthCheckResponse *resp =
            grpc__health__v1__health_check_response__unpack(NULL, GRPC_SLICE_LENGTH(body), GRPC_SLICE_START_PTR(body));
        grpc_slice_unref(body);
        if (resp) {
            rc = resp->status;
            grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
        }
    }
    grpc_byte_buffer_destroy(out);
    if (in)
        grpc_byte_buffer_destroy(in);
    grpc_call_unref(s.call);
    grpc_completion_queue_shutdown(s.cq);
    while (grpc_completion_queue_pluck(s.cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(s.cq);
    grpc_metadata_array_destroy(&s.initial);
    grpc_metadata_array_destroy(&s.trailing);
    grpc_slice_unref(s.details);
    return rc;
}
