/* yamltree: builds a positioned node tree from libyaml's event stream (see yamltree.h).
 * Every allocation hangs off the doc's arena list, so yt_free is one walk. */
#include "yamltree.h"
#include "grow.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

typedef struct yt_alloc { struct yt_alloc *next; max_align_t data[]; } yt_alloc;

typedef struct { char *name; yt_node *node; } yt_anchor;

struct yt_doc {
    yt_alloc *allocs;
    yt_node *root;
    char *name;
    yt_anchor *anchors;
    size_t n_anchors, cap_anchors;
};

static void *yt_mem(yt_doc *d, size_t size)
{
    yt_alloc *a = calloc(1, sizeof *a + size);
    if (!a)
        return NULL;
    a->next = d->allocs;
    d->allocs = a;
    return a->data;
}

static char *yt_strdup(yt_doc *d, const char *s, size_t len)
{
    char *p = yt_mem(d, len + 1);
    if (p)
        memcpy(p, s, len);
    return p;
}

void yt_free(yt_doc *d)
{
    if (!d)
        return;
    for (yt_alloc *a = d->allocs, *next; a; a = next) {
        next = a->next;
        free(a);
    }
    for (size_t i = 0; i < d->n_anchors; i++)
        free(d->anchors[i].name);
    free(d->anchors);
    free(d->name);
    free(d);
}

/* Growable child list used while a collection is open (three arrays, since the node
 * takes each as its own). */
typedef struct {
    yt_node **items;
    const char **keys;
    yt_node **keynodes;
    size_t n, cap_items, cap_keys, cap_keynodes;
} yt_build;

static int yt_push(yt_build *b, yt_node *item, const char *key, yt_node *keynode)
{
    if (!grow_array((void **)&b->items, &b->cap_items, b->n + 1, sizeof *b->items) ||
        !grow_array((void **)&b->keys, &b->cap_keys, b->n + 1, sizeof *b->keys) ||
        !grow_array((void **)&b->keynodes, &b->cap_keynodes, b->n + 1, sizeof *b->keynodes))
        return -1;
    b->items[b->n] = item;
    b->keys[b->n] = key;
    b->keynodes[b->n] = keynode;
    b->n++;
    return 0;
}

static void yt_build_free(yt_build *b)
{
    free(b->items);
    free(b->keys);
    free(b->keynodes);
}

static int yt_remember_anchor(yt_doc *d, const yaml_char_t *anchor, yt_node *n)
{
    if (!anchor)
        return 0;
    if (!grow_array((void **)&d->anchors, &d->cap_anchors, d->n_anchors + 1, sizeof *d->anchors))
        return -1;
    d->anchors[d->n_anchors].name = strdup((const char *)anchor);
    if (!d->anchors[d->n_anchors].name)
        return -1;
    d->anchors[d->n_anchors].node = n;
    d->n_anchors++;
    return 0;
}

/* Parses one node whose first event is ev (already taken). */
static yt_node *yt_parse_node(yt_doc *d, yaml_parser_t *p, yaml_event_t *ev, kv_err *err, int depth);

static int yt_next(yt_doc *d, yaml_parser_t *p, yaml_event_t *ev, kv_err *err)
{
    if (!yaml_parser_parse(p, ev))
        return kv_err_set(err, KV_EPARSE, "%s:%zu:%zu: %s%s%s", d->name, p->problem_mark.line + 1,
                          p->problem_mark.column + 1, p->problem ? p->problem : "YAML syntax error",
                          p->context ? " " : "", p->context ? p->context : "");
    return KV_OK;
}

static yt_node *yt_parse_node(yt_doc *d, yaml_parser_t *p, yaml_event_t *ev, kv_err *err, int depth)
{
    if (depth > 64) {
        kv_err_set(err, KV_EPARSE, "%s:%zu: nesting deeper than 64 levels", d->name, ev->start_mark.line + 1);
        return NULL;
    }
    if (ev->type == YAML_ALIAS_EVENT) {
        for (size_t i = d->n_anchors; i-- > 0;)
            if (strcmp(d->anchors[i].name, (const char *)ev->data.alias.anchor) == 0)
                return d->anchors[i].node;
        kv_err_set(err, KV_EPARSE, "%s:%zu:%zu: unknown alias '*%s'", d->name, ev->start_mark.line + 1,
                   ev->start_mark.column + 1, ev->data.alias.anchor);
        return NULL;
    }
    yt_node *n = yt_mem(d, sizeof *n);
    if (!n) {
        kv_err_set(err, KV_ENOMEM, "out of memory reading %s", d->name);
        return NULL;
    }
    n->line = (int)ev->start_mark.line + 1;
    n->col = (int)ev->start_mark.column + 1;
    if (ev->type == YAML_SCALAR_EVENT) {
        n->kind = YT_SCALAR;
        n->str = yt_strdup(d, (const char *)ev->data.scalar.value, ev->data.scalar.length);
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        if (!n->str || yt_remember_anchor(d, ev->data.scalar.anchor, n)) {
            kv_err_set(err, KV_ENOMEM, "out of memory reading %s", d->name);
            return NULL;
        }
        return n;
    }
    int is_map = ev->type == YAML_MAPPING_START_EVENT;
    if (!is_map && ev->type != YAML_SEQUENCE_START_EVENT) {
        kv_err_set(err, KV_EPARSE, "%s:%d:%d: unexpected YAML event", d->name, n->line, n->col);
        return NULL;
    }
    n->kind = is_map ? YT_MAP : YT_SEQ;
    if (yt_remember_anchor(d, is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor, n)) {
        kv_err_set(err, KV_ENOMEM, "out of memory reading %s", d->name);
        return NULL;
    }
    yt_build b = {0};
    yt_node *result = NULL;
    for (;;) {
        yaml_event_t e;
        if (yt_next(d, p, &e, err))
            break;
        if (e.type == YAML_MAPPING_END_EVENT || e.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&e);
            result = n;
            break;
        }
        yt_node *key = NULL;
        if (is_map) {
            key = yt_parse_node(d, p, &e, err, depth + 1);
            yaml_event_delete(&e);
            if (!key)
                break;
            if (key->kind != YT_SCALAR) {
                kv_err_set(err, KV_EPARSE, "%s:%d:%d: map keys must be plain scalars", d->name, key->line,
                           key->col);
                break;
            }
            for (size_t i = 0; i < b.n; i++)
                if (strcmp(b.keys[i], key->str) == 0) {
                    kv_err_set(err, KV_EPARSE, "%s:%d:%d: duplicate key '%s' (first at line %d)", d->name,
                               key->line, key->col, key->str, b.keynodes[i]->line);
                    goto out;
                }
            if (yt_next(d, p, &e, err))
                break;
        }
        yt_node *child = yt_parse_node(d, p, &e, err, depth + 1);
        yaml_event_delete(&e);
        if (!child)
            break;
        if (yt_push(&b, child, key ? key->str : NULL, key)) {
            kv_err_set(err, KV_ENOMEM, "out of memory reading %s", d->name);
            break;
        }
    }
out:
    if (result) {
        n->n = b.n;
        size_t sz = (b.n ? b.n : 1);
        n->items = yt_mem(d, sz * sizeof *n->items);
        if (is_map) {
            n->keys = yt_mem(d, sz * sizeof *n->keys);
            n->keynodes = yt_mem(d, sz * sizeof *n->keynodes);
        }
        if (!n->items || (is_map && (!n->keys || !n->keynodes))) {
            kv_err_set(err, KV_ENOMEM, "out of memory reading %s", d->name);
            result = NULL;
        } else {
            if (b.n)
                memcpy(n->items, b.items, b.n * sizeof *n->items);
            if (is_map && b.n) {
                memcpy(n->keys, b.keys, b.n * sizeof *n->keys);
                memcpy(n->keynodes, b.keynodes, b.n * sizeof *n->keynodes);
            }
        }
    }
    yt_build_free(&b);
    return result;
}

yt_doc *yt_load_string(const char *text, size_t len, const char *name, kv_err *err)
{
    yt_doc *d = calloc(1, sizeof *d);
    if (!d || !(d->name = strdup(name ? name : "<yaml>"))) {
        free(d);
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        yt_free(d);
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int ok = 0, docs = 0;
    for (;;) {
        yaml_event_t e;
        if (yt_next(d, &p, &e, err))
            break;
        yaml_event_type_t t = e.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&e);
            ok = 1;
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            yaml_event_delete(&e);
            kv_err_set(err, KV_EPARSE, "%s:%zu: more than one YAML document", d->name, e.start_mark.line + 1);
            break;
        }
        if (t == YAML_SCALAR_EVENT || t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT ||
            t == YAML_ALIAS_EVENT) {
            d->root = yt_parse_node(d, &p, &e, err, 0);
            yaml_event_delete(&e);
            if (!d->root)
                break;
            continue;
        }
        yaml_event_delete(&e);
    }
    yaml_parser_delete(&p);
    if (!ok) {
        yt_free(d);
        return NULL;
    }
    if (d->root && d->root->kind == YT_SCALAR && !d->root->quoted && d->root->str[0] == 0)
        d->root = NULL;
    return d;
}

yt_doc *yt_load_file(const char *path, kv_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        kv_err_set(err, KV_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (!grow_array((void **)&buf, &cap, len + 65536, 1)) {
            free(buf);
            fclose(f);
            kv_err_set(err, KV_ENOMEM, "%s: out of memory", path);
            return NULL;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        kv_err_set(err, KV_EIO, "%s: read error", path);
        return NULL;
    }
    yt_doc *d = yt_load_string(buf, len, path, err);
    free(buf);
    return d;
}

const yt_node *yt_root(const yt_doc *d) { return d ? d->root : NULL; }
const char *yt_name(const yt_doc *d) { return d ? d->name : "<yaml>"; }

const yt_node *yt_get(const yt_node *map, const char *key)
{
    if (!map || map->kind != YT_MAP)
        return NULL;
    for (size_t i = 0; i < map->n; i++)
        if (strcmp(map->keys[i], key) == 0) {
            map->items[i]->used = true;
            map->keynodes[i]->used = true;
            return map->items[i];
        }
    return NULL;
}

bool yt_is_null(const yt_node *n)
{
    if (!n)
        return true;
    if (n->kind != YT_SCALAR || n->quoted)
        return false;
    return n->str[0] == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

int yt_error(const yt_doc *d, const yt_node *n, kv_err *err, int code, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* the message quotes the document's own text (keys, values): escape its control bytes */
    char q[sizeof msg * 2];
    kv_err_quote(q, sizeof q, msg, strlen(msg));
    if (n)
        return kv_err_set(err, code, "%s:%d:%d: %s", yt_name(d), n->line, n->col, q);
    return kv_err_set(err, code, "%s: %s", yt_name(d), q);
}

static const char *yt_show(const yt_node *n)
{
    if (!n)
        return "nothing";
    if (n->kind == YT_MAP)
        return "a map";
    if (n->kind == YT_SEQ)
        return "a list";
    return n->str;
}

static int yt_expect_scalar(const yt_doc *d, const yt_node *n, const char *what, const char *type, kv_err *err)
{
    if (!n || n->kind != YT_SCALAR)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': expected %s, got %s", what, type, yt_show(n));
    return KV_OK;
}

int yt_int(const yt_doc *d, const yt_node *n, const char *what, int64_t *out, kv_err *err)
{
    if (yt_expect_scalar(d, n, what, "an integer", err))
        return KV_EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(n->str, &end, 0);
    if (errno == 0 && end != n->str && *end == 0) {
        *out = v;
        return KV_OK;
    }
    double f;   /* "3.0" is accepted where an integer is wanted, as Go's JSON round trip does */
    if (yt_double(d, n, what, &f, NULL) == KV_OK && f == floor(f) && fabs(f) < 9.2e18) {
        *out = (int64_t)f;
        return KV_OK;
    }
    return yt_error(d, n, err, KV_EINVAL, "field '%s': expected an integer, got '%s'", what, n->str);
}

int yt_int_range(const yt_doc *d, const yt_node *n, const char *what, int64_t lo, int64_t hi, int64_t *out,
                 kv_err *err)
{
    int64_t v;
    int rc = yt_int(d, n, what, &v, err);
    if (rc)
        return rc;
    if (v < lo || v > hi)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': %lld is out of range [%lld, %lld]", what, (long long)v,
                        (long long)lo, (long long)hi);
    *out = v;
    return KV_OK;
}

int yt_double_range(const yt_doc *d, const yt_node *n, const char *what, double lo, double hi, double *out,
                    kv_err *err)
{
    double v;
    int rc = yt_double(d, n, what, &v, err);
    if (rc)
        return rc;
    if (v < lo || v > hi)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': %g is out of range [%g, %g]", what, v, lo, hi);
    *out = v;
    return KV_OK;
}

/* An optional field: map's key when present and not null, with "path.key" in what (the
 * name errors give); NULL when absent. */
static const yt_node *yt_opt_node(const yt_node *map, const char *path, const char *key, char *what, size_t cap)
{
    const yt_node *n = yt_get(map, key);
    if (yt_is_null(n))
        return NULL;
    snprintf(what, cap, "%s.%s", path, key);
    return n;
}

int yt_opt_int(const yt_doc *d, const yt_node *map, const char *path, const char *key, int64_t lo, int64_t hi,
               int64_t *out, kv_err *err)
{
    char what[256];
    const yt_node *n = yt_opt_node(map, path, key, what, sizeof what);
    return n ? yt_int_range(d, n, what, lo, hi, out, err) : KV_OK;
}

int yt_opt_u32(const yt_doc *d, const yt_node *map, const char *path, const char *key, int64_t lo, int64_t hi,
               uint32_t *out, kv_err *err)
{
    int64_t v = *out;
    int rc = yt_opt_int(d, map, path, key, lo, hi, &v, err);
    *out = (uint32_t)v;
    return rc;
}

int yt_opt_double(const yt_doc *d, const yt_node *map, const char *path, const char *key, double lo, double hi,
                  double *out, kv_err *err)
{
    char what[256];
    const yt_node *n = yt_opt_node(map, path, key, what, sizeof what);
    return n ? yt_double_range(d, n, what, lo, hi, out, err) : KV_OK;
}

int yt_double(const yt_doc *d, const yt_node *n, const char *what, double *out, kv_err *err)
{
    if (yt_expect_scalar(d, n, what, "a number", err))
        return KV_EINVAL;
    char *end;
    errno = 0;
    double v = strtod(n->str, &end);
    if (errno == 0 && end != n->str && *end == 0 && isfinite(v)) {
        *out = v;
        return KV_OK;
    }
    return yt_error(d, n, err, KV_EINVAL, "field '%s': expected a number, got '%s'", what, n->str);
}

int yt_bool(const yt_doc *d, const yt_node *n, const char *what, bool *out, kv_err *err)
{
    if (yt_expect_scalar(d, n, what, "true or false", err))
        return KV_EINVAL;
    static const char *t[] = {"true", "True", "TRUE", "yes", "Yes", "on", "On"};
    static const char *f[] = {"false", "False", "FALSE", "no", "No", "off", "Off"};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        if (strcmp(n->str, t[i]) == 0) {
            *out = true;
            return KV_OK;
        }
        if (strcmp(n->str, f[i]) == 0) {
            *out = false;
            return KV_OK;
        }
    }
    return yt_error(d, n, err, KV_EINVAL, "field '%s': expected true or false, got '%s'", what, n->str);
}

int yt_string(const yt_doc *d, const yt_node *n, const char *what, const char **out, kv_err *err)
{
    if (yt_expect_scalar(d, n, what, "a string", err))
        return KV_EINVAL;
    *out = n->str;
    return KV_OK;
}

bool yt_parse_duration(const char *s, double *seconds)
{
    char *end;
    double v = strtod(s, &end);
    if (end != s && *end == 0 && isfinite(v) && v >= 0) {
        *seconds = v;
        return true;
    }
    double total = 0;
    int parts = 0;
    while (*s) {
        v = strtod(s, &end);
        if (end == s || v < 0)
            return false;
        s = end;
        double unit;
        if (strncmp(s, "ns", 2) == 0) unit = 1e-9, s += 2;
        else if (strncmp(s, "us", 2) == 0) unit = 1e-6, s += 2;
        else if (strncmp(s, "ms", 2) == 0) unit = 1e-3, s += 2;
        else if (*s == 's') unit = 1, s += 1;
        else if (*s == 'm') unit = 60, s += 1;
        else if (*s == 'h') unit = 3600, s += 1;
        else return false;
        total += v * unit;
        parts++;
    }
    if (!parts)
        return false;
    *seconds = total;
    return true;
}

int yt_duration(const yt_doc *d, const yt_node *n, const char *what, double *seconds, kv_err *err)
{
    if (yt_expect_scalar(d, n, what, "a duration", err))
        return KV_EINVAL;
    if (yt_parse_duration(n->str, seconds))
        return KV_OK;
    return yt_error(d, n, err, KV_EINVAL,
                    "field '%s': expected a duration such as 50ms, 2s or 2m, got '%s'", what, n->str);
}

void yt_each_unused(const yt_node *map, void (*fn)(void *ctx, const char *key, const yt_node *keynode), void *ctx)
{
    if (!map || map->kind != YT_MAP)
        return;
    for (size_t i = 0; i < map->n; i++)
        if (!map->items[i]->used && !map->keynodes[i]->used)
            fn(ctx, map->keys[i], map->keynodes[i]);
}
