/* breaker: per-endpoint circuit breakers (see breaker.h). One small array of entries,
 * searched linearly: a pool has tens of endpoints, and an entry is only created by a
 * failure, so an endpoint that never failed costs nothing. */
#include "breaker.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *ep;
    breaker_state st;
    int consecutive;            /* failures since the last success */
    double open_until;          /* open: the cool-down's end; half-open with the probe
                                   out: when another probe may go */
    bool probe_sent;            /* half-open: the probe is out */
} entry;

struct breaker {
    pthread_mutex_t mu;
    int failures;
    double cooldown_s;
    entry *e;
    size_t n, cap;
    uint64_t opens;
};

breaker *breaker_new(int failures, double cooldown_s, kv_err *err)
{
    if (failures < 1 || !(cooldown_s > 0)) {
        kv_err_set(err, KV_EINVAL, "circuit breaker: failures must be >= 1 and the cool-down > 0 (got %d, %g)",
                   failures, cooldown_s);
        return NULL;
    }
    breaker *b = calloc(1, sizeof *b);
    if (!b) {
        kv_err_set(err, KV_ENOMEM, "circuit breaker: out of memory");
        return NULL;
    }
    *b = (breaker){.failures = failures, .cooldown_s = cooldown_s};
    pthread_mutex_init(&b->mu, NULL);
    return b;
}

void breaker_free(breaker *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        free(b->e[i].ep);
    free(b->e);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* ep's entry (caller holds mu); with create, a closed one is added when missing (NULL
 * when memory runs out: the endpoint then simply stays closed). */
static entry *find(breaker *b, const char *ep, bool create)
{
    for (size_t i = 0; i < b->n; i++)
        if (!strcmp(b->e[i].ep, ep))
            return &b->e[i];
    if (!create)
        return NULL;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        entry *e = realloc(b->e, cap * sizeof *e);
        if (!e)
            return NULL;
        b->e = e, b->cap = cap;
    }
    char *name = strdup(ep);
    if (!name)
        return NULL;
    b->e[b->n] = (entry){.ep = name, .st = BREAKER_CLOSED};
    return &b->e[b->n++];
}

bool breaker_allows(breaker *b, const char *ep, double now)
{
    pthread_mutex_lock(&b->mu);
    entry *e = find(b, ep, false);
    if (e && e->st != BREAKER_CLOSED && now >= e->open_until)
        e->st = BREAKER_HALF_OPEN, e->probe_sent = false;
    bool ok = !e || e->st == BREAKER_CLOSED || (e->st == BREAKER_HALF_OPEN && !e->probe_sent);
    pthread_mutex_unlock(&b->mu);
    return ok;
}

void breaker_sent(breaker *b, const char *ep, double now)
{
    pthread_mutex_lock(&b->mu);
    entry *e = find(b, ep, false);
    if (e && e->st == BREAKER_HALF_OPEN)
        e->probe_sent = true, e->open_until = now + b->cooldown_s;
    pthread_mutex_unlock(&b->mu);
}

void breaker_success(breaker *b, const char *ep)
{
    pthread_mutex_lock(&b->mu);
    entry *e = find(b, ep, false);
    if (e)
        e->st = BREAKER_CLOSED, e->consecutive = 0, e->probe_sent = false;
    pthread_mutex_unlock(&b->mu);
}

void breaker_failure(breaker *b, const char *ep, double now)
{
    pthread_mutex_lock(&b->mu);
    entry *e = find(b, ep, true);
    if (e && e->st != BREAKER_OPEN) {
        e->consecutive++;
        if (e->st == BREAKER_HALF_OPEN || e->consecutive >= b->failures) {
            e->st = BREAKER_OPEN;
            e->open_until = now + b->cooldown_s;
            e->probe_sent = false;
            b->opens++;
        }
    }
    pthread_mutex_unlock(&b->mu);
}

breaker_state breaker_get(breaker *b, const char *ep)
{
    pthread_mutex_lock(&b->mu);
    entry *e = find(b, ep, false);
    breaker_state st = e ? e->st : BREAKER_CLOSED;
    pthread_mutex_unlock(&b->mu);
    return st;
}

uint64_t breaker_opens(breaker *b)
{
    pthread_mutex_lock(&b->mu);
    uint64_t n = b->opens;
    pthread_mutex_unlock(&b->mu);
    return n;
}

void breaker_each(breaker *b, void (*fn)(void *ctx, const char *ep, breaker_state st), void *ctx)
{
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < b->n; i++)
        fn(ctx, b->e[i].ep, b->e[i].st);
    pthread_mutex_unlock(&b->mu);
}

const char *breaker_state_name(breaker_state st)
{
    return st == BREAKER_OPEN ? "open" : st == BREAKER_HALF_OPEN ? "half_open" : "closed";
}
