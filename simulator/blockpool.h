/* blockpool: vLLM v1's KV block pool with prefix caching, for one simulated replica
 * (vllm/v1/core/block_pool.py; docs/upstream/vllm.md §3).
 *
 * Blocks are indexes 0..n-1 with a reference count and at most one cached hash. Free
 * blocks (ref 0) sit in one intrusive doubly-linked free queue, cached or not:
 *   - allocation pops from the head (least recently freed) and evicts the popped
 *     block's hash, which is logged as a removal;
 *   - a cache hit on a free block takes it out of the queue (touch);
 *   - a release appends blocks whose count drops to zero at the tail, in the order
 *     given (the server passes a request's blocks in reverse, as vLLM does, so a
 *     request's tail blocks are evicted before its prefix).
 * Hash -> block is an open-addressing multimap (linear probing, backward-shift
 * delete): vLLM allows two blocks with the same hash (a block recomputed under the
 * num_tokens-1 cap) and looks up the one cached first.
 * Arrays and 32-bit indexes only; the map grows with the hashes in it (the only
 * allocation after bpool_new).
 * Ownership: the pool owns its arrays. Single-threaded. */
#ifndef KVROUTE_SIM_BLOCKPOOL_H
#define KVROUTE_SIM_BLOCKPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kverr.h"

#define BPOOL_NONE UINT32_MAX

typedef struct bpool bpool;

/* n_blocks usable blocks (vLLM's null block is not counted here). */
bpool *bpool_new(uint32_t n_blocks, kv_err *err);
void bpool_free(bpool *p);

uint32_t bpool_num_blocks(const bpool *p);
uint32_t bpool_num_free(const bpool *p);      /* blocks with ref 0, cached or not */
uint32_t bpool_num_cached(const bpool *p);    /* blocks carrying a hash */

/* Longest run of hashes[0..n) cached, stopping at the first miss; writes the blocks to
 * out (cap >= n) and returns the run length. Does not change the pool. */
size_t bpool_match(const bpool *p, const uint64_t *hashes, size_t n, uint32_t *out);
/* Takes a reference on each block (a free one leaves the free queue). */
void bpool_touch(bpool *p, const uint32_t *blocks, size_t n);
/* Pops n blocks from the free queue's head, each with ref 1. A popped block that was
 * cached loses its hash: the evicted hashes are written to evicted (room for n) in
 * eviction order and counted in *n_evicted. KV_EFULL, with nothing changed, when fewer
 * than n are free; KV_ENOMEM, with nothing changed, when the pool's block array cannot
 * grow to take blocks never handed out before. */
int bpool_alloc(bpool *p, size_t n, uint32_t *out, uint64_t *evicted, size_t *n_evicted);
/* Drops one reference from each of blocks[0..n) in that order; blocks reaching zero
 * join the free queue's tail in that order. */
void bpool_release(bpool *p, const uint32_t *blocks, size_t n);
/* Gives each held block blocks[i] its hash hashes[i], in order, skipping blocks that
 * already carry one (vLLM's cache_full_blocks), and enters them in the map; a block with
 * a private hash (below) keeps it and enters the map. KV_ENOMEM, with nothing changed,
 * when the map cannot grow. */
int bpool_set_hashes(bpool *p, const uint32_t *blocks, const uint64_t *hashes, size_t n);
/* The same, but out of the map, for blocks whose hashes no other request can ask for
 * (the caller knows their tokens are its own: simsrv_req.unshared_tail). They are
 * counted, evicted and reported as cached blocks, but bpool_match does not find them
 * until bpool_set_hashes enters them, so that a thousand replicas caching millions of
 * such blocks do not pay a random map write to store each and another to evict it.
 * Their holder may give them their hashes as late as just before it releases them. */
void bpool_set_private_hashes(bpool *p, const uint32_t *blocks, const uint64_t *hashes, size_t n);
uint32_t bpool_ref(const bpool *p, uint32_t block);
/* How many of blocks[0..n) have no reference (sit in the free queue): what a cache
 * hit on them would take out of the free pool. */
size_t bpool_count_unreferenced(const bpool *p, const uint32_t *blocks, size_t n);
bool bpool_hash_of(const bpool *p, uint32_t block, uint64_t *hash);
/* The free queue from head to tail, for tests: writes up to cap block ids, returns the
 * queue length. */
size_t bpool_free_order(const bpool *p, uint32_t *out, size_t cap);

#endif
