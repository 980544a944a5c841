/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Controller service, where volumes are published
 * (docs/design.md, "The CSI driver", "Controller"):
 * ControllerPublishVolume and ControllerUnpublishVolume, the node each
 * volume is published to kept under /qbd/csi/publish/ (meta.h); a
 * publish to another node than the record's is a takeover, logged.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "internal.h"
#include "replicator/meta/meta.h"

/* ---- ControllerPublishVolume, ControllerUnpublishVolume ---- */

grpc_status_code csi_ctl_publish(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__ControllerPublishVolumeRequest *q =
		(const Csi__V1__ControllerPublishVolumeRequest *)req;
	Csi__V1__ControllerPublishVolumeResponse r =
		CSI__V1__CONTROLLER_PUBLISH_VOLUME_RESPONSE__INIT;
	Csi__V1__ControllerPublishVolumeResponse__PublishContextEntry e =
		CSI__V1__CONTROLLER_PUBLISH_VOLUME_RESPONSE__PUBLISH_CONTEXT_ENTRY__INIT, *ep = &e;
	struct qbd_csi_publish pub, old;
	struct qbd_volume_info v;
	struct qbd_csi_node node;
	struct qbd_meta *m;
	grpc_status_code st;
	int err;

	if (!*q->volume_id)
		return csi_ctl_no_volume_id(c);
	if (!*q->node_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"ControllerPublishVolume of %s without a node_id", q->volume_id);
	if (!q->volume_capability)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"ControllerPublishVolume of %s without a volume_capability",
				q->volume_id);
	st = csi_ctl_check_caps(c, q->volume_id, &q->volume_capability, 1);
	if (st != GRPC_STATUS_OK)
		return st;
	if (!qbd_meta_volume_name_ok(q->volume_id))
		return csi_ctl_no_volume(c, q->volume_id);
	if (!qbd_meta_csi_node_id_ok(q->node_id))
		return csi_fail(c, GRPC_STATUS_NOT_FOUND, "no node '%s' (not a node name)",
				q->node_id);
	st = csi_ctl_begin(c, q->volume_id, &m);
	if (st != GRPC_STATUS_OK)
		return st;
	st = csi_ctl_volume_get(c, m, q->volume_id, &v);
	if (st != GRPC_STATUS_OK)
		goto out;
	err = qbd_meta_csi_node_get(m, q->node_id, &node);
	if (err == -ENOENT) {
		st = csi_fail(c, GRPC_STATUS_NOT_FOUND, "node %s has not registered (no "
			      CSI_NODES_PREFIX "%s): is qbd-csi --mode node running there?",
			      q->node_id, q->node_id);
		goto out;
	}
	if (err < 0) {
		st = csi_etcd_fail(c, err, "reading the node's registration");
		goto out;
	}
	err = qbd_meta_csi_publish_get(m, q->volume_id, &old);
	if (err == 0 && strcmp(old.node, q->node_id) == 0) {
		if (old.readonly != q->readonly) {
			st = csi_fail(c, GRPC_STATUS_ALREADY_EXISTS, "volume %s is published to "
				      "node %s %s; unpublish it before publishing it %s",
				      q->volume_id, old.node, old.readonly ? "read-only" :
				      "read-write", q->readonly ? "read-only" : "read-write");
			goto out;
		}
		goto reply;     /* published there already */
	}
	if (err < 0 && err != -ENOENT && err != -EPROTO) {
		st = csi_etcd_fail(c, err, "reading the volume's publish record");
		goto out;
	}
	if (err == 0)
		qbd_warn(CSI_COMP, "volume %s: takeover: published to node %s (zone %s) while "
			 "node %s holds it since %" PRIu64 "; the new writer's epoch fences "
			 "the old one's writes", q->volume_id, q->node_id, node.zone, old.node,
			 old.since);
	memset(&pub, 0, sizeof pub);
	snprintf(pub.volume, sizeof pub.volume, "%s", q->volume_id);
	snprintf(pub.node, sizeof pub.node, "%s", q->node_id);
	pub.readonly = q->readonly;
	pub.since = (uint64_t)time(NULL);
	err = qbd_meta_csi_publish_put(m, &pub);
	if (err < 0) {
		st = csi_etcd_fail(c, err, "writing the volume's publish record");
		goto out;
	}
	qbd_info(CSI_COMP, "volume %s published to node %s (zone %s)%s", q->volume_id,
		 q->node_id, node.zone, q->readonly ? " read-only" : "");
reply:
	e.key = (char *)CSI_PUBLISH_CONTEXT_VOLUME;
	e.value = v.name;
	r.n_publish_context = 1;
	r.publish_context = &ep;
	st = csi_reply(c, &r.base);
out:
	csi_ctl_end(q->volume_id, m);
	return st;
}

grpc_status_code csi_ctl_unpublish(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__ControllerUnpublishVolumeRequest *q =
		(const Csi__V1__ControllerUnpublishVolumeRequest *)req;
	Csi__V1__ControllerUnpublishVolumeResponse r =
		CSI__V1__CONTROLLER_UNPUBLISH_VOLUME_RESPONSE__INIT;
	struct qbd_meta *m;
	grpc_status_code st;
	int err;

	if (!*q->volume_id)
		return csi_ctl_no_volume_id(c);
	if (!qbd_meta_volume_name_ok(q->volume_id))    /* published nowhere */
		return csi_reply(c, &r.base);
	st = csi_ctl_begin(c, q->volume_id, &m);
	if (st != GRPC_STATUS_OK)
		return st;
	/* No node_id: from every node (the spec's words). */
	err = qbd_meta_csi_publish_delete(m, q->volume_id, *q->node_id ? q->node_id : NULL);
	if (err == -EAGAIN) {
		/* Another node took it over: this one holds nothing. */
		qbd_info(CSI_COMP, "volume %s: not published to node %s (another node took it "
			 "over): nothing to unpublish", q->volume_id, q->node_id);
	} else if (err < 0) {
		st = csi_etcd_fail(c, err, "deleting the volume's publish record");
		goto out;
	} else {
		qbd_info(CSI_COMP, "volume %s unpublished from %s", q->volume_id,
			 *q->node_id ? q->node_id : "every node");
	}
	st = csi_reply(c, &r.base);
out:
	csi_ctl_end(q->volume_id, m);
	return st;
}
