/* SPDX-License-Identifier: Apache-2.0 */
/* The NBD codec of nbd-proto.h, without I/O: request decoding and
 * validation, the errno mapping, reply encoders (simple and structured),
 * the meta context option parser. */
#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "nbd-proto.h"

void nbd_put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
void nbd_put32(uint8_t *p, uint32_t v) { nbd_put16(p, v >> 16); nbd_put16(p + 2, (uint16_t)v); }
void nbd_put64(uint8_t *p, uint64_t v) { nbd_put32(p, v >> 32); nbd_put32(p + 4, (uint32_t)v); }
uint16_t nbd_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
uint32_t nbd_get32(const uint8_t *p) { return (uint32_t)nbd_get16(p) << 16 | nbd_get16(p + 2); }
uint64_t nbd_get64(const uint8_t *p) { return (uint64_t)nbd_get32(p) << 32 | nbd_get32(p + 4); }

void nbd_request_decode(const uint8_t *p, struct nbd_request *r)
{
	r->magic = nbd_get32(p);
	r->flags = nbd_get16(p + 4);
	r->type = nbd_get16(p + 6);
	r->cookie = nbd_get64(p + 8);
	r->offset = nbd_get64(p + 16);
	r->length = nbd_get32(p + 24);
}

uint32_t nbd_request_validate(const struct nbd_request *r, uint64_t size, unsigned neg)
{
	unsigned long long ck = (unsigned long long)r->cookie;
	uint16_t allowed = 0;
	bool ranged = true;

	switch (r->type) {
	case NBD_CMD_READ:
		if (neg & NBD_NEG_STRUCTURED)
			allowed = NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE:
		allowed = NBD_CMD_FLAG_FUA;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE;
		break;
	case NBD_CMD_TRIM:
		allowed = NBD_CMD_FLAG_FUA;
		break;
	case NBD_CMD_BLOCK_STATUS:
		if (!(neg & NBD_NEG_BASE_ALLOCATION)) {
			qbd_warn("nbd", "request %#llx: BLOCK_STATUS without a negotiated "
				 "meta context", ck);
			return NBD_EINVAL;
		}
		allowed = NBD_CMD_FLAG_REQ_ONE;
		break;
	case NBD_CMD_FLUSH:
		if (r->offset || r->length) {
			qbd_warn("nbd", "request %#llx: FLUSH with offset %llu length %u "
				 "(both must be 0)", ck, (unsigned long long)r->offset, r->length);
			return NBD_EINVAL;
		}
		ranged = false;
		break;
	case NBD_CMD_DISC:
		ranged = false;
		break;
	default:
		qbd_warn("nbd", "request %#llx: unknown command %u", ck, r->type);
		return NBD_EINVAL;
	}
	if (r->flags & ~allowed) {
		qbd_warn("nbd", "request %#llx: flags %#x not valid for command %u%s", ck,
			 r->flags, r->type,
			 (r->flags & NBD_CMD_FLAG_DF) && r->type == NBD_CMD_READ
				 ? " (DF needs structured replies)" : "");
		return NBD_EINVAL;
	}
	if (!ranged)
		return 0;
	if (r->length == 0) {
		qbd_warn("nbd", "request %#llx: zero length", ck);
		return NBD_EINVAL;
	}
	if (r->length > NBD_MAX_PAYLOAD &&
	    (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE)) {
		qbd_warn("nbd", "request %#llx: length %u over the %u maximum", ck, r->length,
			 NBD_MAX_PAYLOAD);
		return r->type == NBD_CMD_READ ? NBD_EOVERFLOW : NBD_EINVAL;
	}
	if (r->offset > size || r->length > size - r->offset) {
		qbd_warn("nbd", "request %#llx: offset %llu length %u beyond the end (%llu)", ck,
			 (unsigned long long)r->offset, r->length, (unsigned long long)size);
		return (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES)
			       ? NBD_ENOSPC : NBD_EINVAL;
	}
	return 0;
}

uint32_t nbd_errno(int err)
{
	switch (err) {
	case 0: return 0;
	case -EPERM: return NBD_EPERM;   /* fenced: a newer writer exists */
	case -ENOMEM: return NBD_ENOMEM;
	case -EINVAL: return NBD_EINVAL;
	case -ENOSPC: return NBD_ENOSPC;
	case -EOVERFLOW: return NBD_EOVERFLOW;
	case -ENOTSUP: return NBD_ENOTSUP;
	case -ESHUTDOWN: return NBD_ESHUTDOWN;
	default: return NBD_EIO;         /* -EIO, -EBADMSG, -ESTALE, ... */
	}
}

void nbd_simple_reply(uint8_t *out, uint64_t cookie, uint32_t error)
{
	nbd_put32(out, NBD_SIMPLE_REPLY_MAGIC);
	nbd_put32(out + 4, error);
	nbd_put64(out + 8, cookie);
}

void nbd_option_reply(uint8_t *out, uint32_t option, uint32_t type, uint32_t len)
{
	nbd_put64(out, NBD_OPT_REPLY_MAGIC);
	nbd_put32(out + 8, option);
	nbd_put32(out + 12, type);
	nbd_put32(out + 16, len);
}

void nbd_greeting(uint8_t *out)
{
	nbd_put64(out, NBD_MAGIC);
	nbd_put64(out + 8, NBD_IHAVEOPT);
	nbd_put16(out + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}

void nbd_structured_reply(uint8_t *out, uint64_t cookie, uint16_t flags, uint16_t type,
			  uint32_t len)
{
	nbd_put32(out, NBD_STRUCTURED_REPLY_MAGIC);
	nbd_put16(out + 4, flags);
	nbd_put16(out + 6, type);
	nbd_put64(out + 8, cookie);
	nbd_put32(out + 16, len);
}

size_t nbd_error_chunk(uint8_t *out, uint64_t cookie, uint32_t error, const char *msg)
{
	uint8_t *p = out + NBD_STRUCTURED_REPLY_SIZE;
	size_t ml = strlen(msg);

	if (ml > NBD_ERROR_MESSAGE_MAX)
		ml = NBD_ERROR_MESSAGE_MAX;
	nbd_structured_reply(out, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
			     (uint32_t)(NBD_ERROR_SIZE + ml));
	nbd_put32(p, error);
	nbd_put16(p + 4, (uint16_t)ml);
	memcpy(p + NBD_ERROR_SIZE, msg, ml);
	return NBD_STRUCTURED_REPLY_SIZE + NBD_ERROR_SIZE + ml;
}

size_t nbd_block_status_size(uint32_t nbits)
{
	return NBD_STRUCTURED_REPLY_SIZE + NBD_BLOCK_STATUS_SIZE +
	       NBD_BLOCK_DESC_SIZE * (size_t)(nbits ? nbits : 1);
}

static bool bit_of(const uint8_t *bits, uint32_t i)
{
	return (bits[i / 8] >> (i % 8)) & 1u;
}

size_t nbd_block_status_chunk(uint8_t *out, uint64_t cookie, uint32_t context,
			      const uint8_t *bits, uint64_t bits_off, uint32_t nbits,
			      uint64_t off, uint64_t len, bool one)
{
	uint64_t end = off + len, bend = bits_off + (uint64_t)nbits * NBD_BLOCK;
	uint8_t *d = out + NBD_STRUCTURED_REPLY_SIZE + NBD_BLOCK_STATUS_SIZE;
	uint32_t n = 0;

	if (bend < end)
		end = bend;
	for (uint64_t pos = off; pos < end && !(one && n == 1);) {
		uint32_t i = (uint32_t)((pos - bits_off) / NBD_BLOCK);
		bool data = bit_of(bits, i);
		uint64_t stop;

		while (i + 1 < nbits && bit_of(bits, i + 1) == data)
			i++;
		stop = bits_off + (uint64_t)(i + 1) * NBD_BLOCK;
		if (stop > end)
			stop = end;
		/* A descriptor's length is 32 bits: long runs split. */
		if (stop - pos > 0x80000000ull)
			stop = pos + 0x80000000ull;
		nbd_put32(d + NBD_BLOCK_DESC_SIZE * n, (uint32_t)(stop - pos));
		nbd_put32(d + NBD_BLOCK_DESC_SIZE * n + 4,
			  data ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO);
		n++;
		pos = stop;
	}
	nbd_structured_reply(out, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS,
			     NBD_BLOCK_STATUS_SIZE + NBD_BLOCK_DESC_SIZE * n);
	nbd_put32(out + NBD_STRUCTURED_REPLY_SIZE, context);
	return NBD_STRUCTURED_REPLY_SIZE + NBD_BLOCK_STATUS_SIZE + NBD_BLOCK_DESC_SIZE * (size_t)n;
}

int nbd_meta_parse(const uint8_t *d, uint32_t len, const uint8_t **name, uint32_t *name_len,
		   uint32_t *count, const uint8_t **queries)
{
	uint32_t nl, n, pos;

	if (len < NBD_META_FIXED_SIZE || (nl = nbd_get32(d)) > len - NBD_META_FIXED_SIZE) {
		qbd_warn("nbd", "meta context option: export name length does not fit "
			 "the option (%u bytes)", len);
		return -EINVAL;
	}
	*name = d + 4;
	*name_len = nl;
	n = nbd_get32(d + 4 + nl);
	pos = NBD_META_FIXED_SIZE + nl;
	*queries = d + pos;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t ql;

		if (len - pos < 4 || (ql = nbd_get32(d + pos)) > len - pos - 4) {
			qbd_warn("nbd", "meta context option: query %u of %u does not fit "
				 "the option (%u bytes)", i + 1, n, len);
			return -EINVAL;
		}
		pos += 4 + ql;
	}
	if (pos != len) {
		qbd_warn("nbd", "meta context option: %u bytes after %u queries", len - pos, n);
		return -EINVAL;
	}
	*count = n;
	return 0;
}

bool nbd_meta_query_base_allocation(const uint8_t **q, bool list)
{
	uint32_t ql = nbd_get32(*q);
	const char *s = (const char *)*q + 4;
	static const char full[] = NBD_META_BASE_ALLOCATION;

	*q += 4 + ql;
	if (ql == sizeof full - 1 && memcmp(s, full, ql) == 0)
		return true;
	return list && ql == 5 && memcmp(s, "base:", 5) == 0;
}
