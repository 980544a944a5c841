/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Microbenchmark of the engine's write path: 4 KiB random writes at a
 * queue depth, through the engine API, on a store file; and the same
 * writes issued straight to the file through io_uring with O_DIRECT
 * ("raw"), for the ratio. Every chunk of the working set is written once
 * first, so the run measures the steady state (chunks allocated and
 * active in the activity log).
 *
 *   engine-write STORE [--qd N] [--ios N] [--chunks N] [--raw] [--count]
 *
 * Prints IOPS and the mean latency; --count also the I/Os the engine
 * issued per write (through its io_hook). Build: make bench-bins.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "engine/engine.h"

#define CHUNK QBD_ENGINE_DEFAULT_CHUNK

struct slot {
	struct qbd_engine_req req;
	uint64_t t0;
	int busy;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static struct qbd_engine *e;
static uint64_t io_count[4];      /* by qbd_engine_io_kind, while measuring */
static int counting;

static void count_hook(void *user, const struct qbd_engine_io *io)
{
	(void)user;
	if (counting && !io->done)
		io_count[io->kind]++;
}
static uint64_t *ver, *busy_chunk;
static unsigned inflight;
static uint64_t lat_sum, completed;

static void cb(struct qbd_engine_req *r)
{
	struct slot *s = r->user;

	if (r->res < 0) {
		fprintf(stderr, "write: %s\n", strerror(-r->res));
		exit(1);
	}
	lat_sum += now_ns() - s->t0;
	completed++;
	busy_chunk[r->chunk] = 0;
	s->busy = 0;
	inflight--;
}

static void submit(struct slot *s, unsigned nch, uint8_t *buf, uint64_t chunk, uint32_t off)
{
	struct qbd_engine_req *r = &s->req;

	memset(r, 0, sizeof *r);
	r->op = QBD_ENGINE_WRITE;
	r->volume = 1;
	r->chunk = chunk;
	r->offset = off;
	r->length = 4096;
	r->buf = buf;
	r->expected_version = ver[chunk];
	r->new_version = ++ver[chunk];
	r->cb = cb;
	r->user = s;
	s->t0 = now_ns();
	s->busy = 1;
	busy_chunk[chunk] = 1;
	inflight++;
	(void)nch;
	qbd_engine_submit(e, r);
}

static void pump(void)
{
	struct pollfd p = { .fd = qbd_engine_event_fd(e), .events = POLLIN };

	poll(&p, 1, 1000);
	qbd_engine_poll(e);
}

static int run_engine(const char *path, unsigned qd, unsigned ios, unsigned nch, int count)
{
	struct qbd_engine_opts o = { .path = path, .create_size = (uint64_t)(nch + 16) * (CHUNK + 4096) + (8u << 20) };

	if (count)
		o.io_hook = count_hook;
	struct slot *slots = calloc(qd, sizeof *slots);
	uint8_t *buf;
	uint64_t t0;

	if (qbd_engine_open(&o, &e) < 0)
		return 1;
	ver = calloc(nch, sizeof *ver);
	busy_chunk = calloc(nch, sizeof *busy_chunk);
	if (posix_memalign((void **)&buf, 4096, 4096))
		return 1;
	memset(buf, 0xa5, 4096);
	/* warm-up: every chunk written (allocated, active) */
	for (unsigned c = 0; c < nch; c++) {
		submit(&slots[0], nch, buf, c, 0);
		while (inflight)
			pump();
	}
	lat_sum = completed = 0;
	counting = 1;
	t0 = now_ns();
	for (unsigned n = 0; n < ios;) {
		for (unsigned i = 0; i < qd && n < ios; i++) {
			uint64_t c;

			if (slots[i].busy)
				continue;
			do
				c = rnd() % nch;
			while (busy_chunk[c]);
			submit(&slots[i], nch, buf, c, (uint32_t)(rnd() % (CHUNK / 4096)) * 4096);
			n++;
		}
		pump();
	}
	while (inflight)
		pump();
	{
		double s = (double)(now_ns() - t0) / 1e9;
		printf("engine qd %u: %.0f IOPS, mean latency %.1f us\n", qd,
		       (double)completed / s, (double)lat_sum / (double)completed / 1e3);
		if (count)
			printf("  per write: %.3f writes, %.3f zeroings, %.3f syncs issued\n",
			       (double)io_count[QBD_ENGINE_IO_WRITE] / (double)completed,
			       (double)io_count[QBD_ENGINE_IO_ZERO] / (double)completed,
			       (double)io_count[QBD_ENGINE_IO_SYNC] / (double)completed);
	}
	qbd_engine_close(e);
	return 0;
}

/* The same writes straight to the file (data only). */
static int run_raw(const char *path, unsigned qd, unsigned ios, unsigned nch)
{
	struct io_uring ring;
	uint64_t span = (uint64_t)nch * CHUNK, t0, *start = calloc(qd, sizeof *start);
	uint8_t *buf;
	int fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0600);
	unsigned in = 0, done = 0, sent = 0;

	if (fd == -1 || ftruncate(fd, (off_t)span) == -1 || posix_memalign((void **)&buf, 4096, 4096))
		return 1;
	memset(buf, 0x5a, 4096);
	for (uint64_t off = 0; off < span; off += CHUNK) /* allocate, as the engine's warm-up */
		if (pwrite(fd, buf, 4096, (off_t)off) != 4096)
			return 1;
	fsync(fd);
	io_uring_queue_init(qd * 2, &ring, 0);
	lat_sum = 0;
	t0 = now_ns();
	while (done < ios) {
		while (in < qd && sent < ios) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			unsigned i;

			for (i = 0; start[i]; i++)
				;
			start[i] = now_ns();
			io_uring_prep_write(sqe, fd, buf, 4096, (rnd() % (span / 4096)) * 4096);
			io_uring_sqe_set_data(sqe, (void *)(uintptr_t)i);
			in++;
			sent++;
		}
		io_uring_submit(&ring);
		struct io_uring_cqe *cqe;
		io_uring_wait_cqe(&ring, &cqe);
		unsigned i = (unsigned)(uintptr_t)io_uring_cqe_get_data(cqe);
		if (cqe->res != 4096) {
			fprintf(stderr, "raw write: %d\n", cqe->res);
			return 1;
		}
		lat_sum += now_ns() - start[i];
		start[i] = 0;
		io_uring_cqe_seen(&ring, cqe);
		in--;
		done++;
	}
	{
		double s = (double)(now_ns() - t0) / 1e9;
		printf("raw    qd %u: %.0f IOPS, mean latency %.1f us\n", qd, (double)done / s,
		       (double)lat_sum / (double)done / 1e3);
	}
	io_uring_queue_exit(&ring);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned qd = 1, ios = 20000, nch = 512;
	int raw = 0, count = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s STORE [--qd N] [--ios N] [--chunks N] [--raw] [--count]\n",
			argv[0]);
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--qd") && i + 1 < argc)
			qd = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--ios") && i + 1 < argc)
			ios = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--chunks") && i + 1 < argc)
			nch = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--raw"))
			raw = 1;
		else if (!strcmp(argv[i], "--count"))
			count = 1;
	}
	qbd_log_level_current = QBD_LOG_WARN;
	return raw ? run_raw(argv[1], qd, ios, nch) : run_engine(argv[1], qd, ios, nch, count);
}
