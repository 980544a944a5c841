/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Carrying out a plan: the object actions through the API, the qbd
 * commands (the CLI, run with the cluster's etcd and secret), the events,
 * then the status. A failure is logged and left to the next loop: every
 * step is decided again from what is observed then.
 */
#include <errno.h>
#include <fcntl.h>
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

/* What can be read from fd now, appended to *buf. */
static void drain(int fd, char **buf, size_t *len, size_t *cap)
{
	for (;;) {
		ssize_t n;

		if (*cap - *len < 4096) {
			*cap = *cap ? *cap * 2 : 16384;
			*buf = qbd_xrealloc(*buf, *cap + 1);
		}
		n = read(fd, *buf + *len, *cap - *len);
		if (n <= 0)
			break;
		*len += (size_t)n;
	}
}

/* Run argv (the qbd CLI), its stdout into *out when out is given (the
 * caller frees it); its exit status, or -1. Killed after
 * QBD_CMD_TIMEOUT_S. */
static int run_cmd(const char *const *argv, char **out)
{
	int pfd[2] = { -1, -1 }, status;
	size_t len = 0, cap = 0;
	char *buf = NULL;
	time_t deadline;
	pid_t pid;

	if (out && pipe2(pfd, O_CLOEXEC) < 0) {
		qbd_err(OP_COMP, "pipe: %m");
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		qbd_err(OP_COMP, "fork: %m");
		if (out) {
			close(pfd[0]);
			close(pfd[1]);
		}
		return -1;
	}
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (out)
			dup2(pfd[1], 1);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "qbd-operator: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	deadline = time(NULL) + QBD_CMD_TIMEOUT_S;
	if (out) {
		close(pfd[1]);
		fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	}
	for (;;) {
		pid_t w;

		if (out)
			drain(pfd[0], &buf, &len, &cap);
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			status = -1;
			break;
		}
		if (time(NULL) > deadline) {
			qbd_warn(OP_COMP, "%s did not finish in %d s: killed", argv[0],
				 QBD_CMD_TIMEOUT_S);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			status = -1;
			break;
		}
		usleep(20 * 1000);
	}
	if (out) {
		drain(pfd[0], &buf, &len, &cap);
		close(pfd[0]);
		if (!buf)
			buf = qbd_xrealloc(NULL, 1);
		buf[len] = 0;
		*out = buf;
	}
	return status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* argv of the qbd CLI with the cluster's etcd and the secret, then the
 * command's words (NULL-terminated); n: the words' count. */
static void qbd_argv(const struct op_apply_conf *c, const char *etcd, const char **argv,
		     const char *const *words)
{
	int n = 0;

	argv[n++] = c->qbd;
	if (etcd && *etcd) {
		argv[n++] = "--etcd";
		argv[n++] = etcd;
	}
	if (c->secret_file && access(c->secret_file, R_OK) == 0) {
		argv[n++] = "--secret-file";
		argv[n++] = c->secret_file;
	}
	while (*words)
		argv[n++] = *words++;
	argv[n] = NULL;
}

/* Whether qbd has a node at addr that is not removed yet: 1 yes, 0 no, -1
 * cannot tell (`qbd node list --json`: exit 0, 3 some down, 4 none up). */
static int qbd_has_node(const struct op_apply_conf *c, const char *etcd, const char *addr)
{
	const char *argv[16];
	char *out = NULL;
	json_object *list;
	int rc, found = 0;

	qbd_argv(c, etcd, argv, (const char *const[]){ "node", "list", "--json", NULL });
	rc = run_cmd(argv, &out);
	list = rc == 0 || rc == 3 || rc == 4 ? json_tokener_parse(out) : NULL;
	free(out);
	if (!list || !json_object_is_type(list, json_type_array)) {
		json_object_put(list);
		return -1;
	}
	for (size_t i = 0; i < jlen(list); i++) {
		const char *a = jstr(jat(list, i), "addr"), *st = jstr(jat(list, i), "state");

		if (a && strcmp(a, addr) == 0 && !(st && strcmp(st, "removed") == 0))
			found = 1;
	}
	json_object_put(list);
	return found;
}

/* One qbd action: 0 done, else its failure (logged). */
static int run_qbd(const struct op_apply_conf *c, const char *etcd, const struct op_qbd *q)
{
	const char *argv[16];
	int rc;

	if (q->kind == OP_REMOVE_NODE) {
		int has = qbd_has_node(c, etcd, q->arg);

		if (has == 0) {
			qbd_info(OP_COMP, "node %s: qbd has no node %s in service: nothing to remove",
				 q->node, q->arg);
			return 0;
		}
		if (has < 0) {
			qbd_warn(OP_COMP, "node %s: qbd node list failed: %s not removed yet",
				 q->node, q->arg);
			return -1;
		}
	}
	qbd_info(OP_COMP, "running %s %s %s%s (node %s)", c->qbd, q->kind == OP_FENCE_NODE ?
		 "volume fence --node" : "node remove", q->arg,
		 q->kind == OP_FENCE_NODE ? "" : " --yes", q->node);
	if (q->kind == OP_FENCE_NODE)
		qbd_argv(c, etcd, argv, (const char *const[]){ "volume", "fence", "--node", q->arg,
							      NULL });
	else
		qbd_argv(c, etcd, argv, (const char *const[]){ "node", "remove", q->arg, "--yes",
							      NULL });
	rc = run_cmd(argv, NULL);
	return rc;
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

/* The status subresource, replaced; on 409 (the QbdCluster changed since
 * it was listed) read again and retried: the status records what the qbd
 * commands did, which must not be done twice. */
static int write_status(struct kube *k, json_object *cluster, json_object *status)
{
	char path[1024];
	json_object *body = NULL;
	long code = 0;

	kube_path(OP_GROUP_VERSION, OP_KIND, jstr(cluster, "metadata.namespace"),
		  jstr(cluster, "metadata.name"), path, sizeof path);
	json_object_deep_copy(cluster, &body, NULL);
	for (int attempt = 0; attempt < 3; attempt++) {
		char spath[1100];
		json_object *fresh = NULL;

		json_object_object_add(body, "status", json_object_get(status));
		snprintf(spath, sizeof spath, "%s/status", path);
		if (kube_request(k, "PUT", spath, body, &code, NULL) < 0)
			break;
		if (code < 300) {
			json_object_put(body);
			qbd_debug(OP_COMP, "status written");
			return 0;
		}
		if (code != 409)
			break;
		if (kube_request(k, "GET", path, NULL, &code, &fresh) < 0 || code != 200) {
			json_object_put(fresh);
			break;
		}
		json_object_put(body);
		body = fresh;
	}
	qbd_warn(OP_COMP, "status: %s", kube_error(k));
	json_object_put(body);
	return -EIO;
}

int op_apply(struct kube *k, const struct op_apply_conf *c, json_object *cluster,
	     struct op_plan *p)
{
	int failed = 0, waited = 0;
	char msg[600];

	for (size_t i = 0; i < p->nacts; i++) {
		const struct op_action *a = &p->acts[i];

		if (a->when_healthy) {
			const char *argv[16];
			char *out = NULL;
			int rc;

			qbd_argv(c, p->etcd, argv, (const char *const[]){ "status", NULL });
			rc = run_cmd(argv, &out);      /* its report is not the operator's */
			free(out);
			if (rc != 0) {
				qbd_info(OP_COMP, "restart of %s %s waits: qbd status exits %d (not "
					 "healthy)", a->kind, a->name, rc);
				waited++;
				continue;
			}
			snprintf(msg, sizeof msg, "restarting chunk server pod %s (its DaemonSet "
				 "changed; the cluster is healthy)", a->name);
			qbd_info(OP_COMP, "%s", msg);
			op_post_event(k, cluster, "Normal", "RestartingChunkServer", msg);
		}
		if (do_action(k, a) < 0)
			failed++;
	}
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
	if (p->status && p->status_changed && write_status(k, cluster, p->status) < 0)
		failed++;
	return failed ? -EIO : waited ? -EAGAIN : 0;
}
