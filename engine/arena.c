/* arena: chunked bump allocation (see arena.h). */
#include "arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

/* The smallest chunk: a decoded KV-event batch or a scheduling call of a few hundred
 * endpoints fits in one. */
#define ARENA_MIN_CHUNK ((size_t)64 << 10)

struct arena_chunk {
    arena_chunk *next;
    size_t cap, used;
    alignas(max_align_t) unsigned char data[];
};

static arena_chunk *chunk_new(size_t cap, arena_chunk *next)
{
    arena_chunk *c = malloc(sizeof *c + cap);
    if (c)
        *c = (arena_chunk){.next = next, .cap = cap};
    return c;
}

void *arena_alloc(arena *a, size_t size)
{
    const size_t align = alignof(max_align_t);
    if (size > SIZE_MAX / 2)
        return NULL;
    size = (size + align - 1) & ~(align - 1);
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        /* at least double the last chunk, so a call that outgrows it costs few mallocs */
        size_t cap = size > ARENA_MIN_CHUNK ? size : ARENA_MIN_CHUNK;
        if (c && c->cap <= SIZE_MAX / 4 && cap < 2 * c->cap)
            cap = 2 * c->cap;
        if (!(c = chunk_new(cap, c)))
            return NULL;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    a->total += size;
    return p;
}

void arena_reset(arena *a)
{
    if (a->head && a->head->next) {
        size_t want = a->total;
        arena_free(a);
        a->head = chunk_new(want, NULL);   /* NULL: the next alloc makes one */
    } else if (a->head) {
        a->head->used = 0;
    }
    a->total = 0;
}

void arena_free(arena *a)
{
    while (a->head) {
        arena_chunk *n = a->head->next;
        free(a->head);
        a->head = n;
    }
    a->total = 0;
}
