/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for nbd-frontend/kernel.c: the parts that need no nbd
 * driver (device names, backend identifiers, runtime records). The
 * netlink calls themselves are tested in the kernel VM (make
 * check-kernel). */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nbd-frontend/kernel.h"

START_TEST(parse_device_forms)
{
	int i = -1;

	ck_assert_int_eq(nbd_kernel_parse_device("/dev/nbd0", &i), 0);
	ck_assert_int_eq(i, 0);
	ck_assert_int_eq(nbd_kernel_parse_device("nbd12", &i), 0);
	ck_assert_int_eq(i, 12);
	ck_assert_int_eq(nbd_kernel_parse_device("7", &i), 0);
	ck_assert_int_eq(i, 7);
	ck_assert_int_eq(nbd_kernel_parse_device("/dev/nbd", &i), -EINVAL);
	ck_assert_int_eq(nbd_kernel_parse_device("/dev/sda", &i), -EINVAL);
	ck_assert_int_eq(nbd_kernel_parse_device("/dev/nbd1p1", &i), -EINVAL);
	ck_assert_int_eq(nbd_kernel_parse_device("nbd-1", &i), -EINVAL);
	ck_assert_int_eq(nbd_kernel_parse_device("99999999999", &i), -EINVAL);
	ck_assert_int_eq(nbd_kernel_parse_device("", &i), -EINVAL);
}
END_TEST

START_TEST(backend_roundtrip)
{
	char b[256], name[128];
	uint64_t id = 0;

	nbd_kernel_backend(b, sizeof b, 0x0123456789abcdefull, "db:1");
	ck_assert_str_eq(b, "qbd:0123456789abcdef:db:1");
	ck_assert(nbd_kernel_backend_parse(b, &id, name, sizeof name));
	ck_assert_uint_eq(id, 0x0123456789abcdefull);
	ck_assert_str_eq(name, "db:1");
	/* Not ours, or malformed: never taken for a qbd device. */
	ck_assert(!nbd_kernel_backend_parse("", &id, name, sizeof name));
	ck_assert(!nbd_kernel_backend_parse("nbd-client:x", &id, name, sizeof name));
	ck_assert(!nbd_kernel_backend_parse("qbd:0123:db", &id, name, sizeof name));
	ck_assert(!nbd_kernel_backend_parse("qbd:0123456789abcdefXdb", &id, name, sizeof name));
	ck_assert(!nbd_kernel_backend_parse("qbd:0123456789abcdeg:db", &id, name, sizeof name));
	ck_assert(!nbd_kernel_backend_parse("qbd:0123456789abcdef:", &id, name, sizeof name));
}
END_TEST

START_TEST(runtime_record)
{
	char dir[] = "/tmp/qbd-test-kernel.XXXXXX", path[128];
	struct nbd_kernel_runtime rt;
	FILE *f;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(nbd_kernel_runtime_get(dir, 3, &rt), -ENOENT);
	nbd_kernel_runtime_path(path, sizeof path, dir, 3);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "{\"device\":\"/dev/nbd3\",\"volume\":\"v\",\"volume_id\":\"00000000000000ff\","
		"\"pid\":%d,\"connections\":2,\"since\":5}", (int)getpid());
	fclose(f);
	ck_assert_int_eq(nbd_kernel_runtime_get(dir, 3, &rt), 0);
	ck_assert_str_eq(rt.volume, "v");
	ck_assert_uint_eq(rt.volume_id, 0xff);
	ck_assert_int_eq(rt.pid, getpid());
	ck_assert_uint_eq(rt.connections, 2);
	/* This test program is not a qbd-nbd: never mistaken for one. */
	ck_assert(!nbd_kernel_daemon_alive(rt.pid));
	ck_assert(!nbd_kernel_daemon_alive(0));
	unlink(path);
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kernel");
	TCase *tc = tcase_create("names");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, parse_device_forms);
	tcase_add_test(tc, backend_roundtrip);
	tcase_add_test(tc, runtime_record);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
