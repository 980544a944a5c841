/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Flushes: a flush answers for the chunks acknowledged since the previous
 * one (the dirty list), and succeeds when W current replicas of each have
 * flushed. One flush is in flight at a time (core_flush_try says why). Also
 * the flush a replica gets when it reconnects, before any write follows.
 */
#include <errno.h>
#include <stdlib.h>

#include "replicator/core/internal.h"

/* ch was acknowledged (a write without FUA): the next flush answers for
 * it. Without memory for the list, the next flush needs every replica. */
void core_dirty_add(struct qbd_core *c, uint64_t ch)
{
	uint64_t m = 1ull << (ch % 64);

	if (c->dirty_bm[ch / 64] & m)
		return;
	if (c->ndirty == c->dirty_cap) {
		size_t cap = c->dirty_cap ? c->dirty_cap * 2 : 64;
		uint64_t *d = realloc(c->dirty, cap * sizeof(*d));

		if (!d) {
			/* Without the list a flush cannot name the chunk:
			 * the next flush then needs every replica. */
			core_logf(c, L_ERR, "out of memory tracking chunk %llu for flush",
				  (unsigned long long)ch);
			c->dirty_lost = true;
			return;
		}
		c->dirty = d;
		c->dirty_cap = cap;
	}
	c->dirty_bm[ch / 64] |= m;
	c->dirty[c->ndirty++] = ch;
}

static bool flush_ok(const struct part *p)
{
	const struct qbd_core *c = p->c;

	if (p->all ? (p->okset & core_voters(c)) != core_voters(c) : !core_wq(c, p->okset))
		return false;
	for (size_t i = 0; i < p->ndirty; i++)
		if (!core_wq(c, p->okset & core_current_set(c, p->dirty[i])))
			return false;
	return true;
}

static void flush_fail(struct part *p, int res)
{
	struct qbd_core *c = p->c;

	/* The chunks stay owed to the next flush. */
	c->dirty_lost |= p->all;
	for (size_t i = 0; i < p->ndirty; i++)
		core_dirty_add(c, p->dirty[i]);
	core_part_finish(p, res);
}

/*
 * One flush is in flight at a time; flushes submitted meanwhile wait and
 * then go out together as the next one. A flush answers for the chunks
 * acknowledged before it was submitted, and those the flush in flight
 * took are not yet durable: a second flush that went out at once could
 * succeed on replicas that lack them (stale ones) and be acknowledged
 * before the first, or even though the first fails. Waiting makes a
 * flush cover every write acknowledged before it, whichever user request
 * (or NBD connection) the write came from.
 */
int core_flush_try(struct part *p)
{
	struct qbd_core *c = p->c;
	uint32_t targets = core_up_set(c);

	if (c->fenced)
		return -EPERM;
	if (c->fl_active) {
		core_part_enqueue(&c->fl_head, &c->fl_tail, p);
		return 0;
	}
	if (!core_wq(c, targets))
		return -EIO;
	if (c->flush_eio) {
		c->flush_eio = false;
		core_logf(c, L_ERR, "flush fails: chunks were restored from flagged copies since "
			  "the last flush, and writes acknowledged before it may be lost");
		return -EIO;
	}
	/* Take the chunks acknowledged so far: this flush answers for them. */
	p->all = c->dirty_lost;
	c->dirty_lost = false;
	p->dirty = c->dirty;
	p->ndirty = c->ndirty;
	for (size_t i = 0; i < c->ndirty; i++)
		c->dirty_bm[c->dirty[i] / 64] &= ~(1ull << (c->dirty[i] % 64));
	c->dirty = NULL;
	c->ndirty = c->dirty_cap = 0;
	c->fl_active = p;
	p->targets = p->pending = targets;
	p->refs++;
	for (unsigned r = 0; r < c->R; r++)
		if (targets & (1u << r))
			core_part_send(p, r, QBD_CM_FLUSH, 0, 0, 0, NULL);
	core_part_put(p);
	return 0;
}

/* The flush in flight finished: so do the flushes that waited with it;
 * start the ones that came later. */
static void flush_end(struct qbd_core *c, struct part *p)
{
	struct part *f;

	if (c->fl_active != p)
		return;
	c->fl_active = NULL;
	while ((f = p->followers)) {
		p->followers = f->wnext;
		core_part_finish(f, p->result);
		core_part_put(f);
	}
	if (!c->fl_head)
		return;
	f = c->fl_head;
	c->fl_head = c->fl_tail = NULL;
	int err = core_flush_try(f);
	if (err) {
		/* Not sent: every waiting flush gets the same answer. */
		while (f) {
			struct part *n = f->wnext;

			core_part_finish(f, err);
			core_part_put(f);
			f = n;
		}
		return;
	}
	f->followers = f->wnext;
	f->wnext = NULL;
	core_part_put(f);  /* the wait list's reference; the sends hold others */
}

/* r answered a FLUSH of a user's flush. */
void core_flush_reply(struct part *p, unsigned r, int status)
{
	struct qbd_core *c = p->c;

	status = core_part_answered(p, r, status);
	/* The writes it answers for may not be durable on r: r is not
	 * current for them until they are copied to it again. */
	if (status && status != -EPERM)
		for (size_t i = 0; i < p->ndirty; i++)
			core_stale_set(c, r, p->dirty[i]);
	if (p->done)
		return;
	if (c->fenced) {
		flush_fail(p, -EPERM);
	} else if (flush_ok(p) && c->flush_eio) {
		c->flush_eio = false;
		core_logf(c, L_ERR, "flush fails: chunks were restored from flagged copies "
			  "while it ran, and writes it answers for may be lost");
		flush_fail(p, -EIO);
	} else if (flush_ok(p)) {
		core_part_finish(p, 0);
	} else if (!p->pending) {
		flush_fail(p, -EIO);
	}
	if (p->done)
		flush_end(c, p);
}

/* r came back (an OPEN after attach). What it holds at our versions may
 * not be durable (its FLUSH was lost with the connection, and OPEN syncs
 * nothing when the promise stands): flush it before any write follows. */
void core_flush_reconnected(struct qbd_core *c, unsigned r)
{
	struct part *fp = core_part_new(c, NULL, P_RFLUSH, 0);

	if (fp) {
		fp->targets = fp->pending = 1u << r;
		core_part_send(fp, r, QBD_CM_FLUSH, 0, 0, 0, NULL);
		core_part_put(fp);
	}
}

/* r answered the flush after its reconnection: a failure drops it. */
void core_reflush_reply(struct part *p, unsigned r, int status)
{
	struct qbd_core *c = p->c;

	status = core_part_answered(p, r, status);
	if (status && status != -ENOTCONN && status != -EPERM) {
		core_logf(c, L_WARN, "replica %u: flush after reconnecting: error %d", r, status);
		c->ops.drop(c->user, r, "flush failed");
		qbd_core_replica_down(c, r, c->now);
	}
	p->done = true;
}
