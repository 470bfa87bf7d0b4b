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
#include "emutok.h"
#include "mix64.h"
#include "rng.h"

#define DEFAULT_MAX_TOKENS_COMPLETIONS 16   /* vLLM's CompletionRequest default */
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

/* --- request bodies ---------------------------------------------------------------------- */

static json_t *read_body(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    const char *p = (const char *)evbuffer_pullup(in, -1);
    json_error_t je;
    json_t *j = json_loadb(p ? p : "", n, 0, &je);
    if (!j) {
        reply_error(req, 400, NULL, "JSON decode error at line %d, column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        reply_error(req, 400, NULL, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* 404 for a model this pod does not serve (an absent model means the served one). */
static bool model_ok(emuhttp *h, struct evhttp_request *req, json_t *body)
{
    json_t *m = json_object_get(body, "model");
    if (!m || json_is_null(m) || (json_is_string(m) && !strcmp(json_string_value(m), h->cfg.served_model)))
        return true;
    reply_error(req, 404, "model", "The model `%s` does not exist.", json_is_string(m) ? json_string_value(m) : "?");
    return false;
}

/* Flattens a chat message's content (a string, or a list of {"type": "text", "text"}
 * parts joined by newlines, as vLLM joins them) into a malloc'd string. */
static char *flat_content(json_t *c)
{
    if (json_is_string(c)) return strdup(json_string_value(c));
    if (json_is_null(c)) return strdup("");
    if (!json_is_array(c)) return NULL;
    size_t len = 1, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        const char *t = json_string_value(json_object_get(part, "text"));
        if (!t || strcmp(json_string_value(json_object_get(part, "type")) ?: "", "text")) return NULL;
        len += strlen(t) + 1;
    }
    char *s = malloc(len);
    if (!s) return NULL;
    s[0] = 0;
    json_array_foreach(c, i, part) {
        if (i) strcat(s, "\n");
        strcat(s, json_string_value(json_object_get(part, "text")));
    }
    return s;
}

/* Prompt token ids of a completions "prompt" or a chat "messages" body. Replies 400 and
 * returns false on bad input. */
static bool prompt_tokens(emuhttp *h, struct evhttp_request *req, json_t *body, bool chat, uint32_t **ids, size_t *n)
{
    uint32_t vocab = emupod_vocab(h->pod);
    *ids = NULL;
    *n = 0;
    if (chat) {
        json_t *msgs = json_object_get(body, "messages");
        if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
            reply_error(req, 400, "messages", "'messages' must be a non-empty list of messages");
            return false;
        }
        size_t k = json_array_size(msgs);
        emutok_msg *m = calloc(k, sizeof *m);
        char **contents = calloc(k, sizeof *contents);
        bool ok = m && contents;
        for (size_t i = 0; ok && i < k; i++) {
            json_t *e = json_array_get(msgs, i);
            m[i].role = json_string_value(json_object_get(e, "role"));
            contents[i] = flat_content(json_object_get(e, "content"));
            m[i].content = contents[i];
            if (!m[i].role || !contents[i]) {
                reply_error(req, 400, "messages", "messages[%zu]: needs a string 'role' and a text 'content'", i);
                ok = false;
            }
        }
        json_t *agp = json_object_get(body, "add_generation_prompt");
        char *text = ok ? emutok_chat_text(m, k, !json_is_false(agp)) : NULL;
        if (ok && (!text || emutok_encode(text, strlen(text), vocab, ids, n) != KV_OK)) {
            reply_error(req, 500, NULL, "out of memory");
            ok = false;
        }
        free(text);
        for (size_t i = 0; contents && i < k; i++) free(contents[i]);
        free(contents);
        free(m);
        return ok;
    }
    json_t *p = json_object_get(body, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 && !json_is_integer(json_array_get(p, 0)))
        p = json_array_get(p, 0);   /* a batch of one prompt */
    if (json_is_string(p)) {
        if (emutok_encode(json_string_value(p), json_string_length(p), vocab, ids, n) != KV_OK) {
            reply_error(req, 500, NULL, "out of memory");
            return false;
        }
        return true;
    }
    if (!json_is_array(p)) {
        reply_error(req, 400, "prompt", "'prompt' must be a string, a list of token ids, or a list of one of these");
        return false;
    }
    size_t k = json_array_size(p);
    if (k && !(*ids = malloc(k * sizeof **ids))) {
        reply_error(req, 500, NULL, "out of memory");
        return false;
    }
    for (size_t i = 0; i < k; i++) {
        json_t *t = json_array_get(p, i);
        json_int_t v = json_is_integer(t) ? json_integer_value(t) : -1;
        if (v < 0 || v >= vocab) {
            free(*ids);
            *ids = NULL;
            reply_error(req, 400, "prompt", "prompt[%zu]: token id out of vocabulary (0..%u)", i, vocab - 1);
            return false;
        }
        (*ids)[i] = (uint32_t)v;
    }
    *n = k;
    return true;
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

/* max_tokens (or chat's max_completion_tokens); replies 400 and returns false when bad. */
static bool max_tokens(emuhttp *h, struct evhttp_request *req, json_t *body, bool chat, size_t n_prompt,
                       uint32_t *out)
{
    json_t *m = json_object_get(body, "max_tokens");
    if ((!m || json_is_null(m)) && chat) m = json_object_get(body, "max_completion_tokens");
    uint32_t limit = emupod_max_model_len(h->pod);
    if (!m || json_is_null(m)) {
        *out = chat ? (n_prompt < limit ? limit - (uint32_t)n_prompt : 0) : DEFAULT_MAX_TOKENS_COMPLETIONS;
    } else if (!json_is_integer(m) || json_integer_value(m) < 1 || json_integer_value(m) > UINT32_MAX) {
        reply_error(req, 400, "max_tokens", "max_tokens must be at least 1, got %s",
                    json_is_integer(m) ? "a smaller number" : "a non-integer");
        return false;
    } else {
        *out = (uint32_t)json_integer_value(m);
    }
    if ((uint64_t)n_prompt + *out > limit || *out == 0) {
        reply_error(req, 400, NULL,
                    "This model's maximum context length is %u tokens. However, you requested %llu tokens (%zu in "
                    "the messages, %u in the completion). Please reduce the length of the messages or completion.",
                    limit, (unsigned long long)n_prompt + *out, n_prompt, *out);
        return false;
    }
    return true;
}

static void handle_completion(emuhttp *h, struct evhttp_request *req, bool chat)
{
    if (h->cfg.fail_rate > 0 && rng_01(&h->rng) < h->cfg.fail_rate) {
        reply_error(req, 500, NULL, "emulated failure (--fail-rate %g)", h->cfg.fail_rate);
        return;
    }
    json_t *body = read_body(req);
    if (!body) return;
    uint32_t *ids = NULL;
    size_t n = 0;
    uint32_t mt = 0;
    json_t *nn = json_object_get(body, "n");
    if (!model_ok(h, req, body)) goto out;
    if (nn && !json_is_null(nn) && (!json_is_integer(nn) || json_integer_value(nn) != 1)) {
        reply_error(req, 400, "n", "only n=1 is supported by the emulated pod");
        goto out;
    }
    if (!prompt_tokens(h, req, body, chat, &ids, &n)) goto out;
    if (n == 0) {
        reply_error(req, 400, "prompt", "The prompt cannot be empty.");
        goto out;
    }
    if (!max_tokens(h, req, body, chat, n, &mt)) goto out;
    hreq *r = calloc(1, sizeof *r);
    bool stream = json_is_true(json_object_get(body, "stream"));
    if (!r || (!stream && !(r->out = malloc((size_t)mt * sizeof *r->out)))) {
        free(r);
        reply_error(req, 500, NULL, "out of memory");
        goto out;
    }
    *r = (hreq){.h = h, .req = req, .con = evhttp_request_get_connection(req), .chat = chat, .stream = stream,
                .include_usage = json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage")),
                .created = (json_int_t)time(NULL), .n_prompt = (uint32_t)n, .max_tokens = mt, .out = r->out};
    snprintf(r->id, sizeof r->id, "%s%016llx%016llx", chat ? "chatcmpl-" : "cmpl-",
             (unsigned long long)mix64(h->cfg.seed ^ (uint64_t)h->cfg.port), (unsigned long long)h->next_id++);
    if (stream && !(r->head = chunk_head(r))) {
        hreq_free(r);
        reply_error(req, 500, NULL, "out of memory");
        goto out;
    }
    emupod_sink sink = {.token = on_token, .done = on_done, .ctx = r};
    int rc = emupod_submit(h->pod, ids, (uint32_t)n, mt, &sink, &r->pr);
    if (rc != KV_OK) {
        hreq_free(r);
        if (rc == KV_ERANGE)
            reply_error(req, 400, NULL, "the request needs more KV-cache blocks than the pod has (%zu prompt tokens "
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
    free(ids);
    json_decref(body);
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
    json_t *body = read_body(req);
    if (!body) return;
    uint32_t *ids = NULL;
    size_t n = 0;
    bool chat = render == TOKENIZE ? json_object_get(body, "messages") != NULL : render == RENDER_CHAT;
    if (model_ok(h, req, body) && prompt_tokens(h, req, body, chat, &ids, &n)) {
        if (render == TOKENIZE) {
            reply_json(req, 200,
                       json_pack("{s:i, s:i, s:o, s:n}", "count", (json_int_t)n, "max_model_len",
                                 (json_int_t)emupod_max_model_len(h->pod), "tokens", ids_json(ids, n), "token_strs"));
        } else {
            /* vLLM's GenerateRequest: what the render endpoints return (completions: a list) */
            json_t *mt = json_object_get(body, "max_tokens");
            json_t *g = json_pack("{s:s, s:o, s:{s:O?}, s:s}", "request_id", chat ? "chatcmpl-render" : "cmpl-render",
                                  "token_ids", ids_json(ids, n), "sampling_params", "max_tokens", mt, "model",
                                  h->cfg.served_model);
            reply_json(req, 200, chat ? g : json_pack("[o]", g));
        }
    }
    free(ids);
    json_decref(body);
}

static void handle_detokenize(emuhttp *h, struct evhttp_request *req)
{
    json_t *body = read_body(req);
    if (!body) return;
    json_t *t = json_object_get(body, "tokens");
    size_t n = json_array_size(t);
    uint32_t *ids = n ? malloc(n * sizeof *ids) : NULL;
    bool ok = model_ok(h, req, body);
    if (ok && !json_is_array(t)) {
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
