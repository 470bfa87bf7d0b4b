/* replay: the client side of vLLM's KV-event replay socket (docs/upstream/kv-events-and-index.md
 * §1). vLLM keeps its last buffer_steps batches and serves them from a ROUTER bound at
 * kv_events_config.replay_endpoint: a DEALER sends ["", start_seq (8 bytes BE)] and gets
 * ["", seq, payload] for every buffered seq >= start_seq, then the end marker
 * ["", 0xFFFFFFFFFFFFFFFF, ""]. Replayed frames carry no topic.
 *
 * One call = one short-lived DEALER (gaps are rare; a socket per call keeps no state to
 * go stale when a pod restarts). Blocking, bounded by timeout_ms per receive and by
 * max_batches. Thread-safe given a thread-safe ZMQ context. */
#ifndef KVROUTE_REPLAY_H
#define KVROUTE_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

#define REPLAY_END UINT64_MAX

/* cb gets each batch in the order served; a non-zero return stops the fetch (returned).
 * Returns the number of batches delivered, or KV_EIO (connect failure, timeout before the
 * end marker, naming endpoint and seq), KV_EPARSE (a reply that is not ["", seq8,
 * payload]). Batches delivered before an error were delivered. */
long replay_fetch(void *zctx, const char *endpoint, uint64_t start_seq, int timeout_ms, size_t max_batches,
                  int (*cb)(void *ctx, uint64_t seq, const void *payload, size_t len), void *ctx, kv_err *err);

/* One reply message of a fetch, as replay_fetch reads each (public for the fuzz
 * harness): its first three frames f[0..min(n,3)) and its frame count n. A batch is handed
 * to cb (counted in *delivered) unless max_batches were delivered. *done is set when the
 * fetch is over: the end marker, max_batches reached, an error or a stop from cb. Returns
 * KV_OK, KV_EPARSE naming endpoint for a reply that is not ["", seq8, payload], or cb's
 * non-zero return. */
typedef struct replay_frame {
    const void *data;
    size_t len;
} replay_frame;
int replay_reply(const char *endpoint, const replay_frame *f, size_t n, size_t max_batches, long *delivered,
                 bool *done, int (*cb)(void *ctx, uint64_t seq, const void *payload, size_t len), void *ctx,
                 kv_err *err);

#endif
