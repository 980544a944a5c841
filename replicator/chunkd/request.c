/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd requests: what the chunk server does with each frame a
 * client sends. conn_on_frame makes a request of the frame, has it judged
 * by chunkd_validate (validate.c), then hands it to the handler of its
 * message type, which answers at once or submits the engine request whose
 * completion (req_on_engine) answers. Writes keep their arrival order per
 * connection, and a FLUSH waits for the writes received before it.
 *
 * Everything runs on the loop thread. A request holds a reference to its
 * connection until its reply is written (conn.c).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"
#include "common/log.h"
#include "common/sparse.h"
#include "common/util.h"
#include "engine/engine.h"
#include "replicator/wire/wire.h"

#define COMP "chunkd"

/* ---- engine requests and their completion ---- */

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
	struct chunkd_req *f, *w;

	while ((f = QBD_QUEUE_ENTRY(c->fq.head, struct chunkd_req, ql))) {
		w = QBD_QUEUE_ENTRY(c->wq.head, struct chunkd_req, ql);
		if (w && w->wseq <= f->wseq)
			break;
		qbd_queue_remove(&c->fq, &f->ql);
		if (c->closing)  /* nobody to answer: not worth a sync */
			req_reply(f, -ECONNRESET);
		else
			req_submit(f, QBD_ENGINE_FLUSH);
	}
}

static void conn_write_done(struct chunkd_conn *c, struct chunkd_req *r)
{
	qbd_queue_remove(&c->wq, &r->ql);
	conn_run_flushes(c);
}

/* A SPARSE READ's bitmap is in: read the chunk itself after it (the
 * chunk's FIFO keeps the two in order). */
static void read_sparse_data(struct chunkd_req *r)
{
	uint32_t bmb = qbd_sparse_bitmap_bytes(r->c->d->chunk_size, QBD_WIRE_BLOCK);

	r->sparse_version = r->er.version;
	r->er.buf = (uint8_t *)r->data + QBD_ALIGN_UP(bmb, QBD_WIRE_BLOCK);
	req_submit(r, QBD_ENGINE_READ);
}

/* A SPARSE READ's chunk is in: keep its written blocks only, after the
 * bitmap (common/sparse.h). 0, or -EAGAIN when a write came between the
 * bitmap and the read (the versions differ; the writer tries again). */
static int read_sparse_pack(struct chunkd_req *r)
{
	uint32_t cs = r->c->d->chunk_size;
	uint32_t bmb = qbd_sparse_bitmap_bytes(cs, QBD_WIRE_BLOCK);
	uint32_t pad = QBD_ALIGN_UP(bmb, QBD_WIRE_BLOCK);
	uint8_t *base = r->data;

	if (r->er.version != r->sparse_version)
		return -EAGAIN;
	r->data_off = pad - bmb;
	r->data_len = bmb + (uint32_t)qbd_sparse_pack(base + pad, base + r->data_off, cs,
						      QBD_WIRE_BLOCK);
	return 0;
}

static void req_on_engine(struct qbd_engine_req *er)
{
	struct chunkd_req *r = er->user;
	struct chunkd *d = r->c->d;
	int status = er->res < 0 ? er->res : 0;

	chunkd_admit_done(d, r);
	if (r->type == QBD__MSG_TYPE__WRITE)
		conn_write_done(r->c, r);

	if (er->res < 0)
		qbd_debug(COMP, "%s %llu/%llu: engine: %s", qbd_wire_type_name(r->type),
			  (unsigned long long)er->volume, (unsigned long long)er->chunk,
			  strerror(-er->res));
	switch (r->type) {
	case QBD__MSG_TYPE__OPEN:
		/* -EIDRM: a tombstone came between the judging and the
		 * engine; the reply carries its epoch */
		r->reply.epoch = status == -EIDRM || status == -EPERM
				 ? er->version : qbd_engine_promised(d->e, r->volume);
		if (status == 0 && (er->flags & QBD_ENGINE_F_READD))
			qbd_info(COMP, "volume %016llx: added back at epoch %llu (its tombstone "
				 "is cleared)", (unsigned long long)r->volume,
				 (unsigned long long)er->epoch);
		if (status == 0) {
			struct chunk_list l = { 0 };
			status = qbd_engine_for_each_chunk(d->e, r->volume,
							   chunk_list_add, &l);
			r->data = l.p;
			r->data_len = status == 0 ? (uint32_t)l.len : 0;
			if (status == -EMSGSIZE)
				qbd_err(COMP, "OPEN %016llx: the volume holds more chunks here than "
					"one reply lists (%u entries of %u bytes): refused",
					(unsigned long long)r->volume,
					QBD_WIRE_MAX_DATA / QBD_WIRE_ENTRY, QBD_WIRE_ENTRY);
			else if (status < 0)
				qbd_err(COMP, "OPEN %llu: chunk list: %s",
					(unsigned long long)r->volume, strerror(-status));
		}
		break;
	case QBD__MSG_TYPE__READ:
		if (r->sparse && er->op == QBD_ENGINE_BITMAP && status == 0) {
			read_sparse_data(r);
			return;
		}
		if (r->sparse && status == 0) {
			status = read_sparse_pack(r);
			r->reply.version = er->version;
			r->reply.flags = qbd_engine_chunk_flags(d->e, er->volume, er->chunk) &
					 QBD_WIRE_CHUNK_FLAGS;
			break;
		}
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
	case QBD__MSG_TYPE__TOMBSTONE:
		r->reply.epoch = er->version;
		if (status == 0 || status == -EBUSY)
			qbd_warn(COMP, "volume %016llx: tombstone at epoch %llu (asked at epoch "
				 "%llu by %s): this node serves the volume no more%s",
				 (unsigned long long)r->volume, (unsigned long long)er->version,
				 (unsigned long long)er->epoch, r->c->peer,
				 status ? "; some chunks were busy and stay until the next "
					  "TOMBSTONE" : ", its chunks are freed");
		break;
	default:
		break;
	}
	req_reply(r, status);
	chunkd_admit_run(d);
}

void req_submit(struct chunkd_req *r, enum qbd_engine_op op)
{
	r->er.op = op;
	r->er.cb = req_on_engine;
	r->er.user = r;
	chunkd_admit_submit(r->c->d, r);
}

void req_engine_submit(struct chunkd_req *r)
{
	qbd_engine_submit(r->c->d->e, &r->er);
}

void req_unsubmitted_reply(struct chunkd_req *r, int status)
{
	if (r->type == QBD__MSG_TYPE__WRITE)
		conn_write_done(r->c, r);
	req_reply(r, status);
}

static bool conn_authed(const struct chunkd_conn *c);

/* What a request about volume, on c, is judged against now. */
static void req_edge(struct chunkd_conn *c, uint64_t volume, struct chunkd_edge *x)
{
	struct chunkd *d = c->d;

	memset(x, 0, sizeof *x);
	x->cluster_id = d->cluster_id;
	x->node_id = d->node_id;
	x->chunk_size = d->chunk_size;
	x->authed = conn_authed(c);
	x->promised = qbd_engine_promised(d->e, volume);
	x->tombstoned = qbd_engine_tombstoned(d->e, volume, &x->tombstone_epoch);
	x->peer = c->peer;
}

int req_rejudge(struct chunkd_req *r)
{
	struct chunkd_edge x;
	Qbd__Msg m;
	int rc;

	qbd__msg__init(&m);
	m.type = r->type;
	m.volume_id = r->volume;
	m.epoch = r->epoch;
	req_edge(r->c, r->volume, &x);
	rc = chunkd_validate_epoch(&x, &m);
	if (rc == 0)
		return 0;
	qbd_debug(COMP, "%s: %s of volume %016llx at epoch %llu refused after waiting behind "
		  "client I/O: %s %llu now", r->c->peer, qbd_wire_type_name(r->type),
		  (unsigned long long)r->volume, (unsigned long long)r->epoch,
		  x.tombstoned ? "a tombstone at epoch" : "promised epoch",
		  (unsigned long long)(x.tombstoned ? x.tombstone_epoch : x.promised));
	r->reply.epoch = x.tombstoned ? x.tombstone_epoch : x.promised;
	req_unsubmitted_reply(r, rc);
	return rc;
}


/* ---- handlers, one per message type (the request validated) ---- */

/* HELLO: the store's geometry; with a secret, answer the peer's challenge
 * and set ours. */
static int req_hello(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	struct chunkd *d = c->d;
	struct qbd_engine_stats st;

	qbd_engine_stats(d->e, &st);
	r->reply.chunk_size = st.chunk_size;
	r->reply.capacity = st.capacity;
	r->reply.used = st.used;
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
static int req_auth(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
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

/* PING: with a volume, "do you still accept my epoch?" (the writer's read
 * lease, checked by chunkd_validate), answered with the volume's flagged
 * chunks. */
static int req_ping(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	(void)c;
	if (m->volume_id)
		ping_report(r, m->volume_id);
	req_reply(r, 0);
	return 0;
}

/* An engine request about the volume as a whole, at m's epoch. */
static int req_volume(struct chunkd_req *r, const Qbd__Msg *m, enum qbd_engine_op op)
{
	r->er.volume = m->volume_id;
	r->er.epoch = m->epoch;
	req_submit(r, op);
	return 0;
}

/* OPEN: promise the epoch; the reply lists the chunks held. With F_ADD
 * (a writer adding this node to the volume) a tombstone older than the
 * epoch is cleared first. */
static int req_open(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	uint64_t tomb;

	/* Only where there is a tombstone to clear: a new replica's OPEN
	 * carries ADD on every node it reaches. */
	if ((m->flags & QBD_WIRE_F_ADD) && qbd_engine_tombstoned(c->d->e, m->volume_id, &tomb))
		r->er.flags |= QBD_ENGINE_F_READD;
	return req_volume(r, m, QBD_ENGINE_PROMISE);
}

/* TOMBSTONE: this node may serve the volume under no epoch (the writer
 * that removed it from the volume, or an operator, says so); its chunks
 * are freed once the tombstone is durable. */
static int req_tombstone(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	(void)c;
	return req_volume(r, m, QBD_ENGINE_TOMBSTONE);
}

/* USAGE: read-only, for operators: any epoch. Volume 0 is the store. */
static int req_usage(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	struct chunkd *d = c->d;
	struct qbd_engine_stats st;

	qbd_engine_stats(d->e, &st);
	r->reply.capacity = st.capacity;
	r->reply.free_slots = st.free_slots;
	if (m->volume_id) {
		qbd_engine_volume_usage(d->e, m->volume_id, &r->reply.chunks, &r->reply.held);
		r->reply.used = r->reply.chunks * st.chunk_size;
	} else {
		r->reply.chunks = st.chunks;
		r->reply.held = st.held;
		r->reply.used = st.used;
	}
	req_reply(r, 0);
	return 0;
}

/* CHECKSUM: read-only, for comparing replicas: any epoch. The whole
 * chunk is read; req_on_engine hashes it. */
static int req_checksum(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	struct chunkd *d = c->d;

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
}

/* DELETE_VOLUME: drop every chunk and the promise of the volume. */
static int req_delete_volume(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	(void)c;
	return req_volume(r, m, QBD_ENGINE_DELETE_VOLUME);
}

/* The engine request of a ranged data-path request (READ, WRITE, PULL). */
static void req_range(struct chunkd_req *r, const Qbd__Msg *m)
{
	r->er.volume = m->volume_id;
	r->er.chunk = m->chunk;
	r->er.offset = m->offset;
	r->er.length = m->length;
	r->er.epoch = m->epoch;
}

/* READ: the range's bytes, or with F_BITMAP which blocks hold data (from
 * the metadata, no data I/O). */
static int req_read(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	bool bitmap = m->flags & QBD_WIRE_F_BITMAP;

	req_range(r, m);
	if (m->flags & QBD_WIRE_F_SPARSE) {
		/* The bitmap, then the chunk 4 KiB-aligned after it (the
		 * engine reads into it without a bounce copy). */
		uint32_t bmb = qbd_sparse_bitmap_bytes(c->d->chunk_size, QBD_WIRE_BLOCK);
		uint32_t pad = QBD_ALIGN_UP(bmb, QBD_WIRE_BLOCK);

		if (posix_memalign(&r->data, QBD_ENGINE_BLOCK, pad + c->d->chunk_size)) {
			r->data = NULL;
			req_reply(r, -ENOMEM);
			return 0;
		}
		r->sparse = true;
		r->er.buf = (uint8_t *)r->data + pad - bmb;
		req_submit(r, QBD_ENGINE_BITMAP);
		return 0;
	}
	r->data = bitmap ? malloc(m->length / QBD_WIRE_BLOCK / 8 + 1)
			 : chunkd_buf_alloc(c->d, m->length);
	if (!r->data) {
		req_reply(r, -ENOMEM);
		return 0;
	}
	r->er.buf = r->data;
	req_submit(r, bitmap ? QBD_ENGINE_BITMAP : QBD_ENGINE_READ);
	return 0;
}

/* WRITE: queued behind the connection's earlier writes (a later FLUSH
 * waits for it). r->data holds the data conn_on_header asked for. */
static int req_write(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	req_range(r, m);
	if (m->flags & QBD_WIRE_F_SPARSE) {
		/* The whole chunk for the RESYNC write, holes zeroed (the
		 * form was checked by chunkd_validate). */
		void *whole = chunkd_buf_alloc(c->d, c->d->chunk_size);

		if (!whole) {
			req_reply(r, -ENOMEM);
			return 0;
		}
		qbd_sparse_expand(r->data, m->data_len, whole, c->d->chunk_size,
				  QBD_WIRE_BLOCK);
		chunkd_buf_free(c->d, r->data);
		r->data = whole;
	}
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
	qbd_queue_push(&c->wq, &r->ql);
	req_submit(r, (m->flags & QBD_WIRE_F_ZERO) ? QBD_ENGINE_ZERO : QBD_ENGINE_WRITE);
	return 0;
}

/* FLUSH: a barrier behind every WRITE received before it. */
static int req_flush(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	req_range(r, m);
	r->wseq = c->next_wseq;
	chunkd_admit_flush(c->d, c, r->wseq);
	if (qbd_queue_empty(&c->wq)) {
		req_submit(r, QBD_ENGINE_FLUSH);
		return 0;
	}
	qbd_queue_push(&c->fq, &r->ql);
	return 0;
}

/* PULL: copy the chunk from another replica (pull.c). */
static int req_pull(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m)
{
	req_range(r, m);
	chunkd_pull(c->d, r, m);
	return 0;
}

/* A handler serves a request chunkd_validate accepted and answers it,
 * now or later; it returns 1 to close the connection after the reply,
 * else 0. */
typedef int req_handler(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m);

static req_handler *const req_handlers[CHUNKD_OPS] = {
	[QBD__MSG_TYPE__HELLO] = req_hello,
	[QBD__MSG_TYPE__AUTH] = req_auth,
	[QBD__MSG_TYPE__OPEN] = req_open,
	[QBD__MSG_TYPE__READ] = req_read,
	[QBD__MSG_TYPE__WRITE] = req_write,
	[QBD__MSG_TYPE__FLUSH] = req_flush,
	[QBD__MSG_TYPE__DELETE_VOLUME] = req_delete_volume,
	[QBD__MSG_TYPE__PING] = req_ping,
	[QBD__MSG_TYPE__CHECKSUM] = req_checksum,
	[QBD__MSG_TYPE__PULL] = req_pull,
	[QBD__MSG_TYPE__USAGE] = req_usage,
	[QBD__MSG_TYPE__TOMBSTONE] = req_tombstone,
};

/* ---- frames: a buffer for WRITE data, admission, dispatch ---- */

/* Whether c's peer may send more than HELLO and AUTH: it proved the
 * cluster secret, or there is none. */
static bool conn_authed(const struct chunkd_conn *c)
{
	return !c->d->secret.len || c->authed;
}

/* The buffer for the data of a WRITE of at most a chunk; any other data
 * is discarded (chunkd_validate refuses it). */
static void *conn_on_header(void *user, const Qbd__Msg *m)
{
	struct chunkd_conn *c = user;

	if (m->type != QBD__MSG_TYPE__WRITE || !chunkd_may(conn_authed(c), m->type) ||
	    m->data_len > c->d->chunk_size || (m->flags & QBD_WIRE_F_ZERO))
		return QBD_WIRE_DISCARD;
	chunkd_buf_free(c->d, c->pend_buf);
	c->pend_buf = chunkd_buf_alloc(c->d, m->data_len);
	return c->pend_buf ? c->pend_buf : QBD_WIRE_DISCARD;
}

/* A request for frame m, its reply addressed (NULL: out of memory). It
 * takes the WRITE data conn_on_header asked for. */
static struct chunkd_req *req_new(struct chunkd_conn *c, const Qbd__Msg *m, void *data)
{
	struct chunkd *d = c->d;
	struct chunkd_req *r = calloc(1, sizeof *r);

	if (!r) {
		qbd_err(COMP, "%s: out of memory", c->peer);
		return NULL;
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
	return r;
}

/* An OPEN refused for a tombstone: said once per volume (among the last
 * few), not at every retry of the writer that still lists this node. */
static void req_log_tombstone(struct chunkd_conn *c, const Qbd__Msg *m,
			      const struct chunkd_edge *x)
{
	struct chunkd *d = c->d;

	for (unsigned i = 0; i < QBD_ARRAY_SIZE(d->tomb_logged); i++)
		if (d->tomb_logged[i] == m->volume_id)
			return;
	d->tomb_logged[d->tomb_logged_next] = m->volume_id;
	d->tomb_logged_next = (d->tomb_logged_next + 1) % QBD_ARRAY_SIZE(d->tomb_logged);
	qbd_warn(COMP, "%s: OPEN of volume %016llx at epoch %llu refused (EIDRM): this node "
		 "was removed from the volume (tombstone at epoch %llu); a writer that still "
		 "counts it as a replica fences itself", c->peer,
		 (unsigned long long)m->volume_id, (unsigned long long)m->epoch,
		 (unsigned long long)x->tombstone_epoch);
}

/* Judge r (chunkd_validate). False to serve it; true if it was refused
 * and answered here, *ret then being what conn_on_frame returns (1: the
 * connection closes after the reply). */
static bool req_refused(struct chunkd_conn *c, struct chunkd_req *r, const Qbd__Msg *m,
			int *ret)
{
	struct chunkd_edge x;
	struct chunkd_verdict v;
	int rc;

	req_edge(c, m->volume_id, &x);
	rc = chunkd_validate(&x, m, r->data, &v);
	if (rc == 0)
		return false;
	if (v.unauthed)
		c->auth_logged = true;
	if (rc == -EIDRM && m->type == QBD__MSG_TYPE__OPEN)
		req_log_tombstone(c, m, &x);
	if (rc == -EPERM || rc == -ENOTCONN || rc == -EIDRM)
		r->reply.epoch = x.tombstoned ? x.tombstone_epoch : x.promised;
	r->close_after = v.close;
	*ret = v.close ? 1 : 0;
	req_reply(r, rc);
	return true;
}

/* One request frame: judged, then served by the handler of its type
 * (every type chunkd_validate accepts has one). Returns 1 to stop
 * reading (a reply with close_after is on its way), -ENOMEM, or 0. */
static int conn_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct chunkd_conn *c = user;
	struct chunkd_req *r = req_new(c, m, data);
	int ret;

	if (!r)
		return -ENOMEM;
	if (req_refused(c, r, m, &ret))
		return ret;
	return req_handlers[m->type](c, r, m);
}

const struct qbd_wire_rx_ops chunkd_rx_ops = {
	.on_header = conn_on_header,
	.on_frame = conn_on_frame,
};
