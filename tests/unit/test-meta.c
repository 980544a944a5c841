/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the metadata module: placement (of a volume, and of a
 * replacement replica), base64, names, records (node, volume with its
 * configuration, attachment, change request), the etcd endpoint list,
 * the order and rules of failover between endpoints (against fake etcd
 * members: threads answering HTTP on loopback, and a closed port), and
 * the transactions of membership changes against a real etcd the test
 * starts on loopback (skipped, saying so, when etcd is not installed):
 * the configuration's compare-and-swap, attach comparing the record it
 * read, change requests and node states. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/meta/internal.h"

static struct qbd_node_info node(uint64_t id, const char *zone, uint64_t used, bool alive)
{
	struct qbd_node_info n = { .id = id, .used = used, .alive = alive,
				   .capacity = 1 << 30, .chunk_size = 1 << 20 };
	strcpy(n.zone, zone);
	strcpy(n.addr, "127.0.0.1:7800");
	return n;
}

START_TEST(place_distinct_zones_least_used)
{
	struct qbd_node_info n[] = {
		node(1, "a", 500, true), node(2, "a", 100, true),
		node(3, "b", 50, true), node(4, "c", 10, true), node(5, "d", 900, true),
	};
	uint64_t out[3];
	unsigned z;

	ck_assert_int_eq(qbd_meta_place(n, 5, 3, out, &z), 0);
	ck_assert_uint_eq(z, 4);
	/* least used zones first: c (10), b (50), a (node 2, 100) */
	ck_assert_uint_eq(out[0], 4);
	ck_assert_uint_eq(out[1], 3);
	ck_assert_uint_eq(out[2], 2);
}
END_TEST

START_TEST(place_skips_dead_and_reports_zones)
{
	struct qbd_node_info n[] = {
		node(1, "a", 0, true), node(2, "b", 0, false), node(3, "b", 0, false),
		node(4, "c", 0, true),
	};
	uint64_t out[3];
	unsigned z;

	ck_assert_int_eq(qbd_meta_place(n, 4, 3, out, &z), -ENOSPC);
	ck_assert_uint_eq(z, 2);
	ck_assert_int_eq(qbd_meta_place(n, 4, 2, out, &z), 0);
	ck_assert(out[0] != 2 && out[0] != 3 && out[1] != 2 && out[1] != 3);
	ck_assert_uint_ne(out[0], out[1]);
}
END_TEST

START_TEST(place_ties_lowest_id)
{
	/* equal use everywhere: lowest id per zone, then lowest ids overall */
	struct qbd_node_info n[] = {
		node(9, "a", 7, true), node(3, "a", 7, true), node(8, "b", 7, true),
		node(5, "c", 7, true), node(6, "c", 7, true), node(2, "d", 8, true),
	};
	uint64_t out[3];
	unsigned z;

	ck_assert_int_eq(qbd_meta_place(n, 6, 3, out, &z), 0);
	ck_assert_uint_eq(z, 4);
	ck_assert_uint_eq(out[0], 3);
	ck_assert_uint_eq(out[1], 5);
	ck_assert_uint_eq(out[2], 8);
	/* five replicas cannot fit four zones; nothing alive means zero zones */
	uint64_t out5[5];
	ck_assert_int_eq(qbd_meta_place(n, 6, 5, out5, &z), -ENOSPC);
	ck_assert_uint_eq(z, 4);
	for (size_t i = 0; i < 6; i++)
		n[i].alive = false;
	ck_assert_int_eq(qbd_meta_place(n, 6, 1, out, &z), -ENOSPC);
	ck_assert_uint_eq(z, 0);
}
END_TEST

START_TEST(place_skips_out_of_service)
{
	/* a draining or removed node is never placed on, even the least used */
	struct qbd_node_info n[] = {
		node(1, "a", 0, true), node(2, "a", 50, true), node(3, "b", 0, true),
		node(4, "b", 60, true), node(5, "c", 70, true),
	};
	uint64_t out[3];
	unsigned z;

	n[0].state = QBD_NODE_DRAINING;
	n[2].state = QBD_NODE_REMOVED;
	ck_assert_int_eq(qbd_meta_place(n, 5, 3, out, &z), 0);
	ck_assert_uint_eq(out[0], 2);
	ck_assert_uint_eq(out[1], 4);
	ck_assert_uint_eq(out[2], 5);
	n[4].state = QBD_NODE_DRAINING;
	ck_assert_int_eq(qbd_meta_place(n, 5, 3, out, &z), -ENOSPC);
	ck_assert_uint_eq(z, 2);
}
END_TEST

/* A volume of three replicas on nodes 0xa1 (a), 0xb1 (b), 0xc1 (c). */
static struct qbd_volume_info vol3(void)
{
	struct qbd_volume_info v = { .name = "v", .id = 7, .size = 1 << 30,
				     .chunk_size = 1 << 20, .replicas = 3, .write_quorum = 2,
				     .nodes = { 0xa1, 0xb1, 0xc1 }, .cfg = 1 };
	return v;
}

START_TEST(replace_prefers_same_zone)
{
	/* X = 0xb1 (zone b, dead). Zone b has 0xb2 (busy) and 0xb3: the
	 * least used of b wins over the emptier zone d. */
	struct qbd_node_info n[] = {
		node(0xa1, "a", 0, true), node(0xb1, "b", 0, false),
		node(0xb2, "b", 900, true), node(0xb3, "b", 500, true),
		node(0xc1, "c", 0, true), node(0xd1, "d", 0, true),
	};
	struct qbd_volume_info v = vol3();
	uint64_t y = 0;
	char why[512];

	ck_assert_int_eq(qbd_meta_place_replacement(n, 6, &v, 1, &y, why, sizeof why), 0);
	ck_assert_uint_eq(y, 0xb3);
	/* b3 drained and b2 full: zone b has no room, d (unused) is next */
	n[3].state = QBD_NODE_DRAINING;
	n[2].used = n[2].capacity;
	ck_assert_int_eq(qbd_meta_place_replacement(n, 6, &v, 1, &y, why, sizeof why), 0);
	ck_assert_uint_eq(y, 0xd1);
}
END_TEST

START_TEST(replace_unused_zone_least_used)
{
	/* X = 0xa1, alone in zone a: zones d and e are unused; e's best is
	 * less used than d's; zones b and c hold replicas and are never
	 * used, however empty. */
	struct qbd_node_info n[] = {
		node(0xa1, "a", 0, true), node(0xb1, "b", 0, true), node(0xb2, "b", 0, true),
		node(0xc1, "c", 0, true), node(0xd1, "d", 300, true), node(0xd2, "d", 200, true),
		node(0xe1, "e", 100, true), node(0xe2, "e", 100, false),
	};
	struct qbd_volume_info v = vol3();
	uint64_t y = 0;
	char why[512];

	ck_assert_int_eq(qbd_meta_place_replacement(n, 8, &v, 0, &y, why, sizeof why), 0);
	ck_assert_uint_eq(y, 0xe1);
	/* the node joining through a standing change counts as a member:
	 * its zone (e) is taken, and it is never picked itself */
	v.change = (struct qbd_volume_change){ .phase = QBD_CHANGE_LEARNER, .slot = 2,
					       .node = 0xe1, .reason = QBD_REASON_MOVE };
	ck_assert_int_eq(qbd_meta_place_replacement(n, 8, &v, 0, &y, why, sizeof why), 0);
	ck_assert_uint_eq(y, 0xd2);
	/* a slot out of range */
	ck_assert_int_eq(qbd_meta_place_replacement(n, 8, &v, 3, &y, why, sizeof why), -EINVAL);
}
END_TEST

START_TEST(replace_nospc_names_zones)
{
	/* X = 0xb1. Zone b: 0xb2 draining, 0xb3 down. Zone d: 0xd1 removed,
	 * 0xd2 without a free slot. a and c hold replicas. */
	struct qbd_node_info n[] = {
		node(0xa1, "a", 0, true), node(0xb1, "b", 0, false),
		node(0xb2, "b", 0, true), node(0xb3, "b", 0, false),
		node(0xc1, "c", 0, true), node(0xd1, "d", 0, true), node(0xd2, "d", 0, true),
	};
	struct qbd_volume_info v = vol3();
	uint64_t y = 0;
	char why[512], small[40];

	n[2].state = QBD_NODE_DRAINING;
	n[5].state = QBD_NODE_REMOVED;
	n[6].slots = 10;
	n[6].free_slots = 0;
	ck_assert_int_eq(qbd_meta_place_replacement(n, 7, &v, 1, &y, why, sizeof why), -ENOSPC);
	ck_assert_msg(strcmp(why, "no node can take replica 1 (node 00000000000000b1, zone b); "
			     "zone b: 00000000000000b1 the node replaced, 00000000000000b2 "
			     "draining, 00000000000000b3 down; zone a: holds replica 0; "
			     "zone c: holds replica 2; zone d: 00000000000000d1 removed, "
			     "00000000000000d2 full; add a node in zone b or in a zone the "
			     "volume does not use") == 0, "why: %s", why);
	/* truncated to the buffer, terminated */
	ck_assert_int_eq(qbd_meta_place_replacement(n, 7, &v, 1, &y, small, sizeof small),
			 -ENOSPC);
	ck_assert_uint_eq(strlen(small), sizeof small - 1);
	/* X without a record: its zone is unknown, no zone is "its" */
	ck_assert_int_eq(qbd_meta_place_replacement(n + 2, 5, &v, 1, &y, why, sizeof why),
			 -ENOSPC);
	ck_assert_ptr_nonnull(strstr(why, "(node 00000000000000b1, no record)"));
}
END_TEST

START_TEST(replace_check_operator_choice)
{
	struct qbd_node_info n[] = {
		node(0xa1, "a", 0, true), node(0xb1, "b", 0, true), node(0xb2, "b", 0, true),
		node(0xc1, "c", 0, true), node(0xc2, "c", 0, true), node(0xd1, "d", 9, true),
		node(0xd2, "d", 0, false),
	};
	struct qbd_volume_info v = vol3();
	char why[256];

	/* X's own zone, or an unused one */
	ck_assert_int_eq(qbd_meta_place_check(n, 7, &v, 1, 0xb2, why, sizeof why), 0);
	ck_assert_int_eq(qbd_meta_place_check(n, 7, &v, 1, 0xd1, why, sizeof why), 0);
	/* a zone another replica uses */
	ck_assert_int_eq(qbd_meta_place_check(n, 7, &v, 1, 0xc2, why, sizeof why), -EINVAL);
	ck_assert_str_eq(why, "node 00000000000000c2: zone c holds replica 2 already");
	/* a member, a dead node, an unknown one, a draining one */
	ck_assert_int_eq(qbd_meta_place_check(n, 7, &v, 1, 0xa1, why, sizeof why), -EINVAL);
	ck_assert_str_eq(why, "node 00000000000000a1: holds replica 0");
	ck_assert_int_eq(qbd_meta_place_check(n, 7, &v, 1, 0xd2, why, sizeof why), -EINVAL);
	ck_assert_str_eq(why, "node 00000000000000d2: down");
	ck_assert_int_eq(qbd_meta_place_check(n, 7, &v, 1, 0xe1, why, sizeof why), -EINVAL);
	ck_assert_str_eq(why, "node 00000000000000e1: no such node");
	n[5].state = QBD_NODE_DRAINING;
	ck_assert_int_eq(qbd_meta_place_check(n, 7, &v, 1, 0xd1, why, sizeof why), -EINVAL);
	ck_assert_str_eq(why, "node 00000000000000d1: draining");
}
END_TEST

START_TEST(base64_roundtrip)
{
	const char *cases[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar", "/qbd/nodes/" };
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char *e = meta_b64_encode(cases[i], strlen(cases[i]));
		size_t l;
		char *d = meta_b64_decode(e, &l);
		ck_assert_ptr_nonnull(d);
		ck_assert_uint_eq(l, strlen(cases[i]));
		ck_assert_mem_eq(d, cases[i], l);
		free(e);
		free(d);
	}
	char *e = meta_b64_encode("foobar", 6);
	ck_assert_str_eq(e, "Zm9vYmFy");
	free(e);
	size_t l;
	ck_assert_ptr_null(meta_b64_decode("abc", &l));
	ck_assert_ptr_null(meta_b64_decode("a=bc", &l));
	ck_assert_ptr_null(meta_b64_decode("ab!c", &l));
	/* binary bytes, including NUL and 0xff */
	const unsigned char bin[] = { 0, 0xff, 0x10, 0x80, 0 };
	e = meta_b64_encode(bin, sizeof bin);
	ck_assert_str_eq(e, "AP8QgAA=");
	char *d = meta_b64_decode(e, &l);
	ck_assert_uint_eq(l, sizeof bin);
	ck_assert_mem_eq(d, bin, sizeof bin);
	free(d);
	free(e);
}
END_TEST

START_TEST(volume_names)
{
	ck_assert(qbd_meta_volume_name_ok("db1"));
	ck_assert(qbd_meta_volume_name_ok("pg-data_2.x"));
	ck_assert(!qbd_meta_volume_name_ok(""));
	ck_assert(!qbd_meta_volume_name_ok("a/b"));
	ck_assert(!qbd_meta_volume_name_ok("-x"));
	ck_assert(!qbd_meta_volume_name_ok("a b"));
	char longname[80];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	ck_assert(!qbd_meta_volume_name_ok(longname));
}
END_TEST

START_TEST(records_roundtrip)
{
	struct qbd_node_info n = node(0xabcdef0123456789ull, "eu-1a", 4096, false), n2;
	struct qbd_volume_info v = { .name = "vol", .id = 42, .size = 1ull << 30,
				     .chunk_size = 1 << 20, .replicas = 3, .write_quorum = 2,
				     .nodes = { 1, 2, 0xffffffffffffffffull } }, v2;
	char *j;

	n.held = 8192;
	n.slots = 100;
	n.free_slots = 99;
	n.seq = 5;
	n.scrub.bytes = 1ull << 40;
	n.scrub.bad_blocks = 3;
	n.io.data_reads = 17;
	j = meta_node_to_json(&n);
	ck_assert_int_eq(meta_node_from_json(j, &n2), 0);
	ck_assert_uint_eq(n2.id, n.id);
	ck_assert_str_eq(n2.zone, "eu-1a");
	ck_assert_uint_eq(n2.used, 4096);
	ck_assert_uint_eq(n2.held, 8192);
	ck_assert_uint_eq(n2.slots, 100);
	ck_assert_uint_eq(n2.free_slots, 99);
	ck_assert_uint_eq(n2.seq, 5);
	ck_assert_uint_eq(n2.scrub.bytes, 1ull << 40);
	ck_assert_uint_eq(n2.scrub.bad_blocks, 3);
	ck_assert_uint_eq(n2.io.data_reads, 17);
	free(j);
	j = meta_volume_to_json(&v);
	ck_assert_int_eq(meta_volume_from_json(j, &v2), 0);
	ck_assert_str_eq(v2.name, "vol");
	ck_assert_uint_eq(v2.nodes[2], 0xffffffffffffffffull);
	ck_assert_uint_eq(v2.write_quorum, 2);
	free(j);
	/* malformed records are refused */
	ck_assert_int_eq(meta_volume_from_json("{\"name\":\"x\"}", &v2), -EPROTO);
	ck_assert_int_eq(meta_volume_from_json("not json", &v2), -EPROTO);
	ck_assert_int_eq(meta_volume_from_json(
		"{\"name\":\"x\",\"id\":\"1\",\"size\":4096,\"chunk_size\":1048576,"
		"\"replicas\":3,\"write_quorum\":4,\"nodes\":[\"1\",\"2\",\"3\"]}", &v2), -EPROTO);
	ck_assert_int_eq(meta_node_from_json("{\"id\":\"zz\"}", &n2), -EPROTO);
	/* numbers given as strings (as etcd renders int64) are accepted */
	ck_assert_int_eq(meta_node_from_json(
		"{\"id\":\"a1\",\"addr\":\"h:1\",\"zone\":\"z\",\"capacity\":\"8589934592\","
		"\"used\":\"4096\",\"chunk_size\":1048576}", &n2), 0);
	ck_assert_uint_eq(n2.id, 0xa1);
	ck_assert_uint_eq(n2.capacity, 8589934592ull);
	ck_assert_uint_eq(n2.used, 4096);
	ck_assert(!n2.alive);
	/* a node record without an address is refused */
	ck_assert_int_eq(meta_node_from_json(
		"{\"id\":\"a1\",\"zone\":\"z\",\"capacity\":1}", &n2), -EPROTO);
}
END_TEST

START_TEST(attachment_roundtrip)
{
	struct qbd_attachment a = { .volume_id = 0x0123456789abcdefull, .epoch = 7,
				    .pid = 4242, .since = 1763830000 }, b;
	char *json;

	strcpy(a.volume, "vol-1");
	strcpy(a.host, "host \"q\"");
	strcpy(a.zone, "z");
	json = meta_attachment_to_json(&a);
	ck_assert_ptr_nonnull(json);
	/* the id is the 16-digit hex form, as in the key */
	ck_assert_ptr_nonnull(strstr(json, "\"volume_id\":\"0123456789abcdef\""));
	ck_assert_int_eq(meta_attachment_from_json(json, &b), 0);
	free(json);
	ck_assert_str_eq(b.volume, "vol-1");
	ck_assert_uint_eq(b.volume_id, a.volume_id);
	ck_assert_uint_eq(b.epoch, 7);
	ck_assert_str_eq(b.host, "host \"q\"");
	ck_assert_str_eq(b.zone, "z");
	ck_assert_int_eq(b.pid, 4242);
	ck_assert_uint_eq(b.since, 1763830000);
}
END_TEST

START_TEST(attachment_rejects)
{
	struct qbd_attachment b;

	/* hand-written records (etcdctl) with string numbers and no host are fine */
	ck_assert_int_eq(meta_attachment_from_json(
		"{\"volume\":\"v\",\"volume_id\":\"a1\",\"epoch\":\"12\",\"pid\":3}", &b), 0);
	ck_assert_uint_eq(b.epoch, 12);
	ck_assert_uint_eq(b.volume_id, 0xa1);
	ck_assert_str_eq(b.host, "");
	ck_assert_int_eq(b.pid, 3);
	/* no epoch, bad id, bad name, not JSON, not an object */
	ck_assert_int_eq(meta_attachment_from_json(
		"{\"volume\":\"v\",\"volume_id\":\"a1\"}", &b), -EPROTO);
	ck_assert_int_eq(meta_attachment_from_json(
		"{\"volume\":\"v\",\"volume_id\":\"zz\",\"epoch\":1}", &b), -EPROTO);
	ck_assert_int_eq(meta_attachment_from_json(
		"{\"volume\":\"a/b\",\"volume_id\":\"a1\",\"epoch\":1}", &b), -EPROTO);
	ck_assert_int_eq(meta_attachment_from_json("{\"volume\":", &b), -EPROTO);
	ck_assert_int_eq(meta_attachment_from_json("[1,2]", &b), -EPROTO);
}
END_TEST

START_TEST(volume_config_roundtrip)
{
	struct qbd_volume_info v = { .name = "vol", .id = 42, .size = 1ull << 30,
				     .chunk_size = 1 << 20, .replicas = 3, .write_quorum = 2,
				     .nodes = { 1, 2, 3 }, .cfg = 7,
				     .change = { .phase = QBD_CHANGE_JOINT, .slot = 1, .node = 9,
						 .reason = QBD_REASON_DOWN_OUT,
						 .started = 1765000000 } }, v2;
	char *j = meta_volume_to_json(&v);

	ck_assert_ptr_nonnull(strstr(j, "\"cfg\":7"));
	ck_assert_ptr_nonnull(strstr(j, "\"change\":{\"phase\":\"joint\",\"slot\":1,"
				     "\"node\":\"0000000000000009\",\"reason\":\"down-out\","
				     "\"started\":1765000000}"));
	ck_assert_int_eq(meta_volume_from_json(j, &v2), 0);
	free(j);
	ck_assert_uint_eq(v2.cfg, 7);
	ck_assert_int_eq(v2.change.phase, QBD_CHANGE_JOINT);
	ck_assert_uint_eq(v2.change.slot, 1);
	ck_assert_uint_eq(v2.change.node, 9);
	ck_assert_int_eq(v2.change.reason, QBD_REASON_DOWN_OUT);
	ck_assert_uint_eq(v2.change.started, 1765000000);
	/* no change: no "change" member; cfg 0 is written as 1 */
	v.change.phase = QBD_CHANGE_NONE;
	v.cfg = 0;
	j = meta_volume_to_json(&v);
	ck_assert_ptr_null(strstr(j, "change"));
	ck_assert_int_eq(meta_volume_from_json(j, &v2), 0);
	free(j);
	ck_assert_uint_eq(v2.cfg, 1);
	ck_assert_int_eq(v2.change.phase, QBD_CHANGE_NONE);
}
END_TEST

#define VREC_HEAD "{\"name\":\"x\",\"id\":\"1\",\"size\":4096,\"chunk_size\":1048576," \
	"\"replicas\":3,\"write_quorum\":2,\"nodes\":[\"1\",\"2\",\"3\"]"

START_TEST(volume_config_old_and_bad)
{
	struct qbd_volume_info v;

	/* a record written before membership changes: cfg 1, no change */
	ck_assert_int_eq(meta_volume_from_json(VREC_HEAD "}", &v), 0);
	ck_assert_uint_eq(v.cfg, 1);
	ck_assert_int_eq(v.change.phase, QBD_CHANGE_NONE);
	ck_assert_int_eq(meta_volume_from_json(VREC_HEAD ",\"cfg\":\"12\"}", &v), 0);
	ck_assert_uint_eq(v.cfg, 12);
	ck_assert_int_eq(meta_volume_from_json(VREC_HEAD ",\"change\":{\"phase\":\"learner\","
		"\"slot\":2,\"node\":\"4\",\"reason\":\"drain\",\"started\":5}}", &v), 0);
	ck_assert_int_eq(v.change.phase, QBD_CHANGE_LEARNER);
	/* refused: cfg 0, a slot past R, Y already a member, an unknown
	 * phase or reason, a change that is not an object */
	ck_assert_int_eq(meta_volume_from_json(VREC_HEAD ",\"cfg\":0}", &v), -EPROTO);
	ck_assert_int_eq(meta_volume_from_json(VREC_HEAD ",\"change\":{\"phase\":\"learner\","
		"\"slot\":3,\"node\":\"4\",\"reason\":\"drain\"}}", &v), -EPROTO);
	ck_assert_int_eq(meta_volume_from_json(VREC_HEAD ",\"change\":{\"phase\":\"joint\","
		"\"slot\":0,\"node\":\"2\",\"reason\":\"drain\"}}", &v), -EPROTO);
	ck_assert_int_eq(meta_volume_from_json(VREC_HEAD ",\"change\":{\"phase\":\"none\","
		"\"slot\":0,\"node\":\"4\",\"reason\":\"drain\"}}", &v), -EPROTO);
	ck_assert_int_eq(meta_volume_from_json(VREC_HEAD ",\"change\":{\"phase\":\"joint\","
		"\"slot\":0,\"node\":\"4\",\"reason\":\"whim\"}}", &v), -EPROTO);
	ck_assert_int_eq(meta_volume_from_json(VREC_HEAD ",\"change\":\"joint\"}", &v), -EPROTO);
}
END_TEST

START_TEST(change_request_roundtrip)
{
	struct qbd_change_request c = { .volume_id = 0x77, .kind = QBD_CHANGE_KIND_REPLACE,
					.from = 0xb1, .to = 0xb2, .reason = QBD_REASON_REMOVE,
					.created = 1765000000 }, d;
	char *j = meta_change_request_to_json(&c);

	ck_assert_str_eq(j, "{\"kind\":\"replace\",\"from\":\"00000000000000b1\",\"to\":"
			 "\"00000000000000b2\",\"reason\":\"remove\",\"created\":1765000000}");
	ck_assert_int_eq(meta_change_request_from_json(j, 0x77, &d), 0);
	free(j);
	ck_assert_uint_eq(d.volume_id, 0x77);
	ck_assert_uint_eq(d.from, 0xb1);
	ck_assert_uint_eq(d.to, 0xb2);
	ck_assert_int_eq(d.reason, QBD_REASON_REMOVE);
	ck_assert_uint_eq(d.created, 1765000000);
	/* "to" empty: placement picks */
	c.to = 0;
	j = meta_change_request_to_json(&c);
	ck_assert_ptr_nonnull(strstr(j, "\"to\":\"\""));
	ck_assert_int_eq(meta_change_request_from_json(j, 0x77, &d), 0);
	ck_assert_uint_eq(d.to, 0);
	free(j);
	/* refused: another kind, to == from, no reason, no from */
	ck_assert_int_eq(meta_change_request_from_json("{\"kind\":\"add\",\"from\":\"1\","
		"\"to\":\"\",\"reason\":\"move\"}", 1, &d), -EPROTO);
	ck_assert_int_eq(meta_change_request_from_json("{\"kind\":\"replace\",\"from\":\"1\","
		"\"to\":\"1\",\"reason\":\"move\"}", 1, &d), -EPROTO);
	ck_assert_int_eq(meta_change_request_from_json("{\"kind\":\"replace\",\"from\":\"1\","
		"\"to\":\"\"}", 1, &d), -EPROTO);
	ck_assert_int_eq(meta_change_request_from_json("{\"kind\":\"replace\","
		"\"to\":\"\",\"reason\":\"move\"}", 1, &d), -EPROTO);
	/* the words */
	enum qbd_node_state st;
	ck_assert_int_eq(qbd_meta_node_state_parse("draining", &st), 0);
	ck_assert_int_eq(st, QBD_NODE_DRAINING);
	ck_assert_int_eq(qbd_meta_node_state_parse("gone", &st), -EINVAL);
	ck_assert_str_eq(qbd_meta_node_state_name(QBD_NODE_IN), "in");
	ck_assert_str_eq(qbd_meta_change_reason_name(QBD_REASON_DOWN_OUT), "down-out");
}
END_TEST

/* ---- the endpoint list ---- */

START_TEST(endpoints_parse_list)
{
	char **u, why[256];
	size_t n;

	ck_assert_int_eq(meta_endpoints_parse("http://10.0.0.1:2379", &u, &n, why,
					      sizeof why), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(u[0], "http://10.0.0.1:2379");
	meta_endpoints_free(u, n);
	/* blanks around commas (qbd.conf), trailing slashes, https */
	ck_assert_int_eq(meta_endpoints_parse(" http://a:2379/ ,\thttps://b:2379,http://c:2379//",
					      &u, &n, why, sizeof why), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(u[0], "http://a:2379");
	ck_assert_str_eq(u[1], "https://b:2379");
	ck_assert_str_eq(u[2], "http://c:2379");
	meta_endpoints_free(u, n);
	ck_assert_int_eq(qbd_meta_endpoints_check("http://a:1,http://b:1", why, sizeof why), 2);
}
END_TEST

START_TEST(endpoints_parse_rejects)
{
	static const struct {
		const char *list, *why;
	} bad[] = {
		{ "", "endpoint 1 is empty" },
		{ "http://a:1,,http://b:1", "endpoint 2 is empty" },
		{ "http://a:1,", "endpoint 2 is empty" },
		{ "a:2379", "endpoint 1 'a:2379' is not an http:// or https:// URL" },
		{ "http://a:1,ftp://b:1", "endpoint 2 'ftp://b:1'" },
		{ "http://", "not an http" },
		{ "http://a b:1", "not an http" },
		{ "http://a:1,http://a:1/", "endpoint 2 'http://a:1' is listed twice" },
	};
	char **u, why[256], many[1024] = "";

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		size_t n = 99;
		why[0] = '\0';
		ck_assert_msg(meta_endpoints_parse(bad[i].list, &u, &n, why, sizeof why) == -EINVAL,
			      "'%s' accepted", bad[i].list);
		ck_assert_ptr_null(u);
		ck_assert_uint_eq(n, 0);
		ck_assert_msg(strstr(why, bad[i].why), "'%s': '%s'", bad[i].list, why);
		ck_assert_int_eq(qbd_meta_endpoints_check(bad[i].list, why, sizeof why), -EINVAL);
	}
	for (int i = 0; i <= QBD_META_MAX_ENDPOINTS; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://h%d:1",
			 i ? "," : "", i);
	ck_assert_int_eq(qbd_meta_endpoints_check(many, why, sizeof why), -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "more than"));
	size_t n0;
	ck_assert_int_eq(meta_endpoints_parse(NULL, &u, &n0, why, sizeof why), -EINVAL);
}
END_TEST

/* ---- failover, against fake etcd members ---- */

/* A fake member: answers every POST to a path with that path's status
 * and body, counting requests per path; or, hang, accepts nothing (the
 * connection is made by the kernel, no answer ever comes). */
struct fake {
	int fd, port;
	bool hang;
	pthread_t th;
	int stop;
	int range_code, txn_code;
	const char *range_body, *txn_body;
	int ranges, txns;            /* requests seen, read after a call */
	char last_txn[4096];         /* the body of the last txn request */
};

static const char range_ok[] =
	"{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"eA==\",\"value\":\"Mw==\","
	"\"mod_revision\":\"4\"}],\"count\":\"1\"}";
static const char txn_ok[] = "{\"header\":{\"revision\":\"6\"},\"succeeded\":true}";
static const char timed_out[] =
	"{\"error\":\"etcdserver: request timed out\",\"code\":14}";
static const char no_leader[] = "{\"error\":\"etcdserver: no leader\",\"code\":14}";

static void fake_serve(struct fake *f, int c)
{
	char req[8192];
	size_t got = 0;
	char *hdr_end = NULL;
	long clen = 0;

	while (got < sizeof req - 1) {
		ssize_t r = read(c, req + got, sizeof req - 1 - got);
		if (r <= 0)
			return;
		got += (size_t)r;
		req[got] = '\0';
		if (!hdr_end && (hdr_end = strstr(req, "\r\n\r\n"))) {
			char *cl = strcasestr(req, "Content-Length:");
			clen = cl ? strtol(cl + 15, NULL, 10) : 0;
		}
		if (hdr_end && got >= (size_t)(hdr_end + 4 - req) + (size_t)clen)
			break;
	}
	bool txn = strstr(req, "/v3/kv/txn") != NULL;
	int code = txn ? f->txn_code : f->range_code;
	const char *body = txn ? f->txn_body : f->range_body;
	char out[1024];
	int n = snprintf(out, sizeof out, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", code,
			 strlen(body), body);

	if (txn && hdr_end)
		snprintf(f->last_txn, sizeof f->last_txn, "%s", hdr_end + 4);
	__atomic_add_fetch(txn ? &f->txns : &f->ranges, 1, __ATOMIC_SEQ_CST);
	if (write(c, out, (size_t)n) != n)
		return;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	while (!__atomic_load_n(&f->stop, __ATOMIC_SEQ_CST)) {
		struct pollfd p = { .fd = f->fd, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		int c = accept(f->fd, NULL, NULL);
		if (c < 0)
			continue;
		fake_serve(f, c);
		close(c);
	}
	return NULL;
}

static void fake_start(struct fake *f)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof a;

	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(f->fd, 0);
	ck_assert_int_eq(bind(f->fd, (struct sockaddr *)&a, sizeof a), 0);
	ck_assert_int_eq(getsockname(f->fd, (struct sockaddr *)&a, &l), 0);
	f->port = ntohs(a.sin_port);
	ck_assert_int_eq(listen(f->fd, 16), 0);
	if (!f->hang)
		ck_assert_int_eq(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	__atomic_store_n(&f->stop, 1, __ATOMIC_SEQ_CST);
	if (!f->hang)
		pthread_join(f->th, NULL);
	close(f->fd);
}

/* A loopback port nobody listens on: connecting is refused. */
static int dead_port(void)
{
	struct fake f = { .hang = true };

	fake_start(&f);
	fake_stop(&f);
	return f.port;
}

static int reads(struct fake *f)
{
	return __atomic_load_n(&f->ranges, __ATOMIC_SEQ_CST);
}

static int txns(struct fake *f)
{
	return __atomic_load_n(&f->txns, __ATOMIC_SEQ_CST);
}

static struct qbd_meta *open_list(const char *fmt, int p1, int p2)
{
	char list[256];
	struct qbd_meta *m;

	snprintf(list, sizeof list, fmt, p1, p2);
	ck_assert_int_eq(qbd_meta_open(list, &m), 0);
	return m;
}

START_TEST(failover_past_refused_and_sticks)
{
	struct fake b = { .range_code = 200, .range_body = range_ok };
	struct qbd_meta *m;
	uint64_t e;

	fake_start(&b);
	m = open_list("http://127.0.0.1:%d,http://127.0.0.1:%d", dead_port(), b.port);
	ck_assert_uint_eq(meta_endpoint_first(m), 0);
	ck_assert_int_eq(qbd_meta_epoch_get(m, 1, &e), 0);
	ck_assert_uint_eq(e, 3);
	ck_assert_int_eq(reads(&b), 1);
	/* the endpoint that answered is tried first from now on */
	ck_assert_uint_eq(meta_endpoint_first(m), 1);
	ck_assert_int_eq(qbd_meta_epoch_get(m, 1, &e), 0);
	ck_assert_int_eq(reads(&b), 2);
	ck_assert_uint_eq(meta_endpoint_first(m), 1);
	qbd_meta_close(m);
	fake_stop(&b);
}
END_TEST

START_TEST(failover_all_refused)
{
	struct qbd_meta *m = open_list("http://127.0.0.1:%d,http://127.0.0.1:%d", dead_port(),
				       dead_port());
	uint64_t e;

	ck_assert_int_eq(qbd_meta_epoch_get(m, 1, &e), -ECONNREFUSED);
	qbd_meta_close(m);
}
END_TEST

START_TEST(failover_unavailable_read_resent)
{
	/* A member that cannot serve (no quorum): a read goes on to the next */
	struct fake a = { .range_code = 503, .range_body = timed_out };
	struct fake b = { .range_code = 200, .range_body = range_ok };
	struct qbd_meta *m;
	uint64_t e;

	fake_start(&a);
	fake_start(&b);
	m = open_list("http://127.0.0.1:%d,http://127.0.0.1:%d", a.port, b.port);
	ck_assert_int_eq(qbd_meta_epoch_get(m, 1, &e), 0);
	ck_assert_int_eq(reads(&a), 1);
	ck_assert_int_eq(reads(&b), 1);
	ck_assert_uint_eq(meta_endpoint_first(m), 1);
	qbd_meta_close(m);
	fake_stop(&a);
	fake_stop(&b);
}
END_TEST

START_TEST(failover_hung_member_within_budget)
{
	/* A member that accepts and never answers takes half the budget;
	 * the next one still answers within the call's 5 s. */
	struct fake a = { .hang = true };
	struct fake b = { .range_code = 200, .range_body = range_ok };
	struct qbd_meta *m;
	uint64_t e, t;

	fake_start(&a);
	fake_start(&b);
	m = open_list("http://127.0.0.1:%d,http://127.0.0.1:%d", a.port, b.port);
	t = qbd_now_ns();
	ck_assert_int_eq(qbd_meta_epoch_get(m, 1, &e), 0);
	t = qbd_now_ns() - t;
	ck_assert_int_eq(reads(&b), 1);
	ck_assert_msg(t >= 2000000000ull && t < 5000000000ull, "took %llu ns",
		      (unsigned long long)t);
	qbd_meta_close(m);
	fake_stop(&a);
	fake_stop(&b);
}
END_TEST

static struct qbd_attachment attachment(void)
{
	struct qbd_attachment a = { .volume_id = 1, .pid = 1 };

	strcpy(a.volume, "v");
	return a;
}

START_TEST(failover_attach_not_resent)
{
	/* The epoch transaction timed out on a member: it may have been
	 * applied there, so it is not resent to the next (attachment.c,
	 * qbd_meta_attach) and the attach fails. */
	struct fake a = { .range_code = 200, .range_body = range_ok,
			  .txn_code = 503, .txn_body = timed_out };
	struct fake b = { .range_code = 200, .range_body = range_ok,
			  .txn_code = 200, .txn_body = txn_ok };
	struct qbd_attachment att = attachment();
	struct qbd_meta *m;

	fake_start(&a);
	fake_start(&b);
	m = open_list("http://127.0.0.1:%d,http://127.0.0.1:%d", a.port, b.port);
	ck_assert_int_eq(qbd_meta_attach(m, &att, 7, false, NULL), -ETIMEDOUT);
	ck_assert_int_eq(txns(&a), 1);
	ck_assert_int_eq(txns(&b), 0);
	qbd_meta_close(m);
	fake_stop(&a);
	fake_stop(&b);
}
END_TEST

START_TEST(failover_attach_no_leader_resent)
{
	/* "no leader": the member refused before handling it; the next
	 * member may have it. */
	struct fake a = { .range_code = 200, .range_body = range_ok,
			  .txn_code = 503, .txn_body = no_leader };
	struct fake b = { .range_code = 200, .range_body = range_ok,
			  .txn_code = 200, .txn_body = txn_ok };
	struct qbd_attachment att = attachment();
	struct qbd_meta *m;

	fake_start(&a);
	fake_start(&b);
	m = open_list("http://127.0.0.1:%d,http://127.0.0.1:%d", a.port, b.port);
	ck_assert_int_eq(qbd_meta_attach(m, &att, 7, false, NULL), 0);
	ck_assert_uint_eq(att.epoch, 4);
	ck_assert_int_eq(txns(&a), 1);
	ck_assert_int_eq(txns(&b), 1);
	qbd_meta_close(m);
	fake_stop(&a);
	fake_stop(&b);
}
END_TEST

START_TEST(failover_epoch_bump_resent)
{
	/* A compare-guarded bump is resent: applied twice it cannot be */
	struct fake a = { .range_code = 200, .range_body = range_ok,
			  .txn_code = 503, .txn_body = timed_out };
	struct fake b = { .range_code = 200, .range_body = range_ok,
			  .txn_code = 200, .txn_body = txn_ok };
	struct qbd_meta *m;
	uint64_t e;

	fake_start(&a);
	fake_start(&b);
	m = open_list("http://127.0.0.1:%d,http://127.0.0.1:%d", a.port, b.port);
	ck_assert_int_eq(qbd_meta_epoch_bump(m, 1, &e), 0);
	ck_assert_uint_eq(e, 4);
	ck_assert_int_eq(txns(&a), 1);
	ck_assert_int_eq(txns(&b), 1);
	qbd_meta_close(m);
	fake_stop(&a);
	fake_stop(&b);
}
END_TEST


/* ---- against a real etcd ---- */

static char etcd_dir[128], etcd_url[64];
static pid_t etcd_pid = -1;

static int etcd_free_port(void)
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

static int etcd_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Unchecked fixture (the runner's process, once for the TCase): etcd on
 * two free loopback ports with its data in a fresh directory, dying with
 * this process; waits until it answers. No etcd: etcd_url stays "". */
static void etcd_setup(void)
{
	const char *tmp = getenv("TMPDIR");
	char cu[64], pu[64], cluster[96], log[192];
	int cp = etcd_free_port(), pp = etcd_free_port();

	snprintf(etcd_dir, sizeof etcd_dir, "%s/qbd-test-meta-XXXXXX", tmp ? tmp : "/tmp");
	if (cp < 0 || pp < 0 || !mkdtemp(etcd_dir)) {
		fprintf(stderr, "test-meta: no port or directory for etcd\n");
		etcd_dir[0] = '\0';
		return;
	}
	snprintf(cu, sizeof cu, "http://127.0.0.1:%d", cp);
	snprintf(pu, sizeof pu, "http://127.0.0.1:%d", pp);
	snprintf(cluster, sizeof cluster, "qbd-test-meta=%s", pu);
	snprintf(log, sizeof log, "%s/etcd.log", etcd_dir);
	etcd_pid = fork();
	if (etcd_pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp("etcd", "etcd", "--name", "qbd-test-meta", "--data-dir", etcd_dir,
		       "--listen-client-urls", cu, "--advertise-client-urls", cu,
		       "--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		       "--initial-cluster", cluster, (char *)NULL);
		_exit(127);
	}
	if (etcd_pid < 0)
		return;
	/* Up when it answers a read; the failed attempts meanwhile are
	 * expected, not worth a warning each. */
	qbd_log_set_level(QBD_LOG_ERROR);
	for (int i = 0; i < 200; i++) {
		struct qbd_meta *m;
		uint64_t id;
		int st, r;

		if (waitpid(etcd_pid, &st, WNOHANG) == etcd_pid) {
			fprintf(stderr, "test-meta: etcd exited (%s%d): %s\n",
				WIFEXITED(st) ? "status " : "signal ",
				WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
				WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "not installed" : log);
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
	if (!etcd_url[0] && etcd_pid > 0)
		fprintf(stderr, "test-meta: etcd did not answer within 20 s (%s)\n", log);
}

static void etcd_teardown(void)
{
	if (etcd_pid > 0) {
		kill(etcd_pid, SIGTERM);
		waitpid(etcd_pid, NULL, 0);
		etcd_pid = -1;
	}
	if (etcd_dir[0])
		nftw(etcd_dir, etcd_rm, 8, FTW_DEPTH | FTW_PHYS);
}

/* The test's etcd, or NULL after saying the test is skipped. */
static struct qbd_meta *etcd_meta(const char *test)
{
	struct qbd_meta *m;

	if (!etcd_url[0]) {
		fprintf(stderr, "test-meta: %s: SKIPPED: no etcd to run against\n", test);
		return NULL;
	}
	ck_assert_int_eq(qbd_meta_open(etcd_url, &m), 0);
	return m;
}

/* Create volume name (three nodes, a b c) and read it back. */
static void etcd_volume(struct qbd_meta *m, const char *name, struct qbd_volume_info *v)
{
	struct qbd_volume_info c = vol3();

	snprintf(c.name, sizeof c.name, "%s", name);
	c.id = qbd_random_u64();
	ck_assert_int_eq(qbd_meta_volume_create(m, &c), 0);
	ck_assert_int_eq(qbd_meta_volume_get(m, name, v), 0);
	ck_assert_uint_ne(v->mod_revision, 0);
	ck_assert_uint_eq(v->cfg, 1);
	ck_assert_int_eq(v->change.phase, QBD_CHANGE_NONE);
}

START_TEST(etcd_volume_cas)
{
	struct qbd_meta *m = etcd_meta("etcd_volume_cas");
	struct qbd_volume_info read, next, now, bad;
	uint64_t e;

	if (!m)
		return;
	etcd_volume(m, "cas", &read);
	/* a change starts: the put's revision comes back, and is the record's */
	next = read;
	next.change = (struct qbd_volume_change){ .phase = QBD_CHANGE_LEARNER, .slot = 1,
						  .node = 0xd1, .reason = QBD_REASON_REMOVE,
						  .started = 1765000000 };
	ck_assert_int_eq(qbd_meta_volume_cas(m, &read, &next, 0), 0);
	ck_assert_uint_gt(next.mod_revision, read.mod_revision);
	ck_assert_int_eq(qbd_meta_volume_get(m, "cas", &now), 0);
	ck_assert_uint_eq(now.mod_revision, next.mod_revision);
	ck_assert_int_eq(now.change.phase, QBD_CHANGE_LEARNER);
	ck_assert_uint_eq(now.change.node, 0xd1);
	/* a lost race: a second change from the same old read is refused,
	 * and the record is the first one's */
	bad = read;
	bad.size *= 2;
	ck_assert_int_eq(qbd_meta_volume_cas(m, &read, &bad, 0), -EAGAIN);
	ck_assert_int_eq(qbd_meta_volume_get(m, "cas", &now), 0);
	ck_assert_uint_eq(now.size, read.size);
	ck_assert_uint_eq(now.mod_revision, next.mod_revision);
	/* with the writer's epoch: applies while it stands */
	ck_assert_int_eq(qbd_meta_epoch_bump(m, read.id, &e), 0);
	ck_assert_uint_eq(e, 1);
	read = now;
	next = now;
	next.change.phase = QBD_CHANGE_JOINT;
	ck_assert_int_eq(qbd_meta_volume_cas(m, &read, &next, 1), 0);
	/* a newer writer took epoch 2: the writer of epoch 1 is fenced,
	 * even with the record as it stands */
	ck_assert_int_eq(qbd_meta_epoch_bump(m, read.id, &e), 0);
	read = next;
	next.nodes[1] = 0xd1;
	next.cfg = 2;
	next.change = (struct qbd_volume_change){ .phase = QBD_CHANGE_NONE };
	ck_assert_int_eq(qbd_meta_volume_cas(m, &read, &next, 1), -ESTALE);
	/* both moved: fenced first (a fenced caller must not re-read and retry) */
	bad = read;
	bad.mod_revision--;
	ck_assert_int_eq(qbd_meta_volume_cas(m, &bad, &next, 1), -ESTALE);
	ck_assert_int_eq(qbd_meta_volume_get(m, "cas", &now), 0);
	ck_assert_int_eq(now.change.phase, QBD_CHANGE_JOINT);
	ck_assert_uint_eq(now.nodes[1], 0xb1);
	/* the new writer completes it */
	ck_assert_int_eq(qbd_meta_volume_cas(m, &read, &next, 2), 0);
	ck_assert_int_eq(qbd_meta_volume_get(m, "cas", &now), 0);
	ck_assert_uint_eq(now.cfg, 2);
	ck_assert_uint_eq(now.nodes[1], 0xd1);
	ck_assert_int_eq(now.change.phase, QBD_CHANGE_NONE);
	/* refused before sending: another name, a record not read from
	 * etcd, a record that would not read back */
	bad = now;
	snprintf(bad.name, sizeof bad.name, "other");
	ck_assert_int_eq(qbd_meta_volume_cas(m, &now, &bad, 2), -EINVAL);
	bad = now;
	bad.mod_revision = 0;
	ck_assert_int_eq(qbd_meta_volume_cas(m, &bad, &now, 2), -EINVAL);
	bad = now;
	bad.write_quorum = 4;
	ck_assert_int_eq(qbd_meta_volume_cas(m, &now, &bad, 2), -EINVAL);
	/* gone */
	ck_assert_int_eq(qbd_meta_volume_delete(m, &now), 0);
	next = now;
	ck_assert_int_eq(qbd_meta_volume_cas(m, &now, &next, 0), -ENOENT);
	qbd_meta_close(m);
}
END_TEST

START_TEST(etcd_attach_compares_config)
{
	struct qbd_meta *m = etcd_meta("etcd_attach_compares_config");
	struct qbd_volume_info read, next, now;
	struct qbd_attachment a = { .pid = 1 }, holder, other;
	int64_t lease;
	uint64_t e;

	if (!m)
		return;
	etcd_volume(m, "att", &read);
	ck_assert_int_eq(qbd_meta_lease_grant(m, 60, &lease), 0);
	snprintf(a.volume, sizeof a.volume, "att");
	a.volume_id = read.id;
	a.volume_revision = read.mod_revision;
	/* the configuration changes after the writer read it */
	next = read;
	next.nodes[2] = 0xd1;
	next.cfg = 2;
	ck_assert_int_eq(qbd_meta_volume_cas(m, &read, &next, 0), 0);
	/* its attach is refused, and takes nothing: no epoch, no record */
	ck_assert_int_eq(qbd_meta_attach(m, &a, lease, false, &holder), -ESTALE);
	ck_assert_int_eq(qbd_meta_epoch_get(m, read.id, &e), 0);
	ck_assert_uint_eq(e, 0);
	ck_assert_int_eq(qbd_meta_attachment_get(m, read.id, &holder), -ENOENT);
	/* forced too */
	ck_assert_int_eq(qbd_meta_attach(m, &a, lease, true, &holder), -ESTALE);
	ck_assert_int_eq(qbd_meta_epoch_get(m, read.id, &e), 0);
	ck_assert_uint_eq(e, 0);
	/* read again, it attaches */
	ck_assert_int_eq(qbd_meta_volume_get(m, "att", &now), 0);
	a.volume_revision = now.mod_revision;
	ck_assert_int_eq(qbd_meta_attach(m, &a, lease, false, &holder), 0);
	ck_assert_uint_eq(a.epoch, 1);
	/* another writer with an old configuration meets the holder first */
	other = a;
	other.volume_revision = read.mod_revision;
	ck_assert_int_eq(qbd_meta_attach(m, &other, lease, false, &holder), -EBUSY);
	ck_assert_uint_eq(holder.epoch, 1);
	/* and forced, the configuration it read */
	ck_assert_int_eq(qbd_meta_attach(m, &other, lease, true, &holder), -ESTALE);
	ck_assert_int_eq(qbd_meta_epoch_get(m, read.id, &e), 0);
	ck_assert_uint_eq(e, 1);
	/* a caller that compares nothing (volume_revision 0) is as before */
	ck_assert_int_eq(qbd_meta_detach(m, &a), 0);
	a.volume_revision = 0;
	ck_assert_int_eq(qbd_meta_attach(m, &a, lease, false, &holder), 0);
	ck_assert_uint_eq(a.epoch, 2);
	ck_assert_int_eq(qbd_meta_detach(m, &a), 0);
	ck_assert_int_eq(qbd_meta_lease_revoke(m, lease), 0);
	qbd_meta_close(m);
}
END_TEST

START_TEST(etcd_change_requests)
{
	struct qbd_meta *m = etcd_meta("etcd_change_requests");
	struct qbd_change_request c = { .volume_id = 0x2222, .kind = QBD_CHANGE_KIND_REPLACE,
					.from = 0xb1, .to = 0xb2, .reason = QBD_REASON_DRAIN,
					.created = 1765000000 }, d, old, *list;
	size_t n;

	if (!m)
		return;
	ck_assert_int_eq(qbd_meta_change_get(m, 0x2222, &d), -ENOENT);
	ck_assert_int_eq(qbd_meta_change_put(m, &c), 0);
	ck_assert_uint_ne(c.mod_revision, 0);
	/* at most one per volume */
	d = c;
	d.to = 0;
	ck_assert_int_eq(qbd_meta_change_put(m, &d), -EEXIST);
	ck_assert_int_eq(qbd_meta_change_get(m, 0x2222, &d), 0);
	ck_assert_uint_eq(d.mod_revision, c.mod_revision);
	ck_assert_uint_eq(d.from, 0xb1);
	ck_assert_uint_eq(d.to, 0xb2);
	ck_assert_int_eq(d.reason, QBD_REASON_DRAIN);
	ck_assert_uint_eq(d.created, 1765000000);
	/* another volume's, "to" left to placement; listed by volume id */
	d = c;
	d.volume_id = 0x1111;
	d.to = 0;
	d.reason = QBD_REASON_MOVE;
	ck_assert_int_eq(qbd_meta_change_put(m, &d), 0);
	ck_assert_int_eq(qbd_meta_change_list(m, &list, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(list[0].volume_id, 0x1111);
	ck_assert_uint_eq(list[0].to, 0);
	ck_assert_uint_eq(list[1].volume_id, 0x2222);
	ck_assert_uint_eq(list[1].mod_revision, c.mod_revision);
	free(list);
	/* delete compares what was read: a request replaced since stays */
	old = c;
	ck_assert_int_eq(qbd_meta_change_delete(m, &c), 0);
	ck_assert_int_eq(qbd_meta_change_put(m, &c), 0);
	ck_assert_int_eq(qbd_meta_change_delete(m, &old), -EAGAIN);
	ck_assert_int_eq(qbd_meta_change_get(m, 0x2222, &d), 0);
	ck_assert_int_eq(qbd_meta_change_delete(m, &d), 0);
	ck_assert_int_eq(qbd_meta_change_delete(m, &d), -ENOENT);
	/* invalid requests are not written */
	d = c;
	d.to = d.from;
	ck_assert_int_eq(qbd_meta_change_put(m, &d), -EINVAL);
	d = c;
	d.reason = QBD_REASON_NONE;
	ck_assert_int_eq(qbd_meta_change_put(m, &d), -EINVAL);
	/* a malformed one is skipped by list, refused by get */
	ck_assert_int_eq(meta_put(m, "/qbd/changes/0000000000003333", "{\"kind\":1}", 0), 0);
	ck_assert_int_eq(qbd_meta_change_get(m, 0x3333, &d), -EPROTO);
	ck_assert_int_eq(qbd_meta_change_list(m, &list, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(list[0].volume_id, 0x1111);
	free(list);
	qbd_meta_close(m);
}
END_TEST

START_TEST(etcd_node_states)
{
	struct qbd_meta *m = etcd_meta("etcd_node_states");
	struct qbd_node_info a = node(0x5a1, "a", 0, true), b = node(0x5b1, "b", 0, true);
	struct qbd_node_info *nodes, got;
	struct qbd_node_state_entry *st;
	enum qbd_node_state s;
	size_t n;

	if (!m)
		return;
	ck_assert_int_eq(qbd_meta_node_put(m, &a), 0);
	ck_assert_int_eq(qbd_meta_node_put(m, &b), 0);
	ck_assert_int_eq(qbd_meta_node_state_get(m, 0x5a1, &s), 0);
	ck_assert_int_eq(s, QBD_NODE_IN);
	ck_assert_int_eq(qbd_meta_node_state_set(m, 0x5a1, QBD_NODE_DRAINING), 0);
	ck_assert_int_eq(qbd_meta_node_state_set(m, 0x5b1, QBD_NODE_REMOVED), 0);
	/* a node with no record may have a state (removed, record deleted) */
	ck_assert_int_eq(qbd_meta_node_state_set(m, 0x5c1, QBD_NODE_REMOVED), 0);
	ck_assert_int_eq(qbd_meta_node_state_get(m, 0x5a1, &s), 0);
	ck_assert_int_eq(s, QBD_NODE_DRAINING);
	ck_assert_int_eq(qbd_meta_node_state_list(m, &st, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(st[0].id, 0x5a1);
	ck_assert_int_eq(st[0].state, QBD_NODE_DRAINING);
	ck_assert_int_eq(st[2].state, QBD_NODE_REMOVED);
	free(st);
	/* node list and get carry it */
	ck_assert_int_eq(qbd_meta_node_list(m, &nodes, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (nodes[i].id == 0x5a1)
			ck_assert_int_eq(nodes[i].state, QBD_NODE_DRAINING);
		else if (nodes[i].id == 0x5b1)
			ck_assert_int_eq(nodes[i].state, QBD_NODE_REMOVED);
	free(nodes);
	ck_assert_int_eq(qbd_meta_node_get(m, 0x5b1, &got), 0);
	ck_assert_int_eq(got.state, QBD_NODE_REMOVED);
	/* back in service: the key goes */
	ck_assert_int_eq(qbd_meta_node_state_set(m, 0x5a1, QBD_NODE_IN), 0);
	ck_assert_int_eq(qbd_meta_node_state_get(m, 0x5a1, &s), 0);
	ck_assert_int_eq(s, QBD_NODE_IN);
	ck_assert_int_eq(qbd_meta_node_get(m, 0x5a1, &got), 0);
	ck_assert_int_eq(got.state, QBD_NODE_IN);
	/* a value that is no state */
	ck_assert_int_eq(meta_put(m, "/qbd/node-state/00000000000005d1", "in", 0), 0);
	ck_assert_int_eq(qbd_meta_node_state_get(m, 0x5d1, &s), -EPROTO);
	ck_assert_int_eq(qbd_meta_node_state_list(m, &st, &n), 0);
	ck_assert_uint_eq(n, 2);
	free(st);
	qbd_meta_close(m);
}
END_TEST

static struct qbd_meta *open_one(int port)
{
	char url[64];
	struct qbd_meta *m;

	snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
	ck_assert_int_eq(qbd_meta_open(url, &m), 0);
	return m;
}

/* The range answer for a volume record of 8 MiB after seven membership
 * changes (cfg 7), at mod_revision 42. Caller frees. */
static char *grow_range_body(void)
{
	static const char rec[] =
		"{\"name\":\"v\",\"id\":\"00000000000000aa\",\"size\":8388608,"
		"\"chunk_size\":1048576,\"replicas\":3,\"write_quorum\":2,\"nodes\":"
		"[\"0000000000000001\",\"0000000000000002\",\"0000000000000003\"],\"cfg\":7}";
	char *v = meta_b64_encode(rec, strlen(rec)), *body = malloc(1024);

	ck_assert_ptr_nonnull(v);
	snprintf(body, 1024, "{\"header\":{\"revision\":\"50\"},\"kvs\":[{\"key\":\"eA==\","
		 "\"value\":\"%s\",\"mod_revision\":\"42\"}],\"count\":\"1\"}", v);
	free(v);
	return body;
}

START_TEST(volume_grow_compares_the_revision_read)
{
	char *body = grow_range_body();
	struct fake f = { .range_code = 200, .range_body = body,
			  .txn_code = 200, .txn_body = txn_ok };
	json_object *req, *cmp, *put, *x, *rec;
	struct qbd_meta *m;
	uint64_t old = 0;
	size_t len;
	char *value;

	fake_start(&f);
	m = open_one(f.port);
	ck_assert_int_eq(qbd_meta_volume_grow(m, "v", 0xaa, 16 << 20, &old), 0);
	ck_assert_uint_eq(old, 8 << 20);
	ck_assert_int_eq(txns(&f), 1);
	/* One compare: the record's mod_revision as read. */
	req = json_tokener_parse(f.last_txn);
	ck_assert_ptr_nonnull(req);
	ck_assert(json_object_object_get_ex(req, "compare", &cmp));
	ck_assert_uint_eq(json_object_array_length(cmp), 1);
	x = json_object_array_get_idx(cmp, 0);
	ck_assert_str_eq(json_object_get_string(json_object_object_get(x, "target")), "MOD");
	ck_assert_int_eq(json_object_get_int64(json_object_object_get(x, "mod_revision")), 42);
	/* The put: the new size, the rest of the record as read. */
	ck_assert(json_object_object_get_ex(req, "success", &put));
	x = json_object_object_get(json_object_array_get_idx(put, 0), "requestPut");
	value = meta_b64_decode(json_object_get_string(json_object_object_get(x, "value")), &len);
	ck_assert_ptr_nonnull(value);
	rec = json_tokener_parse(value);
	ck_assert_int_eq(json_object_get_int64(json_object_object_get(rec, "size")), 16 << 20);
	ck_assert_int_eq(json_object_get_int(json_object_object_get(rec, "cfg")), 7);
	ck_assert_str_eq(json_object_get_string(json_object_object_get(rec, "id")),
			 "00000000000000aa");
	json_object_put(rec);
	free(value);
	json_object_put(req);
	/* Refused without a transaction: smaller, unaligned, another id;
	 * the same size is done already. */
	ck_assert_int_eq(qbd_meta_volume_grow(m, "v", 0xaa, 4 << 20, NULL), -EINVAL);
	ck_assert_int_eq(qbd_meta_volume_grow(m, "v", 0xaa, (16 << 20) + 512, NULL), -EINVAL);
	ck_assert_int_eq(qbd_meta_volume_grow(m, "v", 0xab, 16 << 20, NULL), -ENOENT);
	ck_assert_int_eq(qbd_meta_volume_grow(m, "v", 0xaa, 8 << 20, &old), 0);
	ck_assert_uint_eq(old, 8 << 20);
	ck_assert_int_eq(txns(&f), 1);
	qbd_meta_close(m);
	fake_stop(&f);
	free(body);
}
END_TEST

START_TEST(volume_grow_retries_a_lost_race)
{
	/* Every compare fails (the record keeps changing): read again and
	 * retry, then give up with -EAGAIN. */
	char *body = grow_range_body();
	struct fake f = { .range_code = 200, .range_body = body,
			  .txn_code = 200, .txn_body = "{\"header\":{\"revision\":\"51\"}}" };
	struct qbd_meta *m;

	fake_start(&f);
	m = open_one(f.port);
	ck_assert_int_eq(qbd_meta_volume_grow(m, "v", 0xaa, 16 << 20, NULL), -EAGAIN);
	ck_assert_int_eq(txns(&f), 10);
	ck_assert_int_ge(reads(&f), 10); /* read before each try */
	qbd_meta_close(m);
	fake_stop(&f);
	free(body);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("meta");
	TCase *t1 = tcase_create("placement"), *t2 = tcase_create("encoding");
	TCase *t3 = tcase_create("attachment"), *t4 = tcase_create("endpoints");
	TCase *t5 = tcase_create("failover"), *t6 = tcase_create("etcd");
	SRunner *sr;
	int failed;

	tcase_add_test(t1, place_distinct_zones_least_used);
	tcase_add_test(t1, place_skips_dead_and_reports_zones);
	tcase_add_test(t1, place_ties_lowest_id);
	tcase_add_test(t1, place_skips_out_of_service);
	tcase_add_test(t1, replace_prefers_same_zone);
	tcase_add_test(t1, replace_unused_zone_least_used);
	tcase_add_test(t1, replace_nospc_names_zones);
	tcase_add_test(t1, replace_check_operator_choice);
	tcase_add_test(t2, base64_roundtrip);
	tcase_add_test(t2, volume_names);
	tcase_add_test(t2, records_roundtrip);
	suite_add_tcase(s, t1);
	tcase_add_test(t3, attachment_roundtrip);
	tcase_add_test(t3, attachment_rejects);
	tcase_add_test(t2, volume_config_roundtrip);
	tcase_add_test(t2, volume_config_old_and_bad);
	tcase_add_test(t2, change_request_roundtrip);
	suite_add_tcase(s, t2);
	suite_add_tcase(s, t3);
	tcase_add_test(t4, endpoints_parse_list);
	tcase_add_test(t4, endpoints_parse_rejects);
	suite_add_tcase(s, t4);
	tcase_set_timeout(t5, 20);
	tcase_add_test(t5, failover_past_refused_and_sticks);
	tcase_add_test(t5, failover_all_refused);
	tcase_add_test(t5, failover_unavailable_read_resent);
	tcase_add_test(t5, failover_hung_member_within_budget);
	tcase_add_test(t5, failover_attach_not_resent);
	tcase_add_test(t5, failover_attach_no_leader_resent);
	tcase_add_test(t5, failover_epoch_bump_resent);
	tcase_add_test(t5, volume_grow_compares_the_revision_read);
	tcase_add_test(t5, volume_grow_retries_a_lost_race);
	suite_add_tcase(s, t5);
	tcase_add_unchecked_fixture(t6, etcd_setup, etcd_teardown);
	tcase_set_timeout(t6, 60);
	tcase_add_test(t6, etcd_volume_cas);
	tcase_add_test(t6, etcd_attach_compares_config);
	tcase_add_test(t6, etcd_change_requests);
	tcase_add_test(t6, etcd_node_states);
	suite_add_tcase(s, t6);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
