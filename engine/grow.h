/* grow: the growable-array helper of the engine and of everything built on it (config,
 * scheduler, policies), so that the doubling and its overflow checks exist once.
 * No state: any thread may call it on arrays it owns. */
#ifndef KVROUTE_GROW_H
#define KVROUTE_GROW_H

#include <stdbool.h>
#include <stddef.h>

/* Makes room for need elements of elem bytes in *arr (capacity *cap elements), doubling
 * from 16. false, with *arr and *cap untouched, when out of memory or the size overflows. */
bool grow_array(void **arr, size_t *cap, size_t need, size_t elem);

#endif
