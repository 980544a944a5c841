/* SPDX-License-Identifier: Apache-2.0 */
/* qbd wire framing: header encoding and the receive state machine. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "wire.h"

ssize_t qbd_wire_encode(const Qbd__Msg *msg, uint8_t *out, size_t cap)
{
	size_t h = qbd__msg__get_packed_size(msg);

	if (h == 0 || h > QBD_WIRE_MAX_HEADER || cap < 4 + h)
		return -EMSGSIZE;
	out[0] = (uint8_t)h;
	out[1] = (uint8_t)(h >> 8);
	out[2] = (uint8_t)(h >> 16);
	out[3] = (uint8_t)(h >> 24);
	qbd__msg__pack(msg, out + 4);
	return (ssize_t)(4 + h);
}

static void wire_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t wire_get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int qbd_wire_put_entry(uint8_t *p, uint64_t chunk, uint64_t version, uint32_t flags)
{
	if (chunk > QBD_WIRE_MAX_CHUNK || (flags & ~QBD_WIRE_CHUNK_FLAGS))
		return -EINVAL;
	wire_put_le64(p, chunk | (uint64_t)flags << QBD_WIRE_FLAG_SHIFT);
	wire_put_le64(p + 8, version);
	return 0;
}

int qbd_wire_get_entry(const uint8_t *p, uint64_t *chunk, uint64_t *version,
		       uint32_t *flags)
{
	uint64_t a = wire_get_le64(p);
	uint32_t f = (uint32_t)(a >> QBD_WIRE_FLAG_SHIFT);

	if (f & ~QBD_WIRE_CHUNK_FLAGS)
		return -EINVAL;
	*chunk = a & QBD_WIRE_MAX_CHUNK;
	*version = wire_get_le64(p + 8);
	*flags = f;
	return 0;
}

const char *qbd_wire_type_name(int type)
{
	switch (type) {
	case QBD__MSG_TYPE__HELLO: return "HELLO";
	case QBD__MSG_TYPE__OPEN: return "OPEN";
	case QBD__MSG_TYPE__READ: return "READ";
	case QBD__MSG_TYPE__WRITE: return "WRITE";
	case QBD__MSG_TYPE__FLUSH: return "FLUSH";
	case QBD__MSG_TYPE__DELETE_VOLUME: return "DELETE_VOLUME";
	case QBD__MSG_TYPE__PING: return "PING";
	case QBD__MSG_TYPE__CHECKSUM: return "CHECKSUM";
	case QBD__MSG_TYPE__PULL: return "PULL";
	case QBD__MSG_TYPE__USAGE: return "USAGE";
	case QBD__MSG_TYPE__AUTH: return "AUTH";
	case QBD__MSG_TYPE__TOMBSTONE: return "TOMBSTONE";
	default: return "UNKNOWN";
	}
}

void qbd_wire_rx_init(struct qbd_wire_rx *rx)
{
	memset(rx, 0, sizeof *rx);
}

void qbd_wire_rx_reset(struct qbd_wire_rx *rx)
{
	if (rx->msg)
		qbd__msg__free_unpacked(rx->msg, NULL);
	free(rx->data_owned);
	qbd_wire_rx_init(rx);
}

/* Deliver the completed frame and get ready for the next one. */
static int wire_rx_deliver(struct qbd_wire_rx *rx,
			   const struct qbd_wire_rx_ops *ops, void *user)
{
	Qbd__Msg *msg = rx->msg;
	void *data = (rx->discard || msg->data_len == 0) ? NULL : rx->data;
	uint8_t *owned = rx->data_owned;
	int r;

	rx->msg = NULL;
	rx->data_owned = NULL;
	rx->hdr_have = 0;
	rx->hdr_len = 0;
	rx->data = NULL;
	rx->data_have = 0;
	rx->discard = 0;
	r = ops->on_frame(user, msg, data);
	qbd__msg__free_unpacked(msg, NULL);
	free(owned);
	return r;
}

int qbd_wire_rx_feed(struct qbd_wire_rx *rx, const uint8_t *p, size_t n,
		     const struct qbd_wire_rx_ops *ops, void *user)
{
	while (n > 0) {
		if (rx->msg == NULL) {
			/* Length prefix, then header. */
			size_t want = rx->hdr_len ? 4 + rx->hdr_len : 4;
			size_t take = QBD_MIN((size_t)(want - rx->hdr_have), n);

			memcpy(rx->hdr + rx->hdr_have, p, take);
			rx->hdr_have += take;
			p += take;
			n -= take;
			if (rx->hdr_have < want)
				continue;
			if (rx->hdr_len == 0) {
				uint32_t h = rx->hdr[0] | (uint32_t)rx->hdr[1] << 8 |
					     (uint32_t)rx->hdr[2] << 16 |
					     (uint32_t)rx->hdr[3] << 24;
				if (h == 0 || h > QBD_WIRE_MAX_HEADER) {
					qbd_warn("wire", "bad header length %u", h);
					return -EPROTO;
				}
				rx->hdr_len = h;
				continue;
			}
			rx->msg = qbd__msg__unpack(NULL, rx->hdr_len, rx->hdr + 4);
			if (rx->msg == NULL) {
				qbd_warn("wire", "undecodable header (%u bytes)",
					 rx->hdr_len);
				return -EPROTO;
			}
			if (rx->msg->data_len > QBD_WIRE_MAX_DATA) {
				qbd_warn("wire", "%s: data length %u over limit",
					 qbd_wire_type_name(rx->msg->type),
					 rx->msg->data_len);
				return -EPROTO;
			}
			if (rx->msg->data_len > 0) {
				void *d = ops->on_header(user, rx->msg);
				if (d == QBD_WIRE_DISCARD) {
					rx->discard = 1;
				} else if (d == NULL) {
					rx->data_owned = malloc(rx->msg->data_len);
					if (!rx->data_owned)
						return -ENOMEM;
					rx->data = rx->data_owned;
				} else {
					rx->data = d;
				}
			}
			if (rx->msg->data_len == 0) {
				int r = wire_rx_deliver(rx, ops, user);
				if (r)
					return r;
			}
			continue;
		}
		/* Bulk data. */
		size_t take = QBD_MIN((size_t)(rx->msg->data_len - rx->data_have), n);
		if (!rx->discard)
			memcpy(rx->data + rx->data_have, p, take);
		rx->data_have += take;
		p += take;
		n -= take;
		if (rx->data_have == rx->msg->data_len) {
			int r = wire_rx_deliver(rx, ops, user);
			if (r)
				return r;
		}
	}
	return 0;
}

void *qbd_wire_rx_direct(const struct qbd_wire_rx *rx, size_t *len)
{
	if (!rx->msg || rx->discard || rx->data_owned || !rx->data ||
	    rx->data_have >= rx->msg->data_len)
		return NULL;
	*len = rx->msg->data_len - rx->data_have;
	return rx->data + rx->data_have;
}

int qbd_wire_rx_placed(struct qbd_wire_rx *rx, size_t n,
		       const struct qbd_wire_rx_ops *ops, void *user)
{
	size_t len;

	if (!qbd_wire_rx_direct(rx, &len) || n > len)
		return -EINVAL;
	rx->data_have += n;
	if (rx->data_have == rx->msg->data_len)
		return wire_rx_deliver(rx, ops, user);
	return 0;
}
