/* kvevents: vLLM KVEventBatch payloads <-> kvev_* structs.
 *
 * Decoding is one pass of a bounds-checked msgpack cursor straight into kvev_event
 * structs. msgpack-c's object-tree unpack was measured at 13 ns per object here, i.e.
 * ~860 ns per 64-token block against a whole-pipeline budget of 330 ns (3 M blocks/s),
 * and it sizes a container's element array from the header before reading the elements,
 * so a 5-byte header could demand gigabytes. The cursor instead rejects any container declaring more
 * elements than bytes remain. Decoded data lives in a chunked arena (chunks never move, so
 * pointers stay valid while later events are appended) reset by the next call.
 *
 * Token ids are nearly all of a BlockStored's bytes and get their own decoders. msgpack
 * writes each id in the shortest of four encodings (fixint, 0xcc, 0xcd, 0xce: 1, 2, 3 or 5
 * bytes), and real vocabularies (150k ids) mix the 3- and 5-byte ones at random, so where
 * an id starts depends on every head before it: read one head at a time, that is a serial
 * chain of ~10 cycles per id (~3 ns, 190 ns per 64-token block). The AVX-512 VBMI path
 * (tokens_vector, chosen at run time when the CPU has it) breaks the chain: it takes the
 * array in fixed 64-byte windows, gives every byte the width it would have as a head, and
 * finds the window's heads by pointer doubling with byte permutes (next[i] = i + width[i];
 * a few squarings of next give the 2^k-th head after any byte), then gathers each id's
 * big-endian value bytes into a 32-bit lane with one more permute. Successive windows
 * share only the offset of their first head, so the core overlaps them: ~0.75 ns per id.
 * Anything else (a head outside the four, the payload's last 128 bytes, CPUs without VBMI,
 * valgrind) goes the scalar way: a branch-free run over the same four encodings, and the
 * careful cursor that decodes, or rejects, one value at a time. Both paths give the same
 * ids and the same errors for every input (tests/test_kvevents.c compares them).
 * The encoder writes through msgpack-c's packer into a kvev_buf (integer arrays directly,
 * in the packer's own encoding). */
#include "kvevents.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_PAYLOAD (16u << 20)
#define ARENA_MIN_CHUNK (64u << 10)

static const char *const TYPE_NAMES[KVEV_TYPE_COUNT] = {"BlockStored", "BlockRemoved", "AllBlocksCleared"};

static const char *const REASON_NAMES[KVEV_ERR_COUNT] = {
    "truncated", "trailing_bytes", "wrong_type", "bad_length", "unknown_event",
    "missing_field", "bad_topic", "bad_seq", "out_of_memory",
};

const char *kvev_type_name(kvev_type t)
{
    return (unsigned)t < KVEV_TYPE_COUNT ? TYPE_NAMES[t] : "unknown";
}

const char *kvev_reason_name(kvev_reason r)
{
    return (unsigned)r < KVEV_ERR_COUNT ? REASON_NAMES[r] : "unknown";
}

/* --- arena ----------------------------------------------------------------------- */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, used;
    max_align_t data[];
} arena_chunk;

typedef struct arena {
    arena_chunk *head;   /* current chunk first */
    size_t total;        /* bytes handed out since the last reset */
} arena;

/* Keeps one chunk big enough for the whole previous decode, so steady state is one
 * chunk and no allocation per call. */
static void arena_reset(arena *a)
{
    if (a->head && a->head->next) {
        size_t want = a->total;
        while (a->head) {
            arena_chunk *n = a->head->next;
            free(a->head);
            a->head = n;
        }
        arena_chunk *c = malloc(sizeof *c + want);
        if (c) {
            c->next = NULL;
            c->cap = want;
            c->used = 0;
            a->head = c;
        }
    } else if (a->head) {
        a->head->used = 0;
    }
    a->total = 0;
}

static void arena_free(arena *a)
{
    while (a->head) {
        arena_chunk *n = a->head->next;
        free(a->head);
        a->head = n;
    }
}

static void *arena_alloc(arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > ARENA_MIN_CHUNK ? size : ARENA_MIN_CHUNK;
        if (c && cap < 2 * c->cap) cap = 2 * c->cap;
        arena_chunk *n = malloc(sizeof *n + cap);
        if (!n) return NULL;
        n->next = c;
        n->cap = cap;
        n->used = 0;
        a->head = c = n;
    }
    void *p = (char *)c->data + c->used;
    c->used += size;
    a->total += size;
    return p;
}

/* --- msgpack cursor ---------------------------------------------------------------- */

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

kvev_decoder *kvev_decoder_new(size_t max_payload, kv_err *err)
{
    kvev_decoder *d = calloc(1, sizeof *d);
    if (!d) {
        kv_err_set(err, KV_ENOMEM, "kvevents: out of memory");
        return NULL;
    }
    d->max_payload = max_payload ? max_payload : DEFAULT_MAX_PAYLOAD;
    kvev_decoder_set_tokens_path(d, KVEV_TOKENS_VECTOR);
    return d;
}

void kvev_decoder_free(kvev_decoder *d)
{
    if (!d) return;
    arena_free(&d->ar);
    free(d->ev);
    free(d);
}

const kvev_stats *kvev_decoder_stats(const kvev_decoder *d)
{
    return &d->stats;
}

kvev_reason kvev_decoder_last_reason(const kvev_decoder *d)
{
    return d->last;
}

static int fail(kvev_decoder *d, kvev_reason r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(kvev_decoder *d, kvev_reason r, const char *fmt, ...)
{
    d->last = r;
    d->stats.errors[r]++;
    int code = r == KVEV_ERR_NOMEM ? KV_ENOMEM : r == KVEV_ERR_LENGTH ? KV_ERANGE : KV_EPARSE;
    if (d->err) {
        va_list ap;
        va_start(ap, fmt);
        int n = snprintf(d->err->msg, sizeof d->err->msg, "kvevents: %s: ", REASON_NAMES[r]);
        vsnprintf(d->err->msg + n, sizeof d->err->msg - (size_t)n, fmt, ap);
        va_end(ap);
        d->err->code = code;
    }
    return code;
}

static uint64_t be_read(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* A declared length (unit: "bytes" or "elements") beyond the input: truncation, or an
 * absurd length when no payload we accept could hold it. */
static int truncated(kvev_decoder *d, size_t at, uint64_t want, size_t have, const char *what, const char *unit)
{
    kvev_reason r = want > d->max_payload ? KVEV_ERR_LENGTH : KVEV_ERR_TRUNCATED;
    return fail(d, r, "%s at offset %zu declares %llu %s, %zu bytes remain", what, at, (unsigned long long)want, unit,
                have);
}

/* Reads one value head at the cursor. A container's elements each need at least one
 * byte, so a count larger than the bytes left is rejected before anything is sized
 * from it. */
static int mp_next(kvev_decoder *d, mp_val *v)
{
    size_t at = d->off;
    if (at >= d->len) return fail(d, KVEV_ERR_TRUNCATED, "payload ends at byte %zu, a value is missing", at);
    const uint8_t *p = d->p + at;
    size_t left = d->len - at - 1;
    uint8_t t = p[0];
    size_t lenbytes = 0, fixed = 0, typeb = 0;   /* length-field bytes; data length of fix types; ext type byte */
    v->at = at;
    if (t <= 0x7f) {
        v->kind = MP_UINT, v->v.u = t, d->off++;
        return KV_OK;
    }
    if (t >= 0xe0) {
        v->kind = MP_INT, v->v.i = (int8_t)t, d->off++;
        return KV_OK;
    }
    if (t <= 0x8f || (t >= 0x90 && t <= 0x9f)) {
        v->kind = t <= 0x8f ? MP_MAP : MP_ARRAY;
        v->v.u = t & 0x0f;
        d->off++;
        goto container;
    }
    if (t >= 0xa0 && t <= 0xbf) {
        v->kind = MP_STR;
        fixed = t & 0x1f;
        goto blob;
    }
    switch (t) {
    case 0xc0: v->kind = MP_NIL, d->off++; return KV_OK;
    case 0xc2: case 0xc3: v->kind = MP_BOOL, v->v.u = t & 1, d->off++; return KV_OK;
    case 0xc4: case 0xc5: case 0xc6: v->kind = MP_BIN, lenbytes = 1u << (t - 0xc4); goto blob;
    case 0xd9: case 0xda: case 0xdb: v->kind = MP_STR, lenbytes = 1u << (t - 0xd9); goto blob;
    case 0xc7: case 0xc8: case 0xc9: v->kind = MP_EXT, lenbytes = 1u << (t - 0xc7), typeb = 1; goto blob;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: v->kind = MP_EXT, fixed = 1u << (t - 0xd4), typeb = 1; goto blob;
    case 0xca: case 0xcb: {
        size_t n = t == 0xca ? 4 : 8;
        if (left < n) return truncated(d, at, n, left, "value", "bytes");
        uint64_t bits = be_read(p + 1, n);
        if (n == 4) {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            v->v.f = f;
        } else {
            memcpy(&v->v.f, &bits, 8);
        }
        v->kind = MP_FLOAT;
        d->off += 1 + n;
        return KV_OK;
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        size_t n = 1u << ((t - 0xcc) & 3);
        if (left < n) return truncated(d, at, n, left, "value", "bytes");
        uint64_t u = be_read(p + 1, n);
        d->off += 1 + n;
        if (t <= 0xcf) {
            v->kind = MP_UINT, v->v.u = u;
            return KV_OK;
        }
        int64_t i = n == 1 ? (int8_t)u : n == 2 ? (int16_t)u : n == 4 ? (int32_t)u : (int64_t)u;
        if (i >= 0) v->kind = MP_UINT, v->v.u = (uint64_t)i;
        else v->kind = MP_INT, v->v.i = i;
        return KV_OK;
    }
    case 0xdc: case 0xdd: case 0xde: case 0xdf: {
        size_t n = (t & 1) ? 4 : 2;
        if (left < n) return truncated(d, at, n, left, "value", "bytes");
        v->kind = t <= 0xdd ? MP_ARRAY : MP_MAP;
        v->v.u = be_read(p + 1, n);
        d->off += 1 + n;
        goto container;
    }
    default: return fail(d, KVEV_ERR_TYPE, "byte 0x%02x at offset %zu is not a msgpack type", t, at);
    }
container: {
        uint64_t need = v->kind == MP_MAP ? 2 * v->v.u : v->v.u;
        size_t rem = d->len - d->off;
        if (need > rem) return truncated(d, at, v->v.u, rem, v->kind == MP_MAP ? "map" : "array", "elements");
        return KV_OK;
    }
blob:
    if (left < lenbytes) return truncated(d, at, lenbytes, left, "value", "bytes");
    {
        uint64_t n = lenbytes ? be_read(p + 1, lenbytes) : fixed;
        uint64_t total = typeb + n;
        if (total > left - lenbytes) return truncated(d, at, total, left - lenbytes, "value", "bytes");
        v->v.b.p = p + 1 + lenbytes + typeb;
        v->v.b.n = (size_t)n;
        d->off += 1 + lenbytes + (size_t)total;
    }
    return KV_OK;
}

/* Skips the rest of a value whose head v was just read (no recursion: a count of
 * values still to read). */
static int mp_skip_rest(kvev_decoder *d, const mp_val *v)
{
    uint64_t pending = v->kind == MP_ARRAY ? v->v.u : v->kind == MP_MAP ? 2 * v->v.u : 0;
    while (pending) {
        mp_val x;
        int rc = mp_next(d, &x);
        if (rc) return rc;
        pending--;
        if (x.kind == MP_ARRAY) pending += x.v.u;
        else if (x.kind == MP_MAP) pending += 2 * x.v.u;
    }
    return KV_OK;
}

static int mp_skip(kvev_decoder *d)
{
    mp_val v;
    int rc = mp_next(d, &v);
    return rc ? rc : mp_skip_rest(d, &v);
}

static bool mp_is_str(const mp_val *v, const char *s, size_t n)
{
    return v->kind == MP_STR && v->v.b.n == n && memcmp(v->v.b.p, s, n) == 0;
}

static const char *mp_kind_name(mp_kind k)
{
    static const char *const names[] = {"nil", "bool", "int", "int", "float", "str", "bin", "array", "map", "ext"};
    return names[k];
}

/* --- values -> structs ------------------------------------------------------------------ */

enum { F_HASHES, F_PARENT, F_TOKENS, F_BLOCK_SIZE, F_LORA_ID, F_MEDIUM, F_LORA_NAME, F_EXTRA_KEYS, F_GROUP_IDX,
       F_SPEC_KIND, F_SLIDING_WINDOW, F_COUNT };
static const char *const STORED_FIELDS[F_COUNT] = {
    "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name",
    "extra_keys", "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window",
};
enum { R_HASHES, R_MEDIUM, R_GROUP_IDX, R_COUNT };
static const char *const REMOVED_FIELDS[R_COUNT] = {"block_hashes", "medium", "group_idx"};

static const char *const *const FIELDS[KVEV_TYPE_COUNT] = {STORED_FIELDS, REMOVED_FIELDS, NULL};
static const size_t N_FIELDS[KVEV_TYPE_COUNT] = {F_COUNT, R_COUNT, 0};

static int wrong_type(kvev_decoder *d, const char *field, const mp_val *v, const char *want)
{
    return fail(d, KVEV_ERR_TYPE, "event %zu: %s at offset %zu is %s, expected %s", d->event, field, v->at,
                mp_kind_name(v->kind), want);
}

static int out_of_memory(kvev_decoder *d)
{
    return fail(d, KVEV_ERR_NOMEM, "event %zu: out of memory at offset %zu", d->event, d->off);
}

/* llm-d's getHashAsUint64: uint64, int64 (two's complement), or bytes (the last 8 read
 * big-endian; fewer are left-padded with zeros). */
static bool val_hash(const mp_val *v, uint64_t *h)
{
    switch (v->kind) {
    case MP_UINT: *h = v->v.u; return true;
    case MP_INT: *h = (uint64_t)v->v.i; return true;
    case MP_BIN: *h = v->v.b.n > 8 ? be_read(v->v.b.p + v->v.b.n - 8, 8) : be_read(v->v.b.p, v->v.b.n); return true;
    default: return false;
    }
}

static bool val_int(const mp_val *v, int64_t *i)
{
    if (v->kind == MP_INT) {
        *i = v->v.i;
        return true;
    }
    if (v->kind == MP_UINT && v->v.u <= INT64_MAX) {
        *i = (int64_t)v->v.u;
        return true;
    }
    return false;
}

static int copy_str(kvev_decoder *d, const mp_val *v, kvev_str *out)
{
    char *s = arena_alloc(&d->ar, v->v.b.n + 1);
    if (!s) return out_of_memory(d);
    memcpy(s, v->v.b.p, v->v.b.n);
    s[v->v.b.n] = 0;
    out->s = s;
    out->len = v->v.b.n;
    return KV_OK;
}

static int f_opt_str(kvev_decoder *d, const char *field, kvev_str *out)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc) return rc;
    if (v.kind == MP_NIL) return KV_OK;
    if (v.kind != MP_STR) return wrong_type(d, field, &v, "str or nil");
    return copy_str(d, &v, out);
}

static int f_opt_int(kvev_decoder *d, const char *field, bool *has, int64_t *out, bool non_negative)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc) return rc;
    if (v.kind == MP_NIL) return KV_OK;
    if (!val_int(&v, out)) return wrong_type(d, field, &v, "int or nil");
    if (non_negative && *out < 0)
        return fail(d, KVEV_ERR_TYPE, "event %zu: %s at offset %zu is negative (%lld)", d->event, field, v.at,
                    (long long)*out);
    *has = true;
    return KV_OK;
}

static int f_hashes(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc) return rc;
    if (v.kind != MP_ARRAY) return wrong_type(d, "block_hashes", &v, "array");
    size_t n = (size_t)v.v.u;
    uint64_t *h = arena_alloc(&d->ar, n * sizeof *h);
    if (!h && n) return out_of_memory(d);
    for (size_t i = 0; i < n; i++) {
        mp_val x;
        if ((rc = mp_next(d, &x))) return rc;
        if (!val_hash(&x, &h[i]))
            return fail(d, KVEV_ERR_TYPE, "event %zu: block_hashes[%zu] at offset %zu is %s, expected int or bytes",
                        d->event, i, x.at, mp_kind_name(x.kind));
    }
    e->block_hashes = h;
    e->n_block_hashes = n;
    return KV_OK;
}

static int f_parent(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc || v.kind == MP_NIL) return rc;
    if (!val_hash(&v, &e->parent_block_hash)) return wrong_type(d, "parent_block_hash", &v, "int, bytes or nil");
    e->has_parent = true;
    return KV_OK;
}

/* --- token ids, AVX-512 VBMI ------------------------------------------------------------ */

#if defined(__x86_64__) && defined(__GNUC__)
#define TOKENS_VECTOR 1
#include <immintrin.h>

#define TOKENS_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi,popcnt,bmi,bmi2")))

static bool cpu_has_vbmi(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("popcnt") &&
           __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
}

enum { VC_IOTA, VC_IOTA_HI, VC_WIDTH, VC_REP4, VC_BYTE_IN_DWORD, VC_COUNT };
static const uint8_t VEC_CONST[VC_COUNT][64] __attribute__((aligned(64))) = {
    [VC_IOTA] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
                 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63},
    /* the second table of every two-table permute: positions past the window map to
     * themselves, so a chain that leaves the window stays put, at its exact exit */
    [VC_IOTA_HI] = {64,  65,  66,  67,  68,  69,  70,  71,  72,  73,  74,  75,  76,  77,  78,  79,
                    80,  81,  82,  83,  84,  85,  86,  87,  88,  89,  90,  91,  92,  93,  94,  95,
                    96,  97,  98,  99,  100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
                    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127},
    /* width of a head byte 0xc0..0xff, by its low 6 bits (0x80..0xbf read zeros instead);
     * 0: not one of the accepted heads */
    [VC_WIDTH] = {[0xcc - 0xc0] = 2, [0xcd - 0xc0] = 3, [0xce - 0xc0] = 5},
    /* byte b of dword lane q comes from id q, and is its byte b from the least significant */
    [VC_REP4] = {0,  0,  0,  0,  1,  1,  1,  1,  2,  2,  2,  2,  3,  3,  3,  3,  4,  4,  4,  4,  5,  5,
                 5,  5,  6,  6,  6,  6,  7,  7,  7,  7,  8,  8,  8,  8,  9,  9,  9,  9,  10, 10, 10, 10,
                 11, 11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15},
    [VC_BYTE_IN_DWORD] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1,
                          2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3,
                          0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3},
};

/* Lanes whose index has bit b set: lane i of the head vector takes the i-th step of the
 * chain as the composition of the 2^b-steps its binary digits name. */
static const uint64_t LANE_BIT[6] = {
    0xaaaaaaaaaaaaaaaaull, 0xccccccccccccccccull, 0xf0f0f0f0f0f0f0f0ull,
    0xff00ff00ff00ff00ull, 0xffff0000ffff0000ull, 0xffffffff00000000ull,
};

/* Decodes the token ids t[*i..n) from off (a head) window by window, while a window and
 * the one after it (where the last ids' value bytes may lie) are inside the payload, so
 * every load is in bounds and every id taken ends before len. Returns the offset of id
 * *i, the first not decoded: all done, the payload's last 128 bytes reached (the scalar
 * path takes over), or a head it does not accept (then *fast = false and the careful
 * path decodes from that id, as after the scalar fast path's own fallback).
 *
 * Windows sit at fixed 64-byte steps, not at the next head, so the only thing one window
 * hands the next is where its first head is (0..4 bytes in, one permute): the chain a
 * head-after-head walk would be serial in is resolved inside each window by pointer
 * doubling, which is independent work the core overlaps across windows. */
TOKENS_TARGET static size_t tokens_vector(const uint8_t *p, size_t off, size_t len, uint32_t *t, size_t n, size_t *i,
                                          bool *fast)
{
    size_t k = *i, base = off;
    if (k >= n || len - base < 128) return off;
    const __m512i iota = _mm512_load_si512(VEC_CONST[VC_IOTA]), iota_hi = _mm512_load_si512(VEC_CONST[VC_IOTA_HI]),
                  width = _mm512_load_si512(VEC_CONST[VC_WIDTH]), rep4 = _mm512_load_si512(VEC_CONST[VC_REP4]),
                  byte_in_dword = _mm512_load_si512(VEC_CONST[VC_BYTE_IN_DWORD]);
    const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi8(1), sixty_four = _mm512_set1_epi8(64);
    __m512i entry = zero;   /* every lane: the window's first head, relative to base */
    __m512i lo = _mm512_loadu_si512(p + base);
    for (;;) {
        __m512i hi = _mm512_loadu_si512(p + base + 64);
        /* w: each byte's width were it a head (0: not an accepted head); the chain steps
         * over unaccepted bytes as if 1 wide; the first among the ids taken ends the run */
        __m512i w = _mm512_mask_mov_epi8(_mm512_permutex2var_epi8(zero, lo, width), ~_mm512_movepi8_mask(lo), one);
        __m512i jump = _mm512_add_epi8(iota, _mm512_max_epu8(w, one));   /* J_1: the next head after byte i */
        __m512i pos = entry;
        for (int b = 0; b < 6; b++) {
            pos = _mm512_mask2_permutex2var_epi8(jump, pos, LANE_BIT[b], iota_hi);
            jump = _mm512_permutex2var_epi8(jump, jump, iota_hi);   /* J_2^(b+1) */
        }
        /* pos[i]: the i-th head (heads first, then the window's exit, repeated) */
        __m512i next_entry = _mm512_sub_epi8(_mm512_permutexvar_epi8(entry, jump), sixty_four);
        __mmask64 heads = _mm512_cmplt_epu8_mask(pos, sixty_four);
        size_t h = (size_t)_mm_popcnt_u64(heads);
        bool last = n - k <= h;
        __mmask64 take = last ? _bzhi_u64(heads, (unsigned)(n - k)) : heads;
        __m512i wp = _mm512_permutexvar_epi8(pos, w);
        __mmask64 bad = _mm512_mask_cmpeq_epi8_mask(take, wp, zero);
        if (bad) take = _bzhi_u64(take, (unsigned)_tzcnt_u64(bad));
        /* an id's value is the big-endian bytes that end at pos + width - 1; a fixint
         * is its own head byte */
        __m512i end = _mm512_sub_epi8(_mm512_add_epi8(pos, wp), one);
        __m512i vlen = _mm512_max_epu8(_mm512_sub_epi8(wp, one), one);
        size_t taken = (size_t)_mm_popcnt_u64(take);
        /* vocabulary ids put 13 to 21 in a window: two groups of 16 always, as a branch
         * on which would mispredict half the time; more only for small ids */
        for (size_t g = 0; g < 32 || g < taken; g += 16) {
            __m512i rep = _mm512_add_epi8(rep4, _mm512_set1_epi8((char)g));
            __m512i src = _mm512_sub_epi8(_mm512_permutexvar_epi8(rep, end), byte_in_dword);
            __mmask64 in = _mm512_cmplt_epu8_mask(byte_in_dword, _mm512_permutexvar_epi8(rep, vlen));
            __m512i ids = _mm512_maskz_permutex2var_epi8(in, lo, src, hi);
            /* a group past the ids taken stores nothing (its mask is empty); its address
             * stays inside the array all the same (a select, not a branch) */
            _mm512_mask_storeu_epi32(t + k + (g < taken ? g : 0), (__mmask16)(take >> g), ids);
        }
        if (bad || last) {
            uint8_t at[64];
            _mm512_storeu_si512(at, pos);
            *i = k + taken;
            if (bad) *fast = false;
            /* 64 taken: the window holds 64 heads and the last id ends at the window's
             * exit, which is 64 only for 64 fixints (a multi-byte id whose head is byte 63
             * ends past it): next_entry has it */
            return base + (taken < 64 ? at[taken] : 64 + (uint8_t)_mm_cvtsi128_si32(_mm512_castsi512_si128(next_entry)));
        }
        k += h;
        base += 64;
        entry = next_entry;
        lo = hi;
        if (len - base < 128) break;
    }
    *i = k;
    return base + (uint8_t)_mm_cvtsi128_si32(_mm512_castsi512_si128(entry));
}
#else
static bool cpu_has_vbmi(void)
{
    return false;
}
#endif

kvev_tokens_path kvev_decoder_set_tokens_path(kvev_decoder *d, kvev_tokens_path want)
{
    d->tokens_vector = want == KVEV_TOKENS_VECTOR && cpu_has_vbmi();
    return d->tokens_vector ? KVEV_TOKENS_VECTOR : KVEV_TOKENS_SCALAR;
}

uint64_t kvev_decoder_vector_ids(const kvev_decoder *d)
{
    return d->vector_ids;
}

/* How a token id whose msgpack head byte is b is read from the 8 bytes at its head,
 * taken as one big-endian 64-bit number x: (x >> shift) & mask, len bytes long.
 * len 0: not an unsigned integer of at most 32 bits (the careful path decides). */
typedef struct token_code {
    uint8_t len, shift;
    uint32_t mask;
} token_code;
static const token_code TOKEN_CODES[256] = {
    [0x00 ... 0x7f] = {1, 56, 0x7f},   /* positive fixint: the head byte itself */
    [0xcc] = {2, 48, 0xff},
    [0xcd] = {3, 40, 0xffff},
    [0xce] = {5, 24, 0xffffffff},
};

static inline uint64_t be64_at(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return x;
}

/* Bytes taken by a token id whose head byte is b, for the four heads TOKEN_CODES
 * accepts (other bytes give 2 or 5, and are caught by the table). Arithmetic, not the
 * table: the next id's position hangs on it, and a table load would add its latency
 * to that chain. */
static inline unsigned token_width(unsigned b)
{
    return b < 0x80 ? 1 : (0x5532u >> (4 * ((b - 0xcc) & 3))) & 15;
}

/* The hot loop of the decoder: the vector path first where the CPU has it, then the
 * scalar one for whatever it left. Real token ids mix uint16 and uint32 at random, so the
 * scalar path extracts an id without branching on its width (a mispredict per id cost
 * more than the rest of the decode). Ids go in runs that cannot reach the payload's last 8 bytes
 * (at most 5 bytes each), so a run needs no bounds check per id; a head the table does
 * not accept is noted, not branched on, and sends the run back to the careful path,
 * which decodes one id at a time. */
static int f_tokens(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc) return rc;
    if (v.kind != MP_ARRAY) return wrong_type(d, "token_ids", &v, "array");
    size_t n = (size_t)v.v.u;
    uint32_t *t = arena_alloc(&d->ar, n * sizeof *t);
    if (!t && n) return out_of_memory(d);
    const uint8_t *p = d->p;
    size_t off = d->off, len = d->len, i = 0;
    bool fast = true;
#ifdef TOKENS_VECTOR
    if (d->tokens_vector) {
        off = tokens_vector(p, off, len, t, n, &i, &fast);
        d->vector_ids += i;
    }
#endif
    while (i < n) {
        size_t run = len - off >= 8 ? (len - off - 8) / 5 : 0;
        if (run > n - i) run = n - i;
        if (fast && run >= 8) {
            size_t off0 = off;
            unsigned bad = 0;
            size_t k = i, end = i + run;
            for (; k + 2 <= end; k += 2) {
                uint64_t x = be64_at(p + off);
                unsigned b0 = (unsigned)(x >> 56), w0 = token_width(b0);
                unsigned b1 = (unsigned)(x >> (56 - 8 * w0)) & 0xff;
                const token_code *c0 = &TOKEN_CODES[b0], *c1 = &TOKEN_CODES[b1];
                t[k] = (uint32_t)(x >> c0->shift) & c0->mask;
                t[k + 1] = (uint32_t)(be64_at(p + off + w0) >> c1->shift) & c1->mask;
                bad |= (c0->len == 0) | (c1->len == 0);
                off += w0 + token_width(b1);
            }
            if (k < end) {
                const token_code *c = &TOKEN_CODES[p[off]];
                t[k] = (uint32_t)(be64_at(p + off) >> c->shift) & c->mask;
                bad |= c->len == 0;
                off += c->len;
            }
            if (!bad) {
                i += run;
                continue;
            }
            off = off0;
            fast = false;
        }
        d->off = off;
        mp_val x;
        if ((rc = mp_next(d, &x))) return rc;
        if (x.kind != MP_UINT || x.v.u > UINT32_MAX)
            return fail(d, KVEV_ERR_TYPE, "event %zu: token_ids[%zu] at offset %zu is not an integer in [0, 2^32)",
                        d->event, i, x.at);
        t[i++] = (uint32_t)x.v.u;
        off = d->off;
    }
    d->off = off;
    e->token_ids = t;
    e->n_token_ids = n;
    return KV_OK;
}

static int f_block_size(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc) return rc;
    if (v.kind != MP_UINT || v.v.u > UINT32_MAX) return wrong_type(d, "block_size", &v, "an integer in [0, 2^32)");
    e->block_size = (uint32_t)v.v.u;
    return KV_OK;
}

/* extra_keys: None, or per engine block None | tuple of items; llm-d keeps strings and
 * the identifier of any [str, ...]. */
static int f_extra_keys(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc || v.kind == MP_NIL) return rc;
    if (v.kind != MP_ARRAY) return wrong_type(d, "extra_keys", &v, "array or nil");
    size_t m = (size_t)v.v.u;
    kvev_block_extra *bx = arena_alloc(&d->ar, m * sizeof *bx);
    if (!bx && m) return out_of_memory(d);
    for (size_t b = 0; b < m; b++) {
        mp_val blk;
        memset(&bx[b], 0, sizeof bx[b]);
        if ((rc = mp_next(d, &blk))) return rc;
        if (blk.kind == MP_NIL) {
            bx[b].none = true;
            continue;
        }
        if (blk.kind != MP_ARRAY)
            return fail(d, KVEV_ERR_TYPE, "event %zu: extra_keys[%zu] at offset %zu is %s, expected array or nil",
                        d->event, b, blk.at, mp_kind_name(blk.kind));
        size_t k = (size_t)blk.v.u;
        kvev_extra_item *it = arena_alloc(&d->ar, k * sizeof *it);
        if (!it && k) return out_of_memory(d);
        for (size_t i = 0; i < k; i++) {
            mp_val x;
            memset(&it[i], 0, sizeof it[i]);
            it[i].kind = KVEV_EXTRA_OTHER;
            if ((rc = mp_next(d, &x))) return rc;
            if (x.kind == MP_STR) {
                it[i].kind = KVEV_EXTRA_STR;
                if ((rc = copy_str(d, &x, &it[i].id))) return rc;
                continue;
            }
            if (x.kind != MP_ARRAY || x.v.u == 0) {
                if ((rc = mp_skip_rest(d, &x))) return rc;
                continue;
            }
            mp_val id;
            if ((rc = mp_next(d, &id))) return rc;
            uint64_t rest = x.v.u - 1;
            if (id.kind == MP_STR) {
                it[i].kind = KVEV_EXTRA_PAIR;
                if ((rc = copy_str(d, &id, &it[i].id))) return rc;
                if (rest) {
                    mp_val off;
                    if ((rc = mp_next(d, &off))) return rc;
                    val_int(&off, &it[i].offset);
                    if ((rc = mp_skip_rest(d, &off))) return rc;
                    rest--;
                }
            } else if ((rc = mp_skip_rest(d, &id))) {
                return rc;
            }
            mp_val tail = {.kind = MP_ARRAY, .v.u = rest};
            if ((rc = mp_skip_rest(d, &tail))) return rc;
        }
        bx[b].items = it;
        bx[b].n_items = k;
    }
    e->has_extra_keys = true;
    e->extra_keys = bx;
    e->n_extra_keys = m;
    return KV_OK;
}

/* Decodes field k of an event of type t at the cursor. */
static int field(kvev_decoder *d, kvev_type t, size_t k, kvev_event *e)
{
    if (t == KVEV_BLOCK_REMOVED) {
        if (k == R_HASHES) return f_hashes(d, e);
        if (k == R_MEDIUM) return f_opt_str(d, "medium", &e->medium);
        return f_opt_int(d, "group_idx", &e->has_group_idx, &e->group_idx, true);
    }
    switch (k) {
    case F_HASHES: return f_hashes(d, e);
    case F_PARENT: return f_parent(d, e);
    case F_TOKENS: return f_tokens(d, e);
    case F_BLOCK_SIZE: return f_block_size(d, e);
    case F_LORA_ID: return f_opt_int(d, "lora_id", &e->has_lora_id, &e->lora_id, false);
    case F_MEDIUM: return f_opt_str(d, "medium", &e->medium);
    case F_LORA_NAME: return f_opt_str(d, "lora_name", &e->lora_name);
    case F_EXTRA_KEYS: return f_extra_keys(d, e);
    case F_GROUP_IDX: return f_opt_int(d, "group_idx", &e->has_group_idx, &e->group_idx, true);
    case F_SPEC_KIND: return f_opt_str(d, "kv_cache_spec_kind", &e->kv_cache_spec_kind);
    default:
        return f_opt_int(d, "kv_cache_spec_sliding_window", &e->has_sliding_window, &e->kv_cache_spec_sliding_window,
                         false);
    }
}

static int event_type(kvev_decoder *d, const mp_val *tag, kvev_type *t)
{
    if (tag->kind != MP_STR) return wrong_type(d, "event tag", tag, "str");
    for (int i = 0; i < KVEV_TYPE_COUNT; i++)
        if (mp_is_str(tag, TYPE_NAMES[i], strlen(TYPE_NAMES[i]))) {
            *t = (kvev_type)i;
            return KV_OK;
        }
    return fail(d, KVEV_ERR_UNKNOWN_EVENT, "event %zu: unknown event type \"%.*s\" at offset %zu", d->event,
                (int)(tag->v.b.n > 64 ? 64 : tag->v.b.n), (const char *)tag->v.b.p, tag->at);
}

/* Required fields: every BlockStored field up to block_size except the parent, and
 * BlockRemoved's hashes. */
static int check_required(kvev_decoder *d, kvev_type t, unsigned seen)
{
    static const unsigned need[KVEV_TYPE_COUNT] = {1u << F_HASHES | 1u << F_TOKENS | 1u << F_BLOCK_SIZE, 1u << R_HASHES, 0};
    unsigned missing = need[t] & ~seen;
    if (!missing) return KV_OK;
    int k = __builtin_ctz(missing);
    return fail(d, KVEV_ERR_MISSING_FIELD, "event %zu: %s is missing", d->event, FIELDS[t][k]);
}

static int event(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc) return rc;
    memset(e, 0, sizeof *e);
    unsigned seen = 0;
    if (v.kind == MP_ARRAY) {
        if (v.v.u == 0) return fail(d, KVEV_ERR_MISSING_FIELD, "event %zu: empty array at offset %zu, no tag", d->event, v.at);
        mp_val tag;
        if ((rc = mp_next(d, &tag)) || (rc = event_type(d, &tag, &e->type))) return rc;
        size_t n = (size_t)v.v.u - 1;
        for (size_t k = 0; k < n; k++) {
            if (k < N_FIELDS[e->type]) {
                if ((rc = field(d, e->type, k, e))) return rc;
                seen |= 1u << k;
            } else if ((rc = mp_skip(d))) {   /* fields of a newer vLLM */
                return rc;
            }
        }
        return check_required(d, e->type, seen);
    }
    if (v.kind != MP_MAP) return wrong_type(d, "event", &v, "array or map");
    /* Map: find "type" first (msgspec writes it first, so this is one key), then decode
     * every entry in one pass. */
    size_t start = d->off;
    bool found = false;
    for (uint64_t i = 0; i < v.v.u && !found; i++) {
        mp_val key;
        if ((rc = mp_next(d, &key))) return rc;
        if (mp_is_str(&key, "type", 4)) {
            mp_val tag;
            if ((rc = mp_next(d, &tag)) || (rc = event_type(d, &tag, &e->type))) return rc;
            found = true;
        } else if ((rc = mp_skip_rest(d, &key)) || (rc = mp_skip(d))) {
            return rc;
        }
    }
    if (!found) return fail(d, KVEV_ERR_MISSING_FIELD, "event %zu: map at offset %zu without a \"type\" key", d->event, v.at);
    d->off = start;
    for (uint64_t i = 0; i < v.v.u; i++) {
        mp_val key;
        if ((rc = mp_next(d, &key))) return rc;
        size_t k = N_FIELDS[e->type];
        if (key.kind == MP_STR)
            for (k = 0; k < N_FIELDS[e->type]; k++)
                if (mp_is_str(&key, FIELDS[e->type][k], strlen(FIELDS[e->type][k]))) break;
        if (k < N_FIELDS[e->type]) {
            if ((rc = field(d, e->type, k, e))) return rc;
            seen |= 1u << k;
        } else if ((rc = mp_skip_rest(d, &key)) || (rc = mp_skip(d))) {   /* "type" and unknown keys */
            return rc;
        }
    }
    return check_required(d, e->type, seen);
}

static int events(kvev_decoder *d, kvev_batch *out)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc) return rc;
    if (v.kind != MP_ARRAY) return fail(d, KVEV_ERR_TYPE, "batch events at offset %zu is %s, expected array", v.at, mp_kind_name(v.kind));
    size_t n = (size_t)v.v.u;
    if (n > d->ev_cap) {
        size_t cap = d->ev_cap ? d->ev_cap : 16;
        while (cap < n) cap *= 2;
        kvev_event *ev = realloc(d->ev, cap * sizeof *ev);
        if (!ev) return fail(d, KVEV_ERR_NOMEM, "out of memory for %zu events", n);
        d->ev = ev;
        d->ev_cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        d->event = i;
        if ((rc = event(d, &d->ev[i]))) return rc;
    }
    out->events = d->ev;
    out->n_events = n;
    return KV_OK;
}

static int ts_value(kvev_decoder *d, kvev_batch *out)
{
    mp_val v;
    int64_t i;
    int rc = mp_next(d, &v);
    if (rc) return rc;
    if (v.kind == MP_FLOAT) out->ts = v.v.f;
    else if (val_int(&v, &i)) out->ts = (double)i;
    else return fail(d, KVEV_ERR_TYPE, "batch ts at offset %zu is %s, expected float", v.at, mp_kind_name(v.kind));
    return KV_OK;
}

static int dp_value(kvev_decoder *d, kvev_batch *out)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc || v.kind == MP_NIL) return rc;
    if (!val_int(&v, &out->data_parallel_rank))
        return fail(d, KVEV_ERR_TYPE, "batch data_parallel_rank at offset %zu is %s, expected int", v.at,
                    mp_kind_name(v.kind));
    out->has_dp_rank = true;
    return KV_OK;
}

static int batch(kvev_decoder *d, kvev_batch *out)
{
    mp_val v;
    int rc = mp_next(d, &v);
    if (rc) return rc;
    memset(out, 0, sizeof *out);
    if (v.kind == MP_ARRAY) {
        if (v.v.u < 2)
            return fail(d, KVEV_ERR_MISSING_FIELD, "batch array has %llu elements, need ts and events",
                        (unsigned long long)v.v.u);
        if ((rc = ts_value(d, out)) || (rc = events(d, out))) return rc;
        if (v.v.u >= 3 && (rc = dp_value(d, out))) return rc;
        for (uint64_t i = 3; i < v.v.u; i++)
            if ((rc = mp_skip(d))) return rc;
        return KV_OK;
    }
    if (v.kind != MP_MAP) return fail(d, KVEV_ERR_TYPE, "batch is %s, expected array or map", mp_kind_name(v.kind));
    bool have_events = false;
    for (uint64_t i = 0; i < v.v.u; i++) {
        mp_val key;
        if ((rc = mp_next(d, &key))) return rc;
        if (mp_is_str(&key, "ts", 2)) rc = ts_value(d, out);
        else if (mp_is_str(&key, "events", 6)) rc = events(d, out), have_events = true;
        else if (mp_is_str(&key, "data_parallel_rank", 18)) rc = dp_value(d, out);
        else if (!(rc = mp_skip_rest(d, &key))) rc = mp_skip(d);
        if (rc) return rc;
    }
    if (!have_events) return fail(d, KVEV_ERR_MISSING_FIELD, "batch map without \"events\"");
    return KV_OK;
}

static int decode_batch(kvev_decoder *d, const void *payload, size_t len, kvev_batch *out)
{
    if (len > d->max_payload)
        return fail(d, KVEV_ERR_LENGTH, "payload of %zu bytes exceeds the limit of %zu", len, d->max_payload);
    if (len == 0) return fail(d, KVEV_ERR_TRUNCATED, "empty payload");
    d->p = payload;
    d->len = len;
    d->off = 0;
    d->event = 0;
    int rc = batch(d, out);
    if (rc) return rc;
    if (d->off != len) return fail(d, KVEV_ERR_TRAILING, "%zu bytes after the batch at offset %zu", len - d->off, d->off);
    d->stats.batches++;
    for (size_t i = 0; i < out->n_events; i++) d->stats.events[out->events[i].type]++;
    return KV_OK;
}

int kvev_decode_batch(kvev_decoder *d, const void *payload, size_t len, kvev_batch *out, kv_err *err)
{
    d->err = err;
    arena_reset(&d->ar);
    return decode_batch(d, payload, len, out);
}

bool kvev_topic_parse(const char *topic, size_t len, kvev_topic *out)
{
    const char *a = memchr(topic, '@', len);
    const char *b = a ? memchr(a + 1, '@', len - (size_t)(a + 1 - topic)) : NULL;
    bool ok = b && !memchr(b + 1, '@', len - (size_t)(b + 1 - topic)) && a - topic == 2 && memcmp(topic, "kv", 2) == 0;
    if (!ok) {
        out->pod = (kvev_str){topic, len};
        out->model = (kvev_str){"", 0};
        return false;
    }
    out->pod = (kvev_str){a + 1, (size_t)(b - a - 1)};
    out->model = (kvev_str){b + 1, len - (size_t)(b + 1 - topic)};
    return true;
}

int kvev_seq_parse(const void *frame, size_t len, uint64_t *seq, kv_err *err)
{
    if (len < 8) return kv_err_set(err, KV_EPARSE, "kvevents: bad_seq: seq frame has %zu bytes, need 8", len);
    *seq = be_read(frame, 8);
    return KV_OK;
}

static int arena_str(kvev_decoder *d, kvev_str in, kvev_str *out)
{
    char *s = arena_alloc(&d->ar, in.len + 1);
    if (!s) return fail(d, KVEV_ERR_NOMEM, "out of memory for the topic");
    memcpy(s, in.s, in.len);
    s[in.len] = 0;
    *out = (kvev_str){s, in.len};
    return KV_OK;
}

int kvev_decode_message(kvev_decoder *d, const void *topic, size_t topic_len, const void *seq, size_t seq_len,
                        const void *payload, size_t payload_len, kvev_message *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    d->err = err;
    arena_reset(&d->ar);
    kvev_topic t;
    if (!kvev_topic_parse(topic, topic_len, &t))
        return fail(d, KVEV_ERR_TOPIC, "topic \"%.*s\" is not kv@<pod>@<model>", (int)(topic_len > 128 ? 128 : topic_len),
                    (const char *)topic);
    if (seq_len < 8) return fail(d, KVEV_ERR_SEQ, "seq frame has %zu bytes, need 8", seq_len);
    out->seq = be_read(seq, 8);
    int rc;
    if ((rc = arena_str(d, t.pod, &out->pod)) || (rc = arena_str(d, t.model, &out->model))) return rc;
    return decode_batch(d, payload, payload_len, &out->batch);
}

/* --- encoder ---------------------------------------------------------------------- */

void kvev_buf_free(kvev_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

typedef struct enc {
    msgpack_packer pk;
    kvev_buf *buf;
    bool oom;       /* msgpack-c's pack calls report write errors we would have to check at
                       every call site; the writer records it once instead */
    bool map;       /* events as maps */
} enc;

/* Room for n more bytes at the end of x's buffer, or NULL (and x->oom) without it. */
static uint8_t *buf_reserve(enc *x, size_t n)
{
    kvev_buf *b = x->buf;
    if (x->oom) return NULL;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) cap *= 2;
        uint8_t *nd = realloc(b->data, cap);
        if (!nd) {
            x->oom = true;
            return NULL;
        }
        b->data = nd;
        b->cap = cap;
    }
    return b->data + b->len;
}

static int buf_write(void *data, const char *p, size_t n)
{
    enc *x = data;
    uint8_t *d = buf_reserve(x, n);
    if (!d) return -1;
    memcpy(d, p, n);
    x->buf->len += n;
    return 0;
}

/* v in msgpack-c's smallest unsigned form (what msgpack_pack_uint32/64 write), with
 * room for 9 bytes at p; returns the bytes written. Branch-free: token ids mix widths
 * at random, and a mispredicted width cost more than the store. */
static size_t put_uint(uint8_t *p, uint64_t v)
{
    static const uint8_t tag[5] = {0, 0xcc, 0xcd, 0xce, 0xcf}, width[5] = {0, 1, 2, 4, 8},
                         shift[5] = {0, 56, 48, 32, 0};
    unsigned cls = (v >= 0x80) + (v >= 0x100) + (v >= 0x10000) + (v > UINT32_MAX);
    uint64_t be = v << shift[cls];
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    be = __builtin_bswap64(be);
#endif
    p[0] = cls ? tag[cls] : (uint8_t)v;
    memcpy(p + 1, &be, 8);   /* a fixint's other 8 bytes are overwritten by what follows */
    return 1u + width[cls];
}

/* An array of unsigned integers, written straight into the buffer: token ids and block
 * hashes are most of a payload, and the packer's callback cost a call per integer. */
static void pack_uint_array(msgpack_packer *pk, const uint32_t *v32, const uint64_t *v64, size_t n)
{
    enc *x = pk->data;
    msgpack_pack_array(pk, n);
    uint8_t *d = buf_reserve(x, n * 9);
    if (!d) return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += put_uint(d + k, v32 ? v32[i] : v64[i]);
    x->buf->len += k;
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_str(msgpack_packer *pk, kvev_str s)
{
    if (!s.s) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_str(pk, s.len);
    msgpack_pack_str_body(pk, s.s, s.len);
}

static void pack_opt_int(msgpack_packer *pk, bool has, int64_t v)
{
    if (has) msgpack_pack_int64(pk, v);
    else msgpack_pack_nil(pk);
}

static void pack_hashes(msgpack_packer *pk, const uint64_t *h, size_t n)
{
    pack_uint_array(pk, NULL, h, n);
}

static int pack_extra_keys(msgpack_packer *pk, const kvev_event *e, kv_err *err, size_t ev)
{
    if (!e->has_extra_keys) {
        msgpack_pack_nil(pk);
        return KV_OK;
    }
    msgpack_pack_array(pk, e->n_extra_keys);
    for (size_t b = 0; b < e->n_extra_keys; b++) {
        const kvev_block_extra *bx = &e->extra_keys[b];
        if (bx->none) {
            msgpack_pack_nil(pk);
            continue;
        }
        msgpack_pack_array(pk, bx->n_items);
        for (size_t i = 0; i < bx->n_items; i++) {
            const kvev_extra_item *it = &bx->items[i];
            if (it->kind == KVEV_EXTRA_OTHER || !it->id.s)
                return kv_err_set(err, KV_EINVAL, "kvevents: event %zu: extra_keys[%zu][%zu] cannot be encoded", ev, b, i);
            if (it->kind == KVEV_EXTRA_PAIR) {
                msgpack_pack_array(pk, 2);
                pack_str(pk, it->id);
                msgpack_pack_int64(pk, it->offset);
            } else {
                pack_str(pk, it->id);
            }
        }
    }
    return KV_OK;
}

/* Packs field k of event e (the field tables above give the names and order). */
static int pack_field(msgpack_packer *pk, const kvev_event *e, size_t k, kv_err *err, size_t ev)
{
    if (e->type == KVEV_BLOCK_REMOVED) {
        if (k == R_HASHES) pack_hashes(pk, e->block_hashes, e->n_block_hashes);
        else if (k == R_MEDIUM) pack_str(pk, e->medium);
        else pack_opt_int(pk, e->has_group_idx, e->group_idx);
        return KV_OK;
    }
    switch (k) {
    case F_HASHES: pack_hashes(pk, e->block_hashes, e->n_block_hashes); break;
    case F_PARENT:
        if (e->has_parent) msgpack_pack_uint64(pk, e->parent_block_hash);
        else msgpack_pack_nil(pk);
        break;
    case F_TOKENS:
        pack_uint_array(pk, e->token_ids, NULL, e->n_token_ids);
        break;
    case F_BLOCK_SIZE: msgpack_pack_uint32(pk, e->block_size); break;
    case F_LORA_ID: pack_opt_int(pk, e->has_lora_id, e->lora_id); break;
    case F_MEDIUM: pack_str(pk, e->medium); break;
    case F_LORA_NAME: pack_str(pk, e->lora_name); break;
    case F_EXTRA_KEYS: return pack_extra_keys(pk, e, err, ev);
    case F_GROUP_IDX: pack_opt_int(pk, e->has_group_idx, e->group_idx); break;
    case F_SPEC_KIND: pack_str(pk, e->kv_cache_spec_kind); break;
    default: pack_opt_int(pk, e->has_sliding_window, e->kv_cache_spec_sliding_window); break;
    }
    return KV_OK;
}

/* msgspec's omit_defaults: the fields with a default (None) are the trailing optional
 * ones: BlockStored extra_keys.., BlockRemoved group_idx. Everything before is always sent. */
static bool field_present(const kvev_event *e, size_t k)
{
    if (e->type == KVEV_BLOCK_REMOVED) return k != R_GROUP_IDX || e->has_group_idx;
    switch (k) {
    case F_EXTRA_KEYS: return e->has_extra_keys;
    case F_GROUP_IDX: return e->has_group_idx;
    case F_SPEC_KIND: return e->kv_cache_spec_kind.s != NULL;
    case F_SLIDING_WINDOW: return e->has_sliding_window;
    default: return true;
    }
}

static int pack_event(enc *x, const kvev_event *e, size_t ev, kv_err *err)
{
    msgpack_packer *pk = &x->pk;
    if ((unsigned)e->type >= KVEV_TYPE_COUNT) return kv_err_set(err, KV_EINVAL, "kvevents: event %zu: bad type %d", ev, (int)e->type);
    if ((e->n_block_hashes && !e->block_hashes) || (e->n_token_ids && !e->token_ids) ||
        (e->n_extra_keys && !e->extra_keys))
        return kv_err_set(err, KV_EINVAL, "kvevents: event %zu: a count without its array", ev);
    size_t nf = N_FIELDS[e->type], n = 0;
    for (size_t k = 0; k < nf; k++) n += field_present(e, k);
    size_t last = 0;   /* positional: fields up to the last present one */
    for (size_t k = 0; k < nf; k++)
        if (field_present(e, k)) last = k + 1;
    if (x->map) msgpack_pack_map(pk, n + 1);
    else msgpack_pack_array(pk, last + 1);
    if (x->map) pack_cstr(pk, "type");
    pack_cstr(pk, TYPE_NAMES[e->type]);
    for (size_t k = 0; k < (x->map ? nf : last); k++) {
        if (x->map && !field_present(e, k)) continue;
        if (x->map) pack_cstr(pk, FIELDS[e->type][k]);
        int rc = pack_field(pk, e, k, err, ev);
        if (rc) return rc;
    }
    return KV_OK;
}

int kvev_encode(const kvev_batch *b, kvev_encoding encoding, kvev_buf *out, kv_err *err)
{
    if (b->n_events && !b->events) return kv_err_set(err, KV_EINVAL, "kvevents: batch has a count without events");
    enc x = {.buf = out, .map = encoding != KVEV_ENC_ARRAY};
    out->len = 0;
    msgpack_packer_init(&x.pk, &x, buf_write);
    if (encoding == KVEV_ENC_MAP_ALL) {
        msgpack_pack_map(&x.pk, b->has_dp_rank ? 3 : 2);
        pack_cstr(&x.pk, "ts");
    } else {
        msgpack_pack_array(&x.pk, b->has_dp_rank ? 3 : 2);
    }
    msgpack_pack_double(&x.pk, b->ts);
    if (encoding == KVEV_ENC_MAP_ALL) pack_cstr(&x.pk, "events");
    msgpack_pack_array(&x.pk, b->n_events);
    for (size_t i = 0; i < b->n_events; i++) {
        int rc = pack_event(&x, &b->events[i], i, err);
        if (rc) return rc;
    }
    if (b->has_dp_rank) {
        if (encoding == KVEV_ENC_MAP_ALL) pack_cstr(&x.pk, "data_parallel_rank");
        msgpack_pack_int64(&x.pk, b->data_parallel_rank);
    }
    if (x.oom) return kv_err_set(err, KV_ENOMEM, "kvevents: out of memory encoding a batch");
    return KV_OK;
}
