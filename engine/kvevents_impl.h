/* kvevents_impl: what the kvevents files share and nobody else sees. The wire's field
 * order and names serve the decoder (kvevents.c) and the encoder (kvevents_encode.c);
 * the decoder's state, arena and msgpack cursor serve the decoder and the token-id
 * decoder (kvevents_tokens.c). Threads: as kvevents.h (one decoder per thread). */
#ifndef KVROUTE_KVEVENTS_IMPL_H
#define KVROUTE_KVEVENTS_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "kvevents.h"

/* The fields of each event type in vLLM's order (the array form's positions). */
enum { F_HASHES, F_PARENT, F_TOKENS, F_BLOCK_SIZE, F_LORA_ID, F_MEDIUM, F_LORA_NAME, F_EXTRA_KEYS, F_GROUP_IDX,
       F_SPEC_KIND, F_SLIDING_WINDOW, F_COUNT };
enum { R_HASHES, R_MEDIUM, R_GROUP_IDX, R_COUNT };
extern const char *const *const kvev_fields[KVEV_TYPE_COUNT];
extern const size_t kvev_n_fields[KVEV_TYPE_COUNT];

/* --- decoder state ------------------------------------------------------------------- */

typedef enum mp_kind { MP_NIL, MP_BOOL, MP_UINT, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT } mp_kind;

/* One value's head: scalars are complete; str/bin/ext carry their bytes; array/map carry
 * their count and the cursor stops at their first element. */
typedef struct mp_val {
    mp_kind kind;
    size_t at;            /* offset of the value's first byte */
    union {
        uint64_t u;       /* MP_UINT, MP_BOOL, and counts of MP_ARRAY / MP_MAP */
        int64_t i;        /* MP_INT (always negative) */
        double f;
        struct {
            const uint8_t *p;
            size_t n;
        } b;              /* MP_STR, MP_BIN, MP_EXT */
    } v;
} mp_val;

struct kvev_decoder {
    size_t max_payload;
    arena ar;
    kvev_event *ev;       /* the batch's events: grown, reused, never inside the arena */
    size_t ev_cap;
    kvev_stats stats;
    kvev_reason last;
    /* the message being decoded */
    const uint8_t *p;
    size_t len, off;
    size_t event;         /* index of the event being decoded, for messages */
    kv_err *err;
    bool tokens_vector;   /* token ids through tokens_vector() */
    uint64_t vector_ids;  /* token ids it decoded */
};

/* Records reason r (stats, last reason) and formats the error; returns its KV_ code. */
int kvev_fail(kvev_decoder *d, kvev_reason r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Reads one value head at the cursor (see kvevents.c). */
int kvev_mp_next(kvev_decoder *d, mp_val *v);
int kvev_wrong_type(kvev_decoder *d, const char *field, const mp_val *v, const char *want);
int kvev_out_of_memory(kvev_decoder *d);
/* The next value, which must be an array (field names it in the error), and arena room
 * for its elements of elem bytes: KV_OK with their count in *n and the room in *out
 * (the elements themselves are still to be read), else the decoder's failure. */
int kvev_array_field(kvev_decoder *d, const char *field, size_t elem, size_t *n, void **out);
/* A BlockStored's token_ids value at the cursor into e (kvevents_tokens.c). */
int kvev_tokens_field(kvev_decoder *d, kvev_event *e);

#endif
