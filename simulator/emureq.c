/* emureq: request bodies as an emulated vLLM pod reads them (emureq.h). The messages are
 * vLLM's where the emulator answers as vLLM does (model not found, context length). */
#include "emureq.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emutok.h"
#include "kverr.h"

#define DEFAULT_MAX_TOKENS_COMPLETIONS 16   /* vLLM's CompletionRequest default */

static int refuse(emureq_refusal *r, int code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(emureq_refusal *r, int code, const char *param, const char *fmt, ...)
{
    r->code = code, r->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    return code;
}

int emureq_object(const char *body, size_t len, const emureq_limits *lim, json_t **out, emureq_refusal *r)
{
    json_error_t je;
    json_t *j = json_loadb(body ? body : "", len, 0, &je);
    *out = NULL;
    if (!j)
        return refuse(r, 400, NULL, "JSON decode error at line %d, column %d: %s", je.line, je.column, je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return refuse(r, 400, NULL, "the request body must be a JSON object");
    }
    json_t *m = json_object_get(j, "model");
    if (m && !json_is_null(m) && !(json_is_string(m) && !strcmp(json_string_value(m), lim->served_model))) {
        refuse(r, 404, "model", "The model `%s` does not exist.", json_is_string(m) ? json_string_value(m) : "?");
        json_decref(j);
        return 404;
    }
    *out = j;
    return 0;
}

/* A chat message's content (a string, or a list of {"type": "text", "text"} parts joined
 * by newlines, as vLLM joins them) as a malloc'd string; NULL when it is neither. */
static char *flat_content(const json_t *c)
{
    if (json_is_string(c)) return strdup(json_string_value(c));
    if (json_is_null(c)) return strdup("");
    if (!json_is_array(c)) return NULL;
    size_t len = 1, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        const char *t = json_string_value(json_object_get(part, "text"));
        if (!t || strcmp(json_string_value(json_object_get(part, "type")) ?: "", "text")) return NULL;
        len += json_string_length(json_object_get(part, "text")) + 1;
    }
    char *s = malloc(len), *w = s;
    if (!s) return NULL;
    json_array_foreach(c, i, part) {   /* one pass of copies: strcat would rescan the text per part */
        const json_t *t = json_object_get(part, "text");
        if (i) *w++ = '\n';
        memcpy(w, json_string_value(t), json_string_length(t));
        w += json_string_length(t);
    }
    *w = 0;
    return s;
}

static int chat_tokens(const emureq_limits *lim, emureq *q, emureq_refusal *r)
{
    json_t *msgs = json_object_get(q->body, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return refuse(r, 400, "messages", "'messages' must be a non-empty list of messages");
    size_t k = json_array_size(msgs);
    emutok_msg *m = calloc(k, sizeof *m);
    char **contents = calloc(k, sizeof *contents);
    int rc = m && contents ? 0 : refuse(r, 500, NULL, "out of memory");
    for (size_t i = 0; !rc && i < k; i++) {
        json_t *e = json_array_get(msgs, i);
        m[i].role = json_string_value(json_object_get(e, "role"));
        m[i].content = contents[i] = flat_content(json_object_get(e, "content"));
        if (!m[i].role || !contents[i])
            rc = refuse(r, 400, "messages", "messages[%zu]: needs a string 'role' and a text 'content'", i);
    }
    char *text = rc ? NULL : emutok_chat_text(m, k, !json_is_false(json_object_get(q->body, "add_generation_prompt")));
    if (!rc && (!text || emutok_encode(text, strlen(text), lim->vocab, &q->ids, &q->n) != KV_OK))
        rc = refuse(r, 500, NULL, "out of memory");
    free(text);
    for (size_t i = 0; contents && i < k; i++) free(contents[i]);
    free(contents);
    free(m);
    return rc;
}

static int text_tokens(const emureq_limits *lim, emureq *q, emureq_refusal *r)
{
    json_t *p = json_object_get(q->body, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 && !json_is_integer(json_array_get(p, 0)))
        p = json_array_get(p, 0);   /* a batch of one prompt */
    if (json_is_string(p))
        return emutok_encode(json_string_value(p), json_string_length(p), lim->vocab, &q->ids, &q->n) == KV_OK
                   ? 0 : refuse(r, 500, NULL, "out of memory");
    if (!json_is_array(p))
        return refuse(r, 400, "prompt", "'prompt' must be a string, a list of token ids, or a list of one of these");
    size_t k = json_array_size(p);
    if (k && !(q->ids = malloc(k * sizeof *q->ids)))
        return refuse(r, 500, NULL, "out of memory");
    for (size_t i = 0; i < k; i++) {
        json_t *t = json_array_get(p, i);
        json_int_t v = json_is_integer(t) ? json_integer_value(t) : -1;
        if (v < 0 || v >= lim->vocab)
            return refuse(r, 400, "prompt", "prompt[%zu]: token id out of vocabulary (0..%u)", i, lim->vocab - 1);
        q->ids[i] = (uint32_t)v;
    }
    q->n = k;
    return 0;
}

/* max_tokens (or chat's max_completion_tokens) against the context length. */
static int max_tokens(const emureq_limits *lim, emureq *q, emureq_refusal *r)
{
    json_t *m = json_object_get(q->body, "max_tokens");
    if ((!m || json_is_null(m)) && q->chat) m = json_object_get(q->body, "max_completion_tokens");
    uint32_t limit = lim->max_model_len;
    if (!m || json_is_null(m))
        q->max_tokens = q->chat ? (q->n < limit ? limit - (uint32_t)q->n : 0) : DEFAULT_MAX_TOKENS_COMPLETIONS;
    else if (!json_is_integer(m) || json_integer_value(m) < 1 || json_integer_value(m) > UINT32_MAX)
        return refuse(r, 400, "max_tokens", "max_tokens must be at least 1, got %s",
                      json_is_integer(m) ? "a smaller number" : "a non-integer");
    else
        q->max_tokens = (uint32_t)json_integer_value(m);
    if ((uint64_t)q->n + q->max_tokens > limit || q->max_tokens == 0)
        return refuse(r, 400, NULL,
                      "This model's maximum context length is %u tokens. However, you requested %llu tokens (%zu "
                      "in the messages, %u in the completion). Please reduce the length of the messages or "
                      "completion.", limit, (unsigned long long)q->n + q->max_tokens, q->n, q->max_tokens);
    return 0;
}

int emureq_read(const char *body, size_t len, emureq_kind kind, const emureq_limits *lim, emureq *out,
                emureq_refusal *r)
{
    *out = (emureq){0};
    int rc = emureq_object(body, len, lim, &out->body, r);
    if (rc)
        return rc;
    bool generate = kind == EMUREQ_COMPLETION || kind == EMUREQ_CHAT;
    out->chat = kind == EMUREQ_CHAT || kind == EMUREQ_RENDER_CHAT ||
                (kind == EMUREQ_TOKENIZE && json_object_get(out->body, "messages"));
    json_t *nn = json_object_get(out->body, "n");
    if (generate && nn && !json_is_null(nn) && (!json_is_integer(nn) || json_integer_value(nn) != 1))
        rc = refuse(r, 400, "n", "only n=1 is supported by the emulated pod");
    if (!rc)
        rc = out->chat ? chat_tokens(lim, out, r) : text_tokens(lim, out, r);
    if (!rc && generate && out->n == 0)
        rc = refuse(r, 400, "prompt", "The prompt cannot be empty.");
    if (!rc && generate)
        rc = max_tokens(lim, out, r);
    if (rc) {
        emureq_free(out);
        return rc;
    }
    out->stream = json_is_true(json_object_get(out->body, "stream"));
    out->include_usage = json_is_true(json_object_get(json_object_get(out->body, "stream_options"), "include_usage"));
    return 0;
}

void emureq_free(emureq *q)
{
    json_decref(q->body);
    free(q->ids);
    *q = (emureq){0};
}
