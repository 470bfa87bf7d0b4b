/* hugepage: the simulator's memory backed by 2 MiB pages where the kernel offers them
 * (transparent huge pages in "madvise" mode). A fresh 4 KiB page costs a fault on first
 * touch, and in a virtual machine a fault costs microseconds: the token times, server
 * samples and prompt tokens of a big run took a sixth of its CPU time in the kernel.
 * And a run of 1,000 replicas touches each replica's small objects (request states,
 * block lists, step vectors) all over a heap of hundreds of MB, so with 4 KiB pages
 * nearly every touch also misses the TLB. Large arrays are advised one by one
 * (hugepage_alloc); malloc's heap is advised by glibc itself once the process runs with
 * its glibc.malloc.hugetlb tunable, and holds blocks of up to 32 MiB (hugepage_heap).
 * Everything here is a hint; memory comes from malloc's allocator and is released with
 * free(). Called from the main thread before any other starts. */
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

/* glibc gives each block of 128 KiB or more a mapping of its own, with 4 KiB pages,
 * however the heap is backed. A replica's block pool is such a block (560 KB for the
 * scale scenario's Llama-3.1-8B), so a thousand replicas' pools were 560 MB of small
 * pages: 137,000 faults and a TLB miss on nearly every block a step takes. Blocks under
 * this threshold come from the heap instead (mallopt's M_MMAP_THRESHOLD; 32 MiB is
 * glibc's largest on 64-bit). The heap's huge pages are faulted whole, so memory that is
 * allocated but never touched costs there: pools allocated whole and used only at their
 * start took 1,000 replicas and 100,000 requests to 656 MB resident instead of 194 MB,
 * which is why a pool's block array grows with its use (blockpool.c; 244 MB). */
#define HUGEPAGE_HEAP_MMAP_THRESHOLD ((size_t)32 << 20)

/* Backs malloc's heap with huge pages where the kernel offers them ("always" or
 * "madvise"; nothing happens under "never"): raises malloc's mapping threshold (above),
 * and in "madvise" mode asks glibc to advise its heap (the glibc.malloc.hugetlb=1
 * tunable, glibc 2.35) by re-running this program with it in GLIBC_TUNABLES: glibc reads
 * tunables only at start-up and offers no call to set them later ("always" already gives
 * the heap huge pages). Returns without the re-run when GLIBC_TUNABLES names the tunable
 * already (a user's choice, or this process after its re-run), under Valgrind (which
 * would stop following the program), or when the re-run fails; under a sanitizer (whose
 * allocator replaces glibc's) changes nothing. Otherwise does not return. Call it first
 * in main, before any file, socket or thread exists. */
void hugepage_heap(char **argv);

#endif
