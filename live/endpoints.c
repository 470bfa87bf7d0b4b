/* endpoints: the live endpoint set (see endpoints.h). Entries are heap objects so a
 * sched_endpoint's address is stable across syncs; the pointer array handed to the
 * scheduler is rebuilt on every sync. */
#include "endpoints.h"
#include "grow.h"
#include "monoclock.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct ep_entry {
    sched_endpoint ep;            /* strings below; ep.m's LoRA arrays point into loras */
    char *name, *pod, *ns;
    sched_kv *labels;
    size_t n_labels;
    bool scraped;
    double scraped_at;
    char **loras;                 /* running adapters, then waiting ones */
    const char **lora_ptrs;
    size_t n_loras;
} ep_entry;

struct epset {
    pthread_mutex_t mu;           /* guards everything below */
    ep_entry **entries;
    sched_endpoint **ptrs;
    size_t n;
    uint32_t next_id;
    uint64_t generation;
    double stale_s;
    double (*now)(void *ctx);
    void *now_ctx;
};

#define LOCK(s) pthread_mutex_lock((pthread_mutex_t *)&(s)->mu)
#define UNLOCK(s) pthread_mutex_unlock((pthread_mutex_t *)&(s)->mu)

epset *epset_new(double stale_s, double (*now)(void *ctx), void *now_ctx, kv_err *err)
{
    epset *s = calloc(1, sizeof *s);
    if (!s) {
        kv_err_set(err, KV_ENOMEM, "endpoints: out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->stale_s = stale_s > 0 ? stale_s : 2.0;
    s->now = now ? now : monoclock_now;
    s->now_ctx = now_ctx;
    return s;
}

static void loras_free(ep_entry *e)
{
    for (size_t i = 0; i < e->n_loras; i++)
        free(e->loras[i]);
    free(e->loras);
    free(e->lora_ptrs);
    e->loras = NULL;
    e->lora_ptrs = NULL;
    e->n_loras = 0;
}

static void labels_free(ep_entry *e)
{
    for (size_t i = 0; i < e->n_labels; i++) {
        free((char *)e->labels[i].key);
        free((char *)e->labels[i].value);
    }
    free(e->labels);
    e->labels = NULL;
    e->n_labels = 0;
}

static void entry_free(ep_entry *e)
{
    if (!e)
        return;
    loras_free(e);
    labels_free(e);
    free(e->name);
    free(e->pod);
    free(e->ns);
    free(e);
}

void epset_free(epset *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        entry_free(s->entries[i]);
    free(s->entries);
    free(s->ptrs);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* "ip:port" with a non-empty host and a port in 1..65535. */
static bool valid_addr(const char *name)
{
    const char *colon = strrchr(name, ':');
    if (!colon || colon == name || !colon[1] || strlen(name) > 255)
        return false;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    return !*end && !errno && port >= 1 && port <= 65535;
}

static int set_labels(ep_entry *e, const sched_kv *labels, size_t n)
{
    labels_free(e);
    if (!n)
        return KV_OK;
    if (!(e->labels = calloc(n, sizeof *e->labels)))
        return KV_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        e->labels[i].key = strdup(labels[i].key);
        e->labels[i].value = strdup(labels[i].value ? labels[i].value : "");
        e->n_labels = i + 1;
        if (!e->labels[i].key || !e->labels[i].value)
            return KV_ENOMEM;
    }
    return KV_OK;
}

static ep_entry *entry_new(const ep_spec *sp, uint32_t id)
{
    ep_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->name = strdup(sp->name);
    e->pod = strdup(sp->pod ? sp->pod : sp->name);
    e->ns = strdup(sp->ns ? sp->ns : "");
    if (!e->name || !e->pod || !e->ns || set_labels(e, sp->labels, sp->n_labels)) {
        entry_free(e);
        return NULL;
    }
    e->ep = (sched_endpoint){.id = id, .name = e->name, .pod = e->pod, .ns = e->ns};
    return e;
}

static ep_entry *find_locked(const epset *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->entries[i]->name, name))
            return s->entries[i];
    return NULL;
}

int epset_sync(epset *s, const ep_spec *specs, size_t n, kv_err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!specs[i].name || !valid_addr(specs[i].name))
            return kv_err_set(err, KV_EINVAL, "endpoints: entry %zu '%s' is not ip:port", i,
                              specs[i].name ? specs[i].name : "(null)");
        for (size_t j = 0; j < i; j++)
            if (!strcmp(specs[i].name, specs[j].name))
                return kv_err_set(err, KV_EINVAL, "endpoints: entry %zu '%s' is listed twice", i, specs[i].name);
    }
    ep_entry **ents = calloc(n ? n : 1, sizeof *ents);
    sched_endpoint **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!ents || !ptrs) {
        free(ents);
        free(ptrs);
        return kv_err_set(err, KV_ENOMEM, "endpoints: out of memory");
    }
    LOCK(s);
    /* New entries first, so running out of memory leaves the set as it was. */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        ep_entry *old = find_locked(s, specs[i].name);
        if (old) {
            kept++;
            continue;
        }
        if (!(ents[i] = entry_new(&specs[i], s->next_id + (uint32_t)i))) {
            for (size_t j = 0; j <= i; j++)
                if (!find_locked(s, specs[j].name))
                    entry_free(ents[j]);
            UNLOCK(s);
            free(ents);
            free(ptrs);
            return kv_err_set(err, KV_ENOMEM, "endpoints: out of memory");
        }
    }
    bool changed = kept != s->n || kept != n;
    for (size_t i = 0; i < n; i++) {
        if (!ents[i]) {
            ents[i] = find_locked(s, specs[i].name);
            const char *pod = specs[i].pod ? specs[i].pod : specs[i].name;
            if (strcmp(ents[i]->pod, pod)) {
                char *p = strdup(pod);
                if (p) {
                    free(ents[i]->pod);
                    ents[i]->ep.pod = ents[i]->pod = p;
                }
            }
            /* A failed label copy leaves the endpoint without labels rather than half. */
            if (set_labels(ents[i], specs[i].labels, specs[i].n_labels))
                labels_free(ents[i]);
        }
        ents[i]->ep.labels = ents[i]->labels;
        ents[i]->ep.n_labels = ents[i]->n_labels;
        ptrs[i] = &ents[i]->ep;
    }
    for (size_t i = 0; i < s->n; i++) {
        bool stays = false;
        for (size_t j = 0; j < n && !stays; j++)
            stays = ents[j] == s->entries[i];
        if (!stays)
            entry_free(s->entries[i]);
    }
    s->next_id += (uint32_t)n;
    free(s->entries);
    free(s->ptrs);
    s->entries = ents;
    s->ptrs = ptrs;
    s->n = n;
    s->generation += changed;
    UNLOCK(s);
    return KV_OK;
}

int epset_parse_list(epset *s, const char *text, const char *what, kv_err *err)
{
    char *copy = strdup(text);
    ep_spec *specs = NULL;
    size_t n = 0, cap = 0;
    int rc = KV_OK;
    if (!copy)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", what);
    int line = 1;
    for (char *p = copy; *p;) {
        if (*p == '#') {
            p += strcspn(p, "\n");
            continue;
        }
        if (*p == '\n')
            line++;
        if (strchr(", \t\r\n", *p)) {
            *p++ = 0;
            continue;
        }
        char *item = p;
        p += strcspn(p, ", \t\r\n#");
        char saved = *p;
        *p = 0;
        if (!valid_addr(item)) {
            rc = kv_err_set(err, KV_EINVAL, "%s:%d: '%s' is not ip:port", what, line, item);
            break;
        }
        if (!grow_array((void **)&specs, &cap, n + 1, sizeof *specs)) {
            rc = kv_err_set(err, KV_ENOMEM, "%s: out of memory", what);
            break;
        }
        specs[n++] = (ep_spec){.name = item};
        if (!saved)
            break;
        p++;   /* past the terminator, which stays NUL: it ends the item */
        if (saved == '#')
            p += strcspn(p, "\n");
        else
            line += saved == '\n';
    }
    if (rc == KV_OK && !n)
        rc = kv_err_set(err, KV_EINVAL, "%s: no endpoint given", what);
    if (rc == KV_OK && (rc = epset_sync(s, specs, n, err)) != KV_OK)
        kv_err_prefix(err, "%s: ", what);
    free(specs);
    free(copy);
    return rc;
}

int epset_load_file(epset *s, const char *path, kv_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return kv_err_set(err, KV_EIO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    int rc = m ? KV_OK : kv_err_set(err, KV_ENOMEM, "%s: out of memory", path);
    char chunk[4096];
    size_t got;
    while (rc == KV_OK && (got = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, got, m);
    if (rc == KV_OK && ferror(f))
        rc = kv_err_set(err, KV_EIO, "%s: read error", path);
    fclose(f);
    if (m)
        fclose(m);
    if (rc == KV_OK)
        rc = epset_parse_list(s, buf, path, err);
    free(buf);
    return rc;
}

size_t epset_acquire(void *ctx, sched_endpoint *const **eps)
{
    epset *s = ctx;
    LOCK(s);
    double now = s->now(s->now_ctx);
    for (size_t i = 0; i < s->n; i++) {
        ep_entry *e = s->entries[i];
        e->ep.m.valid = e->scraped && now - e->scraped_at <= s->stale_s;
    }
    *eps = s->ptrs;
    return s->n;
}

void epset_release(void *ctx) { UNLOCK((epset *)ctx); }

double epset_metrics_age(void *ctx, const sched_endpoint *ep)
{
    epset *s = ctx;
    const ep_entry *e = (const ep_entry *)ep; /* ep is an entry's first member */
    return e->scraped ? s->now(s->now_ctx) - e->scraped_at : INFINITY;
}

uint64_t epset_generation(const epset *s)
{
    LOCK(s);
    uint64_t g = s->generation;
    UNLOCK(s);
    return g;
}

size_t epset_count(const epset *s)
{
    LOCK(s);
    size_t n = s->n;
    UNLOCK(s);
    return n;
}

void epset_snap_free(epset_snap *snap)
{
    for (size_t i = 0; i < snap->n; i++)
        free(snap->names[i]);
    free(snap->names);
    *snap = (epset_snap){0};
}

int epset_snapshot(const epset *s, epset_snap *out, kv_err *err)
{
    *out = (epset_snap){0};
    LOCK(s);
    out->generation = s->generation;
    out->names = calloc(s->n ? s->n : 1, sizeof *out->names);
    int rc = out->names ? KV_OK : KV_ENOMEM;
    for (size_t i = 0; rc == KV_OK && i < s->n; i++, out->n++)
        if (!(out->names[i] = strdup(s->entries[i]->name)))
            rc = KV_ENOMEM;
    UNLOCK(s);
    if (rc) {
        epset_snap_free(out);
        return kv_err_set(err, rc, "endpoints: out of memory taking a snapshot");
    }
    return KV_OK;
}

bool epset_snap_has(const epset_snap *snap, const char *name)
{
    for (size_t i = 0; i < snap->n; i++)
        if (!strcmp(snap->names[i], name))
            return true;
    return false;
}

static int copy_loras(ep_entry *e, const sched_metrics *m)
{
    size_t n = m->n_running_loras + m->n_waiting_loras;
    loras_free(e);
    if (!n)
        return KV_OK;
    e->loras = calloc(n, sizeof *e->loras);
    e->lora_ptrs = calloc(n, sizeof *e->lora_ptrs);
    if (!e->loras || !e->lora_ptrs)
        return KV_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *src = i < m->n_running_loras ? m->running_loras[i] : m->waiting_loras[i - m->n_running_loras];
        if (!(e->loras[i] = strdup(src)))
            return KV_ENOMEM;
        e->lora_ptrs[i] = e->loras[i];
        e->n_loras = i + 1;
    }
    return KV_OK;
}

bool epset_set_metrics(epset *s, const char *name, const sched_metrics *m)
{
    LOCK(s);
    ep_entry *e = find_locked(s, name);
    if (e) {
        e->ep.m = *m;
        if (copy_loras(e, m) == KV_OK) {
            e->ep.m.running_loras = e->lora_ptrs;
            e->ep.m.waiting_loras = e->lora_ptrs ? e->lora_ptrs + m->n_running_loras : NULL;
        } else {
            loras_free(e);
            e->ep.m.n_running_loras = e->ep.m.n_waiting_loras = 0;
            e->ep.m.running_loras = e->ep.m.waiting_loras = NULL;
        }
        e->scraped = true;
        e->scraped_at = s->now(s->now_ctx);
        e->ep.m.valid = true;
    }
    UNLOCK(s);
    return e != NULL;
}

/* Length of the host part of "host:port" (the whole string when there is no port). */
static size_t host_len(const char *s, size_t len)
{
    for (size_t i = len; i-- > 0;)
        if (s[i] == ':')
            return i;
    return len;
}

static int port_of(const char *name)
{
    const char *c = strrchr(name, ':');
    return c ? atoi(c + 1) : 0;
}

epset_match epset_match_pod(const epset *s, const char *pod, size_t len, char *name, size_t cap)
{
    epset_match r = EPSET_NO_MATCH;
    const char *best = NULL;
    bool pod_has_port = memchr(pod, ':', len) != NULL;
    size_t hl = host_len(pod, len);
    LOCK(s);
    for (size_t i = 0; i < s->n; i++) {
        const char *n = s->entries[i]->name;
        size_t nl = strlen(n);
        if (nl == len && !memcmp(n, pod, len)) {
            best = n;
            r = EPSET_EXACT;
            break;
        }
        if (host_len(n, nl) == hl && !memcmp(n, pod, hl)) {
            if (!best || port_of(n) < port_of(best))
                best = n;
        }
    }
    if (r != EPSET_EXACT && best && !pod_has_port)
        r = EPSET_LOOSE;
    if (r != EPSET_NO_MATCH)
        snprintf(name, cap, "%s", best);
    UNLOCK(s);
    return r;
}

/* Position of the endpoint name among the endpoints of its host, by port (locked). The
 * name of the endpoint at position want is copied to out when want >= 0. -1 when name is
 * not in the set. */
static int rank_locked(const epset *s, const char *name, int64_t want, char *out, size_t cap)
{
    size_t nl = strlen(name), hl = host_len(name, nl);
    int port = port_of(name), k = -1;
    bool found = false;
    for (size_t i = 0; i < s->n; i++) {
        const char *n = s->entries[i]->name;
        if (host_len(n, strlen(n)) != hl || memcmp(n, name, hl))
            continue;
        found |= !strcmp(n, name);
        k += port_of(n) <= port;
    }
    if (!found)
        return -1;
    for (size_t i = 0; want >= 0 && i < s->n; i++) {
        const char *n = s->entries[i]->name;
        if (host_len(n, strlen(n)) != hl || memcmp(n, name, hl))
            continue;
        size_t below = 0;
        for (size_t j = 0; j < s->n; j++) {
            const char *m = s->entries[j]->name;
            below += host_len(m, strlen(m)) == hl && !memcmp(m, name, hl) && port_of(m) < port_of(n);
        }
        if ((int64_t)below == want)
            snprintf(out, cap, "%s", n);
    }
    return k;
}

int epset_rank_index(const epset *s, const char *name)
{
    LOCK(s);
    int k = rank_locked(s, name, -1, NULL, 0);
    UNLOCK(s);
    return k;
}

bool epset_match_rank(const epset *s, const char *name, int64_t rank, char *out, size_t cap)
{
    snprintf(out, cap, "%s", name);
    if (rank <= 0)
        return true;   /* the common case, once per batch: no lock, no scan */
    out[0] = 0;
    LOCK(s);
    int k = rank_locked(s, name, rank, out, cap);
    UNLOCK(s);
    if (k != 0) {   /* the topic names its own rank: itself */
        snprintf(out, cap, "%s", name);
        return k >= 0;
    }
    return out[0] != 0;
}

void epset_get_summary(epset *s, epset_summary *out)
{
    *out = (epset_summary){0};
    LOCK(s);
    double now = s->now(s->now_ctx);
    out->ready = s->n;
    for (size_t i = 0; i < s->n; i++) {
        ep_entry *e = s->entries[i];
        if (!e->scraped || now - e->scraped_at > s->stale_s)
            continue;
        out->with_metrics++;
        out->avg_kv_usage += e->ep.m.kv_usage;
        out->avg_waiting += e->ep.m.waiting;
    }
    if (out->with_metrics) {
        out->avg_kv_usage /= (double)out->with_metrics;
        out->avg_waiting /= (double)out->with_metrics;
    }
    UNLOCK(s);
}
