/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Carrying out the changes of volumes nobody has attached (docs/design.md,
 * "Manager"). The manager is then the volume's writer, as any other: it
 * opens the volume with libqbd (a new epoch and the attachment record,
 * so a user's attach meanwhile is told the volume is attached here, and
 * --force takes it over, the new writer carrying the change on), and
 * runs the handle's event loop while libqbd's keeper and loop take the
 * change's steps (replicator/client/change.c). It watches the record:
 * done when the record holds no change and the request is gone; given
 * up (and tried again later, after a growing wait) when nothing moved
 * for give-up seconds. One volume at a time.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"
#include "replicator/qbd.h"

#define COMP "drive"
#define CHECK_EVERY_NS (2ull * 1000000000ull)

/* ---- volumes given up, and when to try them again ---- */

static struct mgr_retry *retry_find(struct mgr *m, uint64_t id)
{
	for (size_t i = 0; i < m->nretry; i++)
		if (m->retry[i].id == id)
			return &m->retry[i];
	return NULL;
}

static bool retry_waiting(struct mgr *m, uint64_t id)
{
	struct mgr_retry *r = retry_find(m, id);

	return r && qbd_now_ns() < r->at_ns;
}

/* Volume `name` could not make progress: say why (once, until the reason
 * changes) and wait before the next try. */
static void retry_later(struct mgr *m, const struct qbd_volume_info *vol, const char *why)
{
	struct mgr_retry *r = retry_find(m, vol->id);
	uint64_t wait;

	if (!r) {
		if (m->nretry == m->cretry) {
			size_t nc = m->cretry ? m->cretry * 2 : 16;
			struct mgr_retry *nr = realloc(m->retry, nc * sizeof *nr);

			if (!nr)
				return;
			m->retry = nr;
			m->cretry = nc;
		}
		r = &m->retry[m->nretry++];
		memset(r, 0, sizeof *r);
		r->id = vol->id;
	}
	r->fails++;
	wait = (uint64_t)MGR_RETRY_MIN_S << (r->fails < 8 ? r->fails - 1 : 7);
	if (wait > MGR_RETRY_MAX_S)
		wait = MGR_RETRY_MAX_S;
	r->at_ns = qbd_now_ns() + wait * 1000000000ull;
	if (strcmp(r->why, why)) {
		snprintf(r->why, sizeof r->why, "%s", why);
		qbd_warn(COMP, "volume '%s': cannot carry its change out now: %s; trying again "
			 "in %" PRIu64 " s (and later, less often, until it can)", vol->name, why,
			 wait);
	} else {
		qbd_debug(COMP, "volume '%s': still %s; again in %" PRIu64 " s", vol->name, why,
			  wait);
	}
}

static void retry_forget(struct mgr *m, uint64_t id)
{
	struct mgr_retry *r = retry_find(m, id);

	if (r)
		*r = m->retry[--m->nretry];
}

/* ---- choosing a volume ---- */

static const struct qbd_change_request *request_of(const struct qbd_meta_cluster_view *view,
						   uint64_t id)
{
	for (size_t i = 0; i < view->nc; i++)
		if (view->changes[i].volume_id == id)
			return &view->changes[i];
	return NULL;
}

static bool attached(const struct qbd_meta_cluster_view *view, uint64_t id)
{
	for (size_t i = 0; i < view->na; i++)
		if (view->attached[i] == id)
			return true;
	return false;
}

/* The volume to work on: a request or a change standing, no attachment,
 * not waiting to be tried again; the oldest first. NULL if none. */
static const struct qbd_volume_info *choose(struct mgr *m,
					    const struct qbd_meta_cluster_view *view)
{
	const struct qbd_volume_info *best = NULL;
	uint64_t best_t = UINT64_MAX;

	for (size_t i = 0; i < view->nv; i++) {
		const struct qbd_volume_info *vol = &view->vols[i];
		const struct qbd_change_request *req = request_of(view, vol->id);
		uint64_t t;

		if ((!req && vol->change.phase == QBD_CHANGE_NONE) || attached(view, vol->id) ||
		    retry_waiting(m, vol->id))
			continue;
		t = vol->change.phase != QBD_CHANGE_NONE ? vol->change.started : req->created;
		if (t < best_t) {
			best = vol;
			best_t = t;
		}
	}
	return best;
}

/* Before taking an epoch: would the change be refused anyway? 0, or a
 * reason in why (-1). A request for a node that is not a replica any
 * more is deleted here (1), as the writer would. */
static int precheck(struct mgr *m, const struct qbd_meta_cluster_view *view,
		    const struct qbd_volume_info *vol, char *why, size_t len)
{
	const struct qbd_change_request *req = request_of(view, vol->id);
	unsigned slot = vol->replicas, alive = 0, need;
	char w[400];
	uint64_t y;

	for (unsigned r = 0; r < vol->replicas && r < QBD_MAX_REPLICAS; r++)
		for (size_t i = 0; i < view->nn; i++)
			if (view->nodes[i].id == vol->nodes[r] && view->nodes[i].alive)
				alive++;
	need = QBD_MAX(vol->write_quorum, vol->replicas - vol->write_quorum + 1);
	if (alive < need) {
		snprintf(why, len, "only %u of its %u replicas' nodes are alive, %u needed to "
			 "attach", alive, vol->replicas, need);
		return -1;
	}
	if (vol->change.phase != QBD_CHANGE_NONE || !req)
		return 0;
	for (unsigned r = 0; r < vol->replicas && r < QBD_MAX_REPLICAS; r++)
		if (vol->nodes[r] == req->from)
			slot = r;
	if (slot == vol->replicas) {
		qbd_info(COMP, "volume '%s': the change request for node %016" PRIx64 " is moot "
			 "(not a replica any more): deleting it", vol->name, req->from);
		qbd_meta_change_delete(m->m, req);
		return 1;
	}
	if (req->to ? qbd_meta_place_check(view->nodes, view->nn, vol, slot, req->to, w,
					   sizeof w) :
		      qbd_meta_place_replacement(view->nodes, view->nn, vol, slot, &y, w,
						 sizeof w)) {
		snprintf(why, len, "no node can take slot %u (node %016" PRIx64 "): %s", slot,
			 req->from, w);
		return -1;
	}
	return 0;
}

/* ---- driving one volume ---- */

/* What moves while a change goes on: the configuration, its phase, and
 * the chunks copied to every slot. */
static uint64_t progress_sig(struct qbd_volume *h, const struct qbd_volume_info *rec)
{
	uint64_t sig = rec->cfg * 1000003ull + (uint64_t)rec->change.phase * 7919ull;

	for (unsigned i = 0; i < qbd_replica_count(h); i++) {
		struct qbd_replica_status st;

		if (qbd_replica_status(h, i, &st) == 0)
			sig += st.resync_done * (i + 1) + (uint64_t)st.connected;
	}
	return sig;
}

enum drive_end { DRIVE_GOING, DRIVE_DONE, DRIVE_TAKEN, DRIVE_STALLED, DRIVE_GONE,
		 DRIVE_STOPPED };

/* A look at etcd while driving: the end, or DRIVE_GOING. */
static enum drive_end drive_check(struct mgr *m, struct qbd_volume *h,
				  const struct qbd_volume_info *vol, struct qbd_volume_info *rec)
{
	struct qbd_change_request req;
	struct qbd_attachment a;
	int err;

	if (!mgr_elect_leading(m->el, NULL)) {
		qbd_warn(COMP, "volume '%s': this instance no longer leads: stopping (the next "
			 "leader carries the change on)", vol->name);
		return DRIVE_STOPPED;
	}
	err = qbd_meta_attachment_get(m->m, vol->id, &a);
	if (err == 0 && a.epoch != qbd_epoch(h)) {
		qbd_warn(COMP, "volume '%s': a writer attached on host %s (pid %d, epoch %"
			 PRIu64 ") took it over: it carries the change on", vol->name, a.host,
			 a.pid, a.epoch);
		return DRIVE_TAKEN;
	}
	if (err && err != -ENOENT)
		return DRIVE_GOING; /* etcd away: libqbd says so; look again */
	err = qbd_meta_volume_get(m->m, vol->name, rec);
	if (err == -ENOENT || (err == 0 && rec->id != vol->id)) {
		qbd_warn(COMP, "volume '%s' was deleted", vol->name);
		return DRIVE_GONE;
	}
	if (err)
		return DRIVE_GOING;
	if (rec->change.phase != QBD_CHANGE_NONE)
		return DRIVE_GOING;
	err = qbd_meta_change_get(m->m, vol->id, &req);
	if (err == -ENOENT)
		return DRIVE_DONE;
	return DRIVE_GOING;
}

/* Run h's loop until the change is done or cannot go on. */
static enum drive_end drive_loop(struct mgr *m, struct qbd_volume *h,
				 const struct qbd_volume_info *vol, char *why, size_t len)
{
	struct qbd_volume_info rec = *vol;
	uint64_t checked = 0, moved = qbd_now_ns(), sig = 0;
	enum qbd_change_phase phase = vol->change.phase;

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = qbd_get_fd(h), .events = POLLIN },
			{ .fd = m->sfd, .events = POLLIN },
		};
		uint64_t now, s;
		enum drive_end end;

		poll(pfd, 2, 500);
		qbd_process(h);
		mgr_poll(m);
		if (m->stop)
			return DRIVE_STOPPED;
		now = qbd_now_ns();
		if (now - checked < CHECK_EVERY_NS)
			continue;
		checked = now;
		/* A copy may take hours: down-out of other nodes goes on. */
		mgr_downout_look(m);
		end = drive_check(m, h, vol, &rec);
		if (end != DRIVE_GOING)
			return end;
		if (rec.change.phase != phase) {
			qbd_info(COMP, "volume '%s': configuration %" PRIu64 ", change %s",
				 vol->name, rec.cfg, qbd_meta_change_phase_name(rec.change.phase));
			phase = rec.change.phase;
		}
		s = progress_sig(h, &rec);
		if (s != sig) {
			sig = s;
			moved = now;
		} else if (now - moved >= m->o.give_up_s * 1000000000ull) {
			snprintf(why, len, "nothing moved for %" PRIu64 " s (configuration %"
				 PRIu64 ", change %s; libqbd's lines above say why)",
				 m->o.give_up_s, rec.cfg, qbd_meta_change_phase_name(rec.change.phase));
			return DRIVE_STALLED;
		}
	}
}

void mgr_drive_round(struct mgr *m, const struct qbd_meta_cluster_view *view)
{
	const struct qbd_volume_info *pick = choose(m, view);
	struct qbd_volume_info vol;
	struct qbd_open_opts o = {
		.etcd = m->o.etcd, .secret_file = m->o.secret_file,
		.resync_rate = m->o.resync_rate,
	};
	struct qbd_volume *h = NULL;
	char why[512];
	enum drive_end end;
	int err;

	if (!pick)
		return;
	vol = *pick;
	err = precheck(m, view, &vol, why, sizeof why);
	if (err) {
		if (err < 0)
			retry_later(m, &vol, why);
		return;
	}
	qbd_info(COMP, "volume '%s' is attached nowhere: carrying out its change (%s)",
		 vol.name, vol.change.phase != QBD_CHANGE_NONE ?
		 qbd_meta_change_phase_name(vol.change.phase) : "requested");
	o.volume = vol.name;
	m->driving = true;
	err = qbd_open(&o, &h);
	mgr_poll(m);
	if (err) {
		m->driving = false;
		if (err == -EBUSY) {
			qbd_info(COMP, "volume '%s' was attached meanwhile: its writer carries the "
				 "change out", vol.name);
			return;
		}
		snprintf(why, sizeof why, "opening it: %s", strerror(-err));
		m->changes_given_up++;
		retry_later(m, &vol, why);
		return;
	}
	why[0] = '\0';
	end = drive_loop(m, h, &vol, why, sizeof why);
	err = qbd_close(h);
	m->driving = false;
	if (err && err != -EPERM)
		qbd_warn(COMP, "volume '%s': closing: %s", vol.name, strerror(-err));
	switch (end) {
	case DRIVE_DONE:
		m->changes_done++;
		retry_forget(m, vol.id);
		qbd_info(COMP, "volume '%s': change carried out; detached%s", vol.name,
			 err ? " (not cleanly: see above)" : "");
		break;
	case DRIVE_STALLED:
		m->changes_given_up++;
		retry_later(m, &vol, why);
		break;
	case DRIVE_TAKEN:
	case DRIVE_GONE:
		retry_forget(m, vol.id);
		break;
	default:
		break;
	}
}
