/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the metadata module: placement, base64, names,
 * records (node, volume, attachment). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
	Suite *s = suite_create("meta");
	TCase *t1 = tcase_create("placement"), *t2 = tcase_create("encoding");
	TCase *t3 = tcase_create("attachment");
	SRunner *sr;
	int failed;

	tcase_add_test(t1, place_distinct_zones_least_used);
	tcase_add_test(t1, place_skips_dead_and_reports_zones);
	tcase_add_test(t1, place_ties_lowest_id);
	tcase_add_test(t2, base64_roundtrip);
	tcase_add_test(t2, volume_names);
	tcase_add_test(t2, records_roundtrip);
	suite_add_tcase(s, t1);
	tcase_add_test(t3, attachment_roundtrip);
	tcase_add_test(t3, attachment_rejects);
	suite_add_tcase(s, t2);
	suite_add_tcase(s, t3);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
