/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd server: start-up (engine, etcd identity and registration), the
 * libuv loop serving wire requests on the engine, the lease keepalive
 * thread, and the SIGTERM drain.
 *
 * Ownership: the server owns every connection; a connection is freed when
 * its handle has closed and no request refers to it (refs). A request owns
 * its data buffer and reply header until its reply write completes.
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>
#include <xxhash.h>

#include "chunkd.h"
#include "chunkd-internal.h"
#include "common/log.h"
#include "common/svc.h"
#include "common/util.h"
#include "common/uvbuf.h"
#include "engine/engine.h"
#include "replicator/meta/meta.h"
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

/* Close the socket; the connection itself lives until its last request
 * has completed. Safe to call from any callback, more than once. */
static void conn_close(struct chunkd_conn *c)
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

static void conn_update_reading(struct chunkd_conn *c)
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
	conn_update_reading(c);
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
		conn_close(c);
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
				bufs[n++] = uv_buf_init(r->data, r->data_len);
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

/* Send the reply of r with status (0 / -errno) and free r once sent. */
/* The metrics of a request answered with status. */
static void chunkd_count(struct chunkd *d, const struct chunkd_req *r, int status)
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
	chunkd_count(c->d, r, status);
	r->reply.data_len = r->data_len;
	h = qbd_wire_encode(&r->reply, r->hdr, sizeof r->hdr);
	if (h < 0) {
		qbd_err(COMP, "%s: cannot encode %s reply", c->peer,
			qbd_wire_type_name(r->type));
		conn_close(c);
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

/* ---- engine requests ---- */

struct chunk_list {
	uint8_t *p;
	size_t len, cap;
};

_Static_assert(QBD_ENGINE_CHUNK_SUSPECT == QBD_WIRE_CHUNK_SUSPECT &&
	       QBD_ENGINE_CHUNK_DAMAGED == QBD_WIRE_CHUNK_DAMAGED,
	       "the wire carries the engine's chunk flags");

/* OPEN reply: one wire chunk entry (index, flags, version) per chunk held.
 * Flags the wire does not define are dropped (none today). */
static int chunk_list_add(void *user, uint64_t chunk, uint64_t version, uint32_t flags)
{
	struct chunk_list *l = user;

	if (l->len + 16 > QBD_WIRE_MAX_DATA)
		return -EMSGSIZE;
	if (l->len + 16 > l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 4096;
		uint8_t *np = realloc(l->p, ncap);
		if (!np)
			return -ENOMEM;
		l->p = np;
		l->cap = ncap;
	}
	if (qbd_wire_put_entry(l->p + l->len, chunk, version, flags & QBD_WIRE_CHUNK_FLAGS) < 0)
		return -ERANGE; /* a chunk index the wire cannot carry */
	l->len += 16;
	return 0;
}


/*
 * PING reply of a writer: the volume's flagged chunks (SUSPECT, DAMAGED),
 * so that damage found while it is attached (a read, a scrub) reaches it.
 * At most QBD_WIRE_MAX_FLAGGED entries; reply.flagged counts them all.
 * Past the bound the connection's cursor moves on, so successive PINGs
 * list them all in turn (the engine's order is stable between calls).
 * Out of memory: the first entries only, which is still correct.
 */
static void ping_report(struct chunkd_req *r, uint64_t volume)
{
	struct chunkd_conn *c = r->c;
	struct qbd_engine *e = c->d->e;
	uint64_t few[QBD_WIRE_MAX_FLAGGED], *chunks = few;
	uint32_t fewf[QBD_WIRE_MAX_FLAGGED], *flags = fewf;
	unsigned total, n, start = 0, cnt;

	total = qbd_engine_flagged_chunks(e, volume, few, fewf, QBD_WIRE_MAX_FLAGGED);
	n = total < QBD_WIRE_MAX_FLAGGED ? total : QBD_WIRE_MAX_FLAGGED;
	if (total > QBD_WIRE_MAX_FLAGGED) {
		uint64_t *all = malloc(total * sizeof(*all));
		uint32_t *allf = malloc(total * sizeof(*allf));

		if (all && allf) {
			unsigned got = qbd_engine_flagged_chunks(e, volume, all, allf, total);

			chunks = all;
			flags = allf;
			n = got < total ? got : total;
			start = c->ping_cursor % n;
			c->ping_cursor = (start + QBD_WIRE_MAX_FLAGGED) % n;
		} else {
			free(all);
			free(allf);
		}
	}
	cnt = n < QBD_WIRE_MAX_FLAGGED ? n : QBD_WIRE_MAX_FLAGGED;
	r->reply.flagged = total;
	if (cnt && (r->data = malloc((size_t)cnt * QBD_WIRE_ENTRY))) {
		unsigned k = 0;

		for (unsigned i = 0; i < cnt; i++) {
			unsigned j = (start + i) % n;
			uint32_t f = flags[j] & QBD_WIRE_CHUNK_FLAGS;

			if (f && qbd_wire_put_entry((uint8_t *)r->data + (size_t)k * QBD_WIRE_ENTRY,
						    chunks[j],
						    qbd_engine_chunk_version(e, volume, chunks[j]),
						    f) == 0)
				k++;
		}
		r->data_len = k * QBD_WIRE_ENTRY;
	}
	if (chunks != few) {
		free(chunks);
		free(flags);
	}
}

/* Submit the flushes whose earlier writes have all left the engine. */
static void conn_run_flushes(struct chunkd_conn *c)
{
	while (c->fq_head &&
	       (!c->wq_head || c->wq_head->wseq > c->fq_head->wseq)) {
		struct chunkd_req *f = c->fq_head;

		c->fq_head = f->qnext;
		if (!c->fq_head)
			c->fq_tail = NULL;
		f->qnext = NULL;
		req_submit(f, QBD_ENGINE_FLUSH);
	}
}

static void conn_write_done(struct chunkd_conn *c, struct chunkd_req *r)
{
	if (r->qprev)
		r->qprev->qnext = r->qnext;
	else
		c->wq_head = r->qnext;
	if (r->qnext)
		r->qnext->qprev = r->qprev;
	else
		c->wq_tail = r->qprev;
	r->qprev = r->qnext = NULL;
	conn_run_flushes(c);
}

static void req_on_engine(struct qbd_engine_req *er)
{
	struct chunkd_req *r = er->user;
	struct chunkd *d = r->c->d;
	int status = er->res < 0 ? er->res : 0;

	if (r->type == QBD__MSG_TYPE__WRITE)
		conn_write_done(r->c, r);

	if (er->res < 0)
		qbd_debug(COMP, "%s %llu/%llu: engine: %s", qbd_wire_type_name(r->type),
			  (unsigned long long)er->volume, (unsigned long long)er->chunk,
			  strerror(-er->res));
	switch (r->type) {
	case QBD__MSG_TYPE__OPEN:
		r->reply.epoch = qbd_engine_promised(d->e, r->volume);
		if (status == 0) {
			struct chunk_list l = { 0 };
			status = qbd_engine_for_each_chunk(d->e, r->volume,
							   chunk_list_add, &l);
			r->data = l.p;
			r->data_len = status == 0 ? (uint32_t)l.len : 0;
			if (status < 0)
				qbd_err(COMP, "OPEN %llu: chunk list: %s",
					(unsigned long long)r->volume, strerror(-status));
		}
		break;
	case QBD__MSG_TYPE__READ:
		r->reply.version = er->version;
		/* The chunk's flags: a PULL refuses a flagged source (a
		 * chunk server that restarted after the writer chose it). */
		r->reply.flags = qbd_engine_chunk_flags(d->e, er->volume, er->chunk) &
				 QBD_WIRE_CHUNK_FLAGS;
		if (er->op == QBD_ENGINE_BITMAP)
			r->data_len = status == 0 ? (r->length / QBD_WIRE_BLOCK + 7) / 8 : 0;
		else
			r->data_len = status == 0 ? r->length : 0;
		break;
	case QBD__MSG_TYPE__WRITE:
		r->reply.version = er->version;
		r->data_len = 0;
		break;
	case QBD__MSG_TYPE__PULL:
		r->reply.version = er->version;
		r->data_len = 0;
		break;
	case QBD__MSG_TYPE__CHECKSUM:
		r->reply.version = er->version;
		if (status == 0)
			r->reply.checksum = XXH3_64bits(r->data, er->length);
		r->data_len = 0;
		break;
	default:
		break;
	}
	req_reply(r, status);
}

void req_submit(struct chunkd_req *r, enum qbd_engine_op op)
{
	r->er.op = op;
	r->er.cb = req_on_engine;
	r->er.user = r;
	qbd_engine_submit(r->c->d->e, &r->er);
}

/* ---- request validation and dispatch ---- */

/* The one place that checks a request's shape. 0 or -EINVAL (logged). */
static int chunkd_validate(const struct chunkd *d, const Qbd__Msg *m,
			   const void *data, const char *peer)
{
	const char *why = NULL;
	const char *name = qbd_wire_type_name(m->type);

	switch (m->type) {
	case QBD__MSG_TYPE__HELLO:
	case QBD__MSG_TYPE__AUTH:
	case QBD__MSG_TYPE__OPEN:
	case QBD__MSG_TYPE__FLUSH:
	case QBD__MSG_TYPE__DELETE_VOLUME:
	case QBD__MSG_TYPE__PING:
	case QBD__MSG_TYPE__CHECKSUM:
	case QBD__MSG_TYPE__USAGE:
		if (m->data_len != 0)
			why = "unexpected data";
		break;
	case QBD__MSG_TYPE__PULL:
		if (m->data_len != 0 || m->offset != 0 || m->length != d->chunk_size)
			why = "PULL must cover the whole chunk, without data";
		else if (!m->source_node || !m->source_addr || !*m->source_addr)
			why = "PULL without a source";
		break;
	case QBD__MSG_TYPE__READ:
	case QBD__MSG_TYPE__WRITE:
		if (m->length == 0)
			why = "zero length";
		else if ((uint64_t)m->offset + m->length > d->chunk_size)
			why = "range outside the chunk";
		else if (m->type == QBD__MSG_TYPE__READ && m->data_len != 0)
			why = "READ with data";
		else if (m->type == QBD__MSG_TYPE__READ && (m->flags & ~QBD_WIRE_F_BITMAP))
			why = "unknown READ flags";
		else if (m->type == QBD__MSG_TYPE__READ && (m->flags & QBD_WIRE_F_BITMAP) &&
			 (m->offset % QBD_WIRE_BLOCK || m->length % QBD_WIRE_BLOCK))
			why = "BITMAP READ of a range not in whole 4 KiB blocks";
		else if (m->type == QBD__MSG_TYPE__WRITE &&
			 (m->flags & ~(QBD_WIRE_F_ZERO | QBD_WIRE_F_FUA | QBD_WIRE_F_REPAIR |
				       QBD_WIRE_F_RESYNC)))
			why = "unknown WRITE flags";
		else if (m->type == QBD__MSG_TYPE__WRITE && (m->flags & QBD_WIRE_F_ZERO) &&
			 m->data_len != 0)
			why = "zeroing WRITE with data";
		else if (m->type == QBD__MSG_TYPE__WRITE && !(m->flags & QBD_WIRE_F_ZERO) &&
			 (m->data_len != m->length || data == NULL))
			why = "WRITE data length differs from length";
		else if (m->type == QBD__MSG_TYPE__WRITE && (m->flags & QBD_WIRE_F_RESYNC) &&
			 (m->flags & (QBD_WIRE_F_ZERO | QBD_WIRE_F_REPAIR)))
			why = "RESYNC combined with ZERO or REPAIR";
		else if (m->type == QBD__MSG_TYPE__WRITE && (m->flags & QBD_WIRE_F_RESYNC) &&
			 (m->offset != 0 || m->length != d->chunk_size))
			why = "RESYNC not of the whole chunk";
		break;
	default:
		why = "unknown message type";
		break;
	}
	if (!why && m->reply)
		why = "reply where a request was expected";
	if (why) {
		qbd_warn(COMP, "%s: invalid %s (type %d) request %llu vol %llu chunk %llu "
			 "off %u len %u data %u: %s", peer, name, (int)m->type,
			 (unsigned long long)m->request_id, (unsigned long long)m->volume_id,
			 (unsigned long long)m->chunk, m->offset, m->length, m->data_len, why);
		return -EINVAL;
	}
	return 0;
}

/* With a secret, only HELLO and AUTH before the peer proved it. */
static bool conn_may(const struct chunkd_conn *c, int type)
{
	return !c->d->secret.len || c->authed || type == QBD__MSG_TYPE__HELLO ||
	       type == QBD__MSG_TYPE__AUTH;
}

static void *conn_on_header(void *user, const Qbd__Msg *m)
{
	struct chunkd_conn *c = user;

	if (m->type != QBD__MSG_TYPE__WRITE || !conn_may(c, m->type) || m->data_len > c->d->chunk_size ||
	    (m->flags & QBD_WIRE_F_ZERO))
		return QBD_WIRE_DISCARD;
	chunkd_buf_free(c->d, c->pend_buf);
	c->pend_buf = chunkd_buf_alloc(c->d, m->data_len);
	return c->pend_buf ? c->pend_buf : QBD_WIRE_DISCARD;
}

/* HELLO: with a secret, answer the peer's challenge and set ours. */
static int conn_hello(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	struct chunkd *d = c->d;

	if (!d->secret.len) {
		req_reply(r, 0);
		return 0;
	}
	if (m->nonce.len != QBD_AUTH_NONCE) {
		c->auth_logged = true;
		qbd_warn(COMP, "%s: HELLO without a challenge: the peer has no cluster "
			 "secret; refused, closing", c->peer);
		r->close_after = true;
		req_reply(r, -EACCES);
		return 1;
	}
	memcpy(c->nonce_peer, m->nonce.data, QBD_AUTH_NONCE);
	qbd_auth_nonce(c->nonce_ours);
	qbd_auth_mac(&d->secret, QBD_AUTH_SERVER, d->cluster_id, c->nonce_peer,
		     c->nonce_ours, c->mac_ours);
	c->hello_done = true;
	c->authed = false;
	r->reply.nonce.data = c->nonce_ours;
	r->reply.nonce.len = QBD_AUTH_NONCE;
	r->reply.mac.data = c->mac_ours;
	r->reply.mac.len = QBD_AUTH_MAC;
	req_reply(r, 0);
	return 0;
}

/* AUTH: the peer's answer to our challenge. */
static int conn_auth(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	struct chunkd *d = c->d;

	if (!d->secret.len) {
		req_reply(r, 0);
		return 0;
	}
	if (!c->hello_done ||
	    !qbd_auth_check(&d->secret, QBD_AUTH_CLIENT, d->cluster_id, c->nonce_ours,
			    c->nonce_peer, m->mac.data, m->mac.len)) {
		c->auth_logged = true;
		qbd_warn(COMP, "%s: authentication failed (%s); refused, closing", c->peer,
			 c->hello_done ? "wrong cluster secret" : "AUTH before HELLO");
		r->close_after = true;
		req_reply(r, -EACCES);
		return 1;
	}
	c->authed = true;
	qbd_debug(COMP, "%s: authenticated", c->peer);
	req_reply(r, 0);
	return 0;
}

static int conn_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct chunkd_conn *c = user;
	struct chunkd *d = c->d;
	struct chunkd_req *r;
	uint64_t promised;
	int rc;

	r = calloc(1, sizeof *r);
	if (!r) {
		qbd_err(COMP, "%s: out of memory", c->peer);
		return -ENOMEM;
	}
	r->c = c;
	r->start_ns = qbd_now_ns();
	c->refs++;
	c->inflight++;
	if (data && data == c->pend_buf) {
		r->data = c->pend_buf;  /* the request owns the WRITE data now */
		c->pend_buf = NULL;
	}
	r->type = m->type;
	r->volume = m->volume_id;
	r->epoch = m->epoch;
	r->length = m->length;
	qbd__msg__init(&r->reply);
	r->reply.type = m->type;
	r->reply.reply = true;
	r->reply.request_id = m->request_id;
	r->reply.cluster_id = d->cluster_id;
	r->reply.node_id = d->node_id;
	r->reply.volume_id = m->volume_id;
	r->reply.chunk = m->chunk;
	r->reply.offset = m->offset;
	r->reply.length = m->length;

	if (m->cluster_id != d->cluster_id) {
		qbd_warn(COMP, "%s: cluster id %016llx is not ours (%016llx); closing",
			 c->peer, (unsigned long long)m->cluster_id,
			 (unsigned long long)d->cluster_id);
		r->close_after = true;
		req_reply(r, -EACCES);
		return 1;
	}
	if (m->node_id != d->node_id &&
	    !(m->type == QBD__MSG_TYPE__HELLO && m->node_id == 0)) {
		qbd_warn(COMP, "%s: %s for node %016llx, we are %016llx; closing",
			 c->peer, qbd_wire_type_name(m->type),
			 (unsigned long long)m->node_id, (unsigned long long)d->node_id);
		r->close_after = true;
		req_reply(r, -ENXIO);
		return 1;
	}
	if (!conn_may(c, m->type)) {
		c->auth_logged = true;
		qbd_warn(COMP, "%s: %s before authentication: refused, closing (a peer "
			 "without the cluster secret?)", c->peer, qbd_wire_type_name(m->type));
		r->close_after = true;
		req_reply(r, -EACCES);
		return 1;
	}
	rc = chunkd_validate(d, m, r->data, c->peer);
	if (rc < 0) {
		req_reply(r, rc);
		return 0;
	}

	promised = qbd_engine_promised(d->e, m->volume_id);
	switch (m->type) {
	case QBD__MSG_TYPE__HELLO: {
		struct qbd_engine_stats st;
		qbd_engine_stats(d->e, &st);
		r->reply.chunk_size = st.chunk_size;
		r->reply.capacity = st.capacity;
		r->reply.used = st.used;
		return conn_hello(c, r, m);
	}
	case QBD__MSG_TYPE__AUTH:
		return conn_auth(c, r, m);
	case QBD__MSG_TYPE__PING:
		/* With a volume: "do you still accept my epoch?" (the
		 * writer's read lease). */
		if (m->volume_id && m->epoch != promised) {
			r->reply.epoch = promised;
			req_reply(r, m->epoch < promised ? -EPERM : -ENOTCONN);
			return 0;
		}
		if (m->volume_id)
			ping_report(r, m->volume_id);
		req_reply(r, 0);
		return 0;
	case QBD__MSG_TYPE__OPEN:
		if (m->epoch < promised) {
			r->reply.epoch = promised;
			req_reply(r, -EPERM);
			return 0;
		}
		r->er.volume = m->volume_id;
		r->er.epoch = m->epoch;
		req_submit(r, QBD_ENGINE_PROMISE);
		return 0;
	case QBD__MSG_TYPE__USAGE: {
		/* Read-only, for operators: any epoch. Volume 0 is the store. */
		struct qbd_engine_stats st;

		qbd_engine_stats(d->e, &st);
		r->reply.capacity = st.capacity;
		r->reply.free_slots = st.free_slots;
		if (m->volume_id) {
			qbd_engine_volume_usage(d->e, m->volume_id, &r->reply.chunks,
						&r->reply.held);
			r->reply.used = r->reply.chunks * st.chunk_size;
		} else {
			r->reply.chunks = st.chunks;
			r->reply.held = st.held;
			r->reply.used = st.used;
		}
		req_reply(r, 0);
		return 0;
	}
	case QBD__MSG_TYPE__CHECKSUM:
		/* Read-only, for comparing replicas: any epoch. */
		if (posix_memalign(&r->data, QBD_ENGINE_BLOCK, d->chunk_size) != 0) {
			r->data = NULL;
			req_reply(r, -ENOMEM);
			return 0;
		}
		r->er.volume = m->volume_id;
		r->er.chunk = m->chunk;
		r->er.offset = 0;
		r->er.length = d->chunk_size;
		r->er.buf = r->data;
		req_submit(r, QBD_ENGINE_READ);
		return 0;
	case QBD__MSG_TYPE__DELETE_VOLUME:
		if (m->epoch < promised) {
			r->reply.epoch = promised;
			req_reply(r, -EPERM);
			return 0;
		}
		r->er.volume = m->volume_id;
		r->er.epoch = m->epoch;
		req_submit(r, QBD_ENGINE_DELETE_VOLUME);
		return 0;
	default:
		break;
	}

	/* READ, WRITE, FLUSH: only the writer of the promised epoch. */
	if (m->epoch != promised) {
		r->reply.epoch = promised;
		req_reply(r, m->epoch < promised ? -EPERM : -ENOTCONN);
		return 0;
	}
	r->er.volume = m->volume_id;
	r->er.chunk = m->chunk;
	r->er.offset = m->offset;
	r->er.length = m->length;
	r->er.epoch = m->epoch;
	if (m->type == QBD__MSG_TYPE__PULL) {
		chunkd_pull(d, r, m);
	} else if (m->type == QBD__MSG_TYPE__FLUSH) {
		r->wseq = c->next_wseq;
		if (c->wq_head) {
			if (c->fq_tail)
				c->fq_tail->qnext = r;
			else
				c->fq_head = r;
			c->fq_tail = r;
		} else {
			req_submit(r, QBD_ENGINE_FLUSH);
		}
	} else if (m->type == QBD__MSG_TYPE__READ && (m->flags & QBD_WIRE_F_BITMAP)) {
		/* Which blocks hold data: from the metadata, no data I/O. */
		r->data = malloc(m->length / QBD_WIRE_BLOCK / 8 + 1);
		if (!r->data) {
			req_reply(r, -ENOMEM);
			return 0;
		}
		r->er.buf = r->data;
		req_submit(r, QBD_ENGINE_BITMAP);
	} else if (m->type == QBD__MSG_TYPE__READ) {
		r->data = chunkd_buf_alloc(d, m->length);
		if (!r->data) {
			req_reply(r, -ENOMEM);
			return 0;
		}
		r->er.buf = r->data;
		req_submit(r, QBD_ENGINE_READ);
	} else {
		r->er.buf = r->data;
		r->er.expected_version = m->expected_version;
		r->er.new_version = m->new_version;
		if (m->flags & QBD_WIRE_F_FUA)
			r->er.flags |= QBD_ENGINE_F_FUA;
		if (m->flags & QBD_WIRE_F_REPAIR)
			r->er.flags |= QBD_ENGINE_F_REPAIR;
		if (m->flags & QBD_WIRE_F_RESYNC)
			r->er.flags |= QBD_ENGINE_F_RESYNC;
		r->wseq = ++c->next_wseq;
		r->qprev = c->wq_tail;
		if (c->wq_tail)
			c->wq_tail->qnext = r;
		else
			c->wq_head = r;
		c->wq_tail = r;
		req_submit(r, (m->flags & QBD_WIRE_F_ZERO) ? QBD_ENGINE_ZERO
							   : QBD_ENGINE_WRITE);
	}
	return 0;
}

static const struct qbd_wire_rx_ops conn_rx_ops = {
	.on_header = conn_on_header,
	.on_frame = conn_on_frame,
};

static void conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct chunkd_conn *c = QBD_CONTAINER_OF((uv_tcp_t *)s, struct chunkd_conn, tcp);
	int rc;

	if (n == UV_EOF) {
		qbd_debug(COMP, "%s: disconnected", c->peer);
		conn_close(c);
		return;
	}
	if (n < 0) {
		qbd_warn(COMP, "%s: read: %s", c->peer, uv_strerror((int)n));
		conn_close(c);
		return;
	}
	/* The requests of one read reach the device in one submission. */
	qbd_engine_plug(c->d->e);
	if (c->direct)
		rc = n ? qbd_wire_rx_placed(&c->rx, (size_t)n, &conn_rx_ops, c) : 0;
	else
		rc = qbd_wire_rx_feed(&c->rx, (const uint8_t *)buf->base, (size_t)n,
				      &conn_rx_ops, c);
	c->direct = false;
	qbd_engine_unplug(c->d->e);
	if (rc < 0) {
		qbd_warn(COMP, "%s: %s; closing", c->peer, strerror(-rc));
		conn_close(c);
	} else if (rc > 0) {
		conn_close(c);  /* a reply with close_after is on its way */
	}
}

static void server_on_connection(uv_stream_t *srv, int status)
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
	conn_update_reading(c);
}

/* ---- engine and shutdown ---- */

static void engine_on_poll(uv_poll_t *p, int status, int events)
{
	struct chunkd *d = QBD_CONTAINER_OF(p, struct chunkd, engine_poll);

	(void)events;
	if (status < 0)
		qbd_warn(COMP, "engine poll: %s", uv_strerror(status));
	chunkd_cork(d);
	qbd_engine_poll(d->e);
	chunkd_uncork(d);
}

static void chunkd_close_all(struct chunkd *d)
{
	chunkd_peers_close(d);
	chunkd_scrub_stop(d);
	uv_close((uv_handle_t *)&d->stats_timer, NULL);
	while (d->conns)
		conn_close(d->conns);
	uv_close((uv_handle_t *)&d->engine_poll, NULL);
	uv_close((uv_handle_t *)&d->sig_term, NULL);
	uv_close((uv_handle_t *)&d->sig_int, NULL);
	uv_close((uv_handle_t *)&d->drain_timer, NULL);
}

static void chunkd_on_flushed(struct qbd_engine_req *er)
{
	struct chunkd *d = er->user;

	if (er->res < 0)
		qbd_err(COMP, "final flush: %s", strerror(-er->res));
	chunkd_close_all(d);
}

static bool chunkd_drained(const struct chunkd *d)
{
	if (qbd_engine_busy(d->e) > 0)
		return false;
	for (const struct chunkd_conn *c = d->conns; c; c = c->next)
		if (c->inflight > 0)
			return false;
	return true;
}

static void chunkd_on_drain_tick(uv_timer_t *t)
{
	struct chunkd *d = QBD_CONTAINER_OF(t, struct chunkd, drain_timer);
	bool timed_out = qbd_now_ns() - d->stop_start_ns >
			 (uint64_t)QBD_CHUNKD_DRAIN_MS * 1000000u;

	if (!chunkd_drained(d) && !timed_out)
		return;
	uv_timer_stop(t);
	if (timed_out)
		qbd_warn(COMP, "shutdown: gave up waiting after %d ms (%u engine requests busy)",
			 QBD_CHUNKD_DRAIN_MS, qbd_engine_busy(d->e));
	memset(&d->flush_req, 0, sizeof d->flush_req);
	d->flush_req.op = QBD_ENGINE_FLUSH;
	d->flush_req.cb = chunkd_on_flushed;
	d->flush_req.user = d;
	qbd_engine_submit(d->e, &d->flush_req);
}

static void chunkd_on_signal(uv_signal_t *s, int signum)
{
	struct chunkd *d = s->data;

	if (d->stopping)
		return;
	qbd_info(COMP, "signal %d: shutting down", signum);
	qbd_svc_stopping("signal %d: draining", signum);
	d->stopping = true;
	d->stop_start_ns = qbd_now_ns();
	chunkd_peers_close(d);
	uv_close((uv_handle_t *)&d->server, NULL);
	for (struct chunkd_conn *c = d->conns; c; c = c->next)
		conn_update_reading(c);
	uv_timer_start(&d->drain_timer, chunkd_on_drain_tick, 0, 20);
}

/* ---- numbers for the node record ---- */

/* Loop thread: copy the engine's and the scrubber's numbers into the
 * node record, which the keepalive thread publishes when they change. */
static void chunkd_stats_fill(struct chunkd *d)
{
	struct qbd_engine_stats st;

	qbd_engine_stats(d->e, &st);
	pthread_mutex_lock(&d->ka_mu);
	d->node.capacity = st.capacity;
	d->node.used = st.used;
	d->node.held = st.held;
	d->node.slots = st.slots;
	d->node.free_slots = st.free_slots;
	d->node.scrub = d->scrub.stats;
	d->node.io.data_reads = st.data_reads;
	d->node.io.data_read_bytes = st.data_read_bytes;
	d->node.io.data_writes = st.data_writes;
	d->node.io.data_write_bytes = st.data_write_bytes;
	d->node.io.meta_writes = st.meta_writes;
	d->node.io.zeroings = st.zeroings;
	d->node.io.syncs = st.syncs;
	pthread_mutex_unlock(&d->ka_mu);
}

static void chunkd_stats_tick(uv_timer_t *t)
{
	chunkd_stats_fill(QBD_CONTAINER_OF(t, struct chunkd, stats_timer));
}

/* The numbers of two records differ (seq and updated aside). */
static bool node_numbers_differ(const struct qbd_node_info *a, const struct qbd_node_info *b)
{
	return a->capacity != b->capacity || a->used != b->used || a->held != b->held ||
	       a->slots != b->slots || a->free_slots != b->free_slots ||
	       memcmp(&a->scrub, &b->scrub, sizeof a->scrub) != 0 ||
	       memcmp(&a->io, &b->io, sizeof a->io) != 0;
}

/* ---- keepalive thread ---- */

static void *chunkd_keepalive_main(void *arg)
{
	struct chunkd *d = arg;
	struct timespec ts;
	struct qbd_node_info last, cur;

	pthread_mutex_lock(&d->ka_mu);
	last = d->node;
	while (!d->ka_stop) {
		int64_t lease = d->lease;
		int rc;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += QBD_CHUNKD_KEEPALIVE_MS / 1000;
		while (!d->ka_stop &&
		       pthread_cond_timedwait(&d->ka_cv, &d->ka_mu, &ts) != ETIMEDOUT)
			;
		if (d->ka_stop)
			break;
		cur = d->node;
		pthread_mutex_unlock(&d->ka_mu);
		cur.seq = last.seq;
		cur.updated = last.updated;
		rc = lease ? qbd_meta_lease_keepalive(d->meta, lease) : -ENOENT;
		if (rc == -ENOENT) {
			qbd_warn(COMP, "lease expired; registering again");
			rc = qbd_meta_lease_grant(d->meta, QBD_CHUNKD_LEASE_TTL, &lease);
			if (rc == 0)
				rc = qbd_meta_node_register(d->meta, &cur, lease);
			else
				lease = 0;
			if (rc == 0)
				last = cur;
		}
		if (rc < 0)
			qbd_warn(COMP, "etcd keepalive: %s; retrying", strerror(-rc));
		/* Republish the numbers when they changed: space used, scrub
		 * and I/O counters (docs/design.md, "Space accounting"). */
		if (rc == 0 && node_numbers_differ(&cur, &last)) {
			cur.seq = last.seq + 1;
			cur.updated = (uint64_t)time(NULL);
			rc = qbd_meta_node_put(d->meta, &cur);
			if (rc == 0)
				last = cur;
			else
				qbd_warn(COMP, "etcd: publishing the node record: %s; retrying",
					 strerror(-rc));
		}
		pthread_mutex_lock(&d->ka_mu);
		d->lease = lease;
	}
	pthread_mutex_unlock(&d->ka_mu);
	return NULL;
}

static void chunkd_keepalive_stop(struct chunkd *d)
{
	if (!d->ka_started)
		return;
	pthread_mutex_lock(&d->ka_mu);
	d->ka_stop = true;
	pthread_cond_signal(&d->ka_cv);
	pthread_mutex_unlock(&d->ka_mu);
	pthread_join(d->ka_thread, NULL);
	d->ka_started = false;
}

/* ---- start-up ---- */

static void chunkd_close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int chunkd_identity(struct chunkd *d)
{
	uint64_t ours = qbd_engine_cluster_id(d->e);
	int rc = qbd_meta_cluster_id(d->meta, true, &d->cluster_id);

	if (rc < 0) {
		qbd_err(COMP, "reading cluster id from etcd: %s", strerror(-rc));
		return rc;
	}
	if (ours == 0) {
		rc = qbd_engine_set_cluster_id(d->e, d->cluster_id);
		if (rc < 0) {
			qbd_err(COMP, "storing cluster id: %s", strerror(-rc));
			return rc;
		}
	} else if (ours != d->cluster_id) {
		qbd_err(COMP, "store belongs to cluster %016llx, etcd has cluster %016llx; "
			"refusing to start", (unsigned long long)ours,
			(unsigned long long)d->cluster_id);
		return -EEXIST;
	}
	d->node_id = qbd_engine_node_id(d->e);
	return 0;
}

/* Bind and listen on addr; writes the bound "HOST:PORT" to bound. */
static int chunkd_listen(struct chunkd *d, const char *addr, char *bound, size_t blen)
{
	char host[QBD_ADDR_MAX], port_s[8];
	uint16_t port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *ai = NULL;
	struct sockaddr_storage ss;
	int len = sizeof ss, rc;

	if (qbd_parse_hostport(addr, host, sizeof host, &port) < 0) {
		qbd_err(COMP, "bad listen address '%s'", addr);
		return -EINVAL;
	}
	snprintf(port_s, sizeof port_s, "%u", port);
	rc = getaddrinfo(host[0] ? host : NULL, port_s, &hints, &ai);
	if (rc != 0) {
		qbd_err(COMP, "resolving '%s': %s", addr, gai_strerror(rc));
		return -EINVAL;
	}
	uv_tcp_init(&d->loop, &d->server);
	/* uv_tcp_bind sets SO_REUSEADDR. */
	rc = uv_tcp_bind(&d->server, ai->ai_addr, 0);
	freeaddrinfo(ai);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&d->server, 128, server_on_connection);
	if (rc < 0) {
		qbd_err(COMP, "listen on %s: %s", addr, uv_strerror(rc));
		return -EADDRINUSE;
	}
	if (uv_tcp_getsockname(&d->server, (struct sockaddr *)&ss, &len) == 0) {
		int p = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
						 : ntohs(((struct sockaddr_in *)&ss)->sin_port);
		snprintf(bound, blen, "%s:%d", host, p);
	} else {
		snprintf(bound, blen, "%s", addr);
	}
	return 0;
}

static int chunkd_register(struct chunkd *d, const struct qbd_chunkd_opts *o,
			   const char *bound)
{
	struct qbd_engine_stats st;
	int rc;

	qbd_engine_stats(d->e, &st);
	memset(&d->node, 0, sizeof d->node);
	d->node.id = d->node_id;
	snprintf(d->node.addr, sizeof d->node.addr, "%.*s", QBD_ADDR_MAX - 1,
		 o->advertise ? o->advertise : bound);
	snprintf(d->node.zone, sizeof d->node.zone, "%s", o->zone);
	d->node.capacity = st.capacity;
	d->node.used = st.used;
	d->node.chunk_size = st.chunk_size;
	d->node.held = st.held;
	d->node.slots = st.slots;
	d->node.free_slots = st.free_slots;
	d->node.scrub.rate = d->scrub.stats.rate;
	d->node.updated = (uint64_t)time(NULL);
	rc = qbd_meta_lease_grant(d->meta, QBD_CHUNKD_LEASE_TTL, &d->lease);
	if (rc == 0)
		rc = qbd_meta_node_register(d->meta, &d->node, d->lease);
	if (rc < 0) {
		qbd_err(COMP, "registering in etcd: %s", strerror(-rc));
		return rc;
	}
	return 0;
}

int qbd_chunkd_run(const struct qbd_chunkd_opts *o)
{
	/* The pool's buffers are a chunk each (buffer_size 0): any request
	 * fits one. */
	struct qbd_engine_opts eo = { .path = o->data, .create_size = o->create_size,
				      .buffers = o->buffers };
	struct chunkd *d;
	pthread_condattr_t ca;
	char bound[QBD_ADDR_MAX + 8];
	int rc;

	d = calloc(1, sizeof *d);
	if (!d)
		return -ENOMEM;
	if (o->secret_file && *o->secret_file) {
		char why[256];

		rc = qbd_secret_load(o->secret_file, &d->secret, why, sizeof why);
		if (rc < 0) {
			qbd_err(COMP, "%s; refusing to start", why);
			free(d);
			return rc;
		}
	}
	pthread_mutex_init(&d->ka_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->ka_cv, &ca);
	pthread_condattr_destroy(&ca);
	rc = uv_loop_init(&d->loop);
	if (rc < 0) {
		qbd_err(COMP, "uv_loop_init: %s", uv_strerror(rc));
		rc = -ENOMEM;
		goto out_free;
	}

	rc = qbd_engine_open(&eo, &d->e);
	if (rc < 0) {
		qbd_err(COMP, "opening store %s: %s", o->data, strerror(-rc));
		goto out_loop;
	}
	{
		struct qbd_engine_stats st;
		qbd_engine_stats(d->e, &st);
		d->chunk_size = st.chunk_size;
	}
	rc = qbd_meta_open(o->etcd, &d->meta);
	if (rc < 0) {
		qbd_err(COMP, "etcd %s: %s", o->etcd, strerror(-rc));
		goto out_engine;
	}
	rc = chunkd_identity(d);
	if (rc < 0)
		goto out_meta;
	{
		char ctx[128], idb[17];

		snprintf(ctx, sizeof ctx, "node=%s zone=%s", qbd_id_str(d->node_id, idb),
			 o->zone);
		qbd_log_set_context(ctx);
	}
	rc = chunkd_listen(d, o->listen, bound, sizeof bound);
	if (rc < 0)
		goto out_handles;
	uv_poll_init(&d->loop, &d->engine_poll, qbd_engine_event_fd(d->e));
	uv_poll_start(&d->engine_poll, UV_READABLE, engine_on_poll);
	uv_signal_init(&d->loop, &d->sig_term);
	uv_signal_init(&d->loop, &d->sig_int);
	d->sig_term.data = d->sig_int.data = d;
	uv_signal_start(&d->sig_term, chunkd_on_signal, SIGTERM);
	uv_signal_start(&d->sig_int, chunkd_on_signal, SIGINT);
	uv_timer_init(&d->loop, &d->drain_timer);
	uv_timer_init(&d->loop, &d->stats_timer);
	uv_timer_start(&d->stats_timer, chunkd_stats_tick, QBD_CHUNKD_STATS_MS,
		       QBD_CHUNKD_STATS_MS);
	d->scrub.stats.rate = o->scrub_rate;
	d->zone = o->zone;
	rc = chunkd_metrics_start(d, o->metrics);
	if (rc < 0)
		goto out_handles;

	rc = chunkd_register(d, o, bound);
	if (rc < 0)
		goto out_handles;
	{
		/* Signals belong to the loop thread (uv_signal): the keepalive
		 * thread inherits a mask blocking them all. */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		rc = pthread_create(&d->ka_thread, NULL, chunkd_keepalive_main, d);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (rc != 0) {
		rc = -rc;
		qbd_err(COMP, "keepalive thread: %s", strerror(-rc));
		goto out_lease;
	}
	d->ka_started = true;
	rc = chunkd_scrub_start(d, o->scrub_rate);
	if (rc < 0) {
		qbd_err(COMP, "scrub: %s", strerror(-rc));
		chunkd_keepalive_stop(d);
		goto out_lease;
	}
	{
		char idb[17];
		qbd_info(COMP, "listening on %s zone %s node %s", bound, o->zone,
			 qbd_id_str(d->node_id, idb));
		qbd_svc_watchdog_start(&d->loop, &d->watchdog);
		qbd_svc_ready("serving on %s, zone %s, node %s", bound, o->zone, idb);
	}

	uv_run(&d->loop, UV_RUN_DEFAULT);
	rc = 0;
	chunkd_keepalive_stop(d);
out_lease:
	if (d->lease) {
		int r2 = qbd_meta_lease_revoke(d->meta, d->lease);
		if (r2 < 0)
			qbd_warn(COMP, "revoking lease: %s", strerror(-r2));
	}
out_handles:
	uv_walk(&d->loop, chunkd_close_walk, NULL);
	uv_run(&d->loop, UV_RUN_DEFAULT);
	chunkd_metrics_stop(d);
out_meta:
	qbd_meta_close(d->meta);
out_engine:
	if (qbd_engine_busy(d->e) == 0)
		qbd_engine_close(d->e);
	else
		qbd_warn(COMP, "store not closed: %u requests still busy",
			 qbd_engine_busy(d->e));
out_loop:
	if (uv_loop_close(&d->loop) != 0)
		qbd_warn(COMP, "event loop still has handles at exit");
out_free:
	pthread_cond_destroy(&d->ka_cv);
	pthread_mutex_destroy(&d->ka_mu);
	qbd_secret_clear(&d->secret);
	free(d);
	return rc;
}
