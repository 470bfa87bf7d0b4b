/* kvpayq: the FIFO of KV-event payloads (see kvpayq.h).
 *
 * The buffer is rewound whenever everything pushed has been popped. With many replicas
 * publishing, that moment may never come (scale-1000 at 10,000 requests a second), so
 * kvpayq_open moves the undelivered payloads to the buffer's front when it is over half
 * full and the delivered ones take at least half of what is used: each byte is moved at
 * most once for every byte delivered before it. An append grows the buffer only when it
 * does not fit; then either the buffer was at most half full (the new payload is over
 * half its size) or undelivered payloads fill over half of what is used, so it stays
 * under 4 x the bytes in flight + 2 x the largest payload (test_kvpayq checks that
 * bound) instead of holding every payload of the run (scale-1000 at 1M requests:
 * gigabytes, and a page fault per 4 KB). */
#include "kvpayq.h"
#include "grow.h"

#include <stdlib.h>
#include <string.h>

kvev_buf *kvpayq_open(kvpayq *q)
{
    q->buf.len = q->used;
    /* head > 0 with payloads left (an empty queue was rewound by kvpayq_pop) */
    if (q->head && 2 * q->used > q->buf.cap && 2 * q->q[q->head].off >= q->used) {
        size_t base = q->q[q->head].off, n = q->tail - q->head;
        memmove(q->buf.data, q->buf.data + base, q->used - base);
        memmove(q->q, q->q + q->head, n * sizeof *q->q);
        for (size_t k = 0; k < n; k++) q->q[k].off -= base;
        q->buf.len = q->used -= base;
        q->head = 0;
        q->tail = n;
    }
    return &q->buf;
}

bool kvpayq_commit(kvpayq *q)
{
    if (!grow_array((void **)&q->q, &q->qcap, q->tail + 1, sizeof *q->q)) {
        q->buf.len = q->used;
        return false;
    }
    q->q[q->tail].off = q->used;
    q->q[q->tail++].len = q->buf.len - q->used;
    q->used = q->buf.len;
    return true;
}

const uint8_t *kvpayq_front(const kvpayq *q, size_t *len)
{
    if (q->head == q->tail) return NULL;
    *len = q->q[q->head].len;
    return q->buf.data + q->q[q->head].off;
}

void kvpayq_pop(kvpayq *q)
{
    if (q->head == q->tail) return;
    if (++q->head == q->tail) q->head = q->tail = q->used = 0;
}

size_t kvpayq_len(const kvpayq *q) { return q->tail - q->head; }
size_t kvpayq_capacity(const kvpayq *q) { return q->buf.cap; }

void kvpayq_free(kvpayq *q)
{
    kvev_buf_free(&q->buf);
    free(q->q);
    *q = (kvpayq){0};
}
