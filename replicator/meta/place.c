/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Placement: which chunk servers hold a new volume's replicas, one
 * per zone, the least used first; and which node takes the place of a
 * replica that leaves (a removed, drained or moved node), with the
 * reasons each zone was refused when none can.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
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

/* ---- a replacement for one replica ---- */

/* The record of node id in nodes[], or NULL. */
static const struct qbd_node_info *place_find(const struct qbd_node_info *nodes, size_t n,
					      uint64_t id)
{
	for (size_t i = 0; i < n; i++)
		if (nodes[i].id == id)
			return &nodes[i];
	return NULL;
}

/* Which slot of v node id holds, or -1; the node of a standing change
 * counts as slot v->change.slot's newcomer (returned as R). */
static int place_member(const struct qbd_volume_info *v, uint64_t id)
{
	for (unsigned i = 0; i < v->replicas; i++)
		if (v->nodes[i] == id)
			return (int)i;
	if (v->change.phase != QBD_CHANGE_NONE && v->change.node == id)
		return (int)v->replicas;
	return -1;
}

/* The slot of another member (not `slot`) whose node is in zone, or -1.
 * A member without a record has no zone we know. */
static int place_zone_user(const struct qbd_node_info *nodes, size_t n,
			   const struct qbd_volume_info *v, unsigned slot, const char *zone)
{
	for (unsigned i = 0; i <= v->replicas; i++) {
		uint64_t id;

		if (i == slot)
			continue;
		if (i == v->replicas) {
			if (v->change.phase == QBD_CHANGE_NONE)
				break;
			id = v->change.node;
		} else {
			id = v->nodes[i];
		}
		const struct qbd_node_info *x = place_find(nodes, n, id);
		if (x && strcmp(x->zone, zone) == 0)
			return (int)i;
	}
	return -1;
}

/* Why node x may not take a replica of v (NULL: it may), zones aside. */
static const char *place_refusal(const struct qbd_node_info *x,
				 const struct qbd_volume_info *v, char *buf, size_t len)
{
	int mem = place_member(v, x->id);

	if (mem >= 0) {
		if ((unsigned)mem == v->replicas)
			return "joining it already";
		snprintf(buf, len, "holds replica %d", mem);
		return buf;
	}
	if (x->state == QBD_NODE_REMOVED)
		return "removed";
	if (x->state == QBD_NODE_DRAINING)
		return "draining";
	if (!x->alive)
		return "down";
	if (x->capacity <= x->used || (x->slots && !x->free_slots))
		return "full";
	return NULL;
}

static bool place_better(const struct qbd_node_info *a, const struct qbd_node_info *b)
{
	return !b || a->used < b->used || (a->used == b->used && a->id < b->id);
}

/* Append to why (bounded, always terminated). */
static void place_say(char *why, size_t len, size_t *at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void place_say(char *why, size_t len, size_t *at, const char *fmt, ...)
{
	va_list ap;
	int w;

	if (!len || *at >= len - 1)
		return;
	va_start(ap, fmt);
	w = vsnprintf(why + *at, len - *at, fmt, ap);
	va_end(ap);
	if (w > 0)
		*at = *at + (size_t)w < len ? *at + (size_t)w : len - 1;
}

int qbd_meta_place_check(const struct qbd_node_info *nodes, size_t n,
			 const struct qbd_volume_info *v, unsigned slot,
			 uint64_t to, char *why, size_t len)
{
	const struct qbd_node_info *x;
	const char *no;
	char buf[48], hex[17];
	int user;

	if (len)
		why[0] = '\0';
	if (slot >= v->replicas) {
		snprintf(why, len, "replica %u: the volume has %u", slot, v->replicas);
		return -EINVAL;
	}
	if (!(x = place_find(nodes, n, to))) {
		snprintf(why, len, "node %s: no such node", qbd_id_str(to, hex));
		return -EINVAL;
	}
	if ((no = place_refusal(x, v, buf, sizeof buf))) {
		snprintf(why, len, "node %s: %s", qbd_id_str(to, hex), no);
		return -EINVAL;
	}
	if ((user = place_zone_user(nodes, n, v, slot, x->zone)) >= 0) {
		if ((unsigned)user == v->replicas)
			snprintf(why, len, "node %s: zone %s has the node joining the volume",
				 qbd_id_str(to, hex), x->zone);
		else
			snprintf(why, len, "node %s: zone %s holds replica %d already",
				 qbd_id_str(to, hex), x->zone, user);
		return -EINVAL;
	}
	return 0;
}

int qbd_meta_place_replacement(const struct qbd_node_info *nodes, size_t n,
			       const struct qbd_volume_info *v, unsigned slot,
			       uint64_t *out, char *why, size_t len)
{
	const struct qbd_node_info *old, *best = NULL, *same = NULL;
	const char *zones[64];
	unsigned nz = 0;
	size_t at = 0;
	char hex[17];

	if (len)
		why[0] = '\0';
	if (slot >= v->replicas) {
		place_say(why, len, &at, "replica %u: the volume has %u", slot, v->replicas);
		return -EINVAL;
	}
	old = place_find(nodes, n, v->nodes[slot]);
	/* Every zone once, X's first: the order the reasons are given in. */
	if (old)
		zones[nz++] = old->zone;
	for (size_t i = 0; i < n && nz < QBD_ARRAY_SIZE(zones); i++) {
		unsigned z;

		for (z = 0; z < nz; z++)
			if (strcmp(zones[z], nodes[i].zone) == 0)
				break;
		if (z == nz)
			zones[nz++] = nodes[i].zone;
	}
	for (unsigned z = 0; z < nz; z++) {
		const struct qbd_node_info *zbest = NULL;
		int user = place_zone_user(nodes, n, v, slot, zones[z]);

		if (user >= 0)
			continue;
		for (size_t i = 0; i < n; i++) {
			char buf[48];

			if (strcmp(nodes[i].zone, zones[z]) == 0 &&
			    !place_refusal(&nodes[i], v, buf, sizeof buf) &&
			    place_better(&nodes[i], zbest))
				zbest = &nodes[i];
		}
		if (!zbest)
			continue;
		if (z == 0 && old) {
			same = zbest; /* X's zone has room: it wins */
			break;
		}
		if (place_better(zbest, best))
			best = zbest;
	}
	if (same || best) {
		*out = (same ? same : best)->id;
		return 0;
	}
	/* Nothing: say why, zone by zone. */
	place_say(why, len, &at, "no node can take replica %u (node %s, %s%s)", slot,
		  qbd_id_str(v->nodes[slot], hex), old ? "zone " : "no record",
		  old ? old->zone : "");
	for (unsigned z = 0; z < nz; z++) {
		int user = place_zone_user(nodes, n, v, slot, zones[z]);
		bool first = true;

		place_say(why, len, &at, "; zone %s: ", zones[z]);
		if (user >= 0) {
			if ((unsigned)user == v->replicas)
				place_say(why, len, &at, "has the node joining the volume");
			else
				place_say(why, len, &at, "holds replica %d", user);
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			char buf[48];
			const char *no;

			if (strcmp(nodes[i].zone, zones[z]) != 0)
				continue;
			no = nodes[i].id == v->nodes[slot] ? "the node replaced"
							     : place_refusal(&nodes[i], v, buf, sizeof buf);
			place_say(why, len, &at, "%s%s %s", first ? "" : ", ",
				  qbd_id_str(nodes[i].id, hex), no ? no : "?");
			first = false;
		}
	}
	if (nz == 0)
		place_say(why, len, &at, "; no node records");
	else if (old)
		place_say(why, len, &at, "; add a node in zone %s or in a zone the volume "
			  "does not use", old->zone);
	else
		place_say(why, len, &at, "; add a node in a zone the volume does not use");
	return -ENOSPC;
}
