/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The quorum core's public API (core.h): creating and freeing a core,
 * its inputs (replicas opening, going down and answering, the timer,
 * user requests) and the queries of its state. The mechanisms live in
 * the files internal.h lists, one per concern.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/core/internal.h"

void core_logf(struct qbd_core *c, int level, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	if (!c->ops.log)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	c->ops.log(c->user, level, buf);
}

/* Is the membership of cfg well formed (after defaults)? */
static bool members_valid(const struct qbd_core_cfg *cfg)
{
	uint32_t all = cfg->voters | cfg->joint | cfg->learners;

	if ((unsigned)__builtin_popcount(cfg->voters) != cfg->replicas ||
	    (cfg->joint && (unsigned)__builtin_popcount(cfg->joint) != cfg->replicas))
		return false;
	if (cfg->learners & (cfg->voters | cfg->joint))
		return false;
	return !(all >> QBD_CORE_MAX_SLOTS);
}

int qbd_core_new(const struct qbd_core_cfg *cfg, const struct qbd_core_ops *ops,
		 void *user, struct qbd_core **out)
{
	struct qbd_core_cfg k;
	struct qbd_core *c;
	size_t words;
	uint32_t all;

	*out = NULL;
	if (cfg->replicas == 0 || cfg->replicas > QBD_CORE_MAX_REPLICAS ||
	    cfg->write_quorum == 0 ||
	    cfg->write_quorum > cfg->replicas || cfg->nchunks == 0 ||
	    cfg->chunk_size == 0 || cfg->epoch == 0 ||
	    (cfg->block_size && cfg->chunk_size % cfg->block_size) ||
	    (!cfg->block_size && cfg->chunk_size % 4096) ||
	    cfg->epoch > QBD_CORE_MAX_EPOCH || !ops->send || !ops->complete ||
	    !ops->drop || !ops->data_moved)
		return -EINVAL;
	k = *cfg;
	if (!k.voters)
		k.voters = (1u << k.replicas) - 1;
	if (!members_valid(&k))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cfg = k;
	if (!c->cfg.timeout_ns)
		c->cfg.timeout_ns = 10000000000ull;
	if (!c->cfg.resync_parallel)
		c->cfg.resync_parallel = 4;
	if (!c->cfg.lease_ns)
		c->cfg.lease_ns = 5000000000ull;
	if (!c->cfg.block_size)
		c->cfg.block_size = 4096;
	c->ops = *ops;
	c->user = user;
	c->vset[0] = k.voters;
	c->vset[1] = k.joint;
	c->learners = k.learners;
	c->members = all = k.voters | k.joint | k.learners;
	c->leaving = -1;
	if (k.joint && __builtin_popcount(k.voters & ~k.joint) == 1)
		c->leaving = __builtin_ctz(k.voters & ~k.joint);
	c->R = 32u - (unsigned)__builtin_clz(all);
	c->nv = k.replicas;
	c->W = k.write_quorum;
	c->nchunks = k.nchunks;
	words = (k.nchunks + 63) / 64;
	c->version = calloc(k.nchunks, sizeof(uint64_t));
	c->acked = calloc(k.nchunks, sizeof(uint64_t));
	c->wr_inflight = calloc(k.nchunks, sizeof(uint32_t));
	c->wr_subs = calloc(k.nchunks, sizeof(uint32_t));
	c->gen = calloc(k.nchunks, sizeof(uint32_t));
	c->dirty_bm = calloc(words, sizeof(uint64_t));
	if (!c->version || !c->acked || !c->wr_inflight || !c->wr_subs ||
	    !c->gen || !c->dirty_bm)
		goto nomem;
	for (unsigned r = 0; r < c->R; r++)
		if (core_slot_alloc(c, r))
			goto nomem;
	*out = c;
	return 0;
nomem:
	qbd_core_free(c);
	return -ENOMEM;
}

/* Let go of part p at qbd_core_free, without completing its request
 * (the request's record goes with its last part). */
static void free_part(struct part *p)
{
	if (p->io && --p->io->left == 0)
		free(p->io);
	p->io = NULL;
	core_part_put(p);
}

/* Flushes waiting for the one in flight (which has live subs). */
static void free_flush_waiters(struct qbd_core *c)
{
	for (int pass = 0; pass < 2; pass++) {
		struct part *f = pass ? c->fl_head :
				 c->fl_active ? c->fl_active->followers : NULL;

		while (f) {
			struct part *n = f->wnext;

			free_part(f);
			f = n;
		}
	}
	if (c->fl_active)
		c->fl_active->followers = NULL;
	c->fl_head = c->fl_tail = NULL;
}

/* Parts waiting for a chunk, and the chunks' entries. */
static void free_chunk_waits(struct qbd_core *c)
{
	for (unsigned b = 0; b < CWBUCKETS; b++)
		while (c->ctab[b]) {
			struct cwait *w = c->ctab[b];

			while (w->head) {
				struct part *p = w->head;

				w->head = p->wnext;
				free_part(p);
			}
			c->ctab[b] = w->next;
			free(w);
		}
}

/* Messages in flight: unlink each; a part goes with its last one. */
static void free_messages(struct qbd_core *c)
{
	for (unsigned r = 0; r < c->R; r++)
		while (c->rhead[r]) {
			struct sub *s = c->rhead[r];

			core_sub_unlink(c, s);
			free_part(s->p);
		}
}

void qbd_core_free(struct qbd_core *c)
{
	if (!c)
		return;
	free_flush_waiters(c);
	free_chunk_waits(c);
	free_messages(c);
	free(c->version);
	free(c->acked);
	free(c->wr_inflight);
	free(c->wr_subs);
	free(c->gen);
	free(c->dirty_bm);
	free(c->dirty);
	free(c->urgent);
	for (unsigned r = 0; r < MAXR; r++) {
		free(c->cf_stale[r]);
		free(c->stale[r]);
		free(c->flagged[r]);
		free(c->damaged[r]);
	}
	free(c);
}

/*
 * Take r's OPEN list into the chunk versions and r's stale and flagged
 * bitmaps (qbd_core_replica_open says how). 0 or -ENOMEM, before
 * anything changed.
 */
static int open_merge(struct qbd_core *c, unsigned r,
		      const struct qbd_chunk_version *list, size_t n)
{
	uint64_t words = (c->nchunks + 63) / 64;
	uint64_t *listed = calloc(words, sizeof(uint64_t));

	if (!listed)
		return -ENOMEM;
	/* The list says which copies are flagged now (a resync or repair may
	 * have cleared what we knew of). */
	memset(c->flagged[r], 0, words * sizeof(uint64_t));
	memset(c->damaged[r], 0, words * sizeof(uint64_t));
	c->nflagged[r] = 0;
	c->flagged_total[r] = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t ch = list[i].chunk, v = list[i].version;
		uint32_t flags = list[i].flags;

#ifdef QBD_CORE_MUTANT_NO_SUSPECT
		flags = 0;
#endif
		if (!v && !flags)
			continue;
		listed[ch / 64] |= 1ull << (ch % 64);
#ifdef QBD_CORE_MUTANT_NO_RECOVERY_MAX
		if (!c->opened && v != c->version[ch]) {
#else
		if (!c->opened && v > c->version[ch]) {
#endif
			/* A newer version: every replica merged so far lacks it. */
			c->version[ch] = v;
			for (unsigned o = 0; o < c->R; o++)
				if (o != r)
					core_stale_set(c, o, ch);
		}
		if (flags) {
			/* Its copy need not match its version: never current
			 * until copied again, though its version counts in the
			 * maximum (a version it may hold must never be reused). */
			core_flag_set(c, r, ch, flags);
			c->flagged_total[r]++;
		} else if (v == c->version[ch]) {
			core_stale_clear(c, r, ch);
		} else {
			core_stale_set(c, r, ch);
		}
	}
	for (uint64_t ch = 0; ch < c->nchunks; ch++)
		if (!bit_get(listed, ch)) {
			if (c->version[ch])
				core_stale_set(c, r, ch);
			else
				core_stale_clear(c, r, ch);
		}
	free(listed);
	return 0;
}

int qbd_core_replica_open(struct qbd_core *c, unsigned r,
			  const struct qbd_chunk_version *list, size_t n,
			  uint64_t now)
{
	int err;

	c->now = now;
	if (r >= c->R || c->up[r] || !(c->members & (1u << r)))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (list[i].chunk >= c->nchunks || (list[i].flags & ~QBD_CORE_CHUNK_FLAGS))
			return -EINVAL;
	err = open_merge(c, r, list, n);
	if (err)
		return err;
	c->up[r] = true;
	c->confirmed[r] = now;
	c->last_reply[r] = now;
	c->pinging[r] = false;
	c->rs_backoff[r] = 0;
	if (!c->opened) {
		c->promised |= 1u << r;
	} else {
		core_flush_reconnected(c, r);
		core_cw_run_all(c);
	}
	core_logf(c, c->nflagged[r] ? L_WARN : L_INFO,
		  "replica %u up: %zu chunks listed, %llu stale, %llu flagged", r, n,
		  (unsigned long long)c->nstale[r], (unsigned long long)c->nflagged[r]);
	return 0;
}

int qbd_core_replica_flagged(struct qbd_core *c, unsigned r,
			     const struct qbd_chunk_version *list, size_t n,
			     uint64_t total, uint64_t now)
{
	c->now = now;
	if (r >= c->R || !c->up[r] || !(c->members & (1u << r)) || total < n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (list[i].chunk >= c->nchunks || !list[i].flags ||
		    (list[i].flags & ~QBD_CORE_CHUNK_FLAGS))
			return -EINVAL;
	c->flagged_total[r] = total;
#ifdef QBD_CORE_MUTANT_NO_SUSPECT
	return 0;
#endif
	for (size_t i = 0; i < n; i++) {
		uint64_t ch = list[i].chunk;

		if (bit_get(c->flagged[r], ch) &&
		    (!(list[i].flags & QBD_CORE_CHUNK_DAMAGED) || bit_get(c->damaged[r], ch)))
			continue;
		core_logf(c, L_WARN, "replica %u reports chunk %llu %s at version %#llx: copying it again",
			  r, (unsigned long long)ch,
			  (list[i].flags & QBD_CORE_CHUNK_DAMAGED) ? "damaged" : "suspect",
			  (unsigned long long)list[i].version);
		core_flag_set(c, r, ch, list[i].flags);
	}
	return 0;
}

int qbd_core_open_done(struct qbd_core *c, uint64_t now)
{
	size_t cap = 0;

	c->now = now;
	c->rs_last = now;
	if (!core_quorum(c, c->promised, core_attach_quorum(c)))
		return -EIO;
	c->write_hold = now + c->cfg.takeover_wait_ns;
	c->opened = true;
	for (uint64_t ch = 0; ch < c->nchunks; ch++) {
		if (!c->version[ch])
			continue;
		for (unsigned r = 0; r < c->R; r++)
			if (!(c->promised & (1u << r)))
				core_stale_set(c, r, ch);
		if (core_wq(c, core_current_set(c, ch))) {
			c->acked[ch] = c->version[ch];
		} else {
			if (c->nurgent == cap) {
				uint64_t *u;

				cap = cap ? cap * 2 : 64;
				u = realloc(c->urgent, cap * sizeof(*u));
				if (!u)
					return -ENOMEM;
				c->urgent = u;
			}
			c->urgent[c->nurgent++] = ch;
		}
	}
	if (c->nurgent)
		core_logf(c, L_INFO, "%zu chunks below %u copies: recovering them first",
			  c->nurgent, c->W);
	core_resync_schedule(c);
	return 0;
}

void qbd_core_replica_down(struct qbd_core *c, unsigned r, uint64_t now)
{
	c->now = now;
	if (r >= c->R)
		return;
	c->up[r] = false;
	while (c->rhead[r])
		core_sub_result(c, c->rhead[r], -ENOTCONN, 0, NO_CFLAGS);
	core_cw_run_all(c);
}

void *qbd_core_reply_buf(struct qbd_core *c, unsigned r, uint64_t id, uint32_t len)
{
	struct sub *s = r < c->R ? core_sub_find(c, r, id) : NULL;

	if (!s || (s->p->kind != P_READ && s->p->kind != P_RSREAD &&
		   s->p->kind != P_PROBE && s->p->kind != P_RSBUMP))
		return NULL;
	if (s->p->kind == P_RSREAD)
		return core_resync_reply_buf(s->p, len);
	if (s->p->bitmap)
		return core_bitmap_bytes(c, s->p->len) == len ? s->p->owned : NULL;
	return s->p->len == len ? s->p->buf : NULL;
}

/* A reply from r came at now: the message it answers, or NULL (a late or
 * duplicate reply, or r out of range). */
static struct sub *reply_find(struct qbd_core *c, unsigned r, uint64_t id,
			      uint64_t now)
{
	c->now = now;
	if (r >= c->R)
		return NULL;
	c->last_reply[r] = now;
	return core_sub_find(c, r, id);
}

void qbd_core_reply(struct qbd_core *c, unsigned r, uint64_t id, int status,
		    uint64_t version, uint64_t now)
{
	struct sub *s = reply_find(c, r, id, now);

	if (s)
		core_sub_result(c, s, status, version, NO_CFLAGS);
	core_resync_kicked(c);
}

void qbd_core_read_reply(struct qbd_core *c, unsigned r, uint64_t id, int status,
			 uint64_t version, uint32_t chunk_flags, uint64_t now)
{
	struct sub *s = reply_find(c, r, id, now);

	if (!s)
		return;
	/* Only a probe acts on them; unknown flags tell nothing. */
	core_sub_result(c, s, status, version,
			s->p->kind == P_PROBE && !(chunk_flags & ~QBD_CORE_CHUNK_FLAGS)
				? (int64_t)chunk_flags : NO_CFLAGS);
	core_resync_kicked(c);
}

void qbd_core_tick(struct qbd_core *c, uint64_t now)
{
	c->now = now;
	for (unsigned r = 0; r < c->R; r++) {
		struct sub *s = c->rhead[r];

		if (c->up[r] && s && now - s->sent > c->cfg.timeout_ns) {
			core_logf(c, L_WARN, "replica %u: request timed out", r);
			c->ops.drop(c->user, r, "request timed out");
			qbd_core_replica_down(c, r, now);
		}
	}
	core_lease_keep(c);
	core_cw_run_all(c);
	core_resync_schedule(c);
}

/* Is the request well formed? (Else qbd_core_submit fails it with
 * -EINVAL.) */
static bool submit_valid(const struct qbd_core *c, enum qbd_core_op op,
			 uint64_t offset, uint32_t length, const void *buf)
{
	uint64_t end = offset + length;
	uint32_t bs = c->cfg.block_size;

	if (op < QBD_CORE_READ || op > QBD_CORE_BLOCK_STATUS)
		return false;
	if (op != QBD_CORE_FLUSH &&
	    (length == 0 || end < offset || end > c->nchunks * c->cfg.chunk_size ||
	     (op != QBD_CORE_ZERO && !buf)))
		return false;
	return !(op == QBD_CORE_BLOCK_STATUS && (offset % bs || length % bs));
}

/* Admit the part of request io (op on [offset, offset + length) with
 * buf) that covers [pos, pos + len), within one chunk. */
static void submit_part(struct qbd_core *c, struct uio *io, enum qbd_core_op op,
			uint32_t flags, uint64_t offset, void *buf, uint64_t pos,
			uint32_t len)
{
	uint64_t cs = c->cfg.chunk_size;
	enum pkind kind = op == QBD_CORE_READ || op == QBD_CORE_BLOCK_STATUS ? P_READ :
			  P_WRITE;
	struct part *p = core_part_new(c, io, kind, pos / cs);

	if (!p) {
		io->err = io->err ? io->err : -ENOMEM;
		return;
	}
	io->left++;
	p->off = (uint32_t)(pos % cs);
	p->len = len;
	p->flags = (op == QBD_CORE_ZERO ? QBD_CORE_F_ZERO : 0) |
		   (flags & QBD_CORE_F_FUA);
	p->buf = op == QBD_CORE_ZERO ? NULL : (uint8_t *)buf + (pos - offset);
	if (op == QBD_CORE_BLOCK_STATUS) {
		p->flags = 0;
		p->bitmap = true;
		p->buf = buf;
		p->bitpos = (pos - offset) / c->cfg.block_size;
		p->owned = calloc(1, core_bitmap_bytes(c, len));
		if (!p->owned) {
			io->err = io->err ? io->err : -ENOMEM;
			core_part_finish(p, -ENOMEM);
			core_part_put(p);
			return;
		}
	}
	core_part_admit(c, p);
}

void qbd_core_submit(struct qbd_core *c, enum qbd_core_op op, uint32_t flags,
		     uint64_t offset, uint32_t length, void *buf, void *cookie,
		     uint64_t now)
{
	uint64_t cs = c->cfg.chunk_size, end = offset + length;
	struct uio *io = calloc(1, sizeof(*io));

	c->now = now;
	if (!io) {
		c->ops.complete(c->user, cookie, -ENOMEM);
		return;
	}
	io->cookie = cookie;
	io->left = 1; /* held until every part is admitted */
	c->pending_ios++;
	if (!submit_valid(c, op, offset, length, buf)) {
		core_io_done(c, io, -EINVAL);
		return;
	}
	if (c->fenced) {
		core_io_done(c, io, -EPERM);
		return;
	}
	if (op == QBD_CORE_FLUSH) {
		struct part *p = core_part_new(c, io, P_FLUSH, 0);

		if (p) {
			io->left++;
			core_part_admit(c, p);
		}
		core_io_done(c, io, p ? 0 : -ENOMEM);
		return;
	}
	for (uint64_t pos = offset; pos < end;) {
		uint32_t off = (uint32_t)(pos % cs);
		uint32_t len = (uint32_t)(end - pos < cs - off ? end - pos : cs - off);

		submit_part(c, io, op, flags, offset, buf, pos, len);
		pos += len;
	}
	core_io_done(c, io, 0);
	if (c->ncwait)
		core_resync_schedule(c);
}

int qbd_core_replica_info(const struct qbd_core *c, unsigned r,
			  struct qbd_core_replica_info *out)
{
	if (r >= c->R)
		return -EINVAL;
	out->up = c->up[r];
	out->stale_chunks = c->nstale[r];
	out->resync_done = c->rs_done[r];
	out->resync_total = c->rs_done[r] + c->nstale[r];
	out->in_flight = c->outstanding[r];
	out->pulled = c->pulled[r];
	out->resync_bytes = c->rs_bytes[r];
	out->flagged = c->nflagged[r];
	out->flagged_total = c->flagged_total[r];
	out->last_reply = c->last_reply[r];
	/* A replica's messages are listed oldest first. */
	out->oldest_unanswered = c->rhead[r] ? c->rhead[r]->sent : 0;
	return 0;
}

bool qbd_core_fenced(const struct qbd_core *c) { return c->fenced; }
unsigned qbd_core_up_count(const struct qbd_core *c) { return popc(core_up_set(c)); }
unsigned qbd_core_pending(const struct qbd_core *c) { return c->pending_ios; }
unsigned qbd_core_messages(const struct qbd_core *c) { return c->nsubs; }

uint64_t qbd_core_resync_backlog(const struct qbd_core *c)
{
	uint64_t n = c->rs_active;

	for (unsigned r = 0; r < c->R; r++)
		if (c->up[r])
			n += c->nstale[r];
	return n;
}

uint64_t qbd_core_chunk_version(const struct qbd_core *c, uint64_t chunk)
{
	return chunk < c->nchunks ? c->version[chunk] : 0;
}

bool qbd_core_is_stale(const struct qbd_core *c, unsigned r, uint64_t chunk)
{
	return r < c->R && chunk < c->nchunks && bit_get(c->stale[r], chunk);
}

bool qbd_core_is_flagged(const struct qbd_core *c, unsigned r, uint64_t chunk)
{
	return r < c->R && chunk < c->nchunks && bit_get(c->flagged[r], chunk);
}

void qbd_core_fence(struct qbd_core *c, unsigned r)
{
	if (!c->fenced)
		core_logf(c, L_ERR, "replica %u refuses this writer (epoch %llu) after attach",
			  r, (unsigned long long)c->cfg.epoch);
	core_fence(c);
}

/* p (n_old elements of size bytes) reallocated for n, the new elements
 * zeroed; NULL (p untouched) without memory. */
static void *grow_array(void *p, size_t size, uint64_t n_old, uint64_t n)
{
	uint8_t *q;

	if (n > SIZE_MAX / size)
		return NULL;
	q = realloc(p, n * size);
	if (q)
		memset(q + n_old * size, 0, (n - n_old) * size);
	return q;
}

/* Grow array field f of c from o to n elements, or return -ENOMEM. */
#define GROW(f, o, n)							\
	do {								\
		void *g_ = grow_array((f), sizeof(*(f)), (o), (n));	\
		if (!g_)						\
			return -ENOMEM;					\
		(f) = g_;						\
	} while (0)

/*
 * The volume grew (qbd volume resize): chunks [c->nchunks, nchunks) are
 * new. Nothing was ever written there (libqbd refuses requests beyond
 * the size, and a volume never shrinks), so each new chunk is at version
 * 0 on every replica: current everywhere, stale and flagged nowhere,
 * committed at 0. Only the per-chunk arrays and bitmaps grow (every
 * slot's, a learner's too, and a change flush's snapshots); every other
 * state, a membership change in progress included, stays. A failure leaves c->nchunks as it was (arrays already grown
 * only have room to spare, zeroed).
 */
int qbd_core_grow(struct qbd_core *c, uint64_t nchunks)
{
	uint64_t old = c->nchunks, ow = (old + 63) / 64, nw = (nchunks + 63) / 64;
	const size_t nslots = sizeof(c->stale) / sizeof(c->stale[0]);

	if (nchunks < old)
		return -EINVAL;
	if (nchunks == old)
		return 0;
	GROW(c->version, old, nchunks);
	GROW(c->acked, old, nchunks);
	GROW(c->wr_inflight, old, nchunks);
	GROW(c->wr_subs, old, nchunks);
	GROW(c->gen, old, nchunks);
	/* Bitmaps: the bits past the old last chunk are clear (only chunks
	 * in range are ever set), so the last old word needs nothing. */
	GROW(c->dirty_bm, ow, nw);
	for (size_t r = 0; r < nslots; r++) {
		if (c->stale[r])
			GROW(c->stale[r], ow, nw);
		if (c->flagged[r])
			GROW(c->flagged[r], ow, nw);
		if (c->damaged[r])
			GROW(c->damaged[r], ow, nw);
		/* A change flush's snapshot: a new chunk was never written,
		 * so at the snapshot it was as a never-written chunk is. */
		if (c->cf_stale[r])
			GROW(c->cf_stale[r], ow, nw);
	}
	c->nchunks = nchunks;
	c->cfg.nchunks = nchunks;
	core_logf(c, L_INFO, "volume grew from %llu to %llu chunks",
		  (unsigned long long)old, (unsigned long long)nchunks);
	return 0;
}

#undef GROW
