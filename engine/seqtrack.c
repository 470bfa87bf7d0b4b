/* seqtrack: last sequence number per pod, in a linear-probing table keyed by the pod id
 * (FNV-1a). Deletions leave tombstones, which the next resize drops. */
#include "seqtrack.h"

#include <stdlib.h>
#include <string.h>

typedef struct slot {
    char *pod;          /* NULL: empty; TOMBSTONE: deleted */
    size_t len;
    uint64_t hash;
    uint64_t last;
} slot;

static char tombstone_mark;
#define TOMBSTONE (&tombstone_mark)

struct seqtrack {
    slot *slots;
    size_t cap;         /* power of two */
    size_t used;        /* live + tombstones */
    size_t live;
    seqtrack_stats stats;
};

static const char *const STATUS_NAMES[SEQTRACK_STATUS_COUNT] = {"first", "in_order", "duplicate", "gap", "restart"};

const char *seqtrack_status_name(seqtrack_status s)
{
    return (unsigned)s < SEQTRACK_STATUS_COUNT ? STATUS_NAMES[s] : "unknown";
}

static uint64_t pod_hash(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 0x100000001b3ULL;
    return h;
}

seqtrack *seqtrack_new(kv_err *err)
{
    seqtrack *t = calloc(1, sizeof *t);
    if (t) {
        t->cap = 16;
        t->slots = calloc(t->cap, sizeof *t->slots);
    }
    if (!t || !t->slots) {
        free(t);
        kv_err_set(err, KV_ENOMEM, "seqtrack: out of memory");
        return NULL;
    }
    return t;
}

void seqtrack_free(seqtrack *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].pod && t->slots[i].pod != TOMBSTONE) free(t->slots[i].pod);
    free(t->slots);
    free(t);
}

/* The live slot holding pod, or NULL. */
static slot *find(const seqtrack *t, const char *pod, size_t len, uint64_t h)
{
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        slot *s = &t->slots[i];
        if (!s->pod) return NULL;
        if (s->pod != TOMBSTONE && s->hash == h && s->len == len && memcmp(s->pod, pod, len) == 0) return s;
    }
}

static int grow(seqtrack *t)
{
    size_t cap = t->live * 4 >= t->cap ? t->cap * 2 : t->cap;   /* else just drop tombstones */
    slot *ns = calloc(cap, sizeof *ns);
    if (!ns) return KV_ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        slot *s = &t->slots[i];
        if (!s->pod || s->pod == TOMBSTONE) continue;
        size_t j = s->hash & (cap - 1);
        while (ns[j].pod) j = (j + 1) & (cap - 1);
        ns[j] = *s;
    }
    free(t->slots);
    t->slots = ns;
    t->cap = cap;
    t->used = t->live;
    return KV_OK;
}

static slot *insert(seqtrack *t, const char *pod, size_t len, uint64_t h)
{
    if ((t->used + 1) * 10 > t->cap * 7 && grow(t)) return NULL;
    char *copy = malloc(len + 1);
    if (!copy) return NULL;
    memcpy(copy, pod, len);
    copy[len] = 0;
    size_t i = h & (t->cap - 1);
    while (t->slots[i].pod && t->slots[i].pod != TOMBSTONE) i = (i + 1) & (t->cap - 1);
    if (!t->slots[i].pod) t->used++;
    t->slots[i] = (slot){copy, len, h, 0};
    t->live++;
    t->stats.pods = t->live;
    return &t->slots[i];
}

int seqtrack_observe(seqtrack *t, const char *pod, size_t pod_len, uint64_t seq, seqtrack_result *out, kv_err *err)
{
    uint64_t h = pod_hash(pod, pod_len);
    slot *s = find(t, pod, pod_len, h);
    seqtrack_result r = {0};
    if (!s) {
        s = insert(t, pod, pod_len, h);
        if (!s) return kv_err_set(err, KV_ENOMEM, "seqtrack: out of memory adding pod \"%.*s\"", (int)pod_len, pod);
        r.status = SEQTRACK_FIRST;
        r.missed = seq;
    } else {
        r.last = s->last;
        if (seq == s->last + 1) {
            r.status = SEQTRACK_IN_ORDER;
        } else if (seq == s->last) {
            r.status = SEQTRACK_DUPLICATE;
        } else if (seq > s->last) {
            r.status = SEQTRACK_GAP;
            r.missed = seq - s->last - 1;
            r.replay_from = s->last + 1;
            t->stats.missed += r.missed;
        } else {
            r.status = SEQTRACK_RESTART;
            r.missed = seq;
        }
    }
    s->last = seq;
    t->stats.by_status[r.status]++;
    if (out) *out = r;
    return KV_OK;
}

bool seqtrack_last(const seqtrack *t, const char *pod, size_t pod_len, uint64_t *seq)
{
    const slot *s = find(t, pod, pod_len, pod_hash(pod, pod_len));
    if (s && seq) *seq = s->last;
    return s != NULL;
}

void seqtrack_forget(seqtrack *t, const char *pod, size_t pod_len)
{
    slot *s = find(t, pod, pod_len, pod_hash(pod, pod_len));
    if (!s) return;
    free(s->pod);
    s->pod = TOMBSTONE;
    t->live--;
    t->stats.pods = t->live;
}

void seqtrack_get_stats(const seqtrack *t, seqtrack_stats *out)
{
    *out = t->stats;
}
