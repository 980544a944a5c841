/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd wire framing, shared by libqbd and qbd-chunkd. Transport-agnostic:
 * the caller moves bytes (libuv in the chunk server, nonblocking sockets in
 * libqbd); this module encodes headers and runs the receive state machine.
 *
 * Frame: le32 H | H bytes packed Qbd__Msg | msg->data_len raw bytes.
 */
#ifndef QBD_WIRE_H
#define QBD_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "replicator/wire/proto/qbd.pb-c.h"

#define QBD_WIRE_MAX_HEADER 512u
/* Largest bulk payload: a 32 MiB NBD request spans at most 33 chunks but is
 * split per chunk; OPEN replies carry 16 bytes per written chunk. */
#define QBD_WIRE_MAX_DATA (64u << 20)
#define QBD_WIRE_FRAME_MAX_PREFIX (4u + QBD_WIRE_MAX_HEADER)

/* Msg.flags */
#define QBD_WIRE_F_ZERO   0x1u  /* WRITE: zero the range, no data follows */
#define QBD_WIRE_F_FUA    0x2u  /* WRITE: durable before the reply */
#define QBD_WIRE_F_REPAIR 0x4u  /* WRITE: rewrite at the same version */
#define QBD_WIRE_F_RESYNC 0x8u  /* WRITE: replace the whole chunk at new_version, any version */
#define QBD_WIRE_F_BITMAP 0x10u /* READ: reply data = the range's written bitmap,
				 * one bit per 4 KiB block (LSB first), not its
				 * bytes; offset and length multiples of 4 KiB */
#define QBD_WIRE_F_ADD    0x20u /* OPEN: the node is being added to the volume as a
				 * new replica: clears a tombstone made at an
				 * epoch below the OPEN's (docs/protocol.md, 2) */
#define QBD_WIRE_F_SPARSE 0x40u /* READ of the whole chunk: reply data = its
				 * sparse form (common/sparse.h: written
				 * bitmap, then the written blocks); WRITE
				 * with RESYNC: data in that form */
#define QBD_WIRE_BLOCK 4096u    /* block of the BITMAP bits */

/*
 * Chunk list entries (OPEN reply: every chunk held; PING reply: flagged
 * chunks): 16 bytes, le64 chunk index | flags << 56, le64 version. The
 * flags are the engine's QBD_ENGINE_CHUNK_* bits; the others are zero.
 * A writer that does not know a flag refuses the list, so it cannot take
 * a flagged copy for a good one.
 */
#define QBD_WIRE_ENTRY            16u
#define QBD_WIRE_CHUNK_SUSPECT    0x1u  /* unclean stop with writes in flight */
#define QBD_WIRE_CHUNK_DAMAGED    0x2u  /* a block failed its checksum */
#define QBD_WIRE_CHUNK_FLAGS      0x3u  /* every flag defined */
#define QBD_WIRE_FLAG_SHIFT       56
#define QBD_WIRE_MAX_CHUNK        ((1ull << QBD_WIRE_FLAG_SHIFT) - 1)
/* A PING reply lists at most this many flagged chunks (Msg.flagged says
 * how many there are in all; the chunk server reports the others in
 * later PINGs, in turn). */
#define QBD_WIRE_MAX_FLAGGED      64u

/* Encode one entry at p. chunk <= QBD_WIRE_MAX_CHUNK, flags within
 * QBD_WIRE_CHUNK_FLAGS: -EINVAL otherwise (nothing written). */
int qbd_wire_put_entry(uint8_t *p, uint64_t chunk, uint64_t version, uint32_t flags);
/* Decode one entry: 0, or -EINVAL for flag bits that are not defined. */
int qbd_wire_get_entry(const uint8_t *p, uint64_t *chunk, uint64_t *version,
		       uint32_t *flags);

/* Default TCP port of qbd-chunkd. */
#define QBD_WIRE_DEFAULT_PORT 7800

/*
 * Encode the length prefix and header of msg into out (cap bytes; use
 * QBD_WIRE_FRAME_MAX_PREFIX). msg->data_len must already be set. Returns the
 * number of bytes written, or -EMSGSIZE if the header does not fit.
 */
ssize_t qbd_wire_encode(const Qbd__Msg *msg, uint8_t *out, size_t cap);

/* Name of a message type for logs ("READ"); never NULL. */
const char *qbd_wire_type_name(int type);

/*
 * Receive state machine. Feed it bytes as they arrive; for each frame it
 * calls on_header once the header is decoded, then on_frame once the bulk
 * data (if any) has arrived.
 *
 * on_header returns where to put msg->data_len bytes of bulk data: a buffer
 * of at least that size that stays valid until on_frame, or NULL to have the
 * data read into a buffer the rx owns (malloc'd, freed after on_frame).
 * It may instead return QBD_WIRE_DISCARD to drop the data. on_frame gets the
 * message (owned by the rx, freed after on_frame returns) and the data
 * pointer (NULL when data_len is 0 or discarded). A non-zero return from
 * either callback stops feeding and is returned by qbd_wire_rx_feed.
 */
#define QBD_WIRE_DISCARD ((void *)1)

struct qbd_wire_rx_ops {
	void *(*on_header)(void *user, const Qbd__Msg *msg);
	int (*on_frame)(void *user, Qbd__Msg *msg, void *data);
};

struct qbd_wire_rx {
	uint8_t hdr[QBD_WIRE_FRAME_MAX_PREFIX];
	size_t hdr_have;
	uint32_t hdr_len;      /* 0 until the prefix is read */
	Qbd__Msg *msg;         /* decoded header of the frame being received */
	uint8_t *data;         /* destination of bulk data */
	uint8_t *data_owned;   /* set when the rx allocated data */
	size_t data_have;
	int discard;
};

void qbd_wire_rx_init(struct qbd_wire_rx *rx);
/* Free anything a partially received frame holds. */
void qbd_wire_rx_reset(struct qbd_wire_rx *rx);

/*
 * Consume n bytes. Returns 0 when all were consumed, a callback's non-zero
 * return, or -EPROTO on a malformed frame (bad length, undecodable header,
 * data_len over QBD_WIRE_MAX_DATA). After an error the connection must be
 * closed.
 */
int qbd_wire_rx_feed(struct qbd_wire_rx *rx, const uint8_t *p, size_t n,
		     const struct qbd_wire_rx_ops *ops, void *user);

/*
 * Receiving in place: while the bulk data of a frame goes to a buffer
 * on_header gave (not discarded, not allocated by the rx), the place the
 * next bytes go and (*len) how many are still missing; NULL otherwise. A
 * caller that reads a large payload straight there, rather than into its
 * own buffer for qbd_wire_rx_feed to copy, reports what it read with
 * qbd_wire_rx_placed: n bytes, at most *len; the frame is delivered when
 * complete, with qbd_wire_rx_feed's return values.
 */
void *qbd_wire_rx_direct(const struct qbd_wire_rx *rx, size_t *len);
int qbd_wire_rx_placed(struct qbd_wire_rx *rx, size_t n,
		       const struct qbd_wire_rx_ops *ops, void *user);

#endif
