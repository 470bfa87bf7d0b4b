/* kvpayq: the KV-event payloads in flight from the simulated replicas to the router, a
 * FIFO of byte strings in one buffer. Every payload waits the same kv_event_delay, so
 * they are delivered in the order they were published. A replica encodes its payload
 * straight into the queue's buffer (kvpayq_open, simsrv_kv_encode, kvpayq_commit), so
 * no payload is copied and no replica keeps a buffer of its own. Owned by the cluster
 * loop (one thread). */
#ifndef KVROUTE_KVPAYQ_H
#define KVROUTE_KVPAYQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvevents.h"

/* Private: use the functions below. Zero-initialised is empty. */
typedef struct kvpayq {
    kvev_buf buf;   /* payloads [q[head].off, used); appended bytes past used until committed */
    size_t used;
    struct {
        size_t off, len;
    } *q;
    size_t head, tail, qcap;
} kvpayq;

/* The buffer to append the next payload to (its address is the queue's for life), with
 * room made first: delivered payloads may be moved out, and bytes appended but never
 * committed are dropped. What kvpayq_front returned is readable until this call. */
kvev_buf *kvpayq_open(kvpayq *q);
/* The bytes appended since kvpayq_open become the newest payload (none appended: an
 * empty one); false when out of memory (nothing is queued). */
bool kvpayq_commit(kvpayq *q);
/* The oldest payload, or NULL when empty; it stays readable until the next kvpayq_open,
 * also after kvpayq_pop. */
const uint8_t *kvpayq_front(const kvpayq *q, size_t *len);
/* Drops the oldest payload (none: no-op). */
void kvpayq_pop(kvpayq *q);
size_t kvpayq_len(const kvpayq *q);
/* Bytes of buffer held: bounded by the undelivered payloads (kvpayq.c), not by the run. */
size_t kvpayq_capacity(const kvpayq *q);
void kvpayq_free(kvpayq *q);

#endif
