/* regress: reads a stored crash reproducer, tests/fuzz/regress/<harness>/<name>, so that
 * a unit test and the fuzz harness that replays the folder feed the same bytes.
 * Paths are relative to the repository root, where the tests run. Any thread. */
#ifndef KVROUTE_REGRESS_H
#define KVROUTE_REGRESS_H

#include <stddef.h>

/* The file's bytes plus a terminating NUL (not counted in *len); NULL when it cannot be
 * read. The caller frees. */
char *regress_read(const char *harness, const char *name, size_t *len);

#endif
