/* scheduler: GIE's scheduling framework in C — the heart shared by ./sim and ./epp.
 *
 * A request's views (tokens, block keys, headers) and the endpoints' state go in; a
 * chosen endpoint and, on demand, a full trace of why come out. Profiles run exactly
 * as GIE runs them (docs/upstream/epp.md §1): filters in order (none left -> KV_ENOENDPOINTS),
 * each scorer's result clamped to [0,1] and added with its (float) weight, no division
 * by the weight sum, then the picker. Plugins are the types in policies/, found by name
 * in the registry the driver gives the config loader (policies/registry.h); a config
 * (engine/config.h) says which to build.
 *
 * Threads: a sched is used by one thread at a time (the EPP serialises scheduling
 * calls or runs one sched per worker; shared state such as the kvindex is itself
 * thread-safe). Ownership: the caller owns requests and endpoints; they only need to
 * outlive the call (hooks receive what they need to keep by value or by endpoint id). */
#ifndef KVROUTE_SCHEDULER_H
#define KVROUTE_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockkeys.h"
#include "kverr.h"
#include "kvindex.h"
#include "yamltree.h"

/* ---- views ------------------------------------------------------------------ */

typedef struct sched_kv {
    const char *key, *value;
} sched_kv;

typedef struct sched_request {
    const char *id;
    const char *model;            /* incoming model name */
    const char *target_model;     /* after any rewrite; NULL = model */
    const char *lora;             /* LoRA adapter requested, or NULL */
    const char *cache_salt;       /* NULL if none */
    const uint32_t *tokens;       /* prompt token ids, or NULL when unknown */
    size_t n_tokens;
    const char *prompt;           /* completions prompt text, or JSON of chat messages; NULL if none */
    size_t prompt_len;
    const sched_kv *headers;      /* request headers (lower-case keys), e.g. x-session-token */
    size_t n_headers;
    int priority;                 /* < 0 is sheddable */
    uint32_t output_tokens_hint;  /* max_tokens when known (peer cost models); 0 = unknown */
    /* Optional precomputed block keys of tokens (for keys_ctx and this request's model or
     * LoRA, cache_salt folded in): sched_cycle_keys returns them instead of hashing when a
     * scorer asks for the same (algo, block size, seed). NULL = hash on demand. */
    const blockkeys_ctx *keys_ctx;
    const uint64_t *keys;
    size_t n_keys;
} sched_request;

typedef struct sched_metrics {
    bool valid;                   /* scraped and not stale */
    int waiting;                  /* vllm:num_requests_waiting */
    int running;                  /* vllm:num_requests_running */
    double kv_usage;              /* vllm:kv_cache_usage_perc, 0..1 */
    const char *const *running_loras; size_t n_running_loras;
    const char *const *waiting_loras; size_t n_waiting_loras;
    int max_lora;                 /* 0 = unknown */
    uint32_t block_size;          /* vllm:cache_config_info; 0 = unknown */
    uint32_t num_gpu_blocks;
} sched_metrics;

typedef struct sched_endpoint {
    uint32_t id;                  /* unique for the endpoint's life, assigned by the driver */
    const char *name;             /* "ip:port": what the gateway routes to */
    const char *pod;              /* pod name for logs ("<pod>-rank-0"); may equal name */
    const char *ns;               /* namespace for logs; may be "" */
    const sched_kv *labels;       /* e.g. llm-d.ai/role=decode */
    size_t n_labels;
    sched_metrics m;
    /* Picker-side: routed, not yet complete. The sched keeps the counts by id; its hooks
     * write them into the target they are given, and sched_schedule into every endpoint
     * it is given when one of its plugins reads them (sched_plugin_type.reads_in_flight):
     * refreshing all of them is a lookup per endpoint, the largest per-decision cost of
     * a thousand-endpoint pool whose policy never reads them. */
    int in_flight;
} sched_endpoint;

const char *sched_label(const sched_endpoint *ep, const char *key);      /* NULL if absent */
const char *sched_header(const sched_request *r, const char *key);       /* case-insensitive */

/* ---- environment -------------------------------------------------------------- */

typedef struct sched_env {
    uint64_t seed;                          /* the sim passes its seed; live seeds from the clock */
    /* seconds: simulated time in ./sim, CLOCK_MONOTONIC in ./epp. The engine reads no
     * clock of its own; NULL is time standing still at 0 (and plugin calls untimed). */
    double (*now)(void *clock_ctx);
    void *clock_ctx;
    /* Optional sink for warnings (unknown parameters, deprecated fields) at build time. */
    void (*warn)(void *warn_ctx, const char *msg);
    void *warn_ctx;
} sched_env;

/* env->now(), or 0 without a clock: the time of a cycle (sched_cycle_now), the time
 * stateful plugins stamp hooks with, and the observer's clock. */
double sched_env_now(const sched_env *env);

/* env->warn, formatted (the scheduler's and plugins' build-time warnings); nothing when
 * there is no sink. */
void sched_warn(const sched_env *env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- plugins ------------------------------------------------------------------- */

typedef enum {
    SCHED_PROFILE_HANDLER = 1,
    SCHED_FILTER = 2,
    SCHED_SCORER = 3,
    SCHED_PICKER = 4,
    /* Request-control plugins named in configs but not in profiles (e.g. llm-d's
     * prefill-header-handler): only hooks, no place in a profile run. */
    SCHED_REQUEST_CONTROL = 5,
} sched_kind;

typedef struct sched sched;
typedef struct sched_plugin sched_plugin;
typedef struct sched_cycle sched_cycle;

typedef struct sched_scored {
    sched_endpoint *ep;
    double score;                 /* weighted sum over the profile's scorers */
} sched_scored;

/* Parameters as written in the config; read them with the yt_* functions.
 * Keys nobody reads are reported as warnings after init. node may be NULL. */
typedef struct sched_params {
    const yt_doc *doc;
    const yt_node *node;
} sched_params;

typedef struct sched_plugin_type {
    const char *type;             /* registry name, e.g. "queue-scorer" */
    sched_kind kind;
    bool reads_in_flight;         /* reads sched_endpoint.in_flight (refreshed before each decision) */
    /* SCORER: its scores depend on nothing but the candidates' metrics (sched_endpoint.m)
     * and their order, so that a driver naming its metrics (sched_set_metrics_epoch) may
     * have them reused instead of recomputed. */
    bool metrics_only;
    /* Parses parameters and allocates p->state. Errors name the field. */
    int (*init)(sched_plugin *p, const sched_params *params, const sched_env *env, kv_err *err);
    void (*fini)(sched_plugin *p);
    /* FILTER: keep a subset, compacting eps[] in place and keeping their order (the trace
     * derives removals from it); returns how many are kept. */
    size_t (*filter)(sched_plugin *p, sched_cycle *c, sched_endpoint **eps, size_t n);
    /* SCORER: scores[i] for eps[i], nominally in [0,1] (the framework clamps). */
    void (*score)(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores);
    /* PICKER: up to max endpoints, best first, from the scored candidates. cands is read
     * only (a profile without scorers hands successive decisions one kept list); a
     * picker that reorders works on its own copy (pu_cands_copy). */
    size_t (*pick)(sched_plugin *p, sched_cycle *c, const sched_scored *cands, size_t n, sched_endpoint **out,
                   size_t max);
    /* PROFILE_HANDLER: which profiles to run next (indexes into the profile list; 0 = done),
     * and which profile's result is primary once all have run. NULL members mean
     * "run every profile once; the only result is primary" (single-profile-handler). */
    size_t (*profiles)(sched_plugin *p, sched_cycle *c, size_t n_profiles, const bool *done, size_t *next,
                       size_t max);
    int (*primary)(sched_plugin *p, sched_cycle *c, size_t n_profiles, kv_err *err);
    /* Request hooks for stateful plugins (any kind may have them). */
    void (*pre_request)(sched_plugin *p, const sched_request *r, sched_endpoint *const *targets, size_t n);
    void (*response_complete)(sched_plugin *p, const sched_request *r, const sched_endpoint *target);
    /* The first response chunk for r came back from target: its prefill is done (llm-d's
     * StartOfStream; the in-flight load producer releases the prompt's tokens here). */
    void (*response_started)(sched_plugin *p, const sched_request *r, const sched_endpoint *target);
    /* Services a driver or plugin can ask for by name (sched_services); the precise scorer
     * offers its kvsource this way (policies/precise_prefix_cache_scorer.h). */
    void *(*service)(sched_plugin *p, const char *what);
    /* Called once every plugin of the sched is built, in config order: resolves the plugins
     * this one reads from by name (sched_plugin_by_name(p->owner, ...)), e.g. the producer a
     * consumer's parameters name. Errors name the plugin and the parameter. */
    int (*bind)(sched_plugin *p, kv_err *err);
    /* The parameters in force, defaults included, as "key: value" lines into buf (for
     * kvctl config); NULL: the plugin shows its parameters as written. */
    void (*describe)(const sched_plugin *p, char *buf, size_t cap);
} sched_plugin_type;

struct sched_plugin {
    const sched_plugin_type *type;
    const char *name;             /* defaults to the type */
    void *state;
    sched *owner;
};

/* A registry is a NULL-terminated table of plugin types, looked up by type name (NULL when
 * absent). The engine owns the interface and holds no table: policies/registry.h has the
 * policies' one, which the drivers pass to the config loader (config.h). */
const sched_plugin_type *sched_registry_find(const sched_plugin_type *const *registry, const char *type);

/* ---- per-call state --------------------------------------------------------------- */

/* What a scheduling cycle offers plugins. */
const sched_request *sched_cycle_request(const sched_cycle *c);
double sched_cycle_now(const sched_cycle *c);
uint64_t sched_cycle_rand(sched_cycle *c);                 /* deterministic given env.seed and call order */
double sched_cycle_rand01(sched_cycle *c);                 /* [0,1) */
/* Block keys of the request for a key context, hashed once per request and reused by
 * every scorer and profile with the same (algo, block size, seed). NULL + *n=0 if no tokens. */
const uint64_t *sched_cycle_keys(sched_cycle *c, const blockkeys_ctx *kc, size_t *n);
/* Cycle-scoped data shared between plugins (GIE's CycleState), e.g. prefix match info.
 * Any number of keys; if the table cannot grow, sched_schedule fails with KV_ENOMEM. */
void sched_cycle_put(sched_cycle *c, const char *key, void *value);
void *sched_cycle_get(const sched_cycle *c, const char *key);
/* Scratch memory released when the cycle ends (max_align_t aligned; NULL if out of memory,
 * and sched_schedule then fails with KV_ENOMEM). */
void *sched_cycle_alloc(sched_cycle *c, size_t size);
/* For profile handlers: a profile's name, and its result in this cycle (NULL when it has
 * not run or failed). */
const char *sched_cycle_profile_name(const sched_cycle *c, size_t profile);
const struct sched_result *sched_cycle_result(const sched_cycle *c, size_t profile);

/* ---- trace ------------------------------------------------------------------------ */

typedef struct sched_trace_score {
    const char *profile;
    const sched_plugin *plugin;   /* log as "<type>/<name>" */
    const sched_endpoint *ep;
    double score;                 /* clamped, before weight */
    double weight;
} sched_trace_score;

typedef struct sched_trace_filter {
    const char *profile;
    const sched_plugin *plugin;
    const sched_endpoint *ep;     /* removed by this filter */
} sched_trace_filter;

/* Caller-owned, reusable across calls (sched_trace_reset); NULL = no trace. */
typedef struct sched_trace {
    sched_trace_score *scores; size_t n_scores, cap_scores;
    sched_trace_filter *removed; size_t n_removed, cap_removed;
    sched_scored *totals; size_t n_totals, cap_totals;    /* primary profile's candidates */
} sched_trace;
void sched_trace_reset(sched_trace *t);
void sched_trace_free(sched_trace *t);

/* ---- scheduler ------------------------------------------------------------------- */

#define SCHED_MAX_TARGETS 8

#define SCHED_MAX_PROFILES 4

typedef struct sched_result {
    const char *profile;                        /* primary profile name */
    sched_endpoint *targets[SCHED_MAX_TARGETS]; /* best first */
    size_t n_targets;
    /* The other profiles that ran and picked (GIE's ProfileResults), first target each,
     * in profile order; e.g. pd-profile-handler's "prefill" pick, which the EPP sends as
     * x-prefiller-host-port. */
    struct {
        const char *profile;
        sched_endpoint *target;
    } others[SCHED_MAX_PROFILES];
    size_t n_others;
} sched_result;

struct epc_config;   /* engine/config.h */

sched *sched_new(const struct epc_config *cfg, const sched_env *env, kv_err *err);
void sched_free(sched *s);

/* Runs the profiles for one request over the candidate endpoints.
 * KV_ENOENDPOINTS when filters leave nothing; KV_ESTATE when the profile handler cannot
 * produce a result. The EPP answers both with 429 "failed to find target pod", as GIE's
 * director does for any scheduler error; 503 is only for a request with no candidate
 * endpoints before scheduling (empty pool or subset hint). */
int sched_schedule(sched *s, const sched_request *r, sched_endpoint *const *eps, size_t n, sched_result *res,
                   sched_trace *trace, kv_err *err);
/* Hooks: call after routing (in_flight++, stateful scorers learn) and on completion. */
void sched_pre_request(sched *s, const sched_request *r, const sched_result *res);
/* Inside a pre_request hook (p->owner): the whole result, e.g. the "prefill" profile's pick
 * in res->others; NULL outside sched_pre_request. */
const sched_result *sched_pre_request_result(const sched *s);
void sched_response_complete(sched *s, const sched_request *r, sched_endpoint *target);
/* The first response chunk (first token) for r arrived from target; call before completion. */
void sched_response_started(sched *s, const sched_request *r, sched_endpoint *target);

/* ---- observer ------------------------------------------------------------------------ */

/* GIE's plugin extension points, as its plugin_duration_seconds labels them. */
typedef enum {
    SCHED_POINT_PROFILE_PICKER = 0,   /* the profile handler choosing profiles, once per round */
    SCHED_POINT_FILTER = 1,
    SCHED_POINT_SCORER = 2,
    SCHED_POINT_PICKER = 3,
    SCHED_POINT_PROCESS_RESULTS = 4,  /* the profile handler choosing the primary result */
    SCHED_POINT_COUNT = 5,
} sched_point;
const char *sched_point_name(sched_point pt);   /* "ProfilePicker", "Filter", ... */

/* Called after every plugin call of sched_schedule with its duration on the driver's
 * clock (env.now: CLOCK_MONOTONIC in ./epp; 0 on a clock that stands still);
 * plugin is the index in config order (sched_plugin_at). c is the running cycle, so an
 * observer may read what the plugin published (sched_cycle_get). Runs on the scheduling
 * thread: it must not schedule, and should be cheap. Without an observer (the
 * simulator) plugin calls are not timed; the cost is one predictable branch per call. */
typedef void (*sched_observer)(void *ctx, const sched_cycle *c, sched_point pt, size_t plugin, double seconds);
void sched_set_observer(sched *s, sched_observer fn, void *ctx);   /* fn NULL: none */

/* For a driver that changes its endpoints' metrics (sched_endpoint.m) only at moments it
 * knows, such as a scrape of every pod: epoch names the metrics as they are from now on,
 * a value never given before each time any endpoint's m changes. A profile's
 * metrics_only scorers then run once per epoch and candidate list, and later decisions
 * over the same candidates reuse their scores, the same values in the same sums (a
 * reused score is not a plugin call: the observer sees none). Their passes over every
 * candidate were 43% of the instructions of a thousand-endpoint llm-d-precise decision
 * (docs/VALIDATION.md, thirteenth pass). 0, the default, reuses nothing: a driver whose
 * endpoints' metrics may change without a new epoch must leave it there. */
void sched_set_metrics_epoch(sched *s, uint64_t epoch);

/* Plugins in config order, by index and by name; services by name (the first max that
 * answer what, in config order). */
size_t sched_plugin_count(const sched *s);
const sched_plugin *sched_plugin_at(const sched *s, size_t i);
sched_plugin *sched_plugin_by_name(const sched *s, const char *name);
size_t sched_services(const sched *s, const char *what, void **out, size_t max);

#endif
