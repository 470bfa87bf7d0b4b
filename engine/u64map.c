/* u64map: the open-addressing map (see u64map.h). */
#include "u64map.h"

#include <stdbool.h>
#include <stdlib.h>

#include "kverr.h"

static int u64map_grow(u64map *m)
{
    size_t cap = m->t ? 2 * (m->mask + 1) : 64;
    if (cap > SIZE_MAX / sizeof(u64map_ent))
        return KV_ENOMEM;
    u64map_ent *nt = malloc(cap * sizeof *nt);
    if (!nt)
        return KV_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        nt[i].val = U64MAP_NONE;
    u64map old = *m;
    m->t = nt;
    m->mask = cap - 1;
    if (old.t) {
        for (size_t i = 0; i <= old.mask; i++)
            if (old.t[i].val != U64MAP_NONE)
                *u64map_slot(m, old.t[i].key) = old.t[i];
        free(old.t);
    }
    return KV_OK;
}

int u64map_put(u64map *m, uint64_t key, uint32_t val)
{
    if (!m->t || (m->used + 1) * 10 > (m->mask + 1) * 7) {
        int rc = u64map_grow(m);
        if (rc)
            return rc;
    }
    u64map_ent *e = u64map_slot(m, key);
    if (e->val == U64MAP_NONE)
        m->used++;
    e->key = key;
    e->val = val;
    return KV_OK;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
void u64map_del(u64map *m, uint64_t key)
{
    u64map_ent *e = u64map_slot(m, key);
    if (!e || e->val == U64MAP_NONE)
        return;
    size_t i = (size_t)(e - m->t);
    for (size_t j = (i + 1) & m->mask; m->t[j].val != U64MAP_NONE; j = (j + 1) & m->mask) {
        size_t h = u64map_home(m, m->t[j].key);
        /* Move j back to the hole at i when its home is not within (i, j]. */
        bool between = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (!between) {
            m->t[i] = m->t[j];
            i = j;
        }
    }
    m->t[i].val = U64MAP_NONE;
    m->used--;
}

void u64map_free(u64map *m)
{
    free(m->t);
    *m = (u64map){0};
}
