/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's blocking I/O: the writes, zeroings and syncs of format,
 * recovery, clean close and volume deletion, which run before the ring
 * serves requests or as rare administrative steps. Every I/O, blocking or
 * through the ring, is reported to qbd_engine_opts.io_hook by eng_hook.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define B QBD_ENGINE_BLOCK

void eng_hook(struct qbd_engine *e, enum qbd_engine_io_kind kind, bool done, int res,
	      uint64_t id, uint64_t off, uint64_t len, const void *buf, bool dsync)
{
	struct qbd_engine_io io = { .kind = kind, .done = done, .res = res, .id = id,
				    .offset = off, .length = len, .buf = buf, .dsync = dsync };

	e->io_hook(e->io_hook_user, &io);
}

/* Mode of fallocate that makes a range read as zeros: a hole in a file,
 * zeroed blocks on a device. */
int eng_zero_mode(const struct qbd_engine *e)
{
	return e->blockdev ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
			   : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
}

int eng_pwrite(struct qbd_engine *e, const void *buf, size_t len, uint64_t off)
{
	uint64_t id = ++e->io_seq;
	int r;

	if (e->io_hook)
		eng_hook(e, QBD_ENGINE_IO_WRITE, false, 0, id, off, len, buf, false);
	r = qbd_pwrite_full(e->fd, buf, len, (off_t)off);
	if (e->io_hook)
		eng_hook(e, QBD_ENGINE_IO_WRITE, true, r, id, off, len, NULL, false);
	return r;
}

int eng_zero(struct qbd_engine *e, uint64_t off, uint64_t len)
{
	uint64_t id = ++e->io_seq;
	int r;

	if (e->io_hook)
		eng_hook(e, QBD_ENGINE_IO_ZERO, false, 0, id, off, len, NULL, false);
	r = fallocate(e->fd, eng_zero_mode(e), (off_t)off, (off_t)len) == -1 ? -errno : 0;
	if (e->io_hook)
		eng_hook(e, QBD_ENGINE_IO_ZERO, true, r, id, off, len, NULL, false);
	return r;
}

int eng_sync(struct qbd_engine *e)
{
	uint64_t id = ++e->io_seq;
	int r;

	if (e->io_hook)
		eng_hook(e, QBD_ENGINE_IO_SYNC, false, 0, id, 0, 0, NULL, false);
	r = fdatasync(e->fd) == -1 ? -errno : 0;
	if (e->io_hook)
		eng_hook(e, QBD_ENGINE_IO_SYNC, true, r, id, 0, 0, NULL, false);
	return r;
}
