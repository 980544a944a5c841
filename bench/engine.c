/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/engine: the engine against the disk under it, no network. For
 * each pattern, fio (its io_uring engine, direct=1) and the engine's own
 * driver on the same blocks of the same file: the engine's store, whose
 * working set's chunk data fio reads and writes directly (from the
 * store's data offset on, the working set's size), for the same time,
 * alternately (raw, engine, engine, raw, ...) so that drift in a noisy
 * machine hits both; then each figure, each ratio engine / raw with its
 * goal, and the line "engine: N/M targets met" (exit status 1 when one is
 * missed, 2 when the benchmark cannot run).
 *
 *   engine [--dir DIR] [--size MIB] [--time S] [--reps N] [--quick]
 *          [--only NAME] [--no-regbufs] [--no-raw] [--keep] [-v]
 *
 * Defaults: 1024 MiB, 0.5 s per run after a 0.2 s ramp, 21 runs of
 * each side (many short runs: the disk of a shared machine changes
 * speed from one second to the next, by 20% and more between two fio
 * runs in a row); --quick: 256 MiB, 0.5 s, 1 run (a smoke run, not a
 * measurement).
 * A figure is the median of the runs; a ratio, the median of the ratios
 * of the runs (each run of the engine against the raw run next to it).
 * The engine's I/O goes through its registered buffer pool and fio's
 * through registered buffers (fixedbufs), both with the file registered:
 * the same kernel paths (--no-regbufs: neither uses registered buffers).
 * --no-raw skips fio (to profile the engine alone).
 *
 * The file: DIR (default $QBD_BENCH_DIR, else /var/tmp: a disk, not
 * tmpfs) gets qbd-bench-engine.store, created sparse by the engine as it
 * creates a store, then written whole once through the engine with 1 MiB
 * writes, so that every pattern runs on allocated, written blocks: the
 * steady state of a store, where a write is an overwrite (writes into
 * holes would measure the filesystem's block allocation). The same
 * blocks for both sides because two files on one virtual disk differ in
 * speed by their place (measured: fio alone did about 60,000 4 KiB
 * random writes per second on one file and 44,000 on another, made the
 * same way). The read patterns run first: fio's writes leave blocks the
 * engine's checksums do not know, which its own writes (whole blocks)
 * then overwrite without reading.
 *
 * The engine's driver works as the chunk server does: one thread, the
 * engine's eventfd in poll(2), qbd_engine_poll, and each completion's
 * callback submits the next request (queued, and submitted by the poll
 * pass in small groups). Offsets are uniform over the working
 * set (random) or in order (sequential), as fio's; a write carries the
 * chunk's expected and new version, as the replication layer's.
 *
 * Build and run: make bench-engine (BENCH_ENGINE_ARGS=--quick for a
 * smoke run). Figures and what limits them: docs/benchmarks.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "engine/engine.h"
#include "engine/internal.h"

#define CHUNK QBD_ENGINE_DEFAULT_CHUNK
#define MAXQD 64
#define MAXREPS 31            /* runs of each side at most */

enum metric { M_IOPS = 1, M_BW, M_LAT };

struct pattern {
	const char *name;
	const char *fio_rw;     /* fio's rw= */
	uint32_t bs;
	unsigned qd;
	bool write, random;
	enum metric metric;
	double goal;            /* engine / raw: at least (IOPS, BW), at most (LAT) */
};

/* Reads first: fio's writes leave data the engine's checksums do not
 * know, which the engine's writes (whole blocks) overwrite unread. */
static const struct pattern patterns[] = {
	{ "4k-randread-qd32", "randread", 4096, 32, false, true, M_IOPS, 0.90 },
	{ "1m-read-qd4", "read", 1u << 20, 4, false, false, M_BW, 0.95 },
	{ "4k-randwrite-qd32", "randwrite", 4096, 32, true, true, M_IOPS, 0.90 },
	{ "1m-write-qd4", "write", 1u << 20, 4, true, false, M_BW, 0.95 },
	{ "4k-randwrite-qd1", "randwrite", 4096, 1, true, true, M_LAT, 1.25 },
};
#define NPAT (sizeof patterns / sizeof patterns[0])

struct result {
	double iops, bw;        /* bw in bytes per second */
	double lat_us;          /* mean, submission to completion */
	double cpu_us;          /* CPU time per I/O (user + system) */
	double writes_per_io;   /* engine: device writes issued per request */
	double syncs_per_io;
};

static struct {
	const char *dir;
	uint64_t size;          /* working set, bytes */
	double time, ramp;      /* seconds per run; not counted at the start */
	unsigned reps;
	bool regbufs, keep, verbose, no_raw;
	const char *only;
	char store_path[512];
	uint64_t data_off;      /* of the store: the working set's chunks from there on */
} cfg;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_now_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "bench/engine: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(2);
}

/* ---- fio ---- */

/* Run fio with argv (NULL-terminated); its JSON output into a malloc'd
 * string. */
static char *fio_run(char **argv)
{
	int out[2];
	pid_t pid;
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap);
	int status;

	if (!buf || pipe(out) == -1)
		die("pipe: %s", strerror(errno));
	if (cfg.verbose) {
		fprintf(stderr, "+");
		for (char **a = argv; *a; a++)
			fprintf(stderr, " %s", *a);
		fprintf(stderr, "\n");
	}
	pid = fork();
	if (pid == -1)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(out[1], 1);
		close(out[0]);
		close(out[1]);
		if (!cfg.verbose) {
			int null = open("/dev/null", O_WRONLY);
			if (null != -1)
				dup2(null, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	for (;;) {
		ssize_t n;

		if (len + 1 >= cap && !(buf = realloc(buf, cap *= 2)))
			die("out of memory");
		n = read(out[0], buf + len, cap - len - 1);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = 0;
	close(out[0]);
	if (waitpid(pid, &status, 0) == -1 || !WIFEXITED(status) || WEXITSTATUS(status))
		die("fio failed (status %d%s); run with -v to see why", status,
		    WIFEXITED(status) && WEXITSTATUS(status) == 127 ? ": not installed?" : "");
	return buf;
}

static double json_num(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		die("fio output without %s", key);
	return json_object_get_double(v);
}

/* fio's figures of the one job in its JSON output. */
static void fio_parse(const char *out, bool write, struct result *res)
{
	const char *start = strchr(out, '{');
	struct json_object *root = start ? json_tokener_parse(start) : NULL;
	struct json_object *jobs, *job, *sec, *lat;
	double runtime_ms, usr, sys;

	if (!root || !json_object_object_get_ex(root, "jobs", &jobs) ||
	    !(job = json_object_array_get_idx(jobs, 0)) ||
	    !json_object_object_get_ex(job, write ? "write" : "read", &sec) ||
	    !json_object_object_get_ex(sec, "lat_ns", &lat))
		die("cannot parse fio's output");
	res->iops = json_num(sec, "iops");
	res->bw = json_num(sec, "bw_bytes");
	res->lat_us = json_num(lat, "mean") / 1e3;
	runtime_ms = json_num(sec, "runtime");
	usr = json_num(job, "usr_cpu");
	sys = json_num(job, "sys_cpu");
	res->cpu_us = res->iops > 0 ? (usr + sys) / 100.0 * runtime_ms * 1e3 /
				      (res->iops * runtime_ms / 1e3) : 0;
	json_object_put(root);
}

static void fio_pattern(const struct pattern *pt, double seconds, double ramp, struct result *res)
{
	if (cfg.no_raw) { /* profiling the engine alone: raw counts as equal */
		memset(res, 0, sizeof *res);
		return;
	}
	char filename[600], offset[40], size[32], rw[32], bs[32], qd[32], rt[32], rp[32];
	char *argv[32];
	unsigned n = 0;
	char *out;

	snprintf(filename, sizeof filename, "--filename=%s", cfg.store_path);
	snprintf(offset, sizeof offset, "--offset=%" PRIu64, cfg.data_off);
	snprintf(size, sizeof size, "--size=%" PRIu64, cfg.size);
	snprintf(rw, sizeof rw, "--rw=%s", pt->fio_rw);
	snprintf(bs, sizeof bs, "--bs=%u", pt->bs);
	snprintf(qd, sizeof qd, "--iodepth=%u", pt->qd);
	/* in ms: fio reads "0.5" as 5 s and "0.250" as 0 */
	snprintf(rt, sizeof rt, "--runtime=%ums", (unsigned)(seconds * 1000 + 0.5));
	snprintf(rp, sizeof rp, "--ramp_time=%ums", (unsigned)(ramp * 1000 + 0.5));
	argv[n++] = "fio";
	argv[n++] = "--output-format=json";
	argv[n++] = "--name=raw";
	argv[n++] = filename;
	argv[n++] = offset;
	argv[n++] = size;
	argv[n++] = "--ioengine=io_uring";
	argv[n++] = "--direct=1";
	argv[n++] = "--registerfiles=1";
	if (cfg.regbufs)
		argv[n++] = "--fixedbufs=1";
	argv[n++] = rw;
	argv[n++] = bs;
	argv[n++] = qd;
	argv[n++] = "--time_based";
	argv[n++] = rt;
	argv[n++] = rp;
	argv[n++] = "--norandommap";
	argv[n++] = "--randrepeat=0";
	argv[n] = NULL;
	out = fio_run(argv);
	fio_parse(out, pt->write, res);
	free(out);
}

/* ---- the engine's driver ---- */

struct eio {
	struct qbd_engine_req req;
	uint64_t t0;
	uint8_t *buf;
};

static struct {
	struct qbd_engine *e;
	const struct pattern *pt;
	uint64_t nch, *ver;
	uint64_t seq_off, rng;
	uint64_t count_from, deadline;
	unsigned inflight;
	uint64_t ios, lat_sum, all_ios;
	uint64_t writes, syncs;     /* issued by the engine (io_hook) while counting */
	double cpu0, cpu1;          /* CPU time at the window's start and end (0: not yet) */
	bool counting;
	struct eio io[MAXQD];
} d;

static uint64_t rnd(void)
{
	d.rng ^= d.rng << 13;
	d.rng ^= d.rng >> 7;
	d.rng ^= d.rng << 17;
	return d.rng;
}

static void count_hook(void *user, const struct qbd_engine_io *io)
{
	(void)user;
	if (!d.counting || io->done)
		return;
	if (io->kind == QBD_ENGINE_IO_WRITE || io->kind == QBD_ENGINE_IO_ZERO)
		d.writes++;
	else
		d.syncs++;
}

static void eio_cb(struct qbd_engine_req *r);

static void eio_issue(struct eio *io, uint32_t bs, bool write, uint64_t off)
{
	struct qbd_engine_req *r = &io->req;
	uint64_t ch = off / CHUNK;

	memset(r, 0, sizeof *r);
	r->op = write ? QBD_ENGINE_WRITE : QBD_ENGINE_READ;
	r->volume = 1;
	r->chunk = ch;
	r->offset = (uint32_t)(off % CHUNK);
	r->length = bs;
	/* small requests in consecutive 4 KiB pieces of the first buffer, as
	 * fio lays out its iodepth buffers */
	r->buf = bs < CHUNK ? d.io[0].buf + (size_t)(io - d.io) * bs : io->buf;
	if (write) {
		r->expected_version = d.ver[ch];
		r->new_version = ++d.ver[ch];
	}
	r->cb = eio_cb;
	r->user = io;
	io->t0 = now_ns();
	d.inflight++;
	qbd_engine_submit(d.e, r);
}

static uint64_t next_off(void)
{
	const struct pattern *pt = d.pt;
	uint64_t off;

	if (pt->random)
		return rnd() % (cfg.size / pt->bs) * pt->bs;
	off = d.seq_off;
	d.seq_off = (d.seq_off + pt->bs) % cfg.size;
	return off;
}

static void eio_cb(struct qbd_engine_req *r)
{
	struct eio *io = r->user;
	uint64_t t = now_ns();

	if (r->res != (int)r->length)
		die("engine %s: %s", r->op == QBD_ENGINE_WRITE ? "write" : "read",
		    r->res < 0 ? strerror(-r->res) : "short");
	d.inflight--;
	d.all_ios++;
	/* CPU over the counted window only (not the ramp, not the drain) */
	if (t >= d.count_from && !d.cpu0)
		d.cpu0 = cpu_now_us();
	if (t > d.deadline && !d.cpu1)
		d.cpu1 = cpu_now_us();
	if (io->t0 >= d.count_from && t <= d.deadline) {
		d.ios++;
		d.lat_sum += t - io->t0;
	}
	if (t < d.deadline)
		eio_issue(io, d.pt->bs, d.pt->write, next_off());
}

static void eng_pump(void)
{
	struct pollfd p = { .fd = qbd_engine_event_fd(d.e), .events = POLLIN };

	if (poll(&p, 1, 1000) == -1 && errno != EINTR)
		die("poll: %s", strerror(errno));
	qbd_engine_poll(d.e);
}

static void eng_drain(void)
{
	while (d.inflight)
		eng_pump();
}

static void eng_flush_cb(struct qbd_engine_req *r)
{
	*(bool *)r->user = true;
}

static void eng_flush(void)
{
	struct qbd_engine_req r = { .op = QBD_ENGINE_FLUSH, .cb = eng_flush_cb };
	bool done = false;

	r.user = &done;
	qbd_engine_submit(d.e, &r);
	while (!done)
		eng_pump();
	if (r.res < 0)
		die("engine flush: %s", strerror(-r.res));
}

static void eng_open(void)
{
	struct qbd_engine_opts o = {
		.path = cfg.store_path,
		/* the working set's chunks, their metadata, the log, room */
		.create_size = (d.nch + 4) * (uint64_t)(CHUNK + 4096) + (4u << 20),
		.al_chunks = (unsigned)QBD_MAX(d.nch, 1024),
		.io_hook = count_hook,
	};

	if (cfg.regbufs) {
		o.buffers = MAXQD;
		o.buffer_size = CHUNK;
	}
	if (qbd_engine_open(&o, &d.e) < 0)
		die("cannot open the engine's store %s", cfg.store_path);
	for (unsigned i = 0; i < MAXQD; i++) {
		d.io[i].buf = cfg.regbufs ? qbd_engine_buf_get(d.e) : NULL;
		if (!d.io[i].buf && posix_memalign((void **)&d.io[i].buf, 4096, CHUNK))
			die("out of memory");
		memset(d.io[i].buf, 0x5a ^ (int)i, CHUNK);
	}
}

static void eng_close(void)
{
	for (unsigned i = 0; i < MAXQD; i++) {
		if (cfg.regbufs)
			qbd_engine_buf_put(d.e, d.io[i].buf);
		else
			free(d.io[i].buf);
		d.io[i].buf = NULL;
	}
	qbd_engine_close(d.e);
	d.e = NULL;
}

/* Write every chunk of the working set whole, 8 at a time, then FLUSH
 * (deadline 0: the callbacks submit nothing more). */
static void eng_precondition(void)
{
	d.deadline = 0;
	for (uint64_t ch = 0; ch < d.nch;) {
		for (unsigned i = 0; i < 8 && ch < d.nch; i++, ch++)
			eio_issue(&d.io[i], CHUNK, true, ch * CHUNK);
		eng_drain();
	}
	eng_flush();
}

static void eng_pattern(const struct pattern *pt, double seconds, double ramp, struct result *res)
{
	uint64_t t0 = now_ns(), start;
	double span;

	d.pt = pt;
	d.ios = d.lat_sum = d.writes = d.syncs = d.all_ios = 0;
	d.cpu0 = d.cpu1 = 0;
	d.count_from = t0 + (uint64_t)(ramp * 1e9);
	d.deadline = d.count_from + (uint64_t)(seconds * 1e9);
	d.counting = true;
	for (unsigned i = 0; i < pt->qd; i++)
		eio_issue(&d.io[i], pt->bs, pt->write, next_off());
	eng_drain();
	d.counting = false;
	start = d.count_from;
	span = (double)(d.deadline - start) / 1e9;
	res->iops = (double)d.ios / span;
	res->bw = res->iops * pt->bs;
	res->lat_us = d.ios ? (double)d.lat_sum / (double)d.ios / 1e3 : 0;
	if (!d.cpu1)
		d.cpu1 = cpu_now_us();
	/* the I/Os completed in the window: the counted ones, near enough */
	res->cpu_us = d.ios && d.cpu0 ? (d.cpu1 - d.cpu0) / (double)d.ios : 0;
	res->writes_per_io = d.all_ios ? (double)d.writes / (double)d.all_ios : 0;
	res->syncs_per_io = d.all_ios ? (double)d.syncs / (double)d.all_ios : 0;
}

/* Where the store's chunk data starts (the superblock's data offset,
 * docs/design.md): slot i holds the working set's chunk i, as the
 * precondition wrote them in order into a new store. */
static uint64_t store_data_off(void)
{
	struct eng_super sb;
	int fd = open(cfg.store_path, O_RDONLY);

	if (fd == -1 || pread(fd, &sb, sizeof sb, 0) != (ssize_t)sizeof sb ||
	    sb.magic != ENG_MAGIC_SB)
		die("%s: no superblock", cfg.store_path);
	close(fd);
	return sb.data_off;
}

/* ---- report ---- */

static double metric_of(const struct pattern *pt, const struct result *r)
{
	return pt->metric == M_IOPS ? r->iops : pt->metric == M_BW ? r->bw / 1048576.0 : r->lat_us;
}

static const char *metric_name(const struct pattern *pt)
{
	return pt->metric == M_IOPS ? "IOPS" : pt->metric == M_BW ? "MiB/s" : "mean lat us";
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static const char *fs_name(const char *dir)
{
	struct statfs s;

	if (statfs(dir, &s) == -1)
		return "?";
	switch ((unsigned long)s.f_type) {
	case EXT4_SUPER_MAGIC: return "ext4";
	case XFS_SUPER_MAGIC: return "xfs";
	case BTRFS_SUPER_MAGIC: return "btrfs";
	case TMPFS_MAGIC: return "tmpfs";
	default: return "other";
	}
}

static void loadavg(char *buf, size_t len)
{
	FILE *f = fopen("/proc/loadavg", "r");

	buf[0] = 0;
	if (f) {
		if (fgets(buf, (int)len, f)) {
			/* the three averages only */
			char *p = buf;
			for (int i = 0; i < 3 && p; i++)
				p = strchr(p + 1, ' ');
			if (p)
				*p = 0;
		}
		fclose(f);
	}
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [--dir DIR] [--size MIB] [--time S] [--reps N] [--quick] "
		"[--only NAME] [--no-regbufs] [--no-raw] [--keep] [-v]\n  patterns:", argv0);
	for (unsigned i = 0; i < NPAT; i++)
		fprintf(stderr, " %s", patterns[i].name);
	fprintf(stderr, "\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct result raw[NPAT][MAXREPS], eng[NPAT][MAXREPS];
	unsigned met = 0, total = 0;
	char load0[64], load1[64];
	struct statvfs vfs;
	bool quick = false;
	double mib = 1024;

	cfg.dir = getenv("QBD_BENCH_DIR") ? getenv("QBD_BENCH_DIR") : "/var/tmp";
	cfg.time = 0.5;
	cfg.reps = 21;
	cfg.regbufs = true;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			cfg.dir = argv[++i];
		else if (!strcmp(argv[i], "--size") && i + 1 < argc)
			mib = atof(argv[++i]);
		else if (!strcmp(argv[i], "--time") && i + 1 < argc)
			cfg.time = atof(argv[++i]);
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			cfg.reps = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--only") && i + 1 < argc)
			cfg.only = argv[++i];
		else if (!strcmp(argv[i], "--quick"))
			quick = true;
		else if (!strcmp(argv[i], "--no-regbufs"))
			cfg.regbufs = false;
		else if (!strcmp(argv[i], "--no-raw"))
			cfg.no_raw = true;
		else if (!strcmp(argv[i], "--keep"))
			cfg.keep = true;
		else if (!strcmp(argv[i], "-v"))
			cfg.verbose = true;
		else
			usage(argv[0]);
	}
	if (quick) {
		mib = QBD_MIN(mib, 256);
		cfg.time = QBD_MIN(cfg.time, 1);
		cfg.reps = 1;
	}
	cfg.ramp = 0.2;
	if (cfg.reps < 1 || cfg.reps > MAXREPS || cfg.time <= 0 || mib < 16)
		usage(argv[0]);
	cfg.size = (uint64_t)mib << 20;
	d.nch = cfg.size / CHUNK;
	d.ver = calloc(d.nch, sizeof *d.ver);
	d.rng = 88172645463325252ull;
	if (!strcmp(fs_name(cfg.dir), "tmpfs"))
		die("%s is tmpfs: the benchmark needs a disk (--dir, QBD_BENCH_DIR)", cfg.dir);
	if (statvfs(cfg.dir, &vfs) == -1)
		die("%s: %s", cfg.dir, strerror(errno));
	if ((uint64_t)vfs.f_bavail * vfs.f_frsize < 2 * cfg.size + (256u << 20))
		die("%s: not enough free space for 2 x %.0f MiB", cfg.dir, mib);
	snprintf(cfg.store_path, sizeof cfg.store_path, "%s/qbd-bench-engine.store", cfg.dir);
	unlink(cfg.store_path);
	qbd_log_level_current = QBD_LOG_WARN;
	signal(SIGPIPE, SIG_IGN);

	loadavg(load0, sizeof load0);
	printf("bench/engine: %.0f MiB working sets in %s (%s), O_DIRECT, %g s per run "
	       "(+%g s ramp), %u run%s each, raw = fio io_uring (registered file%s)%s\n",
	       mib, cfg.dir, fs_name(cfg.dir), cfg.time, cfg.ramp, cfg.reps,
	       cfg.reps == 1 ? "" : "s", cfg.regbufs ? ", fixed buffers" : "",
	       quick ? " [quick]" : "");
	{
		struct utsname u;
		char model[128] = "?", line[256];
		FILE *f = fopen("/proc/cpuinfo", "r");

		while (f && fgets(line, sizeof line, f))
			if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
				snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
				model[strcspn(model, "\n")] = 0;
				break;
			}
		if (f)
			fclose(f);
		uname(&u);
		printf("machine: %ld CPUs (%s), Linux %s; ", sysconf(_SC_NPROCESSORS_ONLN),
		       model, u.release);
		fflush(stdout);
		if (system("fio --version") != 0)
			die("fio is not installed");
	}
	printf("load average at start: %s\n", load0);
	fflush(stdout);
	eng_open();
	eng_precondition();
	cfg.data_off = store_data_off();

	for (unsigned p = 0; p < NPAT; p++) {
		const struct pattern *pt = &patterns[p];
		double rv[MAXREPS], ev[MAXREPS], ratio[MAXREPS], rmed, emed, q;
		bool ok;

		if (cfg.only && strcmp(cfg.only, pt->name))
			continue;
		for (unsigned k = 0; k < cfg.reps; k++) {
			/* raw, engine; engine, raw; ...: drift hits both */
			if (k % 2 == 0) {
				fio_pattern(pt, cfg.time, cfg.ramp, &raw[p][k]);
				eng_pattern(pt, cfg.time, cfg.ramp, &eng[p][k]);
			} else {
				eng_pattern(pt, cfg.time, cfg.ramp, &eng[p][k]);
				fio_pattern(pt, cfg.time, cfg.ramp, &raw[p][k]);
			}
			rv[k] = metric_of(pt, &raw[p][k]);
			ev[k] = metric_of(pt, &eng[p][k]);
			ratio[k] = rv[k] > 0 ? ev[k] / rv[k] : 0;
			if (cfg.verbose)
				printf("  %s run %u: raw %.1f engine %.1f (%s) ratio %.3f\n",
				       pt->name, k + 1, rv[k], ev[k], metric_name(pt), ratio[k]);
		}
		{
			double runs[MAXREPS];

			memcpy(runs, ratio, sizeof runs);
			q = median(runs, cfg.reps);
			rmed = median(rv, cfg.reps);
			emed = median(ev, cfg.reps);
		}
		ok = pt->metric == M_LAT ? q <= pt->goal : q >= pt->goal;
		met += ok;
		total++;
		printf("%-18s %-11s raw %9.1f  engine %9.1f  ratio %.3f (goal %s %.2f) %s\n",
		       pt->name, metric_name(pt), rmed, emed, q, pt->metric == M_LAT ? "<=" : ">=",
		       pt->goal, ok ? "met" : "MISSED");
		{
			double rc[MAXREPS], ec[MAXREPS], ew[MAXREPS], es[MAXREPS], rl[MAXREPS], el[MAXREPS];

			for (unsigned k = 0; k < cfg.reps; k++) {
				rc[k] = raw[p][k].cpu_us;
				ec[k] = eng[p][k].cpu_us;
				ew[k] = eng[p][k].writes_per_io;
				es[k] = eng[p][k].syncs_per_io;
				rl[k] = raw[p][k].lat_us;
				el[k] = eng[p][k].lat_us;
			}
			printf("%-18s   runs:", "");
			for (unsigned k = 0; k < cfg.reps; k++)
				printf(" %.3f", ratio[k]);
			printf("; CPU us/IO raw %.1f engine %.1f", median(rc, cfg.reps),
			       median(ec, cfg.reps));
			if (pt->metric != M_LAT)
				printf("; mean lat us raw %.0f engine %.0f", median(rl, cfg.reps),
				       median(el, cfg.reps));
			if (pt->write)
				printf("; engine writes/IO %.3f syncs/IO %.3f", median(ew, cfg.reps),
				       median(es, cfg.reps));
			printf("\n");
		}
		fflush(stdout);
	}
	eng_close();
	if (!cfg.keep)
		unlink(cfg.store_path);
	loadavg(load1, sizeof load1);
	printf("load average at end: %s\n", load1);
	printf("engine: %u/%u targets met\n", met, total);
	return met == total ? 0 : 1;
}
