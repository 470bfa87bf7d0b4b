/* ingest: ZMQ KV-event ingestion (see ingest.h for modes, trust, order and threads).
 *
 * Hand-off frames, receiver -> worker (inproc PUSH -> PULL, one pair per worker):
 *   ['E', endpoint name, topic, seq, payload]   an event batch
 *   ['R', endpoint name]                        the endpoint left: drop its index slot
 *   ['Q']                                       stop */
#define _GNU_SOURCE /* pthread_setname_np, gettid */
#include "ingest.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <zmq.h>

#include "kvingest.h"
#include "log.h"
#include "monoclock.h"
#include "replay.h"
#include "seqtrack.h"

#define NAME_MAX_LEN 256
#define REPLAY_MAX_BATCHES 100000   /* vLLM buffers 10,000 steps by default */
/* The receive pipes are sized in messages of the largest size seen; until one is seen,
 * this size is assumed (a 128-block BlockStored batch is about 45 KB). */
#define ASSUMED_MSG_BYTES (64u << 10)
#define TRIM_AFTER_BYTES (8u << 20)  /* a backlog past this gives memory back once drained */
#define TRIM_CALM_S 1.0              /* ... once no sign of it was seen for this long */

typedef struct counters {
    atomic_uint_fast64_t messages, bad_frames, rejected_pods, loose_matches;
    atomic_uint_fast64_t decode_errors[KVEV_ERR_COUNT];
    atomic_uint_fast64_t duplicates, gaps, restarts, missed;
    atomic_uint_fast64_t replays, replayed_batches, replay_failures, lost;
    atomic_uint_fast64_t endpoints_removed, apply_errors, lag_count;
    atomic_int_fast64_t stale_endpoints;
    atomic_uint_fast64_t lag_last_us, lag_max_us, lag_sum_us;
    atomic_uint_fast64_t queued_bytes, queue_peak_bytes, queue_dropped, trims;
} counters;

typedef struct worker {
    struct ingest *g;
    int idx;
    void *pull;                   /* owned by the worker thread */
    kvev_decoder *dec;
    kvingest **ki;                /* one per source */
    seqtrack *seq;
    char **stale;                 /* endpoints with unrecovered losses (their entries may be stale) */
    size_t n_stale;
    pthread_t th;
    bool started;
} worker;

/* The receiver's state. */
typedef struct rx_state {
    epset_snap known;             /* endpoints as last seen */
    char **hosts;                 /* discovery mode: the publishers the SUB is connected to (tcp://ip:port) */
    size_t n_hosts;
    char **warned;                /* pods already warned about (loose match), bounded */
    size_t n_warned;
    size_t max_msg;               /* largest message seen (bytes), at least ASSUMED_MSG_BYTES */
    int hwm;                      /* the SUB's ZMQ_RCVHWM now */
    double backlog_at;            /* monotonic time a backlog was last seen; 0: none since the last trim */
} rx_state;

struct ingest {
    ingest_config cfg;            /* cfg.sources: NULL, see sources */
    sched_kvsource *sources;      /* copies of cfg.sources (index pointer, keys, settings) */
    void *zctx;
    void *sub;                    /* owned by the receiver thread once it runs */
    void **push;                  /* receiver's PUSH sockets, one per worker */
    worker *workers;
    int n_workers;
    pthread_t rx;
    bool rx_started;
    size_t trim_after;            /* queued bytes that make a backlog worth a malloc_trim */
    atomic_bool stop;
    epset_snap initial;           /* the set at start; the receiver takes it over */
    rx_state rxs;                 /* the receiver's (ingest_feed's caller's when detached) */
    char bound[256];
    counters c;
};

uint32_t ingest_fnv1a32(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

void ingest_config_from_kvsource(ingest_config *cfg, sched_kvsource *const *srcs, size_t n, epset *endpoints)
{
    const sched_kvsource *src = srcs[0];
    *cfg = (ingest_config){.sources = srcs, .n_sources = n, .endpoints = endpoints,
                           .concurrency = src->events.concurrency, .discover_pods = src->events.discover_pods,
                           .socket_port = src->events.socket_port};
    snprintf(cfg->zmq_endpoint, sizeof cfg->zmq_endpoint, "%s", src->events.zmq_endpoint);
    snprintf(cfg->topic_filter, sizeof cfg->topic_filter, "%s", src->events.topic_filter);
}

int ingest_parse_replay(ingest_config *cfg, const char *spec, kv_err *err)
{
    const char *port = spec;
    if (!strncmp(spec, "tcp://", 6)) {
        const char *host = spec + 6, *colon = strrchr(host, ':');
        size_t hl = colon ? (size_t)(colon - host) : 0;
        bool wildcard = (hl == 1 && host[0] == '*') || (hl == 7 && !strncmp(host, "0.0.0.0", 7)) ||
                        (hl == 4 && !strncmp(host, "[::]", 4));
        if (!colon || !wildcard)
            return kv_err_set(err, KV_EINVAL,
                              "--kv-events-replay-endpoint '%s': each pod binds its own replay socket; give "
                              "tcp://*:PORT (vLLM's replay_endpoint) or PORT",
                              spec);
        port = colon + 1;
    }
    char *end;
    long v = strtol(port, &end, 10);
    if (!*port || *end || v < 1 || v > 65535)
        return kv_err_set(err, KV_EINVAL, "--kv-events-replay-endpoint '%s': no port in 1..65535", spec);
    cfg->replay_port = (int)v;
    return KV_OK;
}

static void inc(atomic_uint_fast64_t *a, uint64_t n) { atomic_fetch_add_explicit(a, n, memory_order_relaxed); }
static uint64_t get(const atomic_uint_fast64_t *a)
{
    return atomic_load_explicit((atomic_uint_fast64_t *)a, memory_order_relaxed);
}

/* ---- backlog bound ----------------------------------------------------------------------- */

/* Bytes an event message holds while queued for a worker: its topic, seq and payload
 * frames and the endpoint name the receiver adds. */
static size_t event_bytes(zmq_msg_t *frames3, size_t name_len)
{
    return zmq_msg_size(&frames3[0]) + zmq_msg_size(&frames3[1]) + zmq_msg_size(&frames3[2]) + name_len;
}

/* Receiver: admits a message to the hand-off queue, or drops it (counted) when the
 * queue would pass its half of the byte budget. The pod's next message then shows the
 * gap, which is replayed or counted lost like any other. Only the receiver adds, so the
 * check cannot be overtaken; workers only take off. */
static bool queue_admit(ingest *g, size_t bytes)
{
    uint64_t q = get(&g->c.queued_bytes);
    if (q + bytes > g->cfg.queue_bytes / 2) {
        inc(&g->c.queue_dropped, 1);
        return false;
    }
    q = atomic_fetch_add_explicit(&g->c.queued_bytes, bytes, memory_order_relaxed) + bytes;
    if (q > get(&g->c.queue_peak_bytes))
        atomic_store_explicit(&g->c.queue_peak_bytes, q, memory_order_relaxed);
    return true;
}

/* Worker: a message was applied (or skipped). */
static void queue_release(ingest *g, size_t bytes)
{
    atomic_fetch_sub_explicit(&g->c.queued_bytes, bytes, memory_order_relaxed);
}

/* The SUB keeps one receive pipe per publisher (pod), each of up to ZMQ_RCVHWM
 * messages: sized so that together they hold about the other half of the byte budget
 * in messages of the largest size seen (libzmq applies a new HWM to existing pipes). */
static int pipe_hwm(size_t queue_bytes, size_t msg_bytes, size_t pods)
{
    size_t per = queue_bytes / 2 / (msg_bytes * (pods ? pods : 1));
    return per < 8 ? 8 : per > 100000 ? 100000 : (int)per;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t host_part(const char *name, char *host, size_t cap)
{
    const char *colon = strrchr(name, ':');
    size_t n = colon ? (size_t)(colon - name) : strlen(name);
    if (n >= cap)
        n = cap - 1;
    memcpy(host, name, n);
    host[n] = 0;
    return n;
}

/* ---- worker ------------------------------------------------------------------------------ */

typedef struct apply_ctx {
    worker *w;
    const int *slots;             /* per source */
    const char *model;
    const char *name;
    uint64_t before;              /* replayed batches at or past this seq are the live ones */
    uint64_t last;
    long applied;
} apply_ctx;

/* Possibly-stale marks: set on an unrecovered loss, cleared when the pod clears its
 * whole cache (AllBlocksCleared: what the index holds for it is exact again) or leaves. */
static void stale_mark(worker *w, const char *name)
{
    for (size_t i = 0; i < w->n_stale; i++)
        if (!strcmp(w->stale[i], name))
            return;
    char **g = realloc(w->stale, (w->n_stale + 1) * sizeof *g);
    if (!g)
        return;
    w->stale = g;
    if ((g[w->n_stale] = strdup(name))) {
        w->n_stale++;
        atomic_fetch_add(&w->g->c.stale_endpoints, 1);
    }
}

static void stale_clear(worker *w, const char *name)
{
    for (size_t i = 0; i < w->n_stale; i++)
        if (!strcmp(w->stale[i], name)) {
            free(w->stale[i]);
            w->stale[i] = w->stale[--w->n_stale];
            atomic_fetch_sub(&w->g->c.stale_endpoints, 1);
            return;
        }
}

/* Decodes one batch payload into b (w's decoder: valid until its next decode); false,
 * counted and logged, when it is malformed. */
static bool decode_payload(worker *w, const char *name, const void *payload, size_t len, kvev_batch *b)
{
    ingest *g = w->g;
    kv_err err = {0};
    if (kvev_decode_batch(w->dec, payload, len, b, &err) == KV_OK)
        return true;
    inc(&g->c.decode_errors[kvev_decoder_last_reason(w->dec)], 1);
    LOG_V(1, "KV event batch rejected", "{s:s, s:s}", "pod", name, "error", err.msg);
    return false;
}

static void apply_batch(worker *w, const int *slots, const char *model, const char *name, uint64_t seq,
                        const kvev_batch *b)
{
    ingest *g = w->g;
    kv_err err = {0};
    if (b->ts > 0) {
        double lag = wall_now() - b->ts;
        uint64_t us = lag > 0 ? (uint64_t)(lag * 1e6) : 0;
        atomic_store_explicit(&g->c.lag_last_us, us, memory_order_relaxed);
        inc(&g->c.lag_sum_us, us);
        inc(&g->c.lag_count, 1);
        uint64_t max = get(&g->c.lag_max_us);
        while (us > max && !atomic_compare_exchange_weak(&g->c.lag_max_us, &max, us))
            ;
    }
    for (size_t i = 0; i < b->n_events; i++)
        if (b->events[i].type == KVEV_ALL_BLOCKS_CLEARED)
            stale_clear(w, name);
    for (size_t k = 0; k < g->cfg.n_sources; k++)
        if (kvingest_apply(w->ki[k], slots[k], model, b, &err) != KV_OK) {
            inc(&g->c.apply_errors, 1);
            LOG_E("KV event batch not fully applied", "{s:s, s:s}", "pod", name, "error", err.msg);
        }
    if (g->cfg.diag) {
        /* vLLM's block size, from a store of an indexed cache group (a hybrid model's
         * other groups have block sizes of their own, and are not indexed) */
        uint32_t engine_bs = 0;
        for (size_t i = 0; i < b->n_events && !engine_bs; i++) {
            const kvev_event *e = &b->events[i];
            if (e->type == KVEV_BLOCK_STORED &&
                (!e->has_group_idx || (e->kv_cache_spec_kind.s && kvingest_indexed_kind(e->kv_cache_spec_kind))))
                engine_bs = e->block_size;
        }
        kvdiag_events(g->cfg.diag, name, model, seq, engine_bs, g->sources[0].keys.block_size);
    }
}

static void apply_payload(worker *w, const int *slots, const char *model, const char *name, uint64_t seq,
                          const void *payload, size_t len)
{
    kvev_batch b;
    if (decode_payload(w, name, payload, len, &b))
        apply_batch(w, slots, model, name, seq, &b);
}

static int replay_cb(void *ctx, uint64_t seq, const void *payload, size_t len)
{
    apply_ctx *a = ctx;
    /* Only the missing range, in increasing order: the live message follows, and anything
     * newer will arrive live anyway. */
    if (seq >= a->before || (a->applied && seq <= a->last))
        return 0;
    apply_payload(a->w, a->slots, a->model, a->name, seq, payload, len);
    a->last = seq;
    a->applied++;
    inc(&a->w->g->c.replayed_batches, 1);
    return 0;
}

/* rank: the publisher's data-parallel rank, whose replay socket vLLM offsets by it. */
static void handle_gap(worker *w, const int *slots, const char *model, const char *name, const seqtrack_result *r,
                       uint64_t seq, int rank)
{
    ingest *g = w->g;
    inc(r->status == SEQTRACK_GAP ? &g->c.gaps : &g->c.restarts, 1);
    inc(&g->c.missed, r->missed);
    if (!r->missed)
        return;   /* a publisher restarted at seq 0: nothing was lost */
    if (g->cfg.replay_port > 0) {
        char host[NAME_MAX_LEN], ep[NAME_MAX_LEN + 32];
        host_part(name, host, sizeof host);
        snprintf(ep, sizeof ep, "tcp://%s:%d", host, g->cfg.replay_port + rank);
        apply_ctx a = {.w = w, .slots = slots, .model = model, .name = name, .before = seq};
        kv_err err = {0};
        inc(&g->c.replays, 1);
        long rc = replay_fetch(g->zctx, ep, r->replay_from, g->cfg.replay_timeout_ms, REPLAY_MAX_BATCHES,
                               replay_cb, &a, &err);
        uint64_t got = a.applied > 0 ? (uint64_t)a.applied : 0;
        if (rc >= 0 && got >= r->missed)
            return;
        if (rc < 0)
            inc(&g->c.replay_failures, 1);
        inc(&g->c.lost, r->missed > got ? r->missed - got : 0);
        stale_mark(w, name);
        LOG_W("KV event replay incomplete; the pod's index entries may be stale",
              "{s:s, s:s, s:I, s:I, s:s}", "pod", name, "replayEndpoint", ep, "missed", (json_int_t)r->missed,
              "replayed", (json_int_t)got, "error", rc < 0 ? err.msg : "batches no longer buffered");
        return;
    }
    inc(&g->c.lost, r->missed);
    stale_mark(w, name);
    LOG_W("KV events lost; the pod's index entries may be stale (no replay socket configured)",
          "{s:s, s:s, s:I, s:I}", "pod", name, "kind", seqtrack_status_name(r->status), "missed",
          (json_int_t)r->missed, "seq", (json_int_t)seq);
}

/* An event batch for endpoint name[0..nl): the received message's frames f (topic, seq,
 * payload). The batch's data_parallel_rank may name another endpoint of the same pod
 * (epset_match_rank): sequence tracking, replay and the index slot are that rank's. */
static void worker_event(worker *w, const char *ep, size_t nl, const ingest_frame *f)
{
    ingest *g = w->g;
    char topic_ep[NAME_MAX_LEN], name[NAME_MAX_LEN], model[512];
    if (nl >= sizeof topic_ep)
        return;   /* the receiver never forwards such names */
    memcpy(topic_ep, ep, nl);
    topic_ep[nl] = 0;
    kvev_topic t;
    kvev_topic_parse(f[0].data, f[0].len, &t);
    size_t ml = t.model.len < sizeof model ? t.model.len : sizeof model - 1;
    memcpy(model, t.model.s, ml);
    model[ml] = 0;
    uint64_t seq = 0;
    kvev_seq_parse(f[1].data, f[1].len, &seq, NULL);

    kvev_batch b;
    bool decoded = decode_payload(w, topic_ep, f[2].data, f[2].len, &b);
    int64_t rank = decoded && b.has_dp_rank && b.data_parallel_rank > 0 ? b.data_parallel_rank : 0;
    if (!epset_match_rank(g->cfg.endpoints, topic_ep, rank, name, sizeof name)) {
        inc(&g->c.rejected_pods, 1);
        LOG_V(1, "KV events of a data-parallel rank that is not a known endpoint were rejected",
              "{s:s, s:I}", "topicPod", topic_ep, "dataParallelRank", (json_int_t)rank);
        return;
    }
    nl = strlen(name);
    kv_err err = {0};
    int slots[g->cfg.n_sources];
    for (size_t k = 0; k < g->cfg.n_sources; k++)
        if ((slots[k] = kvindex_endpoint_add(g->sources[k].index, name, &err)) < 0) {
            inc(&g->c.apply_errors, 1);
            LOG_E("No index slot for endpoint", "{s:s, s:s}", "pod", name, "error", err.msg);
            return;
        }
    seqtrack_result r;
    if (seqtrack_observe(w->seq, name, nl, seq, &r, &err) == KV_OK) {
        if (r.status == SEQTRACK_DUPLICATE) {
            inc(&g->c.duplicates, 1);
            return;
        }
        if (r.status == SEQTRACK_GAP || r.status == SEQTRACK_RESTART) {
            handle_gap(w, slots, model, name, &r, seq, (int)rank);
            /* the replay decoded with the same decoder: read the live batch again */
            decoded = decoded && decode_payload(w, name, f[2].data, f[2].len, &b);
        }
    }
    if (decoded)
        apply_batch(w, slots, model, name, seq, &b);
}

/* The frames' data and sizes, as the ingest_frame view the shared code reads. */
static void frames_of(zmq_msg_t *m, size_t n, ingest_frame *f)
{
    for (size_t i = 0; i < n; i++)
        f[i] = (ingest_frame){.data = zmq_msg_data(&m[i]), .len = zmq_msg_size(&m[i])};
}

static void worker_remove(worker *w, const zmq_msg_t *namef)
{
    ingest *g = w->g;
    char name[NAME_MAX_LEN];
    size_t nl = zmq_msg_size((zmq_msg_t *)namef);
    if (nl >= sizeof name)
        return;
    memcpy(name, zmq_msg_data((zmq_msg_t *)namef), nl);
    name[nl] = 0;
    seqtrack_forget(w->seq, name, nl);
    stale_clear(w, name);
    bool removed = false;
    for (size_t k = 0; k < g->cfg.n_sources; k++) {
        kvindex *ix = g->sources[k].index;
        int slot = kvindex_endpoint_find(ix, name);
        if (slot < 0)
            continue;
        kvingest_forget_endpoint(w->ki[k], slot);
        kvindex_endpoint_remove(ix, slot);
        removed = true;
    }
    if (!removed)
        return;
    inc(&g->c.endpoints_removed, 1);
    LOG_I("Endpoint left; its KV-cache index entries were removed", "{s:s}", "pod", name);
}

/* Ingestion is throughput work that may lag a little (the lag is counted); routing
 * decisions are not. A nicer ingest thread lets a waking ext-proc worker preempt it at
 * once instead of after its time slice: on a shared core that slice was the tail of the
 * decision latency (bench_extproc with events). Raising one's own nice needs no
 * privilege; on failure the thread just keeps the default. */
#define INGEST_NICE 5
static void ingest_thread_setup(const char *name)
{
    pthread_setname_np(pthread_self(), name);
    setpriority(PRIO_PROCESS, (id_t)gettid(), INGEST_NICE);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "epp-ingest-%d", w->idx);
    ingest_thread_setup(name);
    for (;;) {
        zmq_msg_t f[5];
        size_t n = 0;
        bool more = true;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, w->pull, 0) < 0) {
                zmq_msg_close(&m);
                if (zmq_errno() == EINTR)
                    continue;
                goto out;   /* context terminated */
            }
            more = zmq_msg_more(&m);
            if (n < 5)
                f[n++] = m;
            else
                zmq_msg_close(&m);
        }
        char kind = zmq_msg_size(&f[0]) ? *(char *)zmq_msg_data(&f[0]) : 0;
        if (kind == 'E' && n == 5) {
            ingest_frame ev[3];
            frames_of(&f[2], 3, ev);
            size_t bytes = event_bytes(&f[2], zmq_msg_size(&f[1]));
            worker_event(w, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ev);
            queue_release(w->g, bytes);
        } else if (kind == 'R' && n == 2)
            worker_remove(w, &f[1]);
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
        if (kind == 'Q')
            break;
    }
out:
    zmq_close(w->pull);
    w->pull = NULL;
    return NULL;
}

/* ---- receiver ---------------------------------------------------------------------------- */

#define MAX_WARNED 4096

/* Workers are chosen by the endpoint's host, so every data-parallel rank of a pod (whose
 * batches arrive under the pod's one topic, epset_match_rank) has its sequence, index
 * slot and departure handled by the same worker. */
static void send_to(ingest *g, const char *name, size_t nl, char kind, zmq_msg_t *rest, size_t n_rest)
{
    size_t hl = nl;
    while (hl && name[hl - 1] != ':')
        hl--;
    void *p = g->push[ingest_fnv1a32(name, hl ? hl - 1 : nl) % (uint32_t)g->n_workers];
    zmq_send(p, &kind, 1, ZMQ_SNDMORE);
    zmq_send(p, name, nl, n_rest ? ZMQ_SNDMORE : 0);
    for (size_t i = 0; i < n_rest; i++)
        zmq_msg_send(&rest[i], p, i + 1 < n_rest ? ZMQ_SNDMORE : 0);
}

static void rx_size_pipes(ingest *g, rx_state *st)
{
    int hwm = pipe_hwm(g->cfg.queue_bytes, st->max_msg, st->known.n);
    if (hwm != st->hwm && zmq_setsockopt(g->sub, ZMQ_RCVHWM, &hwm, sizeof hwm) == 0)
        st->hwm = hwm;
}

/* Discovery mode: the PUB socket of an endpoint's rank, which vLLM offsets by the rank
 * from socketPort (llm-d-router dials SocketPort + RankIndex the same way). */
static void sub_endpoint(const ingest *g, const char *name, char *out, size_t cap)
{
    char h[NAME_MAX_LEN];
    host_part(name, h, sizeof h);
    int k = epset_rank_index(g->cfg.endpoints, name);
    snprintf(out, cap, "tcp://%s:%d", h, g->cfg.socket_port + (k > 0 ? k : 0));
}

/* Applies an endpoint-set change: departed endpoints lose their index slot (through their
 * worker), and in discovery mode the SUB follows the endpoints' publishers. */
static void rx_follow(ingest *g, rx_state *st)
{
    epset_snap now;
    kv_err err = {0};
    if (epset_snapshot(g->cfg.endpoints, &now, &err) != KV_OK)
        return;   /* retried on the next poll: the generation is re-read */
    for (size_t i = 0; i < st->known.n; i++)
        if (!epset_snap_has(&now, st->known.names[i]))
            send_to(g, st->known.names[i], strlen(st->known.names[i]), 'R', NULL, 0);
    if (g->cfg.discover_pods) {
        char (*want)[NAME_MAX_LEN + 32] = calloc(now.n ? now.n : 1, sizeof *want);
        if (!want) {
            epset_snap_free(&now);
            return;   /* retried on the next poll */
        }
        for (size_t i = 0; i < now.n; i++)
            sub_endpoint(g, now.names[i], want[i], sizeof want[i]);
        for (size_t i = 0; i < st->n_hosts;) {
            bool keep = false;
            for (size_t j = 0; j < now.n && !keep; j++)
                keep = !strcmp(want[j], st->hosts[i]);
            if (keep) {
                i++;
                continue;
            }
            zmq_disconnect(g->sub, st->hosts[i]);
            free(st->hosts[i]);
            st->hosts[i] = st->hosts[--st->n_hosts];
        }
        for (size_t i = 0; i < now.n; i++) {
            bool have = false;
            for (size_t j = 0; j < st->n_hosts && !have; j++)
                have = !strcmp(st->hosts[j], want[i]);
            char **grown = have ? NULL : realloc(st->hosts, (st->n_hosts + 1) * sizeof *grown);
            if (!grown)
                continue;
            st->hosts = grown;
            if (zmq_connect(g->sub, want[i]) != 0) {
                LOG_W("Cannot connect to a pod's KV-event publisher", "{s:s, s:s}", "endpoint", want[i], "error",
                      zmq_strerror(zmq_errno()));
                continue;
            }
            if ((st->hosts[st->n_hosts] = strdup(want[i])))
                st->n_hosts++;
        }
        free(want);
    }
    epset_snap_free(&st->known);
    st->known = now;
    rx_size_pipes(g, st);
}

static void rx_warn_loose(rx_state *st, const char *pod, size_t len, const char *name)
{
    for (size_t i = 0; i < st->n_warned; i++)
        if (strlen(st->warned[i]) == len && !memcmp(st->warned[i], pod, len))
            return;
    if (st->n_warned < MAX_WARNED) {
        char **g = realloc(st->warned, (st->n_warned + 1) * sizeof *g);
        if (g && (g[st->n_warned] = strndup(pod, len)))
            st->n_warned++;
        if (g)
            st->warned = g;
    }
    bool bare = memchr(pod, ':', len) == NULL;
    LOG_W(bare ? "KV-event topic names the pod by IP only (llm-d <= v0.6 form); matched to the endpoint by IP"
               : "KV-event topic names the pod by ip:port, but with another port than the endpoint's; matched by IP",
          "{s:s%, s:s, s:s}", "topicPod", pod, len, "endpoint", name, "form", bare ? "ip" : "ip:port");
}

/* One received message: n frames, the first min(n, 3) in f (first: its first frame as
 * received, for the sender's address; NULL when fed). True when it is an event batch of
 * a known endpoint, whose name is then in name. */
static bool rx_accept(ingest *g, rx_state *st, const ingest_frame *f, size_t n, zmq_msg_t *first,
                      char name[NAME_MAX_LEN])
{
    if (n != 3) {
        inc(&g->c.bad_frames, 1);
        return false;
    }
    inc(&g->c.messages, 1);
    size_t fl = strlen(g->cfg.topic_filter);
    if (fl && (f[0].len < fl || memcmp(f[0].data, g->cfg.topic_filter, fl))) {
        if (g->cfg.diag)
            kvdiag_topic(g->cfg.diag, first ? zmq_msg_gets(first, "Peer-Address") : NULL, f[0].data, f[0].len,
                         g->cfg.topic_filter);
        return false;
    }
    kvev_topic t;
    if (!kvev_topic_parse(f[0].data, f[0].len, &t)) {
        inc(&g->c.decode_errors[KVEV_ERR_TOPIC], 1);
        return false;
    }
    uint64_t seq;
    if (kvev_seq_parse(f[1].data, f[1].len, &seq, NULL) != KV_OK) {
        inc(&g->c.decode_errors[KVEV_ERR_SEQ], 1);
        return false;
    }
    epset_match m = epset_match_pod(g->cfg.endpoints, t.pod.s, t.pod.len, name, NAME_MAX_LEN);
    if (m == EPSET_NO_MATCH) {
        if (g->cfg.diag)
            kvdiag_unknown_pod(g->cfg.diag, t.pod.s, t.pod.len, t.model.s, t.model.len);
        uint64_t r = atomic_fetch_add(&g->c.rejected_pods, 1) + 1;
        if ((r & (r - 1)) == 0)   /* 1st, 2nd, 4th, ...: visible without flooding the log */
            LOG_W("KV events from a pod that is not a known endpoint were rejected", "{s:s%, s:I}", "topicPod",
                  t.pod.s, t.pod.len, "rejectedTotal", (json_int_t)r);
        return false;
    }
    if (m == EPSET_LOOSE) {
        inc(&g->c.loose_matches, 1);
        rx_warn_loose(st, t.pod.s, t.pod.len, name);
    }
    return true;
}

/* One received message (frames m[0..n), the first min(n, 3) kept). Consumes the frames
 * it forwards. */
static void rx_message(ingest *g, rx_state *st, zmq_msg_t *m, size_t n)
{
    ingest_frame f[3];
    frames_of(m, n < 3 ? n : 3, f);
    char name[NAME_MAX_LEN];
    if (!rx_accept(g, st, f, n, &m[0], name))
        return;
    size_t nl = strlen(name), bytes = event_bytes(m, nl);
    if (bytes > st->max_msg) {
        st->max_msg = bytes;
        rx_size_pipes(g, st);
    }
    if (queue_admit(g, bytes))
        send_to(g, name, nl, 'E', m, 3);
}

static void rx_state_free(rx_state *st)
{
    epset_snap_free(&st->known);
    for (size_t i = 0; i < st->n_hosts; i++)
        free(st->hosts[i]);
    free(st->hosts);
    for (size_t i = 0; i < st->n_warned; i++)
        free(st->warned[i]);
    free(st->warned);
    *st = (rx_state){0};
}

/* After a backlog, hands the memory it took back to the system: the frames were
 * allocated by libzmq's I/O thread, the requests that piled up meanwhile by the ext-proc
 * threads, and extproc_keep_heap's trim threshold (there so the ext-proc hot path keeps
 * its heap between requests) would keep all of it for good. A backlog is a drain pass
 * that found more than the trim mark waiting, or a hand-off queue above it; the trim
 * waits until neither was seen for TRIM_CALM_S, so what the backlog held has been freed
 * (trimming as soon as the queue first emptied kept what was freed after). malloc_trim
 * walks every arena once: the hot path pays a few page faults per backlog, never per
 * request. */
static void rx_trim(ingest *g, rx_state *st, size_t pass_bytes)
{
    double now = monoclock_s();
    if (pass_bytes > g->trim_after || get(&g->c.queued_bytes) > g->trim_after)
        st->backlog_at = now;
    else if (st->backlog_at > 0 && now - st->backlog_at > TRIM_CALM_S) {
        st->backlog_at = 0;
        malloc_trim(0);
        inc(&g->c.trims, 1);
    }
}

static void *rx_main(void *arg)
{
    ingest *g = arg;
    ingest_thread_setup("epp-kv-rx");
    rx_state *st = &g->rxs;
    st->known = g->initial;
    st->max_msg = ASSUMED_MSG_BYTES;
    st->hwm = pipe_hwm(g->cfg.queue_bytes, ASSUMED_MSG_BYTES, 1);
    g->initial = (epset_snap){0};
    uint64_t gen = epset_generation(g->cfg.endpoints);
    rx_follow(g, st);   /* catches changes since ingest_start, connects in discovery mode */
    while (!atomic_load(&g->stop)) {
        zmq_pollitem_t pi = {.socket = g->sub, .events = ZMQ_POLLIN};
        zmq_poll(&pi, 1, 50);
        uint64_t now_gen = epset_generation(g->cfg.endpoints);
        if (now_gen != gen) {
            gen = now_gen;
            rx_follow(g, st);
        }
        /* Bounded drain, so endpoint changes and stop are seen under a flood too; its
         * size tells rx_trim whether messages piled up in the receive pipes. */
        size_t pass_bytes = 0;
        for (int k = 0; k < 1024; k++) {
            zmq_msg_t f[3];
            size_t n = 0;
            bool more = true;
            while (more) {
                zmq_msg_t m;
                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, g->sub, n ? 0 : ZMQ_DONTWAIT) < 0) {
                    zmq_msg_close(&m);
                    break;
                }
                more = zmq_msg_more(&m);
                if (n < 3)
                    f[n] = m;
                else
                    zmq_msg_close(&m);
                n++;
            }
            if (!n)
                break;
            for (size_t i = 0; i < n && i < 3; i++)
                pass_bytes += zmq_msg_size(&f[i]);
            rx_message(g, st, f, n);
            for (size_t i = 0; i < n && i < 3; i++)
                zmq_msg_close(&f[i]);
        }
        rx_trim(g, st, pass_bytes);
    }
    for (int i = 0; i < g->n_workers; i++)
        zmq_send(g->push[i], "Q", 1, 0);
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void *zsock(ingest *g, int type)
{
    void *s = zmq_socket(g->zctx, type);
    int zero = 0;
    if (s)
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    return s;
}

/* What both modes share: the config with its defaults, n_workers workers' decoder,
 * ingester and seq tracker, and the initial endpoint set. NULL with err set on failure. */
static ingest *ingest_new(const ingest_config *cfg, int n_workers, kv_err *err)
{
    if (!cfg->n_sources || !cfg->sources || !cfg->endpoints) {
        kv_err_set(err, KV_EINVAL, "ingest: sources and endpoints are required");
        return NULL;
    }
    ingest *g = calloc(1, sizeof *g);
    if (!g) {
        kv_err_set(err, KV_ENOMEM, "ingest: out of memory");
        return NULL;
    }
    g->cfg = *cfg;
    if (!(g->sources = calloc(cfg->n_sources, sizeof *g->sources))) {
        free(g);
        kv_err_set(err, KV_ENOMEM, "ingest: out of memory");
        return NULL;
    }
    for (size_t k = 0; k < cfg->n_sources; k++)
        g->sources[k] = *cfg->sources[k];
    g->cfg.sources = NULL;
    if (g->cfg.replay_timeout_ms <= 0)
        g->cfg.replay_timeout_ms = 1000;
    if (!g->cfg.queue_bytes)
        g->cfg.queue_bytes = INGEST_QUEUE_BYTES_DEFAULT;
    g->trim_after = g->cfg.queue_bytes / 4 < TRIM_AFTER_BYTES ? g->cfg.queue_bytes / 4 : TRIM_AFTER_BYTES;
    g->n_workers = n_workers;
    if (!(g->workers = calloc((size_t)n_workers, sizeof *g->workers))) {
        kv_err_set(err, KV_ENOMEM, "ingest: out of memory");
        goto fail;
    }
    for (int i = 0; i < n_workers; i++) {
        worker *w = &g->workers[i];
        w->g = g;
        w->idx = i;
        if (!(w->dec = kvev_decoder_new(0, err)) || !(w->seq = seqtrack_new(err)))
            goto fail;
        if (!(w->ki = calloc(g->cfg.n_sources, sizeof *w->ki))) {
            kv_err_set(err, KV_ENOMEM, "ingest: out of memory");
            goto fail;
        }
        for (size_t k = 0; k < g->cfg.n_sources; k++)
            if (!(w->ki[k] = kvingest_new(g->sources[k].index, &g->sources[k].keys, err)))
                goto fail;
    }
    /* The indexes hold only endpoints of the set: slots left from before (a restarted
     * ingest) are dropped while no thread runs yet. */
    if (epset_snapshot(g->cfg.endpoints, &g->initial, err) != KV_OK)
        goto fail;
    for (size_t k = 0; k < g->cfg.n_sources; k++) {
        kvindex *ix = g->sources[k].index;
        for (uint32_t slot = 0; slot < kvindex_max_endpoints(ix); slot++) {
            const char *name = kvindex_endpoint_name(ix, (int)slot);
            if (name && !epset_snap_has(&g->initial, name))
                kvindex_endpoint_remove(ix, (int)slot);
        }
    }
    return g;
fail:
    ingest_stop(g);
    return NULL;
}

ingest *ingest_start(const ingest_config *cfg, kv_err *err)
{
    if (cfg->discover_pods && (cfg->socket_port < 1 || cfg->socket_port > 65535)) {
        kv_err_set(err, KV_EINVAL, "ingest: kvEventsConfig.socketPort %d is not a port", cfg->socket_port);
        return NULL;
    }
    ingest *g = ingest_new(cfg, cfg->concurrency > 0 ? cfg->concurrency : 4, err);
    if (!g)
        return NULL;
    g->cfg.concurrency = g->n_workers;
    g->zctx = zmq_ctx_new();
    g->push = calloc((size_t)g->n_workers, sizeof *g->push);
    if (!g->zctx || !g->push) {
        kv_err_set(err, KV_ENOMEM, "ingest: out of memory");
        goto fail;
    }
    if (!(g->sub = zsock(g, ZMQ_SUB))) {
        kv_err_set(err, KV_EIO, "ingest: SUB socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    /* pods unknown yet: one pipe gets it all until the receiver sizes them (rx_size_pipes) */
    int hwm = pipe_hwm(g->cfg.queue_bytes, ASSUMED_MSG_BYTES, 1);
    zmq_setsockopt(g->sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(g->sub, ZMQ_SUBSCRIBE, "", 0);   /* every topic: rx_accept filters and reports */
    if (!g->cfg.discover_pods) {
        if (zmq_bind(g->sub, g->cfg.zmq_endpoint) != 0) {
            kv_err_set(err, KV_EIO, "ingest: cannot bind kvEventsConfig.zmqEndpoint '%s': %s", g->cfg.zmq_endpoint,
                       zmq_strerror(zmq_errno()));
            goto fail;
        }
        size_t len = sizeof g->bound;
        zmq_getsockopt(g->sub, ZMQ_LAST_ENDPOINT, g->bound, &len);
    }
    for (int i = 0; i < g->n_workers; i++) {
        worker *w = &g->workers[i];
        char addr[64];
        snprintf(addr, sizeof addr, "inproc://kvingest-%d", i);
        w->pull = zsock(g, ZMQ_PULL);
        g->push[i] = zsock(g, ZMQ_PUSH);
        /* No message limit on the hand-off: queue_admit bounds it in bytes, so the
         * receiver never blocks (and the endpoint-removal and stop messages always pass). */
        int unlimited = 0;
        if (w->pull && g->push[i]) {
            zmq_setsockopt(w->pull, ZMQ_RCVHWM, &unlimited, sizeof unlimited);
            zmq_setsockopt(g->push[i], ZMQ_SNDHWM, &unlimited, sizeof unlimited);
        }
        if (!w->pull || !g->push[i] || zmq_bind(w->pull, addr) || zmq_connect(g->push[i], addr)) {
            kv_err_set(err, KV_EIO, "ingest: worker %d socket: %s", i, zmq_strerror(zmq_errno()));
            goto fail;
        }
    }
    for (int i = 0; i < g->n_workers; i++) {
        if (pthread_create(&g->workers[i].th, NULL, worker_main, &g->workers[i])) {
            kv_err_set(err, KV_EIO, "ingest: cannot start worker %d", i);
            goto fail;
        }
        g->workers[i].started = true;
    }
    if (pthread_create(&g->rx, NULL, rx_main, g)) {
        kv_err_set(err, KV_EIO, "ingest: cannot start the receiver");
        goto fail;
    }
    g->rx_started = true;
    return g;
fail:
    ingest_stop(g);
    return NULL;
}

ingest *ingest_detached(const ingest_config *cfg, kv_err *err)
{
    if (cfg->replay_port > 0) {
        kv_err_set(err, KV_EINVAL, "ingest: a detached ingest cannot replay (no sockets)");
        return NULL;
    }
    return ingest_new(cfg, 1, err);
}

void ingest_feed(ingest *g, const ingest_frame *f, size_t n)
{
    char name[NAME_MAX_LEN];
    if (rx_accept(g, &g->rxs, f, n, NULL, name))
        worker_event(&g->workers[0], name, strlen(name), f);
}

const char *ingest_endpoint(const ingest *g) { return g->bound; }

const sched_kvsource *ingest_sources(const ingest *g, size_t *n)
{
    *n = g->cfg.n_sources;
    return g->sources;
}

static bool same_events(const pps_kvevents *a, const pps_kvevents *b)
{
    return !strcmp(a->zmq_endpoint, b->zmq_endpoint) && !strcmp(a->topic_filter, b->topic_filter) &&
           a->concurrency == b->concurrency && a->discover_pods == b->discover_pods &&
           a->socket_port == b->socket_port && !strcmp(a->pod_label_selector, b->pod_label_selector) &&
           !strcmp(a->pod_namespace, b->pod_namespace);
}

int ingest_start_sources(sched_kvsource *const *srcs, size_t n, epset *endpoints, const ingest_config *opts,
                         ingest **out, size_t *n_out, kv_err *err)
{
    *n_out = 0;
    sched_kvsource **group = calloc(n ? n : 1, sizeof *group);
    if (!group)
        return kv_err_set(err, KV_ENOMEM, "ingest: out of memory");
    int rc = KV_OK;
    for (size_t i = 0; i < n && rc == KV_OK; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = same_events(&srcs[j]->events, &srcs[i]->events);
        if (seen)
            continue;   /* fed by the ingest of the first source with its settings */
        size_t m = 0;
        for (size_t k = i; k < n; k++)
            if (same_events(&srcs[i]->events, &srcs[k]->events))
                group[m++] = srcs[k];
        ingest_config ic;
        ingest_config_from_kvsource(&ic, group, m, endpoints);
        if (opts) {
            ic.replay_port = opts->replay_port;
            ic.replay_timeout_ms = opts->replay_timeout_ms;
            ic.queue_bytes = opts->queue_bytes;
            ic.diag = opts->diag;
            if (opts->zmq_endpoint[0])
                snprintf(ic.zmq_endpoint, sizeof ic.zmq_endpoint, "%s", opts->zmq_endpoint);
        }
        if ((out[*n_out] = ingest_start(&ic, err)))
            ++*n_out;
        else
            rc = err && err->code ? err->code : KV_EIO;
    }
    free(group);
    if (rc != KV_OK)
        while (*n_out)
            ingest_stop(out[--*n_out]);
    return rc;
}

void ingest_stop(ingest *g)
{
    if (!g)
        return;
    atomic_store(&g->stop, true);
    if (g->rx_started)
        pthread_join(g->rx, NULL);
    else
        for (int i = 0; i < g->n_workers && g->push; i++)
            if (g->push[i] && g->workers[i].started)
                zmq_send(g->push[i], "Q", 1, 0);
    for (int i = 0; i < g->n_workers && g->workers; i++) {
        worker *w = &g->workers[i];
        if (w->started)
            pthread_join(w->th, NULL);
        else if (w->pull)
            zmq_close(w->pull);
        kvev_decoder_free(w->dec);
        for (size_t k = 0; w->ki && k < g->cfg.n_sources; k++)
            kvingest_free(w->ki[k]);
        free(w->ki);
        seqtrack_free(w->seq);
        for (size_t j = 0; j < w->n_stale; j++)
            free(w->stale[j]);
        free(w->stale);
    }
    for (int i = 0; i < g->n_workers && g->push; i++)
        if (g->push[i])
            zmq_close(g->push[i]);
    if (g->sub)
        zmq_close(g->sub);
    if (g->zctx)
        zmq_ctx_term(g->zctx);
    epset_snap_free(&g->initial);
    rx_state_free(&g->rxs);
    free(g->push);
    free(g->workers);
    free(g->sources);
    free(g);
}

void ingest_get_stats(const ingest *g, ingest_stats *out)
{
    *out = (ingest_stats){0};
    const counters *c = &g->c;
    out->messages = get(&c->messages);
    out->bad_frames = get(&c->bad_frames);
    out->rejected_pods = get(&c->rejected_pods);
    out->loose_matches = get(&c->loose_matches);
    for (int r = 0; r < KVEV_ERR_COUNT; r++)
        out->decode_errors[r] = get(&c->decode_errors[r]);
    out->duplicates = get(&c->duplicates);
    out->gaps = get(&c->gaps);
    out->restarts = get(&c->restarts);
    out->missed = get(&c->missed);
    out->replays = get(&c->replays);
    out->replayed_batches = get(&c->replayed_batches);
    out->replay_failures = get(&c->replay_failures);
    out->lost = get(&c->lost);
    out->endpoints_removed = get(&c->endpoints_removed);
    out->apply_errors = get(&c->apply_errors);
    int64_t stale = atomic_load(&((counters *)c)->stale_endpoints);
    out->stale_endpoints = stale > 0 ? (uint64_t)stale : 0;
    out->lag_count = get(&c->lag_count);
    out->lag_last_s = get(&c->lag_last_us) * 1e-6;
    out->lag_max_s = get(&c->lag_max_us) * 1e-6;
    out->lag_sum_s = get(&c->lag_sum_us) * 1e-6;
    out->queued_bytes = get(&c->queued_bytes);
    out->queue_peak_bytes = get(&c->queue_peak_bytes);
    out->queue_limit_bytes = g->cfg.queue_bytes;
    out->queue_dropped = get(&c->queue_dropped);
    out->memory_trims = get(&c->trims);
    for (int i = 0; i < g->n_workers; i++)
        for (size_t k = 0; g->workers[i].ki && k < g->cfg.n_sources; k++) {
            kvingest_stats ks;
            if (!g->workers[i].ki[k])
                continue;
            kvingest_get_stats(g->workers[i].ki[k], &ks);
            /* every source applies the same batches: count them once */
            for (int t = 0; k == 0 && t < KVEV_TYPE_COUNT; t++)
                out->events[t] += ks.events[t];
            out->batches += k == 0 ? ks.batches : 0;
            out->blocks_stored += ks.blocks_stored;
            out->blocks_removed += ks.blocks_removed;
            out->orphans += ks.orphans;
        }
}
