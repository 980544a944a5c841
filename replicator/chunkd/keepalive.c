/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd in etcd: the node's record (address, zone, space, scrub,
 * I/O and reclaim numbers) registered under a lease at start-up, and the keepalive
 * thread that keeps the lease alive, registers again when it expired,
 * and republishes the record when its numbers change. The loop thread
 * copies the numbers into d->node under ka_mu (chunkd_stats_start); the
 * keepalive thread makes every etcd call after start-up, so that none
 * blocks the loop.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "internal.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/engine.h"
#include "replicator/meta/meta.h"

#define COMP "chunkd"

/* ---- numbers for the node record ---- */

/* Loop thread: copy the engine's, the scrubber's and the reclaim's
 * numbers into the node record, which the keepalive thread publishes
 * when they change. */
static void node_stats_fill(struct chunkd *d)
{
	struct qbd_engine_stats st;

	qbd_engine_stats(d->e, &st);
	pthread_mutex_lock(&d->ka_mu);
	d->node.capacity = st.capacity;
	d->node.used = st.used;
	d->node.held = st.held;
	d->node.slots = st.slots;
	d->node.free_slots = st.free_slots;
	d->node.scrub = d->scrub.stats;
	d->node.io.data_reads = st.data_reads;
	d->node.io.data_read_bytes = st.data_read_bytes;
	d->node.io.data_writes = st.data_writes;
	d->node.io.data_write_bytes = st.data_write_bytes;
	d->node.io.meta_writes = st.meta_writes;
	d->node.io.zeroings = st.zeroings;
	d->node.io.syncs = st.syncs;
	d->node.orphaned = d->reclaim.numbers;
	pthread_mutex_unlock(&d->ka_mu);
}

static void node_stats_tick(uv_timer_t *t)
{
	node_stats_fill(QBD_CONTAINER_OF(t, struct chunkd, stats_timer));
}

void chunkd_stats_start(struct chunkd *d)
{
	uv_timer_init(&d->loop, &d->stats_timer);
	uv_timer_start(&d->stats_timer, node_stats_tick, QBD_CHUNKD_STATS_MS,
		       QBD_CHUNKD_STATS_MS);
}

/* The numbers of two records differ (seq and updated aside). */
static bool node_numbers_differ(const struct qbd_node_info *a, const struct qbd_node_info *b)
{
	return a->capacity != b->capacity || a->used != b->used || a->held != b->held ||
	       a->slots != b->slots || a->free_slots != b->free_slots ||
	       memcmp(&a->scrub, &b->scrub, sizeof a->scrub) != 0 ||
	       memcmp(&a->io, &b->io, sizeof a->io) != 0 ||
	       memcmp(&a->orphaned, &b->orphaned, sizeof a->orphaned) != 0;
}

/* ---- keepalive thread ---- */

static void *keepalive_main(void *arg)
{
	struct chunkd *d = arg;
	struct timespec ts;
	struct qbd_node_info last, cur;

	pthread_mutex_lock(&d->ka_mu);
	last = d->node;
	while (!d->ka_stop) {
		int64_t lease = d->lease;
		int rc;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += QBD_CHUNKD_KEEPALIVE_MS / 1000;
		while (!d->ka_stop &&
		       pthread_cond_timedwait(&d->ka_cv, &d->ka_mu, &ts) != ETIMEDOUT)
			;
		if (d->ka_stop)
			break;
		cur = d->node;
		pthread_mutex_unlock(&d->ka_mu);
		cur.seq = last.seq;
		cur.updated = last.updated;
		rc = lease ? qbd_meta_lease_keepalive(d->meta, lease) : -ENOENT;
		if (rc == -ENOENT) {
			qbd_warn(COMP, "lease expired; registering again");
			rc = qbd_meta_lease_grant(d->meta, QBD_CHUNKD_LEASE_TTL, &lease);
			if (rc == 0)
				rc = qbd_meta_node_register(d->meta, &cur, lease);
			else
				lease = 0;
			if (rc == 0)
				last = cur;
		}
		if (rc < 0)
			qbd_warn(COMP, "etcd keepalive: %s; retrying", strerror(-rc));
		/* Republish the numbers when they changed: space used, scrub
		 * and I/O counters (docs/design.md, "Space accounting"). */
		if (rc == 0 && node_numbers_differ(&cur, &last)) {
			cur.seq = last.seq + 1;
			cur.updated = (uint64_t)time(NULL);
			rc = qbd_meta_node_put(d->meta, &cur);
			if (rc == 0)
				last = cur;
			else
				qbd_warn(COMP, "etcd: publishing the node record: %s; retrying",
					 strerror(-rc));
		}
		pthread_mutex_lock(&d->ka_mu);
		d->lease = lease;
	}
	pthread_mutex_unlock(&d->ka_mu);
	return NULL;
}

void chunkd_keepalive_stop(struct chunkd *d)
{
	if (!d->ka_started)
		return;
	pthread_mutex_lock(&d->ka_mu);
	d->ka_stop = true;
	pthread_cond_signal(&d->ka_cv);
	pthread_mutex_unlock(&d->ka_mu);
	pthread_join(d->ka_thread, NULL);
	d->ka_started = false;
}

int chunkd_keepalive_start(struct chunkd *d)
{
	/* Signals belong to the loop thread (uv_signal): the keepalive
	 * thread inherits a mask blocking them all. */
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&d->ka_thread, NULL, keepalive_main, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		qbd_err(COMP, "keepalive thread: %s", strerror(rc));
		return -rc;
	}
	d->ka_started = true;
	return 0;
}

void chunkd_keepalive_init(struct chunkd *d)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&d->ka_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->ka_cv, &ca);
	pthread_condattr_destroy(&ca);
}

void chunkd_keepalive_fini(struct chunkd *d)
{
	pthread_cond_destroy(&d->ka_cv);
	pthread_mutex_destroy(&d->ka_mu);
}

/* ---- registration ---- */

int chunkd_register(struct chunkd *d, const struct qbd_chunkd_opts *o, const char *bound)
{
	struct qbd_engine_stats st;
	int rc;

	qbd_engine_stats(d->e, &st);
	memset(&d->node, 0, sizeof d->node);
	d->node.id = d->node_id;
	snprintf(d->node.addr, sizeof d->node.addr, "%.*s", QBD_ADDR_MAX - 1,
		 o->advertise ? o->advertise : bound);
	snprintf(d->node.zone, sizeof d->node.zone, "%s", o->zone);
	d->node.capacity = st.capacity;
	d->node.used = st.used;
	d->node.chunk_size = st.chunk_size;
	d->node.held = st.held;
	d->node.slots = st.slots;
	d->node.free_slots = st.free_slots;
	d->node.scrub.rate = d->scrub.stats.rate;
	d->node.updated = (uint64_t)time(NULL);
	rc = qbd_meta_lease_grant(d->meta, QBD_CHUNKD_LEASE_TTL, &d->lease);
	if (rc == 0)
		rc = qbd_meta_node_register(d->meta, &d->node, d->lease);
	if (rc < 0) {
		qbd_err(COMP, "registering in etcd: %s", strerror(-rc));
		return rc;
	}
	return 0;
}

void chunkd_unregister(struct chunkd *d)
{
	int rc;

	if (!d->lease)
		return;
	rc = qbd_meta_lease_revoke(d->meta, d->lease);
	if (rc < 0)
		qbd_warn(COMP, "revoking lease: %s", strerror(-rc));
}
