/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Crash recovery at open (docs/design.md, "Recovery"): every slot the
 * activity log names may have had writes in flight; its chunk's blocks
 * are checked against their checksums and the chunk is marked SUSPECT
 * where they changed, free slots it names are marked as holding old
 * data; then the log is emptied.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

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
	eng_chunk_set_flags(e, c, c->flags | QBD_ENGINE_CHUNK_SUSPECT);
#endif
	m->flags = c->flags;
	memcpy(m->bad, c->bad, sizeof m->bad);
	m->checksum = eng_meta_checksum(m);
	*rewrote = true;
	return eng_pwrite(e, m, B, meta_pos(e, c->slot));
}

/*
 * Crash recovery at open: read the activity log; recover every chunk it
 * names; mark free slots it names as holding old data (a first write
 * may have landed); make that durable, then empty the log. A log block
 * that fails its checksum names every slot it covers.
 */
int eng_recover(struct qbd_engine *e)
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

		if (a->magic == ENG_MAGIC_AL && eng_al_checksum(a) == a->checksum && a->index == i) {
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

		if (!eng_al_bit_test(e, s))
			continue;
		named++;
		if (e->free_map[s] == 1) {
			c = eng_chunk_at_slot(e, s);
			r = recover_chunk(e, c, data, &sus, &rewrote);
			suspect += sus;
			if (sus)
				qbd_warn("engine", "recovery: volume %016llx chunk %llu is suspect "
					 "(writes were in flight)", (unsigned long long)c->volume,
					 (unsigned long long)c->chunk);
		} else if (e->free_map[s] == 0) {
			m = (struct eng_meta *)data;
			eng_meta_free_marker(m);
			r = eng_pwrite(e, m, B, meta_pos(e, s));
			e->free_map[s] = 2;
			rewrote = true;
		}
	}
	free(data);
	if (r == 0 && rewrote)
		r = eng_sync(e);
	if (r == 0)
		r = eng_al_clear_all(e);
	if (r == 0 && named)
		qbd_warn("engine", "recovery: %llu slots in the activity log, %llu chunks suspect",
			 (unsigned long long)named, (unsigned long long)suspect);
	if (r < 0)
		qbd_err("engine", "recovery: %s", strerror(-r));
	return r;
}
