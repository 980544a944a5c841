/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Controller service (docs/design.md, "The CSI driver", section
 * "Controller"): its method table, ControllerGetCapabilities, and what
 * its handlers share (the etcd clients, the checks of capabilities and
 * StorageClass parameters, a volume as CSI sees it). The handlers are in
 * controller-volumes.c (create, delete, validate, expand),
 * controller-publish.c (publish, unpublish) and controller-list.c
 * (ListVolumes, GetCapacity).
 *
 * A CSI volume id is the qbd volume's name, which is the CSI name
 * CreateVolume was given (a name qbd cannot hold is INVALID_ARGUMENT).
 * Every handler that acts on one volume brackets its work with
 * csi_volume_begin/_end (ABORTED while another call on it runs). The
 * etcd clients are a small pool: a qbd_meta is used by one thread at a
 * time, and a handler takes one for its call.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"
#include "replicator/admin/admin.h"
#include "replicator/meta/meta.h"

#define CSI_DEFAULT_REPLICAS 3
/* StorageClass parameters the external-provisioner adds (ignored). */
#define CSI_K8S_PARAM_PREFIX "csi.storage.k8s.io/"

typedef Csi__V1__VolumeCapability Cap;

/* ---- etcd clients ---- */

#define POOL_MAX 8

static const char *etcd_url;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct qbd_meta *pool[POOL_MAX];
static int pool_n;

int csi_controller_init(const struct csi_opts *o)
{
	char why[256];

	etcd_url = o->etcd;
	if (qbd_meta_endpoints_check(o->etcd, why, sizeof why) < 0) {
		qbd_err(CSI_COMP, "etcd '%s': %s", o->etcd, why);
		return -EINVAL;
	}
	/* DELETE_VOLUME to the chunk servers authenticates with the
	 * cluster's secret, as the CLI's does. */
	admin_secret_file = o->secret_file;
	return 0;
}

void csi_controller_fini(void)
{
	pthread_mutex_lock(&pool_lock);
	while (pool_n > 0)
		qbd_meta_close(pool[--pool_n]);
	pthread_mutex_unlock(&pool_lock);
}

static struct qbd_meta *meta_take(void)
{
	struct qbd_meta *m = NULL;

	pthread_mutex_lock(&pool_lock);
	if (pool_n > 0)
		m = pool[--pool_n];
	pthread_mutex_unlock(&pool_lock);
	if (!m && qbd_meta_open(etcd_url, &m) < 0)
		return NULL;
	return m;
}

void csi_meta_give(struct qbd_meta *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&pool_lock);
	if (pool_n < POOL_MAX) {
		pool[pool_n++] = m;
		m = NULL;
	}
	pthread_mutex_unlock(&pool_lock);
	qbd_meta_close(m);
}

grpc_status_code csi_meta_for(struct csi_call *c, struct qbd_meta **m)
{
	*m = meta_take();
	if (!*m)
		return csi_fail(c, GRPC_STATUS_INTERNAL, "cannot open the etcd client");
	return GRPC_STATUS_OK;
}

grpc_status_code csi_etcd_fail(struct csi_call *c, int err, const char *what)
{
	if (err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -ETIMEDOUT)
		return csi_fail(c, GRPC_STATUS_UNAVAILABLE, "%s: etcd does not answer (%s)", what,
				strerror(-err));
	if (err == -EAGAIN || err == -EBUSY)
		return csi_fail(c, GRPC_STATUS_ABORTED, "%s: the record changed meanwhile; retry",
				what);
	return csi_fail(c, GRPC_STATUS_INTERNAL, "%s: %s", what, strerror(-err));
}

/* ---- what the handlers on one volume share ---- */

grpc_status_code csi_ctl_begin(struct csi_call *c, const char *id, struct qbd_meta **m)
{
	grpc_status_code st = csi_volume_begin(c, id);

	if (st != GRPC_STATUS_OK)
		return st;
	st = csi_meta_for(c, m);
	if (st != GRPC_STATUS_OK)
		csi_volume_end(id);
	return st;
}

void csi_ctl_end(const char *id, struct qbd_meta *m)
{
	csi_meta_give(m);
	csi_volume_end(id);
}

grpc_status_code csi_ctl_volume_get(struct csi_call *c, struct qbd_meta *m, const char *id,
				    struct qbd_volume_info *v)
{
	int err = qbd_meta_volume_get(m, id, v);

	if (err == -ENOENT)
		return csi_ctl_no_volume(c, id);
	if (err < 0)
		return csi_etcd_fail(c, err, "reading the volume");
	return GRPC_STATUS_OK;
}

grpc_status_code csi_ctl_no_volume_id(struct csi_call *c)
{
	const char *method = strrchr(csi_call_method(c), '/');

	return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s without a volume_id",
			method ? method + 1 : csi_call_method(c));
}

grpc_status_code csi_ctl_no_volume(struct csi_call *c, const char *id)
{
	return csi_fail(c, GRPC_STATUS_NOT_FOUND, "no volume %s", id);
}

grpc_status_code csi_ctl_check_caps(struct csi_call *c, const char *id, Cap *const *caps,
				    size_t n)
{
	char why[512];

	if (csi_caps_check(caps, n, why, sizeof why) < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s: %s", id, why);
	return GRPC_STATUS_OK;
}

/* ---- arguments ---- */

static const char *mode_name(int mode)
{
	const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
		&csi__v1__volume_capability__access_mode__mode__descriptor, mode);

	return v ? v->name : "an unknown mode";
}

/* Whether qbd can serve capability cap: 0, or -EINVAL with why. */
static int cap_check(const Cap *cap, char *why, size_t len)
{
	if (cap->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT) {
		const char *fs = cap->mount ? cap->mount->fs_type : "";

		if (*fs && strcmp(fs, "ext4") != 0 && strcmp(fs, "xfs") != 0) {
			snprintf(why, len, "file system type '%s': qbd volumes are formatted "
				 "ext4 or xfs", fs);
			return -EINVAL;
		}
	} else if (cap->access_type_case != CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK) {
		snprintf(why, len, "a volume capability without an access type (block or mount)");
		return -EINVAL;
	}
	if (!cap->access_mode) {
		snprintf(why, len, "a volume capability without an access mode");
		return -EINVAL;
	}
	switch (cap->access_mode->mode) {
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_WRITER:
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_SINGLE_WRITER:
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_READER_ONLY:
		return 0;
	default:
		snprintf(why, len, "access mode %s: a qbd volume has one writer on one node at a "
			 "time (SINGLE_NODE_WRITER, SINGLE_NODE_SINGLE_WRITER or "
			 "SINGLE_NODE_READER_ONLY)", mode_name(cap->access_mode->mode));
		return -EINVAL;
	}
}

int csi_caps_check(Cap *const *caps, size_t n, char *why, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (cap_check(caps[i], why, len) < 0)
			return -EINVAL;
	return 0;
}

static int param_uint(const char *key, const char *val, unsigned lo, unsigned hi,
		      unsigned *out, char *why, size_t len)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(val, &end, 10);
	if (!*val || *end || errno || v < lo || v > hi || *val == '-') {
		snprintf(why, len, "parameter %s='%s': want a number from %u to %u", key, val, lo,
			 hi);
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

/* entries: the map's entries (all CSI maps of strings have this form). */
typedef Csi__V1__CreateVolumeRequest__ParametersEntry Entry;

int csi_params_parse(Entry *const *e, size_t n, struct csi_params *p, char *why,
		     size_t len)
{
	memset(p, 0, sizeof *p);
	p->replicas = CSI_DEFAULT_REPLICAS;
	for (size_t i = 0; i < n; i++) {
		const char *k = e[i]->key, *v = e[i]->value;

		if (strncmp(k, CSI_K8S_PARAM_PREFIX, strlen(CSI_K8S_PARAM_PREFIX)) == 0)
			continue;
		if (strcmp(k, "replicas") == 0) {
			if (param_uint(k, v, 1, QBD_MAX_REPLICAS, &p->replicas, why, len) < 0)
				return -EINVAL;
			p->has_replicas = true;
		} else if (strcmp(k, "writeQuorum") == 0) {
			if (param_uint(k, v, 1, QBD_MAX_REPLICAS, &p->write_quorum, why, len) < 0)
				return -EINVAL;
			p->has_write_quorum = true;
		} else if (strcmp(k, "rebuildRate") == 0) {
			if (qbd_parse_size(v, &p->rebuild_rate) < 0) {
				snprintf(why, len, "parameter rebuildRate='%s': want bytes per "
					 "second (a number, K, M or G; 0: unlimited)", v);
				return -EINVAL;
			}
			p->has_rebuild_rate = true;
		} else {
			snprintf(why, len, "unknown parameter '%s': qbd takes replicas, "
				 "writeQuorum and rebuildRate", k);
			return -EINVAL;
		}
	}
	if (p->has_write_quorum && p->write_quorum > p->replicas) {
		snprintf(why, len, "parameter writeQuorum=%u: above replicas=%u", p->write_quorum,
			 p->replicas);
		return -EINVAL;
	}
	if (!p->has_write_quorum)
		p->write_quorum = admin_default_write_quorum(p->replicas);
	return 0;
}

/* ---- a volume as CSI sees it ---- */

void csi_vol_fill(struct csi_vol_msg *vm, struct qbd_volume_info *v,
		  const struct qbd_node_info *nodes, size_t nn)
{
	size_t nz = 0;

	memset(vm, 0, sizeof *vm);
	csi__v1__volume__init(&vm->vol);
	vm->vol.volume_id = v->name;
	vm->vol.capacity_bytes = (int64_t)v->size;
	for (unsigned r = 0; r < v->replicas && r < QBD_MAX_REPLICAS; r++) {
		const char *z = NULL;
		size_t k;

		for (size_t i = 0; i < nn; i++)
			if (nodes[i].id == v->nodes[r])
				z = nodes[i].zone;
		if (!z || !*z)
			continue;
		for (k = 0; k < nz && strcmp(vm->zone[k], z) != 0; k++)
			;
		if (k < nz)
			continue;
		snprintf(vm->zone[nz], QBD_ZONE_MAX, "%s", z);
		csi__v1__topology__init(&vm->topo[nz]);
		csi__v1__topology__segments_entry__init(&vm->seg[nz]);
		vm->seg[nz].key = (char *)CSI_TOPOLOGY_ZONE_KEY;
		vm->seg[nz].value = vm->zone[nz];
		vm->sp[nz] = &vm->seg[nz];
		vm->topo[nz].n_segments = 1;
		vm->topo[nz].segments = &vm->sp[nz];
		vm->tp[nz] = &vm->topo[nz];
		nz++;
	}
	vm->vol.n_accessible_topology = nz;
	vm->vol.accessible_topology = vm->tp;
}

/* ---- ControllerGetCapabilities ---- */

static grpc_status_code get_capabilities(struct csi_call *c, const ProtobufCMessage *req)
{
	static const Csi__V1__ControllerServiceCapability__RPC__Type types[] = {
		CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CREATE_DELETE_VOLUME,
		CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__PUBLISH_UNPUBLISH_VOLUME,
		CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__LIST_VOLUMES,
		CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__GET_CAPACITY,
		CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__EXPAND_VOLUME,
		CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__LIST_VOLUMES_PUBLISHED_NODES,
	};
	enum { N = sizeof types / sizeof types[0] };
	Csi__V1__ControllerGetCapabilitiesResponse r =
		CSI__V1__CONTROLLER_GET_CAPABILITIES_RESPONSE__INIT;
	Csi__V1__ControllerServiceCapability cap[N], *caps[N];
	Csi__V1__ControllerServiceCapability__RPC rpc[N];

	(void)req;
	for (int i = 0; i < N; i++) {
		csi__v1__controller_service_capability__init(&cap[i]);
		csi__v1__controller_service_capability__rpc__init(&rpc[i]);
		rpc[i].type = types[i];
		cap[i].type_case = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__TYPE_RPC;
		cap[i].rpc = &rpc[i];
		caps[i] = &cap[i];
	}
	r.n_capabilities = N;
	r.capabilities = caps;
	return csi_reply(c, &r.base);
}

#define M(name, req, resp, fn)                                                      \
	{ "/csi.v1.Controller/" name, &csi__v1__##req##__descriptor,                \
	  &csi__v1__##resp##__descriptor, fn }

const struct csi_method csi_controller_methods[] = {
	M("ControllerGetCapabilities", controller_get_capabilities_request,
	  controller_get_capabilities_response, get_capabilities),
	M("CreateVolume", create_volume_request, create_volume_response, csi_ctl_create_volume),
	M("DeleteVolume", delete_volume_request, delete_volume_response, csi_ctl_delete_volume),
	M("ControllerPublishVolume", controller_publish_volume_request,
	  controller_publish_volume_response, csi_ctl_publish),
	M("ControllerUnpublishVolume", controller_unpublish_volume_request,
	  controller_unpublish_volume_response, csi_ctl_unpublish),
	M("ValidateVolumeCapabilities", validate_volume_capabilities_request,
	  validate_volume_capabilities_response, csi_ctl_validate),
	M("ListVolumes", list_volumes_request, list_volumes_response, csi_ctl_list_volumes),
	M("GetCapacity", get_capacity_request, get_capacity_response, csi_ctl_get_capacity),
	M("ControllerExpandVolume", controller_expand_volume_request,
	  controller_expand_volume_response, csi_ctl_expand_volume),
	{ NULL, NULL, NULL, NULL },
};
