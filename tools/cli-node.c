/* SPDX-License-Identifier: Apache-2.0 */
/* qbd node ...: the chunk servers etcd knows, their zones, space and
 * state. The space is what each chunk server publishes in its node
 * record, orphaned space included (held by volumes etcd no longer has:
 * its reclaim scan counts it, docs/design.md "Reclaim"), so listing
 * the nodes contacts none of them. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int node_list(int argc, char **argv)
{
	struct qbd_meta *m;
	struct qbd_node_info *nodes;
	size_t n;
	int r;

	if ((r = cli_simple_opts(argc, argv, 0, "usage: qbd node list [--json]\n")) >= 0)
		return r;
	if ((r = cli_meta(&m)))
		return r;
	r = qbd_meta_node_list(m, &nodes, &n);
	qbd_meta_close(m);
	if (r < 0) {
		fprintf(stderr, "qbd: cannot list nodes: %s\n", strerror(-r));
		return EXIT_ERR;
	}
	if (cli_json) {
		json_object *arr = json_object_new_array();
		for (size_t i = 0; i < n; i++) {
			json_object_array_add(arr, cli_node_json(&nodes[i], true));
		}
		cli_print_json(arr);
	} else {
		printf("%-16s  %-10s  %-22s  %-5s  %10s  %10s  %10s  %10s  %10s  %10s  %4s\n",
		       "NODE", "ZONE", "ADDRESS", "STATE", "CAPACITY", "USED", "HELD",
		       "ORPHANED", "FREE-SLOTS", "SCRUBBED", "BAD");
		for (size_t i = 0; i < n; i++) {
			char hex[17], c[32], u[32], h[32], o[32], sb[32];
			printf("%-16s  %-10s  %-22s  %-5s  %10s  %10s  %10s  %10s  %10" PRIu64
			       "  %10s  %4" PRIu64 "\n",
			       qbd_id_str(nodes[i].id, hex), nodes[i].zone, nodes[i].addr,
			       nodes[i].alive ? "up" : "down",
			       qbd_format_size(nodes[i].capacity, c, sizeof c),
			       qbd_format_size(nodes[i].used, u, sizeof u),
			       qbd_format_size(nodes[i].held, h, sizeof h),
			       qbd_format_size(nodes[i].orphaned.held, o, sizeof o),
			       nodes[i].free_slots,
			       qbd_format_size(nodes[i].scrub.bytes, sb, sizeof sb),
			       nodes[i].scrub.bad_blocks);
		}
	}
	/* Exit status: every node up, some down, none up. */
	size_t up = 0;
	for (size_t i = 0; i < n; i++)
		up += nodes[i].alive;
	free(nodes);
	return up == n ? EXIT_OK : up ? EXIT_DEGRADED : EXIT_FAILED;
}

int cmd_node(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		fprintf(argc < 2 ? stderr : stdout, "usage: qbd node list [--json]\n"
			"exits 0 when every node is up, 3 when some are down, 4 when none is up\n");
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (strcmp(argv[1], "list") == 0)
		return node_list(argc - 1, argv + 1);
	fprintf(stderr, "qbd node: unknown command '%s'\n", argv[1]);
	return EXIT_USAGE;
}
