/* kvevents_tokens: the token-id decoder of a BlockStored (kvev_tokens_field), and the
 * choice of its path (kvev_decoder_set_tokens_path).
 *
 * Token ids are nearly all of a BlockStored's bytes. msgpack
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
 * ids and the same errors for every input (tests/test_kvevents.c compares them). */
#include <string.h>

#include "kvevents_impl.h"

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
int kvev_tokens_field(kvev_decoder *d, kvev_event *e)
{
    size_t n;
    uint32_t *t;
    int rc = kvev_array_field(d, "token_ids", sizeof *t, &n, (void **)&t);
    if (rc) return rc;
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
        if ((rc = kvev_mp_next(d, &x))) return rc;
        if (x.kind != MP_UINT || x.v.u > UINT32_MAX)
            return kvev_fail(d, KVEV_ERR_TYPE, "event %zu: token_ids[%zu] at offset %zu is not an integer in [0, 2^32)",
                        d->event, i, x.at);
        t[i++] = (uint32_t)x.v.u;
        off = d->off;
    }
    d->off = off;
    e->token_ids = t;
    e->n_token_ids = n;
    return KV_OK;
}
