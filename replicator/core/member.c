/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Membership changes while attached (docs/protocol.md section 11): slot X
 * of the voter set S is replaced by a learner in slot Y. The learner gets
 * every write and counts toward nothing until resync made it current for
 * every chunk; then the writer adopts the joint rule (every quorum in S
 * and in S' = S - X + Y), flushes S' (the change flush) and, once every
 * chunk's version is durable on W replicas of S', lets X go. The shell
 * CASes the configuration in etcd between the steps; the core only ever
 * follows a rule at least as strict as the configuration's.
 *
 * A QBD_CORE_MUTANT_EARLY_PROMOTION build promotes the learner without
 * waiting for it to be current and flushed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/core/internal.h"

int core_slot_alloc(struct qbd_core *c, unsigned r)
{
	size_t words = (c->nchunks + 63) / 64;

	if (!c->stale[r])
		c->stale[r] = calloc(words, sizeof(uint64_t));
	if (!c->flagged[r])
		c->flagged[r] = calloc(words, sizeof(uint64_t));
	if (!c->damaged[r])
		c->damaged[r] = calloc(words, sizeof(uint64_t));
	return c->stale[r] && c->flagged[r] && c->damaged[r] ? 0 : -ENOMEM;
}

/* Slot r starts afresh: a new learner, perhaps where a replica that left
 * was before (its messages failed when it left). */
static void slot_reset(struct qbd_core *c, unsigned r)
{
	size_t bytes = (c->nchunks + 63) / 64 * sizeof(uint64_t);

	memset(c->stale[r], 0, bytes);
	memset(c->flagged[r], 0, bytes);
	memset(c->damaged[r], 0, bytes);
	c->nstale[r] = c->nflagged[r] = c->flagged_total[r] = 0;
	c->rs_done[r] = c->pulled[r] = c->rs_backoff[r] = c->rs_cursor[r] = 0;
	c->rs_bytes[r] = 0;
	c->confirmed[r] = c->last_reply[r] = 0;
	c->up[r] = c->pinging[r] = false;
}

int qbd_core_learner_add(struct qbd_core *c, unsigned y, uint64_t now)
{
	c->now = now;
	if (y >= MAXR || (c->members & (1u << y)))
		return -EINVAL;
	if (c->learners || c->vset[1])
		return -EBUSY;
	for (unsigned r = c->R; r <= y; r++)
		if (core_slot_alloc(c, r))
			return -ENOMEM;
	if (core_slot_alloc(c, y))
		return -ENOMEM;
	if (y >= c->R)
		c->R = y + 1;
	slot_reset(c, y);
	for (uint64_t ch = 0; ch < c->nchunks; ch++)
		if (c->version[ch])
			core_stale_set(c, y, ch);
	c->learners |= 1u << y;
	c->members |= 1u << y;
	core_logf(c, L_INFO, "slot %u: a learner, %llu chunks to copy to it", y,
		  (unsigned long long)c->nstale[y]);
	return 0;
}

int qbd_core_learner_drop(struct qbd_core *c, unsigned y, uint64_t now)
{
	c->now = now;
	if (y >= MAXR || !(c->learners & (1u << y)))
		return -EINVAL;
	qbd_core_replica_down(c, y, now);
	c->learners &= ~(1u << y);
	c->members &= ~(1u << y);
	core_logf(c, L_INFO, "slot %u: no longer a learner", y);
	return 0;
}

int qbd_core_joint_begin(struct qbd_core *c, unsigned x, unsigned y, uint64_t now)
{
	c->now = now;
	if (x >= MAXR || y >= MAXR || !c->opened || !(c->learners & (1u << y)) ||
	    !(c->vset[0] & (1u << x)) || c->vset[1])
		return -EINVAL;
	if (c->fenced)
		return -EPERM;
#ifndef QBD_CORE_MUTANT_EARLY_PROMOTION
	if (!c->up[y] || c->nstale[y] || c->nflagged[y])
		return -EAGAIN;
#endif
	c->vset[1] = (c->vset[0] & ~(1u << x)) | (1u << y);
	c->learners &= ~(1u << y);
	c->leaving = (int)x;
	c->cf_done = false;
	core_logf(c, L_INFO, "joint rule: quorums in slots %#x and %#x (slot %u leaves, %u joins)",
		  c->vset[0], c->vset[1], x, y);
	return 0;
}

/* Does every written chunk have W replicas of S' that hold its version
 * (and, with snap, held it when the change flush was sent)? */
static bool on_new_set(const struct qbd_core *c, bool snap)
{
	for (uint64_t ch = 0; ch < c->nchunks; ch++) {
		uint32_t ok = 0;

		if (!c->version[ch])
			continue;
		for (unsigned r = 0; r < c->R; r++)
			if ((c->vset[1] & (1u << r)) && !bit_get(c->stale[r], ch) &&
			    (!snap || (c->cf_stale[r] && !bit_get(c->cf_stale[r], ch))))
				ok |= 1u << r;
		if ((unsigned)popc(ok) < c->W)
			return false;
	}
	return true;
}

static void cf_free(struct qbd_core *c)
{
	for (unsigned r = 0; r < MAXR; r++) {
		free(c->cf_stale[r]);
		c->cf_stale[r] = NULL;
	}
}

/* Flush every up replica of S', noting what each held when it was sent:
 * a copy a replica held then is durable once its flush succeeds. */
static void cf_send(struct qbd_core *c)
{
	size_t bytes = (c->nchunks + 63) / 64 * sizeof(uint64_t);
	uint32_t targets = core_up_set(c) & c->vset[1];
	struct part *p;

	if ((unsigned)popc(targets) < c->W)
		return;
	p = core_part_new(c, NULL, P_CFLUSH, 0);
	if (!p)
		return;
	for (unsigned r = 0; r < c->R; r++) {
		if (!(targets & (1u << r)))
			continue;
		c->cf_stale[r] = malloc(bytes);
		if (!c->cf_stale[r]) {
			cf_free(c);
			p->done = true;
			core_part_put(p);
			return;
		}
		memcpy(c->cf_stale[r], c->stale[r], bytes);
	}
	c->cf_active = p;
	p->targets = p->pending = targets;
	for (unsigned r = 0; r < c->R; r++)
		if (targets & (1u << r))
			core_part_send(p, r, QBD_CM_FLUSH, 0, 0, 0, NULL);
	core_part_put(p);
}

/* r answered the change flush. Once all did: is every chunk durable on
 * W of S'? A replica whose flush failed counts for nothing. */
void core_cflush_reply(struct part *p, unsigned r, int status)
{
	struct qbd_core *c = p->c;

	status = core_part_answered(p, r, status);
	if (status) {
		free(c->cf_stale[r]);
		c->cf_stale[r] = NULL;
	}
	if (p->pending)
		return;
	p->done = true;
	c->cf_active = NULL;
	if (c->vset[1] && !c->fenced) {
		c->cf_done = on_new_set(c, true);
		core_logf(c, c->cf_done ? L_INFO : L_DEBUG, "change flush: %s",
			  c->cf_done ? "every chunk is on W replicas of the new set" :
			  "some chunks are not yet on W replicas of the new set");
	}
	cf_free(c);
}

int qbd_core_change_ready(struct qbd_core *c, uint64_t now)
{
	c->now = now;
	if (c->fenced)
		return -EPERM;
	if (!c->vset[1])
		return -EINVAL;
#ifdef QBD_CORE_MUTANT_EARLY_PROMOTION
	return 1;
#endif
	if (!on_new_set(c, false))
		return 0; /* a failed write, a damaged copy: resync first */
	if (c->cf_done)
		return 1;
	if (!c->cf_active)
		cf_send(c);
	return 0;
}

int qbd_core_leave(struct qbd_core *c, uint64_t now)
{
	uint32_t gone;

	c->now = now;
	if (!c->vset[1])
		return -EINVAL;
#ifndef QBD_CORE_MUTANT_EARLY_PROMOTION
	/* Copies may have gone stale since the flush (a damaged block): X
	 * stays until they are back on W of S'. */
	if (!c->cf_done || !on_new_set(c, false))
		return -EAGAIN;
#endif
	gone = c->vset[0] & ~c->vset[1];
	c->vset[0] = c->vset[1];
	c->vset[1] = 0;
	c->members = c->vset[0] | c->learners;
	c->leaving = -1;
	c->cf_done = false;
	for (unsigned r = 0; r < c->R; r++)
		if (gone & (1u << r))
			qbd_core_replica_down(c, r, now);
	core_logf(c, L_INFO, "configuration: quorums in slots %#x", c->vset[0]);
	return 0;
}

void qbd_core_members(const struct qbd_core *c, uint32_t *voters, uint32_t *joint,
		      uint32_t *learners)
{
	if (voters)
		*voters = c->vset[0];
	if (joint)
		*joint = c->vset[1];
	if (learners)
		*learners = c->learners;
}
