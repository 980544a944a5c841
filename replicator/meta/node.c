/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cluster id, leases, and the node records of chunk servers:
 * their JSON encoding and their keys in etcd (meta.h).
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

int qbd_meta_cluster_id(struct qbd_meta *m, bool create, uint64_t *id)
{
	for (int tries = 0; tries < 5; tries++) {
		struct kv kv;
		int r = meta_get(m, "/qbd/cluster", &kv);

		if (r == 0) {
			json_object *o = json_tokener_parse(kv.value), *s;
			r = -EPROTO;
			if (o && json_object_object_get_ex(o, "id", &s) &&
			    qbd_id_parse(json_object_get_string(s), id) == 0)
				r = 0;
			else
				qbd_err("meta", "/qbd/cluster: malformed value");
			json_object_put(o);
			free(kv.key);
			free(kv.value);
			return r;
		}
		if (r != -ENOENT || !create)
			return r;
		char val[64], hex[17];
		snprintf(val, sizeof val, "{\"id\":\"%s\"}", qbd_id_str(qbd_random_u64(), hex));
		json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
		json_object_array_add(cmp, meta_cmp_absent("/qbd/cluster"));
		json_object_array_add(suc, meta_op_put("/qbd/cluster", val, 0));
		r = meta_txn(m, cmp, suc, true);
		if (r < 0 && r != -EAGAIN)
			return r;
		/* created, or someone else did: read it back */
	}
	return -EAGAIN;
}

int qbd_meta_lease_grant(struct qbd_meta *m, int ttl, int64_t *lease)
{
	json_object *req = json_object_new_object(), *resp;
	int r;

	json_object_object_add(req, "TTL", json_object_new_int(ttl));
	r = meta_post(m, "/v3/lease/grant", req, true, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	r = meta_need(resp, "ID", "lease grant");
	if (r == 0)
		*lease = (int64_t)meta_jint(resp, "ID");
	json_object_put(resp);
	return r;
}

int qbd_meta_lease_keepalive(struct qbd_meta *m, int64_t lease)
{
	json_object *req = json_object_new_object(), *resp, *res;
	int r;

	json_object_object_add(req, "ID", json_object_new_int64(lease));
	r = meta_post(m, "/v3/lease/keepalive", req, true, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	r = meta_need(resp, "result", "lease keepalive");
	if (r == 0 && json_object_object_get_ex(resp, "result", &res) &&
	    meta_jint(res, "TTL") == 0)
		r = -ENOENT; /* expired: etcd leaves TTL out */
	json_object_put(resp);
	return r;
}

int qbd_meta_lease_revoke(struct qbd_meta *m, int64_t lease)
{
	json_object *req = json_object_new_object(), *resp;
	int r;

	json_object_object_add(req, "ID", json_object_new_int64(lease));
	r = meta_post(m, "/v3/lease/revoke", req, true, &resp);
	json_object_put(req);
	json_object_put(resp);
	/* resent: the lost attempt may have revoked it already */
	return r == -ENOENT && meta_resent(m) ? 0 : r;
}

char *meta_node_to_json(const struct qbd_node_info *n)
{
	json_object *o = json_object_new_object(), *sc, *io, *or;
	char hex[17];
	char *s;

	json_object_object_add(o, "id", json_object_new_string(qbd_id_str(n->id, hex)));
	json_object_object_add(o, "addr", json_object_new_string(n->addr));
	json_object_object_add(o, "zone", json_object_new_string(n->zone));
	json_object_object_add(o, "capacity", json_object_new_int64((int64_t)n->capacity));
	json_object_object_add(o, "used", json_object_new_int64((int64_t)n->used));
	json_object_object_add(o, "chunk_size", json_object_new_int64(n->chunk_size));
	json_object_object_add(o, "held", json_object_new_int64((int64_t)n->held));
	json_object_object_add(o, "slots", json_object_new_int64((int64_t)n->slots));
	json_object_object_add(o, "free_slots", json_object_new_int64((int64_t)n->free_slots));
	json_object_object_add(o, "seq", json_object_new_int64((int64_t)n->seq));
	json_object_object_add(o, "updated", json_object_new_int64((int64_t)n->updated));
	sc = json_object_new_object();
	json_object_object_add(sc, "rate", json_object_new_int64((int64_t)n->scrub.rate));
	json_object_object_add(sc, "bytes", json_object_new_int64((int64_t)n->scrub.bytes));
	json_object_object_add(sc, "chunks", json_object_new_int64((int64_t)n->scrub.chunks));
	json_object_object_add(sc, "passes", json_object_new_int64((int64_t)n->scrub.passes));
	json_object_object_add(sc, "bad_blocks", json_object_new_int64((int64_t)n->scrub.bad_blocks));
	json_object_object_add(sc, "errors", json_object_new_int64((int64_t)n->scrub.errors));
	json_object_object_add(o, "scrub", sc);
	io = json_object_new_object();
	json_object_object_add(io, "data_reads", json_object_new_int64((int64_t)n->io.data_reads));
	json_object_object_add(io, "data_read_bytes",
			       json_object_new_int64((int64_t)n->io.data_read_bytes));
	json_object_object_add(io, "data_writes", json_object_new_int64((int64_t)n->io.data_writes));
	json_object_object_add(io, "data_write_bytes",
			       json_object_new_int64((int64_t)n->io.data_write_bytes));
	json_object_object_add(io, "meta_writes", json_object_new_int64((int64_t)n->io.meta_writes));
	json_object_object_add(io, "zeroings", json_object_new_int64((int64_t)n->io.zeroings));
	json_object_object_add(io, "syncs", json_object_new_int64((int64_t)n->io.syncs));
	json_object_object_add(o, "io", io);
	or = json_object_new_object();
	json_object_object_add(or, "volumes", json_object_new_int64((int64_t)n->orphaned.volumes));
	json_object_object_add(or, "chunks", json_object_new_int64((int64_t)n->orphaned.chunks));
	json_object_object_add(or, "held", json_object_new_int64((int64_t)n->orphaned.held));
	json_object_object_add(or, "moved", json_object_new_int64((int64_t)n->orphaned.moved));
	json_object_object_add(or, "moved_held",
			       json_object_new_int64((int64_t)n->orphaned.moved_held));
	json_object_object_add(or, "found", json_object_new_int64((int64_t)n->orphaned.found));
	json_object_object_add(or, "reclaimed",
			       json_object_new_int64((int64_t)n->orphaned.reclaimed));
	json_object_object_add(or, "reclaimed_bytes",
			       json_object_new_int64((int64_t)n->orphaned.reclaimed_bytes));
	json_object_object_add(o, "orphaned", or);
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

int meta_jcopy(json_object *o, const char *key, char *dst, size_t len)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return -EPROTO;
	snprintf(dst, len, "%s", json_object_get_string(v));
	return 0;
}

int meta_node_from_json(const char *json, struct qbd_node_info *n)
{
	json_object *o = json_tokener_parse(json), *v;
	char hex[32];
	int r = -EPROTO;

	memset(n, 0, sizeof *n);
	if (!o)
		return -EPROTO;
	if (meta_jcopy(o, "id", hex, sizeof hex) || qbd_id_parse(hex, &n->id) ||
	    meta_jcopy(o, "addr", n->addr, sizeof n->addr) ||
	    meta_jcopy(o, "zone", n->zone, sizeof n->zone) ||
	    !json_object_object_get_ex(o, "capacity", &v))
		goto out;
	n->capacity = meta_jint(o, "capacity");
	n->used = meta_jint(o, "used");
	n->chunk_size = (uint32_t)meta_jint(o, "chunk_size");
	n->held = meta_jint(o, "held");
	n->slots = meta_jint(o, "slots");
	n->free_slots = meta_jint(o, "free_slots");
	n->seq = meta_jint(o, "seq");
	n->updated = meta_jint(o, "updated");
	if (json_object_object_get_ex(o, "scrub", &v) && json_object_is_type(v, json_type_object)) {
		n->scrub.rate = meta_jint(v, "rate");
		n->scrub.bytes = meta_jint(v, "bytes");
		n->scrub.chunks = meta_jint(v, "chunks");
		n->scrub.passes = meta_jint(v, "passes");
		n->scrub.bad_blocks = meta_jint(v, "bad_blocks");
		n->scrub.errors = meta_jint(v, "errors");
	}
	if (json_object_object_get_ex(o, "io", &v) && json_object_is_type(v, json_type_object)) {
		n->io.data_reads = meta_jint(v, "data_reads");
		n->io.data_read_bytes = meta_jint(v, "data_read_bytes");
		n->io.data_writes = meta_jint(v, "data_writes");
		n->io.data_write_bytes = meta_jint(v, "data_write_bytes");
		n->io.meta_writes = meta_jint(v, "meta_writes");
		n->io.zeroings = meta_jint(v, "zeroings");
		n->io.syncs = meta_jint(v, "syncs");
	}
	if (json_object_object_get_ex(o, "orphaned", &v) &&
	    json_object_is_type(v, json_type_object)) {
		n->orphaned.volumes = meta_jint(v, "volumes");
		n->orphaned.chunks = meta_jint(v, "chunks");
		n->orphaned.held = meta_jint(v, "held");
		n->orphaned.moved = meta_jint(v, "moved");
		n->orphaned.moved_held = meta_jint(v, "moved_held");
		n->orphaned.found = meta_jint(v, "found");
		n->orphaned.reclaimed = meta_jint(v, "reclaimed");
		n->orphaned.reclaimed_bytes = meta_jint(v, "reclaimed_bytes");
	}
	r = 0;
out:
	json_object_put(o);
	return r;
}

int qbd_meta_node_put(struct qbd_meta *m, const struct qbd_node_info *n)
{
	char key[64], hex[17];
	char *json = meta_node_to_json(n);
	int r;

	if (!json)
		return -ENOMEM;
	snprintf(key, sizeof key, "/qbd/nodes/%s", qbd_id_str(n->id, hex));
	r = meta_put(m, key, json, 0);
	free(json);
	return r;
}

int qbd_meta_node_register(struct qbd_meta *m, const struct qbd_node_info *n,
			   int64_t lease)
{
	char key[64], hex[17];
	int r = qbd_meta_node_put(m, n);

	if (r == 0) {
		snprintf(key, sizeof key, "/qbd/alive/%s", qbd_id_str(n->id, hex));
		r = meta_put(m, key, "1", lease);
	}
	return r;
}

int qbd_meta_node_get(struct qbd_meta *m, uint64_t id, struct qbd_node_info *out)
{
	char key[64], hex[17];
	struct kv kv;
	int r;

	snprintf(key, sizeof key, "/qbd/nodes/%s", qbd_id_str(id, hex));
	r = meta_get(m, key, &kv);
	if (r < 0)
		return r;
	r = meta_node_from_json(kv.value, out);
	if (r < 0)
		qbd_err("meta", "%s: malformed node record", key);
	free(kv.key);
	free(kv.value);
	if (r == 0) {
		snprintf(key, sizeof key, "/qbd/alive/%s", hex);
		r = meta_get(m, key, &kv);
		out->alive = r == 0;
		if (r == 0) {
			free(kv.key);
			free(kv.value);
		}
		r = r == -ENOENT ? 0 : r;
	}
	if (r == 0)
		r = qbd_meta_node_state_get(m, id, &out->state);
	return r;
}

/* ---- node states (an operator's: drain, remove) ---- */

#define NODE_STATE_PREFIX "/qbd/node-state/"

const char *qbd_meta_node_state_name(enum qbd_node_state state)
{
	switch (state) {
	case QBD_NODE_IN:
		return "in";
	case QBD_NODE_DRAINING:
		return "draining";
	case QBD_NODE_REMOVED:
		return "removed";
	}
	return "?";
}

int qbd_meta_node_state_parse(const char *text, enum qbd_node_state *state)
{
	for (int s = QBD_NODE_IN; s <= QBD_NODE_REMOVED; s++)
		if (strcmp(text, qbd_meta_node_state_name((enum qbd_node_state)s)) == 0) {
			*state = (enum qbd_node_state)s;
			return 0;
		}
	return -EINVAL;
}

/* A stored value: "draining" or "removed" ("in" is never stored). */
static int node_state_value(const char *key, const char *value, enum qbd_node_state *state)
{
	if (qbd_meta_node_state_parse(value, state) < 0 || *state == QBD_NODE_IN) {
		qbd_err("meta", "%s: '%.32s' is not a node state", key, value);
		return -EPROTO;
	}
	return 0;
}

int qbd_meta_node_state_set(struct qbd_meta *m, uint64_t id, enum qbd_node_state state)
{
	char key[64], hex[17];
	json_object *cmp, *suc;

	snprintf(key, sizeof key, NODE_STATE_PREFIX "%s", qbd_id_str(id, hex));
	if (state == QBD_NODE_DRAINING || state == QBD_NODE_REMOVED)
		return meta_put(m, key, qbd_meta_node_state_name(state), 0);
	if (state != QBD_NODE_IN)
		return -EINVAL;
	cmp = json_object_new_array();
	suc = json_object_new_array();
	json_object_array_add(suc, meta_op_delete(key));
	return meta_txn(m, cmp, suc, true);
}

int qbd_meta_node_state_get(struct qbd_meta *m, uint64_t id, enum qbd_node_state *state)
{
	char key[64], hex[17];
	struct kv kv;
	int r;

	*state = QBD_NODE_IN;
	snprintf(key, sizeof key, NODE_STATE_PREFIX "%s", qbd_id_str(id, hex));
	r = meta_get(m, key, &kv);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = node_state_value(key, kv.value, state);
	free(kv.key);
	free(kv.value);
	return r;
}

static int node_state_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct qbd_node_state_entry *)a)->id;
	uint64_t y = ((const struct qbd_node_state_entry *)b)->id;

	return x < y ? -1 : x > y;
}

int qbd_meta_node_state_list(struct qbd_meta *m, struct qbd_node_state_entry **out,
			     size_t *n)
{
	struct qbd_node_state_entry *e;
	struct kv *kvs;
	size_t nk, cnt = 0;
	int r = meta_range(m, NODE_STATE_PREFIX, true, &kvs, &nk);

	*out = NULL;
	*n = 0;
	if (r < 0)
		return r;
	if (nk == 0) {
		free(kvs);
		return 0;
	}
	if (!(e = calloc(nk, sizeof *e))) {
		meta_kvs_free(kvs, nk);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nk; i++) {
		const char *suffix = kvs[i].key + strlen(NODE_STATE_PREFIX);

		if (strlen(suffix) != 16 || qbd_id_parse(suffix, &e[cnt].id) < 0 ||
		    node_state_value(kvs[i].key, kvs[i].value, &e[cnt].state) < 0) {
			qbd_warn("meta", "%s: unreadable node state, skipped", kvs[i].key);
			continue;
		}
		cnt++;
	}
	meta_kvs_free(kvs, nk);
	qsort(e, cnt, sizeof *e, node_state_cmp);
	if (cnt == 0) {
		free(e);
		e = NULL;
	}
	*out = e;
	*n = cnt;
	return 0;
}

static int node_cmp(const void *a, const void *b)
{
	const struct qbd_node_info *x = a, *y = b;
	int c = strcmp(x->zone, y->zone);

	return c ? c : (x->id < y->id ? -1 : x->id > y->id);
}

int qbd_meta_node_list(struct qbd_meta *m, struct qbd_node_info **out, size_t *n)
{
	struct kv *kvs = NULL, *alive = NULL;
	struct qbd_node_state_entry *states = NULL;
	size_t nk = 0, na = 0, ns = 0, cnt = 0;
	struct qbd_node_info *nodes;
	int r;

	*out = NULL;
	*n = 0;
	r = meta_range(m, "/qbd/nodes/", true, &kvs, &nk);
	if (r == 0)
		r = meta_range(m, "/qbd/alive/", true, &alive, &na);
	if (r == 0)
		r = qbd_meta_node_state_list(m, &states, &ns);
	if (r < 0)
		goto out;
	nodes = calloc(nk ? nk : 1, sizeof *nodes);
	if (!nodes) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nk; i++) {
		if (meta_node_from_json(kvs[i].value, &nodes[cnt]) < 0) {
			qbd_warn("meta", "%s: malformed node record, skipped", kvs[i].key);
			continue;
		}
		char hex[17];
		qbd_id_str(nodes[cnt].id, hex);
		for (size_t j = 0; j < na; j++)
			if (strcmp(alive[j].key + strlen("/qbd/alive/"), hex) == 0)
				nodes[cnt].alive = true;
		for (size_t j = 0; j < ns; j++)
			if (states[j].id == nodes[cnt].id)
				nodes[cnt].state = states[j].state;
		cnt++;
	}
	qsort(nodes, cnt, sizeof *nodes, node_cmp);
	*out = nodes;
	*n = cnt;
out:
	meta_kvs_free(kvs, nk);
	meta_kvs_free(alive, na);
	free(states);
	return r;
}

