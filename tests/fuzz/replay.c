/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Replay driver for the fuzz targets without libFuzzer: links with one
 * target (tests/fuzz/fuzz-*.c) and runs LLVMFuzzerTestOneInput on every
 * file named, and on every file in every directory named (not
 * recursively, in name order, dot files skipped). Each input is read
 * into a buffer of exactly its size, so that a read past its end is a
 * sanitizer report. make check builds it with the sanitizers and runs it
 * over the seed corpus and the regression inputs (tests/run-tests).
 *
 *   replay-TARGET PATH...
 *
 * Exit 0 when every input ran (a crash ends the process), 1 when a path
 * cannot be read or no input was found.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/fuzz/fuzz.h"

/* Run the target on one file. 0 or -1 (reported). */
static int replay_file(const char *path)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		goto fail;
	}
	buf = malloc((size_t)st.st_size);
	if (!buf && st.st_size) {
		fprintf(stderr, "replay: %s: out of memory\n", path);
		goto fail;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n <= 0) {
			fprintf(stderr, "replay: %s: %s\n", path,
				n < 0 ? strerror(errno) : "shorter than its size");
			goto fail;
		}
		got += (size_t)n;
	}
	close(fd);
	fprintf(stderr, "replay: %s (%zu bytes)\n", path, got);
	LLVMFuzzerTestOneInput(buf, got);
	free(buf);
	return 0;
fail:
	free(buf);
	if (fd >= 0)
		close(fd);
	return -1;
}

static int replay_skip_dot(const struct dirent *e)
{
	return e->d_name[0] != '.';
}

/* Run every file of a directory; returns how many ran, or -1. */
static int replay_dir(const char *dir)
{
	struct dirent **names;
	int n = scandir(dir, &names, replay_skip_dot, alphasort);
	int ran = 0, err = 0;

	if (n < 0) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];

		if (!err) {
			snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
			if (replay_file(path) < 0)
				err = -1;
			else
				ran++;
		}
		free(names[i]);
	}
	free(names);
	return err ? err : ran;
}

int main(int argc, char **argv)
{
	int total = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;
		int n;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (S_ISDIR(st.st_mode))
			n = replay_dir(argv[i]);
		else
			n = replay_file(argv[i]) < 0 ? -1 : 1;
		if (n < 0)
			return 1;
		total += n;
	}
	if (total == 0) {
		fprintf(stderr, "replay: no input found\n");
		return 1;
	}
	fprintf(stderr, "replay: %d inputs ran\n", total);
	return 0;
}
