/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/qbd-io: one fio-like job on a qbd volume through libqbd, with no
 * NBD hop (what fio's rbd engine is for Ceph), printing the part of fio's
 * JSON that a benchmark harness reads, so that it can be compared with a
 * fio run on qbd-nbd.
 *
 *   qbd-io [--etcd URL] --volume NAME --name JOB --rw MODE --bs SIZE
 *          --iodepth N [--size SIZE] [--offset SIZE] [--runtime TIME]
 *          [--ramp_time TIME] [--rwmixread PCT] [--time_based] [--verify]
 *          ... (--help lists them all)
 *
 * It works as qbd-nbd does: opens the volume as its writer, one thread,
 * the handle's fd in poll(2), qbd_process, and each completion's
 * callback submits the next request, so that iodepth requests stay in
 * flight. Latencies are fio's: slat from choosing the request (and filling
 * its pattern) to qbd_submit, clat from qbd_submit to the callback, lat
 * both; percentiles come from a log-linear histogram (64 buckets per
 * power of two: at most 0.8% off). Requests that complete during the ramp
 * are not counted; the counted window then lasts --runtime, or, without
 * --time_based, until --size bytes were issued and completed (fio's
 * rule); after it nothing more is submitted, the requests in flight
 * complete uncounted, and the volume is closed (flushed). usr_cpu and
 * sys_cpu are the process's (libqbd's own thread included) over the
 * window.
 *
 * --verify: every 512 bytes of a write carry a header (magic, their
 * offset, the pattern seed, this run's nonce, the block's write number in
 * this run) and words derived from it. A read of a block this run wrote
 * must be exactly its last write. A block this run did not write is
 * checked 512 bytes at a time against an earlier run's headers (so also
 * after a fill with another --bs): each header must name its own offset,
 * the words after it must follow from it, and, with --verify_seed given,
 * its seed must be that one; 512 bytes without a header (zeros, data
 * qbd-io did not write) are not checked, and such reads are counted in the
 * "qbd_verify" object of the output. Two requests are never in flight on
 * one block at the same time, so the last write is known.
 *
 * Exit status: 0 ok, 1 an I/O error, a verify mismatch or an interrupted
 * run (no JSON then), 2 usage.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/qbd.h"

#define MAX_IODEPTH 4096
#define MAX_BS (32u << 20)       /* libqbd's largest read or write */
#define MAX_VERIFY_BLOCKS (1ull << 28)
#define STALL_NS (60ull * 1000000000ull) /* a request this old: give up */
#define TICK_MS 100

/* --verify: every 512 bytes a header of HDR_WORDS words and a pattern. */
#define VERIFY_UNIT 512u
#define UNIT_WORDS (VERIFY_UNIT / 8)
#define VERIFY_MAGIC 0x3130766f69646271ull /* "qbdiov01" */
#define HDR_WORDS 5

/* Log-linear latency histogram: values below 64 exactly, then 64
 * buckets per power of two. */
#define HIST_BITS 6
#define HIST_SUB (1u << HIST_BITS)
#define HIST_N ((64 - HIST_BITS + 1) * HIST_SUB)

static const double percentiles[] = {
	1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99,
};

enum rw_mode { RW_READ, RW_WRITE, RW_RANDREAD, RW_RANDWRITE, RW_RANDRW };
enum phase { PH_RAMP, PH_RUN, PH_DRAIN };
enum { D_READ, D_WRITE };

struct lat_stat {
	uint64_t n, min, max;
	double mean, m2;         /* Welford */
};

struct dir_stat {
	uint64_t ios, bytes;
	struct lat_stat slat, clat, lat;
	uint64_t hist[HIST_N];   /* clat */
};

struct job;

struct slot {
	struct qbd_io io;
	struct job *job;
	uint64_t start_ns, issue_ns;
	uint64_t block;
	bool submitted;
	struct slot *next_wait;
};

struct job {
	/* options */
	const char *name;
	enum rw_mode rw;
	uint32_t bs;
	unsigned iodepth;
	uint64_t offset, size;   /* size 0: the rest of the volume */
	uint64_t runtime_ns, ramp_ns;
	unsigned rwmixread;
	bool time_based, randrepeat, verify, seed_given;
	uint64_t seed;           /* verify pattern */

	/* state */
	struct qbd_volume *v;
	uint64_t nblocks;
	struct slot *slots;
	uint8_t *bufs;
	uint64_t rng;            /* splitmix64 state: offsets, read/write mix */
	uint64_t seq_next;       /* next block of a sequential job */
	uint64_t nonce;          /* this run's, in every verify header */
	enum phase phase;
	uint64_t ramp_end, win_start, win_end;
	uint64_t run_issued;     /* bytes issued in the window */
	bool issue_done;         /* size-bounded job: all of it issued */
	unsigned in_flight;
	struct slot *wait_head;  /* slots whose block was busy */
	struct rusage ru_start, ru_end;
	struct dir_stat st[2];
	uint32_t *gen;           /* verify: writes to each block in this run */
	uint8_t *busy;           /* verify: a request in flight on the block */
	uint64_t v_checked, v_checked_earlier, v_unchecked, v_writes;
	bool failed, interrupted;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

/* ---- small helpers ---- */

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "qbd-io: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (qbd-io --help lists the options)\n");
	exit(2);
}

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd(struct job *j)
{
	j->rng += 0x9e3779b97f4a7c15ull;
	return mix64(j->rng);
}

/* Uniform in [0, n): the high half of a 64x64 product. */
static uint64_t rnd_below(struct job *j, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rnd(j) * n) >> 64);
}

static const char *op_name(enum qbd_io_op op)
{
	return op == QBD_IO_READ ? "read" : "write";
}

/* ---- option parsing ---- */

/* "500ms", "2s", "1.5", "100us", "1m", "1h"; a plain number is seconds. */
static int parse_time(const char *s, uint64_t *ns)
{
	static const struct { const char *unit; double ns; } units[] = {
		{ "", 1e9 }, { "s", 1e9 }, { "sec", 1e9 }, { "ms", 1e6 }, { "msec", 1e6 },
		{ "us", 1e3 }, { "usec", 1e3 }, { "m", 60e9 }, { "min", 60e9 },
		{ "h", 3600e9 },
	};
	char *end;
	double v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || !isfinite(v))
		return -EINVAL;
	for (size_t i = 0; i < QBD_ARRAY_SIZE(units); i++) {
		if (strcmp(end, units[i].unit))
			continue;
		v *= units[i].ns;
		if (v >= 1e18)
			return -ERANGE;
		*ns = (uint64_t)(v + 0.5);
		return 0;
	}
	return -EINVAL;
}

static uint64_t parse_uint_opt(const char *opt, const char *s, uint64_t lo, uint64_t hi)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
		usage_error("bad --%s '%s' (%" PRIu64 "..%" PRIu64 ")", opt, s, lo, hi);
	return v;
}

static uint64_t parse_size_opt(const char *opt, const char *s)
{
	uint64_t v;

	if (qbd_parse_size(s, &v) < 0)
		usage_error("bad --%s '%s' (a size: 4096, 4k, 1m, 2g)", opt, s);
	return v;
}

static uint64_t parse_time_opt(const char *opt, const char *s)
{
	uint64_t v;

	if (parse_time(s, &v) < 0)
		usage_error("bad --%s '%s' (a time: 2, 2s, 500ms, 100us, 1m)", opt, s);
	return v;
}

static bool parse_bool_opt(const char *opt, const char *s)
{
	if (!strcmp(s, "1"))
		return true;
	if (!strcmp(s, "0"))
		return false;
	usage_error("bad --%s '%s' (0 or 1)", opt, s);
}

static const char help[] =
	"usage: qbd-io [--etcd URL] --volume NAME [options]\n"
	"One fio-like job on a qbd volume through libqbd (no NBD), as the volume's\n"
	"writer; fio's JSON (a subset) on stdout. Options take --opt=value or\n"
	"--opt value; sizes are 4096, 4k, 1m, 1g (powers of 1024); times 2, 2s,\n"
	"500ms, 100us, 1m (a plain number is seconds).\n"
	"\n"
	"  --etcd URL            etcd (default $QBD_ETCD)\n"
	"  --volume NAME         the volume (opened as its writer: fences any other)\n"
	"  --zone ZONE           this node's zone: reads prefer replicas there\n"
	"  --force               take the volume over from a writer that still holds\n"
	"                        its attachment (when that node is gone)\n"
	"  --name JOB            the job's name in the output (default qbd-io)\n"
	"  --rw MODE             read, write, randread, randwrite, randrw (default read)\n"
	"  --bs SIZE             request size (default 4k, at most 32m)\n"
	"  --iodepth N           requests in flight (default 1, at most 4096)\n"
	"  --offset SIZE         start of the region (default 0)\n"
	"  --size SIZE           length of the region (default: to the volume's end)\n"
	"  --runtime TIME        length of the counted window (0: until --size is done)\n"
	"  --ramp_time TIME      run this long first without counting (default 0)\n"
	"  --time_based          run for --runtime, wrapping around the region; without\n"
	"                        it the job ends after --size bytes (or --runtime)\n"
	"  --rwmixread PCT       randrw: percentage of reads (default 50)\n"
	"  --rwmixwrite PCT      randrw: percentage of writes (100 - rwmixread)\n"
	"  --norandommap         accepted: random offsets are always drawn with\n"
	"                        replacement, as fio's with norandommap\n"
	"  --randrepeat=0|1      1 (default): the same offsets every run; 0: new ones\n"
	"  --verify              writes carry a checkable pattern; reads check it\n"
	"  --verify_seed N       the pattern's seed (default: a new one each run); a\n"
	"                        read of an earlier run's block must carry this seed\n"
	"  --output-format=json  the only format\n"
	"  --log-level L         libqbd's log: error|warn|info|debug\n"
	"  --help\n"
	"\n"
	"Offsets are aligned to bs from --offset; random ones uniform over the\n"
	"region, sequential ones in order. Exit status: 0 ok; 1 an I/O error, a\n"
	"verify mismatch, a request unanswered for 60 s, or SIGINT/SIGTERM (which\n"
	"stop and drain the job; no JSON then); 2 usage.\n";

enum opt_id {
	OPT_ETCD, OPT_VOLUME, OPT_ZONE, OPT_FORCE, OPT_NAME, OPT_RW, OPT_BS,
	OPT_IODEPTH, OPT_OFFSET, OPT_SIZE, OPT_RUNTIME, OPT_RAMP, OPT_TIME_BASED,
	OPT_RWMIXREAD, OPT_RWMIXWRITE, OPT_NORANDOMMAP, OPT_RANDREPEAT, OPT_VERIFY,
	OPT_VERIFY_SEED, OPT_OUTPUT_FORMAT, OPT_LOG_LEVEL, OPT_HELP,
};

static const struct opt_def {
	const char *name;
	enum opt_id id;
	bool flag;               /* no value needed; =0 or =1 allowed */
} opt_defs[] = {
	{ "etcd", OPT_ETCD, false },
	{ "volume", OPT_VOLUME, false },
	{ "zone", OPT_ZONE, false },
	{ "force", OPT_FORCE, true },
	{ "name", OPT_NAME, false },
	{ "rw", OPT_RW, false },
	{ "readwrite", OPT_RW, false },
	{ "bs", OPT_BS, false },
	{ "iodepth", OPT_IODEPTH, false },
	{ "offset", OPT_OFFSET, false },
	{ "size", OPT_SIZE, false },
	{ "runtime", OPT_RUNTIME, false },
	{ "ramp_time", OPT_RAMP, false },
	{ "time_based", OPT_TIME_BASED, true },
	{ "rwmixread", OPT_RWMIXREAD, false },
	{ "rwmixwrite", OPT_RWMIXWRITE, false },
	{ "norandommap", OPT_NORANDOMMAP, true },
	{ "randrepeat", OPT_RANDREPEAT, true },
	{ "verify", OPT_VERIFY, true },
	{ "verify_seed", OPT_VERIFY_SEED, false },
	{ "output-format", OPT_OUTPUT_FORMAT, false },
	{ "log-level", OPT_LOG_LEVEL, false },
	{ "help", OPT_HELP, true },
};

/* What was given, for "job options" in the output. */
struct given {
	const char *name[64];
	const char *value[64];
	unsigned n;
};

static enum rw_mode parse_rw(const char *s)
{
	static const char *const names[] = {
		[RW_READ] = "read", [RW_WRITE] = "write", [RW_RANDREAD] = "randread",
		[RW_RANDWRITE] = "randwrite", [RW_RANDRW] = "randrw",
	};

	for (size_t i = 0; i < QBD_ARRAY_SIZE(names); i++)
		if (!strcmp(s, names[i]))
			return (enum rw_mode)i;
	usage_error("bad --rw '%s' (read, write, randread, randwrite or randrw)", s);
}

static void apply_opt(struct job *j, struct qbd_open_opts *o, const struct opt_def *d,
		      const char *val)
{
	int level;

	switch (d->id) {
	case OPT_ETCD: o->etcd = val; break;
	case OPT_VOLUME: o->volume = val; break;
	case OPT_ZONE: o->zone = val; break;
	case OPT_FORCE: o->force = parse_bool_opt(d->name, val); break;
	case OPT_NAME: j->name = val; break;
	case OPT_RW: j->rw = parse_rw(val); break;
	case OPT_BS:
		j->bs = (uint32_t)parse_size_opt(d->name, val);
		if (!j->bs || j->bs > MAX_BS)
			usage_error("bad --bs '%s' (1 byte to 32m)", val);
		break;
	case OPT_IODEPTH:
		j->iodepth = (unsigned)parse_uint_opt(d->name, val, 1, MAX_IODEPTH);
		break;
	case OPT_OFFSET: j->offset = parse_size_opt(d->name, val); break;
	case OPT_SIZE: j->size = parse_size_opt(d->name, val); break;
	case OPT_RUNTIME: j->runtime_ns = parse_time_opt(d->name, val); break;
	case OPT_RAMP: j->ramp_ns = parse_time_opt(d->name, val); break;
	case OPT_TIME_BASED: j->time_based = parse_bool_opt(d->name, val); break;
	case OPT_RWMIXREAD:
		j->rwmixread = (unsigned)parse_uint_opt(d->name, val, 0, 100);
		break;
	case OPT_RWMIXWRITE:
		j->rwmixread = 100 - (unsigned)parse_uint_opt(d->name, val, 0, 100);
		break;
	case OPT_NORANDOMMAP: parse_bool_opt(d->name, val); break;
	case OPT_RANDREPEAT: j->randrepeat = parse_bool_opt(d->name, val); break;
	case OPT_VERIFY: j->verify = parse_bool_opt(d->name, val); break;
	case OPT_VERIFY_SEED:
		j->seed = parse_uint_opt(d->name, val, 0, UINT64_MAX);
		j->seed_given = true;
		break;
	case OPT_OUTPUT_FORMAT:
		if (strcmp(val, "json"))
			usage_error("bad --output-format '%s' (only json)", val);
		break;
	case OPT_LOG_LEVEL:
		level = qbd_log_parse_level(val);
		if (level < 0)
			usage_error("bad --log-level '%s'", val);
		qbd_log_set_level(level);
		break;
	case OPT_HELP:
		fputs(help, stdout);
		exit(0);
	}
}

static void parse_args(int argc, char **argv, struct job *j, struct qbd_open_opts *o,
		       struct given *g)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq, *val;
		const struct opt_def *d = NULL;
		size_t len;

		if (!strcmp(arg, "-h")) {
			fputs(help, stdout);
			exit(0);
		}
		if (strncmp(arg, "--", 2) || !arg[2])
			usage_error("unexpected argument '%s'", arg);
		arg += 2;
		eq = strchr(arg, '=');
		len = eq ? (size_t)(eq - arg) : strlen(arg);
		for (size_t k = 0; k < QBD_ARRAY_SIZE(opt_defs); k++)
			if (strlen(opt_defs[k].name) == len && !strncmp(opt_defs[k].name, arg, len))
				d = &opt_defs[k];
		if (!d)
			usage_error("unknown option '--%.*s'", (int)len, arg);
		if (eq)
			val = eq + 1;
		else if (d->flag)
			val = "1";
		else if (i + 1 < argc)
			val = argv[++i];
		else
			usage_error("--%s needs a value", d->name);
		apply_opt(j, o, d, val);
		if (g->n < QBD_ARRAY_SIZE(g->name) && d->id != OPT_ETCD && d->id != OPT_LOG_LEVEL) {
			g->name[g->n] = d->name;
			g->value[g->n++] = val;
		}
	}
}

/* ---- statistics ---- */

static unsigned hist_index(uint64_t v)
{
	unsigned e;

	if (v < HIST_SUB)
		return (unsigned)v;
	e = (unsigned)(63 - __builtin_clzll(v)) - HIST_BITS;
	return (e + 1) * HIST_SUB + (unsigned)((v >> e) - HIST_SUB);
}

/* The middle of bucket i. */
static uint64_t hist_value(unsigned i)
{
	unsigned e;

	if (i < HIST_SUB)
		return i;
	e = i / HIST_SUB - 1;
	return ((uint64_t)(i % HIST_SUB + HIST_SUB) << e) + ((1ull << e) >> 1);
}

static uint64_t hist_percentile(const uint64_t *h, uint64_t n, double pct)
{
	uint64_t rank = (uint64_t)ceil(pct / 100.0 * (double)n), sum = 0;

	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < HIST_N; i++) {
		sum += h[i];
		if (sum >= rank)
			return hist_value(i);
	}
	return hist_value(HIST_N - 1);
}

static void lat_add(struct lat_stat *l, uint64_t v)
{
	double d;

	if (!l->n || v < l->min)
		l->min = v;
	if (v > l->max)
		l->max = v;
	l->n++;
	d = (double)v - l->mean;
	l->mean += d / (double)l->n;
	l->m2 += d * ((double)v - l->mean);
}

static void account(struct job *j, const struct slot *s, uint64_t now)
{
	struct dir_stat *d = &j->st[s->io.op == QBD_IO_READ ? D_READ : D_WRITE];

	d->ios++;
	d->bytes += s->io.length;
	lat_add(&d->slat, s->issue_ns - s->start_ns);
	lat_add(&d->clat, now - s->issue_ns);
	lat_add(&d->lat, now - s->start_ns);
	d->hist[hist_index(now - s->issue_ns)]++;
}

/* ---- verify patterns ---- */

/*
 * A verify unit: header words (magic, the unit's offset, seed, nonce,
 * write number), then words derived from them. Units, not requests,
 * carry headers, so that a run with another --bs can check them.
 */
static void unit_fill(uint64_t *w, uint64_t off, uint64_t seed, uint64_t nonce, uint64_t gen)
{
	uint64_t x = mix64(off ^ mix64(seed ^ mix64(nonce ^ mix64(gen))));

	w[0] = htole64(VERIFY_MAGIC);
	w[1] = htole64(off);
	w[2] = htole64(seed);
	w[3] = htole64(nonce);
	w[4] = htole64(gen);
	for (uint32_t i = HDR_WORDS; i < UNIT_WORDS; i++) {
		x += 0x9e3779b97f4a7c15ull;
		w[i] = htole64(mix64(x));
	}
}

/* The first word of the unit that differs from its pattern, or
 * UNIT_WORDS. */
static uint32_t unit_diff(const uint64_t *w, uint64_t off, uint64_t seed, uint64_t nonce,
			  uint64_t gen)
{
	uint64_t x = mix64(off ^ mix64(seed ^ mix64(nonce ^ mix64(gen))));
	const uint64_t hdr[HDR_WORDS] = { VERIFY_MAGIC, off, seed, nonce, gen };

	for (uint32_t i = 0; i < HDR_WORDS; i++)
		if (le64toh(w[i]) != hdr[i])
			return i;
	for (uint32_t i = HDR_WORDS; i < UNIT_WORDS; i++) {
		x += 0x9e3779b97f4a7c15ull;
		if (le64toh(w[i]) != mix64(x))
			return i;
	}
	return UNIT_WORDS;
}

static void block_fill(struct job *j, struct slot *s, uint32_t gen)
{
	uint64_t *w = s->io.buf;

	for (uint32_t u = 0; u < j->bs / VERIFY_UNIT; u++)
		unit_fill(w + (size_t)u * UNIT_WORDS, s->io.offset + (uint64_t)u * VERIFY_UNIT,
			  j->seed, j->nonce, gen);
}

/* Data for writes without --verify: random words, no header (a later
 * verify run must not take them for a qbd-io unit). */
static void fill_random(uint8_t *buf, size_t len)
{
	uint64_t x = qbd_random_u64(), w;

	for (size_t i = 0; i < len; i += sizeof(w)) {
		x += 0x9e3779b97f4a7c15ull;
		w = mix64(x);
		memcpy(buf + i, &w, QBD_MIN(sizeof(w), len - i));
	}
}

/* What a mismatching unit holds, for the error message. */
static void describe(const struct job *j, const uint64_t *w, uint64_t off, char *buf,
		     size_t len)
{
	bool zero = true;

	for (uint32_t i = 0; i < UNIT_WORDS; i++)
		zero &= !w[i];
	if (zero)
		snprintf(buf, len, "zeros");
	else if (le64toh(w[0]) != VERIFY_MAGIC)
		snprintf(buf, len, "data without a qbd-io header");
	else if (le64toh(w[1]) != off)
		snprintf(buf, len, "a header for offset %" PRIu64, le64toh(w[1]));
	else if (le64toh(w[3]) == j->nonce)
		snprintf(buf, len, "a header of write #%" PRIu64 " of this run", le64toh(w[4]));
	else
		snprintf(buf, len, "a header of another run (seed %" PRIu64 ", write #%" PRIu64 ")",
			 le64toh(w[2]), le64toh(w[4]));
}

static void verify_fail(struct job *j, const struct slot *s, const uint64_t *w,
			uint64_t off, const char *want, uint32_t word)
{
	char what[160];

	describe(j, w, off, what, sizeof(what));
	fprintf(stderr, "qbd-io: verify: read at offset %" PRIu64 " (%u bytes): at offset %"
		PRIu64 " expected %s; bytes %u..%u of its %u differ; it holds %s\n",
		s->io.offset, s->io.length, off, want, word * 8, word * 8 + 7, VERIFY_UNIT, what);
	j->failed = true;
}

/* A unit no write of this run reached: an earlier run's, if it has a
 * header. Returns 1 checked, 0 no header, -1 mismatch. */
static int unit_check_earlier(struct job *j, const struct slot *s, const uint64_t *w,
			      uint64_t off)
{
	uint64_t seed = le64toh(w[2]), gen = le64toh(w[4]);
	char want[160];
	uint32_t diff;

	if (le64toh(w[0]) != VERIFY_MAGIC)
		return 0;
	if (le64toh(w[1]) != off) {
		verify_fail(j, s, w, off, "a header for this offset", 1);
		return -1;
	}
	if (j->seed_given && seed != j->seed) {
		snprintf(want, sizeof(want), "an earlier write with seed %" PRIu64, j->seed);
		verify_fail(j, s, w, off, want, 2);
		return -1;
	}
	diff = unit_diff(w, off, seed, le64toh(w[3]), gen);
	if (diff < UNIT_WORDS) {
		snprintf(want, sizeof(want), "what its header describes (seed %" PRIu64
			 ", write #%" PRIu64 ")", seed, gen);
		verify_fail(j, s, w, off, want, diff);
		return -1;
	}
	return 1;
}

static void verify_read(struct job *j, const struct slot *s)
{
	uint32_t gen = j->gen[s->block], diff;
	bool unchecked = false;
	char want[160];

	for (uint32_t u = 0; u < s->io.length / VERIFY_UNIT; u++) {
		const uint64_t *w = (const uint64_t *)s->io.buf + (size_t)u * UNIT_WORDS;
		uint64_t off = s->io.offset + (uint64_t)u * VERIFY_UNIT;
		int r;

		if (!gen) {
			r = unit_check_earlier(j, s, w, off);
			if (r < 0)
				return;
			unchecked |= r == 0;
			continue;
		}
		diff = unit_diff(w, off, j->seed, j->nonce, gen);
		if (diff < UNIT_WORDS) {
			snprintf(want, sizeof(want), "write #%u of this run (seed %" PRIu64 ")",
				 gen, j->seed);
			verify_fail(j, s, w, off, want, diff);
			return;
		}
	}
	if (gen)
		j->v_checked++;
	else if (unchecked)
		j->v_unchecked++;
	else
		j->v_checked_earlier++;
}

/* ---- the job ---- */

static void end_window(struct job *j, uint64_t now)
{
	if (j->phase == PH_RAMP)
		j->win_start = now;
	j->win_end = now;
	getrusage(RUSAGE_SELF, &j->ru_end);
	j->phase = PH_DRAIN;
}

static void phase_update(struct job *j, uint64_t now)
{
	if (j->phase == PH_RAMP && now >= j->ramp_end) {
		j->phase = PH_RUN;
		j->win_start = now;
		getrusage(RUSAGE_SELF, &j->ru_start);
	}
	if (j->phase == PH_RUN && j->runtime_ns && now - j->win_start >= j->runtime_ns)
		end_window(j, now);
	if ((stop_signal || j->failed) && j->phase != PH_DRAIN) {
		j->interrupted = stop_signal != 0;
		end_window(j, now);
	}
}

static enum qbd_io_op pick_op(struct job *j)
{
	switch (j->rw) {
	case RW_READ:
	case RW_RANDREAD:
		return QBD_IO_READ;
	case RW_WRITE:
	case RW_RANDWRITE:
		return QBD_IO_WRITE;
	case RW_RANDRW:
		break;
	}
	return rnd_below(j, 100) < j->rwmixread ? QBD_IO_READ : QBD_IO_WRITE;
}

/* A block for the next request; false if (verify) the ones tried are
 * busy. A sequential job waits for its next block rather than skip it. */
static bool pick_block(struct job *j, uint64_t *b)
{
	if (j->rw == RW_READ || j->rw == RW_WRITE) {
		if (j->verify && j->busy[j->seq_next])
			return false;
		*b = j->seq_next;
		if (++j->seq_next == j->nblocks)
			j->seq_next = 0;
		return true;
	}
	for (int tries = 0; tries < 8; tries++) {
		*b = rnd_below(j, j->nblocks);
		if (!j->verify || !j->busy[*b])
			return true;
	}
	return false;
}

static void io_done(struct qbd_io *io);

/*
 * Start the slot's next request. A slot that finds its block busy waits
 * on j->wait_head for the next completion.
 */
static void slot_start(struct slot *s)
{
	struct job *j = s->job;
	uint64_t now = qbd_now_ns(), b;
	enum qbd_io_op op;

	if (j->phase == PH_DRAIN || j->issue_done)
		return;
	if (j->phase == PH_RUN && !j->time_based && j->run_issued >= j->nblocks * j->bs) {
		j->issue_done = true;
		return;
	}
	op = pick_op(j);
	if (!pick_block(j, &b)) {
		s->next_wait = j->wait_head;
		j->wait_head = s;
		return;
	}
	s->start_ns = now;
	s->block = b;
	s->io.op = op;
	s->io.offset = j->offset + b * j->bs;
	s->io.length = j->bs;
	s->io.flags = 0;
	if (j->verify) {
		j->busy[b] = 1;
		if (op == QBD_IO_WRITE) {
			block_fill(j, s, ++j->gen[b]);
			j->v_writes++;
		}
	}
	if (j->phase == PH_RUN)
		j->run_issued += j->bs;
	s->submitted = true;
	j->in_flight++;
	s->issue_ns = qbd_now_ns();
	qbd_submit(j->v, &s->io);
}

static void restart_waiting(struct job *j)
{
	struct slot *s = j->wait_head;

	j->wait_head = NULL;
	while (s) {
		struct slot *next = s->next_wait;

		slot_start(s);
		s = next;
	}
}

static void io_done(struct qbd_io *io)
{
	struct slot *s = io->user;
	struct job *j = s->job;
	uint64_t now = qbd_now_ns();
	bool ok = io->res >= 0;

	s->submitted = false;
	j->in_flight--;
	if (!ok) {
		fprintf(stderr, "qbd-io: %s at offset %" PRIu64 " (%u bytes): %s\n",
			op_name(io->op), io->offset, io->length, strerror(-io->res));
		j->failed = true;
	} else if (j->verify && io->op == QBD_IO_READ) {
		verify_read(j, s);
		ok = !j->failed;
	}
	if (j->verify)
		j->busy[s->block] = 0;
	phase_update(j, now);
	if (ok && j->phase == PH_RUN)
		account(j, s, now);
	slot_start(s);
	if (j->wait_head)
		restart_waiting(j);
	/* A size-bounded job ends with its last completion, counted. */
	if (j->phase == PH_RUN && j->issue_done && !j->in_flight)
		end_window(j, now);
}

/* Give up on a request unanswered for STALL_NS: qbd_close would wait for
 * it forever, so exit without closing. */
static void check_stall(const struct job *j, uint64_t now)
{
	for (unsigned i = 0; i < j->iodepth; i++) {
		const struct slot *s = &j->slots[i];

		if (s->submitted && now - s->issue_ns > STALL_NS) {
			fprintf(stderr, "qbd-io: %s at offset %" PRIu64 " (%u bytes): no answer "
				"after %llu s\n", op_name(s->io.op), s->io.offset, s->io.length,
				(unsigned long long)(STALL_NS / 1000000000ull));
			exit(1);
		}
	}
}

static int poll_timeout(const struct job *j, uint64_t now)
{
	uint64_t until = 0;

	if (j->phase == PH_RAMP)
		until = j->ramp_end;
	else if (j->phase == PH_RUN && j->runtime_ns)
		until = j->win_start + j->runtime_ns;
	if (!until)
		return TICK_MS;
	if (until <= now)
		return 0;
	return (int)QBD_MIN((until - now + 999999) / 1000000, (uint64_t)TICK_MS);
}

static void run(struct job *j)
{
	struct pollfd pfd = { .fd = qbd_get_fd(j->v), .events = POLLIN };
	uint64_t now = qbd_now_ns();

	j->ramp_end = now + j->ramp_ns;
	j->phase = PH_RAMP;
	phase_update(j, now);
	for (unsigned i = 0; i < j->iodepth; i++)
		slot_start(&j->slots[i]);
	while (j->phase != PH_DRAIN || j->in_flight) {
		if (poll(&pfd, 1, poll_timeout(j, qbd_now_ns())) < 0 && errno != EINTR) {
			fprintf(stderr, "qbd-io: poll: %s\n", strerror(errno));
			exit(1);
		}
		qbd_process(j->v);
		now = qbd_now_ns();
		phase_update(j, now);
		check_stall(j, now);
		/* Defensive: a waiting slot with nothing in flight to wake it. */
		if (!j->in_flight && j->wait_head)
			restart_waiting(j);
		if (j->phase == PH_RUN && j->issue_done && !j->in_flight)
			end_window(j, now);
	}
}

/* The region against the volume: 0, or -EINVAL after saying why (the
 * caller closes the volume, then exits 2). */
static int check_region(struct job *j)
{
	uint64_t vsize = qbd_size(j->v);

	if (j->offset >= vsize) {
		fprintf(stderr, "qbd-io: --offset %" PRIu64 " is past the volume's end (%" PRIu64
			" bytes)\n", j->offset, vsize);
		return -EINVAL;
	}
	if (!j->size)
		j->size = vsize - j->offset;
	if (j->size > vsize - j->offset) {
		fprintf(stderr, "qbd-io: --offset + --size (%" PRIu64 ") is past the volume's "
			"end (%" PRIu64 " bytes)\n", j->offset + j->size, vsize);
		return -EINVAL;
	}
	j->nblocks = j->size / j->bs;
	if (!j->nblocks) {
		fprintf(stderr, "qbd-io: --size %" PRIu64 " is smaller than --bs %u\n",
			j->size, j->bs);
		return -EINVAL;
	}
	if (j->verify && j->nblocks > MAX_VERIFY_BLOCKS) {
		fprintf(stderr, "qbd-io: --verify keeps 5 bytes per block: %" PRIu64 " blocks "
			"is too many (at most %llu; a larger --bs or a smaller --size)\n",
			j->nblocks, MAX_VERIFY_BLOCKS);
		return -EINVAL;
	}
	return 0;
}

static int setup(struct job *j)
{
	size_t buflen;

	buflen = (size_t)j->iodepth * j->bs;
	if (posix_memalign((void **)&j->bufs, 4096, buflen))
		return -ENOMEM;
	fill_random(j->bufs, buflen);
	j->slots = calloc(j->iodepth, sizeof(*j->slots));
	if (!j->slots)
		return -ENOMEM;
	for (unsigned i = 0; i < j->iodepth; i++) {
		struct slot *s = &j->slots[i];

		s->job = j;
		s->io.buf = j->bufs + (size_t)i * j->bs;
		s->io.cb = io_done;
		s->io.user = s;
	}
	if (j->verify) {
		j->gen = calloc(j->nblocks, sizeof(*j->gen));
		j->busy = calloc(j->nblocks, 1);
		if (!j->gen || !j->busy)
			return -ENOMEM;
	}
	return 0;
}

static void job_free(struct job *j)
{
	free(j->bufs);
	free(j->slots);
	free(j->gen);
	free(j->busy);
}

/* ---- output ---- */

static json_object *lat_json(const struct lat_stat *l, const uint64_t *hist)
{
	json_object *o = json_object_new_object();
	double sd = l->n > 1 ? sqrt(l->m2 / (double)(l->n - 1)) : 0;

	json_object_object_add(o, "min", json_object_new_uint64(l->min));
	json_object_object_add(o, "max", json_object_new_uint64(l->max));
	json_object_object_add(o, "mean", json_object_new_double(l->mean));
	json_object_object_add(o, "stddev", json_object_new_double(sd));
	json_object_object_add(o, "N", json_object_new_uint64(l->n));
	if (hist && l->n) {
		json_object *p = json_object_new_object();
		char key[32];

		for (size_t i = 0; i < QBD_ARRAY_SIZE(percentiles); i++) {
			snprintf(key, sizeof(key), "%f", percentiles[i]);
			json_object_object_add(p, key, json_object_new_uint64(
				hist_percentile(hist, l->n, percentiles[i])));
		}
		json_object_object_add(o, "percentile", p);
	}
	return o;
}

static json_object *dir_json(const struct dir_stat *d, uint64_t win_ns, bool active)
{
	json_object *o = json_object_new_object();
	double secs = (double)win_ns / 1e9;
	uint64_t bw = active && win_ns ? (uint64_t)((double)d->bytes / secs) : 0;

	json_object_object_add(o, "io_bytes", json_object_new_uint64(d->bytes));
	json_object_object_add(o, "io_kbytes", json_object_new_uint64(d->bytes / 1024));
	json_object_object_add(o, "bw_bytes", json_object_new_uint64(bw));
	json_object_object_add(o, "bw", json_object_new_uint64(bw / 1024));
	json_object_object_add(o, "iops", json_object_new_double(
		active && win_ns ? (double)d->ios / secs : 0));
	json_object_object_add(o, "runtime", json_object_new_uint64(
		active ? (win_ns + 500000) / 1000000 : 0));
	json_object_object_add(o, "total_ios", json_object_new_uint64(d->ios));
	json_object_object_add(o, "short_ios", json_object_new_uint64(0));
	json_object_object_add(o, "drop_ios", json_object_new_uint64(0));
	json_object_object_add(o, "slat_ns", lat_json(&d->slat, NULL));
	json_object_object_add(o, "clat_ns", lat_json(&d->clat, d->hist));
	json_object_object_add(o, "lat_ns", lat_json(&d->lat, NULL));
	return o;
}

static double tv_us(const struct timeval *a, const struct timeval *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e6 + (double)(b->tv_usec - a->tv_usec);
}

static void print_json(const struct job *j, const struct given *g)
{
	json_object *root = json_object_new_object(), *jobs = json_object_new_array();
	json_object *job = json_object_new_object(), *opts = json_object_new_object();
	uint64_t win = j->win_end - j->win_start;
	double win_us = (double)win / 1e3;
	bool reads = j->rw == RW_READ || j->rw == RW_RANDREAD || j->rw == RW_RANDRW;
	bool writes = !reads || j->rw == RW_RANDRW;

	for (unsigned i = 0; i < g->n; i++)
		json_object_object_add(opts, g->name[i], json_object_new_string(g->value[i]));
	json_object_object_add(root, "fio version", json_object_new_string("qbd-io"));
	json_object_object_add(root, "timestamp", json_object_new_int64(time(NULL)));
	json_object_object_add(job, "jobname", json_object_new_string(j->name));
	json_object_object_add(job, "groupid", json_object_new_int(0));
	json_object_object_add(job, "error", json_object_new_int(0));
	json_object_object_add(job, "job options", opts);
	json_object_object_add(job, "read", dir_json(&j->st[D_READ], win, reads));
	json_object_object_add(job, "write", dir_json(&j->st[D_WRITE], win, writes));
	json_object_object_add(job, "job_runtime", json_object_new_uint64((win + 500000) / 1000000));
	json_object_object_add(job, "usr_cpu", json_object_new_double(
		win ? tv_us(&j->ru_start.ru_utime, &j->ru_end.ru_utime) / win_us * 100 : 0));
	json_object_object_add(job, "sys_cpu", json_object_new_double(
		win ? tv_us(&j->ru_start.ru_stime, &j->ru_end.ru_stime) / win_us * 100 : 0));
	json_object_object_add(job, "ctx", json_object_new_int64(
		(j->ru_end.ru_nvcsw + j->ru_end.ru_nivcsw) -
		(j->ru_start.ru_nvcsw + j->ru_start.ru_nivcsw)));
	if (j->verify) {
		json_object *v = json_object_new_object();

		/* Over the whole run, ramp and drain included. */
		json_object_object_add(v, "seed", json_object_new_uint64(j->seed));
		json_object_object_add(v, "writes", json_object_new_uint64(j->v_writes));
		json_object_object_add(v, "reads_checked", json_object_new_uint64(j->v_checked));
		json_object_object_add(v, "reads_checked_earlier",
				       json_object_new_uint64(j->v_checked_earlier));
		json_object_object_add(v, "reads_unchecked", json_object_new_uint64(j->v_unchecked));
		json_object_object_add(job, "qbd_verify", v);
	}
	json_object_array_add(jobs, job);
	json_object_object_add(root, "jobs", jobs);
	puts(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
					    JSON_C_TO_STRING_SPACED));
	json_object_put(root);
}

int main(int argc, char **argv)
{
	struct job j = {
		.name = "qbd-io", .rw = RW_READ, .bs = 4096, .iodepth = 1,
		.rwmixread = 50, .randrepeat = true,
	};
	struct qbd_open_opts o = { .etcd = getenv("QBD_ETCD") };
	struct sigaction sa = { .sa_handler = on_signal };
	struct given g = { 0 };
	int err;

	qbd_log_init("qbd-io");
	parse_args(argc, argv, &j, &o, &g);
	if (!o.volume)
		usage_error("--volume is required");
	if (!o.etcd)
		usage_error("no etcd: use --etcd URL or set QBD_ETCD");
	if (j.time_based && !j.runtime_ns)
		usage_error("--time_based needs a --runtime");
	if (j.verify && (j.bs % VERIFY_UNIT || j.offset % VERIFY_UNIT))
		usage_error("--verify needs --bs and --offset multiples of %u", VERIFY_UNIT);
	/* fio's randrepeat: the same offsets each run unless it is 0. */
	j.rng = j.randrepeat ? 0x716264696f2d3031ull : qbd_random_u64();
	if (!j.seed_given)
		j.seed = qbd_random_u64();
	j.nonce = qbd_random_u64();

	err = qbd_open(&o, &j.v);
	if (err) {
		fprintf(stderr, "qbd-io: cannot open volume '%s': %s\n", o.volume, strerror(-err));
		return 1;
	}
	if (check_region(&j)) {
		qbd_close(j.v);
		return 2;
	}
	err = setup(&j);
	if (err) {
		fprintf(stderr, "qbd-io: %s\n", strerror(-err));
		qbd_close(j.v);
		job_free(&j);
		return 1;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	run(&j);
	qbd_close(j.v);
	if (j.interrupted)
		fprintf(stderr, "qbd-io: stopped by signal %d\n", (int)stop_signal);
	if (j.interrupted || j.failed) {
		job_free(&j);
		return 1;
	}
	if (j.verify)
		fprintf(stderr, "qbd-io: verify: %" PRIu64 " writes; reads: %" PRIu64 " checked "
			"against this run's writes, %" PRIu64 " against an earlier run's header, %"
			PRIu64 " not checked (no qbd-io header)\n", j.v_writes, j.v_checked,
			j.v_checked_earlier, j.v_unchecked);
	print_json(&j, &g);
	job_free(&j);
	return 0;
}
