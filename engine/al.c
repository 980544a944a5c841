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

static void lru_unlink(struct qbd_engine *e, struct eng_chunk *c)
{
	if (c->lprev)
		c->lprev->lnext = c->lnext;
	else
		e->lru_head = c->lnext;
	if (c->lnext)
		c->lnext->lprev = c->lprev;
	else
		e->lru_tail = c->lprev;
	c->lprev = c->lnext = NULL;
}

static void lru_append(struct qbd_engine *e, struct eng_chunk *c)
{
	c->lnext = NULL;
	c->lprev = e->lru_tail;
	if (e->lru_tail)
		e->lru_tail->lnext = c;
	else
		e->lru_head = c;
	e->lru_tail = c;
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
	lru_unlink(e, c);
	lru_append(e, c);
}

/* The chunk is forgotten (eng_chunk_remove): it is no longer active;
 * with clear, its bit goes too (its state is durable), else the bit
 * stays for the recovery to look at. */
void eng_al_forget(struct qbd_engine *e, struct eng_chunk *c, bool clear)
{
	if (c->al_active) {
		lru_unlink(e, c);
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
		p->next = NULL;
		if (e->alw_tail)
			priv(e->alw_tail)->next = r;
		else
			e->alw_head = r;
		e->alw_tail = r;
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
	struct qbd_engine_req **pp, *r;
	long blk = -1;

	if (e->al_busy)
		return;
	if (e->alw_head) {
		blk = (long)(priv(e->alw_head)->ch->slot / ENG_AL_SLOTS);
	} else {
		for (unsigned i = 0; i < e->sb.al_blocks && blk < 0; i++)
			if (e->al_dirty[i])
				blk = i;
	}
	if (blk < 0)
		return;
	e->al_dsync = false;
	e->alw_tail = NULL;
	for (pp = &e->alw_head; (r = *pp);) {
		struct eng_priv *p = priv(r);

		if (p->ch->slot / ENG_AL_SLOTS != (uint64_t)blk) {
			e->alw_tail = r;
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		p->next = NULL;
		if (e->ali_tail)
			priv(e->ali_tail)->next = r;
		else
			e->ali_head = r;
		e->ali_tail = r;
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
	struct qbd_engine_req *r = e->ali_head;

	e->ali_head = e->ali_tail = NULL;
	e->al_busy = false;
	if (err < 0) {
		qbd_err("engine", "activity log write: %s", strerror(-err));
		e->al_dirty[e->al_block] = true;
	}
	while (r) {
		struct qbd_engine_req *next = priv(r)->next;
		struct eng_chunk *c = priv(r)->ch;

		if (err < 0) {
			eng_req_done(e, r, err);
		} else {
			if (!c->al_active) {
				c->al_active = true;
				c->done_seq = e->sync_issued;
				lru_append(e, c);
				e->al_count++;
			}
			eng_write_go(e, r);
		}
		r = next;
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
	struct eng_chunk *c, *next;

	for (c = e->lru_head; c && e->al_count > e->al_target; c = next) {
		next = c->lnext;
#ifndef QBD_ENGINE_MUTANT_NO_CLEAN_TRIM
		if (c->dstate != ENG_CLEAN || c->mw_busy)
			continue;
#endif
		if (c->writing || c->q_head || c->done_seq >= e->sync_done)
			continue;
		lru_unlink(e, c);
		c->al_active = false;
		e->al_count--;
		al_bit(e, c->slot, false);
	}
	eng_al_kick(e);
}
