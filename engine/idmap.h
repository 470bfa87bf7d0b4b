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
void idmap_free(idmap *m);

/* Where id's probe starts (masked by the caller); idmap.c places keys by it. */
static inline size_t idmap_hash(uint32_t id)
{
    uint64_t x = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return (size_t)(x ^ (x >> 29));
}

/* The value for id, or def. Inline: a decision reads every endpoint's in-flight count
 * (sched_schedule), 1,000 calls a decision at 1,000 endpoints, and the call was most of
 * each read. */
static inline int64_t idmap_get(const idmap *m, uint32_t id, int64_t def)
{
    if (!m->cap)
        return def;
    uint64_t key = (uint64_t)id + 1;
    size_t j = idmap_hash(id) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->keys[j] == key)
            return m->vals[j];
        j = (j + 1) & (m->cap - 1);
    }
    return def;
}

#endif
