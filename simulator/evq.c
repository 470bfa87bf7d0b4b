/* evq: binary min-heap ordered by (time, kind, push sequence). See evq.h. */
#include "evq.h"

#include <stdlib.h>

#include "grow.h"
#include "kverr.h"

void evq_init(evq *q)
{
    q->heap = NULL;
    q->n = q->cap = 0;
    q->next_seq = 0;
}

void evq_free(evq *q)
{
    free(q->heap);
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

int evq_push(evq *q, sim_time t, uint32_t kind, int32_t who, uint64_t arg)
{
    if (!grow_array((void **)&q->heap, &q->cap, q->n + 1, sizeof *q->heap))
        return KV_ENOMEM;
    evq_event ev = {.t = t, .kind = kind, .who = who, .seq = q->next_seq++, .arg = arg};
    size_t i = q->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
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

bool evq_pop(evq *q, evq_event *out)
{
    if (!q->n)
        return false;
    *out = q->heap[0];
    evq_event last = q->heap[--q->n];
    size_t i = 0, n = q->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && evq_before(&q->heap[c + 1], &q->heap[c]))
            c++;
        if (!evq_before(&q->heap[c], &last))
            break;
        q->heap[i] = q->heap[c];
        i = c;
    }
    if (n)
        q->heap[i] = last;
    return true;
}
