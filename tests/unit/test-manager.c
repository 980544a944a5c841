/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for qbd-managerd: its down-out decision (replicator/manager/
 * downout.c, mgr_downout_decide, a pure function of one view of etcd),
 * and what it asks of etcd (replicator/meta/manager.c) against a real
 * etcd the test starts on loopback (skipped, saying so, when etcd is not
 * installed): the leader's key created only if absent, the view read
 * whole or not at all, the down-out request written only while the node
 * is down and the writer leads. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
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


/* ---- against a real etcd ---- */

static char etcd_dir[128], etcd_url[64];
static pid_t etcd_pid = -1;

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &l) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Unchecked fixture: etcd on loopback, dying with this process. No
 * etcd: etcd_url stays "". */
static void etcd_setup(void)
{
	const char *tmp = getenv("TMPDIR");
	char cu[64], pu[64], cluster[96], log[192];
	int cp = free_port(), pp = free_port();

	snprintf(etcd_dir, sizeof etcd_dir, "%s/qbd-test-manager-XXXXXX", tmp ? tmp : "/tmp");
	if (cp < 0 || pp < 0 || !mkdtemp(etcd_dir)) {
		etcd_dir[0] = '\0';
		return;
	}
	snprintf(cu, sizeof cu, "http://127.0.0.1:%d", cp);
	snprintf(pu, sizeof pu, "http://127.0.0.1:%d", pp);
	snprintf(cluster, sizeof cluster, "qbd-test-manager=%s", pu);
	snprintf(log, sizeof log, "%s/etcd.log", etcd_dir);
	etcd_pid = fork();
	if (etcd_pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp("etcd", "etcd", "--name", "qbd-test-manager", "--data-dir", etcd_dir,
		       "--listen-client-urls", cu, "--advertise-client-urls", cu,
		       "--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		       "--initial-cluster", cluster, (char *)NULL);
		_exit(127);
	}
	if (etcd_pid < 0)
		return;
	qbd_log_set_level(QBD_LOG_ERROR);
	for (int i = 0; i < 200; i++) {
		struct qbd_meta *m;
		uint64_t id;
		int st, r;

		if (waitpid(etcd_pid, &st, WNOHANG) == etcd_pid) {
			etcd_pid = -1;
			break;
		}
		if (qbd_meta_open(cu, &m) == 0) {
			r = qbd_meta_cluster_id(m, true, &id);
			qbd_meta_close(m);
			if (r == 0) {
				snprintf(etcd_url, sizeof etcd_url, "%s", cu);
				break;
			}
		}
		usleep(100 * 1000);
	}
	qbd_log_set_level(QBD_LOG_WARN);
}

static void etcd_teardown(void)
{
	if (etcd_pid > 0) {
		kill(etcd_pid, SIGTERM);
		waitpid(etcd_pid, NULL, 0);
		etcd_pid = -1;
	}
	if (etcd_dir[0])
		nftw(etcd_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static struct qbd_meta *etcd_meta(const char *test)
{
	struct qbd_meta *m;

	if (!etcd_url[0]) {
		fprintf(stderr, "test-manager: %s: SKIPPED: no etcd to run against\n", test);
		return NULL;
	}
	ck_assert_int_eq(qbd_meta_open(etcd_url, &m), 0);
	return m;
}

static struct qbd_manager_leader candidate(struct qbd_meta *m, int pid)
{
	struct qbd_manager_leader c = { .pid = pid, .since = 1765000000 };

	strcpy(c.host, "h");
	ck_assert_int_eq(qbd_meta_lease_grant(m, 30, &c.lease), 0);
	return c;
}

START_TEST(etcd_one_leader)
{
	struct qbd_meta *m = etcd_meta("etcd_one_leader");
	struct qbd_manager_leader a, b, got;

	if (!m)
		return;
	a = candidate(m, 1);
	b = candidate(m, 2);
	ck_assert_int_eq(qbd_meta_manager_get(m, &got), -ENOENT);
	ck_assert_int_eq(qbd_meta_manager_campaign(m, &a), 0);
	ck_assert_uint_ne(a.create_revision, 0);
	/* The second candidate finds it held, and changes nothing. */
	ck_assert_int_eq(qbd_meta_manager_campaign(m, &b), -EBUSY);
	ck_assert_int_eq(qbd_meta_manager_get(m, &got), 0);
	ck_assert_int_eq(got.pid, 1);
	ck_assert_int_eq(got.lease, a.lease);
	ck_assert_uint_eq(got.create_revision, a.create_revision);
	/* Campaigning again under the same lease: still ours. */
	ck_assert_int_eq(qbd_meta_manager_campaign(m, &a), 0);
	/* The leader's lease goes: the key with it, and b may lead. */
	ck_assert_int_eq(qbd_meta_lease_revoke(m, a.lease), 0);
	ck_assert_int_eq(qbd_meta_manager_get(m, &got), -ENOENT);
	ck_assert_int_eq(qbd_meta_manager_campaign(m, &b), 0);
	ck_assert_int_eq(qbd_meta_manager_get(m, &got), 0);
	ck_assert_int_eq(got.pid, 2);
	ck_assert_int_eq(qbd_meta_lease_revoke(m, b.lease), 0);
	qbd_meta_close(m);
}
END_TEST

/* Raw puts and deletes (etcdctl), for keys the manager only reads. */
static void put(const char *key, const char *value)
{
	char cmd[1024];

	snprintf(cmd, sizeof cmd, "ETCDCTL_API=3 etcdctl --endpoints=%s put %s '%s' >/dev/null",
		 etcd_url, key, value);
	ck_assert_int_eq(system(cmd), 0);
}

static void del(const char *key)
{
	char cmd[512];

	snprintf(cmd, sizeof cmd, "ETCDCTL_API=3 etcdctl --endpoints=%s del %s >/dev/null",
		 etcd_url, key);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(etcd_view_whole_or_nothing)
{
	struct qbd_meta *m = etcd_meta("etcd_view_whole_or_nothing");
	struct qbd_node_info n = { .id = 0xa1, .capacity = 1 << 30, .updated = 1765000000 };
	struct qbd_volume_info v = { .id = 0x77, .size = 1 << 20, .chunk_size = 1 << 20,
				     .replicas = 1, .write_quorum = 1, .nodes = { 0xa1 } };
	struct qbd_change_request req = { .volume_id = 0x77, .kind = QBD_CHANGE_KIND_REPLACE,
					  .from = 0xa1, .reason = QBD_REASON_MOVE,
					  .created = 1765000000 };
	struct qbd_meta_cluster_view cv;
	int64_t lease;

	if (!m)
		return;
	strcpy(n.zone, "a");
	strcpy(n.addr, "127.0.0.1:1");
	strcpy(v.name, "viewvol");
	ck_assert_int_eq(qbd_meta_lease_grant(m, 30, &lease), 0);
	ck_assert_int_eq(qbd_meta_node_register(m, &n, lease), 0);
	n.id = 0xa2;
	ck_assert_int_eq(qbd_meta_node_put(m, &n), 0);
	ck_assert_int_eq(qbd_meta_node_state_set(m, 0xa2, QBD_NODE_DRAINING), 0);
	ck_assert_int_eq(qbd_meta_volume_create(m, &v), 0);
	ck_assert_int_eq(qbd_meta_change_put(m, &req), 0);
	put("/qbd/attachments/0000000000000077", "{}");

	ck_assert_int_eq(qbd_meta_cluster_view(m, &cv), 0);
	ck_assert_uint_ne(cv.revision, 0);
	ck_assert_uint_eq(cv.nn, 2);
	for (size_t i = 0; i < cv.nn; i++) {
		bool a1 = cv.nodes[i].id == 0xa1;

		ck_assert(a1 || cv.nodes[i].id == 0xa2);
		ck_assert_int_eq(cv.nodes[i].alive, a1);
		ck_assert_int_eq(cv.nodes[i].state, a1 ? QBD_NODE_IN : QBD_NODE_DRAINING);
		ck_assert_uint_eq(cv.nodes[i].updated, 1765000000);
	}
	ck_assert_uint_eq(cv.nv, 1);
	ck_assert_str_eq(cv.vols[0].name, "viewvol");
	ck_assert_uint_ne(cv.vols[0].mod_revision, 0);
	ck_assert_uint_eq(cv.nc, 1);
	ck_assert_uint_eq(cv.changes[0].from, 0xa1);
	ck_assert_uint_eq(cv.na, 1);
	ck_assert_uint_eq(cv.attached[0], 0x77);
	qbd_meta_cluster_view_free(&cv);

	/* One entry that cannot be read, in any range: no view at all. */
	const char *junk[][2] = {
		{ "/qbd/nodes/00000000000000a3", "not json" },
		{ "/qbd/alive/zz", "1" },
		{ "/qbd/node-state/00000000000000a1", "sleepy" },
		{ "/qbd/volumes/broken", "{\"name\":\"broken\"}" },
		{ "/qbd/changes/0000000000000078", "{\"kind\":\"grow\"}" },
		{ "/qbd/attachments/x", "{}" },
	};
	/* (meta says what it could not read: the lines below are expected) */
	for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
		put(junk[i][0], junk[i][1]);
		ck_assert_msg(qbd_meta_cluster_view(m, &cv) == -EPROTO,
			      "a view with %s = %s", junk[i][0], junk[i][1]);
		ck_assert_ptr_null(cv.nodes);
		del(junk[i][0]);
	}
	ck_assert_int_eq(qbd_meta_cluster_view(m, &cv), 0);
	qbd_meta_cluster_view_free(&cv);
	ck_assert_int_eq(qbd_meta_lease_revoke(m, lease), 0);
	qbd_meta_close(m);
}
END_TEST

START_TEST(etcd_downout_request_fenced)
{
	struct qbd_meta *m = etcd_meta("etcd_downout_request_fenced");
	struct qbd_manager_leader me, other;
	struct qbd_change_request req = { .volume_id = 0x99, .kind = QBD_CHANGE_KIND_REPLACE,
					  .from = 0xb1, .reason = QBD_REASON_DOWN_OUT,
					  .created = 1765000000 };
	struct qbd_change_request got;
	if (!m)
		return;
	me = candidate(m, 10);
	other = candidate(m, 11);
	/* Not the leader (nobody is): nothing written. */
	ck_assert_int_eq(qbd_meta_manager_request(m, &req, me.lease), -EAGAIN);
	ck_assert_int_eq(qbd_meta_manager_campaign(m, &me), 0);
	/* The node is alive again: nothing written. */
	put("/qbd/alive/00000000000000b1", "1");
	ck_assert_int_eq(qbd_meta_manager_request(m, &req, me.lease), -EAGAIN);
	ck_assert_int_eq(qbd_meta_change_get(m, 0x99, &got), -ENOENT);
	del("/qbd/alive/00000000000000b1");
	/* Another lease than the leader's: nothing written. */
	ck_assert_int_eq(qbd_meta_manager_request(m, &req, other.lease), -EAGAIN);
	ck_assert_int_eq(qbd_meta_change_get(m, 0x99, &got), -ENOENT);
	/* Down, and we lead: written once. */
	ck_assert_int_eq(qbd_meta_manager_request(m, &req, me.lease), 0);
	ck_assert_uint_ne(req.mod_revision, 0);
	ck_assert_int_eq(qbd_meta_change_get(m, 0x99, &got), 0);
	ck_assert_int_eq(got.reason, QBD_REASON_DOWN_OUT);
	ck_assert_uint_eq(got.to, 0);
	ck_assert_int_eq(qbd_meta_manager_request(m, &req, me.lease), -EEXIST);
	ck_assert_int_eq(qbd_meta_change_delete(m, &got), 0);
	ck_assert_int_eq(qbd_meta_lease_revoke(m, me.lease), 0);
	ck_assert_int_eq(qbd_meta_lease_revoke(m, other.lease), 0);
	qbd_meta_close(m);
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
	tc = tcase_create("etcd");
	tcase_add_unchecked_fixture(tc, etcd_setup, etcd_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, etcd_one_leader);
	tcase_add_test(tc, etcd_view_whole_or_nothing);
	tcase_add_test(tc, etcd_downout_request_fenced);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
