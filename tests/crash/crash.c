/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Crash-state harness for the engine, in the manner of CrashMonkey and
 * ALICE: run a seeded workload on a small store while recording every
 * write, zeroing and sync the engine issues (qbd_engine_opts.io_hook),
 * then build the disk images a power cut could leave, open the engine on
 * each (its recovery) and check the invariants:
 *
 *   - every block of every chunk reads without error, as the contents of
 *     some request that wrote it and may be there: not older than the
 *     latest one a completed FLUSH (or its own FUA) made durable, not
 *     newer than the last one submitted before the cut;
 *   - the chunk's version is one such request's version: not older than
 *     the last one made durable (the engine writes metadata blocks only
 *     in its group commit, so the version on disk is the durable one,
 *     or a newer one whose metadata write of a round landed), not newer
 *     than the last one submitted; unless the chunk is SUSPECT its whole
 *     contents are exactly those of that version; no chunk is DAMAGED;
 *   - the promise is at least every PROMISE completed before the cut;
 *   - a volume given a tombstone: tombstoned once the TOMBSTONE has
 *     completed, with every chunk gone; not tombstoned before it was
 *     submitted, nor once a re-add (PROMISE with F_READD) has completed;
 *     and while it has no tombstone its chunks pass the checks above
 *     (the tombstone is durable before any chunk is freed);
 *   - after a clean close and another open, flags and versions stay.
 *
 * The crash model (docs/design.md, "Crash model"): 4 KiB blocks are
 * written atomically; a write or zeroing is on disk for sure once a sync
 * issued after its completion has completed (or, for an RWF_DSYNC write,
 * once it has completed); any other write issued before the cut may be
 * there or not, each 4 KiB block of it on its own, and blocks written
 * several times keep the last present write in issue order. A state is a
 * cut (how far the recorded log got) and a choice of the optional writes:
 * a prefix in completion order (in-flight writes lost), all, none, or a
 * random subset.
 *
 *   qbd-crash [--seeds N] [--first S] [--states K] [--seed S [--state I]]
 *             [-v] [--expect-fail] [--keep FILE]
 *
 * A failing state prints its seed and number; `--seed S --state I -v`
 * runs it alone (the workload is replayed; the I/O order of concurrent
 * requests can differ between runs, so --keep FILE also saves the image).
 * --expect-fail inverts the result (for builds with a mechanism disabled
 * on purpose: some state must fail).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/engine.h"

#define BLK 4096u
#define CS (8 * BLK)            /* chunk size: 8 blocks */
#define NB (CS / BLK)
#define STORE (1u << 20)        /* store size: 1 MiB, about 25 slots */
#define NBLK (STORE / BLK)
#define VOL 0x51ull             /* the volume checked */
#define VOLD 0x52ull            /* a volume written, then deleted */
#define VOLT 0x53ull            /* a volume written, flushed, given a tombstone,
				 * perhaps added back */
#define NCH 4                   /* chunks of VOL */
#define NCHD 2                  /* chunks of VOLD */
#define NCHT 2                  /* chunks of VOLT */
#define MAXOPS 160
#define MAXEV 8192
#define QD 6

/* ---- deterministic random numbers ---- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned rng_below(uint64_t *s, unsigned n)
{
	return (unsigned)(rng_next(s) % n);
}

/* ---- the recorded log ---- */

struct ev {
	enum qbd_engine_io_kind kind;
	bool done;
	bool dsync;
	uint64_t id;
	uint64_t off, len;
	uint8_t *data;          /* WRITE issue: a copy */
	uint64_t clock;
	long pair;              /* index of the matching issue / done event */
};

static struct ev evs[MAXEV];
static unsigned nev;
static uint64_t clock_now;
static bool log_overflow;

static void io_hook(void *user, const struct qbd_engine_io *io)
{
	struct ev *v;

	(void)user;
	if (nev == MAXEV) {
		log_overflow = true;
		return;
	}
	v = &evs[nev];
	memset(v, 0, sizeof *v);
	v->kind = io->kind;
	v->done = io->done;
	v->dsync = io->dsync;
	v->id = io->id;
	v->off = io->offset;
	v->len = io->length;
	v->clock = ++clock_now;
	v->pair = -1;
	if (io->done) {
		for (long i = (long)nev - 1; i >= 0; i--)
			if (!evs[i].done && evs[i].id == io->id) {
				v->pair = i;
				evs[i].pair = nev;
				break;
			}
	} else if (io->kind == QBD_ENGINE_IO_WRITE) {
		v->data = malloc(io->length);
		memcpy(v->data, io->buf, io->length);
	}
	nev++;
}

static void log_reset(void)
{
	for (unsigned i = 0; i < nev; i++)
		free(evs[i].data);
	nev = 0;
	clock_now = 0;
	log_overflow = false;
}

/* ---- the workload and its model ---- */

enum opk { OP_WRITE = 1, OP_ZERO, OP_RESYNC, OP_FLUSH, OP_PROMISE, OP_DELETE, OP_TOMBSTONE,
	   OP_READD };

struct op {
	enum opk kind;
	uint64_t volume, chunk;
	uint32_t off, len, flags;
	uint64_t newv, epoch;
	uint8_t *buf;
	uint64_t submit_clock, done_clock;
	bool done;
	int res, want;
	uint64_t after[NB];     /* block hashes of the chunk after this op */
	struct qbd_engine_req req;
};

static struct op ops[MAXOPS];
static unsigned nops;
static uint8_t model[NCH + NCHD + NCHT][CS];
static uint64_t model_ver[NCH + NCHD + NCHT];
static uint64_t zero_hash;
static struct qbd_engine *eng;
static unsigned inflight;
static bool verbose;
static char fail_msg[512];

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;

	if (fail_msg[0])
		return;
	va_start(ap, fmt);
	vsnprintf(fail_msg, sizeof fail_msg, fmt, ap);
	va_end(ap);
}

static const char *op_name(enum opk k)
{
	static const char *n[] = { "?", "WRITE", "ZERO", "RESYNC", "FLUSH", "PROMISE",
				   "DELETE", "TOMBSTONE", "READD" };
	return n[k];
}

static void op_cb(struct qbd_engine_req *r)
{
	struct op *o = r->user;

	o->done = true;
	o->res = r->res;
	o->done_clock = ++clock_now;
	inflight--;
}

static void pump(bool wait)
{
	struct pollfd p = { .fd = qbd_engine_event_fd(eng), .events = POLLIN };

	if (wait)
		poll(&p, 1, 1000);
	qbd_engine_poll(eng);
}

static void drain(void)
{
	while (inflight)
		pump(true);
}

static unsigned mslot(uint64_t volume, uint64_t chunk)
{
	return volume == VOL ? (unsigned)chunk
	       : volume == VOLD ? NCH + (unsigned)chunk : NCH + NCHD + (unsigned)chunk;
}

/* Data of a write: distinct per request and position. */
static void fill(uint8_t *b, uint32_t len, unsigned opn)
{
	for (uint32_t i = 0; i < len; i += 8) {
		uint64_t v = XXH3_64bits_withSeed(&i, sizeof i, opn + 1);
		memcpy(b + i, &v, QBD_MIN(8u, len - i));
	}
}

static void submit(struct op *o)
{
	struct qbd_engine_req *r = &o->req;

	memset(r, 0, sizeof *r);
	r->volume = o->volume;
	r->chunk = o->chunk;
	r->offset = o->off;
	r->length = o->len;
	r->buf = o->buf;
	r->flags = o->flags;
	r->epoch = o->epoch;
	r->cb = op_cb;
	r->user = o;
	switch (o->kind) {
	case OP_WRITE:
	case OP_RESYNC:
		r->op = QBD_ENGINE_WRITE;
		break;
	case OP_ZERO:
		r->op = QBD_ENGINE_ZERO;
		break;
	case OP_FLUSH:
		r->op = QBD_ENGINE_FLUSH;
		break;
	case OP_PROMISE:
	case OP_READD:          /* flags: QBD_ENGINE_F_READD */
		r->op = QBD_ENGINE_PROMISE;
		break;
	case OP_DELETE:
		r->op = QBD_ENGINE_DELETE_VOLUME;
		break;
	case OP_TOMBSTONE:
		r->op = QBD_ENGINE_TOMBSTONE;
		break;
	}
	if (o->kind == OP_WRITE || o->kind == OP_ZERO || o->kind == OP_RESYNC) {
		unsigned m = mslot(o->volume, o->chunk);

		r->expected_version = model_ver[m];
		r->new_version = o->newv;
		model_ver[m] = o->newv;
		if (o->kind == OP_ZERO)
			memset(model[m] + o->off, 0, o->len);
		else
			memcpy(model[m] + o->off, o->buf, o->len);
		for (unsigned b = 0; b < NB; b++)
			o->after[b] = XXH3_64bits(model[m] + b * BLK, BLK);
	}
	o->want = (o->kind == OP_WRITE || o->kind == OP_ZERO || o->kind == OP_RESYNC)
		  ? (int)o->len : 0;
	o->submit_clock = ++clock_now;
	inflight++;
	qbd_engine_submit(eng, r);
}

/* Generate and run the workload of a seed. */
static void workload(uint64_t seed)
{
	uint64_t rs = seed * 7919 + 1, epoch = 0, tepoch = 0;
	bool deleted = false;
	unsigned n = 40 + rng_below(&rs, 40);
	/* VOLT: written first, then at tomb_at a FLUSH, a PROMISE, its
	 * TOMBSTONE, and in half the seeds a re-add some ops later */
	unsigned tomb_at = 12 + rng_below(&rs, 20);
	unsigned readd_at = rng_below(&rs, 2) ? tomb_at + 3 + rng_below(&rs, 8) : ~0u;

	memset(model, 0, sizeof model);
	memset(model_ver, 0, sizeof model_ver);
	nops = 0;
	/* The deleted volume's chunks first, so that they take the low
	 * slots and later first writes of VOL reuse them. */
	for (unsigned i = 0; i < n && nops < MAXOPS - 1; i++) {
		struct op *o = &ops[nops];
		unsigned k = rng_below(&rs, 100);
		unsigned m;

		memset(o, 0, sizeof *o);
		if (i < NCHD) {
			o->kind = OP_WRITE;
			o->volume = VOLD;
			o->chunk = i;
		} else if (i < NCHD + NCHT) {
			o->kind = OP_WRITE;
			o->volume = VOLT;
			o->chunk = i - NCHD;
		} else if (i == tomb_at) {
			o->kind = OP_FLUSH;     /* VOLT's writes durable */
		} else if (i == tomb_at + 1) {
			o->kind = OP_PROMISE;
			o->volume = VOLT;
			o->epoch = tepoch = 1 + rng_below(&rs, 3);
		} else if (i == tomb_at + 2) {
			o->kind = OP_TOMBSTONE;
			o->volume = VOLT;
			o->epoch = tepoch += rng_below(&rs, 2);
		} else if (i == readd_at) {
			o->kind = OP_READD;
			o->volume = VOLT;
			o->flags = QBD_ENGINE_F_READD;
			o->epoch = tepoch + 1 + rng_below(&rs, 2);
		} else if (k < 8) {
			o->kind = OP_FLUSH;
		} else if (k < 12) {
			o->kind = OP_PROMISE;
			epoch += 1 + rng_below(&rs, 3);
			o->volume = VOL;
			o->epoch = epoch;
		} else if (k < 15 && !deleted && i > 10) {
			o->kind = OP_DELETE;
			o->volume = VOLD;
			deleted = true;
		} else {
			o->kind = k < 62 ? OP_WRITE : k < 80 ? OP_ZERO : OP_RESYNC;
			/* chunks 2 and 3 of VOL are first written later */
			o->chunk = rng_below(&rs, i < 12 ? 2 : NCH);
			o->volume = VOL;
			if (!deleted && rng_below(&rs, 6) == 0) {
				o->volume = VOLD;
				o->chunk = rng_below(&rs, NCHD);
			}
		}
		m = o->volume ? mslot(o->volume, o->chunk) : 0;
		switch (o->kind) {
		case OP_WRITE:
		case OP_ZERO: {
			unsigned shape = rng_below(&rs, 4);
			if (shape < 2) { /* whole blocks */
				unsigned b0 = rng_below(&rs, NB), nb = 1 + rng_below(&rs, 3);
				if (b0 + nb > NB)
					nb = NB - b0;
				o->off = b0 * BLK;
				o->len = nb * BLK;
			} else { /* partial, maybe across a boundary */
				o->off = rng_below(&rs, CS - 1);
				o->len = 1 + rng_below(&rs, QBD_MIN(CS - o->off, 3 * BLK));
			}
			if (o->kind == OP_ZERO && rng_below(&rs, 4) == 0) {
				o->off = 0;
				o->len = CS;
			}
			break;
		}
		case OP_RESYNC:
			o->off = 0;
			o->len = CS;
			o->flags = QBD_ENGINE_F_RESYNC;
			break;
		default:
			break;
		}
		if (o->kind == OP_WRITE || o->kind == OP_ZERO || o->kind == OP_RESYNC) {
			if (rng_below(&rs, 6) == 0)
				o->flags |= QBD_ENGINE_F_FUA;
			o->newv = model_ver[m] + 1 + rng_below(&rs, 2);
		}
		if (o->kind == OP_WRITE || o->kind == OP_RESYNC) {
			o->buf = aligned_alloc(BLK, CS);
			fill(o->buf, o->len, nops);
			if (o->kind == OP_RESYNC)
				for (unsigned b = 0; b < NB; b++)
					if (rng_below(&rs, 3) == 0)
						memset(o->buf + b * BLK, 0, BLK);
			if (o->kind == OP_WRITE && rng_below(&rs, 3) == 0) {
				/* an unaligned buffer (the engine's copy path) */
				memmove(o->buf + 1, o->buf, o->len);
				o->buf += 1;
			}
		}
		nops++;
		/* DELETE and TOMBSTONE need their volume idle; keep QD
		 * requests in flight */
		if (o->kind == OP_DELETE || o->kind == OP_TOMBSTONE)
			drain();
		while (inflight >= QD)
			pump(true);
		submit(o);
		if (o->kind == OP_DELETE || o->kind == OP_TOMBSTONE || rng_below(&rs, 3) == 0)
			pump(false);
	}
	drain();
	for (unsigned i = 0; i < nops; i++)
		if (ops[i].res != ops[i].want)
			fail("workload op %u (%s) returned %d, expected %d", i,
			     op_name(ops[i].kind), ops[i].res, ops[i].want);
}

static void free_ops(void)
{
	for (unsigned i = 0; i < nops; i++)
		if (ops[i].buf)
			free((void *)((uintptr_t)ops[i].buf & ~(uintptr_t)(BLK - 1)));
	nops = 0;
}

/* ---- crash states ---- */

static uint8_t image[STORE];
static const uint8_t *src[NBLK];

/* Durable for sure at the cut: a sync issued after its completion has
 * completed before the cut, or an RWF_DSYNC write completed. */
static bool ev_must(unsigned i, unsigned cut)
{
	long d = evs[i].pair;

	if (d < 0 || (unsigned)d >= cut)
		return false;
	if (evs[i].dsync)
		return true;
	for (unsigned s = (unsigned)d + 1; s < cut; s++)
		if (evs[s].kind == QBD_ENGINE_IO_SYNC && evs[s].done && evs[s].pair > d)
			return true;
	return false;
}

enum mode { M_PREFIX, M_ALL, M_NONE, M_RANDOM, M_MODES };

/* Build the image of a state in image[]: apply every write and zeroing
 * issued before the cut that is durable, or chosen. */
static void build_state(unsigned cut, enum mode mode, uint64_t *rs)
{
	unsigned order[MAXEV], nopt = 0, keep = 0;
	static bool chosen[MAXEV];

	/* the optional ones, in completion order (in flight last) */
	for (unsigned i = 0; i < cut; i++) {
		chosen[i] = false;
		if (evs[i].done || evs[i].kind == QBD_ENGINE_IO_SYNC)
			continue;
		if (ev_must(i, cut)) {
			chosen[i] = true;
			continue;
		}
		order[nopt++] = i;
	}
	for (unsigned a = 1; a < nopt; a++) { /* insertion sort by completion */
		unsigned x = order[a], b = a;
		long kx = evs[x].pair >= 0 && (unsigned)evs[x].pair < cut ? evs[x].pair : MAXEV;
		while (b > 0) {
			unsigned y = order[b - 1];
			long ky = evs[y].pair >= 0 && (unsigned)evs[y].pair < cut ? evs[y].pair : MAXEV;
			if (ky <= kx)
				break;
			order[b] = y;
			b--;
		}
		order[b] = x;
	}
	switch (mode) {
	case M_PREFIX: {
		unsigned completed = 0;
		for (unsigned a = 0; a < nopt; a++)
			completed += evs[order[a]].pair >= 0 && (unsigned)evs[order[a]].pair < cut;
		keep = rng_below(rs, completed + 1);
		for (unsigned a = 0; a < keep; a++)
			chosen[order[a]] = true;
		break;
	}
	case M_ALL:
		for (unsigned a = 0; a < nopt; a++)
			chosen[order[a]] = true;
		break;
	case M_NONE:
		break;
	default:
		break;
	}
	memset(src, 0, sizeof src);
	for (unsigned i = 0; i < cut; i++) {
		const struct ev *v = &evs[i];

		if (v->done || v->kind == QBD_ENGINE_IO_SYNC)
			continue;
		for (uint64_t o = 0; o < v->len; o += BLK) {
			uint64_t blk = (v->off + o) / BLK;
			bool present = chosen[i];

			if (mode == M_RANDOM && !ev_must(i, cut))
				present = rng_below(rs, 2);
			if (!present || blk >= NBLK)
				continue;
			src[blk] = v->kind == QBD_ENGINE_IO_WRITE ? v->data + o : NULL;
		}
	}
	for (unsigned b = 0; b < NBLK; b++) {
		if (src[b])
			memcpy(image + (size_t)b * BLK, src[b], BLK);
		else
			memset(image + (size_t)b * BLK, 0, BLK);
	}
}

/* ---- checks on a recovered engine ---- */

static bool op_durable(const struct op *o, uint64_t cut_clock)
{
	if (!o->done || o->done_clock >= cut_clock || o->res < 0)
		return false;
	if (o->flags & QBD_ENGINE_F_FUA)
		return true;
	for (unsigned f = 0; f < nops; f++)
		if (ops[f].kind == OP_FLUSH && ops[f].submit_clock > o->done_clock &&
		    ops[f].done && ops[f].done_clock < cut_clock)
			return true;
	return false;
}

static bool touches(const struct op *o, unsigned b)
{
	return o->off < (b + 1) * BLK && o->off + o->len > b * BLK;
}

static bool is_chunk_op(const struct op *o, uint64_t volume, uint64_t chunk)
{
	return (o->kind == OP_WRITE || o->kind == OP_ZERO || o->kind == OP_RESYNC) &&
	       o->volume == volume && o->chunk == chunk;
}

struct seen {
	uint64_t version[NCH];
	uint32_t flags[NCH];
	bool tomb;              /* VOLT's tombstone */
	uint64_t tomb_epoch, tomb_promised;
};

static int seen_cb(void *user, uint64_t chunk, uint64_t version, uint32_t flags)
{
	struct seen *s = user;

	if (chunk < NCH) {
		s->version[chunk] = version;
		s->flags[chunk] = flags;
	}
	return 0;
}

static int read_chunk(uint64_t volume, uint64_t chunk, uint8_t *buf, uint64_t *ver)
{
	struct qbd_engine_req r = { .op = QBD_ENGINE_READ, .volume = volume, .chunk = chunk,
				    .offset = 0, .length = CS, .buf = buf };
	bool done = false;

	r.cb = op_cb;
	r.user = &(struct op){ 0 };
	inflight++;
	qbd_engine_submit(eng, &r);
	while (!done) {
		pump(true);
		done = ((struct op *)r.user)->done;
	}
	*ver = r.version;
	return r.res;
}

/* Whether buf (a chunk read) is all zeros. */
static bool chunk_zero(const uint8_t *buf)
{
	for (unsigned b = 0; b < NB; b++)
		if (XXH3_64bits(buf + b * BLK, BLK) != zero_hash)
			return false;
	return true;
}

/*
 * One chunk of a volume against the workload: its version and each
 * block's contents those of a request that may be there, exactly its
 * version's contents unless SUSPECT (flags: what the engine lists).
 * gone: the chunk may also have been freed (version 0, all zeros);
 * must_be_gone: it must have been.
 */
static void check_chunk(uint64_t volume, uint64_t ch, uint64_t cut_clock, uint32_t flags,
			bool gone, bool must_be_gone)
{
	static uint8_t *buf;
	uint64_t ver = 0, hv;
	long vop = -1, dur = -1;
	bool ok_ver = false;
	int r;

	if (!buf)
		buf = aligned_alloc(BLK, CS);
	r = read_chunk(volume, ch, buf, &ver);
	if (r != (int)CS) {
		fail("volume %llx chunk %" PRIu64 ": read failed: %s",
		     (unsigned long long)volume, ch, strerror(-r));
		return;
	}
	if ((gone || must_be_gone) && ver == 0 && chunk_zero(buf))
		return;
	if (must_be_gone) {
		fail("volume %llx chunk %" PRIu64 ": version %" PRIu64 " after its TOMBSTONE "
		     "completed", (unsigned long long)volume, ch, ver);
		return;
	}
	if (flags & QBD_ENGINE_CHUNK_DAMAGED)
		fail("volume %llx chunk %" PRIu64 ": DAMAGED after recovery",
		     (unsigned long long)volume, ch);
	/* versions: the op with this version, at or after the last
	 * durable op of the chunk, submitted before the cut */
	for (unsigned i = 0; i < nops; i++) {
		if (!is_chunk_op(&ops[i], volume, ch))
			continue;
		if (op_durable(&ops[i], cut_clock))
			dur = i;
	}
	if (ver == 0 && dur < 0)
		ok_ver = true;
	for (unsigned i = 0; i < nops; i++)
		if (is_chunk_op(&ops[i], volume, ch) && ops[i].newv == ver) {
			vop = i;
			ok_ver = (long)i >= dur && ops[i].submit_clock < cut_clock;
		}
	if (!ok_ver)
		fail("volume %llx chunk %" PRIu64 ": version %" PRIu64 " (last durable op %ld)",
		     (unsigned long long)volume, ch, ver, dur);
	/* each block: the contents after some op that wrote it, not
	 * older than the last durable one, submitted before the cut */
	for (unsigned b = 0; b < NB && !fail_msg[0]; b++) {
		long bdur = -1;
		bool ok = false;

		hv = XXH3_64bits(buf + b * BLK, BLK);
		for (unsigned i = 0; i < nops; i++)
			if (is_chunk_op(&ops[i], volume, ch) && touches(&ops[i], b) &&
			    op_durable(&ops[i], cut_clock))
				bdur = i;
		if (bdur < 0 && hv == zero_hash)
			ok = true;
		for (long i = bdur < 0 ? 0 : bdur; i < (long)nops && !ok; i++)
			if (is_chunk_op(&ops[i], volume, ch) && touches(&ops[i], b) &&
			    ops[i].submit_clock < cut_clock && ops[i].after[b] == hv)
				ok = true;
		if (!ok)
			fail("volume %llx chunk %" PRIu64 " block %u: contents of no request "
			     "that may be there (last durable op %ld)",
			     (unsigned long long)volume, ch, b, bdur);
	}
	/* not SUSPECT: the contents are exactly those of its version */
	if (!fail_msg[0] && !(flags & QBD_ENGINE_CHUNK_SUSPECT))
		for (unsigned b = 0; b < NB; b++) {
			uint64_t want = vop >= 0 ? ops[vop].after[b] : zero_hash;
			if (XXH3_64bits(buf + b * BLK, BLK) != want) {
				fail("volume %llx chunk %" PRIu64 " at version %" PRIu64 ", not "
				     "SUSPECT, but block %u differs from that version",
				     (unsigned long long)volume, ch, ver, b);
				break;
			}
		}
}

/* The last op of kind k on volume submitted before the cut (-1: none);
 * *done: it completed (successfully) before the cut. */
static long op_before(enum opk k, uint64_t volume, uint64_t cut_clock, bool *done)
{
	long found = -1;

	*done = false;
	for (unsigned i = 0; i < nops; i++)
		if (ops[i].kind == k && ops[i].volume == volume &&
		    ops[i].submit_clock < cut_clock)
			found = i;
	if (found >= 0)
		*done = ops[found].done && ops[found].done_clock < cut_clock &&
			ops[found].res == 0;
	return found;
}

/*
 * VOLT, the volume given a tombstone: tombstoned exactly when the
 * workload says it must be (the TOMBSTONE completed and no re-add did;
 * not before the TOMBSTONE was submitted), at the TOMBSTONE's epoch; a
 * completed re-add leaves its promise. With no tombstone, the promise
 * is the re-add's, or (only while the TOMBSTONE has not completed: its
 * tombstone may never have reached the disk) the one VOLT had before:
 * its PROMISE's epoch, or 0 if that PROMISE had not completed. A
 * submitted re-add proves nothing by itself: the engine runs the
 * TOMBSTONE and the re-add in turn, and may not have started either
 * at the cut (the TOMBSTONE waits for a round of the group commit, and
 * the workload goes on submitting meanwhile). Its chunks: gone once the
 * TOMBSTONE completed; with the tombstone or the re-add's promise
 * there, perhaps gone; with neither, every chunk as the workload left
 * it (a chunk freed before its tombstone was durable fails here).
 */
static void check_tombstone(uint64_t cut_clock, struct seen *s)
{
	struct seen c = { 0 };
	bool t_done, a_done, p_done, readded, before;
	long t = op_before(OP_TOMBSTONE, VOLT, cut_clock, &t_done);
	long a = op_before(OP_READD, VOLT, cut_clock, &a_done);
	long p = op_before(OP_PROMISE, VOLT, cut_clock, &p_done);

	s->tomb = qbd_engine_tombstoned(eng, VOLT, &s->tomb_epoch);
	s->tomb_promised = qbd_engine_promised(eng, VOLT);
	/* no tombstone, and the promise the re-add's / the one before */
	readded = !s->tomb && a >= 0 && s->tomb_promised == ops[a].epoch;
	before = !s->tomb && ((p >= 0 && s->tomb_promised == ops[p].epoch) ||
			      (!p_done && s->tomb_promised == 0));
	if (a_done && (s->tomb || s->tomb_promised != ops[a].epoch))
		fail("re-add at epoch %" PRIu64 " completed, but %s (promised %" PRIu64 ")",
		     ops[a].epoch, s->tomb ? "the tombstone is there" : "no tombstone",
		     s->tomb_promised);
	else if (a < 0 && t_done && !s->tomb)
		fail("TOMBSTONE (op %ld) completed, but the volume has no tombstone", t);
	else if (t < 0 && s->tomb)
		fail("a tombstone before any TOMBSTONE was submitted");
	else if (s->tomb && s->tomb_epoch != ops[t].epoch)
		fail("tombstone at epoch %" PRIu64 ", made at %" PRIu64, s->tomb_epoch,
		     ops[t].epoch);
	else if (!s->tomb && !readded && (t_done || !before))
		fail("neither the tombstone nor %s promise (promised %" PRIu64 ", TOMBSTONE "
		     "%s)", t_done ? "the re-add's" : "the re-add's or the previous",
		     s->tomb_promised, t_done ? "completed" : t >= 0 ? "submitted" : "not submitted");
	qbd_engine_for_each_chunk(eng, VOLT, seen_cb, &c);
	for (uint64_t ch = 0; ch < NCHT && !fail_msg[0]; ch++)
		check_chunk(VOLT, ch, cut_clock, c.flags[ch], s->tomb || readded, t_done);
}

/* Check the engine opened on a crash image against the workload. */
static void check_state(uint64_t cut_clock, struct seen *out)
{
	static uint8_t *buf;
	struct seen s = { 0 };
	uint64_t pmin = 0, pmax = 0, promised = qbd_engine_promised(eng, VOL);

	if (!buf)
		buf = aligned_alloc(BLK, CS);
	for (unsigned i = 0; i < nops; i++) {
		if (ops[i].kind != OP_PROMISE || ops[i].volume != VOL)
			continue;
		if (ops[i].submit_clock < cut_clock)
			pmax = QBD_MAX(pmax, ops[i].epoch);
		if (ops[i].done && ops[i].done_clock < cut_clock)
			pmin = QBD_MAX(pmin, ops[i].epoch);
	}
	if (promised < pmin || promised > pmax)
		fail("promise %" PRIu64 ", must be in [%" PRIu64 ", %" PRIu64 "]",
		     promised, pmin, pmax);
	qbd_engine_for_each_chunk(eng, VOL, seen_cb, &s);
	for (uint64_t ch = 0; ch < NCH && !fail_msg[0]; ch++)
		check_chunk(VOL, ch, cut_clock, s.flags[ch], false, false);
	/* the deleted volume: whatever is left reads without error */
	for (uint64_t ch = 0; ch < NCHD && !fail_msg[0]; ch++) {
		uint64_t ver;
		int r = read_chunk(VOLD, ch, buf, &ver);
		if (r != (int)CS)
			fail("volume %llx chunk %" PRIu64 ": read failed: %s",
			     (unsigned long long)VOLD, ch, strerror(-r));
	}
	if (!fail_msg[0])
		check_tombstone(cut_clock, &s);
	if (out)
		*out = s;
}

/* ---- driver ---- */

static char store_path[256];

static int open_store(bool hooked, bool create)
{
	struct qbd_engine_opts o = { .path = store_path, .chunk_size = CS,
				     .queue_depth = 64, .al_chunks = 2 };

	if (create)
		o.create_size = STORE;
	if (hooked) {
		o.io_hook = io_hook;
	}
	return qbd_engine_open(&o, &eng);
}

static int write_image(void)
{
	int fd = open(store_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int r = 0;

	if (fd == -1)
		return -errno;
	if (pwrite(fd, image, STORE, 0) != (ssize_t)STORE)
		r = -EIO;
	close(fd);
	return r;
}

static uint64_t states_checked;

/*
 * The cut of state st: anywhere in the log from start on; but every
 * eighth state within the I/O of the TOMBSTONE or the re-add (in turn),
 * whose few events a uniform cut rarely lands among, and where the
 * order of the tombstone and the freeing of its chunks matters.
 */
static unsigned pick_cut(unsigned st, unsigned start, uint64_t *rs)
{
	unsigned cut = start + 1 + rng_below(rs, nev - start), lo = nev, hi = 0;
	enum opk k = st % 16 == 7 ? OP_TOMBSTONE : OP_READD;
	const struct op *o = NULL;

	if (st % 8 != 7)
		return cut;
	for (unsigned i = 0; i < nops; i++)
		if (ops[i].kind == k)
			o = &ops[i];
	if (!o)
		return cut;
	for (unsigned i = start; i < nev; i++)
		if (evs[i].clock > o->submit_clock && evs[i].clock < o->done_clock) {
			lo = QBD_MIN(lo, i);
			hi = i;
		}
	return lo <= hi ? lo + 1 + rng_below(rs, hi - lo + 1) : cut;
}

/* Run one seed: the workload, then states [first_state, first_state + n)
 * (or only `only` if >= 0). Returns false on a failure. */
static bool run_seed(uint64_t seed, unsigned nstates, long only, const char *keep)
{
	unsigned start;
	bool ok = true;

	fail_msg[0] = 0;
	log_reset();
	unlink(store_path);
	if (open_store(true, true) < 0) {
		fail("seed %" PRIu64 ": cannot create the store", seed);
		printf("%s\n", fail_msg);
		return false;
	}
	start = nev;
	workload(seed);
	qbd_engine_close(eng);  /* hooked: its I/O ends the log */
	eng = NULL;
	if (log_overflow)
		fail("event log overflow");
	if (fail_msg[0]) {
		printf("seed %" PRIu64 ": FAIL %s\n", seed, fail_msg);
		free_ops();
		return false;
	}
	if (verbose) {
		printf("seed %" PRIu64 ": %u ops, %u events\n", seed, nops, nev);
		for (unsigned i = 0; i < nops; i++)
			printf("  op %u %s vol %llx chunk %llu off %u len %u flags %#x v%llu "
			       "e%llu submit %llu done %llu\n", i, op_name(ops[i].kind),
			       (unsigned long long)ops[i].volume,
			       (unsigned long long)ops[i].chunk, ops[i].off, ops[i].len,
			       ops[i].flags, (unsigned long long)ops[i].newv,
			       (unsigned long long)ops[i].epoch,
			       (unsigned long long)ops[i].submit_clock,
			       (unsigned long long)ops[i].done_clock);
	}
	for (unsigned st = 0; st < nstates && ok; st++) {
		uint64_t rs = seed * 1000003 + st, cut_clock;
		unsigned cut;
		enum mode mode = (enum mode)(st % M_MODES);
		struct seen s1, s2;

		if (only >= 0 && st != (unsigned)only)
			continue;
		cut = pick_cut(st, start, &rs);
		cut_clock = cut < nev ? evs[cut].clock : UINT64_MAX;
		build_state(cut, mode, &rs);
		fail_msg[0] = 0;
		if (write_image() < 0 || open_store(false, false) < 0) {
			fail("the engine does not open the crash image");
		} else {
			check_state(cut_clock, &s1);
			/* flags and versions survive a clean close */
			if (!fail_msg[0] && st % 4 == 0) {
				qbd_engine_close(eng);
				eng = NULL;
				if (open_store(false, false) < 0) {
					fail("the engine does not reopen after recovery");
				} else {
					check_state(cut_clock, &s2);
					if (!fail_msg[0] && memcmp(&s1, &s2, sizeof s1))
						fail("flags or versions changed across a clean "
						     "close after recovery");
				}
			}
			qbd_engine_close(eng);
			eng = NULL;
		}
		states_checked++;
		if (verbose)
			printf("  state %u: cut %u of %u, mode %d%s%s\n", st, cut, nev, (int)mode,
			       fail_msg[0] ? ": " : "", fail_msg);
		if (fail_msg[0]) {
			printf("seed %" PRIu64 " state %u (cut %u of %u events, mode %d): FAIL %s\n",
			       seed, st, cut, nev, (int)mode, fail_msg);
			if (keep) { /* the same state again: the same draws */
				uint64_t rs2 = seed * 1000003 + st;
				int fd;

				pick_cut(st, start, &rs2);
				build_state(cut, mode, &rs2);
				fd = open(keep, O_WRONLY | O_CREAT | O_TRUNC, 0600);
				if (fd != -1) {
					if (pwrite(fd, image, STORE, 0) != (ssize_t)STORE)
						perror(keep);
					close(fd);
				}
			}
			ok = false;
		}
	}
	free_ops();
	return ok;
}

int main(int argc, char **argv)
{
	uint64_t first = 1, nseeds = 40, failed = 0;
	unsigned nstates = 100;
	long only_state = -1;
	bool expect_fail = false;
	const char *keep = NULL, *dir = getenv("QBD_CRASH_DIR");
	struct stat st;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
			nseeds = strtoull(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--first") && i + 1 < argc) {
			first = strtoull(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			first = strtoull(argv[++i], NULL, 0);
			nseeds = 1;
		} else if (!strcmp(argv[i], "--states") && i + 1 < argc) {
			nstates = (unsigned)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--state") && i + 1 < argc) {
			only_state = strtol(argv[++i], NULL, 0);
			if ((unsigned long)only_state >= nstates)
				nstates = (unsigned)only_state + 1;
		} else if (!strcmp(argv[i], "--keep") && i + 1 < argc) {
			keep = argv[++i];
		} else if (!strcmp(argv[i], "-v")) {
			verbose = true;
		} else if (!strcmp(argv[i], "--expect-fail")) {
			expect_fail = true;
		} else {
			fprintf(stderr, "usage: %s [--seeds N] [--first S] [--states K] "
				"[--seed S [--state I]] [-v] [--expect-fail] [--keep FILE]\n",
				argv[0]);
			return 2;
		}
	}
	/* Many small O_DIRECT opens: memory-backed if possible. */
	if (!dir)
		dir = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0
		      ? "/dev/shm" : "/tmp";
	snprintf(store_path, sizeof store_path, "%s/qbd-crash.%d", dir, (int)getpid());
	if (!verbose)
		qbd_log_level_current = -1; /* the mutants' errors are expected */
	{
		static uint8_t z[BLK];
		zero_hash = XXH3_64bits(z, BLK);
	}
	for (uint64_t seed = first; seed < first + nseeds; seed++) {
		if (run_seed(seed, nstates, only_state, keep))
			continue;
		failed++;
		if (expect_fail || failed >= 5)
			break;
	}
	unlink(store_path);
	printf("qbd-crash: %" PRIu64 " crash states checked, %" PRIu64 " failing seed%s\n",
	       states_checked, failed, failed == 1 ? "" : "s");
	if (expect_fail) {
		if (failed) {
			printf("qbd-crash: the disabled mechanism is caught, as expected\n");
			return 0;
		}
		printf("qbd-crash: FAIL: no state caught the disabled mechanism\n");
		return 1;
	}
	return failed ? 1 : 0;
}
