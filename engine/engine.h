/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd engine: the local chunk store of one qbd-chunkd, kept in one file or
 * block device and driven through io_uring with O_DIRECT.
 *
 * It stores chunks of many volumes. Per chunk: the data (chunk_size bytes,
 * allocated on first write), a version, and an XXH3-64 checksum per 4 KiB
 * block, verified on every read. Per volume: the highest epoch promised to a
 * writer. Everything survives a restart. See docs/design.md, "Engine".
 *
 * Threading: one engine belongs to one thread (the chunk server's loop).
 * Nothing here blocks except qbd_engine_open, qbd_engine_close and
 * qbd_engine_set_cluster_id, which are meant for start-up and shut-down.
 *
 * Errors are 0 or -errno. The codes with a protocol meaning:
 *   -ESTALE   write: the chunk's version is not expected_version
 *   -EBADMSG  read: a block's checksum does not match its data
 *   -ENOSPC   no free chunk slot, or no space left in the filesystem of a
 *             file store; a write that fails so changed nothing, and its
 *             version field is the chunk's version (0 if not held)
 *   -EINVAL   request outside the chunk, or malformed
 *   -EIO      the device failed
 *   -EIDRM    PROMISE: the volume has a tombstone here (removed from it)
 *   -EPERM    PROMISE with F_READD, TOMBSTONE: an epoch below the one the
 *             store holds for the volume
 */
#ifndef QBD_ENGINE_H
#define QBD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QBD_ENGINE_BLOCK 4096u
#define QBD_ENGINE_DEFAULT_CHUNK (1u << 20)

struct qbd_engine;

/* One I/O the engine issues to its store (qbd_engine_opts.io_hook). */
enum qbd_engine_io_kind {
	QBD_ENGINE_IO_WRITE = 1, /* buf: length bytes, valid during the call */
	QBD_ENGINE_IO_ZERO,      /* the range reads as zeros afterwards */
	QBD_ENGINE_IO_SYNC,      /* fdatasync of the whole store */
};
struct qbd_engine_io {
	enum qbd_engine_io_kind kind;
	bool done;             /* false: being issued; true: completed */
	int res;               /* done: 0 or -errno */
	uint64_t id;           /* the same for the issue and the completion */
	uint64_t offset, length;
	const void *buf;
	bool dsync;            /* WRITE durable by itself when complete (RWF_DSYNC) */
};

struct qbd_engine_opts {
	const char *path;      /* file or block device */
	uint64_t create_size;  /* create (sparse) file of this size if absent; 0 = must exist */
	uint32_t chunk_size;   /* for a new store; 0 = QBD_ENGINE_DEFAULT_CHUNK; must match an existing one or be 0 */
	unsigned queue_depth;  /* io_uring entries; 0 = 256 */
	unsigned al_chunks;    /* chunks kept in the activity log once their
				* writes are durable (a write to one of them
				* costs no log update; recovery after a crash
				* reads each of them); 0 = 1024 */
	unsigned buffers;      /* buffers in the engine's pool (qbd_engine_buf_get), registered
				* with the ring; 0 = no pool */
	uint32_t buffer_size;  /* bytes each, a multiple of QBD_ENGINE_BLOCK; 0 = the store's chunk size */
	/* For tests (the crash-state harness): called from the engine's thread
	 * for every write, zeroing and sync issued to the store, when issued
	 * and when completed, including the blocking I/O of qbd_engine_open
	 * and close. Reads are not reported. NULL in production. */
	void (*io_hook)(void *user, const struct qbd_engine_io *io);
	void *io_hook_user;
};

/*
 * Open (and format, if it holds no qbd superblock and is all zeros at the
 * start) the store. Blocking; reads all chunk metadata, then recovers the
 * chunks the activity log names if the store was not closed cleanly (they
 * may come out SUSPECT). A store of another format is refused with
 * -EUCLEAN. On success *out is owned by the caller and freed by
 * qbd_engine_close.
 */
int qbd_engine_open(const struct qbd_engine_opts *opts, struct qbd_engine **out);

/* Close the store: blocking; makes everything durable and empties the
 * activity log, so that the next open recovers nothing. Must be idle (no
 * request in flight: see qbd_engine_busy). Accepts NULL. */
void qbd_engine_close(struct qbd_engine *e);

/*
 * The engine's buffer pool (qbd_engine_opts.buffers): 4 KiB-aligned
 * buffers of qbd_engine_buf_size bytes, in huge pages where the kernel
 * gives them and registered with the ring, so that a READ or WRITE whose
 * buf lies in the pool skips the kernel's page pinning and reaches the
 * device in few segments (a 1 MiB transfer in one).
 * qbd_engine_buf_get returns NULL when none is free; the caller owns the
 * buffer until it gives it back with qbd_engine_buf_put (accepts NULL).
 * Buffers go with qbd_engine_close. Any other buffer works too.
 */
void *qbd_engine_buf_get(struct qbd_engine *e);
void qbd_engine_buf_put(struct qbd_engine *e, void *buf);
uint32_t qbd_engine_buf_size(const struct qbd_engine *e);
/* Whether buf is one of the pool's buffers (for a caller that mixes them
 * with buffers of its own: give it back with qbd_engine_buf_put). */
bool qbd_engine_buf_owns(const struct qbd_engine *e, const void *buf);

/* Number of requests submitted and not yet completed. */
unsigned qbd_engine_busy(const struct qbd_engine *e);

/*
 * Event loop integration: an eventfd that becomes readable when the ring has
 * completions (or a callback waits). The loop then calls qbd_engine_poll,
 * which reaps completions, runs request callbacks, and submits queued work
 * (what the callbacks submit included). qbd_engine_poll never blocks. It
 * must not be called from a request callback.
 */
int qbd_engine_event_fd(const struct qbd_engine *e);
void qbd_engine_poll(struct qbd_engine *e);

/* Identity, fixed at format time (node id random, non-zero). */
uint64_t qbd_engine_node_id(const struct qbd_engine *e);
/* Cluster id: 0 until set; set once, blocking. -EEXIST if already set to
 * another value. */
uint64_t qbd_engine_cluster_id(const struct qbd_engine *e);
int qbd_engine_set_cluster_id(struct qbd_engine *e, uint64_t cluster_id);

struct qbd_engine_stats {
	uint32_t chunk_size;
	uint64_t capacity;     /* bytes of chunk data the store can hold */
	uint64_t used;         /* bytes in allocated chunks */
	uint64_t chunks;       /* allocated chunks */
	uint64_t slots;        /* chunk slots in all (capacity / chunk_size) */
	uint64_t free_slots;   /* slots - chunks */
	uint64_t held;         /* bytes of data held: written 4 KiB blocks
				* (holes, trimmed and zeroed blocks are not
				* counted; thin provisioning) */
	/* I/O the requests issued to the store through the ring since open
	 * (not the blocking I/O of open, close and DELETE_VOLUME). */
	uint64_t data_reads, data_read_bytes;   /* chunk data read (READ, the
						 * read of a read-modify-write, SCRUB) */
	uint64_t data_writes, data_write_bytes; /* chunk data written */
	uint64_t meta_writes;  /* metadata, activity log and promise blocks */
	uint64_t zeroings;     /* ranges punched or zeroed (fallocate) */
	uint64_t syncs;        /* fdatasync */
};
void qbd_engine_stats(const struct qbd_engine *e, struct qbd_engine_stats *st);

/* Space a volume takes in this store: its allocated chunks and the bytes
 * of data they hold (written 4 KiB blocks). Walks every chunk of the
 * store: meant for an administrative request, not for every I/O. */
void qbd_engine_volume_usage(const struct qbd_engine *e, uint64_t volume,
			     uint64_t *chunks, uint64_t *held);

/* A volume the store holds something of (qbd_engine_volumes). */
struct qbd_engine_volume {
	uint64_t volume;
	uint64_t chunks;       /* allocated chunks */
	uint64_t held;         /* bytes of data they hold (written 4 KiB blocks) */
	uint64_t promised;     /* highest epoch promised; 0 if none or a tombstone */
	bool tombstone;        /* the volume has a tombstone here */
	uint64_t tombstone_epoch; /* the epoch it was made at */
};

/*
 * Every volume the store holds a chunk, a promise or a tombstone of,
 * sorted by volume id, with its chunks, held bytes and promise: what
 * DELETE_VOLUME of it would free. *out is malloc'd (NULL when *n is 0), the caller frees it.
 * 0, or -ENOMEM (then *out is NULL, *n 0). Read-only; walks every chunk
 * of the store (the chunk server's reclaim scan, every minute or so).
 */
int qbd_engine_volumes(const struct qbd_engine *e, struct qbd_engine_volume **out,
		       size_t *n);

/*
 * Walk the store slot by slot (the scrubber): the chunk in the lowest
 * slot >= *slot that has been written (its metadata is on disk). Returns
 * true with *slot, *volume and *chunk set, false when no slot from *slot
 * on holds one. The next call starts at *slot + 1. Slots never move, so a
 * walk from slot 0 up meets every chunk allocated before it started and
 * still allocated when it passes. Cost: the slots skipped.
 */
bool qbd_engine_next_chunk(const struct qbd_engine *e, uint64_t *slot,
			   uint64_t *volume, uint64_t *chunk);

/* Highest epoch promised for a volume (0 if none, and 0 if the volume has
 * a tombstone: a caller that knows nothing of tombstones sees a volume
 * promised nothing). */
uint64_t qbd_engine_promised(const struct qbd_engine *e, uint64_t volume);

/* Whether the volume has a tombstone here (QBD_ENGINE_TOMBSTONE): the
 * store may serve it under no epoch. *epoch (if not NULL) is set to the
 * epoch the tombstone was made at (0 when there is none). */
bool qbd_engine_tombstoned(const struct qbd_engine *e, uint64_t volume, uint64_t *epoch);

/* Current version of a chunk (0 if never written). */
uint64_t qbd_engine_chunk_version(const struct qbd_engine *e, uint64_t volume,
				  uint64_t chunk);
/* A chunk's QBD_ENGINE_CHUNK_* flags (0 if none or never written). */
uint32_t qbd_engine_chunk_flags(const struct qbd_engine *e, uint64_t volume,
				uint64_t chunk);

/* Chunk flags (qbd_engine_for_each_chunk, qbd_engine_flagged_chunks). */
#define QBD_ENGINE_CHUNK_SUSPECT 0x1u /* writes were in flight when the store
	* last stopped without a clean close: each block holds its last or its
	* previous contents, so the chunk may not match its version; the
	* replication layer must reconcile it with peers */
#define QBD_ENGINE_CHUNK_DAMAGED 0x2u /* a block failed its checksum (on a
	* read, or later a scrub) and has not been rewritten since */

/*
 * Call fn for every allocated chunk of a volume with its version and flags
 * (chunk order unspecified). Stops early and returns fn's value if
 * non-zero. Flags persist across restarts: SUSPECT is set by the recovery
 * at qbd_engine_open and cleared by a RESYNC write; DAMAGED is set when a
 * request finds a block whose checksum fails and cleared once every such
 * block has been rewritten (a REPAIR write covering them, or a RESYNC);
 * DELETE_VOLUME drops both.
 */
int qbd_engine_for_each_chunk(const struct qbd_engine *e, uint64_t volume,
	int (*fn)(void *user, uint64_t chunk, uint64_t version, uint32_t flags), void *user);
/* The flagged chunks of a volume: fills up to max entries of chunks[] and
 * flags[], returns how many flagged chunks the volume has in all. Cheap
 * (no scan of every chunk): meant to be called on every PING. */
unsigned qbd_engine_flagged_chunks(const struct qbd_engine *e, uint64_t volume,
	uint64_t *chunks, uint32_t *flags, unsigned max);

enum qbd_engine_op {
	QBD_ENGINE_READ = 1,
	QBD_ENGINE_WRITE,
	QBD_ENGINE_ZERO,          /* like WRITE of zeros; frees whole blocks */
	QBD_ENGINE_FLUSH,         /* make every completed write durable */
	QBD_ENGINE_PROMISE,       /* persist promised = max(promised, epoch) */
	QBD_ENGINE_DELETE_VOLUME, /* free every chunk and the promise of volume */
	QBD_ENGINE_BITMAP,        /* which blocks of a range hold data */
	QBD_ENGINE_SCRUB,         /* verify every written block of a chunk */
	QBD_ENGINE_TOMBSTONE,     /* the volume may be served under no epoch; free its chunks */
};

#define QBD_ENGINE_F_FUA    0x1u  /* WRITE/ZERO: durable before completion (as if
				   * a FLUSH followed it: the two share a sync) */
#define QBD_ENGINE_F_REPAIR 0x2u  /* WRITE: requires version == expected == new */
#define QBD_ENGINE_F_RESYNC 0x4u  /* WRITE: replace the whole chunk at new_version */
#define QBD_ENGINE_F_READD  0x8u  /* PROMISE: clear a tombstone older than epoch */

/*
 * A request. Owned by the caller, who fills the public fields and must keep
 * the struct and buf valid until cb has run; submitting allocates nothing
 * when the request can go straight to the ring.
 *
 * READ  volume, chunk, offset, length, buf (length bytes, any alignment;
 *       4 KiB-aligned buf/offset/length avoid a bounce copy). Never-written
 *       ranges read as zeros without I/O. Out: version = chunk version the
 *       data belongs to.
 * WRITE volume, chunk, offset, length, buf, expected_version, new_version.
 *       Applied only if the chunk's version == expected_version (0 for a
 *       chunk never written), then the version becomes new_version. If the
 *       version already equals new_version the write is acknowledged without
 *       being applied again (an idempotent retry). Otherwise -ESTALE.
 *       Partial blocks are read, verified, merged and rewritten. Out:
 *       version = the chunk's version after the request.
 *       With QBD_ENGINE_F_REPAIR: applied only if the version ==
 *       expected_version == new_version (a rewrite at the same version).
 *       With QBD_ENGINE_F_RESYNC (not with REPAIR): a whole-chunk write
 *       (offset 0, length chunk_size, buf set, else -EINVAL; new_version 0
 *       only with all-zero data: the chunk goes back to never written) that replaces the chunk's contents and sets its version to
 *       new_version whatever the current version (expected_version is
 *       ignored); if the version already equals new_version it completes
 *       without writing (an idempotent retry), unless the chunk is
 *       flagged: then it is rewritten. 4 KiB blocks of buf that are
 *       all zeros become holes (no data I/O, read as zeros); a chunk with
 *       no slot gets one, even if buf is all zeros, so that its version
 *       persists. Ordered, versioned and made durable (FUA) as any WRITE.
 * ZERO  as WRITE without buf. Blocks it covers whole lose their data (a
 *       metadata write only); partial blocks that hold data are rewritten
 *       with zeros; partial blocks without data stay without. A chunk never
 *       written gets a slot (its new version must persist), except with
 *       new_version 0 (below).
 * Any WRITE or ZERO with new_version 0 of a chunk never written is the
 *       idempotent case (version 0 already): acknowledged at once, no slot
 *       taken, nothing written.
 * BITMAP volume, chunk, offset, length (multiples of QBD_ENGINE_BLOCK),
 *       buf of at least ceil(length / QBD_ENGINE_BLOCK / 8) bytes: bit i
 *       (byte i / 8, bit i % 8) is set when block offset / 4 KiB + i holds
 *       data, clear when it reads as zeros (never written, zeroed, or a
 *       zero block of a RESYNC); the bits after the last block in the
 *       last byte are cleared. No I/O: the bitmap is the one in the
 *       chunk's metadata, taken in the chunk's FIFO like a READ (after the
 *       writes submitted before it). Out: version, as for READ.
 * SCRUB volume, chunk; buf NULL, or at least chunk_size / 4 KiB / 8
 *       bytes. Reads the chunk's written blocks (one read from the first
 *       to the last) and verifies each checksum, in the chunk's FIFO like
 *       a READ (after the writes submitted before it; never blocks the
 *       loop). A block that fails is recorded as bad and the chunk flagged
 *       DAMAGED, as a READ that finds it would; with buf, bit i (byte
 *       i / 8, bit i % 8) is set for each block i that failed, all others
 *       cleared. Nothing is logged: the caller reports what it found. res:
 *       the bytes verified (written blocks x 4 KiB; 0 for a chunk not
 *       held), also when blocks failed; -errno if the read failed. Out:
 *       version. offset and length are ignored.
 * FLUSH every write completed before it was submitted is durable when it
 *       completes (their chunks' metadata blocks are written, then one
 *       fdatasync: writes in between cost one data I/O each).
 * PROMISE volume, epoch: promised = max(promised, epoch), durable when it
 *       completes. Out: version = promised epoch after the request.
 *       A volume with a tombstone: -EIDRM, nothing changes (version = the
 *       tombstone's epoch). With QBD_ENGINE_F_READD (a writer adding this
 *       node back to the volume as a new replica): if the volume has a
 *       tombstone made at an epoch below epoch, whatever is left of its
 *       chunks is freed, then the tombstone gives way to a promise of
 *       epoch, durably (blocking, like DELETE_VOLUME); at or below the
 *       tombstone's epoch -EPERM; without a tombstone, a plain PROMISE.
 * TOMBSTONE volume, epoch: epoch below the volume's promised epoch (or
 *       its tombstone's) -EPERM, nothing changes. Else the volume's entry
 *       becomes a tombstone at max(that epoch, epoch), durable (a sync)
 *       before anything else happens; then its chunks are freed as by
 *       DELETE_VOLUME (their markers and another sync). A chunk with a
 *       request in the engine stays: -EBUSY, the tombstone stands, and a
 *       TOMBSTONE again frees what is left. Blocking for a moment, like
 *       DELETE_VOLUME. Out: version = the tombstone's epoch. -ENOSPC
 *       when the volume has no entry and the promise table is full.
 * DELETE_VOLUME volume: frees its chunks and its promise (or tombstone).
 *
 * Overlapping READ/WRITE/ZERO requests on a chunk are executed in
 * submission order; non-overlapping ones run concurrently.
 *
 * cb runs from qbd_engine_poll (never from qbd_engine_submit) with res set
 * to 0 (or bytes for READ/WRITE: length) or -errno. After cb starts, the
 * engine no longer touches the request.
 */
struct qbd_engine_req {
	enum qbd_engine_op op;
	uint32_t flags;
	uint64_t volume;
	uint64_t chunk;
	uint32_t offset;
	uint32_t length;
	void *buf;
	uint64_t expected_version;
	uint64_t new_version;
	uint64_t epoch;
	/* out */
	uint64_t version;
	int res;
	void (*cb)(struct qbd_engine_req *req);
	void *user;
	/* engine private: do not touch */
	uint64_t priv[24];
};

/* Submit a request. Never fails synchronously: an invalid request completes
 * through cb with -EINVAL. */
void qbd_engine_submit(struct qbd_engine *e, struct qbd_engine_req *req);

/* Between qbd_engine_plug and qbd_engine_unplug, the I/O of submitted
 * requests is queued and qbd_engine_unplug hands it to the kernel in one
 * system call (for a caller that submits several requests at once, such
 * as all those of one read from a socket). Calls nest; inside
 * qbd_engine_poll the engine does the same itself, and poll submits what
 * is queued, plugged or not. */
void qbd_engine_plug(struct qbd_engine *e);
void qbd_engine_unplug(struct qbd_engine *e);

#endif
