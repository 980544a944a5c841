/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-managerd's Prometheus metrics (--metrics ADDR:PORT): whether this
 * instance leads, and what it did. Rendered by the work thread at most
 * once a second and published to common/metrics.c's HTTP thread.
 */
#include <stdlib.h>

#include "common/metrics.h"
#include "common/util.h"
#include "internal.h"

void mgr_metrics_publish(struct mgr *m, bool force)
{
	struct qbd_mbuf b = { 0 };
	uint64_t now = qbd_now_ns();

	if (!m->metrics || (!force && now - m->metrics_at < 1000000000ull))
		return;
	m->metrics_at = now;
	qbd_mbuf_metric(&b, "qbd_managerd_leader", "gauge",
			"1 while this instance leads (holds /qbd/manager under a live lease).",
			mgr_elect_leading(m->el, NULL) ? 1 : 0);
	qbd_mbuf_metric(&b, "qbd_managerd_driving", "gauge",
			"1 while this instance has a volume open to carry out its change.",
			m->driving ? 1 : 0);
	qbd_mbuf_metric(&b, "qbd_managerd_changes_done_total", "counter",
			"Changes of volumes nobody had attached, carried out to the end.",
			m->changes_done);
	qbd_mbuf_metric(&b, "qbd_managerd_changes_given_up_total", "counter",
			"Attempts at a change given up for now (no progress, or the open "
			"failed); each is tried again later.",
			m->changes_given_up);
	qbd_mbuf_metric(&b, "qbd_managerd_downout_requests_total", "counter",
			"Change requests written because a node was down longer than down-out.",
			m->downout_written);
	qbd_mbuf_metric(&b, "qbd_managerd_down_nodes", "gauge",
			"Nodes the leader's last look found without an alive key.",
			(uint64_t)m->ndown);
	qbd_mbuf_metric(&b, "qbd_managerd_view_errors_total", "counter",
			"Rounds in which etcd could not be read whole (nothing was decided).",
			m->view_errors);
	if (b.failed) {
		free(b.p);
		return;
	}
	qbd_metrics_publish(m->metrics, b.p, b.len);
}
