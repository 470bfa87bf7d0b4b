/* evq: 4-ary min-heap ordered by (time, kind, push sequence). See evq.h.
 *
 * Four children a node rather than two: a pop walks half as many levels, each a
 * dependent load that, with a thousand servers' events in the heap, misses the cache.
 * The array is laid out so that every node's four children (heap[4i+1..4i+4], 128
 * bytes) fill two whole cache lines: heap + 1 is 128-byte aligned. */
#include "evq.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kverr.h"

#define EVQ_D 4
#define EVQ_ALIGN 128
#define EVQ_LEAD (EVQ_ALIGN / sizeof(evq_event) - 1)   /* slots before heap[0] in the allocation */

_Static_assert(EVQ_ALIGN % sizeof(evq_event) == 0 && EVQ_D * sizeof(evq_event) == EVQ_ALIGN,
               "a node's children fill one aligned block");

void evq_init(evq *q)
{
    q->heap = NULL;
    q->n = q->cap = 0;
    q->next_seq = 0;
}

void evq_free(evq *q)
{
    if (q->heap)
        free(q->heap - EVQ_LEAD);
    evq_init(q);
}

bool evq_before(const evq_event *a, const evq_event *b)
{
    if (a->t != b->t)
        return a->t < b->t;
    if (a->kind != b->kind)
        return a->kind < b->kind;
    return a->seq < b->seq;
}

/* Room for one more event: doubles the capacity from 64 into a new aligned array. */
static bool evq_grow(evq *q)
{
    if (q->n < q->cap)
        return true;
    size_t cap = q->cap ? 2 * q->cap : 64;
    if (cap > (SIZE_MAX / sizeof(evq_event)) - EVQ_LEAD - EVQ_ALIGN)
        return false;
    size_t bytes = ((cap + EVQ_LEAD) * sizeof(evq_event) + EVQ_ALIGN - 1) / EVQ_ALIGN * EVQ_ALIGN;
    evq_event *mem = aligned_alloc(EVQ_ALIGN, bytes);
    if (!mem)
        return false;
    if (q->heap) {
        memcpy(mem + EVQ_LEAD, q->heap, q->n * sizeof *q->heap);
        free(q->heap - EVQ_LEAD);
    }
    q->heap = mem + EVQ_LEAD;
    q->cap = cap;
    return true;
}

int evq_push(evq *q, sim_time t, uint32_t kind, int32_t who, uint64_t arg)
{
    if (!evq_grow(q))
        return KV_ENOMEM;
    evq_event ev = {.t = t, .kind = kind, .who = who, .seq = q->next_seq++, .arg = arg};
    size_t i = q->n++;
    while (i > 0) {
        size_t parent = (i - 1) / EVQ_D;
        if (!evq_before(&ev, &q->heap[parent]))
            break;
        q->heap[i] = q->heap[parent];
        i = parent;
    }
    q->heap[i] = ev;
    return KV_OK;
}

const evq_event *evq_peek(const evq *q)
{
    return q->n ? &q->heap[0] : NULL;
}

/* The smallest of the children that start at first (< n), among the heap's first n. */
static size_t min_child(const evq *q, size_t first, size_t n)
{
    size_t end = first + EVQ_D < n ? first + EVQ_D : n, c = first;
    for (size_t k = first + 1; k < end; k++)
        if (evq_before(&q->heap[k], &q->heap[c]))
            c = k;
    return c;
}

const evq_event *evq_peek_second(const evq *q)
{
    return q->n < 2 ? NULL : &q->heap[min_child(q, 1, q->n)];
}

bool evq_pop(evq *q, evq_event *out)
{
    if (!q->n)
        return false;
    *out = q->heap[0];
    evq_event last = q->heap[--q->n];
    size_t i = 0, n = q->n;
    for (;;) {
        size_t first = EVQ_D * i + 1;
        if (first >= n)
            break;
        size_t c = min_child(q, first, n);
        if (!evq_before(&q->heap[c], &last))
            break;
        q->heap[i] = q->heap[c];
        i = c;
    }
    if (n)
        q->heap[i] = last;
    return true;
}
