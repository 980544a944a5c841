/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-nbd behind a kernel device: socketpairs whose one end the NBD server
 * serves in the transmission phase and whose other end goes to the kernel
 * through netlink (kernel.c). The device carries the volume's backend
 * identifier, so a restarted daemon reattaches only to its own volume's
 * device, and a runtime record (<run dir>/nbdN.json) tells `qbd mapped`
 * and `qbd detach` which process serves it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/qbd.h"
#include "kernel.h"
#include "nbd-proto.h"
#include "nbd.h"

#define COMP "kernel"
#define MAX_CONNECTIONS 16

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

struct kserve {
	const struct nbd_kernel_serve_opts *o;
	struct qbd_volume *vol;
	struct nbd_kernel_cfg cfg;
	char backend[256];
	int kernel_fds[MAX_CONNECTIONS];
	unsigned n;
	bool connected;
	unsigned reconnects;
	int ready_fd;
};

/* Tell whoever started us how it went, once; then close the fd. */
static void ready_say(int *fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ready_say(int *fd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	if (*fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0)
		(void)qbd_write_full(*fd, buf, QBD_MIN((size_t)n, sizeof buf - 1));
	close(*fd);
	*fd = -1;
}

static int runtime_put(struct kserve *k)
{
	char path[512], tmp[520], id[17];
	json_object *o = json_object_new_object();
	const char *doc;
	int fd, r;

	if (mkdir(k->o->run_dir, 0755) < 0 && errno != EEXIST) {
		r = -errno;
		qbd_warn(COMP, "%s: %s", k->o->run_dir, strerror(-r));
		json_object_put(o);
		return r;
	}
	snprintf(path, sizeof path, "/dev/nbd%d", k->cfg.index);
	json_object_object_add(o, "device", json_object_new_string(path));
	json_object_object_add(o, "volume", json_object_new_string(k->o->volume));
	json_object_object_add(o, "volume_id",
			       json_object_new_string(qbd_id_str(qbd_volume_id(k->vol), id)));
	json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
	json_object_object_add(o, "connections", json_object_new_int((int)k->n));
	json_object_object_add(o, "since", json_object_new_int64((int64_t)time(NULL)));
	doc = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	nbd_kernel_runtime_path(path, sizeof path, k->o->run_dir, k->cfg.index);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	r = fd < 0 ? -errno : qbd_write_full(fd, doc, strlen(doc));
	if (fd >= 0)
		close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r)
		qbd_warn(COMP, "runtime record %s: %s", path, strerror(-r));
	json_object_put(o);
	return r;
}

static void runtime_del(struct kserve *k)
{
	char path[512];
	struct nbd_kernel_runtime rt;

	/* Only our own record: a successor may have written its own. */
	if (nbd_kernel_runtime_get(k->o->run_dir, k->cfg.index, &rt) == 0 &&
	    rt.pid == (int)getpid()) {
		nbd_kernel_runtime_path(path, sizeof path, k->o->run_dir, k->cfg.index);
		unlink(path);
	}
}

static void close_kernel_fds(struct kserve *k)
{
	for (unsigned i = 0; i < k->n; i++) {
		if (k->kernel_fds[i] >= 0)
			close(k->kernel_fds[i]);
		k->kernel_fds[i] = -1;
	}
}

/* Loop thread, before any request: give the kernel its ends. */
static int kserve_on_ready(struct nbd_server *s, void *arg)
{
	struct kserve *k = arg;
	int r, index = k->cfg.index;

	(void)s;
	k->cfg.size = qbd_size(k->vol);
	if (k->o->reattach)
		r = nbd_kernel_reconfigure(&k->cfg, k->kernel_fds, k->n);
	else
		r = nbd_kernel_connect(&k->cfg, k->kernel_fds, k->n, &index);
	close_kernel_fds(k);
	if (r) {
		ready_say(&k->ready_fd, "ERR cannot %s /dev/nbd%d: %s\n",
			  k->o->reattach ? "reattach" : "connect", k->cfg.index, strerror(-r));
		return r;
	}
	k->cfg.index = index;
	k->connected = true;
	(void)runtime_put(k);
	qbd_info(COMP, "volume %s %s /dev/nbd%d (%u connection%s, backend %s)",
		 k->o->volume, k->o->reattach ? "reattached to" : "attached as",
		 index, k->n, k->n == 1 ? "" : "s", k->backend);
	ready_say(&k->ready_fd, "OK /dev/nbd%d\n", index);
	return 0;
}

/* Loop thread: a kernel socket ended. After DISC the device is going away;
 * otherwise the kernel gave up on it (a request timed out): replace it. */
static void kserve_on_conn_end(struct nbd_server *s, int index, bool disc, void *arg)
{
	struct kserve *k = arg;
	int sv[2], r;

	if (disc || !k->connected || nbd_server_stopping(s))
		return;
	if (k->reconnects++ > 100) {
		qbd_err(COMP, "/dev/nbd%d: connection %d lost; too many reconnects, giving up",
			k->cfg.index, index);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		qbd_err(COMP, "socketpair: %s", strerror(errno));
		return;
	}
	r = nbd_server_adopt(s, sv[0]);
	if (r < 0) {
		close(sv[1]);
		return;
	}
	r = nbd_kernel_reconfigure(&k->cfg, &sv[1], 1);
	close(sv[1]);
	if (r == 0)
		qbd_warn(COMP, "/dev/nbd%d: the kernel dropped connection %d; replaced it",
			 k->cfg.index, index);
}

/* Loop thread: the volume grew while attached (qbd volume resize). The
 * device takes the new size at once by RECONFIGURE, mounted or not; a
 * filesystem on it is grown by its own tool (resize2fs, xfs_growfs). A
 * kernel that cannot (before Linux 5.3) keeps the old size until the
 * next attach; the volume is grown either way. */
static void kserve_on_resize(struct nbd_server *s, uint64_t size, void *arg)
{
	struct kserve *k = arg;

	(void)s;
	if (!k->connected)
		return;
	k->cfg.size = size;
	if (nbd_kernel_resize(&k->cfg) == 0)
		qbd_info(COMP, "/dev/nbd%d: now %" PRIu64 " bytes", k->cfg.index, size);
}

int nbd_kernel_serve(struct qbd_volume *vol, const struct nbd_kernel_serve_opts *o)
{
	struct kserve k = { .o = o, .vol = vol, .ready_fd = o->ready_fd };
	int server_fds[MAX_CONNECTIONS];
	struct nbd_serve_opts so = { 0 };
	int r;

	if (o->connections < 1 || o->connections > MAX_CONNECTIONS)
		return -EINVAL;
	nbd_kernel_backend(k.backend, sizeof k.backend, qbd_volume_id(vol), o->volume);
	k.cfg = (struct nbd_kernel_cfg){
		.index = o->index,
		.size = qbd_size(vol),
		.block_size = 4096,
		.server_flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
				NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
				NBD_FLAG_CAN_MULTI_CONN,
		.timeout_s = o->timeout_s,
		.dead_conn_timeout_s = o->dead_conn_timeout_s,
		.backend = k.backend,
	};

	/* Memory pressure must not wait on the device this process serves:
	 * it may neither be paged out nor throttled as an ordinary writer. */
	if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
		qbd_warn(COMP, "PR_SET_IO_FLUSHER: %s (memory pressure may stall the device)",
			 strerror(errno));
	if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) < 0)
		qbd_warn(COMP, "mlockall: %s (the daemon may be paged out under pressure)",
			 strerror(errno));

	for (unsigned i = 0; i < o->connections; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
			r = -errno;
			qbd_err(COMP, "socketpair: %s", strerror(-r));
			for (unsigned j = 0; j < k.n; j++)
				close(server_fds[j]);
			close_kernel_fds(&k);
			ready_say(&k.ready_fd, "ERR socketpair: %s\n", strerror(-r));
			return r;
		}
		server_fds[i] = sv[0];
		k.kernel_fds[i] = sv[1];
		k.n++;
	}
	so.export_name = o->volume;
	so.socket_path = o->socket_path;
	so.fds = server_fds;
	so.n_fds = k.n;
	so.on_ready = kserve_on_ready;
	so.on_conn_end = kserve_on_conn_end;
	so.on_resize = kserve_on_resize;
	so.arg = &k;
	so.stop_after_disc = true;
	so.metrics = o->metrics;
	so.zone = o->zone;
	r = nbd_serve(vol, &so);
	close_kernel_fds(&k);
	if (k.connected) {
		runtime_del(&k);
		qbd_info(COMP, "/dev/nbd%d: %s", k.cfg.index,
			 r == 0 ? "served until its end" : "stopped");
	} else if (r) {
		ready_say(&k.ready_fd, "ERR %s\n", strerror(r < 0 ? -r : r));
	}
	return r;
}
