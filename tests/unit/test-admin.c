/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the pure parts of replicator/admin/volume.c: the checks
 * of a new volume's parameters and the words of a replica's warning. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "replicator/admin/admin.h"

START_TEST(default_quorum_is_a_majority)
{
	ck_assert_uint_eq(admin_default_write_quorum(1), 1);
	ck_assert_uint_eq(admin_default_write_quorum(2), 2);
	ck_assert_uint_eq(admin_default_write_quorum(3), 2);
	ck_assert_uint_eq(admin_default_write_quorum(4), 3);
	ck_assert_uint_eq(admin_default_write_quorum(5), 3);
}
END_TEST

START_TEST(check_accepts_sound_volumes)
{
	char why[256] = "";

	ck_assert_int_eq(admin_volume_check("vol-1.a_b", 4096, 1, 0, why, sizeof why), 0);
	ck_assert_int_eq(admin_volume_check("v", 10ull << 30, 3, 2, why, sizeof why), 0);
	ck_assert_int_eq(admin_volume_check("v", 1ull << 40, 5, 5, why, sizeof why), 0);
	ck_assert_int_eq(admin_volume_check("v", 4096, 3, 1, why, sizeof why), 0);
	ck_assert_str_eq(why, "");
}
END_TEST

START_TEST(check_refuses_with_the_reason)
{
	char why[256];

	ck_assert_int_eq(admin_volume_check("a/b", 4096, 3, 0, why, sizeof why), -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "invalid volume name 'a/b'"));
	ck_assert_int_eq(admin_volume_check("", 4096, 3, 0, why, sizeof why), -EINVAL);
	ck_assert_int_eq(admin_volume_check(NULL, 4096, 3, 0, why, sizeof why), -EINVAL);
	ck_assert_int_eq(admin_volume_check("v", 0, 3, 0, why, sizeof why), -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "multiple of 4096"));
	ck_assert_int_eq(admin_volume_check("v", 4097, 3, 0, why, sizeof why), -EINVAL);
	ck_assert_int_eq(admin_volume_check("v", 4096, 0, 0, why, sizeof why), -EINVAL);
	ck_assert_str_eq(why, "replicas must be 1..5");
	ck_assert_int_eq(admin_volume_check("v", 4096, QBD_MAX_REPLICAS + 1, 0, why, sizeof why),
			 -EINVAL);
	ck_assert_int_eq(admin_volume_check("v", 4096, 3, 4, why, sizeof why), -EINVAL);
	ck_assert_str_eq(why, "write quorum must be 1..3");
	ck_assert_int_eq(admin_volume_check("v", 4096, 1, 2, why, sizeof why), -EINVAL);
	/* a name at the limit, and one past it */
	char name[QBD_NAME_MAX + 1];
	memset(name, 'a', QBD_NAME_MAX - 1);
	name[QBD_NAME_MAX - 1] = '\0';
	ck_assert_int_eq(admin_volume_check(name, 4096, 3, 0, why, sizeof why), 0);
	name[QBD_NAME_MAX - 1] = 'a';
	name[QBD_NAME_MAX] = '\0';
	ck_assert_int_eq(admin_volume_check(name, 4096, 3, 0, why, sizeof why), -EINVAL);
}
END_TEST

START_TEST(check_truncates_why)
{
	char why[8];

	ck_assert_int_eq(admin_volume_check("v", 4096, 9, 0, why, sizeof why), -EINVAL);
	ck_assert_uint_eq(strlen(why), sizeof why - 1);
	/* no buffer at all */
	ck_assert_int_eq(admin_volume_check("v", 4096, 9, 0, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(replica_warning_words)
{
	struct admin_replica_result r = { .node = 0xb1, .err = -ENOENT, .no_record = true };
	char buf[512];

	ck_assert_str_eq(admin_replica_warning(&r, buf, sizeof buf),
			 "replica on node 00000000000000b1 not cleaned: no node record in etcd "
			 "(that chunk server reclaims the space itself once it is back: its "
			 "reclaim-grace after it finds the volume gone)");
	r.no_record = false;
	r.err = -ECONNREFUSED;
	ck_assert_ptr_nonnull(strstr(admin_replica_warning(&r, buf, sizeof buf),
				     strerror(ECONNREFUSED)));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("admin");
	TCase *tc = tcase_create("volume");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, default_quorum_is_a_majority);
	tcase_add_test(tc, check_accepts_sound_volumes);
	tcase_add_test(tc, check_refuses_with_the_reason);
	tcase_add_test(tc, check_truncates_why);
	tcase_add_test(tc, replica_warning_words);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
