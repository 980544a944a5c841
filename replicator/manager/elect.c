/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Leader election of qbd-managerd instances through an etcd lease
 * (docs/design.md, "Manager"). A thread of its own, with its own etcd
 * handle, so that the work thread blocking in qbd_open or on a slow etcd
 * never lets the lease lapse:
 *
 *   follower  every MGR_FOLLOW_MS: keep a lease, and create /qbd/manager
 *             under it only if the key is absent (qbd_meta_manager_campaign)
 *   leader    every ttl/3: renew the lease, and check the key is still
 *             ours (under our lease); step down when either fails
 *
 * The work thread acts only while mgr_elect_leading says so: renewed
 * less than the TTL (minus a margin) ago, measured from before the
 * renewal was sent, so a leader cut off from etcd stops before its lease
 * can expire there and another instance take over.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define COMP "elect"
#define MARGIN_NS 1000000000ull    /* for the clocks of etcd and this host */

struct mgr_elect {
	struct qbd_meta *m;        /* the thread's own */
	unsigned ttl;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;                 /* under mu */
	bool leading;              /* under mu */
	int64_t lease;             /* under mu (thread writes) */
	uint64_t valid_until;      /* under mu: monotonic ns */
	struct qbd_manager_leader me;
	char said[256];            /* the last holder or problem said */
};

static void elect_say(struct mgr_elect *e, const char *msg)
{
	if (!strcmp(e->said, msg))
		return;
	snprintf(e->said, sizeof e->said, "%s", msg);
	qbd_info(COMP, "%s", msg);
}

static void set_leading(struct mgr_elect *e, bool leading, uint64_t valid_until)
{
	pthread_mutex_lock(&e->mu);
	e->leading = leading;
	e->valid_until = valid_until;
	e->lease = e->me.lease;
	pthread_mutex_unlock(&e->mu);
}

/* A follower's attempt: a lease (kept from the last attempt while it
 * lives), then the key. */
static void elect_try(struct mgr_elect *e)
{
	struct qbd_manager_leader there;
	uint64_t t0 = qbd_now_ns();
	char msg[256];
	int err = e->me.lease ? qbd_meta_lease_keepalive(e->m, e->me.lease) : -ENOENT;

	if (err == -ENOENT) {
		e->me.lease = 0;
		err = qbd_meta_lease_grant(e->m, (int)e->ttl, &e->me.lease);
	}
	if (err) {
		snprintf(msg, sizeof msg, "cannot campaign: etcd: %s; retrying", strerror(-err));
		elect_say(e, msg);
		return;
	}
	e->me.since = (uint64_t)time(NULL);
	err = qbd_meta_manager_campaign(e->m, &e->me);
	if (err == 0) {
		set_leading(e, true, t0 + e->ttl * 1000000000ull - MARGIN_NS);
		e->said[0] = '\0';
		qbd_info(COMP, "this instance leads (lease %" PRIx64 ", %u s, key revision %"
			 PRIu64 ")", (uint64_t)e->me.lease, e->ttl, e->me.create_revision);
		return;
	}
	if (err == -EBUSY && qbd_meta_manager_get(e->m, &there) == 0)
		snprintf(msg, sizeof msg, "following: the leader is on host %s, pid %d, since %"
			 PRIu64, there.host, there.pid, there.since);
	else if (err == -EBUSY || err == -EAGAIN)
		snprintf(msg, sizeof msg, "following: another instance leads");
	else
		snprintf(msg, sizeof msg, "cannot campaign: etcd: %s; retrying", strerror(-err));
	elect_say(e, msg);
}

static void step_down(struct mgr_elect *e, const char *why)
{
	set_leading(e, false, 0);
	qbd_warn(COMP, "no longer the leader: %s", why);
	e->said[0] = '\0';
}

/* A leader's round: renew, then look at the key. */
static void elect_keep(struct mgr_elect *e)
{
	struct qbd_manager_leader there;
	uint64_t t0 = qbd_now_ns(), until;
	char why[160];
	int err = qbd_meta_lease_keepalive(e->m, e->me.lease);

	if (err == -ENOENT) {
		e->me.lease = 0;
		step_down(e, "its lease expired");
		return;
	}
	pthread_mutex_lock(&e->mu);
	until = e->valid_until;
	pthread_mutex_unlock(&e->mu);
	if (err) {
		if (qbd_now_ns() >= until) {
			snprintf(why, sizeof why, "etcd: %s for the lease's %u s", strerror(-err),
				 e->ttl);
			step_down(e, why);
		} else {
			qbd_warn(COMP, "renewing the leader's lease: %s; retrying", strerror(-err));
		}
		return;
	}
	set_leading(e, true, t0 + e->ttl * 1000000000ull - MARGIN_NS);
	err = qbd_meta_manager_get(e->m, &there);
	if (err == -ENOENT || (err == 0 && there.lease != e->me.lease)) {
		/* Deleted by hand, or taken: someone else may lead now. */
		qbd_meta_lease_revoke(e->m, e->me.lease);
		e->me.lease = 0;
		step_down(e, err ? QBD_MANAGER_KEY " was deleted" :
			  QBD_MANAGER_KEY " is under another lease");
	}
}

static void *elect_main(void *arg)
{
	struct mgr_elect *e = arg;
	bool leading;

	pthread_mutex_lock(&e->mu);
	while (!e->stop) {
		leading = e->leading;
		pthread_mutex_unlock(&e->mu);
		if (leading)
			elect_keep(e);
		else
			elect_try(e);
		pthread_mutex_lock(&e->mu);
		if (e->stop)
			break;
		{
			struct timespec ts;
			uint64_t ms = e->leading ? e->ttl * 1000u / 3 : MGR_FOLLOW_MS;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)(ms / 1000);
			ts.tv_nsec += (long)(ms % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			while (!e->stop && pthread_cond_timedwait(&e->cv, &e->mu, &ts) != ETIMEDOUT)
				;
		}
	}
	leading = e->leading;
	e->leading = false;
	pthread_mutex_unlock(&e->mu);
	if (e->me.lease) {
		int err = qbd_meta_lease_revoke(e->m, e->me.lease);

		if (leading)
			qbd_info(COMP, "stepped down: lease revoked%s%s", err ? ": " : "",
				 err ? strerror(-err) : "");
	}
	return NULL;
}

int mgr_elect_start(const char *etcd, unsigned ttl_s, struct mgr_elect **out)
{
	struct mgr_elect *e = calloc(1, sizeof *e);
	pthread_condattr_t ca;
	int err;

	if (!e)
		return -ENOMEM;
	err = qbd_meta_open(etcd, &e->m);
	if (err) {
		free(e);
		return err;
	}
	e->ttl = ttl_s;
	if (gethostname(e->me.host, sizeof e->me.host) < 0)
		snprintf(e->me.host, sizeof e->me.host, "?");
	e->me.host[sizeof e->me.host - 1] = '\0';
	e->me.pid = (int)getpid();
	pthread_mutex_init(&e->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->cv, &ca);
	pthread_condattr_destroy(&ca);
	/* Inherits the caller's mask: signals are the work thread's. */
	err = -pthread_create(&e->thread, NULL, elect_main, e);
	if (err) {
		qbd_err(COMP, "election thread: %s", strerror(-err));
		pthread_cond_destroy(&e->cv);
		pthread_mutex_destroy(&e->mu);
		qbd_meta_close(e->m);
		free(e);
		return err;
	}
	*out = e;
	return 0;
}

bool mgr_elect_leading(struct mgr_elect *e, int64_t *lease)
{
	bool r;

	pthread_mutex_lock(&e->mu);
	r = e->leading && qbd_now_ns() < e->valid_until;
	if (lease)
		*lease = e->lease;
	pthread_mutex_unlock(&e->mu);
	return r;
}

void mgr_elect_stop(struct mgr_elect *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	e->stop = true;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	pthread_join(e->thread, NULL);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	qbd_meta_close(e->m);
	free(e);
}
