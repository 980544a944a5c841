/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqbd: opening and closing a volume. qbd_open sets up the epoll fd,
 * the tick timer and the completion eventfd, loads the cluster secret,
 * reads the volume and its replicas' node records from etcd, takes the
 * attachment (attach.c), then connects to every replica and waits until
 * enough of them promised the epoch. qbd_close waits for the ios in
 * flight, flushes, and frees it all.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/client/internal.h"

#define COMP "client"

/* ---- open / close ---- */

int qbd_client_resolve(const char *addr, struct sockaddr_storage *sa, socklen_t *salen,
		       char *why, size_t why_len)
{
	char host[QBD_ADDR_MAX];
	char port[8];
	uint16_t p;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	int err;

	if (qbd_parse_hostport(addr, host, sizeof(host), &p) < 0) {
		snprintf(why, why_len, "bad address '%s'", addr);
		return -EINVAL;
	}
	snprintf(port, sizeof(port), "%u", p);
	err = getaddrinfo(host, port, &hints, &ai);
	if (err || !ai) {
		snprintf(why, why_len, "cannot resolve '%s': %s", addr, gai_strerror(err));
		return -EHOSTUNREACH;
	}
	memcpy(sa, ai->ai_addr, ai->ai_addrlen);
	*salen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int volume_setup(struct qbd_volume *v)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct itimerspec its = {
		.it_interval = { 0, QBD_CLIENT_TICK_MS * 1000000L },
		.it_value = { 0, QBD_CLIENT_TICK_MS * 1000000L },
	};

	v->epfd = epoll_create1(EPOLL_CLOEXEC);
	v->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	v->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (v->epfd < 0 || v->tfd < 0 || v->efd < 0)
		return -errno;
	if (timerfd_settime(v->tfd, 0, &its, NULL) < 0)
		return -errno;
	ev.data.ptr = &v->tfd;
	if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->tfd, &ev) < 0)
		return -errno;
	ev.data.ptr = &v->efd;
	if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->efd, &ev) < 0)
		return -errno;
	return 0;
}

/* clean: the writer flushed and stops here (see attach.c). */
static void volume_free(struct qbd_volume *v, bool clean)
{
	v->closing = true;
	qbd_attach_release(v, clean);
	for (unsigned r = 0; r < QBD_CORE_MAX_SLOTS; r++)
		if (v->conns[r].v)
			conn_fail(&v->conns[r], "closing");
	if (v->epfd >= 0)
		close(v->epfd);
	if (v->tfd >= 0)
		close(v->tfd);
	if (v->efd >= 0)
		close(v->efd);
	qbd_core_free(v->core);
	qbd_change_free(v->change);
	qbd_secret_clear(&v->secret);
	free(v);
}

/* Slot r's node record and address into v->conns[r]: replica r's node,
 * or for slot R the learner of a change that stands. A replica whose
 * record is gone or whose address does not resolve (its node died for
 * good, or its name left the DNS) starts down, with no_addr set: the
 * volume attaches with the others, and the keeper looks the node up
 * again (attach.c). Said once, here, naming the node and why. 0, or
 * -errno when etcd cannot be read (then nothing can be attached). */
static int meta_load_node(struct qbd_meta *m, struct qbd_volume *v, unsigned r)
{
	struct qbd_conn *c = &v->conns[r];
	uint64_t id = r < v->info.replicas ? v->info.nodes[r] : v->info.change.node;
	char why[QBD_ADDR_MAX + 96];
	int err = qbd_meta_node_get(m, id, &c->node);

	if (err && err != -ENOENT && err != -EPROTO) {
		qbd_err(COMP, "open: node %016llx: %s", (unsigned long long)id, strerror(-err));
		return err;
	}
	if (err) {
		memset(&c->node, 0, sizeof(c->node));
		snprintf(why, sizeof(why), "%s", err == -ENOENT ? "no node record in etcd"
							       : "its node record is malformed");
	}
	c->node.id = id;
	if (!err)
		err = qbd_client_resolve(c->node.addr, &c->sa, &c->salen, why, sizeof(why));
	if (!err)
		return 0;
	c->no_addr = true;
	qbd_warn(COMP, "replica %u node %016llx: %s: it starts down (the attach goes on "
		 "if enough other replicas remain) and is looked up again every %u s",
		 r, (unsigned long long)c->node.id, why, QBD_CLIENT_LOOKUP_EVERY_S);
	return 0;
}

static int meta_load(const struct qbd_open_opts *o, struct qbd_volume *v)
{
	const char *url = o->etcd ? o->etcd : getenv("QBD_ETCD");
	struct qbd_meta *m = NULL;
	unsigned addressed = 0, need;
	int err;

	if (!url || !o->volume) {
		qbd_err(COMP, "open: no etcd URL (set QBD_ETCD) or no volume name");
		return -EINVAL;
	}
	err = qbd_meta_open(url, &m);
	if (err)
		goto out;
	err = qbd_meta_cluster_id(m, false, &v->cluster_id);
	if (err) {
		qbd_err(COMP, "open: cluster id from %s: %s", url, strerror(-err));
		goto out;
	}
	err = qbd_meta_volume_get(m, o->volume, &v->info);
	if (err) {
		qbd_err(COMP, "open: volume '%s': %s", o->volume, strerror(-err));
		goto out;
	}
	if (v->info.replicas == 0 || v->info.replicas > QBD_CORE_MAX_REPLICAS ||
	    v->info.write_quorum == 0 || v->info.write_quorum > v->info.replicas ||
	    v->info.chunk_size == 0 || v->info.size == 0) {
		qbd_err(COMP, "open: volume '%s' has a bad record", o->volume);
		err = -EPROTO;
		goto out;
	}
	for (unsigned r = 0; r < v->info.replicas; r++) {
		err = meta_load_node(m, v, r);
		if (err)
			goto out;
		addressed += !v->conns[r].no_addr;
	}
	if (v->info.change.phase != QBD_CHANGE_NONE) {
		err = meta_load_node(m, v, v->info.replicas);
		if (err)
			goto out;
		qbd_info(COMP, "volume '%s': a change stands (%s): node %016llx replaces slot "
			 "%u's node %016llx", o->volume,
			 qbd_meta_change_phase_name(v->info.change.phase),
			 (unsigned long long)v->info.change.node, v->info.change.slot,
			 (unsigned long long)v->info.nodes[v->info.change.slot % QBD_MAX_REPLICAS]);
	}
	/* Refused before the epoch is taken: a writer that cannot reach
	 * enough replicas must not fence the one that may. */
	need = QBD_MAX(v->info.write_quorum, v->info.replicas - v->info.write_quorum + 1);
	if (addressed < need) {
		qbd_err(COMP, "open '%s': only %u of %u replicas have a node record with an "
			"address that resolves, need %u to attach (see above)", o->volume,
			addressed, v->info.replicas, need);
		err = -EIO;
		goto out;
	}
	err = qbd_attach_take(v, o, m);
out:
	qbd_meta_close(m);
	return err;
}

/* The cluster secret, before anything changes in etcd. */
static int secret_load(const struct qbd_open_opts *o, struct qbd_volume *v)
{
	const char *path = o->secret_file ? o->secret_file : getenv(QBD_AUTH_SECRET_ENV);
	char why[256];
	int err;

	if (!path || !*path)
		return 0;
	err = qbd_secret_load(path, &v->secret, why, sizeof why);
	if (err)
		qbd_err(COMP, "open '%s': %s", o->volume, why);
	return err;
}

int qbd_open(const struct qbd_open_opts *o, struct qbd_volume **out)
{
	struct qbd_volume *v;
	unsigned timeout = o->timeout_ms ? o->timeout_ms : 10000;
	struct qbd_core_cfg cfg = { 0 };
	uint64_t deadline;
	bool eperm = false, eacces = false, eidrm = false, graced = false;
	unsigned need, unaddressed = 0;
	int err;

	*out = NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->epfd = v->tfd = v->efd = -1;
	err = volume_setup(v);
	if (err)
		goto fail;
	err = secret_load(o, v);
	if (err)
		goto fail;
	err = meta_load(o, v);
	if (err)
		goto fail;
	if (v->epoch > QBD_CORE_MAX_EPOCH) {
		qbd_err(COMP, "open '%s': epoch %llu is past the last one versions can carry",
			o->volume, (unsigned long long)v->epoch);
		err = -EOVERFLOW;
		goto fail;
	}
	v->nchunks = (v->info.size + v->info.chunk_size - 1) / v->info.chunk_size;
	cfg.replicas = v->info.replicas;
	cfg.write_quorum = v->info.write_quorum;
	cfg.nchunks = v->nchunks;
	cfg.chunk_size = v->info.chunk_size;
	cfg.block_size = QBD_BLOCK_SIZE;
	cfg.epoch = v->epoch;
	cfg.resync_rate = o->resync_rate;
	cfg.takeover_wait_ns = v->takeover_wait_ns;
	cfg.pull = true;
	err = qbd_change_new(v, &cfg);
	if (err) {
		qbd_err(COMP, "open '%s': the record's change is malformed", o->volume);
		goto fail;
	}
	for (unsigned r = 0; r < v->nslots; r++)
		if (o->zone && !strcmp(o->zone, v->conns[r].node.zone))
			cfg.local |= 1u << r;
	err = qbd_core_new(&cfg, &client_core_ops, v, &v->core);
	if (err)
		goto fail;
	v->opening = true;
	for (unsigned r = 0; r < v->nslots; r++) {
		struct qbd_conn *c = &v->conns[r];

		c->v = v;
		c->idx = r;
		c->fd = -1;
		qbd_wire_rx_init(&c->rx);
		if (c->no_addr)
			c->failed_open = true; /* said in meta_load_node */
		else
			conn_connect(c);
	}
	deadline = qbd_now_ns() + (uint64_t)timeout * 1000000ull;
	need = QBD_MAX(v->info.write_quorum, v->info.replicas - v->info.write_quorum + 1);
	for (;;) {
		unsigned pending = 0, up = 0;
		struct pollfd pfd = { .fd = v->epfd, .events = POLLIN };

		for (unsigned r = 0; r < v->nslots; r++) {
			pending += v->conns[r].state != QBD_C_UP &&
				   !v->conns[r].failed_open;
			up += v->conns[r].state == QBD_C_UP && r < v->info.replicas;
		}
		if (!pending || qbd_now_ns() >= deadline)
			break;
		/* Enough promises: the others get a short grace, then join
		 * later as any replica coming back does. A replica that does
		 * not answer (its zone cut off) would otherwise hold a
		 * takeover for the whole handshake timeout. */
		if (up >= need && !graced) {
			graced = true;
			if (deadline > qbd_now_ns() + QBD_CLIENT_OPEN_GRACE_NS)
				deadline = qbd_now_ns() + QBD_CLIENT_OPEN_GRACE_NS;
		}
		poll(&pfd, 1, QBD_CLIENT_TICK_MS);
		qbd_process(v);
	}
	for (unsigned r = 0; r < v->nslots; r++) {
		struct qbd_conn *c = &v->conns[r];

		eperm |= c->open_status == -EPERM;
		eacces |= c->open_status == -EACCES;
		eidrm |= c->open_status == -EIDRM;
		unaddressed += c->no_addr;
		if (c->state != QBD_C_UP)
			conn_fail(c, "not opened in time");
		c->failed_open = false;
	}
	v->opening = false;
	err = qbd_core_open_done(v->core, qbd_now_ns());
	if (err) {
		err = eperm ? -EPERM : eacces ? -EACCES : -EIO;
		qbd_err(COMP, "open '%s': only %u of %u replicas promised epoch %llu, need %u%s%s%s",
			o->volume, qbd_core_up_count(v->core), v->info.replicas,
			(unsigned long long)v->epoch, need,
			eperm ? " (fenced by a newer epoch)" :
			eacces ? " (authentication refused: see above)" : "",
			eidrm ? " (some were removed from the volume: see above)" : "",
			unaddressed ? " (some have no node record or address: see above)" : "");
		goto fail;
	}
	err = qbd_attach_start(v);
	if (err)
		goto fail;
	qbd_info(COMP, "opened volume '%s' id %016llx epoch %llu: %u of %u replicas up",
		 o->volume, (unsigned long long)v->info.id,
		 (unsigned long long)v->epoch, qbd_core_up_count(v->core),
		 v->info.replicas);
	*out = v;
	return 0;
fail:
	volume_free(v, false);
	return err;
}

static void wait_idle(struct qbd_volume *v)
{
	while (v->in_flight) {
		struct pollfd pfd = { .fd = v->epfd, .events = POLLIN };

		poll(&pfd, 1, QBD_CLIENT_TICK_MS);
		qbd_process(v);
	}
}

int qbd_close(struct qbd_volume *v)
{
	int err = -EPERM;

	if (!v)
		return 0;
	wait_idle(v);
	if (!qbd_core_fenced(v->core)) {
		err = qbd_flush(v);
		if (err)
			qbd_warn(COMP, "close: flush: %s", strerror(-err));
	}
	volume_free(v, err == 0);
	return err;
}
