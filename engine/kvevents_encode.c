/* kvevents_encode: kvev_batch -> a vLLM KVEventBatch msgpack payload (kvev_encode), for
 * the simulator's replicas and the tests; the decoder never needs it, so only programs
 * that encode link msgpack-c.
 * It writes through msgpack-c's packer into a kvev_buf (integer arrays directly,
 * in the packer's own encoding; token ids eight at a time where the CPU has AVX-512
 * VBMI2, chosen at run time). */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define TOKENS_ENCODE_VECTOR 1
#include <immintrin.h>
#endif

#include "kvevents_impl.h"

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
    bool vector;    /* token ids through put_uint32s_vector (this CPU has AVX-512 VBMI2) */
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

#ifdef TOKENS_ENCODE_VECTOR
#define VBMI2_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi2,popcnt")))

static bool cpu_has_vbmi2(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("popcnt");
}

/* put_uint for 8 token ids at a time (AVX-512 VBMI2): each id becomes its msgpack form in
 * its own 8-byte lane (head, then the value's big-endian bytes), and one byte compress
 * packs the lanes' used bytes together, 1, 2, 3 or 5 of them; ~0.5 ns an id against ~3 ns
 * for put_uint's chain of variable-length stores. The same bytes as put_uint for every
 * id (test_kvevents: payloads equal msgpack-c's own packing of them). Writes 64
 * bytes at d + k for each 8 ids: with at most 5 bytes an id before them, that stays
 * within the 9 bytes an id the caller reserved. Returns the bytes written; the ids past
 * the last multiple of 8 are put_uint's. */
VBMI2_TARGET static size_t put_uint32s_vector(uint8_t *d, const uint32_t *v, size_t n)
{
    const __m512i heads = _mm512_set_epi64(0, 0, 0, 0, 0xce, 0xcd, 0xcc, 0);
    const __m512i drop_bits = _mm512_set_epi64(0, 0, 0, 0, 0, 16, 24, 32);   /* of the 4 big-endian bytes */
    const __m512i lens = _mm512_set_epi64(0, 0, 0, 0, 0x0505050505050505LL, 0x0303030303030303LL,
                                          0x0202020202020202LL, 0x0101010101010101LL);
    const __m512i byte_in_lane = _mm512_set1_epi64(0x0706050403020100LL);
    /* per 128 bits: the two lanes' low dwords byte-reversed into their low dwords, the rest zero */
    const __m512i bswap32 = _mm512_set4_epi32(-1, 0x08090a0b, -1, 0x00010203);
    const __m512i one = _mm512_set1_epi64(1);
    size_t k = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512i x = _mm512_cvtepu32_epi64(_mm256_loadu_si256((const __m256i *)(v + i)));
        __mmask8 m1 = _mm512_cmpge_epu64_mask(x, _mm512_set1_epi64(0x80));
        __mmask8 m2 = _mm512_cmpge_epu64_mask(x, _mm512_set1_epi64(0x100));
        __mmask8 m3 = _mm512_cmpge_epu64_mask(x, _mm512_set1_epi64(0x10000));
        __m512i cls = _mm512_maskz_mov_epi64(m1, one);   /* put_uint's class: 0 fixint .. 3 uint32 */
        cls = _mm512_mask_add_epi64(cls, m2, cls, one);
        cls = _mm512_mask_add_epi64(cls, m3, cls, one);
        __m512i be = _mm512_srlv_epi64(_mm512_shuffle_epi8(x, bswap32), _mm512_permutexvar_epi64(cls, drop_bits));
        __m512i head = _mm512_mask_blend_epi64(m1, x, _mm512_permutexvar_epi64(cls, heads));
        __m512i lane = _mm512_or_si512(head, _mm512_slli_epi64(be, 8));
        __mmask64 keep = _mm512_cmplt_epu8_mask(byte_in_lane, _mm512_permutexvar_epi64(cls, lens));
        _mm512_storeu_si512(d + k, _mm512_maskz_compress_epi8(keep, lane));
        k += (size_t)__builtin_popcountll(keep);
    }
    for (; i < n; i++) k += put_uint(d + k, v[i]);
    return k;
}
#endif

/* An array of unsigned integers, written straight into the buffer: token ids and block
 * hashes are most of a payload, and the packer's callback cost a call per integer. */
static void pack_uint_array(msgpack_packer *pk, const uint32_t *v32, const uint64_t *v64, size_t n)
{
    enc *x = pk->data;
    msgpack_pack_array(pk, n);
    uint8_t *d = buf_reserve(x, n * 9);
    if (!d) return;
    size_t k = 0;
#ifdef TOKENS_ENCODE_VECTOR
    if (v32 && n >= 8 && x->vector) {
        x->buf->len += put_uint32s_vector(d, v32, n);
        return;
    }
#endif
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
    size_t nf = kvev_n_fields[e->type], n = 0;
    for (size_t k = 0; k < nf; k++) n += field_present(e, k);
    size_t last = 0;   /* positional: fields up to the last present one */
    for (size_t k = 0; k < nf; k++)
        if (field_present(e, k)) last = k + 1;
    if (x->map) msgpack_pack_map(pk, n + 1);
    else msgpack_pack_array(pk, last + 1);
    if (x->map) pack_cstr(pk, "type");
    pack_cstr(pk, kvev_type_name(e->type));
    for (size_t k = 0; k < (x->map ? nf : last); k++) {
        if (x->map && !field_present(e, k)) continue;
        if (x->map) pack_cstr(pk, kvev_fields[e->type][k]);
        int rc = pack_field(pk, e, k, err, ev);
        if (rc) return rc;
    }
    return KV_OK;
}

kvev_tokens_path kvev_encode_tokens_path(void)
{
#ifdef TOKENS_ENCODE_VECTOR
    return cpu_has_vbmi2() ? KVEV_TOKENS_VECTOR : KVEV_TOKENS_SCALAR;
#else
    return KVEV_TOKENS_SCALAR;
#endif
}

int kvev_encode_append(const kvev_batch *b, kvev_encoding encoding, kvev_buf *out, kv_err *err)
{
    if (b->n_events && !b->events) return kv_err_set(err, KV_EINVAL, "kvevents: batch has a count without events");
    size_t start = out->len;
    enc x = {.buf = out, .map = encoding != KVEV_ENC_ARRAY,
             .vector = kvev_encode_tokens_path() == KVEV_TOKENS_VECTOR};
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
        if (rc) {
            out->len = start;
            return rc;
        }
    }
    if (b->has_dp_rank) {
        if (encoding == KVEV_ENC_MAP_ALL) pack_cstr(&x.pk, "data_parallel_rank");
        msgpack_pack_int64(&x.pk, b->data_parallel_rank);
    }
    if (x.oom) {
        out->len = start;
        return kv_err_set(err, KV_ENOMEM, "kvevents: out of memory encoding a batch");
    }
    return KV_OK;
}

int kvev_encode(const kvev_batch *b, kvev_encoding encoding, kvev_buf *out, kv_err *err)
{
    out->len = 0;
    return kvev_encode_append(b, encoding, out, err);
}
