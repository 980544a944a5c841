/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd dev up|down|status: a development cluster on loopback: etcd and one
 * qbd-chunkd per zone, started in their own sessions so they outlive the
 * CLI, recorded by PID in STATE/pids and stopped by PID.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/util.h"
#include "internal.h"

#define DEV_MAX 16

struct dev_proc {
	char name[64];
	pid_t pid;
};

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &l) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static pid_t spawn(char *const argv[], const char *logpath)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int nul = open("/dev/null", O_RDONLY);
		setsid();
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (nul >= 0)
			dup2(nul, 0);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

static int read_pids(const char *state, struct dev_proc *p, int max)
{
	char path[PATH_MAX];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof path, "%s/pids", state);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (n < max && fscanf(f, "%63s %d", p[n].name, &p[n].pid) == 2)
		n++;
	fclose(f);
	return n;
}

/* Is pid alive (not a zombie) and still the program it was started as:
 * its comm, or the base name of its argv[0], is etcd / qbd-chunkd? */
static bool proc_is(pid_t pid, const char *name)
{
	char path[64], comm[64] = "", cmd[PATH_MAX] = "", st[256] = "";
	const char *want = strncmp(name, "etcd", 4) == 0 ? "etcd" : "qbd-chunkd";
	const char *base, *paren;
	FILE *f;

	if (pid <= 1)
		return false;
	waitpid(pid, NULL, WNOHANG); /* reap it if it is our own child */
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return false;
	if (!fgets(st, sizeof st, f))
		st[0] = '\0';
	fclose(f);
	paren = strrchr(st, ')');
	if (!paren || paren[1] != ' ' || paren[2] == 'Z' || paren[2] == 'X')
		return false;
	snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
	if ((f = fopen(path, "r"))) {
		if (!fgets(comm, sizeof comm, f))
			comm[0] = '\0';
		fclose(f);
	}
	comm[strcspn(comm, "\n")] = '\0';
	if (strcmp(comm, want) == 0)
		return true;
	snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
	if ((f = fopen(path, "r"))) {
		if (!fgets(cmd, sizeof cmd, f))
			cmd[0] = '\0';
		fclose(f);
	}
	base = strrchr(cmd, '/');
	return strcmp(base ? base + 1 : cmd, want) == 0;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static int dev_down(const char *state)
{
	struct dev_proc p[DEV_MAX];
	int n = read_pids(state, p, DEV_MAX), rc = EXIT_OK;
	char path[PATH_MAX];

	if (n == 0) {
		printf("no cluster recorded in %s\n", state);
		return EXIT_OK;
	}
	/* chunk servers first, etcd last (they revoke their leases there) */
	for (int pass = 0; pass < 2; pass++)
		for (int i = n - 1; i >= 0; i--) {
			bool etcd = strcmp(p[i].name, "etcd") == 0;
			if (etcd != (pass == 1) || !proc_is(p[i].pid, p[i].name))
				continue;
			kill(p[i].pid, SIGTERM);
			int t = 0;
			while (proc_is(p[i].pid, p[i].name) && t < 100) {
				sleep_ms(100);
				t++;
			}
			if (proc_is(p[i].pid, p[i].name)) {
				kill(p[i].pid, SIGKILL);
				printf("%-12s pid %d killed (did not stop in 10 s)\n", p[i].name, (int)p[i].pid);
				rc = EXIT_ERR;
			} else {
				printf("%-12s pid %d stopped\n", p[i].name, (int)p[i].pid);
			}
		}
	snprintf(path, sizeof path, "%s/pids", state);
	unlink(path);
	return rc;
}

static int dev_status(const char *state)
{
	struct dev_proc p[DEV_MAX];
	int n = read_pids(state, p, DEV_MAX), up = 0;

	for (int i = 0; i < n; i++) {
		bool alive = proc_is(p[i].pid, p[i].name);
		up += alive;
		printf("%-12s pid %-8d %s\n", p[i].name, (int)p[i].pid, alive ? "up" : "down");
	}
	if (n == 0)
		printf("no cluster recorded in %s\n", state);
	return n && up == n ? EXIT_OK : EXIT_ERR;
}

/* Path of a program next to this qbd binary, else its bare name. */
static void sibling(const char *prog, char *out, size_t len)
{
	char self[PATH_MAX - 64];
	ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);

	if (l > 0) {
		self[l] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			int w = snprintf(out, len, "%s/%s", self, prog);
			if (w > 0 && (size_t)w < len && access(out, X_OK) == 0)
				return;
		}
	}
	snprintf(out, len, "%s", prog);
}

static int dev_up(const char *state, const char *zones_arg, const char *size,
		  const char *scrub)
{
	struct dev_proc p[DEV_MAX];
	char path[PATH_MAX], url[64], chunkd[PATH_MAX];
	char zones[256];
	int n = 0, nz = 0;
	FILE *f;

	if (mkdir(state, 0755) == -1 && errno != EEXIST) {
		fprintf(stderr, "qbd: mkdir %s: %s\n", state, strerror(errno));
		return EXIT_ERR;
	}
	int old = read_pids(state, p, DEV_MAX);
	for (int i = 0; i < old; i++)
		if (proc_is(p[i].pid, p[i].name)) {
			fprintf(stderr, "qbd: a cluster is already running in %s "
				"(%s pid %d); 'qbd dev down --state %s' first\n", state,
				p[i].name, (int)p[i].pid, state);
			return EXIT_ERR;
		}
	int cport = free_port(), pport = free_port();
	if (cport < 0 || pport < 0) {
		fprintf(stderr, "qbd: no free port on 127.0.0.1\n");
		return EXIT_ERR;
	}
	snprintf(url, sizeof url, "http://127.0.0.1:%d", cport);
	char curl_[80], purl[80], ic[120], ddir[PATH_MAX];
	snprintf(curl_, sizeof curl_, "http://127.0.0.1:%d", cport);
	snprintf(purl, sizeof purl, "http://127.0.0.1:%d", pport);
	snprintf(ic, sizeof ic, "qbd-dev=%s", purl);
	snprintf(ddir, sizeof ddir, "%s/etcd", state);
	char *eargv[] = { "etcd", "--name", "qbd-dev", "--data-dir", ddir,
			  "--listen-client-urls", curl_, "--advertise-client-urls", curl_,
			  "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
			  "--initial-cluster", ic, NULL };
	snprintf(path, sizeof path, "%s/etcd.log", state);
	p[n] = (struct dev_proc){ "etcd", spawn(eargv, path) };
	if (p[n].pid < 0) {
		fprintf(stderr, "qbd: fork: %s\n", strerror(errno));
		return EXIT_ERR;
	}
	n++;
	/* Record PIDs as they start, so dev down can always clean up. */
	snprintf(path, sizeof path, "%s/pids", state);
	f = fopen(path, "we");
	if (!f) {
		fprintf(stderr, "qbd: %s: %s\n", path, strerror(errno));
		kill(p[0].pid, SIGTERM);
		return EXIT_ERR;
	}
	fprintf(f, "etcd %d\n", (int)p[0].pid);
	fflush(f);

	cli_etcd = url;
	struct qbd_meta *m;
	uint64_t cid;
	int ok = 0;
	if (qbd_meta_open(url, &m) < 0) {
		fclose(f);
		return EXIT_ERR;
	}
	for (int t = 0; t < 200 && !ok; t++) {
		ok = qbd_meta_cluster_id(m, true, &cid) == 0;
		if (!ok)
			sleep_ms(100);
	}
	if (!ok) {
		fprintf(stderr, "qbd: etcd did not answer on %s within 20 s (see %s/etcd.log)\n",
			url, state);
		fclose(f);
		qbd_meta_close(m);
		dev_down(state);
		return EXIT_ERR;
	}
	sibling("qbd-chunkd", chunkd, sizeof chunkd);
	/* The cluster secret: every link of the dev cluster authenticates,
	 * as in production. */
	char secret[PATH_MAX];
	snprintf(secret, sizeof secret, "%s/secret", state);
	int sr = qbd_secret_create(secret);
	if (sr < 0 && sr != -EEXIST) {
		fprintf(stderr, "qbd: %s: %s\n", secret, strerror(-sr));
		fclose(f);
		qbd_meta_close(m);
		dev_down(state);
		return EXIT_ERR;
	}
	snprintf(zones, sizeof zones, "%s", zones_arg);
	char *save = NULL;
	for (char *z = strtok_r(zones, ",", &save); z && n < DEV_MAX; z = strtok_r(NULL, ",", &save)) {
		char data[PATH_MAX], listen[64], log[PATH_MAX];
		snprintf(data, sizeof data, "%s/chunk-%s.img", state, z);
		snprintf(listen, sizeof listen, "127.0.0.1:%d", free_port());
		snprintf(log, sizeof log, "%s/chunkd-%s.log", state, z);
		char *cargv[] = { chunkd, "--data", data, "--size", (char *)size,
				  "--listen", listen, "--zone", z, "--etcd", url,
				  "--scrub-rate", (char *)scrub, "--secret-file", secret, NULL };
		snprintf(p[n].name, sizeof p[n].name, "chunkd-%s", z);
		p[n].pid = spawn(cargv, log);
		if (p[n].pid < 0) {
			fprintf(stderr, "qbd: fork: %s\n", strerror(errno));
			break;
		}
		fprintf(f, "%s %d\n", p[n].name, (int)p[n].pid);
		fflush(f);
		n++;
		nz++;
	}
	fclose(f);
	snprintf(path, sizeof path, "%s/env", state);
	f = fopen(path, "w");
	if (f) {
		fprintf(f, "QBD_ETCD=%s\nQBD_SECRET_FILE=%s\n", url, secret);
		fclose(f);
	}
	/* Wait for every chunk server to be alive in etcd. */
	struct qbd_node_info *nodes = NULL;
	size_t nn = 0;
	int alive = 0;
	for (int t = 0; t < 200; t++) {
		alive = 0;
		free(nodes);
		nodes = NULL;
		if (qbd_meta_node_list(m, &nodes, &nn) == 0)
			for (size_t i = 0; i < nn; i++)
				alive += nodes[i].alive;
		if (alive >= nz)
			break;
		sleep_ms(100);
	}
	qbd_meta_close(m);
	if (alive < nz) {
		fprintf(stderr, "qbd: only %d of %d chunk servers came up within 20 s "
			"(see %s/chunkd-*.log)\n", alive, nz, state);
		free(nodes);
		dev_down(state);
		return EXIT_ERR;
	}
	printf("dev cluster up in %s: etcd %s, %d chunk servers\n", state, url, nz);
	for (size_t i = 0; i < nn; i++)
		printf("  zone %-6s %s\n", nodes[i].zone, nodes[i].addr);
	printf("use it with: . %s/env; export QBD_ETCD QBD_SECRET_FILE\n", state);
	free(nodes);
	return EXIT_OK;
}

static const char dev_usage[] =
	"usage: qbd dev up --state DIR [--zones a,b,c] [--size SIZE] [--scrub-rate RATE]\n"
	"       qbd dev down --state DIR\n"
	"       qbd dev status --state DIR\n";

int cmd_dev(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "zones", required_argument, NULL, 'z' },
		{ "size", required_argument, NULL, 'S' },
		{ "scrub-rate", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	/* the chunk servers' default scrub rate unless asked (bench: 0) */
	const char *state = NULL, *zones = "a,b,c", *size = "2G", *scrub = "4M";
	const char *sub;
	int c;

	if (argc < 2) {
		fputs(dev_usage, stderr);
		return EXIT_USAGE;
	}
	sub = argv[1];
	if (strcmp(sub, "--help") == 0) {
		fputs(dev_usage, stdout);
		return EXIT_OK;
	}
	optind = 1;
	while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': state = optarg; break;
		case 'z': zones = optarg; break;
		case 'S': size = optarg; break;
		case 'r': scrub = optarg; break;
		case 'h': fputs(dev_usage, stdout); return EXIT_OK;
		default: fputs(dev_usage, stderr); return EXIT_USAGE;
		}
	}
	if (!state) {
		fprintf(stderr, "qbd dev: --state DIR is required\n%s", dev_usage);
		return EXIT_USAGE;
	}
	if (strcmp(sub, "up") == 0)
		return dev_up(state, zones, size, scrub);
	if (strcmp(sub, "down") == 0)
		return dev_down(state);
	if (strcmp(sub, "status") == 0)
		return dev_status(state);
	fprintf(stderr, "qbd dev: unknown command '%s'\n%s", sub, dev_usage);
	return EXIT_USAGE;
}
