/* kvindex: the dual-key KV-block index (see kvindex.h, docs/upstream/kv-events-and-index.md §3).
 *
 * Owns three open-addressing tables that share one probing scheme (reftab: buckets of
 * {index+1, 32-bit hash tag}, linear probing, backward-shift deletion). The tag is the
 * hash's top 32 bits and the home bucket its top log2(size) bits, so moving entries
 * (deletion, rehash) never reads a record, and a probe rarely touches a record it does
 * not want (only same-home entries can share a tag):
 *   blocks  request key -> block record {key, holder, mappings} in one flat array of
 *           16-byte records, so a lookup touches one bucket line and one small record.
 *           Nearly every key has one holder endpoint (the prompts a cluster does not
 *           share), and the record names it inline: its slot and the tiers it holds the
 *           key in. A second holder moves the record's holders to a wide entry, one
 *           bitmap over the endpoint slots per tier, in separate arrays (header + gpu
 *           bitmap; cpu + other bitmaps, read only when the header counts bits in
 *           them, so mostly never touched). When the holders drop back to one, the
 *           record takes its holder inline again and the entry goes back on the wide
 *           free list, so the wide entries in use are the keys shared right now, not
 *           every key that was ever shared (a dense bitmap in every record cost 136
 *           bytes a key at 1,024 endpoints, 256 MB of a 2M-key index, nearly all of it
 *           one set bit).
 *           Memory stays bounded by the capacity: a record owns at most one wide entry,
 *           so there are never more wide entries than records, and the wide array
 *           doubles up to capacity entries at most. LRU neighbours live in a parallel
 *           array (32-bit indexes) because lookups never need them.
 *   emaps   (slot, engine key) -> block, a multimap (an engine key maps to several
 *           request keys when the index block is smaller than the engine block).
 *           Every mapping is also threaded on its block's list, so evicting or
 *           clearing a block drops exactly its mappings without a scan.
 *   names   endpoint name -> slot.
 *
 * Invariant: a mapping (slot, ek -> rk) exists only while slot holds rk in some tier;
 * losing the last tier (remove, clear, eviction) drops the slot's mappings to rk. So
 * the engine-key table is bounded by the holder entries and never dangles, and a
 * request key that is evicted and re-stored never resurrects a stale mapping.
 * Invariant: a record on the free list has no holder (a block is deleted only once
 * empty; eviction clears it), so new records need no clearing and scans need no marker.
 * Invariant: a wide entry in use holds at least two holder slots, and a free one holds
 * no bits, so a record is empty exactly when its holder word is zero and a new wide
 * entry needs no clearing.
 *
 * Concurrency: one rwlock, writer-preferring so a steady stream of lookups cannot
 * starve event ingestion. Lookups take it shared and mutate nothing but an atomic
 * counter (LRU order is by store recency, so a lookup need not reorder). */
#define _GNU_SOURCE
#include "kvindex.h"
#include "ilist.h"
#include "mix64.h"
#include "prefetch.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#define NIL UINT32_MAX
#define MAX_ENDPOINTS 4096u
#define MAX_WORDS (MAX_ENDPOINTS / 64)
#define DEFAULT_ENDPOINTS 256u
#define DEFAULT_CAPACITY 10000000u
#define MAX_CAPACITY (1u << 31)   /* keeps every table within 2^32 buckets */
#define MAX_NAME_LEN 1024
#define MAX_POS 65535u            /* request keys per engine key in one store */
#define MIN_RECORDS 1024u
#define MIN_TABLE_BITS 4u
#define PREFETCH_AHEAD 16         /* keys between a record's prefetch and its use */
#define WIDE_AHEAD (PREFETCH_AHEAD / 2)  /* keys between a wide entry's prefetch and its use */
#define PIPE 64                   /* ring of in-flight keys, > 2 * PREFETCH_AHEAD */
#define HUGE_PAGE ((size_t)2 << 20)
#define HOLD_BUCKET_NS 250u
#define HOLD_BUCKETS 4000u        /* 1 ms; longer holds land in the last bucket */

typedef struct bucket {
    uint32_t ref;   /* record index + 1; 0 = empty */
    uint32_t tag;   /* top 32 bits of the hash (rt_tag) */
} bucket;

typedef struct reftab {
    bucket *b;
    unsigned bits;  /* 2^bits buckets */
    uint32_t n;
} reftab;

/* A block's holders, in its record's hold word:
 *   0                        nobody (a free record, or one about to be deleted);
 *   HOLD_WIDE | e            two or more endpoints: wide entry e;
 *   slot | tiers << SLOT_BITS  one endpoint, holding the key in tiers (bit 1 << kvtier). */
#define SLOT_BITS 12u
#define SLOT_MASK ((1u << SLOT_BITS) - 1)
#define HOLD_WIDE (1u << 31)
_Static_assert(MAX_ENDPOINTS <= 1u << SLOT_BITS, "a slot fits the hold word");
_Static_assert(MAX_CAPACITY <= HOLD_WIDE, "a wide entry's index fits the hold word");

typedef struct brec {
    uint64_t key;
    uint32_t hold;
    uint32_t emaps;       /* head of the block's engine-key mappings */
} brec;

typedef struct blink {
    ilist_link lru;       /* prev is more recently stored; next doubles as the free list */
} blink;

/* 20 bytes: the engine key is split so the struct needs only 4-byte alignment. */
typedef struct emap {
    uint32_t ek_lo, ek_hi;
    uint32_t blk;
    uint32_t next;        /* next mapping of the same block, or next free */
    uint16_t slot;
    uint16_t pos;         /* order among the request keys one store gave this engine key */
} emap;

struct kvindex {
    pthread_rwlock_t lock;
    pthread_mutex_t wmu;   /* writers, one at a time: held across a whole change, including
                              the table growth done between its write-locked slices */
    uint32_t max_ep, words;
    uint32_t live_words;   /* words up to the highest slot in use: the rest hold no bits,
                              so lookups neither read nor scan them */
    uint32_t capacity;
    float weight[KVTIER_COUNT];

    brec *rec;
    blink *link;
    size_t rec_bytes, link_bytes;  /* mapped sizes */
    uint32_t n_blk, cap_blk, used_blk, free_blk;
    uint64_t *wide, *wside;  /* wide entries: header + gpu bitmap, cpu + other bitmaps (wide_at) */
    size_t wide_bytes, wside_bytes;
    uint32_t n_wide, cap_wide, used_wide, free_wide;
    ilist order;       /* request keys, most recently stored first */
    reftab btab;

    emap *em;
    size_t em_bytes;
    uint32_t n_em, cap_em, used_em, free_em;
    reftab etab;

    char **names;
    reftab ntab;

    uint64_t entries, evictions, stores, removes, clears;
    uint64_t admissions;   /* request keys stored (llm-d-kv-cache's admissions count keys) */
    uint64_t *slot_entries; /* per slot: its holder bits set, so a pod's share is known */
    uint64_t (*clock_ns)(void); /* cfg.clock_ns: NULL, write-lock holds are not timed */
    uint64_t *hold_hist;   /* with clock_ns: write-lock holds per HOLD_BUCKET_NS bucket */
    uint64_t hold_t0, hold_max, holds;
    atomic_uint_fast64_t lookups;
    atomic_uint_fast64_t ep_version; /* bumped under the write lock by slot add/remove */
};


/* ---- regions -------------------------------------------------------------------- */

/* Every array and table is an anonymous mapping: it starts zeroed (so a never-used
 * record needs no clearing), grows by mremap (page tables move, nothing is copied),
 * and is advised onto transparent huge pages, which turns the first-touch faults of a
 * filling index from one per 4 KB into one per 2 MB. Regions that will surely be
 * touched (arrays filled in order, tables filled at random) are populated as they
 * grow: one call instead of a fault per page, which on a virtual machine cost ~10 us
 * each (bench_ingest's index part 300 -> 220 ns per block). The wide entries are not:
 * they are touched only as keys come to be shared, which in many indexes is few. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14; older kernels fail the call, harmlessly */
#endif
static int region_grow(void *pp, size_t *bytes, size_t new_bytes, bool populate)
{
    void *p = *(void **)pp;
    if (new_bytes <= *bytes) return KV_OK;   /* grown by an earlier, partly failed call */
#ifdef __SANITIZE_ADDRESS__
    /* AddressSanitizer cannot see out-of-bounds access inside a mapping: under it the
     * regions stay on the heap, between redzones. */
    void *np = realloc(p, new_bytes);
    if (!np) return KV_ENOMEM;
    memset((char *)np + *bytes, 0, new_bytes - *bytes);
    (void)populate;
#else
    void *np = p ? mremap(p, *bytes, new_bytes, MREMAP_MAYMOVE)
                 : mmap(NULL, new_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (np == MAP_FAILED) return KV_ENOMEM;
#ifdef MADV_HUGEPAGE
    if (new_bytes >= 2 * HUGE_PAGE) madvise(np, new_bytes, MADV_HUGEPAGE);
#endif
    if (populate) madvise((char *)np + *bytes, new_bytes - *bytes, MADV_POPULATE_WRITE);
#endif
    *(void **)pp = np;
    *bytes = new_bytes;
    return KV_OK;
}

/* Faults in [from, to) of a region ahead of use, outside the write lock. */
static void region_populate(void *p, size_t from, size_t to)
{
#ifdef __SANITIZE_ADDRESS__
    (void)p, (void)from, (void)to;
#else
    if (to > from) madvise((char *)p + from, to - from, MADV_POPULATE_WRITE);
#endif
}

static void region_free(void *p, size_t bytes)
{
#ifdef __SANITIZE_ADDRESS__
    free(p);
#else
    if (p) munmap(p, bytes);
#endif
}

/* ---- reftab ---------------------------------------------------------------- */

static inline size_t rt_mask(const reftab *t) { return ((size_t)1 << t->bits) - 1; }
static inline uint32_t rt_tag(uint64_t h) { return (uint32_t)(h >> 32); }
static inline size_t rt_home_of_tag(const reftab *t, uint32_t tag) { return (size_t)(tag >> (32 - t->bits)); }
static inline size_t rt_home(const reftab *t, uint64_t h) { return rt_home_of_tag(t, rt_tag(h)); }

static size_t rt_bytes(const reftab *t) { return ((size_t)1 << t->bits) * sizeof *t->b; }

static int rt_init(reftab *t, unsigned bits)
{
    size_t have = 0;
    t->b = NULL;
    t->bits = bits;
    t->n = 0;
    return region_grow(&t->b, &have, rt_bytes(t), true);
}

static void rt_free(reftab *t) { region_free(t->b, rt_bytes(t)); }

static void rt_put_tag(reftab *t, uint32_t tag, uint32_t idx)
{
    size_t m = rt_mask(t), i = rt_home_of_tag(t, tag);
    while (t->b[i].ref) i = (i + 1) & m;
    t->b[i].ref = idx + 1;
    t->b[i].tag = tag;
    t->n++;
}

static void rt_put(reftab *t, uint64_t h, uint32_t idx) { rt_put_tag(t, rt_tag(h), idx); }

/* Backward-shift deletion: later entries of the cluster move up unless that would put
 * them before their home, so probes never need tombstones. */
static void rt_del_at(reftab *t, size_t i)
{
    size_t m = rt_mask(t), j = i;
    for (;;) {
        j = (j + 1) & m;
        if (!t->b[j].ref) break;
        size_t home = rt_home_of_tag(t, t->b[j].tag);
        if (((j - home) & m) >= ((j - i) & m)) {
            t->b[i] = t->b[j];
            i = j;
        }
    }
    t->b[i].ref = 0;
    t->n--;
}

/* Deletes the entry for idx, whose key hashes to h. */
static void rt_del(reftab *t, uint64_t h, uint32_t idx)
{
    size_t m = rt_mask(t), i = rt_home(t, h);
    while (t->b[i].ref != idx + 1) i = (i + 1) & m;
    rt_del_at(t, i);
}

/* Entries a table of 2^bits buckets takes: a load of at most 3/4. */
static inline size_t rt_room(unsigned bits) { return ((size_t)1 << bits) / 4 * 3; }

/* The table sized for n + more entries. */
static unsigned rt_bits_for(const reftab *t, size_t more)
{
    unsigned bits = t->bits;
    while (bits < 32 && (size_t)t->n + more > rt_room(bits)) bits++;
    return bits;
}

/* A copy of t with 2^bits buckets in *out; t is only read. */
static int rt_rebuilt(const reftab *t, unsigned bits, reftab *out)
{
    if (rt_init(out, bits) != KV_OK) return KV_ENOMEM;
    for (size_t i = 0, size = (size_t)1 << t->bits; i < size; i++)
        if (t->b[i].ref) rt_put_tag(out, t->b[i].tag, t->b[i].ref - 1);
    return KV_OK;
}

static int rt_reserve(reftab *t)
{
    if ((size_t)t->n + 1 <= rt_room(t->bits)) return KV_OK;   /* the usual case, per store */
    unsigned bits = rt_bits_for(t, 1);
    if ((size_t)t->n + 1 > rt_room(bits)) return KV_EFULL;   /* 2^32 buckets and full */
    reftab nt;
    if (rt_rebuilt(t, bits, &nt) != KV_OK) return KV_ENOMEM;
    rt_free(t);
    *t = nt;
    return KV_OK;
}

/* ---- blocks ---------------------------------------------------------------- */

static inline bool hold_wide(uint32_t h) { return h & HOLD_WIDE; }
static inline uint32_t hold_slot(uint32_t h) { return h & SLOT_MASK; }
static inline unsigned hold_tiers(uint32_t h) { return h >> SLOT_BITS; }
static inline uint32_t hold_one(uint32_t slot, unsigned tiers) { return slot | tiers << SLOT_BITS; }

/* Wide entry e: in the wide array a header word, holder slots in its low half and the
 * cpu/other bits set in its high half (the next free entry while on the free list), then
 * the gpu bitmap; its cpu and other bitmaps in the parallel wside array, which is read
 * only when the header counts bits there and so is mostly never touched. */
static inline uint64_t *wide_at(const kvindex *ix, uint32_t e) { return ix->wide + (size_t)e * (1 + ix->words); }
static inline uint32_t wide_index(uint32_t hold) { return hold & ~HOLD_WIDE; }
static inline uint64_t *wide_tier(const kvindex *ix, uint32_t e, int t)
{
    return t == KVTIER_GPU ? wide_at(ix, e) + 1 : ix->wside + ((size_t)e * 2 + (size_t)(t - 1)) * ix->words;
}
static inline uint32_t wide_slots(const kvindex *ix, uint32_t e) { return (uint32_t)wide_at(ix, e)[0]; }
static inline uint32_t wide_nongpu(const kvindex *ix, uint32_t e) { return (uint32_t)(wide_at(ix, e)[0] >> 32); }
#define WIDE_SLOT 1ULL
#define WIDE_NONGPU (1ULL << 32)

static unsigned wide_slot_tiers(const kvindex *ix, uint32_t e, uint32_t slot)
{
    unsigned tiers = 0;
    for (int t = 0; t < (wide_nongpu(ix, e) ? KVTIER_COUNT : 1); t++)
        if (wide_tier(ix, e, t)[slot / 64] >> (slot % 64) & 1) tiers |= 1u << t;
    return tiers;
}

/* Tiers in which slot holds block b: bit (1 << kvtier) per tier. */
static unsigned blk_slot_tiers(const kvindex *ix, uint32_t b, uint32_t slot)
{
    uint32_t h = ix->rec[b].hold;
    if (hold_wide(h)) return wide_slot_tiers(ix, wide_index(h), slot);
    return hold_slot(h) == slot ? hold_tiers(h) : 0;
}

static int wide_array_grow(kvindex *ix, bool populate)
{
    uint32_t want = ix->cap_wide ? ix->cap_wide * 2 : MIN_RECORDS;
    if (want > ix->capacity) want = ix->capacity;
    if (region_grow(&ix->wide, &ix->wide_bytes, (size_t)want * (1 + ix->words) * 8, populate) ||
        region_grow(&ix->wside, &ix->wside_bytes, (size_t)want * 2 * ix->words * 8, false))
        return KV_ENOMEM;
    ix->cap_wide = want;
    return KV_OK;
}

/* A cleared wide entry. The array never runs out before the index does: entries in use
 * are at most the records (one each), and it grows to capacity entries. */
static int wide_alloc(kvindex *ix, uint32_t *out)
{
    uint32_t e = ix->free_wide;
    if (e != NIL) {
        ix->free_wide = (uint32_t)wide_at(ix, e)[0];
        wide_at(ix, e)[0] = 0;
    } else {
        int rc;
        if (ix->used_wide == ix->cap_wide && (rc = wide_array_grow(ix, false)) != KV_OK) return rc;
        e = ix->used_wide++;
    }
    ix->n_wide++;
    *out = e;
    return KV_OK;
}

/* e's bitmaps are already clear. */
static void wide_free(kvindex *ix, uint32_t e)
{
    wide_at(ix, e)[0] = ix->free_wide;
    ix->free_wide = e;
    ix->n_wide--;
}

/* Adds slot's entry in tier to block b (a new record included), keeping the entry
 * counts; fails only when a second holder needs a wide entry and none can be had. */
static int blk_set(kvindex *ix, uint32_t b, uint32_t slot, int tier)
{
    brec *r = &ix->rec[b];
    if (!r->hold) {
        r->hold = hold_one(slot, 1u << tier);
        goto added;
    }
    if (!hold_wide(r->hold) && hold_slot(r->hold) == slot) {
        if (hold_tiers(r->hold) >> tier & 1) return KV_OK;
        r->hold |= (1u << tier) << SLOT_BITS;
        goto added;
    }
    if (!hold_wide(r->hold)) {
        uint32_t e, one = hold_slot(r->hold);
        unsigned tiers = hold_tiers(r->hold);
        int rc = wide_alloc(ix, &e);
        if (rc != KV_OK) return rc;
        uint64_t *hdr = wide_at(ix, e);
        for (int t = 0; t < KVTIER_COUNT; t++)
            if (tiers >> t & 1) {
                wide_tier(ix, e, t)[one / 64] |= 1ULL << (one % 64);
                if (t != KVTIER_GPU) *hdr += WIDE_NONGPU;
            }
        *hdr += WIDE_SLOT;
        r->hold = HOLD_WIDE | e;
    }
    uint32_t e = wide_index(r->hold);
    uint64_t *hdr = wide_at(ix, e), *word = wide_tier(ix, e, tier) + slot / 64, bit = 1ULL << (slot % 64);
    if (*word & bit) return KV_OK;
    if (!wide_slot_tiers(ix, e, slot)) *hdr += WIDE_SLOT;
    *word |= bit;
    if (tier != KVTIER_GPU) *hdr += WIDE_NONGPU;
added:
    ix->entries++;
    ix->slot_entries[slot]++;
    return KV_OK;
}

/* Block b's wide entry e is down to one holder slot: the record names it inline again. */
static void wide_narrow(kvindex *ix, uint32_t b, uint32_t e)
{
    /* The one holder's bits are all that is left: the first set bit names it. */
    uint32_t w = 0;
    int t = 0;
    while (!wide_tier(ix, e, t)[w])
        if (++w == ix->words) w = 0, t++;
    uint32_t slot = w * 64 + (uint32_t)__builtin_ctzll(wide_tier(ix, e, t)[w]);
    unsigned tiers = wide_slot_tiers(ix, e, slot);
    for (t = 0; t < KVTIER_COUNT; t++)
        if (tiers >> t & 1) wide_tier(ix, e, t)[w] = 0;
    wide_at(ix, e)[0] = 0;
    wide_free(ix, e);
    ix->rec[b].hold = hold_one(slot, tiers);
}

/* Drops slot's entries in the given tiers of block b, keeping the entry counts; returns
 * the tiers it held among them. The record may go back to one inline holder, or to
 * none (the caller deletes it). */
static unsigned blk_unset(kvindex *ix, uint32_t b, uint32_t slot, unsigned tiers)
{
    brec *r = &ix->rec[b];
    unsigned had;
    if (!hold_wide(r->hold)) {
        if (!r->hold || hold_slot(r->hold) != slot) return 0;
        had = hold_tiers(r->hold) & tiers;
        unsigned left = hold_tiers(r->hold) & ~tiers;
        r->hold = left ? hold_one(slot, left) : 0;
    } else {
        uint32_t e = wide_index(r->hold);
        uint64_t *hdr = wide_at(ix, e), bit = 1ULL << (slot % 64);
        had = wide_slot_tiers(ix, e, slot) & tiers;
        for (int t = 0; t < KVTIER_COUNT; t++)
            if (had >> t & 1) {
                wide_tier(ix, e, t)[slot / 64] &= ~bit;
                if (t != KVTIER_GPU) *hdr -= WIDE_NONGPU;
            }
        if (had && !wide_slot_tiers(ix, e, slot)) {
            *hdr -= WIDE_SLOT;
            if (wide_slots(ix, e) == 1) wide_narrow(ix, b, e);
        }
    }
    unsigned n = (unsigned)__builtin_popcount(had);
    ix->entries -= n;
    ix->slot_entries[slot] -= n;
    return had;
}

/* h is mix64_fmix(key), which callers that prefetched the key's bucket already hold. */
static uint32_t blk_find_h(const kvindex *ix, uint64_t key, uint64_t h)
{
    size_t m = rt_mask(&ix->btab), i = rt_home(&ix->btab, h);
    for (;;) {
        bucket bk = ix->btab.b[i];
        if (!bk.ref) return NIL;
        if (bk.tag == rt_tag(h) && ix->rec[bk.ref - 1].key == key) return bk.ref - 1;
        i = (i + 1) & m;
    }
}

static uint32_t blk_find(const kvindex *ix, uint64_t key) { return blk_find_h(ix, key, mix64_fmix(key)); }

static void lru_unlink(kvindex *ix, uint32_t b) { ilist_unlink(&ix->order, &ix->link->lru, sizeof *ix->link, b); }
static void lru_push(kvindex *ix, uint32_t b) { ilist_push_front(&ix->order, &ix->link->lru, sizeof *ix->link, b); }

static void lru_touch(kvindex *ix, uint32_t b)
{
    if (ix->order.head == b) return;
    lru_unlink(ix, b);
    lru_push(ix, b);
}

static void blk_delete(kvindex *ix, uint32_t b)
{
    rt_del(&ix->btab, mix64_fmix(ix->rec[b].key), b);
    lru_unlink(ix, b);
    ix->link[b].lru.next = ix->free_blk;
    ix->free_blk = b;
    ix->n_blk--;
}

/* ---- engine-key mappings ------------------------------------------------------ */

static inline uint64_t em_ek(const emap *m) { return (uint64_t)m->ek_hi << 32 | m->ek_lo; }
static inline uint64_t em_hash_of(int slot, uint64_t ek) { return mix64_fmix(ek ^ ((uint64_t)(slot + 1) * 0x9E3779B97F4A7C15ULL)); }

static void em_release(kvindex *ix, uint32_t e)
{
    rt_del(&ix->etab, em_hash_of(ix->em[e].slot, em_ek(&ix->em[e])), e);
    ix->em[e].next = ix->free_em;
    ix->free_em = e;
    ix->n_em--;
}

/* Drops the block's mappings of one slot, or of every slot when slot < 0. */
static void blk_drop_emaps(kvindex *ix, uint32_t b, int slot)
{
    uint32_t *pp = &ix->rec[b].emaps;
    while (*pp != NIL) {
        uint32_t e = *pp;
        if (slot < 0 || ix->em[e].slot == slot) {
            *pp = ix->em[e].next;
            em_release(ix, e);
        } else {
            pp = &ix->em[e].next;
        }
    }
}

/* First mapping of (slot, ek) at or after bucket *pos, advancing *pos past it. */
static uint32_t em_next(const kvindex *ix, int slot, uint64_t ek, uint64_t h, size_t *pos)
{
    size_t m = rt_mask(&ix->etab);
    for (size_t i = *pos;; i = (i + 1) & m) {
        bucket bk = ix->etab.b[i];
        if (!bk.ref) return NIL;
        const emap *e = &ix->em[bk.ref - 1];
        if (bk.tag == rt_tag(h) && e->slot == slot && em_ek(e) == ek) {
            *pos = (i + 1) & m;
            return bk.ref - 1;
        }
    }
}

/* h is em_hash_of(slot, ek). */
static void em_drop_key(kvindex *ix, int slot, uint64_t ek, uint64_t h)
{
    for (;;) {
        size_t pos = rt_home(&ix->etab, h);
        uint32_t e = em_next(ix, slot, ek, h, &pos);
        if (e == NIL) return;
        uint32_t *pp = &ix->rec[ix->em[e].blk].emaps;
        while (*pp != e) pp = &ix->em[*pp].next;
        *pp = ix->em[e].next;
        em_release(ix, e);
    }
}

static int em_array_grow(kvindex *ix, bool populate)
{
    if (ix->cap_em >= UINT32_MAX / 2) return KV_EFULL;
    uint32_t want = ix->cap_em ? ix->cap_em * 2 : MIN_RECORDS;
    if (region_grow(&ix->em, &ix->em_bytes, (size_t)want * sizeof *ix->em, populate) != KV_OK) return KV_ENOMEM;
    ix->cap_em = want;
    return KV_OK;
}

static int em_add(kvindex *ix, int slot, uint64_t ek, uint64_t h, uint32_t b, uint32_t pos)
{
    int rc = rt_reserve(&ix->etab);
    if (rc != KV_OK) return rc;
    uint32_t e = ix->free_em;
    if (e != NIL) {
        ix->free_em = ix->em[e].next;
    } else {
        if (ix->used_em == ix->cap_em && (rc = em_array_grow(ix, true)) != KV_OK) return rc;
        e = ix->used_em++;
    }
    emap *m = &ix->em[e];
    m->ek_lo = (uint32_t)ek;
    m->ek_hi = (uint32_t)(ek >> 32);
    m->blk = b;
    m->slot = (uint16_t)slot;
    m->pos = (uint16_t)pos;
    m->next = ix->rec[b].emaps;
    ix->rec[b].emaps = e;
    rt_put(&ix->etab, h, e);
    ix->n_em++;
    return KV_OK;
}

/* ---- block lifecycle ---------------------------------------------------------- */

/* Takes block b's holders off the entry counts and clears them (b is being evicted);
 * the cpu/other bitmaps of a wide entry are read only when its header counts bits in
 * them, since on eviction they are cache lines nobody else needs. */
static void blk_drop_holders(kvindex *ix, uint32_t b)
{
    brec *r = &ix->rec[b];
    if (!hold_wide(r->hold)) {
        unsigned n = (unsigned)__builtin_popcount(hold_tiers(r->hold));
        ix->entries -= n;
        ix->slot_entries[hold_slot(r->hold)] -= n;
        r->hold = 0;
        return;
    }
    uint32_t e = wide_index(r->hold);
    for (int t = 0; t < (wide_nongpu(ix, e) ? KVTIER_COUNT : 1); t++) {
        uint64_t *g = wide_tier(ix, e, t);
        for (uint32_t i = 0; i < ix->words; i++) {
            for (uint64_t m = g[i]; m; m &= m - 1) {
                ix->slot_entries[i * 64 + (uint32_t)__builtin_ctzll(m)]--;
                ix->entries--;
            }
            g[i] = 0;
        }
    }
    wide_at(ix, e)[0] = 0;
    wide_free(ix, e);
    r->hold = 0;
}

static void blk_evict(kvindex *ix, uint32_t b)
{
    blk_drop_holders(ix, b);
    blk_drop_emaps(ix, b, -1);
    blk_delete(ix, b);
    ix->evictions++;
}

/* Doubles the block arrays (up to capacity). populate: fault the new part in now; a
 * writer growing under the write lock passes false and populates after releasing it. */
static int blk_arrays_grow(kvindex *ix, bool populate)
{
    uint32_t want = ix->cap_blk ? ix->cap_blk * 2 : MIN_RECORDS;
    if (want > ix->capacity) want = ix->capacity;
    if (region_grow(&ix->rec, &ix->rec_bytes, (size_t)want * sizeof *ix->rec, populate) ||
        region_grow(&ix->link, &ix->link_bytes, (size_t)want * sizeof *ix->link, populate))
        return KV_ENOMEM;
    ix->cap_blk = want;
    return KV_OK;
}

static int blk_new(kvindex *ix, uint64_t key, uint64_t h, uint32_t *out)
{
    if (ix->n_blk == ix->capacity) blk_evict(ix, ix->order.tail);
    int rc = rt_reserve(&ix->btab);
    if (rc != KV_OK) return rc;
    uint32_t b = ix->free_blk;
    if (b != NIL) {
        ix->free_blk = ix->link[b].lru.next;
    } else {
        if (ix->used_blk == ix->cap_blk && blk_arrays_grow(ix, true) != KV_OK) return KV_ENOMEM;
        b = ix->used_blk++;
    }
    /* No holder to clear: fresh records are zero pages and freed ones were emptied. */
    ix->rec[b].key = key;
    ix->rec[b].emaps = NIL;
    lru_push(ix, b);
    rt_put(&ix->btab, h, b);
    ix->n_blk++;
    *out = b;
    return KV_OK;
}

/* Clears every tier of slot on block b; deletes b if nobody holds it any more. */
static void blk_clear_slot(kvindex *ix, uint32_t b, uint32_t slot)
{
    blk_unset(ix, b, slot, (1u << KVTIER_COUNT) - 1);
    blk_drop_emaps(ix, b, (int)slot);
    if (!ix->rec[b].hold) blk_delete(ix, b);
}

/* ---- endpoint names ------------------------------------------------------------ */

static uint64_t str_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return mix64_fmix(h);
}


static int name_find(const kvindex *ix, const char *name)
{
    uint64_t h = str_hash(name);
    size_t m = rt_mask(&ix->ntab), i = rt_home(&ix->ntab, h);
    for (;; i = (i + 1) & m) {
        bucket bk = ix->ntab.b[i];
        if (!bk.ref) return -1;
        if (bk.tag == rt_tag(h) && strcmp(ix->names[bk.ref - 1], name) == 0) return (int)bk.ref - 1;
    }
}

/* ---- public -------------------------------------------------------------------- */

kvtier kvtier_from_medium(const char *medium, size_t len)
{
    if (!medium || len == 0) return KVTIER_GPU;
    if (len == 3 && strncasecmp(medium, "gpu", 3) == 0) return KVTIER_GPU;
    if (len == 3 && strncasecmp(medium, "cpu", 3) == 0) return KVTIER_CPU;
    return KVTIER_OTHER;
}

const char *kvtier_name(kvtier t)
{
    switch (t) {
    case KVTIER_GPU: return "gpu";
    case KVTIER_CPU: return "cpu";
    case KVTIER_OTHER: return "other";
    default: return "?";
    }
}

kvindex *kvindex_new(const kvindex_config *cfg, kv_err *err)
{
    kvindex_config c = cfg ? *cfg : (kvindex_config){0};
    if (c.capacity == 0) c.capacity = DEFAULT_CAPACITY;
    if (c.max_endpoints == 0) c.max_endpoints = DEFAULT_ENDPOINTS;
    if (c.capacity > MAX_CAPACITY) {
        kv_err_set(err, KV_ERANGE, "kvindex: capacity %zu exceeds the maximum %u", c.capacity, MAX_CAPACITY);
        return NULL;
    }
    if (c.max_endpoints > MAX_ENDPOINTS) {
        kv_err_set(err, KV_ERANGE, "kvindex: max_endpoints %u exceeds the maximum %u", c.max_endpoints, MAX_ENDPOINTS);
        return NULL;
    }
    bool all_zero = true;
    for (int t = 0; t < KVTIER_COUNT; t++) {
        if (!isfinite(c.tier_weight[t]) || c.tier_weight[t] < 0) {
            kv_err_set(err, KV_EINVAL, "kvindex: tier_weight[%s] = %g, expected a finite value >= 0",
                       kvtier_name((kvtier)t), c.tier_weight[t]);
            return NULL;
        }
        if (c.tier_weight[t] != 0) all_zero = false;
    }
    if (all_zero) {
        c.tier_weight[KVTIER_GPU] = 1.0;
        c.tier_weight[KVTIER_CPU] = 0.8;
        c.tier_weight[KVTIER_OTHER] = 1.0;
    }

    kvindex *ix = calloc(1, sizeof *ix);
    if (!ix) goto oom;
    ix->max_ep = c.max_endpoints;
    ix->words = (c.max_endpoints + 63) / 64;
    ix->capacity = (uint32_t)c.capacity;
    for (int t = 0; t < KVTIER_COUNT; t++) ix->weight[t] = (float)c.tier_weight[t];
    ix->free_blk = NIL;
    ix->free_wide = NIL;
    ix->order = ILIST_EMPTY;
    ix->free_em = NIL;
    ix->clock_ns = c.clock_ns;
    if (c.clock_ns && !(ix->hold_hist = calloc(HOLD_BUCKETS, sizeof *ix->hold_hist))) goto oom;
    atomic_init(&ix->lookups, 0);
    atomic_init(&ix->ep_version, 0);
    unsigned nbits = MIN_TABLE_BITS;
    while (((size_t)1 << nbits) < 2 * (size_t)ix->max_ep) nbits++;
    ix->names = calloc(ix->max_ep, sizeof *ix->names);
    ix->slot_entries = calloc(ix->max_ep, sizeof *ix->slot_entries);
    if (!ix->names || !ix->slot_entries || rt_init(&ix->btab, MIN_TABLE_BITS) || rt_init(&ix->etab, MIN_TABLE_BITS) ||
        rt_init(&ix->ntab, nbits))
        goto oom;
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&ix->lock, &a);
    pthread_rwlockattr_destroy(&a);
    if (rc == 0 && pthread_mutex_init(&ix->wmu, NULL) == 0) return ix;
    if (rc == 0) pthread_rwlock_destroy(&ix->lock);
oom:
    if (ix) {
        free(ix->hold_hist);
    free(ix->slot_entries);
        free(ix->names);
        rt_free(&ix->btab);
        rt_free(&ix->etab);
        rt_free(&ix->ntab);
        free(ix);
    }
    kv_err_set(err, KV_ENOMEM, "kvindex: out of memory creating an index for %u endpoints", c.max_endpoints);
    return NULL;
}

void kvindex_free(kvindex *ix)
{
    if (!ix) return;
    pthread_rwlock_destroy(&ix->lock);
    pthread_mutex_destroy(&ix->wmu);
    for (uint32_t s = 0; s < ix->max_ep; s++) free(ix->names[s]);
    free(ix->names);
    rt_free(&ix->ntab);
    rt_free(&ix->btab);
    rt_free(&ix->etab);
    region_free(ix->rec, ix->rec_bytes);
    region_free(ix->wide, ix->wide_bytes);
    region_free(ix->wside, ix->wside_bytes);
    region_free(ix->link, ix->link_bytes);
    region_free(ix->em, ix->em_bytes);
    free(ix->hold_hist);
    free(ix->slot_entries);
    free(ix);
}

uint32_t kvindex_max_endpoints(const kvindex *ix) { return ix->max_ep; }

static kvindex *unconst(const kvindex *ix) { return (kvindex *)ix; }
static void rdlock(const kvindex *ix) { pthread_rwlock_rdlock(&unconst(ix)->lock); }
static void unlock(const kvindex *ix) { pthread_rwlock_unlock(&unconst(ix)->lock); }

static void wrlock(kvindex *ix)
{
    pthread_rwlock_wrlock(&ix->lock);
    if (ix->hold_hist) ix->hold_t0 = ix->clock_ns();
}

static void wrunlock(kvindex *ix)
{
    if (ix->hold_hist) {
        uint64_t ns = ix->clock_ns() - ix->hold_t0;
        ix->hold_hist[ns / HOLD_BUCKET_NS < HOLD_BUCKETS ? ns / HOLD_BUCKET_NS : HOLD_BUCKETS - 1]++;
        if (ns > ix->hold_max) ix->hold_max = ns;
        ix->holds++;
    }
    pthread_rwlock_unlock(&ix->lock);
}

/* A writer: the writer mutex for the whole change, the write lock for the parts that
 * lookups must not see half done. */
static void wbegin(kvindex *ix)
{
    pthread_mutex_lock(&ix->wmu);
    wrlock(ix);
}

static void wend(kvindex *ix)
{
    wrunlock(ix);
    pthread_mutex_unlock(&ix->wmu);
}

/* Room for `blocks` more request keys and `maps` more engine-key mappings, made while
 * lookups go on: with the writer mutex held and the write lock not, a bigger hash table
 * is built from the old one (which only writers change) and swapped in under the write
 * lock, and grown arrays are faulted in after it is released. Growth at 10M keys copies
 * ~100 MB; under the write lock that stalled every routing decision for as long. */
static int reserve_unlocked(kvindex *ix, size_t blocks, size_t maps)
{
    reftab nb = {0}, ne = {0};
    /* every block of the slice may gain a second holder, also past capacity */
    bool grow_wide = ix->free_wide == NIL && ix->used_wide + blocks > ix->cap_wide && ix->cap_wide < ix->capacity;
    if (ix->n_blk + blocks > ix->capacity) /* past capacity, stores evict: n_blk stays put */
        blocks = ix->capacity - ix->n_blk;
    unsigned bb = rt_bits_for(&ix->btab, blocks), eb = rt_bits_for(&ix->etab, maps);
    if ((bb != ix->btab.bits && rt_rebuilt(&ix->btab, bb, &nb) != KV_OK) ||
        (eb != ix->etab.bits && rt_rebuilt(&ix->etab, eb, &ne) != KV_OK)) {
        if (nb.b) rt_free(&nb);
        return KV_ENOMEM;
    }
    bool grow_blk = ix->free_blk == NIL && ix->used_blk + blocks > ix->cap_blk && ix->cap_blk < ix->capacity;
    bool grow_em = ix->free_em == NIL && maps && ix->used_em + maps > ix->cap_em;
    if (!nb.b && !ne.b && !grow_blk && !grow_em && !grow_wide) return KV_OK;
    size_t rec0 = ix->rec_bytes, link0 = ix->link_bytes, em0 = ix->em_bytes;
    int rc = KV_OK;
    reftab ob = ix->btab, oe = ix->etab;
    wrlock(ix);
    if (nb.b) ix->btab = nb;
    if (ne.b) ix->etab = ne;
    if (grow_blk) rc = blk_arrays_grow(ix, false);
    if (rc == KV_OK && grow_em) rc = em_array_grow(ix, false);
    if (rc == KV_OK && grow_wide) rc = wide_array_grow(ix, false);
    brec *rec = ix->rec;
    blink *link = ix->link;
    emap *em = ix->em;
    size_t rec1 = ix->rec_bytes, link1 = ix->link_bytes, em1 = ix->em_bytes;
    wrunlock(ix);
    /* No lookup can still be in the old tables (it would have held the lock we just had),
     * and unmapping tens of MB (page freeing, TLB shootdowns) took milliseconds under it. */
    if (nb.b) rt_free(&ob);
    if (ne.b) rt_free(&oe);
    /* only writers move or grow these, and this writer holds the writer mutex */
    region_populate(rec, rec0, rec1);
    region_populate(link, link0, link1);
    region_populate(em, em0, em1);
    return rc;
}

/* Called under the write lock whenever a slot is taken or freed. */
static void live_words_update(kvindex *ix)
{
    uint32_t s = ix->max_ep;
    while (s > 0 && !ix->names[s - 1]) s--;
    ix->live_words = (s + 63) / 64;
}

int kvindex_endpoint_add(kvindex *ix, const char *name, kv_err *err)
{
    if (!name || !name[0]) return kv_err_set(err, KV_EINVAL, "kvindex: endpoint name is empty");
    size_t len = strlen(name);
    if (len > MAX_NAME_LEN)
        return kv_err_set(err, KV_ERANGE, "kvindex: endpoint name of %zu bytes exceeds %d", len, MAX_NAME_LEN);
    wbegin(ix);
    int slot = name_find(ix, name);
    if (slot >= 0) goto out;
    for (uint32_t s = 0; s < ix->max_ep; s++) {
        if (ix->names[s]) continue;
        ix->names[s] = strdup(name);
        if (!ix->names[s]) {
            slot = kv_err_set(err, KV_ENOMEM, "kvindex: out of memory adding endpoint \"%s\"", name);
            goto out;
        }
        rt_put(&ix->ntab, str_hash(name), s);
        slot = (int)s;
        live_words_update(ix);
        atomic_fetch_add_explicit(&ix->ep_version, 1, memory_order_release);
        goto out;
    }
    slot = kv_err_set(err, KV_EFULL, "kvindex: all %u endpoint slots are in use, cannot add \"%s\"", ix->max_ep, name);
out:
    wend(ix);
    return slot;
}

int kvindex_endpoint_find(const kvindex *ix, const char *name)
{
    if (!name) return -1;
    rdlock(ix);
    int slot = name_find(ix, name);
    unlock(ix);
    return slot;
}

uint64_t kvindex_endpoints_version(const kvindex *ix)
{
    return atomic_load_explicit(&ix->ep_version, memory_order_acquire);
}

/* A slot number callers may pass in: 0..max_endpoints-1 (in use or not). */
static bool slot_in_range(const kvindex *ix, int slot)
{
    return slot >= 0 && (uint32_t)slot < ix->max_ep;
}

const char *kvindex_endpoint_name(const kvindex *ix, int slot)
{
    if (!slot_in_range(ix, slot)) return NULL;
    rdlock(ix);
    const char *n = ix->names[slot];
    unlock(ix);
    return n;
}

/* A scan of the record array in order, not of the LRU list: it streams through memory
 * (free records hold no bits) instead of chasing links. Called with the writer mutex and
 * the write lock held; the lock is let go between slices (kvindex.h), so a pod's reset
 * or removal does not stall every lookup for the whole scan (1.4-3.3 s at 10M blocks,
 * 1 of 8 pods, when it ran in one hold). Lookups in between see the endpoint partly
 * cleared, i.e. holding less than it did, which it is about to anyway; writers still
 * wait for the whole clear (the writer mutex), so nothing is stored behind it. */
static void clear_slot(kvindex *ix, int slot)
{
    uint32_t scanned = 0, cleared = 0;
    for (uint32_t b = 0; b < ix->used_blk; b++) {
        if (blk_slot_tiers(ix, b, (uint32_t)slot)) {
            blk_clear_slot(ix, b, (uint32_t)slot);
            cleared++;
        }
        if (++scanned == KVINDEX_CLEAR_SCAN || cleared == KVINDEX_CLEAR_SLICE) {
            wrunlock(ix);
            wrlock(ix);
            scanned = cleared = 0;
        }
    }
}

static bool slot_live(const kvindex *ix, int slot)
{
    return slot_in_range(ix, slot) && ix->names[slot];
}

void kvindex_endpoint_remove(kvindex *ix, int slot)
{
    wbegin(ix);
    if (slot_live(ix, slot)) {
        clear_slot(ix, slot);
        rt_del(&ix->ntab, str_hash(ix->names[slot]), (uint32_t)slot);
        free(ix->names[slot]);
        ix->names[slot] = NULL;
        live_words_update(ix);
        atomic_fetch_add_explicit(&ix->ep_version, 1, memory_order_release);
    }
    wend(ix);
}

void kvindex_clear_endpoint(kvindex *ix, int slot)
{
    wbegin(ix);
    if (slot_live(ix, slot)) {
        clear_slot(ix, slot);
        ix->clears++;
    }
    wend(ix);
}

/* Index into an array of m keys of pair i of n (the engine/index block ratio rule).
 * Equal block sizes, the common case, skip the 128-bit division (a libgcc call). */
static inline size_t pair_at(size_t i, size_t m, size_t n) { return m == n ? i : (size_t)((unsigned __int128)i * m / n); }

/* The hashes of a store's pair i, kept in a ring from its prefetch until its use. */
typedef struct pair_hash {
    uint64_t rk, ek;
} pair_hash;

/* A probe starts at its home bucket and may run on into the next line (a cluster, or a
 * deletion's backward shift up to the next empty bucket): both lines are fetched. */
static inline void prefetch_probe(const reftab *t, uint64_t h)
{
    const bucket *b = &t->b[rt_home(t, h)];
    __builtin_prefetch(b);
    __builtin_prefetch((const char *)b + 64);
}

static void prefetch_pair(const kvindex *ix, int slot, const uint64_t *ek, size_t ne, const uint64_t *rk, size_t nr,
                          size_t n, size_t i, pair_hash *ring)
{
    pair_hash *h = &ring[i % PIPE];
    h->rk = mix64_fmix(rk[pair_at(i, nr, n)]);
    prefetch_probe(&ix->btab, h->rk);
    if (!ne) return;
    h->ek = em_hash_of(slot, ek[pair_at(i, ne, n)]);
    prefetch_probe(&ix->etab, h->ek);
}

/* A full index evicts its least recently stored block for every new one: the victims'
 * bucket lines are as random as the new keys'. *cursor walks the LRU list a few blocks
 * ahead of the tail (a hint only: a touched or recycled block just makes it restart). */
static void prefetch_victim(const kvindex *ix, uint32_t *cursor)
{
    uint32_t v = *cursor;
    if (v == NIL || v >= ix->used_blk) {
        v = ix->order.tail;
        for (int k = 0; k < PREFETCH_AHEAD && v != NIL; k++) v = ix->link[v].lru.prev;
    } else {
        v = ix->link[v].lru.prev;
    }
    *cursor = v;
    if (v == NIL || v >= ix->used_blk) return;
    prefetch_probe(&ix->btab, mix64_fmix(ix->rec[v].key));
    uint32_t e = ix->rec[v].emaps;
    if (e != NIL && e < ix->used_em)
        prefetch_probe(&ix->etab, em_hash_of(ix->em[e].slot, em_ek(&ix->em[e])));
}

/* Opens the slice of a store that starts at pair i of n: room for it made outside the
 * lock (reserve_unlocked), then the write lock, with the endpoint still in place. Returns
 * with the write lock held, also on error (the caller's exit path releases it). */
static int store_slice_open(kvindex *ix, int slot, size_t i, size_t n, bool maps, kv_err *err)
{
    size_t slice = n - i < KVINDEX_STORE_SLICE ? n - i : KVINDEX_STORE_SLICE;
    int rc = reserve_unlocked(ix, slice, maps ? slice : 0);
    wrlock(ix);
    if (rc != KV_OK)
        return kv_err_set(err, rc, "kvindex_store: cannot grow the index at block %zu of %zu: %s", i, n,
                          kv_strerror(rc));
    if (slot_live(ix, slot)) return KV_OK;
    if (i == 0) return kv_err_set(err, KV_EINVAL, "kvindex_store: endpoint slot %d is not in use", slot);
    return kv_err_set(err, KV_EINVAL, "kvindex_store: endpoint slot %d was removed during the store", slot);
}

int kvindex_store(kvindex *ix, int slot, kvtier tier, const uint64_t *engine_keys, size_t n_engine,
                  const uint64_t *request_keys, size_t n_request, kv_err *err)
{
    if ((unsigned)tier >= KVTIER_COUNT) return kv_err_set(err, KV_EINVAL, "kvindex_store: bad tier %d", (int)tier);
    if ((n_engine && !engine_keys) || (n_request && !request_keys))
        return kv_err_set(err, KV_EINVAL, "kvindex_store: NULL key array with a non-zero count");
    if (n_request == 0) return KV_OK;   /* nothing to hold; mappings need a request key */
    size_t n = n_engine > n_request ? n_engine : n_request;
    if (n_engine && (n + n_engine - 1) / n_engine > MAX_POS)
        return kv_err_set(err, KV_ERANGE, "kvindex_store: %zu request keys for %zu engine keys exceeds ratio %u",
                          n_request, n_engine, MAX_POS);
    pthread_mutex_lock(&ix->wmu);
    int rc = store_slice_open(ix, slot, 0, n, n_engine > 0, err);
    if (rc != KV_OK) goto out;
    ix->stores++;
    ix->admissions += n_request;
    size_t group = SIZE_MAX;   /* index into engine_keys of the current mapping group */
    uint32_t pos = 0;
    /* Keep the next pairs' bucket lines in flight: a chain's keys are independent probes. */
    pair_hash ring[PIPE];
    for (size_t k = 0; k < PREFETCH_AHEAD && k < n; k++)
        prefetch_pair(ix, slot, engine_keys, n_engine, request_keys, n_request, n, k, ring);
    uint32_t victim = NIL;
    for (size_t i = 0; i < n; i++) {
        if (i && i % KVINDEX_STORE_SLICE == 0) {
            wrunlock(ix);   /* let waiting lookups in between slices */
            if ((rc = store_slice_open(ix, slot, i, n, n_engine > 0, err)) != KV_OK) goto out;
        }
        if (ix->n_blk == ix->capacity) prefetch_victim(ix, &victim);
        if (i + PREFETCH_AHEAD < n)
            prefetch_pair(ix, slot, engine_keys, n_engine, request_keys, n_request, n, i + PREFETCH_AHEAD, ring);
        const pair_hash *h = &ring[i % PIPE];
        uint64_t rk = request_keys[pair_at(i, n_request, n)];
        uint32_t b = blk_find_h(ix, rk, h->rk);
        if (b == NIL) {
            if ((rc = blk_new(ix, rk, h->rk, &b)) != KV_OK) {
                kv_err_set(err, rc, "kvindex_store: cannot add block %zu of %zu: %s", i, n, kv_strerror(rc));
                goto out;
            }
        } else {
            lru_touch(ix, b);
        }
        if ((rc = blk_set(ix, b, (uint32_t)slot, tier)) != KV_OK) {
            kv_err_set(err, rc, "kvindex_store: cannot add a holder to block %zu of %zu: %s", i, n, kv_strerror(rc));
            goto out;
        }
        if (!n_engine) continue;
        size_t g = pair_at(i, n_engine, n);
        if (g != group) {
            /* A store replaces what this endpoint's engine key mapped to before. */
            em_drop_key(ix, slot, engine_keys[g], h->ek);
            group = g;
            pos = 0;
        } else {
            pos++;
        }
        if ((rc = em_add(ix, slot, engine_keys[g], h->ek, b, pos)) != KV_OK) {
            kv_err_set(err, rc, "kvindex_store: cannot add engine-key mapping %zu of %zu: %s", i, n, kv_strerror(rc));
            goto out;
        }
    }
out:
    wend(ix);
    return rc;
}

bool kvindex_request_key(const kvindex *ix, int slot, uint64_t engine_key, uint64_t *request_key)
{
    if (!slot_in_range(ix, slot)) return false;
    rdlock(ix);
    uint64_t h = em_hash_of(slot, engine_key);
    size_t pos = rt_home(&ix->etab, h);
    uint32_t best = NIL;
    for (uint32_t e; (e = em_next(ix, slot, engine_key, h, &pos)) != NIL;)
        if (best == NIL || ix->em[e].pos > ix->em[best].pos) best = e;
    if (best != NIL && request_key) *request_key = ix->rec[ix->em[best].blk].key;
    unlock(ix);
    return best != NIL;
}

void kvindex_prefetch_engine_keys(const kvindex *ix, int slot, const uint64_t *engine_keys, size_t n)
{
    if (!slot_in_range(ix, slot) || n == 0) return;
    rdlock(ix);   /* a writer may swap the table for a grown one */
    for (size_t i = 0; i < n; i++) prefetch_probe(&ix->etab, em_hash_of(slot, engine_keys[i]));
    unlock(ix);
}

unsigned kvindex_tiers(const kvindex *ix, int slot, uint64_t request_key)
{
    if (!slot_in_range(ix, slot)) return 0;
    rdlock(ix);
    unsigned mask = 0;
    uint32_t b = blk_find(ix, request_key);
    if (b != NIL) mask = blk_slot_tiers(ix, b, (uint32_t)slot);
    unlock(ix);
    return mask;
}

size_t kvindex_remove(kvindex *ix, int slot, kvtier tier, const uint64_t *engine_keys, size_t n)
{
    if ((unsigned)tier >= KVTIER_COUNT || (n && !engine_keys)) return 0;
    wbegin(ix);
    size_t removed = 0;
    if (!slot_live(ix, slot)) goto out;
    ix->removes++;
    for (size_t k = 0; k < n; k++) {
        uint64_t ek = engine_keys[k], h = em_hash_of(slot, ek);
        size_t pos = rt_home(&ix->etab, h);
        for (uint32_t e; (e = em_next(ix, slot, ek, h, &pos)) != NIL;) {
            uint32_t b = ix->em[e].blk;
            if (!blk_unset(ix, b, (uint32_t)slot, 1u << tier)) continue;
            removed++;
            if (blk_slot_tiers(ix, b, (uint32_t)slot)) continue;
            /* The slot lost its last tier: its mappings to b go, and the table may have
             * shifted under the cursor, so probe again from the start. */
            blk_drop_emaps(ix, b, slot);
            if (!ix->rec[b].hold) blk_delete(ix, b);
            pos = rt_home(&ix->etab, h);
        }
    }
out:
    wend(ix);
    return removed;
}

/* Adds each endpoint set in dev its best tier weight minus the gpu weight (kept in
 * out[].score until the end); endpoints at exactly the gpu weight never get here.
 * tiers[t] is tier t's bitmap word w of the block. */
/* A slot's deviation from the gpu weight is charged per run of keys, not per key: entering
 * tier t's class (t is the best tier it holds the key in) at key j charges -j * d[t],
 * leaving it at key j' charges +j' * d[t], so a run costs two updates however long. */
static void charge(uint32_t w, uint64_t bits, float amount, kvindex_match *out)
{
    while (bits) {
        out[w * 64 + (unsigned)__builtin_ctzll(bits)].score += amount;
        bits &= bits - 1;
    }
}

/* Every open run ends at key j. */
static void runs_end(uint64_t run[KVTIER_COUNT][MAX_WORDS], uint32_t W, const float *d, uint32_t j,
                     kvindex_match *out)
{
    for (int t = 0; t < KVTIER_COUNT; t++)
        for (uint32_t w = 0; w < W; w++)
            if (run[t][w]) {
                charge(w, run[t][w], (float)j * d[t], out);
                run[t][w] = 0;
            }
}

static void set_blocks(uint32_t w, uint64_t bits, uint32_t blocks, kvindex_match *out)
{
    while (bits) {
        out[w * 64 + (unsigned)__builtin_ctzll(bits)].blocks = blocks;
        bits &= bits - 1;
    }
}

/* First record whose bucket tag matches the hash, or NIL when the key is surely absent;
 * the caller confirms the key (a tag collision falls back to blk_find). */
static inline uint32_t blk_candidate(const kvindex *ix, uint64_t h)
{
    size_t m = rt_mask(&ix->btab);
    for (size_t i = rt_home(&ix->btab, h);; i = (i + 1) & m) {
        bucket bk = ix->btab.b[i];
        if (!bk.ref || bk.tag == rt_tag(h)) return bk.ref - 1;   /* ref 0 -> NIL */
    }
}

/* A shared key's wide entry: its header and gpu words up to the live ones. Whether the
 * cpu/other bitmaps are needed is in the header, not yet read; they rarely are. */
static inline void prefetch_wide(const kvindex *ix, uint32_t b, uint32_t live)
{
    uint32_t h = ix->rec[b].hold;
    if (hold_wide(h)) prefetch_span(wide_at(ix, wide_index(h)), (size_t)(1 + live) * 8);
}

/* One key's holders as a lookup reads them: a wide entry's bitmaps, or the one inline
 * holder, whose bitmap words are made up as they are read (its bit in its word). */
typedef struct holders {
    const uint64_t *gpu;  /* wide: the gpu bitmap; NULL: one holder */
    const uint64_t *cpu;  /* wide with side: the cpu and other bitmaps, words apart */
    uint32_t words;
    uint32_t w;           /* one holder: its word, bit and tiers */
    uint64_t bit;
    unsigned tiers;
    bool side;            /* some holder in cpu or other */
} holders;

static inline holders holders_of(const kvindex *ix, uint32_t hold)
{
    if (hold_wide(hold)) {
        uint32_t e = wide_index(hold);
        bool side = wide_nongpu(ix, e) != 0;
        return (holders){.gpu = wide_tier(ix, e, KVTIER_GPU), .cpu = side ? wide_tier(ix, e, KVTIER_CPU) : NULL,
                         .words = ix->words, .side = side};
    }
    uint32_t slot = hold_slot(hold);
    return (holders){.w = slot / 64, .bit = 1ULL << (slot % 64), .tiers = hold_tiers(hold),
                     .side = (hold_tiers(hold) & ~(1u << KVTIER_GPU)) != 0};
}

static inline uint64_t holders_word(const holders *hv, int t, uint32_t w)
{
    if (hv->gpu) return t == KVTIER_GPU ? hv->gpu[w] : hv->cpu[(size_t)(t - 1) * hv->words + w];
    return w == hv->w && (hv->tiers >> t & 1) ? hv->bit : 0;
}

uint32_t kvindex_lookup(const kvindex *ix, const uint64_t *keys, size_t n, kvindex_match *out)
{
    memset(out, 0, ix->max_ep * sizeof *out);
    atomic_fetch_add_explicit(&unconst(ix)->lookups, 1, memory_order_relaxed);
    if (n > UINT32_MAX) n = UINT32_MAX;
    if (n == 0) return 0;

    /* A tier "counts as gpu" when its weight equals gpu's; endpoints holding a block only
     * in other tiers, or also in a heavier one, need a per-endpoint adjustment. */
    uint64_t same[KVTIER_COUNT], heavier[KVTIER_COUNT];
    for (int t = 0; t < KVTIER_COUNT; t++) {
        same[t] = ix->weight[t] == ix->weight[KVTIER_GPU] ? ~0ULL : 0;
        heavier[t] = ix->weight[t] > ix->weight[KVTIER_GPU] ? ~0ULL : 0;
    }
    /* dom[t]: tiers that outrank t (heavier, or as heavy and listed first), so each
     * holder of a key falls in the class of exactly one tier, its best. */
    unsigned dom[KVTIER_COUNT] = {0};
    float d[KVTIER_COUNT];
    for (int t = 0; t < KVTIER_COUNT; t++) {
        d[t] = ix->weight[t] - ix->weight[KVTIER_GPU];
        for (int u = 0; u < KVTIER_COUNT; u++)
            if (ix->weight[u] > ix->weight[t] || (ix->weight[u] == ix->weight[t] && u < t)) dom[t] |= 1u << u;
    }
    uint64_t alive[MAX_WORDS], hash[PIPE], run[KVTIER_COUNT][MAX_WORDS];
    memset(run, 0, sizeof run);
    uint32_t matched = 0, cand[PIPE];
    bool done = false, runs = false;

    rdlock(ix);
    uint32_t W = ix->live_words;   /* scanned words */
    /* Words with a survivor: after the first few keys most hold none and are skipped. */
    uint64_t lw = W == 64 ? ~0ULL : (1ULL << W) - 1;
    /* Memory-level parallelism: key j+2A's bucket, key j+A's record and, for a shared
     * key, key j+A/2's wide entry are in flight while key j is ANDed, so the dependent
     * chain rarely waits on DRAM. */
    size_t ahead = 2 * PREFETCH_AHEAD < n ? 2 * PREFETCH_AHEAD : n;
    for (size_t k = 0; k < ahead; k++) {
        hash[k] = mix64_fmix(keys[k]);
        __builtin_prefetch(&ix->btab.b[rt_home(&ix->btab, hash[k])]);
    }
    for (size_t k = 0; k < PREFETCH_AHEAD && k < n; k++)
        if ((cand[k] = blk_candidate(ix, hash[k])) != NIL) __builtin_prefetch(&ix->rec[cand[k]]);
    for (size_t k = 0; k < WIDE_AHEAD && k < n; k++)
        if (cand[k] != NIL) prefetch_wide(ix, cand[k], W);
    size_t j = 0;
    for (; j < n; j++) {
        size_t far = j + 2 * PREFETCH_AHEAD, near = j + PREFETCH_AHEAD, mid = j + WIDE_AHEAD;
        if (far < n) {
            hash[far % PIPE] = mix64_fmix(keys[far]);
            __builtin_prefetch(&ix->btab.b[rt_home(&ix->btab, hash[far % PIPE])]);
        }
        if (near < n && (cand[near % PIPE] = blk_candidate(ix, hash[near % PIPE])) != NIL)
            __builtin_prefetch(&ix->rec[cand[near % PIPE]]);
        if (mid < n && cand[mid % PIPE] != NIL) prefetch_wide(ix, cand[mid % PIPE], W);
        uint32_t b = cand[j % PIPE];
        if (b != NIL && ix->rec[b].key != keys[j]) b = blk_find(ix, keys[j]);
        if (b == NIL) break;
        holders hv = holders_of(ix, ix->rec[b].hold);
        if (!hv.side) {
            /* Held in gpu only: every survivor scores exactly the gpu weight. */
            if (runs) runs_end(run, W, d, (uint32_t)j, out);
            runs = false;
            for (uint64_t m = lw; m; m &= m - 1) {
                uint32_t w = (uint32_t)__builtin_ctzll(m);
                uint64_t g = holders_word(&hv, KVTIER_GPU, w), prev = j ? alive[w] : g, now = prev & g;
                if (prev != now) set_blocks(w, prev & ~now, (uint32_t)j, out);
                alive[w] = now;
                if (!now) lw &= ~(1ULL << w);
            }
        } else {
            for (uint64_t m = lw; m; m &= m - 1) {
                uint32_t w = (uint32_t)__builtin_ctzll(m);
                uint64_t tiers[KVTIER_COUNT] = {holders_word(&hv, KVTIER_GPU, w), holders_word(&hv, KVTIER_CPU, w),
                                                holders_word(&hv, KVTIER_OTHER, w)};
                uint64_t held = tiers[0] | tiers[1] | tiers[2];
                uint64_t prev = j ? alive[w] : held, now = prev & held;
                set_blocks(w, prev & ~now, (uint32_t)j, out);
                alive[w] = now;
                if (!now) lw &= ~(1ULL << w);
                uint64_t ok = (tiers[0] & same[0]) | (tiers[1] & same[1]) | (tiers[2] & same[2]);
                uint64_t up = (tiers[0] & heavier[0]) | (tiers[1] & heavier[1]) | (tiers[2] & heavier[2]);
                uint64_t dev = now & (~ok | up);
                for (int t = 0; t < KVTIER_COUNT; t++) {
                    uint64_t cls = 0;
                    if (dev && d[t] != 0) {
                        uint64_t over = 0;
                        for (int u = 0; u < KVTIER_COUNT; u++)
                            if (dom[t] >> u & 1) over |= tiers[u];
                        cls = dev & tiers[t] & ~over;
                    }
                    if (cls == run[t][w]) continue;
                    charge(w, cls & ~run[t][w], -(float)j * d[t], out);
                    charge(w, run[t][w] & ~cls, (float)j * d[t], out);
                    run[t][w] = cls;
                    runs |= cls != 0;
                }
            }
        }
        if (!lw) {
            done = true;
            break;
        }
    }
    unlock(ix);
    matched = (uint32_t)j;
    /* No endpoint holds the first key (every decision of a workload without shared
     * prefixes): out is still all zero, and the pass over max_ep slots below would only
     * write zeros again. */
    if (!matched && !runs) return 0;
    /* Endpoints still alive matched every key up to the stop. */
    if (!done && matched)
        for (uint32_t w = 0; w < W; w++) set_blocks(w, alive[w], matched, out);
    if (runs) runs_end(run, W, d, matched, out);
    float wg = ix->weight[KVTIER_GPU];
    for (uint32_t s = 0; s < ix->max_ep; s++)
        out[s].score = out[s].blocks ? (float)out[s].blocks * wg + out[s].score : 0;
    return matched;
}

uint64_t kvindex_endpoint_entries(const kvindex *ix, int slot)
{
    if (!slot_in_range(ix, slot)) return 0;
    rdlock(ix);
    uint64_t n = ix->slot_entries[slot];
    unlock(ix);
    return n;
}

void kvindex_get_stats(const kvindex *ix, kvindex_stats *out)
{
    rdlock(ix);
    out->blocks = ix->n_blk;
    out->entries = ix->entries;
    out->engine_keys = ix->n_em;
    size_t bytes = sizeof *ix + ix->rec_bytes + ix->wide_bytes + ix->wside_bytes + ix->link_bytes + ix->em_bytes +
                   rt_bytes(&ix->btab) + rt_bytes(&ix->etab) + rt_bytes(&ix->ntab) + ix->max_ep * sizeof *ix->names;
    for (uint32_t s = 0; s < ix->max_ep; s++)
        if (ix->names[s]) bytes += strlen(ix->names[s]) + 1;
    out->bytes = bytes;
    out->evictions = ix->evictions;
    out->stores = ix->stores;
    out->admissions = ix->admissions;
    out->removes = ix->removes;
    out->clears = ix->clears;
    out->lookups = atomic_load_explicit(&ix->lookups, memory_order_relaxed);
    out->write_holds = ix->holds;
    out->write_hold_max_ns = ix->hold_max;
    out->write_hold_p99_ns = 0;
    if (ix->hold_hist && ix->holds) {
        uint64_t below = 0, want = ix->holds - ix->holds / 100;   /* holds at or under the p99 */
        uint32_t k = 0;
        while (k < HOLD_BUCKETS - 1 && (below += ix->hold_hist[k]) < want) k++;
        out->write_hold_p99_ns = (uint64_t)(k + 1) * HOLD_BUCKET_NS;
    }
    unlock(ix);
}
