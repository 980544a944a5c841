/* SPDX-License-Identifier: Apache-2.0 */
/* A small blocking client of the qbd wire protocol for administrative
 * requests from the CLI (DELETE_VOLUME). */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/wire/wire.h"
#include "internal.h"

struct admin_rx {
	int status;
	int got;
	int type;
};

static void *admin_on_header(void *user, const Qbd__Msg *m)
{
	(void)user;
	(void)m;
	return QBD_WIRE_DISCARD;
}

static int admin_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct admin_rx *a = user;

	(void)data;
	a->status = m->status;
	a->type = m->type;
	a->got = 1;
	return 1;
}

static const struct qbd_wire_rx_ops admin_ops = { admin_on_header, admin_on_frame };

/* Send m, wait (3 s) for one reply. */
static int admin_call(int fd, struct qbd_wire_rx *rx, Qbd__Msg *m)
{
	uint8_t hdr[QBD_WIRE_FRAME_MAX_PREFIX], buf[4096];
	struct admin_rx a = { 0 };
	ssize_t h;

	m->data_len = 0;
	h = qbd_wire_encode(m, hdr, sizeof hdr);
	if (h < 0)
		return (int)h;
	if (qbd_write_full(fd, hdr, (size_t)h) < 0)
		return -EIO;
	while (!a.got) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 3000) <= 0)
			return -ETIMEDOUT;
		ssize_t n = read(fd, buf, sizeof buf);
		if (n <= 0)
			return -ECONNRESET;
		int r = qbd_wire_rx_feed(rx, buf, (size_t)n, &admin_ops, &a);
		if (r < 0)
			return r;
	}
	return a.status;
}

int admin_delete_volume(const struct qbd_node_info *node, uint64_t cluster_id,
			uint64_t volume_id, uint64_t epoch)
{
	char host[QBD_ADDR_MAX], port[8];
	uint16_t p;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	struct qbd_wire_rx rx;
	Qbd__Msg m;
	int fd, r;

	if (qbd_parse_hostport(node->addr, host, sizeof host, &p) < 0)
		return -EINVAL;
	snprintf(port, sizeof port, "%u", p);
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -EHOSTUNREACH;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		freeaddrinfo(ai);
		return -errno;
	}
	struct timeval tv = { 3, 0 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	r = connect(fd, ai->ai_addr, ai->ai_addrlen) == -1 ? -errno : 0;
	freeaddrinfo(ai);
	if (r < 0) {
		close(fd);
		return r;
	}
	qbd_wire_rx_init(&rx);
	qbd__msg__init(&m);
	m.type = QBD__MSG_TYPE__HELLO;
	m.cluster_id = cluster_id;
	m.node_id = node->id;
	m.request_id = 1;
	r = admin_call(fd, &rx, &m);
	if (r == 0) {
		qbd__msg__init(&m);
		m.type = QBD__MSG_TYPE__DELETE_VOLUME;
		m.cluster_id = cluster_id;
		m.node_id = node->id;
		m.volume_id = volume_id;
		m.epoch = epoch;
		m.request_id = 2;
		r = admin_call(fd, &rx, &m);
	}
	qbd_wire_rx_reset(&rx);
	close(fd);
	return r;
}
