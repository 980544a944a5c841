/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The activity log (docs/design.md, "Activity log"): a bitmap of the
 * slots that may have writes in flight. A chunk's bit is durable before
 * any of its writes is issued (the first write of a chunk that is not
 * active waits for a log write); chunks leave the log after a sync, least
 * recently written first, once more than the target are active. The
 * recovery at open (recover.c) looks at every slot the log names.
 */
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

/* The activity log bit of a slot, in memory (written by eng_al_kick). */
bool eng_al_bit_test(const struct qbd_engine *e, uint64_t slot)
{
	const struct eng_al *a = (const void *)(e->al_buf + (slot / ENG_AL_SLOTS) * B);

	return bit_test(a->bits, (unsigned)(slot % ENG_AL_SLOTS));
}

static void al_bit(struct qbd_engine *e, uint64_t slot, bool on)
{
	struct eng_al *a = (void *)(e->al_buf + (slot / ENG_AL_SLOTS) * B);
	unsigned i = (unsigned)(slot % ENG_AL_SLOTS);

	if (bit_test(a->bits, i) == on)
		return;
	bit_set(a->bits, i, on);
	e->al_dirty[slot / ENG_AL_SLOTS] = true;
}

/* Block i of the log as it should be, ready to write from al_io. */
static void al_prepare(struct qbd_engine *e, unsigned i)
{
	struct eng_al *a = (void *)e->al_io;

	memcpy(e->al_io, e->al_buf + (size_t)i * B, B);
	a->magic = ENG_MAGIC_AL;
	a->seq = ++e->al_seq;
	a->index = i;
	a->checksum = eng_al_checksum(a);
	e->al_dirty[i] = false;
}

/* Write activity log block i from al_buf (blocking). */
static int al_write_sync(struct qbd_engine *e, unsigned i)
{
	al_prepare(e, i);
	return eng_pwrite(e, e->al_io, B, e->sb.al_off + (uint64_t)i * B);
}

/* A write of the chunk is done with it: if active, the chunk is
 * durable once a sync issued from now on completes (after its metadata
 * block is written), and it is the most recently written. */
void eng_al_written(struct qbd_engine *e, struct eng_chunk *c)
{
	if (!c->al_active)
		return;
	c->done_seq = e->sync_issued;
	qbd_queue_remove(&e->lru, &c->lru_link);
	qbd_queue_push(&e->lru, &c->lru_link);
}

/* The chunk is forgotten (eng_chunk_remove): it is no longer active;
 * with clear, its bit goes too (its state is durable), else the bit
 * stays for the recovery to look at. */
void eng_al_forget(struct qbd_engine *e, struct eng_chunk *c, bool clear)
{
	if (c->al_active) {
		qbd_queue_remove(&e->lru, &c->lru_link);
		e->al_count--;
	}
	if (clear)
		al_bit(e, c->slot, false);
}

/* Empty the log on disk: every block that is dirty or names a slot (the
 * caller has made the chunks' state durable). */
int eng_al_clear_all(struct qbd_engine *e)
{
	bool any = false;
	int r = 0;

	for (unsigned i = 0; i < e->sb.al_blocks && r == 0; i++) {
		struct eng_al *a = (void *)(e->al_buf + (size_t)i * B);
		bool set = !all_zero(a->bits, sizeof a->bits);

		memset(a->bits, 0, sizeof a->bits);
		if (set || e->al_dirty[i]) {
			r = al_write_sync(e, i);
			any = true;
		}
	}
	if (r == 0 && any)
		r = eng_sync(e);
	return r;
}

/* A WRITE/ZERO about to write: the chunk's bit must be durable in the
 * log before any of its writes is issued, so the first write of a chunk
 * that is not active waits for a log write. A chunk already active goes
 * on at once: the hot path costs no I/O. */
void eng_al_activate(struct qbd_engine *e, struct qbd_engine_req *r)
{
#ifndef QBD_ENGINE_MUTANT_NO_AL
	struct eng_priv *p = priv(r);

	if (!p->ch->al_active) {
		p->step = ST_AL_WAIT;
		reqq_push(&e->alw, r);
		eng_al_kick(e);
		return;
	}
#endif
	eng_write_go(e, r);
}

/* Start a log write if none is in flight: the block of the first waiting
 * request (with every waiter of that block, RWF_DSYNC), else a block
 * that changed through removals (a plain write: losing it only makes
 * the next recovery look at more chunks). */
void eng_al_kick(struct qbd_engine *e)
{
	struct qbd_qlink *l, *next;
	long blk = -1;

	if (e->al_busy)
		return;
	if (!qbd_queue_empty(&e->alw)) {
		blk = (long)(priv(reqq_first(&e->alw))->ch->slot / ENG_AL_SLOTS);
	} else {
		for (unsigned i = 0; i < e->sb.al_blocks && blk < 0; i++)
			if (e->al_dirty[i])
				blk = i;
	}
	if (blk < 0)
		return;
	e->al_dsync = false;
	for (l = e->alw.head; l; l = next) {
		struct qbd_engine_req *r = req_of(l);
		struct eng_priv *p = priv(r);

		next = l->next;
		if (p->ch->slot / ENG_AL_SLOTS != (uint64_t)blk)
			continue;
		qbd_queue_remove(&e->alw, l);
		reqq_push(&e->ali, r);
		al_bit(e, p->ch->slot, true);
		e->al_dsync = true;
	}
	al_prepare(e, (unsigned)blk);
	e->al_block = (unsigned)blk;
	e->al_busy = true;
	memset(priv(&e->al_req), 0, sizeof(struct eng_priv));
	eng_step_go(e, &e->al_req, ST_AL_WRITE);
}

/* The log write is complete: its requests' chunks are active (or, on an
 * error, the requests fail). */
void eng_al_done(struct qbd_engine *e, int err)
{
	struct qbd_queue done = qbd_queue_take(&e->ali);
	struct qbd_engine_req *r;

	e->al_busy = false;
	if (err < 0) {
		qbd_err("engine", "activity log write: %s", strerror(-err));
		e->al_dirty[e->al_block] = true;
	}
	while ((r = reqq_pop(&done))) {
		struct eng_chunk *c = priv(r)->ch;

		if (err < 0) {
			eng_req_done(e, r, err);
		} else {
			if (!c->al_active) {
				c->al_active = true;
				c->done_seq = e->sync_issued;
				qbd_queue_push(&e->lru, &c->lru_link);
				e->al_count++;
			}
			eng_write_go(e, r);
		}
	}
	/* Far beyond the target (no FLUSH for a while): a round of the
	 * group commit lets chunks leave, so that the recovery after a
	 * crash stays bounded. */
	if (e->al_count > 2 * e->al_target) {
		e->round_trim = true;
		eng_round_kick(e);
	}
	eng_al_kick(e);
}

/* After a sync: chunks beyond the log's target whose writes and
 * metadata block are durable leave it, least recently written first. */
void eng_al_trim(struct qbd_engine *e)
{
	struct qbd_qlink *l, *next;

	for (l = e->lru.head; l && e->al_count > e->al_target; l = next) {
		struct eng_chunk *c = QBD_QUEUE_ENTRY(l, struct eng_chunk, lru_link);

		next = l->next;
#ifndef QBD_ENGINE_MUTANT_NO_CLEAN_TRIM
		if (c->dstate != ENG_CLEAN || c->mw_busy)
			continue;
#endif
		if (c->writing || !qbd_queue_empty(&c->q) || c->done_seq >= e->sync_done)
			continue;
		qbd_queue_remove(&e->lru, l);
		c->al_active = false;
		e->al_count--;
		al_bit(e, c->slot, false);
	}
	eng_al_kick(e);
}
