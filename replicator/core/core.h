/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The quorum core: the writer side of one placement group (in v1 a volume
 * is one placement group) as a pure state machine. It does no I/O, reads
 * no clock and starts no thread: every entry point takes the time `now`
 * (nanoseconds, any monotonic origin), and everything it wants done comes
 * out through struct qbd_core_ops callbacks (send a message, drop a
 * connection, complete a user request). libqbd drives it with sockets;
 * tests/sim drives it with simulated replicas, network and clock.
 *
 * What it decides (docs/protocol.md has the argument for each):
 *  - versions: every chunk has a version V[c]; a write carries
 *    (expected = V[c], new = next), and a replica applies it only at
 *    expected. Versions carry the epoch in their top bits, so two writers
 *    never produce the same version for different data.
 *  - write quorum: a write goes to every up replica that is current for
 *    the chunk and completes after W of them applied it; the others are
 *    marked stale for the chunk.
 *  - fencing: an -EPERM from any replica (a newer epoch was promised)
 *    fences the core for good.
 *  - recovery: at attach, each chunk's version is the highest among the
 *    promising replicas; a chunk whose version is on fewer than W replicas
 *    is copied to W before any read or write of it is served.
 *  - resync: stale replicas get whole chunks copied from a current one
 *    (version-checked, rate-limited, writes to the chunk held meanwhile)
 *    and rejoin the chunk's quorum when the copy lands.
 *  - read repair: a checksum error is served from another replica and the
 *    bad range rewritten at the same version.
 *  - flagged copies: a copy a replica reports SUSPECT (an unclean stop
 *    with writes in flight) or DAMAGED (a bad block) is not current, at
 *    OPEN or in a PING reply, whatever its version: it is reset and copied
 *    again. When every copy of a chunk's latest version is flagged, the
 *    chunk is restored from one copy to every replica under a fresh
 *    version before it is served (see probe_done in resync.c).
 *  - flush: succeeds when every chunk acknowledged since the previous
 *    flush is durable on W replicas.
 *  - reads: serve only committed data (a version on W replicas), and only
 *    under a read lease (see qbd_core_cfg.lease_ns). BLOCK_STATUS (which
 *    blocks hold data) is a read of the replicas' written bitmaps under
 *    the same rules; chunks never written are answered without a message.
 *  - zeroing a chunk never written keeps its version 0: a ZERO from 0 to
 *    0, which replicas acknowledge without writing or allocating (but
 *    only under our epoch, so fencing still holds).
 *
 * Ownership: struct qbd_core owns everything it allocates. Buffers passed
 * to qbd_core_submit belong to the caller and must stay valid until the
 * request completes; the core copies write data it still needs after
 * that (and says so through ops->data_moved).
 */
#ifndef QBD_CORE_H
#define QBD_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QBD_CORE_MAX_REPLICAS 5
/* Replica slots: a voter set has R slots; a membership change adds a
 * learner in a free slot (docs/protocol.md section 11). Masks of slots
 * are uint32_t, bit r for slot r. */
#define QBD_CORE_MAX_SLOTS 8
/* version = epoch << QBD_CORE_EPOCH_SHIFT | sequence within the epoch */
#define QBD_CORE_EPOCH_SHIFT 40
#define QBD_CORE_MAX_EPOCH ((1ull << (64 - QBD_CORE_EPOCH_SHIFT)) - 1)

/* Message flags: the wire's QBD_WIRE_F_* values. */
#define QBD_CORE_F_ZERO   1u
#define QBD_CORE_F_FUA    2u
#define QBD_CORE_F_REPAIR 4u  /* rewrite at the same version (read repair) */
#define QBD_CORE_F_RESYNC 8u  /* whole chunk, set version unconditionally */
#define QBD_CORE_F_BITMAP 16u /* READ: the reply's data is the range's written
			       * bitmap, one bit per block (LSB first), not
			       * its bytes */
#define QBD_CORE_F_SPARSE 64u /* READ of the whole chunk: the reply's data is
			       * its sparse form (its written bitmap, then
			       * its written blocks: common/sparse.h);
			       * WRITE with RESYNC: data_len bytes in that
			       * form. What resync copies. */

/* Chunk flags a replica reports (the engine's QBD_ENGINE_CHUNK_* values,
 * on the wire in OPEN and PING replies). A flagged copy is not current,
 * whatever its version: the writer copies the chunk to it again. */
#define QBD_CORE_CHUNK_SUSPECT 0x1u /* writes were in flight at an unclean
				     * stop: blocks may hold their previous
				     * contents, the version may be ahead */
#define QBD_CORE_CHUNK_DAMAGED 0x2u /* a block failed its checksum */
#define QBD_CORE_CHUNK_FLAGS   0x3u /* every flag known */

/* One entry of a replica's OPEN reply (or PING report). */
struct qbd_chunk_version {
	uint64_t chunk;
	uint64_t version;
	uint32_t flags;           /* QBD_CORE_CHUNK_* */
};

/*
 * PING: no data; a replica answers 0 only while it accepts our epoch.
 * PULL: the replica copies the chunk from replica `source` (which must
 * hold new_version) and stores it at new_version (a RESYNC write):
 * resync replica to replica, the bytes never pass through the writer.
 * Only the written blocks cross (a SPARSE read of the source).
 */
enum qbd_core_msg_type { QBD_CM_READ = 1, QBD_CM_WRITE, QBD_CM_FLUSH, QBD_CM_PING,
			 QBD_CM_PULL };

/* A message for the shell to send to a replica. */
struct qbd_core_msg {
	uint64_t id;              /* unique per core; quoted by the reply */
	unsigned replica;
	enum qbd_core_msg_type type;
	uint64_t chunk;
	uint32_t offset, length;
	uint64_t expected_version, new_version;
	uint32_t flags;           /* QBD_CORE_F_* */
	const void *data;         /* WRITE: length bytes (data_len with
				   * SPARSE), NULL with ZERO */
	uint32_t data_len;        /* WRITE with SPARSE: bytes of data */
	unsigned source;          /* PULL: the replica to copy from */
};

struct qbd_core_ops {
	/* Send m. The data stays valid until the reply, qbd_core_replica_down
	 * for that replica, or a data_moved call for the message. */
	void (*send)(void *user, const struct qbd_core_msg *m);
	/* The data of message id now lives at data (same bytes). */
	void (*data_moved)(void *user, unsigned replica, uint64_t id,
			   const void *data);
	/* The core gave up on a replica's connection (a request timed out):
	 * close it. The core has already called its own replica_down. */
	void (*drop)(void *user, unsigned replica, const char *why);
	/* A request submitted with qbd_core_submit finished: 0 or -errno. */
	void (*complete)(void *user, void *cookie, int res);
	/* Optional: a line worth logging; level 0 error, 1 warning, 2 info,
	 * 3 debug. */
	void (*log)(void *user, int level, const char *msg);
};

struct qbd_core_cfg {
	unsigned replicas;        /* R, 1..QBD_CORE_MAX_REPLICAS */
	unsigned write_quorum;    /* W, 1..R */
	uint64_t nchunks;
	uint32_t chunk_size;
	uint32_t block_size;      /* bitmap granularity: divides chunk_size; 0 = 4096 */
	uint64_t epoch;           /* 1..QBD_CORE_MAX_EPOCH */
	uint32_t local;           /* bit per replica in the writer's zone */
	uint64_t timeout_ns;      /* oldest request age that drops a replica; 0 = 10 s */
	uint64_t resync_rate;     /* bytes per second of background resync; 0 = unlimited */
	unsigned resync_parallel; /* chunks copied at once; 0 = 4 */
	bool pull;                /* resync replica to replica (PULL); a failed
				   * PULL falls back to copying through the writer */
	/* Read lease: reads are served only while max(W, R - W + 1) replicas
	 * accepted our epoch within lease_ns (pings keep it fresh), so a
	 * deposed writer stops reading within lease_ns; 0 = 5 s. */
	uint64_t lease_ns;
	/* After a takeover (the previous writer may still be running) writes
	 * wait this long after attach, until its read lease has run out. */
	uint64_t takeover_wait_ns;
	/*
	 * Membership (docs/protocol.md section 11), as the configuration the
	 * writer attached with says; all zero for a volume whose slots
	 * 0..R-1 vote and no change stands. voters: S, R slots below
	 * QBD_CORE_MAX_SLOTS. joint: S' (R slots) while a change is in its
	 * joint phase: then every quorum must hold in S and in S'. learners:
	 * slots that get every write and count toward nothing.
	 */
	uint32_t voters, joint, learners;
};

struct qbd_core;

/* 0, -EINVAL (bad cfg), -ENOMEM. */
int qbd_core_new(const struct qbd_core_cfg *cfg, const struct qbd_core_ops *ops,
		 void *user, struct qbd_core **out);
/* Free everything; requests still pending are dropped without completion. */
void qbd_core_free(struct qbd_core *c);

/*
 * Replica r promised the epoch and listed its chunk versions (chunks not
 * listed are at version 0). During attach (before qbd_core_open_done) the
 * lists are merged: each chunk's version is the highest seen, flagged
 * copies included. After it (a reconnect), r is stale for every chunk
 * whose version differs. Either way r is stale for every chunk it lists
 * with a flag (SUSPECT, DAMAGED) until a resync of it lands. Marks r up.
 * 0, -EINVAL (r or a chunk out of range, an unknown flag, or r already
 * up), -ENOMEM.
 */
int qbd_core_replica_open(struct qbd_core *c, unsigned r,
			  const struct qbd_chunk_version *list, size_t n,
			  uint64_t now);
/*
 * End of attach. Needs promises from max(W, R - W + 1) replicas, so that
 * the old writer cannot reach W replicas any more and every acknowledged
 * write is on some promiser: else -EIO. Replicas that did not promise are
 * stale for every written chunk; chunks below W current copies are queued
 * for recovery.
 */
int qbd_core_open_done(struct qbd_core *c, uint64_t now);
/*
 * Replica r reported flagged chunks (a PING reply: damage a scrub or a
 * read found while attached). r becomes stale for each, so the chunk is
 * copied to it again. Entries need a flag; total is how many flagged
 * chunks r has in all (more than n: it reports the rest later). Nothing
 * is applied unless the whole list is valid: 0, or -EINVAL (r not up, a
 * chunk out of range, no flag or an unknown one) after which the shell
 * should treat r as failing.
 */
int qbd_core_replica_flagged(struct qbd_core *c, unsigned r,
			     const struct qbd_chunk_version *list, size_t n,
			     uint64_t total, uint64_t now);
/* Replica r's connection is gone: its messages fail with -ENOTCONN. */
void qbd_core_replica_down(struct qbd_core *c, unsigned r, uint64_t now);

/* For READ replies: where to put len bytes of data for message id from
 * r, or NULL to discard them (unknown id, wrong length: a READ with
 * QBD_CORE_F_BITMAP expects ceil(length / block_size / 8) bytes). */
void *qbd_core_reply_buf(struct qbd_core *c, unsigned r, uint64_t id,
			 uint32_t len);
/* Reply to message id from r: status 0 or -errno, the chunk version at
 * the replica. Unknown ids (late or duplicate replies) are ignored. */
void qbd_core_reply(struct qbd_core *c, unsigned r, uint64_t id, int status,
		    uint64_t version, uint64_t now);
/* A READ reply that carries the chunk's flags (QBD_CORE_CHUNK_*) at the
 * replica as of the reply, otherwise as qbd_core_reply. A probe (no
 * replica known current is up) trusts a copy by these flags rather than
 * by what OPEN and PING replies said before: a write over a bad block
 * clears DAMAGED on the replica without a report. Unknown flags are
 * ignored (the record stands). */
void qbd_core_read_reply(struct qbd_core *c, unsigned r, uint64_t id, int status,
			 uint64_t version, uint32_t chunk_flags, uint64_t now);
/* Timer: request timeouts, resync scheduling. Call every ~100 ms. */
void qbd_core_tick(struct qbd_core *c, uint64_t now);

enum qbd_core_op { QBD_CORE_READ = 1, QBD_CORE_WRITE, QBD_CORE_ZERO, QBD_CORE_FLUSH,
		   QBD_CORE_BLOCK_STATUS };

/*
 * Submit a request on bytes [offset, offset + length) of the volume. It
 * completes through ops->complete(cookie, res), possibly before this call
 * returns. flags: QBD_CORE_F_FUA for WRITE and ZERO. BLOCK_STATUS: offset
 * and length multiples of block_size; buf gets length / block_size bits,
 * bit i (byte i / 8, bit i % 8) set when block i of the range may hold
 * data, clear when it reads as zeros (never written, or zeroed); bits
 * past the last block of buf's last byte are left alone. Served like a
 * read: from a current replica at a version at least the committed one.
 * Errors: -EINVAL (out of range or unaligned), -EPERM (fenced), -EIO
 * (fewer than W replicas could do it),
 * -EBADMSG (every current replica failed its checksums), -EOVERFLOW (the
 * chunk's version sequence ran out in this epoch: attach again), -ENOMEM.
 */
void qbd_core_submit(struct qbd_core *c, enum qbd_core_op op, uint32_t flags,
		     uint64_t offset, uint32_t length, void *buf, void *cookie,
		     uint64_t now);

/*
 * Membership changes while attached (docs/protocol.md section 11): slot
 * X of S is replaced by a learner in slot Y, which the shell opens as
 * any replica (qbd_core_replica_open with Y's list).
 *
 * qbd_core_learner_add: Y (a free slot) becomes a learner: stale for
 * every written chunk until resync copies it. 0, -EINVAL (Y in use or out
 * of range), -EBUSY (a change stands), -ENOMEM.
 * qbd_core_learner_drop: give up the change before its joint phase: Y
 * leaves, its messages fail. 0, -EINVAL (Y is no learner).
 * qbd_core_joint_begin: adopt the joint rule S and S' = S - X + Y at once
 * (the writer's own rule may only be stricter than the configuration it
 * attached with). Y must be up and current for every chunk. 0, -EINVAL,
 * -EAGAIN (Y not up, or not current yet).
 * qbd_core_change_ready: in the joint phase, is every chunk's version on
 * W current replicas of S', and has a flush to them covering those
 * copies succeeded? 1 yes (the configuration may be CASed to joint, then
 * to S'), 0 not yet (a flush is started when none is in flight), -EINVAL
 * (not in a joint phase), -EPERM (fenced).
 * qbd_core_leave: S' becomes the only voter set; X's slot leaves (its
 * messages fail; the shell closes its connection). Needs
 * qbd_core_change_ready: else -EAGAIN.
 */
int qbd_core_learner_add(struct qbd_core *c, unsigned y, uint64_t now);
int qbd_core_learner_drop(struct qbd_core *c, unsigned y, uint64_t now);
int qbd_core_joint_begin(struct qbd_core *c, unsigned x, unsigned y, uint64_t now);
int qbd_core_change_ready(struct qbd_core *c, uint64_t now);
int qbd_core_leave(struct qbd_core *c, uint64_t now);
/* The configuration the core now follows (any pointer may be NULL). */
void qbd_core_members(const struct qbd_core *c, uint32_t *voters, uint32_t *joint,
		      uint32_t *learners);

struct qbd_core_replica_info {
	bool up;
	uint64_t stale_chunks;    /* chunks it is known to lack */
	uint64_t resync_done;     /* chunks copied since it was last current */
	uint64_t resync_total;    /* resync_done + stale_chunks */
	uint64_t pulled;          /* chunks it copied from another replica (PULL), ever */
	uint64_t resync_bytes;    /* bytes of chunk data resync copied to it, ever:
				   * written blocks and their bitmaps, the
				   * ones it pulled (as its replies say) and
				   * the ones sent through the writer */
	unsigned in_flight;       /* messages awaiting a reply */
	uint64_t flagged;         /* chunks it reported SUSPECT or DAMAGED, not yet copied again */
	uint64_t flagged_total;   /* flagged chunks in its latest PING report */
	/* For telling a replica that stopped answering: times as the core
	 * received them (the `now` of its calls). */
	uint64_t last_reply;      /* its latest answer (a reply to any message
				   * of ours, or its OPEN); 0 before any */
	uint64_t oldest_unanswered; /* send time of its oldest message still
				     * awaiting a reply; 0 when none */
};
int qbd_core_replica_info(const struct qbd_core *c, unsigned r,
			  struct qbd_core_replica_info *out);
/* A PULL reply from r to message id says bytes crossed the network to it
 * (the source's sparse form); call before qbd_core_reply of that reply.
 * Counted in resync_bytes, and the rate limit is charged with them
 * rather than with a whole chunk. Unknown ids are ignored. */
void qbd_core_pull_copied(struct qbd_core *c, unsigned r, uint64_t id,
			  uint64_t bytes, uint64_t now);
/* The background resync's rate from now on: bytes per second, 0 =
 * unlimited (qbd_core_cfg.resync_rate at first). Copies in progress
 * finish; chunks that requests wait for and attach's recovery are never
 * limited. */
void qbd_core_set_resync_rate(struct qbd_core *c, uint64_t rate, uint64_t now);
uint64_t qbd_core_resync_rate(const struct qbd_core *c);
bool qbd_core_fenced(const struct qbd_core *c);
unsigned qbd_core_up_count(const struct qbd_core *c);
/* User requests not completed. */
unsigned qbd_core_pending(const struct qbd_core *c);
/* Messages awaiting a reply (user and internal). */
unsigned qbd_core_messages(const struct qbd_core *c);
/* Chunks some replica is stale for, plus resyncs in progress; 0 when
 * every replica that is up holds every chunk. */
uint64_t qbd_core_resync_backlog(const struct qbd_core *c);
/* The writer's version of a chunk (tests). */
uint64_t qbd_core_chunk_version(const struct qbd_core *c, uint64_t chunk);
bool qbd_core_is_stale(const struct qbd_core *c, unsigned r, uint64_t chunk);
/* r reported its copy of chunk flagged and no resync replaced it since. */
bool qbd_core_is_flagged(const struct qbd_core *c, unsigned r, uint64_t chunk);

/* The writer learnt outside any message of the core that replica r
 * refuses it for good: an OPEN after attach answered EPERM (a newer
 * epoch promised) or EIDRM (the node was removed from the volume, a
 * tombstone). The core fences itself as for an EPERM reply: every
 * request fails with -EPERM from now on. */
void qbd_core_fence(struct qbd_core *c, unsigned r);

/*
 * The volume grew to nchunks chunks (a resize while attached): the new
 * chunks are at version 0 on every replica (never written: a volume never
 * shrinks, so nothing can be left there), current everywhere, and may be
 * read and written from the call on. Requests in flight are untouched.
 * 0, -EINVAL (fewer chunks than now), -ENOMEM (nothing changed).
 */
int qbd_core_grow(struct qbd_core *c, uint64_t nchunks);

#endif
