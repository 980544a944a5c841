/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reclaim: the chunks (and promise) of a volume deleted while this node
 * was down stay in its store, since `qbd volume delete` could not reach
 * it, and so do those of a replica moved away to another node while
 * this one was down (the writer that made the change could not send it
 * its tombstone); this finds and deletes them. Every interval the loop
 * thread lists the volumes the store holds (qbd_engine_volumes), then
 * asks etcd which volumes exist and which nodes their configurations
 * list (qbd_meta_volume_scan, one read-only transaction, in libuv's
 * thread pool with an etcd handle of its own: the call blocks).
 * chunkd_reclaim_decide judges each held volume from that answer and
 * from what earlier scans saw; a volume absent from two answers (or
 * present in two with the same configuration number and a configuration
 * that does not list this node) at least the grace apart, the later at a
 * later etcd revision, of etcd of this store's cluster, has its chunks
 * freed through the engine's TOMBSTONE on
 * the loop thread, one at a time, each logged and counted: the volume's
 * promise gives way to a tombstone, so that should the judgement ever be
 * wrong (etcd restored from a backup that still has the volume), a
 * writer meets a replica that refuses the volume, not an empty one that
 * would promise it. A volume of which the store holds nothing but a
 * tombstone is left alone. Why this is safe (a volume being created is
 * never taken for a deleted one) is argued in docs/design.md, "Reclaim".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "common/log.h"
#include "common/util.h"

#define COMP "reclaim"
/* The first scan comes this soon after start-up (or an interval, if
 * shorter); scans then come every grace / 4, within these bounds. */
#define RECLAIM_FIRST_MS 5000ull
#define RECLAIM_INTERVAL_MIN_MS 1000ull
#define RECLAIM_INTERVAL_MAX_MS 60000ull

/* ---- the decision (pure) ---- */

/* Where volume is in the answer's ids, or scan->n when absent. */
static size_t scan_find(const struct qbd_meta_volume_scan *scan, uint64_t volume)
{
	size_t lo = 0, hi = scan->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (scan->ids[mid] == volume)
			return mid;
		if (scan->ids[mid] < volume)
			lo = mid + 1;
		else
			hi = mid;
	}
	return scan->n;
}

/* The configuration number at which the answer's k-th volume does not
 * list node, or 0 when it does (as a voter or as a change's new node)
 * or the answer cannot say: then the volume is kept. */
static uint64_t scan_not_member(const struct qbd_meta_volume_scan *scan, size_t k,
				uint64_t node)
{
	const struct qbd_meta_volume_members *m;

	if (!scan->members || node == 0)
		return 0;
	m = &scan->members[k];
	if (m->cfg == 0)
		return 0;
	for (unsigned i = 0; i < m->n && i < QBD_ARRAY_SIZE(m->nodes); i++)
		if (m->nodes[i] == node)
			return 0;
	return m->cfg;
}

static void decide_keep_all(struct chunkd_reclaim_judgement *j, size_t nheld)
{
	for (size_t i = 0; i < nheld; i++)
		j[i] = (struct chunkd_reclaim_judgement){ .verdict = RECLAIM_KEEP };
}

void chunkd_reclaim_memory_free(struct chunkd_reclaim_memory *mem)
{
	free(mem->v);
	mem->v = NULL;
	mem->n = 0;
}

int chunkd_reclaim_decide(struct chunkd_reclaim_memory *mem, uint64_t grace_ns,
			  uint64_t cluster_id, uint64_t node_id,
			  const struct qbd_engine_volume *held, size_t nheld,
			  const struct qbd_meta_volume_scan *scan, uint64_t now_ns,
			  struct chunkd_reclaim_judgement *j)
{
	struct chunkd_orphan *next;
	size_t n = 0, m = 0;

	decide_keep_all(j, nheld);
	if (cluster_id == 0 || scan->cluster_id != cluster_id) {
		mem->n = 0;
		return -EACCES;
	}
	if (scan->revision < mem->last_rev) {
		mem->n = 0;
		mem->last_rev = scan->revision;
		return -ESTALE;
	}
	/* The new memory: a sighting per held volume gone now. */
	next = nheld ? malloc(nheld * sizeof *next) : NULL;
	if (nheld && !next)
		return -ENOMEM;
	for (size_t i = 0; i < nheld; i++) {
		uint64_t vol = held[i].volume, cfg = 0;
		size_t k = scan_find(scan, vol);

		/* present: kept unless its configuration leaves this node out */
		if (k < scan->n && (cfg = scan_not_member(scan, k, node_id)) == 0)
			continue;
		/* held and mem are both sorted by volume */
		while (m < mem->n && mem->v[m].volume < vol)
			m++;
		/* the same sighting again: absent both times, or not a member
		 * at the same configuration number both times (one that moved
		 * on between the two starts anew; a configuration that lists
		 * this node again, seen in between, made it present) */
		if (m < mem->n && mem->v[m].volume == vol && mem->v[m].cfg == cfg) {
			const struct chunkd_orphan *o = &mem->v[m];
			bool aged = now_ns >= o->first_ns && now_ns - o->first_ns >= grace_ns;

			j[i].verdict = aged && scan->revision > o->first_rev ? RECLAIM_NOW
									      : RECLAIM_WAIT;
			next[n] = *o;
		} else {
			j[i].verdict = RECLAIM_FOUND;
			next[n] = (struct chunkd_orphan){ .volume = vol, .first_ns = now_ns,
							  .first_rev = scan->revision,
							  .cfg = cfg };
		}
		j[i].first_ns = next[n].first_ns;
		j[i].first_rev = next[n].first_rev;
		j[i].cfg = cfg;
		n++;
	}
	free(mem->v);
	mem->v = next;
	mem->n = n;
	mem->last_rev = scan->revision;
	return 0;
}

size_t chunkd_reclaim_holdings(struct qbd_engine_volume *held, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (!held[i].tombstone || held[i].chunks)
			held[k++] = held[i];
	return k;
}

/* ---- freeing, on the loop thread ---- */

static void reclaim_done(struct chunkd *d)
{
	struct chunkd_reclaim *r = &d->reclaim;

	free(r->held);
	free(r->verdicts);
	r->held = NULL;
	r->verdicts = NULL;
	r->nheld = r->next = 0;
	r->busy = false;
}

static void reclaim_numbers_drop(struct chunkd_reclaim *r, const struct qbd_engine_volume *v,
				 const struct chunkd_reclaim_judgement *j)
{
	struct qbd_node_orphaned *o = &r->numbers;

	o->volumes -= o->volumes ? 1 : 0;
	o->chunks -= QBD_MIN(o->chunks, v->chunks);
	o->held -= QBD_MIN(o->held, v->held);
	if (j->cfg) {
		o->moved -= o->moved ? 1 : 0;
		o->moved_held -= QBD_MIN(o->moved_held, v->held);
	}
}

/* Why a volume is judged gone, for the log: "absent from etcd" or "not
 * a member at configuration N". */
static const char *reclaim_why(const struct chunkd_reclaim_judgement *j, char *buf,
			       size_t len)
{
	if (j->cfg == 0)
		return "absent from etcd";
	snprintf(buf, len, "not a member at configuration %llu", (unsigned long long)j->cfg);
	return buf;
}

static void reclaim_on_deleted(struct qbd_engine_req *er)
{
	struct chunkd *d = er->user;
	struct chunkd_reclaim *r = &d->reclaim;
	const struct qbd_engine_volume *v = &r->held[r->next];
	const struct chunkd_reclaim_judgement *j = &r->verdicts[r->next];
	char sz[32], why[64];

	if (er->res < 0) {
		/* -EBUSY: a request of the volume was in the engine (the
		 * tombstone stands); -EPERM: an OPEN raised the promise
		 * since the listing; the next scan tries again */
		qbd_warn(COMP, "volume %016llx: its tombstone or freeing its chunks failed: %s; "
			 "trying again at the next scan", (unsigned long long)v->volume,
			 strerror(-er->res));
	} else {
		qbd_info(COMP, "reclaimed volume %016llx: %llu chunks, %s (%llu bytes) of data "
			 "freed, a tombstone at epoch %llu left; %s since revision %llu, "
			 "%.0f s ago",
			 (unsigned long long)v->volume, (unsigned long long)r->req_chunks,
			 qbd_format_size(r->req_held, sz, sizeof sz),
			 (unsigned long long)r->req_held, (unsigned long long)er->version,
			 reclaim_why(j, why, sizeof why), (unsigned long long)j->first_rev,
			 (double)(qbd_now_ns() - j->first_ns) / 1e9);
		r->numbers.reclaimed++;
		r->numbers.reclaimed_bytes += r->req_held;
		r->reclaimed_chunks += r->req_chunks;
		reclaim_numbers_drop(r, v, j);
	}
	r->next++;
	chunkd_reclaim_next(d);
}

/* Submit the TOMBSTONE of the next volume judged RECLAIM_NOW (at the
 * epoch the listing found, so that an OPEN since makes it fail), or end
 * the scan. */
void chunkd_reclaim_next(struct chunkd *d)
{
	struct chunkd_reclaim *r = &d->reclaim;

	while (r->next < r->nheld && r->verdicts[r->next].verdict != RECLAIM_NOW)
		r->next++;
	if (d->stopping || r->next == r->nheld) {
		reclaim_done(d);
		return;
	}
	qbd_engine_volume_usage(d->e, r->held[r->next].volume, &r->req_chunks, &r->req_held);
	memset(&r->req, 0, sizeof r->req);
	r->req.op = QBD_ENGINE_TOMBSTONE;
	r->req.volume = r->held[r->next].volume;
	r->req.epoch = QBD_MAX(r->held[r->next].promised, r->held[r->next].tombstone_epoch);
	r->req.cb = reclaim_on_deleted;
	r->req.user = d;
	qbd_engine_submit(d->e, &r->req);
}

/* ---- the scan ---- */

/* libuv's thread pool: the blocking etcd read. Touches r->meta and
 * r->scan only, which the loop leaves alone until reclaim_after_scan. */
static void reclaim_work(uv_work_t *w)
{
	struct chunkd_reclaim *r = QBD_CONTAINER_OF(w, struct chunkd_reclaim, work);

	r->scan_rc = qbd_meta_volume_scan(r->meta, &r->scan);
}

/* Log what the scan found and set the numbers of the node record. */
static void reclaim_report(struct chunkd *d)
{
	struct chunkd_reclaim *r = &d->reclaim;
	struct qbd_node_orphaned *o = &r->numbers;
	char sz[32];

	o->volumes = o->chunks = o->held = o->moved = o->moved_held = 0;
	for (size_t i = 0; i < r->nheld; i++) {
		const struct qbd_engine_volume *v = &r->held[i];
		const struct chunkd_reclaim_judgement *j = &r->verdicts[i];

		if (j->verdict == RECLAIM_KEEP)
			continue;
		o->volumes++;
		o->chunks += v->chunks;
		o->held += v->held;
		if (j->cfg) {
			o->moved++;
			o->moved_held += v->held;
		}
		if (j->verdict != RECLAIM_FOUND)
			continue;
		o->found++;
		if (j->cfg)
			qbd_info(COMP, "volume %016llx: its configuration %llu (revision %llu) "
				 "does not list this node, but this store holds %llu chunks, %s "
				 "of it: not a member, reclaimed if still so at that configuration "
				 "in %.0f s",
				 (unsigned long long)v->volume, (unsigned long long)j->cfg,
				 (unsigned long long)j->first_rev, (unsigned long long)v->chunks,
				 qbd_format_size(v->held, sz, sizeof sz),
				 (double)r->grace_ns / 1e9);
		else
			qbd_info(COMP, "volume %016llx is not in etcd (revision %llu) but this "
				 "store holds %llu chunks, %s of it: reclaimed if still absent in "
				 "%.0f s",
				 (unsigned long long)v->volume, (unsigned long long)j->first_rev,
				 (unsigned long long)v->chunks,
				 qbd_format_size(v->held, sz, sizeof sz),
				 (double)r->grace_ns / 1e9);
	}
}

static void reclaim_after_scan(uv_work_t *w, int status)
{
	struct chunkd_reclaim *r = QBD_CONTAINER_OF(w, struct chunkd_reclaim, work);
	struct chunkd *d = QBD_CONTAINER_OF(r, struct chunkd, reclaim);
	int rc = status < 0 ? status : r->scan_rc;

	r->scanning = false;
	if (d->stopping || status == UV_ECANCELED) {
		qbd_meta_volume_scan_free(&r->scan);
		reclaim_done(d);
		return;
	}
	r->scans++;
	if (rc == 0)
		rc = chunkd_reclaim_decide(&r->mem, r->grace_ns, d->cluster_id, d->node_id,
					   r->held, r->nheld, &r->scan, qbd_now_ns(),
					   r->verdicts);
	switch (rc) {
	case 0:
		break;
	case -EACCES:
		qbd_err(COMP, "etcd names cluster %016llx, this store belongs to %016llx: "
			"nothing reclaimed", (unsigned long long)r->scan.cluster_id,
			(unsigned long long)d->cluster_id);
		break;
	case -ESTALE:
		qbd_warn(COMP, "etcd's revision went back to %llu: volumes seen absent "
			 "before are judged anew", (unsigned long long)r->scan.revision);
		break;
	default:
		qbd_warn(COMP, "scan: %s; nothing reclaimed", strerror(-rc));
		break;
	}
	qbd_meta_volume_scan_free(&r->scan);
	if (rc < 0) {
		r->scan_errors++;
		reclaim_done(d);
		return;
	}
	reclaim_report(d);
	chunkd_reclaim_next(d);
}

static void reclaim_tick(uv_timer_t *t)
{
	struct chunkd *d = QBD_CONTAINER_OF(t, struct chunkd, reclaim.timer);
	struct chunkd_reclaim *r = &d->reclaim;
	int rc;

	if (r->busy || d->stopping)
		return;
	/* The store's volumes first, etcd's answer after: a volume whose
	 * chunks are listed was created before etcd is asked. */
	rc = qbd_engine_volumes(d->e, &r->held, &r->nheld);
	if (rc == 0)
		r->nheld = chunkd_reclaim_holdings(r->held, r->nheld);
	if (rc == 0 && r->nheld == 0) {
		/* nothing to ask etcd about, nothing to remember */
		r->mem.n = 0;
		r->numbers.volumes = r->numbers.chunks = r->numbers.held = 0;
		r->numbers.moved = r->numbers.moved_held = 0;
		reclaim_done(d);  /* the list of tombstones only */
		return;
	}
	if (rc == 0 && !(r->verdicts = calloc(r->nheld ? r->nheld : 1, sizeof *r->verdicts)))
		rc = -ENOMEM;
	if (rc == 0)
		rc = uv_queue_work(&d->loop, &r->work, reclaim_work, reclaim_after_scan);
	if (rc < 0) {
		qbd_warn(COMP, "scan not started: %s", rc == -ENOMEM ? strerror(ENOMEM) :
			 uv_strerror(rc));
		reclaim_done(d);
		return;
	}
	r->busy = r->scanning = true;
}

int chunkd_reclaim_start(struct chunkd *d, const struct qbd_chunkd_opts *o)
{
	struct chunkd_reclaim *r = &d->reclaim;
	int rc;

	if (o->reclaim_grace_ms == 0) {
		qbd_info(COMP, "off: the chunks of volumes deleted, or moved off this node, "
			 "while it was away stay until deleted by hand");
		return 0;
	}
	r->grace_ns = o->reclaim_grace_ms * 1000000ull;
	r->interval_ms = QBD_MAX(RECLAIM_INTERVAL_MIN_MS,
				 QBD_MIN(RECLAIM_INTERVAL_MAX_MS, o->reclaim_grace_ms / 4));
	rc = qbd_meta_open(o->etcd, &r->meta);
	if (rc < 0) {
		r->meta = NULL;
		qbd_err(COMP, "etcd %s: %s", o->etcd, strerror(-rc));
		return rc;
	}
	uv_timer_init(&d->loop, &r->timer);
	uv_timer_start(&r->timer, reclaim_tick, QBD_MIN(RECLAIM_FIRST_MS, r->interval_ms),
		       r->interval_ms);
	r->timer_on = true;
	return 0;
}

void chunkd_reclaim_stop(struct chunkd *d)
{
	struct chunkd_reclaim *r = &d->reclaim;

	if (!r->timer_on)
		return;
	uv_close((uv_handle_t *)&r->timer, NULL);
	r->timer_on = false;
	/* a scan not started yet ends as ECANCELED; one running, as usual */
	if (r->scanning)
		uv_cancel((uv_req_t *)&r->work);
}

void chunkd_reclaim_fini(struct chunkd *d)
{
	struct chunkd_reclaim *r = &d->reclaim;

	qbd_meta_close(r->meta);
	r->meta = NULL;
	chunkd_reclaim_memory_free(&r->mem);
	free(r->held);
	free(r->verdicts);
	r->held = NULL;
	r->verdicts = NULL;
}
