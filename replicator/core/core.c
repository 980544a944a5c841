/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Quorum core: versioning decisions of one placement group. See core.h and
 * docs/parts/quorum-client.md. Allocation only in qbd_pg_init and
 * qbd_pg_replica_open (a setup/reconnect path).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/core/core.h"

static bool bit_get(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1u;
}

static void stale_set(struct qbd_pg *pg, unsigned r, uint64_t c)
{
	uint64_t m = 1ull << (c % 64);

	if (!(pg->stale[r][c / 64] & m)) {
		pg->stale[r][c / 64] |= m;
		pg->nstale[r]++;
	}
}

static void stale_clear(struct qbd_pg *pg, unsigned r, uint64_t c)
{
	uint64_t m = 1ull << (c % 64);

	if (pg->stale[r][c / 64] & m) {
		pg->stale[r][c / 64] &= ~m;
		pg->nstale[r]--;
	}
}

int qbd_pg_init(struct qbd_pg *pg, unsigned replicas, unsigned write_quorum,
		uint64_t nchunks)
{
	size_t words = (nchunks + 63) / 64;

	memset(pg, 0, sizeof(*pg));
	if (replicas == 0 || replicas > QBD_PG_MAX_REPLICAS ||
	    write_quorum == 0 || write_quorum > replicas || nchunks == 0)
		return -EINVAL;
	pg->nreplicas = replicas;
	pg->write_quorum = write_quorum;
	pg->nchunks = nchunks;
	pg->version = calloc(nchunks, sizeof(uint64_t));
	pg->acked = calloc(nchunks, sizeof(uint64_t));
	if (!pg->version || !pg->acked)
		goto nomem;
	for (unsigned r = 0; r < replicas; r++) {
		pg->stale[r] = calloc(words, sizeof(uint64_t));
		if (!pg->stale[r])
			goto nomem;
	}
	return 0;
nomem:
	qbd_pg_destroy(pg);
	return -ENOMEM;
}

void qbd_pg_destroy(struct qbd_pg *pg)
{
	free(pg->version);
	free(pg->acked);
	for (unsigned r = 0; r < QBD_PG_MAX_REPLICAS; r++)
		free(pg->stale[r]);
	memset(pg, 0, sizeof(*pg));
}

int qbd_pg_replica_open(struct qbd_pg *pg, unsigned r,
			const struct qbd_chunk_version *list, size_t n)
{
	uint64_t *rv;

	if (r >= pg->nreplicas)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (list[i].chunk >= pg->nchunks)
			return -EINVAL;
	rv = calloc(pg->nchunks, sizeof(uint64_t));
	if (!rv)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		rv[list[i].chunk] = list[i].version;
	for (uint64_t c = 0; c < pg->nchunks; c++) {
		if (!pg->opened && rv[c] > pg->version[c]) {
			/* A newer version: everyone merged so far lacks it. */
			pg->version[c] = rv[c];
			for (unsigned o = 0; o < pg->nreplicas; o++)
				if (o != r)
					stale_set(pg, o, c);
		}
		if (rv[c] == pg->version[c])
			stale_clear(pg, r, c);
		else
			stale_set(pg, r, c);
	}
	free(rv);
	pg->up[r] = true;
	return 0;
}

int qbd_pg_open_done(struct qbd_pg *pg)
{
	pg->opened = true;
	/* Replicas that never promised lack every chunk that has data. */
	for (unsigned r = 0; r < pg->nreplicas; r++) {
		if (pg->up[r])
			continue;
		for (uint64_t c = 0; c < pg->nchunks; c++)
			if (pg->version[c] > 0)
				stale_set(pg, r, c);
	}
	return qbd_pg_up_count(pg) >= pg->write_quorum ? 0 : -EIO;
}

void qbd_pg_replica_down(struct qbd_pg *pg, unsigned r)
{
	if (r < pg->nreplicas)
		pg->up[r] = false;
}

bool qbd_pg_is_stale(const struct qbd_pg *pg, unsigned r, uint64_t chunk)
{
	return r < pg->nreplicas && chunk < pg->nchunks &&
	       bit_get(pg->stale[r], chunk);
}

unsigned qbd_pg_up_count(const struct qbd_pg *pg)
{
	unsigned n = 0;

	for (unsigned r = 0; r < pg->nreplicas; r++)
		n += pg->up[r];
	return n;
}

static void op_start(struct qbd_pg *pg, struct qbd_pg_op *op, uint32_t targets)
{
	op->targets = targets;
	op->pending = targets;
	op->nok = 0;
	op->done = false;
	op->result = 0;
	for (unsigned r = 0; r < pg->nreplicas; r++)
		if (targets & (1u << r))
			pg->outstanding[r]++;
}

int qbd_pg_write_begin(struct qbd_pg *pg, uint64_t chunk, struct qbd_pg_op *op)
{
	uint32_t targets = 0;
	unsigned n = 0;

	memset(op, 0, sizeof(*op));
	op->kind = QBD_PG_WRITE;
	op->chunk = chunk;
	if (pg->fenced)
		return -EPERM;
	if (chunk >= pg->nchunks)
		return -EINVAL;
	for (unsigned r = 0; r < pg->nreplicas; r++) {
		if (pg->up[r] && !bit_get(pg->stale[r], chunk)) {
			targets |= 1u << r;
			n++;
		}
	}
	if (n < pg->write_quorum)
		return -EIO;
	op->expected = pg->version[chunk];
	op->new_version = op->expected + 1;
	pg->version[chunk] = op->new_version;
	/* Replicas not written now lack the new version. */
	for (unsigned r = 0; r < pg->nreplicas; r++)
		if (!(targets & (1u << r)))
			stale_set(pg, r, chunk);
	op_start(pg, op, targets);
	return 0;
}

int qbd_pg_flush_begin(struct qbd_pg *pg, struct qbd_pg_op *op)
{
	uint32_t targets = 0;
	unsigned n = 0;

	memset(op, 0, sizeof(*op));
	op->kind = QBD_PG_FLUSH;
	if (pg->fenced)
		return -EPERM;
	for (unsigned r = 0; r < pg->nreplicas; r++) {
		if (pg->up[r]) {
			targets |= 1u << r;
			n++;
		}
	}
	if (n < pg->write_quorum)
		return -EIO;
	op_start(pg, op, targets);
	return 0;
}

void qbd_pg_repair_begin(struct qbd_pg *pg, uint64_t chunk, uint64_t version,
			 unsigned r, struct qbd_pg_op *op)
{
	memset(op, 0, sizeof(*op));
	op->kind = QBD_PG_REPAIR;
	op->chunk = chunk;
	op->expected = version;
	op->new_version = version;
	op_start(pg, op, 1u << r);
}

static unsigned popcount32(uint32_t x)
{
	return (unsigned)__builtin_popcount(x);
}

bool qbd_pg_op_reply(struct qbd_pg *pg, struct qbd_pg_op *op, unsigned r,
		     int status)
{
	uint32_t bit = 1u << r;
	unsigned need;

	if (r >= pg->nreplicas || !(op->pending & bit))
		return false;
	op->pending &= ~bit;
	if (pg->outstanding[r])
		pg->outstanding[r]--;
	if (status == -EPERM)
		pg->fenced = true;
	if (status == 0)
		op->nok++;
	else if (op->kind == QBD_PG_WRITE)
		stale_set(pg, r, op->chunk);
	if (op->done)
		return false;
	need = op->kind == QBD_PG_REPAIR ? 1 : pg->write_quorum;
	if (status == -EPERM) {
		op->result = -EPERM;
	} else if (op->nok >= need) {
		op->result = 0;
		if (op->kind == QBD_PG_WRITE &&
		    pg->acked[op->chunk] < op->new_version)
			pg->acked[op->chunk] = op->new_version;
	} else if (op->nok + popcount32(op->pending) < need) {
		op->result = op->kind == QBD_PG_REPAIR ? status : -EIO;
	} else {
		return false;
	}
	op->done = true;
	return true;
}

static int read_pick(const struct qbd_pg *pg, uint64_t chunk, uint32_t tried)
{
	int best = -1;

	for (unsigned r = 0; r < pg->nreplicas; r++) {
		if (!pg->up[r] || (tried & (1u << r)) ||
		    bit_get(pg->stale[r], chunk))
			continue;
		if (best < 0 || (pg->local[r] && !pg->local[best]) ||
		    (pg->local[r] == pg->local[best] &&
		     pg->outstanding[r] < pg->outstanding[best]))
			best = (int)r;
	}
	return best < 0 ? -EIO : best;
}

int qbd_pg_read_pick(const struct qbd_pg *pg, uint64_t chunk, uint32_t tried)
{
	if (chunk >= pg->nchunks)
		return -EINVAL;
	return read_pick(pg, chunk, tried);
}

static int read_next(struct qbd_pg *pg, struct qbd_pg_read *rd)
{
	int r = read_pick(pg, rd->chunk, rd->tried);

	if (r < 0)
		return r;
	rd->replica = r;
	rd->tried |= 1u << r;
	pg->outstanding[r]++;
	return 0;
}

int qbd_pg_read_begin(struct qbd_pg *pg, uint64_t chunk, struct qbd_pg_read *rd)
{
	memset(rd, 0, sizeof(*rd));
	rd->chunk = chunk;
	rd->replica = -1;
	if (pg->fenced)
		return -EPERM;
	if (chunk >= pg->nchunks)
		return -EINVAL;
	rd->min_version = pg->acked[chunk];
	return read_next(pg, rd);
}

int qbd_pg_read_reply(struct qbd_pg *pg, struct qbd_pg_read *rd, int status,
		      uint64_t version)
{
	unsigned r = (unsigned)rd->replica;
	int err;

	if (pg->outstanding[r])
		pg->outstanding[r]--;
	if (status == -EPERM) {
		pg->fenced = true;
		return -EPERM;
	}
	if (status == 0 && version < rd->min_version) {
		/* Missed an acknowledged write: lacks it. */
		stale_set(pg, r, rd->chunk);
		status = -ESTALE;
	}
	if (status == 0) {
		rd->version = version;
		return 0;
	}
	if (status == -ESTALE)
		stale_set(pg, r, rd->chunk);
	if (status == -EBADMSG)
		rd->bad |= 1u << r;
	if (!rd->first_err)
		rd->first_err = status;
	err = read_next(pg, rd);
	if (err < 0)
		return rd->first_err ? rd->first_err : err;
	return 1;
}
