/* model_rewrites: the InferenceModelRewrites of ./epp's pool (GIE apix/v1alpha2, alpha
 * since GIE v1.2.1), answering "the request's model -> the model to send upstream":
 * aliasing, a fallback for every other model, and weighted traffic splitting.
 *
 * Semantics, as GIE's datastore and director apply them:
 *  - a rule matches a model when one of its matches names it exactly; a rule without
 *    matches matches every model that no rule names exactly;
 *  - several matching rules: the one from the oldest object (metadata.creationTimestamp)
 *    wins; we break a tie by object name, then rule order, so the winner is stable;
 *  - the target is weighted-random: target i with probability weight_i / sum(weights);
 *    targets without a weight are never chosen unless no target has one (then uniform);
 *  - a matching rule overrides the x-gateway-model-name-rewrite header (live/extproc.c).
 *
 * Sources: Kubernetes (live/k8s.h follows inferencemodelrewrites of the pool's
 * namespace whose spec.poolRef.name is the pool) or, with --endpoints, --model-rewrites
 * FILE: InferenceModelRewrite manifests as `kubectl apply -f` takes them.
 *
 * Threads: one lock; every call may come from any thread. Specs are deep-copied. */
#ifndef KVROUTE_MODEL_REWRITES_H
#define KVROUTE_MODEL_REWRITES_H

#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

typedef struct model_rewrites model_rewrites;

typedef struct model_rewrite_target {
    const char *model;            /* spec.rules[].targets[].modelRewrite */
    uint32_t weight;              /* 0: not set */
} model_rewrite_target;

typedef struct model_rewrite_rule {
    const char *const *models;    /* exact matches; none: every model no rule names */
    size_t n_models;
    const model_rewrite_target *targets;
    size_t n_targets;             /* >= 1 */
} model_rewrite_rule;

typedef struct model_rewrite {
    const char *name;             /* metadata.name */
    int64_t created;              /* metadata.creationTimestamp, Unix seconds: older wins */
    const model_rewrite_rule *rules;
    size_t n_rules;
} model_rewrite;

/* A uniform 64-bit random number; called under the table's lock. */
typedef uint64_t (*model_rewrites_rand)(void *ctx);

/* rnd NULL: an internal generator seeded from the clock and pid. */
model_rewrites *model_rewrites_new(model_rewrites_rand rnd, void *rnd_ctx, kv_err *err);
void model_rewrites_free(model_rewrites *t);

/* Adds or replaces (by name) one object; removes one (absent: no-op). */
int model_rewrites_put(model_rewrites *t, const model_rewrite *rw, kv_err *err);
void model_rewrites_remove(model_rewrites *t, const char *name);
/* Makes the table exactly v (a Kubernetes re-list); unchanged on failure. */
int model_rewrites_sync(model_rewrites *t, const model_rewrite *v, size_t n, kv_err *err);
size_t model_rewrites_count(model_rewrites *t);

/* The target for model: *target is a malloc'd name (the caller frees it), or NULL when
 * no rule matches. KV_ENOMEM only. */
int model_rewrites_pick(model_rewrites *t, const char *model, char **target, kv_err *err);

/* --model-rewrites: a file of InferenceModelRewrite manifests; errors name the file,
 * line and field. A manifest without metadata.creationTimestamp counts as created in
 * file order, before any that has one. Adds to the table. */
int model_rewrites_load(model_rewrites *t, const char *path, kv_err *err);

/* An API server's InferenceModelRewrite (a json_t) as one malloc'd block that the
 * caller frees; NULL when out of memory or metadata.name is missing. The API server has
 * validated it, so what is unusable is skipped: a match that is not Exact or has no
 * value, a rule whose matches are all skipped or that has no target. */
model_rewrite *model_rewrites_from_json(const void *obj);

/* An RFC 3339 time ("2025-06-01T12:00:00Z", offsets and fractions allowed) as Unix
 * seconds; KV_EINVAL when s is not one. For creationTimestamp in manifests and API objects. */
int model_rewrites_parse_time(const char *s, int64_t *out);

#endif
