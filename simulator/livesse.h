/* livesse: one streamed OpenAI completion as `./sim --target` reads it, split from the
 * socket so that a harness can feed it bytes (tests/fuzz/fuzz_live_sse.c).
 *
 * Owns the partial line between reads and the per-token timestamps (handed to the
 * request record on success). Reads what inference-perf reads: a timestamp per content
 * chunk (choices non-empty) and at `data: [DONE]`, the usage chunk's counts. A data line
 * that is not a JSON object, an error object, anything after [DONE] or a line longer than
 * LIVESSE_MAX_LINE marks the stream malformed, and nothing after that is read, so the
 * result does not depend on how the bytes were split. Single-threaded: the liverun loop
 * owns each one. */
#ifndef KVROUTE_LIVESSE_H
#define KVROUTE_LIVESSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "records.h"

#define LIVESSE_MAX_LINE (1u << 20)

typedef struct livesse {
    char *line;                       /* bytes after the last end of line (owned) */
    size_t len, cap;
    sim_time *times;                  /* a stamp per content chunk and at [DONE] (owned) */
    uint32_t n_times;
    size_t cap_times;
    uint32_t chunks;                  /* content chunks */
    bool done_marker, has_usage, malformed;
    uint32_t usage_prompt, usage_output, usage_cached;
} livesse;

/* Feeds n bytes read at `now`. KV_OK, or KV_ENOMEM (the stream is then unusable). */
int livesse_feed(livesse *s, const char *p, size_t n, sim_time now);
/* Hands over the timestamps (the caller frees them); the stream keeps none. */
sim_time *livesse_take_times(livesse *s, uint32_t *n);
void livesse_free(livesse *s);

#endif
