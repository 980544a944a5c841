/* SPDX-License-Identifier: Apache-2.0 */
/* Engine private definitions: the on-disk format, the in-memory state,
 * and a section per .c file of engine/ with what it gives the others.
 * On-disk integers are little-endian (the only supported hosts are). */
#ifndef QBD_ENGINE_INTERNAL_H
#define QBD_ENGINE_INTERNAL_H

#include <assert.h>
#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/queue.h"
#include "common/util.h"
#include "engine.h"

#define ENG_MAGIC_SB   0x31304e4544425151ull /* "QQBDEN01" */
#define ENG_MAGIC_META 0x4154454d44425151ull /* "QQBDMETA" */
#define ENG_MAGIC_FREE 0x4545524644425151ull /* "QQBDFREE": free slot, data not zero */
#define ENG_MAGIC_AL   0x474f4c4144425151ull /* "QQBDALOG" */
#define ENG_FORMAT 2
#define ENG_BLOCKS_MAX 256                   /* blocks per chunk (1 MiB / 4 KiB) */
#define ENG_PROMISE_OFF 4096ull
#define ENG_PROMISE_BYTES 65536ull           /* 1024 entries */
#define ENG_PROMISE_ENTRIES (ENG_PROMISE_BYTES / 64)
#define ENG_AL_OFF (ENG_PROMISE_OFF + ENG_PROMISE_BYTES)
#define ENG_AL_HDR 64
#define ENG_AL_SLOTS ((4096u - ENG_AL_HDR) * 8) /* slots per activity log block */
#define ENG_AL_TARGET 1024                   /* default qbd_engine_opts.al_chunks */

/* Superblock, at offset 0, one 4 KiB block. */
struct eng_super {
	uint64_t magic;
	uint32_t format;
	uint32_t chunk_size;
	uint64_t node_id;
	uint64_t cluster_id;
	uint64_t nslots;
	uint64_t al_off;        /* activity log: al_blocks blocks */
	uint64_t al_blocks;
	uint64_t meta_off;
	uint64_t data_off;
	uint64_t checksum;      /* XXH3 of the struct with this field 0 */
} __attribute__((packed, aligned(8)));
static_assert(sizeof(struct eng_super) == 80, "superblock size");

/* Promise table entry: 64 bytes, 16 per 4 KiB block. A tombstone keeps
 * the volume's entry, with the epoch it was made at: the store may serve
 * the volume under no epoch until an explicit re-add at a higher one
 * (QBD_ENGINE_TOMBSTONE, QBD_ENGINE_F_READD). Stores written before
 * tombstones existed have zero flags. */
struct eng_promise {
	uint64_t volume;        /* 0 = free */
	uint64_t epoch;         /* promised; of a tombstone, the epoch it was made at */
	uint32_t flags;         /* ENG_PROMISE_TOMBSTONE */
	uint8_t pad[44];
} __attribute__((packed, aligned(8)));
#define ENG_PROMISE_TOMBSTONE 0x1u
static_assert(sizeof(struct eng_promise) == 64, "promise entry size");

/* Activity log block: bit i of bits set when slot index * ENG_AL_SLOTS + i
 * may have writes in flight. All zeros (a fresh store) reads as empty. */
struct eng_al {
	uint64_t magic;         /* ENG_MAGIC_AL */
	uint64_t seq;           /* transaction number (diagnostics) */
	uint32_t index;         /* which block of the log this is */
	uint32_t pad0;
	uint64_t checksum;      /* XXH3 of the block with this field 0 */
	uint8_t pad[ENG_AL_HDR - 32];
	uint64_t bits[ENG_AL_SLOTS / 64];
} __attribute__((packed, aligned(8)));
static_assert(sizeof(struct eng_al) == 4096, "activity log block size");

/* Chunk metadata block: one 4 KiB block per slot. */
struct eng_meta {
	uint64_t magic;         /* ENG_MAGIC_META; ENG_MAGIC_FREE or 0 for a free slot */
	uint64_t volume;
	uint64_t chunk;
	uint64_t version;
	uint64_t written[ENG_BLOCKS_MAX / 64]; /* block has data (else zeros) */
	uint32_t flags;         /* QBD_ENGINE_CHUNK_* */
	uint32_t pad0;
	uint64_t bad[ENG_BLOCKS_MAX / 64];     /* blocks that failed their checksum */
	uint64_t checksum;      /* XXH3 of the block with this field 0 */
	uint8_t pad[2048 - 112];
	uint64_t block_csum[ENG_BLOCKS_MAX];   /* XXH3-64 of each 4 KiB block */
} __attribute__((packed, aligned(8)));
static_assert(sizeof(struct eng_meta) == 4096, "meta block size");

/* An allocated chunk in memory. */
struct eng_chunk {
	struct eng_chunk *hnext;
	uint64_t volume, chunk, slot, version;
	struct eng_meta *meta;  /* 4 KiB aligned copy of the on-disk block */
	struct qbd_queue q;     /* waiting requests (eng_priv.link) */
	unsigned reading;       /* READs of this chunk running */
	bool writing;           /* a WRITE/ZERO of this chunk is running */
	bool in_run;            /* eng_chunk_run_next is on the stack */
	uint32_t flags;         /* QBD_ENGINE_CHUNK_* (on disk at the next meta write) */
	uint64_t bad[ENG_BLOCKS_MAX / 64]; /* blocks that failed their checksum */
	struct qbd_qlink flagged_link; /* on e->flagged (flags != 0) */
	/* activity log */
	bool al_active;         /* its bit is durable in the log */
	bool slot_dirty;        /* the slot's data may not be zeros where unwritten */
	struct qbd_qlink lru_link; /* on e->lru (al_active) */
	uint64_t done_seq;      /* syncs issued when its last write or meta
				 * block write completed */
	/* metadata kept in memory (docs/design.md, "Metadata in memory"):
	 * meta is the chunk as its completed writes left it; the block on
	 * disk is older until a round of the group commit writes it */
	uint8_t dstate;         /* ENG_CLEAN, ENG_DIRTY (on e->dirty), ENG_ROUND (on e->round) */
	bool mw_busy;           /* its metadata block write is in flight */
	bool flags_dirty;       /* flags or bad blocks changed since its last meta write */
	struct qbd_qlink meta_link; /* on e->dirty or e->round */
};

enum { ENG_CLEAN = 0, ENG_DIRTY, ENG_ROUND };

/* A metadata block write of the group commit: a snapshot of a chunk's
 * in-memory metadata, so that the chunk takes writes meanwhile. */
struct eng_mw {
	struct qbd_engine_req req;    /* its ring request (ST_META_WRITE) */
	struct eng_mw *next;          /* free list */
	uint8_t *buf;                 /* 4 KiB, aligned */
};
#define ENG_MW 32                     /* metadata writes in flight at most */
#define ENG_BIG_IO (64u << 10)        /* a transfer after which poll submits at once */
#define ENG_SUBMIT_BATCH 4            /* SQEs queued in a poll pass before it submits */

/* Private per-request state, inside qbd_engine_req.priv. */
struct eng_priv {
	struct qbd_qlink link;        /* on one queue of requests (chunk FIFO, done...) */
	struct eng_chunk *ch;
	uint8_t *bounce;
	uint32_t b0, nb;              /* blocks covered */
	int step;
	int err;                      /* first error of a multi-SQE step */
	unsigned pending;             /* SQEs of the current step in flight */
	uint32_t ext_b[2], ext_n[2];  /* extents (block, count) of the step */
	unsigned n_ext;               /* number of extents */
	uint32_t got;                 /* bytes transferred in the step */
	bool borrowed;                /* bounce is the caller's buf */
	bool holds_prom;              /* this PROMISE owns prom_busy */
	struct eng_meta *meta_copy;   /* RESYNC: the new meta block */
	uint32_t cursor;              /* RESYNC: next block to look at for data runs */
	bool zero_phase;              /* RESYNC: zeroing blocks that become holes */
	uint32_t zx_b[2], zx_n[2];    /* extents to zero (ST_ZERO_DATA) */
	unsigned zx_ext;
	uint64_t io_id;               /* first I/O id of the step (qbd_engine_opts.io_hook) */
	unsigned io_n;                /* SQEs of the step */
	uint64_t sync_gen;            /* ST_FSYNC / ST_SLOT_SYNC: its sync number */
	int undo_err;                 /* ST_UNDO_ZERO: the failed write's error */
	uint8_t rsv;                  /* ST_RESERVE: 0 unchecked, 1 reserving, 2 done */
	uint32_t rsv_cursor;          /* ST_RESERVE: next block to look at */
};
static_assert(sizeof(struct eng_priv) <= sizeof(((struct qbd_engine_req *)0)->priv),
	      "engine private state fits");

#define ENG_HASH 65536

struct qbd_engine {
	int fd;
	int efd;
	struct io_uring ring;
	struct eng_super sb;
	struct eng_promise *promises;     /* ENG_PROMISE_ENTRIES, aligned */
	uint8_t *free_map;                /* per slot: 0 free, 1 used, 2 free with old data */
	uint64_t used_slots;
	struct eng_chunk *hash[ENG_HASH];
	struct qbd_queue flagged;         /* chunks with flags, for qbd_engine_flagged_chunks */
	struct qbd_queue done;            /* requests whose callback is to run */
	struct qbd_queue retry;           /* requests parked for want of SQEs */
	struct qbd_queue prom;            /* PROMISEs, TOMBSTONEs and DELETE_VOLUMEs waiting */
	bool prom_busy;                   /* a PROMISE write is running */
	unsigned busy;
	unsigned pending_sqes;
	unsigned inflight;                /* SQEs issued, CQE not reaped; <= CQ size */
	bool blockdev;                    /* zero with ZERO_RANGE, not PUNCH_HOLE */
	void (*io_hook)(void *user, const struct qbd_engine_io *io);
	void *io_hook_user;
	/* Fault injection for tests ($QBD_ENGINE_FAULT_EIO, read at open):
	 * data reads and writes of chunks [fault_lo, fault_hi] of any volume
	 * complete with -EIO (the I/O is done; its result is replaced). */
	bool fault_eio;
	uint64_t fault_lo, fault_hi;
	uint64_t io_seq;                  /* I/O ids for io_hook */
	/* activity log (docs/design.md, "Activity log") */
	uint8_t *al_buf;                  /* al_blocks blocks: the log as it should be */
	uint8_t *al_io;                   /* the block being written */
	bool *al_dirty;                   /* block changed since last written */
	bool al_busy;                     /* a log write is in flight */
	bool al_dsync;                    /* it is an activation: RWF_DSYNC */
	uint64_t al_seq;
	unsigned al_block;                /* block being written */
	uint64_t al_count, al_target;     /* active chunks; kept once durable */
	struct qbd_queue lru;             /* active chunks, least recently written first */
	struct qbd_queue alw;             /* requests waiting for a log write */
	struct qbd_queue ali;             /* requests in the log write in flight */
	struct qbd_engine_req al_req;     /* the log write's ring request */
	uint64_t sync_issued, sync_done;  /* syncs issued; highest completed */
	/* space and I/O accounting (qbd_engine_stats) */
	struct eng_chunk **by_slot;       /* per slot: its chunk, or NULL */
	uint64_t held_blocks;             /* written blocks of every chunk */
	uint64_t n_data_reads, n_data_read_bytes, n_data_writes, n_data_write_bytes;
	uint64_t n_meta_writes, n_zeroings, n_syncs;
	/* group commit (docs/design.md, "Metadata in memory"): a round
	 * writes the metadata block of every dirty chunk, then syncs, and
	 * completes the FLUSHes and FUA writes that were waiting when it
	 * started; one round at a time */
	struct qbd_queue dirty;           /* chunks whose metadata changed since written */
	struct qbd_queue round;           /* chunks still to write in this round */
	struct qbd_queue fl;              /* requests waiting for the next round */
	struct qbd_queue rd;              /* requests covered by the round running */
	bool round_busy;
	bool round_trim;                  /* a round to trim the log is wanted */
	bool round_sync;                  /* its sync is issued */
	int round_err;                    /* first error of the round's meta writes */
	unsigned round_mw;                /* its meta writes in flight */
	struct qbd_engine_req sync_req;   /* its sync */
	struct eng_mw mw[ENG_MW];
	struct eng_mw *mw_free;
	uint8_t *mw_bufs;                 /* ENG_MW blocks */
	/* submission */
	bool in_poll;                     /* qbd_engine_poll is running: it submits */
	unsigned plugged;                 /* qbd_engine_plug depth: unplug submits */
	bool retrying;                    /* it is giving parked requests their turn */
	bool woken;                       /* eventfd written since the last poll */
	bool fixed_file;                  /* the store is registered file 0 */
	bool defer_taskrun;               /* IORING_SETUP_DEFER_TASKRUN */
	bool taskrun_flag;                /* IORING_SETUP_TASKRUN_FLAG: the SQ ring says when completions wait */
	bool bufs_registered;             /* the pool is registered buffer 0 */
	uint8_t *bufs;                    /* registered buffer pool (qbd_engine_buf_get) */
	uint8_t **buf_free;
	unsigned buf_count, buf_nfree;
	size_t buf_size;
	size_t bufs_len;                  /* bytes mapped for the pool */
};

/* Shared by every file: the steps of a request, queues of requests
 * (common/queue.h), bitmaps and positions on the device. */

/* The steps of a request, each one or more SQEs (eng_priv.step). */
enum eng_step {
	ST_READ_DATA = 1,   /* READ: data read in flight */
	ST_RMW_READ,        /* WRITE/ZERO: partial blocks being read */
	ST_WRITE_DATA,      /* data write in flight */
	ST_WRITE_META,      /* a group commit's meta block write (struct eng_mw) */
	ST_FSYNC,           /* PROMISE sync; the group commit's (e->sync_req) */
	ST_PROMISE_WRITE,
	ST_ZERO_DATA,       /* ZERO/RESYNC: blocks becoming holes being zeroed */
	ST_SLOT_ZERO,       /* first write into a slot with old data: zero it */
	ST_SLOT_SYNC,       /* ... and make that durable */
	ST_AL_WAIT,         /* WRITE/ZERO waiting for its chunk's log write */
	ST_AL_WRITE,        /* the engine's log write (e->al_req) */
	ST_SCRUB_READ,      /* SCRUB: the chunk's written blocks being read */
	ST_UNDO_ZERO,       /* a data write failed: its hole blocks being zeroed */
	ST_RESERVE,         /* holes of a data write being allocated first */
};

static inline struct eng_priv *priv(struct qbd_engine_req *r)
{
	return (struct eng_priv *)r->priv;
}

/* Queues of requests (common/queue.h), linked through eng_priv.link. */
static inline struct qbd_engine_req *req_of(struct qbd_qlink *l)
{
	struct eng_priv *p = QBD_QUEUE_ENTRY(l, struct eng_priv, link);

	return p ? QBD_CONTAINER_OF((uint64_t *)p, struct qbd_engine_req, priv) : NULL;
}

static inline void reqq_push(struct qbd_queue *q, struct qbd_engine_req *r)
{
	qbd_queue_push(q, &priv(r)->link);
}

static inline struct qbd_engine_req *reqq_pop(struct qbd_queue *q)
{
	return req_of(qbd_queue_pop(q));
}

static inline struct qbd_engine_req *reqq_first(const struct qbd_queue *q)
{
	return req_of(q->head);
}

/* A READ, BITMAP or SCRUB: runs together with others of its kind. */
static inline bool req_reads(const struct qbd_engine_req *r)
{
	return r->op == QBD_ENGINE_READ || r->op == QBD_ENGINE_BITMAP ||
	       r->op == QBD_ENGINE_SCRUB;
}

/* true if len bytes at p are all zero */
static inline bool all_zero(const void *p, size_t len)
{
	const uint8_t *b = p;

	return len == 0 || (b[0] == 0 && memcmp(b, b + 1, len - 1) == 0);
}

static inline bool bit_test(const uint64_t *m, unsigned i)
{
	return (m[i / 64] >> (i % 64)) & 1;
}

static inline void bit_set(uint64_t *m, unsigned i, bool on)
{
	if (on)
		m[i / 64] |= 1ull << (i % 64);
	else
		m[i / 64] &= ~(1ull << (i % 64));
}

/* Offsets on the device of a slot's metadata block and of its data. */
static inline uint64_t meta_pos(const struct qbd_engine *e, uint64_t slot)
{
	return e->sb.meta_off + slot * QBD_ENGINE_BLOCK;
}

static inline uint64_t data_pos(const struct qbd_engine *e, uint64_t slot)
{
	return e->sb.data_off + slot * (uint64_t)e->sb.chunk_size;
}

/* engine.c: open, close, queries, the request entry point */
/* Finish a request: queue its callback for qbd_engine_poll, then start
 * what was waiting for it (its chunk's FIFO, the promise FIFO). */
void eng_req_done(struct qbd_engine *e, struct qbd_engine_req *r, int res);
/* The request's bounce buffer: the caller's buf when aligned (not for a
 * ZERO), else p->nb blocks allocated (freed by eng_req_done). 0 or
 * -ENOMEM. */
int eng_bounce_get(struct eng_priv *p, struct qbd_engine_req *r);
/* The step's SQEs are all complete: move the request on. */
void eng_step_done(struct qbd_engine *e, struct qbd_engine_req *r);

/* format.c: the on-disk format */
uint64_t eng_meta_checksum(const struct eng_meta *m);
uint64_t eng_al_checksum(const struct eng_al *a);
/* Write the superblock and sync (blocking). */
int eng_write_super(struct qbd_engine *e);
/* A free-slot marker: the slot's data may hold old data. */
void eng_meta_free_marker(struct eng_meta *m);
/* Read the promise table and the metadata table into memory. */
int eng_load(struct qbd_engine *e);
/* Read the superblock, formatting an all-zero store (clean: its data
 * area reads as zeros), else checking format, checksum and asked_cs. */
int eng_super_open(struct qbd_engine *e, const char *path, uint64_t size,
		   uint32_t chunk_size, uint32_t asked_cs, bool clean);

/* blockio.c: blocking I/O and the io_hook report */
void eng_hook(struct qbd_engine *e, enum qbd_engine_io_kind kind, bool done, int res,
	      uint64_t id, uint64_t off, uint64_t len, const void *buf, bool dsync);
/* Mode of fallocate that makes a range read as zeros. */
int eng_zero_mode(const struct qbd_engine *e);
int eng_pwrite(struct qbd_engine *e, const void *buf, size_t len, uint64_t off);
int eng_zero(struct qbd_engine *e, uint64_t off, uint64_t len);
int eng_sync(struct qbd_engine *e);

/* recover.c: crash recovery at open */
int eng_recover(struct qbd_engine *e);

/* chunk.c: the chunk table and each chunk's FIFO */
/* Written blocks of a chunk (space accounting). */
uint64_t eng_meta_held_blocks(const struct eng_meta *m);
struct eng_chunk *eng_chunk_find(const struct qbd_engine *e, uint64_t volume,
				 uint64_t chunk);
/* A chunk entry in slot (NULL if out of memory); the caller accounts
 * for the slot. */
struct eng_chunk *eng_chunk_add(struct qbd_engine *e, uint64_t volume,
				uint64_t chunk, uint64_t slot);
struct eng_chunk *eng_chunk_at_slot(const struct qbd_engine *e, uint64_t slot);
/* Set a chunk's flags, keeping the list of flagged chunks. */
void eng_chunk_set_flags(struct qbd_engine *e, struct eng_chunk *c, uint32_t flags);
/* Take a free slot for a new chunk. 0, -ENOSPC or -ENOMEM. */
int eng_chunk_alloc(struct qbd_engine *e, uint64_t volume, uint64_t chunk,
		    struct eng_chunk **out);
/* Forget a chunk (frees c); with al_clear its log bit goes too. */
void eng_chunk_remove(struct qbd_engine *e, struct eng_chunk *c, bool al_clear);
/* Queue a READ, BITMAP, SCRUB, WRITE or ZERO in its chunk's FIFO and
 * start what can run. */
void eng_chunk_enqueue(struct qbd_engine *e, struct eng_chunk *c, struct qbd_engine_req *r);
/* Start what can run from the head of the chunk's FIFO (may free c). */
void eng_chunk_run_next(struct qbd_engine *e, struct eng_chunk *c);
/* The request is done with its chunk: start what waits in its FIFO. */
void eng_req_release_chunk(struct qbd_engine *e, struct qbd_engine_req *r);

/* read.c: the read path */
/* Start a READ, BITMAP or SCRUB (its chunk, if any, in p->ch). */
void eng_read_start(struct qbd_engine *e, struct qbd_engine_req *r);
/* A READ's or SCRUB's read is complete (no error, no short transfer). */
void eng_read_step_done(struct qbd_engine *e, struct qbd_engine_req *r);
/* Verify every written block of the step's extents in p->bounce; 0 or
 * -EBADMSG (bad blocks recorded, chunk DAMAGED). */
int eng_verify_blocks(struct qbd_engine *e, struct eng_chunk *c,
		      const struct eng_priv *p);

/* write.c: the write path */
/* A WRITE/ZERO taken from its chunk's FIFO: check versions, go on. */
void eng_write_start(struct qbd_engine *e, struct qbd_engine_req *r);
/* Its chunk active in the log: read partial blocks or apply. */
void eng_write_go(struct qbd_engine *e, struct qbd_engine_req *r);
/* A step of the write path is complete (no error, no short transfer). */
void eng_write_step_done(struct qbd_engine *e, struct qbd_engine_req *r);
/* A data write or reservation failed with err: zero its holes, fail. */
void eng_undo_start(struct qbd_engine *e, struct qbd_engine_req *r, int err);

/* al.c: the activity log */
/* The activity log bit of a slot, in memory. */
bool eng_al_bit_test(const struct qbd_engine *e, uint64_t slot);
/* A WRITE/ZERO about to write: on to eng_write_go once its chunk's bit
 * is durable in the log (at once if it is). */
void eng_al_activate(struct qbd_engine *e, struct qbd_engine_req *r);
/* A write of the chunk is done with it (least recently written last). */
void eng_al_written(struct qbd_engine *e, struct eng_chunk *c);
/* The chunk is forgotten: it leaves the log's list; with clear its bit
 * goes too. */
void eng_al_forget(struct qbd_engine *e, struct eng_chunk *c, bool clear);
/* Start a log write if one is wanted and none is in flight. */
void eng_al_kick(struct qbd_engine *e);
/* The log write (e->al_req) is complete. */
void eng_al_done(struct qbd_engine *e, int err);
/* After a sync: durable chunks beyond the target leave the log. */
void eng_al_trim(struct qbd_engine *e);
/* Empty the log on disk (blocking; the chunks' state is durable). */
int eng_al_clear_all(struct qbd_engine *e);

/* commit.c: the metadata group commit */
/* Allocate the metadata writers (ENG_MW). 0 or -ENOMEM. */
int eng_commit_init(struct qbd_engine *e);
/* The chunk's metadata changed in memory: the next round writes it. */
void eng_meta_dirty(struct qbd_engine *e, struct eng_chunk *c);
/* The chunk is forgotten: it leaves the dirty or round list. */
void eng_commit_forget(struct qbd_engine *e, struct eng_chunk *c);
/* Start a round if none runs and one is wanted. */
void eng_round_kick(struct qbd_engine *e);
/* A FLUSH, or a FUA write whose data is on the device, waits for the
 * next round. */
void eng_flush_enqueue(struct qbd_engine *e, struct qbd_engine_req *r);
/* A round's metadata block write (struct eng_mw) is complete. */
void eng_mw_done(struct qbd_engine *e, struct qbd_engine_req *r, int err);
/* The round's sync (e->sync_req) is complete. */
void eng_round_done(struct qbd_engine *e, int err);
/* Clean close: write every dirty metadata block, sync, empty the log
 * (blocking). */
int eng_commit_close(struct qbd_engine *e);

/* promise.c: promises, tombstones and volume deletion */
/* Start the PROMISEs, TOMBSTONEs and DELETE_VOLUMEs waiting, one at a
 * time. */
void eng_promise_run(struct qbd_engine *e);

/* ring.c: the io_uring ring and the buffer pool */
/* The buffer pool of qbd_engine_opts.buffers (not registered yet). */
int eng_bufs_init(struct qbd_engine *e, unsigned n, uint32_t size);
/* The ring, its eventfd, the store and the pool registered. */
int eng_ring_init(struct qbd_engine *e, unsigned qd);
/* A callback is queued: make sure qbd_engine_poll runs. */
void eng_wake(struct qbd_engine *e);
/* Submit the SQEs queued. */
void eng_ring_submit(struct qbd_engine *e);
/* Issue the request's step (or park it until SQEs are free). */
void eng_step_go(struct qbd_engine *e, struct qbd_engine_req *r, enum eng_step step);
/* Bytes the request's current step must transfer. */
uint32_t eng_step_bytes(const struct eng_priv *p);

/* csum.c: block checksums */
/* XXH3-64 of len bytes (a 4 KiB block's checksum), the fastest way the
 * CPU allows. */
uint64_t eng_csum(const void *p, size_t len);

/* csum-avx2.c: the AVX2 build of eng_csum */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ENG_CSUM_AVX2 1
uint64_t eng_csum_avx2(const void *p, size_t len);
#else
#define ENG_CSUM_AVX2 0
#endif

#endif
