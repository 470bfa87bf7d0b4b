/* yamltree: a YAML document as a small tree that remembers where each node came
 * from (file, line, column), so that config and scenario loaders can report
 * "file:line:col: field 'a.b': ..." and warn about keys nobody read.
 * Ownership: yt_doc owns every node and string; nodes live until yt_free. */
#ifndef KVROUTE_YAMLTREE_H
#define KVROUTE_YAMLTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

typedef enum { YT_SCALAR, YT_MAP, YT_SEQ } yt_kind;

typedef struct yt_node yt_node;
struct yt_node {
    yt_kind kind;
    int line, col;          /* 1-based position of the node's start */
    const char *str;        /* YT_SCALAR: the text, NUL-terminated */
    bool quoted;            /* YT_SCALAR: written with quotes (so "null" is a string) */
    size_t n;               /* YT_MAP: pairs; YT_SEQ: items */
    const char **keys;      /* YT_MAP: key texts */
    yt_node **keynodes;     /* YT_MAP: key nodes (positions for errors) */
    yt_node **items;        /* YT_MAP: values; YT_SEQ: items */
    bool used;              /* set by yt_get on a map value; for unknown-key warnings */
};

typedef struct yt_doc yt_doc;

yt_doc *yt_load_file(const char *path, kv_err *err);
yt_doc *yt_load_string(const char *text, size_t len, const char *name, kv_err *err);
void yt_free(yt_doc *doc);
const yt_node *yt_root(const yt_doc *doc);     /* NULL for an empty document */
const char *yt_name(const yt_doc *doc);        /* file name used in messages */

/* Map lookup; marks the value used. NULL when n is not a map or key is absent. */
const yt_node *yt_get(const yt_node *map, const char *key);
bool yt_is_null(const yt_node *n);             /* absent, ~, null, or empty plain scalar */

/* Typed reads. 'what' names the field in messages ("plugins[2].weight").
 * Each returns KV_OK or KV_EINVAL with "name:line:col: field 'what': expected ..., got '...'". */
int yt_int(const yt_doc *d, const yt_node *n, const char *what, int64_t *out, kv_err *err);
int yt_double(const yt_doc *d, const yt_node *n, const char *what, double *out, kv_err *err);
/* A number in [lo, hi]; outside it is KV_EINVAL "field 'what': V is out of range [lo, hi]". */
int yt_int_range(const yt_doc *d, const yt_node *n, const char *what, int64_t lo, int64_t hi, int64_t *out,
                 kv_err *err);
int yt_double_range(const yt_doc *d, const yt_node *n, const char *what, double lo, double hi, double *out,
                    kv_err *err);
/* Optional fields of a map: absent or null keeps *out; messages name the field "path.key". */
int yt_opt_int(const yt_doc *d, const yt_node *map, const char *path, const char *key, int64_t lo, int64_t hi,
               int64_t *out, kv_err *err);
/* yt_opt_int into a uint32_t field; lo and hi must lie within uint32_t. */
int yt_opt_u32(const yt_doc *d, const yt_node *map, const char *path, const char *key, int64_t lo, int64_t hi,
               uint32_t *out, kv_err *err);
int yt_opt_double(const yt_doc *d, const yt_node *map, const char *path, const char *key, double lo, double hi,
                  double *out, kv_err *err);
int yt_bool(const yt_doc *d, const yt_node *n, const char *what, bool *out, kv_err *err);
int yt_string(const yt_doc *d, const yt_node *n, const char *what, const char **out, kv_err *err);
/* Duration: a number of seconds, or a Go-style string "50ms", "2s", "2m", "1h30m". */
int yt_duration(const yt_doc *d, const yt_node *n, const char *what, double *seconds, kv_err *err);
/* The text behind yt_duration, for durations inside a larger string; false when s is not one. */
bool yt_parse_duration(const char *s, double *seconds);

/* Formats an error at a node's position: "name:line:col: " + message. */
int yt_error(const yt_doc *d, const yt_node *n, kv_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Calls fn for every key of map that no yt_get has read (for warnings or errors). */
void yt_each_unused(const yt_node *map, void (*fn)(void *ctx, const char *key, const yt_node *keynode),
                    void *ctx);

#endif
