/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd engine: chunks of many volumes in one file or block device, I/O
 * through io_uring with O_DIRECT, XXH3-64 per 4 KiB block verified on every
 * read. Layout and rules: docs/design.md, "Engine".
 *
 * Ordering: each chunk has a FIFO. A WRITE/ZERO runs alone; READs run
 * together with other READs; so writes land in arrival order and a read
 * sees exactly the writes submitted before it. The version check happens
 * when a write leaves the FIFO; the chunk's in-memory metadata and
 * version change once its data I/O has completed (a write that fails
 * changes nothing). Chunks run concurrently. PROMISE and DELETE_VOLUME
 * share one FIFO and run one at a time.
 *
 * Metadata blocks are not written with each write: a chunk whose
 * metadata changed is dirty, and the group commit (FLUSH, FUA) writes the
 * block of every dirty chunk from a snapshot, then syncs. The activity
 * log names every chunk with writes that are not durable, so the
 * recovery after a crash finds what the blocks on disk hold (docs/
 * design.md, "Metadata in memory"). One round at a time, so a chunk's
 * metadata block is never written twice at once.
 *
 * A RESYNC WRITE covers the whole chunk: it skips the version check (only
 * the idempotent-retry test remains), turns all-zero blocks into holes and
 * writes the data blocks in runs, at most two runs per step.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
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
	ST_WRITE_META,      /* a group commit's meta block write (struct eng_mw) */
	ST_FSYNC,           /* PROMISE sync; the group commit's (e->sync_req) */
	ST_PROMISE_WRITE,
	ST_ZERO_DATA,       /* ZERO/RESYNC: blocks becoming holes being zeroed */
	ST_SLOT_ZERO,       /* first write into a slot with old data: zero it */
	ST_SLOT_SYNC,       /* ... and make that durable */
	ST_AL_WAIT,         /* WRITE/ZERO waiting for its chunk's log write */
	ST_AL_WRITE,        /* the engine's log write (e->al_req) */
	ST_SCRUB_READ,      /* SCRUB: the chunk's written blocks being read */
	ST_UNDO_ZERO,       /* a data write failed: its hole blocks being zeroed */
	ST_RESERVE,         /* holes of a data write being allocated first */
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

static uint64_t al_checksum(const struct eng_al *a)
{
	struct eng_al tmp;

	memcpy(&tmp, a, sizeof tmp);
	tmp.checksum = 0;
	return XXH3_64bits(&tmp, sizeof tmp);
}

/* ---- I/O reporting (qbd_engine_opts.io_hook) and blocking I/O ---- */

static void hook(struct qbd_engine *e, enum qbd_engine_io_kind kind, bool done, int res,
		 uint64_t id, uint64_t off, uint64_t len, const void *buf, bool dsync)
{
	struct qbd_engine_io io = { .kind = kind, .done = done, .res = res, .id = id,
				    .offset = off, .length = len, .buf = buf, .dsync = dsync };

	e->io_hook(e->io_hook_user, &io);
}

/* Mode of fallocate that makes a range read as zeros: a hole in a file,
 * zeroed blocks on a device. */
static int zero_mode(const struct qbd_engine *e)
{
	return e->blockdev ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
			   : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
}

static int eng_pwrite(struct qbd_engine *e, const void *buf, size_t len, uint64_t off)
{
	uint64_t id = ++e->io_seq;
	int r;

	if (e->io_hook)
		hook(e, QBD_ENGINE_IO_WRITE, false, 0, id, off, len, buf, false);
	r = qbd_pwrite_full(e->fd, buf, len, (off_t)off);
	if (e->io_hook)
		hook(e, QBD_ENGINE_IO_WRITE, true, r, id, off, len, NULL, false);
	return r;
}

static int eng_zero(struct qbd_engine *e, uint64_t off, uint64_t len)
{
	uint64_t id = ++e->io_seq;
	int r;

	if (e->io_hook)
		hook(e, QBD_ENGINE_IO_ZERO, false, 0, id, off, len, NULL, false);
	r = fallocate(e->fd, zero_mode(e), (off_t)off, (off_t)len) == -1 ? -errno : 0;
	if (e->io_hook)
		hook(e, QBD_ENGINE_IO_ZERO, true, r, id, off, len, NULL, false);
	return r;
}

static int eng_sync(struct qbd_engine *e)
{
	uint64_t id = ++e->io_seq;
	int r;

	if (e->io_hook)
		hook(e, QBD_ENGINE_IO_SYNC, false, 0, id, 0, 0, NULL, false);
	r = fdatasync(e->fd) == -1 ? -errno : 0;
	if (e->io_hook)
		hook(e, QBD_ENGINE_IO_SYNC, true, r, id, 0, 0, NULL, false);
	return r;
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

/* Written blocks of a chunk (space accounting). */
static uint64_t meta_held_blocks(const struct eng_meta *m)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < ENG_BLOCKS_MAX / 64; i++)
		n += (uint64_t)__builtin_popcountll(m->written[i]);
	return n;
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
	e->by_slot[slot] = c;
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

/* The activity log bit of a slot, in memory (written by al_kick). */
static bool al_bit_test(const struct qbd_engine *e, uint64_t slot)
{
	const struct eng_al *a = (const void *)(e->al_buf + (slot / ENG_AL_SLOTS) * B);

	return bit_test(a->bits, (unsigned)(slot % ENG_AL_SLOTS));
}

static void al_bit(struct qbd_engine *e, uint64_t slot, bool on)
{
	struct eng_al *a = (void *)(e->al_buf + (slot / ENG_AL_SLOTS) * B);
	unsigned i = (unsigned)(slot % ENG_AL_SLOTS);

	if (bit_test(a->bits, i) == on)
		return;
	bit_set(a->bits, i, on);
	e->al_dirty[slot / ENG_AL_SLOTS] = true;
}

static void lru_unlink(struct qbd_engine *e, struct eng_chunk *c)
{
	if (c->lprev)
		c->lprev->lnext = c->lnext;
	else
		e->lru_head = c->lnext;
	if (c->lnext)
		c->lnext->lprev = c->lprev;
	else
		e->lru_tail = c->lprev;
	c->lprev = c->lnext = NULL;
}

static void lru_append(struct qbd_engine *e, struct eng_chunk *c)
{
	c->lnext = NULL;
	c->lprev = e->lru_tail;
	if (e->lru_tail)
		e->lru_tail->lnext = c;
	else
		e->lru_head = c;
	e->lru_tail = c;
}

static void clist_append(struct eng_clist *l, struct eng_chunk *c)
{
	c->dnext = NULL;
	c->dprev = l->tail;
	if (l->tail)
		l->tail->dnext = c;
	else
		l->head = c;
	l->tail = c;
}

static void clist_unlink(struct eng_clist *l, struct eng_chunk *c)
{
	if (c->dprev)
		c->dprev->dnext = c->dnext;
	else
		l->head = c->dnext;
	if (c->dnext)
		c->dnext->dprev = c->dprev;
	else
		l->tail = c->dprev;
	c->dprev = c->dnext = NULL;
}

/* The chunk's metadata changed in memory: its block is to be written by
 * the next round of the group commit (or a clean close). */
static void meta_dirty(struct qbd_engine *e, struct eng_chunk *c)
{
	if (c->dstate != ENG_CLEAN)
		return;
	c->dstate = ENG_DIRTY;
	clist_append(&e->dirty, c);
}

/* The chunk's metadata block as it is to be written now: its in-memory
 * metadata with its current flags and bad blocks. */
static void meta_snapshot(struct eng_chunk *c, void *buf)
{
	struct eng_meta *m = buf;

	memcpy(m, c->meta, B);
	m->flags = c->flags;
	memcpy(m->bad, c->bad, sizeof m->bad);
	m->checksum = 0;
	m->checksum = XXH3_64bits(m, sizeof *m);
	c->flags_dirty = false;
}

/* Forget a chunk. Its slot becomes free; free with old data (to be zeroed
 * before reuse) if anything may have been written to it. With al_clear
 * its log bit goes too (its state is durable: DELETE_VOLUME after its
 * sync); otherwise the bit stays for the recovery to look at. */
static void chunk_remove(struct qbd_engine *e, struct eng_chunk *c, bool al_clear)
{
	struct eng_chunk **pp = &e->hash[hash_of(c->volume, c->chunk)];
	bool dirty = c->meta->magic != 0 || c->slot_dirty || c->al_active ||
		     al_bit_test(e, c->slot);

	assert(!c->mw_busy);
	chunk_set_flags(e, c, 0);
	if (c->dstate == ENG_DIRTY)
		clist_unlink(&e->dirty, c);
	else if (c->dstate == ENG_ROUND)
		clist_unlink(&e->round, c);
	c->dstate = ENG_CLEAN;
	if (c->al_active) {
		lru_unlink(e, c);
		e->al_count--;
	}
	if (al_clear)
		al_bit(e, c->slot, false);
	while (*pp != c)
		pp = &(*pp)->hnext;
	*pp = c->hnext;
	e->free_map[c->slot] = dirty ? 2 : 0;
	e->by_slot[c->slot] = NULL;
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
	r = eng_pwrite(e, blk, B, 0);
	if (r == 0)
		r = eng_sync(e);
	free(blk);
	return r;
}

/* A free-slot marker: the slot's data may hold old data, so its first
 * writer zeroes it (holes must read as zeros, see "Activity log"). */
static void meta_free_marker(struct eng_meta *m)
{
	memset(m, 0, sizeof *m);
	m->magic = ENG_MAGIC_FREE;
	m->checksum = meta_checksum(m);
}

/* Format. clean: the data area is known to read as zeros (a file this
 * open created); otherwise every slot starts marked as holding old data. */
static int eng_format(struct qbd_engine *e, uint64_t size, uint32_t chunk_size, bool clean)
{
	uint64_t per = chunk_size + (uint64_t)B;
	uint64_t nslots, al_blocks;
	uint8_t *buf;
	int r = 0;

	if (size < ENG_AL_OFF + B + 2 * per)
		return -ENOSPC;
	nslots = (size - ENG_AL_OFF - chunk_size) / per;
	al_blocks = (nslots + ENG_AL_SLOTS - 1) / ENG_AL_SLOTS;
	nslots = (size - ENG_AL_OFF - al_blocks * B - chunk_size) / per;
	memset(&e->sb, 0, sizeof e->sb);
	e->sb.magic = ENG_MAGIC_SB;
	e->sb.format = ENG_FORMAT;
	e->sb.chunk_size = chunk_size;
	e->sb.node_id = qbd_random_u64();
	e->sb.nslots = nslots;
	e->sb.al_off = ENG_AL_OFF;
	e->sb.al_blocks = al_blocks;
	e->sb.meta_off = ENG_AL_OFF + al_blocks * B;
	e->sb.data_off = QBD_ALIGN_UP(e->sb.meta_off + nslots * B, (uint64_t)chunk_size);
	if (e->sb.data_off + nslots * chunk_size > size)
		e->sb.nslots = nslots = (size - e->sb.data_off) / chunk_size;
	/* Clear the promise table, the activity log and the metadata table
	 * (free-slot markers unless the data area is known zero). */
	if (posix_memalign((void **)&buf, B, 1 << 20))
		return -ENOMEM;
	for (uint64_t off = ENG_PROMISE_OFF; off < e->sb.data_off && r == 0; off += 1 << 20) {
		uint64_t n = QBD_MIN((uint64_t)1 << 20, e->sb.data_off - off);

		memset(buf, 0, n);
		for (uint64_t b = 0; !clean && b < n / B; b++) {
			uint64_t pos = off + b * B;
			if (pos >= e->sb.meta_off && pos < e->sb.meta_off + nslots * B)
				meta_free_marker((struct eng_meta *)(buf + b * B));
		}
		r = eng_pwrite(e, buf, n, off);
	}
	free(buf);
	if (r == 0)
		r = eng_write_super(e);
	if (r == 0)
		qbd_info("engine", "formatted: %llu chunk slots of %u bytes, node %016llx%s",
			 (unsigned long long)nslots, chunk_size,
			 (unsigned long long)e->sb.node_id,
			 clean ? "" : " (slots are zeroed on first use)");
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

			if (m->magic != ENG_MAGIC_META && m->magic != ENG_MAGIC_FREE)
				continue;
			if (meta_checksum(m) != m->checksum) {
				qbd_err("engine", "slot %llu: metadata checksum mismatch; "
					"chunk %llu of volume %016llx ignored",
					(unsigned long long)slot, (unsigned long long)m->chunk,
					(unsigned long long)m->volume);
				e->free_map[slot] = 2;
				continue;
			}
			if (m->magic == ENG_MAGIC_FREE) {
				e->free_map[slot] = 2;
				continue;
			}
			c = chunk_add(e, m->volume, m->chunk, slot);
			if (!c) {
				r = -ENOMEM;
				break;
			}
			memcpy(c->meta, m, B);
			c->version = m->version;
			memcpy(c->bad, m->bad, sizeof c->bad);
			chunk_set_flags(e, c, m->flags & (QBD_ENGINE_CHUNK_SUSPECT |
							  QBD_ENGINE_CHUNK_DAMAGED));
			e->free_map[slot] = 1;
			e->used_slots++;
		}
		if (r < 0)
			break;
	}
	free(tab);
	return r;
}

static struct eng_chunk *chunk_at_slot(const struct qbd_engine *e, uint64_t slot)
{
	for (unsigned h = 0; h < ENG_HASH; h++)
		for (struct eng_chunk *c = e->hash[h]; c; c = c->hnext)
			if (c->slot == slot)
				return c;
	return NULL;
}

/*
 * Recover one chunk the activity log names (docs/design.md, "Recovery").
 * Each 4 KiB block holds one of the contents written to it since the
 * last sync, or its synced content, and holes read as zeros on disk
 * except where a lost write landed. So: a written block that matches its
 * checksum stays; one that reads as zeros becomes a hole; any other gets
 * the checksum of what it holds (unless it is a known bad block); a hole
 * holding data is zeroed. The chunk is SUSPECT if any block changed
 * status, since it may then not match its version. *rewrote tells the
 * caller to sync.
 */
static int recover_chunk(struct qbd_engine *e, struct eng_chunk *c, uint8_t *data,
			 bool *suspect, bool *rewrote)
{
	struct eng_meta *m = c->meta;
	unsigned nb = e->sb.chunk_size / B;
	bool changed = false;
	int r;

	*suspect = false;
	r = qbd_pread_full(e->fd, data, e->sb.chunk_size, (off_t)data_pos(e, c->slot));
	if (r < 0)
		return r;
	for (unsigned b = 0; b < nb; b++) {
		const uint8_t *blk = data + (size_t)b * B;
		bool zero = all_zero(blk, B);

		if (!bit_test(m->written, b)) {
			if (zero)
				continue;
			r = eng_zero(e, data_pos(e, c->slot) + (uint64_t)b * B, B);
			if (r < 0)
				return r;
			*rewrote = true;
			continue;
		}
		if (bit_test(c->bad, b))
			continue;
		uint64_t h = XXH3_64bits(blk, B);
		if (h == m->block_csum[b])
			continue;
		changed = true;
		if (zero) {
			bit_set(m->written, b, false);
			m->block_csum[b] = 0;
		} else {
			m->block_csum[b] = h;
		}
	}
	if (!changed)
		return 0;
	*suspect = true;
#ifndef QBD_ENGINE_MUTANT_NO_SUSPECT
	chunk_set_flags(e, c, c->flags | QBD_ENGINE_CHUNK_SUSPECT);
#endif
	m->flags = c->flags;
	memcpy(m->bad, c->bad, sizeof m->bad);
	m->checksum = meta_checksum(m);
	*rewrote = true;
	return eng_pwrite(e, m, B, meta_pos(e, c->slot));
}

/* Write activity log block i from al_buf (blocking). */
static int al_write_sync(struct qbd_engine *e, unsigned i)
{
	struct eng_al *a = (void *)e->al_io;

	memcpy(e->al_io, e->al_buf + (size_t)i * B, B);
	a->magic = ENG_MAGIC_AL;
	a->seq = ++e->al_seq;
	a->index = i;
	a->checksum = al_checksum(a);
	e->al_dirty[i] = false;
	return eng_pwrite(e, e->al_io, B, e->sb.al_off + (uint64_t)i * B);
}

/* Empty the log on disk: every block that is dirty or names a slot (the
 * caller has made the chunks' state durable). */
static int al_clear_all(struct qbd_engine *e)
{
	bool any = false;
	int r = 0;

	for (unsigned i = 0; i < e->sb.al_blocks && r == 0; i++) {
		struct eng_al *a = (void *)(e->al_buf + (size_t)i * B);
		bool set = !all_zero(a->bits, sizeof a->bits);

		memset(a->bits, 0, sizeof a->bits);
		if (set || e->al_dirty[i]) {
			r = al_write_sync(e, i);
			any = true;
		}
	}
	if (r == 0 && any)
		r = eng_sync(e);
	return r;
}

/*
 * Crash recovery at open: read the activity log; recover every chunk it
 * names; mark free slots it names as holding old data (a first write
 * may have landed); make that durable, then empty the log. A log block
 * that fails its checksum names every slot it covers.
 */
static int eng_recover(struct qbd_engine *e)
{
	uint64_t named = 0, suspect = 0;
	uint8_t *data = NULL;
	bool rewrote = false;
	int r;

	r = qbd_pread_full(e->fd, e->al_buf, e->sb.al_blocks * B, (off_t)e->sb.al_off);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < e->sb.al_blocks; i++) {
		struct eng_al *a = (void *)(e->al_buf + (size_t)i * B);

		if (a->magic == ENG_MAGIC_AL && al_checksum(a) == a->checksum && a->index == i) {
			e->al_seq = QBD_MAX(e->al_seq, a->seq);
			continue;
		}
		if (all_zero(a, B))
			continue;
		qbd_err("engine", "activity log block %u is damaged: recovering every "
			"chunk it covers", i);
		memset(a->bits, 0xff, sizeof a->bits);
		e->al_dirty[i] = true;
	}
#ifdef QBD_ENGINE_MUTANT_NO_RECOVERY
	memset(e->al_buf, 0, e->sb.al_blocks * B);
#endif
	if (posix_memalign((void **)&data, B, e->sb.chunk_size))
		return -ENOMEM;
	for (uint64_t s = 0; s < e->sb.nslots && r == 0; s++) {
		struct eng_chunk *c;
		struct eng_meta *m;
		bool sus = false;

		if (!al_bit_test(e, s))
			continue;
		named++;
		if (e->free_map[s] == 1) {
			c = chunk_at_slot(e, s);
			r = recover_chunk(e, c, data, &sus, &rewrote);
			suspect += sus;
			if (sus)
				qbd_warn("engine", "recovery: volume %016llx chunk %llu is suspect "
					 "(writes were in flight)", (unsigned long long)c->volume,
					 (unsigned long long)c->chunk);
		} else if (e->free_map[s] == 0) {
			m = (struct eng_meta *)data;
			meta_free_marker(m);
			r = eng_pwrite(e, m, B, meta_pos(e, s));
			e->free_map[s] = 2;
			rewrote = true;
		}
	}
	free(data);
	if (r == 0 && rewrote)
		r = eng_sync(e);
	if (r == 0)
		r = al_clear_all(e);
	if (r == 0 && named)
		qbd_warn("engine", "recovery: %llu slots in the activity log, %llu chunks suspect",
			 (unsigned long long)named, (unsigned long long)suspect);
	if (r < 0)
		qbd_err("engine", "recovery: %s", strerror(-r));
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

/*
 * The ring, its eventfd, the store as registered file 0 and the buffer
 * pool as registered buffer 0 (each only where the kernel allows it:
 * without, the same requests go the plain way).
 *
 * The ring is single-issuer with deferred task work where the kernel
 * has it (6.1): completions are not posted from an interrupt of this
 * thread each, but in a batch when qbd_engine_poll asks for them (the
 * eventfd still fires when some are waiting). Only the thread that
 * opened the engine may then use it, which is the engine's rule anyway.
 * Measured against the ring's own fd as the event fd (no eventfd read,
 * but no deferred task work either: such a ring is not readable through
 * its fd until asked): about 74,000 against 66,000 4 KiB reads per
 * second at queue depth 32 where fio did 97,000, for a syscall more per
 * wake-up at queue depth 1. COOP_TASKRUN without it: 62,000.
 */
static int eng_ring_init(struct qbd_engine *e, unsigned qd)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN |
					      IORING_SETUP_TASKRUN_FLAG };
	struct iovec iov;
	int r;

	r = io_uring_queue_init_params(qd, &e->ring, &p);
	e->taskrun_flag = r == 0;
	if (r == -EINVAL) {
		memset(&p, 0, sizeof p);
		p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
		r = io_uring_queue_init_params(qd, &e->ring, &p);
	}
	e->defer_taskrun = r == 0;
	if (r == -EINVAL)
		r = io_uring_queue_init(qd, &e->ring, 0);
	if (r < 0) {
		qbd_err("engine", "io_uring_queue_init: %s", strerror(-r));
		return r;
	}
	e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (e->efd == -1 || io_uring_register_eventfd(&e->ring, e->efd) < 0) {
		r = e->efd == -1 ? -errno : -EIO;
		io_uring_queue_exit(&e->ring);
		return r;
	}
	e->fixed_file = io_uring_register_files(&e->ring, &e->fd, 1) == 0;
	if (e->bufs) {
		iov.iov_base = e->bufs;
		iov.iov_len = e->buf_size * e->buf_count;
		r = io_uring_register_buffers(&e->ring, &iov, 1);
		if (r < 0) {
			qbd_warn("engine", "io_uring_register_buffers: %s (buffers not registered)",
				 strerror(-r));
			e->bufs_registered = false;
		} else {
			e->bufs_registered = true;
		}
	}
	return 0;
}

/*
 * Memory for the buffer pool: 2 MiB aligned and backed by huge pages
 * where the kernel gives them (MADV_HUGEPAGE), so that the ring holds
 * the registered region as 2 MiB pieces and a 1 MiB transfer in it is a
 * single segment for the device (of 4 KiB pages it is 256, more than a
 * virtio disk takes in one request). NULL if out of memory.
 */
static uint8_t *bufs_map(size_t len, size_t *maplen)
{
	size_t huge = 2u << 20, want = QBD_ALIGN_UP(len, huge);
	uint8_t *p = mmap(NULL, want + huge, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)QBD_ALIGN_UP((uintptr_t)p, huge);
	if (a > p)
		munmap(p, (size_t)(a - p));
	munmap(a + want, (size_t)(p + want + huge - (a + want)));
	madvise(a, want, MADV_HUGEPAGE); /* a hint: 4 KiB pages work too */
	memset(a, 0, want);
	*maplen = want;
	return a;
}

/* The buffer pool of qbd_engine_opts.buffers (not registered yet). */
static int eng_bufs_init(struct qbd_engine *e, unsigned n, uint32_t size)
{
	if (n == 0)
		return 0;
	if (size == 0 || size % B)
		return -EINVAL;
	e->buf_size = size;
	e->buf_count = n;
	e->buf_free = calloc(n, sizeof *e->buf_free);
	if (!e->buf_free)
		return -ENOMEM;
	e->bufs = bufs_map((size_t)n * size, &e->bufs_len);
	if (!e->bufs)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		e->buf_free[i] = e->bufs + (size_t)(n - 1 - i) * size;
	e->buf_nfree = n;
	return 0;
}

void *qbd_engine_buf_get(struct qbd_engine *e)
{
	return e->buf_nfree ? e->buf_free[--e->buf_nfree] : NULL;
}

void qbd_engine_buf_put(struct qbd_engine *e, void *buf)
{
	if (!buf)
		return;
	assert(e->buf_nfree < e->buf_count);
	e->buf_free[e->buf_nfree++] = buf;
}

uint32_t qbd_engine_buf_size(const struct qbd_engine *e)
{
	return (uint32_t)e->buf_size;
}

bool qbd_engine_buf_owns(const struct qbd_engine *e, const void *buf)
{
	const uint8_t *b = buf;

	return e->bufs && b >= e->bufs && b < e->bufs + e->buf_size * e->buf_count;
}

/* Registered buffer index of [buf, buf + len), or -1. */
static int buf_index(const struct qbd_engine *e, const uint8_t *buf, size_t len)
{
	if (!e->bufs_registered || buf < e->bufs ||
	    buf + len > e->bufs + e->buf_size * e->buf_count)
		return -1;
	return 0;
}

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

int qbd_engine_open(const struct qbd_engine_opts *opts, struct qbd_engine **out)
{
	struct qbd_engine *e;
	struct stat st;
	uint64_t size;
	uint32_t cs = opts->chunk_size ? opts->chunk_size : QBD_ENGINE_DEFAULT_CHUNK;
	unsigned qd = opts->queue_depth ? opts->queue_depth : 256;
	uint8_t *blk = NULL;
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
	e->fd = open(opts->path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (e->fd == -1 && errno == ENOENT && opts->create_size) {
		e->fd = open(opts->path, O_RDWR | O_DIRECT | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
		if (e->fd != -1 && ftruncate(e->fd, (off_t)opts->create_size) == -1) {
			r = -errno;
			goto fail;
		}
		created = e->fd != -1;
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
	e->blockdev = S_ISBLK(st.st_mode);
	if (e->blockdev && ioctl(e->fd, BLKGETSIZE64, &size) == -1) {
		r = -errno;
		goto fail;
	}
	if (posix_memalign((void **)&blk, B, B) ||
	    posix_memalign((void **)&e->promises, B, ENG_PROMISE_BYTES) ||
	    posix_memalign((void **)&e->al_io, B, B) ||
	    posix_memalign((void **)&e->mw_bufs, B, ENG_MW * B)) {
		r = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < ENG_MW; i++) {
		e->mw[i].buf = e->mw_bufs + (size_t)i * B;
		e->mw[i].next = e->mw_free;
		e->mw_free = &e->mw[i];
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
		r = eng_format(e, size, cs, created);
		if (r < 0)
			goto fail;
	} else if (e->sb.format != ENG_FORMAT) {
		qbd_err("engine", "%s: a store of format %u; this qbd reads format %u only "
			"(no conversion: move its data off and format it again)", opts->path,
			e->sb.format, ENG_FORMAT);
		r = -EUCLEAN;
		goto fail;
	} else if (super_checksum(&e->sb) != e->sb.checksum) {
		qbd_err("engine", "%s: bad superblock checksum", opts->path);
		r = -EUCLEAN;
		goto fail;
	} else if (opts->chunk_size && opts->chunk_size != e->sb.chunk_size) {
		qbd_err("engine", "%s: chunk size %u, asked for %u", opts->path,
			e->sb.chunk_size, opts->chunk_size);
		r = -EINVAL;
		goto fail;
	}
	e->free_map = calloc(e->sb.nslots, 1);
	e->by_slot = calloc(e->sb.nslots, sizeof *e->by_slot);
	e->al_dirty = calloc(e->sb.al_blocks, sizeof *e->al_dirty);
	if (!e->free_map || !e->by_slot || !e->al_dirty ||
	    posix_memalign((void **)&e->al_buf, B, e->sb.al_blocks * B)) {
		r = -ENOMEM;
		goto fail;
	}
	memset(e->al_buf, 0, e->sb.al_blocks * B);
	r = eng_load(e);
	if (r == 0)
		r = eng_recover(e);
	if (r < 0)
		goto fail;
	for (uint64_t i = 0; i < e->sb.nslots; i++)
		if (e->by_slot[i])
			e->held_blocks += meta_held_blocks(e->by_slot[i]->meta);
	r = eng_bufs_init(e, opts->buffers,
			  opts->buffer_size ? opts->buffer_size : e->sb.chunk_size);
	if (r == 0)
		r = eng_ring_init(e, qd);
	if (r < 0)
		goto fail;
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

/* Clean close: write the metadata blocks of dirty chunks and of chunks
 * whose flags changed since their last meta write (DAMAGED found by
 * reads), sync, empty the activity log. */
static int eng_close_clean(struct qbd_engine *e)
{
	uint8_t *blk = e->mw_bufs;
	int r = 0;

	while (e->dirty.head && r == 0) {
		struct eng_chunk *c = e->dirty.head;

		clist_unlink(&e->dirty, c);
		c->dstate = ENG_CLEAN;
		meta_snapshot(c, blk);
		r = eng_pwrite(e, blk, B, meta_pos(e, c->slot));
	}
	for (struct eng_chunk *c = e->flagged; c && r == 0; c = c->fnext) {
		if (!c->flags_dirty)
			continue;
		meta_snapshot(c, blk);
		r = eng_pwrite(e, blk, B, meta_pos(e, c->slot));
	}
	if (r == 0)
		r = eng_sync(e);
	if (r == 0)
		r = al_clear_all(e);
	return r;
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
	} else if ((r = eng_close_clean(e)) < 0) {
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
				*held += meta_held_blocks(c->meta) * B;
			}
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
			return e->promises[i].epoch;
	return 0;
}

uint64_t qbd_engine_chunk_version(const struct qbd_engine *e, uint64_t volume,
				  uint64_t chunk)
{
	struct eng_chunk *c = chunk_find(e, volume, chunk);
	return c ? c->version : 0;
}

uint32_t qbd_engine_chunk_flags(const struct qbd_engine *e, uint64_t volume,
				uint64_t chunk)
{
	struct eng_chunk *c = chunk_find(e, volume, chunk);
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

/* A callback is queued: inside qbd_engine_poll it runs before poll
 * returns; outside (from qbd_engine_submit), the eventfd must fire, once
 * until the next poll (no syscall per request). */
static void eng_wake(struct qbd_engine *e)
{
	uint64_t one = 1;

	if (e->in_poll || e->woken)
		return;
	e->woken = true;
	if (write(e->efd, &one, sizeof one) == -1 && errno != EAGAIN)
		qbd_warn("engine", "eventfd: %m");
}

static void ring_submit(struct qbd_engine *e)
{
	int r;

	if (!e->pending_sqes)
		return;
	/* With deferred task work, the same syscall posts the completions
	 * waiting (no extra one). */
	r = e->defer_taskrun ? io_uring_submit_and_get_events(&e->ring)
			     : io_uring_submit(&e->ring);
	if (r < 0)
		qbd_warn("engine", "io_uring_submit: %s", strerror(-r));
	e->pending_sqes = 0;
}

static void chunk_run_next(struct qbd_engine *e, struct eng_chunk *c);
static void promise_run(struct qbd_engine *e);

/* The request is done with its chunk: start what waits in its FIFO. */
static void req_release_chunk(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_chunk *c = priv(r)->ch;

	priv(r)->ch = NULL;
	if (r->op == QBD_ENGINE_READ || r->op == QBD_ENGINE_BITMAP ||
	    r->op == QBD_ENGINE_SCRUB) {
		c->reading--;
	} else {
		c->writing = false;
		if (c->al_active) {
			/* Durable once a sync issued from now on completes
			 * (after its metadata block is written). */
			c->done_seq = e->sync_issued;
			lru_unlink(e, c);
			lru_append(e, c);
		}
	}
	chunk_run_next(e, c); /* may free c */
}

/* Finish a request: queue its callback for qbd_engine_poll, then start
 * what was waiting for it. */
static void req_done(struct qbd_engine *e, struct qbd_engine_req *r, int res)
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
	p->next = NULL;
	if (e->done_tail)
		priv(e->done_tail)->next = r;
	else
		e->done_head = r;
	e->done_tail = r;
	eng_wake(e);
	if (p->ch)
		req_release_chunk(e, r);
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

static bool step_is_data(int step)
{
	return step == ST_READ_DATA || step == ST_RMW_READ || step == ST_WRITE_DATA ||
	       step == ST_SCRUB_READ;
}

static unsigned step_sqes(const struct eng_priv *p)
{
	if (step_is_data(p->step))
		return p->n_ext;
	if (p->step == ST_ZERO_DATA || p->step == ST_UNDO_ZERO || p->step == ST_RESERVE)
		return p->zx_ext;
	return 1;
}

/* Count the step's I/O (qbd_engine_stats). */
static void step_count(struct qbd_engine *e, const struct eng_priv *p, unsigned n)
{
	uint64_t bytes = 0;

	for (unsigned i = 0; step_is_data(p->step) && i < p->n_ext; i++)
		bytes += (uint64_t)p->ext_n[i] * B;
	switch (p->step) {
	case ST_READ_DATA:
	case ST_RMW_READ:
	case ST_SCRUB_READ:
		e->n_data_reads += n;
		e->n_data_read_bytes += bytes;
		break;
	case ST_WRITE_DATA:
		e->n_data_writes += n;
		e->n_data_write_bytes += bytes;
		break;
	case ST_WRITE_META:
	case ST_PROMISE_WRITE:
	case ST_AL_WRITE:
		e->n_meta_writes += n;
		break;
	case ST_ZERO_DATA:
	case ST_SLOT_ZERO:
	case ST_UNDO_ZERO:
		e->n_zeroings += n;
		break;
	case ST_FSYNC:
	case ST_SLOT_SYNC:
		e->n_syncs += n;
		break;
	}
}

/* Report the step's I/Os to io_hook, issued or done. */
static void step_hook(struct qbd_engine *e, struct qbd_engine_req *r, bool done, int res)
{
	struct eng_priv *p = priv(r);
	uint64_t cs = e->sb.chunk_size;

	for (unsigned i = 0; i < p->io_n; i++) {
		uint64_t id = p->io_id + i;

		switch (p->step) {
		case ST_WRITE_DATA:
			hook(e, QBD_ENGINE_IO_WRITE, done, res, id,
			     data_pos(e, p->ch->slot) + (uint64_t)p->ext_b[i] * B,
			     (uint64_t)p->ext_n[i] * B,
			     p->bounce + (size_t)(p->ext_b[i] - p->b0) * B, false);
			break;
		case ST_WRITE_META:
			hook(e, QBD_ENGINE_IO_WRITE, done, res, id, meta_pos(e, p->ch->slot), B,
			     p->bounce, false);
			break;
		case ST_PROMISE_WRITE:
			hook(e, QBD_ENGINE_IO_WRITE, done, res, id,
			     ENG_PROMISE_OFF + (uint64_t)p->b0 * B, B, p->bounce, false);
			break;
		case ST_AL_WRITE:
			hook(e, QBD_ENGINE_IO_WRITE, done, res, id,
			     e->sb.al_off + (uint64_t)e->al_block * B, B, e->al_io, e->al_dsync);
			break;
		case ST_ZERO_DATA:
		case ST_UNDO_ZERO:
			hook(e, QBD_ENGINE_IO_ZERO, done, res, id,
			     data_pos(e, p->ch->slot) + (uint64_t)p->zx_b[i] * B,
			     (uint64_t)p->zx_n[i] * B, NULL, false);
			break;
		case ST_SLOT_ZERO:
			hook(e, QBD_ENGINE_IO_ZERO, done, res, id, data_pos(e, p->ch->slot), cs,
			     NULL, false);
			break;
		case ST_FSYNC:
		case ST_SLOT_SYNC:
			hook(e, QBD_ENGINE_IO_SYNC, done, res, id, 0, 0, NULL, false);
			break;
		default:
			break;
		}
	}
}

/* Issue the SQEs of the request's current step (all or none); with too
 * few free SQEs, park the request until the next qbd_engine_poll. */
static void step_issue(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	bool data = step_is_data(p->step);
	unsigned n = step_sqes(p);

	/* More SQEs in flight than the CQ holds would overflow it, and
	 * overflowed CQEs raise no eventfd wake-up later: wait instead,
	 * behind the requests already waiting. */
	if (e->inflight + n > e->ring.cq.ring_entries || (e->retry_head && !e->retrying)) {
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
	p->io_id = e->io_seq + 1;
	p->io_n = n;
	e->io_seq += n;
	if (p->step == ST_FSYNC || p->step == ST_SLOT_SYNC)
		p->sync_gen = ++e->sync_issued;
	if (e->io_hook)
		step_hook(e, r, false, 0);
	step_count(e, p, n);
	/* The store is registered file 0 when the kernel allows it. */
	int fd = e->fixed_file ? 0 : e->fd;

	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);
		uint8_t *buf = data ? p->bounce + (size_t)(p->ext_b[i] - p->b0) * B : NULL;
		uint64_t off = data ? data_pos(e, p->ch->slot) + (uint64_t)p->ext_b[i] * B : 0;
		int bi = data ? buf_index(e, buf, p->ext_n[i] * B) : -1;

		switch (p->step) {
		case ST_READ_DATA:
		case ST_RMW_READ:
		case ST_SCRUB_READ:
			if (bi >= 0)
				io_uring_prep_read_fixed(sqe, fd, buf, p->ext_n[i] * B, off, bi);
			else
				io_uring_prep_read(sqe, fd, buf, p->ext_n[i] * B, off);
			break;
		case ST_WRITE_DATA:
			if (bi >= 0)
				io_uring_prep_write_fixed(sqe, fd, buf, p->ext_n[i] * B, off, bi);
			else
				io_uring_prep_write(sqe, fd, buf, p->ext_n[i] * B, off);
			break;
		case ST_WRITE_META:
			io_uring_prep_write(sqe, fd, p->bounce, B, meta_pos(e, p->ch->slot));
			break;
		case ST_FSYNC:
		case ST_SLOT_SYNC:
			io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
			break;
		case ST_PROMISE_WRITE:
			/* bounce holds block b0 of the promise table */
			io_uring_prep_write(sqe, fd, p->bounce, B,
					    ENG_PROMISE_OFF + (uint64_t)p->b0 * B);
			break;
		case ST_AL_WRITE:
			io_uring_prep_write(sqe, fd, e->al_io, B,
					    e->sb.al_off + (uint64_t)e->al_block * B);
			if (e->al_dsync)
				sqe->rw_flags = RWF_DSYNC;
			break;
		case ST_RESERVE:
			io_uring_prep_fallocate(sqe, fd, FALLOC_FL_KEEP_SIZE,
						(off_t)(data_pos(e, p->ch->slot) + (uint64_t)p->zx_b[i] * B),
						(off_t)p->zx_n[i] * B);
			break;
		case ST_ZERO_DATA:
		case ST_UNDO_ZERO:
			io_uring_prep_fallocate(sqe, fd, zero_mode(e),
						(off_t)(data_pos(e, p->ch->slot) + (uint64_t)p->zx_b[i] * B),
						(off_t)p->zx_n[i] * B);
			break;
		case ST_SLOT_ZERO:
			io_uring_prep_fallocate(sqe, fd, zero_mode(e),
						(off_t)data_pos(e, p->ch->slot),
						(off_t)e->sb.chunk_size);
			break;
		}
		if (e->fixed_file)
			sqe->flags |= IOSQE_FIXED_FILE;
		io_uring_sqe_set_data(sqe, r);
		e->pending_sqes++;
	}
}

static bool in_ext(const struct eng_priv *p, unsigned b);

/* The next one or two runs of holes (blocks without data) in the
 * extents, from *cursor on, into zx_*; false if none is left. */
static bool hole_runs(struct eng_priv *p, uint32_t *cursor)
{
	const uint64_t *w = p->ch->meta->written;
	uint32_t end = 0;

	for (unsigned x = 0; x < p->n_ext; x++)
		end = QBD_MAX(end, p->ext_b[x] + p->ext_n[x]);
	p->zx_ext = 0;
	while (p->zx_ext < 2 && *cursor < end) {
		uint32_t b = *cursor, n = 0;

		while (b < end && (!in_ext(p, b) || bit_test(w, b)))
			b++;
		while (b + n < end && in_ext(p, b + n) && !bit_test(w, b + n))
			n++;
		*cursor = b + n;
		if (n) {
			p->zx_b[p->zx_ext] = b;
			p->zx_n[p->zx_ext++] = n;
		}
	}
	return p->zx_ext > 0;
}

/* A data write that covers blocks holding data and holes (first written)
 * in a file store. */
static bool write_mixed(const struct qbd_engine *e, const struct eng_priv *p)
{
	bool data = false, hole = false;

	if (e->blockdev)
		return false;
	for (unsigned x = 0; x < p->n_ext; x++)
		for (unsigned b = p->ext_b[x]; b < p->ext_b[x] + p->ext_n[x]; b++) {
			if (bit_test(p->ch->meta->written, b))
				data = true;
			else
				hole = true;
		}
	return data && hole;
}

static void step_go(struct qbd_engine *e, struct qbd_engine_req *r, int step)
{
	struct eng_priv *p = priv(r);

	/* Full filesystems: a direct write that overwrites blocks holding
	 * data and allocates holes can write the former, then fail the
	 * latter with ENOSPC (ext4 does), leaving blocks that match
	 * neither their checksums nor the chunk's version. So the holes
	 * of such a write are allocated first (fallocate; they still read
	 * as zeros): a full filesystem then fails the write before any of
	 * its blocks is written. */
	if (step == ST_WRITE_DATA && p->rsv != 2) {
		if (p->rsv == 0 && !write_mixed(e, p)) {
			p->rsv = 2;
		} else {
			if (p->rsv == 0) {
				p->rsv = 1;
				p->rsv_cursor = p->ext_b[0];
			}
			if (hole_runs(p, &p->rsv_cursor))
				step = ST_RESERVE;
			else
				p->rsv = 2;
		}
	}
	p->step = step;
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
	case ST_SCRUB_READ:
		for (unsigned i = 0; i < p->n_ext; i++)
			n += p->ext_n[i] * B;
		return n;
	case ST_FSYNC:
	case ST_SLOT_SYNC:
	case ST_ZERO_DATA:
	case ST_SLOT_ZERO:
	case ST_UNDO_ZERO:
	case ST_RESERVE:
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
			if (eng_csum(blk, B) != c->meta->block_csum[b]) {
				qbd_err("engine", "checksum mismatch: volume %016llx chunk %llu "
					"block %u (slot %llu)", (unsigned long long)c->volume,
					(unsigned long long)c->chunk, b,
					(unsigned long long)c->slot);
				bit_set(c->bad, b, true);
				chunk_set_flags(e, c, c->flags | QBD_ENGINE_CHUNK_DAMAGED);
				c->flags_dirty = true;
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

static void flush_enqueue(struct qbd_engine *e, struct qbd_engine_req *r);
static void round_kick(struct qbd_engine *e);

/*
 * A WRITE or ZERO has its data on the device: the chunk's metadata
 * changes in memory (new checksums, bitmap, version; the blocks it
 * rewrote are no longer bad), the chunk is dirty, and reads from now on
 * see the new contents. Its metadata block is written by the next round
 * of the group commit: a FUA request waits for that round (the chunk is
 * released at once, so that its next writes need not wait), others are
 * done.
 */
static void write_commit(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	struct eng_meta *m = c->meta;
	uint64_t held = meta_held_blocks(m);
	bool bad = false;

	if (r->flags & QBD_ENGINE_F_RESYNC) {
		memcpy(m, p->meta_copy, B);
		memset(c->bad, 0, sizeof c->bad);
		chunk_set_flags(e, c, 0);
	} else {
		for (unsigned i = 0; i < p->nb; i++) {
			unsigned b = p->b0 + i;

			if (r->op == QBD_ENGINE_ZERO && !in_ext(p, b)) {
				bit_set(m->written, b, false);
				m->block_csum[b] = 0;
			} else {
				bit_set(m->written, b, true);
				m->block_csum[b] = eng_csum(p->bounce + (size_t)i * B, B);
			}
		}
		m->magic = ENG_MAGIC_META;
		m->volume = c->volume;
		m->chunk = c->chunk;
		m->version = r->new_version;
		if (c->flags & QBD_ENGINE_CHUNK_DAMAGED) {
			for (unsigned i = 0; i < p->nb; i++)
				bit_set(c->bad, p->b0 + i, false);
			for (unsigned i = 0; i < ENG_BLOCKS_MAX / 64; i++)
				bad |= c->bad[i] != 0;
			if (!bad)
				chunk_set_flags(e, c, c->flags & ~QBD_ENGINE_CHUNK_DAMAGED);
		}
	}
	e->held_blocks += meta_held_blocks(m) - held;
	c->version = r->new_version;
	r->version = c->version;
	meta_dirty(e, c);
	if (r->flags & QBD_ENGINE_F_FUA) {
		req_release_chunk(e, r);
		flush_enqueue(e, r);
		return;
	}
	req_done(e, r, (int)r->length);
}

/* RESYNC (b0 is 0): first zero the next one or two runs of blocks that
 * held data and become holes (holes read as zeros on disk too, see
 * "Activity log" in docs/design.md), then write the next one or two runs
 * of data blocks of the new meta block from cursor on, then commit once
 * none is left. */
static void resync_next(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	const uint64_t *w = p->meta_copy->written;
	const uint64_t *old = p->ch->meta->written;

	if (p->zero_phase) {
		p->zx_ext = 0;
		while (p->zx_ext < 2 && p->cursor < p->nb) {
			uint32_t b = p->cursor, n = 0;

			while (b < p->nb && !(bit_test(old, b) && !bit_test(w, b)))
				b++;
			while (b + n < p->nb && bit_test(old, b + n) && !bit_test(w, b + n))
				n++;
			p->cursor = b + n;
			if (n) {
				p->zx_b[p->zx_ext] = b;
				p->zx_n[p->zx_ext++] = n;
			}
		}
#ifndef QBD_ENGINE_MUTANT_NO_HOLE_ZERO
		if (p->zx_ext) {
			step_go(e, r, ST_ZERO_DATA);
			return;
		}
#endif
		p->zero_phase = false;
		p->cursor = 0;
	}
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
	if (p->n_ext)
		step_go(e, r, ST_WRITE_DATA);
	else
		write_commit(e, r);
}

/* A RESYNC's new meta block, in p->meta_copy (its bitmap says which
 * blocks resync_next writes): all-zero blocks are holes, flags cleared. */
static int resync_meta(struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	struct eng_meta *m;

	if (posix_memalign((void **)&p->meta_copy, B, B))
		return -ENOMEM;
	m = p->meta_copy;
	memcpy(m, c->meta, B);
	for (unsigned i = 0; i < p->nb; i++) {
		unsigned b = p->b0 + i;

		if (block_is_zero(p->bounce + (size_t)i * B)) {
			bit_set(m->written, b, false);
			m->block_csum[b] = 0;
		} else {
			bit_set(m->written, b, true);
			m->block_csum[b] = eng_csum(p->bounce + (size_t)i * B, B);
		}
	}
	m->magic = ENG_MAGIC_META;
	m->volume = c->volume;
	m->chunk = c->chunk;
	m->version = r->new_version;
	memset(m->bad, 0, sizeof m->bad);
	m->flags = 0;
	return 0;
}

/* WRITE/ZERO after any read-modify-write read (whose blocks are the
 * extents): merge; then a WRITE writes its blocks; a ZERO zeroes the
 * whole blocks it turns into holes that held data, then writes its
 * partial blocks that hold data; a RESYNC goes on in resync_next. Its
 * data I/O complete, write_commit changes the chunk in memory. */
static void write_apply(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	uint32_t rel = r->offset - p->b0 * B;
	int err;

	if (!p->borrowed && p->bounce) {
		for (unsigned i = 0; i < p->nb; i++)
			if (!in_ext(p, p->b0 + i))
				memset(p->bounce + (size_t)i * B, 0, B);
		if (r->op == QBD_ENGINE_WRITE)
			memcpy(p->bounce + rel, r->buf, r->length);
		else
			memset(p->bounce + rel, 0, r->length);
	}
	if (r->flags & QBD_ENGINE_F_RESYNC) {
		err = resync_meta(r);
		if (err < 0) {
			req_done(e, r, err);
			return;
		}
		p->cursor = 0;
		p->zero_phase = true;
		resync_next(e, r);
		return;
	}
	p->zx_ext = 0;
	if (r->op == QBD_ENGINE_ZERO) {
		/* ZERO keeps data only in partial blocks that had data (the
		 * extents read for the merge); everything else reads as
		 * zeros through the bitmap, and whole blocks that held data
		 * are zeroed on disk (one range from the first to the last). */
		for (unsigned b = p->b0; b < p->b0 + p->nb; b++) {
			if (in_ext(p, b) || !bit_test(c->meta->written, b))
				continue;
			if (!p->zx_ext) {
				p->zx_b[0] = b;
				p->zx_ext = 1;
			}
			p->zx_n[0] = b + 1 - p->zx_b[0];
		}
	} else {
		p->n_ext = 1;
		p->ext_b[0] = p->b0;
		p->ext_n[0] = p->nb;
	}
#ifndef QBD_ENGINE_MUTANT_NO_HOLE_ZERO
	if (p->zx_ext) {
		step_go(e, r, ST_ZERO_DATA);
		return;
	}
#endif
	if (p->n_ext)
		step_go(e, r, ST_WRITE_DATA);
	else
		write_commit(e, r);
}

/* Take a free slot for a new chunk. 0, -ENOSPC or -ENOMEM. */
static int chunk_alloc(struct qbd_engine *e, uint64_t volume, uint64_t chunk,
		       struct eng_chunk **out)
{
	for (uint64_t i = 0; i < e->sb.nslots; i++) {
		if (e->free_map[i] == 1)
			continue;
		*out = chunk_add(e, volume, chunk, i);
		if (!*out)
			return -ENOMEM;
		(*out)->slot_dirty = e->free_map[i] == 2;
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

/* SCRUB: read the blocks from the first written one to the last (holes
 * between them are read too but not checked: one I/O). */
static void scrub_start(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	unsigned nb = e->sb.chunk_size / B, first = nb, last = 0;

	if (r->buf)
		memset(r->buf, 0, (nb + 7) / 8);
	for (unsigned b = 0; c && b < nb; b++)
		if (bit_test(c->meta->written, b)) {
			if (first == nb)
				first = b;
			last = b;
		}
	if (first == nb) {
		req_done(e, r, 0);
		return;
	}
	p->b0 = first;
	p->nb = last + 1 - first;
	if (posix_memalign((void **)&p->bounce, B, (size_t)p->nb * B)) {
		p->bounce = NULL;
		req_done(e, r, -ENOMEM);
		return;
	}
	p->n_ext = 1;
	p->ext_b[0] = p->b0;
	p->ext_n[0] = p->nb;
	step_go(e, r, ST_SCRUB_READ);
}

/* SCRUB read complete: check every written block. */
static void scrub_done(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	uint8_t *bm = r->buf;
	int bytes = 0;

	for (unsigned b = p->b0; b < p->b0 + p->nb; b++) {
		if (!bit_test(c->meta->written, b))
			continue;
		bytes += (int)B;
		if (XXH3_64bits(p->bounce + (size_t)(b - p->b0) * B, B) == c->meta->block_csum[b])
			continue;
		bit_set(c->bad, b, true);
		chunk_set_flags(e, c, c->flags | QBD_ENGINE_CHUNK_DAMAGED);
		if (bm)
			bm[b / 8] |= (uint8_t)(1u << (b % 8));
	}
	req_done(e, r, bytes);
}

/* A data write failed: it may have written some of its blocks, and those
 * that are holes must read as zeros on disk (docs/design.md, "Activity
 * log"): zero them, the next one or two runs per step, from cursor on;
 * then fail the request with the write's error. Blocks that held data
 * keep what the failed write left; their checksums catch it. */
static void undo_next(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);

	if (!hole_runs(p, &p->cursor)) {
		req_done(e, r, p->undo_err);
		return;
	}
	step_go(e, r, ST_UNDO_ZERO);
}

static void undo_start(struct qbd_engine *e, struct qbd_engine_req *r, int err)
{
	struct eng_priv *p = priv(r);

	p->undo_err = err;
	p->cursor = p->ext_b[0]; /* extents are in ascending order */
	undo_next(e, r);
}

static void read_start(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	bool any = false;

	r->version = c ? c->version : 0;
	if (r->op == QBD_ENGINE_SCRUB) {
		scrub_start(e, r);
		return;
	}
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

/* ---- activity log (docs/design.md, "Activity log") ---- */

static void al_kick(struct qbd_engine *e);
static void write_go(struct qbd_engine *e, struct qbd_engine_req *r);

/* Before the first write of a chunk that is not active: a new chunk in a
 * slot with old data zeroes the slot durably first; then the chunk's bit
 * must be durable in the log before any of its writes is issued. A chunk
 * already active goes on at once: the hot path costs no I/O. */
static void write_activate(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;

#ifndef QBD_ENGINE_MUTANT_NO_HOLE_ZERO
	if (c->slot_dirty && c->meta->magic != ENG_MAGIC_META) {
		step_go(e, r, ST_SLOT_ZERO);
		return;
	}
#endif
	c->slot_dirty = false;
#ifndef QBD_ENGINE_MUTANT_NO_AL
	if (!c->al_active) {
		p->step = ST_AL_WAIT;
		p->next = NULL;
		if (e->alw_tail)
			priv(e->alw_tail)->next = r;
		else
			e->alw_head = r;
		e->alw_tail = r;
		al_kick(e);
		return;
	}
#endif
	write_go(e, r);
}

/* Start a log write if none is in flight: the block of the first waiting
 * request (with every waiter of that block, RWF_DSYNC), else a block
 * that changed through removals (a plain write: losing it only makes
 * the next recovery look at more chunks). */
static void al_kick(struct qbd_engine *e)
{
	struct qbd_engine_req **pp, *r;
	struct eng_al *a;
	long blk = -1;

	if (e->al_busy)
		return;
	if (e->alw_head) {
		blk = (long)(priv(e->alw_head)->ch->slot / ENG_AL_SLOTS);
	} else {
		for (unsigned i = 0; i < e->sb.al_blocks && blk < 0; i++)
			if (e->al_dirty[i])
				blk = i;
	}
	if (blk < 0)
		return;
	e->al_dsync = false;
	e->alw_tail = NULL;
	for (pp = &e->alw_head; (r = *pp);) {
		struct eng_priv *p = priv(r);

		if (p->ch->slot / ENG_AL_SLOTS != (uint64_t)blk) {
			e->alw_tail = r;
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		p->next = NULL;
		if (e->ali_tail)
			priv(e->ali_tail)->next = r;
		else
			e->ali_head = r;
		e->ali_tail = r;
		al_bit(e, p->ch->slot, true);
		e->al_dsync = true;
	}
	e->al_dirty[blk] = false;
	memcpy(e->al_io, e->al_buf + (size_t)blk * B, B);
	a = (void *)e->al_io;
	a->magic = ENG_MAGIC_AL;
	a->seq = ++e->al_seq;
	a->index = (uint32_t)blk;
	a->checksum = al_checksum(a);
	e->al_block = (unsigned)blk;
	e->al_busy = true;
	memset(priv(&e->al_req), 0, sizeof(struct eng_priv));
	step_go(e, &e->al_req, ST_AL_WRITE);
}

/* The log write is complete: its requests' chunks are active (or, on an
 * error, the requests fail). */
static void al_done(struct qbd_engine *e, int err)
{
	struct qbd_engine_req *r = e->ali_head;

	e->ali_head = e->ali_tail = NULL;
	e->al_busy = false;
	if (err < 0) {
		qbd_err("engine", "activity log write: %s", strerror(-err));
		e->al_dirty[e->al_block] = true;
	}
	while (r) {
		struct qbd_engine_req *next = priv(r)->next;
		struct eng_chunk *c = priv(r)->ch;

		if (err < 0) {
			req_done(e, r, err);
		} else {
			if (!c->al_active) {
				c->al_active = true;
				c->done_seq = e->sync_issued;
				lru_append(e, c);
				e->al_count++;
			}
			write_go(e, r);
		}
		r = next;
	}
	/* Far beyond the target (no FLUSH for a while): a round of the
	 * group commit lets chunks leave, so that the recovery after a
	 * crash stays bounded. */
	if (e->al_count > 2 * e->al_target) {
		e->round_trim = true;
		round_kick(e);
	}
	al_kick(e);
}

/* After a sync: chunks beyond the log's target whose writes and
 * metadata block are durable leave it, least recently written first. */
static void al_trim(struct qbd_engine *e)
{
	struct eng_chunk *c, *next;

	for (c = e->lru_head; c && e->al_count > e->al_target; c = next) {
		next = c->lnext;
#ifndef QBD_ENGINE_MUTANT_NO_CLEAN_TRIM
		if (c->dstate != ENG_CLEAN || c->mw_busy)
			continue;
#endif
		if (c->writing || c->q_head || c->done_seq >= e->sync_done)
			continue;
		lru_unlink(e, c);
		c->al_active = false;
		e->al_count--;
		al_bit(e, c->slot, false);
	}
	al_kick(e);
}

/* ---- group commit (docs/design.md, "Metadata in memory") ---- */

static void round_next(struct qbd_engine *e);

/* Start a round if none runs and one is wanted: it covers the FLUSH and
 * FUA requests waiting now, and writes the metadata block of every chunk
 * dirty now (whose in-memory metadata holds every write completed
 * before), then syncs. */
static void round_kick(struct qbd_engine *e)
{
	if (e->round_busy || (!e->fl_head && !e->round_trim))
		return;
	e->round_busy = true;
	e->round_trim = false;
	e->round_err = 0;
	e->rd_head = e->fl_head;
	e->rd_tail = e->fl_tail;
	e->fl_head = e->fl_tail = NULL;
#ifndef QBD_ENGINE_MUTANT_NO_META_FLUSH
	for (struct eng_chunk *c = e->dirty.head; c; c = c->dnext)
		c->dstate = ENG_ROUND;
	e->round = e->dirty;
	e->dirty.head = e->dirty.tail = NULL;
#endif
	round_next(e);
}

/* A FLUSH, or a FUA write whose data is on the device, waits for the
 * next round. */
static void flush_enqueue(struct qbd_engine *e, struct qbd_engine_req *r)
{
	priv(r)->next = NULL;
	if (e->fl_tail)
		priv(e->fl_tail)->next = r;
	else
		e->fl_head = r;
	e->fl_tail = r;
	round_kick(e);
}

/* Issue the round's next metadata writes, one per free writer, each
 * from a snapshot (the chunk takes writes meanwhile: they make it dirty
 * again, for the next round); all written, the sync. */
static void round_next(struct qbd_engine *e)
{
	struct eng_chunk *c;
	struct eng_mw *w;

	while ((c = e->round.head) && (w = e->mw_free)) {
		struct eng_priv *p = priv(&w->req);

		e->mw_free = w->next;
		clist_unlink(&e->round, c);
		c->dstate = ENG_CLEAN;
		c->mw_busy = true;
		meta_snapshot(c, w->buf);
		memset(p, 0, sizeof *p);
		p->ch = c;
		p->bounce = w->buf;
		p->borrowed = true;
		e->round_mw++;
		step_go(e, &w->req, ST_WRITE_META);
	}
	if (!e->round.head && !e->round_mw && !e->round_sync) {
		e->round_sync = true;
		memset(priv(&e->sync_req), 0, sizeof(struct eng_priv));
		step_go(e, &e->sync_req, ST_FSYNC);
	}
}

static void mw_done(struct qbd_engine *e, struct qbd_engine_req *r, int err)
{
	struct eng_mw *w = (struct eng_mw *)r; /* req is its first member */
	struct eng_chunk *c = priv(r)->ch;

	c->mw_busy = false;
	if (err < 0) {
		qbd_err("engine", "metadata write of volume %016llx chunk %llu: %s",
			(unsigned long long)c->volume, (unsigned long long)c->chunk,
			strerror(-err));
		if (!e->round_err)
			e->round_err = err;
		c->flags_dirty = true;
		meta_dirty(e, c); /* the next round writes it again */
	} else if (c->dstate == ENG_CLEAN) {
		c->done_seq = e->sync_issued;
	}
	w->next = e->mw_free;
	e->mw_free = w;
	e->round_mw--;
	round_next(e);
}

/* The round's sync is complete: its requests are. A DELETE_VOLUME
 * waiting for the round runs before the next round starts. */
static void round_done(struct qbd_engine *e, int err)
{
	struct qbd_engine_req *r = e->rd_head;

	if (err == 0)
		err = e->round_err;
	if (err < 0)
		qbd_err("engine", "flush: %s", strerror(-err));
	e->rd_head = e->rd_tail = NULL;
	e->round_busy = false;
	e->round_sync = false;
	while (r) {
		struct qbd_engine_req *next = priv(r)->next;

		req_done(e, r, err < 0 ? err : r->op == QBD_ENGINE_FLUSH ? 0 : (int)r->length);
		r = next;
	}
	promise_run(e);
	round_kick(e);
}

/* An idempotent retry: the chunk is at the request's new version
 * already (the answer to the first was lost). The first may not be
 * durable yet: with FUA, the answer waits for the group commit as the
 * first one's would have. */
static void write_retried(struct qbd_engine *e, struct qbd_engine_req *r)
{
	if (r->flags & QBD_ENGINE_F_FUA) {
		req_release_chunk(e, r);
		flush_enqueue(e, r);
		return;
	}
	req_done(e, r, (int)r->length);
}

/* A WRITE/ZERO taken from its chunk's FIFO: check versions, then
 * activate its chunk in the log. */
static void write_start(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	uint64_t ver = c->version;

	r->version = ver;
	if (r->flags & QBD_ENGINE_F_RESYNC) {
		/* A flagged copy at that version is what the RESYNC replaces. */
		if (ver == r->new_version && !c->flags) {
			write_retried(e, r);
			return;
		}
	} else if (r->flags & QBD_ENGINE_F_REPAIR) {
		if (ver != r->expected_version || ver != r->new_version) {
			req_done(e, r, -ESTALE);
			return;
		}
	} else if (ver == r->new_version) {
		write_retried(e, r);
		return;
	} else if (ver != r->expected_version) {
		req_done(e, r, -ESTALE);
		return;
	}
	write_activate(e, r);
}

/* A WRITE/ZERO whose versions passed, its chunk active in the log: read
 * partial edge blocks that hold data, or go straight to write_apply. */
static void write_go(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	unsigned last = p->b0 + p->nb - 1;

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
		bool rd = r->op == QBD_ENGINE_READ || r->op == QBD_ENGINE_BITMAP ||
			  r->op == QBD_ENGINE_SCRUB;

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
		chunk_remove(e, c, false);
}

/* Delete a volume: synchronous writes of free-slot markers (the slots
 * keep their old data until a first writer zeroes them) and of the
 * promise, then a sync; only then do the chunks leave the activity log.
 * An administrative operation, rare; it blocks the loop for a moment. */
static int delete_volume(struct qbd_engine *e, uint64_t volume)
{
	uint8_t *blk;
	int r = 0, w;

	if (posix_memalign((void **)&blk, B, B))
		return -ENOMEM;
	for (unsigned h = 0; h < ENG_HASH; h++)
		for (struct eng_chunk *c = e->hash[h]; c; c = c->hnext) {
			if (c->volume != volume)
				continue;
			if (c->reading || c->writing || c->q_head) {
				r = -EBUSY;
				continue;
			}
			meta_free_marker((struct eng_meta *)blk);
			w = eng_pwrite(e, blk, B, meta_pos(e, c->slot));
			if (w < 0) {
				r = w;
			} else {
				e->held_blocks -= meta_held_blocks(c->meta);
				memcpy(c->meta, blk, B);
			}
		}
	for (unsigned i = 0; i < ENG_PROMISE_ENTRIES; i++)
		if (e->promises[i].volume == volume) {
			unsigned pb = i / (B / sizeof(struct eng_promise));
			memset(&e->promises[i], 0, sizeof e->promises[i]);
			memcpy(blk, (uint8_t *)e->promises + (size_t)pb * B, B);
			w = eng_pwrite(e, blk, B, ENG_PROMISE_OFF + (uint64_t)pb * B);
			if (w < 0)
				r = w;
		}
	w = eng_sync(e);
	if (w < 0 && r == 0)
		r = w;
	for (unsigned h = 0; h < ENG_HASH; h++) {
		struct eng_chunk *c = e->hash[h];
		while (c) {
			struct eng_chunk *next = c->hnext;
			if (c->volume == volume && c->meta->magic == ENG_MAGIC_FREE)
				chunk_remove(e, c, w == 0);
			c = next;
		}
	}
	al_kick(e);
	free(blk);
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
		/* a round's metadata writes may be in flight for its chunks */
		if (r->op == QBD_ENGINE_DELETE_VOLUME && e->round_busy)
			break;
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
		if (!c && (r->op == QBD_ENGINE_READ || r->op == QBD_ENGINE_BITMAP ||
			   r->op == QBD_ENGINE_SCRUB)) {
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
				r->version = 0; /* not held: the version the writer learns */
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
	case QBD_ENGINE_SCRUB:
		/* A whole-chunk request whatever offset and length say. */
		p->b0 = 0;
		p->nb = e->sb.chunk_size / B;
		c = chunk_find(e, r->volume, r->chunk);
		if (!c) {
			read_start(e, r);
			return;
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
		flush_enqueue(e, r);
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
	/* Inside qbd_engine_poll (a callback submitting more), poll submits
	 * everything once at the end; plugged, qbd_engine_unplug does;
	 * otherwise nothing else would. */
	if (!e->in_poll && !e->plugged)
		ring_submit(e);
}

void qbd_engine_plug(struct qbd_engine *e)
{
	e->plugged++;
}

void qbd_engine_unplug(struct qbd_engine *e)
{
	if (!e->plugged || --e->plugged)
		return;
	if (!e->in_poll)
		ring_submit(e);
}

/* The step's SQEs are all complete: move the request on. */
static void step_done(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	int v;

	if (e->io_hook)
		step_hook(e, r, true, p->err < 0 ? p->err : 0);
	if ((p->step == ST_FSYNC || p->step == ST_SLOT_SYNC) && p->err == 0 &&
	    p->sync_gen > e->sync_done) {
		e->sync_done = p->sync_gen;
		al_trim(e);
	}
	if (r == &e->al_req) {
		al_done(e, p->err < 0 ? p->err : p->got != B ? -EIO : 0);
		return;
	}
	if (p->step == ST_WRITE_META) {
		mw_done(e, r, p->err < 0 ? p->err : p->got != B ? -EIO : 0);
		return;
	}
	if (r == &e->sync_req) {
		round_done(e, p->err);
		return;
	}
	if (p->err < 0) {
		qbd_err("engine", "I/O error (step %d, volume %016llx chunk %llu): %s",
			p->step, (unsigned long long)r->volume,
			(unsigned long long)r->chunk, strerror(-p->err));
		if (p->step == ST_WRITE_DATA || p->step == ST_RESERVE) {
			undo_start(e, r, p->err);
			return;
		}
		req_done(e, r, p->step == ST_UNDO_ZERO ? p->undo_err : p->err);
		return;
	}
	if (p->got != step_bytes(p)) {
		qbd_err("engine", "short transfer (step %d, volume %016llx chunk %llu): "
			"%u of %u bytes", p->step, (unsigned long long)r->volume,
			(unsigned long long)r->chunk, p->got, step_bytes(p));
		/* A file takes a short write only when its filesystem is
		 * full (the rest would fail with ENOSPC). */
		if (p->step == ST_WRITE_DATA) {
			undo_start(e, r, e->blockdev ? -EIO : -ENOSPC);
			return;
		}
		req_done(e, r, -EIO);
		return;
	}
	switch (p->step) {
	case ST_SCRUB_READ:
		scrub_done(e, r);
		return;
	case ST_RESERVE:
		step_go(e, r, ST_WRITE_DATA);
		return;
	case ST_UNDO_ZERO:
		undo_next(e, r);
		return;
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
		p->rsv = 0; /* a RESYNC's next run is checked again */
		if (r->flags & QBD_ENGINE_F_RESYNC)
			resync_next(e, r);
		else
			write_commit(e, r);
		return;
	case ST_ZERO_DATA:
		if (r->flags & QBD_ENGINE_F_RESYNC)
			resync_next(e, r);
		else if (p->n_ext)
			step_go(e, r, ST_WRITE_DATA);
		else
			write_commit(e, r);
		return;
	case ST_SLOT_ZERO:
		step_go(e, r, ST_SLOT_SYNC);
		return;
	case ST_SLOT_SYNC:
		c->slot_dirty = false;
		write_activate(e, r);
		return;
	case ST_PROMISE_WRITE:
		step_go(e, r, ST_FSYNC);
		return;
	case ST_FSYNC:
		req_done(e, r, 0);
		return;
	}
}

static void cqe_handle(struct qbd_engine *e, struct qbd_engine_req *r, int res)
{
	struct eng_priv *p = priv(r);

	if (e->fault_eio && (p->step == ST_READ_DATA || p->step == ST_WRITE_DATA ||
			     p->step == ST_RMW_READ) &&
	    r->chunk >= e->fault_lo && r->chunk <= e->fault_hi)
		res = -EIO;
	if (res < 0) {
		if (!p->err)
			p->err = res;
	} else {
		p->got += (uint32_t)res;
	}
	if (--p->pending == 0)
		step_done(e, r);
}

/* Run the callbacks of the requests done (they may submit more: queued
 * until the caller submits). */
static void run_callbacks(struct qbd_engine *e)
{
	struct qbd_engine_req *d;

	while ((d = e->done_head)) {
		e->done_head = priv(d)->next;
		if (!e->done_head)
			e->done_tail = NULL;
		e->busy--;
		d->cb(d);
	}
}

void qbd_engine_poll(struct qbd_engine *e)
{
	struct io_uring_cqe *cqe;
	uint64_t x;
	bool get;

	if (read(e->efd, &x, sizeof x) == -1 && errno != EAGAIN)
		qbd_warn("engine", "eventfd read: %m");
	e->woken = false;
	e->in_poll = true;
	/* With deferred task work, completions are posted by a syscall:
	 * here, then the submission of each pass (or here again). */
	get = e->defer_taskrun;
	for (int round = 0; round < 64; round++) {
		struct qbd_engine_req *rq;
		unsigned head, n = 0;
		int err;

		if (get && (err = io_uring_get_events(&e->ring)) < 0)
			qbd_warn("engine", "io_uring_get_events: %s", strerror(-err));
		io_uring_for_each_cqe(&e->ring, head, cqe) {
			struct qbd_engine_req *r = io_uring_cqe_get_data(cqe);
			int res = cqe->res;

			n++;
			e->inflight--;
			io_uring_cqe_seen(&e->ring, cqe); /* free the slot first */
			cqe_handle(e, r, res);
			/* Callbacks at once: what they submit is queued, and
			 * goes out in groups of ENG_SUBMIT_BATCH, or at once
			 * after a large transfer (its checksums took a
			 * while), so that the device is not left waiting for
			 * the whole pass (a pass of 16 completions takes
			 * 50 to 100 us). */
			run_callbacks(e);
			if (e->pending_sqes >= ENG_SUBMIT_BATCH ||
			    (res >= (int)ENG_BIG_IO && e->pending_sqes))
				ring_submit(e);
		}
		/* Parked requests get another chance at SQEs, in order. */
		rq = e->retry_head;
		e->retry_head = e->retry_tail = NULL;
		e->retrying = true;
		while (rq) {
			struct qbd_engine_req *next = priv(rq)->next;
			step_issue(e, rq);
			rq = next;
		}
		e->retrying = false;
		run_callbacks(e);
		/* Ask again only for completions that came during the pass
		 * (the kernel flags them in the SQ ring): at queue depth 1
		 * this saves a syscall per request. */
		get = e->defer_taskrun && !e->pending_sqes &&
		      (!e->taskrun_flag ||
		       (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_TASKRUN));
		ring_submit(e);
		if (n == 0 && !e->done_head)
			break;
	}
	e->in_poll = false;
	if (e->done_head) { /* more than the passes allowed: come back */
		e->woken = false;
		eng_wake(e);
	}
}
