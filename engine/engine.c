/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd engine: chunks of many volumes in one file or block device, I/O
 * through io_uring with O_DIRECT, XXH3-64 per 4 KiB block verified on every
 * read. Layout and rules: docs/design.md, "Engine".
 *
 * Ordering: each chunk has a FIFO. A WRITE/ZERO runs alone; READs run
 * together with other READs; so writes land in arrival order, a read sees
 * exactly the writes submitted before it, and the chunk's metadata block
 * is never written twice at once. The version check happens when a write
 * leaves the FIFO; the chunk's in-memory metadata and version change only
 * once its metadata block is on disk. Chunks run concurrently. PROMISE and
 * DELETE_VOLUME share one FIFO and run one at a time.
 *
 * A RESYNC WRITE covers the whole chunk: it skips the version check (only
 * the idempotent-retry test remains), turns all-zero blocks into holes and
 * writes the data blocks in runs, at most two runs per step, before the
 * metadata block.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

enum step {
	ST_READ_DATA = 1,   /* READ: data read in flight */
	ST_RMW_READ,        /* WRITE/ZERO: partial blocks being read */
	ST_WRITE_DATA,      /* data write in flight */
	ST_WRITE_META,      /* meta block write in flight */
	ST_FSYNC,           /* FUA / FLUSH / PROMISE sync */
	ST_PROMISE_WRITE,
};


/* true if len bytes at p are all zero */
static bool all_zero(const void *p, size_t len)
{
	const uint8_t *b = p;

	return len == 0 || (b[0] == 0 && memcmp(b, b + 1, len - 1) == 0);
}
static struct eng_priv *priv(struct qbd_engine_req *r)
{
	return (struct eng_priv *)r->priv;
}

static uint64_t meta_checksum(const struct eng_meta *m)
{
	struct eng_meta tmp;

	memcpy(&tmp, m, sizeof tmp);
	tmp.checksum = 0;
	return XXH3_64bits(&tmp, sizeof tmp);
}

static uint64_t super_checksum(const struct eng_super *s)
{
	struct eng_super tmp = *s;

	tmp.checksum = 0;
	return XXH3_64bits(&tmp, sizeof tmp);
}

static inline bool bit_test(const uint64_t *m, unsigned i)
{
	return (m[i / 64] >> (i % 64)) & 1;
}

static inline void bit_set(uint64_t *m, unsigned i, bool on)
{
	if (on)
		m[i / 64] |= 1ull << (i % 64);
	else
		m[i / 64] &= ~(1ull << (i % 64));
}

static unsigned hash_of(uint64_t volume, uint64_t chunk)
{
	uint64_t h = volume * 0x9e3779b97f4a7c15ull ^ (chunk + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull;
	return (unsigned)(h >> 48) % ENG_HASH;
}

static struct eng_chunk *chunk_find(const struct qbd_engine *e, uint64_t volume,
				    uint64_t chunk)
{
	for (struct eng_chunk *c = e->hash[hash_of(volume, chunk)]; c; c = c->hnext)
		if (c->volume == volume && c->chunk == chunk)
			return c;
	return NULL;
}

static struct eng_chunk *chunk_add(struct qbd_engine *e, uint64_t volume,
				   uint64_t chunk, uint64_t slot)
{
	struct eng_chunk *c = calloc(1, sizeof *c);
	unsigned h = hash_of(volume, chunk);

	if (!c)
		return NULL;
	if (posix_memalign((void **)&c->meta, B, B)) {
		free(c);
		return NULL;
	}
	memset(c->meta, 0, B);
	c->volume = volume;
	c->chunk = chunk;
	c->slot = slot;
	c->hnext = e->hash[h];
	e->hash[h] = c;
	return c;
}

/* Set a chunk's flags, keeping the list of flagged chunks. */
static void chunk_set_flags(struct qbd_engine *e, struct eng_chunk *c, uint32_t flags)
{
	if (!c->flags && flags) {
		c->fprev = NULL;
		c->fnext = e->flagged;
		if (e->flagged)
			e->flagged->fprev = c;
		e->flagged = c;
	} else if (c->flags && !flags) {
		if (c->fprev)
			c->fprev->fnext = c->fnext;
		else
			e->flagged = c->fnext;
		if (c->fnext)
			c->fnext->fprev = c->fprev;
		c->fprev = c->fnext = NULL;
	}
	c->flags = flags;
}

static void chunk_remove(struct qbd_engine *e, struct eng_chunk *c)
{
	struct eng_chunk **pp = &e->hash[hash_of(c->volume, c->chunk)];

	chunk_set_flags(e, c, 0);
	while (*pp != c)
		pp = &(*pp)->hnext;
	*pp = c->hnext;
	e->free_map[c->slot] = 0;
	e->used_slots--;
	free(c->meta);
	free(c);
}

static uint64_t meta_pos(const struct qbd_engine *e, uint64_t slot)
{
	return e->sb.meta_off + slot * B;
}

static uint64_t data_pos(const struct qbd_engine *e, uint64_t slot)
{
	return e->sb.data_off + slot * (uint64_t)e->sb.chunk_size;
}

/* ---- open / close ---- */

static int eng_write_super(struct qbd_engine *e)
{
	uint8_t *blk;
	int r;

	if (posix_memalign((void **)&blk, B, B))
		return -ENOMEM;
	memset(blk, 0, B);
	e->sb.checksum = super_checksum(&e->sb);
	memcpy(blk, &e->sb, sizeof e->sb);
	r = qbd_pwrite_full(e->fd, blk, B, 0);
	if (r == 0 && fdatasync(e->fd) == -1)
		r = -errno;
	free(blk);
	return r;
}

static int eng_format(struct qbd_engine *e, uint64_t size, uint32_t chunk_size)
{
	uint64_t per = chunk_size + (uint64_t)B;
	uint64_t nslots;
	uint8_t *zero;
	int r = 0;

	if (size < ENG_META_OFF + 2 * per)
		return -ENOSPC;
	nslots = (size - ENG_META_OFF - chunk_size) / per;
	memset(&e->sb, 0, sizeof e->sb);
	e->sb.magic = ENG_MAGIC_SB;
	e->sb.format = ENG_FORMAT;
	e->sb.chunk_size = chunk_size;
	e->sb.node_id = qbd_random_u64();
	e->sb.nslots = nslots;
	e->sb.meta_off = ENG_META_OFF;
	e->sb.data_off = QBD_ALIGN_UP(ENG_META_OFF + nslots * B, (uint64_t)chunk_size);
	if (e->sb.data_off + nslots * chunk_size > size)
		e->sb.nslots = nslots = (size - e->sb.data_off) / chunk_size;
	/* Clear the promise table and the metadata table. */
	if (posix_memalign((void **)&zero, B, 1 << 20))
		return -ENOMEM;
	memset(zero, 0, 1 << 20);
	for (uint64_t off = ENG_PROMISE_OFF; off < e->sb.data_off && r == 0; off += 1 << 20)
		r = qbd_pwrite_full(e->fd, zero, QBD_MIN((uint64_t)1 << 20, e->sb.data_off - off), (off_t)off);
	free(zero);
	if (r == 0)
		r = eng_write_super(e);
	if (r == 0)
		qbd_info("engine", "formatted: %llu chunk slots of %u bytes, node %016llx",
			 (unsigned long long)nslots, chunk_size,
			 (unsigned long long)e->sb.node_id);
	return r;
}

static int eng_load(struct qbd_engine *e)
{
	uint64_t bytes = e->sb.nslots * B;
	uint8_t *tab;
	int r;

	r = qbd_pread_full(e->fd, e->promises, ENG_PROMISE_BYTES, ENG_PROMISE_OFF);
	if (r < 0)
		return r;
	if (posix_memalign((void **)&tab, B, 1 << 20))
		return -ENOMEM;
	for (uint64_t done = 0; done < bytes; done += 1 << 20) {
		uint64_t n = QBD_MIN((uint64_t)1 << 20, bytes - done);

		r = qbd_pread_full(e->fd, tab, n, (off_t)(e->sb.meta_off + done));
		if (r < 0)
			break;
		for (uint64_t i = 0; i < n / B; i++) {
			const struct eng_meta *m = (const void *)(tab + i * B);
			uint64_t slot = done / B + i;
			struct eng_chunk *c;

			if (m->magic != ENG_MAGIC_META)
				continue;
			if (meta_checksum(m) != m->checksum) {
				qbd_err("engine", "slot %llu: metadata checksum mismatch; "
					"chunk %llu of volume %016llx ignored",
					(unsigned long long)slot, (unsigned long long)m->chunk,
					(unsigned long long)m->volume);
				continue;
			}
			c = chunk_add(e, m->volume, m->chunk, slot);
			if (!c) {
				r = -ENOMEM;
				break;
			}
			memcpy(c->meta, m, B);
			c->version = m->version;
			e->free_map[slot] = 1;
			e->used_slots++;
		}
		if (r < 0)
			break;
	}
	free(tab);
	return r;
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
	free(e->promises);
	free(e);
}

int qbd_engine_open(const struct qbd_engine_opts *opts, struct qbd_engine **out)
{
	struct qbd_engine *e;
	struct stat st;
	uint64_t size;
	uint32_t cs = opts->chunk_size ? opts->chunk_size : QBD_ENGINE_DEFAULT_CHUNK;
	unsigned qd = opts->queue_depth ? opts->queue_depth : 256;
	uint8_t *blk = NULL;
	int r;

	*out = NULL;
	if (cs % B || cs / B > ENG_BLOCKS_MAX || cs == 0)
		return -EINVAL;
	e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->fd = e->efd = -1;
	e->fd = open(opts->path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (e->fd == -1 && errno == ENOENT && opts->create_size) {
		e->fd = open(opts->path, O_RDWR | O_DIRECT | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
		if (e->fd != -1 && ftruncate(e->fd, (off_t)opts->create_size) == -1) {
			r = -errno;
			goto fail;
		}
	}
	if (e->fd == -1) {
		r = -errno;
		qbd_err("engine", "open %s: %m", opts->path);
		goto fail;
	}
	if (fstat(e->fd, &st) == -1) {
		r = -errno;
		goto fail;
	}
	size = (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode) && ioctl(e->fd, BLKGETSIZE64, &size) == -1) {
		r = -errno;
		goto fail;
	}
	if (posix_memalign((void **)&blk, B, B) ||
	    posix_memalign((void **)&e->promises, B, ENG_PROMISE_BYTES)) {
		r = -ENOMEM;
		goto fail;
	}
	r = size >= B ? qbd_pread_full(e->fd, blk, B, 0) : -ENOSPC;
	if (r < 0)
		goto fail;
	memcpy(&e->sb, blk, sizeof e->sb);
	if (e->sb.magic != ENG_MAGIC_SB) {
		for (unsigned i = 0; i < B; i++)
			if (blk[i]) {
				qbd_err("engine", "%s holds data that is not a qbd store; "
					"refusing to format it", opts->path);
				r = -EEXIST;
				goto fail;
			}
		r = eng_format(e, size, cs);
		if (r < 0)
			goto fail;
	} else if (super_checksum(&e->sb) != e->sb.checksum ||
		   e->sb.format != ENG_FORMAT) {
		qbd_err("engine", "%s: bad superblock (checksum or format)", opts->path);
		r = -EUCLEAN;
		goto fail;
	} else if (opts->chunk_size && opts->chunk_size != e->sb.chunk_size) {
		qbd_err("engine", "%s: chunk size %u, asked for %u", opts->path,
			e->sb.chunk_size, opts->chunk_size);
		r = -EINVAL;
		goto fail;
	}
	e->free_map = calloc(e->sb.nslots, 1);
	if (!e->free_map) {
		r = -ENOMEM;
		goto fail;
	}
	r = eng_load(e);
	if (r < 0)
		goto fail;
	r = io_uring_queue_init(qd, &e->ring, 0);
	if (r < 0) {
		qbd_err("engine", "io_uring_queue_init: %s", strerror(-r));
		goto fail;
	}
	e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (e->efd == -1 || io_uring_register_eventfd(&e->ring, e->efd) < 0) {
		r = e->efd == -1 ? -errno : -EIO;
		io_uring_queue_exit(&e->ring);
		goto fail;
	}
	free(blk);
	qbd_info("engine", "%s: %llu of %llu chunk slots used", opts->path,
		 (unsigned long long)e->used_slots, (unsigned long long)e->sb.nslots);
	*out = e;
	return 0;
fail:
	free(blk);
	eng_free(e);
	return r;
}

void qbd_engine_close(struct qbd_engine *e)
{
	if (!e)
		return;
	if (e->busy)
		qbd_warn("engine", "closing with %u requests in flight", e->busy);
	io_uring_queue_exit(&e->ring);
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
}

uint64_t qbd_engine_promised(const struct qbd_engine *e, uint64_t volume)
{
	for (unsigned i = 0; i < ENG_PROMISE_ENTRIES; i++)
		if (e->promises[i].volume == volume && volume != 0)
			return e->promises[i].epoch;
	return 0;
}

uint64_t qbd_engine_chunk_version(const struct qbd_engine *e, uint64_t volume,
				  uint64_t chunk)
{
	struct eng_chunk *c = chunk_find(e, volume, chunk);
	return c ? c->version : 0;
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

	for (const struct eng_chunk *c = e->flagged; c; c = c->fnext) {
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

/* ---- request machinery ---- */

static void eng_wake(struct qbd_engine *e)
{
	uint64_t one = 1;

	if (write(e->efd, &one, sizeof one) == -1 && errno != EAGAIN)
		qbd_warn("engine", "eventfd: %m");
}

static void ring_submit(struct qbd_engine *e)
{
	int r;

	if (!e->pending_sqes)
		return;
	r = io_uring_submit(&e->ring);
	if (r < 0)
		qbd_warn("engine", "io_uring_submit: %s", strerror(-r));
	e->pending_sqes = 0;
}

static void chunk_run_next(struct qbd_engine *e, struct eng_chunk *c);
static void promise_run(struct qbd_engine *e);

/* Finish a request: queue its callback for qbd_engine_poll, then start
 * what was waiting for it. */
static void req_done(struct qbd_engine *e, struct qbd_engine_req *r, int res)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	bool prom = p->holds_prom;

	if (!p->borrowed)
		free(p->bounce);
	p->bounce = NULL;
	free(p->meta_copy);
	p->meta_copy = NULL;
	p->ch = NULL;
	p->holds_prom = false;
	r->res = res;
	p->next = NULL;
	if (e->done_tail)
		priv(e->done_tail)->next = r;
	else
		e->done_head = r;
	e->done_tail = r;
	eng_wake(e);
	if (c) {
		if (r->op == QBD_ENGINE_READ || r->op == QBD_ENGINE_BITMAP)
			c->reading--;
		else
			c->writing = false;
		chunk_run_next(e, c); /* may free c */
	}
	if (prom) {
		e->prom_busy = false;
		promise_run(e);
	}
}

static void req_park(struct qbd_engine *e, struct qbd_engine_req *r)
{
	priv(r)->next = NULL;
	if (e->retry_tail)
		priv(e->retry_tail)->next = r;
	else
		e->retry_head = r;
	e->retry_tail = r;
}

/* Issue the SQEs of the request's current step (all or none); with too
 * few free SQEs, park the request until the next qbd_engine_poll. */
static void step_issue(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	bool data = p->step == ST_READ_DATA || p->step == ST_RMW_READ ||
		    p->step == ST_WRITE_DATA;
	unsigned n = data ? p->n_ext : 1;

	/* More SQEs in flight than the CQ holds would overflow it, and
	 * overflowed CQEs raise no eventfd wake-up later: wait instead. */
	if (e->inflight + n > e->ring.cq.ring_entries) {
		req_park(e, r);
		return;
	}
	if (io_uring_sq_space_left(&e->ring) < n)
		ring_submit(e);
	if (io_uring_sq_space_left(&e->ring) < n) {
		req_park(e, r);
		return;
	}
	e->inflight += n;
	p->pending = n;
	p->got = 0;
	p->err = 0;
	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);
		uint8_t *buf = data ? p->bounce + (size_t)(p->ext_b[i] - p->b0) * B : NULL;
		uint64_t off = data ? data_pos(e, p->ch->slot) + (uint64_t)p->ext_b[i] * B : 0;

		switch (p->step) {
		case ST_READ_DATA:
		case ST_RMW_READ:
			io_uring_prep_read(sqe, e->fd, buf, p->ext_n[i] * B, off);
			break;
		case ST_WRITE_DATA:
			io_uring_prep_write(sqe, e->fd, buf, p->ext_n[i] * B, off);
			break;
		case ST_WRITE_META:
			io_uring_prep_write(sqe, e->fd, p->meta_copy, B, meta_pos(e, p->ch->slot));
			break;
		case ST_FSYNC:
			io_uring_prep_fsync(sqe, e->fd, IORING_FSYNC_DATASYNC);
			break;
		case ST_PROMISE_WRITE:
			/* bounce holds block b0 of the promise table */
			io_uring_prep_write(sqe, e->fd, p->bounce, B,
					    ENG_PROMISE_OFF + (uint64_t)p->b0 * B);
			break;
		}
		io_uring_sqe_set_data(sqe, r);
		e->pending_sqes++;
	}
}

static void step_go(struct qbd_engine *e, struct qbd_engine_req *r, int step)
{
	priv(r)->step = step;
	step_issue(e, r);
}

/* Bytes the current step must transfer. */
static uint32_t step_bytes(const struct eng_priv *p)
{
	uint32_t n = 0;

	switch (p->step) {
	case ST_READ_DATA:
	case ST_RMW_READ:
	case ST_WRITE_DATA:
		for (unsigned i = 0; i < p->n_ext; i++)
			n += p->ext_n[i] * B;
		return n;
	case ST_FSYNC:
		return 0;
	default:
		return B;
	}
}

/* Verify the checksum of every written block of the extents in bounce.
 * A block that fails is recorded as bad and the chunk flagged DAMAGED. */
static int verify_blocks(struct qbd_engine *e, struct eng_chunk *c,
			 const struct eng_priv *p)
{
	int r = 0;

	for (unsigned x = 0; x < p->n_ext; x++)
		for (unsigned b = p->ext_b[x]; b < p->ext_b[x] + p->ext_n[x]; b++) {
			const uint8_t *blk = p->bounce + (size_t)(b - p->b0) * B;

			if (!bit_test(c->meta->written, b))
				continue;
			if (XXH3_64bits(blk, B) != c->meta->block_csum[b]) {
				qbd_err("engine", "checksum mismatch: volume %016llx chunk %llu "
					"block %u (slot %llu)", (unsigned long long)c->volume,
					(unsigned long long)c->chunk, b,
					(unsigned long long)c->slot);
				bit_set(c->bad, b, true);
				chunk_set_flags(e, c, c->flags | QBD_ENGINE_CHUNK_DAMAGED);
				r = -EBADMSG;
			}
		}
	return r;
}

static bool in_ext(const struct eng_priv *p, unsigned b)
{
	for (unsigned x = 0; x < p->n_ext; x++)
		if (b >= p->ext_b[x] && b < p->ext_b[x] + p->ext_n[x])
			return true;
	return false;
}

static bool block_is_zero(const uint8_t *b)
{
	return b[0] == 0 && memcmp(b, b + 1, B - 1) == 0;
}

/* RESYNC (b0 is 0): write the next one or two runs of data blocks of the
 * new meta block from cursor on, or the meta block once none is left. */
static void resync_next(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	const uint64_t *w = p->meta_copy->written;

	p->n_ext = 0;
	while (p->n_ext < 2 && p->cursor < p->nb) {
		uint32_t b = p->cursor, n = 0;

		while (b < p->nb && !bit_test(w, b))
			b++;
		while (b + n < p->nb && bit_test(w, b + n))
			n++;
		p->cursor = b + n;
		if (n) {
			p->ext_b[p->n_ext] = b;
			p->ext_n[p->n_ext++] = n;
		}
	}
	step_go(e, r, p->n_ext ? ST_WRITE_DATA : ST_WRITE_META);
}

/* WRITE/ZERO after any read-modify-write read (whose blocks are the
 * extents): merge, build the new meta block, write data then meta. The
 * chunk's in-memory meta and version change only when the meta block is
 * on disk. */
static void write_apply(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	struct eng_meta *m;
	uint32_t rel = r->offset - p->b0 * B;
	bool resync = r->flags & QBD_ENGINE_F_RESYNC;

	if (!p->borrowed && p->bounce) {
		for (unsigned i = 0; i < p->nb; i++)
			if (!in_ext(p, p->b0 + i))
				memset(p->bounce + (size_t)i * B, 0, B);
		if (r->op == QBD_ENGINE_WRITE)
			memcpy(p->bounce + rel, r->buf, r->length);
		else
			memset(p->bounce + rel, 0, r->length);
	}
	if (posix_memalign((void **)&p->meta_copy, B, B)) {
		req_done(e, r, -ENOMEM);
		return;
	}
	m = p->meta_copy;
	memcpy(m, c->meta, B);
	for (unsigned i = 0; i < p->nb; i++) {
		unsigned b = p->b0 + i;

		/* ZERO keeps data only in partial blocks that had data (the
		 * extents read for the merge); everything else reads as
		 * zeros through the bitmap. */
		if (r->op == QBD_ENGINE_ZERO && !in_ext(p, b)) {
			bit_set(m->written, b, false);
			m->block_csum[b] = 0;
			continue;
		}
		/* RESYNC leaves all-zero blocks as holes. */
		if (resync && block_is_zero(p->bounce + (size_t)i * B)) {
			bit_set(m->written, b, false);
			m->block_csum[b] = 0;
			continue;
		}
		bit_set(m->written, b, true);
		m->block_csum[b] = XXH3_64bits(p->bounce + (size_t)i * B, B);
	}
	m->magic = ENG_MAGIC_META;
	m->volume = c->volume;
	m->chunk = c->chunk;
	m->version = r->new_version;
	m->checksum = meta_checksum(m);
	if (resync) {
		p->cursor = 0;
		resync_next(e, r);
		return;
	}
	if (r->op == QBD_ENGINE_WRITE) {
		p->n_ext = 1;
		p->ext_b[0] = p->b0;
		p->ext_n[0] = p->nb;
	}
	step_go(e, r, p->n_ext ? ST_WRITE_DATA : ST_WRITE_META);
}

/* Take a free slot for a new chunk. 0, -ENOSPC or -ENOMEM. */
static int chunk_alloc(struct qbd_engine *e, uint64_t volume, uint64_t chunk,
		       struct eng_chunk **out)
{
	for (uint64_t i = 0; i < e->sb.nslots; i++) {
		if (e->free_map[i])
			continue;
		*out = chunk_add(e, volume, chunk, i);
		if (!*out)
			return -ENOMEM;
		e->free_map[i] = 1;
		e->used_slots++;
		return 0;
	}
	qbd_warn("engine", "no free chunk slot for volume %016llx chunk %llu",
		 (unsigned long long)volume, (unsigned long long)chunk);
	return -ENOSPC;
}

static bool aligned_req(const struct qbd_engine_req *r)
{
	return r->offset % B == 0 && r->length % B == 0 && (uintptr_t)r->buf % B == 0;
}

static int bounce_get(struct eng_priv *p, struct qbd_engine_req *r)
{
	if (r->op != QBD_ENGINE_ZERO && aligned_req(r)) {
		p->bounce = r->buf;
		p->borrowed = true;
		return 0;
	}
	return posix_memalign((void **)&p->bounce, B, (size_t)p->nb * B) ? -ENOMEM : 0;
}

static void read_start(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	bool any = false;

	r->version = c ? c->version : 0;
	if (r->op == QBD_ENGINE_BITMAP) {
		uint8_t *bm = r->buf;

		memset(bm, 0, (p->nb + 7) / 8);
		for (unsigned i = 0; c && i < p->nb; i++)
			if (bit_test(c->meta->written, p->b0 + i))
				bm[i / 8] |= (uint8_t)(1u << (i % 8));
		req_done(e, r, 0);
		return;
	}
	for (unsigned i = 0; c && i < p->nb; i++)
		any |= bit_test(c->meta->written, p->b0 + i);
	if (!any) {
		memset(r->buf, 0, r->length);
		req_done(e, r, (int)r->length);
		return;
	}
	if (bounce_get(p, r) < 0) {
		req_done(e, r, -ENOMEM);
		return;
	}
	p->n_ext = 1;
	p->ext_b[0] = p->b0;
	p->ext_n[0] = p->nb;
	step_go(e, r, ST_READ_DATA);
}

/* A WRITE/ZERO taken from its chunk's FIFO: check versions, then read
 * partial edge blocks that hold data, or go straight to write_apply. */
static void write_start(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	uint64_t ver = c->version;
	unsigned last = p->b0 + p->nb - 1;

	r->version = ver;
	if (r->flags & QBD_ENGINE_F_RESYNC) {
		if (ver == r->new_version) {
			req_done(e, r, (int)r->length); /* an idempotent retry */
			return;
		}
	} else if (r->flags & QBD_ENGINE_F_REPAIR) {
		if (ver != r->expected_version || ver != r->new_version) {
			req_done(e, r, -ESTALE);
			return;
		}
	} else if (ver == r->new_version) {
		req_done(e, r, (int)r->length); /* an idempotent retry */
		return;
	} else if (ver != r->expected_version) {
		req_done(e, r, -ESTALE);
		return;
	}
	p->n_ext = 0;
	if (r->offset % B && bit_test(c->meta->written, p->b0)) {
		p->ext_b[p->n_ext] = p->b0;
		p->ext_n[p->n_ext++] = 1;
	}
	if ((r->offset + r->length) % B && bit_test(c->meta->written, last) &&
	    !(p->n_ext && last == p->b0)) {
		p->ext_b[p->n_ext] = last;
		p->ext_n[p->n_ext++] = 1;
	}
	/* A ZERO needs a buffer only for partial blocks that hold data. */
	if ((r->op == QBD_ENGINE_WRITE || p->n_ext) && bounce_get(p, r) < 0) {
		req_done(e, r, -ENOMEM);
		return;
	}
	if (p->n_ext) {
		step_go(e, r, ST_RMW_READ);
		return;
	}
	write_apply(e, r);
}

/* Start what can run from the head of the chunk's FIFO: any number of
 * READs, or one WRITE/ZERO alone. Frees a chunk that ends up idle and
 * never written (a first write that failed). */
static void chunk_run_next(struct qbd_engine *e, struct eng_chunk *c)
{
	struct qbd_engine_req *r;

	if (c->in_run)
		return;
	c->in_run = true;
	while ((r = c->q_head)) {
		bool rd = r->op == QBD_ENGINE_READ || r->op == QBD_ENGINE_BITMAP;

		if (c->writing || (!rd && c->reading))
			break;
		c->q_head = priv(r)->next;
		if (!c->q_head)
			c->q_tail = NULL;
		if (rd)
			c->reading++;
		else
			c->writing = true;
		priv(r)->ch = c;
		if (rd)
			read_start(e, r);
		else
			write_start(e, r);
	}
	c->in_run = false;
	if (c->meta->magic == 0 && !c->reading && !c->writing && !c->q_head)
		chunk_remove(e, c);
}

/* Delete a volume: synchronous writes of zeroed metadata blocks. An
 * administrative operation, rare; it blocks the loop for a moment. */
static int delete_volume(struct qbd_engine *e, uint64_t volume)
{
	uint8_t *zero;
	int r = 0;

	if (posix_memalign((void **)&zero, B, B))
		return -ENOMEM;
	memset(zero, 0, B);
	for (unsigned h = 0; h < ENG_HASH; h++) {
		struct eng_chunk *c = e->hash[h];
		while (c) {
			struct eng_chunk *next = c->hnext;
			if (c->volume == volume) {
				if (c->reading || c->writing || c->q_head) {
					r = -EBUSY;
				} else {
					int w = qbd_pwrite_full(e->fd, zero, B,
								(off_t)meta_pos(e, c->slot));
					if (w < 0)
						r = w;
					else
						chunk_remove(e, c);
				}
			}
			c = next;
		}
	}
	for (unsigned i = 0; i < ENG_PROMISE_ENTRIES; i++)
		if (e->promises[i].volume == volume) {
			unsigned blk = i / (B / sizeof(struct eng_promise));
			memset(&e->promises[i], 0, sizeof e->promises[i]);
			memcpy(zero, (uint8_t *)e->promises + (size_t)blk * B, B);
			int w = qbd_pwrite_full(e->fd, zero, B, (off_t)(ENG_PROMISE_OFF + (uint64_t)blk * B));
			if (w < 0)
				r = w;
		}
	if (fdatasync(e->fd) == -1 && r == 0)
		r = -errno;
	free(zero);
	if (r < 0)
		qbd_err("engine", "delete volume %016llx: %s", (unsigned long long)volume,
			strerror(-r));
	return r;
}

/* Start one PROMISE: done at once if already promised, else raise it in
 * memory and write the table block holding its entry. */
static void promise_start(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	int free_i = -1, idx = -1;
	unsigned blk;

	for (unsigned i = 0; i < ENG_PROMISE_ENTRIES; i++) {
		if (e->promises[i].volume == r->volume) {
			idx = (int)i;
			break;
		}
		if (free_i < 0 && e->promises[i].volume == 0)
			free_i = (int)i;
	}
	if (idx >= 0 && e->promises[idx].epoch >= r->epoch) {
		r->version = e->promises[idx].epoch;
		req_done(e, r, 0);
		return;
	}
	if (idx < 0)
		idx = free_i;
	if (idx < 0) {
		qbd_err("engine", "promise table full (%llu volumes)",
			(unsigned long long)ENG_PROMISE_ENTRIES);
		req_done(e, r, -ENOSPC);
		return;
	}
	blk = (unsigned)idx / (B / sizeof(struct eng_promise));
	if (posix_memalign((void **)&p->bounce, B, B)) {
		req_done(e, r, -ENOMEM);
		return;
	}
	e->promises[idx].volume = r->volume;
	e->promises[idx].epoch = r->epoch;
	r->version = r->epoch;
	memcpy(p->bounce, (uint8_t *)e->promises + (size_t)blk * B, B);
	p->b0 = blk;
	p->holds_prom = true;
	e->prom_busy = true;
	step_go(e, r, ST_PROMISE_WRITE);
}

/* PROMISE and DELETE_VOLUME run one at a time in submission order, so two
 * writes of one promise-table block never race. */
static void promise_run(struct qbd_engine *e)
{
	struct qbd_engine_req *r;

	while (!e->prom_busy && (r = e->prom_head)) {
		e->prom_head = priv(r)->next;
		if (!e->prom_head)
			e->prom_tail = NULL;
		if (r->op == QBD_ENGINE_PROMISE)
			promise_start(e, r);
		else
			req_done(e, r, delete_volume(e, r->volume));
	}
}

static void submit_one(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c;
	int err;

	memset(p, 0, sizeof *p);
	e->busy++;
	switch (r->op) {
	case QBD_ENGINE_READ:
	case QBD_ENGINE_WRITE:
	case QBD_ENGINE_ZERO:
	case QBD_ENGINE_BITMAP:
		if (r->length == 0 || r->offset >= e->sb.chunk_size ||
		    r->length > e->sb.chunk_size - r->offset ||
		    (r->op != QBD_ENGINE_ZERO && !r->buf) ||
		    (r->op == QBD_ENGINE_BITMAP && (r->offset % B || r->length % B))) {
			qbd_warn("engine", "invalid request: op %d offset %u length %u",
				 (int)r->op, r->offset, r->length);
			req_done(e, r, -EINVAL);
			return;
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
			req_done(e, r, -EINVAL);
			return;
		}
		p->b0 = r->offset / B;
		p->nb = (r->offset + r->length + B - 1) / B - p->b0;
		c = chunk_find(e, r->volume, r->chunk);
		if (!c && (r->op == QBD_ENGINE_READ || r->op == QBD_ENGINE_BITMAP)) {
			read_start(e, r);
			return;
		}
		if (!c && r->new_version == 0) {
			/* A chunk never written is at version 0 already: the
			 * idempotent case of every write kind, acknowledged
			 * without a slot (the writer zeroes never-written
			 * chunks this way, so that they stay unallocated). */
			r->version = 0;
			req_done(e, r, (int)r->length);
			return;
		}
		if (!c) {
			/* Add the entry now so that later requests of this chunk
			 * queue behind this one; chunk_run_next frees it again if
			 * the first write fails. */
			err = chunk_alloc(e, r->volume, r->chunk, &c);
			if (err) {
				req_done(e, r, err);
				return;
			}
		}
		p->next = NULL;
		if (c->q_tail)
			priv(c->q_tail)->next = r;
		else
			c->q_head = r;
		c->q_tail = r;
		chunk_run_next(e, c);
		return;
	case QBD_ENGINE_FLUSH:
		step_go(e, r, ST_FSYNC);
		return;
	case QBD_ENGINE_PROMISE:
	case QBD_ENGINE_DELETE_VOLUME:
		if (r->volume == 0) { /* 0 marks a free promise entry */
			qbd_warn("engine", "invalid request: op %d for volume 0", (int)r->op);
			req_done(e, r, -EINVAL);
			return;
		}
		p->next = NULL;
		if (e->prom_tail)
			priv(e->prom_tail)->next = r;
		else
			e->prom_head = r;
		e->prom_tail = r;
		promise_run(e);
		return;
	default:
		qbd_warn("engine", "invalid request: unknown op %d", (int)r->op);
		req_done(e, r, -EINVAL);
	}
}

void qbd_engine_submit(struct qbd_engine *e, struct qbd_engine_req *r)
{
	submit_one(e, r);
	/* Outside qbd_engine_poll nothing else would submit the SQEs. */
	ring_submit(e);
}

/* A WRITE/ZERO is on disk: the blocks it covered whole hold fresh data and
 * checksums (it could not have covered a bad block in part: the merge
 * read would have failed). A RESYNC replaced the whole chunk. */
static void write_clear_flags(struct qbd_engine *e, struct eng_chunk *c,
			      struct qbd_engine_req *r)
{
	const struct eng_priv *p = priv(r);
	bool any = false;

	if (r->flags & QBD_ENGINE_F_RESYNC) {
		memset(c->bad, 0, sizeof c->bad);
		chunk_set_flags(e, c, 0);
		return;
	}
	if (!(c->flags & QBD_ENGINE_CHUNK_DAMAGED))
		return;
	for (unsigned i = 0; i < p->nb; i++)
		bit_set(c->bad, p->b0 + i, false);
	for (unsigned i = 0; i < ENG_BLOCKS_MAX / 64; i++)
		any |= c->bad[i] != 0;
	if (!any)
		chunk_set_flags(e, c, c->flags & ~QBD_ENGINE_CHUNK_DAMAGED);
}

/* The step's SQEs are all complete: move the request on. */
static void step_done(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	int v;

	if (p->err < 0) {
		qbd_err("engine", "I/O error (step %d, volume %016llx chunk %llu): %s",
			p->step, (unsigned long long)r->volume,
			(unsigned long long)r->chunk, strerror(-p->err));
		req_done(e, r, p->err);
		return;
	}
	if (p->got != step_bytes(p)) {
		qbd_err("engine", "short transfer (step %d, volume %016llx chunk %llu): "
			"%u of %u bytes", p->step, (unsigned long long)r->volume,
			(unsigned long long)r->chunk, p->got, step_bytes(p));
		req_done(e, r, -EIO);
		return;
	}
	switch (p->step) {
	case ST_READ_DATA:
		v = verify_blocks(e, c, p);
		if (v < 0) {
			req_done(e, r, v);
			return;
		}
		for (unsigned i = 0; i < p->nb; i++)
			if (!bit_test(c->meta->written, p->b0 + i))
				memset(p->bounce + (size_t)i * B, 0, B);
		if (!p->borrowed)
			memcpy(r->buf, p->bounce + (r->offset - p->b0 * B), r->length);
		req_done(e, r, (int)r->length);
		return;
	case ST_RMW_READ:
		v = verify_blocks(e, c, p);
		if (v < 0) {
			req_done(e, r, v);
			return;
		}
		write_apply(e, r);
		return;
	case ST_WRITE_DATA:
		if (r->flags & QBD_ENGINE_F_RESYNC)
			resync_next(e, r);
		else
			step_go(e, r, ST_WRITE_META);
		return;
	case ST_WRITE_META:
		memcpy(c->meta, p->meta_copy, B);
		c->version = r->new_version;
		r->version = c->version;
		write_clear_flags(e, c, r);
		if (r->flags & QBD_ENGINE_F_FUA) {
			step_go(e, r, ST_FSYNC);
			return;
		}
		req_done(e, r, (int)r->length);
		return;
	case ST_PROMISE_WRITE:
		step_go(e, r, ST_FSYNC);
		return;
	case ST_FSYNC:
		req_done(e, r, (r->op == QBD_ENGINE_WRITE || r->op == QBD_ENGINE_ZERO)
				       ? (int)r->length : 0);
		return;
	}
}

static void cqe_handle(struct qbd_engine *e, struct qbd_engine_req *r, int res)
{
	struct eng_priv *p = priv(r);

	if (res < 0) {
		if (!p->err)
			p->err = res;
	} else {
		p->got += (uint32_t)res;
	}
	if (--p->pending == 0)
		step_done(e, r);
}

void qbd_engine_poll(struct qbd_engine *e)
{
	struct io_uring_cqe *cqe;
	uint64_t x;

	if (read(e->efd, &x, sizeof x) == -1 && errno != EAGAIN)
		qbd_warn("engine", "eventfd read: %m");
	for (int round = 0; round < 64; round++) {
		struct qbd_engine_req *rq, *d;
		unsigned head, n = 0;

		io_uring_for_each_cqe(&e->ring, head, cqe) {
			struct qbd_engine_req *r = io_uring_cqe_get_data(cqe);
			int res = cqe->res;

			n++;
			e->inflight--;
			io_uring_cqe_seen(&e->ring, cqe); /* free the slot first */
			cqe_handle(e, r, res);
		}
		/* Parked requests get another chance at SQEs. */
		rq = e->retry_head;
		e->retry_head = e->retry_tail = NULL;
		while (rq) {
			struct qbd_engine_req *next = priv(rq)->next;
			step_issue(e, rq);
			rq = next;
		}
		ring_submit(e);
		/* Callbacks last: they may submit more. */
		d = e->done_head;
		e->done_head = e->done_tail = NULL;
		while (d) {
			struct qbd_engine_req *next = priv(d)->next;
			e->busy--;
			d->cb(d);
			d = next;
		}
		ring_submit(e);
		if (n == 0 && !e->done_head)
			break;
	}
}
