/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's on-disk format (docs/design.md, "Engine"): formatting a
 * store, the superblock, loading the metadata table at open, and the
 * checksums of the on-disk structures. The structures themselves are in
 * internal.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

uint64_t eng_meta_checksum(const struct eng_meta *m)
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

uint64_t eng_al_checksum(const struct eng_al *a)
{
	struct eng_al tmp;

	memcpy(&tmp, a, sizeof tmp);
	tmp.checksum = 0;
	return XXH3_64bits(&tmp, sizeof tmp);
}

int eng_write_super(struct qbd_engine *e)
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
void eng_meta_free_marker(struct eng_meta *m)
{
	memset(m, 0, sizeof *m);
	m->magic = ENG_MAGIC_FREE;
	m->checksum = eng_meta_checksum(m);
}

/* Format. clean: the data area is known to read as zeros (a file this
 * open created); otherwise every slot starts marked as holding old data. */
static int format_store(struct qbd_engine *e, uint64_t size, uint32_t chunk_size, bool clean)
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
				eng_meta_free_marker((struct eng_meta *)(buf + b * B));
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

int eng_load(struct qbd_engine *e)
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
			if (eng_meta_checksum(m) != m->checksum) {
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
			c = eng_chunk_add(e, m->volume, m->chunk, slot);
			if (!c) {
				r = -ENOMEM;
				break;
			}
			memcpy(c->meta, m, B);
			c->version = m->version;
			memcpy(c->bad, m->bad, sizeof c->bad);
			eng_chunk_set_flags(e, c, m->flags & (QBD_ENGINE_CHUNK_SUSPECT |
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

/* Read the superblock of a store of size bytes: format it if block 0
 * is all zeros (a new store; clean: the data area reads as zeros),
 * else check it: its format, its checksum, and the chunk size asked for
 * (asked_cs, 0 for any). */
int eng_super_open(struct qbd_engine *e, const char *path, uint64_t size,
		   uint32_t chunk_size, uint32_t asked_cs, bool clean)
{
	uint8_t *blk;
	int r;

	if (posix_memalign((void **)&blk, B, B))
		return -ENOMEM;
	r = size >= B ? qbd_pread_full(e->fd, blk, B, 0) : -ENOSPC;
	if (r < 0)
		goto out;
	memcpy(&e->sb, blk, sizeof e->sb);
	if (e->sb.magic != ENG_MAGIC_SB) {
		if (!all_zero(blk, B)) {
			qbd_err("engine", "%s holds data that is not a qbd store; "
				"refusing to format it", path);
			r = -EEXIST;
			goto out;
		}
		r = format_store(e, size, chunk_size, clean);
	} else if (e->sb.format != ENG_FORMAT) {
		qbd_err("engine", "%s: a store of format %u; this qbd reads format %u only "
			"(no conversion: move its data off and format it again)", path,
			e->sb.format, ENG_FORMAT);
		r = -EUCLEAN;
	} else if (super_checksum(&e->sb) != e->sb.checksum) {
		qbd_err("engine", "%s: bad superblock checksum", path);
		r = -EUCLEAN;
	} else if (asked_cs && asked_cs != e->sb.chunk_size) {
		qbd_err("engine", "%s: chunk size %u, asked for %u", path,
			e->sb.chunk_size, asked_cs);
		r = -EINVAL;
	}
out:
	free(blk);
	return r;
}
