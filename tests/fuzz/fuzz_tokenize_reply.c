/* fuzz_tokenize_reply: a vLLM /tokenize reply body as live/tokenize.c reads it
 * (tokenize_parse_reply, what tokenize_prompt calls on a 200 answer of /tokenize). On success every id
 * must be what the reply's list holds: re-read with jansson, item for item. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "tokenize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t *tokens = NULL;
    size_t n = 0;
    kv_err err = {0};
    if (tokenize_parse_reply((const char *)data, size, &tokens, &n, &err) != KV_OK) {
        if (tokens || n)
            abort();
        return 0;
    }
    json_t *root = json_loadb((const char *)data, size, 0, NULL);
    const json_t *arr = json_object_get(root, "tokens");
    if (json_array_size(arr) != n)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((json_int_t)tokens[i] != json_integer_value(json_array_get(arr, i)))
            abort();
    json_decref(root);
    free(tokens);
    return 0;
}
