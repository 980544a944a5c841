/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-csi, the Container Storage Interface driver (docs/design.md, "The
 * CSI driver"): private declarations, one section per file.
 */
#ifndef QBD_CSI_INTERNAL_H
#define QBD_CSI_INTERNAL_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "csi/proto/csi.pb-c.h"
#include "replicator/meta/meta.h"

#define CSI_COMP "csi"
/* The driver's name, as the CSIDriver object and StorageClasses name it. */
#define CSI_DRIVER_NAME "qbd.csi.io"
#ifndef QBD_VERSION
#define QBD_VERSION "unknown"
#endif

/* Which services an instance serves (--mode); Identity always. */
enum csi_mode {
	CSI_MODE_CONTROLLER = 1,
	CSI_MODE_NODE = 2,
	CSI_MODE_ALL = 3,
};

struct csi_opts {
	const char *endpoint;   /* as given: unix:///path, unix:path or a path */
	const char *etcd;       /* endpoint list for the meta library */
	enum csi_mode mode;
	const char *node_id;
	const char *zone;
	const char *state_dir;  /* node mode: the staging records (node.c) */
	const char *secret_file; /* the cluster secret, or NULL (links unauthenticated) */
};

/* ---- grpc.c: the server, its threads and its method table ---- */

/* One call being served; handlers see it only through the functions
 * below. */
struct csi_call;

/*
 * A handler: req is the decoded request (of the method's request type,
 * freed by the caller). It returns GRPC_STATUS_OK after csi_reply, or a
 * status code through csi_fail. It may block (etcd, the kernel): it runs
 * on a worker thread.
 */
typedef grpc_status_code (*csi_handler_fn)(struct csi_call *c, const ProtobufCMessage *req);

/* One entry of the method table. */
struct csi_method {
	const char *name;                            /* "/csi.v1.Identity/Probe" */
	const ProtobufCMessageDescriptor *request;   /* how to decode */
	const ProtobufCMessageDescriptor *response;  /* what csi_reply must get */
	csi_handler_fn handler;
};

/* The response of a call: encoded at once (the handler keeps ownership of
 * resp). Returns GRPC_STATUS_OK, or GRPC_STATUS_INTERNAL (logged) if resp
 * is not of the method's response type. */
grpc_status_code csi_reply(struct csi_call *c, const ProtobufCMessage *resp);
/* A failed call: code and an operator's message; returns code. */
grpc_status_code csi_fail(struct csi_call *c, grpc_status_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The settings and the method's full name, for handlers and their logs. */
const struct csi_opts *csi_call_opts(const struct csi_call *c);
const char *csi_call_method(const struct csi_call *c);

struct csi_server;

/*
 * Listen on o->endpoint and serve the methods of tables (each ending with
 * a NULL name; the array ends with NULL) until csi_server_stop. 0, or
 * -errno with the reason logged. *out owned by the caller.
 */
int csi_server_start(const struct csi_opts *o, const struct csi_method *const *tables,
		     struct csi_server **out);
/* Stop admitting calls, cancel those in flight, wait for the handlers
 * that run, release everything and remove the socket. */
void csi_server_stop(struct csi_server *s);

/* ---- endpoint.c: the socket ---- */

/* The socket path of an endpoint ("unix:///run/csi.sock", "unix:x.sock",
 * "/run/csi.sock") into path; -EINVAL with the reason in why. */
int csi_endpoint_path(const char *endpoint, char *path, size_t len, char *why, size_t wlen);
/* Make way for the socket at path: a socket nobody accepts on (left by a
 * driver that died) is removed; a live one (-EADDRINUSE), a file that
 * is not a socket (-EEXIST) or a missing directory (-ENOENT) is an
 * error, logged. */
int csi_socket_clear(const char *path);

/* ---- inflight.c: the volumes an operation is running on ---- */

/*
 * Mark volume id busy for the call: GRPC_STATUS_OK, or (through
 * csi_fail) GRPC_STATUS_ABORTED "an operation on volume X is in
 * progress" when another call holds it, as the spec asks of a second
 * operation on one volume. csi_volume_end releases it.
 */
grpc_status_code csi_volume_begin(struct csi_call *c, const char *id);
void csi_volume_end(const char *id);

/* ---- identity.c: GetPluginInfo, GetPluginCapabilities, Probe ---- */

extern const struct csi_method csi_identity_methods[];
/* Open the etcd client Probe uses (does not contact etcd); 0 or -errno. */
int csi_identity_init(const struct csi_opts *o);
void csi_identity_fini(void);

/* ---- controller*.c: the Controller service ---- */

/* The topology segment of a volume's zones (CreateVolume's
 * accessible_topology) and of a node's (NodeGetInfo). */
#define CSI_TOPOLOGY_ZONE_KEY "topology.qbd.io/zone"
/* publish_context of ControllerPublishVolume: the qbd volume's name. */
#define CSI_PUBLISH_CONTEXT_VOLUME "volume"
/* A node plugin registers itself (qbd_meta_csi_node_put: its zone) at
 * start under this prefix + its node id; ControllerPublishVolume to a
 * node without a registration is NOT_FOUND. */
#define CSI_NODES_PREFIX "/qbd/csi/nodes/"

extern const struct csi_method csi_controller_methods[];
/* 0 or -errno (does not contact etcd). */
int csi_controller_init(const struct csi_opts *o);
void csi_controller_fini(void);

/* What the Controller's handlers share (controller.c). */
/* An etcd client of the pool for the call into *m: GRPC_STATUS_OK, or
 * INTERNAL (through csi_fail) if none can be opened. Given back with
 * csi_meta_give (NULL is nothing). */
grpc_status_code csi_meta_for(struct csi_call *c, struct qbd_meta **m);
void csi_meta_give(struct qbd_meta *m);
/* A handler's work on volume id: csi_volume_begin and an etcd client
 * (on failure, neither is held); csi_ctl_end gives both back. */
grpc_status_code csi_ctl_begin(struct csi_call *c, const char *id, struct qbd_meta **m);
void csi_ctl_end(const char *id, struct qbd_meta *m);
/* The volume's record: NOT_FOUND if there is none, an etcd error's
 * status if it cannot be read. */
grpc_status_code csi_ctl_volume_get(struct csi_call *c, struct qbd_meta *m, const char *id,
				    struct qbd_volume_info *v);
/* The failures the handlers share: INVALID_ARGUMENT "<method> without a
 * volume_id"; NOT_FOUND "no volume <id>"; INVALID_ARGUMENT "volume <id>:
 * <why>" for a capability qbd cannot serve (else GRPC_STATUS_OK). */
grpc_status_code csi_ctl_no_volume_id(struct csi_call *c);
grpc_status_code csi_ctl_no_volume(struct csi_call *c, const char *id);
grpc_status_code csi_ctl_check_caps(struct csi_call *c, const char *id,
				    Csi__V1__VolumeCapability *const *caps, size_t n);
/* The status of an etcd error (-ENOENT is the caller's to decide). */
grpc_status_code csi_etcd_fail(struct csi_call *c, int err, const char *what);
/* Whether qbd can serve every capability of caps: 0, or -EINVAL with
 * why. */
int csi_caps_check(Csi__V1__VolumeCapability *const *caps, size_t n, char *why, size_t len);
/* The StorageClass's parameters. */
struct csi_params {
	unsigned replicas, write_quorum;  /* given, or the defaults */
	bool has_replicas, has_write_quorum;
	bool has_rebuild_rate;
	uint64_t rebuild_rate;
};
/* e: the map's entries (all CSI maps of strings have this form); 0, or
 * -EINVAL with why. */
int csi_params_parse(Csi__V1__CreateVolumeRequest__ParametersEntry *const *e, size_t n,
		     struct csi_params *p, char *why, size_t len);
/* A volume as CSI sees it. */
struct csi_vol_msg {
	Csi__V1__Volume vol;
	Csi__V1__Topology topo[QBD_MAX_REPLICAS], *tp[QBD_MAX_REPLICAS];
	Csi__V1__Topology__SegmentsEntry seg[QBD_MAX_REPLICAS], *sp[QBD_MAX_REPLICAS];
	char zone[QBD_MAX_REPLICAS][QBD_ZONE_MAX];
};
/* v's id, capacity and the zones of its replicas (nodes: the records). */
void csi_vol_fill(struct csi_vol_msg *vm, struct qbd_volume_info *v,
		  const struct qbd_node_info *nodes, size_t nn);

/* The handlers: controller-volumes.c (CreateVolume, DeleteVolume,
 * ValidateVolumeCapabilities, ControllerExpandVolume),
 * controller-publish.c (ControllerPublishVolume, ControllerUnpublishVolume),
 * controller-list.c (ListVolumes, GetCapacity). */
grpc_status_code csi_ctl_create_volume(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_ctl_delete_volume(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_ctl_validate(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_ctl_expand_volume(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_ctl_publish(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_ctl_unpublish(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_ctl_list_volumes(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_ctl_get_capacity(struct csi_call *c, const ProtobufCMessage *req);

/* ---- node*.c: the Node service; node-fs.c: its pure decisions ---- */

/* The topology segment of a node's zone (NodeGetInfo, the controller's
 * accessibility). */
#define CSI_TOPOLOGY_ZONE CSI_TOPOLOGY_ZONE_KEY
#define CSI_STATE_DIR_DEFAULT "/var/lib/qbd-csi"

extern const struct csi_method csi_node_methods[];
/* Make the state directory, find the qbd CLI, register the node in etcd
 * (if etcd does not take it, a thread tries again until it does); 0 or
 * -errno (logged). csi_node_fini stops that thread. */
int csi_node_init(const struct csi_opts *o);
void csi_node_fini(void);

/* What the first blocks of a device hold: nothing (all zeros: mkfs may
 * run), a filesystem of a known type (type set), or something else
 * (type says what): never formatted. */
enum csi_fs_probe { CSI_FS_EMPTY, CSI_FS_FOUND, CSI_FS_DATA };
/* How many bytes csi_fs_probe wants (btrfs's superblock is at 64 KiB). */
#define CSI_FS_PROBE_BYTES (128u * 1024)
enum csi_fs_probe csi_fs_probe(const uint8_t *buf, size_t n, char *type, size_t tlen);
/* A capability's mount_flags (and readonly) as mount(2)'s flags and the
 * filesystem's data string; -EINVAL with why for a flag the driver keeps
 * to itself (bind, remount, move) or one holding a comma. */
int csi_mount_flags(char *const *flags, size_t n, bool readonly, unsigned long *ms,
		    char *data, size_t dlen, char *why, size_t wlen);

struct csi_mountinfo {
	unsigned major, minor;
	char root[1024], mountpoint[1024], fstype[64], source[1024];
	bool readonly;
};
/* One line of /proc/self/mountinfo (octal escapes undone); -EINVAL. */
int csi_mountinfo_parse(const char *line, struct csi_mountinfo *mi);

/* The staging record: what NodeStageVolume did, kept in the state
 * directory so that Unstage, Publish, Stats and Expand find the device
 * after a restart of the plugin. */
struct csi_stage {
	char volume_id[256];
	char volume[128];       /* the qbd volume name */
	char device[64];        /* /dev/nbdN */
	char staging[1024];
	bool block;
	char fs_type[32];       /* mount access: the filesystem */
};
/* DIR/<volume id, escaped>.json; the id's characters outside [A-Za-z0-9._-]
 * (and a leading '.') as %XX. */
void csi_state_file(char *out, size_t len, const char *dir, const char *volume_id);
char *csi_stage_to_json(const struct csi_stage *s);   /* malloc'd, or NULL */
int csi_stage_from_json(const char *text, struct csi_stage *s);   /* 0 or -EINVAL */

/* What the Node's handlers share (node.c): the settings and the qbd CLI
 * (set by csi_node_init). */
extern const struct csi_opts *csi_node_opts;
extern char csi_qbd_path[];
/* Run argv with stdin /dev/null, stdout into out and stderr into err
 * (both NUL-terminated, cut to their size). Its exit status, 128+signal,
 * or -errno if it could not run; killed after a timeout. */
int csi_run(char *const argv[], char *out, size_t olen, char *err, size_t elen);
/* The last line of a command's messages (s is cut), for an operator's
 * message. */
const char *csi_last_line(char *s);
/* The staging record of a volume id: read (0, -errno, -EINVAL if not a
 * record), written (0 or -errno, logged), removed. */
int csi_stage_load(const char *volume_id, struct csi_stage *s);
int csi_stage_save(const struct csi_stage *s);
void csi_stage_drop(const char *volume_id);
/* The mount at exactly path (the last one stacked there): 1, 0 none, -errno. */
int csi_mount_at(const char *path, struct csi_mountinfo *out);
/* Unmount the mount at exactly path (all: every one stacked there), if
 * any; 0 or -errno. */
int csi_unmount(const char *path, bool all);
/* Whether mount mi is of block device `device`. */
bool csi_same_dev(const struct csi_mountinfo *mi, const char *device);
int csi_mkdir_p(const char *path, mode_t mode);
/* A capability's access type, its filesystem (ext4 when unsaid), and
 * whether the node serves it (block or mount, a single-node mode; else
 * INVALID_ARGUMENT through csi_fail). */
bool csi_cap_block(const Csi__V1__VolumeCapability *vc);
const char *csi_cap_fs(const Csi__V1__VolumeCapability *vc);
grpc_status_code csi_node_check_cap(struct csi_call *c, const Csi__V1__VolumeCapability *vc);
/* Pairs of a request field's name and value, up to a NULL name:
 * INVALID_ARGUMENT "<name> is required" for the first value missing or
 * empty, else GRPC_STATUS_OK. */
grpc_status_code csi_node_required(struct csi_call *c, ...);
/* The handlers: node-stage.c (NodeStageVolume, NodeUnstageVolume),
 * node-publish.c (NodePublishVolume, NodeUnpublishVolume), node-stats.c
 * (NodeGetVolumeStats, NodeExpandVolume). */
grpc_status_code csi_node_stage(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_node_unstage(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_node_publish(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_node_unpublish(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_node_get_volume_stats(struct csi_call *c, const ProtobufCMessage *req);
grpc_status_code csi_node_expand(struct csi_call *c, const ProtobufCMessage *req);

#endif
