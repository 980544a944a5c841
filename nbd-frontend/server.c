/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-nbd's server: one libuv loop serving one libqbd volume. It listens
 * on an optional unix socket (clients then do the handshake, handshake.c)
 * and adopts connections already in the transmission phase (kernel mode,
 * kserve.c); libqbd's single fd is watched with uv_poll, and the replies
 * of one qbd_process pass leave corked (conn.c). SIGTERM or SIGINT (or
 * nbd_server_stop, or the last adopted connection ending after a DISC)
 * drains: no new connections or requests, those in flight get up to
 * 10 s, then every handle closes and nbd_serve returns.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/svc.h"
#include "replicator/qbd.h"
#include "internal.h"

#define SERVER_BACKLOG 16         /* connections waiting for accept */
#define SERVER_DRAIN_TICK_MS 20   /* the drain looks at requests in flight */
#define SERVER_DRAIN_TICKS 500    /* ... this many times (10 s) at most */
#define SERVER_METRICS_MS 1000    /* metrics rendered this often */

static void server_on_connection(uv_stream_t *l, int status)
{
	struct nbd_server *s = l->data;
	struct nconn *c;

	if (status < 0 || s->stopping)
		return;
	c = conn_new(s);
	if (!c)
		return;
	if (uv_accept(l, (uv_stream_t *)&c->pipe) < 0) {
		conn_discard(c);
		return;
	}
	conn_link(c);
	s->stats.connections_total++;
	handshake_start(c);
	conn_update_reading(c);
}

/* The volume grew (libqbd took a new size from etcd during
 * qbd_process): offer it to new connections, accept requests up to it on
 * every connection (an NBD client fixes the size at its handshake, so a
 * client already connected sees it when it connects again), and tell the
 * owner (the kernel device). */
static void server_resized(struct nbd_server *s, uint64_t size)
{
	qbd_info("nbd", "export %s grew from %llu to %llu bytes; new connections see "
		 "the new size", s->name, (unsigned long long)s->size,
		 (unsigned long long)size);
	s->size = size;
	if (s->started && s->o.on_resize)
		s->o.on_resize(s, size, s->o.arg);
}

static void server_on_qbd(uv_poll_t *p, int status, int events)
{
	struct nbd_server *s = p->data;

	(void)status;
	(void)events;
	/* The replies of one pass go out in one write per connection. */
	s->corked = true;
	qbd_process(s->vol);
	if (qbd_size(s->vol) > s->size)
		server_resized(s, qbd_size(s->vol));
	conn_uncork_all(s);
}

/* Close every handle of the server; the loop then ends. */
static void server_close_handles(struct nbd_server *s)
{
	s->stopping = true;
	for (struct nconn *c = s->conns; c; c = c->next)
		conn_close(c);
	if (s->listening) {
		uv_close((uv_handle_t *)&s->listener, NULL);
		s->listening = false;
	}
	uv_close((uv_handle_t *)&s->qpoll, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->drain, NULL);
	if (!uv_is_closing((uv_handle_t *)&s->watchdog))
		uv_close((uv_handle_t *)&s->watchdog, NULL);
	if (s->metrics && !uv_is_closing((uv_handle_t *)&s->metrics_timer))
		uv_close((uv_handle_t *)&s->metrics_timer, NULL);
}

static void server_metrics_publish(struct nbd_server *s)
{
	struct qbd_mbuf b = { 0 };

	nbd_metrics_render(&b, &s->stats, s->vol, s->name, s->o.zone);
	if (b.failed)
		free(b.p);
	else
		qbd_metrics_publish(s->metrics, b.p, b.len);
}

static void server_on_metrics_tick(uv_timer_t *t)
{
	server_metrics_publish(t->data);
}

static void server_on_drain(uv_timer_t *t)
{
	struct nbd_server *s = t->data;
	unsigned busy = 0;

	for (struct nconn *c = s->conns; c; c = c->next)
		busy += c->in_flight;
	if (busy && ++s->drain_ticks < SERVER_DRAIN_TICKS)
		return;
	if (busy)
		qbd_warn("nbd", "%u requests still in flight after 10 s; stopping anyway", busy);
	uv_timer_stop(t);
	server_close_handles(s);
}

/* Stop accepting and reading, then drain (server_on_drain closes
 * everything). */
void server_stop(struct nbd_server *s, const char *why)
{
	if (s->stopping)
		return;
	qbd_info("nbd", "%s: stopping: no new connections, draining", why);
	qbd_svc_stopping("%s: draining", why);
	s->stopping = true;
	if (s->listening) {
		uv_close((uv_handle_t *)&s->listener, NULL);
		s->listening = false;
	}
	for (struct nconn *c = s->conns; c; c = c->next)
		conn_update_reading(c);
	uv_timer_start(&s->drain, server_on_drain, 0, SERVER_DRAIN_TICK_MS);
}

void nbd_server_stop(struct nbd_server *s)
{
	server_stop(s, "stop requested");
}

bool nbd_server_stopping(const struct nbd_server *s)
{
	return s->stopping;
}

static void server_on_signal(uv_signal_t *sig, int signum)
{
	char why[32];

	snprintf(why, sizeof why, "signal %d", signum);
	server_stop(sig->data, why);
}

int nbd_server_adopt(struct nbd_server *s, int fd)
{
	struct nconn *c;
	int r;

	if (s->stopping) {
		close(fd);
		return -ESHUTDOWN;
	}
	c = conn_new(s);
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	r = uv_pipe_open(&c->pipe, fd); /* makes it nonblocking */
	if (r < 0) {
		qbd_err("nbd", "adopt fd %d: %s", fd, uv_strerror(r));
		close(fd);
		conn_discard(c);
		return r;
	}
	c->adopted = true;
	c->index = s->next_index++;
	c->state = ST_TRANSMISSION;
	conn_link(c);
	s->adopted_live++;
	qbd_debug("nbd", "adopted connection %d (fd %d)", c->index, fd);
	conn_update_reading(c);
	return c->index;
}

/* Refuse if a live server listens at path; remove a stale socket; listen
 * (mode 0600). */
static int server_listen(struct nbd_server *s, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int probe, r;

	if (strlen(path) >= sizeof sa.sun_path) {
		qbd_err("nbd", "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
		close(probe);
		qbd_err("nbd", "%s: another server is listening there", path);
		return -EADDRINUSE;
	}
	if (probe >= 0)
		close(probe);
	unlink(path);

	uv_pipe_init(&s->loop, &s->listener, 0);
	s->listener.data = s;
	s->listening = true;
	mode_t old = umask(0177); /* socket created 0600 */
	r = uv_pipe_bind(&s->listener, path);
	umask(old);
	s->bound = r == 0;
	if (r == 0)
		r = uv_listen((uv_stream_t *)&s->listener, SERVER_BACKLOG, server_on_connection);
	if (r < 0) {
		qbd_err("nbd", "listen on %s: %s", path, uv_strerror(r));
		return -EADDRNOTAVAIL;
	}
	return 0;
}

/* The server's handles, for vol and o (copied; the fds are served from
 * server_open_connections on). */
static void server_init(struct nbd_server *s, struct qbd_volume *vol,
			const struct nbd_serve_opts *o)
{
	s->vol = vol;
	s->o = *o;
	s->o.fds = NULL;
	s->name = o->export_name ? o->export_name : "";
	s->size = qbd_size(vol);
	uv_loop_init(&s->loop);
	uv_poll_init(&s->loop, &s->qpoll, qbd_get_fd(vol));
	s->qpoll.data = s;
	uv_signal_init(&s->loop, &s->sigterm);
	uv_signal_init(&s->loop, &s->sigint);
	s->sigterm.data = s->sigint.data = s;
	uv_timer_init(&s->loop, &s->drain);
	s->drain.data = s;
	qbd_svc_watchdog_start(&s->loop, &s->watchdog);
}

/* --metrics: serve them, rendered once a second. 0 or -errno. */
static int server_start_metrics(struct nbd_server *s, const char *addr)
{
	int r = qbd_metrics_start(addr, &s->metrics);

	if (r != 0)
		return r;
	uv_timer_init(&s->loop, &s->metrics_timer);
	s->metrics_timer.data = s;
	server_metrics_publish(s);
	uv_timer_start(&s->metrics_timer, server_on_metrics_tick, SERVER_METRICS_MS,
		       SERVER_METRICS_MS);
	uv_unref((uv_handle_t *)&s->metrics_timer);
	return 0;
}

/* Listen on o->socket_path, adopt o->fds (those not adopted after an
 * error are closed here), then on_ready. 0 or the first error. */
static int server_open_connections(struct nbd_server *s, const struct nbd_serve_opts *o)
{
	unsigned i;
	int r = 0;

	if (o->socket_path)
		r = server_listen(s, o->socket_path);
	for (i = 0; r == 0 && i < o->n_fds; i++) {
		int idx = nbd_server_adopt(s, o->fds[i]);
		if (idx < 0)
			r = idx;
	}
	for (; i < o->n_fds; i++)   /* not adopted after an error: still ours */
		close(o->fds[i]);
	if (r == 0 && o->on_ready)
		r = o->on_ready(s, o->arg);
	return r;
}

/* Serve until the drain closed every handle. */
static void server_run(struct nbd_server *s)
{
	const struct nbd_serve_opts *o = &s->o;

	uv_poll_start(&s->qpoll, UV_READABLE, server_on_qbd);
	uv_signal_start(&s->sigterm, server_on_signal, SIGTERM);
	uv_signal_start(&s->sigint, server_on_signal, SIGINT);
	s->started = true;
	for (struct nconn *c = s->conns; c; c = c->next)
		conn_update_reading(c);
	qbd_info("nbd", "serving volume %s (%llu bytes)%s%s, %u adopted connection%s",
		 s->name, (unsigned long long)s->size, o->socket_path ? " on " : "",
		 o->socket_path ? o->socket_path : "", o->n_fds, o->n_fds == 1 ? "" : "s");
	qbd_svc_ready("serving volume %s", s->name);
	uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* Once the loop ended: remove the socket file, free the connections
 * (those with requests still in libqbd outlive the server), free s. */
static void server_free(struct nbd_server *s)
{
	if (s->bound)
		unlink(s->o.socket_path);
	while (s->conns) {
		struct nconn *c = s->conns;

		if (c->in_flight) {
			/* The drain gave up with requests of c still in
			 * libqbd: the last one's callback (run by qbd_close)
			 * frees c, which must outlive the server. */
			s->conns = c->next;
			c->s = NULL;
			continue;
		}
		conn_free(c);
	}
	uv_loop_close(&s->loop);
	qbd_metrics_stop(s->metrics);
	free(s);
}

/* The fds of o, when nbd_serve cannot serve them. */
static void server_close_fds(const struct nbd_serve_opts *o)
{
	for (unsigned i = 0; i < o->n_fds; i++)
		close(o->fds[i]);
}

int nbd_serve(struct qbd_volume *vol, const struct nbd_serve_opts *o)
{
	struct nbd_server *s = calloc(1, sizeof *s);
	int r;

	if (!s) {
		server_close_fds(o);
		return -ENOMEM;
	}
	/* A reply to a client that closed its end (or a kernel socket the
	 * kernel gave up on) must fail with EPIPE, not kill the process:
	 * libuv writes to sockets without MSG_NOSIGNAL. */
	signal(SIGPIPE, SIG_IGN);
	server_init(s, vol, o);
	r = o->metrics ? server_start_metrics(s, o->metrics) : 0;
	if (r == 0)
		r = server_open_connections(s, o);
	else
		server_close_fds(o);
	if (r == 0) {
		server_run(s);
	} else {
		server_close_handles(s);
		uv_run(&s->loop, UV_RUN_DEFAULT);
	}
	server_free(s);
	return r;
}
