/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd volume verify NAME: compare every chunk of a volume on all of its
 * replicas (version and XXH3-64 of the bytes, computed by each chunk
 * server from data it reads and checks). Read-only: it takes no epoch and
 * may run while the volume is attached; chunks being written at that
 * moment can show as different, so run it on an idle or detached volume
 * to prove the replicas identical.
 *
 * Exit: 0 identical, 3 some chunk differs, 4 a replica could not be
 * compared, 1 other errors, 2 usage errors (the numbers of degraded and
 * failed health, internal.h).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"

#define EXIT_DIFFER EXIT_DEGRADED
#define EXIT_UNREACHABLE EXIT_FAILED
#define SHOW_MAX 20

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qbd volume verify NAME [--json]\n"
		"Compare every chunk of volume NAME on all its replicas.\n"
		"Exit 0 identical, 3 differences, 4 a replica unreachable, 1 error, 2 usage.\n");
}

/* One run of verify: the volume, a connection to each replica, and what
 * the comparison found so far. */
struct verify_run {
	struct qbd_volume_info v;
	struct qbd_node_info nodes[QBD_MAX_REPLICAS];
	bool known[QBD_MAX_REPLICAS];   /* the node's record was found */
	struct admin_conn ac[QBD_MAX_REPLICAS];
	uint64_t cluster_id, nchunks, differ;
	unsigned reachable;
	json_object *jdiff;     /* --json: the differing chunks */
	int rc;
};

/* What the replicas said about one chunk. */
struct verify_chunk {
	uint64_t ver[QBD_MAX_REPLICAS], sum[QBD_MAX_REPLICAS];
	bool have[QBD_MAX_REPLICAS];
};

/* -1 to go on with argv[optind] the volume's name, else an exit status. */
static int verify_parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int o;

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
	return -1;
}

/* The volume, its replicas' nodes and the cluster id from etcd. A node
 * whose record is gone (it died for good) is a replica that cannot be
 * compared, not an error of the run. */
static int verify_load(struct verify_run *vr, const char *name)
{
	struct qbd_meta *m;
	int r;

	if ((r = cli_meta(&m)))
		return r;
	r = qbd_meta_cluster_id(m, false, &vr->cluster_id);
	if (r == 0) {
		r = qbd_meta_volume_get(m, name, &vr->v);
		if (r == -ENOENT) {
			fprintf(stderr, "qbd: volume '%s': no such volume\n", name);
			qbd_meta_close(m);
			return EXIT_ERR;
		}
	}
	for (unsigned i = 0; r == 0 && i < vr->v.replicas; i++) {
		r = cli_node_get(m, vr->v.nodes[i], &vr->nodes[i]);
		vr->known[i] = r == 0;
		r = r == -ENOENT ? 0 : r;
	}
	qbd_meta_close(m);
	if (r < 0) {
		fprintf(stderr, "qbd: volume '%s': %s\n", name, strerror(-r));
		return EXIT_ERR;
	}
	vr->nchunks = (vr->v.size + vr->v.chunk_size - 1) / vr->v.chunk_size;
	return EXIT_OK;
}

/* Connect to every replica; one that cannot be reached makes the run
 * EXIT_UNREACHABLE and is left out. */
static void verify_connect(struct verify_run *vr)
{
	for (unsigned i = 0; i < vr->v.replicas; i++) {
		struct qbd_node_info *n = &vr->nodes[i];
		int r;

		n->id = vr->v.nodes[i];
		if (!vr->known[i]) {
			vr->ac[i].fd = -1;
			fprintf(stderr, "qbd: replica %u (node %016" PRIx64 "): no node record "
				"in etcd\n", i, n->id);
			vr->rc = EXIT_UNREACHABLE;
			continue;
		}
		r = admin_connect(n, vr->cluster_id, &vr->ac[i]);
		if (r < 0) {
			fprintf(stderr, "qbd: replica %u (node %016" PRIx64 ", zone %s, %s): %s\n",
				i, n->id, n->zone, n->addr, strerror(-r));
			vr->rc = EXIT_UNREACHABLE;
		} else {
			vr->reachable++;
		}
	}
}

/* Ask every reachable replica for chunk ch. True when all that answered
 * agree; a replica that stops answering is dropped from the run. */
static bool verify_compare_chunk(struct verify_run *vr, uint64_t ch, struct verify_chunk *c)
{
	bool same = true;
	int first = -1;

	for (unsigned i = 0; i < vr->v.replicas; i++) {
		int r;

		if (vr->ac[i].fd < 0)
			continue;
		r = admin_checksum(&vr->ac[i], vr->v.id, ch, &c->ver[i], &c->sum[i]);
		if (r < 0) {
			fprintf(stderr, "qbd: replica %u, chunk %" PRIu64 ": %s\n", i, ch,
				strerror(-r));
			if (r == -ETIMEDOUT || r == -ECONNRESET || r == -EIO) {
				admin_close(&vr->ac[i]);
				vr->reachable--;
				vr->rc = EXIT_UNREACHABLE;
			}
			same = false;
			continue;
		}
		c->have[i] = true;
		if (first < 0)
			first = (int)i;
		else if (c->ver[i] != c->ver[first] || c->sum[i] != c->sum[first])
			same = false;
	}
	return same;
}

/* A differing chunk: into the JSON list, or printed (the first SHOW_MAX). */
static void verify_report_chunk(struct verify_run *vr, uint64_t ch,
				const struct verify_chunk *c)
{
	if (cli_json) {
		json_object *jc = json_object_new_object(), *jr = json_object_new_array();

		json_object_object_add(jc, "chunk", json_object_new_int64((int64_t)ch));
		for (unsigned i = 0; i < vr->v.replicas; i++) {
			json_object *e = json_object_new_object();
			char b[20];

			json_object_object_add(e, "replica", json_object_new_int((int)i));
			if (c->have[i]) {
				snprintf(b, sizeof b, "%#" PRIx64, c->ver[i]);
				json_object_object_add(e, "version", json_object_new_string(b));
				snprintf(b, sizeof b, "%016" PRIx64, c->sum[i]);
				json_object_object_add(e, "xxh3", json_object_new_string(b));
			}
			json_object_array_add(jr, e);
		}
		json_object_object_add(jc, "replicas", jr);
		json_object_array_add(vr->jdiff, jc);
	} else if (vr->differ <= SHOW_MAX) {
		printf("chunk %" PRIu64 " differs:", ch);
		for (unsigned i = 0; i < vr->v.replicas; i++)
			if (c->have[i])
				printf("  [%u] v%#" PRIx64 " %016" PRIx64, i, c->ver[i], c->sum[i]);
			else
				printf("  [%u] -", i);
		printf("\n");
	}
}

/* Every chunk of the volume, while a replica is reachable. */
static void verify_chunks(struct verify_run *vr)
{
	for (uint64_t ch = 0; ch < vr->nchunks && vr->reachable; ch++) {
		struct verify_chunk c = { .have = { false } };

		if (verify_compare_chunk(vr, ch, &c))
			continue;
		vr->differ++;
		verify_report_chunk(vr, ch, &c);
	}
}

static void verify_print_result(struct verify_run *vr)
{
	if (cli_json) {
		json_object *jo = json_object_new_object();

		json_object_object_add(jo, "volume", json_object_new_string(vr->v.name));
		json_object_object_add(jo, "chunks", json_object_new_int64((int64_t)vr->nchunks));
		json_object_object_add(jo, "replicas", json_object_new_int((int)vr->v.replicas));
		json_object_object_add(jo, "reachable", json_object_new_int((int)vr->reachable));
		json_object_object_add(jo, "differing_chunks",
				       json_object_new_int64((int64_t)vr->differ));
		json_object_object_add(jo, "identical", json_object_new_boolean(vr->rc == EXIT_OK));
		json_object_object_add(jo, "differences", vr->jdiff);
		vr->jdiff = NULL;
		cli_print_json(jo);
		return;
	}
	if (vr->differ > SHOW_MAX)
		printf("(%" PRIu64 " more)\n", vr->differ - SHOW_MAX);
	printf("volume %s: %" PRIu64 " chunks on %u of %u replicas: %s\n", vr->v.name,
	       vr->nchunks, vr->reachable, vr->v.replicas,
	       vr->rc == EXIT_OK ? "identical" :
	       vr->differ ? "DIFFERENT" : "not all replicas could be compared");
	if (vr->differ)
		printf("%" PRIu64 " chunks differ\n", vr->differ);
}

int cmd_volume_verify(int argc, char **argv)
{
	struct verify_run vr = { .rc = EXIT_OK };
	int r;

	if ((r = verify_parse_args(argc, argv)) >= 0 ||
	    (r = verify_load(&vr, argv[optind])) != EXIT_OK)
		return r;
	verify_connect(&vr);
	if (cli_json)
		vr.jdiff = json_object_new_array();
	verify_chunks(&vr);
	for (unsigned i = 0; i < vr.v.replicas; i++)
		admin_close(&vr.ac[i]);
	if (vr.differ && vr.rc == EXIT_OK)
		vr.rc = EXIT_DIFFER;
	verify_print_result(&vr);
	return vr.rc;
}
