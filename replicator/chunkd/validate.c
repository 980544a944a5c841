/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd request validation: the one place where a request from the
 * network is judged before anything acts on it (docs/design.md, "Bad
 * input"). In order: the cluster it belongs to, the node it is for, the
 * connection's authentication, its shape (type, direction, range, flags,
 * data), then the epoch of its volume. The first failure is logged with
 * the request's identity and answered with its own errno; nothing here
 * touches the store, so a refused request changes nothing.
 *
 * Pure: it needs no running server, only what struct chunkd_edge says.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "common/log.h"
#include "common/sparse.h"
#include "replicator/wire/wire.h"

#define COMP "chunkd"

bool chunkd_may(bool authed, int type)
{
	return authed || type == QBD__MSG_TYPE__HELLO || type == QBD__MSG_TYPE__AUTH;
}

/* READ: a range in the chunk; a BITMAP one in whole blocks; a SPARSE
 * one of the whole chunk; no data. */
static const char *validate_read(const struct chunkd_edge *x, const Qbd__Msg *m)
{
	if (m->data_len != 0)
		return "READ with data";
	if (m->flags & ~(QBD_WIRE_F_BITMAP | QBD_WIRE_F_SPARSE))
		return "unknown READ flags";
	if ((m->flags & QBD_WIRE_F_SPARSE) &&
	    ((m->flags & QBD_WIRE_F_BITMAP) || m->offset != 0 || m->length != x->chunk_size))
		return "SPARSE READ not of the whole chunk, or with BITMAP";
	if ((m->flags & QBD_WIRE_F_BITMAP) &&
	    (m->offset % QBD_WIRE_BLOCK || m->length % QBD_WIRE_BLOCK))
		return "BITMAP READ of a range not in whole 4 KiB blocks";
	return NULL;
}

/* WRITE: its data, or none when zeroing; RESYNC only of the whole chunk
 * and on its own; SPARSE only with RESYNC, its data a well-formed sparse
 * form of the chunk (common/sparse.h). */
static const char *validate_write(const struct chunkd_edge *x, const Qbd__Msg *m,
				  const void *data)
{
	if (m->flags & ~(QBD_WIRE_F_ZERO | QBD_WIRE_F_FUA | QBD_WIRE_F_REPAIR | QBD_WIRE_F_RESYNC |
			 QBD_WIRE_F_SPARSE))
		return "unknown WRITE flags";
	if ((m->flags & QBD_WIRE_F_ZERO) && m->data_len != 0)
		return "zeroing WRITE with data";
	if ((m->flags & QBD_WIRE_F_SPARSE) && !(m->flags & QBD_WIRE_F_RESYNC))
		return "SPARSE WRITE without RESYNC";
	if ((m->flags & QBD_WIRE_F_SPARSE) &&
	    (data == NULL || qbd_sparse_check(data, m->data_len, x->chunk_size,
					      QBD_WIRE_BLOCK) < 0))
		return "SPARSE data is not the chunk's bitmap plus the blocks it marks";
	if (!(m->flags & (QBD_WIRE_F_ZERO | QBD_WIRE_F_SPARSE)) &&
	    (m->data_len != m->length || data == NULL))
		return "WRITE data length differs from length";
	if ((m->flags & QBD_WIRE_F_RESYNC) && (m->flags & (QBD_WIRE_F_ZERO | QBD_WIRE_F_REPAIR)))
		return "RESYNC combined with ZERO or REPAIR";
	if ((m->flags & QBD_WIRE_F_RESYNC) && (m->offset != 0 || m->length != x->chunk_size))
		return "RESYNC not of the whole chunk";
	return NULL;
}

/* Which volume and chunk m names: a volume for every request about one
 * (PING and USAGE take 0 for none and for the whole store), a chunk an
 * OPEN reply can list (QBD_WIRE_MAX_CHUNK: a chunk stored beyond it
 * would make every later OPEN of its volume fail), a first epoch for a
 * promise (writers start at 1; 0 promises nothing). */
static const char *validate_target(const Qbd__Msg *m)
{
	switch (m->type) {
	case QBD__MSG_TYPE__READ:
	case QBD__MSG_TYPE__WRITE:
	case QBD__MSG_TYPE__PULL:
	case QBD__MSG_TYPE__CHECKSUM:
		if (m->chunk > QBD_WIRE_MAX_CHUNK)
			return "chunk index beyond what the wire can list";
		/* fall through */
	case QBD__MSG_TYPE__FLUSH:
		return m->volume_id == 0 ? "no volume" : NULL;
	case QBD__MSG_TYPE__OPEN:
	case QBD__MSG_TYPE__DELETE_VOLUME:
	case QBD__MSG_TYPE__TOMBSTONE:
		if (m->volume_id == 0)
			return "no volume";
		return m->epoch == 0 ? "epoch 0 (epochs start at 1)" : NULL;
	default:
		return NULL;
	}
}

/* What is wrong with the shape of m, or NULL. */
static const char *validate_shape(const struct chunkd_edge *x, const Qbd__Msg *m,
				  const void *data)
{
	const char *why = validate_target(m);

	if (why)
		return why;
	switch (m->type) {
	case QBD__MSG_TYPE__OPEN:
		if (m->flags & ~QBD_WIRE_F_ADD)
			return "unknown OPEN flags";
		return m->data_len != 0 ? "unexpected data" : NULL;
	case QBD__MSG_TYPE__TOMBSTONE:
		if (m->flags)
			return "unknown TOMBSTONE flags";
		return m->data_len != 0 ? "unexpected data" : NULL;
	case QBD__MSG_TYPE__HELLO:
	case QBD__MSG_TYPE__AUTH:
	case QBD__MSG_TYPE__FLUSH:
	case QBD__MSG_TYPE__DELETE_VOLUME:
	case QBD__MSG_TYPE__PING:
	case QBD__MSG_TYPE__CHECKSUM:
	case QBD__MSG_TYPE__USAGE:
		return m->data_len != 0 ? "unexpected data" : NULL;
	case QBD__MSG_TYPE__PULL:
		if (m->data_len != 0 || m->offset != 0 || m->length != x->chunk_size)
			return "PULL must cover the whole chunk, without data";
		if (!m->source_node || !m->source_addr || !*m->source_addr)
			return "PULL without a source";
		return NULL;
	case QBD__MSG_TYPE__READ:
	case QBD__MSG_TYPE__WRITE:
		if (m->length == 0)
			return "zero length";
		if ((uint64_t)m->offset + m->length > x->chunk_size)
			return "range outside the chunk";
		return m->type == QBD__MSG_TYPE__READ ? validate_read(x, m)
						       : validate_write(x, m, data);
	default:
		return "unknown message type";
	}
}

/*
 * A volume with a tombstone here (this node was removed from it): OPEN
 * is refused with -EIDRM, unless it adds the node back (F_ADD) at an
 * epoch not below the tombstone's (below: -EPERM; at it: the writer that
 * removed the node adds it back); a data-path
 * request older than the tombstone is a deposed writer's (-EPERM, as
 * ever), any other -EIDRM; TOMBSTONE and DELETE_VOLUME any epoch not
 * older than the tombstone's; read-only requests any.
 */
static int validate_tombstoned(const struct chunkd_edge *x, const Qbd__Msg *m)
{
	switch (m->type) {
	case QBD__MSG_TYPE__PING:
		if (!m->volume_id)
			return 0;
		/* fall through */
	case QBD__MSG_TYPE__READ:
	case QBD__MSG_TYPE__WRITE:
	case QBD__MSG_TYPE__FLUSH:
	case QBD__MSG_TYPE__PULL:
		return m->epoch < x->tombstone_epoch ? -EPERM : -EIDRM;
	case QBD__MSG_TYPE__OPEN:
		if (!(m->flags & QBD_WIRE_F_ADD))
			return -EIDRM;
		return m->epoch >= x->tombstone_epoch ? 0 : -EPERM;
	case QBD__MSG_TYPE__DELETE_VOLUME:
	case QBD__MSG_TYPE__TOMBSTONE:
		return m->epoch < x->tombstone_epoch ? -EPERM : 0;
	default:
		return 0;
	}
}

/*
 * The epoch of m against the volume's promised one: 0, -EPERM (older:
 * a deposed writer) or -ENOTCONN (newer than promised, or nothing
 * promised: the volume is not open here at that epoch). READ, WRITE,
 * FLUSH, PULL and a PING with a volume need the promised epoch itself;
 * OPEN, DELETE_VOLUME and TOMBSTONE any not older; HELLO, AUTH, USAGE
 * and CHECKSUM (read-only, for operators) any. A volume with a
 * tombstone: validate_tombstoned. Also judged again when a background
 * request that waited is admitted (admit.c, request.c's req_rejudge).
 */
int chunkd_validate_epoch(const struct chunkd_edge *x, const Qbd__Msg *m)
{
	if (x->tombstoned && m->volume_id)
		return validate_tombstoned(x, m);
	switch (m->type) {
	case QBD__MSG_TYPE__PING:
		if (!m->volume_id)
			return 0;
		/* fall through */
	case QBD__MSG_TYPE__READ:
	case QBD__MSG_TYPE__WRITE:
	case QBD__MSG_TYPE__FLUSH:
	case QBD__MSG_TYPE__PULL:
		if (m->epoch == x->promised && x->promised != 0)
			return 0;
		return m->epoch < x->promised ? -EPERM : -ENOTCONN;
	case QBD__MSG_TYPE__OPEN:
	case QBD__MSG_TYPE__DELETE_VOLUME:
	case QBD__MSG_TYPE__TOMBSTONE:
		return m->epoch < x->promised ? -EPERM : 0;
	default:
		return 0;
	}
}

int chunkd_validate(const struct chunkd_edge *x, const Qbd__Msg *m, const void *data,
		    struct chunkd_verdict *v)
{
	const char *name = qbd_wire_type_name(m->type);
	const char *why;
	int rc;

	memset(v, 0, sizeof *v);
	if (m->cluster_id != x->cluster_id) {
		qbd_warn(COMP, "%s: cluster id %016llx is not ours (%016llx); closing",
			 x->peer, (unsigned long long)m->cluster_id,
			 (unsigned long long)x->cluster_id);
		v->close = true;
		return -EACCES;
	}
	if (m->node_id != x->node_id && !(m->type == QBD__MSG_TYPE__HELLO && m->node_id == 0)) {
		qbd_warn(COMP, "%s: %s for node %016llx, we are %016llx; closing",
			 x->peer, name, (unsigned long long)m->node_id,
			 (unsigned long long)x->node_id);
		v->close = true;
		return -ENXIO;
	}
	if (!chunkd_may(x->authed, m->type)) {
		qbd_warn(COMP, "%s: %s before authentication: refused, closing (a peer "
			 "without the cluster secret?)", x->peer, name);
		v->close = true;
		v->unauthed = true;
		return -EACCES;
	}
	why = validate_shape(x, m, data);
	if (!why && m->reply)
		why = "reply where a request was expected";
	if (why) {
		qbd_warn(COMP, "%s: invalid %s (type %d) request %llu vol %llu chunk %llu "
			 "off %u len %u data %u: %s", x->peer, name, (int)m->type,
			 (unsigned long long)m->request_id, (unsigned long long)m->volume_id,
			 (unsigned long long)m->chunk, m->offset, m->length, m->data_len, why);
		return -EINVAL;
	}
	rc = chunkd_validate_epoch(x, m);
	if (rc < 0)
		qbd_debug(COMP, "%s: %s request %llu vol %016llx: epoch %llu, promised %llu%s",
			  x->peer, name, (unsigned long long)m->request_id,
			  (unsigned long long)m->volume_id, (unsigned long long)m->epoch,
			  (unsigned long long)(x->tombstoned ? x->tombstone_epoch : x->promised),
			  x->tombstoned ? " (a tombstone)" : "");
	return rc;
}
