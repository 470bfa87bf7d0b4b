/* prefetch: starting the fetch of a span of memory a caller will read soon, one copy for
 * the engine's index and the simulator's look-ahead. A hint only (no fault, no state);
 * header-only so it inlines; any thread. */
#ifndef KVROUTE_PREFETCH_H
#define KVROUTE_PREFETCH_H

#include <stddef.h>

/* Every cache line that [p, p + bytes) touches, whatever p's alignment; bytes > 0. */
static inline void prefetch_span(const void *p, size_t bytes)
{
    for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch((const char *)p + off);
    __builtin_prefetch((const char *)p + bytes - 1);
}

#endif
