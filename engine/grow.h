/* grow: the growable-array helper of the engine and of everything built on it (config,
 * scheduler, policies), so that the doubling and its overflow checks exist once.
 * No state: any thread may call it on arrays it owns. */
#ifndef KVROUTE_GROW_H
#define KVROUTE_GROW_H

#include <stdbool.h>
#include <stddef.h>

/* grow_array when there is not room already. */
bool grow_array_realloc(void **arr, size_t *cap, size_t need, size_t elem);

/* Makes room for need elements of elem bytes in *arr (capacity *cap elements), doubling
 * from 16. false, with *arr and *cap untouched, when out of memory or the size overflows.
 * Inline because nearly every call already has room (a push per token, per KV event,
 * per step), and then it is one compare, not a call into another object. */
static inline bool grow_array(void **arr, size_t *cap, size_t need, size_t elem)
{
    return need <= *cap || grow_array_realloc(arr, cap, need, elem);
}

#endif
