/* replay: runs a libFuzzer harness over stored inputs without libFuzzer, so `make test`
 * replays every seed corpus and crash reproducer under the ASan+UBSan build with gcc.
 *
 * Linked with one harness (tests/fuzz/fuzz_<name>.c) as replay_<name>. Calls the
 * harness's LLVMFuzzerInitialize when it defines one (a weak reference), then feeds
 * every regular file named on the command line, or found directly inside a directory
 * named there, to LLVMFuzzerTestOneInput, in name order so a failure is reproducible.
 * A sanitizer report or an abort() in the harness ends the process (that is the
 * failure, and the last name it printed on stderr is the input that did it); otherwise
 * it prints how many inputs ran and exits 0. A path that cannot be read is an error
 * (exit 2), so a mistyped folder never passes as "0 inputs".
 * Single-threaded. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Reads a regular file into a malloc'd buffer of exactly its size (so ASan sees a read
 * one past the input's end); NULL with errno set on failure. */
static uint8_t *replay_read(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f)
        return NULL;
    uint8_t *data = NULL;
    if (fstat(fileno(f), &st) == 0 && (data = malloc(st.st_size ? (size_t)st.st_size : 1)) &&
        fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        free(data);
        data = NULL;
        errno = EIO;
    }
    fclose(f);
    if (data)
        *size = (size_t)st.st_size;
    return data;
}

static int replay_file(const char *path, size_t *count)
{
    size_t size = 0;
    uint8_t *data = replay_read(path, &size);
    if (!data) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(stderr, "replay: %s\n", path);   /* the last name printed is the input that failed */
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    (*count)++;
    return 0;
}

static int replay_by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int replay_dir(const char *dir, size_t *count)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, replay_by_name);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (rc == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode))
            rc = replay_file(path, count);
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    size_t count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 2;
        }
        if ((S_ISDIR(st.st_mode) ? replay_dir(argv[i], &count) : replay_file(argv[i], &count)) != 0)
            return 2;
    }
    printf("replay: %zu inputs\n", count);
    return 0;
}
