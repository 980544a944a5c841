/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-operator: reconciles the QbdCluster of its namespace (docs/kubernetes.md).
 * One thread per watched kind keeps a watch open and marks the world
 * changed on every event; the main thread, woken by a change (debounced)
 * or by the resync period, lists everything afresh, computes the plan
 * (op_reconcile) and carries it out (op_apply). Level-triggered: a missed
 * event costs a delay, never a wrong decision. SIGTERM or SIGINT: the
 * watches are cut, the loop ends, exit 0.
 *
 *   qbd-operator --render CLUSTER.json [--nodes NODES.json]: print the
 *   objects it would create, as a YAML stream, and exit (no API server).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>

#include "common/log.h"
#include "internal.h"

#define PROG "qbd-operator"
#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define DEBOUNCE_MS 200
#define RETRY_S 5

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qbd-operator [--namespace NS] [--api URL --token-file F --ca-file F]\n"
		"                    [--qbd PATH] [--secret-file PATH] [--resync PERIOD]\n"
		"                    [--leader-election [--lease-duration PERIOD]] [--log-level L]\n"
		"       qbd-operator --render CLUSTER.json [--nodes NODES.json] [--status]\n"
		"Reconcile the QbdCluster of a namespace into qbd's workloads, and heal:\n"
		"fence the writers of a node tainted " OP_TAINT_OUT_OF_SERVICE ", run\n"
		"`qbd node remove` for a storage node deleted (docs/kubernetes.md).\n"
		"  --namespace NS     the namespace watched (default $POD_NAMESPACE, else\n"
		"                     qbd-system)\n"
		"  --api URL          the API server (default: in the cluster,\n"
		"                     https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)\n"
		"  --token-file F     bearer token (default " SA_DIR "/token)\n"
		"  --ca-file F        the API server's CA (default " SA_DIR "/ca.crt)\n"
		"  --qbd PATH         the qbd CLI (default: qbd on $PATH)\n"
		"  --secret-file PATH the cluster secret for the qbd CLI (default\n"
		"                     " OP_SECRET_PATH ")\n"
		"  --resync PERIOD    reconcile at least this often: 30s, 5m, 1h (default 60s)\n"
		"  --leader-election  act only while holding the Lease qbd-operator in the\n"
		"                     namespace (identity $POD_NAME, else host_pid); exit 1\n"
		"                     when it is lost\n"
		"  --lease-duration P how long a Lease not renewed stays its holder's\n"
		"                     (default 15s; renewed every third of it)\n"
		"  --render F         print the objects the QbdCluster in JSON file F asks for\n"
		"                     (kubectl create --dry-run=client -o json -f X.yaml),\n"
		"                     as a YAML stream, and exit; --nodes: a NodeList in JSON\n"
		"                     (kubectl get nodes -o json); --status: then the\n"
		"                     QbdCluster with the status it would write\n"
		"  --log-level L      error|warn|info|debug\n"
		"  --help\n");
}

static int parse_period(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (end == s || v <= 0)
		return -1;
	if (!*end || strcmp(end, "s") == 0)
		return v > 86400 ? -1 : (int)v;
	if (strcmp(end, "m") == 0)
		return v > 1440 ? -1 : (int)(v * 60);
	if (strcmp(end, "h") == 0)
		return v > 24 ? -1 : (int)(v * 3600);
	return -1;
}

static void now_rfc3339(char *out, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- --render ---- */

static json_object *items(json_object *o)
{
	if (json_object_is_type(o, json_type_array))
		return o;
	return jget(o, "items");
}

static int render(const char *cluster_file, const char *nodes_file, const char *ns,
		  bool with_status)
{
	json_object *cluster = json_object_from_file(cluster_file), *nodes = NULL, *secrets;
	struct op_observed obs = { 0 };
	struct op_plan p;
	const char *names[2];
	int rc = 0;

	if (!cluster || !json_object_is_type(cluster, json_type_object)) {
		fprintf(stderr, PROG ": %s: not a JSON object: %s\n", cluster_file,
			json_util_get_last_err());
		json_object_put(cluster);
		return 1;
	}
	if (nodes_file && !(nodes = json_object_from_file(nodes_file))) {
		fprintf(stderr, PROG ": %s: %s\n", nodes_file, json_util_get_last_err());
		json_object_put(cluster);
		return 1;
	}
	/* What the API server would have set. */
	json_object *meta = jget(cluster, "metadata");

	if (!meta) {
		meta = json_object_new_object();
		json_object_object_add(cluster, "metadata", meta);
	}
	if (!jstr(meta, "namespace"))
		json_object_object_add(meta, "namespace", js(ns));
	if (!jstr(meta, "uid"))
		json_object_object_add(meta, "uid", js("00000000-0000-0000-0000-000000000000"));
	secrets = json_object_new_array();
	for (size_t i = 0, n = op_secret_names(cluster, names); i < n; i++)
		json_object_array_add(secrets, js(names[i]));
	obs.nodes = nodes ? items(nodes) : NULL;
	obs.secrets = secrets;
	if (op_reconcile(cluster, &obs, "1970-01-01T00:00:00Z", &p) < 0) {
		fprintf(stderr, PROG ": %s: no metadata.name\n", cluster_file);
		rc = 1;
	} else {
		for (size_t i = 0; i < p.nacts; i++)
			printf("---\n%s\n", json_object_to_json_string_ext(p.acts[i].body,
				JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
		if (with_status && p.status) {
			json_object_object_add(cluster, "status", json_object_get(p.status));
			printf("---\n%s\n", json_object_to_json_string_ext(cluster,
				JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
		}
		for (size_t i = 0; p.status && i < jlen(jget(p.status, "conditions")); i++) {
			json_object *c = jat(jget(p.status, "conditions"), i);

			fprintf(stderr, PROG ": %s %s %s: %s\n", jstr(c, "type"), jstr(c, "status"),
				jstr(c, "reason"), jstr(c, "message"));
		}
		op_plan_free(&p);
	}
	json_object_put(secrets);
	json_object_put(nodes);
	json_object_put(cluster);
	return rc;
}

/* ---- watches ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool dirty;
static volatile int stopping;

static void mark_dirty(void)
{
	pthread_mutex_lock(&mu);
	dirty = true;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

/* Sleep ms unless stopping. */
static void nap(int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&mu);
	while (!stopping && pthread_cond_timedwait(&cv, &mu, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&mu);
}

struct watcher {
	pthread_t thread;
	const struct kube_conf *kc;
	char path[512];
	char rv[128];
};

static int on_event(json_object *ev, void *arg)
{
	struct watcher *w = arg;
	const char *type = jstr(ev, "type"), *rv = jstr(ev, "object.metadata.resourceVersion");

	if (rv)
		snprintf(w->rv, sizeof w->rv, "%s", rv);
	if (type && strcmp(type, "BOOKMARK") != 0) {
		qbd_debug(OP_COMP, "watch %s: %s %s", w->path, type,
			  jstr(ev, "object.metadata.name") ? jstr(ev, "object.metadata.name") : "");
		mark_dirty();
	}
	return 0;
}

static void *watch_thread(void *arg)
{
	struct watcher *w = arg;
	struct kube *k;
	char err[256];

	if (kube_open(w->kc, &k, err, sizeof err) < 0) {
		qbd_err(OP_COMP, "watch %s: %s", w->path, err);
		return NULL;
	}
	while (!stopping) {
		int r;

		if (!w->rv[0]) {
			json_object *list = NULL;
			long status;

			if (kube_request(k, "GET", w->path, NULL, &status, &list) < 0 || status != 200 ||
			    !jstr(list, "metadata.resourceVersion")) {
				qbd_warn(OP_COMP, "list %s: %s", w->path, kube_error(k));
				json_object_put(list);
				nap(RETRY_S * 1000);
				continue;
			}
			snprintf(w->rv, sizeof w->rv, "%s", jstr(list, "metadata.resourceVersion"));
			json_object_put(list);
			mark_dirty();
		}
		r = kube_watch(k, w->path, w->rv, on_event, w, &stopping);
		if (r == -ESTALE) {
			qbd_info(OP_COMP, "watch %s: resource version %s gone: listing again",
				 w->path, w->rv);
			w->rv[0] = 0;
		} else if (r < 0 && !stopping) {
			qbd_warn(OP_COMP, "watch %s: %s", w->path, kube_error(k));
			nap(RETRY_S * 1000);
		}
	}
	kube_close(k);
	return NULL;
}

/* ---- one loop ---- */

struct kind_list {
	const char *api_version, *kind;
	bool cluster_scoped;
	const char *selector;   /* NULL: the operator's own objects */
};

static const struct kind_list owned_kinds[] = {
	{ "v1", "ConfigMap", false, NULL },
	{ "v1", "Service", false, NULL },
	{ "apps/v1", "StatefulSet", false, NULL },
	{ "apps/v1", "DaemonSet", false, NULL },
	{ "apps/v1", "Deployment", false, NULL },
	{ "storage.k8s.io/v1", "CSIDriver", true, NULL },
	{ "storage.k8s.io/v1", "StorageClass", true, NULL },
};

static int list_path(const struct kind_list *kl, const char *ns, char *out, size_t len)
{
	char base[512];
	int r = kube_path(kl->api_version, kl->kind, kl->cluster_scoped ? NULL : ns, NULL, base,
			  sizeof base);

	if (r < 0)
		return r;
	if (kl->selector)
		snprintf(out, len, "%s?labelSelector=%s", base, kl->selector);
	else if (kl->cluster_scoped)
		snprintf(out, len, "%s?labelSelector=" OP_LABEL_MANAGED_BY "%%3D" OP_MANAGED_BY
			 "%%2C" OP_LABEL_NAMESPACE "%%3D%s", base, ns);
	else
		snprintf(out, len, "%s?labelSelector=" OP_LABEL_MANAGED_BY "%%3D" OP_MANAGED_BY,
			 base);
	return 0;
}

/* The items of a list, each given its apiVersion and kind (list items come
 * without them), appended to into. */
static int list_into(struct kube *k, const char *path, const char *api_version, const char *kind,
		     json_object *into)
{
	json_object *list = NULL;
	long status;

	if (kube_request(k, "GET", path, NULL, &status, &list) < 0 || status != 200) {
		qbd_warn(OP_COMP, "list %s: %s", path, kube_error(k));
		json_object_put(list);
		return -EIO;
	}
	for (size_t i = 0; i < jlen(jget(list, "items")); i++) {
		json_object *o = jat(jget(list, "items"), i);

		json_object_object_add(o, "apiVersion", js(api_version));
		json_object_object_add(o, "kind", js(kind));
		json_object_array_add(into, json_object_get(o));
	}
	json_object_put(list);
	return 0;
}

static int cmp_cluster(const void *a, const void *b)
{
	json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
	const char *tx = jstr(x, "metadata.creationTimestamp"), *ty = jstr(y, "metadata.creationTimestamp");
	int c = strcmp(tx ? tx : "", ty ? ty : "");

	return c ? c : strcmp(jstr(x, "metadata.name") ? jstr(x, "metadata.name") : "",
			      jstr(y, "metadata.name") ? jstr(y, "metadata.name") : "");
}

/* 0, or -EIO when something could not be observed or done. */
static int reconcile_once(struct kube *k, const char *ns, const struct op_apply_conf *ac)
{
	json_object *clusters = json_object_new_array(), *nodes = json_object_new_array();
	json_object *owned = json_object_new_array(), *pods = json_object_new_array();
	json_object *secrets = json_object_new_array(), *cluster = NULL;
	struct op_observed obs = { nodes, owned, pods, secrets };
	struct op_plan p;
	char path[1024], now[32];
	int r = 0;
	static bool warned_many;

	kube_path(OP_GROUP_VERSION, OP_KIND, ns, NULL, path, sizeof path);
	r |= list_into(k, path, OP_GROUP_VERSION, OP_KIND, clusters);
	r |= list_into(k, "/api/v1/nodes", "v1", "Node", nodes);
	for (size_t i = 0; i < sizeof owned_kinds / sizeof owned_kinds[0]; i++) {
		list_path(&owned_kinds[i], ns, path, sizeof path);
		r |= list_into(k, path, owned_kinds[i].api_version, owned_kinds[i].kind, owned);
	}
	kube_path("v1", "Pod", ns, NULL, path, sizeof path);
	strncat(path, "?labelSelector=app.kubernetes.io%2Fpart-of%3Dqbd", sizeof path - strlen(path) - 1);
	r |= list_into(k, path, "v1", "Pod", pods);
	if (r)
		goto out;
	if (jlen(clusters)) {
		json_object_array_sort(clusters, cmp_cluster);
		cluster = jat(clusters, 0);
		if (jlen(clusters) > 1 && !warned_many) {
			qbd_warn(OP_COMP, "%zu QbdClusters in %s: only the oldest, %s, is reconciled",
				 jlen(clusters), ns, jstr(cluster, "metadata.name"));
			warned_many = true;
		}
		const char *names[2];

		for (size_t i = 0, n = op_secret_names(cluster, names); i < n; i++) {
			long status;

			kube_path("v1", "Secret", ns, names[i], path, sizeof path);
			if (kube_request(k, "GET", path, NULL, &status, NULL) < 0 ||
			    (status != 200 && status != 404)) {
				qbd_warn(OP_COMP, "secret %s: %s", names[i], kube_error(k));
				r = -EIO;
				goto out;
			}
			if (status == 200)
				json_object_array_add(secrets, js(names[i]));
		}
	}
	now_rfc3339(now, sizeof now);
	if (op_reconcile(cluster, &obs, now, &p) < 0) {
		qbd_warn(OP_COMP, "QbdCluster %s: no name, namespace or uid",
			 jstr(cluster, "metadata.name"));
		r = -EINVAL;
		goto out;
	}
	qbd_debug(OP_COMP, "plan: %zu object actions, %zu qbd commands, %zu events, status %s",
		  p.nacts, p.nqbd, p.nevents, p.status_changed ? "changed" : "unchanged");
	r = op_apply(k, ac, cluster, &p);
	op_plan_free(&p);
out:
	json_object_put(clusters);
	json_object_put(nodes);
	json_object_put(owned);
	json_object_put(pods);
	json_object_put(secrets);
	return r;
}

static void *signal_thread(void *arg)
{
	sigset_t *sigs = arg;
	int sig;

	if (sigwait(sigs, &sig) == 0)
		qbd_info(OP_COMP, "signal %d: stopping", sig);
	pthread_mutex_lock(&mu);
	stopping = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	return NULL;
}

/* ---- leader election ---- */

static struct op_lease lease;   /* under mu once the renew thread runs */
static bool leading;            /* --leader-election */
static int lost_lease;

static void *renew_thread(void *arg)
{
	const struct kube_conf *kc = arg;
	struct kube *k;
	char err[256];
	int every = lease.duration_s / 3 > 0 ? lease.duration_s / 3 : 1;

	if (kube_open(kc, &k, err, sizeof err) < 0) {
		qbd_err(OP_COMP, "leader: %s", err);
		return NULL;
	}
	while (!stopping) {
		struct op_lease tmp;
		int r;

		nap(every * 1000);
		if (stopping)
			break;
		pthread_mutex_lock(&mu);
		tmp = lease;
		pthread_mutex_unlock(&mu);
		r = op_lease_try(k, &tmp);
		pthread_mutex_lock(&mu);
		lease = tmp;
		if (r == 0) {
			lost_lease = 1;
			stopping = 1;
			pthread_cond_broadcast(&cv);
		}
		pthread_mutex_unlock(&mu);
		if (r == 0)
			qbd_err(OP_COMP, "leader: another candidate holds the Lease %s/%s now: "
				"stopping", lease.ns, lease.name);
		else if (r < 0)
			qbd_warn(OP_COMP, "leader: renewing the Lease: %s", kube_error(k));
	}
	kube_close(k);
	return NULL;
}

/* Wait until this process holds the Lease (or is stopped: false). */
static bool lead(struct kube *k)
{
	bool said = false;

	for (;;) {
		int r = op_lease_try(k, &lease);

		if (r == 1) {
			qbd_info(OP_COMP, "leader: holding the Lease %s/%s as %s", lease.ns,
				 lease.name, lease.identity);
			return true;
		}
		if (r < 0)
			qbd_warn(OP_COMP, "leader: the Lease: %s", kube_error(k));
		else if (!said)
			qbd_info(OP_COMP, "leader: the Lease %s/%s is held by %s: waiting",
				 lease.ns, lease.name, lease.seen_holder);
		said = said || r == 0;
		nap(lease.duration_s / 5 > 0 ? lease.duration_s / 5 * 1000 : 1000);
		if (stopping)
			return false;
	}
}

static bool still_leading(void)
{
	bool held;

	if (!leading)
		return true;
	pthread_mutex_lock(&mu);
	held = op_lease_held(&lease);
	pthread_mutex_unlock(&mu);
	return held;
}

static int run(const struct kube_conf *kc, const char *ns, const struct op_apply_conf *ac,
	       int resync)
{
	pthread_t renew;
	struct watcher w[16];
	size_t nw = 0;
	pthread_t sigt;
	sigset_t sigs;
	struct kube *k;
	char err[256], ctx[300];
	time_t next;

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	snprintf(ctx, sizeof ctx, "ns=%s", ns);
	qbd_log_set_context(ctx);
	if (kube_open(kc, &k, err, sizeof err) < 0) {
		qbd_err(OP_COMP, "%s", err);
		return 1;
	}
	pthread_create(&sigt, NULL, signal_thread, &sigs);
	if (leading) {
		if (!lead(k)) {
			pthread_join(sigt, NULL);
			kube_close(k);
			qbd_info(OP_COMP, "stopped");
			return 0;
		}
		pthread_create(&renew, NULL, renew_thread, (void *)kc);
	}

	/* The watched kinds: its resource, Nodes, what it owns, its Pods. */
	memset(w, 0, sizeof w);
	kube_path(OP_GROUP_VERSION, OP_KIND, ns, NULL, w[nw++].path, sizeof w[0].path);
	snprintf(w[nw++].path, sizeof w[0].path, "/api/v1/nodes");
	for (size_t i = 0; i < sizeof owned_kinds / sizeof owned_kinds[0]; i++)
		list_path(&owned_kinds[i], ns, w[nw++].path, sizeof w[0].path);
	kube_path("v1", "Pod", ns, NULL, w[nw].path, sizeof w[0].path);
	strncat(w[nw++].path, "?labelSelector=app.kubernetes.io%2Fpart-of%3Dqbd",
		sizeof w[0].path - strlen(w[0].path) - 1);
	for (size_t i = 0; i < nw; i++) {
		w[i].kc = kc;
		pthread_create(&w[i].thread, NULL, watch_thread, &w[i]);
	}
	qbd_info(OP_COMP, "started: API %s, %zu watches, resync %d s", kc->api, nw, resync);

	next = time(NULL);
	while (!stopping) {
		struct timespec ts = { .tv_sec = next };

		pthread_mutex_lock(&mu);
		while (!stopping && !dirty && time(NULL) < next)
			pthread_cond_timedwait(&cv, &mu, &ts);
		pthread_mutex_unlock(&mu);
		if (stopping)
			break;
		nap(DEBOUNCE_MS);       /* let a burst of events settle */
		pthread_mutex_lock(&mu);
		dirty = false;
		pthread_mutex_unlock(&mu);
		if (stopping)
			break;
		if (!still_leading()) {
			qbd_err(OP_COMP, "leader: the Lease was not renewed in time: stopping");
			lost_lease = 1;
			break;
		}
		next = time(NULL) + (reconcile_once(k, ns, ac) < 0 ? RETRY_S : resync);
	}
	pthread_mutex_lock(&mu);
	stopping = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	for (size_t i = 0; i < nw; i++)
		pthread_join(w[i].thread, NULL);
	if (leading) {
		pthread_join(renew, NULL);
		if (!lost_lease)
			op_lease_release(k, &lease);
	}
	/* A lost Lease leaves the signal thread waiting: exit from here. */
	if (lost_lease) {
		kube_close(k);
		qbd_info(OP_COMP, "stopped: leadership lost");
		return 1;
	}
	pthread_join(sigt, NULL);
	kube_close(k);
	qbd_info(OP_COMP, "stopped");
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "namespace", required_argument, NULL, 'n' },
		{ "api", required_argument, NULL, 'a' },
		{ "token-file", required_argument, NULL, 't' },
		{ "ca-file", required_argument, NULL, 'c' },
		{ "qbd", required_argument, NULL, 'q' },
		{ "secret-file", required_argument, NULL, 's' },
		{ "resync", required_argument, NULL, 'r' },
		{ "render", required_argument, NULL, 'R' },
		{ "nodes", required_argument, NULL, 'N' },
		{ "status", no_argument, NULL, 'S' },
		{ "leader-election", no_argument, NULL, 'L' },
		{ "lease-duration", required_argument, NULL, 'D' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kube_conf kc = { .token_file = SA_DIR "/token", .ca_file = SA_DIR "/ca.crt" };
	struct op_apply_conf ac = { .qbd = "qbd", .secret_file = OP_SECRET_PATH };
	const char *ns = getenv("POD_NAMESPACE"), *render_file = NULL, *nodes_file = NULL;
	char api[512];
	int c, resync = 60, lease_s = 15, rc;
	const char *pod = getenv("POD_NAME");
	char ident[300];
	bool with_status = false;

	qbd_log_init(PROG);
	if (!ns || !*ns)
		ns = "qbd-system";
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'n': ns = optarg; break;
		case 'a': kc.api = optarg; break;
		case 't': kc.token_file = *optarg ? optarg : NULL; break;
		case 'c': kc.ca_file = *optarg ? optarg : NULL; break;
		case 'q': ac.qbd = optarg; break;
		case 's': ac.secret_file = optarg; break;
		case 'R': render_file = optarg; break;
		case 'N': nodes_file = optarg; break;
		case 'S': with_status = true; break;
		case 'L': leading = true; break;
		case 'D':
			if ((lease_s = parse_period(optarg)) < 3) {
				fprintf(stderr, PROG ": --lease-duration '%s': want 3s or more\n", optarg);
				return 1;
			}
			break;
		case 'r':
			if ((resync = parse_period(optarg)) < 0) {
				fprintf(stderr, PROG ": --resync '%s': want 30s, 5m, 1h (at most a day)\n",
					optarg);
				return 1;
			}
			break;
		case 'l':
			if (qbd_log_parse_level(optarg) < 0) {
				fprintf(stderr, PROG ": --log-level '%s': want error, warn, info or "
					"debug\n", optarg);
				return 1;
			}
			qbd_log_set_level(qbd_log_parse_level(optarg));
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 1;
	}
	if (render_file)
		return render(render_file, nodes_file, ns, with_status);
	if (!kc.api) {
		const char *h = getenv("KUBERNETES_SERVICE_HOST"), *p = getenv("KUBERNETES_SERVICE_PORT");

		if (!h || !*h) {
			fprintf(stderr, PROG ": not in a cluster ($KUBERNETES_SERVICE_HOST unset): "
				"give --api URL\n");
			return 1;
		}
		snprintf(api, sizeof api, strchr(h, ':') ? "https://[%s]:%s" : "https://%s:%s", h,
			 p && *p ? p : "443");
		kc.api = api;
	}
	if (pod && *pod)
		snprintf(ident, sizeof ident, "%s", pod);
	else {
		char host[256] = "";

		gethostname(host, sizeof host - 1);
		snprintf(ident, sizeof ident, "%s_%d", host, (int)getpid());
	}
	op_lease_init(&lease, ns, OP_MANAGED_BY, ident, lease_s);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = run(&kc, ns, &ac, resync);
	curl_global_cleanup();
	return rc;
}
