/* SPDX-License-Identifier: Apache-2.0 */
/* qbd: the command-line tool. Global options, then a command. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/conf.h"
#include "common/log.h"
#include "internal.h"

const char *cli_etcd;
static char cli_etcd_where[320];   /* where cli_etcd came from */
int cli_json;
/* The settings file: its strings are used until exit. */
static struct qbd_conf *cli_conf;

static const char usage[] =
	"usage: qbd [--etcd URL[,URL...]] [--secret-file PATH] [--config FILE] [--json]\n"
	"           COMMAND ...\n"
	"\n"
	"  status                         the cluster at a glance (exit 0 healthy,\n"
	"                                 3 degraded, 4 failed)\n"
	"  node list                      chunk servers, their zones and state\n"
	"  node drain|undrain NODE | node remove NODE [--yes]\n"
	"                                 move replicas off a node; a node gone for good\n"
	"  volume create NAME --size SIZE [--replicas R] [--write-quorum W]\n"
	"  volume list | info NAME | status NAME | delete NAME\n"
	"  volume verify NAME             compare every chunk on all replicas\n"
	"  volume resize NAME --size SIZE grow it, attached or not; never shrinks\n"
	"  volume move NAME --from NODE [--to NODE]\n"
	"                                 move one replica (drain, remove and move ask for\n"
	"                                 changes the volume's writer or qbd-managerd makes)\n"
	"  volume fence NAME | volume fence --node NODE\n"
	"                                 fence a dead node's writer out: a new epoch its\n"
	"                                 replicas promise; the next attach needs no --force\n"
	"  volume set NAME [--rebuild-rate RATE|default]\n"
	"                                 the attached writer's resync rate, at run time\n"
	"  attach NAME [--device /dev/nbdN] [--connections N] [--zone Z] [--force]\n"
	"                                 attach as a block device on this node\n"
	"  detach DEVICE|NAME [--force]   flush and disconnect it\n"
	"  mapped                         this node's qbd devices\n"
	"  dev up --state DIR [--zones a,b,c] [--size SIZE] [--etcd-members N]\n"
	"                                 local cluster: etcd members (3) and one chunk\n"
	"                                 server per zone\n"
	"  dev down --state DIR | dev status --state DIR\n"
	"  secret create PATH             a new cluster secret (mode 0600)\n"
	"\n"
	"--etcd (endpoints, one per zone, tried in turn) defaults to $QBD_ETCD, then\n"
	"etcd in [cluster] of the settings file\n"
	"(--config, $QBD_CONFIG, or " QBD_CONF_DEFAULT " if present); --secret-file to\n"
	"$QBD_SECRET_FILE, then secret-file there.\n"
	"\n"
	"Exit status:\n"
	"  0  ok: done; healthy; replicas identical\n"
	"  1  error: the message says why (etcd unreachable, no such volume, ...)\n"
	"  2  usage: a bad command line\n"
	"  3  degraded: still usable, not every replica current or node up\n"
	"     (status, volume status, node list), or a volume's health unknown\n"
	"     (its writer has not published a status yet); volume verify:\n"
	"     replicas differ\n"
	"  4  failed: a volume below its write quorum, no node up; volume verify:\n"
	"     a replica could not be compared\n";

static int cmd_secret(int argc, char **argv)
{
	int r;

	if (argc != 3 || strcmp(argv[1], "create") != 0) {
		fprintf(stderr, "usage: qbd secret create PATH\n");
		return EXIT_USAGE;
	}
	r = qbd_secret_create(argv[2]);
	if (r < 0) {
		fprintf(stderr, "qbd: %s: %s\n", argv[2], r == -EEXIST ?
			"exists already (a cluster keeps its secret; remove it first to "
			"replace it everywhere)" : strerror(-r));
		return EXIT_ERR;
	}
	printf("created %s (mode 0600): copy it to every node, as secret-file in "
	       "[cluster] of qbd.conf\n", argv[2]);
	return EXIT_OK;
}

int cli_need_etcd(void)
{
	char why[256];

	if (!cli_etcd) {
		fprintf(stderr, "qbd: no etcd: use --etcd URL[,URL...] or set QBD_ETCD\n");
		return EXIT_USAGE;
	}
	if (qbd_meta_endpoints_check(cli_etcd, why, sizeof why) < 0) {
		fprintf(stderr, "qbd: %s: etcd '%s': %s\n", cli_etcd_where, cli_etcd, why);
		return EXIT_USAGE;
	}
	return 0;
}

int cli_meta(struct qbd_meta **m)
{
	int r;

	if ((r = cli_need_etcd()))
		return r;
	r = qbd_meta_open(cli_etcd, m);
	if (r < 0) {
		fprintf(stderr, "qbd: etcd %s: %s\n", cli_etcd, strerror(-r));
		return EXIT_ERR;
	}
	return 0;
}

/* Options of the commands that take no more than --help (and --json, which
 * main strips). Returns -1 to go on, else an exit status. nargs is
 * the number of positional arguments required. */
int cli_simple_opts(int argc, char **argv, int nargs, const char *usage_text)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage_text, stdout);
			return EXIT_OK;
		}
		fputs(usage_text, stderr);
		return EXIT_USAGE;
	}
	if (argc - optind != nargs) {
		fputs(usage_text, stderr);
		return EXIT_USAGE;
	}
	return -1;
}

/* The program prog next to this qbd binary (the build tree, or the
 * install's bindir), else its bare name for the PATH. */
void cli_sibling_path(const char *prog, char *out, size_t len)
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

int main(int argc, char **argv)
{
	const char *etcd_flag = NULL, *secret_flag = NULL, *conf_path = NULL;
	struct qbd_setting st;
	char err[512];
	int i = 1;

	qbd_log_init("qbd");
	qbd_log_set_level(QBD_LOG_WARN);
	/* Global options come before the command; --json is also accepted
	 * anywhere after it. */
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--etcd") == 0 && i + 1 < argc) {
			etcd_flag = argv[++i];
		} else if (strncmp(argv[i], "--etcd=", 7) == 0) {
			etcd_flag = argv[i] + 7;
		} else if (strcmp(argv[i], "--secret-file") == 0 && i + 1 < argc) {
			secret_flag = argv[++i];
		} else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			conf_path = argv[++i];
		} else if (strcmp(argv[i], "--json") == 0) {
			cli_json = 1;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
			return EXIT_OK;
		} else {
			fprintf(stderr, "qbd: unknown option '%s'\n%s", argv[i], usage);
			return EXIT_USAGE;
		}
	}
	if (i >= argc) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (qbd_conf_open(conf_path, &cli_conf, err, sizeof err) < 0) {
		fprintf(stderr, "qbd: %s\n", err);
		return EXIT_USAGE;
	}
	qbd_conf_export_tls(cli_conf);
	if (qbd_conf_resolve(cli_conf, "cluster", NULL, "etcd", etcd_flag, "QBD_ETCD", 1, &st)) {
		cli_etcd = st.value;
		snprintf(cli_etcd_where, sizeof cli_etcd_where, "%s", st.where);
	}
	if (qbd_conf_resolve(cli_conf, "cluster", NULL, "secret-file", secret_flag,
			     QBD_AUTH_SECRET_ENV, 1, &st)) {
		admin_secret_file = st.value;
		/* The daemons qbd starts (attach) find it too. */
		setenv(QBD_AUTH_SECRET_ENV, st.value, 1);
	}
	/* Strip --json from the command's arguments. */
	int n = 0;
	for (int j = i; j < argc; j++) {
		if (strcmp(argv[j], "--json") == 0)
			cli_json = 1;
		else
			argv[i + n++] = argv[j];
	}
	argc = i + n;
	if (strcmp(argv[i], "node") == 0)
		return cmd_node(argc - i, argv + i);
	if (strcmp(argv[i], "volume") == 0 && i + 1 < argc &&
	    strcmp(argv[i + 1], "verify") == 0)
		return cmd_volume_verify(argc - i - 1, argv + i + 1);
	if (strcmp(argv[i], "volume") == 0 && i + 1 < argc &&
	    strcmp(argv[i + 1], "set") == 0)
		return cmd_volume_set(argc - i - 1, argv + i + 1);
	if (strcmp(argv[i], "volume") == 0)
		return cmd_volume(argc - i, argv + i);
	if (strcmp(argv[i], "attach") == 0 || strcmp(argv[i], "detach") == 0 ||
	    strcmp(argv[i], "mapped") == 0)
		return cmd_kernel(argc - i, argv + i);
	if (strcmp(argv[i], "dev") == 0)
		return cmd_dev(argc - i, argv + i);
	if (strcmp(argv[i], "secret") == 0)
		return cmd_secret(argc - i, argv + i);
	if (strcmp(argv[i], "status") == 0)
		return cmd_status(argc - i, argv + i);
	fprintf(stderr, "qbd: unknown command '%s'\n%s", argv[i], usage);
	return EXIT_USAGE;
}
