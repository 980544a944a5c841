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
 *
 * This file: the method table, NodeGetCapabilities, NodeGetInfo, and what
 * the handlers share (commands, the staging record, mounts, the checks of
 * a capability). The handlers are in node-stage.c (stage, unstage),
 * node-publish.c (publish, unpublish) and node-stats.c (stats, expand).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
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

char csi_qbd_path[PATH_MAX];
const struct csi_opts *csi_node_opts;

/* This node's record under /qbd/csi/nodes/ (its zone), without which
 * ControllerPublishVolume to it is NOT_FOUND. Written at start; if that
 * fails, a thread tries again every REGISTER_RETRY_S until it is written
 * (kubelet's NodeGetInfo, which writes it too, comes once, maybe while
 * etcd is still away). */
#define REGISTER_RETRY_S 2

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_cond = PTHREAD_COND_INITIALIZER;
static bool reg_done, reg_failed, reg_stop, reg_thread_on;
static pthread_t reg_thread;

/* Write the record: 0 or -errno; a failure is logged at level (a warning
 * at start and at NodeGetInfo, debug at each retry). */
static int node_register(const struct csi_opts *o, enum qbd_log_level level)
{
	struct qbd_csi_node n = { .since = (uint64_t)time(NULL) };
	struct qbd_meta *m;
	bool was;
	int err;

	snprintf(n.node, sizeof n.node, "%s", o->node_id);
	snprintf(n.zone, sizeof n.zone, "%s", o->zone);
	err = qbd_meta_open(o->etcd, &m);
	if (err == 0) {
		err = qbd_meta_csi_node_put(m, &n);
		qbd_meta_close(m);
	}
	if (err) {
		QBD_LOG(level, CSI_COMP, "node %s: cannot register in etcd (%s): a publish to "
			"this node is refused until it is", o->node_id, strerror(-err));
		pthread_mutex_lock(&reg_lock);
		reg_failed = true;
		pthread_mutex_unlock(&reg_lock);
		return err;
	}
	pthread_mutex_lock(&reg_lock);
	was = reg_done || !reg_failed;   /* said only after a failure */
	reg_done = true;
	pthread_cond_broadcast(&reg_cond);
	pthread_mutex_unlock(&reg_lock);
	if (!was)
		qbd_info(CSI_COMP, "node %s: registered in etcd (zone %s)", o->node_id, o->zone);
	return 0;
}

static void *register_retry(void *arg)
{
	const struct csi_opts *o = arg;
	struct timespec t;

	pthread_mutex_lock(&reg_lock);
	while (!reg_done && !reg_stop) {
		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_sec += REGISTER_RETRY_S;
		pthread_cond_timedwait(&reg_cond, &reg_lock, &t);
		if (reg_done || reg_stop)
			break;
		pthread_mutex_unlock(&reg_lock);
		node_register(o, QBD_LOG_DEBUG);
		pthread_mutex_lock(&reg_lock);
	}
	pthread_mutex_unlock(&reg_lock);
	return NULL;
}

void csi_node_fini(void)
{
	pthread_mutex_lock(&reg_lock);
	reg_stop = true;
	pthread_cond_broadcast(&reg_cond);
	pthread_mutex_unlock(&reg_lock);
	if (reg_thread_on)
		pthread_join(reg_thread, NULL);
	reg_thread_on = false;
}

int csi_node_init(const struct csi_opts *o)
{
	char self[PATH_MAX - 8];
	ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);

	csi_node_opts = o;
	snprintf(csi_qbd_path, sizeof csi_qbd_path, "qbd");
	if (l > 0) {
		self[l] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			snprintf(csi_qbd_path, sizeof csi_qbd_path, "%s/qbd", self);
			if (access(csi_qbd_path, X_OK) != 0)
				snprintf(csi_qbd_path, sizeof csi_qbd_path, "qbd");
		}
	}
	if (mkdir(o->state_dir, 0700) < 0 && errno != EEXIST) {
		int err = -errno;

		qbd_err(CSI_COMP, "the state directory %s: %s", o->state_dir, strerror(errno));
		return err;
	}
	qbd_info(CSI_COMP, "node service: state in %s, attaching with %s", o->state_dir,
		 csi_qbd_path);
	if (node_register(o, QBD_LOG_WARN) < 0) {
		int err = pthread_create(&reg_thread, NULL, register_retry, (void *)o);

		if (err) {
			qbd_err(CSI_COMP, "cannot start the thread that registers node %s: %s",
				o->node_id, strerror(err));
			return -err;
		}
		reg_thread_on = true;
		qbd_info(CSI_COMP, "node %s: registering again every %d s until etcd takes it",
			 o->node_id, REGISTER_RETRY_S);
	}
	return 0;
}

/* ---- commands ---- */

/*
 * Run argv with stdin /dev/null, stdout into out and stderr into err
 * (both NUL-terminated, cut to their size). Its exit status, 128+signal,
 * or -errno if it could not run; killed after CMD_TIMEOUT_S.
 */
int csi_run(char *const argv[], char *out, size_t olen, char *err, size_t elen)
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
const char *csi_last_line(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = 0;
	char *nl = strrchr(s, '\n');
	return nl ? nl + 1 : s;
}

/* ---- the staging record ---- */

int csi_stage_load(const char *volume_id, struct csi_stage *s)
{
	char path[PATH_MAX], text[8192];
	FILE *f;
	size_t n;

	csi_state_file(path, sizeof path, csi_node_opts->state_dir, volume_id);
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

int csi_stage_save(const struct csi_stage *s)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	char *text = csi_stage_to_json(s);
	FILE *f;
	int err = 0;

	if (!text)
		return -ENOMEM;
	csi_state_file(path, sizeof path, csi_node_opts->state_dir, s->volume_id);
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

void csi_stage_drop(const char *volume_id)
{
	char path[PATH_MAX];

	csi_state_file(path, sizeof path, csi_node_opts->state_dir, volume_id);
	if (unlink(path) < 0 && errno != ENOENT)
		qbd_warn(CSI_COMP, "removing %s: %s", path, strerror(errno));
}

/* ---- mounts ---- */

/* The mount at exactly path (the last one stacked there): 1, 0 none, -errno. */
int csi_mount_at(const char *path, struct csi_mountinfo *out)
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

int csi_unmount(const char *path, bool all)
{
	struct csi_mountinfo mi;

	while (csi_mount_at(path, &mi) > 0) {
		if (umount2(path, 0) < 0)
			return -errno;
		if (!all)
			break;
	}
	return 0;
}

bool csi_same_dev(const struct csi_mountinfo *mi, const char *device)
{
	struct stat st;

	return stat(device, &st) == 0 && S_ISBLK(st.st_mode) &&
	       major(st.st_rdev) == mi->major && minor(st.st_rdev) == mi->minor;
}

int csi_mkdir_p(const char *path, mode_t mode)
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

/* ---- requests ---- */

grpc_status_code csi_node_required(struct csi_call *c, ...)
{
	grpc_status_code code = GRPC_STATUS_OK;
	const char *name;
	va_list ap;

	va_start(ap, c);
	while (code == GRPC_STATUS_OK && (name = va_arg(ap, const char *))) {
		const char *value = va_arg(ap, const char *);

		if (!value || !*value)
			code = csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s is required", name);
	}
	va_end(ap);
	return code;
}

bool csi_cap_block(const Csi__V1__VolumeCapability *vc)
{
	return vc && vc->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK;
}

const char *csi_cap_fs(const Csi__V1__VolumeCapability *vc)
{
	if (vc && vc->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT &&
	    vc->mount && vc->mount->fs_type && *vc->mount->fs_type)
		return vc->mount->fs_type;
	return "ext4";
}

/* A capability the node serves: block or mount, a single-node mode. */
grpc_status_code csi_node_check_cap(struct csi_call *c, const Csi__V1__VolumeCapability *vc)
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
	const char *fs = csi_cap_fs(vc);
	if (!csi_cap_block(vc) && strcmp(fs, "ext4") != 0 && strcmp(fs, "ext3") != 0 &&
	    strcmp(fs, "ext2") != 0 && strcmp(fs, "xfs") != 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
				"fs_type '%s': the driver makes and grows ext4, ext3, ext2 or xfs", fs);
	if (!csi_cap_block(vc) && vc->mount) {
		char data[1024], why[256];
		unsigned long ms;

		if (csi_mount_flags(vc->mount->mount_flags, vc->mount->n_mount_flags, false, &ms,
				    data, sizeof data, why, sizeof why) < 0)
			return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
	}
	return GRPC_STATUS_OK;
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
	node_register(o, QBD_LOG_WARN);
	seg.key = (char *)CSI_TOPOLOGY_ZONE;
	seg.value = (char *)o->zone;
	topo.n_segments = 1;
	topo.segments = segs;
	r.node_id = (char *)o->node_id;
	r.max_volumes_per_node = nbd_devices();
	r.accessible_topology = &topo;
	return csi_reply(c, &r.base);
}

const struct csi_method csi_node_methods[] = {
	{ "/csi.v1.Node/NodeGetCapabilities", &csi__v1__node_get_capabilities_request__descriptor,
	  &csi__v1__node_get_capabilities_response__descriptor, get_capabilities },
	{ "/csi.v1.Node/NodeGetInfo", &csi__v1__node_get_info_request__descriptor,
	  &csi__v1__node_get_info_response__descriptor, get_info },
	{ "/csi.v1.Node/NodeStageVolume", &csi__v1__node_stage_volume_request__descriptor,
	  &csi__v1__node_stage_volume_response__descriptor, csi_node_stage },
	{ "/csi.v1.Node/NodeUnstageVolume", &csi__v1__node_unstage_volume_request__descriptor,
	  &csi__v1__node_unstage_volume_response__descriptor, csi_node_unstage },
	{ "/csi.v1.Node/NodePublishVolume", &csi__v1__node_publish_volume_request__descriptor,
	  &csi__v1__node_publish_volume_response__descriptor, csi_node_publish },
	{ "/csi.v1.Node/NodeUnpublishVolume", &csi__v1__node_unpublish_volume_request__descriptor,
	  &csi__v1__node_unpublish_volume_response__descriptor, csi_node_unpublish },
	{ "/csi.v1.Node/NodeGetVolumeStats", &csi__v1__node_get_volume_stats_request__descriptor,
	  &csi__v1__node_get_volume_stats_response__descriptor, csi_node_get_volume_stats },
	{ "/csi.v1.Node/NodeExpandVolume", &csi__v1__node_expand_volume_request__descriptor,
	  &csi__v1__node_expand_volume_response__descriptor, csi_node_expand },
	{ NULL, NULL, NULL, NULL },
};
