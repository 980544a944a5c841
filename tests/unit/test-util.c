/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for common/util.c. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

START_TEST(parse_size_units)
{
	uint64_t v;

	ck_assert_int_eq(qbd_parse_size("4096", &v), 0);
	ck_assert_uint_eq(v, 4096);
	ck_assert_int_eq(qbd_parse_size("64K", &v), 0);
	ck_assert_uint_eq(v, 65536);
	ck_assert_int_eq(qbd_parse_size("1G", &v), 0);
	ck_assert_uint_eq(v, 1ull << 30);
	ck_assert_int_eq(qbd_parse_size("2GiB", &v), 0);
	ck_assert_uint_eq(v, 2ull << 30);
	ck_assert_int_eq(qbd_parse_size("1T", &v), 0);
	ck_assert_uint_eq(v, 1ull << 40);
}
END_TEST

START_TEST(parse_size_rejects_garbage)
{
	uint64_t v;

	ck_assert_int_eq(qbd_parse_size("", &v), -EINVAL);
	ck_assert_int_eq(qbd_parse_size("G", &v), -EINVAL);
	ck_assert_int_eq(qbd_parse_size("-1", &v), -EINVAL);
	ck_assert_int_eq(qbd_parse_size("1X", &v), -EINVAL);
	ck_assert_int_eq(qbd_parse_size("1Gx", &v), -EINVAL);
	ck_assert_int_eq(qbd_parse_size("99999999999999T", &v), -ERANGE);
}
END_TEST

START_TEST(parse_hostport_forms)
{
	char host[64];
	uint16_t port;

	ck_assert_int_eq(qbd_parse_hostport("127.0.0.1:7800", host, sizeof host, &port), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_uint_eq(port, 7800);
	ck_assert_int_eq(qbd_parse_hostport("[::1]:80", host, sizeof host, &port), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_int_eq(qbd_parse_hostport("nohost", host, sizeof host, &port), -EINVAL);
	ck_assert_int_eq(qbd_parse_hostport("h:70000", host, sizeof host, &port), -EINVAL);
	ck_assert_int_eq(qbd_parse_hostport(":80", host, sizeof host, &port), -EINVAL);
}
END_TEST

START_TEST(id_roundtrip)
{
	char buf[17];
	uint64_t v;

	ck_assert_str_eq(qbd_id_str(0xdeadbeef01ull, buf), "000000deadbeef01");
	ck_assert_int_eq(qbd_id_parse(buf, &v), 0);
	ck_assert_uint_eq(v, 0xdeadbeef01ull);
	ck_assert_int_eq(qbd_id_parse("xyz", &v), -EINVAL);
	ck_assert_int_eq(qbd_id_parse("00000000000000000", &v), -EINVAL);
	ck_assert_uint_ne(qbd_random_u64(), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("parse");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, parse_size_units);
	tcase_add_test(tc, parse_size_rejects_garbage);
	tcase_add_test(tc, parse_hostport_forms);
	tcase_add_test(tc, id_roundtrip);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
