/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the NBD request parser, errno mapping and encoders. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "nbd-frontend/nbd.h"

#define SIZE (1ull << 30)

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
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), 0);
	r = req(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, SIZE - 512, 512);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), 0);
	r = req(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA, 1, 3);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), 0);
	r = req(NBD_CMD_TRIM, 0, 0, (uint32_t)(SIZE >> 1));
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), 0);
	r = req(NBD_CMD_FLUSH, 0, 0, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), 0);
	r = req(NBD_CMD_DISC, 0, 0, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), 0);
}
END_TEST

START_TEST(bad_requests_get_errors)
{
	struct nbd_request r;

	r = req(99, 0, 0, 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_EINVAL);
	r = req(NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_EINVAL);
	r = req(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_EINVAL);
	r = req(NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_EINVAL);
	r = req(NBD_CMD_READ, 0, 0, 0);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_EINVAL);
	r = req(NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_EOVERFLOW);
	r = req(NBD_CMD_WRITE, 0, 0, NBD_MAX_PAYLOAD + 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_EINVAL);
	r = req(NBD_CMD_READ, 0, SIZE, 1);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_EINVAL);
	r = req(NBD_CMD_WRITE, 0, SIZE - 1, 2);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_ENOSPC);
	r = req(NBD_CMD_WRITE_ZEROES, 0, UINT64_MAX - 1, 4);  /* wraps */
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_ENOSPC);
	r = req(NBD_CMD_TRIM, 0, SIZE + 4096, 4096);
	ck_assert_uint_eq(nbd_request_validate(&r, SIZE), NBD_EINVAL);
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

int main(void)
{
	Suite *s = suite_create("nbd");
	TCase *t1 = tcase_create("parse"), *t2 = tcase_create("encode");
	SRunner *sr;
	int failed;

	tcase_add_test(t1, decode_layout);
	tcase_add_test(t1, valid_requests_pass);
	tcase_add_test(t1, bad_requests_get_errors);
	tcase_add_test(t2, errno_mapping);
	tcase_add_test(t2, encoders_bytes);
	suite_add_tcase(s, t1);
	suite_add_tcase(s, t2);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
