/* openai_body: the parts of OpenAI-style request and response bodies the EPP reads.
 *
 * Requests (/v1/completions, /v1/chat/completions; read in openai_request.cc with
 * simdjson, token ids straight into an array, no tree): `model` is required; `prompt`
 * makes it a completions request and may be text, token ids, a list of texts or a list
 * of token-id lists (a batch: only the first element is routed on, since one request
 * goes to one endpoint and the first prompt's prefix is as good a key as any); otherwise
 * `messages` makes it a chat request. max_tokens (or max_completion_tokens), stream and
 * cache_salt are read when present.
 *
 * Responses (openai_body.c, jansson): `usage` is read from an unstreamed JSON body, or
 * from the `data:` lines of a text/event-stream body fed chunk by chunk (lines may be
 * split across chunks; `[DONE]` ends the stream; the last usage object seen wins).
 *
 * Ownership: an oai_request owns copies of its strings and ids, valid until
 * oai_request_free. Not thread-safe per object; distinct objects are independent. */
#ifndef KVROUTE_OPENAI_BODY_H
#define KVROUTE_OPENAI_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

typedef struct oai_request {
    const char *model;        /* required */
    bool chat;                /* messages rather than prompt */
    const char *prompt;       /* completions text prompt (first of a batch); NULL for
                                 token ids or chat */
    size_t prompt_len;
    uint32_t *tokens;         /* completions token-id prompt (owned); NULL otherwise */
    size_t n_tokens;
    char *messages_json;      /* chat: compact JSON of `messages` (owned), the text the
                                 approximate scorer hashes and /tokenize gets (GIE
                                 marshals messages) */
    size_t messages_len;
    uint32_t max_tokens;      /* 0 when absent */
    bool stream;
    const char *cache_salt;   /* NULL when absent */
} oai_request;

/* Bytes past the end of a request body that the parser may read (never write). A caller
 * whose buffer has this much room after the body passes its size as `readable`, and the
 * body is read where it is; otherwise (readable = len) it is copied first. */
#define OAI_BODY_PADDING 64

/* Arrays and objects a request body may nest, its own object included: far above any
 * real request, and low enough that reading one (once per level) and re-serialising it
 * (jansson, at most JSON_PARSER_MAX_DEPTH 2048) stay within a thread's stack. */
#define OAI_MAX_DEPTH 1024

/* Parses body[0..len). KV_EPARSE with the JSON error position for bad JSON, KV_EINVAL
 * naming the field for a missing model or a malformed prompt/messages, or naming
 * OAI_MAX_DEPTH for a body nested deeper. On error *out is left empty (safe to free). */
int oai_request_parse(const char *body, size_t len, size_t readable, oai_request *out, kv_err *err);
void oai_request_free(oai_request *r);

typedef struct oai_usage {
    bool found;
    uint64_t prompt_tokens, completion_tokens, total_tokens;
    uint64_t cached_tokens;   /* usage.prompt_tokens_details.cached_tokens, 0 if absent */
} oai_usage;

/* Unstreamed response body: `usage` of the top-level object. Returns KV_OK with
 * u->found false when the body is JSON without usage, KV_EPARSE when it is not JSON. */
int oai_usage_parse(const char *body, size_t len, oai_usage *u, kv_err *err);

/* Streamed (SSE) response body. Zero-initialise, feed every chunk, free at the end. */
typedef struct oai_sse {
    char *line;               /* partial line carried across chunks */
    size_t len, cap;
    bool done;                /* "data: [DONE]" seen */
    oai_usage usage;          /* last usage seen in a data: event */
    uint64_t events;          /* data: events parsed as JSON */
    uint64_t bad_events;      /* data: events that were not JSON (ignored) */
    bool skipping;            /* inside an over-long line, dropped up to its newline */
} oai_sse;
/* KV_ENOMEM only; malformed events are counted, not fatal. Lines longer than 16 MiB
 * are dropped and counted as bad events. */
int oai_sse_feed(oai_sse *s, const char *chunk, size_t len);
void oai_sse_free(oai_sse *s);

#endif
