/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kernel's NBD driver through generic netlink (see kernel.h). One
 * request per call on a fresh netlink socket: connect, reconfigure and
 * disconnect are rare, and a socket per call keeps no state to own.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <linux/nbd-netlink.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "kernel.h"

#define COMP "kernel"

struct nl_result {
	int err;    /* the kernel's -errno */
	int index;  /* NBD_ATTR_INDEX of a reply, or -1 */
	bool acked;
};

static int nl_on_error(struct sockaddr_nl *nla, struct nlmsgerr *e, void *arg)
{
	struct nl_result *res = arg;

	(void)nla;
	res->err = e->error;
	return NL_STOP;
}

static int nl_on_ack(struct nl_msg *msg, void *arg)
{
	struct nl_result *res = arg;

	(void)msg;
	res->acked = true;
	return NL_STOP;
}

static int nl_on_valid(struct nl_msg *msg, void *arg)
{
	struct nl_result *res = arg;
	struct nlattr *tb[NBD_ATTR_MAX + 1];

	if (genlmsg_parse(nlmsg_hdr(msg), 0, tb, NBD_ATTR_MAX, NULL) == 0 &&
	    tb[NBD_ATTR_INDEX])
		res->index = (int)nla_get_u32(tb[NBD_ATTR_INDEX]);
	return NL_OK;
}

/* Is the "nbd" family there? 0 and the family id, or -ENOPROTOOPT. */
static int nl_open(struct nl_sock **out, int *family)
{
	struct nl_sock *sk = nl_socket_alloc();
	int r;

	if (!sk)
		return -ENOMEM;
	r = genl_connect(sk);
	if (r < 0) {
		qbd_err(COMP, "generic netlink: %s", nl_geterror(r));
		nl_socket_free(sk);
		return -EIO;
	}
	r = genl_ctrl_resolve(sk, NBD_GENL_FAMILY_NAME);
	if (r < 0) {
		nl_socket_free(sk);
		return -ENOPROTOOPT;
	}
	*family = r;
	*out = sk;
	return 0;
}

int nbd_kernel_probe(void)
{
	struct nl_sock *sk;
	int family, r, status;
	pid_t pid;

	r = nl_open(&sk, &family);
	if (r == 0) {
		nl_socket_free(sk);
		return 0;
	}
	if (r != -ENOPROTOOPT)
		return r;
	/* Not loaded: try modprobe, as any block tool would. */
	pid = fork();
	if (pid == 0) {
		execlp("modprobe", "modprobe", "-q", "nbd", (char *)NULL);
		_exit(127);
	}
	if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0) {
		r = nl_open(&sk, &family);
		if (r == 0) {
			nl_socket_free(sk);
			return 0;
		}
	}
	qbd_err(COMP, "the kernel has no nbd driver: 'modprobe nbd' failed (is the module "
		"installed for this kernel, and are you root?)");
	return -ENOPROTOOPT;
}

/* Send msg (consumed) and wait for the kernel's answer. */
static int nl_call(struct nl_sock *sk, struct nl_msg *msg, struct nl_result *res)
{
	struct nl_cb *cb = nl_cb_alloc(NL_CB_DEFAULT);
	int r;

	res->err = 0;
	res->index = -1;
	res->acked = false;
	if (!cb) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	nl_cb_err(cb, NL_CB_CUSTOM, nl_on_error, res);
	nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, nl_on_ack, res);
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, nl_on_valid, res);
	r = nl_send_auto(sk, msg);
	nlmsg_free(msg);
	if (r < 0) {
		qbd_err(COMP, "netlink send: %s", nl_geterror(r));
		nl_cb_put(cb);
		return -EIO;
	}
	while (!res->acked && res->err == 0) {
		r = nl_recvmsgs(sk, cb);
		if (r < 0 && res->err == 0) {
			qbd_err(COMP, "netlink receive: %s", nl_geterror(r));
			res->err = -EIO;
		}
	}
	nl_cb_put(cb);
	return res->err;
}

static int put_cfg(struct nl_msg *msg, const struct nbd_kernel_cfg *cfg,
		   const int *fds, unsigned n_fds, bool sizes)
{
	struct nlattr *socks;

	if (cfg->index >= 0 && nla_put_u32(msg, NBD_ATTR_INDEX, (uint32_t)cfg->index) < 0)
		return -EMSGSIZE;
	if (sizes && (nla_put_u64(msg, NBD_ATTR_SIZE_BYTES, cfg->size) < 0 ||
		      nla_put_u64(msg, NBD_ATTR_BLOCK_SIZE_BYTES, cfg->block_size) < 0 ||
		      nla_put_u64(msg, NBD_ATTR_SERVER_FLAGS, cfg->server_flags) < 0))
		return -EMSGSIZE;
	if (nla_put_u64(msg, NBD_ATTR_TIMEOUT, cfg->timeout_s) < 0 ||
	    nla_put_u64(msg, NBD_ATTR_DEAD_CONN_TIMEOUT, cfg->dead_conn_timeout_s) < 0 ||
	    nla_put_string(msg, NBD_ATTR_BACKEND_IDENTIFIER, cfg->backend) < 0)
		return -EMSGSIZE;
	socks = nla_nest_start(msg, NBD_ATTR_SOCKETS);
	if (!socks)
		return -EMSGSIZE;
	for (unsigned i = 0; i < n_fds; i++) {
		struct nlattr *item = nla_nest_start(msg, NBD_SOCK_ITEM);

		if (!item || nla_put_u32(msg, NBD_SOCK_FD, (uint32_t)fds[i]) < 0)
			return -EMSGSIZE;
		nla_nest_end(msg, item);
	}
	nla_nest_end(msg, socks);
	return 0;
}

/* Build and send one command; res->index holds a reply's index. */
static int nbd_kernel_cmd(uint8_t cmd, const struct nbd_kernel_cfg *cfg,
			  const int *fds, unsigned n_fds, int index,
			  struct nl_result *res)
{
	struct nl_sock *sk;
	struct nl_msg *msg;
	int family, r;

	r = nl_open(&sk, &family);
	if (r == -ENOPROTOOPT) {
		r = nbd_kernel_probe();
		if (r == 0)
			r = nl_open(&sk, &family);
	}
	if (r)
		return r;
	msg = nlmsg_alloc();
	if (!msg || !genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, 0, cmd,
				 NBD_GENL_VERSION)) {
		nlmsg_free(msg);
		nl_socket_free(sk);
		return -ENOMEM;
	}
	if (cfg)
		r = put_cfg(msg, cfg, fds, n_fds, cmd == NBD_CMD_CONNECT);
	else if (nla_put_u32(msg, NBD_ATTR_INDEX, (uint32_t)index) < 0)
		r = -EMSGSIZE;
	if (r) {
		nlmsg_free(msg);
		nl_socket_free(sk);
		return r;
	}
	r = nl_call(sk, msg, res);
	nl_socket_free(sk);
	return r;
}

int nbd_kernel_connect(const struct nbd_kernel_cfg *cfg, const int *fds,
		       unsigned n_fds, int *index_out)
{
	struct nl_result res;
	int r;

	r = nbd_kernel_cmd(NBD_CMD_CONNECT, cfg, fds, n_fds, -1, &res);
	if (r == -EBUSY) {
		qbd_err(COMP, "/dev/nbd%d is in use by another connection", cfg->index);
		return r;
	}
	if (r) {
		qbd_err(COMP, "connect %s%d: %s", cfg->index >= 0 ? "/dev/nbd" : "a free device, got ",
			cfg->index, strerror(-r));
		return r;
	}
	if (res.index < 0) {
		qbd_err(COMP, "connect: the kernel did not say which device");
		return -EIO;
	}
	*index_out = res.index;
	return 0;
}

int nbd_kernel_reconfigure(const struct nbd_kernel_cfg *cfg, const int *fds,
			   unsigned n_fds)
{
	struct nl_result res;
	int r = nbd_kernel_cmd(NBD_CMD_RECONFIGURE, cfg, fds, n_fds, -1, &res);

	if (r)
		qbd_err(COMP, "reconfigure /dev/nbd%d: %s", cfg->index, strerror(-r));
	return r;
}

/*
 * NBD_CMD_RECONFIGURE with the device's index, its backend identifier
 * and NBD_ATTR_SIZE_BYTES only: the kernel sets the new capacity (since
 * Linux 5.3, nbd_genl_size_set) and announces it (a KOBJ_CHANGE uevent);
 * sockets, timeouts and flags stay. An older kernel ignores the size and
 * still answers 0, so sysfs is read back to tell.
 */
int nbd_kernel_resize(const struct nbd_kernel_cfg *cfg)
{
	struct nbd_kernel_dev d;
	struct nl_result res;
	struct nl_sock *sk;
	struct nl_msg *msg;
	int family, r;

	r = nl_open(&sk, &family);
	if (r) {
		qbd_err(COMP, "resize /dev/nbd%d: no nbd netlink family", cfg->index);
		return r;
	}
	msg = nlmsg_alloc();
	if (!msg || !genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, 0,
				 NBD_CMD_RECONFIGURE, NBD_GENL_VERSION) ||
	    nla_put_u32(msg, NBD_ATTR_INDEX, (uint32_t)cfg->index) < 0 ||
	    nla_put_string(msg, NBD_ATTR_BACKEND_IDENTIFIER, cfg->backend) < 0 ||
	    nla_put_u64(msg, NBD_ATTR_SIZE_BYTES, cfg->size) < 0) {
		nlmsg_free(msg);
		nl_socket_free(sk);
		return -ENOMEM;
	}
	r = nl_call(sk, msg, &res);
	nl_socket_free(sk);
	if (r) {
		qbd_err(COMP, "resize /dev/nbd%d to %" PRIu64 " bytes: %s", cfg->index,
			cfg->size, strerror(-r));
		return r;
	}
	if (nbd_kernel_dev_get(cfg->index, &d) == 0 && d.size != cfg->size) {
		qbd_err(COMP, "resize /dev/nbd%d: the kernel kept %" PRIu64 " bytes (its nbd "
			"driver takes a new size from Linux 5.3 on); detach and attach again",
			cfg->index, d.size);
		return -EOPNOTSUPP;
	}
	return 0;
}

int nbd_kernel_disconnect(int index)
{
	struct nl_result res;
	int r = nbd_kernel_cmd(NBD_CMD_DISCONNECT, NULL, NULL, 0, index, &res);

	if (r)
		qbd_err(COMP, "disconnect /dev/nbd%d: %s", index, strerror(-r));
	return r;
}

/* Read a small sysfs file, newline stripped. 0 or -errno. */
static int sysfs_read(int index, const char *attr, char *buf, size_t len)
{
	char path[96];
	FILE *f;
	size_t n;

	snprintf(path, sizeof path, "/sys/block/nbd%d/%s", index, attr);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return 0;
}

int nbd_kernel_dev_get(int index, struct nbd_kernel_dev *out)
{
	char buf[64];

	memset(out, 0, sizeof *out);
	out->index = index;
	if (sysfs_read(index, "size", buf, sizeof buf) < 0)
		return -ENOENT;
	out->exists = true;
	out->size = strtoull(buf, NULL, 10) * 512;
	/* "pid" exists only while the device is connected. */
	if (sysfs_read(index, "pid", buf, sizeof buf) == 0) {
		out->connected = true;
		out->pid = atoi(buf);
	}
	if (sysfs_read(index, "backend", out->backend, sizeof out->backend) < 0)
		out->backend[0] = 0;
	return 0;
}

int nbd_kernel_parse_device(const char *s, int *index)
{
	char *end;
	long v;

	if (strncmp(s, "/dev/", 5) == 0)
		s += 5;
	if (strncmp(s, "nbd", 3) == 0)
		s += 3;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 0 || v > 1000000)
		return -EINVAL;
	*index = (int)v;
	return 0;
}

void nbd_kernel_backend(char *buf, unsigned len, uint64_t volume_id, const char *name)
{
	snprintf(buf, len, NBD_KERNEL_BACKEND_PREFIX "%016" PRIx64 ":%s", volume_id, name);
}

bool nbd_kernel_backend_parse(const char *backend, uint64_t *volume_id, char *name,
			      unsigned name_len)
{
	size_t pl = strlen(NBD_KERNEL_BACKEND_PREFIX);
	char hex[17];

	if (strncmp(backend, NBD_KERNEL_BACKEND_PREFIX, pl) != 0 ||
	    strlen(backend) < pl + 18 || backend[pl + 16] != ':')
		return false;
	memcpy(hex, backend + pl, 16);
	hex[16] = 0;
	if (qbd_id_parse(hex, volume_id) < 0)
		return false;
	snprintf(name, name_len, "%s", backend + pl + 17);
	return true;
}

int nbd_kernel_for_each_dev(int (*fn)(const struct nbd_kernel_dev *d, void *arg),
			    void *arg)
{
	DIR *dir = opendir("/sys/block");
	struct dirent *e;
	int r = 0;

	if (!dir)
		return 0;
	while (r == 0 && (e = readdir(dir))) {
		struct nbd_kernel_dev d;
		int index;

		if (strncmp(e->d_name, "nbd", 3) != 0 ||
		    nbd_kernel_parse_device(e->d_name, &index) < 0 ||
		    nbd_kernel_dev_get(index, &d) < 0)
			continue;
		r = fn(&d, arg);
	}
	closedir(dir);
	return r;
}

void nbd_kernel_runtime_path(char *buf, size_t len, const char *run_dir, int index)
{
	snprintf(buf, len, "%s/nbd%d.json", run_dir, index);
}

int nbd_kernel_runtime_get(const char *run_dir, int index, struct nbd_kernel_runtime *out)
{
	char path[512];
	json_object *o, *v;

	memset(out, 0, sizeof *out);
	nbd_kernel_runtime_path(path, sizeof path, run_dir, index);
	o = json_object_from_file(path);
	if (!o)
		return -ENOENT;
	if (json_object_object_get_ex(o, "volume", &v))
		snprintf(out->volume, sizeof out->volume, "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "volume_id", &v))
		(void)qbd_id_parse(json_object_get_string(v), &out->volume_id);
	if (json_object_object_get_ex(o, "pid", &v))
		out->pid = json_object_get_int(v);
	if (json_object_object_get_ex(o, "connections", &v))
		out->connections = (unsigned)json_object_get_int(v);
	if (json_object_object_get_ex(o, "since", &v))
		out->since = (uint64_t)json_object_get_int64(v);
	json_object_put(o);
	return 0;
}

bool nbd_kernel_daemon_alive(int pid)
{
	char path[64], comm[32] = "";
	FILE *f;

	if (pid <= 0)
		return false;
	snprintf(path, sizeof path, "/proc/%d/comm", pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (!fgets(comm, sizeof comm, f))
		comm[0] = 0;
	fclose(f);
	return strncmp(comm, "qbd-nbd", 7) == 0;
}
