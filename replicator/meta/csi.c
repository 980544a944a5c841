/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI driver's records (meta.h, "The CSI driver's records"): which
 * node ControllerPublishVolume let attach a volume, and the node plugins
 * that registered themselves. The driver's own keys, under /qbd/csi/;
 * besides the driver only `qbd volume fence --node` reads them.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"

#define PUBLISH_PREFIX "/qbd/csi/publish/"
#define NODES_PREFIX "/qbd/csi/nodes/"

bool qbd_meta_csi_node_id_ok(const char *node)
{
	size_t n = strlen(node);

	if (n == 0 || n >= QBD_CSI_NODE_MAX)
		return false;
	for (const unsigned char *p = (const unsigned char *)node; *p; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

static int publish_from_json(const char *volume, const char *json, struct qbd_csi_publish *p)
{
	json_object *o = json_tokener_parse(json), *x;
	int r = -EPROTO;

	memset(p, 0, sizeof *p);
	snprintf(p->volume, sizeof p->volume, "%s", volume);
	if (!o || !json_object_is_type(o, json_type_object))
		goto out;
	if (meta_jcopy(o, "node", p->node, sizeof p->node) < 0 || !qbd_meta_csi_node_id_ok(p->node))
		goto out;
	if (json_object_object_get_ex(o, "readonly", &x))
		p->readonly = json_object_get_boolean(x);
	if (json_object_object_get_ex(o, "since", &x))
		p->since = (uint64_t)json_object_get_int64(x);
	r = 0;
out:
	json_object_put(o);
	return r;
}

int qbd_meta_csi_publish_get(struct qbd_meta *m, const char *volume,
			     struct qbd_csi_publish *out)
{
	char key[sizeof PUBLISH_PREFIX + QBD_NAME_MAX];
	struct kv kv;
	int r;

	if (!qbd_meta_volume_name_ok(volume))
		return -EINVAL;
	snprintf(key, sizeof key, PUBLISH_PREFIX "%s", volume);
	r = meta_get(m, key, &kv);
	if (r < 0)
		return r;
	r = publish_from_json(volume, kv.value, out);
	if (r < 0)
		qbd_warn("meta", "%s: unreadable publish record", key);
	free(kv.key);
	free(kv.value);
	return r;
}

int qbd_meta_csi_publish_put(struct qbd_meta *m, const struct qbd_csi_publish *p)
{
	char key[sizeof PUBLISH_PREFIX + QBD_NAME_MAX];
	json_object *o;
	int r;

	if (!qbd_meta_volume_name_ok(p->volume) || !qbd_meta_csi_node_id_ok(p->node))
		return -EINVAL;
	snprintf(key, sizeof key, PUBLISH_PREFIX "%s", p->volume);
	o = json_object_new_object();
	json_object_object_add(o, "node", json_object_new_string(p->node));
	json_object_object_add(o, "readonly", json_object_new_boolean(p->readonly));
	json_object_object_add(o, "since", json_object_new_int64((int64_t)p->since));
	r = meta_put(m, key, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), 0);
	json_object_put(o);
	return r;
}

/* One attempt: -ESTALE when the record changed between the read and
 * the delete. */
static int publish_delete_once(struct qbd_meta *m, const char *key, const char *volume,
			       const char *node)
{
	struct qbd_csi_publish p;
	json_object *cmp, *suc;
	struct kv kv;
	int r;

	r = meta_get(m, key, &kv);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	/* An unreadable record names no node: any unpublish removes it. */
	if (node && publish_from_json(volume, kv.value, &p) == 0 && strcmp(p.node, node) != 0)
		r = -EAGAIN;
	if (!r) {
		cmp = json_object_new_array();
		suc = json_object_new_array();
		json_object_array_add(cmp, meta_cmp_mod(key, kv.mod_revision));
		json_object_array_add(suc, meta_op_delete(key));
		r = meta_txn(m, cmp, suc, true);
		if (r == -EAGAIN)
			r = -ESTALE;
	}
	free(kv.key);
	free(kv.value);
	return r;
}

int qbd_meta_csi_publish_delete(struct qbd_meta *m, const char *volume, const char *node)
{
	char key[sizeof PUBLISH_PREFIX + QBD_NAME_MAX];
	int r = -ESTALE;

	if (!qbd_meta_volume_name_ok(volume))
		return -EINVAL;
	snprintf(key, sizeof key, PUBLISH_PREFIX "%s", volume);
	/* Changed meanwhile: read it again and decide again. */
	for (int i = 0; i < 10 && r == -ESTALE; i++)
		r = publish_delete_once(m, key, volume, node);
	return r == -ESTALE ? -EBUSY : r;
}

int qbd_meta_csi_publish_list(struct qbd_meta *m, struct qbd_csi_publish **out, size_t *n)
{
	struct kv *kvs = NULL;
	size_t nk = 0, k = 0;
	int r;

	*out = NULL;
	*n = 0;
	r = meta_range(m, PUBLISH_PREFIX, true, &kvs, &nk);
	if (r < 0)
		return r;
	if (nk) {
		*out = calloc(nk, sizeof **out);
		if (!*out) {
			meta_kvs_free(kvs, nk);
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < nk; i++) {
		const char *name = kvs[i].key + strlen(PUBLISH_PREFIX);

		if (!qbd_meta_volume_name_ok(name) ||
		    publish_from_json(name, kvs[i].value, &(*out)[k]) < 0) {
			qbd_warn("meta", "%s: unreadable publish record, skipped", kvs[i].key);
			continue;
		}
		k++;
	}
	*n = k;
	meta_kvs_free(kvs, nk);
	return 0;
}

int qbd_meta_csi_node_get(struct qbd_meta *m, const char *node, struct qbd_csi_node *out)
{
	char key[sizeof NODES_PREFIX + QBD_CSI_NODE_MAX];
	json_object *o, *x;
	struct kv kv;
	int r;

	if (!qbd_meta_csi_node_id_ok(node))
		return -EINVAL;
	memset(out, 0, sizeof *out);
	snprintf(out->node, sizeof out->node, "%s", node);
	snprintf(key, sizeof key, NODES_PREFIX "%s", node);
	r = meta_get(m, key, &kv);
	if (r < 0)
		return r;
	o = json_tokener_parse(kv.value);
	r = -EPROTO;
	if (o && json_object_is_type(o, json_type_object) &&
	    meta_jcopy(o, "zone", out->zone, sizeof out->zone) == 0) {
		if (json_object_object_get_ex(o, "since", &x))
			out->since = (uint64_t)json_object_get_int64(x);
		r = 0;
	} else {
		qbd_warn("meta", "%s: unreadable node registration", key);
	}
	json_object_put(o);
	free(kv.key);
	free(kv.value);
	return r;
}

int qbd_meta_csi_node_put(struct qbd_meta *m, const struct qbd_csi_node *n)
{
	char key[sizeof NODES_PREFIX + QBD_CSI_NODE_MAX];
	json_object *o;
	int r;

	if (!qbd_meta_csi_node_id_ok(n->node))
		return -EINVAL;
	snprintf(key, sizeof key, NODES_PREFIX "%s", n->node);
	o = json_object_new_object();
	json_object_object_add(o, "zone", json_object_new_string(n->zone));
	json_object_object_add(o, "since", json_object_new_int64((int64_t)n->since));
	r = meta_put(m, key, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), 0);
	json_object_put(o);
	return r;
}
