/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Leader election through a coordination.k8s.io/v1 Lease, as client-go's
 * leaderelection does it: the holder renews spec.renewTime; a candidate
 * takes the Lease over once it has seen the same holder and renewTime
 * unchanged for leaseDurationSeconds of its own clock (never comparing its
 * clock with the holder's). Every write carries the resourceVersion read,
 * so two candidates cannot both win: the API server refuses the second
 * with 409 Conflict.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "common/log.h"
#include "internal.h"

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* MicroTime: RFC 3339 with microseconds. */
static void micro_time(char *out, size_t len)
{
	struct timeval tv;
	struct tm tm;
	char s[32];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, len, "%s.%06ldZ", s, (long)tv.tv_usec);
}

void op_lease_init(struct op_lease *l, const char *ns, const char *name, const char *identity,
		   int duration_s)
{
	memset(l, 0, sizeof *l);
	snprintf(l->ns, sizeof l->ns, "%s", ns);
	snprintf(l->name, sizeof l->name, "%s", name);
	snprintf(l->identity, sizeof l->identity, "%s", identity);
	l->duration_s = duration_s;
}

static json_object *lease_body(const struct op_lease *l, const char *holder, const char *acquire,
			       const char *renew, long long transitions, const char *rv)
{
	return jobj("apiVersion", js("coordination.k8s.io/v1"), "kind", js("Lease"),
		    "metadata", jobj("name", js(l->name), "namespace", js(l->ns),
				     "resourceVersion", rv ? js(rv) : NULL, NULL),
		    "spec", jobj("holderIdentity", js(holder),
				 "leaseDurationSeconds", ji(l->duration_s),
				 "acquireTime", acquire ? js(acquire) : NULL,
				 "renewTime", js(renew),
				 "leaseTransitions", ji(transitions), NULL), NULL);
}

int op_lease_try(struct kube *k, struct op_lease *l)
{
	json_object *cur = NULL, *body;
	char path[512], now[40];
	const char *holder, *renew, *rv;
	long status;
	bool mine, expired;
	double t = mono_s();
	int r;

	kube_path("coordination.k8s.io/v1", "Lease", l->ns, l->name, path, sizeof path);
	micro_time(now, sizeof now);
	if (kube_request(k, "GET", path, NULL, &status, &cur) < 0) {
		json_object_put(cur);
		return -EIO;
	}
	if (status == 404) {
		json_object_put(cur);
		kube_path("coordination.k8s.io/v1", "Lease", l->ns, NULL, path, sizeof path);
		body = lease_body(l, l->identity, now, now, 0, NULL);
		r = kube_request(k, "POST", path, body, &status, NULL);
		json_object_put(body);
		if (r < 0)
			return -EIO;
		if (status >= 300)
			return 0;       /* another candidate created it first */
		l->renewed_at = t;
		return 1;
	}
	if (status != 200) {
		json_object_put(cur);
		return -EIO;
	}
	holder = jstr(cur, "spec.holderIdentity");
	renew = jstr(cur, "spec.renewTime");
	rv = jstr(cur, "metadata.resourceVersion");
	mine = holder && strcmp(holder, l->identity) == 0;
	/* The record's age by this process's clock. */
	if (strcmp(l->seen_holder, holder ? holder : "") != 0 ||
	    strcmp(l->seen_renew, renew ? renew : "") != 0 || !l->seen_at) {
		snprintf(l->seen_holder, sizeof l->seen_holder, "%s", holder ? holder : "");
		snprintf(l->seen_renew, sizeof l->seen_renew, "%s", renew ? renew : "");
		l->seen_at = t;
	}
	expired = !holder || !*holder ||
		  t - l->seen_at > (double)jint(cur, "spec.leaseDurationSeconds", l->duration_s);
	if (!mine && !expired) {
		json_object_put(cur);
		return 0;
	}
	body = lease_body(l, l->identity, mine ? jstr(cur, "spec.acquireTime") : now, now,
			  jint(cur, "spec.leaseTransitions", 0) + (mine ? 0 : 1), rv);
	r = kube_request(k, "PUT", path, body, &status, NULL);
	json_object_put(body);
	if (r == 0 && status < 300 && !mine)
		qbd_info(OP_COMP, "leader: took the Lease %s/%s over from %s", l->ns, l->name,
			 holder && *holder ? holder : "nobody");
	json_object_put(cur);
	if (r < 0)
		return -EIO;
	if (status >= 300)
		return 0;
	l->renewed_at = t;
	return 1;
}

bool op_lease_held(const struct op_lease *l)
{
	/* Acting stops a third of the duration before another candidate may
	 * take over. */
	return l->renewed_at && mono_s() - l->renewed_at < (double)l->duration_s * 2 / 3;
}

void op_lease_release(struct kube *k, struct op_lease *l)
{
	json_object *cur = NULL, *body;
	char path[512], now[40];
	long status;

	if (!l->renewed_at)
		return;
	kube_path("coordination.k8s.io/v1", "Lease", l->ns, l->name, path, sizeof path);
	if (kube_request(k, "GET", path, NULL, &status, &cur) < 0 || status != 200 ||
	    !jstr(cur, "spec.holderIdentity") ||
	    strcmp(jstr(cur, "spec.holderIdentity"), l->identity) != 0) {
		json_object_put(cur);
		return;
	}
	micro_time(now, sizeof now);
	body = lease_body(l, "", NULL, now, jint(cur, "spec.leaseTransitions", 0),
			  jstr(cur, "metadata.resourceVersion"));
	json_object_object_add(jget(body, "spec"), "leaseDurationSeconds", ji(1));
	if (kube_request(k, "PUT", path, body, &status, NULL) == 0 && status < 300)
		qbd_info(OP_COMP, "leader: released the Lease %s/%s", l->ns, l->name);
	json_object_put(body);
	json_object_put(cur);
	l->renewed_at = 0;
}
