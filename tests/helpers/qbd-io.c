/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-io: a test driver on libqbd.
 *
 *   qbd-io [--etcd URL] --volume NAME [--zone Z] write OFFSET LEN SEED
 *   qbd-io ... verify OFFSET LEN SEED
 *   qbd-io ... read OFFSET LEN > file
 *   qbd-io ... flush
 *   qbd-io ... fence-test
 *
 * Patterns are a pure function of (seed, absolute byte offset), so any
 * sub-range of a written range can be verified. Exit 0 ok, 1 failure;
 * messages on stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/qbd.h"

static uint8_t pattern_byte(uint64_t seed, uint64_t off)
{
	uint64_t z = seed * 0x9e3779b97f4a7c15ull + (off >> 3) + 1;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return (uint8_t)(z >> ((off & 7) * 8));
}

static void fill(uint8_t *b, uint64_t off, uint32_t len, uint64_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		b[i] = pattern_byte(seed, off + i);
}

static int parse_u64(const char *s, uint64_t *out)
{
	if (qbd_parse_size(s, out) < 0) {
		fprintf(stderr, "qbd-io: bad number '%s'\n", s);
		return -EINVAL;
	}
	return 0;
}

static int do_io(struct qbd_volume *v, const char *cmd, char **args, int nargs)
{
	uint64_t off, len, seed = 0;
	uint8_t *buf = NULL;
	int err;

	if (nargs < 2 || parse_u64(args[0], &off) || parse_u64(args[1], &len) ||
	    (strcmp(cmd, "read") && (nargs < 3 || parse_u64(args[2], &seed))))
		return -EINVAL;
	if (len == 0 || len > (32u << 20)) {
		fprintf(stderr, "qbd-io: length must be 1..32M\n");
		return -EINVAL;
	}
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	if (!strcmp(cmd, "write")) {
		fill(buf, off, (uint32_t)len, seed);
		err = qbd_pwrite(v, buf, (uint32_t)len, off, 0);
		if (err)
			fprintf(stderr, "qbd-io: write %llu+%llu: %s\n",
				(unsigned long long)off, (unsigned long long)len,
				strerror(-err));
	} else {
		err = qbd_pread(v, buf, (uint32_t)len, off);
		if (err) {
			fprintf(stderr, "qbd-io: read %llu+%llu: %s\n",
				(unsigned long long)off, (unsigned long long)len,
				strerror(-err));
		} else if (!strcmp(cmd, "read")) {
			err = qbd_write_full(STDOUT_FILENO, buf, len);
		} else {
			for (uint64_t i = 0; i < len; i++) {
				if (buf[i] != pattern_byte(seed, off + i)) {
					fprintf(stderr, "qbd-io: verify: mismatch at offset %llu: got %02x want %02x\n",
						(unsigned long long)(off + i), buf[i],
						pattern_byte(seed, off + i));
					err = -EILSEQ;
					break;
				}
			}
		}
	}
	free(buf);
	return err;
}

static int check(const char *what, int got, int want)
{
	fprintf(stderr, "qbd-io: fence-test: %s: %s (want %s)\n", what,
		got ? strerror(-got) : "ok", want ? strerror(-want) : "ok");
	return got == want ? 0 : -1;
}

static int fence_test(const struct qbd_open_opts *o)
{
	struct qbd_volume *a = NULL, *b = NULL;
	uint8_t buf[4096], buf2[4096];
	int bad = 0, err;

	fill(buf, 0, sizeof(buf), 77);
	fill(buf2, 4096, sizeof(buf2), 77);
	err = qbd_open(o, &a);
	if (err) {
		fprintf(stderr, "qbd-io: fence-test: open A: %s\n", strerror(-err));
		return -1;
	}
	struct qbd_open_opts ob = *o;

	bad |= check("A write", qbd_pwrite(a, buf, sizeof(buf), 0, 0), 0);
	/* A holds the attachment: B is refused unless it forces a takeover. */
	ob.force = 0;
	bad |= check("B open without force", qbd_open(&ob, &b), -EBUSY);
	ob.force = 1;
	err = qbd_open(&ob, &b);
	if (err) {
		fprintf(stderr, "qbd-io: fence-test: open B: %s\n", strerror(-err));
		qbd_close(a);
		return -1;
	}
	fprintf(stderr, "qbd-io: fence-test: A epoch %llu, B epoch %llu\n",
		(unsigned long long)qbd_epoch(a), (unsigned long long)qbd_epoch(b));
	bad |= check("A write after B opened", qbd_pwrite(a, buf2, sizeof(buf2), 4096, 0),
		     -EPERM);
	bad |= check("A flush after B opened", qbd_flush(a), -EPERM);
	bad |= check("B write", qbd_pwrite(b, buf2, sizeof(buf2), 4096, 0), 0);
	bad |= check("B flush", qbd_flush(b), 0);
	qbd_close(a);
	qbd_close(b);
	fprintf(stderr, "qbd-io: fence-test: %s\n", bad ? "FAILED" : "passed");
	return bad ? -1 : 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: qbd-io [--etcd URL] --volume NAME [--zone Z] CMD ARGS\n"
		"  write OFFSET LEN SEED | verify OFFSET LEN SEED |\n"
		"  read OFFSET LEN | flush | fence-test\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "etcd", required_argument, NULL, 'e' },
		{ "volume", required_argument, NULL, 'v' },
		{ "zone", required_argument, NULL, 'z' },
		{ NULL, 0, NULL, 0 },
	};
	struct qbd_open_opts o = { 0 };
	struct qbd_volume *v = NULL;
	const char *cmd;
	int c, err;

	qbd_log_init("qbd-io");
	while ((c = getopt_long(argc, argv, "e:v:z:", lo, NULL)) != -1) {
		switch (c) {
		case 'e': o.etcd = optarg; break;
		case 'v': o.volume = optarg; break;
		case 'z': o.zone = optarg; break;
		default: usage(); return 1;
		}
	}
	if (!o.volume || optind >= argc) {
		usage();
		return 1;
	}
	cmd = argv[optind++];
	if (!strcmp(cmd, "fence-test"))
		return fence_test(&o) ? 1 : 0;
	if (strcmp(cmd, "write") && strcmp(cmd, "verify") && strcmp(cmd, "read") &&
	    strcmp(cmd, "flush")) {
		usage();
		return 1;
	}
	err = qbd_open(&o, &v);
	if (err) {
		fprintf(stderr, "qbd-io: open %s: %s\n", o.volume, strerror(-err));
		return 1;
	}
	if (!strcmp(cmd, "flush")) {
		err = qbd_flush(v);
		if (err)
			fprintf(stderr, "qbd-io: flush: %s\n", strerror(-err));
	} else {
		err = do_io(v, cmd, argv + optind, argc - optind);
		if (err == -EINVAL)
			usage();
	}
	qbd_close(v);
	return err ? 1 : 0;
}
