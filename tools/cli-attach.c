/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd attach / detach / mapped: a volume as /dev/nbdN on this node. attach
 * starts the volume's qbd-nbd in its own session (it outlives the CLI) and
 * waits for its word on a pipe; detach flushes the device and disconnects
 * it, and the daemon exits when the kernel's NBD_CMD_DISC arrives; mapped
 * reads sysfs and the daemons' runtime records.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "nbd-frontend/kernel.h"
#include "internal.h"

#define ATTACH_WAIT_MS 60000
#define DETACH_WAIT_MS 30000

static const char attach_usage[] =
	"usage: qbd attach NAME [--device /dev/nbdN] [--connections N] [--zone ZONE]\n"
	"                  [--force] [--timeout S] [--dead-timeout S] [--resync-rate BYTES/S]\n"
	"Attach volume NAME to this node as /dev/nbdN and print the device. Its\n"
	"qbd-nbd daemon runs in the background (log: $QBD_RUN_DIR/NAME.log, default\n"
	"/run/qbd). A volume attached on another node is refused unless --force\n"
	"(a takeover: only when that node is gone). Attaching a volume that is\n"
	"attached here already prints its device; one whose daemon died gets a new\n"
	"daemon on the same device, without an I/O error reaching its users.\n"
	"  --device      the device (default: the first free one)\n"
	"  --connections sockets between the kernel and the daemon (1-16, default 1)\n"
	"  --zone        this node's zone: reads prefer replicas there\n"
	"  --timeout, --dead-timeout, --resync-rate: see qbd-nbd --help\n";

static const char detach_usage[] =
	"usage: qbd detach DEVICE|NAME [--force]\n"
	"Flush and disconnect a qbd device on this node; its daemon writes back,\n"
	"releases the volume and exits. A mounted device is refused unless --force\n"
	"(the filesystem then sees I/O errors).\n";

static const char mapped_usage[] =
	"usage: qbd mapped [--json]\n"
	"The qbd devices of this node: device, volume, daemon pid and state.\n";

static const char *run_dir(void)
{
	const char *d = getenv("QBD_RUN_DIR");

	return d && *d ? d : "/run/qbd";
}

struct find_dev {
	const char *volume;   /* match by name */
	struct nbd_kernel_dev dev;
	bool found;
};

static int find_dev_cb(const struct nbd_kernel_dev *d, void *arg)
{
	struct find_dev *f = arg;
	char name[128];
	uint64_t id;

	if (!d->connected || !nbd_kernel_backend_parse(d->backend, &id, name, sizeof name) ||
	    strcmp(name, f->volume) != 0)
		return 0;
	f->dev = *d;
	f->found = true;
	return 1;
}

static void print_log_tail(const char *path)
{
	char line[512];
	char *lines[8] = { 0 };
	unsigned n = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		free(lines[n % 8]);
		lines[n % 8] = strdup(line);
		n++;
	}
	fclose(f);
	for (unsigned i = n > 8 ? n - 8 : 0; i < n; i++) {
		fprintf(stderr, "  %s", lines[i % 8] ? lines[i % 8] : "\n");
		free(lines[i % 8]);
		lines[i % 8] = NULL;
	}
}

/* Start qbd-nbd with argv and wait for its "OK /dev/nbdN" or "ERR ...". */
static int attach_spawn(const char *volume, char **dargv, const char *logpath)
{
	char msg[512] = "";
	size_t got = 0;
	int p[2], status;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "qbd: pipe: %s\n", strerror(errno));
		return EXIT_ERR;
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "qbd: fork: %s\n", strerror(errno));
		close(p[0]);
		close(p[1]);
		return EXIT_ERR;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0640);

		setsid();
		if (devnull < 0 || logfd < 0 || dup2(devnull, 0) < 0 || dup2(logfd, 1) < 0 ||
		    dup2(logfd, 2) < 0 ||
		    (p[1] == 3 ? fcntl(3, F_SETFD, 0) : dup2(p[1], 3)) < 0)
			_exit(126);
		if (devnull > 3)
			close(devnull);
		if (logfd > 3)
			close(logfd);
		signal(SIGPIPE, SIG_DFL);
		execvp(dargv[0], dargv);
		fprintf(stderr, "qbd: exec %s: %s\n", dargv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	uint64_t end = qbd_now_ns() + (uint64_t)ATTACH_WAIT_MS * 1000000ull;
	while (got < sizeof msg - 1 && !strchr(msg, '\n')) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		uint64_t now = qbd_now_ns();
		int r;

		if (now >= end)
			break;
		r = poll(&pfd, 1, (int)((end - now) / 1000000ull) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		ssize_t n = read(p[0], msg + got, sizeof msg - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		msg[got] = 0;
	}
	close(p[0]);
	char *nl = strchr(msg, '\n');
	if (nl)
		*nl = 0;
	if (strncmp(msg, "OK ", 3) == 0) {
		puts(msg + 3);
		return EXIT_OK;
	}
	if (strncmp(msg, "ERR ", 4) == 0) {
		fprintf(stderr, "qbd: attach %s: %s\n", volume, msg + 4);
	} else if (waitpid(pid, &status, WNOHANG) == pid) {
		fprintf(stderr, "qbd: attach %s: qbd-nbd exited (%s %d)\n", volume,
			WIFEXITED(status) ? "status" : "signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	} else {
		fprintf(stderr, "qbd: attach %s: qbd-nbd did not answer within %d s; "
			"stopping it\n", volume, ATTACH_WAIT_MS / 1000);
		kill(pid, SIGTERM);
	}
	fprintf(stderr, "qbd: the daemon's log, %s, ends with:\n", logpath);
	print_log_tail(logpath);
	return EXIT_ERR;
}

static int cmd_attach(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "connections", required_argument, NULL, 'c' },
		{ "zone", required_argument, NULL, 'z' },
		{ "force", no_argument, NULL, 'f' },
		{ "timeout", required_argument, NULL, 't' },
		{ "dead-timeout", required_argument, NULL, 'D' },
		{ "resync-rate", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *device = "auto", *conns = "1", *zone = NULL, *timeout = NULL,
		   *dead = NULL, *rate = NULL;
	bool force = false;
	char dpath[PATH_MAX], logpath[PATH_MAX];
	char *dargv[32];
	int c, n = 0, idx, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': device = optarg; break;
		case 'c': conns = optarg; break;
		case 'z': zone = optarg; break;
		case 'f': force = true; break;
		case 't': timeout = optarg; break;
		case 'D': dead = optarg; break;
		case 'r': rate = optarg; break;
		case 'h': fputs(attach_usage, stdout); return EXIT_OK;
		default: fputs(attach_usage, stderr); return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		fputs(attach_usage, stderr);
		return EXIT_USAGE;
	}
	const char *volume = argv[optind];
	if ((r = cli_need_etcd()))
		return r;
	if (strcmp(device, "auto") != 0 && nbd_kernel_parse_device(device, &idx) < 0) {
		fprintf(stderr, "qbd: bad --device '%s' (want /dev/nbdN)\n", device);
		return EXIT_USAGE;
	}
	if (nbd_kernel_probe() < 0) {
		fprintf(stderr, "qbd: the nbd kernel module is not available: 'modprobe nbd' "
			"failed (install this kernel's modules, or load nbd)\n");
		return EXIT_ERR;
	}
	/* Attached here already? */
	struct find_dev f = { .volume = volume };
	if (nbd_kernel_for_each_dev(find_dev_cb, &f) > 0) {
		struct nbd_kernel_runtime rt;

		if (nbd_kernel_runtime_get(run_dir(), f.dev.index, &rt) == 0 &&
		    nbd_kernel_daemon_alive(rt.pid)) {
			fprintf(stderr, "qbd: %s is attached here already (daemon pid %d)\n",
				volume, rt.pid);
			printf("/dev/nbd%d\n", f.dev.index);
			return EXIT_OK;
		}
		fprintf(stderr, "qbd: %s is on /dev/nbd%d without a daemon: starting one\n",
			volume, f.dev.index);
		static char devbuf[32];
		snprintf(devbuf, sizeof devbuf, "/dev/nbd%d", f.dev.index);
		device = devbuf;
	}
	if (mkdir(run_dir(), 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "qbd: %s: %s\n", run_dir(), strerror(errno));
		return EXIT_ERR;
	}
	snprintf(logpath, sizeof logpath, "%s/%s.log", run_dir(), volume);
	cli_sibling_path("qbd-nbd", dpath, sizeof dpath);
	dargv[n++] = dpath;
	dargv[n++] = "--etcd";
	dargv[n++] = (char *)cli_etcd;
	dargv[n++] = "--volume";
	dargv[n++] = (char *)volume;
	dargv[n++] = "--device";
	dargv[n++] = (char *)device;
	dargv[n++] = "--connections";
	dargv[n++] = (char *)conns;
	dargv[n++] = "--run-dir";
	dargv[n++] = (char *)run_dir();
	dargv[n++] = "--ready-fd";
	dargv[n++] = "3";
	if (zone) {
		dargv[n++] = "--zone";
		dargv[n++] = (char *)zone;
	}
	if (force)
		dargv[n++] = "--force";
	if (timeout) {
		dargv[n++] = "--timeout";
		dargv[n++] = (char *)timeout;
	}
	if (dead) {
		dargv[n++] = "--dead-timeout";
		dargv[n++] = (char *)dead;
	}
	if (rate) {
		dargv[n++] = "--resync-rate";
		dargv[n++] = (char *)rate;
	}
	dargv[n] = NULL;
	return attach_spawn(volume, dargv, logpath);
}

/* Where is block device major:minor mounted? The first mount point, or
 * false. Partitions of the device count. */
static bool dev_mounted(int index, char *where, size_t len)
{
	char want[64][64];
	unsigned nwant = 0;
	char path[128], buf[64];
	FILE *f;

	snprintf(path, sizeof path, "/sys/block/nbd%d/dev", index);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (fgets(buf, sizeof buf, f)) {
		buf[strcspn(buf, "\n")] = 0;
		snprintf(want[nwant++], sizeof want[0], "%s", buf);
	}
	fclose(f);
	for (int p = 1; p < 64 && nwant < 64; p++) {
		snprintf(path, sizeof path, "/sys/block/nbd%d/nbd%dp%d/dev", index, index, p);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(buf, sizeof buf, f)) {
			buf[strcspn(buf, "\n")] = 0;
			snprintf(want[nwant++], sizeof want[0], "%s", buf);
		}
		fclose(f);
	}
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return false;
	char line[4096];
	bool found = false;
	while (!found && fgets(line, sizeof line, f)) {
		char mm[32], mnt[2048];

		/* id parent major:minor root mountpoint ... */
		if (sscanf(line, "%*s %*s %31s %*s %2047s", mm, mnt) != 2)
			continue;
		for (unsigned i = 0; i < nwant; i++) {
			if (strcmp(mm, want[i]) == 0) {
				snprintf(where, len, "%s", mnt);
				found = true;
				break;
			}
		}
	}
	fclose(f);
	return found;
}

static int cmd_detach(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct nbd_kernel_dev d;
	struct nbd_kernel_runtime rt;
	char name[128], where[2048];
	bool force = false;
	uint64_t id;
	int c, index, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'f') {
			force = true;
		} else if (c == 'h') {
			fputs(detach_usage, stdout);
			return EXIT_OK;
		} else {
			fputs(detach_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		fputs(detach_usage, stderr);
		return EXIT_USAGE;
	}
	const char *arg = argv[optind];
	if ((strncmp(arg, "/dev/", 5) == 0 || strncmp(arg, "nbd", 3) == 0) &&
	    nbd_kernel_parse_device(arg, &index) == 0) {
		if (nbd_kernel_dev_get(index, &d) < 0 || !d.connected) {
			fprintf(stderr, "qbd: /dev/nbd%d is not attached\n", index);
			return EXIT_ERR;
		}
	} else {
		struct find_dev f = { .volume = arg };
		if (nbd_kernel_for_each_dev(find_dev_cb, &f) <= 0) {
			fprintf(stderr, "qbd: volume '%s' is not attached on this node "
				"(see qbd mapped)\n", arg);
			return EXIT_ERR;
		}
		d = f.dev;
		index = d.index;
	}
	if (!nbd_kernel_backend_parse(d.backend, &id, name, sizeof name)) {
		fprintf(stderr, "qbd: /dev/nbd%d is not a qbd device (backend '%s')\n", index,
			d.backend);
		return EXIT_ERR;
	}
	if (dev_mounted(index, where, sizeof where)) {
		if (!force) {
			fprintf(stderr, "qbd: /dev/nbd%d (volume %s) is mounted on %s: unmount "
				"it first\n", index, name, where);
			return EXIT_ERR;
		}
		fprintf(stderr, "qbd: warning: /dev/nbd%d is mounted on %s; detaching anyway\n",
			index, where);
	}
	/* Write back what the page cache holds, and have the daemon flush. */
	char dev[32];
	snprintf(dev, sizeof dev, "/dev/nbd%d", index);
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		fprintf(stderr, "qbd: %s: flush: %s%s\n", dev, strerror(errno),
			force ? "" : " (not detaching; --force detaches anyway)");
		if (fd >= 0)
			close(fd);
		if (!force)
			return EXIT_ERR;
	} else {
		close(fd);
	}
	int pid = nbd_kernel_runtime_get(run_dir(), index, &rt) == 0 ? rt.pid : 0;
	r = nbd_kernel_disconnect(index);
	if (r < 0) {
		fprintf(stderr, "qbd: disconnect %s: %s\n", dev, strerror(-r));
		return EXIT_ERR;
	}
	/* The daemon releases the volume (final flush, clean detach in etcd). */
	uint64_t end = qbd_now_ns() + (uint64_t)DETACH_WAIT_MS * 1000000ull;
	while (nbd_kernel_daemon_alive(pid) && qbd_now_ns() < end)
		usleep(50000);
	if (nbd_kernel_daemon_alive(pid)) {
		fprintf(stderr, "qbd: %s is disconnected, but its daemon (pid %d) has not "
			"exited after %d s\n", dev, pid, DETACH_WAIT_MS / 1000);
		return EXIT_ERR;
	}
	return EXIT_OK;
}

struct mapped_arg {
	json_object *arr;
	unsigned n;
};

static int mapped_cb(const struct nbd_kernel_dev *d, void *arg)
{
	struct mapped_arg *m = arg;
	struct nbd_kernel_runtime rt;
	char name[128], hex[17], size[32];
	uint64_t id;

	if (!d->connected || !nbd_kernel_backend_parse(d->backend, &id, name, sizeof name))
		return 0;
	bool have = nbd_kernel_runtime_get(run_dir(), d->index, &rt) == 0;
	bool alive = have && nbd_kernel_daemon_alive(rt.pid);
	if (m->arr) {
		json_object *o = json_object_new_object();
		char dev[32];

		snprintf(dev, sizeof dev, "/dev/nbd%d", d->index);
		json_object_object_add(o, "device", json_object_new_string(dev));
		json_object_object_add(o, "volume", json_object_new_string(name));
		json_object_object_add(o, "volume_id", json_object_new_string(qbd_id_str(id, hex)));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)d->size));
		json_object_object_add(o, "pid", json_object_new_int(alive ? rt.pid : 0));
		json_object_object_add(o, "connections",
				       json_object_new_int(have ? (int)rt.connections : 0));
		json_object_object_add(o, "state",
				       json_object_new_string(alive ? "served" : "no-daemon"));
		json_object_array_add(m->arr, o);
	} else {
		if (m->n == 0)
			printf("%-12s %-24s %-16s %10s %8s %s\n", "DEVICE", "VOLUME", "ID", "SIZE",
			       "PID", "STATE");
		char pid[16];
		snprintf(pid, sizeof pid, "%d", alive ? rt.pid : 0);
		printf("/dev/nbd%-4d %-24s %-16s %10s %8s %s\n", d->index, name,
		       qbd_id_str(id, hex), qbd_format_size(d->size, size, sizeof size),
		       alive ? pid : "-", alive ? "served" : "no daemon (qbd attach restarts it)");
	}
	m->n++;
	return 0;
}

static int cmd_mapped(int argc, char **argv)
{
	struct mapped_arg m = { 0 };
	int r;

	if ((r = cli_simple_opts(argc, argv, 0, mapped_usage)) >= 0)
		return r;
	if (cli_json)
		m.arr = json_object_new_array();
	nbd_kernel_for_each_dev(mapped_cb, &m);
	if (m.arr) {
		cli_print_json(m.arr);
	} else if (m.n == 0) {
		fprintf(stderr, "qbd: no qbd device on this node\n");
	}
	return EXIT_OK;
}

int cmd_kernel(int argc, char **argv)
{
	if (strcmp(argv[0], "attach") == 0)
		return cmd_attach(argc, argv);
	if (strcmp(argv[0], "detach") == 0)
		return cmd_detach(argc, argv);
	return cmd_mapped(argc, argv);
}
