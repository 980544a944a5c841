/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Down-out (docs/design.md, "Manager"): a node down longer than down-out
 * is treated as removed, and each volume with a replica on it gets a
 * change request (reason down-out, to empty: placement picks when it is
 * carried out). The decision is a pure function of one view of etcd
 * (never a partial one: qbd_meta_cluster_view) and of how long this
 * leader's own looks have found the node down; a chunk server republishes
 * its record only when its numbers change, so the record's age alone does
 * not say how long the node has been down, and a new leader starts that
 * count afresh (it waits down-out, never less).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define COMP "down-out"

static bool has_request(const struct qbd_meta_cluster_view *view, uint64_t id)
{
	for (size_t i = 0; i < view->nc; i++)
		if (view->changes[i].volume_id == id)
			return true;
	return false;
}

size_t mgr_downout_decide(const struct qbd_meta_cluster_view *view, uint64_t now_s,
			  uint64_t down_out_s, int64_t (*down_for_s)(void *, uint64_t),
			  void *arg, struct mgr_downout *out, size_t max)
{
	size_t n = 0;

	if (down_out_s == 0)
		return 0;
	for (size_t i = 0; i < view->nn; i++) {
		const struct qbd_node_info *nd = &view->nodes[i];
		int64_t seen;

		if (nd->alive || nd->updated == 0 || nd->updated > now_s ||
		    now_s - nd->updated < down_out_s)
			continue;
		seen = down_for_s(arg, nd->id);
		if (seen < 0 || (uint64_t)seen < down_out_s)
			continue;
		for (size_t v = 0; v < view->nv; v++) {
			const struct qbd_volume_info *vol = &view->vols[v];
			bool member = false;

			for (unsigned r = 0; r < vol->replicas && r < QBD_MAX_REPLICAS; r++)
				member |= vol->nodes[r] == nd->id;
			if (!member || vol->change.phase != QBD_CHANGE_NONE ||
			    has_request(view, vol->id))
				continue;
			if (n < max) {
				out[n].vol = v;
				out[n].node = nd->id;
			}
			n++;
		}
	}
	return n;
}

/* ---- the leader's count of down nodes ---- */

static struct mgr_down *down_find(struct mgr *m, uint64_t id)
{
	for (size_t i = 0; i < m->ndown; i++)
		if (m->down[i].id == id)
			return &m->down[i];
	return NULL;
}

static int64_t down_for(void *arg, uint64_t id)
{
	struct mgr *m = arg;
	struct mgr_down *d = down_find(m, id);

	return d ? (int64_t)((qbd_now_ns() - d->since_ns) / 1000000000ull) : -1;
}

/* Note which nodes this look finds down; forget those found up (or gone). */
static void down_sweep(struct mgr *m, const struct qbd_meta_cluster_view *view)
{
	uint64_t now = qbd_now_ns();
	size_t k = 0;

	for (size_t i = 0; i < m->ndown; i++)
		m->down[i].seen = false;
	for (size_t i = 0; i < view->nn; i++) {
		const struct qbd_node_info *nd = &view->nodes[i];
		struct mgr_down *d;

		if (nd->alive)
			continue;
		if (!(d = down_find(m, nd->id))) {
			if (m->ndown == m->cdown) {
				size_t nc = m->cdown ? m->cdown * 2 : 16;
				struct mgr_down *nd2 = realloc(m->down, nc * sizeof *nd2);

				if (!nd2)
					continue;
				m->down = nd2;
				m->cdown = nc;
			}
			d = &m->down[m->ndown++];
			memset(d, 0, sizeof *d);
			d->id = nd->id;
			d->since_ns = now;
		}
		d->seen = true;
		if (!d->said && m->o.down_out_s) {
			d->said = true;
			qbd_info(COMP, "node %016" PRIx64 " (%s, zone %s) is down; it is out if "
				 "still down in %" PRIu64 " s", nd->id, nd->addr, nd->zone,
				 m->o.down_out_s);
		}
	}
	for (size_t i = 0; i < m->ndown; i++) {
		if (!m->down[i].seen) {
			if (m->down[i].said)
				qbd_info(COMP, "node %016" PRIx64 " is back (or gone from etcd)",
					 m->down[i].id);
			continue;
		}
		m->down[k++] = m->down[i];
	}
	m->ndown = k;
}

void mgr_downout_round(struct mgr *m, const struct qbd_meta_cluster_view *view,
		       int64_t lease)
{
	struct mgr_downout out[64];
	uint64_t now_s = (uint64_t)time(NULL);
	size_t n;

	down_sweep(m, view);
	n = mgr_downout_decide(view, now_s, m->o.down_out_s, down_for, m, out,
			       QBD_ARRAY_SIZE(out));
	if (n > QBD_ARRAY_SIZE(out))
		n = QBD_ARRAY_SIZE(out); /* the rest at the next round */
	for (size_t i = 0; i < n && !m->stop; i++) {
		const struct qbd_volume_info *vol = &view->vols[out[i].vol];
		struct qbd_change_request req = {
			.volume_id = vol->id, .kind = QBD_CHANGE_KIND_REPLACE,
			.from = out[i].node, .to = 0, .reason = QBD_REASON_DOWN_OUT,
			.created = now_s,
		};
		int err;

		if (!mgr_elect_leading(m->el, NULL))
			return;
		err = qbd_meta_manager_request(m->m, &req, lease);
		if (err == 0) {
			m->downout_written++;
			qbd_warn(COMP, "node %016" PRIx64 " has been down longer than %" PRIu64
				 " s: volume '%s' gets a change request to replace its replica "
				 "there (placement picks the node)", out[i].node, m->o.down_out_s,
				 vol->name);
		} else if (err == -EAGAIN) {
			qbd_info(COMP, "volume '%s': no down-out request for node %016" PRIx64
				 ": it is back, or this instance no longer leads", vol->name,
				 out[i].node);
			return;
		} else if (err != -EEXIST) {
			qbd_warn(COMP, "volume '%s': writing the down-out request for node %016"
				 PRIx64 ": %s", vol->name, out[i].node, strerror(-err));
			return;
		}
		mgr_poll(m);
	}
}

void mgr_downout_look(struct mgr *m)
{
	struct qbd_meta_cluster_view view;
	int64_t lease;

	if (!m->o.down_out_s || !mgr_elect_leading(m->el, &lease))
		return;
	if (qbd_meta_cluster_view(m->m, &view) < 0) {
		m->view_errors++;
		return;
	}
	mgr_downout_round(m, &view, lease);
	qbd_meta_cluster_view_free(&view);
}
