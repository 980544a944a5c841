/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read path: READ, BITMAP and SCRUB. Every written block read is
 * checked against its checksum; a block that fails is recorded as bad
 * and its chunk flagged DAMAGED. Holes read as zeros without I/O.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

/* Verify the checksum of every written block of the extents in bounce.
 * A block that fails is recorded as bad and the chunk flagged DAMAGED. */
int eng_verify_blocks(struct qbd_engine *e, struct eng_chunk *c,
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
				eng_chunk_set_flags(e, c, c->flags | QBD_ENGINE_CHUNK_DAMAGED);
				c->flags_dirty = true;
				r = -EBADMSG;
			}
		}
	return r;
}

/* Read blocks b0 .. b0 + nb - 1 into p->bounce, in one I/O. */
static void read_range(struct qbd_engine *e, struct qbd_engine_req *r, enum eng_step step)
{
	struct eng_priv *p = priv(r);

	p->n_ext = 1;
	p->ext_b[0] = p->b0;
	p->ext_n[0] = p->nb;
	eng_step_go(e, r, step);
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
		eng_req_done(e, r, 0);
		return;
	}
	p->b0 = first;
	p->nb = last + 1 - first;
	if (posix_memalign((void **)&p->bounce, B, (size_t)p->nb * B)) {
		p->bounce = NULL;
		eng_req_done(e, r, -ENOMEM);
		return;
	}
	read_range(e, r, ST_SCRUB_READ);
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
		eng_chunk_set_flags(e, c, c->flags | QBD_ENGINE_CHUNK_DAMAGED);
		if (bm)
			bm[b / 8] |= (uint8_t)(1u << (b % 8));
	}
	eng_req_done(e, r, bytes);
}

/* BITMAP: which blocks of the range hold data (from memory). */
static void read_bitmap(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	uint8_t *bm = r->buf;

	memset(bm, 0, (p->nb + 7) / 8);
	for (unsigned i = 0; c && i < p->nb; i++)
		if (bit_test(c->meta->written, p->b0 + i))
			bm[i / 8] |= (uint8_t)(1u << (i % 8));
	eng_req_done(e, r, 0);
}

/* Start a READ, BITMAP or SCRUB taken from its chunk's FIFO (or of a
 * chunk never written: p->ch NULL). A READ of holes only is answered
 * without I/O. */
void eng_read_start(struct qbd_engine *e, struct qbd_engine_req *r)
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
		read_bitmap(e, r);
		return;
	}
	for (unsigned i = 0; c && i < p->nb; i++)
		any |= bit_test(c->meta->written, p->b0 + i);
	if (!any) {
		memset(r->buf, 0, r->length);
		eng_req_done(e, r, (int)r->length);
		return;
	}
	if (eng_bounce_get(p, r) < 0) {
		eng_req_done(e, r, -ENOMEM);
		return;
	}
	read_range(e, r, ST_READ_DATA);
}

/* READ data read: verify it, holes read as zeros, copy out. */
static void read_done(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	struct eng_chunk *c = p->ch;
	int v;

	v = eng_verify_blocks(e, c, p);
	if (v < 0) {
		eng_req_done(e, r, v);
		return;
	}
	for (unsigned i = 0; i < p->nb; i++)
		if (!bit_test(c->meta->written, p->b0 + i))
			memset(p->bounce + (size_t)i * B, 0, B);
	if (!p->borrowed)
		memcpy(r->buf, p->bounce + (r->offset - p->b0 * B), r->length);
	eng_req_done(e, r, (int)r->length);
}

/* A READ's or SCRUB's read is complete, without error or short
 * transfer (eng_step_done handles those). */
void eng_read_step_done(struct qbd_engine *e, struct qbd_engine_req *r)
{
	if (priv(r)->step == ST_SCRUB_READ)
		scrub_done(e, r);
	else
		read_done(e, r);
}
