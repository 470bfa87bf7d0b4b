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

#include "manifests.h"
#include "grow.h"

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
        if (!copy || !grow_array((void **)&o->v, &o->cap, o->n + 1, sizeof *o->v)) {
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

/* One InferenceObjective manifest. */
static int load_object(void *ctx, const yt_doc *d, const yt_node *obj, const char *what, kv_err *err)
{
    const char *name;
    if (manifest_name(d, obj, what, "InferenceObjective", &name, err) != KV_OK)
        return KV_EINVAL;
    int64_t prio = 0;
    char field[128];
    snprintf(field, sizeof field, "%s.spec", what);
    if (yt_opt_int(d, yt_get(obj, "spec"), field, "priority", INT_MIN, INT_MAX, &prio, err) != KV_OK)
        return KV_EINVAL;
    return objectives_put(ctx, name, (int)prio, err);
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
    return manifests_load(arg, "--objectives", "InferenceObjective", load_object, o, err);
}
