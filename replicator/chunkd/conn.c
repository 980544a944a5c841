/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd connection plumbing: accepting a client, reading its bytes
 * into the wire receive state machine (request.c takes the frames), the
 * request buffers, the replies (encoded, corked and written in batches),
 * and the lifetime of a connection.
 *
 * Ownership: the server owns every connection; a connection is freed when
 * its handle has closed and no request refers to it (refs). A request owns
 * its data buffer and reply header until its reply write completes.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "internal.h"
#include "common/log.h"
#include "common/util.h"
#include "common/uvbuf.h"
#include "engine/engine.h"
#include "replicator/wire/wire.h"

#define COMP "chunkd"

/* ---- request buffers ---- */

void *chunkd_buf_alloc(struct chunkd *d, size_t len)
{
	void *buf = NULL;

	if (len <= qbd_engine_buf_size(d->e) && (buf = qbd_engine_buf_get(d->e)))
		return buf;
	if (posix_memalign(&buf, QBD_ENGINE_BLOCK, len ? len : QBD_ENGINE_BLOCK) != 0)
		return NULL;
	return buf;
}

void chunkd_buf_free(struct chunkd *d, void *buf)
{
	if (buf && qbd_engine_buf_owns(d->e, buf))
		qbd_engine_buf_put(d->e, buf);
	else
		free(buf);
}

/* ---- connections ---- */

static void conn_put(struct chunkd_conn *c)
{
	if (--c->refs > 0)
		return;
	qbd_wire_rx_reset(&c->rx);
	chunkd_buf_free(c->d, c->pend_buf);
	free(c);
}

static void conn_on_close(uv_handle_t *h)
{
	conn_put(QBD_CONTAINER_OF((uv_tcp_t *)h, struct chunkd_conn, tcp));
}

/* Close the socket (internal.h). */
void chunkd_conn_close(struct chunkd_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->d->secret.len && c->hello_done && !c->authed && !c->auth_logged &&
	    !c->d->stopping) {
		/* A requester checks our proof first and leaves if it fails. */
		qbd_warn(COMP, "%s: left before authenticating: it did not accept our proof "
			 "(another cluster secret?)", c->peer);
		c->d->auth_failures++;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		c->d->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
	uv_close((uv_handle_t *)&c->tcp, conn_on_close);
	/* Its requests waiting behind client I/O are answered (freed) now,
	 * those in the engine when they complete. */
	chunkd_admit_drop_conn(c->d, c);
}

/* Into rbuf, or for the rest of a large payload straight into its buffer:
 * a 1 MiB WRITE then costs one copy (the kernel's) and a few reads, not
 * a second copy out of rbuf and sixteen reads. */
static void conn_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct chunkd_conn *c = QBD_CONTAINER_OF((uv_tcp_t *)h, struct chunkd_conn, tcp);
	size_t len = 0;
	void *d = qbd_wire_rx_direct(&c->rx, &len);

	(void)hint;
	c->direct = d && len >= CHUNKD_DIRECT_MIN;
	*buf = c->direct ? uv_buf_init(d, (unsigned)QBD_MIN(len, (size_t)UINT_MAX))
			 : uv_buf_init((char *)c->rbuf, sizeof c->rbuf);
}

static void conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

void chunkd_conn_update_reading(struct chunkd_conn *c)
{
	bool want = !c->closing && !c->d->stopping &&
		    c->inflight < QBD_CHUNKD_MAX_INFLIGHT;

	if (want == c->reading)
		return;
	if (want && uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read) == 0)
		c->reading = true;
	else if (!want && uv_read_stop((uv_stream_t *)&c->tcp) == 0)
		c->reading = false;
}

/* ---- replies ---- */

static void req_free(struct chunkd_req *r)
{
	struct chunkd_conn *c = r->c;

	chunkd_buf_free(c->d, r->data);
	free(r);
	c->inflight--;
	chunkd_conn_update_reading(c);
	conn_put(c);
}

/* Free r and the rest of its batch. */
static void req_free_batch(struct chunkd_req *r)
{
	while (r) {
		struct chunkd_req *next = r->batch_next;

		req_free(r);
		r = next;
	}
}

/* The end of a write of one reply or of a batch (r and its batch_next
 * chain), written or failed. */
static void req_batch_done(struct chunkd_req *r, int status)
{
	struct chunkd_conn *c = r->c;
	bool close = status < 0;

	if (status == UV_EPIPE || status == UV_ECONNRESET)
		qbd_debug(COMP, "%s: write: %s", c->peer, uv_strerror(status));
	else if (status < 0 && status != UV_ECANCELED)
		qbd_warn(COMP, "%s: write failed: %s", c->peer, uv_strerror(status));
	for (struct chunkd_req *q = r; q; q = q->batch_next)
		close |= q->close_after;
	if (close)
		chunkd_conn_close(c);
	req_free_batch(r);
}

static void req_on_written(uv_write_t *w, int status)
{
	req_batch_done(QBD_CONTAINER_OF(w, struct chunkd_req, w), status);
}

#define CHUNKD_BATCH 32 /* replies per write at most */

/* Send the queued replies of c, CHUNKD_BATCH per write
 * (qbd_uv_write_now: at once where the socket takes a batch whole). */
static void conn_send_corked(struct chunkd_conn *c)
{
	c->refs++; /* the batches freed here may hold the last references */
	while (c->cork_head) {
		struct chunkd_req *first = c->cork_head, *r = first, *last = NULL;
		uv_buf_t bufs[2 * CHUNKD_BATCH];
		unsigned n = 0, k = 0;
		int rc;

		for (; r && k < CHUNKD_BATCH; r = r->batch_next, k++) {
			bufs[n++] = uv_buf_init((char *)r->hdr, r->hdr_len);
			if (r->data_len)
				bufs[n++] = uv_buf_init((char *)r->data + r->data_off,
							r->data_len);
			last = r;
		}
		c->cork_head = r;
		if (!r)
			c->cork_tail = NULL;
		last->batch_next = NULL;
		if (c->closing) {
			req_batch_done(first, UV_ECANCELED);
			continue;
		}
		rc = qbd_uv_write_now(&first->w, (uv_stream_t *)&c->tcp, bufs, n,
				      req_on_written);
		if (rc != 0) /* written, or failed (req_batch_done closes) */
			req_batch_done(first, rc > 0 ? 0 : rc);
	}
	conn_put(c);
}

void chunkd_cork(struct chunkd *d)
{
	d->corked++;
}

void chunkd_uncork(struct chunkd *d)
{
	struct chunkd_conn *c;

	if (!d->corked || --d->corked)
		return;
	while ((c = d->cork_conns)) {
		d->cork_conns = c->cork_next;
		c->cork_next = NULL;
		c->cork_listed = false;
		conn_send_corked(c);
		conn_put(c); /* the list's reference */
	}
}

/* The metrics of a request answered with status. */
static void req_count(struct chunkd *d, const struct chunkd_req *r, int status)
{
	struct chunkd_op_stats *o;

	if (r->type < 0 || r->type >= CHUNKD_OPS)
		return;
	o = &d->ops[r->type];
	o->requests++;
	if (status < 0)
		o->errors++;
	else if (r->type == QBD__MSG_TYPE__READ || r->type == QBD__MSG_TYPE__WRITE)
		o->bytes += r->length;
	if (r->start_ns)
		qbd_hist_add(&o->lat, qbd_now_ns() - r->start_ns);
	if (status == -EPERM)
		d->fenced++;
	else if (status == -EBADMSG)
		d->checksum_errors++;
	else if (status == -EACCES && (r->type == QBD__MSG_TYPE__HELLO ||
				       r->type == QBD__MSG_TYPE__AUTH || r->close_after))
		d->auth_failures++;
}

void req_reply(struct chunkd_req *r, int status)
{
	struct chunkd_conn *c = r->c;
	ssize_t h;

	if (c->closing) {
		req_free(r);
		return;
	}
	r->reply.status = status;
	if (status != 0)
		r->data_len = 0;
	req_count(c->d, r, status);
	r->reply.data_len = r->data_len;
	h = qbd_wire_encode(&r->reply, r->hdr, sizeof r->hdr);
	if (h < 0) {
		qbd_err(COMP, "%s: cannot encode %s reply", c->peer,
			qbd_wire_type_name(r->type));
		chunkd_conn_close(c);
		req_free(r);
		return;
	}
	if (status != 0)
		qbd_debug(COMP, "%s: %s request %llu: %s", c->peer,
			  qbd_wire_type_name(r->type),
			  (unsigned long long)r->reply.request_id, strerror(-status));
	r->hdr_len = (unsigned)h;
	r->batch_next = NULL;
	if (c->cork_tail)
		c->cork_tail->batch_next = r;
	else
		c->cork_head = r;
	c->cork_tail = r;
	if (!c->d->corked) {
		conn_send_corked(c); /* a batch of one */
		return;
	}
	if (!c->cork_listed) {
		c->cork_listed = true;
		c->refs++;
		c->cork_next = c->d->cork_conns;
		c->d->cork_conns = c;
	}
}

/* ---- reads and accepting ---- */

static void conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct chunkd_conn *c = QBD_CONTAINER_OF((uv_tcp_t *)s, struct chunkd_conn, tcp);
	int rc;

	if (n == UV_EOF) {
		qbd_debug(COMP, "%s: disconnected", c->peer);
		chunkd_conn_close(c);
		return;
	}
	if (n < 0) {
		qbd_warn(COMP, "%s: read: %s", c->peer, uv_strerror((int)n));
		chunkd_conn_close(c);
		return;
	}
	/* The requests of one read reach the device in one submission. */
	qbd_engine_plug(c->d->e);
	if (c->direct)
		rc = n ? qbd_wire_rx_placed(&c->rx, (size_t)n, &chunkd_rx_ops, c) : 0;
	else
		rc = qbd_wire_rx_feed(&c->rx, (const uint8_t *)buf->base, (size_t)n,
				      &chunkd_rx_ops, c);
	c->direct = false;
	qbd_engine_unplug(c->d->e);
	if (rc < 0) {
		qbd_warn(COMP, "%s: %s; closing", c->peer, strerror(-rc));
		chunkd_conn_close(c);
	} else if (rc > 0) {
		chunkd_conn_close(c);  /* a reply with close_after is on its way */
	}
}

void chunkd_conn_accept(uv_stream_t *srv, int status)
{
	struct chunkd *d = QBD_CONTAINER_OF((uv_tcp_t *)srv, struct chunkd, server);
	struct chunkd_conn *c;
	struct sockaddr_storage ss;
	int len = sizeof ss;

	if (status < 0) {
		qbd_warn(COMP, "accept: %s", uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof *c);
	if (!c) {
		qbd_err(COMP, "accept: out of memory");
		return;
	}
	uv_tcp_init(&d->loop, &c->tcp);
	c->d = d;
	c->refs = 1;
	qbd_wire_rx_init(&c->rx);
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
		c->closing = true;
		uv_close((uv_handle_t *)&c->tcp, conn_on_close);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	strcpy(c->peer, "?");
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
		char host[48] = "?";
		int port;
		if (ss.ss_family == AF_INET6) {
			uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		} else {
			uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		}
		snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
	}
	c->next = d->conns;
	if (d->conns)
		d->conns->prev = c;
	d->conns = c;
	d->conns_accepted++;
	qbd_debug(COMP, "%s: connected", c->peer);
	chunkd_conn_update_reading(c);
}

