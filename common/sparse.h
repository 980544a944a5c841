/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sparse form of a chunk, as resync copies carry it on the wire
 * (READ and RESYNC WRITE with QBD_WIRE_F_SPARSE): the chunk's written
 * bitmap, one bit per block (bit i is byte i / 8, bit i % 8; ceil(blocks
 * / 8) bytes; bits past the last block clear), then the bytes of each
 * block the bitmap marks, in block order. Blocks not marked are holes:
 * they read as zeros. A chunk with one written block costs the bitmap
 * and that block, not the chunk.
 */
#ifndef QBD_SPARSE_H
#define QBD_SPARSE_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of the bitmap of a chunk of chunk_size bytes in blocks of block
 * bytes (block divides chunk_size). */
uint32_t qbd_sparse_bitmap_bytes(uint32_t chunk_size, uint32_t block);

/* Move the blocks of chunk (chunk_size bytes) that bm marks to its
 * front, in block order (the rest of chunk is left as it is): with bm
 * just before chunk in memory, the two are then the sparse form. Returns
 * the bytes of blocks kept (marked blocks x block). */
size_t qbd_sparse_pack(uint8_t *chunk, const uint8_t *bm, uint32_t chunk_size,
		       uint32_t block);

/* Is sp (len bytes) a well-formed sparse form of a chunk: the bitmap
 * plus exactly the blocks it marks, no bit past the last block? 0 or
 * -EINVAL. */
int qbd_sparse_check(const uint8_t *sp, size_t len, uint32_t chunk_size,
		     uint32_t block);

/* Check the sparse form sp (len bytes) and write the chunk it stands
 * for to chunk (chunk_size bytes, holes zeroed; not overlapping sp).
 * 0, or -EINVAL (len is not the bitmap plus the blocks it marks, or a
 * bit is set past the last block); chunk is untouched on error. */
int qbd_sparse_expand(const uint8_t *sp, size_t len, uint8_t *chunk,
		      uint32_t chunk_size, uint32_t block);

#endif
