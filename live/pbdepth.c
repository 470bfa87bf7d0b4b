/* pbdepth: an iterative protobuf wire scan bounding sub-message nesting (see pbdepth.h). */
#include "pbdepth.h"

#include <stdbool.h>

/* The largest field number protobuf allows (2^29 - 1). */
#define FIELD_NUMBER_MAX 536870911u

/* The message being scanned at one depth, and where its bytes end. */
typedef struct frame {
    const ProtobufCMessageDescriptor *desc;
    size_t end;
} frame;

/* A base-128 varint of at most 10 bytes ending before `end`; false when truncated. */
static bool varint(const uint8_t *buf, size_t end, size_t *pos, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64 && *pos < end; shift += 7) {
        uint8_t b = buf[(*pos)++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

int pbdepth_check(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len, unsigned max_depth,
                  kv_err *err)
{
    if (max_depth > PBDEPTH_MAX)
        return kv_err_set(err, KV_EINVAL, "pbdepth: limit %u above PBDEPTH_MAX (%d)", max_depth, PBDEPTH_MAX);
    frame st[PBDEPTH_MAX + 1];
    unsigned d = 0;
    st[0] = (frame){.desc = desc, .end = len};
    size_t pos = 0;
    for (;;) {
        while (pos == st[d].end) {
            if (d == 0)
                return KV_OK;
            d--;
        }
        size_t at = pos, end = st[d].end;
        uint64_t key, n;
        if (!varint(buf, end, &pos, &key))
            return kv_err_set(err, KV_EPARSE, "%s: truncated field key at byte %zu", desc->name, at);
        uint64_t num = key >> 3;
        if (num == 0 || num > FIELD_NUMBER_MAX)
            return kv_err_set(err, KV_EPARSE, "%s: field number %llu at byte %zu", desc->name, (unsigned long long)num,
                              at);
        switch (key & 7) {
        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (!varint(buf, end, &pos, &n))
                return kv_err_set(err, KV_EPARSE, "%s: field %llu: truncated varint at byte %zu", desc->name,
                                  (unsigned long long)num, at);
            continue;
        case PROTOBUF_C_WIRE_TYPE_64BIT:
            n = 8;
            break;
        case PROTOBUF_C_WIRE_TYPE_32BIT:
            n = 4;
            break;
        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED: {
            if (!varint(buf, end, &pos, &n))
                return kv_err_set(err, KV_EPARSE, "%s: field %llu: truncated length at byte %zu", desc->name,
                                  (unsigned long long)num, at);
            const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(st[d].desc, (unsigned)num);
            if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE || n > end - pos)
                break; /* stepped over below, or refused there when too long */
            if (d == max_depth)
                return kv_err_set(err, KV_EINVAL, "%s: messages nested deeper than %u (field %s.%s at byte %zu)",
                                  desc->name, max_depth, st[d].desc->short_name, f->name, at);
            st[++d] = (frame){.desc = f->descriptor, .end = pos + n};
            continue;
        }
        default:
            return kv_err_set(err, KV_EPARSE, "%s: field %llu: wire type %u at byte %zu", desc->name,
                              (unsigned long long)num, (unsigned)(key & 7), at);
        }
        if (n > end - pos)
            return kv_err_set(err, KV_EPARSE, "%s: field %llu: %llu bytes past the end of its message at byte %zu",
                              desc->name, (unsigned long long)num, (unsigned long long)n, at);
        pos += n;
    }
}
