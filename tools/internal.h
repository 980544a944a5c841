/* SPDX-License-Identifier: Apache-2.0 */
/* qbd CLI internals. One section per .c file. */
#ifndef QBD_TOOLS_INTERNAL_H
#define QBD_TOOLS_INTERNAL_H

#include <stdint.h>

#include "replicator/meta/meta.h"

/* Exit statuses of every qbd command. */
#define EXIT_OK 0
#define EXIT_ERR 1
#define EXIT_USAGE 2

/* qbd-main.c */
extern const char *cli_etcd;
extern int cli_json;
int cli_meta(struct qbd_meta **m);

/* cli-volume.c */
int cmd_node(int argc, char **argv);
int cmd_volume(int argc, char **argv);

/* admin-wire.c: blocking administrative requests to one chunk server.
 * 0 or -errno. */
#include "replicator/wire/wire.h"
struct admin_conn {
	int fd;
	uint64_t cluster_id, node_id, next_id;
	struct qbd_wire_rx rx;
};
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

/* cli-verify.c: qbd volume verify NAME */
int cmd_volume_verify(int argc, char **argv);

/* cli-attach.c: attach, detach, mapped (argv[0] names which) */
int cmd_kernel(int argc, char **argv);

/* dev.c */
int cmd_dev(int argc, char **argv);

#endif
