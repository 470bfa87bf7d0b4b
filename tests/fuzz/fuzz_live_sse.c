/* fuzz_live_sse: a streamed completion as `./sim --target` reads it from the endpoint it
 * measures (simulator/livesse.c, what liverun's chunk callback calls). The same bytes are
 * fed whole and in pieces of 1..32 bytes stepped by the first byte: how the socket split
 * them must not change what is read (flags, counts, usage, one stamp per content chunk
 * and at [DONE]). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kverr.h"
#include "livesse.h"

static void same(const livesse *a, const livesse *b)
{
    if (a->malformed != b->malformed)
        abort();
    if (a->malformed)
        return;
    if (a->done_marker != b->done_marker || a->chunks != b->chunks || a->n_times != b->n_times ||
        a->has_usage != b->has_usage || a->usage_prompt != b->usage_prompt || a->usage_output != b->usage_output ||
        a->usage_cached != b->usage_cached || a->len != b->len)
        abort();
    if (a->n_times != a->chunks + (a->done_marker ? 1u : 0u))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    livesse whole = {0}, split = {0};
    int rw = livesse_feed(&whole, (const char *)data, size, 7);
    size_t step = size ? (size_t)data[0] % 32 + 1 : 1;
    int rs = KV_OK;
    for (size_t off = 0; off < size && rs == KV_OK; off += step)
        rs = livesse_feed(&split, (const char *)data + off, size - off < step ? size - off : step, 7);
    if (rw == KV_OK && rs == KV_OK)
        same(&whole, &split);
    livesse_free(&whole);
    livesse_free(&split);
    return 0;
}
