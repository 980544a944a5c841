/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Node service, a staged volume's size and health
 * (docs/design.md, "The CSI driver", Node): NodeGetVolumeStats (usage,
 * and the condition `qbd volume status` judges), NodeExpandVolume (the
 * device's new size, then resize2fs or xfs_growfs).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

/* How long NodeExpandVolume waits for the device to grow. */
#define EXPAND_WAIT_S 60

static int64_t dev_size(const char *device)
{
	uint64_t sz = 0;
	int fd = open(device, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, BLKGETSIZE64, &sz) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	close(fd);
	return (int64_t)sz;
}

/* The arguments both calls take: volume_id, and volume_path, which must
 * exist (NOT_FOUND), into st. */
static grpc_status_code path_args(struct csi_call *c, const char *id, const char *path,
				  struct stat *st)
{
	grpc_status_code code = csi_node_required(c, "volume_id", id, "volume_path", path, NULL);

	if (code == GRPC_STATUS_OK && stat(path, st) < 0)
		code = csi_fail(c, GRPC_STATUS_NOT_FOUND, "volume_path %s: %s", path,
				strerror(errno));
	return code;
}

static grpc_status_code not_staged(struct csi_call *c, const char *id)
{
	return csi_fail(c, GRPC_STATUS_NOT_FOUND, "volume %s is not staged on node %s", id,
			csi_node_opts->node_id);
}

/* ---- NodeGetVolumeStats ---- */

/* The volume's health as qbd volume status judges it: false with msg
 * when degraded or failed. */
static bool volume_healthy(const char *name, char *msg, size_t mlen)
{
	static char out[65536];   /* one caller at a time: under lock */
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	char err[2048];
	char *argv[] = { csi_qbd_path, "--etcd", (char *)csi_node_opts->etcd, "volume", "status",
			 (char *)name, "--json", NULL };
	bool ok;

	pthread_mutex_lock(&lock);
	int rc = csi_run(argv, out, sizeof out, err, sizeof err);
	if (rc == 0) {
		pthread_mutex_unlock(&lock);
		snprintf(msg, mlen, "healthy");
		return true;
	}
	ok = false;
	json_object *o = json_tokener_parse(out), *v, *arr;
	if (o && (rc == 3 || rc == 4)) {
		size_t used = 0;
		const char *health = json_object_object_get_ex(o, "health", &v) ?
				     json_object_get_string(v) : "?";
		int usable = json_object_object_get_ex(o, "usable", &v) ? json_object_get_int(v) : -1;
		int n = json_object_object_get_ex(o, "replica_status", &arr) &&
			json_object_is_type(arr, json_type_array) ?
			(int)json_object_array_length(arr) : 0;

		used += (size_t)snprintf(msg, mlen, "volume %s is %s: %d of %d replicas usable",
					 name, health, usable, n);
		for (int i = 0; i < n && used < mlen; i++) {
			json_object *e = json_object_array_get_idx(arr, (size_t)i), *u, *z, *st;

			if (json_object_object_get_ex(e, "usable", &u) && json_object_get_boolean(u))
				continue;
			json_object_object_get_ex(e, "zone", &z);
			bool has_st = json_object_object_get_ex(e, "state", &st);
			used += (size_t)snprintf(msg + used, mlen - used, "; replica %d (zone %s) %s",
						 i, z ? json_object_get_string(z) : "?",
						 has_st ? json_object_get_string(st) : "not usable");
		}
	} else {
		snprintf(msg, mlen, "the health of volume %s is unknown: qbd volume status exited "
			 "%d: %s", name, rc, csi_last_line(err));
		ok = rc != 3 && rc != 4;   /* unknown, not abnormal */
	}
	json_object_put(o);
	pthread_mutex_unlock(&lock);
	return ok;
}

grpc_status_code csi_node_get_volume_stats(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeGetVolumeStatsRequest *q = (const void *)req;
	Csi__V1__NodeGetVolumeStatsResponse r = CSI__V1__NODE_GET_VOLUME_STATS_RESPONSE__INIT;
	Csi__V1__VolumeUsage u[2] = { CSI__V1__VOLUME_USAGE__INIT, CSI__V1__VOLUME_USAGE__INIT };
	Csi__V1__VolumeUsage *us[2] = { &u[0], &u[1] };
	Csi__V1__VolumeCondition cond = CSI__V1__VOLUME_CONDITION__INIT;
	struct csi_stage s;
	struct stat st;
	grpc_status_code code;
	char msg[1024];

	code = path_args(c, q->volume_id, q->volume_path, &st);
	if (code != GRPC_STATUS_OK)
		return code;
	bool staged = csi_stage_load(q->volume_id, &s) == 0;
	if (!staged)
		return not_staged(c, q->volume_id);
	if (S_ISBLK(st.st_mode)) {
		int64_t sz = dev_size(q->volume_path);

		if (sz < 0)
			return csi_fail(c, GRPC_STATUS_INTERNAL, "size of %s: %s", q->volume_path,
					strerror((int)-sz));
		u[0].unit = CSI__V1__VOLUME_USAGE__UNIT__BYTES;
		u[0].total = sz;
		r.n_usage = 1;
	} else {
		struct statvfs sv;

		if (statvfs(q->volume_path, &sv) < 0)
			return csi_fail(c, GRPC_STATUS_INTERNAL, "statvfs %s: %s", q->volume_path,
					strerror(errno));
		u[0].unit = CSI__V1__VOLUME_USAGE__UNIT__BYTES;
		u[0].total = (int64_t)(sv.f_blocks * sv.f_frsize);
		u[0].available = (int64_t)(sv.f_bavail * sv.f_frsize);
		u[0].used = (int64_t)((sv.f_blocks - sv.f_bfree) * sv.f_frsize);
		u[1].unit = CSI__V1__VOLUME_USAGE__UNIT__INODES;
		u[1].total = (int64_t)sv.f_files;
		u[1].available = (int64_t)sv.f_favail;
		u[1].used = (int64_t)(sv.f_files - sv.f_ffree);
		r.n_usage = 2;
	}
	r.usage = us;
	cond.abnormal = !volume_healthy(s.volume, msg, sizeof msg);
	cond.message = msg;
	r.volume_condition = &cond;
	return csi_reply(c, &r.base);
}

/* ---- NodeExpandVolume ---- */

grpc_status_code csi_node_expand(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeExpandVolumeRequest *q = (const void *)req;
	Csi__V1__NodeExpandVolumeResponse resp = CSI__V1__NODE_EXPAND_VOLUME_RESPONSE__INIT;
	struct csi_stage s;
	struct stat st;
	grpc_status_code code;
	char out[512], err[4096];
	int64_t want = 0, sz;
	int r;

	code = path_args(c, q->volume_id, q->volume_path, &st);
	if (code != GRPC_STATUS_OK)
		return code;
	if (q->capacity_range)
		want = q->capacity_range->required_bytes;
	if ((code = csi_volume_begin(c, q->volume_id)) != GRPC_STATUS_OK)
		return code;
	if (csi_stage_load(q->volume_id, &s) < 0) {
		code = not_staged(c, q->volume_id);
		goto out;
	}
	/* The attached writer grows the device by itself once the record has
	 * grown (a keeper round, 2 s). */
	uint64_t end = qbd_now_ns() + EXPAND_WAIT_S * 1000000000ull;
	while ((sz = dev_size(s.device)) >= 0 && sz < want && qbd_now_ns() < end)
		usleep(200000);
	if (sz < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "size of %s: %s", s.device,
				strerror((int)-sz));
		goto out;
	}
	if (sz < want) {
		code = csi_fail(c, GRPC_STATUS_UNAVAILABLE, "%s (volume %s) is %" PRId64 " bytes "
				"after %d s, want %" PRId64 ": has the volume been resized "
				"(ControllerExpandVolume)?", s.device, s.volume, sz, EXPAND_WAIT_S,
				want);
		goto out;
	}
	if (!s.block) {
		const char *path = s.staging;
		char tool[32];
		bool xfs = strcmp(s.fs_type, "xfs") == 0;

		snprintf(tool, sizeof tool, "%s", xfs ? "xfs_growfs" : "resize2fs");
		char *argv[] = { tool, xfs ? (char *)path : s.device, NULL };
		uint64_t t0 = qbd_now_ns();
		r = csi_run(argv, out, sizeof out, err, sizeof err);
		if (r != 0) {
			code = csi_fail(c, GRPC_STATUS_INTERNAL, "%s %s (volume %s) exited %d: %s",
					tool, argv[1], s.volume, r, csi_last_line(err));
			goto out;
		}
		qbd_info(CSI_COMP, "volume %s: %s grew %s to %" PRId64 " bytes in %.1f s", s.volume,
			 tool, s.fs_type, sz, (double)(qbd_now_ns() - t0) / 1e9);
	}
	resp.capacity_bytes = sz;
	code = csi_reply(c, &resp.base);
out:
	csi_volume_end(q->volume_id);
	return code;
}
