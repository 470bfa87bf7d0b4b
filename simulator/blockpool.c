/* blockpool: vLLM v1's block pool (free queue + prefix-cache map) in flat arrays.
 * See blockpool.h for the rules; this file owns only their mechanics. */
#include <stdlib.h>

#include "blockpool.h"

typedef struct bp_block {
    uint32_t ref;
    uint32_t prev, next;     /* free-queue links, BPOOL_NONE at the ends / when held */
    bool in_queue, hashed;
    uint64_t hash;
} bp_block;

typedef struct bp_slot {
    uint64_t hash;
    uint32_t block;          /* BPOOL_NONE: empty slot */
} bp_slot;

struct bpool {
    uint32_t n;
    bp_block *blk;
    uint32_t head, tail, n_free, n_cached;
    bp_slot *map;
    uint32_t mask;           /* map size - 1 (a power of two >= 2n) */
};

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
    uint32_t size = 1;
    while (size < 2 * n_blocks) size <<= 1;
    if (p) {
        p->blk = calloc(n_blocks, sizeof *p->blk);
        p->map = malloc((size_t)size * sizeof *p->map);
    }
    if (!p || !p->blk || !p->map) {
        bpool_free(p);
        kv_err_set(err, KV_ENOMEM, "blockpool: out of memory for %u blocks", n_blocks);
        return NULL;
    }
    p->n = n_blocks;
    p->mask = size - 1;
    for (uint32_t i = 0; i < size; i++) p->map[i].block = BPOOL_NONE;
    /* Initially every block is free, in id order. */
    for (uint32_t i = 0; i < n_blocks; i++) {
        p->blk[i].prev = i == 0 ? BPOOL_NONE : i - 1;
        p->blk[i].next = i + 1 == n_blocks ? BPOOL_NONE : i + 1;
        p->blk[i].in_queue = true;
    }
    p->head = 0;
    p->tail = n_blocks - 1;
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
uint32_t bpool_ref(const bpool *p, uint32_t b) { return p->blk[b].ref; }

size_t bpool_count_unreferenced(const bpool *p, const uint32_t *blocks, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += p->blk[blocks[i]].ref == 0;
    return k;
}

bool bpool_hash_of(const bpool *p, uint32_t b, uint64_t *hash)
{
    if (!p->blk[b].hashed) return false;
    *hash = p->blk[b].hash;
    return true;
}

/* --- hash -> block multimap ---------------------------------------------------- */

static uint32_t map_get(const bpool *p, uint64_t h)
{
    for (uint32_t i = slot_of(p, h);; i = (i + 1) & p->mask) {
        if (p->map[i].block == BPOOL_NONE) return BPOOL_NONE;
        if (p->map[i].hash == h) return p->map[i].block;
    }
}

static void map_put(bpool *p, uint64_t h, uint32_t b)
{
    uint32_t i = slot_of(p, h);
    while (p->map[i].block != BPOOL_NONE) i = (i + 1) & p->mask;
    p->map[i].hash = h;
    p->map[i].block = b;
}

/* Removes the (h, b) pair, shifting later members of the probe cluster back so that
 * lookups never need tombstones and duplicates keep their insertion order. */
static void map_del(bpool *p, uint64_t h, uint32_t b)
{
    uint32_t i = slot_of(p, h);
    while (!(p->map[i].block == b && p->map[i].hash == h)) i = (i + 1) & p->mask;
    for (uint32_t j = (i + 1) & p->mask;; j = (j + 1) & p->mask) {
        if (p->map[j].block == BPOOL_NONE) break;
        uint32_t home = slot_of(p, p->map[j].hash);
        /* j's entry may move to i if its home is not in the cyclic range (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        p->map[i] = p->map[j];
        i = j;
    }
    p->map[i].block = BPOOL_NONE;
}

/* --- free queue -------------------------------------------------------------- */

static void queue_remove(bpool *p, uint32_t b)
{
    bp_block *k = &p->blk[b];
    if (k->prev != BPOOL_NONE) p->blk[k->prev].next = k->next; else p->head = k->next;
    if (k->next != BPOOL_NONE) p->blk[k->next].prev = k->prev; else p->tail = k->prev;
    k->prev = k->next = BPOOL_NONE;
    k->in_queue = false;
    p->n_free--;
}

static void queue_append(bpool *p, uint32_t b)
{
    bp_block *k = &p->blk[b];
    k->prev = p->tail;
    k->next = BPOOL_NONE;
    if (p->tail != BPOOL_NONE) p->blk[p->tail].next = b; else p->head = b;
    p->tail = b;
    k->in_queue = true;
    p->n_free++;
}

size_t bpool_free_order(const bpool *p, uint32_t *out, size_t cap)
{
    size_t k = 0;
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
        if (k->ref == 0 && k->in_queue) queue_remove(p, blocks[i]);
        k->ref++;
    }
}

int bpool_alloc(bpool *p, size_t n, uint32_t *out, uint64_t *evicted, size_t *n_evicted)
{
    *n_evicted = 0;
    if (n > p->n_free) return KV_EFULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t b = p->head;
        queue_remove(p, b);
        bp_block *k = &p->blk[b];
        if (k->hashed) {
            map_del(p, k->hash, b);
            k->hashed = false;
            p->n_cached--;
            evicted[(*n_evicted)++] = k->hash;
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
        if (k->ref > 0 && --k->ref == 0) queue_append(p, blocks[i]);
    }
}

void bpool_set_hash(bpool *p, uint32_t b, uint64_t hash)
{
    bp_block *k = &p->blk[b];
    if (k->hashed) return;
    k->hashed = true;
    k->hash = hash;
    map_put(p, hash, b);
    p->n_cached++;
}
