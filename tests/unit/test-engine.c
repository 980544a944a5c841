/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the engine, on a store file in a temporary directory. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/util.h"
#include "engine/engine.h"
#include "engine/internal.h"

#define VOL 0x1234ull
#define OTHER_VOL 0x4321ull
#define CS (1u << 20)

static char dir[64], path[96];
static struct qbd_engine *e;

/*
 * Callbacks counted: the engine calls a request's callback exactly once
 * (engine.h), and every test that submits requests checks it. submit()
 * gives each request a counter (its user pointer) and counted_cb, which
 * fails the test on a second call; wait_done() fails it when a callback
 * has not run within a bound; the teardown, once nothing is in flight,
 * fails it when any request's callback did not run exactly once.
 */
#define CB_MAX 4096
#define CB_WAIT_NS (30ull * 1000000000ull)

struct cb_count {
	int op;
	int calls;
};

static struct cb_count cb_counts[CB_MAX];
static unsigned cb_n;

static void counted_cb(struct qbd_engine_req *r)
{
	struct cb_count *c = r->user;

	c->calls++;
	ck_assert_msg(c->calls == 1, "request %td (op %d): callback ran %d times",
		      c - cb_counts, c->op, c->calls);
}

/* Submit r with a counter for its callback; returns the counter. */
static struct cb_count *submit(struct qbd_engine_req *r)
{
	struct cb_count *c;

	ck_assert_uint_lt(cb_n, CB_MAX);
	c = &cb_counts[cb_n++];
	*c = (struct cb_count){ .op = (int)r->op };
	r->cb = counted_cb;
	r->user = c;
	qbd_engine_submit(e, r);
	return c;
}

/* Poll the engine until the callbacks of the n requests counted from c
 * on have run; fail if one has not within CB_WAIT_NS. */
static void wait_done(const struct cb_count *c, unsigned n)
{
	uint64_t deadline = qbd_now_ns() + CB_WAIT_NS;
	unsigned i = 0;

	for (;;) {
		struct pollfd p = { .fd = qbd_engine_event_fd(e), .events = POLLIN };

		while (i < n && c[i].calls)
			i++;
		if (i == n)
			return;
		ck_assert_msg(qbd_now_ns() < deadline, "request %td (op %d): callback never ran",
			      &c[i] - cb_counts, c[i].op);
		poll(&p, 1, 100);
		qbd_engine_poll(e);
	}
}

/* Every request submitted in the test: its callback ran exactly once.
 * Polls first while the engine is busy (a missing callback shows as a
 * request still in flight) and once more after (a late second call). */
static void check_callbacks(void)
{
	uint64_t deadline = qbd_now_ns() + CB_WAIT_NS;

	if (e) { /* NULL when a test's last open failed on purpose */
		struct pollfd p = { .fd = qbd_engine_event_fd(e), .events = POLLIN };

		while (qbd_engine_busy(e) && qbd_now_ns() < deadline) {
			poll(&p, 1, 100);
			qbd_engine_poll(e);
		}
		if (poll(&p, 1, 10) == 1)
			qbd_engine_poll(e);
		ck_assert_msg(qbd_engine_busy(e) == 0, "%u requests still in flight at the end",
			      qbd_engine_busy(e));
	}
	for (unsigned i = 0; i < cb_n; i++)
		ck_assert_msg(cb_counts[i].calls == 1, "request %u (op %d): callback ran %d times",
			      i, cb_counts[i].op, cb_counts[i].calls);
}

static void run(struct qbd_engine_req *r)
{
	wait_done(submit(r), 1);
}

static int eng_write(uint64_t chunk, uint32_t off, const void *buf, uint32_t len,
		     uint64_t expected, uint64_t nv, uint32_t flags)
{
	struct qbd_engine_req r = { .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = chunk,
				    .offset = off, .length = len, .buf = (void *)buf,
				    .expected_version = expected, .new_version = nv,
				    .flags = flags };
	run(&r);
	return r.res;
}

static int eng_read(uint64_t chunk, uint32_t off, void *buf, uint32_t len, uint64_t *ver)
{
	struct qbd_engine_req r = { .op = QBD_ENGINE_READ, .volume = VOL, .chunk = chunk,
				    .offset = off, .length = len, .buf = buf };
	run(&r);
	if (ver)
		*ver = r.version;
	return r.res;
}

/* FLUSH: metadata blocks are written by the group commit, so the tests
 * that look at the disk around the engine flush first. */
static int eng_flush(void)
{
	struct qbd_engine_req r = { .op = QBD_ENGINE_FLUSH };

	run(&r);
	return r.res;
}

static void open_store(uint64_t size)
{
	struct qbd_engine_opts o = { .path = path, .create_size = size };
	ck_assert_int_eq(qbd_engine_open(&o, &e), 0);
}

static void setup(void)
{
	cb_n = 0;
	snprintf(dir, sizeof dir, "/tmp/qbd-test-engine.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/store", dir);
	open_store(64ull << 20);
}

static void teardown(void)
{
	check_callbacks();
	qbd_engine_close(e);
	e = NULL;
	unlink(path);
	rmdir(dir);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(((i + 1) * 2654435761u) >> 17) ^ (uint8_t)seed;
}

START_TEST(roundtrip_aligned_and_odd)
{
	static uint8_t w[8192], r[8192], z[8192];
	uint64_t v;

	fill(w, sizeof w, 1);
	ck_assert_int_eq(eng_write(0, 0, w, 8192, 0, 1, 0), 8192);
	ck_assert_int_eq(eng_read(0, 0, r, 8192, &v), 8192);
	ck_assert_mem_eq(r, w, 8192);
	ck_assert_uint_eq(v, 1);
	fill(w, 5000, 7);
	ck_assert_int_eq(eng_write(3, 1000, w, 5000, 0, 1, 0), 5000);
	ck_assert_int_eq(eng_read(3, 1000, r, 5000, NULL), 5000);
	ck_assert_mem_eq(r, w, 5000);
	/* around it: zeros */
	ck_assert_int_eq(eng_read(3, 0, r, 1000, NULL), 1000);
	ck_assert_mem_eq(r, z, 1000);
	ck_assert_int_eq(eng_read(3, 6000, r, 2192, NULL), 2192);
	ck_assert_mem_eq(r, z, 2192);
	/* never-written chunk reads zeros at version 0 */
	memset(r, 1, sizeof r);
	ck_assert_int_eq(eng_read(9, 4096, r, 4096, &v), 4096);
	ck_assert_mem_eq(r, z, 4096);
	ck_assert_uint_eq(v, 0);
}
END_TEST

START_TEST(versions_checked)
{
	uint8_t b[4096] = { 1 };

	ck_assert_int_eq(eng_write(1, 0, b, 4096, 0, 1, 0), 4096);
	ck_assert_int_eq(eng_write(1, 0, b, 4096, 0, 1, 0), 4096);      /* idempotent retry */
	ck_assert_int_eq(eng_write(1, 0, b, 4096, 5, 6, 0), -ESTALE);   /* wrong expected */
	ck_assert_int_eq(eng_write(1, 0, b, 4096, 1, 2, 0), 4096);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 1), 2);
	ck_assert_int_eq(eng_write(1, 0, b, 4096, 1, 1, QBD_ENGINE_F_REPAIR), -ESTALE);
	ck_assert_int_eq(eng_write(1, 0, b, 4096, 2, 2, QBD_ENGINE_F_REPAIR), 4096);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 1), 2);
	ck_assert_int_eq(eng_write(1, 0, b, 4096, 0, 1, 0), -ESTALE);   /* old retry */
}
END_TEST

START_TEST(survives_reopen)
{
	uint8_t w[4096], r[4096];
	uint64_t node = qbd_engine_node_id(e);
	struct qbd_engine_req p = { .op = QBD_ENGINE_PROMISE, .volume = VOL, .epoch = 7 };

	fill(w, sizeof w, 3);
	ck_assert_int_eq(eng_write(2, 4096, w, 4096, 0, 1, 0), 4096);
	ck_assert_int_eq(eng_write(2, 4096, w, 100, 1, 2, 0), 100);
	run(&p);
	ck_assert_int_eq(p.res, 0);
	ck_assert_int_eq(qbd_engine_set_cluster_id(e, 99), 0);
	qbd_engine_close(e);
	open_store(0);
	ck_assert_uint_eq(qbd_engine_node_id(e), node);
	ck_assert_uint_eq(qbd_engine_cluster_id(e), 99);
	ck_assert_int_eq(qbd_engine_set_cluster_id(e, 98), -EEXIST);
	ck_assert_uint_eq(qbd_engine_promised(e, VOL), 7);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 2), 2);
	ck_assert_int_eq(eng_read(2, 4096, r, 4096, NULL), 4096);
	ck_assert_mem_eq(r, w, 4096);
}
END_TEST

START_TEST(corruption_detected)
{
	uint8_t w[8192], r[4096];
	int fd;
	char junk[] = "garbage";

	fill(w, sizeof w, 5);
	ck_assert_int_eq(eng_write(0, 0, w, 8192, 0, 1, 0), 8192);
	qbd_engine_close(e);
	/* Flip bytes of block 1 of slot 0 in the data area: find it by
	 * content, as the test of a real disk would. */
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	static uint8_t buf[1 << 20];
	off_t found = -1;
	for (off_t off = 0; found < 0 && pread(fd, buf, sizeof buf, off) > 0; off += sizeof buf)
		for (size_t i = 0; i + 4096 <= sizeof buf; i += 4096)
			if (memcmp(buf + i, w + 4096, 4096) == 0) {
				found = off + (off_t)i;
				break;
			}
	ck_assert_int_ge(found, 0);
	ck_assert_int_eq(pwrite(fd, junk, sizeof junk, found + 10), (ssize_t)sizeof junk);
	close(fd);
	open_store(0);
	ck_assert_int_eq(eng_read(0, 4096, r, 4096, NULL), -EBADMSG);
	ck_assert_int_eq(eng_read(0, 0, r, 4096, NULL), 4096);     /* block 0 fine */
	ck_assert_mem_eq(r, w, 4096);
	/* a partial write over the bad block fails instead of spreading it */
	ck_assert_int_eq(eng_write(0, 4100, w, 10, 1, 2, 0), -EBADMSG);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 0), 1);  /* not applied */
	/* a full-block rewrite heals it */
	ck_assert_int_eq(eng_write(0, 4096, w + 4096, 4096, 1, 3, 0), 4096);
	ck_assert_int_eq(eng_read(0, 4096, r, 4096, NULL), 4096);
	ck_assert_mem_eq(r, w + 4096, 4096);
}
END_TEST

START_TEST(zero_and_delete)
{
	uint8_t w[16384], r[16384], z[16384] = { 0 };
	struct qbd_engine_stats st;
	struct qbd_engine_req zr = { .op = QBD_ENGINE_ZERO, .volume = VOL, .chunk = 4,
				     .offset = 100, .length = 12000,
				     .expected_version = 1, .new_version = 2 };
	struct qbd_engine_req d = { .op = QBD_ENGINE_DELETE_VOLUME, .volume = VOL };

	fill(w, sizeof w, 9);
	ck_assert_int_eq(eng_write(4, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	run(&zr);
	ck_assert_int_eq(zr.res, 12000);
	ck_assert_int_eq(eng_read(4, 0, r, sizeof r, NULL), (int)sizeof r);
	ck_assert_mem_eq(r, w, 100);
	ck_assert_mem_eq(r + 100, z, 12000);
	ck_assert_mem_eq(r + 12100, w + 12100, sizeof r - 12100);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.used, CS);
	run(&d);
	ck_assert_int_eq(d.res, 0);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.used, 0);
	ck_assert_int_eq(eng_read(4, 0, r, sizeof r, NULL), (int)sizeof r);
	ck_assert_mem_eq(r, z, sizeof r);
}
END_TEST

START_TEST(full_store_enospc)
{
	uint8_t b[512] = { 1 };
	struct qbd_engine_stats st;
	uint64_t n;
	int r = 0;

	/* a tiny store: 8 MiB holds a handful of slots */
	qbd_engine_close(e);
	unlink(path);
	open_store(8ull << 20);
	qbd_engine_stats(e, &st);
	n = st.capacity / st.chunk_size;
	ck_assert_uint_ge(n, 2);
	ck_assert_uint_le(n, 7);
	for (uint64_t c = 0; c < n; c++)
		ck_assert_int_eq(eng_write(100 + c, 0, b, 512, 0, 1, 0), 512);
	r = eng_write(100 + n, 0, b, 512, 0, 1, 0);
	ck_assert_int_eq(r, -ENOSPC);
	/* reads still work */
	uint8_t rb[512];
	ck_assert_int_eq(eng_read(100, 0, rb, 512, NULL), 512);
	ck_assert_mem_eq(rb, b, 512);
}
END_TEST

START_TEST(pipelined_writes_in_order)
{
	static struct qbd_engine_req rs[20];
	static uint8_t bufs[20][4096];
	uint8_t r[4096];

	struct cb_count *c = NULL;

	for (int i = 0; i < 20; i++) {
		memset(bufs[i], i + 1, sizeof bufs[i]);
		rs[i] = (struct qbd_engine_req){ .op = QBD_ENGINE_WRITE, .volume = VOL,
			.chunk = 6, .offset = 0, .length = 4096, .buf = bufs[i],
			.expected_version = (uint64_t)i, .new_version = (uint64_t)i + 1 };
		if (i == 0)
			c = submit(&rs[i]);
		else
			submit(&rs[i]);
	}
	wait_done(c, 20);
	for (int i = 0; i < 20; i++)
		ck_assert_int_eq(rs[i].res, 4096);
	ck_assert_int_eq(eng_read(6, 0, r, 4096, NULL), 4096);
	ck_assert_mem_eq(r, bufs[19], 4096);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 6), 20);
}
END_TEST

START_TEST(invalid_requests)
{
	uint8_t b[16] = { 0 };

	ck_assert_int_eq(eng_write(0, CS - 8, b, 16, 0, 1, 0), -EINVAL);
	ck_assert_int_eq(eng_read(0, 0, b, 0, NULL), -EINVAL);
	ck_assert_uint_eq(qbd_engine_busy(e), 0);
}
END_TEST

static void submit_all(struct qbd_engine_req *rs, int n)
{
	struct cb_count *c = submit(&rs[0]);

	for (int i = 1; i < n; i++)
		submit(&rs[i]);
	wait_done(c, (unsigned)n);
	ck_assert_uint_eq(qbd_engine_busy(e), 0);
}

/* Reads queued behind writes of the same chunk see exactly the writes
 * submitted before them; aligned buffers take the no-copy path. */
START_TEST(reads_ordered_with_writes)
{
	uint8_t *w1, *w2, *r1, *r2, *r3;
	struct qbd_engine_req rs[5];

	ck_assert_int_eq(posix_memalign((void **)&w1, 4096, 8192), 0);
	ck_assert_int_eq(posix_memalign((void **)&w2, 4096, 8192), 0);
	ck_assert_int_eq(posix_memalign((void **)&r1, 4096, 8192), 0);
	ck_assert_int_eq(posix_memalign((void **)&r2, 4096, 8192), 0);
	ck_assert_int_eq(posix_memalign((void **)&r3, 4096, 8192), 0);
	fill(w1, 8192, 11);
	fill(w2, 8192, 12);
	rs[0] = (struct qbd_engine_req){ .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = 8,
		.offset = 8192, .length = 8192, .buf = w1, .expected_version = 0, .new_version = 1 };
	rs[1] = (struct qbd_engine_req){ .op = QBD_ENGINE_READ, .volume = VOL, .chunk = 8,
		.offset = 8192, .length = 8192, .buf = r1 };
	rs[2] = (struct qbd_engine_req){ .op = QBD_ENGINE_READ, .volume = VOL, .chunk = 8,
		.offset = 8192, .length = 8192, .buf = r3 };
	rs[3] = (struct qbd_engine_req){ .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = 8,
		.offset = 8192, .length = 8192, .buf = w2, .expected_version = 1, .new_version = 2,
		.flags = QBD_ENGINE_F_FUA };
	rs[4] = (struct qbd_engine_req){ .op = QBD_ENGINE_READ, .volume = VOL, .chunk = 8,
		.offset = 8192, .length = 8192, .buf = r2 };
	submit_all(rs, 5);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(rs[i].res, 8192);
	ck_assert_mem_eq(r1, w1, 8192);
	ck_assert_mem_eq(r3, w1, 8192);
	ck_assert_uint_eq(rs[1].version, 1);
	ck_assert_mem_eq(r2, w2, 8192);
	ck_assert_uint_eq(rs[4].version, 2);
	free(w1);
	free(w2);
	free(r1);
	free(r2);
	free(r3);
}
END_TEST

/* A whole-chunk ZERO frees every block; FLUSH completes; promises
 * submitted together keep the maximum, durably. */
START_TEST(zero_flush_promise)
{
	static uint8_t w[65536], r[65536], z[65536];
	struct qbd_engine_req rs[4];

	fill(w, sizeof w, 13);
	ck_assert_int_eq(eng_write(5, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	rs[0] = (struct qbd_engine_req){ .op = QBD_ENGINE_ZERO, .volume = VOL, .chunk = 5,
		.offset = 0, .length = CS, .expected_version = 1, .new_version = 2 };
	rs[1] = (struct qbd_engine_req){ .op = QBD_ENGINE_FLUSH };
	rs[2] = (struct qbd_engine_req){ .op = QBD_ENGINE_PROMISE, .volume = VOL, .epoch = 9 };
	rs[3] = (struct qbd_engine_req){ .op = QBD_ENGINE_PROMISE, .volume = VOL, .epoch = 4 };
	submit_all(rs, 4);
	ck_assert_int_eq(rs[0].res, (int)CS);
	ck_assert_int_eq(rs[1].res, 0);
	ck_assert_int_eq(rs[2].res, 0);
	ck_assert_int_eq(rs[3].res, 0);
	ck_assert_uint_eq(rs[3].version, 9);
	qbd_engine_close(e);
	open_store(0);
	ck_assert_uint_eq(qbd_engine_promised(e, VOL), 9);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 5), 2);
	memset(r, 1, sizeof r);
	ck_assert_int_eq(eng_read(5, 0, r, sizeof r, NULL), (int)sizeof r);
	ck_assert_mem_eq(r, z, sizeof r);
}
END_TEST

/* A 4-entry ring: requests that find the SQ full wait inside the engine;
 * unaligned writes over written blocks need two RMW reads at once. */
START_TEST(small_ring_queues)
{
	struct qbd_engine_opts o = { .path = path, .queue_depth = 4 };
	static struct qbd_engine_req rs[32];
	static uint8_t w[16][12288], r[16][12288];

	qbd_engine_close(e);
	ck_assert_int_eq(qbd_engine_open(&o, &e), 0);
	for (int i = 0; i < 16; i++) {
		fill(w[i], sizeof w[i], (unsigned)i);
		rs[i] = (struct qbd_engine_req){ .op = QBD_ENGINE_WRITE, .volume = VOL,
			.chunk = 20 + (uint64_t)i, .offset = 0, .length = 12288, .buf = w[i],
			.expected_version = 0, .new_version = 1 };
		/* then overwrite bytes 100..12100, merging with blocks 0 and 2 */
		rs[16 + i] = (struct qbd_engine_req){ .op = QBD_ENGINE_WRITE, .volume = VOL,
			.chunk = 20 + (uint64_t)i, .offset = 100, .length = 12000,
			.buf = w[(i + 1) % 16] + 100, .expected_version = 1, .new_version = 2 };
	}
	submit_all(rs, 32);
	for (int i = 0; i < 32; i++)
		ck_assert_int_eq(rs[i].res, i < 16 ? 12288 : 12000);
	for (int i = 0; i < 16; i++) {
		ck_assert_int_eq(eng_read(20 + (uint64_t)i, 0, r[i], 12288, NULL), 12288);
		ck_assert_mem_eq(r[i], w[i], 100);
		ck_assert_mem_eq(r[i] + 100, w[(i + 1) % 16] + 100, 12000);
		ck_assert_mem_eq(r[i] + 12100, w[i] + 12100, 188);
	}
}
END_TEST

/* ---- RESYNC ---- */

static int eng_resync(uint64_t chunk, const void *buf, uint64_t expected, uint64_t nv,
		      uint32_t flags, uint64_t *ver)
{
	struct qbd_engine_req r = { .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = chunk,
				    .offset = 0, .length = CS, .buf = (void *)buf,
				    .expected_version = expected, .new_version = nv,
				    .flags = QBD_ENGINE_F_RESYNC | flags };
	run(&r);
	if (ver)
		*ver = r.version;
	return r.res;
}

/* A chunk-sized buffer (4 KiB aligned, plus off bytes to test the copy
 * path) of pattern seed with the blocks in zero_mask (bit b%64 of block b)
 * all zeros. */
static uint8_t *resync_buf(unsigned seed, uint64_t zero_mask, size_t off, uint8_t **base)
{
	uint8_t *b;

	ck_assert_int_eq(posix_memalign((void **)base, 4096, CS + 4096), 0);
	b = *base + off;
	fill(b, CS, seed);
	for (unsigned i = 0; i < CS / 4096; i++)
		if ((zero_mask >> (i % 64)) & 1)
			memset(b + (size_t)i * 4096, 0, 4096);
	return b;
}

/* The on-disk metadata block of a chunk, read around the engine (the
 * engine writes with O_DIRECT, which keeps the page cache coherent). */
static bool disk_meta(uint64_t chunk, struct eng_meta *out, uint64_t *data_pos)
{
	struct eng_super sb;
	int fd = open(path, O_RDONLY);
	bool found = false;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &sb, sizeof sb, 0), (ssize_t)sizeof sb);
	for (uint64_t s = 0; s < sb.nslots && !found; s++) {
		ck_assert_int_eq(pread(fd, out, sizeof *out, (off_t)(sb.meta_off + s * 4096)),
				 (ssize_t)sizeof *out);
		if (out->magic == ENG_MAGIC_META && out->volume == VOL && out->chunk == chunk) {
			found = true;
			*data_pos = sb.data_off + s * sb.chunk_size;
		}
	}
	close(fd);
	return found;
}

static bool written_bit(const struct eng_meta *m, unsigned b)
{
	return (m->written[b / 64] >> (b % 64)) & 1;
}

/* Over a chunk at another version: data and version replaced whatever
 * expected_version says; then ordinary writes continue from it. */
START_TEST(resync_replaces_other_version)
{
	uint8_t *base, *w = resync_buf(21, 0, 0, &base), *r = malloc(CS), old[8192];
	uint64_t v;

	fill(old, sizeof old, 20);
	ck_assert_int_eq(eng_write(30, 0, old, sizeof old, 0, 1, 0), (int)sizeof old);
	ck_assert_int_eq(eng_write(30, 0, old, sizeof old, 1, 2, 0), (int)sizeof old);
	ck_assert_int_eq(eng_resync(30, w, 99, 7, 0, &v), (int)CS);
	ck_assert_uint_eq(v, 7);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 30), 7);
	ck_assert_int_eq(eng_read(30, 0, r, CS, &v), (int)CS);
	ck_assert_uint_eq(v, 7);
	ck_assert_mem_eq(r, w, CS);
	/* a RESYNC back to a lower version is allowed too */
	ck_assert_int_eq(eng_resync(30, w + 1, 0, 3, 0, NULL), (int)CS);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 30), 3);
	/* ordinary writes now go from the resynced version */
	ck_assert_int_eq(eng_write(30, 0, old, 4096, 7, 8, 0), -ESTALE);
	ck_assert_int_eq(eng_write(30, 100, old, 4096, 3, 4, 0), 4096);
	ck_assert_int_eq(eng_read(30, 0, r, CS, NULL), (int)CS);
	ck_assert_mem_eq(r, w + 1, 100);
	ck_assert_mem_eq(r + 100, old, 4096);
	ck_assert_mem_eq(r + 4196, w + 1 + 4196, CS - 4196);
	free(base);
	free(r);
}
END_TEST

/* Onto a chunk that has no slot: with data (through an unaligned buffer),
 * and all zeros (a slot with an empty bitmap that keeps its version). */
START_TEST(resync_fresh_chunk)
{
	uint8_t *base, *w = resync_buf(22, 0, 1, &base), *r = malloc(CS);
	uint8_t *zbase, *z = resync_buf(0, ~0ull, 0, &zbase);
	struct qbd_engine_stats st0, st;
	struct eng_meta m;
	uint64_t pos, v;

	qbd_engine_stats(e, &st0);
	ck_assert_int_eq(eng_resync(31, w, 0, 5, 0, &v), (int)CS);
	ck_assert_uint_eq(v, 5);
	ck_assert_int_eq(eng_read(31, 0, r, CS, NULL), (int)CS);
	ck_assert_mem_eq(r, w, CS);
	ck_assert_int_eq(eng_resync(32, z, 0, 3, QBD_ENGINE_F_FUA, NULL), (int)CS);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.chunks, st0.chunks + 2);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 32), 3);
	ck_assert(disk_meta(32, &m, &pos));
	ck_assert_uint_eq(m.version, 3);
	for (unsigned i = 0; i < ENG_BLOCKS_MAX / 64; i++)
		ck_assert_uint_eq(m.written[i], 0);
	qbd_engine_close(e);
	open_store(0);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 32), 3);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 31), 5);
	memset(r, 1, CS);
	ck_assert_int_eq(eng_read(32, 0, r, CS, &v), (int)CS);
	ck_assert_uint_eq(v, 3);
	ck_assert_mem_eq(r, z, CS);
	ck_assert_int_eq(eng_read(31, 0, r, CS, NULL), (int)CS);
	ck_assert_mem_eq(r, w, CS);
	free(base);
	free(zbase);
	free(r);
}
END_TEST

/* At the chunk's version already: success without writing. */
START_TEST(resync_idempotent)
{
	uint8_t *abase, *a = resync_buf(23, 0, 0, &abase);
	uint8_t *bbase, *b = resync_buf(24, 0x5, 0, &bbase), *r = malloc(CS);
	uint64_t v;

	ck_assert_int_eq(eng_resync(33, a, 0, 4, 0, NULL), (int)CS);
	ck_assert_int_eq(eng_resync(33, b, 1, 4, QBD_ENGINE_F_FUA, &v), (int)CS);
	ck_assert_uint_eq(v, 4);
	ck_assert_int_eq(eng_read(33, 0, r, CS, NULL), (int)CS);
	ck_assert_mem_eq(r, a, CS);
	ck_assert_int_eq(eng_write(33, 0, b, 4096, 4, 5, 0), 4096);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 33), 5);
	free(abase);
	free(bbase);
	free(r);
}
END_TEST

/* All-zero blocks become holes: written bit clear, the old data zeroed on
 * disk (a punched hole, no data write: crash recovery relies on holes
 * reading as zeros), reads return zeros; used space stays per chunk.
 * Holds across a reopen. */
START_TEST(resync_zero_blocks_are_holes)
{
	const uint64_t even = 0x5555555555555555ull;
	uint8_t *obase, *old = resync_buf(25, 0, 0, &obase);
	uint8_t *wbase, *w = resync_buf(26, even, 0, &wbase), *r = malloc(CS);
	static uint8_t raw[4096];
	struct qbd_engine_stats st0, st;
	struct eng_meta m;
	uint64_t pos;
	int fd;

	ck_assert_int_eq(eng_write(34, 0, old, CS, 0, 1, 0), (int)CS);
	qbd_engine_stats(e, &st0);
	ck_assert_int_eq(eng_resync(34, w, 0, 2, 0, NULL), (int)CS);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.used, st0.used);
	ck_assert_uint_eq(st.chunks, st0.chunks);
	for (int round = 0; round < 2; round++) {
		ck_assert_int_eq(eng_flush(), 0);
		ck_assert(disk_meta(34, &m, &pos));
		ck_assert_uint_eq(m.version, 2);
		for (unsigned b = 0; b < CS / 4096; b++) {
			ck_assert_int_eq(written_bit(&m, b), b % 2 == 1);
			if (b % 2 == 0)
				ck_assert_uint_eq(m.block_csum[b], 0);
		}
		/* block 2's old data is gone from the disk, block 3's there */
		fd = open(path, O_RDONLY);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(pread(fd, raw, 4096, (off_t)(pos + 2 * 4096)), 4096);
		for (unsigned i = 0; i < sizeof raw; i++)
			ck_assert_uint_eq(raw[i], 0);
		ck_assert_int_eq(pread(fd, raw, 4096, (off_t)(pos + 3 * 4096)), 4096);
		close(fd);
		ck_assert_mem_eq(raw, w + 3 * 4096, 4096);
		memset(r, 1, CS);
		ck_assert_int_eq(eng_read(34, 0, r, CS, NULL), (int)CS);
		ck_assert_mem_eq(r, w, CS);
		qbd_engine_close(e);
		open_store(0);
		ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 34), 2);
	}
	free(obase);
	free(wbase);
	free(r);
}
END_TEST

START_TEST(resync_invalid)
{
	uint8_t *base, *w = resync_buf(27, 0, 0, &base);
	struct qbd_engine_req z = { .op = QBD_ENGINE_ZERO, .volume = VOL, .chunk = 35,
				    .offset = 0, .length = CS, .new_version = 1,
				    .flags = QBD_ENGINE_F_RESYNC };

	ck_assert_int_eq(eng_write(35, 4096, w, CS - 4096, 0, 1, QBD_ENGINE_F_RESYNC), -EINVAL);
	ck_assert_int_eq(eng_write(35, 0, w, CS / 2, 0, 1, QBD_ENGINE_F_RESYNC), -EINVAL);
	ck_assert_int_eq(eng_resync(35, NULL, 0, 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(eng_resync(35, w, 0, 0, 0, NULL), -EINVAL); /* v0, data */
	ck_assert_int_eq(eng_resync(35, w, 1, 1, QBD_ENGINE_F_REPAIR, NULL), -EINVAL);
	run(&z);
	ck_assert_int_eq(z.res, -EINVAL);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 35), 0);
	ck_assert_uint_eq(qbd_engine_busy(e), 0);
	free(base);
}
END_TEST

/* RESYNC to version 0 with zeros: the chunk reads as never written. */
START_TEST(resync_to_version_zero)
{
	uint8_t *base, *w = resync_buf(29, 0, 0, &base);
	uint8_t *z = calloc(1, CS), *r = malloc(CS);
	uint64_t v = 99;

	ck_assert_int_eq(eng_resync(36, w, 0, 5, 0, NULL), (int)CS);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 36), 5);
	ck_assert_int_eq(eng_resync(36, z, 0, 0, QBD_ENGINE_F_FUA, &v), (int)CS);
	ck_assert_uint_eq(v, 0);
	for (int pass = 0; pass < 2; pass++) {
		ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 36), 0);
		ck_assert_int_eq(eng_read(36, 0, r, CS, &v), (int)CS);
		ck_assert_uint_eq(v, 0);
		ck_assert_mem_eq(r, z, CS);
		qbd_engine_close(e);
		open_store(0);
	}
	/* and it takes a first write again */
	ck_assert_int_eq(eng_write(36, 0, w, 4096, 0, 1, 0), 4096);
	free(base);
	free(z);
	free(r);
}
END_TEST

/* RESYNC queues in the chunk's FIFO with other requests, on a small ring
 * (so its data runs wait for SQEs). */
START_TEST(resync_ordered)
{
	struct qbd_engine_opts o = { .path = path, .queue_depth = 4 };
	uint8_t *base, *w = resync_buf(28, 0x0f0f0f0f0f0f0f0full, 0, &base);
	uint8_t *r1 = malloc(CS), *r2 = malloc(CS);
	static uint8_t a[4096], b[4096];
	struct qbd_engine_req rs[5];

	qbd_engine_close(e);
	ck_assert_int_eq(qbd_engine_open(&o, &e), 0);
	fill(a, sizeof a, 29);
	fill(b, sizeof b, 30);
	rs[0] = (struct qbd_engine_req){ .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = 36,
		.offset = 0, .length = 4096, .buf = a, .expected_version = 0, .new_version = 1 };
	rs[1] = (struct qbd_engine_req){ .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = 36,
		.offset = 0, .length = CS, .buf = w, .new_version = 9,
		.flags = QBD_ENGINE_F_RESYNC | QBD_ENGINE_F_FUA };
	rs[2] = (struct qbd_engine_req){ .op = QBD_ENGINE_READ, .volume = VOL, .chunk = 36,
		.offset = 0, .length = CS, .buf = r1 };
	rs[3] = (struct qbd_engine_req){ .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = 36,
		.offset = 0, .length = 4096, .buf = b, .expected_version = 9, .new_version = 10 };
	rs[4] = (struct qbd_engine_req){ .op = QBD_ENGINE_READ, .volume = VOL, .chunk = 36,
		.offset = 0, .length = CS, .buf = r2 };
	submit_all(rs, 5);
	ck_assert_int_eq(rs[0].res, 4096);
	ck_assert_int_eq(rs[1].res, (int)CS);
	ck_assert_uint_eq(rs[1].version, 9);
	ck_assert_int_eq(rs[2].res, (int)CS);
	ck_assert_uint_eq(rs[2].version, 9);
	ck_assert_mem_eq(r1, w, CS);
	ck_assert_int_eq(rs[3].res, 4096);
	ck_assert_int_eq(rs[4].res, (int)CS);
	ck_assert_uint_eq(rs[4].version, 10);
	ck_assert_mem_eq(r2, b, 4096);
	ck_assert_mem_eq(r2 + 4096, w + 4096, CS - 4096);
	free(base);
	free(r1);
	free(r2);
}
END_TEST

/* ---- chunk flags ---- */

/* Overwrite bytes of block b of a chunk on disk, around the engine
 * (flushed first if open, so that its metadata block is on disk). */
static void corrupt_block(uint64_t chunk, unsigned b)
{
	struct eng_meta m;
	uint64_t pos;
	char junk[] = "garbage";
	int fd;

	if (e)
		ck_assert_int_eq(eng_flush(), 0);
	ck_assert(disk_meta(chunk, &m, &pos));
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, junk, sizeof junk, (off_t)(pos + b * 4096ull + 10)),
			 (ssize_t)sizeof junk);
	close(fd);
}

struct flag_seen { uint64_t chunk; uint32_t flags; int n; };

static int flag_cb(void *user, uint64_t chunk, uint64_t version, uint32_t flags)
{
	struct flag_seen *f = user;

	(void)version;
	if (chunk == f->chunk) {
		f->flags = flags;
		f->n++;
	}
	return 0;
}

static uint32_t chunk_flags(uint64_t chunk)
{
	struct flag_seen f = { .chunk = chunk };

	ck_assert_int_eq(qbd_engine_for_each_chunk(e, VOL, flag_cb, &f), 0);
	ck_assert_int_le(f.n, 1);
	return f.flags;
}

/* A read that finds a bad block flags the chunk DAMAGED; the flag lists
 * it; rewriting some bad blocks keeps the flag, rewriting all clears it. */
START_TEST(damaged_set_by_read_cleared_by_repair)
{
	static uint8_t w[4 * 4096], r[4 * 4096];
	uint64_t chunks[4];
	uint32_t flags[4];

	fill(w, sizeof w, 41);
	ck_assert_int_eq(eng_write(40, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_write(41, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_uint_eq(qbd_engine_flagged_chunks(e, VOL, chunks, flags, 4), 0);
	corrupt_block(40, 1);
	corrupt_block(40, 3);
	ck_assert_int_eq(eng_read(40, 0, r, sizeof r, NULL), -EBADMSG);
	ck_assert_uint_eq(chunk_flags(40), QBD_ENGINE_CHUNK_DAMAGED);
	ck_assert_uint_eq(chunk_flags(41), 0);
	ck_assert_uint_eq(qbd_engine_flagged_chunks(e, VOL, chunks, flags, 4), 1);
	ck_assert_uint_eq(chunks[0], 40);
	ck_assert_uint_eq(flags[0], QBD_ENGINE_CHUNK_DAMAGED);
	ck_assert_uint_eq(qbd_engine_flagged_chunks(e, VOL + 1, chunks, flags, 4), 0);
	ck_assert_uint_eq(qbd_engine_flagged_chunks(e, VOL, chunks, flags, 0), 1);
	/* a partial write over a bad block fails and keeps the flag */
	ck_assert_int_eq(eng_write(40, 3 * 4096 + 1, w, 10, 1, 1, QBD_ENGINE_F_REPAIR), -EBADMSG);
	ck_assert_uint_eq(chunk_flags(40), QBD_ENGINE_CHUNK_DAMAGED);
	/* repairing block 1 only: still damaged (block 3 is bad and the
	 * read of block 3 alone says so) */
	ck_assert_int_eq(eng_write(40, 4096, w + 4096, 4096, 1, 1, QBD_ENGINE_F_REPAIR), 4096);
	ck_assert_uint_eq(chunk_flags(40), QBD_ENGINE_CHUNK_DAMAGED);
	ck_assert_int_eq(eng_read(40, 3 * 4096, r, 4096, NULL), -EBADMSG);
	ck_assert_int_eq(eng_write(40, 3 * 4096, w + 3 * 4096, 4096, 1, 1,
				   QBD_ENGINE_F_REPAIR), 4096);
	ck_assert_uint_eq(chunk_flags(40), 0);
	ck_assert_uint_eq(qbd_engine_flagged_chunks(e, VOL, chunks, flags, 4), 0);
	ck_assert_int_eq(eng_read(40, 0, r, sizeof r, NULL), (int)sizeof r);
	ck_assert_mem_eq(r, w, sizeof r);
}
END_TEST

/* RESYNC clears DAMAGED; DELETE_VOLUME drops the flags with the chunks. */
START_TEST(damaged_cleared_by_resync_dropped_by_delete)
{
	uint8_t *base, *w = resync_buf(42, 0, 0, &base), r[4096];
	struct qbd_engine_req d = { .op = QBD_ENGINE_DELETE_VOLUME, .volume = VOL };
	uint64_t chunks[2];
	uint32_t flags[2];

	ck_assert_int_eq(eng_write(42, 0, w, 8192, 0, 1, 0), 8192);
	corrupt_block(42, 0);
	ck_assert_int_eq(eng_read(42, 0, r, sizeof r, NULL), -EBADMSG);
	ck_assert_uint_eq(chunk_flags(42), QBD_ENGINE_CHUNK_DAMAGED);
	ck_assert_int_eq(eng_resync(42, w, 0, 5, 0, NULL), (int)CS);
	ck_assert_uint_eq(chunk_flags(42), 0);
	ck_assert_int_eq(eng_read(42, 0, r, sizeof r, NULL), (int)sizeof r);
	corrupt_block(42, 2);
	ck_assert_int_eq(eng_read(42, 2 * 4096, r, sizeof r, NULL), -EBADMSG);
	ck_assert_uint_eq(qbd_engine_flagged_chunks(e, VOL, chunks, flags, 2), 1);
	run(&d);
	ck_assert_int_eq(d.res, 0);
	ck_assert_uint_eq(qbd_engine_flagged_chunks(e, VOL, chunks, flags, 2), 0);
	ck_assert_uint_eq(chunk_flags(42), 0);
	free(base);
}
END_TEST

/* Copy the store as it is now, engine still open: the image a power cut
 * would leave once everything written has reached the disk. */
static void copy_store(const char *to)
{
	static uint8_t buf[1 << 16];
	int in = open(path, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ssize_t n;
	off_t off = 0;

	ck_assert_int_ge(in, 0);
	ck_assert_int_ge(out, 0);
	while ((n = pread(in, buf, sizeof buf, off)) > 0) {
		ck_assert_int_eq(pwrite(out, buf, (size_t)n, off), n);
		off += n;
	}
	close(in);
	close(out);
}

/* A crash after a block's data reached the disk but not its metadata:
 * the recovery at open accepts what the block holds, flags the chunk
 * SUSPECT (it no longer matches its version), and the flag survives
 * clean restarts until a RESYNC. A chunk whose writes all landed is not
 * suspect. */
START_TEST(recovery_flags_suspect_until_resync)
{
	static uint8_t w[8192], nw[4096], r[8192];
	uint8_t *base, *rs = resync_buf(52, 0, 0, &base);
	uint64_t chunks[2], v;
	uint32_t flags[2];
	char crashed[128];

	fill(w, sizeof w, 50);
	fill(nw, sizeof nw, 51);
	ck_assert_int_eq(eng_write(50, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_write(51, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_flush(), 0);
	snprintf(crashed, sizeof crashed, "%s/crashed", dir);
	copy_store(crashed);
	qbd_engine_close(e);
	e = NULL;
	rename(crashed, path);
	/* block 1 of chunk 50 holds data its metadata does not know */
	corrupt_block(50, 1);
	{
		struct eng_meta m;
		uint64_t pos;
		int fd = open(path, O_RDWR);

		ck_assert(disk_meta(50, &m, &pos));
		ck_assert_int_eq(pwrite(fd, nw, sizeof nw, (off_t)(pos + 4096)), 4096);
		close(fd);
	}
	open_store(0);
	ck_assert_uint_eq(chunk_flags(50), QBD_ENGINE_CHUNK_SUSPECT);
	ck_assert_uint_eq(chunk_flags(51), 0);
	ck_assert_uint_eq(qbd_engine_flagged_chunks(e, VOL, chunks, flags, 2), 1);
	ck_assert_uint_eq(chunks[0], 50);
	ck_assert_int_eq(eng_read(50, 0, r, sizeof r, &v), (int)sizeof r);
	ck_assert_uint_eq(v, 1);
	ck_assert_mem_eq(r, w, 4096);
	ck_assert_mem_eq(r + 4096, nw, 4096);
	ck_assert_int_eq(eng_read(51, 0, r, sizeof r, NULL), (int)sizeof r);
	ck_assert_mem_eq(r, w, sizeof w);
	/* an ordinary write keeps it suspect, also across a clean restart */
	ck_assert_int_eq(eng_write(50, 0, w, 4096, 1, 2, 0), 4096);
	qbd_engine_close(e);
	open_store(0);
	ck_assert_uint_eq(chunk_flags(50), QBD_ENGINE_CHUNK_SUSPECT);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 50), 2);
	/* a RESYNC reconciles it, even one at the version it already has
	 * (not taken for a retry: the flagged copy is what it replaces) */
	ck_assert_int_eq(eng_resync(50, rs, 0, 2, 0, NULL), (int)CS);
	ck_assert_uint_eq(chunk_flags(50), 0);
	ck_assert_int_eq(eng_read(50, 0, r, sizeof r, &v), (int)sizeof r);
	ck_assert_uint_eq(v, 2);
	ck_assert_mem_eq(r, rs, sizeof r);
	qbd_engine_close(e);
	open_store(0);
	ck_assert_uint_eq(chunk_flags(50), 0);
	ck_assert_uint_eq(qbd_engine_flagged_chunks(e, VOL, chunks, flags, 2), 0);
	free(base);
}
END_TEST

/* DAMAGED found by a read persists across a clean close. */
START_TEST(damaged_persists)
{
	static uint8_t w[8192], r[4096];

	fill(w, sizeof w, 53);
	ck_assert_int_eq(eng_write(53, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	corrupt_block(53, 1);
	ck_assert_int_eq(eng_read(53, 4096, r, sizeof r, NULL), -EBADMSG);
	qbd_engine_close(e);
	open_store(0);
	ck_assert_uint_eq(chunk_flags(53), QBD_ENGINE_CHUNK_DAMAGED);
	ck_assert_int_eq(eng_write(53, 4096, w + 4096, 4096, 1, 1, QBD_ENGINE_F_REPAIR), 4096);
	ck_assert_uint_eq(chunk_flags(53), 0);
	qbd_engine_close(e);
	open_store(0);
	ck_assert_uint_eq(chunk_flags(53), 0);
	ck_assert_int_eq(eng_read(53, 4096, r, sizeof r, NULL), (int)sizeof r);
}
END_TEST

/* A store of format 1 is refused with a message. */
START_TEST(old_format_refused)
{
	struct eng_super sb;
	struct qbd_engine_opts o = { .path = path };
	int fd;

	qbd_engine_close(e);
	e = NULL;
	fd = open(path, O_RDWR);
	ck_assert_int_eq(pread(fd, &sb, sizeof sb, 0), (ssize_t)sizeof sb);
	sb.format = 1;
	ck_assert_int_eq(pwrite(fd, &sb, sizeof sb, 0), (ssize_t)sizeof sb);
	close(fd);
	ck_assert_int_eq(qbd_engine_open(&o, &e), -EUCLEAN);
	ck_assert_ptr_null(e);
}
END_TEST

static int eng_bitmap(uint64_t chunk, uint32_t off, uint32_t len, uint8_t *bits,
		      uint64_t *ver)
{
	struct qbd_engine_req r = { .op = QBD_ENGINE_BITMAP, .volume = VOL, .chunk = chunk,
				    .offset = off, .length = len, .buf = bits };
	run(&r);
	if (ver)
		*ver = r.version;
	return r.res;
}

/* BITMAP: which blocks hold data, from the metadata, in the chunk's
 * order; never-written chunks and ranges are holes. */
START_TEST(bitmap_of_written_blocks)
{
	uint8_t w[5 * 4096], bits[40];
	struct qbd_engine_stats st0, st;
	struct qbd_engine_req zr = { .op = QBD_ENGINE_ZERO, .volume = VOL, .chunk = 6,
				     .offset = 4096, .length = 4096,
				     .expected_version = 1, .new_version = 2 };
	uint64_t v = 99;

	qbd_engine_stats(e, &st0);
	memset(bits, 0xff, sizeof bits);
	ck_assert_int_eq(eng_bitmap(6, 0, CS, bits, &v), 0);
	ck_assert_uint_eq(v, 0);
	for (unsigned i = 0; i < CS / 4096 / 8; i++)
		ck_assert_uint_eq(bits[i], 0);
	ck_assert_uint_eq(bits[CS / 4096 / 8], 0xff);       /* past the end: untouched */
	fill(w, sizeof w, 3);
	/* blocks 8..12 (the first and last partly) */
	ck_assert_int_eq(eng_write(6, 8 * 4096 + 100, w, sizeof w - 200, 0, 1, 0),
			 (int)sizeof w - 200);
	run(&zr);                                            /* block 1: never written */
	ck_assert_int_eq(zr.res, 4096);
	ck_assert_int_eq(eng_bitmap(6, 0, 16 * 4096, bits, &v), 0);
	ck_assert_uint_eq(v, 2);
	ck_assert_uint_eq(bits[0], 0);
	ck_assert_uint_eq(bits[1], 0x1f);
	ck_assert_int_eq(eng_bitmap(6, 9 * 4096, 2 * 4096, bits, NULL), 0);
	ck_assert_uint_eq(bits[0], 3);
	zr.offset = 9 * 4096;
	zr.length = 2 * 4096;
	zr.expected_version = 2;
	zr.new_version = 3;
	run(&zr);
	ck_assert_int_eq(eng_bitmap(6, 8 * 4096, 8 * 4096, bits, NULL), 0);
	ck_assert_uint_eq(bits[0], 0x19);
	/* Unaligned: -EINVAL. */
	ck_assert_int_eq(eng_bitmap(6, 100, 4096, bits, NULL), -EINVAL);
	ck_assert_int_eq(eng_bitmap(6, 0, 4000, bits, NULL), -EINVAL);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.chunks, st0.chunks + 1);
}
END_TEST

/* A ZERO (or WRITE) to version 0 of a chunk never written: acknowledged,
 * nothing allocated or written. */
START_TEST(zero_to_version_0_allocates_nothing)
{
	struct qbd_engine_stats st0, st;
	struct qbd_engine_req zr = { .op = QBD_ENGINE_ZERO, .volume = VOL, .chunk = 7,
				     .offset = 0, .length = CS, .flags = QBD_ENGINE_F_FUA };
	uint8_t r[4096];

	qbd_engine_stats(e, &st0);
	run(&zr);
	ck_assert_int_eq(zr.res, (int)CS);
	ck_assert_uint_eq(zr.version, 0);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.chunks, st0.chunks);
	ck_assert_uint_eq(st.used, st0.used);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 7), 0);
	memset(r, 1, sizeof r);
	ck_assert_int_eq(eng_read(7, 0, r, sizeof r, NULL), (int)sizeof r);
	for (unsigned i = 0; i < sizeof r; i++)
		ck_assert_uint_eq(r[i], 0);
	/* A written chunk at version 1: 0 -> 0 is stale. */
	ck_assert_int_eq(eng_write(8, 0, r, sizeof r, 0, 1, 0), (int)sizeof r);
	zr.chunk = 8;
	run(&zr);
	ck_assert_int_eq(zr.res, -ESTALE);
}
END_TEST

/* ---- scrub, space accounting, full filesystem ---- */

static int eng_scrub(uint64_t chunk, uint8_t *bad, uint64_t *ver)
{
	struct qbd_engine_req r = { .op = QBD_ENGINE_SCRUB, .volume = VOL, .chunk = chunk,
				    .buf = bad };
	run(&r);
	if (ver)
		*ver = r.version;
	return r.res;
}

/* A scrub reads the written blocks only, finds a block flipped on disk,
 * flags the chunk DAMAGED and names the block; a repair clears it. */
START_TEST(scrub_finds_bad_block)
{
	static uint8_t w[4 * 4096];
	uint8_t bad[CS / 4096 / 8];
	struct qbd_engine_stats st0, st;
	uint64_t v;

	fill(w, sizeof w, 3);
	ck_assert_int_eq(eng_write(2, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_write(2, 40 * 4096, w, 4096, 1, 2, 0), 4096);
	qbd_engine_stats(e, &st0);
	ck_assert_int_eq(eng_scrub(2, bad, &v), 5 * 4096);
	ck_assert_uint_eq(v, 2);
	for (unsigned i = 0; i < sizeof bad; i++)
		ck_assert_uint_eq(bad[i], 0);
	ck_assert_uint_eq(chunk_flags(2), 0);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.data_reads, st0.data_reads + 1);
	ck_assert_uint_eq(st.data_read_bytes, st0.data_read_bytes + 41 * 4096);

	corrupt_block(2, 40);
	corrupt_block(2, 1);
	ck_assert_int_eq(eng_scrub(2, bad, NULL), 5 * 4096);
	ck_assert_uint_eq(bad[0], 1u << 1);
	ck_assert_uint_eq(bad[5], 1u << 0);
	for (unsigned i = 0; i < sizeof bad; i++)
		if (i != 0 && i != 5)
			ck_assert_uint_eq(bad[i], 0);
	ck_assert_uint_eq(chunk_flags(2), QBD_ENGINE_CHUNK_DAMAGED);
	/* Rewriting both bad blocks (REPAIR at the same version) clears it. */
	ck_assert_int_eq(eng_write(2, 4096, w + 4096, 4096, 2, 2, QBD_ENGINE_F_REPAIR), 4096);
	ck_assert_uint_eq(chunk_flags(2), QBD_ENGINE_CHUNK_DAMAGED);
	ck_assert_int_eq(eng_write(2, 40 * 4096, w, 4096, 2, 2, QBD_ENGINE_F_REPAIR), 4096);
	ck_assert_uint_eq(chunk_flags(2), 0);
	ck_assert_int_eq(eng_scrub(2, bad, NULL), 5 * 4096);
	for (unsigned i = 0; i < sizeof bad; i++)
		ck_assert_uint_eq(bad[i], 0);
	/* A chunk never written: nothing to read. */
	qbd_engine_stats(e, &st0);
	ck_assert_int_eq(eng_scrub(3, NULL, &v), 0);
	ck_assert_uint_eq(v, 0);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.data_reads, st0.data_reads);
}
END_TEST

/* A scrub waits in the chunk's FIFO behind a write submitted before it. */
START_TEST(scrub_ordered_after_write)
{
	static uint8_t w[8 * 4096];
	struct qbd_engine_req rs[2] = {
		{ .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = 6, .offset = 0,
		  .length = sizeof w, .buf = w, .expected_version = 0, .new_version = 1 },
		{ .op = QBD_ENGINE_SCRUB, .volume = VOL, .chunk = 6 },
	};

	fill(w, sizeof w, 5);
	submit_all(rs, 2);
	ck_assert_int_eq(rs[0].res, (int)sizeof w);
	ck_assert_int_eq(rs[1].res, (int)sizeof w);
	ck_assert_uint_eq(rs[1].version, 1);
}
END_TEST

/* The walk by slot meets every written chunk once. */
START_TEST(next_chunk_walks_every_chunk)
{
	uint8_t b[4096] = { 7 };
	uint64_t slot = 0, vol, ch, seen = 0;
	unsigned n = 0;

	ck_assert_int_eq(eng_write(0, 0, b, 4096, 0, 1, 0), 4096);
	ck_assert_int_eq(eng_write(5, 0, b, 4096, 0, 1, 0), 4096);
	ck_assert_int_eq(eng_write(9, 0, b, 4096, 0, 1, 0), 4096);
	while (qbd_engine_next_chunk(e, &slot, &vol, &ch)) {
		ck_assert_uint_eq(vol, VOL);
		ck_assert(ch == 0 || ch == 5 || ch == 9);
		ck_assert(!(seen & (1ull << ch)));
		seen |= 1ull << ch;
		slot++;
		n++;
	}
	ck_assert_uint_eq(n, 3);
}
END_TEST

static uint64_t store_blocks(void)
{
	struct stat sb;

	ck_assert_int_eq(stat(path, &sb), 0);
	return (uint64_t)sb.st_blocks * 512;
}

/* held counts written blocks, not slots: writes raise it, ZERO (TRIM)
 * lowers it and punches the blocks out of the store file; it survives a
 * reopen; DELETE_VOLUME drops it. */
START_TEST(held_follows_writes_and_trims)
{
	static uint8_t w[64 * 4096];
	struct qbd_engine_stats st;
	struct qbd_engine_req zr = { .op = QBD_ENGINE_ZERO, .volume = VOL, .chunk = 1,
				     .offset = 8 * 4096, .length = 48 * 4096,
				     .expected_version = 1, .new_version = 2 };
	struct qbd_engine_req d = { .op = QBD_ENGINE_DELETE_VOLUME, .volume = VOL };
	uint64_t chunks, held, blocks0, blocks1;

	blocks0 = store_blocks();
	fill(w, sizeof w, 11);
	ck_assert_int_eq(eng_write(1, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_write(2, 100, w, 5000, 0, 1, 0), 5000); /* 2 blocks */
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.held, 66 * 4096);
	ck_assert_uint_eq(st.used, 2 * CS);
	ck_assert_uint_eq(st.free_slots, st.slots - 2);
	qbd_engine_volume_usage(e, VOL, &chunks, &held);
	ck_assert_uint_eq(chunks, 2);
	ck_assert_uint_eq(held, 66 * 4096);
	qbd_engine_volume_usage(e, VOL + 1, &chunks, &held);
	ck_assert_uint_eq(chunks, 0);
	ck_assert_uint_eq(held, 0);
	blocks1 = store_blocks();
	ck_assert_uint_ge(blocks1, blocks0 + 64 * 4096);

	run(&zr);
	ck_assert_int_eq(zr.res, 48 * 4096);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.held, 18 * 4096);
	ck_assert_uint_le(store_blocks(), blocks1 - 48 * 4096);

	qbd_engine_close(e);
	open_store(0);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.held, 18 * 4096);

	run(&d);
	ck_assert_int_eq(d.res, 0);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.held, 0);
	ck_assert_uint_eq(st.chunks, 0);
}
END_TEST

/* qbd_engine_volumes lists every volume with a chunk or a promise,
 * sorted, with its chunks, held bytes and promise, across a reopen; a
 * volume goes from the list with its DELETE_VOLUME. */
START_TEST(volumes_lists_what_the_store_holds)
{
	static uint8_t w[8 * 4096];
	struct qbd_engine_volume *v;
	struct qbd_engine_req p = { .op = QBD_ENGINE_PROMISE, .volume = 0x99, .epoch = 7 };
	struct qbd_engine_req d = { .op = QBD_ENGINE_DELETE_VOLUME, .volume = VOL };
	struct qbd_engine_req w2 = { .op = QBD_ENGINE_WRITE, .volume = 0x5, .chunk = 40,
				     .offset = 0, .length = 4096, .buf = w,
				     .new_version = 1 };
	size_t n;

	ck_assert_int_eq(qbd_engine_volumes(e, &v, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(v);
	fill(w, sizeof w, 3);
	ck_assert_int_eq(eng_write(1, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_write(9, 0, w, 4096, 0, 1, 0), 4096);
	run(&w2);
	ck_assert_int_eq(w2.res, 4096);
	run(&p);
	ck_assert_int_eq(p.res, 0);
	for (int pass = 0; pass < 2; pass++) {
		ck_assert_int_eq(qbd_engine_volumes(e, &v, &n), 0);
		ck_assert_uint_eq(n, 3);
		ck_assert_uint_eq(v[0].volume, 0x5);
		ck_assert_uint_eq(v[0].chunks, 1);
		ck_assert_uint_eq(v[0].held, 4096);
		ck_assert_uint_eq(v[0].promised, 0);
		ck_assert_uint_eq(v[1].volume, 0x99);
		ck_assert_uint_eq(v[1].chunks, 0);
		ck_assert_uint_eq(v[1].held, 0);
		ck_assert_uint_eq(v[1].promised, 7);
		ck_assert_uint_eq(v[2].volume, VOL);
		ck_assert_uint_eq(v[2].chunks, 2);
		ck_assert_uint_eq(v[2].held, 9 * 4096);
		free(v);
		qbd_engine_close(e);
		open_store(0);
	}
	run(&d);
	ck_assert_int_eq(d.res, 0);
	ck_assert_int_eq(qbd_engine_volumes(e, &v, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(v[0].volume, 0x5);
	ck_assert_uint_eq(v[1].volume, 0x99);
	free(v);
}
END_TEST

/* Zeroing and reading what was never written cost no data I/O. */
START_TEST(no_data_io_for_zeroing_and_holes)
{
	static uint8_t w[4 * 4096], r[CS];
	struct qbd_engine_stats st0, st;
	struct qbd_engine_req zr = { .op = QBD_ENGINE_ZERO, .volume = VOL, .chunk = 3,
				     .offset = 0, .length = CS,
				     .expected_version = 0, .new_version = 1 };
	struct qbd_engine_req z0 = { .op = QBD_ENGINE_ZERO, .volume = VOL, .chunk = 4,
				     .offset = 0, .length = CS };

	fill(w, sizeof w, 13);
	ck_assert_int_eq(eng_write(1, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	qbd_engine_stats(e, &st0);
	/* A chunk never written; holes of a written one. */
	ck_assert_int_eq(eng_read(2, 0, r, CS, NULL), (int)CS);
	ck_assert_int_eq(eng_read(1, 8 * 4096, r, CS - 8 * 4096, NULL), (int)(CS - 8 * 4096));
	/* Zeroing a chunk never written, at version 0 and at a new version;
	 * zeroing whole written blocks. */
	run(&z0);
	ck_assert_int_eq(z0.res, (int)CS);
	run(&zr);
	ck_assert_int_eq(zr.res, (int)CS);
	zr.chunk = 1;
	zr.expected_version = 1;
	zr.new_version = 2;
	run(&zr);
	ck_assert_int_eq(zr.res, (int)CS);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.data_reads, st0.data_reads);
	ck_assert_uint_eq(st.data_read_bytes, st0.data_read_bytes);
	ck_assert_uint_eq(st.data_writes, st0.data_writes);
	ck_assert_uint_eq(st.data_write_bytes, st0.data_write_bytes);
	ck_assert_uint_eq(st.held, 0);
	ck_assert_int_eq(eng_flush(), 0);
	qbd_engine_stats(e, &st);
	ck_assert_uint_gt(st.meta_writes, st0.meta_writes); /* versions persisted */
	ck_assert_uint_eq(st.zeroings, st0.zeroings + 1);   /* chunk 1's 4 blocks */
	/* A written range does read data. */
	ck_assert_int_eq(eng_write(1, 0, w, 4096, 2, 3, 0), 4096);
	ck_assert_int_eq(eng_read(1, 0, r, 4096, NULL), 4096);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.data_reads, st0.data_reads + 1);
	ck_assert_uint_eq(st.data_writes, st0.data_writes + 1);
}
END_TEST

/* Every slot that holds none of chunks 0..last and 50 reads as zeros on
 * disk (after a FLUSH: the metadata blocks on disk say which hold). */
static void free_slots_read_zero(uint64_t last)
{
	static uint8_t z[CS];
	struct eng_super sb;
	uint8_t *buf = malloc(CS);
	int fd;

	ck_assert_int_eq(eng_flush(), 0);
	fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &sb, sizeof sb, 0), (ssize_t)sizeof sb);
	for (uint64_t s = 0; s < sb.nslots; s++) {
		bool used = false;

		for (uint64_t c = 0; c <= 50; c++) {
			struct eng_meta m;
			uint64_t pos;

			if ((c <= last || c == 50) && disk_meta(c, &m, &pos))
				used |= pos == sb.data_off + s * CS;
		}
		if (used)
			continue;
		ck_assert_int_eq(pread(fd, buf, CS, (off_t)(sb.data_off + s * CS)), (ssize_t)CS);
		ck_assert_mem_eq(buf, z, CS);
	}
	free(buf);
	close(fd);
}

/*
 * A sparse store on a full filesystem (tmpfs in a private mount
 * namespace, so nothing outlives the test's process): writes into holes
 * fail with ENOSPC, leave no data in the holes they failed to fill, and
 * change nothing; reads, writes over written blocks and trims go on.
 * Needs CAP_SYS_ADMIN: without it the test says so and checks nothing.
 */
START_TEST(full_filesystem_enospc)
{
	static uint8_t w[CS], r[CS], z[CS];
	struct qbd_engine_stats st;
	struct qbd_engine_req zr = { .op = QBD_ENGINE_ZERO, .volume = VOL, .offset = 0,
				     .length = CS };
	uint64_t n = 0, k, ver;
	int res = 0;

	qbd_engine_close(e);
	e = NULL;
	unlink(path);
	if (unshare(CLONE_NEWNS) == -1 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1 ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=12m") == -1) {
		fprintf(stderr, "full_filesystem_enospc: no private tmpfs (%m): not checked\n");
		open_store(64ull << 20);
		return;
	}
	open_store(64ull << 20);
	fill(w, sizeof w, 17);
	/* Chunk 50: one block of data, the rest holes. */
	ck_assert_int_eq(eng_write(50, 0, w + 4096, 4096, 0, 1, 0), 4096);
	/* Fill the filesystem chunk by chunk, then block by block. */
	for (n = 0; n < 40; n++) {
		res = eng_write(n, 0, w, CS, 0, 1, 0);
		if (res != (int)CS)
			break;
	}
	ck_assert_int_eq(res, -ENOSPC);
	ck_assert_uint_gt(n, 2);
	ck_assert_uint_lt(n, 13);
	/* The write that failed left nothing in the holes it covered. */
	free_slots_read_zero(n);
	for (k = 0; k < CS / 4096; k++) {
		res = eng_write(n + 1, (uint32_t)k * 4096, w, 4096, k, k + 1, 0);
		if (res != 4096)
			break;
	}
	ck_assert_int_eq(res, -ENOSPC);
	/* A write over chunk 50's block of data and into a hole fails
	 * without touching the data: it reads back unchanged, unflagged. */
	ck_assert_int_eq(eng_write(50, 0, w + 8192, 8192, 1, 2, 0), -ENOSPC);
	ck_assert_int_eq(eng_read(50, 0, r, 8192, &ver), 8192);
	ck_assert_uint_eq(ver, 1);
	ck_assert_mem_eq(r, w + 4096, 4096);
	ck_assert_mem_eq(r + 4096, z, 4096);
	ck_assert_uint_eq(chunk_flags(50), 0);
	/* The failed chunk holds nothing, on disk nothing of it either. */
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, n), 0);
	ck_assert_int_eq(eng_read(n, 0, r, CS, &ver), (int)CS);
	ck_assert_uint_eq(ver, 0);
	ck_assert_mem_eq(r, z, CS);
	free_slots_read_zero(n + 1);
	/* A written chunk reads back and can be overwritten in place. */
	ck_assert_int_eq(eng_read(0, 0, r, CS, NULL), (int)CS);
	ck_assert_mem_eq(r, w, CS);
	fill(w, 8192, 19);
	ck_assert_int_eq(eng_write(0, 0, w, 8192, 1, 2, 0), 8192);
	ck_assert_int_eq(eng_read(0, 0, r, 8192, NULL), 8192);
	ck_assert_mem_eq(r, w, 8192);
	/* A trim frees space: the next chunk fits. */
	zr.chunk = 1;
	zr.expected_version = 1;
	zr.new_version = 2;
	run(&zr);
	ck_assert_int_eq(zr.res, (int)CS);
	ck_assert_int_eq(eng_write(n, 0, w, CS, 0, 1, 0), (int)CS);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(st.held, (uint64_t)n * CS + 4096 + k * 4096);
	qbd_engine_close(e);
	e = NULL;
	unlink(path);
	ck_assert_int_eq(umount(dir), 0);
	open_store(64ull << 20);
}
END_TEST

/* ---- metadata in memory, group commit ---- */

/* Writes and syncs the engine issues, by kind, where (meta or data). */
struct io_count { unsigned data_writes, meta_writes, other_writes, syncs; };
static struct io_count ioc;

static void count_hook(void *user, const struct qbd_engine_io *io)
{
	const struct eng_super *sb = user;

	if (io->done || !sb->meta_off)
		return;
	if (io->kind == QBD_ENGINE_IO_SYNC)
		ioc.syncs++;
	else if (io->kind != QBD_ENGINE_IO_WRITE)
		return;
	else if (io->offset >= sb->data_off)
		ioc.data_writes++;
	else if (io->offset >= sb->meta_off)
		ioc.meta_writes++;
	else
		ioc.other_writes++;
}

static void open_counted(struct eng_super *sb)
{
	struct qbd_engine_opts o = { .path = path, .io_hook = count_hook, .io_hook_user = sb };
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, sb, sizeof *sb, 0), (ssize_t)sizeof *sb);
	close(fd);
	ck_assert_int_eq(qbd_engine_open(&o, &e), 0);
	memset(&ioc, 0, sizeof ioc);
}

/* A FUA write retried at the version it already made (its answer was
 * lost) is acknowledged only once durable, as the first would have
 * been: its chunk's metadata block written and synced. */
START_TEST(fua_retry_is_durable)
{
	static uint8_t w[4096];
	struct eng_super sb;
	struct eng_meta m;
	uint64_t pos;

	fill(w, sizeof w, 62);
	ck_assert_int_eq(eng_write(62, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_flush(), 0);
	qbd_engine_close(e);
	open_counted(&sb);
	/* the first attempt, not durable yet (metadata in memory) */
	ck_assert_int_eq(eng_write(62, 0, w, sizeof w, 1, 2, 0), (int)sizeof w);
	ck_assert(disk_meta(62, &m, &pos));
	ck_assert_uint_eq(m.version, 1);
	memset(&ioc, 0, sizeof ioc);
	ck_assert_int_eq(eng_write(62, 0, w, sizeof w, 1, 2, QBD_ENGINE_F_FUA), (int)sizeof w);
	ck_assert_uint_eq(ioc.data_writes, 0);
	ck_assert_uint_ge(ioc.syncs, 1);
	ck_assert(disk_meta(62, &m, &pos));
	ck_assert_uint_eq(m.version, 2);
}
END_TEST

/* A write to an active chunk is one data write and nothing else; its
 * metadata block reaches the disk with the next FLUSH (one meta write
 * per dirty chunk, however many writes it took, then one sync) or FUA. */
START_TEST(meta_written_by_flush)
{
	static uint8_t w[4096];
	struct eng_super sb;
	struct eng_meta m;
	uint64_t pos;

	fill(w, sizeof w, 60);
	ck_assert_int_eq(eng_write(60, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_write(61, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_flush(), 0);
	qbd_engine_close(e);
	open_counted(&sb);
	/* the first write of each after the open activates it in the log */
	ck_assert_int_eq(eng_write(60, 0, w, sizeof w, 1, 2, 0), (int)sizeof w);
	ck_assert_int_eq(eng_write(61, 0, w, sizeof w, 1, 2, 0), (int)sizeof w);
	ck_assert_uint_eq(ioc.data_writes, 2);
	ck_assert_uint_eq(ioc.other_writes, 2);
	memset(&ioc, 0, sizeof ioc);
	for (unsigned i = 1; i < 8; i++)
		ck_assert_int_eq(eng_write(60, i * 4096, w, sizeof w, 1 + i, 2 + i, 0),
				 (int)sizeof w);
	ck_assert_int_eq(eng_write(61, 0, w, sizeof w, 2, 3, 0), (int)sizeof w);
	ck_assert_uint_eq(ioc.data_writes, 8);
	ck_assert_uint_eq(ioc.meta_writes, 0);
	ck_assert_uint_eq(ioc.syncs, 0);
	ck_assert(disk_meta(60, &m, &pos));
	ck_assert_uint_eq(m.version, 1);
	ck_assert_int_eq(eng_flush(), 0);
	ck_assert_uint_eq(ioc.meta_writes, 2);
	ck_assert_uint_eq(ioc.syncs, 1);
	ck_assert(disk_meta(60, &m, &pos));
	ck_assert_uint_eq(m.version, 9);
	ck_assert(disk_meta(61, &m, &pos));
	ck_assert_uint_eq(m.version, 3);
	/* nothing dirty: a FLUSH is one sync */
	ck_assert_int_eq(eng_flush(), 0);
	ck_assert_uint_eq(ioc.meta_writes, 2);
	ck_assert_uint_eq(ioc.syncs, 2);
	/* FUA: durable with its metadata when it completes */
	ck_assert_int_eq(eng_write(61, 4096, w, sizeof w, 3, 4, QBD_ENGINE_F_FUA),
			 (int)sizeof w);
	ck_assert(disk_meta(61, &m, &pos));
	ck_assert_uint_eq(m.version, 4);
	ck_assert_uint_eq(ioc.syncs, 3);
	ck_assert_uint_eq(ioc.other_writes, 0);
}
END_TEST

/* A crash after writes that no FLUSH covered: the version on disk is
 * the one last made durable, the blocks hold the newer data, and the
 * recovery flags the chunk SUSPECT (reported at the durable version for
 * the replication layer to reconcile). A chunk whose later writes did
 * not land is exactly its durable version and not flagged. */
START_TEST(crash_keeps_durable_version)
{
	static uint8_t a[8192], b[4096], r[8192];
	char crashed[128];
	uint64_t v;

	fill(a, sizeof a, 62);
	fill(b, sizeof b, 63);
	ck_assert_int_eq(eng_write(62, 0, a, sizeof a, 0, 1, 0), (int)sizeof a);
	ck_assert_int_eq(eng_write(63, 0, a, sizeof a, 0, 1, 0), (int)sizeof a);
	ck_assert_int_eq(eng_flush(), 0);
	ck_assert_int_eq(eng_write(62, 4096, b, sizeof b, 1, 2, 0), (int)sizeof b);
	ck_assert_int_eq(eng_write(62, 4096, b, sizeof b, 2, 3, 0), (int)sizeof b);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 62), 3);
	snprintf(crashed, sizeof crashed, "%s/crashed", dir);
	copy_store(crashed);
	qbd_engine_close(e);
	e = NULL;
	rename(crashed, path);
	open_store(0);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 62), 1);
	ck_assert_uint_eq(chunk_flags(62), QBD_ENGINE_CHUNK_SUSPECT);
	ck_assert_int_eq(eng_read(62, 0, r, sizeof r, &v), (int)sizeof r);
	ck_assert_uint_eq(v, 1);
	ck_assert_mem_eq(r, a, 4096);
	ck_assert_mem_eq(r + 4096, b, 4096);
	ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 63), 1);
	ck_assert_uint_eq(chunk_flags(63), 0);
}
END_TEST

/* The registered buffer pool: aligned buffers of its size, NULL when
 * all are taken; reads and writes through them (registered, fixed) and
 * through any other buffer give the same bytes. */
START_TEST(buffer_pool)
{
	struct qbd_engine_opts o = { .path = path, .buffers = 3, .buffer_size = 65536 };
	static uint8_t plain[65536];
	uint8_t *b[3];

	qbd_engine_close(e);
	ck_assert_int_eq(qbd_engine_open(&o, &e), 0);
	ck_assert_uint_eq(qbd_engine_buf_size(e), 65536);
	for (unsigned i = 0; i < 3; i++) {
		b[i] = qbd_engine_buf_get(e);
		ck_assert_ptr_nonnull(b[i]);
		ck_assert_uint_eq((uintptr_t)b[i] % 4096, 0);
		for (unsigned j = 0; j < i; j++)
			ck_assert_ptr_ne(b[i], b[j]);
	}
	ck_assert_ptr_null(qbd_engine_buf_get(e));
	fill(b[0], 65536, 70);
	ck_assert_int_eq(eng_write(70, 4096, b[0], 65536, 0, 1, 0), 65536);
	ck_assert_int_eq(eng_read(70, 4096, b[1], 65536, NULL), 65536);
	ck_assert_mem_eq(b[1], b[0], 65536);
	ck_assert_int_eq(eng_read(70, 4096, plain, sizeof plain, NULL), (int)sizeof plain);
	ck_assert_mem_eq(plain, b[0], 65536);
	/* across two of them (one registered region) */
	ck_assert_int_eq(eng_read(70, 4096, b[0] + 61440, 8192, NULL), 8192);
	ck_assert_mem_eq(b[0] + 61440, plain, 8192);
	qbd_engine_buf_put(e, b[1]);
	qbd_engine_buf_put(e, NULL);
	ck_assert_ptr_eq(qbd_engine_buf_get(e), b[1]);
	/* which buffers are the pool's (a caller that mixes them with its own) */
	for (unsigned i = 0; i < 3; i++) {
		ck_assert(qbd_engine_buf_owns(e, b[i]));
		ck_assert(qbd_engine_buf_owns(e, b[i] + 65535));
	}
	ck_assert(!qbd_engine_buf_owns(e, plain));
	ck_assert(!qbd_engine_buf_owns(e, NULL));
	for (unsigned i = 0; i < 3; i++)
		qbd_engine_buf_put(e, b[i]);
}
END_TEST

/* Plugged, requests wait for qbd_engine_unplug to reach the kernel: no
 * completion comes before it, all of them after. */
START_TEST(plug_holds_submission)
{
	static uint8_t w[3 * 4096], r[3][4096];
	struct qbd_engine_req q[3];
	struct cb_count *c = NULL;

	fill(w, sizeof w, 91);
	ck_assert_int_eq(eng_write(91, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	for (;;) { /* the engine's own I/O after the write (its log) done */
		struct pollfd p = { .fd = qbd_engine_event_fd(e), .events = POLLIN };

		if (poll(&p, 1, 50) == 0)
			break;
		qbd_engine_poll(e);
	}
	qbd_engine_plug(e);
	qbd_engine_plug(e); /* nested */
	for (unsigned i = 0; i < 3; i++) {
		q[i] = (struct qbd_engine_req){ .op = QBD_ENGINE_READ, .volume = VOL,
						.chunk = 91, .offset = i * 4096,
						.length = 4096, .buf = r[i] };
		if (i == 0)
			c = submit(&q[i]);
		else
			submit(&q[i]);
	}
	qbd_engine_unplug(e); /* still plugged once */
	{
		/* nothing submitted: nothing completes (the event fd stays
		 * quiet; qbd_engine_poll would submit what is queued) */
		struct pollfd p = { .fd = qbd_engine_event_fd(e), .events = POLLIN };

		ck_assert_int_eq(poll(&p, 1, 100), 0);
	}
	ck_assert_int_eq(c[0].calls + c[1].calls + c[2].calls, 0);
	qbd_engine_unplug(e);
	wait_done(c, 3);
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_int_eq(q[i].res, 4096);
		ck_assert_mem_eq(r[i], w + i * 4096, 4096);
	}
}
END_TEST

/* buffer_size 0: buffers of the store's chunk size; no pool: owns nothing. */
START_TEST(buffer_pool_chunk_size)
{
	struct qbd_engine_opts o = { .path = path, .buffers = 2 };
	struct qbd_engine_stats st;
	uint8_t *b;

	qbd_engine_close(e);
	ck_assert_int_eq(qbd_engine_open(&o, &e), 0);
	qbd_engine_stats(e, &st);
	ck_assert_uint_eq(qbd_engine_buf_size(e), st.chunk_size);
	b = qbd_engine_buf_get(e);
	ck_assert_ptr_nonnull(b);
	ck_assert(qbd_engine_buf_owns(e, b + st.chunk_size - 1));
	qbd_engine_buf_put(e, b);
	qbd_engine_close(e);
	o.buffers = 0;
	ck_assert_int_eq(qbd_engine_open(&o, &e), 0);
	ck_assert_ptr_null(qbd_engine_buf_get(e));
	ck_assert(!qbd_engine_buf_owns(e, path));
}
END_TEST

/* A request that completes without I/O (a read of a chunk never written)
 * makes the event fd readable at once: its callback runs in the next
 * qbd_engine_poll, as a loop that waits on the fd would call it. */
START_TEST(event_fd_wakes_for_immediate_completion)
{
	static uint8_t r[4096];
	struct qbd_engine_req q = { .op = QBD_ENGINE_READ, .volume = VOL, .chunk = 80,
				    .offset = 0, .length = sizeof r, .buf = r };
	struct pollfd p = { .fd = qbd_engine_event_fd(e), .events = POLLIN };
	struct cb_count *c;

	c = submit(&q);
	ck_assert_int_eq(c->calls, 0); /* never from qbd_engine_submit */
	ck_assert_int_eq(poll(&p, 1, 500), 1);
	qbd_engine_poll(e);
	ck_assert_int_eq(c->calls, 1);
	ck_assert_int_eq(q.res, (int)sizeof r);
	/* nothing left: the fd is not readable any more */
	ck_assert_int_eq(poll(&p, 1, 0), 0);
}
END_TEST

/* The engine's block checksum (AVX2 where the CPU has it) is XXH3-64. */
START_TEST(csum_is_xxh3)
{
	static uint8_t b[8192];

	for (unsigned i = 0; i < 64; i++) {
		fill(b, sizeof b, i);
		ck_assert_uint_eq(eng_csum(b + i, 4096), XXH3_64bits(b + i, 4096));
		ck_assert_uint_eq(eng_csum(b, i * 97), XXH3_64bits(b, i * 97));
	}
}
END_TEST

/* ---- tombstones ---- */

static int eng_volume_op(enum qbd_engine_op op, uint64_t volume, uint64_t epoch,
			 uint32_t flags, uint64_t *version)
{
	struct qbd_engine_req r = { .op = op, .volume = volume, .epoch = epoch,
				    .flags = flags };

	run(&r);
	if (version)
		*version = r.version;
	return r.res;
}

static int count_chunk(void *user, uint64_t chunk, uint64_t version, uint32_t flags)
{
	(void)chunk;
	(void)version;
	(void)flags;
	(*(unsigned *)user)++;
	return 0;
}

static unsigned volume_chunks(uint64_t volume)
{
	unsigned n = 0;

	ck_assert_int_eq(qbd_engine_for_each_chunk(e, volume, count_chunk, &n), 0);
	return n;
}

/* The tombstone of a volume at the store's promised epoch: its chunks
 * go, every PROMISE is refused with EIDRM at any epoch, and this holds
 * across a clean reopen and in the image of a power cut right after it
 * completed (no clean close: it was durable when acknowledged). One
 * below the promised epoch is refused and changes nothing. */
START_TEST(tombstone_refuses_every_promise_and_persists)
{
	static uint8_t w[8192];
	char crashed[128];
	uint64_t ep, ver;

	fill(w, sizeof w, 21);
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 7, 0, NULL), 0);
	ck_assert_int_eq(eng_write(3, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	ck_assert_int_eq(eng_flush(), 0);
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_TOMBSTONE, VOL, 6, 0, &ver), -EPERM);
	ck_assert_uint_eq(ver, 7);
	ck_assert(!qbd_engine_tombstoned(e, VOL, &ep));
	ck_assert_uint_eq(ep, 0);
	ck_assert_uint_eq(qbd_engine_promised(e, VOL), 7);
	ck_assert_uint_eq(volume_chunks(VOL), 1);

	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_TOMBSTONE, VOL, 7, 0, &ver), 0);
	ck_assert_uint_eq(ver, 7);
	snprintf(crashed, sizeof crashed, "%s/crashed", dir);
	copy_store(crashed);
	for (int pass = 0; pass < 3; pass++) {
		ck_assert_msg(qbd_engine_tombstoned(e, VOL, &ep), "pass %d: no tombstone", pass);
		ck_assert_uint_eq(ep, 7);
		ck_assert_uint_eq(qbd_engine_promised(e, VOL), 0);
		ck_assert_uint_eq(volume_chunks(VOL), 0);
		ck_assert_uint_eq(qbd_engine_chunk_version(e, VOL, 3), 0);
		ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 8, 0, &ver), -EIDRM);
		ck_assert_uint_eq(ver, 7);
		ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 1000, 0, NULL), -EIDRM);
		ck_assert(!qbd_engine_tombstoned(e, OTHER_VOL, NULL));
		qbd_engine_close(e);
		if (pass == 0) {
			open_store(0);          /* a clean reopen */
		} else if (pass == 1) {
			rename(crashed, path);  /* the power cut's image */
			open_store(0);
		}
	}
	e = NULL;
	open_store(0);
}
END_TEST

/* A re-add (PROMISE with F_READD) clears a tombstone only at an epoch
 * not below the tombstone's, durably; a plain PROMISE never does. A volume
 * with no entry can be given a tombstone; DELETE_VOLUME drops one. */
START_TEST(readd_clears_tombstone_only_at_or_above_its_epoch)
{
	uint64_t ep, ver;

	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_TOMBSTONE, VOL, 5, 0, &ver), 0);
	ck_assert_uint_eq(ver, 5);
	ck_assert(qbd_engine_tombstoned(e, VOL, &ep));
	ck_assert_uint_eq(ep, 5);
	/* a higher TOMBSTONE raises it; a lower one is refused */
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_TOMBSTONE, VOL, 9, 0, &ver), 0);
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_TOMBSTONE, VOL, 8, 0, &ver), -EPERM);
	ck_assert_uint_eq(ver, 9);
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 10, 0, NULL), -EIDRM);
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 8, QBD_ENGINE_F_READD, &ver),
			 -EPERM);
	ck_assert_uint_eq(ver, 9);
	ck_assert(qbd_engine_tombstoned(e, VOL, NULL));
	/* at the tombstone's epoch: the writer that removed the node */
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 9, QBD_ENGINE_F_READD, &ver),
			 0);
	ck_assert_uint_eq(ver, 9);
	ck_assert(!qbd_engine_tombstoned(e, VOL, NULL));
	ck_assert_uint_eq(qbd_engine_promised(e, VOL), 9);
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 10, 0, &ver), 0);
	qbd_engine_close(e);
	open_store(0);
	ck_assert(!qbd_engine_tombstoned(e, VOL, NULL));
	ck_assert_uint_eq(qbd_engine_promised(e, VOL), 10);
	/* a plain PROMISE again; F_READD without a tombstone is one too */
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 11, 0, &ver), 0);
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 12, QBD_ENGINE_F_READD, &ver),
			 0);
	ck_assert_uint_eq(qbd_engine_promised(e, VOL), 12);
	/* DELETE_VOLUME drops a tombstone (the volume is gone) */
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_TOMBSTONE, VOL, 12, 0, NULL), 0);
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_DELETE_VOLUME, VOL, 0, 0, NULL), 0);
	ck_assert(!qbd_engine_tombstoned(e, VOL, NULL));
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_PROMISE, VOL, 1, 0, NULL), 0);
}
END_TEST

/* A chunk with a request in the engine when the tombstone runs stays
 * (-EBUSY) while the tombstone stands; a TOMBSTONE again frees it. The
 * volume's listing says tombstone, with no promise. */
START_TEST(tombstone_of_busy_volume_stands_and_frees_later)
{
	static uint8_t w[4096];
	struct qbd_engine_req wr = { .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = 2,
				     .length = sizeof w, .buf = w, .new_version = 1 };
	struct qbd_engine_req t = { .op = QBD_ENGINE_TOMBSTONE, .volume = VOL, .epoch = 3 };
	struct qbd_engine_volume *v;
	struct cb_count *c;
	size_t n;

	fill(w, sizeof w, 5);
	ck_assert_int_eq(eng_write(1, 0, w, sizeof w, 0, 1, 0), (int)sizeof w);
	c = submit(&wr);
	submit(&t);
	wait_done(c, 2);
	ck_assert_int_eq(wr.res, (int)sizeof w);
	ck_assert_int_eq(t.res, -EBUSY);
	ck_assert(qbd_engine_tombstoned(e, VOL, NULL));
	ck_assert_uint_eq(volume_chunks(VOL), 1);
	ck_assert_int_eq(eng_volume_op(QBD_ENGINE_TOMBSTONE, VOL, 3, 0, NULL), 0);
	ck_assert_uint_eq(volume_chunks(VOL), 0);
	ck_assert_int_eq(qbd_engine_volumes(e, &v, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(v[0].volume, VOL);
	ck_assert(v[0].tombstone);
	ck_assert_uint_eq(v[0].tombstone_epoch, 3);
	ck_assert_uint_eq(v[0].promised, 0);
	ck_assert_uint_eq(v[0].chunks, 0);
	free(v);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("engine");
	TCase *t = tcase_create("engine");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, roundtrip_aligned_and_odd);
	tcase_add_test(t, versions_checked);
	tcase_add_test(t, survives_reopen);
	tcase_add_test(t, corruption_detected);
	tcase_add_test(t, zero_and_delete);
	tcase_add_test(t, full_store_enospc);
	tcase_add_test(t, pipelined_writes_in_order);
	tcase_add_test(t, invalid_requests);
	tcase_add_test(t, reads_ordered_with_writes);
	tcase_add_test(t, zero_flush_promise);
	tcase_add_test(t, small_ring_queues);
	tcase_add_test(t, bitmap_of_written_blocks);
	tcase_add_test(t, zero_to_version_0_allocates_nothing);
	tcase_add_test(t, meta_written_by_flush);
	tcase_add_test(t, fua_retry_is_durable);
	tcase_add_test(t, crash_keeps_durable_version);
	tcase_add_test(t, buffer_pool);
	tcase_add_test(t, buffer_pool_chunk_size);
	tcase_add_test(t, plug_holds_submission);
	tcase_add_test(t, csum_is_xxh3);
	tcase_add_test(t, event_fd_wakes_for_immediate_completion);
	suite_add_tcase(s, t);
	t = tcase_create("resync");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, resync_replaces_other_version);
	tcase_add_test(t, resync_fresh_chunk);
	tcase_add_test(t, resync_idempotent);
	tcase_add_test(t, resync_zero_blocks_are_holes);
	tcase_add_test(t, resync_invalid);
	tcase_add_test(t, resync_to_version_zero);
	tcase_add_test(t, resync_ordered);
	suite_add_tcase(s, t);
	t = tcase_create("flags");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, damaged_set_by_read_cleared_by_repair);
	tcase_add_test(t, damaged_cleared_by_resync_dropped_by_delete);
	tcase_add_test(t, recovery_flags_suspect_until_resync);
	tcase_add_test(t, damaged_persists);
	tcase_add_test(t, old_format_refused);
	suite_add_tcase(s, t);
	t = tcase_create("space");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, scrub_finds_bad_block);
	tcase_add_test(t, scrub_ordered_after_write);
	tcase_add_test(t, next_chunk_walks_every_chunk);
	tcase_add_test(t, held_follows_writes_and_trims);
	tcase_add_test(t, volumes_lists_what_the_store_holds);
	tcase_add_test(t, no_data_io_for_zeroing_and_holes);
	tcase_add_test(t, full_filesystem_enospc);
	suite_add_tcase(s, t);
	t = tcase_create("tombstone");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, tombstone_refuses_every_promise_and_persists);
	tcase_add_test(t, readd_clears_tombstone_only_at_or_above_its_epoch);
	tcase_add_test(t, tombstone_of_busy_volume_stands_and_frees_later);
	suite_add_tcase(s, t);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
