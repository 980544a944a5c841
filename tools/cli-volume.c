/* SPDX-License-Identifier: Apache-2.0 */
/* qbd volume create|list|info|status|resize|delete: volumes in etcd, the
 * space they take on their replicas, and their health as cli-health.c
 * judges it. Create, delete and resize are replicator/admin's volume
 * operations; here are their options and what they print. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

/* ---- space a volume takes on its replicas (USAGE requests) ---- */

struct replica_usage {
	bool ok;
	int err;                /* !ok: why */
	struct admin_usage u;
};

/* Ask each replica of v how much of it it holds; a replica that cannot
 * answer gets ok = false. Returns the bytes held by all that answered. */
static uint64_t cli_volume_usage(const struct qbd_volume_info *v, uint64_t cluster_id,
				 const struct qbd_node_info *const nodes[],
				 struct replica_usage *out)
{
	uint64_t total = 0;

	for (unsigned i = 0; i < v->replicas; i++) {
		struct admin_conn ac;
		struct qbd_node_info n = *nodes[i];

		memset(&out[i], 0, sizeof out[i]);
		n.id = v->nodes[i];
		out[i].err = n.addr[0] && strcmp(n.addr, "?") ? admin_connect(&n, cluster_id, &ac)
							       : -ENOENT;
		if (out[i].err == 0) {
			out[i].err = admin_usage(&ac, v->id, &out[i].u);
			admin_close(&ac);
		}
		out[i].ok = out[i].err == 0;
		if (out[i].ok)
			total += out[i].u.held;
	}
	return total;
}

static void cli_usage_json(json_object *o, const struct replica_usage *u)
{
	if (!u->ok) {
		json_object_object_add(o, "usage_error", json_object_new_string(strerror(-u->err)));
		return;
	}
	json_object_object_add(o, "chunks", cli_json_u64(u->u.chunks));
	json_object_object_add(o, "held", cli_json_u64(u->u.held));
	json_object_object_add(o, "used", cli_json_u64(u->u.used));
}

static const char *cli_usage_str(const struct replica_usage *u, char *buf, size_t len)
{
	char h[32];

	if (!u->ok)
		return "?";
	snprintf(buf, len, "%s/%" PRIu64 "ch", qbd_format_size(u->u.held, h, sizeof h),
		 u->u.chunks);
	return buf;
}

static const char volume_usage[] =
	"usage: qbd volume create NAME --size SIZE [--replicas R] [--write-quorum W]\n"
	"       qbd volume list [--json]\n"
	"       qbd volume info NAME [--json]\n"
	"       qbd volume status NAME [--json]\n"
	"       qbd volume resize NAME --size SIZE [--timeout S]\n"
	"       qbd volume delete NAME\n"
	"       qbd volume move NAME --from NODE [--to NODE]\n"
	"       qbd volume fence NAME | --node NODE [--json]\n"
	"status exits 0 healthy, 3 degraded (>= W replicas usable) or unknown\n"
	"(attached, no status from the writer yet), 4 failed (fewer than W\n"
	"usable), 1 on errors, 2 on usage errors.\n"
	"resize only grows; while attached it waits (default 30 s) until the\n"
	"writer serves the new size.\n";

/* Open etcd and read volume name (and its epoch, unless epoch is NULL).
 * 0 with *m open (the caller closes it), or an exit status after saying
 * why. */
static int volume_open(const char *name, struct qbd_meta **m, struct qbd_volume_info *v,
		       uint64_t *epoch)
{
	int r;

	if ((r = cli_meta(m)))
		return r;
	r = qbd_meta_volume_get(*m, name, v);
	if (r == 0 && epoch)
		r = qbd_meta_epoch_get(*m, v->id, epoch);
	if (r < 0) {
		fprintf(stderr, "qbd: volume '%s': %s\n", name,
			r == -ENOENT ? "no such volume" : strerror(-r));
		qbd_meta_close(*m);
		*m = NULL;
		return EXIT_ERR;
	}
	return 0;
}

/* The change that stands in a volume's record and the change requested
 * of it, with the records of the nodes they bring in ("?" stand-ins
 * when unknown). */
struct volume_change_view {
	struct qbd_node_info to;        /* the standing change's node */
	bool has_req;
	struct qbd_change_request req;
	struct qbd_node_info req_to;    /* the request's node (id 0: placement picks) */
};

static char *cli_time(uint64_t t, char *buf, size_t len);

/* Read them. 0, or EXIT_ERR after saying why. */
static int volume_change_load(struct qbd_meta *m, const struct qbd_volume_info *v,
			      struct volume_change_view *cv)
{
	int r;

	memset(cv, 0, sizeof *cv);
	if (v->change.phase != QBD_CHANGE_NONE)
		(void)cli_node_get(m, v->change.node, &cv->to);
	r = qbd_meta_change_get(m, v->id, &cv->req);
	if (r == 0) {
		cv->has_req = true;
		if (cv->req.to)
			(void)cli_node_get(m, cv->req.to, &cv->req_to);
	} else if (r != -ENOENT) {
		fprintf(stderr, "qbd: volume '%s': cannot read its change request: %s\n",
			v->name, strerror(-r));
		return EXIT_ERR;
	}
	return 0;
}

static void volume_change_json(json_object *o, const struct qbd_volume_info *v,
			       const struct volume_change_view *cv)
{
	json_object_object_add(o, "change", cli_change_json(v, cv->to.addr[0] &&
							strcmp(cv->to.addr, "?") ? &cv->to : NULL));
	json_object_object_add(o, "change_request",
			       cv->has_req ? cli_change_request_json(&cv->req) : NULL);
}

/* The configuration's lines: its number, the change in progress, the
 * change asked for. */
static void volume_change_print(const struct qbd_volume_info *v,
				const struct volume_change_view *cv)
{
	char hx[17], hy[17], tbuf[64];

	printf("Configuration: %" PRIu64 "\n", v->cfg);
	if (v->change.phase != QBD_CHANGE_NONE)
		printf("Change:        %s: replica %u, node %s -> node %s (zone %s), "
		       "reason %s, since %s\n", qbd_meta_change_phase_name(v->change.phase),
		       v->change.slot, qbd_id_str(v->nodes[v->change.slot], hx),
		       qbd_id_str(v->change.node, hy), cv->to.zone,
		       qbd_meta_change_reason_name(v->change.reason),
		       cli_time(v->change.started, tbuf, sizeof tbuf));
	if (cv->has_req) {
		char to[128];

		if (cv->req.to)
			snprintf(to, sizeof to, "node %s (zone %s)", qbd_id_str(cv->req.to, hy),
				 cv->req_to.zone);
		else
			snprintf(to, sizeof to, "a node placement picks");
		printf("Requested:     replica on node %s -> %s, reason %s, at %s; %s\n",
		       qbd_id_str(cv->req.from, hx), to,
		       qbd_meta_change_reason_name(cv->req.reason),
		       cli_time(cv->req.created, tbuf, sizeof tbuf), CLI_CHANGE_CARRIED_BY);
	}
}

/* The lines that open both volume info and volume status. */
static void volume_print_head(const struct qbd_volume_info *v, uint64_t epoch,
			      bool chunk_size)
{
	char hex[17], sz[32];

	printf("Volume:        %s\n", v->name);
	printf("ID:            %s\n", qbd_id_str(v->id, hex));
	printf("Size:          %s (%" PRIu64 " bytes)\n", qbd_format_size(v->size, sz, sizeof sz),
	       v->size);
	if (chunk_size)
		printf("Chunk size:    %u\n", v->chunk_size);
	printf("Replication:   R=%u, write quorum W=%u\n", v->replicas, v->write_quorum);
	printf("Epoch:         %" PRIu64 "\n", epoch);
}

static int volume_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "replicas", required_argument, NULL, 'r' },
		{ "write-quorum", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct qbd_volume_info v = { .chunk_size = ADMIN_CHUNK_SIZE, .replicas = 3 };
	struct qbd_meta *m;
	const char *name;
	char why[512];
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (qbd_parse_size(optarg, &v.size) < 0 || v.size == 0 ||
			    v.size % 4096) {
				fprintf(stderr, "qbd: --size '%s': need a positive multiple "
					"of 4096 bytes, e.g. 10G\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'r':
			v.replicas = (unsigned)atoi(optarg);
			if (v.replicas < 1 || v.replicas > QBD_MAX_REPLICAS) {
				fprintf(stderr, "qbd: --replicas must be 1..%d\n", QBD_MAX_REPLICAS);
				return EXIT_USAGE;
			}
			break;
		case 'w':
			v.write_quorum = (unsigned)atoi(optarg);
			if (v.write_quorum < 1) {
				fprintf(stderr, "qbd: --write-quorum must be a number >= 1\n");
				return EXIT_USAGE;
			}
			break;
		case 'h':
			fputs(volume_usage, stdout);
			return EXIT_OK;
		default:
			fputs(volume_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || v.size == 0) {
		fputs(volume_usage, stderr);
		return EXIT_USAGE;
	}
	name = argv[optind];
	if (!qbd_meta_volume_name_ok(name)) {
		fprintf(stderr, "qbd: invalid volume name '%s' (letters, digits, "
			"'.', '_', '-'; at most %d characters)\n", name, QBD_NAME_MAX - 1);
		return EXIT_USAGE;
	}
	if (v.write_quorum == 0)
		v.write_quorum = admin_default_write_quorum(v.replicas);
	if (v.write_quorum > v.replicas) {
		fprintf(stderr, "qbd: --write-quorum must be 1..%u\n", v.replicas);
		return EXIT_USAGE;
	}
	if ((r = cli_meta(&m)))
		return r;
	r = admin_volume_create(m, name, v.size, v.replicas, v.write_quorum, &v, why,
				sizeof why);
	qbd_meta_close(m);
	if (r < 0) {
		fprintf(stderr, "qbd: %s\n", why);
		return EXIT_ERR;
	}
	char sz[32], hex[17];
	printf("created volume %s: id %s, %s, %u replicas, write quorum %u\n", name,
	       qbd_id_str(v.id, hex), qbd_format_size(v.size, sz, sizeof sz),
	       v.replicas, v.write_quorum);
	return EXIT_OK;
}

static int volume_list(int argc, char **argv)
{
	struct qbd_meta *m;
	struct qbd_volume_info *vols;
	size_t n;
	int r;

	if ((r = cli_simple_opts(argc, argv, 0, volume_usage)) >= 0)
		return r;
	if ((r = cli_meta(&m)))
		return r;
	r = qbd_meta_volume_list(m, &vols, &n);
	qbd_meta_close(m);
	if (r < 0) {
		fprintf(stderr, "qbd: cannot list volumes: %s\n", strerror(-r));
		return EXIT_ERR;
	}
	if (cli_json) {
		json_object *arr = json_object_new_array();
		for (size_t i = 0; i < n; i++)
			json_object_array_add(arr, cli_volume_json(&vols[i]));
		cli_print_json(arr);
		free(vols);
		return EXIT_OK;
	}
	printf("%-24s  %-16s  %10s  %s\n", "NAME", "ID", "SIZE", "R/W");
	for (size_t i = 0; i < n; i++) {
		char hex[17], sz[32];
		printf("%-24s  %-16s  %10s  %u/%u\n", vols[i].name,
			       qbd_id_str(vols[i].id, hex),
			       qbd_format_size(vols[i].size, sz, sizeof sz),
			       vols[i].replicas, vols[i].write_quorum);
	}
	free(vols);
	return EXIT_OK;
}

static int volume_info(int argc, char **argv)
{
	struct qbd_meta *m;
	struct qbd_volume_info v;
	struct qbd_node_info nodes[QBD_MAX_REPLICAS];
	const struct qbd_node_info *np[QBD_MAX_REPLICAS];
	struct replica_usage ru[QBD_MAX_REPLICAS];
	struct volume_change_view cv;
	uint64_t epoch = 0, cluster_id = 0, held;
	char hex[17], sz[32], ub[48];
	int r;

	if ((r = cli_simple_opts(argc, argv, 1, volume_usage)) >= 0)
		return r;
	const char *name = argv[optind];
	if ((r = volume_open(name, &m, &v, &epoch)))
		return r;
	if ((r = volume_change_load(m, &v, &cv))) {
		qbd_meta_close(m);
		return r;
	}
	for (unsigned i = 0; i < v.replicas; i++)
		(void)cli_node_get(m, v.nodes[i], &nodes[i]);
	(void)qbd_meta_cluster_id(m, false, &cluster_id);
	qbd_meta_close(m);
	for (unsigned i = 0; i < v.replicas; i++)
		np[i] = &nodes[i];
	held = cli_volume_usage(&v, cluster_id, np, ru);
	if (cli_json) {
		json_object *o = cli_volume_json(&v), *arr = json_object_new_array();
		json_object_object_add(o, "epoch", cli_json_u64(epoch));
		for (unsigned i = 0; i < v.replicas; i++) {
			json_object *e = cli_node_json(&nodes[i], false);
			cli_usage_json(e, &ru[i]);
			json_object_array_add(arr, e);
		}
		json_object_object_add(o, "nodes", arr);
		json_object_object_add(o, "held", cli_json_u64(held));
		volume_change_json(o, &v, &cv);
		cli_print_json(o);
		return EXIT_OK;
	}
	volume_print_head(&v, epoch, true);
	volume_change_print(&v, &cv);
	printf("Held:          %s of data on all replicas\n", qbd_format_size(held, sz, sizeof sz));
	printf("Replicas:\n");
	printf("  #  NODE              ZONE        ADDRESS                 HELD/CHUNKS     STATE\n");
	for (unsigned i = 0; i < v.replicas; i++)
		printf("  %-1u  %-16s  %-10s  %-22s  %-14s  %s\n", i, qbd_id_str(nodes[i].id, hex),
		       nodes[i].zone, nodes[i].addr, cli_usage_str(&ru[i], ub, sizeof ub),
		       nodes[i].alive ? "up" : "down");
	return EXIT_OK;
}

static char *cli_time(uint64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!localtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(buf, len, "%" PRIu64, t);
	return buf;
}

/* The size the writer serves, from its status document, when the
 * document is of epoch `epoch` or later (a writer after it read the
 * record anew); 0 when there is none, or it is older, or says no size
 * (a writer from before resize). */
static uint64_t volume_writer_size(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch)
{
	json_object *o, *e, *sz;
	uint64_t size = 0;
	char *doc;

	if (qbd_meta_status_get(m, volume_id, &doc) < 0)
		return 0;
	o = json_tokener_parse(doc);
	if (o && json_object_object_get_ex(o, "epoch", &e) &&
	    (uint64_t)json_object_get_int64(e) >= epoch &&
	    json_object_object_get_ex(o, "size", &sz))
		size = (uint64_t)json_object_get_int64(sz);
	json_object_put(o);
	free(doc);
	return size;
}

/* What volume status shows: the volume, its health, its space. */
struct volume_status_view {
	struct qbd_volume_info v;
	struct volume_change_view cv;
	uint64_t epoch, held;
	uint64_t writer_size;   /* the size the writer serves; 0 unknown */
	struct vol_health vh;
	struct replica_usage ru[QBD_MAX_REPLICAS];
};

static void volume_status_json(const struct volume_status_view *sv)
{
	const struct vol_health *vh = &sv->vh;
	const struct qbd_attachment *att = &vh->att;
	json_object *o = cli_volume_json(&sv->v), *arr = json_object_new_array();

	json_object_object_add(o, "epoch", cli_json_u64(sv->epoch));
	json_object_object_add(o, "attachment", vh->attached ? cli_attachment_json(att) : NULL);
	json_object_object_add(o, "status_updated",
			       vh->have_status ? cli_json_u64(vh->st_updated) : NULL);
	json_object_object_add(o, "writer_size",
			       sv->writer_size ? cli_json_u64(sv->writer_size) : NULL);
	for (unsigned i = 0; i < sv->v.replicas; i++) {
		const struct replica_status *x = &vh->rs[i];
		json_object *e = cli_node_json(&x->node, false);

		json_object_object_add(e, "index", json_object_new_int((int)i));
		json_object_object_add(e, "known", json_object_new_boolean(x->known));
		if (vh->have_status && x->reported) {
			json_object_object_add(e, "state", json_object_new_string(x->state));
			json_object_object_add(e, "stale_chunks", cli_json_u64(x->stale));
			json_object_object_add(e, "resync_done_chunks", cli_json_u64(x->resync_done));
			json_object_object_add(e, "resync_total_chunks",
					       cli_json_u64(x->resync_total));
			json_object_object_add(e, "resync_percent",
					       json_object_new_int((int)cli_replica_percent(x)));
			if (strcmp(x->state, "silent") == 0)
				json_object_object_add(e, "silent_s", cli_json_u64(
					cli_replica_silent_s(x, vh->st_updated)));
		}
		json_object_object_add(e, "usable",
				       json_object_new_boolean(cli_replica_usable(x, vh->have_status)));
		cli_usage_json(e, &sv->ru[i]);
		json_object_array_add(arr, e);
	}
	json_object_object_add(o, "replica_status", arr);
	json_object_object_add(o, "held", cli_json_u64(sv->held));
	json_object_object_add(o, "usable", json_object_new_int((int)vh->usable));
	json_object_object_add(o, "health", json_object_new_string(cli_health_name(vh->health)));
	volume_change_json(o, &sv->v, &sv->cv);
	json_object_object_add(o, "change_progress", cli_change_progress_json(&vh->chg));
	cli_print_json(o);
}

/* One replica's line of the text table; a progress bar on a terminal. */
static void volume_status_replica_row(const struct volume_status_view *sv, unsigned i)
{
	const struct replica_status *x = &sv->vh.rs[i];
	const bool have_status = sv->vh.have_status;
	char resync[96] = "-", stale[24] = "-", hex[17], ub[48];

	if (have_status && x->reported && x->resync_total) {
		unsigned pc = cli_replica_percent(x);
		int l = snprintf(resync, sizeof resync, "%" PRIu64 "/%" PRIu64 " %u%%",
				 x->resync_done, x->resync_total, pc);
		if (isatty(STDOUT_FILENO) && l > 0 && (size_t)l + 24 < sizeof resync) {
			char *p = resync + l;
			*p++ = ' ';
			*p++ = '[';
			for (unsigned k = 0; k < 20; k++)
				*p++ = k < pc / 5 ? '#' : '.';
			*p++ = ']';
			*p = '\0';
		}
	}
	if (have_status && x->reported)
		snprintf(stale, sizeof stale, "%" PRIu64, x->stale);
	printf("  %-1u  %-16s  %-10s  %-22s  %-14s  %-4s  %-6s  %5s  %s\n", i,
	       qbd_id_str(x->node.id, hex), x->node.zone, x->node.addr,
	       cli_usage_str(&sv->ru[i], ub, sizeof ub),
	       !x->known ? "?" : x->node.alive ? "up" : "down",
	       have_status ? (x->reported ? x->state : "?") : "-", stale, resync);
}

/* A line for each replica the writer reports silent: it has not
 * answered for a while, and the writer still counts it until its request
 * timeout drops it. */
static void volume_status_silent(const struct volume_status_view *sv)
{
	for (unsigned i = 0; i < sv->v.replicas; i++) {
		const struct replica_status *x = &sv->vh.rs[i];

		if (!sv->vh.have_status || !x->reported || strcmp(x->state, "silent") != 0)
			continue;
		printf("Silent:        replica %u (zone %s) has not answered for %" PRIu64
		       " s; the writer drops it after its request timeout\n", i,
		       x->node.zone, cli_replica_silent_s(x, sv->vh.st_updated));
	}
}

static void volume_status_text(const struct volume_status_view *sv)
{
	const struct vol_health *vh = &sv->vh;
	const struct qbd_attachment *att = &vh->att;
	const struct qbd_volume_info *v = &sv->v;
	char sz[32], tbuf[64];

	volume_print_head(v, sv->epoch, false);
	volume_change_print(v, &sv->cv);
	if (vh->attached)
		printf("Attached:      host %s, zone %s, pid %d, epoch %" PRIu64 ", since %s\n",
		       att->host[0] ? att->host : "?", att->zone[0] ? att->zone : "?", att->pid,
		       att->epoch, cli_time(att->since, tbuf, sizeof tbuf));
	else
		printf("Attached:      not attached\n");
	if (vh->have_status)
		printf("Status:        updated %s\n", cli_time(vh->st_updated, tbuf, sizeof tbuf));
	else if (vh->attached)
		printf("Status:        no status from the writer yet\n");
	if (vh->attached && sv->writer_size && sv->writer_size != v->size)
		printf("Serving:       %s (the writer has not taken the new size yet)\n",
		       qbd_format_size(sv->writer_size, sz, sizeof sz));
	printf("Held:          %s of data on all replicas\n",
	       qbd_format_size(sv->held, sz, sizeof sz));
	printf("Replicas:\n");
	printf("  #  NODE              ZONE        ADDRESS                 HELD/CHUNKS     "
	       "NODE  STATE   STALE  RESYNC\n");
	for (unsigned i = 0; i < v->replicas; i++)
		volume_status_replica_row(sv, i);
	volume_status_silent(sv);
	if (vh->chg.have) {
		char line[192];

		printf("Copying:       %s\n", cli_change_progress_str(&vh->chg, line, sizeof line));
	}
	if (vh->health == CLI_UNKNOWN)
		printf("Health:        unknown (no status from the writer yet; %u of %u "
		       "replicas' nodes alive, write quorum %u)\n", vh->usable, v->replicas,
		       v->write_quorum);
	else
		printf("Health:        %s (%u of %u replicas usable, %u current, write "
		       "quorum %u)\n", cli_health_name(vh->health), vh->usable, v->replicas,
		       vh->current, v->write_quorum);
}

/* qbd volume status NAME: read etcd, ask the replicas for their space,
 * print; the exit status is the volume's health. */
static int volume_status(int argc, char **argv)
{
	struct volume_status_view sv = { .epoch = 0 };
	const struct qbd_node_info *np[QBD_MAX_REPLICAS];
	struct qbd_meta *m;
	uint64_t cluster_id = 0;
	int r;

	if ((r = cli_simple_opts(argc, argv, 1, volume_usage)) >= 0)
		return r;
	if ((r = volume_open(argv[optind], &m, &sv.v, &sv.epoch)))
		return r;
	if (cli_volume_health(m, &sv.v, &sv.vh) || volume_change_load(m, &sv.v, &sv.cv)) {
		qbd_meta_close(m);
		return EXIT_ERR;
	}
	if (sv.vh.attached)
		sv.writer_size = volume_writer_size(m, sv.v.id, sv.vh.att.epoch);
	(void)qbd_meta_cluster_id(m, false, &cluster_id);
	qbd_meta_close(m);
	for (unsigned i = 0; i < sv.v.replicas; i++)
		np[i] = &sv.vh.rs[i].node;
	sv.held = cli_volume_usage(&sv.v, cluster_id, np, sv.ru);
	if (cli_json)
		volume_status_json(&sv);
	else
		volume_status_text(&sv);
	return sv.vh.rc;
}

/* Wait up to timeout_s for the writer attached at `epoch` to serve size
 * bytes (its status document says so, at once after it took the size:
 * replicator/client/attach.c); true when it does. */
static bool volume_resize_wait(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch,
			       uint64_t size, unsigned timeout_s)
{
	uint64_t end = qbd_now_ns() + timeout_s * 1000000000ull;

	for (;;) {
		if (volume_writer_size(m, volume_id, epoch) >= size)
			return true;
		if (qbd_now_ns() >= end)
			return false;
		usleep(200 * 1000);
	}
}

static void volume_resize_json(const struct qbd_volume_info *v, uint64_t old_size,
			       uint64_t size, bool attached, bool served)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(v->name));
	json_object_object_add(o, "old_size", cli_json_u64(old_size));
	json_object_object_add(o, "size", cli_json_u64(size));
	json_object_object_add(o, "attached", json_object_new_boolean(attached));
	json_object_object_add(o, "served", json_object_new_boolean(served));
	cli_print_json(o);
}

/*
 * qbd volume resize NAME --size SIZE: grow the volume's record by
 * compare-and-swap (qbd_meta_volume_grow); an attached writer takes the
 * size from etcd within 2 s, grows /dev/nbdX, and offers it to new NBD
 * connections; we wait for its status document to say so. A smaller size
 * is refused, attached or not: the chunks past the new end would keep
 * their data on every replica (and on one that is down, out of reach),
 * and a later grow would show it again (docs/design.md, "Resize").
 */
static int volume_resize(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct admin_grow_result g;
	struct qbd_meta *m;
	uint64_t size = 0;
	unsigned timeout_s = 30;
	char a[32], b[32], why[512];
	bool served = false;
	const char *name;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (qbd_parse_size(optarg, &size) < 0 || size == 0 || size % 4096) {
				fprintf(stderr, "qbd: --size '%s': need a positive multiple "
					"of 4096 bytes, e.g. 20G\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 't':
			timeout_s = (unsigned)atoi(optarg);
			if (timeout_s < 1 || timeout_s > 3600) {
				fprintf(stderr, "qbd: --timeout must be 1..3600 seconds\n");
				return EXIT_USAGE;
			}
			break;
		case 'h':
			fputs(volume_usage, stdout);
			return EXIT_OK;
		default:
			fputs(volume_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || size == 0) {
		fputs(volume_usage, stderr);
		return EXIT_USAGE;
	}
	name = argv[optind];
	if ((r = cli_meta(&m)))
		return r;
	r = admin_volume_grow(m, name, size, &g, why, sizeof why);
	if (r < 0) {
		qbd_meta_close(m);
		fprintf(stderr, "qbd: %s%s\n", r == -EFBIG ? "--size: " : "", why);
		return r == -EFBIG ? EXIT_USAGE : EXIT_ERR;
	}
	const struct qbd_attachment *att = &g.att;
	const bool attached = g.attached;
	const uint64_t old_size = g.old_size;

	if (attached)
		served = volume_resize_wait(m, g.v.id, att->epoch, size, timeout_s);
	qbd_meta_close(m);
	if (cli_json)
		volume_resize_json(&g.v, old_size, size, attached, served);
	if (attached && !served) {
		fprintf(stderr, "qbd: volume %s: grown to %s in etcd, but its writer (host %s, "
			"pid %d) has not served the new size within %u s; it takes it from etcd "
			"(a qbd-nbd from before resize only at its next attach)\n", name,
			qbd_format_size(size, b, sizeof b), att->host[0] ? att->host : "?", att->pid,
			timeout_s);
		return EXIT_ERR;
	}
	if (cli_json)
		return EXIT_OK;
	if (old_size == size)
		printf("volume %s is %s already\n", name, qbd_format_size(size, b, sizeof b));
	else if (attached)
		printf("volume %s: grown from %s to %s; its writer on host %s serves it (a "
		       "device grows at once, NBD socket clients see it when they connect "
		       "again)\n", name, qbd_format_size(old_size, a, sizeof a),
		       qbd_format_size(size, b, sizeof b), att->host[0] ? att->host : "?");
	else
		printf("volume %s: grown from %s to %s\n", name,
		       qbd_format_size(old_size, a, sizeof a), qbd_format_size(size, b, sizeof b));
	return EXIT_OK;
}

static int volume_delete(int argc, char **argv)
{
	struct admin_delete_result res;
	struct qbd_meta *m;
	char why[512], line[512];
	int r;

	if ((r = cli_simple_opts(argc, argv, 1, volume_usage)) >= 0)
		return r;
	const char *name = argv[optind];
	if ((r = cli_meta(&m)))
		return r;
	r = admin_volume_delete(m, name, &res, why, sizeof why);
	qbd_meta_close(m);
	for (unsigned i = 0; i < res.replicas; i++)
		if (res.replica[i].err)
			fprintf(stderr, "qbd: warning: %s\n",
				admin_replica_warning(&res.replica[i], line, sizeof line));
	if (r < 0) {
		fprintf(stderr, "qbd: %s\n", why);
		return EXIT_ERR;
	}
	printf("deleted volume %s\n", name);
	return EXIT_OK;
}

int cmd_volume(int argc, char **argv)
{
	if (argc < 2) {
		fputs(volume_usage, stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0) {
		fputs(volume_usage, stdout);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "create") == 0)
		return volume_create(argc - 1, argv + 1);
	if (strcmp(argv[1], "list") == 0)
		return volume_list(argc - 1, argv + 1);
	if (strcmp(argv[1], "info") == 0)
		return volume_info(argc - 1, argv + 1);
	if (strcmp(argv[1], "status") == 0)
		return volume_status(argc - 1, argv + 1);
	if (strcmp(argv[1], "resize") == 0)
		return volume_resize(argc - 1, argv + 1);
	if (strcmp(argv[1], "delete") == 0)
		return volume_delete(argc - 1, argv + 1);
	if (strcmp(argv[1], "move") == 0)
		return cmd_volume_move(argc - 1, argv + 1);
	if (strcmp(argv[1], "fence") == 0)
		return cmd_volume_fence(argc - 1, argv + 1);
	fprintf(stderr, "qbd volume: unknown command '%s'\n%s", argv[1], volume_usage);
	return EXIT_USAGE;
}
