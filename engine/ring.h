/* ring: room in a ring buffer, a queue held in an array as the elements [head, head + n)
 * modulo cap: the active-request scorer's FIFO of routed requests and the simulated vLLM
 * server's waiting deque had each their own copy of the growth, which must keep the
 * elements' order while it moves them. No state: any thread may call it on a ring it
 * owns. */
#ifndef KVROUTE_RING_H
#define KVROUTE_RING_H

#include <stdbool.h>
#include <stddef.h>

/* Moves the n elements (of elem bytes) of *buf into an array of twice the capacity (16
 * at first), in order from index 0 (*head becomes 0). false, with the ring untouched,
 * when out of memory or the size overflows. */
bool ring_grow(void **buf, size_t *cap, size_t *head, size_t n, size_t elem);

/* Room for one more element: true at once while n < *cap, else ring_grow. */
static inline bool ring_reserve(void **buf, size_t *cap, size_t *head, size_t n, size_t elem)
{
    return n < *cap || ring_grow(buf, cap, head, n, elem);
}

#endif
