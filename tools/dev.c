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

/* The first line of /proc/PID/FILE into buf ("" when unreadable). */
static bool proc_read_line(pid_t pid, const char *file, char *buf, size_t len)
{
	char path[64];
	FILE *f;

	buf[0] = '\0';
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
	if (!(f = fopen(path, "r")))
		return false;
	if (!fgets(buf, (int)len, f))
		buf[0] = '\0';
	fclose(f);
	return true;
}

/* Is pid alive (not a zombie) and still the program it was started as:
 * its comm, or the base name of its argv[0], is etcd / qbd-chunkd? */
static bool proc_is(pid_t pid, const char *name)
{
	char comm[64], cmd[PATH_MAX], st[256];
	const char *want = strncmp(name, "etcd", 4) == 0 ? "etcd" : "qbd-chunkd";
	const char *base, *paren;

	if (pid <= 1)
		return false;
	waitpid(pid, NULL, WNOHANG); /* reap it if it is our own child */
	if (!proc_read_line(pid, "stat", st, sizeof st))
		return false;
	paren = strrchr(st, ')');
	if (!paren || paren[1] != ' ' || paren[2] == 'Z' || paren[2] == 'X')
		return false;
	proc_read_line(pid, "comm", comm, sizeof comm);
	comm[strcspn(comm, "\n")] = '\0';
	if (strcmp(comm, want) == 0)
		return true;
	proc_read_line(pid, "cmdline", cmd, sizeof cmd);
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

/* A development cluster being started: what dev_up's steps share. */
struct dev_cluster {
	const char *state;           /* the --state directory */
	char url[64];                /* etcd's client URL */
	char secret[PATH_MAX];       /* the cluster secret file */
	struct dev_proc p[DEV_MAX];  /* started so far */
	int n, nz;                   /* processes; of those, chunk servers */
	int alive;                   /* chunk servers alive at the last look */
	FILE *pids;                  /* STATE/pids, each PID as it starts */
	struct qbd_meta *m;
	struct qbd_node_info *nodes; /* as etcd lists them once all are up */
	size_t nn;
};

/* Refuse to start over a cluster of STATE that still runs. */
static int dev_check_stopped(const char *state)
{
	struct dev_proc p[DEV_MAX];
	int old = read_pids(state, p, DEV_MAX);

	for (int i = 0; i < old; i++)
		if (proc_is(p[i].pid, p[i].name)) {
			fprintf(stderr, "qbd: a cluster is already running in %s "
				"(%s pid %d); 'qbd dev down --state %s' first\n", state,
				p[i].name, (int)p[i].pid, state);
			return EXIT_ERR;
		}
	return EXIT_OK;
}

/* Start etcd on two free loopback ports and open STATE/pids with its
 * PID, so that dev down can always clean up. */
static int dev_start_etcd(struct dev_cluster *dc)
{
	char path[PATH_MAX], purl[80], ic[120], ddir[PATH_MAX];
	int cport = free_port(), pport = free_port();

	if (cport < 0 || pport < 0) {
		fprintf(stderr, "qbd: no free port on 127.0.0.1\n");
		return EXIT_ERR;
	}
	snprintf(dc->url, sizeof dc->url, "http://127.0.0.1:%d", cport);
	snprintf(purl, sizeof purl, "http://127.0.0.1:%d", pport);
	snprintf(ic, sizeof ic, "qbd-dev=%s", purl);
	snprintf(ddir, sizeof ddir, "%s/etcd", dc->state);
	char *eargv[] = { "etcd", "--name", "qbd-dev", "--data-dir", ddir,
			  "--listen-client-urls", dc->url, "--advertise-client-urls", dc->url,
			  "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
			  "--initial-cluster", ic, NULL };
	snprintf(path, sizeof path, "%s/etcd.log", dc->state);
	dc->p[0] = (struct dev_proc){ "etcd", spawn(eargv, path) };
	if (dc->p[0].pid < 0) {
		fprintf(stderr, "qbd: fork: %s\n", strerror(errno));
		return EXIT_ERR;
	}
	dc->n = 1;
	snprintf(path, sizeof path, "%s/pids", dc->state);
	dc->pids = fopen(path, "we");
	if (!dc->pids) {
		fprintf(stderr, "qbd: %s: %s\n", path, strerror(errno));
		kill(dc->p[0].pid, SIGTERM);
		return EXIT_ERR;
	}
	fprintf(dc->pids, "etcd %d\n", (int)dc->p[0].pid);
	fflush(dc->pids);
	return EXIT_OK;
}

/* Poll ready(dc) every 100 ms for up to 20 s. */
static bool dev_wait(bool (*ready)(struct dev_cluster *), struct dev_cluster *dc)
{
	for (int t = 0; t < 200; t++) {
		if (ready(dc))
			return true;
		sleep_ms(100);
	}
	return false;
}

static bool dev_etcd_ready(struct dev_cluster *dc)
{
	uint64_t cid;

	return qbd_meta_cluster_id(dc->m, true, &cid) == 0;
}

/* etcd answers (and the cluster id is set). */
static int dev_wait_etcd(struct dev_cluster *dc)
{
	cli_etcd = dc->url;
	if (qbd_meta_open(dc->url, &dc->m) < 0)
		return EXIT_ERR;
	if (!dev_wait(dev_etcd_ready, dc)) {
		fprintf(stderr, "qbd: etcd did not answer on %s within 20 s (see %s/etcd.log)\n",
			dc->url, dc->state);
		return EXIT_ERR;
	}
	return EXIT_OK;
}

/* The cluster secret: every link of the dev cluster authenticates, as in
 * production. A secret from an earlier run is kept. */
static int dev_make_secret(struct dev_cluster *dc)
{
	snprintf(dc->secret, sizeof dc->secret, "%s/secret", dc->state);
	int r = qbd_secret_create(dc->secret);
	if (r < 0 && r != -EEXIST) {
		fprintf(stderr, "qbd: %s: %s\n", dc->secret, strerror(-r));
		return EXIT_ERR;
	}
	return EXIT_OK;
}

/* One qbd-chunkd per zone of zones_arg ("a,b,c"), each recorded in
 * STATE/pids as it starts. */
static void dev_start_chunkds(struct dev_cluster *dc, const char *zones_arg,
			      const char *size, const char *scrub)
{
	char chunkd[PATH_MAX], zones[256], *save = NULL;

	cli_sibling_path("qbd-chunkd", chunkd, sizeof chunkd);
	snprintf(zones, sizeof zones, "%s", zones_arg);
	for (char *z = strtok_r(zones, ",", &save); z && dc->n < DEV_MAX;
	     z = strtok_r(NULL, ",", &save)) {
		struct dev_proc *p = &dc->p[dc->n];
		char data[PATH_MAX], listen[64], log[PATH_MAX];

		snprintf(data, sizeof data, "%s/chunk-%s.img", dc->state, z);
		snprintf(listen, sizeof listen, "127.0.0.1:%d", free_port());
		snprintf(log, sizeof log, "%s/chunkd-%s.log", dc->state, z);
		char *cargv[] = { chunkd, "--data", data, "--size", (char *)size,
				  "--listen", listen, "--zone", z, "--etcd", dc->url,
				  "--scrub-rate", (char *)scrub, "--secret-file", dc->secret, NULL };
		snprintf(p->name, sizeof p->name, "chunkd-%s", z);
		p->pid = spawn(cargv, log);
		if (p->pid < 0) {
			fprintf(stderr, "qbd: fork: %s\n", strerror(errno));
			break;
		}
		fprintf(dc->pids, "%s %d\n", p->name, (int)p->pid);
		fflush(dc->pids);
		dc->n++;
		dc->nz++;
	}
}

/* STATE/env: what a shell sources to use the cluster. */
static void dev_write_env(const struct dev_cluster *dc)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof path, "%s/env", dc->state);
	f = fopen(path, "w");
	if (f) {
		fprintf(f, "QBD_ETCD=%s\nQBD_SECRET_FILE=%s\n", dc->url, dc->secret);
		fclose(f);
	}
}

static bool dev_chunkds_ready(struct dev_cluster *dc)
{
	free(dc->nodes);
	dc->nodes = NULL;
	dc->alive = 0;
	if (qbd_meta_node_list(dc->m, &dc->nodes, &dc->nn) == 0)
		for (size_t i = 0; i < dc->nn; i++)
			dc->alive += dc->nodes[i].alive;
	return dc->alive >= dc->nz;
}

/* Every chunk server started is alive in etcd. */
static int dev_wait_chunkds(struct dev_cluster *dc)
{
	if (!dev_wait(dev_chunkds_ready, dc)) {
		fprintf(stderr, "qbd: only %d of %d chunk servers came up within 20 s "
			"(see %s/chunkd-*.log)\n", dc->alive, dc->nz, dc->state);
		return EXIT_ERR;
	}
	return EXIT_OK;
}

static void dev_print_up(const struct dev_cluster *dc)
{
	printf("dev cluster up in %s: etcd %s, %d chunk servers\n", dc->state, dc->url,
	       dc->nz);
	for (size_t i = 0; i < dc->nn; i++)
		printf("  zone %-6s %s\n", dc->nodes[i].zone, dc->nodes[i].addr);
	printf("use it with: . %s/env; export QBD_ETCD QBD_SECRET_FILE\n", dc->state);
}

/* Start etcd and a chunk server per zone, wait until all are up; on a
 * failure after etcd started, stop whatever did start. */
static int dev_up(const char *state, const char *zones_arg, const char *size,
		  const char *scrub)
{
	struct dev_cluster dc = { .state = state };
	int rc;

	if (mkdir(state, 0755) == -1 && errno != EEXIST) {
		fprintf(stderr, "qbd: mkdir %s: %s\n", state, strerror(errno));
		return EXIT_ERR;
	}
	if ((rc = dev_check_stopped(state)) || (rc = dev_start_etcd(&dc)))
		return rc;
	rc = dev_wait_etcd(&dc);
	if (rc == EXIT_OK)
		rc = dev_make_secret(&dc);
	if (rc == EXIT_OK)
		dev_start_chunkds(&dc, zones_arg, size, scrub);
	fclose(dc.pids);
	if (rc == EXIT_OK) {
		dev_write_env(&dc);
		rc = dev_wait_chunkds(&dc);
	}
	qbd_meta_close(dc.m);
	if (rc == EXIT_OK)
		dev_print_up(&dc);
	else if (dc.m)
		dev_down(state);
	free(dc.nodes);
	return rc;
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
