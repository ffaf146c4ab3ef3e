/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Intrusive doubly linked lists, as the kernel's list_head: the one list
 * implementation of the library and the programs.  No locking: the user
 * says which lock protects each list.
 */
#ifndef KCOPYD_COMMON_LIST_H
#define KCOPYD_COMMON_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_head {
	struct list_head *next, *prev;
};

static inline void list_init(struct list_head *h)
{
	h->next = h->prev = h;
}

static inline bool list_empty(const struct list_head *h)
{
	return h->next == h;
}

static inline void list_add(struct list_head *n, struct list_head *h)
{
	n->prev = h;
	n->next = h->next;
	h->next->prev = n;
	h->next = n;
}

static inline void list_add_tail(struct list_head *n, struct list_head *h)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static inline void list_del_init(struct list_head *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	list_init(n);
}

/* Move every entry of from to the end of to; from is left empty. */
static inline void list_splice_tail_init(struct list_head *from,
					 struct list_head *to)
{
	if (list_empty(from))
		return;
	from->next->prev = to->prev;
	to->prev->next = from->next;
	from->prev->next = to;
	to->prev = from->prev;
	list_init(from);
}

#define list_entry(ptr, type, member)					\
	((type *)((char *)(ptr) - offsetof(type, member)))

#define list_first_entry(h, type, member)				\
	list_entry((h)->next, type, member)

#define list_for_each_entry(pos, head, member)				\
	for (pos = list_first_entry(head, __typeof__(*pos), member);	\
	     &pos->member != (head);					\
	     pos = list_entry(pos->member.next, __typeof__(*pos), member))

#endif /* KCOPYD_COMMON_LIST_H */
