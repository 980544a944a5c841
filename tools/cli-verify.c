/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd volume verify NAME: compare every chunk of a volume on all of its
 * replicas (version and XXH3-64 of the bytes, computed by each chunk
 * server from data it reads and checks). Read-only: it takes no epoch and
 * may run while the volume is attached; chunks being written at that
 * moment can show as different, so run it on an idle or detached volume
 * to prove the replicas identical.
 *
 * Exit: 0 identical, 2 some chunk differs, 3 a replica could not be
 * compared, 1 other errors.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"

#define EXIT_DIFFER 2
#define EXIT_UNREACHABLE 3
#define SHOW_MAX 20

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qbd volume verify NAME [--json]\n"
		"Compare every chunk of volume NAME on all its replicas.\n"
		"Exit 0 identical, 2 differences, 3 a replica unreachable, 1 error.\n");
}

int cmd_volume_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct admin_conn ac[QBD_MAX_REPLICAS];
	struct qbd_node_info nodes[QBD_MAX_REPLICAS];
	struct qbd_volume_info v;
	struct qbd_meta *m;
	uint64_t cluster_id, nchunks, differ = 0;
	unsigned reachable = 0;
	json_object *jdiff = NULL;
	int o, r, rc = EXIT_OK;

	optind = 1;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (o == 'j') {
			cli_json = 1;
		} else if (o == 'h') {
			usage(stdout);
			return EXIT_OK;
		} else {
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if ((r = cli_meta(&m)))
		return r;
	r = qbd_meta_cluster_id(m, false, &cluster_id);
	if (r == 0)
		r = qbd_meta_volume_get(m, argv[optind], &v);
	for (unsigned i = 0; r == 0 && i < v.replicas; i++)
		r = qbd_meta_node_get(m, v.nodes[i], &nodes[i]);
	qbd_meta_close(m);
	if (r < 0) {
		fprintf(stderr, "qbd: volume '%s': %s\n", argv[optind],
			r == -ENOENT ? "no such volume (or node)" : strerror(-r));
		return EXIT_ERR;
	}
	for (unsigned i = 0; i < v.replicas; i++) {
		nodes[i].id = v.nodes[i];
		r = admin_connect(&nodes[i], cluster_id, &ac[i]);
		if (r < 0) {
			fprintf(stderr, "qbd: replica %u (node %016" PRIx64 ", zone %s, %s): %s\n",
				i, nodes[i].id, nodes[i].zone, nodes[i].addr, strerror(-r));
			rc = EXIT_UNREACHABLE;
		} else {
			reachable++;
		}
	}
	nchunks = (v.size + v.chunk_size - 1) / v.chunk_size;
	if (cli_json)
		jdiff = json_object_new_array();
	for (uint64_t ch = 0; ch < nchunks && reachable; ch++) {
		uint64_t ver[QBD_MAX_REPLICAS], sum[QBD_MAX_REPLICAS];
		bool have[QBD_MAX_REPLICAS] = { false }, same = true;
		int first = -1;

		for (unsigned i = 0; i < v.replicas; i++) {
			if (ac[i].fd < 0)
				continue;
			r = admin_checksum(&ac[i], v.id, ch, &ver[i], &sum[i]);
			if (r < 0) {
				fprintf(stderr, "qbd: replica %u, chunk %" PRIu64 ": %s\n", i, ch,
					strerror(-r));
				if (r == -ETIMEDOUT || r == -ECONNRESET || r == -EIO) {
					admin_close(&ac[i]);
					reachable--;
					rc = EXIT_UNREACHABLE;
				}
				same = false;
				continue;
			}
			have[i] = true;
			if (first < 0)
				first = (int)i;
			else if (ver[i] != ver[first] || sum[i] != sum[first])
				same = false;
		}
		if (same)
			continue;
		differ++;
		if (cli_json) {
			json_object *jc = json_object_new_object(), *jr = json_object_new_array();

			json_object_object_add(jc, "chunk", json_object_new_int64((int64_t)ch));
			for (unsigned i = 0; i < v.replicas; i++) {
				json_object *e = json_object_new_object();
				char b[20];

				json_object_object_add(e, "replica", json_object_new_int((int)i));
				if (have[i]) {
					snprintf(b, sizeof b, "%#" PRIx64, ver[i]);
					json_object_object_add(e, "version", json_object_new_string(b));
					snprintf(b, sizeof b, "%016" PRIx64, sum[i]);
					json_object_object_add(e, "xxh3", json_object_new_string(b));
				}
				json_object_array_add(jr, e);
			}
			json_object_object_add(jc, "replicas", jr);
			json_object_array_add(jdiff, jc);
		} else if (differ <= SHOW_MAX) {
			printf("chunk %" PRIu64 " differs:", ch);
			for (unsigned i = 0; i < v.replicas; i++)
				if (have[i])
					printf("  [%u] v%#" PRIx64 " %016" PRIx64, i, ver[i], sum[i]);
				else
					printf("  [%u] -", i);
			printf("\n");
		}
	}
	for (unsigned i = 0; i < v.replicas; i++)
		admin_close(&ac[i]);
	if (differ && rc == EXIT_OK)
		rc = EXIT_DIFFER;
	if (cli_json) {
		json_object *jo = json_object_new_object();

		json_object_object_add(jo, "volume", json_object_new_string(v.name));
		json_object_object_add(jo, "chunks", json_object_new_int64((int64_t)nchunks));
		json_object_object_add(jo, "replicas", json_object_new_int((int)v.replicas));
		json_object_object_add(jo, "reachable", json_object_new_int((int)reachable));
		json_object_object_add(jo, "differing_chunks", json_object_new_int64((int64_t)differ));
		json_object_object_add(jo, "identical", json_object_new_boolean(rc == EXIT_OK));
		json_object_object_add(jo, "differences", jdiff);
		printf("%s\n", json_object_to_json_string_ext(jo, JSON_C_TO_STRING_PLAIN));
		json_object_put(jo);
	} else {
		if (differ > SHOW_MAX)
			printf("(%" PRIu64 " more)\n", differ - SHOW_MAX);
		printf("volume %s: %" PRIu64 " chunks on %u of %u replicas: %s\n", v.name,
		       nchunks, reachable, v.replicas,
		       rc == EXIT_OK ? "identical" :
		       differ ? "DIFFERENT" : "not all replicas could be compared");
		if (differ)
			printf("%" PRIu64 " chunks differ\n", differ);
	}
	return rc;
}
