/* server: one simulated vLLM v1 engine replica (one pod, TP GPUs).
 * Reproduces vLLM's scheduler (continuous batching, chunked prefill, running first,
 * preempt-by-recompute from the tail, no admissions in a step that preempted) and its
 * block pool with prefix caching (docs/upstream/vllm.md §3). Step time comes from
 * simulator/stepmodel.h. Emits the KV events vLLM would publish (BlockStored/BlockRemoved),
 * as msgpack payloads in vLLM's wire format, so the router ingests them through the real
 * engine path (kvevents -> kvindex).
 * Ownership: the server keeps pointers to submitted requests until they finish; the
 * caller (simulator/cluster.c) owns them. Single-threaded. */
#ifndef KVROUTE_SIM_SERVER_H
#define KVROUTE_SIM_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"
#include "kvevents.h"
#include "records.h"
#include "stepmodel.h"

typedef struct simsrv_config {
    const sm_model *model;
    const sm_hardware *hw;
    int tp;                               /* tensor parallel size */
    uint32_t block_size;                  /* tokens per KV block (guide: 64) */
    uint64_t num_gpu_blocks;              /* 0 = derive from gpu_memory_utilization */
    double gpu_memory_utilization;        /* default 0.9 */
    uint32_t max_num_batched_tokens;      /* 0 = vLLM default for the hardware */
    uint32_t max_num_seqs;                /* 0 = vLLM default for the hardware */
    uint32_t long_prefill_token_threshold;/* 0 = off */
    uint32_t max_model_len;               /* 0 = model's */
    bool prefix_caching;                  /* default true */
    double speedup;                       /* step times divided by this (./sim serve --speedup, a scenario's
                                           * cluster.speedup); 0 or 1: the model's own times */
    /* vLLM's cascade attention: a step whose running requests all hold the same leading
     * blocks reads that prefix's KV once when vLLM's heuristic would use the cascade
     * kernel (sm_cascade). Off by default: docs/VALIDATION.md "Shared-prefix attention". */
    bool cascade_attention;
    bool emit_kv_events;
    kvev_encoding kv_encoding;            /* KVEV_ENC_ARRAY (the zero default) or a map form */
    const char *pod_id;                   /* topic pod id, e.g. "10.0.0.1:8000" */
    const char *model_name;               /* topic model, e.g. "Qwen/Qwen3-32B" */
} simsrv_config;

/* A request as the server sees it. The cluster fills the inputs; the server the rest.
 * What a step reads and writes for every running request comes first, in 32 bytes, so
 * that with thousands of requests out of cache a step touches one or two cache lines of
 * each (the rest is read when a request is admitted, starts a run of tokens, crosses a
 * block boundary or finishes). */
typedef struct simsrv_req {
    uint32_t n_prompt;                    /* input */
    uint32_t n_output;                    /* input: tokens to generate (ignore_eos) */
    /* server-owned progress */
    uint32_t n_computed;                  /* prompt+output tokens with KV computed */
    uint32_t n_generated;                 /* > 0: the prefill is done, the first token out */
    /* The run of consecutive emitting steps (simsrv_step_result.emit_step) in which it got
     * its latest tokens: run_len steps from run_step; run_len 0: no token yet. */
    uint32_t run_step, run_len;
    /* What a step needs to know of the server's per-request state (priv_ptr), kept here
     * so that a decode step reads that state only at block boundaries: scheduling up to
     * ready_end tokens needs no new block and no block's hash; hash_due: the token count
     * at which the next full block is hashed (UINT32_MAX: never, or past 2^32). */
    uint32_t ready_end, hash_due;
    void *priv_ptr;                       /* next to them: read at every block boundary */
    uint32_t n_cached;                    /* hit tokens at first admission */
    uint32_t preemptions;
    bool admitted_once;
    /* input: every token past the first shared_len is this request's alone (fresh random
     * tokens, and output tokens that no later prompt repeats), so no other request can
     * ask for a block holding one: the server hashes such blocks (events, counts and
     * evictions are unchanged) but keeps them out of its prefix-cache map unless the
     * request is preempted and will ask for them itself (bpool_set_private_hashes), and
     * with KV events off keys them by position instead of hashing their tokens. False:
     * any block may be shared. */
    bool unshared_tail;
    uint32_t shared_len;
    /* inputs */
    uint64_t id;
    const uint32_t *tokens;               /* prompt token ids */
    void *user;                           /* the cluster's record */
    uint64_t prompt_fp;                   /* XXH3_64bits of the prompt's tokens when the prompt
                                           * may come back (the server then remembers its hash
                                           * chain); 0 = a prompt seen once, hashed, not kept */
} simsrv_req;

/* A request whose token this step does not continue its latest run (its first token,
 * or one after an emitting step without it: preempted, or left out of a step), with the
 * run it ends, so that a caller keeping token times per step touches only these. */
typedef struct simsrv_run_start {
    simsrv_req *r;
    uint32_t prev_step, prev_len;         /* prev_len 0: r's first token */
} simsrv_run_start;

/* What one engine step did; arrays valid until the next simsrv_step call. */
typedef struct simsrv_step_result {
    sim_time duration;                    /* step time (the step ends at now + duration) */
    simsrv_req **tokens_out; size_t n_tokens_out;    /* each got one new token at step end */
    simsrv_req **finished; size_t n_finished;        /* generated all n_output this step */
    /* When n_tokens_out > 0: this step's index among the server's steps that emitted a
     * token (0, 1, ...), and which of tokens_out start a run there. */
    uint32_t emit_step;
    simsrv_run_start *run_starts; size_t n_run_starts;
    uint32_t n_scheduled_tokens, n_prefill_tokens, n_decode_seqs;
    uint32_t n_preempted;
    bool cascade;                         /* the step read a common prefix once */
    /* KV events published at the end of this step (0: none, or events are off): one
     * KVEventBatch, number kv_seq, that simsrv_kv_encode writes. */
    size_t n_kv_events;
    uint64_t kv_seq;
} simsrv_step_result;

typedef struct simsrv simsrv;

simsrv *simsrv_new(const simsrv_config *cfg, kv_err *err);
void simsrv_free(simsrv *s);
/* Joins the waiting queue and returns KV_OK, or KV_ERANGE (request not queued, the
 * server keeps no pointer) when vLLM could never serve it: n_prompt == 0, prompt +
 * output longer than max_model_len, or more blocks than the whole pool holds (vLLM
 * would reject it at the API, or preempt it forever). Engine block hashes (for prefix
 * caching and events) are computed once here. */
int simsrv_submit(simsrv *s, simsrv_req *r);
/* Takes a waiting or running request out, as vLLM aborts one whose client left: its
 * blocks are freed (their hashes stay cached, so no KV event), the server keeps no
 * pointer. KV_ENOTFOUND when r is not in the server (finished, or never submitted).
 * Between steps only; a step's result may still point at r (the caller keeps r until
 * it has read that result). */
int simsrv_abort(simsrv *s, simsrv_req *r);
bool simsrv_has_work(const simsrv *s);
/* Starts fetching what the server's next step reads, for a caller that knows which server
 * steps next; a hint, which changes no state. Each stage reads pointers the one before
 * fetched, so a caller issues them in order, with other work between: the server's own
 * fields, then the start of its list of running requests, then the first requests on it
 * (the step fetches the rest ahead of itself). */
typedef enum simsrv_prefetch_stage {
    SIMSRV_PREFETCH_FIELDS,
    SIMSRV_PREFETCH_RUNNING,
    SIMSRV_PREFETCH_REQUESTS,
} simsrv_prefetch_stage;
void simsrv_prefetch(const simsrv *s, simsrv_prefetch_stage stage);
/* Runs one step starting at now. Returns KV_OK; res->duration > 0 when work was done.
 * KV_ERANGE, doing nothing, once 2^32 - 1 steps have emitted tokens. */
int simsrv_step(simsrv *s, sim_time now, simsrv_step_result *res);
/* Appends the KV events of the step simsrv_step last ran (res.n_kv_events of them) to
 * out as one msgpack KVEventBatch (the configured kv_encoding, ts = the step's end),
 * after out's first out->len bytes; appends nothing when it had none. Valid until the
 * next simsrv_step, so a caller encodes at the step's end, when the batch is published,
 * straight into wherever it keeps payloads (the cluster: its in-flight queue, shared by
 * every replica). KV_OK, or KV_ENOMEM with out->len unchanged. */
int simsrv_kv_encode(simsrv *s, kvev_buf *out);

typedef struct simsrv_metrics {
    int waiting, running;
    double kv_usage;                      /* used blocks / total, as vllm:kv_cache_usage_perc */
    uint64_t num_gpu_blocks;
    uint64_t prompt_tokens, hit_tokens;   /* cumulative, for hit rate */
    uint64_t preemptions;
    uint64_t blocks_stored, blocks_removed;
} simsrv_metrics;
void simsrv_get_metrics(const simsrv *s, simsrv_metrics *m);
uint32_t simsrv_block_size(const simsrv *s);
uint32_t simsrv_max_num_batched_tokens(const simsrv *s);
uint32_t simsrv_max_num_seqs(const simsrv *s);
uint64_t simsrv_num_gpu_blocks(const simsrv *s);
uint32_t simsrv_max_model_len(const simsrv *s);
/* Verifies the server's bookkeeping (for tests and --check runs): every block's
 * reference count equals the number of running requests holding it, waiting requests
 * hold none, the free queue holds exactly the unreferenced blocks, and no request's
 * progress exceeds its tokens. KV_ESTATE with the first violation named. O(blocks). */
int simsrv_check(const simsrv *s, kv_err *err);

/* Token id of r's i-th generated token: a fixed function of (r->id, i), so that a
 * multi-turn workload can append the same response tokens to the next turn's prompt. */
uint32_t simsrv_output_token(const simsrv *s, const simsrv_req *r, uint32_t i);

#endif
