/* manifests: per-object loading of `kubectl apply -f` files (see manifests.h). */
#include "manifests.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct loader {
    const char *kind;
    manifest_fn fn;
    void *ctx;
} loader;

int manifest_name(const yt_doc *d, const yt_node *obj, const char *what, const char *kind, const char **name,
                  kv_err *err)
{
    const yt_node *k = yt_get(obj, "kind");
    const char *ks = NULL;
    char field[128];
    snprintf(field, sizeof field, "%s.kind", what);
    if (!yt_is_null(k) && (yt_string(d, k, field, &ks, err) != KV_OK || strcmp(ks, kind)))
        return ks ? yt_error(d, k, err, KV_EINVAL, "field '%s': expected %s, got '%s'", field, kind, ks) : KV_EINVAL;
    snprintf(field, sizeof field, "%s.metadata.name", what);
    const yt_node *md = yt_get(obj, "metadata"), *nm = yt_get(md, "name");
    if (yt_is_null(nm))
        return yt_error(d, md ? md : obj, err, KV_EINVAL, "field '%s': required", field);
    return yt_string(d, nm, field, name, err) == KV_OK ? KV_OK : KV_EINVAL;
}

static int load_doc(const loader *l, const char *text, size_t len, const char *name, kv_err *err)
{
    yt_doc *d = yt_load_string(text, len, name, err);
    if (!d)
        return KV_EINVAL;
    const yt_node *root = yt_root(d), *items = yt_get(root, "items");
    int rc = KV_OK;
    if (!root) {
        /* an empty document between separators */
    } else if (root->kind != YT_MAP) {
        rc = yt_error(d, root, err, KV_EINVAL, "expected an %s manifest (a map)", l->kind);
    } else if (items) {
        if (items->kind != YT_SEQ)
            rc = yt_error(d, items, err, KV_EINVAL, "field 'items': expected a list");
        for (size_t i = 0; rc == KV_OK && items->kind == YT_SEQ && i < items->n; i++) {
            char what[32];
            snprintf(what, sizeof what, "items[%zu]", i);
            rc = l->fn(l->ctx, d, items->items[i], what, err);
        }
    } else {
        rc = l->fn(l->ctx, d, root, l->kind, err);
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

static int load_text(const loader *l, const char *text, const char *path, kv_err *err)
{
    const char *doc = text;
    for (int idx = 1;; idx++) {
        const char *sep = doc_separator(doc);
        char name[600];
        snprintf(name, sizeof name, idx == 1 && !sep ? "%s" : "%s (document %d)", path, idx);
        int rc = load_doc(l, doc, sep ? (size_t)(sep - doc) : strlen(doc), name, err);
        if (rc != KV_OK || !sep)
            return rc;
        const char *nl = strchr(sep, '\n');
        doc = nl ? nl + 1 : sep + 3;
    }
}

int manifests_load(const char *path, const char *flag, const char *kind, manifest_fn fn, void *ctx, kv_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return kv_err_set(err, KV_EIO, "%s %s: %s", flag, path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    char chunk[4096];
    int rc = KV_OK;
    while (rc == KV_OK && (got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + got + 1 > cap) {
            cap = 2 * (len + got + 1);
            char *g = realloc(buf, cap);
            if (!g)
                rc = kv_err_set(err, KV_ENOMEM, "%s %s: out of memory", flag, path);
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
        rc = kv_err_set(err, KV_EIO, "%s %s: read error", flag, path);
    fclose(f);
    loader l = {kind, fn, ctx};
    if (rc == KV_OK)
        rc = load_text(&l, buf ? buf : "", path, err);
    free(buf);
    return rc;
}
