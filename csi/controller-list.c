/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Controller service, its listings (docs/design.md, "The CSI
 * driver", "Controller"): ListVolumes, in pages, with the node each
 * volume is published to; GetCapacity, from the chunk servers' records.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "replicator/meta/meta.h"

/* ListVolumes' next_token: this prefix and the last name returned. */
#define CSI_TOKEN_PREFIX "after:"

typedef Csi__V1__CreateVolumeRequest__ParametersEntry Entry;

/* ---- ListVolumes ---- */

grpc_status_code csi_ctl_list_volumes(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__ListVolumesRequest *q = (const Csi__V1__ListVolumesRequest *)req;
	Csi__V1__ListVolumesResponse r = CSI__V1__LIST_VOLUMES_RESPONSE__INIT;
	struct qbd_volume_info *vols = NULL;
	struct qbd_node_info *nodes = NULL;
	struct qbd_csi_publish *pubs = NULL;
	size_t nv = 0, nn = 0, np = 0, first = 0, count;
	struct csi_vol_msg *vm = NULL;
	Csi__V1__ListVolumesResponse__Entry *ent = NULL, **ep = NULL;
	Csi__V1__ListVolumesResponse__VolumeStatus *vs = NULL;
	char **pubnode = NULL;
	char token[sizeof CSI_TOKEN_PREFIX + QBD_NAME_MAX];
	const char *after = NULL;
	struct qbd_meta *m;
	grpc_status_code st;
	int err;

	if (q->max_entries < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "max_entries %d is negative",
				q->max_entries);
	if (*q->starting_token) {
		after = q->starting_token + strlen(CSI_TOKEN_PREFIX);
		if (strncmp(q->starting_token, CSI_TOKEN_PREFIX, strlen(CSI_TOKEN_PREFIX)) != 0 ||
		    !qbd_meta_volume_name_ok(after))
			return csi_fail(c, GRPC_STATUS_ABORTED, "starting_token '%s' is not one "
					"ListVolumes gave", q->starting_token);
	}
	st = csi_meta_for(c, &m);
	if (st != GRPC_STATUS_OK)
		return st;
	err = qbd_meta_volume_list(m, &vols, &nv);
	if (!err)
		err = qbd_meta_node_list(m, &nodes, &nn);
	if (!err)
		err = qbd_meta_csi_publish_list(m, &pubs, &np);
	csi_meta_give(m);
	if (err < 0) {
		st = csi_etcd_fail(c, err, "listing the volumes");
		goto out;
	}
	/* Sorted by name: the page starts after the token's name (which may
	 * be gone since). */
	if (after)
		while (first < nv && strcmp(vols[first].name, after) <= 0)
			first++;
	count = nv - first;
	if (q->max_entries && (size_t)q->max_entries < count)
		count = (size_t)q->max_entries;
	if (count) {
		vm = calloc(count, sizeof *vm);
		ent = calloc(count, sizeof *ent);
		ep = calloc(count, sizeof *ep);
		vs = calloc(count, sizeof *vs);
		pubnode = calloc(count, sizeof *pubnode);
		if (!vm || !ent || !ep || !vs || !pubnode) {
			st = csi_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < count; i++) {
		struct qbd_volume_info *v = &vols[first + i];

		csi_vol_fill(&vm[i], v, nodes, nn);
		csi__v1__list_volumes_response__entry__init(&ent[i]);
		csi__v1__list_volumes_response__volume_status__init(&vs[i]);
		for (size_t k = 0; k < np; k++)
			if (strcmp(pubs[k].volume, v->name) == 0) {
				pubnode[i] = pubs[k].node;
				vs[i].n_published_node_ids = 1;
				vs[i].published_node_ids = &pubnode[i];
			}
		ent[i].volume = &vm[i].vol;
		ent[i].status = &vs[i];
		ep[i] = &ent[i];
	}
	r.n_entries = count;
	r.entries = ep;
	if (first + count < nv) {
		snprintf(token, sizeof token, CSI_TOKEN_PREFIX "%s", vols[first + count - 1].name);
		r.next_token = token;
	}
	st = csi_reply(c, &r.base);
out:
	free(vm);
	free(ent);
	free(ep);
	free(vs);
	free(pubnode);
	free(vols);
	free(nodes);
	free(pubs);
	return st;
}

/* ---- GetCapacity ---- */

struct zone_free {
	char zone[QBD_ZONE_MAX];
	uint64_t free;
};

static int by_free_desc(const void *a, const void *b)
{
	const struct zone_free *x = a, *y = b;

	return x->free < y->free ? 1 : x->free > y->free ? -1 : 0;
}

/*
 * The largest volume of `replicas` replicas (one per zone) that fits
 * now: with zone (not NULL), one replica there and the others in the
 * largest of the other zones, so min(free(zone), the (R-1)-th largest
 * other zone's free); without, the R-th largest zone's free. 0 when
 * there are not enough zones. A zone's free space: the sum over its
 * live, in-service chunk servers of capacity - used (used counts
 * allocated chunks: chunks are allocated as they are written, so a new
 * volume takes nothing until written).
 */
static uint64_t capacity_of(const struct qbd_node_info *nodes, size_t nn, unsigned replicas,
			    const char *zone)
{
	struct zone_free z[64];
	size_t nz = 0, k;
	uint64_t best = 0;
	bool found = false;

	for (size_t i = 0; i < nn; i++) {
		const struct qbd_node_info *n = &nodes[i];

		if (!n->alive || n->state != QBD_NODE_IN)
			continue;
		for (k = 0; k < nz && strcmp(z[k].zone, n->zone) != 0; k++)
			;
		if (k == nz) {
			if (nz == sizeof z / sizeof z[0])
				continue;
			snprintf(z[nz].zone, sizeof z[nz].zone, "%s", n->zone);
			z[nz++].free = 0;
		}
		z[k].free += n->capacity > n->used ? n->capacity - n->used : 0;
	}
	if (zone) {
		/* Take the zone out; then it needs R-1 others. */
		for (k = 0; k < nz; k++)
			if (strcmp(z[k].zone, zone) == 0) {
				best = z[k].free;
				found = true;
				z[k] = z[--nz];
				break;
			}
		if (!found)
			return 0;
		replicas--;
		if (!replicas)
			return best;
	}
	if (nz < replicas)
		return 0;
	qsort(z, nz, sizeof z[0], by_free_desc);
	return zone ? (z[replicas - 1].free < best ? z[replicas - 1].free : best)
		    : z[replicas - 1].free;
}

grpc_status_code csi_ctl_get_capacity(struct csi_call *c, const ProtobufCMessage *req)
{
	const Csi__V1__GetCapacityRequest *q = (const Csi__V1__GetCapacityRequest *)req;
	Csi__V1__GetCapacityResponse r = CSI__V1__GET_CAPACITY_RESPONSE__INIT;
	struct qbd_node_info *nodes = NULL;
	const char *zone = NULL;
	struct csi_params p;
	struct qbd_meta *m;
	grpc_status_code st;
	size_t nn = 0;
	char why[512];
	int err;

	if (csi_params_parse((Entry *const *)q->parameters, q->n_parameters, &p, why,
			     sizeof why) < 0)
		return csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
	if (csi_caps_check(q->volume_capabilities, q->n_volume_capabilities, why, sizeof why) < 0)
		return csi_reply(c, &r.base);    /* nothing of that kind: 0 */
	if (q->accessible_topology)
		for (size_t i = 0; i < q->accessible_topology->n_segments; i++)
			if (strcmp(q->accessible_topology->segments[i]->key,
				   CSI_TOPOLOGY_ZONE_KEY) == 0)
				zone = q->accessible_topology->segments[i]->value;
	st = csi_meta_for(c, &m);
	if (st != GRPC_STATUS_OK)
		return st;
	err = qbd_meta_node_list(m, &nodes, &nn);
	csi_meta_give(m);
	if (err < 0)
		return csi_etcd_fail(c, err, "reading the node records");
	r.available_capacity = (int64_t)capacity_of(nodes, nn, p.replicas, zone);
	free(nodes);
	return csi_reply(c, &r.base);
}
