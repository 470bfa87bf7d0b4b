/* prefix_index: approximate block index of the router's own routing decisions
 * (see prefix_index.h). A linear-probing table (u64map: block hash -> first holder
 * entry) over one entry array, plus an endpoint id map (idmap: id -> slot + 1); entries
 * link into their hash's holder chain and their slot's LRU list (ilist) by index, freed
 * entries into a free list. */
#include "prefix_index.h"
#include "grow.h"
#include "ilist.h"
#include "policy_util.h"
#include "u64map.h"

#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack */
#include <xxhash.h>

#define NIL UINT32_MAX

/* ---- hashing ------------------------------------------------------------------- */

uint32_t prefix_index_block_units(const sched_request *r, uint32_t block_chars)
{
    if (r->prompt && r->prompt_len > 0)
        return block_chars;
    return block_chars / 4;
}

static uint64_t chain_root(const sched_request *r)
{
    const char *model = r->target_model ? r->target_model : (r->model ? r->model : "");
    const char *salt = r->cache_salt ? r->cache_salt : "";
    XXH64_state_t st;
    XXH64_reset(&st, 0);
    XXH64_update(&st, model, strlen(model));
    XXH64_update(&st, salt, strlen(salt));
    return XXH64_digest(&st);
}

static void le64(uint64_t v, unsigned char out[8])
{
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(v >> (8 * i));
}

size_t prefix_index_hash(const sched_request *r, uint32_t block_chars, size_t max_blocks, uint64_t *out,
                         size_t cap, size_t *units)
{
    bool text = r->prompt && r->prompt_len > 0;
    size_t len = text ? r->prompt_len : (r->tokens ? r->n_tokens : 0);
    uint32_t bu = prefix_index_block_units(r, block_chars);
    if (units)
        *units = len;
    if (bu == 0 || len < bu)
        return 0;
    size_t n = len / bu;
    if (n > max_blocks)
        n = max_blocks;
    if (!out || cap == 0)
        return n;
    uint64_t prev = chain_root(r);
    XXH64_state_t st;
    unsigned char parent[8], buf[256];
    for (size_t b = 0; b < n && b < cap; b++) {
        XXH64_reset(&st, 0);
        if (text) {
            XXH64_update(&st, r->prompt + b * bu, bu);
        } else {
            /* Token ids as little-endian bytes, batched to keep update calls few. */
            const uint32_t *t = r->tokens + b * bu;
            size_t fill = 0;
            for (uint32_t k = 0; k < bu; k++) {
                for (int s = 0; s < 4; s++)
                    buf[fill++] = (unsigned char)(t[k] >> (8 * s));
                if (fill == sizeof buf) {
                    XXH64_update(&st, buf, fill);
                    fill = 0;
                }
            }
            XXH64_update(&st, buf, fill);
        }
        le64(prev, parent);
        XXH64_update(&st, parent, sizeof parent);
        prev = XXH64_digest(&st);
        out[b] = prev;
    }
    return n;
}

/* ---- the index --------------------------------------------------------------------- */

typedef struct {
    uint64_t hash;
    double stamp;        /* time of the last insert */
    uint32_t slot;
    ilist_link lru;      /* the slot's LRU list, most recent at head; free list uses next */
    uint32_t holder;     /* next entry of the same hash */
} entry;

typedef struct {
    ilist order;
    size_t count, cap;
} lru;

struct prefix_index {
    u64map blocks;       /* hash -> first holder entry */
    idmap ids;        /* endpoint id -> slot + 1 */
    entry *e;
    uint32_t n_e, free_e;
    size_t cap_e;
    lru *slots;
    uint32_t n_slots;
    size_t cap_slots;
    uint64_t *scratch;   /* prefix_index_learn's hashes, reused across requests */
    size_t cap_scratch;
};

prefix_index *prefix_index_new(void)
{
    prefix_index *ix = calloc(1, sizeof *ix);
    if (ix)
        ix->free_e = NIL;
    return ix;
}

void prefix_index_free(prefix_index *ix)
{
    if (!ix)
        return;
    u64map_free(&ix->blocks);
    idmap_free(&ix->ids);
    free(ix->e);
    free(ix->slots);
    free(ix->scratch);
    free(ix);
}

int prefix_index_find(const prefix_index *ix, uint32_t endpoint_id)
{
    return (int)idmap_get(&ix->ids, endpoint_id, 0) - 1;
}

uint32_t prefix_index_slots(const prefix_index *ix)
{
    return ix->n_slots;
}

int prefix_index_slot(prefix_index *ix, uint32_t endpoint_id, size_t capacity)
{
    int s = prefix_index_find(ix, endpoint_id);
    if (s >= 0)
        return s;
    if (!grow_array((void **)&ix->slots, &ix->cap_slots, (size_t)ix->n_slots + 1, sizeof *ix->slots))
        return KV_ENOMEM;
    int64_t *v = idmap_at(&ix->ids, endpoint_id);
    if (!v)
        return KV_ENOMEM;
    *v = (int64_t)ix->n_slots + 1;
    ix->slots[ix->n_slots] = (lru){.order = ILIST_EMPTY, .count = 0, .cap = capacity ? capacity : 1};
    return (int)ix->n_slots++;
}

size_t prefix_index_size(const prefix_index *ix, int slot)
{
    return slot >= 0 && (uint32_t)slot < ix->n_slots ? ix->slots[slot].count : 0;
}

static void lru_unlink(prefix_index *ix, uint32_t i)
{
    ilist_unlink(&ix->slots[ix->e[i].slot].order, &ix->e->lru, sizeof *ix->e, i);
}

static void lru_push_front(prefix_index *ix, uint32_t i)
{
    ilist_push_front(&ix->slots[ix->e[i].slot].order, &ix->e->lru, sizeof *ix->e, i);
}

static void evict(prefix_index *ix, uint32_t i)
{
    entry *x = &ix->e[i];
    lru_unlink(ix, i);
    ix->slots[x->slot].count--;
    u64map_ent *me = u64map_slot(&ix->blocks, x->hash);
    if (me->val == i) {
        if (x->holder == NIL)
            u64map_del(&ix->blocks, x->hash);
        else
            me->val = x->holder;
    } else {
        uint32_t p = me->val;
        while (ix->e[p].holder != i)
            p = ix->e[p].holder;
        ix->e[p].holder = x->holder;
    }
    x->lru.next = ix->free_e;
    ix->free_e = i;
}

static uint32_t entry_alloc(prefix_index *ix)
{
    if (ix->free_e != NIL) {
        uint32_t i = ix->free_e;
        ix->free_e = ix->e[i].lru.next;
        return i;
    }
    /* entry indices are 32-bit, NIL excluded */
    if (ix->n_e == NIL - 1 || !grow_array((void **)&ix->e, &ix->cap_e, (size_t)ix->n_e + 1, sizeof *ix->e))
        return NIL;
    return ix->n_e++;
}

static int add_one(prefix_index *ix, uint32_t slot, uint64_t hash, double now)
{
    uint32_t head = u64map_get(&ix->blocks, hash);
    for (uint32_t i = head; i != NIL; i = ix->e[i].holder) {
        if (ix->e[i].slot == slot) {
            lru_unlink(ix, i);
            lru_push_front(ix, i);
            ix->e[i].stamp = now;
            return KV_OK;
        }
    }
    lru *l = &ix->slots[slot];
    if (l->count >= l->cap) {
        uint32_t victim = l->order.tail;
        /* The victim may be the head of this very hash's chain; re-read after. */
        evict(ix, victim);
        head = u64map_get(&ix->blocks, hash);
    }
    uint32_t i = entry_alloc(ix);
    if (i == NIL)
        return KV_ENOMEM;
    if (u64map_put(&ix->blocks, hash, i)) {
        ix->e[i].lru.next = ix->free_e;
        ix->free_e = i;
        return KV_ENOMEM;
    }
    ix->e[i] = (entry){.hash = hash, .stamp = now, .slot = slot, .holder = head};
    lru_push_front(ix, i);
    l->count++;
    return KV_OK;
}

int prefix_index_add(prefix_index *ix, int slot, const uint64_t *hashes, size_t n, double now, bool root_last)
{
    if (slot < 0 || (uint32_t)slot >= ix->n_slots)
        return KV_EINVAL;
    for (size_t k = 0; k < n; k++) {
        int rc = add_one(ix, (uint32_t)slot, hashes[root_last ? n - 1 - k : k], now);
        if (rc)
            return rc;
    }
    return KV_OK;
}

size_t prefix_index_match(const prefix_index *ix, const uint64_t *hashes, size_t n, uint32_t *counts,
                          uint32_t *run)
{
    if (counts)
        memset(counts, 0, ix->n_slots * sizeof *counts);
    if (run)
        memset(run, 0, ix->n_slots * sizeof *run);
    size_t k = 0;
    for (; k < n; k++) {
        uint32_t i = u64map_get(&ix->blocks, hashes[k]);
        if (i == NIL)
            break;
        for (; i != NIL; i = ix->e[i].holder) {
            uint32_t s = ix->e[i].slot;
            if (counts)
                counts[s]++;
            if (run && run[s] == k)
                run[s]++;
        }
    }
    return k;
}

size_t prefix_index_match_cycle(const prefix_index *ix, sched_cycle *c, uint32_t block_chars, size_t max_blocks,
                                uint32_t **counts, uint32_t **run)
{
    const sched_request *r = sched_cycle_request(c);
    size_t total = prefix_index_hash(r, block_chars, max_blocks, NULL, 0, NULL);
    if (total == 0 || ix->n_slots == 0)
        return 0;
    uint64_t *hashes = sched_cycle_alloc(c, total * sizeof *hashes);
    uint32_t *cs = counts ? sched_cycle_alloc(c, ix->n_slots * sizeof *cs) : NULL;
    uint32_t *rs = run ? sched_cycle_alloc(c, ix->n_slots * sizeof *rs) : NULL;
    if (!hashes || (counts && !cs) || (run && !rs))
        return 0;
    prefix_index_hash(r, block_chars, max_blocks, hashes, total, NULL);
    prefix_index_match(ix, hashes, total, cs, rs);
    if (counts)
        *counts = cs;
    if (run)
        *run = rs;
    return total;
}

int prefix_index_learn(prefix_index *ix, const sched_request *r, uint32_t block_chars, size_t max_blocks,
                       uint32_t endpoint_id, size_t capacity, double now, bool root_last)
{
    size_t total = prefix_index_hash(r, block_chars, max_blocks, NULL, 0, NULL);
    if (total == 0)
        return KV_OK;
    if (!grow_array((void **)&ix->scratch, &ix->cap_scratch, total, sizeof *ix->scratch))
        return KV_ENOMEM;
    prefix_index_hash(r, block_chars, max_blocks, ix->scratch, total, NULL);
    int slot = prefix_index_slot(ix, endpoint_id, capacity);
    if (slot < 0)
        return slot;
    return prefix_index_add(ix, slot, ix->scratch, total, now, root_last);
}

size_t prefix_index_trim(prefix_index *ix, int slot, size_t max)
{
    if (slot < 0 || (uint32_t)slot >= ix->n_slots)
        return 0;
    size_t n = 0;
    while (ix->slots[slot].count > max) {
        evict(ix, ix->slots[slot].order.tail);
        n++;
    }
    return n;
}

size_t prefix_index_expire(prefix_index *ix, int slot, double cutoff)
{
    if (slot < 0 || (uint32_t)slot >= ix->n_slots)
        return 0;
    size_t n = 0;
    while (ix->slots[slot].order.tail != NIL && ix->e[ix->slots[slot].order.tail].stamp < cutoff) {
        evict(ix, ix->slots[slot].order.tail);
        n++;
    }
    return n;
}
