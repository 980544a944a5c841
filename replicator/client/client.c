/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqbd: the writer side of a qbd volume. Opens through etcd, talks the
 * wire protocol to every replica over nonblocking TCP, and lets the quorum
 * core (replicator/core) decide versions, targets and outcomes. No thread
 * and no loop of its own: everything happens in qbd_process, driven by the
 * epoll fd from qbd_get_fd. See client.h for ownership.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/client/client.h"

#define COMP "client"
#define MAX_IO (32u << 20)

#define IO_PARTS(io) ((io)->priv[0])
#define IO_RES(io) ((io)->priv[1])
#define IO_NEXT(io) ((io)->priv[2])

static void conn_fail(struct qbd_conn *c, const char *why);

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
	if (write(v->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		qbd_warn(COMP, "eventfd write: %m");
}

static void run_completions(struct qbd_volume *v)
{
	struct qbd_io *io = v->done_head;
	uint64_t cnt;

	v->done_head = v->done_tail = NULL;
	if (read(v->efd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		qbd_warn(COMP, "eventfd read: %m");
	while (io) {
		struct qbd_io *next = (struct qbd_io *)(uintptr_t)IO_NEXT(io);

		v->in_flight--;
		io->cb(io);
		io = next;
	}
}

/* A part reached its result: account it to the io. */
static void part_complete(struct qbd_part *p, int res)
{
	struct qbd_io *io = p->io;

	if (p->completed)
		return;
	p->completed = true;
	/* Writes still queued to slow replicas must not keep the user's buffer. */
	for (unsigned r = 0; r < QBD_PG_MAX_REPLICAS; r++) {
		struct qbd_sub *s = &p->subs[r];
		size_t done_data;

		if (!s->queued || !s->data || s->data_copy)
			continue;
		done_data = s->tx_off > s->hdr_len ? s->tx_off - s->hdr_len : 0;
		s->data_copy = malloc(s->data_len);
		if (!s->data_copy) {
			qbd_err(COMP, "out of memory copying write data");
			conn_fail(&p->v->conns[r], "out of memory");
			continue;
		}
		memcpy(s->data_copy + done_data, s->data + done_data,
		       s->data_len - done_data);
		s->data = s->data_copy;
	}
	if (!io)
		return;
	if (res && !IO_RES(io))
		IO_RES(io) = (uint64_t)(int64_t)res;
	if (--IO_PARTS(io) == 0)
		io_queue_done(p->v, io, (int)(int64_t)IO_RES(io));
}

static void part_maybe_free(struct qbd_part *p)
{
	if (!p->completed || p->live)
		return;
	for (unsigned r = 0; r < QBD_PG_MAX_REPLICAS; r++)
		free(p->subs[r].data_copy);
	free(p->owned);
	free(p);
}

/* ---- sending ---- */

static void conn_update_events(struct qbd_conn *c)
{
	struct epoll_event ev = { .data.ptr = c };
	bool out = c->q_head != NULL || c->state == QBD_C_CONNECTING;

	if (c->fd < 0 || out == c->want_out)
		return;
	ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
	if (epoll_ctl(c->v->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		qbd_warn(COMP, "epoll_ctl: %m");
	c->want_out = out;
}

static int sub_encode(struct qbd_conn *c, struct qbd_sub *s, Qbd__Msg *m)
{
	ssize_t n;

	m->cluster_id = c->v->cluster_id;
	m->request_id = s->request_id = ++c->next_req;
	m->volume_id = c->v->info.id;
	m->node_id = c->node.id;
	m->epoch = c->v->epoch;
	m->data_len = (uint32_t)s->data_len;
	n = qbd_wire_encode(m, s->hdr, sizeof(s->hdr));
	if (n < 0)
		return (int)n;
	s->hdr_len = (size_t)n;
	s->tx_off = 0;
	return 0;
}

static int conn_flush_queue(struct qbd_conn *c)
{
	while (c->q_head) {
		struct qbd_sub *s = c->q_head;
		struct iovec iov[2];
		int cnt = 0;
		ssize_t n;

		if (s->tx_off < s->hdr_len) {
			iov[cnt].iov_base = s->hdr + s->tx_off;
			iov[cnt++].iov_len = s->hdr_len - s->tx_off;
		}
		if (s->data_len) {
			size_t d = s->tx_off > s->hdr_len ? s->tx_off - s->hdr_len : 0;

			iov[cnt].iov_base = (void *)(s->data + d);
			iov[cnt++].iov_len = s->data_len - d;
		}
		n = writev(c->fd, iov, cnt);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -errno;
		}
		s->tx_off += (size_t)n;
		if (s->tx_off < s->hdr_len + s->data_len)
			break;
		c->q_head = s->q_next;
		if (!c->q_head)
			c->q_tail = NULL;
		s->q_next = NULL;
		s->queued = false;
	}
	conn_update_events(c);
	return 0;
}

/* Queue s (encoded) on c; it is in flight until answered or failed. */
static void conn_send(struct qbd_conn *c, struct qbd_sub *s, bool track)
{
	s->sent_ns = qbd_now_ns();
	s->queued = true;
	s->q_next = NULL;
	if (c->q_tail)
		c->q_tail->q_next = s;
	else
		c->q_head = s;
	c->q_tail = s;
	if (track) {
		s->in_flight = true;
		s->f_prev = NULL;
		s->f_next = c->f_head;
		if (c->f_head)
			c->f_head->f_prev = s;
		c->f_head = s;
	}
	if (c->state != QBD_C_CONNECTING && conn_flush_queue(c) < 0)
		conn_fail(c, "send failed");
}

static void flist_remove(struct qbd_conn *c, struct qbd_sub *s)
{
	if (s->f_prev)
		s->f_prev->f_next = s->f_next;
	else
		c->f_head = s->f_next;
	if (s->f_next)
		s->f_next->f_prev = s->f_prev;
	s->f_prev = s->f_next = NULL;
	s->in_flight = false;
}

/* Send the part's message to replica r. */
static void part_send(struct qbd_part *p, unsigned r)
{
	struct qbd_conn *c = &p->v->conns[r];
	struct qbd_sub *s = &p->subs[r];
	Qbd__Msg m = QBD__MSG__INIT;

	free(s->data_copy);
	memset(s, 0, sizeof(*s));
	s->part = p;
	s->replica = r;
	m.chunk = p->chunk;
	m.offset = p->off;
	m.length = p->len;
	switch (p->kind) {
	case QBD_P_READ:
		m.type = QBD__MSG_TYPE__READ;
		break;
	case QBD_P_FLUSH:
		m.type = QBD__MSG_TYPE__FLUSH;
		m.chunk = m.offset = m.length = 0;
		break;
	case QBD_P_WRITE:
	case QBD_P_REPAIR:
		m.type = QBD__MSG_TYPE__WRITE;
		m.expected_version = p->op.expected;
		m.new_version = p->op.new_version;
		m.flags = p->wflags;
		if (!(p->wflags & QBD_WIRE_F_ZERO)) {
			s->data = p->buf;
			s->data_len = p->len;
		}
		break;
	}
	p->live++;
	if (sub_encode(c, s, &m) < 0) {
		qbd_err(COMP, "cannot encode %s", qbd_wire_type_name(m.type));
		s->in_flight = true; /* so that the failure path accounts it */
		s->f_prev = NULL;
		s->f_next = c->f_head;
		if (c->f_head)
			c->f_head->f_prev = s;
		c->f_head = s;
		conn_fail(c, "encode failed");
		return;
	}
	conn_send(c, s, true);
}

/* ---- replies into the core ---- */

static void part_read_result(struct qbd_part *p, int ret)
{
	struct qbd_volume *v = p->v;

	if (ret == 1) {
		part_send(p, (unsigned)p->rd.replica);
		return;
	}
	if (ret == 0) {
		/* Repair replicas that reported a checksum error. */
		for (unsigned r = 0; r < v->pg.nreplicas; r++) {
			struct qbd_part *rp;

			if (!(p->rd.bad & (1u << r)) || !v->pg.up[r])
				continue;
			rp = calloc(1, sizeof(*rp));
			if (rp)
				rp->owned = malloc(p->len);
			if (!rp || !rp->owned) {
				free(rp);
				qbd_warn(COMP, "no memory to repair chunk %llu",
					 (unsigned long long)p->chunk);
				continue;
			}
			memcpy(rp->owned, p->buf, p->len);
			rp->v = v;
			rp->kind = QBD_P_REPAIR;
			rp->chunk = p->chunk;
			rp->off = p->off;
			rp->len = p->len;
			rp->buf = rp->owned;
			rp->wflags = QBD_WIRE_F_REPAIR;
			qbd_pg_repair_begin(&v->pg, p->chunk, p->rd.version, r,
					    &rp->op);
			qbd_info(COMP, "repairing chunk %llu on node %016llx at version %llu",
				 (unsigned long long)p->chunk,
				 (unsigned long long)v->conns[r].node.id,
				 (unsigned long long)p->rd.version);
			part_send(rp, r);
		}
	}
	/* A lost connection or a stale copy is not the caller's business. */
	if (ret == -ENOTCONN || ret == -ESTALE)
		ret = -EIO;
	part_complete(p, ret);
}

/* Sub s of a part got status (a reply, or a failure). */
static void sub_result(struct qbd_sub *s, int status, uint64_t version)
{
	struct qbd_part *p = s->part;
	struct qbd_volume *v = p->v;

	/* The sub's reference on p is dropped last: nested failures (a send
	 * failing inside a retry) must not free p under us. */
	if (p->kind == QBD_P_READ) {
		if (!p->completed)
			part_read_result(p, qbd_pg_read_reply(&v->pg, &p->rd,
							      status, version));
	} else {
		if (status && status != -ENOTCONN)
			qbd_debug(COMP, "node %016llx: chunk %llu: %s",
				  (unsigned long long)v->conns[s->replica].node.id,
				  (unsigned long long)p->chunk, strerror(-status));
		if (p->kind == QBD_P_REPAIR && status)
			qbd_warn(COMP, "repair of chunk %llu on node %016llx: %s",
				 (unsigned long long)p->chunk,
				 (unsigned long long)v->conns[s->replica].node.id,
				 strerror(-status));
		if (qbd_pg_op_reply(&v->pg, &p->op, s->replica, status))
			part_complete(p, p->kind == QBD_P_REPAIR ? 0 : p->op.result);
	}
	p->live--;
	part_maybe_free(p);
}

/* ---- connection ---- */

static void conn_close_fd(struct qbd_conn *c)
{
	if (c->fd >= 0) {
		epoll_ctl(c->v->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->want_out = false;
	/* Inside qbd_wire_rx_feed the rx is reset by conn_event afterwards. */
	if (!c->in_feed) {
		qbd_wire_rx_reset(&c->rx);
		qbd_wire_rx_init(&c->rx);
	}
}

static void conn_fail(struct qbd_conn *c, const char *why)
{
	struct qbd_volume *v = c->v;
	enum qbd_conn_state was = c->state;

	if (c->fd < 0 && was == QBD_C_DOWN)
		return;
	/* A dead replica is retried every second: say so once, then about
	 * once a minute, not at every attempt. */
	if (was == QBD_C_UP || v->opening)
		c->retries = 0;
	else
		c->retries++;
	if (!v->closing && (c->retries <= 1 || c->retries % 60 == 0))
		qbd_warn(COMP, "replica %u node %016llx (%s): %s%s",
			 c->idx, (unsigned long long)c->node.id, c->node.addr, why,
			 c->retries > 1 ? " (still unreachable, retrying every second)" : "");
	else if (!v->closing)
		qbd_debug(COMP, "replica %u node %016llx (%s): %s",
			  c->idx, (unsigned long long)c->node.id, c->node.addr, why);
	conn_close_fd(c);
	c->state = QBD_C_DOWN;
	c->retry_ns = qbd_now_ns() + QBD_CLIENT_RETRY_NS;
	if (v->opening)
		c->failed_open = true;
	if (was == QBD_C_UP)
		qbd_pg_replica_down(&v->pg, c->idx);
	/* Unlink everything first: results may queue new subs elsewhere. */
	while (c->q_head) {
		struct qbd_sub *s = c->q_head;

		c->q_head = s->q_next;
		s->q_next = NULL;
		s->queued = false;
	}
	c->q_tail = NULL;
	while (c->f_head) {
		struct qbd_sub *s = c->f_head;

		flist_remove(c, s);
		sub_result(s, -ENOTCONN, 0);
	}
}

static void conn_send_ctl(struct qbd_conn *c, int type)
{
	Qbd__Msg m = QBD__MSG__INIT;

	memset(&c->ctl, 0, sizeof(c->ctl));
	m.type = type;
	if (sub_encode(c, &c->ctl, &m) < 0) {
		conn_fail(c, "cannot encode handshake");
		return;
	}
	c->deadline_ns = qbd_now_ns() + QBD_CLIENT_REQ_TIMEOUT_NS;
	conn_send(c, &c->ctl, false);
}

static void conn_connect(struct qbd_conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
	int one = 1;

	c->fd = socket(c->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		qbd_err(COMP, "socket: %m");
		goto fail;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&c->sa, c->salen) < 0 &&
	    errno != EINPROGRESS) {
		qbd_debug(COMP, "connect %s: %m", c->node.addr);
		goto fail;
	}
	if (epoll_ctl(c->v->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		qbd_err(COMP, "epoll_ctl: %m");
		goto fail;
	}
	c->want_out = true;
	c->state = QBD_C_CONNECTING;
	c->deadline_ns = qbd_now_ns() + QBD_CLIENT_REQ_TIMEOUT_NS;
	return;
fail:
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = QBD_C_DOWN;
	c->retry_ns = qbd_now_ns() + QBD_CLIENT_RETRY_NS;
	if (c->v->opening)
		c->failed_open = true;
}

static int conn_on_open_reply(struct qbd_conn *c, Qbd__Msg *m, void *data)
{
	struct qbd_volume *v = c->v;
	const uint8_t *d = data;
	struct qbd_chunk_version *list = NULL;
	size_t n = m->data_len / 16;
	int err;

	c->open_status = m->status;
	if (m->status) {
		qbd_warn(COMP, "replica %u node %016llx: OPEN epoch %llu: %s (promised %llu)",
			 c->idx, (unsigned long long)c->node.id,
			 (unsigned long long)v->epoch, strerror(-m->status),
			 (unsigned long long)m->epoch);
		if (m->status == -EPERM)
			v->pg.fenced = !v->opening || v->pg.fenced;
		return -EPROTO;
	}
	if (m->data_len % 16 || (m->data_len && !d)) {
		qbd_err(COMP, "replica %u: OPEN reply with %u bytes of chunk list",
			c->idx, m->data_len);
		return -EPROTO;
	}
	if (n) {
		list = malloc(n * sizeof(*list));
		if (!list)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t a, b;

		memcpy(&a, d + 16 * i, 8);
		memcpy(&b, d + 16 * i + 8, 8);
		list[i].chunk = le64toh(a);
		list[i].version = le64toh(b);
	}
	err = qbd_pg_replica_open(&v->pg, c->idx, list, n);
	free(list);
	if (err) {
		qbd_err(COMP, "replica %u: bad OPEN chunk list: %s", c->idx,
			strerror(-err));
		return -EPROTO;
	}
	c->state = QBD_C_UP;
	qbd_info(COMP, "replica %u node %016llx (%s, zone %s) up at epoch %llu, %zu chunks, %llu stale",
		 c->idx, (unsigned long long)c->node.id, c->node.addr,
		 c->node.zone, (unsigned long long)v->epoch, n,
		 (unsigned long long)v->pg.nstale[c->idx]);
	return 0;
}

static struct qbd_sub *conn_find(struct qbd_conn *c, uint64_t id)
{
	for (struct qbd_sub *s = c->f_head; s; s = s->f_next)
		if (s->request_id == id)
			return s;
	return NULL;
}

static void *rx_on_header(void *user, const Qbd__Msg *m)
{
	struct qbd_conn *c = user;
	struct qbd_sub *s;

	if (c->fd < 0)
		return QBD_WIRE_DISCARD;
	if (!m->reply || m->type != QBD__MSG_TYPE__READ || m->data_len == 0)
		return NULL;
	s = conn_find(c, m->request_id);
	if (!s || s->part->kind != QBD_P_READ || m->status ||
	    m->data_len != s->part->len)
		return QBD_WIRE_DISCARD;
	return s->part->buf;
}

static int rx_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct qbd_conn *c = user;
	struct qbd_sub *s;
	int status;

	if (c->fd < 0)
		return -ECONNRESET; /* failed while handling an earlier frame */
	if (!m->reply || m->cluster_id != c->v->cluster_id) {
		qbd_err(COMP, "replica %u: unexpected message %s (cluster %016llx)",
			c->idx, qbd_wire_type_name(m->type),
			(unsigned long long)m->cluster_id);
		return -EPROTO;
	}
	if (c->state == QBD_C_HELLO && m->type == QBD__MSG_TYPE__HELLO) {
		if (m->status || m->node_id != c->node.id ||
		    m->chunk_size != c->v->info.chunk_size) {
			qbd_err(COMP, "replica %u (%s): HELLO mismatch: status %d, node %016llx (want %016llx), chunk size %u (want %u)",
				c->idx, c->node.addr, m->status,
				(unsigned long long)m->node_id,
				(unsigned long long)c->node.id, m->chunk_size,
				c->v->info.chunk_size);
			c->open_status = m->status ? m->status : -EINVAL;
			return -EPROTO;
		}
		c->state = QBD_C_OPEN;
		conn_send_ctl(c, QBD__MSG_TYPE__OPEN);
		return 0;
	}
	if (c->state == QBD_C_OPEN && m->type == QBD__MSG_TYPE__OPEN)
		return conn_on_open_reply(c, m, data);
	if (c->state != QBD_C_UP)
		return -EPROTO;
	s = conn_find(c, m->request_id);
	if (!s) {
		qbd_warn(COMP, "replica %u: reply to unknown request %llu",
			 c->idx, (unsigned long long)m->request_id);
		return 0;
	}
	status = m->status;
	if (!status && s->part->kind == QBD_P_READ && m->data_len != s->part->len) {
		qbd_err(COMP, "replica %u: READ reply with %u bytes, want %u",
			c->idx, m->data_len, s->part->len);
		status = -EIO;
	}
	flist_remove(c, s);
	sub_result(s, status, m->version);
	return 0;
}

static const struct qbd_wire_rx_ops rx_ops = {
	.on_header = rx_on_header,
	.on_frame = rx_on_frame,
};

static void conn_event(struct qbd_conn *c, uint32_t events)
{
	uint8_t buf[65536];

	if (c->state == QBD_C_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof(err);

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			errno = err;
			qbd_debug(COMP, "connect %s: %m", c->node.addr);
			conn_fail(c, "connect failed");
			return;
		}
		c->state = QBD_C_HELLO;
		conn_send_ctl(c, QBD__MSG_TYPE__HELLO);
		return;
	}
	if ((events & EPOLLOUT) && conn_flush_queue(c) < 0) {
		conn_fail(c, "send failed");
		return;
	}
	if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		return;
	for (int i = 0; i < 16 && c->fd >= 0; i++) {
		ssize_t n = read(c->fd, buf, sizeof(buf));
		int err;

		if (n == 0) {
			conn_fail(c, "connection closed");
			return;
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			conn_fail(c, "receive failed");
			return;
		}
		c->in_feed = true;
		err = qbd_wire_rx_feed(&c->rx, buf, (size_t)n, &rx_ops, c);
		c->in_feed = false;
		if (c->fd < 0) {
			qbd_wire_rx_reset(&c->rx);
			qbd_wire_rx_init(&c->rx);
			return;
		}
		if (err) {
			conn_fail(c, err == -EPROTO ? "protocol error or refused"
					       : "receive error");
			return;
		}
	}
}

static void tick(struct qbd_volume *v)
{
	uint64_t now = qbd_now_ns();

	for (unsigned r = 0; r < v->info.replicas; r++) {
		struct qbd_conn *c = &v->conns[r];

		if (c->state == QBD_C_DOWN) {
			if (!v->opening && !v->closing && now >= c->retry_ns)
				conn_connect(c);
			continue;
		}
		if (c->state != QBD_C_UP) {
			if (now > c->deadline_ns)
				conn_fail(c, "handshake timed out");
			continue;
		}
		for (struct qbd_sub *s = c->f_head; s; s = s->f_next) {
			if (now - s->sent_ns > QBD_CLIENT_REQ_TIMEOUT_NS) {
				conn_fail(c, "request timed out");
				break;
			}
		}
	}
}

void qbd_process(struct qbd_volume *v)
{
	struct epoll_event evs[16];
	int n;

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
	if (v->done_head)
		run_completions(v);
}

/* ---- submission ---- */

static struct qbd_part *part_new(struct qbd_volume *v, struct qbd_io *io,
				 enum qbd_part_kind kind)
{
	struct qbd_part *p = calloc(1, sizeof(*p));

	if (p) {
		p->v = v;
		p->io = io;
		p->kind = kind;
	}
	return p;
}

static void part_start(struct qbd_part *p)
{
	struct qbd_volume *v = p->v;
	int err;

	p->live++; /* held while sending, see sub_result */
	if (p->kind == QBD_P_READ) {
		err = qbd_pg_read_begin(&v->pg, p->chunk, &p->rd);
		if (!err) {
			part_send(p, (unsigned)p->rd.replica);
			goto out;
		}
	} else {
		err = p->kind == QBD_P_FLUSH ? qbd_pg_flush_begin(&v->pg, &p->op)
					     : qbd_pg_write_begin(&v->pg, p->chunk, &p->op);
		if (!err) {
			for (unsigned r = 0; r < v->pg.nreplicas; r++)
				if (p->op.targets & (1u << r))
					part_send(p, r);
			goto out;
		}
		if (err == -EIO)
			qbd_err(COMP, "%s of chunk %llu refused: %u of %u replicas usable, need %u",
				p->kind == QBD_P_FLUSH ? "flush" : "write",
				(unsigned long long)p->chunk,
				qbd_pg_up_count(&v->pg), v->pg.nreplicas,
				v->pg.write_quorum);
	}
	part_complete(p, err);
out:
	p->live--;
	part_maybe_free(p);
}

void qbd_submit(struct qbd_volume *v, struct qbd_io *io)
{
	uint32_t cs = v->info.chunk_size;
	enum qbd_part_kind kind;
	uint32_t wflags = 0;
	uint64_t off = io->offset, end;
	unsigned nparts;

	v->in_flight++;
	io->res = 0;
	IO_RES(io) = 0;
	switch (io->op) {
	case QBD_IO_READ:
		kind = QBD_P_READ;
		break;
	case QBD_IO_WRITE:
		kind = QBD_P_WRITE;
		break;
	case QBD_IO_TRIM:
	case QBD_IO_WRITE_ZEROES:
		kind = QBD_P_WRITE;
		wflags = QBD_WIRE_F_ZERO;
		break;
	case QBD_IO_FLUSH:
		kind = QBD_P_FLUSH;
		break;
	default:
		io_queue_done(v, io, -EINVAL);
		return;
	}
	if (v->pg.fenced) {
		io_queue_done(v, io, -EPERM);
		return;
	}
	if (kind == QBD_P_FLUSH) {
		struct qbd_part *p = part_new(v, io, kind);

		if (!p) {
			io_queue_done(v, io, -ENOMEM);
			return;
		}
		IO_PARTS(io) = 1;
		part_start(p);
		return;
	}
	if (io->length == 0 || io->length > MAX_IO || off > v->info.size ||
	    io->length > v->info.size - off ||
	    (!(wflags & QBD_WIRE_F_ZERO) && !io->buf)) {
		qbd_err(COMP, "invalid request: op %d offset %llu length %u (volume %llu bytes)",
			io->op, (unsigned long long)off, io->length,
			(unsigned long long)v->info.size);
		io_queue_done(v, io, -EINVAL);
		return;
	}
	if (io->flags & QBD_IO_F_FUA)
		wflags |= QBD_WIRE_F_FUA;
	end = off + io->length;
	nparts = (unsigned)((end - 1) / cs - off / cs + 1);
	/* Hold one extra count so that no part completes the io early. */
	IO_PARTS(io) = nparts + 1;
	while (off < end) {
		uint64_t chunk = off / cs;
		uint32_t coff = (uint32_t)(off % cs);
		uint32_t len = (uint32_t)QBD_MIN((uint64_t)(cs - coff), end - off);
		struct qbd_part *p = part_new(v, io, kind);

		if (!p) {
			if (!IO_RES(io))
				IO_RES(io) = (uint64_t)(int64_t)-ENOMEM;
			IO_PARTS(io)--;
		} else {
			p->chunk = chunk;
			p->off = coff;
			p->len = len;
			p->wflags = wflags;
			p->buf = io->buf ? (uint8_t *)io->buf + (off - io->offset) : NULL;
			part_start(p);
		}
		off += len;
	}
	if (--IO_PARTS(io) == 0)
		io_queue_done(v, io, (int)(int64_t)IO_RES(io));
}

/* ---- open / close ---- */

static int resolve(struct qbd_conn *c)
{
	char host[QBD_ADDR_MAX];
	char port[8];
	uint16_t p;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	int err;

	if (qbd_parse_hostport(c->node.addr, host, sizeof(host), &p) < 0) {
		qbd_err(COMP, "node %016llx: bad address '%s'",
			(unsigned long long)c->node.id, c->node.addr);
		return -EINVAL;
	}
	snprintf(port, sizeof(port), "%u", p);
	err = getaddrinfo(host, port, &hints, &ai);
	if (err || !ai) {
		qbd_err(COMP, "node %016llx: cannot resolve '%s': %s",
			(unsigned long long)c->node.id, c->node.addr,
			gai_strerror(err));
		return -EHOSTUNREACH;
	}
	memcpy(&c->sa, ai->ai_addr, ai->ai_addrlen);
	c->salen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int volume_setup(struct qbd_volume *v)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct itimerspec its = {
		.it_interval = { 0, QBD_CLIENT_TICK_MS * 1000000L },
		.it_value = { 0, QBD_CLIENT_TICK_MS * 1000000L },
	};

	v->epfd = epoll_create1(EPOLL_CLOEXEC);
	v->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	v->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (v->epfd < 0 || v->tfd < 0 || v->efd < 0)
		return -errno;
	if (timerfd_settime(v->tfd, 0, &its, NULL) < 0)
		return -errno;
	ev.data.ptr = &v->tfd;
	if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->tfd, &ev) < 0)
		return -errno;
	ev.data.ptr = &v->efd;
	if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->efd, &ev) < 0)
		return -errno;
	return 0;
}

static void volume_free(struct qbd_volume *v)
{
	v->closing = true;
	for (unsigned r = 0; r < QBD_PG_MAX_REPLICAS; r++)
		if (v->conns[r].v)
			conn_fail(&v->conns[r], "closing");
	if (v->epfd >= 0)
		close(v->epfd);
	if (v->tfd >= 0)
		close(v->tfd);
	if (v->efd >= 0)
		close(v->efd);
	qbd_pg_destroy(&v->pg);
	free(v);
}

static int meta_load(const struct qbd_open_opts *o, struct qbd_volume *v)
{
	const char *url = o->etcd ? o->etcd : getenv("QBD_ETCD");
	struct qbd_meta *m = NULL;
	int err;

	if (!url || !o->volume) {
		qbd_err(COMP, "open: no etcd URL (set QBD_ETCD) or no volume name");
		return -EINVAL;
	}
	err = qbd_meta_open(url, &m);
	if (err)
		goto out;
	err = qbd_meta_cluster_id(m, false, &v->cluster_id);
	if (err) {
		qbd_err(COMP, "open: cluster id from %s: %s", url, strerror(-err));
		goto out;
	}
	err = qbd_meta_volume_get(m, o->volume, &v->info);
	if (err) {
		qbd_err(COMP, "open: volume '%s': %s", o->volume, strerror(-err));
		goto out;
	}
	if (v->info.replicas == 0 || v->info.replicas > QBD_PG_MAX_REPLICAS ||
	    v->info.write_quorum == 0 || v->info.write_quorum > v->info.replicas ||
	    v->info.chunk_size == 0 || v->info.size == 0) {
		qbd_err(COMP, "open: volume '%s' has a bad record", o->volume);
		err = -EPROTO;
		goto out;
	}
	for (unsigned r = 0; r < v->info.replicas; r++) {
		struct qbd_conn *c = &v->conns[r];

		err = qbd_meta_node_get(m, v->info.nodes[r], &c->node);
		if (err) {
			qbd_err(COMP, "open: node %016llx: %s",
				(unsigned long long)v->info.nodes[r], strerror(-err));
			goto out;
		}
		c->node.id = v->info.nodes[r];
		err = resolve(c);
		if (err)
			goto out;
	}
	err = qbd_meta_epoch_bump(m, v->info.id, &v->epoch);
	if (err)
		qbd_err(COMP, "open: epoch bump: %s", strerror(-err));
out:
	qbd_meta_close(m);
	return err;
}

int qbd_open(const struct qbd_open_opts *o, struct qbd_volume **out)
{
	struct qbd_volume *v;
	unsigned timeout = o->timeout_ms ? o->timeout_ms : 10000;
	uint64_t deadline;
	bool eperm = false;
	int err;

	*out = NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->epfd = v->tfd = v->efd = -1;
	err = volume_setup(v);
	if (err)
		goto fail;
	err = meta_load(o, v);
	if (err)
		goto fail;
	v->nchunks = (v->info.size + v->info.chunk_size - 1) / v->info.chunk_size;
	err = qbd_pg_init(&v->pg, v->info.replicas, v->info.write_quorum, v->nchunks);
	if (err)
		goto fail;
	v->opening = true;
	for (unsigned r = 0; r < v->info.replicas; r++) {
		struct qbd_conn *c = &v->conns[r];

		c->v = v;
		c->idx = r;
		c->fd = -1;
		qbd_wire_rx_init(&c->rx);
		v->pg.local[r] = o->zone && !strcmp(o->zone, c->node.zone);
		conn_connect(c);
	}
	deadline = qbd_now_ns() + (uint64_t)timeout * 1000000ull;
	for (;;) {
		unsigned pending = 0;
		struct pollfd pfd = { .fd = v->epfd, .events = POLLIN };

		for (unsigned r = 0; r < v->info.replicas; r++)
			pending += v->conns[r].state != QBD_C_UP &&
				   !v->conns[r].failed_open;
		if (!pending || qbd_now_ns() >= deadline)
			break;
		poll(&pfd, 1, QBD_CLIENT_TICK_MS);
		qbd_process(v);
	}
	for (unsigned r = 0; r < v->info.replicas; r++) {
		struct qbd_conn *c = &v->conns[r];

		eperm |= c->open_status == -EPERM;
		if (c->state != QBD_C_UP)
			conn_fail(c, "not opened in time");
		c->failed_open = false;
	}
	v->opening = false;
	err = qbd_pg_open_done(&v->pg);
	if (err) {
		err = eperm ? -EPERM : -EIO;
		qbd_err(COMP, "open '%s': only %u of %u replicas promised epoch %llu, need %u%s",
			o->volume, qbd_pg_up_count(&v->pg), v->info.replicas,
			(unsigned long long)v->epoch, v->info.write_quorum,
			eperm ? " (fenced by a newer epoch)" : "");
		goto fail;
	}
	qbd_info(COMP, "opened volume '%s' id %016llx epoch %llu: %u of %u replicas up",
		 o->volume, (unsigned long long)v->info.id,
		 (unsigned long long)v->epoch, qbd_pg_up_count(&v->pg),
		 v->info.replicas);
	*out = v;
	return 0;
fail:
	volume_free(v);
	return err;
}

static void wait_idle(struct qbd_volume *v)
{
	while (v->in_flight) {
		struct pollfd pfd = { .fd = v->epfd, .events = POLLIN };

		poll(&pfd, 1, QBD_CLIENT_TICK_MS);
		qbd_process(v);
	}
}

void qbd_close(struct qbd_volume *v)
{
	int err;

	if (!v)
		return;
	wait_idle(v);
	if (!v->pg.fenced) {
		err = qbd_flush(v);
		if (err)
			qbd_warn(COMP, "close: flush: %s", strerror(-err));
	}
	volume_free(v);
}

/* ---- accessors ---- */

uint64_t qbd_size(const struct qbd_volume *v) { return v->info.size; }
uint32_t qbd_chunk_size(const struct qbd_volume *v) { return v->info.chunk_size; }
uint64_t qbd_volume_id(const struct qbd_volume *v) { return v->info.id; }
uint64_t qbd_epoch(const struct qbd_volume *v) { return v->epoch; }
unsigned qbd_replica_count(const struct qbd_volume *v) { return v->info.replicas; }
unsigned qbd_write_quorum(const struct qbd_volume *v) { return v->info.write_quorum; }
int qbd_get_fd(const struct qbd_volume *v) { return v->epfd; }
unsigned qbd_in_flight(const struct qbd_volume *v) { return v->in_flight; }

int qbd_replica_status(const struct qbd_volume *v, unsigned i,
		       struct qbd_replica_status *out)
{
	const struct qbd_conn *c;

	if (i >= v->info.replicas)
		return -EINVAL;
	c = &v->conns[i];
	memset(out, 0, sizeof(*out));
	out->node_id = c->node.id;
	snprintf(out->addr, sizeof(out->addr), "%s", c->node.addr);
	snprintf(out->zone, sizeof(out->zone), "%s", c->node.zone);
	out->connected = c->state == QBD_C_UP;
	out->stale_chunks = v->pg.nstale[i];
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
