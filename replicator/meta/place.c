/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Placement: which chunk servers hold a new volume's replicas, one
 * per zone, the least used first.
 */
#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "meta.h"

int qbd_meta_place(const struct qbd_node_info *nodes, size_t n,
		   unsigned replicas, uint64_t *out, unsigned *zones_found)
{
	/* Per zone, the best alive node (least used, then lowest id); then
	 * the best `replicas` of those, in the same order. */
	const struct qbd_node_info *best[64];
	unsigned nz = 0;

	for (size_t i = 0; i < n; i++) {
		const struct qbd_node_info *x = &nodes[i];
		unsigned z;

		if (!x->alive || x->state != QBD_NODE_IN)
			continue;
		for (z = 0; z < nz; z++)
			if (strcmp(best[z]->zone, x->zone) == 0)
				break;
		if (z == nz) {
			if (nz == QBD_ARRAY_SIZE(best))
				continue;
			best[nz++] = x;
		} else if (x->used < best[z]->used ||
			   (x->used == best[z]->used && x->id < best[z]->id)) {
			best[z] = x;
		}
	}
	*zones_found = nz;
	if (nz < replicas)
		return -ENOSPC;
	/* Choose the `replicas` least used zones' nodes. */
	for (unsigned i = 0; i < nz; i++)
		for (unsigned j = i + 1; j < nz; j++)
			if (best[j]->used < best[i]->used ||
			    (best[j]->used == best[i]->used && best[j]->id < best[i]->id)) {
				const struct qbd_node_info *t = best[i];
				best[i] = best[j];
				best[j] = t;
			}
	for (unsigned i = 0; i < replicas; i++)
		out[i] = best[i]->id;
	return 0;
}
