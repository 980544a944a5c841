/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transmission phase of qbd-nbd's server: each request is framed,
 * validated (nbd_request_validate), turned into a libqbd io and
 * submitted; its completion becomes the reply. Replies may leave out of
 * order. With structured replies negotiated, READ and BLOCK_STATUS are
 * answered with structured chunks (one chunk each, flag DONE: DF holds
 * for every read), every other command with simple replies, as the
 * protocol allows. BLOCK_STATUS asks libqbd for the whole blocks around
 * the range and answers from its bitmap.
 *
 * Every connection shares the one libqbd handle, so NBD_FLAG_CAN_MULTI_CONN
 * holds: a FLUSH on any connection answers for every write acknowledged
 * before it on any connection (libqbd's flush covers every chunk
 * acknowledged before it was submitted, whatever request wrote it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/qbd.h"
#include "internal.h"

/* Room before read data for the largest reply header: a structured
 * OFFSET_DATA chunk (header + offset); a simple reply uses its end. */
#define READ_PREFIX (NBD_STRUCTURED_REPLY_SIZE + NBD_OFFSET_DATA_SIZE)
/* The longest message an ERROR chunk of ours carries. */
#define REPLY_MESSAGE_MAX 128

/* A request in libqbd: freed when it completes (request_on_done). */
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

/* ---- replies ---- */

static bool reply_structured_for(const struct nconn *c, uint16_t type)
{
	return (c->neg & NBD_NEG_STRUCTURED) &&
	       (type == NBD_CMD_READ || type == NBD_CMD_BLOCK_STATUS);
}

/* An error reply: a structured ERROR chunk where the command is answered
 * with structured replies, a simple reply otherwise. */
static void reply_error(struct nconn *c, uint64_t cookie, uint16_t type, uint32_t err,
			const char *msg)
{
	uint8_t b[NBD_STRUCTURED_REPLY_SIZE + NBD_ERROR_SIZE + REPLY_MESSAGE_MAX];

	if (reply_structured_for(c, type)) {
		char m[REPLY_MESSAGE_MAX];

		snprintf(m, sizeof m, "%s", msg);
		conn_send_copy(c, b, nbd_error_chunk(b, cookie, err, m));
		return;
	}
	nbd_simple_reply(b, cookie, err);
	conn_send_copy(c, b, NBD_SIMPLE_REPLY_SIZE);
}

/* A reply without data: success. */
static void reply_ok(struct nconn *c, uint64_t cookie)
{
	uint8_t b[NBD_SIMPLE_REPLY_SIZE];

	nbd_simple_reply(b, cookie, 0);
	conn_send_copy(c, b, sizeof b);
}

/* The data of READ request r, in r->buf after READ_PREFIX bytes: one
 * OFFSET_DATA chunk with flag DONE (the data is complete here), or a
 * simple reply whose header sits right before the data. The buffer goes
 * with the reply. */
static void reply_read(struct nconn *c, struct nreq *r)
{
	if (reply_structured_for(c, r->type)) {
		nbd_structured_reply(r->buf, r->cookie, NBD_REPLY_FLAG_DONE,
				     NBD_REPLY_TYPE_OFFSET_DATA,
				     NBD_OFFSET_DATA_SIZE + r->io.length);
		nbd_put64(r->buf + NBD_STRUCTURED_REPLY_SIZE, r->io.offset);
		conn_send(c, r->buf, READ_PREFIX + r->io.length);
	} else {
		/* The buffer is freed from its start. */
		nbd_simple_reply(r->buf + READ_PREFIX - NBD_SIMPLE_REPLY_SIZE, r->cookie, 0);
		conn_send_at(c, r->buf, READ_PREFIX - NBD_SIMPLE_REPLY_SIZE,
			     NBD_SIMPLE_REPLY_SIZE + r->io.length);
	}
	r->buf = NULL;
}

/* Send the answer to BLOCK_STATUS request r (its bitmap is in r->buf). */
static void reply_block_status(struct nconn *c, struct nreq *r)
{
	uint32_t nbits = r->io.length / NBD_BLOCK;
	size_t cap = nbd_block_status_size(nbits);
	uint8_t *b = malloc(cap);

	if (!b) {
		reply_error(c, r->cookie, r->type, NBD_ENOMEM, "out of memory");
		return;
	}
	conn_send(c, b, nbd_block_status_chunk(b, r->cookie, NBD_META_ID_BASE_ALLOCATION,
					       r->buf, r->io.offset, nbits, r->off, r->len,
					       r->flags & NBD_CMD_FLAG_REQ_ONE));
}

/* BLOCK_STATUS of a range with no whole block to ask libqbd about (the
 * partial tail block of a volume): one descriptor, data. */
static void reply_block_status_tail(struct nconn *c, const struct nbd_request *q,
				    uint64_t block_off)
{
	uint8_t b[NBD_STRUCTURED_REPLY_SIZE + NBD_BLOCK_STATUS_SIZE + NBD_BLOCK_DESC_SIZE];
	uint8_t one = 1;

	conn_send_copy(c, b, nbd_block_status_chunk(b, q->cookie, NBD_META_ID_BASE_ALLOCATION,
						    &one, block_off, 1, q->offset, q->length,
						    true));
}

/* ---- completion ---- */

static void request_count(struct nbd_server *s, const struct nreq *r)
{
	struct nbd_stats *st = &s->stats;

	if (r->type >= NBD_STATS_CMDS)
		return;
	st->requests[r->type]++;
	if (r->io.res < 0)
		st->errors[r->type]++;
	else if (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE)
		st->bytes[r->type] += r->len;
	qbd_hist_add(&st->lat[r->type], qbd_now_ns() - r->start_ns);
}

static void request_reply(struct nconn *c, struct nreq *r)
{
	uint32_t err = nbd_errno(r->io.res);

	if (r->io.res < 0)
		qbd_warn("nbd", "request %#llx (cmd %u, offset %llu, length %u) failed: %s",
			 (unsigned long long)r->cookie, r->type,
			 (unsigned long long)r->io.offset, r->io.length, strerror(-r->io.res));
	if (err)
		reply_error(c, r->cookie, r->type, err, strerror(-r->io.res));
	else if (r->type == NBD_CMD_BLOCK_STATUS)
		reply_block_status(c, r);
	else if (r->type == NBD_CMD_READ)
		reply_read(c, r);
	else
		reply_ok(c, r->cookie);
}

static void request_free(struct nreq *r)
{
	free(r->buf);
	free(r);
}

static void request_on_done(struct qbd_io *io)
{
	struct nreq *r = io->user;
	struct nconn *c = r->c;

	c->in_flight--;
	if (c->s)
		request_count(c->s, r);
	if (c->closing) {
		request_free(r);
		if (c->closed && c->in_flight == 0)
			conn_free(c);
		return;
	}
	request_reply(c, r);
	request_free(r);
	if (c->disc && c->in_flight == 0)
		conn_end(c);
	else
		conn_update_reading(c);
	/* Input may be waiting that was held back by the in-flight cap. */
	if (!c->closing)
		conn_process(c);
}

/* ---- arrival ---- */

/* Is a whole request in the input? Decodes its header into q and sets
 * *need to its bytes (a WRITE's data included). false when more input
 * is needed, or after closing the connection on a bad magic or a WRITE
 * payload too large to skip. */
static bool request_framed(struct nconn *c, struct nbd_request *q, size_t *need)
{
	if (c->in_len < NBD_REQUEST_SIZE)
		return false;
	nbd_request_decode(conn_in(c), q);
	if (q->magic != NBD_REQUEST_MAGIC) {
		qbd_warn("nbd", "bad request magic %#x: closing the connection", q->magic);
		conn_close(c);
		return false;
	}
	*need = NBD_REQUEST_SIZE;
	if (q->type == NBD_CMD_WRITE) {
		if (q->length > NBD_MAX_PAYLOAD) {
			qbd_warn("nbd", "write payload of %u bytes cannot be skipped: "
				 "closing the connection", q->length);
			conn_close(c);
			return false;
		}
		*need += q->length;
	}
	return c->in_len >= *need;
}

/* After DISC or during shutdown nothing new is started: the request is
 * dropped (after DISC) or refused. */
static bool request_refuse(struct nconn *c, const struct nbd_request *q, size_t need)
{
	conn_consume(c, need);
	if (!c->disc)
		reply_error(c, q->cookie, q->type, NBD_ESHUTDOWN, "server shutting down");
	return true;
}

/* NBD_CMD_DISC: replies in flight are sent, then the connection closes. */
static bool request_disc(struct nconn *c, size_t need)
{
	qbd_debug("nbd", "NBD_CMD_DISC with %u requests in flight", c->in_flight);
	c->disc = true;
	conn_consume(c, need);
	if (c->in_flight == 0)
		conn_end(c);
	return false;
}

/*
 * BLOCK_STATUS: whole blocks around the range, at most what one libqbd
 * request answers (the reply may cover less than asked), and within the
 * volume (a size that is not a multiple of 4 KiB leaves a tail block that
 * is reported as data). Sets r->io's range; false when it holds no whole
 * block.
 */
static bool request_block_range(struct nreq *r, uint64_t size)
{
	uint64_t end = (r->off + r->len + NBD_BLOCK - 1) / NBD_BLOCK * NBD_BLOCK;

	r->io.offset = r->off / NBD_BLOCK * NBD_BLOCK;
	if (end > size / NBD_BLOCK * NBD_BLOCK)
		end = size / NBD_BLOCK * NBD_BLOCK;
	if (end - r->io.offset > QBD_BLOCK_STATUS_MAX)
		end = r->io.offset + QBD_BLOCK_STATUS_MAX;
	if (end <= r->io.offset)
		return false;
	r->io.length = (uint32_t)(end - r->io.offset);
	return true;
}

/* The buffer r needs: READ_PREFIX and the data for a READ, the data for
 * a WRITE, the bitmap for BLOCK_STATUS, none for the others. */
static size_t request_buf_size(const struct nreq *r)
{
	switch (r->type) {
	case NBD_CMD_READ:
		return READ_PREFIX + r->len;
	case NBD_CMD_WRITE:
		return r->len;
	case NBD_CMD_BLOCK_STATUS:
		return r->io.length / NBD_BLOCK / 8 + 1;
	default:
		return 0;
	}
}

/* The libqbd io of r (its range is set): the operation, its buffer (a
 * WRITE's data copied from payload), FUA. */
static void request_set_io(struct nreq *r, const uint8_t *payload)
{
	switch (r->type) {
	case NBD_CMD_READ:
		r->io.op = QBD_IO_READ;
		r->io.buf = r->buf + READ_PREFIX;
		break;
	case NBD_CMD_WRITE:
		r->io.op = QBD_IO_WRITE;
		memcpy(r->buf, payload, r->len);
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
	if (r->flags & NBD_CMD_FLAG_FUA)
		r->io.flags |= QBD_IO_F_FUA;
}

/* A valid request q, payload its WRITE data (still in the input): its
 * nreq, ready to submit; or NULL when it was answered already (out of
 * memory, or BLOCK_STATUS of the tail block). */
static struct nreq *request_new(struct nconn *c, const struct nbd_request *q,
				const uint8_t *payload)
{
	struct nreq *r = calloc(1, sizeof *r);
	size_t blen;

	if (!r)
		goto nomem;
	r->c = c;
	r->start_ns = qbd_now_ns();
	r->cookie = q->cookie;
	r->type = q->type;
	r->flags = q->flags;
	r->off = q->offset;
	r->len = q->length;
	r->io.offset = q->offset;
	r->io.length = q->length;
	r->io.cb = request_on_done;
	r->io.user = r;
	if (q->type == NBD_CMD_BLOCK_STATUS && !request_block_range(r, c->s->size)) {
		reply_block_status_tail(c, q, r->io.offset);
		free(r);
		return NULL;
	}
	blen = request_buf_size(r);
	if (blen && !(r->buf = malloc(blen))) {
		free(r);
		goto nomem;
	}
	request_set_io(r, payload);
	return r;
nomem:
	reply_error(c, q->cookie, q->type, NBD_ENOMEM, "out of memory");
	return NULL;
}

bool conn_request(struct nconn *c)
{
	struct nbd_request q;
	struct nreq *r;
	size_t need;
	uint32_t err;

	if (!request_framed(c, &q, &need))
		return false;
	if (c->disc || c->s->stopping)
		return request_refuse(c, &q, need);
	err = nbd_request_validate(&q, c->s->size, c->neg);
	if (err == 0 && q.type == NBD_CMD_DISC)
		return request_disc(c, need);
	if (err) {
		reply_error(c, q.cookie, q.type, err, "invalid request (see the server log)");
		conn_consume(c, need);
		return true;
	}
	if (c->in_flight >= NBD_MAX_INFLIGHT)
		return false;
	r = request_new(c, &q, conn_in(c) + NBD_REQUEST_SIZE);
	conn_consume(c, need);
	if (r) {
		c->in_flight++;
		qbd_submit(c->s->vol, &r->io);
	}
	return true;
}
