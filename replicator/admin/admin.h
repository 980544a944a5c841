/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replicator/admin: the administrative operations of a cluster, shared by
 * the qbd CLI and the CSI driver so that each has one implementation.
 *
 *   wire.c     blocking administrative requests to one chunk server
 *              (DELETE_VOLUME, CHECKSUM, USAGE, TOMBSTONE, OPEN)
 *   volume.c   create, delete, grow and fence a volume, as `qbd volume
 *              create|delete|resize|fence` do
 *
 * Functions return 0 or -errno. Those of volume.c never print and never
 * exit: with an error they put one line in the caller's why[len] (always
 * NUL-terminated, no trailing newline, no "qbd: " prefix) that says what
 * an operator can act on.
 */
#ifndef QBD_ADMIN_H
#define QBD_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
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
/* OPEN(epoch) of the volume on that node, as a writer's attach sends it:
 * the replica promises epoch (durably) and from then on refuses every
 * request of an older epoch with EPERM (docs/protocol.md, section 2).
 * 0 promised; -EPERM it promised a newer epoch already, -EIDRM it holds
 * a tombstone of the volume (both refuse older epochs too); *promised
 * (may be NULL) then gets the reply's epoch (its promise, or its
 * tombstone's). Other -errno: not reached, or refused. */
int admin_promise(const struct qbd_node_info *node, uint64_t cluster_id,
		  uint64_t volume_id, uint64_t epoch, uint64_t *promised);

/* ---- volume.c: volume operations (etcd through m, opened by the caller) ---- */

/* The chunk size of every volume. */
#define ADMIN_CHUNK_SIZE (1u << 20)

/* The write quorum a volume of `replicas` gets when none is given: a
 * majority. */
unsigned admin_default_write_quorum(unsigned replicas);

/* Whether a new volume's parameters are sound: name (letters, digits,
 * '.', '_', '-'), size (a positive multiple of 4096 within the chunk
 * limit of the wire), 1..QBD_MAX_REPLICAS replicas, write quorum
 * 1..replicas (0: the default). 0, or -EINVAL with the reason. Pure. */
int admin_volume_check(const char *name, uint64_t size, unsigned replicas,
		       unsigned write_quorum, char *why, size_t len);

/* Create volume name (write_quorum 0: the default) on nodes placement
 * picks; *out gets the record created. -EEXIST with *out the existing
 * record (compare its size, replicas and quorum for idempotency);
 * -EINVAL (admin_volume_check); -ENOSPC when too few zones have a live
 * node in service (why names those found); -ENOTSUP when a chosen node
 * uses another chunk size; other -errno from etcd. */
int admin_volume_create(struct qbd_meta *m, const char *name, uint64_t size,
			unsigned replicas, unsigned write_quorum,
			struct qbd_volume_info *out, char *why, size_t len);

/* What deleting a volume did on one of its replicas. */
struct admin_replica_result {
	uint64_t node;          /* its node id */
	int err;                /* 0 cleaned, else why not */
	bool no_record;         /* err: the node has no record in etcd */
};
struct admin_delete_result {
	unsigned replicas;      /* entries of replica[] filled (0 when the
				 * delete stopped before the replicas) */
	struct admin_replica_result replica[QBD_MAX_REPLICAS];
};
/* One line on a replica that was not cleaned (r->err != 0), for the
 * caller to print or log as a warning; returns buf. */
const char *admin_replica_warning(const struct admin_replica_result *r, char *buf,
				  size_t len);

/* Delete volume name: refuse while attached, bump its epoch (fencing
 * any writer), ask each replica's chunk server to DELETE_VOLUME (a
 * replica that cannot be reached is not an error: its chunk server
 * reclaims the space once back; res->replica[] says which, print or log
 * admin_replica_warning of each), delete the record, then its settings.
 * -ENOENT when there is no such volume; -EBUSY when attached (why names
 * the host, pid and epoch), before or while the replicas were cleaned;
 * other -errno from etcd. res may be NULL. */
int admin_volume_delete(struct qbd_meta *m, const char *name,
			struct admin_delete_result *res, char *why, size_t len);

struct admin_grow_result {
	struct qbd_volume_info v;   /* the record as read before the grow */
	uint64_t old_size;          /* == size: it was that size already */
	bool attached;              /* a writer is attached after the grow */
	struct qbd_attachment att;  /* its attachment (attached) */
};
/* Grow volume name to size bytes in etcd (compare-and-swap on its
 * record; docs/design.md, "Resize") and return: an attached writer
 * takes the new size from etcd by itself, nothing here waits for it.
 * -ENOENT when there is no such volume (or it went meanwhile); -EINVAL
 * for a size smaller than the volume's (a volume only grows) or not a
 * positive multiple of 4096; -EFBIG past the chunk limit of the wire
 * (why: "at most N chunks of C bytes"); -EAGAIN when the record changed
 * meanwhile; other -errno from etcd. out may be NULL. */
int admin_volume_grow(struct qbd_meta *m, const char *name, uint64_t size,
		      struct admin_grow_result *out, char *why, size_t len);

/*
 * Fence volume name out of service (Kubernetes' non-graceful node
 * shutdown: its writer's node is dead or cut off, and the volume is to
 * be attached elsewhere at once; docs/protocol.md, section 3a): bump its
 * epoch in etcd (which fences every writer before it there: no
 * configuration change, status or lease renewal of theirs goes through
 * any more), read its configuration again (frozen from then on: every
 * change compares the epoch), send OPEN at the new epoch to every node
 * of it (the voters of S, and the change's node Y while one stands),
 * each of which then refuses the old writer's every request with EPERM,
 * and delete the old writer's attachment record (only one of an older
 * epoch), so that the next attach needs no --force; it then waits out
 * the old writer's read lease (no /qbd/clean record at the fence's
 * epoch), as after a crash.
 *
 * The fence holds when the replicas that promised (0, or EPERM/EIDRM:
 * they refuse older epochs too) leave the old writer fewer than W of a
 * voter set its every write needs: at least R - W + 1 of S (with a joint
 * change, of S or of S'). Then 0. Otherwise -EIO, why naming how many
 * promised and how many were needed, and the attachment record is left
 * in place (the old writer may still reach its quorum; fence again once
 * the replicas are reachable). Nobody attached: it just bumps and
 * promises. -ENOENT no such volume; other -errno from etcd (nothing
 * done when the bump failed). res (may be NULL) says what was done.
 */
struct admin_fence_replica {
	uint64_t node;          /* its node id */
	bool voter_s;           /* a voter of S (nodes[]) */
	bool voter_s2;          /* a voter of S' (joint change) */
	int err;                /* admin_promise: 0, -EPERM, -EIDRM, other */
	bool no_record;         /* err: the node has no record in etcd */
	uint64_t promised;      /* its reply's epoch (0, EPERM, EIDRM) */
};
struct admin_fence_result {
	struct qbd_volume_info v;    /* the record, as read after the bump */
	uint64_t epoch;              /* the epoch of the fence (0: no bump) */
	bool attached;               /* a writer's record of an older epoch */
	struct qbd_attachment att;   /* its record (attached) */
	bool detached;               /* that record was deleted */
	bool newer;                  /* a writer of a newer epoch holds the
				      * attachment (newer_att): left alone */
	struct qbd_attachment newer_att;
	unsigned replicas;           /* entries of replica[] filled */
	struct admin_fence_replica replica[QBD_MAX_REPLICAS + 1];
	unsigned refusing;           /* replicas that refuse the old epoch */
	unsigned needed;             /* R - W + 1 */
	bool holds;                  /* the fence holds (the rule above) */
};
/* Whether a replica counts as fencing (it refuses the old epoch). */
bool admin_fence_refuses(const struct admin_fence_replica *r);
/* Set res->refusing, needed and holds from res->v and res->replica[]
 * by the rule above (refusing: of the set that holds, or of S when
 * none does). Pure. */
void admin_fence_judge(struct admin_fence_result *res);
/* One line on a replica that did not promise, for the caller to print;
 * returns buf. */
const char *admin_fence_warning(const struct admin_fence_replica *r, char *buf,
				size_t len);
int admin_volume_fence(struct qbd_meta *m, const char *name,
		       struct admin_fence_result *res, char *why, size_t len);

#endif
