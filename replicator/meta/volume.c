/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Volume records (create, get, list, delete), the reclaim scan of a
 * chunk server (which volumes exist, which nodes each one's
 * configuration lists), clean marks and epochs.
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

/* ---- volumes ---- */

bool qbd_meta_volume_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n >= QBD_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

char *meta_volume_to_json(const struct qbd_volume_info *v)
{
	json_object *o = json_object_new_object(), *arr = json_object_new_array();
	char hex[17];
	char *s;

	json_object_object_add(o, "name", json_object_new_string(v->name));
	json_object_object_add(o, "id", json_object_new_string(qbd_id_str(v->id, hex)));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)v->size));
	json_object_object_add(o, "chunk_size", json_object_new_int64(v->chunk_size));
	json_object_object_add(o, "replicas", json_object_new_int((int)v->replicas));
	json_object_object_add(o, "write_quorum", json_object_new_int((int)v->write_quorum));
	for (unsigned i = 0; i < v->replicas; i++)
		json_object_array_add(arr, json_object_new_string(qbd_id_str(v->nodes[i], hex)));
	json_object_object_add(o, "nodes", arr);
	json_object_object_add(o, "cfg", json_object_new_int64((int64_t)(v->cfg ? v->cfg : 1)));
	if (v->change.phase != QBD_CHANGE_NONE)
		json_object_object_add(o, "change", meta_change_to_jobj(&v->change));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

/* The "change" member of a volume record. */
json_object *meta_change_to_jobj(const struct qbd_volume_change *c)
{
	json_object *o = json_object_new_object();
	char hex[17];

	json_object_object_add(o, "phase",
			       json_object_new_string(qbd_meta_change_phase_name(c->phase)));
	json_object_object_add(o, "slot", json_object_new_int((int)c->slot));
	json_object_object_add(o, "node", json_object_new_string(qbd_id_str(c->node, hex)));
	json_object_object_add(o, "reason",
			       json_object_new_string(qbd_meta_change_reason_name(c->reason)));
	json_object_object_add(o, "started", json_object_new_int64((int64_t)c->started));
	return o;
}

/* Parse the "change" member into v->change; v's replicas and nodes are
 * read already. -EPROTO unless the phase and reason are known words, the
 * slot one of v's and the node an id that is not a member. */
int meta_change_from_jobj(json_object *o, struct qbd_volume_info *v)
{
	struct qbd_volume_change *c = &v->change;
	char word[32], hex[32];

	if (!json_object_is_type(o, json_type_object) ||
	    meta_jcopy(o, "phase", word, sizeof word) ||
	    qbd_meta_change_phase_parse(word, &c->phase) ||
	    meta_jcopy(o, "reason", word, sizeof word) ||
	    qbd_meta_change_reason_parse(word, &c->reason) || c->reason == QBD_REASON_NONE ||
	    meta_jcopy(o, "node", hex, sizeof hex) || qbd_id_parse(hex, &c->node) ||
	    c->node == 0 || !json_object_object_get_ex(o, "slot", NULL))
		goto bad;
	c->slot = (unsigned)meta_jint(o, "slot");
	c->started = meta_jint(o, "started");
	if (c->slot >= v->replicas)
		goto bad;
	for (unsigned i = 0; i < v->replicas; i++)
		if (v->nodes[i] == c->node)
			goto bad;
	return 0;
bad:
	memset(c, 0, sizeof *c);
	return -EPROTO;
}

int meta_volume_from_json(const char *json, struct qbd_volume_info *v)
{
	json_object *o = json_tokener_parse(json), *arr, *chg;
	char hex[32];
	int r = -EPROTO;

	memset(v, 0, sizeof *v);
	if (!o)
		return -EPROTO;
	if (meta_jcopy(o, "name", v->name, sizeof v->name) ||
	    meta_jcopy(o, "id", hex, sizeof hex) || qbd_id_parse(hex, &v->id) ||
	    !json_object_object_get_ex(o, "nodes", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		goto out;
	v->size = meta_jint(o, "size");
	v->chunk_size = (uint32_t)meta_jint(o, "chunk_size");
	v->replicas = (unsigned)meta_jint(o, "replicas");
	v->write_quorum = (unsigned)meta_jint(o, "write_quorum");
	if (v->replicas == 0 || v->replicas > QBD_MAX_REPLICAS ||
	    json_object_array_length(arr) != v->replicas || v->write_quorum == 0 ||
	    v->write_quorum > v->replicas || v->size == 0 || v->chunk_size == 0)
		goto out;
	for (unsigned i = 0; i < v->replicas; i++) {
		const char *s = json_object_get_string(json_object_array_get_idx(arr, i));
		if (!s || qbd_id_parse(s, &v->nodes[i]))
			goto out;
	}
	/* Records from before membership changes: cfg 1, no change. */
	v->cfg = json_object_object_get_ex(o, "cfg", NULL) ? meta_jint(o, "cfg") : 1;
	if (v->cfg == 0)
		goto out;
	if (json_object_object_get_ex(o, "change", &chg) &&
	    meta_change_from_jobj(chg, v) < 0)
		goto out;
	r = 0;
out:
	json_object_put(o);
	return r;
}

int qbd_meta_volume_create(struct qbd_meta *m, const struct qbd_volume_info *v)
{
	char kvol[128], kid[64], kep[64], hex[17];
	char *json = meta_volume_to_json(v);
	json_object *cmp, *suc;
	int r;

	if (!json)
		return -ENOMEM;
	qbd_id_str(v->id, hex);
	snprintf(kvol, sizeof kvol, "/qbd/volumes/%s", v->name);
	snprintf(kid, sizeof kid, "/qbd/volume-ids/%s", hex);
	snprintf(kep, sizeof kep, "/qbd/epochs/%s", hex);
	cmp = json_object_new_array();
	suc = json_object_new_array();
	json_object_array_add(cmp, meta_cmp_absent(kvol));
	json_object_array_add(cmp, meta_cmp_absent(kid));
	json_object_array_add(suc, meta_op_put(kvol, json, 0));
	json_object_array_add(suc, meta_op_put(kid, v->name, 0));
	json_object_array_add(suc, meta_op_put(kep, "0", 0));
	r = meta_txn(m, cmp, suc, true);
	free(json);
	if (r == -EAGAIN && meta_resent(m)) {
		/* Resent after an attempt whose answer was lost: if that one
		 * created it, the record is ours (ids are random, 64 bits). */
		struct qbd_volume_info cur;
		if (qbd_meta_volume_get(m, v->name, &cur) == 0 && cur.id == v->id)
			return 0;
	}
	return r == -EAGAIN ? -EEXIST : r;
}

int qbd_meta_volume_get(struct qbd_meta *m, const char *name,
			struct qbd_volume_info *out)
{
	char key[128];
	struct kv kv;
	int r;

	if (!qbd_meta_volume_name_ok(name))
		return -ENOENT;
	snprintf(key, sizeof key, "/qbd/volumes/%s", name);
	r = meta_get(m, key, &kv);
	if (r < 0)
		return r;
	r = meta_volume_from_json(kv.value, out);
	if (r < 0)
		qbd_err("meta", "%s: malformed volume record", key);
	out->mod_revision = kv.mod_revision;
	free(kv.key);
	free(kv.value);
	return r;
}

static int vol_cmp(const void *a, const void *b)
{
	return strcmp(((const struct qbd_volume_info *)a)->name,
		      ((const struct qbd_volume_info *)b)->name);
}

int qbd_meta_volume_list(struct qbd_meta *m, struct qbd_volume_info **out,
			 size_t *n)
{
	struct kv *kvs;
	size_t nk, cnt = 0;
	int r = meta_range(m, "/qbd/volumes/", true, &kvs, &nk);

	*out = NULL;
	*n = 0;
	if (r < 0)
		return r;
	struct qbd_volume_info *vols = calloc(nk ? nk : 1, sizeof *vols);
	if (!vols) {
		meta_kvs_free(kvs, nk);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nk; i++)
		if (meta_volume_from_json(kvs[i].value, &vols[cnt]) == 0)
			vols[cnt++].mod_revision = kvs[i].mod_revision;
		else
			qbd_warn("meta", "%s: malformed volume record, skipped", kvs[i].key);
	meta_kvs_free(kvs, nk);
	qsort(vols, cnt, sizeof *vols, vol_cmp);
	*out = vols;
	*n = cnt;
	return 0;
}

int qbd_meta_volume_delete(struct qbd_meta *m, const struct qbd_volume_info *v)
{
	char kvol[128], kid[64], kep[64], katt[64], kst[64], kcl[64], hex[17];
	json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
	json_object *c;
	struct qbd_attachment a;
	bool resent;
	int r;

	qbd_id_str(v->id, hex);
	snprintf(kvol, sizeof kvol, "/qbd/volumes/%s", v->name);
	snprintf(kid, sizeof kid, "/qbd/volume-ids/%s", hex);
	snprintf(kep, sizeof kep, "/qbd/epochs/%s", hex);
	snprintf(katt, sizeof katt, "/qbd/attachments/%s", hex);
	snprintf(kst, sizeof kst, "/qbd/status/%s", hex);
	snprintf(kcl, sizeof kcl, "/qbd/clean/%s", hex);
	/* Only if the volume still exists (version > 0) and nobody is attached. */
	c = meta_cmp_absent(kvol);
	json_object_object_add(c, "result", json_object_new_string("GREATER"));
	json_object_array_add(cmp, c);
	json_object_array_add(cmp, meta_cmp_absent(katt));
	json_object_array_add(suc, meta_op_delete(kvol));
	json_object_array_add(suc, meta_op_delete(kid));
	json_object_array_add(suc, meta_op_delete(kep));
	json_object_array_add(suc, meta_op_delete(katt));
	json_object_array_add(suc, meta_op_delete(kst));
	json_object_array_add(suc, meta_op_delete(kcl));
	r = meta_txn(m, cmp, suc, true);
	if (r != -EAGAIN)
		return r;
	resent = meta_resent(m);
	/* Which compare failed? */
	r = qbd_meta_attachment_get(m, v->id, &a);
	if (r == 0 || r == -EPROTO) {
		qbd_warn("meta", "volume %s: not deleted: it has an attachment record", v->name);
		return -EBUSY;
	}
	/* gone: deleted by us if the answer came after a resend */
	return r == -ENOENT ? (resent ? 0 : -ENOENT) : r;
}

/* ---- the configuration's compare-and-swap ---- */

/* After a failed compare: which one failed. The epoch first: a fenced
 * caller must stop, not re-read and try again. */
static int volume_cas_why(struct qbd_meta *m, const char *kep, uint64_t epoch)
{
	struct kv kv;
	uint64_t e;
	int r;

	if (!epoch)
		return -EAGAIN;
	r = meta_get(m, kep, &kv);
	if (r == -ENOENT)
		return -ENOENT;
	if (r < 0)
		return r;
	r = meta_parse_epoch(kep, kv.value, &e);
	free(kv.key);
	free(kv.value);
	if (r < 0)
		return r;
	return e == epoch ? -EAGAIN : -ESTALE;
}

int qbd_meta_volume_cas(struct qbd_meta *m, const struct qbd_volume_info *read,
			struct qbd_volume_info *next, uint64_t epoch)
{
	char kvol[128], kep[64], hex[17], val[32];
	struct qbd_volume_info check;
	json_object *cmp, *suc;
	uint64_t rev = 0;
	struct kv kv;
	char *json;
	int r;

	if (strcmp(read->name, next->name) != 0 || read->id != next->id ||
	    !qbd_meta_volume_name_ok(next->name) || read->mod_revision == 0) {
		qbd_err("meta", "volume %.64s: a record change must keep its name and id, "
			"from a record read from etcd", read->name);
		return -EINVAL;
	}
	if (!(json = meta_volume_to_json(next)))
		return -ENOMEM;
	if (meta_volume_from_json(json, &check) < 0) {
		qbd_err("meta", "volume %s: refusing to write a record that does not read "
			"back: %.300s", next->name, json);
		free(json);
		return -EINVAL;
	}
	snprintf(kvol, sizeof kvol, "/qbd/volumes/%s", next->name);
	snprintf(kep, sizeof kep, "/qbd/epochs/%s", qbd_id_str(next->id, hex));
	cmp = json_object_new_array();
	suc = json_object_new_array();
	json_object_array_add(cmp, meta_cmp_mod(kvol, read->mod_revision));
	if (epoch) {
		snprintf(val, sizeof val, "%" PRIu64, epoch);
		json_object_array_add(cmp, meta_cmp_value(kep, val));
	}
	json_object_array_add(suc, meta_op_put(kvol, json, 0));
	/* Resendable: a resend after a lost success fails its compare (the
	 * record's revision moved), and the record read back is ours. */
	r = meta_txn_rev(m, cmp, suc, true, &rev);
	if (r == 0) {
		next->mod_revision = rev;
		goto out;
	}
	if (r != -EAGAIN)
		goto out;
	if (meta_resent(m) && meta_get(m, kvol, &kv) == 0) {
		bool ours = strcmp(kv.value, json) == 0;

		if (ours)
			next->mod_revision = kv.mod_revision;
		free(kv.key);
		free(kv.value);
		if (ours) {
			r = 0;
			goto out;
		}
	}
	r = volume_cas_why(m, kep, epoch);
	if (r == -EAGAIN) {
		/* the record: changed, or gone */
		int g = meta_get(m, kvol, &kv);

		if (g == 0) {
			free(kv.key);
			free(kv.value);
		} else if (g == -ENOENT) {
			r = -ENOENT;
		}
	}
out:
	free(json);
	return r;
}

/* ---- which volumes exist (a chunk server's reclaim scan) ---- */

/* The ranges of the scan's transaction, in order. */
enum { SCAN_CLUSTER, SCAN_VOLUMES, SCAN_IDS, SCAN_EPOCHS, SCAN_N };
static const char *const scan_keys[SCAN_N] = {
	"/qbd/cluster", "/qbd/volumes/", "/qbd/volume-ids/", "/qbd/epochs/",
};

static json_object *scan_range_op(const char *key, bool prefix, bool keys_only)
{
	json_object *r = json_object_new_object(), *op = json_object_new_object();
	size_t kl = strlen(key);

	json_object_object_add(r, "key", meta_jstr_b64(key, kl));
	if (prefix) {
		char end[64];

		snprintf(end, sizeof end, "%s", key);
		end[kl - 1]++;
		json_object_object_add(r, "range_end", meta_jstr_b64(end, kl));
	}
	if (keys_only)
		json_object_object_add(r, "keys_only", json_object_new_boolean(true));
	json_object_object_add(op, "requestRange", r);
	return op;
}

/* A volume record's configuration, while the ranges are read. */
struct scan_rec {
	uint64_t id;
	struct qbd_meta_volume_members m;
};

/* What the ranges gather: the ids into s, the records' configurations
 * into recs (matched to the ids once these are sorted). */
struct scan_acc {
	struct qbd_meta_volume_scan *s;
	size_t cap;
	struct scan_rec *recs;
	size_t nrecs, rcap;
};

static int scan_add(struct scan_acc *a, uint64_t id)
{
	struct qbd_meta_volume_scan *s = a->s;

	if (s->n == a->cap) {
		size_t nc = a->cap ? a->cap * 2 : 64;
		uint64_t *ni = realloc(s->ids, nc * sizeof *ni);

		if (!ni)
			return -ENOMEM;
		s->ids = ni;
		a->cap = nc;
	}
	s->ids[s->n++] = id;
	return 0;
}

/* The nodes v's configuration lists: its voters, and the change's new
 * node while a change stands. */
static int scan_add_record(struct scan_acc *a, const struct qbd_volume_info *v)
{
	struct scan_rec *r;

	if (a->nrecs == a->rcap) {
		size_t nc = a->rcap ? a->rcap * 2 : 64;
		struct scan_rec *nr = realloc(a->recs, nc * sizeof *nr);

		if (!nr)
			return -ENOMEM;
		a->recs = nr;
		a->rcap = nc;
	}
	r = &a->recs[a->nrecs++];
	memset(r, 0, sizeof *r);
	r->id = v->id;
	r->m.cfg = v->cfg ? v->cfg : 1;
	for (unsigned i = 0; i < v->replicas && i < QBD_MAX_REPLICAS; i++)
		r->m.nodes[r->m.n++] = v->nodes[i];
	if (v->change.phase != QBD_CHANGE_NONE)
		r->m.nodes[r->m.n++] = v->change.node;
	return scan_add(a, v->id);
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int scan_rec_cmp(const void *a, const void *b)
{
	return u64_cmp(&((const struct scan_rec *)a)->id, &((const struct scan_rec *)b)->id);
}

/* Sort and unique the ids, then give each its record's configuration:
 * none (cfg 0, every node listed) for an id without a record, or with
 * two records (not expected: creation checks; neither is believed). */
static int scan_finish(struct scan_acc *a)
{
	struct qbd_meta_volume_scan *s = a->s;
	size_t u = 0, k = 0;

	if (s->n == 0)
		return 0;
	qsort(s->ids, s->n, sizeof *s->ids, u64_cmp);
	for (size_t i = 1; i < s->n; i++)
		if (s->ids[i] != s->ids[u])
			s->ids[++u] = s->ids[i];
	s->n = u + 1;
	if (!(s->members = calloc(s->n, sizeof *s->members)))
		return -ENOMEM;
	if (a->nrecs)
		qsort(a->recs, a->nrecs, sizeof *a->recs, scan_rec_cmp);
	for (size_t i = 0; i < a->nrecs; i++) {
		bool twice = (i > 0 && a->recs[i - 1].id == a->recs[i].id) ||
			     (i + 1 < a->nrecs && a->recs[i + 1].id == a->recs[i].id);

		/* every record's id is among the ids, both lists are sorted */
		while (k < s->n && s->ids[k] < a->recs[i].id)
			k++;
		if (!twice && k < s->n && s->ids[k] == a->recs[i].id)
			s->members[k] = a->recs[i].m;
	}
	return 0;
}

/* One key/value of range `which` into the scan: the cluster id, or the
 * volume id the key or the record names. */
static int scan_entry(struct scan_acc *a, int which, const char *key, const char *value)
{
	const char *suffix = key + strlen(scan_keys[which]);
	struct qbd_volume_info v;
	uint64_t id;

	if (strncmp(key, scan_keys[which], strlen(scan_keys[which])) != 0)
		return -EPROTO;
	switch (which) {
	case SCAN_CLUSTER: {
		json_object *o = json_tokener_parse(value), *i;
		int r = -EPROTO;

		if (o && json_object_object_get_ex(o, "id", &i) &&
		    qbd_id_parse(json_object_get_string(i), &a->s->cluster_id) == 0)
			r = 0;
		json_object_put(o);
		return r;
	}
	case SCAN_VOLUMES:
		if (meta_volume_from_json(value, &v) < 0)
			return -EPROTO;
		return scan_add_record(a, &v);
	default:
		if (strlen(suffix) != 16 || qbd_id_parse(suffix, &id) < 0)
			return -EPROTO;
		return scan_add(a, id);
	}
}

/* One range's answer: whole ("more" unset, "count" the entries given),
 * each entry readable. */
static int scan_range(struct scan_acc *a, int which, json_object *rr)
{
	json_object *kvs = NULL, *more;
	size_t len = 0;

	if (!json_object_is_type(rr, json_type_object))
		return -EPROTO;
	if (json_object_object_get_ex(rr, "more", &more) && json_object_get_boolean(more)) {
		qbd_err("meta", "volume scan: %s: etcd left entries out", scan_keys[which]);
		return -EPROTO;
	}
	if (json_object_object_get_ex(rr, "kvs", &kvs)) {
		if (!json_object_is_type(kvs, json_type_array))
			return -EPROTO;
		len = json_object_array_length(kvs);
	}
	if (meta_jint(rr, "count") != len) {
		qbd_err("meta", "volume scan: %s: %zu entries of %llu", scan_keys[which], len,
			(unsigned long long)meta_jint(rr, "count"));
		return -EPROTO;
	}
	for (size_t i = 0; i < len; i++) {
		json_object *e = json_object_array_get_idx(kvs, i), *k, *v;
		char *key = NULL, *value = NULL;
		size_t kl, vl;
		int r = -EPROTO;

		if (json_object_object_get_ex(e, "key", &k))
			key = meta_b64_decode(json_object_get_string(k), &kl);
		if (json_object_object_get_ex(e, "value", &v))
			value = meta_b64_decode(json_object_get_string(v), &vl);
		if (key && (value || which == SCAN_IDS || which == SCAN_EPOCHS))
			r = scan_entry(a, which, key, value ? value : "");
		if (r == -EPROTO)
			qbd_err("meta", "volume scan: %s: unreadable entry %.80s",
				scan_keys[which], key ? key : "(no key)");
		free(key);
		free(value);
		if (r < 0)
			return r;
	}
	return 0;
}

static int meta_volume_scan_parse(json_object *resp, struct qbd_meta_volume_scan *out)
{
	struct scan_acc a = { .s = out };
	json_object *hdr, *arr;
	int r;

	memset(out, 0, sizeof *out);
	if (!json_object_object_get_ex(resp, "header", &hdr) ||
	    (out->revision = meta_jint(hdr, "revision")) == 0 ||
	    !json_object_object_get_ex(resp, "responses", &arr) ||
	    !json_object_is_type(arr, json_type_array) ||
	    json_object_array_length(arr) != SCAN_N) {
		qbd_err("meta", "volume scan: etcd's answer lacks its revision or a range");
		return -EPROTO;
	}
	for (int i = 0; i < SCAN_N; i++) {
		json_object *rr;

		if (!json_object_object_get_ex(json_object_array_get_idx(arr, i),
					       "response_range", &rr)) {
			qbd_err("meta", "volume scan: no answer for %s", scan_keys[i]);
			r = -EPROTO;
			goto fail;
		}
		if ((r = scan_range(&a, i, rr)) < 0)
			goto fail;
	}
	if ((r = scan_finish(&a)) < 0)
		goto fail;
	free(a.recs);
	return 0;
fail:
	free(a.recs);
	qbd_meta_volume_scan_free(out);
	return r;
}

int meta_volume_scan_from_json(const char *json, struct qbd_meta_volume_scan *out)
{
	json_object *o = json_tokener_parse(json);
	int r;

	if (!o) {
		memset(out, 0, sizeof *out);
		return -EPROTO;
	}
	r = meta_volume_scan_parse(o, out);
	json_object_put(o);
	return r;
}

int qbd_meta_volume_scan(struct qbd_meta *m, struct qbd_meta_volume_scan *out)
{
	json_object *req = json_object_new_object(), *suc = json_object_new_array(), *resp;
	int r;

	memset(out, 0, sizeof *out);
	json_object_array_add(suc, scan_range_op(scan_keys[SCAN_CLUSTER], false, false));
	json_object_array_add(suc, scan_range_op(scan_keys[SCAN_VOLUMES], true, false));
	json_object_array_add(suc, scan_range_op(scan_keys[SCAN_IDS], true, true));
	json_object_array_add(suc, scan_range_op(scan_keys[SCAN_EPOCHS], true, true));
	json_object_object_add(req, "compare", json_object_new_array());
	json_object_object_add(req, "success", suc);
	r = meta_post(m, "/v3/kv/txn", req, true, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	r = meta_volume_scan_parse(resp, out);
	json_object_put(resp);
	return r;
}

void qbd_meta_volume_scan_free(struct qbd_meta_volume_scan *s)
{
	free(s->ids);
	free(s->members);
	memset(s, 0, sizeof *s);
}

int qbd_meta_mark_clean(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch)
{
	char key[64], hex[17], val[24];

	snprintf(key, sizeof key, "/qbd/clean/%s", qbd_id_str(volume_id, hex));
	snprintf(val, sizeof val, "%" PRIu64, epoch);
	return meta_put(m, key, val, 0);
}

int qbd_meta_was_clean(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch)
{
	char key[64], hex[17];
	struct kv kv;
	uint64_t e;
	int r;

	snprintf(key, sizeof key, "/qbd/clean/%s", qbd_id_str(volume_id, hex));
	r = meta_get(m, key, &kv);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = meta_parse_epoch(key, kv.value, &e);
	free(kv.key);
	free(kv.value);
	if (r < 0)
		return r;
	return e == epoch;
}

int meta_parse_epoch(const char *key, const char *text, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(text, &end, 10);
	if (!*text || *end || errno) {
		qbd_err("meta", "%s: epoch '%.32s' is not a number", key, text);
		return -EPROTO;
	}
	return 0;
}

int qbd_meta_epoch_get(struct qbd_meta *m, uint64_t volume_id, uint64_t *epoch)
{
	char key[64], hex[17];
	struct kv kv;
	int r;

	snprintf(key, sizeof key, "/qbd/epochs/%s", qbd_id_str(volume_id, hex));
	r = meta_get(m, key, &kv);
	if (r < 0)
		return r;
	r = meta_parse_epoch(key, kv.value, epoch);
	free(kv.key);
	free(kv.value);
	return r;
}

int qbd_meta_epoch_bump(struct qbd_meta *m, uint64_t volume_id, uint64_t *epoch)
{
	char key[64], hex[17], val[32];

	snprintf(key, sizeof key, "/qbd/epochs/%s", qbd_id_str(volume_id, hex));
	for (int tries = 0; tries < 10; tries++) {
		struct kv kv;
		int r = meta_get(m, key, &kv);
		uint64_t e;

		if (r < 0)
			return r;
		r = meta_parse_epoch(key, kv.value, &e);
		if (r < 0) {
			free(kv.key);
			free(kv.value);
			return r;
		}
		e++;
		snprintf(val, sizeof val, "%" PRIu64, e);
		json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
		json_object_array_add(cmp, meta_cmp_mod(key, kv.mod_revision));
		json_object_array_add(suc, meta_op_put(key, val, 0));
		free(kv.key);
		free(kv.value);
		/* Resendable: if a lost attempt applied, the resend's compare
		 * fails and the next round takes e + 1; an epoch is burnt,
		 * never shared (only a definite success returns one). */
		r = meta_txn(m, cmp, suc, true);
		if (r == 0) {
			*epoch = e;
			return 0;
		}
		if (r != -EAGAIN)
			return r;
	}
	return -EAGAIN;
}

/* ---- growing a volume ---- */

int qbd_meta_volume_grow(struct qbd_meta *m, const char *name, uint64_t id,
			 uint64_t size, uint64_t *old_size)
{
	bool first = true;

	for (int tries = 0; tries < 10; tries++) {
		struct qbd_volume_info read, next;
		int r = qbd_meta_volume_get(m, name, &read);

		if (r < 0)
			return r;
		if (read.id != id)
			return -ENOENT; /* deleted, and the name taken again */
		if (size < read.size || size % 4096)
			return -EINVAL;
		if (first && old_size)
			*old_size = read.size; /* as we first found it */
		first = false;
		if (size == read.size)
			return 0; /* also after a resend whose success was lost */
		next = read;
		next.size = size;
		/* No epoch compare: a larger size needs no writer fenced. A
		 * writer that has not seen it refuses requests past the old
		 * end, one that has serves them; neither can lose or show
		 * anything, since nothing was ever written there. */
		r = qbd_meta_volume_cas(m, &read, &next, 0);
		if (r != -EAGAIN)
			return r;
	}
	return -EAGAIN;
}
