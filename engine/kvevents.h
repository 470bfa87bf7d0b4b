/* kvevents: vLLM KV-cache events on the wire (docs/upstream/kv-events-and-index.md §1).
 *
 * A ZMQ message is three frames [topic, seq (8-byte big-endian), msgpack payload];
 * the payload is a KVEventBatch in either encoding vLLM has shipped:
 *   array era (before vLLM #42892): batch [ts, [events], dp_rank?], event ["BlockStored", f1, ...]
 *   map era (after):                events are maps {"type": "BlockStored", field: value, ...}
 *                                   (the batch itself is accepted as an array or a map).
 * Missing or extra trailing fields are tolerated; hashes arrive as uint64, int64 or bytes
 * (bytes: the last 8 read big-endian, left-padded when shorter), exactly as llm-d reads them.
 *
 * Decoded events point into an arena owned by the decoder and
 * reused by the next decode call on the same decoder: everything reachable from a
 * kvev_batch / kvev_message is valid until the next kvev_decode_* call or
 * kvev_decoder_free. A decoder is single-threaded (use one per ingest thread).
 *
 * Malformed input never crashes or reads out of bounds: the call returns KV_EPARSE or
 * KV_ERANGE with a message naming the byte offset or event index, and the reason is
 * counted in the decoder's stats (kvev_reason, names usable as metric labels).
 *
 * The encoder builds payloads from the same structs (the simulator's server model and
 * the live tests' fake publisher use it), byte-identical to what vLLM/msgspec emit. */
#ifndef KVROUTE_KVEVENTS_H
#define KVROUTE_KVEVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

/* A msgpack str. s == NULL means None/absent; otherwise s is NUL-terminated (when
 * decoded; the encoder only reads len bytes) and may contain embedded NULs. */
typedef struct kvev_str {
    const char *s;
    size_t len;
} kvev_str;

static inline kvev_str kvev_str_c(const char *s)
{
    kvev_str r = {s, 0};
    if (s)
        while (s[r.len]) r.len++;
    return r;
}

typedef enum kvev_type {
    KVEV_BLOCK_STORED = 0,
    KVEV_BLOCK_REMOVED = 1,
    KVEV_ALL_BLOCKS_CLEARED = 2,
    KVEV_TYPE_COUNT = 3
} kvev_type;
/* vLLM's class name: "BlockStored", "BlockRemoved", "AllBlocksCleared". */
const char *kvev_type_name(kvev_type t);

/* One item of a block's extra_keys tuple. vLLM sends bare multimodal identifiers
 * (strings), (identifier, offset) pairs, the LoRA name and cache_salt (strings), and
 * prompt-embeds digests (bytes); llm-d keeps strings and [str, int] pairs only, so
 * everything else is KVEV_EXTRA_OTHER (kept for counting, no payload; not encodable). */
typedef enum kvev_extra_kind { KVEV_EXTRA_STR = 0, KVEV_EXTRA_PAIR = 1, KVEV_EXTRA_OTHER = 2 } kvev_extra_kind;
typedef struct kvev_extra_item {
    kvev_extra_kind kind;
    kvev_str id;       /* STR and PAIR */
    int64_t offset;    /* PAIR */
} kvev_extra_item;

/* extra_keys[i] for engine block i: None (none = true) or a tuple of items. */
typedef struct kvev_block_extra {
    bool none;
    const kvev_extra_item *items;
    size_t n_items;
} kvev_block_extra;

/* One event, flat: 'type' says which fields apply. Absent optional values have their
 * has_* flag false (or s == NULL for strings). */
typedef struct kvev_event {
    kvev_type type;
    /* BlockStored and BlockRemoved */
    const uint64_t *block_hashes;
    size_t n_block_hashes;
    kvev_str medium;                      /* "GPU", "CPU", ...; s == NULL: None */
    bool has_group_idx;
    int64_t group_idx;
    /* BlockStored only */
    bool has_parent;                      /* false: parent_block_hash None (chain start) */
    uint64_t parent_block_hash;
    const uint32_t *token_ids;
    size_t n_token_ids;
    uint32_t block_size;
    bool has_lora_id;
    int64_t lora_id;                      /* deprecated upstream; decoded, ignored by ingest */
    kvev_str lora_name;
    bool has_extra_keys;                  /* false: the field is None/absent */
    const kvev_block_extra *extra_keys;   /* one per engine block */
    size_t n_extra_keys;
    kvev_str kv_cache_spec_kind;          /* "full_attention", "sliding_window", ... */
    bool has_sliding_window;
    int64_t kv_cache_spec_sliding_window;
} kvev_event;

typedef struct kvev_batch {
    double ts;
    bool has_dp_rank;                     /* false: 2-element batch or None */
    int64_t data_parallel_rank;
    const kvev_event *events;
    size_t n_events;
} kvev_batch;

/* --- frames ------------------------------------------------------------------ */

/* Topic "kv@<pod-id>@<model>" (llm-d's parseTopic: exactly three '@'-separated parts,
 * the first "kv"). pod and model point into topic (not NUL-terminated). Returns true
 * for a kv topic; false otherwise, with out->pod = the whole topic and out->model empty. */
typedef struct kvev_topic {
    kvev_str pod;
    kvev_str model;
} kvev_topic;
bool kvev_topic_parse(const char *topic, size_t len, kvev_topic *out);

/* The seq frame: at least 8 bytes (llm-d's rule), the first 8 read big-endian. */
int kvev_seq_parse(const void *frame, size_t len, uint64_t *seq, kv_err *err);

/* --- decoder ------------------------------------------------------------------- */

/* Why a message was rejected; kvev_reason_name() gives a stable snake_case label. */
typedef enum kvev_reason {
    KVEV_ERR_TRUNCATED = 0,   /* payload ends inside a value, or is empty */
    KVEV_ERR_TRAILING,        /* bytes left after the batch */
    KVEV_ERR_TYPE,            /* a value of the wrong msgpack type (or out of its range) */
    KVEV_ERR_LENGTH,          /* a container or payload larger than the input can hold / the limit */
    KVEV_ERR_UNKNOWN_EVENT,   /* an event tag that is not one of the three classes */
    KVEV_ERR_MISSING_FIELD,   /* a required field absent (batch events, block_hashes, token_ids, block_size) */
    KVEV_ERR_TOPIC,           /* topic is not kv@<pod>@<model> */
    KVEV_ERR_SEQ,             /* seq frame shorter than 8 bytes */
    KVEV_ERR_NOMEM,
    KVEV_ERR_COUNT
} kvev_reason;
const char *kvev_reason_name(kvev_reason r);

typedef struct kvev_stats {
    uint64_t batches;                     /* decoded successfully */
    uint64_t events[KVEV_TYPE_COUNT];     /* in decoded batches, by type */
    uint64_t errors[KVEV_ERR_COUNT];      /* rejected messages, by reason */
} kvev_stats;

typedef struct kvev_decoder kvev_decoder;

/* max_payload: payloads longer than this are rejected (KVEV_ERR_LENGTH); 0 = 16 MiB. */
kvev_decoder *kvev_decoder_new(size_t max_payload, kv_err *err);
void kvev_decoder_free(kvev_decoder *d);
const kvev_stats *kvev_decoder_stats(const kvev_decoder *d);
/* The reason of the last failed call (meaningless after a success). */
kvev_reason kvev_decoder_last_reason(const kvev_decoder *d);

/* Which code decodes token ids, the bulk of every BlockStored (a test and benchmark
 * hook; decoders start with the fastest this CPU has). KVEV_TOKENS_VECTOR is an AVX-512
 * VBMI path, used when the CPU has it (x86-64 only); KVEV_TOKENS_SCALAR is the portable
 * path. Both give identical results and errors for every input. Returns the path now in
 * use: SCALAR when VECTOR was asked for on a CPU without VBMI. */
typedef enum kvev_tokens_path { KVEV_TOKENS_SCALAR = 0, KVEV_TOKENS_VECTOR = 1 } kvev_tokens_path;
kvev_tokens_path kvev_decoder_set_tokens_path(kvev_decoder *d, kvev_tokens_path want);
/* Token ids the vector path decoded on this decoder so far (the rest went the scalar
 * way: arrays' last ids within 128 bytes of the payload's end, and after a head it does
 * not accept), so tests can tell it ran. */
uint64_t kvev_decoder_vector_ids(const kvev_decoder *d);

/* Decodes one KVEventBatch payload into *out (arena-backed, see lifetime above).
 * Field rules follow llm-d's vLLM adapter: BlockStored needs block_hashes, token_ids and
 * block_size (parent_block_hash may be absent or nil), BlockRemoved needs block_hashes;
 * everything after is optional; token ids must fit uint32, group_idx must be >= 0. */
int kvev_decode_batch(kvev_decoder *d, const void *payload, size_t len, kvev_batch *out, kv_err *err);

/* A whole ZMQ message. pod and model are copied into the arena (NUL-terminated). */
typedef struct kvev_message {
    kvev_str pod;
    kvev_str model;
    uint64_t seq;
    kvev_batch batch;
} kvev_message;
int kvev_decode_message(kvev_decoder *d, const void *topic, size_t topic_len, const void *seq, size_t seq_len,
                        const void *payload, size_t payload_len, kvev_message *out, kv_err *err);

/* --- encoder ------------------------------------------------------------------- */

typedef enum kvev_encoding {
    KVEV_ENC_ARRAY = 0,       /* vLLM before #42892: array_like batch and events */
    KVEV_ENC_MAP_EVENTS = 1,  /* vLLM after #42892: array batch, events as maps with "type" */
    KVEV_ENC_MAP_ALL = 2      /* batch as a map too (seen in one vLLM revision) */
} kvev_encoding;

/* A growable byte buffer; zero-initialise, reuse across calls, free with kvev_buf_free. */
typedef struct kvev_buf {
    uint8_t *data;
    size_t len, cap;
} kvev_buf;
void kvev_buf_free(kvev_buf *b);

/* Replaces out's contents with the msgpack payload for b. Optional fields are written
 * as msgspec's omit_defaults does: in arrays, absent trailing optional fields are left
 * out (absent ones followed by present ones become nil); in maps, absent optional fields
 * are left out. Hashes are written as unsigned integers (vLLM's default). Returns
 * KV_EINVAL for unencodable input (KVEV_EXTRA_OTHER items, bad type), KV_ENOMEM. */
int kvev_encode(const kvev_batch *b, kvev_encoding enc, kvev_buf *out, kv_err *err);
/* kvev_encode, but the payload goes after out's first out->len bytes, which are kept: a
 * caller queueing payloads in one buffer encodes straight into it. On error out->len is
 * as it was. */
int kvev_encode_append(const kvev_batch *b, kvev_encoding enc, kvev_buf *out, kv_err *err);
/* Which code the encoder writes token ids with on this CPU: KVEV_TOKENS_VECTOR where it
 * has AVX-512 VBMI2 (x86-64 only), else KVEV_TOKENS_SCALAR. The bytes are the same. */
kvev_tokens_path kvev_encode_tokens_path(void);

#endif
