/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replicator/admin: the administrative operations of a cluster, shared by
 * the qbd CLI and the CSI driver so that each has one implementation.
 *
 *   wire.c     blocking administrative requests to one chunk server
 *              (DELETE_VOLUME, CHECKSUM, USAGE, TOMBSTONE)
 *
 * Functions return 0 or -errno.
 */
#ifndef QBD_ADMIN_H
#define QBD_ADMIN_H

#include <stdint.h>

#include "replicator/meta/meta.h"
#include "replicator/wire/wire.h"

/* ---- wire.c: blocking administrative requests to one chunk server ---- */

struct admin_conn {
	int fd;
	uint64_t cluster_id, node_id, next_id;
	struct qbd_wire_rx rx;
};
/* The cluster secret file (NULL: none), set before admin_connect. */
extern const char *admin_secret_file;
int admin_connect(const struct qbd_node_info *node, uint64_t cluster_id,
		  struct admin_conn *ac);
void admin_close(struct admin_conn *ac);
/* Version and XXH3-64 of a chunk's bytes on that replica. */
int admin_checksum(struct admin_conn *ac, uint64_t volume_id, uint64_t chunk,
		   uint64_t *version, uint64_t *checksum);
int admin_delete_volume(const struct qbd_node_info *node, uint64_t cluster_id,
			uint64_t volume_id, uint64_t epoch);
/* Space a volume takes on that replica (volume 0: the whole store). */
struct admin_usage {
	uint64_t chunks;        /* chunks allocated */
	uint64_t held;          /* bytes of data in written blocks */
	uint64_t used;          /* bytes of chunk slots */
	uint64_t capacity, free_slots; /* of the store */
};
int admin_usage(struct admin_conn *ac, uint64_t volume_id, struct admin_usage *out);
/* TOMBSTONE: the replica serves the volume under no epoch from then on
 * (docs/protocol.md, section 2), its chunks freed; epoch at least its
 * promised one, else -EPERM. *tomb_epoch (may be NULL) gets the epoch
 * of its tombstone (0, -EPERM: its promised epoch; -EBUSY: the tombstone
 * stands, some chunks were busy: ask again). */
int admin_tombstone(struct admin_conn *ac, uint64_t volume_id, uint64_t epoch,
		    uint64_t *tomb_epoch);

#endif
