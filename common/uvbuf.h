/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A write's buffers, moved past the bytes the socket took: for a
 * uv_try_write that took part of a batch, before the rest goes to
 * uv_write. Header only, for the programs built on libuv (libqbd is not).
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

#endif
