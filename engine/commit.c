/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metadata group commit (docs/design.md, "Metadata in memory").
 * Metadata blocks are not written with each write: a chunk whose
 * metadata changed is dirty, and a round (for a FLUSH or a FUA write, or
 * to let chunks leave the activity log) writes the block of every dirty
 * chunk from a snapshot, then syncs. The activity log names every chunk
 * with writes that are not durable, so the recovery after a crash finds
 * what the blocks on disk hold. One round at a time, so a chunk's
 * metadata block is never written twice at once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

/* The metadata writers: ENG_MW blocks and their free list (freed by
 * qbd_engine_close). */
int eng_commit_init(struct qbd_engine *e)
{
	if (posix_memalign((void **)&e->mw_bufs, B, ENG_MW * B))
		return -ENOMEM;
	for (unsigned i = 0; i < ENG_MW; i++) {
		e->mw[i].buf = e->mw_bufs + (size_t)i * B;
		e->mw[i].next = e->mw_free;
		e->mw_free = &e->mw[i];
	}
	return 0;
}

static struct eng_chunk *meta_chunk(struct qbd_qlink *l)
{
	return QBD_QUEUE_ENTRY(l, struct eng_chunk, meta_link);
}

/* The chunk's metadata changed in memory: its block is to be written by
 * the next round of the group commit (or a clean close). */
void eng_meta_dirty(struct qbd_engine *e, struct eng_chunk *c)
{
	if (c->dstate != ENG_CLEAN)
		return;
	c->dstate = ENG_DIRTY;
	qbd_queue_push(&e->dirty, &c->meta_link);
}

/* The chunk is forgotten (eng_chunk_remove): it leaves the dirty
 * list, or the list of the round running (its metadata block write is
 * not in flight). */
void eng_commit_forget(struct qbd_engine *e, struct eng_chunk *c)
{
	if (c->dstate == ENG_DIRTY)
		qbd_queue_remove(&e->dirty, &c->meta_link);
	else if (c->dstate == ENG_ROUND)
		qbd_queue_remove(&e->round, &c->meta_link);
	c->dstate = ENG_CLEAN;
}

/* The chunk's metadata block as it is to be written now: its in-memory
 * metadata with its current flags and bad blocks. */
static void meta_snapshot(struct eng_chunk *c, void *buf)
{
	struct eng_meta *m = buf;

	memcpy(m, c->meta, B);
	m->flags = c->flags;
	memcpy(m->bad, c->bad, sizeof m->bad);
	m->checksum = 0;
	m->checksum = XXH3_64bits(m, sizeof *m);
	c->flags_dirty = false;
}

/* Issue the round's next metadata writes, one per free writer, each
 * from a snapshot (the chunk takes writes meanwhile: they make it dirty
 * again, for the next round); all written, the sync. */
static void round_next(struct qbd_engine *e)
{
	struct eng_chunk *c;
	struct eng_mw *w;

	while ((c = meta_chunk(e->round.head)) && (w = e->mw_free)) {
		struct eng_priv *p = priv(&w->req);

		e->mw_free = w->next;
		qbd_queue_remove(&e->round, &c->meta_link);
		c->dstate = ENG_CLEAN;
		c->mw_busy = true;
		meta_snapshot(c, w->buf);
		memset(p, 0, sizeof *p);
		p->ch = c;
		p->bounce = w->buf;
		p->borrowed = true;
		e->round_mw++;
		eng_step_go(e, &w->req, ST_WRITE_META);
	}
	if (qbd_queue_empty(&e->round) && !e->round_mw && !e->round_sync) {
		e->round_sync = true;
		memset(priv(&e->sync_req), 0, sizeof(struct eng_priv));
		eng_step_go(e, &e->sync_req, ST_FSYNC);
	}
}

/* Start a round if none runs and one is wanted: it covers the FLUSH and
 * FUA requests waiting now, and writes the metadata block of every chunk
 * dirty now (whose in-memory metadata holds every write completed
 * before), then syncs. */
void eng_round_kick(struct qbd_engine *e)
{
	if (e->round_busy || (qbd_queue_empty(&e->fl) && !e->round_trim))
		return;
	e->round_busy = true;
	e->round_trim = false;
	e->round_err = 0;
	e->rd = qbd_queue_take(&e->fl);
#ifndef QBD_ENGINE_MUTANT_NO_META_FLUSH
	for (struct qbd_qlink *l = e->dirty.head; l; l = l->next)
		meta_chunk(l)->dstate = ENG_ROUND;
	e->round = qbd_queue_take(&e->dirty);
#endif
	round_next(e);
}

/* A FLUSH, or a FUA write whose data is on the device, waits for the
 * next round. */
void eng_flush_enqueue(struct qbd_engine *e, struct qbd_engine_req *r)
{
	reqq_push(&e->fl, r);
	eng_round_kick(e);
}

void eng_mw_done(struct qbd_engine *e, struct qbd_engine_req *r, int err)
{
	struct eng_mw *w = (struct eng_mw *)r; /* req is its first member */
	struct eng_chunk *c = priv(r)->ch;

	c->mw_busy = false;
	if (err < 0) {
		qbd_err("engine", "metadata write of volume %016llx chunk %llu: %s",
			(unsigned long long)c->volume, (unsigned long long)c->chunk,
			strerror(-err));
		if (!e->round_err)
			e->round_err = err;
		c->flags_dirty = true;
		eng_meta_dirty(e, c); /* the next round writes it again */
	} else if (c->dstate == ENG_CLEAN) {
		c->done_seq = e->sync_issued;
	}
	w->next = e->mw_free;
	e->mw_free = w;
	e->round_mw--;
	round_next(e);
}

/* The round's sync is complete: its requests are. A DELETE_VOLUME
 * waiting for the round runs before the next round starts. */
void eng_round_done(struct qbd_engine *e, int err)
{
	struct qbd_queue done = qbd_queue_take(&e->rd);
	struct qbd_engine_req *r;

	if (err == 0)
		err = e->round_err;
	if (err < 0)
		qbd_err("engine", "flush: %s", strerror(-err));
	e->round_busy = false;
	e->round_sync = false;
	while ((r = reqq_pop(&done)))
		eng_req_done(e, r, err < 0 ? err : r->op == QBD_ENGINE_FLUSH ? 0 : (int)r->length);
	eng_promise_run(e);
	eng_round_kick(e);
}

/* Clean close: write the metadata blocks of dirty chunks and of chunks
 * whose flags changed since their last meta write (DAMAGED found by
 * reads), sync, empty the activity log. */
int eng_commit_close(struct qbd_engine *e)
{
	uint8_t *blk = e->mw_bufs;
	int r = 0;

	while (!qbd_queue_empty(&e->dirty) && r == 0) {
		struct eng_chunk *c = meta_chunk(qbd_queue_pop(&e->dirty));

		c->dstate = ENG_CLEAN;
		meta_snapshot(c, blk);
		r = eng_pwrite(e, blk, B, meta_pos(e, c->slot));
	}
	for (struct qbd_qlink *l = e->flagged.tail; l && r == 0; l = l->prev) {
		struct eng_chunk *c = QBD_QUEUE_ENTRY(l, struct eng_chunk, flagged_link);

		if (!c->flags_dirty)
			continue;
		meta_snapshot(c, blk);
		r = eng_pwrite(e, blk, B, meta_pos(e, c->slot));
	}
	if (r == 0)
		r = eng_sync(e);
	if (r == 0)
		r = eng_al_clear_all(e);
	return r;
}
