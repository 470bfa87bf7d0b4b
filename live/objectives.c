/* objectives: InferenceObjective name -> priority (see objectives.h). A small array
 * under a mutex: pools have a handful of objectives, and a request asks once. */
#include "objectives.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yamltree.h"

typedef struct entry {
    char *name;
    int priority;
} entry;

struct objectives {
    pthread_mutex_t mu;
    entry *v;
    size_t n, cap;
};

objectives *objectives_new(kv_err *err)
{
    objectives *o = calloc(1, sizeof *o);
    if (!o) {
        kv_err_set(err, KV_ENOMEM, "objectives: out of memory");
        return NULL;
    }
    pthread_mutex_init(&o->mu, NULL);
    return o;
}

static void entries_free(entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

void objectives_free(objectives *o)
{
    if (!o)
        return;
    entries_free(o->v, o->n);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

static entry *find(objectives *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->v[i].name, name))
            return &o->v[i];
    return NULL;
}

int objectives_put(objectives *o, const char *name, int priority, kv_err *err)
{
    int rc = KV_OK;
    pthread_mutex_lock(&o->mu);
    entry *e = find(o, name);
    if (e) {
        e->priority = priority;
    } else {
        char *copy = strdup(name);
        if (copy && o->n == o->cap) {
            size_t cap = o->cap ? 2 * o->cap : 8;
            entry *g = realloc(o->v, cap * sizeof *g);
            if (g)
                o->v = g, o->cap = cap;
        }
        if (!copy || o->n == o->cap) {
            free(copy);
            rc = kv_err_set(err, KV_ENOMEM, "objectives: out of memory");
        } else {
            o->v[o->n++] = (entry){copy, priority};
        }
    }
    pthread_mutex_unlock(&o->mu);
    return rc;
}

void objectives_remove(objectives *o, const char *name)
{
    pthread_mutex_lock(&o->mu);
    entry *e = find(o, name);
    if (e) {
        free(e->name);
        *e = o->v[--o->n];
    }
    pthread_mutex_unlock(&o->mu);
}

int objectives_sync(objectives *o, const objective_spec *specs, size_t n, kv_err *err)
{
    entry *v = calloc(n ? n : 1, sizeof *v);
    if (!v)
        return kv_err_set(err, KV_ENOMEM, "objectives: out of memory");
    for (size_t i = 0; i < n; i++) {
        v[i] = (entry){strdup(specs[i].name), specs[i].priority};
        if (!v[i].name) {
            entries_free(v, i);
            return kv_err_set(err, KV_ENOMEM, "objectives: out of memory");
        }
    }
    pthread_mutex_lock(&o->mu);
    entry *old = o->v;
    size_t old_n = o->n;
    o->v = v, o->n = n, o->cap = n ? n : 1;
    pthread_mutex_unlock(&o->mu);
    entries_free(old, old_n);
    return KV_OK;
}

bool objectives_priority(objectives *o, const char *name, int *priority)
{
    *priority = 0;
    if (!name || !*name)
        return false;
    pthread_mutex_lock(&o->mu);
    entry *e = find(o, name);
    if (e)
        *priority = e->priority;
    pthread_mutex_unlock(&o->mu);
    return e != NULL;
}

size_t objectives_count(objectives *o)
{
    pthread_mutex_lock(&o->mu);
    size_t n = o->n;
    pthread_mutex_unlock(&o->mu);
    return n;
}

/* ---- --objectives ------------------------------------------------------------------------- */

/* One InferenceObjective manifest (kind may be omitted; anything else is an error). */
static int load_object(objectives *o, const yt_doc *d, const yt_node *obj, const char *what, kv_err *err)
{
    const yt_node *kind = yt_get(obj, "kind");
    const char *k = NULL;
    if (!yt_is_null(kind) && (yt_string(d, kind, what, &k, err) != KV_OK || strcmp(k, "InferenceObjective")))
        return k ? yt_error(d, kind, err, KV_EINVAL, "field '%s.kind': expected InferenceObjective, got '%s'", what, k)
                 : KV_EINVAL;
    const char *name;
    char field[128];
    snprintf(field, sizeof field, "%s.metadata.name", what);
    const yt_node *md = yt_get(obj, "metadata"), *nm = yt_get(md, "name");
    if (yt_is_null(nm))
        return yt_error(d, md ? md : obj, err, KV_EINVAL, "field '%s': required", field);
    if (yt_string(d, nm, field, &name, err) != KV_OK)
        return KV_EINVAL;
    int64_t prio = 0;
    snprintf(field, sizeof field, "%s.spec", what);
    if (yt_opt_int(d, yt_get(obj, "spec"), field, "priority", INT_MIN, INT_MAX, &prio, err) != KV_OK)
        return KV_EINVAL;
    return objectives_put(o, name, (int)prio, err);
}

static int load_doc(objectives *o, const char *text, size_t len, const char *name, kv_err *err)
{
    yt_doc *d = yt_load_string(text, len, name, err);
    if (!d)
        return KV_EINVAL;
    const yt_node *root = yt_root(d), *items = yt_get(root, "items");
    int rc = KV_OK;
    if (!root) {
        /* an empty document between separators */
    } else if (root->kind != YT_MAP) {
        rc = yt_error(d, root, err, KV_EINVAL, "expected an InferenceObjective manifest (a map)");
    } else if (items) {
        if (items->kind != YT_SEQ)
            rc = yt_error(d, items, err, KV_EINVAL, "field 'items': expected a list");
        for (size_t i = 0; rc == KV_OK && items->kind == YT_SEQ && i < items->n; i++) {
            char what[32];
            snprintf(what, sizeof what, "items[%zu]", i);
            rc = load_object(o, d, items->items[i], what, err);
        }
    } else {
        rc = load_object(o, d, root, "InferenceObjective", err);
    }
    yt_free(d);
    return rc;
}

/* The first line at or after text that is exactly "---", or NULL. */
static const char *doc_separator(const char *text)
{
    for (const char *l = text; *l;) {
        if (!strncmp(l, "---", 3) && (l[3] == '\n' || l[3] == '\r' || !l[3]))
            return l;
        const char *nl = strchr(l, '\n');
        if (!nl)
            break;
        l = nl + 1;
    }
    return NULL;
}

/* Splits on "---" lines; each document keeps its own line numbers, so messages name
 * "file (document N)" when there are several. */
static int load_text(objectives *o, const char *text, const char *path, kv_err *err)
{
    const char *doc = text;
    for (int idx = 1;; idx++) {
        const char *sep = doc_separator(doc);
        char name[600];
        snprintf(name, sizeof name, idx == 1 && !sep ? "%s" : "%s (document %d)", path, idx);
        int rc = load_doc(o, doc, sep ? (size_t)(sep - doc) : strlen(doc), name, err);
        if (rc != KV_OK || !sep)
            return rc;
        const char *nl = strchr(sep, '\n');
        doc = nl ? nl + 1 : sep + 3;
    }
}

static int load_inline(objectives *o, const char *list, kv_err *err)
{
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        char item[300];
        snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item - 1 ? len : sizeof item - 1), p);
        char *eq = strchr(item, '='), *end = NULL;
        long v = 0;
        if (eq) {
            errno = 0;
            v = strtol(eq + 1, &end, 10);
        }
        if (!eq || eq == item || !eq[1] || *end || errno || v < INT_MIN || v > INT_MAX)
            return kv_err_set(err, KV_EINVAL, "--objectives: '%s' is not name=priority (an integer)", item);
        *eq = 0;
        if (objectives_put(o, item, (int)v, err) != KV_OK)
            return KV_ENOMEM;
        p += len + (p[len] == ',');
    }
    return KV_OK;
}

int objectives_load(objectives *o, const char *arg, kv_err *err)
{
    if (access(arg, R_OK) != 0)
        return load_inline(o, arg, err);
    FILE *f = fopen(arg, "r");
    if (!f)
        return kv_err_set(err, KV_EIO, "--objectives %s: %s", arg, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    char chunk[4096];
    int rc = KV_OK;
    while (rc == KV_OK && (got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + got + 1 > cap) {
            cap = 2 * (len + got + 1);
            char *g = realloc(buf, cap);
            if (!g)
                rc = kv_err_set(err, KV_ENOMEM, "--objectives %s: out of memory", arg);
            else
                buf = g;
        }
        if (rc == KV_OK) {
            memcpy(buf + len, chunk, got);
            len += got;
            buf[len] = 0;
        }
    }
    if (rc == KV_OK && ferror(f))
        rc = kv_err_set(err, KV_EIO, "--objectives %s: read error", arg);
    fclose(f);
    if (rc == KV_OK)
        rc = load_text(o, buf ? buf : "", arg, err);
    free(buf);
    return rc;
}
