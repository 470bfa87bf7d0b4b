/* hugepage: large arrays the simulator fills once, backed by 2 MiB pages where the
 * kernel offers them (transparent huge pages in "madvise" mode). A fresh 4 KiB page
 * costs a fault on first touch, and in a virtual machine a fault costs microseconds:
 * the token times, server samples and prompt tokens of a big run took a sixth of its
 * CPU time in the kernel. Everything here is a hint; memory comes from malloc's
 * allocator and is released with free(). */
#ifndef KVROUTE_SIM_HUGEPAGE_H
#define KVROUTE_SIM_HUGEPAGE_H

#include <stddef.h>

#define HUGEPAGE_SIZE ((size_t)2 << 20)

/* Like malloc(bytes); blocks of a huge page or more are huge-page aligned and advised. */
void *hugepage_alloc(size_t bytes);

/* Like calloc(n, size) (n = 0 counts as 1), through hugepage_alloc. */
void *hugepage_calloc(size_t n, size_t size);

/* Like realloc(p, new_bytes) for a block whose first used_bytes matter, through
 * hugepage_alloc (a copy, so the new block is advised before it is first touched).
 * On failure returns NULL and p is untouched. */
void *hugepage_grow(void *p, size_t used_bytes, size_t new_bytes);

#endif
