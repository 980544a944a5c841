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

/* admin-wire.c: send DELETE_VOLUME to one chunk server. 0 or -errno. */
int admin_delete_volume(const struct qbd_node_info *node, uint64_t cluster_id,
			uint64_t volume_id, uint64_t epoch);

/* dev.c */
int cmd_dev(int argc, char **argv);

#endif
