/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqbd: one replica's connection. Sending: a send queue of encoded
 * messages, written as many per sendmsg as fit, EPOLLOUT while it is not
 * empty. Connecting without blocking, then the handshake: HELLO, AUTH
 * when the cluster has a secret, OPEN at the volume's epoch. Receiving:
 * the wire's rx callbacks feed replies to the core (READ data straight
 * into its buffer), the OPEN reply's chunk list and a PING's report of
 * flagged chunks. Failing (close, tell the core, retry later) and taking
 * a new address the keeper found (attach.c). A replica that refuses
 * this writer for good (EIDRM: the node was removed from the volume;
 * EPERM to an OPEN after attach) is not tried again, and after attach
 * it fences the writer.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/client/internal.h"

#define COMP "client"

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
int conn_flush_queue(struct qbd_conn *c)
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
int conn_queue(struct qbd_conn *c, Qbd__Msg *m, uint64_t id,
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

void conn_fail(struct qbd_conn *c, const char *why)
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
	c->retry_ns = c->refused ? UINT64_MAX : qbd_now_ns() + QBD_CLIENT_RETRY_NS;
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
	/* A change's new replica: a node removed from the volume before
	 * keeps a tombstone that only an OPEN with ADD (at an epoch above
	 * it) replaces. */
	if (type == QBD__MSG_TYPE__OPEN && c->adding)
		m.flags = QBD_WIRE_F_ADD;
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

void conn_connect(struct qbd_conn *c)
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

/*
 * Replica c refuses this writer for good: status -EIDRM (its store has a
 * tombstone for the volume: the node was removed from it) to any
 * request, or -EPERM (a newer epoch was promised) to an OPEN after
 * attach. While attaching, a removed replica just does not count as a
 * promiser (qbd_open counts those that promised). After attach, the
 * configuration or the epoch this writer holds is no longer the
 * volume's: it fences itself, instead of trying the OPEN again for
 * ever. Either way c is not tried again. Returns -EPROTO (the caller
 * drops the connection).
 */
static int conn_refused(struct qbd_conn *c, const Qbd__Msg *m)
{
	struct qbd_volume *v = c->v;
	bool removed = m->status == -EIDRM;
	char why[128];

	c->refused = true;
	snprintf(why, sizeof why, removed ? "removed from volume %016llx (a tombstone at "
		 "epoch %llu)" : "promised a newer epoch (%llu) than ours for volume %016llx",
		 removed ? (unsigned long long)v->info.id : (unsigned long long)m->epoch,
		 removed ? (unsigned long long)m->epoch : (unsigned long long)v->info.id);
	if (v->opening) {
		qbd_warn(COMP, "replica %u node %016llx (%s): %s: %s at epoch %llu refused, not counted "
			 "as a promiser and not tried again", c->idx,
			 (unsigned long long)c->node.id, c->node.addr, why,
			 qbd_wire_type_name(m->type), (unsigned long long)v->epoch);
		return -EPROTO;
	}
	qbd_err(COMP, "replica %u node %016llx (%s): %s: %s at epoch %llu refused after "
		"attach; this writer no longer holds the volume's configuration or epoch "
		"and is fenced", c->idx, (unsigned long long)c->node.id, c->node.addr, why,
		qbd_wire_type_name(m->type), (unsigned long long)v->epoch);
	if (v->core)
		qbd_core_fence(v->core, c->idx);
	return -EPROTO;
}

static int conn_on_open_reply(struct qbd_conn *c, Qbd__Msg *m, void *data)
{
	struct qbd_volume *v = c->v;
	const uint8_t *d = data;
	struct qbd_chunk_version *list = NULL;
	size_t n = m->data_len / QBD_WIRE_ENTRY, nflagged = 0;
	int err;

	c->open_status = m->status;
	if (m->status == -EIDRM || (m->status == -EPERM && !v->opening))
		return conn_refused(c, m);
	if (m->status) {
		/* The two limits of a chunk server an OPEN can meet, named. */
		const char *limit =
			m->status == -ENOSPC ? ": its promise table is full (the chunk server's "
					       "log says how many volumes it holds)" :
			m->status == -EMSGSIZE ? ": the volume's chunk list there is longer than "
						 "one OPEN reply carries (64 MiB of entries, "
						 "4 Mi chunks)" : "";

		qbd_warn(COMP, "replica %u node %016llx: OPEN epoch %llu: %s (promised %llu)%s",
			 c->idx, (unsigned long long)c->node.id,
			 (unsigned long long)v->epoch, strerror(-m->status),
			 (unsigned long long)m->epoch, limit);
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
	if (status == -EIDRM)
		return conn_refused(c, m);
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
	else {
		if (m->type == QBD__MSG_TYPE__PULL)
			/* The bytes that crossed to it (the source's
			 * written blocks), for counters and the rate. */
			qbd_core_pull_copied(c->v->core, c->idx, m->request_id, m->length,
					     qbd_now_ns());
		qbd_core_reply(c->v->core, c->idx, m->request_id, status, m->version,
			       qbd_now_ns());
	}
	return 0;
}

static const struct qbd_wire_rx_ops rx_ops = {
	.on_header = rx_on_header,
	.on_frame = rx_on_frame,
};

void conn_event(struct qbd_conn *c, uint32_t events)
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
void conn_take_addr(struct qbd_conn *c, const struct qbd_node_addr *a)
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
	if (c->state == QBD_C_DOWN && !c->refused)
		c->retry_ns = 0;
}
