/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-operator (docs/kubernetes.md, docs/design.md "The operator"): one
 * QbdCluster reconciled into the objects of deploy/kubernetes/reference/,
 * healing through the qbd CLI. One concern per file:
 *   json.c       building and reading json-c objects
 *   render.c     the objects a QbdCluster's spec asks for (no I/O)
 *   reconcile.c  the pure step: (QbdCluster, observed objects, now) -> plan
 *   kube.c       the API server's REST API over libcurl (list, watch,
 *                create, update, delete)
 *   apply.c      carrying out a plan: API calls, qbd commands, events,
 *                the status
 *   lease.c      leader election through a coordination.k8s.io Lease
 *   operator-main.c  options, --render, watches, the loop, SIGTERM
 */
#ifndef QBD_OPERATOR_INTERNAL_H
#define QBD_OPERATOR_INTERNAL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

#define OP_COMP "operator"

#define OP_GROUP_VERSION "qbd.io/v1alpha1"
#define OP_KIND "QbdCluster"
/* On every object the operator renders. */
#define OP_LABEL_MANAGED_BY "app.kubernetes.io/managed-by"
#define OP_MANAGED_BY "qbd-operator"
#define OP_LABEL_CLUSTER "qbd.io/cluster"
/* On the cluster-scoped ones (CSIDriver, StorageClass), which cannot
 * carry an owner reference to a namespaced QbdCluster. */
#define OP_LABEL_NAMESPACE "qbd.io/namespace"
/* The hash of the rendered object: an update is decided by comparing it,
 * never by diffing objects the API server has defaulted. */
#define OP_ANN_HASH "qbd.io/spec-hash"
/* On a chunk server DaemonSet's pod template: the hash of its pod spec. */
#define OP_ANN_TEMPLATE "qbd.io/template-hash"
#define OP_LABEL_ZONE "topology.kubernetes.io/zone"
#define OP_TAINT_OUT_OF_SERVICE "node.kubernetes.io/out-of-service"
/* Where the pods (and the operator) find the cluster secret. */
#define OP_SECRET_DIR "/etc/qbd-secret"
#define OP_SECRET_PATH OP_SECRET_DIR "/secret"
#define OP_ETCD_TLS_DIR "/etc/qbd-etcd-tls"

/* ---- json.c ---- */

/* Builders that take ownership of their json_object arguments.
 * jobj("k1", v1, "k2", v2, ..., NULL): a NULL value skips its key.
 * jarr(v1, v2, ..., JEND): NULL elements are skipped. */
#define JEND ((json_object *)1)
json_object *jobj(const char *key, ...);
json_object *jarr(json_object *first, ...);
json_object *js(const char *s);
json_object *jsf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
json_object *ji(long long v);
json_object *jb(bool v);
/* The value at a dotted path ("metadata.name"; no escaping: keys with dots
 * are looked up with jget_key), or NULL. */
json_object *jget(json_object *o, const char *path);
json_object *jget_key(json_object *o, const char *key);
/* The string at path, or NULL if absent or not a string. */
const char *jstr(json_object *o, const char *path);
long long jint(json_object *o, const char *path, long long dflt);
size_t jlen(json_object *arr);
json_object *jat(json_object *arr, size_t i);
/* A string array's membership. */
bool jarr_has_str(json_object *arr, const char *s);
/* 16 hex digits of the hash of o's JSON text. */
void jhash(json_object *o, char out[17]);

/* ---- render.c ---- */

struct op_storage_node {
	const char *name;       /* the Node's */
	const char *zone;
	json_object *stores;    /* [{path, size}] (borrowed) */
	/* A DaemonSet of its own: stores of its own, or named in
	 * spec.storage.nodes without matching spec.storage.nodeSelector. */
	bool own_ds;
	const char *ip;         /* InternalIP, or NULL */
	bool ready;             /* the Node's Ready condition */
};

struct op_render {
	json_object *cluster;   /* the QbdCluster (borrowed) */
	const char *ns, *name, *uid;
	/* Storage nodes, by zone then name. */
	struct op_storage_node *sn;
	size_t nsn;
	/* Zones with a node that may run pods (the CSI node plugin), sorted. */
	const char **zones;
	size_t nzones;
	/* Managed etcd's zones (spec, else the remembered, else the storage
	 * nodes'), or none for an external etcd. */
	const char **etcd_zones;
	size_t netcd;
};

/* A name for a zone in object names: lower case, [a-z0-9-]. */
void op_dns_label(const char *in, char *out, size_t outlen);
/* The etcd endpoints the cluster's processes use, comma-separated. */
char *op_etcd_endpoints(const struct op_render *r);
/* The objects, in creation order, each complete with metadata (labels,
 * owner reference, hash annotation). An array; the caller frees it. */
json_object *op_render_objects(const struct op_render *r);
/* A spec value with the CRD's default applied. */
const char *op_spec_str(json_object *cluster, const char *path, const char *dflt);

/* ---- reconcile.c ---- */

enum op_verb { OP_CREATE, OP_UPDATE, OP_DELETE };

struct op_action {
	enum op_verb verb;
	const char *api_version, *kind, *ns, *name;   /* point into body */
	json_object *body;      /* create/update: the object; delete: the observed one */
	/* Only if `qbd status` says the cluster is healthy (exit 0) just
	 * before: a chunk server's restart. */
	bool when_healthy;
};

enum op_qbd_kind { OP_FENCE_NODE, OP_REMOVE_NODE };

struct op_qbd {
	enum op_qbd_kind kind;
	char *arg;              /* fence: the Node's name; remove: HOST:PORT */
	char *node;             /* the Node's name */
};

struct op_event {
	char type[16];          /* Normal, Warning */
	char reason[64];
	char *message;
};

struct op_plan {
	struct op_action *acts;
	size_t nacts;
	struct op_qbd *qbd;
	size_t nqbd;
	struct op_event *events;
	size_t nevents;
	/* The status to write (NULL: none, e.g. the resource is gone), and
	 * whether it differs from the one observed. */
	json_object *status;
	bool status_changed;
	json_object *old_status;        /* the observed one (a reference) */
	/* The qbd CLI's --etcd for the qbd actions. */
	char *etcd;
};

struct op_observed {
	json_object *nodes;     /* array of Node */
	json_object *owned;     /* array: the objects of the kinds it renders */
	json_object *pods;      /* array of Pod (readiness) */
	json_object *secrets;   /* array of the names of the Secrets that exist */
};

/* The step: cluster (NULL when absent) and what was observed, "now" as
 * RFC 3339 for lastTransitionTime. 0, or -EINVAL (no plan). */
int op_reconcile(json_object *cluster, const struct op_observed *obs, const char *now,
		 struct op_plan *plan);
/* A qbd action failed: the status must not record it as done (the next
 * loop retries it). */
void op_plan_qbd_failed(struct op_plan *plan, size_t i);
void op_plan_free(struct op_plan *plan);
/* The Secrets the spec names (for the observer to look up): 0 to 2. */
size_t op_secret_names(json_object *cluster, const char *names[2]);

/* ---- kube.c ---- */

struct kube;

struct kube_conf {
	const char *api;        /* https://HOST:PORT */
	const char *token_file; /* read at every request (tokens rotate) */
	const char *ca_file;
};

int kube_open(const struct kube_conf *c, struct kube **out, char *err, size_t errlen);
void kube_close(struct kube *k);
/* One request; body may be NULL. *status: the HTTP status (0 when it
 * never came); *out: the response's JSON (NULL if none). 0, or -errno
 * for a transport failure (the message in k's last error). */
int kube_request(struct kube *k, const char *method, const char *path, json_object *body,
		 long *status, json_object **out);
const char *kube_error(struct kube *k);
/* Watch path from resourceVersion rv: each event ({type, object}) to fn
 * until the server ends the stream, *stop turns true, or fn returns
 * nonzero. 0 (ended), -ESTALE (410 Gone: relist), or -errno. */
int kube_watch(struct kube *k, const char *path, const char *rv,
	       int (*fn)(json_object *ev, void *arg), void *arg, volatile int *stop);
/* "/apis/apps/v1/namespaces/NS/daemonsets[/NAME]" for (apiVersion, kind);
 * ns NULL for cluster-scoped kinds. -EINVAL for a kind it does not know. */
int kube_path(const char *api_version, const char *kind, const char *ns, const char *name,
	      char *out, size_t outlen);

/* ---- apply.c ---- */

struct op_apply_conf {
	const char *qbd;                /* the qbd CLI */
	const char *secret_file;        /* passed when readable */
};

/* Carry out the plan; the status last. 0, -EIO if anything failed
 * (logged; the next loop decides again), -EAGAIN if a restart waits for
 * qbd to be healthy (the next loop soon). */
int op_apply(struct kube *k, const struct op_apply_conf *c, json_object *cluster,
	     struct op_plan *p);
void op_post_event(struct kube *k, json_object *cluster, const char *type, const char *reason,
		   const char *message);

/* ---- lease.c ---- */

struct op_lease {
	char ns[256], name[128], identity[256];
	int duration_s;
	double renewed_at;      /* monotonic s of the last write that won; 0 none */
	/* the record as last seen, and when it was first seen so */
	char seen_holder[256], seen_renew[64];
	double seen_at;
};

void op_lease_init(struct op_lease *l, const char *ns, const char *name, const char *identity,
		   int duration_s);
/* Acquire or renew: 1 this process holds the Lease, 0 another does (or
 * won the race), -EIO the API server did not answer. */
int op_lease_try(struct kube *k, struct op_lease *l);
/* Renewed recently enough to act (two thirds of the duration). */
bool op_lease_held(const struct op_lease *l);
/* Give it up at a clean stop, so that another candidate takes over at once. */
void op_lease_release(struct kube *k, struct op_lease *l);

#endif
