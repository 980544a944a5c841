/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd server: qbd_chunkd_run's start-up (the cluster secret, the
 * store, the cluster identity from etcd, the listening socket, the
 * loop's handles, registration, the keepalive thread, the scrub, the
 * reclaim of deleted volumes' chunks), the
 * loop that reaps the engine's completions, the SIGTERM drain, and the
 * teardown. Connections are in conn.c, requests in request.c, their
 * validation in validate.c, etcd registration and keepalive in
 * keepalive.c.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "chunkd.h"
#include "internal.h"
#include "common/log.h"
#include "common/svc.h"
#include "common/util.h"
#include "engine/engine.h"
#include "replicator/meta/meta.h"

#define COMP "chunkd"

/* ---- the engine's completions, and the SIGTERM drain ---- */

static void engine_on_poll(uv_poll_t *p, int status, int events)
{
	struct chunkd *d = QBD_CONTAINER_OF(p, struct chunkd, engine_poll);

	(void)events;
	if (status < 0)
		qbd_warn(COMP, "engine poll: %s", uv_strerror(status));
	chunkd_cork(d);
	qbd_engine_poll(d->e);
	chunkd_uncork(d);
}

static void chunkd_close_all(struct chunkd *d)
{
	chunkd_peers_close(d);
	chunkd_scrub_stop(d);
	chunkd_reclaim_stop(d);
	uv_close((uv_handle_t *)&d->stats_timer, NULL);
	while (d->conns)
		chunkd_conn_close(d->conns);
	uv_close((uv_handle_t *)&d->engine_poll, NULL);
	uv_close((uv_handle_t *)&d->sig_term, NULL);
	uv_close((uv_handle_t *)&d->sig_int, NULL);
	uv_close((uv_handle_t *)&d->drain_timer, NULL);
}

static void chunkd_on_flushed(struct qbd_engine_req *er)
{
	struct chunkd *d = er->user;

	if (er->res < 0)
		qbd_err(COMP, "final flush: %s", strerror(-er->res));
	chunkd_close_all(d);
}

static bool chunkd_drained(const struct chunkd *d)
{
	if (qbd_engine_busy(d->e) > 0)
		return false;
	for (const struct chunkd_conn *c = d->conns; c; c = c->next)
		if (c->inflight > 0)
			return false;
	return true;
}

static void chunkd_on_drain_tick(uv_timer_t *t)
{
	struct chunkd *d = QBD_CONTAINER_OF(t, struct chunkd, drain_timer);
	bool timed_out = qbd_now_ns() - d->stop_start_ns >
			 (uint64_t)QBD_CHUNKD_DRAIN_MS * 1000000u;

	if (!chunkd_drained(d) && !timed_out)
		return;
	uv_timer_stop(t);
	if (timed_out)
		qbd_warn(COMP, "shutdown: gave up waiting after %d ms (%u engine requests busy)",
			 QBD_CHUNKD_DRAIN_MS, qbd_engine_busy(d->e));
	memset(&d->flush_req, 0, sizeof d->flush_req);
	d->flush_req.op = QBD_ENGINE_FLUSH;
	d->flush_req.cb = chunkd_on_flushed;
	d->flush_req.user = d;
	qbd_engine_submit(d->e, &d->flush_req);
}

static void chunkd_on_signal(uv_signal_t *s, int signum)
{
	struct chunkd *d = s->data;

	if (d->stopping)
		return;
	qbd_info(COMP, "signal %d: shutting down", signum);
	qbd_svc_stopping("signal %d: draining", signum);
	d->stopping = true;
	d->stop_start_ns = qbd_now_ns();
	chunkd_peers_close(d);
	uv_close((uv_handle_t *)&d->server, NULL);
	for (struct chunkd_conn *c = d->conns; c; c = c->next)
		chunkd_conn_update_reading(c);
	uv_timer_start(&d->drain_timer, chunkd_on_drain_tick, 0, 20);
}

/* ---- start-up ---- */

static int chunkd_identity(struct chunkd *d)
{
	uint64_t ours = qbd_engine_cluster_id(d->e);
	int rc = qbd_meta_cluster_id(d->meta, true, &d->cluster_id);

	if (rc < 0) {
		qbd_err(COMP, "reading cluster id from etcd: %s", strerror(-rc));
		return rc;
	}
	if (ours == 0) {
		rc = qbd_engine_set_cluster_id(d->e, d->cluster_id);
		if (rc < 0) {
			qbd_err(COMP, "storing cluster id: %s", strerror(-rc));
			return rc;
		}
	} else if (ours != d->cluster_id) {
		qbd_err(COMP, "store belongs to cluster %016llx, etcd has cluster %016llx; "
			"refusing to start", (unsigned long long)ours,
			(unsigned long long)d->cluster_id);
		return -EEXIST;
	}
	d->node_id = qbd_engine_node_id(d->e);
	return 0;
}

/* Bind and listen on addr; writes the bound "HOST:PORT" to bound. */
static int chunkd_listen(struct chunkd *d, const char *addr, char *bound, size_t blen)
{
	char host[QBD_ADDR_MAX], port_s[8];
	uint16_t port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *ai = NULL;
	struct sockaddr_storage ss;
	int len = sizeof ss, rc;

	if (qbd_parse_hostport(addr, host, sizeof host, &port) < 0) {
		qbd_err(COMP, "bad listen address '%s'", addr);
		return -EINVAL;
	}
	snprintf(port_s, sizeof port_s, "%u", port);
	rc = getaddrinfo(host[0] ? host : NULL, port_s, &hints, &ai);
	if (rc != 0) {
		qbd_err(COMP, "resolving '%s': %s", addr, gai_strerror(rc));
		return -EINVAL;
	}
	uv_tcp_init(&d->loop, &d->server);
	/* uv_tcp_bind sets SO_REUSEADDR. */
	rc = uv_tcp_bind(&d->server, ai->ai_addr, 0);
	freeaddrinfo(ai);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&d->server, 128, chunkd_conn_accept);
	if (rc < 0) {
		qbd_err(COMP, "listen on %s: %s", addr, uv_strerror(rc));
		return -EADDRINUSE;
	}
	if (uv_tcp_getsockname(&d->server, (struct sockaddr *)&ss, &len) == 0) {
		int p = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
						 : ntohs(((struct sockaddr_in *)&ss)->sin_port);
		snprintf(bound, blen, "%s:%d", host, p);
	} else {
		snprintf(bound, blen, "%s", addr);
	}
	return 0;
}

static int chunkd_load_secret(struct chunkd *d, const struct qbd_chunkd_opts *o)
{
	char why[256];
	int rc;

	if (!o->secret_file || !*o->secret_file)
		return 0;
	rc = qbd_secret_load(o->secret_file, &d->secret, why, sizeof why);
	if (rc < 0)
		qbd_err(COMP, "%s; refusing to start", why);
	return rc;
}

static int chunkd_loop_init(struct chunkd *d)
{
	int rc = uv_loop_init(&d->loop);

	if (rc < 0) {
		qbd_err(COMP, "uv_loop_init: %s", uv_strerror(rc));
		return -ENOMEM;
	}
	d->loop_ready = true;
	return 0;
}

static int chunkd_open_store(struct chunkd *d, const struct qbd_chunkd_opts *o)
{
	/* The pool's buffers are a chunk each (buffer_size 0): any request
	 * fits one. */
	struct qbd_engine_opts eo = { .path = o->data, .create_size = o->create_size,
				      .buffers = o->buffers };
	struct qbd_engine_stats st;
	int rc = qbd_engine_open(&eo, &d->e);

	if (rc < 0) {
		d->e = NULL;
		qbd_err(COMP, "opening store %s: %s", o->data, strerror(-rc));
		return rc;
	}
	qbd_engine_stats(d->e, &st);
	d->chunk_size = st.chunk_size;
	return 0;
}

/* etcd, the cluster id, and the node's id in the log context. */
static int chunkd_join_cluster(struct chunkd *d, const struct qbd_chunkd_opts *o)
{
	char ctx[128], idb[17];
	int rc = qbd_meta_open(o->etcd, &d->meta);

	if (rc < 0) {
		d->meta = NULL;
		qbd_err(COMP, "etcd %s: %s", o->etcd, strerror(-rc));
		return rc;
	}
	rc = chunkd_identity(d);
	if (rc < 0)
		return rc;
	snprintf(ctx, sizeof ctx, "node=%s zone=%s", qbd_id_str(d->node_id, idb), o->zone);
	qbd_log_set_context(ctx);
	return 0;
}

/* The engine's poll, the signals, the timers and the metrics endpoint. */
static int chunkd_start_handles(struct chunkd *d, const struct qbd_chunkd_opts *o)
{
	uv_poll_init(&d->loop, &d->engine_poll, qbd_engine_event_fd(d->e));
	uv_poll_start(&d->engine_poll, UV_READABLE, engine_on_poll);
	uv_signal_init(&d->loop, &d->sig_term);
	uv_signal_init(&d->loop, &d->sig_int);
	d->sig_term.data = d->sig_int.data = d;
	uv_signal_start(&d->sig_term, chunkd_on_signal, SIGTERM);
	uv_signal_start(&d->sig_int, chunkd_on_signal, SIGINT);
	uv_timer_init(&d->loop, &d->drain_timer);
	chunkd_stats_start(d);
	d->scrub.stats.rate = o->scrub_rate;
	d->zone = o->zone;
	return chunkd_metrics_start(d, o->metrics);
}

static int chunkd_start_scrub(struct chunkd *d, const struct qbd_chunkd_opts *o)
{
	int rc = chunkd_scrub_start(d, o->scrub_rate);

	if (rc < 0)
		qbd_err(COMP, "scrub: %s", strerror(-rc));
	return rc;
}

/* Tell the log and systemd, then run the loop until the drain closed
 * every handle. */
static void chunkd_serve(struct chunkd *d, const struct qbd_chunkd_opts *o, const char *bound)
{
	char idb[17];

	qbd_info(COMP, "listening on %s zone %s node %s", bound, o->zone,
		 qbd_id_str(d->node_id, idb));
	qbd_svc_watchdog_start(&d->loop, &d->watchdog);
	qbd_svc_ready("serving on %s, zone %s, node %s", bound, o->zone, idb);
	uv_run(&d->loop, UV_RUN_DEFAULT);
}

static void chunkd_close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* Undo whatever start-up did, in reverse order, and free d. */
static void chunkd_free(struct chunkd *d)
{
	chunkd_keepalive_stop(d);
	chunkd_unregister(d);
	if (d->loop_ready) {
		uv_walk(&d->loop, chunkd_close_walk, NULL);
		uv_run(&d->loop, UV_RUN_DEFAULT);
	}
	chunkd_metrics_stop(d);
	chunkd_reclaim_fini(d);
	qbd_meta_close(d->meta);
	if (d->e && qbd_engine_busy(d->e) == 0)
		qbd_engine_close(d->e);
	else if (d->e)
		qbd_warn(COMP, "store not closed: %u requests still busy",
			 qbd_engine_busy(d->e));
	if (d->loop_ready && uv_loop_close(&d->loop) != 0)
		qbd_warn(COMP, "event loop still has handles at exit");
	chunkd_keepalive_fini(d);
	qbd_secret_clear(&d->secret);
	free(d);
}

int qbd_chunkd_run(const struct qbd_chunkd_opts *o)
{
	struct chunkd *d = calloc(1, sizeof *d);
	char bound[QBD_ADDR_MAX + 8];
	int rc;

	if (!d)
		return -ENOMEM;
	chunkd_keepalive_init(d);
	rc = chunkd_load_secret(d, o);
	if (rc == 0)
		rc = chunkd_loop_init(d);
	if (rc == 0)
		rc = chunkd_open_store(d, o);
	if (rc == 0)
		rc = chunkd_join_cluster(d, o);
	if (rc == 0)
		rc = chunkd_listen(d, o->listen, bound, sizeof bound);
	if (rc == 0)
		rc = chunkd_start_handles(d, o);
	if (rc == 0)
		rc = chunkd_register(d, o, bound);
	if (rc == 0)
		rc = chunkd_keepalive_start(d);
	if (rc == 0)
		rc = chunkd_start_scrub(d, o);
	if (rc == 0)
		rc = chunkd_reclaim_start(d, o);
	if (rc == 0)
		chunkd_serve(d, o, bound);
	chunkd_free(d);
	return rc;
}
