/* hugepage: the simulator's memory backed by 2 MiB pages where the kernel offers them
 * (transparent huge pages in "madvise" mode). A fresh 4 KiB page costs a fault on first
 * touch, and in a virtual machine a fault costs microseconds: the token times, server
 * samples and prompt tokens of a big run took a sixth of its CPU time in the kernel.
 * And a run of 1,000 replicas touches each replica's small objects (request states,
 * block lists, step vectors) all over a heap of hundreds of MB, so with 4 KiB pages
 * nearly every touch also misses the TLB. Large arrays are advised one by one
 * (hugepage_alloc); malloc's heap is advised by glibc itself once the process runs with
 * its glibc.malloc.hugetlb tunable (hugepage_heap). Everything here is a hint; memory
 * comes from malloc's allocator and is released with free(). Called from the main
 * thread before any other starts. */
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

/* Asks glibc to back its heap with huge pages (the glibc.malloc.hugetlb=1 tunable, glibc
 * 2.35) by re-running this program with it in GLIBC_TUNABLES: glibc reads tunables only
 * at start-up and offers no call to set them later. Returns, changing nothing, when the
 * kernel's mode is not "madvise" ("always" already gives the heap huge pages, "never"
 * gives none), when GLIBC_TUNABLES names the tunable already (a user's choice, or this
 * process after its re-run), under a sanitizer or Valgrind (whose allocators replace
 * glibc's; Valgrind would also stop following the program), or when the re-run fails.
 * Otherwise does not return. Call it first in main, before any file, socket or thread
 * exists. */
void hugepage_heap(char **argv);

#endif
