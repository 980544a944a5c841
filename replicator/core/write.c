/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes (and zeroing): a write part takes the chunk's next version and
 * goes to every up replica current for the chunk; the others are stale
 * for it. Its answers are judged here: W successes complete it, a
 * refusal for want of space may undo it (write_nospc_settle), any other
 * failure makes the replica stale.
 */
#include <errno.h>

#include "replicator/core/internal.h"

/* Part p moves its chunk from V[c] to p->newv by writing to targets:
 * the replicas not written now lack the new version. */
void core_write_version(struct part *p, uint32_t targets)
{
	struct qbd_core *c = p->c;

	p->expected = c->version[p->chunk];
	c->version[p->chunk] = p->newv;
	for (unsigned r = 0; r < c->R; r++)
		if (!(targets & (1u << r)))
			core_stale_set(c, r, p->chunk);
}

/* Send p's WRITE (p->len bytes of p->buf at off) to each of targets,
 * counted in the chunk's write messages until answered. */
void core_write_send(struct part *p, uint32_t targets, uint32_t off, uint32_t flags)
{
	struct qbd_core *c = p->c;

	p->targets = p->pending = targets;
	c->wr_subs[p->chunk] += popc(targets);
	for (unsigned r = 0; r < c->R; r++)
		if (targets & (1u << r))
			core_part_send(p, r, QBD_CM_WRITE, off, p->len, flags, p->buf);
}

/* Start a write part: 0 started (or finished), QUEUE, or -errno. */
int core_write_try(struct part *p)
{
	struct qbd_core *c = p->c;
	uint64_t ch = p->chunk;
	uint32_t targets;
	int err;

	if (c->fenced)
		return -EPERM;
	if (c->now < c->write_hold) {
		p->qtime = c->now; /* the wait does not count as a timeout */
		return QUEUE;
	}
	targets = core_up_set(c) & core_current_set(c, ch);
	if (!core_wq(c, targets))
		return core_recoverable(c, ch) ? QUEUE : -EIO;
	if ((p->flags & QBD_CORE_F_ZERO) && c->version[ch] == 0) {
		/* Never written (no write of it could have been acknowledged:
		 * attach took the highest version of A replicas): it reads
		 * as zeros already. Zeroing it at a new version would make
		 * every replica allocate the chunk; a ZERO from version 0 to
		 * version 0 is acknowledged by a replica without writing
		 * anything (the idempotent repeat of the engine), yet still
		 * needs W replicas that accept our epoch, so a deposed writer
		 * cannot acknowledge it. The version stays 0. */
		p->expected = p->newv = 0;
	} else {
		err = core_next_version(c, c->version[ch], &p->newv);
		if (err)
			return err;
		core_write_version(p, targets);
	}
	p->started = true;
	c->wr_inflight[ch]++;
	p->refs++;
	core_write_send(p, targets, p->off, p->flags);
	core_part_put(p);
	return 0;
}

/*
 * Every answer to a write is in, and some replica had no space for it
 * (-ENOSPC: a replica refuses a write it cannot store before applying any
 * of it, and answers with the version it holds). When no replica applied
 * the write, every one that failed it holds the same version v0 (the
 * later writes of the chunk failed too, and answer after the earlier
 * ones), no other write of the chunk is in flight and no copy of it is
 * being made, then the write never happened anywhere: the chunk's version
 * goes back to v0, which those replicas (at least W: the write went to W)
 * hold, and they stay current. A full disk then costs the writer an
 * ENOSPC, not a resync it could not do either. Otherwise the replicas
 * that had no space are stale, like after any failed write.
 */
static void write_nospc_settle(struct part *p)
{
	struct qbd_core *c = p->c;
	uint64_t ch = p->chunk;
	struct cwait *w = core_cw_find(c, ch);
	bool back = !p->okset && !p->unsure && p->vsame && c->version[ch] == p->newv &&
		    !c->wr_subs[ch] && c->wr_inflight[ch] == (p->started ? 1u : 0u) &&
		    !(w && w->resyncing) && p->vfail >= c->acked[ch] && p->newv != 0;

	if (back) {
		core_logf(c, L_WARN, "chunk %llu: no space on the replicas for version %#llx; "
			  "back to %#llx", (unsigned long long)ch, (unsigned long long)p->newv,
			  (unsigned long long)p->vfail);
		c->version[ch] = p->vfail;
		return;
	}
#ifndef QBD_CORE_MUTANT_NO_STALE
	for (unsigned r = 0; r < c->R; r++)
		if (p->nospc & (1u << r))
			core_stale_set(c, r, ch);
#endif
}

/* A refusal (-ENOSPC, -ESTALE): r did not apply the write, and holds
 * version. write_nospc_settle needs to know whether every refusal named
 * the same version and whether some answer was neither. */
static void write_note_refusal(struct part *p, unsigned r, int status, uint64_t version)
{
	uint32_t bit = 1u << r;

	if (status == -ENOSPC || status == -ESTALE) {
		if (!p->refused) {
			p->vfail = version;
			p->vsame = true;
		} else if (version != p->vfail) {
			p->vsame = false;
		}
		p->refused |= bit;
		if (status == -ENOSPC)
			p->nospc |= bit;
	} else if (status) {
		p->unsure |= bit;
	}
}

/* The write's result, once it is known: W successes, or too few left. */
static void write_judge(struct part *p, int status)
{
	struct qbd_core *c = p->c;

	if (status == -EPERM) {
		core_part_finish(p, -EPERM);
	} else if (core_wq(c, p->okset)) {
		if (c->acked[p->chunk] < p->newv)
			c->acked[p->chunk] = p->newv;
		if (!(p->flags & QBD_CORE_F_FUA) && p->newv)
			core_dirty_add(c, p->chunk);
		core_part_finish(p, 0);
	} else if (!core_wq(c, p->okset | p->pending)) {
		/* A replica out of space: the writer hears ENOSPC (once
		 * every answer is in, so that write_nospc_settle can see
		 * whether the write happened anywhere). */
		if (!p->nospc)
			core_part_finish(p, -EIO);
		else if (!p->pending)
			core_part_finish(p, -ENOSPC);
	}
}

/* A read parked on ch's data waits for no write any more: run it. */
static void write_wake_parked(struct qbd_core *c, uint64_t ch)
{
	struct cwait *w = core_cw_find(c, ch);

	if (w && w->head && w->head->parked)
		core_cw_run(c, w);
}

/* r answered a WRITE of a write part. */
void core_write_reply(struct part *p, unsigned r, int status, uint64_t version)
{
	struct qbd_core *c = p->c;

	write_note_refusal(p, r, status, version);
	status = core_part_answered(p, r, status);
#ifndef QBD_CORE_MUTANT_NO_STALE
	if (status && status != -ENOSPC)
		core_stale_set(c, r, p->chunk); /* -ENOSPC: write_nospc_settle */
#endif
	--c->wr_subs[p->chunk];
	if (!p->pending && p->nospc)
		write_nospc_settle(p);
	if (!c->wr_subs[p->chunk] && p->done)
		write_wake_parked(c, p->chunk);
	if (p->done)
		return;
	write_judge(p, status);
	if (p->done)
		write_wake_parked(c, p->chunk);
}
