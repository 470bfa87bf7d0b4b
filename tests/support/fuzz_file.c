/* fuzz_file: see fuzz_file.h. */
#include "fuzz_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char folder[256];
static char path[512];
static char written[8][64];   /* names written, removed at exit */
static size_t n_written;

static void fuzz_file_cleanup(void)
{
    for (size_t i = 0; i < n_written; i++) {
        snprintf(path, sizeof path, "%s/%s", folder, written[i]);
        unlink(path);
    }
    rmdir(folder);
}

static void remember(const char *name)
{
    for (size_t i = 0; i < n_written; i++)
        if (strcmp(written[i], name) == 0)
            return;
    if (n_written < 8)
        snprintf(written[n_written++], sizeof written[0], "%s", name);
}

const char *fuzz_file_write(const char *name, const void *data, size_t size)
{
    if (!folder[0]) {
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !*tmp)
            tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(folder, sizeof folder, "%s/kvroute-fuzz-XXXXXX", tmp);
        if (!mkdtemp(folder)) {
            folder[0] = 0;
            return NULL;
        }
        atexit(fuzz_file_cleanup);
    }
    if (strlen(name) >= sizeof written[0])
        return NULL;
    snprintf(path, sizeof path, "%s/%s", folder, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return NULL;
    remember(name);
    size_t put = fwrite(data, 1, size, f);
    if (fclose(f) != 0 || put != size)
        return NULL;
    return path;
}
