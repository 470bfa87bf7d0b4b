/* u64map: an open-addressing hash map from 64-bit keys to 32-bit values (linear probing,
 * backward-shift deletion, no tombstones), for the engine's small lookup tables that were
 * copies of one structure: prefix_index's block hash -> first holder and kvingest's
 * (slot, cache group) -> attention class. Keys are hashed by multiplying with 2^64/phi,
 * enough for the already uniform block hashes and for small packed integers.
 * Threads: none of its own; the owner serialises use. */
#ifndef KVROUTE_U64MAP_H
#define KVROUTE_U64MAP_H

#include <stddef.h>
#include <stdint.h>

#define U64MAP_NONE UINT32_MAX   /* no value: an empty cell, and what get answers for a missing key */

typedef struct u64map_ent {
    uint64_t key;
    uint32_t val;                /* U64MAP_NONE: the cell is empty */
} u64map_ent;

/* Zero-initialised: empty. t[0..mask] may be walked to visit every entry, and an entry's
 * val changed in place (to anything but U64MAP_NONE). */
typedef struct u64map {
    u64map_ent *t;
    size_t mask, used;           /* capacity mask + 1, a power of two (t NULL: none yet) */
} u64map;

static inline size_t u64map_home(const u64map *m, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & m->mask;
}

/* The cell holding key, or the empty cell where it would go; NULL before the first put. */
static inline u64map_ent *u64map_slot(const u64map *m, uint64_t key)
{
    if (!m->t)
        return NULL;
    for (size_t i = u64map_home(m, key);; i = (i + 1) & m->mask) {
        u64map_ent *e = &m->t[i];
        if (e->val == U64MAP_NONE || e->key == key)
            return e;
    }
}

static inline uint32_t u64map_get(const u64map *m, uint64_t key)
{
    const u64map_ent *e = u64map_slot(m, key);
    return e ? e->val : U64MAP_NONE;
}

/* Sets key -> val (val != U64MAP_NONE), growing past 70% load; KV_ENOMEM leaves the map
 * as it was. */
int u64map_put(u64map *m, uint64_t key, uint32_t val);
void u64map_del(u64map *m, uint64_t key);
void u64map_free(u64map *m);

#endif
