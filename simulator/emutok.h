/* emutok: the emulated pods' built-in tokenizer and chat template (./sim serve).
 *
 * A deterministic, documented stand-in for a model's tokenizer, stable across versions,
 * so that /tokenize, the render endpoints and prompt processing of every pod agree, and
 * a router that tokenises through a pod gets the ids the pod caches:
 *   - ids 0..255 are single bytes;
 *   - id k >= 256 is the word " " + w(k - 255), where w(n) spells n in bijective
 *     base 26 with letters a..z (1 = "a", 26 = "z", 27 = "aa", ...), for k < vocab.
 * Encoding scans left to right: a space followed by a run of lowercase letters that
 * ends at a non-letter (or the end) and spells an id below vocab is that one token;
 * anything else is one token per byte. So " the cat" is two tokens, "Hello" five.
 * Decoding concatenates; bytes that do not form valid UTF-8 become U+FFFD.
 *
 * The chat template is ChatML, fixed: per message "<|im_start|>" ROLE "\n" CONTENT
 * "<|im_end|>\n", then "<|im_start|>assistant\n" when a generation prompt is added.
 *
 * Pure functions of their inputs; any thread. */
#ifndef KVROUTE_SIM_EMUTOK_H
#define KVROUTE_SIM_EMUTOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

/* Token ids of text[0..len) for a vocabulary of vocab ids (> 256). *ids is malloc'd
 * (caller frees); KV_ENOMEM. An empty text gives zero ids and *ids may be NULL. */
int emutok_encode(const char *text, size_t len, uint32_t vocab, uint32_t **ids, size_t *n);

/* Appends the text of ids[0..n) to a malloc'd NUL-terminated UTF-8 string *out (its
 * length in *out_len). Ids >= vocab are KV_ERANGE naming the index. */
int emutok_decode(const uint32_t *ids, size_t n, uint32_t vocab, char **out, size_t *out_len, kv_err *err);

/* One chat message: role and content as given (content already flattened to text). */
typedef struct emutok_msg {
    const char *role;
    const char *content;
} emutok_msg;

/* The template's text for msgs[0..n) (malloc'd, NUL-terminated). NULL when out of memory. */
char *emutok_chat_text(const emutok_msg *msgs, size_t n, bool add_generation_prompt);

#endif
