/* objectives: the InferenceObjectives of ./epp's pool -- objective name -> priority --
 * which the x-gateway-inference-objective request header names (GIE apix/v1alpha2
 * InferenceObjective; requestcontrol/director.go). A request naming no known objective,
 * or an objective without spec.priority, has priority 0; priority < 0 is sheddable.
 *
 * Sources: Kubernetes (live/k8s.h watches inferenceobjectives of the pool's namespace
 * whose spec.poolRef.name is the pool, and keeps this table equal to them), or, with a
 * static endpoint list, --objectives: a file of InferenceObjective manifests as
 * `kubectl apply -f` takes them (YAML documents separated by "---", or one List with
 * items), or inline "name=priority,...".
 *
 * Threads: one lock; every call may come from any thread. Names are copied. */
#ifndef KVROUTE_OBJECTIVES_H
#define KVROUTE_OBJECTIVES_H

#include <stdbool.h>
#include <stddef.h>

#include "kverr.h"

typedef struct objectives objectives;

typedef struct objective_spec {
    const char *name;
    int priority;
} objective_spec;

objectives *objectives_new(kv_err *err);
void objectives_free(objectives *o);

/* Adds or replaces one objective; removes one (absent: no-op). */
int objectives_put(objectives *o, const char *name, int priority, kv_err *err);
void objectives_remove(objectives *o, const char *name);
/* Makes the table exactly specs (a Kubernetes re-list); unchanged on failure. */
int objectives_sync(objectives *o, const objective_spec *specs, size_t n, kv_err *err);

/* The objective's priority; false (and *priority = 0) when it is unknown. name may be NULL. */
bool objectives_priority(objectives *o, const char *name, int *priority);
size_t objectives_count(objectives *o);

/* --objectives: a readable file of manifests, else inline "name=priority,...". Errors name
 * the file (and document) or the item. Adds to the table. */
int objectives_load(objectives *o, const char *arg, kv_err *err);

#endif
