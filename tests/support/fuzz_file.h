/* fuzz_file: gives a fuzz input to a loader that only takes a path (the simulator's
 * scenario loader, the trace reader) by writing it to a file in a folder of this
 * process's own, made on first use under $TMPDIR, else /dev/shm (memory: a harness writes
 * one file per execution, thousands a second), else /tmp, and removed at exit.
 * Single-threaded (a harness runs one input at a time). */
#ifndef KVROUTE_TEST_FUZZ_FILE_H
#define KVROUTE_TEST_FUZZ_FILE_H

#include <stddef.h>

/* Writes data to <folder>/<name>, replacing what was there, and returns the path (valid
 * until the next call); NULL if the folder or file cannot be written. */
const char *fuzz_file_write(const char *name, const void *data, size_t size);

#endif
