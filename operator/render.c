/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The objects a QbdCluster asks for, as deploy/kubernetes/reference/ shows
 * them (that directory is the by-hand version of this file's output; a
 * change to one is a change to the other). No I/O. Every object gets the
 * labels app.kubernetes.io/managed-by=qbd-operator and qbd.io/cluster, an
 * owner reference to the QbdCluster when it is namespaced (a cluster-scoped
 * object cannot name a namespaced owner: those carry qbd.io/namespace and
 * the operator deletes them itself), and the hash of its rendered form in
 * the annotation qbd.io/spec-hash.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DEF_QBD_IMAGE "qbd/qbd:0.1.0"
#define DEF_ETCD_IMAGE "registry.k8s.io/etcd:3.5.21-0"
#define CHUNKD_METRICS_PORT 9800
#define DEF_STORE_SIZE "100G"

const char *op_spec_str(json_object *cluster, const char *path, const char *dflt)
{
	const char *s = jstr(cluster, path);

	return s && *s ? s : dflt;
}

void op_dns_label(const char *in, char *out, size_t outlen)
{
	size_t n = 0;

	for (; *in && n + 1 < outlen && n < 40; in++) {
		char c = (char)tolower((unsigned char)*in);

		out[n++] = isalnum((unsigned char)c) ? c : '-';
	}
	while (n > 0 && out[n - 1] == '-')
		n--;
	out[n] = 0;
	if (!n)
		snprintf(out, outlen, "x");
}

static const char *image(const struct op_render *r, const char *key, const char *dflt)
{
	char path[64];

	snprintf(path, sizeof path, "spec.images.%s", key);
	return op_spec_str(r->cluster, path, dflt);
}

/* ---- metadata ---- */

/* labels: the object's own (taken); the operator's are added. */
static json_object *meta(const struct op_render *r, const char *name, bool namespaced,
			 json_object *labels, json_object *annotations)
{
	json_object *m = jobj("name", js(name), NULL);

	if (namespaced)
		json_object_object_add(m, "namespace", js(r->ns));
	if (!labels)
		labels = json_object_new_object();
	json_object_object_add(labels, OP_LABEL_MANAGED_BY, js(OP_MANAGED_BY));
	json_object_object_add(labels, OP_LABEL_CLUSTER, js(r->name));
	if (!namespaced)
		json_object_object_add(labels, OP_LABEL_NAMESPACE, js(r->ns));
	json_object_object_add(m, "labels", labels);
	if (annotations)
		json_object_object_add(m, "annotations", annotations);
	if (namespaced)
		json_object_object_add(m, "ownerReferences", jarr(jobj(
			"apiVersion", js(OP_GROUP_VERSION), "kind", js(OP_KIND),
			"name", js(r->name), "uid", js(r->uid), "controller", jb(true),
			"blockOwnerDeletion", jb(true), NULL), JEND));
	return m;
}

static json_object *app_labels(const char *app, const char *zone)
{
	return jobj("app.kubernetes.io/name", js(app), "app.kubernetes.io/part-of", js("qbd"),
		    OP_LABEL_ZONE, zone ? js(zone) : NULL, NULL);
}

static json_object *selector_labels(const char *app, const char *zone)
{
	return jobj("app.kubernetes.io/name", js(app), OP_LABEL_ZONE, zone ? js(zone) : NULL, NULL);
}

static json_object *object(const char *api_version, const char *kind, json_object *metadata)
{
	return jobj("apiVersion", js(api_version), "kind", js(kind), "metadata", metadata, NULL);
}

/* ---- what every qbd process mounts: qbd.conf, the secret, etcd's TLS ---- */

static const char *tls_secret(const struct op_render *r)
{
	return r->netcd ? NULL : jstr(r->cluster, "spec.etcd.tlsSecretName");
}

static void add_qbd_volumes(const struct op_render *r, json_object *volumes)
{
	const char *tls = tls_secret(r);

	json_object_array_add(volumes, jobj("name", js("config"),
		"configMap", jobj("name", js("qbd-config"), NULL), NULL));
	json_object_array_add(volumes, jobj("name", js("secret"),
		"secret", jobj("secretName", js(jstr(r->cluster, "spec.secretName")),
			       "defaultMode", ji(0400), NULL), NULL));
	if (tls)
		json_object_array_add(volumes, jobj("name", js("etcd-tls"),
			"secret", jobj("secretName", js(tls), "defaultMode", ji(0400), NULL), NULL));
}

static void add_qbd_mounts(const struct op_render *r, json_object *mounts)
{
	json_object_array_add(mounts, jobj("name", js("config"), "mountPath", js("/etc/qbd"),
					   "readOnly", jb(true), NULL));
	json_object_array_add(mounts, jobj("name", js("secret"), "mountPath", js(OP_SECRET_DIR),
					   "readOnly", jb(true), NULL));
	if (tls_secret(r))
		json_object_array_add(mounts, jobj("name", js("etcd-tls"),
			"mountPath", js(OP_ETCD_TLS_DIR), "readOnly", jb(true), NULL));
}

static json_object *socket_mount(const char *volume)
{
	return jarr(jobj("name", js(volume), "mountPath", js("/csi"), NULL), JEND);
}

static json_object *env_field(const char *name, const char *field)
{
	return jobj("name", js(name), "valueFrom", jobj("fieldRef",
		jobj("fieldPath", js(field), NULL), NULL), NULL);
}

/* ---- qbd.conf ---- */

static char *etcd_member_url(const struct op_render *r, const char *zone, int port)
{
	char z[64], *u = NULL;

	op_dns_label(zone, z, sizeof z);
	if (asprintf(&u, "http://qbd-etcd-%s-0.qbd-etcd.%s.svc:%d", z, r->ns, port) < 0)
		abort();
	return u;
}

char *op_etcd_endpoints(const struct op_render *r)
{
	json_object *eps = jget(r->cluster, "spec.etcd.endpoints");
	size_t cap = 1, len = 0;
	char *out = qbd_xcalloc(1, 1);

	for (size_t i = 0; i < (r->netcd ? r->netcd : jlen(eps)); i++) {
		char *u = r->netcd ? etcd_member_url(r, r->etcd_zones[i], 2379) :
				     qbd_xstrdup(json_object_get_string(jat(eps, i)));
		size_t n = strlen(u);

		cap += n + 1;
		out = qbd_xrealloc(out, cap);
		if (len)
			out[len++] = ',';
		memcpy(out + len, u, n + 1);
		len += n;
		free(u);
	}
	return out;
}

static json_object *config_map(const struct op_render *r)
{
	char *eps = op_etcd_endpoints(r), *text = NULL;
	const char *tls = tls_secret(r);
	json_object *o;

	if (asprintf(&text,
		     "[cluster]\n"
		     "etcd = %s\n"
		     "secret-file = " OP_SECRET_PATH "\n"
		     "%s"
		     "\n"
		     "[qbd-managerd]\n"
		     "down-out = %s\n",
		     eps,
		     tls ? "etcd-cacert = " OP_ETCD_TLS_DIR "/ca.crt\n"
			   "etcd-cert = " OP_ETCD_TLS_DIR "/tls.crt\n"
			   "etcd-key = " OP_ETCD_TLS_DIR "/tls.key\n" : "",
		     op_spec_str(r->cluster, "spec.downOut", "10m")) < 0)
		abort();
	o = object("v1", "ConfigMap", meta(r, "qbd-config", true,
		jobj("app.kubernetes.io/part-of", js("qbd"), NULL), NULL));
	json_object_object_add(o, "data", jobj("qbd.conf", js(text), NULL));
	free(text);
	free(eps);
	return o;
}

/* ---- managed etcd: a headless Service, a StatefulSet per zone ---- */

static json_object *etcd_service(const struct op_render *r)
{
	json_object *o = object("v1", "Service", meta(r, "qbd-etcd", true,
		app_labels("qbd-etcd", NULL), NULL));

	json_object_object_add(o, "spec", jobj(
		"clusterIP", js("None"),
		"publishNotReadyAddresses", jb(true),
		"selector", jobj("app.kubernetes.io/name", js("qbd-etcd"), NULL),
		"ports", jarr(jobj("name", js("client"), "port", ji(2379), NULL),
			      jobj("name", js("peer"), "port", ji(2380), NULL), JEND),
		NULL));
	return o;
}

static json_object *etcd_statefulset(const struct op_render *r, const char *zone)
{
	char z[64], name[96], *client = etcd_member_url(r, zone, 2379);
	char *peer = etcd_member_url(r, zone, 2380), *initial = qbd_xcalloc(1, 1);
	const char *sc = jstr(r->cluster, "spec.etcd.managed.storage.storageClassName");
	size_t len = 0;
	json_object *o, *pvc;

	op_dns_label(zone, z, sizeof z);
	snprintf(name, sizeof name, "qbd-etcd-%s", z);
	for (size_t i = 0; i < r->netcd; i++) {
		char zi[64], *u = etcd_member_url(r, r->etcd_zones[i], 2380), *part = NULL;
		int n;

		op_dns_label(r->etcd_zones[i], zi, sizeof zi);
		n = asprintf(&part, "%sqbd-etcd-%s=%s", len ? "," : "", zi, u);
		if (n < 0)
			abort();
		initial = qbd_xrealloc(initial, len + (size_t)n + 1);
		memcpy(initial + len, part, (size_t)n + 1);
		len += (size_t)n;
		free(part);
		free(u);
	}
	pvc = jobj("metadata", jobj("name", js("data"), NULL),
		   "spec", jobj("accessModes", jarr(js("ReadWriteOnce"), JEND),
				"storageClassName", sc ? js(sc) : NULL,
				"resources", jobj("requests", jobj("storage",
					js(op_spec_str(r->cluster, "spec.etcd.managed.storage.size", "8Gi")),
					NULL), NULL), NULL), NULL);
	o = object("apps/v1", "StatefulSet", meta(r, name, true, app_labels("qbd-etcd", zone), NULL));
	json_object_object_add(o, "spec", jobj(
		"serviceName", js("qbd-etcd"),
		"replicas", ji(1),
		"selector", jobj("matchLabels", selector_labels("qbd-etcd", zone), NULL),
		"template", jobj(
			"metadata", jobj("labels", app_labels("qbd-etcd", zone), NULL),
			"spec", jobj(
				"serviceAccountName", js("qbd"),
				"nodeSelector", jobj(OP_LABEL_ZONE, js(zone), NULL),
				"priorityClassName", js("system-cluster-critical"),
				"containers", jarr(jobj(
					"name", js("etcd"),
					"image", js(op_spec_str(r->cluster, "spec.etcd.managed.image",
								DEF_ETCD_IMAGE)),
					"command", jarr(js("etcd"), JEND),
					"args", jarr(
						jsf("--name=%s", name),
						js("--data-dir=/var/lib/etcd"),
						js("--listen-client-urls=http://0.0.0.0:2379"),
						jsf("--advertise-client-urls=%s", client),
						js("--listen-peer-urls=http://0.0.0.0:2380"),
						jsf("--initial-advertise-peer-urls=%s", peer),
						jsf("--initial-cluster=%s", initial),
						js("--initial-cluster-state=new"),
						js("--initial-cluster-token=qbd-etcd"),
						js("--listen-metrics-urls=http://0.0.0.0:2381"), JEND),
					"ports", jarr(
						jobj("name", js("client"), "containerPort", ji(2379), NULL),
						jobj("name", js("peer"), "containerPort", ji(2380), NULL),
						jobj("name", js("metrics"), "containerPort", ji(2381), NULL),
						JEND),
					"readinessProbe", jobj("httpGet", jobj("path", js("/health"),
						"port", ji(2381), NULL), "periodSeconds", ji(5), NULL),
					"livenessProbe", jobj("httpGet", jobj(
						"path", js("/health?exclude=NOSPACE&serializable=true"),
						"port", ji(2381), NULL),
						"initialDelaySeconds", ji(30), "periodSeconds", ji(10),
						"failureThreshold", ji(6), NULL),
					"resources", jobj("requests", jobj("cpu", js("100m"),
						"memory", js("256Mi"), NULL), NULL),
					"volumeMounts", jarr(jobj("name", js("data"),
						"mountPath", js("/var/lib/etcd"), NULL), JEND),
					NULL), JEND),
				NULL),
			NULL),
		"volumeClaimTemplates", jarr(pvc, JEND),
		NULL));
	free(client);
	free(peer);
	free(initial);
	return o;
}

/* ---- chunk servers ---- */

static bool is_device(const char *path)
{
	return strncmp(path, "/dev/", 5) == 0;
}

/* The pod's containers and volumes for the stores (each a qbd-chunkd). */
static void chunkd_pod(const struct op_render *r, const char *zone, json_object *stores,
		       json_object *containers, json_object *volumes)
{
	int port = (int)jint(r->cluster, "spec.storage.port", 7800);
	const char *scrub = op_spec_str(r->cluster, "spec.storage.scrubRate", "4M");

	for (size_t i = 0; i < jlen(stores); i++) {
		json_object *st = jat(stores, i), *mounts, *c;
		const char *path = jstr(st, "path");
		bool dev = is_device(path);
		char cname[32], vname[32], qname[32], mname[32];
		int p = port + (int)i, mp = CHUNKD_METRICS_PORT + (int)i;

		snprintf(cname, sizeof cname, i ? "chunkd-%zu" : "chunkd", i);
		snprintf(vname, sizeof vname, i ? "store-%zu" : "store", i);
		snprintf(qname, sizeof qname, i ? "qbd-%zu" : "qbd", i);
		snprintf(mname, sizeof mname, i ? "metrics-%zu" : "metrics", i);
		mounts = jarr(jobj("name", js(vname), "mountPath", js(path), NULL), JEND);
		add_qbd_mounts(r, mounts);
		c = jobj(
			"name", js(cname),
			"image", js(image(r, "qbd", DEF_QBD_IMAGE)),
			"command", jarr(js("qbd-chunkd"), JEND),
			"args", jarr(
				dev ? jsf("--data=%s", path) : jsf("--data=%s%sqbd-store.img", path,
					path[strlen(path) - 1] == '/' ? "" : "/"),
				dev ? NULL : jsf("--size=%s", op_spec_str(st, "size", DEF_STORE_SIZE)),
				jsf("--listen=0.0.0.0:%d", p),
				jsf("--advertise=$(NODE_IP):%d", p),
				jsf("--zone=%s", zone),
				jsf("--metrics=0.0.0.0:%d", mp),
				jsf("--scrub-rate=%s", scrub), JEND),
			"env", jarr(env_field("NODE_IP", "status.hostIP"), JEND),
			"ports", jarr(jobj("name", js(qname), "containerPort", ji(p), NULL),
				      jobj("name", js(mname), "containerPort", ji(mp), NULL), JEND),
			"readinessProbe", jobj("httpGet", jobj("path", js("/metrics"), "port", ji(mp),
				NULL), "periodSeconds", ji(10), NULL),
			"livenessProbe", jobj("tcpSocket", jobj("port", ji(p), NULL),
				"initialDelaySeconds", ji(30), "periodSeconds", ji(10),
				"failureThreshold", ji(6), NULL),
			"resources", jobj("requests", jobj("cpu", js("250m"), "memory", js("256Mi"),
				NULL), NULL),
			"securityContext", jobj("privileged", jb(dev),
				"capabilities", jobj("add", jarr(js("IPC_LOCK"), JEND), NULL),
				"seccompProfile", jobj("type", js("Unconfined"), NULL), NULL),
			"volumeMounts", mounts,
			NULL);
		json_object_array_add(containers, c);
		json_object_array_add(volumes, jobj("name", js(vname), "hostPath",
			jobj("path", js(path), "type", js(dev ? "BlockDevice" : "DirectoryOrCreate"),
			     NULL), NULL));
	}
	add_qbd_volumes(r, volumes);
}

/* node: NULL for the zone's DaemonSet of the nodes that nodeSelector
 * matches and that use the default stores (except[] are left out), else
 * one node's own. */
static json_object *chunkd_daemonset(const struct op_render *r, const char *zone,
				     const struct op_storage_node *node, json_object *except)
{
	char z[64], n[64], name[160];
	json_object *o, *containers = json_object_new_array(), *volumes = json_object_new_array();
	json_object *nodesel = jobj(NULL), *affinity = NULL, *sel;

	op_dns_label(zone, z, sizeof z);
	if (node) {
		op_dns_label(node->name, n, sizeof n);
		snprintf(name, sizeof name, "qbd-chunkd-%s-%s", z, n);
	} else {
		snprintf(name, sizeof name, "qbd-chunkd-%s", z);
	}
	sel = node ? NULL : jget(r->cluster, "spec.storage.nodeSelector");
	if (sel && json_object_is_type(sel, json_type_object)) {
		json_object_object_foreach(sel, k, v) {
			if (strcmp(k, OP_LABEL_ZONE) != 0)
				json_object_object_add(nodesel, k, json_object_get(v));
		}
	}
	json_object_object_add(nodesel, OP_LABEL_ZONE, js(zone));
	if (node || jlen(except)) {
		json_object *values = node ? jarr(js(node->name), JEND) : json_object_get(except);

		affinity = jobj("nodeAffinity", jobj("requiredDuringSchedulingIgnoredDuringExecution",
			jobj("nodeSelectorTerms", jarr(jobj("matchFields", jarr(jobj(
				"key", js("metadata.name"), "operator", js(node ? "In" : "NotIn"),
				"values", values, NULL), JEND), NULL), JEND), NULL), NULL), NULL);
	}
	chunkd_pod(r, zone, node ? node->stores : jget(r->cluster, "spec.storage.stores"),
		   containers, volumes);
	o = object("apps/v1", "DaemonSet", meta(r, name, true, app_labels("qbd-chunkd", zone), NULL));
	if (node)
		json_object_object_add(jget(o, "metadata.labels"), "qbd.io/node", js(n));
	json_object_object_add(o, "spec", jobj(
		"selector", jobj("matchLabels", node ? jobj("app.kubernetes.io/name", js("qbd-chunkd"),
			OP_LABEL_ZONE, js(zone), "qbd.io/node", js(n), NULL) :
			selector_labels("qbd-chunkd", zone), NULL),
		"updateStrategy", jobj("type", js("OnDelete"), NULL),
		"template", jobj(
			"metadata", jobj("labels", node ? jobj("app.kubernetes.io/name", js("qbd-chunkd"),
				"app.kubernetes.io/part-of", js("qbd"), OP_LABEL_ZONE, js(zone),
				"qbd.io/node", js(n), NULL) : app_labels("qbd-chunkd", zone), NULL),
			"spec", jobj(
				"serviceAccountName", js("qbd"),
				"hostNetwork", jb(true),
				"dnsPolicy", js("ClusterFirstWithHostNet"),
				"nodeSelector", nodesel,
				"affinity", affinity,
				"priorityClassName", js("system-node-critical"),
				"terminationGracePeriodSeconds", ji(60),
				"containers", containers,
				"volumes", volumes,
				NULL),
			NULL),
		NULL));
	/* Its pods carry the hash of the pod spec they were made from: one
	 * that differs from the DaemonSet's is restarted (reconcile.c). */
	{
		json_object *tmpl = jget(o, "spec.template");
		char h[17];

		jhash(jget(tmpl, "spec"), h);
		json_object_object_add(jget(tmpl, "metadata"), "annotations",
				       jobj(OP_ANN_TEMPLATE, js(h), NULL));
	}
	return o;
}

/* ---- qbd-managerd ---- */

static json_object *managerd(const struct op_render *r)
{
	json_object *mounts = json_object_new_array(), *volumes = json_object_new_array(), *o;

	add_qbd_mounts(r, mounts);
	add_qbd_volumes(r, volumes);
	o = object("apps/v1", "Deployment", meta(r, "qbd-managerd", true,
		app_labels("qbd-managerd", NULL), NULL));
	json_object_object_add(o, "spec", jobj(
		"replicas", ji(2),
		"selector", jobj("matchLabels", selector_labels("qbd-managerd", NULL), NULL),
		"template", jobj(
			"metadata", jobj("labels", app_labels("qbd-managerd", NULL), NULL),
			"spec", jobj(
				"serviceAccountName", js("qbd"),
				"priorityClassName", js("system-cluster-critical"),
				"topologySpreadConstraints", jarr(jobj(
					"maxSkew", ji(1), "topologyKey", js(OP_LABEL_ZONE),
					"whenUnsatisfiable", js("DoNotSchedule"),
					"labelSelector", jobj("matchLabels",
						selector_labels("qbd-managerd", NULL), NULL), NULL), JEND),
				"securityContext", jobj("seccompProfile", jobj("type",
					js("RuntimeDefault"), NULL), NULL),
				"containers", jarr(jobj(
					"name", js("managerd"),
					"image", js(image(r, "qbd", DEF_QBD_IMAGE)),
					"command", jarr(js("qbd-managerd"), JEND),
					"args", jarr(js("--metrics=0.0.0.0:9820"), JEND),
					"ports", jarr(jobj("name", js("metrics"), "containerPort", ji(9820),
						NULL), JEND),
					"livenessProbe", jobj("httpGet", jobj("path", js("/metrics"),
						"port", ji(9820), NULL), "periodSeconds", ji(20), NULL),
					"resources", jobj(
						"requests", jobj("cpu", js("20m"), "memory", js("32Mi"), NULL),
						"limits", jobj("memory", js("256Mi"), NULL), NULL),
					"securityContext", jobj(
						"allowPrivilegeEscalation", jb(false),
						"readOnlyRootFilesystem", jb(true),
						"capabilities", jobj("drop", jarr(js("ALL"), JEND), NULL), NULL),
					"volumeMounts", mounts,
					NULL), JEND),
				"volumes", volumes,
				NULL),
			NULL),
		NULL));
	return o;
}

/* ---- the CSI controller plugin ---- */

static json_object *sidecar(const char *name, const char *img, json_object *args)
{
	return jobj("name", js(name), "image", js(img), "args", args,
		    "volumeMounts", socket_mount("socket-dir"), NULL);
}

static json_object *csi_controller(const struct op_render *r)
{
	json_object *mounts = socket_mount("socket-dir"), *volumes, *o;
	char le_ns[300];

	snprintf(le_ns, sizeof le_ns, "--leader-election-namespace=%s", r->ns);
	add_qbd_mounts(r, mounts);
	volumes = jarr(jobj("name", js("socket-dir"), "emptyDir", jobj(NULL), NULL), JEND);
	add_qbd_volumes(r, volumes);
	o = object("apps/v1", "Deployment", meta(r, "qbd-csi-controller", true,
		app_labels("qbd-csi-controller", NULL), NULL));
	json_object_object_add(o, "spec", jobj(
		"replicas", ji(1),
		"selector", jobj("matchLabels", selector_labels("qbd-csi-controller", NULL), NULL),
		"template", jobj(
			"metadata", jobj("labels", app_labels("qbd-csi-controller", NULL), NULL),
			"spec", jobj(
				"serviceAccountName", js("qbd-csi-controller"),
				"priorityClassName", js("system-cluster-critical"),
				"containers", jarr(
					jobj("name", js("qbd-csi"),
					     "image", js(image(r, "qbd", DEF_QBD_IMAGE)),
					     "command", jarr(js("qbd-csi"), JEND),
					     "args", jarr(js("--mode=controller"),
							  js("--endpoint=$(CSI_ENDPOINT)"), JEND),
					     "env", jarr(jobj("name", js("CSI_ENDPOINT"),
						     "value", js("unix:///csi/csi.sock"), NULL), JEND),
					     "ports", jarr(jobj("name", js("healthz"),
						     "containerPort", ji(9808), NULL), JEND),
					     "livenessProbe", jobj("httpGet", jobj("path", js("/healthz"),
						     "port", js("healthz"), NULL),
						     "initialDelaySeconds", ji(10), "timeoutSeconds", ji(3),
						     "periodSeconds", ji(10), "failureThreshold", ji(5), NULL),
					     "resources", jobj("requests", jobj("cpu", js("20m"),
						     "memory", js("32Mi"), NULL), NULL),
					     "volumeMounts", mounts, NULL),
					sidecar("csi-provisioner", image(r, "csiProvisioner",
						"registry.k8s.io/sig-storage/csi-provisioner:v5.2.0"),
						jarr(js("--csi-address=/csi/csi.sock"),
						     js("--feature-gates=Topology=true"),
						     js("--extra-create-metadata"),
						     js("--default-fstype=ext4"), js("--timeout=120s"),
						     js("--leader-election"), js(le_ns), js("--v=2"), JEND)),
					sidecar("csi-attacher", image(r, "csiAttacher",
						"registry.k8s.io/sig-storage/csi-attacher:v4.8.1"),
						jarr(js("--csi-address=/csi/csi.sock"), js("--timeout=120s"),
						     js("--leader-election"), js(le_ns), js("--v=2"), JEND)),
					sidecar("csi-resizer", image(r, "csiResizer",
						"registry.k8s.io/sig-storage/csi-resizer:v1.13.2"),
						jarr(js("--csi-address=/csi/csi.sock"), js("--timeout=120s"),
						     js("--handle-volume-inuse-error=false"),
						     js("--leader-election"), js(le_ns), js("--v=2"), JEND)),
					sidecar("liveness-probe", image(r, "livenessProbe",
						"registry.k8s.io/sig-storage/livenessprobe:v2.15.0"),
						jarr(js("--csi-address=/csi/csi.sock"),
						     js("--health-port=9808"), JEND)),
					JEND),
				"volumes", volumes,
				NULL),
			NULL),
		NULL));
	return o;
}

/* ---- the CSI node plugin, a DaemonSet per zone ---- */

static json_object *host_dir(const char *name, const char *path, const char *type)
{
	return jobj("name", js(name), "hostPath", jobj("path", js(path), "type", js(type), NULL),
		    NULL);
}

static json_object *csi_node(const struct op_render *r, const char *zone)
{
	const char *reg = "--kubelet-registration-path=/var/lib/kubelet/plugins/qbd.csi.io/csi.sock";
	char z[64], name[96];
	json_object *mounts, *volumes, *o;

	op_dns_label(zone, z, sizeof z);
	snprintf(name, sizeof name, "qbd-csi-node-%s", z);
	mounts = jarr(
		jobj("name", js("plugin-dir"), "mountPath", js("/csi"), NULL),
		jobj("name", js("kubelet-dir"), "mountPath", js("/var/lib/kubelet"),
		     "mountPropagation", js("Bidirectional"), NULL),
		jobj("name", js("dev"), "mountPath", js("/dev"), NULL),
		jobj("name", js("sys"), "mountPath", js("/sys"), NULL),
		jobj("name", js("modules"), "mountPath", js("/lib/modules"), "readOnly", jb(true),
		     NULL), JEND);
	add_qbd_mounts(r, mounts);
	volumes = jarr(
		host_dir("plugin-dir", "/var/lib/kubelet/plugins/qbd.csi.io", "DirectoryOrCreate"),
		host_dir("registration-dir", "/var/lib/kubelet/plugins_registry", "Directory"),
		host_dir("kubelet-dir", "/var/lib/kubelet", "Directory"),
		host_dir("dev", "/dev", "Directory"),
		host_dir("sys", "/sys", "Directory"),
		host_dir("modules", "/lib/modules", "Directory"), JEND);
	add_qbd_volumes(r, volumes);
	o = object("apps/v1", "DaemonSet", meta(r, name, true, app_labels("qbd-csi-node", zone), NULL));
	json_object_object_add(o, "spec", jobj(
		"selector", jobj("matchLabels", selector_labels("qbd-csi-node", zone), NULL),
		"updateStrategy", jobj("type", js("OnDelete"), NULL),
		"template", jobj(
			"metadata", jobj("labels", app_labels("qbd-csi-node", zone), NULL),
			"spec", jobj(
				"serviceAccountName", js("qbd-csi-node"),
				"hostNetwork", jb(true),
				"dnsPolicy", js("ClusterFirstWithHostNet"),
				"nodeSelector", jobj("kubernetes.io/os", js("linux"),
					OP_LABEL_ZONE, js(zone), NULL),
				"priorityClassName", js("system-node-critical"),
				"tolerations", jarr(jobj("operator", js("Exists"), NULL), JEND),
				"containers", jarr(
					jobj("name", js("qbd-csi"),
					     "image", js(image(r, "qbd", DEF_QBD_IMAGE)),
					     "command", jarr(js("qbd-csi"), JEND),
					     "args", jarr(js("--mode=node"), js("--endpoint=$(CSI_ENDPOINT)"),
							  js("--node-id=$(NODE_NAME)"),
							  jsf("--zone=%s", zone), JEND),
					     "env", jarr(jobj("name", js("CSI_ENDPOINT"),
							      "value", js("unix:///csi/csi.sock"), NULL),
							 env_field("NODE_NAME", "spec.nodeName"), JEND),
					     "securityContext", jobj("privileged", jb(true), NULL),
					     "ports", jarr(jobj("name", js("healthz"),
						     "containerPort", ji(9838), NULL), JEND),
					     "livenessProbe", jobj("httpGet", jobj("path", js("/healthz"),
						     "port", js("healthz"), NULL),
						     "initialDelaySeconds", ji(10), "timeoutSeconds", ji(3),
						     "periodSeconds", ji(10), "failureThreshold", ji(5), NULL),
					     "resources", jobj("requests", jobj("cpu", js("50m"),
						     "memory", js("64Mi"), NULL), NULL),
					     "volumeMounts", mounts, NULL),
					jobj("name", js("node-driver-registrar"),
					     "image", js(image(r, "csiNodeDriverRegistrar",
						"registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0")),
					     "args", jarr(js("--csi-address=/csi/csi.sock"), js(reg),
							  js("--v=2"), JEND),
					     "livenessProbe", jobj("exec", jobj("command", jarr(
						     js("/csi-node-driver-registrar"), js(reg),
						     js("--mode=kubelet-registration-probe"), JEND), NULL),
						     "initialDelaySeconds", ji(30), "timeoutSeconds", ji(15),
						     NULL),
					     "volumeMounts", jarr(
						     jobj("name", js("plugin-dir"), "mountPath", js("/csi"),
							  NULL),
						     jobj("name", js("registration-dir"),
							  "mountPath", js("/registration"), NULL), JEND),
					     NULL),
					jobj("name", js("liveness-probe"),
					     "image", js(image(r, "livenessProbe",
						"registry.k8s.io/sig-storage/livenessprobe:v2.15.0")),
					     "args", jarr(js("--csi-address=/csi/csi.sock"),
							  js("--health-port=9838"), JEND),
					     "volumeMounts", socket_mount("plugin-dir"), NULL),
					JEND),
				"volumes", volumes,
				NULL),
			NULL),
		NULL));
	return o;
}

/* ---- cluster-scoped: the CSIDriver and the default StorageClass ---- */

static json_object *csi_driver(const struct op_render *r)
{
	json_object *o = object("storage.k8s.io/v1", "CSIDriver", meta(r, "qbd.csi.io", false,
		jobj("app.kubernetes.io/part-of", js("qbd"), NULL), NULL));

	json_object_object_add(o, "spec", jobj(
		"attachRequired", jb(true),
		"podInfoOnMount", jb(false),
		"volumeLifecycleModes", jarr(js("Persistent"), JEND),
		"fsGroupPolicy", js("ReadWriteOnceWithFSType"),
		"storageCapacity", jb(false),
		"requiresRepublish", jb(false),
		NULL));
	return o;
}

static json_object *storage_class(const struct op_render *r)
{
	long long rep = jint(r->cluster, "spec.volumeDefaults.replicas", 3);
	long long wq = jint(r->cluster, "spec.volumeDefaults.writeQuorum", rep / 2 + 1);
	const char *rate = jstr(r->cluster, "spec.volumeDefaults.rebuildRate");
	json_object *o = object("storage.k8s.io/v1", "StorageClass", meta(r, "qbd", false,
		jobj("app.kubernetes.io/part-of", js("qbd"), NULL),
		jobj("storageclass.kubernetes.io/is-default-class", js("true"), NULL)));

	json_object_object_add(o, "provisioner", js("qbd.csi.io"));
	json_object_object_add(o, "parameters", jobj(
		"replicas", jsf("%lld", rep),
		"writeQuorum", jsf("%lld", wq),
		"rebuildRate", rate ? js(rate) : NULL,
		"csi.storage.k8s.io/fstype", js("ext4"),
		NULL));
	json_object_object_add(o, "reclaimPolicy", js("Delete"));
	json_object_object_add(o, "allowVolumeExpansion", jb(true));
	json_object_object_add(o, "volumeBindingMode", js("WaitForFirstConsumer"));
	return o;
}

/* ---- all of them ---- */

static void add(json_object *arr, json_object *o)
{
	json_object *ann;
	char h[17];

	jhash(o, h);
	ann = jget(o, "metadata.annotations");
	if (!ann) {
		ann = json_object_new_object();
		json_object_object_add(jget(o, "metadata"), "annotations", ann);
	}
	json_object_object_add(ann, OP_ANN_HASH, js(h));
	json_object_array_add(arr, o);
}

json_object *op_render_objects(const struct op_render *r)
{
	json_object *out = json_object_new_array();

	add(out, config_map(r));
	if (r->netcd) {
		add(out, etcd_service(r));
		for (size_t i = 0; i < r->netcd; i++)
			add(out, etcd_statefulset(r, r->etcd_zones[i]));
	}
	/* Chunk servers: the storage nodes come sorted by zone, then name. */
	for (size_t i = 0; i < r->nsn;) {
		const char *zone = r->sn[i].zone;
		json_object *except = json_object_new_array();
		bool shared = false;
		size_t j;

		for (j = i; j < r->nsn && strcmp(r->sn[j].zone, zone) == 0; j++)
			;
		for (size_t k = i; k < j; k++) {
			if (r->sn[k].own_ds)
				json_object_array_add(except, js(r->sn[k].name));
			else
				shared = true;
		}
		if (shared)
			add(out, chunkd_daemonset(r, zone, NULL, except));
		for (size_t k = i; k < j; k++)
			if (r->sn[k].own_ds)
				add(out, chunkd_daemonset(r, zone, &r->sn[k], NULL));
		json_object_put(except);
		i = j;
	}
	add(out, managerd(r));
	add(out, csi_controller(r));
	for (size_t i = 0; i < r->nzones; i++)
		add(out, csi_node(r, r->zones[i]));
	add(out, csi_driver(r));
	add(out, storage_class(r));
	return out;
}
