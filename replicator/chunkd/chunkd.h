/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd: the chunk server. One libuv loop thread serves the qbd wire
 * protocol over TCP on top of one engine (engine/engine.h); a second thread
 * keeps the node's etcd lease alive. See docs/design.md, "qbd-chunkd (chunk
 * server)".
 */
#ifndef QBD_CHUNKD_H
#define QBD_CHUNKD_H

#include <stdint.h>

#define QBD_CHUNKD_LEASE_TTL 10        /* seconds */
#define QBD_CHUNKD_KEEPALIVE_MS 3000
#define QBD_CHUNKD_MAX_INFLIGHT 256    /* requests per connection */
#define QBD_CHUNKD_DRAIN_MS 5000       /* shutdown: wait this long at most */
#define QBD_CHUNKD_SCRUB_RATE (4ull << 20) /* default background scrub, bytes/s */
#define QBD_CHUNKD_STATS_MS 1000       /* numbers copied for the node record */
#define QBD_CHUNKD_BUFFERS 32          /* default registered buffers, a chunk each */
#define QBD_CHUNKD_RECLAIM_GRACE_MS (5 * 60 * 1000) /* default reclaim grace */

struct qbd_chunkd_opts {
	const char *data;       /* store path */
	uint64_t create_size;   /* create the file with this size if absent */
	const char *listen;     /* "HOST:PORT" */
	const char *advertise;  /* "HOST:PORT" published in etcd; NULL = listen */
	const char *zone;
	const char *etcd;       /* etcd URL(s) */
	uint64_t scrub_rate;    /* background scrub, bytes/s; 0 = off */
	unsigned buffers;       /* request buffers registered with the engine's
				 * ring, a chunk each; more requests in flight
				 * get buffers of their own */
	const char *secret_file;/* cluster secret (0600); NULL: not authenticated */
	const char *metrics;    /* "HOST:PORT" of the Prometheus endpoint; NULL: none */
	uint64_t reclaim_grace_ms; /* chunks of a volume absent from etcd are
				    * deleted once it was seen absent this long
				    * (docs/design.md, "Reclaim"); 0 = never */
};

/*
 * Run the chunk server until SIGTERM/SIGINT. Blocking; the strings in opts
 * must stay valid for the call. Returns 0 after a clean shutdown, -errno if
 * start-up failed (the reason is logged).
 */
int qbd_chunkd_run(const struct qbd_chunkd_opts *opts);

#endif
