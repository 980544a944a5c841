/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nbd-stream: an NBD client (libnbd) for failover tests. It keeps its own
 * record of what the server acknowledged, so a test can kill the server
 * mid-stream and check every acknowledged write afterwards.
 *
 *   nbd-stream write  URI LOG START COUNT SEED [QD]
 *       write blocks START..START+COUNT-1 (4 KiB each, contents a pure
 *       function of SEED and the block number), QD at a time (default 8);
 *       append each acknowledged block number to LOG as it completes.
 *       Exit 0 when all were written, 3 when the server failed or went away
 *       (normal when the test kills it), 1 on other errors.
 *   nbd-stream verify URI LOG START COUNT SEED
 *       read the blocks back: every block in LOG must hold its contents;
 *       the others hold them or zeros (a write in flight). Exit 0 or 1.
 *   nbd-stream cmd URI
 *       one command per stdin line, one answer per stdout line ("ok" or
 *       "error: MESSAGE"): "write BLOCK SEED", "verify BLOCK SEED", "flush".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BS 4096u

static void fill(uint8_t *b, uint64_t block, uint64_t seed)
{
	uint64_t z = seed * 0x9e3779b97f4a7c15ull + block * 0xbf58476d1ce4e5b9ull + 1;

	for (unsigned i = 0; i < BS; i += 8) {
		z ^= z >> 31;
		z *= 0x94d049bb133111ebull;
		memcpy(b + i, &z, 8);
	}
	memcpy(b, &block, 8); /* readable in a hex dump */
}

static struct nbd_handle *open_uri(const char *uri)
{
	struct nbd_handle *h = nbd_create();

	if (!h || nbd_connect_uri(h, uri) < 0) {
		fprintf(stderr, "nbd-stream: %s: %s\n", uri, nbd_get_error());
		if (h)
			nbd_close(h);
		return NULL;
	}
	return h;
}

struct slot {
	uint8_t buf[BS];
	uint64_t block;
	bool busy;
	int logfd;
	int *failed;
};

static int on_written(void *user, int *error)
{
	struct slot *s = user;
	char line[32];
	int n;

	s->busy = false;
	if (*error) {
		if (!*s->failed)
			fprintf(stderr, "nbd-stream: write of block %" PRIu64 ": %s\n", s->block,
				strerror(*error));
		*s->failed = *error;
		return 1;
	}
	n = snprintf(line, sizeof line, "%" PRIu64 "\n", s->block);
	if (write(s->logfd, line, (size_t)n) != n)
		*s->failed = EIO;
	return 1;
}

static int do_write(const char *uri, const char *log, uint64_t start, uint64_t count,
		    uint64_t seed, unsigned qd)
{
	struct nbd_handle *h = open_uri(uri);
	struct slot *slots = calloc(qd, sizeof(*slots));
	uint64_t next = start;
	int failed = 0, logfd, rc = 0;

	if (!h || !slots)
		return 1;
	logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0) {
		perror(log);
		return 1;
	}
	while (!failed && (next < start + count || nbd_aio_in_flight(h) > 0)) {
		for (unsigned i = 0; i < qd && next < start + count && !failed; i++) {
			struct slot *s = &slots[i];
			nbd_completion_callback cb = { .callback = on_written, .user_data = s };

			if (s->busy)
				continue;
			s->block = next++;
			s->logfd = logfd;
			s->failed = &failed;
			fill(s->buf, s->block, seed);
			s->busy = true;
			if (nbd_aio_pwrite(h, s->buf, BS, s->block * BS, cb, 0) < 0) {
				fprintf(stderr, "nbd-stream: %s\n", nbd_get_error());
				s->busy = false;
				failed = EIO;
			}
		}
		if (nbd_aio_in_flight(h) > 0 && nbd_poll(h, -1) < 0) {
			fprintf(stderr, "nbd-stream: %s\n", nbd_get_error());
			failed = ENOTCONN;
		}
	}
	if (failed)
		rc = 3;
	close(logfd);
	nbd_close(h);
	free(slots);
	return rc;
}

static int do_verify(const char *uri, const char *log, uint64_t start, uint64_t count,
		     uint64_t seed)
{
	struct nbd_handle *h = open_uri(uri);
	uint8_t *acked = calloc(count, 1);
	uint8_t want[BS], got[BS], zero[BS] = { 0 };
	uint64_t nacked = 0, present = 0, bad = 0;
	char line[64];
	FILE *f;

	if (!h || !acked)
		return 1;
	f = fopen(log, "r");
	if (!f) {
		perror(log);
		return 1;
	}
	while (fgets(line, sizeof line, f)) {
		uint64_t b = strtoull(line, NULL, 10);

		if (b >= start && b < start + count && !acked[b - start]) {
			acked[b - start] = 1;
			nacked++;
		}
	}
	fclose(f);
	for (uint64_t b = start; b < start + count; b++) {
		fill(want, b, seed);
		if (nbd_pread(h, got, BS, b * BS, 0) < 0) {
			fprintf(stderr, "nbd-stream: read block %" PRIu64 ": %s\n", b, nbd_get_error());
			return 1;
		}
		if (!memcmp(got, want, BS)) {
			present++;
		} else if (acked[b - start] || memcmp(got, zero, BS)) {
			if (bad++ < 10)
				fprintf(stderr, "nbd-stream: block %" PRIu64 " (%s) holds wrong data\n", b,
					acked[b - start] ? "acknowledged" : "not acknowledged");
		}
	}
	printf("nbd-stream: %" PRIu64 " blocks acknowledged, %" PRIu64 " present, %" PRIu64 " wrong\n",
	       nacked, present, bad);
	nbd_close(h);
	free(acked);
	return bad ? 1 : 0;
}

static int do_cmd(const char *uri)
{
	struct nbd_handle *h = open_uri(uri);
	char line[128], op[16];
	uint8_t want[BS], got[BS];

	if (!h)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin)) {
		uint64_t block = 0, seed = 0;
		int n = sscanf(line, "%15s %" SCNu64 " %" SCNu64, op, &block, &seed), r;

		if (n >= 1 && !strcmp(op, "flush")) {
			r = nbd_flush(h, 0);
		} else if (n == 3 && !strcmp(op, "write")) {
			fill(want, block, seed);
			r = nbd_pwrite(h, want, BS, block * BS, 0);
		} else if (n == 3 && !strcmp(op, "verify")) {
			fill(want, block, seed);
			r = nbd_pread(h, got, BS, block * BS, 0);
			if (r == 0 && memcmp(got, want, BS)) {
				printf("error: block %" PRIu64 " does not hold seed %" PRIu64 "\n",
				       block, seed);
				continue;
			}
		} else {
			printf("error: bad command\n");
			continue;
		}
		if (r < 0)
			printf("error: %s\n", nbd_get_error());
		else
			printf("ok\n");
	}
	nbd_close(h);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "cmd"))
		return do_cmd(argv[2]);
	if ((argc == 7 || argc == 8) && !strcmp(argv[1], "write"))
		return do_write(argv[2], argv[3], strtoull(argv[4], NULL, 10),
				strtoull(argv[5], NULL, 10), strtoull(argv[6], NULL, 10),
				argc == 8 ? (unsigned)atoi(argv[7]) : 8);
	if (argc == 7 && !strcmp(argv[1], "verify"))
		return do_verify(argv[2], argv[3], strtoull(argv[4], NULL, 10),
				 strtoull(argv[5], NULL, 10), strtoull(argv[6], NULL, 10));
	fprintf(stderr, "usage: nbd-stream write URI LOG START COUNT SEED [QD]\n"
			"       nbd-stream verify URI LOG START COUNT SEED\n"
			"       nbd-stream cmd URI\n");
	return 2;
}
