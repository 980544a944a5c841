/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the quorum core knows of chunks and replicas: which replicas are
 * stale for a chunk (they lack its version V[c]) and which hold a copy
 * they reported flagged, the sets and quorum sizes built on that, the
 * next version of a chunk, when a version is committed, and fencing.
 */
#include <errno.h>

#include "replicator/core/internal.h"

void core_stale_set(struct qbd_core *c, unsigned r, uint64_t ch)
{
	uint64_t m = 1ull << (ch % 64);

	if (!(c->stale[r][ch / 64] & m)) {
		c->stale[r][ch / 64] |= m;
		c->nstale[r]++;
	}
}

void core_stale_clear(struct qbd_core *c, unsigned r, uint64_t ch)
{
	uint64_t m = 1ull << (ch % 64);

	if (c->stale[r][ch / 64] & m) {
		c->stale[r][ch / 64] &= ~m;
		if (--c->nstale[r] == 0)
			c->rs_done[r] = 0;
	}
}

/* A flagged copy does not match its version (or has a bad block): never
 * current, never a source, until a resync replaces it (which clears the
 * replica's flags too). Always stale as well. */
void core_flag_set(struct qbd_core *c, unsigned r, uint64_t ch, uint32_t flags)
{
	uint64_t m = 1ull << (ch % 64);

	if (!(c->flagged[r][ch / 64] & m)) {
		c->flagged[r][ch / 64] |= m;
		c->nflagged[r]++;
	}
	if (flags & QBD_CORE_CHUNK_DAMAGED)
		c->damaged[r][ch / 64] |= m;
	core_stale_set(c, r, ch);
}

void core_flag_clear(struct qbd_core *c, unsigned r, uint64_t ch)
{
	uint64_t m = 1ull << (ch % 64);

	if (c->flagged[r][ch / 64] & m) {
		c->flagged[r][ch / 64] &= ~m;
		c->nflagged[r]--;
	}
	c->damaged[r][ch / 64] &= ~m;
}

/* r's own word on its copy of ch, newer than anything we hold of it (a
 * READ reply carries the chunk's flags as of its reply, and replies come
 * in order on a connection): the flags are exactly those. Clearing one
 * leaves r stale; only a probe or a resync makes it current again. */
void core_flag_update(struct qbd_core *c, unsigned r, uint64_t ch, uint32_t flags)
{
#ifdef QBD_CORE_MUTANT_NO_SUSPECT
	flags = 0;
#endif
	core_flag_clear(c, r, ch);
	if (flags)
		core_flag_set(c, r, ch, flags);
}

/* Members holding the chunk's current version (up or not). */
uint32_t core_current_set(const struct qbd_core *c, uint64_t ch)
{
	uint32_t s = 0;

	for (unsigned r = 0; r < c->R; r++)
		if ((c->members & (1u << r)) && !bit_get(c->stale[r], ch))
			s |= 1u << r;
	return s;
}

uint32_t core_up_set(const struct qbd_core *c)
{
	uint32_t s = 0;

	for (unsigned r = 0; r < c->R; r++)
		if (c->up[r])
			s |= 1u << r;
	return s & c->members;
}

/*
 * Quorums are counted in each voter set: S, and during a change's joint
 * phase S' too (docs/protocol.md section 11). A learner is in neither and
 * counts toward nothing. (A QBD_CORE_MUTANT_NO_JOINT build counts in the
 * newest set only: a write acknowledged on W of S' alone is then missed
 * by a next writer that reads S.)
 */
bool core_quorum(const struct qbd_core *c, uint32_t set, unsigned n)
{
#ifdef QBD_CORE_MUTANT_NO_JOINT
	if (c->vset[1])
		return (unsigned)popc(set & c->vset[1]) >= n;
#endif
	if ((unsigned)popc(set & c->vset[0]) < n)
		return false;
	return !c->vset[1] || (unsigned)popc(set & c->vset[1]) >= n;
}

bool core_wq(const struct qbd_core *c, uint32_t set)
{
	return core_quorum(c, set, c->W);
}

uint32_t core_voters(const struct qbd_core *c)
{
	return c->vset[0] | c->vset[1];
}

void core_fence(struct qbd_core *c)
{
	if (!c->fenced)
		core_logf(c, L_ERR, "fenced: a replica promised a newer epoch than %llu",
			  (unsigned long long)c->cfg.epoch);
	c->fenced = true;
}

int core_next_version(const struct qbd_core *c, uint64_t v, uint64_t *out)
{
#ifdef QBD_CORE_MUTANT_NO_EPOCH_VERSION
	*out = v + 1;
	return 0;
#endif
	if ((v >> QBD_CORE_EPOCH_SHIFT) < c->cfg.epoch) {
		*out = c->cfg.epoch << QBD_CORE_EPOCH_SHIFT | 1;
		return 0;
	}
	if ((v & SEQ_MASK) == SEQ_MASK)
		return -EOVERFLOW;
	*out = v + 1;
	return 0;
}

/* Promises needed to attach; confirmations needed to hold the read lease. */
unsigned core_attach_quorum(const struct qbd_core *c)
{
	return c->W > c->nv - c->W + 1 ? c->W : c->nv - c->W + 1;
}

/* Replicas whose answers are enough to know a chunk's latest
 * acknowledged version: every write quorum meets them. */
unsigned core_probe_quorum(const struct qbd_core *c)
{
	return c->nv - c->W + 1;
}

/* Can a resync (or a probe and a resync) give this chunk the replicas it
 * lacks? */
bool core_recoverable(const struct qbd_core *c, uint64_t ch)
{
	uint32_t up = core_up_set(c);

	if (!core_wq(c, up))
		return false;
	return (core_current_set(c, ch) & up) || core_quorum(c, up, core_probe_quorum(c));
}

/* Is V[c] on W replicas? Then nothing can take it back any more. A
 * replica that is not stale has V[c] once no write to it is pending. */
void core_commit_check(struct qbd_core *c, uint64_t ch)
{
	if (c->acked[ch] < c->version[ch] && !c->wr_subs[ch] &&
	    core_wq(c, core_current_set(c, ch)))
		c->acked[ch] = c->version[ch];
}
