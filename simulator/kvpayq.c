/* kvpayq: the FIFO of KV-event payloads (see kvpayq.h).
 *
 * The buffer is rewound whenever everything pushed has been popped. With many replicas
 * publishing, that moment may never come (scale-1000 at 10,000 requests a second), so a
 * push that would grow the buffer first moves the undelivered payloads to its front when
 * the delivered ones take at least as much room: each byte is moved at most once for
 * every byte delivered before it, and the buffer grows only when undelivered payloads
 * fill over half of it, so it stays under 4 x the bytes in flight + 2 x the largest
 * payload (test_kvpayq checks that bound) instead of holding every payload of the run
 * (scale-1000 at 1M requests: gigabytes, and a page fault per 4 KB). */
#include "kvpayq.h"
#include "grow.h"

#include <stdlib.h>
#include <string.h>

static void kvpayq_compact(kvpayq *q)
{
    size_t base = q->q[q->head].off, n = q->tail - q->head;
    memmove(q->bytes, q->bytes + base, q->used - base);
    memmove(q->q, q->q + q->head, n * sizeof *q->q);
    for (size_t k = 0; k < n; k++) q->q[k].off -= base;
    q->used -= base;
    q->head = 0;
    q->tail = n;
}

bool kvpayq_push(kvpayq *q, const uint8_t *data, size_t len)
{
    /* head > 0 with payloads left (an empty queue was rewound by kvpayq_pop) */
    if (q->head && q->used + len > q->cap && 2 * q->q[q->head].off >= q->used)
        kvpayq_compact(q);
    if (!grow_array((void **)&q->bytes, &q->cap, q->used + len, 1) ||
        !grow_array((void **)&q->q, &q->qcap, q->tail + 1, sizeof *q->q))
        return false;
    if (len) memcpy(q->bytes + q->used, data, len);
    q->q[q->tail].off = q->used;
    q->q[q->tail++].len = len;
    q->used += len;
    return true;
}

const uint8_t *kvpayq_front(const kvpayq *q, size_t *len)
{
    if (q->head == q->tail) return NULL;
    *len = q->q[q->head].len;
    return q->bytes + q->q[q->head].off;
}

void kvpayq_pop(kvpayq *q)
{
    if (q->head == q->tail) return;
    if (++q->head == q->tail) q->head = q->tail = q->used = 0;
}

size_t kvpayq_len(const kvpayq *q) { return q->tail - q->head; }
size_t kvpayq_capacity(const kvpayq *q) { return q->cap; }

void kvpayq_free(kvpayq *q)
{
    free(q->bytes);
    free(q->q);
    *q = (kvpayq){0};
}
