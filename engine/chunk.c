/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The chunk table: the chunks held in memory (a hash by volume and chunk,
 * and an index by slot), slot allocation, the list of flagged chunks, and
 * each chunk's FIFO of requests: any number of READs, or one WRITE/ZERO
 * alone, so that writes land in arrival order and a read sees exactly the
 * writes submitted before it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

/* Written blocks of a chunk (space accounting). */
uint64_t eng_meta_held_blocks(const struct eng_meta *m)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < ENG_BLOCKS_MAX / 64; i++)
		n += (uint64_t)__builtin_popcountll(m->written[i]);
	return n;
}

static unsigned chunk_hash(uint64_t volume, uint64_t chunk)
{
	uint64_t h = volume * 0x9e3779b97f4a7c15ull ^ (chunk + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull;
	return (unsigned)(h >> 48) % ENG_HASH;
}

struct eng_chunk *eng_chunk_find(const struct qbd_engine *e, uint64_t volume,
				 uint64_t chunk)
{
	for (struct eng_chunk *c = e->hash[chunk_hash(volume, chunk)]; c; c = c->hnext)
		if (c->volume == volume && c->chunk == chunk)
			return c;
	return NULL;
}

struct eng_chunk *eng_chunk_add(struct qbd_engine *e, uint64_t volume,
				uint64_t chunk, uint64_t slot)
{
	struct eng_chunk *c = calloc(1, sizeof *c);
	unsigned h = chunk_hash(volume, chunk);

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

struct eng_chunk *eng_chunk_at_slot(const struct qbd_engine *e, uint64_t slot)
{
	for (unsigned h = 0; h < ENG_HASH; h++)
		for (struct eng_chunk *c = e->hash[h]; c; c = c->hnext)
			if (c->slot == slot)
				return c;
	return NULL;
}

/* Set a chunk's flags, keeping the list of flagged chunks (most
 * recently flagged last). */
void eng_chunk_set_flags(struct qbd_engine *e, struct eng_chunk *c, uint32_t flags)
{
	if (!c->flags && flags)
		qbd_queue_push(&e->flagged, &c->flagged_link);
	else if (c->flags && !flags)
		qbd_queue_remove(&e->flagged, &c->flagged_link);
	c->flags = flags;
}

/* Take a free slot for a new chunk. 0, -ENOSPC or -ENOMEM. */
int eng_chunk_alloc(struct qbd_engine *e, uint64_t volume, uint64_t chunk,
		    struct eng_chunk **out)
{
	for (uint64_t i = 0; i < e->sb.nslots; i++) {
		if (e->free_map[i] == 1)
			continue;
		*out = eng_chunk_add(e, volume, chunk, i);
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

/* Forget a chunk. Its slot becomes free; free with old data (to be zeroed
 * before reuse) if anything may have been written to it. With al_clear
 * its log bit goes too (its state is durable: DELETE_VOLUME after its
 * sync); otherwise the bit stays for the recovery to look at. */
void eng_chunk_remove(struct qbd_engine *e, struct eng_chunk *c, bool al_clear)
{
	struct eng_chunk **pp = &e->hash[chunk_hash(c->volume, c->chunk)];
	bool dirty = c->meta->magic != 0 || c->slot_dirty || c->al_active ||
		     eng_al_bit_test(e, c->slot);

	assert(!c->mw_busy);
	eng_chunk_set_flags(e, c, 0);
	eng_commit_forget(e, c);
	eng_al_forget(e, c, al_clear);
	while (*pp != c)
		pp = &(*pp)->hnext;
	*pp = c->hnext;
	e->free_map[c->slot] = dirty ? 2 : 0;
	e->by_slot[c->slot] = NULL;
	e->used_slots--;
	free(c->meta);
	free(c);
}

/* Start what can run from the head of the chunk's FIFO: any number of
 * READs, or one WRITE/ZERO alone. Frees a chunk that ends up idle and
 * never written (a first write that failed). */
void eng_chunk_run_next(struct qbd_engine *e, struct eng_chunk *c)
{
	struct qbd_engine_req *r;

	if (c->in_run)
		return;
	c->in_run = true;
	while ((r = reqq_first(&c->q))) {
		bool rd = req_reads(r);

		if (c->writing || (!rd && c->reading))
			break;
		reqq_pop(&c->q);
		if (rd)
			c->reading++;
		else
			c->writing = true;
		priv(r)->ch = c;
		if (rd)
			eng_read_start(e, r);
		else
			eng_write_start(e, r);
	}
	c->in_run = false;
	if (c->meta->magic == 0 && !c->reading && !c->writing && qbd_queue_empty(&c->q))
		eng_chunk_remove(e, c, false);
}

/* The request is done with its chunk: start what waits in its FIFO. */
void eng_req_release_chunk(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_chunk *c = priv(r)->ch;

	priv(r)->ch = NULL;
	if (req_reads(r)) {
		c->reading--;
	} else {
		c->writing = false;
		eng_al_written(e, c);
	}
	eng_chunk_run_next(e, c); /* may free c */
}

/* Queue a request at the tail of its chunk's FIFO and start what can
 * run. */
void eng_chunk_enqueue(struct qbd_engine *e, struct eng_chunk *c, struct qbd_engine_req *r)
{
	reqq_push(&c->q, r);
	eng_chunk_run_next(e, c);
}
