/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for qbd-managerd's down-out decision (replicator/manager/
 * downout.c, mgr_downout_decide): a pure function of one view of etcd. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/manager/internal.h"

/* managerd.c is the program's, not the archive's. */
void mgr_poll(struct mgr *m)
{
	(void)m;
}

#define NOW 1000000u
#define DOWN_OUT 600u

static struct qbd_node_info nodes[4];
static struct qbd_volume_info vols[3];
static struct qbd_change_request changes[1];
static struct qbd_meta_cluster_view view;
static int64_t watched;   /* what down_for answers for node 3 */

static int64_t down_for(void *arg, uint64_t id)
{
	(void)arg;
	return id == 3 ? watched : -1;
}

/* Nodes 1..4 alive but 3, whose record is an hour old; volumes on
 * (1,2,3), (1,3,4) and (1,2,4); no request. */
static void setup(void)
{
	memset(nodes, 0, sizeof nodes);
	memset(vols, 0, sizeof vols);
	memset(changes, 0, sizeof changes);
	for (int i = 0; i < 4; i++) {
		nodes[i].id = (uint64_t)i + 1;
		nodes[i].alive = true;
		nodes[i].updated = NOW - 10;
	}
	nodes[2].alive = false;
	nodes[2].updated = NOW - 3600;
	const uint64_t sets[3][3] = { { 1, 2, 3 }, { 1, 3, 4 }, { 1, 2, 4 } };
	for (int v = 0; v < 3; v++) {
		vols[v].id = 100 + (uint64_t)v;
		vols[v].replicas = 3;
		vols[v].write_quorum = 2;
		memcpy(vols[v].nodes, sets[v], sizeof sets[v]);
	}
	memset(&view, 0, sizeof view);
	view.nodes = nodes;
	view.nn = 4;
	view.vols = vols;
	view.nv = 3;
	view.changes = changes;
	view.nc = 0;
	watched = DOWN_OUT;
}

static size_t decide(struct mgr_downout *out, size_t max)
{
	return mgr_downout_decide(&view, NOW, DOWN_OUT, down_for, NULL, out, max);
}

START_TEST(out_node_gets_one_request_per_volume)
{
	struct mgr_downout out[8];

	ck_assert_uint_eq(decide(out, 8), 2);
	ck_assert_uint_eq(out[0].vol, 0);
	ck_assert_uint_eq(out[1].vol, 1);
	ck_assert_uint_eq(out[0].node, 3);
	ck_assert_uint_eq(out[1].node, 3);
}
END_TEST

START_TEST(not_watched_long_enough_is_not_out)
{
	struct mgr_downout out[8];

	/* The record is an hour old, but this leader has seen the node
	 * down for less than down-out (it may have died a minute ago: the
	 * record is republished only when its numbers change). */
	watched = DOWN_OUT - 1;
	ck_assert_uint_eq(decide(out, 8), 0);
	watched = -1;
	ck_assert_uint_eq(decide(out, 8), 0);
}
END_TEST

START_TEST(recent_record_is_not_out)
{
	struct mgr_downout out[8];

	nodes[2].updated = NOW - DOWN_OUT + 1;
	ck_assert_uint_eq(decide(out, 8), 0);
	nodes[2].updated = NOW + 5; /* a clock ahead of ours */
	ck_assert_uint_eq(decide(out, 8), 0);
	nodes[2].updated = 0;       /* an older chunk server: never judged */
	ck_assert_uint_eq(decide(out, 8), 0);
}
END_TEST

START_TEST(alive_node_is_not_out)
{
	struct mgr_downout out[8];

	nodes[2].alive = true;
	ck_assert_uint_eq(decide(out, 8), 0);
}
END_TEST

START_TEST(request_or_change_standing_waits)
{
	struct mgr_downout out[8];

	changes[0].volume_id = 100;
	view.nc = 1;
	vols[1].change.phase = QBD_CHANGE_LEARNER;
	vols[1].change.slot = 0;
	vols[1].change.node = 2;
	ck_assert_uint_eq(decide(out, 8), 0);
	view.nc = 0;
	ck_assert_uint_eq(decide(out, 8), 1);
	ck_assert_uint_eq(out[0].vol, 0);
}
END_TEST

START_TEST(off_and_room)
{
	struct mgr_downout out[1];

	ck_assert_uint_eq(mgr_downout_decide(&view, NOW, 0, down_for, NULL, out, 1), 0);
	/* More than fit: the count says so, the rest at the next round. */
	ck_assert_uint_eq(decide(out, 1), 2);
	ck_assert_uint_eq(out[0].vol, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("manager");
	TCase *tc = tcase_create("downout");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, out_node_gets_one_request_per_volume);
	tcase_add_test(tc, not_watched_long_enough_is_not_out);
	tcase_add_test(tc, recent_record_is_not_out);
	tcase_add_test(tc, alive_node_is_not_out);
	tcase_add_test(tc, request_or_change_standing_waits);
	tcase_add_test(tc, off_and_room);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
