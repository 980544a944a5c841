/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Quorum core: see core.h for what it decides and docs/protocol.md for why
 * it is safe. Everything here runs inside a call from the shell; ops
 * callbacks must not call back into the core.
 *
 * A user request (struct uio) is split into parts, one per chunk. A part
 * sends one message (struct sub) per replica it needs; every live sub is in
 * an id hash (to find it from a reply) and in its replica's list, oldest
 * first (to fail it when the replica goes down, and to time it out).
 * Resyncs and repairs are parts without a user request. A part is freed
 * when it is done and no sub of it is live.
 *
 * Chunks that have waiting parts or a resync in progress have a struct
 * cwait (a small hash table): a resync holds new writes of its chunk, and
 * parts that need a chunk recovered first wait there in arrival order.
 *
 * Test builds can define one QBD_CORE_MUTANT_* to disable a mechanism, so
 * that tests/sim can show that it notices.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/core/core.h"

#define MAXR QBD_CORE_MAX_REPLICAS
#define HBUCKETS 4096u
#define CWBUCKETS 64u
#define SEQ_MASK ((1ull << QBD_CORE_EPOCH_SHIFT) - 1)
#define NO_CFLAGS (-1)           /* a reply without the chunk's flags */

enum { L_ERR, L_WARN, L_INFO, L_DEBUG };

struct part;

struct sub {
	struct part *p;
	uint64_t id;
	uint64_t sent;
	unsigned replica;
	bool live;
	struct sub *hnext;
	struct sub *rprev, *rnext;
};

enum pkind { P_READ = 1, P_WRITE, P_FLUSH, P_REPAIR, P_RSREAD, P_RSWRITE, P_PROBE, P_PING,
	     P_RSPULL, P_RSBUMP, P_RSBUMPW, P_RFLUSH };

struct uio {
	void *cookie;
	unsigned left;
	int err;
};

struct cwait;

struct part {
	struct qbd_core *c;
	struct uio *io;
	enum pkind kind;
	uint64_t chunk;
	uint32_t off, len, flags;
	uint8_t *buf;            /* user's buffer, or owned */
	uint8_t *owned;
	uint64_t expected, newv;
	uint32_t targets, pending, okset;
	uint32_t nospc;          /* write: replicas that answered -ENOSPC */
	uint32_t unsure;         /* write: answers other than -ENOSPC, -ESTALE and 0 */
	uint32_t refused;        /* write: answers -ENOSPC or -ESTALE */
	bool vsame;              /* write: every refusal carried vfail */
	uint64_t vfail;          /* write: the version the refusals carried */
	bool done;
	bool started;            /* write: counted in wr_inflight */
	bool fallback;           /* pull: a target failed, copy through us */
	bool parked;             /* read: has data newer than committed */
	int result;
	/* reads (also the resync read) */
	uint32_t tried, bad;
	int replica;
	int first_err;
	uint64_t min_version, version;
	uint32_t gen;            /* read: c->gen[chunk] when sent */
	bool bitmap;             /* read: the written bitmap (BLOCK_STATUS) */
	uint64_t bitpos;         /* bitmap: first bit of the part in buf */
	/* flush: chunks it covers */
	uint64_t *dirty;
	size_t ndirty;
	bool all;                /* flush: needs every replica */
	struct part *followers;  /* flush: waited with it, finish with it */
	/* resync (and probe) */
	struct cwait *cw;
	uint32_t rs_targets;
	uint64_t src_version;    /* version the resync read must find */
	uint64_t pv[MAXR];       /* probe: versions reported */
	uint32_t pok;            /* probe: replicas that reported one */
	uint32_t pbad;           /* probe: of those, the ones whose block failed its checksum */
	/* waiting on a chunk */
	struct part *wnext;
	uint64_t qtime;
	unsigned refs;
	struct sub subs[MAXR];
};

struct cwait {
	uint64_t chunk;
	struct part *head, *tail;
	bool resyncing;
	struct cwait *next;
};

struct qbd_core {
	struct qbd_core_cfg cfg;
	struct qbd_core_ops ops;
	void *user;
	unsigned R, W;
	uint64_t nchunks;
	uint64_t *version;       /* V[c] */
	uint64_t *acked;         /* committed version: on W replicas */
	uint32_t *wr_inflight;   /* writes started, result not known */
	uint32_t *wr_subs;       /* write messages awaiting a reply */
	uint32_t *gen;           /* bumped when a chunk's version chain restarts */
	uint64_t *stale[MAXR];   /* bitmaps */
	uint64_t nstale[MAXR];
	uint64_t *flagged[MAXR]; /* bitmaps: copy reported SUSPECT or DAMAGED */
	uint64_t *damaged[MAXR]; /* bitmaps: of those, the DAMAGED ones */
	uint64_t nflagged[MAXR];
	uint64_t flagged_total[MAXR]; /* in the latest PING report */
	uint64_t rs_done[MAXR];
	uint64_t pulled[MAXR];
	uint64_t rs_backoff[MAXR];
	uint64_t rs_cursor[MAXR];
	bool up[MAXR];
	uint64_t confirmed[MAXR];/* send time of its latest answer under our epoch */
	bool pinging[MAXR];
	uint64_t write_hold;     /* writes wait until then (takeover) */
	unsigned promised;       /* bit per replica, during attach */
	unsigned outstanding[MAXR];
	struct sub *rhead[MAXR], *rtail[MAXR];
	bool opened, fenced;
	uint64_t next_id;
	struct sub *htab[HBUCKETS];
	unsigned nsubs;
	struct cwait *ctab[CWBUCKETS];
	unsigned ncwait;
	uint64_t *urgent;        /* chunks below W copies at attach */
	size_t nurgent, urgent_pos;
	uint64_t *dirty_bm;      /* chunks acknowledged since the last flush */
	uint64_t *dirty;
	size_t ndirty, dirty_cap;
	bool dirty_lost;         /* a chunk could not be listed */
	bool flush_eio;          /* a chunk was restored from a flagged copy: the
				  * next flush fails (acknowledged writes may be
				  * gone, as after a disk's cache was lost) */
	struct part *fl_active;  /* the flush in flight (one at a time) */
	struct part *fl_head, *fl_tail; /* flushes waiting for it */
	unsigned pending_ios;
	unsigned rs_active;
	uint64_t rs_tokens, rs_last;
	uint64_t now;
};

static void core_log(struct qbd_core *c, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void core_log(struct qbd_core *c, int level, const char *fmt, ...)
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

static unsigned popc(uint32_t x)
{
	return (unsigned)__builtin_popcount(x);
}

static bool bit_get(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1u;
}

static void stale_set(struct qbd_core *c, unsigned r, uint64_t ch)
{
	uint64_t m = 1ull << (ch % 64);

	if (!(c->stale[r][ch / 64] & m)) {
		c->stale[r][ch / 64] |= m;
		c->nstale[r]++;
	}
}

static void stale_clear(struct qbd_core *c, unsigned r, uint64_t ch)
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
static void flag_set(struct qbd_core *c, unsigned r, uint64_t ch, uint32_t flags)
{
	uint64_t m = 1ull << (ch % 64);

	if (!(c->flagged[r][ch / 64] & m)) {
		c->flagged[r][ch / 64] |= m;
		c->nflagged[r]++;
	}
	if (flags & QBD_CORE_CHUNK_DAMAGED)
		c->damaged[r][ch / 64] |= m;
	stale_set(c, r, ch);
}

static void flag_clear(struct qbd_core *c, unsigned r, uint64_t ch)
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
static void flag_update(struct qbd_core *c, unsigned r, uint64_t ch, uint32_t flags)
{
#ifdef QBD_CORE_MUTANT_NO_SUSPECT
	flags = 0;
#endif
	flag_clear(c, r, ch);
	if (flags)
		flag_set(c, r, ch, flags);
}

/* A resync of ch landed on r: it holds V[c], and a RESYNC write clears
 * the replica's flags. */
static void resync_landed(struct qbd_core *c, unsigned r, uint64_t ch)
{
	stale_clear(c, r, ch);
	flag_clear(c, r, ch);
	c->rs_done[r]++;
}

/* Replicas holding the chunk's current version (up or not). */
static uint32_t current_set(const struct qbd_core *c, uint64_t ch)
{
	uint32_t s = 0;

	for (unsigned r = 0; r < c->R; r++)
		if (!bit_get(c->stale[r], ch))
			s |= 1u << r;
	return s;
}

static uint32_t up_set(const struct qbd_core *c)
{
	uint32_t s = 0;

	for (unsigned r = 0; r < c->R; r++)
		if (c->up[r])
			s |= 1u << r;
	return s;
}

static void fence(struct qbd_core *c)
{
	if (!c->fenced)
		core_log(c, L_ERR, "fenced: a replica promised a newer epoch than %llu",
		     (unsigned long long)c->cfg.epoch);
	c->fenced = true;
}

/* ---- subs ---- */

static struct sub **hslot(struct qbd_core *c, uint64_t id)
{
	return &c->htab[(id * 0x9E3779B97F4A7C15ull) >> 52 & (HBUCKETS - 1)];
}

static void sub_unlink(struct qbd_core *c, struct sub *s)
{
	struct sub **pp = hslot(c, s->id);
	unsigned r = s->replica;

	while (*pp != s)
		pp = &(*pp)->hnext;
	*pp = s->hnext;
	if (s->rprev)
		s->rprev->rnext = s->rnext;
	else
		c->rhead[r] = s->rnext;
	if (s->rnext)
		s->rnext->rprev = s->rprev;
	else
		c->rtail[r] = s->rprev;
	s->live = false;
	s->hnext = s->rprev = s->rnext = NULL;
	c->outstanding[r]--;
	c->nsubs--;
}

static struct sub *sub_find(struct qbd_core *c, unsigned r, uint64_t id)
{
	for (struct sub *s = *hslot(c, id); s; s = s->hnext)
		if (s->id == id)
			return s->replica == r ? s : NULL;
	return NULL;
}

/* Send part p's message to replica r. */
static void part_send(struct part *p, unsigned r, enum qbd_core_msg_type type,
		      uint32_t off, uint32_t len, uint32_t flags, const void *data)
{
	struct qbd_core *c = p->c;
	struct sub *s = &p->subs[r];
	struct sub **slot;
	struct qbd_core_msg m = {
		.replica = r, .type = type, .chunk = p->chunk, .offset = off,
		.length = len, .expected_version = p->expected,
		.new_version = p->newv, .flags = flags, .data = data,
		.source = p->replica >= 0 ? (unsigned)p->replica : 0,
	};

	s->p = p;
	s->id = m.id = ++c->next_id;
	s->replica = r;
	s->sent = c->now;
	s->live = true;
	slot = hslot(c, s->id);
	s->hnext = *slot;
	*slot = s;
	s->rnext = NULL;
	s->rprev = c->rtail[r];
	if (c->rtail[r])
		c->rtail[r]->rnext = s;
	else
		c->rhead[r] = s;
	c->rtail[r] = s;
	c->outstanding[r]++;
	c->nsubs++;
	p->refs++;
	c->ops.send(c->user, &m);
}

/* ---- parts ---- */

static struct part *part_new(struct qbd_core *c, struct uio *io, enum pkind kind,
			     uint64_t ch)
{
	struct part *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->c = c;
	p->io = io;
	p->kind = kind;
	p->chunk = ch;
	p->replica = -1;
	p->refs = 1; /* dropped by part_put at the end of its starter */
	return p;
}

static void part_put(struct part *p)
{
	if (--p->refs)
		return;
	free(p->owned);
	free(p->dirty);
	free(p);
}

static void io_done(struct qbd_core *c, struct uio *io, int res)
{
	if (res && !io->err)
		io->err = res;
	if (--io->left)
		return;
	c->pending_ios--;
	c->ops.complete(c->user, io->cookie, io->err);
	free(io);
}

/* A user part reached its result. */
static void part_finish(struct part *p, int res)
{
	struct qbd_core *c = p->c;

	if (p->done)
		return;
	p->done = true;
	p->result = res;
	if (p->started) {
		p->started = false;
		c->wr_inflight[p->chunk]--;
	}
	/* Writes still on their way to slow replicas must not keep the
	 * user's buffer: copy it, and tell the shell. */
	if (p->kind == P_WRITE && p->pending && p->buf && !p->owned) {
		p->owned = malloc(p->len);
		if (p->owned) {
			memcpy(p->owned, p->buf, p->len);
			p->buf = p->owned;
			for (unsigned r = 0; r < c->R; r++)
				if (p->subs[r].live)
					c->ops.data_moved(c->user, r, p->subs[r].id,
							  p->owned);
		} else {
			/* No memory: give up on those replicas instead. */
			for (unsigned r = 0; r < c->R; r++)
				if (p->subs[r].live) {
					c->ops.drop(c->user, r, "out of memory");
					qbd_core_replica_down(c, r, c->now);
				}
		}
	}
	if (p->io) {
		struct uio *io = p->io;

		p->io = NULL;
		io_done(c, io, res);
	}
}

/* ---- chunk waits ---- */

static struct cwait **cw_slot(struct qbd_core *c, uint64_t ch)
{
	return &c->ctab[(ch * 0x9E3779B97F4A7C15ull) >> 58 & (CWBUCKETS - 1)];
}

static struct cwait *cw_find(struct qbd_core *c, uint64_t ch)
{
	for (struct cwait *w = *cw_slot(c, ch); w; w = w->next)
		if (w->chunk == ch)
			return w;
	return NULL;
}

static struct cwait *cw_get(struct qbd_core *c, uint64_t ch)
{
	struct cwait *w = cw_find(c, ch), **slot;

	if (w)
		return w;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->chunk = ch;
	slot = cw_slot(c, ch);
	w->next = *slot;
	*slot = w;
	c->ncwait++;
	return w;
}

static void cw_maybe_free(struct qbd_core *c, struct cwait *w)
{
	struct cwait **pp;

	if (w->head || w->resyncing)
		return;
	for (pp = cw_slot(c, w->chunk); *pp != w; pp = &(*pp)->next)
		;
	*pp = w->next;
	c->ncwait--;
	free(w);
}

static void cw_push(struct qbd_core *c, struct cwait *w, struct part *p)
{
	p->wnext = NULL;
	p->qtime = c->now;
	p->refs++;
	if (w->tail)
		w->tail->wnext = p;
	else
		w->head = p;
	w->tail = p;
}

/* ---- writes ---- */

enum { QUEUE = 1 };

static int next_version(const struct qbd_core *c, uint64_t v, uint64_t *out)
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
static unsigned attach_quorum(const struct qbd_core *c)
{
	return c->W > c->R - c->W + 1 ? c->W : c->R - c->W + 1;
}

static bool lease_ok(const struct qbd_core *c)
{
	unsigned n = 0;

#ifdef QBD_CORE_MUTANT_NO_LEASE
	return true;
#endif
	for (unsigned r = 0; r < c->R; r++)
		n += c->up[r] && c->confirmed[r] + c->cfg.lease_ns > c->now;
	return n >= attach_quorum(c);
}

/* Replicas whose answers are enough to know a chunk's latest
 * acknowledged version: every write quorum meets them. */
static unsigned probe_quorum(const struct qbd_core *c)
{
	return c->R - c->W + 1;
}

/* Can a resync (or a probe and a resync) give this chunk the replicas it
 * lacks? */
static bool recoverable(const struct qbd_core *c, uint64_t ch)
{
	uint32_t up = up_set(c);

	if (popc(up) < c->W)
		return false;
	return (current_set(c, ch) & up) || popc(up) >= probe_quorum(c);
}

/* Start a write part: 0 started (or finished), QUEUE, or -errno. */
static int write_try(struct part *p)
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
	targets = up_set(c) & current_set(c, ch);
	if (popc(targets) < c->W)
		return recoverable(c, ch) ? QUEUE : -EIO;
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
		err = next_version(c, c->version[ch], &p->newv);
		if (err)
			return err;
		p->expected = c->version[ch];
		c->version[ch] = p->newv;
		/* Replicas not written now lack the new version. */
		for (unsigned r = 0; r < c->R; r++)
			if (!(targets & (1u << r)))
				stale_set(c, r, ch);
	}
	p->targets = p->pending = targets;
	p->started = true;
	c->wr_inflight[ch]++;
	c->wr_subs[ch] += popc(targets);
	p->refs++;
	for (unsigned r = 0; r < c->R; r++)
		if (targets & (1u << r))
			part_send(p, r, QBD_CM_WRITE, p->off, p->len, p->flags,
				  p->buf);
	part_put(p);
	return 0;
}

static void dirty_add(struct qbd_core *c, uint64_t ch)
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
			core_log(c, L_ERR, "out of memory tracking chunk %llu for flush",
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

/* ---- flush ---- */

static bool flush_ok(const struct part *p)
{
	const struct qbd_core *c = p->c;

	if (popc(p->okset) < (p->all ? c->R : c->W))
		return false;
	for (size_t i = 0; i < p->ndirty; i++) {
		uint64_t ch = p->dirty[i];
		unsigned n = 0;

		for (unsigned r = 0; r < c->R; r++)
			n += (p->okset & (1u << r)) && !bit_get(c->stale[r], ch);
		if (n < c->W)
			return false;
	}
	return true;
}

static void flush_fail(struct part *p, int res)
{
	struct qbd_core *c = p->c;

	/* The chunks stay owed to the next flush. */
	c->dirty_lost |= p->all;
	for (size_t i = 0; i < p->ndirty; i++)
		dirty_add(c, p->dirty[i]);
	part_finish(p, res);
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
static int flush_try(struct part *p)
{
	struct qbd_core *c = p->c;
	uint32_t targets = up_set(c);

	if (c->fenced)
		return -EPERM;
	if (c->fl_active) {
		p->wnext = NULL;
		p->refs++;
		if (c->fl_tail)
			c->fl_tail->wnext = p;
		else
			c->fl_head = p;
		c->fl_tail = p;
		return 0;
	}
	if (popc(targets) < c->W)
		return -EIO;
	if (c->flush_eio) {
		c->flush_eio = false;
		core_log(c, L_ERR, "flush fails: chunks were restored from flagged copies since "
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
			part_send(p, r, QBD_CM_FLUSH, 0, 0, 0, NULL);
	part_put(p);
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
		part_finish(f, p->result);
		part_put(f);
	}
	if (!c->fl_head)
		return;
	f = c->fl_head;
	c->fl_head = c->fl_tail = NULL;
	int err = flush_try(f);
	if (err) {
		/* Not sent: every waiting flush gets the same answer. */
		while (f) {
			struct part *n = f->wnext;

			part_finish(f, err);
			part_put(f);
			f = n;
		}
		return;
	}
	f->followers = f->wnext;
	f->wnext = NULL;
	part_put(f);  /* the wait list's reference; the sends hold others */
}

/* ---- reads ---- */

static int read_pick(const struct qbd_core *c, uint64_t ch, uint32_t tried)
{
	int best = -1;
	uint32_t ok = up_set(c) & current_set(c, ch) & ~tried;

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
	uint32_t cur = current_set(c, ch);

#ifdef QBD_CORE_MUTANT_NO_RECOVERY
	if (cur & up_set(c))
		return 1;
#endif
	if (popc(cur) >= c->W && (cur & up_set(c)))
		return 1;
	return recoverable(c, ch) ? 0 : -EIO;
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

static uint32_t bitmap_bytes(const struct qbd_core *c, uint32_t len)
{
	return (len / c->cfg.block_size + 7) / 8;
}

static void read_next(struct part *p)
{
	struct qbd_core *c = p->c;
	int r;

	if (c->fenced) {
		part_finish(p, -EPERM);
		return;
	}
	r = read_pick(c, p->chunk, p->tried);
	if (r < 0) {
		part_finish(p, p->first_err && p->first_err != -ENOTCONN &&
				       p->first_err != -ESTALE ? p->first_err : -EIO);
		return;
	}
	p->replica = r;
	p->tried |= 1u << r;
	p->gen = c->gen[p->chunk];
	part_send(p, (unsigned)r, QBD_CM_READ, p->off, p->len,
		  p->bitmap ? QBD_CORE_F_BITMAP : 0, NULL);
}

static int read_try(struct part *p)
{
	int ready = read_ready(p->c, p->chunk);

	if (p->c->fenced)
		return -EPERM;
	if (!lease_ok(p->c))
		return QUEUE;
	if (p->bitmap && p->c->version[p->chunk] == 0) {
		/* Never written: all holes, nothing to ask. */
		bits_put(p->buf, p->bitpos, NULL, p->len / p->c->cfg.block_size);
		part_finish(p, 0);
		return 0;
	}
	if (ready <= 0)
		return ready < 0 ? ready : QUEUE;
	p->min_version = p->c->acked[p->chunk];
	read_next(p);
	return 0;
}

static void repair_start(struct part *rd, unsigned r)
{
	struct qbd_core *c = rd->c;
	struct part *p;

#ifdef QBD_CORE_MUTANT_NO_REPAIR
	return;
#endif
	p = part_new(c, NULL, P_REPAIR, rd->chunk);
	if (!p || !(p->owned = malloc(rd->len))) {
		core_log(c, L_WARN, "no memory to repair chunk %llu", (unsigned long long)rd->chunk);
		free(p);
		return;
	}
	memcpy(p->owned, rd->buf, rd->len);
	p->buf = p->owned;
	p->off = rd->off;
	p->len = rd->len;
	p->expected = p->newv = rd->version;
	p->targets = p->pending = 1u << r;
	core_log(c, L_INFO, "repairing chunk %llu on replica %u at version %llu",
	     (unsigned long long)rd->chunk, r, (unsigned long long)rd->version);
	part_send(p, r, QBD_CM_WRITE, p->off, p->len, QBD_CORE_F_REPAIR, p->buf);
	part_put(p);
}

/* Is V[c] on W replicas? Then nothing can take it back any more. A
 * replica that is not stale has V[c] once no write to it is pending. */
static void commit_check(struct qbd_core *c, uint64_t ch)
{
	if (c->acked[ch] < c->version[ch] && !c->wr_subs[ch] &&
	    popc(current_set(c, ch)) >= c->W)
		c->acked[ch] = c->version[ch];
}

static void read_done(struct part *p)
{
	struct qbd_core *c = p->c;

	if (p->bitmap) {
		bits_put(p->buf, p->bitpos, p->owned, p->len / c->cfg.block_size);
		part_finish(p, 0);
		return;
	}
	for (unsigned b = 0; b < c->R; b++)
		if ((p->bad & (1u << b)) && c->up[b])
			repair_start(p, b);
	part_finish(p, 0);
}

static void read_reply(struct part *p, unsigned r, int status, uint64_t version)
{
	struct qbd_core *c = p->c;

	if (p->done)
		return;
	if (status == -EPERM) {
		fence(c);
		part_finish(p, -EPERM);
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
		stale_set(c, r, p->chunk);
		status = -ESTALE;
	}
	if (status == 0) {
		p->version = version;
#ifndef QBD_CORE_MUTANT_NO_RECOVERY
		commit_check(c, p->chunk);
		if (version > c->acked[p->chunk]) {
			/* Data of a write still in flight: it may yet fail and
			 * be lost, so it is not served before it is committed. */
			struct cwait *w = cw_get(c, p->chunk);

			if (w) {
				p->parked = true;
				cw_push(c, w, p);
				return;
			}
		}
#endif
		read_done(p);
		return;
	}
	if (status == -ESTALE)
		stale_set(c, r, p->chunk);
	if (status == -EBADMSG)
		p->bad |= 1u << r;
	if (!p->first_err || p->first_err == -ENOTCONN)
		p->first_err = status;
	read_next(p);
}

/* ---- resync ---- */

static void cw_run(struct qbd_core *c, struct cwait *w);

static void resync_end(struct part *p)
{
	struct qbd_core *c = p->c;
	struct cwait *w = p->cw;

	for (unsigned r = 0; r < c->R; r++)
		if ((p->rs_targets & (1u << r)) && bit_get(c->stale[r], p->chunk))
			c->rs_backoff[r] = c->now + 1000000000ull;
	commit_check(c, p->chunk);
	p->done = true;
	c->rs_active--;
	w->resyncing = false;
	p->cw = NULL;
	cw_run(c, w);
}

static void resync_read(struct part *p)
{
	struct qbd_core *c = p->c;
	int r = read_pick(c, p->chunk, p->tried | p->rs_targets);

	if (r < 0 || c->fenced) {
		resync_end(p);
		return;
	}
	p->replica = r;
	p->tried |= 1u << r;
	part_send(p, (unsigned)r, QBD_CM_READ, 0, c->cfg.chunk_size, 0, NULL);
}

/* Read the source chunk at p->src_version, then write it to the targets at
 * p->newv. The source is any up replica that is current, or for a
 * re-versioned chunk (see probe_done) the one named in p->replica. */
static void resync_begin(struct qbd_core *c, struct part *p)
{
	if (p->replica >= 0) {
		p->tried |= 1u << p->replica;
		part_send(p, (unsigned)p->replica, QBD_CM_READ, 0,
			  c->cfg.chunk_size, 0, NULL);
		return;
	}
	resync_read(p);
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
	uint32_t all = (1u << c->R) - 1, trusted = 0, from = 0;
	int src = -1, rank = -1;
	bool lossy = false;
	struct cwait *w = p->cw;

	p->kind = P_RSREAD; /* so that resync_end accounts it */
	p->rs_targets = 0;
	if (popc(p->pok) < probe_quorum(c) || c->fenced) {
		resync_end(p);
		return;
	}
	for (unsigned r = 0; r < c->R; r++) {
		if (!(p->pok & (1u << r)) || (p->pbad & (1u << r)) ||
		    bit_get(c->flagged[r], ch))
			continue;
		trusted |= 1u << r;
		if (p->pv[r] == c->version[ch])
			stale_clear(c, r, ch);
	}
	if (current_set(c, ch) & up_set(c)) {
		resync_end(p); /* an ordinary resync takes it from here */
		return;
	}
	if (popc(trusted) >= probe_quorum(c)) {
		from = trusted;
	} else if ((p->pok & all) == all) {
		from = p->pok & ~p->pbad;
		lossy = true;
	} else {
		core_log(c, L_WARN, "chunk %llu: every copy heard of version %#llx is flagged; "
			 "waiting for the replicas not heard from",
			 (unsigned long long)ch, (unsigned long long)c->version[ch]);
		resync_end(p);
		return;
	}
	/* The best copy among every answer, including replicas that went
	 * down since they answered: the argument above is about the highest
	 * version of the whole set, and a lower copy of a replica still up
	 * may lack acknowledged writes. */
	for (unsigned r = 0; r < c->R; r++) {
		int rk;

		if (!(from & (1u << r)))
			continue;
		rk = (trusted & (1u << r)) ? 2 : bit_get(c->damaged[r], ch) ? 0 : 1;
		if (rank < 0 || p->pv[r] > maxv || (p->pv[r] == maxv && rk > rank)) {
			maxv = p->pv[r];
			rank = rk;
		}
	}
	/* The source must be such a copy and still be up (else wait for it
	 * and probe again); a writer needs W targets. */
	for (unsigned r = 0; r < c->R && src < 0; r++) {
		int rk;

		if (!(from & (1u << r)) || !c->up[r] || p->pv[r] != maxv)
			continue;
		rk = (trusted & (1u << r)) ? 2 : bit_get(c->damaged[r], ch) ? 0 : 1;
		if (rk == rank)
			src = (int)r;
	}
	if (src < 0 && rank >= 0)
		core_log(c, L_WARN, "chunk %llu: the best copy (%#llx) is on a replica that went "
			 "down; waiting for it", (unsigned long long)ch,
			 (unsigned long long)maxv);
	if (src < 0 || popc(up_set(c)) < c->W ||
	    next_version(c, c->version[ch], &p->newv)) {
		resync_end(p);
		return;
	}
	c->flush_eio |= lossy;
	if (lossy)
		core_log(c, L_ERR, "chunk %llu: every replica answered and %u of %u copies are "
			 "flagged: restoring replica %d's %s copy at %#llx as %#llx "
			 "(writes to it not covered by a flush may be lost)",
			 (unsigned long long)ch, c->R - popc(trusted), c->R, src,
			 rank == 2 ? "unflagged" : rank == 1 ? "suspect" : "damaged",
			 (unsigned long long)maxv, (unsigned long long)p->newv);
	else
		core_log(c, L_WARN, "chunk %llu: version %#llx lost on every reachable replica; "
			 "restoring %#llx from replica %d as %#llx",
			 (unsigned long long)ch, (unsigned long long)c->version[ch],
			 (unsigned long long)maxv, src, (unsigned long long)p->newv);
	c->version[ch] = p->newv;
	c->gen[ch]++;
	for (unsigned r = 0; r < c->R; r++)
		stale_set(c, r, ch);
	p->cw = w;
	p->src_version = maxv;
	p->rs_targets = up_set(c);
	p->tried = 0;
	p->replica = src;
	p->len = c->cfg.chunk_size;
	resync_begin(c, p);
}

/* Bring the targets of resync p (rs_targets, still up) to V[c]: each pulls
 * it from a current replica, or we copy it, or, with no current replica
 * up, probe the up ones (probe_done). */
static void resync_go(struct qbd_core *c, struct part *p)
{
	uint64_t ch = p->chunk;
	uint32_t targets = p->rs_targets & up_set(c);

	p->rs_targets = targets;
	p->okset = 0;
	p->tried = 0;
	p->replica = -1;
	if (!targets) {
		resync_end(p);
		return;
	}
	if (c->cfg.pull && read_pick(c, ch, targets) >= 0) {
		/* Each target copies from a current replica itself. */
		p->kind = P_RSPULL;
		p->replica = read_pick(c, ch, targets);
		p->targets = p->pending = targets;
#ifdef QBD_CORE_MUTANT_NO_RESYNC
		for (unsigned t = 0; t < c->R; t++)
			if (targets & (1u << t))
				stale_clear(c, t, ch);
		p->pending = 0;
		resync_end(p);
		return;
#endif
		for (unsigned r = 0; r < c->R; r++)
			if (targets & (1u << r))
				part_send(p, r, QBD_CM_PULL, 0, c->cfg.chunk_size, 0, NULL);
	} else if (read_pick(c, ch, targets) >= 0) {
		p->kind = P_RSREAD;
		resync_read(p);
	} else {
		/* No replica known to be current is up: ask the up ones. */
		uint32_t len = c->cfg.chunk_size < 4096 ? c->cfg.chunk_size : 4096;

		p->kind = P_PROBE;
		p->len = len;
		p->pok = p->pbad = 0;
		p->targets = p->pending = up_set(c);
		for (unsigned r = 0; r < c->R; r++)
			if (p->targets & (1u << r))
				part_send(p, r, QBD_CM_READ, 0, len, 0, NULL);
	}
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
	int src = read_pick(c, p->chunk, p->rs_targets);
	bool flagged = false;

	for (unsigned r = 0; r < c->R; r++)
		flagged |= (p->rs_targets & (1u << r)) && bit_get(c->flagged[r], p->chunk);
	if (!flagged || src < 0)
		return false;
	p->kind = P_RSBUMP;
	p->len = c->cfg.block_size;
	p->replica = src;
	p->tried = 1u << src;
	part_send(p, (unsigned)src, QBD_CM_READ, 0, p->len, 0, NULL);
	return true;
}

static void bump_read_reply(struct part *p, unsigned r, int status, uint64_t version)
{
	struct qbd_core *c = p->c;
	uint64_t ch = p->chunk;
	uint32_t targets;

	if (status == -EPERM)
		fence(c);
	if (status == 0 && version != c->version[ch]) {
		stale_set(c, r, ch); /* writes are held: a current replica has V[c] */
		status = -ESTALE;
	}
	if (status == -ESTALE)
		stale_set(c, r, ch);
	targets = up_set(c) & current_set(c, ch);
	if (status || c->fenced || !targets ||
	    next_version(c, c->version[ch], &p->newv)) {
		p->kind = P_RSREAD;
		p->len = c->cfg.chunk_size;
		p->newv = p->src_version;
		if (status == 0 && !c->fenced && targets)
			core_log(c, L_WARN, "chunk %llu: no version left to copy flagged copies "
				 "again in this epoch", (unsigned long long)ch);
		resync_end(p);
		return;
	}
	p->kind = P_RSBUMPW;
	p->expected = c->version[ch];
	c->version[ch] = p->newv;
	for (unsigned t = 0; t < c->R; t++)
		if (!(targets & (1u << t)))
			stale_set(c, t, ch);
	p->targets = p->pending = targets;
	p->okset = 0;
	c->wr_subs[ch] += popc(targets);
	for (unsigned t = 0; t < c->R; t++)
		if (targets & (1u << t))
			part_send(p, t, QBD_CM_WRITE, 0, p->len, 0, p->buf);
}

/* Copy chunk ch to the up replicas stale for it. */
static void resync_start(struct qbd_core *c, uint64_t ch)
{
	struct cwait *w;
	struct part *p;
	uint32_t targets = 0;

	for (unsigned r = 0; r < c->R; r++)
		if (c->up[r] && bit_get(c->stale[r], ch))
			targets |= 1u << r;
	if (!targets)
		return;
	if (read_pick(c, ch, targets) < 0 &&
	    popc(up_set(c)) < probe_quorum(c))
		return;
	w = cw_get(c, ch);
	if (!w)
		return;
	if (w->resyncing)
		return;
	p = part_new(c, NULL, P_RSREAD, ch);
	if (p)
		p->owned = malloc(c->cfg.chunk_size);
	if (!p || !p->owned) {
		if (p)
			free(p);
		cw_maybe_free(c, w);
		core_log(c, L_WARN, "no memory to resync chunk %llu", (unsigned long long)ch);
		return;
	}
	w->resyncing = true;
	c->rs_active++;
	p->cw = w;
	p->buf = p->owned;
	p->len = c->cfg.chunk_size;
	p->rs_targets = targets;
	p->src_version = p->newv = c->version[ch];
	if (!resync_bump(c, p))
		resync_go(c, p);
	part_put(p);
}

/* A probe answer. cflags: the chunk's flags the reply carries, or
 * NO_CFLAGS when the shell does not know them; then what the writer
 * learnt from OPEN and PING replies stands, which a write over a bad
 * block (clearing DAMAGED on the replica) may have made out of date. */
static void probe_reply(struct part *p, unsigned r, int status, uint64_t version,
			int64_t cflags)
{
	p->pending &= ~(1u << r);
	if (status == -EPERM)
		fence(p->c);
	if (status == 0 || status == -EBADMSG) {
		p->pok |= 1u << r;
		p->pv[r] = version;
		if (cflags != NO_CFLAGS)
			flag_update(p->c, r, p->chunk, (uint32_t)cflags);
	}
	if (status == -EBADMSG)
		p->pbad |= 1u << r;
	if (!p->pending)
		probe_done(p);
}

static void resync_read_reply(struct part *p, unsigned r, int status,
			      uint64_t version)
{
	struct qbd_core *c = p->c;
	uint64_t ch = p->chunk;
	uint32_t targets = 0;

	if (status == -EPERM)
		fence(c);
	if (status == 0 && version != p->src_version) {
		/* Writes are held, so a current replica has V[c]. */
		if (p->src_version == c->version[ch])
			stale_set(c, r, ch);
		status = -ESTALE;
	}
	if (status == -ESTALE && p->src_version == c->version[ch])
		stale_set(c, r, ch);
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
#ifdef QBD_CORE_MUTANT_NO_RESYNC
	for (unsigned t = 0; t < c->R; t++)
		if (targets & (1u << t))
			stale_clear(c, t, ch);
	resync_end(p);
	return;
#endif
	/* FUA: a copy that a crash could take back in part must not count
	 * as current (a restore after a power loss trusts versions). */
	for (unsigned t = 0; t < c->R; t++)
		if (targets & (1u << t))
			part_send(p, t, QBD_CM_WRITE, 0, c->cfg.chunk_size,
				  QBD_CORE_F_RESYNC | QBD_CORE_F_FUA, p->buf);
}

/* ---- replies ---- */

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
	struct cwait *w = cw_find(c, ch);
	bool back = !p->okset && !p->unsure && p->vsame && c->version[ch] == p->newv &&
		    !c->wr_subs[ch] && c->wr_inflight[ch] == (p->started ? 1u : 0u) &&
		    !(w && w->resyncing) && p->vfail >= c->acked[ch] && p->newv != 0;

	if (back) {
		core_log(c, L_WARN, "chunk %llu: no space on the replicas for version %#llx; "
			 "back to %#llx", (unsigned long long)ch, (unsigned long long)p->newv,
			 (unsigned long long)p->vfail);
		c->version[ch] = p->vfail;
		return;
	}
#ifndef QBD_CORE_MUTANT_NO_STALE
	for (unsigned r = 0; r < c->R; r++)
		if (p->nospc & (1u << r))
			stale_set(c, r, ch);
#endif
}

static void op_reply(struct part *p, unsigned r, int status, uint64_t version)
{
	struct qbd_core *c = p->c;
	uint32_t bit = 1u << r;

	p->pending &= ~bit;
	if (p->kind == P_WRITE && (status == -ENOSPC || status == -ESTALE)) {
		/* A refusal: not applied, and the replica holds version. */
		if (!p->refused) {
			p->vfail = version;
			p->vsame = true;
		} else if (version != p->vfail) {
			p->vsame = false;
		}
		p->refused |= bit;
		if (status == -ENOSPC)
			p->nospc |= bit;
	} else if (p->kind == P_WRITE && status) {
		p->unsure |= bit;
	}
#ifdef QBD_CORE_MUTANT_NO_FENCE
	if (status == -EPERM)
		status = 0;
#endif
	if (status == -EPERM)
		fence(c);
	if (status == 0)
		p->okset |= bit;
#ifndef QBD_CORE_MUTANT_NO_STALE
	else if (p->kind == P_WRITE && status != -ENOSPC)
		stale_set(c, r, p->chunk); /* -ENOSPC: write_nospc_settle */
#endif
	switch (p->kind) {
	case P_WRITE:
		--c->wr_subs[p->chunk];
		if (!p->pending && p->nospc)
			write_nospc_settle(p);
		if (!c->wr_subs[p->chunk]) {
			struct cwait *w = cw_find(c, p->chunk);

			if (p->done && w && w->head && w->head->parked)
				cw_run(c, w);
		}
		if (p->done)
			return;
		if (status == -EPERM) {
			part_finish(p, -EPERM);
		} else if (popc(p->okset) >= c->W) {
			if (c->acked[p->chunk] < p->newv)
				c->acked[p->chunk] = p->newv;
			if (!(p->flags & QBD_CORE_F_FUA) && p->newv)
				dirty_add(c, p->chunk);
			part_finish(p, 0);
		} else if (popc(p->okset) + popc(p->pending) < c->W) {
			/* A replica out of space: the writer hears ENOSPC (once
			 * every answer is in, so that write_nospc_settle can see
			 * whether the write happened anywhere). */
			if (!p->nospc)
				part_finish(p, -EIO);
			else if (!p->pending)
				part_finish(p, -ENOSPC);
		}
		if (p->done) {
			struct cwait *w = cw_find(c, p->chunk);

			if (w && w->head && w->head->parked)
				cw_run(c, w);
		}
		return;
	case P_FLUSH:
		/* The writes it answers for may not be durable on r: r is not
		 * current for them until they are copied to it again. */
		if (status && status != -EPERM)
			for (size_t i = 0; i < p->ndirty; i++)
				stale_set(c, r, p->dirty[i]);
		if (p->done)
			return;
		if (c->fenced) {
			flush_fail(p, -EPERM);
		} else if (flush_ok(p) && c->flush_eio) {
			c->flush_eio = false;
			core_log(c, L_ERR, "flush fails: chunks were restored from flagged copies "
				 "while it ran, and writes it answers for may be lost");
			flush_fail(p, -EIO);
		} else if (flush_ok(p)) {
			part_finish(p, 0);
		} else if (!p->pending) {
			flush_fail(p, -EIO);
		}
		if (p->done)
			flush_end(c, p);
		return;
	case P_RFLUSH:
		if (status && status != -ENOTCONN && status != -EPERM) {
			core_log(c, L_WARN, "replica %u: flush after reconnecting: error %d", r, status);
			c->ops.drop(c->user, r, "flush failed");
			qbd_core_replica_down(c, r, c->now);
		}
		p->done = true;
		return;
	case P_REPAIR:
		if (status)
			core_log(c, L_WARN, "repair of chunk %llu on replica %u: error %d",
			     (unsigned long long)p->chunk, r, status);
		p->done = true;
		return;
	case P_RSPULL:
		if (status == 0 && c->version[p->chunk] == p->newv) {
			resync_landed(c, r, p->chunk);
			c->pulled[r]++;
		} else if (status) {
			core_log(c, L_INFO, "pull of chunk %llu by replica %u from %d: error %d%s",
				 (unsigned long long)p->chunk, r, p->replica, status,
				 status == -EPERM || status == -ENOTCONN ? "" :
				 "; copying through the writer");
			if (status == -ESTALE && p->replica >= 0)
				stale_set(c, (unsigned)p->replica, p->chunk);
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
			p->rs_targets &= up_set(c);
			resync_read(p);
			return;
		}
		resync_end(p);
		return;
	case P_RSBUMPW:
		/* A write of bytes every current replica holds already: one
		 * that fails is stale, one that lands has them at V[c]. */
		if (status)
			stale_set(c, r, p->chunk);
		c->wr_subs[p->chunk]--;
		if (p->pending)
			return;
		if (popc(p->okset) >= c->W && c->acked[p->chunk] < p->newv)
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
		return;
	case P_RSWRITE:
		if (status == 0 && c->version[p->chunk] == p->newv) {
			resync_landed(c, r, p->chunk);
		} else if (status) {
			core_log(c, L_WARN, "resync of chunk %llu to replica %u: error %d",
			     (unsigned long long)p->chunk, r, status);
		}
		if (!p->pending)
			resync_end(p);
		return;
	default:
		return;
	}
}

static void sub_result(struct qbd_core *c, struct sub *s, int status,
		       uint64_t version, int64_t cflags)
{
	struct part *p = s->p;
	unsigned r = s->replica;

	sub_unlink(c, s);
	if (status != -EPERM && status != -ENOTCONN && s->sent > c->confirmed[r])
		c->confirmed[r] = s->sent;
	if (p->kind == P_PING) {
		c->pinging[r] = false;
		if (status == -EPERM)
			fence(c);
		p->done = true;
		part_put(p);
		return;
	}
	if (p->kind == P_READ)
		read_reply(p, r, status, version);
	else if (p->kind == P_PROBE)
		probe_reply(p, r, status, version, cflags);
	else if (p->kind == P_RSREAD)
		resync_read_reply(p, r, status, version);
	else if (p->kind == P_RSBUMP)
		bump_read_reply(p, r, status, version);
	else
		op_reply(p, r, status, version);
	part_put(p);
}

void *qbd_core_reply_buf(struct qbd_core *c, unsigned r, uint64_t id, uint32_t len)
{
	struct sub *s = r < c->R ? sub_find(c, r, id) : NULL;

	if (!s || (s->p->kind != P_READ && s->p->kind != P_RSREAD &&
		   s->p->kind != P_PROBE && s->p->kind != P_RSBUMP))
		return NULL;
	if (s->p->bitmap)
		return bitmap_bytes(c, s->p->len) == len ? s->p->owned : NULL;
	return s->p->len == len ? s->p->buf : NULL;
}

void qbd_core_reply(struct qbd_core *c, unsigned r, uint64_t id, int status,
		    uint64_t version, uint64_t now)
{
	struct sub *s;

	c->now = now;
	if (r >= c->R || !(s = sub_find(c, r, id)))
		return;
	sub_result(c, s, status, version, NO_CFLAGS);
}

void qbd_core_read_reply(struct qbd_core *c, unsigned r, uint64_t id, int status,
			 uint64_t version, uint32_t chunk_flags, uint64_t now)
{
	struct sub *s;

	c->now = now;
	if (r >= c->R || !(s = sub_find(c, r, id)))
		return;
	/* Only a probe acts on them; unknown flags tell nothing. */
	sub_result(c, s, status, version,
		   s->p->kind == P_PROBE && !(chunk_flags & ~QBD_CORE_CHUNK_FLAGS)
			   ? (int64_t)chunk_flags : NO_CFLAGS);
}

/* ---- waiting parts ---- */

static int part_try(struct part *p)
{
	switch (p->kind) {
	case P_READ:
		return read_try(p);
	case P_WRITE:
		return write_try(p);
	case P_FLUSH:
		return flush_try(p);
	default:
		return -EINVAL;
	}
}

/* Start what can start of w's queue, in order. */
static void cw_run(struct qbd_core *c, struct cwait *w)
{
	while (w->head) {
		struct part *p = w->head;
		int err;

		if (p->kind == P_WRITE && w->resyncing)
			break;
		if (p->parked)
			commit_check(c, p->chunk);
		if (p->parked && p->gen == c->gen[p->chunk] &&
		    c->acked[p->chunk] >= p->version) {
			err = 0;
			p->parked = false;
			read_done(p);
		} else if (p->parked && c->wr_inflight[p->chunk]) {
			err = QUEUE;
		} else {
			if (p->parked) {
				/* The write failed: read again. */
				p->parked = false;
				p->tried = p->bad = 0;
				p->first_err = 0;
			}
			err = part_try(p);
		}
		if (err == QUEUE) {
			if (c->now - p->qtime < c->cfg.timeout_ns)
				break;
			core_log(c, L_ERR, "chunk %llu: no recovery within the timeout",
			     (unsigned long long)p->chunk);
			err = -EIO;
		}
		w->head = p->wnext;
		if (!w->head)
			w->tail = NULL;
		if (err)
			part_finish(p, err);
		part_put(p);
	}
	cw_maybe_free(c, w);
}

static void cw_run_all(struct qbd_core *c)
{
	uint64_t *list;
	unsigned n = 0;

	if (!c->ncwait)
		return;
	/* Collect chunks first: cw_run frees entries. */
	list = malloc(c->ncwait * sizeof(*list));
	if (!list)
		return; /* the next tick tries again */
	for (unsigned b = 0; b < CWBUCKETS; b++)
		for (struct cwait *w = c->ctab[b]; w; w = w->next)
			if (w->head)
				list[n++] = w->chunk;
	for (unsigned i = 0; i < n; i++) {
		struct cwait *w = cw_find(c, list[i]);

		if (w)
			cw_run(c, w);
	}
	free(list);
}

/* ---- resync scheduling ---- */

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
			struct cwait *w = cw_find(c, ch);

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

static void resync_schedule(struct qbd_core *c)
{
	unsigned par = c->cfg.resync_parallel;
	uint64_t cs = c->cfg.chunk_size;

	if (!c->opened || c->fenced)
		return;
	/* Chunks that requests wait for first, then attach's recovery list:
	 * neither waits for the rate limit. */
	for (unsigned b = 0; b < CWBUCKETS; b++)
		for (struct cwait *w = c->ctab[b], *nx; w; w = nx) {
			nx = w->next;
			if (w->head && !w->resyncing && c->rs_active < 2 * par)
				resync_start(c, w->chunk);
		}
	while (c->urgent_pos < c->nurgent && c->rs_active < par) {
		uint64_t ch = c->urgent[c->urgent_pos++];

		if (popc(current_set(c, ch)) < c->W)
			resync_start(c, ch);
	}
	if (c->cfg.resync_rate) {
		uint64_t dt = c->now - c->rs_last;
		uint64_t cap = cs * par;

		c->rs_tokens += (uint64_t)((double)c->cfg.resync_rate * (double)dt / 1e9);
		if (c->rs_tokens > cap)
			c->rs_tokens = cap;
		c->rs_last = c->now;
	}
	for (unsigned r = 0; r < c->R && c->rs_active < par; r++) {
		unsigned tries = par;

		if (!c->up[r] || !c->nstale[r] || c->now < c->rs_backoff[r])
			continue;
		while (c->rs_active < par && tries--) {
			uint64_t ch;
			unsigned before = c->rs_active;

			if (c->cfg.resync_rate && c->rs_tokens < cs)
				return;
			if (!next_stale(c, r, &ch))
				break;
			resync_start(c, ch);
			if (c->rs_active > before && c->cfg.resync_rate)
				c->rs_tokens -= cs;
		}
	}
}

/* ---- public ---- */

int qbd_core_new(const struct qbd_core_cfg *cfg, const struct qbd_core_ops *ops,
		 void *user, struct qbd_core **out)
{
	struct qbd_core *c;
	size_t words;

	*out = NULL;
	if (cfg->replicas == 0 || cfg->replicas > MAXR || cfg->write_quorum == 0 ||
	    cfg->write_quorum > cfg->replicas || cfg->nchunks == 0 ||
	    cfg->chunk_size == 0 || cfg->epoch == 0 ||
	    (cfg->block_size && cfg->chunk_size % cfg->block_size) ||
	    (!cfg->block_size && cfg->chunk_size % 4096) ||
	    cfg->epoch > QBD_CORE_MAX_EPOCH || !ops->send || !ops->complete ||
	    !ops->drop || !ops->data_moved)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cfg = *cfg;
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
	c->R = cfg->replicas;
	c->W = cfg->write_quorum;
	c->nchunks = cfg->nchunks;
	words = (cfg->nchunks + 63) / 64;
	c->version = calloc(cfg->nchunks, sizeof(uint64_t));
	c->acked = calloc(cfg->nchunks, sizeof(uint64_t));
	c->wr_inflight = calloc(cfg->nchunks, sizeof(uint32_t));
	c->wr_subs = calloc(cfg->nchunks, sizeof(uint32_t));
	c->gen = calloc(cfg->nchunks, sizeof(uint32_t));
	c->dirty_bm = calloc(words, sizeof(uint64_t));
	if (!c->version || !c->acked || !c->wr_inflight || !c->wr_subs ||
	    !c->gen || !c->dirty_bm)
		goto nomem;
	for (unsigned r = 0; r < c->R; r++)
		if (!(c->stale[r] = calloc(words, sizeof(uint64_t))) ||
		    !(c->flagged[r] = calloc(words, sizeof(uint64_t))) ||
		    !(c->damaged[r] = calloc(words, sizeof(uint64_t))))
			goto nomem;
	*out = c;
	return 0;
nomem:
	qbd_core_free(c);
	return -ENOMEM;
}

void qbd_core_free(struct qbd_core *c)
{
	if (!c)
		return;
	/* Flushes waiting for the one in flight (which has live subs). */
	for (int pass = 0; pass < 2; pass++) {
		struct part *f = pass ? c->fl_head :
				 c->fl_active ? c->fl_active->followers : NULL;

		while (f) {
			struct part *n = f->wnext;

			if (f->io && --f->io->left == 0)
				free(f->io);
			f->io = NULL;
			part_put(f);
			f = n;
		}
	}
	if (c->fl_active)
		c->fl_active->followers = NULL;
	c->fl_head = c->fl_tail = NULL;
	/* Pending parts: unlink their subs, then free each part once. */
	for (unsigned b = 0; b < CWBUCKETS; b++)
		while (c->ctab[b]) {
			struct cwait *w = c->ctab[b];

			while (w->head) {
				struct part *p = w->head;

				w->head = p->wnext;
				if (p->io && --p->io->left == 0)
					free(p->io);
				p->io = NULL;
				part_put(p);
			}
			c->ctab[b] = w->next;
			free(w);
		}
	for (unsigned r = 0; r < c->R; r++)
		while (c->rhead[r]) {
			struct sub *s = c->rhead[r];
			struct part *p = s->p;

			sub_unlink(c, s);
			if (p->io && --p->io->left == 0)
				free(p->io);
			p->io = NULL;
			if (--p->refs == 0) {
				free(p->owned);
				free(p->dirty);
				free(p);
			}
		}
	free(c->version);
	free(c->acked);
	free(c->wr_inflight);
	free(c->wr_subs);
	free(c->gen);
	free(c->dirty_bm);
	free(c->dirty);
	free(c->urgent);
	for (unsigned r = 0; r < MAXR; r++) {
		free(c->stale[r]);
		free(c->flagged[r]);
		free(c->damaged[r]);
	}
	free(c);
}

int qbd_core_replica_open(struct qbd_core *c, unsigned r,
			  const struct qbd_chunk_version *list, size_t n,
			  uint64_t now)
{
	uint64_t words = (c->nchunks + 63) / 64;
	uint64_t *listed;

	c->now = now;
	if (r >= c->R || c->up[r])
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (list[i].chunk >= c->nchunks || (list[i].flags & ~QBD_CORE_CHUNK_FLAGS))
			return -EINVAL;
	listed = calloc(words, sizeof(uint64_t));
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
					stale_set(c, o, ch);
		}
		if (flags) {
			/* Its copy need not match its version: never current
			 * until copied again, though its version counts in the
			 * maximum (a version it may hold must never be reused). */
			flag_set(c, r, ch, flags);
			c->flagged_total[r]++;
		} else if (v == c->version[ch]) {
			stale_clear(c, r, ch);
		} else {
			stale_set(c, r, ch);
		}
	}
	for (uint64_t ch = 0; ch < c->nchunks; ch++)
		if (!bit_get(listed, ch)) {
			if (c->version[ch])
				stale_set(c, r, ch);
			else
				stale_clear(c, r, ch);
		}
	free(listed);
	c->up[r] = true;
	c->confirmed[r] = now;
	c->pinging[r] = false;
	c->rs_backoff[r] = 0;
	if (!c->opened) {
		c->promised |= 1u << r;
	} else {
		/* What it holds at our versions may not be durable (its FLUSH
		 * was lost with the connection, and OPEN syncs nothing when
		 * the promise stands): flush it before any write follows. */
		struct part *fp = part_new(c, NULL, P_RFLUSH, 0);

		if (fp) {
			fp->targets = fp->pending = 1u << r;
			part_send(fp, r, QBD_CM_FLUSH, 0, 0, 0, NULL);
			part_put(fp);
		}
		cw_run_all(c);
	}
	core_log(c, c->nflagged[r] ? L_WARN : L_INFO,
		 "replica %u up: %zu chunks listed, %llu stale, %llu flagged", r, n,
		 (unsigned long long)c->nstale[r], (unsigned long long)c->nflagged[r]);
	return 0;
}

int qbd_core_replica_flagged(struct qbd_core *c, unsigned r,
			     const struct qbd_chunk_version *list, size_t n,
			     uint64_t total, uint64_t now)
{
	c->now = now;
	if (r >= c->R || !c->up[r] || total < n)
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
		core_log(c, L_WARN, "replica %u reports chunk %llu %s at version %#llx: copying it again",
			 r, (unsigned long long)ch,
			 (list[i].flags & QBD_CORE_CHUNK_DAMAGED) ? "damaged" : "suspect",
			 (unsigned long long)list[i].version);
		flag_set(c, r, ch, list[i].flags);
	}
	return 0;
}

int qbd_core_open_done(struct qbd_core *c, uint64_t now)
{
	size_t cap = 0;

	c->now = now;
	c->rs_last = now;
	if ((unsigned)popc(c->promised) < attach_quorum(c))
		return -EIO;
	c->write_hold = now + c->cfg.takeover_wait_ns;
	c->opened = true;
	for (uint64_t ch = 0; ch < c->nchunks; ch++) {
		if (!c->version[ch])
			continue;
		for (unsigned r = 0; r < c->R; r++)
			if (!(c->promised & (1u << r)))
				stale_set(c, r, ch);
		if (popc(current_set(c, ch)) >= c->W) {
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
		core_log(c, L_INFO, "%zu chunks below %u copies: recovering them first",
		     c->nurgent, c->W);
	resync_schedule(c);
	return 0;
}

void qbd_core_replica_down(struct qbd_core *c, unsigned r, uint64_t now)
{
	c->now = now;
	if (r >= c->R)
		return;
	c->up[r] = false;
	while (c->rhead[r])
		sub_result(c, c->rhead[r], -ENOTCONN, 0, NO_CFLAGS);
	cw_run_all(c);
}

void qbd_core_tick(struct qbd_core *c, uint64_t now)
{
	c->now = now;
	for (unsigned r = 0; r < c->R; r++) {
		struct sub *s = c->rhead[r];

		if (c->up[r] && s && now - s->sent > c->cfg.timeout_ns) {
			core_log(c, L_WARN, "replica %u: request timed out", r);
			c->ops.drop(c->user, r, "request timed out");
			qbd_core_replica_down(c, r, now);
		}
	}
	/* Keep the read lease fresh. */
	for (unsigned r = 0; r < c->R && c->opened && !c->fenced; r++) {
		struct part *p;

		if (!c->up[r] || c->pinging[r] ||
		    c->confirmed[r] + c->cfg.lease_ns / 4 > now)
			continue;
		p = part_new(c, NULL, P_PING, 0);
		if (!p)
			break;
		c->pinging[r] = true;
		part_send(p, r, QBD_CM_PING, 0, 0, 0, NULL);
		part_put(p);
	}
	cw_run_all(c);
	resync_schedule(c);
}

/* Queue or start part p; drops the caller's reference. */
static void part_admit(struct qbd_core *c, struct part *p)
{
	struct cwait *w = p->kind == P_FLUSH ? NULL : cw_find(c, p->chunk);
	int err;

	if (w && (w->head || (p->kind == P_WRITE && w->resyncing)))
		err = QUEUE;
	else
		err = part_try(p);
	if (err == QUEUE) {
		w = cw_get(c, p->chunk);
		if (w)
			cw_push(c, w, p);
		else
			part_finish(p, -ENOMEM);
	} else if (err) {
		part_finish(p, err);
	}
	part_put(p);
}

void qbd_core_submit(struct qbd_core *c, enum qbd_core_op op, uint32_t flags,
		     uint64_t offset, uint32_t length, void *buf, void *cookie,
		     uint64_t now)
{
	uint64_t cs = c->cfg.chunk_size, end = offset + length, pos;
	struct uio *io = calloc(1, sizeof(*io));
	enum pkind kind = op == QBD_CORE_READ || op == QBD_CORE_BLOCK_STATUS ? P_READ :
			  op == QBD_CORE_FLUSH ? P_FLUSH : P_WRITE;
	uint32_t bs = c->cfg.block_size;

	c->now = now;
	if (!io) {
		c->ops.complete(c->user, cookie, -ENOMEM);
		return;
	}
	io->cookie = cookie;
	io->left = 1; /* held until every part is admitted */
	c->pending_ios++;
	if (op < QBD_CORE_READ || op > QBD_CORE_BLOCK_STATUS ||
	    (op != QBD_CORE_FLUSH &&
	     (length == 0 || end < offset || end > c->nchunks * cs ||
	      (op != QBD_CORE_ZERO && !buf))) ||
	    (op == QBD_CORE_BLOCK_STATUS && (offset % bs || length % bs))) {
		io_done(c, io, -EINVAL);
		return;
	}
	if (c->fenced) {
		io_done(c, io, -EPERM);
		return;
	}
	if (op == QBD_CORE_FLUSH) {
		struct part *p = part_new(c, io, P_FLUSH, 0);

		if (p) {
			io->left++;
			part_admit(c, p);
		}
		io_done(c, io, p ? 0 : -ENOMEM);
		return;
	}
	for (pos = offset; pos < end;) {
		uint64_t ch = pos / cs;
		uint32_t off = (uint32_t)(pos % cs);
		uint32_t len = (uint32_t)(end - pos < cs - off ? end - pos : cs - off);
		struct part *p = part_new(c, io, kind, ch);

		if (!p) {
			io->err = io->err ? io->err : -ENOMEM;
		} else {
			io->left++;
			p->off = off;
			p->len = len;
			p->flags = (op == QBD_CORE_ZERO ? QBD_CORE_F_ZERO : 0) |
				   (flags & QBD_CORE_F_FUA);
			p->buf = op == QBD_CORE_ZERO ? NULL : (uint8_t *)buf + (pos - offset);
			if (op == QBD_CORE_BLOCK_STATUS) {
				p->flags = 0;
				p->bitmap = true;
				p->buf = buf;
				p->bitpos = (pos - offset) / bs;
				p->owned = calloc(1, bitmap_bytes(c, len));
				if (!p->owned) {
					io->err = io->err ? io->err : -ENOMEM;
					part_finish(p, -ENOMEM);
					part_put(p);
					pos += len;
					continue;
				}
			}
			part_admit(c, p);
		}
		pos += len;
	}
	io_done(c, io, 0);
	if (c->ncwait)
		resync_schedule(c);
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
	out->flagged = c->nflagged[r];
	out->flagged_total = c->flagged_total[r];
	return 0;
}

bool qbd_core_fenced(const struct qbd_core *c) { return c->fenced; }
unsigned qbd_core_up_count(const struct qbd_core *c) { return popc(up_set(c)); }
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
