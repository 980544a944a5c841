/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqbd: the writer side of a qbd volume. Opens through etcd, talks the
 * wire protocol to every replica over nonblocking TCP, and lets the quorum
 * core (replicator/core) decide versions, targets and outcomes. No thread
 * and no loop of its own: everything happens in qbd_process, driven by the
 * epoll fd from qbd_get_fd. See internal.h for ownership.
 *
 * This file: completions, the core's callbacks, ticks and qbd_process,
 * submission, plug/unplug, the accessors and the synchronous wrappers.
 * A replica's connection is in conn.c; opening and closing in open.c.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/client/internal.h"

#define COMP "client"
#define MAX_IO (32u << 20)

#define IO_NEXT(io) ((io)->priv[0])

/* ---- completions ---- */

static void io_queue_done(struct qbd_volume *v, struct qbd_io *io, int res)
{
	uint64_t one = 1;

	io->res = res;
	IO_NEXT(io) = 0;
	if (v->done_tail)
		IO_NEXT(v->done_tail) = (uint64_t)(uintptr_t)io;
	else
		v->done_head = io;
	v->done_tail = io;
	/* Inside qbd_process the completions run before it returns; outside
	 * (an error found at submission) the fd must become readable: once
	 * until they run, not a syscall per completion. */
	if (v->in_process || v->efd_armed)
		return;
	v->efd_armed = true;
	if (write(v->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		qbd_warn(COMP, "eventfd write: %m");
}

/* Run the callbacks of the completed ios, including those completed by
 * the callbacks themselves (a submission refused at once). */
static void run_completions(struct qbd_volume *v)
{
	struct qbd_io *io;
	uint64_t cnt;

	if (v->efd_armed) {
		v->efd_armed = false;
		if (read(v->efd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
			qbd_warn(COMP, "eventfd read: %m");
	}
	while ((io = v->done_head)) {
		v->done_head = (struct qbd_io *)(uintptr_t)IO_NEXT(io);
		if (!v->done_head)
			v->done_tail = NULL;
		v->in_flight--;
		io->cb(io);
	}
}

void qbd_plug(struct qbd_volume *v)
{
	v->plugged++;
}

void qbd_unplug(struct qbd_volume *v)
{
	if (!v->plugged || --v->plugged)
		return;
	for (unsigned i = 0; i < QBD_CORE_MAX_REPLICAS; i++) {
		struct qbd_conn *c = &v->conns[i];

		if (c->q_head && c->fd >= 0 && c->state != QBD_C_CONNECTING &&
		    conn_flush_queue(c) < 0)
			conn_fail(c, "send failed");
	}
}

/* ---- core callbacks ---- */

_Static_assert(QBD_CORE_F_ZERO == QBD_WIRE_F_ZERO && QBD_CORE_F_FUA == QBD_WIRE_F_FUA &&
	       QBD_CORE_F_REPAIR == QBD_WIRE_F_REPAIR &&
	       QBD_CORE_F_RESYNC == QBD_WIRE_F_RESYNC &&
	       QBD_CORE_F_BITMAP == QBD_WIRE_F_BITMAP &&
	       QBD_CORE_F_SPARSE == QBD_WIRE_F_SPARSE,
	       "core message flags are the wire's");
_Static_assert(QBD_BLOCK_SIZE == QBD_WIRE_BLOCK, "bitmap blocks");

static void core_send(void *user, const struct qbd_core_msg *cm)
{
	struct qbd_volume *v = user;
	struct qbd_conn *c = &v->conns[cm->replica];
	Qbd__Msg m = QBD__MSG__INIT;
	const void *data = NULL;
	size_t len = 0;
	int err;

	m.chunk = cm->chunk;
	m.offset = cm->offset;
	m.length = cm->length;
	switch (cm->type) {
	case QBD_CM_READ:
		m.type = QBD__MSG_TYPE__READ;
		m.flags = cm->flags; /* BITMAP for BLOCK_STATUS, SPARSE for resync */
		break;
	case QBD_CM_WRITE:
		m.type = QBD__MSG_TYPE__WRITE;
		m.expected_version = cm->expected_version;
		m.new_version = cm->new_version;
		m.flags = cm->flags;
		if (!(cm->flags & QBD_WIRE_F_ZERO)) {
			data = cm->data;
			len = (cm->flags & QBD_CORE_F_SPARSE) ? cm->data_len : cm->length;
		}
		break;
	case QBD_CM_FLUSH:
		m.type = QBD__MSG_TYPE__FLUSH;
		m.chunk = m.offset = m.length = 0;
		break;
	case QBD_CM_PING:
		m.type = QBD__MSG_TYPE__PING;
		m.chunk = m.offset = m.length = 0;
		break;
	case QBD_CM_PULL:
		m.type = QBD__MSG_TYPE__PULL;
		m.new_version = cm->new_version;
		m.source_node = v->conns[cm->source].node.id;
		m.source_addr = v->conns[cm->source].node.addr;
		break;
	}
	err = conn_queue(c, &m, cm->id, data, len);
	if (err) {
		/* The core learns it from replica_down at the next tick. */
		qbd_err(COMP, "replica %u: cannot send %s: %s", c->idx,
			qbd_wire_type_name(m.type), strerror(-err));
		c->deadline_ns = 0; /* conn_fail from tick */
	}
}

static void core_data_moved(void *user, unsigned r, uint64_t id, const void *data)
{
	struct qbd_volume *v = user;

	for (struct qbd_tx *t = v->conns[r].q_head; t; t = t->next)
		if (t->id == id && t->data)
			t->data = data;
}

static void core_drop(void *user, unsigned r, const char *why)
{
	struct qbd_volume *v = user;

	/* The core already counts the replica down: just close. */
	v->conns[r].core_dropped = true;
	conn_fail(&v->conns[r], why);
}

static void core_complete(void *user, void *cookie, int res)
{
	io_queue_done(user, cookie, res);
}

static void core_log(void *user, int level, const char *msg)
{
	(void)user;
	switch (level) {
	case 0: qbd_err(COMP, "%s", msg); break;
	case 1: qbd_warn(COMP, "%s", msg); break;
	case 2: qbd_info(COMP, "%s", msg); break;
	default: qbd_debug(COMP, "%s", msg); break;
	}
}

const struct qbd_core_ops client_core_ops = {
	.send = core_send, .data_moved = core_data_moved, .drop = core_drop,
	.complete = core_complete, .log = core_log,
};

static void tick(struct qbd_volume *v)
{
	uint64_t now = qbd_now_ns();

	if (!v->opening && !v->closing) {
		struct qbd_node_addr addrs[QBD_CORE_MAX_SLOTS];
		uint32_t fresh = qbd_attach_addrs(v, addrs);

		for (unsigned r = 0; fresh && r < v->nslots; r++)
			if ((fresh & 1u << r) && !v->conns[r].unused)
				conn_take_addr(&v->conns[r], &addrs[r]);
		qbd_attach_grow(v);
	}
	for (unsigned r = 0; r < v->nslots; r++) {
		struct qbd_conn *c = &v->conns[r];

		if (!c->v || c->unused)
			continue;
		if (c->state == QBD_C_DOWN) {
			if (!v->opening && !v->closing && !c->no_addr && now >= c->retry_ns)
				conn_connect(c);
			continue;
		}
		if ((c->state != QBD_C_UP || !c->deadline_ns) && now > c->deadline_ns)
			conn_fail(c, c->state == QBD_C_UP ? "send failed"
							  : "handshake timed out");
	}
	if (!v->opening && v->core) {
		qbd_core_tick(v->core, now);
		qbd_change_tick(v);
	}
	if (v->keeper && !v->opening) {
		uint64_t rate;

		if (qbd_attach_rate(v, &rate))
			qbd_core_set_resync_rate(v->core, rate, now);
		qbd_attach_status(v);
	}
}

void qbd_process(struct qbd_volume *v)
{
	struct epoll_event evs[16];
	int n;

	v->in_process++;
	qbd_plug(v); /* what the callbacks submit goes out in one send per replica */
	n = epoll_wait(v->epfd, evs, QBD_ARRAY_SIZE(evs), 0);
	for (int i = 0; i < n; i++) {
		void *p = evs[i].data.ptr;

		if (p == &v->tfd) {
			uint64_t x;

			if (read(v->tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
				qbd_warn(COMP, "timerfd read: %m");
			tick(v);
		} else if (p != &v->efd) {
			conn_event(p, evs[i].events);
		}
	}
	run_completions(v);
	qbd_unplug(v);
	v->in_process--;
}

/* ---- submission ---- */

void qbd_submit(struct qbd_volume *v, struct qbd_io *io)
{
	enum qbd_core_op op;

	v->in_flight++;
	io->res = 0;
	switch (io->op) {
	case QBD_IO_READ:
		op = QBD_CORE_READ;
		break;
	case QBD_IO_WRITE:
		op = QBD_CORE_WRITE;
		break;
	case QBD_IO_TRIM:
	case QBD_IO_WRITE_ZEROES:
		op = QBD_CORE_ZERO;
		break;
	case QBD_IO_FLUSH:
		op = QBD_CORE_FLUSH;
		break;
	case QBD_IO_BLOCK_STATUS:
		op = QBD_CORE_BLOCK_STATUS;
		break;
	default:
		io_queue_done(v, io, -EINVAL);
		return;
	}
	if (op != QBD_CORE_FLUSH &&
	    (io->length == 0 || io->offset > v->info.size ||
	     /* TRIM and WRITE_ZEROES carry no data: any length (the kernel
	      * discards up to 4 GiB at once) */
	     (op != QBD_CORE_ZERO &&
	      io->length > (op == QBD_CORE_BLOCK_STATUS ? QBD_BLOCK_STATUS_MAX : MAX_IO)) ||
	     io->length > v->info.size - io->offset ||
	     (op != QBD_CORE_ZERO && !io->buf) ||
	     (op == QBD_CORE_BLOCK_STATUS &&
	      (io->offset % QBD_BLOCK_SIZE || io->length % QBD_BLOCK_SIZE)))) {
		qbd_err(COMP, "invalid request: op %d offset %llu length %u (volume %llu bytes)",
			io->op, (unsigned long long)io->offset, io->length,
			(unsigned long long)v->info.size);
		io_queue_done(v, io, -EINVAL);
		return;
	}
	qbd_core_submit(v->core, op, io->flags & QBD_IO_F_FUA ? QBD_CORE_F_FUA : 0,
			io->offset, io->length, io->buf, io, qbd_now_ns());
}

/* ---- accessors ---- */

uint64_t qbd_size(const struct qbd_volume *v) { return v->info.size; }
uint32_t qbd_chunk_size(const struct qbd_volume *v) { return v->info.chunk_size; }
uint64_t qbd_volume_id(const struct qbd_volume *v) { return v->info.id; }
uint64_t qbd_epoch(const struct qbd_volume *v) { return v->epoch; }
unsigned qbd_replica_count(const struct qbd_volume *v) { return v->nslots; }
unsigned qbd_write_quorum(const struct qbd_volume *v) { return v->info.write_quorum; }
int qbd_get_fd(const struct qbd_volume *v) { return v->epfd; }
unsigned qbd_in_flight(const struct qbd_volume *v) { return v->in_flight; }

int qbd_replica_status(const struct qbd_volume *v, unsigned i,
		       struct qbd_replica_status *out)
{
	const struct qbd_conn *c;
	struct qbd_core_replica_info ri;

	if (i >= v->nslots)
		return -EINVAL;
	c = &v->conns[i];
	if (!c->v || c->unused)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	out->node_id = c->node.id;
	snprintf(out->addr, sizeof(out->addr), "%s", c->node.addr);
	snprintf(out->zone, sizeof(out->zone), "%s", c->node.zone);
	out->connected = c->state == QBD_C_UP;
	if (qbd_core_replica_info(v->core, i, &ri) == 0) {
		out->stale_chunks = ri.stale_chunks;
		out->resync_done = ri.resync_done;
		out->resync_total = ri.resync_total;
		out->resync_bytes = ri.resync_bytes;
	}
	return 0;
}

uint64_t qbd_resync_rate(const struct qbd_volume *v)
{
	return v->core ? qbd_core_resync_rate(v->core) : 0;
}

int qbd_replica_counters(const struct qbd_volume *v, unsigned i,
			 struct qbd_replica_counters *out)
{
	if (i >= v->nslots)
		return -EINVAL;
	if (!v->conns[i].v || v->conns[i].unused)
		return -ENOENT;
	out->sent_bytes = v->conns[i].tx_bytes;
	out->received_bytes = v->conns[i].rx_bytes;
	return 0;
}

/* ---- synchronous wrappers ---- */

static void sync_cb(struct qbd_io *io)
{
	*(int *)io->user = 1;
}

static int sync_io(struct qbd_volume *v, enum qbd_io_op op, void *buf,
		   uint32_t len, uint64_t off, uint32_t flags)
{
	int done = 0;
	struct qbd_io io = {
		.op = op, .flags = flags, .offset = off, .length = len,
		.buf = buf, .cb = sync_cb, .user = &done,
	};

	qbd_submit(v, &io);
	while (!done) {
		struct pollfd pfd = { .fd = v->epfd, .events = POLLIN };

		poll(&pfd, 1, QBD_CLIENT_TICK_MS);
		qbd_process(v);
	}
	return io.res;
}

int qbd_pread(struct qbd_volume *v, void *buf, uint32_t len, uint64_t off)
{
	return sync_io(v, QBD_IO_READ, buf, len, off, 0);
}

int qbd_pwrite(struct qbd_volume *v, const void *buf, uint32_t len,
	       uint64_t off, uint32_t flags)
{
	return sync_io(v, QBD_IO_WRITE, (void *)buf, len, off, flags);
}

int qbd_flush(struct qbd_volume *v)
{
	return sync_io(v, QBD_IO_FLUSH, NULL, 0, 0, 0);
}

int qbd_trim(struct qbd_volume *v, uint32_t len, uint64_t off)
{
	return sync_io(v, QBD_IO_TRIM, NULL, len, off, 0);
}

int qbd_write_zeroes(struct qbd_volume *v, uint32_t len, uint64_t off,
		     uint32_t flags)
{
	return sync_io(v, QBD_IO_WRITE_ZEROES, NULL, len, off, flags);
}

int qbd_block_status(struct qbd_volume *v, void *bits, uint32_t len, uint64_t off)
{
	return sync_io(v, QBD_IO_BLOCK_STATUS, bits, len, off, 0);
}
