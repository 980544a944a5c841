/* SPDX-License-Identifier: Apache-2.0 */
/* Volume operations of the CLI and the CSI driver: create, delete, grow,
 * fence.
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

bool admin_fence_refuses(const struct admin_fence_replica *r)
{
	return r->err == 0 || r->err == -EPERM || r->err == -EIDRM;
}

const char *admin_fence_warning(const struct admin_fence_replica *r, char *buf,
				size_t len)
{
	char hex[17];

	snprintf(buf, len, "replica on node %s not told the new epoch: %s", qbd_id_str(r->node, hex),
		 r->no_record ? "no node record in etcd" : strerror(-r->err));
	return buf;
}

void admin_fence_judge(struct admin_fence_result *res)
{
	const struct qbd_volume_info *v = &res->v;
	unsigned in_s = 0, in_s2 = 0;

	for (unsigned i = 0; i < res->replicas; i++) {
		const struct admin_fence_replica *x = &res->replica[i];

		if (!admin_fence_refuses(x))
			continue;
		in_s += x->voter_s;
		in_s2 += x->voter_s2;
	}
	/* The old writer needs W of S for every write and flush (also with
	 * a learner, which counts toward nothing; with a joint change W of
	 * S and W of S'): a set of which R - W + 1 refuse its epoch leaves
	 * it at most W - 1. */
	res->needed = v->replicas - v->write_quorum + 1;
	res->refusing = in_s;
	res->holds = in_s >= res->needed;
	if (!res->holds && v->change.phase == QBD_CHANGE_JOINT && in_s2 >= res->needed) {
		res->refusing = in_s2;
		res->holds = true;
	}
}

/* The nodes of v's configuration into res->replica[] (not yet told):
 * the voters of S, then the change's node Y while a change stands. */
static void admin_fence_nodes(const struct qbd_volume_info *v, struct admin_fence_result *res)
{
	const bool joint = v->change.phase == QBD_CHANGE_JOINT;

	res->replicas = 0;
	for (unsigned i = 0; i < v->replicas; i++)
		res->replica[res->replicas++] = (struct admin_fence_replica){
			.node = v->nodes[i], .voter_s = true,
			.voter_s2 = joint && i != v->change.slot, .err = -EINPROGRESS };
	if (v->change.phase != QBD_CHANGE_NONE)
		res->replica[res->replicas++] = (struct admin_fence_replica){
			.node = v->change.node, .voter_s2 = joint, .err = -EINPROGRESS };
}

int admin_volume_fence(struct qbd_meta *m, const char *name,
		       struct admin_fence_result *res, char *why, size_t len)
{
	struct admin_fence_result none;
	struct qbd_attachment att;
	uint64_t cluster;
	int r;

	if (!res)
		res = &none;
	memset(res, 0, sizeof *res);
	if ((r = admin_volume_read(m, name, &res->v, why, len)))
		return r;
	r = qbd_meta_cluster_id(m, false, &cluster);
	if (r < 0)
		return admin_why(why, len, r, "cannot read the cluster id (/qbd/cluster): %s",
				 r == -ENOENT ? "not set (no chunk server ever registered)" :
				 strerror(-r));
	const uint64_t id = res->v.id;

	r = qbd_meta_epoch_bump(m, id, &res->epoch); /* fences any writer first */
	if (r < 0) {
		res->epoch = 0;
		return admin_why(why, len, r, "volume '%s': cannot bump its epoch: %s", name,
				 strerror(-r));
	}
	/* The configuration as of the bump: no change goes through after it
	 * (each compares the epoch), and a writer's rule is never looser
	 * than its record (docs/protocol.md, section 11). */
	r = qbd_meta_volume_get(m, name, &res->v);
	if (r == 0 && res->v.id != id)
		r = -ENOENT;
	if (r < 0)
		return admin_why(why, len, r, "volume '%s': fenced in etcd at epoch %" PRIu64
				 ", then cannot read its record: %s", name, res->epoch,
				 r == -ENOENT ? "it was deleted meanwhile" : strerror(-r));
	admin_fence_nodes(&res->v, res);
	for (unsigned i = 0; i < res->replicas; i++) {
		struct admin_fence_replica *x = &res->replica[i];
		struct qbd_node_info node;
		int g = qbd_meta_node_get(m, x->node, &node);

		x->no_record = g == -ENOENT;
		x->err = g == 0 ? admin_promise(&node, cluster, id, res->epoch, &x->promised) : g;
	}
	admin_fence_judge(res);
	/* The writer's record, after the replicas: until they are told, a
	 * new writer that needs no --force must not attach. */
	r = qbd_meta_attachment_get(m, id, &att);
	if (r < 0 && r != -ENOENT)
		return admin_why(why, len, r, "volume '%s': fenced at epoch %" PRIu64 ", but "
				 "cannot read its attachment: %s", name, res->epoch, strerror(-r));
	if (r == 0 && att.epoch > res->epoch) {
		res->newer = true;
		res->newer_att = att;
	} else if (r == 0) {
		res->attached = true;
		res->att = att;
	}
	if (!res->holds)
		return admin_why(why, len, -EIO, "volume '%s': fence at epoch %" PRIu64 " does not "
				 "hold: %u of %u replicas promised it, %u needed (R=%u, W=%u): the "
				 "old writer may still reach its write quorum through the others%s; "
				 "fence again once they are reachable", name, res->epoch,
				 res->refusing, res->v.replicas, res->needed, res->v.replicas,
				 res->v.write_quorum,
				 res->attached ? " (its attachment record is left in place)" : "");
	if (res->attached) {
		r = qbd_meta_detach(m, &res->att);
		if (r == -ESTALE) {
			/* a newer writer's record replaced it meanwhile */
			if (qbd_meta_attachment_get(m, id, &att) == 0) {
				res->newer = true;
				res->newer_att = att;
			}
			r = 0;
		} else if (r == 0) {
			res->detached = true;
		}
		if (r < 0)
			return admin_why(why, len, r, "volume '%s': fenced at epoch %" PRIu64 ", but "
					 "its attachment record (host %s, pid %d) could not be "
					 "removed: %s", name, res->epoch,
					 res->att.host[0] ? res->att.host : "?", res->att.pid,
					 strerror(-r));
	}
	return 0;
}
