/* seqtrack: per-pod sequence tracking for vLLM's ZMQ KV-event stream.
 *
 * Every message carries the publisher's counter (itertools.count() from 0, one per
 * batch). A subscriber that sees seq > last+1 has lost messages and can ask the pod's
 * replay socket (ROUTER, docs/upstream/kv-events-and-index.md §1) for everything from last+1; seq == last is a
 * duplicate; seq < last means the publisher restarted (its counter began again at 0),
 * as llm-d-router's subscriber reads it. Pods are keyed by their topic pod id.
 * Observe live messages only: frames replayed from the ROUTER socket carry old seqs and
 * would read as a restart; after a replay, the live stream simply continues.
 *
 * A small open-addressing table; one seqtrack per subscriber thread (not thread-safe). */
#ifndef KVROUTE_SEQTRACK_H
#define KVROUTE_SEQTRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

typedef enum seqtrack_status {
    SEQTRACK_FIRST = 0,     /* first message seen from this pod */
    SEQTRACK_IN_ORDER,      /* seq == last + 1 */
    SEQTRACK_DUPLICATE,     /* seq == last: drop the message */
    SEQTRACK_GAP,           /* seq > last + 1: missed messages [replay_from, seq) */
    SEQTRACK_RESTART,       /* seq < last: a new publisher; its [0, seq) were not seen */
    SEQTRACK_STATUS_COUNT
} seqtrack_status;
const char *seqtrack_status_name(seqtrack_status s);   /* "first", "in_order", ... */

typedef struct seqtrack_result {
    seqtrack_status status;
    uint64_t last;          /* the pod's previous seq (0 for FIRST) */
    uint64_t missed;        /* GAP: seq - last - 1; RESTART and FIRST: seq (messages before it) */
    uint64_t replay_from;   /* GAP: last + 1; RESTART and FIRST: 0 */
} seqtrack_result;

typedef struct seqtrack_stats {
    uint64_t pods;                              /* tracked now */
    uint64_t by_status[SEQTRACK_STATUS_COUNT];  /* messages observed, by outcome */
    uint64_t missed;                            /* sum of GAP missed counts */
} seqtrack_stats;

typedef struct seqtrack seqtrack;

seqtrack *seqtrack_new(kv_err *err);
void seqtrack_free(seqtrack *t);

/* Records seq for the pod and says how it relates to the previous one. The pod id is
 * copied. KV_ENOMEM when the table cannot grow (the pod is then not tracked). */
int seqtrack_observe(seqtrack *t, const char *pod, size_t pod_len, uint64_t seq, seqtrack_result *out, kv_err *err);
/* The last seq seen from the pod; false if the pod is unknown. */
bool seqtrack_last(const seqtrack *t, const char *pod, size_t pod_len, uint64_t *seq);
/* Stops tracking the pod (it left); its next message is FIRST again. */
void seqtrack_forget(seqtrack *t, const char *pod, size_t pod_len);
void seqtrack_get_stats(const seqtrack *t, seqtrack_stats *out);

#endif
