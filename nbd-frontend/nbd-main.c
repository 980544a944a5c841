/* SPDX-License-Identifier: Apache-2.0 */
/* qbd-nbd: the single writer of one volume, served over NBD on a unix
 * socket until SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/qbd.h"
#include "nbd.h"

static const char usage[] =
	"usage: qbd-nbd --volume NAME --socket PATH [--etcd URL] [--zone ZONE]\n"
	"               [--force] [--resync-rate BYTES/S] [--log-level error|warn|info|debug]\n"
	"Serve a qbd volume over NBD (fixed newstyle) on a unix socket, e.g. for\n"
	"  nbdinfo 'nbd+unix:///?socket=PATH'  or  qemu -drive file=nbd+unix:///?socket=PATH\n"
	"Opening the volume takes a new epoch: any earlier writer is fenced.\n"
	"A volume attached elsewhere is refused unless --force is given (a takeover,\n"
	"for when the other node is gone; writes then wait out its read lease).\n"
	"--resync-rate limits background copying to stale replicas (e.g. 64M;\n"
	"default unlimited).\n"
	"--etcd defaults to $QBD_ETCD. SIGTERM drains requests, flushes and exits 0.\n";

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "etcd", required_argument, NULL, 'e' },
		{ "volume", required_argument, NULL, 'v' },
		{ "socket", required_argument, NULL, 's' },
		{ "zone", required_argument, NULL, 'z' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "force", no_argument, NULL, 'f' },
		{ "resync-rate", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct qbd_open_opts o = { .etcd = getenv("QBD_ETCD") };
	const char *sock = NULL;
	struct qbd_volume *v;
	int c, r;

	qbd_log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'e': o.etcd = optarg; break;
		case 'v': o.volume = optarg; break;
		case 's': sock = optarg; break;
		case 'z': o.zone = optarg; break;
		case 'f': o.force = 1; break;
		case 'r':
			if (qbd_parse_size(optarg, &o.resync_rate) < 0) {
				fprintf(stderr, "qbd-nbd: bad --resync-rate '%s'\n", optarg);
				return 1;
			}
			break;
		case 'l':
			r = qbd_log_parse_level(optarg);
			if (r < 0) {
				fprintf(stderr, "qbd-nbd: bad --log-level '%s'\n", optarg);
				return 1;
			}
			qbd_log_set_level(r);
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (!o.volume || !sock || !o.etcd || optind != argc) {
		fprintf(stderr, "qbd-nbd: --volume, --socket and --etcd (or QBD_ETCD) are required\n%s",
			usage);
		return 1;
	}
	r = qbd_open(&o, &v);
	if (r == -EBUSY) {
		fprintf(stderr, "qbd-nbd: volume '%s' is attached elsewhere (see the log above "
			"and 'qbd volume status %s'); use --force to take it over if that "
			"node is gone\n", o.volume, o.volume);
		return 1;
	}
	if (r < 0) {
		fprintf(stderr, "qbd-nbd: cannot open volume '%s': %s\n", o.volume, strerror(-r));
		return 1;
	}
	r = nbd_serve_unix(v, o.volume, sock);
	qbd_close(v);
	if (r < 0) {
		fprintf(stderr, "qbd-nbd: %s: %s\n", sock, strerror(-r));
		return 1;
	}
	qbd_info("nbd", "stopped");
	return 0;
}
