/* token_producer: where ./epp gets a text or chat prompt's token ids, as the config's
 * token-producer (or its deprecated alias tokenizer) says, for live/tokenize.h.
 *
 * llm-d-router's vllm backend renders on vllm.url (default http://localhost:8000, a
 * `vllm launch render` sidecar), or on the pool's own endpoints with
 * vllm.endpointDiscovery; timeouts vllm.timeout (5 s: completions) and vllm.mmTimeout
 * (30 s: chat takes the larger of the two, whatever its content). kvroute renders on the
 * serving pods whenever llm-d would use a backend kvroute does not have (the estimate
 * backend, the UDS tokenizer sidecar) or no token producer at all: their ids would match
 * no engine, and the pods' ids do.
 *
 * Threads: set when the scheduler is built, read-only after. */
#ifndef KVROUTE_TOKEN_PRODUCER_H
#define KVROUTE_TOKEN_PRODUCER_H

#include "scheduler.h"

#define TOKEN_PRODUCER_SERVICE "token-source"
#define TOKEN_PRODUCER_TIMEOUT_S 5.0
#define TOKEN_PRODUCER_MM_TIMEOUT_S 30.0

typedef struct token_producer {
    const char *plugin;       /* the plugin's name, for messages */
    const char *model_name;   /* modelName, or NULL */
    const char *url;          /* the render server (vllm.url, trailing '/' dropped); NULL: the serving pods */
    double timeout_s;         /* completions */
    double chat_timeout_s;    /* chat: max(vllm.timeout, vllm.mmTimeout) */
} token_producer;

/* The first token producer of s, or NULL when the config has none. */
const token_producer *token_producer_of(const sched *s);

#endif
