/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON the CLI prints with --json, and reads back from the writer's
 * status document: values (ids as hex strings, numbers), a node and a
 * volume as objects, and printing. json-c escapes strings; every object
 * made here is the caller's until it is added to another or printed.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/util.h"
#include "internal.h"

/* Print a JSON value (strings escaped by json-c) and drop it. */
void cli_print_json(json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

json_object *cli_json_id(uint64_t id)
{
	char hex[17];

	return json_object_new_string(qbd_id_str(id, hex));
}

json_object *cli_json_u64(uint64_t v)
{
	return json_object_new_int64((int64_t)v);
}

uint64_t cli_json_get_u64(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (json_object_is_type(v, json_type_string))
		return strtoull(json_object_get_string(v), NULL, 10);
	return (uint64_t)json_object_get_int64(v);
}

json_object *cli_node_json(const struct qbd_node_info *n, bool full)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "id", cli_json_id(n->id));
	json_object_object_add(o, "zone", json_object_new_string(n->zone));
	json_object_object_add(o, "addr", json_object_new_string(n->addr));
	json_object_object_add(o, "alive", json_object_new_boolean(n->alive));
	json_object_object_add(o, "state",
			       json_object_new_string(qbd_meta_node_state_name(n->state)));
	if (full) {
		json_object *sc = json_object_new_object(), *io = json_object_new_object();
		json_object *or = json_object_new_object();

		json_object_object_add(o, "capacity", cli_json_u64(n->capacity));
		json_object_object_add(o, "used", cli_json_u64(n->used));
		json_object_object_add(o, "held", cli_json_u64(n->held));
		json_object_object_add(o, "slots", cli_json_u64(n->slots));
		json_object_object_add(o, "free_slots", cli_json_u64(n->free_slots));
		json_object_object_add(o, "seq", cli_json_u64(n->seq));
		json_object_object_add(o, "updated", cli_json_u64(n->updated));
		json_object_object_add(sc, "rate", cli_json_u64(n->scrub.rate));
		json_object_object_add(sc, "bytes", cli_json_u64(n->scrub.bytes));
		json_object_object_add(sc, "chunks", cli_json_u64(n->scrub.chunks));
		json_object_object_add(sc, "passes", cli_json_u64(n->scrub.passes));
		json_object_object_add(sc, "bad_blocks", cli_json_u64(n->scrub.bad_blocks));
		json_object_object_add(sc, "errors", cli_json_u64(n->scrub.errors));
		json_object_object_add(o, "scrub", sc);
		json_object_object_add(io, "data_reads", cli_json_u64(n->io.data_reads));
		json_object_object_add(io, "data_read_bytes", cli_json_u64(n->io.data_read_bytes));
		json_object_object_add(io, "data_writes", cli_json_u64(n->io.data_writes));
		json_object_object_add(io, "data_write_bytes", cli_json_u64(n->io.data_write_bytes));
		json_object_object_add(io, "meta_writes", cli_json_u64(n->io.meta_writes));
		json_object_object_add(io, "zeroings", cli_json_u64(n->io.zeroings));
		json_object_object_add(io, "syncs", cli_json_u64(n->io.syncs));
		json_object_object_add(o, "io", io);
		json_object_object_add(or, "volumes", cli_json_u64(n->orphaned.volumes));
		json_object_object_add(or, "chunks", cli_json_u64(n->orphaned.chunks));
		json_object_object_add(or, "held", cli_json_u64(n->orphaned.held));
		json_object_object_add(or, "moved", cli_json_u64(n->orphaned.moved));
		json_object_object_add(or, "moved_held", cli_json_u64(n->orphaned.moved_held));
		json_object_object_add(or, "found", cli_json_u64(n->orphaned.found));
		json_object_object_add(or, "reclaimed", cli_json_u64(n->orphaned.reclaimed));
		json_object_object_add(or, "reclaimed_bytes",
				       cli_json_u64(n->orphaned.reclaimed_bytes));
		json_object_object_add(o, "orphaned", or);
	}
	return o;
}

json_object *cli_volume_json(const struct qbd_volume_info *v)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(v->name));
	json_object_object_add(o, "id", cli_json_id(v->id));
	json_object_object_add(o, "size", cli_json_u64(v->size));
	json_object_object_add(o, "chunk_size", cli_json_u64(v->chunk_size));
	json_object_object_add(o, "replicas", cli_json_u64(v->replicas));
	json_object_object_add(o, "write_quorum", cli_json_u64(v->write_quorum));
	json_object_object_add(o, "cfg", cli_json_u64(v->cfg));
	return o;
}

json_object *cli_change_json(const struct qbd_volume_info *v, const struct qbd_node_info *to)
{
	const struct qbd_volume_change *c = &v->change;
	json_object *o;

	if (c->phase == QBD_CHANGE_NONE)
		return NULL;
	o = json_object_new_object();
	json_object_object_add(o, "phase",
			       json_object_new_string(qbd_meta_change_phase_name(c->phase)));
	json_object_object_add(o, "slot", json_object_new_int((int)c->slot));
	json_object_object_add(o, "from", cli_json_id(v->nodes[c->slot]));
	json_object_object_add(o, "to", cli_json_id(c->node));
	json_object_object_add(o, "to_zone", to ? json_object_new_string(to->zone) : NULL);
	json_object_object_add(o, "reason",
			       json_object_new_string(qbd_meta_change_reason_name(c->reason)));
	json_object_object_add(o, "started", cli_json_u64(c->started));
	return o;
}

json_object *cli_change_request_json(const struct qbd_change_request *r)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "kind", json_object_new_string("replace"));
	json_object_object_add(o, "from", cli_json_id(r->from));
	json_object_object_add(o, "to", r->to ? cli_json_id(r->to) : NULL);
	json_object_object_add(o, "reason",
			       json_object_new_string(qbd_meta_change_reason_name(r->reason)));
	json_object_object_add(o, "created", cli_json_u64(r->created));
	return o;
}

json_object *cli_attachment_json(const struct qbd_attachment *a)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "host", json_object_new_string(a->host));
	json_object_object_add(o, "zone", json_object_new_string(a->zone));
	json_object_object_add(o, "pid", json_object_new_int(a->pid));
	json_object_object_add(o, "epoch", cli_json_u64(a->epoch));
	json_object_object_add(o, "since", cli_json_u64(a->since));
	return o;
}
