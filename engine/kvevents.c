/* kvevents: vLLM KVEventBatch payloads <-> kvev_* structs, with msgpack-c.
 *
 * Decoding is three steps:
 *   1. a structural scan of the raw bytes: bounds, nesting depth, trailing bytes, and
 *      the rule that every declared container element needs at least one input byte.
 *      msgpack-c allocates a container's element array from its header before it reads
 *      the elements, so a 5-byte header could otherwise demand gigabytes; after the scan
 *      the object tree is at most (payload bytes) objects, and we size the zone from it.
 *   2. msgpack_unpack into a reused zone.
 *   3. a walk of the object tree into kvev_event structs in a chunked arena (chunks never
 *      move, so pointers stay valid while later events are appended).
 * The encoder writes through msgpack_packer into a kvev_buf. */
#include "kvevents.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16               /* nested containers; vLLM needs 5 */
#define DEFAULT_MAX_PAYLOAD (64u << 20)
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

/* --- decoder ---------------------------------------------------------------------- */

struct kvev_decoder {
    size_t max_payload;
    msgpack_zone zone;
    size_t zone_chunk;
    arena ar;
    kvev_stats stats;
    kvev_reason last;
};

kvev_decoder *kvev_decoder_new(size_t max_payload, kv_err *err)
{
    kvev_decoder *d = calloc(1, sizeof *d);
    if (!d) {
        kv_err_set(err, KV_ENOMEM, "kvevents: out of memory");
        return NULL;
    }
    d->max_payload = max_payload ? max_payload : DEFAULT_MAX_PAYLOAD;
    d->zone_chunk = ARENA_MIN_CHUNK;
    if (!msgpack_zone_init(&d->zone, d->zone_chunk)) {
        free(d);
        kv_err_set(err, KV_ENOMEM, "kvevents: out of memory");
        return NULL;
    }
    return d;
}

void kvev_decoder_free(kvev_decoder *d)
{
    if (!d) return;
    msgpack_zone_destroy(&d->zone);
    arena_free(&d->ar);
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

static int fail(kvev_decoder *d, kv_err *err, kvev_reason r, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(kvev_decoder *d, kv_err *err, kvev_reason r, const char *fmt, ...)
{
    d->last = r;
    d->stats.errors[r]++;
    int code = r == KVEV_ERR_NOMEM ? KV_ENOMEM : r == KVEV_ERR_LENGTH ? KV_ERANGE : KV_EPARSE;
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        int n = snprintf(err->msg, sizeof err->msg, "kvevents: %s: ", REASON_NAMES[r]);
        vsnprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

static uint64_t be_read(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Step 1: structural scan. On success *n_objects is the number of container elements
 * (map entries count twice), which bounds msgpack-c's zone use. */
static int scan(kvev_decoder *d, const uint8_t *p, size_t len, size_t *n_objects, kv_err *err)
{
    uint64_t left[MAX_DEPTH + 1];   /* values still to read at each open level */
    uint64_t pending = 1;           /* sum of left[] */
    int depth = 0;
    size_t off = 0, objects = 0;
    left[0] = 1;
    while (depth >= 0) {
        if (left[depth] == 0) {
            depth--;
            continue;
        }
        left[depth]--;
        pending--;
        if (off >= len) return fail(d, err, KVEV_ERR_TRUNCATED, "payload ends at byte %zu, a value is missing", off);
        uint8_t t = p[off];
        size_t lenbytes = 0, fixed = 0;   /* size of the length field; fixed payload */
        int kind = 0;                     /* 0 scalar/blob, 1 array, 2 map */
        uint64_t n = 0;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        } else if (t <= 0x8f) {
            kind = 2, n = t & 0x0f;
        } else if (t <= 0x9f) {
            kind = 1, n = t & 0x0f;
        } else if (t <= 0xbf) {
            n = t & 0x1f;
        } else {
            switch (t) {
            case 0xc4: case 0xd9: lenbytes = 1; break;
            case 0xc5: case 0xda: lenbytes = 2; break;
            case 0xc6: case 0xdb: lenbytes = 4; break;
            case 0xc7: lenbytes = 1, fixed = 1; break;
            case 0xc8: lenbytes = 2, fixed = 1; break;
            case 0xc9: lenbytes = 4, fixed = 1; break;
            case 0xca: fixed = 4; break;
            case 0xcb: fixed = 8; break;
            case 0xcc: case 0xd0: fixed = 1; break;
            case 0xcd: case 0xd1: fixed = 2; break;
            case 0xce: case 0xd2: fixed = 4; break;
            case 0xcf: case 0xd3: fixed = 8; break;
            case 0xd4: fixed = 2; break;
            case 0xd5: fixed = 3; break;
            case 0xd6: fixed = 5; break;
            case 0xd7: fixed = 9; break;
            case 0xd8: fixed = 17; break;
            case 0xdc: kind = 1, lenbytes = 2; break;
            case 0xdd: kind = 1, lenbytes = 4; break;
            case 0xde: kind = 2, lenbytes = 2; break;
            case 0xdf: kind = 2, lenbytes = 4; break;
            default: return fail(d, err, KVEV_ERR_TYPE, "byte 0x%02x at offset %zu is not a msgpack type", t, off);
            }
        }
        if (len - off - 1 < lenbytes)
            return fail(d, err, KVEV_ERR_TRUNCATED, "payload ends inside the header at offset %zu", off);
        if (lenbytes) n = be_read(p + off + 1, lenbytes);
        size_t after = off + 1 + lenbytes;
        if (kind == 0) {
            uint64_t body = n + fixed;
            if (body > len - after) {
                kvev_reason r = body > d->max_payload ? KVEV_ERR_LENGTH : KVEV_ERR_TRUNCATED;
                return fail(d, err, r, "value at offset %zu declares %llu bytes, %zu remain", off,
                            (unsigned long long)body, len - after);
            }
            off = after + (size_t)body;
            continue;
        }
        uint64_t elems = kind == 2 ? 2 * n : n;
        /* every pending value needs at least one byte */
        if (elems + pending > len - after) {
            kvev_reason r = elems > d->max_payload ? KVEV_ERR_LENGTH : KVEV_ERR_TRUNCATED;
            return fail(d, err, r, "%s at offset %zu declares %llu elements, %zu bytes remain",
                        kind == 2 ? "map" : "array", off, (unsigned long long)n, len - after);
        }
        if (depth == MAX_DEPTH)
            return fail(d, err, KVEV_ERR_LENGTH, "containers nested deeper than %d at offset %zu", MAX_DEPTH, off);
        left[++depth] = elems;
        pending += elems;
        objects += (size_t)elems;
        off = after;
    }
    if (off != len) return fail(d, err, KVEV_ERR_TRAILING, "%zu bytes after the batch at offset %zu", len - off, off);
    *n_objects = objects;
    return KV_OK;
}

/* --- object tree -> structs ---------------------------------------------------------- */

typedef struct walk {
    kvev_decoder *d;
    kv_err *err;
    size_t ev;          /* event index, for messages */
} walk;

static bool obj_is_str(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

static const char *obj_type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
    case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    default: return "ext";
    }
}

static int wrong_type(walk *w, const char *field, const msgpack_object *o, const char *want)
{
    return fail(w->d, w->err, KVEV_ERR_TYPE, "event %zu: %s is %s, expected %s", w->ev, field, obj_type_name(o), want);
}

static bool obj_int(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *v = (int64_t)o->via.u64;
        return true;
    }
    return false;
}

/* llm-d's getHashAsUint64: uint64, int64 (two's complement), or bytes (the last 8 read
 * big-endian; fewer are left-padded with zeros). */
static bool obj_hash(const msgpack_object *o, uint64_t *v)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *v = o->via.u64; return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *v = (uint64_t)o->via.i64; return true;
    case MSGPACK_OBJECT_BIN: {
        uint32_t n = o->via.bin.size;
        const uint8_t *b = (const uint8_t *)o->via.bin.ptr;
        *v = n > 8 ? be_read(b + n - 8, 8) : be_read(b, n);
        return true;
    }
    default: return false;
    }
}

static int copy_str(walk *w, const msgpack_object *o, kvev_str *out)
{
    char *s = arena_alloc(&w->d->ar, o->via.str.size + 1);
    if (!s) return fail(w->d, w->err, KVEV_ERR_NOMEM, "event %zu: out of memory", w->ev);
    memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = 0;
    out->s = s;
    out->len = o->via.str.size;
    return KV_OK;
}

/* nil/absent -> s NULL; str -> copied; else a type error. */
static int opt_str(walk *w, const char *field, const msgpack_object *o, kvev_str *out)
{
    out->s = NULL;
    out->len = 0;
    if (!o || o->type == MSGPACK_OBJECT_NIL) return KV_OK;
    if (o->type != MSGPACK_OBJECT_STR) return wrong_type(w, field, o, "str or nil");
    return copy_str(w, o, out);
}

static int opt_int(walk *w, const char *field, const msgpack_object *o, bool *has, int64_t *v, bool non_negative)
{
    *has = false;
    *v = 0;
    if (!o || o->type == MSGPACK_OBJECT_NIL) return KV_OK;
    if (!obj_int(o, v)) return wrong_type(w, field, o, "int or nil");
    if (non_negative && *v < 0)
        return fail(w->d, w->err, KVEV_ERR_TYPE, "event %zu: %s is negative (%lld)", w->ev, field, (long long)*v);
    *has = true;
    return KV_OK;
}

static int hash_list(walk *w, const msgpack_object *o, const uint64_t **out, size_t *n)
{
    if (!o) return fail(w->d, w->err, KVEV_ERR_MISSING_FIELD, "event %zu: block_hashes is missing", w->ev);
    if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(w, "block_hashes", o, "array");
    uint32_t m = o->via.array.size;
    uint64_t *h = arena_alloc(&w->d->ar, (size_t)m * sizeof *h);
    if (!h && m) return fail(w->d, w->err, KVEV_ERR_NOMEM, "event %zu: out of memory", w->ev);
    for (uint32_t i = 0; i < m; i++)
        if (!obj_hash(&o->via.array.ptr[i], &h[i]))
            return fail(w->d, w->err, KVEV_ERR_TYPE, "event %zu: block_hashes[%u] is %s, expected int or bytes", w->ev, i,
                        obj_type_name(&o->via.array.ptr[i]));
    *out = h;
    *n = m;
    return KV_OK;
}

static int token_list(walk *w, const msgpack_object *o, kvev_event *e)
{
    if (!o) return fail(w->d, w->err, KVEV_ERR_MISSING_FIELD, "event %zu: token_ids is missing", w->ev);
    if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(w, "token_ids", o, "array");
    uint32_t m = o->via.array.size;
    uint32_t *t = arena_alloc(&w->d->ar, (size_t)m * sizeof *t);
    if (!t && m) return fail(w->d, w->err, KVEV_ERR_NOMEM, "event %zu: out of memory", w->ev);
    const msgpack_object *a = o->via.array.ptr;
    for (uint32_t i = 0; i < m; i++) {
        if (a[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[i].via.u64 > UINT32_MAX)
            return fail(w->d, w->err, KVEV_ERR_TYPE, "event %zu: token_ids[%u] is not an integer in [0, 2^32)", w->ev, i);
        t[i] = (uint32_t)a[i].via.u64;
    }
    e->token_ids = t;
    e->n_token_ids = m;
    return KV_OK;
}

/* extra_keys: None, or per engine block None | tuple of items. */
static int extra_keys(walk *w, const msgpack_object *o, kvev_event *e)
{
    if (!o || o->type == MSGPACK_OBJECT_NIL) return KV_OK;
    if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(w, "extra_keys", o, "array or nil");
    uint32_t m = o->via.array.size;
    kvev_block_extra *bx = arena_alloc(&w->d->ar, (size_t)m * sizeof *bx);
    if (!bx && m) return fail(w->d, w->err, KVEV_ERR_NOMEM, "event %zu: out of memory", w->ev);
    for (uint32_t b = 0; b < m; b++) {
        const msgpack_object *blk = &o->via.array.ptr[b];
        memset(&bx[b], 0, sizeof bx[b]);
        if (blk->type == MSGPACK_OBJECT_NIL) {
            bx[b].none = true;
            continue;
        }
        if (blk->type != MSGPACK_OBJECT_ARRAY)
            return fail(w->d, w->err, KVEV_ERR_TYPE, "event %zu: extra_keys[%u] is %s, expected array or nil", w->ev, b,
                        obj_type_name(blk));
        uint32_t k = blk->via.array.size;
        kvev_extra_item *it = arena_alloc(&w->d->ar, (size_t)k * sizeof *it);
        if (!it && k) return fail(w->d, w->err, KVEV_ERR_NOMEM, "event %zu: out of memory", w->ev);
        for (uint32_t i = 0; i < k; i++) {
            const msgpack_object *x = &blk->via.array.ptr[i];
            memset(&it[i], 0, sizeof it[i]);
            it[i].kind = KVEV_EXTRA_OTHER;
            const msgpack_object *id = NULL;
            if (x->type == MSGPACK_OBJECT_STR) {
                it[i].kind = KVEV_EXTRA_STR;
                id = x;
            } else if (x->type == MSGPACK_OBJECT_ARRAY && x->via.array.size >= 1 &&
                       x->via.array.ptr[0].type == MSGPACK_OBJECT_STR) {
                /* llm-d takes the identifier of any [str, ...] and ignores the rest */
                it[i].kind = KVEV_EXTRA_PAIR;
                id = &x->via.array.ptr[0];
                if (x->via.array.size >= 2) obj_int(&x->via.array.ptr[1], &it[i].offset);
            }
            int rc = id ? copy_str(w, id, &it[i].id) : KV_OK;
            if (rc) return rc;
        }
        bx[b].items = it;
        bx[b].n_items = k;
    }
    e->has_extra_keys = true;
    e->extra_keys = bx;
    e->n_extra_keys = m;
    return KV_OK;
}

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

static int block_stored(walk *w, const msgpack_object *const *f, kvev_event *e)
{
    int rc;
    if ((rc = hash_list(w, f[F_HASHES], &e->block_hashes, &e->n_block_hashes))) return rc;
    const msgpack_object *p = f[F_PARENT];
    if (p && p->type != MSGPACK_OBJECT_NIL) {
        if (!obj_hash(p, &e->parent_block_hash)) return wrong_type(w, "parent_block_hash", p, "int, bytes or nil");
        e->has_parent = true;
    }
    if ((rc = token_list(w, f[F_TOKENS], e))) return rc;
    const msgpack_object *bs = f[F_BLOCK_SIZE];
    if (!bs) return fail(w->d, w->err, KVEV_ERR_MISSING_FIELD, "event %zu: block_size is missing", w->ev);
    if (bs->type != MSGPACK_OBJECT_POSITIVE_INTEGER || bs->via.u64 > UINT32_MAX)
        return wrong_type(w, "block_size", bs, "an integer in [0, 2^32)");
    e->block_size = (uint32_t)bs->via.u64;
    if ((rc = opt_int(w, "lora_id", f[F_LORA_ID], &e->has_lora_id, &e->lora_id, false))) return rc;
    if ((rc = opt_str(w, "medium", f[F_MEDIUM], &e->medium))) return rc;
    if ((rc = opt_str(w, "lora_name", f[F_LORA_NAME], &e->lora_name))) return rc;
    if ((rc = extra_keys(w, f[F_EXTRA_KEYS], e))) return rc;
    if ((rc = opt_int(w, "group_idx", f[F_GROUP_IDX], &e->has_group_idx, &e->group_idx, true))) return rc;
    if ((rc = opt_str(w, "kv_cache_spec_kind", f[F_SPEC_KIND], &e->kv_cache_spec_kind))) return rc;
    return opt_int(w, "kv_cache_spec_sliding_window", f[F_SLIDING_WINDOW], &e->has_sliding_window,
                   &e->kv_cache_spec_sliding_window, false);
}

static int block_removed(walk *w, const msgpack_object *const *f, kvev_event *e)
{
    int rc;
    if ((rc = hash_list(w, f[R_HASHES], &e->block_hashes, &e->n_block_hashes))) return rc;
    if ((rc = opt_str(w, "medium", f[R_MEDIUM], &e->medium))) return rc;
    return opt_int(w, "group_idx", f[R_GROUP_IDX], &e->has_group_idx, &e->group_idx, true);
}

static int event(walk *w, const msgpack_object *o, kvev_event *e)
{
    const msgpack_object *tag = NULL;
    memset(e, 0, sizeof *e);
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        if (o->via.array.size == 0)
            return fail(w->d, w->err, KVEV_ERR_MISSING_FIELD, "event %zu: empty array, no tag", w->ev);
        tag = &o->via.array.ptr[0];
    } else if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size && !tag; i++)
            if (obj_is_str(&o->via.map.ptr[i].key, "type")) tag = &o->via.map.ptr[i].val;
        if (!tag) return fail(w->d, w->err, KVEV_ERR_MISSING_FIELD, "event %zu: map without a \"type\" key", w->ev);
    } else {
        return wrong_type(w, "event", o, "array or map");
    }
    if (tag->type != MSGPACK_OBJECT_STR) return wrong_type(w, "event tag", tag, "str");
    int t;
    for (t = 0; t < KVEV_TYPE_COUNT; t++)
        if (obj_is_str(tag, TYPE_NAMES[t])) break;
    if (t == KVEV_TYPE_COUNT)
        return fail(w->d, w->err, KVEV_ERR_UNKNOWN_EVENT, "event %zu: unknown event type \"%.*s\"", w->ev,
                    (int)(tag->via.str.size > 64 ? 64 : tag->via.str.size), tag->via.str.ptr);
    e->type = (kvev_type)t;

    /* Both encodings become one positional view; absent fields are NULL. */
    const msgpack_object *f[F_COUNT] = {0};
    size_t nf = N_FIELDS[t];
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (size_t i = 0; i < nf && i + 1 < o->via.array.size; i++) f[i] = &o->via.array.ptr[i + 1];
    } else {
        for (uint32_t i = 0; i < o->via.map.size; i++)
            for (size_t k = 0; k < nf; k++)
                if (obj_is_str(&o->via.map.ptr[i].key, FIELDS[t][k])) {
                    f[k] = &o->via.map.ptr[i].val;
                    break;
                }
    }
    if (e->type == KVEV_BLOCK_STORED) return block_stored(w, f, e);
    if (e->type == KVEV_BLOCK_REMOVED) return block_removed(w, f, e);
    return KV_OK;
}

static int batch(walk *w, const msgpack_object *o, kvev_batch *out)
{
    const msgpack_object *ts = NULL, *events = NULL, *dp = NULL;
    memset(out, 0, sizeof *out);
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = o->via.array.size;
        if (n < 2) return fail(w->d, w->err, KVEV_ERR_MISSING_FIELD, "batch array has %u elements, need ts and events", n);
        ts = &o->via.array.ptr[0];
        events = &o->via.array.ptr[1];
        if (n >= 3) dp = &o->via.array.ptr[2];
    } else if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
            if (obj_is_str(k, "ts")) ts = v;
            else if (obj_is_str(k, "events")) events = v;
            else if (obj_is_str(k, "data_parallel_rank")) dp = v;
        }
        if (!events) return fail(w->d, w->err, KVEV_ERR_MISSING_FIELD, "batch map without \"events\"");
    } else {
        return fail(w->d, w->err, KVEV_ERR_TYPE, "batch is %s, expected array or map", obj_type_name(o));
    }
    if (ts) {
        int64_t i;
        if (ts->type == MSGPACK_OBJECT_FLOAT32 || ts->type == MSGPACK_OBJECT_FLOAT64) out->ts = ts->via.f64;
        else if (obj_int(ts, &i)) out->ts = (double)i;
        else return fail(w->d, w->err, KVEV_ERR_TYPE, "batch ts is %s, expected float", obj_type_name(ts));
    }
    if (dp && dp->type != MSGPACK_OBJECT_NIL) {
        if (!obj_int(dp, &out->data_parallel_rank))
            return fail(w->d, w->err, KVEV_ERR_TYPE, "batch data_parallel_rank is %s, expected int", obj_type_name(dp));
        out->has_dp_rank = true;
    }
    if (events->type != MSGPACK_OBJECT_ARRAY)
        return fail(w->d, w->err, KVEV_ERR_TYPE, "batch events is %s, expected array", obj_type_name(events));
    uint32_t n = events->via.array.size;
    kvev_event *ev = arena_alloc(&w->d->ar, (size_t)n * sizeof *ev);
    if (!ev && n) return fail(w->d, w->err, KVEV_ERR_NOMEM, "out of memory for %u events", n);
    for (uint32_t i = 0; i < n; i++) {
        w->ev = i;
        int rc = event(w, &events->via.array.ptr[i], &ev[i]);
        if (rc) return rc;
    }
    out->events = ev;
    out->n_events = n;
    return KV_OK;
}

static int decode_batch(kvev_decoder *d, const void *payload, size_t len, kvev_batch *out, kv_err *err)
{
    size_t n_objects = 0;
    if (len > d->max_payload)
        return fail(d, err, KVEV_ERR_LENGTH, "payload of %zu bytes exceeds the limit of %zu", len, d->max_payload);
    if (len == 0) return fail(d, err, KVEV_ERR_TRUNCATED, "empty payload");
    int rc = scan(d, payload, len, &n_objects, err);
    if (rc) return rc;

    /* One zone chunk holds the whole tree (msgpack_zone_clear keeps only the first). */
    size_t need = (n_objects + 1) * sizeof(msgpack_object) + 64;
    if (need > d->zone_chunk) {
        msgpack_zone_destroy(&d->zone);
        d->zone_chunk = need * 2;
        if (!msgpack_zone_init(&d->zone, d->zone_chunk)) {
            d->zone_chunk = 0;
            msgpack_zone_init(&d->zone, 0);
            return fail(d, err, KVEV_ERR_NOMEM, "out of memory for %zu msgpack objects", n_objects);
        }
    } else {
        msgpack_zone_clear(&d->zone);
    }
    msgpack_object root;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(payload, len, &off, &d->zone, &root);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) return fail(d, err, KVEV_ERR_NOMEM, "msgpack-c out of memory");
    if (ur != MSGPACK_UNPACK_SUCCESS) /* the scan accepted it, so msgpack-c must too */
        return fail(d, err, KVEV_ERR_TYPE, "msgpack-c rejected the payload (%d) at offset %zu", (int)ur, off);

    walk w = {d, err, 0};
    rc = batch(&w, &root, out);
    if (rc) return rc;
    d->stats.batches++;
    for (size_t i = 0; i < out->n_events; i++) d->stats.events[out->events[i].type]++;
    return KV_OK;
}

int kvev_decode_batch(kvev_decoder *d, const void *payload, size_t len, kvev_batch *out, kv_err *err)
{
    arena_reset(&d->ar);
    return decode_batch(d, payload, len, out, err);
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

static int arena_str(kvev_decoder *d, kvev_str in, kvev_str *out, kv_err *err)
{
    char *s = arena_alloc(&d->ar, in.len + 1);
    if (!s) return fail(d, err, KVEV_ERR_NOMEM, "out of memory for the topic");
    memcpy(s, in.s, in.len);
    s[in.len] = 0;
    *out = (kvev_str){s, in.len};
    return KV_OK;
}

int kvev_decode_message(kvev_decoder *d, const void *topic, size_t topic_len, const void *seq, size_t seq_len,
                        const void *payload, size_t payload_len, kvev_message *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    arena_reset(&d->ar);
    kvev_topic t;
    if (!kvev_topic_parse(topic, topic_len, &t))
        return fail(d, err, KVEV_ERR_TOPIC, "topic \"%.*s\" is not kv@<pod>@<model>", (int)(topic_len > 128 ? 128 : topic_len),
                    (const char *)topic);
    if (seq_len < 8) return fail(d, err, KVEV_ERR_SEQ, "seq frame has %zu bytes, need 8", seq_len);
    out->seq = be_read(seq, 8);
    int rc;
    if ((rc = arena_str(d, t.pod, &out->pod, err)) || (rc = arena_str(d, t.model, &out->model, err))) return rc;
    return decode_batch(d, payload, payload_len, &out->batch, err);
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

static int buf_write(void *data, const char *p, size_t n)
{
    enc *x = data;
    kvev_buf *b = x->buf;
    if (x->oom) return -1;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) cap *= 2;
        uint8_t *nd = realloc(b->data, cap);
        if (!nd) {
            x->oom = true;
            return -1;
        }
        b->data = nd;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
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
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) msgpack_pack_uint64(pk, h[i]);
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
        msgpack_pack_array(pk, e->n_token_ids);
        for (size_t i = 0; i < e->n_token_ids; i++) msgpack_pack_uint32(pk, e->token_ids[i]);
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
