/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd engine: chunks of many volumes in one file or block device, I/O
 * through io_uring with O_DIRECT, XXH3-64 per 4 KiB block verified on every
 * read. Layout and rules: docs/design.md, "Engine". This file opens and
 * closes the store, answers the queries of engine.h, and is the request
 * entry point: it validates a request, routes it to its queue, finishes
 * it (eng_req_done) and moves it on when a step's I/O completes.
 *
 * Where the rest is (engine/internal.h has a section per file):
 * format.c the on-disk format, recover.c the crash recovery at open,
 * chunk.c the chunk table and each chunk's FIFO, read.c the read path,
 * write.c the write path, al.c the activity log, commit.c the metadata
 * group commit, promise.c promises, tombstones and volume deletion, ring.c the
 * io_uring ring and the buffer pool, blockio.c blocking I/O.
 *
 * Ordering: each chunk has a FIFO. A WRITE/ZERO runs alone; READs run
 * together with other READs; so writes land in arrival order and a read
 * sees exactly the writes submitted before it. The version check happens
 * when a write leaves the FIFO; the chunk's in-memory metadata and
 * version change once its data I/O has completed (a write that fails
 * changes nothing). Chunks run concurrently. PROMISE, TOMBSTONE and
 * DELETE_VOLUME share one FIFO and run one at a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

/* $QBD_ENGINE_FAULT_EIO=LO[-HI]: a disk failing the data I/O of chunks
 * LO..HI of every volume, for the fault-injection tests (tests/fault).
 * Said loudly: a store that fails on purpose must not go unnoticed. */
static void fault_setup(struct qbd_engine *e)
{
	const char *s = getenv("QBD_ENGINE_FAULT_EIO");
	unsigned long long lo, hi;
	int n;

	if (!s || !*s)
		return;
	if (sscanf(s, "%llu-%llu%n", &lo, &hi, &n) == 2 && !s[n] && lo <= hi) {
		/* LO-HI */
	} else if (sscanf(s, "%llu%n", &lo, &n) == 1 && !s[n]) {
		hi = lo;
	} else {
		qbd_err("engine", "QBD_ENGINE_FAULT_EIO='%s' is not LO[-HI]: ignored", s);
		return;
	}
	e->fault_eio = true;
	e->fault_lo = lo;
	e->fault_hi = hi;
	qbd_warn("engine", "fault injection: data I/O of chunks %llu-%llu of every volume fails with EIO",
		 lo, hi);
}

/* Free everything but the ring (set up last in open, torn down first in
 * close). */
static void eng_free(struct qbd_engine *e)
{
	if (e->efd >= 0)
		close(e->efd);
	if (e->fd >= 0)
		close(e->fd);
	for (unsigned h = 0; h < ENG_HASH; h++)
		while (e->hash[h]) {
			struct eng_chunk *c = e->hash[h];
			e->hash[h] = c->hnext;
			free(c->meta);
			free(c);
		}
	free(e->free_map);
	free(e->by_slot);
	free(e->promises);
	free(e->al_buf);
	free(e->al_io);
	free(e->al_dirty);
	free(e->mw_bufs);
	if (e->bufs)
		munmap(e->bufs, e->bufs_len);
	free(e->buf_free);
	free(e);
}

/* Open the store (creating a file of opts->create_size if it does not
 * exist): its size in *size, *created if this open made it. */
static int open_file(struct qbd_engine *e, const struct qbd_engine_opts *opts,
		     uint64_t *size, bool *created)
{
	struct stat st;

	e->fd = open(opts->path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (e->fd == -1 && errno == ENOENT && opts->create_size) {
		e->fd = open(opts->path, O_RDWR | O_DIRECT | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
		if (e->fd != -1 && ftruncate(e->fd, (off_t)opts->create_size) == -1)
			return -errno;
		*created = e->fd != -1;
	}
	if (e->fd == -1) {
		int r = -errno;

		qbd_err("engine", "open %s: %m", opts->path);
		return r;
	}
	if (fstat(e->fd, &st) == -1)
		return -errno;
	*size = (uint64_t)st.st_size;
	e->blockdev = S_ISBLK(st.st_mode);
	if (e->blockdev && ioctl(e->fd, BLKGETSIZE64, size) == -1)
		return -errno;
	return 0;
}

/* The in-memory tables sized by the superblock: slot maps and the
 * activity log's copy. */
static int open_tables(struct qbd_engine *e)
{
	e->free_map = calloc(e->sb.nslots, 1);
	e->by_slot = calloc(e->sb.nslots, sizeof *e->by_slot);
	e->al_dirty = calloc(e->sb.al_blocks, sizeof *e->al_dirty);
	if (!e->free_map || !e->by_slot || !e->al_dirty ||
	    posix_memalign((void **)&e->al_buf, B, e->sb.al_blocks * B))
		return -ENOMEM;
	memset(e->al_buf, 0, e->sb.al_blocks * B);
	return 0;
}

/* Load the tables, recover from a crash, and count the written blocks
 * (after the recovery, which may turn blocks into holes). */
static int open_load(struct qbd_engine *e)
{
	int r = eng_load(e);

	if (r == 0)
		r = eng_recover(e);
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < e->sb.nslots; i++)
		if (e->by_slot[i])
			e->held_blocks += eng_meta_held_blocks(e->by_slot[i]->meta);
	return 0;
}

int qbd_engine_open(const struct qbd_engine_opts *opts, struct qbd_engine **out)
{
	struct qbd_engine *e;
	uint64_t size = 0;
	uint32_t cs = opts->chunk_size ? opts->chunk_size : QBD_ENGINE_DEFAULT_CHUNK;
	unsigned qd = opts->queue_depth ? opts->queue_depth : 256;
	bool created = false;
	int r;

	*out = NULL;
	if (cs % B || cs / B > ENG_BLOCKS_MAX || cs == 0)
		return -EINVAL;
	e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->fd = e->efd = -1;
	e->io_hook = opts->io_hook;
	e->io_hook_user = opts->io_hook_user;
	fault_setup(e);
	e->al_target = opts->al_chunks ? opts->al_chunks : ENG_AL_TARGET;
	r = open_file(e, opts, &size, &created);
	if (r == 0 && posix_memalign((void **)&e->promises, B, ENG_PROMISE_BYTES))
		r = -ENOMEM;
	if (r == 0 && posix_memalign((void **)&e->al_io, B, B))
		r = -ENOMEM;
	if (r == 0)
		r = eng_commit_init(e);
	if (r == 0)
		r = eng_super_open(e, opts->path, size, cs, opts->chunk_size, created);
	if (r == 0)
		r = open_tables(e);
	if (r == 0)
		r = open_load(e);
	if (r == 0)
		r = eng_bufs_init(e, opts->buffers,
				  opts->buffer_size ? opts->buffer_size : e->sb.chunk_size);
	if (r == 0)
		r = eng_ring_init(e, qd);
	if (r < 0) {
		eng_free(e);
		return r;
	}
	qbd_info("engine", "%s: %llu of %llu chunk slots used", opts->path,
		 (unsigned long long)e->used_slots, (unsigned long long)e->sb.nslots);
	*out = e;
	return 0;
}

void qbd_engine_close(struct qbd_engine *e)
{
	int r;

	if (!e)
		return;
	/* Let the engine's own log writes finish (nothing else is running). */
	while (!e->busy) {
		struct io_uring_cqe *cqe;

		qbd_engine_poll(e);
		if (!e->al_busy && !e->round_busy && !e->inflight)
			break;
		if (io_uring_wait_cqe(&e->ring, &cqe) < 0)
			break;
	}
	/* The ring's teardown is asynchronous: drop its references to the
	 * store and the buffers now, so that the file is closed (and its
	 * filesystem can be unmounted) when this returns. */
	if (e->fixed_file)
		io_uring_unregister_files(&e->ring);
	if (e->bufs_registered)
		io_uring_unregister_buffers(&e->ring);
	io_uring_queue_exit(&e->ring);
	if (e->busy) {
		qbd_warn("engine", "closing with %u requests in flight: the next open "
			 "recovers", e->busy);
	} else if ((r = eng_commit_close(e)) < 0) {
		qbd_err("engine", "close: %s (the next open recovers)", strerror(-r));
	}
	eng_free(e);
}

unsigned qbd_engine_busy(const struct qbd_engine *e) { return e->busy; }
int qbd_engine_event_fd(const struct qbd_engine *e) { return e->efd; }
uint64_t qbd_engine_node_id(const struct qbd_engine *e) { return e->sb.node_id; }
uint64_t qbd_engine_cluster_id(const struct qbd_engine *e) { return e->sb.cluster_id; }

int qbd_engine_set_cluster_id(struct qbd_engine *e, uint64_t cluster_id)
{
	if (e->sb.cluster_id == cluster_id)
		return 0;
	if (e->sb.cluster_id != 0)
		return -EEXIST;
	e->sb.cluster_id = cluster_id;
	return eng_write_super(e);
}

void qbd_engine_stats(const struct qbd_engine *e, struct qbd_engine_stats *st)
{
	st->chunk_size = e->sb.chunk_size;
	st->capacity = e->sb.nslots * e->sb.chunk_size;
	st->used = e->used_slots * e->sb.chunk_size;
	st->chunks = e->used_slots;
	st->slots = e->sb.nslots;
	st->free_slots = e->sb.nslots - e->used_slots;
	st->held = e->held_blocks * B;
	st->data_reads = e->n_data_reads;
	st->data_read_bytes = e->n_data_read_bytes;
	st->data_writes = e->n_data_writes;
	st->data_write_bytes = e->n_data_write_bytes;
	st->meta_writes = e->n_meta_writes;
	st->zeroings = e->n_zeroings;
	st->syncs = e->n_syncs;
}

void qbd_engine_volume_usage(const struct qbd_engine *e, uint64_t volume,
			     uint64_t *chunks, uint64_t *held)
{
	*chunks = *held = 0;
	for (unsigned h = 0; h < ENG_HASH; h++)
		for (const struct eng_chunk *c = e->hash[h]; c; c = c->hnext)
			if (c->volume == volume) {
				(*chunks)++;
				*held += eng_meta_held_blocks(c->meta) * B;
			}
}

/* The entry of volume in the sorted vols[0..*n), inserted (zeroed) if
 * absent; NULL when out of memory. */
static struct qbd_engine_volume *volumes_entry(struct qbd_engine_volume **vols, size_t *n,
					       size_t *cap, uint64_t volume)
{
	size_t lo = 0, hi = *n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if ((*vols)[mid].volume == volume)
			return &(*vols)[mid];
		if ((*vols)[mid].volume < volume)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		struct qbd_engine_volume *nv = realloc(*vols, nc * sizeof *nv);

		if (!nv)
			return NULL;
		*vols = nv;
		*cap = nc;
	}
	memmove(&(*vols)[lo + 1], &(*vols)[lo], (*n - lo) * sizeof **vols);
	memset(&(*vols)[lo], 0, sizeof **vols);
	(*vols)[lo].volume = volume;
	(*n)++;
	return &(*vols)[lo];
}

int qbd_engine_volumes(const struct qbd_engine *e, struct qbd_engine_volume **out,
		       size_t *n)
{
	struct qbd_engine_volume *vols = NULL, *v = NULL;
	size_t cnt = 0, cap = 0;

	*out = NULL;
	*n = 0;
	for (unsigned i = 0; i < ENG_PROMISE_ENTRIES; i++) {
		if (e->promises[i].volume == 0)
			continue;
		if (!(v = volumes_entry(&vols, &cnt, &cap, e->promises[i].volume)))
			goto nomem;
		if (e->promises[i].flags & ENG_PROMISE_TOMBSTONE) {
			v->tombstone = true;
			v->tombstone_epoch = e->promises[i].epoch;
		} else {
			v->promised = e->promises[i].epoch;
		}
	}
	for (unsigned h = 0; h < ENG_HASH; h++)
		for (const struct eng_chunk *c = e->hash[h]; c; c = c->hnext) {
			/* chunks of one volume often come in a row */
			if ((!v || v->volume != c->volume) &&
			    !(v = volumes_entry(&vols, &cnt, &cap, c->volume)))
				goto nomem;
			v->chunks++;
			v->held += eng_meta_held_blocks(c->meta) * B;
		}
	*out = vols;
	*n = cnt;
	return 0;
nomem:
	free(vols);
	return -ENOMEM;
}

bool qbd_engine_next_chunk(const struct qbd_engine *e, uint64_t *slot,
			   uint64_t *volume, uint64_t *chunk)
{
	for (uint64_t i = *slot; i < e->sb.nslots; i++) {
		const struct eng_chunk *c = e->by_slot[i];

		if (!c || c->meta->magic != ENG_MAGIC_META)
			continue;
		*slot = i;
		*volume = c->volume;
		*chunk = c->chunk;
		return true;
	}
	return false;
}

uint64_t qbd_engine_promised(const struct qbd_engine *e, uint64_t volume)
{
	for (unsigned i = 0; i < ENG_PROMISE_ENTRIES; i++)
		if (e->promises[i].volume == volume && volume != 0)
			return e->promises[i].flags & ENG_PROMISE_TOMBSTONE ? 0
									    : e->promises[i].epoch;
	return 0;
}

uint64_t qbd_engine_chunk_version(const struct qbd_engine *e, uint64_t volume,
				  uint64_t chunk)
{
	struct eng_chunk *c = eng_chunk_find(e, volume, chunk);
	return c ? c->version : 0;
}

uint32_t qbd_engine_chunk_flags(const struct qbd_engine *e, uint64_t volume,
				uint64_t chunk)
{
	struct eng_chunk *c = eng_chunk_find(e, volume, chunk);
	return c ? c->flags : 0;
}

int qbd_engine_for_each_chunk(const struct qbd_engine *e, uint64_t volume,
	int (*fn)(void *user, uint64_t chunk, uint64_t version, uint32_t flags), void *user)
{
	for (unsigned h = 0; h < ENG_HASH; h++)
		for (struct eng_chunk *c = e->hash[h]; c; c = c->hnext)
			if (c->volume == volume) {
				int r = fn(user, c->chunk, c->version, c->flags);
				if (r)
					return r;
			}
	return 0;
}

unsigned qbd_engine_flagged_chunks(const struct qbd_engine *e, uint64_t volume,
	uint64_t *chunks, uint32_t *flags, unsigned max)
{
	unsigned n = 0;

	/* most recently flagged first */
	for (struct qbd_qlink *l = e->flagged.tail; l; l = l->prev) {
		const struct eng_chunk *c = QBD_QUEUE_ENTRY(l, struct eng_chunk, flagged_link);

		if (c->volume != volume)
			continue;
		if (n < max) {
			chunks[n] = c->chunk;
			flags[n] = c->flags;
		}
		n++;
	}
	return n;
}

void eng_req_done(struct qbd_engine *e, struct qbd_engine_req *r, int res)
{
	struct eng_priv *p = priv(r);
	bool prom = p->holds_prom;

	if (!p->borrowed)
		free(p->bounce);
	p->bounce = NULL;
	free(p->meta_copy);
	p->meta_copy = NULL;
	p->holds_prom = false;
	r->res = res;
	reqq_push(&e->done, r);
	eng_wake(e);
	if (p->ch)
		eng_req_release_chunk(e, r);
	if (prom) {
		e->prom_busy = false;
		eng_promise_run(e);
	}
}

static bool aligned_req(const struct qbd_engine_req *r)
{
	return r->offset % B == 0 && r->length % B == 0 && (uintptr_t)r->buf % B == 0;
}

int eng_bounce_get(struct eng_priv *p, struct qbd_engine_req *r)
{
	if (r->op != QBD_ENGINE_ZERO && aligned_req(r)) {
		p->bounce = r->buf;
		p->borrowed = true;
		return 0;
	}
	return posix_memalign((void **)&p->bounce, B, (size_t)p->nb * B) ? -ENOMEM : 0;
}

/* A READ, WRITE, ZERO or BITMAP outside its chunk, without a buffer,
 * or a RESYNC that is not a whole-chunk WRITE (logged). */
static bool submit_invalid(const struct qbd_engine *e, const struct qbd_engine_req *r)
{
	if (r->length == 0 || r->offset >= e->sb.chunk_size ||
	    r->length > e->sb.chunk_size - r->offset ||
	    (r->op != QBD_ENGINE_ZERO && !r->buf) ||
	    (r->op == QBD_ENGINE_BITMAP && (r->offset % B || r->length % B))) {
		qbd_warn("engine", "invalid request: op %d offset %u length %u",
			 (int)r->op, r->offset, r->length);
		return true;
	}
	if (r->op != QBD_ENGINE_READ && r->op != QBD_ENGINE_BITMAP &&
	    (r->flags & QBD_ENGINE_F_RESYNC) &&
	    (r->op != QBD_ENGINE_WRITE || (r->flags & QBD_ENGINE_F_REPAIR) ||
	     r->offset != 0 || r->length != e->sb.chunk_size ||
	     (r->new_version == 0 && !all_zero(r->buf, r->length)))) {
		qbd_warn("engine", "invalid RESYNC: op %d flags %#x offset %u length %u "
			 "new version %llu (need a whole-chunk WRITE; version 0 only with zeros)",
			 (int)r->op, r->flags, r->offset, r->length,
			 (unsigned long long)r->new_version);
		return true;
	}
	return false;
}

/* A request of one chunk (its blocks in p->b0, p->nb) joins the
 * chunk's FIFO. A chunk never written is read without I/O, and is at
 * version 0 already: the idempotent case of every write kind to version
 * 0, acknowledged without a slot (the writer zeroes never-written chunks
 * this way, so that they stay unallocated). Another write allocates it. */
static void submit_chunk(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_chunk *c = eng_chunk_find(e, r->volume, r->chunk);
	int err;

	if (!c && req_reads(r)) {
		eng_read_start(e, r);
		return;
	}
	if (!c && r->new_version == 0) {
		r->version = 0;
		eng_req_done(e, r, (int)r->length);
		return;
	}
	if (!c) {
		/* Add the entry now so that later requests of this chunk
		 * queue behind this one; eng_chunk_run_next frees it again if
		 * the first write fails. */
		err = eng_chunk_alloc(e, r->volume, r->chunk, &c);
		if (err) {
			r->version = 0; /* not held: the version the writer learns */
			eng_req_done(e, r, err);
			return;
		}
	}
	eng_chunk_enqueue(e, c, r);
}

/* Validate a request and send it to its queue. */
static void submit_one(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);

	memset(p, 0, sizeof *p);
	e->busy++;
	switch (r->op) {
	case QBD_ENGINE_READ:
	case QBD_ENGINE_WRITE:
	case QBD_ENGINE_ZERO:
	case QBD_ENGINE_BITMAP:
		if (submit_invalid(e, r)) {
			eng_req_done(e, r, -EINVAL);
			return;
		}
		p->b0 = r->offset / B;
		p->nb = (r->offset + r->length + B - 1) / B - p->b0;
		submit_chunk(e, r);
		return;
	case QBD_ENGINE_SCRUB:
		/* A whole-chunk request whatever offset and length say. */
		p->b0 = 0;
		p->nb = e->sb.chunk_size / B;
		submit_chunk(e, r);
		return;
	case QBD_ENGINE_FLUSH:
		eng_flush_enqueue(e, r);
		return;
	case QBD_ENGINE_PROMISE:
	case QBD_ENGINE_TOMBSTONE:
	case QBD_ENGINE_DELETE_VOLUME:
		if (r->volume == 0) { /* 0 marks a free promise entry */
			qbd_warn("engine", "invalid request: op %d for volume 0", (int)r->op);
			eng_req_done(e, r, -EINVAL);
			return;
		}
		reqq_push(&e->prom, r);
		eng_promise_run(e);
		return;
	default:
		qbd_warn("engine", "invalid request: unknown op %d", (int)r->op);
		eng_req_done(e, r, -EINVAL);
	}
}

void qbd_engine_submit(struct qbd_engine *e, struct qbd_engine_req *r)
{
	submit_one(e, r);
	/* Inside qbd_engine_poll (a callback submitting more), poll submits
	 * everything once at the end; plugged, qbd_engine_unplug does;
	 * otherwise nothing else would. */
	if (!e->in_poll && !e->plugged)
		eng_ring_submit(e);
}

/* The step's SQEs are all complete (ring.c has reported them and
 * counted the sync): the engine's own writes go back to the activity log
 * and the group commit; a request's error fails it (a data write first
 * zeroes the holes it may have written); otherwise its path moves on. */
void eng_step_done(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);

	if (r == &e->al_req) {
		eng_al_done(e, p->err < 0 ? p->err : p->got != B ? -EIO : 0);
		return;
	}
	if (p->step == ST_WRITE_META) {
		eng_mw_done(e, r, p->err < 0 ? p->err : p->got != B ? -EIO : 0);
		return;
	}
	if (r == &e->sync_req) {
		eng_round_done(e, p->err);
		return;
	}
	if (p->err < 0) {
		qbd_err("engine", "I/O error (step %d, volume %016llx chunk %llu): %s",
			p->step, (unsigned long long)r->volume,
			(unsigned long long)r->chunk, strerror(-p->err));
		if (p->step == ST_WRITE_DATA || p->step == ST_RESERVE) {
			eng_undo_start(e, r, p->err);
			return;
		}
		eng_req_done(e, r, p->step == ST_UNDO_ZERO ? p->undo_err : p->err);
		return;
	}
	if (p->got != eng_step_bytes(p)) {
		qbd_err("engine", "short transfer (step %d, volume %016llx chunk %llu): "
			"%u of %u bytes", p->step, (unsigned long long)r->volume,
			(unsigned long long)r->chunk, p->got, eng_step_bytes(p));
		/* A file takes a short write only when its filesystem is
		 * full (the rest would fail with ENOSPC). */
		if (p->step == ST_WRITE_DATA) {
			eng_undo_start(e, r, e->blockdev ? -EIO : -ENOSPC);
			return;
		}
		eng_req_done(e, r, -EIO);
		return;
	}
	switch (p->step) {
	case ST_READ_DATA:
	case ST_SCRUB_READ:
		eng_read_step_done(e, r);
		return;
	case ST_PROMISE_WRITE:
		eng_step_go(e, r, ST_FSYNC);
		return;
	case ST_FSYNC:
		eng_req_done(e, r, 0);
		return;
	default:
		eng_write_step_done(e, r);
		return;
	}
}
