/* SPDX-License-Identifier: Apache-2.0 */
/* qbd: the command-line tool. Global options, then a command. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"

const char *cli_etcd;
int cli_json;

static const char usage[] =
	"usage: qbd [--etcd URL] [--json] COMMAND ...\n"
	"\n"
	"  node list                      chunk servers, their zones and state\n"
	"  volume create NAME --size SIZE [--replicas R] [--write-quorum W]\n"
	"  volume list | info NAME | status NAME | delete NAME\n"
	"  volume verify NAME             compare every chunk on all replicas\n"
	"  attach NAME [--device /dev/nbdN] [--connections N] [--zone Z] [--force]\n"
	"                                 attach as a block device on this node\n"
	"  detach DEVICE|NAME [--force]   flush and disconnect it\n"
	"  mapped                         this node's qbd devices\n"
	"  dev up --state DIR [--zones a,b,c] [--size SIZE]\n"
	"                                 local cluster: etcd + one chunk server per zone\n"
	"  dev down --state DIR | dev status --state DIR\n"
	"\n"
	"--etcd defaults to $QBD_ETCD. Exit status: 0 ok, 1 error, 2 usage.\n";

int cli_meta(struct qbd_meta **m)
{
	int r;

	if (!cli_etcd) {
		fprintf(stderr, "qbd: no etcd: use --etcd URL or set QBD_ETCD\n");
		return EXIT_USAGE;
	}
	r = qbd_meta_open(cli_etcd, m);
	if (r < 0) {
		fprintf(stderr, "qbd: etcd %s: %s\n", cli_etcd, strerror(-r));
		return EXIT_ERR;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int i = 1;

	qbd_log_init("qbd");
	qbd_log_set_level(QBD_LOG_WARN);
	cli_etcd = getenv("QBD_ETCD");
	/* Global options come before the command; --json is also accepted
	 * anywhere after it. */
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--etcd") == 0 && i + 1 < argc) {
			cli_etcd = argv[++i];
		} else if (strncmp(argv[i], "--etcd=", 7) == 0) {
			cli_etcd = argv[i] + 7;
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
	if (strcmp(argv[i], "volume") == 0)
		return cmd_volume(argc - i, argv + i);
	if (strcmp(argv[i], "attach") == 0 || strcmp(argv[i], "detach") == 0 ||
	    strcmp(argv[i], "mapped") == 0)
		return cmd_kernel(argc - i, argv + i);
	if (strcmp(argv[i], "dev") == 0)
		return cmd_dev(argc - i, argv + i);
	fprintf(stderr, "qbd: unknown command '%s'\n%s", argv[i], usage);
	return EXIT_USAGE;
}
