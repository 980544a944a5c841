/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine's per-block checksum, XXH3-64, on the read and write paths.
 * libxxhash as packaged is built for the baseline x86-64 (SSE2); where
 * the CPU has AVX2, the same function compiled for it (csum-avx2.c, from
 * xxhash's header-only mode) runs about twice as fast: a 1 MiB read or
 * write verifies or computes 256 of them. Same values either way.
 */
#include <xxhash.h>

#include "internal.h"

uint64_t eng_csum(const void *p, size_t len)
{
#if ENG_CSUM_AVX2
	static int avx2 = -1;

	if (avx2 < 0)
		avx2 = __builtin_cpu_supports("avx2");
	if (avx2)
		return eng_csum_avx2(p, len);
#endif
	return XXH3_64bits(p, len);
}
