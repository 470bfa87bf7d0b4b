/* idmap: endpoint id -> int64 (see idmap.h, which holds the inline lookup); linear probing, grown at 3/4 load. */
#include "idmap.h"

#include <stdbool.h>
#include <stdlib.h>

static bool idmap_grow(idmap *m)
{
    size_t nc = m->cap ? m->cap * 2 : 64;
    uint64_t *k = calloc(nc, sizeof *k);
    int64_t *v = calloc(nc, sizeof *v);
    if (!k || !v) {
        free(k);
        free(v);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = idmap_hash((uint32_t)(m->keys[i] - 1)) & (nc - 1);
        while (k[j])
            j = (j + 1) & (nc - 1);
        k[j] = m->keys[i];
        v[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = k;
    m->vals = v;
    m->cap = nc;
    return true;
}

int64_t *idmap_at(idmap *m, uint32_t id)
{
    if ((m->n + 1) * 4 > m->cap * 3 && !idmap_grow(m))
        return NULL;
    uint64_t key = (uint64_t)id + 1;
    size_t j = idmap_hash(id) & (m->cap - 1);
    while (m->keys[j] && m->keys[j] != key)
        j = (j + 1) & (m->cap - 1);
    if (!m->keys[j]) {
        m->keys[j] = key;
        m->vals[j] = 0;
        m->n++;
    }
    return &m->vals[j];
}

void idmap_free(idmap *m)
{
    free(m->keys);
    free(m->vals);
    *m = (idmap){0};
}
