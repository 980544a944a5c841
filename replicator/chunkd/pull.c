/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Replica-to-replica resync. The writer sends PULL(chunk, new_version,
 * source) to a stale replica; this chunk server reads the chunk from the
 * source chunk server with the writer's epoch (so a deposed writer's pull
 * is refused by a source that promised a newer one), checks that the
 * source holds new_version with its chunk unflagged (a source that
 * crashed and restarted after the writer chose it may hold the version
 * with older contents, SUSPECT), and stores the bytes as a RESYNC write.
 * The bytes never go through the writer, which may sit in another zone,
 * and only the written blocks cross: the read is SPARSE (the source's
 * written bitmap, then those blocks), expanded here to the whole chunk
 * with its holes zeroed, which the RESYNC write stores as holes (and
 * blocks this copy held beyond them are zeroed). The reply's length says
 * how many bytes crossed, for the writer's counters.
 *
 * Connections to other chunk servers (struct peer) are made on demand,
 * kept for later pulls, and dropped on any error. Each pull has 5 seconds;
 * any failure is answered to the writer, which then copies the chunk
 * through itself. A peer's address is numeric (IPv4 or IPv6) or a host
 * name, resolved with uv_getaddrinfo in libuv's thread pool (never on
 * the loop), again for each new connection: a name that stops resolving
 * fails the pull with a message naming it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "common/log.h"
#include "common/sparse.h"
#include "common/util.h"

#define COMP "pull"
#define PULL_TIMEOUT_NS (5ull * 1000000000ull)

struct pull;

struct peer {
	struct chunkd *d;
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_getaddrinfo_t gai;        /* resolving a host name */
	bool resolving;              /* gai in flight: tcp is closed after it */
	uint64_t node_id;
	char addr[QBD_ADDR_MAX];
	bool up, closing;
	struct qbd_wire_rx rx;
	struct pull *head, *tail;    /* waiting (before up) and in flight */
	uint64_t next_id;
	struct peer *next;
	uint8_t hello_hdr[QBD_WIRE_FRAME_MAX_PREFIX];
	uv_write_t hello_w;
	uint8_t nonce[QBD_AUTH_NONCE];   /* our challenge in HELLO */
	uint8_t auth_hdr[QBD_WIRE_FRAME_MAX_PREFIX];
	uv_write_t auth_w;
	uint8_t rbuf[64u << 10];
};

struct pull {
	struct chunkd_req *r;        /* the writer's request; NULL once answered */
	struct peer *p;
	uint64_t id, volume, epoch, chunk, version;
	uint64_t start_ns;
	uint8_t *sp;                 /* the sparse form received */
	bool sent, writing;
	uv_write_t w;
	uint8_t hdr[QBD_WIRE_FRAME_MAX_PREFIX];
	struct pull *next;
};

static void pull_unlink(struct pull *pl)
{
	struct peer *p = pl->p;
	struct pull **pp = &p->head, *prev = NULL;

	while (*pp && *pp != pl) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = pl->next;
	if (p->tail == pl)
		p->tail = prev;
	pl->next = NULL;
}

static void pull_free(struct pull *pl)
{
	free(pl->sp);
	free(pl);
}

/* Answer the writer (err != 0) and free the pull once its write is done. */
static void pull_fail(struct pull *pl, int err)
{
	if (pl->r) {
		req_reply(pl->r, err);
		pl->r = NULL;
	}
	if (!pl->writing)
		pull_free(pl);
}

static void peer_on_close(uv_handle_t *h)
{
	struct peer *p = QBD_CONTAINER_OF((uv_tcp_t *)h, struct peer, tcp);

	qbd_wire_rx_reset(&p->rx);
	free(p);
}

static void peer_fail(struct peer *p, int err, const char *why)
{
	struct peer **pp;

	if (p->closing)
		return;
	p->closing = true;
	qbd_warn(COMP, "peer %016llx (%s): %s", (unsigned long long)p->node_id,
		 p->addr, why);
	for (pp = &p->d->peers; *pp && *pp != p; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = p->next;
	while (p->head) {
		struct pull *pl = p->head;

		p->head = pl->next;
		pl->next = NULL;
		pull_fail(pl, err);
	}
	p->tail = NULL;
	if (p->resolving) {
		/* peer_on_resolved closes it (at once if cancelled). */
		uv_cancel((uv_req_t *)&p->gai);
		return;
	}
	uv_close((uv_handle_t *)&p->tcp, peer_on_close);
}

static void pull_on_written(uv_write_t *w, int status)
{
	struct pull *pl = QBD_CONTAINER_OF(w, struct pull, w);

	pl->writing = false;
	if (!pl->r) {           /* answered meanwhile */
		pull_free(pl);
		return;
	}
	if (status < 0)
		peer_fail(pl->p, -EHOSTUNREACH, "send failed");
}

static void pull_send(struct pull *pl)
{
	struct peer *p = pl->p;
	Qbd__Msg m = QBD__MSG__INIT;
	uv_buf_t b;
	ssize_t h;
	int rc;

	m.type = QBD__MSG_TYPE__READ;
	m.cluster_id = p->d->cluster_id;
	m.request_id = pl->id;
	m.volume_id = pl->volume;
	m.node_id = p->node_id;
	m.epoch = pl->epoch;
	m.chunk = pl->chunk;
	m.offset = 0;
	m.length = p->d->chunk_size;
	m.flags = QBD_WIRE_F_SPARSE;
	h = qbd_wire_encode(&m, pl->hdr, sizeof(pl->hdr));
	if (h < 0) {
		pull_unlink(pl);
		pull_fail(pl, (int)h);
		return;
	}
	b = uv_buf_init((char *)pl->hdr, (unsigned)h);
	pl->sent = true;
	pl->writing = true;
	rc = uv_write(&pl->w, (uv_stream_t *)&p->tcp, &b, 1, pull_on_written);
	if (rc < 0) {
		pl->writing = false;
		peer_fail(p, -EHOSTUNREACH, "send failed");
	}
}

static struct pull *pull_find(struct peer *p, uint64_t id)
{
	for (struct pull *pl = p->head; pl; pl = pl->next)
		if (pl->id == id)
			return pl;
	return NULL;
}

static void *peer_on_header(void *user, const Qbd__Msg *m)
{
	struct peer *p = user;
	uint32_t bmb = qbd_sparse_bitmap_bytes(p->d->chunk_size, QBD_WIRE_BLOCK);
	struct pull *pl;

	if (!m->reply || m->type != QBD__MSG_TYPE__READ || m->status ||
	    m->data_len < bmb || m->data_len - bmb > p->d->chunk_size)
		return m->data_len ? QBD_WIRE_DISCARD : NULL;
	pl = pull_find(p, m->request_id);
	return pl && pl->r ? pl->sp : QBD_WIRE_DISCARD;
}

static void peer_on_auth_written(uv_write_t *w, int status)
{
	struct peer *p = QBD_CONTAINER_OF(w, struct peer, auth_w);

	if (status < 0 && status != UV_ECANCELED && !p->closing)
		peer_fail(p, -EHOSTUNREACH, "cannot send AUTH");
}

/* The HELLO reply: with our secret, check the peer's proof and send ours
 * (before any PULL's READ, on the same stream). 0, or -1 after failing p. */
static int peer_authenticate(struct peer *p, const Qbd__Msg *m)
{
	struct chunkd *d = p->d;
	Qbd__Msg a = QBD__MSG__INIT;
	uint8_t mac[QBD_AUTH_MAC];
	uv_buf_t b;
	ssize_t h;

	if (!d->secret.len) {
		if (m->nonce.len) {
			peer_fail(p, -EHOSTUNREACH, "it requires authentication and this "
				  "chunk server has no cluster secret");
			return -1;
		}
		return 0;
	}
	if (m->nonce.len != QBD_AUTH_NONCE ||
	    !qbd_auth_check(&d->secret, QBD_AUTH_SERVER, d->cluster_id, p->nonce,
			    m->nonce.data, m->mac.data, m->mac.len)) {
		peer_fail(p, -EHOSTUNREACH, m->nonce.len ? "it did not prove the cluster "
			  "secret (the secrets differ)" : "it does not authenticate (no "
			  "cluster secret there)");
		return -1;
	}
	qbd_auth_mac(&d->secret, QBD_AUTH_CLIENT, d->cluster_id, m->nonce.data, p->nonce,
		     mac);
	a.type = QBD__MSG_TYPE__AUTH;
	a.cluster_id = d->cluster_id;
	a.node_id = p->node_id;
	a.request_id = ++p->next_id;
	a.mac.data = mac;
	a.mac.len = sizeof mac;
	h = qbd_wire_encode(&a, p->auth_hdr, sizeof(p->auth_hdr));
	b = uv_buf_init((char *)p->auth_hdr, h > 0 ? (unsigned)h : 0);
	if (h < 0 || uv_write(&p->auth_w, (uv_stream_t *)&p->tcp, &b, 1,
			      peer_on_auth_written) < 0) {
		peer_fail(p, -EHOSTUNREACH, "cannot send AUTH");
		return -1;
	}
	return 0;
}

static int peer_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct peer *p = user;
	struct pull *pl;
	struct chunkd_req *r;
	int st;

	if (!m->reply || m->cluster_id != p->d->cluster_id || m->node_id != p->node_id) {
		peer_fail(p, -EHOSTUNREACH, "unexpected message or wrong node");
		return 1;
	}
	if (m->type == QBD__MSG_TYPE__AUTH) {
		if (m->status) {
			peer_fail(p, -EHOSTUNREACH, "it refused our authentication "
				  "(the cluster secrets differ)");
			return 1;
		}
		return 0;
	}
	if (!p->up) {
		if (m->type != QBD__MSG_TYPE__HELLO || m->status ||
		    m->chunk_size != p->d->chunk_size) {
			peer_fail(p, -EHOSTUNREACH, m->status == -EACCES ?
				  "HELLO refused: authentication required (no cluster secret?)" :
				  "HELLO refused or chunk size differs");
			return 1;
		}
		if (peer_authenticate(p, m) < 0)
			return 1;
		p->up = true;
		for (struct pull *x = p->head; x; x = x->next)
			if (!x->sent)
				pull_send(x);
		return 0;
	}
	pl = pull_find(p, m->request_id);
	if (!pl)
		return 0;
	pull_unlink(pl);
	r = pl->r;
	st = m->status;
	if (r && data)
		r->reply.length = m->data_len; /* crossed, whatever comes of it */
	if (st == -ENOTCONN)
		st = -EAGAIN;       /* the source has not seen this epoch */
	else if (!st && (!data || m->version != pl->version))
		st = -ESTALE;       /* the source does not hold that version */
	else if (!st && (m->flags & QBD_WIRE_CHUNK_FLAGS))
		st = -ESTALE;       /* flagged: the source restarted since the
				     * writer chose it, say; its copy need not
				     * match the version */
	else if (!st && r && qbd_sparse_expand(data, m->data_len, r->data, p->d->chunk_size,
					       QBD_WIRE_BLOCK) < 0) {
		qbd_warn(COMP, "peer %016llx (%s): chunk %llu: %u bytes that are not the "
			 "chunk's written bitmap plus the blocks it marks",
			 (unsigned long long)p->node_id, p->addr,
			 (unsigned long long)m->chunk, m->data_len);
		st = -EPROTO;
	}
	if (st || !r) {
		pull_fail(pl, st ? st : -ECANCELED);
		return 0;
	}
	pl->r = NULL;
	if (!pl->writing)
		pull_free(pl);
	/* Store it: a RESYNC write of the whole chunk at that version. */
	r->er.volume = r->volume;
	r->er.chunk = m->chunk;
	r->er.offset = 0;
	r->er.length = p->d->chunk_size;
	r->er.buf = r->data;
	r->er.expected_version = 0;
	r->er.new_version = m->version;
	/* Durable before the reply: the writer counts the copy current. */
	r->er.flags = QBD_ENGINE_F_RESYNC | QBD_ENGINE_F_FUA;
	req_submit(r, QBD_ENGINE_WRITE);
	return 0;
}

static const struct qbd_wire_rx_ops peer_rx_ops = { peer_on_header, peer_on_frame };

static void peer_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct peer *p = QBD_CONTAINER_OF((uv_tcp_t *)h, struct peer, tcp);

	(void)hint;
	*buf = uv_buf_init((char *)p->rbuf, sizeof(p->rbuf));
}

static void peer_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct peer *p = QBD_CONTAINER_OF((uv_tcp_t *)s, struct peer, tcp);
	int rc;

	if (n < 0) {
		peer_fail(p, -EHOSTUNREACH, n == UV_EOF ? "closed" : uv_strerror((int)n));
		return;
	}
	if (n == 0 || p->closing)
		return;
	rc = qbd_wire_rx_feed(&p->rx, (const uint8_t *)buf->base, (size_t)n, &peer_rx_ops, p);
	if (rc < 0 && !p->closing)
		peer_fail(p, -EHOSTUNREACH, "protocol error");
}

static void peer_on_hello_written(uv_write_t *w, int status)
{
	struct peer *p = QBD_CONTAINER_OF(w, struct peer, hello_w);

	if (status < 0 && status != UV_ECANCELED)
		peer_fail(p, -EHOSTUNREACH, "send failed");
}

static void peer_on_connect(uv_connect_t *req, int status)
{
	struct peer *p = QBD_CONTAINER_OF(req, struct peer, creq);
	Qbd__Msg m = QBD__MSG__INIT;
	uv_buf_t b;
	ssize_t h;

	if (status == UV_ECANCELED || p->closing)
		return;
	if (status < 0) {
		peer_fail(p, -EHOSTUNREACH, uv_strerror(status));
		return;
	}
	if (uv_read_start((uv_stream_t *)&p->tcp, peer_on_alloc, peer_on_read) < 0) {
		peer_fail(p, -EHOSTUNREACH, "cannot read");
		return;
	}
	m.type = QBD__MSG_TYPE__HELLO;
	m.cluster_id = p->d->cluster_id;
	m.node_id = p->node_id;
	m.request_id = ++p->next_id;
	if (p->d->secret.len) {
		qbd_auth_nonce(p->nonce);
		m.nonce.data = p->nonce;
		m.nonce.len = sizeof p->nonce;
	}
	h = qbd_wire_encode(&m, p->hello_hdr, sizeof(p->hello_hdr));
	b = uv_buf_init((char *)p->hello_hdr, h > 0 ? (unsigned)h : 0);
	if (h < 0 || uv_write(&p->hello_w, (uv_stream_t *)&p->tcp, &b, 1,
			      peer_on_hello_written) < 0)
		peer_fail(p, -EHOSTUNREACH, "cannot send HELLO");
}

static void peers_on_tick(uv_timer_t *t)
{
	struct chunkd *d = QBD_CONTAINER_OF(t, struct chunkd, peer_timer);
	uint64_t now = qbd_now_ns();

	for (struct peer *p = d->peers, *nx; p; p = nx) {
		nx = p->next;
		if (p->head && now - p->head->start_ns > PULL_TIMEOUT_NS)
			peer_fail(p, -ETIMEDOUT, "pull timed out");
	}
}

/* Connect p to sa. false after failing p. */
static bool peer_connect(struct peer *p, const struct sockaddr *sa)
{
	if (uv_tcp_connect(&p->creq, &p->tcp, sa, peer_on_connect) < 0) {
		peer_fail(p, -EHOSTUNREACH, "connect failed");
		return false;
	}
	return true;
}

/* The host name of p's address resolved (in libuv's thread pool): connect
 * to its first address, or fail p saying the name did not resolve. */
static void peer_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct peer *p = QBD_CONTAINER_OF(req, struct peer, gai);
	char why[QBD_ADDR_MAX + 96];

	p->resolving = false;
	if (p->closing) {
		uv_freeaddrinfo(res);
		uv_close((uv_handle_t *)&p->tcp, peer_on_close);
		return;
	}
	if (status < 0 || !res) {
		snprintf(why, sizeof(why), "address '%s' does not resolve: %s", p->addr,
			 status < 0 ? uv_strerror(status) : "no address");
		uv_freeaddrinfo(res);
		peer_fail(p, -EHOSTUNREACH, why);
		return;
	}
	peer_connect(p, res->ai_addr);
	uv_freeaddrinfo(res);
}

static struct peer *peer_get(struct chunkd *d, uint64_t node_id, const char *addr)
{
	struct sockaddr_storage sa;
	char host[QBD_ADDR_MAX], port_s[8];
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	bool numeric;
	uint16_t port;
	struct peer *p;

	for (p = d->peers; p; p = p->next)
		if (p->node_id == node_id && !strcmp(p->addr, addr))
			return p;
	if (qbd_parse_hostport(addr, host, sizeof(host), &port) < 0) {
		qbd_warn(COMP, "peer %016llx: address '%s' is not HOST:PORT",
			 (unsigned long long)node_id, addr);
		return NULL;
	}
	numeric = uv_ip4_addr(host, port, (struct sockaddr_in *)&sa) == 0 ||
		  uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa) == 0;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->d = d;
	p->node_id = node_id;
	snprintf(p->addr, sizeof(p->addr), "%s", addr);
	qbd_wire_rx_init(&p->rx);
	if (uv_tcp_init(&d->loop, &p->tcp) < 0) {
		free(p);
		return NULL;
	}
	uv_tcp_nodelay(&p->tcp, 1);
	p->next = d->peers;
	d->peers = p;
	if (!d->peer_timer_on) {
		uv_timer_init(&d->loop, &d->peer_timer);
		uv_timer_start(&d->peer_timer, peers_on_tick, 1000, 1000);
		d->peer_timer_on = true;
	}
	if (numeric)
		return peer_connect(p, (struct sockaddr *)&sa) ? p : NULL;
	/* A name: resolved off the loop; the pulls wait in p meanwhile
	 * (and its timer counts: a resolver that hangs fails them). */
	snprintf(port_s, sizeof(port_s), "%u", port);
	p->resolving = true;
	if (uv_getaddrinfo(&d->loop, &p->gai, peer_on_resolved, host, port_s, &hints) < 0) {
		p->resolving = false;
		peer_fail(p, -EHOSTUNREACH, "cannot start resolving its address");
		return NULL;
	}
	return p;
}

void chunkd_pull(struct chunkd *d, struct chunkd_req *r, const Qbd__Msg *m)
{
	struct pull *pl;
	struct peer *p;

	if (m->source_node == d->node_id || !m->source_addr || !*m->source_addr) {
		qbd_warn(COMP, "PULL of chunk %llu: bad source", (unsigned long long)m->chunk);
		req_reply(r, -EINVAL);
		return;
	}
	r->reply.length = 0; /* bytes copied (none yet) */
	if (qbd_engine_chunk_version(d->e, m->volume_id, m->chunk) == m->new_version &&
	    !qbd_engine_chunk_flags(d->e, m->volume_id, m->chunk)) {
		/* Already there (an answer was lost, say): nothing to copy. A
		 * flagged copy at that version is what the pull replaces. */
		r->reply.version = m->new_version;
		req_reply(r, 0);
		return;
	}
	if (posix_memalign(&r->data, QBD_ENGINE_BLOCK, d->chunk_size) != 0) {
		r->data = NULL;
		req_reply(r, -ENOMEM);
		return;
	}
	p = peer_get(d, m->source_node, m->source_addr);
	pl = p ? calloc(1, sizeof(*pl)) : NULL;
	if (pl)
		pl->sp = malloc(qbd_sparse_bitmap_bytes(d->chunk_size, QBD_WIRE_BLOCK) +
				(size_t)d->chunk_size);
	if (!pl || !pl->sp) {
		free(pl);
		req_reply(r, p ? -ENOMEM : -EHOSTUNREACH);
		return;
	}
	pl->r = r;
	pl->p = p;
	pl->id = ++p->next_id;
	pl->volume = m->volume_id;
	pl->epoch = m->epoch;
	pl->chunk = m->chunk;
	pl->version = m->new_version;
	pl->start_ns = qbd_now_ns();
	if (p->tail)
		p->tail->next = pl;
	else
		p->head = pl;
	p->tail = pl;
	if (p->up)
		pull_send(pl);
}

void chunkd_peers_close(struct chunkd *d)
{
	while (d->peers)
		peer_fail(d->peers, -ESHUTDOWN, "shutting down");
	if (d->peer_timer_on) {
		uv_close((uv_handle_t *)&d->peer_timer, NULL);
		d->peer_timer_on = false;
	}
}
