/* SPDX-License-Identifier: Apache-2.0 */
/* Engine private definitions: the on-disk format and in-memory state.
 * On-disk integers are little-endian (the only supported hosts are). */
#ifndef QBD_ENGINE_INTERNAL_H
#define QBD_ENGINE_INTERNAL_H

#include <assert.h>
#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* Promise table entry: 64 bytes, 16 per 4 KiB block. */
struct eng_promise {
	uint64_t volume;        /* 0 = free */
	uint64_t epoch;
	uint8_t pad[48];
} __attribute__((packed, aligned(8)));
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
	struct qbd_engine_req *q_head, *q_tail; /* waiting requests */
	unsigned reading;       /* READs of this chunk running */
	bool writing;           /* a WRITE/ZERO of this chunk is running */
	bool in_run;            /* chunk_run_next is on the stack */
	uint32_t flags;         /* QBD_ENGINE_CHUNK_* (on disk at the next meta write) */
	uint64_t bad[ENG_BLOCKS_MAX / 64]; /* blocks that failed their checksum */
	struct eng_chunk *fprev, *fnext; /* list of flagged chunks (flags != 0) */
	/* activity log */
	bool al_active;         /* its bit is durable in the log */
	bool slot_dirty;        /* the slot's data may not be zeros where unwritten */
	struct eng_chunk *lprev, *lnext; /* LRU of active chunks, oldest first */
	uint64_t done_seq;      /* syncs issued when its last write or meta
				 * block write completed */
	/* metadata kept in memory (docs/design.md, "Metadata in memory"):
	 * meta is the chunk as its completed writes left it; the block on
	 * disk is older until a round of the group commit writes it */
	uint8_t dstate;         /* ENG_CLEAN, ENG_DIRTY (on e->dirty), ENG_ROUND (on e->round) */
	bool mw_busy;           /* its metadata block write is in flight */
	bool flags_dirty;       /* flags or bad blocks changed since its last meta write */
	struct eng_chunk *dprev, *dnext; /* e->dirty or e->round */
};

enum { ENG_CLEAN = 0, ENG_DIRTY, ENG_ROUND };

/* A list of chunks through dprev/dnext. */
struct eng_clist {
	struct eng_chunk *head, *tail;
};

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
	struct qbd_engine_req *next;  /* chunk FIFO, retry or done list */
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
	struct eng_chunk *flagged;        /* chunks with flags, for qbd_engine_flagged_chunks */
	struct qbd_engine_req *done_head, *done_tail;
	struct qbd_engine_req *retry_head, *retry_tail;
	struct qbd_engine_req *prom_head, *prom_tail; /* PROMISEs waiting */
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
	struct eng_chunk *lru_head, *lru_tail;
	struct qbd_engine_req *alw_head, *alw_tail;  /* waiting for a log write */
	struct qbd_engine_req *ali_head, *ali_tail;  /* in the log write in flight */
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
	struct eng_clist dirty;           /* metadata changed since written */
	struct eng_clist round;           /* still to write in this round */
	struct qbd_engine_req *fl_head, *fl_tail; /* waiting for the next round */
	struct qbd_engine_req *rd_head, *rd_tail; /* covered by the round running */
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

/* csum.c */
/* XXH3-64 of len bytes (a 4 KiB block's checksum), the fastest way the
 * CPU allows. */
uint64_t eng_csum(const void *p, size_t len);

/* csum-avx2.c */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ENG_CSUM_AVX2 1
uint64_t eng_csum_avx2(const void *p, size_t len);
#else
#define ENG_CSUM_AVX2 0
#endif

#endif
