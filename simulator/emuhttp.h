/* emuhttp: the HTTP face of one emulated vLLM pod (./sim serve), in vLLM's OpenAI
 * server's shapes: POST /v1/completions and /v1/chat/completions (SSE when streamed:
 * one `data:` chunk per generated token, the first when prefill ends, then `data:
 * [DONE]`; stream_options.include_usage adds the usage chunk), GET /v1/models,
 * GET /health, POST /tokenize and /detokenize, the render endpoints
 * (POST /v1/completions/render, /v1/chat/completions/render), GET /metrics, and error
 * bodies {"error": {"message", "type", "param", "code"}}. Every request generates exactly
 * max_tokens tokens (ignore_eos semantics: finish_reason "length"); text comes from
 * the built-in tokenizer (emutok.h). JSON is read and written with jansson.
 *
 * Fault injection: --fail-rate answers that fraction of completion requests 500;
 * POST /admin/restart restarts the pod (emupod_restart); POST /admin/metrics/off makes
 * /metrics stop answering (requests are held unanswered) until POST /admin/metrics/on.
 *
 * Threads: libevent's evhttp on the serve event loop, the same loop as the pods'
 * engines; a request's tokens come back through the pod's sink on that loop. A client
 * that disconnects aborts its request (emupod_detach). */
#ifndef KVROUTE_SIM_EMUHTTP_H
#define KVROUTE_SIM_EMUHTTP_H

#include <stdint.h>

#include "emupod.h"
#include "kverr.h"

struct event_base;

typedef struct emuhttp_config {
    const char *host;
    int port;
    const char *served_model;
    const char *root_model;            /* the model's Hugging Face name (/v1/models root) */
    double fail_rate;                  /* fraction of completion requests answered 500 */
    uint64_t seed;                     /* for the fail draws and response ids */
} emuhttp_config;

typedef struct emuhttp emuhttp;

/* Binds host:port; the pod must outlive the server. */
emuhttp *emuhttp_new(struct event_base *base, emupod *pod, const emuhttp_config *cfg, kv_err *err);
void emuhttp_free(emuhttp *h);

#endif
