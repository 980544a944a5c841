/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-tombstone: give a volume a tombstone in a chunk server's store,
 * offline (its chunk server stopped), as the store of a node removed
 * from the volume keeps one: how a test brings a removed node back.
 *
 *   qbd-tombstone STORE VOLUME_ID [EPOCH]
 *
 * VOLUME_ID in hex (as `qbd volume info --json` prints it); EPOCH
 * defaults to the store's promised epoch for the volume. Prints the
 * tombstone's epoch. Exit 0 ok, 1 failure (message on stderr).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

static void tomb_cb(struct qbd_engine_req *r)
{
	*(int *)r->user = 1;
}

int main(int argc, char **argv)
{
	struct qbd_engine_opts o = { 0 };
	struct qbd_engine_req r = { .op = QBD_ENGINE_TOMBSTONE, .cb = tomb_cb };
	struct qbd_engine *e;
	char *end;
	int done = 0, err;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: qbd-tombstone STORE VOLUME_ID [EPOCH]\n");
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
