/* list.h — an intrusive doubly linked list: a circular list through a head node, the node inside
 * the element (as the Linux kernel's list_head). Insert and remove are O(1) and never allocate.
 * Header only; no globals. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct llist {
    struct llist *next, *prev;
};

/* A head (or node) initialised to the empty list. A zeroed node (calloc) counts as unlinked too:
 * llist_remove() and llist_linked() accept it. */
#define LLIST_INIT(name)                                                                           \
    {                                                                                              \
        &(name), &(name)                                                                           \
    }

static inline void llist_init(struct llist *h)
{
    h->next = h->prev = h;
}

static inline bool llist_empty(const struct llist *h)
{
    return h->next == h;
}

/* Is node n on a list? */
static inline bool llist_linked(const struct llist *n)
{
    return n->next && n->next != n;
}

static inline void llist_insert_between(struct llist *n, struct llist *prev, struct llist *next)
{
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

/* At the front (a stack's order when walked) or at the back (a queue's). */
static inline void llist_add_head(struct llist *h, struct llist *n)
{
    llist_insert_between(n, h, h->next);
}

static inline void llist_add_tail(struct llist *h, struct llist *n)
{
    llist_insert_between(n, h->prev, h);
}

/* Unlink n (a no-op for a node on no list); n is left unlinked. */
static inline void llist_remove(struct llist *n)
{
    if (!llist_linked(n))
        return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

static inline size_t llist_count(const struct llist *h)
{
    size_t n = 0;
    for (const struct llist *p = h->next; p != h; p = p->next)
        n++;
    return n;
}

/* The element whose member is node. */
#define llist_entry(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))
/* The first or last element, or NULL for an empty list. */
#define llist_first(h, type, member) (llist_empty(h) ? NULL : llist_entry((h)->next, type, member))
#define llist_last(h, type, member) (llist_empty(h) ? NULL : llist_entry((h)->prev, type, member))

/* Walk the elements front to back; pos must not be removed inside (use _safe for that). */
#define llist_foreach(pos, h, member)                                                              \
    for (pos = llist_entry((h)->next, __typeof__(*pos), member); &pos->member != (h);              \
         pos = llist_entry(pos->member.next, __typeof__(*pos), member))
/* Back to front. */
#define llist_foreach_reverse(pos, h, member)                                                      \
    for (pos = llist_entry((h)->prev, __typeof__(*pos), member); &pos->member != (h);              \
         pos = llist_entry(pos->member.prev, __typeof__(*pos), member))
/* Front to back; pos may be removed (and freed) inside, tmp holds the next one. */
#define llist_foreach_safe(pos, tmp, h, member)                                                    \
    for (pos = llist_entry((h)->next, __typeof__(*pos), member),                                   \
        tmp = llist_entry(pos->member.next, __typeof__(*pos), member);                             \
         &pos->member != (h);                                                                      \
         pos = tmp, tmp = llist_entry(pos->member.next, __typeof__(*pos), member))
