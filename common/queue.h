/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An intrusive FIFO: each element holds its link (struct qbd_qlink), so
 * queueing allocates nothing and cannot fail, and an element leaves from
 * any place in constant time. A zeroed queue is empty and a zeroed link
 * is on no queue, so structures from calloc need no set-up. The lists
 * end in NULL (no sentinel): a queue can be moved by assignment.
 *
 * An element is on at most one queue per link it holds (a chunk of the
 * engine has one for each list it can be on). Nothing here is thread
 * safe: a queue belongs to the thread of its owner.
 */
#ifndef QBD_QUEUE_H
#define QBD_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

struct qbd_qlink {
	struct qbd_qlink *prev, *next;
};

struct qbd_queue {
	struct qbd_qlink *head, *tail;
};

static inline void *qbd_queue_entry_at(struct qbd_qlink *l, size_t off)
{
	return l ? (char *)l - off : NULL;
}

/* The element of type holding link l as member (NULL for NULL); l is
 * evaluated once, so QBD_QUEUE_ENTRY(qbd_queue_pop(q), ...) pops one. */
#define QBD_QUEUE_ENTRY(l, type, member) \
	((type *)qbd_queue_entry_at((l), offsetof(type, member)))

static inline bool qbd_queue_empty(const struct qbd_queue *q)
{
	return q->head == NULL;
}

/* Append l, which is on no queue, at the tail. */
static inline void qbd_queue_push(struct qbd_queue *q, struct qbd_qlink *l)
{
	l->next = NULL;
	l->prev = q->tail;
	if (q->tail)
		q->tail->next = l;
	else
		q->head = l;
	q->tail = l;
}

/* Take l, which is on q, off it. */
static inline void qbd_queue_remove(struct qbd_queue *q, struct qbd_qlink *l)
{
	if (l->prev)
		l->prev->next = l->next;
	else
		q->head = l->next;
	if (l->next)
		l->next->prev = l->prev;
	else
		q->tail = l->prev;
	l->prev = l->next = NULL;
}

/* Take the head off q and return it; NULL if q is empty. */
static inline struct qbd_qlink *qbd_queue_pop(struct qbd_queue *q)
{
	struct qbd_qlink *l = q->head;

	if (l)
		qbd_queue_remove(q, l);
	return l;
}

/* Every element of q, which is left empty, in order: for draining a
 * queue whose elements may be queued again (on q too) while the
 * caller goes through them. */
static inline struct qbd_queue qbd_queue_take(struct qbd_queue *q)
{
	struct qbd_queue all = *q;

	q->head = q->tail = NULL;
	return all;
}

#endif
