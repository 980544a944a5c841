/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd volume fence NAME | --node NODE: fence a volume's writer out of
 * service (replicator/admin's admin_volume_fence: a new epoch in etcd,
 * promised by the replicas, the old writer's attachment record removed),
 * for a node declared out of service (Kubernetes' non-graceful node
 * shutdown, the taint node.kubernetes.io/out-of-service): with --node,
 * every volume whose CSI publish record names the node or whose
 * attachment record's host is the node. docs/operations.md, "Fencing a
 * dead node's volumes".
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "internal.h"

static const char fence_usage[] =
	"usage: qbd volume fence NAME [--json]\n"
	"       qbd volume fence --node NODE [--json]\n"
	"Fence the volume's writer out of service: a new epoch in etcd, promised\n"
	"by its replicas (which then refuse every request of the old writer), and\n"
	"the old writer's attachment record removed, so that the next attach\n"
	"anywhere needs no --force (its writes wait 6 s for the old writer's read\n"
	"lease). --node: every volume whose CSI publish record names NODE or\n"
	"whose writer's host is NODE (none: \"nothing to fence\", exit 0).\n"
	"Exit 0 when every fence holds, 1 otherwise, 2 on usage errors.\n";

/* A volume to fence and why it was picked. */
struct fence_target {
	char name[QBD_NAME_MAX];
	bool published, attached;   /* --node: its publish record, its writer's host */
};

static json_object *fence_json(const struct fence_target *t, int r,
			       const struct admin_fence_result *res, const char *why)
{
	json_object *o = json_object_new_object(), *arr = json_object_new_array();

	json_object_object_add(o, "volume", json_object_new_string(t->name));
	json_object_object_add(o, "fenced", json_object_new_boolean(r == 0));
	json_object_object_add(o, "error", r ? json_object_new_string(why) : NULL);
	json_object_object_add(o, "epoch", res->epoch ? cli_json_u64(res->epoch) : NULL);
	json_object_object_add(o, "writer", res->attached ? cli_attachment_json(&res->att) : NULL);
	json_object_object_add(o, "attachment_removed", json_object_new_boolean(res->detached));
	json_object_object_add(o, "newer_writer",
			       res->newer ? cli_attachment_json(&res->newer_att) : NULL);
	for (unsigned i = 0; i < res->replicas; i++) {
		const struct admin_fence_replica *x = &res->replica[i];
		json_object *e = json_object_new_object();
		const char *role = x->voter_s ? "voter" : x->voter_s2 ? "joining" : "learner";

		json_object_object_add(e, "node", cli_json_id(x->node));
		json_object_object_add(e, "role", json_object_new_string(role));
		json_object_object_add(e, "refuses_old", json_object_new_boolean(
					       admin_fence_refuses(x)));
		json_object_object_add(e, "status", json_object_new_string(
					       x->err == 0 ? "promised" : x->err == -EPERM ?
					       "newer epoch" : x->err == -EIDRM ? "tombstone" :
					       x->no_record ? "no node record" : strerror(-x->err)));
		json_object_array_add(arr, e);
	}
	json_object_object_add(o, "replicas", arr);
	json_object_object_add(o, "refusing", json_object_new_int((int)res->refusing));
	json_object_object_add(o, "needed", json_object_new_int((int)res->needed));
	json_object_object_add(o, "published_on_node", json_object_new_boolean(t->published));
	json_object_object_add(o, "attached_on_node", json_object_new_boolean(t->attached));
	return o;
}

static void fence_text(const struct fence_target *t, int r,
		       const struct admin_fence_result *res, const char *why)
{
	char line[512], hex[17];
	unsigned told = 0;

	for (unsigned i = 0; i < res->replicas; i++) {
		const struct admin_fence_replica *x = &res->replica[i];

		if (admin_fence_refuses(x))
			told++;
		if (x->err == -EPERM || x->err == -EIDRM)
			fprintf(stderr, "qbd: volume %s: replica on node %s %s (epoch %" PRIu64
				"): it refuses the old writer too\n", t->name,
				qbd_id_str(x->node, hex), x->err == -EPERM ?
				"promised a newer epoch already" : "holds a tombstone",
				x->promised);
		else if (x->err)
			fprintf(stderr, "qbd: warning: volume %s: %s\n", t->name,
				admin_fence_warning(x, line, sizeof line));
	}
	if (r < 0) {
		fprintf(stderr, "qbd: %s\n", why);
		return;
	}
	printf("volume %s: fenced at epoch %" PRIu64 "; ", t->name, res->epoch);
	if (res->attached)
		printf("old writer host %s, pid %d (epoch %" PRIu64 "), attachment %s; ",
		       res->att.host[0] ? res->att.host : "?", res->att.pid, res->att.epoch,
		       res->detached ? "removed" : "already gone");
	else
		printf("no writer attached; ");
	printf("replicas told: %u of %u (%u needed)\n", told, res->replicas, res->needed);
	if (res->newer)
		printf("volume %s: a newer writer is attached: host %s, pid %d (epoch %" PRIu64
		       "), left alone\n", t->name, res->newer_att.host[0] ?
		       res->newer_att.host : "?", res->newer_att.pid, res->newer_att.epoch);
}

/* Add name to the targets (once). */
static int fence_add(struct fence_target **ts, size_t *n, const char *name, bool published,
		     bool attached)
{
	struct fence_target *t;

	for (size_t i = 0; i < *n; i++)
		if (strcmp((*ts)[i].name, name) == 0) {
			(*ts)[i].published |= published;
			(*ts)[i].attached |= attached;
			return 0;
		}
	t = realloc(*ts, (*n + 1) * sizeof *t);
	if (!t)
		return -ENOMEM;
	*ts = t;
	t = &t[(*n)++];
	memset(t, 0, sizeof *t);
	snprintf(t->name, sizeof t->name, "%s", name);
	t->published = published;
	t->attached = attached;
	return 0;
}

static int fence_cmp(const void *a, const void *b)
{
	return strcmp(((const struct fence_target *)a)->name,
		      ((const struct fence_target *)b)->name);
}

/* The volumes of node: published there (CSI) or attached by a writer
 * whose host it is. 0, or EXIT_ERR after saying why. */
static int fence_node_targets(struct qbd_meta *m, const char *node, struct fence_target **ts,
			      size_t *n)
{
	struct qbd_csi_publish *pubs = NULL;
	struct qbd_volume_info *vols = NULL;
	size_t np = 0, nv = 0;
	int r;

	r = qbd_meta_csi_publish_list(m, &pubs, &np);
	if (r < 0) {
		fprintf(stderr, "qbd: cannot list the CSI publish records: %s\n", strerror(-r));
		return EXIT_ERR;
	}
	for (size_t i = 0; i < np && r == 0; i++)
		if (strcmp(pubs[i].node, node) == 0)
			r = fence_add(ts, n, pubs[i].volume, true, false);
	free(pubs);
	if (r == 0)
		r = qbd_meta_volume_list(m, &vols, &nv);
	for (size_t i = 0; i < nv && r >= 0; i++) {
		struct qbd_attachment a;
		int g = qbd_meta_attachment_get(m, vols[i].id, &a);

		if (g == 0 && strcmp(a.host, node) == 0)
			r = fence_add(ts, n, vols[i].name, false, true);
		else if (g < 0 && g != -ENOENT)
			r = g;
	}
	free(vols);
	if (r < 0) {
		fprintf(stderr, "qbd: cannot list the volumes of node %s: %s\n", node,
			strerror(-r));
		return EXIT_ERR;
	}
	if (*n > 1)
		qsort(*ts, *n, sizeof **ts, fence_cmp);
	return 0;
}

int cmd_volume_fence(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "node", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct fence_target *ts = NULL;
	const char *node = NULL;
	struct qbd_meta *m;
	json_object *arr = NULL;
	size_t n = 0;
	int c, r, rc = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			node = optarg;
			break;
		case 'h':
			fputs(fence_usage, stdout);
			return EXIT_OK;
		default:
			fputs(fence_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != (node ? 0 : 1)) {
		fputs(fence_usage, stderr);
		return EXIT_USAGE;
	}
	if (node && !qbd_meta_csi_node_id_ok(node)) {
		fprintf(stderr, "qbd: --node '%s': not a node name\n", node);
		return EXIT_USAGE;
	}
	if (!node && !qbd_meta_volume_name_ok(argv[optind])) {
		fprintf(stderr, "qbd: invalid volume name '%s'\n", argv[optind]);
		return EXIT_USAGE;
	}
	if ((r = cli_meta(&m)))
		return r;
	if (node) {
		if ((r = fence_node_targets(m, node, &ts, &n))) {
			qbd_meta_close(m);
			free(ts);
			return r;
		}
	} else if (fence_add(&ts, &n, argv[optind], false, false) < 0) {
		qbd_meta_close(m);
		fprintf(stderr, "qbd: out of memory\n");
		return EXIT_ERR;
	}
	if (node && cli_json)
		arr = json_object_new_array();
	if (node && n == 0 && !cli_json)
		printf("node %s: nothing to fence (no volume published or attached there)\n",
		       node);
	for (size_t i = 0; i < n; i++) {
		struct admin_fence_result res;
		char why[512];

		r = admin_volume_fence(m, ts[i].name, &res, why, sizeof why);
		if (r < 0)
			rc = EXIT_ERR;
		if (!cli_json) {
			fence_text(&ts[i], r, &res, why);
			continue;
		}
		json_object *o = fence_json(&ts[i], r, &res, why);

		if (arr)
			json_object_array_add(arr, o);
		else
			cli_print_json(o);
		if (r < 0)
			fprintf(stderr, "qbd: %s\n", why);
	}
	qbd_meta_close(m);
	free(ts);
	if (arr) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "node", json_object_new_string(node));
		json_object_object_add(o, "volumes", arr);
		cli_print_json(o);
	}
	return rc;
}
