/* SPDX-License-Identifier: Apache-2.0 */
/* XXH3-64 compiled for AVX2 (csum.c calls it only where the CPU has it):
 * everything in this file is built for that target. */
#include "internal.h"

#if ENG_CSUM_AVX2
#pragma GCC target("avx2")
#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t eng_csum_avx2(const void *p, size_t len)
{
	return XXH3_64bits(p, len);
}
#endif
