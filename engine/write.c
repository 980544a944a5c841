/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The write path: WRITE, ZERO and RESYNC from the version check to the
 * chunk's new metadata in memory: the first write into a slot holding
 * old data zeroes it; partial edge blocks are read and merged; blocks
 * that become holes are zeroed on disk; in a file store, the holes of a
 * write that also overwrites data are allocated first; a failed data
 * write zeroes again the holes it may have written (undo).
 *
 * A RESYNC WRITE covers the whole chunk: it skips the version check (only
 * the idempotent-retry test remains), turns all-zero blocks into holes and
 * writes the data blocks in runs, at most two runs per step.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

static bool in_ext(const struct eng_priv *p, unsigned b)
{
	for (unsigned x = 0; x < p->n_ext; x++)
		if (b >= p->ext_b[x] && b < p->ext_b[x] + p->ext_n[x])
			return true;
	return false;
}

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

/* Issue the data write of the extents. Full filesystems: a direct
 * write that overwrites blocks holding data and allocates holes can
 * write the former, then fail the latter with ENOSPC (ext4 does),
 * leaving blocks that match neither their checksums nor the chunk's
 * version. So the holes of such a write are allocated first (ST_RESERVE,
 * fallocate; they still read as zeros), the next one or two runs per
 * step: a full filesystem then fails the write before any of its blocks
 * is written. */
static void write_data(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	enum eng_step step = ST_WRITE_DATA;

	if (p->rsv != 2) {
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
	eng_step_go(e, r, step);
}

/* An idempotent retry: the chunk is at the request's new version
 * already (the answer to the first was lost). The first may not be
 * durable yet: with FUA, the answer waits for the group commit as the
 * first one's would have. */
static void write_retried(struct qbd_engine *e, struct qbd_engine_req *r)
{
	if (r->flags & QBD_ENGINE_F_FUA) {
		eng_req_release_chunk(e, r);
		eng_flush_enqueue(e, r);
		return;
	}
	eng_req_done(e, r, (int)r->length);
}

/* Which blocks of a write's range become holes: none, those outside
 * the extents read for the merge (a ZERO), those that hold only zeros
 * (a RESYNC). */
enum hole_rule { HOLE_NONE = 0, HOLE_UNREAD, HOLE_ZEROS };

/* The request's blocks in metadata m: holes as the rule says, the
 * others written with the checksum of their data in p->bounce; m is
 * the chunk at the request's new version. */
static void meta_set_blocks(struct eng_meta *m, struct qbd_engine_req *r, enum hole_rule rule)
{
	struct eng_priv *p = priv(r);

	for (unsigned i = 0; i < p->nb; i++) {
		unsigned b = p->b0 + i;
		const uint8_t *data = p->bounce + (size_t)i * B;
		bool hole = (rule == HOLE_UNREAD && !in_ext(p, b)) ||
			    (rule == HOLE_ZEROS && all_zero(data, B));

		bit_set(m->written, b, !hole);
		m->block_csum[b] = hole ? 0 : eng_csum(data, B);
	}
	m->magic = ENG_MAGIC_META;
	m->volume = p->ch->volume;
	m->chunk = p->ch->chunk;
	m->version = r->new_version;
}

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
	uint64_t held = eng_meta_held_blocks(m);
	bool bad = false;

	if (r->flags & QBD_ENGINE_F_RESYNC) {
		memcpy(m, p->meta_copy, B);
		memset(c->bad, 0, sizeof c->bad);
		eng_chunk_set_flags(e, c, 0);
	} else {
		/* a ZERO keeps data only in the partial blocks it read */
		meta_set_blocks(m, r, r->op == QBD_ENGINE_ZERO ? HOLE_UNREAD : HOLE_NONE);
		if (c->flags & QBD_ENGINE_CHUNK_DAMAGED) {
			for (unsigned i = 0; i < p->nb; i++)
				bit_set(c->bad, p->b0 + i, false);
			for (unsigned i = 0; i < ENG_BLOCKS_MAX / 64; i++)
				bad |= c->bad[i] != 0;
			if (!bad)
				eng_chunk_set_flags(e, c, c->flags & ~QBD_ENGINE_CHUNK_DAMAGED);
		}
	}
	e->held_blocks += eng_meta_held_blocks(m) - held;
	c->version = r->new_version;
	r->version = c->version;
	eng_meta_dirty(e, c);
	if (r->flags & QBD_ENGINE_F_FUA) {
		eng_req_release_chunk(e, r);
		eng_flush_enqueue(e, r);
		return;
	}
	eng_req_done(e, r, (int)r->length);
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
	meta_set_blocks(m, r, HOLE_ZEROS);
	memset(m->bad, 0, sizeof m->bad);
	m->flags = 0;
	return 0;
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
			eng_step_go(e, r, ST_ZERO_DATA);
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
		write_data(e, r);
	else
		write_commit(e, r);
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
			eng_req_done(e, r, err);
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
		eng_step_go(e, r, ST_ZERO_DATA);
		return;
	}
#endif
	if (p->n_ext)
		write_data(e, r);
	else
		write_commit(e, r);
}

/* A WRITE/ZERO whose versions passed, its chunk active in the log: read
 * partial edge blocks that hold data, or go straight to write_apply. */
void eng_write_go(struct qbd_engine *e, struct qbd_engine_req *r)
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
	if ((r->op == QBD_ENGINE_WRITE || p->n_ext) && eng_bounce_get(p, r) < 0) {
		eng_req_done(e, r, -ENOMEM);
		return;
	}
	if (p->n_ext) {
		eng_step_go(e, r, ST_RMW_READ);
		return;
	}
	write_apply(e, r);
}

/* Before the first write of a chunk that is not active: a new chunk in a
 * slot with old data zeroes the slot durably first (holes must read as
 * zeros, see "Activity log" in docs/design.md); then the chunk's bit
 * must be durable in the log (eng_al_activate). */
static void write_activate(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_chunk *c = priv(r)->ch;

#ifndef QBD_ENGINE_MUTANT_NO_HOLE_ZERO
	if (c->slot_dirty && c->meta->magic != ENG_MAGIC_META) {
		eng_step_go(e, r, ST_SLOT_ZERO);
		return;
	}
#endif
	c->slot_dirty = false;
	eng_al_activate(e, r);
}

/* A WRITE/ZERO taken from its chunk's FIFO: check versions, then
 * activate its chunk in the log. */
void eng_write_start(struct qbd_engine *e, struct qbd_engine_req *r)
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
			eng_req_done(e, r, -ESTALE);
			return;
		}
	} else if (ver == r->new_version) {
		write_retried(e, r);
		return;
	} else if (ver != r->expected_version) {
		eng_req_done(e, r, -ESTALE);
		return;
	}
	write_activate(e, r);
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
		eng_req_done(e, r, p->undo_err);
		return;
	}
	eng_step_go(e, r, ST_UNDO_ZERO);
}

void eng_undo_start(struct qbd_engine *e, struct qbd_engine_req *r, int err)
{
	struct eng_priv *p = priv(r);

	p->undo_err = err;
	p->cursor = p->ext_b[0]; /* extents are in ascending order */
	undo_next(e, r);
}

/* A step of the write path is complete, without error or short
 * transfer (eng_step_done handles those): on to the next. */
void eng_write_step_done(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	int v;

	switch (p->step) {
	case ST_RMW_READ:
		v = eng_verify_blocks(e, p->ch, p);
		if (v < 0) {
			eng_req_done(e, r, v);
			return;
		}
		write_apply(e, r);
		return;
	case ST_RESERVE:
		write_data(e, r);
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
			write_data(e, r);
		else
			write_commit(e, r);
		return;
	case ST_SLOT_ZERO:
		eng_step_go(e, r, ST_SLOT_SYNC);
		return;
	case ST_SLOT_SYNC:
		p->ch->slot_dirty = false;
		write_activate(e, r);
		return;
	case ST_UNDO_ZERO:
		undo_next(e, r);
		return;
	}
}
