/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sparse form of a chunk (sparse.h): packing the written blocks of a
 * chunk read whole, and checking and expanding a received form into the
 * whole chunk that a RESYNC write stores.
 */
#include <errno.h>
#include <string.h>

#include "common/sparse.h"

static int bit(const uint8_t *bm, uint32_t i)
{
	return (bm[i / 8] >> (i % 8)) & 1;
}

uint32_t qbd_sparse_bitmap_bytes(uint32_t chunk_size, uint32_t block)
{
	return (chunk_size / block + 7) / 8;
}

size_t qbd_sparse_pack(uint8_t *chunk, const uint8_t *bm, uint32_t chunk_size,
		       uint32_t block)
{
	uint32_t n = chunk_size / block;
	size_t k = 0;

	/* Block b goes to position k <= b: moving them in order never
	 * overwrites one not yet moved. */
	for (uint32_t b = 0; b < n; b++) {
		if (!bit(bm, b))
			continue;
		if (k != b)
			memmove(chunk + k * block, chunk + (size_t)b * block, block);
		k++;
	}
	return k * block;
}

int qbd_sparse_check(const uint8_t *sp, size_t len, uint32_t chunk_size,
		     uint32_t block)
{
	uint32_t n = chunk_size / block, bmb = qbd_sparse_bitmap_bytes(chunk_size, block);
	size_t marked = 0;

	if (len < bmb)
		return -EINVAL;
	for (uint32_t i = n; i < bmb * 8; i++)
		if (bit(sp, i))
			return -EINVAL;
	for (uint32_t b = 0; b < n; b++)
		marked += (size_t)bit(sp, b);
	return len == bmb + marked * block ? 0 : -EINVAL;
}

int qbd_sparse_expand(const uint8_t *sp, size_t len, uint8_t *chunk,
		      uint32_t chunk_size, uint32_t block)
{
	uint32_t n = chunk_size / block;
	const uint8_t *src = sp + qbd_sparse_bitmap_bytes(chunk_size, block);

	if (qbd_sparse_check(sp, len, chunk_size, block) < 0)
		return -EINVAL;
	for (uint32_t b = 0; b < n; b++) {
		uint8_t *dst = chunk + (size_t)b * block;

		if (bit(sp, b)) {
			memcpy(dst, src, block);
			src += block;
		} else {
			memset(dst, 0, block);
		}
	}
	return 0;
}
