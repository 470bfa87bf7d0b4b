/* test_server: the simulated vLLM v1 engine. Hand-worked cases (preemption of the
 * tail with no admission that step and head-of-line blocking after it; the
 * num_tokens-1 prefix-hit cap; chunked prefill and TTFT), invariants over a random
 * shared-prefix workload checked at every step (token budget, max_num_seqs, block
 * conservation via simsrv_check, exact output lengths, nothing held after drain), and
 * the KV events decoded back with the engine's decoder and checked against an
 * independent recomputation of the block hashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "blockkeys.h"
#include "kvevents.h"
#include "profiles.h"
#include "server.h"

/* The shipped profiles, loaded once for the group (models/, hardware/). */
static sm_model *qwen;
static sm_hardware *h100, *l40s;

static int load_profiles(void **state)
{
    (void)state;
    const char *md[] = {"models"}, *hd[] = {"hardware"};
    qwen = sm_model_find(md, 1, "qwen3-32b", NULL);
    h100 = sm_hardware_find(hd, 1, "h100-sxm", NULL);
    l40s = sm_hardware_find(hd, 1, "l40s", NULL);
    return qwen && h100 && l40s ? 0 : -1;
}

static int free_profiles(void **state)
{
    (void)state;
    free(qwen);
    free(h100);
    free(l40s);
    return 0;
}

static simsrv_config base_config(uint32_t bs, uint64_t blocks, uint32_t max_tokens, uint32_t max_seqs)
{
    simsrv_config c = {0};
    c.model = qwen;
    c.hw = h100;
    c.tp = 2;
    c.block_size = bs;
    c.num_gpu_blocks = blocks;
    c.max_num_batched_tokens = max_tokens;
    c.max_num_seqs = max_seqs;
    c.prefix_caching = true;
    c.emit_kv_events = true;
    c.model_name = "Qwen/Qwen3-32B";
    return c;
}

static simsrv *new_server(const simsrv_config *c)
{
    kv_err err = {0};
    simsrv *s = simsrv_new(c, &err);
    if (!s) fail_msg("simsrv_new: %s", err.msg);
    return s;
}

static void check(const simsrv *s)
{
    kv_err err = {0};
    if (simsrv_check(s, &err) != KV_OK) fail_msg("%s", err.msg);
}

static bool produced(const simsrv_step_result *r, const simsrv_req *q)
{
    for (size_t i = 0; i < r->n_tokens_out; i++)
        if (r->tokens_out[i] == q) return true;
    return false;
}

static uint32_t *seq_tokens(uint32_t n, uint32_t base)
{
    uint32_t *t = malloc(n * sizeof *t);
    assert_non_null(t);
    for (uint32_t i = 0; i < n; i++) t[i] = base + i;
    return t;
}

/* usable blocks = num_gpu_blocks - 1 (vLLM's null block) = 7, block size 16.
 * A (32 tokens, 2 blocks), B (32, 2), C (48, 3) fill the pool in step 1. In step 2,
 * A's first decode token needs a third block: the tail C is preempted, goes to the
 * front of the waiting queue, and D (10 tokens, 1 block), although a block is free
 * after A and B, is not admitted because the step preempted. In step 3, C (now 49
 * tokens with its first output, 4 blocks) does not fit and blocks D behind it. */
static void test_preemption(void **state)
{
    (void)state;
    simsrv_config c = base_config(16, 8, 256, 16);
    c.prefix_caching = false;
    simsrv *s = new_server(&c);
    uint32_t *ta = seq_tokens(32, 1000), *tb = seq_tokens(32, 2000), *tc = seq_tokens(48, 3000),
             *td = seq_tokens(10, 4000);
    simsrv_req a = {.id = 1, .tokens = ta, .n_prompt = 32, .n_output = 40};
    simsrv_req b = {.id = 2, .tokens = tb, .n_prompt = 32, .n_output = 40};
    simsrv_req cc = {.id = 3, .tokens = tc, .n_prompt = 48, .n_output = 20};
    simsrv_req d = {.id = 4, .tokens = td, .n_prompt = 10, .n_output = 5};
    assert_int_equal(simsrv_submit(s, &a), KV_OK);
    assert_int_equal(simsrv_submit(s, &b), KV_OK);
    assert_int_equal(simsrv_submit(s, &cc), KV_OK);

    simsrv_step_result r;
    sim_time now = 0;
    assert_int_equal(simsrv_step(s, now, &r), KV_OK);
    assert_int_equal(r.n_scheduled_tokens, 112);
    assert_int_equal(r.n_prefill_tokens, 112);
    assert_int_equal(r.n_tokens_out, 3);
    assert_true(r.duration > 0);
    simsrv_metrics m;
    simsrv_get_metrics(s, &m);
    assert_true(m.kv_usage == 1.0);
    check(s);
    now += r.duration;

    assert_int_equal(simsrv_submit(s, &d), KV_OK);
    assert_int_equal(simsrv_step(s, now, &r), KV_OK);
    assert_int_equal(r.n_preempted, 1);
    assert_int_equal(r.n_tokens_out, 2);
    assert_true(produced(&r, &a) && produced(&r, &b));
    assert_int_equal(cc.preemptions, 1);
    assert_int_equal(cc.n_computed, 0);
    assert_int_equal(cc.n_generated, 1);   /* its sampled token survives the recompute */
    simsrv_get_metrics(s, &m);
    assert_int_equal(m.running, 2);
    assert_int_equal(m.waiting, 2);
    assert_int_equal(m.preemptions, 1);
    assert_int_equal(d.admitted_once, false);
    check(s);
    now += r.duration;

    assert_int_equal(simsrv_step(s, now, &r), KV_OK);
    assert_int_equal(r.n_preempted, 0);
    assert_int_equal(r.n_tokens_out, 2);
    assert_int_equal(r.n_decode_seqs, 2);
    assert_false(d.admitted_once);         /* head-of-line: C is in front and does not fit */
    simsrv_get_metrics(s, &m);
    assert_int_equal(m.waiting, 2);
    check(s);
    now += r.duration;

    /* Drain: everyone gets exactly its output; C is admitted before D. */
    simsrv_req *all[] = {&a, &b, &cc, &d};
    uint32_t got[4] = {0};
    for (int i = 0; i < 4; i++) got[i] = all[i]->n_generated;
    int finished = 0, guard = 0;
    bool c_first = false;
    while (simsrv_has_work(s)) {
        assert_true(++guard < 10000);
        assert_int_equal(simsrv_step(s, now, &r), KV_OK);
        now += r.duration;
        for (size_t k = 0; k < r.n_tokens_out; k++)
            for (int i = 0; i < 4; i++)
                if (r.tokens_out[k] == all[i]) got[i]++;
        if (cc.admitted_once && !d.admitted_once) c_first = true;
        finished += (int)r.n_finished;
        check(s);
    }
    assert_true(c_first);
    assert_int_equal(finished, 4);
    for (int i = 0; i < 4; i++) assert_int_equal(got[i], all[i]->n_output);
    simsrv_get_metrics(s, &m);
    assert_true(m.kv_usage == 0.0);
    simsrv_free(s);
    free(ta); free(tb); free(tc); free(td);
}

/* Runs r alone to completion; returns its cached tokens at admission. */
static uint32_t run_one(simsrv *s, simsrv_req *r, sim_time *now)
{
    assert_int_equal(simsrv_submit(s, r), KV_OK);
    simsrv_step_result res;
    while (simsrv_has_work(s)) {
        assert_int_equal(simsrv_step(s, *now, &res), KV_OK);
        *now += res.duration;
        check(s);
    }
    assert_int_equal(r->n_generated, r->n_output);
    return r->n_cached;
}

static void test_prefix_hit_cap(void **state)
{
    (void)state;
    simsrv_config c = base_config(16, 64, 2048, 16);
    simsrv *s = new_server(&c);
    sim_time now = 0;
    uint32_t *t = seq_tokens(80, 1);
    simsrv_req x = {.id = 1, .tokens = t, .n_prompt = 64, .n_output = 1};
    assert_int_equal(run_one(s, &x, &now), 0);
    /* The same 64 tokens (4 full blocks): at most 63 may hit, i.e. 3 whole blocks. */
    simsrv_req y = {.id = 2, .tokens = t, .n_prompt = 64, .n_output = 1};
    assert_int_equal(run_one(s, &y, &now), 48);
    /* 65 tokens: the 4 cached blocks all fit under the cap. */
    simsrv_req z = {.id = 3, .tokens = t, .n_prompt = 65, .n_output = 1};
    assert_int_equal(run_one(s, &z, &now), 64);
    /* 47 tokens share 2 full blocks (32) and cap at 46 -> 2 blocks. */
    simsrv_req w = {.id = 4, .tokens = t, .n_prompt = 47, .n_output = 2};
    assert_int_equal(run_one(s, &w, &now), 32);
    /* A change in block 1 stops the hit at the first miss. */
    uint32_t *u = seq_tokens(80, 1);
    u[20] = 99999;
    simsrv_req v = {.id = 5, .tokens = u, .n_prompt = 80, .n_output = 1};
    assert_int_equal(run_one(s, &v, &now), 16);
    simsrv_metrics m;
    simsrv_get_metrics(s, &m);
    assert_int_equal(m.hit_tokens, 48 + 64 + 32 + 16);
    assert_int_equal(m.prompt_tokens, 64 + 64 + 65 + 47 + 80);
    simsrv_free(s);
    free(t);
    free(u);
}

/* vLLM's abort: a running request leaves with its blocks freed but their hashes cached
 * (a later identical prompt hits them, no BlockRemoved is published), a waiting one
 * leaves the queue with the others' order kept, the bookkeeping stays consistent, and a
 * finished or unknown request is KV_ENOTFOUND. */
static void test_abort(void **state)
{
    (void)state;
    simsrv_config c = base_config(16, 64, 2048, 1);   /* one running at a time */
    simsrv *s = new_server(&c);
    uint32_t *t = seq_tokens(64, 1), *u = seq_tokens(32, 500), *v = seq_tokens(32, 900);
    simsrv_req a = {.id = 1, .tokens = t, .n_prompt = 64, .n_output = 50},
               b = {.id = 2, .tokens = u, .n_prompt = 32, .n_output = 2},
               d = {.id = 3, .tokens = v, .n_prompt = 32, .n_output = 2};
    simsrv_req *in_order[] = {&a, &b, &d};
    for (size_t i = 0; i < 3; i++) assert_int_equal(simsrv_submit(s, in_order[i]), KV_OK);
    simsrv_step_result r;
    sim_time now = 0;
    assert_int_equal(simsrv_step(s, now, &r), KV_OK);   /* a prefills; b, d wait */
    now += r.duration;
    assert_true(produced(&r, &a));
    assert_int_equal(simsrv_abort(s, &b), KV_OK);       /* waiting: out of the queue */
    assert_int_equal(simsrv_abort(s, &a), KV_OK);       /* running: blocks freed */
    check(s);
    simsrv_metrics m;
    simsrv_get_metrics(s, &m);
    assert_int_equal(m.running, 0);
    assert_int_equal(m.waiting, 1);
    assert_int_equal(m.blocks_removed, 0);
    assert_int_equal(simsrv_step(s, now, &r), KV_OK);   /* d is next, b is gone */
    now += r.duration;
    assert_true(produced(&r, &d));
    assert_false(produced(&r, &b));
    while (simsrv_has_work(s)) {
        assert_int_equal(simsrv_step(s, now, &r), KV_OK);
        now += r.duration;
    }
    assert_int_equal(simsrv_abort(s, &d), KV_ENOTFOUND);   /* finished */
    simsrv_req e = {.id = 4, .tokens = t, .n_prompt = 64, .n_output = 1};
    assert_int_equal(simsrv_submit(s, &e), KV_OK);
    assert_int_equal(simsrv_step(s, now, &r), KV_OK);
    assert_int_equal(e.n_cached, 48);                   /* a's blocks stayed cached */
    check(s);
    simsrv_free(s);
    free(t);
    free(u);
    free(v);
}

/* A request whose prompt carries its fingerprint, as the cluster sends a workload's
 * prompts (the only ones the server remembers). */
static simsrv_req fp_req(uint64_t id, const uint32_t *tokens, uint32_t n_prompt)
{
    return (simsrv_req){.id = id, .tokens = tokens, .n_prompt = n_prompt, .n_output = 1,
                        .prompt_fp = XXH3_64bits(tokens, (size_t)n_prompt * sizeof *tokens)};
}

/* The server remembers fingerprinted prompts' hash chains by content, not by buffer:
 * the same tokens in another buffer hit like the original, the original buffer
 * rewritten in place does not reuse the old chain, and a prompt whose memo slot was
 * taken by 1100 others since still gets its own chain. */
static void test_prompt_memo(void **state)
{
    (void)state;
    simsrv_config c = base_config(16, 4096, 2048, 16);
    simsrv *s = new_server(&c);
    sim_time now = 0;
    uint32_t *t = seq_tokens(64, 1), *copy = seq_tokens(64, 1);
    simsrv_req x = fp_req(1, t, 64);
    assert_int_equal(run_one(s, &x, &now), 0);
    simsrv_req y = fp_req(2, copy, 64);
    assert_int_equal(run_one(s, &y, &now), 48);
    /* Block 2 of the original buffer changes: only blocks 0-1 can still hit. */
    t[40] = 77777;
    simsrv_req z = fp_req(3, t, 64);
    assert_int_equal(run_one(s, &z, &now), 32);
    /* 1100 other two-block prompts, then the copy again: still its 3 blocks. */
    uint32_t *other = seq_tokens(32, 0);
    for (uint32_t i = 0; i < 1100; i++) {
        for (uint32_t k = 0; k < 32; k++) other[k] = 1000000 + i * 32 + k;
        simsrv_req o = fp_req(100 + i, other, 32);
        assert_int_equal(run_one(s, &o, &now), 0);
    }
    simsrv_req w = fp_req(4, copy, 64);
    assert_int_equal(run_one(s, &w, &now), 48);
    simsrv_free(s);
    free(t);
    free(copy);
    free(other);
}

static void test_chunked_prefill_ttft(void **state)
{
    (void)state;
    simsrv_config c = base_config(16, 64, 32, 16);
    simsrv *s = new_server(&c);
    uint32_t *t = seq_tokens(100, 1);
    simsrv_req q = {.id = 1, .tokens = t, .n_prompt = 100, .n_output = 3};
    assert_int_equal(simsrv_submit(s, &q), KV_OK);
    simsrv_step_result r;
    /* 100 tokens in chunks of 32: 32, 32, 32, 4; the first token ends step 4. */
    uint32_t want[] = {32, 32, 32, 4, 1, 1};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(simsrv_step(s, 0, &r), KV_OK);
        assert_int_equal(r.n_scheduled_tokens, want[i]);
        assert_int_equal(r.n_tokens_out, i >= 3 ? 1 : 0);
        assert_int_equal(q.n_generated > 0, i >= 3);
    }
    assert_int_equal(r.n_finished, 1);
    assert_false(simsrv_has_work(s));
    simsrv_free(s);

    /* long_prefill_token_threshold caps a chunk below the budget. */
    c.max_num_batched_tokens = 2048;
    c.long_prefill_token_threshold = 40;
    s = new_server(&c);
    simsrv_req q2 = {.id = 2, .tokens = t, .n_prompt = 100, .n_output = 1};
    assert_int_equal(simsrv_submit(s, &q2), KV_OK);
    assert_int_equal(simsrv_step(s, 0, &r), KV_OK);
    assert_int_equal(r.n_scheduled_tokens, 40);
    simsrv_free(s);
    free(t);
}

/* speedup X: every step of the same work takes the model's time / X (rounded to the
 * microsecond), the emulated pods' wall clock and a scenario's cluster.speedup. */
static void test_speedup(void **state)
{
    (void)state;
    simsrv_config c1 = base_config(16, 64, 32, 16), c4 = c1;
    c4.speedup = 4;
    simsrv *s1 = new_server(&c1), *s4 = new_server(&c4);
    uint32_t *t = seq_tokens(100, 1);
    simsrv_req q1 = {.id = 1, .tokens = t, .n_prompt = 100, .n_output = 3}, q4 = q1;
    assert_int_equal(simsrv_submit(s1, &q1), KV_OK);
    assert_int_equal(simsrv_submit(s4, &q4), KV_OK);
    simsrv_step_result r1, r4;
    int steps = 0;
    while (simsrv_has_work(s1)) {
        assert_int_equal(simsrv_step(s1, 0, &r1), KV_OK);
        assert_int_equal(simsrv_step(s4, 0, &r4), KV_OK);
        assert_true(r1.duration > 1000);
        assert_int_equal(r4.duration, (r1.duration + 2) / 4);
        assert_int_equal(r4.n_scheduled_tokens, r1.n_scheduled_tokens);
        steps++;
    }
    assert_int_equal(steps, 6);
    assert_false(simsrv_has_work(s4));
    simsrv_free(s1);
    simsrv_free(s4);
    free(t);
}

static void test_rejects_and_defaults(void **state)
{
    (void)state;
    simsrv_config c = base_config(16, 8, 0, 0);
    simsrv *s = new_server(&c);
    assert_int_equal(simsrv_max_num_batched_tokens(s), 8192);
    assert_int_equal(simsrv_max_num_seqs(s), 1024);
    assert_int_equal(simsrv_num_gpu_blocks(s), 8);
    uint32_t *t = seq_tokens(200, 1);
    simsrv_req big = {.id = 1, .tokens = t, .n_prompt = 100, .n_output = 20};   /* 8 blocks > 7 */
    assert_int_equal(simsrv_submit(s, &big), KV_ERANGE);
    simsrv_req empty = {.id = 2, .tokens = t, .n_prompt = 0, .n_output = 20};
    assert_int_equal(simsrv_submit(s, &empty), KV_ERANGE);
    assert_false(simsrv_has_work(s));
    simsrv_free(s);

    /* Derived capacity: Qwen3-32B, 2xH100, block 64, 0.9 -> ~300k tokens. */
    c = base_config(64, 0, 0, 0);
    s = new_server(&c);
    uint64_t tokens = simsrv_num_gpu_blocks(s) * 64;
    assert_true(tokens > 285000 && tokens < 333900);
    simsrv_req longp = {.id = 3, .tokens = t, .n_prompt = 40000, .n_output = 1000};   /* > max_model_len */
    assert_int_equal(simsrv_submit(s, &longp), KV_ERANGE);
    simsrv_free(s);

    kv_err err = {0};
    c.tp = 0;
    assert_null(simsrv_new(&c, &err));
    assert_int_equal(err.code, KV_EINVAL);
    c = base_config(64, 0, 0, 0);
    c.hw = l40s;   /* 65 GB of weights do not fit one 48 GB card */
    c.tp = 1;
    assert_null(simsrv_new(&c, &err));
    assert_int_equal(err.code, KV_ERANGE);
    free(t);
}

/* --- digests ------------------------------------------------------------------ */

/* FNV-1a over 64-bit words: two runs that must agree fold what they did into one each. */
#define DIGEST_START 1469598103934665603ULL

static uint64_t digest_word(uint64_t h, uint64_t v)
{
    return (h ^ v) * 1099511628211ULL;
}

/* The step's KV payload as its caller publishes it, into b (emptied first): none when
 * the step reported no events. */
static void step_payload(simsrv *s, const simsrv_step_result *r, kvev_buf *b)
{
    b->len = 0;
    assert_int_equal(simsrv_kv_encode(s, b), KV_OK);
    assert_int_equal(b->len > 0, r->n_kv_events > 0);
}

/* Folds in what a step did: its event bytes, which requests got a token, its time and
 * its token and preemption counts. */
static uint64_t digest_step(uint64_t h, const simsrv_step_result *r, const kvev_buf *payload)
{
    for (size_t k = 0; k < payload->len; k++) h = digest_word(h, payload->data[k]);
    for (size_t k = 0; k < r->n_tokens_out; k++) h = digest_word(h, r->tokens_out[k]->id);
    return digest_word(h, (uint64_t)r->duration ^ (uint64_t)r->n_tokens_out << 32 ^ (uint64_t)r->n_preempted << 48);
}

/* --- events ------------------------------------------------------------------- */

typedef struct evcheck {
    kvev_decoder *dec;
    blockkeys_ctx keys;
    uint64_t root;
    uint64_t next_seq;
    uint64_t *live; size_t n_live, cap_live;   /* multiset of stored, not yet removed */
    uint64_t stored, removed;
} evcheck;

static void ev_apply(evcheck *e, const simsrv_step_result *r, const kvev_buf *payload, uint32_t bs)
{
    if (!payload->len) return;
    assert_int_equal(r->kv_seq, e->next_seq);
    e->next_seq++;
    kvev_batch b;
    kv_err err = {0};
    if (kvev_decode_batch(e->dec, payload->data, payload->len, &b, &err) != KV_OK) fail_msg("%s", err.msg);
    assert_true(b.n_events > 0);
    for (size_t i = 0; i < b.n_events; i++) {
        const kvev_event *ev = &b.events[i];
        assert_string_equal(ev->medium.s, "GPU");
        if (ev->type == KVEV_BLOCK_STORED) {
            assert_int_equal(ev->block_size, bs);
            assert_int_equal(ev->n_token_ids, ev->n_block_hashes * bs);
            /* Independent recomputation: the chain from the parent (or the model root)
             * over the published tokens must give the published hashes. */
            uint64_t want[64];
            assert_true(ev->n_block_hashes <= 64);
            size_t n = blockkeys_compute(&e->keys, ev->has_parent ? ev->parent_block_hash : e->root, ev->token_ids,
                                         ev->n_token_ids, NULL, 0, NULL, want, 64);
            assert_int_equal(n, ev->n_block_hashes);
            assert_memory_equal(want, ev->block_hashes, n * sizeof *want);
            for (size_t k = 0; k < n; k++) {
                if (e->n_live == e->cap_live) {
                    e->cap_live = e->cap_live ? e->cap_live * 2 : 256;
                    e->live = realloc(e->live, e->cap_live * sizeof *e->live);
                    assert_non_null(e->live);
                }
                e->live[e->n_live++] = ev->block_hashes[k];
            }
            e->stored += n;
        } else {
            assert_int_equal(ev->type, KVEV_BLOCK_REMOVED);
            assert_int_equal(ev->n_block_hashes, 1);
            size_t k = 0;
            while (k < e->n_live && e->live[k] != ev->block_hashes[0]) k++;
            if (k == e->n_live) fail_msg("BlockRemoved for a hash never stored");
            e->live[k] = e->live[--e->n_live];
            e->removed++;
        }
    }
}

/* A random shared-prefix workload with arrivals between steps; every invariant is
 * checked at every step. private_tails: the requests say that their tokens past the
 * group's prefix are their own (simsrv_req.unshared_tail), which must change nothing
 * the server does, with KV events or without (then those blocks are keyed by position):
 * returns a digest of every step's result. */
static uint64_t run_random(uint32_t seed, uint32_t bs, uint64_t blocks, uint32_t max_tokens, uint32_t max_seqs,
                           uint32_t threshold, bool private_tails, bool events)
{
    simsrv_config c = base_config(bs, blocks, max_tokens, max_seqs);
    c.long_prefill_token_threshold = threshold;
    c.emit_kv_events = events;
    simsrv *s = new_server(&c);
    evcheck e = {0};
    e.dec = kvev_decoder_new(0, NULL);
    assert_non_null(e.dec);
    assert_int_equal(blockkeys_init(&e.keys, BLOCKKEYS_XXH64, bs, "vllm", NULL), KV_OK);
    e.root = blockkeys_root(&e.keys, "Qwen/Qwen3-32B");
    /* The router's request keys use another seed: engine keys must differ. */
    blockkeys_ctx router;
    blockkeys_init(&router, BLOCKKEYS_XXH64, bs, "", NULL);
    assert_true(blockkeys_root(&router, "Qwen/Qwen3-32B") != e.root);

    enum { NREQ = 300, NGROUP = 5 };
    srand(seed);
    uint32_t *prefix[NGROUP];
    for (int g = 0; g < NGROUP; g++) {
        prefix[g] = malloc(400 * sizeof(uint32_t));
        for (int k = 0; k < 400; k++) prefix[g][k] = (uint32_t)rand() % 150000;
    }
    simsrv_req *req = calloc(NREQ, sizeof *req);
    uint32_t **toks = calloc(NREQ, sizeof *toks);
    uint32_t *got = calloc(NREQ, sizeof *got);
    /* each request's latest run of consecutive emitting steps, kept here independently */
    uint32_t *run_step = calloc(NREQ, sizeof *run_step), *run_len = calloc(NREQ, sizeof *run_len);
    assert_true(req && toks && got && run_step && run_len);
    kvev_buf payload = {0};
    uint32_t emitting = 0, breaks = 0;
    uint64_t digest = DIGEST_START;
    size_t next = 0, done = 0;
    sim_time now = 0;
    int guard = 0;
    while (done < NREQ) {
        assert_true(++guard < 200000);
        for (int k = rand() % 4; k > 0 && next < NREQ; k--, next++) {
            uint32_t plen = (uint32_t)(rand() % 400), qlen = 1 + (uint32_t)(rand() % 200);
            uint32_t *t = malloc((plen + qlen) * sizeof *t);
            memcpy(t, prefix[rand() % NGROUP], plen * sizeof *t);
            for (uint32_t k2 = 0; k2 < qlen; k2++) t[plen + k2] = (uint32_t)rand() % 150000;
            toks[next] = t;
            req[next] = (simsrv_req){.id = next, .tokens = t, .n_prompt = plen + qlen,
                                     .n_output = 1 + (uint32_t)(rand() % 120),
                                     .unshared_tail = private_tails, .shared_len = plen};
            assert_int_equal(simsrv_submit(s, &req[next]), KV_OK);
        }
        simsrv_step_result r;
        assert_int_equal(simsrv_step(s, now, &r), KV_OK);
        if (!simsrv_has_work(s) && r.n_tokens_out == 0 && next < NREQ) continue;
        assert_true(r.n_scheduled_tokens <= max_tokens);
        simsrv_metrics m;
        simsrv_get_metrics(s, &m);
        assert_true(m.running >= 0 && (uint32_t)m.running <= max_seqs);
        assert_true(m.kv_usage >= 0.0 && m.kv_usage <= 1.0);
        check(s);
        if (r.n_tokens_out) assert_int_equal(r.emit_step, emitting++);
        size_t starts = 0;
        for (size_t k = 0; k < r.n_tokens_out; k++) {
            simsrv_req *q = r.tokens_out[k];
            got[q->id]++;
            assert_int_equal(got[q->id], q->n_generated);
            uint32_t *rs = &run_step[q->id], *rl = &run_len[q->id];
            if (*rl && *rs + *rl == r.emit_step) {
                (*rl)++;
            } else {              /* reported, in tokens_out order, with the run it ends */
                assert_true(starts < r.n_run_starts);
                const simsrv_run_start *st = &r.run_starts[starts++];
                assert_ptr_equal(st->r, q);
                assert_int_equal(st->prev_len, *rl);
                if (*rl) assert_int_equal(st->prev_step, *rs), breaks++;
                *rs = r.emit_step, *rl = 1;
            }
            assert_int_equal(q->run_step, *rs);
            assert_int_equal(q->run_len, *rl);
        }
        assert_int_equal(starts, r.n_run_starts);
        for (size_t k = 0; k < r.n_finished; k++) {
            assert_int_equal(r.finished[k]->n_generated, r.finished[k]->n_output);
            done++;
        }
        step_payload(s, &r, &payload);
        ev_apply(&e, &r, &payload, bs);
        digest = digest_step(digest, &r, &payload);
        now += r.duration;
    }
    for (size_t i = 0; i < NREQ; i++) assert_int_equal(got[i], req[i].n_output);
    simsrv_metrics m;
    simsrv_get_metrics(s, &m);
    assert_false(simsrv_has_work(s));
    assert_true(m.kv_usage == 0.0);              /* nothing held after the drain */
    assert_int_equal(m.waiting + m.running, 0);
    if (events) {
        assert_int_equal(m.blocks_stored, e.stored);
        assert_int_equal(m.blocks_removed, e.removed);
    }
    assert_true(m.hit_tokens > 0);
    if (blocks < 200) assert_true(m.preemptions > 0 && breaks > 0);   /* the tight pools must preempt */
    digest = digest_word(digest, m.hit_tokens ^ m.blocks_removed << 32 ^ m.blocks_stored << 48);
    for (size_t i = 0; i < NREQ; i++) free(toks[i]);
    for (int g = 0; g < NGROUP; g++) free(prefix[g]);
    free(req); free(toks); free(got); free(run_step); free(run_len); free(e.live);
    kvev_buf_free(&payload);
    kvev_decoder_free(e.dec);
    simsrv_free(s);
    return digest;
}

static void test_random_invariants(void **state)
{
    (void)state;
    /* tight KV: preemption by recompute; roomy KV, small budget, chunk threshold; big
     * blocks, tight. Private tails (kept out of the map until a preemption publishes
     * them; keyed by position when no event shows their hashes) give the same steps,
     * tokens, hits, counts and event bytes. */
    for (int events = 0; events < 2; events++) {
        uint64_t want[3] = {run_random(1, 16, 120, 512, 8, 0, false, events),
                            run_random(2, 16, 2000, 256, 64, 64, false, events),
                            run_random(3, 64, 60, 1024, 32, 0, false, events)};
        assert_true(run_random(1, 16, 120, 512, 8, 0, true, events) == want[0]);
        assert_true(run_random(2, 16, 2000, 256, 64, 64, true, events) == want[1]);
        assert_true(run_random(3, 64, 60, 1024, 32, 0, true, events) == want[2]);
    }
}

/* The same submissions give the same steps and the same event bytes, whether the
 * caller supplies the prompts' fingerprints (simsrv_req.prompt_fp: the server remembers
 * their chains) or not (every chain hashed afresh); with events off, no payload at all. */
static uint64_t run_digest(bool events, bool fingerprints)
{
    simsrv_config c = base_config(16, 100, 256, 16);
    c.emit_kv_events = events;
    simsrv *s = new_server(&c);
    enum { N = 40 };
    uint32_t *t = seq_tokens(600, 7);
    simsrv_req q[N];
    for (int i = 0; i < N; i++) {
        q[i] = (simsrv_req){.id = (uint64_t)i, .tokens = t + (i % 5) * 17, .n_prompt = 100 + (uint32_t)(i * 37 % 300),
                            .n_output = 1 + (uint32_t)(i * 13 % 50)};
        if (fingerprints) q[i].prompt_fp = XXH3_64bits(q[i].tokens, (size_t)q[i].n_prompt * sizeof *q[i].tokens);
        assert_int_equal(simsrv_submit(s, &q[i]), KV_OK);
    }
    uint64_t h = DIGEST_START;
    sim_time now = 0;
    simsrv_step_result r;
    kvev_buf payload = {0};
    while (simsrv_has_work(s)) {
        assert_int_equal(simsrv_step(s, now, &r), KV_OK);
        now += r.duration;
        step_payload(s, &r, &payload);
        if (!events) assert_int_equal(r.n_kv_events, 0);
        h = digest_step(h, &r, &payload);
    }
    kvev_buf_free(&payload);
    simsrv_free(s);
    free(t);
    return h;
}

static void test_deterministic(void **state)
{
    (void)state;
    assert_true(run_digest(true, false) == run_digest(true, false));
    assert_true(run_digest(true, false) == run_digest(true, true));
    run_digest(false, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_prefix_hit_cap),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_prompt_memo),
        cmocka_unit_test(test_chunked_prefill_ttft),
        cmocka_unit_test(test_speedup),
        cmocka_unit_test(test_rejects_and_defaults),
        cmocka_unit_test(test_random_invariants),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, load_profiles, free_profiles);
}
