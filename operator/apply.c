/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Carrying out a plan: the object actions through the API, the qbd
 * commands (the CLI, run with the cluster's etcd and secret), the events,
 * then the status. A failure is logged and left to the next loop: every
 * step is decided again from what is observed then.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "internal.h"

/* A qbd command that has not finished after this long is killed. */
#define QBD_CMD_TIMEOUT_S 300

static const char *verb_name(enum op_verb v)
{
	return v == OP_CREATE ? "create" : v == OP_UPDATE ? "update" : "delete";
}

static int do_action(struct kube *k, const struct op_action *a)
{
	const char *method = a->verb == OP_CREATE ? "POST" : a->verb == OP_UPDATE ? "PUT" : "DELETE";
	char path[1024];
	long status;
	int r;

	r = kube_path(a->api_version, a->kind, a->ns, a->verb == OP_CREATE ? NULL : a->name,
		      path, sizeof path);
	if (r < 0) {
		qbd_err(OP_COMP, "%s %s %s: a kind the operator does not know", verb_name(a->verb),
			a->kind, a->name);
		return r;
	}
	if (a->verb == OP_DELETE)
		strncat(path, "?propagationPolicy=Background", sizeof path - strlen(path) - 1);
	r = kube_request(k, method, path, a->verb == OP_DELETE ? NULL : a->body, &status, NULL);
	if (r < 0) {
		qbd_warn(OP_COMP, "%s %s %s: %s", verb_name(a->verb), a->kind, a->name, kube_error(k));
		return r;
	}
	if (status < 300 || (a->verb == OP_DELETE && status == 404)) {
		qbd_info(OP_COMP, "%s %s %s%s%s", verb_name(a->verb), a->kind,
			 a->ns ? a->ns : "", a->ns ? "/" : "", a->name);
		return 0;
	}
	qbd_warn(OP_COMP, "%s %s %s: %s%s", verb_name(a->verb), a->kind, a->name, kube_error(k),
		 status == 409 ? " (left to the next loop)" : "");
	return -EIO;
}

/* Run the qbd CLI; its exit status, or -1. */
static int run_qbd(const struct op_apply_conf *c, const char *etcd, const struct op_qbd *q)
{
	const char *argv[16];
	int n = 0, status;
	pid_t pid;
	time_t deadline;

	argv[n++] = c->qbd;
	if (etcd && *etcd) {
		argv[n++] = "--etcd";
		argv[n++] = etcd;
	}
	if (c->secret_file && access(c->secret_file, R_OK) == 0) {
		argv[n++] = "--secret-file";
		argv[n++] = c->secret_file;
	}
	if (q->kind == OP_FENCE_NODE) {
		argv[n++] = "volume";
		argv[n++] = "fence";
		argv[n++] = "--node";
		argv[n++] = q->arg;
	} else {
		argv[n++] = "node";
		argv[n++] = "remove";
		argv[n++] = q->arg;
		argv[n++] = "--yes";
	}
	argv[n] = NULL;
	qbd_info(OP_COMP, "running %s %s %s%s (node %s)", c->qbd, q->kind == OP_FENCE_NODE ?
		 "volume fence --node" : "node remove", q->arg,
		 q->kind == OP_FENCE_NODE ? "" : " --yes", q->node);
	pid = fork();
	if (pid < 0) {
		qbd_err(OP_COMP, "fork: %m");
		return -1;
	}
	if (pid == 0) {
		sigset_t all;

		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "qbd-operator: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	deadline = time(NULL) + QBD_CMD_TIMEOUT_S;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return -1;
		if (time(NULL) > deadline) {
			qbd_warn(OP_COMP, "%s did not finish in %d s: killed", c->qbd,
				 QBD_CMD_TIMEOUT_S);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		usleep(50 * 1000);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void rfc3339(char *out, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void op_post_event(struct kube *k, json_object *cluster, const char *type, const char *reason,
		   const char *message)
{
	const char *ns = jstr(cluster, "metadata.namespace"), *name = jstr(cluster, "metadata.name");
	char path[512], now[32], gen[300];
	json_object *ev;
	long status;

	if (!ns || !name)
		return;
	rfc3339(now, sizeof now);
	snprintf(gen, sizeof gen, "%s.", name);
	ev = jobj("apiVersion", js("v1"), "kind", js("Event"),
		  "metadata", jobj("generateName", js(gen), "namespace", js(ns), NULL),
		  "involvedObject", jobj("apiVersion", js(OP_GROUP_VERSION), "kind", js(OP_KIND),
					 "name", js(name), "namespace", js(ns),
					 "uid", jstr(cluster, "metadata.uid") ?
					 js(jstr(cluster, "metadata.uid")) : NULL, NULL),
		  "type", js(type), "reason", js(reason), "message", js(message),
		  "source", jobj("component", js(OP_MANAGED_BY), NULL),
		  "reportingComponent", js(OP_MANAGED_BY),
		  "firstTimestamp", js(now), "lastTimestamp", js(now), "count", ji(1), NULL);
	kube_path("v1", "Event", ns, NULL, path, sizeof path);
	if (kube_request(k, "POST", path, ev, &status, NULL) < 0 || status >= 300)
		qbd_warn(OP_COMP, "event %s: %s", reason, kube_error(k));
	json_object_put(ev);
}

int op_apply(struct kube *k, const struct op_apply_conf *c, json_object *cluster,
	     struct op_plan *p)
{
	int failed = 0;
	char path[1024], msg[600];

	for (size_t i = 0; i < p->nacts; i++)
		if (do_action(k, &p->acts[i]) < 0)
			failed++;
	for (size_t i = 0; i < p->nevents; i++) {
		const struct op_event *e = &p->events[i];

		if (strcmp(e->type, "Warning") == 0)
			qbd_warn(OP_COMP, "%s: %s", e->reason, e->message);
		else
			qbd_info(OP_COMP, "%s: %s", e->reason, e->message);
		op_post_event(k, cluster, e->type, e->reason, e->message);
	}
	for (size_t i = 0; i < p->nqbd; i++) {
		const struct op_qbd *q = &p->qbd[i];
		int rc = run_qbd(c, p->etcd, q);

		if (rc == 0)
			continue;
		failed++;
		snprintf(msg, sizeof msg, "%s %s failed (exit %d): retried on the next loop",
			 q->kind == OP_FENCE_NODE ? "qbd volume fence --node" : "qbd node remove",
			 q->arg, rc);
		qbd_warn(OP_COMP, "%s", msg);
		op_post_event(k, cluster, "Warning", q->kind == OP_FENCE_NODE ? "FenceFailed" :
			      "NodeRemoveFailed", msg);
		op_plan_qbd_failed(p, i);
	}
	if (p->status && p->status_changed) {
		json_object *body = NULL;
		long status;

		json_object_deep_copy(cluster, &body, NULL);
		json_object_object_add(body, "status", json_object_get(p->status));
		kube_path(OP_GROUP_VERSION, OP_KIND, jstr(cluster, "metadata.namespace"),
			  jstr(cluster, "metadata.name"), path, sizeof path);
		strncat(path, "/status", sizeof path - strlen(path) - 1);
		if (kube_request(k, "PUT", path, body, &status, NULL) < 0 || status >= 300) {
			qbd_warn(OP_COMP, "status: %s", kube_error(k));
			failed++;
		} else {
			qbd_debug(OP_COMP, "status written");
		}
		json_object_put(body);
	}
	return failed ? -EIO : 0;
}
