/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the quorum core: single decisions, message by message.
 * (tests/sim runs it against thousands of faulty schedules.)
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/core/core.h"

#define CS 4096u
#define MS 1000000ull

/* The fake shell: messages sent and requests completed are recorded. */
static struct qbd_core_msg sent[256];
static unsigned nsent;
static int results[64];
static unsigned ncomplete;
static unsigned drops;

static void f_send(void *u, const struct qbd_core_msg *m)
{
	(void)u;
	ck_assert_uint_lt(nsent, 256);
	sent[nsent++] = *m;
}

static void f_moved(void *u, unsigned r, uint64_t id, const void *d)
{
	(void)u; (void)r; (void)id; (void)d;
}

static void f_drop(void *u, unsigned r, const char *why)
{
	(void)u; (void)r; (void)why;
	drops++;
}

static void f_complete(void *u, void *cookie, int res)
{
	(void)u;
	results[(intptr_t)cookie] = res;
	ncomplete++;
}

static const struct qbd_core_ops ops = {
	.send = f_send, .data_moved = f_moved, .drop = f_drop, .complete = f_complete,
};

static struct qbd_core *c;
static uint8_t buf[CS];

static void setup(void)
{
	nsent = ncomplete = drops = 0;
	memset(results, 0x7f, sizeof(results));
	c = NULL;
}

static void teardown(void)
{
	qbd_core_free(c);
}

/* A core with R replicas, epoch e; replicas in `up` promise with no data. */
static void open_core(unsigned R, unsigned W, uint64_t epoch, unsigned up)
{
	struct qbd_core_cfg cfg = { .replicas = R, .write_quorum = W, .nchunks = 8,
				    .chunk_size = CS, .epoch = epoch };

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	for (unsigned r = 0; r < R; r++)
		if (up & (1u << r))
			ck_assert_int_eq(qbd_core_replica_open(c, r, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
}

/* Index of the i-th sent message of a type to replica r, or -1. */
static int find(enum qbd_core_msg_type t, unsigned r, unsigned from)
{
	for (unsigned i = from; i < nsent; i++)
		if (sent[i].type == t && sent[i].replica == r)
			return (int)i;
	return -1;
}

/* The answer to a resync's SPARSE read i of a chunk of CS bytes (one
 * block): its bitmap (block 0 written), then the block. */
static void sparse_reply_buf(unsigned i)
{
	uint8_t *b = qbd_core_reply_buf(c, sent[i].replica, sent[i].id, 1 + CS);

	ck_assert_ptr_nonnull(b);
	b[0] = 1;
	memset(b + 1, 0xab, CS);
}

static void reply(int i, int status, uint64_t version)
{
	ck_assert_int_ge(i, 0);
	qbd_core_reply(c, sent[i].replica, sent[i].id, status, version, MS);
}

START_TEST(write_needs_w_and_marks_the_rest_stale)
{
	uint64_t v;

	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)1, MS);
	ck_assert_uint_eq(nsent, 3);
	v = sent[0].new_version;
	ck_assert_uint_eq(v, (1ull << QBD_CORE_EPOCH_SHIFT) | 1);
	ck_assert_uint_eq(sent[0].expected_version, 0);
	reply(find(QBD_CM_WRITE, 0, 0), 0, v);
	ck_assert_uint_eq(ncomplete, 0);          /* one of two */
	reply(find(QBD_CM_WRITE, 1, 0), -EIO, 0);
	ck_assert_uint_eq(ncomplete, 0);
	reply(find(QBD_CM_WRITE, 2, 0), 0, v);
	ck_assert_uint_eq(ncomplete, 1);
	ck_assert_int_eq(results[1], 0);
	ck_assert(qbd_core_is_stale(c, 1, 0));
	ck_assert(!qbd_core_is_stale(c, 0, 0));
}
END_TEST

START_TEST(write_fails_below_quorum)
{
	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)2, MS);
	reply(find(QBD_CM_WRITE, 0, 0), -EIO, 0);
	reply(find(QBD_CM_WRITE, 1, 0), -ESTALE, 0);
	ck_assert_uint_eq(ncomplete, 1);
	ck_assert_int_eq(results[2], -EIO);
}
END_TEST

START_TEST(attach_needs_a_promise_quorum)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = CS, .epoch = 1 };

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), -EIO);
}
END_TEST

START_TEST(eperm_fences_for_good)
{
	open_core(3, 2, 4, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)3, MS);
	reply(find(QBD_CM_WRITE, 0, 0), 0, sent[0].new_version);
	reply(find(QBD_CM_WRITE, 1, 0), -EPERM, 0);
	ck_assert_int_eq(results[3], -EPERM);
	ck_assert(qbd_core_fenced(c));
	qbd_core_submit(c, QBD_CORE_READ, 0, 0, 512, buf, (void *)4, MS);
	ck_assert_int_eq(results[4], -EPERM);
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)5, MS);
	ck_assert_int_eq(results[5], -EPERM);
}
END_TEST

/* Attach takes each chunk's highest version; a chunk on fewer than W
 * replicas is copied before it is read. */
START_TEST(recovery_before_read)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = CS, .epoch = 2 };
	struct qbd_chunk_version hi = { 3, (1ull << 40) | 7 }, lo = { 3, (1ull << 40) | 6 };
	int rd, wr;

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, &hi, 1, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 1, &lo, 1, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
	ck_assert_uint_eq(qbd_core_chunk_version(c, 3), hi.version);
	ck_assert(qbd_core_is_stale(c, 1, 3));
	ck_assert(qbd_core_is_stale(c, 2, 3)); /* never promised */
	/* open_done started the recovery: a whole-chunk read from replica 0 */
	rd = find(QBD_CM_READ, 0, 0);
	ck_assert_int_ge(rd, 0);
	ck_assert_uint_eq(sent[rd].length, CS);
	ck_assert_uint_eq(sent[rd].flags, QBD_CORE_F_SPARSE);
	qbd_core_submit(c, QBD_CORE_READ, 0, 3 * CS, 512, buf, (void *)6, MS);
	ck_assert_int_eq(find(QBD_CM_READ, 0, (unsigned)rd + 1), -1); /* waits */
	sparse_reply_buf((unsigned)rd);
	reply(rd, 0, hi.version);
	wr = find(QBD_CM_WRITE, 1, 0);
	ck_assert_int_ge(wr, 0);
	ck_assert_uint_eq(sent[wr].flags & QBD_CORE_F_RESYNC, QBD_CORE_F_RESYNC);
	ck_assert_uint_eq(sent[wr].new_version, hi.version);
	ck_assert_uint_eq(ncomplete, 0);
	reply(wr, 0, hi.version);
	ck_assert(!qbd_core_is_stale(c, 1, 3));
	qbd_core_tick(c, 2 * MS);
	rd = find(QBD_CM_READ, 0, (unsigned)wr);
	if (rd < 0)
		rd = find(QBD_CM_READ, 1, (unsigned)wr);
	ck_assert_int_ge(rd, 0); /* the user's read went out only now */
	reply(rd, 0, hi.version);
	ck_assert_int_eq(results[6], 0);
}
END_TEST

/* Data of a write still in flight is not served before it is committed. */
START_TEST(read_waits_for_commit)
{
	int w0, w1, w2, rd;

	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)7, MS);
	w0 = find(QBD_CM_WRITE, 0, 0);
	w1 = find(QBD_CM_WRITE, 1, 0);
	w2 = find(QBD_CM_WRITE, 2, 0);
	reply(w0, 0, sent[w0].new_version);
	qbd_core_submit(c, QBD_CORE_READ, 0, 0, 512, buf, (void *)8, MS);
	rd = find(QBD_CM_READ, 0, 0);
	if (rd < 0)
		rd = find(QBD_CM_READ, 1, 0);
	if (rd < 0)
		rd = find(QBD_CM_READ, 2, 0);
	reply(rd, 0, sent[w0].new_version);
	ck_assert_int_eq(results[8], 0x7f7f7f7f);  /* parked */
	reply(w1, 0, sent[w0].new_version);
	ck_assert_int_eq(results[7], 0);
	ck_assert_int_eq(results[8], 0);
	reply(w2, 0, sent[w0].new_version);
}
END_TEST

/* A flush answers for the chunks acknowledged before it: W replicas must
 * have flushed each of them. */
START_TEST(flush_needs_w_durable_copies)
{
	int f0, f1, f2;

	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)9, MS);
	reply(find(QBD_CM_WRITE, 0, 0), 0, sent[0].new_version);
	reply(find(QBD_CM_WRITE, 1, 0), 0, sent[0].new_version);
	reply(find(QBD_CM_WRITE, 2, 0), -EIO, 0);   /* 2 is stale now */
	ck_assert_int_eq(results[9], 0);
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)10, MS);
	f0 = find(QBD_CM_FLUSH, 0, 0);
	f1 = find(QBD_CM_FLUSH, 1, 0);
	f2 = find(QBD_CM_FLUSH, 2, 0);
	reply(f2, 0, 0);
	reply(f0, 0, 0);
	ck_assert_int_eq(results[10], 0x7f7f7f7f); /* 2 does not hold chunk 0 */
	reply(f1, -EIO, 0);
	ck_assert_int_eq(results[10], -EIO);
	/* 1 may have lost the write: stale until it is copied again */
	ck_assert(qbd_core_is_stale(c, 1, 0));
	/* the chunk stays owed to the next flush, which needs 2 copies */
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)11, MS);
	reply(find(QBD_CM_FLUSH, 0, (unsigned)f2 + 1), 0, 0);
	reply(find(QBD_CM_FLUSH, 1, (unsigned)f2 + 1), 0, 0);
	ck_assert_int_eq(results[11], 0x7f7f7f7f);
	reply(find(QBD_CM_FLUSH, 2, (unsigned)f2 + 1), 0, 0);
	ck_assert_int_eq(results[11], -EIO);
}
END_TEST

/* A replica that stops answering is dropped after the timeout. */
START_TEST(timeout_drops_replica)
{
	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)12, MS);
	reply(find(QBD_CM_WRITE, 0, 0), 0, sent[0].new_version);
	reply(find(QBD_CM_WRITE, 1, 0), 0, sent[0].new_version);
	ck_assert_int_eq(results[12], 0);
	qbd_core_tick(c, 20000 * MS);
	ck_assert_uint_eq(drops, 1);
	ck_assert_uint_eq(qbd_core_up_count(c), 2);
	ck_assert(qbd_core_is_stale(c, 2, 0));
}
END_TEST

/* What a status display needs to call a replica silent: when it last
 * answered, and since when its oldest message waits. */
START_TEST(replica_info_shows_a_silent_replica)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = CS, .epoch = 1 };
	struct qbd_core_replica_info ri;
	int w1, w2;

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	for (unsigned r = 0; r < 3; r++)
		ck_assert_int_eq(qbd_core_replica_open(c, r, NULL, 0, 1 * MS), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 1 * MS), 0);
	ck_assert_int_eq(qbd_core_replica_info(c, 2, &ri), 0);
	ck_assert_uint_eq(ri.last_reply, 1 * MS);        /* its OPEN */
	ck_assert_uint_eq(ri.oldest_unanswered, 0);

	/* A write at 2 ms: replicas 0 and 1 answer at 3 ms, 2 does not. */
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)1, 2 * MS);
	w1 = find(QBD_CM_WRITE, 2, 0);
	ck_assert_int_ge(w1, 0);
	qbd_core_reply(c, 0, sent[find(QBD_CM_WRITE, 0, 0)].id, 0, sent[w1].new_version,
		       3 * MS);
	qbd_core_reply(c, 1, sent[find(QBD_CM_WRITE, 1, 0)].id, 0, sent[w1].new_version,
		       3 * MS);
	ck_assert_int_eq(results[1], 0);
	ck_assert_int_eq(qbd_core_replica_info(c, 2, &ri), 0);
	ck_assert_uint_eq(ri.oldest_unanswered, 2 * MS);
	ck_assert_uint_eq(ri.last_reply, 1 * MS);        /* unchanged */
	ck_assert_int_eq(qbd_core_replica_info(c, 0, &ri), 0);
	ck_assert_uint_eq(ri.oldest_unanswered, 0);
	ck_assert_uint_eq(ri.last_reply, 3 * MS);

	/* A second write (another chunk) at 4 ms: the first stays oldest. */
	qbd_core_submit(c, QBD_CORE_WRITE, 0, CS, 512, buf, (void *)2, 4 * MS);
	w2 = find(QBD_CM_WRITE, 2, (unsigned)w1 + 1);
	ck_assert_int_ge(w2, 0);
	ck_assert_int_eq(qbd_core_replica_info(c, 2, &ri), 0);
	ck_assert_uint_eq(ri.oldest_unanswered, 2 * MS);
	ck_assert_uint_eq(ri.in_flight, 2);

	/* Replica 2 answers the first at 6 ms, then the second at 7 ms. */
	qbd_core_reply(c, 2, sent[w1].id, 0, sent[w1].new_version, 6 * MS);
	ck_assert_int_eq(qbd_core_replica_info(c, 2, &ri), 0);
	ck_assert_uint_eq(ri.last_reply, 6 * MS);
	ck_assert_uint_eq(ri.oldest_unanswered, 4 * MS);
	qbd_core_reply(c, 2, sent[w2].id, 0, sent[w2].new_version, 7 * MS);
	ck_assert_int_eq(qbd_core_replica_info(c, 2, &ri), 0);
	ck_assert_uint_eq(ri.last_reply, 7 * MS);
	ck_assert_uint_eq(ri.oldest_unanswered, 0);
	ck_assert_uint_eq(ri.in_flight, 0);
}
END_TEST

START_TEST(bad_input)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 4, .nchunks = 8,
				    .chunk_size = CS, .epoch = 1 };
	struct qbd_chunk_version far = { 8, 1 };

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), -EINVAL);
	cfg.write_quorum = 2;
	cfg.epoch = QBD_CORE_MAX_EPOCH + 1;
	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), -EINVAL);
	cfg.epoch = 1;
	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, &far, 1, 0), -EINVAL);
	ck_assert_int_eq(qbd_core_replica_open(c, 5, NULL, 0, 0), -EINVAL);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 1, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 8 * CS - 1, 2, buf, (void *)13, MS);
	ck_assert_int_eq(results[13], -EINVAL);
	qbd_core_submit(c, QBD_CORE_READ, 0, 0, 0, buf, (void *)14, MS);
	ck_assert_int_eq(results[14], -EINVAL);
	ck_assert_uint_eq(nsent, 0);
}
END_TEST

/* A flush submitted while another is in flight waits for it: otherwise
 * it could succeed on replicas lacking a write the first one answers
 * for, or even though the first one fails. */
START_TEST(flush_waits_for_the_flush_in_flight)
{
	uint64_t v;
	int a, b;

	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)1, MS);
	v = sent[0].new_version;
	reply(find(QBD_CM_WRITE, 0, 0), 0, v);
	reply(find(QBD_CM_WRITE, 1, 0), 0, v);
	reply(find(QBD_CM_WRITE, 2, 0), -EIO, 0);   /* r2 stale for chunk 0 */
	ck_assert_int_eq(results[1], 0);
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)2, MS);
	a = (int)nsent;
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)3, MS);
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)4, MS);
	ck_assert_uint_eq(nsent, (unsigned)a);       /* the later ones wait */
	/* r0 and r2 flushed, r1 failed: chunk 0 is durable on r0 only. */
	reply(find(QBD_CM_FLUSH, 0, 0), 0, 0);
	reply(find(QBD_CM_FLUSH, 2, 0), 0, 0);
	ck_assert_uint_eq(ncomplete, 1);
	reply(find(QBD_CM_FLUSH, 1, 0), -EIO, 0);
	ck_assert_uint_eq(ncomplete, 2);
	ck_assert_int_eq(results[2], -EIO);
	/* The waiting flushes go out together, owing chunk 0 again. */
	b = find(QBD_CM_FLUSH, 0, (unsigned)a);
	ck_assert_int_ge(b, a);
	ck_assert_int_lt(find(QBD_CM_FLUSH, 0, (unsigned)b + 1), 0);
	reply(b, 0, 0);
	reply(find(QBD_CM_FLUSH, 2, (unsigned)a), 0, 0);
	ck_assert_uint_eq(ncomplete, 2);             /* r2 lacks chunk 0 */
	reply(find(QBD_CM_FLUSH, 1, (unsigned)a), 0, 0);
	/* r1's failed flush made it stale for chunk 0: one copy flushed */
	ck_assert_uint_eq(ncomplete, 4);
	ck_assert_int_eq(results[3], -EIO);
	ck_assert_int_eq(results[4], -EIO);
}
END_TEST

/* Zeroing a chunk never written: a ZERO from version 0 to 0 (replicas
 * acknowledge it without allocating), the version stays 0, down
 * replicas are not marked stale; W replicas must still accept it. */
START_TEST(zero_of_a_never_written_chunk_keeps_version_0)
{
	open_core(3, 2, 1, 3);  /* r2 down */
	qbd_core_submit(c, QBD_CORE_ZERO, 0, CS, CS, NULL, (void *)1, MS);
	ck_assert_uint_eq(nsent, 2);
	ck_assert_uint_eq(sent[0].type, QBD_CM_WRITE);
	ck_assert_uint_eq(sent[0].flags & QBD_CORE_F_ZERO, QBD_CORE_F_ZERO);
	ck_assert_uint_eq(sent[0].expected_version, 0);
	ck_assert_uint_eq(sent[0].new_version, 0);
	ck_assert(!qbd_core_is_stale(c, 2, 1));
	reply(0, 0, 0);
	ck_assert_uint_eq(ncomplete, 0);
	reply(1, 0, 0);
	ck_assert_int_eq(results[1], 0);
	ck_assert_uint_eq(qbd_core_chunk_version(c, 1), 0);
	/* Fenced: a deposed writer gets no acknowledgement. */
	qbd_core_submit(c, QBD_CORE_ZERO, 0, 0, 100, NULL, (void *)2, MS);
	reply(2, -EPERM, 0);
	ck_assert_int_eq(results[2], -EPERM);
	/* A written chunk is zeroed at a new version. */
	nsent = 0;
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 2 * CS, 512, buf, (void *)3, MS);
	ck_assert_uint_eq(ncomplete, 3);  /* fenced: -EPERM at once */
}
END_TEST

START_TEST(block_status_asks_only_for_written_chunks)
{
	uint8_t bits[2] = { 0xff, 0xff }, *rb;
	uint64_t v;

	open_core(3, 2, 1, 7);
	/* Chunks are one block here (CS = 4096): chunk 1 is written. */
	qbd_core_submit(c, QBD_CORE_WRITE, 0, CS, 512, buf, (void *)1, MS);
	v = sent[0].new_version;
	for (unsigned r = 0; r < 3; r++)
		reply(find(QBD_CM_WRITE, r, 0), 0, v);
	ck_assert_int_eq(results[1], 0);
	nsent = 0;
	qbd_core_submit(c, QBD_CORE_BLOCK_STATUS, 0, 0, 3 * CS, bits, (void *)2, MS);
	ck_assert_uint_eq(nsent, 1);              /* chunks 0 and 2: no message */
	ck_assert_uint_eq(sent[0].type, QBD_CM_READ);
	ck_assert_uint_eq(sent[0].chunk, 1);
	ck_assert_uint_eq(sent[0].flags, QBD_CORE_F_BITMAP);
	ck_assert_ptr_null(qbd_core_reply_buf(c, sent[0].replica, sent[0].id, CS));
	rb = qbd_core_reply_buf(c, sent[0].replica, sent[0].id, 1);
	ck_assert_ptr_nonnull(rb);
	rb[0] = 1;
	reply(0, 0, v - 1);                        /* below committed: stale */
	ck_assert_uint_eq(ncomplete, 1);
	ck_assert_uint_eq(nsent, 2);               /* asked another replica */
	rb = qbd_core_reply_buf(c, sent[1].replica, sent[1].id, 1);
	rb[0] = 1;
	reply(1, 0, v);
	ck_assert_int_eq(results[2], 0);
	ck_assert_uint_eq(bits[0], 0xfa);          /* 010 in bits 0-2, rest untouched */
	ck_assert_uint_eq(bits[1], 0xff);
	/* Unaligned: -EINVAL. */
	qbd_core_submit(c, QBD_CORE_BLOCK_STATUS, 0, 512, CS, bits, (void *)3, MS);
	ck_assert_int_eq(results[3], -EINVAL);
}
END_TEST

/* Reply to every message sent from index `from` on (reads and writes at
 * version v, other messages 0); returns the first index not replied. */
static unsigned reply_all(unsigned from, uint64_t v)
{
	unsigned end = nsent;

	for (unsigned i = from; i < end; i++) {
		if (sent[i].type == QBD_CM_READ && (sent[i].flags & QBD_CORE_F_SPARSE))
			sparse_reply_buf(i);
		else if (sent[i].type == QBD_CM_READ)
			qbd_core_reply_buf(c, sent[i].replica, sent[i].id, sent[i].length);
		reply((int)i, 0, sent[i].type == QBD_CM_WRITE ? sent[i].new_version : v);
	}
	return end;
}

/* A replica that lists a chunk SUSPECT is stale for it, whatever its
 * version; the chunk's version moves on (block 0 rewritten unchanged) so
 * that the copy to it cannot be taken for a retry, then it is current. */
START_TEST(suspect_copy_is_copied_again_at_a_new_version)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = CS, .epoch = 2 };
	uint64_t v = (1ull << 40) | 5;
	struct qbd_chunk_version sus = { 1, v, QBD_CORE_CHUNK_SUSPECT }, ok = { 1, v, 0 };
	int rd, wr;
	unsigned i;

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, &sus, 1, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 1, &ok, 1, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 2, &ok, 1, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
	ck_assert(qbd_core_is_stale(c, 0, 1));
	ck_assert(qbd_core_is_flagged(c, 0, 1));
	/* The bump: read block 0 from a current replica, write it back. */
	rd = find(QBD_CM_READ, 1, 0) >= 0 ? find(QBD_CM_READ, 1, 0) : find(QBD_CM_READ, 2, 0);
	ck_assert_int_ge(rd, 0);
	ck_assert_uint_eq(sent[rd].length, 4096);
	i = reply_all(0, v);
	wr = find(QBD_CM_WRITE, 1, i - 1);
	ck_assert_int_ge(wr, 0);
	ck_assert_uint_eq(sent[wr].expected_version, v);
	ck_assert_uint_eq(sent[wr].new_version, (2ull << 40) | 1);
	ck_assert_int_lt(find(QBD_CM_WRITE, 0, 0), 0);     /* not to the suspect one */
	i = reply_all(i, v);
	ck_assert_uint_eq(qbd_core_chunk_version(c, 1), (2ull << 40) | 1);
	/* Then the copy: a whole-chunk read, a durable RESYNC to replica 0. */
	i = reply_all(i, (2ull << 40) | 1);
	wr = find(QBD_CM_WRITE, 0, 0);
	ck_assert_int_ge(wr, 0);
	ck_assert_uint_eq(sent[wr].flags,
			  QBD_CORE_F_RESYNC | QBD_CORE_F_FUA | QBD_CORE_F_SPARSE);
	ck_assert_uint_eq(sent[wr].new_version, (2ull << 40) | 1);
	reply_all(i, 0);
	ck_assert(!qbd_core_is_stale(c, 0, 1));
	ck_assert(!qbd_core_is_flagged(c, 0, 1));
	ck_assert_uint_eq(qbd_core_resync_backlog(c), 0);
}
END_TEST

/* Damage reported in a PING reply makes the copy stale; a bad report
 * changes nothing and is an error. */
START_TEST(ping_report_of_damage)
{
	struct qbd_chunk_version dmg = { 0, 0, QBD_CORE_CHUNK_DAMAGED };
	struct qbd_chunk_version bad[3] = { { 8, 1, QBD_CORE_CHUNK_DAMAGED },
					    { 2, 1, 0 }, { 2, 1, 0x4 } };
	struct qbd_core_replica_info ri;

	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)1, MS);
	reply_all(0, 0);
	ck_assert_int_eq(results[1], 0);
	dmg.version = qbd_core_chunk_version(c, 0);
	for (unsigned k = 0; k < 3; k++)
		ck_assert_int_eq(qbd_core_replica_flagged(c, 1, &bad[k], 1, 1, MS), -EINVAL);
	ck_assert_int_eq(qbd_core_replica_flagged(c, 1, &dmg, 1, 0, MS), -EINVAL); /* total < n */
	ck_assert(!qbd_core_is_stale(c, 1, 0));
	ck_assert_int_eq(qbd_core_replica_flagged(c, 1, &dmg, 1, 70, MS), 0);
	ck_assert(qbd_core_is_stale(c, 1, 0));
	ck_assert(qbd_core_is_flagged(c, 1, 0));
	ck_assert_int_eq(qbd_core_replica_info(c, 1, &ri), 0);
	ck_assert_uint_eq(ri.flagged, 1);
	ck_assert_uint_eq(ri.flagged_total, 70);
}
END_TEST

/* Every copy of the latest version flagged: with a replica not heard
 * from, wait (it may hold the only intact copy); once all answered,
 * restore one copy everywhere under a fresh version, and the next flush
 * reports that acknowledged writes may be lost. */
START_TEST(all_copies_flagged_wait_then_restore)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = CS, .epoch = 2 };
	uint64_t v = (1ull << 40) | 9, fresh = (2ull << 40) | 1;
	struct qbd_chunk_version sus = { 2, v, QBD_CORE_CHUNK_SUSPECT };
	unsigned i;
	int rd;

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, &sus, 1, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 1, &sus, 1, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
	/* A probe of the two up replicas; both flagged: no restore. */
	ck_assert_uint_eq(nsent, 2);
	i = reply_all(0, v);
	ck_assert_uint_eq(nsent, i);
	ck_assert_uint_eq(qbd_core_chunk_version(c, 2), v);
	/* Replica 2 comes back, flagged too: the next probe restores. */
	ck_assert_int_eq(qbd_core_replica_open(c, 2, &sus, 1, MS), 0);
	ck_assert_uint_eq(sent[i].type, QBD_CM_FLUSH); /* a reconnect is flushed first */
	qbd_core_tick(c, 2000 * MS);
	i = reply_all(i, v);
	ck_assert_uint_eq(qbd_core_chunk_version(c, 2), fresh);
	rd = find(QBD_CM_READ, 0, i);
	ck_assert_int_ge(rd, 0);                         /* from replica 0's copy */
	ck_assert_uint_eq(sent[rd].length, CS);
	i = reply_all(i, v);
	for (unsigned r = 0; r < 3; r++) {
		int wr = find(QBD_CM_WRITE, r, i);

		ck_assert_int_ge(wr, 0);
		ck_assert_uint_eq(sent[wr].new_version, fresh);
	}
	reply_all(i, 0);
	for (unsigned r = 0; r < 3; r++)
		ck_assert(!qbd_core_is_stale(c, r, 2) && !qbd_core_is_flagged(c, r, 2));
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)1, 3000 * MS);
	ck_assert_int_eq(results[1], -EIO);
	i = nsent;
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)2, 3000 * MS);
	reply_all(i, 0);
	ck_assert_int_eq(results[2], 0);
}
END_TEST

/* A probe trusts a copy by the flags its READ reply carries: a copy
 * reported DAMAGED whose bad block a later write covered (the replica
 * cleared the flag without a report) is current again, and the chunk is
 * not restored from another replica's SUSPECT copy. Without the flags
 * in the reply, the record of OPEN stands. */
START_TEST(probe_trusts_the_flags_of_its_read_reply)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = CS, .epoch = 2 };
	uint64_t v = (1ull << 40) | 9;
	struct qbd_chunk_version dmg = { 2, v, QBD_CORE_CHUNK_DAMAGED },
				 sus = { 2, v, QBD_CORE_CHUNK_SUSPECT },
				 old = { 2, v - 1, 0 };
	unsigned end;

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, &dmg, 1, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 1, &sus, 1, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 2, &old, 1, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
	/* No current replica up: a probe of all three. */
	ck_assert_uint_eq(nsent, 3);
	end = nsent;
	for (unsigned i = 0; i < end; i++) {
		unsigned r = sent[i].replica;

		ck_assert_uint_eq(sent[i].type, QBD_CM_READ);
		qbd_core_reply_buf(c, r, sent[i].id, sent[i].length);
		if (r == 0)      /* its engine cleared DAMAGED since OPEN */
			qbd_core_read_reply(c, r, sent[i].id, 0, v, 0, MS);
		else if (r == 1) /* still suspect */
			qbd_core_read_reply(c, r, sent[i].id, 0, v, QBD_CORE_CHUNK_SUSPECT, MS);
		else             /* flags unknown: the record stands */
			qbd_core_reply(c, r, sent[i].id, 0, v - 1, MS);
	}
	ck_assert(!qbd_core_is_flagged(c, 0, 2));
	ck_assert(!qbd_core_is_stale(c, 0, 2));
	ck_assert(qbd_core_is_flagged(c, 1, 2));
	ck_assert(qbd_core_is_stale(c, 2, 2));
	/* No restore: the version stands, an ordinary resync follows. */
	ck_assert_uint_eq(qbd_core_chunk_version(c, 2), v);
}
END_TEST

/* Every replica out of space: ENOSPC, and the write happened nowhere:
 * the version goes back, nobody is stale, the next write starts from
 * the old version. */
START_TEST(write_without_space_anywhere_is_undone)
{
	uint64_t v;

	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)1, MS);
	ck_assert_uint_eq(nsent, 3);
	v = sent[0].new_version;
	reply(find(QBD_CM_WRITE, 0, 0), -ENOSPC, 0);
	reply(find(QBD_CM_WRITE, 1, 0), -ENOSPC, 0);
	ck_assert_uint_eq(ncomplete, 0);          /* waits for every answer */
	reply(find(QBD_CM_WRITE, 2, 0), -ENOSPC, 0);
	ck_assert_uint_eq(ncomplete, 1);
	ck_assert_int_eq(results[1], -ENOSPC);
	ck_assert_uint_eq(qbd_core_chunk_version(c, 0), 0);
	for (unsigned r = 0; r < 3; r++)
		ck_assert(!qbd_core_is_stale(c, r, 0));
	/* Space again: the next write goes from version 0, to every one. */
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)2, MS);
	ck_assert_uint_eq(nsent, 6);
	ck_assert_uint_eq(sent[3].expected_version, 0);
	ck_assert_uint_eq(sent[3].new_version, v);
	for (unsigned r = 0; r < 3; r++)
		reply(find(QBD_CM_WRITE, r, 3), 0, v);
	ck_assert_int_eq(results[2], 0);
}
END_TEST

/* One replica applied it: ENOSPC to the writer (the cause), and the
 * replicas without space are stale, since they lack a version that
 * exists elsewhere. */
START_TEST(write_without_space_on_some_fails_and_marks_them)
{
	uint64_t v;

	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)1, MS);
	v = sent[0].new_version;
	reply(find(QBD_CM_WRITE, 0, 0), 0, v);
	reply(find(QBD_CM_WRITE, 1, 0), -ENOSPC, 0);
	reply(find(QBD_CM_WRITE, 2, 0), -ENOSPC, 0);
	ck_assert_int_eq(results[1], -ENOSPC);
	ck_assert_uint_eq(qbd_core_chunk_version(c, 0), v);
	ck_assert(!qbd_core_is_stale(c, 0, 0));
	ck_assert(qbd_core_is_stale(c, 1, 0));
	ck_assert(qbd_core_is_stale(c, 2, 0));
	/* W replicas with space: success, the one without is stale. */
	qbd_core_free(c);
	nsent = ncomplete = 0;
	open_core(3, 2, 1, 7);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)2, MS);
	v = sent[0].new_version;
	reply(find(QBD_CM_WRITE, 0, 0), -ENOSPC, 0);
	reply(find(QBD_CM_WRITE, 1, 0), 0, v);
	reply(find(QBD_CM_WRITE, 2, 0), 0, v);
	ck_assert_int_eq(results[2], 0);
	ck_assert(qbd_core_is_stale(c, 0, 0));
}
END_TEST

/* A learner counts toward nothing; the joint rule needs W of both sets;
 * leave waits for the change flush. */
START_TEST(membership_change_steps)
{
	struct qbd_chunk_version cur = { 0, 0, 0 };
	uint32_t voters, joint, learners;
	uint64_t v;
	int i;

	open_core(3, 2, 1, 7);
	/* Chunk 0 written on 0 and 1 (2 is stale for it). */
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)1, MS);
	v = sent[0].new_version;
	reply(find(QBD_CM_WRITE, 0, 0), 0, v);
	reply(find(QBD_CM_WRITE, 1, 0), 0, v);
	reply(find(QBD_CM_WRITE, 2, 0), -EIO, 0);
	ck_assert_int_eq(results[1], 0);
	ck_assert_int_eq(qbd_core_learner_add(c, 1, MS), -EINVAL); /* a voter */
	ck_assert_int_eq(qbd_core_learner_add(c, 3, MS), 0);
	ck_assert_int_eq(qbd_core_learner_add(c, 4, MS), -EBUSY);
	ck_assert(qbd_core_is_stale(c, 3, 0));
	ck_assert_int_eq(qbd_core_replica_open(c, 3, NULL, 0, MS), 0);
	/* Not current: no joint rule yet, nothing to leave. */
	ck_assert_int_eq(qbd_core_joint_begin(c, 2, 3, MS), -EAGAIN);
	ck_assert_int_eq(qbd_core_change_ready(c, MS), -EINVAL);
	ck_assert_int_eq(qbd_core_leave(c, MS), -EINVAL);
	/* The learner holds the chunk now (as a resync would leave it). */
	qbd_core_replica_down(c, 3, MS);
	cur.version = v;
	ck_assert_int_eq(qbd_core_replica_open(c, 3, &cur, 1, 2 * MS), 0);
	ck_assert(!qbd_core_is_stale(c, 3, 0));
	ck_assert_int_eq(qbd_core_joint_begin(c, 2, 3, 2 * MS), 0);
	qbd_core_members(c, &voters, &joint, &learners);
	ck_assert_uint_eq(voters, 7);
	ck_assert_uint_eq(joint, 0xb);
	ck_assert_uint_eq(learners, 0);
	/* A write acknowledged by 0 and 2 is W of S, not of S' = {0, 1, 3}. */
	nsent = 0;
	qbd_core_submit(c, QBD_CORE_WRITE, 0, CS, 512, buf, (void *)2, 3 * MS);
	v = sent[0].new_version;
	reply(find(QBD_CM_WRITE, 0, 0), 0, v);
	reply(find(QBD_CM_WRITE, 2, 0), 0, v);
	ck_assert_int_eq(results[2], 0x7f7f7f7f);
	reply(find(QBD_CM_WRITE, 3, 0), 0, v);
	ck_assert_int_eq(results[2], 0);
	reply(find(QBD_CM_WRITE, 1, 0), 0, v);
	/* Ready only after a flush to S' succeeds. */
	nsent = 0;
	ck_assert_int_eq(qbd_core_change_ready(c, 4 * MS), 0);
	ck_assert_int_eq(qbd_core_leave(c, 4 * MS), -EAGAIN);
	ck_assert_int_eq(find(QBD_CM_FLUSH, 2, 0), -1);  /* X is no target */
	for (unsigned r = 0; r < 4; r++)
		if ((i = find(QBD_CM_FLUSH, r, 0)) >= 0)
			reply(i, 0, 0);
	ck_assert_int_eq(qbd_core_change_ready(c, 5 * MS), 1);
	ck_assert_int_eq(qbd_core_leave(c, 5 * MS), 0);
	qbd_core_members(c, &voters, &joint, &learners);
	ck_assert_uint_eq(voters, 0xb);
	ck_assert_uint_eq(joint, 0);
	/* Slot 2 is gone: a write needs 2 of {0, 1, 3}. */
	nsent = 0;
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)3, 6 * MS);
	ck_assert_int_eq(find(QBD_CM_WRITE, 2, 0), -1);
	v = sent[0].new_version;
	reply(find(QBD_CM_WRITE, 0, 0), 0, v);
	reply(find(QBD_CM_WRITE, 3, 0), 0, v);
	ck_assert_int_eq(results[3], 0);
}
END_TEST

/* Attach under a joint configuration needs A promises in each set. */
START_TEST(joint_attach_needs_both_promise_quorums)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = CS, .epoch = 2, .voters = 7,
				    .joint = 0xb };

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 2, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), -EIO); /* 1 of S' */
	ck_assert_int_eq(qbd_core_replica_open(c, 3, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
	qbd_core_free(c);
	c = NULL;
	cfg.voters = 0x3; /* 2 voters for R = 3 */
	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), -EINVAL);
	cfg.voters = 7;
	cfg.joint = 0;
	cfg.learners = 1; /* a voter cannot be a learner too */
	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), -EINVAL);
}
END_TEST

/* A core in the joint phase of replacing slot 2 by slot 3: S = {0, 1, 2},
 * S' = {0, 1, 3}, W = 2, all four replicas up and holding nothing. */
static void open_joint(void)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = CS, .epoch = 2, .voters = 7,
				    .joint = 0xb };

	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	for (unsigned r = 0; r < 4; r++)
		ck_assert_int_eq(qbd_core_replica_open(c, r, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
}

/* Replies to the writes of chunk ch sent from message `from` on, by the
 * replicas in `set`. */
static void reply_writes(uint64_t ch, unsigned from, uint32_t set)
{
	for (unsigned i = from; i < nsent; i++)
		if (sent[i].type == QBD_CM_WRITE && sent[i].chunk == ch &&
		    (set & (1u << sent[i].replica)))
			reply((int)i, 0, sent[i].new_version);
}

/* Replies to the flushes sent from message `from` on, by the replicas in
 * `set`. */
static void reply_flushes(unsigned from, uint32_t set)
{
	for (unsigned i = from; i < nsent; i++)
		if (sent[i].type == QBD_CM_FLUSH && (set & (1u << sent[i].replica)))
			reply((int)i, 0, 0);
}

/* The joint rule counts in each set: W replicas of S' alone (or of S
 * alone) complete no write, no flush and no attach (docs/protocol.md
 * section 11). {1, 3} is W of S' but 1 of S; {1, 2} is W of S but 1 of
 * S'. */
START_TEST(joint_rule_needs_w_of_each_set)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = CS, .epoch = 2, .voters = 7,
				    .joint = 0xb };
	unsigned n0;

	open_joint();
	/* Write to chunk 0, acknowledged by 1 and 3: waits for S. */
	n0 = nsent;
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)1, MS);
	ck_assert_uint_eq(nsent, n0 + 4);
	reply_writes(0, n0, 0xa);
	ck_assert_int_eq(results[1], 0x7f7f7f7f);
	ck_assert_uint_eq(ncomplete, 0);
	reply_writes(0, n0, 0x1);                  /* 0: 2 of S, 2 of S' */
	ck_assert_int_eq(results[1], 0);
	reply_writes(0, n0, 0x4);
	/* Write to chunk 1, acknowledged by 1 and 2: waits for S'. */
	n0 = nsent;
	qbd_core_submit(c, QBD_CORE_WRITE, 0, CS, 512, buf, (void *)2, MS);
	reply_writes(1, n0, 0x6);
	ck_assert_int_eq(results[2], 0x7f7f7f7f);
	reply_writes(1, n0, 0x8);                  /* 3: 2 of S' */
	ck_assert_int_eq(results[2], 0);
	reply_writes(1, n0, 0x1);
	/* And the other way round: the second ack is 2, then 0. */
	n0 = nsent;
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 2 * CS, 512, buf, (void *)3, MS);
	reply_writes(2, n0, 0xa);
	ck_assert_int_eq(results[3], 0x7f7f7f7f);
	reply_writes(2, n0, 0x4);
	ck_assert_int_eq(results[3], 0);
	reply_writes(2, n0, 0x1);
	n0 = nsent;
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 3 * CS, 512, buf, (void *)4, MS);
	reply_writes(3, n0, 0x6);
	ck_assert_int_eq(results[4], 0x7f7f7f7f);
	reply_writes(3, n0, 0x1);
	ck_assert_int_eq(results[4], 0);
	reply_writes(3, n0, 0x8);
	ck_assert_uint_eq(ncomplete, 4);

	/* A flush (chunks 0..3 current on all four) flushed by 1 and 3 waits
	 * for S; 0 completes it. */
	n0 = nsent;
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)5, MS);
	ck_assert_uint_eq(nsent, n0 + 4);
	reply_flushes(n0, 0xa);
	ck_assert_int_eq(results[5], 0x7f7f7f7f);
	reply_flushes(n0, 0x1);
	ck_assert_int_eq(results[5], 0);
	reply_flushes(n0, 0x4);
	/* A flush (another write first) flushed by 1 and 2 waits for S'. */
	n0 = nsent;
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 4 * CS, 512, buf, (void *)6, MS);
	reply_writes(4, n0, 0xf);
	ck_assert_int_eq(results[6], 0);
	n0 = nsent;
	qbd_core_submit(c, QBD_CORE_FLUSH, 0, 0, 0, NULL, (void *)7, MS);
	reply_flushes(n0, 0x6);
	ck_assert_int_eq(results[7], 0x7f7f7f7f);
	reply_flushes(n0, 0x8);
	ck_assert_int_eq(results[7], 0);
	reply_flushes(n0, 0x1);
	ck_assert_uint_eq(ncomplete, 7);
	qbd_core_free(c);
	c = NULL;

	/* Attach: A = max(W, R - W + 1) = 2 promises in each set. {1, 3}
	 * is A of S' only, {1, 2} A of S only. */
	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 1, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 3, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), -EIO);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
	qbd_core_free(c);
	c = NULL;
	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 1, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 2, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), -EIO);
	ck_assert_int_eq(qbd_core_replica_open(c, 3, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
}
END_TEST

/* ---- resync: what it copies, from where, how fast ---- */

#define RCS (16u * 4096u)   /* a chunk of 16 blocks */

/* A core whose replicas 0 and 1 hold chunks 0..7 at version v and whose
 * replica 2 holds nothing: it is stale for all eight. */
static uint64_t open_rebuild(bool pull, uint64_t rate, unsigned parallel)
{
	struct qbd_core_cfg cfg = { .replicas = 3, .write_quorum = 2, .nchunks = 8,
				    .chunk_size = RCS, .epoch = 2, .pull = pull,
				    .resync_rate = rate, .resync_parallel = parallel };
	uint64_t v = (1ull << 40) | 3;
	struct qbd_chunk_version l[8];

	for (unsigned i = 0; i < 8; i++)
		l[i] = (struct qbd_chunk_version){ i, v, 0 };
	ck_assert_int_eq(qbd_core_new(&cfg, &ops, NULL, &c), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 0, l, 8, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 1, l, 8, 0), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 2, NULL, 0, 0), 0);
	ck_assert_int_eq(qbd_core_open_done(c, 0), 0);
	for (unsigned i = 0; i < 8; i++)
		ck_assert(qbd_core_is_stale(c, 2, i));
	return v;
}

/* Through the writer: the source's sparse form (one written block, 2
 * bytes of bitmap) goes to the target as it came, a SPARSE RESYNC of
 * 4098 bytes, not a chunk of 64 KiB; the counters say so. */
START_TEST(resync_copies_only_written_blocks)
{
	uint64_t v = open_rebuild(false, 0, 1);
	struct qbd_core_replica_info ri;
	uint8_t *b;
	int rd, wr;

	qbd_core_tick(c, MS);
	rd = find(QBD_CM_READ, 0, 0) >= 0 ? find(QBD_CM_READ, 0, 0) : find(QBD_CM_READ, 1, 0);
	ck_assert_int_ge(rd, 0);
	ck_assert_uint_eq(sent[rd].flags, QBD_CORE_F_SPARSE);
	ck_assert_uint_eq(sent[rd].length, RCS);
	/* Lengths no sparse form of the chunk has are refused. */
	ck_assert_ptr_null(qbd_core_reply_buf(c, sent[rd].replica, sent[rd].id, 1));
	ck_assert_ptr_null(qbd_core_reply_buf(c, sent[rd].replica, sent[rd].id, 2 + 100));
	ck_assert_ptr_null(qbd_core_reply_buf(c, sent[rd].replica, sent[rd].id, 2 + RCS + 4096));
	b = qbd_core_reply_buf(c, sent[rd].replica, sent[rd].id, 2 + 4096);
	ck_assert_ptr_nonnull(b);
	b[0] = 0;
	b[1] = 0x80;            /* block 15 written */
	memset(b + 2, 0x5a, 4096);
	reply(rd, 0, v);
	wr = find(QBD_CM_WRITE, 2, 0);
	ck_assert_int_ge(wr, 0);
	ck_assert_uint_eq(sent[wr].flags,
			  QBD_CORE_F_RESYNC | QBD_CORE_F_FUA | QBD_CORE_F_SPARSE);
	ck_assert_uint_eq(sent[wr].length, RCS);
	ck_assert_uint_eq(sent[wr].data_len, 2 + 4096);
	ck_assert_uint_eq(((const uint8_t *)sent[wr].data)[1], 0x80);
	ck_assert_uint_eq(((const uint8_t *)sent[wr].data)[2 + 4095], 0x5a);
	reply(wr, 0, v);
	ck_assert(!qbd_core_is_stale(c, 2, sent[wr].chunk));
	ck_assert_int_eq(qbd_core_replica_info(c, 2, &ri), 0);
	ck_assert_uint_eq(ri.resync_bytes, 2 + 4096);
	ck_assert_uint_eq(ri.resync_done, 1);
}
END_TEST

/* A reply that is not the bitmap plus the blocks it marks (a bit for a
 * block that did not come) is no copy: another source is read. */
START_TEST(resync_refuses_a_malformed_sparse_form)
{
	uint64_t v = open_rebuild(false, 0, 1);
	unsigned from;
	uint8_t *b;
	int rd, rd2;

	qbd_core_tick(c, MS);
	rd = find(QBD_CM_READ, 0, 0) >= 0 ? find(QBD_CM_READ, 0, 0) : find(QBD_CM_READ, 1, 0);
	b = qbd_core_reply_buf(c, sent[rd].replica, sent[rd].id, 2 + 4096);
	b[0] = 3;               /* two blocks marked, one sent */
	b[1] = 0;
	from = nsent;
	reply(rd, 0, v);
	ck_assert_int_lt(find(QBD_CM_WRITE, 2, 0), 0);
	rd2 = find(QBD_CM_READ, sent[rd].replica ^ 1u, from);
	ck_assert_int_ge(rd2, 0);
	ck_assert_uint_eq(sent[rd2].chunk, sent[rd].chunk);
}
END_TEST

/* Pulls of a rebuild read from both current replicas in turn, not all
 * from one; the bytes each target reports are counted. */
START_TEST(resync_sources_spread_over_current_replicas)
{
	uint64_t v = open_rebuild(true, 0, 8);
	struct qbd_core_replica_info ri;
	unsigned from[3] = { 0 }, pulls = 0;

	qbd_core_tick(c, MS);
	for (unsigned i = 0; i < nsent; i++) {
		if (sent[i].type != QBD_CM_PULL)
			continue;
		ck_assert_uint_eq(sent[i].replica, 2);
		ck_assert_uint_lt(sent[i].source, 2);
		from[sent[i].source]++;
		pulls++;
	}
	ck_assert_uint_eq(pulls, 8);
	ck_assert_uint_eq(from[0], 4);
	ck_assert_uint_eq(from[1], 4);
	for (unsigned i = 0, end = nsent; i < end; i++)
		if (sent[i].type == QBD_CM_PULL) {
			qbd_core_pull_copied(c, 2, sent[i].id, 2 + 4096, MS);
			reply((int)i, 0, v);
		}
	ck_assert_int_eq(qbd_core_replica_info(c, 2, &ri), 0);
	ck_assert_uint_eq(ri.pulled, 8);
	ck_assert_uint_eq(ri.resync_bytes, 8 * (2 + 4096));
	ck_assert_uint_eq(qbd_core_resync_backlog(c), 0);
}
END_TEST

/* A rebuild goes at the pace of its copies: each pull that lands starts
 * the next at once, with no tick between (the writer ticks every 100 ms:
 * a tick-paced rebuild copies parallel chunks per tick, 40 MiB/s with 1
 * MiB chunks and four at a time, whatever the disks can do). */
START_TEST(resync_next_copy_starts_when_one_lands)
{
	uint64_t v = open_rebuild(true, 0, 2);
	unsigned pulls = 0, answered = 0;

	qbd_core_tick(c, MS);
	for (unsigned i = 0; i < nsent; i++) /* nsent grows as replies start pulls */
		if (sent[i].type == QBD_CM_PULL) {
			unsigned out = 0;

			for (unsigned k = 0; k < nsent; k++)
				out += sent[k].type == QBD_CM_PULL;
			ck_assert_uint_le(out - answered, 2); /* two in flight at most */
			pulls++;
			qbd_core_pull_copied(c, 2, sent[i].id, 2 + 4096, 2 * MS);
			reply((int)i, 0, v);
			answered++;
		}
	ck_assert_uint_eq(pulls, 8);
	ck_assert_uint_eq(qbd_core_resync_backlog(c), 0);
	for (unsigned ch = 0; ch < 8; ch++)
		ck_assert(!qbd_core_is_stale(c, 2, ch));
}
END_TEST

/* A failed copy is not retried at once: the replica backs off, and the
 * tick, not the failing reply, starts the next try. */
START_TEST(resync_failed_copy_waits_for_the_tick)
{
	open_rebuild(true, 0, 1);
	unsigned before;
	int p;

	qbd_core_tick(c, MS);
	p = find(QBD_CM_PULL, 2, 0);
	ck_assert_int_ge(p, 0);
	before = nsent;
	reply(p, -EIO, 0);      /* then the writer reads it from each source */
	for (unsigned i = before; i < nsent; i++) {
		ck_assert_uint_ne(sent[i].type, QBD_CM_PULL);
		if (sent[i].type == QBD_CM_READ)
			reply((int)i, -EIO, 0);
	}
	ck_assert_uint_ge(nsent, before + 2); /* both sources were read */
	ck_assert_uint_eq(qbd_core_resync_backlog(c), 8);
	qbd_core_tick(c, 2000 * MS); /* the backoff is over */
	ck_assert_int_ge(find(QBD_CM_PULL, 2, before), 0);
}
END_TEST

/* The rate changes while attached: at 1 byte/s nothing starts; set to
 * unlimited, the next tick starts the parallel copies. */
START_TEST(resync_rate_changes_at_run_time)
{
	unsigned pulls = 0;

	open_rebuild(true, 1, 4);
	qbd_core_tick(c, MS);
	qbd_core_tick(c, 500 * MS);
	ck_assert_int_lt(find(QBD_CM_PULL, 2, 0), 0);
	ck_assert_uint_eq(qbd_core_resync_rate(c), 1);
	qbd_core_set_resync_rate(c, 0, 501 * MS);
	ck_assert_uint_eq(qbd_core_resync_rate(c), 0);
	qbd_core_tick(c, 600 * MS);
	for (unsigned i = 0; i < nsent; i++)
		pulls += sent[i].type == QBD_CM_PULL;
	ck_assert_uint_eq(pulls, 4);
}
END_TEST

START_TEST(grow_adds_chunks_current_everywhere)
{
	struct qbd_chunk_version cv;
	unsigned n0;
	uint64_t v;
	int w;

	open_core(3, 2, 1, 7);
	/* Replica 1 misses a write of chunk 0: stale for it. */
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 0, 512, buf, (void *)1, MS);
	v = sent[0].new_version;
	reply(find(QBD_CM_WRITE, 0, 0), 0, v);
	reply(find(QBD_CM_WRITE, 1, 0), -EIO, 0);
	reply(find(QBD_CM_WRITE, 2, 0), 0, v);
	ck_assert_int_eq(results[1], 0);
	ck_assert(qbd_core_is_stale(c, 1, 0));
	/* Beyond the end: refused, until the volume grows. */
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 8 * CS, 512, buf, (void *)2, MS);
	ck_assert_int_eq(results[2], -EINVAL);
	ck_assert_int_eq(qbd_core_grow(c, 4), -EINVAL);
	ck_assert_int_eq(qbd_core_grow(c, 8), 0);
	ck_assert_int_eq(qbd_core_grow(c, 200), 0);
	/* What was known stays known; the new chunks are nowhere stale. */
	ck_assert(qbd_core_is_stale(c, 1, 0));
	ck_assert_uint_eq(qbd_core_chunk_version(c, 0), v);
	for (unsigned r = 0; r < 3; r++)
		for (uint64_t ch = 8; ch < 200; ch++) {
			ck_assert(!qbd_core_is_stale(c, r, ch));
			ck_assert(!qbd_core_is_flagged(c, r, ch));
			ck_assert_uint_eq(qbd_core_chunk_version(c, ch), 0);
		}
	/* A write there goes to every replica, replica 1 included. */
	n0 = nsent;
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 150 * CS, 512, buf, (void *)3, MS);
	ck_assert_uint_eq(nsent, n0 + 3);
	for (unsigned r = 0; r < 3; r++) {
		w = find(QBD_CM_WRITE, r, n0);
		ck_assert_int_ge(w, 0);
		ck_assert_uint_eq(sent[w].chunk, 150);
		ck_assert_uint_eq(sent[w].expected_version, 0);
		reply(w, 0, sent[w].new_version);
	}
	ck_assert_int_eq(results[3], 0);
	ck_assert_uint_ne(qbd_core_chunk_version(c, 150), 0);
	/* A replica that comes back may list a new chunk. */
	qbd_core_replica_down(c, 2, MS);
	cv = (struct qbd_chunk_version){ .chunk = 150,
					 .version = qbd_core_chunk_version(c, 150) };
	ck_assert_int_eq(qbd_core_replica_open(c, 2, &cv, 1, MS), 0);
	ck_assert(!qbd_core_is_stale(c, 2, 150));
	ck_assert(qbd_core_is_stale(c, 2, 0));
	/* The last chunk of the new size is in range, the next one not. */
	qbd_core_submit(c, QBD_CORE_ZERO, 0, 199 * CS, CS, NULL, (void *)4, MS);
	qbd_core_submit(c, QBD_CORE_ZERO, 0, 200 * CS, CS, NULL, (void *)5, MS);
	ck_assert_int_eq(results[5], -EINVAL);
}
END_TEST

/* Growth in the middle of a membership change: the learner's bitmaps
 * and the change flush's snapshots grow with the rest (a sanitizer build
 * sees any that did not). */
START_TEST(grow_during_a_membership_change)
{
	unsigned n0;
	uint64_t v;
	int i, ready;

	open_core(3, 2, 1, 7);
	ck_assert_int_eq(qbd_core_learner_add(c, 3, MS), 0);
	ck_assert_int_eq(qbd_core_replica_open(c, 3, NULL, 0, MS), 0);
	ck_assert_int_eq(qbd_core_grow(c, 64), 0);
	ck_assert(!qbd_core_is_stale(c, 3, 50));
	ck_assert_int_eq(qbd_core_joint_begin(c, 2, 3, MS), 0);
	nsent = 0;
	ck_assert_int_eq(qbd_core_change_ready(c, 2 * MS), 0); /* the change flush goes out */
	n0 = nsent;
	ck_assert_uint_gt(n0, 0);
	ck_assert_int_eq(qbd_core_grow(c, 200), 0);
	qbd_core_submit(c, QBD_CORE_WRITE, 0, 150 * CS, 512, buf, (void *)1, 3 * MS);
	ck_assert_int_ge(find(QBD_CM_WRITE, 3, n0), 0); /* the learner gets it too */
	v = sent[find(QBD_CM_WRITE, 0, n0)].new_version;
	for (unsigned r = 0; r < 4; r++)
		if ((i = find(QBD_CM_WRITE, r, n0)) >= 0)
			reply(i, 0, v);
	ck_assert_int_eq(results[1], 0);
	for (unsigned r = 0; r < 4; r++)
		if ((i = find(QBD_CM_FLUSH, r, 0)) >= 0 && i < (int)n0)
			reply(i, 0, 0);
	ready = qbd_core_change_ready(c, 4 * MS);
	ck_assert_int_ge(ready, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("core");
	TCase *t = tcase_create("quorum");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, write_needs_w_and_marks_the_rest_stale);
	tcase_add_test(t, write_fails_below_quorum);
	tcase_add_test(t, attach_needs_a_promise_quorum);
	tcase_add_test(t, eperm_fences_for_good);
	tcase_add_test(t, recovery_before_read);
	tcase_add_test(t, read_waits_for_commit);
	tcase_add_test(t, flush_needs_w_durable_copies);
	tcase_add_test(t, timeout_drops_replica);
	tcase_add_test(t, replica_info_shows_a_silent_replica);
	tcase_add_test(t, bad_input);
	tcase_add_test(t, flush_waits_for_the_flush_in_flight);
	tcase_add_test(t, zero_of_a_never_written_chunk_keeps_version_0);
	tcase_add_test(t, block_status_asks_only_for_written_chunks);
	tcase_add_test(t, suspect_copy_is_copied_again_at_a_new_version);
	tcase_add_test(t, ping_report_of_damage);
	tcase_add_test(t, all_copies_flagged_wait_then_restore);
	tcase_add_test(t, probe_trusts_the_flags_of_its_read_reply);
	tcase_add_test(t, write_without_space_anywhere_is_undone);
	tcase_add_test(t, write_without_space_on_some_fails_and_marks_them);
	tcase_add_test(t, membership_change_steps);
	tcase_add_test(t, joint_attach_needs_both_promise_quorums);
	tcase_add_test(t, joint_rule_needs_w_of_each_set);
	tcase_add_test(t, grow_adds_chunks_current_everywhere);
	tcase_add_test(t, grow_during_a_membership_change);
	suite_add_tcase(s, t);
	t = tcase_create("resync");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, resync_copies_only_written_blocks);
	tcase_add_test(t, resync_refuses_a_malformed_sparse_form);
	tcase_add_test(t, resync_sources_spread_over_current_replicas);
	tcase_add_test(t, resync_rate_changes_at_run_time);
	tcase_add_test(t, resync_next_copy_starts_when_one_lands);
	tcase_add_test(t, resync_failed_copy_waits_for_the_tick);
	suite_add_tcase(s, t);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
