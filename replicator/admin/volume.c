/* SPDX-License-Identifier: Apache-2.0 */
/* Volume operations of the CLI and the CSI driver: create, delete, grow.
 * They never print: each error is -errno and one line in why. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "replicator/wire/wire.h"
#include "admin.h"

static int admin_why(char *why, size_t len, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Put the reason in why (when there is room) and return err. */
static int admin_why(char *why, size_t len, int err, const char *fmt, ...)
{
	va_list ap;

	if (why && len) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return err;
}

unsigned admin_default_write_quorum(unsigned replicas)
{
	return replicas / 2 + 1;
}

/* Chunks of chunk_size bytes a volume of size bytes spans are within
 * what the wire can name (chunks 0..QBD_WIRE_MAX_CHUNK). */
static bool admin_chunks_ok(uint64_t size, uint32_t chunk_size)
{
	return size / chunk_size + (size % chunk_size != 0) - 1 <= QBD_WIRE_MAX_CHUNK;
}

int admin_volume_check(const char *name, uint64_t size, unsigned replicas,
		       unsigned write_quorum, char *why, size_t len)
{
	if (!name || !qbd_meta_volume_name_ok(name))
		return admin_why(why, len, -EINVAL, "invalid volume name '%s' (letters, digits, "
				 "'.', '_', '-'; at most %d characters)", name ? name : "",
				 QBD_NAME_MAX - 1);
	if (size == 0 || size % 4096)
		return admin_why(why, len, -EINVAL, "size %" PRIu64 ": need a positive multiple "
				 "of 4096 bytes", size);
	if (!admin_chunks_ok(size, ADMIN_CHUNK_SIZE))
		return admin_why(why, len, -EINVAL, "size: at most %llu chunks of %u bytes",
				 (unsigned long long)QBD_WIRE_MAX_CHUNK + 1, ADMIN_CHUNK_SIZE);
	if (replicas < 1 || replicas > QBD_MAX_REPLICAS)
		return admin_why(why, len, -EINVAL, "replicas must be 1..%d", QBD_MAX_REPLICAS);
	if (write_quorum > replicas)
		return admin_why(why, len, -EINVAL, "write quorum must be 1..%u", replicas);
	return 0;
}

/* -ENOSPC from placement: each distinct live zone in service once
 * (nodes are sorted by zone). */
static int admin_no_zones(const struct qbd_node_info *nodes, size_t n, unsigned replicas,
			  unsigned zones, char *why, size_t len)
{
	char list[256] = "";
	const char *last = NULL;
	size_t l = 0;

	for (size_t i = 0; i < n && l < sizeof list; i++) {
		if (!nodes[i].alive || nodes[i].state != QBD_NODE_IN ||
		    (last && strcmp(last, nodes[i].zone) == 0))
			continue;
		last = nodes[i].zone;
		l += (size_t)snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "",
				      nodes[i].zone);
	}
	return admin_why(why, len, -ENOSPC, "need %u zones with a live node, found %u%s%s%s",
			 replicas, zones, zones ? " (" : "", list, zones ? ")" : "");
}

/* -EEXIST with *out the record of name (read now). */
static int admin_exists(struct qbd_meta *m, const char *name, struct qbd_volume_info *out,
			char *why, size_t len)
{
	int r = qbd_meta_volume_get(m, name, out);

	if (r == -ENOENT)
		return admin_why(why, len, -EAGAIN, "volume '%s' was deleted while it was "
				 "being created; try again", name);
	if (r < 0)
		memset(out, 0, sizeof *out);
	return admin_why(why, len, -EEXIST, "volume '%s' already exists", name);
}

int admin_volume_create(struct qbd_meta *m, const char *name, uint64_t size,
			unsigned replicas, unsigned write_quorum,
			struct qbd_volume_info *out, char *why, size_t len)
{
	struct qbd_volume_info v = { .chunk_size = ADMIN_CHUNK_SIZE, .size = size,
				     .replicas = replicas, .write_quorum = write_quorum };
	struct qbd_node_info *nodes;
	unsigned zones;
	size_t n;
	int r;

	if ((r = admin_volume_check(name, size, replicas, write_quorum, why, len)))
		return r;
	if (v.write_quorum == 0)
		v.write_quorum = admin_default_write_quorum(replicas);
	/* A volume that exists is -EEXIST whatever placement would say now:
	 * a caller that asks again (a driver retrying) learns it has it. */
	if (qbd_meta_volume_get(m, name, out) == 0)
		return admin_why(why, len, -EEXIST, "volume '%s' already exists", name);
	snprintf(v.name, sizeof v.name, "%s", name);
	v.id = qbd_random_u64();
	r = qbd_meta_node_list(m, &nodes, &n);
	if (r < 0)
		return admin_why(why, len, r, "cannot list nodes: %s", strerror(-r));
	r = qbd_meta_place(nodes, n, v.replicas, v.nodes, &zones);
	if (r == -ENOSPC) {
		r = admin_no_zones(nodes, n, v.replicas, zones, why, len);
		free(nodes);
		return r;
	}
	for (unsigned i = 0; i < v.replicas; i++)
		for (size_t j = 0; j < n; j++)
			if (nodes[j].id == v.nodes[i] && nodes[j].chunk_size &&
			    nodes[j].chunk_size != ADMIN_CHUNK_SIZE) {
				r = admin_why(why, len, -ENOTSUP, "node %s has chunk size %u, "
					      "volumes use %u", nodes[j].addr,
					      nodes[j].chunk_size, ADMIN_CHUNK_SIZE);
				free(nodes);
				return r;
			}
	free(nodes);
	r = qbd_meta_volume_create(m, &v);
	if (r == -EEXIST)
		return admin_exists(m, name, out, why, len);
	if (r < 0)
		return admin_why(why, len, r, "cannot create volume '%s': %s", name, strerror(-r));
	*out = v;
	return 0;
}

/* Read volume name: 0, or -errno with why. */
static int admin_volume_read(struct qbd_meta *m, const char *name, struct qbd_volume_info *v,
			     char *why, size_t len)
{
	int r = qbd_meta_volume_get(m, name, v);

	if (r < 0)
		return admin_why(why, len, r, "volume '%s': %s", name,
				 r == -ENOENT ? "no such volume" : strerror(-r));
	return 0;
}

/* -EBUSY: a is the volume's attachment. */
static int admin_attached(const char *name, const struct qbd_attachment *a, char *why,
			  size_t len)
{
	return admin_why(why, len, -EBUSY, "volume %s is attached on host %s (pid %d, epoch %"
			 PRIu64 "); detach it first", name, a->host[0] ? a->host : "?", a->pid,
			 a->epoch);
}

const char *admin_replica_warning(const struct admin_replica_result *r, char *buf,
				  size_t len)
{
	char hex[17];

	snprintf(buf, len, "replica on node %s not cleaned: %s (that chunk server reclaims "
		 "the space itself once it is back: its reclaim-grace after it finds the "
		 "volume gone)", qbd_id_str(r->node, hex),
		 r->no_record ? "no node record in etcd" : strerror(-r->err));
	return buf;
}

int admin_volume_delete(struct qbd_meta *m, const char *name,
			struct admin_delete_result *res, char *why, size_t len)
{
	struct admin_delete_result none;
	struct qbd_volume_info v;
	struct qbd_attachment att;
	uint64_t epoch, cluster;
	int r;

	if (!res)
		res = &none;
	res->replicas = 0;
	if ((r = admin_volume_read(m, name, &v, why, len)))
		return r;
	r = qbd_meta_attachment_get(m, v.id, &att);
	if (r == 0)
		return admin_attached(name, &att, why, len);
	if (r != -ENOENT)
		return admin_why(why, len, r, "volume '%s': cannot read its attachment: %s",
				 name, strerror(-r));
	r = qbd_meta_cluster_id(m, false, &cluster);
	if (r < 0)
		return admin_why(why, len, r, "cannot read the cluster id (/qbd/cluster): %s",
				 r == -ENOENT ? "not set (no chunk server ever registered)" :
				 strerror(-r));
	r = qbd_meta_epoch_bump(m, v.id, &epoch); /* fences any writer first */
	if (r < 0)
		return admin_why(why, len, r, "volume '%s': cannot bump its epoch: %s", name,
				 strerror(-r));
	for (unsigned i = 0; i < v.replicas; i++) {
		struct admin_replica_result *x = &res->replica[i];
		struct qbd_node_info node;
		int g = qbd_meta_node_get(m, v.nodes[i], &node);

		x->node = v.nodes[i];
		x->err = g == 0 ? admin_delete_volume(&node, cluster, v.id, epoch) : g;
		x->no_record = g == -ENOENT;
		res->replicas = i + 1;
	}
	r = qbd_meta_volume_delete(m, &v);
	if (r == -EBUSY && qbd_meta_attachment_get(m, v.id, &att) == 0)
		/* a writer attached while the replicas were cleaned */
		return admin_attached(name, &att, why, len);
	if (r < 0)
		return admin_why(why, len, r, "cannot delete volume '%s': %s", name,
				 strerror(-r));
	/* Its settings go with it (nothing else reads them). */
	struct qbd_volume_settings no_settings = { .has_rebuild_rate = false };

	(void)qbd_meta_volume_settings_put(m, v.id, &no_settings);
	return 0;
}

int admin_volume_grow(struct qbd_meta *m, const char *name, uint64_t size,
		      struct admin_grow_result *out, char *why, size_t len)
{
	struct admin_grow_result none;
	struct qbd_volume_info *v;
	struct qbd_attachment *att;
	char a[32], b[32];
	int r;

	if (!out)
		out = &none;
	memset(out, 0, sizeof *out);
	v = &out->v;
	att = &out->att;
	if (size == 0 || size % 4096)
		return admin_why(why, len, -EINVAL, "size %" PRIu64 ": need a positive multiple "
				 "of 4096 bytes", size);
	if ((r = admin_volume_read(m, name, v, why, len)))
		return r;
	r = qbd_meta_attachment_get(m, v->id, att);
	if (r < 0 && r != -ENOENT)
		return admin_why(why, len, r, "volume '%s': cannot read its attachment: %s",
				 name, strerror(-r));
	out->attached = r == 0;
	/* A smaller size is refused, attached or not: the chunks past the
	 * new end would keep their data on every replica (and on one that
	 * is down, out of reach), and a later grow would show it again. */
	if (size < v->size) {
		if (out->attached)
			return admin_why(why, len, -EINVAL, "volume %s is attached on host %s "
					 "(pid %d): it cannot shrink while attached (%s to %s)",
					 name, att->host[0] ? att->host : "?", att->pid,
					 qbd_format_size(v->size, a, sizeof a),
					 qbd_format_size(size, b, sizeof b));
		return admin_why(why, len, -EINVAL, "volume %s: cannot shrink from %s to %s: a "
				 "volume only grows (its old data past the new end could come "
				 "back); copy it to a smaller volume instead", name,
				 qbd_format_size(v->size, a, sizeof a),
				 qbd_format_size(size, b, sizeof b));
	}
	if (!admin_chunks_ok(size, v->chunk_size))
		return admin_why(why, len, -EFBIG, "at most %llu chunks of %u bytes",
				 (unsigned long long)QBD_WIRE_MAX_CHUNK + 1, v->chunk_size);
	r = qbd_meta_volume_grow(m, name, v->id, size, &out->old_size);
	if (r < 0)
		return admin_why(why, len, r == -EINVAL ? -EAGAIN : r,
				 "volume '%s': cannot grow it: %s", name,
				 r == -ENOENT ? "it was deleted meanwhile" :
				 r == -EINVAL ? "its size changed meanwhile; look again" :
				 r == -EAGAIN ? "its record kept changing; try again" :
				 strerror(-r));
	/* The attachment now: a writer that attached meanwhile read the new
	 * size at its open, and publishes it too. */
	out->attached = qbd_meta_attachment_get(m, v->id, att) == 0;
	return 0;
}
