/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Node service, staging (docs/design.md, "The CSI driver",
 * Node): NodeStageVolume attaches the volume with `qbd attach` (taking
 * it over from a holder on another node, whose writer the new epoch
 * fences), makes a filesystem only on a device whose first
 * CSI_FS_PROBE_BYTES are all zeros (node-fs.c) and mounts it;
 * NodeUnstageVolume unmounts and detaches. Each keeps the staging record
 * (node.c) true.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"
#include "replicator/meta/meta.h"

/* The first CSI_FS_PROBE_BYTES of the device, judged. */
static int dev_probe(const char *device, char *type, size_t tlen, enum csi_fs_probe *res)
{
	uint8_t *buf = malloc(CSI_FS_PROBE_BYTES);
	size_t got = 0;
	int fd;

	if (!buf)
		return -ENOMEM;
	fd = open(device, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(buf);
		return -errno;
	}
	while (got < CSI_FS_PROBE_BYTES) {
		ssize_t n = pread(fd, buf + got, CSI_FS_PROBE_BYTES - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = -errno;

			close(fd);
			free(buf);
			return e;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	*res = csi_fs_probe(buf, got, type, tlen);
	free(buf);
	return 0;
}

/* publish_context["volume"], else the volume id: the qbd volume's name. */
static const char *volume_name(const char *volume_id, size_t n,
			       Csi__V1__NodeStageVolumeRequest__PublishContextEntry **pc)
{
	for (size_t i = 0; i < n; i++)
		if (pc[i]->key && strcmp(pc[i]->key, "volume") == 0 && pc[i]->value &&
		    *pc[i]->value)
			return pc[i]->value;
	return volume_id;
}

/* ---- NodeStageVolume ---- */

/* qbd attach NAME --zone Z [--force]: the device into dev. 0, -EBUSY
 * (attached on another node: holder names it), or another -errno with
 * the CLI's message in why. */
static int attach(const char *name, bool force, char *dev, size_t dlen, char *holder,
		  size_t hlen, char *why, size_t wlen)
{
	char out[256], err[8192];
	char *argv[] = { csi_qbd_path, "--etcd", (char *)csi_node_opts->etcd, "attach",
			 (char *)name, "--zone", (char *)csi_node_opts->zone,
			 force ? "--force" : NULL, NULL };
	int rc = csi_run(argv, out, sizeof out, err, sizeof err);

	holder[0] = 0;
	if (rc == 0) {
		char *nl = strchr(out, '\n');

		if (nl)
			*nl = 0;
		if (strncmp(out, "/dev/nbd", 8) != 0 || strlen(out) >= dlen) {
			snprintf(why, wlen, "qbd attach printed '%s', not a device", out);
			return -EPROTO;
		}
		memcpy(dev, out, strlen(out) + 1);
		return 0;
	}
	if (rc < 0) {
		snprintf(why, wlen, "cannot run %.200s: %s", csi_qbd_path, strerror(-rc));
		return rc;
	}
	/* The daemon's log, which qbd attach prints, names the holder. */
	const char *h = strstr(err, "is attached on host ");
	if (h) {
		h += strlen("is attached on host ");
		size_t n = strcspn(h, ";\n");
		snprintf(holder, hlen, "%.*s", (int)(n < hlen ? n : hlen - 1), h);
	}
	if (strstr(err, "attached elsewhere") || h) {
		snprintf(why, wlen, "%s", csi_last_line(err));
		return -EBUSY;
	}
	snprintf(why, wlen, "qbd attach %s exited %d: %s", name, rc, csi_last_line(err));
	return -EIO;
}

static grpc_status_code stage_mount(struct csi_call *c, const struct csi_stage *s,
				    const Csi__V1__VolumeCapability *vc)
{
	struct csi_mountinfo mi;
	char type[64], data[1024], why[256], out[512], err[4096];
	enum csi_fs_probe pr = CSI_FS_DATA;
	unsigned long ms;
	int r = csi_mount_at(s->staging, &mi);

	if (r > 0) {
		if (csi_same_dev(&mi, s->device))
			return GRPC_STATUS_OK;   /* staged already */
		return csi_fail(c, GRPC_STATUS_ALREADY_EXISTS,
				"%s is a mount of %s (%u:%u), not of %s: unstage what is there first",
				s->staging, mi.source, mi.major, mi.minor, s->device);
	}
	if (csi_mount_flags(vc->mount ? vc->mount->mount_flags : NULL,
			    vc->mount ? vc->mount->n_mount_flags : 0, false, &ms, data, sizeof data,
			    why, sizeof why) < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
	r = dev_probe(s->device, type, sizeof type, &pr);
	if (r < 0)
		return csi_fail(c, GRPC_STATUS_INTERNAL, "reading %s (volume %s): %s", s->device,
				s->volume, strerror(-r));
	if (pr == CSI_FS_DATA)
		return csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION,
				"volume %s (%s) holds %s, not a filesystem: not formatting it",
				s->volume, s->device, type);
	if (pr == CSI_FS_FOUND && strcmp(type, s->fs_type) != 0)
		return csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION,
				"volume %s (%s) holds %s, not the %s asked for: not formatting it",
				s->volume, s->device, type, s->fs_type);
	if (pr == CSI_FS_EMPTY) {
		char mkfs[48];
		uint64_t t0 = qbd_now_ns();

		snprintf(mkfs, sizeof mkfs, "mkfs.%s", s->fs_type);
		char *argv[] = { mkfs, "-q", (char *)s->device, NULL };
		r = csi_run(argv, out, sizeof out, err, sizeof err);
		if (r != 0)
			return csi_fail(c, GRPC_STATUS_INTERNAL, "%s %s (volume %s) %s %d: %s", mkfs,
					s->device, s->volume, r < 0 ? "could not run:" : "exited",
					r, csi_last_line(err));
		qbd_info(CSI_COMP, "volume %s: %s was empty: made %s in %.1f s", s->volume,
			 s->device, s->fs_type, (double)(qbd_now_ns() - t0) / 1e9);
	}
	r = csi_mkdir_p(s->staging, 0750);
	if (r < 0)
		return csi_fail(c, GRPC_STATUS_INTERNAL, "creating %s: %s", s->staging, strerror(-r));
	uint64_t t0 = qbd_now_ns();
	if (mount(s->device, s->staging, s->fs_type, ms, data[0] ? data : NULL) < 0)
		return csi_fail(c, GRPC_STATUS_INTERNAL, "mount -t %s %s %s%s%s: %s", s->fs_type,
				s->device, s->staging, data[0] ? " -o " : "", data,
				strerror(errno));
	qbd_info(CSI_COMP, "volume %s: %s (%s) mounted on %s in %.2f s", s->volume, s->device,
		 s->fs_type, s->staging, (double)(qbd_now_ns() - t0) / 1e9);
	return GRPC_STATUS_OK;
}

/* Does the controller's record (/qbd/csi/publish/<name>) name this node?
 * Then the CO moved the volume here (ControllerPublishVolume logged the
 * takeover with both nodes' names): a writer elsewhere is on a node the
 * CO gave up, dead or fenced out of service, and the attach takes over
 * at once (--force: the new epoch fences the old writer at every chunk
 * server) instead of being refused first. With no record, or etcd not
 * answering, the attach asks first and takes over after a refusal. */
static bool published_here(const char *name)
{
	struct qbd_csi_publish pub;
	struct qbd_meta *m;
	int err = qbd_meta_open(csi_node_opts->etcd, &m);

	if (err == 0) {
		err = qbd_meta_csi_publish_get(m, name, &pub);
		qbd_meta_close(m);
	}
	if (err) {
		if (err != -ENOENT)
			qbd_warn(CSI_COMP, "volume %s: cannot read its publish record (%s): "
				 "attaching without a takeover first", name, strerror(-err));
		return false;
	}
	if (strcmp(pub.node, csi_node_opts->node_id) != 0)
		return false;
	qbd_info(CSI_COMP, "volume %s is published to node %s (zone %s): attaching with "
		 "--force, which fences any writer elsewhere", name, csi_node_opts->node_id,
		 csi_node_opts->zone);
	return true;
}

grpc_status_code csi_node_stage(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeStageVolumeRequest *q = (const void *)req;
	struct csi_stage s = { 0 };
	char dev[64], holder[256], why[1024];
	grpc_status_code code;
	uint64_t t0 = qbd_now_ns();
	int r;

	code = csi_node_required(c, "volume_id", q->volume_id, "staging_target_path",
				 q->staging_target_path, NULL);
	if (code != GRPC_STATUS_OK)
		return code;
	if ((code = csi_node_check_cap(c, q->volume_capability)) != GRPC_STATUS_OK)
		return code;
	const char *name = volume_name(q->volume_id, q->n_publish_context,
				       (Csi__V1__NodeStageVolumeRequest__PublishContextEntry **)
				       q->publish_context);
	if (strlen(q->volume_id) >= sizeof s.volume_id || strlen(name) >= sizeof s.volume ||
	    strlen(q->staging_target_path) >= sizeof s.staging)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_id, its name or "
				"staging_target_path too long");
	if ((code = csi_volume_begin(c, q->volume_id)) != GRPC_STATUS_OK)
		return code;
	bool here = published_here(name);

	r = attach(name, here, dev, sizeof dev, holder, sizeof holder, why, sizeof why);
	if (r == -EBUSY && !here) {
		/* The CO stages here only once the volume is published to this
		 * node: the other node is gone or fenced. The new writer's epoch
		 * fences the old one at every chunk server. */
		qbd_warn(CSI_COMP, "volume %s is attached on host %s; taking it over for node %s "
			 "(zone %s): the new epoch fences the old writer", name,
			 holder[0] ? holder : "(unknown)", csi_node_opts->node_id,
			 csi_node_opts->zone);
		r = attach(name, true, dev, sizeof dev, holder, sizeof holder, why, sizeof why);
	}
	if (r < 0) {
		code = csi_fail(c, r == -EBUSY ? GRPC_STATUS_FAILED_PRECONDITION :
				GRPC_STATUS_INTERNAL, "attaching volume %s on node %s: %s", name,
				csi_node_opts->node_id, why);
		goto out;
	}
	uint64_t t_att = qbd_now_ns();
	qbd_info(CSI_COMP, "volume %s attached as %s in %.2f s", name, dev,
		 (double)(t_att - t0) / 1e9);
	snprintf(s.volume_id, sizeof s.volume_id, "%s", q->volume_id);
	snprintf(s.volume, sizeof s.volume, "%s", name);
	snprintf(s.device, sizeof s.device, "%s", dev);
	snprintf(s.staging, sizeof s.staging, "%s", q->staging_target_path);
	s.block = csi_cap_block(q->volume_capability);
	snprintf(s.fs_type, sizeof s.fs_type, "%s",
		 s.block ? "" : csi_cap_fs(q->volume_capability));
	if (csi_stage_save(&s) < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "cannot record the staging of volume %s "
				"in %s", name, csi_node_opts->state_dir);
		goto out;
	}
	code = s.block ? GRPC_STATUS_OK : stage_mount(c, &s, q->volume_capability);
	if (code == GRPC_STATUS_OK) {
		Csi__V1__NodeStageVolumeResponse resp = CSI__V1__NODE_STAGE_VOLUME_RESPONSE__INIT;

		qbd_info(CSI_COMP, "volume %s staged at %s in %.2f s (attach %.2f s)", name,
			 s.staging, (double)(qbd_now_ns() - t0) / 1e9, (double)(t_att - t0) / 1e9);
		code = csi_reply(c, &resp.base);
	}
out:
	csi_volume_end(q->volume_id);
	return code;
}

/* ---- NodeUnstageVolume ---- */

/* qbd detach NAME; 0 when detached or not attached here. */
static int detach(const char *name, char *why, size_t wlen)
{
	char out[256], err[4096];
	char *argv[] = { csi_qbd_path, "--etcd", (char *)csi_node_opts->etcd, "detach",
			 (char *)name, NULL };
	int rc = csi_run(argv, out, sizeof out, err, sizeof err);

	if (rc == 0 || strstr(err, "is not attached on this node"))
		return 0;
	snprintf(why, wlen, "qbd detach %s exited %d: %s", name, rc, csi_last_line(err));
	return -EIO;
}

grpc_status_code csi_node_unstage(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeUnstageVolumeRequest *q = (const void *)req;
	Csi__V1__NodeUnstageVolumeResponse resp = CSI__V1__NODE_UNSTAGE_VOLUME_RESPONSE__INIT;
	struct csi_stage s;
	char why[1024];
	grpc_status_code code;
	bool have;
	int r;

	code = csi_node_required(c, "volume_id", q->volume_id, "staging_target_path",
				 q->staging_target_path, NULL);
	if (code != GRPC_STATUS_OK)
		return code;
	if ((code = csi_volume_begin(c, q->volume_id)) != GRPC_STATUS_OK)
		return code;
	have = csi_stage_load(q->volume_id, &s) == 0;
	r = csi_unmount(q->staging_target_path, false);
	if (r < 0) {
		code = csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION, "unmounting %s (volume %s): %s",
				q->staging_target_path, q->volume_id, strerror(-r));
		goto out;
	}
	if (have && detach(s.volume, why, sizeof why) < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "volume %s: %s", s.volume, why);
		goto out;
	}
	if (have) {
		csi_stage_drop(q->volume_id);
		qbd_info(CSI_COMP, "volume %s unstaged from %s (%s detached)", s.volume,
			 q->staging_target_path, s.device);
	}
	code = csi_reply(c, &resp.base);
out:
	csi_volume_end(q->volume_id);
	return code;
}
