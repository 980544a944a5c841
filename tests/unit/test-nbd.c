/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the NBD request parser, errno mapping, encoders and
 * the meta context option parser. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "nbd-frontend/nbd-proto.h"

#define SIZE (1ull << 30)
#define ALL (NBD_NEG_STRUCTURED | NBD_NEG_BASE_ALLOCATION)

static struct nbd_request req(uint16_t type, uint16_t flags, uint64_t off, uint32_t len)
{
	struct nbd_request r = { NBD_REQUEST_MAGIC, flags, type, 42, off, len };
	return r;
}

START_TEST(decode_layout)
{
	uint8_t b[28];
	struct nbd_request r;

	nbd_put32(b, NBD_REQUEST_MAGIC);
	nbd_put16(b + 4, NBD_CMD_FLAG_FUA);
	nbd_put16(b + 6, NBD_CMD_WRITE);
	nbd_put64(b + 8, 0x0102030405060708ull);
	nbd_put64(b + 16, 4096);
	nbd_put32(b + 24, 512);
	nbd_request_decode(b, &r);
	ck_assert_uint_eq(r.magic, NBD_REQUEST_MAGIC);
	ck_assert_uint_eq(r.flags, NBD_CMD_FLAG_FUA);
	ck_assert_uint_eq(r.type, NBD_CMD_WRITE);
	ck_assert_uint_eq(r.cookie, 0x0102030405060708ull);
	ck_assert_uint_eq(r.offset, 4096);
	ck_assert_uint_eq(r.length, 512);
}
END_TEST

START_TEST(valid_requests_pass)
{
	struct nbd_request r;

	r = req(NBD_CMD_READ, 0, 0, 4096);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), 0);
	r = req(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, SIZE - 512, 512);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), 0);
	r = req(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA, 1, 3);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), 0);
	r = req(NBD_CMD_TRIM, 0, 0, (uint32_t)(SIZE >> 1));
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), 0);
	r = req(NBD_CMD_FLUSH, 0, 0, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), 0);
	r = req(NBD_CMD_DISC, 0, 0, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), 0);
}
END_TEST

START_TEST(bad_requests_get_errors)
{
	struct nbd_request r;

	r = req(99, 0, 0, 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
	r = req(NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
	r = req(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
	r = req(NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
	r = req(NBD_CMD_READ, 0, 0, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
	r = req(NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EOVERFLOW);
	r = req(NBD_CMD_WRITE, 0, 0, NBD_MAX_PAYLOAD + 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
	r = req(NBD_CMD_READ, 0, SIZE, 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
	r = req(NBD_CMD_WRITE, 0, SIZE - 1, 2);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_ENOSPC);
	r = req(NBD_CMD_WRITE_ZEROES, 0, UINT64_MAX - 1, 4);  /* wraps */
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_ENOSPC);
	r = req(NBD_CMD_TRIM, 0, SIZE + 4096, 4096);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
}
END_TEST

START_TEST(errno_mapping)
{
	ck_assert_uint_eq(nbd_errno(0), 0);
	ck_assert_uint_eq(nbd_errno(-EPERM), NBD_EPERM);
	ck_assert_uint_eq(nbd_errno(-EIO), NBD_EIO);
	ck_assert_uint_eq(nbd_errno(-EBADMSG), NBD_EIO);
	ck_assert_uint_eq(nbd_errno(-ESTALE), NBD_EIO);
	ck_assert_uint_eq(nbd_errno(-ENOSPC), NBD_ENOSPC);
	ck_assert_uint_eq(nbd_errno(-EINVAL), NBD_EINVAL);
	ck_assert_uint_eq(nbd_errno(-ENOMEM), NBD_ENOMEM);
	ck_assert_uint_eq(nbd_errno(-ESHUTDOWN), NBD_ESHUTDOWN);
}
END_TEST

START_TEST(encoders_bytes)
{
	uint8_t b[20];
	static const uint8_t simple[16] = { 0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22,
					    0, 0, 0, 0, 0, 0, 0x12, 0x34 };
	static const uint8_t greet[18] = { 'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C',
					   'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 3 };

	nbd_simple_reply(b, 0x1234, NBD_EINVAL);
	ck_assert_mem_eq(b, simple, 16);
	nbd_greeting(b);
	ck_assert_mem_eq(b, greet, 18);
	nbd_option_reply(b, NBD_OPT_GO, NBD_REP_ERR_UNSUP, 7);
	ck_assert_uint_eq(nbd_get64(b), NBD_OPT_REPLY_MAGIC);
	ck_assert_uint_eq(nbd_get32(b + 8), NBD_OPT_GO);
	ck_assert_uint_eq(nbd_get32(b + 12), 0x80000001u);
	ck_assert_uint_eq(nbd_get32(b + 16), 7);
}
END_TEST

START_TEST(negotiated_features_checked)
{
	struct nbd_request r;

	/* DF only with structured replies, and only on READ. */
	r = req(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 4096);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, NBD_NEG_STRUCTURED), 0);
	r = req(NBD_CMD_WRITE, NBD_CMD_FLAG_DF, 0, 4096);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, ALL), NBD_EINVAL);
	/* BLOCK_STATUS only with base:allocation; REQ_ONE only there. */
	r = req(NBD_CMD_BLOCK_STATUS, 0, 0, 4096);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), NBD_EINVAL);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, NBD_NEG_STRUCTURED), NBD_EINVAL);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, ALL), 0);
	r = req(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 1, (uint32_t)(SIZE - 1));
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, ALL), 0);  /* no payload: any length */
	r = req(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_FUA, 0, 4096);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, ALL), NBD_EINVAL);
	r = req(NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 0, 4096);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, ALL), NBD_EINVAL);
	r = req(NBD_CMD_BLOCK_STATUS, 0, 0, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, ALL), NBD_EINVAL);
	r = req(NBD_CMD_BLOCK_STATUS, 0, SIZE - 4096, 8192);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, ALL), NBD_EINVAL);
	/* FLUSH: offset and length reserved (zero). */
	r = req(NBD_CMD_FLUSH, 0, 4096, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, ALL), NBD_EINVAL);
	r = req(NBD_CMD_FLUSH, 0, 0, 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, ALL), NBD_EINVAL);
	/* Zeroing carries no payload: over 32 MiB is fine. */
	r = req(NBD_CMD_WRITE_ZEROES, 0, 0, 1u << 30);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), 0);
	r = req(NBD_CMD_TRIM, 0, 0, 1u << 30);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE, 0), 0);
}
END_TEST

START_TEST(structured_encoders_bytes)
{
	uint8_t b[64];
	static const uint8_t hdr[20] = { 0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1,
					 0, 0, 0, 0, 0, 0, 0xab, 0xcd, 0, 0, 0x10, 0x08 };

	nbd_structured_reply(b, 0xabcd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 4104);
	ck_assert_mem_eq(b, hdr, 20);
	ck_assert_uint_eq(nbd_error_chunk(b, 7, NBD_EIO, "bad disk"), 20 + 6 + 8);
	ck_assert_uint_eq(nbd_get32(b), NBD_STRUCTURED_REPLY_MAGIC);
	ck_assert_uint_eq(nbd_get16(b + 4), NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(nbd_get16(b + 6), 32769);
	ck_assert_uint_eq(nbd_get64(b + 8), 7);
	ck_assert_uint_eq(nbd_get32(b + 16), 14);
	ck_assert_uint_eq(nbd_get32(b + 20), 5);
	ck_assert_uint_eq(nbd_get16(b + 24), 8);
	ck_assert_mem_eq(b + 26, "bad disk", 8);
}
END_TEST

/* Extents of a block status reply: count, then (length, status) each. */
static unsigned extents(const uint8_t *b, size_t n, uint32_t *len, uint32_t *st)
{
	unsigned k = (unsigned)(n - 24) / 8;

	ck_assert_uint_eq(nbd_get32(b), NBD_STRUCTURED_REPLY_MAGIC);
	ck_assert_uint_eq(nbd_get16(b + 4), NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(nbd_get16(b + 6), NBD_REPLY_TYPE_BLOCK_STATUS);
	ck_assert_uint_eq(nbd_get32(b + 16), n - 20);
	ck_assert_uint_eq(nbd_get32(b + 20), NBD_META_ID_BASE_ALLOCATION);
	for (unsigned i = 0; i < k; i++) {
		len[i] = nbd_get32(b + 24 + 8 * i);
		st[i] = nbd_get32(b + 28 + 8 * i);
	}
	return k;
}

START_TEST(block_status_extents)
{
	/* blocks 0-1 hole, 2-4 data, 5 hole, 6-9 data (bits LSB first) */
	uint8_t bits[2] = { 0xdc, 0x03 }, b[128];
	uint32_t len[16], st[16];
	const uint32_t H = NBD_STATE_HOLE | NBD_STATE_ZERO;
	size_t n;
	unsigned k;

	ck_assert_uint_ge(sizeof b, nbd_block_status_size(10));
	n = nbd_block_status_chunk(b, 1, NBD_META_ID_BASE_ALLOCATION, bits, 0, 10,
				   0, 10 * 4096, false);
	k = extents(b, n, len, st);
	ck_assert_uint_eq(k, 4);
	ck_assert_uint_eq(len[0], 8192);  ck_assert_uint_eq(st[0], H);
	ck_assert_uint_eq(len[1], 12288); ck_assert_uint_eq(st[1], 0);
	ck_assert_uint_eq(len[2], 4096);  ck_assert_uint_eq(st[2], H);
	ck_assert_uint_eq(len[3], 16384); ck_assert_uint_eq(st[3], 0);
	/* Unaligned start and end, bits from byte 40960 on (block 10 of
	 * the volume is bit 0): extents start at the offset asked. */
	n = nbd_block_status_chunk(b, 1, NBD_META_ID_BASE_ALLOCATION, bits, 40960, 10,
				   40960 + 5000, 3 * 4096, false);
	k = extents(b, n, len, st);
	ck_assert_uint_eq(k, 2);
	ck_assert_uint_eq(len[0], 8192 - 5000); ck_assert_uint_eq(st[0], H);
	ck_assert_uint_eq(len[1], 3 * 4096 - (8192 - 5000)); ck_assert_uint_eq(st[1], 0);
	/* REQ_ONE: one extent. */
	n = nbd_block_status_chunk(b, 1, NBD_META_ID_BASE_ALLOCATION, bits, 0, 10,
				   4096, 10 * 4096 - 4096, true);
	k = extents(b, n, len, st);
	ck_assert_uint_eq(k, 1);
	ck_assert_uint_eq(len[0], 4096); ck_assert_uint_eq(st[0], H);
	/* Asked past the bits: a shorter answer, ending with the bits. */
	n = nbd_block_status_chunk(b, 1, NBD_META_ID_BASE_ALLOCATION, bits, 0, 3,
				   0, 1u << 30, false);
	k = extents(b, n, len, st);
	ck_assert_uint_eq(k, 2);
	ck_assert_uint_eq(len[0] + len[1], 3 * 4096);
}
END_TEST

/* Build a meta context option payload: name, then queries. */
static uint32_t meta_opt(uint8_t *b, const char *name, const char **q, unsigned n)
{
	uint32_t p = 0;

	nbd_put32(b, (uint32_t)strlen(name));
	memcpy(b + 4, name, strlen(name));
	p = 4 + (uint32_t)strlen(name);
	nbd_put32(b + p, n);
	p += 4;
	for (unsigned i = 0; i < n; i++) {
		nbd_put32(b + p, (uint32_t)strlen(q[i]));
		memcpy(b + p + 4, q[i], strlen(q[i]));
		p += 4 + (uint32_t)strlen(q[i]);
	}
	return p;
}

START_TEST(meta_context_parser)
{
	static const char *qs[] = { "qemu:dirty-bitmap:x", "base:allocation", "base:" };
	const uint8_t *name, *q;
	uint32_t nl, n, len;
	uint8_t b[256];

	len = meta_opt(b, "vol1", qs, 3);
	ck_assert_int_eq(nbd_meta_parse(b, len, &name, &nl, &n, &q), 0);
	ck_assert_uint_eq(nl, 4);
	ck_assert_mem_eq(name, "vol1", 4);
	ck_assert_uint_eq(n, 3);
	ck_assert(!nbd_meta_query_base_allocation(&q, false));
	ck_assert(nbd_meta_query_base_allocation(&q, false));
	ck_assert(!nbd_meta_query_base_allocation(&q, false)); /* "base:" is for LIST */
	ck_assert_ptr_eq(q, b + len);
	q = b + 12;
	ck_assert(!nbd_meta_query_base_allocation(&q, true));
	ck_assert(nbd_meta_query_base_allocation(&q, true));
	ck_assert(nbd_meta_query_base_allocation(&q, true));
	/* Malformed: truncated, trailing bytes, lengths past the end. */
	ck_assert_int_eq(nbd_meta_parse(b, len - 1, &name, &nl, &n, &q), -EINVAL);
	ck_assert_int_eq(nbd_meta_parse(b, len + 1, &name, &nl, &n, &q), -EINVAL);
	ck_assert_int_eq(nbd_meta_parse(b, 7, &name, &nl, &n, &q), -EINVAL);
	nbd_put32(b, 1000);
	ck_assert_int_eq(nbd_meta_parse(b, len, &name, &nl, &n, &q), -EINVAL);
	len = meta_opt(b, "", qs, 1);
	nbd_put32(b + 4, 2);  /* says two queries, holds one */
	ck_assert_int_eq(nbd_meta_parse(b, len, &name, &nl, &n, &q), -EINVAL);
	len = meta_opt(b, "", NULL, 0);
	ck_assert_int_eq(nbd_meta_parse(b, len, &name, &nl, &n, &q), 0);
	ck_assert_uint_eq(n, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("nbd");
	TCase *t1 = tcase_create("parse"), *t2 = tcase_create("encode");
	SRunner *sr;
	int failed;

	tcase_add_test(t1, decode_layout);
	tcase_add_test(t1, valid_requests_pass);
	tcase_add_test(t1, bad_requests_get_errors);
	tcase_add_test(t1, negotiated_features_checked);
	tcase_add_test(t1, meta_context_parser);
	tcase_add_test(t2, errno_mapping);
	tcase_add_test(t2, encoders_bytes);
	tcase_add_test(t2, structured_encoders_bytes);
	tcase_add_test(t2, block_status_extents);
	suite_add_tcase(s, t1);
	suite_add_tcase(s, t2);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
