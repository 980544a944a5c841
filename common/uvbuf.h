/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writing a batch of buffers to a libuv stream without a write request
 * where the socket takes it all. Header only, for the programs built on
 * libuv (libqbd is not).
 */
#ifndef QBD_UVBUF_H
#define QBD_UVBUF_H

#include <stddef.h>
#include <uv.h>

/* Skip done bytes of the n buffers at *bufs: *bufs and *n then describe
 * what is left (done at most their total). */
static inline void qbd_uvbuf_skip(uv_buf_t **bufs, unsigned *n, size_t done)
{
	uv_buf_t *b = *bufs;

	while (done) {
		size_t step = done < b->len ? done : b->len;

		b->base += step;
		b->len -= step;
		done -= step;
		if (!b->len) {
			b++;
			(*n)--;
		}
	}
	*bufs = b;
}

/*
 * Write the n buffers at bufs (which may be changed): at once where the
 * socket takes them all (uv_try_write: no write request, no epoll change,
 * no callback in a later loop pass; uv_write costs an epoll_ctl per call),
 * the rest through uv_write(req, ..., cb). Returns 1 when all was written
 * (req unused, cb never runs), 0 when the rest is queued (cb runs later),
 * a negative libuv error when the write failed (nothing queued).
 */
static inline int qbd_uv_write_now(uv_write_t *req, uv_stream_t *s, uv_buf_t *bufs,
				   unsigned n, uv_write_cb cb)
{
	size_t total = 0;
	int rc;

	for (unsigned i = 0; i < n; i++)
		total += bufs[i].len;
	rc = uv_try_write(s, bufs, n);
	if (rc >= 0 && (size_t)rc == total)
		return 1;
	if (rc < 0 && rc != UV_EAGAIN)
		return rc;
	qbd_uvbuf_skip(&bufs, &n, rc > 0 ? (size_t)rc : 0);
	rc = uv_write(req, s, bufs, n, cb);
	return rc < 0 ? rc : 0;
}

#endif
