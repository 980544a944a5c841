/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-nbd's server: one libuv loop, an optional unix socket listener,
 * adopted connections (kernel mode), and per connection an explicit state
 * machine: GREETING -> CLIENT_FLAGS -> OPTIONS -> TRANSMISSION -> (DISC)
 * -> DEAD; an adopted connection starts in TRANSMISSION. Requests go to
 * libqbd asynchronously; libqbd's single fd is watched with uv_poll.
 * Replies may leave out of order, each as one uv_write. With structured
 * replies negotiated, READ and BLOCK_STATUS are answered with structured
 * chunks (one chunk each, flag DONE: DF holds for every read), every
 * other command with simple replies, as the protocol allows.
 *
 * Every connection shares the one libqbd handle, so NBD_FLAG_CAN_MULTI_CONN
 * holds: a FLUSH on any connection answers for every write acknowledged
 * before it on any connection (libqbd's flush covers every chunk
 * acknowledged before it was submitted, whatever request wrote it).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "common/util.h"
#include "common/uvbuf.h"
#include "common/log.h"
#include "common/svc.h"
#include "replicator/qbd.h"
#include "nbd.h"

#define NBD_MAX_INFLIGHT 64
/* Room before read data for the largest reply header: a structured
 * OFFSET_DATA chunk (header + offset); a simple reply uses its end. */
#define READ_PREFIX (NBD_STRUCTURED_HDR + 8)

enum conn_state {
	ST_CLIENT_FLAGS,
	ST_OPTIONS,
	ST_TRANSMISSION,
	ST_DEAD,
};

struct nbd_server {
	uv_loop_t loop;
	uv_pipe_t listener;
	uv_poll_t qpoll;
	uv_signal_t sigterm, sigint;
	uv_timer_t drain;
	uv_timer_t watchdog;   /* systemd watchdog pings (common/svc.h) */
	struct qbd_volume *vol;
	struct nbd_serve_opts o;
	const char *name;
	uint64_t size;
	struct nconn *conns;
	bool listening;     /* listener is open */
	bool bound;         /* the socket file is ours: removed at the end */
	bool started;       /* on_ready returned 0: connections may read */
	bool stopping;
	bool any_disc;      /* an adopted connection ended with DISC */
	unsigned adopted_live;
	int next_index;
	unsigned drain_ticks;
	struct nbd_stats stats;
	struct qbd_metrics *metrics;
	uv_timer_t metrics_timer;
	bool corked;              /* in on_qbd: replies wait for server_uncork */
	struct nconn *cork_conns; /* connections with replies corked */
};

#define NBD_CORK_MAX 32 /* replies per write at most */

/* Replies sent in one write: their buffers, freed once written. */
struct ncork {
	uv_write_t w;
	unsigned n;
	void *owned[NBD_CORK_MAX];
	uv_buf_t bufs[NBD_CORK_MAX];
};

struct nconn {
	uv_pipe_t pipe;
	uv_shutdown_t shut;
	struct nbd_server *s;
	struct nconn *next;
	enum conn_state state;
	bool no_zeroes;
	bool reading;
	bool closing;   /* uv_close called */
	bool closed;    /* close callback ran */
	bool ending;    /* conn_end: closing once the replies are written */
	bool disc;
	bool adopted;   /* handed over in the transmission phase */
	int index;      /* adopted: nbd_server_adopt's index */
	unsigned neg;   /* NBD_NEG_*: structured replies, base:allocation */
	unsigned in_flight;
	uint8_t *in;    /* unconsumed input */
	size_t in_len, in_cap;
	size_t in_off;            /* consumed bytes at the start of in (conn_consume) */
	struct ncork *cork;       /* replies not yet written (s->corked) */
	struct nconn *cork_next;  /* s->cork_conns */
	bool cork_listed;
};

struct nreq {
	struct qbd_io io;
	struct nconn *c;
	uint64_t cookie;
	uint16_t type;
	uint16_t flags;      /* NBD_CMD_FLAG_* of the request */
	uint64_t off;        /* the request's range (BLOCK_STATUS asks libqbd */
	uint32_t len;        /* for whole blocks around it) */
	uint8_t *buf;        /* READ: READ_PREFIX bytes, then data; WRITE: data;
			      * BLOCK_STATUS: the bitmap */
	uint64_t start_ns;   /* arrival, for the latency histogram */
};

static void conn_close(struct nconn *c);
static void conn_process(struct nconn *c);

/* Free c, and unlink it from its server unless nbd_serve detached it
 * (c->s NULL: it returned with requests of c still in libqbd). */
static void conn_free(struct nconn *c)
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

static void server_stop(struct nbd_server *s, const char *why);

static void on_conn_closed(uv_handle_t *h)
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

static void conn_close(struct nconn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->state = ST_DEAD;
	uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	(void)status;
	conn_close(req->data);
}

/* Close once every reply queued so far has been written (after DISC or
 * ABORT: uv_close alone would cancel writes still queued). Nothing is
 * read or started any more. */
static void conn_flush_cork(struct nconn *c);

static void conn_end(struct nconn *c)
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
	if (uv_shutdown(&c->shut, (uv_stream_t *)&c->pipe, on_shutdown) < 0)
		conn_close(c);
}

static void ncork_free(struct ncork *k)
{
	for (unsigned i = 0; i < k->n; i++)
		free(k->owned[i]);
	free(k);
}

static void on_cork_written(uv_write_t *w, int status)
{
	if (status < 0 && status != UV_ECANCELED)
		qbd_debug("nbd", "write: %s", uv_strerror(status));
	ncork_free(QBD_CONTAINER_OF(w, struct ncork, w));
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
		ncork_free(k);
		return;
	}
	rc = qbd_uv_write_now(&k->w, (uv_stream_t *)&c->pipe, k->bufs, k->n, on_cork_written);
	if (rc == 0)
		return; /* on_cork_written frees k */
	ncork_free(k);
	if (rc < 0) {
		qbd_debug("nbd", "write: %s", uv_strerror(rc));
		conn_close(c);
	}
}

static void server_uncork(struct nbd_server *s)
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

/* Send len bytes from skip bytes into buf (malloc'd, freed after the
 * write, without a copy). Corked (inside on_qbd), the reply waits for
 * server_uncork and goes out with the others of the pass; otherwise
 * (or once NBD_CORK_MAX wait, or after conn_end queued the shutdown) at
 * once, a write of one. */
static void conn_send_at(struct nconn *c, void *buf, size_t skip, size_t len)
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

static void conn_send(struct nconn *c, void *buf, size_t len)
{
	conn_send_at(c, buf, 0, len);
}

static void conn_send_copy(struct nconn *c, const void *p, size_t len)
{
	void *b = malloc(len);

	if (!b) {
		conn_close(c);
		return;
	}
	memcpy(b, p, len);
	conn_send(c, b, len);
}

static void opt_reply(struct nconn *c, uint32_t opt, uint32_t type,
		      const void *data, uint32_t len)
{
	uint8_t *b = malloc(20 + len);

	if (!b) {
		conn_close(c);
		return;
	}
	nbd_option_reply(b, opt, type, len);
	if (len)
		memcpy(b + 20, data, len);
	conn_send(c, b, 20 + len);
}

static uint16_t transmission_flags(const struct nconn *c)
{
	return NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
	       NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_CAN_MULTI_CONN |
	       (c->neg & NBD_NEG_STRUCTURED ? NBD_FLAG_SEND_DF : 0);
}

static bool export_ok(struct nbd_server *s, const uint8_t *name, uint32_t len)
{
	return len == 0 || (len == strlen(s->name) && memcmp(name, s->name, len) == 0);
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
static void conn_meta_context(struct nconn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
	bool list = opt == NBD_OPT_LIST_META_CONTEXT, found = false;
	const uint8_t *name, *q;
	uint32_t nl, n;

	if (nbd_meta_parse(d, len, &name, &nl, &n, &q) < 0) {
		opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
		return;
	}
	if (!list && !(c->neg & NBD_NEG_STRUCTURED)) {
		qbd_warn("nbd", "SET_META_CONTEXT before structured replies were negotiated");
		opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
		return;
	}
	if (!export_ok(c->s, name, nl)) {
		qbd_warn("nbd", "meta context for unknown export '%.*s'", (int)nl, name);
		opt_reply(c, opt, NBD_REP_ERR_UNKNOWN, NULL, 0);
		return;
	}
	/* LIST without queries lists every context; unknown queries are
	 * left out of the answer. */
	found = list && n == 0;
	for (uint32_t i = 0; i < n; i++)
		found |= nbd_meta_query_base_allocation(&q, list);
	if (!list) {
		c->neg &= ~NBD_NEG_BASE_ALLOCATION;
		if (found)
			c->neg |= NBD_NEG_BASE_ALLOCATION;
	}
	if (found) {
		uint8_t b[4 + sizeof NBD_META_BASE_ALLOCATION - 1];

		nbd_put32(b, list ? 0 : NBD_META_ID_BASE_ALLOCATION);
		memcpy(b + 4, NBD_META_BASE_ALLOCATION, sizeof b - 4);
		opt_reply(c, opt, NBD_REP_META_CONTEXT, b, sizeof b);
	}
	qbd_debug("nbd", "%s_META_CONTEXT: %u queries, base:allocation %s",
		  list ? "LIST" : "SET", n, found ? "selected" : "not selected");
	opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* Handle one option; returns false if the connection was closed. */
static bool conn_option(struct nconn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
	struct nbd_server *s = c->s;

	switch (opt) {
	case NBD_OPT_EXPORT_NAME: {
		uint8_t b[10 + 124] = { 0 };
		if (!export_ok(s, d, len)) {
			qbd_warn("nbd", "client asked for unknown export '%.*s'", (int)len, d);
			conn_close(c);
			return false;
		}
		nbd_put64(b, s->size);
		nbd_put16(b + 8, transmission_flags(c));
		conn_send_copy(c, b, c->no_zeroes ? 10 : sizeof b);
		c->state = ST_TRANSMISSION;
		return true;
	}
	case NBD_OPT_ABORT:
		opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		conn_end(c);
		return false;
	case NBD_OPT_LIST: {
		uint32_t nl = (uint32_t)strlen(s->name);
		uint8_t *b;
		if (len != 0) {
			opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
			return true;
		}
		if (!(b = malloc(4 + nl))) {
			conn_close(c);
			return false;
		}
		nbd_put32(b, nl);
		memcpy(b + 4, s->name, nl);
		opt_reply(c, opt, NBD_REP_SERVER, b, 4 + nl);
		free(b);
		opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		return true;
	}
	case NBD_OPT_INFO:
	case NBD_OPT_GO: {
		uint32_t nl;
		uint16_t nreq;
		if (len < 6 || (nl = nbd_get32(d)) > len - 6 ||
		    (nreq = nbd_get16(d + 4 + nl), 6 + nl + 2u * nreq != len)) {
			qbd_warn("nbd", "malformed %s option", opt == NBD_OPT_GO ? "GO" : "INFO");
			opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
			return true;
		}
		if (!export_ok(s, d + 4, nl)) {
			qbd_warn("nbd", "client asked for unknown export '%.*s'", (int)nl, d + 4);
			opt_reply(c, opt, NBD_REP_ERR_UNKNOWN, NULL, 0);
			return true;
		}
		uint8_t e[12], bs[14];
		nbd_put16(e, NBD_INFO_EXPORT);
		nbd_put64(e + 2, s->size);
		nbd_put16(e + 10, transmission_flags(c));
		opt_reply(c, opt, NBD_REP_INFO, e, sizeof e);
		nbd_put16(bs, NBD_INFO_BLOCK_SIZE);
		nbd_put32(bs + 2, 1);
		nbd_put32(bs + 6, 4096);
		nbd_put32(bs + 10, NBD_MAX_PAYLOAD);
		opt_reply(c, opt, NBD_REP_INFO, bs, sizeof bs);
		opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		if (opt == NBD_OPT_GO)
			c->state = ST_TRANSMISSION;
		return true;
	}
	case NBD_OPT_STRUCTURED_REPLY:
		if (len != 0) {
			qbd_warn("nbd", "STRUCTURED_REPLY option with %u bytes of data", len);
			opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
			return true;
		}
		c->neg |= NBD_NEG_STRUCTURED;
		opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		return true;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		conn_meta_context(c, opt, d, len);
		return true;
	default:
		qbd_debug("nbd", "unsupported option %u", opt);
		opt_reply(c, opt, NBD_REP_ERR_UNSUP, NULL, 0);
		return true;
	}
}

static void conn_update_reading(struct nconn *c);

static bool structured_for(const struct nconn *c, uint16_t type)
{
	return (c->neg & NBD_NEG_STRUCTURED) &&
	       (type == NBD_CMD_READ || type == NBD_CMD_BLOCK_STATUS);
}

/* An error reply: a structured ERROR chunk where the command is answered
 * with structured replies, a simple reply otherwise. */
static void error_reply(struct nconn *c, uint64_t cookie, uint16_t type, uint32_t err,
			const char *msg)
{
	uint8_t b[NBD_STRUCTURED_HDR + 6 + 128];

	if (structured_for(c, type)) {
		char m[128];

		snprintf(m, sizeof m, "%s", msg);
		conn_send_copy(c, b, nbd_error_chunk(b, cookie, err, m));
		return;
	}
	nbd_simple_reply(b, cookie, err);
	conn_send_copy(c, b, 16);
}

/* Send the answer to BLOCK_STATUS request r (its bitmap is in r->buf). */
static void block_status_reply(struct nconn *c, struct nreq *r)
{
	uint32_t nbits = r->io.length / NBD_BLOCK;
	size_t cap = nbd_block_status_size(nbits);
	uint8_t *b = malloc(cap);

	if (!b) {
		error_reply(c, r->cookie, r->type, NBD_ENOMEM, "out of memory");
		return;
	}
	conn_send(c, b, nbd_block_status_chunk(b, r->cookie, NBD_META_ID_BASE_ALLOCATION,
					       r->buf, r->io.offset, nbits, r->off, r->len,
					       r->flags & NBD_CMD_FLAG_REQ_ONE));
}

static void on_io_done(struct qbd_io *io)
{
	struct nreq *r = io->user;
	struct nconn *c = r->c;
	uint32_t err = nbd_errno(io->res);

	c->in_flight--;
	if (c->s && r->type < NBD_STATS_CMDS) {
		struct nbd_stats *st = &c->s->stats;

		st->requests[r->type]++;
		if (io->res < 0)
			st->errors[r->type]++;
		else if (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE)
			st->bytes[r->type] += r->len;
		qbd_hist_add(&st->lat[r->type], qbd_now_ns() - r->start_ns);
	}
	if (c->closing) {
		free(r->buf);
		free(r);
		if (c->closed && c->in_flight == 0)
			conn_free(c);
		return;
	}
	if (io->res < 0)
		qbd_warn("nbd", "request %#llx (cmd %u, offset %llu, length %u) failed: %s",
			 (unsigned long long)r->cookie, r->type,
			 (unsigned long long)io->offset, io->length, strerror(-io->res));
	if (err) {
		error_reply(c, r->cookie, r->type, err, strerror(-io->res));
	} else if (r->type == NBD_CMD_BLOCK_STATUS) {
		block_status_reply(c, r);
	} else if (r->type == NBD_CMD_READ && structured_for(c, r->type)) {
		/* One OFFSET_DATA chunk, DONE: the data is complete here. */
		nbd_structured_reply(r->buf, r->cookie, NBD_REPLY_FLAG_DONE,
				     NBD_REPLY_TYPE_OFFSET_DATA, 8 + io->length);
		nbd_put64(r->buf + NBD_STRUCTURED_HDR, io->offset);
		conn_send(c, r->buf, READ_PREFIX + io->length);
		r->buf = NULL;
	} else if (r->type == NBD_CMD_READ) {
		/* The simple reply header sits right before the data; the
		 * buffer is freed from its start. */
		nbd_simple_reply(r->buf + READ_PREFIX - 16, r->cookie, 0);
		conn_send_at(c, r->buf, READ_PREFIX - 16, 16 + io->length);
		r->buf = NULL;
	} else {
		uint8_t b[16];

		nbd_simple_reply(b, r->cookie, 0);
		conn_send_copy(c, b, 16);
	}
	free(r->buf);
	free(r);
	if (c->disc && c->in_flight == 0)
		conn_end(c);
	else
		conn_update_reading(c);
	/* Input may be waiting that was held back by the in-flight cap. */
	if (!c->closing)
		conn_process(c);
}

/* The input not consumed yet. */
static uint8_t *conn_in(struct nconn *c)
{
	return c->in + c->in_off;
}

/* Drop the first n bytes of input: moved forward once per read
 * (on_alloc), not once per request (a read of 64 KiB holds sixteen 4 KiB
 * WRITEs). */
static void conn_consume(struct nconn *c, size_t n)
{
	c->in_off += n;
	c->in_len -= n;
	if (!c->in_len)
		c->in_off = 0;
}

/* Consume one request if complete; returns false when more input (or a
 * free in-flight slot) is needed or the connection closed. */
static bool conn_request(struct nconn *c)
{
	struct nbd_server *s = c->s;
	struct nbd_request q;
	size_t need;
	uint32_t err;

	if (c->in_len < 28)
		return false;
	nbd_request_decode(conn_in(c), &q);
	if (q.magic != NBD_REQUEST_MAGIC) {
		qbd_warn("nbd", "bad request magic %#x: closing the connection", q.magic);
		conn_close(c);
		return false;
	}
	need = 28;
	if (q.type == NBD_CMD_WRITE) {
		if (q.length > NBD_MAX_PAYLOAD) {
			qbd_warn("nbd", "write payload of %u bytes cannot be skipped: "
				 "closing the connection", q.length);
			conn_close(c);
			return false;
		}
		need += q.length;
	}
	if (c->in_len < need)
		return false;
	if (c->disc || s->stopping) {
		/* after DISC or during shutdown nothing new is started */
		conn_consume(c, need);
		if (!c->disc)
			error_reply(c, q.cookie, q.type, NBD_ESHUTDOWN, "server shutting down");
		return true;
	}
	err = nbd_request_validate(&q, s->size, c->neg);
	if (err == 0 && q.type == NBD_CMD_DISC) {
		/* Replies in flight are sent, then the connection closes. */
		qbd_debug("nbd", "NBD_CMD_DISC with %u requests in flight", c->in_flight);
		c->disc = true;
		conn_consume(c, need);
		if (c->in_flight == 0)
			conn_end(c);
		return false;
	}
	if (err) {
		error_reply(c, q.cookie, q.type, err, "invalid request (see the server log)");
		conn_consume(c, need);
		return true;
	}
	if (c->in_flight >= NBD_MAX_INFLIGHT)
		return false;
	struct nreq *r = calloc(1, sizeof *r);
	size_t blen = 0;
	uint64_t qend;

	if (r) {
		r->c = c;
		r->start_ns = qbd_now_ns();
		r->cookie = q.cookie;
		r->type = q.type;
		r->flags = q.flags;
		r->off = q.offset;
		r->len = q.length;
		r->io.offset = q.offset;
		r->io.length = q.length;
		r->io.cb = on_io_done;
		r->io.user = r;
	}
	switch (q.type) {
	case NBD_CMD_READ:
		blen = READ_PREFIX + q.length;
		break;
	case NBD_CMD_WRITE:
		blen = q.length;
		break;
	case NBD_CMD_BLOCK_STATUS:
		/* Whole blocks around the range, at most what one libqbd
		 * request answers (the reply may cover less than asked), and
		 * within the volume (a size that is not a multiple of 4 KiB
		 * leaves a tail block that is reported as data). */
		if (!r)
			break;
		r->io.offset = q.offset / NBD_BLOCK * NBD_BLOCK;
		qend = (q.offset + q.length + NBD_BLOCK - 1) / NBD_BLOCK * NBD_BLOCK;
		if (qend > s->size / NBD_BLOCK * NBD_BLOCK)
			qend = s->size / NBD_BLOCK * NBD_BLOCK;
		if (qend - r->io.offset > QBD_BLOCK_STATUS_MAX)
			qend = r->io.offset + QBD_BLOCK_STATUS_MAX;
		if (qend <= r->io.offset) {
			uint8_t b[NBD_STRUCTURED_HDR + 12], one = 1;

			conn_send_copy(c, b, nbd_block_status_chunk(b, q.cookie,
					     NBD_META_ID_BASE_ALLOCATION, &one,
					     r->io.offset, 1, q.offset, q.length, true));
			free(r);
			conn_consume(c, need);
			return true;
		}
		r->io.length = (uint32_t)(qend - r->io.offset);
		blen = r->io.length / NBD_BLOCK / 8 + 1;
		break;
	}
	if (!r || (blen && !(r->buf = malloc(blen)))) {
		free(r);
		error_reply(c, q.cookie, q.type, NBD_ENOMEM, "out of memory");
		conn_consume(c, need);
		return true;
	}
	switch (q.type) {
	case NBD_CMD_READ:
		r->io.op = QBD_IO_READ;
		r->io.buf = r->buf + READ_PREFIX;
		break;
	case NBD_CMD_WRITE:
		r->io.op = QBD_IO_WRITE;
		memcpy(r->buf, conn_in(c) + 28, q.length);
		r->io.buf = r->buf;
		break;
	case NBD_CMD_FLUSH:
		r->io.op = QBD_IO_FLUSH;
		break;
	case NBD_CMD_TRIM:
		r->io.op = QBD_IO_TRIM;
		break;
	case NBD_CMD_WRITE_ZEROES:
		/* NO_HOLE or not: zeroed blocks become holes either way
		 * (the flag asks only that later writes find the space). */
		r->io.op = QBD_IO_WRITE_ZEROES;
		break;
	case NBD_CMD_BLOCK_STATUS:
		r->io.op = QBD_IO_BLOCK_STATUS;
		r->io.buf = r->buf;
		break;
	}
	if (q.flags & NBD_CMD_FLAG_FUA)
		r->io.flags |= QBD_IO_F_FUA;
	conn_consume(c, need);
	c->in_flight++;
	qbd_submit(s->vol, &r->io);
	return true;
}

static void conn_process(struct nconn *c)
{
	while (!c->closing && c->in_len > 0) {
		if (c->state == ST_CLIENT_FLAGS) {
			if (c->in_len < 4)
				return;
			uint32_t f = nbd_get32(conn_in(c));
			c->no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
			conn_consume(c, 4);
			c->state = ST_OPTIONS;
		} else if (c->state == ST_OPTIONS) {
			if (c->in_len < 16)
				return;
			uint32_t opt = nbd_get32(conn_in(c) + 8), len = nbd_get32(conn_in(c) + 12);
			if (nbd_get64(conn_in(c)) != NBD_IHAVEOPT || len > NBD_MAX_OPTION) {
				qbd_warn("nbd", "bad option header (length %u): closing", len);
				conn_close(c);
				return;
			}
			if (c->in_len < 16 + (size_t)len)
				return;
			bool open = conn_option(c, opt, conn_in(c) + 16, len);
			if (!open)
				return;
			conn_consume(c, 16 + (size_t)len);
		} else if (c->state == ST_TRANSMISSION) {
			if (!conn_request(c))
				break;
		} else {
			return;
		}
	}
	conn_update_reading(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct nconn *c = h->data;
	size_t want = c->in_len + 65536;

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

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
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

/* Stop reading while too much is in flight or buffered, or after DISC. */
static void conn_update_reading(struct nconn *c)
{
	bool want = c->s->started && !c->closing && !c->ending && !c->disc && !c->s->stopping &&
		    c->in_flight < NBD_MAX_INFLIGHT && c->in_len < 2 * NBD_MAX_PAYLOAD;

	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = false;
	}
}

static void on_connection(uv_stream_t *l, int status)
{
	struct nbd_server *s = l->data;
	struct nconn *c;
	uint8_t g[18];

	if (status < 0 || s->stopping)
		return;
	c = calloc(1, sizeof *c);
	if (!c)
		return;
	c->s = s;
	uv_pipe_init(&s->loop, &c->pipe, 0);
	c->pipe.data = c;
	if (uv_accept(l, (uv_stream_t *)&c->pipe) < 0) {
		uv_close((uv_handle_t *)&c->pipe, (uv_close_cb)free);
		return;
	}
	c->next = s->conns;
	s->conns = c;
	s->stats.connections_total++;
	c->state = ST_CLIENT_FLAGS;
	nbd_greeting(g);
	conn_send_copy(c, g, sizeof g);
	conn_update_reading(c);
}

static void on_qbd(uv_poll_t *p, int status, int events)
{
	struct nbd_server *s = p->data;

	(void)status;
	(void)events;
	/* The replies of one pass go out in one write per connection. */
	s->corked = true;
	qbd_process(s->vol);
	server_uncork(s);
}

/* Close every handle of the server; the loop then ends. */
static void server_close_handles(struct nbd_server *s)
{
	s->stopping = true;
	for (struct nconn *c = s->conns; c; c = c->next)
		conn_close(c);
	if (s->listening) {
		uv_close((uv_handle_t *)&s->listener, NULL);
		s->listening = false;
	}
	uv_close((uv_handle_t *)&s->qpoll, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->drain, NULL);
	if (!uv_is_closing((uv_handle_t *)&s->watchdog))
		uv_close((uv_handle_t *)&s->watchdog, NULL);
	if (s->metrics && !uv_is_closing((uv_handle_t *)&s->metrics_timer))
		uv_close((uv_handle_t *)&s->metrics_timer, NULL);
}

static void server_metrics_publish(struct nbd_server *s)
{
	struct qbd_mbuf b = { 0 };

	nbd_metrics_render(&b, &s->stats, s->vol, s->name, s->o.zone);
	if (b.failed)
		free(b.p);
	else
		qbd_metrics_publish(s->metrics, b.p, b.len);
}

static void on_metrics_tick(uv_timer_t *t)
{
	server_metrics_publish(t->data);
}

static void on_drain(uv_timer_t *t)
{
	struct nbd_server *s = t->data;
	unsigned busy = 0;

	for (struct nconn *c = s->conns; c; c = c->next)
		busy += c->in_flight;
	if (busy && ++s->drain_ticks < 500)
		return;
	if (busy)
		qbd_warn("nbd", "%u requests still in flight after 10 s; stopping anyway", busy);
	uv_timer_stop(t);
	server_close_handles(s);
}

/* Stop accepting and reading, then drain (on_drain closes everything). */
static void server_stop(struct nbd_server *s, const char *why)
{
	if (s->stopping)
		return;
	qbd_info("nbd", "%s: stopping: no new connections, draining", why);
	qbd_svc_stopping("%s: draining", why);
	s->stopping = true;
	if (s->listening) {
		uv_close((uv_handle_t *)&s->listener, NULL);
		s->listening = false;
	}
	for (struct nconn *c = s->conns; c; c = c->next)
		conn_update_reading(c);
	uv_timer_start(&s->drain, on_drain, 0, 20);
}

void nbd_server_stop(struct nbd_server *s)
{
	server_stop(s, "stop requested");
}

bool nbd_server_stopping(const struct nbd_server *s)
{
	return s->stopping;
}

static void on_signal(uv_signal_t *sig, int signum)
{
	char why[32];

	snprintf(why, sizeof why, "signal %d", signum);
	server_stop(sig->data, why);
}

int nbd_server_adopt(struct nbd_server *s, int fd)
{
	struct nconn *c;
	int r;

	if (s->stopping) {
		close(fd);
		return -ESHUTDOWN;
	}
	c = calloc(1, sizeof *c);
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->s = s;
	uv_pipe_init(&s->loop, &c->pipe, 0);
	c->pipe.data = c;
	r = uv_pipe_open(&c->pipe, fd); /* makes it nonblocking */
	if (r < 0) {
		qbd_err("nbd", "adopt fd %d: %s", fd, uv_strerror(r));
		close(fd);
		uv_close((uv_handle_t *)&c->pipe, (uv_close_cb)free);
		return r;
	}
	c->adopted = true;
	c->index = s->next_index++;
	c->state = ST_TRANSMISSION;
	c->next = s->conns;
	s->conns = c;
	s->adopted_live++;
	qbd_debug("nbd", "adopted connection %d (fd %d)", c->index, fd);
	conn_update_reading(c);
	return c->index;
}

/* Refuse if a live server listens at path; remove a stale socket; listen
 * (mode 0600). */
static int server_listen(struct nbd_server *s, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int probe, r;

	if (strlen(path) >= sizeof sa.sun_path) {
		qbd_err("nbd", "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
		close(probe);
		qbd_err("nbd", "%s: another server is listening there", path);
		return -EADDRINUSE;
	}
	if (probe >= 0)
		close(probe);
	unlink(path);

	uv_pipe_init(&s->loop, &s->listener, 0);
	s->listener.data = s;
	s->listening = true;
	mode_t old = umask(0177); /* socket created 0600 */
	r = uv_pipe_bind(&s->listener, path);
	umask(old);
	s->bound = r == 0;
	if (r == 0)
		r = uv_listen((uv_stream_t *)&s->listener, 16, on_connection);
	if (r < 0) {
		qbd_err("nbd", "listen on %s: %s", path, uv_strerror(r));
		return -EADDRNOTAVAIL;
	}
	return 0;
}

int nbd_serve(struct qbd_volume *vol, const struct nbd_serve_opts *o)
{
	struct nbd_server *s = calloc(1, sizeof *s);
	unsigned i = 0;
	int r = 0;

	if (!s) {
		for (i = 0; i < o->n_fds; i++)
			close(o->fds[i]);
		return -ENOMEM;
	}
	/* A reply to a client that closed its end (or a kernel socket the
	 * kernel gave up on) must fail with EPIPE, not kill the process:
	 * libuv writes to sockets without MSG_NOSIGNAL. */
	signal(SIGPIPE, SIG_IGN);
	s->vol = vol;
	s->o = *o;
	s->o.fds = NULL;
	s->name = o->export_name ? o->export_name : "";
	s->size = qbd_size(vol);
	uv_loop_init(&s->loop);
	uv_poll_init(&s->loop, &s->qpoll, qbd_get_fd(vol));
	s->qpoll.data = s;
	uv_signal_init(&s->loop, &s->sigterm);
	uv_signal_init(&s->loop, &s->sigint);
	s->sigterm.data = s->sigint.data = s;
	uv_timer_init(&s->loop, &s->drain);
	s->drain.data = s;
	qbd_svc_watchdog_start(&s->loop, &s->watchdog);
	if (o->metrics) {
		r = qbd_metrics_start(o->metrics, &s->metrics);
		if (r == 0) {
			uv_timer_init(&s->loop, &s->metrics_timer);
			s->metrics_timer.data = s;
			server_metrics_publish(s);
			uv_timer_start(&s->metrics_timer, on_metrics_tick, 1000, 1000);
			uv_unref((uv_handle_t *)&s->metrics_timer);
		}
	}

	if (r == 0 && o->socket_path)
		r = server_listen(s, o->socket_path);
	for (i = 0; r == 0 && i < o->n_fds; i++) {
		int idx = nbd_server_adopt(s, o->fds[i]);
		if (idx < 0)
			r = idx;
	}
	for (; i < o->n_fds; i++)   /* not adopted after an error: still ours */
		close(o->fds[i]);
	if (r == 0 && o->on_ready)
		r = o->on_ready(s, o->arg);
	if (r != 0) {
		server_close_handles(s);
		uv_run(&s->loop, UV_RUN_DEFAULT);
		goto out;
	}
	uv_poll_start(&s->qpoll, UV_READABLE, on_qbd);
	uv_signal_start(&s->sigterm, on_signal, SIGTERM);
	uv_signal_start(&s->sigint, on_signal, SIGINT);
	s->started = true;
	for (struct nconn *c = s->conns; c; c = c->next)
		conn_update_reading(c);
	qbd_info("nbd", "serving volume %s (%llu bytes)%s%s, %u adopted connection%s",
		 s->name, (unsigned long long)s->size, o->socket_path ? " on " : "",
		 o->socket_path ? o->socket_path : "", o->n_fds, o->n_fds == 1 ? "" : "s");
	qbd_svc_ready("serving volume %s", s->name);
	uv_run(&s->loop, UV_RUN_DEFAULT);
out:
	if (s->bound)
		unlink(o->socket_path);
	while (s->conns) {
		struct nconn *c = s->conns;

		if (c->in_flight) {
			/* The drain gave up with requests of c still in
			 * libqbd: the last one's callback (on_io_done, run by
			 * qbd_close) frees c, which must outlive the server. */
			s->conns = c->next;
			c->s = NULL;
			continue;
		}
		conn_free(c);
	}
	uv_loop_close(&s->loop);
	qbd_metrics_stop(s->metrics);
	free(s);
	return r;
}
