/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Carrying out a membership change (docs/protocol.md section 11): the
 * attached writer replaces the node of one of its volume's replica slots
 * by another, asked for by a change request in etcd (qbd node remove,
 * drain, volume move, or the manager's down-out).
 *
 * Two threads share the work. The keeper (attach.c), which may block on
 * etcd, reads the record and the request and makes each step of the
 * record by compare-and-swap against the record it read and our epoch:
 * learner, then joint, then the new set. The loop (client.c's tick)
 * takes the core's steps: a learner slot and its connection, the joint
 * rule once the learner is current, and the leave once the record says
 * the new set. The keeper makes the joint and the final step only while
 * the loop says the core is ready for it (qbd_core_change_ready), so the
 * record never holds a rule looser than the core's.
 *
 * Shared fields are under ch->mu, which neither side holds across a
 * blocking call. The keeper owns the core-slot map it hands out (which
 * slot the learner takes): the loop follows it.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/client/internal.h"

#define COMP "change"

enum loop_phase { LP_NONE, LP_LEARNER, LP_JOINT };

struct qbd_change {
	pthread_mutex_t mu;
	/* Under mu: keeper -> loop. */
	bool add;                /* a learner to add: */
	unsigned add_slot, add_x;/* its core slot, and the core slot it replaces */
	struct qbd_conn add_conn;/* node and address (node.id, sa, salen) */
	bool leave;              /* the record holds the new set: leave */
	/* Under mu: loop -> keeper. */
	bool ready;              /* the core's change is ready (joint rule, flushed) */
	bool idle;               /* no change in the core */
	/* Loop side. */
	enum loop_phase lp;
	unsigned y, x;           /* core slots: learner, leaving */
	uint64_t rate_at, rate_done; /* for the copy rate: time, chunks done */
	double rate;             /* chunks per second, smoothed */
	/* Keeper side. */
	unsigned slots;          /* core slots the keeper knows in use: bit each */
	unsigned rslot[QBD_MAX_REPLICAS];
	unsigned ky;             /* the learner slot it handed out */
	char said[640];          /* the last problem logged, said once */
};

/* Say msg once (until another one comes): a request that cannot be
 * carried out is looked at every round. */
static void say_once(struct qbd_change *ch, const char *msg)
{
	if (!strcmp(ch->said, msg))
		return;
	snprintf(ch->said, sizeof(ch->said), "%s", msg);
	qbd_warn(COMP, "%s", msg);
}

int qbd_change_new(struct qbd_volume *v, struct qbd_core_cfg *cfg)
{
	struct qbd_change *ch = calloc(1, sizeof(*ch));
	const struct qbd_volume_change *c = &v->info.change;
	unsigned R = v->info.replicas;

	if (!ch)
		return -ENOMEM;
	pthread_mutex_init(&ch->mu, NULL);
	v->change = ch;
	for (unsigned i = 0; i < R; i++) {
		v->rslot[i] = ch->rslot[i] = i;
		ch->slots |= 1u << i;
	}
	v->nslots = R;
	cfg->voters = (1u << R) - 1;
	ch->idle = true;
	if (c->phase == QBD_CHANGE_NONE)
		return 0;
	if (c->slot >= R)
		return -EPROTO;
	/* The learner is slot R, as attach.c's reread and open.c expect. */
	ch->y = ch->ky = R;
	ch->x = c->slot;
	v->conns[R].adding = true;
	ch->slots |= 1u << R;
	v->nslots = R + 1;
	ch->idle = false;
	if (c->phase == QBD_CHANGE_LEARNER) {
		cfg->learners = 1u << R;
		ch->lp = LP_LEARNER;
	} else {
		cfg->joint = (cfg->voters & ~(1u << c->slot)) | 1u << R;
		ch->lp = LP_JOINT;
	}
	return 0;
}

void qbd_change_free(struct qbd_change *ch)
{
	if (!ch)
		return;
	pthread_mutex_destroy(&ch->mu);
	free(ch);
}

/* ---- the loop ---- */

/* Set up slot y for the learner the keeper chose, and connect to it. */
static void loop_add(struct qbd_volume *v, struct qbd_change *ch, const struct qbd_conn *a,
		     unsigned y, unsigned x)
{
	struct qbd_conn *c = &v->conns[y];
	int err = qbd_core_learner_add(v->core, y, qbd_now_ns());

	if (err) {
		qbd_err(COMP, "volume '%s': slot %u cannot take a learner: %s", v->info.name, y,
			strerror(-err));
		return;
	}
	memset(c, 0, sizeof(*c));
	c->v = v;
	c->idx = y;
	c->fd = -1;
	c->node = a->node;
	c->sa = a->sa;
	c->salen = a->salen;
	c->no_addr = a->no_addr;
	c->adding = true;
	qbd_wire_rx_init(&c->rx);
	if (y >= v->nslots)
		v->nslots = y + 1;
	ch->y = y;
	ch->x = x;
	ch->lp = LP_LEARNER;
	ch->rate_at = 0;
	ch->rate = 0;
	qbd_info(COMP, "volume '%s': node %016" PRIx64 " (%s, zone %s) joins as a learner in "
		 "slot %u, to replace slot %u (node %016" PRIx64 ")", v->info.name, c->node.id,
		 c->node.addr, c->node.zone, y, x, v->conns[x].node.id);
	if (!c->no_addr)
		conn_connect(c);
}

/* The record holds the new set: X leaves the core, and its slot. */
static int loop_leave(struct qbd_volume *v, struct qbd_change *ch)
{
	struct qbd_conn *c = &v->conns[ch->x];
	int err = qbd_core_leave(v->core, qbd_now_ns());

	if (err)
		return err; /* a copy went stale since: joint rule until it is back */
	qbd_info(COMP, "volume '%s': slot %u (node %016" PRIx64 ") has left; node %016" PRIx64
		 " in slot %u holds the replica", v->info.name, ch->x, c->node.id,
		 v->conns[ch->y].node.id, ch->y);
	c->core_dropped = true; /* the core let it go already */
	if (c->state == QBD_C_UP) {
		/* X may serve the volume under no epoch from now on: its
		 * store keeps a tombstone and frees the chunks (a down X
		 * gets it from its reclaim, when it is back). Sent before
		 * the close; the answer is not waited for. */
		Qbd__Msg m = QBD__MSG__INIT;
		uint64_t until = qbd_now_ns() + QBD_CLIENT_TOMB_FLUSH_NS;
		int rc;

		m.type = QBD__MSG_TYPE__TOMBSTONE;
		rc = conn_queue(c, &m, QBD_CLIENT_CTL_ID | ++c->next_ctl, NULL, 0);
		/* The close below drops what is still queued (writes to X
		 * may fill its socket): wait, bounded, once per change,
		 * until the TOMBSTONE is in the socket. */
		while (rc == 0 && (rc = conn_flush_queue(c)) >= 0 && c->q_head &&
		       qbd_now_ns() < until)
			poll(&(struct pollfd){ .fd = c->fd, .events = POLLOUT }, 1, 10);
		if (rc >= 0 && !c->q_head)
			qbd_info(COMP, "volume '%s': node %016" PRIx64 " told to keep a tombstone "
				 "for the volume", v->info.name, c->node.id);
		else
			qbd_warn(COMP, "volume '%s': node %016" PRIx64 ": its tombstone could not "
				 "be sent (%s); its reclaim makes one once it finds it left the "
				 "volume", v->info.name, c->node.id,
				 rc < 0 ? strerror(-rc) : "its socket stayed full");
	}
	c->adding = false;
	conn_fail(c, "left the volume's configuration");
	c->unused = true;
	for (unsigned i = 0; i < v->info.replicas; i++)
		if (v->rslot[i] == ch->x)
			v->rslot[i] = ch->y;
	v->conns[ch->y].adding = false;
	ch->lp = LP_NONE;
	return 0;
}

void qbd_change_tick(struct qbd_volume *v)
{
	struct qbd_change *ch = v->change;
	struct qbd_core_replica_info ri;
	struct qbd_conn add;
	unsigned add_slot = 0, add_x = 0;
	bool do_add, do_leave, ready = false, wake;

	if (!ch || !v->core || qbd_core_fenced(v->core))
		return;
	pthread_mutex_lock(&ch->mu);
	do_add = ch->add;
	if (do_add) {
		add = ch->add_conn;
		add_slot = ch->add_slot;
		add_x = ch->add_x;
		ch->add = false;
	}
	do_leave = ch->leave;
	pthread_mutex_unlock(&ch->mu);
	if (do_add && ch->lp == LP_NONE)
		loop_add(v, ch, &add, add_slot, add_x);
	if (ch->lp == LP_LEARNER &&
	    qbd_core_replica_info(v->core, ch->y, &ri) == 0 && ri.up && !ri.stale_chunks &&
	    !ri.flagged && qbd_core_joint_begin(v->core, ch->x, ch->y, qbd_now_ns()) == 0) {
		qbd_info(COMP, "volume '%s': the learner in slot %u holds every chunk: quorums "
			 "now count in both sets", v->info.name, ch->y);
		ch->lp = LP_JOINT;
	}
	if (ch->lp == LP_JOINT) {
		ready = qbd_core_change_ready(v->core, qbd_now_ns()) == 1;
		if (do_leave && ready && loop_leave(v, ch) == 0) {
			ready = false;
			do_leave = false;
		}
	}
	pthread_mutex_lock(&ch->mu);
	wake = (ready && !ch->ready) || (!do_leave && ch->leave);
	ch->ready = ready;
	ch->idle = ch->lp == LP_NONE;
	if (!do_leave)
		ch->leave = false;
	pthread_mutex_unlock(&ch->mu);
	/* The record's next step is due: the keeper need not wait for its
	 * next round (2 s) to make it. */
	if (wake)
		qbd_attach_wake(v);
}

int qbd_change_progress(const struct qbd_volume *v, struct qbd_change_progress *out)
{
	const struct qbd_change *ch = v->change;
	struct qbd_core_replica_info ri = { 0 };

	memset(out, 0, sizeof(*out));
	if (!ch || ch->lp == LP_NONE)
		return 0;
	qbd_core_replica_info(v->core, ch->y, &ri);
	out->phase = ch->lp == LP_LEARNER ? 1 : 2;
	out->from_node = v->conns[ch->x].node.id;
	out->to_node = v->conns[ch->y].node.id;
	out->copied_bytes = ri.resync_done * v->info.chunk_size;
	out->total_bytes = ri.resync_total * v->info.chunk_size;
	out->rate_bytes = (uint64_t)(ch->rate * v->info.chunk_size);
	return 0;
}

json_object *qbd_change_status(struct qbd_volume *v)
{
	struct qbd_change *ch = v->change;
	struct qbd_change_progress p;
	struct qbd_core_replica_info ri = { 0 };
	uint64_t now = qbd_now_ns(), cs = v->info.chunk_size;
	json_object *o;
	char hex[17];

	if (!ch || ch->lp == LP_NONE)
		return NULL;
	/* The smoothed rate moves here, once per status document. */
	qbd_core_replica_info(v->core, ch->y, &ri);
	if (ch->rate_at && now > ch->rate_at) {
		double r = (double)(ri.resync_done - ch->rate_done) * 1e9 /
			   (double)(now - ch->rate_at);

		ch->rate = ch->rate ? 0.7 * ch->rate + 0.3 * r : r;
	}
	ch->rate_at = now;
	ch->rate_done = ri.resync_done;
	qbd_change_progress(v, &p);
	o = json_object_new_object();
	json_object_object_add(o, "phase", json_object_new_string(
		p.phase == 1 ? "learner" : "joint"));
	json_object_object_add(o, "slot", json_object_new_int((int)ch->x));
	snprintf(hex, sizeof(hex), "%016" PRIx64, p.from_node);
	json_object_object_add(o, "from", json_object_new_string(hex));
	snprintf(hex, sizeof(hex), "%016" PRIx64, p.to_node);
	json_object_object_add(o, "to", json_object_new_string(hex));
	json_object_object_add(o, "learner_slot", json_object_new_int((int)ch->y));
	json_object_object_add(o, "copied_chunks", json_object_new_int64((int64_t)(p.copied_bytes / cs)));
	json_object_object_add(o, "total_chunks", json_object_new_int64((int64_t)(p.total_bytes / cs)));
	json_object_object_add(o, "copied_bytes", json_object_new_int64((int64_t)p.copied_bytes));
	json_object_object_add(o, "total_bytes", json_object_new_int64((int64_t)p.total_bytes));
	/* What crossed to the learner: its written blocks and bitmaps (the
	 * byte figures above count whole chunks). */
	json_object_object_add(o, "resync_bytes", json_object_new_int64((int64_t)ri.resync_bytes));
	json_object_object_add(o, "rate_bytes", json_object_new_int64((int64_t)p.rate_bytes));
	json_object_object_add(o, "eta_s", json_object_new_int64(
		ch->rate > 0.01 ? (int64_t)((double)(ri.resync_total - ri.resync_done) / ch->rate) : -1));
	return o;
}

/* ---- the keeper ---- */

/* Node id's record and address into *out (node, sa, salen, no_addr). */
static int node_load(struct qbd_meta *m, uint64_t id, struct qbd_conn *out, char *why,
		     size_t len)
{
	int err = qbd_meta_node_get(m, id, &out->node);

	if (err) {
		snprintf(why, len, "node %016" PRIx64 ": %s", id,
			 err == -ENOENT ? "no node record" : strerror(-err));
		return err;
	}
	return qbd_client_resolve(out->node.addr, &out->sa, &out->salen, why, len);
}

/* Which node takes the request's slot: the one it names, or placement's
 * choice among the nodes of the cluster. */
static int choose(struct qbd_meta *m, const struct qbd_volume_info *rec,
		  const struct qbd_change_request *req, unsigned slot, uint64_t *y,
		  char *why, size_t len)
{
	struct qbd_node_info *nodes = NULL;
	size_t n = 0;
	int err = qbd_meta_node_list(m, &nodes, &n);

	if (err) {
		snprintf(why, len, "listing nodes: %s", strerror(-err));
		return err;
	}
	if (req->to)
		err = qbd_meta_place_check(nodes, n, rec, slot, req->to, why, len);
	else
		err = qbd_meta_place_replacement(nodes, n, rec, slot, y, why, len);
	if (!err && req->to)
		*y = req->to;
	free(nodes);
	return err;
}

/* Start the change a request asks for: the record gets the learner (CAS),
 * and the loop a slot for it. */
static void keep_start(struct qbd_change *ch, struct qbd_attach_keeper *k,
		       struct qbd_meta *m, const struct qbd_volume_info *rec, uint64_t epoch)
{
	struct qbd_change_request req;
	struct qbd_volume_info next = *rec;
	struct qbd_conn a;
	char why[512], msg[640];
	unsigned slot = rec->replicas, y = 0;
	uint64_t yid = 0;
	int err = qbd_meta_change_get(m, rec->id, &req);

	if (err)
		return; /* none (or unreadable: said by meta) */
	for (unsigned i = 0; i < rec->replicas; i++)
		if (rec->nodes[i] == req.from)
			slot = i;
	if (slot == rec->replicas) {
		qbd_info(COMP, "volume '%s': the change request for node %016" PRIx64 " is moot "
			 "(not a replica any more): deleting it", rec->name, req.from);
		qbd_meta_change_delete(m, &req);
		return;
	}
	err = choose(m, rec, &req, slot, &yid, why, sizeof(why));
	if (!err) {
		memset(&a, 0, sizeof(a));
		err = node_load(m, yid, &a, why, sizeof(why));
	}
	if (err) {
		snprintf(msg, sizeof(msg), "volume '%s': cannot replace node %016" PRIx64
			 " (slot %u) yet: %s", rec->name, req.from, slot, why);
		say_once(ch, msg);
		return;
	}
	while (y < QBD_CORE_MAX_SLOTS && (ch->slots & (1u << y)))
		y++;
	if (y == QBD_CORE_MAX_SLOTS)
		return;
	next.change.phase = QBD_CHANGE_LEARNER;
	next.change.slot = slot;
	next.change.node = yid;
	next.change.reason = req.reason;
	next.change.started = (uint64_t)time(NULL);
	err = qbd_meta_volume_cas(m, rec, &next, epoch);
	if (err) {
		qbd_warn(COMP, "volume '%s': starting the change: %s%s", rec->name, strerror(-err),
			 err == -ESTALE ? " (a newer writer took over)" : "");
		return;
	}
	ch->said[0] = '\0';
	ch->ky = y;
	ch->slots |= 1u << y;
	{
		struct qbd_node_addr na = { .salen = a.salen };

		memcpy(&na.sa, &a.sa, sizeof(na.sa));
		snprintf(na.addr, sizeof(na.addr), "%s", a.node.addr);
		snprintf(na.zone, sizeof(na.zone), "%s", a.node.zone);
		qbd_attach_slot(k, y, yid, &na);
	}
	qbd_info(COMP, "volume '%s': configuration: node %016" PRIx64 " joins as a learner to "
		 "replace node %016" PRIx64 " in slot %u (%s)", rec->name, yid, req.from, slot,
		 qbd_meta_change_reason_name(req.reason));
	pthread_mutex_lock(&ch->mu);
	ch->add = true;
	ch->add_slot = y;
	ch->add_x = ch->rslot[slot];
	ch->add_conn = a;
	ch->idle = false;
	pthread_mutex_unlock(&ch->mu);
}

/* The record's next step, when the loop's core is ready for it. */
static void keep_step(struct qbd_change *ch, struct qbd_attach_keeper *k,
		      struct qbd_meta *m, const struct qbd_volume_info *rec, uint64_t epoch)
{
	struct qbd_volume_info next = *rec;
	struct qbd_change_request req;
	unsigned slot = rec->change.slot, x = ch->rslot[slot];
	uint64_t xid = rec->nodes[slot];
	bool ready;
	int err;

	pthread_mutex_lock(&ch->mu);
	ready = ch->ready;
	pthread_mutex_unlock(&ch->mu);
	if (!ready)
		return;
	if (rec->change.phase == QBD_CHANGE_LEARNER) {
		next.change.phase = QBD_CHANGE_JOINT;
	} else {
		next.nodes[slot] = rec->change.node;
		next.cfg = rec->cfg + 1;
		memset(&next.change, 0, sizeof(next.change));
	}
	err = qbd_meta_volume_cas(m, rec, &next, epoch);
	if (err) {
		qbd_warn(COMP, "volume '%s': configuration step: %s%s", rec->name, strerror(-err),
			 err == -ESTALE ? " (a newer writer took over)" : "");
		return;
	}
	if (next.change.phase == QBD_CHANGE_JOINT) {
		qbd_info(COMP, "volume '%s': configuration: joint (slot %u's node %016" PRIx64
			 " and node %016" PRIx64 ")", rec->name, slot, xid, rec->change.node);
		/* The core is still ready (nothing made it less so since):
		 * the final step at once, from the record just written. */
		keep_step(ch, k, m, &next, epoch);
		return;
	}
	qbd_info(COMP, "volume '%s': configuration %" PRIu64 ": node %016" PRIx64 " replaced "
		 "node %016" PRIx64 " in slot %u", rec->name, next.cfg, rec->change.node, xid, slot);
	ch->rslot[slot] = ch->ky;
	ch->slots &= ~(1u << x);
	qbd_attach_slot(k, x, 0, NULL);
	qbd_attach_slot(k, ch->ky, rec->change.node, NULL);
	pthread_mutex_lock(&ch->mu);
	ch->leave = true;
	pthread_mutex_unlock(&ch->mu);
	if (qbd_meta_change_get(m, rec->id, &req) == 0 && req.from == xid)
		qbd_meta_change_delete(m, &req);
}

void qbd_change_keep(struct qbd_volume *v, struct qbd_attach_keeper *k,
		     struct qbd_meta *m, const struct qbd_volume_info *rec,
		     uint64_t epoch)
{
	struct qbd_change *ch = v->change;
	bool idle, pending;

	if (!ch)
		return;
	pthread_mutex_lock(&ch->mu);
	idle = ch->idle;
	pending = ch->add || ch->leave;
	pthread_mutex_unlock(&ch->mu);
	if (pending)
		return; /* the loop has not taken the last step yet */
	if (rec->change.phase == QBD_CHANGE_NONE) {
		if (idle)
			keep_start(ch, k, m, rec, epoch);
		return;
	}
	keep_step(ch, k, m, rec, epoch);
}
