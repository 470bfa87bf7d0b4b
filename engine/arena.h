/* arena: bump allocation for memory that lives until the next reset, in one helper for
 * the engine's two per-call scratch spaces: the KV-event decoder's decoded batch
 * (kvevents) and the scheduler's cycle memory (sched_cycle_alloc). Chunks never move, so
 * pointers stay valid until the reset; a reset keeps one chunk big enough for everything
 * handed out since the previous one, so a warm caller whose calls need no more than
 * before allocates nothing.
 * Threads: no lock; one owner at a time (the decoder's or the scheduler's caller). */
#ifndef KVROUTE_ARENA_H
#define KVROUTE_ARENA_H

#include <stddef.h>

typedef struct arena_chunk arena_chunk;

/* Zero-initialised: empty, nothing allocated. */
typedef struct arena {
    arena_chunk *head;   /* the current chunk first */
    size_t total;        /* bytes handed out since the last reset */
} arena;

/* size bytes aligned for any type (max_align_t); NULL without memory. */
void *arena_alloc(arena *a, size_t size);
/* Forgets every allocation; keeps (or makes) one chunk of the bytes handed out since
 * the last reset. */
void arena_reset(arena *a);
/* Frees every chunk; the arena is empty again. */
void arena_free(arena *a);

#endif
