/* SPDX-License-Identifier: Apache-2.0 */
/* qbd node ... and qbd volume ... commands. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define CHUNK_SIZE (1u << 20)

/* Options of the commands that take no more than --help (and --json, which
 * qbd-main.c strips). Returns -1 to go on, else an exit status. nargs is
 * the number of positional arguments required. */
static int cli_simple_opts(int argc, char **argv, int nargs, const char *usage)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage, stdout);
			return EXIT_OK;
		}
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (argc - optind != nargs) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	return -1;
}

/* Print a JSON value (strings escaped by json-c) and drop it. */
static void cli_print_json(json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}

static json_object *cli_json_id(uint64_t id)
{
	char hex[17];

	return json_object_new_string(qbd_id_str(id, hex));
}

static json_object *cli_json_u64(uint64_t v)
{
	return json_object_new_int64((int64_t)v);
}

static json_object *cli_node_json(const struct qbd_node_info *n, bool full)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "id", cli_json_id(n->id));
	json_object_object_add(o, "zone", json_object_new_string(n->zone));
	json_object_object_add(o, "addr", json_object_new_string(n->addr));
	json_object_object_add(o, "alive", json_object_new_boolean(n->alive));
	if (full) {
		json_object_object_add(o, "capacity", cli_json_u64(n->capacity));
		json_object_object_add(o, "used", cli_json_u64(n->used));
	}
	return o;
}

static json_object *cli_volume_json(const struct qbd_volume_info *v)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(v->name));
	json_object_object_add(o, "id", cli_json_id(v->id));
	json_object_object_add(o, "size", cli_json_u64(v->size));
	json_object_object_add(o, "chunk_size", cli_json_u64(v->chunk_size));
	json_object_object_add(o, "replicas", cli_json_u64(v->replicas));
	json_object_object_add(o, "write_quorum", cli_json_u64(v->write_quorum));
	return o;
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
		for (size_t i = 0; i < n; i++)
			json_object_array_add(arr, cli_node_json(&nodes[i], true));
		cli_print_json(arr);
	} else {
		printf("%-16s  %-10s  %-22s  %-5s  %10s  %10s\n", "NODE", "ZONE",
		       "ADDRESS", "STATE", "CAPACITY", "USED");
		for (size_t i = 0; i < n; i++) {
			char hex[17], c[32], u[32];
			printf("%-16s  %-10s  %-22s  %-5s  %10s  %10s\n",
			       qbd_id_str(nodes[i].id, hex), nodes[i].zone, nodes[i].addr,
			       nodes[i].alive ? "up" : "down",
			       qbd_format_size(nodes[i].capacity, c, sizeof c),
			       qbd_format_size(nodes[i].used, u, sizeof u));
		}
	}
	free(nodes);
	return EXIT_OK;
}

int cmd_node(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		fprintf(argc < 2 ? stderr : stdout, "usage: qbd node list [--json]\n");
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (strcmp(argv[1], "list") == 0)
		return node_list(argc - 1, argv + 1);
	fprintf(stderr, "qbd node: unknown command '%s'\n", argv[1]);
	return EXIT_USAGE;
}

static const char volume_usage[] =
	"usage: qbd volume create NAME --size SIZE [--replicas R] [--write-quorum W]\n"
	"       qbd volume list [--json]\n"
	"       qbd volume info NAME [--json]\n"
	"       qbd volume delete NAME\n";

static int volume_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "replicas", required_argument, NULL, 'r' },
		{ "write-quorum", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct qbd_volume_info v = { .chunk_size = CHUNK_SIZE, .replicas = 3 };
	struct qbd_meta *m;
	struct qbd_node_info *nodes;
	size_t n;
	unsigned zones;
	const char *name;
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
		v.write_quorum = v.replicas / 2 + 1;
	if (v.write_quorum > v.replicas) {
		fprintf(stderr, "qbd: --write-quorum must be 1..%u\n", v.replicas);
		return EXIT_USAGE;
	}
	snprintf(v.name, sizeof v.name, "%s", name);
	v.id = qbd_random_u64();
	if ((r = cli_meta(&m)))
		return r;
	r = qbd_meta_node_list(m, &nodes, &n);
	if (r < 0) {
		fprintf(stderr, "qbd: cannot list nodes: %s\n", strerror(-r));
		qbd_meta_close(m);
		return EXIT_ERR;
	}
	r = qbd_meta_place(nodes, n, v.replicas, v.nodes, &zones);
	if (r == -ENOSPC) {
		/* nodes are sorted by zone: each distinct live zone once */
		char list[256] = "";
		const char *last = NULL;
		size_t l = 0;
		for (size_t i = 0; i < n && l < sizeof list; i++) {
			if (!nodes[i].alive || (last && strcmp(last, nodes[i].zone) == 0))
				continue;
			last = nodes[i].zone;
			l += (size_t)snprintf(list + l, sizeof list - l, "%s%s",
					      l ? ", " : "", nodes[i].zone);
		}
		fprintf(stderr, "qbd: need %u zones with a live node, found %u%s%s%s\n",
			v.replicas, zones, zones ? " (" : "", list, zones ? ")" : "");
		free(nodes);
		qbd_meta_close(m);
		return EXIT_ERR;
	}
	for (unsigned i = 0; i < v.replicas; i++)
		for (size_t j = 0; j < n; j++)
			if (nodes[j].id == v.nodes[i] && nodes[j].chunk_size &&
			    nodes[j].chunk_size != CHUNK_SIZE) {
				fprintf(stderr, "qbd: node %s has chunk size %u, volumes use %u\n",
					nodes[j].addr, nodes[j].chunk_size, CHUNK_SIZE);
				free(nodes);
				qbd_meta_close(m);
				return EXIT_ERR;
			}
	free(nodes);
	r = qbd_meta_volume_create(m, &v);
	qbd_meta_close(m);
	if (r == -EEXIST) {
		fprintf(stderr, "qbd: volume '%s' already exists\n", name);
		return EXIT_ERR;
	}
	if (r < 0) {
		fprintf(stderr, "qbd: cannot create volume '%s': %s\n", name, strerror(-r));
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
	uint64_t epoch = 0;
	char hex[17], sz[32];
	int r;

	if ((r = cli_simple_opts(argc, argv, 1, volume_usage)) >= 0)
		return r;
	const char *name = argv[optind];
	if ((r = cli_meta(&m)))
		return r;
	r = qbd_meta_volume_get(m, name, &v);
	if (r == 0)
		r = qbd_meta_epoch_get(m, v.id, &epoch);
	if (r < 0) {
		fprintf(stderr, "qbd: volume '%s': %s\n", name,
			r == -ENOENT ? "no such volume" : strerror(-r));
		qbd_meta_close(m);
		return EXIT_ERR;
	}
	for (unsigned i = 0; i < v.replicas; i++)
		if (qbd_meta_node_get(m, v.nodes[i], &nodes[i]) < 0) {
			memset(&nodes[i], 0, sizeof nodes[i]);
			nodes[i].id = v.nodes[i];
			snprintf(nodes[i].zone, sizeof nodes[i].zone, "?");
			snprintf(nodes[i].addr, sizeof nodes[i].addr, "?");
		}
	qbd_meta_close(m);
	if (cli_json) {
		json_object *o = cli_volume_json(&v), *arr = json_object_new_array();
		json_object_object_add(o, "epoch", cli_json_u64(epoch));
		for (unsigned i = 0; i < v.replicas; i++)
			json_object_array_add(arr, cli_node_json(&nodes[i], false));
		json_object_object_add(o, "nodes", arr);
		cli_print_json(o);
		return EXIT_OK;
	}
	printf("Volume:        %s\n", v.name);
	printf("ID:            %s\n", qbd_id_str(v.id, hex));
	printf("Size:          %s (%" PRIu64 " bytes)\n", qbd_format_size(v.size, sz, sizeof sz), v.size);
	printf("Chunk size:    %u\n", v.chunk_size);
	printf("Replication:   R=%u, write quorum W=%u\n", v.replicas, v.write_quorum);
	printf("Epoch:         %" PRIu64 "\n", epoch);
	printf("Replicas:\n");
	printf("  #  NODE              ZONE        ADDRESS                 STATE\n");
	for (unsigned i = 0; i < v.replicas; i++)
		printf("  %-1u  %-16s  %-10s  %-22s  %s\n", i, qbd_id_str(nodes[i].id, hex),
		       nodes[i].zone, nodes[i].addr, nodes[i].alive ? "up" : "down");
	return EXIT_OK;
}

static int volume_delete(int argc, char **argv)
{
	struct qbd_meta *m;
	struct qbd_volume_info v;
	uint64_t epoch, cluster;
	int r;

	if ((r = cli_simple_opts(argc, argv, 1, volume_usage)) >= 0)
		return r;
	argv += optind - 1; /* argv[1] is the name, as below */
	if ((r = cli_meta(&m)))
		return r;
	r = qbd_meta_volume_get(m, argv[1], &v);
	if (r < 0) {
		fprintf(stderr, "qbd: volume '%s': %s\n", argv[1],
			r == -ENOENT ? "no such volume" : strerror(-r));
		qbd_meta_close(m);
		return EXIT_ERR;
	}
	r = qbd_meta_cluster_id(m, false, &cluster);
	if (r < 0) {
		fprintf(stderr, "qbd: cannot read the cluster id (/qbd/cluster): %s\n",
			r == -ENOENT ? "not set (no chunk server ever registered)" :
			strerror(-r));
		qbd_meta_close(m);
		return EXIT_ERR;
	}
	r = qbd_meta_epoch_bump(m, v.id, &epoch); /* fences any writer first */
	if (r < 0) {
		fprintf(stderr, "qbd: volume '%s': cannot bump its epoch: %s\n", argv[1],
			strerror(-r));
		qbd_meta_close(m);
		return EXIT_ERR;
	}
	for (unsigned i = 0; i < v.replicas; i++) {
		struct qbd_node_info node;
		char hex[17];
		int d = qbd_meta_node_get(m, v.nodes[i], &node);
		if (d == 0)
			d = admin_delete_volume(&node, cluster, v.id, epoch);
		if (d < 0)
			fprintf(stderr, "qbd: warning: replica on node %s not cleaned: %s "
				"(its space is not reclaimed)\n",
				qbd_id_str(v.nodes[i], hex), strerror(-d));
	}
	r = qbd_meta_volume_delete(m, &v);
	qbd_meta_close(m);
	if (r < 0) {
		fprintf(stderr, "qbd: cannot delete volume '%s': %s\n", argv[1], strerror(-r));
		return EXIT_ERR;
	}
	printf("deleted volume %s\n", argv[1]);
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
	if (strcmp(argv[1], "delete") == 0)
		return volume_delete(argc - 1, argv + 1);
	fprintf(stderr, "qbd volume: unknown command '%s'\n%s", argv[1], volume_usage);
	return EXIT_USAGE;
}
