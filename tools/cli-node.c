/* SPDX-License-Identifier: Apache-2.0 */
/* qbd node ...: the chunk servers etcd knows, their zones, space and
 * state. The space is what each chunk server publishes in its node
 * record, orphaned space included (held by volumes etcd no longer has,
 * or whose configuration no longer lists the node: its reclaim scan
 * counts it, docs/design.md "Reclaim"), so listing the nodes contacts
 * none of them.
 *
 * qbd node drain|undrain|remove and qbd volume move ask for membership
 * changes (docs/protocol.md section 11): they set a node's state and
 * write one change request per volume to move, each with the node
 * placement chose to take the replica (replicator/meta/place.c). They
 * carry nothing out: each volume's writer, or qbd-managerd for a volume
 * nobody has attached, does. Every request is planned before anything
 * is written, so a volume that cannot be placed refuses the whole
 * command and changes nothing. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "internal.h"

/* Node id's record into *node. On any failure *node is a stand-in with
 * that id, zone and address "?", and not alive. 0, or -errno (-ENOENT:
 * no such node). */
int cli_node_get(struct qbd_meta *m, uint64_t id, struct qbd_node_info *node)
{
	int r = qbd_meta_node_get(m, id, node);

	if (r < 0) {
		memset(node, 0, sizeof *node);
		node->id = id;
		snprintf(node->zone, sizeof node->zone, "?");
		snprintf(node->addr, sizeof node->addr, "?");
	}
	return r;
}

static const char node_usage[] =
	"usage: qbd node list [--json]\n"
	"       qbd node drain NODE           move every replica off NODE\n"
	"       qbd node undrain NODE         NODE back in service\n"
	"       qbd node remove NODE [--yes]  NODE is gone for good: replace its replicas\n"
	"NODE: a node id or address, as `qbd node list` prints them.\n"
	"list exits 0 when every node is up, 3 when some are down, 4 when none is up.\n"
	"drain and remove ask for one change per volume with a replica on NODE (a\n"
	"new node for it, chosen now: same zone first, else a zone the volume does\n"
	"not use), and refuse, changing nothing, when a volume cannot be placed;\n"
	"each change is carried out by the volume's writer or qbd-managerd.\n"
	"remove asks for confirmation while NODE is up, unless --yes.\n";

/* ---- what etcd holds: nodes, volumes, change requests ---- */

struct cli_cluster {
	struct qbd_node_info *nodes;
	size_t nn;
	struct qbd_volume_info *vols;
	size_t nv;
	struct qbd_change_request *reqs;
	size_t nr;
};

static void cli_cluster_free(struct cli_cluster *c)
{
	free(c->nodes);
	free(c->vols);
	free(c->reqs);
	memset(c, 0, sizeof *c);
}

/* Read them all; 0, or EXIT_ERR after saying why. */
static int cli_cluster_load(struct qbd_meta *m, struct cli_cluster *c, bool reqs)
{
	const char *what = "nodes";
	int r;

	memset(c, 0, sizeof *c);
	r = qbd_meta_node_list(m, &c->nodes, &c->nn);
	if (r == 0) {
		what = "volumes";
		r = qbd_meta_volume_list(m, &c->vols, &c->nv);
	}
	if (r == 0 && reqs) {
		what = "change requests";
		r = qbd_meta_change_list(m, &c->reqs, &c->nr);
	}
	if (r < 0) {
		fprintf(stderr, "qbd: cannot list %s: %s\n", what, strerror(-r));
		cli_cluster_free(c);
		return EXIT_ERR;
	}
	return 0;
}

static struct qbd_node_info *cluster_node(struct cli_cluster *c, uint64_t id)
{
	for (size_t i = 0; i < c->nn; i++)
		if (c->nodes[i].id == id)
			return &c->nodes[i];
	return NULL;
}

static const struct qbd_change_request *cluster_request(const struct cli_cluster *c,
							 uint64_t volume_id)
{
	for (size_t i = 0; i < c->nr; i++)
		if (c->reqs[i].volume_id == volume_id)
			return &c->reqs[i];
	return NULL;
}

/* The slot of v that node id holds, or -1. */
static int volume_slot(const struct qbd_volume_info *v, uint64_t id)
{
	for (unsigned i = 0; i < v->replicas; i++)
		if (v->nodes[i] == id)
			return (int)i;
	return -1;
}

/* Volumes with a replica on node id, the node a change brings in
 * included. */
static unsigned node_replicas(const struct cli_cluster *c, uint64_t id)
{
	unsigned k = 0;

	for (size_t i = 0; i < c->nv; i++)
		k += volume_slot(&c->vols[i], id) >= 0 ||
		     (c->vols[i].change.phase != QBD_CHANGE_NONE && c->vols[i].change.node == id);
	return k;
}

/* What the STATE column says: in, draining, removed; "empty" once a
 * draining node holds no replica. */
static const char *node_state_word(const struct cli_cluster *c, const struct qbd_node_info *n)
{
	if (n->state == QBD_NODE_DRAINING && node_replicas(c, n->id) == 0)
		return "empty";
	return qbd_meta_node_state_name(n->state);
}

/* NODE as the operator wrote it: an id (the hex of `qbd node list`,
 * leading zeros optional) or an address. A node id without a record
 * is accepted when some volume still has a replica there (its record
 * was deleted with it). 0 and *id, or EXIT_ERR after saying why. */
static int node_resolve(const struct cli_cluster *c, const char *arg, uint64_t *id)
{
	uint64_t x;
	size_t hits = 0;

	if (qbd_id_parse(arg, &x) == 0) {
		for (size_t i = 0; i < c->nn; i++)
			if (c->nodes[i].id == x) {
				*id = x;
				return 0;
			}
		if (node_replicas(c, x)) {
			*id = x;
			return 0;
		}
	}
	for (size_t i = 0; i < c->nn; i++)
		if (strcmp(c->nodes[i].addr, arg) == 0) {
			*id = c->nodes[i].id;
			hits++;
		}
	if (hits == 1)
		return 0;
	if (hits > 1)
		fprintf(stderr, "qbd: %zu nodes have the address %s: name one by its id "
			"(qbd node list)\n", hits, arg);
	else
		fprintf(stderr, "qbd: no node '%s' (neither a node id nor an address that "
			"qbd node list shows)\n", arg);
	return EXIT_ERR;
}

static const char *node_zone(struct cli_cluster *c, uint64_t id)
{
	struct qbd_node_info *n = cluster_node(c, id);

	return n ? n->zone : "?";
}

/* ---- qbd node list ---- */

/* Under the table, what each node's ORPHANED space is: volumes deleted
 * while it was down, and volumes whose configuration no longer lists it
 * (its replica moved away while it was down); its chunk server reclaims
 * both after the grace. Nothing for a node with none. */
static void node_list_orphaned(const struct cli_cluster *c)
{
	for (size_t i = 0; i < c->nn; i++) {
		const struct qbd_node_orphaned *o = &c->nodes[i].orphaned;
		uint64_t moved = QBD_MIN(o->moved, o->volumes);
		char hex[17], h[32], mh[32];

		if (o->volumes == 0)
			continue;
		printf("orphaned on %s (zone %s): %s in %" PRIu64 " volume%s: %" PRIu64
		       " deleted, %" PRIu64 " not a member (moved away, %s)\n",
		       qbd_id_str(c->nodes[i].id, hex), c->nodes[i].zone,
		       qbd_format_size(o->held, h, sizeof h), o->volumes,
		       o->volumes == 1 ? "" : "s", o->volumes - moved, moved,
		       qbd_format_size(o->moved_held, mh, sizeof mh));
	}
}

static int node_list(int argc, char **argv)
{
	struct qbd_meta *m;
	struct cli_cluster c;
	int r;

	if ((r = cli_simple_opts(argc, argv, 0, "usage: qbd node list [--json]\n")) >= 0)
		return r;
	if ((r = cli_meta(&m)))
		return r;
	r = cli_cluster_load(m, &c, false);
	qbd_meta_close(m);
	if (r)
		return r;
	if (cli_json) {
		json_object *arr = json_object_new_array();
		for (size_t i = 0; i < c.nn; i++) {
			json_object *o = cli_node_json(&c.nodes[i], true);

			json_object_object_add(o, "state", json_object_new_string(
				node_state_word(&c, &c.nodes[i])));
			json_object_object_add(o, "replicas",
					       cli_json_u64(node_replicas(&c, c.nodes[i].id)));
			json_object_array_add(arr, o);
		}
		cli_print_json(arr);
	} else {
		printf("%-16s  %-10s  %-22s  %-4s  %-8s  %10s  %10s  %10s  %10s  %10s  %10s  %4s\n",
		       "NODE", "ZONE", "ADDRESS", "UP", "STATE", "CAPACITY", "USED", "HELD",
		       "ORPHANED", "FREE-SLOTS", "SCRUBBED", "BAD");
		for (size_t i = 0; i < c.nn; i++) {
			const struct qbd_node_info *n = &c.nodes[i];
			char hex[17], cp[32], u[32], h[32], o[32], sb[32];

			printf("%-16s  %-10s  %-22s  %-4s  %-8s  %10s  %10s  %10s  %10s  %10" PRIu64
			       "  %10s  %4" PRIu64 "\n",
			       qbd_id_str(n->id, hex), n->zone, n->addr, n->alive ? "up" : "down",
			       node_state_word(&c, n),
			       qbd_format_size(n->capacity, cp, sizeof cp),
			       qbd_format_size(n->used, u, sizeof u),
			       qbd_format_size(n->held, h, sizeof h),
			       qbd_format_size(n->orphaned.held, o, sizeof o),
			       n->free_slots,
			       qbd_format_size(n->scrub.bytes, sb, sizeof sb),
			       n->scrub.bad_blocks);
		}
		node_list_orphaned(&c);
	}
	/* Exit status: every node up, some down, none up. */
	size_t up = 0;
	for (size_t i = 0; i < c.nn; i++)
		up += c.nodes[i].alive;
	r = up == c.nn ? EXIT_OK : up ? EXIT_DEGRADED : EXIT_FAILED;
	cli_cluster_free(&c);
	return r;
}

/* ---- planning the changes off a node ---- */

/* One volume's replica to move off the node. */
struct move_plan {
	const struct qbd_volume_info *v;
	unsigned slot;
	uint64_t to;
	bool skip;              /* asked already, or being replaced: nothing to write */
};

/* A change request for v's slot, to node `to`. */
static struct qbd_change_request plan_request(const struct move_plan *p,
					      enum qbd_change_reason reason)
{
	struct qbd_change_request req = {
		.volume_id = p->v->id, .kind = QBD_CHANGE_KIND_REPLACE,
		.from = p->v->nodes[p->slot], .to = p->to, .reason = reason,
		.created = (uint64_t)time(NULL),
	};
	return req;
}

/* Plan one replica's move, into *p: whether it is asked for already,
 * and where it goes (to, or where placement chooses when to is 0). The
 * nodes' view counts the replicas planned so far (their `used` grows by
 * the volume's size) so that one command spreads them. 0, or 1 after
 * printing why this volume blocks the command. */
static int plan_one(struct cli_cluster *c, const struct qbd_volume_info *v, unsigned slot,
		    uint64_t x, uint64_t to, struct move_plan *p)
{
	const struct qbd_change_request *req = cluster_request(c, v->id);
	char why[1024], hx[17], hy[17];
	int r;

	*p = (struct move_plan){ .v = v, .slot = slot };
	if (req && req->from == x) {
		printf("volume %s: replica %u on node %s: a change is requested already "
		       "(reason %s)\n", v->name, slot, qbd_id_str(x, hx),
		       qbd_meta_change_reason_name(req->reason));
		p->skip = true;
		return 0;
	}
	if (req) {
		fprintf(stderr, "qbd: volume %s: another change is requested (replica on node "
			"%s, reason %s); only one at a time: run this again once it is done\n",
			v->name, qbd_id_str(req->from, hx),
			qbd_meta_change_reason_name(req->reason));
		return 1;
	}
	if (v->change.phase != QBD_CHANGE_NONE && v->change.slot == slot) {
		printf("volume %s: replica %u on node %s is being replaced already (%s, by "
		       "node %s)\n", v->name, slot, qbd_id_str(x, hx),
		       qbd_meta_change_phase_name(v->change.phase),
		       qbd_id_str(v->change.node, hy));
		p->skip = true;
		return 0;
	}
	p->to = to;
	r = to ? 0 : qbd_meta_place_replacement(c->nodes, c->nn, v, slot, &p->to, why,
						sizeof why);
	if (r < 0) {
		fprintf(stderr, "qbd: volume %s: %s\n", v->name, why);
		return 1;
	}
	struct qbd_node_info *y = cluster_node(c, p->to);
	if (y)
		y->used += v->size;
	return 0;
}

/* Plan the move of every replica on node x. *plans malloc'd (caller
 * frees), *np of them. 0, or EXIT_ERR when some volume blocks (each
 * said). */
static int plan_node(struct cli_cluster *c, uint64_t x, struct move_plan **plans, size_t *np)
{
	struct move_plan *p = calloc(c->nv ? c->nv : 1, sizeof *p);
	unsigned blocked = 0;
	char hx[17];
	size_t k = 0;

	*plans = p;
	*np = 0;
	if (!p) {
		fprintf(stderr, "qbd: %s\n", strerror(ENOMEM));
		return EXIT_ERR;
	}
	for (size_t i = 0; i < c->nv; i++) {
		const struct qbd_volume_info *v = &c->vols[i];
		int slot = volume_slot(v, x);

		if (v->change.phase != QBD_CHANGE_NONE && v->change.node == x)
			printf("volume %s: node %s is joining it (a change in progress); that "
			       "change must be given up by its writer\n", v->name,
			       qbd_id_str(x, hx));
		if (slot < 0)
			continue;
		blocked += (unsigned)plan_one(c, v, (unsigned)slot, x, 0, &p[k++]);
	}
	*np = k;
	if (blocked) {
		fprintf(stderr, "qbd: %u volume%s cannot be moved off node %s; nothing was "
			"changed\n", blocked, blocked > 1 ? "s" : "", qbd_id_str(x, hx));
		return EXIT_ERR;
	}
	return 0;
}

/* Write the planned requests. 0, or EXIT_ERR when some could not be
 * written (each said; the others stand). */
static int plan_write(struct qbd_meta *m, struct cli_cluster *c, const struct move_plan *p,
		      size_t np, enum qbd_change_reason reason)
{
	unsigned written = 0, failed = 0;
	char hx[17], hy[17];

	for (size_t i = 0; i < np; i++) {
		struct qbd_change_request req;
		int r;

		if (p[i].skip)
			continue;
		req = plan_request(&p[i], reason);
		r = qbd_meta_change_put(m, &req);
		if (r < 0) {
			fprintf(stderr, "qbd: volume %s: change request not written: %s\n",
				p[i].v->name, r == -EEXIST ? "another one appeared meanwhile "
				"(run this again)" : strerror(-r));
			failed++;
			continue;
		}
		printf("volume %s: replica %u on node %s (zone %s) -> node %s (zone %s): "
		       "change requested\n", p[i].v->name, p[i].slot, qbd_id_str(req.from, hx),
		       node_zone(c, req.from), qbd_id_str(req.to, hy), node_zone(c, req.to));
		written++;
	}
	if (written)
		printf("%u change%s requested; %s\n", written, written > 1 ? "s" : "",
		       CLI_CHANGE_CARRIED_BY);
	return failed ? EXIT_ERR : EXIT_OK;
}

/* ---- qbd node drain | undrain | remove ---- */

/* Ask on the terminal; true for "yes". */
static bool node_confirm(const char *question)
{
	char line[16];

	fputs(question, stderr);
	fflush(stderr);
	if (!fgets(line, sizeof line, stdin))
		return false;
	line[strcspn(line, "\n")] = '\0';
	return strcmp(line, "yes") == 0;
}

static int node_change_opts(int argc, char **argv, bool *yes, const char *verb)
{
	static const struct option opts[] = {
		{ "yes", no_argument, NULL, 'y' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch == 'y' && yes) {
			*yes = true;
			continue;
		}
		if (ch == 'h') {
			fputs(node_usage, stdout);
			return EXIT_OK;
		}
		fputs(node_usage, stderr);
		return EXIT_USAGE;
	}
	if (argc - optind != 1) {
		fprintf(stderr, "qbd node %s: name one node\n%s", verb, node_usage);
		return EXIT_USAGE;
	}
	return -1;
}

/* drain (remove false) or remove: set the state, request the moves. */
static int node_move_off(int argc, char **argv, bool remove)
{
	const char *verb = remove ? "remove" : "drain";
	enum qbd_node_state target = remove ? QBD_NODE_REMOVED : QBD_NODE_DRAINING;
	struct move_plan *plans = NULL;
	struct qbd_node_info *node;
	struct qbd_meta *m;
	struct cli_cluster c;
	bool yes = false;
	size_t np = 0;
	char hx[17];
	uint64_t x;
	int r;

	if ((r = node_change_opts(argc, argv, remove ? &yes : NULL, verb)) >= 0)
		return r;
	if ((r = cli_meta(&m)))
		return r;
	if ((r = cli_cluster_load(m, &c, true)))
		goto out_meta;
	if ((r = node_resolve(&c, argv[optind], &x)))
		goto out;
	qbd_id_str(x, hx);
	node = cluster_node(&c, x);
	if (!remove && node && node->state == QBD_NODE_REMOVED) {
		fprintf(stderr, "qbd: node %s is removed: it cannot be drained (its "
			"replicas are being replaced already)\n", hx);
		r = EXIT_ERR;
		goto out;
	}
	bool already = node && node->state == target;
	if (already)
		printf("node %s is %s already; asking for what is missing\n", hx,
		       qbd_meta_node_state_name(target));
	if (remove && node && node->alive && !yes) {
		char q[512];

		if (!isatty(STDIN_FILENO)) {
			fprintf(stderr, "qbd: node %s is up: removing it takes it out of every "
				"volume for good; pass --yes if that is meant (or drain it "
				"instead)\n", hx);
			r = EXIT_ERR;
			goto out;
		}
		snprintf(q, sizeof q, "node %s (zone %s, %s) is up. Remove it for good, and "
			 "replace its replicas elsewhere? Type yes: ", hx, node->zone, node->addr);
		if (!node_confirm(q)) {
			fprintf(stderr, "qbd: not removed\n");
			r = EXIT_ERR;
			goto out;
		}
	}
	/* Placement must see the node out of service, as it will be. */
	if (node)
		node->state = target;
	if ((r = plan_node(&c, x, &plans, &np)))
		goto out;
	r = qbd_meta_node_state_set(m, x, target);
	if (r < 0) {
		fprintf(stderr, "qbd: node %s: cannot set its state: %s\n", hx, strerror(-r));
		r = EXIT_ERR;
		goto out;
	}
	if (!already)
		printf("node %s: %s\n", hx, qbd_meta_node_state_name(target));
	r = plan_write(m, &c, plans, np, remove ? QBD_REASON_REMOVE : QBD_REASON_DRAIN);
	if (np == 0)
		printf("node %s holds no replica: nothing to move\n", hx);
out:
	free(plans);
	cli_cluster_free(&c);
out_meta:
	qbd_meta_close(m);
	return r;
}

/* undrain: back in service; the drain requests no writer has started
 * are withdrawn (a move under way goes on). */
static int node_undrain(int argc, char **argv)
{
	struct qbd_node_info *node;
	struct qbd_meta *m;
	struct cli_cluster c;
	char hx[17];
	uint64_t x;
	int r;

	if ((r = node_change_opts(argc, argv, NULL, "undrain")) >= 0)
		return r;
	if ((r = cli_meta(&m)))
		return r;
	if ((r = cli_cluster_load(m, &c, true)))
		goto out_meta;
	if ((r = node_resolve(&c, argv[optind], &x)))
		goto out;
	qbd_id_str(x, hx);
	node = cluster_node(&c, x);
	if (node && node->state == QBD_NODE_REMOVED) {
		fprintf(stderr, "qbd: node %s was removed for good: it cannot return to "
			"service\n", hx);
		r = EXIT_ERR;
		goto out;
	}
	if (!node || node->state == QBD_NODE_IN) {
		printf("node %s is in service already\n", hx);
		goto out;
	}
	r = qbd_meta_node_state_set(m, x, QBD_NODE_IN);
	if (r < 0) {
		fprintf(stderr, "qbd: node %s: cannot set its state: %s\n", hx, strerror(-r));
		r = EXIT_ERR;
		goto out;
	}
	printf("node %s: in service\n", hx);
	for (size_t i = 0; i < c.nr; i++) {
		const struct qbd_change_request *q = &c.reqs[i];
		const struct qbd_volume_info *v = NULL;

		if (q->from != x || q->reason != QBD_REASON_DRAIN)
			continue;
		for (size_t j = 0; j < c.nv; j++)
			if (c.vols[j].id == q->volume_id)
				v = &c.vols[j];
		if (v && v->change.phase != QBD_CHANGE_NONE && volume_slot(v, x) >= 0 &&
		    v->change.slot == (unsigned)volume_slot(v, x)) {
			printf("volume %s: its replica on node %s is moving already (%s); that "
			       "move goes on\n", v->name, hx,
			       qbd_meta_change_phase_name(v->change.phase));
			continue;
		}
		int d = qbd_meta_change_delete(m, q);
		if (d == 0 || d == -ENOENT)
			printf("volume %s: drain request withdrawn\n", v ? v->name : "?");
		else
			fprintf(stderr, "qbd: volume %s: drain request not withdrawn: %s\n",
				v ? v->name : "?", d == -EAGAIN ? "it changed meanwhile" :
				strerror(-d));
		if (d < 0 && d != -ENOENT)
			r = EXIT_ERR;
	}
out:
	cli_cluster_free(&c);
out_meta:
	qbd_meta_close(m);
	return r;
}

int cmd_node(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		fputs(node_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (strcmp(argv[1], "list") == 0)
		return node_list(argc - 1, argv + 1);
	if (strcmp(argv[1], "drain") == 0)
		return node_move_off(argc - 1, argv + 1, false);
	if (strcmp(argv[1], "remove") == 0)
		return node_move_off(argc - 1, argv + 1, true);
	if (strcmp(argv[1], "undrain") == 0)
		return node_undrain(argc - 1, argv + 1);
	fprintf(stderr, "qbd node: unknown command '%s'\n", argv[1]);
	return EXIT_USAGE;
}

/* ---- qbd volume move NAME --from NODE [--to NODE] ---- */

static const char move_usage[] =
	"usage: qbd volume move NAME --from NODE [--to NODE]\n"
	"asks for NAME's replica on NODE to move (--to: that node, else placement\n"
	"chooses: same zone first, else a zone the volume does not use); the change is\n"
	"carried out by the volume's writer or qbd-managerd.\n";

int cmd_volume_move(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "from", required_argument, NULL, 'f' },
		{ "to", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *from = NULL, *to = NULL, *name;
	const struct qbd_volume_info *v = NULL;
	struct move_plan p;
	struct qbd_meta *m;
	struct cli_cluster c;
	char why[512], hx[17];
	uint64_t x, y = 0;
	int ch, r, slot;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			from = optarg;
			break;
		case 't':
			to = optarg;
			break;
		case 'h':
			fputs(move_usage, stdout);
			return EXIT_OK;
		default:
			fputs(move_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || !from) {
		fputs(move_usage, stderr);
		return EXIT_USAGE;
	}
	name = argv[optind];
	if ((r = cli_meta(&m)))
		return r;
	if ((r = cli_cluster_load(m, &c, true)))
		goto out_meta;
	for (size_t i = 0; i < c.nv; i++)
		if (strcmp(c.vols[i].name, name) == 0)
			v = &c.vols[i];
	if (!v) {
		fprintf(stderr, "qbd: volume '%s': no such volume\n", name);
		r = EXIT_ERR;
		goto out;
	}
	if ((r = node_resolve(&c, from, &x)))
		goto out;
	if ((slot = volume_slot(v, x)) < 0) {
		fprintf(stderr, "qbd: volume %s has no replica on node %s\n", name,
			qbd_id_str(x, hx));
		r = EXIT_ERR;
		goto out;
	}
	if (to) {
		if ((r = node_resolve(&c, to, &y)))
			goto out;
		if (qbd_meta_place_check(c.nodes, c.nn, v, (unsigned)slot, y, why,
					 sizeof why) < 0) {
			fprintf(stderr, "qbd: volume %s: replica %d cannot go there: %s\n", name,
				slot, why);
			r = EXIT_ERR;
			goto out;
		}
	}
	if (plan_one(&c, v, (unsigned)slot, x, y, &p)) {
		r = EXIT_ERR;
		goto out;
	}
	if (p.skip)
		goto out;
	r = plan_write(m, &c, &p, 1, QBD_REASON_MOVE);
out:
	cli_cluster_free(&c);
out_meta:
	qbd_meta_close(m);
	return r;
}
