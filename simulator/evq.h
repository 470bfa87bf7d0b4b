/* evq: the simulator's event queue — a 4-ary min-heap of small fixed-size events.
 *
 * Time is integer microseconds (sim_time), so ordering never depends on floating
 * point. Ties are broken by a total order: (time, kind priority, sequence number),
 * where the sequence number is assigned at push time. Two runs that push the same
 * events in the same order therefore pop them in the same order, on every machine:
 * this is what makes the simulator byte-deterministic.
 *
 * Events carry no pointers: a kind (small integer, lower pops first at equal times),
 * a target index (server, router, stage...) and a 64-bit argument.
 * Ownership: the queue owns its array. Single-threaded. */
#ifndef KVROUTE_SIM_EVQ_H
#define KVROUTE_SIM_EVQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "records.h"

typedef struct evq_event {
    sim_time t;
    uint32_t kind;       /* priority at equal times: lower first */
    int32_t who;         /* target index chosen by the driver */
    uint64_t seq;        /* push order, assigned by the queue */
    uint64_t arg;
} evq_event;

typedef struct evq {
    evq_event *heap;
    size_t n, cap;
    uint64_t next_seq;
} evq;

void evq_init(evq *q);
void evq_free(evq *q);
/* Pushes an event; returns KV_OK or KV_ENOMEM (the queue is unchanged then). */
int evq_push(evq *q, sim_time t, uint32_t kind, int32_t who, uint64_t arg);
/* Pops the smallest event into *out; false when empty. */
bool evq_pop(evq *q, evq_event *out);
/* The smallest event, or NULL when empty; valid until the next push or pop. */
const evq_event *evq_peek(const evq *q);
/* The event that pops after the smallest (a child of the root: at most 3 comparisons),
 * or NULL with fewer than two; valid until the next push or pop. A push may come
 * between them. */
const evq_event *evq_peek_second(const evq *q);
static inline size_t evq_len(const evq *q) { return q->n; }
/* True when a pops before b in the queue's total order. */
bool evq_before(const evq_event *a, const evq_event *b);

#endif
