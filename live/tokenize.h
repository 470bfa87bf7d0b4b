/* tokenize: token ids for text and chat prompts from vLLM, as llm-d-router's
 * token-producer gets them: POST /v1/completions/render or /v1/chat/completions/render
 * with the request body as it goes upstream (so the model's own template, tools and
 * template arguments apply exactly as serving will apply them), on a serving pod or on the
 * render server of token-producer's vllm.url (`vllm launch render`). vLLM answers with its
 * GenerateRequest: {"token_ids": [...], ...} for chat, a list of them for completions.
 *
 * Older vLLM has no render endpoints: a 404 there falls back to POST /tokenize with
 * {"model", "prompt"} or {"model", "messages"} (vLLM applies the chat template there too,
 * add_generation_prompt defaulting to true as /v1/chat/completions does). llm-d-router has
 * no such fallback; it is kvroute's, so pods older than the render API still score.
 *
 * A failure is returned with its reason and counted process-wide by reason (what
 * kvroute_tokenize_failures_total exports); the caller routes the request anyway, without
 * token ids (llm-d: "per-request errors are logged and the Director continues"), and logs
 * it. The client's Authorization header is forwarded, as llm-d-router does, so a renderer
 * started with --api-key accepts the request that serving would accept.
 *
 * Threads: any thread; each call uses its own libcurl handle (curl_global_init must
 * have run, which tokenize_global_init does once); the counters are atomics. */
#ifndef KVROUTE_TOKENIZE_H
#define KVROUTE_TOKENIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

void tokenize_global_init(void);

typedef enum tokenize_reason {
    TOKENIZE_TIMEOUT = 0,         /* no whole answer within the timeout */
    TOKENIZE_TRANSPORT,           /* could not connect, or the connection failed */
    TOKENIZE_HTTP_STATUS,         /* an answer other than 200 (render's 404 falls back first) */
    TOKENIZE_BAD_REPLY,           /* a 200 whose body holds no token id list */
    TOKENIZE_NO_ENDPOINT,         /* nothing to ask: no candidate pod (counted by the caller) */
    TOKENIZE_REASONS
} tokenize_reason;
const char *tokenize_reason_name(tokenize_reason r);   /* "timeout", "transport", ... */

typedef struct tokenize_req {
    const char *base_url;         /* "http://10.0.0.1:8000" (a serving pod) or vllm.url */
    const char *body;             /* the request body as sent upstream (render gets it as is) */
    size_t body_len;
    bool chat;                    /* /v1/chat/completions: messages */
    const char *model;            /* the /tokenize fallback's body: model and */
    const char *prompt;           /*   prompt (completions) or */
    size_t prompt_len;
    const char *messages_json;    /*   messages (chat) */
    const char *authorization;    /* the client's Authorization header, forwarded; NULL: none */
    int timeout_ms;               /* each HTTP call's */
} tokenize_req;

typedef struct tokenize_result {
    uint32_t *tokens;             /* on KV_OK, malloc'd (caller frees): n ids */
    size_t n;
    bool fell_back;               /* render answered 404 and /tokenize gave the ids */
    tokenize_reason reason;       /* on failure */
} tokenize_result;

/* On failure *err says what and where (URL, status, curl's words), out->reason why. */
int tokenize_prompt(const tokenize_req *q, tokenize_result *out, kv_err *err);

/* Process-wide counts: calls answered (by render, by the /tokenize fallback) and failures
 * by reason. tokenize_count_failure is for failures found before any call (no endpoint). */
typedef struct tokenize_stats {
    uint64_t rendered, fell_back;
    uint64_t failures[TOKENIZE_REASONS];
} tokenize_stats;
void tokenize_get_stats(tokenize_stats *out);
void tokenize_count_failure(tokenize_reason r);

/* The body of a 200 reply (public for the fuzz harness): /tokenize's {"tokens": [ids]},
 * render's {"token_ids": [ids]} or a list whose first item is that. On KV_OK *tokens
 * (malloc'd) holds *n ids; KV_EPARSE naming the byte or the item otherwise. */
int tokenize_parse_reply(const char *body, size_t len, uint32_t **tokens, size_t *n, kv_err *err);
int tokenize_parse_render(const char *body, size_t len, uint32_t **tokens, size_t *n, kv_err *err);

#endif
