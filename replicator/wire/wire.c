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
