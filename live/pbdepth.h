/* pbdepth: bounds how deeply a protobuf message nests sub-messages, by scanning its wire
 * bytes without recursion, before protobuf-c unpacks them.
 *
 * Why: protobuf_c_message_unpack recurses once per nested message, so a small message can
 * exhaust a thread's stack: an ext-proc ProcessingRequest whose metadata_context nests
 * ListValues 10,000 deep is 74 KB. The scan follows the message descriptors: a
 * length-delimited field is entered only when its descriptor says it is a message;
 * strings, bytes, packed scalars and unknown fields (which protobuf-c keeps as bytes
 * without parsing them) are stepped over. Wire types protobuf-c cannot read (groups, 6,
 * 7), truncated varints and lengths past the end of the enclosing message are refused
 * too, since unpacking would refuse them anyway.
 *
 * Threads: a pure function of its arguments; any thread. */
#ifndef KVROUTE_PBDEPTH_H
#define KVROUTE_PBDEPTH_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

/* The deepest limit pbdepth_check keeps on its own (fixed-size) stack. */
#define PBDEPTH_MAX 128

/* Checks buf[0..len), a message of type desc whose sub-messages may nest max_depth deep
 * (desc's own fields are at depth 0, a field of a sub-message at depth 1, ...; at most
 * PBDEPTH_MAX). KV_OK; KV_EINVAL naming the limit, the field and the byte offset when the
 * nesting is deeper; KV_EPARSE naming the byte for malformed wire data. */
int pbdepth_check(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len, unsigned max_depth,
                  kv_err *err);

#endif
