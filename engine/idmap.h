/* idmap: open-addressing map from an endpoint id (sched_endpoint.id) to an int64, the
 * per-endpoint counters and caches of the scheduler (in-flight requests) and of stateful
 * plugins. Not thread-safe: a map belongs to one sched or plugin instance, used by one
 * thread at a time (scheduler.h). */
#ifndef KVROUTE_IDMAP_H
#define KVROUTE_IDMAP_H

#include <stddef.h>
#include <stdint.h>

/* Private: read and write only through the functions below. Zero-initialised is empty. */
typedef struct idmap {
    uint64_t *keys;     /* id + 1; 0 = empty */
    int64_t *vals;
    size_t cap, n;      /* cap is a power of two */
} idmap;

/* The value slot for id, inserted as 0 when absent; NULL when out of memory. */
int64_t *idmap_at(idmap *m, uint32_t id);
/* The value for id, or def. */
int64_t idmap_get(const idmap *m, uint32_t id, int64_t def);
void idmap_free(idmap *m);

#endif
