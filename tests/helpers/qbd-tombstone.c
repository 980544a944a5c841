/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-tombstone: give a volume a tombstone in a chunk server's store, as
 * the store of a node removed from the volume keeps one.
 *
 *   qbd-tombstone STORE VOLUME_ID [EPOCH]
 *   qbd-tombstone --etcd URL VOLUME ZONE [EPOCH]
 *
 * The first works on the store offline (its chunk server stopped): how
 * a test brings a removed node back. VOLUME_ID in hex (as `qbd volume
 * info --json` prints it); EPOCH defaults to the store's promised epoch.
 * The second sends TOMBSTONE over the wire (replicator/admin/wire.c) to the
 * chunk server of the volume's replica in ZONE, at EPOCH (default: the
 * volume's epoch in etcd), as the writer that removed the node does,
 * with the cluster secret of $QBD_SECRET_FILE if set.
 * Prints the tombstone's epoch. Exit 0 ok, 1 failure (message on
 * stderr; for a refusal, its errno name as well).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "replicator/admin/admin.h"
#include "replicator/meta/meta.h"

static void tomb_cb(struct qbd_engine_req *r)
{
	*(int *)r->user = 1;
}

/* TOMBSTONE over the wire to the replica of volume name in zone. */
static int tomb_wire(const char *etcd, const char *name, const char *zone, const char *ep)
{
	struct qbd_volume_info vi;
	struct qbd_node_info node;
	struct admin_conn ac;
	struct qbd_meta *m;
	uint64_t cluster, epoch = 0, got = 0;
	int r;
	unsigned i;

	admin_secret_file = getenv("QBD_SECRET_FILE");
	r = qbd_meta_open(etcd, &m);
	if (r < 0)
		goto out0;
	r = qbd_meta_cluster_id(m, false, &cluster);
	if (r == 0)
		r = qbd_meta_volume_get(m, name, &vi);
	if (r == 0)
		r = ep ? 0 : qbd_meta_epoch_get(m, vi.id, &epoch);
	for (i = 0; r == 0 && i < vi.replicas; i++) {
		r = qbd_meta_node_get(m, vi.nodes[i], &node);
		if (r == 0 && !strcmp(node.zone, zone))
			break;
	}
	if (r == 0 && i == vi.replicas)
		r = -ENOENT;
	if (r == 0 && ep)
		epoch = strtoull(ep, NULL, 0);
	if (r == 0)
		r = admin_connect(&node, cluster, &ac);
	if (r == 0) {
		r = admin_tombstone(&ac, vi.id, epoch, &got);
		admin_close(&ac);
	}
	qbd_meta_close(m);
out0:
	if (r < 0) {
		fprintf(stderr, "qbd-tombstone: volume %s, replica in zone %s, epoch %llu: %s (%s)\n",
			name, zone, (unsigned long long)epoch, strerror(-r),
			r == -EPERM ? "EPERM" : r == -EIDRM ? "EIDRM" : "error");
		return 1;
	}
	printf("%llu\n", (unsigned long long)got);
	return 0;
}

int main(int argc, char **argv)
{
	struct qbd_engine_opts o = { 0 };
	struct qbd_engine_req r = { .op = QBD_ENGINE_TOMBSTONE, .cb = tomb_cb };
	struct qbd_engine *e;
	char *end;
	int done = 0, err;

	if (argc >= 5 && argc <= 6 && !strcmp(argv[1], "--etcd"))
		return tomb_wire(argv[2], argv[3], argv[4], argc == 6 ? argv[5] : NULL);
	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: qbd-tombstone STORE VOLUME_ID [EPOCH]\n"
			"       qbd-tombstone --etcd URL VOLUME ZONE [EPOCH]\n");
		return 1;
	}
	o.path = argv[1];
	r.volume = strtoull(argv[2], &end, 16);
	if (*end || !r.volume) {
		fprintf(stderr, "qbd-tombstone: bad volume id '%s'\n", argv[2]);
		return 1;
	}
	err = qbd_engine_open(&o, &e);
	if (err) {
		fprintf(stderr, "qbd-tombstone: %s: %s\n", o.path, strerror(-err));
		return 1;
	}
	r.epoch = argc == 4 ? strtoull(argv[3], NULL, 0) : qbd_engine_promised(e, r.volume);
	r.user = &done;
	qbd_engine_submit(e, &r);
	while (!done) {
		struct pollfd p = { .fd = qbd_engine_event_fd(e), .events = POLLIN };

		poll(&p, 1, 1000);
		qbd_engine_poll(e);
	}
	qbd_engine_close(e);
	if (r.res < 0) {
		fprintf(stderr, "qbd-tombstone: volume %016llx: %s\n",
			(unsigned long long)r.volume, strerror(-r.res));
		return 1;
	}
	printf("%llu\n", (unsigned long long)r.version);
	return 0;
}
