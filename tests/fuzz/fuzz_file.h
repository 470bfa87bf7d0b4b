/* fuzz_file: the input as a file, for harnesses whose entry point reads a path (kubeconfig,
 * manifests), as the programs do with a user's file. One memory file per process
 * (memfd_create: nothing on disk, and no ext4 flush on every rewrite, which held the rate
 * at ~300 inputs/s), named by its /proc/self/fd path and rewritten for each input.
 * Header-only: each harness is linked on its own (libFuzzer or the replay driver); the
 * including file defines _GNU_SOURCE first (memfd_create). */
#ifndef KVROUTE_FUZZ_FILE_H
#define KVROUTE_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* The path of a file holding data[0..size), or NULL (then the input is skipped). */
static const char *fuzz_file_write(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        if ((fd = memfd_create("kvroute-fuzz", 0)) < 0)
            return NULL;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        return NULL;
    return path;
}

#endif
