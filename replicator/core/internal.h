/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The quorum core's private definitions: its structures and the functions
 * its files share. core.h is the public API; see it for what the core
 * decides and docs/protocol.md for why it is safe. Everything runs inside
 * a call from the shell; ops callbacks must not call back into the core.
 *
 * A user request (struct uio) is split into parts, one per chunk. A part
 * sends one message (struct sub) per replica it needs; every live sub is in
 * an id hash (to find it from a reply) and in its replica's list, oldest
 * first (to fail it when the replica goes down, and to time it out).
 * Resyncs and repairs are parts without a user request. A part is freed
 * when it is done and no sub of it is live. Each kind of part has its
 * reply function next to the code that sends it; op_reply (part.c)
 * routes each answer there.
 *
 * Chunks that have waiting parts or a resync in progress have a struct
 * cwait (a small hash table): a resync holds new writes of its chunk, and
 * parts that need a chunk recovered first wait there in arrival order.
 *
 * Test builds can define one QBD_CORE_MUTANT_* to disable a mechanism, so
 * that tests/sim can show that it notices.
 */
#ifndef QBD_CORE_INTERNAL_H
#define QBD_CORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replicator/core/core.h"

#define MAXR QBD_CORE_MAX_SLOTS
#define HBUCKETS 4096u
#define CWBUCKETS 64u
#define SEQ_MASK ((1ull << QBD_CORE_EPOCH_SHIFT) - 1)
#define NO_CFLAGS (-1)           /* a reply without the chunk's flags */

enum { L_ERR, L_WARN, L_INFO, L_DEBUG };

/* What a part's start returns besides 0 and -errno: it waits (wait.c). */
enum { QUEUE = 1 };

struct part;

struct sub {
	struct part *p;
	uint64_t id;
	uint64_t sent;
	unsigned replica;
	bool live;
	struct sub *hnext;
	struct sub *rprev, *rnext;
};

enum pkind { P_READ = 1, P_WRITE, P_FLUSH, P_REPAIR, P_RSREAD, P_RSWRITE, P_PROBE, P_PING,
	     P_RSPULL, P_RSBUMP, P_RSBUMPW, P_RFLUSH, P_CFLUSH };

struct uio {
	void *cookie;
	unsigned left;
	int err;
};

struct cwait;

struct part {
	struct qbd_core *c;
	struct uio *io;
	enum pkind kind;
	uint64_t chunk;
	uint32_t off, len, flags;
	uint8_t *buf;            /* user's buffer, or owned */
	uint8_t *owned;
	uint64_t expected, newv;
	uint32_t targets, pending, okset;
	uint32_t nospc;          /* write: replicas that answered -ENOSPC */
	uint32_t unsure;         /* write: answers other than -ENOSPC, -ESTALE and 0 */
	uint32_t refused;        /* write: answers -ENOSPC or -ESTALE */
	bool vsame;              /* write: every refusal carried vfail */
	uint64_t vfail;          /* write: the version the refusals carried */
	bool done;
	bool started;            /* write: counted in wr_inflight */
	bool fallback;           /* pull: a target failed, copy through us */
	bool parked;             /* read: has data newer than committed */
	int result;
	/* reads (also the resync read) */
	uint32_t tried, bad;
	int replica;
	int first_err;
	uint64_t min_version, version;
	uint32_t gen;            /* read: c->gen[chunk] when sent */
	bool bitmap;             /* read: the written bitmap (BLOCK_STATUS) */
	uint64_t bitpos;         /* bitmap: first bit of the part in buf */
	/* flush: chunks it covers */
	uint64_t *dirty;
	size_t ndirty;
	bool all;                /* flush: needs every replica */
	struct part *followers;  /* flush: waited with it, finish with it */
	/* resync (and probe) */
	struct cwait *cw;
	uint32_t rs_targets;
	uint64_t src_version;    /* version the resync read must find */
	uint32_t rs_len;         /* resync: bytes of the sparse form in buf */
	bool rs_charged;         /* resync: a chunk's worth taken from the rate's
				  * tokens, not yet settled with the bytes */
	uint64_t pv[MAXR];       /* probe: versions reported */
	uint32_t pok;            /* probe: replicas that reported one */
	uint32_t pbad;           /* probe: of those, the ones whose block failed its checksum */
	/* waiting on a chunk */
	struct part *wnext;
	uint64_t qtime;
	unsigned refs;
	struct sub subs[MAXR];
};

struct cwait {
	uint64_t chunk;
	struct part *head, *tail;
	bool resyncing;
	struct cwait *next;
};

struct qbd_core {
	struct qbd_core_cfg cfg;
	struct qbd_core_ops ops;
	void *user;
	unsigned R;              /* slots in use: every member is below it */
	unsigned nv, W;          /* replicas per voter set, write quorum */
	/* Membership: vset[0] is S, vset[1] S' during a change's joint
	 * phase (else 0); every quorum holds in each non-empty set
	 * (core_quorum). members: voters and learners; other slots get
	 * nothing. */
	uint32_t vset[2], learners, members;
	int leaving;             /* joint phase: X's slot, else -1 */
	struct part *cf_active;  /* the change flush in flight */
	uint64_t *cf_stale[MAXR];/* its targets' stale bitmaps when it was sent */
	bool cf_done;            /* joint phase: qbd_core_change_ready's answer */
	uint64_t nchunks;
	uint64_t *version;       /* V[c] */
	uint64_t *acked;         /* committed version: on W replicas */
	uint32_t *wr_inflight;   /* writes started, result not known */
	uint32_t *wr_subs;       /* write messages awaiting a reply */
	uint32_t *gen;           /* bumped when a chunk's version chain restarts */
	uint64_t *stale[MAXR];   /* bitmaps */
	uint64_t nstale[MAXR];
	uint64_t *flagged[MAXR]; /* bitmaps: copy reported SUSPECT or DAMAGED */
	uint64_t *damaged[MAXR]; /* bitmaps: of those, the DAMAGED ones */
	uint64_t nflagged[MAXR];
	uint64_t flagged_total[MAXR]; /* in the latest PING report */
	uint64_t rs_done[MAXR];
	uint64_t pulled[MAXR];
	uint64_t rs_bytes[MAXR]; /* bytes of chunk data resync sent to each */
	unsigned rs_src_next;    /* where the next choice of a source starts */
	uint64_t rs_backoff[MAXR];
	uint64_t rs_cursor[MAXR];
	bool up[MAXR];
	uint64_t confirmed[MAXR];/* send time of its latest answer under our epoch */
	uint64_t last_reply[MAXR];/* now at its latest reply or OPEN */
	bool pinging[MAXR];
	uint64_t write_hold;     /* writes wait until then (takeover) */
	unsigned promised;       /* bit per replica, during attach */
	unsigned outstanding[MAXR];
	struct sub *rhead[MAXR], *rtail[MAXR];
	bool opened, fenced;
	uint64_t next_id;
	struct sub *htab[HBUCKETS];
	unsigned nsubs;
	struct cwait *ctab[CWBUCKETS];
	unsigned ncwait;
	uint64_t *urgent;        /* chunks below W copies at attach */
	size_t nurgent, urgent_pos;
	uint64_t *dirty_bm;      /* chunks acknowledged since the last flush */
	uint64_t *dirty;
	size_t ndirty, dirty_cap;
	bool dirty_lost;         /* a chunk could not be listed */
	bool flush_eio;          /* a chunk was restored from a flagged copy: the
				  * next flush fails (acknowledged writes may be
				  * gone, as after a disk's cache was lost) */
	struct part *fl_active;  /* the flush in flight (one at a time) */
	struct part *fl_head, *fl_tail; /* flushes waiting for it */
	unsigned pending_ios;
	unsigned rs_active;
	int64_t rs_tokens;       /* bytes the rate allows now; below 0 after
				  * copies that cost more than was saved */
	uint64_t rs_last;
	bool rs_kick;            /* a copy landed: start the next at the end
				  * of this reply, not at the next tick */
	uint64_t now;
};

static inline unsigned popc(uint32_t x)
{
	return (unsigned)__builtin_popcount(x);
}

static inline bool bit_get(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1u;
}

/* core.c: the public API (create and free, inputs, queries) */
/* A line for ops->log, if the shell gave one; level L_*. */
void core_logf(struct qbd_core *c, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* state.c: what the core knows of chunks and replicas */
void core_stale_set(struct qbd_core *c, unsigned r, uint64_t ch);
void core_stale_clear(struct qbd_core *c, unsigned r, uint64_t ch);
void core_flag_set(struct qbd_core *c, unsigned r, uint64_t ch, uint32_t flags);
void core_flag_clear(struct qbd_core *c, unsigned r, uint64_t ch);
void core_flag_update(struct qbd_core *c, unsigned r, uint64_t ch, uint32_t flags);
uint32_t core_current_set(const struct qbd_core *c, uint64_t ch);
uint32_t core_up_set(const struct qbd_core *c);
/* Does set hold n slots of every voter set (S, and S' while joint)? */
bool core_quorum(const struct qbd_core *c, uint32_t set, unsigned n);
/* A write quorum: W of each voter set. */
bool core_wq(const struct qbd_core *c, uint32_t set);
/* Every voter of every set. */
uint32_t core_voters(const struct qbd_core *c);
void core_fence(struct qbd_core *c);
int core_next_version(const struct qbd_core *c, uint64_t v, uint64_t *out);
unsigned core_attach_quorum(const struct qbd_core *c);
unsigned core_probe_quorum(const struct qbd_core *c);
bool core_recoverable(const struct qbd_core *c, uint64_t ch);
void core_commit_check(struct qbd_core *c, uint64_t ch);

/* part.c: messages and parts */
void core_sub_unlink(struct qbd_core *c, struct sub *s);
/* The live message id sent to r, or NULL. */
struct sub *core_sub_find(struct qbd_core *c, unsigned r, uint64_t id);
void core_part_send(struct part *p, unsigned r, enum qbd_core_msg_type type,
		    uint32_t off, uint32_t len, uint32_t flags, const void *data);
/* A part with one reference (the caller's), or NULL. */
struct part *core_part_new(struct qbd_core *c, struct uio *io, enum pkind kind,
			   uint64_t ch);
void core_part_put(struct part *p);
void core_part_enqueue(struct part **head, struct part **tail, struct part *p);
/* One part of io finished with res: io completes after its last. */
void core_io_done(struct qbd_core *c, struct uio *io, int res);
void core_part_finish(struct part *p, int res);
/* Each kind's reply function (core_*_reply, next to its sender) takes
 * r's answer to a message of part p: status 0 or -errno, and where the
 * kind needs it the chunk's version at r. core_part_answered is the
 * first step of most: it returns the status the part goes on with. */
int core_part_answered(struct part *p, unsigned r, int status);
/* Message s got its answer (or failed: -ENOTCONN); cflags as for
 * core_probe_reply. */
void core_sub_result(struct qbd_core *c, struct sub *s, int status,
		     uint64_t version, int64_t cflags);

/* wait.c: parts waiting for a chunk */
struct cwait *core_cw_find(struct qbd_core *c, uint64_t ch);
/* ch's entry, made if needed; NULL without memory. */
struct cwait *core_cw_get(struct qbd_core *c, uint64_t ch);
/* Free w unless parts wait in it or its chunk is being resynced. */
void core_cw_maybe_free(struct qbd_core *c, struct cwait *w);
/* Queue p (a reference of its own) at the end of w. */
void core_cw_push(struct qbd_core *c, struct cwait *w, struct part *p);
void core_cw_run(struct qbd_core *c, struct cwait *w);
/* core_cw_run on every chunk with waiting parts. */
void core_cw_run_all(struct qbd_core *c);
void core_part_admit(struct qbd_core *c, struct part *p);

/* write.c: writes */
void core_write_version(struct part *p, uint32_t targets);
void core_write_send(struct part *p, uint32_t targets, uint32_t off, uint32_t flags);
int core_write_try(struct part *p);
void core_write_reply(struct part *p, unsigned r, int status, uint64_t version);

/* flush.c: flushes, and the chunks they answer for */
/* ch was acknowledged: the next flush answers for it. */
void core_dirty_add(struct qbd_core *c, uint64_t ch);
int core_flush_try(struct part *p);
void core_flush_reply(struct part *p, unsigned r, int status);
void core_flush_reconnected(struct qbd_core *c, unsigned r);
void core_reflush_reply(struct part *p, unsigned r, int status);

/* member.c: membership changes */
/* Allocate slot r's bitmaps (a new learner). 0 or -ENOMEM. */
int core_slot_alloc(struct qbd_core *c, unsigned r);
void core_cflush_reply(struct part *p, unsigned r, int status);

/* read.c: reads, block status, read repair and the read lease */
void core_lease_keep(struct qbd_core *c);
void core_ping_reply(struct part *p, unsigned r, int status);
/* The best up replica current for ch, not in tried (nearest, then least
 * busy), or -1. */
int core_read_pick(const struct qbd_core *c, uint64_t ch, uint32_t tried);
/* Bytes of a written bitmap covering len bytes. */
uint32_t core_bitmap_bytes(const struct qbd_core *c, uint32_t len);
int core_read_try(struct part *p);
/* Read p has its data at a committed version: serve it. */
void core_read_done(struct part *p);
void core_read_reply(struct part *p, unsigned r, int status, uint64_t version);
void core_repair_reply(struct part *p, unsigned r, int status);

/* resync.c: resync, probes and restores */
void core_resync_schedule(struct qbd_core *c);
void core_resync_kicked(struct qbd_core *c);
void core_pull_reply(struct part *p, unsigned r, int status);
void core_bump_read_reply(struct part *p, unsigned r, int status, uint64_t version);
void core_bump_write_reply(struct part *p, unsigned r, int status);
void core_probe_reply(struct part *p, unsigned r, int status, uint64_t version,
		      int64_t cflags);
void core_resync_read_reply(struct part *p, unsigned r, int status,
			    uint64_t version);
void core_resync_write_reply(struct part *p, unsigned r, int status);
/* Where the sparse form of a resync read's reply of len bytes goes, or
 * NULL (a length no sparse form of the chunk has). */
void *core_resync_reply_buf(struct part *p, uint32_t len);

#endif
