/* emuhttp: one emulated pod's OpenAI-compatible HTTP server (see emuhttp.h). */
#include "emuhttp.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emumetrics.h"
#include "emureq.h"
#include "emutok.h"
#include "mix64.h"
#include "rng.h"

#define CONN_TIMEOUT_S 3600                 /* a long generation keeps its connection */

struct emuhttp {
    emuhttp_config cfg;
    emupod *pod;
    struct evhttp *http;
    rng rng;
    uint64_t next_id;
    bool metrics_off;
};

/* --- replies ----------------------------------------------------------------------------- */

static const char *reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    default: return "Internal Server Error";
    }
}

/* Sends j (stolen) as the reply body. */
static void reply_json(struct evhttp_request *req, int code, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    struct evbuffer *b = evbuffer_new();
    if (b && s) evbuffer_add(b, s, strlen(s));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, s ? code : 500, reason(s ? code : 500), b);
    if (b) evbuffer_free(b);
    free(s);
}

static const char *error_type(int code)
{
    return code == 400 ? "BadRequestError" : code == 404 ? "NotFoundError" : "InternalServerError";
}

static json_t *error_body(int code, const char *param, const char *msg)
{
    return json_pack("{s:{s:s, s:s, s:s?, s:i}}", "error", "message", msg, "type", error_type(code), "param", param,
                     "code", code);
}

static void reply_error(struct evhttp_request *req, int code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error(struct evhttp_request *req, int code, const char *param, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    reply_json(req, code, error_body(code, param, msg));
}

/* Reads the request's body as `kind` asks; on a refusal, replies with it. */
static int read_request(emuhttp *h, struct evhttp_request *req, emureq_kind kind, emureq *q)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    const char *p = (const char *)evbuffer_pullup(in, -1);
    emureq_limits lim = {.served_model = h->cfg.served_model, .vocab = emupod_vocab(h->pod),
                         .max_model_len = emupod_max_model_len(h->pod)};
    emureq_refusal r;
    int rc = emureq_read(p, n, kind, &lim, q, &r);
    if (rc)
        reply_error(req, r.code, r.param, "%s", r.msg);
    return rc;
}

/* --- completions ------------------------------------------------------------------------- */

/* One completion in flight: the HTTP side of an emupod request. */
typedef struct hreq {
    emuhttp *h;
    struct evhttp_request *req;
    struct evhttp_connection *con;
    emupod_req *pr;
    bool chat, stream, include_usage;
    char id[48];
    json_int_t created;
    uint32_t n_prompt, max_tokens, n_out;
    uint32_t *out;                     /* non-streamed: the tokens so far */
    char *head;                        /* streamed: chunk_head */
} hreq;

static json_t *usage(const hreq *r, bool with_details)
{
    json_t *u = json_pack("{s:i, s:i, s:i}", "prompt_tokens", (json_int_t)r->n_prompt, "total_tokens",
                          (json_int_t)r->n_prompt + r->n_out, "completion_tokens", (json_int_t)r->n_out);
    if (u && with_details) json_object_set_new(u, "prompt_tokens_details", json_null());
    return u;
}

/* A chunk's or response's envelope: id, object, created, model. */
static json_t *envelope(const hreq *r, const char *object)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "id", r->id, "object", object, "created", r->created, "model",
                     r->h->cfg.served_model);
}

static void send_event(hreq *r, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    struct evbuffer *b = evbuffer_new();
    if (b && s) {
        evbuffer_add_printf(b, "data: %s\n\n", s);
        evhttp_send_reply_chunk(r->req, b);
    }
    if (b) evbuffer_free(b);
    free(s);
}

static char *token_text(const hreq *r, const uint32_t *ids, size_t n)
{
    char *s = NULL;
    size_t len;
    return emutok_decode(ids, n, emupod_vocab(r->h->pod), &s, &len, NULL) == KV_OK ? s : NULL;
}

/* The fixed head of this request's token chunks: the envelope jansson writes, cut
 * before its closing brace, then the choice up to the text. Built once per request, so
 * a token costs one small JSON string encoding (the chunks are the emulator's hottest
 * path: one per running request per step). NULL when out of memory. */
static char *chunk_head(const hreq *r)
{
    json_t *e = envelope(r, r->chat ? "chat.completion.chunk" : "text_completion");
    char *env = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    size_t n = env ? strlen(env) : 0;
    if (n < 2 || env[n - 1] != '}') {
        free(env);
        return NULL;
    }
    const char *tail = r->chat ? ",\"choices\":[{\"index\":0,\"delta\":{\"content\":" : ",\"choices\":[{\"index\":0,\"text\":";
    char *h = malloc(n + strlen(tail));
    if (h) sprintf(h, "%.*s%s", (int)(n - 1), env, tail);
    free(env);
    return h;
}

static void stream_token(hreq *r, uint32_t id)
{
    bool last = r->n_out == r->max_tokens;
    if (r->chat && r->n_out == 1) {   /* the role chunk leaves with the first token, as vLLM's does */
        json_t *first = envelope(r, "chat.completion.chunk");
        json_object_set_new(first, "choices", json_pack("[{s:i, s:{s:s, s:s}, s:n, s:n}]", "index", 0, "delta", "role",
                                                        "assistant", "content", "", "logprobs", "finish_reason"));
        send_event(r, first);
    }
    char *text = token_text(r, &id, 1);
    json_t *js = json_string(text ? text : "");
    char *tj = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
    json_decref(js);
    free(text);
    static const char *tails[2][2] = {
        {",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}],\"usage\":null}",
         ",\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}],\"usage\":null}"},
        {"},\"logprobs\":null,\"finish_reason\":null}]}",
         "},\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}]}"},
    };
    struct evbuffer *b = evbuffer_new();
    if (b && tj && r->head) {
        evbuffer_add_printf(b, "data: %s%s%s\n\n", r->head, tj, tails[r->chat][last]);
        evhttp_send_reply_chunk(r->req, b);
    }
    if (b) evbuffer_free(b);
    free(tj);
}

static void on_token(void *ctx, uint32_t id)
{
    hreq *r = ctx;
    r->n_out++;
    if (r->stream) stream_token(r, id);
    else r->out[r->n_out - 1] = id;
}

static void hreq_free(hreq *r)
{
    free(r->head);
    free(r->out);
    free(r);
}

static void full_response(hreq *r)
{
    char *text = token_text(r, r->out, r->n_out);
    json_t *j = envelope(r, r->chat ? "chat.completion" : "text_completion");
    json_t *choice;
    if (r->chat)
        choice = json_pack("{s:i, s:{s:s, s:s, s:n, s:n, s:n, s:n, s:[], s:n}, s:n, s:s, s:n}", "index", 0, "message",
                           "role", "assistant", "content", text ? text : "", "refusal", "annotations", "audio",
                           "function_call", "tool_calls", "reasoning_content", "logprobs", "finish_reason", "length",
                           "stop_reason");
    else
        choice = json_pack("{s:i, s:s, s:n, s:s, s:n, s:n}", "index", 0, "text", text ? text : "", "logprobs",
                           "finish_reason", "length", "stop_reason", "prompt_logprobs");
    free(text);
    json_object_set_new(j, "choices", json_pack("[o]", choice));
    json_object_set_new(j, "usage", usage(r, true));
    if (r->chat) json_object_set_new(j, "prompt_logprobs", json_null());
    json_object_set_new(j, "kv_transfer_params", json_null());
    reply_json(r->req, 200, j);
}

static void on_done(void *ctx, int status)
{
    hreq *r = ctx;
    evhttp_connection_set_closecb(r->con, NULL, NULL);
    if (r->stream) {
        if (status != KV_OK) {
            send_event(r, error_body(500, NULL, "the pod restarted while generating"));
        } else if (r->include_usage) {
            json_t *u = envelope(r, r->chat ? "chat.completion.chunk" : "text_completion");
            json_object_set_new(u, "choices", json_array());
            json_object_set_new(u, "usage", usage(r, false));
            send_event(r, u);
        }
        struct evbuffer *b = evbuffer_new();
        if (b) {
            evbuffer_add_printf(b, "data: [DONE]\n\n");
            evhttp_send_reply_chunk(r->req, b);
            evbuffer_free(b);
        }
        evhttp_send_reply_end(r->req);
    } else if (status != KV_OK) {
        reply_error(r->req, 500, NULL, "the pod restarted while generating");
    } else {
        full_response(r);
    }
    hreq_free(r);
}

/* The client went away: its request stops talking to it (libevent frees the request). */
static void on_close(struct evhttp_connection *con, void *arg)
{
    hreq *r = arg;
    emupod_detach(r->pr);
    hreq_free(r);
}

static void handle_completion(emuhttp *h, struct evhttp_request *req, bool chat)
{
    if (h->cfg.fail_rate > 0 && rng_01(&h->rng) < h->cfg.fail_rate) {
        reply_error(req, 500, NULL, "emulated failure (--fail-rate %g)", h->cfg.fail_rate);
        return;
    }
    emureq q;
    if (read_request(h, req, chat ? EMUREQ_CHAT : EMUREQ_COMPLETION, &q)) return;
    uint32_t n = (uint32_t)q.n, mt = q.max_tokens;
    hreq *r = calloc(1, sizeof *r);
    bool stream = q.stream;
    if (!r || (!stream && !(r->out = malloc((size_t)mt * sizeof *r->out)))) {
        free(r);
        reply_error(req, 500, NULL, "out of memory");
        goto out;
    }
    *r = (hreq){.h = h, .req = req, .con = evhttp_request_get_connection(req), .chat = chat, .stream = stream,
                .include_usage = q.include_usage, .created = (json_int_t)time(NULL), .n_prompt = n, .max_tokens = mt,
                .out = r->out};
    snprintf(r->id, sizeof r->id, "%s%016llx%016llx", chat ? "chatcmpl-" : "cmpl-",
             (unsigned long long)mix64(h->cfg.seed ^ (uint64_t)h->cfg.port), (unsigned long long)h->next_id++);
    if (stream && !(r->head = chunk_head(r))) {
        hreq_free(r);
        reply_error(req, 500, NULL, "out of memory");
        goto out;
    }
    emupod_sink sink = {.token = on_token, .done = on_done, .ctx = r};
    int rc = emupod_submit(h->pod, q.ids, n, mt, &sink, &r->pr);
    if (rc != KV_OK) {
        hreq_free(r);
        if (rc == KV_ERANGE)
            reply_error(req, 400, NULL, "the request needs more KV-cache blocks than the pod has (%u prompt tokens "
                        "+ %u completion tokens)", n, mt);
        else
            reply_error(req, 500, NULL, "out of memory");
        goto out;
    }
    evhttp_connection_set_closecb(r->con, on_close, r);
    if (stream) {
        struct evkeyvalq *hd = evhttp_request_get_output_headers(req);
        evhttp_add_header(hd, "Content-Type", "text/event-stream; charset=utf-8");
        evhttp_add_header(hd, "Cache-Control", "no-cache");
        evhttp_send_reply_start(req, 200, "OK");
    }
out:
    emureq_free(&q);
}

/* --- the other endpoints ----------------------------------------------------------------- */

static json_t *ids_json(const uint32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

typedef enum render_kind { TOKENIZE = 0, RENDER_COMPLETIONS, RENDER_CHAT } render_kind;

/* POST /tokenize (text or messages) and the two render endpoints: the same token ids. */
static void handle_tokenize(emuhttp *h, struct evhttp_request *req, render_kind render)
{
    static const emureq_kind kinds[] = {[TOKENIZE] = EMUREQ_TOKENIZE, [RENDER_COMPLETIONS] = EMUREQ_RENDER_COMPLETION,
                                        [RENDER_CHAT] = EMUREQ_RENDER_CHAT};
    emureq q;
    if (read_request(h, req, kinds[render], &q)) return;
    if (render == TOKENIZE) {
        reply_json(req, 200,
                   json_pack("{s:i, s:i, s:o, s:n}", "count", (json_int_t)q.n, "max_model_len",
                             (json_int_t)emupod_max_model_len(h->pod), "tokens", ids_json(q.ids, q.n), "token_strs"));
    } else {
        /* vLLM's GenerateRequest: what the render endpoints return (completions: a list) */
        json_t *mt = json_object_get(q.body, "max_tokens");
        json_t *g = json_pack("{s:s, s:o, s:{s:O?}, s:s}", "request_id", q.chat ? "chatcmpl-render" : "cmpl-render",
                              "token_ids", ids_json(q.ids, q.n), "sampling_params", "max_tokens", mt, "model",
                              h->cfg.served_model);
        reply_json(req, 200, q.chat ? g : json_pack("[o]", g));
    }
    emureq_free(&q);
}

static void handle_detokenize(emuhttp *h, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    emureq_limits lim = {.served_model = h->cfg.served_model};
    emureq_refusal r;
    json_t *body;
    if (emureq_object((const char *)evbuffer_pullup(in, -1), evbuffer_get_length(in), &lim, &body, &r)) {
        reply_error(req, r.code, r.param, "%s", r.msg);
        return;
    }
    json_t *t = json_object_get(body, "tokens");
    size_t n = json_array_size(t);
    uint32_t *ids = n ? malloc(n * sizeof *ids) : NULL;
    bool ok = true;
    if (!json_is_array(t)) {
        reply_error(req, 400, "tokens", "'tokens' must be a list of token ids");
        ok = false;
    }
    for (size_t i = 0; ok && i < n; i++) {
        json_t *e = json_array_get(t, i);
        ids[i] = json_is_integer(e) && json_integer_value(e) >= 0 && json_integer_value(e) <= UINT32_MAX
                     ? (uint32_t)json_integer_value(e) : UINT32_MAX;
    }
    char *text = NULL;
    size_t len;
    kv_err err = {0};
    if (ok && emutok_decode(ids, n, emupod_vocab(h->pod), &text, &len, &err) != KV_OK)
        reply_error(req, 400, "tokens", "%s", err.msg);
    else if (ok)
        reply_json(req, 200, json_pack("{s:s%}", "prompt", text, len));
    free(text);
    free(ids);
    json_decref(body);
}

static void handle_models(emuhttp *h, struct evhttp_request *req)
{
    json_int_t now = (json_int_t)time(NULL);
    char perm[64];
    snprintf(perm, sizeof perm, "modelperm-%016llx", (unsigned long long)mix64(h->cfg.seed));
    json_t *p = json_pack("{s:s, s:s, s:I, s:b, s:b, s:b, s:b, s:b, s:b, s:s, s:n, s:b}", "id", perm, "object",
                          "model_permission", "created", now, "allow_create_engine", 0, "allow_sampling", 1,
                          "allow_logprobs", 1, "allow_search_indices", 0, "allow_view", 1, "allow_fine_tuning", 0,
                          "organization", "*", "group", "is_blocking", 0);
    json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:s, s:n, s:i, s:[o]}", "id", h->cfg.served_model, "object", "model",
                          "created", now, "owned_by", "vllm", "root", h->cfg.root_model, "parent", "max_model_len",
                          (json_int_t)emupod_max_model_len(h->pod), "permission", p);
    reply_json(req, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", m));
}

static void handle_metrics(emuhttp *h, struct evhttp_request *req)
{
    if (h->metrics_off) return;   /* held unanswered: libevent frees it when the client leaves */
    emumet_view v;
    const emumet_pod *m;
    emupod_view(h->pod, &v, &m);
    size_t len = 0;
    char *s = emumet_render(m, &v, &len);
    struct evbuffer *b = evbuffer_new();
    if (!s || !b) {
        reply_error(req, 500, NULL, "out of memory");
    } else {
        evbuffer_add(b, s, len);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; version=0.0.4; charset=utf-8");
        evhttp_send_reply(req, 200, "OK", b);
    }
    if (b) evbuffer_free(b);
    free(s);
}

static void handle_admin(emuhttp *h, struct evhttp_request *req, const char *what)
{
    kv_err err = {0};
    if (!strcmp(what, "restart")) {
        if (emupod_restart(h->pod, &err) != KV_OK) reply_error(req, 500, NULL, "%s", err.msg);
        else reply_json(req, 200, json_pack("{s:s}", "status", "restarted"));
    } else if (!strcmp(what, "metrics/off") || !strcmp(what, "metrics/on")) {
        h->metrics_off = !strcmp(what, "metrics/off");
        reply_json(req, 200, json_pack("{s:b}", "metrics", !h->metrics_off));
    } else {
        reply_json(req, 404, json_pack("{s:s}", "detail", "Not Found"));
    }
}

/* --- dispatch ---------------------------------------------------------------------------- */

static void on_request(struct evhttp_request *req, void *arg)
{
    emuhttp *h = arg;
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    bool post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
    bool get = evhttp_request_get_command(req) == EVHTTP_REQ_GET;
    if (!path) path = "";
    enum { COMPLETIONS, CHAT, TOKENIZE_EP, RENDER_C, RENDER_CH, DETOKENIZE, MODELS, HEALTH, METRICS };
    static const struct { const char *path; bool post; int kind; } routes[] = {
        {"/v1/completions", true, COMPLETIONS}, {"/v1/chat/completions", true, CHAT},
        {"/tokenize", true, TOKENIZE_EP}, {"/v1/completions/render", true, RENDER_C},
        {"/v1/chat/completions/render", true, RENDER_CH}, {"/detokenize", true, DETOKENIZE},
        {"/v1/models", false, MODELS}, {"/health", false, HEALTH}, {"/metrics", false, METRICS},
    };
    if (!strncmp(path, "/admin/", 7)) {
        if (post) handle_admin(h, req, path + 7);
        else reply_json(req, 405, json_pack("{s:s}", "detail", "Method Not Allowed"));
        return;
    }
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        if (strcmp(path, routes[i].path)) continue;
        if (routes[i].post ? !post : !get) {
            reply_json(req, 405, json_pack("{s:s}", "detail", "Method Not Allowed"));
            return;
        }
        switch (routes[i].kind) {
        case COMPLETIONS: handle_completion(h, req, false); return;
        case CHAT: handle_completion(h, req, true); return;
        case TOKENIZE_EP: handle_tokenize(h, req, TOKENIZE); return;
        case RENDER_C: handle_tokenize(h, req, RENDER_COMPLETIONS); return;
        case RENDER_CH: handle_tokenize(h, req, RENDER_CHAT); return;
        case DETOKENIZE: handle_detokenize(h, req); return;
        case MODELS: handle_models(h, req); return;
        case HEALTH: evhttp_send_reply(req, 200, "OK", NULL); return;
        default: handle_metrics(h, req); return;
        }
    }
    reply_json(req, 404, json_pack("{s:s}", "detail", "Not Found"));
}

emuhttp *emuhttp_new(struct event_base *base, emupod *pod, const emuhttp_config *cfg, kv_err *err)
{
    emuhttp *h = calloc(1, sizeof *h);
    if (!h || !(h->http = evhttp_new(base))) {
        free(h);
        kv_err_set(err, KV_ENOMEM, "http %s:%d: out of memory", cfg->host, cfg->port);
        return NULL;
    }
    h->cfg = *cfg;
    h->pod = pod;
    rng_seed(&h->rng, cfg->seed, (uint64_t)cfg->port);
    evhttp_set_timeout(h->http, CONN_TIMEOUT_S);
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(h->http, on_request, h);
    if (evhttp_bind_socket(h->http, cfg->host, (uint16_t)cfg->port) != 0) {
        kv_err_set(err, KV_EIO, "http: cannot listen on %s:%d (port in use, or not an address of this host)",
                   cfg->host, cfg->port);
        emuhttp_free(h);
        return NULL;
    }
    return h;
}

void emuhttp_free(emuhttp *h)
{
    if (!h) return;
    if (h->http) evhttp_free(h->http);
    free(h);
}
