/* emureq: what an emulated vLLM pod (./sim serve) reads of a request body, and the refusal
 * vLLM's OpenAI server would give for a bad one: the status, the field and the message.
 *
 * Split from the HTTP server (emuhttp.c) so that every check runs on bytes alone: the
 * fuzz harness tests/fuzz/fuzz_emuhttp_body.c feeds it what a client could send. Pure
 * functions of their arguments; any thread. */
#ifndef KVROUTE_SIM_EMUREQ_H
#define KVROUTE_SIM_EMUREQ_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum emureq_kind {
    EMUREQ_COMPLETION,                /* POST /v1/completions */
    EMUREQ_CHAT,                      /* POST /v1/chat/completions */
    EMUREQ_TOKENIZE,                  /* POST /tokenize: text, or messages when present */
    EMUREQ_RENDER_COMPLETION,         /* POST /v1/completions/render */
    EMUREQ_RENDER_CHAT,               /* POST /v1/chat/completions/render */
} emureq_kind;

typedef struct emureq_limits {
    const char *served_model;         /* an absent "model" means this one */
    uint32_t vocab;                   /* token ids must be below it */
    uint32_t max_model_len;           /* prompt + completion tokens */
} emureq_limits;

typedef struct emureq {
    json_t *body;                     /* the parsed object (owned) */
    bool chat;
    uint32_t *ids;                    /* prompt token ids (owned) */
    size_t n;
    uint32_t max_tokens;              /* completions and chat only */
    bool stream, include_usage;
} emureq;

typedef struct emureq_refusal {
    int code;                         /* 400, 404 or 500 */
    const char *param;                /* the field at fault, or NULL */
    char msg[512];
} emureq_refusal;

/* Reads body[0..len) as `kind` asks. 0 with *out filled, or the refusal's status with *r
 * filled and *out empty (safe to free either way). */
int emureq_read(const char *body, size_t len, emureq_kind kind, const emureq_limits *lim, emureq *out,
                emureq_refusal *r);
/* The JSON object and model check alone (what /detokenize needs). */
int emureq_object(const char *body, size_t len, const emureq_limits *lim, json_t **out, emureq_refusal *r);
void emureq_free(emureq *q);

#endif
