/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for replicator/wire/wire.c: header encoding and the receive
 * state machine, fed whole frames and byte by byte, with the bulk data going
 * to a caller buffer, an rx-owned buffer or nowhere; malformed frames must
 * fail with -EPROTO.
 */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/wire/wire.h"

enum dest { DEST_CALLER, DEST_RX, DEST_DISCARD };

struct got {
	enum dest dest;
	uint8_t caller_buf[16384];
	int headers;
	int frames;
	uint64_t request_id[4];
	int type[4];
	uint32_t data_len[4];
	uint8_t data[4][16384];
	int data_null[4];
	int data_is_caller[4];
	int stop_after;        /* on_frame returns 7 after this many frames; 0 = never */
};

static void *t_on_header(void *user, const Qbd__Msg *m)
{
	struct got *g = user;

	g->headers++;
	if (g->dest == DEST_DISCARD)
		return QBD_WIRE_DISCARD;
	if (g->dest == DEST_RX)
		return NULL;
	ck_assert_uint_le(m->data_len, sizeof g->caller_buf);
	return g->caller_buf;
}

static int t_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct got *g = user;
	int i = g->frames++;

	ck_assert_int_lt(i, 4);
	g->request_id[i] = m->request_id;
	g->type[i] = m->type;
	g->data_len[i] = m->data_len;
	g->data_null[i] = data == NULL;
	g->data_is_caller[i] = data == g->caller_buf;
	if (data)
		memcpy(g->data[i], data, m->data_len);
	return (g->stop_after && g->frames == g->stop_after) ? 7 : 0;
}

static const struct qbd_wire_rx_ops t_ops = { t_on_header, t_on_frame };

/* Build one frame (header + len bytes of patterned data) into out. */
static size_t make_frame(uint8_t *out, size_t cap, int type, uint64_t rid,
			 uint32_t len, uint8_t seed)
{
	Qbd__Msg m = QBD__MSG__INIT;
	ssize_t h;

	m.type = type;
	m.cluster_id = 0x1234567890abcdefull;
	m.request_id = rid;
	m.volume_id = 42;
	m.chunk = 7;
	m.offset = 4096;
	m.length = len;
	m.data_len = len;
	h = qbd_wire_encode(&m, out, cap);
	ck_assert_int_gt(h, 4);
	ck_assert_uint_le((size_t)h + len, cap);
	for (uint32_t i = 0; i < len; i++)
		out[h + i] = (uint8_t)(seed + i * 31);
	return (size_t)h + len;
}

static void check_payload(const struct got *g, int i, uint32_t len, uint8_t seed)
{
	ck_assert_uint_eq(g->data_len[i], len);
	for (uint32_t k = 0; k < len; k++)
		ck_assert_uint_eq(g->data[i][k], (uint8_t)(seed + k * 31));
}

/* Two frames (WRITE with data, PING without) fed whole or byte by byte. */
static void round_trip(enum dest dest, size_t step)
{
	static uint8_t buf[40000];
	static struct got g;
	struct qbd_wire_rx rx;
	size_t n = 0;

	memset(&g, 0, sizeof g);
	g.dest = dest;
	n += make_frame(buf + n, sizeof buf - n, QBD__MSG_TYPE__WRITE, 11, 8192, 3);
	n += make_frame(buf + n, sizeof buf - n, QBD__MSG_TYPE__PING, 12, 0, 0);
	n += make_frame(buf + n, sizeof buf - n, QBD__MSG_TYPE__READ, 13, 100, 9);
	qbd_wire_rx_init(&rx);
	for (size_t off = 0; off < n; off += step) {
		size_t k = off + step > n ? n - off : step;
		ck_assert_int_eq(qbd_wire_rx_feed(&rx, buf + off, k, &t_ops, &g), 0);
	}
	qbd_wire_rx_reset(&rx);

	ck_assert_int_eq(g.frames, 3);
	ck_assert_int_eq(g.headers, 2);   /* on_header only for frames with data */
	ck_assert_uint_eq(g.request_id[0], 11);
	ck_assert_uint_eq(g.request_id[1], 12);
	ck_assert_uint_eq(g.request_id[2], 13);
	ck_assert_int_eq(g.type[0], QBD__MSG_TYPE__WRITE);
	ck_assert_int_eq(g.type[1], QBD__MSG_TYPE__PING);
	ck_assert_int_eq(g.type[2], QBD__MSG_TYPE__READ);
	ck_assert(g.data_null[1]);
	if (dest == DEST_DISCARD) {
		ck_assert(g.data_null[0]);
		ck_assert(g.data_null[2]);
		return;
	}
	ck_assert(!g.data_null[0]);
	ck_assert_int_eq(g.data_is_caller[0], dest == DEST_CALLER);
	check_payload(&g, 0, 8192, 3);
	check_payload(&g, 2, 100, 9);
}

START_TEST(round_trip_whole_caller_buffer) { round_trip(DEST_CALLER, 1u << 20); }
END_TEST
START_TEST(round_trip_bytewise_caller_buffer) { round_trip(DEST_CALLER, 1); }
END_TEST
START_TEST(round_trip_whole_rx_owned) { round_trip(DEST_RX, 1u << 20); }
END_TEST
START_TEST(round_trip_bytewise_rx_owned) { round_trip(DEST_RX, 1); }
END_TEST
START_TEST(round_trip_odd_chunks_discarded) { round_trip(DEST_DISCARD, 7); }
END_TEST
START_TEST(round_trip_bytewise_discarded) { round_trip(DEST_DISCARD, 1); }
END_TEST

/* Payloads read in place: feed up to the middle of the first frame's
 * data, then the rest of it through qbd_wire_rx_direct/_placed in two
 * reads, then the next frames by feeding again; the payload is whole and
 * nothing is copied into the rx. Where the data is discarded or the rx
 * owns it, there is no place to read into. */
static void in_place(enum dest dest)
{
	static uint8_t buf[40000];
	static struct got g;
	struct qbd_wire_rx rx;
	size_t n = 0, first, hdr, len = 0, off;
	void *d;

	memset(&g, 0, sizeof g);
	g.dest = dest;
	first = make_frame(buf, sizeof buf, QBD__MSG_TYPE__WRITE, 21, 8192, 5);
	hdr = first - 8192;
	n = first;
	n += make_frame(buf + n, sizeof buf - n, QBD__MSG_TYPE__READ, 22, 100, 9);
	qbd_wire_rx_init(&rx);
	ck_assert_ptr_null(qbd_wire_rx_direct(&rx, &len)); /* no frame yet */
	off = hdr + 1000;
	ck_assert_int_eq(qbd_wire_rx_feed(&rx, buf, off, &t_ops, &g), 0);
	d = qbd_wire_rx_direct(&rx, &len);
	if (dest != DEST_CALLER) {
		ck_assert_ptr_null(d);
		ck_assert_int_eq(qbd_wire_rx_placed(&rx, 1, &t_ops, &g), -EINVAL);
		qbd_wire_rx_reset(&rx);
		return;
	}
	ck_assert_ptr_eq(d, g.caller_buf + 1000);
	ck_assert_uint_eq(len, 8192 - 1000);
	ck_assert_int_eq(qbd_wire_rx_placed(&rx, len + 1, &t_ops, &g), -EINVAL);
	memcpy(d, buf + off, 3000);            /* a short read */
	ck_assert_int_eq(qbd_wire_rx_placed(&rx, 3000, &t_ops, &g), 0);
	ck_assert_int_eq(g.frames, 0);
	off += 3000;
	d = qbd_wire_rx_direct(&rx, &len);
	ck_assert_ptr_eq(d, g.caller_buf + 4000);
	ck_assert_uint_eq(len, 8192 - 4000);
	memcpy(d, buf + off, len);              /* the rest */
	ck_assert_int_eq(qbd_wire_rx_placed(&rx, len, &t_ops, &g), 0);
	ck_assert_int_eq(g.frames, 1);          /* delivered when complete */
	off += len;
	ck_assert_ptr_null(qbd_wire_rx_direct(&rx, &len));
	ck_assert_int_eq(qbd_wire_rx_feed(&rx, buf + off, n - off, &t_ops, &g), 0);
	qbd_wire_rx_reset(&rx);
	ck_assert_int_eq(g.frames, 2);
	ck_assert(g.data_is_caller[0]);
	check_payload(&g, 0, 8192, 5);
	check_payload(&g, 1, 100, 9);
}

START_TEST(in_place_caller_buffer) { in_place(DEST_CALLER); }
END_TEST
START_TEST(in_place_not_for_rx_owned) { in_place(DEST_RX); }
END_TEST
START_TEST(in_place_not_for_discarded) { in_place(DEST_DISCARD); }
END_TEST

START_TEST(encode_fields_survive)
{
	Qbd__Msg m = QBD__MSG__INIT, *d;
	uint8_t buf[QBD_WIRE_FRAME_MAX_PREFIX];
	ssize_t h;

	m.type = QBD__MSG_TYPE__OPEN;
	m.reply = true;
	m.status = -EPERM;
	m.epoch = 99;
	m.node_id = 0xfeedull;
	m.capacity = 1ull << 40;
	h = qbd_wire_encode(&m, buf, sizeof buf);
	ck_assert_int_gt(h, 4);
	ck_assert_uint_eq(buf[0] | buf[1] << 8 | buf[2] << 16 | (uint32_t)buf[3] << 24,
			  (size_t)h - 4);
	d = qbd__msg__unpack(NULL, (size_t)h - 4, buf + 4);
	ck_assert_ptr_nonnull(d);
	ck_assert_int_eq(d->type, QBD__MSG_TYPE__OPEN);
	ck_assert(d->reply);
	ck_assert_int_eq(d->status, -EPERM);
	ck_assert_uint_eq(d->epoch, 99);
	ck_assert_uint_eq(d->node_id, 0xfeed);
	ck_assert_uint_eq(d->capacity, 1ull << 40);
	qbd__msg__free_unpacked(d, NULL);
	/* Too small an output buffer is -EMSGSIZE, not an overflow. */
	ck_assert_int_eq(qbd_wire_encode(&m, buf, 6), -EMSGSIZE);
}
END_TEST

START_TEST(callback_return_stops_feeding)
{
	static uint8_t buf[40000];
	static struct got g;
	struct qbd_wire_rx rx;
	size_t n = 0;

	memset(&g, 0, sizeof g);
	g.dest = DEST_RX;
	g.stop_after = 1;
	n += make_frame(buf + n, sizeof buf - n, QBD__MSG_TYPE__PING, 1, 0, 0);
	n += make_frame(buf + n, sizeof buf - n, QBD__MSG_TYPE__PING, 2, 0, 0);
	qbd_wire_rx_init(&rx);
	ck_assert_int_eq(qbd_wire_rx_feed(&rx, buf, n, &t_ops, &g), 7);
	ck_assert_int_eq(g.frames, 1);
	qbd_wire_rx_reset(&rx);
}
END_TEST

static int feed_bytes(const uint8_t *p, size_t n)
{
	static struct got g;
	struct qbd_wire_rx rx;
	int rc;

	memset(&g, 0, sizeof g);
	g.dest = DEST_RX;
	qbd_wire_rx_init(&rx);
	rc = qbd_wire_rx_feed(&rx, p, n, &t_ops, &g);
	ck_assert_int_eq(g.frames, 0);
	qbd_wire_rx_reset(&rx);
	return rc;
}

START_TEST(bad_length_prefix_is_eproto)
{
	const uint8_t zero[8] = { 0, 0, 0, 0, 1, 2, 3, 4 };
	uint8_t big[8] = { 0 };
	uint32_t h = QBD_WIRE_MAX_HEADER + 1;

	big[0] = (uint8_t)h;
	big[1] = (uint8_t)(h >> 8);
	ck_assert_int_eq(feed_bytes(zero, sizeof zero), -EPROTO);
	ck_assert_int_eq(feed_bytes(big, sizeof big), -EPROTO);
	big[3] = 0x80;  /* huge */
	ck_assert_int_eq(feed_bytes(big, sizeof big), -EPROTO);
}
END_TEST

START_TEST(oversize_data_len_is_eproto)
{
	Qbd__Msg m = QBD__MSG__INIT;
	uint8_t buf[QBD_WIRE_FRAME_MAX_PREFIX];
	ssize_t h;

	m.type = QBD__MSG_TYPE__WRITE;
	m.data_len = QBD_WIRE_MAX_DATA + 1;
	h = qbd_wire_encode(&m, buf, sizeof buf);
	ck_assert_int_gt(h, 4);
	ck_assert_int_eq(feed_bytes(buf, (size_t)h), -EPROTO);
	/* The limit itself is accepted (the header is delivered). */
	m.data_len = QBD_WIRE_MAX_DATA;
	h = qbd_wire_encode(&m, buf, sizeof buf);
	ck_assert_int_eq(feed_bytes(buf, (size_t)h), 0);
}
END_TEST

START_TEST(garbage_header_is_eproto)
{
	/* Field 31 with wire type 7 does not exist in protobuf. */
	const uint8_t g1[] = { 5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff };
	/* A length-delimited field running past the header's end. */
	const uint8_t g2[] = { 3, 0, 0, 0, 0x0a, 0x7f, 0x01 };

	ck_assert_int_eq(feed_bytes(g1, sizeof g1), -EPROTO);
	ck_assert_int_eq(feed_bytes(g2, sizeof g2), -EPROTO);
}
END_TEST

/* Chunk list entries: chunk index and flags share the first word. */
START_TEST(chunk_entry_round_trip)
{
	uint8_t e[QBD_WIRE_ENTRY];
	uint64_t ch, v;
	uint32_t f;

	ck_assert_int_eq(qbd_wire_put_entry(e, 0x123456789abcull, 0xfeedull << 40 | 7,
					    QBD_WIRE_CHUNK_SUSPECT | QBD_WIRE_CHUNK_DAMAGED), 0);
	ck_assert_uint_eq(e[7], 0x03);                 /* flags in the top byte, LE */
	ck_assert_uint_eq(e[0], 0xbc);
	ck_assert_int_eq(qbd_wire_get_entry(e, &ch, &v, &f), 0);
	ck_assert_uint_eq(ch, 0x123456789abcull);
	ck_assert_uint_eq(v, 0xfeedull << 40 | 7);
	ck_assert_uint_eq(f, QBD_WIRE_CHUNK_SUSPECT | QBD_WIRE_CHUNK_DAMAGED);
	/* an entry of the old format (no flags) reads as unflagged */
	ck_assert_int_eq(qbd_wire_put_entry(e, QBD_WIRE_MAX_CHUNK, 1, 0), 0);
	ck_assert_int_eq(qbd_wire_get_entry(e, &ch, &v, &f), 0);
	ck_assert_uint_eq(ch, QBD_WIRE_MAX_CHUNK);
	ck_assert_uint_eq(f, 0);
}
END_TEST

START_TEST(chunk_entry_refuses_unknown_flags)
{
	uint8_t e[QBD_WIRE_ENTRY] = { 0 };
	uint64_t ch = 9, v = 9;
	uint32_t f = 9;

	ck_assert_int_eq(qbd_wire_put_entry(e, QBD_WIRE_MAX_CHUNK + 1, 1, 0), -EINVAL);
	ck_assert_int_eq(qbd_wire_put_entry(e, 1, 1, 0x4), -EINVAL);
	e[7] = 0x80;                                   /* a flag nobody defined */
	ck_assert_int_eq(qbd_wire_get_entry(e, &ch, &v, &f), -EINVAL);
	ck_assert_uint_eq(ch, 9);                      /* outputs untouched */
	ck_assert_uint_eq(f, 9);
}
END_TEST

static Suite *wire_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *tc;

	tc = tcase_create("round_trip");
	tcase_add_test(tc, round_trip_whole_caller_buffer);
	tcase_add_test(tc, round_trip_bytewise_caller_buffer);
	tcase_add_test(tc, round_trip_whole_rx_owned);
	tcase_add_test(tc, round_trip_bytewise_rx_owned);
	tcase_add_test(tc, round_trip_odd_chunks_discarded);
	tcase_add_test(tc, round_trip_bytewise_discarded);
	tcase_add_test(tc, in_place_caller_buffer);
	tcase_add_test(tc, in_place_not_for_rx_owned);
	tcase_add_test(tc, in_place_not_for_discarded);
	suite_add_tcase(s, tc);

	tc = tcase_create("encode");
	tcase_add_test(tc, encode_fields_survive);
	tcase_add_test(tc, callback_return_stops_feeding);
	tcase_add_test(tc, chunk_entry_round_trip);
	tcase_add_test(tc, chunk_entry_refuses_unknown_flags);
	suite_add_tcase(s, tc);

	tc = tcase_create("malformed");
	tcase_add_test(tc, bad_length_prefix_is_eproto);
	tcase_add_test(tc, oversize_data_len_is_eproto);
	tcase_add_test(tc, garbage_header_is_eproto);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(wire_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
