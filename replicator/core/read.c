/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reads and block status: a read part goes to the nearest up replica
 * current for its chunk, and to the next one on an error. It is served
 * only under the read lease (kept fresh by pings, here too), only at a
 * version at least the committed one, and data of a write still in
 * flight waits until that write commits. A copy that failed its
 * checksums is repaired from the good one (a REPAIR write at the same
 * version).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/core/internal.h"

/* Do max(W, R - W + 1) up replicas of each voter set confirm our epoch
 * within the lease? */
static bool lease_ok(const struct qbd_core *c)
{
	uint32_t fresh = 0;

#ifdef QBD_CORE_MUTANT_NO_LEASE
	return true;
#endif
	for (unsigned r = 0; r < c->R; r++)
		if (c->up[r] && c->confirmed[r] + c->cfg.lease_ns > c->now)
			fresh |= 1u << r;
	return core_quorum(c, fresh, core_attach_quorum(c));
}

/* Ping every up replica whose latest confirmation is a quarter of the
 * lease old (one ping at a time each), so that the lease stays fresh. */
void core_lease_keep(struct qbd_core *c)
{
	for (unsigned r = 0; r < c->R && c->opened && !c->fenced; r++) {
		struct part *p;

		if (!c->up[r] || c->pinging[r] ||
		    c->confirmed[r] + c->cfg.lease_ns / 4 > c->now)
			continue;
		p = core_part_new(c, NULL, P_PING, 0);
		if (!p)
			break;
		c->pinging[r] = true;
		core_part_send(p, r, QBD_CM_PING, 0, 0, 0, NULL);
		core_part_put(p);
	}
}

/* r answered a PING (core_sub_result noted the confirmation). */
void core_ping_reply(struct part *p, unsigned r, int status)
{
	p->c->pinging[r] = false;
	if (status == -EPERM)
		core_fence(p->c);
	p->done = true;
}

int core_read_pick(const struct qbd_core *c, uint64_t ch, uint32_t tried)
{
	int best = -1;
	uint32_t ok = core_up_set(c) & core_current_set(c, ch) & ~tried;

	for (unsigned r = 0; r < c->R; r++) {
		bool loc, bloc;

		if (!(ok & (1u << r)))
			continue;
		loc = c->cfg.local & (1u << r);
		bloc = best >= 0 && (c->cfg.local & (1u << best));
		if (best < 0 || (loc && !bloc) ||
		    (loc == bloc && c->outstanding[r] < c->outstanding[best]))
			best = (int)r;
	}
	return best;
}

/* May chunk ch be read? 1 yes, 0 after a recovery, -EIO never. */
static int read_ready(const struct qbd_core *c, uint64_t ch)
{
	uint32_t cur = core_current_set(c, ch);

#ifdef QBD_CORE_MUTANT_NO_RECOVERY
	if (cur & core_up_set(c))
		return 1;
#endif
	if (core_wq(c, cur) && (cur & core_up_set(c)))
		return 1;
	return core_recoverable(c, ch) ? 0 : -EIO;
}

/* Copy n bits from src (from bit 0) to dst at bit pos; NULL src clears. */
static void bits_put(uint8_t *dst, uint64_t pos, const uint8_t *src, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t d = pos + i;
		bool on = src && ((src[i / 8] >> (i % 8)) & 1u);

		if (on)
			dst[d / 8] |= (uint8_t)(1u << (d % 8));
		else
			dst[d / 8] &= (uint8_t)~(1u << (d % 8));
	}
}

uint32_t core_bitmap_bytes(const struct qbd_core *c, uint32_t len)
{
	return (len / c->cfg.block_size + 7) / 8;
}

/* Send read p to the best replica it has not tried; with none left it
 * fails with the first real error it met, else -EIO. */
static void read_next(struct part *p)
{
	struct qbd_core *c = p->c;
	int r;

	if (c->fenced) {
		core_part_finish(p, -EPERM);
		return;
	}
	r = core_read_pick(c, p->chunk, p->tried);
	if (r < 0) {
		core_part_finish(p, p->first_err && p->first_err != -ENOTCONN &&
					    p->first_err != -ESTALE ? p->first_err : -EIO);
		return;
	}
	p->replica = r;
	p->tried |= 1u << r;
	p->gen = c->gen[p->chunk];
	core_part_send(p, (unsigned)r, QBD_CM_READ, p->off, p->len,
		       p->bitmap ? QBD_CORE_F_BITMAP : 0, NULL);
}

/* Start a read part: 0 started (or finished), QUEUE, or -errno. */
int core_read_try(struct part *p)
{
	int ready = read_ready(p->c, p->chunk);

	if (p->c->fenced)
		return -EPERM;
	if (!lease_ok(p->c))
		return QUEUE;
	if (p->bitmap && p->c->version[p->chunk] == 0) {
		/* Never written: all holes, nothing to ask. */
		bits_put(p->buf, p->bitpos, NULL, p->len / p->c->cfg.block_size);
		core_part_finish(p, 0);
		return 0;
	}
	if (ready <= 0)
		return ready < 0 ? ready : QUEUE;
	p->min_version = p->c->acked[p->chunk];
	read_next(p);
	return 0;
}

/* Rewrite the range read rd served on r, whose copy failed its
 * checksums, at the same version. */
static void repair_start(struct part *rd, unsigned r)
{
	struct qbd_core *c = rd->c;
	struct part *p;

#ifdef QBD_CORE_MUTANT_NO_REPAIR
	return;
#endif
	p = core_part_new(c, NULL, P_REPAIR, rd->chunk);
	if (!p || !(p->owned = malloc(rd->len))) {
		core_logf(c, L_WARN, "no memory to repair chunk %llu", (unsigned long long)rd->chunk);
		free(p);
		return;
	}
	memcpy(p->owned, rd->buf, rd->len);
	p->buf = p->owned;
	p->off = rd->off;
	p->len = rd->len;
	p->expected = p->newv = rd->version;
	p->targets = p->pending = 1u << r;
	core_logf(c, L_INFO, "repairing chunk %llu on replica %u at version %llu",
		  (unsigned long long)rd->chunk, r, (unsigned long long)rd->version);
	core_part_send(p, r, QBD_CM_WRITE, p->off, p->len, QBD_CORE_F_REPAIR, p->buf);
	core_part_put(p);
}

/* r answered the REPAIR write of a read repair. */
void core_repair_reply(struct part *p, unsigned r, int status)
{
	status = core_part_answered(p, r, status);
	if (status)
		core_logf(p->c, L_WARN, "repair of chunk %llu on replica %u: error %d",
			  (unsigned long long)p->chunk, r, status);
	p->done = true;
}

/* Read p has its data at a committed version: serve it, and repair the
 * replicas that failed their checksums on the way. */
void core_read_done(struct part *p)
{
	struct qbd_core *c = p->c;

	if (p->bitmap) {
		bits_put(p->buf, p->bitpos, p->owned, p->len / c->cfg.block_size);
		core_part_finish(p, 0);
		return;
	}
	for (unsigned b = 0; b < c->R; b++)
		if ((p->bad & (1u << b)) && c->up[b])
			repair_start(p, b);
	core_part_finish(p, 0);
}

/* r answered a READ of a user's read (or block status). */
void core_read_reply(struct part *p, unsigned r, int status, uint64_t version)
{
	struct qbd_core *c = p->c;

	if (p->done)
		return;
	if (status == -EPERM) {
		core_fence(c);
		core_part_finish(p, -EPERM);
		return;
	}
	if (status == 0 && p->gen != c->gen[p->chunk]) {
		/* The version chain was restarted while the read was out: its
		 * version number may belong to a lost write. Read again. */
		p->tried = p->bad = 0;
		read_next(p);
		return;
	}
	if (status == 0 && version < p->min_version) {
		/* It missed an acknowledged write. */
		core_stale_set(c, r, p->chunk);
		status = -ESTALE;
	}
	if (status == 0) {
		p->version = version;
#ifndef QBD_CORE_MUTANT_NO_RECOVERY
		core_commit_check(c, p->chunk);
		if (version > c->acked[p->chunk]) {
			/* Data of a write still in flight: it may yet fail and
			 * be lost, so it is not served before it is committed. */
			struct cwait *w = core_cw_get(c, p->chunk);

			if (w) {
				p->parked = true;
				core_cw_push(c, w, p);
				return;
			}
		}
#endif
		core_read_done(p);
		return;
	}
	if (status == -ESTALE)
		core_stale_set(c, r, p->chunk);
	if (status == -EBADMSG)
		p->bad |= 1u << r;
	if (!p->first_err || p->first_err == -ENOTCONN)
		p->first_err = status;
	read_next(p);
}
