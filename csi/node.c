/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Node service (docs/design.md, "The CSI driver", Node). A volume
 * is attached by running the qbd CLI (`qbd attach`, next to qbd-csi or
 * on PATH), which starts the volume's qbd-nbd in its own session: the
 * writer outlives the plugin, so a restart of the plugin (a DaemonSet
 * update) never takes a mounted filesystem's device away. What a stage
 * did is kept as a small JSON record per volume in the state directory.
 * The mkfs rule: a filesystem is made only on a device whose first
 * CSI_FS_PROBE_BYTES are all zeros (node-fs.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"
#include "replicator/meta/meta.h"

/* How long a command may run: an attach waits out a dead writer's lease
 * (qbd attach itself gives up after 60 s), mkfs of a large volume. */
#define CMD_TIMEOUT_S 300
#define EXPAND_WAIT_S 60

static char qbd_path[PATH_MAX];
static const struct csi_opts *opts;

/* This node's record under /qbd/csi/nodes/ (its zone), without which
 * ControllerPublishVolume to it is NOT_FOUND. At start, and again at
 * each NodeGetInfo (kubelet's registration), so that an etcd away at
 * start is caught up with; a failure is a warning. */
static void node_register(const struct csi_opts *o)
{
	struct qbd_csi_node n = { .since = (uint64_t)time(NULL) };
	struct qbd_meta *m;
	int err;

	snprintf(n.node, sizeof n.node, "%s", o->node_id);
	snprintf(n.zone, sizeof n.zone, "%s", o->zone);
	err = qbd_meta_open(o->etcd, &m);
	if (err == 0) {
		err = qbd_meta_csi_node_put(m, &n);
		qbd_meta_close(m);
	}
	if (err)
		qbd_warn(CSI_COMP, "node %s: cannot register in etcd (%s): a publish to this "
			 "node is refused until it is", o->node_id, strerror(-err));
}

int csi_node_init(const struct csi_opts *o)
{
	char self[PATH_MAX - 8];
	ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);

	opts = o;
	snprintf(qbd_path, sizeof qbd_path, "qbd");
	if (l > 0) {
		self[l] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			snprintf(qbd_path, sizeof qbd_path, "%s/qbd", self);
			if (access(qbd_path, X_OK) != 0)
				snprintf(qbd_path, sizeof qbd_path, "qbd");
		}
	}
	if (mkdir(o->state_dir, 0700) < 0 && errno != EEXIST) {
		int err = -errno;

		qbd_err(CSI_COMP, "the state directory %s: %s", o->state_dir, strerror(errno));
		return err;
	}
	qbd_info(CSI_COMP, "node service: state in %s, attaching with %s", o->state_dir,
		 qbd_path);
	node_register(o);
	return 0;
}

/* ---- commands ---- */

/*
 * Run argv with stdin /dev/null, stdout into out and stderr into err
 * (both NUL-terminated, cut to their size). Its exit status, 128+signal,
 * or -errno if it could not run; killed after CMD_TIMEOUT_S.
 */
static int run(char *const argv[], char *out, size_t olen, char *err, size_t elen)
{
	int po[2], pe[2], status;
	size_t no = 0, ne = 0;
	pid_t pid;

	out[0] = err[0] = 0;
	if (pipe2(po, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(pe, O_CLOEXEC) < 0) {
		int e = -errno;

		close(po[0]);
		close(po[1]);
		return e;
	}
	pid = fork();
	if (pid == 0) {
		int dn = open("/dev/null", O_RDONLY);

		if (dn < 0 || dup2(dn, 0) < 0 || dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0)
			_exit(126);
		/* The plugin blocks these for sigwait; the child must not. */
		sigset_t all;
		sigemptyset(&all);
		pthread_sigmask(SIG_SETMASK, &all, NULL);
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		dprintf(2, "exec %s: %s", argv[0], strerror(errno));
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	if (pid < 0) {
		close(po[0]);
		close(pe[0]);
		return -EAGAIN;
	}
	uint64_t end = qbd_now_ns() + (uint64_t)CMD_TIMEOUT_S * 1000000000ull;
	struct pollfd pf[2] = { { .fd = po[0], .events = POLLIN }, { .fd = pe[0], .events = POLLIN } };
	int open_fds = 2;
	while (open_fds > 0) {
		uint64_t now = qbd_now_ns();
		char buf[4096];

		if (now >= end) {
			qbd_warn(CSI_COMP, "%s did not finish in %d s: killing it", argv[0],
				 CMD_TIMEOUT_S);
			kill(pid, SIGKILL);
			break;
		}
		int r = poll(pf, 2, (int)((end - now) / 1000000ull) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		for (int i = 0; i < 2; i++) {
			if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(pf[i].fd, buf, sizeof buf);
			if (n <= 0) {
				close(pf[i].fd);
				pf[i].fd = -1;
				open_fds--;
				continue;
			}
			char *dst = i ? err : out;
			size_t *used = i ? &ne : &no, cap = i ? elen : olen;
			size_t k = (size_t)n < cap - 1 - *used ? (size_t)n : cap - 1 - *used;
			memcpy(dst + *used, buf, k);
			*used += k;
			dst[*used] = 0;
		}
	}
	for (int i = 0; i < 2; i++)
		if (pf[i].fd >= 0)
			close(pf[i].fd);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The last line of a command's messages, for an operator's message. */
static const char *last_line(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = 0;
	char *nl = strrchr(s, '\n');
	return nl ? nl + 1 : s;
}

/* ---- the staging record ---- */

static int stage_load(const char *volume_id, struct csi_stage *s)
{
	char path[PATH_MAX], text[8192];
	FILE *f;
	size_t n;

	csi_state_file(path, sizeof path, opts->state_dir, volume_id);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = 0;
	if (csi_stage_from_json(text, s) < 0) {
		qbd_warn(CSI_COMP, "%s: not a staging record; ignored", path);
		return -EINVAL;
	}
	return 0;
}

static int stage_save(const struct csi_stage *s)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	char *text = csi_stage_to_json(s);
	FILE *f;
	int err = 0;

	if (!text)
		return -ENOMEM;
	csi_state_file(path, sizeof path, opts->state_dir, s->volume_id);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f || fprintf(f, "%s\n", text) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)
		err = -errno;
	if (f && fclose(f) != 0 && !err)
		err = -errno;
	if (!err && rename(tmp, path) < 0)
		err = -errno;
	free(text);
	if (err) {
		unlink(tmp);
		qbd_err(CSI_COMP, "writing %s: %s", path, strerror(-err));
	}
	return err;
}

static void stage_drop(const char *volume_id)
{
	char path[PATH_MAX];

	csi_state_file(path, sizeof path, opts->state_dir, volume_id);
	if (unlink(path) < 0 && errno != ENOENT)
		qbd_warn(CSI_COMP, "removing %s: %s", path, strerror(errno));
}

/* ---- mounts ---- */

/* The mount at exactly path (the last one stacked there): 1, 0 none, -errno. */
static int mount_at(const char *path, struct csi_mountinfo *out)
{
	char line[8192];
	struct csi_mountinfo mi;
	int found = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return -errno;
	while (fgets(line, sizeof line, f)) {
		if (csi_mountinfo_parse(line, &mi) == 0 && strcmp(mi.mountpoint, path) == 0) {
			*out = mi;
			found = 1;
		}
	}
	fclose(f);
	return found;
}

static bool same_dev(const struct csi_mountinfo *mi, const char *device)
{
	struct stat st;

	return stat(device, &st) == 0 && S_ISBLK(st.st_mode) &&
	       major(st.st_rdev) == mi->major && minor(st.st_rdev) == mi->minor;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char p[PATH_MAX];

	if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p)
		return -ENAMETOOLONG;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

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

/* ---- requests ---- */

static bool cap_block(const Csi__V1__VolumeCapability *vc)
{
	return vc && vc->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK;
}

static const char *cap_fs(const Csi__V1__VolumeCapability *vc)
{
	if (vc && vc->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT &&
	    vc->mount && vc->mount->fs_type && *vc->mount->fs_type)
		return vc->mount->fs_type;
	return "ext4";
}

/* A capability the node serves: block or mount, a single-node mode. */
static grpc_status_code check_cap(struct csi_call *c, const Csi__V1__VolumeCapability *vc)
{
	if (!vc)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_capability is required");
	if (vc->access_type_case != CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK &&
	    vc->access_type_case != CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"volume_capability has no access type (block or mount)");
	if (vc->access_mode) {
		switch (vc->access_mode->mode) {
		case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_WRITER:
		case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_READER_ONLY:
		case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_SINGLE_WRITER:
		case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_MULTI_WRITER:
			break;
		default:
			return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
					"access mode %d: a qbd volume has one writer on one node "
					"(single-node modes only)", (int)vc->access_mode->mode);
		}
	}
	const char *fs = cap_fs(vc);
	if (!cap_block(vc) && strcmp(fs, "ext4") != 0 && strcmp(fs, "ext3") != 0 &&
	    strcmp(fs, "ext2") != 0 && strcmp(fs, "xfs") != 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"fs_type '%s': the driver makes and grows ext4, ext3, ext2 or xfs", fs);
	if (!cap_block(vc) && vc->mount) {
		char data[1024], why[256];
		unsigned long ms;

		if (csi_mount_flags(vc->mount->mount_flags, vc->mount->n_mount_flags, false, &ms,
				    data, sizeof data, why, sizeof why) < 0)
			return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
	}
	return GRPC_STATUS_OK;
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

/* ---- NodeGetCapabilities, NodeGetInfo ---- */

static grpc_status_code get_capabilities(struct csi_call *c, const ProtobufCMessage *req)
{
	static const Csi__V1__NodeServiceCapability__RPC__Type types[] = {
		CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__STAGE_UNSTAGE_VOLUME,
		CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__GET_VOLUME_STATS,
		CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__EXPAND_VOLUME,
		CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__VOLUME_CONDITION,
	};
	enum { N = sizeof types / sizeof types[0] };
	Csi__V1__NodeGetCapabilitiesResponse r = CSI__V1__NODE_GET_CAPABILITIES_RESPONSE__INIT;
	Csi__V1__NodeServiceCapability cap[N], *caps[N];
	Csi__V1__NodeServiceCapability__RPC rpc[N];

	(void)req;
	for (int i = 0; i < N; i++) {
		csi__v1__node_service_capability__init(&cap[i]);
		csi__v1__node_service_capability__rpc__init(&rpc[i]);
		rpc[i].type = types[i];
		cap[i].type_case = CSI__V1__NODE_SERVICE_CAPABILITY__TYPE_RPC;
		cap[i].rpc = &rpc[i];
		caps[i] = &cap[i];
	}
	r.n_capabilities = N;
	r.capabilities = caps;
	return csi_reply(c, &r.base);
}

/* The NBD devices this kernel has (nbds_max), 0 without the module. */
static int nbd_devices(void)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	int n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, "nbd", 3) == 0 && e->d_name[3] >= '0' && e->d_name[3] <= '9')
			n++;
	closedir(d);
	return n;
}

static grpc_status_code get_info(struct csi_call *c, const ProtobufCMessage *req)
{
	const struct csi_opts *o = csi_call_opts(c);
	Csi__V1__NodeGetInfoResponse r = CSI__V1__NODE_GET_INFO_RESPONSE__INIT;
	Csi__V1__Topology topo = CSI__V1__TOPOLOGY__INIT;
	Csi__V1__Topology__SegmentsEntry seg = CSI__V1__TOPOLOGY__SEGMENTS_ENTRY__INIT;
	Csi__V1__Topology__SegmentsEntry *segs[1] = { &seg };

	(void)req;
	node_register(o);
	seg.key = (char *)CSI_TOPOLOGY_ZONE;
	seg.value = (char *)o->zone;
	topo.n_segments = 1;
	topo.segments = segs;
	r.node_id = (char *)o->node_id;
	r.max_volumes_per_node = nbd_devices();
	r.accessible_topology = &topo;
	return csi_reply(c, &r.base);
}

/* ---- NodeStageVolume ---- */

/* qbd attach NAME --zone Z [--force]: the device into dev. 0, -EBUSY
 * (attached on another node: holder names it), or another -errno with
 * the CLI's message in why. */
static int attach(const char *name, bool force, char *dev, size_t dlen, char *holder,
		  size_t hlen, char *why, size_t wlen)
{
	char out[256], err[8192];
	char *argv[] = { qbd_path, "--etcd", (char *)opts->etcd, "attach", (char *)name,
			 "--zone", (char *)opts->zone, force ? "--force" : NULL, NULL };
	int rc = run(argv, out, sizeof out, err, sizeof err);

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
		snprintf(why, wlen, "cannot run %.200s: %s", qbd_path, strerror(-rc));
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
		snprintf(why, wlen, "%s", last_line(err));
		return -EBUSY;
	}
	snprintf(why, wlen, "qbd attach %s exited %d: %s", name, rc, last_line(err));
	return -EIO;
}

static grpc_status_code stage_mount(struct csi_call *c, const struct csi_stage *s,
				    const Csi__V1__VolumeCapability *vc)
{
	struct csi_mountinfo mi;
	char type[64], data[1024], why[256], out[512], err[4096];
	enum csi_fs_probe pr = CSI_FS_DATA;
	unsigned long ms;
	int r = mount_at(s->staging, &mi);

	if (r > 0) {
		if (same_dev(&mi, s->device))
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
		r = run(argv, out, sizeof out, err, sizeof err);
		if (r != 0)
			return csi_fail(c, GRPC_STATUS_INTERNAL, "%s %s (volume %s) %s %d: %s", mkfs,
					s->device, s->volume, r < 0 ? "could not run:" : "exited",
					r, last_line(err));
		qbd_info(CSI_COMP, "volume %s: %s was empty: made %s in %.1f s", s->volume,
			 s->device, s->fs_type, (double)(qbd_now_ns() - t0) / 1e9);
	}
	r = mkdir_p(s->staging, 0750);
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

static grpc_status_code stage(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeStageVolumeRequest *q = (const void *)req;
	struct csi_stage s = { 0 };
	char dev[64], holder[256], why[1024];
	grpc_status_code code;
	uint64_t t0 = qbd_now_ns();
	int r;

	if (!q->volume_id || !*q->volume_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_id is required");
	if (!q->staging_target_path || !*q->staging_target_path)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "staging_target_path is required");
	if ((code = check_cap(c, q->volume_capability)) != GRPC_STATUS_OK)
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
	r = attach(name, false, dev, sizeof dev, holder, sizeof holder, why, sizeof why);
	if (r == -EBUSY) {
		/* The CO stages here only once the volume is published to this
		 * node: the other node is gone or fenced. The new writer's epoch
		 * fences the old one at every chunk server. */
		qbd_warn(CSI_COMP, "volume %s is attached on host %s; taking it over for node %s "
			 "(zone %s): the new epoch fences the old writer", name,
			 holder[0] ? holder : "(unknown)", opts->node_id, opts->zone);
		r = attach(name, true, dev, sizeof dev, holder, sizeof holder, why, sizeof why);
	}
	if (r < 0) {
		code = csi_fail(c, r == -EBUSY ? GRPC_STATUS_FAILED_PRECONDITION :
				GRPC_STATUS_INTERNAL, "attaching volume %s on node %s: %s", name,
				opts->node_id, why);
		goto out;
	}
	uint64_t t_att = qbd_now_ns();
	qbd_info(CSI_COMP, "volume %s attached as %s in %.2f s", name, dev,
		 (double)(t_att - t0) / 1e9);
	snprintf(s.volume_id, sizeof s.volume_id, "%s", q->volume_id);
	snprintf(s.volume, sizeof s.volume, "%s", name);
	snprintf(s.device, sizeof s.device, "%s", dev);
	snprintf(s.staging, sizeof s.staging, "%s", q->staging_target_path);
	s.block = cap_block(q->volume_capability);
	snprintf(s.fs_type, sizeof s.fs_type, "%s", s.block ? "" : cap_fs(q->volume_capability));
	if (stage_save(&s) < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "cannot record the staging of volume %s "
				"in %s", name, opts->state_dir);
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
	char *argv[] = { qbd_path, "--etcd", (char *)opts->etcd, "detach", (char *)name, NULL };
	int rc = run(argv, out, sizeof out, err, sizeof err);

	if (rc == 0 || strstr(err, "is not attached on this node"))
		return 0;
	snprintf(why, wlen, "qbd detach %s exited %d: %s", name, rc, last_line(err));
	return -EIO;
}

static grpc_status_code unstage(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeUnstageVolumeRequest *q = (const void *)req;
	Csi__V1__NodeUnstageVolumeResponse resp = CSI__V1__NODE_UNSTAGE_VOLUME_RESPONSE__INIT;
	struct csi_stage s;
	struct csi_mountinfo mi;
	char why[1024];
	grpc_status_code code;
	bool have;

	if (!q->volume_id || !*q->volume_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_id is required");
	if (!q->staging_target_path || !*q->staging_target_path)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "staging_target_path is required");
	if ((code = csi_volume_begin(c, q->volume_id)) != GRPC_STATUS_OK)
		return code;
	have = stage_load(q->volume_id, &s) == 0;
	if (mount_at(q->staging_target_path, &mi) > 0 &&
	    umount2(q->staging_target_path, 0) < 0) {
		code = csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION, "unmounting %s (volume %s): %s",
				q->staging_target_path, q->volume_id, strerror(errno));
		goto out;
	}
	if (have && detach(s.volume, why, sizeof why) < 0) {
		code = csi_fail(c, GRPC_STATUS_INTERNAL, "volume %s: %s", s.volume, why);
		goto out;
	}
	if (have) {
		stage_drop(q->volume_id);
		qbd_info(CSI_COMP, "volume %s unstaged from %s (%s detached)", s.volume,
			 q->staging_target_path, s.device);
	}
	code = csi_reply(c, &resp.base);
out:
	csi_volume_end(q->volume_id);
	return code;
}

/* ---- NodePublishVolume, NodeUnpublishVolume ---- */

static grpc_status_code publish(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodePublishVolumeRequest *q = (const void *)req;
	Csi__V1__NodePublishVolumeResponse resp = CSI__V1__NODE_PUBLISH_VOLUME_RESPONSE__INIT;
	struct csi_stage s;
	struct csi_mountinfo mi;
	grpc_status_code code;
	const char *src;
	int r;

	if (!q->volume_id || !*q->volume_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_id is required");
	if (!q->target_path || !*q->target_path)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "target_path is required");
	if (!q->staging_target_path || !*q->staging_target_path)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "staging_target_path is required "
				"(the driver stages volumes)");
	if ((code = check_cap(c, q->volume_capability)) != GRPC_STATUS_OK)
		return code;
	if ((code = csi_volume_begin(c, q->volume_id)) != GRPC_STATUS_OK)
		return code;
	if (stage_load(q->volume_id, &s) < 0) {
		code = csi_fail(c, GRPC_STATUS_FAILED_PRECONDITION, "volume %s is not staged on "
				"node %s (NodeStageVolume first)", q->volume_id, opts->node_id);
		goto out;
	}
	if (s.block != cap_block(q->volume_capability)) {
		code = csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume %s was staged for %s "
				"access, published for %s", q->volume_id, s.block ? "block" : "mount",
				s.block ? "mount" : "block");
		goto out;
	}
	src = s.block ? s.device : s.staging;
	if (mount_at(q->target_path, &mi) > 0) {
		if (same_dev(&mi, s.device) && mi.readonly == (bool)q->readonly) {
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
		r = mkdir_p(q->target_path, 0750);
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

static grpc_status_code unpublish(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeUnpublishVolumeRequest *q = (const void *)req;
	Csi__V1__NodeUnpublishVolumeResponse resp = CSI__V1__NODE_UNPUBLISH_VOLUME_RESPONSE__INIT;
	struct csi_mountinfo mi;
	struct stat st;
	grpc_status_code code;

	if (!q->volume_id || !*q->volume_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_id is required");
	if (!q->target_path || !*q->target_path)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "target_path is required");
	if ((code = csi_volume_begin(c, q->volume_id)) != GRPC_STATUS_OK)
		return code;
	while (mount_at(q->target_path, &mi) > 0) {
		if (umount2(q->target_path, 0) < 0) {
			code = csi_fail(c, GRPC_STATUS_INTERNAL, "unmounting %s: %s", q->target_path,
					strerror(errno));
			goto out;
		}
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

/* ---- NodeGetVolumeStats ---- */

/* The volume's health as qbd volume status judges it: false with msg
 * when degraded or failed. */
static bool volume_healthy(const char *name, char *msg, size_t mlen)
{
	static char out[65536];   /* one caller at a time: under lock */
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	char err[2048];
	char *argv[] = { qbd_path, "--etcd", (char *)opts->etcd, "volume", "status", (char *)name,
			 "--json", NULL };
	bool ok;

	pthread_mutex_lock(&lock);
	int rc = run(argv, out, sizeof out, err, sizeof err);
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
			 "%d: %s", name, rc, last_line(err));
		ok = rc != 3 && rc != 4;   /* unknown, not abnormal */
	}
	json_object_put(o);
	pthread_mutex_unlock(&lock);
	return ok;
}

static grpc_status_code get_volume_stats(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeGetVolumeStatsRequest *q = (const void *)req;
	Csi__V1__NodeGetVolumeStatsResponse r = CSI__V1__NODE_GET_VOLUME_STATS_RESPONSE__INIT;
	Csi__V1__VolumeUsage u[2] = { CSI__V1__VOLUME_USAGE__INIT, CSI__V1__VOLUME_USAGE__INIT };
	Csi__V1__VolumeUsage *us[2] = { &u[0], &u[1] };
	Csi__V1__VolumeCondition cond = CSI__V1__VOLUME_CONDITION__INIT;
	struct csi_stage s;
	struct stat st;
	char msg[1024];

	if (!q->volume_id || !*q->volume_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_id is required");
	if (!q->volume_path || !*q->volume_path)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_path is required");
	if (stat(q->volume_path, &st) < 0)
		return csi_fail(c, GRPC_STATUS_NOT_FOUND, "volume_path %s: %s", q->volume_path,
				strerror(errno));
	bool staged = stage_load(q->volume_id, &s) == 0;
	if (!staged)
		return csi_fail(c, GRPC_STATUS_NOT_FOUND, "volume %s is not staged on node %s",
				q->volume_id, opts->node_id);
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

static grpc_status_code expand(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__NodeExpandVolumeRequest *q = (const void *)req;
	Csi__V1__NodeExpandVolumeResponse resp = CSI__V1__NODE_EXPAND_VOLUME_RESPONSE__INIT;
	struct csi_stage s;
	struct stat st;
	grpc_status_code code;
	char out[512], err[4096];
	int64_t want = 0, sz;
	int r;

	if (!q->volume_id || !*q->volume_id)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_id is required");
	if (!q->volume_path || !*q->volume_path)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "volume_path is required");
	if (stat(q->volume_path, &st) < 0)
		return csi_fail(c, GRPC_STATUS_NOT_FOUND, "volume_path %s: %s", q->volume_path,
				strerror(errno));
	if (q->capacity_range)
		want = q->capacity_range->required_bytes;
	if ((code = csi_volume_begin(c, q->volume_id)) != GRPC_STATUS_OK)
		return code;
	if (stage_load(q->volume_id, &s) < 0) {
		code = csi_fail(c, GRPC_STATUS_NOT_FOUND, "volume %s is not staged on node %s",
				q->volume_id, opts->node_id);
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
		r = run(argv, out, sizeof out, err, sizeof err);
		if (r != 0) {
			code = csi_fail(c, GRPC_STATUS_INTERNAL, "%s %s (volume %s) exited %d: %s",
					tool, argv[1], s.volume, r, last_line(err));
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

const struct csi_method csi_node_methods[] = {
	{ "/csi.v1.Node/NodeGetCapabilities", &csi__v1__node_get_capabilities_request__descriptor,
	  &csi__v1__node_get_capabilities_response__descriptor, get_capabilities },
	{ "/csi.v1.Node/NodeGetInfo", &csi__v1__node_get_info_request__descriptor,
	  &csi__v1__node_get_info_response__descriptor, get_info },
	{ "/csi.v1.Node/NodeStageVolume", &csi__v1__node_stage_volume_request__descriptor,
	  &csi__v1__node_stage_volume_response__descriptor, stage },
	{ "/csi.v1.Node/NodeUnstageVolume", &csi__v1__node_unstage_volume_request__descriptor,
	  &csi__v1__node_unstage_volume_response__descriptor, unstage },
	{ "/csi.v1.Node/NodePublishVolume", &csi__v1__node_publish_volume_request__descriptor,
	  &csi__v1__node_publish_volume_response__descriptor, publish },
	{ "/csi.v1.Node/NodeUnpublishVolume", &csi__v1__node_unpublish_volume_request__descriptor,
	  &csi__v1__node_unpublish_volume_response__descriptor, unpublish },
	{ "/csi.v1.Node/NodeGetVolumeStats", &csi__v1__node_get_volume_stats_request__descriptor,
	  &csi__v1__node_get_volume_stats_response__descriptor, get_volume_stats },
	{ "/csi.v1.Node/NodeExpandVolume", &csi__v1__node_expand_volume_request__descriptor,
	  &csi__v1__node_expand_volume_response__descriptor, expand },
	{ NULL, NULL, NULL, NULL },
};
