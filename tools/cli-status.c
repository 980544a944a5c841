/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd status: the cluster at a glance. Nodes by zone, volumes by health,
 * space, and one line per problem. Exits 0 when healthy, 3 when degraded
 * (a node down, a volume short of a replica, or a volume whose writer has
 * not yet published its status), 4 when a volume cannot take writes, 1 on
 * errors, 2 on usage errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "internal.h"

#define MAX_ZONES 32
#define MAX_PROBLEMS 64

struct zone_count {
	char name[64];
	unsigned up, down;
};

struct cluster_view {
	uint64_t cluster_id;
	struct zone_count zones[MAX_ZONES];
	unsigned nzones, nodes_up, nodes_down;
	uint64_t capacity, used;
	unsigned volumes, attached, healthy, unknown, degraded, failed;
	json_object *changes;    /* each volume's change in progress */
	char *change_lines[MAX_PROBLEMS];
	unsigned nchanges;
	char *problems[MAX_PROBLEMS];
	unsigned nproblems, more_problems;
	int rc;
};

static void problem(struct cluster_view *cv, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void problem(struct cluster_view *cv, int rc, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	if (rc > cv->rc)
		cv->rc = rc;
	if (cv->nproblems == MAX_PROBLEMS) {
		cv->more_problems++;
		return;
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) >= 0)
		cv->problems[cv->nproblems++] = s;
	va_end(ap);
}

/* A volume whose replica is moving: its line and its JSON. */
static void change_note(struct cluster_view *cv, const struct qbd_volume_info *v,
			const struct vol_health *h)
{
	json_object *o = json_object_new_object(), *p;
	char line[192], hx[17], hy[17], *s = NULL;

	json_object_object_add(o, "volume", json_object_new_string(v->name));
	json_object_object_add(o, "phase", json_object_new_string(
		qbd_meta_change_phase_name(v->change.phase)));
	json_object_object_add(o, "slot", json_object_new_int((int)v->change.slot));
	json_object_object_add(o, "from", cli_json_id(v->nodes[v->change.slot]));
	json_object_object_add(o, "to", cli_json_id(v->change.node));
	p = cli_change_progress_json(&h->chg);
	json_object_object_add(o, "progress", p);
	if (!cv->changes)
		cv->changes = json_object_new_array();
	json_object_array_add(cv->changes, o);
	if (cv->nchanges == MAX_PROBLEMS)
		return;
	if (asprintf(&s, "%s: slot %u, node %s -> %s, %s", v->name, v->change.slot,
		     qbd_id_str(v->nodes[v->change.slot], hx), qbd_id_str(v->change.node, hy),
		     h->chg.have ? cli_change_progress_str(&h->chg, line, sizeof line) :
		     h->attached ? qbd_meta_change_phase_name(v->change.phase) :
		     "waiting for its writer or qbd-managerd") >= 0)
		cv->change_lines[cv->nchanges++] = s;
}

static struct zone_count *zone_of(struct cluster_view *cv, const char *name)
{
	for (unsigned i = 0; i < cv->nzones; i++)
		if (strcmp(cv->zones[i].name, name) == 0)
			return &cv->zones[i];
	if (cv->nzones == MAX_ZONES)
		return NULL;
	snprintf(cv->zones[cv->nzones].name, sizeof cv->zones[0].name, "%s", name);
	return &cv->zones[cv->nzones++];
}

/* Read everything from etcd. 0, or EXIT_ERR after saying why. */
static int cluster_view_load(struct qbd_meta *m, struct cluster_view *cv)
{
	struct qbd_node_info *nodes = NULL;
	struct qbd_volume_info *vols = NULL;
	size_t nn = 0, nv = 0;
	char hex[17];
	int r;

	r = qbd_meta_cluster_id(m, false, &cv->cluster_id);
	if (r == 0)
		r = qbd_meta_node_list(m, &nodes, &nn);
	if (r == 0)
		r = qbd_meta_volume_list(m, &vols, &nv);
	if (r < 0) {
		fprintf(stderr, "qbd: cannot read the cluster from etcd: %s\n", strerror(-r));
		free(nodes);
		return EXIT_ERR;
	}
	for (size_t i = 0; i < nn; i++) {
		struct zone_count *z = zone_of(cv, nodes[i].zone);

		if (nodes[i].alive) {
			cv->nodes_up++;
			cv->capacity += nodes[i].capacity;
			cv->used += nodes[i].used;
		} else {
			cv->nodes_down++;
			problem(cv, EXIT_DEGRADED, "node %s (zone %s, %s) is down",
				qbd_id_str(nodes[i].id, hex), nodes[i].zone, nodes[i].addr);
		}
		if (z) {
			z->up += nodes[i].alive;
			z->down += !nodes[i].alive;
		}
		if (nodes[i].scrub.bad_blocks)
			problem(cv, EXIT_DEGRADED, "node %s (zone %s): the scrubber found %" PRIu64
				" bad blocks (the writers repair them from other replicas)",
				qbd_id_str(nodes[i].id, hex), nodes[i].zone,
				nodes[i].scrub.bad_blocks);
	}
	if (nn == 0)
		problem(cv, EXIT_FAILED, "no chunk server has ever registered");
	for (size_t i = 0; i < nv; i++) {
		struct vol_health h;

		cv->volumes++;
		if (cli_volume_health(m, &vols[i], &h)) {
			free(nodes);
			free(vols);
			return EXIT_ERR;
		}
		cv->attached += h.attached;
		if (vols[i].change.phase != QBD_CHANGE_NONE)
			change_note(cv, &vols[i], &h);
		switch (h.health) {
		case CLI_HEALTHY:
			cv->healthy++;
			continue;
		case CLI_UNKNOWN:
			cv->unknown++;
			problem(cv, h.rc, "volume %s: health unknown: attached on host %s "
				"(pid %d), no status from its writer yet", vols[i].name,
				h.att.host[0] ? h.att.host : "?", h.att.pid);
			continue;
		case CLI_DEGRADED:
			cv->degraded++;
			break;
		case CLI_FAILED:
			cv->failed++;
			break;
		}
		problem(cv, h.rc, "volume %s is %s: %u of %u replicas current, %u usable "
			"(write quorum %u)", vols[i].name, cli_health_name(h.health), h.current,
			vols[i].replicas, h.usable, vols[i].write_quorum);
	}
	free(nodes);
	free(vols);
	return 0;
}

static const char *health_word(int rc)
{
	return rc == EXIT_OK ? "HEALTH_OK" : rc == EXIT_DEGRADED ? "HEALTH_WARN" : "HEALTH_ERR";
}

static void print_json(const struct cluster_view *cv)
{
	json_object *o = json_object_new_object(), *n = json_object_new_object();
	json_object *zs = json_object_new_object(), *v = json_object_new_object();
	json_object *p = json_object_new_array();

	json_object_object_add(o, "cluster_id", cli_json_id(cv->cluster_id));
	json_object_object_add(o, "health", json_object_new_string(health_word(cv->rc)));
	json_object_object_add(n, "up", json_object_new_int((int)cv->nodes_up));
	json_object_object_add(n, "down", json_object_new_int((int)cv->nodes_down));
	for (unsigned i = 0; i < cv->nzones; i++) {
		json_object *z = json_object_new_object();
		json_object_object_add(z, "up", json_object_new_int((int)cv->zones[i].up));
		json_object_object_add(z, "down", json_object_new_int((int)cv->zones[i].down));
		json_object_object_add(zs, cv->zones[i].name, z);
	}
	json_object_object_add(n, "zones", zs);
	json_object_object_add(o, "nodes", n);
	json_object_object_add(v, "total", json_object_new_int((int)cv->volumes));
	json_object_object_add(v, "attached", json_object_new_int((int)cv->attached));
	json_object_object_add(v, "healthy", json_object_new_int((int)cv->healthy));
	json_object_object_add(v, "unknown", json_object_new_int((int)cv->unknown));
	json_object_object_add(v, "degraded", json_object_new_int((int)cv->degraded));
	json_object_object_add(v, "failed", json_object_new_int((int)cv->failed));
	json_object_object_add(o, "volumes", v);
	json_object_object_add(o, "capacity", cli_json_u64(cv->capacity));
	json_object_object_add(o, "used", cli_json_u64(cv->used));
	for (unsigned i = 0; i < cv->nproblems; i++)
		json_object_array_add(p, json_object_new_string(cv->problems[i]));
	json_object_object_add(o, "problems", p);
	json_object_object_add(o, "changes", cv->changes ? json_object_get(cv->changes)
							 : json_object_new_array());
	cli_print_json(o);
}

static void print_text(const struct cluster_view *cv)
{
	char hex[17], c[32], u[32];

	printf("  cluster:  %s\n", qbd_id_str(cv->cluster_id, hex));
	printf("  health:   %s\n", health_word(cv->rc));
	for (unsigned i = 0; i < cv->nproblems; i++)
		printf("            %s\n", cv->problems[i]);
	if (cv->more_problems)
		printf("            (and %u more)\n", cv->more_problems);
	printf("\n  nodes:    %u up, %u down\n", cv->nodes_up, cv->nodes_down);
	for (unsigned i = 0; i < cv->nzones; i++)
		printf("            zone %-12s %u up, %u down\n", cv->zones[i].name,
		       cv->zones[i].up, cv->zones[i].down);
	printf("  volumes:  %u (%u attached): %u healthy, %u degraded, %u failed",
	       cv->volumes, cv->attached, cv->healthy, cv->degraded, cv->failed);
	if (cv->unknown)
		printf(", %u unknown", cv->unknown);
	printf("\n");
	printf("  space:    %s used of %s (nodes up)\n",
	       qbd_format_size(cv->used, u, sizeof u), qbd_format_size(cv->capacity, c, sizeof c));
	for (unsigned i = 0; i < cv->nchanges; i++)
		printf("%s%s\n", i ? "            " : "\n  moving:   ", cv->change_lines[i]);
}

static const char status_usage[] =
	"usage: qbd status [--json]\n"
	"The cluster at a glance. Exit status: 0 healthy, 3 degraded (a node\n"
	"down, a volume short of a replica or of unknown health), 4 failed (a\n"
	"volume cannot take writes), 1 on errors, 2 on usage errors.\n";

int cmd_status(int argc, char **argv)
{
	struct cluster_view cv = { .rc = EXIT_OK };
	struct qbd_meta *m;
	int r;

	if ((r = cli_simple_opts(argc, argv, 0, status_usage)) >= 0)
		return r;
	if ((r = cli_meta(&m)))
		return r;
	r = cluster_view_load(m, &cv);
	qbd_meta_close(m);
	if (r == 0) {
		if (cli_json)
			print_json(&cv);
		else
			print_text(&cv);
		r = cv.rc;
	}
	for (unsigned i = 0; i < cv.nproblems; i++)
		free(cv.problems[i]);
	for (unsigned i = 0; i < cv.nchanges; i++)
		free(cv.change_lines[i]);
	json_object_put(cv.changes);
	return r;
}
