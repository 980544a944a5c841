/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Resync: replicas stale for a chunk get the chunk copied from a current
 * one, version-checked, with writes of the chunk held meanwhile: pulled
 * by each target from a current replica (PULL), or read and written
 * through the writer (RSREAD, RSWRITE). Either way only the chunk's
 * written blocks cross the network, in its sparse form (the written
 * bitmap, then those blocks: a SPARSE READ of the source, a SPARSE
 * RESYNC write to the target, which stores the holes as holes). Copies
 * read from the current replicas in turn (resync_source). A flagged
 * target first gets the chunk's version moved on (the bump). With no
 * current replica up, the up ones are probed and the chunk restored from
 * the best copy under a fresh version (probe_done). Scheduling: chunks
 * requests wait for first, then attach's recovery list, then every stale
 * chunk at the configured rate (bytes of data a second, changed at run
 * time by qbd_core_set_resync_rate).
 */
#include <errno.h>
#include <stdlib.h>

#include "replicator/core/internal.h"

/*
 * A source for a copy of ch: an up replica current for it, not in
 * exclude; the least busy (fewest of our messages in flight, so client
 * I/O on a replica steers copies away from it), ties taken in turn from
 * where the previous choice left off. So the copies of a rebuild are
 * spread over every current replica, through the writer or pulled,
 * instead of all reading the nearest one. -1 when there is none.
 */
static int resync_source(struct qbd_core *c, uint64_t ch, uint32_t exclude)
{
	uint32_t ok = core_up_set(c) & core_current_set(c, ch) & ~exclude;
	int best = -1;

	for (unsigned i = 0; i < c->R; i++) {
		unsigned r = (c->rs_src_next + i) % c->R;

		if ((ok & (1u << r)) && (best < 0 || c->outstanding[r] < c->outstanding[best]))
			best = (int)r;
	}
	if (best >= 0)
		c->rs_src_next = (unsigned)best + 1;
	return best;
}

/* The rate limit charged a chunk's worth when p started; now that the
 * bytes that cross are known, charge those instead (a sparse copy of a
 * chunk with one written block costs a block). */
static void resync_charge(struct part *p, uint64_t bytes)
{
	struct qbd_core *c = p->c;
	int64_t cap = (int64_t)c->cfg.chunk_size * c->cfg.resync_parallel;

	if (!c->cfg.resync_rate)
		return;
	if (p->rs_charged) {
		p->rs_charged = false;
		c->rs_tokens += c->cfg.chunk_size;
		if (c->rs_tokens > cap)
			c->rs_tokens = cap;
	}
	c->rs_tokens -= (int64_t)(bytes < (uint64_t)cap ? bytes : (uint64_t)cap);
}

/* A resync of ch landed on r: it holds V[c], and a RESYNC write clears
 * the replica's flags. */
static void resync_landed(struct qbd_core *c, unsigned r, uint64_t ch)
{
	core_stale_clear(c, r, ch);
	core_flag_clear(c, r, ch);
	c->rs_done[r]++;
}

/* Resync p is over (whatever became of it): targets still stale wait a
 * second before the next try, and the chunk's waiting parts run. When
 * every target took the copy, the next copy starts as soon as the reply
 * that ended this one is handled (core_resync_kicked), so that a rebuild
 * goes at the pace of its copies, not of the 100 ms tick; a failure, or
 * a probe that found nothing to restore, leaves the next try to the tick
 * and the backoff (never a loop of messages at the pace of replies). */
static void resync_end(struct part *p)
{
	struct qbd_core *c = p->c;
	struct cwait *w = p->cw;
	bool failed = !p->rs_targets; /* a probe that restored nothing */

	for (unsigned r = 0; r < c->R; r++)
		if ((p->rs_targets & (1u << r)) && bit_get(c->stale[r], p->chunk)) {
			c->rs_backoff[r] = c->now + 1000000000ull;
			failed = true;
		}
	if (!failed)
		c->rs_kick = true;
	core_commit_check(c, p->chunk);
	p->done = true;
	c->rs_active--;
	w->resyncing = false;
	p->cw = NULL;
	core_cw_run(c, w);
}

/* Read the chunk from a current replica p has not tried (not a target)
 * to copy it through the writer; with none left, give up. */
static void resync_read(struct part *p)
{
	struct qbd_core *c = p->c;
	int r = resync_source(c, p->chunk, p->tried | p->rs_targets);

	if (r < 0 || c->fenced) {
		resync_end(p);
		return;
	}
	p->replica = r;
	p->tried |= 1u << r;
	p->rs_len = 0;
	core_part_send(p, (unsigned)r, QBD_CM_READ, 0, c->cfg.chunk_size,
		       QBD_CORE_F_SPARSE, NULL);
}

/* Read the source chunk at p->src_version, then write it to the targets at
 * p->newv. The source is any up replica that is current, or for a
 * re-versioned chunk (see probe_done) the one named in p->replica. */
static void resync_begin(struct qbd_core *c, struct part *p)
{
	if (p->replica >= 0) {
		p->tried |= 1u << p->replica;
		p->rs_len = 0;
		core_part_send(p, (unsigned)p->replica, QBD_CM_READ, 0,
			       c->cfg.chunk_size, QBD_CORE_F_SPARSE, NULL);
		return;
	}
	resync_read(p);
}

/* The replicas whose probed copy is trusted: they answered, unflagged,
 * with their block readable. Those that still have V[c] are current
 * after all. */
static uint32_t probe_trust(struct part *p)
{
	struct qbd_core *c = p->c;
	uint64_t ch = p->chunk;
	uint32_t trusted = 0;

	for (unsigned r = 0; r < c->R; r++) {
		if (!(p->pok & (1u << r)) || (p->pbad & (1u << r)) ||
		    bit_get(c->flagged[r], ch))
			continue;
		trusted |= 1u << r;
		if (p->pv[r] == c->version[ch])
			core_stale_clear(c, r, ch);
	}
	return trusted;
}

/* How good r's probed copy is at equal versions: 2 trusted, 1 SUSPECT,
 * 0 DAMAGED. */
static int probe_rank(const struct qbd_core *c, uint32_t trusted, unsigned r, uint64_t ch)
{
	return (trusted & (1u << r)) ? 2 : bit_get(c->damaged[r], ch) ? 0 : 1;
}

/*
 * The best copy among the answers of from: the highest version, then the
 * highest rank. Its version goes to *maxv; returns its rank, -1 when from
 * is empty. Replicas that went down since they answered count: the
 * argument of probe_done is about the highest version of the whole set,
 * and a lower copy of a replica still up may lack acknowledged writes.
 */
static int probe_best(const struct part *p, uint32_t from, uint32_t trusted,
		      uint64_t *maxv)
{
	int rank = -1;

	for (unsigned r = 0; r < p->c->R; r++) {
		int rk;

		if (!(from & (1u << r)))
			continue;
		rk = probe_rank(p->c, trusted, r, p->chunk);
		if (rank < 0 || p->pv[r] > *maxv || (p->pv[r] == *maxv && rk > rank)) {
			*maxv = p->pv[r];
			rank = rk;
		}
	}
	return rank;
}

/* The source of a restore: an up replica of from holding the best copy
 * (version maxv, rank rank), or -1 (wait for it and probe again). */
static int probe_source(const struct part *p, uint32_t from, uint32_t trusted,
			uint64_t maxv, int rank)
{
	for (unsigned r = 0; r < p->c->R; r++) {
		if (!(from & (1u << r)) || !p->c->up[r] || p->pv[r] != maxv)
			continue;
		if (probe_rank(p->c, trusted, r, p->chunk) == rank)
			return (int)r;
	}
	return -1;
}

/* Restore the chunk from src's copy (version maxv) to every up replica
 * under the fresh version p->newv: until it lands none is current. */
static void probe_restore(struct part *p, int src, uint64_t maxv)
{
	struct qbd_core *c = p->c;
	uint64_t ch = p->chunk;

	c->version[ch] = p->newv;
	c->gen[ch]++;
	for (unsigned r = 0; r < c->R; r++)
		core_stale_set(c, r, ch);
	p->src_version = maxv;
	p->rs_targets = core_up_set(c);
	p->tried = 0;
	p->replica = src;
	p->len = c->cfg.chunk_size;
	resync_begin(c, p);
}

/*
 * Every probe answer is in. If a trusted replica (unflagged, its block
 * readable) still has V[c], it is current after all. Otherwise the latest
 * version is gone everywhere we can see, and the chunk is restored from
 * one copy, written to every up replica under a fresh version (so that no
 * replica that kept the lost version can ever pass for current, and all
 * hold the same bytes):
 *  - from the trusted copy with the highest version, when the trusted
 *    answers are a probe quorum: every write quorum meets them, so that
 *    copy holds every acknowledged write;
 *  - from a flagged copy only when every replica answered and fewer than a
 *    probe quorum are trusted: then at least W copies are flagged, more
 *    than the losses the volume is built to survive (a power loss of
 *    several zones). The highest version wins, unflagged before SUSPECT
 *    before DAMAGED at equal versions: it holds every write its replica
 *    flushed, and reads of the chunk wait until the copy is everywhere;
 *  - otherwise wait: a replica not heard from may hold the only intact
 *    copy of an acknowledged write.
 */
static void probe_done(struct part *p)
{
	struct qbd_core *c = p->c;
	uint64_t ch = p->chunk, maxv = 0;
	uint32_t all = core_voters(c), trusted, from;
	int src, rank;
	bool lossy = false;

	p->kind = P_RSREAD; /* so that resync_end accounts it */
	p->rs_targets = 0;
	if (!core_quorum(c, p->pok, core_probe_quorum(c)) || c->fenced) {
		resync_end(p);
		return;
	}
	trusted = probe_trust(p) & all; /* a learner's copy counts toward nothing */
	if (core_current_set(c, ch) & core_up_set(c)) {
		resync_end(p); /* an ordinary resync takes it from here */
		return;
	}
	if (core_quorum(c, trusted, core_probe_quorum(c))) {
		from = trusted;
	} else if ((p->pok & all) == all) {
		from = p->pok & ~p->pbad & all;
		lossy = true;
	} else {
		core_logf(c, L_WARN, "chunk %llu: every copy heard of version %#llx is flagged; "
			  "waiting for the replicas not heard from",
			  (unsigned long long)ch, (unsigned long long)c->version[ch]);
		resync_end(p);
		return;
	}
	rank = probe_best(p, from, trusted, &maxv);
	src = probe_source(p, from, trusted, maxv, rank);
	if (src < 0 && rank >= 0)
		core_logf(c, L_WARN, "chunk %llu: the best copy (%#llx) is on a replica that went "
			  "down; waiting for it", (unsigned long long)ch,
			  (unsigned long long)maxv);
	if (src < 0 || !core_wq(c, core_up_set(c)) ||
	    core_next_version(c, c->version[ch], &p->newv)) {
		resync_end(p);
		return;
	}
	c->flush_eio |= lossy;
	if (lossy)
		core_logf(c, L_ERR, "chunk %llu: every replica answered and %u of %u copies are "
			  "flagged: restoring replica %d's %s copy at %#llx as %#llx "
			  "(writes to it not covered by a flush may be lost)",
			  (unsigned long long)ch, popc(all & ~trusted), popc(all), src,
			  rank == 2 ? "unflagged" : rank == 1 ? "suspect" : "damaged",
			  (unsigned long long)maxv, (unsigned long long)p->newv);
	else
		core_logf(c, L_WARN, "chunk %llu: version %#llx lost on every reachable replica; "
			  "restoring %#llx from replica %d as %#llx",
			  (unsigned long long)ch, (unsigned long long)c->version[ch],
			  (unsigned long long)maxv, src, (unsigned long long)p->newv);
	probe_restore(p, src, maxv);
}

/* Bring the targets of resync p (rs_targets, still up) to V[c]: each pulls
 * it from a current replica, or we copy it, or, with no current replica
 * up, probe the up ones (probe_done). */
static void resync_go(struct qbd_core *c, struct part *p)
{
	uint64_t ch = p->chunk;
	uint32_t targets = p->rs_targets & core_up_set(c);

	p->rs_targets = targets;
	p->okset = 0;
	p->tried = 0;
	p->replica = -1;
	if (!targets) {
		resync_end(p);
		return;
	}
	if (c->cfg.pull && core_read_pick(c, ch, targets) >= 0) {
		/* Each target copies from a current replica itself. */
		p->kind = P_RSPULL;
		p->replica = resync_source(c, ch, targets);
		p->targets = p->pending = targets;
#ifdef QBD_CORE_MUTANT_NO_RESYNC
		for (unsigned t = 0; t < c->R; t++)
			if (targets & (1u << t))
				core_stale_clear(c, t, ch);
		p->pending = 0;
		resync_end(p);
		return;
#endif
		for (unsigned r = 0; r < c->R; r++)
			if (targets & (1u << r))
				core_part_send(p, r, QBD_CM_PULL, 0, c->cfg.chunk_size, 0, NULL);
	} else if (core_read_pick(c, ch, targets) >= 0) {
		p->kind = P_RSREAD;
		resync_read(p);
	} else {
		/* No replica known to be current is up: ask the up ones. */
		uint32_t len = c->cfg.chunk_size < 4096 ? c->cfg.chunk_size : 4096;

		p->kind = P_PROBE;
		p->len = len;
		p->pok = p->pbad = 0;
		p->targets = p->pending = core_up_set(c);
		for (unsigned r = 0; r < c->R; r++)
			if (p->targets & (1u << r))
				core_part_send(p, r, QBD_CM_READ, 0, len, 0, NULL);
	}
}

/* Target r answered a PULL: it holds V[c], or the copy goes through the
 * writer once every target answered. */
void core_pull_reply(struct part *p, unsigned r, int status)
{
	struct qbd_core *c = p->c;

	status = core_part_answered(p, r, status);
	if (status == 0 && c->version[p->chunk] == p->newv) {
		resync_landed(c, r, p->chunk);
		c->pulled[r]++;
	} else if (status) {
		core_logf(c, L_INFO, "pull of chunk %llu by replica %u from %d: error %d%s",
			  (unsigned long long)p->chunk, r, p->replica, status,
			  status == -EPERM || status == -ENOTCONN ? "" :
			  "; copying through the writer");
		if (status == -ESTALE && p->replica >= 0)
			core_stale_set(c, (unsigned)p->replica, p->chunk);
		if (status != -EPERM && status != -ENOTCONN)
			p->fallback = true;
	}
	if (p->pending)
		return;
	if (p->fallback && !c->fenced) {
		/* Copy through the writer for the targets still stale. */
		p->kind = P_RSREAD;
		p->fallback = false;
		p->okset = 0;
		p->tried = 0;
		p->replica = -1;
		p->rs_targets &= core_up_set(c);
		resync_read(p);
		return;
	}
	resync_end(p);
}

/*
 * A flagged copy may already carry V[c] (a SUSPECT chunk's version can be
 * ahead of its contents), and a RESYNC or PULL at the version a replica
 * already holds is acknowledged without writing (a retry): copying V[c]
 * to it would change nothing. So when a target is flagged, V[c] moves on
 * first, without changing a byte: block 0 is read from a current replica
 * and written back to every current one as an ordinary write at the next
 * version (a replica that misses it holds the same bytes under the old
 * version: stale, harmless). The copy to the targets then carries a
 * version none of them holds. The flagged copy stays in place until the
 * copy lands, so nothing is thrown away before a good source is found.
 * Returns whether the bump started.
 */
static bool resync_bump(struct qbd_core *c, struct part *p)
{
	int src = core_read_pick(c, p->chunk, p->rs_targets);
	bool flagged = false;

	for (unsigned r = 0; r < c->R; r++)
		flagged |= (p->rs_targets & (1u << r)) && bit_get(c->flagged[r], p->chunk);
	if (!flagged || src < 0)
		return false;
	p->kind = P_RSBUMP;
	p->len = c->cfg.block_size;
	p->replica = src;
	p->tried = 1u << src;
	core_part_send(p, (unsigned)src, QBD_CM_READ, 0, p->len, 0, NULL);
	return true;
}

/* The bump's source answered its READ of block 0: write it back to every
 * current replica at the next version (or, failing that, end the resync
 * so that the next one tries again). */
void core_bump_read_reply(struct part *p, unsigned r, int status, uint64_t version)
{
	struct qbd_core *c = p->c;
	uint64_t ch = p->chunk;
	uint32_t targets;

	if (status == -EPERM)
		core_fence(c);
	if (status == 0 && version != c->version[ch]) {
		core_stale_set(c, r, ch); /* writes are held: a current replica has V[c] */
		status = -ESTALE;
	}
	if (status == -ESTALE)
		core_stale_set(c, r, ch);
	targets = core_up_set(c) & core_current_set(c, ch);
	if (status || c->fenced || !targets ||
	    core_next_version(c, c->version[ch], &p->newv)) {
		p->kind = P_RSREAD;
		p->len = c->cfg.chunk_size;
		p->newv = p->src_version;
		if (status == 0 && !c->fenced && targets)
			core_logf(c, L_WARN, "chunk %llu: no version left to copy flagged copies "
				  "again in this epoch", (unsigned long long)ch);
		resync_end(p);
		return;
	}
	p->kind = P_RSBUMPW;
	core_write_version(p, targets);
	p->okset = 0;
	core_write_send(p, targets, 0, 0);
}

/* A current replica answered the bump's WRITE (block 0 at the next
 * version); once all did, the copy to the targets starts. */
void core_bump_write_reply(struct part *p, unsigned r, int status)
{
	struct qbd_core *c = p->c;

	status = core_part_answered(p, r, status);
	/* A write of bytes every current replica holds already: one
	 * that fails is stale, one that lands has them at V[c]. */
	if (status)
		core_stale_set(c, r, p->chunk);
	c->wr_subs[p->chunk]--;
	if (p->pending)
		return;
	if (core_wq(c, p->okset) && c->acked[p->chunk] < p->newv)
		c->acked[p->chunk] = p->newv;
	if (c->fenced) {
		p->kind = P_RSREAD;
		p->rs_targets = 0;
		resync_end(p);
		return;
	}
	p->kind = P_RSREAD;
	p->len = c->cfg.chunk_size;
	p->src_version = c->version[p->chunk];
	/* A flagged replica that took the bump itself (it crashed
	 * after, or reported damage) may hold the new version: it
	 * waits for the next resync, which bumps again. */
	p->rs_targets = 0;
	for (unsigned t = 0; t < c->R; t++)
		if (c->up[t] && bit_get(c->stale[t], p->chunk) &&
		    !((p->targets & (1u << t)) && bit_get(c->flagged[t], p->chunk)))
			p->rs_targets |= 1u << t;
	resync_go(c, p);
}

/* Copy chunk ch to the up replicas stale for it; charged: the rate
 * limit's tokens paid a chunk's worth for it (resync_charge settles). */
static void resync_start(struct qbd_core *c, uint64_t ch, bool charged)
{
	struct cwait *w;
	struct part *p;
	uint32_t targets = 0;

	for (unsigned r = 0; r < c->R; r++)
		if (c->up[r] && bit_get(c->stale[r], ch))
			targets |= 1u << r;
	if (!targets)
		return;
	if (core_read_pick(c, ch, targets) < 0 &&
	    !core_quorum(c, core_up_set(c), core_probe_quorum(c)))
		return;
	w = core_cw_get(c, ch);
	if (!w)
		return;
	if (w->resyncing)
		return;
	p = core_part_new(c, NULL, P_RSREAD, ch);
	if (p) /* the sparse form at most: the bitmap and every block */
		p->owned = malloc(core_bitmap_bytes(c, c->cfg.chunk_size) +
				  (size_t)c->cfg.chunk_size);
	if (!p || !p->owned) {
		if (p)
			free(p);
		core_cw_maybe_free(c, w);
		core_logf(c, L_WARN, "no memory to resync chunk %llu", (unsigned long long)ch);
		return;
	}
	w->resyncing = true;
	c->rs_active++;
	p->cw = w;
	p->buf = p->owned;
	p->len = c->cfg.chunk_size;
	p->rs_targets = targets;
	p->rs_charged = charged;
	p->src_version = p->newv = c->version[ch];
	if (!resync_bump(c, p))
		resync_go(c, p);
	core_part_put(p);
}

/* A probe answer. cflags: the chunk's flags the reply carries, or
 * NO_CFLAGS when the shell does not know them; then what the writer
 * learnt from OPEN and PING replies stands, which a write over a bad
 * block (clearing DAMAGED on the replica) may have made out of date. */
void core_probe_reply(struct part *p, unsigned r, int status, uint64_t version,
		      int64_t cflags)
{
	p->pending &= ~(1u << r);
	if (status == -EPERM)
		core_fence(p->c);
	if (status == 0 || status == -EBADMSG) {
		p->pok |= 1u << r;
		p->pv[r] = version;
		if (cflags != NO_CFLAGS)
			core_flag_update(p->c, r, p->chunk, (uint32_t)cflags);
	}
	if (status == -EBADMSG)
		p->pbad |= 1u << r;
	if (!p->pending)
		probe_done(p);
}

void *core_resync_reply_buf(struct part *p, uint32_t len)
{
	const struct qbd_core *c = p->c;
	uint32_t bmb = core_bitmap_bytes(c, c->cfg.chunk_size);

	if (len < bmb || len - bmb > c->cfg.chunk_size || (len - bmb) % c->cfg.block_size)
		return NULL;
	p->rs_len = len;
	return p->owned;
}

/* Is the sparse form in p->buf (p->rs_len bytes) the bitmap plus exactly
 * the blocks it marks, with no bit past the last block? */
static bool resync_sparse_ok(const struct part *p)
{
	const struct qbd_core *c = p->c;
	uint32_t nb = c->cfg.chunk_size / c->cfg.block_size;
	uint32_t bmb = core_bitmap_bytes(c, c->cfg.chunk_size);
	uint64_t marked = 0;

	if (p->rs_len < bmb)
		return false;
	for (uint32_t i = 0; i < bmb * 8; i++) {
		bool on = (p->buf[i / 8] >> (i % 8)) & 1u;

		if (on && i >= nb)
			return false;
		marked += on;
	}
	return p->rs_len == bmb + marked * c->cfg.block_size;
}

/* The source answered the resync's SPARSE READ of the chunk: write its
 * sparse form to the targets still stale (RESYNC, FUA), or try another
 * source. */
void core_resync_read_reply(struct part *p, unsigned r, int status,
			    uint64_t version)
{
	struct qbd_core *c = p->c;
	uint64_t ch = p->chunk;
	uint32_t targets = 0;

	if (status == -EPERM)
		core_fence(c);
	if (status == 0 && !resync_sparse_ok(p)) {
		core_logf(c, L_WARN, "resync of chunk %llu: replica %u sent %u bytes that are "
			  "not the chunk's sparse form", (unsigned long long)ch, r, p->rs_len);
		status = -EPROTO;
	}
	if (status == 0 && version != p->src_version) {
		/* Writes are held, so a current replica has V[c]. */
		if (p->src_version == c->version[ch])
			core_stale_set(c, r, ch);
		status = -ESTALE;
	}
	if (status == -ESTALE && p->src_version == c->version[ch])
		core_stale_set(c, r, ch);
	if (status) {
		if (p->src_version != p->newv) {
			resync_end(p); /* the named source failed: probe again */
			return;
		}
		resync_read(p);
		return;
	}
	for (unsigned t = 0; t < c->R; t++)
		if ((p->rs_targets & (1u << t)) && c->up[t] && bit_get(c->stale[t], ch))
			targets |= 1u << t;
	if (!targets) {
		resync_end(p);
		return;
	}
	p->kind = P_RSWRITE;
	p->rs_targets = p->targets = p->pending = targets;
	p->expected = 0;
	resync_charge(p, (uint64_t)p->rs_len * popc(targets));
#ifdef QBD_CORE_MUTANT_NO_RESYNC
	for (unsigned t = 0; t < c->R; t++)
		if (targets & (1u << t))
			core_stale_clear(c, t, ch);
	resync_end(p);
	return;
#endif
	/* FUA: a copy that a crash could take back in part must not count
	 * as current (a restore after a power loss trusts versions). */
	for (unsigned t = 0; t < c->R; t++)
		if (targets & (1u << t)) {
			c->rs_bytes[t] += p->rs_len;
			core_part_send(p, t, QBD_CM_WRITE, 0, c->cfg.chunk_size,
				       QBD_CORE_F_RESYNC | QBD_CORE_F_FUA | QBD_CORE_F_SPARSE,
				       p->buf);
		}
}

/* Target r answered the resync's RESYNC write. */
void core_resync_write_reply(struct part *p, unsigned r, int status)
{
	struct qbd_core *c = p->c;

	status = core_part_answered(p, r, status);
	if (status == 0 && c->version[p->chunk] == p->newv) {
		resync_landed(c, r, p->chunk);
	} else if (status) {
		core_logf(c, L_WARN, "resync of chunk %llu to replica %u: error %d",
			  (unsigned long long)p->chunk, r, status);
	}
	if (!p->pending)
		resync_end(p);
}

/* The next chunk r is stale for, from its cursor on, that no resync is
 * copying already. */
static bool next_stale(struct qbd_core *c, unsigned r, uint64_t *out)
{
	uint64_t words = (c->nchunks + 63) / 64;
	uint64_t i = c->rs_cursor[r] / 64;

	for (uint64_t n = 0; n <= words; n++, i = (i + 1) % words) {
		uint64_t word = c->stale[r][i];

		if (n == 0)
			word &= ~0ull << (c->rs_cursor[r] % 64);
		while (word) {
			uint64_t ch = i * 64 + (uint64_t)__builtin_ctzll(word);
			struct cwait *w = core_cw_find(c, ch);

			word &= word - 1;
			if (w && w->resyncing)
				continue;
			c->rs_cursor[r] = (ch + 1) % c->nchunks;
			*out = ch;
			return true;
		}
	}
	return false;
}

/* Chunks that requests wait for, at up to twice the parallel resyncs
 * and regardless of the rate limit. */
static void resync_waited(struct qbd_core *c)
{
	unsigned par = c->cfg.resync_parallel;

	for (unsigned b = 0; b < CWBUCKETS; b++)
		for (struct cwait *w = c->ctab[b], *nx; w; w = nx) {
			nx = w->next;
			if (w->head && !w->resyncing && c->rs_active < 2 * par)
				resync_start(c, w->chunk, false);
		}
}

/* Attach's recovery list: chunks below W current copies, regardless of
 * the rate limit. */
static void resync_urgent(struct qbd_core *c)
{
	while (c->urgent_pos < c->nurgent && c->rs_active < c->cfg.resync_parallel) {
		uint64_t ch = c->urgent[c->urgent_pos++];

		if (!core_wq(c, core_current_set(c, ch)))
			resync_start(c, ch, false);
	}
}

/* The rate limit's tokens (bytes), refilled for the time since the last
 * call, at most parallel chunks' worth saved up. */
static void resync_refill(struct qbd_core *c)
{
	int64_t cap = (int64_t)c->cfg.chunk_size * c->cfg.resync_parallel;
	double add;

	if (!c->rs_last)
		c->rs_last = c->now; /* the first call: nothing saved before it */
	add = (double)c->cfg.resync_rate * (double)(c->now - c->rs_last) / 1e9;

	/* (bounded before the conversion: a debt is never more than the
	 * copies in flight, a few caps) */
	c->rs_tokens += add > 8.0 * (double)cap ? 8 * cap : (int64_t)add;
	if (c->rs_tokens > cap)
		c->rs_tokens = cap;
	c->rs_last = c->now;
}

/* Background resync: the next stale chunks of each up replica in turn,
 * within the parallel limit and the rate. */
static void resync_background(struct qbd_core *c)
{
	unsigned par = c->cfg.resync_parallel;
	uint64_t cs = c->cfg.chunk_size;

	for (unsigned r = 0; r < c->R && c->rs_active < par; r++) {
		unsigned tries = par;

		if (!c->up[r] || !c->nstale[r] || c->now < c->rs_backoff[r])
			continue;
		while (c->rs_active < par && tries--) {
			uint64_t ch;
			unsigned before = c->rs_active;

			/* A copy starts while the rate has saved anything
			 * at all: it is charged a chunk's worth, settled
			 * with the bytes it moved (resync_charge), so a
			 * rate below a chunk a second still makes progress. */
			if (c->cfg.resync_rate && c->rs_tokens <= 0)
				return;
			if (!next_stale(c, r, &ch))
				break;
			resync_start(c, ch, c->cfg.resync_rate != 0);
			if (c->rs_active > before && c->cfg.resync_rate)
				c->rs_tokens -= (int64_t)cs;
		}
	}
}

/* A copy landed during the reply just handled: start what may start. */
void core_resync_kicked(struct qbd_core *c)
{
	if (!c->rs_kick)
		return;
	c->rs_kick = false;
	core_resync_schedule(c);
}

/* Start the resyncs that may start now (after attach, until fenced). */
void core_resync_schedule(struct qbd_core *c)
{
	if (!c->opened || c->fenced)
		return;
	resync_waited(c);
	resync_urgent(c);
	if (c->cfg.resync_rate)
		resync_refill(c);
	resync_background(c);
}

void qbd_core_pull_copied(struct qbd_core *c, unsigned r, uint64_t id,
			  uint64_t bytes, uint64_t now)
{
	struct sub *s = r < c->R ? core_sub_find(c, r, id) : NULL;

	c->now = now;
	if (!s || s->p->kind != P_RSPULL)
		return;
	c->rs_bytes[r] += bytes;
	resync_charge(s->p, bytes);
}

void qbd_core_set_resync_rate(struct qbd_core *c, uint64_t rate, uint64_t now)
{
	c->now = now;
	if (rate == c->cfg.resync_rate)
		return;
	if (c->cfg.resync_rate) {
		resync_refill(c); /* what the old rate earned until now */
	} else {
		c->rs_tokens = 0;   /* unlimited until now: start from nothing */
		c->rs_last = now;
	}
	core_logf(c, L_DEBUG, "resync rate %llu bytes/s (was %llu; 0 = unlimited)",
		  (unsigned long long)rate, (unsigned long long)c->cfg.resync_rate);
	c->cfg.resync_rate = rate;
}

uint64_t qbd_core_resync_rate(const struct qbd_core *c)
{
	return c->cfg.resync_rate;
}
