/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nbd-adopt: serve a volume through nbd_serve over adopted connections,
 * the way qbd-nbd serves the kernel: no handshake, transmission phase
 * from the first byte, simple replies.
 *
 *   nbd-adopt [--etcd URL] --volume NAME [--conns N] -- CMD [ARGS...]
 *
 * Opens the volume, makes N (default 2) socketpairs plus one spare, and
 * from on_ready starts CMD with the client ends of the N pairs on fds 3,
 * 4, ... and the spare's client end on fd 3 + N. The server end of the
 * spare is adopted (from on_conn_end) when the first connection ends
 * without NBD_CMD_DISC, as a daemon replaces a socket the kernel gave up.
 * The server stops once every connection ended and one sent DISC.
 * Prints "end INDEX disc|nodisc" and "adopted INDEX" lines on stdout.
 * Exit: CMD's exit status, or 1 if serving failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "nbd-frontend/nbd.h"
#include "replicator/qbd.h"

#define MAX_CONNS 8

extern char **environ;

struct adopt {
	char **cmd;
	unsigned n;
	int client[MAX_CONNS + 1];  /* CMD's ends; -1 once handed over */
	int spare;                  /* server end of the spare, -1 once adopted */
	unsigned live;              /* adopted connections not ended */
	pid_t child;
};

static int adopt_ready(struct nbd_server *s, void *arg)
{
	struct adopt *a = arg;
	posix_spawn_file_actions_t fa;
	int high[MAX_CONNS + 1], r;

	(void)s;
	posix_spawn_file_actions_init(&fa);
	/* Move the ends out of the way first, so that dup2 onto 3, 4, ...
	 * never overwrites another end. */
	for (unsigned i = 0; i <= a->n; i++) {
		high[i] = fcntl(a->client[i], F_DUPFD_CLOEXEC, 100);
		if (high[i] < 0) {
			perror("nbd-adopt: fcntl");
			return -errno;
		}
		posix_spawn_file_actions_adddup2(&fa, high[i], 3 + (int)i);
	}
	r = posix_spawnp(&a->child, a->cmd[0], &fa, NULL, a->cmd, environ);
	posix_spawn_file_actions_destroy(&fa);
	for (unsigned i = 0; i <= a->n; i++) {
		close(high[i]);
		close(a->client[i]);
		a->client[i] = -1;
	}
	if (r != 0) {
		fprintf(stderr, "nbd-adopt: %s: %s\n", a->cmd[0], strerror(r));
		a->child = 0;
		return -r;
	}
	return 0;
}

static void adopt_conn_end(struct nbd_server *s, int index, bool disc, void *arg)
{
	struct adopt *a = arg;

	printf("end %d %s\n", index, disc ? "disc" : "nodisc");
	a->live--;
	if (!disc && a->spare >= 0) {
		int fd = a->spare, idx;

		a->spare = -1;
		idx = nbd_server_adopt(s, fd);
		if (idx < 0)
			printf("adopt failed: %s\n", strerror(-idx));
		else
			printf("adopted %d\n", idx);
		a->live += idx >= 0;
	}
	/* CMD went away without DISC everywhere: do not wait forever. */
	if (a->live == 0)
		nbd_server_stop(s);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "etcd", required_argument, NULL, 'e' },
		{ "volume", required_argument, NULL, 'v' },
		{ "conns", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	struct qbd_open_opts o = { 0 };
	struct adopt a = { .n = 2, .spare = -1 };
	struct nbd_serve_opts so = { 0 };
	int server[MAX_CONNS];
	struct qbd_volume *v = NULL;
	int c, r, status = 0;

	qbd_log_init("nbd-adopt");
	while ((c = getopt_long(argc, argv, "+e:v:n:", lo, NULL)) != -1) {
		switch (c) {
		case 'e': o.etcd = optarg; break;
		case 'v': o.volume = optarg; break;
		case 'n': a.n = (unsigned)atoi(optarg); break;
		default: goto usage;
		}
	}
	if (!o.volume || optind >= argc || a.n < 1 || a.n > MAX_CONNS)
		goto usage;
	a.cmd = argv + optind;
	a.live = a.n;
	r = qbd_open(&o, &v);
	if (r < 0) {
		fprintf(stderr, "nbd-adopt: open %s: %s\n", o.volume, strerror(-r));
		return 1;
	}
	for (unsigned i = 0; i <= a.n; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
			perror("nbd-adopt: socketpair");
			return 1;
		}
		if (i < a.n)
			server[i] = sv[0];
		else
			a.spare = sv[0];
		a.client[i] = sv[1];
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	so.export_name = o.volume;
	so.fds = server;
	so.n_fds = a.n;
	so.on_ready = adopt_ready;
	so.on_conn_end = adopt_conn_end;
	so.arg = &a;
	so.stop_after_disc = true;
	r = nbd_serve(v, &so);
	if (a.spare >= 0)
		close(a.spare);
	qbd_close(v);
	if (a.child > 0 && waitpid(a.child, &status, 0) == -1)
		status = 1 << 8;
	if (r < 0) {
		fprintf(stderr, "nbd-adopt: serve: %s\n", strerror(-r));
		return 1;
	}
	if (!WIFEXITED(status)) {
		fprintf(stderr, "nbd-adopt: %s died\n", a.cmd[0]);
		return 1;
	}
	return WEXITSTATUS(status);
usage:
	fprintf(stderr, "usage: nbd-adopt [--etcd URL] --volume NAME [--conns N] -- CMD [ARGS...]\n");
	return 2;
}
