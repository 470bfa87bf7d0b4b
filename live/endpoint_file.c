/* endpoint_file: file-discovery's endpoints file, parsed with yamltree (YAML and JSON
 * alike) for its positions, and the stat-polling watcher (see endpoint_file.h). */
#include "endpoint_file.h"
#include "yamltree.h"

/* Warnings go through a sched_env (its warn and warn_ctx only) so that sched_warn formats
 * them, as it does the config's. */

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* One entry as parsed; strings point into the document. */
typedef struct entry {
    const yt_node *node;
    const char *name, *ns;
    char addr[64];               /* "address:port" */
    sched_kv *labels;
    size_t n_labels;
} entry;

static int read_capped(const char *path, char **buf, size_t *len, kv_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kv_err_set(err, KV_EIO, "%s: %s", path, strerror(errno));
    char *b = malloc(EPFILE_MAX_BYTES + 1);
    if (!b) {
        fclose(f);
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(b, 1, EPFILE_MAX_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > EPFILE_MAX_BYTES) {
        free(b);
        return bad ? kv_err_set(err, KV_EIO, "%s: read error", path)
                   : kv_err_set(err, KV_EINVAL, "%s: larger than 1 MiB, llm-d-router's limit for an endpoints file",
                                path);
    }
    *buf = b;
    *len = n;
    return KV_OK;
}

static void each_unknown(void *ctx, const char *key, const yt_node *keynode)
{
    const void *const *a = ctx;   /* {sink, doc, path} */
    const sched_env *w = a[0];
    sched_warn(w, "%s:%d:%d: field '%s.%s': unknown field, ignored", yt_name(a[1]), keynode->line, keynode->col,
          (const char *)a[2], key);
}

static int parse_entry(const yt_doc *d, const yt_node *n, const char *what, entry *e, const sched_env *w,
                       kv_err *err)
{
    char f[96];
    e->node = n;
    if (n->kind != YT_MAP)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': expected a map {name, address, port, labels}", what);
    const yt_node *name = yt_get(n, "name"), *ns = yt_get(n, "namespace"), *addr = yt_get(n, "address"),
                  *port = yt_get(n, "port"), *mh = yt_get(n, "metricsHost"), *labels = yt_get(n, "labels");
    static const char *const required[] = {"name", "address", "port"};
    const yt_node *req[] = {name, addr, port};
    for (size_t i = 0; i < 3; i++)
        if (yt_is_null(req[i]))
            return yt_error(d, n, err, KV_EINVAL, "field '%s': missing field '%s'", what, required[i]);
    const char *a;
    int64_t p;
    e->ns = "default";
    snprintf(f, sizeof f, "%s.name", what);
    if (yt_string(d, name, f, &e->name, err))
        return KV_EINVAL;
    snprintf(f, sizeof f, "%s.namespace", what);
    if (!yt_is_null(ns) && yt_string(d, ns, f, &e->ns, err))
        return KV_EINVAL;
    snprintf(f, sizeof f, "%s.address", what);
    if (yt_string(d, addr, f, &a, err))
        return KV_EINVAL;
    struct in_addr ia;
    if (inet_pton(AF_INET, a, &ia) != 1)
        return yt_error(d, addr, err, KV_EINVAL,
                        "field '%s': '%s' is not an IPv4 address (file-discovery takes literal IPv4 addresses, "
                        "no host names)", f, a);
    snprintf(f, sizeof f, "%s.port", what);
    if (yt_int_range(d, port, f, 1, 65535, &p, err))
        return KV_EINVAL;
    snprintf(e->addr, sizeof e->addr, "%s:%d", a, (int)p);
    const char *m;
    snprintf(f, sizeof f, "%s.metricsHost", what);
    if (!yt_is_null(mh)) {
        if (yt_string(d, mh, f, &m, err))
            return KV_EINVAL;
        if (strcmp(m, e->addr))
            sched_warn(w, "%s:%d:%d: field '%s': '%s' is ignored: kvroute scrapes the endpoint's own address:port (%s)",
                  yt_name(d), mh->line, mh->col, f, m, e->addr);
    }
    if (!yt_is_null(labels)) {
        snprintf(f, sizeof f, "%s.labels", what);
        if (labels->kind != YT_MAP)
            return yt_error(d, labels, err, KV_EINVAL, "field '%s': expected a map of strings", f);
        if (!(e->labels = calloc(labels->n ? labels->n : 1, sizeof *e->labels)))
            return kv_err_set(err, KV_ENOMEM, "%s: out of memory", yt_name(d));
        for (size_t i = 0; i < labels->n; i++) {
            char lf[160];
            snprintf(lf, sizeof lf, "%s.%s", f, labels->keys[i]);
            labels->items[i]->used = true;
            if (yt_string(d, labels->items[i], lf, &e->labels[i].value, err))
                return KV_EINVAL;
            e->labels[i].key = labels->keys[i];
            e->n_labels++;
        }
    }
    const void *ctx[] = {w, d, what};
    yt_each_unused(n, each_unknown, ctx);
    return KV_OK;
}

/* Entries i and j (j < i) clash on name or on address:port: an error naming both lines. */
static int clash(const yt_doc *d, const entry *es, size_t i, kv_err *err)
{
    for (size_t j = 0; j < i; j++) {
        bool same_name = !strcmp(es[i].name, es[j].name), same_addr = !strcmp(es[i].addr, es[j].addr);
        if (same_name || same_addr)
            return yt_error(d, es[i].node, err, KV_EINVAL, "field 'endpoints[%zu]': %s '%s' is already endpoints[%zu]'s (line %d)",
                            i, same_name ? "name" : "address:port", same_name ? es[i].name : es[i].addr, j,
                            es[j].node->line);
    }
    return KV_OK;
}

int epfile_load(epset *s, const char *path, bool strict, void (*warn)(void *ctx, const char *msg), void *warn_ctx,
                kv_err *err)
{
    const sched_env w = {.warn = warn, .warn_ctx = warn_ctx};
    char *text = NULL;
    size_t len = 0;
    int rc = read_capped(path, &text, &len, err);
    if (rc)
        return rc;
    yt_doc *d = yt_load_string(text, len, path, err);
    free(text);
    if (!d)
        return KV_EINVAL;
    const yt_node *root = yt_root(d), *list = NULL;
    if (root && !yt_is_null(root)) {
        if (root->kind != YT_MAP) {
            rc = yt_error(d, root, err, KV_EINVAL, "(document): expected a map with 'endpoints'");
            yt_free(d);
            return rc;
        }
        list = yt_get(root, "endpoints");
        const void *ctx[] = {&w, d, "(document)"};
        yt_each_unused(root, each_unknown, ctx);
    }
    if (yt_is_null(list))
        list = NULL;
    if (list && list->kind != YT_SEQ) {
        rc = yt_error(d, list, err, KV_EINVAL, "field 'endpoints': expected a list of {name, address, port, labels}");
        list = NULL;
    }
    size_t n = list ? list->n : 0;
    entry *es = calloc(n ? n : 1, sizeof *es);
    ep_spec *specs = calloc(n ? n : 1, sizeof *specs);
    if (!es || !specs)
        rc = kv_err_set(err, KV_ENOMEM, "%s: out of memory", path);
    size_t k = 0;
    for (size_t i = 0; rc == KV_OK && i < n; i++) {
        char what[40];
        snprintf(what, sizeof what, "endpoints[%zu]", i);
        kv_err e1 = {0};
        int r = parse_entry(d, list->items[i], what, &es[k], &w, &e1);
        if (r == KV_OK)
            r = clash(d, es, k, &e1);
        if (r == KV_OK) {
            specs[k] = (ep_spec){.name = es[k].addr, .pod = es[k].name, .ns = es[k].ns, .labels = es[k].labels,
                                 .n_labels = es[k].n_labels};
            k++;
            continue;
        }
        free(es[k].labels);
        es[k] = (entry){0};
        if (strict || r == KV_ENOMEM)
            rc = kv_err_set(err, r, "%s", e1.msg);
        else
            sched_warn(&w, "%s (entry skipped)", e1.msg);
    }
    if (rc == KV_OK)
        rc = epset_sync(s, specs, k, err);
    for (size_t i = 0; i < n && es; i++)
        free(es[i].labels);
    free(es);
    free(specs);
    yt_free(d);
    return rc;
}

/* ---- the watcher ------------------------------------------------------------------------ */

typedef struct file_sig {
    bool present;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} file_sig;

static file_sig sig_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return (file_sig){0};
    return (file_sig){.present = true, .dev = st.st_dev, .ino = st.st_ino, .size = st.st_size,
                      .mtime = st.st_mtim, .ctime = st.st_ctim};
}

static bool sig_same(const file_sig *a, const file_sig *b)
{
    return a->present == b->present && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

struct epfile {
    epfile_config cfg;
    char *path;
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;          /* guards stop and reloads */
    pthread_cond_t cv;
    bool stop;
    unsigned long reloads;
    file_sig sig;                /* the file as last loaded; watcher thread only */
    file_sig seen;               /* as the previous poll saw it */
};

static void *watch_main(void *arg)
{
    epfile *w = arg;
    const sched_env ws = {.warn = w->cfg.warn, .warn_ctx = w->cfg.warn_ctx};
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        long ns = until.tv_nsec + (long)w->cfg.poll_ms * 1000000L;
        until.tv_sec += ns / 1000000000L;
        until.tv_nsec = ns % 1000000000L;
        pthread_cond_timedwait(&w->cv, &w->mu, &until);
        if (w->stop)
            break;
        pthread_mutex_unlock(&w->mu);
        /* A change is loaded once the file has stayed the same for one interval, so an edit
         * in place is not read between its truncation and its write. */
        file_sig now = sig_of(w->path);
        bool settled = !sig_same(&now, &w->sig) && sig_same(&now, &w->seen);
        w->seen = now;
        if (settled && !now.present)
            sched_warn(&ws, "%s: endpoints file is gone; keeping the %zu endpoints it listed", w->path,
                  epset_count(w->cfg.endpoints));
        kv_err err = {0};
        if (settled && now.present && epfile_load(w->cfg.endpoints, w->path, false, ws.warn, ws.warn_ctx, &err) != KV_OK)
            sched_warn(&ws, "%s; keeping the %zu endpoints loaded before", err.msg, epset_count(w->cfg.endpoints));
        if (settled)
            w->sig = now;
        pthread_mutex_lock(&w->mu);
        w->reloads += settled && now.present;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

epfile *epfile_start(const epfile_config *cfg, kv_err *err)
{
    epfile *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(cfg->path))) {
        free(w);
        kv_err_set(err, KV_ENOMEM, "endpoints file: out of memory");
        return NULL;
    }
    w->cfg = *cfg;
    w->cfg.path = w->path;
    if (w->cfg.poll_ms <= 0)
        w->cfg.poll_ms = 250;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    w->sig = w->seen = sig_of(w->path);   /* before the load: a change racing it is seen by the polls */
    if (epfile_load(cfg->endpoints, w->path, true, cfg->warn, cfg->warn_ctx, err) != KV_OK) {
        epfile_stop(w);
        return NULL;
    }
    if (cfg->watch) {
        int e = pthread_create(&w->thread, NULL, watch_main, w);
        if (e) {
            kv_err_set(err, KV_EIO, "endpoints file watcher: %s", strerror(e));
            epfile_stop(w);
            return NULL;
        }
        w->running = true;
    }
    return w;
}

unsigned long epfile_reloads(epfile *w)
{
    pthread_mutex_lock(&w->mu);
    unsigned long n = w->reloads;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void epfile_stop(epfile *w)
{
    if (!w)
        return;
    if (w->running) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->path);
    free(w);
}
