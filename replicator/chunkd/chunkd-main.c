/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd command line: settings from flags, the environment and
 * /etc/qbd/qbd.conf (in that order), checked in one place, then the chunk
 * server (qbd_chunkd_run, chunkd.c) runs until SIGTERM/SIGINT.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunkd.h"
#include "common/auth.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/util.h"
#include "replicator/meta/meta.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qbd-chunkd [--config FILE] [--instance NAME] [--check-config]\n"
		"                  [--data PATH] [--listen ADDR:PORT] [--zone NAME]\n"
		"                  [--etcd URL[,URL...]]\n"
		"                  [--size SIZE] [--advertise ADDR:PORT] [--scrub-rate RATE]\n"
		"                  [--buffers N] [--secret-file PATH] [--metrics ADDR:PORT]\n"
		"                  [--reclaim-grace TIME] [--log-level L]\n"
		"  --config FILE        settings file (default " QBD_CONF_DEFAULT ", or $QBD_CONFIG;\n"
		"                       the default may be absent); flags and the environment\n"
		"                       override it\n"
		"  --instance NAME      read [chunkd.NAME] too (qbd-chunkd@NAME.service)\n"
		"  --check-config       check the settings, print what is wrong, exit 0 or 1\n"
		"  --data PATH          store file or block device\n"
		"  --size SIZE          create the file with SIZE if absent (default 8G)\n"
		"  --listen ADDR:PORT   address to serve the qbd protocol on\n"
		"  --advertise ADDR:PORT address clients use (default: --listen)\n"
		"  --zone NAME          failure zone of this node\n"
		"  --etcd URL[,URL...]  etcd endpoints, one per zone, tried in turn\n"
		"                       (default: $QBD_ETCD)\n"
		"  --secret-file PATH   cluster secret, mode 0600 ($QBD_SECRET_FILE): peers must\n"
		"                       prove it; without one, links are not authenticated\n"
		"  --metrics ADDR:PORT  serve Prometheus metrics over HTTP at /metrics\n"
		"  --scrub-rate RATE    background scrub, bytes/s (e.g. 4M; default 4M; 0 = off)\n"
		"  --buffers N          request buffers registered with the ring, a chunk\n"
		"                       (1 MiB) of locked memory each (default 32; 0 = none)\n"
		"  --reclaim-grace TIME the chunks of a volume deleted, or moved off this\n"
		"                       node, while it was away are deleted once etcd has\n"
		"                       not had it (or listed this node) for TIME\n"
		"                       (e.g. 90s, 10m; default 5m; 0 = never)\n"
		"  --log-level L        error|warn|info|debug\n");
}

/* The settings, by their name in flags and in the file. */
enum { S_DATA, S_SIZE, S_LISTEN, S_ADVERTISE, S_ZONE, S_ETCD, S_SECRET, S_METRICS,
       S_SCRUB, S_BUFFERS, S_RECLAIM, S_LOGLEVEL, S_N };
static const char *const names[S_N + 1] = {
	"data", "size", "listen", "advertise", "zone", "etcd", "secret-file", "metrics",
	"scrub-rate", "buffers", "reclaim-grace", "log-level", NULL,
};
static const char *const envs[S_N] = {
	[S_ETCD] = "QBD_ETCD", [S_SECRET] = QBD_AUTH_SECRET_ENV,
	[S_LOGLEVEL] = "QBD_LOG_LEVEL",
};

static struct qbd_conf_check chk = { .prog = "qbd-chunkd" };

static void bad(const struct qbd_setting *s, const char *what)
{
	qbd_conf_bad(&chk, s, what);
}

static void missing(const char *what)
{
	qbd_conf_missing(&chk, "%s", what);
}

/* What the command line says besides the settings. */
struct cmdline {
	const char *flag[S_N];   /* each setting's flag, or NULL */
	const char *conf_path, *instance;
	bool check;              /* --check-config */
};

/* Read the command line into cl: -1 to go on, else the exit status
 * (--help, a usage error). */
static int parse_args(int argc, char **argv, struct cmdline *cl)
{
	static const struct option longopts[] = {
		{ "data", required_argument, NULL, S_DATA },
		{ "size", required_argument, NULL, S_SIZE },
		{ "listen", required_argument, NULL, S_LISTEN },
		{ "advertise", required_argument, NULL, S_ADVERTISE },
		{ "zone", required_argument, NULL, S_ZONE },
		{ "etcd", required_argument, NULL, S_ETCD },
		{ "secret-file", required_argument, NULL, S_SECRET },
		{ "metrics", required_argument, NULL, S_METRICS },
		{ "scrub-rate", required_argument, NULL, S_SCRUB },
		{ "buffers", required_argument, NULL, S_BUFFERS },
		{ "reclaim-grace", required_argument, NULL, S_RECLAIM },
		{ "log-level", required_argument, NULL, S_LOGLEVEL },
		{ "config", required_argument, NULL, 'c' },
		{ "instance", required_argument, NULL, 'i' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c >= 0 && c < S_N) {
			cl->flag[c] = optarg;
			continue;
		}
		switch (c) {
		case 'c': cl->conf_path = optarg; break;
		case 'i': cl->instance = optarg; break;
		case 'C': cl->check = true; break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "qbd-chunkd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 1;
	}
	if (cl->instance && (!*cl->instance || strchr(cl->instance, ']') ||
			     strlen(cl->instance) > 64)) {
		fprintf(stderr, "qbd-chunkd: bad --instance '%s'\n", cl->instance);
		return 1;
	}
	return -1;
}

/* Open the settings file and resolve each setting from the flags, the
 * environment and the file (in that order); -1 if the file is unusable
 * (said on stderr). Unknown keys count as problems. */
static int read_settings(const struct cmdline *cl, struct qbd_conf **conf,
			 struct qbd_setting s[S_N])
{
	return qbd_conf_settings(&chk, cl->conf_path, "chunkd", cl->instance, names, cl->flag,
				 envs, S_N, conf, s);
}

/* The store: given, and it or its directory exists. */
static void check_store(const struct qbd_setting *s, struct qbd_chunkd_opts *o)
{
	struct stat st;
	char dir[4096];
	const char *slash;

	o->data = s->value;
	if (!o->data || !*o->data) {
		missing("no store: --data PATH, or data = PATH in [chunkd] or [chunkd.NAME]");
		return;
	}
	slash = strrchr(o->data, '/');
	snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - o->data) : 1,
		 slash ? o->data : ".");
	if (stat(o->data, &st) < 0 && (errno != ENOENT || stat(dir[0] ? dir : "/", &st) < 0))
		bad(s, "neither the store nor its directory exists");
}

/* The addresses: where to serve, what to advertise, the metrics. */
static void check_addresses(const struct qbd_setting s[S_N], struct qbd_chunkd_opts *o)
{
	char host[128];
	uint16_t port;

	o->listen = s[S_LISTEN].value;
	if (!o->listen)
		missing("no address to serve on: --listen ADDR:PORT, or listen = ADDR:PORT");
	else if (qbd_parse_hostport(o->listen, host, sizeof host, &port) < 0)
		bad(&s[S_LISTEN], "want ADDR:PORT");
	o->advertise = s[S_ADVERTISE].value;
	if (o->advertise &&
	    (qbd_parse_hostport(o->advertise, host, sizeof host, &port) < 0 || port == 0))
		bad(&s[S_ADVERTISE], "want ADDR:PORT with a port");
	o->metrics = s[S_METRICS].value;
	if (o->metrics && qbd_parse_hostport(o->metrics, host, sizeof host, &port) < 0)
		bad(&s[S_METRICS], "want ADDR:PORT");
}

/* A time: "off" or 0 (0), or a count of seconds with an optional unit (ms,
 * s, m, h): 0 or -EINVAL. A grace below a second is refused: two
 * scans need time between them. */
static int parse_grace(const char *v, uint64_t *ms)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{ "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	unsigned long long n;
	char *end;

	if (strcmp(v, "off") == 0) {
		*ms = 0;
		return 0;
	}
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || *v == '-')
		return -EINVAL;
	if (n == 0 && (*end == '\0' || strcmp(end, "s") == 0)) {
		*ms = 0;
		return 0;
	}
	for (size_t i = 0; i < QBD_ARRAY_SIZE(units); i++)
		if (strcmp(end, units[i].unit) == 0) {
			if (n > UINT64_MAX / 1000000 / units[i].ms || n * units[i].ms < 1000)
				return -EINVAL;
			*ms = n * units[i].ms;
			return 0;
		}
	return -EINVAL;
}

/* Check every setting into o; each problem is said on stderr and
 * counted in problems. */
static void check_settings(const struct qbd_setting s[S_N], struct qbd_chunkd_opts *o)
{
	unsigned long n;
	char *end;

	qbd_conf_log_level(&chk, &s[S_LOGLEVEL]);
	check_store(&s[S_DATA], o);
	if (s[S_SIZE].value &&
	    (qbd_parse_size(s[S_SIZE].value, &o->create_size) < 0 || o->create_size == 0))
		bad(&s[S_SIZE], "want a size such as 100G");
	check_addresses(s, o);
	o->zone = s[S_ZONE].value;
	if (!o->zone || !*o->zone)
		missing("no zone: --zone NAME, or zone = NAME");
	else if (strlen(o->zone) >= 64)
		bad(&s[S_ZONE], "a zone name has 1 to 63 characters");
	o->etcd = s[S_ETCD].value;
	qbd_conf_etcd(&chk, &s[S_ETCD], qbd_meta_endpoints_check);
	if (s[S_SCRUB].value && qbd_parse_size(s[S_SCRUB].value, &o->scrub_rate) < 0)
		bad(&s[S_SCRUB], "want bytes per second, e.g. 4M (0 = off)");
	if (s[S_BUFFERS].value) {
		errno = 0;
		n = strtoul(s[S_BUFFERS].value, &end, 10);
		if (errno || end == s[S_BUFFERS].value || *end || n > 4096)
			bad(&s[S_BUFFERS], "want a count, 0 to 4096");
		else
			o->buffers = (unsigned)n;
	}
	if (s[S_RECLAIM].value && parse_grace(s[S_RECLAIM].value, &o->reclaim_grace_ms) < 0)
		bad(&s[S_RECLAIM], "want a time of a second or more, e.g. 90s or 10m (0 or off = never)");
	o->secret_file = s[S_SECRET].value;
	qbd_conf_secret(&chk, &s[S_SECRET]);
}

/* After check_settings: the exit status of --check-config or of settings
 * with problems, or -1 to run. */
static int report_settings(const struct cmdline *cl, const struct qbd_conf *conf,
			   const struct qbd_chunkd_opts *o)
{
	int rc = qbd_conf_verdict(&chk, conf, cl->check, cl->instance);

	if (rc >= 0)
		return rc;
	if (!o->secret_file || !*o->secret_file)
		qbd_warn("chunkd", "no cluster secret (secret-file): links to this chunk "
			 "server are not authenticated");
	return -1;
}

int main(int argc, char **argv)
{
	struct qbd_chunkd_opts o = { .create_size = 8ull << 30,
				     .scrub_rate = QBD_CHUNKD_SCRUB_RATE,
				     .buffers = QBD_CHUNKD_BUFFERS,
				     .reclaim_grace_ms = QBD_CHUNKD_RECLAIM_GRACE_MS };
	struct cmdline cl = { 0 };
	struct qbd_setting s[S_N];
	struct qbd_conf *conf = NULL;
	int rc;

	qbd_log_init("qbd-chunkd");
	rc = parse_args(argc, argv, &cl);
	if (rc >= 0)
		return rc;
	if (read_settings(&cl, &conf, s) < 0)
		return 1;
	check_settings(s, &o);
	rc = report_settings(&cl, conf, &o);
	if (rc < 0) {
		signal(SIGPIPE, SIG_IGN);
		rc = qbd_chunkd_run(&o) == 0 ? 0 : 1;
	}
	qbd_conf_free(conf);
	return rc;
}
