/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Attachments (which client writes a volume, under which epoch and
 * lease) and the writer's status record.
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

char *meta_attachment_to_json(const struct qbd_attachment *a)
{
	json_object *o = json_object_new_object();
	char hex[17];
	char *s;

	json_object_object_add(o, "volume", json_object_new_string(a->volume));
	json_object_object_add(o, "volume_id", json_object_new_string(qbd_id_str(a->volume_id, hex)));
	json_object_object_add(o, "epoch", json_object_new_int64((int64_t)a->epoch));
	json_object_object_add(o, "host", json_object_new_string(a->host));
	json_object_object_add(o, "zone", json_object_new_string(a->zone));
	json_object_object_add(o, "pid", json_object_new_int(a->pid));
	json_object_object_add(o, "since", json_object_new_int64((int64_t)a->since));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

int meta_attachment_from_json(const char *json, struct qbd_attachment *a)
{
	json_object *o = json_tokener_parse(json);
	char hex[32];
	int r = -EPROTO;

	memset(a, 0, sizeof *a);
	if (!o)
		return -EPROTO;
	if (!json_object_is_type(o, json_type_object) ||
	    meta_jcopy(o, "volume", a->volume, sizeof a->volume) ||
	    !qbd_meta_volume_name_ok(a->volume) ||
	    meta_jcopy(o, "volume_id", hex, sizeof hex) || qbd_id_parse(hex, &a->volume_id) ||
	    !json_object_object_get_ex(o, "epoch", NULL))
		goto out;
	a->epoch = meta_jint(o, "epoch");
	/* host and zone are informative: absent means unknown */
	if (meta_jcopy(o, "host", a->host, sizeof a->host))
		a->host[0] = '\0';
	if (meta_jcopy(o, "zone", a->zone, sizeof a->zone))
		a->zone[0] = '\0';
	a->pid = (int)meta_jint(o, "pid");
	a->since = meta_jint(o, "since");
	r = 0;
out:
	json_object_put(o);
	return r;
}

static void attach_keys(uint64_t volume_id, char *kep, char *katt, char *kst)
{
	char hex[17];

	qbd_id_str(volume_id, hex);
	snprintf(kep, 64, "/qbd/epochs/%s", hex);
	snprintf(katt, 64, "/qbd/attachments/%s", hex);
	snprintf(kst, 64, "/qbd/status/%s", hex);
}

/* Read and parse the attachment record; *rev its mod_revision. */
static int attachment_read(struct qbd_meta *m, const char *katt,
			   struct qbd_attachment *out, uint64_t *rev)
{
	struct kv kv;
	int r = meta_get(m, katt, &kv);

	if (r < 0)
		return r;
	r = meta_attachment_from_json(kv.value, out);
	if (r < 0)
		qbd_err("meta", "%s: malformed attachment record", katt);
	*rev = kv.mod_revision;
	free(kv.key);
	free(kv.value);
	return r;
}

int qbd_meta_attachment_get(struct qbd_meta *m, uint64_t volume_id,
			    struct qbd_attachment *out)
{
	char kep[64], katt[64], kst[64];
	uint64_t rev;

	attach_keys(volume_id, kep, katt, kst);
	return attachment_read(m, katt, out, &rev);
}

/* After a failed attach: has the volume record moved from the revision
 * the writer read? 1 yes (or it is gone), 0 no, or -errno. */
static int attach_volume_moved(struct qbd_meta *m, const char *kvol, uint64_t rev)
{
	struct kv kv;
	int r = meta_get(m, kvol, &kv);

	if (r == -ENOENT)
		return 1;
	if (r < 0)
		return r;
	free(kv.key);
	free(kv.value);
	return kv.mod_revision != rev;
}

int qbd_meta_attach(struct qbd_meta *m, struct qbd_attachment *a, int64_t lease,
		    bool force, struct qbd_attachment *holder)
{
	char kep[64], katt[64], kst[64], kvol[128], val[32];

	if (!qbd_meta_volume_name_ok(a->volume)) {
		qbd_err("meta", "attach: invalid volume name '%.80s'", a->volume);
		return -EINVAL;
	}
	attach_keys(a->volume_id, kep, katt, kst);
	snprintf(kvol, sizeof kvol, "/qbd/volumes/%s", a->volume);
	for (int tries = 0; tries < 10; tries++) {
		struct qbd_attachment rec = *a, cur;
		struct kv kv;
		uint64_t rev;
		char *json;
		int r = meta_get(m, kep, &kv);

		if (r < 0)
			return r;
		r = meta_parse_epoch(kep, kv.value, &rec.epoch);
		free(kv.key);
		free(kv.value);
		if (r < 0)
			return r;
		rec.epoch++;
		snprintf(val, sizeof val, "%" PRIu64, rec.epoch);
		/* Forced: whom it takes over from, for the writer's log (the
		 * transaction does not compare the record, so a holder that
		 * comes or goes between the two is only missed or named in
		 * the log). */
		if (force && holder && attachment_read(m, katt, &cur, &rev) == 0)
			*holder = cur;
		if (!(json = meta_attachment_to_json(&rec)))
			return -ENOMEM;
		json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
		json_object_array_add(cmp, meta_cmp_mod(kep, kv.mod_revision));
		if (!force)
			json_object_array_add(cmp, meta_cmp_absent(katt));
		/* The configuration the writer read is still the volume's. */
		if (a->volume_revision)
			json_object_array_add(cmp, meta_cmp_mod(kvol, a->volume_revision));
		json_object_array_add(suc, meta_op_put(kep, val, 0));
		json_object_array_add(suc, meta_op_put(katt, json, lease));
		free(json);
		/* Never resent: had a lost attempt applied, the resend would
		 * find our own record and report it as another writer's (or,
		 * forced, take a second epoch). The open fails instead; a
		 * record the lost attempt may have put goes with its lease. */
		r = meta_txn(m, cmp, suc, false);
		if (r == 0) {
			a->epoch = rec.epoch;
			return 0;
		}
		if (r != -EAGAIN)
			return r;
		if (a->volume_revision) {
			/* Another writer's record first (below): -EBUSY says
			 * more than a configuration to read again. */
			int moved = attach_volume_moved(m, kvol, a->volume_revision);

			if (moved < 0)
				return moved;
			if (moved && (force || attachment_read(m, katt, &cur, &rev) == -ENOENT)) {
				qbd_info("meta", "attach %s: its record changed since it was "
					 "read (revision %" PRIu64 ")", a->volume,
					 a->volume_revision);
				return -ESTALE;
			}
		}
		if (force)
			continue; /* only the epoch compare can have failed */
		r = attachment_read(m, katt, &cur, &rev);
		if (r == 0) {
			if (holder)
				*holder = cur;
			return -EBUSY;
		}
		if (r == -EPROTO) {
			/* unreadable record: still someone's, report it as busy */
			if (holder)
				memset(holder, 0, sizeof *holder);
			return -EBUSY;
		}
		if (r != -ENOENT)
			return r;
		/* no holder: the epoch moved (or the holder just left); retry */
	}
	return -EAGAIN;
}

int qbd_meta_attach_renew(struct qbd_meta *m, const struct qbd_attachment *a,
			  int64_t lease)
{
	char kep[64], katt[64], kst[64], val[32];
	char *json = meta_attachment_to_json(a);
	int r;

	if (!json)
		return -ENOMEM;
	attach_keys(a->volume_id, kep, katt, kst);
	snprintf(val, sizeof val, "%" PRIu64, a->epoch);
	json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
	json_object_array_add(cmp, meta_cmp_value(kep, val));
	json_object_array_add(suc, meta_op_put(katt, json, lease));
	free(json);
	r = meta_txn(m, cmp, suc, true);
	return r == -EAGAIN ? -ESTALE : r;
}

int qbd_meta_detach(struct qbd_meta *m, const struct qbd_attachment *a)
{
	char kep[64], katt[64], kst[64];

	attach_keys(a->volume_id, kep, katt, kst);
	for (int tries = 0; tries < 10; tries++) {
		struct qbd_attachment cur;
		uint64_t rev;
		int r = attachment_read(m, katt, &cur, &rev);

		if (r == -ENOENT)
			return 0;
		if (r < 0)
			return r;
		if (cur.epoch != a->epoch)
			return -ESTALE;
		/* the status document is ours too while the record is */
		json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
		json_object_array_add(cmp, meta_cmp_mod(katt, rev));
		json_object_array_add(suc, meta_op_delete(katt));
		json_object_array_add(suc, meta_op_delete(kst));
		r = meta_txn(m, cmp, suc, true);
		if (r != -EAGAIN)
			return r;
	}
	return -EAGAIN;
}

int qbd_meta_status_put(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch,
			const char *json, int64_t lease)
{
	char kep[64], katt[64], kst[64], val[32];
	int r;

	if (!json || !*json)
		return -EINVAL;
	attach_keys(volume_id, kep, katt, kst);
	snprintf(val, sizeof val, "%" PRIu64, epoch);
	json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
	json_object_array_add(cmp, meta_cmp_value(kep, val));
	json_object_array_add(suc, meta_op_put(kst, json, lease));
	r = meta_txn(m, cmp, suc, true);
	return r == -EAGAIN ? -ESTALE : r;
}

int qbd_meta_status_get(struct qbd_meta *m, uint64_t volume_id, char **json)
{
	char kep[64], katt[64], kst[64];
	struct kv kv;
	int r;

	*json = NULL;
	attach_keys(volume_id, kep, katt, kst);
	r = meta_get(m, kst, &kv);
	if (r < 0)
		return r;
	free(kv.key);
	*json = kv.value;
	return 0;
}

