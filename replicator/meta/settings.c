/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A volume's settings that change while it is attached:
 * /qbd/volume-settings/<volume id hex16>, a JSON object of its own
 * (today {"rebuild_rate": BYTES_PER_S}), kept out of the volume record
 * so that changing a setting never races with a change of the record
 * (its nodes and configuration). The attached writer's keeper reads it
 * every few seconds (replicator/client/attach.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void settings_key(uint64_t volume_id, char *key, size_t len)
{
	snprintf(key, len, "/qbd/volume-settings/%016" PRIx64, volume_id);
}

int qbd_meta_volume_settings_get(struct qbd_meta *m, uint64_t volume_id,
				 struct qbd_volume_settings *out)
{
	char key[64];
	json_object *o = NULL, *x;
	struct kv kv;
	int r;

	memset(out, 0, sizeof *out);
	settings_key(volume_id, key, sizeof key);
	r = meta_get(m, key, &kv);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	o = json_tokener_parse(kv.value);
	r = o && json_object_is_type(o, json_type_object) ? 0 : -EPROTO;
	if (!r && json_object_object_get_ex(o, "rebuild_rate", &x)) {
		if (!json_object_is_type(x, json_type_int) || json_object_get_int64(x) < 0) {
			r = -EPROTO;
		} else {
			out->rebuild_rate = (uint64_t)json_object_get_int64(x);
			out->has_rebuild_rate = true;
		}
	}
	json_object_put(o);
	free(kv.key);
	free(kv.value);
	return r;
}

int qbd_meta_volume_settings_put(struct qbd_meta *m, uint64_t volume_id,
				 const struct qbd_volume_settings *s)
{
	char key[64];
	json_object *o;
	int r;

	settings_key(volume_id, key, sizeof key);
	if (!s->has_rebuild_rate) {
		json_object *suc = json_object_new_array();

		json_object_array_add(suc, meta_op_delete(key));
		return meta_txn(m, json_object_new_array(), suc, true);
	}
	o = json_object_new_object();
	json_object_object_add(o, "rebuild_rate", json_object_new_int64((int64_t)s->rebuild_rate));
	r = meta_put(m, key, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), 0);
	json_object_put(o);
	return r;
}
