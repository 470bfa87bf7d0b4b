/* fuzz_promtext: a pod's /metrics body as `./sim --target-pods` reads its prefix-cache
 * counters (simulator/promtext.c), for vLLM's counter name and for the name the body's
 * first line starts with (so that samples match without the fuzzer guessing names). A
 * sample is read from its own line alone: the same lines in reverse order must give the
 * same answer (count, or -1 for a malformed sample); a count is never more than the
 * lines there are. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "promtext.h"

/* text's lines in reverse order, each ending in '\n' */
static char *reversed(const char *text, size_t len)
{
    char *out = malloc(len + 2), *o = out;
    if (!out)
        return NULL;
    const char *end = text + len;
    while (end > text) {
        const char *eol = end;
        if (eol[-1] == '\n')
            eol--;
        const char *bol = eol;
        while (bol > text && bol[-1] != '\n')
            bol--;
        memcpy(o, bol, (size_t)(eol - bol));
        o += eol - bol;
        *o++ = '\n';
        end = bol;
    }
    *o = 0;
    return out;
}

static void check(const char *text, const char *rev, const char *name, size_t lines)
{
    double a, b;
    int na = promtext_sum(text, name, &a), nb = promtext_sum(rev, name, &b);
    if (na != nb || na < -1 || (size_t)(na < 0 ? 0 : na) > lines)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    size_t len = strlen(text), lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    char *rev = reversed(text, len);
    if (rev) {
        check(text, rev, "vllm:prefix_cache_hits_total", lines);
        char name[64];
        size_t n = strcspn(text, "{ \t\r\n");
        if (n > 0 && n < sizeof name) {
            memcpy(name, text, n);
            name[n] = 0;
            check(text, rev, name, lines);
        }
    }
    free(rev);
    free(text);
    return 0;
}
