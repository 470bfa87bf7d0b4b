/* cluster: the discrete-event driver for one router over simulated replicas (see cluster.h). */
#include "cluster.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "burst_prefix_cache_producer.h"
#include "evq.h"
#include "file_discovery.h"
#include "grow.h"
#include "hugepage.h"
#include "kvevents.h"
#include "kvingest.h"
#include "kvpayq.h"
#include "monoclock.h"
#include "precise_prefix_cache_scorer.h"
#include "prefetch.h"
#include "server.h"

/* Event kinds, in their order at equal times. */
enum { EV_KV = 0, EV_SCRAPE = 1, EV_STEP = 2, EV_SEND = 3, EV_ARRIVAL = 4, EV_STAGE = 5, EV_ROUTE = 6, EV_BURST = 7 };

#define CL_NONE UINT64_MAX

/* A multi-turn user (workload.h, wl_multi_turn): its context so far, whether a round is
 * in flight, and the rounds waiting for it (ids linked through cl.pend_next). */
typedef struct cl_session {
    uint32_t *ctx;                    /* NULL: still the group's system prompt */
    uint32_t n_ctx;
    bool busy;
    uint64_t head, tail;
} cl_session;

#define CL_HIT_RING 128             /* samples kept for the trailing hit-rate window */
#define CL_HIT_WINDOW_US (5 * SIM_US_PER_S)

/* Cumulative prompt/hit token counters at a server's last CL_HIT_RING samples: the
 * sampled hit rate is taken over a trailing window, because one 50 ms interval holds
 * zero or one admission and a per-interval rate only ever reads 0 or the last
 * request's hit. */
typedef struct cl_hit_ring {
    uint64_t prompt[CL_HIT_RING], hit[CL_HIT_RING];
} cl_hit_ring;

/* A request's state at its server (simsrv_req) lives in a slot of that server's, taken
 * when the request is routed and given back once its completion is handled: a server's
 * requests sit together, and a run holds the requests in flight, not one per request
 * (88 MB at 1M requests). 96 bytes aligned to 32, so the 32 bytes a step reads and writes
 * of a running request (server.h) never straddle two cache lines, as every third or so
 * of an array of 88-byte requests did. */
typedef union cl_sreq_slot {
    simsrv_req r;
    union cl_sreq_slot *next_free;
    char size[96];
} __attribute__((aligned(32))) cl_sreq_slot;
_Static_assert(sizeof(cl_sreq_slot) == 96 && offsetof(simsrv_req, hash_due) + sizeof(uint32_t) <= 32,
               "a slot's step-read head stays inside one cache line");
#define CL_SREQ_CHUNK 64

/* What every step of a server touches; its hit ring lives apart (cl.ring), so that a
 * thousand servers' step state stays a few cache lines each. */
typedef struct cl_server {
    simsrv *srv;
    bool busy;                        /* a step is in flight */
    simsrv_step_result res;           /* the step in flight (arrays owned by the server) */
    size_t cap_steps;                 /* room in its sim_run.servers[i].t */
    cl_sreq_slot *free_sreq;          /* its free request slots */
    uint64_t n_sampled;
    char name[32];
    char pod[32];
} cl_server;

/* What is computed once per workload prompt rather than per request: inference-perf
 * sends each of the ladder's 750 prompts once per stage. The router's block keys (for
 * the precise router, hashing ~500 blocks per decision was the largest cost of its
 * choice), passed in the request view (sched_request.keys), and the fingerprint the
 * servers' prefix memo keys prompts by (simsrv_req.prompt_fp). Only prompts that live
 * in the workload's own storage are memoised (keyed by their address, stable for the
 * run); per-request token buffers (random data, multi-turn contexts) are hashed by the
 * scheduler and the server as before. */
typedef struct cl_prompt {
    const uint32_t *tokens;           /* NULL = empty slot */
    uint32_t n_tokens;
    uint64_t fp;                      /* XXH3_64bits of the tokens */
    size_t n_keys;
    uint64_t *keys;                   /* NULL: no kvsource (or no memory for them) */
} cl_prompt;

typedef struct cl_prompts {
    const blockkeys_ctx *kc;          /* the first kvsource's key context, or NULL */
    uint64_t root;
    cl_prompt *slot;
    size_t cap, used;                 /* cap: power of two; at most half of it is used */
} cl_prompts;

typedef struct cl {
    const scenario *s;
    const workload *w;
    const cluster_opts *o;
    sim_run *run;
    cluster_stats st;
    sched *sched;
    sched_endpoint *eps;
    sched_endpoint **epp;
    cl_server *srv;
    simsrv **engine;                  /* srv[i].srv, 8 bytes each: read ahead without srv[i]'s line */
    bool prefetch;                    /* cl_prefetch_ahead's stages run (CL_PREFETCH_SERVERS) */
    cl_hit_ring *ring;                /* one per server */
    size_t n_srv;
    evq q;
    sim_time now;
    /* Every server is scraped at once, so one time says how old all metrics are; once
     * they have been marked stale, nothing is left to mark until the next scrape (a
     * decision checks one time, not every endpoint). */
    sim_time last_scrape;
    bool metrics_stale;
    uint64_t metrics_epoch;           /* the endpoints' metrics, named (cl_metrics_changed) */
    cl_sreq_slot **sreq_chunks;       /* every chunk of request slots, CL_SREQ_CHUNK each */
    size_t n_sreq_chunks, cap_sreq_chunks;
    /* per request, by global id */
    wl_req *wreq;
    uint64_t total, completed, next_progress;
    /* current stage */
    size_t stage;
    uint64_t stage_first;             /* global id of the stage's request 0 */
    uint32_t stage_sent, stage_done;
    uint32_t stage_queued;            /* closed loop: arrivals pushed so far */
    sim_time stage_begin, stage_start;
    bool finished;
    /* KV events */
    kvev_decoder *dec;
    struct cl_kvsrc {
        sched_kvsource *src;
        kvingest *ing;
        int *slot;                    /* index slot of each server */
    } *kvsrc;                         /* every source the router's config declares */
    size_t n_kvsrc;
    kvpayq pay;   /* KV payloads in flight to the router */
    size_t cap_token_runs;            /* room in run->token_runs */
    sched_trace trace;
    size_t cap_samples;
    cl_session *sess;                 /* multi-turn: one per user (prompt); else NULL */
    uint64_t *pend_next;
    cl_prompts prompts;
    const reqpath *path;              /* the router's request path (scenario.h) */
    sim_time path_out;                /* engine -> client, added to every token time */
    /* burst-prefix-cache-producer: requests at the router, held until its window ends */
    burst *burst;
    uint64_t *held;
    size_t n_held, cap_held;
} cl;

static double cl_clock(void *ctx)
{
    return (double)((const cl *)ctx)->now / (double)SIM_US_PER_S;
}

/* The memo entry of wr's prompt, filled on first use; NULL when wr's tokens are not the
 * workload's (or the table is full: callers then hash as if there were no memo). */
static const cl_prompt *cl_prompt_get(cl_prompts *m, const wl_req *wr)
{
    if (!m->slot || wr->owned || wr->n_prompt == 0)
        return NULL;
    uintptr_t h = (uintptr_t)wr->tokens;
    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ULL;
    size_t i = (size_t)(h >> 20) & (m->cap - 1);
    while (m->slot[i].tokens && (m->slot[i].tokens != wr->tokens || m->slot[i].n_tokens != wr->n_prompt))
        i = (i + 1) & (m->cap - 1);
    cl_prompt *e = &m->slot[i];
    if (!e->tokens) {
        if (2 * (m->used + 1) > m->cap)
            return NULL;
        *e = (cl_prompt){.tokens = wr->tokens, .n_tokens = wr->n_prompt,
                         .fp = XXH3_64bits(wr->tokens, (size_t)wr->n_prompt * sizeof *wr->tokens)};
        size_t nb = m->kc ? wr->n_prompt / m->kc->block_size : 0;
        if (nb && (e->keys = malloc(nb * sizeof *e->keys))) {
            blockkeys_compute(m->kc, m->root, wr->tokens, wr->n_prompt, NULL, 0, NULL, e->keys, nb);
            e->n_keys = nb;
        }
        m->used++;
    }
    return e;
}

static void cl_prompts_free(cl_prompts *m)
{
    for (size_t i = 0; i < m->cap && m->slot; i++)
        free(m->slot[i].keys);
    free(m->slot);
}

static void cl_req_view(cl *c, uint64_t id, char *idbuf, size_t cap, sched_request *r)
{
    snprintf(idbuf, cap, "req-%llu", (unsigned long long)id);
    const wl_req *wr = &c->wreq[id];
    *r = (sched_request){.id = idbuf, .model = c->s->cluster.model->hf_name, .tokens = wr->tokens,
                         .n_tokens = wr->n_prompt, .output_tokens_hint = wr->n_output};
    const cl_prompt *p = cl_prompt_get(&c->prompts, wr);
    if (p && p->keys) {
        r->keys = p->keys;
        r->n_keys = p->n_keys;
        r->keys_ctx = c->prompts.kc;
    }
}

/* The endpoints' metrics (eps[].m) have just changed: a scrape, or their going stale.
 * Every write to them is followed by this, so the scheduler may reuse the load scorers'
 * passes over every endpoint between two calls (sched_set_metrics_epoch). */
static void cl_metrics_changed(cl *c)
{
    sched_set_metrics_epoch(c->sched, ++c->metrics_epoch);
}

static void cl_progress(cl *c)
{
    if (!c->o || !c->o->progress || c->completed < c->next_progress)
        return;
    cluster_progress p = {.stage = c->stage, .n_stages = c->w->n_stages, .sim_s = cl_clock(c),
                          .sent = c->stage_first + c->stage_sent, .completed = c->completed, .total = c->total};
    c->o->progress(c->o->progress_ctx, &p);
    c->next_progress = c->completed + (c->total / 1000 ? c->total / 1000 : 1);
}

static int cl_push(cl *c, sim_time t, uint32_t kind, int32_t who, uint64_t arg, kv_err *err)
{
    if (evq_push(&c->q, t, kind, who, arg))
        return kv_err_set(err, KV_ENOMEM, "out of memory (event queue)");
    return KV_OK;
}

/* ---- stages ------------------------------------------------------------------------ */

/* The harness polls once a second from the stage's beginning until every request of
 * the stage has finished, then sleeps `interval` before the next stage. */
static int cl_stage_drained(cl *c, sim_time drained, kv_err *err)
{
    c->run->stages[c->stage].t_end = drained;
    if (c->stage + 1 >= c->w->n_stages) {
        c->finished = true;
        return KV_OK;
    }
    sim_time polls = (drained - c->stage_begin + SIM_US_PER_S - 1) / SIM_US_PER_S;
    return cl_push(c, c->stage_begin + polls * SIM_US_PER_S + c->w->interval, EV_STAGE, (int32_t)(c->stage + 1), 0,
                   err);
}

/* A request of the current stage ended at t_end (its E): a closed-loop stage sends the
 * next one then. */
static int cl_request_done(cl *c, sim_time t_end, kv_err *err)
{
    c->completed++;
    c->stage_done++;
    cl_progress(c);
    const wl_stage *st = &c->w->stages[c->stage];
    if (!st->offsets && c->stage_queued < st->n_requests)
        return cl_push(c, t_end, EV_ARRIVAL, (int32_t)c->stage, c->stage_queued++, err);
    if (c->stage_done < st->n_requests)
        return KV_OK;
    return cl_stage_drained(c, t_end, err);
}

static int cl_start_stage(cl *c, size_t stage, kv_err *err)
{
    const wl_stage *st = &c->w->stages[stage];
    if (stage > 0)
        c->stage_first += c->w->stages[stage - 1].n_requests;
    c->stage = stage;
    c->stage_sent = c->stage_done = c->stage_queued = 0;
    c->stage_begin = c->now;
    c->stage_start = c->now + SIM_US_PER_S;     /* inference-perf's 1 s head start */
    sim_stage_info *info = &c->run->stages[stage];
    *info = (sim_stage_info){.index = (int)stage, .rate = st->rate, .duration_s = st->duration,
                             .concurrency = (int)st->concurrency, .num_requests = st->n_requests,
                             .t_begin = c->stage_start, .t_end = c->stage_start};
    if (st->n_requests == 0)                    /* int(rate*duration) == 0: nothing to send */
        return cl_stage_drained(c, c->now, err);
    if (st->offsets)
        return cl_push(c, c->stage_start + st->offsets[0], EV_ARRIVAL, (int32_t)stage, 0, err);
    uint32_t first = st->concurrency < st->n_requests ? st->concurrency : st->n_requests;
    for (uint32_t i = 0; i < first; i++) {
        int rc = cl_push(c, c->stage_start, EV_ARRIVAL, (int32_t)stage, c->stage_queued++, err);
        if (rc)
            return rc;
    }
    return KV_OK;
}

/* ---- servers ------------------------------------------------------------------------ */

static int cl_kick(cl *c, size_t i, kv_err *err)
{
    cl_server *sv = &c->srv[i];
    if (sv->busy || !simsrv_has_work(sv->srv))
        return KV_OK;
    int rc = simsrv_step(sv->srv, c->now, &sv->res);
    if (rc)
        return kv_err_set(err, rc, "server %s: step failed at t=%lld us: %s", sv->name, (long long)c->now,
                          kv_strerror(rc));
    if (sv->res.duration <= 0)
        return KV_OK;
    sv->busy = true;
    c->st.steps++;
    c->st.cascade_steps += sv->res.cascade;
    return cl_push(c, c->now + sv->res.duration, EV_STEP, (int32_t)i, 0, err);
}

/* The multi-turn user of request id (rounds go to users i mod N within the stage). */
static uint32_t cl_user(const cl *c, uint64_t id)
{
    return (uint32_t)((id - c->stage_first) % c->w->n_prompts);
}

static simsrv_req *cl_sreq_get(cl *c, size_t server)
{
    cl_server *sv = &c->srv[server];
    if (!sv->free_sreq) {
        if (!grow_array((void **)&c->sreq_chunks, &c->cap_sreq_chunks, c->n_sreq_chunks + 1, sizeof *c->sreq_chunks))
            return NULL;
        cl_sreq_slot *chunk = aligned_alloc(_Alignof(cl_sreq_slot), CL_SREQ_CHUNK * sizeof *chunk);
        if (!chunk)
            return NULL;
        c->sreq_chunks[c->n_sreq_chunks++] = chunk;
        for (size_t k = 0; k < CL_SREQ_CHUNK; k++)
            chunk[k].next_free = k + 1 < CL_SREQ_CHUNK ? &chunk[k + 1] : NULL;
        sv->free_sreq = chunk;
    }
    cl_sreq_slot *slot = sv->free_sreq;
    sv->free_sreq = slot->next_free;
    return &slot->r;
}

/* r is no longer read: neither the server (it finished, or was never queued) nor the step's
 * result, which the server's next step replaces. */
static void cl_sreq_put(cl *c, size_t server, simsrv_req *r)
{
    cl_sreq_slot *slot = (cl_sreq_slot *)r;
    slot->next_free = c->srv[server].free_sreq;
    c->srv[server].free_sreq = slot;
}

/* A multi-turn round ended at t (r = the server's request when it was answered, NULL
 * when it failed): the context becomes prompt + response, and the user's next waiting
 * round is sent at t. */
static int cl_session_end(cl *c, uint64_t id, const simsrv *srv, const simsrv_req *r, sim_time t, kv_err *err)
{
    if (!c->sess)
        return KV_OK;
    cl_session *ss = &c->sess[cl_user(c, id)];
    if (r) {
        const wl_req *wr = &c->wreq[id];
        uint32_t n = wr->n_prompt + r->n_generated;
        uint32_t *ctx = realloc(ss->ctx, (size_t)n * sizeof *ctx);
        if (!ctx)
            return kv_err_set(err, KV_ENOMEM, "out of memory (multi-turn context)");
        memcpy(ctx, wr->tokens, (size_t)wr->n_prompt * sizeof *ctx);
        for (uint32_t k = 0; k < r->n_generated; k++)
            ctx[wr->n_prompt + k] = simsrv_output_token(srv, r, k);
        ss->ctx = ctx;
        ss->n_ctx = n;
    }
    ss->busy = false;
    if (ss->head == CL_NONE)
        return KV_OK;
    uint64_t next = ss->head;
    ss->head = c->pend_next[next];
    ss->busy = true;                  /* reserved for the waiting round */
    return cl_push(c, t, EV_SEND, 0, next, err);
}

static int cl_fail(cl *c, sim_request_record *rec, kv_err *err)
{
    rec->failed = true;
    rec->t_end = c->now;
    c->st.failed++;
    int rc = cl_session_end(c, rec->id, NULL, NULL, c->now, err);
    wl_req_release(&c->wreq[rec->id]);
    return rc ? rc : cl_request_done(c, c->now, err);
}

/* Server i's step that just ended emitted tokens, its emit_step-th such step: its time
 * (when the client reads the tokens) is every such token's timestamp. */
static int cl_step_time(cl *c, size_t i, uint32_t emit_step, kv_err *err)
{
    sim_server_steps *ss = &c->run->servers[i];
    if (emit_step != ss->n)
        return kv_err_set(err, KV_ESTATE, "server %s: emitting step %u, expected %zu", c->srv[i].name, emit_step,
                          ss->n);
    if (!grow_array((void **)&ss->t, &c->srv[i].cap_steps, ss->n + 1, sizeof *ss->t))
        return kv_err_set(err, KV_ENOMEM, "out of memory (step times of %s)", c->srv[i].name);
    ss->t[ss->n++] = c->now + c->path_out;
    return KV_OK;
}

/* rec's sequence emitted at len consecutive emitting steps of its server from step, a run
 * now over (it finished, or emits again after a gap): the record's first run, or one
 * chained after its others. */
static int cl_token_run(cl *c, sim_request_record *rec, uint32_t step, uint32_t len, kv_err *err)
{
    rec->n_token_times += len;
    if (rec->run0 == 0) {
        rec->step0 = step;
        rec->run0 = len;
        return KV_OK;
    }
    sim_run *run = c->run;
    if (run->n_token_runs >= UINT32_MAX - 1)
        return kv_err_set(err, KV_ERANGE, "token runs past 2^32 - 2");
    if (!grow_array((void **)&run->token_runs, &c->cap_token_runs, run->n_token_runs + 1, sizeof *run->token_runs))
        return kv_err_set(err, KV_ENOMEM, "out of memory (token runs)");
    uint32_t *link = &rec->more;
    while (*link)
        link = &run->token_runs[*link - 1].next;
    run->token_runs[run->n_token_runs] = (sim_token_run){.step = step, .len = len};
    *link = (uint32_t)++run->n_token_runs;
    return KV_OK;
}

/* With a thousand replicas the server whose step ends next is out of cache: its record,
 * its step-time tail, its engine's fields, its running list and its running requests,
 * most found through a pointer in another. So they are fetched in stages, each one event
 * ahead of the next, each reading only pointers the stage before fetched: the event
 * after next gets its server's record, tail array and engine fields fetched; the next
 * event its tail's last line and its engine's running list; and the step that ends now
 * its running requests (cl_step_end), which the next step walks once this one's tokens
 * are handled. Hints only: an event that this one pushes may come first.
 * Below CL_PREFETCH_SERVERS servers every server's state stays in cache, and the stages
 * would only add instructions (0.9% more on the guide's 8-replica ladder). */
#define CL_PREFETCH_SERVERS 64

static void cl_prefetch_ahead(const cl *c)
{
    if (!c->prefetch)
        return;
    const evq_event *e2 = evq_peek_second(&c->q), *e1 = evq_peek(&c->q);
    if (e2 && e2->kind == EV_STEP) {
        prefetch_span(&c->srv[e2->who], offsetof(cl_server, cap_steps));   /* srv, busy, res */
        prefetch_span(&c->run->servers[e2->who], sizeof(sim_server_steps));
        simsrv_prefetch(c->engine[e2->who], SIMSRV_PREFETCH_FIELDS);
    }
    if (e1 && e1->kind == EV_STEP) {
        const sim_server_steps *ss = &c->run->servers[e1->who];
        __builtin_prefetch(ss->t + ss->n);
        simsrv_prefetch(c->engine[e1->who], SIMSRV_PREFETCH_RUNNING);
    }
}

static int cl_step_end(cl *c, size_t i, kv_err *err)
{
    cl_server *sv = &c->srv[i];
    const simsrv_step_result *res = &sv->res;
    if (c->prefetch)
        simsrv_prefetch(sv->srv, SIMSRV_PREFETCH_REQUESTS);
    sv->busy = false;
    int rc = res->n_tokens_out ? cl_step_time(c, i, res->emit_step, err) : KV_OK;
    /* Only requests that start a run of tokens are touched here (their first token, or
     * one after a gap), and finished ones below: the rest extend their run, which the
     * server counts. */
    for (size_t k = 0; k < res->n_run_starts && !rc; k++) {
        const simsrv_run_start *st = &res->run_starts[k];
        sim_request_record *rec = st->r->user;
        if (st->prev_len) {
            rc = cl_token_run(c, rec, st->prev_step, st->prev_len, err);
            continue;
        }
        rec->t_first_token = c->now + c->path_out;       /* when the client reads it */
        char idbuf[32];
        sched_request view;
        cl_req_view(c, rec->id, idbuf, sizeof idbuf, &view);
        sched_response_started(c->sched, &view, &c->eps[i]);
    }
    for (size_t k = 0; k < res->n_finished && !rc; k++) {
        simsrv_req *r = res->finished[k];
        sim_request_record *rec = r->user;
        sim_time done = c->now + c->path_out + CLUSTER_DONE_DELAY_US;
        if ((rc = cl_token_run(c, rec, r->run_step, r->run_len, err)))
            break;
        rec->n_token_times++;                     /* [DONE], at t_end */
        rec->t_end = done;
        rec->output_tokens = wl_counted_output(c->w, rec->id, r->n_generated);   /* the client's count */
        rec->cached_tokens = r->n_cached;
        rec->preemptions = r->preemptions;
        c->st.preemptions += r->preemptions;
        char idbuf[32];
        sched_request view;
        cl_req_view(c, rec->id, idbuf, sizeof idbuf, &view);
        sched_response_complete(c->sched, &view, &c->eps[i]);
        rc = cl_session_end(c, rec->id, sv->srv, r, done, err);
        wl_req_release(&c->wreq[rec->id]);
        if (!rc)
            rc = cl_request_done(c, done, err);
    }
    if (rc)
        return rc;
    for (size_t k = 0; k < res->n_finished; k++)
        cl_sreq_put(c, i, res->finished[k]);
    if (res->n_kv_events) {   /* published now, at the step's end */
        c->st.kv_batches++;
        if (simsrv_kv_encode(sv->srv, kvpayq_open(&c->pay)) != KV_OK || !kvpayq_commit(&c->pay))
            return kv_err_set(err, KV_ENOMEM, "out of memory (KV payloads)");
        if ((rc = cl_push(c, c->now + c->s->cluster.kv_event_delay, EV_KV, (int32_t)i, 0, err)))
            return rc;
    }
    return cl_kick(c, i, err);
}

static int cl_kv_deliver(cl *c, size_t i, kv_err *err)
{
    size_t len;
    const uint8_t *data = kvpayq_front(&c->pay, &len);   /* readable until the next kvpayq_open */
    if (!data)   /* one delivery event is pushed per payload */
        return kv_err_set(err, KV_ESTATE, "KV events of %s: no payload in flight", c->srv[i].name);
    kvpayq_pop(&c->pay);
    kvev_batch b;
    kv_err e = {0};
    if (kvev_decode_batch(c->dec, data, len, &b, &e) != KV_OK) {
        c->st.kv_decode_errors++;
    } else {
        for (size_t k = 0; k < c->n_kvsrc; k++) {
            int rc = kvingest_apply(c->kvsrc[k].ing, c->kvsrc[k].slot[i], c->s->cluster.model->hf_name, &b, &e);
            if (rc)
                return kv_err_set(err, rc, "KV events of %s: %s", c->srv[i].name, e.msg);
        }
        c->st.kv_events_delivered += b.n_events;
    }
    return KV_OK;
}

static int cl_scrape(cl *c, kv_err *err)
{
    c->last_scrape = c->now;
    c->metrics_stale = false;
    for (size_t i = 0; i < c->n_srv; i++) {
        cl_server *sv = &c->srv[i];
        simsrv_metrics m;
        simsrv_get_metrics(sv->srv, &m);
        sched_metrics *em = &c->eps[i].m;
        em->valid = true;
        em->waiting = m.waiting;
        em->running = m.running;
        em->kv_usage = m.kv_usage;
        em->block_size = simsrv_block_size(sv->srv);
        em->num_gpu_blocks = (uint32_t)m.num_gpu_blocks;
        if (c->run->n_samples == c->cap_samples) {
            size_t cap = c->cap_samples ? c->cap_samples * 2 : 4096;
            sim_server_sample *ns =
                hugepage_grow(c->run->samples, c->run->n_samples * sizeof *ns, cap * sizeof *ns);
            if (!ns)
                return kv_err_set(err, KV_ENOMEM, "out of memory (server samples)");
            c->run->samples = ns;
            c->cap_samples = cap;
        }
        sim_time interval = c->s->cluster.scrape_interval > 0 ? c->s->cluster.scrape_interval : 1;
        uint64_t window = (uint64_t)(CL_HIT_WINDOW_US / interval);
        if (window < 1)
            window = 1;
        if (window > CL_HIT_RING - 1)
            window = CL_HIT_RING - 1;
        uint64_t back = sv->n_sampled < window ? sv->n_sampled : window;
        size_t old = (size_t)((sv->n_sampled - back) % CL_HIT_RING);
        cl_hit_ring *ring = &c->ring[i];
        uint64_t dp = m.prompt_tokens - (back ? ring->prompt[old] : 0);
        uint64_t dh = m.hit_tokens - (back ? ring->hit[old] : 0);
        c->run->samples[c->run->n_samples++] = (sim_server_sample){
            .t = c->now, .server = (int)i, .waiting = m.waiting, .running = m.running, .kv_usage = m.kv_usage,
            .hit_rate = dp ? (double)dh / (double)dp : NAN, .preemptions = m.preemptions};
        size_t cur = (size_t)(sv->n_sampled % CL_HIT_RING);
        ring->prompt[cur] = m.prompt_tokens;
        ring->hit[cur] = m.hit_tokens;
        sv->n_sampled++;
    }
    cl_metrics_changed(c);
    if (c->finished)
        return KV_OK;
    return cl_push(c, c->now + c->s->cluster.scrape_interval, EV_SCRAPE, 0, 0, err);
}

/* ---- arrivals ------------------------------------------------------------------------ */

static int cl_route(cl *c, uint64_t id, kv_err *err);
static int cl_at_router(cl *c, uint64_t id, kv_err *err);

/* burst-prefix-cache-producer: the request waits for the window, which its first request
 * opened (llm-d's producer holds it in Produce); a full window (maxBatchSize) routes it at
 * once, without an assignment, as llm-d's Produce error leaves it. */
static int cl_hold(cl *c, uint64_t id, kv_err *err)
{
    int64_t max = burst_max_batch(c->burst);
    if (max > 0 && c->n_held >= (size_t)max)
        return cl_route(c, id, err);
    if (c->n_held == c->cap_held) {
        size_t cap = c->cap_held ? 2 * c->cap_held : 64;
        uint64_t *g = realloc(c->held, cap * sizeof *g);
        if (!g)
            return kv_err_set(err, KV_ENOMEM, "out of memory (burst window)");
        c->held = g, c->cap_held = cap;
    }
    c->held[c->n_held++] = id;
    if (c->n_held > 1)
        return KV_OK;
    return cl_push(c, c->now + (sim_time)(burst_window_s(c->burst) * SIM_US_PER_S), EV_BURST, 0, 0, err);
}

/* The window ends: its requests are placed together, then routed in arrival order. */
static int cl_burst_seal(cl *c, kv_err *err)
{
    size_t n = c->n_held;
    uint64_t *ids = c->held;
    c->held = NULL, c->n_held = c->cap_held = 0;
    char (*idbuf)[32] = calloc(n ? n : 1, sizeof *idbuf);
    sched_request *views = calloc(n ? n : 1, sizeof *views);
    const sched_request **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    int rc = idbuf && views && ptrs ? KV_OK : kv_err_set(err, KV_ENOMEM, "out of memory (burst window)");
    for (size_t i = 0; rc == KV_OK && i < n; i++) {
        cl_req_view(c, ids[i], idbuf[i], sizeof idbuf[i], &views[i]);
        ptrs[i] = &views[i];
    }
    if (rc == KV_OK)
        rc = burst_assign(c->burst, ptrs, n, c->epp, c->n_srv, err);
    for (size_t i = 0; rc == KV_OK && i < n; i++)
        rc = cl_route(c, ids[i], err);
    free(idbuf);
    free(views);
    free(ptrs);
    free(ids);
    return rc;
}

/* The client sends request id now: its prompt (for a multi-turn round, the user's context
 * and question) sets off down the router's request path (reqpath.h); cl_route takes the
 * routing decision and submits it where the path reaches vLLM's scheduler. */
static int cl_send(cl *c, uint64_t id, kv_err *err)
{
    sim_request_record *rec = &c->run->requests[id];
    wl_req *wr = &c->wreq[id];
    rec->t_start = c->now;
    if (c->stage_sent++ == 0)
        c->run->stages[c->stage].t_begin = c->now;   /* the stage's first send */
    if (c->sess) {
        uint32_t u = cl_user(c, id);
        cl_session *ss = &c->sess[u];
        const wl_prompt *p = &c->w->prompts[u];
        const uint32_t *ctx = ss->ctx ? ss->ctx : p->tokens;
        uint32_t n_ctx = ss->ctx ? ss->n_ctx : p->n_prefix, n_q = p->n_tokens - p->n_prefix;
        uint32_t *t = malloc(((size_t)n_ctx + n_q) * sizeof *t);
        if (!t)
            return kv_err_set(err, KV_ENOMEM, "out of memory (multi-turn prompt)");
        memcpy(t, ctx, (size_t)n_ctx * sizeof *t);
        memcpy(t + n_ctx, p->tokens + p->n_prefix, (size_t)n_q * sizeof *t);
        *wr = (wl_req){.tokens = t, .n_prompt = n_ctx + n_q, .n_output = p->n_output, .group = p->group,
                       .shared_len = n_ctx + n_q, .owned = t};
        ss->busy = true;
        rec->prompt_tokens = wr->n_prompt;
    }
    sim_time in = reqpath_inbound(c->path, wr->n_prompt);
    return in ? cl_push(c, c->now + in, EV_ROUTE, 0, id, err) : cl_at_router(c, id, err);
}

/* Request id has reached the router: held for the burst window when the config has one,
 * else routed now. */
static int cl_at_router(cl *c, uint64_t id, kv_err *err)
{
    return c->burst ? cl_hold(c, id, err) : cl_route(c, id, err);
}

/* Request id has come down its request path: a routing decision over the endpoints as
 * the router sees them now (the end of the inbound path: the decision is a few hops
 * early in reality, which the scrape interval dwarfs), and the chosen server. */
static int cl_route(cl *c, uint64_t id, kv_err *err)
{
    sim_request_record *rec = &c->run->requests[id];
    wl_req *wr = &c->wreq[id];
    if (!c->metrics_stale && c->now - c->last_scrape > c->s->cluster.metrics_staleness) {
        c->metrics_stale = true;             /* a scraper that stopped answering goes stale */
        for (size_t k = 0; k < c->n_srv; k++)
            c->eps[k].m.valid = false;
        cl_metrics_changed(c);
    }
    char idbuf[32];
    sched_request view;
    cl_req_view(c, id, idbuf, sizeof idbuf, &view);
    const scn_outputs *out = &c->s->outputs;
    bool traced = c->o && c->o->decision &&
                  (out->decisions == SCN_DECISIONS_ALL ||
                   (out->decisions == SCN_DECISIONS_SAMPLE && id % out->decisions_every == 0));
    if (traced)
        sched_trace_reset(&c->trace);
    sched_result res;
    kv_err e = {0};
    int rc = sched_schedule(c->sched, &view, c->epp, c->n_srv, &res, traced ? &c->trace : NULL, &e);
    if (rc == KV_ENOENDPOINTS || rc == KV_ESTATE || (rc == KV_OK && res.n_targets == 0))
        return cl_fail(c, rec, err);
    if (rc)
        return kv_err_set(err, rc, "scheduling %s: %s", idbuf, e.msg);
    if (traced && (rc = c->o->decision(c->o->decision_ctx, id, &c->trace, &res, err)))
        return rc;
    sched_pre_request(c->sched, &view, &res);
    size_t target = res.targets[0]->id;
    rec->endpoint = (int)target;
    simsrv_req *sr = cl_sreq_get(c, target);
    if (!sr)
        return kv_err_set(err, KV_ENOMEM, "out of memory (requests at servers)");
    /* A multi-turn response comes back in the user's next prompt; any other is the request's alone. */
    *sr = (simsrv_req){.id = id, .tokens = wr->tokens, .n_prompt = wr->n_prompt, .n_output = wr->n_output,
                       .user = rec, .unshared_tail = !c->sess, .shared_len = wr->shared_len};
    const cl_prompt *pm = cl_prompt_get(&c->prompts, wr);
    if (pm)
        sr->prompt_fp = pm->fp;
    rc = simsrv_submit(c->srv[target].srv, sr);
    if (rc)
        cl_sreq_put(c, target, sr);      /* not queued: the server keeps no pointer */
    if (rc == KV_ERANGE) {               /* vLLM would refuse it at the API */
        sched_response_complete(c->sched, &view, &c->eps[target]);
        return cl_fail(c, rec, err);
    }
    if (rc)
        return kv_err_set(err, rc, "submitting %s: %s", idbuf, kv_strerror(rc));
    return cl_kick(c, target, err);
}

/* The load generator's scheduled time for request i of a stage: the record starts here;
 * a multi-turn round whose user is still busy waits for the previous round. */
static int cl_arrival(cl *c, size_t stage, uint64_t i, kv_err *err)
{
    const wl_stage *st = &c->w->stages[stage];
    uint64_t id = c->stage_first + i;
    int rc;
    if (st->offsets && i + 1 < st->n_requests &&
        (rc = cl_push(c, c->stage_start + st->offsets[i + 1], EV_ARRIVAL, (int32_t)stage, i + 1, err)))
        return rc;
    uint32_t n_output = wl_output_len(c->w, stage, i);
    sim_request_record *rec = &c->run->requests[id];
    *rec = (sim_request_record){.id = id, .stage = (int)stage, .t_scheduled = c->now, .t_start = c->now,
                                .output_tokens = n_output, .endpoint = -1};
    c->run->n_requests = id + 1 > c->run->n_requests ? id + 1 : c->run->n_requests;
    if (c->sess) {
        cl_session *ss = &c->sess[cl_user(c, id)];
        rec->prefix_group = c->w->prompts[cl_user(c, id)].group;
        if (ss->busy) {
            c->pend_next[id] = CL_NONE;
            if (ss->head == CL_NONE)
                ss->head = id;
            else
                c->pend_next[ss->tail] = id;
            ss->tail = id;
            return KV_OK;
        }
        return cl_send(c, id, err);
    }
    wl_req *wr = &c->wreq[id];
    if ((rc = wl_request(c->w, stage, i, wr, err)))
        return rc;
    rec->prompt_tokens = wr->n_prompt;
    rec->prefix_group = wr->group;
    return cl_send(c, id, err);
}

/* ---- run ------------------------------------------------------------------------------ */

static int cl_setup(cl *c, size_t r, kv_err *err)
{
    const scn_cluster *k = &c->s->cluster;
    const char *rname = c->s->routers[r].name;
    c->n_srv = k->replicas;
    c->srv = calloc(c->n_srv, sizeof *c->srv);
    c->engine = calloc(c->n_srv, sizeof *c->engine);
    c->prefetch = c->n_srv >= CL_PREFETCH_SERVERS;
    c->ring = calloc(c->n_srv, sizeof *c->ring);
    c->eps = calloc(c->n_srv, sizeof *c->eps);
    c->epp = calloc(c->n_srv, sizeof *c->epp);
    c->total = wl_total_requests(c->w);
    /* The per-request arrays are read at random (each step touches its batch's entries):
     * on huge pages a thousand-replica run misses the TLB and faults far less. */
    c->wreq = hugepage_calloc(c->total, sizeof *c->wreq);
    c->run->requests = hugepage_calloc(c->total, sizeof *c->run->requests);
    c->run->stages = calloc(c->w->n_stages, sizeof *c->run->stages);
    c->run->servers = calloc(c->n_srv, sizeof *c->run->servers);
    if (!c->srv || !c->engine || !c->ring || !c->eps || !c->epp || !c->wreq || !c->run->requests ||
        !c->run->stages || !c->run->servers)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    c->run->n_stages = c->w->n_stages;
    c->run->n_servers = c->n_srv;
    if (wl_multi_turn(c->w)) {
        c->sess = calloc(c->w->n_prompts, sizeof *c->sess);
        c->pend_next = calloc(c->total ? c->total : 1, sizeof *c->pend_next);
        if (!c->sess || !c->pend_next)
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        for (size_t u = 0; u < c->w->n_prompts; u++)
            c->sess[u].head = c->sess[u].tail = CL_NONE;
    }
    for (size_t i = 0; i < c->n_srv; i++) {
        cl_server *sv = &c->srv[i];
        snprintf(sv->name, sizeof sv->name, "10.0.%zu.%zu:8000", (i + 1) / 256, (i + 1) % 256);
        snprintf(sv->pod, sizeof sv->pod, "vllm-replica-%zu", i);
        c->eps[i] = (sched_endpoint){.id = (uint32_t)i, .name = sv->name, .pod = sv->pod, .ns = ""};
        c->epp[i] = &c->eps[i];
    }
    c->path = &c->s->routers[r].path;
    c->path_out = reqpath_outbound(c->path);
    sched_env env = {.seed = c->s->seed, .now = cl_clock, .clock_ctx = c, .warn = c->o ? c->o->warn : NULL,
                     .warn_ctx = c->o ? c->o->warn_ctx : NULL};
    kv_err e = {0};
    if (!(c->sched = sched_new(c->s->routers[r].cfg, &env, &e)))
        return kv_err_set(err, e.code ? e.code : KV_EINVAL, "router '%s': %s", rname, e.msg);
    cl_metrics_changed(c);   /* the endpoints' first metrics: zeros, never scraped */
    c->burst = burst_of(c->sched);
    const file_discovery *fd;
    if (file_discovery_of(c->sched, c->s->routers[r].cfg, &fd, &e))
        return kv_err_set(err, e.code, "router '%s': %s", rname, e.msg);
    if (fd)
        sched_warn(&env, "plugin '%s' (file-discovery, dataLayer.discovery) is not used: ./sim's endpoints are the "
                   "scenario's %zu simulated replicas, not the file %s", fd->plugin, c->n_srv, fd->path);
    size_t n_src = pps_kvsources(c->sched, NULL, 0);
    sched_kvsource **srcs = n_src ? calloc(n_src, sizeof *srcs) : NULL;
    if (n_src && (!srcs || !(c->kvsrc = calloc(n_src, sizeof *c->kvsrc)))) {
        free(srcs);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    pps_kvsources(c->sched, srcs, n_src);
    for (size_t k = 0; k < n_src; k++)
        c->kvsrc[k].src = srcs[k];
    free(srcs);
    c->n_kvsrc = n_src;
    for (size_t k = 0; k < c->n_kvsrc; k++) {
        struct cl_kvsrc *ks = &c->kvsrc[k];
        if (!(ks->ing = kvingest_new(ks->src->index, &ks->src->keys, &e)))
            return kv_err_set(err, e.code ? e.code : KV_ENOMEM, "router '%s': %s", rname, e.msg);
        if (!(ks->slot = calloc(c->n_srv, sizeof *ks->slot)))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        for (size_t i = 0; i < c->n_srv; i++) {
            int slot = kvindex_endpoint_add(ks->src->index, c->srv[i].name, &e);
            if (slot < 0)
                return kv_err_set(err, slot, "router '%s': index slot for %s: %s", rname, c->srv[i].name, e.msg);
            ks->slot[i] = slot;
        }
    }
    if (c->n_kvsrc && !(c->dec = kvev_decoder_new(0, &e)))
        return kv_err_set(err, e.code ? e.code : KV_ENOMEM, "%s", e.msg);
    if (c->n_kvsrc) {
        c->prompts.kc = &c->kvsrc[0].src->keys;
        c->prompts.root = blockkeys_root(c->prompts.kc, c->s->cluster.model->hf_name);
    }
    for (c->prompts.cap = 16; c->prompts.cap < 2 * c->w->n_prompts + 2;)
        c->prompts.cap *= 2;
    /* without the table, every request is simply hashed by the scheduler and the server */
    c->prompts.slot = calloc(c->prompts.cap, sizeof *c->prompts.slot);
    /* Servers publish KV events only to a router that can read them: encoding is a
     * large share of a step's cost, and nothing else about the server changes. */
    c->st.kv_published = c->n_kvsrc > 0;
    for (size_t i = 0; i < c->n_srv; i++) {
        cl_server *sv = &c->srv[i];
        simsrv_config sc = {.model = k->model, .hw = k->hw, .tp = k->tp, .block_size = k->block_size,
                            .num_gpu_blocks = k->num_gpu_blocks, .gpu_memory_utilization = k->gpu_memory_utilization,
                            .max_num_batched_tokens = k->max_num_batched_tokens, .max_num_seqs = k->max_num_seqs,
                            .long_prefill_token_threshold = k->long_prefill_token_threshold,
                            .max_model_len = k->max_model_len, .prefix_caching = k->prefix_caching,
                            .speedup = k->speedup,
                            .cascade_attention = k->cascade_attention,
                            .emit_kv_events = c->st.kv_published, .pod_id = sv->name,
                            .model_name = k->model->hf_name};
        if (!(c->engine[i] = sv->srv = simsrv_new(&sc, &e)))
            return kv_err_set(err, e.code ? e.code : KV_ENOMEM, "replica %zu: %s", i, e.msg);
    }
    c->st.num_gpu_blocks = simsrv_num_gpu_blocks(c->srv[0].srv);
    c->st.max_num_batched_tokens = simsrv_max_num_batched_tokens(c->srv[0].srv);
    c->st.max_num_seqs = simsrv_max_num_seqs(c->srv[0].srv);
    return KV_OK;
}

static void cl_teardown(cl *c)
{
    free(c->held);
    for (size_t i = 0; i < c->n_srv && c->srv; i++)
        simsrv_free(c->srv[i].srv);
    free(c->srv);
    free(c->engine);
    free(c->ring);
    free(c->eps);
    free(c->epp);
    for (size_t k = 0; k < c->n_sreq_chunks; k++)   /* after the servers, which clear their requests */
        free(c->sreq_chunks[k]);
    free(c->sreq_chunks);
    if (c->wreq)
        for (uint64_t i = 0; i < c->total; i++)
            wl_req_release(&c->wreq[i]);
    free(c->wreq);
    if (c->sess)
        for (size_t u = 0; u < c->w->n_prompts; u++)
            free(c->sess[u].ctx);
    free(c->sess);
    free(c->pend_next);
    kvpayq_free(&c->pay);
    for (size_t k = 0; k < c->n_kvsrc; k++) {
        kvingest_free(c->kvsrc[k].ing);
        free(c->kvsrc[k].slot);
    }
    free(c->kvsrc);
    sched_free(c->sched);
    kvev_decoder_free(c->dec);
    sched_trace_free(&c->trace);
    cl_prompts_free(&c->prompts);
    evq_free(&c->q);
}

int cluster_run(const scenario *s, const workload *w, size_t r, const cluster_opts *o, sim_run *out,
                cluster_stats *stats, kv_err *err)
{
    double t0 = monoclock_s();
    memset(out, 0, sizeof *out);
    out->router = s->routers[r].name;
    out->config_path = s->routers[r].source;
    cl c = {.s = s, .w = w, .o = o, .run = out};
    evq_init(&c.q);
    int rc = cl_setup(&c, r, err);
    if (!rc && w->n_stages)
        rc = cl_push(&c, 0, EV_STAGE, 0, 0, err);
    if (!rc)
        rc = cl_push(&c, 0, EV_SCRAPE, 0, 0, err);
    c.finished = w->n_stages == 0;
    evq_event ev;
    /* Once the last stage has drained, what is left (scrapes, KV deliveries) cannot
     * change any record: the run ends at the last completion. */
    while (!rc && !c.finished && evq_pop(&c.q, &ev)) {
        c.now = ev.t;
        cl_prefetch_ahead(&c);
        switch (ev.kind) {
        case EV_KV: rc = cl_kv_deliver(&c, (size_t)ev.who, err); break;
        case EV_SCRAPE: rc = cl_scrape(&c, err); break;
        case EV_STEP: rc = cl_step_end(&c, (size_t)ev.who, err); break;
        case EV_SEND: rc = cl_send(&c, ev.arg, err); break;
        case EV_ARRIVAL: rc = cl_arrival(&c, (size_t)ev.who, ev.arg, err); break;
        case EV_STAGE: rc = cl_start_stage(&c, (size_t)ev.who, err); break;
        case EV_ROUTE: rc = cl_at_router(&c, ev.arg, err); break;
        case EV_BURST: rc = cl_burst_seal(&c, err); break;
        }
    }
    if (!rc)
        rc = cl_scrape(&c, err);     /* a last sample after the drain: every block released */
    if (!rc && c.completed != c.total)
        rc = kv_err_set(err, KV_ESTATE, "router '%s': %llu of %llu requests never completed (a server stalled)",
                        out->router, (unsigned long long)(c.total - c.completed), (unsigned long long)c.total);
    c.st.sim_end_us = (uint64_t)c.now;
    out->events_delivered = c.st.kv_events_delivered;
    if (stats)
        *stats = c.st;
    cl_teardown(&c);
    out->wall_seconds = monoclock_s() - t0;
    if (rc)
        cluster_run_free(out);
    return rc;
}

void cluster_run_free(sim_run *run)
{
    for (size_t i = 0; i < run->n_servers; i++)
        free(run->servers[i].t);
    free(run->servers);
    free(run->token_runs);
    free(run->requests);
    free(run->stages);
    free(run->samples);
    memset(run, 0, sizeof *run);
}

/* What else a request costs while its run is measured and reported (the lifecycle
 * metrics' per-request arrays, allocator overhead): the residual of the maximum RSS of
 * 50,000 against 100,000 requests of 20 output tokens, rounded up. Measured when each
 * request also kept its 88-byte simsrv_req to the end (now a slot given back at
 * completion): 425 bytes per request, of which the arrays named then were 332. */
#define CLUSTER_OTHER_BYTES 96

/* A step's time is shared by every sequence that emits in it: with two or more a step on
 * average, which any run large enough to be refused has, under half a time a token. */
#define CLUSTER_TOKEN_BYTES (sizeof(sim_time) / 2)

uint64_t cluster_request_bytes(const scenario *s, uint32_t n_output)
{
    uint64_t kept = sizeof(sim_request_record) + (uint64_t)n_output * CLUSTER_TOKEN_BYTES;
    uint64_t running = sizeof(wl_req) + sizeof(sim_time) + sizeof(uint64_t);
    return kept * (s->n_routers ? s->n_routers : 1) + running + CLUSTER_OTHER_BYTES;
}
