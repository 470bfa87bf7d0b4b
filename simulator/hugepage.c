/* hugepage: huge-page backed allocation for the simulator's large arrays (see hugepage.h). */
#include "hugepage.h"

#include <limits.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define HUGETLB_TUNABLE "glibc.malloc.hugetlb"

/* The kernel's transparent huge page mode: the first letter of its [bracketed] word
 * ('a'lways, 'm'advise, 'n'ever), or 0 when it cannot be read. */
static char thp_mode(void)
{
    char mode[128] = {0};
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return 0;
    bool ok = fgets(mode, sizeof mode, f) != NULL;
    fclose(f);
    const char *b = ok ? strchr(mode, '[') : NULL;
    return b ? b[1] : 0;
}

void hugepage_heap(char **argv)
{
    char mode = thp_mode();
    if (mode != 'a' && mode != 'm') return;
    /* Blocks under the threshold come from the heap, which is on huge pages; glibc maps
     * the others apart (hugepage.h). */
    mallopt(M_MMAP_THRESHOLD, (int)HUGEPAGE_HEAP_MMAP_THRESHOLD);
    const char *old = getenv("GLIBC_TUNABLES"), *preload = getenv("LD_PRELOAD");
    if ((old && strstr(old, HUGETLB_TUNABLE)) || mode != 'm') return;
    /* Valgrind replaces malloc, and by default stops following a program that execs. */
    if (preload && strstr(preload, "vgpreload")) return;
    /* Exec the file /proc/self/exe points to, not the link itself, so ps and perf still
     * name the program. */
    char self[PATH_MAX], tunables[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0 || (size_t)len >= sizeof self - 1) return;
    self[len] = '\0';
    int n = snprintf(tunables, sizeof tunables, "%s%s" HUGETLB_TUNABLE "=1", old ? old : "", old && *old ? ":" : "");
    if (n < 0 || (size_t)n >= sizeof tunables || setenv("GLIBC_TUNABLES", tunables, 1)) return;
    execv(self, argv);
    /* No re-run: this process goes on with its heap as it is, and its children (gnuplot,
     * sweep workers) with the tunable, which changes nothing but their pages. */
}
#else
void hugepage_heap(char **argv) { (void)argv; }
#endif
