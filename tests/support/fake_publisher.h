/* fake_publisher: a vLLM ZmqEventPublisher stand-in for tests. PUB socket that connects
 * to a subscriber's bound address (centralised mode) or binds its own (pod discovery),
 * three-frame messages [topic, seq 8B BE, payload] with seq counting from 0 as vLLM's
 * itertools.count(), payloads from kvev_encode in any encoding, and a replay ROUTER
 * served by its own thread from the buffer of every batch "sent" (including ones
 * deliberately not published, to make gaps); without replay nothing is buffered.
 * Loopback only.
 *
 * Threads: the test thread publishes; the replay thread reads the buffer under a lock. */
#ifndef KVROUTE_FAKE_PUBLISHER_H
#define KVROUTE_FAKE_PUBLISHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvevents.h"

typedef struct fake_pub fake_pub;

/* replay: also bind a ROUTER on an ephemeral loopback port (and serve it). The PUB is
 * neither bound nor connected yet. */
fake_pub *fake_pub_new(const char *topic, bool replay);
void fake_pub_free(fake_pub *p);
/* Connects the PUB to a subscriber's bound address (vLLM's centralised mode); 0 on success. */
int fake_pub_connect(fake_pub *p, const char *endpoint);
/* Binds the PUB on tcp://127.0.0.1:* (pod discovery); returns the port, or -1. */
int fake_pub_bind(fake_pub *p);
/* Binds the PUB on tcp://127.0.0.1:port (a data-parallel rank's socketPort + rank);
 * returns port, or -1 when it is taken. */
int fake_pub_bind_port(fake_pub *p, int port);
int fake_pub_replay_port(const fake_pub *p);   /* 0 without replay */

/* Encodes b, gives it the next seq, buffers it for replay; publishes it unless drop. */
uint64_t fake_pub_send(fake_pub *p, const kvev_batch *b, kvev_encoding enc, bool drop);
/* Any payload bytes (a malformed batch) in well-formed frames, with the next seq;
 * buffered for replay like a batch. */
uint64_t fake_pub_send_payload(fake_pub *p, const void *payload, size_t len, bool drop);
/* Raw frames, for malformed messages (seq is not advanced). */
void fake_pub_send_frames(fake_pub *p, const void *const *frames, const size_t *lens, size_t n);
/* Starts seq again at 0 and empties the replay buffer (a vLLM restart). */
void fake_pub_restart(fake_pub *p);

#endif
