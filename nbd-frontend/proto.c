/* SPDX-License-Identifier: Apache-2.0 */
/* NBD protocol pieces without I/O: request decoding and validation, the
 * errno mapping, reply encoders. */
#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "nbd.h"

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

uint32_t nbd_request_validate(const struct nbd_request *r, uint64_t size)
{
	uint16_t allowed = 0;
	bool ranged = true;

	switch (r->type) {
	case NBD_CMD_READ:
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
	case NBD_CMD_FLUSH:
	case NBD_CMD_DISC:
		ranged = false;
		break;
	default:
		qbd_warn("nbd", "request %#llx: unknown command %u",
			 (unsigned long long)r->cookie, r->type);
		return NBD_EINVAL;
	}
	if (r->flags & ~allowed) {
		qbd_warn("nbd", "request %#llx: flags %#x not valid for command %u",
			 (unsigned long long)r->cookie, r->flags, r->type);
		return NBD_EINVAL;
	}
	if (!ranged)
		return 0;
	if (r->length == 0) {
		qbd_warn("nbd", "request %#llx: zero length", (unsigned long long)r->cookie);
		return NBD_EINVAL;
	}
	if (r->length > NBD_MAX_PAYLOAD &&
	    (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE)) {
		qbd_warn("nbd", "request %#llx: length %u over the %u maximum",
			 (unsigned long long)r->cookie, r->length, NBD_MAX_PAYLOAD);
		return r->type == NBD_CMD_READ ? NBD_EOVERFLOW : NBD_EINVAL;
	}
	if (r->offset > size || r->length > size - r->offset) {
		qbd_warn("nbd", "request %#llx: offset %llu length %u beyond the end (%llu)",
			 (unsigned long long)r->cookie, (unsigned long long)r->offset,
			 r->length, (unsigned long long)size);
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
