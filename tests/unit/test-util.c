/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for common/util.c, common/queue.h and common/sparse.c. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/queue.h"
#include "common/sparse.h"
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

/* An element of the queue tests: a value and two links, so that it can
 * be on two queues at once as the engine's chunks are. */
struct q_elem {
	int v;
	struct qbd_qlink a, b;
};

static int q_pop_a(struct qbd_queue *q)
{
	struct q_elem *x = QBD_QUEUE_ENTRY(qbd_queue_pop(q), struct q_elem, a);

	return x ? x->v : -1;
}

START_TEST(queue_fifo_order)
{
	struct qbd_queue q = { 0 };
	struct q_elem x[4] = { { .v = 0 }, { .v = 1 }, { .v = 2 }, { .v = 3 } };

	ck_assert(qbd_queue_empty(&q));
	ck_assert_ptr_null(qbd_queue_pop(&q));
	for (int i = 0; i < 4; i++)
		qbd_queue_push(&q, &x[i].a);
	ck_assert(!qbd_queue_empty(&q));
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(q_pop_a(&q), i);
	ck_assert(qbd_queue_empty(&q));
	ck_assert_ptr_null(q.tail);
	/* a popped element is unlinked and can be queued again */
	ck_assert_ptr_null(x[3].a.prev);
	ck_assert_ptr_null(x[3].a.next);
	qbd_queue_push(&q, &x[3].a);
	qbd_queue_push(&q, &x[0].a);
	ck_assert_int_eq(q_pop_a(&q), 3);
	ck_assert_int_eq(q_pop_a(&q), 0);
	ck_assert_int_eq(q_pop_a(&q), -1);
}
END_TEST

START_TEST(queue_remove_anywhere)
{
	struct qbd_queue q = { 0 };
	struct q_elem x[5];

	for (int i = 0; i < 5; i++) {
		x[i] = (struct q_elem){ .v = i };
		qbd_queue_push(&q, &x[i].a);
	}
	qbd_queue_remove(&q, &x[2].a);   /* middle */
	qbd_queue_remove(&q, &x[0].a);   /* head */
	qbd_queue_remove(&q, &x[4].a);   /* tail */
	ck_assert_ptr_eq(q.head, &x[1].a);
	ck_assert_ptr_eq(q.tail, &x[3].a);
	ck_assert_ptr_eq(x[3].a.prev, &x[1].a);
	qbd_queue_push(&q, &x[2].a);
	ck_assert_int_eq(q_pop_a(&q), 1);
	ck_assert_int_eq(q_pop_a(&q), 3);
	ck_assert_int_eq(q_pop_a(&q), 2);
	ck_assert(qbd_queue_empty(&q));
	/* the only element: head and tail both go */
	qbd_queue_push(&q, &x[4].a);
	qbd_queue_remove(&q, &x[4].a);
	ck_assert_ptr_null(q.head);
	ck_assert_ptr_null(q.tail);
}
END_TEST

START_TEST(queue_two_links_and_take)
{
	struct qbd_queue qa = { 0 }, qb = { 0 }, all;
	struct q_elem x[3];

	for (int i = 0; i < 3; i++) {
		x[i] = (struct q_elem){ .v = i };
		qbd_queue_push(&qa, &x[i].a);
		qbd_queue_push(&qb, &x[2 - i].b); /* the other way round */
	}
	ck_assert_int_eq(QBD_QUEUE_ENTRY(qb.head, struct q_elem, b)->v, 2);
	qbd_queue_remove(&qb, &x[1].b);          /* leaves qa alone */
	ck_assert_ptr_eq(x[0].a.next, &x[1].a);
	/* take: the queue is empty, its elements in order in the result,
	 * and an element taken can go back on the emptied queue */
	all = qbd_queue_take(&qa);
	ck_assert(qbd_queue_empty(&qa));
	ck_assert_int_eq(q_pop_a(&all), 0);
	qbd_queue_push(&qa, &x[0].a);
	ck_assert_int_eq(q_pop_a(&all), 1);
	ck_assert_int_eq(q_pop_a(&all), 2);
	ck_assert(qbd_queue_empty(&all));
	ck_assert_int_eq(q_pop_a(&qa), 0);
	ck_assert_ptr_null(QBD_QUEUE_ENTRY(qbd_queue_pop(&qa), struct q_elem, a));
}
END_TEST

/* A chunk of 16 blocks of 64 bytes, blocks 1, 7 and 15 written (each
 * filled with its number + 1), the rest zeros. */
#define SP_BLOCK 64u
#define SP_CHUNK (16u * SP_BLOCK)

static void sp_chunk(uint8_t *chunk, uint8_t *bm)
{
	static const unsigned written[] = { 1, 7, 15 };

	memset(chunk, 0, SP_CHUNK);
	memset(bm, 0, 2);
	for (unsigned i = 0; i < 3; i++) {
		memset(chunk + written[i] * SP_BLOCK, (int)written[i] + 1, SP_BLOCK);
		bm[written[i] / 8] |= (uint8_t)(1u << (written[i] % 8));
	}
}

START_TEST(sparse_pack_keeps_only_written_blocks)
{
	uint8_t buf[2 + SP_CHUNK], chunk[SP_CHUNK], back[SP_CHUNK];
	size_t kept;

	sp_chunk(chunk, buf);
	memcpy(buf + 2, chunk, SP_CHUNK);
	ck_assert_uint_eq(qbd_sparse_bitmap_bytes(SP_CHUNK, SP_BLOCK), 2);
	kept = qbd_sparse_pack(buf + 2, buf, SP_CHUNK, SP_BLOCK);
	/* Three blocks cross, not sixteen. */
	ck_assert_uint_eq(kept, 3 * SP_BLOCK);
	ck_assert_uint_eq(buf[2], 2);
	ck_assert_uint_eq(buf[2 + SP_BLOCK], 8);
	ck_assert_uint_eq(buf[2 + 2 * SP_BLOCK], 16);
	memset(back, 0xee, sizeof back);
	ck_assert_int_eq(qbd_sparse_expand(buf, 2 + kept, back, SP_CHUNK, SP_BLOCK), 0);
	ck_assert_mem_eq(back, chunk, SP_CHUNK);
}
END_TEST

START_TEST(sparse_expand_refuses_bad_forms)
{
	uint8_t buf[2 + SP_CHUNK], chunk[SP_CHUNK], out[SP_CHUNK];
	size_t kept;

	sp_chunk(chunk, buf);
	memcpy(buf + 2, chunk, SP_CHUNK);
	kept = qbd_sparse_pack(buf + 2, buf, SP_CHUNK, SP_BLOCK);
	memset(out, 0xee, sizeof out);
	/* a block short, a block too many, no bitmap */
	ck_assert_int_eq(qbd_sparse_expand(buf, 2 + kept - SP_BLOCK, out, SP_CHUNK, SP_BLOCK),
			 -EINVAL);
	ck_assert_int_eq(qbd_sparse_expand(buf, 2 + kept + SP_BLOCK, out, SP_CHUNK, SP_BLOCK),
			 -EINVAL);
	ck_assert_int_eq(qbd_sparse_expand(buf, 1, out, SP_CHUNK, SP_BLOCK), -EINVAL);
	ck_assert_uint_eq(out[0], 0xee);
	/* A bit past the last block (a 12-block chunk has 4 spare bits). */
	buf[1] = 0x10;
	buf[0] = 0;
	ck_assert_int_eq(qbd_sparse_expand(buf, 2 + SP_BLOCK, out, 12 * SP_BLOCK, SP_BLOCK),
			 -EINVAL);
	/* Nothing written: the bitmap alone, all zeros out. */
	buf[0] = buf[1] = 0;
	ck_assert_int_eq(qbd_sparse_expand(buf, 2, out, SP_CHUNK, SP_BLOCK), 0);
	for (unsigned i = 0; i < SP_CHUNK; i++)
		ck_assert_uint_eq(out[i], 0);
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
	tc = tcase_create("queue");
	tcase_add_test(tc, queue_fifo_order);
	tcase_add_test(tc, queue_remove_anywhere);
	tcase_add_test(tc, queue_two_links_and_take);
	suite_add_tcase(s, tc);
	tc = tcase_create("sparse");
	tcase_add_test(tc, sparse_pack_keeps_only_written_blocks);
	tcase_add_test(tc, sparse_expand_refuses_bad_forms);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
