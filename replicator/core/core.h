/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The quorum core: the writer-side state machine of one placement group
 * (in v1 a volume is one placement group). Pure: no I/O, no clock, no
 * allocation after qbd_pg_init. libqbd feeds it events (replica opened,
 * replica down, replies) and sends what it decides.
 *
 * State: per replica up/down and a stale bitmap (chunks the replica is
 * known to lack at version V[c]); per chunk V[c] (the writer's version)
 * and acked[c] (highest version acknowledged to the user).
 *
 * Ops (struct qbd_pg_op) are caller-owned; each one completes exactly once
 * (the *_reply call that returns true), and late replies after completion
 * still update the stale state. The caller keeps an op until every target
 * has replied (op->pending == 0).
 */
#ifndef QBD_CORE_H
#define QBD_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QBD_PG_MAX_REPLICAS 5

/* One entry of a replica's OPEN reply. */
struct qbd_chunk_version {
	uint64_t chunk;
	uint64_t version;
};

struct qbd_pg {
	unsigned nreplicas;      /* R */
	unsigned write_quorum;   /* W */
	uint64_t nchunks;
	uint64_t *version;       /* V[c], nchunks entries */
	uint64_t *acked;         /* acked[c] */
	uint64_t *stale[QBD_PG_MAX_REPLICAS]; /* bitmaps of nchunks bits */
	uint64_t nstale[QBD_PG_MAX_REPLICAS];
	bool up[QBD_PG_MAX_REPLICAS];
	bool local[QBD_PG_MAX_REPLICAS];      /* in the client's zone */
	unsigned outstanding[QBD_PG_MAX_REPLICAS];
	bool opened;             /* initial open done: merges no longer raise V */
	bool fenced;             /* a replica answered -EPERM */
};

/* 0, -EINVAL (bad r/w), -ENOMEM. Free with qbd_pg_destroy. */
int qbd_pg_init(struct qbd_pg *pg, unsigned replicas, unsigned write_quorum,
		uint64_t nchunks);
void qbd_pg_destroy(struct qbd_pg *pg);

/*
 * Replica r promised the epoch and reported its chunk versions (chunks not
 * listed are at version 0). Before qbd_pg_open_done, V[c] is raised to the
 * maximum seen and replicas below it become stale; afterwards (a reconnect)
 * the replica is stale for every chunk where its version differs from V[c].
 * Marks r up. 0, -EINVAL (r or a chunk out of range), -ENOMEM.
 */
int qbd_pg_replica_open(struct qbd_pg *pg, unsigned r,
			const struct qbd_chunk_version *list, size_t n);
/* End the initial open: 0 if >= W replicas are up, else -EIO. */
int qbd_pg_open_done(struct qbd_pg *pg);
/* Connection lost. The caller then fails r's in-flight ops via *_reply. */
void qbd_pg_replica_down(struct qbd_pg *pg, unsigned r);
bool qbd_pg_is_stale(const struct qbd_pg *pg, unsigned r, uint64_t chunk);
unsigned qbd_pg_up_count(const struct qbd_pg *pg);

enum qbd_pg_op_kind { QBD_PG_WRITE = 1, QBD_PG_FLUSH, QBD_PG_REPAIR };

/* A write, flush or repair in flight to a set of replicas. */
struct qbd_pg_op {
	enum qbd_pg_op_kind kind;
	uint64_t chunk;
	uint64_t expected;       /* expected_version to send */
	uint64_t new_version;    /* new_version to send */
	uint32_t targets;        /* replicas to send to (bit per replica) */
	uint32_t pending;        /* targets that have not replied */
	unsigned nok;
	bool done;
	int result;              /* valid once done: 0 or -errno */
};

/*
 * Start a write of chunk: targets = up replicas not stale for it. Fails
 * with -EIO (fewer than W targets; V unchanged) or -EPERM (fenced); else
 * V[chunk] is incremented and op->expected/new_version are set.
 */
int qbd_pg_write_begin(struct qbd_pg *pg, uint64_t chunk, struct qbd_pg_op *op);
/* Flush: targets = up replicas; -EIO if fewer than W, -EPERM if fenced. */
int qbd_pg_flush_begin(struct qbd_pg *pg, struct qbd_pg_op *op);
/* Repair of replica r's copy of chunk at version (see read below). */
void qbd_pg_repair_begin(struct qbd_pg *pg, uint64_t chunk, uint64_t version,
			 unsigned r, struct qbd_pg_op *op);
/*
 * Reply (or failure: -ENOTCONN for a lost connection) from replica r.
 * Returns true when this reply completes the op (op->result is then set).
 */
bool qbd_pg_op_reply(struct qbd_pg *pg, struct qbd_pg_op *op, unsigned r,
		     int status);

/* A read of one chunk. */
struct qbd_pg_read {
	uint64_t chunk;
	uint64_t min_version;    /* acked[chunk] at submission */
	uint32_t tried;
	uint32_t bad;            /* replicas that answered -EBADMSG */
	int replica;             /* replica the read is at now */
	int first_err;
	uint64_t version;        /* on success: version read */
};

/* Pick the best replica for chunk not in tried: -EIO if none. */
int qbd_pg_read_pick(const struct qbd_pg *pg, uint64_t chunk, uint32_t tried);
/* Start a read: 0 with rd->replica set, or -EPERM / -EIO. */
int qbd_pg_read_begin(struct qbd_pg *pg, uint64_t chunk, struct qbd_pg_read *rd);
/*
 * Reply from rd->replica. Returns 0: done, data good (rd->version; replicas
 * in rd->bad that are up deserve a repair); 1: retry at rd->replica; or
 * -errno: the read failed.
 */
int qbd_pg_read_reply(struct qbd_pg *pg, struct qbd_pg_read *rd, int status,
		      uint64_t version);

#endif
