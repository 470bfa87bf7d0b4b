/* kvevents: vLLM KVEventBatch payloads <-> kvev_* structs.
 *
 * Decoding is one pass of a bounds-checked msgpack cursor straight into kvev_event
 * structs. msgpack-c's object-tree unpack was measured at 13 ns per object here, i.e.
 * ~860 ns per 64-token block against a whole-pipeline budget of 330 ns (3 M blocks/s),
 * and it sizes a container's element array from the header before reading the elements,
 * so a 5-byte header could demand gigabytes. The cursor instead rejects any container declaring more
 * elements than bytes remain. Decoded data lives in a chunked arena (engine/arena: chunks never move, so
 * pointers stay valid while later events are appended) reset by the next call.
 *
 * Token ids are nearly all of a BlockStored's bytes and get their own decoders, in
 * kvevents_tokens.c; the encoder (msgpack-c's packer, for the simulator and tests) is
 * kvevents_encode.c, so a program that only decodes links no msgpack-c. */
#include "kvevents.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvevents_impl.h"

#define DEFAULT_MAX_PAYLOAD (16u << 20)

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

/* --- msgpack cursor ---------------------------------------------------------------- */


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

int kvev_fail(kvev_decoder *d, kvev_reason r, const char *fmt, ...)
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
    return kvev_fail(d, r, "%s at offset %zu declares %llu %s, %zu bytes remain", what, at, (unsigned long long)want, unit,
                have);
}

/* Reads one value head at the cursor. A container's elements each need at least one
 * byte, so a count larger than the bytes left is rejected before anything is sized
 * from it. */
int kvev_mp_next(kvev_decoder *d, mp_val *v)
{
    size_t at = d->off;
    if (at >= d->len) return kvev_fail(d, KVEV_ERR_TRUNCATED, "payload ends at byte %zu, a value is missing", at);
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
    default: return kvev_fail(d, KVEV_ERR_TYPE, "byte 0x%02x at offset %zu is not a msgpack type", t, at);
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
        int rc = kvev_mp_next(d, &x);
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
    int rc = kvev_mp_next(d, &v);
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

static const char *const STORED_FIELDS[F_COUNT] = {
    "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name",
    "extra_keys", "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window",
};
static const char *const REMOVED_FIELDS[R_COUNT] = {"block_hashes", "medium", "group_idx"};

const char *const *const kvev_fields[KVEV_TYPE_COUNT] = {STORED_FIELDS, REMOVED_FIELDS, NULL};
const size_t kvev_n_fields[KVEV_TYPE_COUNT] = {F_COUNT, R_COUNT, 0};

int kvev_wrong_type(kvev_decoder *d, const char *field, const mp_val *v, const char *want)
{
    return kvev_fail(d, KVEV_ERR_TYPE, "event %zu: %s at offset %zu is %s, expected %s", d->event, field, v->at,
                mp_kind_name(v->kind), want);
}

int kvev_out_of_memory(kvev_decoder *d)
{
    return kvev_fail(d, KVEV_ERR_NOMEM, "event %zu: out of memory at offset %zu", d->event, d->off);
}

int kvev_array_field(kvev_decoder *d, const char *field, size_t elem, size_t *n, void **out)
{
    mp_val v;
    int rc = kvev_mp_next(d, &v);
    if (rc) return rc;
    if (v.kind != MP_ARRAY) return kvev_wrong_type(d, field, &v, "array");
    *n = (size_t)v.v.u;   /* the cursor bounds it by the bytes left, so n * elem cannot overflow */
    *out = arena_alloc(&d->ar, *n * elem);
    return *out || !*n ? KV_OK : kvev_out_of_memory(d);
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
    if (!s) return kvev_out_of_memory(d);
    memcpy(s, v->v.b.p, v->v.b.n);
    s[v->v.b.n] = 0;
    out->s = s;
    out->len = v->v.b.n;
    return KV_OK;
}

static int f_opt_str(kvev_decoder *d, const char *field, kvev_str *out)
{
    mp_val v;
    int rc = kvev_mp_next(d, &v);
    if (rc) return rc;
    if (v.kind == MP_NIL) return KV_OK;
    if (v.kind != MP_STR) return kvev_wrong_type(d, field, &v, "str or nil");
    return copy_str(d, &v, out);
}

static int f_opt_int(kvev_decoder *d, const char *field, bool *has, int64_t *out, bool non_negative)
{
    mp_val v;
    int rc = kvev_mp_next(d, &v);
    if (rc) return rc;
    if (v.kind == MP_NIL) return KV_OK;
    if (!val_int(&v, out)) return kvev_wrong_type(d, field, &v, "int or nil");
    if (non_negative && *out < 0)
        return kvev_fail(d, KVEV_ERR_TYPE, "event %zu: %s at offset %zu is negative (%lld)", d->event, field, v.at,
                    (long long)*out);
    *has = true;
    return KV_OK;
}

static int f_hashes(kvev_decoder *d, kvev_event *e)
{
    size_t n;
    uint64_t *h;
    int rc = kvev_array_field(d, "block_hashes", sizeof *h, &n, (void **)&h);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        mp_val x;
        if ((rc = kvev_mp_next(d, &x))) return rc;
        if (!val_hash(&x, &h[i]))
            return kvev_fail(d, KVEV_ERR_TYPE, "event %zu: block_hashes[%zu] at offset %zu is %s, expected int or bytes",
                        d->event, i, x.at, mp_kind_name(x.kind));
    }
    e->block_hashes = h;
    e->n_block_hashes = n;
    return KV_OK;
}

static int f_parent(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = kvev_mp_next(d, &v);
    if (rc || v.kind == MP_NIL) return rc;
    if (!val_hash(&v, &e->parent_block_hash)) return kvev_wrong_type(d, "parent_block_hash", &v, "int, bytes or nil");
    e->has_parent = true;
    return KV_OK;
}

static int f_block_size(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = kvev_mp_next(d, &v);
    if (rc) return rc;
    if (v.kind != MP_UINT || v.v.u > UINT32_MAX) return kvev_wrong_type(d, "block_size", &v, "an integer in [0, 2^32)");
    e->block_size = (uint32_t)v.v.u;
    return KV_OK;
}

/* extra_keys: None, or per engine block None | tuple of items; llm-d keeps strings and
 * the identifier of any [str, ...]. */
static int f_extra_keys(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = kvev_mp_next(d, &v);
    if (rc || v.kind == MP_NIL) return rc;
    if (v.kind != MP_ARRAY) return kvev_wrong_type(d, "extra_keys", &v, "array or nil");
    size_t m = (size_t)v.v.u;
    kvev_block_extra *bx = arena_alloc(&d->ar, m * sizeof *bx);
    if (!bx && m) return kvev_out_of_memory(d);
    for (size_t b = 0; b < m; b++) {
        mp_val blk;
        memset(&bx[b], 0, sizeof bx[b]);
        if ((rc = kvev_mp_next(d, &blk))) return rc;
        if (blk.kind == MP_NIL) {
            bx[b].none = true;
            continue;
        }
        if (blk.kind != MP_ARRAY)
            return kvev_fail(d, KVEV_ERR_TYPE, "event %zu: extra_keys[%zu] at offset %zu is %s, expected array or nil",
                        d->event, b, blk.at, mp_kind_name(blk.kind));
        size_t k = (size_t)blk.v.u;
        kvev_extra_item *it = arena_alloc(&d->ar, k * sizeof *it);
        if (!it && k) return kvev_out_of_memory(d);
        for (size_t i = 0; i < k; i++) {
            mp_val x;
            memset(&it[i], 0, sizeof it[i]);
            it[i].kind = KVEV_EXTRA_OTHER;
            if ((rc = kvev_mp_next(d, &x))) return rc;
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
            if ((rc = kvev_mp_next(d, &id))) return rc;
            uint64_t rest = x.v.u - 1;
            if (id.kind == MP_STR) {
                it[i].kind = KVEV_EXTRA_PAIR;
                if ((rc = copy_str(d, &id, &it[i].id))) return rc;
                if (rest) {
                    mp_val off;
                    if ((rc = kvev_mp_next(d, &off))) return rc;
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
    case F_TOKENS: return kvev_tokens_field(d, e);
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
    if (tag->kind != MP_STR) return kvev_wrong_type(d, "event tag", tag, "str");
    for (int i = 0; i < KVEV_TYPE_COUNT; i++)
        if (mp_is_str(tag, TYPE_NAMES[i], strlen(TYPE_NAMES[i]))) {
            *t = (kvev_type)i;
            return KV_OK;
        }
    return kvev_fail(d, KVEV_ERR_UNKNOWN_EVENT, "event %zu: unknown event type \"%.*s\" at offset %zu", d->event,
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
    return kvev_fail(d, KVEV_ERR_MISSING_FIELD, "event %zu: %s is missing", d->event, kvev_fields[t][k]);
}

static int event(kvev_decoder *d, kvev_event *e)
{
    mp_val v;
    int rc = kvev_mp_next(d, &v);
    if (rc) return rc;
    memset(e, 0, sizeof *e);
    unsigned seen = 0;
    if (v.kind == MP_ARRAY) {
        if (v.v.u == 0) return kvev_fail(d, KVEV_ERR_MISSING_FIELD, "event %zu: empty array at offset %zu, no tag", d->event, v.at);
        mp_val tag;
        if ((rc = kvev_mp_next(d, &tag)) || (rc = event_type(d, &tag, &e->type))) return rc;
        size_t n = (size_t)v.v.u - 1;
        for (size_t k = 0; k < n; k++) {
            if (k < kvev_n_fields[e->type]) {
                if ((rc = field(d, e->type, k, e))) return rc;
                seen |= 1u << k;
            } else if ((rc = mp_skip(d))) {   /* fields of a newer vLLM */
                return rc;
            }
        }
        return check_required(d, e->type, seen);
    }
    if (v.kind != MP_MAP) return kvev_wrong_type(d, "event", &v, "array or map");
    /* Map: find "type" first (msgspec writes it first, so this is one key), then decode
     * every entry in one pass. */
    size_t start = d->off;
    bool found = false;
    for (uint64_t i = 0; i < v.v.u && !found; i++) {
        mp_val key;
        if ((rc = kvev_mp_next(d, &key))) return rc;
        if (mp_is_str(&key, "type", 4)) {
            mp_val tag;
            if ((rc = kvev_mp_next(d, &tag)) || (rc = event_type(d, &tag, &e->type))) return rc;
            found = true;
        } else if ((rc = mp_skip_rest(d, &key)) || (rc = mp_skip(d))) {
            return rc;
        }
    }
    if (!found) return kvev_fail(d, KVEV_ERR_MISSING_FIELD, "event %zu: map at offset %zu without a \"type\" key", d->event, v.at);
    d->off = start;
    for (uint64_t i = 0; i < v.v.u; i++) {
        mp_val key;
        if ((rc = kvev_mp_next(d, &key))) return rc;
        size_t k = kvev_n_fields[e->type];
        if (key.kind == MP_STR)
            for (k = 0; k < kvev_n_fields[e->type]; k++)
                if (mp_is_str(&key, kvev_fields[e->type][k], strlen(kvev_fields[e->type][k]))) break;
        if (k < kvev_n_fields[e->type]) {
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
    int rc = kvev_mp_next(d, &v);
    if (rc) return rc;
    if (v.kind != MP_ARRAY) return kvev_fail(d, KVEV_ERR_TYPE, "batch events at offset %zu is %s, expected array", v.at, mp_kind_name(v.kind));
    size_t n = (size_t)v.v.u;
    if (n > d->ev_cap) {
        size_t cap = d->ev_cap ? d->ev_cap : 16;
        while (cap < n) cap *= 2;
        kvev_event *ev = realloc(d->ev, cap * sizeof *ev);
        if (!ev) return kvev_fail(d, KVEV_ERR_NOMEM, "out of memory for %zu events", n);
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
    int rc = kvev_mp_next(d, &v);
    if (rc) return rc;
    if (v.kind == MP_FLOAT) out->ts = v.v.f;
    else if (val_int(&v, &i)) out->ts = (double)i;
    else return kvev_fail(d, KVEV_ERR_TYPE, "batch ts at offset %zu is %s, expected float", v.at, mp_kind_name(v.kind));
    return KV_OK;
}

static int dp_value(kvev_decoder *d, kvev_batch *out)
{
    mp_val v;
    int rc = kvev_mp_next(d, &v);
    if (rc || v.kind == MP_NIL) return rc;
    if (!val_int(&v, &out->data_parallel_rank))
        return kvev_fail(d, KVEV_ERR_TYPE, "batch data_parallel_rank at offset %zu is %s, expected int", v.at,
                    mp_kind_name(v.kind));
    out->has_dp_rank = true;
    return KV_OK;
}

static int batch(kvev_decoder *d, kvev_batch *out)
{
    mp_val v;
    int rc = kvev_mp_next(d, &v);
    if (rc) return rc;
    memset(out, 0, sizeof *out);
    if (v.kind == MP_ARRAY) {
        if (v.v.u < 2)
            return kvev_fail(d, KVEV_ERR_MISSING_FIELD, "batch array has %llu elements, need ts and events",
                        (unsigned long long)v.v.u);
        if ((rc = ts_value(d, out)) || (rc = events(d, out))) return rc;
        if (v.v.u >= 3 && (rc = dp_value(d, out))) return rc;
        for (uint64_t i = 3; i < v.v.u; i++)
            if ((rc = mp_skip(d))) return rc;
        return KV_OK;
    }
    if (v.kind != MP_MAP) return kvev_fail(d, KVEV_ERR_TYPE, "batch is %s, expected array or map", mp_kind_name(v.kind));
    bool have_events = false;
    for (uint64_t i = 0; i < v.v.u; i++) {
        mp_val key;
        if ((rc = kvev_mp_next(d, &key))) return rc;
        if (mp_is_str(&key, "ts", 2)) rc = ts_value(d, out);
        else if (mp_is_str(&key, "events", 6)) rc = events(d, out), have_events = true;
        else if (mp_is_str(&key, "data_parallel_rank", 18)) rc = dp_value(d, out);
        else if (!(rc = mp_skip_rest(d, &key))) rc = mp_skip(d);
        if (rc) return rc;
    }
    if (!have_events) return kvev_fail(d, KVEV_ERR_MISSING_FIELD, "batch map without \"events\"");
    return KV_OK;
}

static int decode_batch(kvev_decoder *d, const void *payload, size_t len, kvev_batch *out)
{
    if (len > d->max_payload)
        return kvev_fail(d, KVEV_ERR_LENGTH, "payload of %zu bytes exceeds the limit of %zu", len, d->max_payload);
    if (len == 0) return kvev_fail(d, KVEV_ERR_TRUNCATED, "empty payload");
    d->p = payload;
    d->len = len;
    d->off = 0;
    d->event = 0;
    int rc = batch(d, out);
    if (rc) return rc;
    if (d->off != len) return kvev_fail(d, KVEV_ERR_TRAILING, "%zu bytes after the batch at offset %zu", len - d->off, d->off);
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

static int dup_str(kvev_decoder *d, kvev_str in, kvev_str *out)
{
    char *s = arena_alloc(&d->ar, in.len + 1);
    if (!s) return kvev_fail(d, KVEV_ERR_NOMEM, "out of memory for the topic");
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
        return kvev_fail(d, KVEV_ERR_TOPIC, "topic \"%.*s\" is not kv@<pod>@<model>", (int)(topic_len > 128 ? 128 : topic_len),
                    (const char *)topic);
    if (seq_len < 8) return kvev_fail(d, KVEV_ERR_SEQ, "seq frame has %zu bytes, need 8", seq_len);
    out->seq = be_read(seq, 8);
    int rc;
    if ((rc = dup_str(d, t.pod, &out->pod)) || (rc = dup_str(d, t.model, &out->model))) return rc;
    return decode_batch(d, payload, payload_len, &out->batch);
}
