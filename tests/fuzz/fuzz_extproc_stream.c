/* fuzz_extproc_stream: one ext-proc stream as Envoy drives it, through the real stream
 * state machine of live/extproc.c without gRPC (extproc_detached, extproc_stream_feed:
 * each message is decoded and handled exactly as a received gRPC message is).
 *
 * Input: one options byte, then messages as a length-delimited protobuf stream (each a
 * varint length and that many bytes of ProcessingRequest: request headers, body chunks,
 * trailers, response headers and body, protocol_config with the body modes, metadata
 * with subset hints); a zero length is Envoy's half-close. The stream is closed
 * after the last message, as a gRPC call's end closes it (the completion is reported).
 * Options: bit 0 a 4 KiB body limit (else the default), bit 1 decisions traced,
 * bit 2 objectives known (priority from the name), bit 3 every candidate saturated,
 * bit 4 a rewrite rule (model "m" -> "m-rewritten").
 *
 * Checked on every reply: it decodes as a ProcessingResponse; an ImmediateResponse
 * carries one of GIE's statuses; a destination names one of the pool's endpoints; no
 * streamed body chunk exceeds EXTPROC_CHUNK; a closed stream has a known gRPC status. */
#include <grpc/grpc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ext_proc.pb-c.h"
#include "extproc.h"
#include "log.h"
#include "registry.h"
#include "scheduler.h"

typedef Envoy__Service__ExtProc__V3__ProcessingResponse PResp;
typedef Envoy__Service__ExtProc__V3__CommonResponse CommonResponse;

#define N_EPS 4

static const char CONFIG[] =
    "plugins:\n"
    "- type: precise-prefix-cache-scorer\n"
    "  parameters:\n"
    "    tokenProcessorConfig: {blockSize: 16}\n"
    "- type: prefix-cache-scorer\n"
    "- type: kv-cache-utilization-scorer\n"
    "- type: queue-scorer\n"
    "- type: max-score-picker\n"
    "schedulingProfiles:\n"
    "- name: default\n"
    "  plugins:\n"
    "  - {pluginRef: precise-prefix-cache-scorer, weight: 3.0}\n"
    "  - {pluginRef: prefix-cache-scorer, weight: 1.0}\n"
    "  - {pluginRef: kv-cache-utilization-scorer, weight: 2.0}\n"
    "  - {pluginRef: queue-scorer, weight: 2.0}\n"
    "  - {pluginRef: max-score-picker}\n";

static struct {
    epc_config *cfg;
    sched *s;
    sched_endpoint eps[N_EPS];
    sched_endpoint *ptrs[N_EPS];
    char names[N_EPS][32];
    double now;
    uint8_t opts;
} G;

static double fake_clock(void *ctx) { return G.now += 0.001; }

static size_t pool_acquire(void *ctx, sched_endpoint *const **eps)
{
    *eps = G.ptrs;
    return N_EPS;
}

static void pool_release(void *ctx) {}

static bool objective_priority(void *ctx, const char *objective, int *priority)
{
    if (!(G.opts & 4) || !objective) {
        *priority = 0;
        return false;
    }
    *priority = (int)(strlen(objective) % 3) - 1;
    return true;
}

static bool saturated(void *ctx, sched_endpoint *const *candidates, size_t n) { return G.opts & 8; }

static int model_rewrite(void *ctx, const char *model, char **to)
{
    *to = NULL;
    if ((G.opts & 16) && !strcmp(model, "m") && !(*to = strdup("m-rewritten")))
        return KV_ENOMEM;
    return KV_OK;
}

static void quiet(void *ctx, const char *line) {}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_setup(0, quiet, NULL);
    grpc_init(); /* held for the process: each input's server then only counts a reference */
    kv_err err = {0};
    G.cfg = epc_load_string(CONFIG, strlen(CONFIG), "fuzz.yaml", registry_types, &err);
    sched_env env = {.seed = 1, .now = fake_clock};
    if (!G.cfg || !(G.s = sched_new(G.cfg, &env, &err)))
        abort();
    for (size_t i = 0; i < N_EPS; i++) {
        snprintf(G.names[i], sizeof G.names[i], "10.0.0.%zu:8000", i + 1);
        G.eps[i] = (sched_endpoint){.id = (uint32_t)i, .name = G.names[i], .pod = G.names[i], .ns = ""};
        G.eps[i].m = (sched_metrics){.valid = i != 3, .waiting = (int)i, .running = 1, .kv_usage = 0.25 * (double)i};
        G.ptrs[i] = &G.eps[i];
    }
    return 0;
}

static bool known_endpoint(const char *v, size_t len)
{
    for (size_t i = 0; i < N_EPS; i++)
        if (strlen(G.names[i]) == len && !memcmp(G.names[i], v, len))
            return true;
    return false;
}

static void check_common(const CommonResponse *cr)
{
    if (!cr)
        return;
    if (cr->header_mutation)
        for (size_t i = 0; i < cr->header_mutation->n_set_headers; i++) {
            const Envoy__Service__ExtProc__V3__HeaderValue *h = cr->header_mutation->set_headers[i]->header;
            if (h && h->key && !strcmp(h->key, "x-gateway-destination-endpoint") &&
                !known_endpoint((const char *)h->raw_value.data, h->raw_value.len))
                abort();
        }
    if (cr->body_mutation && cr->body_mutation->streamed_response &&
        cr->body_mutation->streamed_response->body.len > EXTPROC_CHUNK)
        abort();
}

static void on_reply(void *ctx, const uint8_t *msg, size_t len)
{
    PResp *r = envoy__service__ext_proc__v3__processing_response__unpack(NULL, len, msg);
    if (!r)
        abort();
    switch (r->response_case) {
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_IMMEDIATE_RESPONSE: {
        int code = r->immediate_response->status ? r->immediate_response->status->code : 0;
        if (code != 400 && code != 404 && code != 429 && code != 500 && code != 503)
            abort();
        break;
    }
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS:
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_HEADERS:
        check_common(r->request_headers ? r->request_headers->response : r->response_headers->response);
        break;
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_BODY:
    case ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_RESPONSE_BODY:
        check_common(r->request_body ? r->request_body->response : r->response_body->response);
        break;
    default:
        break;
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    G.opts = data[0];
    extproc_config cfg = {
        .sched = G.s,
        .pool = {.acquire = pool_acquire, .release = pool_release},
        .tokenize_timeout_ms = -1, /* text prompts are scored by prefix text: no network */
        .max_body = G.opts & 1 ? 4096 : 0,
        .trace_decisions = G.opts & 2,
        .objective_priority = objective_priority,
        .saturated = saturated,
        .model_rewrite = model_rewrite,
    };
    kv_err err = {0};
    extproc_server *srv = extproc_detached(&cfg, &err);
    extproc_stream *st = srv ? extproc_stream_open(srv) : NULL;
    if (!st) {
        extproc_stop(srv);
        return 0;
    }
    for (size_t off = 1; off < size;) {
        uint64_t len = 0;
        for (int shift = 0; off < size && shift < 64; shift += 7) {
            uint8_t b = data[off++];
            len |= (uint64_t)(b & 0x7f) << shift;
            if (!(b & 0x80))
                break;
        }
        if (len > size - off)
            len = size - off;
        int status = extproc_stream_feed(st, len ? data + off : NULL, (size_t)len, on_reply, NULL);
        off += len;
        if (status >= 0) {
            if (status != 0 && status != 3 && status != 8) /* OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED */
                abort();
            break;
        }
    }
    extproc_stream_close(st);
    extproc_stop(srv);
    return 0;
}
