/* policy_util: helpers the plugins in policies/ share (kept in the engine: no I/O, and
 * policies/ holds only policies), so that each formula, parameter
 * reader and table exists once: parameter reading with positioned messages, the picker
 * count, min-max scoring, candidate shuffling, request-id hashing, the KV-index
 * lookup of an endpoint by name, label matching and the prefix-match record that prefix
 * scorers publish in the cycle for no-hit-lru. Not thread-safe beyond what scheduler.h
 * states (a plugin instance is used by one thread at a time). */
#ifndef KVROUTE_POLICY_UTIL_H
#define KVROUTE_POLICY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grow.h"
#include "idmap.h"
#include "scheduler.h"

/* ---- parameters ----------------------------------------------------------------
 * Each reads map[key] (map may be NULL: the value stays the default) and names the field
 * "<plugin name>.parameters.<path>.<key>" in messages (path may be NULL). Absent or null
 * values leave *inout unchanged. Ranges are inclusive. */
int pu_int(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path, const char *key,
           int64_t lo, int64_t hi, int64_t *inout, kv_err *err);
int pu_double(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
              const char *key, double lo, double hi, double *inout, kv_err *err);
int pu_bool(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path, const char *key,
            bool *inout, kv_err *err);
/* The string points into the config's document (which outlives the plugin). */
int pu_string(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
              const char *key, const char **inout, kv_err *err);
int pu_duration(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
                const char *key, double *inout, kv_err *err);
/* map[key] when it is a mapping; NULL when absent or null; KV_EINVAL (in *rc) otherwise. */
const yt_node *pu_map(const sched_plugin *p, const sched_params *pp, const yt_node *map, const char *path,
                      const char *key, int *rc, kv_err *err);
/* Marks a whole subtree read (parameters accepted but not used, e.g. tokenizer settings). */
void pu_accept(const yt_node *n);
/* For each of keys[0..n) present in pp's top level: marks it read and warns, naming the
 * plugin, the parameter and its position, that it is accepted and ignored because of why. */
void pu_ignore(const sched_plugin *p, const sched_params *pp, const sched_env *env, const char *const *keys, size_t n,
               const char *why);
/* pu_ignore with the keys listed in place. */
#define PU_IGNORE(p, pp, env, why, ...)                                                                        \
    do {                                                                                                       \
        static const char *const pu_keys_[] = {__VA_ARGS__};                                                   \
        pu_ignore(p, pp, env, pu_keys_, sizeof pu_keys_ / sizeof *pu_keys_, why);                              \
    } while (0)
/* Error at a parameter node, in the same "<plugin>.parameters.<path>" form. */
int pu_error(const sched_plugin *p, const sched_params *pp, const yt_node *at, const char *path, kv_err *err,
             const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* maxNumOfEndpoints, the one parameter every picker takes (default 1). */
int pu_picker_max(const sched_plugin *p, const sched_params *pp, size_t *out, kv_err *err);
/* The init of a picker with no other parameter: maxNumOfEndpoints is kept in p->state. */
int pu_picker_init(sched_plugin *p, const sched_params *pp, const sched_env *env, kv_err *err);
/* How many such a picker returns: maxNumOfEndpoints capped at max and at n candidates. */
size_t pu_picker_count(const sched_plugin *p, size_t max, size_t n);
/* A picker's answer: the endpoints of cands[0..k) into out, in that order; returns k. */
size_t pu_picked(const sched_scored *cands, size_t k, sched_endpoint **out);

/* ---- scoring helpers ---------------------------------------------------------------- */
/* GIE's min-max for a load figure where lower is better, in place: scores[i] holds
 * endpoint i's load v on entry and (max - v)/(max - min) on return; all equal (including
 * n == 1) gives 1.0 to every endpoint (queue-scorer, running-requests-size-scorer). The
 * caller fills in the loads itself: at 1,000 endpoints a call per endpoint to fetch one
 * field cost as much as the rest of the scorer. */
void pu_minmax_lower_better(double *scores, size_t n);
/* A uniform integer in [0, n), n > 0, from the cycle's generator. */
size_t pu_below(sched_cycle *c, size_t n);
/* A picker's own copy of its candidates, in cycle memory, to reorder or rescore (a picker
 * never writes the list it is given); NULL when out of memory (the cycle then fails). */
sched_scored *pu_cands_copy(sched_cycle *c, const sched_scored *cands, size_t n);
/* Fisher-Yates with the cycle's generator: the random tie-break of the pickers. */
void pu_shuffle(sched_cycle *c, sched_scored *a, size_t n);

/* XXH64 of the request id ("" when NULL): how stateful plugins match a completion to the
 * pre_request that counted it without keeping the id string. */
uint64_t pu_request_hash(const sched_request *r);
/* The KV-event index slot of an endpoint: by its name ("ip:port", llm-d v0.7+ topics), else
 * by the IP alone (v0.5 topics "kv@<ip>@<model>"); -1 when the index knows neither. */
int pu_kvindex_slot(const kvindex *ix, const char *name);

/* Does the endpoint's label take one of values? An absent label passes iff allow_missing. */
bool pu_label_in(const sched_endpoint *ep, const char *label, const char *const *values, size_t n,
                 bool allow_missing);
/* Keeps the endpoints pu_label_in accepts, in order; returns how many. */
size_t pu_filter_label(sched_endpoint **eps, size_t n, const char *label, const char *const *values, size_t nv,
                       bool allow_missing);

/* ---- prefix match record -------------------------------------------------------------
 * A prefix scorer (precise-prefix-cache-scorer, prefix-cache-scorer) publishes what it
 * matched with sched_cycle_put(c, key, info), key from pu_prefix_key(type, name), so
 * no-hit-lru-scorer (params prefixPluginType/prefixPluginName) can tell a cold request. */
typedef struct pu_prefix_info {
    size_t total_blocks;                /* blocks of the request */
    size_t n;                           /* candidates scored */
    sched_endpoint *const *eps;         /* those candidates (cycle memory) */
    const uint32_t *matched;            /* leading blocks each candidate holds */
    uint32_t block_tokens;              /* tokens a block covers; 0 = not in tokens */
} pu_prefix_info;
#define PU_PREFIX_KEY_MAX 160
void pu_prefix_key(char *out, size_t cap, const char *type, const char *name);

/* ---- data producers ------------------------------------------------------------------
 * llm-d-router's producers (approx-/precise-prefix-cache-producer, inflight-load-producer)
 * put attributes on the candidates before the profiles run, and consumers read them by
 * the producer's name (parameters prefixMatchInfoProducerName, inFlightLoadProducerName).
 * Here a consumer binds the named producer's service once (pu_bind_producer, from its
 * bind hook) and asks it for the candidates it is given; a producer answers once per cycle
 * and candidate list (its answer is cycle memory). */
#define PU_PREFIX_SOURCE "prefix-match-info"
typedef struct pu_prefix_source {
    /* Match of the cycle's request on eps[0..n); NULL when out of cycle memory. */
    const pu_prefix_info *(*match)(sched_plugin *producer, sched_cycle *c, sched_endpoint *const *eps, size_t n);
} pu_prefix_source;

#define PU_INFLIGHT_SOURCE "inflight-load"
typedef struct pu_inflight {
    int64_t tokens;                     /* in flight on the endpoint (InFlightLoad.Tokens) */
    int64_t requests;                   /* InFlightLoad.Requests */
    int64_t uncached;                   /* this request's tokens there (UncachedRequestTokens) */
} pu_inflight;
typedef struct pu_inflight_source {
    /* out[i] for eps[i]; false when out of cycle memory. */
    bool (*load)(sched_plugin *producer, sched_cycle *c, sched_endpoint *const *eps, size_t n, pu_inflight *out);
} pu_inflight_source;

/* The request's prompt length in tokens: its token ids, else its text at 4 bytes a token
 * (llm-d's tokenizer-free estimate). */
int64_t pu_input_tokens(const sched_request *r);

/* ---- prefill/decode ------------------------------------------------------------------
 * The profile handlers' shared flow (pd-profile-handler, disagg-profile-handler): run the
 * decode profile; once it picked, run the prefill profile when needs(state, c, decode
 * pick) says so. The decode result is primary. Such a handler's state starts with a pu_pd
 * and its type uses pu_pd_profiles and pu_pd_primary as hooks. A P/D decider answers
 * PU_PD_DECIDER. */
typedef struct pu_pd {
    const char *decode, *prefill;     /* profile names */
    bool (*needs)(const void *state, sched_cycle *c, sched_endpoint *decode_pick);
} pu_pd;
int pu_profile_index(const sched_cycle *c, size_t n, const char *name);   /* -1 if absent */
size_t pu_pd_profiles(sched_plugin *p, sched_cycle *c, size_t n, const bool *done, size_t *next, size_t max);
int pu_pd_primary(sched_plugin *p, sched_cycle *c, size_t n, kv_err *err);
#define PU_PD_DECIDER "pd-decider"
typedef struct pu_pd_decider {
    bool (*disaggregate)(sched_plugin *decider, sched_cycle *c, sched_endpoint *decode_pick);
} pu_pd_decider;

/* The plugin named name (dflt when name is NULL) offering service what, for the consumer p
 * whose parameter param named it. KV_EINVAL, naming p, param and the producer, when the
 * config declares no such plugin or it offers no such data. */
int pu_bind_producer(sched_plugin *p, const char *param, const char *name, const char *dflt, const char *what,
                     sched_plugin **producer, const void **svc, kv_err *err);

#endif
