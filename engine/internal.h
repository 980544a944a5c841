/* SPDX-License-Identifier: Apache-2.0 */
/* Engine private definitions: the on-disk format and in-memory state.
 * On-disk integers are little-endian (the only supported hosts are). */
#ifndef QBD_ENGINE_INTERNAL_H
#define QBD_ENGINE_INTERNAL_H

#include <assert.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine.h"

#define ENG_MAGIC_SB   0x31304e4544425151ull /* "QQBDEN01" */
#define ENG_MAGIC_META 0x4154454d44425151ull /* "QQBDMETA" */
#define ENG_FORMAT 1
#define ENG_BLOCKS_MAX 256                   /* blocks per chunk (1 MiB / 4 KiB) */
#define ENG_PROMISE_OFF 4096ull
#define ENG_PROMISE_BYTES 65536ull           /* 1024 entries */
#define ENG_PROMISE_ENTRIES (ENG_PROMISE_BYTES / 64)
#define ENG_META_OFF (ENG_PROMISE_OFF + ENG_PROMISE_BYTES)

/* Superblock, at offset 0, one 4 KiB block. */
struct eng_super {
	uint64_t magic;
	uint32_t format;
	uint32_t chunk_size;
	uint64_t node_id;
	uint64_t cluster_id;
	uint64_t nslots;
	uint64_t meta_off;
	uint64_t data_off;
	uint64_t checksum;      /* XXH3 of the struct with this field 0 */
} __attribute__((packed, aligned(8)));
static_assert(sizeof(struct eng_super) == 64, "superblock size");

/* Promise table entry: 64 bytes, 16 per 4 KiB block. */
struct eng_promise {
	uint64_t volume;        /* 0 = free */
	uint64_t epoch;
	uint8_t pad[48];
} __attribute__((packed, aligned(8)));
static_assert(sizeof(struct eng_promise) == 64, "promise entry size");

/* Chunk metadata block: one 4 KiB block per slot. */
struct eng_meta {
	uint64_t magic;         /* ENG_MAGIC_META, or 0 for a free slot */
	uint64_t volume;
	uint64_t chunk;
	uint64_t version;
	uint64_t written[ENG_BLOCKS_MAX / 64]; /* block has data (else zeros) */
	uint64_t checksum;      /* XXH3 of the block with this field 0 */
	uint8_t pad[2048 - 72];
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
	uint32_t flags;         /* QBD_ENGINE_CHUNK_* */
	uint64_t bad[ENG_BLOCKS_MAX / 64]; /* blocks that failed their checksum */
	struct eng_chunk *fprev, *fnext; /* list of flagged chunks (flags != 0) */
};

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
	struct eng_meta *meta_copy;   /* WRITE/ZERO: the new meta block */
	uint32_t cursor;              /* RESYNC: next block to look at for data runs */
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
	uint8_t *free_map;                /* per slot: 1 used */
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
};

#endif
