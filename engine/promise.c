/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Promises and volume deletion: PROMISE raises a volume's promised epoch
 * durably in the promise table; DELETE_VOLUME frees a volume's chunks and
 * its promise. Both share one FIFO and run one at a time in submission
 * order, so two writes of one promise-table block never race.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

/* Index of the volume's promise-table entry, or -1 (then *free_i is
 * the first free entry, or -1 when the table is full). */
static int promise_find(const struct qbd_engine *e, uint64_t volume, int *free_i)
{
	*free_i = -1;
	for (unsigned i = 0; i < ENG_PROMISE_ENTRIES; i++) {
		if (e->promises[i].volume == volume)
			return (int)i;
		if (*free_i < 0 && e->promises[i].volume == 0)
			*free_i = (int)i;
	}
	return -1;
}

/* Start one PROMISE: done at once if already promised, else raise it in
 * memory and write the table block holding its entry. */
static void promise_start(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	int free_i, idx = promise_find(e, r->volume, &free_i);
	unsigned blk;

	if (idx >= 0 && e->promises[idx].epoch >= r->epoch) {
		r->version = e->promises[idx].epoch;
		eng_req_done(e, r, 0);
		return;
	}
	if (idx < 0)
		idx = free_i;
	if (idx < 0) {
		qbd_err("engine", "promise table full (%llu volumes)",
			(unsigned long long)ENG_PROMISE_ENTRIES);
		eng_req_done(e, r, -ENOSPC);
		return;
	}
	blk = (unsigned)idx / (B / sizeof(struct eng_promise));
	if (posix_memalign((void **)&p->bounce, B, B)) {
		eng_req_done(e, r, -ENOMEM);
		return;
	}
	e->promises[idx].volume = r->volume;
	e->promises[idx].epoch = r->epoch;
	r->version = r->epoch;
	memcpy(p->bounce, (uint8_t *)e->promises + (size_t)blk * B, B);
	p->b0 = blk;
	p->holds_prom = true;
	e->prom_busy = true;
	eng_step_go(e, r, ST_PROMISE_WRITE);
}

/* Write (blocking, no sync) the promise-table block holding entry i, as
 * it is in memory; blk is a 4 KiB aligned scratch block. */
static int promise_entry_write(struct qbd_engine *e, unsigned i, uint8_t *blk)
{
	unsigned pb = i / (B / sizeof(struct eng_promise));

	memcpy(blk, (uint8_t *)e->promises + (size_t)pb * B, B);
	return eng_pwrite(e, blk, B, ENG_PROMISE_OFF + (uint64_t)pb * B);
}

/* Write (blocking, no sync) a free-slot marker over the metadata block
 * of every chunk of the volume (the slots keep their old data until a
 * first writer zeroes them); *n counts them. -EBUSY if a chunk had a
 * request in the engine (it is left as it is, the others are marked). */
static int chunks_mark_free(struct qbd_engine *e, uint64_t volume, uint8_t *blk,
			    unsigned *n)
{
	int r = 0, w;

	*n = 0;
	for (unsigned h = 0; h < ENG_HASH; h++)
		for (struct eng_chunk *c = e->hash[h]; c; c = c->hnext) {
			if (c->volume != volume)
				continue;
			if (c->reading || c->writing || !qbd_queue_empty(&c->q)) {
				r = -EBUSY;
				continue;
			}
			eng_meta_free_marker((struct eng_meta *)blk);
			w = eng_pwrite(e, blk, B, meta_pos(e, c->slot));
			if (w < 0) {
				r = w;
			} else {
				e->held_blocks -= eng_meta_held_blocks(c->meta);
				memcpy(c->meta, blk, B);
				(*n)++;
			}
		}
	return r;
}

/* Forget the volume's chunks whose free-slot markers were written; their
 * activity log bits go too when synced (the markers are durable). */
static void chunks_forget(struct qbd_engine *e, uint64_t volume, bool synced)
{
	for (unsigned h = 0; h < ENG_HASH; h++) {
		struct eng_chunk *c = e->hash[h];
		while (c) {
			struct eng_chunk *next = c->hnext;
			if (c->volume == volume && c->meta->magic == ENG_MAGIC_FREE)
				eng_chunk_remove(e, c, synced);
			c = next;
		}
	}
	eng_al_kick(e);
}

/* Delete a volume: synchronous writes of free-slot markers and of the
 * promise, then a sync; only then do the chunks leave the activity log.
 * An administrative operation, rare; it blocks the loop for a moment. */
static int delete_volume(struct qbd_engine *e, uint64_t volume)
{
	uint8_t *blk;
	unsigned n;
	int r, w, idx, free_i;

	if (posix_memalign((void **)&blk, B, B))
		return -ENOMEM;
	r = chunks_mark_free(e, volume, blk, &n);
	idx = promise_find(e, volume, &free_i);
	if (idx >= 0) {
		memset(&e->promises[idx], 0, sizeof e->promises[idx]);
		w = promise_entry_write(e, (unsigned)idx, blk);
		if (w < 0)
			r = w;
	}
	w = eng_sync(e);
	if (w < 0 && r == 0)
		r = w;
	chunks_forget(e, volume, w == 0);
	free(blk);
	if (r < 0)
		qbd_err("engine", "delete volume %016llx: %s", (unsigned long long)volume,
			strerror(-r));
	return r;
}

/* PROMISE and DELETE_VOLUME run one at a time in submission order, so two
 * writes of one promise-table block never race. */
void eng_promise_run(struct qbd_engine *e)
{
	struct qbd_engine_req *r;

	while (!e->prom_busy && (r = reqq_first(&e->prom))) {
		/* a round's metadata writes may be in flight for its chunks */
		if (r->op == QBD_ENGINE_DELETE_VOLUME && e->round_busy)
			break;
		reqq_pop(&e->prom);
		if (r->op == QBD_ENGINE_PROMISE)
			promise_start(e, r);
		else
			eng_req_done(e, r, delete_volume(e, r->volume));
	}
}
