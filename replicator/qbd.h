/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqbd: open a qbd volume and read, write, flush, trim and zero it.
 * The handle is the volume's single writer: opening takes a new epoch in
 * etcd, which fences every earlier writer. Writes go to all R replicas and
 * complete after W of them applied them; reads come from one replica that
 * is current for the chunk, falling back to another one on error.
 *
 * libqbd owns no event loop. A handle exposes one file descriptor
 * (qbd_get_fd) that becomes readable whenever the handle has work to do
 * (socket I/O, timers); the caller then calls qbd_process, which never
 * blocks and runs completion callbacks. The synchronous calls
 * (qbd_pread, ...) are thin wrappers that poll that fd themselves.
 *
 * What libqbd starts: one thread per handle, the attachment keeper, from
 * qbd_open until qbd_close. Every 2 s it renews the writer's attachment
 * in etcd (a 10 s lease), publishes the writer's status document for
 * `qbd volume status` and reads the volume's record for a new size, over
 * an etcd connection of its own. It runs no
 * callback and touches no memory of the caller; the data path never
 * waits for it (qbd_process only hands it a string under a mutex), and
 * when etcd is away the data path goes on (logged). It inherits the
 * signal mask of the thread that calls qbd_open: a program that takes
 * signals with sigwait or signalfd blocks them before that call.
 *
 * A handle must be used from one thread at a time. Errors are -errno:
 *   -EIO       fewer than W replicas could do it (the write may be on some)
 *   -EBADMSG   every current replica reported a checksum error
 *   -EPERM     this handle was fenced: a newer writer opened the volume
 *   -EINVAL    out of range or malformed request
 *   -ENOENT    (open) no such volume
 */
#ifndef QBD_H
#define QBD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct qbd_volume;

struct qbd_open_opts {
	const char *etcd;     /* etcd URL(s); NULL = $QBD_ETCD */
	const char *volume;   /* volume name */
	const char *zone;     /* client's zone: reads prefer replicas there; may be NULL */
	unsigned timeout_ms;  /* connect/open timeout; 0 = 10000 */
	int force;            /* take the volume over from a writer that
			       * still holds its attachment (a node that is
			       * gone): see qbd_open */
	uint64_t resync_rate; /* bytes/s of background resync; 0 = unlimited */
	int reattach;         /* take the attachment over only from a writer
			       * of this host whose process no longer runs
			       * (a daemon restarted behind its device) */
	const char *secret_file; /* the cluster secret (mode 0600) that
				  * authenticates links to the replicas;
				  * NULL = $QBD_SECRET_FILE; neither: none */
};

/*
 * Open a volume: read it from etcd, take a new epoch, connect to its
 * replicas, and have at least W of them promise the epoch. Blocks for at
 * most timeout_ms. On success *out is owned by the caller and released by
 * qbd_close.
 */
int qbd_open(const struct qbd_open_opts *opts, struct qbd_volume **out);

/*
 * Complete every submitted request (their callbacks run), flush, release
 * the attachment, stop the keeper thread and free the handle, whatever
 * the result. Blocking. Accepts NULL (returns 0).
 *
 * Returns the result of that final flush, as close(2) reports a write
 * back that failed:
 *   0        every write completed before the close is durable on W
 *            replicas; the detach is recorded as clean
 *   -EPERM   the handle had been fenced: no flush was tried (a newer
 *            writer owns the volume and recovers its writes)
 *   -errno   the flush failed (-EIO: fewer than W replicas flushed):
 *            writes acknowledged since the last successful flush are on
 *            W replicas but may not be durable there, and the next
 *            writer treats the close as a crash (it waits out the read
 *            lease before its first write)
 *
 * ABI: qbd_close returned void until this value was added; the symbol
 * and its version (QBD_0 in libqbd.map) are the same, and a program
 * built against the void declaration still works (it ignores the
 * value).
 */
int qbd_close(struct qbd_volume *v);

/* The volume's size in bytes. It grows, never shrinks, while the handle
 * is open when the volume is resized (`qbd volume resize`): the keeper
 * reads the record every 2 s and qbd_process takes the new size; a
 * caller that serves the volume compares it after qbd_process. */
uint64_t qbd_size(const struct qbd_volume *v);
uint32_t qbd_chunk_size(const struct qbd_volume *v);
uint64_t qbd_volume_id(const struct qbd_volume *v);
uint64_t qbd_epoch(const struct qbd_volume *v);

/* Replica summary, for status displays. */
struct qbd_replica_status {
	uint64_t node_id;
	char addr[128];
	char zone[64];
	int connected;        /* 1 if the connection is up and promised */
	uint64_t stale_chunks;/* chunks this replica is known to lack */
	uint64_t resync_done; /* chunks copied to it since it was last current */
	uint64_t resync_total;/* resync_done + stale_chunks */
	uint64_t resync_bytes;/* bytes of chunk data resync copied to it (written
			       * blocks and bitmaps), since the volume was opened */
};
/* Replica slots: the volume's replicas, and while a membership change
 * stands the new replica too (so at most R + 1, and a slot a replica
 * left stays empty until the next change): qbd_replica_status and
 * qbd_replica_counters return -ENOENT for an empty slot. */
unsigned qbd_replica_count(const struct qbd_volume *v);
/* The background resync's rate now: bytes per second, 0 = unlimited
 * (qbd_open_opts.resync_rate, or the volume's rebuild rate in etcd,
 * `qbd volume set --rebuild-rate`, which the writer follows at run
 * time). */
uint64_t qbd_resync_rate(const struct qbd_volume *v);
unsigned qbd_write_quorum(const struct qbd_volume *v);
int qbd_replica_status(const struct qbd_volume *v, unsigned i,
		       struct qbd_replica_status *out);
/* Traffic with replica i since the volume was opened (for metrics). */
struct qbd_replica_counters {
	uint64_t sent_bytes;      /* requests and their data */
	uint64_t received_bytes;  /* replies and their data */
};
int qbd_replica_counters(const struct qbd_volume *v, unsigned i,
			 struct qbd_replica_counters *out);
/* A membership change this writer is carrying out (a replica moving to
 * another node: docs/design.md). phase 0 when none; the copy's figures
 * count whole chunks. */
struct qbd_change_progress {
	int phase;                /* 0 none, 1 copying to the new replica, 2 joint */
	uint64_t from_node, to_node;
	uint64_t copied_bytes, total_bytes;
	uint64_t rate_bytes;      /* per second, smoothed over the last few seconds */
};
int qbd_change_progress(const struct qbd_volume *v, struct qbd_change_progress *out);

/* Event loop integration (see the top of this file). */
int qbd_get_fd(const struct qbd_volume *v);
void qbd_process(struct qbd_volume *v);

/*
 * Batching: between qbd_plug and qbd_unplug, the messages of qbd_submit
 * are queued, and qbd_unplug sends each replica's in one system call
 * (for a caller that submits several ios at once, e.g. all the requests
 * of one read from its client). Calls nest; qbd_process does the same
 * around its callbacks.
 */
void qbd_plug(struct qbd_volume *v);
void qbd_unplug(struct qbd_volume *v);
/* Number of submitted, uncompleted requests. */
unsigned qbd_in_flight(const struct qbd_volume *v);

enum qbd_io_op {
	QBD_IO_READ = 1,
	QBD_IO_WRITE,
	QBD_IO_FLUSH,         /* every write completed before it was submitted,
			       * by any request on this handle, is durable on
			       * W replicas when it completes successfully */
	QBD_IO_TRIM,          /* range reads as zeros afterwards; frees space */
	QBD_IO_WRITE_ZEROES,  /* as TRIM: zeroed blocks become holes; zeroing a
			       * range never written allocates nothing */
	QBD_IO_BLOCK_STATUS,  /* which blocks hold data: see below */
};

/* Granularity of QBD_IO_BLOCK_STATUS, and its largest request. */
#define QBD_BLOCK_SIZE 4096u
#define QBD_BLOCK_STATUS_MAX (1u << 30)

#define QBD_IO_F_FUA 0x1u     /* WRITE/WRITE_ZEROES: durable on W replicas
			       * when it completes */

/*
 * An asynchronous request. Caller-owned: fill op, offset, length, buf,
 * flags, cb and user; keep the struct and buf valid until cb runs. Any
 * offset and length within the volume (requests crossing chunks are split
 * inside); at most 32 MiB for reads and writes, any length for TRIM and
 * WRITE_ZEROES. cb runs exactly once, from qbd_process (never
 * from qbd_submit), with res = 0 or -errno.
 *
 * QBD_IO_BLOCK_STATUS: offset and length multiples of QBD_BLOCK_SIZE, at
 * most QBD_BLOCK_STATUS_MAX; buf (caller-owned, at least
 * ceil(length / QBD_BLOCK_SIZE / 8) bytes) gets one bit per block, bit i
 * in byte i / 8 at position i % 8: 1 = the block may hold data, 0 = it
 * reads as zeros (never written, trimmed or zeroed). Bits past the last
 * block in the last byte are left as they were. Answered like a read (a
 * replica current for the chunk, at least the committed version);
 * chunks never written cost no message.
 */
struct qbd_io {
	enum qbd_io_op op;
	uint32_t flags;
	uint64_t offset;
	uint32_t length;
	void *buf;
	int res;
	void (*cb)(struct qbd_io *io);
	void *user;
	uint64_t priv[8];     /* libqbd private */
};

void qbd_submit(struct qbd_volume *v, struct qbd_io *io);

/* Synchronous wrappers: 0 or -errno. Must not be mixed with pending
 * asynchronous requests whose callbacks expect to run elsewhere. */
int qbd_pread(struct qbd_volume *v, void *buf, uint32_t len, uint64_t off);
int qbd_pwrite(struct qbd_volume *v, const void *buf, uint32_t len,
	       uint64_t off, uint32_t flags);
int qbd_flush(struct qbd_volume *v);
int qbd_trim(struct qbd_volume *v, uint32_t len, uint64_t off);
int qbd_write_zeroes(struct qbd_volume *v, uint32_t len, uint64_t off,
		     uint32_t flags);
/* QBD_IO_BLOCK_STATUS of [off, off + len) into bits (caller-owned). */
int qbd_block_status(struct qbd_volume *v, void *bits, uint32_t len, uint64_t off);

#ifdef __cplusplus
}
#endif
#endif
