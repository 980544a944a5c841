/* SPDX-License-Identifier: Apache-2.0 */
/* qbd-nbd: the single writer of one volume, served over NBD on a unix
 * socket until SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/log.h"
#include "common/util.h"
#include "replicator/meta/meta.h"
#include "replicator/qbd.h"
#include "kernel.h"
#include "nbd.h"

static const char usage[] =
	"usage: qbd-nbd --volume NAME --socket PATH [options]\n"
	"       qbd-nbd --volume NAME --device /dev/nbdN|auto [--connections N] [options]\n"
	"Serve a qbd volume over NBD: on a unix socket (fixed newstyle), e.g. for\n"
	"  nbdinfo 'nbd+unix:///?socket=PATH'  or  qemu -drive file=nbd+unix:///?socket=PATH\n"
	"or to the kernel as /dev/nbdN (socketpairs handed over netlink; 'auto' takes\n"
	"a free device). `qbd attach` starts it this way; `qbd detach` ends it.\n"
	"\n"
	"  --config FILE         settings file ([cluster], [nbd], [nbd.VOLUME]; default\n"
	"                        " QBD_CONF_DEFAULT " if present, or $QBD_CONFIG)\n"
	"  --etcd URL[,URL...]   etcd endpoints, tried in turn (default $QBD_ETCD)\n"
	"  --secret-file PATH    cluster secret, mode 0600 ($QBD_SECRET_FILE)\n"
	"  --metrics ADDR:PORT   serve Prometheus metrics over HTTP at /metrics\n"
	"  --zone ZONE           this node's zone: reads prefer replicas there\n"
	"  --force               take the volume over from a writer that still holds\n"
	"                        its attachment (when that node is gone)\n"
	"  --resync-rate BYTES/S limit background copying to stale replicas (e.g. 64M)\n"
	"  --connections N       kernel sockets (1-16, default 1)\n"
	"  --timeout S           kernel: a request unanswered S seconds is retried on\n"
	"                        a new socket (default 30; 0 never)\n"
	"  --dead-timeout S      kernel: I/O waits S seconds for a restarted daemon\n"
	"                        before it fails (default 120)\n"
	"  --run-dir DIR         runtime records (default $QBD_RUN_DIR or /run/qbd)\n"
	"  --ready-fd FD         write 'OK /dev/nbdN' or 'ERR reason' there, then close\n"
	"  --log-level L         error|warn|info|debug\n"
	"\n"
	"Opening the volume takes a new epoch: any earlier writer is fenced. A volume\n"
	"attached elsewhere is refused unless --force. A device already bound to this\n"
	"volume whose daemon died is reattached (NBD_CMD_RECONFIGURE): no I/O error\n"
	"reaches its users if that happens within --dead-timeout.\n"
	"SIGTERM drains requests, flushes and exits 0 (a kernel device stays bound,\n"
	"waiting for the next daemon).\n"
	"\n"
	"Exit status: 0 stopped, every acknowledged write flushed (or the volume was\n"
	"taken over: a newer writer owns it); 1 could not start or serve; 3 stopped,\n"
	"but the final flush failed (fewer than W replicas): writes acknowledged since\n"
	"the last successful flush are on W replicas but may not be durable there.\n";

/* Exit statuses (the usage text above, docs/operations.md, the unit). */
#define NBD_EXIT_FAILED 1        /* could not start or serve */
#define NBD_EXIT_FLUSH_FAILED 3  /* stopped, but the final flush failed */

static int parse_uint(const char *opt, const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max) {
		fprintf(stderr, "qbd-nbd: bad %s '%s' (0..%u)\n", opt, s, max);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

struct find_arg {
	const char *volume;
	int index;
};

static int find_volume_dev(const struct nbd_kernel_dev *d, void *arg)
{
	struct find_arg *fa = arg;
	char name[128];
	uint64_t id;

	if (d->connected && nbd_kernel_backend_parse(d->backend, &id, name, sizeof name) &&
	    strcmp(name, fa->volume) == 0) {
		fa->index = d->index;
		return 1;
	}
	return 0;
}

/*
 * Kernel mode, before the volume is opened: is the device free, or bound
 * to this volume already (then reattach)? 0, or 1 after printing why not.
 */
static int kernel_prepare(struct nbd_kernel_serve_opts *ko)
{
	struct nbd_kernel_dev d;
	struct nbd_kernel_runtime rt;
	char name[128];
	uint64_t id;

	if (nbd_kernel_probe() < 0) {
		fprintf(stderr, "qbd-nbd: the nbd kernel module is not available "
			"(modprobe nbd failed)\n");
		return 1;
	}
	if (ko->index < 0) {
		/* A device left bound to this volume by a daemon that died? */
		struct find_arg fa = { .volume = ko->volume, .index = -1 };
		if (nbd_kernel_for_each_dev(find_volume_dev, &fa) > 0)
			ko->index = fa.index;
		else
			return 0;
	}
	if (nbd_kernel_dev_get(ko->index, &d) < 0 || !d.connected)
		return 0;
	if (!nbd_kernel_backend_parse(d.backend, &id, name, sizeof name) ||
	    strcmp(name, ko->volume) != 0) {
		fprintf(stderr, "qbd-nbd: /dev/nbd%d is busy: it serves %s\n", ko->index,
			d.backend[0] ? d.backend : "something that is not qbd");
		return 1;
	}
	if (nbd_kernel_runtime_get(ko->run_dir, ko->index, &rt) == 0 &&
	    rt.pid != (int)getpid() && nbd_kernel_daemon_alive(rt.pid)) {
		fprintf(stderr, "qbd-nbd: /dev/nbd%d is served by qbd-nbd pid %d already\n",
			ko->index, rt.pid);
		return 1;
	}
	ko->reattach = true;
	if (rt.connections >= 1 && rt.connections <= 16)
		ko->connections = rt.connections;
	return 0;
}

/* The settings file: the strings it holds are used until exit. */
static struct qbd_conf *conf;

/* Settings that the file may give too, by their name in flags and file. */
enum { S_ETCD, S_ZONE, S_SECRET, S_METRICS, S_RESYNC, S_CONNS, S_TIMEOUT, S_DEAD,
       S_RUNDIR, S_LOGLEVEL, S_N };
static const char *const names[S_N + 1] = {
	"etcd", "zone", "secret-file", "metrics", "resync-rate", "connections", "timeout",
	"dead-timeout", "run-dir", "log-level", NULL,
};
static const char *const envs[S_N] = {
	[S_ETCD] = "QBD_ETCD", [S_SECRET] = "QBD_SECRET_FILE", [S_RUNDIR] = "QBD_RUN_DIR",
	[S_LOGLEVEL] = "QBD_LOG_LEVEL",
};

/* What the command line and the settings file ask for. */
struct nbd_main {
	struct qbd_open_opts o;
	struct nbd_kernel_serve_opts ko;
	const char *sock, *device, *conf_path;
	const char *flag[S_N];     /* the flags of the settings, or NULL */
	const char *metrics;       /* --metrics: where Prometheus scrapes this
				    * daemon (NULL: nowhere) */
};

/* Parse the command line into m. *done when qbd-nbd is to exit at once
 * (--help, or a usage error: printed) with the status returned. */
static int main_parse_args(int argc, char **argv, struct nbd_main *m, bool *done)
{
	static const struct option opts[] = {
		{ "etcd", required_argument, NULL, S_ETCD },
		{ "zone", required_argument, NULL, S_ZONE },
		{ "secret-file", required_argument, NULL, S_SECRET },
		{ "metrics", required_argument, NULL, S_METRICS },
		{ "resync-rate", required_argument, NULL, S_RESYNC },
		{ "connections", required_argument, NULL, S_CONNS },
		{ "timeout", required_argument, NULL, S_TIMEOUT },
		{ "dead-timeout", required_argument, NULL, S_DEAD },
		{ "run-dir", required_argument, NULL, S_RUNDIR },
		{ "log-level", required_argument, NULL, S_LOGLEVEL },
		{ "volume", required_argument, NULL, 'v' },
		{ "socket", required_argument, NULL, 's' },
		{ "device", required_argument, NULL, 'd' },
		{ "ready-fd", required_argument, NULL, 'F' },
		{ "force", no_argument, NULL, 'f' },
		{ "config", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	unsigned u;
	int c;

	*done = true;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c >= 0 && c < S_N) {
			m->flag[c] = optarg;
			continue;
		}
		switch (c) {
		case 'v': m->o.volume = optarg; break;
		case 's': m->sock = optarg; break;
		case 'd': m->device = optarg; break;
		case 'F':
			if (parse_uint("--ready-fd", optarg, 1024, &u) < 0 || u < 3)
				return NBD_EXIT_FAILED;
			m->ko.ready_fd = (int)u;
			break;
		case 'f': m->o.force = 1; break;
		case 'C': m->conf_path = optarg; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return NBD_EXIT_FAILED;
		}
	}
	*done = false;
	return 0;
}

/* Resolve the settings (flag, environment, file) into m. The number of
 * problems, each printed. */
static int main_resolve_settings(struct nbd_main *m)
{
	struct qbd_setting st[S_N];
	char why[256];
	int bad = qbd_conf_check_keys(conf, "nbd", names);

	qbd_conf_export_tls(conf);
	for (int i = 0; i < S_N; i++)
		qbd_conf_resolve(conf, "nbd", m->o.volume, names[i], m->flag[i], envs[i],
				 i == S_ETCD || i == S_SECRET, &st[i]);
	if (st[S_LOGLEVEL].value) {
		int lvl = qbd_log_parse_level(st[S_LOGLEVEL].value);
		if (lvl < 0) {
			fprintf(stderr, "qbd-nbd: %s: bad log level '%s'\n", st[S_LOGLEVEL].where,
				st[S_LOGLEVEL].value);
			bad++;
		} else {
			qbd_log_set_level(lvl);
		}
	}
	m->o.etcd = st[S_ETCD].value;
	if (m->o.etcd && qbd_meta_endpoints_check(m->o.etcd, why, sizeof why) < 0) {
		fprintf(stderr, "qbd-nbd: %s: etcd '%s': %s\n", st[S_ETCD].where, m->o.etcd, why);
		bad++;
	}
	m->o.zone = st[S_ZONE].value;
	m->o.secret_file = st[S_SECRET].value;
	m->ko.run_dir = st[S_RUNDIR].value ? st[S_RUNDIR].value : "/run/qbd";
	if (st[S_CONNS].value &&
	    (parse_uint(st[S_CONNS].where, st[S_CONNS].value, 16, &m->ko.connections) < 0 ||
	     m->ko.connections == 0)) {
		fprintf(stderr, "qbd-nbd: %s: connections must be 1..16\n", st[S_CONNS].where);
		bad++;
	}
	if (st[S_TIMEOUT].value &&
	    parse_uint(st[S_TIMEOUT].where, st[S_TIMEOUT].value, 86400, &m->ko.timeout_s) < 0)
		bad++;
	if (st[S_DEAD].value &&
	    parse_uint(st[S_DEAD].where, st[S_DEAD].value, 86400,
		       &m->ko.dead_conn_timeout_s) < 0)
		bad++;
	if (st[S_RESYNC].value && qbd_parse_size(st[S_RESYNC].value, &m->o.resync_rate) < 0) {
		fprintf(stderr, "qbd-nbd: %s: bad resync rate '%s'\n", st[S_RESYNC].where,
			st[S_RESYNC].value);
		bad++;
	}
	m->metrics = st[S_METRICS].value;
	if (m->metrics) {
		char host[128];
		uint16_t port;

		if (qbd_parse_hostport(m->metrics, host, sizeof host, &port) < 0) {
			fprintf(stderr, "qbd-nbd: %s: bad metrics address '%s' (want ADDR:PORT)\n",
				st[S_METRICS].where, m->metrics);
			bad++;
		}
	}
	return bad;
}

/* The settings file, the settings, and what is required. 0, or -1 after
 * printing why not. */
static int main_settings(struct nbd_main *m, int argc)
{
	char err[512];

	if (qbd_conf_open(m->conf_path, &conf, err, sizeof err) < 0) {
		fprintf(stderr, "qbd-nbd: %s\n", err);
		return -1;
	}
	if (main_resolve_settings(m)) {
		qbd_conf_free(conf);
		return -1;
	}
	if (!m->o.volume || (!m->sock && !m->device) || !m->o.etcd || optind != argc) {
		fprintf(stderr, "qbd-nbd: --volume, --socket or --device, and --etcd (or "
			"QBD_ETCD, or etcd in [cluster] of the settings file) are required\n%s",
			usage);
		qbd_conf_free(conf);
		return -1;
	}
	return 0;
}

/* Every log line names the volume. */
static void main_log_context(const char *volume)
{
	char ctx[96];

	snprintf(ctx, sizeof ctx, "vol=%s", volume);
	qbd_log_set_context(ctx);
}

/* Kernel mode: which device, and is it free or ours to reattach? 0, or
 * -1 after printing why not. */
static int main_prepare_device(struct nbd_main *m)
{
	m->ko.volume = m->o.volume;
	m->ko.socket_path = m->sock;
	if (!m->device)
		return 0;
	if (strcmp(m->device, "auto") != 0 &&
	    nbd_kernel_parse_device(m->device, &m->ko.index) < 0) {
		fprintf(stderr, "qbd-nbd: bad --device '%s' (want /dev/nbdN or auto)\n",
			m->device);
		return -1;
	}
	if (kernel_prepare(&m->ko)) {
		if (m->ko.ready_fd >= 0)
			dprintf(m->ko.ready_fd, "ERR see the daemon's log\n");
		return -1;
	}
	return 0;
}

/* Open the volume (a new epoch: every earlier writer is fenced). 0, or
 * -1 after printing why not (and telling --ready-fd). */
static int main_open_volume(struct nbd_main *m, struct qbd_volume **v)
{
	const char *vol = m->o.volume;
	int fd = m->ko.ready_fd;
	int r;

	/* A restart behind our own device may take over from our dead self. */
	m->o.reattach = m->ko.reattach;
	r = qbd_open(&m->o, v);
	if (r == -EBUSY) {
		fprintf(stderr, "qbd-nbd: volume '%s' is attached elsewhere (see the log above "
			"and 'qbd volume status %s'); use --force to take it over if that "
			"node is gone\n", vol, vol);
		if (fd >= 0)
			dprintf(fd, "ERR volume '%s' is attached elsewhere; "
				"--force takes it over if that node is gone\n", vol);
		return -1;
	}
	if (r < 0) {
		fprintf(stderr, "qbd-nbd: cannot open volume '%s': %s\n", vol, strerror(-r));
		if (fd >= 0)
			dprintf(fd, "ERR cannot open volume '%s': %s\n", vol, strerror(-r));
		return -1;
	}
	return 0;
}

/* Reattaching: the same name is not enough, the device must be this
 * volume's. 0, or -1 after printing why not. */
static int main_check_device_owner(const struct nbd_main *m, const struct qbd_volume *v)
{
	struct nbd_kernel_dev d;
	char name[128];
	uint64_t id;

	if (!m->ko.reattach || nbd_kernel_dev_get(m->ko.index, &d) != 0)
		return 0;
	if (nbd_kernel_backend_parse(d.backend, &id, name, sizeof name) &&
	    id == qbd_volume_id(v))
		return 0;
	fprintf(stderr, "qbd-nbd: /dev/nbd%d belongs to another volume named "
		"'%s' (backend %s)\n", m->ko.index, m->o.volume, d.backend);
	if (m->ko.ready_fd >= 0)
		dprintf(m->ko.ready_fd, "ERR /dev/nbd%d belongs to another volume\n",
			m->ko.index);
	return -1;
}

/* Serve v to the kernel or on the socket until stopped: 0, -errno when
 * serving could not start, > 0 when on_ready refused. */
static int main_serve(struct nbd_main *m, struct qbd_volume *v)
{
	struct nbd_serve_opts so = { .export_name = m->o.volume, .socket_path = m->sock,
				     .metrics = m->metrics, .zone = m->o.zone };

	if (!m->device)
		return nbd_serve(v, &so);
	m->ko.metrics = m->metrics;
	m->ko.zone = m->o.zone;
	return nbd_kernel_serve(v, &m->ko);
}

/* The exit status once serving ended with r (main_serve) and the volume
 * was closed with closed (qbd_close: the final flush's result). */
static int main_exit_status(const struct nbd_main *m, int r, int closed)
{
	if (r < 0) {
		fprintf(stderr, "qbd-nbd: %s: %s\n", m->device ? m->device : m->sock,
			strerror(-r));
		return NBD_EXIT_FAILED;
	}
	if (r > 0)
		return NBD_EXIT_FAILED;
	if (closed == -EPERM) {
		qbd_info("nbd", "stopped; fenced, so not flushed: the newer writer owns the "
			 "volume");
		return 0;
	}
	if (closed < 0) {
		qbd_err("nbd", "stopped, but the final flush failed (%s): writes acknowledged "
			"since the last successful flush may not be durable; exit status %d",
			strerror(-closed), NBD_EXIT_FLUSH_FAILED);
		return NBD_EXIT_FLUSH_FAILED;
	}
	qbd_info("nbd", "stopped");
	return 0;
}

int main(int argc, char **argv)
{
	struct nbd_main m = {
		.ko = { .index = -1, .connections = 1, .timeout_s = 30,
			.dead_conn_timeout_s = 120, .ready_fd = -1 },
	};
	struct qbd_volume *v;
	bool done;
	int r;

	/* Payload buffers (up to 32 MiB per request) come and go with every
	 * request: keep them in the heap instead of fresh mappings, and do
	 * not hand the heap top back, or every 1 MiB write faults in and
	 * zeroes its pages again (about 400 page faults per request). */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);

	qbd_log_init(argv[0]);
	r = main_parse_args(argc, argv, &m, &done);
	if (done)
		return r;
	if (main_settings(&m, argc) < 0)
		return NBD_EXIT_FAILED;
	main_log_context(m.o.volume);
	if (main_prepare_device(&m) < 0 || main_open_volume(&m, &v) < 0)
		return NBD_EXIT_FAILED;
	if (m.device && main_check_device_owner(&m, v) < 0) {
		qbd_close(v);
		return NBD_EXIT_FAILED;
	}
	r = main_serve(&m, v);
	return main_exit_status(&m, r, qbd_close(v));
}
