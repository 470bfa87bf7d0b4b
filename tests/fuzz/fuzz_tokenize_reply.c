/* fuzz_tokenize_reply: a vLLM tokenizer reply body as live/tokenize.c reads it: /tokenize's
 * (tokenize_parse_reply) and the render endpoints' (tokenize_parse_render, an object or a
 * list of them), what tokenize_prompt calls on a 200 answer. On success every id must be
 * what the reply's list holds: re-read with jansson, item for item. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "tokenize.h"

/* ids (n of them) must be the integers of arr. */
static void check(const json_t *arr, const uint32_t *ids, size_t n)
{
    if (json_array_size(arr) != n)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((json_int_t)ids[i] != json_integer_value(json_array_get(arr, i)))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t *tokens = NULL;
    size_t n = 0;
    kv_err err = {0};
    json_t *root = json_loadb((const char *)data, size, 0, NULL);
    if (tokenize_parse_reply((const char *)data, size, &tokens, &n, &err) == KV_OK) {
        check(json_object_get(root, "tokens"), tokens, n);
        free(tokens);
    } else if (tokens || n) {
        abort();
    }
    tokens = NULL, n = 0;
    if (tokenize_parse_render((const char *)data, size, &tokens, &n, &err) == KV_OK) {
        const json_t *obj = json_is_array(root) ? json_array_get(root, 0) : root;
        check(json_object_get(obj, "token_ids"), tokens, n);
        free(tokens);
    } else if (tokens || n) {
        abort();
    }
    json_decref(root);
    return 0;
}
