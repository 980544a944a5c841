/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqbd: the writer side of a qbd volume. Opens through etcd, talks the
 * wire protocol to every replica over nonblocking TCP, and lets the quorum
 * core (replicator/core) decide versions, targets and outcomes. No thread
 * and no loop of its own: everything happens in qbd_process, driven by the
 * epoll fd from qbd_get_fd. See internal.h for ownership.
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
#include "replicator/client/internal.h"

#define COMP "client"
#define MAX_IO (32u << 20)

#define IO_NEXT(io) ((io)->priv[0])

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

/* Send what is queued on c, as many messages per sendmsg as fit. */
static int conn_flush_queue(struct qbd_conn *c)
{
	while (c->q_head) {
		struct iovec iov[QBD_TX_IOV];
		size_t total = 0;
		int cnt = 0;
		ssize_t n;

		for (struct qbd_tx *t = c->q_head; t && cnt + 2 <= QBD_TX_IOV; t = t->next) {
			if (t->tx_off < t->hdr_len) {
				iov[cnt].iov_base = t->hdr + t->tx_off;
				iov[cnt++].iov_len = t->hdr_len - t->tx_off;
			}
			if (t->data_len) {
				size_t d = t->tx_off > t->hdr_len ? t->tx_off - t->hdr_len : 0;

				iov[cnt].iov_base = (void *)(t->data + d);
				iov[cnt++].iov_len = t->data_len - d;
			}
			total += t->hdr_len + t->data_len - t->tx_off;
		}
		/* sendmsg, not writev: a library must not die of SIGPIPE
		 * when a replica goes away. */
		n = sendmsg(c->fd, &(struct msghdr){ .msg_iov = iov,
						     .msg_iovlen = (size_t)cnt },
			    MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -errno;
		}
		c->tx_bytes += (uint64_t)n;
		for (size_t left = (size_t)n; left && c->q_head;) {
			struct qbd_tx *t = c->q_head;
			size_t rest = t->hdr_len + t->data_len - t->tx_off;

			if (left < rest) {
				t->tx_off += left;
				break;
			}
			left -= rest;
			c->q_head = t->next;
			if (!c->q_head)
				c->q_tail = NULL;
			free(t);
		}
		if ((size_t)n < total)
			break; /* the socket is full: EPOLLOUT */
	}
	conn_update_events(c);
	return 0;
}

static void conn_free_queue(struct qbd_conn *c)
{
	while (c->q_head) {
		struct qbd_tx *t = c->q_head;

		c->q_head = t->next;
		free(t);
	}
	c->q_tail = NULL;
}

/* Encode m and queue it on c. */
static int conn_queue(struct qbd_conn *c, Qbd__Msg *m, uint64_t id,
		      const void *data, size_t data_len)
{
	struct qbd_tx *t = calloc(1, sizeof(*t));
	ssize_t n;

	if (!t)
		return -ENOMEM;
	m->cluster_id = c->v->cluster_id;
	m->request_id = t->id = id;
	m->volume_id = c->v->info.id;
	m->node_id = c->node.id;
	m->epoch = c->v->epoch;
	m->data_len = (uint32_t)data_len;
	n = qbd_wire_encode(m, t->hdr, sizeof(t->hdr));
	if (n < 0) {
		free(t);
		return (int)n;
	}
	t->hdr_len = (size_t)n;
	t->data = data;
	t->data_len = data_len;
	if (c->q_tail)
		c->q_tail->next = t;
	else
		c->q_head = t;
	c->q_tail = t;
	/* Plugged (qbd_plug, or inside qbd_process): sent by qbd_unplug,
	 * with whatever else is queued for this replica by then. */
	if (c->state != QBD_C_CONNECTING && !c->v->plugged && conn_flush_queue(c) < 0)
		return -EPIPE;
	return 0;
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
	       QBD_CORE_F_BITMAP == QBD_WIRE_F_BITMAP,
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
		m.flags = cm->flags; /* BITMAP for BLOCK_STATUS */
		break;
	case QBD_CM_WRITE:
		m.type = QBD__MSG_TYPE__WRITE;
		m.expected_version = cm->expected_version;
		m.new_version = cm->new_version;
		m.flags = cm->flags;
		if (!(cm->flags & QBD_WIRE_F_ZERO)) {
			data = cm->data;
			len = cm->length;
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

static const struct qbd_core_ops core_ops = {
	.send = core_send, .data_moved = core_data_moved, .drop = core_drop,
	.complete = core_complete, .log = core_log,
};

/* ---- connection ---- */

static void conn_close_fd(struct qbd_conn *c)
{
	if (c->fd >= 0) {
		epoll_ctl(c->v->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->want_out = false;
	conn_free_queue(c);
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
	if (was == QBD_C_UP && v->core && !c->core_dropped)
		qbd_core_replica_down(v->core, c->idx, qbd_now_ns());
	c->core_dropped = false;
}

static void conn_send_ctl(struct qbd_conn *c, int type)
{
	Qbd__Msg m = QBD__MSG__INIT;

	m.type = type;
	if (conn_queue(c, &m, QBD_CLIENT_CTL_ID | ++c->next_ctl, NULL, 0) < 0) {
		conn_fail(c, "cannot send handshake");
		return;
	}
	c->deadline_ns = qbd_now_ns() + QBD_CLIENT_HANDSHAKE_NS;
}

static void conn_send_hello(struct qbd_conn *c)
{
	Qbd__Msg m = QBD__MSG__INIT;

	m.type = QBD__MSG_TYPE__HELLO;
	if (c->v->secret.len) {
		qbd_auth_nonce(c->nonce);
		m.nonce.data = c->nonce;
		m.nonce.len = sizeof c->nonce;
	}
	if (conn_queue(c, &m, QBD_CLIENT_CTL_ID | ++c->next_ctl, NULL, 0) < 0) {
		conn_fail(c, "cannot send handshake");
		return;
	}
	c->deadline_ns = qbd_now_ns() + QBD_CLIENT_HANDSHAKE_NS;
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
	c->deadline_ns = qbd_now_ns() + QBD_CLIENT_HANDSHAKE_NS;
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
	size_t n = m->data_len / QBD_WIRE_ENTRY, nflagged = 0;
	int err;

	c->open_status = m->status;
	if (m->status) {
		qbd_warn(COMP, "replica %u node %016llx: OPEN epoch %llu: %s (promised %llu)",
			 c->idx, (unsigned long long)c->node.id,
			 (unsigned long long)v->epoch, strerror(-m->status),
			 (unsigned long long)m->epoch);
		return -EPROTO;
	}
	if (m->data_len % QBD_WIRE_ENTRY || (m->data_len && !d)) {
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
		if (qbd_wire_get_entry(d + QBD_WIRE_ENTRY * i, &list[i].chunk,
				       &list[i].version, &list[i].flags) < 0) {
			qbd_err(COMP, "replica %u: OPEN chunk list entry %zu has unknown flags",
				c->idx, i);
			free(list);
			return -EPROTO;
		}
		nflagged += list[i].flags != 0;
	}
	err = qbd_core_replica_open(v->core, c->idx, list, n, qbd_now_ns());
	free(list);
	if (err) {
		qbd_err(COMP, "replica %u: bad OPEN chunk list: %s", c->idx,
			strerror(-err));
		return -EPROTO;
	}
	c->state = QBD_C_UP;
	qbd_info(COMP, "replica %u node %016llx (%s, zone %s) up at epoch %llu, %zu chunks listed, %zu flagged",
		 c->idx, (unsigned long long)c->node.id, c->node.addr,
		 c->node.zone, (unsigned long long)v->epoch, n, nflagged);
	return 0;
}

/* A PING reply lists the replica's flagged chunks (at most
 * QBD_WIRE_MAX_FLAGGED; m->flagged counts them all). A malformed list is
 * the replica failing: -EPROTO drops the connection. */
static int conn_on_ping_report(struct qbd_conn *c, const Qbd__Msg *m, const void *data)
{
	struct qbd_chunk_version list[QBD_WIRE_MAX_FLAGGED];
	size_t n = m->data_len / QBD_WIRE_ENTRY;
	int err;

	if (m->data_len % QBD_WIRE_ENTRY || n > QBD_WIRE_MAX_FLAGGED ||
	    (m->data_len && !data) || m->flagged < n) {
		qbd_err(COMP, "replica %u: PING reply with %u bytes of flagged chunks (%llu in all)",
			c->idx, m->data_len, (unsigned long long)m->flagged);
		return -EPROTO;
	}
	for (size_t i = 0; i < n; i++)
		if (qbd_wire_get_entry((const uint8_t *)data + QBD_WIRE_ENTRY * i, &list[i].chunk,
				       &list[i].version, &list[i].flags) < 0) {
			qbd_err(COMP, "replica %u: PING report entry %zu has unknown flags",
				c->idx, i);
			return -EPROTO;
		}
	err = qbd_core_replica_flagged(c->v->core, c->idx, list, n, m->flagged, qbd_now_ns());
	if (err) {
		qbd_err(COMP, "replica %u: bad PING report of flagged chunks: %s", c->idx,
			strerror(-err));
		return -EPROTO;
	}
	return 0;
}

static void *rx_on_header(void *user, const Qbd__Msg *m)
{
	struct qbd_conn *c = user;
	void *buf;

	if (c->fd < 0)
		return QBD_WIRE_DISCARD;
	if (m->reply && m->type == QBD__MSG_TYPE__PING &&
	    m->data_len > QBD_WIRE_MAX_FLAGGED * QBD_WIRE_ENTRY)
		return QBD_WIRE_DISCARD; /* on_frame refuses it */
	if (!m->reply || m->type != QBD__MSG_TYPE__READ || m->data_len == 0)
		return NULL;
	if (c->state != QBD_C_UP || m->status)
		return QBD_WIRE_DISCARD;
	buf = qbd_core_reply_buf(c->v->core, c->idx, m->request_id, m->data_len);
	return buf ? buf : QBD_WIRE_DISCARD;
}

/* The HELLO reply: with a secret, check the replica's proof and send ours
 * (AUTH, ahead of OPEN on the same stream). 0 or -EACCES (logged). */
static int conn_authenticate(struct qbd_conn *c, const Qbd__Msg *m)
{
	struct qbd_volume *v = c->v;
	Qbd__Msg a = QBD__MSG__INIT;
	uint8_t mac[QBD_AUTH_MAC];

	if (!v->secret.len) {
		if (!m->nonce.len)
			return 0;
		qbd_err(COMP, "replica %u (%s) requires authentication: give this client "
			"the cluster secret (secret-file, $%s)", c->idx, c->node.addr,
			QBD_AUTH_SECRET_ENV);
		c->open_status = -EACCES;
		return -EACCES;
	}
	if (m->nonce.len != QBD_AUTH_NONCE ||
	    !qbd_auth_check(&v->secret, QBD_AUTH_SERVER, v->cluster_id, c->nonce,
			    m->nonce.data, m->mac.data, m->mac.len)) {
		qbd_err(COMP, "replica %u (%s) %s: not trusted", c->idx, c->node.addr,
			m->nonce.len ? "did not prove the cluster secret (the secrets differ)"
				     : "does not authenticate (it has no cluster secret)");
		c->open_status = -EACCES;
		return -EACCES;
	}
	qbd_auth_mac(&v->secret, QBD_AUTH_CLIENT, v->cluster_id, m->nonce.data, c->nonce,
		     mac);
	a.type = QBD__MSG_TYPE__AUTH;
	a.mac.data = mac;
	a.mac.len = sizeof mac;
	if (conn_queue(c, &a, QBD_CLIENT_CTL_ID | ++c->next_ctl, NULL, 0) < 0) {
		conn_fail(c, "cannot send AUTH");
		return -EPIPE;
	}
	return 0;
}

static int rx_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct qbd_conn *c = user;
	int status;

	if (c->fd < 0)
		return -ECONNRESET; /* failed while handling an earlier frame */
	if (!m->reply || m->cluster_id != c->v->cluster_id) {
		qbd_err(COMP, "replica %u: unexpected message %s (cluster %016llx)",
			c->idx, qbd_wire_type_name(m->type),
			(unsigned long long)m->cluster_id);
		return -EPROTO;
	}
	if (m->type == QBD__MSG_TYPE__AUTH) {
		if (m->status) {
			qbd_err(COMP, "replica %u (%s) refused our authentication: the "
				"cluster secrets differ", c->idx, c->node.addr);
			c->open_status = -EACCES;
			return -EPROTO;
		}
		return 0;
	}
	if (c->state == QBD_C_HELLO && m->type == QBD__MSG_TYPE__HELLO) {
		if (m->status == -EACCES) {
			qbd_err(COMP, "replica %u (%s) requires authentication: give this "
				"client the cluster secret (secret-file, $%s)", c->idx,
				c->node.addr, QBD_AUTH_SECRET_ENV);
			c->open_status = -EACCES;
			return -EPROTO;
		}
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
		if (conn_authenticate(c, m) < 0)
			return -EPROTO;
		c->state = QBD_C_OPEN;
		conn_send_ctl(c, QBD__MSG_TYPE__OPEN);
		return 0;
	}
	if (c->state == QBD_C_OPEN && m->type == QBD__MSG_TYPE__OPEN)
		return conn_on_open_reply(c, m, data);
	if (c->state != QBD_C_UP)
		return -EPROTO;
	if (m->request_id & QBD_CLIENT_CTL_ID)
		return 0;
	status = m->status;
	if (m->type == QBD__MSG_TYPE__PING && !status && (m->data_len || m->flagged) &&
	    conn_on_ping_report(c, m, data) < 0)
		return -EPROTO;
	if (m->type == QBD__MSG_TYPE__READ && !status && data == NULL) {
		/* The core did not want these bytes (a late reply): drop. */
		qbd_debug(COMP, "replica %u: unmatched READ reply %llu", c->idx,
			  (unsigned long long)m->request_id);
		return 0;
	}
	if (m->type == QBD__MSG_TYPE__READ)
		/* The reply carries the chunk's flags as of the reply: a
		 * probe trusts a copy by them. */
		qbd_core_read_reply(c->v->core, c->idx, m->request_id, status,
				    m->version, m->flags, qbd_now_ns());
	else
		qbd_core_reply(c->v->core, c->idx, m->request_id, status, m->version,
			       qbd_now_ns());
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
		conn_send_hello(c);
		return;
	}
	if ((events & EPOLLOUT) && conn_flush_queue(c) < 0) {
		conn_fail(c, "send failed");
		return;
	}
	if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		return;
	for (int i = 0; i < 16 && c->fd >= 0; i++) {
		/* The rest of a large READ payload goes straight into the
		 * user's buffer (one copy, the kernel's); the rest through
		 * buf. */
		size_t dlen = 0;
		void *d = qbd_wire_rx_direct(&c->rx, &dlen);
		bool direct = d && dlen >= QBD_CLIENT_DIRECT_MIN;
		size_t want = direct ? dlen : sizeof(buf);
		ssize_t n = read(c->fd, direct ? d : buf, want);
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
		c->rx_bytes += (uint64_t)n;
		c->in_feed = true;
		err = direct ? qbd_wire_rx_placed(&c->rx, (size_t)n, &rx_ops, c)
			     : qbd_wire_rx_feed(&c->rx, buf, (size_t)n, &rx_ops, c);
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
		/* A short read emptied the socket: epoll (level-triggered)
		 * says when more comes, without a read that fails EAGAIN. */
		if ((size_t)n < want)
			return;
	}
}

/* The keeper found an address for replica c in its node record (the
 * node registered again, here or elsewhere): connect there from now on,
 * at once if c is down. A connection that is up stays as it is. */
static void conn_take_addr(struct qbd_conn *c, const struct qbd_node_addr *a)
{
	qbd_info(COMP, "replica %u node %016llx: %s %s (zone %s) from its node record%s%s%s",
		 c->idx, (unsigned long long)c->node.id,
		 c->no_addr ? "found at" : "moved to", a->addr, a->zone,
		 c->node.addr[0] ? " (was " : "", c->node.addr, c->node.addr[0] ? ")" : "");
	memcpy(&c->sa, &a->sa, sizeof(c->sa));
	c->salen = a->salen;
	snprintf(c->node.addr, sizeof(c->node.addr), "%s", a->addr);
	snprintf(c->node.zone, sizeof(c->node.zone), "%s", a->zone);
	c->no_addr = false;
	c->retries = 0;
	if (c->state == QBD_C_DOWN)
		c->retry_ns = 0;
}

static void tick(struct qbd_volume *v)
{
	uint64_t now = qbd_now_ns();

	if (!v->opening && !v->closing) {
		struct qbd_node_addr addrs[QBD_CORE_MAX_REPLICAS];
		uint32_t fresh = qbd_attach_addrs(v, addrs);

		for (unsigned r = 0; fresh && r < v->info.replicas; r++)
			if (fresh & 1u << r)
				conn_take_addr(&v->conns[r], &addrs[r]);
	}
	for (unsigned r = 0; r < v->info.replicas; r++) {
		struct qbd_conn *c = &v->conns[r];

		if (c->state == QBD_C_DOWN) {
			if (!v->opening && !v->closing && !c->no_addr && now >= c->retry_ns)
				conn_connect(c);
			continue;
		}
		if ((c->state != QBD_C_UP || !c->deadline_ns) && now > c->deadline_ns)
			conn_fail(c, c->state == QBD_C_UP ? "send failed"
							  : "handshake timed out");
	}
	if (!v->opening && v->core)
		qbd_core_tick(v->core, now);
	if (v->keeper && !v->opening)
		qbd_attach_status(v);
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

/* ---- open / close ---- */

int qbd_client_resolve(const char *addr, struct sockaddr_storage *sa, socklen_t *salen,
		       char *why, size_t why_len)
{
	char host[QBD_ADDR_MAX];
	char port[8];
	uint16_t p;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	int err;

	if (qbd_parse_hostport(addr, host, sizeof(host), &p) < 0) {
		snprintf(why, why_len, "bad address '%s'", addr);
		return -EINVAL;
	}
	snprintf(port, sizeof(port), "%u", p);
	err = getaddrinfo(host, port, &hints, &ai);
	if (err || !ai) {
		snprintf(why, why_len, "cannot resolve '%s': %s", addr, gai_strerror(err));
		return -EHOSTUNREACH;
	}
	memcpy(sa, ai->ai_addr, ai->ai_addrlen);
	*salen = ai->ai_addrlen;
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

/* clean: the writer flushed and stops here (see attach.c). */
static void volume_free(struct qbd_volume *v, bool clean)
{
	v->closing = true;
	qbd_attach_release(v, clean);
	for (unsigned r = 0; r < QBD_CORE_MAX_REPLICAS; r++)
		if (v->conns[r].v)
			conn_fail(&v->conns[r], "closing");
	if (v->epfd >= 0)
		close(v->epfd);
	if (v->tfd >= 0)
		close(v->tfd);
	if (v->efd >= 0)
		close(v->efd);
	qbd_core_free(v->core);
	qbd_secret_clear(&v->secret);
	free(v);
}

/* Replica r's node record and address into v->conns[r]. A replica whose
 * record is gone or whose address does not resolve (its node died for
 * good, or its name left the DNS) starts down, with no_addr set: the
 * volume attaches with the others, and the keeper looks the node up
 * again (attach.c). Said once, here, naming the node and why. 0, or
 * -errno when etcd cannot be read (then nothing can be attached). */
static int meta_load_node(struct qbd_meta *m, struct qbd_volume *v, unsigned r)
{
	struct qbd_conn *c = &v->conns[r];
	char why[QBD_ADDR_MAX + 96];
	int err = qbd_meta_node_get(m, v->info.nodes[r], &c->node);

	if (err && err != -ENOENT && err != -EPROTO) {
		qbd_err(COMP, "open: node %016llx: %s", (unsigned long long)v->info.nodes[r],
			strerror(-err));
		return err;
	}
	if (err) {
		memset(&c->node, 0, sizeof(c->node));
		snprintf(why, sizeof(why), "%s", err == -ENOENT ? "no node record in etcd"
							       : "its node record is malformed");
	}
	c->node.id = v->info.nodes[r];
	if (!err)
		err = qbd_client_resolve(c->node.addr, &c->sa, &c->salen, why, sizeof(why));
	if (!err)
		return 0;
	c->no_addr = true;
	qbd_warn(COMP, "replica %u node %016llx: %s: it starts down (the attach goes on "
		 "if enough other replicas remain) and is looked up again every %u s",
		 r, (unsigned long long)c->node.id, why, QBD_CLIENT_LOOKUP_EVERY_S);
	return 0;
}

static int meta_load(const struct qbd_open_opts *o, struct qbd_volume *v)
{
	const char *url = o->etcd ? o->etcd : getenv("QBD_ETCD");
	struct qbd_meta *m = NULL;
	unsigned addressed = 0, need;
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
	if (v->info.replicas == 0 || v->info.replicas > QBD_CORE_MAX_REPLICAS ||
	    v->info.write_quorum == 0 || v->info.write_quorum > v->info.replicas ||
	    v->info.chunk_size == 0 || v->info.size == 0) {
		qbd_err(COMP, "open: volume '%s' has a bad record", o->volume);
		err = -EPROTO;
		goto out;
	}
	for (unsigned r = 0; r < v->info.replicas; r++) {
		err = meta_load_node(m, v, r);
		if (err)
			goto out;
		addressed += !v->conns[r].no_addr;
	}
	/* Refused before the epoch is taken: a writer that cannot reach
	 * enough replicas must not fence the one that may. */
	need = QBD_MAX(v->info.write_quorum, v->info.replicas - v->info.write_quorum + 1);
	if (addressed < need) {
		qbd_err(COMP, "open '%s': only %u of %u replicas have a node record with an "
			"address that resolves, need %u to attach (see above)", o->volume,
			addressed, v->info.replicas, need);
		err = -EIO;
		goto out;
	}
	err = qbd_attach_take(v, o, m);
out:
	qbd_meta_close(m);
	return err;
}

/* The cluster secret, before anything changes in etcd. */
static int secret_load(const struct qbd_open_opts *o, struct qbd_volume *v)
{
	const char *path = o->secret_file ? o->secret_file : getenv(QBD_AUTH_SECRET_ENV);
	char why[256];
	int err;

	if (!path || !*path)
		return 0;
	err = qbd_secret_load(path, &v->secret, why, sizeof why);
	if (err)
		qbd_err(COMP, "open '%s': %s", o->volume, why);
	return err;
}

int qbd_open(const struct qbd_open_opts *o, struct qbd_volume **out)
{
	struct qbd_volume *v;
	unsigned timeout = o->timeout_ms ? o->timeout_ms : 10000;
	struct qbd_core_cfg cfg = { 0 };
	uint64_t deadline;
	bool eperm = false, eacces = false, graced = false;
	unsigned need, unaddressed = 0;
	int err;

	*out = NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->epfd = v->tfd = v->efd = -1;
	err = volume_setup(v);
	if (err)
		goto fail;
	err = secret_load(o, v);
	if (err)
		goto fail;
	err = meta_load(o, v);
	if (err)
		goto fail;
	if (v->epoch > QBD_CORE_MAX_EPOCH) {
		qbd_err(COMP, "open '%s': epoch %llu is past the last one versions can carry",
			o->volume, (unsigned long long)v->epoch);
		err = -EOVERFLOW;
		goto fail;
	}
	v->nchunks = (v->info.size + v->info.chunk_size - 1) / v->info.chunk_size;
	cfg.replicas = v->info.replicas;
	cfg.write_quorum = v->info.write_quorum;
	cfg.nchunks = v->nchunks;
	cfg.chunk_size = v->info.chunk_size;
	cfg.block_size = QBD_BLOCK_SIZE;
	cfg.epoch = v->epoch;
	cfg.resync_rate = o->resync_rate;
	cfg.takeover_wait_ns = v->takeover_wait_ns;
	cfg.pull = true;
	for (unsigned r = 0; r < v->info.replicas; r++)
		if (o->zone && !strcmp(o->zone, v->conns[r].node.zone))
			cfg.local |= 1u << r;
	err = qbd_core_new(&cfg, &core_ops, v, &v->core);
	if (err)
		goto fail;
	v->opening = true;
	for (unsigned r = 0; r < v->info.replicas; r++) {
		struct qbd_conn *c = &v->conns[r];

		c->v = v;
		c->idx = r;
		c->fd = -1;
		qbd_wire_rx_init(&c->rx);
		if (c->no_addr)
			c->failed_open = true; /* said in meta_load_node */
		else
			conn_connect(c);
	}
	deadline = qbd_now_ns() + (uint64_t)timeout * 1000000ull;
	need = QBD_MAX(v->info.write_quorum, v->info.replicas - v->info.write_quorum + 1);
	for (;;) {
		unsigned pending = 0, up = 0;
		struct pollfd pfd = { .fd = v->epfd, .events = POLLIN };

		for (unsigned r = 0; r < v->info.replicas; r++) {
			pending += v->conns[r].state != QBD_C_UP &&
				   !v->conns[r].failed_open;
			up += v->conns[r].state == QBD_C_UP;
		}
		if (!pending || qbd_now_ns() >= deadline)
			break;
		/* Enough promises: the others get a short grace, then join
		 * later as any replica coming back does. A replica that does
		 * not answer (its zone cut off) would otherwise hold a
		 * takeover for the whole handshake timeout. */
		if (up >= need && !graced) {
			graced = true;
			if (deadline > qbd_now_ns() + QBD_CLIENT_OPEN_GRACE_NS)
				deadline = qbd_now_ns() + QBD_CLIENT_OPEN_GRACE_NS;
		}
		poll(&pfd, 1, QBD_CLIENT_TICK_MS);
		qbd_process(v);
	}
	for (unsigned r = 0; r < v->info.replicas; r++) {
		struct qbd_conn *c = &v->conns[r];

		eperm |= c->open_status == -EPERM;
		eacces |= c->open_status == -EACCES;
		unaddressed += c->no_addr;
		if (c->state != QBD_C_UP)
			conn_fail(c, "not opened in time");
		c->failed_open = false;
	}
	v->opening = false;
	err = qbd_core_open_done(v->core, qbd_now_ns());
	if (err) {
		err = eperm ? -EPERM : eacces ? -EACCES : -EIO;
		qbd_err(COMP, "open '%s': only %u of %u replicas promised epoch %llu, need %u%s%s",
			o->volume, qbd_core_up_count(v->core), v->info.replicas,
			(unsigned long long)v->epoch, need,
			eperm ? " (fenced by a newer epoch)" :
			eacces ? " (authentication refused: see above)" : "",
			unaddressed ? " (some have no node record or address: see above)" : "");
		goto fail;
	}
	err = qbd_attach_start(v);
	if (err)
		goto fail;
	qbd_info(COMP, "opened volume '%s' id %016llx epoch %llu: %u of %u replicas up",
		 o->volume, (unsigned long long)v->info.id,
		 (unsigned long long)v->epoch, qbd_core_up_count(v->core),
		 v->info.replicas);
	*out = v;
	return 0;
fail:
	volume_free(v, false);
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

int qbd_close(struct qbd_volume *v)
{
	int err = -EPERM;

	if (!v)
		return 0;
	wait_idle(v);
	if (!qbd_core_fenced(v->core)) {
		err = qbd_flush(v);
		if (err)
			qbd_warn(COMP, "close: flush: %s", strerror(-err));
	}
	volume_free(v, err == 0);
	return err;
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
	struct qbd_core_replica_info ri;

	if (i >= v->info.replicas)
		return -EINVAL;
	c = &v->conns[i];
	memset(out, 0, sizeof(*out));
	out->node_id = c->node.id;
	snprintf(out->addr, sizeof(out->addr), "%s", c->node.addr);
	snprintf(out->zone, sizeof(out->zone), "%s", c->node.zone);
	out->connected = c->state == QBD_C_UP;
	if (qbd_core_replica_info(v->core, i, &ri) == 0) {
		out->stale_chunks = ri.stale_chunks;
		out->resync_done = ri.resync_done;
		out->resync_total = ri.resync_total;
	}
	return 0;
}

int qbd_replica_counters(const struct qbd_volume *v, unsigned i,
			 struct qbd_replica_counters *out)
{
	if (i >= v->info.replicas)
		return -EINVAL;
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
