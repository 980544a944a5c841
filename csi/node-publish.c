/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Node service, publishing (docs/design.md, "The CSI driver",
 * Node): NodePublishVolume bind-mounts the staged device or filesystem
 * on the target path (read-only if asked), NodeUnpublishVolume unmounts
 * it and removes the target.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "internal.h"

/* ---- NodePublishVolume, NodeUnpublishVolume ---- */

grpc_status_code csi_node_publish(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodePublishVolumeRequest *q = (const void *)req;
	Csi__V1__NodePublishVolumeResponse resp = CSI__V1__NODE_PUBLISH_VOLUME_RESPONSE__INIT;
	struct csi_stage s;
	struct csi_mountinfo mi;
	grpc_status_code code;
	const char *src;
	int r;

	code = csi_node_required(c, "volume_id", q->volume_id, "target_path", q->target_path, NULL);
	if (code != GRPC_STATUS_OK)
		return code;
	if (!q->staging_target_path || !*q->staging_target_path)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "staging_target_path is required "
				"(the driver stages volumes)");
	if ((code = csi_node_check_cap(c, q->volume_capability)) != GRPC_STATUS_OK)
		return code;
	if ((code = csi_volume_begin(c, q->volume_id)) != GRPC_STATUS_OK)
		return code;
	if (csi_stage_load(q->volume_id, &s) < 0) {
		code = csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION, "volume %s is not staged on "
				"node %s (NodeStageVolume first)", q->volume_id,
				csi_node_opts->node_id);
		goto out;
	}
	if (s.block != csi_cap_block(q->volume_capability)) {
		code = csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s was staged for %s "
				"access, published for %s", q->volume_id, s.block ? "block" : "mount",
				s.block ? "mount" : "block");
		goto out;
	}
	src = s.block ? s.device : s.staging;
	if (csi_mount_at(q->target_path, &mi) > 0) {
		if (csi_same_dev(&mi, s.device) && mi.readonly == (bool)q->readonly) {
			code = csi_reply(c, &resp.base);   /* published already */
			goto out;
		}
		code = csi_fail(c, GRPC_STATUS_ALREADY_EXISTS, "%s is a mount of %s%s already, "
				"not of volume %s as asked", q->target_path, mi.source,
				mi.readonly ? " (read-only)" : "", q->volume_id);
		goto out;
	}
	if (s.block) {
		int fd = open(q->target_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);

		r = fd < 0 ? -errno : 0;
		if (fd >= 0)
			close(fd);
	} else {
		r = csi_mkdir_p(q->target_path, 0750);
	}
	if (r < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "creating %s: %s", q->target_path,
				strerror(-r));
		goto out;
	}
	if (mount(src, q->target_path, NULL, MS_BIND, NULL) < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "bind mount of %s on %s: %s", src,
				q->target_path, strerror(errno));
		goto out;
	}
	if (q->readonly &&
	    mount(NULL, q->target_path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "read-only remount of %s: %s",
				q->target_path, strerror(errno));
		umount2(q->target_path, 0);
		goto out;
	}
	qbd_info(CSI_COMP, "volume %s published at %s%s", s.volume, q->target_path,
		 q->readonly ? " (read-only)" : "");
	code = csi_reply(c, &resp.base);
out:
	csi_volume_end(q->volume_id);
	return code;
}

grpc_status_code csi_node_unpublish(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeUnpublishVolumeRequest *q = (const void *)req;
	Csi__V1__NodeUnpublishVolumeResponse resp = CSI__V1__NODE_UNPUBLISH_VOLUME_RESPONSE__INIT;
	struct stat st;
	grpc_status_code code;
	int r;

	code = csi_node_required(c, "volume_id", q->volume_id, "target_path", q->target_path, NULL);
	if (code != GRPC_STATUS_OK)
		return code;
	if ((code = csi_volume_begin(c, q->volume_id)) != GRPC_STATUS_OK)
		return code;
	r = csi_unmount(q->target_path, true);
	if (r < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "unmounting %s: %s", q->target_path,
				strerror(-r));
		goto out;
	}
	if (lstat(q->target_path, &st) == 0 &&
	    (S_ISDIR(st.st_mode) ? rmdir(q->target_path) : unlink(q->target_path)) < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "removing %s: %s", q->target_path,
				strerror(errno));
		goto out;
	}
	code = csi_reply(c, &resp.base);
out:
	csi_volume_end(q->volume_id);
	return code;
}
