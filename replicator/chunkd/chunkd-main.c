/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd command line: parse and check the options, then run the chunk
 * server (chunkd.c) until SIGTERM/SIGINT.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkd.h"
#include "common/log.h"
#include "common/util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qbd-chunkd --data PATH --listen ADDR:PORT --zone NAME --etcd URL\n"
		"                  [--size SIZE] [--advertise ADDR:PORT] [--scrub-rate RATE]\n"
		"                  [--buffers N] [--log-level L]\n"
		"  --data PATH          store file or block device\n"
		"  --size SIZE          create the file with SIZE if absent (default 8G)\n"
		"  --listen ADDR:PORT   address to serve the qbd protocol on\n"
		"  --advertise ADDR:PORT address clients use (default: --listen)\n"
		"  --zone NAME          failure zone of this node\n"
		"  --etcd URL           etcd endpoint(s) (default: $QBD_ETCD)\n"
		"  --scrub-rate RATE    background scrub, bytes/s (e.g. 4M; default 4M; 0 = off)\n"
		"  --buffers N          request buffers registered with the ring, a chunk\n"
		"                       (1 MiB) of locked memory each (default 32; 0 = none)\n"
		"  --log-level L        error|warn|info|debug\n");
}

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "qbd-chunkd: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	usage(stderr);
	return 1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "data", required_argument, NULL, 'd' },
		{ "listen", required_argument, NULL, 'l' },
		{ "zone", required_argument, NULL, 'z' },
		{ "etcd", required_argument, NULL, 'e' },
		{ "size", required_argument, NULL, 's' },
		{ "advertise", required_argument, NULL, 'a' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "scrub-rate", required_argument, NULL, 'r' },
		{ "buffers", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qbd_chunkd_opts o = { .create_size = 8ull << 30,
				     .scrub_rate = QBD_CHUNKD_SCRUB_RATE,
				     .buffers = QBD_CHUNKD_BUFFERS };
	unsigned long n;
	char *end;
	char host[128];
	uint16_t port;
	int c, lvl;

	qbd_log_init("qbd-chunkd");
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': o.data = optarg; break;
		case 'l': o.listen = optarg; break;
		case 'z': o.zone = optarg; break;
		case 'e': o.etcd = optarg; break;
		case 'a': o.advertise = optarg; break;
		case 's':
			if (qbd_parse_size(optarg, &o.create_size) < 0 || o.create_size == 0)
				return bad("bad --size '%s'", optarg);
			break;
		case 'r':
			if (qbd_parse_size(optarg, &o.scrub_rate) < 0)
				return bad("bad --scrub-rate '%s' (bytes per second, e.g. 4M; 0 = off)",
					   optarg);
			break;
		case 'b':
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || n > 4096)
				return bad("bad --buffers '%s' (a count, 0 to 4096)", optarg);
			o.buffers = (unsigned)n;
			break;
		case 'L':
			lvl = qbd_log_parse_level(optarg);
			if (lvl < 0)
				return bad("bad --log-level '%s'", optarg);
			qbd_log_set_level(lvl);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc)
		return bad("unexpected argument '%s'", argv[optind]);
	if (!o.etcd || !*o.etcd)
		o.etcd = getenv("QBD_ETCD");
	if (!o.data || !*o.data)
		return bad("%s", "--data is required");
	if (!o.listen)
		return bad("%s", "--listen is required");
	if (qbd_parse_hostport(o.listen, host, sizeof host, &port) < 0)
		return bad("bad --listen '%s' (want ADDR:PORT)", o.listen);
	if (o.advertise &&
	    (qbd_parse_hostport(o.advertise, host, sizeof host, &port) < 0 || port == 0))
		return bad("bad --advertise '%s' (want ADDR:PORT)", o.advertise);
	if (!o.zone || !*o.zone || strlen(o.zone) >= 64)
		return bad("%s", "--zone NAME is required (1..63 characters)");
	if (!o.etcd || !*o.etcd)
		return bad("%s", "--etcd URL (or QBD_ETCD) is required");

	signal(SIGPIPE, SIG_IGN);
	return qbd_chunkd_run(&o) == 0 ? 0 : 1;
}
