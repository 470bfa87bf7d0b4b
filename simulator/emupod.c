/* emupod: an emulated vLLM pod driven by the wall clock (see emupod.h). */
#include "emupod.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "monoclock.h"
#include "rng.h"

struct emupod_req {
    simsrv_req sr;                     /* what the model sees; sr.user = this */
    emupod *pod;
    bool aborted;                      /* out of the model; freed once no step result names it */
    uint32_t *tokens;
    emupod_sink sink;                  /* ctx NULL: detached */
    int64_t t_arrival, t_last;         /* monotonic us */
    bool queued;                       /* not yet scheduled once (queue time not yet observed) */
    emupod_req *prev, *next;           /* the pod's live requests */
};

/* One buffered batch for replay. */
typedef struct rbatch {
    uint64_t seq;
    uint8_t *data;
    size_t len;
} rbatch;

struct emupod {
    emupod_config cfg;
    struct event_base *base;
    simsrv *srv;
    struct event *step_timer;
    bool busy;                         /* a step is in flight */
    int64_t t_step_start, t_step_end;  /* monotonic us; end = start + duration (already / speedup) */
    simsrv_step_result res;
    emupod_req *live;                  /* every request between submit and done */
    uint64_t next_id;
    emumet_pod met;

    void *pub, *router;
    struct event *router_ev;
    char topic[512];
    uint64_t seq;
    rbatch *ring;                      /* replay buffer: the last replay_steps batches */
    size_t ring_head, ring_len;
    kvev_buf payload;                  /* the batch being published: a step's, or a reset's */
    rng rng;
    emupod_stats st;
};

static int64_t real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* --- KV events ------------------------------------------------------------------------ */

static void keep_for_replay(emupod *p, uint64_t seq, const uint8_t *data, size_t len)
{
    if (!p->ring) return;
    size_t cap = p->cfg.replay_steps;
    rbatch *b;
    if (p->ring_len == cap) {
        b = &p->ring[p->ring_head];
        p->ring_head = (p->ring_head + 1) % cap;
    } else {
        b = &p->ring[(p->ring_head + p->ring_len++) % cap];
    }
    uint8_t *d = realloc(b->data, len ? len : 1);
    if (!d) {   /* the oldest entry goes instead; a replay then reports it missing */
        free(b->data);
        *b = (rbatch){.seq = UINT64_MAX};
        return;
    }
    memcpy(d, data, len);
    *b = (rbatch){.seq = seq, .data = d, .len = len};
}

static void seq_be(uint64_t seq, uint8_t out[8])
{
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(seq >> (56 - 8 * i));
}

/* Publishes one batch: next sequence number, replay buffer, PUB unless dropped. */
static void publish(emupod *p, const uint8_t *data, size_t len)
{
    uint64_t seq = p->seq++;
    p->st.batches++;
    keep_for_replay(p, seq, data, len);
    /* the first batch after a start or restart is always sent: a router cannot see a
     * gap before the first sequence number it receives */
    if (seq > 0 && p->cfg.drop_batches > 0 && rng_01(&p->rng) < p->cfg.drop_batches) {
        p->st.dropped++;
        return;
    }
    uint8_t be[8];
    seq_be(seq, be);
    /* PUB never blocks: at the high-water mark ZMQ drops, as vLLM's publisher does */
    zmq_send(p->pub, p->topic, strlen(p->topic), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(p->pub, be, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(p->pub, data, len, ZMQ_DONTWAIT);
}

static int publish_cleared(emupod *p, kv_err *err)
{
    kvev_event ev = {.type = KVEV_ALL_BLOCKS_CLEARED};
    kvev_batch b = {.ts = (double)real_us() / 1e6, .has_dp_rank = true, .events = &ev, .n_events = 1};
    int rc = kvev_encode(&b, p->cfg.srv.kv_encoding, &p->payload, err);
    if (rc == KV_OK) publish(p, p->payload.data, p->payload.len);
    return rc;
}

/* Publishes the KV events of the step that just ended. Out of memory, the batch is lost
 * as a dropped one is: its number is used, so the router sees the gap. */
static void publish_step(emupod *p)
{
    p->payload.len = 0;
    if (simsrv_kv_encode(p->srv, &p->payload) == KV_OK) {
        publish(p, p->payload.data, p->payload.len);
        return;
    }
    p->seq++;
    p->st.batches++;
    p->st.dropped++;
}

/* One replay request: [id, "", seq8]. Malformed requests are ignored (vLLM logs them). */
static void replay_one(emupod *p, zmq_msg_t *f, int n)
{
    if (n != 3 || zmq_msg_size(&f[1]) != 0 || zmq_msg_size(&f[2]) != 8) return;
    p->st.replays++;
    const uint8_t *s = zmq_msg_data(&f[2]);
    uint64_t start = 0;
    for (int i = 0; i < 8; i++) start = start << 8 | s[i];
    const void *id = zmq_msg_data(&f[0]);
    size_t idl = zmq_msg_size(&f[0]);
    for (size_t i = 0; i < p->ring_len; i++) {
        const rbatch *b = &p->ring[(p->ring_head + i) % p->cfg.replay_steps];
        if (b->seq == UINT64_MAX || b->seq < start) continue;
        uint8_t be[8];
        seq_be(b->seq, be);
        zmq_send(p->router, id, idl, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(p->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(p->router, be, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(p->router, b->data, b->len, ZMQ_DONTWAIT);
    }
    static const uint8_t end[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    zmq_send(p->router, id, idl, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(p->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(p->router, end, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(p->router, "", 0, ZMQ_DONTWAIT);
}

/* The ROUTER's fd is edge-triggered: drain every message each time it fires. */
static void on_router(evutil_socket_t fd, short what, void *arg)
{
    emupod *p = arg;
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(p->router, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN)) return;
        zmq_msg_t f[4];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, p->router, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            if (n < 4) f[n++] = m;
            else zmq_msg_close(&m);
        }
        replay_one(p, f, n);
        for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
    }
}

static void req_unlink_free(emupod *p, emupod_req *r)
{
    if (r->prev) r->prev->next = r->next;
    else p->live = r->next;
    if (r->next) r->next->prev = r->prev;
    free(r->tokens);
    free(r);
}

/* --- the engine loop ------------------------------------------------------------------ */

static void on_step_end(evutil_socket_t fd, short what, void *arg);

/* Starts a step at monotonic time start (now, or the previous step's scheduled end)
 * when there is work and none is in flight. */
static void step_start(emupod *p, int64_t start)
{
    if (p->busy || !simsrv_has_work(p->srv)) return;
    if (simsrv_step(p->srv, real_us(), &p->res) != KV_OK || p->res.duration <= 0) return;
    p->busy = true;
    p->t_step_start = start;
    p->t_step_end = start + p->res.duration;
    /* requests admitted by this step: their queue time ends at its start */
    for (emupod_req *r = p->live; r; r = r->next)
        if (r->queued && r->sr.admitted_once) {
            r->queued = false;
            emumet_observe(&p->met, EMUMET_QUEUE, (double)(start - r->t_arrival) / 1e6);
        }
    int64_t wait = p->t_step_end - monoclock_us();
    struct timeval tv = {.tv_sec = wait > 0 ? wait / 1000000 : 0, .tv_usec = wait > 0 ? wait % 1000000 : 0};
    evtimer_add(p->step_timer, &tv);
}

static void deliver_token(emupod *p, emupod_req *r, int64_t now)
{
    simsrv_req *sr = &r->sr;
    if (sr->n_generated == 1) {
        emumet_observe(&p->met, EMUMET_TTFT, (double)(now - r->t_arrival) / 1e6);
        p->met.prompt_tokens += sr->n_prompt;
    } else {
        emumet_observe(&p->met, EMUMET_ITL, (double)(now - r->t_last) / 1e6);
    }
    r->t_last = now;
    p->met.generation_tokens++;
    if (r->sink.ctx) r->sink.token(r->sink.ctx, simsrv_output_token(p->srv, sr, sr->n_generated - 1));
}

static void on_step_end(evutil_socket_t fd, short what, void *arg)
{
    emupod *p = arg;
    int64_t now = monoclock_us();
    const simsrv_step_result *res = &p->res;
    for (size_t i = 0; i < res->n_tokens_out; i++)
        if (!((emupod_req *)res->tokens_out[i]->user)->aborted) deliver_token(p, res->tokens_out[i]->user, now);
    for (size_t i = 0; i < res->n_finished; i++) {
        emupod_req *r = res->finished[i]->user;
        emumet_observe(&p->met, EMUMET_E2E, (double)(now - r->t_arrival) / 1e6);
        p->met.requests_ok++;
        if (r->sink.ctx) r->sink.done(r->sink.ctx, KV_OK);
        req_unlink_free(p, r);
    }
    if (res->n_kv_events && p->pub) publish_step(p);
    for (emupod_req *r = p->live, *next; r; r = next) {   /* aborted during the step */
        next = r->next;
        if (r->aborted) req_unlink_free(p, r);
    }
    p->busy = false;
    step_start(p, p->t_step_end);
}

/* --- requests -------------------------------------------------------------------------- */

int emupod_submit(emupod *p, const uint32_t *tokens, uint32_t n, uint32_t max_tokens, const emupod_sink *sink,
                  emupod_req **out)
{
    emupod_req *r = calloc(1, sizeof *r);
    if (!r || (n && !(r->tokens = malloc(n * sizeof *tokens)))) {
        free(r);
        return KV_ENOMEM;
    }
    if (n) memcpy(r->tokens, tokens, n * sizeof *tokens);
    r->sr = (simsrv_req){.id = p->next_id++, .tokens = r->tokens, .n_prompt = n, .n_output = max_tokens, .user = r};
    r->sink = *sink;
    r->pod = p;
    r->t_arrival = monoclock_us();
    r->queued = true;
    int rc = simsrv_submit(p->srv, &r->sr);
    if (rc != KV_OK) {
        free(r->tokens);
        free(r);
        return rc;
    }
    r->next = p->live;
    if (p->live) p->live->prev = r;
    p->live = r;
    *out = r;
    step_start(p, r->t_arrival);
    return KV_OK;
}

void emupod_detach(emupod_req *r)
{
    emupod *p = r->pod;
    r->sink.ctx = NULL;
    if (simsrv_abort(p->srv, &r->sr) != KV_OK) return;   /* finished in the step in flight */
    r->aborted = true;
    if (!p->busy) req_unlink_free(p, r);   /* else the step's end frees it, after its result */
}

/* --- lifecycle ------------------------------------------------------------------------- */

static int open_sockets(emupod *p, void *zctx, kv_err *err)
{
    const emupod_config *c = &p->cfg;
    int hwm = 100000, linger = 0;   /* vLLM's hwm; nothing queued survives a stop */
    if (c->kv_bind || c->kv_connect) {
        if (!(p->pub = zmq_socket(zctx, ZMQ_PUB)))
            return kv_err_set(err, KV_EIO, "pod %s: PUB socket: %s", c->pod_id, zmq_strerror(zmq_errno()));
        zmq_setsockopt(p->pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(p->pub, ZMQ_LINGER, &linger, sizeof linger);
        const char *ep = c->kv_bind ? c->kv_bind : c->kv_connect;
        if ((c->kv_bind ? zmq_bind(p->pub, ep) : zmq_connect(p->pub, ep)) != 0)
            return kv_err_set(err, KV_EIO, "pod %s: cannot %s the KV-event socket to %s: %s", c->pod_id,
                              c->kv_bind ? "bind" : "connect", ep, zmq_strerror(zmq_errno()));
    }
    if (c->replay_bind) {
        if (!(p->router = zmq_socket(zctx, ZMQ_ROUTER)))
            return kv_err_set(err, KV_EIO, "pod %s: ROUTER socket: %s", c->pod_id, zmq_strerror(zmq_errno()));
        zmq_setsockopt(p->router, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_bind(p->router, c->replay_bind) != 0)
            return kv_err_set(err, KV_EIO, "pod %s: cannot bind the replay socket to %s: %s", c->pod_id,
                              c->replay_bind, zmq_strerror(zmq_errno()));
        int fd;
        size_t sz = sizeof fd;
        zmq_getsockopt(p->router, ZMQ_FD, &fd, &sz);
        if (!(p->router_ev = event_new(p->base, fd, EV_READ | EV_PERSIST, on_router, p)) ||
            event_add(p->router_ev, NULL) != 0)
            return kv_err_set(err, KV_ENOMEM, "pod %s: cannot watch the replay socket", c->pod_id);
        if (!(p->ring = calloc(c->replay_steps, sizeof *p->ring)))
            return kv_err_set(err, KV_ENOMEM, "pod %s: replay buffer of %zu batches", c->pod_id, c->replay_steps);
    }
    return KV_OK;
}

emupod *emupod_new(struct event_base *base, void *zctx, const emupod_config *cfg, kv_err *err)
{
    if (!(cfg->srv.speedup > 0)) {
        kv_err_set(err, KV_EINVAL, "pod %s: speedup %g must be > 0", cfg->pod_id, cfg->srv.speedup);
        return NULL;
    }
    if (cfg->replay_bind && cfg->replay_steps == 0) {
        kv_err_set(err, KV_EINVAL, "pod %s: a replay socket needs a buffer of at least one batch", cfg->pod_id);
        return NULL;
    }
    emupod *p = calloc(1, sizeof *p);
    if (!p) {
        kv_err_set(err, KV_ENOMEM, "pod %s: out of memory", cfg->pod_id);
        return NULL;
    }
    p->cfg = *cfg;
    p->base = base;
    p->cfg.srv.pod_id = cfg->pod_id;
    p->cfg.srv.model_name = cfg->served_model;
    p->cfg.srv.emit_kv_events = cfg->kv_bind || cfg->kv_connect;
    rng_seed(&p->rng, cfg->seed, 0);
    snprintf(p->topic, sizeof p->topic, "kv@%s@%s", cfg->pod_id, cfg->served_model);
    if (!(p->step_timer = evtimer_new(base, on_step_end, p))) {
        kv_err_set(err, KV_ENOMEM, "pod %s: out of memory", cfg->pod_id);
        emupod_free(p);
        return NULL;
    }
    if (open_sockets(p, zctx, err) != KV_OK || !(p->srv = simsrv_new(&p->cfg.srv, err))) {
        emupod_free(p);
        return NULL;
    }
    return p;
}

/* Fails every live request (sink done with KV_EIO) and frees it. */
static void drop_live(emupod *p)
{
    while (p->live) {
        emupod_req *r = p->live;
        if (r->sink.ctx) r->sink.done(r->sink.ctx, KV_EIO);
        req_unlink_free(p, r);
    }
}

int emupod_restart(emupod *p, kv_err *err)
{
    simsrv *fresh = simsrv_new(&p->cfg.srv, err);
    if (!fresh) return err ? err->code : KV_ENOMEM;
    if (p->step_timer) evtimer_del(p->step_timer);
    p->busy = false;
    simsrv_free(p->srv);
    p->srv = fresh;
    drop_live(p);
    p->met = (emumet_pod){0};
    for (size_t i = 0; i < p->ring_len; i++) free(p->ring[(p->ring_head + i) % p->cfg.replay_steps].data);
    if (p->ring) memset(p->ring, 0, p->cfg.replay_steps * sizeof *p->ring);
    p->ring_head = p->ring_len = 0;
    p->seq = 0;
    return p->pub ? publish_cleared(p, err) : KV_OK;
}

void emupod_free(emupod *p)
{
    if (!p) return;
    if (p->step_timer) event_free(p->step_timer);
    p->step_timer = NULL;
    simsrv_free(p->srv);
    p->srv = NULL;
    /* sinks of the requests still live are told nothing: their clients are going away
     * with the process */
    while (p->live) {
        p->live->sink.ctx = NULL;
        req_unlink_free(p, p->live);
    }
    if (p->router_ev) event_free(p->router_ev);
    for (size_t i = 0; p->ring && i < p->cfg.replay_steps; i++) free(p->ring[i].data);
    free(p->ring);
    if (p->pub) zmq_close(p->pub);
    if (p->router) zmq_close(p->router);
    kvev_buf_free(&p->payload);
    free(p);
}

uint32_t emupod_vocab(const emupod *p) { return (uint32_t)p->cfg.srv.model->vocab; }
uint32_t emupod_max_model_len(const emupod *p) { return simsrv_max_model_len(p->srv); }

void emupod_view(const emupod *p, emumet_view *v, const emumet_pod **m)
{
    simsrv_metrics sm;
    simsrv_get_metrics(p->srv, &sm);
    *v = (emumet_view){.model_name = p->cfg.served_model, .running = sm.running, .waiting = sm.waiting,
                       .kv_usage = sm.kv_usage, .block_size = simsrv_block_size(p->srv),
                       .num_gpu_blocks = simsrv_num_gpu_blocks(p->srv), .prefix_queries = sm.prompt_tokens,
                       .prefix_hits = sm.hit_tokens, .preemptions = sm.preemptions};
    *m = &p->met;
}

void emupod_stats_get(const emupod *p, emupod_stats *st) { *st = p->st; }
