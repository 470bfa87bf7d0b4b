/* server: one simulated vLLM v1 engine (vllm/v1/core/sched/scheduler.py and
 * kv_cache_manager.py, as docs/upstream/vllm.md §3 describes them).
 *
 * One call of simsrv_step is one engine step: schedule (running requests first, in
 * order; preempt by recompute from the tail when blocks run out; then admit waiting
 * requests head-first unless something was preempted), price the batch with the step
 * model, then apply the step's outcome as vLLM does at its end: computed tokens
 * advance, requests whose known tokens are all computed sample one token, finished
 * requests free their blocks (hashes stay cached), and the KV events of the step are
 * published as one KVEventBatch.
 *
 * Engine block hashes are llm-d's xxh64 chain under the seed "vllm", rooted at the
 * model name: a 64-bit stand-in for vLLM's sha256 chain that differs from the router's
 * request keys, as the real engine's hashes do. Generated tokens get deterministic ids
 * (simsrv_output_token) so output blocks hash and publish like prompt blocks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "blockkeys.h"
#include "blockpool.h"
#include "grow.h"
#include "kvevents.h"
#include "mix64.h"
#include "prefetch.h"
#include "ring.h"
#include "server.h"

#define ENGINE_HASH_SEED "vllm"
#define SRV_AHEAD 8                   /* running requests prefetched ahead in the schedule */

/* Per-request state, hung off simsrv_req.priv_ptr between submit and finish. The
 * server recycles these (and their arrays, grown only when a longer request comes)
 * from chunks it owns, so the running set's states sit together in memory and a run
 * allocates nothing per request once warm. One cache line each, aligned: a step that
 * fills a block reads the state (schedule, then hash_known_blocks) out of cache with a
 * thousand replicas, and a 72-byte state straddled two lines, the second missed after
 * the first was fetched ahead. */
typedef struct rstate {
    uint64_t *hashes;       /* chained hashes of the full blocks known so far */
    uint32_t *blocks;       /* blocks held, in token order */
    /* The output tokens drawn so far (simsrv_output_token), so an output block's tokens
     * are drawn once for its hash and copied when it is published. */
    uint32_t *out;
    union {
        struct {
            uint32_t n_hashes;
            uint32_t n_blocks;
        };
        struct rstate *next_free;   /* on the free list, where the counts mean nothing */
    };
    uint32_t cap_blocks;    /* cdiv(n_prompt + n_output, block_size) */
    uint32_t n_cached;      /* leading blocks already given their hash (vLLM num_cached_block) */
    uint32_t hashes_room, blocks_room;  /* allocated lengths of hashes and blocks */
    uint32_t n_out, out_room;
} __attribute__((aligned(64))) rstate;
_Static_assert(sizeof(rstate) == 64, "a request's state is one cache line");

#define RS_CHUNK 64

/* Prompt hash chains seen before, so a prompt that comes back (inference-perf cycles
 * through the same 750 prompts every stage) is not rehashed block by block. A
 * direct-mapped table keyed by the caller's XXH3 fingerprint of the prompt's tokens
 * (simsrv_req.prompt_fp) and its length: fingerprinting 30 KB of tokens costs a few
 * percent of chaining 118 blocks through xxh64. Two different prompts would have to
 * collide on 64 bits (and the same length) to share an entry. Bounded: a new prompt
 * evicts the slot's old one. Only fingerprinted prompts are remembered: a prompt the
 * caller does not fingerprint is one it knows will not come back (random data, a
 * multi-turn context), and remembering those cost a thousand-replica run ~250 KB of
 * chains a replica for no hit. */
#define MEMO_SLOTS 1024
typedef struct memo_ent {
    uint64_t fp;
    uint32_t n_prompt;      /* 0: empty slot */
    uint32_t n_hashes;
    uint64_t *hashes;
    uint32_t room;
} memo_ent;

/* A recorded KV event; arrays are offsets into the server's buffers, resolved when the
 * batch is encoded (the buffers may move while a step records). */
typedef struct evrec {
    kvev_type type;
    size_t hash_off, n_hashes;
    size_t tok_off, n_tokens;
    bool has_parent;
    uint64_t parent;
} evrec;

#define VEC(T, name) struct { T *v; size_t n, cap; } name

/* What every step reads or writes comes first, in the allocation's first six cache
 * lines (it is 64-byte aligned): with a thousand servers a step finds its server out
 * of cache, and these fields lay over ten lines. */
struct simsrv {
    simsrv_config cfg;
    size_t wq_len;                    /* waiting requests (the ring is wq, below) */
    VEC(simsrv_req *, run);           /* running, in scheduling order */
    uint32_t bs, max_tokens, max_seqs, max_model_len;
    uint32_t n_emit_steps;            /* steps so far in which a token was emitted */
    /* This step's scheduled requests, in order, are out.v[0..n_sched) until its outcome
     * keeps there those that got a token (one array fewer for a step to bring into
     * cache); sched_new.v[i]: the tokens scheduled for out.v[i], kept here rather than in
     * its rstate, which a decode step then need not touch (simsrv_req.ready_end). */
    size_t n_sched;
    VEC(uint32_t, sched_new);
    sm_batch batch;                   /* this step's sequences, priced at its end */
    VEC(simsrv_req *, out);
    VEC(simsrv_req *, fin);
    VEC(simsrv_run_start, starts);
    VEC(evrec, ev);
    VEC(uint64_t, ev_hashes);
    VEC(uint32_t, ev_tokens);

    uint64_t num_gpu_blocks;          /* as vLLM reports it: usable + the null block */
    bpool *pool;
    blockkeys_ctx keys;
    uint64_t root;
    uint64_t vocab;                   /* > 0 */
    unsigned __int128 vocab_m;        /* 2^128 / vocab, rounded up: x % vocab without a divide */
    simsrv_req **wq;                  /* waiting: ring buffer (front = next to admit) */
    size_t wq_head, wq_cap;

    VEC(uint32_t, tmp_blocks);
    VEC(uint64_t, tmp_evicted);
    uint32_t *tmp_tokens;             /* one block of tokens */
    VEC(kvev_event, ev_out);
    sim_time ev_ts;                   /* end of the step that recorded ev */
    uint64_t next_seq;

    simsrv_metrics m;
    memo_ent *memo;                   /* MEMO_SLOTS entries, allocated on first use */
    rstate **rs_chunks;               /* every rstate the server made, RS_CHUNK per chunk */
    size_t n_rs_chunks;
    rstate *rs_free;                  /* recycled states */
};

#define VEC_RESERVE(vec, need) grow_array((void **)&(vec).v, &(vec).cap, (need), sizeof *(vec).v)
/* Allocation failure in the simulator's own bookkeeping is fatal to the run: the
 * step reports KV_ENOMEM and the cluster stops. */
#define VEC_PUSH(vec, x) (VEC_RESERVE(vec, (vec).n + 1) ? ((vec).v[(vec).n++] = (x), true) : false)

/* x % s->vocab by Lemire's fastmod (a 128-bit reciprocal, exact for every 64-bit x):
 * output tokens are drawn for every generated token, twice (hashing and publishing),
 * and a 64-bit divide was most of their cost. */
static uint64_t vocab_mod(const simsrv *s, uint64_t x)
{
    unsigned __int128 low = s->vocab_m * x;
    unsigned __int128 bot = ((unsigned __int128)(uint64_t)low * s->vocab) >> 64;
    unsigned __int128 top = (unsigned __int128)(uint64_t)(low >> 64) * s->vocab;
    return (uint64_t)((bot + top) >> 64);
}

static uint32_t output_token(const simsrv *s, uint64_t seed, uint32_t i)
{
    return (uint32_t)vocab_mod(s, mix64(seed ^ i));
}

uint32_t simsrv_output_token(const simsrv *s, const simsrv_req *r, uint32_t i)
{
    return output_token(s, mix64(r->id), i);
}

/* Writes tokens [pos, pos + n) of r's prompt-then-output sequence to out (known
 * tokens only: pos + n <= n_prompt + n_output). */
static void tokens_at(const simsrv *s, const simsrv_req *r, uint32_t pos, uint32_t n, uint32_t *out)
{
    uint32_t k = 0;
    if (pos < r->n_prompt) {
        k = r->n_prompt - pos < n ? r->n_prompt - pos : n;
        memcpy(out, r->tokens + pos, k * sizeof *out);
    }
    if (k == n) return;
    rstate *st = r->priv_ptr;
    uint32_t first = pos + k - r->n_prompt, end = pos + n - r->n_prompt;
    uint64_t seed = mix64(r->id);
    for (; st->n_out < end; st->n_out++) st->out[st->n_out] = output_token(s, seed, st->n_out);
    memcpy(out + k, st->out + first, (size_t)(end - first) * sizeof *out);
}

static uint32_t num_tokens(const simsrv_req *r)
{
    return r->n_prompt + r->n_generated;
}

static uint32_t cdiv(uint64_t a, uint32_t b)
{
    return (uint32_t)((a + b - 1) / b);
}

/* simsrv_req.ready_end and hash_due as st implies them. The blocks hold the first
 * ready_end tokens and every full block among them already carries its hash, so
 * scheduling up to ready_end tokens needs no allocate_slots (63 decode steps in 64 at
 * block size 64). */
static void ready_marks(const simsrv *s, const rstate *st, uint32_t *ready_end, uint32_t *hash_due)
{
    uint64_t end = (uint64_t)st->n_blocks * s->bs;
    if (s->cfg.prefix_caching && st->n_hashes > st->n_cached) {
        uint64_t unhashed = (uint64_t)(st->n_cached + 1) * s->bs - 1;   /* its next full block has a hash to set */
        if (unhashed < end) end = unhashed;
    }
    uint64_t due = (uint64_t)(st->n_hashes + 1) * s->bs;
    *ready_end = end < UINT32_MAX ? (uint32_t)end : UINT32_MAX;
    *hash_due = s->cfg.prefix_caching && due < UINT32_MAX ? (uint32_t)due : UINT32_MAX;
}

/* Called wherever r's blocks, cached blocks or hashes change. */
static void sync_ready(const simsrv *s, simsrv_req *r)
{
    ready_marks(s, r->priv_ptr, &r->ready_end, &r->hash_due);
}

/* --- lifecycle ----------------------------------------------------------------- */

simsrv *simsrv_new(const simsrv_config *cfg, kv_err *err)
{
    if (!cfg || !cfg->model || !cfg->hw) {
        kv_err_set(err, KV_EINVAL, "server: config needs a model and a hardware profile");
        return NULL;
    }
    if (cfg->tp < 1) {
        kv_err_set(err, KV_EINVAL, "server: tensor_parallel_size %d must be >= 1", cfg->tp);
        return NULL;
    }
    size_t size = (sizeof(simsrv) + 63) / 64 * 64;   /* aligned_alloc takes a multiple of the alignment */
    simsrv *s = aligned_alloc(64, size);
    if (s) memset(s, 0, size);
    if (!s) {
        kv_err_set(err, KV_ENOMEM, "server: out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    if (s->cfg.gpu_memory_utilization <= 0) s->cfg.gpu_memory_utilization = 0.9;
    if (!s->cfg.model_name) s->cfg.model_name = cfg->model->hf_name;
    s->bs = cfg->block_size ? cfg->block_size : 16;
    s->max_tokens = cfg->max_num_batched_tokens ? cfg->max_num_batched_tokens
                                                : sm_default_max_num_batched_tokens(cfg->hw);
    s->max_seqs = cfg->max_num_seqs ? cfg->max_num_seqs : sm_default_max_num_seqs(cfg->hw);
    s->max_model_len = cfg->max_model_len ? cfg->max_model_len : cfg->model->max_model_len;
    s->num_gpu_blocks = cfg->num_gpu_blocks
                            ? cfg->num_gpu_blocks
                            : sm_kv_blocks_for(cfg->model, cfg->hw, cfg->tp, s->cfg.gpu_memory_utilization, s->bs,
                                               s->max_tokens, s->max_seqs);
    if (s->num_gpu_blocks < 2 || s->num_gpu_blocks - 1 > UINT32_MAX >> 2) {
        kv_err_set(err, KV_ERANGE,
                   "server: %llu KV blocks (model %s, hardware %s, tp %d, gpu_memory_utilization %.2f): need 2..%u",
                   (unsigned long long)s->num_gpu_blocks, cfg->model->name, cfg->hw->name, cfg->tp,
                   s->cfg.gpu_memory_utilization, (UINT32_MAX >> 2) + 1);
        free(s);
        return NULL;
    }
    if (blockkeys_init(&s->keys, BLOCKKEYS_XXH64, s->bs, ENGINE_HASH_SEED, err) != KV_OK) {
        free(s);
        return NULL;
    }
    s->root = blockkeys_root(&s->keys, s->cfg.model_name);
    s->vocab = cfg->model->vocab > 0 ? (uint64_t)cfg->model->vocab : 1;
    s->vocab_m = ~(unsigned __int128)0 / s->vocab + 1;
    /* vLLM reserves block 0 as the null block; the pool holds the rest. */
    s->pool = bpool_new((uint32_t)(s->num_gpu_blocks - 1), err);
    s->tmp_tokens = malloc(s->bs * sizeof *s->tmp_tokens);
    if (!s->pool || !s->tmp_tokens) {
        if (s->pool) kv_err_set(err, KV_ENOMEM, "server: out of memory");
        simsrv_free(s);
        return NULL;
    }
    s->m.num_gpu_blocks = s->num_gpu_blocks;
    return s;
}

/* A recycled state with room for n_hashes hashes, n_blocks blocks and n_out output
 * tokens, zeroed otherwise; NULL when out of memory. */
static rstate *rstate_get(simsrv *s, uint32_t n_hashes, uint32_t n_blocks, uint32_t n_out)
{
    if (!s->rs_free) {
        rstate **chunks = realloc(s->rs_chunks, (s->n_rs_chunks + 1) * sizeof *chunks);
        if (!chunks) return NULL;
        s->rs_chunks = chunks;
        rstate *c = aligned_alloc(_Alignof(rstate), RS_CHUNK * sizeof *c);
        if (!c) return NULL;
        memset(c, 0, RS_CHUNK * sizeof *c);
        chunks[s->n_rs_chunks++] = c;
        for (size_t i = 0; i < RS_CHUNK; i++) c[i].next_free = i + 1 < RS_CHUNK ? &c[i + 1] : NULL;
        s->rs_free = c;
    }
    rstate *st = s->rs_free;
    if (st->hashes_room < n_hashes) {
        uint64_t *h = realloc(st->hashes, n_hashes * sizeof *h);
        if (!h) return NULL;
        st->hashes = h;
        st->hashes_room = n_hashes;
    }
    if (st->blocks_room < n_blocks) {
        uint32_t *b = realloc(st->blocks, n_blocks * sizeof *b);
        if (!b) return NULL;
        st->blocks = b;
        st->blocks_room = n_blocks;
    }
    if (st->out_room < n_out) {
        uint32_t *o = realloc(st->out, n_out * sizeof *o);
        if (!o) return NULL;
        st->out = o;
        st->out_room = n_out;
    }
    s->rs_free = st->next_free;
    st->next_free = NULL;
    st->n_hashes = st->n_blocks = st->n_cached = st->n_out = 0;
    return st;
}

static void rstate_put(simsrv *s, simsrv_req *r)
{
    rstate *st = r->priv_ptr;
    st->next_free = s->rs_free;
    s->rs_free = st;
    r->priv_ptr = NULL;
}

void simsrv_free(simsrv *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->wq_len; i++) s->wq[(s->wq_head + i) % s->wq_cap]->priv_ptr = NULL;
    for (size_t i = 0; i < s->run.n; i++) s->run.v[i]->priv_ptr = NULL;
    for (size_t c = 0; c < s->n_rs_chunks; c++) {
        for (size_t i = 0; i < RS_CHUNK; i++) {
            free(s->rs_chunks[c][i].hashes);
            free(s->rs_chunks[c][i].blocks);
            free(s->rs_chunks[c][i].out);
        }
        free(s->rs_chunks[c]);
    }
    free(s->rs_chunks);
    for (size_t i = 0; s->memo && i < MEMO_SLOTS; i++) free(s->memo[i].hashes);
    free(s->memo);
    free(s->wq);
    free(s->run.v);
    free(s->sched_new.v);
    free(s->out.v);
    free(s->fin.v);
    free(s->starts.v);
    free(s->tmp_blocks.v);
    free(s->tmp_evicted.v);
    free(s->tmp_tokens);
    free(s->ev.v);
    free(s->ev_hashes.v);
    free(s->ev_tokens.v);
    free(s->ev_out.v);
    bpool_free(s->pool);
    free(s);
}

uint32_t simsrv_block_size(const simsrv *s) { return s->bs; }
uint32_t simsrv_max_num_batched_tokens(const simsrv *s) { return s->max_tokens; }
uint32_t simsrv_max_num_seqs(const simsrv *s) { return s->max_seqs; }
uint64_t simsrv_num_gpu_blocks(const simsrv *s) { return s->num_gpu_blocks; }
uint32_t simsrv_max_model_len(const simsrv *s) { return s->max_model_len; }
bool simsrv_has_work(const simsrv *s) { return s->wq_len > 0 || s->run.n > 0; }

/* Fetches the first 32 bytes of r, which a step reads and writes (server.h). */
static void prefetch_req(const simsrv_req *r)
{
    __builtin_prefetch(r, 1);
    __builtin_prefetch((const char *)r + offsetof(simsrv_req, hash_due), 1);
}

void simsrv_prefetch(const simsrv *s, simsrv_prefetch_stage stage)
{
    /* The fields stage reads nothing of s, which is out of cache. The step's loop fetches
     * 2 * SRV_AHEAD requests ahead of itself (schedule_running), and the list's later
     * lines as it reads it: only their start is fetched here. */
    if (stage == SIMSRV_PREFETCH_FIELDS) {
        prefetch_span(s, offsetof(simsrv, num_gpu_blocks));
    } else if (stage == SIMSRV_PREFETCH_RUNNING) {
        __builtin_prefetch(s->run.v);
    } else {
        size_t n = s->run.n < 2 * SRV_AHEAD ? s->run.n : 2 * SRV_AHEAD;
        for (size_t k = 0; k < n; k++)
            prefetch_req(s->run.v[k]);
    }
}

void simsrv_get_metrics(const simsrv *s, simsrv_metrics *m)
{
    *m = s->m;
    m->waiting = (int)s->wq_len;
    m->running = (int)s->run.n;
    uint32_t total = bpool_num_blocks(s->pool);
    m->kv_usage = 1.0 - (double)bpool_num_free(s->pool) / total;
}

int simsrv_check(const simsrv *s, kv_err *err)
{
    uint32_t n = bpool_num_blocks(s->pool);
    uint32_t *held = calloc(n, sizeof *held);
    if (!held) return kv_err_set(err, KV_ENOMEM, "server check: out of memory");
    int rc = KV_OK;
    for (size_t i = 0; i < s->run.n && rc == KV_OK; i++) {
        const simsrv_req *r = s->run.v[i];
        const rstate *st = r->priv_ptr;
        if (r->n_computed > num_tokens(r) || r->n_generated > r->n_output || st->n_cached > st->n_blocks ||
            st->n_blocks > st->cap_blocks || (uint64_t)st->n_blocks * s->bs < r->n_computed)
            rc = kv_err_set(err, KV_ESTATE, "server check: running request %llu: computed %u of %u tokens, "
                            "%u blocks (%u cached, cap %u), %u of %u generated",
                            (unsigned long long)r->id, r->n_computed, num_tokens(r), st->n_blocks, st->n_cached,
                            st->cap_blocks, r->n_generated, r->n_output);
        for (uint32_t b = 0; b < st->n_blocks; b++) held[st->blocks[b]]++;
    }
    for (size_t i = 0; i < s->run.n + s->wq_len && rc == KV_OK; i++) {
        const simsrv_req *r = i < s->run.n ? s->run.v[i] : s->wq[(s->wq_head + i - s->run.n) % s->wq_cap];
        uint32_t ready_end, hash_due;
        ready_marks(s, r->priv_ptr, &ready_end, &hash_due);
        if (r->ready_end != ready_end || r->hash_due != hash_due)
            rc = kv_err_set(err, KV_ESTATE, "server check: request %llu: ready_end %u, hash_due %u; its state says %u, %u",
                            (unsigned long long)r->id, r->ready_end, r->hash_due, ready_end, hash_due);
    }
    for (size_t i = 0; i < s->wq_len && rc == KV_OK; i++) {
        const simsrv_req *r = s->wq[(s->wq_head + i) % s->wq_cap];
        const rstate *st = r->priv_ptr;
        if (st->n_blocks != 0 || r->n_computed != 0)
            rc = kv_err_set(err, KV_ESTATE, "server check: waiting request %llu holds %u blocks, computed %u",
                            (unsigned long long)r->id, st->n_blocks, r->n_computed);
    }
    uint32_t unref = 0;
    for (uint32_t b = 0; b < n && rc == KV_OK; b++) {
        if (held[b] != bpool_ref(s->pool, b))
            rc = kv_err_set(err, KV_ESTATE, "server check: block %u has ref %u but %u holders", b,
                            bpool_ref(s->pool, b), held[b]);
        unref += held[b] == 0;
    }
    if (rc == KV_OK && unref != bpool_num_free(s->pool))
        rc = kv_err_set(err, KV_ESTATE, "server check: %u unreferenced blocks but %u in the free queue", unref,
                        bpool_num_free(s->pool));
    if (rc == KV_OK && bpool_free_order(s->pool, held, n) != unref)
        rc = kv_err_set(err, KV_ESTATE, "server check: free queue length differs from its count");
    for (uint32_t i = 0; i < unref && rc == KV_OK; i++)
        if (bpool_ref(s->pool, held[i]) != 0)
            rc = kv_err_set(err, KV_ESTATE, "server check: referenced block %u in the free queue", held[i]);
    free(held);
    return rc;
}

/* --- waiting queue --------------------------------------------------------------- */

static bool wq_reserve(simsrv *s)
{
    return ring_reserve((void **)&s->wq, &s->wq_cap, &s->wq_head, s->wq_len, sizeof *s->wq);
}

static simsrv_req *wq_front(simsrv *s) { return s->wq[s->wq_head]; }

static void wq_pop_front(simsrv *s)
{
    s->wq_head = (s->wq_head + 1) % s->wq_cap;
    s->wq_len--;
}

/* Callers reserve first. */
static void wq_push_back(simsrv *s, simsrv_req *r)
{
    s->wq[(s->wq_head + s->wq_len) % s->wq_cap] = r;
    s->wq_len++;
}

static void wq_push_front(simsrv *s, simsrv_req *r)
{
    s->wq_head = (s->wq_head + s->wq_cap - 1) % s->wq_cap;
    s->wq[s->wq_head] = r;
    s->wq_len++;
}

/* --- hashing ------------------------------------------------------------------------ */

/* How many of r's first n blocks another request may ask for (simsrv_req.unshared_tail). */
static uint32_t shared_blocks(const simsrv_req *r, uint32_t bs, uint32_t n)
{
    return r->unshared_tail && r->shared_len / bs < n ? r->shared_len / bs : n;
}

/* With KV events off nobody sees a block's hash; it only finds the block again. A block
 * that only its own request can ask for is then found as well by a key unique to the
 * request and the block's position, which reads no tokens and draws no output tokens
 * (a thousand-replica run of random data hashed half a billion tokens for nothing). The
 * keys are mixed 64-bit values like the chain's, so they meet a real hash no more often
 * than two real hashes meet. */
static bool keyed_by_position(const simsrv *s, const simsrv_req *r)
{
    return r->unshared_tail && !s->cfg.emit_kv_events;
}

#define POSITION_KEY_SALT 0x6b76726f75746531ULL   /* "kvroute1": apart from simsrv_output_token's stream */

static uint64_t position_key(const simsrv_req *r, uint32_t block)
{
    return mix64(mix64(r->id ^ POSITION_KEY_SALT) + block);
}

/* Extends r's hash chain over every full block of its known tokens. */
static void hash_known_blocks(simsrv *s, simsrv_req *r)
{
    rstate *st = r->priv_ptr;
    uint32_t full = num_tokens(r) / s->bs;
    uint32_t by_position = keyed_by_position(s, r) ? shared_blocks(r, s->bs, full) : full;
    while (st->n_hashes < full) {
        uint32_t b = st->n_hashes;
        if (b >= by_position) {
            st->hashes[b] = position_key(r, b);
        } else {
            uint64_t parent = b ? st->hashes[b - 1] : s->root;
            tokens_at(s, r, b * s->bs, s->bs, s->tmp_tokens);
            blockkeys_compute(&s->keys, parent, s->tmp_tokens, s->bs, NULL, 0, NULL, &st->hashes[b], 1);
        }
        st->n_hashes++;
    }
    sync_ready(s, r);
}

/* Writes the engine hash chain of r's prompt's full blocks to out (room for
 * n_prompt / block_size) and returns its length; blocks keyed by position get their keys. */
static uint32_t prompt_hashes(simsrv *s, const simsrv_req *r, uint64_t *out)
{
    uint32_t n = r->n_prompt / s->bs;
    uint32_t shared = keyed_by_position(s, r) ? shared_blocks(r, s->bs, n) : n;
    if (shared < n) {
        blockkeys_compute(&s->keys, s->root, r->tokens, (size_t)shared * s->bs, NULL, 0, NULL, out, shared);
        for (uint32_t b = shared; b < n; b++) out[b] = position_key(r, b);
        return n;
    }
    if (!r->prompt_fp || n == 0)
        return (uint32_t)blockkeys_compute(&s->keys, s->root, r->tokens, r->n_prompt, NULL, 0, NULL, out, n);
    if (!s->memo) s->memo = calloc(MEMO_SLOTS, sizeof *s->memo);
    if (!s->memo)
        return (uint32_t)blockkeys_compute(&s->keys, s->root, r->tokens, r->n_prompt, NULL, 0, NULL, out, n);
    uint64_t fp = r->prompt_fp;
    memo_ent *e = &s->memo[fp & (MEMO_SLOTS - 1)];
    if (e->n_prompt == r->n_prompt && e->fp == fp) {
        memcpy(out, e->hashes, e->n_hashes * sizeof *out);
        return e->n_hashes;
    }
    uint32_t k = (uint32_t)blockkeys_compute(&s->keys, s->root, r->tokens, r->n_prompt, NULL, 0, NULL, out, n);
    if (e->room < k) {
        uint64_t *h = realloc(e->hashes, k * sizeof *h);
        if (!h) return k;   /* no memo entry; the chain itself is complete */
        e->hashes = h;
        e->room = k;
    }
    memcpy(e->hashes, out, k * sizeof *out);
    e->fp = fp;
    e->n_prompt = r->n_prompt;
    e->n_hashes = k;
    return k;
}

int simsrv_submit(simsrv *s, simsrv_req *r)
{
    uint64_t total = (uint64_t)r->n_prompt + r->n_output;
    if (r->n_prompt == 0 || total > s->max_model_len || cdiv(total, s->bs) > bpool_num_blocks(s->pool))
        return KV_ERANGE;
    if (!wq_reserve(s)) return KV_ENOMEM;
    rstate *st = rstate_get(s, (uint32_t)(total / s->bs + 1), cdiv(total, s->bs), r->n_output);
    if (!st) return KV_ENOMEM;
    st->cap_blocks = cdiv(total, s->bs);
    r->priv_ptr = st;
    r->n_computed = r->n_generated = r->n_cached = r->preemptions = 0;
    r->run_step = r->run_len = 0;
    r->admitted_once = false;
    if (s->cfg.prefix_caching) st->n_hashes = prompt_hashes(s, r, st->hashes);
    sync_ready(s, r);
    wq_push_back(s, r);
    return KV_OK;
}

/* --- KV allocation (vLLM allocate_slots) ------------------------------------------- */

/* allocate_slots, less bringing r->ready_end and r->hash_due up to date (its one caller does). */
static int take_slots(simsrv *s, simsrv_req *r, uint32_t num_computed, uint32_t num_new, const uint32_t *hits,
                      uint32_t n_hit)
{
    rstate *st = r->priv_ptr;
    uint32_t need_total = cdiv((uint64_t)num_computed + num_new, s->bs);
    uint32_t have = st->n_blocks + n_hit;
    uint32_t need = need_total > have ? need_total - have : 0;
    size_t free_hits = n_hit ? bpool_count_unreferenced(s->pool, hits, n_hit) : 0;
    if (need + free_hits > bpool_num_free(s->pool)) return KV_EFULL;

    if (n_hit) {
        bpool_touch(s->pool, hits, n_hit);
        memcpy(st->blocks + st->n_blocks, hits, n_hit * sizeof *hits);
        st->n_blocks += n_hit;
        st->n_cached += n_hit;
    }
    if (need) {
        if (!VEC_RESERVE(s->tmp_evicted, need)) return KV_ENOMEM;
        size_t n_ev = 0;
        if (bpool_alloc(s->pool, need, st->blocks + st->n_blocks, s->tmp_evicted.v, &n_ev) != KV_OK)
            return KV_ENOMEM;   /* not KV_EFULL: checked above */
        st->n_blocks += need;
        for (size_t i = 0; i < n_ev && s->cfg.emit_kv_events; i++) {
            evrec e = {.type = KVEV_BLOCK_REMOVED, .hash_off = s->ev_hashes.n, .n_hashes = 1};
            if (!VEC_PUSH(s->ev_hashes, s->tmp_evicted.v[i]) || !VEC_PUSH(s->ev, e)) return KV_ENOMEM;
        }
        s->m.blocks_removed += n_ev;
    }
    if (!s->cfg.prefix_caching) return KV_OK;

    /* cache_full_blocks: every block now full of known tokens gets its hash. */
    uint32_t full = (uint32_t)(((uint64_t)num_computed + num_new) / s->bs);
    if (full > st->n_hashes) full = st->n_hashes;
    if (full <= st->n_cached) return KV_OK;
    uint32_t first = st->n_cached;
    s->m.blocks_stored += full - first;
    /* Blocks no other request can ask for get their hashes when r frees them (free_blocks). */
    uint32_t shared = shared_blocks(r, s->bs, full);
    if (shared > first && bpool_set_hashes(s->pool, st->blocks + first, st->hashes + first, shared - first) != KV_OK)
        return KV_ENOMEM;
    if (!s->cfg.emit_kv_events) {
        st->n_cached = full;
        return KV_OK;
    }
    evrec e = {.type = KVEV_BLOCK_STORED, .hash_off = s->ev_hashes.n, .n_hashes = full - first,
               .tok_off = s->ev_tokens.n, .n_tokens = (size_t)(full - first) * s->bs,
               .has_parent = first > 0, .parent = first ? st->hashes[first - 1] : 0};
    if (!VEC_RESERVE(s->ev_hashes, s->ev_hashes.n + e.n_hashes) ||
        !VEC_RESERVE(s->ev_tokens, s->ev_tokens.n + e.n_tokens) || !VEC_PUSH(s->ev, e))
        return KV_ENOMEM;
    memcpy(s->ev_hashes.v + s->ev_hashes.n, st->hashes + first, e.n_hashes * sizeof *st->hashes);
    s->ev_hashes.n += e.n_hashes;
    tokens_at(s, r, first * s->bs, (uint32_t)e.n_tokens, s->ev_tokens.v + s->ev_tokens.n);
    s->ev_tokens.n += e.n_tokens;
    st->n_cached = full;
    return KV_OK;
}

/* Gives r the blocks for its first num_computed + num_new tokens, taking hits[0..n_hit)
 * (cached blocks found at admission) first. Records evictions and stores as events.
 * Returns KV_EFULL, changing nothing, when the pool cannot supply them. */
static int allocate_slots(simsrv *s, simsrv_req *r, uint32_t num_computed, uint32_t num_new, const uint32_t *hits,
                          uint32_t n_hit)
{
    int rc = take_slots(s, r, num_computed, num_new, hits, n_hit);
    if (rc != KV_EFULL) sync_ready(s, r);
    return rc;
}

/* Frees r's blocks, tail first (vLLM frees reversed(blocks) so a request's last blocks
 * are evicted before its prefix). Cached hashes stay until eviction; the blocks that
 * only r could ask for get theirs now, out of the map (the release touches them anyway,
 * where giving them at hashing time cost a cache miss per block). */
static void free_blocks(simsrv *s, simsrv_req *r)
{
    rstate *st = r->priv_ptr;
    uint32_t shared = shared_blocks(r, s->bs, st->n_cached);
    bpool_set_private_hashes(s->pool, st->blocks + shared, st->hashes + shared, st->n_cached - shared);
    for (uint32_t i = 0; i < st->n_blocks / 2; i++) {
        uint32_t t = st->blocks[i];
        st->blocks[i] = st->blocks[st->n_blocks - 1 - i];
        st->blocks[st->n_blocks - 1 - i] = t;
    }
    bpool_release(s->pool, st->blocks, st->n_blocks);
    st->n_blocks = 0;
    st->n_cached = 0;
    sync_ready(s, r);
}

int simsrv_abort(simsrv *s, simsrv_req *r)
{
    if (!r->priv_ptr) return KV_ENOTFOUND;
    for (size_t i = 0; i < s->wq_len; i++) {
        if (s->wq[(s->wq_head + i) % s->wq_cap] != r) continue;
        for (size_t j = i; j + 1 < s->wq_len; j++)   /* the rest keeps its order */
            s->wq[(s->wq_head + j) % s->wq_cap] = s->wq[(s->wq_head + j + 1) % s->wq_cap];
        s->wq_len--;
        rstate_put(s, r);   /* waiting requests hold no blocks */
        return KV_OK;
    }
    for (size_t i = 0; i < s->run.n; i++) {
        if (s->run.v[i] != r) continue;
        memmove(&s->run.v[i], &s->run.v[i + 1], (s->run.n - i - 1) * sizeof *s->run.v);
        s->run.n--;
        free_blocks(s, r);
        rstate_put(s, r);
        return KV_OK;
    }
    return KV_ENOTFOUND;
}

/* --- the step ------------------------------------------------------------------------ */

static void schedule(simsrv *s, simsrv_req *r, uint32_t num_new)
{
    /* A step that fills a block hashes it at its end (hash_known_blocks) from the chain's
     * tail and the output tokens drawn so far: fetch them while the batch is scheduled. */
    if (s->cfg.prefix_caching && (uint64_t)num_tokens(r) + 1 >= r->hash_due) {
        const rstate *st = r->priv_ptr;
        if (st->n_hashes) __builtin_prefetch(&st->hashes[st->n_hashes - 1], 1);
        if (st->n_hashes && st->n_out < st->out_room) __builtin_prefetch(&st->out[st->n_out], 1);
    }
    sm_batch_add(&s->batch, num_new, r->n_computed);
    s->out.v[s->n_sched] = r;   /* room reserved by simsrv_step */
    s->sched_new.v[s->n_sched++] = num_new;
}

static uint32_t cap_new(const simsrv *s, const simsrv_req *r, uint32_t computed, uint32_t budget)
{
    uint32_t n = num_tokens(r) - computed;
    if (s->cfg.long_prefill_token_threshold && n > s->cfg.long_prefill_token_threshold)
        n = s->cfg.long_prefill_token_threshold;
    if (n > budget) n = budget;
    uint32_t room = s->max_model_len - 1 - computed;
    return n < room ? n : room;
}

static int schedule_running(simsrv *s, uint32_t *budget, uint32_t *n_preempted)
{
    /* The running requests and their states lie apart in memory and, with many replicas,
     * out of cache: fetch the requests 2 * SRV_AHEAD ahead (the first ones before the
     * loop: a step often runs fewer), and a state SRV_AHEAD ahead when its request's
     * next token crosses a block. */
    for (size_t k = 0; k < s->run.n && k < 2 * SRV_AHEAD; k++)
        prefetch_req(s->run.v[k]);
    size_t i = 0;
    while (i < s->run.n && *budget > 0) {
        if (i + 2 * SRV_AHEAD < s->run.n)
            prefetch_req(s->run.v[i + 2 * SRV_AHEAD]);
        if (i + SRV_AHEAD < s->run.n) {
            const simsrv_req *ahead = s->run.v[i + SRV_AHEAD];
            if ((uint64_t)ahead->n_computed + 1 > ahead->ready_end ||
                (uint64_t)num_tokens(ahead) + 1 >= ahead->hash_due)
                __builtin_prefetch(ahead->priv_ptr, 1);
        }
        simsrv_req *r = s->run.v[i];
        uint32_t n = cap_new(s, r, r->n_computed, *budget);
        if (n == 0) {
            i++;
            continue;
        }
        int rc = KV_OK;
        bool self_preempted = false;
        while (r->n_computed + n > r->ready_end &&
               (rc = allocate_slots(s, r, r->n_computed, n, NULL, 0)) == KV_EFULL) {
            simsrv_req *victim = s->run.v[--s->run.n];
            /* It will ask for its blocks again when readmitted: they enter the map. */
            const rstate *vst = victim->priv_ptr;
            uint32_t shared = shared_blocks(victim, s->bs, vst->n_cached);
            if (shared < vst->n_cached && bpool_set_hashes(s->pool, vst->blocks + shared, vst->hashes + shared,
                                                           vst->n_cached - shared) != KV_OK)
                return KV_ENOMEM;
            free_blocks(s, victim);
            victim->n_computed = 0;
            victim->preemptions++;
            s->m.preemptions++;
            (*n_preempted)++;
            if (!wq_reserve(s)) return KV_ENOMEM;
            wq_push_front(s, victim);
            if (victim == r) {
                self_preempted = true;
                break;
            }
        }
        if (self_preempted) break;
        if (rc != KV_OK) return rc;
        schedule(s, r, n);
        *budget -= n;
        i++;
    }
    return KV_OK;
}

static int schedule_waiting(simsrv *s, uint32_t *budget)
{
    while (s->wq_len > 0 && *budget > 0 && s->run.n < s->max_seqs) {
        simsrv_req *r = wq_front(s);
        rstate *st = r->priv_ptr;
        uint32_t n_hit = 0;
        if (s->cfg.prefix_caching) {
            /* vLLM: the last token is always recomputed to get logits, so at most
             * num_tokens - 1 tokens (in whole blocks) can come from the cache. */
            uint32_t max_blocks = (num_tokens(r) - 1) / s->bs;
            if (max_blocks > st->n_hashes) max_blocks = st->n_hashes;
            if (!VEC_RESERVE(s->tmp_blocks, max_blocks + 1)) return KV_ENOMEM;
            n_hit = (uint32_t)bpool_match(s->pool, st->hashes, max_blocks, s->tmp_blocks.v);
        }
        uint32_t computed = n_hit * s->bs;
        uint32_t n = cap_new(s, r, computed, *budget);
        int rc = allocate_slots(s, r, computed, n, s->tmp_blocks.v, n_hit);
        if (rc == KV_EFULL) break;  /* head-of-line: nothing behind it is tried */
        if (rc != KV_OK) return rc;
        wq_pop_front(s);
        r->n_computed = computed;
        if (!r->admitted_once) {
            r->admitted_once = true;
            r->n_cached = computed;
            s->m.prompt_tokens += r->n_prompt;
            s->m.hit_tokens += computed;
        }
        if (!VEC_PUSH(s->run, r)) return KV_ENOMEM;
        schedule(s, r, n);
        *budget -= n;
    }
    return KV_OK;
}

/* vLLM's cascade attention for the step just scheduled: the leading blocks that every
 * running request holds (KVCacheManager.get_num_common_prefix_blocks: a block whose
 * reference count is the number of running requests), capped at the least context any
 * scheduled sequence has computed and rounded down to a block (the model runner's
 * _compute_cascade_attn_prefix_len); when sm_cascade says vLLM would run the cascade
 * kernel, the batch reads that prefix's KV once. Returns whether it did. */
static bool share_common_prefix(simsrv *s)
{
    if (s->run.n == 0 || s->n_sched < 2)
        return false;
    const rstate *first = s->run.v[0]->priv_ptr;
    uint32_t k = 0;
    while (k < first->n_blocks && bpool_ref(s->pool, first->blocks[k]) == s->run.n)
        k++;
    uint64_t prefix = (uint64_t)k * s->bs;
    bool all_decode = true;
    for (size_t i = 0; i < s->n_sched; i++) {
        const simsrv_req *r = s->out.v[i];
        if (r->n_computed < prefix)
            prefix = r->n_computed;
        if (s->sched_new.v[i] != 1)
            all_decode = false;
    }
    prefix = prefix / s->bs * s->bs;
    if (!sm_cascade(s->cfg.model, s->cfg.hw, s->cfg.tp, (uint32_t)prefix, s->n_sched, all_decode))
        return false;
    sm_batch_share_prefix(&s->batch, (uint32_t)prefix);
    return true;
}

int simsrv_step(simsrv *s, sim_time now, simsrv_step_result *res)
{
    memset(res, 0, sizeof *res);
    s->ev.n = s->ev_hashes.n = s->ev_tokens.n = 0;   /* nothing left for simsrv_kv_encode */
    if (s->n_emit_steps == UINT32_MAX) return KV_ERANGE;   /* emit_step would wrap */
    s->n_sched = s->out.n = s->fin.n = s->starts.n = 0;
    s->batch = (sm_batch){0};

    /* Every running request and every admission is scheduled at most once. */
    size_t most = s->run.n + (s->wq_len < s->max_seqs ? s->wq_len : s->max_seqs);
    if (!VEC_RESERVE(s->sched_new, most) || !VEC_RESERVE(s->out, most) || !VEC_RESERVE(s->fin, most) ||
        !VEC_RESERVE(s->starts, most))
        return KV_ENOMEM;
    uint32_t budget = s->max_tokens, n_preempted = 0;
    int rc = schedule_running(s, &budget, &n_preempted);
    if (rc == KV_OK && n_preempted == 0) rc = schedule_waiting(s, &budget);
    if (rc != KV_OK) return rc;
    res->n_preempted = n_preempted;
    if (s->n_sched == 0) return KV_OK;

    if (s->cfg.cascade_attention)
        res->cascade = share_common_prefix(s);
    res->duration = sm_batch_time_us(s->cfg.model, s->cfg.hw, s->cfg.tp, &s->batch);
    if (s->cfg.speedup > 0 && s->cfg.speedup != 1) {
        sim_time d = (sim_time)llround((double)res->duration / s->cfg.speedup);
        res->duration = d > 0 ? d : 1;
    }
    res->n_scheduled_tokens = s->max_tokens - budget;

    /* The step's outcome, as update_from_output applies it. */
    uint32_t step = s->n_emit_steps;
    for (size_t i = 0; i < s->n_sched; i++) {   /* out.n <= i: out.v is rewritten behind the reads */
        simsrv_req *r = s->out.v[i];
        uint32_t num_new = s->sched_new.v[i];
        /* n_generated > 0: its prefill is done */
        if (r->n_generated && num_new == 1 && r->n_computed + 1 == num_tokens(r)) res->n_decode_seqs++;
        else res->n_prefill_tokens += num_new;
        r->n_computed += num_new;
        if (r->n_computed < num_tokens(r)) continue;   /* a partial prefill chunk */
        r->n_generated++;
        s->out.v[s->out.n++] = r;
        if (r->run_len && r->run_step + r->run_len == step) {
            r->run_len++;
        } else {   /* a first token always starts a run */
            s->starts.v[s->starts.n++] = (simsrv_run_start){.r = r, .prev_step = r->run_step, .prev_len = r->run_len};
            r->run_step = step;
            r->run_len = 1;
        }
        if (r->n_generated == r->n_output) {
            s->fin.v[s->fin.n++] = r;
        } else if (s->cfg.prefix_caching && num_tokens(r) >= r->hash_due) {
            hash_known_blocks(s, r);
        }
    }
    /* Finished requests leave the running list (order kept) and free their blocks. */
    if (s->fin.n) {
        size_t k = 0;
        for (size_t i = 0; i < s->run.n; i++) {
            simsrv_req *r = s->run.v[i];
            if (r->n_generated == r->n_output) {
                free_blocks(s, r);
                rstate_put(s, r);
            } else {
                s->run.v[k++] = r;
            }
        }
        s->run.n = k;
    }
    s->n_emit_steps += s->out.n > 0;
    res->emit_step = step;
    res->run_starts = s->starts.v;
    res->n_run_starts = s->starts.n;
    res->tokens_out = s->out.v;
    res->n_tokens_out = s->out.n;
    res->finished = s->fin.v;
    res->n_finished = s->fin.n;
    if (s->cfg.emit_kv_events && s->ev.n) {
        s->ev_ts = now + res->duration;
        res->n_kv_events = s->ev.n;
        res->kv_seq = s->next_seq++;
    }
    return KV_OK;
}

int simsrv_kv_encode(simsrv *s, kvev_buf *out)
{
    if (s->ev.n == 0 || !s->cfg.emit_kv_events) return KV_OK;
    if (!VEC_RESERVE(s->ev_out, s->ev.n)) return KV_ENOMEM;
    static const kvev_event blank;
    for (size_t i = 0; i < s->ev.n; i++) {
        const evrec *e = &s->ev.v[i];
        kvev_event *o = &s->ev_out.v[i];
        *o = blank;
        o->type = e->type;
        o->block_hashes = s->ev_hashes.v + e->hash_off;
        o->n_block_hashes = e->n_hashes;
        o->medium = kvev_str_c("GPU");
        if (e->type == KVEV_BLOCK_STORED) {
            o->has_parent = e->has_parent;
            o->parent_block_hash = e->parent;
            o->token_ids = s->ev_tokens.v + e->tok_off;
            o->n_token_ids = e->n_tokens;
            o->block_size = s->bs;
        }
    }
    kvev_batch b = {.ts = (double)s->ev_ts / SIM_US_PER_S, .has_dp_rank = true, .data_parallel_rank = 0,
                    .events = s->ev_out.v, .n_events = s->ev.n};
    return kvev_encode_append(&b, s->cfg.kv_encoding, out, NULL);
}
