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

/* A fence of a volume of R replicas, W write quorum, with a change of
 * slot 2 to a node Y in phase ph; told[i]: the answer of replica i
 * (then Y's). */
static void fence_setup(struct admin_fence_result *res, unsigned r, unsigned w,
			enum qbd_change_phase ph, const int *told)
{
	memset(res, 0, sizeof *res);
	res->v.replicas = r;
	res->v.write_quorum = w;
	res->v.change.phase = ph;
	res->v.change.slot = 2;
	for (unsigned i = 0; i < r; i++)
		res->replica[res->replicas++] = (struct admin_fence_replica){
			.node = i + 1, .voter_s = true,
			.voter_s2 = ph == QBD_CHANGE_JOINT && i != 2, .err = told[i] };
	if (ph != QBD_CHANGE_NONE)
		res->replica[res->replicas++] = (struct admin_fence_replica){
			.node = 9, .voter_s2 = ph == QBD_CHANGE_JOINT, .err = told[r] };
}

START_TEST(fence_needs_r_minus_w_plus_one)
{
	struct admin_fence_result res;
	const int down = -ECONNREFUSED;

	/* R=3, W=2: two that refuse the old epoch leave it one: enough */
	fence_setup(&res, 3, 2, QBD_CHANGE_NONE, (int[]){ 0, 0, down });
	admin_fence_judge(&res);
	ck_assert(res.holds);
	ck_assert_uint_eq(res.needed, 2);
	ck_assert_uint_eq(res.refusing, 2);
	/* a newer promise or a tombstone refuses it too */
	fence_setup(&res, 3, 2, QBD_CHANGE_NONE, (int[]){ -EPERM, -EIDRM, down });
	admin_fence_judge(&res);
	ck_assert(res.holds);
	/* one is not: the old writer still reaches W=2 */
	fence_setup(&res, 3, 2, QBD_CHANGE_NONE, (int[]){ 0, down, -ETIMEDOUT });
	admin_fence_judge(&res);
	ck_assert(!res.holds);
	ck_assert_uint_eq(res.refusing, 1);
	/* W=3: one is enough; W=1: every replica must refuse */
	fence_setup(&res, 3, 3, QBD_CHANGE_NONE, (int[]){ down, 0, down });
	admin_fence_judge(&res);
	ck_assert(res.holds);
	fence_setup(&res, 3, 1, QBD_CHANGE_NONE, (int[]){ 0, 0, down });
	admin_fence_judge(&res);
	ck_assert(!res.holds);
	ck_assert_uint_eq(res.needed, 3);
}
END_TEST

START_TEST(fence_counts_voters_only)
{
	struct admin_fence_result res;
	const int down = -ECONNREFUSED;

	/* a learner counts toward no quorum of the old writer */
	fence_setup(&res, 3, 2, QBD_CHANGE_LEARNER, (int[]){ 0, down, down, 0 });
	admin_fence_judge(&res);
	ck_assert(!res.holds);
	/* joint: the old writer needs W of S and of S' = {1, 2, Y}: two of
	 * either set are enough */
	fence_setup(&res, 3, 2, QBD_CHANGE_JOINT, (int[]){ down, 0, down, 0 });
	admin_fence_judge(&res);
	ck_assert(res.holds);
	ck_assert_uint_eq(res.refusing, 2);
	/* node 3 (leaving) and Y: one of each set, not enough in either */
	fence_setup(&res, 3, 2, QBD_CHANGE_JOINT, (int[]){ down, down, 0, 0 });
	admin_fence_judge(&res);
	ck_assert(!res.holds);
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
	tcase_add_test(tc, fence_needs_r_minus_w_plus_one);
	tcase_add_test(tc, fence_counts_voters_only);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
