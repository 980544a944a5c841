/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reconcile step, a pure function: from the QbdCluster and the objects
 * observed (Nodes, the objects it owns, its Pods, which Secrets exist) and
 * the time, the plan: the objects to create, update or delete, the qbd
 * commands to run, the events to post, and the status to write. No I/O, no
 * clock. What it must remember between loops it keeps in the status:
 *  - status.storageNodes (name, zone, addresses): a node listed there but
 *    absent from the Nodes observed was deleted: `qbd node remove` of
 *    each of its chunk servers' addresses;
 *  - status.fencedNodes: the nodes whose writers were fenced for their
 *    node.kubernetes.io/out-of-service taint, so that it is done once per
 *    taint (a node leaves the list when the taint goes);
 *  - status.etcdZones: managed etcd's zones, fixed at the first reconcile.
 * A qbd command that fails is taken back out of the status
 * (op_plan_qbd_failed), so the next loop runs it again.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- plan building ---- */

static void plan_act(struct op_plan *p, enum op_verb verb, json_object *body)
{
	struct op_action *a;

	p->acts = qbd_xrealloc(p->acts, (p->nacts + 1) * sizeof *p->acts);
	a = &p->acts[p->nacts++];
	memset(a, 0, sizeof *a);
	a->verb = verb;
	a->body = body;
	a->api_version = jstr(body, "apiVersion");
	a->kind = jstr(body, "kind");
	a->ns = jstr(body, "metadata.namespace");
	a->name = jstr(body, "metadata.name");
}

static void plan_qbd(struct op_plan *p, enum op_qbd_kind kind, const char *arg, const char *node)
{
	struct op_qbd *q;

	p->qbd = qbd_xrealloc(p->qbd, (p->nqbd + 1) * sizeof *p->qbd);
	q = &p->qbd[p->nqbd++];
	q->kind = kind;
	q->arg = qbd_xstrdup(arg);
	q->node = qbd_xstrdup(node);
}

static void plan_event(struct op_plan *p, const char *type, const char *reason,
		       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void plan_event(struct op_plan *p, const char *type, const char *reason,
		       const char *fmt, ...)
{
	struct op_event *e;
	va_list ap;

	p->events = qbd_xrealloc(p->events, (p->nevents + 1) * sizeof *p->events);
	e = &p->events[p->nevents++];
	snprintf(e->type, sizeof e->type, "%s", type);
	snprintf(e->reason, sizeof e->reason, "%s", reason);
	va_start(ap, fmt);
	if (vasprintf(&e->message, fmt, ap) < 0)
		abort();
	va_end(ap);
}

void op_plan_free(struct op_plan *p)
{
	for (size_t i = 0; i < p->nacts; i++)
		json_object_put(p->acts[i].body);
	for (size_t i = 0; i < p->nqbd; i++) {
		free(p->qbd[i].arg);
		free(p->qbd[i].node);
	}
	for (size_t i = 0; i < p->nevents; i++)
		free(p->events[i].message);
	free(p->acts);
	free(p->qbd);
	free(p->events);
	json_object_put(p->status);
	json_object_put(p->old_status);
	free(p->etcd);
	memset(p, 0, sizeof *p);
}

/* ---- reading the observed objects ---- */

static bool has_label(json_object *o, const char *key, const char *value)
{
	const char *v = json_object_get_string(jget_key(jget(o, "metadata.labels"), key));

	return v && (!value || strcmp(v, value) == 0);
}

static const char *label(json_object *o, const char *key)
{
	json_object *v = jget_key(jget(o, "metadata.labels"), key);

	return v ? json_object_get_string(v) : NULL;
}

static bool being_deleted(json_object *o)
{
	return jget(o, "metadata.deletionTimestamp") != NULL;
}

static bool condition_true(json_object *o, const char *type)
{
	json_object *conds = jget(o, "status.conditions");

	for (size_t i = 0; i < jlen(conds); i++) {
		json_object *c = jat(conds, i);
		const char *t = jstr(c, "type"), *s = jstr(c, "status");

		if (t && s && strcmp(t, type) == 0)
			return strcmp(s, "True") == 0;
	}
	return false;
}

static bool tainted_out_of_service(json_object *node)
{
	json_object *taints = jget(node, "spec.taints");

	for (size_t i = 0; i < jlen(taints); i++) {
		const char *k = jstr(jat(taints, i), "key");

		if (k && strcmp(k, OP_TAINT_OUT_OF_SERVICE) == 0)
			return true;
	}
	return false;
}

static const char *internal_ip(json_object *node)
{
	json_object *addrs = jget(node, "status.addresses");

	for (size_t i = 0; i < jlen(addrs); i++) {
		const char *t = jstr(jat(addrs, i), "type");

		if (t && strcmp(t, "InternalIP") == 0)
			return jstr(jat(addrs, i), "address");
	}
	return NULL;
}

static json_object *find_node(json_object *nodes, const char *name)
{
	for (size_t i = 0; i < jlen(nodes); i++) {
		const char *n = jstr(jat(nodes, i), "metadata.name");

		if (n && strcmp(n, name) == 0)
			return jat(nodes, i);
	}
	return NULL;
}

static json_object *find_by_name(json_object *arr, const char *key, const char *name)
{
	for (size_t i = 0; i < jlen(arr); i++) {
		const char *n = jstr(jat(arr, i), key);

		if (n && strcmp(n, name) == 0)
			return jat(arr, i);
	}
	return NULL;
}

static bool same_object(json_object *a, json_object *b)
{
	const char *ka = jstr(a, "kind"), *kb = jstr(b, "kind");
	const char *na = jstr(a, "metadata.name"), *nb = jstr(b, "metadata.name");
	const char *sa = jstr(a, "metadata.namespace"), *sb = jstr(b, "metadata.namespace");

	return ka && kb && na && nb && strcmp(ka, kb) == 0 && strcmp(na, nb) == 0 &&
	       strcmp(sa ? sa : "", sb ? sb : "") == 0;
}

/* Pods of app (in zone, if given) that are ready, and their containers. */
static void count_ready(json_object *pods, const char *app, const char *zone, int *pods_ready,
			int *containers_ready)
{
	*pods_ready = 0;
	if (containers_ready)
		*containers_ready = 0;
	for (size_t i = 0; i < jlen(pods); i++) {
		json_object *p = jat(pods, i);

		if (!has_label(p, "app.kubernetes.io/name", app) || being_deleted(p))
			continue;
		if (zone && !has_label(p, OP_LABEL_ZONE, zone))
			continue;
		if (!condition_true(p, "Ready"))
			continue;
		(*pods_ready)++;
		if (containers_ready)
			*containers_ready += (int)jlen(jget(p, "spec.containers"));
	}
}

/* ---- the storage nodes ---- */

static bool matches_selector(json_object *node, json_object *sel)
{
	if (!sel || !json_object_is_type(sel, json_type_object))
		return false;
	json_object_object_foreach(sel, k, v) {
		if (!has_label(node, k, json_object_get_string(v)))
			return false;
	}
	return true;
}

static int cmp_sn(const void *a, const void *b)
{
	const struct op_storage_node *x = a, *y = b;
	int c = strcmp(x->zone, y->zone);

	return c ? c : strcmp(x->name, y->name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted, without duplicates, in place; the new count. */
static size_t uniq(const char **v, size_t n)
{
	size_t m = 0;

	qsort(v, n, sizeof *v, cmp_str);
	for (size_t i = 0; i < n; i++)
		if (!m || strcmp(v[m - 1], v[i]) != 0)
			v[m++] = v[i];
	return m;
}

/* Fills r->sn and r->zones from the Nodes; skipped (storage nodes without
 * a zone label or without stores) named in *why. */
static void storage_nodes(json_object *cluster, json_object *nodes, struct op_render *r,
			  char *why, size_t whylen)
{
	json_object *sel = jget(cluster, "spec.storage.nodeSelector");
	json_object *named = jget(cluster, "spec.storage.nodes");
	json_object *dflt = jget(cluster, "spec.storage.stores");
	size_t n = jlen(nodes), wl = 0;

	r->sn = qbd_xcalloc(n + 1, sizeof *r->sn);
	r->zones = qbd_xcalloc(n + 1, sizeof *r->zones);
	why[0] = 0;
	for (size_t i = 0; i < n; i++) {
		json_object *node = jat(nodes, i), *nm;
		const char *name = jstr(node, "metadata.name"), *zone = label(node, OP_LABEL_ZONE);
		struct op_storage_node *s;
		bool match;

		if (!name)
			continue;
		if (zone && *zone)
			r->zones[r->nzones++] = zone;
		nm = find_by_name(named, "name", name);
		match = matches_selector(node, sel);
		if (!match && !nm)
			continue;
		if (!zone || !*zone || (!jlen(jget(nm, "stores")) && !jlen(dflt))) {
			if (wl < whylen)
				wl += (size_t)snprintf(why + wl, whylen - wl, "%snode %s has %s",
					wl ? "; " : "", name, !zone || !*zone ?
					"no " OP_LABEL_ZONE " label" : "no stores (spec.storage)");
			continue;
		}
		s = &r->sn[r->nsn++];
		s->name = name;
		s->zone = zone;
		s->own_ds = jlen(jget(nm, "stores")) || !match;
		s->stores = jlen(jget(nm, "stores")) ? jget(nm, "stores") : dflt;
		s->ip = internal_ip(node);
		s->ready = condition_true(node, "Ready");
	}
	qsort(r->sn, r->nsn, sizeof *r->sn, cmp_sn);
	r->nzones = uniq(r->zones, r->nzones);
}

/* ---- status ---- */

struct cond {
	const char *type;
	bool ok;
	char reason[64];
	char message[1024];
};

static json_object *condition(json_object *old_status, const struct cond *c, const char *now,
			      long long gen)
{
	json_object *prev = find_by_name(jget(old_status, "conditions"), "type", c->type);
	const char *st = c->ok ? "True" : "False";
	const char *since = now;

	if (prev && jstr(prev, "status") && strcmp(jstr(prev, "status"), st) == 0 &&
	    jstr(prev, "lastTransitionTime"))
		since = jstr(prev, "lastTransitionTime");
	return jobj("type", js(c->type), "status", js(st), "reason", js(c->reason),
		    "message", js(c->message), "lastTransitionTime", js(since),
		    "observedGeneration", gen >= 0 ? ji(gen) : NULL, NULL);
}

static void set_cond(struct cond *c, const char *type, bool ok, const char *reason,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void set_cond(struct cond *c, const char *type, bool ok, const char *reason,
		     const char *fmt, ...)
{
	va_list ap;

	c->type = type;
	c->ok = ok;
	snprintf(c->reason, sizeof c->reason, "%s", reason);
	va_start(ap, fmt);
	vsnprintf(c->message, sizeof c->message, fmt, ap);
	va_end(ap);
}

/* The status when the spec cannot be acted on: the memory kept as it was,
 * Ready False with reason and message. */
static json_object *bad_spec_status(json_object *cluster, json_object *old, const char *now,
				    const char *reason, const char *msg)
{
	long long gen = jint(cluster, "metadata.generation", -1);
	struct cond c;
	json_object *st = jobj("observedGeneration", gen >= 0 ? ji(gen) : NULL, NULL);

	set_cond(&c, "Ready", false, reason, "%s", msg);
	json_object_object_add(st, "conditions", jarr(condition(old, &c, now, gen), JEND));
	for (const char *const *k = (const char *const[]){ "storageNodes", "fencedNodes",
							   "etcdZones", NULL }; *k; k++)
		if (jget_key(old, *k))
			json_object_object_add(st, *k, json_object_get(jget_key(old, *k)));
	return st;
}

/* ---- the step ---- */

size_t op_secret_names(json_object *cluster, const char *names[2])
{
	size_t n = 0;

	if (jstr(cluster, "spec.secretName"))
		names[n++] = jstr(cluster, "spec.secretName");
	if (jstr(cluster, "spec.etcd.tlsSecretName"))
		names[n++] = jstr(cluster, "spec.etcd.tlsSecretName");
	return n;
}

static void delete_owned(struct op_plan *p, json_object *owned, const char *cluster_name,
			 json_object *keep)
{
	for (size_t i = 0; i < jlen(owned); i++) {
		json_object *o = jat(owned, i);
		bool wanted = false;

		if (!has_label(o, OP_LABEL_MANAGED_BY, OP_MANAGED_BY) || being_deleted(o))
			continue;
		if (cluster_name && !has_label(o, OP_LABEL_CLUSTER, cluster_name))
			continue;
		for (size_t j = 0; j < jlen(keep) && !wanted; j++)
			wanted = same_object(o, jat(keep, j));
		if (!wanted)
			plan_act(p, OP_DELETE, json_object_get(o));
	}
}

/* Objects whose spec the API server will not change in place: replaced. */
static bool replace_on_change(const char *kind)
{
	return strcmp(kind, "StorageClass") == 0 || strcmp(kind, "CSIDriver") == 0;
}

static void diff_objects(struct op_plan *p, json_object *desired, json_object *owned,
			 const char *cluster_name)
{
	for (size_t i = 0; i < jlen(desired); i++) {
		json_object *d = jat(desired, i), *o = NULL;
		const char *hd, *ho;

		for (size_t j = 0; j < jlen(owned) && !o; j++)
			if (same_object(d, jat(owned, j)))
				o = jat(owned, j);
		if (!o) {
			plan_act(p, OP_CREATE, json_object_get(d));
			continue;
		}
		if (being_deleted(o))
			continue;       /* created again once it is gone */
		hd = json_object_get_string(jget_key(jget(d, "metadata.annotations"), OP_ANN_HASH));
		ho = json_object_get_string(jget_key(jget(o, "metadata.annotations"), OP_ANN_HASH));
		if (ho && strcmp(hd, ho) == 0)
			continue;
		if (replace_on_change(jstr(d, "kind"))) {
			plan_act(p, OP_DELETE, json_object_get(o));
			plan_act(p, OP_CREATE, json_object_get(d));
			continue;
		}
		json_object *u = NULL;

		json_object_deep_copy(d, &u, NULL);
		if (jstr(o, "metadata.resourceVersion"))
			json_object_object_add(jget(u, "metadata"), "resourceVersion",
					       js(jstr(o, "metadata.resourceVersion")));
		plan_act(p, OP_UPDATE, u);
	}
	delete_owned(p, owned, cluster_name, desired);
}

/* The chunk server DaemonSets update OnDelete: after an update their pods
 * are restarted here, one at a time across all zones, each only once every
 * chunk server is back and ready, and (apply.c) `qbd status` says the
 * cluster is healthy, so that volumes keep their write quorum. A pod is
 * outdated when its template hash differs from its DaemonSet's; nothing is
 * restarted while a DaemonSet's own update is still in the plan. */
static void restart_chunk_servers(struct op_plan *p, json_object *desired, json_object *pods,
				  const struct op_render *r)
{
	json_object *victim = NULL;
	size_t total = 0, ready = 0;

	for (size_t i = 0; i < jlen(pods); i++) {
		json_object *pod = jat(pods, i), *ds = NULL, *own;
		const char *dsname, *want, *have;

		if (!has_label(pod, "app.kubernetes.io/name", "qbd-chunkd"))
			continue;
		total++;
		if (!being_deleted(pod) && condition_true(pod, "Ready"))
			ready++;
		own = jat(jget(pod, "metadata.ownerReferences"), 0);
		dsname = jstr(own, "name");
		if (!dsname || !jstr(own, "kind") || strcmp(jstr(own, "kind"), "DaemonSet") != 0)
			continue;
		for (size_t j = 0; j < jlen(desired) && !ds; j++)
			if (strcmp(jstr(jat(desired, j), "kind"), "DaemonSet") == 0 &&
			    strcmp(jstr(jat(desired, j), "metadata.name"), dsname) == 0)
				ds = jat(desired, j);
		if (!ds)
			continue;
		for (size_t a = 0; a < p->nacts; a++)
			if (strcmp(p->acts[a].kind, "DaemonSet") == 0 &&
			    strcmp(p->acts[a].name, dsname) == 0)
				return;         /* its update first */
		want = json_object_get_string(jget_key(jget(ds, "spec.template.metadata.annotations"),
						       OP_ANN_TEMPLATE));
		have = json_object_get_string(jget_key(jget(pod, "metadata.annotations"),
						       OP_ANN_TEMPLATE));
		if (want && (!have || strcmp(want, have) != 0) &&
		    (!victim || strcmp(jstr(pod, "metadata.name"),
				       jstr(victim, "metadata.name")) < 0))
			victim = pod;
	}
	if (!victim || ready != total || total != r->nsn)
		return;
	plan_act(p, OP_DELETE, json_object_get(victim));
	p->acts[p->nacts - 1].when_healthy = true;
}

/* qbd node remove for storage nodes gone; events for zone moves. More
 * than half of the storage nodes (two or more) gone at once looks like a
 * list gone wrong rather than machines retired: none is removed, they
 * stay remembered, and *held says so. */
static json_object *heal_storage_nodes(struct op_plan *p, json_object *old_status,
				       json_object *nodes, const struct op_render *r, int port,
				       char *held, size_t heldlen)
{
	json_object *prev = jget(old_status, "storageNodes"), *now_sn = json_object_new_array();
	size_t gone = 0, hl = 0;

	held[0] = 0;
	for (size_t i = 0; i < jlen(prev); i++)
		if (jstr(jat(prev, i), "name") && !find_node(nodes, jstr(jat(prev, i), "name")))
			gone++;
	if (gone >= 2 && gone * 2 > jlen(prev)) {
		hl = (size_t)snprintf(held, heldlen, "%zu of %zu storage nodes are gone at once, "
				      "not removed from qbd (run qbd node remove by hand if they "
				      "are gone for good):", gone, jlen(prev));
		for (size_t i = 0; i < jlen(prev); i++) {
			json_object *e = jat(prev, i);
			const char *name = jstr(e, "name");

			if (!name || find_node(nodes, name))
				continue;
			if (hl < heldlen)
				hl += (size_t)snprintf(held + hl, heldlen - hl, " %s", name);
			json_object_array_add(now_sn, json_object_get(e));
		}
	}
	for (size_t i = 0; i < jlen(prev) && !*held; i++) {
		json_object *e = jat(prev, i), *addrs = jget(e, "addresses");
		const char *name = jstr(e, "name");

		if (!name || find_node(nodes, name))
			continue;
		if (!jlen(addrs))
			plan_event(p, "Warning", "NodeRemoveSkipped", "storage node %s was deleted, "
				   "but no address of its chunk servers is known: run `qbd node "
				   "remove` by hand", name);
		for (size_t j = 0; j < jlen(addrs); j++) {
			const char *a = json_object_get_string(jat(addrs, j));

			plan_qbd(p, OP_REMOVE_NODE, a, name);
			plan_event(p, "Normal", "RemovingNode", "storage node %s was deleted: qbd "
				   "node remove %s", name, a);
		}
	}
	for (size_t i = 0; i < r->nsn; i++) {
		const struct op_storage_node *s = &r->sn[i];
		json_object *e = find_by_name(prev, "name", s->name), *addrs;
		const char *oz = jstr(e, "zone");

		if (oz && strcmp(oz, s->zone) != 0)
			plan_event(p, "Warning", "ZoneChanged", "node %s moved from zone %s to zone "
				   "%s: its chunk servers restart in the new zone's DaemonSet",
				   s->name, oz, s->zone);
		if (s->ip) {
			addrs = json_object_new_array();
			for (size_t j = 0; j < jlen(s->stores); j++)
				json_object_array_add(addrs, jsf("%s:%d", s->ip, port + (int)j));
		} else {
			addrs = json_object_get(jget(e, "addresses"));
		}
		json_object_array_add(now_sn, jobj("name", js(s->name), "zone", js(s->zone),
						   "addresses", addrs ? addrs : jarr(JEND), NULL));
	}
	return now_sn;
}

/* Fence each node newly out of service; the list of the fenced. */
static json_object *fence_nodes(struct op_plan *p, json_object *old_status, json_object *nodes)
{
	json_object *prev = jget(old_status, "fencedNodes"), *fenced = json_object_new_array();

	for (size_t i = 0; i < jlen(nodes); i++) {
		json_object *n = jat(nodes, i);
		const char *name = jstr(n, "metadata.name");

		if (!name || !tainted_out_of_service(n))
			continue;
		if (!jarr_has_str(prev, name)) {
			plan_qbd(p, OP_FENCE_NODE, name, name);
			plan_event(p, "Normal", "FencingNode", "node %s is out of service (taint "
				   OP_TAINT_OUT_OF_SERVICE "): fencing the qbd writers of its "
				   "volumes", name);
		}
		json_object_array_add(fenced, js(name));
	}
	return fenced;
}

static json_object *conditions_and_zones(json_object *cluster, const struct op_observed *obs,
					 const struct op_render *r, json_object *old_status,
					 const char *now, const char *skipped, const char *held,
					 json_object *st)
{
	long long gen = jint(cluster, "metadata.generation", -1);
	long long replicas = jint(cluster, "spec.volumeDefaults.replicas", 3);
	struct cond etcd, chunk, csi, degr, ready;
	json_object *zones = json_object_new_array();
	int expected = 0, ready_cs = 0, nzones_sn = 0, pr, cr;
	char detail[512] = "", down[512] = "";
	size_t dl = 0, wl = 0;

	for (size_t i = 0; i < r->nsn;) {
		const char *zone = r->sn[i].zone;
		int nodes = 0, exp = 0;
		size_t j;

		for (j = i; j < r->nsn && strcmp(r->sn[j].zone, zone) == 0; j++) {
			nodes++;
			exp += (int)jlen(r->sn[j].stores);
			if (!r->sn[j].ready && wl < sizeof down)
				wl += (size_t)snprintf(down + wl, sizeof down - wl, "%s%s",
						       wl ? ", " : "", r->sn[j].name);
		}
		count_ready(obs->pods, "qbd-chunkd", zone, &pr, &cr);
		if (cr > exp)
			cr = exp;
		json_object_array_add(zones, jobj("name", js(zone), "storageNodes", ji(nodes),
			"chunkServers", ji(exp), "readyChunkServers", ji(cr), NULL));
		if (dl < sizeof detail)
			dl += (size_t)snprintf(detail + dl, sizeof detail - dl, "%s%s %d/%d",
					       dl ? ", " : "", zone, cr, exp);
		expected += exp;
		ready_cs += cr;
		nzones_sn++;
		i = j;
	}
	json_object_object_add(st, "zones", zones);
	json_object_object_add(st, "readyChunkServers", ji(ready_cs));

	if (r->netcd) {
		count_ready(obs->pods, "qbd-etcd", NULL, &pr, NULL);
		set_cond(&etcd, "EtcdAvailable", (size_t)pr > r->netcd / 2,
			 (size_t)pr > r->netcd / 2 ? "Quorum" : "NoQuorum",
			 "%d of %zu managed etcd members ready", pr, r->netcd);
	} else if (jget(cluster, "spec.etcd.managed")) {
		set_cond(&etcd, "EtcdAvailable", false, "NoZones", "managed etcd needs zones: "
			 "spec.etcd.managed.zones, or storage nodes with a " OP_LABEL_ZONE " label");
	} else {
		set_cond(&etcd, "EtcdAvailable", true, "External", "etcd of your own "
			 "(spec.etcd.endpoints), not probed by the operator");
	}
	if (!expected)
		set_cond(&chunk, "ChunkServersReady", false, "NoStorageNodes", "no node is a "
			 "storage node (spec.storage)%s%s", *skipped ? ": " : "", skipped);
	else
		set_cond(&chunk, "ChunkServersReady", ready_cs >= expected,
			 ready_cs >= expected ? "AllReady" : "NotReady",
			 "%d of %d chunk servers ready (%s)%s%s", ready_cs, expected, detail,
			 *skipped ? "; skipped: " : "", skipped);
	{
		int ctl, nodes_ready, zoned = 0;
		bool ok;

		count_ready(obs->pods, "qbd-csi-controller", NULL, &ctl, NULL);
		count_ready(obs->pods, "qbd-csi-node", NULL, &nodes_ready, NULL);
		for (size_t i = 0; i < jlen(obs->nodes); i++)
			if (label(jat(obs->nodes, i), OP_LABEL_ZONE))
				zoned++;
		ok = ctl >= 1 && zoned > 0 && nodes_ready >= zoned;
		set_cond(&csi, "CSIReady", ok, ok ? "AllReady" : "NotReady",
			 "controller %s; node plugin ready on %d of %d nodes with a zone",
			 ctl >= 1 ? "ready" : "not ready", nodes_ready, zoned);
	}
	if (*held)
		set_cond(&degr, "Degraded", true, "NodesGone", "%s", held);
	else if (nzones_sn < replicas)
		set_cond(&degr, "Degraded", true, "TooFewZones", "%d zone%s with storage nodes; "
			 "volumes of the default class need %lld", nzones_sn,
			 nzones_sn == 1 ? "" : "s", replicas);
	else if (*down)
		set_cond(&degr, "Degraded", true, "NodesDown", "storage nodes not ready: %s", down);
	else
		set_cond(&degr, "Degraded", false, "AsExpected", "every storage node ready, %d "
			 "zones", nzones_sn);
	{
		const struct cond *first = !etcd.ok ? &etcd : !chunk.ok ? &chunk : !csi.ok ? &csi :
					   NULL;

		if (first)
			set_cond(&ready, "Ready", false, first->reason, "%s: %s", first->type,
				 first->message);
		else
			set_cond(&ready, "Ready", true, "Ready", "etcd, chunk servers and CSI ready");
	}
	return jarr(condition(old_status, &ready, now, gen), condition(old_status, &etcd, now, gen),
		    condition(old_status, &chunk, now, gen), condition(old_status, &csi, now, gen),
		    condition(old_status, &degr, now, gen), JEND);
}

/* Managed etcd's zones: the spec's, else those remembered, else the
 * storage nodes'. */
static void etcd_zones(json_object *cluster, json_object *old_status, struct op_render *r)
{
	json_object *z = jget(cluster, "spec.etcd.managed.zones");

	if (!jget(cluster, "spec.etcd.managed"))
		return;
	if (!jlen(z))
		z = jget(old_status, "etcdZones");
	r->etcd_zones = qbd_xcalloc(jlen(z) + r->nsn + 1, sizeof *r->etcd_zones);
	for (size_t i = 0; i < jlen(z); i++)
		r->etcd_zones[r->netcd++] = json_object_get_string(jat(z, i));
	if (!r->netcd)
		for (size_t i = 0; i < r->nsn; i++)
			r->etcd_zones[r->netcd++] = r->sn[i].zone;
	if (!jlen(jget(cluster, "spec.etcd.managed.zones")))
		r->netcd = uniq(r->etcd_zones, r->netcd);
}

int op_reconcile(json_object *cluster, const struct op_observed *obs, const char *now,
		 struct op_plan *p)
{
	json_object *old_status, *desired, *st, *fenced, *sn, *ez;
	struct op_render r = { .cluster = cluster };
	const char *secrets[2], *bad = NULL;
	char why[1024], msg[1200], held[1024];
	int port;

	memset(p, 0, sizeof *p);
	/* Gone, or going: delete what it owns. The namespaced objects carry
	 * owner references, so Kubernetes' garbage collector would delete
	 * them too; the cluster-scoped ones (CSIDriver, StorageClass) cannot,
	 * so every one is deleted here, the same way. */
	if (!cluster || being_deleted(cluster)) {
		delete_owned(p, obs->owned, cluster ? jstr(cluster, "metadata.name") : NULL, NULL);
		return 0;
	}
	r.ns = jstr(cluster, "metadata.namespace");
	r.name = jstr(cluster, "metadata.name");
	r.uid = jstr(cluster, "metadata.uid");
	if (!r.ns || !r.name || !r.uid)
		return -EINVAL;
	old_status = jget(cluster, "status");
	p->old_status = old_status ? json_object_get(old_status) : NULL;

	/* A spec that cannot be acted on: no objects, no qbd commands. */
	for (size_t i = 0, n = op_secret_names(cluster, secrets); i < n && !bad; i++) {
		if (!jarr_has_str(obs->secrets, secrets[i])) {
			snprintf(msg, sizeof msg, "Secret %s/%s does not exist: create it (%s)",
				 r.ns, secrets[i], i == 0 && strcmp(secrets[i],
				 jstr(cluster, "spec.secretName")) == 0 ?
				 "qbd secret create FILE; kubectl -n NAMESPACE create secret "
				 "generic NAME --from-file=secret=FILE" :
				 "keys ca.crt, tls.crt and tls.key");
			bad = "SecretNotFound";
		}
	}
	if (!bad && !jget(cluster, "spec.etcd.endpoints") == !jget(cluster, "spec.etcd.managed")) {
		snprintf(msg, sizeof msg, "give exactly one of spec.etcd.endpoints and "
			 "spec.etcd.managed");
		bad = "InvalidSpec";
	}
	if (bad) {
		p->status = bad_spec_status(cluster, old_status, now, bad, msg);
		p->status_changed = !json_object_equal(p->status, old_status);
		return 0;
	}

	storage_nodes(cluster, obs->nodes, &r, why, sizeof why);
	etcd_zones(cluster, old_status, &r);
	port = (int)jint(cluster, "spec.storage.port", 7800);
	p->etcd = op_etcd_endpoints(&r);
	desired = op_render_objects(&r);
	diff_objects(p, desired, obs->owned, r.name);
	restart_chunk_servers(p, desired, obs->pods, &r);

	st = jobj("observedGeneration", jget(cluster, "metadata.generation") ?
		  ji(jint(cluster, "metadata.generation", 0)) : NULL, NULL);
	sn = heal_storage_nodes(p, old_status, obs->nodes, &r, port, held, sizeof held);
	json_object_object_add(st, "conditions", conditions_and_zones(cluster, obs, &r,
		old_status, now, why, held, st));
	fenced = fence_nodes(p, old_status, obs->nodes);
	json_object_object_add(st, "storageNodes", sn);
	json_object_object_add(st, "fencedNodes", fenced);
	if (r.netcd) {
		ez = json_object_new_array();
		for (size_t i = 0; i < r.netcd; i++)
			json_object_array_add(ez, js(r.etcd_zones[i]));
		json_object_object_add(st, "etcdZones", ez);
	}
	p->status = st;
	p->status_changed = !json_object_equal(st, old_status);
	json_object_put(desired);
	free(r.sn);
	free(r.zones);
	free(r.etcd_zones);
	return 0;
}

void op_plan_qbd_failed(struct op_plan *p, size_t i)
{
	struct op_qbd *q = &p->qbd[i];
	json_object *list;

	if (!p->status)
		return;
	if (q->kind == OP_FENCE_NODE) {
		list = jget(p->status, "fencedNodes");
		for (size_t j = 0; j < jlen(list); j++)
			if (strcmp(json_object_get_string(jat(list, j)), q->node) == 0) {
				json_object_array_del_idx(list, j, 1);
				break;
			}
	} else {
		json_object *prev = find_by_name(jget(p->old_status, "storageNodes"), "name", q->node);

		list = jget(p->status, "storageNodes");
		if (prev && list && !find_by_name(list, "name", q->node))
			json_object_array_add(list, json_object_get(prev));
	}
	p->status_changed = !json_object_equal(p->status, p->old_status);
}
