/* openai_body: OpenAI response bodies for the EPP (see openai_body.h): `usage` from an
 * unstreamed body or from server-sent events, read once per request and small, through
 * jansson. Request bodies, large and on the routing path, are read in
 * openai_request.cc. */
#include "openai_body.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SSE_MAX_LINE (16u << 20)

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
