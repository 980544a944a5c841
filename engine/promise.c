/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Promises, tombstones and volume deletion: PROMISE raises a volume's
 * promised epoch durably in the promise table; TOMBSTONE turns the
 * volume's entry into a tombstone (the store may serve the volume under
 * no epoch: a replica removed from it) and frees its chunks; PROMISE
 * with F_READD clears a tombstone for a writer adding the node back;
 * DELETE_VOLUME frees a volume's chunks and its entry. They share one
 * FIFO and run one at a time in submission order, so two writes of one
 * promise-table block never race.
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

static void promise_table_full(const struct qbd_engine *e)
{
	unsigned tomb = 0;

	for (unsigned i = 0; i < ENG_PROMISE_ENTRIES; i++)
		tomb += (e->promises[i].flags & ENG_PROMISE_TOMBSTONE) != 0;
	qbd_err("engine", "promise table full (%llu volumes, %u of them tombstones)",
		(unsigned long long)ENG_PROMISE_ENTRIES, tomb);
}

/* Start one PROMISE: done at once if already promised, else raise it in
 * memory and write the table block holding its entry. */
static void promise_start(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	int free_i, idx = promise_find(e, r->volume, &free_i);
	unsigned blk;

	if (idx >= 0 && (e->promises[idx].flags & ENG_PROMISE_TOMBSTONE)) {
		r->version = e->promises[idx].epoch;
		eng_req_done(e, r, -EIDRM);
		return;
	}
	if (idx >= 0 && e->promises[idx].epoch >= r->epoch) {
		r->version = e->promises[idx].epoch;
		eng_req_done(e, r, 0);
		return;
	}
	if (idx < 0)
		idx = free_i;
	if (idx < 0) {
		promise_table_full(e);
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

/* Free (blocking) what is left of a volume's chunks: their markers,
 * then a sync if there were any. 0, -EBUSY (a chunk had a request in
 * the engine and stays), or an I/O error. */
static int chunks_free(struct qbd_engine *e, uint64_t volume, uint8_t *blk)
{
	unsigned n;
	int r = chunks_mark_free(e, volume, blk, &n), w;

	if (n == 0)
		return r;
	w = eng_sync(e);
	if (w < 0 && r == 0)
		r = w;
	chunks_forget(e, volume, w == 0);
	return r;
}

/*
 * TOMBSTONE (blocking): the volume's entry becomes a tombstone, made
 * durable before any of its chunks is freed, so that no crash leaves a
 * store that holds neither the volume's chunks nor its tombstone (it
 * would promise the volume afresh, as an empty replica: a removed node
 * wiped is exactly what the tombstone is there to refuse). If the write
 * of the tombstone fails, it stands in memory (the safe side) and no
 * chunk is freed.
 */
static int tombstone_volume(struct qbd_engine *e, struct qbd_engine_req *r)
{
	int free_i, idx = promise_find(e, r->volume, &free_i), rc = 0;
	struct eng_promise *pe;
	uint8_t *blk;

	if (idx >= 0 && r->epoch < e->promises[idx].epoch) {
		r->version = e->promises[idx].epoch;
		return -EPERM;
	}
	if (idx < 0 && free_i < 0) {
		promise_table_full(e);
		return -ENOSPC;
	}
	if (posix_memalign((void **)&blk, B, B))
		return -ENOMEM;
	pe = &e->promises[idx >= 0 ? idx : free_i];
	if (idx < 0 || !(pe->flags & ENG_PROMISE_TOMBSTONE) || pe->epoch < r->epoch) {
		pe->volume = r->volume;
		pe->epoch = r->epoch;
		pe->flags = ENG_PROMISE_TOMBSTONE;
		rc = promise_entry_write(e, (unsigned)(pe - e->promises), blk);
#ifndef QBD_ENGINE_MUTANT_NO_TOMBSTONE_SYNC
		if (rc == 0)
			rc = eng_sync(e);
#endif
	}
	if (rc == 0)
		rc = chunks_free(e, r->volume, blk);
	r->version = pe->epoch;
	free(blk);
	if (rc < 0)
		qbd_err("engine", "tombstone of volume %016llx: %s", (unsigned long long)r->volume,
			strerror(-rc));
	return rc;
}

/*
 * PROMISE with F_READD of a volume with a tombstone, entry idx
 * (blocking): what is left of its chunks is freed first (a node added
 * back starts empty), then the tombstone gives way to a promise of the
 * request's epoch, durably. On failure the tombstone stands.
 */
static int readd_volume(struct qbd_engine *e, struct qbd_engine_req *r, unsigned idx)
{
	struct eng_promise *pe = &e->promises[idx], was = *pe;
	uint8_t *blk;
	int rc;

	r->version = pe->epoch;
	/* At the tombstone's own epoch: the writer that removed the node,
	 * the only one at that epoch, adds it back (its record says so). */
	if (r->epoch < pe->epoch)
		return -EPERM;
	if (posix_memalign((void **)&blk, B, B))
		return -ENOMEM;
	rc = chunks_free(e, r->volume, blk);
	if (rc == 0) {
		pe->epoch = r->epoch;
		pe->flags = 0;
		rc = promise_entry_write(e, idx, blk);
		if (rc == 0)
			rc = eng_sync(e);
		if (rc < 0)
			*pe = was;
	}
	r->version = pe->epoch;
	free(blk);
	if (rc < 0)
		qbd_err("engine", "re-add of volume %016llx at epoch %llu: %s",
			(unsigned long long)r->volume, (unsigned long long)r->epoch,
			strerror(-rc));
	return rc;
}

/* The entry of the volume's tombstone, or -1. */
static int tombstone_find(const struct qbd_engine *e, uint64_t volume)
{
	int free_i, idx = promise_find(e, volume, &free_i);

	return idx >= 0 && (e->promises[idx].flags & ENG_PROMISE_TOMBSTONE) ? idx : -1;
}

bool qbd_engine_tombstoned(const struct qbd_engine *e, uint64_t volume, uint64_t *epoch)
{
	int idx = volume ? tombstone_find(e, volume) : -1;

	if (epoch)
		*epoch = idx >= 0 ? e->promises[idx].epoch : 0;
	return idx >= 0;
}

/* A request of the FIFO that frees chunks (blocking writes of their
 * metadata blocks): it waits until no round of the group commit is
 * writing metadata blocks. */
static bool frees_chunks(const struct qbd_engine *e, const struct qbd_engine_req *r)
{
	return r->op == QBD_ENGINE_DELETE_VOLUME || r->op == QBD_ENGINE_TOMBSTONE ||
	       (r->op == QBD_ENGINE_PROMISE && (r->flags & QBD_ENGINE_F_READD) &&
		tombstone_find(e, r->volume) >= 0);
}

/* PROMISE, TOMBSTONE and DELETE_VOLUME run one at a time in submission
 * order, so two writes of one promise-table block never race. */
void eng_promise_run(struct qbd_engine *e)
{
	struct qbd_engine_req *r;

	while (!e->prom_busy && (r = reqq_first(&e->prom))) {
		bool blocking = frees_chunks(e, r);

		/* a round's metadata writes may be in flight for its chunks */
		if (blocking && e->round_busy)
			break;
		reqq_pop(&e->prom);
		if (r->op == QBD_ENGINE_TOMBSTONE)
			eng_req_done(e, r, tombstone_volume(e, r));
		else if (r->op == QBD_ENGINE_DELETE_VOLUME)
			eng_req_done(e, r, delete_volume(e, r->volume));
		else if (blocking)
			eng_req_done(e, r, readd_volume(e, r, (unsigned)tombstone_find(e, r->volume)));
		else
			promise_start(e, r);
	}
}
