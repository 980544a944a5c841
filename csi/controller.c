/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Controller service (docs/design.md, "The CSI driver", section
 * "Controller"): volumes created, deleted and grown through
 * replicator/admin, the node each volume is published to kept under
 * /qbd/csi/publish/ (meta.h), capacity from the chunk servers' records.
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
#include <time.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"
#include "replicator/admin/admin.h"
#include "replicator/meta/meta.h"

/* CreateVolume without a capacity_range, or with required_bytes 0. */
#define CSI_DEFAULT_SIZE (1ull << 30)
#define CSI_BLOCK 4096ull
/* The largest size whose round-up to CSI_BLOCK an int64 holds. */
#define CSI_MAX_SIZE (INT64_MAX / CSI_BLOCK * CSI_BLOCK)
#define CSI_DEFAULT_REPLICAS 3
/* ListVolumes' next_token: this prefix and the last name returned. */
#define CSI_TOKEN_PREFIX "after:"
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

static void meta_give(struct qbd_meta *m)
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

/* The status of an etcd error (-ENOENT is the caller's to decide). */
static grpc_status_code etcd_fail(struct csi_call *c, int err, const char *what)
{
	if (err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -ETIMEDOUT)
		return csi_fail(c, GRPC_STATUS_UNAVAILABLE, "%s: etcd does not answer (%s)", what,
				strerror(-err));
	if (err == -EAGAIN || err == -EBUSY)
		return csi_fail(c, GRPC_STATUS_ABORTED, "%s: the record changed meanwhile; retry",
				what);
	return csi_fail(c, GRPC_STATUS_INTERNAL, "%s: %s", what, strerror(-err));
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

static int caps_check(Cap *const *caps, size_t n, char *why, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (cap_check(caps[i], why, len) < 0)
			return -EINVAL;
	return 0;
}

/* The StorageClass's parameters. */
struct params {
	unsigned replicas, write_quorum;  /* given, or the defaults */
	bool has_replicas, has_write_quorum;
	bool has_rebuild_rate;
	uint64_t rebuild_rate;
};

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

static int params_parse(Entry *const *e, size_t n, struct params *p, char *why, size_t len)
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

static uint64_t round_up(uint64_t x)
{
	return (x + CSI_BLOCK - 1) / CSI_BLOCK * CSI_BLOCK;
}

/* ---- a volume as CSI sees it ---- */

struct vol_msg {
	Csi__V1__Volume vol;
	Csi__V1__Topology topo[QBD_MAX_REPLICAS], *tp[QBD_MAX_REPLICAS];
	Csi__V1__Topology__SegmentsEntry seg[QBD_MAX_REPLICAS], *sp[QBD_MAX_REPLICAS];
	char zone[QBD_MAX_REPLICAS][QBD_ZONE_MAX];
};

/* v's id, capacity and the zones of its replicas (nodes: the records). */
static void vol_fill(struct vol_msg *vm, struct qbd_volume_info *v,
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

/* ---- CreateVolume ---- */

/* Whether the existing volume v answers a request of [required, limit]
 * and p: NULL, or what differs. */
static const char *create_differs(const struct qbd_volume_info *v, uint64_t required,
				  uint64_t limit, const struct params *p, char *buf, size_t len)
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

static grpc_status_code create_volume(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__CreateVolumeRequest *q = (const Csi__V1__CreateVolumeRequest *)req;
	Csi__V1__CreateVolumeResponse r = CSI__V1__CREATE_VOLUME_RESPONSE__INIT;
	struct qbd_node_info *nodes = NULL;
	struct qbd_volume_info v;
	struct vol_msg vm;
	struct params p;
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
	if (caps_check(q->volume_capabilities, q->n_volume_capabilities, why, sizeof why) < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s: %s", q->name, why);
	if (params_parse((Entry *const *)q->parameters, q->n_parameters, &p, why,
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
		return csi_fail(c, GRPC_STATUS_OUT_OF_RANGE, "volume %s: required_bytes %" PRIu64
				" rounded up to 4 KiB is past the largest size CSI can carry",
				q->name, required);
	if (required)
		size = round_up(required);
	else if (limit && limit < size)
		size = limit / CSI_BLOCK * CSI_BLOCK;
	if (size == 0 || (limit && size > limit))
		return csi_fail(c, GRPC_STATUS_OUT_OF_RANGE, "volume %s: limit_bytes %" PRIu64
				" is below required_bytes %" PRIu64 " rounded up to %llu bytes "
				"(qbd sizes are multiples of 4 KiB)", q->name, limit, required,
				(unsigned long long)CSI_BLOCK);
	st = csi_volume_begin(c, q->name);
	if (st != GRPC_STATUS_OK)
		return st;
	m = meta_take();
	if (!m) {
		st = csi_fail(c, GRPC_STATUS_INTERNAL, "cannot open the etcd client");
		goto out;
	}
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
		st = etcd_fail(c, err, why);
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
			st = etcd_fail(c, err, "setting the volume's rebuild rate");
			goto out;
		}
	}
	err = qbd_meta_node_list(m, &nodes, &nn);
	if (err < 0) {
		st = etcd_fail(c, err, "reading the node records");
		goto out;
	}
	vol_fill(&vm, &v, nodes, nn);
	r.volume = &vm.vol;
	st = csi_reply(c, &r.base);
out:
	free(nodes);
	meta_give(m);
	csi_volume_end(q->name);
	return st;
}

/* ---- DeleteVolume ---- */

static grpc_status_code delete_volume(struct csi_call *c, const ProtobufCMessage *req)
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
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "DeleteVolume without a volume_id");
	if (!qbd_meta_volume_name_ok(q->volume_id))    /* no such volume can exist */
		return csi_reply(c, &r.base);
	st = csi_volume_begin(c, q->volume_id);
	if (st != GRPC_STATUS_OK)
		return st;
	m = meta_take();
	if (!m) {
		st = csi_fail(c, GRPC_STATUS_INTERNAL, "cannot open the etcd client");
		goto out;
	}
	err = qbd_meta_csi_publish_get(m, q->volume_id, &pub);
	if (err == 0) {
		st = csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION, "volume %s is published to node "
			      "%s: ControllerUnpublishVolume it first", q->volume_id, pub.node);
		goto out;
	}
	if (err != -ENOENT && err != -EPROTO) {
		st = etcd_fail(c, err, "reading the volume's publish record");
		goto out;
	}
	err = admin_volume_delete(m, q->volume_id, &res, why, sizeof why);
	if (err == -EBUSY) {
		st = csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION, "%s", why);
		goto out;
	}
	if (err < 0 && err != -ENOENT) {
		st = etcd_fail(c, err, why);
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
	meta_give(m);
	csi_volume_end(q->volume_id);
	return st;
}

/* ---- ControllerPublishVolume, ControllerUnpublishVolume ---- */

static grpc_status_code publish(struct csi_call *c, const ProtobufCMessage *req)
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
	char why[512];
	int err;

	if (!*q->volume_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"ControllerPublishVolume without a volume_id");
	if (!*q->node_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"ControllerPublishVolume of %s without a node_id", q->volume_id);
	if (!q->volume_capability)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"ControllerPublishVolume of %s without a volume_capability",
				q->volume_id);
	if (cap_check(q->volume_capability, why, sizeof why) < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s: %s", q->volume_id,
				why);
	if (!qbd_meta_volume_name_ok(q->volume_id))
		return csi_fail(c, GRPC_STATUS_NOT_FOUND, "no volume %s", q->volume_id);
	if (!qbd_meta_csi_node_id_ok(q->node_id))
		return csi_fail(c, GRPC_STATUS_NOT_FOUND, "no node '%s' (not a node name)",
				q->node_id);
	st = csi_volume_begin(c, q->volume_id);
	if (st != GRPC_STATUS_OK)
		return st;
	m = meta_take();
	if (!m) {
		st = csi_fail(c, GRPC_STATUS_INTERNAL, "cannot open the etcd client");
		goto out;
	}
	err = qbd_meta_volume_get(m, q->volume_id, &v);
	if (err == -ENOENT) {
		st = csi_fail(c, GRPC_STATUS_NOT_FOUND, "no volume %s", q->volume_id);
		goto out;
	}
	if (err < 0) {
		st = etcd_fail(c, err, "reading the volume");
		goto out;
	}
	err = qbd_meta_csi_node_get(m, q->node_id, &node);
	if (err == -ENOENT) {
		st = csi_fail(c, GRPC_STATUS_NOT_FOUND, "node %s has not registered (no "
			      CSI_NODES_PREFIX "%s): is qbd-csi --mode node running there?",
			      q->node_id, q->node_id);
		goto out;
	}
	if (err < 0) {
		st = etcd_fail(c, err, "reading the node's registration");
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
		st = etcd_fail(c, err, "reading the volume's publish record");
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
		st = etcd_fail(c, err, "writing the volume's publish record");
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
	meta_give(m);
	csi_volume_end(q->volume_id);
	return st;
}

static grpc_status_code unpublish(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__ControllerUnpublishVolumeRequest *q =
		(const Csi__V1__ControllerUnpublishVolumeRequest *)req;
	Csi__V1__ControllerUnpublishVolumeResponse r =
		CSI__V1__CONTROLLER_UNPUBLISH_VOLUME_RESPONSE__INIT;
	struct qbd_meta *m;
	grpc_status_code st;
	int err;

	if (!*q->volume_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"ControllerUnpublishVolume without a volume_id");
	if (!qbd_meta_volume_name_ok(q->volume_id))    /* published nowhere */
		return csi_reply(c, &r.base);
	st = csi_volume_begin(c, q->volume_id);
	if (st != GRPC_STATUS_OK)
		return st;
	m = meta_take();
	if (!m) {
		st = csi_fail(c, GRPC_STATUS_INTERNAL, "cannot open the etcd client");
		goto out;
	}
	/* No node_id: from every node (the spec's words). */
	err = qbd_meta_csi_publish_delete(m, q->volume_id, *q->node_id ? q->node_id : NULL);
	if (err == -EAGAIN) {
		/* Another node took it over: this one holds nothing. */
		qbd_info(CSI_COMP, "volume %s: not published to node %s (another node took it "
			 "over): nothing to unpublish", q->volume_id, q->node_id);
	} else if (err < 0) {
		st = etcd_fail(c, err, "deleting the volume's publish record");
		goto out;
	} else {
		qbd_info(CSI_COMP, "volume %s unpublished from %s", q->volume_id,
			 *q->node_id ? q->node_id : "every node");
	}
	st = csi_reply(c, &r.base);
out:
	meta_give(m);
	csi_volume_end(q->volume_id);
	return st;
}

/* ---- ValidateVolumeCapabilities ---- */

static grpc_status_code validate(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__ValidateVolumeCapabilitiesRequest *q =
		(const Csi__V1__ValidateVolumeCapabilitiesRequest *)req;
	Csi__V1__ValidateVolumeCapabilitiesResponse r =
		CSI__V1__VALIDATE_VOLUME_CAPABILITIES_RESPONSE__INIT;
	Csi__V1__ValidateVolumeCapabilitiesResponse__Confirmed conf =
		CSI__V1__VALIDATE_VOLUME_CAPABILITIES_RESPONSE__CONFIRMED__INIT;
	struct qbd_volume_info v;
	struct params p;
	struct qbd_meta *m;
	grpc_status_code st;
	char why[512] = "";
	int err;

	if (!*q->volume_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"ValidateVolumeCapabilities without a volume_id");
	if (!q->n_volume_capabilities)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "ValidateVolumeCapabilities of "
				"%s without volume_capabilities", q->volume_id);
	if (!qbd_meta_volume_name_ok(q->volume_id))
		return csi_fail(c, GRPC_STATUS_NOT_FOUND, "no volume %s", q->volume_id);
	m = meta_take();
	if (!m)
		return csi_fail(c, GRPC_STATUS_INTERNAL, "cannot open the etcd client");
	err = qbd_meta_volume_get(m, q->volume_id, &v);
	meta_give(m);
	if (err == -ENOENT)
		return csi_fail(c, GRPC_STATUS_NOT_FOUND, "no volume %s", q->volume_id);
	if (err < 0)
		return etcd_fail(c, err, "reading the volume");
	if (caps_check(q->volume_capabilities, q->n_volume_capabilities, why, sizeof why) < 0) {
		r.message = why;
	} else if (params_parse((Entry *const *)q->parameters, q->n_parameters, &p, why,
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

/* ---- ListVolumes ---- */

static grpc_status_code list_volumes(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__ListVolumesRequest *q = (const Csi__V1__ListVolumesRequest *)req;
	Csi__V1__ListVolumesResponse r = CSI__V1__LIST_VOLUMES_RESPONSE__INIT;
	struct qbd_volume_info *vols = NULL;
	struct qbd_node_info *nodes = NULL;
	struct qbd_csi_publish *pubs = NULL;
	size_t nv = 0, nn = 0, np = 0, first = 0, count;
	struct vol_msg *vm = NULL;
	Csi__V1__ListVolumesResponse__Entry *ent = NULL, **ep = NULL;
	Csi__V1__ListVolumesResponse__VolumeStatus *vs = NULL;
	char **pubnode = NULL;
	char token[sizeof CSI_TOKEN_PREFIX + QBD_NAME_MAX];
	const char *after = NULL;
	struct qbd_meta *m;
	grpc_status_code st;
	int err;

	if (q->max_entries < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "max_entries %d is negative",
				q->max_entries);
	if (*q->starting_token) {
		after = q->starting_token + strlen(CSI_TOKEN_PREFIX);
		if (strncmp(q->starting_token, CSI_TOKEN_PREFIX, strlen(CSI_TOKEN_PREFIX)) != 0 ||
		    !qbd_meta_volume_name_ok(after))
			return csi_fail(c, GRPC_STATUS_ABORTED, "starting_token '%s' is not one "
					"ListVolumes gave", q->starting_token);
	}
	m = meta_take();
	if (!m)
		return csi_fail(c, GRPC_STATUS_INTERNAL, "cannot open the etcd client");
	err = qbd_meta_volume_list(m, &vols, &nv);
	if (!err)
		err = qbd_meta_node_list(m, &nodes, &nn);
	if (!err)
		err = qbd_meta_csi_publish_list(m, &pubs, &np);
	meta_give(m);
	if (err < 0) {
		st = etcd_fail(c, err, "listing the volumes");
		goto out;
	}
	/* Sorted by name: the page starts after the token's name (which may
	 * be gone since). */
	if (after)
		while (first < nv && strcmp(vols[first].name, after) <= 0)
			first++;
	count = nv - first;
	if (q->max_entries && (size_t)q->max_entries < count)
		count = (size_t)q->max_entries;
	if (count) {
		vm = calloc(count, sizeof *vm);
		ent = calloc(count, sizeof *ent);
		ep = calloc(count, sizeof *ep);
		vs = calloc(count, sizeof *vs);
		pubnode = calloc(count, sizeof *pubnode);
		if (!vm || !ent || !ep || !vs || !pubnode) {
			st = csi_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < count; i++) {
		struct qbd_volume_info *v = &vols[first + i];

		vol_fill(&vm[i], v, nodes, nn);
		csi__v1__list_volumes_response__entry__init(&ent[i]);
		csi__v1__list_volumes_response__volume_status__init(&vs[i]);
		for (size_t k = 0; k < np; k++)
			if (strcmp(pubs[k].volume, v->name) == 0) {
				pubnode[i] = pubs[k].node;
				vs[i].n_published_node_ids = 1;
				vs[i].published_node_ids = &pubnode[i];
			}
		ent[i].volume = &vm[i].vol;
		ent[i].status = &vs[i];
		ep[i] = &ent[i];
	}
	r.n_entries = count;
	r.entries = ep;
	if (first + count < nv) {
		snprintf(token, sizeof token, CSI_TOKEN_PREFIX "%s", vols[first + count - 1].name);
		r.next_token = token;
	}
	st = csi_reply(c, &r.base);
out:
	free(vm);
	free(ent);
	free(ep);
	free(vs);
	free(pubnode);
	free(vols);
	free(nodes);
	free(pubs);
	return st;
}

/* ---- GetCapacity ---- */

struct zone_free {
	char zone[QBD_ZONE_MAX];
	uint64_t free;
};

static int by_free_desc(const void *a, const void *b)
{
	const struct zone_free *x = a, *y = b;

	return x->free < y->free ? 1 : x->free > y->free ? -1 : 0;
}

/*
 * The largest volume of `replicas` replicas (one per zone) that fits
 * now: with zone (not NULL), one replica there and the others in the
 * largest of the other zones, so min(free(zone), the (R-1)-th largest
 * other zone's free); without, the R-th largest zone's free. 0 when
 * there are not enough zones. A zone's free space: the sum over its
 * live, in-service chunk servers of capacity - used (used counts
 * allocated chunks: chunks are allocated as they are written, so a new
 * volume takes nothing until written).
 */
static uint64_t capacity_of(const struct qbd_node_info *nodes, size_t nn, unsigned replicas,
			    const char *zone)
{
	struct zone_free z[64];
	size_t nz = 0, k;
	uint64_t best = 0;
	bool found = false;

	for (size_t i = 0; i < nn; i++) {
		const struct qbd_node_info *n = &nodes[i];

		if (!n->alive || n->state != QBD_NODE_IN)
			continue;
		for (k = 0; k < nz && strcmp(z[k].zone, n->zone) != 0; k++)
			;
		if (k == nz) {
			if (nz == sizeof z / sizeof z[0])
				continue;
			snprintf(z[nz].zone, sizeof z[nz].zone, "%s", n->zone);
			z[nz++].free = 0;
		}
		z[k].free += n->capacity > n->used ? n->capacity - n->used : 0;
	}
	if (zone) {
		/* Take the zone out; then it needs R-1 others. */
		for (k = 0; k < nz; k++)
			if (strcmp(z[k].zone, zone) == 0) {
				best = z[k].free;
				found = true;
				z[k] = z[--nz];
				break;
			}
		if (!found)
			return 0;
		replicas--;
		if (!replicas)
			return best;
	}
	if (nz < replicas)
		return 0;
	qsort(z, nz, sizeof z[0], by_free_desc);
	return zone ? (z[replicas - 1].free < best ? z[replicas - 1].free : best)
		    : z[replicas - 1].free;
}

static grpc_status_code get_capacity(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__GetCapacityRequest *q = (const Csi__V1__GetCapacityRequest *)req;
	Csi__V1__GetCapacityResponse r = CSI__V1__GET_CAPACITY_RESPONSE__INIT;
	struct qbd_node_info *nodes = NULL;
	const char *zone = NULL;
	struct params p;
	struct qbd_meta *m;
	size_t nn = 0;
	char why[512];
	int err;

	if (params_parse((Entry *const *)q->parameters, q->n_parameters, &p, why,
			 sizeof why) < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
	if (caps_check(q->volume_capabilities, q->n_volume_capabilities, why, sizeof why) < 0)
		return csi_reply(c, &r.base);    /* nothing of that kind: 0 */
	if (q->accessible_topology)
		for (size_t i = 0; i < q->accessible_topology->n_segments; i++)
			if (strcmp(q->accessible_topology->segments[i]->key,
				   CSI_TOPOLOGY_ZONE_KEY) == 0)
				zone = q->accessible_topology->segments[i]->value;
	m = meta_take();
	if (!m)
		return csi_fail(c, GRPC_STATUS_INTERNAL, "cannot open the etcd client");
	err = qbd_meta_node_list(m, &nodes, &nn);
	meta_give(m);
	if (err < 0)
		return etcd_fail(c, err, "reading the node records");
	r.available_capacity = (int64_t)capacity_of(nodes, nn, p.replicas, zone);
	free(nodes);
	return csi_reply(c, &r.base);
}

/* ---- ControllerExpandVolume ---- */

static grpc_status_code expand_volume(struct csi_call *c, const ProtobufCMessage *req)
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
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"ControllerExpandVolume without a volume_id");
	if (!q->capacity_range || q->capacity_range->required_bytes <= 0 ||
	    q->capacity_range->limit_bytes < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "ControllerExpandVolume of %s "
				"without a positive capacity_range.required_bytes", q->volume_id);
	if (q->volume_capability && cap_check(q->volume_capability, why, sizeof why) < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s: %s", q->volume_id,
				why);
	if (!qbd_meta_volume_name_ok(q->volume_id))
		return csi_fail(c, GRPC_STATUS_NOT_FOUND, "no volume %s", q->volume_id);
	required = (uint64_t)q->capacity_range->required_bytes;
	limit = (uint64_t)q->capacity_range->limit_bytes;
	if (required > CSI_MAX_SIZE)
		return csi_fail(c, GRPC_STATUS_OUT_OF_RANGE, "volume %s: required_bytes %" PRIu64
				" rounded up to 4 KiB is past the largest size CSI can carry",
				q->volume_id, required);
	st = csi_volume_begin(c, q->volume_id);
	if (st != GRPC_STATUS_OK)
		return st;
	m = meta_take();
	if (!m) {
		st = csi_fail(c, GRPC_STATUS_INTERNAL, "cannot open the etcd client");
		goto out;
	}
	err = qbd_meta_volume_get(m, q->volume_id, &v);
	if (err == -ENOENT) {
		st = csi_fail(c, GRPC_STATUS_NOT_FOUND, "no volume %s", q->volume_id);
		goto out;
	}
	if (err < 0) {
		st = etcd_fail(c, err, "reading the volume");
		goto out;
	}
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
			st = csi_fail(c, GRPC_STATUS_NOT_FOUND, "no volume %s", q->volume_id);
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
			st = etcd_fail(c, err, why);
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
	meta_give(m);
	csi_volume_end(q->volume_id);
	return st;
}

#define M(name, req, resp, fn)                                                      \
	{ "/csi.v1.Controller/" name, &csi__v1__##req##__descriptor,                \
	  &csi__v1__##resp##__descriptor, fn }

const struct csi_method csi_controller_methods[] = {
	M("ControllerGetCapabilities", controller_get_capabilities_request,
	  controller_get_capabilities_response, get_capabilities),
	M("CreateVolume", create_volume_request, create_volume_response, create_volume),
	M("DeleteVolume", delete_volume_request, delete_volume_response, delete_volume),
	M("ControllerPublishVolume", controller_publish_volume_request,
	  controller_publish_volume_response, publish),
	M("ControllerUnpublishVolume", controller_unpublish_volume_request,
	  controller_unpublish_volume_response, unpublish),
	M("ValidateVolumeCapabilities", validate_volume_capabilities_request,
	  validate_volume_capabilities_response, validate),
	M("ListVolumes", list_volumes_request, list_volumes_response, list_volumes),
	M("GetCapacity", get_capacity_request, get_capacity_response, get_capacity),
	M("ControllerExpandVolume", controller_expand_volume_request,
	  controller_expand_volume_response, expand_volume),
	{ NULL, NULL, NULL, NULL },
};
