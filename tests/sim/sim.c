/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-sim: deterministic simulation of the quorum core (replicator/core).
 *
 * One seed = one run: R simulated replicas (the rules of qbd-chunkd and
 * the engine: promised epoch, version checks, REPAIR and RESYNC writes,
 * checksummed blocks), simulated connections (per-connection FIFO, random
 * delay, drops that break the connection, duplicates), a simulated clock,
 * and writers that run the real core. A seeded scheduler injects faults:
 * replica crashes and restarts, partitions, slow replicas, disk write
 * errors, silent corruption, and writer crashes or isolation followed by
 * failover to a new writer with a new epoch.
 *
 * Membership (docs/protocol.md section 11): half the seeds have a pool of
 * one or two nodes beyond the R slots, a simulated etcd holding the
 * configuration (changed by compare-and-swap against its revision and the
 * volume's epoch; an attach compares the revision it read), and change
 * requests that the attached writer carries out (learner, joint rule,
 * joint record, new set), while writers are cut off, crash and are
 * replaced mid-change; nodes outside the configuration reclaim the volume
 * and leave a tombstone, crash and come back, and may be added again.
 *
 * Checks, during and after each run:
 *  - every read returns, per 256-byte unit, the last write committed
 *    before the read started (acknowledged, or seen by an earlier read
 *    once it can no longer be undone) or a later write issued before the
 *    read ended; data is never torn or foreign;
 *  - every unit BLOCK_STATUS reports as a hole could have read as zeros
 *    by the same rule (replicas keep a written bit per unit, as the
 *    engine does per 4 KiB block);
 *  - after the faults heal: every unit reads back correctly, resync
 *    drains, and all replicas hold identical versions and bytes with no
 *    corrupt block left.
 *
 *   qbd-sim [--seeds N] [--first S] [--seed S] [-v] [--expect-fail]
 *
 * A failing seed prints its number; `qbd-sim --seed S -v` replays it
 * exactly with a trace. --expect-fail inverts the result (for builds with
 * a mechanism disabled on purpose: some seed must fail).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/core/core.h"

#define MAXR QBD_CORE_MAX_REPLICAS
#define SLOTS QBD_CORE_MAX_SLOTS  /* a writer's replica slots */
#define MAXN QBD_CORE_MAX_SLOTS   /* nodes in the pool */
#define UNIT 256u              /* checker unit = checksum block here */
#define MS 1000000ull
#define INF UINT64_MAX
#define MAXCLI 128

static bool verbose;

/* ---- random ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* A second stream, for faults added later (full disks): drawing from
 * it leaves the schedules the main stream makes for every seed as they
 * were. */
static uint64_t rng2_state;

static uint64_t rnd2(void)
{
	uint64_t z = (rng2_state += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* A third, for membership changes. */
static uint64_t rng3_state;

static uint64_t rnd3(void)
{
	uint64_t z = (rng3_state += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static uint64_t rnd_range(uint64_t lo, uint64_t hi) /* [lo, hi] */
{
	return lo + rnd() % (hi - lo + 1);
}

static bool chance(unsigned per_mille)
{
	return rnd() % 1000 < per_mille;
}

/* ---- world ---- */

struct cfg {
	unsigned R, W;
	unsigned N;              /* nodes in the pool (R, or more with membership) */
	uint64_t nchunks;
	uint32_t cs;
};

struct rep {
	bool alive;
	unsigned incarnation;
	uint64_t promised;
	uint64_t *ver;
	uint8_t *data;
	uint8_t *corrupt;        /* per unit */
	uint8_t *written;        /* per unit: holds data (else reads as zeros) */
	/* What a crash keeps: the state as of the last flush (FLUSH, FUA) of
	 * each chunk written since (dirty), as the engine on a disk with a
	 * volatile cache. Per chunk flags as the engine's: SUSPECT after a
	 * crash with the chunk dirty, DAMAGED once a read or a scrub found
	 * a corrupt unit; a RESYNC to another version clears both. */
	uint64_t *dver;
	uint8_t *ddata, *dwritten;
	uint8_t *dirty, *suspect, *damaged; /* per chunk */
	unsigned ping_cursor;    /* PING report rotation */
	bool eio_next_write;
	uint64_t full_until;     /* its disk has no space: writes that would
				  * store data get -ENOSPC, unapplied */
	uint64_t slow_until, slow_extra;
	uint64_t down_until;
	bool tomb;               /* a tombstone for the volume: OPEN refused */
	uint64_t tomb_epoch;     /* the promise it replaced */
};

/*
 * The simulated etcd: the volume's configuration (docs/protocol.md
 * section 11), changed only by compare-and-swap against its revision and
 * the volume's epoch, and a change request waiting for a writer.
 */
enum phase { PH_NONE, PH_LEARNER, PH_JOINT };
struct ecfg {
	uint64_t rev;            /* bumped by every change of the record */
	unsigned node[MAXR];     /* S: record slot i -> node */
	enum phase phase;
	unsigned xslot, ynode;   /* the change: slot xslot's node goes, ynode comes */
};

struct conn {
	enum { C_DOWN, C_OPENING, C_UP } state;
	unsigned gen;
	bool broken;             /* messages on this gen are lost */
	uint64_t out_t, in_t;    /* FIFO: last delivery times each way */
	uint64_t retry_t, open_t;
	unsigned rep_inc;        /* replica incarnation it connected to */
};

struct client {
	bool exists, alive, attached, fenced, workload;
	uint64_t epoch;
	struct qbd_core *core;
	struct conn conn[SLOTS]; /* per core slot */
	bool cut[MAXN];          /* link to node cut */
	struct ecfg cfg;         /* the configuration as it read and changed it */
	int slot_node[SLOTS];    /* core slot -> node, -1 free */
	unsigned rslot[MAXR];    /* record slot -> core slot */
	int yslot;               /* its change's learner slot, -1 */
	bool joint;              /* its core follows the joint rule */
	uint64_t attach_deadline;
	unsigned inflight;
	struct op *ops;          /* submitted, not completed */
};

enum ev_type { E_TO_REP = 1, E_TO_CLI, E_TICK, E_WORK, E_FAULT, E_HEAL_REP,
	       E_HEAL_CUT, E_RESET, E_ATTACH_END, E_UNSLOW, E_ATTACH_TXN, E_MEMBER };

struct msg {
	int type;                /* QBD_CM_* or 0 = OPEN */
	uint64_t id, epoch, chunk, expected, newv, version;
	uint32_t off, len, flags;
	unsigned source;         /* PULL */
	int status;
	uint8_t *data;
	uint32_t dlen;           /* bytes of data (a sparse form's vary) */
	struct qbd_chunk_version *list;
	size_t nlist;
	uint64_t flagged;        /* PING reply: flagged chunks in all */
	uint32_t cflags;         /* READ reply: the chunk's flags */
	bool join;               /* OPEN of a learner: may replace a tombstone */
	uint32_t copied;         /* PULL reply: bytes that crossed (its length) */
};

struct ev {
	uint64_t t, seq;
	enum ev_type type;
	int cli;
	unsigned rep, gen, inc;  /* rep: the node (the slot for E_RESET) */
	unsigned slot;           /* E_TO_REP, E_TO_CLI: the writer's slot */
	struct msg *m;
};

struct wr {                      /* a write in the history */
	int cli;
	uint64_t issue_t, done_t, ack_t;
	uint64_t durable_t;      /* FUA acknowledged, or a later flush of its writer completed */
	uint64_t off;
	uint32_t len;
	bool zero;
};

struct op {
	struct op *prev, *next;  /* client's ops in flight */
	int cli;
	enum qbd_core_op kind;
	uint64_t off;
	uint32_t len;
	uint64_t id;             /* write id */
	uint64_t t0;
	uint8_t *buf;
	bool final_read, fua;
};

static struct cfg C;
static struct rep reps[MAXN];
static struct ecfg E;            /* etcd's record */
static struct {                  /* etcd's change request, if on */
	bool on;
	unsigned slot, node;
} REQ;
static bool membership;          /* this seed changes the configuration */
static uint64_t stat_changes, stat_reclaims, total_changes, total_member_seeds;
static struct client clis[MAXCLI];
static int active = -1;          /* client running the workload */
static uint64_t now, epoch_counter;
static struct ev *heap;
static size_t nheap, capheap;
static uint64_t evseq;
static struct wr *writes;        /* index = write id, 0 unused */
static uint64_t nwrites, capwrites;
struct uw {                      /* a write of one unit */
	uint64_t id;
	uint64_t obs_t;          /* first read that returned it here */
};
static struct uw **unit_w;       /* per unit: writes, issue order */
static size_t *unit_n, *unit_cap;
static uint64_t nunits;
static char failure[512];
static bool faults_on, final_phase;
static uint64_t stat_ops, stat_acked, stat_faults;
static uint64_t *undurable;      /* ids of writes acknowledged, not durable */
static size_t nundurable, capundurable;
static bool power_losses;        /* this seed may crash every replica at once */
static uint64_t stat_lossy, stat_lossy_runs, stat_flag_reports, stat_full;
static uint64_t total_lossy_seeds, total_power_losses, total_flag_reports;
static uint64_t total_full_seeds, total_nospc;

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...)
{
	va_list ap;

	if (!verbose)
		return;
	printf("%8.3f ms  ", (double)now / 1e6);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (failure[0])
		return;
	n = snprintf(failure, sizeof(failure), "at %.3f ms: ", (double)now / 1e6);
	va_start(ap, fmt);
	vsnprintf(failure + n, sizeof(failure) - (size_t)n, fmt, ap);
	va_end(ap);
	trace("FAIL %s", failure);
}

/* ---- event heap ---- */

static bool ev_less(const struct ev *a, const struct ev *b)
{
	return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void ev_push(struct ev e)
{
	size_t i;

	if (nheap == capheap) {
		capheap = capheap ? capheap * 2 : 1024;
		heap = realloc(heap, capheap * sizeof(*heap));
		if (!heap)
			abort();
	}
	e.seq = evseq++;
	i = nheap++;
	while (i && ev_less(&e, &heap[(i - 1) / 2])) {
		heap[i] = heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	heap[i] = e;
}

static struct ev ev_pop(void)
{
	struct ev top = heap[0], last = heap[--nheap];
	size_t i = 0;

	for (;;) {
		size_t l = 2 * i + 1, s = i;
		const struct ev *best = &last;

		if (l < nheap && ev_less(&heap[l], best)) {
			s = l;
			best = &heap[l];
		}
		if (l + 1 < nheap && ev_less(&heap[l + 1], best))
			s = l + 1;
		if (s == i)
			break;
		heap[i] = heap[s];
		i = s;
	}
	if (nheap)
		heap[i] = last;
	return top;
}

static void msg_free(struct msg *m)
{
	if (!m)
		return;
	free(m->data);
	free(m->list);
	free(m);
}

static struct msg *msg_dup(const struct msg *m)
{
	struct msg *d = malloc(sizeof(*d));

	if (!d)
		abort();
	*d = *m;
	d->list = NULL;
	d->nlist = 0;
	if (m->data) {
		size_t n = m->dlen ? m->dlen : m->len;

		d->data = malloc(n);
		if (!d->data)
			abort();
		memcpy(d->data, m->data, n);
	}
	return d;
}

static void loss_update(uint64_t ch);

/* ---- network ---- */

static uint64_t net_delay(unsigned r)
{
	uint64_t d = rnd_range(50000, 1500000);

	if (chance(20))
		d += rnd_range(5, 60) * MS; /* a hiccup */
	if (now < reps[r].slow_until)
		d += reps[r].slow_extra;
	return d;
}

/* Client -> the node of its slot. Takes m. */
static void net_to_rep(int ci, unsigned slot, struct msg *m)
{
	struct client *cl = &clis[ci];
	struct conn *cn = &cl->conn[slot];
	unsigned r = (unsigned)cl->slot_node[slot];
	struct ev e = { .type = E_TO_REP, .cli = ci, .rep = r, .slot = slot, .gen = cn->gen,
			.inc = cn->rep_inc };
	uint64_t t;

	if (faults_on && chance(3)) {
		trace("c%d->r%u: connection breaks (message lost)", ci, r);
		cn->broken = true;
	}
	if (cn->broken || cl->cut[r]) {
		msg_free(m);
		return;
	}
	t = now + net_delay(r);
	if (t < cn->out_t)
		t = cn->out_t;
	cn->out_t = t;
	e.t = t;
	if (faults_on && chance(10)) {
		struct ev d = e;

		d.m = msg_dup(m);
		d.t = t + 1;
		ev_push(d);
	}
	e.m = m;
	ev_push(e);
}

/* Node r -> client, on the connection generation (of its slot) the
 * request came on. */
static void net_to_cli(int ci, unsigned r, unsigned slot, unsigned gen, struct msg *m)
{
	struct client *cl = &clis[ci];
	struct conn *cn = &cl->conn[slot];
	struct ev e = { .type = E_TO_CLI, .cli = ci, .rep = r, .slot = slot, .gen = gen,
			.m = m };
	uint64_t t;

	if (gen != cn->gen || cn->broken || cl->cut[r] || !cl->alive) {
		msg_free(m);
		return;
	}
	t = now + net_delay(r);
	if (t < cn->in_t)
		t = cn->in_t;
	cn->in_t = t;
	e.t = t;
	ev_push(e);
}

/* ---- replicas ---- */

/* A RESYNC write (or a PULL, stored as one): zero units become holes. */
static void rep_written_from_data(struct rep *rp, uint64_t ch)
{
	for (uint32_t u = 0; u < C.cs / UNIT; u++) {
		const uint8_t *p = rp->data + ch * C.cs + (size_t)u * UNIT;
		bool any = false;

		for (unsigned i = 0; i < UNIT; i++)
			any |= p[i] != 0;
		rp->written[ch * (C.cs / UNIT) + u] = any;
	}
}

/* Bytes of a chunk's written bitmap (a unit per bit). */
static uint32_t sparse_bm_bytes(void)
{
	return (C.cs / UNIT + 7) / 8;
}

/* The sparse form of rp's copy of ch (its written bitmap, then its
 * written units), as the chunk server answers a SPARSE READ; into
 * m->data, m->dlen. Only written units are read: a corrupt one fails it
 * with -EBADMSG (the engine reads holes without I/O). */
static int rep_read_sparse(struct rep *rp, uint64_t ch, struct msg *m)
{
	uint32_t bmb = sparse_bm_bytes(), k = 0;
	const uint8_t *w = rp->written + ch * (C.cs / UNIT);

	for (uint32_t u = 0; u < C.cs / UNIT; u++)
		if (w[u] && rp->corrupt[ch * (C.cs / UNIT) + u])
			return -EBADMSG;
	m->data = calloc(1, bmb + C.cs);
	if (!m->data)
		abort();
	for (uint32_t u = 0; u < C.cs / UNIT; u++) {
		if (!w[u])
			continue;
		m->data[u / 8] |= (uint8_t)(1u << (u % 8));
		memcpy(m->data + bmb + (size_t)k++ * UNIT, rp->data + ch * C.cs + (size_t)u * UNIT,
		       UNIT);
	}
	m->dlen = bmb + k * UNIT;
	return 0;
}

/* The chunk a sparse form stands for, into cd (holes as zeros); the
 * form must be exact. */
static void sparse_expand(const uint8_t *sp, uint32_t len, uint8_t *cd)
{
	uint32_t bmb = sparse_bm_bytes(), k = 0;

	for (uint32_t u = 0; u < C.cs / UNIT; u++) {
		if ((sp[u / 8] >> (u % 8)) & 1u)
			memcpy(cd + (size_t)u * UNIT, sp + bmb + (size_t)k++ * UNIT, UNIT);
		else
			memset(cd + (size_t)u * UNIT, 0, UNIT);
	}
	if (bmb + k * UNIT != len)
		fail("a sparse form of %u bytes carries %u units", len, k);
}

/* What the replica wrote is on disk now (FLUSH, FUA: fdatasync). */
static void rep_flush(struct rep *rp)
{
	memcpy(rp->dver, rp->ver, C.nchunks * sizeof(uint64_t));
	memcpy(rp->ddata, rp->data, C.nchunks * C.cs);
	memcpy(rp->dwritten, rp->written, nunits);
	memset(rp->dirty, 0, C.nchunks);
}

static bool chunk_corrupt(const struct rep *rp, uint64_t ch)
{
	for (uint32_t u = 0; u < C.cs / UNIT; u++)
		if (rp->corrupt[ch * (C.cs / UNIT) + u])
			return true;
	return false;
}

/*
 * The replica stops without a clean close: each unit (a 4 KiB block of
 * the engine) of a chunk written since the last flush keeps its new or
 * its previous contents, chosen by the seed; the version stays the newest
 * (ahead of the contents); such chunks are SUSPECT from now on. Sometimes
 * every write survives (a process killed, the disk's cache intact): still
 * SUSPECT, since the engine cannot tell. Returns how many chunks.
 */
static unsigned rep_crash(unsigned r)
{
	struct rep *rp = &reps[r];
	bool keep_all = chance(300);
	unsigned n = 0;

	for (uint64_t ch = 0; ch < C.nchunks; ch++) {
		unsigned lost = 0;

		if (!rp->dirty[ch])
			continue;
		for (uint32_t i = 0; i < C.cs / UNIT; i++) {
			uint64_t u = ch * (C.cs / UNIT) + i;

			if (keep_all || chance(500) ||
			    (!memcmp(rp->data + u * UNIT, rp->ddata + u * UNIT, UNIT) &&
			     rp->written[u] == rp->dwritten[u]))
				continue;
			memcpy(rp->data + u * UNIT, rp->ddata + u * UNIT, UNIT);
			rp->written[u] = rp->dwritten[u];
			lost++;
		}
		rp->suspect[ch] = 1;
		n++;
		trace("r%u: chunk %" PRIu64 " suspect at %#" PRIx64 " (flushed %#" PRIx64
		      "), %u units back to their flushed contents", r, ch, rp->ver[ch],
		      rp->dver[ch], lost);
	}
	rep_flush(rp);
	return n;
}

static void rep_handle(int ci, unsigned r, unsigned slot, unsigned gen, struct msg *m)
{
	struct rep *rp = &reps[r];
	uint8_t *cd;
	int st = 0;

	m->status = 0;
	if (m->type == 0) { /* OPEN */
		if (rp->tomb && m->join && m->epoch >= rp->tomb_epoch) {
			/* Added back as a new replica: it holds nothing. */
			trace("r%u: tombstone replaced by a learner's promise of %" PRIu64, r,
			      m->epoch);
			rp->tomb = false;
		}
		if (rp->tomb) {
			st = -EIDRM;
		} else if (m->epoch < rp->promised) {
			st = -EPERM;
		} else {
			size_t n = 0;

			rp->promised = m->epoch;
			m->list = calloc(C.nchunks, sizeof(*m->list));
			if (!m->list)
				abort();
			for (uint64_t ch = 0; ch < C.nchunks; ch++)
				if (rp->ver[ch] || rp->suspect[ch] || rp->damaged[ch])
					m->list[n++] = (struct qbd_chunk_version){
						ch, rp->ver[ch],
						(rp->suspect[ch] ? QBD_CORE_CHUNK_SUSPECT : 0) |
						(rp->damaged[ch] ? QBD_CORE_CHUNK_DAMAGED : 0) };
			m->nlist = n;
		}
		m->status = st;
		m->version = rp->promised;
		net_to_cli(ci, r, slot, gen, m);
		return;
	}
	if (rp->tomb || m->epoch != rp->promised) {
		m->status = rp->tomb ? -EIDRM : m->epoch < rp->promised ? -EPERM : -ENOTCONN;
		free(m->data);
		m->data = NULL;
		net_to_cli(ci, r, slot, gen, m);
		return;
	}
	cd = rp->data + m->chunk * C.cs;
	switch (m->type) {
	case QBD_CM_READ:
		if (m->flags & QBD_CORE_F_BITMAP) {
			uint32_t n = m->len / UNIT;
			uint8_t *w = rp->written + m->chunk * (C.cs / UNIT) + m->off / UNIT;

			m->data = calloc(1, (n + 7) / 8);
			if (!m->data)
				abort();
			for (uint32_t i = 0; i < n; i++)
				if (w[i])
					m->data[i / 8] |= (uint8_t)(1u << (i % 8));
			trace("r%u: c%d bitmap of chunk %" PRIu64 " [%u+%u] at %#" PRIx64, r, ci,
			      m->chunk, m->off, m->len, rp->ver[m->chunk]);
			break;
		}
		if (m->flags & QBD_CORE_F_SPARSE) {
			st = rep_read_sparse(rp, m->chunk, m);
			if (st == -EBADMSG)
				rp->damaged[m->chunk] = 1;
			trace("r%u: c%d sparse read chunk %" PRIu64 " at %#" PRIx64 ": %d, %u bytes",
			      r, ci, m->chunk, rp->ver[m->chunk], st, st ? 0 : m->dlen);
			break;
		}
		for (uint32_t u = m->off / UNIT; u < (m->off + m->len) / UNIT; u++)
			if (rp->corrupt[m->chunk * (C.cs / UNIT) + u])
				st = -EBADMSG;
		if (st == -EBADMSG)
			rp->damaged[m->chunk] = 1;
		trace("r%u: c%d read chunk %" PRIu64 " [%u+%u] at %#" PRIx64 ": %d", r, ci,
		      m->chunk, m->off, m->len, rp->ver[m->chunk], st);
		if (!st) {
			m->data = malloc(m->len);
			if (!m->data)
				abort();
			memcpy(m->data, cd + m->off, m->len);
		}
		break;
	case QBD_CM_WRITE:
		if (m->flags & QBD_CORE_F_RESYNC) {
			/* At the version it holds: a retry, nothing written,
			 * flags kept (as the engine does). */
			if (rp->ver[m->chunk] != m->newv && now < rp->full_until) {
				st = -ENOSPC;
			} else if (rp->ver[m->chunk] != m->newv) {
				if (m->flags & QBD_CORE_F_SPARSE)
					sparse_expand(m->data, m->dlen, cd);
				else
					memcpy(cd, m->data, C.cs);
				memset(rp->corrupt + m->chunk * (C.cs / UNIT), 0, C.cs / UNIT);
				rep_written_from_data(rp, m->chunk);
				rp->ver[m->chunk] = m->newv;
				rp->suspect[m->chunk] = rp->damaged[m->chunk] = 0;
				rp->dirty[m->chunk] = 1;
			}
		} else if (m->flags & QBD_CORE_F_REPAIR) {
			if (rp->ver[m->chunk] != m->expected || m->expected != m->newv)
				st = -ESTALE;
		} else if (rp->ver[m->chunk] == m->newv) {
			break; /* idempotent repeat */
		} else if (rp->ver[m->chunk] != m->expected) {
			st = -ESTALE;
		} else if (rp->eio_next_write) {
			rp->eio_next_write = false;
			st = -EIO;
			trace("r%u: disk error on write of chunk %" PRIu64, r, m->chunk);
		} else if (now < rp->full_until && !(m->flags & QBD_CORE_F_ZERO)) {
			/* No space: refused before anything is written (a
			 * zeroing frees space and goes through). */
			st = -ENOSPC;
		}
		if (st || (m->flags & QBD_CORE_F_RESYNC))
			break;
		if (m->flags & QBD_CORE_F_ZERO)
			memset(cd + m->off, 0, m->len);
		else
			memcpy(cd + m->off, m->data, m->len);
		memset(rp->written + m->chunk * (C.cs / UNIT) + m->off / UNIT,
		       !(m->flags & QBD_CORE_F_ZERO), m->len / UNIT);
		memset(rp->corrupt + m->chunk * (C.cs / UNIT) + m->off / UNIT, 0,
		       m->len / UNIT);
		rp->ver[m->chunk] = m->newv;
		rp->dirty[m->chunk] = 1;
		/* Every bad block rewritten (a REPAIR, or any write): not
		 * damaged any more, as in the engine. */
		if (!chunk_corrupt(rp, m->chunk))
			rp->damaged[m->chunk] = 0;
		break;
	case QBD_CM_FLUSH:
		rep_flush(rp);
		break;
	case QBD_CM_PING: {
		/* The flagged chunks, at most a bound per reply, in turn. */
		size_t n = 0, total = 0, max = 2;

		for (uint64_t ch = 0; ch < C.nchunks; ch++)
			total += rp->suspect[ch] || rp->damaged[ch];
		if (!total)
			break;
		m->list = calloc(max, sizeof(*m->list));
		if (!m->list)
			abort();
		for (uint64_t i = 0; i < C.nchunks && n < max; i++) {
			uint64_t ch = (rp->ping_cursor + i) % C.nchunks;

			if (!rp->suspect[ch] && !rp->damaged[ch])
				continue;
			m->list[n++] = (struct qbd_chunk_version){
				ch, rp->ver[ch],
				(rp->suspect[ch] ? QBD_CORE_CHUNK_SUSPECT : 0) |
				(rp->damaged[ch] ? QBD_CORE_CHUNK_DAMAGED : 0) };
			if (n == max)
				rp->ping_cursor = (unsigned)((ch + 1) % C.nchunks);
		}
		m->nlist = n;
		m->flagged = total;
		break;
	}
	case QBD_CM_PULL: {
		/* The replica reads the chunk from the source itself (with the
		 * writer's epoch), then stores it as a RESYNC write. */
		struct rep *src = &reps[m->source];
		bool bad = false;

		/* A SPARSE read of the source: its written units only. */
		for (uint32_t u = 0; u < C.cs / UNIT; u++)
			bad |= src->written[m->chunk * (C.cs / UNIT) + u] &&
			       src->corrupt[m->chunk * (C.cs / UNIT) + u];
		if (rp->ver[m->chunk] == m->newv)
			st = 0;     /* it holds that version already */
		else if (now < rp->full_until)
			st = -ENOSPC;
		else if (m->source >= C.N || m->source == r || !src->alive || chance(20))
			st = -EHOSTUNREACH;
		else if (src->tomb)
			st = -EHOSTUNREACH;
		else if (src->promised != m->epoch)
			st = src->promised > m->epoch ? -EPERM : -ENOTCONN;
		else if (src->suspect[m->chunk] || src->damaged[m->chunk])
			/* A flagged copy is no source, even at the version
			 * asked for: the source may have crashed and restarted
			 * since the writer chose it (its read reply carries
			 * the chunk's flags, as chunkd's does). */
			st = -ESTALE;
		else if (bad) {
			st = -EBADMSG;
			src->damaged[m->chunk] = 1; /* its engine read failed */
		}
		else if (src->ver[m->chunk] != m->newv)
			st = -ESTALE;
		if (!st && rp->ver[m->chunk] != m->newv) {
			m->copied = sparse_bm_bytes();
			for (uint32_t u = 0; u < C.cs / UNIT; u++) {
				uint64_t su = m->chunk * (C.cs / UNIT) + u;

				if (src->written[su]) {
					memcpy(cd + (size_t)u * UNIT, src->data + su * UNIT, UNIT);
					m->copied += UNIT;
				} else {
					memset(cd + (size_t)u * UNIT, 0, UNIT);
				}
			}
			memset(rp->corrupt + m->chunk * (C.cs / UNIT), 0, C.cs / UNIT);
			rep_written_from_data(rp, m->chunk);
			rp->ver[m->chunk] = m->newv;
			rp->suspect[m->chunk] = rp->damaged[m->chunk] = 0;
			rep_flush(rp); /* stored durably (FUA), as chunkd does */
		}
		trace("r%u: c%d pull chunk %" PRIu64 " from r%u at %#" PRIx64 ": %d", r, ci,
		      m->chunk, m->source, m->newv, st);
		break;
	}
	}
	if (m->type == QBD_CM_WRITE && !st && (m->flags & QBD_CORE_F_FUA))
		rep_flush(rp);
	if (m->type == QBD_CM_WRITE) {
		free(m->data);
		m->data = NULL;
		trace("r%u: c%d write chunk %" PRIu64 " %#" PRIx64 "->%#" PRIx64 " flags %u: %d (now %#" PRIx64 ")",
		      r, ci, m->chunk, m->expected, m->newv, m->flags, st, rp->ver[m->chunk]);
	}
	m->status = st;
	m->version = rp->ver[m->chunk];
	if (m->type == QBD_CM_READ)
		/* As of the reply, as chunkd's READ reply carries them. */
		m->cflags = (rp->suspect[m->chunk] ? QBD_CORE_CHUNK_SUSPECT : 0) |
			    (rp->damaged[m->chunk] ? QBD_CORE_CHUNK_DAMAGED : 0);
	if (m->type != QBD_CM_FLUSH && m->type != QBD_CM_PING)
		loss_update(m->chunk);
	net_to_cli(ci, r, slot, gen, m);
}

/* ---- history and checks ---- */

static void unit_add(uint64_t u, uint64_t id)
{
	if (unit_n[u] == unit_cap[u]) {
		unit_cap[u] = unit_cap[u] ? unit_cap[u] * 2 : 8;
		unit_w[u] = realloc(unit_w[u], unit_cap[u] * sizeof(struct uw));
		if (!unit_w[u])
			abort();
	}
	unit_w[u][unit_n[u]++] = (struct uw){ id, INF };
}

static uint64_t new_write(int ci, uint64_t off, uint32_t len, bool zero)
{
	if (nwrites + 1 >= capwrites) {
		capwrites = capwrites ? capwrites * 2 : 1024;
		writes = realloc(writes, capwrites * sizeof(*writes));
		if (!writes)
			abort();
	}
	nwrites++;
	writes[nwrites] = (struct wr){ .cli = ci, .issue_t = now, .done_t = INF, .ack_t = INF,
				       .durable_t = INF, .off = off, .len = len, .zero = zero };
	for (uint64_t u = off / UNIT; u < (off + len) / UNIT; u++)
		unit_add(u, nwrites);
	return nwrites;
}

/*
 * Loss periods: while at least W copies of a chunk are flagged or corrupt
 * (more than the losses the volume is built to survive: a power loss of
 * several zones), writes to it that are not durable may be lost. Such a
 * write, issued before the period ended and not durable before it began,
 * no longer counts as committed by its acknowledgement, by a read that
 * started before the period ended, or by a flush after it began: only
 * what was durable must survive. Reads must still return a value that
 * was written, and never go back once served afterwards.
 */
struct period {
	uint64_t s, e;           /* e = INF while it lasts */
};
static struct period *loss[64];  /* per chunk */
static size_t nloss[64];

static void loss_update(uint64_t ch)
{
	unsigned n = 0;
	size_t k = nloss[ch];
	bool open = k && loss[ch][k - 1].e == INF;

	for (unsigned i = 0; i < C.R; i++) {
		const struct rep *rp = &reps[E.node[i]];

		n += rp->suspect[ch] || rp->damaged[ch] || chunk_corrupt(rp, ch);
	}
	if (n >= C.W && !open) {
		trace("chunk %" PRIu64 ": %u copies flagged: writes not durable may be lost", ch, n);
		stat_lossy++;
		loss[ch] = realloc(loss[ch], (k + 1) * sizeof(**loss));
		if (!loss[ch])
			abort();
		loss[ch][k] = (struct period){ now, INF };
		nloss[ch]++;
	} else if (n < C.W && open) {
		trace("chunk %" PRIu64 ": fewer than W copies flagged again", ch);
		loss[ch][k - 1].e = now;
	}
}

static void loss_update_all(void)
{
	for (uint64_t ch = 0; ch < C.nchunks; ch++)
		loss_update(ch);
}

/* When did this write of unit u become permanent: acknowledged, read
 * back once the writer had stopped working on it, or durable (see the
 * loss periods above). */
static uint64_t commit_t(const struct wr *w, const struct uw *x, uint64_t u)
{
	uint64_t ch = u * UNIT / C.cs;
	uint64_t ack = w->ack_t, obs_t = x->obs_t, dur = w->durable_t, o, t;

	for (size_t k = 0; k < nloss[ch]; k++) {
		const struct period *pd = &loss[ch][k];

		if (w->issue_t > pd->e || dur < pd->s)
			continue;
		ack = dur = INF;
		if (obs_t <= pd->e)
			obs_t = INF;
	}
	o = obs_t == INF || w->done_t == INF ? INF : (obs_t > w->done_t ? obs_t : w->done_t);
	t = ack < o ? ack : o;
	return t < dur ? t : dur;
}

/* May a read that started at t0 commit write w of unit u by returning
 * it? Not if it started before a loss period that w is exposed to ended. */
static bool obs_counts(const struct wr *w, uint64_t u, uint64_t t0)
{
	uint64_t ch = u * UNIT / C.cs;

	for (size_t k = 0; k < nloss[ch]; k++) {
		const struct period *pd = &loss[ch][k];

		if (w->issue_t <= pd->e && w->durable_t >= pd->s && t0 <= pd->e)
			return false;
	}
	return true;
}

static void durable_add(uint64_t id)
{
	if (nundurable == capundurable) {
		capundurable = capundurable ? capundurable * 2 : 64;
		undurable = realloc(undurable, capundurable * sizeof(*undurable));
		if (!undurable)
			abort();
	}
	undurable[nundurable++] = id;
}

/* A flush of writer ci submitted at t0 succeeded: every write it had
 * acknowledged before t0 is durable on W replicas. */
static void flush_done(int ci, uint64_t t0)
{
	size_t k = 0;

	for (size_t i = 0; i < nundurable; i++) {
		struct wr *w = &writes[undurable[i]];

		if (w->cli == ci && w->ack_t < t0)
			w->durable_t = now;
		else
			undurable[k++] = undurable[i];
	}
	nundurable = k;
}

static void fill_unit(uint8_t *p, uint64_t id, uint64_t u)
{
	memcpy(p, &id, 8);
	memcpy(p + 8, &u, 8);
	for (unsigned i = 16; i < UNIT; i++)
		p[i] = (uint8_t)(id * 31 + u * 7 + i);
}

/* Which write does unit u's content p come from? 0 for zeros; -1 torn. */
static int64_t unit_value(const uint8_t *p, uint64_t u)
{
	uint64_t id, uu;
	uint8_t ref[UNIT];
	bool zero = true;

	for (unsigned i = 0; i < UNIT; i++)
		zero &= p[i] == 0;
	if (zero)
		return 0;
	memcpy(&id, p, 8);
	memcpy(&uu, p + 8, 8);
	if (id == 0 || id > nwrites || uu != u)
		return -1;
	fill_unit(ref, id, u);
	return memcmp(ref, p, UNIT) ? -1 : (int64_t)id;
}

/* May unit u read as zeros for an operation that started at t0? */
static bool zero_ok(uint64_t u, uint64_t t0)
{
	uint64_t L = 0;
	bool ok;

	for (size_t i = 0; i < unit_n[u]; i++) {
		uint64_t id = unit_w[u][i].id;

		if (commit_t(&writes[id], &unit_w[u][i], u) < t0 && id > L)
			L = id;
	}
	ok = L == 0 || writes[L].zero;
	for (size_t i = 0; i < unit_n[u] && !ok; i++) {
		uint64_t id = unit_w[u][i].id;

		ok = writes[id].zero && id > L && writes[id].issue_t < now;
	}
	return ok;
}

/* BLOCK_STATUS: a unit reported as a hole must be one that may read as
 * zeros. */
static void check_block_status(const struct op *o)
{
	for (uint64_t i = 0; i < o->len / UNIT; i++) {
		uint64_t u = o->off / UNIT + i;

		if ((o->buf[i / 8] >> (i % 8)) & 1u)
			continue;
		if (!zero_ok(u, o->t0)) {
			fail("block status [%.3f ms] reports unit %" PRIu64 " (chunk %" PRIu64
			     ") as a hole, but it cannot read as zeros",
			     (double)o->t0 / 1e6, u, u * UNIT / C.cs);
			return;
		}
	}
}

static void check_read(const struct op *o)
{
	for (uint64_t u = o->off / UNIT; u < (o->off + o->len) / UNIT; u++) {
		const uint8_t *p = o->buf + (u * UNIT - o->off);
		int64_t x = unit_value(p, u);
		uint64_t L = 0;
		bool ok;

		if (x < 0) {
			fail("read of unit %" PRIu64 " returned torn or foreign data", u);
			return;
		}
		for (size_t i = 0; i < unit_n[u]; i++) {
			uint64_t id = unit_w[u][i].id;

			if (commit_t(&writes[id], &unit_w[u][i], u) < o->t0 && id > L)
				L = id;
		}
		if (x == 0) {
			/* zeros: the initial state or a zeroing write */
			ok = L == 0 || writes[L].zero;
			for (size_t i = 0; i < unit_n[u] && !ok; i++) {
				uint64_t id = unit_w[u][i].id;

				ok = writes[id].zero && id > L && writes[id].issue_t < now;
			}
		} else {
			bool covers = writes[x].off <= u * UNIT &&
				      u * UNIT < writes[x].off + writes[x].len;

			ok = covers && ((uint64_t)x == L ||
					((uint64_t)x > L && writes[x].issue_t < now));
		}
		if (!ok) {
			fail("read [%.3f ms] of unit %" PRIu64 " (chunk %" PRIu64 ") returned write %" PRId64
			     ", but write %" PRIu64 " was committed before it started",
			     (double)o->t0 / 1e6, u, u * UNIT / C.cs, x, L);
			return;
		}
		/* A read that started before a loss may have read a copy the
		 * loss then took back: it commits nothing. */
		for (size_t i = 0; i < unit_n[u]; i++)
			if (unit_w[u][i].id == (uint64_t)x && unit_w[u][i].obs_t > now &&
			    obs_counts(&writes[x], u, o->t0)) {
				unit_w[u][i].obs_t = now;
				trace("unit %" PRIu64 ": write %" PRId64 " seen", u, x);
			}
	}
}

/* ---- clients ---- */

static void cli_send(void *user, const struct qbd_core_msg *cm)
{
	int ci = (int)(intptr_t)user;
	struct client *cl = &clis[ci];
	struct msg *m = calloc(1, sizeof(*m));

	if (!m)
		abort();
	m->type = cm->type;
	m->id = cm->id;
	m->epoch = cl->epoch;
	m->chunk = cm->chunk;
	m->off = cm->offset;
	m->len = cm->length;
	m->expected = cm->expected_version;
	m->newv = cm->new_version;
	m->flags = cm->flags;
	m->source = cm->type == QBD_CM_PULL ? (unsigned)cl->slot_node[cm->source] : 0;
	if (cm->type == QBD_CM_WRITE && cm->data) {
		m->dlen = (cm->flags & QBD_CORE_F_SPARSE) ? cm->data_len : cm->length;
		m->data = malloc(m->dlen);
		if (!m->data)
			abort();
		memcpy(m->data, cm->data, m->dlen);
	} else if (cm->type == QBD_CM_WRITE) {
		m->flags |= QBD_CORE_F_ZERO;
	}
	if (cm->replica >= SLOTS || cl->slot_node[cm->replica] < 0 ||
	    (cm->type == QBD_CM_PULL && (cm->source >= SLOTS || cl->slot_node[cm->source] < 0))) {
		fail("client %d sent to slot %u (or from %u), which has no node", ci, cm->replica,
		     cm->source);
		msg_free(m);
		return;
	}
	if (cl->conn[cm->replica].state != C_UP) {
		fail("client %d sent to replica %u which is not up", ci, cm->replica);
		msg_free(m);
		return;
	}
	net_to_rep(ci, cm->replica, m);
}

static void cli_moved(void *user, unsigned r, uint64_t id, const void *data)
{
	(void)user; (void)r; (void)id; (void)data; /* messages are copies here */
}

static void conn_down(int ci, unsigned r)
{
	struct conn *cn = &clis[ci].conn[r];

	cn->state = C_DOWN;
	cn->gen++;
	cn->broken = false;
	cn->retry_t = now + rnd_range(50, 300) * MS;
}

static void cli_drop(void *user, unsigned r, const char *why)
{
	int ci = (int)(intptr_t)user;

	trace("c%d: drops r%u: %s", ci, r, why);
	conn_down(ci, r);
}

static void cli_log(void *user, int level, const char *msg)
{
	if (level <= 2)
		trace("c%d core: %s", (int)(intptr_t)user, msg);
}

static void op_unlink(struct client *cl, struct op *o)
{
	if (o->prev)
		o->prev->next = o->next;
	else
		cl->ops = o->next;
	if (o->next)
		o->next->prev = o->prev;
	cl->inflight--;
}

static uint64_t stat_nospc;

static void cli_complete(void *user, void *cookie, int res)
{
	int ci = (int)(intptr_t)user;
	struct op *o = cookie;

	if (res == -ENOSPC)
		stat_nospc++;
	op_unlink(&clis[ci], o);
	trace("c%d: %s [%" PRIu64 "+%u] id %" PRIu64 " -> %d", ci,
	      o->kind == QBD_CORE_READ ? "read" : o->kind == QBD_CORE_FLUSH ? "flush" :
	      o->kind == QBD_CORE_BLOCK_STATUS ? "block status" :
	      o->kind == QBD_CORE_ZERO ? "zero" : "write", o->off, o->len, o->id, res);
	if (o->kind == QBD_CORE_WRITE || o->kind == QBD_CORE_ZERO) {
		writes[o->id].done_t = now;
		if (res == 0) {
			writes[o->id].ack_t = now;
			stat_acked++;
			if (o->fua)
				writes[o->id].durable_t = now;
			else
				durable_add(o->id);
		}
	} else if (o->kind == QBD_CORE_FLUSH && res == 0) {
		flush_done(ci, o->t0);
	} else if (o->kind == QBD_CORE_READ && res == 0) {
		check_read(o);
	} else if (o->kind == QBD_CORE_BLOCK_STATUS && res == 0) {
		check_block_status(o);
	} else if (o->kind == QBD_CORE_READ && o->final_read) {
		fail("final read of [%" PRIu64 "+%u] failed: %d", o->off, o->len, res);
	}
	free(o->buf);
	free(o);
}

static const struct qbd_core_ops cli_ops = {
	.send = cli_send, .data_moved = cli_moved, .drop = cli_drop,
	.complete = cli_complete, .log = cli_log,
};

static void cli_connect(int ci, unsigned slot)
{
	struct client *cl = &clis[ci];
	struct conn *cn = &cl->conn[slot];
	unsigned r = (unsigned)cl->slot_node[slot];
	struct msg *m;

	if (!reps[r].alive || cl->cut[r]) {
		cn->retry_t = now + rnd_range(50, 300) * MS;
		return;
	}
	cn->gen++;
	cn->broken = false;
	cn->state = C_OPENING;
	cn->open_t = now;
	cn->rep_inc = reps[r].incarnation;
	m = calloc(1, sizeof(*m));
	if (!m)
		abort();
	m->type = 0;
	m->epoch = cl->epoch;
	m->join = cl->yslot == (int)slot;
	net_to_rep(ci, slot, m);
}

/* The core's configuration for the record cl->cfg: record slot i is
 * core slot i, a change's learner is core slot R. */
static void cli_slots(struct client *cl, struct qbd_core_cfg *cfg)
{
	for (unsigned i = 0; i < SLOTS; i++)
		cl->slot_node[i] = -1;
	for (unsigned i = 0; i < C.R; i++) {
		cl->slot_node[i] = (int)cl->cfg.node[i];
		cl->rslot[i] = i;
	}
	cl->yslot = -1;
	cfg->voters = (1u << C.R) - 1;
	if (cl->cfg.phase == PH_NONE)
		return;
	cl->slot_node[C.R] = (int)cl->cfg.ynode;
	cl->yslot = (int)C.R;
	if (cl->cfg.phase == PH_LEARNER) {
		cfg->learners = 1u << C.R;
	} else {
		cfg->joint = (cfg->voters & ~(1u << cl->cfg.xslot)) | 1u << C.R;
		cl->joint = true;
	}
}

/*
 * The attach transaction: take the next epoch, comparing the record's
 * revision with the one the writer read (a QBD_SIM_MUTANT_NO_CFG_CAS
 * build does not), then build the core for that configuration and open
 * every slot's node.
 */
static void attach_txn(int ci)
{
	struct client *cl = &clis[ci];
	struct qbd_core_cfg cfg = {
		.replicas = C.R, .write_quorum = C.W, .nchunks = C.nchunks,
		.chunk_size = C.cs, .block_size = UNIT, .local = 1, .timeout_ns = 300 * MS,
		.resync_rate = rnd_range(0, 1) ? 0 : 4ull * C.cs * 10,
		.resync_parallel = (unsigned)rnd_range(1, 4),
		.lease_ns = 500 * MS,
		.pull = rnd_range(0, 1),
	};

	if (!cl->alive)
		return;
#ifndef QBD_SIM_MUTANT_NO_CFG_CAS
	if (cl->cfg.rev != E.rev) {
		trace("c%d: the configuration changed since it was read: reading it again", ci);
		cl->cfg = E;
		ev_push((struct ev){ .t = now + rnd3() % 20 * MS + 1, .type = E_ATTACH_TXN,
				     .cli = ci });
		return;
	}
#endif
	cli_slots(cl, &cfg);
	cl->epoch = cfg.epoch = ++epoch_counter;
	/* A predecessor may still be running: wait out its read lease. */
	cfg.takeover_wait_ns = cfg.epoch > 1 ? 700 * MS : 0;
	if (qbd_core_new(&cfg, &cli_ops, (void *)(intptr_t)ci, &cl->core)) {
		fail("qbd_core_new failed");
		return;
	}
	if (membership)
		trace("c%d: attaching with epoch %" PRIu64 ", configuration rev %" PRIu64
		      " (phase %d)", ci, cl->epoch, cl->cfg.rev, cl->cfg.phase);
	else
		trace("c%d: attaching with epoch %" PRIu64, ci, cl->epoch);
	for (unsigned r = 0; r < SLOTS; r++)
		if (cl->slot_node[r] >= 0)
			cli_connect(ci, r);
	cl->attach_deadline = now + 400 * MS;
	ev_push((struct ev){ .t = cl->attach_deadline, .type = E_ATTACH_END, .cli = ci });
	ev_push((struct ev){ .t = now + 10 * MS, .type = E_TICK, .cli = ci });
}

static void cli_start(int ci, bool workload)
{
	struct client *cl = &clis[ci];

	memset(cl, 0, sizeof(*cl));
	cl->exists = cl->alive = true;
	cl->workload = workload;
	cl->cfg = E;
	/* With membership changes, etcd's answer to the read comes a while
	 * before the attach transaction: a change may land in between. */
	if (membership)
		ev_push((struct ev){ .t = now + rnd3() % 30 * MS + 1, .type = E_ATTACH_TXN,
				     .cli = ci });
	else
		attach_txn(ci);
}

/* Client indexes are never reused: events name their client by index. */
static int nclients;

static int new_client(bool workload)
{
	if (nclients == MAXCLI) {
		fail("more than %d writers", MAXCLI);
		return -1;
	}
	cli_start(nclients, workload);
	return nclients++;
}

/* A writer dies: nothing of it runs again; its messages already on the
 * wire still arrive. Writes it had in flight are done as of now. */
static void cli_crash(int ci)
{
	struct client *cl = &clis[ci];

	trace("c%d: crashes", ci);
	cl->alive = false;
	cl->exists = false;
	qbd_core_free(cl->core);
	cl->core = NULL;
	while (cl->ops) {
		struct op *o = cl->ops;

		op_unlink(cl, o);
		if (o->id && writes[o->id].done_t == INF)
			writes[o->id].done_t = now;
		free(o->buf);
		free(o);
	}
}

static void attach_end(int ci)
{
	struct client *cl = &clis[ci];
	int err;

	if (!cl->alive || cl->attached)
		return;
	err = qbd_core_open_done(cl->core, now);
	if (err) {
		trace("c%d: attach failed (%d): retrying with a new client", ci, err);
		cli_crash(ci);
		if (active == ci)
			active = new_client(true);
		return;
	}
	cl->attached = true;
	trace("c%d: attached, epoch %" PRIu64, ci, cl->epoch);
	if (cl->workload)
		ev_push((struct ev){ .t = now + 1, .type = E_WORK, .cli = ci });
}

static void cli_reply(int ci, unsigned r, unsigned gen, struct msg *m)
{
	struct client *cl = &clis[ci];
	struct conn *cn = &cl->conn[r];

	if (!cl->alive || gen != cn->gen) {
		msg_free(m);
		return;
	}
	if (m->type == 0) {
		if (cn->state != C_OPENING) {
			msg_free(m);
			return;
		}
		if (m->status) {
			trace("c%d: r%u refuses OPEN epoch %" PRIu64 ": %s %" PRIu64,
			      ci, r, cl->epoch, m->status == -EIDRM ? "tombstone" : "promised",
			      m->version);
			conn_down(ci, r);
			if (m->status == -EPERM || (m->status == -EIDRM && cl->attached))
				cl->fenced = true;
		} else if (cl->attached || now < cl->attach_deadline) {
			cn->state = C_UP;
			if (qbd_core_replica_open(cl->core, r, m->list, m->nlist, now)) {
				fail("replica_open rejected a valid list");
			}
			trace("c%d: r%u up", ci, r);
		} else {
			conn_down(ci, r);
		}
		msg_free(m);
		return;
	}
	if (cn->state == C_UP) {
		if (m->type == QBD_CM_READ && m->status == 0) {
			uint32_t n = m->flags & QBD_CORE_F_BITMAP ? (m->len / UNIT + 7) / 8 :
				     m->flags & QBD_CORE_F_SPARSE ? m->dlen : m->len;
			void *b = qbd_core_reply_buf(cl->core, r, m->id, n);

			if (b && m->data)
				memcpy(b, m->data, n);
		}
		if (m->type == QBD_CM_PING && m->status == 0 && m->flagged) {
			stat_flag_reports++;
			if (qbd_core_replica_flagged(cl->core, r, m->list, m->nlist, m->flagged, now))
				fail("replica_flagged rejected a valid report");
		}
		if (m->type == QBD_CM_READ)
			qbd_core_read_reply(cl->core, r, m->id, m->status, m->version,
					    m->cflags, now);
		else {
			if (m->type == QBD_CM_PULL)
				qbd_core_pull_copied(cl->core, r, m->id, m->copied, now);
			qbd_core_reply(cl->core, r, m->id, m->status, m->version, now);
		}
	}
	msg_free(m);
}

static void cli_change(int ci);

static void cli_tick(int ci)
{
	struct client *cl = &clis[ci];

	if (!cl->alive)
		return;
	for (unsigned r = 0; r < SLOTS; r++) {
		struct conn *cn = &cl->conn[r];

		if (cl->slot_node[r] < 0)
			continue;
		if (cn->state == C_DOWN && (cl->attached || now < cl->attach_deadline) &&
		    now >= cn->retry_t)
			cli_connect(ci, r);
		else if (cn->state == C_OPENING && now - cn->open_t > 300 * MS)
			conn_down(ci, r);
	}
	if (cl->attached)
		qbd_core_tick(cl->core, now);
	if (cl->attached && membership)
		cli_change(ci);
	ev_push((struct ev){ .t = now + 10 * MS, .type = E_TICK, .cli = ci });
}

/* Node r's connections reset (crash or restart): clients notice. */
static void rep_reset(unsigned r)
{
	for (int ci = 0; ci < MAXCLI; ci++) {
		struct client *cl = &clis[ci];

		for (unsigned sl = 0; sl < SLOTS; sl++) {
			if (!cl->alive || cl->slot_node[sl] != (int)r ||
			    cl->conn[sl].state == C_DOWN)
				continue;
			ev_push((struct ev){ .t = now + rnd_range(1, 20) * MS, .type = E_RESET,
					     .cli = ci, .rep = sl, .gen = cl->conn[sl].gen });
		}
	}
}

static void cli_reset(int ci, unsigned r, unsigned gen)
{
	struct client *cl = &clis[ci];

	if (!cl->alive || cl->conn[r].gen != gen || cl->conn[r].state == C_DOWN)
		return;
	trace("c%d: connection to r%u reset", ci, r);
	if (cl->conn[r].state == C_UP)
		qbd_core_replica_down(cl->core, r, now);
	conn_down(ci, r);
}

static void submit(int ci, enum qbd_core_op kind, uint64_t off, uint32_t len,
		   bool final_read)
{
	struct client *cl = &clis[ci];
	struct op *o = calloc(1, sizeof(*o));

	if (!o)
		abort();
	o->cli = ci;
	o->kind = kind;
	o->off = off;
	o->len = len;
	o->t0 = now;
	o->final_read = final_read;
	if (kind == QBD_CORE_WRITE || kind == QBD_CORE_READ) {
		o->buf = malloc(len);
		if (!o->buf)
			abort();
	} else if (kind == QBD_CORE_BLOCK_STATUS) {
		/* Garbage bits: the core must set every one. */
		o->buf = malloc(len / UNIT / 8 + 1);
		if (!o->buf)
			abort();
		for (uint32_t i = 0; i < len / UNIT / 8 + 1; i++)
			o->buf[i] = (uint8_t)rnd();
	}
	if (kind == QBD_CORE_WRITE || kind == QBD_CORE_ZERO) {
		o->id = new_write(ci, off, len, kind == QBD_CORE_ZERO);
		for (uint64_t u = off / UNIT; kind == QBD_CORE_WRITE && u < (off + len) / UNIT; u++)
			fill_unit(o->buf + (u * UNIT - off), o->id, u);
	}
	stat_ops++;
	cl->inflight++;
	o->next = cl->ops;
	if (cl->ops)
		cl->ops->prev = o;
	cl->ops = o;
	o->fua = (kind == QBD_CORE_WRITE || kind == QBD_CORE_ZERO) && chance(100);
	qbd_core_submit(cl->core, kind, o->fua ? QBD_CORE_F_FUA : 0, off, len,
			o->buf, o, now);
}

static void work(int ci)
{
	struct client *cl = &clis[ci];
	uint64_t units = nunits;

	if (!cl->alive || !cl->workload || final_phase)
		return;
	while (cl->inflight < 4) {
		unsigned k = (unsigned)rnd_range(0, 99);
		uint64_t u = rnd_range(0, units - 1);
		uint32_t n = (uint32_t)rnd_range(1, 3);

		if (u + n > units)
			n = (uint32_t)(units - u);
		if (k < 50)
			submit(ci, QBD_CORE_WRITE, u * UNIT, n * UNIT, false);
		else if (k < 55)
			submit(ci, QBD_CORE_ZERO, u * UNIT, n * UNIT, false);
		else if (k < 87)
			submit(ci, QBD_CORE_READ, u * UNIT, n * UNIT, false);
		else if (k < 92)
			submit(ci, QBD_CORE_BLOCK_STATUS, u * UNIT, n * UNIT, false);
		else
			submit(ci, QBD_CORE_FLUSH, 0, 0, false);
		if (chance(500))
			break;
	}
	ev_push((struct ev){ .t = now + rnd_range(1, 3) * MS, .type = E_WORK, .cli = ci });
}

/* ---- membership ---- */

/* Node r drops the volume (reclaim, or a writer's word after a change
 * removed it): its chunks go, and a tombstone stands where the promise
 * was, so that no writer can open the volume there again (a
 * QBD_SIM_MUTANT_NO_TOMBSTONE build just forgets the promise). */
static void rep_reclaim(unsigned r)
{
	struct rep *rp = &reps[r];

	trace("r%u: reclaims the volume (promised %" PRIu64 ")", r, rp->promised);
	stat_reclaims++;
	memset(rp->ver, 0, C.nchunks * sizeof(uint64_t));
	memset(rp->data, 0, C.nchunks * C.cs);
	memset(rp->corrupt, 0, nunits);
	memset(rp->written, 0, nunits);
	memset(rp->suspect, 0, C.nchunks);
	memset(rp->damaged, 0, C.nchunks);
	rep_flush(rp);
#ifdef QBD_SIM_MUTANT_NO_TOMBSTONE
	rp->promised = 0;
#else
	if (!rp->tomb)
		rp->tomb_epoch = rp->promised;
	rp->tomb = true;
#endif
}

/* Compare-and-swap of the record by writer ci: only from the revision
 * it read or made last, and only while its epoch is the volume's (a
 * QBD_SIM_MUTANT_NO_CFG_CAS build compares neither). */
static bool cfg_cas(int ci, struct ecfg *next)
{
	struct client *cl = &clis[ci];

#ifndef QBD_SIM_MUTANT_NO_CFG_CAS
	if (E.rev != cl->cfg.rev || epoch_counter != cl->epoch) {
		trace("c%d: configuration CAS fails (rev %" PRIu64 " read %" PRIu64
		      ", epoch %" PRIu64 " ours %" PRIu64 ")", ci, E.rev, cl->cfg.rev,
		      epoch_counter, cl->epoch);
		return false;
	}
#endif
	next->rev = E.rev + 1;
	E = *next;
	cl->cfg = E;
	trace("c%d: configuration rev %" PRIu64 ": nodes %u %u %u.., phase %d (slot %u -> r%u)",
	      ci, E.rev, E.node[0], C.R > 1 ? E.node[1] : 0, C.R > 2 ? E.node[2] : 0,
	      E.phase, E.xslot, E.ynode);
	return true;
}

/* Take the change request: the record gets the learner, the core a
 * learner slot. */
static void change_start(int ci)
{
	struct client *cl = &clis[ci];
	struct ecfg next = cl->cfg;
	unsigned y = 0;
	int err;

	next.phase = PH_LEARNER;
	next.xslot = REQ.slot;
	next.ynode = REQ.node;
	if (!cfg_cas(ci, &next))
		return;
	REQ.on = false;
	while (y < SLOTS && cl->slot_node[y] >= 0)
		y++;
	if (y == SLOTS) {
		fail("c%d: no free slot for a learner", ci);
		return;
	}
	err = qbd_core_learner_add(cl->core, y, now);
	if (err) {
		fail("c%d: learner_add(%u): %d", ci, y, err);
		return;
	}
	cl->slot_node[y] = (int)next.ynode;
	cl->yslot = (int)y;
	conn_down(ci, y);
	cl->conn[y].retry_t = now;
}

/* The change is done: S' is the configuration, X's slot is free, and X
 * is told to drop the volume if it can be reached. */
static void change_end(int ci)
{
	struct client *cl = &clis[ci];
	unsigned xs = cl->rslot[cl->cfg.xslot];
	unsigned x = (unsigned)cl->slot_node[xs];
	struct ecfg next = cl->cfg;
	int err;

	next.node[next.xslot] = next.ynode;
	next.phase = PH_NONE;
	if (!cfg_cas(ci, &next))
		return;
	err = qbd_core_leave(cl->core, now);
	if (err) {
		fail("c%d: leave refused after the change was ready: %d", ci, err);
		return;
	}
	cl->rslot[next.xslot] = (unsigned)cl->yslot;
	conn_down(ci, xs);
	cl->slot_node[xs] = -1;
	cl->yslot = -1;
	cl->joint = false;
	stat_changes++;
	if (reps[x].alive && !cl->cut[x])
		rep_reclaim(x);
}

/* The writer carries out a change: learner, joint rule, joint record,
 * then S'. A record CAS that fails leaves the change where it stands (a
 * newer writer took over, and carries it on from the record). */
static void cli_change(int ci)
{
	struct client *cl = &clis[ci];
	struct ecfg next = cl->cfg;
	struct qbd_core_replica_info info;

	if (qbd_core_fenced(cl->core))
		return;
	if (cl->cfg.phase == PH_NONE) {
		if (REQ.on && !final_phase)
			change_start(ci);
		return;
	}
	if (!cl->joint) {
		unsigned y = (unsigned)cl->yslot;

		if (qbd_core_replica_info(cl->core, y, &info) || !info.up || info.stale_chunks ||
		    qbd_core_joint_begin(cl->core, cl->rslot[cl->cfg.xslot], y, now))
			return;
		cl->joint = true;
	}
	if (qbd_core_change_ready(cl->core, now) != 1)
		return;
	if (cl->cfg.phase == PH_LEARNER) {
		/* The leave comes at a later tick: a writer may be cut off
		 * or crash between the two. */
		next.phase = PH_JOINT;
		cfg_cas(ci, &next);
		return;
	}
	change_end(ci);
}

static void rep_down(unsigned r);

/* Membership faults: a change asked for, a node outside the
 * configuration reclaiming the volume, the learner's node or a removed
 * node crashing (each returns later). */
static void member_fault(void)
{
	unsigned k = (unsigned)(rnd3() % 100), r = (unsigned)(rnd3() % C.N);
	bool member = false;

	if (!faults_on)
		return;
	ev_push((struct ev){ .t = now + (100 + rnd3() % 400) * MS, .type = E_MEMBER });
	for (unsigned i = 0; i < C.R; i++)
		member |= E.node[i] == r;
	if (k < 40) {
		if (REQ.on || E.phase != PH_NONE || member)
			return;
		REQ.on = true;
		REQ.slot = (unsigned)(rnd3() % C.R);
		REQ.node = r;
		trace("MEMBER change asked: slot %u (r%u) -> r%u", REQ.slot, E.node[REQ.slot], r);
	} else if (k < 70) {
		if (member || (E.phase != PH_NONE && r == E.ynode) || (REQ.on && r == REQ.node) ||
		    !reps[r].alive)
			return;
		trace("MEMBER r%u is no member", r);
		rep_reclaim(r);
	} else if (k < 85) {
		if (E.phase == PH_NONE || !reps[E.ynode].alive)
			return;
		trace("MEMBER the learner's node r%u crashes", E.ynode);
		rep_down(E.ynode);
	} else if (!member && reps[r].alive) {
		trace("MEMBER r%u, no member, crashes", r);
		rep_down(r);
	}
}

/* ---- faults ---- */

static unsigned bad_replicas(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < C.R; i++) {
		unsigned r = E.node[i];

		n += !reps[r].alive || (active >= 0 && clis[active].cut[r]);
	}
	return n;
}

/* Replica r stops without a clean close (writes since its last flush
 * may be partly lost) and restarts later. */
static void rep_down(unsigned r)
{
	reps[r].alive = false;
	reps[r].incarnation++;
	rep_reset(r);
	if (rep_crash(r))
		loss_update_all();
	ev_push((struct ev){ .t = now + rnd_range(20, 600) * MS, .type = E_HEAL_REP, .rep = r });
}

static void fault(void)
{
	unsigned k = (unsigned)rnd_range(0, 99);
	unsigned r = E.node[rnd_range(0, C.R - 1)];
	unsigned r0 = E.node[0];

	if (!faults_on)
		return;
	stat_faults++;
	ev_push((struct ev){ .t = now + rnd_range(30, 200) * MS, .type = E_FAULT });
	if (k < 25) {
		if (!reps[r].alive || bad_replicas() >= C.R - C.W + (chance(100) ? 1 : 0))
			return;
		trace("FAULT r%u crashes", r);
		rep_down(r);
	} else if (k < 45) {
		if (active < 0 || clis[active].cut[r] ||
		    bad_replicas() >= C.R - C.W + (chance(100) ? 1 : 0))
			return;
		trace("FAULT c%d cut from r%u", active, r);
		clis[active].cut[r] = true;
		ev_push((struct ev){ .t = now + rnd_range(20, 600) * MS, .type = E_HEAL_CUT,
				     .cli = active, .rep = r });
	} else if (k < 55) {
		trace("FAULT r%u slow", r);
		reps[r].slow_until = now + rnd_range(50, 500) * MS;
		reps[r].slow_extra = rnd_range(5, 400) * MS;
	} else if (k < 65) {
		trace("FAULT r%u: next write fails with EIO", r);
		reps[r].eio_next_write = true;
	} else if (k < 78) {
		uint64_t u = rnd_range(0, nunits - 1), ch = u * UNIT / C.cs;
		bool good_copy = false;

		/* Only where another replica has the same version: losing
		 * the last good copy is not something a replica can undo.
		 * Only on the writer's local replica (slot 0), which its
		 * reads prefer, so that the final reads find it. */
		if (active < 0 || clis[active].slot_node[0] != (int)r0)
			return;
		for (unsigned x = 1; x < C.R; x++)
			good_copy |= reps[E.node[x]].ver[ch] == reps[r0].ver[ch] &&
				     !reps[E.node[x]].corrupt[u];
		/* The engine checks written blocks only: a hole reads as
		 * zeros without I/O, so damage there is never seen. */
		if (!reps[r0].ver[ch] || !good_copy || !reps[r0].written[u])
			return;
		trace("FAULT r%u: unit %" PRIu64 " corrupted", r0, u);
		reps[r0].corrupt[u] = 1;
		loss_update(ch);
	} else if (k < 90) {
		int old = active, nw;

		if (active < 0 || !clis[active].attached)
			return;
		if (chance(500)) {
			cli_crash(old);
		} else {
			/* Isolated, still running: it must be fenced. */
			trace("FAULT c%d isolated and replaced", old);
			clis[old].workload = true;
			for (unsigned x = 0; x < C.N; x++) {
				clis[old].cut[x] = true;
				ev_push((struct ev){ .t = now + rnd_range(100, 900) * MS,
						     .type = E_HEAL_CUT, .cli = old, .rep = x });
			}
		}
		nw = new_client(true);
		active = nw;
		if (old >= 0 && clis[old].alive) {
			/* Keep the old one writing: its writes must fail. */
			clis[old].workload = true;
		}
	} else if (k < 95) {
		/* A scrub reads every block of r: a corrupt one flags its
		 * chunk DAMAGED, reported at the next PING. */
		for (uint64_t ch = 0; ch < C.nchunks; ch++)
			if (chunk_corrupt(&reps[r], ch) && !reps[r].damaged[ch]) {
				trace("FAULT r%u: scrub finds chunk %" PRIu64 " damaged", r, ch);
				reps[r].damaged[ch] = 1;
				loss_update(ch);
			}
	} else if (k >= 97) {
		/* A disk full for a while: one replica's, or every one's (equal
		 * disks filling together). */
		uint64_t until = now + (50 + rnd2() % 451) * MS;
		bool all = rnd2() % 3 == 0;

		trace("FAULT %s full until %" PRIu64, all ? "every disk" : "one disk", until);
		stat_full++;
		for (unsigned x = 0; x < C.N; x++)
			if (all || x == r)
				reps[x].full_until = until;
	} else if (k < 97 && power_losses) {
		/* Every zone loses power at once. */
		trace("FAULT power loss: every replica crashes");
		stat_lossy_runs++;
		power_losses = false; /* once per run */
		for (unsigned x = 0; x < C.N; x++)
			if (reps[x].alive)
				rep_down(x);
	}
}

/* ---- run ---- */

/* The link between writer ci and node r healed: the cut broke its
 * connections there (TCP gave up or reset). */
static void cut_reset(int ci, unsigned r)
{
	struct client *cl = &clis[ci];

	for (unsigned sl = 0; sl < SLOTS; sl++)
		if (cl->alive && cl->slot_node[sl] == (int)r && cl->conn[sl].state != C_DOWN)
			ev_push((struct ev){ .t = now + 1, .type = E_RESET, .cli = ci, .rep = sl,
					     .gen = cl->conn[sl].gen });
}

static void dispatch(struct ev *e)
{
	now = e->t;
	switch (e->type) {
	case E_TO_REP:
		if (!reps[e->rep].alive || reps[e->rep].incarnation != e->inc) {
			msg_free(e->m);
			break;
		}
		rep_handle(e->cli, e->rep, e->slot, e->gen, e->m);
		break;
	case E_TO_CLI:
		cli_reply(e->cli, e->slot, e->gen, e->m);
		break;
	case E_TICK:
		cli_tick(e->cli);
		break;
	case E_WORK:
		work(e->cli);
		break;
	case E_FAULT:
		fault();
		break;
	case E_HEAL_REP:
		if (!reps[e->rep].alive) {
			trace("HEAL r%u restarts", e->rep);
			reps[e->rep].alive = true;
		}
		break;
	case E_HEAL_CUT:
		if (clis[e->cli].cut[e->rep]) {
			trace("HEAL c%d <-> r%u", e->cli, e->rep);
			clis[e->cli].cut[e->rep] = false;
			/* The cut broke the connection (TCP gave up or reset). */
			cut_reset(e->cli, e->rep);
		}
		break;
	case E_RESET:
		cli_reset(e->cli, e->rep, e->gen);
		break;
	case E_ATTACH_END:
		attach_end(e->cli);
		break;
	case E_ATTACH_TXN:
		attach_txn(e->cli);
		break;
	case E_MEMBER:
		member_fault();
		break;
	case E_UNSLOW:
		break;
	}
}

static void run_until(uint64_t t)
{
	while (nheap && heap[0].t <= t && !failure[0]) {
		struct ev e = ev_pop();

		dispatch(&e);
	}
	if (now < t)
		now = t;
}

static bool settled(int ci)
{
	struct client *cl = &clis[ci];

	if (!cl->alive || !cl->attached || cl->cfg.phase != PH_NONE || cl->joint)
		return false;
	for (unsigned r = 0; r < SLOTS; r++)
		if (cl->slot_node[r] >= 0 && cl->conn[r].state != C_UP)
			return false;
	return cl->inflight == 0 && qbd_core_messages(cl->core) == 0 &&
	       qbd_core_resync_backlog(cl->core) == 0;
}

static void heal_all(void)
{
	faults_on = false;
	for (unsigned r = 0; r < C.N; r++) {
		reps[r].alive = true;
		reps[r].slow_until = 0;
		reps[r].eio_next_write = false;
	}
	for (int ci = 0; ci < MAXCLI; ci++) {
		if (!clis[ci].alive)
			continue;
		if (ci != active) {
			cli_crash(ci);
			continue;
		}
		for (unsigned r = 0; r < C.N; r++)
			if (clis[ci].cut[r]) {
				clis[ci].cut[r] = false;
				cut_reset(ci, r);
			}
	}
}

/* Wait until the active writer is attached with every replica up and idle. */
static bool settle(uint64_t limit)
{
	uint64_t end = now + limit;

	while (now < end && !failure[0]) {
		if (active < 0 || !clis[active].alive)
			active = new_client(false);
		if (clis[active].fenced && !clis[active].attached)
			active = new_client(false);
		run_until(now + 10 * MS);
		if (active >= 0 && settled(active))
			return true;
	}
	return false;
}

/*
 * A double fault no replica can undo: the only copies of a chunk's latest
 * version all have a corrupt block (silent corruption on one replica while
 * the others lag). The writer then keeps refusing to resync it from a bad
 * copy, which is right; the run ends without comparing replicas.
 */
static uint64_t stat_unrecoverable;

static bool unrecoverable(void)
{
	struct client *cl = &clis[active];

	if (active < 0 || !cl->core)
		return false;
	for (uint64_t ch = 0; ch < C.nchunks; ch++) {
		uint64_t v = qbd_core_chunk_version(cl->core, ch);
		bool stale = false, good = false;

		for (unsigned i = 0; i < C.R; i++) {
			unsigned sl = cl->rslot[i], r = E.node[i];
			bool bad = false;

			stale |= qbd_core_is_stale(cl->core, sl, ch);
			for (uint32_t u = 0; u < C.cs / UNIT; u++)
				bad |= reps[r].corrupt[ch * (C.cs / UNIT) + u];
			good |= reps[r].ver[ch] == v && !bad;
		}
		if (stale && !good)
			return true;
	}
	return false;
}

static void final_checks(void)
{
	struct client *cl;
	uint64_t cs = C.cs;

	final_phase = true;
	heal_all();
	if (!settle(30000 * MS)) {
		if (!failure[0] && unrecoverable()) {
			stat_unrecoverable++;
			trace("a chunk's only current copies are corrupt: not comparable");
			return;
		}
		if (!failure[0])
			fail("no convergence after the faults healed (backlog %" PRIu64 ")",
			     active >= 0 && clis[active].core ?
			     qbd_core_resync_backlog(clis[active].core) : 0);
		return;
	}
	cl = &clis[active];
	/* Read everything twice (the first pass repairs what it finds). */
	for (int pass = 0; pass < 2 && !failure[0]; pass++) {
		for (uint64_t ch = 0; ch < C.nchunks; ch++)
			submit(active, QBD_CORE_READ, ch * cs, (uint32_t)cs, true);
		if (!settle(30000 * MS) && !failure[0])
			fail("final reads did not finish");
	}
	/* Flags found by those reads reach the writer with the next PING. */
	run_until(now + 300 * MS);
	if (!failure[0] && !settle(30000 * MS) && !failure[0])
		fail("no convergence after the final reads");
	if (failure[0])
		return;
	for (uint64_t ch = 0; ch < C.nchunks; ch++) {
		uint64_t v = qbd_core_chunk_version(cl->core, ch);

		for (unsigned i = 0; i < C.R; i++) {
			unsigned r = E.node[i], r0 = E.node[0];

			if (reps[r].ver[ch] != v) {
				fail("chunk %" PRIu64 ": replica %u at version %#" PRIx64 ", writer at %#" PRIx64,
				     ch, r, reps[r].ver[ch], v);
				return;
			}
			if (memcmp(reps[r].data + ch * cs, reps[r0].data + ch * cs, cs)) {
				fail("chunk %" PRIu64 ": replicas %u and %u differ at version %#" PRIx64,
				     ch, r0, r, v);
				return;
			}
			for (uint32_t u = 0; u < cs / UNIT; u++)
				if (reps[r].corrupt[ch * (cs / UNIT) + u]) {
					fail("chunk %" PRIu64 ": replica %u still has a corrupt block", ch, r);
					return;
				}
			if (reps[r].suspect[ch] || reps[r].damaged[ch]) {
				fail("chunk %" PRIu64 ": replica %u still flagged (suspect %u, damaged %u)",
				     ch, r, reps[r].suspect[ch], reps[r].damaged[ch]);
				return;
			}
		}
	}
}

static void world_free(void)
{
	for (int ci = 0; ci < MAXCLI; ci++)
		if (clis[ci].core)
			cli_crash(ci);
	while (nheap) {
		struct ev e = ev_pop();

		msg_free(e.m);
	}
	for (unsigned r = 0; r < MAXN; r++) {
		free(reps[r].ver);
		free(reps[r].data);
		free(reps[r].corrupt);
		free(reps[r].written);
		free(reps[r].dver);
		free(reps[r].ddata);
		free(reps[r].dwritten);
		free(reps[r].dirty);
		free(reps[r].suspect);
		free(reps[r].damaged);
	}
	for (unsigned ch = 0; ch < 64; ch++) {
		free(loss[ch]);
		loss[ch] = NULL;
		nloss[ch] = 0;
	}
	free(undurable);
	undurable = NULL;
	nundurable = capundurable = 0;
	for (uint64_t u = 0; u < nunits; u++)
		free(unit_w[u]);
	free(unit_w);
	free(unit_n);
	free(unit_cap);
	free(writes);
	free(heap);
	heap = NULL;
	writes = NULL;
	nheap = capheap = 0;
	nwrites = capwrites = 0;
}

static bool run_seed(uint64_t seed)
{
	static const unsigned shapes[][2] = { { 3, 2 }, { 3, 2 }, { 3, 2 }, { 5, 3 },
					      { 3, 3 }, { 2, 2 }, { 1, 1 } };
	unsigned s;

	rng_state = seed * 0x2545F4914F6CDD1Dull + 1;
	rng2_state = ~rng_state;
	rng3_state = rng_state ^ 0x5851F42D4C957F2Dull;
	memset(reps, 0, sizeof(reps));
	memset(clis, 0, sizeof(clis));
	nclients = 0;
	failure[0] = 0;
	now = 0;
	epoch_counter = 0;
	evseq = 0;
	stat_ops = stat_acked = stat_faults = 0;
	stat_lossy = stat_lossy_runs = stat_flag_reports = stat_full = stat_nospc = 0;
	stat_changes = stat_reclaims = 0;
	final_phase = false;
	faults_on = true;
	power_losses = chance(100);
	s = (unsigned)rnd_range(0, 6);
	C.R = shapes[s][0];
	C.W = shapes[s][1];
	C.nchunks = rnd_range(2, 6);
	C.cs = (uint32_t)rnd_range(2, 4) * UNIT;
	nunits = C.nchunks * C.cs / UNIT;
	/* Half the seeds change the configuration: a pool of up to two
	 * spare nodes, changes asked for now and then. */
	membership = rnd3() % 2 && C.R < MAXN;
	C.N = membership ? C.R + 1 + (unsigned)(rnd3() % 2) : C.R;
	if (C.N > MAXN)
		C.N = MAXN;
	memset(&E, 0, sizeof(E));
	for (unsigned i = 0; i < C.R; i++)
		E.node[i] = i;
	E.rev = 1;
	memset(&REQ, 0, sizeof(REQ));
	unit_w = calloc(nunits, sizeof(*unit_w));
	unit_n = calloc(nunits, sizeof(*unit_n));
	unit_cap = calloc(nunits, sizeof(*unit_cap));
	if (!unit_w || !unit_n || !unit_cap)
		abort();
	for (unsigned r = 0; r < C.N; r++) {
		reps[r].alive = true;
		reps[r].ver = calloc(C.nchunks, sizeof(uint64_t));
		reps[r].data = calloc(C.nchunks, C.cs);
		reps[r].corrupt = calloc(nunits, 1);
		reps[r].written = calloc(nunits, 1);
		reps[r].dver = calloc(C.nchunks, sizeof(uint64_t));
		reps[r].ddata = calloc(C.nchunks, C.cs);
		reps[r].dwritten = calloc(nunits, 1);
		reps[r].dirty = calloc(C.nchunks, 1);
		reps[r].suspect = calloc(C.nchunks, 1);
		reps[r].damaged = calloc(C.nchunks, 1);
		if (!reps[r].ver || !reps[r].data || !reps[r].corrupt || !reps[r].written ||
		    !reps[r].dver || !reps[r].ddata || !reps[r].dwritten || !reps[r].dirty ||
		    !reps[r].suspect || !reps[r].damaged)
			abort();
	}
	trace("seed %" PRIu64 ": R=%u W=%u chunks=%" PRIu64 " chunk=%u", seed, C.R, C.W,
	      C.nchunks, C.cs);
	active = new_client(true);
	ev_push((struct ev){ .t = rnd_range(20, 100) * MS, .type = E_FAULT });
	if (membership) {
		total_member_seeds++;
		ev_push((struct ev){ .t = (50 + rnd3() % 300) * MS, .type = E_MEMBER });
	}
	run_until(rnd_range(1000, 3000) * MS);
	if (!failure[0])
		final_checks();
	if (verbose)
		printf("seed %" PRIu64 ": %" PRIu64 " ops, %" PRIu64 " writes acked, %" PRIu64 " faults, %" PRIu64 " epochs\n",
		       seed, stat_ops, stat_acked, stat_faults, epoch_counter);
	total_lossy_seeds += stat_lossy > 0;
	total_power_losses += stat_lossy_runs;
	total_flag_reports += stat_flag_reports > 0;
	total_full_seeds += stat_full > 0;
	total_nospc += stat_nospc;
	total_changes += stat_changes;
	world_free();
	return failure[0] == 0;
}

int main(int argc, char **argv)
{
	uint64_t first = 1, nseeds = 1000, failed = 0, first_failed = 0;
	bool expect_fail = false;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
			nseeds = strtoull(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--first") && i + 1 < argc) {
			first = strtoull(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			first = strtoull(argv[++i], NULL, 10);
			nseeds = 1;
		} else if (!strcmp(argv[i], "-v")) {
			verbose = true;
		} else if (!strcmp(argv[i], "--expect-fail")) {
			expect_fail = true;
		} else {
			fprintf(stderr, "usage: %s [--seeds N] [--first S] [--seed S] [-v] [--expect-fail]\n",
				argv[0]);
			return 2;
		}
	}
	for (uint64_t seed = first; seed < first + nseeds; seed++) {
		if (run_seed(seed))
			continue;
		if (!failed++)
			first_failed = seed;
		printf("seed %" PRIu64 ": FAIL %s\n", seed, failure);
		if (expect_fail)
			break;
		if (failed >= 10)
			break;
	}
	if (expect_fail) {
		if (failed) {
			printf("sim: seed %" PRIu64 " caught the broken mechanism (as expected)\n",
			       first_failed);
			return 0;
		}
		printf("sim: %" PRIu64 " seeds passed, but this build has a mechanism broken on purpose: FAIL\n",
		       nseeds);
		return 1;
	}
	printf("sim: %" PRIu64 " seeds from %" PRIu64 ": %" PRIu64 " failed (%" PRIu64
	       " ended with a chunk whose only current copies were corrupt)\n",
	       nseeds, first, failed, stat_unrecoverable);
	printf("sim: %" PRIu64 " seeds had W copies of a chunk flagged at once (%" PRIu64
	       " power losses): only durable writes had to survive there; %" PRIu64
	       " seeds had flagged chunks reported by PING\n",
	       total_lossy_seeds, total_power_losses, total_flag_reports);
	printf("sim: %" PRIu64 " seeds had full disks; %" PRIu64 " requests failed with ENOSPC\n",
	       total_full_seeds, total_nospc);
	printf("sim: %" PRIu64 " seeds changed their configuration; %" PRIu64
	       " changes completed\n", total_member_seeds, total_changes);
	if (failed)
		printf("sim: replay with: qbd-sim --seed %" PRIu64 " -v\n", first_failed);
	return failed ? 1 : 0;
}
