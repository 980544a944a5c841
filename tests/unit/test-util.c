/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for common/util.c and common/queue.h. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/queue.h"
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
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
