/* fuzz_frames: the framing the ZMQ-facing harnesses (fuzz_ingest_frames,
 * fuzz_replay_reply) share to cut a fuzz input into multipart messages: per message a
 * frame-count byte (count % 5), then per frame a 2-byte little-endian length and its
 * bytes (a length past the input's end takes what is left). One definition, so both
 * read stored inputs alike. Pure; any thread. */
#ifndef KVROUTE_TEST_FUZZ_FRAMES_H
#define KVROUTE_TEST_FUZZ_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#include "replay.h"

/* Reads the message at data[*off..size) (*off < size), advancing *off past it: the first
 * min(n, 3) frames into f[0..3) (the rest zeroed), and returns n, its frame count. */
size_t fuzz_frames_next(const uint8_t *data, size_t size, size_t *off, replay_frame f[3]);

#endif
