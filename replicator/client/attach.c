/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The writer's attachment in etcd. qbd_open takes the volume's next epoch
 * and an attachment record under a lease in one transaction (refused while
 * another writer holds it, unless forced); a keeper thread then renews the
 * lease and publishes the writer's status document for `qbd volume status`.
 * The event loop never blocks on etcd: it only hands the keeper a status
 * string under a mutex. The attach compares the volume record's revision
 * as open read it, so that no writer attaches with a configuration that
 * has changed since; when it has, the record is read again and the
 * attach retried (the open fails if the replicas themselves changed).
 *
 * The keeper also reads again, every QBD_CLIENT_LOOKUP_EVERY_S, the node
 * record of each replica the writer has down, and resolves its address:
 * a replica whose record was gone or whose name did not resolve at open
 * (its node died for good) gets one when a chunk server registers that
 * node again, and a node that registered elsewhere (restarted on another
 * port or host) is found there. The address goes to the loop the other
 * way, under the same mutex; the loop connects to it at its next retry.
 *
 * And it reads the volume's record as often: a size grown by `qbd volume
 * resize` goes to the loop (an atomic), which grows the core and the
 * handle's size at its next tick (qbd_attach_grow), without a detach.
 *
 * A clean close deletes the record and marks the epoch clean, so that the
 * next writer knows no earlier one may still be reading; after a crash or
 * a forced takeover the next writer waits out the read lease instead
 * (qbd_core_cfg.takeover_wait_ns).
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicator/client/internal.h"

#define COMP "attach"
#define LEASE_TTL 10              /* seconds */
#define KEEP_EVERY_MS 2000
#define STATUS_EVERY_NS (2ull * 1000000000ull)
/* A replica whose oldest message has waited this long is reported
 * "silent": it is still counted up by the core, which drops it only after
 * its request timeout (10 s), but an operator must not take it for
 * healthy in the meantime (a rolling restart waits on healthy). Replies
 * take milliseconds; pings go out every lease/4, so an idle writer sees
 * a silent replica too. */
#define SILENT_AFTER_NS (1000000000ull)
/* Attaches again after reading the volume record again, when it changed
 * between open's reading and the attach (qbd_meta_attach's -ESTALE). */
#define ATTACH_REREADS 3
/* Read lease of the core (its default) plus a margin for clocks. */
#define TAKEOVER_WAIT_NS (6ull * 1000000000ull)

/* A replica's node as the keeper knows it (keeper side only). */
struct keeper_node {
	uint64_t id;
	char addr[QBD_ADDR_MAX];     /* what the loop connects to; "" none */
	struct sockaddr_storage sa;  /* addr resolved, as the loop has it */
	socklen_t salen;
	char failed[QBD_ADDR_MAX];   /* the last address that did not resolve (said once) */
	bool missing;                /* the record was gone at the last look (said once) */
};

struct qbd_attach_keeper {
	struct qbd_meta *meta;       /* the keeper thread's own handle */
	struct qbd_attachment a;
	int64_t lease;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop, started, superseded;
	char *status;                /* latest document, owned; under mu */
	bool status_new;
	uint64_t status_at;          /* loop side: last document built */
	uint32_t status_sig;         /* loop side: status_sig of that document */
	struct qbd_volume *v;        /* the keeper reads only v->info.name and id,
				      * and v->change (change.c says how) */
	struct keeper_node nodes[QBD_CORE_MAX_SLOTS]; /* keeper side; id 0: slot unused */
	uint64_t nodes_at;           /* keeper side: the last look at them */
	uint32_t down;               /* under mu: replicas not up, as the loop last said */
	uint32_t addr_new;           /* under mu, read atomically outside:
				      * addrs[r] waiting for the loop */
	struct qbd_node_addr addrs[QBD_CORE_MAX_SLOTS]; /* under mu */
	uint64_t rate_own;           /* the writer's own resync rate (qbd.conf) */
	uint64_t rate_seen;          /* keeper side: the rate last handed over */
	uint64_t rate;               /* under mu: the rate for the loop */
	bool rate_new;               /* under mu, read atomically outside */
	bool settings_failed;        /* keeper side: said once */
	uint64_t size_seen;          /* keeper side: the record's size as last read */
	bool size_odd;               /* keeper side: a smaller size was said */
	uint64_t size_new;           /* atomic: a grown size for the loop, 0 none */
	uint64_t status_size;        /* loop side: the size in the last document */
};

/* Keeper side: the volume's rebuild rate in etcd (`qbd volume set
 * --rebuild-rate`), or the writer's own when it has none; handed to the
 * loop when it changed. An unreadable setting keeps the rate as it is
 * (said once). Blocks on etcd: the keeper's thread only. */
static void keeper_settings(struct qbd_attach_keeper *k)
{
	struct qbd_volume_settings s;
	uint64_t rate;
	int err = qbd_meta_volume_settings_get(k->meta, k->a.volume_id, &s);

	if (err) {
		if (!k->settings_failed)
			qbd_warn(COMP, "volume %s: reading its settings in etcd: %s (the "
				 "rebuild rate stays as it is)", k->a.volume, strerror(-err));
		k->settings_failed = true;
		return;
	}
	k->settings_failed = false;
	rate = s.has_rebuild_rate ? s.rebuild_rate : k->rate_own;
	if (rate == k->rate_seen)
		return;
	qbd_info(COMP, "volume %s: rebuild rate %" PRIu64 " bytes/s%s, %s (was %" PRIu64 ")",
		 k->a.volume, rate, rate ? "" : " (unlimited)", s.has_rebuild_rate ?
		 "the volume's setting" : "this writer's resync-rate", k->rate_seen);
	k->rate_seen = rate;
	pthread_mutex_lock(&k->mu);
	k->rate = rate;
	__atomic_store_n(&k->rate_new, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&k->mu);
}

/* Keeper side: read again the node record of each replica in down, and
 * hand the loop the address of each that changed and resolves. A record
 * that is gone, or an address that does not resolve, is said once (the
 * loop keeps the address it has, if any). Blocks on etcd and DNS: the
 * keeper's thread only. */
static void keeper_nodes(struct qbd_attach_keeper *k, uint32_t down)
{
	for (unsigned r = 0; r < QBD_CORE_MAX_SLOTS; r++) {
		struct keeper_node *kn = &k->nodes[r];
		struct qbd_node_addr a = { .salen = 0 };
		struct qbd_node_info n;
		char why[QBD_ADDR_MAX + 96];
		int err;

		if (!(down & 1u << r) || !kn->id)
			continue;
		err = qbd_meta_node_get(k->meta, kn->id, &n);
		if (err == -ENOENT) {
			if (!kn->missing)
				qbd_warn(COMP, "volume %s: replica %u node %016" PRIx64 ": no node "
					 "record in etcd; %s", k->a.volume, r, kn->id,
					 kn->addr[0] ? "retrying its last address" :
					 "it stays down until that node registers again");
			kn->missing = true;
			continue;
		}
		if (err) {
			qbd_debug(COMP, "node %016" PRIx64 ": %s", kn->id, strerror(-err));
			continue;
		}
		kn->missing = false;
		err = qbd_client_resolve(n.addr, &a.sa, &a.salen, why, sizeof(why));
		if (err) {
			if (strcmp(n.addr, kn->failed))
				qbd_warn(COMP, "volume %s: replica %u node %016" PRIx64 ": %s; %s",
					 k->a.volume, r, kn->id, why, kn->addr[0] ?
					 "retrying its previous address" : "it stays down");
			snprintf(kn->failed, sizeof(kn->failed), "%s", n.addr);
			continue;
		}
		kn->failed[0] = '\0';
		if (!strcmp(n.addr, kn->addr) && a.salen == kn->salen &&
		    !memcmp(&a.sa, &kn->sa, a.salen))
			continue; /* nothing new: the loop retries it */
		snprintf(kn->addr, sizeof(kn->addr), "%s", n.addr);
		memcpy(&kn->sa, &a.sa, sizeof(kn->sa));
		kn->salen = a.salen;
		snprintf(a.addr, sizeof(a.addr), "%s", n.addr);
		snprintf(a.zone, sizeof(a.zone), "%s", n.zone);
		pthread_mutex_lock(&k->mu);
		k->addrs[r] = a;
		__atomic_or_fetch(&k->addr_new, 1u << r, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&k->mu);
	}
}

/* Keeper side: read the volume's record; a size larger than the one the
 * loop has goes to it (qbd_attach_grow). A smaller one cannot come from
 * `qbd volume resize` (it only grows) and is said once and ignored.
 * Blocks on etcd: the keeper's thread only. */
/* Keeper side: the volume record as etcd holds it now, for this round's
 * size and membership steps (one read serves both). 0, or -errno (said
 * at debug level: the next round reads again). */
static int keeper_record(struct qbd_attach_keeper *k, struct qbd_volume_info *vi)
{
	int err = qbd_meta_volume_get(k->meta, k->a.volume, vi);

	if (err)
		qbd_debug(COMP, "volume %s: reading its record: %s", k->a.volume, strerror(-err));
	return err ? err : vi->id == k->a.volume_id ? 0 : -ENOENT;
}

/* Keeper side: a size the record grew to, for the loop. */
static void keeper_size(struct qbd_attach_keeper *k, const struct qbd_volume_info *vi)
{
	if (vi->size < k->size_seen) {
		if (!k->size_odd)
			qbd_warn(COMP, "volume %s: its record says %" PRIu64 " bytes, less than "
				 "the %" PRIu64 " served; keeping those", k->a.volume, vi->size,
				 k->size_seen);
		k->size_odd = true;
		return;
	}
	k->size_odd = false;
	if (vi->size == k->size_seen)
		return;
	qbd_info(COMP, "volume %s: grown to %" PRIu64 " bytes in etcd", k->a.volume, vi->size);
	k->size_seen = vi->size;
	__atomic_store_n(&k->size_new, vi->size, __ATOMIC_RELEASE);
}

static void *keeper_main(void *arg)
{
	struct qbd_attach_keeper *k = arg;

	pthread_mutex_lock(&k->mu);
	while (!k->stop) {
		struct timespec ts;
		struct qbd_volume_info rec;
		char *doc = NULL;
		uint32_t down;
		bool have_rec;
		int err;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += KEEP_EVERY_MS / 1000;
		pthread_cond_timedwait(&k->cv, &k->mu, &ts);
		if (k->stop)
			break;
		if (k->status_new) {
			doc = k->status;
			k->status = NULL;
			k->status_new = false;
		}
		down = k->down;
		pthread_mutex_unlock(&k->mu);
		if (!k->superseded) {
			err = qbd_meta_lease_keepalive(k->meta, k->lease);
			if (err == -ENOENT) {
				/* Expired (we were paused, or etcd was away):
				 * take it again if no newer writer exists. */
				qbd_warn(COMP, "volume %s: attachment lease expired; renewing",
					 k->a.volume);
				err = qbd_meta_lease_grant(k->meta, LEASE_TTL, &k->lease);
				if (!err)
					err = qbd_meta_attach_renew(k->meta, &k->a, k->lease);
				if (err == -ESTALE) {
					qbd_err(COMP, "volume %s: a newer writer has attached; this one is fenced",
						k->a.volume);
					k->superseded = true;
				}
			}
			if (err && err != -ESTALE)
				qbd_warn(COMP, "volume %s: etcd keepalive: %s (the data path goes on)",
					 k->a.volume, strerror(-err));
			if (doc && !k->superseded) {
				err = qbd_meta_status_put(k->meta, k->a.volume_id, k->a.epoch,
							  doc, k->lease);
				if (err && err != -ESTALE)
					qbd_debug(COMP, "status: %s", strerror(-err));
			}
			if (!k->superseded)
				keeper_settings(k);
			/* After the keepalive and the status: a slow etcd or
			 * DNS answer here must not delay them. */
			have_rec = !k->superseded && keeper_record(k, &rec) == 0;
			if (have_rec)
				qbd_change_keep(k->v, k, k->meta, &rec, k->a.epoch);
			if (down && !k->superseded && qbd_now_ns() - k->nodes_at >=
				    QBD_CLIENT_LOOKUP_EVERY_S * 1000000000ull / 2) {
				k->nodes_at = qbd_now_ns();
				keeper_nodes(k, down);
			}
			if (have_rec)
				keeper_size(k, &rec);
		}
		free(doc);
		pthread_mutex_lock(&k->mu);
	}
	pthread_mutex_unlock(&k->mu);
	return NULL;
}

/* Attach with the configuration v->info holds (its revision compared);
 * a writer of ours on this host that is gone is taken over when
 * o->reattach. qbd_meta_attach's errors. */
static int attach_once(struct qbd_volume *v, const struct qbd_open_opts *o,
		       struct qbd_meta *m, struct qbd_attachment *holder)
{
	struct qbd_attach_keeper *k = v->keeper;
	int err;

	k->a.volume_revision = v->info.mod_revision;
	err = qbd_meta_attach(m, &k->a, k->lease, o->force, holder);
	if (err == -EBUSY && o->reattach && strcmp(holder->host, k->a.host) == 0 &&
	    holder->pid > 0 && kill(holder->pid, 0) < 0 && errno == ESRCH) {
		qbd_info(COMP, "volume '%s': its writer on this host (pid %d) is gone; "
			 "taking over", v->info.name, holder->pid);
		err = qbd_meta_attach(m, &k->a, k->lease, true, holder);
	}
	return err;
}

/* The volume record changed between its reading (open.c) and the
 * attach: read it again. What open.c set up from it (a connection per
 * replica) still holds when the members are the same (a resize, a
 * change that started or moved to its next phase with the same node);
 * when they are not, the open fails: 0 or -errno, said here. */
static int attach_reread(struct qbd_volume *v, struct qbd_meta *m)
{
	struct qbd_volume_info now;
	int err = qbd_meta_volume_get(m, v->info.name, &now);

	if (err) {
		qbd_err(COMP, "open '%s': reading its record again: %s", v->info.name,
			strerror(-err));
		return err;
	}
	if (now.id != v->info.id || now.replicas != v->info.replicas ||
	    now.write_quorum != v->info.write_quorum || now.chunk_size != v->info.chunk_size ||
	    memcmp(now.nodes, v->info.nodes, sizeof now.nodes) != 0 ||
	    (now.change.phase != QBD_CHANGE_NONE) != (v->info.change.phase != QBD_CHANGE_NONE) ||
	    now.change.node != v->info.change.node || now.change.slot != v->info.change.slot) {
		qbd_err(COMP, "open '%s': its replicas changed while attaching (configuration "
			"%" PRIu64 " -> %" PRIu64 "); open it again", v->info.name,
			v->info.cfg, now.cfg);
		return -ESTALE;
	}
	qbd_info(COMP, "volume '%s': its record changed while attaching (same replicas); "
		 "attaching again", v->info.name);
	v->info = now;
	return 0;
}

int qbd_attach_take(struct qbd_volume *v, const struct qbd_open_opts *o,
		    struct qbd_meta *m)
{
	const char *url = o->etcd ? o->etcd : getenv("QBD_ETCD");
	struct qbd_attach_keeper *k = calloc(1, sizeof(*k));
	struct qbd_attachment holder = { 0 };
	pthread_condattr_t ca;
	bool clean = false;
	int err;

	if (!k)
		return -ENOMEM;
	pthread_mutex_init(&k->mu, NULL);
	/* The keeper's waits run on the monotonic clock: with the realtime
	 * clock, a step forward of the system clock made it sleep that much
	 * longer and the attachment's lease lapsed (the fault suite's
	 * clock-step scenario). */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cv, &ca);
	pthread_condattr_destroy(&ca);
	v->keeper = k;
	snprintf(k->a.volume, sizeof(k->a.volume), "%s", v->info.name);
	k->a.volume_id = v->info.id;
	if (gethostname(k->a.host, sizeof(k->a.host)) < 0)
		snprintf(k->a.host, sizeof(k->a.host), "?");
	k->a.host[sizeof(k->a.host) - 1] = 0;
	snprintf(k->a.zone, sizeof(k->a.zone), "%s", o->zone ? o->zone : "");
	k->rate_own = k->rate_seen = o->resync_rate;
	k->a.pid = (int)getpid();
	k->a.since = (uint64_t)time(NULL);
	err = qbd_meta_lease_grant(m, LEASE_TTL, &k->lease);
	if (err) {
		qbd_err(COMP, "open '%s': lease: %s", v->info.name, strerror(-err));
		return err;
	}
	for (int tries = 0;; tries++) {
		err = attach_once(v, o, m, &holder);
		if (err != -ESTALE || tries == ATTACH_REREADS)
			break;
		err = attach_reread(v, m);
		if (err)
			return err;
	}
	if (err == -ESTALE) {
		qbd_err(COMP, "open '%s': its configuration kept changing while attaching "
			"(%d times); try again", v->info.name, ATTACH_REREADS + 1);
		return -EAGAIN;
	}
	if (err == -EBUSY) {
		qbd_err(COMP, "volume '%s' is attached on host %s (zone %s, pid %d, epoch %" PRIu64
			"); --force takes it over if that node is gone",
			v->info.name, holder.host, holder.zone[0] ? holder.zone : "-",
			holder.pid, holder.epoch);
		return -EBUSY;
	}
	if (err) {
		qbd_err(COMP, "open '%s': attach: %s", v->info.name, strerror(-err));
		return err;
	}
	v->epoch = k->a.epoch;
	if (holder.epoch)
		qbd_warn(COMP, "volume '%s': taking over from host %s (pid %d, epoch %" PRIu64 ")",
			 v->info.name, holder.host, holder.pid, holder.epoch);
	/* Did the previous writer close cleanly? Then nobody can still be
	 * reading, and writes need not wait for its read lease. */
	if (!holder.epoch && qbd_meta_was_clean(m, v->info.id, v->epoch - 1) == 1)
		clean = true;
	v->takeover_wait_ns = clean || v->epoch == 1 ? 0 : TAKEOVER_WAIT_NS;
	if (v->takeover_wait_ns)
		qbd_info(COMP, "volume '%s': the previous writer did not detach cleanly; "
			 "writes wait %llu s for its read lease", v->info.name,
			 (unsigned long long)(v->takeover_wait_ns / 1000000000ull));
	err = qbd_meta_open(url, &k->meta);
	if (err)
		return err;
	return 0;
}

/* Start the keeper once the volume is open. */
int qbd_attach_start(struct qbd_volume *v)
{
	struct qbd_attach_keeper *k = v->keeper;
	int err;

	/* What the loop has, before the thread exists. The keeper says
	 * again only what meta_load_node did not. */
	k->v = v;
	k->size_seen = v->info.size;
	for (unsigned r = 0; r < v->nslots; r++) {
		const struct qbd_conn *c = &v->conns[r];
		struct keeper_node *kn = &k->nodes[r];

		if (!c->v || c->unused)
			continue;
		kn->id = c->node.id;
		if (c->no_addr) {
			kn->missing = !c->node.addr[0];
			snprintf(kn->failed, sizeof(kn->failed), "%s", c->node.addr);
		} else {
			snprintf(kn->addr, sizeof(kn->addr), "%s", c->node.addr);
			memcpy(&kn->sa, &c->sa, sizeof(kn->sa));
			kn->salen = c->salen;
		}
		if (c->state != QBD_C_UP)
			k->down |= 1u << r;
	}
	err = -pthread_create(&k->thread, NULL, keeper_main, k);
	if (err) {
		qbd_err(COMP, "keeper thread: %s", strerror(-err));
		return err;
	}
	k->started = true;
	return 0;
}

/* How long r's oldest unanswered message has waited (0: none). */
static uint64_t replica_waiting_ns(const struct qbd_core_replica_info *ri, uint64_t now)
{
	if (!ri->up || !ri->oldest_unanswered || ri->oldest_unanswered > now)
		return 0;
	return now - ri->oldest_unanswered;
}

static bool replica_silent(const struct qbd_core_replica_info *ri, uint64_t now)
{
	return replica_waiting_ns(ri, now) >= SILENT_AFTER_NS;
}

static const char *replica_state(const struct qbd_core_replica_info *ri, uint64_t now)
{
	if (!ri->up)
		return "down";
	if (replica_silent(ri, now))
		return "silent";
	return ri->stale_chunks ? "resync" : "up";
}

/* What readers of the status judge health by: each replica up or down,
 * stale or current, and the writer fenced or not. A change is published
 * at once, not at the next period: an operator who restarts chunk servers
 * one by one waits for `qbd volume status` to say healthy in between, and
 * a document still saying "up" from before a replica went down would let
 * the next restart take a second copy away. */
_Static_assert(1 + 3 * QBD_CORE_MAX_SLOTS <= 32, "status_sig: three bits a slot");
static uint32_t status_sig(struct qbd_volume *v, uint64_t now)
{
	uint32_t sig = qbd_core_fenced(v->core);

	for (unsigned r = 0; r < v->nslots; r++) {
		struct qbd_core_replica_info ri = { 0 };

		if (v->conns[r].unused)
			continue;
		qbd_core_replica_info(v->core, r, &ri);
		sig |= (uint32_t)ri.up << (1 + 3 * r);
		sig |= (uint32_t)(ri.stale_chunks != 0) << (2 + 3 * r);
		sig |= (uint32_t)replica_silent(&ri, now) << (3 + 3 * r);
	}
	return sig;
}

/* What slot r is in the configuration the core follows. */
static const char *slot_role(struct qbd_volume *v, unsigned r)
{
	uint32_t voters, joint, learners, bit = 1u << r;

	qbd_core_members(v->core, &voters, &joint, &learners);
	if (learners & bit)
		return "learner";
	if (joint && !(joint & bit))
		return "leaving";
	if (joint && !(voters & bit))
		return "joining";
	return "voter";
}

void qbd_attach_status(struct qbd_volume *v)
{
	struct qbd_attach_keeper *k = v->keeper;
	uint64_t now = qbd_now_ns();
	json_object *o, *arr, *chg;
	uint32_t sig, down = 0;
	bool changed;
	char *doc;

	if (!k || !k->started)
		return;
	sig = status_sig(v, now);
	/* A new size is published at once too: `qbd volume resize` waits
	 * for it. */
	changed = sig != k->status_sig || !k->status_at || v->info.size != k->status_size;
	if (!changed && now - k->status_at < STATUS_EVERY_NS)
		return;
	k->status_at = now;
	k->status_sig = sig;
	k->status_size = v->info.size;
	o = json_object_new_object();
	arr = json_object_new_array();
	json_object_object_add(o, "epoch", json_object_new_int64((int64_t)v->epoch));
	json_object_object_add(o, "updated", json_object_new_int64((int64_t)time(NULL)));
	json_object_object_add(o, "write_quorum", json_object_new_int((int)v->info.write_quorum));
	json_object_object_add(o, "chunks", json_object_new_int64((int64_t)v->nchunks));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)v->info.size));
	json_object_object_add(o, "fenced", json_object_new_boolean(qbd_core_fenced(v->core)));
	json_object_object_add(o, "resync_rate",
			       json_object_new_int64((int64_t)qbd_core_resync_rate(v->core)));
	/* Entry i is the record's replica i (in core slot rslot[i]); a
	 * change's learner is in "change". */
	for (unsigned i = 0; i < v->info.replicas; i++) {
		struct qbd_core_replica_info ri = { 0 };
		unsigned r = v->rslot[i];
		json_object *e;
		char hex[17];

		e = json_object_new_object();
		qbd_core_replica_info(v->core, r, &ri);
		snprintf(hex, sizeof(hex), "%016" PRIx64, v->conns[r].node.id);
		json_object_object_add(e, "index", json_object_new_int((int)i));
		json_object_object_add(e, "slot", json_object_new_int((int)r));
		json_object_object_add(e, "role", json_object_new_string(slot_role(v, r)));
		json_object_object_add(e, "node", json_object_new_string(hex));
		json_object_object_add(e, "zone", json_object_new_string(v->conns[r].node.zone));
		json_object_object_add(e, "addr", json_object_new_string(v->conns[r].node.addr));
		json_object_object_add(e, "state", json_object_new_string(replica_state(&ri, now)));
		json_object_object_add(e, "waiting_ms",
				       json_object_new_int64((int64_t)(replica_waiting_ns(&ri, now) / 1000000)));
		json_object_object_add(e, "last_reply_ms",
				       json_object_new_int64(ri.last_reply && ri.last_reply <= now ?
							     (int64_t)((now - ri.last_reply) / 1000000) : -1));
		json_object_object_add(e, "stale_chunks", json_object_new_int64((int64_t)ri.stale_chunks));
		json_object_object_add(e, "resync_done_chunks", json_object_new_int64((int64_t)ri.resync_done));
		json_object_object_add(e, "resync_total_chunks", json_object_new_int64((int64_t)ri.resync_total));
		json_object_object_add(e, "pulled_chunks", json_object_new_int64((int64_t)ri.pulled));
		json_object_object_add(e, "resync_bytes", json_object_new_int64((int64_t)ri.resync_bytes));
		json_object_array_add(arr, e);
	}
	json_object_object_add(o, "replicas", arr);
	for (unsigned r = 0; r < v->nslots; r++) {
		struct qbd_core_replica_info ri = { 0 };

		if (!v->conns[r].unused && qbd_core_replica_info(v->core, r, &ri) == 0 && !ri.up)
			down |= 1u << r;
	}
	if ((chg = qbd_change_status(v)))
		json_object_object_add(o, "change", chg);
	doc = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	if (!doc)
		return;
	pthread_mutex_lock(&k->mu);
	free(k->status);
	k->status = doc;
	k->status_new = true;
	k->down = down;
	if (changed)
		pthread_cond_signal(&k->cv); /* the keeper writes it now */
	pthread_mutex_unlock(&k->mu);
}

void qbd_attach_wake(struct qbd_volume *v)
{
	struct qbd_attach_keeper *k = v->keeper;

	if (!k || !k->started)
		return;
	pthread_mutex_lock(&k->mu);
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->mu);
}

void qbd_attach_slot(struct qbd_attach_keeper *k, unsigned r, uint64_t id,
		     const struct qbd_node_addr *a)
{
	struct keeper_node *kn = &k->nodes[r];

	memset(kn, 0, sizeof(*kn));
	kn->id = id;
	if (a) {
		snprintf(kn->addr, sizeof(kn->addr), "%s", a->addr);
		memcpy(&kn->sa, &a->sa, sizeof(kn->sa));
		kn->salen = a->salen;
	}
}

uint32_t qbd_attach_addrs(struct qbd_volume *v,
			  struct qbd_node_addr out[QBD_CORE_MAX_SLOTS])
{
	struct qbd_attach_keeper *k = v->keeper;
	uint32_t fresh;

	if (!k || !k->started || !__atomic_load_n(&k->addr_new, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&k->mu);
	fresh = k->addr_new;
	for (unsigned r = 0; r < QBD_CORE_MAX_SLOTS; r++)
		if (fresh & 1u << r)
			out[r] = k->addrs[r];
	__atomic_store_n(&k->addr_new, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&k->mu);
	return fresh;
}

bool qbd_attach_rate(struct qbd_volume *v, uint64_t *rate)
{
	struct qbd_attach_keeper *k = v->keeper;

	if (!k || !k->started || !__atomic_load_n(&k->rate_new, __ATOMIC_ACQUIRE))
		return false;
	pthread_mutex_lock(&k->mu);
	*rate = k->rate;
	k->rate_new = false;
	pthread_mutex_unlock(&k->mu);
	return true;
}

void qbd_attach_grow(struct qbd_volume *v)
{
	struct qbd_attach_keeper *k = v->keeper;
	uint64_t size, nchunks;
	int err;

	if (!k || !k->started)
		return;
	size = __atomic_load_n(&k->size_new, __ATOMIC_ACQUIRE);
	if (size <= v->info.size)
		return;
	nchunks = (size + v->info.chunk_size - 1) / v->info.chunk_size;
	err = qbd_core_grow(v->core, nchunks);
	if (err) {
		/* Tried again at the next tick. */
		qbd_err(COMP, "volume %s: growing to %" PRIu64 " bytes: %s", v->info.name, size,
			strerror(-err));
		return;
	}
	qbd_info(COMP, "volume %s: grew from %" PRIu64 " to %" PRIu64 " bytes (%" PRIu64
		 " chunks)", v->info.name, v->info.size, size, nchunks);
	v->info.size = size;
	v->nchunks = nchunks;
}

void qbd_attach_release(struct qbd_volume *v, bool clean)
{
	struct qbd_attach_keeper *k = v->keeper;
	int err;

	if (!k)
		return;
	v->keeper = NULL;
	if (k->started) {
		pthread_mutex_lock(&k->mu);
		k->stop = true;
		pthread_cond_signal(&k->cv);
		pthread_mutex_unlock(&k->mu);
		pthread_join(k->thread, NULL);
	}
	if (k->meta && k->a.epoch && !k->superseded) {
		if (clean) {
			err = qbd_meta_mark_clean(k->meta, k->a.volume_id, k->a.epoch);
			if (err)
				qbd_warn(COMP, "volume %s: marking the detach clean: %s",
					 k->a.volume, strerror(-err));
		}
		err = qbd_meta_detach(k->meta, &k->a);
		if (err && err != -ESTALE)
			qbd_warn(COMP, "volume %s: detach: %s", k->a.volume, strerror(-err));
	}
	if (k->meta && k->lease) {
		err = qbd_meta_lease_revoke(k->meta, k->lease);
		if (err && err != -ENOENT)
			qbd_debug(COMP, "lease revoke: %s", strerror(-err));
	}
	qbd_meta_close(k->meta);
	free(k->status);
	pthread_mutex_destroy(&k->mu);
	pthread_cond_destroy(&k->cv);
	free(k);
}
