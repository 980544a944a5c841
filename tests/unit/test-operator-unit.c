/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-operator's reconcile step (operator/reconcile.c), case by case (named
 * apart from the integration test test-operator.sh): each
 * case builds a world (the QbdCluster, Nodes, the objects it owns, Pods,
 * Secrets), runs op_reconcile and asserts the plan. A tiny stand-in for
 * the API server applies a plan to the world (create, update, delete, the
 * status written back) so that a case can run several loops.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "operator/internal.h"

#define NOW "2026-01-01T00:00:00Z"

struct world {
	json_object *cluster;   /* NULL: deleted */
	json_object *nodes, *owned, *pods, *secrets;
	int rv;
};

static json_object *parse(const char *text)
{
	json_object *o = json_tokener_parse(text);

	ck_assert_msg(o != NULL, "bad JSON in the test: %s", text);
	return o;
}

static json_object *cluster_managed(void)
{
	return parse("{\"apiVersion\":\"qbd.io/v1alpha1\",\"kind\":\"QbdCluster\","
		     "\"metadata\":{\"name\":\"qbd\",\"namespace\":\"qbd-system\","
		     "\"uid\":\"u-1\",\"generation\":1},"
		     "\"spec\":{\"etcd\":{\"managed\":{\"storage\":{\"size\":\"8Gi\"}}},"
		     "\"storage\":{\"nodeSelector\":{\"qbd.io/storage\":\"true\"},"
		     "\"stores\":[{\"path\":\"/var/lib/qbd\",\"size\":\"200G\"}]},"
		     "\"volumeDefaults\":{\"replicas\":3},\"secretName\":\"qbd-secret\"}}");
}

static json_object *node(const char *name, const char *zone, bool storage, const char *ip)
{
	json_object *n = parse("{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"labels\":{}},"
			       "\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}],"
			       "\"addresses\":[]}}");

	json_object_object_add(jget(n, "metadata"), "name", js(name));
	if (zone)
		json_object_object_add(jget(n, "metadata.labels"), OP_LABEL_ZONE, js(zone));
	if (storage)
		json_object_object_add(jget(n, "metadata.labels"), "qbd.io/storage", js("true"));
	json_object_array_add(jget(n, "status.addresses"), jobj("type", js("InternalIP"),
		"address", js(ip), NULL));
	return n;
}

static json_object *find_node(struct world *w, const char *name)
{
	for (size_t i = 0; i < jlen(w->nodes); i++)
		if (strcmp(jstr(jat(w->nodes, i), "metadata.name"), name) == 0)
			return jat(w->nodes, i);
	return NULL;
}

static void del_node(struct world *w, const char *name)
{
	for (size_t i = 0; i < jlen(w->nodes); i++)
		if (strcmp(jstr(jat(w->nodes, i), "metadata.name"), name) == 0) {
			json_object_array_del_idx(w->nodes, i, 1);
			return;
		}
	ck_abort_msg("no node %s", name);
}

static void taint(struct world *w, const char *name, bool on)
{
	json_object *spec = jget(find_node(w, name), "spec");

	if (!spec) {
		spec = json_object_new_object();
		json_object_object_add(find_node(w, name), "spec", spec);
	}
	json_object_object_add(spec, "taints", on ? jarr(jobj("key", js(OP_TAINT_OUT_OF_SERVICE),
		"value", js("nodeshutdown"), "effect", js("NoExecute"), NULL), JEND) : jarr(JEND));
}

/* A world of three storage nodes in zones a, b and c, the secret there. */
static void world_init(struct world *w)
{
	memset(w, 0, sizeof *w);
	w->cluster = cluster_managed();
	w->nodes = jarr(node("a1", "zone-a", true, "10.0.0.1"), node("b1", "zone-b", true, "10.0.0.2"),
			node("c1", "zone-c", true, "10.0.0.3"), JEND);
	w->owned = json_object_new_array();
	w->pods = json_object_new_array();
	w->secrets = jarr(js("qbd-secret"), JEND);
}

static void world_free(struct world *w)
{
	json_object_put(w->cluster);
	json_object_put(w->nodes);
	json_object_put(w->owned);
	json_object_put(w->pods);
	json_object_put(w->secrets);
}

static bool same(json_object *a, json_object *b)
{
	return strcmp(jstr(a, "kind"), jstr(b, "kind")) == 0 &&
	       strcmp(jstr(a, "metadata.name"), jstr(b, "metadata.name")) == 0;
}

static void world_restart_pod(struct world *w, const char *name);

/* The API server's part: the plan's object actions and status applied;
 * created objects get what a server adds (resourceVersion, defaults). */
static void world_apply(struct world *w, const struct op_plan *p)
{
	for (size_t i = 0; i < p->nacts; i++) {
		const struct op_action *a = &p->acts[i];
		json_object *o = NULL;
		char rv[16];
		size_t j;

		if (strcmp(a->kind, "Pod") == 0) {
			ck_assert_int_eq(a->verb, OP_DELETE);
			world_restart_pod(w, a->name);
			continue;
		}
		for (j = 0; j < jlen(w->owned); j++)
			if (same(jat(w->owned, j), a->body))
				break;
		if (a->verb == OP_DELETE) {
			ck_assert_msg(j < jlen(w->owned), "delete of %s %s, which is not there",
				      a->kind, a->name);
			json_object_array_del_idx(w->owned, j, 1);
			continue;
		}
		ck_assert_msg(a->verb == OP_CREATE ? j == jlen(w->owned) : j < jlen(w->owned),
			      "%s of %s %s", a->verb == OP_CREATE ? "create" : "update", a->kind,
			      a->name);
		json_object_deep_copy(a->body, &o, NULL);
		snprintf(rv, sizeof rv, "%d", ++w->rv);
		json_object_object_add(jget(o, "metadata"), "resourceVersion", js(rv));
		/* server defaults: the operator must not see them as a change */
		json_object_object_add(o, "status", jobj("observedGeneration", ji(1), NULL));
		if (jget(o, "spec"))
			json_object_object_add(jget(o, "spec"), "revisionHistoryLimit", ji(10));
		if (a->verb == OP_CREATE)
			json_object_array_add(w->owned, o);
		else
			json_object_array_put_idx(w->owned, j, o);
	}
	if (p->status && w->cluster) {
		json_object *st = NULL;

		json_object_deep_copy(p->status, &st, NULL);
		json_object_object_add(w->cluster, "status", st);
	}
}

/* Pod number k of workload o, ready, as its controller makes it. */
static json_object *make_pod(json_object *o, int k)
{
	json_object *ann = jget(o, "spec.template.metadata.annotations");

	return jobj("apiVersion", js("v1"), "kind", js("Pod"),
		"metadata", jobj("name", jsf("%s-%d", jstr(o, "metadata.name"), k),
				 "labels", json_object_get(jget(o, "spec.template.metadata.labels")),
				 "annotations", ann ? json_object_get(ann) : NULL,
				 "ownerReferences", jarr(jobj("kind", js(jstr(o, "kind")),
					"name", js(jstr(o, "metadata.name")), NULL), JEND), NULL),
		"spec", jobj("containers", json_object_get(jget(o, "spec.template.spec.containers")),
			     NULL),
		"status", jobj("conditions", jarr(jobj("type", js("Ready"), "status", js("True"),
			NULL), JEND), NULL), NULL);
}

/* A pod deleted: its DaemonSet makes it again, from its template now. */
static void world_restart_pod(struct world *w, const char *name)
{
	for (size_t i = 0; i < jlen(w->pods); i++) {
		json_object *pod = jat(w->pods, i);
		const char *owner = jstr(jat(jget(pod, "metadata.ownerReferences"), 0), "name");

		if (strcmp(jstr(pod, "metadata.name"), name) != 0)
			continue;
		for (size_t j = 0; j < jlen(w->owned); j++) {
			json_object *o = jat(w->owned, j);

			if (strcmp(jstr(o, "metadata.name"), owner) == 0) {
				int k = atoi(strrchr(name, '-') + 1);

				json_object_array_put_idx(w->pods, i, make_pod(o, k));
				return;
			}
		}
	}
	ck_abort_msg("no pod %s", name);
}

/* Every pod the workloads would run, ready. */
static void world_all_ready(struct world *w)
{
	json_object_put(w->pods);
	w->pods = json_object_new_array();
	for (size_t i = 0; i < jlen(w->owned); i++) {
		json_object *o = jat(w->owned, i);
		const char *app = jstr(o, "spec.template.metadata.labels.app");
		json_object *labels = jget(o, "spec.template.metadata.labels");
		int n = 1;

		(void)app;
		if (!labels)
			continue;
		if (strcmp(jstr(o, "kind"), "DaemonSet") == 0) {
			const char *zone = json_object_get_string(jget_key(labels, OP_LABEL_ZONE));

			n = 0;
			for (size_t j = 0; j < jlen(w->nodes); j++) {
				json_object *nl = jget(jat(w->nodes, j), "metadata.labels");
				const char *z = json_object_get_string(jget_key(nl, OP_LABEL_ZONE));
				bool chunkd = strstr(jstr(o, "metadata.name"), "chunkd") != NULL;

				if (z && strcmp(z, zone) == 0 && (!chunkd || jget_key(nl, "qbd.io/storage")))
					n++;
			}
		}
		for (int k = 0; k < n; k++)
			json_object_array_add(w->pods, make_pod(o, k));
	}
}

static void reconcile(struct world *w, struct op_plan *p)
{
	struct op_observed obs = { w->nodes, w->owned, w->pods, w->secrets };

	ck_assert_int_eq(op_reconcile(w->cluster, &obs, NOW, p), 0);
}

/* reconcile, then apply: a loop. */
static void loop(struct world *w, struct op_plan *p)
{
	reconcile(w, p);
	world_apply(w, p);
}

static size_t count(const struct op_plan *p, enum op_verb verb, const char *kind)
{
	size_t n = 0;

	for (size_t i = 0; i < p->nacts; i++)
		if (p->acts[i].verb == verb && (!kind || strcmp(p->acts[i].kind, kind) == 0))
			n++;
	return n;
}

static bool has_act(const struct op_plan *p, enum op_verb verb, const char *kind, const char *name)
{
	for (size_t i = 0; i < p->nacts; i++)
		if (p->acts[i].verb == verb && strcmp(p->acts[i].kind, kind) == 0 &&
		    strcmp(p->acts[i].name, name) == 0)
			return true;
	return false;
}

static json_object *cond(json_object *status, const char *type)
{
	json_object *cs = jget(status, "conditions");

	for (size_t i = 0; i < jlen(cs); i++)
		if (strcmp(jstr(jat(cs, i), "type"), type) == 0)
			return jat(cs, i);
	return NULL;
}

static json_object *zone_status(json_object *status, const char *zone)
{
	json_object *zs = jget(status, "zones");

	for (size_t i = 0; i < jlen(zs); i++)
		if (strcmp(jstr(jat(zs, i), "name"), zone) == 0)
			return jat(zs, i);
	return NULL;
}

/* Install and settle: objects created, pods ready, status written. */
static void settle(struct world *w)
{
	struct op_plan p;

	loop(w, &p);
	op_plan_free(&p);
	world_all_ready(w);
	loop(w, &p);
	op_plan_free(&p);
}

START_TEST(first_install)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	reconcile(&w, &p);
	/* qbd-config; etcd: Service + 3 StatefulSets; chunk servers and CSI
	 * node plugins, one DaemonSet per zone each; managerd and the CSI
	 * controller; CSIDriver; StorageClass */
	ck_assert_uint_eq(p.nacts, 15);
	ck_assert_uint_eq(count(&p, OP_CREATE, NULL), 15);
	ck_assert_uint_eq(count(&p, OP_CREATE, "StatefulSet"), 3);
	ck_assert_uint_eq(count(&p, OP_CREATE, "DaemonSet"), 6);
	ck_assert_uint_eq(count(&p, OP_CREATE, "Deployment"), 2);
	ck_assert(has_act(&p, OP_CREATE, "ConfigMap", "qbd-config"));
	ck_assert(has_act(&p, OP_CREATE, "Service", "qbd-etcd"));
	ck_assert(has_act(&p, OP_CREATE, "DaemonSet", "qbd-chunkd-zone-a"));
	ck_assert(has_act(&p, OP_CREATE, "DaemonSet", "qbd-csi-node-zone-c"));
	ck_assert(has_act(&p, OP_CREATE, "CSIDriver", "qbd.csi.io"));
	ck_assert(has_act(&p, OP_CREATE, "StorageClass", "qbd"));
	ck_assert_uint_eq(p.nqbd, 0);
	/* namespaced objects are owned by the QbdCluster; cluster-scoped ones
	 * cannot be, and carry the namespace label instead */
	for (size_t i = 0; i < p.nacts; i++) {
		json_object *own = jget(p.acts[i].body, "metadata.ownerReferences");
		bool namespaced = p.acts[i].ns != NULL;

		ck_assert_int_eq(jlen(own), namespaced ? 1 : 0);
		if (namespaced)
			ck_assert_str_eq(jstr(jat(own, 0), "uid"), "u-1");
		ck_assert_ptr_nonnull(jget_key(jget(p.acts[i].body, "metadata.annotations"),
					       OP_ANN_HASH));
	}
	/* the zone is a literal in the chunk server's command line */
	for (size_t i = 0; i < p.nacts; i++) {
		if (strcmp(p.acts[i].name, "qbd-chunkd-zone-b") != 0)
			continue;
		json_object *args = jget(jat(jget(p.acts[i].body, "spec.template.spec.containers"), 0),
					 "args");

		ck_assert(jarr_has_str(args, "--zone=zone-b"));
		ck_assert(jarr_has_str(args, "--size=200G"));
		ck_assert(jarr_has_str(args, "--data=/var/lib/qbd/qbd-store.img"));
	}
	ck_assert_ptr_nonnull(p.status);
	ck_assert(p.status_changed);
	ck_assert_str_eq(jstr(cond(p.status, "Ready"), "status"), "False");
	ck_assert_str_eq(jstr(cond(p.status, "Ready"), "lastTransitionTime"), NOW);
	ck_assert_int_eq(jlen(jget(p.status, "storageNodes")), 3);
	ck_assert_int_eq(jlen(jget(p.status, "etcdZones")), 3);
	ck_assert_str_eq(p.etcd, "http://qbd-etcd-zone-a-0.qbd-etcd.qbd-system.svc:2379,"
			 "http://qbd-etcd-zone-b-0.qbd-etcd.qbd-system.svc:2379,"
			 "http://qbd-etcd-zone-c-0.qbd-etcd.qbd-system.svc:2379");
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(steady_state)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	settle(&w);
	ck_assert_str_eq(jstr(cond(jget(w.cluster, "status"), "Ready"), "status"), "True");
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nacts, 0);
	ck_assert_uint_eq(p.nqbd, 0);
	ck_assert_uint_eq(p.nevents, 0);
	ck_assert(!p.status_changed);
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(node_added_new_zone)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	settle(&w);
	json_object_array_add(w.nodes, node("d1", "zone-d", true, "10.0.0.4"));
	reconcile(&w, &p);
	/* a chunk server DaemonSet and a node plugin DaemonSet for zone-d */
	ck_assert_uint_eq(p.nacts, 2);
	ck_assert(has_act(&p, OP_CREATE, "DaemonSet", "qbd-chunkd-zone-d"));
	ck_assert(has_act(&p, OP_CREATE, "DaemonSet", "qbd-csi-node-zone-d"));
	ck_assert_uint_eq(p.nqbd, 0);
	ck_assert_int_eq(jint(zone_status(p.status, "zone-d"), "storageNodes", -1), 1);
	ck_assert_int_eq(jint(zone_status(p.status, "zone-d"), "readyChunkServers", -1), 0);
	/* managed etcd keeps the zones of the first reconcile */
	ck_assert_int_eq(jlen(jget(p.status, "etcdZones")), 3);
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(node_added_existing_zone)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	settle(&w);
	json_object_array_add(w.nodes, node("a2", "zone-a", true, "10.0.0.5"));
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nacts, 0);      /* zone-a's DaemonSet selects it already */
	ck_assert_uint_eq(p.nqbd, 0);
	ck_assert(p.status_changed);
	ck_assert_int_eq(jint(zone_status(p.status, "zone-a"), "storageNodes", -1), 2);
	ck_assert_int_eq(jint(zone_status(p.status, "zone-a"), "chunkServers", -1), 2);
	ck_assert_int_eq(jint(zone_status(p.status, "zone-a"), "readyChunkServers", -1), 1);
	ck_assert_int_eq(jlen(jget(p.status, "storageNodes")), 4);
	ck_assert_str_eq(jstr(cond(p.status, "ChunkServersReady"), "status"), "False");
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(zone_label_changed)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	settle(&w);
	/* c1, zone-c's only node, is relabelled zone-d */
	json_object_object_add(jget(find_node(&w, "c1"), "metadata.labels"), OP_LABEL_ZONE,
			       js("zone-d"));
	reconcile(&w, &p);
	ck_assert(has_act(&p, OP_CREATE, "DaemonSet", "qbd-chunkd-zone-d"));
	ck_assert(has_act(&p, OP_CREATE, "DaemonSet", "qbd-csi-node-zone-d"));
	ck_assert(has_act(&p, OP_DELETE, "DaemonSet", "qbd-chunkd-zone-c"));
	ck_assert(has_act(&p, OP_DELETE, "DaemonSet", "qbd-csi-node-zone-c"));
	ck_assert_uint_eq(p.nacts, 4);
	ck_assert_uint_eq(p.nqbd, 0);       /* the node is not gone */
	ck_assert_uint_eq(p.nevents, 1);
	ck_assert_str_eq(p.events[0].type, "Warning");
	ck_assert_str_eq(p.events[0].reason, "ZoneChanged");
	ck_assert_ptr_nonnull(strstr(p.events[0].message, "node c1 moved from zone zone-c to zone zone-d"));
	ck_assert_ptr_null(zone_status(p.status, "zone-c"));
	ck_assert_int_eq(jint(zone_status(p.status, "zone-d"), "storageNodes", -1), 1);
	world_apply(&w, &p);
	op_plan_free(&p);
	/* said once */
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nevents, 0);
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

static size_t count_qbd(const struct op_plan *p, enum op_qbd_kind kind, const char *arg)
{
	size_t n = 0;

	for (size_t i = 0; i < p->nqbd; i++)
		if (p->qbd[i].kind == kind && strcmp(p->qbd[i].arg, arg) == 0)
			n++;
	return n;
}

START_TEST(node_out_of_service)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	json_object_array_add(w.nodes, node("w1", "zone-a", false, "10.0.1.1"));
	settle(&w);
	taint(&w, "w1", true);
	loop(&w, &p);
	ck_assert_uint_eq(p.nqbd, 1);
	ck_assert_uint_eq(count_qbd(&p, OP_FENCE_NODE, "w1"), 1);
	ck_assert_uint_eq(p.nacts, 0);
	ck_assert(jarr_has_str(jget(p.status, "fencedNodes"), "w1"));
	op_plan_free(&p);
	/* not again while the taint stays */
	loop(&w, &p);
	ck_assert_uint_eq(p.nqbd, 0);
	ck_assert(!p.status_changed);
	op_plan_free(&p);
	/* taint gone: forgotten; a new taint fences again */
	taint(&w, "w1", false);
	loop(&w, &p);
	ck_assert_uint_eq(p.nqbd, 0);
	ck_assert_int_eq(jlen(jget(p.status, "fencedNodes")), 0);
	op_plan_free(&p);
	taint(&w, "w1", true);
	loop(&w, &p);
	ck_assert_uint_eq(count_qbd(&p, OP_FENCE_NODE, "w1"), 1);
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(fence_failed_is_retried)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	settle(&w);
	taint(&w, "b1", true);
	reconcile(&w, &p);
	ck_assert_uint_eq(count_qbd(&p, OP_FENCE_NODE, "b1"), 1);
	op_plan_qbd_failed(&p, 0);
	ck_assert(!jarr_has_str(jget(p.status, "fencedNodes"), "b1"));
	world_apply(&w, &p);
	op_plan_free(&p);
	reconcile(&w, &p);
	ck_assert_uint_eq(count_qbd(&p, OP_FENCE_NODE, "b1"), 1);
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(storage_node_deleted)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	json_object_array_add(w.nodes, node("b2", "zone-b", true, "10.0.0.6"));
	settle(&w);
	del_node(&w, "b1");
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nqbd, 1);
	ck_assert_uint_eq(count_qbd(&p, OP_REMOVE_NODE, "10.0.0.2:7800"), 1);
	ck_assert_str_eq(p.qbd[0].node, "b1");
	ck_assert_uint_eq(p.nacts, 0);      /* zone-b still has b2 */
	ck_assert_int_eq(jlen(jget(p.status, "storageNodes")), 3);
	/* the removal failed: remembered, and tried again */
	op_plan_qbd_failed(&p, 0);
	ck_assert_int_eq(jlen(jget(p.status, "storageNodes")), 4);
	world_apply(&w, &p);
	op_plan_free(&p);
	loop(&w, &p);
	ck_assert_uint_eq(count_qbd(&p, OP_REMOVE_NODE, "10.0.0.2:7800"), 1);
	op_plan_free(&p);
	/* done: not again */
	loop(&w, &p);
	ck_assert_uint_eq(p.nqbd, 0);
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(most_storage_nodes_gone_at_once)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	settle(&w);
	/* two of three at once: held, not removed, remembered */
	del_node(&w, "a1");
	del_node(&w, "b1");
	loop(&w, &p);
	ck_assert_uint_eq(p.nqbd, 0);
	ck_assert_int_eq(jlen(jget(p.status, "storageNodes")), 3);
	ck_assert_str_eq(jstr(cond(p.status, "Degraded"), "status"), "True");
	ck_assert_str_eq(jstr(cond(p.status, "Degraded"), "reason"), "NodesGone");
	ck_assert_ptr_nonnull(strstr(jstr(cond(p.status, "Degraded"), "message"), " a1 b1"));
	op_plan_free(&p);
	/* one comes back: the other is one of three, removed */
	json_object_array_add(w.nodes, node("a1", "zone-a", true, "10.0.0.1"));
	loop(&w, &p);
	ck_assert_uint_eq(p.nqbd, 1);
	ck_assert_uint_eq(count_qbd(&p, OP_REMOVE_NODE, "10.0.0.2:7800"), 1);
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(storage_node_with_two_stores_deleted)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	json_object_array_add(w.nodes, node("big", "zone-c", false, "10.0.0.9"));
	json_object_object_add(jget(w.cluster, "spec.storage"), "nodes", parse(
		"[{\"name\":\"big\",\"stores\":[{\"path\":\"/dev/nvme1n1\"},{\"path\":\"/dev/nvme2n1\"}]}]"));
	reconcile(&w, &p);
	ck_assert(has_act(&p, OP_CREATE, "DaemonSet", "qbd-chunkd-zone-c-big"));
	op_plan_free(&p);
	settle(&w);
	del_node(&w, "big");
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nqbd, 2);
	ck_assert_uint_eq(count_qbd(&p, OP_REMOVE_NODE, "10.0.0.9:7800"), 1);
	ck_assert_uint_eq(count_qbd(&p, OP_REMOVE_NODE, "10.0.0.9:7801"), 1);
	ck_assert(has_act(&p, OP_DELETE, "DaemonSet", "qbd-chunkd-zone-c-big"));
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(resource_deleted)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	settle(&w);
	/* going: deletionTimestamp set */
	json_object_object_add(jget(w.cluster, "metadata"), "deletionTimestamp", js(NOW));
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nacts, 15);
	ck_assert_uint_eq(count(&p, OP_DELETE, NULL), 15);
	ck_assert(has_act(&p, OP_DELETE, "StorageClass", "qbd"));
	ck_assert(has_act(&p, OP_DELETE, "CSIDriver", "qbd.csi.io"));
	ck_assert_uint_eq(p.nqbd, 0);
	ck_assert_ptr_null(p.status);
	op_plan_free(&p);
	/* gone */
	json_object_put(w.cluster);
	w.cluster = NULL;
	reconcile(&w, &p);
	ck_assert_uint_eq(count(&p, OP_DELETE, NULL), 15);
	world_apply(&w, &p);
	op_plan_free(&p);
	ck_assert_int_eq(jlen(w.owned), 0);
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nacts, 0);
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(missing_secret)
{
	struct world w;
	struct op_plan p;
	json_object *ready;

	world_init(&w);
	json_object_array_del_idx(w.secrets, 0, 1);
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nacts, 0);
	ck_assert_uint_eq(p.nqbd, 0);
	ready = cond(p.status, "Ready");
	ck_assert_str_eq(jstr(ready, "status"), "False");
	ck_assert_str_eq(jstr(ready, "reason"), "SecretNotFound");
	ck_assert_ptr_nonnull(strstr(jstr(ready, "message"), "Secret qbd-system/qbd-secret does not exist"));
	op_plan_free(&p);
	/* both kinds of etcd */
	json_object_array_add(w.secrets, js("qbd-secret"));
	json_object_object_add(jget(w.cluster, "spec.etcd"), "endpoints",
			       jarr(js("http://e:2379"), JEND));
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nacts, 0);
	ck_assert_str_eq(jstr(cond(p.status, "Ready"), "reason"), "InvalidSpec");
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(spec_changed)
{
	struct world w;
	struct op_plan p;

	world_init(&w);
	settle(&w);
	json_object_object_add(jget(w.cluster, "spec"), "images",
			       jobj("qbd", js("registry.example/qbd:0.2.0"), NULL));
	reconcile(&w, &p);
	/* every workload running the qbd image: 3 chunkd + 3 node plugins,
	 * managerd, the CSI controller */
	ck_assert_uint_eq(count(&p, OP_UPDATE, "DaemonSet"), 6);
	ck_assert_uint_eq(count(&p, OP_UPDATE, "Deployment"), 2);
	ck_assert_uint_eq(p.nacts, 8);
	for (size_t i = 0; i < p.nacts; i++) {
		ck_assert_ptr_nonnull(jstr(p.acts[i].body, "metadata.resourceVersion"));
		ck_assert_str_eq(jstr(jat(jget(p.acts[i].body, "spec.template.spec.containers"), 0),
				      "image"), "registry.example/qbd:0.2.0");
	}
	world_apply(&w, &p);
	op_plan_free(&p);
	/* (the chunk servers' restarts: chunk_servers_restarted_one_at_a_time) */
	world_all_ready(&w);
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nacts, 0);
	op_plan_free(&p);
	/* a StorageClass's parameters cannot change in place: replaced */
	json_object_object_add(jget(w.cluster, "spec.volumeDefaults"), "replicas", ji(2));
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nacts, 2);
	ck_assert_int_eq(p.acts[0].verb, OP_DELETE);
	ck_assert_int_eq(p.acts[1].verb, OP_CREATE);
	ck_assert_str_eq(p.acts[1].kind, "StorageClass");
	ck_assert_str_eq(jstr(p.acts[1].body, "parameters.writeQuorum"), "2");
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

static json_object *pod_named(struct world *w, const char *name)
{
	for (size_t i = 0; i < jlen(w->pods); i++)
		if (strcmp(jstr(jat(w->pods, i), "metadata.name"), name) == 0)
			return jat(w->pods, i);
	return NULL;
}

START_TEST(chunk_servers_restarted_one_at_a_time)
{
	struct world w;
	struct op_plan p;
	json_object *ready;

	world_init(&w);
	settle(&w);
	json_object_object_add(jget(w.cluster, "spec"), "images",
			       jobj("qbd", js("registry.example/qbd:0.2.0"), NULL));
	/* the DaemonSets are updated first; no pod is touched meanwhile */
	loop(&w, &p);
	ck_assert_uint_eq(count(&p, OP_UPDATE, "DaemonSet"), 6);
	ck_assert_uint_eq(count(&p, OP_DELETE, "Pod"), 0);
	op_plan_free(&p);
	/* a chunk server not ready: none restarted */
	ready = jat(jget(pod_named(&w, "qbd-chunkd-zone-c-0"), "status.conditions"), 0);
	json_object_object_add(ready, "status", js("False"));
	reconcile(&w, &p);
	ck_assert_uint_eq(p.nacts, 0);
	op_plan_free(&p);
	json_object_object_add(ready, "status", js("True"));
	/* then one per loop, each only if qbd says healthy, in name order */
	for (const char *const *name = (const char *const[]){ "qbd-chunkd-zone-a-0",
			"qbd-chunkd-zone-b-0", "qbd-chunkd-zone-c-0", NULL }; *name; name++) {
		loop(&w, &p);
		ck_assert_uint_eq(p.nacts, 1);
		ck_assert_int_eq(p.acts[0].verb, OP_DELETE);
		ck_assert_str_eq(p.acts[0].kind, "Pod");
		ck_assert_str_eq(p.acts[0].name, *name);
		ck_assert(p.acts[0].when_healthy);
		op_plan_free(&p);
	}
	loop(&w, &p);
	ck_assert_uint_eq(p.nacts, 0);
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

START_TEST(external_etcd_tls)
{
	struct world w;
	struct op_plan p;
	const char *conf = NULL;

	world_init(&w);
	json_object_object_del(jget(w.cluster, "spec.etcd"), "managed");
	json_object_object_add(jget(w.cluster, "spec.etcd"), "endpoints",
			       jarr(js("https://e1:2379"), js("https://e2:2379"), JEND));
	json_object_object_add(jget(w.cluster, "spec.etcd"), "tlsSecretName", js("etcd-tls"));
	reconcile(&w, &p);
	ck_assert_str_eq(jstr(cond(p.status, "Ready"), "reason"), "SecretNotFound");
	op_plan_free(&p);
	json_object_array_add(w.secrets, js("etcd-tls"));
	reconcile(&w, &p);
	ck_assert_uint_eq(count(&p, OP_CREATE, "StatefulSet"), 0);
	ck_assert_uint_eq(count(&p, OP_CREATE, NULL), 11);
	for (size_t i = 0; i < p.nacts; i++)
		if (strcmp(p.acts[i].kind, "ConfigMap") == 0)
			conf = json_object_get_string(jget_key(jget(p.acts[i].body, "data"), "qbd.conf"));
	ck_assert_ptr_nonnull(conf);
	ck_assert_ptr_nonnull(strstr(conf, "etcd = https://e1:2379,https://e2:2379\n"));
	ck_assert_ptr_nonnull(strstr(conf, "etcd-cacert = /etc/qbd-etcd-tls/ca.crt\n"));
	ck_assert_str_eq(p.etcd, "https://e1:2379,https://e2:2379");
	ck_assert_str_eq(jstr(cond(p.status, "EtcdAvailable"), "reason"), "External");
	op_plan_free(&p);
	world_free(&w);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("operator");
	TCase *tc = tcase_create("reconcile");

	tcase_add_test(tc, first_install);
	tcase_add_test(tc, steady_state);
	tcase_add_test(tc, node_added_new_zone);
	tcase_add_test(tc, node_added_existing_zone);
	tcase_add_test(tc, zone_label_changed);
	tcase_add_test(tc, node_out_of_service);
	tcase_add_test(tc, fence_failed_is_retried);
	tcase_add_test(tc, storage_node_deleted);
	tcase_add_test(tc, most_storage_nodes_gone_at_once);
	tcase_add_test(tc, storage_node_with_two_stores_deleted);
	tcase_add_test(tc, resource_deleted);
	tcase_add_test(tc, missing_secret);
	tcase_add_test(tc, spec_changed);
	tcase_add_test(tc, chunk_servers_restarted_one_at_a_time);
	tcase_add_test(tc, external_etcd_tls);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
