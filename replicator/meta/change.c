/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Membership changes in etcd: the words of a volume record's "change"
 * (phase, reason), and the change requests under /qbd/changes/ that the
 * CLI and the manager write and a volume's writer (or the manager)
 * carries out (meta.h; docs/protocol.md section 11).
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

#define CHANGES_PREFIX "/qbd/changes/"

/* ---- words ---- */

static const char *const phase_names[] = {
	[QBD_CHANGE_NONE] = "none",
	[QBD_CHANGE_LEARNER] = "learner",
	[QBD_CHANGE_JOINT] = "joint",
};

static const char *const reason_names[] = {
	[QBD_REASON_NONE] = "",
	[QBD_REASON_REMOVE] = "remove",
	[QBD_REASON_DRAIN] = "drain",
	[QBD_REASON_MOVE] = "move",
	[QBD_REASON_DOWN_OUT] = "down-out",
};

const char *qbd_meta_change_phase_name(enum qbd_change_phase phase)
{
	return (unsigned)phase < QBD_ARRAY_SIZE(phase_names) ? phase_names[phase] : "?";
}

int qbd_meta_change_phase_parse(const char *text, enum qbd_change_phase *phase)
{
	for (unsigned i = QBD_CHANGE_LEARNER; i < QBD_ARRAY_SIZE(phase_names); i++)
		if (strcmp(text, phase_names[i]) == 0) {
			*phase = (enum qbd_change_phase)i;
			return 0;
		}
	return -EINVAL;
}

const char *qbd_meta_change_reason_name(enum qbd_change_reason reason)
{
	return (unsigned)reason < QBD_ARRAY_SIZE(reason_names) ? reason_names[reason] : "?";
}

int qbd_meta_change_reason_parse(const char *text, enum qbd_change_reason *reason)
{
	for (unsigned i = QBD_REASON_REMOVE; i < QBD_ARRAY_SIZE(reason_names); i++)
		if (strcmp(text, reason_names[i]) == 0) {
			*reason = (enum qbd_change_reason)i;
			return 0;
		}
	return -EINVAL;
}

/* ---- change requests ---- */

char *meta_change_request_to_json(const struct qbd_change_request *c)
{
	json_object *o = json_object_new_object();
	char hex[17];
	char *s;

	json_object_object_add(o, "kind", json_object_new_string("replace"));
	json_object_object_add(o, "from", json_object_new_string(qbd_id_str(c->from, hex)));
	json_object_object_add(o, "to", json_object_new_string(c->to ? qbd_id_str(c->to, hex)
								      : ""));
	json_object_object_add(o, "reason",
			       json_object_new_string(qbd_meta_change_reason_name(c->reason)));
	json_object_object_add(o, "created", json_object_new_int64((int64_t)c->created));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

int meta_change_request_from_json(const char *json, uint64_t volume_id,
				  struct qbd_change_request *c)
{
	json_object *o = json_tokener_parse(json);
	char word[32], hex[32];
	int r = -EPROTO;

	memset(c, 0, sizeof *c);
	c->volume_id = volume_id;
	if (!o)
		return -EPROTO;
	if (!json_object_is_type(o, json_type_object) ||
	    meta_jcopy(o, "kind", word, sizeof word) || strcmp(word, "replace") != 0 ||
	    meta_jcopy(o, "from", hex, sizeof hex) || qbd_id_parse(hex, &c->from) ||
	    c->from == 0 || meta_jcopy(o, "to", hex, sizeof hex) ||
	    (hex[0] && (qbd_id_parse(hex, &c->to) || c->to == 0 || c->to == c->from)) ||
	    meta_jcopy(o, "reason", word, sizeof word) ||
	    qbd_meta_change_reason_parse(word, &c->reason))
		goto out;
	c->kind = QBD_CHANGE_KIND_REPLACE;
	c->created = meta_jint(o, "created");
	r = 0;
out:
	json_object_put(o);
	if (r < 0) {
		memset(c, 0, sizeof *c);
		c->volume_id = volume_id;
	}
	return r;
}

static void change_key(uint64_t volume_id, char *key, size_t len)
{
	char hex[17];

	snprintf(key, len, CHANGES_PREFIX "%s", qbd_id_str(volume_id, hex));
}

int qbd_meta_change_get(struct qbd_meta *m, uint64_t volume_id,
			struct qbd_change_request *out)
{
	char key[64];
	struct kv kv;
	int r;

	change_key(volume_id, key, sizeof key);
	r = meta_get(m, key, &kv);
	if (r < 0)
		return r;
	r = meta_change_request_from_json(kv.value, volume_id, out);
	if (r < 0)
		qbd_err("meta", "%s: malformed change request: %.200s", key, kv.value);
	out->mod_revision = kv.mod_revision;
	free(kv.key);
	free(kv.value);
	return r;
}

int qbd_meta_change_put(struct qbd_meta *m, struct qbd_change_request *req)
{
	struct qbd_change_request cur;
	json_object *cmp, *suc;
	uint64_t rev = 0;
	char key[64];
	char *json;
	int r;

	if (req->kind != QBD_CHANGE_KIND_REPLACE || req->from == 0 ||
	    req->to == req->from || req->reason == QBD_REASON_NONE ||
	    (unsigned)req->reason >= QBD_ARRAY_SIZE(reason_names)) {
		qbd_err("meta", "change request for volume %016" PRIx64 ": invalid",
			req->volume_id);
		return -EINVAL;
	}
	if (!(json = meta_change_request_to_json(req)))
		return -ENOMEM;
	change_key(req->volume_id, key, sizeof key);
	cmp = json_object_new_array();
	suc = json_object_new_array();
	json_object_array_add(cmp, meta_cmp_absent(key));
	json_object_array_add(suc, meta_op_put(key, json, 0));
	r = meta_txn_rev(m, cmp, suc, true, &rev);
	if (r == 0) {
		req->mod_revision = rev;
	} else if (r == -EAGAIN) {
		r = -EEXIST;
		/* Resent after a lost answer: the request there may be ours
		 * (same text, created in the same second: the same request). */
		if (meta_resent(m) && qbd_meta_change_get(m, req->volume_id, &cur) == 0) {
			char *there = meta_change_request_to_json(&cur);

			if (there && strcmp(there, json) == 0) {
				req->mod_revision = cur.mod_revision;
				r = 0;
			}
			free(there);
		}
	}
	free(json);
	return r;
}

int qbd_meta_change_delete(struct qbd_meta *m, const struct qbd_change_request *read)
{
	char key[64];
	struct kv kv;
	int r;

	change_key(read->volume_id, key, sizeof key);
	json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
	json_object_array_add(cmp, meta_cmp_mod(key, read->mod_revision));
	json_object_array_add(suc, meta_op_delete(key));
	r = meta_txn(m, cmp, suc, true);
	if (r != -EAGAIN)
		return r;
	r = meta_get(m, key, &kv);
	if (r == -ENOENT)
		/* gone: by us if the answer came after a resend */
		return meta_resent(m) ? 0 : -ENOENT;
	if (r < 0)
		return r;
	free(kv.key);
	free(kv.value);
	return -EAGAIN;
}

static int change_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct qbd_change_request *)a)->volume_id;
	uint64_t y = ((const struct qbd_change_request *)b)->volume_id;

	return x < y ? -1 : x > y;
}

int qbd_meta_change_list(struct qbd_meta *m, struct qbd_change_request **out,
			 size_t *n)
{
	struct qbd_change_request *reqs;
	struct kv *kvs;
	size_t nk, cnt = 0;
	int r = meta_range(m, CHANGES_PREFIX, true, &kvs, &nk);

	*out = NULL;
	*n = 0;
	if (r < 0)
		return r;
	if (nk == 0) {
		free(kvs);
		return 0;
	}
	reqs = calloc(nk, sizeof *reqs);
	if (!reqs) {
		meta_kvs_free(kvs, nk);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nk; i++) {
		const char *suffix = kvs[i].key + strlen(CHANGES_PREFIX);
		uint64_t id;

		if (strncmp(kvs[i].key, CHANGES_PREFIX, strlen(CHANGES_PREFIX)) != 0 ||
		    strlen(suffix) != 16 || qbd_id_parse(suffix, &id) < 0 ||
		    meta_change_request_from_json(kvs[i].value, id, &reqs[cnt]) < 0) {
			qbd_warn("meta", "%s: malformed change request, skipped", kvs[i].key);
			continue;
		}
		reqs[cnt++].mod_revision = kvs[i].mod_revision;
	}
	meta_kvs_free(kvs, nk);
	qsort(reqs, cnt, sizeof *reqs, change_cmp);
	if (cnt == 0) {
		free(reqs);
		reqs = NULL;
	}
	*out = reqs;
	*n = cnt;
	return 0;
}
