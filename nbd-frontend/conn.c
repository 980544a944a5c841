/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connection plumbing of qbd-nbd's server: a connection's life (new,
 * ending after its replies are written, closed, freed once no request of
 * it is left in libqbd), its input (one growing buffer, consumed from
 * the front, reads paused while too much is in flight or buffered) and
 * its output: replies are corked during one qbd_process pass and leave
 * as one write per connection (at most NBD_CORK_MAX replies each), in
 * completion order. What the bytes mean is handshake.c's and
 * transmission.c's.
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/log.h"
#include "common/util.h"
#include "common/uvbuf.h"
#include "replicator/qbd.h"
#include "internal.h"

#define CONN_READ_SIZE 65536  /* room made for each read */

static void conn_flush_cork(struct nconn *c);

struct nconn *conn_new(struct nbd_server *s)
{
	struct nconn *c = calloc(1, sizeof *c);

	if (!c)
		return NULL;
	c->s = s;
	uv_pipe_init(&s->loop, &c->pipe, 0);
	c->pipe.data = c;
	return c;
}

void conn_link(struct nconn *c)
{
	c->next = c->s->conns;
	c->s->conns = c;
}

void conn_discard(struct nconn *c)
{
	uv_close((uv_handle_t *)&c->pipe, (uv_close_cb)free);
}

void conn_free(struct nconn *c)
{
	if (c->s) {
		struct nconn **pp = &c->s->conns;

		while (*pp && *pp != c)
			pp = &(*pp)->next;
		if (*pp)
			*pp = c->next;
	}
	free(c->in);
	free(c);
}

static void conn_on_closed(uv_handle_t *h)
{
	struct nconn *c = h->data;
	struct nbd_server *s = c->s;

	c->closed = true;
	if (c->adopted) {
		s->adopted_live--;
		s->any_disc |= c->disc;
		qbd_info("nbd", "connection %d ended%s", c->index,
			 c->disc ? " (NBD_CMD_DISC)" : " without NBD_CMD_DISC");
		if (s->o.on_conn_end && s->started)
			s->o.on_conn_end(s, c->index, c->disc, s->o.arg);
	}
	if (c->in_flight == 0)
		conn_free(c);
	/* The callback may have adopted a replacement. */
	if (s->o.stop_after_disc && s->adopted_live == 0 && s->any_disc)
		server_stop(s, "every connection ended, one with NBD_CMD_DISC");
}

void conn_close(struct nconn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->state = ST_DEAD;
	uv_close((uv_handle_t *)&c->pipe, conn_on_closed);
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
	(void)status;
	conn_close(req->data);
}

void conn_end(struct nconn *c)
{
	if (c->closing || c->ending)
		return;
	conn_flush_cork(c); /* queued before the shutdown */
	c->ending = true;
	c->state = ST_DEAD;
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = false;
	}
	c->shut.data = c;
	if (uv_shutdown(&c->shut, (uv_stream_t *)&c->pipe, conn_on_shutdown) < 0)
		conn_close(c);
}

/* ---- output: corked replies ---- */

static void cork_free(struct ncork *k)
{
	for (unsigned i = 0; i < k->n; i++)
		free(k->owned[i]);
	free(k);
}

static void cork_on_written(uv_write_t *w, int status)
{
	if (status < 0 && status != UV_ECANCELED)
		qbd_debug("nbd", "write: %s", uv_strerror(status));
	cork_free(QBD_CONTAINER_OF(w, struct ncork, w));
}

/* Write the queued replies of c (qbd_uv_write_now: at once where the
 * socket takes them all). */
static void conn_flush_cork(struct nconn *c)
{
	struct ncork *k = c->cork;
	int rc;

	if (!k)
		return;
	c->cork = NULL;
	if (c->closing) {
		cork_free(k);
		return;
	}
	rc = qbd_uv_write_now(&k->w, (uv_stream_t *)&c->pipe, k->bufs, k->n, cork_on_written);
	if (rc == 0)
		return; /* cork_on_written frees k */
	cork_free(k);
	if (rc < 0) {
		qbd_debug("nbd", "write: %s", uv_strerror(rc));
		conn_close(c);
	}
}

void conn_uncork_all(struct nbd_server *s)
{
	struct nconn *c;

	s->corked = false;
	while ((c = s->cork_conns)) {
		s->cork_conns = c->cork_next;
		c->cork_next = NULL;
		c->cork_listed = false;
		conn_flush_cork(c);
	}
}

void conn_send_at(struct nconn *c, void *buf, size_t skip, size_t len)
{
	struct ncork *k = c->cork;

	if (c->closing || (!k && !(k = c->cork = calloc(1, sizeof *k)))) {
		free(buf);
		return;
	}
	k->owned[k->n] = buf;
	k->bufs[k->n++] = uv_buf_init((char *)buf + skip, (unsigned)len);
	if (!c->s->corked || c->ending || k->n == NBD_CORK_MAX) {
		conn_flush_cork(c);
		return;
	}
	if (!c->cork_listed) {
		c->cork_listed = true;
		c->cork_next = c->s->cork_conns;
		c->s->cork_conns = c;
	}
}

void conn_send(struct nconn *c, void *buf, size_t len)
{
	conn_send_at(c, buf, 0, len);
}

void conn_send_copy(struct nconn *c, const void *p, size_t len)
{
	void *b = malloc(len);

	if (!b) {
		conn_close(c);
		return;
	}
	memcpy(b, p, len);
	conn_send(c, b, len);
}

/* ---- input ---- */

uint8_t *conn_in(struct nconn *c)
{
	return c->in + c->in_off;
}

/* Moved forward once per read (conn_on_alloc), not once per request (a
 * read of 64 KiB holds sixteen 4 KiB WRITEs). */
void conn_consume(struct nconn *c, size_t n)
{
	c->in_off += n;
	c->in_len -= n;
	if (!c->in_len)
		c->in_off = 0;
}

void conn_process(struct nconn *c)
{
	while (!c->closing && c->in_len > 0) {
		if (c->state == ST_CLIENT_FLAGS || c->state == ST_OPTIONS) {
			if (!handshake_input(c))
				return;
		} else if (c->state == ST_TRANSMISSION) {
			if (!conn_request(c))
				break;
		} else {
			return;
		}
	}
	conn_update_reading(c);
}

static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct nconn *c = h->data;
	size_t want = c->in_len + CONN_READ_SIZE;

	(void)suggested;
	if (c->in_off) {
		memmove(c->in, c->in + c->in_off, c->in_len);
		c->in_off = 0;
	}
	if (want > c->in_cap) {
		uint8_t *n = realloc(c->in, want);
		if (!n) {
			*b = uv_buf_init(NULL, 0);
			return;
		}
		c->in = n;
		c->in_cap = want;
	}
	*b = uv_buf_init((char *)c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void conn_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct nconn *c = st->data;
	struct qbd_volume *vol = c->s->vol;

	(void)b;
	if (n < 0) {
		if (n != UV_EOF)
			qbd_debug("nbd", "read: %s", uv_strerror((int)n));
		conn_close(c);
		return;
	}
	c->in_len += (size_t)n;
	/* The requests of one read go to each replica in one send. */
	qbd_plug(vol);
	conn_process(c);
	qbd_unplug(vol);
}

void conn_update_reading(struct nconn *c)
{
	bool want = c->s->started && !c->closing && !c->ending && !c->disc && !c->s->stopping &&
		    c->in_flight < NBD_MAX_INFLIGHT && c->in_len < 2 * NBD_MAX_PAYLOAD;

	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->pipe, conn_on_alloc, conn_on_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = false;
	}
}
