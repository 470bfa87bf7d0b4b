/* ring: ring-buffer growth (see ring.h). */
#include "ring.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bool ring_grow(void **buf, size_t *cap, size_t *head, size_t n, size_t elem)
{
    size_t nc = *cap ? *cap : 8;
    if (nc > SIZE_MAX / 2 || 2 * nc > SIZE_MAX / elem)
        return false;
    nc *= 2;
    char *q = malloc(nc * elem);
    if (!q)
        return false;
    size_t first = n < *cap - *head ? n : *cap - *head;   /* head to the array's end */
    if (n) {
        memcpy(q, (char *)*buf + *head * elem, first * elem);
        memcpy(q + first * elem, *buf, (n - first) * elem);
    }
    free(*buf);
    *buf = q;
    *cap = nc;
    *head = 0;
    return true;
}
