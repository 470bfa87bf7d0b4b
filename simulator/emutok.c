/* emutok: the built-in tokenizer and ChatML template (see emutok.h for the rules). */
#include "emutok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORD_MAX 8            /* letters; 26^8 words exceed any vocabulary we model */

/* The id spelled by letters w[0..n) (bijective base 26), or 0 when it is >= vocab. */
static uint32_t word_id(const char *w, size_t n, uint32_t vocab)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = v * 26 + (uint64_t)(w[i] - 'a' + 1);
    return v + 255 < vocab ? (uint32_t)(v + 255) : 0;
}

/* Writes the word of id (>= 256) to out (room WORD_MAX + 1) and returns its length. */
static size_t id_word(uint32_t id, char *out)
{
    char rev[WORD_MAX];
    size_t n = 0;
    for (uint64_t v = (uint64_t)id - 255; v > 0 && n < WORD_MAX; v = (v - 1) / 26)
        rev[n++] = (char)('a' + (v - 1) % 26);
    out[0] = ' ';
    for (size_t i = 0; i < n; i++) out[1 + i] = rev[n - 1 - i];
    return n + 1;
}

static bool lower(char c) { return c >= 'a' && c <= 'z'; }

int emutok_encode(const char *text, size_t len, uint32_t vocab, uint32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (len == 0) return KV_OK;
    uint32_t *v = malloc(len * sizeof *v);   /* never more tokens than bytes */
    if (!v) return KV_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        if (text[i] == ' ') {
            size_t j = i + 1;
            while (j < len && lower(text[j]) && j - i <= WORD_MAX) j++;
            uint32_t id = 0;
            if (j > i + 1 && j - i - 1 <= WORD_MAX && (j == len || !lower(text[j])))
                id = word_id(text + i + 1, j - i - 1, vocab);
            if (id) {
                v[k++] = id;
                i = j;
                continue;
            }
        }
        v[k++] = (uint8_t)text[i++];
    }
    *ids = v;
    *n = k;
    return KV_OK;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) return 1;
    size_t want = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : 0;
    if (!want || want > n) return 0;
    for (size_t i = 1; i < want; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (want == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0))) return 0;
    if (want == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90))) return 0;
    return want;
}

int emutok_decode(const uint32_t *ids, size_t n, uint32_t vocab, char **out, size_t *out_len, kv_err *err)
{
    /* Raw bytes first (at most WORD_MAX + 1 per id), then UTF-8 repair into the result,
     * where an invalid byte (1 byte) becomes U+FFFD (3 bytes). */
    unsigned char *raw = malloc(n * (WORD_MAX + 1) + 1);
    if (!raw) return kv_err_set(err, KV_ENOMEM, "detokenize: out of memory");
    size_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= vocab) {
            free(raw);
            return kv_err_set(err, KV_ERANGE, "token %zu: id %u is outside the vocabulary (0..%u)", i, ids[i],
                              vocab - 1);
        }
        if (ids[i] < 256) raw[r++] = (unsigned char)ids[i];
        else r += id_word(ids[i], (char *)raw + r);
    }
    char *s = malloc(r * 3 + 1);
    if (!s) {
        free(raw);
        return kv_err_set(err, KV_ENOMEM, "detokenize: out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < r;) {
        size_t l = utf8_len(raw + i, r - i);
        if (l) {
            memcpy(s + k, raw + i, l);
            k += l;
            i += l;
        } else {
            memcpy(s + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    s[k] = 0;
    free(raw);
    *out = s;
    *out_len = k;
    return KV_OK;
}

char *emutok_chat_text(const emutok_msg *msgs, size_t n, bool add_generation_prompt)
{
    static const char open[] = "<|im_start|>", close[] = "<|im_end|>\n", gen[] = "<|im_start|>assistant\n";
    size_t len = sizeof gen;
    for (size_t i = 0; i < n; i++) len += strlen(open) + strlen(msgs[i].role) + 1 + strlen(msgs[i].content) + strlen(close);
    char *s = malloc(len);
    if (!s) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += (size_t)sprintf(s + k, "%s%s\n%s%s", open, msgs[i].role, msgs[i].content, close);
    if (add_generation_prompt) k += (size_t)sprintf(s + k, "%s", gen);
    s[k] = 0;
    return s;
}
