/* blockpool: vLLM v1's block pool (free queue + prefix-cache map) in flat arrays.
 * See blockpool.h for the rules; this file owns only their mechanics.
 *
 * Memory is what limits a thousand-replica run (one pool per replica, ~28k blocks
 * each for Llama-3.1-8B on an H100), so a block costs 20 bytes and a map slot 4:
 *   - a block is {ref, prev, next, hash}; it is in the free queue exactly when its
 *     reference count is 0, and the count's top two bits say whether it carries a hash
 *     and whether that hash is in the map (bpool_set_private_hashes);
 *   - a map slot holds block + 1 (0 = empty) and its distance from home (see
 *     slot_pack); the hash is read from the block;
 *   - the map is sized to the hashes in it (load at most 1/2, doubling from
 *     BP_MAP_MIN slots up to the pool's size), not to the pool: a replica that caches
 *     a few thousand blocks touches a few pages of map, not the 256 KiB a full pool's
 *     map takes, and its random probes stay in cache;
 *   - blocks never handed out yet (ids fresh..n-1) are the free queue's head, in id
 *     order, without links, and have no memory yet: the block array grows as they are
 *     first handed out (doubling from BP_BLK_MIN up to n). So a pool is as big as its
 *     use, and a thousand pools fill the huge pages of malloc's heap (hugepage.h)
 *     together instead of each keeping 560 KB of small pages of its own. */
#include <stdlib.h>

#include "blockpool.h"

#define BP_HASHED 0x80000000u
#define BP_MAPPED 0x40000000u    /* the hash is in the map (else private to the holder) */
#define BP_FLAGS (BP_HASHED | BP_MAPPED)
#define BP_MAP_MIN 16u
#define BP_BLK_MIN 64u           /* the block array's first size */
#define BP_AHEAD 8           /* map slots prefetched ahead when a run of blocks is hashed */

/* 20 bytes: the hash is split so the struct needs only 4-byte alignment. */
typedef struct bp_block {
    uint32_t ref;            /* reference count | BP_FLAGS */
    uint32_t prev, next;     /* free-queue links, BPOOL_NONE at the ends / when held */
    uint32_t hash_lo, hash_hi;
} bp_block;

struct bpool {
    uint32_t n;
    bp_block *blk;           /* blocks 0..cap_blk-1, cap_blk >= fresh */
    uint32_t cap_blk;
    uint32_t fresh;          /* blocks fresh..n-1 were never allocated: the queue's head */
    uint32_t head, tail;     /* the linked part of the free queue, after the fresh blocks */
    uint32_t n_free, n_cached;   /* n_cached: blocks with a hash, in the map or not */
    uint32_t n_mapped;
    uint32_t *map;           /* block + 1, 0 = empty slot */
    uint32_t mask;           /* map size - 1 (a power of two, >= 2 n_mapped) */
    uint32_t max_size;       /* the map's final size: the power of two >= 2n */
};

static uint64_t blk_hash(const bp_block *k)
{
    return (uint64_t)k->hash_hi << 32 | k->hash_lo;
}

static uint32_t blk_ref(const bp_block *k)
{
    return k->ref & ~BP_FLAGS;
}

static uint32_t slot_of(const bpool *p, uint64_t h)
{
    /* The hashes are already uniform 64-bit values; fold the high bits in anyway so
     * a test's small hand-made hashes spread too. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (uint32_t)h & p->mask;
}

bpool *bpool_new(uint32_t n_blocks, kv_err *err)
{
    if (n_blocks == 0 || n_blocks > (UINT32_MAX >> 2)) {
        kv_err_set(err, KV_ERANGE, "blockpool: num_gpu_blocks %u out of range (1..%u)", n_blocks, UINT32_MAX >> 2);
        return NULL;
    }
    bpool *p = calloc(1, sizeof *p);
    uint32_t max_size = 1;
    while (max_size < 2 * n_blocks) max_size <<= 1;
    uint32_t size = max_size < BP_MAP_MIN ? max_size : BP_MAP_MIN;
    if (p)
        p->map = calloc(size, sizeof *p->map);
    if (!p || !p->map) {
        bpool_free(p);
        kv_err_set(err, KV_ENOMEM, "blockpool: out of memory for %u blocks", n_blocks);
        return NULL;
    }
    p->n = n_blocks;
    p->mask = size - 1;
    p->max_size = max_size;
    p->head = p->tail = BPOOL_NONE;
    p->n_free = n_blocks;
    return p;
}

void bpool_free(bpool *p)
{
    if (!p) return;
    free(p->blk);
    free(p->map);
    free(p);
}

uint32_t bpool_num_blocks(const bpool *p) { return p->n; }
uint32_t bpool_num_free(const bpool *p) { return p->n_free; }
uint32_t bpool_num_cached(const bpool *p) { return p->n_cached; }
/* A block never handed out (b >= fresh) has no memory yet, and neither a reference nor
 * a hash. */
uint32_t bpool_ref(const bpool *p, uint32_t b) { return b < p->fresh ? blk_ref(&p->blk[b]) : 0; }

size_t bpool_count_unreferenced(const bpool *p, const uint32_t *blocks, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += blk_ref(&p->blk[blocks[i]]) == 0;
    return k;
}

bool bpool_hash_of(const bpool *p, uint32_t b, uint64_t *hash)
{
    if (b >= p->fresh || !(p->blk[b].ref & BP_HASHED)) return false;
    *hash = blk_hash(&p->blk[b]);
    return true;
}

/* --- hash -> block multimap ---------------------------------------------------- */

/* A map slot: block + 1 in the low 30 bits (bpool_new caps the pool below 2^30), and
 * in the top 2 the entry's distance from its home slot, saturated at SLOT_DSAT. The
 * distance says whether an entry can share a probe's home without reading its block
 * (a random miss per probe at a thousand replicas): lookups skip entries of other homes
 * and deletions decide shifts from it, reading a block only for a saturated one. */
#define SLOT_BLOCK 0x3fffffffu
#define SLOT_DSAT 3u

static uint32_t slot_pack(uint32_t b, uint32_t dist)
{
    return (b + 1) | (dist < SLOT_DSAT ? dist : SLOT_DSAT) << 30;
}

static uint32_t slot_block(uint32_t v)
{
    return (v & SLOT_BLOCK) - 1;
}

/* The exact distance of entry v, sitting at slot j, from its home. */
static uint32_t slot_dist(const bpool *p, uint32_t v, uint32_t j)
{
    uint32_t d = v >> 30;
    return d < SLOT_DSAT ? d : (j - slot_of(p, blk_hash(&p->blk[slot_block(v)]))) & p->mask;
}

static uint32_t map_get(const bpool *p, uint64_t h)
{
    for (uint32_t i = slot_of(p, h), d = 0;; i = (i + 1) & p->mask, d++) {
        uint32_t v = p->map[i];
        if (!v) return BPOOL_NONE;
        uint32_t vd = v >> 30;
        if (vd < SLOT_DSAT ? vd != d : d < SLOT_DSAT) continue;   /* another home */
        if (blk_hash(&p->blk[slot_block(v)]) == h) return slot_block(v);
    }
}

static void map_put(bpool *p, uint64_t h, uint32_t b)
{
    uint32_t i = slot_of(p, h), d = 0;
    for (; p->map[i]; d++) i = (i + 1) & p->mask;
    p->map[i] = slot_pack(b, d);
}

/* Doubles the map (while it is under its final size) until it holds `more` further
 * hashes at load <= 1/2. Entries are re-inserted in probe order, scanning from an empty
 * slot, so copies of one hash keep their insertion order (map_get finds the first). */
static int map_reserve(bpool *p, uint32_t more)
{
    uint32_t size = p->mask + 1, want = size;
    while (want < p->max_size && 2 * ((uint64_t)p->n_mapped + more) > want) want <<= 1;
    if (want == size) return KV_OK;
    uint32_t *old = p->map;
    if (!(p->map = calloc(want, sizeof *p->map))) {
        p->map = old;
        return KV_ENOMEM;
    }
    p->mask = want - 1;
    uint32_t start = 0;
    while (old[start]) start++;   /* load <= 1/2: an empty slot exists */
    for (uint32_t k = 0; k < size; k++) {
        uint32_t e = old[(start + k) & (size - 1)];
        if (e) map_put(p, blk_hash(&p->blk[slot_block(e)]), slot_block(e));
    }
    free(old);
    return KV_OK;
}

/* Removes block b (whose hash is h), shifting later members of the probe cluster back
 * so that lookups never need tombstones and duplicates keep their insertion order. */
static void map_del(bpool *p, uint64_t h, uint32_t b)
{
    uint32_t i = slot_of(p, h);
    while ((p->map[i] & SLOT_BLOCK) != b + 1) i = (i + 1) & p->mask;
    for (uint32_t j = (i + 1) & p->mask;; j = (j + 1) & p->mask) {
        uint32_t v = p->map[j];
        if (!v) break;
        /* j's entry stays if its home is in the cyclic range (i, j], i.e. it sits
         * less than j - i from home; else it moves back to i. */
        uint32_t gap = (j - i) & p->mask, d = v >> 30;
        if (d < gap && d < SLOT_DSAT) continue;
        d = slot_dist(p, v, j);
        if (d < gap) continue;
        p->map[i] = slot_pack(slot_block(v), d - gap);
        i = j;
    }
    p->map[i] = 0;
}

/* --- free queue -------------------------------------------------------------- */

/* Unlinks b from the linked part of the queue (never a fresh block: those have no hash
 * to be touched by, and allocation takes them without links). */
static void queue_remove(bpool *p, uint32_t b)
{
    bp_block *k = &p->blk[b];
    if (k->prev != BPOOL_NONE) p->blk[k->prev].next = k->next; else p->head = k->next;
    if (k->next != BPOOL_NONE) p->blk[k->next].prev = k->prev; else p->tail = k->prev;
    k->prev = k->next = BPOOL_NONE;
    p->n_free--;
}

static void queue_append(bpool *p, uint32_t b)
{
    bp_block *k = &p->blk[b];
    k->prev = p->tail;
    k->next = BPOOL_NONE;
    if (p->tail != BPOOL_NONE) p->blk[p->tail].next = b; else p->head = b;
    p->tail = b;
    p->n_free++;
}

size_t bpool_free_order(const bpool *p, uint32_t *out, size_t cap)
{
    size_t k = 0;
    for (uint32_t b = p->fresh; b < p->n; b++, k++)
        if (k < cap) out[k] = b;
    for (uint32_t b = p->head; b != BPOOL_NONE; b = p->blk[b].next, k++)
        if (k < cap) out[k] = b;
    return k;
}

/* --- operations ---------------------------------------------------------------- */

size_t bpool_match(const bpool *p, const uint64_t *hashes, size_t n, uint32_t *out)
{
    size_t k = 0;
    for (; k < n; k++) {
        uint32_t b = map_get(p, hashes[k]);
        if (b == BPOOL_NONE) break;
        out[k] = b;
    }
    return k;
}

void bpool_touch(bpool *p, const uint32_t *blocks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bp_block *k = &p->blk[blocks[i]];
        if (blk_ref(k) == 0) queue_remove(p, blocks[i]);
        k->ref++;
    }
}

/* Room in the block array for an allocation of k blocks: the never handed out ones it
 * takes first, up to the pool's n. */
static bool blk_reserve(bpool *p, size_t k)
{
    uint32_t left = p->n - p->fresh, need = p->fresh + (k < left ? (uint32_t)k : left);
    if (need <= p->cap_blk) return true;
    uint32_t cap = p->cap_blk ? p->cap_blk : BP_BLK_MIN;
    while (cap < need) cap *= 2;   /* n < 2^30: no wrap */
    if (cap > p->n) cap = p->n;
    bp_block *b = realloc(p->blk, (size_t)cap * sizeof *b);
    if (!b) return false;
    p->blk = b;
    p->cap_blk = cap;
    return true;
}

int bpool_alloc(bpool *p, size_t n, uint32_t *out, uint64_t *evicted, size_t *n_evicted)
{
    *n_evicted = 0;
    if (n > p->n_free) return KV_EFULL;
    if (!blk_reserve(p, n)) return KV_ENOMEM;
    /* Evictions start at random map slots: walk the queued blocks this takes once to
     * fetch their slots together, instead of one miss after another. */
    size_t fresh = p->n - p->fresh, b = p->head;
    for (size_t i = fresh; i < n; i++, b = p->blk[b].next)
        if (p->blk[b].ref & BP_MAPPED) __builtin_prefetch(&p->map[slot_of(p, blk_hash(&p->blk[b]))]);
    for (size_t i = 0; i < n; i++) {
        if (p->fresh < p->n) {
            p->n_free--;
            out[i] = p->fresh++;
            p->blk[out[i]] = (bp_block){.ref = 1, .prev = BPOOL_NONE, .next = BPOOL_NONE};
            continue;
        }
        uint32_t b = p->head;
        queue_remove(p, b);
        bp_block *k = &p->blk[b];
        if (k->ref & BP_HASHED) {
            uint64_t h = blk_hash(k);
            if (k->ref & BP_MAPPED) {
                map_del(p, h, b);
                p->n_mapped--;
            }
            p->n_cached--;
            evicted[(*n_evicted)++] = h;
        }
        k->ref = 1;
        out[i] = b;
    }
    return KV_OK;
}

void bpool_release(bpool *p, const uint32_t *blocks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bp_block *k = &p->blk[blocks[i]];
        if (blk_ref(k) == 0) continue;
        if (blk_ref(k) == 1) queue_append(p, blocks[i]);
        k->ref--;
    }
}

/* k carries hash h from now on (in the map or not: the caller says). */
static void blk_give_hash(bpool *p, bp_block *k, uint64_t h)
{
    k->ref |= BP_HASHED;
    k->hash_lo = (uint32_t)h;
    k->hash_hi = (uint32_t)(h >> 32);
    p->n_cached++;
}

int bpool_set_hashes(bpool *p, const uint32_t *blocks, const uint64_t *hashes, size_t n)
{
    if (map_reserve(p, (uint32_t)n) != KV_OK) return KV_ENOMEM;
    /* The slots are random words in the map: fetch a few ahead so their misses overlap. */
    for (size_t i = 0; i < n && i < BP_AHEAD; i++) __builtin_prefetch(&p->map[slot_of(p, hashes[i])], 1);
    for (size_t i = 0; i < n; i++) {
        if (i + BP_AHEAD < n) __builtin_prefetch(&p->map[slot_of(p, hashes[i + BP_AHEAD])], 1);
        bp_block *k = &p->blk[blocks[i]];
        if (k->ref & BP_MAPPED) continue;
        if (!(k->ref & BP_HASHED)) blk_give_hash(p, k, hashes[i]);
        k->ref |= BP_MAPPED;
        map_put(p, blk_hash(k), blocks[i]);
        p->n_mapped++;
    }
    return KV_OK;
}

void bpool_set_private_hashes(bpool *p, const uint32_t *blocks, const uint64_t *hashes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bp_block *k = &p->blk[blocks[i]];
        if (!(k->ref & BP_HASHED)) blk_give_hash(p, k, hashes[i]);
    }
}
