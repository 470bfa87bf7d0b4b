/* prefix_index: the router-side guess of which endpoint caches which prompt block,
 * learnt from the router's own routing decisions (no KV events).
 *
 * Shared by the three approximate policies so they agree on one hashing rule and
 * one table: GIE's prefix-cache-scorer (docs/upstream/epp.md §3), the SGLang cache-aware
 * picker and the Dynamo KV picker's no-events tracker (docs/upstream/peer-routers.md §1-2).
 *
 *   block hash -> holders (a chain of per-endpoint entries), one open-addressing table;
 *   per endpoint slot, one LRU list of its entries with a capacity, trimming and
 *   time-based expiry (each entry carries the time it was last inserted).
 * Entries are array elements linked by 32-bit indexes, so the walk for a request is
 * one table probe per block plus one step per holder.
 *
 * Hashing (GIE `hashPrompt`): h0 = XXH64(targetModel + cache_salt);
 * h_i = XXH64(block_i bytes || h_{i-1} as 8 little-endian bytes). The bytes are the
 * request's prompt text; when a request has token ids and no text (the simulator),
 * the tokens' 4-byte little-endian bytes are hashed instead, block_chars/4 tokens a
 * block (GIE's own 4-characters-per-token ratio). A partial trailing block is dropped.
 *
 * Threads: none; the owning plugin serialises calls (schedulers are single-threaded). */
#ifndef KVROUTE_PREFIX_INDEX_H
#define KVROUTE_PREFIX_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler.h"

/* Block hashes of a request. Writes min(blocks, cap) hashes to out (out may be NULL
 * with cap 0 to count) and returns the number of blocks, at most max_blocks.
 * units, when not NULL, receives the prompt's length in its own unit (characters, or
 * tokens when tokens are hashed) before truncation; a request with neither is 0 blocks. */
size_t prefix_index_hash(const sched_request *r, uint32_t block_chars, size_t max_blocks, uint64_t *out,
                         size_t cap, size_t *units);
/* Units (characters or tokens) one block covers for this request. */
uint32_t prefix_index_block_units(const sched_request *r, uint32_t block_chars);

typedef struct prefix_index prefix_index;

prefix_index *prefix_index_new(void);
void prefix_index_free(prefix_index *ix);

/* Slot of an endpoint, created with the given LRU capacity (entries) on first use.
 * Returns the slot, or KV_ENOMEM. */
int prefix_index_slot(prefix_index *ix, uint32_t endpoint_id, size_t capacity);
int prefix_index_find(const prefix_index *ix, uint32_t endpoint_id);   /* slot or -1 */
uint32_t prefix_index_slots(const prefix_index *ix);                   /* slots in use: 0..n-1 */

/* Records that the slot holds hashes[0..n). Existing entries are refreshed. With
 * root_last the hashes are touched from the last to the first, so the LRU tail is
 * always a leaf of a chain (SGLang evicts leaves); GIE touches them in order.
 * Entries over the slot's capacity are evicted LRU first. KV_OK or KV_ENOMEM. */
int prefix_index_add(prefix_index *ix, int slot, const uint64_t *hashes, size_t n, double now, bool root_last);

/* Walks hashes from the start and stops at the first hash no slot holds. For every
 * hash walked each holder gets counts[slot] += 1 (GIE's rule, which also counts a
 * holder that missed an earlier block); run[slot] is the holder's consecutive match
 * from the first block. Both arrays (either may be NULL) need prefix_index_slots()
 * entries and are zeroed here. Returns the number of hashes walked. */
size_t prefix_index_match(const prefix_index *ix, const uint64_t *hashes, size_t n, uint32_t *counts,
                          uint32_t *run);

/* The request side of the three policies, so each hashes and matches the same way:
 * - prefix_index_match_cycle: r = the cycle's request, hashed into cycle memory and
 *   matched; *counts and *run (either pointer may be NULL when not wanted) are
 *   prefix_index_slots() entries as prefix_index_match leaves them. Returns the number of
 *   blocks, 0 (arrays untouched) when there is no full block, no slot, or no cycle memory
 *   (sched_schedule then fails with KV_ENOMEM).
 * - prefix_index_learn: after routing r to endpoint_id, hashes r into the index's own
 *   scratch, takes the endpoint's slot (created with capacity on first use) and adds the
 *   hashes at time now. A request with no full block changes nothing, not even the slot.
 *   KV_OK or KV_ENOMEM; callers may ignore it (the index is a hint: a missed insert costs
 *   one affinity chance, never a routing failure). */
size_t prefix_index_match_cycle(const prefix_index *ix, sched_cycle *c, uint32_t block_chars, size_t max_blocks,
                                uint32_t **counts, uint32_t **run);
int prefix_index_learn(prefix_index *ix, const sched_request *r, uint32_t block_chars, size_t max_blocks,
                       uint32_t endpoint_id, size_t capacity, double now, bool root_last);

size_t prefix_index_size(const prefix_index *ix, int slot);            /* entries held */
/* Evicts the slot's least recently inserted entries down to max; returns how many. */
size_t prefix_index_trim(prefix_index *ix, int slot, size_t max);
/* Evicts the slot's entries last inserted before cutoff; returns how many. */
size_t prefix_index_expire(prefix_index *ix, int slot, double cutoff);

#endif
