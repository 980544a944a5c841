/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the qbd wire receive state machine
 * (replicator/wire/wire.c) and what its receivers run on each frame that
 * needs no live process.
 *
 * Input: one byte that chooses how the stream is cut, then the bytes of
 * one connection. The stream is fed twice, each time to a fresh rx and a
 * fresh quorum core: at once, then in pieces whose lengths come from the
 * first byte (one byte at a time, or up to 7, 64 or 600 bytes), so that
 * length prefixes, headers and bulk data arrive split anywhere; there,
 * half the pieces of bulk data go straight to their buffer
 * (qbd_wire_rx_direct, qbd_wire_rx_placed) as the receivers read large
 * payloads. Both
 * feeds must deliver the same frames with the same data and end the same
 * way; anything else aborts. qbd_wire_rx_reset then frees a frame left
 * half received.
 *
 * Each frame goes where a receiver would take it:
 *  - replies as libqbd takes them (replicator/client/conn.c), for
 *    replica node_id % 3 of a core (3 replicas, write quorum 2, 16 chunks
 *    of 64 KiB): READ data into the buffer qbd_core_reply_buf names, the
 *    chunk list of an OPEN reply and the flagged chunks of a PING reply
 *    decoded with qbd_wire_get_entry into qbd_core_replica_open and
 *    qbd_core_replica_flagged, other replies to qbd_core_reply or
 *    qbd_core_read_reply. Once two replicas are open the core serves a few
 *    user requests, so that replies meet messages it sent (the core
 *    numbers them 1, 2, 3, ...: small request ids);
 *  - requests as the chunk server takes them (replicator/chunkd/request.c):
 *    the data of a WRITE of at most a chunk into a buffer of exactly
 *    data_len bytes, other data discarded (conn_on_header), then the
 *    request judged by the server's own chunkd_validate
 *    (replicator/chunkd/validate.c) as node FW_NODE of cluster
 *    FW_CLUSTER with chunks of 64 KiB, against one volume's promise that
 *    the OPENs it accepts raise and a DELETE_VOLUME drops. A stream that
 *    starts with a HELLO carrying a challenge is a peer of a server with
 *    a cluster secret: unauthenticated until an AUTH with a proof of the
 *    right length. What it accepts must be what the request handlers
 *    rely on (checked here independently, rule by rule), what it refuses
 *    must carry one of its errnos; a refusal that closes the connection
 *    stops the feed, as the server stops reading.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/util.h"
#include "replicator/chunkd/internal.h"
#include "replicator/core/core.h"
#include "replicator/wire/wire.h"
#include "tests/fuzz/fuzz.h"

#define FW_R 3
#define FW_W 2
#define FW_CHUNK (64u << 10)
#define FW_NCHUNKS 16
#define FW_USER_OPS 6       /* user requests in flight at once */
#define FW_USER_BUDGET 32   /* user requests submitted per feed at most */
#define FW_MS 1000000ull
#define FW_CLUSTER 0x5eedull  /* the chunk server's identity (make-seeds) */
#define FW_NODE 0x42ull

/* One feed: the rx, the core behind it, and a digest of what happened. */
struct fw {
	struct qbd_wire_rx rx;
	struct qbd_core *core;
	bool up[FW_R];          /* replica open in the core */
	bool opened;            /* qbd_core_open_done succeeded */
	uint64_t now;
	unsigned submitted;
	void *wbuf;             /* chunk server side: WRITE data of this frame */
	unsigned requests;      /* request frames seen */
	bool secret, authed;    /* peer of a server with a cluster secret; proved it */
	uint64_t vol, promised; /* the one volume promised, and its epoch */
	bool tomb;              /* vol has a tombstone, made at epoch promised */
	uint64_t digest;
	unsigned frames;
};

/* User requests buffers (the core reads and writes them until the
 * request completes; the contents do not matter). */
static uint8_t fw_user_buf[FW_USER_OPS][2 * FW_CHUNK];

static void fw_mix(struct fw *f, uint64_t v)
{
	/* FNV-1a over the 8 bytes of v */
	for (int i = 0; i < 8; i++) {
		f->digest ^= (uint8_t)(v >> (8 * i));
		f->digest *= 0x100000001b3ull;
	}
}

static void fw_mix_bytes(struct fw *f, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		f->digest ^= p[i];
		f->digest *= 0x100000001b3ull;
	}
}

/* ---- the core's shell ---- */

static bool fw_sparse_form(const uint8_t *data, uint32_t len);

/* What the core sends must make sense whatever the replies said: to a
 * replica, inside a chunk of the volume, WRITE data unless zeroing (a
 * sparse form that adds up, with SPARSE), a PULL from another replica. */
static void fw_send(void *user, const struct qbd_core_msg *m)
{
	struct fw *f = user;
	bool ranged = m->type == QBD_CM_READ || m->type == QBD_CM_WRITE ||
		      m->type == QBD_CM_PULL;

	if (m->replica >= FW_R ||
	    (ranged && (m->chunk >= FW_NCHUNKS ||
			(uint64_t)m->offset + m->length > FW_CHUNK)) ||
	    (m->type == QBD_CM_WRITE && !(m->flags & QBD_CORE_F_ZERO) && !m->data) ||
	    (m->type == QBD_CM_WRITE && (m->flags & QBD_CORE_F_SPARSE) &&
	     !fw_sparse_form(m->data, m->data_len)) ||
	    (m->type == QBD_CM_PULL && (m->source >= FW_R || m->source == m->replica))) {
		fuzz_fail("fuzz-wire: the core sent message %llu (type %d) to replica %u: "
			  "chunk %llu offset %u length %u source %u",
			  (unsigned long long)m->id, m->type, m->replica,
			  (unsigned long long)m->chunk, m->offset, m->length, m->source);
	}
	fw_mix(f, m->id);
	fw_mix(f, (uint64_t)m->replica << 32 | m->type);
}

static void fw_moved(void *user, unsigned r, uint64_t id, const void *d)
{
	(void)user;
	(void)r;
	(void)id;
	(void)d;
}

static void fw_drop(void *user, unsigned r, const char *why)
{
	struct fw *f = user;

	/* The core has called its own replica_down. */
	(void)why;
	if (r < FW_R)
		f->up[r] = false;
}

static void fw_submit(struct fw *f, unsigned k);

static void fw_complete(void *user, void *cookie, int res)
{
	struct fw *f = user;
	unsigned k = (unsigned)(uintptr_t)cookie;

	fw_mix(f, (uint64_t)k << 32 | (uint32_t)res);
	/* Keep the core busy, within a budget. */
	if (f->submitted < FW_USER_BUDGET)
		fw_submit(f, k);
}

static void fw_log(void *user, int level, const char *msg)
{
	(void)user;
	QBD_LOG(level, "core", "%s", msg);
}

static const struct qbd_core_ops fw_core_ops = {
	.send = fw_send,
	.data_moved = fw_moved,
	.drop = fw_drop,
	.complete = fw_complete,
	.log = fw_log,
};

/* User request k (0..FW_USER_OPS-1): one of each kind, on chunks of its
 * own. */
static void fw_submit(struct fw *f, unsigned k)
{
	static const struct {
		enum qbd_core_op op;
		uint32_t flags;
		uint64_t off;
		uint32_t len;
	} ops[FW_USER_OPS] = {
		{ QBD_CORE_READ, 0, 0, 4096 },
		{ QBD_CORE_WRITE, QBD_CORE_F_FUA, FW_CHUNK + 512, 8192 },
		{ QBD_CORE_READ, 0, 2 * FW_CHUNK - 4096, FW_CHUNK + 8192 },
		{ QBD_CORE_BLOCK_STATUS, 0, 4 * FW_CHUNK, 2 * FW_CHUNK },
		{ QBD_CORE_ZERO, 0, 6 * FW_CHUNK, FW_CHUNK },
		{ QBD_CORE_FLUSH, 0, 0, 0 },
	};

	f->submitted++;
	qbd_core_submit(f->core, ops[k].op, ops[k].flags, ops[k].off, ops[k].len,
			ops[k].op == QBD_CORE_FLUSH || ops[k].op == QBD_CORE_ZERO
				? NULL : fw_user_buf[k],
			(void *)(uintptr_t)k, f->now);
}

/* Decode a chunk list as libqbd does; -EPROTO for an entry with unknown
 * flags. list holds n entries. Every entry decoded must encode back to
 * its bytes. */
static int fw_list(const uint8_t *d, size_t n, struct qbd_chunk_version *list)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *e = d + QBD_WIRE_ENTRY * i;
		uint8_t again[QBD_WIRE_ENTRY];

		if (qbd_wire_get_entry(e, &list[i].chunk, &list[i].version, &list[i].flags) < 0)
			return -EPROTO;
		if (qbd_wire_put_entry(again, list[i].chunk, list[i].version, list[i].flags) < 0 ||
		    memcmp(again, e, sizeof again) != 0) {
			fuzz_fail("fuzz-wire: chunk list entry %zu does not encode back", i);
		}
	}
	return 0;
}

/* Encode the header of a received frame again: unless it is empty
 * (every field default) or too long (a type read from a 5-byte varint is
 * written back in 10), it must encode and decode to the same message.
 * Not with unknown fields: protobuf-c writes them back as they came,
 * even one it could not read again (field number 0 in an overlong tag). */
static void fw_reencode(const Qbd__Msg *m)
{
	uint8_t out[QBD_WIRE_FRAME_MAX_PREFIX];
	ssize_t h = qbd_wire_encode(m, out, sizeof out);
	size_t packed = qbd__msg__get_packed_size(m);
	Qbd__Msg *back;
	uint32_t len;

	if (m->base.n_unknown_fields)
		return;
	if (h < 0) {
		if (packed == 0 || packed > QBD_WIRE_MAX_HEADER)
			return;
		fuzz_fail("fuzz-wire: a received %s header does not encode: %zd",
			  qbd_wire_type_name(m->type), h);
	}
	len = out[0] | (uint32_t)out[1] << 8 | (uint32_t)out[2] << 16 | (uint32_t)out[3] << 24;
	back = qbd__msg__unpack(NULL, len, out + 4);
	if (len + 4 != (size_t)h || !back || back->type != m->type ||
	    back->reply != m->reply || back->request_id != m->request_id ||
	    back->data_len != m->data_len || back->status != m->status ||
	    back->version != m->version || back->flags != m->flags) {
		fuzz_fail("fuzz-wire: a %s header decodes differently once encoded",
			  qbd_wire_type_name(m->type));
	}
	qbd__msg__free_unpacked(back, NULL);
}

/* A replica failed (libqbd closes its connection). */
static void fw_fail(struct fw *f, unsigned r)
{
	if (f->up[r])
		qbd_core_replica_down(f->core, r, f->now);
	f->up[r] = false;
}

/* OPEN reply: the replica's chunk list (conn_on_open_reply). */
static void fw_open_reply(struct fw *f, unsigned r, const Qbd__Msg *m, const uint8_t *d)
{
	size_t n = m->data_len / QBD_WIRE_ENTRY;
	struct qbd_chunk_version *list = NULL;
	int err;

	if (m->status || m->data_len % QBD_WIRE_ENTRY || (m->data_len && !d))
		return;
	if (n && !(list = malloc(n * sizeof *list)))
		return;
	err = fw_list(d, n, list);
	if (err == 0) {
		/* A second OPEN on a replica is a new connection. */
		fw_fail(f, r);
		err = qbd_core_replica_open(f->core, r, list, n, f->now);
		f->up[r] = err == 0;
	}
	free(list);
	fw_mix(f, (uint64_t)(uint32_t)err);
	if (!f->opened && qbd_core_open_done(f->core, f->now) == 0) {
		f->opened = true;
		for (unsigned k = 0; k < FW_USER_OPS; k++)
			fw_submit(f, k);
	}
}

/* PING reply with flagged chunks (conn_on_ping_report). */
static int fw_ping_report(struct fw *f, unsigned r, const Qbd__Msg *m, const uint8_t *d)
{
	struct qbd_chunk_version list[QBD_WIRE_MAX_FLAGGED];
	size_t n = m->data_len / QBD_WIRE_ENTRY;
	int err;

	if (m->data_len % QBD_WIRE_ENTRY || n > QBD_WIRE_MAX_FLAGGED ||
	    (m->data_len && !d) || m->flagged < n)
		return -EPROTO;
	err = fw_list(d, n, list);
	if (err == 0)
		err = qbd_core_replica_flagged(f->core, r, list, n, m->flagged, f->now);
	return err;
}

/* A reply, as libqbd's rx_on_frame takes it. */
static void fw_reply(struct fw *f, const Qbd__Msg *m, const uint8_t *d)
{
	unsigned r = (unsigned)(m->node_id % FW_R);
	int err = 0;

	switch (m->type) {
	case QBD__MSG_TYPE__HELLO:
		return;
	case QBD__MSG_TYPE__OPEN:
		fw_open_reply(f, r, m, d);
		return;
	default:
		break;
	}
	if (!f->up[r])
		return;
	if (m->type == QBD__MSG_TYPE__PING && !m->status && (m->data_len || m->flagged))
		err = fw_ping_report(f, r, m, d);
	fw_mix(f, (uint64_t)(uint32_t)err);
	if (err) {
		fw_fail(f, r);
		return;
	}
	if (m->type == QBD__MSG_TYPE__READ && !m->status && !d)
		return; /* a reply the core did not want */
	if (m->type == QBD__MSG_TYPE__READ)
		qbd_core_read_reply(f->core, r, m->request_id, m->status, m->version, m->flags,
				    f->now);
	else
		qbd_core_reply(f->core, r, m->request_id, m->status, m->version, f->now);
}

/* ---- the chunk server's side ---- */

/* Is data (len bytes) a chunk's sparse form: its bitmap, one bit per
 * 4 KiB block, then exactly the blocks it marks? */
static bool fw_sparse_form(const uint8_t *data, uint32_t len)
{
	uint32_t blocks = FW_CHUNK / QBD_WIRE_BLOCK, bm = (blocks + 7) / 8, n = 0;

	if (!data || len < bm)
		return false;
	for (uint32_t b = 0; b < bm * 8; b++) {
		if (!(data[b / 8] & (1u << (b % 8))))
			continue;
		if (b >= blocks)
			return false;
		n++;
	}
	return len == bm + n * QBD_WIRE_BLOCK;
}

/* What chunkd_validate accepted must be what the handlers rely on; the
 * rules again, independently. NULL if m may be served, else what is
 * wrong. */
static const char *fw_served_wrongly(const struct fw *f, const Qbd__Msg *m, const void *data,
				     uint64_t promised, bool tomb)
{
	bool ranged = m->type == QBD__MSG_TYPE__READ || m->type == QBD__MSG_TYPE__WRITE;
	bool zero = m->flags & QBD_WIRE_F_ZERO;

	if (m->reply || m->cluster_id != FW_CLUSTER ||
	    (m->node_id != FW_NODE && !(m->type == QBD__MSG_TYPE__HELLO && !m->node_id)))
		return "a reply, or for another cluster or node";
	if (m->type < QBD__MSG_TYPE__HELLO || m->type > QBD__MSG_TYPE__TOMBSTONE)
		return "an unknown type";
	if (f->secret && !f->authed && m->type != QBD__MSG_TYPE__HELLO &&
	    m->type != QBD__MSG_TYPE__AUTH)
		return "before authentication";
	if (m->type != QBD__MSG_TYPE__WRITE && m->data_len)
		return "data where none belongs";
	if (ranged && (!m->length || (uint64_t)m->offset + m->length > FW_CHUNK))
		return "a range outside the chunk";
	if ((ranged || m->type == QBD__MSG_TYPE__PULL || m->type == QBD__MSG_TYPE__CHECKSUM) &&
	    m->chunk > QBD_WIRE_MAX_CHUNK)
		return "a chunk the wire cannot list";
	if (m->type == QBD__MSG_TYPE__WRITE && !(m->flags & QBD_WIRE_F_SPARSE) &&
	    (zero ? m->data_len != 0 : (!data || m->data_len != m->length)))
		return "WRITE data that is not its range's";
	if (m->type == QBD__MSG_TYPE__WRITE && (m->flags & QBD_WIRE_F_SPARSE) &&
	    (!(m->flags & QBD_WIRE_F_RESYNC) || zero || !fw_sparse_form(data, m->data_len)))
		return "a SPARSE WRITE that is not a RESYNC of a sparse form";
	if (m->type == QBD__MSG_TYPE__READ && (m->flags & QBD_WIRE_F_SPARSE) &&
	    (m->offset || m->length != FW_CHUNK || (m->flags & QBD_WIRE_F_BITMAP)))
		return "a SPARSE READ of part of the chunk, or with BITMAP";
	if (m->type == QBD__MSG_TYPE__PULL &&
	    (m->offset || m->length != FW_CHUNK || !m->source_addr || !*m->source_addr))
		return "a PULL of part of the chunk, or without a source";
	if (m->type == QBD__MSG_TYPE__READ && (m->flags & QBD_WIRE_F_BITMAP) &&
	    (m->offset % QBD_WIRE_BLOCK || m->length % QBD_WIRE_BLOCK))
		return "a misaligned BITMAP READ";
	if ((m->type == QBD__MSG_TYPE__OPEN && (m->flags & ~QBD_WIRE_F_ADD)) ||
	    (m->type == QBD__MSG_TYPE__TOMBSTONE && m->flags))
		return "unknown OPEN or TOMBSTONE flags";
	if (tomb && m->volume_id) {
		switch (m->type) {
		case QBD__MSG_TYPE__READ:
		case QBD__MSG_TYPE__WRITE:
		case QBD__MSG_TYPE__FLUSH:
		case QBD__MSG_TYPE__PULL:
		case QBD__MSG_TYPE__PING:
			return "a data-path request of a volume with a tombstone";
		case QBD__MSG_TYPE__OPEN:
			if (!(m->flags & QBD_WIRE_F_ADD) || m->epoch < promised)
				return "an OPEN of a volume with a tombstone";
			return NULL;
		default:
			break;
		}
	}
	switch (m->type) {
	case QBD__MSG_TYPE__READ:
	case QBD__MSG_TYPE__WRITE:
	case QBD__MSG_TYPE__FLUSH:
	case QBD__MSG_TYPE__PULL:
		if (!m->volume_id || !promised || m->epoch != promised)
			return "a data-path request not of the promised epoch";
		break;
	case QBD__MSG_TYPE__PING:
		if (m->volume_id && (!promised || m->epoch != promised))
			return "a PING not of the promised epoch";
		break;
	case QBD__MSG_TYPE__OPEN:
	case QBD__MSG_TYPE__DELETE_VOLUME:
	case QBD__MSG_TYPE__TOMBSTONE:
		if (!m->volume_id || !m->epoch || m->epoch < promised)
			return "a promise for no volume, of epoch 0, or older";
		break;
	case QBD__MSG_TYPE__CHECKSUM:
		if (!m->volume_id)
			return "a CHECKSUM of no volume";
		break;
	default:
		break;
	}
	return NULL;
}

/* A request, as request.c takes it: judged by chunkd_validate, then the
 * promise an accepted OPEN or DELETE_VOLUME changes. Returns 1 to stop
 * the feed (the server closes the connection), else 0. */
static int fw_request(struct fw *f, const Qbd__Msg *m, const void *data)
{
	struct chunkd_edge x = {
		.cluster_id = FW_CLUSTER, .node_id = FW_NODE, .chunk_size = FW_CHUNK,
		.authed = !f->secret || f->authed,
		.promised = m->volume_id && m->volume_id == f->vol && !f->tomb ? f->promised : 0,
		.tombstoned = m->volume_id && m->volume_id == f->vol && f->tomb,
		.tombstone_epoch = m->volume_id && m->volume_id == f->vol && f->tomb ? f->promised : 0,
		.peer = "fuzz",
	};
	struct chunkd_verdict v;
	const char *wrong;
	int rc;

	if (f->requests++ == 0 && m->type == QBD__MSG_TYPE__HELLO &&
	    m->nonce.len == QBD_AUTH_NONCE) {
		f->secret = true;
		x.authed = false;
	}
	rc = chunkd_validate(&x, m, data, &v);
	fw_mix(f, (uint64_t)(uint32_t)rc << 1 | v.close);
	if (rc < 0) {
		if (rc != -EACCES && rc != -ENXIO && rc != -EINVAL && rc != -EPERM &&
		    rc != -ENOTCONN && rc != -EIDRM)
			fuzz_fail("fuzz-wire: chunkd_validate refused a %s with %d",
				  qbd_wire_type_name(m->type), rc);
		if (v.close != (rc == -EACCES || rc == -ENXIO))
			fuzz_fail("fuzz-wire: chunkd_validate: %d %s the connection",
				  rc, v.close ? "closes" : "keeps");
		return v.close ? 1 : 0;
	}
	wrong = fw_served_wrongly(f, m, data, x.tombstoned ? x.tombstone_epoch : x.promised,
				  x.tombstoned);
	if (wrong)
		fuzz_fail("fuzz-wire: chunkd_validate accepted %s: %s (vol %llu chunk %llu "
			  "off %u len %u data %u epoch %llu, promised %llu)",
			  qbd_wire_type_name(m->type), wrong, (unsigned long long)m->volume_id,
			  (unsigned long long)m->chunk, m->offset, m->length, m->data_len,
			  (unsigned long long)m->epoch, (unsigned long long)x.promised);
	if (m->type == QBD__MSG_TYPE__AUTH && f->secret && m->mac.len == QBD_AUTH_MAC)
		f->authed = true;
	if (m->type == QBD__MSG_TYPE__OPEN && (x.tombstoned || m->epoch > x.promised)) {
		f->vol = m->volume_id;
		f->promised = m->epoch;
		f->tomb = false;
	}
	if (m->type == QBD__MSG_TYPE__TOMBSTONE) {
		f->vol = m->volume_id;
		f->promised = QBD_MAX(m->epoch, x.tombstoned ? x.tombstone_epoch : x.promised);
		f->tomb = true;
	}
	if (m->type == QBD__MSG_TYPE__DELETE_VOLUME && m->volume_id == f->vol) {
		f->vol = f->promised = 0;
		f->tomb = false;
	}
	return 0;
}

/* ---- the rx callbacks ---- */

static void *fw_on_header(void *user, const Qbd__Msg *m)
{
	struct fw *f = user;
	unsigned r = (unsigned)(m->node_id % FW_R);
	void *buf;

	if (!m->reply) {
		/* The chunk server: a buffer for WRITE data of up to a chunk. */
		if (m->type != QBD__MSG_TYPE__WRITE || m->data_len > FW_CHUNK ||
		    (m->flags & QBD_WIRE_F_ZERO) ||
		    !chunkd_may(!f->secret || f->authed, m->type))
			return QBD_WIRE_DISCARD;
		free(f->wbuf);
		f->wbuf = malloc(m->data_len);
		return f->wbuf ? f->wbuf : QBD_WIRE_DISCARD;
	}
	/* libqbd (rx_on_header). */
	if (m->type == QBD__MSG_TYPE__PING &&
	    m->data_len > QBD_WIRE_MAX_FLAGGED * QBD_WIRE_ENTRY)
		return QBD_WIRE_DISCARD;
	if (m->type != QBD__MSG_TYPE__READ)
		return NULL;
	if (!f->up[r] || m->status)
		return QBD_WIRE_DISCARD;
	buf = qbd_core_reply_buf(f->core, r, m->request_id, m->data_len);
	return buf ? buf : QBD_WIRE_DISCARD;
}

static int fw_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct fw *f = user;

	f->frames++;
	f->now += FW_MS;
	fw_mix(f, (uint64_t)m->type << 33 | (uint64_t)m->reply << 32 | m->data_len);
	fw_mix(f, m->request_id);
	fw_mix(f, data != NULL);
	if (data)
		fw_mix_bytes(f, data, m->data_len);
	fw_reencode(m);
	if (!m->reply) {
		int stop;

		/* A WRITE's data lands in the buffer on_header gave. */
		if (data && data != f->wbuf)
			fuzz_fail("fuzz-wire: WRITE data not in the buffer on_header gave");
		stop = fw_request(f, m, data);
		free(f->wbuf);
		f->wbuf = NULL;
		if (stop)
			return 1;
	} else {
		fw_reply(f, m, data);
	}
	qbd_core_tick(f->core, f->now);
	return 0;
}

static const struct qbd_wire_rx_ops fw_rx_ops = {
	.on_header = fw_on_header,
	.on_frame = fw_on_frame,
};

/* Feed p[0..n) in pieces of at most `piece` bytes (0: all at once),
 * lengths drawn from seed. Returns the digest of the feed. */
static uint64_t fw_feed(const uint8_t *p, size_t n, unsigned piece, uint32_t seed)
{
	struct qbd_core_cfg cfg = {
		.replicas = FW_R, .write_quorum = FW_W, .nchunks = FW_NCHUNKS,
		.chunk_size = FW_CHUNK, .epoch = 7, .pull = true,
	};
	struct fw f = { .digest = 0xcbf29ce484222325ull, .now = FW_MS };
	uint32_t x = seed | 1;
	size_t off = 0;
	int rc = 0;

	qbd_wire_rx_init(&f.rx);
	if (qbd_core_new(&cfg, &fw_core_ops, &f, &f.core) < 0)
		fuzz_fail("fuzz-wire: qbd_core_new failed");
	while (off < n && rc == 0) {
		size_t take = n - off, len = 0;
		void *d = NULL;

		if (piece) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			take = QBD_MIN(take, 1 + (size_t)(x % piece));
			/* Half the time, bulk data goes straight where it
			 * belongs, as the receivers read a large payload. */
			if (x & 0x100)
				d = qbd_wire_rx_direct(&f.rx, &len);
		}
		if (d) {
			take = QBD_MIN(take, len);
			memcpy(d, p + off, take);
			rc = qbd_wire_rx_placed(&f.rx, take, &fw_rx_ops, &f);
		} else {
			rc = qbd_wire_rx_feed(&f.rx, p + off, take, &fw_rx_ops, &f);
		}
		off += take;
	}
	fw_mix(&f, (uint64_t)(uint32_t)rc << 32 | f.frames);
	qbd_wire_rx_reset(&f.rx);
	free(f.wbuf);
	qbd_core_free(f.core);
	return f.digest;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned pieces[4] = { 1, 7, 64, 600 };
	static bool init;
	uint64_t whole, split;

	if (!init) {
		/* Every log line is formatted (and the fuzzer sends stderr to
		 * /dev/null) unless QBD_LOG_LEVEL says otherwise. */
		qbd_log_set_level(QBD_LOG_DEBUG);
		qbd_log_init("fuzz-wire");
		init = true;
	}
	if (size < 1)
		return 0;
	whole = fw_feed(data + 1, size - 1, 0, 0);
	split = fw_feed(data + 1, size - 1, pieces[data[0] & 3], data[0] >> 2);
	if (whole != split) {
		fuzz_fail("fuzz-wire: the stream fed at once and in pieces (first byte %#x) "
			  "decoded differently", data[0]);
	}
	return 0;
}
