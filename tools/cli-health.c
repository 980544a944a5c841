/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Health judgement of a volume, for `qbd volume status` and `qbd status`:
 * its replicas' nodes as etcd records them (alive or not), and, while a
 * writer is attached, the writer's status document (/qbd/status/<id>:
 * each replica up, down or resyncing, and its stale chunks). A volume is
 * healthy with every replica current, degraded with at least W usable,
 * failed below W, and unknown while attached before the writer's first
 * status document (never healthy on a guess).
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "internal.h"

/* Fill rs[] from the writer's status document. Returns 0, or -EPROTO
 * (with a warning) if it is not a usable document. *updated, *epoch out. */
/* The document's "change" (a membership change the writer carries out). */
static void health_parse_change(json_object *o, struct change_progress *c)
{
	json_object *ch, *x;

	memset(c, 0, sizeof(*c));
	if (!json_object_object_get_ex(o, "change", &ch) ||
	    !json_object_is_type(ch, json_type_object))
		return;
	c->have = true;
	if (json_object_object_get_ex(ch, "phase", &x) && json_object_is_type(x, json_type_string))
		snprintf(c->phase, sizeof(c->phase), "%s", json_object_get_string(x));
	if (json_object_object_get_ex(ch, "from", &x) && json_object_is_type(x, json_type_string))
		snprintf(c->from, sizeof(c->from), "%s", json_object_get_string(x));
	if (json_object_object_get_ex(ch, "to", &x) && json_object_is_type(x, json_type_string))
		snprintf(c->to, sizeof(c->to), "%s", json_object_get_string(x));
	c->copied = cli_json_get_u64(ch, "copied_bytes");
	c->total = cli_json_get_u64(ch, "total_bytes");
	c->rate = cli_json_get_u64(ch, "rate_bytes");
	c->eta_s = json_object_object_get_ex(ch, "eta_s", &x) ? json_object_get_int64(x) : -1;
}

const char *cli_change_progress_str(const struct change_progress *c, char *buf, size_t len)
{
	char a[32], b[32], r[32];
	unsigned pc = c->total ? (unsigned)((c->copied > c->total ? c->total : c->copied) * 100 /
					    c->total) : 100;

	qbd_format_size(c->copied, a, sizeof a);
	qbd_format_size(c->total, b, sizeof b);
	qbd_format_size(c->rate, r, sizeof r);
	if (c->eta_s >= 0)
		snprintf(buf, len, "%s: %s of %s copied (%u%%), %s/s, ETA %" PRId64 " s", c->phase,
			 a, b, pc, r, c->eta_s);
	else
		snprintf(buf, len, "%s: %s of %s copied (%u%%), %s/s", c->phase, a, b, pc, r);
	return buf;
}

json_object *cli_change_progress_json(const struct change_progress *c)
{
	json_object *o;

	if (!c->have)
		return NULL;
	o = json_object_new_object();
	json_object_object_add(o, "phase", json_object_new_string(c->phase));
	json_object_object_add(o, "from", json_object_new_string(c->from));
	json_object_object_add(o, "to", json_object_new_string(c->to));
	json_object_object_add(o, "copied_bytes", cli_json_u64(c->copied));
	json_object_object_add(o, "total_bytes", cli_json_u64(c->total));
	json_object_object_add(o, "rate_bytes", cli_json_u64(c->rate));
	json_object_object_add(o, "eta_s", json_object_new_int64(c->eta_s));
	return o;
}

static int health_parse_status(const char *json, const struct qbd_volume_info *v,
			       struct replica_status *rs, struct change_progress *chg,
			       uint64_t *epoch, uint64_t *updated)
{
	json_object *o = json_tokener_parse(json), *arr;
	int r = -EPROTO;

	if (!o || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "replicas", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		goto out;
	*epoch = cli_json_get_u64(o, "epoch");
	*updated = cli_json_get_u64(o, "updated");
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *e = json_object_array_get_idx(arr, i), *st;
		uint64_t idx = json_object_object_get_ex(e, "index", NULL) ?
			       cli_json_get_u64(e, "index") : i;
		if (!json_object_is_type(e, json_type_object) || idx >= v->replicas ||
		    !json_object_object_get_ex(e, "state", &st) ||
		    !json_object_is_type(st, json_type_string))
			goto out;
		struct replica_status *x = &rs[idx];
		x->reported = true;
		snprintf(x->state, sizeof x->state, "%s", json_object_get_string(st));
		x->stale = cli_json_get_u64(e, "stale_chunks");
		x->resync_done = cli_json_get_u64(e, "resync_done_chunks");
		x->resync_total = cli_json_get_u64(e, "resync_total_chunks");
		x->waiting_ms = cli_json_get_u64(e, "waiting_ms");
	}
	health_parse_change(o, chg);
	r = 0;
out:
	json_object_put(o);
	return r;
}

/* A replica can take writes: its node is alive and, when the writer
 * reports, the writer sees it up (not down, resyncing or silent: a
 * replica that has stopped answering still counts for the writer until
 * its request timeout, but nobody should restart another node meanwhile).
 * Current: usable with nothing stale. */
bool cli_replica_usable(const struct replica_status *x, bool have_status)
{
	if (!x->node.alive)
		return false;
	return !have_status || (x->reported && strcmp(x->state, "up") == 0);
}

static bool health_replica_current(const struct replica_status *x, bool have_status)
{
	return cli_replica_usable(x, have_status) &&
	       (!have_status || (x->stale == 0 && x->resync_done >= x->resync_total));
}

uint64_t cli_replica_silent_s(const struct replica_status *x, uint64_t st_updated)
{
	uint64_t now = (uint64_t)time(NULL);

	return x->waiting_ms / 1000 + (now > st_updated ? now - st_updated : 0);
}

unsigned cli_replica_percent(const struct replica_status *x)
{
	if (x->resync_total == 0)
		return 100;
	uint64_t d = x->resync_done > x->resync_total ? x->resync_total : x->resync_done;
	return (unsigned)(d * 100 / x->resync_total);
}

/* The attachment record and, when attached, the writer's status
 * document (*st_json, NULL when there is none; the caller frees it).
 * 0, or EXIT_ERR after saying why. */
static int health_read_writer(struct qbd_meta *m, const struct qbd_volume_info *v,
			      struct vol_health *h, char **st_json)
{
	int r = qbd_meta_attachment_get(m, v->id, &h->att);

	if (r == 0) {
		h->attached = true;
		r = qbd_meta_status_get(m, v->id, st_json);
	}
	if (r < 0 && r != -ENOENT) {
		fprintf(stderr, "qbd: volume '%s': cannot read its attachment or status: %s\n",
			v->name, strerror(-r));
		return EXIT_ERR;
	}
	return 0;
}

/* Each replica's node record (a "?" stand-in for an unknown node). 0, or
 * EXIT_ERR after saying why. */
static int health_read_nodes(struct qbd_meta *m, const struct qbd_volume_info *v,
			     struct vol_health *h)
{
	char hex[17];

	for (unsigned i = 0; i < v->replicas; i++) {
		struct replica_status *x = &h->rs[i];
		int r = cli_node_get(m, v->nodes[i], &x->node);

		if (r < 0 && r != -ENOENT) {
			fprintf(stderr, "qbd: cannot read node %s: %s\n",
				qbd_id_str(v->nodes[i], hex), strerror(-r));
			return EXIT_ERR;
		}
		x->known = r == 0;
	}
	return 0;
}

/* Take the writer's document into h when it is well formed and of the
 * attached writer's epoch; otherwise warn and use none of it. */
static void health_apply_status(const struct qbd_volume_info *v, struct vol_health *h,
				const char *st_json)
{
	uint64_t st_epoch = 0;

	if (health_parse_status(st_json, v, h->rs, &h->chg, &st_epoch, &h->st_updated) < 0) {
		fprintf(stderr, "qbd: warning: volume '%s': malformed status document "
			"ignored\n", v->name);
	} else if (st_epoch != h->att.epoch) {
		fprintf(stderr, "qbd: warning: volume '%s': status document of epoch %"
			PRIu64 ", writer has epoch %" PRIu64 ": ignored\n", v->name,
			st_epoch, h->att.epoch);
	} else {
		h->have_status = true;
		return;
	}
	for (unsigned i = 0; i < v->replicas; i++)
		h->rs[i].reported = false;
	h->chg.have = false;
}

/* Count usable and current replicas and name the volume's health. */
static void health_judge(const struct qbd_volume_info *v, struct vol_health *h)
{
	for (unsigned i = 0; i < v->replicas; i++) {
		h->usable += cli_replica_usable(&h->rs[i], h->have_status);
		h->current += health_replica_current(&h->rs[i], h->have_status);
	}
	h->health = h->current == v->replicas ? CLI_HEALTHY :
		    h->usable >= v->write_quorum ? CLI_DEGRADED : CLI_FAILED;
	/* Attached, but no status document of this writer (not yet
	 * published, or one of an older epoch): the nodes being alive says
	 * nothing about whether the writer reaches them or what they lack,
	 * so healthy would be a guess. Known trouble (a node down) stays. */
	if (h->health == CLI_HEALTHY && h->attached && !h->have_status)
		h->health = CLI_UNKNOWN;
	h->rc = cli_health_exit(h->health);
}

/* The health of volume v as etcd tells it: its replicas' nodes, and the
 * writer's status document when attached. 0, or EXIT_ERR after saying
 * why. */
int cli_volume_health(struct qbd_meta *m, const struct qbd_volume_info *v,
		      struct vol_health *h)
{
	char *st_json = NULL;

	memset(h, 0, sizeof *h);
	if (health_read_writer(m, v, h, &st_json) || health_read_nodes(m, v, h)) {
		free(st_json);
		return EXIT_ERR;
	}
	if (st_json)
		health_apply_status(v, h, st_json);
	free(st_json);
	health_judge(v, h);
	return 0;
}

int cli_health_exit(enum cli_health health)
{
	switch (health) {
	case CLI_HEALTHY:
		return EXIT_OK;
	case CLI_UNKNOWN:
	case CLI_DEGRADED:
		return EXIT_DEGRADED;
	case CLI_FAILED:
		break;
	}
	return EXIT_FAILED;
}

const char *cli_health_name(enum cli_health health)
{
	switch (health) {
	case CLI_HEALTHY:
		return "healthy";
	case CLI_UNKNOWN:
		return "unknown";
	case CLI_DEGRADED:
		return "degraded";
	case CLI_FAILED:
		break;
	}
	return "failed";
}
