/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What qbd-managerd needs of etcd (meta.h, "The manager"): the leader's
 * key /qbd/manager, created only if absent under the candidate's lease;
 * one read of everything the manager decides from, at one revision and
 * never partial; and the down-out change request, written only while the
 * node is still not alive and the writer still leads.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define COMP "meta"

/* ---- the leader's key ---- */

static char *leader_to_json(const struct qbd_manager_leader *l)
{
	json_object *o = json_object_new_object();
	char *s;

	json_object_object_add(o, "host", json_object_new_string(l->host));
	json_object_object_add(o, "pid", json_object_new_int(l->pid));
	json_object_object_add(o, "since", json_object_new_int64((int64_t)l->since));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

static int leader_from_json(const char *json, struct qbd_manager_leader *l)
{
	json_object *o = json_tokener_parse(json), *v;
	int r = -EPROTO;

	memset(l, 0, sizeof *l);
	if (o && meta_jcopy(o, "host", l->host, sizeof l->host) == 0 &&
	    json_object_object_get_ex(o, "pid", &v)) {
		l->pid = (int)meta_jint(o, "pid");
		l->since = meta_jint(o, "since");
		r = 0;
	}
	json_object_put(o);
	return r;
}

/* Compare: key's create_revision == 0, i.e. the key does not exist. */
static json_object *cmp_create_zero(const char *key)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "key", meta_jstr_b64(key, strlen(key)));
	json_object_object_add(c, "result", json_object_new_string("EQUAL"));
	json_object_object_add(c, "target", json_object_new_string("CREATE"));
	json_object_object_add(c, "create_revision", json_object_new_int64(0));
	return c;
}

/* Compare: key is attached to lease (false when it is absent). */
static json_object *cmp_lease(const char *key, int64_t lease)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "key", meta_jstr_b64(key, strlen(key)));
	json_object_object_add(c, "result", json_object_new_string("EQUAL"));
	json_object_object_add(c, "target", json_object_new_string("LEASE"));
	json_object_object_add(c, "lease", json_object_new_int64(lease));
	return c;
}

int qbd_meta_manager_get(struct qbd_meta *m, struct qbd_manager_leader *out)
{
	json_object *req = json_object_new_object(), *resp, *kvs, *e, *v;
	char *val = NULL;
	size_t vl;
	int r;

	json_object_object_add(req, "key", meta_jstr_b64(QBD_MANAGER_KEY,
							 strlen(QBD_MANAGER_KEY)));
	r = meta_post(m, "/v3/kv/range", req, true, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	if ((r = meta_need(resp, "header", "manager key")) < 0)
		goto out;
	if (!json_object_object_get_ex(resp, "kvs", &kvs) ||
	    !json_object_is_type(kvs, json_type_array) || json_object_array_length(kvs) == 0) {
		r = -ENOENT;
		goto out;
	}
	e = json_object_array_get_idx(kvs, 0);
	if (json_object_object_get_ex(e, "value", &v))
		val = meta_b64_decode(json_object_get_string(v), &vl);
	if (!val || leader_from_json(val, out) < 0) {
		qbd_err(COMP, QBD_MANAGER_KEY ": malformed value");
		r = -EPROTO;
		goto out;
	}
	out->lease = (int64_t)meta_jint(e, "lease");
	out->create_revision = meta_jint(e, "create_revision");
	r = 0;
out:
	free(val);
	json_object_put(resp);
	return r;
}

int qbd_meta_manager_campaign(struct qbd_meta *m, struct qbd_manager_leader *me)
{
	char *json = leader_to_json(me);
	json_object *cmp, *suc;
	struct qbd_manager_leader there;
	uint64_t rev = 0;
	int r;

	if (!json)
		return -ENOMEM;
	cmp = json_object_new_array();
	suc = json_object_new_array();
	json_object_array_add(cmp, cmp_create_zero(QBD_MANAGER_KEY));
	json_object_array_add(suc, meta_op_put(QBD_MANAGER_KEY, json, me->lease));
	r = meta_txn_rev(m, cmp, suc, true, &rev);
	free(json);
	if (r == 0) {
		me->create_revision = rev;
		return 0;
	}
	if (r != -EAGAIN)
		return r;
	/* Someone holds it: us, if a resent attempt created it. */
	r = qbd_meta_manager_get(m, &there);
	if (r == -ENOENT)
		return -EAGAIN; /* gone meanwhile: try again */
	if (r < 0)
		return r;
	if (there.lease == me->lease) {
		me->create_revision = there.create_revision;
		return 0;
	}
	return -EBUSY;
}

/* ---- the manager's view of the cluster ---- */

enum { VIEW_NODES, VIEW_ALIVE, VIEW_STATES, VIEW_VOLUMES, VIEW_CHANGES, VIEW_ATTACH,
       VIEW_N };
static const char *const view_keys[VIEW_N] = {
	"/qbd/nodes/", "/qbd/alive/", "/qbd/node-state/", "/qbd/volumes/", "/qbd/changes/",
	"/qbd/attachments/",
};

static json_object *view_range_op(const char *prefix, bool keys_only)
{
	json_object *r = json_object_new_object(), *op = json_object_new_object();
	size_t kl = strlen(prefix);
	char end[64];

	snprintf(end, sizeof end, "%s", prefix);
	end[kl - 1]++;
	json_object_object_add(r, "key", meta_jstr_b64(prefix, kl));
	json_object_object_add(r, "range_end", meta_jstr_b64(end, kl));
	if (keys_only)
		json_object_object_add(r, "keys_only", json_object_new_boolean(true));
	json_object_object_add(op, "requestRange", r);
	return op;
}

/* The id a key names after its prefix: 0 or -EPROTO. */
static int view_key_id(const char *key, const char *prefix, uint64_t *id)
{
	const char *suffix = key + strlen(prefix);

	if (strncmp(key, prefix, strlen(prefix)) != 0 || strlen(suffix) != 16)
		return -EPROTO;
	return qbd_id_parse(suffix, id) < 0 ? -EPROTO : 0;
}

static struct qbd_node_info *view_node(struct qbd_meta_cluster_view *v, uint64_t id)
{
	for (size_t i = 0; i < v->nn; i++)
		if (v->nodes[i].id == id)
			return &v->nodes[i];
	return NULL;
}

/* One entry of range `which` into the view; -EPROTO when unreadable. */
static int view_entry(struct qbd_meta_cluster_view *v, int which, const char *key,
		      const char *value, uint64_t mod_revision)
{
	struct qbd_node_info *n;
	enum qbd_node_state st;
	uint64_t id;

	switch (which) {
	case VIEW_NODES:
		if (meta_node_from_json(value, &v->nodes[v->nn]) < 0 ||
		    view_key_id(key, view_keys[which], &id) < 0 || id != v->nodes[v->nn].id)
			return -EPROTO;
		v->nn++;
		return 0;
	case VIEW_ALIVE:
		if (view_key_id(key, view_keys[which], &id) < 0)
			return -EPROTO;
		if ((n = view_node(v, id)))
			n->alive = true;
		return 0;
	case VIEW_STATES:
		if (view_key_id(key, view_keys[which], &id) < 0 ||
		    qbd_meta_node_state_parse(value, &st) < 0 || st == QBD_NODE_IN)
			return -EPROTO;
		if ((n = view_node(v, id)))
			n->state = st;
		return 0;
	case VIEW_VOLUMES:
		if (meta_volume_from_json(value, &v->vols[v->nv]) < 0)
			return -EPROTO;
		v->vols[v->nv++].mod_revision = mod_revision;
		return 0;
	case VIEW_CHANGES:
		if (view_key_id(key, view_keys[which], &id) < 0 ||
		    meta_change_request_from_json(value, id, &v->changes[v->nc]) < 0)
			return -EPROTO;
		v->changes[v->nc++].mod_revision = mod_revision;
		return 0;
	case VIEW_ATTACH:
		if (view_key_id(key, view_keys[which], &id) < 0)
			return -EPROTO;
		v->attached[v->na++] = id;
		return 0;
	}
	return -EPROTO;
}

/* Room for len entries of range `which`. */
static int view_alloc(struct qbd_meta_cluster_view *v, int which, size_t len)
{
	size_t k = len ? len : 1;

	switch (which) {
	case VIEW_NODES:
		return (v->nodes = calloc(k, sizeof *v->nodes)) ? 0 : -ENOMEM;
	case VIEW_VOLUMES:
		return (v->vols = calloc(k, sizeof *v->vols)) ? 0 : -ENOMEM;
	case VIEW_CHANGES:
		return (v->changes = calloc(k, sizeof *v->changes)) ? 0 : -ENOMEM;
	case VIEW_ATTACH:
		return (v->attached = calloc(k, sizeof *v->attached)) ? 0 : -ENOMEM;
	}
	return 0;
}

/* One range's answer, whole ("more" unset, "count" the entries given)
 * and every entry readable. */
static int view_range(struct qbd_meta_cluster_view *v, int which, json_object *rr)
{
	json_object *kvs = NULL, *more;
	size_t len = 0;
	int r;

	if (!json_object_is_type(rr, json_type_object))
		return -EPROTO;
	if (json_object_object_get_ex(rr, "more", &more) && json_object_get_boolean(more)) {
		qbd_err(COMP, "cluster view: %s: etcd left entries out", view_keys[which]);
		return -EPROTO;
	}
	if (json_object_object_get_ex(rr, "kvs", &kvs)) {
		if (!json_object_is_type(kvs, json_type_array))
			return -EPROTO;
		len = json_object_array_length(kvs);
	}
	if (meta_jint(rr, "count") != len) {
		qbd_err(COMP, "cluster view: %s: %zu entries of %" PRIu64, view_keys[which], len,
			meta_jint(rr, "count"));
		return -EPROTO;
	}
	if ((r = view_alloc(v, which, len)) < 0)
		return r;
	for (size_t i = 0; i < len; i++) {
		json_object *e = json_object_array_get_idx(kvs, i), *k, *val;
		char *key = NULL, *value = NULL;
		size_t kl, vl;

		r = -EPROTO;
		if (json_object_object_get_ex(e, "key", &k))
			key = meta_b64_decode(json_object_get_string(k), &kl);
		if (json_object_object_get_ex(e, "value", &val))
			value = meta_b64_decode(json_object_get_string(val), &vl);
		else
			value = strdup("");
		if (key && value)
			r = view_entry(v, which, key, value, meta_jint(e, "mod_revision"));
		if (r == -EPROTO)
			qbd_err(COMP, "cluster view: %s: unreadable entry %.80s", view_keys[which],
				key ? key : "(no key)");
		free(key);
		free(value);
		if (r < 0)
			return r;
	}
	return 0;
}

void qbd_meta_cluster_view_free(struct qbd_meta_cluster_view *v)
{
	free(v->nodes);
	free(v->vols);
	free(v->changes);
	free(v->attached);
	memset(v, 0, sizeof *v);
}

int qbd_meta_cluster_view(struct qbd_meta *m, struct qbd_meta_cluster_view *out)
{
	json_object *req = json_object_new_object(), *suc = json_object_new_array();
	json_object *resp = NULL, *hdr, *arr;
	int r;

	memset(out, 0, sizeof *out);
	for (int i = 0; i < VIEW_N; i++)
		json_object_array_add(suc, view_range_op(view_keys[i], i == VIEW_ALIVE ||
							 i == VIEW_ATTACH));
	json_object_object_add(req, "compare", json_object_new_array());
	json_object_object_add(req, "success", suc);
	r = meta_post(m, "/v3/kv/txn", req, true, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	r = -EPROTO;
	if (!json_object_object_get_ex(resp, "header", &hdr) ||
	    (out->revision = meta_jint(hdr, "revision")) == 0 ||
	    !json_object_object_get_ex(resp, "responses", &arr) ||
	    !json_object_is_type(arr, json_type_array) ||
	    json_object_array_length(arr) != VIEW_N) {
		qbd_err(COMP, "cluster view: etcd's answer lacks its revision or a range");
		goto fail;
	}
	/* Nodes first: the alive and state ranges mark them. */
	for (int i = 0; i < VIEW_N; i++) {
		json_object *rr;

		if (!json_object_object_get_ex(json_object_array_get_idx(arr, i),
					       "response_range", &rr)) {
			qbd_err(COMP, "cluster view: no answer for %s", view_keys[i]);
			goto fail;
		}
		if ((r = view_range(out, i, rr)) < 0)
			goto fail;
	}
	json_object_put(resp);
	return 0;
fail:
	json_object_put(resp);
	qbd_meta_cluster_view_free(out);
	return r;
}

/* ---- the down-out request ---- */

int qbd_meta_manager_request(struct qbd_meta *m, struct qbd_change_request *req,
			     int64_t lease)
{
	char key[64], alive[64], hex[17];
	json_object *cmp, *suc;
	uint64_t rev = 0;
	char *json;
	int r;

	if (req->kind != QBD_CHANGE_KIND_REPLACE || req->from == 0 || req->to == req->from ||
	    req->reason == QBD_REASON_NONE)
		return -EINVAL;
	if (!(json = meta_change_request_to_json(req)))
		return -ENOMEM;
	snprintf(key, sizeof key, "/qbd/changes/%s", qbd_id_str(req->volume_id, hex));
	snprintf(alive, sizeof alive, "/qbd/alive/%s", qbd_id_str(req->from, hex));
	cmp = json_object_new_array();
	suc = json_object_new_array();
	json_object_array_add(cmp, meta_cmp_absent(key));
	json_object_array_add(cmp, meta_cmp_absent(alive));
	json_object_array_add(cmp, cmp_lease(QBD_MANAGER_KEY, lease));
	json_object_array_add(suc, meta_op_put(key, json, 0));
	r = meta_txn_rev(m, cmp, suc, true, &rev);
	free(json);
	if (r == 0) {
		req->mod_revision = rev;
		return 0;
	}
	if (r != -EAGAIN)
		return r;
	/* Which compare failed: a request there (maybe ours, resent) is
	 * -EEXIST; otherwise the node is back or we no longer lead. */
	{
		struct qbd_change_request cur;

		r = qbd_meta_change_get(m, req->volume_id, &cur);
		if (r == 0) {
			if (meta_resent(m) && cur.from == req->from && cur.reason == req->reason &&
			    cur.created == req->created) {
				req->mod_revision = cur.mod_revision;
				return 0;
			}
			return -EEXIST;
		}
	}
	return -EAGAIN;
}
