/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Controller service, its volumes (docs/design.md, "The CSI
 * driver", "Controller"): CreateVolume, DeleteVolume,
 * ValidateVolumeCapabilities and ControllerExpandVolume, through
 * replicator/admin.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"
#include "replicator/admin/admin.h"
#include "replicator/meta/meta.h"

/* CreateVolume without a capacity_range, or with required_bytes 0. */
#define CSI_DEFAULT_SIZE (1ull << 30)
#define CSI_BLOCK 4096ull
/* The largest size whose round-up to CSI_BLOCK an int64 holds. */
#define CSI_MAX_SIZE (INT64_MAX / CSI_BLOCK * CSI_BLOCK)

typedef Csi__V1__CreateVolumeRequest__ParametersEntry Entry;

static uint64_t round_up(uint64_t x)
{
	return (x + CSI_BLOCK - 1) / CSI_BLOCK * CSI_BLOCK;
}

/* OUT_OF_RANGE for a size CSI cannot carry once rounded up. */
static grpc_status_code too_large(struct csi_call *c, const char *id, uint64_t required)
{
	return csi_fail(c, GRPC_STATUS_OUT_OF_RANGE, "volume %s: required_bytes %" PRIu64
			" rounded up to 4 KiB is past the largest size CSI can carry", id,
			required);
}

/* ---- CreateVolume ---- */

/* Whether the existing volume v answers a request of [required, limit]
 * and p: NULL, or what differs. */
static const char *create_differs(const struct qbd_volume_info *v, uint64_t required,
				  uint64_t limit, const struct csi_params *p, char *buf, size_t len)
{
	if (v->size < required)
		snprintf(buf, len, "its size %" PRIu64 " is below required_bytes %" PRIu64,
			 v->size, required);
	else if (limit && v->size > limit)
		snprintf(buf, len, "its size %" PRIu64 " is above limit_bytes %" PRIu64,
			 v->size, limit);
	else if (v->replicas != p->replicas)
		snprintf(buf, len, "it has %u replicas, the request %u", v->replicas, p->replicas);
	else if (v->write_quorum != p->write_quorum)
		snprintf(buf, len, "its write quorum is %u, the request's %u", v->write_quorum,
			 p->write_quorum);
	else
		return NULL;
	return buf;
}

grpc_status_code csi_ctl_create_volume(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__CreateVolumeRequest *q = (const Csi__V1__CreateVolumeRequest *)req;
	Csi__V1__CreateVolumeResponse r = CSI__V1__CREATE_VOLUME_RESPONSE__INIT;
	struct qbd_node_info *nodes = NULL;
	struct qbd_volume_info v;
	struct csi_vol_msg vm;
	struct csi_params p;
	struct qbd_meta *m = NULL;
	uint64_t required = 0, limit = 0, size = CSI_DEFAULT_SIZE;
	size_t nn = 0;
	char why[512], diff[160];
	grpc_status_code st;
	int err;

	if (!*q->name)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "CreateVolume without a name");
	if (!qbd_meta_volume_name_ok(q->name))
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume name '%s': qbd volume "
				"names are 1 to %d letters, digits, '.', '_' or '-'", q->name,
				QBD_NAME_MAX - 1);
	if (!q->n_volume_capabilities)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"volume %s: CreateVolume without volume_capabilities", q->name);
	st = csi_ctl_check_caps(c, q->name, q->volume_capabilities, q->n_volume_capabilities);
	if (st != GRPC_STATUS_OK)
		return st;
	if (csi_params_parse((Entry *const *)q->parameters, q->n_parameters, &p, why,
			     sizeof why) < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s: %s", q->name, why);
	if (q->capacity_range) {
		if (q->capacity_range->required_bytes < 0 || q->capacity_range->limit_bytes < 0)
			return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s: negative "
					"capacity_range", q->name);
		required = (uint64_t)q->capacity_range->required_bytes;
		limit = (uint64_t)q->capacity_range->limit_bytes;
	}
	if (required > CSI_MAX_SIZE)
		return too_large(c, q->name, required);
	if (required)
		size = round_up(required);
	else if (limit && limit < size)
		size = limit / CSI_BLOCK * CSI_BLOCK;
	if (size == 0 || (limit && size > limit))
		return csi_fail(c, GRPC_STATUS_OUT_OF_RANGE, "volume %s: limit_bytes %" PRIu64
				" is below required_bytes %" PRIu64 " rounded up to %llu bytes "
				"(qbd sizes are multiples of 4 KiB)", q->name, limit, required,
				(unsigned long long)CSI_BLOCK);
	st = csi_ctl_begin(c, q->name, &m);
	if (st != GRPC_STATUS_OK)
		return st;
	err = admin_volume_create(m, q->name, size, p.replicas, p.write_quorum, &v, why,
				  sizeof why);
	if (err == -EEXIST) {
		if (create_differs(&v, required, limit, &p, diff, sizeof diff)) {
			st = csi_fail(c, GRPC_STATUS_ALREADY_EXISTS, "volume %s exists and %s",
				      q->name, diff);
			goto out;
		}
	} else if (err == -EINVAL) {
		st = csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s: %s", q->name, why);
		goto out;
	} else if (err == -ENOSPC) {
		st = csi_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "volume %s: %s", q->name, why);
		goto out;
	} else if (err < 0) {
		st = csi_etcd_fail(c, err, why);
		goto out;
	} else {
		qbd_info(CSI_COMP, "volume %s created: %" PRIu64 " bytes, %u replicas, write "
			 "quorum %u", q->name, v.size, v.replicas, v.write_quorum);
	}
	if (p.has_rebuild_rate) {
		struct qbd_volume_settings set = { .has_rebuild_rate = true,
						   .rebuild_rate = p.rebuild_rate };

		err = qbd_meta_volume_settings_put(m, v.id, &set);
		if (err < 0) {
			st = csi_etcd_fail(c, err, "setting the volume's rebuild rate");
			goto out;
		}
	}
	err = qbd_meta_node_list(m, &nodes, &nn);
	if (err < 0) {
		st = csi_etcd_fail(c, err, "reading the node records");
		goto out;
	}
	csi_vol_fill(&vm, &v, nodes, nn);
	r.volume = &vm.vol;
	st = csi_reply(c, &r.base);
out:
	free(nodes);
	csi_ctl_end(q->name, m);
	return st;
}

/* ---- DeleteVolume ---- */

grpc_status_code csi_ctl_delete_volume(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__DeleteVolumeRequest *q = (const Csi__V1__DeleteVolumeRequest *)req;
	Csi__V1__DeleteVolumeResponse r = CSI__V1__DELETE_VOLUME_RESPONSE__INIT;
	struct admin_delete_result res;
	struct qbd_csi_publish pub;
	struct qbd_meta *m;
	grpc_status_code st;
	char why[512], line[256];
	int err;

	if (!*q->volume_id)
		return csi_ctl_no_volume_id(c);
	if (!qbd_meta_volume_name_ok(q->volume_id))    /* no such volume can exist */
		return csi_reply(c, &r.base);
	st = csi_ctl_begin(c, q->volume_id, &m);
	if (st != GRPC_STATUS_OK)
		return st;
	err = qbd_meta_csi_publish_get(m, q->volume_id, &pub);
	if (err == 0) {
		st = csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION, "volume %s is published to node "
			      "%s: ControllerUnpublishVolume it first", q->volume_id, pub.node);
		goto out;
	}
	if (err != -ENOENT && err != -EPROTO) {
		st = csi_etcd_fail(c, err, "reading the volume's publish record");
		goto out;
	}
	err = admin_volume_delete(m, q->volume_id, &res, why, sizeof why);
	if (err == -EBUSY) {
		st = csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION, "%s", why);
		goto out;
	}
	if (err < 0 && err != -ENOENT) {
		st = csi_etcd_fail(c, err, why);
		goto out;
	}
	if (err == 0) {
		for (unsigned i = 0; i < res.replicas; i++)
			if (res.replica[i].err)
				qbd_warn(CSI_COMP, "volume %s: %s", q->volume_id,
					 admin_replica_warning(&res.replica[i], line, sizeof line));
		qbd_info(CSI_COMP, "volume %s deleted", q->volume_id);
	}
	/* An unreadable record left by nobody knows whom goes with it. */
	err = qbd_meta_csi_publish_delete(m, q->volume_id, NULL);
	if (err < 0)
		qbd_warn(CSI_COMP, "volume %s: its publish record stays: %s", q->volume_id,
			 strerror(-err));
	st = csi_reply(c, &r.base);
out:
	csi_ctl_end(q->volume_id, m);
	return st;
}

/* ---- ValidateVolumeCapabilities ---- */

grpc_status_code csi_ctl_validate(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__ValidateVolumeCapabilitiesRequest *q =
		(const Csi__V1__ValidateVolumeCapabilitiesRequest *)req;
	Csi__V1__ValidateVolumeCapabilitiesResponse r =
		CSI__V1__VALIDATE_VOLUME_CAPABILITIES_RESPONSE__INIT;
	Csi__V1__ValidateVolumeCapabilitiesResponse__Confirmed conf =
		CSI__V1__VALIDATE_VOLUME_CAPABILITIES_RESPONSE__CONFIRMED__INIT;
	struct qbd_volume_info v;
	struct csi_params p;
	struct qbd_meta *m;
	grpc_status_code st;
	char why[512] = "";

	if (!*q->volume_id)
		return csi_ctl_no_volume_id(c);
	if (!q->n_volume_capabilities)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "ValidateVolumeCapabilities of "
				"%s without volume_capabilities", q->volume_id);
	if (!qbd_meta_volume_name_ok(q->volume_id))
		return csi_ctl_no_volume(c, q->volume_id);
	st = csi_meta_for(c, &m);
	if (st != GRPC_STATUS_OK)
		return st;
	st = csi_ctl_volume_get(c, m, q->volume_id, &v);
	csi_meta_give(m);
	if (st != GRPC_STATUS_OK)
		return st;
	if (csi_caps_check(q->volume_capabilities, q->n_volume_capabilities, why, sizeof why) < 0) {
		r.message = why;
	} else if (csi_params_parse((Entry *const *)q->parameters, q->n_parameters, &p, why,
				     sizeof why) < 0) {
		r.message = why;
	} else if ((p.has_replicas && p.replicas != v.replicas) ||
		   (p.has_write_quorum && p.write_quorum != v.write_quorum)) {
		snprintf(why, sizeof why, "volume %s has %u replicas and write quorum %u, the "
			 "parameters say %u and %u", v.name, v.replicas, v.write_quorum,
			 p.replicas, p.write_quorum);
		r.message = why;
	} else {
		/* The capabilities confirmed are those asked. */
		conf.n_volume_capabilities = q->n_volume_capabilities;
		conf.volume_capabilities = q->volume_capabilities;
		r.confirmed = &conf;
	}
	st = csi_reply(c, &r.base);
	return st;
}

/* ---- ControllerExpandVolume ---- */

grpc_status_code csi_ctl_expand_volume(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__ControllerExpandVolumeRequest *q =
		(const Csi__V1__ControllerExpandVolumeRequest *)req;
	Csi__V1__ControllerExpandVolumeResponse r =
		CSI__V1__CONTROLLER_EXPAND_VOLUME_RESPONSE__INIT;
	struct admin_grow_result g;
	struct qbd_volume_info v;
	struct qbd_meta *m;
	uint64_t required, limit, size;
	grpc_status_code st;
	char why[512];
	int err;

	if (!*q->volume_id)
		return csi_ctl_no_volume_id(c);
	if (!q->capacity_range || q->capacity_range->required_bytes <= 0 ||
	    q->capacity_range->limit_bytes < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "ControllerExpandVolume of %s "
				"without a positive capacity_range.required_bytes", q->volume_id);
	if (q->volume_capability &&
	    (st = csi_ctl_check_caps(c, q->volume_id, &q->volume_capability, 1)) != GRPC_STATUS_OK)
		return st;
	if (!qbd_meta_volume_name_ok(q->volume_id))
		return csi_ctl_no_volume(c, q->volume_id);
	required = (uint64_t)q->capacity_range->required_bytes;
	limit = (uint64_t)q->capacity_range->limit_bytes;
	if (required > CSI_MAX_SIZE)
		return too_large(c, q->volume_id, required);
	st = csi_ctl_begin(c, q->volume_id, &m);
	if (st != GRPC_STATUS_OK)
		return st;
	st = csi_ctl_volume_get(c, m, q->volume_id, &v);
	if (st != GRPC_STATUS_OK)
		goto out;
	size = round_up(required);
	if (limit && limit < v.size) {
		st = csi_fail(c, GRPC_STATUS_OUT_OF_RANGE, "volume %s is %" PRIu64 " bytes, above "
			      "limit_bytes %" PRIu64 ": a qbd volume never shrinks", q->volume_id,
			      v.size, limit);
		goto out;
	}
	if (limit && size > limit) {
		st = csi_fail(c, GRPC_STATUS_OUT_OF_RANGE, "volume %s: required_bytes %" PRIu64
			      " rounded up to 4 KiB is above limit_bytes %" PRIu64, q->volume_id,
			      required, limit);
		goto out;
	}
	if (size > v.size) {
		err = admin_volume_grow(m, q->volume_id, size, &g, why, sizeof why);
		if (err == -ENOENT) {
			st = csi_ctl_no_volume(c, q->volume_id);
			goto out;
		}
		if (err == -EFBIG) {
			st = csi_fail(c, GRPC_STATUS_OUT_OF_RANGE, "volume %s: %s", q->volume_id,
				      why);
			goto out;
		}
		if (err == -EINVAL) {
			st = csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s: %s",
				      q->volume_id, why);
			goto out;
		}
		if (err < 0) {
			st = csi_etcd_fail(c, err, why);
			goto out;
		}
		qbd_info(CSI_COMP, "volume %s grown from %" PRIu64 " to %" PRIu64 " bytes%s",
			 q->volume_id, g.old_size, size,
			 g.attached ? " (its writer takes the size from etcd)" : "");
		v.size = size;
	}
	r.capacity_bytes = (int64_t)v.size;
	/* A file system grows on the node (NodeExpandVolume); a block device
	 * is the volume's size as soon as its writer reads it. */
	r.node_expansion_required = !q->volume_capability ||
		q->volume_capability->access_type_case !=
			CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK;
	st = csi_reply(c, &r.base);
out:
	csi_ctl_end(q->volume_id, m);
	return st;
}
