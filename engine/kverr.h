/* kverr: errors as values. Every fallible engine call takes a kv_err * (may be NULL)
 * and returns a negative KV_E* code with a human-readable message naming the
 * file, line, field or byte offset at fault. The engine never exits or prints. */
#ifndef KVROUTE_KVERR_H
#define KVROUTE_KVERR_H

#include <stddef.h>

enum {
    KV_OK = 0,
    KV_EINVAL = -1,      /* bad argument or bad value in input */
    KV_ENOMEM = -2,
    KV_EPARSE = -3,      /* malformed input (YAML, msgpack, JSON) */
    KV_ENOTFOUND = -4,
    KV_ERANGE = -5,      /* a length or count out of its allowed range */
    KV_EIO = -6,
    KV_EFULL = -7,       /* a fixed capacity (endpoint slots, buffers) is exhausted */
    KV_ENOENDPOINTS = -8,/* scheduling: no endpoint left after filtering */
    KV_ESTATE = -9,      /* call not valid in the current state */
};

typedef struct kv_err {
    int code;
    char msg[512];
} kv_err;

/* Formats the message into e (when e is not NULL) and returns code. */
int kv_err_set(kv_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefixes an existing message, e.g. with the file name or the caller's context. */
int kv_err_prefix(kv_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *kv_strerror(int code);

/* User text (a file's header or field, a scenario value) made safe to echo in a message:
 * s[0..len) into out (cap bytes, always NUL-terminated) with every control byte and DEL
 * written as an escape (\n, \r, \t, \xNN), so a quoted value cannot break or forge a
 * log line or move a terminal's cursor; text that does not fit ends in "...". Returns out. */
const char *kv_err_quote(char *out, size_t cap, const char *s, size_t len);

#endif
