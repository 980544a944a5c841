/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the chunk server's edge: chunkd_validate
 * (replicator/chunkd/validate.c) on every message type with every bad
 * field, and the good ones. Each refused request is also sent as a frame
 * over a real connection of the server's own code (conn.c, request.c) on
 * a real store (engine/engine.h on a file in a temporary directory): it
 * must be answered with the same errno (closing the connection when the
 * verdict says so) and leave the store as it was, byte for byte, with no
 * I/O issued. A good WRITE sent the same way must change the store, so
 * that the comparison is seen to work.
 *
 * Also the reclaim's decision (chunkd_reclaim_decide, reclaim.c), a pure
 * function fed held volumes and etcd answers by hand, and the reading of
 * etcd's answer it acts on (meta_volume_scan_from_json): never a
 * partial one; and what the reclaim does with a volume judged gone (a
 * tombstone, its chunks freed).
 *
 * Background I/O behind client I/O (admit.c): which requests wait,
 * when they go in, the epoch judged again, a closed connection's freed.
 *
 * Tombstones: a TOMBSTONE request below the promised epoch is refused;
 * one accepted makes every OPEN of the volume refused with EIDRM (until
 * an OPEN with F_ADD at or above the tombstone's epoch) and the data path too.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#include "engine/engine.h"
#include "replicator/chunkd/internal.h"
#include "replicator/meta/internal.h"
#include "replicator/wire/wire.h"

#define CLUSTER 0x5eedull
#define VOL 0x1234ull        /* promised EPOCH at setup, chunk 1 written */
#define OTHER 0x5678ull      /* a volume never opened here */
#define EPOCH 7ull
#define V1 (EPOCH << 40 | 1)
#define V2 (EPOCH << 40 | 2)
#define CS (64u << 10)
#define STORE (16ull << 20)

#define HELLO QBD__MSG_TYPE__HELLO
#define OPEN QBD__MSG_TYPE__OPEN
#define READ QBD__MSG_TYPE__READ
#define WRITE QBD__MSG_TYPE__WRITE
#define FLUSH QBD__MSG_TYPE__FLUSH
#define DELETE QBD__MSG_TYPE__DELETE_VOLUME
#define PING QBD__MSG_TYPE__PING
#define CHECKSUM QBD__MSG_TYPE__CHECKSUM
#define PULL QBD__MSG_TYPE__PULL
#define USAGE QBD__MSG_TYPE__USAGE
#define AUTH QBD__MSG_TYPE__AUTH
#define TOMB QBD__MSG_TYPE__TOMBSTONE

/* Every request type, and those that carry a volume's epoch. */
static const int all_types[] = { HELLO, OPEN, READ, WRITE, FLUSH, DELETE, PING, CHECKSUM,
				 PULL, USAGE, AUTH, TOMB };
#define N_ALL (sizeof all_types / sizeof all_types[0])
static const int data_path[] = { READ, WRITE, FLUSH, PULL, PING };
#define N_DATA_PATH (sizeof data_path / sizeof data_path[0])
#define N(a) (sizeof (a) / sizeof (a)[0])

static char dir[64], path[96];
static struct chunkd *d;
static uv_poll_t eng_poll;
static uint8_t wdata[2 * CS];

/* ---- the store ---- */

static void eng_cb(struct qbd_engine_req *r) { *(int *)r->user = 1; }

/* Run one engine request to completion, outside the loop. */
static int eng_run(struct qbd_engine_req *r)
{
	int done = 0;

	r->cb = eng_cb;
	r->user = &done;
	qbd_engine_submit(d->e, r);
	while (!done) {
		struct pollfd p = { .fd = qbd_engine_event_fd(d->e), .events = POLLIN };
		poll(&p, 1, 1000);
		qbd_engine_poll(d->e);
	}
	return r->res;
}

/* Everything a request could change: the store file's bytes, what the
 * engine holds and has promised, its space and I/O counters. */
struct snap {
	uint64_t file;
	uint64_t lists[3], promised[3], tomb[3];
	struct qbd_engine_stats st;
};

static int snap_chunk(void *user, uint64_t chunk, uint64_t version, uint32_t flags)
{
	uint64_t *h = user, v[3] = { chunk, version, flags };

	*h = XXH3_64bits_withSeed(v, sizeof v, *h);
	return 0;
}

static void snap_take(struct snap *s)
{
	static const uint64_t vols[3] = { VOL, OTHER, 0 };
	static uint8_t buf[1 << 20];
	XXH3_state_t *x = XXH3_createState();
	int fd = open(path, O_RDONLY);
	ssize_t n;

	ck_assert_int_ge(fd, 0);
	memset(s, 0, sizeof *s);
	XXH3_64bits_reset(x);
	while ((n = read(fd, buf, sizeof buf)) > 0)
		XXH3_64bits_update(x, buf, (size_t)n);
	ck_assert_int_eq(n, 0);
	close(fd);
	s->file = XXH3_64bits_digest(x);
	XXH3_freeState(x);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(qbd_engine_for_each_chunk(d->e, vols[i], snap_chunk,
							   &s->lists[i]), 0);
		s->promised[i] = qbd_engine_promised(d->e, vols[i]);
		s->tomb[i] = qbd_engine_tombstoned(d->e, vols[i], NULL) ? 1 : 0;
	}
	qbd_engine_stats(d->e, &s->st);
}

static bool snap_same(const struct snap *a, const struct snap *b)
{
	return a->file == b->file && !memcmp(a->lists, b->lists, sizeof a->lists) &&
	       !memcmp(a->promised, b->promised, sizeof a->promised) &&
	       !memcmp(a->tomb, b->tomb, sizeof a->tomb) &&
	       a->st.used == b->st.used && a->st.chunks == b->st.chunks &&
	       a->st.held == b->st.held && a->st.free_slots == b->st.free_slots &&
	       a->st.data_reads == b->st.data_reads && a->st.data_writes == b->st.data_writes &&
	       a->st.meta_writes == b->st.meta_writes && a->st.zeroings == b->st.zeroings &&
	       a->st.syncs == b->st.syncs;
}

/* ---- the server around it ---- */

static void on_engine(uv_poll_t *p, int status, int events)
{
	(void)p;
	(void)status;
	(void)events;
	chunkd_cork(d);
	qbd_engine_poll(d->e);
	chunkd_uncork(d);
}

static void setup(void)
{
	struct qbd_engine_opts o = { .create_size = STORE, .chunk_size = CS };
	struct qbd_engine_req promise = { .op = QBD_ENGINE_PROMISE, .volume = VOL,
					  .epoch = EPOCH };
	struct qbd_engine_req w = { .op = QBD_ENGINE_WRITE, .volume = VOL, .chunk = 1,
				    .length = CS, .buf = wdata, .new_version = V1 };
	struct qbd_engine_req f = { .op = QBD_ENGINE_FLUSH };

	snprintf(dir, sizeof dir, "/tmp/qbd-test-chunkd.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/store", dir);
	o.path = path;
	for (size_t i = 0; i < sizeof wdata; i++)
		wdata[i] = (uint8_t)(i * 2654435761u >> 13);
	d = calloc(1, sizeof *d);
	ck_assert_ptr_nonnull(d);
	ck_assert_int_eq(qbd_engine_open(&o, &d->e), 0);
	ck_assert_int_eq(qbd_engine_set_cluster_id(d->e, CLUSTER), 0);
	d->cluster_id = CLUSTER;
	d->node_id = qbd_engine_node_id(d->e);
	d->chunk_size = CS;
	ck_assert_int_eq(uv_loop_init(&d->loop), 0);
	d->loop_ready = true;
	uv_poll_init(&d->loop, &eng_poll, qbd_engine_event_fd(d->e));
	uv_poll_start(&eng_poll, UV_READABLE, on_engine);
	ck_assert_int_eq(eng_run(&promise), 0);
	ck_assert_int_eq(eng_run(&w), (int)CS);
	ck_assert_int_eq(eng_run(&f), 0);
}

static void teardown(void)
{
	while (d->conns)
		chunkd_conn_close(d->conns);
	uv_close((uv_handle_t *)&eng_poll, NULL);
	uv_run(&d->loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&d->loop), 0);
	ck_assert_uint_eq(qbd_engine_busy(d->e), 0);
	qbd_engine_close(d->e);
	free(d);
	d = NULL;
	unlink(path);
	rmdir(dir);
}

/* A connection the server accepted, its peer's end in *fd. */
static struct chunkd_conn *conn_open(int *fd)
{
	struct chunkd_conn *c = calloc(1, sizeof *c);
	int sv[2];

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	c->d = d;
	c->refs = 1;
	qbd_wire_rx_init(&c->rx);
	snprintf(c->peer, sizeof c->peer, "test");
	uv_tcp_init(&d->loop, &c->tcp);
	ck_assert_int_eq(uv_tcp_open(&c->tcp, sv[0]), 0);
	c->next = d->conns;
	if (d->conns)
		d->conns->prev = c;
	d->conns = c;
	chunkd_conn_update_reading(c);
	*fd = sv[1];
	return c;
}

/* What the peer received. */
struct answer {
	int frames;
	int status;
	int type;
	uint64_t epoch;
	bool closed;           /* the server closed the connection */
};

static void *ans_on_header(void *user, const Qbd__Msg *m)
{
	(void)user;
	(void)m;
	return QBD_WIRE_DISCARD;
}

static int ans_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct answer *a = user;

	(void)data;
	ck_assert(m->reply);
	a->frames++;
	a->status = m->status;
	a->type = m->type;
	a->epoch = m->epoch;
	return 0;
}

static const struct qbd_wire_rx_ops ans_ops = { ans_on_header, ans_on_frame };

/* Send m (and data_len bytes of data, from wdata) on a new connection,
 * run the server until it answered (and, if until_closed, closed the
 * connection), and return what came back. */
static struct answer send_frame(const Qbd__Msg *m, bool until_closed)
{
	struct answer a = { 0 };
	struct qbd_wire_rx rx;
	uint8_t out[QBD_WIRE_FRAME_MAX_PREFIX + sizeof wdata], in[4096];
	ssize_t h = qbd_wire_encode(m, out, sizeof out);
	size_t len, sent = 0;
	int fd, i;

	ck_assert_int_gt(h, 0);
	ck_assert_uint_le(m->data_len, sizeof wdata);
	memcpy(out + h, wdata, m->data_len);
	len = (size_t)h + m->data_len;
	qbd_wire_rx_init(&rx);
	conn_open(&fd);
	for (i = 0; i < 5000 && !(a.frames && (a.closed || !until_closed)); i++) {
		ssize_t n;

		if (sent < len) {
			n = send(fd, out + sent, len - sent, MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
		}
		uv_run(&d->loop, UV_RUN_NOWAIT);
		while ((n = recv(fd, in, sizeof in, 0)) > 0)
			ck_assert_int_eq(qbd_wire_rx_feed(&rx, in, (size_t)n, &ans_ops, &a), 0);
		if (n == 0)
			a.closed = true;
		if (!a.frames)
			poll(NULL, 0, 1);
	}
	ck_assert_msg(a.frames == 1, "%s: %d replies in %d passes (want 1)",
		      qbd_wire_type_name(m->type), a.frames, i);
	qbd_wire_rx_reset(&rx);
	close(fd);
	/* The server sees the peer leave, and frees the connection. */
	for (i = 0; i < 100 && d->conns; i++) {
		uv_run(&d->loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 1);
	}
	ck_assert_msg(!d->conns, "the connection outlived its peer");
	return a;
}

/* ---- requests ---- */

/* A good request of each type, for VOL at EPOCH. */
static Qbd__Msg good(int type)
{
	Qbd__Msg m;

	qbd__msg__init(&m);
	m.type = type;
	m.cluster_id = CLUSTER;
	m.node_id = d->node_id;
	m.request_id = 100 + type;
	switch (type) {
	case OPEN:
	case FLUSH:
	case DELETE:
	case PING:
	case TOMB:
		m.volume_id = VOL;
		m.epoch = EPOCH;
		break;
	case USAGE:
		m.volume_id = VOL;
		break;
	case CHECKSUM:
		m.volume_id = VOL;
		m.chunk = 1;
		break;
	case READ:
		m.volume_id = VOL;
		m.epoch = EPOCH;
		m.chunk = 1;
		m.offset = 4096;
		m.length = 8192;
		break;
	case WRITE:
		m.volume_id = VOL;
		m.epoch = EPOCH;
		m.chunk = 2;
		m.offset = 4096;
		m.length = 8192;
		m.data_len = 8192;
		m.new_version = V2;
		break;
	case PULL:
		m.volume_id = VOL;
		m.epoch = EPOCH;
		m.chunk = 3;
		m.length = CS;
		m.new_version = V1;
		m.source_node = 0x43;
		m.source_addr = "127.0.0.1:9";
		break;
	default:
		break;
	}
	return m;
}

/* The data the server hands chunkd_validate with m: conn_on_header's
 * buffer for a WRITE of at most a chunk, else none. */
static const void *data_of(const Qbd__Msg *m)
{
	return m->type == WRITE && !(m->flags & QBD_WIRE_F_ZERO) && m->data_len &&
	       m->data_len <= CS ? wdata : NULL;
}

static int judge(const Qbd__Msg *m, bool authed, struct chunkd_verdict *v)
{
	struct chunkd_edge x = {
		.cluster_id = d->cluster_id, .node_id = d->node_id, .chunk_size = d->chunk_size,
		.authed = authed, .promised = qbd_engine_promised(d->e, m->volume_id),
		.peer = "test",
	};

	x.tombstoned = qbd_engine_tombstoned(d->e, m->volume_id, &x.tombstone_epoch);
	return chunkd_validate(&x, m, data_of(m), v);
}

/* m, sent to the server, is refused with err without changing the store;
 * when close, the server closes the connection after its reply. */
static void refused_on_wire(const Qbd__Msg *m, int err, bool close)
{
	struct snap before, after;
	struct answer a;

	snap_take(&before);
	a = send_frame(m, close);
	ck_assert_msg(a.status == err, "%s: answered %d, want %d (%s)",
		      qbd_wire_type_name(m->type), a.status, err, strerror(-err));
	ck_assert_msg(a.closed == close, "%s: connection %s", qbd_wire_type_name(m->type),
		      close ? "left open" : "closed");
	if (err == -EPERM || err == -ENOTCONN || err == -EIDRM) {
		uint64_t te;

		ck_assert_uint_eq(a.epoch, qbd_engine_tombstoned(d->e, m->volume_id, &te)
					   ? te : qbd_engine_promised(d->e, m->volume_id));
	}
	ck_assert_uint_eq(qbd_engine_busy(d->e), 0);
	snap_take(&after);
	ck_assert_msg(snap_same(&before, &after), "%s refused with %d changed the store",
		      qbd_wire_type_name(m->type), err);
}

/* chunkd_validate refuses m with err (and the verdict close), and so does
 * the server, changing nothing. */
static void refused(const Qbd__Msg *m, int err, bool close)
{
	struct chunkd_verdict v;
	int rc = judge(m, !d->secret.len, &v);

	ck_assert_msg(rc == err, "chunkd_validate(%s): %d, want %d (%s)",
		      qbd_wire_type_name(m->type), rc, err, strerror(-err));
	ck_assert_int_eq(v.close, close);
	refused_on_wire(m, err, close);
}

static void passes(const Qbd__Msg *m)
{
	struct chunkd_verdict v;
	int rc = judge(m, true, &v);

	ck_assert_msg(rc == 0, "chunkd_validate(%s): %d, want 0",
		      qbd_wire_type_name(m->type), rc);
	ck_assert(!v.close);
}

/* The field of a good request that refused_each spoils. */
enum field { F_CLUSTER = 1, F_NODE, F_REPLY, F_DATA, F_VOLUME, F_EPOCH, F_CHUNK };

/* A good request of each of types with one field set to value is
 * refused with err (closing the connection when close). */
static void refused_each(const int *types, size_t n, enum field f, uint64_t value, int err,
			 bool close)
{
	for (size_t i = 0; i < n; i++) {
		Qbd__Msg m = good(types[i]);

		switch (f) {
		case F_CLUSTER: m.cluster_id = value; break;
		case F_NODE: m.node_id = value; break;
		case F_REPLY: m.reply = value; break;
		case F_DATA:
			if (m.type == WRITE)
				m.flags = QBD_WIRE_F_ZERO;   /* zeroing: no data */
			m.data_len = (uint32_t)value;
			break;
		case F_VOLUME: m.volume_id = value; break;
		case F_EPOCH: m.epoch = value; break;
		case F_CHUNK: m.chunk = value; break;
		}
		refused(&m, err, close);
	}
}

/* ---- good requests ---- */

START_TEST(every_good_request_passes)
{
	Qbd__Msg m;

	for (size_t i = 0; i < N_ALL; i++) {
		m = good(all_types[i]);
		passes(&m);
	}
	m = good(HELLO);
	m.node_id = 0;              /* a client that does not know us yet */
	passes(&m);
	m = good(PING);
	m.volume_id = 0;            /* no volume: any epoch */
	m.epoch = 0;
	passes(&m);
	m = good(USAGE);
	m.volume_id = 0;            /* the whole store */
	passes(&m);
	m = good(CHECKSUM);
	m.epoch = EPOCH - 1;        /* read-only: any epoch */
	passes(&m);
	m = good(OPEN);
	m.epoch = EPOCH + 1;        /* a new writer */
	passes(&m);
	m = good(READ);
	m.flags = QBD_WIRE_F_BITMAP;
	passes(&m);
	m = good(READ);
	m.offset = 0;
	m.length = CS;              /* the whole chunk */
	passes(&m);
	m = good(WRITE);
	m.flags = QBD_WIRE_F_ZERO | QBD_WIRE_F_FUA;
	m.data_len = 0;
	passes(&m);
	m = good(WRITE);
	m.flags = QBD_WIRE_F_RESYNC;
	m.offset = 0;
	m.length = m.data_len = CS;
	passes(&m);
	m = good(WRITE);
	m.flags = QBD_WIRE_F_REPAIR | QBD_WIRE_F_FUA;
	passes(&m);
}
END_TEST

START_TEST(good_write_changes_the_store)
{
	Qbd__Msg m = good(WRITE);
	struct snap before, after;
	struct answer a;
	uint8_t back[8192];
	struct qbd_engine_req r = { .op = QBD_ENGINE_READ, .volume = VOL, .chunk = 2,
				    .offset = 4096, .length = sizeof back, .buf = back };

	snap_take(&before);
	a = send_frame(&m, false);
	ck_assert_int_eq(a.status, 0);
	ck_assert(!a.closed);
	snap_take(&after);
	ck_assert(!snap_same(&before, &after));
	ck_assert_int_eq(eng_run(&r), (int)sizeof back);
	ck_assert_uint_eq(r.version, V2);
	ck_assert_mem_eq(back, wdata, sizeof back);
}
END_TEST

/* ---- identity: cluster, node, authentication ---- */

START_TEST(wrong_cluster_id_is_refused_and_closes)
{
	refused_each(all_types, N_ALL, F_CLUSTER, CLUSTER + 1, -EACCES, true);
	refused_each(all_types, N_ALL, F_CLUSTER, 0, -EACCES, true);
}
END_TEST

START_TEST(wrong_node_id_is_refused_and_closes)
{
	/* HELLO may say node 0: a client that does not know us yet. */
	static const int not_hello[] = { OPEN, READ, WRITE, FLUSH, DELETE, PING, CHECKSUM, PULL,
					 USAGE, AUTH };

	refused_each(all_types, N_ALL, F_NODE, d->node_id ^ 1, -ENXIO, true);
	refused_each(not_hello, N(not_hello), F_NODE, 0, -ENXIO, true);
}
END_TEST

START_TEST(only_hello_and_auth_before_authentication)
{
	d->secret.len = 16;
	memset(d->secret.key, 0x5a, 16);
	for (size_t i = 0; i < N_ALL; i++) {
		Qbd__Msg m = good(all_types[i]);
		struct chunkd_verdict v;

		if (m.type == HELLO || m.type == AUTH) {
			ck_assert_int_eq(judge(&m, false, &v), 0);
			continue;
		}
		ck_assert_int_eq(judge(&m, false, &v), -EACCES);
		ck_assert(v.close && v.unauthed);
		refused_on_wire(&m, -EACCES, true);
	}
}
END_TEST

START_TEST(hello_without_challenge_or_auth_before_hello_is_refused)
{
	Qbd__Msg m = good(HELLO);

	d->secret.len = 16;
	memset(d->secret.key, 0x5a, 16);
	refused_on_wire(&m, -EACCES, true);   /* no nonce: no secret */
	m = good(AUTH);
	refused_on_wire(&m, -EACCES, true);
}
END_TEST

/* ---- shape ---- */

START_TEST(unknown_type_is_refused)
{
	static const int bad[] = { QBD__MSG_TYPE__MSG_NONE, TOMB + 1, 99 };

	for (size_t i = 0; i < N(bad); i++) {
		Qbd__Msg m = good(PING);

		m.type = bad[i];
		refused(&m, -EINVAL, false);
	}
}
END_TEST

START_TEST(reply_is_refused)
{
	refused_each(all_types, N_ALL, F_REPLY, 1, -EINVAL, false);
}
END_TEST

START_TEST(data_where_none_belongs_is_refused)
{
	refused_each(all_types, N_ALL, F_DATA, 4096, -EINVAL, false);
}
END_TEST

START_TEST(range_outside_the_chunk_is_refused)
{
	static const struct { uint32_t off, len; } bad[] = {
		{ 0, 0 },                  /* empty */
		{ 4096, 0 },
		{ 0, CS + 4096 },          /* longer than a chunk */
		{ CS - 4096, 8192 },       /* across the end */
		{ CS, 4096 },              /* past the end */
		{ UINT32_MAX, 8192 },      /* offset + length overflows 32 bits */
	};
	static const int types[] = { READ, WRITE };

	for (size_t t = 0; t < 2; t++) {
		for (size_t i = 0; i < N(bad); i++) {
			Qbd__Msg m = good(types[t]);

			m.offset = bad[i].off;
			m.length = bad[i].len;
			if (m.type == WRITE)
				m.data_len = bad[i].len;
			refused(&m, -EINVAL, false);
		}
	}
}
END_TEST

START_TEST(oversize_write_payload_is_refused)
{
	Qbd__Msg m = good(WRITE);

	m.offset = 0;
	m.length = m.data_len = 2 * CS;    /* more than a chunk: discarded */
	refused(&m, -EINVAL, false);
	m = good(WRITE);
	m.data_len = 2 * CS;               /* more than its length */
	refused(&m, -EINVAL, false);
	m = good(WRITE);
	m.data_len = 4096;                 /* less than its length */
	refused(&m, -EINVAL, false);
	m = good(WRITE);
	m.data_len = 0;                    /* none, not zeroing */
	refused(&m, -EINVAL, false);
}
END_TEST

START_TEST(misaligned_bitmap_read_is_refused)
{
	static const struct { uint32_t off, len; } bad[] = {
		{ 512, 4096 }, { 0, 4095 }, { 4096, 100 },
	};

	for (size_t i = 0; i < N(bad); i++) {
		Qbd__Msg m = good(READ);

		m.flags = QBD_WIRE_F_BITMAP;
		m.offset = bad[i].off;
		m.length = bad[i].len;
		refused(&m, -EINVAL, false);
	}
}
END_TEST

START_TEST(unknown_flags_are_refused)
{
	Qbd__Msg m = good(READ);

	m.flags = QBD_WIRE_F_FUA;          /* a WRITE flag */
	refused(&m, -EINVAL, false);
	m.flags = 0x100;
	refused(&m, -EINVAL, false);
	m = good(WRITE);
	m.flags = QBD_WIRE_F_BITMAP;       /* a READ flag */
	refused(&m, -EINVAL, false);
	m.flags = 0x80000000u;
	refused(&m, -EINVAL, false);
	m = good(OPEN);
	m.flags = QBD_WIRE_F_FUA;
	refused(&m, -EINVAL, false);
	m = good(TOMB);
	m.flags = QBD_WIRE_F_ADD;          /* an OPEN flag */
	refused(&m, -EINVAL, false);
}
END_TEST

START_TEST(resync_of_part_or_mixed_is_refused)
{
	Qbd__Msg m = good(WRITE);

	m.flags = QBD_WIRE_F_RESYNC;       /* not the whole chunk */
	refused(&m, -EINVAL, false);
	m = good(WRITE);
	m.offset = 0;
	m.length = m.data_len = CS;
	m.flags = QBD_WIRE_F_RESYNC | QBD_WIRE_F_REPAIR;
	refused(&m, -EINVAL, false);
	m.flags = QBD_WIRE_F_RESYNC | QBD_WIRE_F_ZERO;
	m.data_len = 0;
	refused(&m, -EINVAL, false);
}
END_TEST

START_TEST(pull_of_part_or_without_source_is_refused)
{
	Qbd__Msg m = good(PULL);

	m.length = CS - 4096;
	refused(&m, -EINVAL, false);
	m = good(PULL);
	m.offset = 4096;
	m.length = CS - 4096;
	refused(&m, -EINVAL, false);
	m = good(PULL);
	m.source_node = 0;
	refused(&m, -EINVAL, false);
	m = good(PULL);
	m.source_addr = NULL;
	refused(&m, -EINVAL, false);
	m.source_addr = "";
	refused(&m, -EINVAL, false);
}
END_TEST

START_TEST(chunk_beyond_the_wire_is_refused)
{
	/* An OPEN reply could not list it (QBD_WIRE_MAX_CHUNK): once
	 * stored, every later OPEN of the volume would fail. */
	static const int types[] = { READ, WRITE, PULL, CHECKSUM };

	refused_each(types, N(types), F_CHUNK, QBD_WIRE_MAX_CHUNK + 1, -EINVAL, false);
	refused_each(types, N(types), F_CHUNK, UINT64_MAX, -EINVAL, false);
}
END_TEST

START_TEST(volume_zero_is_refused)
{
	/* 0 is no volume (the engine's free promise entry); PING and USAGE
	 * use it to mean none and the whole store. */
	static const int types[] = { OPEN, READ, WRITE, FLUSH, DELETE, PULL, CHECKSUM };

	for (size_t i = 0; i < N(types); i++) {
		Qbd__Msg m = good(types[i]);

		m.volume_id = 0;
		refused(&m, -EINVAL, false);
		m.epoch = 0;
		refused(&m, -EINVAL, false);
	}
}
END_TEST

/* ---- epochs and volumes ---- */

START_TEST(old_epoch_is_fenced)
{
	static const int types[] = { READ, WRITE, FLUSH, PULL, PING, OPEN, DELETE, TOMB };

	refused_each(types, N(types), F_EPOCH, EPOCH - 1, -EPERM, false);
	refused_each(types, N(types), F_EPOCH, 1, -EPERM, false);
}
END_TEST

START_TEST(epoch_not_promised_is_not_served)
{
	refused_each(data_path, N_DATA_PATH, F_EPOCH, EPOCH + 1, -ENOTCONN, false);
	refused_each(data_path, N_DATA_PATH, F_EPOCH, UINT64_MAX, -ENOTCONN, false);
}
END_TEST

START_TEST(volume_not_open_here_is_not_served)
{
	refused_each(data_path, N_DATA_PATH, F_VOLUME, OTHER, -ENOTCONN, false);
}
END_TEST

START_TEST(epoch_zero_is_refused)
{
	/* Writers' epochs start at 1: 0 is no promise at all. */
	static const int types[] = { OPEN, DELETE, TOMB };

	for (size_t i = 0; i < N(types); i++) {
		Qbd__Msg m = good(types[i]);

		m.volume_id = OTHER;
		m.epoch = 0;
		refused(&m, -EINVAL, false);
	}
}
END_TEST

START_TEST(volume_not_open_here_is_not_served_at_epoch_zero)
{
	/* Its promised epoch is 0 too: equal, but nothing was promised. */
	for (size_t i = 0; i < N_DATA_PATH; i++) {
		Qbd__Msg m = good(data_path[i]);

		m.volume_id = OTHER;
		m.epoch = 0;
		refused(&m, -ENOTCONN, false);
	}
}
END_TEST

/* ---- tombstones ---- */

/* A TOMBSTONE must carry at least the promised epoch: one below is a
 * deposed writer's (or an operator's mistake) and changes nothing. */
START_TEST(tombstone_below_promised_epoch_is_refused)
{
	Qbd__Msg m = good(TOMB);

	m.epoch = EPOCH - 1;
	refused(&m, -EPERM, false);
	m.epoch = 1;
	refused(&m, -EPERM, false);
	ck_assert(!qbd_engine_tombstoned(d->e, VOL, NULL));
	ck_assert_uint_eq(qbd_engine_promised(d->e, VOL), EPOCH);
}
END_TEST

/* After a TOMBSTONE, every OPEN of the volume is refused with EIDRM at
 * any epoch, and logged once; the data path with EIDRM (EPERM below the
 * tombstone's epoch, as for any deposed writer); nothing of it changes
 * the store. Only an OPEN with F_ADD at or above the tombstone's epoch
 * takes the node back. */
START_TEST(open_after_tombstone_is_refused_eidrm)
{
	static const uint64_t epochs[] = { 1, EPOCH - 1, EPOCH, EPOCH + 1, UINT64_MAX };
	Qbd__Msg m = good(TOMB);
	struct answer a = send_frame(&m, false);
	uint64_t te;

	ck_assert_int_eq(a.status, 0);
	ck_assert_uint_eq(a.epoch, EPOCH);
	ck_assert(qbd_engine_tombstoned(d->e, VOL, &te));
	ck_assert_uint_eq(te, EPOCH);
	ck_assert_uint_eq(qbd_engine_chunk_version(d->e, VOL, 1), 0); /* freed */
	for (size_t i = 0; i < N(epochs); i++) {
		m = good(OPEN);
		m.epoch = epochs[i];
		refused(&m, -EIDRM, false);
	}
	ck_assert_uint_eq(d->tomb_logged[0], VOL);
	ck_assert_uint_eq(d->tomb_logged_next, 1); /* once, not per OPEN */
	refused_each(data_path, N_DATA_PATH, F_EPOCH, EPOCH, -EIDRM, false);
	refused_each(data_path, N_DATA_PATH, F_EPOCH, EPOCH + 1, -EIDRM, false);
	refused_each(data_path, N_DATA_PATH, F_EPOCH, EPOCH - 1, -EPERM, false);
	m = good(TOMB);
	m.epoch = EPOCH - 1;
	refused(&m, -EPERM, false);
	m = good(OPEN);
	m.flags = QBD_WIRE_F_ADD;          /* below the tombstone */
	m.epoch = EPOCH - 1;
	refused(&m, -EPERM, false);
	m.epoch = EPOCH;                   /* the writer that removed it */
	a = send_frame(&m, false);
	ck_assert_int_eq(a.status, 0);
	ck_assert_uint_eq(a.epoch, EPOCH);
	ck_assert(!qbd_engine_tombstoned(d->e, VOL, NULL));
	ck_assert_uint_eq(qbd_engine_promised(d->e, VOL), EPOCH);
}
END_TEST

/* The reclaim frees the chunks of a volume judged gone and leaves a
 * tombstone in place of its promise, so that an OPEN of it is refused
 * (EIDRM) rather than promised by an empty replica; a tombstone alone is
 * nothing a later scan looks at. */
START_TEST(reclaim_leaves_a_tombstone)
{
	struct chunkd_reclaim *r = &d->reclaim;
	struct qbd_engine_volume *v;
	Qbd__Msg m = good(OPEN);
	uint64_t te;
	size_t n;
	int i;

	ck_assert_int_eq(qbd_engine_volumes(d->e, &r->held, &r->nheld), 0);
	ck_assert_uint_eq(r->nheld, 1);
	ck_assert_uint_eq(chunkd_reclaim_holdings(r->held, r->nheld), 1);
	r->verdicts = calloc(r->nheld, sizeof *r->verdicts);
	ck_assert_ptr_nonnull(r->verdicts);
	r->verdicts[0].verdict = RECLAIM_NOW;
	r->busy = true;
	chunkd_reclaim_next(d);
	for (i = 0; i < 5000 && r->busy; i++) {
		uv_run(&d->loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 1);
	}
	ck_assert(!r->busy);
	ck_assert_uint_eq(r->numbers.reclaimed, 1);
	ck_assert_msg(qbd_engine_tombstoned(d->e, VOL, &te), "the reclaim left no tombstone");
	ck_assert_uint_eq(te, EPOCH);
	ck_assert_uint_eq(qbd_engine_chunk_version(d->e, VOL, 1), 0);
	m.epoch = EPOCH + 1;
	refused(&m, -EIDRM, false);
	ck_assert_int_eq(qbd_engine_volumes(d->e, &v, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert(v[0].tombstone);
	ck_assert_uint_eq(chunkd_reclaim_holdings(v, n), 0);
	free(v);
}
END_TEST

/* ---- sparse resync copies (QBD_WIRE_F_SPARSE) ---- */

/* A SPARSE RESYNC write of chunk 1 (written whole at setup) marking
 * blocks 0 and 15 of 16: the chunk ends with those two blocks at the new
 * version and every block it held besides reads as zeros, a hole. */
START_TEST(sparse_resync_write_leaves_holes_where_the_source_has_them)
{
	Qbd__Msg m = good(WRITE);
	uint8_t back[CS], bm[2], want[CS];
	struct qbd_engine_req r = { .op = QBD_ENGINE_READ, .volume = VOL, .chunk = 1,
				    .length = CS, .buf = back };
	struct qbd_engine_req b = { .op = QBD_ENGINE_BITMAP, .volume = VOL, .chunk = 1,
				    .length = CS, .buf = bm };
	struct answer a;

	wdata[0] = 0x01;
	wdata[1] = 0x80;
	m.chunk = 1;
	m.offset = 0;
	m.length = CS;
	m.data_len = 2 + 2 * 4096;
	m.flags = QBD_WIRE_F_RESYNC | QBD_WIRE_F_SPARSE | QBD_WIRE_F_FUA;
	passes(&m);
	a = send_frame(&m, false);
	ck_assert_int_eq(a.status, 0);
	memset(want, 0, sizeof want);
	memcpy(want, wdata + 2, 4096);
	memcpy(want + 15 * 4096, wdata + 2 + 4096, 4096);
	ck_assert_int_eq(eng_run(&r), (int)CS);
	ck_assert_uint_eq(r.version, V2);
	ck_assert_mem_eq(back, want, CS);
	ck_assert_int_eq(eng_run(&b), 0);
	ck_assert_uint_eq(bm[0], 0x01);
	ck_assert_uint_eq(bm[1], 0x80);
}
END_TEST

/* A sparse form that is not the bitmap plus exactly the blocks it marks,
 * SPARSE without RESYNC, and SPARSE reads of part of a chunk or with
 * BITMAP are refused, changing nothing. */
START_TEST(malformed_sparse_requests_are_refused)
{
	Qbd__Msg m = good(WRITE);

	wdata[0] = 0x07;                     /* three blocks marked */
	wdata[1] = 0;
	m.chunk = 1;
	m.offset = 0;
	m.length = CS;
	m.flags = QBD_WIRE_F_RESYNC | QBD_WIRE_F_SPARSE;
	m.data_len = 2 + 2 * 4096;           /* two sent */
	refused(&m, -EINVAL, false);
	m.data_len = 2 + 4 * 4096;           /* four sent */
	refused(&m, -EINVAL, false);
	m.data_len = 1;                      /* not even the bitmap */
	refused(&m, -EINVAL, false);
	m.data_len = 2 + 3 * 4096;
	passes(&m);
	m.flags = QBD_WIRE_F_SPARSE;         /* not a RESYNC */
	refused(&m, -EINVAL, false);
	m = good(READ);
	m.flags = QBD_WIRE_F_SPARSE;         /* part of the chunk */
	refused(&m, -EINVAL, false);
	m.offset = 0;
	m.length = CS;
	m.flags = QBD_WIRE_F_SPARSE | QBD_WIRE_F_BITMAP;
	refused(&m, -EINVAL, false);
	m.flags = QBD_WIRE_F_SPARSE;
	passes(&m);
}
END_TEST

/* ---- reclaim: the decision ---- */

#define GRACE 1000000000ull   /* 1 s */
#define VA 0xa1ull            /* held here; etcd does not have it */
#define VB 0xb2ull            /* held here; etcd has it */
#define ME 0xc3ull            /* this store's node */

/* An etcd answer at revision rev with the volume ids given (sorted). */
static struct qbd_meta_volume_scan answer(uint64_t rev, const uint64_t *ids, size_t n)
{
	return (struct qbd_meta_volume_scan){ .revision = rev, .cluster_id = CLUSTER,
					      .ids = (uint64_t *)ids, .n = n };
}

static const struct qbd_engine_volume held_ab[] = {
	{ .volume = VA, .chunks = 3, .held = 12288 },
	{ .volume = VB, .chunks = 1, .held = 4096 },
};
static const uint64_t ids_b[] = { VB };
static const uint64_t ids_ab[] = { VA, VB };

/* Judge held_ab against one answer; returns decide's status. */
static int decide(struct chunkd_reclaim_memory *mem, struct qbd_meta_volume_scan a,
		 uint64_t now, struct chunkd_reclaim_judgement j[2])
{
	return chunkd_reclaim_decide(mem, GRACE, CLUSTER, ME, held_ab, 2, &a, now, j);
}

/* A volume absent from two answers the grace apart, the later at a
 * later revision, is reclaimed; one etcd has is kept throughout. */
START_TEST(absent_twice_grace_apart_is_reclaimed)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];

	ck_assert_int_eq(decide(&mem, answer(10, ids_b, 1), 100, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_uint_eq(j[0].first_rev, 10);
	ck_assert_int_eq(j[1].verdict, RECLAIM_KEEP);
	/* later revision, but not the grace yet */
	ck_assert_int_eq(decide(&mem, answer(11, ids_b, 1), 100 + GRACE - 1, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_WAIT);
	ck_assert_int_eq(j[1].verdict, RECLAIM_KEEP);
	ck_assert_int_eq(decide(&mem, answer(12, ids_b, 1), 100 + GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_NOW);
	ck_assert_uint_eq(j[0].first_ns, 100);
	ck_assert_uint_eq(j[0].first_rev, 10);
	ck_assert_int_eq(j[1].verdict, RECLAIM_KEEP);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* However long it waits, an answer no newer than the first sighting
 * reclaims nothing: an etcd member answering from an old state could
 * predate the creation of a volume whose chunks are already here. */
START_TEST(answer_no_newer_than_first_sighting_reclaims_nothing)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];

	ck_assert_int_eq(decide(&mem, answer(10, ids_b, 1), 0, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_int_eq(decide(&mem, answer(10, ids_b, 1), 5 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_WAIT);
	ck_assert_int_eq(decide(&mem, answer(11, ids_b, 1), 6 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_NOW);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* A volume etcd has again (its creation, seen late) is forgotten: its
 * next absence starts the count anew. */
START_TEST(present_again_starts_anew)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];

	ck_assert_int_eq(decide(&mem, answer(10, ids_b, 1), 0, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_int_eq(decide(&mem, answer(11, ids_ab, 2), GRACE / 2, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
	ck_assert_uint_eq(mem.n, 0);
	ck_assert_int_eq(decide(&mem, answer(12, ids_b, 1), GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_uint_eq(j[0].first_rev, 12);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* An answer of another cluster's etcd (or one without a cluster id)
 * reclaims nothing and wipes what was seen: the store's own etcd must
 * then see the volume absent twice again. */
START_TEST(other_cluster_reclaims_nothing)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];
	struct qbd_meta_volume_scan a;

	ck_assert_int_eq(decide(&mem, answer(10, ids_b, 1), 0, j), 0);
	a = answer(20, NULL, 0);
	a.cluster_id = CLUSTER + 1;
	ck_assert_int_eq(decide(&mem, a, 2 * GRACE, j), -EACCES);
	ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
	ck_assert_int_eq(j[1].verdict, RECLAIM_KEEP);
	a.cluster_id = 0;
	ck_assert_int_eq(decide(&mem, a, 3 * GRACE, j), -EACCES);
	ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
	ck_assert_int_eq(decide(&mem, answer(21, ids_b, 1), 4 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	/* and a store without a cluster id acts on nothing */
	ck_assert_int_eq(chunkd_reclaim_decide(&mem, GRACE, 0, ME, held_ab, 2, &a, 5 * GRACE, j),
			 -EACCES);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* etcd's revision going back (a restore, another etcd) wipes what was
 * seen. */
START_TEST(revision_going_back_starts_anew)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];

	ck_assert_int_eq(decide(&mem, answer(10, ids_b, 1), 0, j), 0);
	ck_assert_int_eq(decide(&mem, answer(5, ids_b, 1), 2 * GRACE, j), -ESTALE);
	ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
	ck_assert_int_eq(decide(&mem, answer(6, ids_b, 1), 3 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_int_eq(decide(&mem, answer(7, ids_b, 1), 4 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_NOW);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* A volume the store no longer holds is forgotten (it was deleted by
 * hand, say); held again, it starts anew. */
START_TEST(volume_no_longer_held_is_forgotten)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];
	struct qbd_meta_volume_scan a = answer(11, ids_b, 1);

	ck_assert_int_eq(decide(&mem, answer(10, ids_b, 1), 0, j), 0);
	ck_assert_int_eq(chunkd_reclaim_decide(&mem, GRACE, CLUSTER, ME, held_ab + 1, 1, &a,
					       GRACE / 2, j), 0);
	ck_assert_uint_eq(mem.n, 0);
	ck_assert_int_eq(decide(&mem, answer(12, ids_b, 1), 2 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* ---- reclaim: a replica moved away (the volume exists, its
 * configuration does not list this node) ---- */

/* An answer at rev in which VA and VB both exist: VB's configuration
 * lists this node, VA's is va (configuration number and nodes). */
static struct qbd_meta_volume_scan answer_va(uint64_t rev, struct qbd_meta_volume_members va)
{
	static struct qbd_meta_volume_members m[2];

	m[0] = va;
	m[1] = (struct qbd_meta_volume_members){ .cfg = 1, .n = 3, .nodes = { 1, ME, 2 } };
	return (struct qbd_meta_volume_scan){ .revision = rev, .cluster_id = CLUSTER,
					      .ids = (uint64_t *)ids_ab, .members = m,
					      .n = 2 };
}

/* VA at configuration cfg on nodes 1, 2 and 4 (not this one). */
static struct qbd_meta_volume_members moved(uint64_t cfg)
{
	return (struct qbd_meta_volume_members){ .cfg = cfg, .n = 3, .nodes = { 1, 2, 4 } };
}

/* Not a member in two answers at least the grace apart, the later at a
 * later revision, with the same configuration number: reclaimed. */
START_TEST(not_member_twice_same_cfg_is_reclaimed)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];

	ck_assert_int_eq(decide(&mem, answer_va(10, moved(2)), 100, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_uint_eq(j[0].cfg, 2);
	ck_assert_uint_eq(j[0].first_rev, 10);
	ck_assert_int_eq(j[1].verdict, RECLAIM_KEEP);
	ck_assert_int_eq(decide(&mem, answer_va(11, moved(2)), 100 + GRACE - 1, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_WAIT);
	ck_assert_int_eq(decide(&mem, answer_va(12, moved(2)), 100 + GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_NOW);
	ck_assert_uint_eq(j[0].cfg, 2);
	ck_assert_uint_eq(j[0].first_ns, 100);
	ck_assert_uint_eq(j[0].first_rev, 10);
	ck_assert_int_eq(j[1].verdict, RECLAIM_KEEP);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* A configuration number that moved on between two sightings starts the
 * count again: a change completed in between (the node added back and
 * moved away again, say) is not the configuration first seen. Neither
 * does a not-a-member sighting count toward an absent one, nor the other
 * way round. */
START_TEST(not_member_at_another_cfg_starts_anew)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];

	ck_assert_int_eq(decide(&mem, answer_va(10, moved(2)), 0, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_int_eq(decide(&mem, answer_va(11, moved(3)), 2 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_uint_eq(j[0].cfg, 3);
	ck_assert_uint_eq(j[0].first_rev, 11);
	ck_assert_int_eq(decide(&mem, answer_va(12, moved(3)), 3 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_NOW);
	/* absent, then not a member, then absent: each starts anew */
	chunkd_reclaim_memory_free(&mem);
	ck_assert_int_eq(decide(&mem, answer(20, ids_b, 1), 0, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_uint_eq(j[0].cfg, 0);
	ck_assert_int_eq(decide(&mem, answer_va(21, moved(2)), 2 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_uint_eq(j[0].cfg, 2);
	ck_assert_int_eq(decide(&mem, answer(22, ids_b, 1), 4 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_uint_eq(j[0].cfg, 0);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* A node the configuration lists, as a voter or as the new node of a
 * change standing, is never reclaimed however long and often it is
 * seen; nor is one of a volume whose nodes the answer cannot say. A
 * listing between two not-a-member sightings forgets the first. */
START_TEST(member_is_never_reclaimed)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];
	const struct qbd_meta_volume_members voter = { .cfg = 2, .n = 3, .nodes = { 1, ME, 4 } };
	const struct qbd_meta_volume_members learner = { .cfg = 2, .n = 4,
							 .nodes = { 1, 2, 4, ME } };
	const struct qbd_meta_volume_members unknown = { 0 };
	struct qbd_meta_volume_scan a;

	for (uint64_t i = 0; i < 4; i++) {
		ck_assert_int_eq(decide(&mem, answer_va(10 + 3 * i, voter), i * 2 * GRACE, j), 0);
		ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
		ck_assert_int_eq(decide(&mem, answer_va(11 + 3 * i, learner), 10 * GRACE + i * 2 * GRACE,
					j), 0);
		ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
		ck_assert_int_eq(decide(&mem, answer_va(12 + 3 * i, unknown), 20 * GRACE + i * 2 * GRACE,
					j), 0);
		ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
		ck_assert_uint_eq(mem.n, 0);
	}
	/* an answer without configurations (members NULL) keeps them all */
	a = answer_va(40, moved(2));
	a.members = NULL;
	ck_assert_int_eq(decide(&mem, a, 30 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
	/* not a member, then added back as a learner, then not again */
	ck_assert_int_eq(decide(&mem, answer_va(41, moved(2)), 31 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_int_eq(decide(&mem, answer_va(42, learner), 33 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
	ck_assert_uint_eq(mem.n, 0);
	ck_assert_int_eq(decide(&mem, answer_va(43, moved(2)), 35 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	ck_assert_uint_eq(j[0].first_rev, 43);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* Not a member, as told by another cluster's etcd, decides nothing. */
START_TEST(not_member_other_cluster_reclaims_nothing)
{
	struct chunkd_reclaim_memory mem = { 0 };
	struct chunkd_reclaim_judgement j[2];
	struct qbd_meta_volume_scan a;

	ck_assert_int_eq(decide(&mem, answer_va(10, moved(2)), 0, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	a = answer_va(11, moved(2));
	a.cluster_id = CLUSTER + 1;
	ck_assert_int_eq(decide(&mem, a, 2 * GRACE, j), -EACCES);
	ck_assert_int_eq(j[0].verdict, RECLAIM_KEEP);
	ck_assert_int_eq(decide(&mem, answer_va(12, moved(2)), 3 * GRACE, j), 0);
	ck_assert_int_eq(j[0].verdict, RECLAIM_FOUND);
	chunkd_reclaim_memory_free(&mem);
}
END_TEST

/* ---- reclaim: etcd's answer ---- */

/* A kvs entry {"key":b64(key)[,"value":b64(value)]} appended to o. */
static void kv_json(char *o, size_t len, const char *key, const char *value)
{
	char *k = meta_b64_encode(key, strlen(key));
	char *v = value ? meta_b64_encode(value, strlen(value)) : NULL;
	size_t at = strlen(o);

	snprintf(o + at, len - at, "%s{\"key\":\"%s\"%s%s%s}", o[at - 1] == '[' ? "" : ",",
		 k, v ? ",\"value\":\"" : "", v ? v : "", v ? "\"" : "");
	free(k);
	free(v);
}

/* The answer of a scan's transaction: revision rev; volume 0x10 by its
 * record and epoch, 0x20 by its id key only; extra is spliced into the
 * volume-ids range (e.g. "\"more\":true,"), count_ids its count. */
static char *scan_json(const char *rev, const char *extra, const char *count_ids,
		       const char *bad_key, const char *bad_record)
{
	static char j[16384];
	char kvs[4][2048];

	snprintf(kvs[0], sizeof kvs[0], "[");
	kv_json(kvs[0], sizeof kvs[0], "/qbd/cluster", "{\"id\":\"5eed\"}");
	snprintf(kvs[1], sizeof kvs[1], "[");
	kv_json(kvs[1], sizeof kvs[1], "/qbd/volumes/v1", bad_record ? bad_record :
		"{\"name\":\"v1\",\"id\":\"0000000000000010\",\"size\":4096,"
		"\"chunk_size\":1048576,\"replicas\":1,\"write_quorum\":1,"
		"\"nodes\":[\"1\"]}");
	snprintf(kvs[2], sizeof kvs[2], "[");
	kv_json(kvs[2], sizeof kvs[2], "/qbd/volume-ids/0000000000000020", NULL);
	kv_json(kvs[2], sizeof kvs[2], bad_key ? bad_key : "/qbd/volume-ids/0000000000000010",
		NULL);
	snprintf(kvs[3], sizeof kvs[3], "[");
	kv_json(kvs[3], sizeof kvs[3], "/qbd/epochs/0000000000000010", NULL);
	for (int i = 0; i < 4; i++)
		strcat(kvs[i], "]");
	snprintf(j, sizeof j,
		 "{\"header\":{%s},\"succeeded\":true,\"responses\":["
		 "{\"response_range\":{\"header\":{},\"kvs\":%s,\"count\":\"1\"}},"
		 "{\"response_range\":{\"header\":{},\"kvs\":%s,\"count\":\"1\"}},"
		 "{\"response_range\":{\"header\":{},%s\"kvs\":%s,\"count\":\"%s\"}},"
		 "{\"response_range\":{\"header\":{},\"kvs\":%s,\"count\":\"1\"}}]}",
		 rev, kvs[0], kvs[1], extra, kvs[2], count_ids, kvs[3]);
	return j;
}

START_TEST(scan_answer_is_read_whole)
{
	struct qbd_meta_volume_scan a;

	ck_assert_int_eq(meta_volume_scan_from_json(
		scan_json("\"revision\":\"42\"", "", "2", NULL, NULL), &a), 0);
	ck_assert_uint_eq(a.revision, 42);
	ck_assert_uint_eq(a.cluster_id, CLUSTER);
	ck_assert_uint_eq(a.n, 2);
	ck_assert_uint_eq(a.ids[0], 0x10);
	ck_assert_uint_eq(a.ids[1], 0x20);
	/* 0x10's record lists node 1 (no "cfg": configuration 1); 0x20 has
	 * no record: its members are not known */
	ck_assert_uint_eq(a.members[0].cfg, 1);
	ck_assert_uint_eq(a.members[0].n, 1);
	ck_assert_uint_eq(a.members[0].nodes[0], 1);
	ck_assert_uint_eq(a.members[1].cfg, 0);
	qbd_meta_volume_scan_free(&a);
	ck_assert_ptr_null(a.ids);
	ck_assert_ptr_null(a.members);
	/* an empty etcd: no cluster id, no volumes */
	ck_assert_int_eq(meta_volume_scan_from_json(
		"{\"header\":{\"revision\":\"3\"},\"succeeded\":true,\"responses\":["
		"{\"response_range\":{\"header\":{}}},{\"response_range\":{\"header\":{}}},"
		"{\"response_range\":{\"header\":{}}},{\"response_range\":{\"header\":{}}}]}",
		&a), 0);
	ck_assert_uint_eq(a.revision, 3);
	ck_assert_uint_eq(a.cluster_id, 0);
	ck_assert_uint_eq(a.n, 0);
	qbd_meta_volume_scan_free(&a);
}
END_TEST

/* A record with a change standing lists its voters and the change's new
 * node, with its configuration number. */
START_TEST(scan_answer_lists_each_configuration)
{
	struct qbd_meta_volume_scan a;

	ck_assert_int_eq(meta_volume_scan_from_json(scan_json("\"revision\":\"42\"", "", "2",
		NULL, "{\"name\":\"v1\",\"id\":\"0000000000000010\",\"size\":4096,"
		"\"chunk_size\":1048576,\"replicas\":3,\"write_quorum\":2,"
		"\"nodes\":[\"1\",\"2\",\"3\"],\"cfg\":4,\"change\":{\"phase\":\"joint\","
		"\"slot\":2,\"node\":\"0000000000000009\",\"reason\":\"move\","
		"\"started\":1}}"), &a), 0);
	ck_assert_uint_eq(a.n, 2);
	ck_assert_uint_eq(a.members[0].cfg, 4);
	ck_assert_uint_eq(a.members[0].n, 4);
	ck_assert_uint_eq(a.members[0].nodes[0], 1);
	ck_assert_uint_eq(a.members[0].nodes[2], 3);
	ck_assert_uint_eq(a.members[0].nodes[3], 9);
	ck_assert_uint_eq(a.members[1].cfg, 0);
	qbd_meta_volume_scan_free(&a);
}
END_TEST

/* Anything missing, truncated or unreadable fails the whole answer. */
START_TEST(partial_scan_answer_is_refused)
{
	struct qbd_meta_volume_scan a;

	/* etcd says it left entries out */
	ck_assert_int_eq(meta_volume_scan_from_json(
		scan_json("\"revision\":\"42\"", "\"more\":true,", "2", NULL, NULL), &a),
		-EPROTO);
	ck_assert_ptr_null(a.ids);
	/* fewer entries than counted */
	ck_assert_int_eq(meta_volume_scan_from_json(
		scan_json("\"revision\":\"42\"", "", "3", NULL, NULL), &a), -EPROTO);
	/* no revision */
	ck_assert_int_eq(meta_volume_scan_from_json(
		scan_json("\"cluster_id\":\"1\"", "", "2", NULL, NULL), &a), -EPROTO);
	/* a key that names no volume id, a record that cannot be read */
	ck_assert_int_eq(meta_volume_scan_from_json(
		scan_json("\"revision\":\"42\"", "", "2", "/qbd/volume-ids/xyz", NULL), &a),
		-EPROTO);
	ck_assert_int_eq(meta_volume_scan_from_json(
		scan_json("\"revision\":\"42\"", "", "2", NULL, "{\"name\":\"v1\"}"), &a),
		-EPROTO);
	/* a range missing, not JSON */
	ck_assert_int_eq(meta_volume_scan_from_json(
		"{\"header\":{\"revision\":\"3\"},\"responses\":["
		"{\"response_range\":{}},{\"response_range\":{}},{\"response_range\":{}}]}",
		&a), -EPROTO);
	ck_assert_int_eq(meta_volume_scan_from_json("{\"header\":", &a), -EPROTO);
	ck_assert_ptr_null(a.ids);
}
END_TEST

/* The node record carries the reclaim's numbers to `qbd node list`. */
START_TEST(node_record_carries_orphaned_numbers)
{
	struct qbd_node_info n = { .id = 0xab, .addr = "h:1", .zone = "z", .capacity = 1 }, n2;
	char *j;

	n.orphaned = (struct qbd_node_orphaned){ .volumes = 2, .chunks = 9, .held = 36864,
						 .moved = 1, .moved_held = 4096,
						 .found = 3, .reclaimed = 1,
						 .reclaimed_bytes = 8192 };
	j = meta_node_to_json(&n);
	ck_assert_ptr_nonnull(j);
	ck_assert_int_eq(meta_node_from_json(j, &n2), 0);
	ck_assert_mem_eq(&n2.orphaned, &n.orphaned, sizeof n.orphaned);
	free(j);
	/* a record of an older chunk server reads as nothing orphaned */
	ck_assert_int_eq(meta_node_from_json(
		"{\"id\":\"ab\",\"addr\":\"h:1\",\"zone\":\"z\",\"capacity\":1}", &n2), 0);
	ck_assert_uint_eq(n2.orphaned.held, 0);
}
END_TEST

/* ---- background I/O behind client I/O (admit.c) ---- */

/* Which requests are background, and when one more may go in. */
START_TEST(admission_decision)
{
	struct chunkd_admit a = { 0 };
	const uint64_t now = 10ull * 1000000000ull;

	ck_assert(chunkd_is_background(READ, true, 0));
	ck_assert(!chunkd_is_background(READ, false, 0));
	ck_assert(chunkd_is_background(WRITE, false, QBD_ENGINE_F_RESYNC | QBD_ENGINE_F_FUA));
	ck_assert(!chunkd_is_background(WRITE, false, QBD_ENGINE_F_FUA));
	ck_assert(!chunkd_is_background(WRITE, false, QBD_ENGINE_F_REPAIR));
	ck_assert(chunkd_is_background(PULL, false, QBD_ENGINE_F_RESYNC));
	ck_assert(chunkd_is_background(CHECKSUM, false, 0));
	for (int t = 0; t < CHUNKD_OPS; t++)
		if (t != READ && t != WRITE && t != PULL && t != CHECKSUM)
			ck_assert_msg(!chunkd_is_background(t, false, 0), "%d background", t);
	/* Idle: any number goes in. */
	a.bg_inflight = 5;
	ck_assert(chunkd_admit_may(&a, now));
	/* A foreground request in the engine: one background at most. */
	a.fg_inflight = 1;
	a.fg_last_ns = now - 60ull * 1000000000ull;
	ck_assert(!chunkd_admit_may(&a, now));
	a.bg_inflight = CHUNKD_BG_BUSY_MAX - 1;
	ck_assert(chunkd_admit_may(&a, now));
	/* None in the engine, one seen within the window: still busy. */
	a.bg_inflight = CHUNKD_BG_BUSY_MAX;
	a.fg_inflight = 0;
	a.fg_last_ns = now - CHUNKD_BUSY_WINDOW_NS / 2;
	ck_assert(!chunkd_admit_may(&a, now));
	a.fg_last_ns = now - CHUNKD_BUSY_WINDOW_NS;
	ck_assert(chunkd_admit_may(&a, now));
	/* A clock before the last one seen (never negative). */
	a.fg_last_ns = now + 1;
	ck_assert(!chunkd_admit_may(&a, now));
}
END_TEST

/* A connection the test sends frames on and reads the answers of, in
 * order. */
struct client {
	int fd;
	struct chunkd_conn *c;
	struct qbd_wire_rx rx;
	int n;
	int type[8], status[8];
	uint64_t epoch[8];
};

static void *cl_on_header(void *user, const Qbd__Msg *m)
{
	(void)user;
	(void)m;
	return QBD_WIRE_DISCARD;
}

static int cl_on_frame(void *user, Qbd__Msg *m, void *data)
{
	struct client *cl = user;

	(void)data;
	ck_assert_int_lt(cl->n, 8);
	cl->type[cl->n] = m->type;
	cl->status[cl->n] = m->status;
	cl->epoch[cl->n] = m->epoch;
	cl->n++;
	return 0;
}

static const struct qbd_wire_rx_ops cl_ops = { cl_on_header, cl_on_frame };

static void cl_open(struct client *cl)
{
	memset(cl, 0, sizeof *cl);
	qbd_wire_rx_init(&cl->rx);
	cl->c = conn_open(&cl->fd);
}

static void cl_send(struct client *cl, const Qbd__Msg *m)
{
	uint8_t out[QBD_WIRE_FRAME_MAX_PREFIX + sizeof wdata];
	ssize_t h = qbd_wire_encode(m, out, sizeof out);
	size_t len, sent = 0;

	ck_assert_int_gt(h, 0);
	memcpy(out + h, wdata, m->data_len);
	len = (size_t)h + m->data_len;
	for (int i = 0; i < 5000 && sent < len; i++) {
		ssize_t n = send(cl->fd, out + sent, len - sent, MSG_NOSIGNAL);

		if (n > 0)
			sent += (size_t)n;
		uv_run(&d->loop, UV_RUN_NOWAIT);
	}
	ck_assert_uint_eq(sent, len);
}

/* Run the server for about ms milliseconds or until n answers came. */
static void cl_run(struct client *cl, int n, int ms)
{
	uint8_t in[4096];

	for (int i = 0; i < ms && cl->n < n; i++) {
		ssize_t k;

		uv_run(&d->loop, UV_RUN_NOWAIT);
		while ((k = recv(cl->fd, in, sizeof in, 0)) > 0)
			ck_assert_int_eq(qbd_wire_rx_feed(&cl->rx, in, (size_t)k, &cl_ops, cl), 0);
		if (cl->n < n)
			poll(NULL, 0, 1);
	}
}

static void cl_close(struct client *cl)
{
	qbd_wire_rx_reset(&cl->rx);
	close(cl->fd);
	for (int i = 0; i < 100 && d->conns; i++) {
		uv_run(&d->loop, UV_RUN_NOWAIT);
		poll(NULL, 0, 1);
	}
	ck_assert_msg(!d->conns, "the connection outlived its peer");
}

/* Make the server look busy with clients: a foreground request and the
 * background ones allowed meanwhile in the engine (counted only). */
static void pretend_busy(void)
{
	d->admit.fg_inflight = 1;
	d->admit.bg_inflight = CHUNKD_BG_BUSY_MAX;
}

static void pretend_idle(void)
{
	d->admit.fg_inflight = 0;
	d->admit.bg_inflight = 0;
	d->admit.fg_last_ns = 0;
}

/* Open a connection, make the server busy, send the nm messages m: the
 * first `answers` answers come (within 2 s), no more within 50 ms, and
 * `waiting` requests wait for admission. */
static void busy_send(struct client *cl, const Qbd__Msg *const *m, int nm, int answers,
		      unsigned waiting)
{
	cl_open(cl);
	pretend_busy();
	for (int i = 0; i < nm; i++)
		cl_send(cl, m[i]);
	cl_run(cl, answers, 2000);
	cl_run(cl, answers + 1, 50);
	ck_assert_int_eq(cl->n, answers);
	ck_assert_uint_eq(d->admit.nwaiting, waiting);
}

/* The server idle again and the waiting requests admitted: n answers in
 * all within 2 s. */
static void admit_now(struct client *cl, int n)
{
	pretend_idle();
	chunkd_admit_run(d);
	cl_run(cl, n, 2000);
	ck_assert_int_eq(cl->n, n);
}

/* A RESYNC write of chunk 2, whole, at EPOCH. */
static Qbd__Msg resync_write(void)
{
	Qbd__Msg m = good(WRITE);

	m.offset = 0;
	m.length = CS;
	m.data_len = CS;
	m.flags = QBD_WIRE_F_RESYNC | QBD_WIRE_F_FUA;
	return m;
}

/* While busy, a RESYNC write and a CHECKSUM wait (counted), a plain
 * READ does not; once idle they are admitted, the write stored. */
START_TEST(background_waits_behind_client_io)
{
	struct client cl;
	Qbd__Msg w = resync_write(), c = good(CHECKSUM), r = good(READ);

	/* The client's read goes by; the write and the CHECKSUM wait. */
	busy_send(&cl, (const Qbd__Msg *[]){ &w, &c, &r }, 3, 1, 2);
	ck_assert_int_eq(cl.type[0], READ);
	ck_assert_int_eq(cl.status[0], 0);
	ck_assert_uint_eq(d->admit.waited, 2);
	ck_assert_uint_eq(qbd_engine_chunk_version(d->e, VOL, 2), 0);
	admit_now(&cl, 3);
	ck_assert_int_eq(cl.type[1] + cl.type[2], WRITE + CHECKSUM);  /* either first */
	ck_assert_int_eq(cl.status[1], 0);
	ck_assert_int_eq(cl.status[2], 0);
	ck_assert_uint_eq(d->admit.nwaiting, 0);
	ck_assert_uint_eq(d->admit.wait.count, 2);
	ck_assert_uint_eq(qbd_engine_chunk_version(d->e, VOL, 2), V2);
	ck_assert_uint_eq(d->admit.fg_inflight, 0);
	ck_assert_uint_eq(d->admit.bg_inflight, 0);
	cl_close(&cl);
}
END_TEST

/* A FLUSH covers the RESYNC write waiting before it on its connection:
 * the write goes in at the FLUSH's arrival, busy or not, and the FLUSH
 * is answered after it. A RESYNC write after the FLUSH keeps waiting. */
START_TEST(flush_lets_the_writes_it_covers_in)
{
	struct client cl;
	Qbd__Msg w = resync_write(), f = good(FLUSH), w2 = resync_write();

	w2.chunk = 3;
	busy_send(&cl, (const Qbd__Msg *[]){ &w }, 1, 0, 1);
	cl_send(&cl, &f);
	cl_send(&cl, &w2);
	cl_run(&cl, 2, 2000);
	ck_assert_int_eq(cl.n, 2);
	ck_assert_int_eq(cl.type[0], WRITE);
	ck_assert_int_eq(cl.status[0], 0);
	ck_assert_int_eq(cl.type[1], FLUSH);
	ck_assert_int_eq(cl.status[1], 0);
	ck_assert_uint_eq(qbd_engine_chunk_version(d->e, VOL, 2), V2);
	ck_assert_uint_eq(d->admit.nwaiting, 1);  /* w2, after the FLUSH */
	ck_assert_uint_eq(qbd_engine_chunk_version(d->e, VOL, 3), 0);
	admit_now(&cl, 3);
	ck_assert_int_eq(cl.status[2], 0);
	ck_assert_uint_eq(qbd_engine_chunk_version(d->e, VOL, 3), V2);
	cl_close(&cl);
}
END_TEST

/* A RESYNC write that waited while a newer writer was promised is judged
 * again when admitted: refused (EPERM, the new epoch), the store left
 * as it was. */
START_TEST(background_epoch_is_judged_again_when_admitted)
{
	struct qbd_engine_req promise = { .op = QBD_ENGINE_PROMISE, .volume = VOL,
					  .epoch = EPOCH + 1 };
	struct client cl;
	Qbd__Msg w = resync_write();
	struct snap before, after;

	busy_send(&cl, (const Qbd__Msg *[]){ &w }, 1, 0, 1);
	ck_assert_int_eq(eng_run(&promise), 0);
	snap_take(&before);
	admit_now(&cl, 1);
	ck_assert_msg(cl.status[0] == -EPERM, "a RESYNC write of a deposed writer admitted "
		      "after waiting: answered %d, want EPERM", cl.status[0]);
	ck_assert_uint_eq(cl.epoch[0], EPOCH + 1);
	ck_assert_uint_eq(qbd_engine_busy(d->e), 0);
	snap_take(&after);
	ck_assert_msg(snap_same(&before, &after), "a refused RESYNC write changed the store");
	ck_assert_uint_eq(qbd_engine_chunk_version(d->e, VOL, 2), 0);
	cl_close(&cl);
}
END_TEST

/* A connection closed while its requests wait frees them: nothing is
 * left waiting or leaked (the sanitizers' build), nothing written. */
START_TEST(closing_frees_waiting_requests)
{
	struct client cl;
	Qbd__Msg w = resync_write(), c = good(CHECKSUM);

	busy_send(&cl, (const Qbd__Msg *[]){ &w, &c }, 2, 0, 2);
	ck_assert_uint_eq(cl.c->inflight, 2);
	cl_close(&cl);
	ck_assert_uint_eq(d->admit.nwaiting, 0);
	ck_assert(qbd_queue_empty(&d->admit.waiting));
	ck_assert_uint_eq(qbd_engine_chunk_version(d->e, VOL, 2), 0);
	pretend_idle();
}
END_TEST

static Suite *chunkd_suite(void)
{
	Suite *s = suite_create("chunkd");
	TCase *t;

	t = tcase_create("admission");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, admission_decision);
	tcase_add_test(t, background_waits_behind_client_io);
	tcase_add_test(t, flush_lets_the_writes_it_covers_in);
	tcase_add_test(t, background_epoch_is_judged_again_when_admitted);
	tcase_add_test(t, closing_frees_waiting_requests);
	suite_add_tcase(s, t);

	t = tcase_create("good");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, every_good_request_passes);
	tcase_add_test(t, good_write_changes_the_store);
	suite_add_tcase(s, t);

	t = tcase_create("identity");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, wrong_cluster_id_is_refused_and_closes);
	tcase_add_test(t, wrong_node_id_is_refused_and_closes);
	tcase_add_test(t, only_hello_and_auth_before_authentication);
	tcase_add_test(t, hello_without_challenge_or_auth_before_hello_is_refused);
	suite_add_tcase(s, t);

	t = tcase_create("shape");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, unknown_type_is_refused);
	tcase_add_test(t, reply_is_refused);
	tcase_add_test(t, data_where_none_belongs_is_refused);
	tcase_add_test(t, range_outside_the_chunk_is_refused);
	tcase_add_test(t, oversize_write_payload_is_refused);
	tcase_add_test(t, misaligned_bitmap_read_is_refused);
	tcase_add_test(t, unknown_flags_are_refused);
	tcase_add_test(t, resync_of_part_or_mixed_is_refused);
	tcase_add_test(t, pull_of_part_or_without_source_is_refused);
	tcase_add_test(t, sparse_resync_write_leaves_holes_where_the_source_has_them);
	tcase_add_test(t, malformed_sparse_requests_are_refused);
	tcase_add_test(t, chunk_beyond_the_wire_is_refused);
	tcase_add_test(t, volume_zero_is_refused);
	suite_add_tcase(s, t);

	t = tcase_create("epoch");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, old_epoch_is_fenced);
	tcase_add_test(t, epoch_not_promised_is_not_served);
	tcase_add_test(t, volume_not_open_here_is_not_served);
	tcase_add_test(t, volume_not_open_here_is_not_served_at_epoch_zero);
	tcase_add_test(t, epoch_zero_is_refused);
	suite_add_tcase(s, t);

	t = tcase_create("tombstone");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, tombstone_below_promised_epoch_is_refused);
	tcase_add_test(t, open_after_tombstone_is_refused_eidrm);
	tcase_add_test(t, reclaim_leaves_a_tombstone);
	suite_add_tcase(s, t);

	t = tcase_create("reclaim");
	tcase_add_test(t, absent_twice_grace_apart_is_reclaimed);
	tcase_add_test(t, answer_no_newer_than_first_sighting_reclaims_nothing);
	tcase_add_test(t, present_again_starts_anew);
	tcase_add_test(t, other_cluster_reclaims_nothing);
	tcase_add_test(t, revision_going_back_starts_anew);
	tcase_add_test(t, volume_no_longer_held_is_forgotten);
	tcase_add_test(t, not_member_twice_same_cfg_is_reclaimed);
	tcase_add_test(t, not_member_at_another_cfg_starts_anew);
	tcase_add_test(t, member_is_never_reclaimed);
	tcase_add_test(t, not_member_other_cluster_reclaims_nothing);
	tcase_add_test(t, scan_answer_is_read_whole);
	tcase_add_test(t, scan_answer_lists_each_configuration);
	tcase_add_test(t, partial_scan_answer_is_refused);
	tcase_add_test(t, node_record_carries_orphaned_numbers);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(chunkd_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
