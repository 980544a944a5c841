/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NBD protocol (fixed newstyle) as qbd-nbd speaks it: magics, flags,
 * options, commands, errors and the size of everything on the wire; and
 * the codec (proto.c): request decoding and validation, the errno
 * mapping, reply encoders, the meta context option parser. Free of I/O,
 * so that unit tests and the fuzzer drive them directly.
 */
#ifndef QBD_NBD_PROTO_H
#define QBD_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBD_MAGIC             0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_IHAVEOPT          0x49484156454f5054ull
#define NBD_OPT_REPLY_MAGIC   0x3e889045565a9ull
#define NBD_REQUEST_MAGIC     0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

#define NBD_FLAG_FIXED_NEWSTYLE 1u
#define NBD_FLAG_NO_ZEROES      2u
#define NBD_FLAG_C_FIXED_NEWSTYLE 1u
#define NBD_FLAG_C_NO_ZEROES      2u

#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)

#define NBD_OPT_EXPORT_NAME 1
#define NBD_OPT_ABORT       2
#define NBD_OPT_LIST        3
#define NBD_OPT_INFO        6
#define NBD_OPT_GO          7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

#define NBD_REP_ACK          1
#define NBD_REP_SERVER       2
#define NBD_REP_INFO         3
#define NBD_REP_META_CONTEXT 4
#define NBD_REP_ERR_UNSUP    (0x80000000u | 1)
#define NBD_REP_ERR_INVALID  (0x80000000u | 3)
#define NBD_REP_ERR_UNKNOWN  (0x80000000u | 6)

#define NBD_INFO_EXPORT     0
#define NBD_INFO_BLOCK_SIZE 3

#define NBD_CMD_READ         0
#define NBD_CMD_WRITE        1
#define NBD_CMD_DISC         2
#define NBD_CMD_FLUSH        3
#define NBD_CMD_TRIM         4
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7

#define NBD_CMD_FLAG_FUA     (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF      (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)

/* Structured reply chunks. */
#define NBD_REPLY_FLAG_DONE          (1u << 0)
#define NBD_REPLY_TYPE_NONE          0
#define NBD_REPLY_TYPE_OFFSET_DATA   1
#define NBD_REPLY_TYPE_OFFSET_HOLE   2
#define NBD_REPLY_TYPE_BLOCK_STATUS  5
#define NBD_REPLY_TYPE_ERROR         ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET  ((1u << 15) + 2)

/* The one meta context: base:allocation, at 4 KiB granularity. */
#define NBD_META_BASE_ALLOCATION "base:allocation"
#define NBD_META_ID_BASE_ALLOCATION 1u
#define NBD_STATE_HOLE 1u
#define NBD_STATE_ZERO 2u
#define NBD_BLOCK 4096u

#define NBD_EPERM     1
#define NBD_EIO       5
#define NBD_ENOMEM    12
#define NBD_EINVAL    22
#define NBD_ENOSPC    28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP   95
#define NBD_ESHUTDOWN 108

#define NBD_MAX_PAYLOAD (32u << 20)
#define NBD_MAX_OPTION  65536u

/*
 * Sizes on the wire, in bytes (big-endian fields, no padding).
 * Handshake:
 */
#define NBD_GREETING_SIZE       18u  /* NBDMAGIC, IHAVEOPT, handshake flags */
#define NBD_CLIENT_FLAGS_SIZE   4u   /* the client's flags */
#define NBD_OPTION_SIZE         16u  /* IHAVEOPT, option, length; then data */
#define NBD_OPTION_REPLY_SIZE   20u  /* magic, option, type, length; then data */
#define NBD_EXPORT_NAME_REPLY_SIZE 10u /* size, transmission flags ... */
#define NBD_EXPORT_NAME_ZEROES  124u /* ... then these, unless NO_ZEROES */
#define NBD_GO_FIXED_SIZE       6u   /* GO/INFO data: name length, (name,)
				      * request count; then u16 each */
#define NBD_INFO_EXPORT_SIZE    12u  /* NBD_INFO_EXPORT: type, size, flags */
#define NBD_INFO_BLOCK_SIZE_SIZE 14u /* NBD_INFO_BLOCK_SIZE: type, minimum,
				      * preferred, maximum */
#define NBD_META_FIXED_SIZE     8u   /* meta context data: name length,
				      * (name,) query count; then queries */
#define NBD_META_REPLY_FIXED_SIZE 4u /* NBD_REP_META_CONTEXT: id; then name */
/* Transmission: */
#define NBD_REQUEST_SIZE        28u  /* magic, flags, type, cookie, offset,
				      * length; then a WRITE's data */
#define NBD_SIMPLE_REPLY_SIZE   16u  /* magic, error, cookie; then READ data */
#define NBD_STRUCTURED_REPLY_SIZE 20u /* a chunk's header: magic, flags,
				       * type, cookie, length; then payload */
#define NBD_OFFSET_DATA_SIZE    8u   /* OFFSET_DATA payload: offset; then data */
#define NBD_ERROR_SIZE          6u   /* ERROR payload: error, message length;
				      * then the message */
#define NBD_ERROR_MESSAGE_MAX   4096u
#define NBD_BLOCK_STATUS_SIZE   4u   /* BLOCK_STATUS payload: context id;
				      * then descriptors */
#define NBD_BLOCK_DESC_SIZE     8u   /* a descriptor: length, status flags */

/* What a connection negotiated, for nbd_request_validate. */
#define NBD_NEG_STRUCTURED      0x1u  /* NBD_OPT_STRUCTURED_REPLY */
#define NBD_NEG_BASE_ALLOCATION 0x2u  /* base:allocation selected */

struct nbd_request {
	uint32_t magic;
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t offset;
	uint32_t length;
};

/* Decode a request header (NBD_REQUEST_SIZE bytes; no validation). */
void nbd_request_decode(const uint8_t *p, struct nbd_request *r);

/*
 * Validate a request against an export of `size` bytes on a connection
 * that negotiated `neg` (NBD_NEG_*). Returns 0 or the NBD error to reply
 * with, logging the reason: unknown command or flag, a flag not valid
 * for the command or not negotiated (DF without structured replies),
 * BLOCK_STATUS without base:allocation, FLUSH with an offset or length,
 * zero length, READ/WRITE over NBD_MAX_PAYLOAD, a range past the end.
 * Bad magic is not handled here: the caller must close the connection.
 */
uint32_t nbd_request_validate(const struct nbd_request *r, uint64_t size,
			      unsigned neg);

/* The one mapping from a -errno of libqbd to an NBD error. */
uint32_t nbd_errno(int err);

/* Encode a simple reply header (NBD_SIMPLE_REPLY_SIZE bytes). */
void nbd_simple_reply(uint8_t *out, uint64_t cookie, uint32_t error);

/* Encode an option reply header (NBD_OPTION_REPLY_SIZE bytes) for a
 * payload of len. */
void nbd_option_reply(uint8_t *out, uint32_t option, uint32_t type,
		      uint32_t len);

/* Handshake greeting (NBD_GREETING_SIZE bytes). */
void nbd_greeting(uint8_t *out);

/* Encode a structured reply chunk header (NBD_STRUCTURED_REPLY_SIZE
 * bytes) for a payload of len bytes. */
void nbd_structured_reply(uint8_t *out, uint64_t cookie, uint16_t flags,
			  uint16_t type, uint32_t len);

/* An NBD_REPLY_TYPE_ERROR chunk with NBD_REPLY_FLAG_DONE and message msg
 * (cut at NBD_ERROR_MESSAGE_MAX bytes) into out, which holds
 * NBD_STRUCTURED_REPLY_SIZE + NBD_ERROR_SIZE + strlen(msg) bytes. Returns
 * the bytes written. */
size_t nbd_error_chunk(uint8_t *out, uint64_t cookie, uint32_t error,
		       const char *msg);

/* Bytes nbd_block_status_chunk needs for nbits bits. */
size_t nbd_block_status_size(uint32_t nbits);

/*
 * An NBD_REPLY_TYPE_BLOCK_STATUS chunk (flag DONE) for base:allocation,
 * answering a request for [off, off + len). bits holds nbits bits (LSB
 * first; 1 = data), one per NBD_BLOCK block from byte offset bits_off
 * (bits_off <= off, aligned). Descriptors are runs of equal bits: data
 * status 0, holes NBD_STATE_HOLE | NBD_STATE_ZERO; the first starts at
 * off, none goes past off + len or past the last block of bits (a
 * shorter answer than asked, as the protocol allows). With one only the
 * first descriptor. out holds nbd_block_status_size(nbits) bytes.
 * Returns the bytes written.
 */
size_t nbd_block_status_chunk(uint8_t *out, uint64_t cookie, uint32_t context,
			      const uint8_t *bits, uint64_t bits_off, uint32_t nbits,
			      uint64_t off, uint64_t len, bool one);

/*
 * Parse the payload of NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT:
 * u32 export name length, name, u32 query count, then per query u32
 * length and the query. 0 and the name and count, or -EINVAL (logged)
 * when the lengths do not add up to len exactly. *queries points at the
 * first query.
 */
int nbd_meta_parse(const uint8_t *d, uint32_t len, const uint8_t **name,
		   uint32_t *name_len, uint32_t *count, const uint8_t **queries);

/* Does the query at q (u32 length, then bytes) select base:allocation?
 * LIST also accepts "base:" (every context of the namespace). Advances
 * *q to the next query. */
bool nbd_meta_query_base_allocation(const uint8_t **q, bool list);

/* Big-endian helpers. */
void nbd_put16(uint8_t *p, uint16_t v);
void nbd_put32(uint8_t *p, uint32_t v);
void nbd_put64(uint8_t *p, uint64_t v);
uint16_t nbd_get16(const uint8_t *p);
uint32_t nbd_get32(const uint8_t *p);
uint64_t nbd_get64(const uint8_t *p);

#endif
