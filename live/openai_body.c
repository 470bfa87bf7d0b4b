/* openai_body: OpenAI request/response body reading for the EPP (see openai_body.h).
 * jansson does the JSON; this file only knows which fields matter for routing and
 * accounting, and says precisely which one is wrong when a body is rejected. */
#include "openai_body.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define SSE_MAX_LINE (16u << 20)

static int read_tokens(const json_t *arr, const char *what, oai_request *out, kv_err *err)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return kv_err_set(err, KV_EINVAL, "request body: field '%s': empty token list", what);
    uint32_t *t = malloc(n * sizeof *t);
    if (!t)
        return kv_err_set(err, KV_ENOMEM, "request body: %zu token ids", n);
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, i);
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (x < 0 || x > (json_int_t)UINT32_MAX) {
            free(t);
            return kv_err_set(err, KV_EINVAL,
                              "request body: field '%s[%zu]': expected a token id (integer 0..4294967295)", what, i);
        }
        t[i] = (uint32_t)x;
    }
    out->tokens = t;
    out->n_tokens = n;
    return KV_OK;
}

static int read_prompt(const json_t *p, oai_request *out, kv_err *err)
{
    if (json_is_string(p)) {
        out->prompt = json_string_value(p);
        out->prompt_len = json_string_length(p);
        return KV_OK;
    }
    if (!json_is_array(p))
        return kv_err_set(err, KV_EINVAL, "request body: field 'prompt': expected a string or a list");
    const json_t *first = json_array_get(p, 0);
    if (!first)
        return kv_err_set(err, KV_EINVAL, "request body: field 'prompt': empty list");
    if (json_is_integer(first))
        return read_tokens(p, "prompt", out, err);
    if (json_is_string(first)) { /* a batch of texts: route on the first */
        out->prompt = json_string_value(first);
        out->prompt_len = json_string_length(first);
        return KV_OK;
    }
    if (json_is_array(first)) /* a batch of token-id lists: route on the first */
        return read_tokens(first, "prompt[0]", out, err);
    return kv_err_set(err, KV_EINVAL,
                      "request body: field 'prompt[0]': expected a string, a token id or a list of token ids");
}

int oai_request_parse(const char *body, size_t len, oai_request *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root)
        return kv_err_set(err, KV_EPARSE, "request body: invalid JSON at line %d column %d (byte %d): %s", je.line,
                          je.column, je.position, je.text);
    out->root = root;
    int rc;
    if (!json_is_object(root)) {
        rc = kv_err_set(err, KV_EINVAL, "request body: expected a JSON object");
        goto fail;
    }
    const json_t *model = json_object_get(root, "model");
    if (!model || json_is_null(model)) {
        rc = kv_err_set(err, KV_EINVAL, "request body: field 'model' is required");
        goto fail;
    }
    if (!json_is_string(model) || json_string_length(model) == 0) {
        rc = kv_err_set(err, KV_EINVAL, "request body: field 'model': expected a non-empty string");
        goto fail;
    }
    out->model = json_string_value(model);

    const json_t *prompt = json_object_get(root, "prompt");
    const json_t *messages = json_object_get(root, "messages");
    if (prompt && !json_is_null(prompt)) {
        if ((rc = read_prompt(prompt, out, err)) != KV_OK)
            goto fail;
    } else if (messages && !json_is_null(messages)) {
        if (!json_is_array(messages)) {
            rc = kv_err_set(err, KV_EINVAL, "request body: field 'messages': expected a list");
            goto fail;
        }
        out->chat = true;
        out->messages = messages;
        out->messages_json = json_dumps(messages, JSON_COMPACT);
        if (!out->messages_json) {
            rc = kv_err_set(err, KV_ENOMEM, "request body: field 'messages': cannot serialise");
            goto fail;
        }
        out->messages_len = strlen(out->messages_json);
    } else {
        rc = kv_err_set(err, KV_EINVAL, "request body: neither 'prompt' nor 'messages' is present");
        goto fail;
    }

    const json_t *mt = json_object_get(root, "max_tokens");
    if (!json_is_integer(mt))
        mt = json_object_get(root, "max_completion_tokens");
    if (json_is_integer(mt) && json_integer_value(mt) > 0)
        out->max_tokens = json_integer_value(mt) > (json_int_t)UINT32_MAX ? UINT32_MAX : (uint32_t)json_integer_value(mt);
    out->stream = json_is_true(json_object_get(root, "stream"));
    const json_t *salt = json_object_get(root, "cache_salt");
    if (json_is_string(salt))
        out->cache_salt = json_string_value(salt);
    return KV_OK;
fail:
    oai_request_free(out);
    return rc;
}

void oai_request_free(oai_request *r)
{
    if (!r)
        return;
    json_decref(r->root);
    free(r->tokens);
    free(r->messages_json);
    memset(r, 0, sizeof *r);
}

static uint64_t uint_field(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* Reads root.usage into u when it is an object; returns whether it was. */
static bool read_usage(const json_t *root, oai_usage *u)
{
    const json_t *usage = json_object_get(root, "usage");
    if (!json_is_object(usage))
        return false;
    u->found = true;
    u->prompt_tokens = uint_field(usage, "prompt_tokens");
    u->completion_tokens = uint_field(usage, "completion_tokens");
    u->total_tokens = uint_field(usage, "total_tokens");
    u->cached_tokens = uint_field(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
    return true;
}

int oai_usage_parse(const char *body, size_t len, oai_usage *u, kv_err *err)
{
    memset(u, 0, sizeof *u);
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root)
        return kv_err_set(err, KV_EPARSE, "response body: invalid JSON at line %d column %d (byte %d): %s", je.line,
                          je.column, je.position, je.text);
    read_usage(root, u);
    json_decref(root);
    return KV_OK;
}

static void sse_line(oai_sse *s, const char *line, size_t len)
{
    if (len && line[len - 1] == '\r')
        len--;
    if (len < 5 || memcmp(line, "data:", 5) != 0)
        return; /* comments, event:, id:, retry: and blank separators */
    line += 5, len -= 5;
    while (len && *line == ' ')
        line++, len--;
    if (len == 6 && memcmp(line, "[DONE]", 6) == 0) {
        s->done = true;
        return;
    }
    json_t *root = json_loadb(line, len, 0, NULL);
    if (!root) {
        s->bad_events++;
        return;
    }
    s->events++;
    oai_usage u = {0};
    if (read_usage(root, &u))
        s->usage = u;
    json_decref(root);
}

int oai_sse_feed(oai_sse *s, const char *chunk, size_t len)
{
    while (len) {
        const char *nl = memchr(chunk, '\n', len);
        size_t seg = nl ? (size_t)(nl - chunk) : len;
        if (s->skipping) {
            if (nl)
                s->skipping = false;
        } else if (s->len + seg > SSE_MAX_LINE) {
            s->bad_events++;
            s->len = 0;
            s->skipping = !nl;
        } else if (nl && s->len == 0) {
            sse_line(s, chunk, seg); /* whole line inside this chunk: no copy */
        } else {
            if (s->len + seg > s->cap) {
                size_t cap = s->cap ? s->cap : 256;
                while (cap < s->len + seg)
                    cap *= 2;
                char *p = realloc(s->line, cap);
                if (!p)
                    return KV_ENOMEM;
                s->line = p, s->cap = cap;
            }
            memcpy(s->line + s->len, chunk, seg);
            s->len += seg;
            if (nl) {
                sse_line(s, s->line, s->len);
                s->len = 0;
            }
        }
        if (!nl)
            break;
        chunk += seg + 1, len -= seg + 1;
    }
    return KV_OK;
}

void oai_sse_free(oai_sse *s)
{
    free(s->line);
    memset(s, 0, sizeof *s);
}
