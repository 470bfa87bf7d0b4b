/* tokenize: token ids for text prompts from a vLLM endpoint's /tokenize API.
 *
 * Completions send {"model", "prompt"}; chat sends {"model", "messages"} so that vLLM
 * applies the model's own chat template (add_generation_prompt defaults to true there,
 * matching what /v1/chat/completions will tokenise). The call is bounded by a timeout;
 * on any failure the caller falls back to prefix-text scoring (docs/upstream/epp.md §3), so errors
 * only need to say what went wrong for the log.
 *
 * Threads: any thread; each call uses its own libcurl handle (curl_global_init must
 * have run, which tokenize_global_init does once). */
#ifndef KVROUTE_TOKENIZE_H
#define KVROUTE_TOKENIZE_H

#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

void tokenize_global_init(void);

/* endpoint is "host:port". Exactly one of prompt / messages_json is non-NULL.
 * On KV_OK *tokens (malloc'd, caller frees) holds *n ids. KV_EIO for transport errors
 * and timeouts, KV_EPARSE for an unexpected reply. */
int tokenize_vllm(const char *endpoint, const char *model, const char *prompt, size_t prompt_len,
                  const char *messages_json, int timeout_ms, uint32_t **tokens, size_t *n, kv_err *err);

/* The body of a 200 reply, {"tokens": [ids...], ...}, read as tokenize_vllm reads it
 * (public for the fuzz harness). On KV_OK *tokens (malloc'd) holds *n ids; KV_EPARSE
 * naming the byte or the item otherwise. */
int tokenize_parse_reply(const char *body, size_t len, uint32_t **tokens, size_t *n, kv_err *err);

#endif
