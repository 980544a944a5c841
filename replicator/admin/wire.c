/* SPDX-License-Identifier: Apache-2.0 */
/* A small blocking client of the qbd wire protocol for administrative
 * requests (DELETE_VOLUME, CHECKSUM, USAGE, TOMBSTONE, and the OPEN of a
 * fence) from the CLI and the CSI driver. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/util.h"
#include "replicator/wire/wire.h"
#include "admin.h"

struct admin_rx {
	int status;
	int got;
	int type;
	uint64_t version, checksum, epoch;
	struct admin_usage usage;
	size_t nonce_len, mac_len;
	uint8_t nonce[QBD_AUTH_NONCE], mac[QBD_AUTH_MAC];
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
	a->version = m->version;
	a->checksum = m->checksum;
	a->epoch = m->epoch;
	a->usage.chunks = m->chunks;
	a->usage.held = m->held;
	a->usage.used = m->used;
	a->usage.capacity = m->capacity;
	a->usage.free_slots = m->free_slots;
	a->nonce_len = m->nonce.len;
	if (m->nonce.len == QBD_AUTH_NONCE)
		memcpy(a->nonce, m->nonce.data, QBD_AUTH_NONCE);
	a->mac_len = m->mac.len;
	if (m->mac.len == QBD_AUTH_MAC)
		memcpy(a->mac, m->mac.data, QBD_AUTH_MAC);
	a->got = 1;
	return 1;
}

static const struct qbd_wire_rx_ops admin_ops = { admin_on_header, admin_on_frame };

/* Send m, wait (3 s) for one reply; *out (may be NULL) gets it. */
static int admin_call(int fd, struct qbd_wire_rx *rx, Qbd__Msg *m,
		      struct admin_rx *out)
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
	if (out)
		*out = a;
	return a.status;
}

/* A request of type on ac: its cluster, node and next request id. */
static void admin_msg(struct admin_conn *ac, Qbd__Msg *m, int type)
{
	qbd__msg__init(m);
	m->type = type;
	m->cluster_id = ac->cluster_id;
	m->node_id = ac->node_id;
	m->request_id = ac->next_id++;
}

/* The cluster secret (admin_secret_file), read once. */
static const struct qbd_secret *admin_secret(void)
{
	static struct qbd_secret s;
	static int loaded;
	char why[256];

	if (!loaded && admin_secret_file && *admin_secret_file) {
		if (qbd_secret_load(admin_secret_file, &s, why, sizeof why) < 0)
			fprintf(stderr, "qbd: %s\n", why);
	}
	loaded = 1;
	return &s;
}

const char *admin_secret_file;

/* HELLO and, with a secret, the challenge-response (common/auth.h). */
static int admin_hello(struct admin_conn *ac)
{
	const struct qbd_secret *s = admin_secret();
	uint8_t nonce[QBD_AUTH_NONCE], mac[QBD_AUTH_MAC];
	struct admin_rx a;
	Qbd__Msg m;
	int r;

	admin_msg(ac, &m, QBD__MSG_TYPE__HELLO);
	if (s->len) {
		qbd_auth_nonce(nonce);
		m.nonce.data = nonce;
		m.nonce.len = sizeof nonce;
	}
	r = admin_call(ac->fd, &ac->rx, &m, &a);
	if (r == -EACCES) {
		qbd_err("admin", "node %016llx requires authentication: give the CLI the "
			"cluster secret (--secret-file, $%s, or secret-file in qbd.conf)",
			(unsigned long long)ac->node_id, QBD_AUTH_SECRET_ENV);
		return r;
	}
	if (r < 0)
		return r;
	if (!s->len)
		return a.nonce_len ? -EACCES : 0;
	if (a.nonce_len != QBD_AUTH_NONCE ||
	    !qbd_auth_check(s, QBD_AUTH_SERVER, ac->cluster_id, nonce, a.nonce, a.mac,
			    a.mac_len)) {
		qbd_err("admin", "node %016llx did not prove the cluster secret: not trusted",
			(unsigned long long)ac->node_id);
		return -EACCES;
	}
	qbd_auth_mac(s, QBD_AUTH_CLIENT, ac->cluster_id, a.nonce, nonce, mac);
	admin_msg(ac, &m, QBD__MSG_TYPE__AUTH);
	m.mac.data = mac;
	m.mac.len = sizeof mac;
	return admin_call(ac->fd, &ac->rx, &m, NULL);
}

int admin_connect(const struct qbd_node_info *node, uint64_t cluster_id,
		  struct admin_conn *ac)
{
	char host[QBD_ADDR_MAX], port[8];
	uint16_t p;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	struct timeval tv = { 3, 0 };
	int fd, r;

	ac->fd = -1;
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
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	r = connect(fd, ai->ai_addr, ai->ai_addrlen) == -1 ? -errno : 0;
	freeaddrinfo(ai);
	if (r < 0) {
		close(fd);
		return r;
	}
	ac->fd = fd;
	ac->cluster_id = cluster_id;
	ac->node_id = node->id;
	ac->next_id = 1;
	qbd_wire_rx_init(&ac->rx);
	r = admin_hello(ac);
	if (r < 0)
		admin_close(ac);
	return r;
}

void admin_close(struct admin_conn *ac)
{
	if (ac->fd < 0)
		return;
	qbd_wire_rx_reset(&ac->rx);
	close(ac->fd);
	ac->fd = -1;
}

int admin_checksum(struct admin_conn *ac, uint64_t volume_id, uint64_t chunk,
		   uint64_t *version, uint64_t *checksum)
{
	struct admin_rx a;
	Qbd__Msg m;
	int r;

	admin_msg(ac, &m, QBD__MSG_TYPE__CHECKSUM);
	m.volume_id = volume_id;
	m.chunk = chunk;
	r = admin_call(ac->fd, &ac->rx, &m, &a);
	if (r == 0) {
		*version = a.version;
		*checksum = a.checksum;
	}
	return r;
}

int admin_usage(struct admin_conn *ac, uint64_t volume_id, struct admin_usage *out)
{
	struct admin_rx a;
	Qbd__Msg m;
	int r;

	admin_msg(ac, &m, QBD__MSG_TYPE__USAGE);
	m.volume_id = volume_id;
	r = admin_call(ac->fd, &ac->rx, &m, &a);
	if (r == 0)
		*out = a.usage;
	return r;
}

int admin_delete_volume(const struct qbd_node_info *node, uint64_t cluster_id,
			uint64_t volume_id, uint64_t epoch)
{
	struct admin_conn ac;
	Qbd__Msg m;
	int r;

	r = admin_connect(node, cluster_id, &ac);
	if (r < 0)
		return r;
	admin_msg(&ac, &m, QBD__MSG_TYPE__DELETE_VOLUME);
	m.volume_id = volume_id;
	m.epoch = epoch;
	r = admin_call(ac.fd, &ac.rx, &m, NULL);
	admin_close(&ac);
	return r;
}

int admin_promise(const struct qbd_node_info *node, uint64_t cluster_id,
		  uint64_t volume_id, uint64_t epoch, uint64_t *promised)
{
	struct admin_conn ac;
	struct admin_rx a;
	Qbd__Msg m;
	int r;

	r = admin_connect(node, cluster_id, &ac);
	if (r < 0)
		return r;
	/* A plain OPEN, as a writer's: the reply's chunk list is dropped
	 * unread (admin_on_header). */
	admin_msg(&ac, &m, QBD__MSG_TYPE__OPEN);
	m.volume_id = volume_id;
	m.epoch = epoch;
	r = admin_call(ac.fd, &ac.rx, &m, &a);
	if (promised && (r == 0 || r == -EPERM || r == -EIDRM))
		*promised = a.epoch;
	admin_close(&ac);
	return r;
}

int admin_tombstone(struct admin_conn *ac, uint64_t volume_id, uint64_t epoch,
		    uint64_t *tomb_epoch)
{
	struct admin_rx a;
	Qbd__Msg m;
	int r;

	admin_msg(ac, &m, QBD__MSG_TYPE__TOMBSTONE);
	m.volume_id = volume_id;
	m.epoch = epoch;
	r = admin_call(ac->fd, &ac->rx, &m, &a);
	if (tomb_epoch && (r == 0 || r == -EPERM || r == -EBUSY))
		*tomb_epoch = a.epoch;
	return r;
}
