/* kube-proxy-picker: what a plain Kubernetes Service in front of vLLM does to a benchmark
 * client's requests, as opposed to round-robin-picker's strict per-request rotation.
 *
 * kube-proxy (iptables mode) chooses a backend only when a NEW TCP connection is opened:
 * its per-Service chain sends the connection to endpoint i with probability 1/(n - i),
 * i.e. uniformly at random, and conntrack keeps every later packet of that connection on
 * the same pod. HTTP clients reuse connections (keep-alive), so requests follow the
 * connection, not a per-request choice. Modelled here for inference-perf's client:
 *   - clientWorkers worker processes (inference-perf's num_workers; the guide ran 224),
 *     each with its own aiohttp connection pool; the worker a request lands on is a
 *     seeded hash of the request id (which of the blocked readers of the shared queue
 *     gets an item is not something the client controls);
 *   - a connection is busy from the request until its response completes, then goes
 *     back to its worker's pool, which aiohttp reuses last-in first-out;
 *   - an idle connection older than keepAliveTimeout is closed, not reused: the shorter
 *     of aiohttp's client-side 15 s and the server's idle timeout (vLLM's uvicorn
 *     closes after VLLM_HTTP_TIMEOUT_KEEP_ALIVE = 5 s);
 *   - a request with no reusable connection opens one, and the Service picks a
 *     candidate uniformly at random (seeded: the cycle's generator).
 * Scores are ignored; exactly one endpoint is returned (a connection has one backend).
 * Evidence and the effect on the guide's ladder: docs/VALIDATION.md "Kubernetes Service".
 * Threads: as every plugin, one scheduling thread at a time (scheduler.h). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "mix64.h"
#include "policy_util.h"

typedef struct kp_conn {
    uint32_t ep;                      /* endpoint id the connection is bound to */
    double idle_since;                /* when its last response completed */
} kp_conn;

typedef struct kp_pool {
    kp_conn *idle;                    /* a stack: aiohttp pops the most recently released */
    size_t n, cap;
} kp_pool;

typedef struct kp_state {
    sched_env env;
    int64_t workers;
    double keepalive;
    kp_pool *pools;                   /* one per client worker */
} kp_state;

static int kp_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err)
{
    kp_state *st = calloc(1, sizeof *st);
    if (!st)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    *st = (kp_state){.env = *env, .workers = 224, .keepalive = 5.0};
    if (pu_int(p, pp, pp->node, NULL, "clientWorkers", 1, 1 << 20, &st->workers, err) ||
        pu_duration(p, pp, pp->node, NULL, "keepAliveTimeout", &st->keepalive, err)) {
        free(st);
        return KV_EINVAL;
    }
    if (!(st->pools = calloc((size_t)st->workers, sizeof *st->pools))) {
        free(st);
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", p->name);
    }
    p->state = st;
    return KV_OK;
}

static void kp_fini(sched_plugin *p)
{
    kp_state *st = p->state;
    for (int64_t w = 0; w < st->workers; w++)
        free(st->pools[w].idle);
    free(st->pools);
    free(st);
}

static kp_pool *kp_worker(kp_state *st, const sched_request *r)
{
    return &st->pools[mix64(pu_request_hash(r) ^ st->env.seed) % (uint64_t)st->workers];
}

/* The reusable connection of the pool bound to one of cands, or -1. Like aiohttp's _get:
 * pop from the top; an expired one is closed (and every one below it is older). A
 * connection to an endpoint no longer a candidate is dropped (its pod went away). */
static ssize_t kp_reuse(kp_state *st, kp_pool *pool, const sched_scored *cands, size_t n, double now)
{
    while (pool->n) {
        kp_conn cn = pool->idle[--pool->n];
        if (now - cn.idle_since > st->keepalive) {
            pool->n = 0;
            return -1;
        }
        /* drivers usually list endpoints by id (./sim: id = index), so look there first */
        if (cn.ep < n && cands[cn.ep].ep->id == cn.ep)
            return (ssize_t)cn.ep;
        for (size_t i = 0; i < n; i++)
            if (cands[i].ep->id == cn.ep)
                return (ssize_t)i;
    }
    return -1;
}

static size_t kp_pick(sched_plugin *p, sched_cycle *c, const sched_scored *cands, size_t n, sched_endpoint **out,
                      size_t max)
{
    kp_state *st = p->state;
    if (!n || !max)
        return 0;
    ssize_t i = kp_reuse(st, kp_worker(st, sched_cycle_request(c)), cands, n, sched_cycle_now(c));
    out[0] = cands[i >= 0 ? (size_t)i : pu_below(c, n)].ep;
    return 1;
}

static void kp_complete(sched_plugin *p, const sched_request *r, const sched_endpoint *target)
{
    kp_state *st = p->state;
    if (!target)
        return;
    kp_pool *pool = kp_worker(st, r);
    /* out of memory: the connection is closed instead of pooled, the next request on
     * this worker opens a new one */
    if (grow_array((void **)&pool->idle, &pool->cap, pool->n + 1, sizeof *pool->idle))
        pool->idle[pool->n++] = (kp_conn){.ep = target->id, .idle_since = sched_env_now(&st->env)};
}

static void kp_describe(const sched_plugin *p, char *buf, size_t cap)
{
    const kp_state *st = p->state;
    snprintf(buf, cap, "clientWorkers: %lld\nkeepAliveTimeout: %gs\n", (long long)st->workers, st->keepalive);
}

const sched_plugin_type kube_proxy_picker_type = {
    .type = "kube-proxy-picker",
    .kind = SCHED_PICKER,
    .init = kp_init,
    .fini = kp_fini,
    .pick = kp_pick,
    .response_complete = kp_complete,
    .describe = kp_describe,
};
