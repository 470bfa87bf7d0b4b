/* hugepage: huge-page backed allocation for the simulator's large arrays (see hugepage.h). */
#include "hugepage.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void *hugepage_alloc(size_t bytes)
{
    if (bytes < HUGEPAGE_SIZE)
        return malloc(bytes ? bytes : 1);
    size_t whole = (bytes + HUGEPAGE_SIZE - 1) / HUGEPAGE_SIZE * HUGEPAGE_SIZE;
    void *p;
    if (posix_memalign(&p, HUGEPAGE_SIZE, whole))
        return NULL;
    madvise(p, whole, MADV_HUGEPAGE);   /* a hint: failure changes nothing */
    return p;
}

void *hugepage_calloc(size_t n, size_t size)
{
    n = n ? n : 1;
    if (n > SIZE_MAX / size)
        return NULL;
    void *p = hugepage_alloc(n * size);
    return p ? memset(p, 0, n * size) : NULL;
}

void *hugepage_grow(void *p, size_t used_bytes, size_t new_bytes)
{
    if (new_bytes < HUGEPAGE_SIZE)
        return realloc(p, new_bytes);
    void *n = hugepage_alloc(new_bytes);
    if (!n)
        return NULL;
    if (p)
        memcpy(n, p, used_bytes);
    free(p);
    return n;
}
