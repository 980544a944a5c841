/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: qbd-nbd's server (nbd-frontend/: server.c, conn.c,
 * handshake.c, transmission.c, proto.c) as it runs, over a real socket,
 * against a fake of the libqbd calls it makes (this file, linked instead
 * of libqbd).
 *
 * Input: three bytes of settings, then what the clients send. The first:
 *   bit 0     0: each client connects to the server's listening socket,
 *             and the server does the fixed-newstyle handshake (options
 *             EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY,
 *             LIST_META_CONTEXT, SET_META_CONTEXT, unknown ones) before
 *             the transmission phase; 1: adopted connections (kernel
 *             mode), in the transmission phase from the first byte
 *   bits 1-2  the volume's size: 1 MiB, 1 MiB + 1234 (a partial last
 *             block), 4 KiB, 3 TiB
 *   bit 3     stop_after_disc (adopted connection)
 *   bits 4-5  io results: all succeed; every third fails (each errno
 *             qbd.h names in turn); all -EIO; all -EPERM
 *   bits 6-7  what BLOCK_STATUS finds: runs of data and holes, all data,
 *             all holes, data and holes alternating by block
 * The second:
 *   bits 0-2  n > 0: the server is stopped (as by SIGTERM) when the n-th
 *             io completes, with requests in flight and input unread
 *   bit 3     adopted connections: each client closes its end as soon
 *             as its input is sent, reading no reply (as the kernel
 *             drops a socket it gave up on); on_conn_end says when the
 *             server closed its end
 *   bit 4     ios complete newest first
 *   bit 5     one io completes per qbd_process call
 *   bit 6     the server's end has a small send buffer (adopted), so
 *             that replies are written in part and queued
 *   bit 7     the clients read at most 4 KiB of replies at a time
 * The third:
 *   bit 0     two clients (connections), both sharing the volume: the
 *             input after the settings starts with the length of the
 *             first one's bytes (16 bits, big-endian); the rest is the
 *             second one's (one client if those two bytes are missing)
 *   bits 1-7  unused
 * Each client's bytes go into its end of the connection as fast as the
 * server reads them, then its write side is shut down; the replies are
 * read and, on adopted connections (simple replies), checked: each
 * answers a request sent and not answered yet, with an NBD error, only
 * a command the server serves succeeds, and a READ that succeeds
 * carries exactly its length of data. When the server has closed every
 * connection, the fake stops the server (nbd_server_stop): nbd_serve
 * drains and returns, and everything must have been freed (the fuzzer
 * checks for leaks). SIGPIPE is the server's to ignore: if a write
 * raises it, the harness aborts, as the signal would have killed
 * qbd-nbd.
 *
 * The fake keeps the real libqbd's contract: qbd_get_fd becomes readable
 * when there is work, and callbacks run from qbd_process, never from
 * qbd_submit. Each io is checked against qbd.h (range within the volume,
 * at most 32 MiB for READ and WRITE, BLOCK_STATUS in whole blocks and at
 * most QBD_BLOCK_STATUS_MAX, buffers present): a request outside it
 * aborts. A READ gets zeros, a WRITE's data is read, BLOCK_STATUS gets
 * its bits, each in exactly the bytes qbd.h names, so that a buffer too
 * small is an AddressSanitizer report. (Above 1 MiB only the first and
 * last byte are touched: 64 reads of 32 MiB in flight stay cheap.)
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "nbd-frontend/nbd-proto.h"
#include "nbd-frontend/nbd.h"
#include "replicator/qbd.h"
#include "tests/fuzz/fuzz.h"

#define FN_EXPORT "vol"
#define FN_PENDING 0x7166757a7a696f31ull /* io->priv[0] while submitted */
#define FN_TOUCH_ALL (1u << 20)          /* buffers filled or read whole */

enum fn_setting {
	FN_ADOPTED = 0x1,
	FN_STOP_AFTER_DISC = 0x8,
	/* second byte */
	FN_STOP_AT = 0x7,
	FN_VANISH = 0x8,
	FN_NEWEST_FIRST = 0x10,
	FN_ONE_AT_A_TIME = 0x20,
	FN_SMALL_SNDBUF = 0x40,
	FN_SLOW_READER = 0x80,
	/* third byte */
	FN_TWO_CLIENTS = 0x1,
};

#define FN_MAX_CLIENTS 2

/* A request a client sent, framed as the server frames them. */
struct fn_req {
	uint64_t cookie;
	uint32_t length;
	uint16_t type;
	bool answered;
};

/* A client: its end of one connection, what it sends, and the checker
 * of the replies it gets. */
struct fn_client {
	int fd;
	const uint8_t *in;
	size_t in_len, in_off;
	bool in_done;           /* all sent (or refused), write side shut down */
	bool ended;             /* the server closed its end */
	/* Adopted connections (simple replies only): each reply answers a
	 * request sent and not answered yet, with an NBD error, and a READ
	 * that succeeds with exactly its length of data. */
	bool checking;          /* false once a reply cannot be told apart */
	struct fn_req *reqs;    /* the requests in the input, in order */
	size_t nreqs;
	uint8_t hdr[16];        /* the reply header being received */
	size_t hdr_have;
	uint64_t data_left;     /* bytes of READ data still to come */
};

/* The fake volume, and the clients' side of the connections. */
struct qbd_volume {
	uint64_t size;
	unsigned settings, settings2, settings3;
	int epfd;               /* qbd_get_fd: readable when there is work */
	int evfd;               /* ios wait for qbd_process */
	const char *path;       /* listening socket, or NULL (adopted) */
	struct nbd_server *srv; /* from on_ready */
	struct fn_client cl[FN_MAX_CLIENTS];
	unsigned nclients, ended;
	bool vanish;            /* FN_VANISH: clients close at once */
	bool stopped;           /* nbd_server_stop called */
	struct qbd_io **q;      /* submitted, not completed */
	size_t nq, qcap;
	unsigned plugged;
	unsigned nios;          /* ios done */
	uint8_t sink;
};

static __attribute__((noreturn)) void fn_die(const char *what)
{
	fuzz_fail("fuzz-nbd: %s", what);
}

/* ---- the fake libqbd: the calls the server makes ---- */

uint64_t qbd_size(const struct qbd_volume *v)
{
	return v->size;
}

int qbd_get_fd(const struct qbd_volume *v)
{
	return v->epfd;
}

void qbd_plug(struct qbd_volume *v)
{
	v->plugged++;
}

void qbd_unplug(struct qbd_volume *v)
{
	if (v->plugged == 0)
		fn_die("qbd_unplug without qbd_plug");
	v->plugged--;
}

/* The metrics (nbd-metrics.c) ask these; the fuzzer serves no metrics,
 * so they are never called. */
unsigned qbd_replica_count(const struct qbd_volume *v)
{
	(void)v;
	fn_die("metrics rendered without --metrics");
}

unsigned qbd_write_quorum(const struct qbd_volume *v)
{
	(void)v;
	fn_die("metrics rendered without --metrics");
}

uint64_t qbd_volume_id(const struct qbd_volume *v)
{
	(void)v;
	fn_die("metrics rendered without --metrics");
}

uint64_t qbd_epoch(const struct qbd_volume *v)
{
	(void)v;
	fn_die("metrics rendered without --metrics");
}

uint64_t qbd_resync_rate(const struct qbd_volume *v)
{
	(void)v;
	fn_die("metrics rendered without --metrics");
}

int qbd_replica_status(const struct qbd_volume *v, unsigned i, struct qbd_replica_status *out)
{
	(void)v, (void)i, (void)out;
	fn_die("metrics rendered without --metrics");
}

int qbd_replica_counters(const struct qbd_volume *v, unsigned i,
			 struct qbd_replica_counters *out)
{
	(void)v, (void)i, (void)out;
	fn_die("metrics rendered without --metrics");
}

int qbd_change_progress(const struct qbd_volume *v, struct qbd_change_progress *out)
{
	(void)v, (void)out;
	fn_die("metrics rendered without --metrics");
}

/* What qbd.h allows; anything else is the server's bug. */
static void fn_check(const struct qbd_volume *v, const struct qbd_io *io)
{
	uint64_t max = 0;

	if (!io->cb)
		fn_die("io without a callback");
	if (io->priv[0] == FN_PENDING)
		fn_die("io submitted again before its callback ran");
	if (io->flags & ~QBD_IO_F_FUA)
		fn_die("io with unknown flags");
	switch (io->op) {
	case QBD_IO_READ:
	case QBD_IO_WRITE:
		max = NBD_MAX_PAYLOAD;
		break;
	case QBD_IO_BLOCK_STATUS:
		if (io->offset % QBD_BLOCK_SIZE || io->length % QBD_BLOCK_SIZE)
			fn_die("BLOCK_STATUS not in whole blocks");
		max = QBD_BLOCK_STATUS_MAX;
		break;
	case QBD_IO_TRIM:
	case QBD_IO_WRITE_ZEROES:
		max = UINT32_MAX;
		break;
	case QBD_IO_FLUSH:
		return;
	default:
		fn_die("io with an unknown op");
	}
	if (io->length > max)
		fn_die("io longer than libqbd takes");
	if (io->offset > v->size || io->length > v->size - io->offset)
		fn_die("io past the end of the volume");
	if (!io->buf && (io->op == QBD_IO_READ || io->op == QBD_IO_WRITE ||
			 io->op == QBD_IO_BLOCK_STATUS))
		fn_die("io without a buffer");
}

/* Queue io for qbd_process and make qbd_get_fd readable. */
static void fn_queue(struct qbd_volume *v, struct qbd_io *io)
{
	uint64_t one = 1;

	if (v->nq == v->qcap) {
		size_t cap = v->qcap ? 2 * v->qcap : 64;
		struct qbd_io **q = realloc(v->q, cap * sizeof *q);

		if (!q)
			fn_die("out of memory");
		v->q = q;
		v->qcap = cap;
	}
	v->q[v->nq++] = io;
	if (write(v->evfd, &one, sizeof one) != sizeof one)
		fn_die("eventfd write failed");
}

void qbd_submit(struct qbd_volume *v, struct qbd_io *io)
{
	fn_check(v, io);
	io->priv[0] = FN_PENDING;
	fn_queue(v, io);
}

/* Is block `blk` of the volume written, for BLOCK_STATUS? */
static bool fn_block_has_data(const struct qbd_volume *v, uint64_t blk)
{
	switch (v->settings >> 6) {
	case 0: return blk % 7 < 3;
	case 1: return true;
	case 2: return false;
	default: return blk % 2;
	}
}

static int fn_result(const struct qbd_volume *v)
{
	static const int errs[] = { -EIO, -EBADMSG, -EPERM, -EINVAL, -ENOSPC, -ENOENT,
				    -EOVERFLOW, -ENOMEM, -ENOTSUP, -ESHUTDOWN, -ESTALE };
	unsigned n = v->nios;

	switch ((v->settings >> 4) & 3) {
	case 0: return 0;
	case 1: return n % 3 == 2 ? errs[n / 3 % (sizeof errs / sizeof errs[0])] : 0;
	case 2: return -EIO;
	default: return -EPERM;
	}
}

/* Do io as libqbd would, touching exactly the bytes qbd.h names. */
static void fn_do(struct qbd_volume *v, struct qbd_io *io)
{
	uint8_t *b = io->buf;

	io->res = fn_result(v);
	if (io->res)
		return;
	switch (io->op) {
	case QBD_IO_READ:
		if (io->length <= FN_TOUCH_ALL) {
			memset(b, 0, io->length);
		} else {
			b[0] = 0;
			b[io->length - 1] = 0;
		}
		break;
	case QBD_IO_WRITE:
		if (io->length <= FN_TOUCH_ALL) {
			for (uint32_t i = 0; i < io->length; i++)
				v->sink ^= b[i];
		} else if (io->length) {
			v->sink ^= b[0] ^ b[io->length - 1];
		}
		break;
	case QBD_IO_BLOCK_STATUS: {
		uint64_t first = io->offset / QBD_BLOCK_SIZE;
		uint32_t nb = io->length / QBD_BLOCK_SIZE;

		for (uint32_t i = 0; i < (nb + 7) / 8; i++)
			b[i] = 0;
		for (uint32_t i = 0; i < nb; i++)
			if (fn_block_has_data(v, first + i))
				b[i / 8] |= (uint8_t)(1u << (i % 8));
		break;
	}
	default:
		break;
	}
}

static void fn_stop(struct qbd_volume *v)
{
	v->stopped = true;
	nbd_server_stop(v->srv);
}

static uint32_t fn_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t fn_get64(const uint8_t *p)
{
	return (uint64_t)fn_get32(p) << 32 | fn_get32(p + 4);
}

/* The requests of client k's input that may be answered: up to where
 * the server stops reading them (bad magic, a WRITE too long to skip) or
 * the input ends, the first DISC included (answered only when the server
 * is stopping), none after it (consumed without an answer). */
static void fn_parse_requests(struct fn_client *k)
{
	size_t off = 0;

	k->reqs = malloc((k->in_len / 28 + 1) * sizeof *k->reqs);
	if (!k->reqs)
		fn_die("out of memory");
	k->checking = true;
	while (k->in_len - off >= 28) {
		const uint8_t *p = k->in + off;
		uint16_t type = (uint16_t)(p[6] << 8 | p[7]);
		uint32_t len = fn_get32(p + 24);
		size_t need = 28;

		if (fn_get32(p) != NBD_REQUEST_MAGIC)
			break;
		if (type == NBD_CMD_WRITE) {
			if (len > NBD_MAX_PAYLOAD)
				break;
			need += len;
		}
		if (k->in_len - off < need)
			break;
		k->reqs[k->nreqs++] = (struct fn_req){ .cookie = fn_get64(p + 8),
						       .length = len, .type = type };
		off += need;
		if (type == NBD_CMD_DISC && p[4] == 0 && p[5] == 0)
			break;
	}
}

static bool fn_nbd_error(uint32_t err)
{
	switch (err) {
	case 0: case NBD_EPERM: case NBD_EIO: case NBD_ENOMEM: case NBD_EINVAL:
	case NBD_ENOSPC: case NBD_EOVERFLOW: case NBD_ENOTSUP: case NBD_ESHUTDOWN:
		return true;
	default:
		return false;
	}
}

/* Bytes of data that follow a reply with error err to request q. */
static uint64_t fn_reply_data(const struct fn_req *q, uint32_t err)
{
	return !err && q->type == NBD_CMD_READ ? q->length : 0;
}

/* One reply header of client k (16 bytes in k->hdr). */
static void fn_check_reply(struct fn_client *k)
{
	uint32_t err = fn_get32(k->hdr + 4);
	uint64_t cookie = fn_get64(k->hdr + 8);
	struct fn_req *q = NULL;

	if (fn_get32(k->hdr) != NBD_SIMPLE_REPLY_MAGIC)
		fn_die("a reply without the simple reply magic");
	if (!fn_nbd_error(err))
		fn_die("a reply with an error NBD does not define");
	for (size_t i = 0; i < k->nreqs; i++) {
		struct fn_req *r = &k->reqs[i];

		if (r->answered || r->cookie != cookie)
			continue;
		if (q && (q->type != r->type || q->length != r->length)) {
			/* Two different requests with this cookie: which one
			 * this answers cannot be told. */
			k->checking = false;
			return;
		}
		if (!q)
			q = r;
	}
	if (!q)
		fn_die("a reply to no request sent, or a second reply to one");
	q->answered = true;
	if (!err && q->type != NBD_CMD_READ && q->type != NBD_CMD_WRITE &&
	    q->type != NBD_CMD_FLUSH && q->type != NBD_CMD_TRIM &&
	    q->type != NBD_CMD_WRITE_ZEROES)
		fn_die("success for a request the server must refuse (or never answer)");
	k->data_left = fn_reply_data(q, err);
}

/* n bytes of replies that client k received. */
static void fn_check_replies(struct fn_client *k, const uint8_t *p, size_t n)
{
	while (n && k->checking) {
		size_t take;

		if (k->data_left) {
			take = n < k->data_left ? n : (size_t)k->data_left;
			k->data_left -= take;
		} else {
			take = QBD_MIN(n, sizeof k->hdr - k->hdr_have);
			memcpy(k->hdr + k->hdr_have, p, take);
			k->hdr_have += take;
			if (k->hdr_have == sizeof k->hdr) {
				k->hdr_have = 0;
				fn_check_reply(k);
			}
		}
		p += take;
		n -= take;
	}
}

/* Client k's connection is over; once every one is, stop the server. */
static void fn_client_ended(struct qbd_volume *v, struct fn_client *k)
{
	if (k->ended)
		return;
	k->ended = true;
	if (++v->ended == v->nclients)
		fn_stop(v);
}

/* Client k: send what is left of its input, read and drop replies, and
 * see when the server has closed its end. */
static void fn_client_run(struct qbd_volume *v, struct fn_client *k)
{
	uint8_t buf[65536];
	size_t want = v->settings2 & FN_SLOW_READER ? 4096 : sizeof buf;

	while (k->fd >= 0 && !k->ended) {
		ssize_t n = recv(k->fd, buf, want, MSG_DONTWAIT);

		if (n > 0)
			fn_check_replies(k, buf, (size_t)n);
		if (n > 0 && want < sizeof buf)
			break; /* the rest at the next call (epoll says when) */
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		epoll_ctl(v->epfd, EPOLL_CTL_DEL, k->fd, NULL);
		fn_client_ended(v, k);
	}
	while (k->fd >= 0 && !k->in_done && !k->ended) {
		ssize_t n = 0;

		if (k->in_off < k->in_len)
			n = send(k->fd, k->in + k->in_off, k->in_len - k->in_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN)
			return; /* EPOLLOUT says when */
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0) {
			k->in_off += (size_t)n;
			continue;
		}
		/* Everything sent, or the server does not take more. */
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = k->fd };

		k->in_done = true;
		if (v->vanish) {
			/* on_conn_end will say when the server is done */
			epoll_ctl(v->epfd, EPOLL_CTL_DEL, k->fd, NULL);
			close(k->fd);
			k->fd = -1;
			return;
		}
		shutdown(k->fd, SHUT_WR);
		epoll_ctl(v->epfd, EPOLL_CTL_MOD, k->fd, &ev);
	}
}

static void fn_clients_run(struct qbd_volume *v)
{
	for (unsigned i = 0; i < v->nclients; i++)
		fn_client_run(v, &v->cl[i]);
}

/* Complete the ios submitted so far (their callbacks may submit more,
 * which wait), all or one, oldest or newest first; the others wait too. */
static void fn_complete(struct qbd_volume *v)
{
	struct qbd_io **batch = v->q;
	size_t n = v->nq;
	size_t take = (v->settings2 & FN_ONE_AT_A_TIME) && n ? 1 : n;
	unsigned stop_at = v->settings2 & FN_STOP_AT;

	v->q = NULL;
	v->nq = v->qcap = 0;
	for (size_t i = 0; i < n; i++) {
		struct qbd_io *io = batch[v->settings2 & FN_NEWEST_FIRST ? n - 1 - i : i];

		if (i >= take) {
			fn_queue(v, io);
			continue;
		}
		fn_do(v, io);
		io->priv[0] = 0;
		io->cb(io);
		if (++v->nios == stop_at)
			fn_stop(v);
	}
	free(batch);
}

void qbd_process(struct qbd_volume *v)
{
	uint64_t x;

	if (read(v->evfd, &x, sizeof x) < 0) {
		/* nothing was submitted since the last call */
	}
	fn_complete(v);
	fn_clients_run(v);
	/* Once the server stops, what it has in flight completes at once
	 * (it starts nothing new): its drain ends at its first tick rather
	 * than 20 ms later, which would slow the fuzzer down. */
	while (v->stopped && v->nq && !(v->settings2 & FN_ONE_AT_A_TIME))
		fn_complete(v);
}

/* ---- the harness ---- */

/* A listening socket path of this process: a directory made once in
 * $TMPDIR (or /tmp), removed at exit (nbd_serve removes the socket
 * itself). */
static char fn_dir[80];
static char fn_path[96];

static void fn_cleanup(void)
{
	if (fn_dir[0])
		rmdir(fn_dir);
}

static const char *fn_socket_path(void)
{
	if (!fn_path[0]) {
		const char *tmp = getenv("TMPDIR");

		/* A socket path holds 107 bytes at most. */
		if (!tmp || !*tmp || strlen(tmp) > 48)
			tmp = "/tmp";
		snprintf(fn_dir, sizeof fn_dir, "%s/qbd-fuzz-nbd.XXXXXX", tmp);
		if (!mkdtemp(fn_dir))
			fn_die("cannot make a directory for the socket");
		atexit(fn_cleanup);
		snprintf(fn_path, sizeof fn_path, "%s/s", fn_dir);
	}
	return fn_path;
}

/* An adopted connection ended (kernel mode would adopt another one). */
static void fn_on_conn_end(struct nbd_server *s, int index, bool disc, void *arg)
{
	struct qbd_volume *v = arg;

	(void)disc;
	if (index < 0 || (unsigned)index >= v->nclients || s != v->srv)
		fn_die("on_conn_end for a connection not adopted");
	/* A client that closed its end cannot see the server close its own. */
	if (v->vanish)
		fn_client_ended(v, &v->cl[index]);
}

static void fn_on_sigpipe(int sig)
{
	(void)sig;
	fn_die("SIGPIPE: the server wrote to a connection its client closed "
	       "(it would have killed qbd-nbd)");
}

static int fn_on_ready(struct nbd_server *s, void *arg)
{
	struct qbd_volume *v = arg;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT };

	v->srv = s;
	for (unsigned i = 0; i < v->nclients; i++) {
		struct fn_client *k = &v->cl[i];

		if (v->path) {
			struct sockaddr_un sa = { .sun_family = AF_UNIX };

			k->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			snprintf(sa.sun_path, sizeof sa.sun_path, "%s", v->path);
			if (k->fd < 0 || connect(k->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
				fn_die("cannot connect to the server's socket");
		}
		ev.data.fd = k->fd;
		if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, k->fd, &ev) < 0)
			fn_die("epoll_ctl failed");
	}
	fn_clients_run(v);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t sizes[4] = { 1u << 20, (1u << 20) + 1234, 4096, 3ull << 40 };
	static bool init;
	struct qbd_volume v = { .nclients = 1 };
	struct nbd_serve_opts o = { .export_name = FN_EXPORT, .on_ready = fn_on_ready,
				    .arg = &v };
	struct epoll_event ev = { .events = EPOLLIN };
	int fds[FN_MAX_CLIENTS], r;

	if (!init) {
		/* Every log line is formatted (and the fuzzer sends stderr to
		 * /dev/null) unless QBD_LOG_LEVEL says otherwise. */
		qbd_log_set_level(QBD_LOG_DEBUG);
		qbd_log_init("fuzz-nbd");
		signal(SIGPIPE, fn_on_sigpipe);
		init = true;
	}
	if (size < 3)
		return 0;
	v.settings = data[0];
	v.settings2 = data[1];
	v.settings3 = data[2];
	v.size = sizes[(data[0] >> 1) & 3];
	v.cl[0].in = data + 3;
	v.cl[0].in_len = size - 3;
	if ((v.settings3 & FN_TWO_CLIENTS) && size >= 5) {
		size_t first = (size_t)data[3] << 8 | data[4];

		v.nclients = 2;
		v.cl[0].in = data + 5;
		v.cl[0].in_len = QBD_MIN(first, size - 5);
		v.cl[1].in = v.cl[0].in + v.cl[0].in_len;
		v.cl[1].in_len = size - 5 - v.cl[0].in_len;
	}
	v.epfd = epoll_create1(EPOLL_CLOEXEC);
	v.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ev.data.fd = v.evfd;
	if (v.epfd < 0 || v.evfd < 0 || epoll_ctl(v.epfd, EPOLL_CTL_ADD, v.evfd, &ev) < 0)
		fn_die("cannot set up the fake volume's fd");
	if (v.settings & FN_ADOPTED) {
		for (unsigned i = 0; i < v.nclients; i++) {
			int sv[2];

			if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
				fn_die("socketpair failed");
			v.cl[i].fd = sv[1];
			fds[i] = sv[0];
			if (v.settings2 & FN_SMALL_SNDBUF) {
				int small = 4096; /* the kernel makes it a few KiB more */

				setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
			}
		}
		for (unsigned i = 0; i < v.nclients; i++)
			fn_parse_requests(&v.cl[i]);
		o.fds = fds;
		o.n_fds = v.nclients;
		o.stop_after_disc = v.settings & FN_STOP_AFTER_DISC;
		o.on_conn_end = fn_on_conn_end;
		v.vanish = v.settings2 & FN_VANISH;
	} else {
		v.path = o.socket_path = fn_socket_path();
	}
	r = nbd_serve(&v, &o);
	if (r != 0)
		fn_die("nbd_serve failed");
	if (v.nq)
		fn_die("nbd_serve returned with ios in flight");
	if (v.plugged)
		fn_die("qbd_plug without qbd_unplug");
	for (unsigned i = 0; i < v.nclients; i++) {
		if (v.cl[i].fd >= 0)
			close(v.cl[i].fd);
		free(v.cl[i].reqs);
	}
	close(v.evfd);
	close(v.epfd);
	free(v.q);
	return 0;
}
