/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the quorum core (replicator/core): open merge, write
 * targets and completion, W unreachable, fencing, stale marking, read
 * fallback and the repair decision, and reconnect merge.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "replicator/core/core.h"

static struct qbd_pg pg;

/* R=3, W=2, 8 chunks, all replicas opened with empty lists. */
static void setup3(void)
{
	ck_assert_int_eq(qbd_pg_init(&pg, 3, 2, 8), 0);
	for (unsigned r = 0; r < 3; r++)
		ck_assert_int_eq(qbd_pg_replica_open(&pg, r, NULL, 0), 0);
	ck_assert_int_eq(qbd_pg_open_done(&pg), 0);
}

static void teardown(void)
{
	qbd_pg_destroy(&pg);
}

START_TEST(init_rejects_bad_quorum)
{
	struct qbd_pg p;

	ck_assert_int_eq(qbd_pg_init(&p, 3, 4, 8), -EINVAL);
	ck_assert_int_eq(qbd_pg_init(&p, 0, 0, 8), -EINVAL);
	ck_assert_int_eq(qbd_pg_init(&p, 6, 2, 8), -EINVAL);
}
END_TEST

START_TEST(open_merge_max_and_stale)
{
	struct qbd_chunk_version a[] = { { 1, 5 }, { 2, 3 } };
	struct qbd_chunk_version b[] = { { 1, 4 }, { 2, 3 }, { 3, 1 } };

	ck_assert_int_eq(qbd_pg_init(&pg, 3, 2, 8), 0);
	ck_assert_int_eq(qbd_pg_replica_open(&pg, 0, a, 2), 0);
	ck_assert_int_eq(qbd_pg_replica_open(&pg, 1, b, 3), 0);
	ck_assert_int_eq(qbd_pg_open_done(&pg), 0);
	ck_assert_uint_eq(pg.version[1], 5);
	ck_assert_uint_eq(pg.version[2], 3);
	ck_assert_uint_eq(pg.version[3], 1);
	ck_assert(!qbd_pg_is_stale(&pg, 0, 1));
	ck_assert(qbd_pg_is_stale(&pg, 1, 1));  /* 4 < 5 */
	ck_assert(!qbd_pg_is_stale(&pg, 0, 2));
	ck_assert(!qbd_pg_is_stale(&pg, 1, 2));
	ck_assert(qbd_pg_is_stale(&pg, 0, 3));  /* missing = version 0 */
	ck_assert(!qbd_pg_is_stale(&pg, 1, 3));
	/* Replica 2 never promised: stale wherever data exists. */
	ck_assert(qbd_pg_is_stale(&pg, 2, 1));
	ck_assert(!qbd_pg_is_stale(&pg, 2, 0));
	ck_assert_uint_eq(pg.nstale[0], 1);
	ck_assert_uint_eq(pg.nstale[1], 1);
	ck_assert_uint_eq(pg.nstale[2], 3);
}
END_TEST

START_TEST(open_needs_w)
{
	ck_assert_int_eq(qbd_pg_init(&pg, 3, 2, 8), 0);
	ck_assert_int_eq(qbd_pg_replica_open(&pg, 0, NULL, 0), 0);
	ck_assert_int_eq(qbd_pg_open_done(&pg), -EIO);
}
END_TEST

START_TEST(open_rejects_bad_chunk)
{
	struct qbd_chunk_version a[] = { { 8, 1 } };

	ck_assert_int_eq(qbd_pg_init(&pg, 3, 2, 8), 0);
	ck_assert_int_eq(qbd_pg_replica_open(&pg, 0, a, 1), -EINVAL);
	ck_assert(!pg.up[0]);
}
END_TEST

START_TEST(write_quorum_success)
{
	struct qbd_pg_op op;

	ck_assert_int_eq(qbd_pg_write_begin(&pg, 2, &op), 0);
	ck_assert_uint_eq(op.targets, 7);
	ck_assert_uint_eq(op.expected, 0);
	ck_assert_uint_eq(op.new_version, 1);
	ck_assert_uint_eq(pg.version[2], 1);
	ck_assert(!qbd_pg_op_reply(&pg, &op, 0, 0));
	ck_assert(qbd_pg_op_reply(&pg, &op, 1, 0));
	ck_assert_int_eq(op.result, 0);
	ck_assert_uint_eq(pg.acked[2], 1);
	/* Late failure: completes nothing, but marks stale. */
	ck_assert(!qbd_pg_op_reply(&pg, &op, 2, -ESTALE));
	ck_assert(qbd_pg_is_stale(&pg, 2, 2));
	ck_assert_uint_eq(op.pending, 0);
	/* Next write to the chunk skips the stale replica. */
	ck_assert_int_eq(qbd_pg_write_begin(&pg, 2, &op), 0);
	ck_assert_uint_eq(op.targets, 3);
	ck_assert_uint_eq(op.expected, 1);
	ck_assert_uint_eq(op.new_version, 2);
}
END_TEST

START_TEST(write_w_unreachable)
{
	struct qbd_pg_op op;

	ck_assert_int_eq(qbd_pg_write_begin(&pg, 0, &op), 0);
	ck_assert(!qbd_pg_op_reply(&pg, &op, 0, 0));
	ck_assert(!qbd_pg_op_reply(&pg, &op, 1, -EIO));
	ck_assert(qbd_pg_op_reply(&pg, &op, 2, -ENOTCONN));
	ck_assert_int_eq(op.result, -EIO);
	ck_assert_uint_eq(pg.acked[0], 0);
	ck_assert(qbd_pg_is_stale(&pg, 1, 0));
	ck_assert(qbd_pg_is_stale(&pg, 2, 0));
	/* Only one current replica is left: refused now, V unchanged. */
	ck_assert_int_eq(qbd_pg_write_begin(&pg, 0, &op), -EIO);
	ck_assert_uint_eq(pg.version[0], 1);
}
END_TEST

START_TEST(write_fails_early_when_two_fail)
{
	struct qbd_pg_op op;

	ck_assert_int_eq(qbd_pg_write_begin(&pg, 0, &op), 0);
	ck_assert(!qbd_pg_op_reply(&pg, &op, 0, -EIO));
	ck_assert(qbd_pg_op_reply(&pg, &op, 1, -ENOSPC));
	ck_assert_int_eq(op.result, -EIO);
	ck_assert(!qbd_pg_op_reply(&pg, &op, 2, 0));
	ck_assert(!qbd_pg_is_stale(&pg, 2, 0));
}
END_TEST

START_TEST(write_refused_with_replicas_down)
{
	struct qbd_pg_op op;

	qbd_pg_replica_down(&pg, 0);
	ck_assert_int_eq(qbd_pg_write_begin(&pg, 3, &op), 0);
	ck_assert_uint_eq(op.targets, 6);
	ck_assert(qbd_pg_is_stale(&pg, 0, 3)); /* misses this write */
	qbd_pg_replica_down(&pg, 1);
	ck_assert_int_eq(qbd_pg_write_begin(&pg, 4, &op), -EIO);
	ck_assert_uint_eq(pg.version[4], 0);
	ck_assert_int_eq(qbd_pg_flush_begin(&pg, &op), -EIO);
}
END_TEST

START_TEST(fencing)
{
	struct qbd_pg_op op;
	struct qbd_pg_read rd;

	ck_assert_int_eq(qbd_pg_write_begin(&pg, 0, &op), 0);
	ck_assert(!qbd_pg_op_reply(&pg, &op, 0, 0));
	ck_assert(qbd_pg_op_reply(&pg, &op, 1, -EPERM));
	ck_assert_int_eq(op.result, -EPERM);
	ck_assert(pg.fenced);
	ck_assert_int_eq(qbd_pg_write_begin(&pg, 1, &op), -EPERM);
	ck_assert_int_eq(qbd_pg_flush_begin(&pg, &op), -EPERM);
	ck_assert_int_eq(qbd_pg_read_begin(&pg, 1, &rd), -EPERM);
}
END_TEST

START_TEST(flush_quorum)
{
	struct qbd_pg_op op;

	ck_assert_int_eq(qbd_pg_flush_begin(&pg, &op), 0);
	ck_assert(!qbd_pg_op_reply(&pg, &op, 0, -EIO));
	ck_assert(!qbd_pg_op_reply(&pg, &op, 1, 0));
	ck_assert(qbd_pg_op_reply(&pg, &op, 2, 0));
	ck_assert_int_eq(op.result, 0);
	ck_assert(!qbd_pg_is_stale(&pg, 0, 0)); /* flush errors mark nothing */
	ck_assert_int_eq(qbd_pg_flush_begin(&pg, &op), 0);
	ck_assert(!qbd_pg_op_reply(&pg, &op, 0, -EIO));
	ck_assert(qbd_pg_op_reply(&pg, &op, 1, -EIO));
	ck_assert_int_eq(op.result, -EIO);
}
END_TEST

START_TEST(read_pick_prefers_zone_then_load)
{
	pg.local[2] = true;
	ck_assert_int_eq(qbd_pg_read_pick(&pg, 0, 0), 2);
	ck_assert_int_eq(qbd_pg_read_pick(&pg, 0, 4), 0);
	pg.outstanding[0] = 3;
	ck_assert_int_eq(qbd_pg_read_pick(&pg, 0, 4), 1);
	ck_assert_int_eq(qbd_pg_read_pick(&pg, 0, 7), -EIO);
	qbd_pg_replica_down(&pg, 2);
	ck_assert_int_eq(qbd_pg_read_pick(&pg, 0, 0), 1);
}
END_TEST

START_TEST(read_skips_stale)
{
	struct qbd_pg_op op;

	ck_assert_int_eq(qbd_pg_write_begin(&pg, 5, &op), 0);
	qbd_pg_op_reply(&pg, &op, 0, -ESTALE);
	qbd_pg_op_reply(&pg, &op, 1, 0);
	qbd_pg_op_reply(&pg, &op, 2, 0);
	ck_assert_int_eq(qbd_pg_read_pick(&pg, 5, 0), 1);
	ck_assert_int_eq(qbd_pg_read_pick(&pg, 5, 2), 2);
	ck_assert_int_eq(qbd_pg_read_pick(&pg, 5, 6), -EIO);
}
END_TEST

START_TEST(read_fallback_and_repair)
{
	struct qbd_pg_read rd;

	ck_assert_int_eq(qbd_pg_read_begin(&pg, 1, &rd), 0);
	ck_assert_int_eq(rd.replica, 0);
	ck_assert_int_eq(qbd_pg_read_reply(&pg, &rd, -EBADMSG, 0), 1);
	ck_assert_int_ne(rd.replica, 0);
	ck_assert_int_eq(qbd_pg_read_reply(&pg, &rd, 0, 0), 0);
	ck_assert_uint_eq(rd.bad, 1);   /* replica 0 deserves a repair */
	ck_assert(!qbd_pg_is_stale(&pg, 0, 1));
	for (unsigned r = 0; r < 3; r++)
		ck_assert_uint_eq(pg.outstanding[r], 0);
}
END_TEST

START_TEST(read_all_fail_first_error)
{
	struct qbd_pg_read rd;

	ck_assert_int_eq(qbd_pg_read_begin(&pg, 1, &rd), 0);
	ck_assert_int_eq(qbd_pg_read_reply(&pg, &rd, -EBADMSG, 0), 1);
	ck_assert_int_eq(qbd_pg_read_reply(&pg, &rd, -EIO, 0), 1);
	ck_assert_int_eq(qbd_pg_read_reply(&pg, &rd, -ENOTCONN, 0), -EBADMSG);
	ck_assert_uint_eq(rd.tried, 7);
}
END_TEST

START_TEST(read_old_version_is_stale)
{
	struct qbd_pg_op op;
	struct qbd_pg_read rd;
	int first;

	ck_assert_int_eq(qbd_pg_write_begin(&pg, 4, &op), 0);
	qbd_pg_op_reply(&pg, &op, 0, 0);
	qbd_pg_op_reply(&pg, &op, 1, 0);
	ck_assert_uint_eq(pg.acked[4], 1);
	ck_assert_int_eq(qbd_pg_read_begin(&pg, 4, &rd), 0);
	ck_assert_uint_eq(rd.min_version, 1);
	first = rd.replica;
	/* Replica answers with version 0: it lacks the acked write. */
	ck_assert_int_eq(qbd_pg_read_reply(&pg, &rd, 0, 0), 1);
	ck_assert(qbd_pg_is_stale(&pg, (unsigned)first, 4));
	ck_assert_int_ne(rd.replica, first);
	ck_assert_int_eq(qbd_pg_read_reply(&pg, &rd, 0, 1), 0);
	ck_assert_uint_eq(rd.version, 1);
}
END_TEST

START_TEST(reconnect_merge)
{
	struct qbd_pg_op op;
	struct qbd_chunk_version l1[] = { { 2, 1 } };
	struct qbd_chunk_version l2[] = { { 2, 2 }, { 6, 9 } };

	ck_assert_int_eq(qbd_pg_write_begin(&pg, 2, &op), 0);
	qbd_pg_op_reply(&pg, &op, 0, 0);
	qbd_pg_op_reply(&pg, &op, 1, 0);
	qbd_pg_replica_down(&pg, 2);
	qbd_pg_op_reply(&pg, &op, 2, -ENOTCONN);
	ck_assert(qbd_pg_is_stale(&pg, 2, 2));
	/* Came back holding the version: current again. */
	ck_assert_int_eq(qbd_pg_replica_open(&pg, 2, l1, 1), 0);
	ck_assert(pg.up[2]);
	ck_assert(!qbd_pg_is_stale(&pg, 2, 2));
	ck_assert_uint_eq(pg.nstale[2], 0);
	/* Higher or unknown versions after open do not raise V: stale. */
	qbd_pg_replica_down(&pg, 2);
	ck_assert_int_eq(qbd_pg_replica_open(&pg, 2, l2, 2), 0);
	ck_assert_uint_eq(pg.version[2], 1);
	ck_assert_uint_eq(pg.version[6], 0);
	ck_assert(qbd_pg_is_stale(&pg, 2, 2));
	ck_assert(qbd_pg_is_stale(&pg, 2, 6));
	ck_assert(!qbd_pg_is_stale(&pg, 0, 6));
	ck_assert_uint_eq(pg.nstale[2], 2);
}
END_TEST

START_TEST(repair_op)
{
	struct qbd_pg_op op;

	qbd_pg_repair_begin(&pg, 3, 7, 1, &op);
	ck_assert_uint_eq(op.expected, 7);
	ck_assert_uint_eq(op.new_version, 7);
	ck_assert_uint_eq(op.targets, 2);
	ck_assert(qbd_pg_op_reply(&pg, &op, 1, -ESTALE));
	ck_assert_int_eq(op.result, -ESTALE);
	ck_assert(!qbd_pg_is_stale(&pg, 1, 3));
	ck_assert_uint_eq(pg.version[3], 0);
}
END_TEST

static Suite *core_suite(void)
{
	Suite *s = suite_create("core");
	TCase *tc;

	tc = tcase_create("open");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, init_rejects_bad_quorum);
	tcase_add_test(tc, open_merge_max_and_stale);
	tcase_add_test(tc, open_needs_w);
	tcase_add_test(tc, open_rejects_bad_chunk);
	suite_add_tcase(s, tc);

	tc = tcase_create("write");
	tcase_add_checked_fixture(tc, setup3, teardown);
	tcase_add_test(tc, write_quorum_success);
	tcase_add_test(tc, write_w_unreachable);
	tcase_add_test(tc, write_fails_early_when_two_fail);
	tcase_add_test(tc, write_refused_with_replicas_down);
	tcase_add_test(tc, repair_op);
	suite_add_tcase(s, tc);

	tc = tcase_create("fencing");
	tcase_add_checked_fixture(tc, setup3, teardown);
	tcase_add_test(tc, fencing);
	tcase_add_test(tc, flush_quorum);
	suite_add_tcase(s, tc);

	tc = tcase_create("read");
	tcase_add_checked_fixture(tc, setup3, teardown);
	tcase_add_test(tc, read_pick_prefers_zone_then_load);
	tcase_add_test(tc, read_skips_stale);
	tcase_add_test(tc, read_fallback_and_repair);
	tcase_add_test(tc, read_all_fail_first_error);
	tcase_add_test(tc, read_old_version_is_stale);
	suite_add_tcase(s, tc);

	tc = tcase_create("reconnect");
	tcase_add_checked_fixture(tc, setup3, teardown);
	tcase_add_test(tc, reconnect_merge);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(core_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
