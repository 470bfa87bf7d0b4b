/* regress: stored crash reproducers for tests (see regress.h). */
#include "regress.h"

#include <stdio.h>
#include <stdlib.h>

char *regress_read(const char *harness, const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "tests/fuzz/regress/%s/%s", harness, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *b = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (b = malloc((size_t)n + 1)) && fread(b, 1, (size_t)n, f) == (size_t)n) {
        b[n] = 0;
        *len = (size_t)n;
    } else {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}
