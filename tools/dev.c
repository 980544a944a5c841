/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd dev up|down|status: a development cluster on loopback: an etcd
 * cluster of three members, one per zone (or one member), one
 * qbd-chunkd per zone and one qbd-managerd, started in their own
 * sessions so they outlive the CLI, recorded by PID in STATE/pids and
 * stopped by PID.
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
#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define DEV_MAX 16
#define DEV_ETCD_MAX 5

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

static bool dev_is_etcd(const char *name)
{
	return strncmp(name, "etcd", 4) == 0;
}

/* The program a recorded name runs: etcd-*, chunkd-*, managerd. */
static const char *dev_program(const char *name)
{
	if (dev_is_etcd(name))
		return "etcd";
	return strcmp(name, "managerd") == 0 ? "qbd-managerd" : "qbd-chunkd";
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
 * its comm, or the base name of its argv[0], is etcd / qbd-chunkd /
 * qbd-managerd? */
static bool proc_is(pid_t pid, const char *name)
{
	char comm[64], cmd[PATH_MAX], st[256];
	const char *want = dev_program(name);
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

/* Wait up to 10 s for a process sent SIGTERM to go, then kill it;
 * say which. -1 if it had to be killed. */
static int dev_wait_stopped(const struct dev_proc *p)
{
	for (int t = 0; t < 100 && proc_is(p->pid, p->name); t++)
		sleep_ms(100);
	if (proc_is(p->pid, p->name)) {
		kill(p->pid, SIGKILL);
		printf("%-12s pid %d killed (did not stop in 10 s)\n", p->name, (int)p->pid);
		return -1;
	}
	printf("%-12s pid %d stopped\n", p->name, (int)p->pid);
	return 0;
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
	/* The manager and the chunk servers first (newest first: the
	 * manager, then the chunk servers), one by one, etcd last (they
	 * revoke their leases there); the etcd members all at once, so that
	 * none waits for a quorum the others already took away. */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = n - 1; i >= 0; i--) {
			bool etcd = dev_is_etcd(p[i].name);
			if (etcd != (pass == 1) || !proc_is(p[i].pid, p[i].name))
				continue;
			kill(p[i].pid, SIGTERM);
			if (pass == 0 && dev_wait_stopped(&p[i]) < 0)
				rc = EXIT_ERR;
		}
		for (int i = n - 1; pass == 1 && i >= 0; i--)
			if (dev_is_etcd(p[i].name) && dev_wait_stopped(&p[i]) < 0)
				rc = EXIT_ERR;
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
	char url[DEV_ETCD_MAX * 32]; /* etcd's client URLs, comma-separated */
	int members;                 /* etcd members */
	char secret[PATH_MAX];       /* the cluster secret file */
	struct dev_proc p[DEV_MAX];  /* started so far */
	int n, nz;                   /* processes; of those, chunk servers */
	pid_t manager;               /* qbd-managerd, once started */
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

/* One etcd member: its name (in STATE/pids, its data directory and log)
 * and ports. */
struct dev_member {
	char name[64];
	char ename[64];   /* its etcd --name */
	int cport, pport;
};

/*
 * The members' names and ports: those of STATE/etcd-members when an
 * earlier `dev up` wrote it (the members' data directories record their
 * peer URLs, so a cluster restarts only on the same ports), else new
 * ones, one member per zone of zones_arg (round robin when there are
 * more members than zones), then written there. A single member is
 * "etcd" with its data in STATE/etcd, as before there were several (and
 * its etcd name still qbd-dev, which that data directory records).
 */
static int dev_etcd_members(struct dev_cluster *dc, const char *zones_arg,
			    struct dev_member *mem)
{
	char path[PATH_MAX], zones[256], *save = NULL, *zone[DEV_MAX];
	int nz = 0, n = 0;
	FILE *f;

	snprintf(path, sizeof path, "%s/etcd-members", dc->state);
	if ((f = fopen(path, "re"))) {
		while (n < DEV_ETCD_MAX && fscanf(f, "%63s %d %d", mem[n].name, &mem[n].cport,
						  &mem[n].pport) == 3)
			n++;
		fclose(f);
		if (n != dc->members) {
			fprintf(stderr, "qbd: %s holds an etcd cluster of %d member(s) (%s); "
				"use --etcd-members %d, or another --state\n", dc->state, n,
				path, n);
			return EXIT_ERR;
		}
		return EXIT_OK;
	}
	snprintf(zones, sizeof zones, "%s", zones_arg);
	for (char *z = strtok_r(zones, ",", &save); z && nz < DEV_MAX;
	     z = strtok_r(NULL, ",", &save))
		zone[nz++] = z;
	for (n = 0; n < dc->members; n++) {
		if (dc->members == 1)
			snprintf(mem[n].name, sizeof mem[n].name, "etcd");
		else if (dc->members <= nz)
			snprintf(mem[n].name, sizeof mem[n].name, "etcd-%s", zone[n]);
		else
			snprintf(mem[n].name, sizeof mem[n].name, "etcd-%d", n + 1);
		mem[n].cport = free_port();
		mem[n].pport = free_port();
		if (mem[n].cport < 0 || mem[n].pport < 0) {
			fprintf(stderr, "qbd: no free port on 127.0.0.1\n");
			return EXIT_ERR;
		}
	}
	if (!(f = fopen(path, "we"))) {
		fprintf(stderr, "qbd: %s: %s\n", path, strerror(errno));
		return EXIT_ERR;
	}
	for (n = 0; n < dc->members; n++)
		fprintf(f, "%s %d %d\n", mem[n].name, mem[n].cport, mem[n].pport);
	if (fclose(f) != 0) {
		fprintf(stderr, "qbd: %s: %s\n", path, strerror(errno));
		return EXIT_ERR;
	}
	return EXIT_OK;
}

/* Start the etcd members (a cluster on loopback, each with its data
 * directory under STATE) and open STATE/pids with their PIDs, so that
 * dev down can always clean up. */
static int dev_start_etcd(struct dev_cluster *dc, const char *zones_arg)
{
	struct dev_member mem[DEV_ETCD_MAX];
	char path[PATH_MAX], ic[DEV_ETCD_MAX * 96] = "";
	size_t icl = 0, ul = 0;
	int rc = dev_etcd_members(dc, zones_arg, mem);

	if (rc)
		return rc;
	for (int i = 0; i < dc->members; i++) {
		if (dc->members == 1)
			snprintf(mem[i].ename, sizeof mem[i].ename, "qbd-dev");
		else
			memcpy(mem[i].ename, mem[i].name, sizeof mem[i].ename);
		icl += (size_t)snprintf(ic + icl, sizeof ic - icl, "%s%s=http://127.0.0.1:%d",
					i ? "," : "", mem[i].ename, mem[i].pport);
		ul += (size_t)snprintf(dc->url + ul, sizeof dc->url - ul, "%shttp://127.0.0.1:%d",
				       i ? "," : "", mem[i].cport);
	}
	snprintf(path, sizeof path, "%s/pids", dc->state);
	dc->pids = fopen(path, "we");
	if (!dc->pids) {
		fprintf(stderr, "qbd: %s: %s\n", path, strerror(errno));
		return EXIT_ERR;
	}
	for (int i = 0; i < dc->members; i++) {
		char curl[64], purl[64], ddir[PATH_MAX];
		struct dev_proc *p = &dc->p[dc->n];

		snprintf(curl, sizeof curl, "http://127.0.0.1:%d", mem[i].cport);
		snprintf(purl, sizeof purl, "http://127.0.0.1:%d", mem[i].pport);
		snprintf(ddir, sizeof ddir, "%s/%s", dc->state, mem[i].name);
		char *eargv[] = { "etcd", "--name", mem[i].ename, "--data-dir", ddir,
				  "--listen-client-urls", curl, "--advertise-client-urls", curl,
				  "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
				  "--initial-cluster", ic, "--initial-cluster-state", "new",
				  "--initial-cluster-token", "qbd-dev", NULL };
		snprintf(path, sizeof path, "%s/%s.log", dc->state, mem[i].name);
		static_assert(sizeof p->name == sizeof mem[i].name, "member names fit");
		memcpy(p->name, mem[i].name, sizeof p->name);
		p->pid = spawn(eargv, path);
		if (p->pid < 0) {
			fprintf(stderr, "qbd: fork: %s\n", strerror(errno));
			return EXIT_ERR;
		}
		fprintf(dc->pids, "%s %d\n", p->name, (int)p->pid);
		fflush(dc->pids);
		dc->n++;
	}
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
	int level = qbd_log_level_current;
	uint64_t cid;
	bool ok;

	/* the members are starting: that they do not answer yet is no news */
	qbd_log_set_level(QBD_LOG_ERROR);
	ok = qbd_meta_cluster_id(dc->m, true, &cid) == 0;
	qbd_log_set_level((enum qbd_log_level)level);
	return ok;
}

/* etcd answers, with a quorum (the cluster id is set). */
static int dev_wait_etcd(struct dev_cluster *dc)
{
	cli_etcd = dc->url;
	if (qbd_meta_open(dc->url, &dc->m) < 0)
		return EXIT_ERR;
	if (!dev_wait(dev_etcd_ready, dc)) {
		fprintf(stderr, "qbd: etcd did not answer on %s within 20 s (see %s/etcd*.log)\n",
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

/* One qbd-managerd, recorded in STATE/pids as "managerd"; down_out:
 * its --down-out, or NULL for its default. */
static void dev_start_manager(struct dev_cluster *dc, const char *down_out)
{
	char prog[PATH_MAX], log[PATH_MAX];
	struct dev_proc *p = &dc->p[dc->n];
	char *margv[] = { prog, "--etcd", dc->url, "--secret-file", dc->secret,
			  down_out ? "--down-out" : NULL, (char *)down_out, NULL };

	if (dc->n >= DEV_MAX)
		return;
	cli_sibling_path("qbd-managerd", prog, sizeof prog);
	snprintf(log, sizeof log, "%s/managerd.log", dc->state);
	snprintf(p->name, sizeof p->name, "managerd");
	p->pid = spawn(margv, log);
	if (p->pid < 0) {
		fprintf(stderr, "qbd: fork: %s\n", strerror(errno));
		return;
	}
	fprintf(dc->pids, "%s %d\n", p->name, (int)p->pid);
	fflush(dc->pids);
	dc->n++;
	dc->manager = p->pid;
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

/* The manager still runs once the chunk servers are up (a bad
 * --down-out makes it exit at once: its log says why). */
static int dev_check_manager(const struct dev_cluster *dc)
{
	if (dc->manager > 0 && proc_is(dc->manager, "managerd"))
		return EXIT_OK;
	fprintf(stderr, "qbd: qbd-managerd did not start (see %s/managerd.log)\n", dc->state);
	return EXIT_ERR;
}

static void dev_print_up(const struct dev_cluster *dc, const char *down_out)
{
	printf("dev cluster up in %s: etcd %s (%d member%s), %d chunk servers, a manager "
	       "(down-out %s)\n", dc->state, dc->url, dc->members, dc->members == 1 ? "" : "s",
	       dc->nz, down_out ? down_out : "10m");
	for (size_t i = 0; i < dc->nn; i++)
		printf("  zone %-6s %s\n", dc->nodes[i].zone, dc->nodes[i].addr);
	printf("use it with: . %s/env; export QBD_ETCD QBD_SECRET_FILE\n", dc->state);
}

/* Start etcd and a chunk server per zone, wait until all are up; on a
 * failure after etcd started, stop whatever did start. */
static int dev_up(const char *state, const char *zones_arg, const char *size,
		  const char *scrub, int members, const char *down_out)
{
	struct dev_cluster dc = { .state = state, .members = members };
	int rc;

	if (mkdir(state, 0755) == -1 && errno != EEXIST) {
		fprintf(stderr, "qbd: mkdir %s: %s\n", state, strerror(errno));
		return EXIT_ERR;
	}
	if ((rc = dev_check_stopped(state)))
		return rc;
	if ((rc = dev_start_etcd(&dc, zones_arg))) {
		if (dc.pids) {
			fclose(dc.pids);
			dev_down(state);
		}
		return rc;
	}
	rc = dev_wait_etcd(&dc);
	if (rc == EXIT_OK)
		rc = dev_make_secret(&dc);
	if (rc == EXIT_OK) {
		dev_start_chunkds(&dc, zones_arg, size, scrub);
		dev_start_manager(&dc, down_out);
	}
	fclose(dc.pids);
	if (rc == EXIT_OK) {
		dev_write_env(&dc);
		rc = dev_wait_chunkds(&dc);
	}
	if (rc == EXIT_OK)
		rc = dev_check_manager(&dc);
	qbd_meta_close(dc.m);
	if (rc == EXIT_OK)
		dev_print_up(&dc, down_out);
	else if (dc.m)
		dev_down(state);
	free(dc.nodes);
	return rc;
}

static const char dev_usage[] =
	"usage: qbd dev up --state DIR [--zones a,b,c] [--size SIZE] [--scrub-rate RATE]\n"
	"                  [--etcd-members N] [--down-out DURATION]\n"
	"       (N etcd members, default 3, one per zone; 1 for a single one;\n"
	"       --down-out: the manager's, e.g. 30s; default its own, 10m)\n"
	"       qbd dev down --state DIR\n"
	"       qbd dev status --state DIR\n";

int cmd_dev(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "zones", required_argument, NULL, 'z' },
		{ "size", required_argument, NULL, 'S' },
		{ "scrub-rate", required_argument, NULL, 'r' },
		{ "etcd-members", required_argument, NULL, 'e' },
		{ "down-out", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	/* the chunk servers' default scrub rate unless asked (bench: 0) */
	const char *state = NULL, *zones = "a,b,c", *size = "2G", *scrub = "4M";
	const char *down_out = NULL;
	const char *sub;
	int c, members = 3;
	char *end;

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
		case 'd': down_out = optarg; break;
		case 'e':
			members = (int)strtol(optarg, &end, 10);
			if (end == optarg || *end || members < 1 || members > DEV_ETCD_MAX) {
				fprintf(stderr, "qbd dev: --etcd-members: want 1 to %d\n",
					DEV_ETCD_MAX);
				return EXIT_USAGE;
			}
			break;
		case 'h': fputs(dev_usage, stdout); return EXIT_OK;
		default: fputs(dev_usage, stderr); return EXIT_USAGE;
		}
	}
	if (!state) {
		fprintf(stderr, "qbd dev: --state DIR is required\n%s", dev_usage);
		return EXIT_USAGE;
	}
	if (strcmp(sub, "up") == 0)
		return dev_up(state, zones, size, scrub, members, down_out);
	if (strcmp(sub, "down") == 0)
		return dev_down(state);
	if (strcmp(sub, "status") == 0)
		return dev_status(state);
	fprintf(stderr, "qbd dev: unknown command '%s'\n%s", sub, dev_usage);
	return EXIT_USAGE;
}
