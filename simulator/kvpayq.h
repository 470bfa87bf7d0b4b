/* kvpayq: the KV-event payloads in flight from the simulated replicas to the router, a
 * FIFO of byte strings in one buffer. Every payload waits the same kv_event_delay, so
 * they are delivered in the order they were published. Owned by the cluster loop (one
 * thread). */
#ifndef KVROUTE_KVPAYQ_H
#define KVROUTE_KVPAYQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Private: use the functions below. Zero-initialised is empty. */
typedef struct kvpayq {
    uint8_t *bytes;
    size_t used, cap;
    struct {
        size_t off, len;
    } *q;
    size_t head, tail, qcap;
} kvpayq;

/* Queues a copy of data[0, len); false when out of memory (the queue is unchanged). */
bool kvpayq_push(kvpayq *q, const uint8_t *data, size_t len);
/* The oldest payload, or NULL when empty; it stays readable until the next push, also
 * after kvpayq_pop. */
const uint8_t *kvpayq_front(const kvpayq *q, size_t *len);
/* Drops the oldest payload (none: no-op). */
void kvpayq_pop(kvpayq *q);
size_t kvpayq_len(const kvpayq *q);
/* Bytes of buffer held: bounded by the undelivered payloads (kvpayq.c), not by the run. */
size_t kvpayq_capacity(const kvpayq *q);
void kvpayq_free(kvpayq *q);

#endif
