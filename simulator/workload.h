/* workload: inference-perf's data generators and load timers, reproduced for the
 * simulator (docs/upstream/inference-perf.md §1-2).
 *
 * A scenario's `workload:` section takes inference-perf's `data:` and `load:` sections
 * unchanged. wl_parse reads them into a wl_spec; wl_build turns the spec and a seed
 * into the concrete workload that every router then replays identically:
 *   - shared_prefix: num_groups x num_prompts_per_group prompts, each the group's
 *     system-prompt tokens followed by its own question tokens (synthetic token ids
 *     from the seeded stream), shuffled once. Request i of every stage uses prompt
 *     i mod N: each stage restarts at prompt 0, exactly as inference-perf's run_stage
 *     calls get_data() afresh. With enable_multi_turn_chat each prompt is a user
 *     session (see wl_multi_turn). An optional re-tokenisation drift (kvroute extension
 *     `workload.retokenize: {mean, spread}`) lengthens the group prefix and each
 *     question by a drawn fraction, reproducing the guide's 7515-7689 tokens for a
 *     nominal 7200 (decoded random ids re-tokenise longer).
 *   - random: input/output lengths from inference-perf's generate_distribution
 *     (normal(mean, std_dev) clipped to [min, max], rounded); request i of a stage uses
 *     lengths[i mod total_count] and fresh random tokens (no sharing at all).
 *   - trace: a CSV or JSONL file, one request per row: arrival time (s), input length,
 *     output length, and optionally a prefix group and prefix length (rows of a group
 *     share their first prefix_len tokens). Load type trace_replay.
 *   - load poisson: one-second windows, k ~ Poisson(rate), k exponential gaps scaled to
 *     sum to exactly 1 s (k = 0 skips the second), until int(rate*duration) requests;
 *     constant: N exponential gaps scaled to sum to the duration; concurrent:
 *     {num_requests, concurrency_level}, a closed loop run by the cluster driver.
 * kvroute extensions beside data/load: `retokenize: {mean, spread}` (above),
 * `vocab_size` (token ids are drawn in [0, vocab_size); default Qwen3's 151643) and
 * `output_retokenize` (below).
 *
 * output_retokenize: inference-perf counts a response's output_tokens by re-tokenising
 * the streamed text on the client, so the guide reports a mean output_length of 936.8
 * for 1000 generated tokens (docs/upstream/inference-perf.md "Where the guide's numbers come
 * from"). With this extension the server still generates exactly output_len tokens
 * (streamed events, ITL and TPOT unchanged); only the *counted* output_tokens of each
 * finished request (records, output tok/s, NTPOT, output_len statistics) is
 * generated x ratio, ratio drawn from an empirical inverse CDF given as points
 * (quantile, ratio), linear between points, quantiles from 0 to 1 increasing, ratios
 * non-decreasing. `output_retokenize: guide` is the built-in table from the guide's
 * published percentiles of output_length / 1000 (min 4, p1 33, p5 192.7, p10 944.9,
 * p25 992, p50 998, p75..p99 1000, max 1999; linear between them its mean is 931.9, the
 * guide's 936.8: the published points do not say how the mass lies between them); or give
 * `output_retokenize: {points: [[0, 0.9], [1, 1.0]]}`. The draw for request id uses
 * its own seeded stream (RNG_STREAM_COUNTED, keyed by the global request id), so every
 * router of a scenario sees the same count for the same request.
 * Arrival offsets are relative to the stage's start_time (which already includes
 * inference-perf's 1 s head start), in integer microseconds.
 * Ownership: a workload owns every array; requests with owned tokens are released with
 * wl_req_release. Single-threaded; a built workload is read-only. */
#ifndef KVROUTE_SIM_WORKLOAD_H
#define KVROUTE_SIM_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"
#include "records.h"
#include "yamltree.h"

typedef enum { WL_DATA_SHARED_PREFIX = 0, WL_DATA_RANDOM, WL_DATA_TRACE } wl_data_type;
typedef enum { WL_LOAD_CONSTANT = 0, WL_LOAD_POISSON, WL_LOAD_CONCURRENT, WL_LOAD_TRACE_REPLAY } wl_load_type;

const char *wl_data_type_name(wl_data_type t);
const char *wl_load_type_name(wl_load_type t);

/* inference-perf's IODistribution. */
typedef struct wl_dist {
    int64_t min, max;
    double mean, std_dev;
    int64_t total_count;
} wl_dist;

#define WL_COUNTED_MAX 32          /* points of an output_retokenize table */

typedef struct wl_stage_spec {
    double rate, duration;          /* constant / poisson */
    uint32_t num_requests;          /* concurrent */
    uint32_t concurrency;           /* concurrent: concurrency_level */
} wl_stage_spec;

typedef struct wl_spec {
    wl_data_type data;
    struct {
        uint32_t num_groups, num_prompts_per_group;
        uint32_t system_prompt_len, question_len, output_len;
        bool multi_turn;            /* enable_multi_turn_chat */
    } sp;
    wl_dist input, output;          /* random */
    char *trace_path;               /* trace: resolved against the scenario's folder */
    wl_load_type load;
    double interval;                /* seconds between stages (default 1.0) */
    wl_stage_spec *stages;
    size_t n_stages;
    double drift_mean, drift_spread;/* retokenize: fraction added, +- half-width */
    uint32_t vocab;                 /* token ids drawn in [0, vocab) (Qwen3: 151643) */
    struct {
        double q, ratio;            /* quantile in [0,1], counted/generated there */
    } counted[WL_COUNTED_MAX];      /* output_retokenize; n_counted = 0: off */
    uint32_t n_counted;
} wl_spec;

/* A note about accepted-but-ignored input ("api section ignored"), for the console. */
typedef void (*wl_note_fn)(void *ctx, const char *msg);

/* Reads a `workload:` map: data, load, and the sections users paste along (api, server,
 * tokenizer, report, storage, metrics: accepted and noted as ignored), plus the kvroute
 * extension `retokenize`. Unknown keys are errors naming file:line:col and the field.
 * base_dir resolves relative trace paths. On error the spec is freed. */
int wl_parse(const yt_doc *d, const yt_node *workload, const char *base_dir, wl_note_fn note, void *note_ctx,
             wl_spec *out, kv_err *err);
void wl_spec_free(wl_spec *s);
/* Errors on the first key of map nobody read: "file:line:col: field 'path.key': unknown key".
 * Shared with simulator/scenario.c. */
int wl_check_keys(const yt_doc *d, const yt_node *map, const char *path, kv_err *err);

typedef struct wl_prompt {
    const uint32_t *tokens;
    uint32_t n_tokens;
    uint32_t n_output;
    uint32_t group;                 /* prefix group, UINT32_MAX when none */
    uint32_t n_prefix;              /* shared_prefix: the system prompt's share of tokens */
} wl_prompt;

typedef struct wl_stage {
    double rate, duration;
    uint32_t concurrency;           /* concurrent; 0 otherwise */
    uint32_t n_requests;
    sim_time *offsets;              /* n_requests arrival offsets (us) from start_time;
                                       NULL for concurrent (closed loop) */
} wl_stage;

typedef struct workload {
    wl_spec spec;                   /* a copy (owned) */
    uint64_t seed;
    wl_prompt *prompts;             /* shared_prefix: the shuffled list; trace: rows */
    size_t n_prompts;
    uint32_t *pool;                 /* token storage behind prompts */
    int64_t *in_len, *out_len;      /* random: generated lengths, total_count each */
    wl_stage *stages;
    size_t n_stages;
    sim_time interval;              /* between stages, us */
} workload;

workload *wl_build(const wl_spec *spec, uint64_t seed, kv_err *err);
/* Sets a poisson or constant stage's rate, and its request count the way wl_parse
 * derives it (int(rate * duration), as inference-perf): a sweep's rate axis. */
void wl_spec_set_rate(wl_spec *spec, size_t stage, double rate);
void wl_free(workload *w);

/* The i-th request of a stage. tokens either point into the workload or (random and
 * trace data) are allocated for this request: release with wl_req_release. */
typedef struct wl_req {
    const uint32_t *tokens;
    uint32_t n_prompt, n_output;
    uint32_t group;
    /* Only the first shared_len tokens can be another request's too: a shared_prefix
     * prompt comes back every stage (n_prompt), random data shares nothing (0), a trace
     * row shares its group's prefix. */
    uint32_t shared_len;
    uint32_t *owned;
} wl_req;
int wl_request(const workload *w, size_t stage, uint64_t i, wl_req *out, kv_err *err);
void wl_req_release(wl_req *r);

/* shared_prefix with enable_multi_turn_chat (inference-perf's LocalUserSession): prompt
 * u is user u, whose context starts as its group's system prompt. Request i of a stage
 * is a round for user i mod N; its prompt is context + question (prompts[u] split at
 * n_prefix), and once answered the context becomes that prompt + the response. Rounds
 * of one user are serialised; contexts persist across stages. The cluster driver keeps
 * the sessions (they depend on the responses, i.e. on the run). */
bool wl_multi_turn(const workload *w);

/* The output length of the i-th request of a stage, without building its prompt. */
uint32_t wl_output_len(const workload *w, size_t stage, uint64_t i);

/* The output_tokens a client counts for global request id that generated `generated`
 * tokens (output_retokenize; `generated` itself when off). At least 1 when generated
 * is. Pure: the same workload, id and count give the same answer in every run. */
uint32_t wl_counted_output(const workload *w, uint64_t id, uint32_t generated);

/* Total requests over all stages. */
uint64_t wl_total_requests(const workload *w);

/* The stage's arrival times, exposed for tests: inference-perf's timers.
 * poisson: n arrivals in one-second windows; constant: n gaps scaled to duration. */
int wl_poisson_offsets(double rate, uint32_t n, uint64_t seed, sim_time *out);
int wl_constant_offsets(double rate, double duration, uint32_t n, uint64_t seed, sim_time *out);

#endif
