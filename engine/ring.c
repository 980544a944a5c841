/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The io_uring ring: setup, a request's step issued as SQEs (all or
 * none; a request that finds too few parks until the next poll),
 * completions reaped and handed to eng_step_done, callbacks run,
 * plugging, and the pool of registered buffers (qbd_engine_buf_get).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

/*
 * The ring, its eventfd, the store as registered file 0 and the buffer
 * pool as registered buffer 0 (each only where the kernel allows it:
 * without, the same requests go the plain way).
 *
 * The ring is single-issuer with deferred task work where the kernel
 * has it (6.1): completions are not posted from an interrupt of this
 * thread each, but in a batch when qbd_engine_poll asks for them (the
 * eventfd still fires when some are waiting). Only the thread that
 * opened the engine may then use it, which is the engine's rule anyway.
 * Measured against the ring's own fd as the event fd (no eventfd read,
 * but no deferred task work either: such a ring is not readable through
 * its fd until asked): about 74,000 against 66,000 4 KiB reads per
 * second at queue depth 32 where fio did 97,000, for a syscall more per
 * wake-up at queue depth 1. COOP_TASKRUN without it: 62,000.
 */
int eng_ring_init(struct qbd_engine *e, unsigned qd)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN |
					      IORING_SETUP_TASKRUN_FLAG };
	struct iovec iov;
	int r;

	r = io_uring_queue_init_params(qd, &e->ring, &p);
	e->taskrun_flag = r == 0;
	if (r == -EINVAL) {
		memset(&p, 0, sizeof p);
		p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
		r = io_uring_queue_init_params(qd, &e->ring, &p);
	}
	e->defer_taskrun = r == 0;
	if (r == -EINVAL)
		r = io_uring_queue_init(qd, &e->ring, 0);
	if (r < 0) {
		qbd_err("engine", "io_uring_queue_init: %s", strerror(-r));
		return r;
	}
	e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (e->efd == -1 || io_uring_register_eventfd(&e->ring, e->efd) < 0) {
		r = e->efd == -1 ? -errno : -EIO;
		io_uring_queue_exit(&e->ring);
		return r;
	}
	e->fixed_file = io_uring_register_files(&e->ring, &e->fd, 1) == 0;
	if (e->bufs) {
		iov.iov_base = e->bufs;
		iov.iov_len = e->buf_size * e->buf_count;
		r = io_uring_register_buffers(&e->ring, &iov, 1);
		if (r < 0) {
			qbd_warn("engine", "io_uring_register_buffers: %s (buffers not registered)",
				 strerror(-r));
			e->bufs_registered = false;
		} else {
			e->bufs_registered = true;
		}
	}
	return 0;
}

/*
 * Memory for the buffer pool: 2 MiB aligned and backed by huge pages
 * where the kernel gives them (MADV_HUGEPAGE), so that the ring holds
 * the registered region as 2 MiB pieces and a 1 MiB transfer in it is a
 * single segment for the device (of 4 KiB pages it is 256, more than a
 * virtio disk takes in one request). NULL if out of memory.
 */
static uint8_t *bufs_map(size_t len, size_t *maplen)
{
	size_t huge = 2u << 20, want = QBD_ALIGN_UP(len, huge);
	uint8_t *p = mmap(NULL, want + huge, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)QBD_ALIGN_UP((uintptr_t)p, huge);
	if (a > p)
		munmap(p, (size_t)(a - p));
	munmap(a + want, (size_t)(p + want + huge - (a + want)));
	madvise(a, want, MADV_HUGEPAGE); /* a hint: 4 KiB pages work too */
	memset(a, 0, want);
	*maplen = want;
	return a;
}

/* The buffer pool of qbd_engine_opts.buffers (not registered yet). */
int eng_bufs_init(struct qbd_engine *e, unsigned n, uint32_t size)
{
	if (n == 0)
		return 0;
	if (size == 0 || size % B)
		return -EINVAL;
	e->buf_size = size;
	e->buf_count = n;
	e->buf_free = calloc(n, sizeof *e->buf_free);
	if (!e->buf_free)
		return -ENOMEM;
	e->bufs = bufs_map((size_t)n * size, &e->bufs_len);
	if (!e->bufs)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		e->buf_free[i] = e->bufs + (size_t)(n - 1 - i) * size;
	e->buf_nfree = n;
	return 0;
}

void *qbd_engine_buf_get(struct qbd_engine *e)
{
	return e->buf_nfree ? e->buf_free[--e->buf_nfree] : NULL;
}

void qbd_engine_buf_put(struct qbd_engine *e, void *buf)
{
	if (!buf)
		return;
	assert(e->buf_nfree < e->buf_count);
	e->buf_free[e->buf_nfree++] = buf;
}

uint32_t qbd_engine_buf_size(const struct qbd_engine *e)
{
	return (uint32_t)e->buf_size;
}

bool qbd_engine_buf_owns(const struct qbd_engine *e, const void *buf)
{
	const uint8_t *b = buf;

	return e->bufs && b >= e->bufs && b < e->bufs + e->buf_size * e->buf_count;
}

/* Registered buffer index of [buf, buf + len), or -1. */
static int buf_index(const struct qbd_engine *e, const uint8_t *buf, size_t len)
{
	if (!e->bufs_registered || buf < e->bufs ||
	    buf + len > e->bufs + e->buf_size * e->buf_count)
		return -1;
	return 0;
}

/* A callback is queued: inside qbd_engine_poll it runs before poll
 * returns; outside (from qbd_engine_submit), the eventfd must fire, once
 * until the next poll (no syscall per request). */
void eng_wake(struct qbd_engine *e)
{
	uint64_t one = 1;

	if (e->in_poll || e->woken)
		return;
	e->woken = true;
	if (write(e->efd, &one, sizeof one) == -1 && errno != EAGAIN)
		qbd_warn("engine", "eventfd: %m");
}

void eng_ring_submit(struct qbd_engine *e)
{
	int r;

	if (!e->pending_sqes)
		return;
	/* With deferred task work, the same syscall posts the completions
	 * waiting (no extra one). */
	r = e->defer_taskrun ? io_uring_submit_and_get_events(&e->ring)
			     : io_uring_submit(&e->ring);
	if (r < 0)
		qbd_warn("engine", "io_uring_submit: %s", strerror(-r));
	e->pending_sqes = 0;
}

static void req_park(struct qbd_engine *e, struct qbd_engine_req *r)
{
	reqq_push(&e->retry, r);
}

static bool step_is_data(int step)
{
	return step == ST_READ_DATA || step == ST_RMW_READ || step == ST_WRITE_DATA ||
	       step == ST_SCRUB_READ;
}

static unsigned step_sqes(const struct eng_priv *p)
{
	if (step_is_data(p->step))
		return p->n_ext;
	if (p->step == ST_ZERO_DATA || p->step == ST_UNDO_ZERO || p->step == ST_RESERVE)
		return p->zx_ext;
	return 1;
}

/* Count the step's I/O (qbd_engine_stats). */
static void step_count(struct qbd_engine *e, const struct eng_priv *p, unsigned n)
{
	uint64_t bytes = 0;

	for (unsigned i = 0; step_is_data(p->step) && i < p->n_ext; i++)
		bytes += (uint64_t)p->ext_n[i] * B;
	switch (p->step) {
	case ST_READ_DATA:
	case ST_RMW_READ:
	case ST_SCRUB_READ:
		e->n_data_reads += n;
		e->n_data_read_bytes += bytes;
		break;
	case ST_WRITE_DATA:
		e->n_data_writes += n;
		e->n_data_write_bytes += bytes;
		break;
	case ST_WRITE_META:
	case ST_PROMISE_WRITE:
	case ST_AL_WRITE:
		e->n_meta_writes += n;
		break;
	case ST_ZERO_DATA:
	case ST_SLOT_ZERO:
	case ST_UNDO_ZERO:
		e->n_zeroings += n;
		break;
	case ST_FSYNC:
	case ST_SLOT_SYNC:
		e->n_syncs += n;
		break;
	}
}

/* Report the step's I/Os to io_hook, issued or done. */
static void step_hook(struct qbd_engine *e, struct qbd_engine_req *r, bool done, int res)
{
	struct eng_priv *p = priv(r);
	uint64_t cs = e->sb.chunk_size;

	for (unsigned i = 0; i < p->io_n; i++) {
		uint64_t id = p->io_id + i;

		switch (p->step) {
		case ST_WRITE_DATA:
			eng_hook(e, QBD_ENGINE_IO_WRITE, done, res, id,
			     data_pos(e, p->ch->slot) + (uint64_t)p->ext_b[i] * B,
			     (uint64_t)p->ext_n[i] * B,
			     p->bounce + (size_t)(p->ext_b[i] - p->b0) * B, false);
			break;
		case ST_WRITE_META:
			eng_hook(e, QBD_ENGINE_IO_WRITE, done, res, id, meta_pos(e, p->ch->slot), B,
			     p->bounce, false);
			break;
		case ST_PROMISE_WRITE:
			eng_hook(e, QBD_ENGINE_IO_WRITE, done, res, id,
			     ENG_PROMISE_OFF + (uint64_t)p->b0 * B, B, p->bounce, false);
			break;
		case ST_AL_WRITE:
			eng_hook(e, QBD_ENGINE_IO_WRITE, done, res, id,
			     e->sb.al_off + (uint64_t)e->al_block * B, B, e->al_io, e->al_dsync);
			break;
		case ST_ZERO_DATA:
		case ST_UNDO_ZERO:
			eng_hook(e, QBD_ENGINE_IO_ZERO, done, res, id,
			     data_pos(e, p->ch->slot) + (uint64_t)p->zx_b[i] * B,
			     (uint64_t)p->zx_n[i] * B, NULL, false);
			break;
		case ST_SLOT_ZERO:
			eng_hook(e, QBD_ENGINE_IO_ZERO, done, res, id, data_pos(e, p->ch->slot), cs,
			     NULL, false);
			break;
		case ST_FSYNC:
		case ST_SLOT_SYNC:
			eng_hook(e, QBD_ENGINE_IO_SYNC, done, res, id, 0, 0, NULL, false);
			break;
		default:
			break;
		}
	}
}

/* Prepare SQE i of the request's current step; fd is the store's (0
 * when it is registered). */
static void step_prep(struct qbd_engine *e, struct qbd_engine_req *r,
		      struct io_uring_sqe *sqe, unsigned i, int fd)
{
	struct eng_priv *p = priv(r);
	bool data = step_is_data(p->step);
	uint8_t *buf = data ? p->bounce + (size_t)(p->ext_b[i] - p->b0) * B : NULL;
	uint64_t off = data ? data_pos(e, p->ch->slot) + (uint64_t)p->ext_b[i] * B : 0;
	int bi = data ? buf_index(e, buf, p->ext_n[i] * B) : -1;

	switch (p->step) {
	case ST_READ_DATA:
	case ST_RMW_READ:
	case ST_SCRUB_READ:
		if (bi >= 0)
			io_uring_prep_read_fixed(sqe, fd, buf, p->ext_n[i] * B, off, bi);
		else
			io_uring_prep_read(sqe, fd, buf, p->ext_n[i] * B, off);
		break;
	case ST_WRITE_DATA:
		if (bi >= 0)
			io_uring_prep_write_fixed(sqe, fd, buf, p->ext_n[i] * B, off, bi);
		else
			io_uring_prep_write(sqe, fd, buf, p->ext_n[i] * B, off);
		break;
	case ST_WRITE_META:
		io_uring_prep_write(sqe, fd, p->bounce, B, meta_pos(e, p->ch->slot));
		break;
	case ST_FSYNC:
	case ST_SLOT_SYNC:
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		break;
	case ST_PROMISE_WRITE:
		/* bounce holds block b0 of the promise table */
		io_uring_prep_write(sqe, fd, p->bounce, B,
				    ENG_PROMISE_OFF + (uint64_t)p->b0 * B);
		break;
	case ST_AL_WRITE:
		io_uring_prep_write(sqe, fd, e->al_io, B,
				    e->sb.al_off + (uint64_t)e->al_block * B);
		if (e->al_dsync)
			sqe->rw_flags = RWF_DSYNC;
		break;
	case ST_RESERVE:
		io_uring_prep_fallocate(sqe, fd, FALLOC_FL_KEEP_SIZE,
					(off_t)(data_pos(e, p->ch->slot) + (uint64_t)p->zx_b[i] * B),
					(off_t)p->zx_n[i] * B);
		break;
	case ST_ZERO_DATA:
	case ST_UNDO_ZERO:
		io_uring_prep_fallocate(sqe, fd, eng_zero_mode(e),
					(off_t)(data_pos(e, p->ch->slot) + (uint64_t)p->zx_b[i] * B),
					(off_t)p->zx_n[i] * B);
		break;
	case ST_SLOT_ZERO:
		io_uring_prep_fallocate(sqe, fd, eng_zero_mode(e),
					(off_t)data_pos(e, p->ch->slot),
					(off_t)e->sb.chunk_size);
		break;
	}
	if (e->fixed_file)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, r);
}

/* Issue the SQEs of the request's current step (all or none); with too
 * few free SQEs, park the request until the next qbd_engine_poll. */
static void step_issue(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);
	unsigned n = step_sqes(p);

	/* More SQEs in flight than the CQ holds would overflow it, and
	 * overflowed CQEs raise no eventfd wake-up later: wait instead,
	 * behind the requests already waiting. */
	if (e->inflight + n > e->ring.cq.ring_entries || (!qbd_queue_empty(&e->retry) && !e->retrying)) {
		req_park(e, r);
		return;
	}
	if (io_uring_sq_space_left(&e->ring) < n)
		eng_ring_submit(e);
	if (io_uring_sq_space_left(&e->ring) < n) {
		req_park(e, r);
		return;
	}
	e->inflight += n;
	p->pending = n;
	p->got = 0;
	p->err = 0;
	p->io_id = e->io_seq + 1;
	p->io_n = n;
	e->io_seq += n;
	if (p->step == ST_FSYNC || p->step == ST_SLOT_SYNC)
		p->sync_gen = ++e->sync_issued;
	if (e->io_hook)
		step_hook(e, r, false, 0);
	step_count(e, p, n);
	for (unsigned i = 0; i < n; i++) {
		/* the store is registered file 0 when the kernel allows it */
		step_prep(e, r, io_uring_get_sqe(&e->ring), i, e->fixed_file ? 0 : e->fd);
		e->pending_sqes++;
	}
}

void eng_step_go(struct qbd_engine *e, struct qbd_engine_req *r, enum eng_step step)
{
	priv(r)->step = (int)step;
	step_issue(e, r);
}

/* Bytes the current step must transfer (see internal.h). */
uint32_t eng_step_bytes(const struct eng_priv *p)
{
	uint32_t n = 0;

	switch (p->step) {
	case ST_READ_DATA:
	case ST_RMW_READ:
	case ST_WRITE_DATA:
	case ST_SCRUB_READ:
		for (unsigned i = 0; i < p->n_ext; i++)
			n += p->ext_n[i] * B;
		return n;
	case ST_FSYNC:
	case ST_SLOT_SYNC:
	case ST_ZERO_DATA:
	case ST_SLOT_ZERO:
	case ST_UNDO_ZERO:
	case ST_RESERVE:
		return 0;
	default:
		return B;
	}
}

/* The step's SQEs are all complete: report them, note a sync that
 * completed (chunks may leave the activity log), move the request on. */
static void step_complete(struct qbd_engine *e, struct qbd_engine_req *r)
{
	struct eng_priv *p = priv(r);

	if (e->io_hook)
		step_hook(e, r, true, p->err < 0 ? p->err : 0);
	if ((p->step == ST_FSYNC || p->step == ST_SLOT_SYNC) && p->err == 0 &&
	    p->sync_gen > e->sync_done) {
		e->sync_done = p->sync_gen;
		eng_al_trim(e);
	}
	eng_step_done(e, r);
}

static void cqe_handle(struct qbd_engine *e, struct qbd_engine_req *r, int res)
{
	struct eng_priv *p = priv(r);

	if (e->fault_eio && (p->step == ST_READ_DATA || p->step == ST_WRITE_DATA ||
			     p->step == ST_RMW_READ) &&
	    r->chunk >= e->fault_lo && r->chunk <= e->fault_hi)
		res = -EIO;
	if (res < 0) {
		if (!p->err)
			p->err = res;
	} else {
		p->got += (uint32_t)res;
	}
	if (--p->pending == 0)
		step_complete(e, r);
}

/* Run the callbacks of the requests done (they may submit more: queued
 * until the caller submits). */
static void run_callbacks(struct qbd_engine *e)
{
	struct qbd_engine_req *d;

	while ((d = reqq_pop(&e->done))) {
		e->busy--;
		d->cb(d);
	}
}

/* Reap the completions waiting, running callbacks at once: what they
 * submit is queued, and goes out in groups of ENG_SUBMIT_BATCH, or at
 * once after a large transfer (its checksums took a while), so that
 * the device is not left waiting for the whole pass (a pass of 16
 * completions takes 50 to 100 us). Returns how many were reaped. */
static unsigned poll_reap(struct qbd_engine *e)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&e->ring, head, cqe) {
		struct qbd_engine_req *r = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		n++;
		e->inflight--;
		io_uring_cqe_seen(&e->ring, cqe); /* free the slot first */
		cqe_handle(e, r, res);
		run_callbacks(e);
		if (e->pending_sqes >= ENG_SUBMIT_BATCH ||
		    (res >= (int)ENG_BIG_IO && e->pending_sqes))
			eng_ring_submit(e);
	}
	return n;
}

/* Parked requests get another chance at SQEs, in order. */
static void poll_retry(struct qbd_engine *e)
{
	struct qbd_queue parked = qbd_queue_take(&e->retry);
	struct qbd_engine_req *r;

	e->retrying = true;
	while ((r = reqq_pop(&parked)))
		step_issue(e, r);
	e->retrying = false;
}

void qbd_engine_poll(struct qbd_engine *e)
{
	uint64_t x;
	bool get;

	if (read(e->efd, &x, sizeof x) == -1 && errno != EAGAIN)
		qbd_warn("engine", "eventfd read: %m");
	e->woken = false;
	e->in_poll = true;
	/* With deferred task work, completions are posted by a syscall:
	 * here, then the submission of each pass (or here again). */
	get = e->defer_taskrun;
	for (int round = 0; round < 64; round++) {
		unsigned n;
		int err;

		if (get && (err = io_uring_get_events(&e->ring)) < 0)
			qbd_warn("engine", "io_uring_get_events: %s", strerror(-err));
		n = poll_reap(e);
		poll_retry(e);
		run_callbacks(e);
		/* Ask again only for completions that came during the pass
		 * (the kernel flags them in the SQ ring): at queue depth 1
		 * this saves a syscall per request. */
		get = e->defer_taskrun && !e->pending_sqes &&
		      (!e->taskrun_flag ||
		       (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_TASKRUN));
		eng_ring_submit(e);
		if (n == 0 && qbd_queue_empty(&e->done))
			break;
	}
	e->in_poll = false;
	if (!qbd_queue_empty(&e->done)) { /* more than the passes allowed: come back */
		e->woken = false;
		eng_wake(e);
	}
}

void qbd_engine_plug(struct qbd_engine *e)
{
	e->plugged++;
}

void qbd_engine_unplug(struct qbd_engine *e)
{
	if (!e->plugged || --e->plugged)
		return;
	if (!e->in_poll)
		eng_ring_submit(e);
}
