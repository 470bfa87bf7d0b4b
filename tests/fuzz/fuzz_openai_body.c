/* fuzz_openai_body: OpenAI request and response bodies as the ext-proc path reads them
 * (live/openai_request.cc, live/openai_body.c).
 *
 * Every input is read by each entry point, so a stored body is an input as it is:
 *  - oai_request_parse twice, in place (readable past the end, as extproc's padded
 *    buffer) and from a copy (readable = len): both must accept or both refuse, an
 *    accepted request must be the same field for field, and a chat request's
 *    messages_json must be a JSON list;
 *  - oai_usage_parse, as an unstreamed response;
 *  - oai_sse_feed, as a streamed response, once whole and once in chunks of 1..32 bytes
 *    stepped by the first byte: lines split across chunks must not change what is read. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "openai_body.h"

static void same_request(const oai_request *a, const oai_request *b)
{
    bool same = !strcmp(a->model, b->model) && a->chat == b->chat && a->prompt_len == b->prompt_len &&
                !a->prompt == !b->prompt && (!a->prompt || !memcmp(a->prompt, b->prompt, a->prompt_len)) &&
                a->n_tokens == b->n_tokens && !a->tokens == !b->tokens &&
                (!a->tokens || !memcmp(a->tokens, b->tokens, a->n_tokens * sizeof *a->tokens)) &&
                a->messages_len == b->messages_len && !a->messages_json == !b->messages_json &&
                (!a->messages_json || !memcmp(a->messages_json, b->messages_json, a->messages_len)) &&
                a->max_tokens == b->max_tokens && a->stream == b->stream && !a->cache_salt == !b->cache_salt &&
                (!a->cache_salt || !strcmp(a->cache_salt, b->cache_salt));
    if (!same)
        abort();
}

static void fuzz_request(const uint8_t *data, size_t size)
{
    /* extproc's body buffer: the body, then OAI_BODY_PADDING bytes of whatever was there */
    char *padded = malloc(size + OAI_BODY_PADDING);
    if (!padded)
        return;
    memcpy(padded, data, size);
    memset(padded + size, '}', OAI_BODY_PADDING);
    oai_request in_place, copied;
    kv_err e1 = {0}, e2 = {0};
    int rc1 = oai_request_parse(padded, size, size + OAI_BODY_PADDING, &in_place, &e1);
    int rc2 = oai_request_parse((const char *)data, size, size, &copied, &e2);
    /* Accepted by both or by neither. Which error a body with two faults reports may
     * differ (seen: the nesting limit from a copy, a JSON error further on in place):
     * both answer 400. */
    if ((rc1 == KV_OK) != (rc2 == KV_OK))
        abort();
    if (rc1 == KV_OK) {
        same_request(&in_place, &copied);
        if (!in_place.model || in_place.chat != (in_place.messages_json != NULL))
            abort();
        if (in_place.chat) {
            json_t *m = json_loadb(in_place.messages_json, in_place.messages_len, JSON_ALLOW_NUL, NULL);
            if (!json_is_array(m))
                abort();
            json_decref(m);
        }
    }
    oai_request_free(&in_place);
    oai_request_free(&copied);
    free(padded);
}

static void fuzz_usage(const uint8_t *data, size_t size)
{
    oai_usage u = {0};
    kv_err err = {0};
    if (oai_usage_parse((const char *)data, size, &u, &err) != KV_OK && u.found)
        abort();
}

static void fuzz_sse(const uint8_t *data, size_t size)
{
    oai_sse whole = {0}, split = {0};
    if (oai_sse_feed(&whole, (const char *)data, size) != KV_OK)
        goto out;
    size_t step = size ? (size_t)data[0] % 31 + 1 : 1;
    for (size_t off = 0, k = 0; off < size; k++) {
        size_t n = (k * step) % 32 + 1;
        if (n > size - off)
            n = size - off;
        if (oai_sse_feed(&split, (const char *)data + off, n) != KV_OK)
            goto out;
        off += n;
    }
    if (whole.done != split.done || whole.events != split.events || whole.bad_events != split.bad_events ||
        whole.usage.found != split.usage.found || whole.usage.prompt_tokens != split.usage.prompt_tokens ||
        whole.usage.completion_tokens != split.usage.completion_tokens ||
        whole.usage.total_tokens != split.usage.total_tokens || whole.usage.cached_tokens != split.usage.cached_tokens)
        abort();
out:
    oai_sse_free(&whole);
    oai_sse_free(&split);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_request(data, size);
    fuzz_usage(data, size);
    fuzz_sse(data, size);
    return 0;
}
