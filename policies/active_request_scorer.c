/* active-request-scorer (llm-d-inference-scheduler): prefers pods with fewer requests this
 * picker has sent and not yet seen complete. Score = (maxCount - count)/maxCount over the
 * candidates; a pod with none scores 1.0 (so do all when every count is 0).
 *
 * A request counts from pre_request until response_complete or until requestTimeout
 * (default 2m) passes, the TTL llm-d uses so lost completions do not pin a pod forever.
 * Entries sit in a FIFO in arrival order, which is also deadline order (one timeout for
 * all), so expiry pops the head; completion scans from the head, where the oldest
 * requests — the ones most likely to complete — are. */
#include <stdlib.h>

#include "policy_util.h"
#include "ring.h"

typedef struct ar_entry {
    uint64_t req;        /* XXH64 of the request id */
    uint32_t ep;
    bool live;
    double deadline;
} ar_entry;

typedef struct ar_state {
    sched_env env;
    double timeout;
    ar_entry *q;         /* ring */
    size_t cap, head, n;
    idmap count;      /* endpoint id -> live requests */
} ar_state;

static int ar_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    ar_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    st->env = *env;
    st->timeout = 120;
    if (pu_duration(p, pp, pp->node, NULL, "requestTimeout", &st->timeout, err)) {
        free(st);
        return KV_EINVAL;
    }
    p->state = st;
    return KV_OK;
}

static void ar_fini(sched_plugin *p)
{
    ar_state *st = p->state;
    free(st->q);
    idmap_free(&st->count);
    free(st);
}

static void ar_drop(ar_state *st, ar_entry *e)
{
    if (!e->live)
        return;
    e->live = false;
    int64_t *c = idmap_at(&st->count, e->ep);
    if (c && *c > 0)
        --*c;
}

static void ar_expire(ar_state *st, double now)
{
    while (st->n) {
        ar_entry *e = &st->q[st->head];
        if (e->live && e->deadline > now)
            break;
        ar_drop(st, e);
        st->head = (st->head + 1) % st->cap;
        st->n--;
    }
}

static bool ar_push(ar_state *st, ar_entry e)
{
    if (!ring_reserve((void **)&st->q, &st->cap, &st->head, st->n, sizeof *st->q))
        return false;
    st->q[(st->head + st->n++) % st->cap] = e;
    return true;
}

static void ar_pre_request(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n)
{
    ar_state *st = p->state;
    double now = sched_env_now(&st->env);
    ar_expire(st, now);
    if (!n)
        return;
    int64_t *c = idmap_at(&st->count, targets[0]->id);
    if (!c || !ar_push(st, (ar_entry){.req = pu_request_hash(r), .ep = targets[0]->id, .live = true,
                                      .deadline = now + st->timeout}))
        return;
    ++*c;
}

static void ar_complete(sched_plugin *p, const sched_request *r, const sched_endpoint *target)
{
    ar_state *st = p->state;
    uint64_t h = pu_request_hash(r);
    for (size_t i = 0; i < st->n; i++) {
        ar_entry *e = &st->q[(st->head + i) % st->cap];
        if (e->live && e->req == h && (!target || e->ep == target->id)) {
            ar_drop(st, e);
            break;
        }
    }
    ar_expire(st, sched_env_now(&st->env));
}

static void ar_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    ar_state *st = p->state;
    ar_expire(st, sched_cycle_now(c));
    int64_t max = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = idmap_get(&st->count, eps[i]->id, 0);
        max = v > max ? v : max;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t v = idmap_get(&st->count, eps[i]->id, 0);
        scores[i] = v == 0 ? 1.0 : (double)(max - v) / (double)max;
    }
}

const sched_plugin_type active_request_scorer_type = {
    .type = "active-request-scorer",
    .kind = SCHED_SCORER,
    .init = ar_init,
    .fini = ar_fini,
    .score = ar_score,
    .pre_request = ar_pre_request,
    .response_complete = ar_complete,
};
