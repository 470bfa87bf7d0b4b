/* ilist: a doubly-linked list threaded through an array by 32-bit element indices, most
 * recent at the head: the LRU order of kvindex's request keys and of each endpoint's
 * entries in prefix_index, which were two copies of the same list. The links live in the
 * caller's elements (an ilist_link member), so the list allocates nothing and an element
 * is unlinked in O(1) by its index; header-only so the indexes' hot paths inline it.
 * Threads: none of its own; the owner's lock covers it. */
#ifndef KVROUTE_ILIST_H
#define KVROUTE_ILIST_H

#include <stddef.h>
#include <stdint.h>

#define ILIST_NIL UINT32_MAX

typedef struct ilist_link {
    uint32_t prev, next;   /* toward the head, toward the tail; ILIST_NIL past either end */
} ilist_link;

typedef struct ilist {
    uint32_t head, tail;   /* most and least recent; ILIST_NIL when empty */
} ilist;

#define ILIST_EMPTY ((ilist){.head = ILIST_NIL, .tail = ILIST_NIL})

/* The link of element i, where base is element 0's link and stride the element size. */
static inline ilist_link *ilist_at(void *base, size_t stride, uint32_t i)
{
    return (ilist_link *)((char *)base + (size_t)i * stride);
}

static inline void ilist_unlink(ilist *l, void *base, size_t stride, uint32_t i)
{
    ilist_link *x = ilist_at(base, stride, i);
    if (x->prev != ILIST_NIL)
        ilist_at(base, stride, x->prev)->next = x->next;
    else
        l->head = x->next;
    if (x->next != ILIST_NIL)
        ilist_at(base, stride, x->next)->prev = x->prev;
    else
        l->tail = x->prev;
}

static inline void ilist_push_front(ilist *l, void *base, size_t stride, uint32_t i)
{
    ilist_link *x = ilist_at(base, stride, i);
    x->prev = ILIST_NIL;
    x->next = l->head;
    if (l->head != ILIST_NIL)
        ilist_at(base, stride, l->head)->prev = i;
    else
        l->tail = i;
    l->head = i;
}

#endif
