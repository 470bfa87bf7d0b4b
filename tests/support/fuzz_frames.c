/* fuzz_frames: see fuzz_frames.h. */
#include "fuzz_frames.h"

size_t fuzz_frames_next(const uint8_t *data, size_t size, size_t *off, replay_frame f[3])
{
    size_t o = *off, n = data[o++] % 5;
    for (size_t i = 0; i < 3; i++)
        f[i] = (replay_frame){0};
    for (size_t i = 0; i < n; i++) {
        size_t len = o + 2 <= size ? (size_t)data[o] | (size_t)data[o + 1] << 8 : 0;
        o = o + 2 <= size ? o + 2 : size;
        if (len > size - o)
            len = size - o;
        if (i < 3)
            f[i] = (replay_frame){.data = data + o, .len = len};
        o += len;
    }
    *off = o;
    return n;
}
