/* health: grpc.health.v1 on gRPC core (see health.h). Unary calls, so each call is one
 * request_call completion followed by a single batch that receives the request and,
 * in a second batch, sends the answer with the status. */
#include "health.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "health.pb-c.h"

enum { T_NEW, T_RECV, T_DONE, T_SHUTDOWN };

typedef struct hcall {
    int stage;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *in, *out;
    int cancelled;
    grpc_slice status_details;
} hcall;

struct health_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    int port;
    bool (*ready)(void *ctx);
    void *ctx;
    pthread_t thread;
    int shutdown_tag;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown_seen;
};

static void hcall_free(hcall *c)
{
    if (c->call)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->in)
        grpc_byte_buffer_destroy(c->in);
    if (c->out)
        grpc_byte_buffer_destroy(c->out);
    grpc_slice_unref(c->status_details);
    free(c);
}

static void request(health_server *h)
{
    hcall *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->stage = T_NEW;
    c->status_details = grpc_empty_slice();
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    if (grpc_server_request_call(h->server, &c->call, &c->details, &c->md, h->cq, h->cq, c) != GRPC_CALL_OK)
        hcall_free(c);
}

static void answer(health_server *h, hcall *c)
{
    grpc_status_code code = GRPC_STATUS_OK;
    int status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    if (!grpc_slice_str_cmp(c->details.method, "/grpc.health.v1.Health/Check") && c->in) {
        grpc_byte_buffer_reader r;
        grpc_byte_buffer_reader_init(&r, c->in);
        grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        Grpc__Health__V1__HealthCheckRequest *req =
            grpc__health__v1__health_check_request__unpack(NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
        grpc_slice_unref(sl);
        if (!req) {
            code = GRPC_STATUS_INVALID_ARGUMENT;
        } else {
            grpc__health__v1__health_check_request__free_unpacked(req, NULL);
            if (!h->ready || h->ready(h->ctx))
                status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        }
    } else {
        code = GRPC_STATUS_UNIMPLEMENTED;
    }
    grpc_op ops[3] = {{0}, {0}, {0}};
    size_t n = 0;
    if (code == GRPC_STATUS_OK) {
        Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        resp.status = status;
        size_t len = grpc__health__v1__health_check_response__get_packed_size(&resp);
        grpc_slice sl = grpc_slice_malloc(len);
        grpc__health__v1__health_check_response__pack(&resp, GRPC_SLICE_START_PTR(sl));
        c->out = grpc_raw_byte_buffer_create(&sl, 1);
        grpc_slice_unref(sl);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->out;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &c->status_details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    c->stage = T_DONE;
    if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK)
        hcall_free(c);
}

static void *loop(void *arg)
{
    health_server *h = arg;
    bool down = false; /* after the shutdown notification the server may be gone */
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(h->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        if (ev.tag == &h->shutdown_tag) {
            pthread_mutex_lock(&h->mu);
            h->shutdown_seen = down = true;
            pthread_cond_signal(&h->cv);
            pthread_mutex_unlock(&h->mu);
            continue;
        }
        hcall *c = ev.tag;
        if (!ev.success || c->stage == T_DONE || down) { /* done, or cancelled by shutdown */
            hcall_free(c);
            continue;
        }
        if (c->stage == T_NEW) {
            request(h);
            grpc_op ops[2] = {{0}, {0}};
            ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
            ops[1].op = GRPC_OP_RECV_MESSAGE;
            ops[1].data.recv_message.recv_message = &c->in;
            c->stage = T_RECV;
            if (grpc_call_start_batch(c->call, ops, 2, c, NULL) != GRPC_CALL_OK)
                hcall_free(c);
        } else {
            answer(h, c);
        }
    }
    return NULL;
}

health_server *health_start(const char *addr, bool (*ready)(void *ctx), void *ctx, kv_err *err)
{
    health_server *h = calloc(1, sizeof *h);
    if (!h) {
        kv_err_set(err, KV_ENOMEM, "health: out of memory");
        return NULL;
    }
    h->ready = ready, h->ctx = ctx;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    grpc_init();
    h->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_arg a = {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0};
    grpc_channel_args args = {1, &a};
    h->server = grpc_server_create(&args, NULL);
    grpc_server_register_completion_queue(h->server, h->cq, NULL);
    grpc_server_credentials *cr = grpc_insecure_server_credentials_create();
    h->port = grpc_server_add_http2_port(h->server, addr, cr);
    grpc_server_credentials_release(cr);
    if (h->port <= 0) {
        kv_err_set(err, KV_EIO, "health: cannot listen on %s (port busy or bad address)", addr);
        grpc_server_destroy(h->server);
        grpc_completion_queue_shutdown(h->cq);
        while (grpc_completion_queue_next(h->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(h->cq);
        grpc_shutdown();
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cv);
        free(h);
        return NULL;
    }
    grpc_server_start(h->server);
    request(h);
    request(h);
    pthread_create(&h->thread, NULL, loop, h);
    return h;
}

int health_port(const health_server *h) { return h->port; }

void health_stop(health_server *h)
{
    if (!h)
        return;
    grpc_server_shutdown_and_notify(h->server, h->cq, &h->shutdown_tag);
    grpc_server_cancel_all_calls(h->server);
    pthread_mutex_lock(&h->mu);
    while (!h->shutdown_seen)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    grpc_server_destroy(h->server);
    grpc_completion_queue_shutdown(h->cq);
    pthread_join(h->thread, NULL);
    grpc_completion_queue_destroy(h->cq);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
    grpc_shutdown();
}
