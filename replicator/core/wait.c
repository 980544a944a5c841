/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parts waiting for a chunk: a chunk with waiting parts or a resync in
 * progress has a struct cwait in a small hash table. Parts wait there in
 * arrival order for a recovery, a resync (which holds writes), the read
 * lease, or (a parked read) for the write whose data it read to commit;
 * core_cw_run starts what can start, and times out what waited too long.
 */
#include <errno.h>
#include <stdlib.h>

#include "replicator/core/internal.h"

static struct cwait **cw_slot(struct qbd_core *c, uint64_t ch)
{
	return &c->ctab[(ch * 0x9E3779B97F4A7C15ull) >> 58 & (CWBUCKETS - 1)];
}

struct cwait *core_cw_find(struct qbd_core *c, uint64_t ch)
{
	for (struct cwait *w = *cw_slot(c, ch); w; w = w->next)
		if (w->chunk == ch)
			return w;
	return NULL;
}

struct cwait *core_cw_get(struct qbd_core *c, uint64_t ch)
{
	struct cwait *w = core_cw_find(c, ch), **slot;

	if (w)
		return w;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->chunk = ch;
	slot = cw_slot(c, ch);
	w->next = *slot;
	*slot = w;
	c->ncwait++;
	return w;
}

void core_cw_maybe_free(struct qbd_core *c, struct cwait *w)
{
	struct cwait **pp;

	if (w->head || w->resyncing)
		return;
	for (pp = cw_slot(c, w->chunk); *pp != w; pp = &(*pp)->next)
		;
	*pp = w->next;
	c->ncwait--;
	free(w);
}

void core_cw_push(struct qbd_core *c, struct cwait *w, struct part *p)
{
	p->qtime = c->now;
	core_part_enqueue(&w->head, &w->tail, p);
}

/* Start part p by its kind: 0 started (or finished), QUEUE, or -errno. */
static int part_try(struct part *p)
{
	switch (p->kind) {
	case P_READ:
		return core_read_try(p);
	case P_WRITE:
		return core_write_try(p);
	case P_FLUSH:
		return core_flush_try(p);
	default:
		return -EINVAL;
	}
}

/* Try the part at the head of a queue again: 0 started or finished,
 * QUEUE, or -errno. A parked read is served once its data is committed,
 * and read again once the write it waited for failed. */
static int cw_retry(struct qbd_core *c, struct part *p)
{
	if (p->parked)
		core_commit_check(c, p->chunk);
	if (p->parked && p->gen == c->gen[p->chunk] &&
	    c->acked[p->chunk] >= p->version) {
		p->parked = false;
		core_read_done(p);
		return 0;
	}
	if (p->parked && c->wr_inflight[p->chunk])
		return QUEUE;
	if (p->parked) {
		/* The write failed: read again. */
		p->parked = false;
		p->tried = p->bad = 0;
		p->first_err = 0;
	}
	return part_try(p);
}

/* Start what can start of w's queue, in order; a part that waited longer
 * than the request timeout fails with -EIO. Frees w when it empties. */
void core_cw_run(struct qbd_core *c, struct cwait *w)
{
	while (w->head) {
		struct part *p = w->head;
		int err;

		if (p->kind == P_WRITE && w->resyncing)
			break;
		err = cw_retry(c, p);
		if (err == QUEUE) {
			if (c->now - p->qtime < c->cfg.timeout_ns)
				break;
			core_logf(c, L_ERR, "chunk %llu: no recovery within the timeout",
				  (unsigned long long)p->chunk);
			err = -EIO;
		}
		w->head = p->wnext;
		if (!w->head)
			w->tail = NULL;
		if (err)
			core_part_finish(p, err);
		core_part_put(p);
	}
	core_cw_maybe_free(c, w);
}

void core_cw_run_all(struct qbd_core *c)
{
	uint64_t *list;
	unsigned n = 0;

	if (!c->ncwait)
		return;
	/* Collect chunks first: core_cw_run frees entries. */
	list = malloc(c->ncwait * sizeof(*list));
	if (!list)
		return; /* the next tick tries again */
	for (unsigned b = 0; b < CWBUCKETS; b++)
		for (struct cwait *w = c->ctab[b]; w; w = w->next)
			if (w->head)
				list[n++] = w->chunk;
	for (unsigned i = 0; i < n; i++) {
		struct cwait *w = core_cw_find(c, list[i]);

		if (w)
			core_cw_run(c, w);
	}
	free(list);
}

/* Queue or start part p (behind the parts already waiting for its chunk,
 * and a write behind a resync of it); drops the caller's reference. */
void core_part_admit(struct qbd_core *c, struct part *p)
{
	struct cwait *w = p->kind == P_FLUSH ? NULL : core_cw_find(c, p->chunk);
	int err;

	if (w && (w->head || (p->kind == P_WRITE && w->resyncing)))
		err = QUEUE;
	else
		err = part_try(p);
	if (err == QUEUE) {
		w = core_cw_get(c, p->chunk);
		if (w)
			core_cw_push(c, w, p);
		else
			core_part_finish(p, -ENOMEM);
	} else if (err) {
		core_part_finish(p, err);
	}
	core_part_put(p);
}
