/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd's Prometheus metrics: the loop thread renders its numbers
 * once a second and hands the text to common/metrics.c, which serves it.
 * The names are listed in docs/operations.md, "Metrics".
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "common/log.h"
#include "common/util.h"

#define METRICS_MS 1000

static const char *op_name(int type)
{
	switch (type) {
	case QBD__MSG_TYPE__HELLO: return "hello";
	case QBD__MSG_TYPE__OPEN: return "open";
	case QBD__MSG_TYPE__READ: return "read";
	case QBD__MSG_TYPE__WRITE: return "write";
	case QBD__MSG_TYPE__FLUSH: return "flush";
	case QBD__MSG_TYPE__DELETE_VOLUME: return "delete_volume";
	case QBD__MSG_TYPE__PING: return "ping";
	case QBD__MSG_TYPE__CHECKSUM: return "checksum";
	case QBD__MSG_TYPE__PULL: return "pull";
	case QBD__MSG_TYPE__USAGE: return "usage";
	case QBD__MSG_TYPE__AUTH: return "auth";
	case QBD__MSG_TYPE__TOMBSTONE: return "tombstone";
	default: return NULL;
	}
}

static void chunkd_metrics_render(struct chunkd *d)
{
	struct qbd_mbuf b = { 0 };
	struct qbd_engine_stats st;
	unsigned conns = 0;
	char idb[17], lab[64];

	qbd_engine_stats(d->e, &st);
	for (const struct chunkd_conn *c = d->conns; c; c = c->next)
		conns++;
	qbd_mbuf_head(&b, "qbd_chunkd_info", "gauge", "This chunk server: node id and zone.");
	qbd_mbuf_printf(&b, "qbd_chunkd_info{node=\"%s\",zone=\"%s\"} 1\n",
			qbd_id_str(d->node_id, idb), d->zone ? d->zone : "");

	qbd_mbuf_head(&b, "qbd_chunkd_requests_total", "counter",
		      "Requests answered, by operation.");
	for (int t = 0; t < CHUNKD_OPS; t++)
		if (op_name(t))
			qbd_mbuf_printf(&b, "qbd_chunkd_requests_total{op=\"%s\"} %llu\n",
					op_name(t), (unsigned long long)d->ops[t].requests);
	qbd_mbuf_head(&b, "qbd_chunkd_request_errors_total", "counter",
		      "Requests answered with an error, by operation.");
	for (int t = 0; t < CHUNKD_OPS; t++)
		if (op_name(t))
			qbd_mbuf_printf(&b, "qbd_chunkd_request_errors_total{op=\"%s\"} %llu\n",
					op_name(t), (unsigned long long)d->ops[t].errors);
	qbd_mbuf_head(&b, "qbd_chunkd_bytes_total", "counter",
		      "Bytes of data read and written for requests.");
	qbd_mbuf_printf(&b, "qbd_chunkd_bytes_total{op=\"read\"} %llu\n",
			(unsigned long long)d->ops[QBD__MSG_TYPE__READ].bytes);
	qbd_mbuf_printf(&b, "qbd_chunkd_bytes_total{op=\"write\"} %llu\n",
			(unsigned long long)d->ops[QBD__MSG_TYPE__WRITE].bytes);
	qbd_mbuf_head(&b, "qbd_chunkd_request_seconds", "histogram",
		      "Time from a request's arrival to its reply, by operation.");
	for (int t = 0; t < CHUNKD_OPS; t++) {
		if (!op_name(t) || t == QBD__MSG_TYPE__HELLO || t == QBD__MSG_TYPE__AUTH)
			continue;
		snprintf(lab, sizeof lab, "op=\"%s\"", op_name(t));
		qbd_hist_render(&b, "qbd_chunkd_request_seconds", lab, &d->ops[t].lat);
	}

	qbd_mbuf_metric(&b, "qbd_chunkd_background_waited_total", "counter",
			"Background requests (resync copies, CHECKSUM) that waited behind client "
			"I/O before the engine.",
			d->admit.waited);
	qbd_mbuf_metric(&b, "qbd_chunkd_background_waiting", "gauge",
			"Background requests waiting behind client I/O now.",
			d->admit.nwaiting);
	qbd_mbuf_head(&b, "qbd_chunkd_background_wait_seconds", "histogram",
		      "Time a background request waited behind client I/O before the engine.");
	qbd_hist_render(&b, "qbd_chunkd_background_wait_seconds", "", &d->admit.wait);

	qbd_mbuf_metric(&b, "qbd_chunkd_fenced_requests_total", "counter",
			"Requests refused because a newer writer's epoch was promised (EPERM).",
			d->fenced);
	qbd_mbuf_metric(&b, "qbd_chunkd_checksum_errors_total", "counter",
			"Reads refused because a block failed its checksum (EBADMSG).",
			d->checksum_errors);
	qbd_mbuf_metric(&b, "qbd_chunkd_auth_failures_total", "counter",
			"Peers refused for want of the cluster secret.",
			d->auth_failures);
	qbd_mbuf_metric(&b, "qbd_chunkd_connections", "gauge",
			"Open client connections.",
			conns);
	qbd_mbuf_metric(&b, "qbd_chunkd_connections_total", "counter",
			"Connections accepted.",
			d->conns_accepted);

	qbd_mbuf_metric(&b, "qbd_chunkd_capacity_bytes", "gauge",
			"Chunk data the store holds at most.",
			st.capacity);
	qbd_mbuf_metric(&b, "qbd_chunkd_used_bytes", "gauge",
			"Bytes in allocated chunks.",
			st.used);
	qbd_mbuf_metric(&b, "qbd_chunkd_held_bytes", "gauge",
			"Bytes of written 4 KiB blocks.",
			st.held);
	qbd_mbuf_metric(&b, "qbd_chunkd_free_slots", "gauge",
			"Chunk slots free.",
			st.free_slots);
	qbd_mbuf_metric(&b, "qbd_chunkd_disk_syncs_total", "counter",
			"fdatasync calls on the store.",
			st.syncs);

	qbd_mbuf_metric(&b, "qbd_chunkd_scrub_bytes_total", "counter",
			"Bytes the scrubber verified.",
			d->scrub.stats.bytes);
	qbd_mbuf_metric(&b, "qbd_chunkd_scrub_chunks_total", "counter",
			"Chunks the scrubber verified.",
			d->scrub.stats.chunks);
	qbd_mbuf_metric(&b, "qbd_chunkd_scrub_passes_total", "counter",
			"Full scrub passes over the store.",
			d->scrub.stats.passes);
	qbd_mbuf_metric(&b, "qbd_chunkd_scrub_bad_blocks_total", "counter",
			"Blocks the scrubber found failing their checksum.",
			d->scrub.stats.bad_blocks);
	qbd_mbuf_head(&b, "qbd_chunkd_scrub_pass_progress_ratio", "gauge",
		      "Part of the store the current scrub pass has covered (0 to 1).");
	qbd_mbuf_printf(&b, "qbd_chunkd_scrub_pass_progress_ratio %.4f\n",
			st.slots ? (double)(d->scrub.slot < st.slots ? d->scrub.slot : st.slots) /
					   (double)st.slots : 0.0);
	qbd_mbuf_metric(&b, "qbd_chunkd_reclaim_scans_total", "counter",
			"Scans for volumes deleted while this node was away.",
			d->reclaim.scans);
	qbd_mbuf_metric(&b, "qbd_chunkd_reclaim_scan_errors_total", "counter",
			"Scans whose etcd answer was not acted on (failed, partial, another "
			"cluster, an older revision).",
			d->reclaim.scan_errors);
	qbd_mbuf_metric(&b, "qbd_chunkd_orphaned_volumes", "gauge",
			"Volumes this store holds that etcd no longer has, waiting out the grace.",
			d->reclaim.numbers.volumes);
	qbd_mbuf_metric(&b, "qbd_chunkd_orphaned_bytes", "gauge",
			"Bytes of data those volumes hold here.",
			d->reclaim.numbers.held);
	qbd_mbuf_metric(&b, "qbd_chunkd_reclaimed_volumes_total", "counter",
			"Deleted volumes whose chunks were reclaimed.",
			d->reclaim.numbers.reclaimed);
	qbd_mbuf_metric(&b, "qbd_chunkd_reclaimed_chunks_total", "counter",
			"Chunks reclaimed.",
			d->reclaim.reclaimed_chunks);
	qbd_mbuf_metric(&b, "qbd_chunkd_reclaimed_bytes_total", "counter",
			"Bytes of data reclaimed.",
			d->reclaim.numbers.reclaimed_bytes);
	if (b.failed) {
		free(b.p);
		return;
	}
	qbd_metrics_publish(d->metrics, b.p, b.len);
}

static void chunkd_metrics_tick(uv_timer_t *t)
{
	chunkd_metrics_render(QBD_CONTAINER_OF(t, struct chunkd, metrics_timer));
}

int chunkd_metrics_start(struct chunkd *d, const char *addr)
{
	int rc;

	if (!addr || !*addr)
		return 0;
	rc = qbd_metrics_start(addr, &d->metrics);
	if (rc < 0)
		return rc;
	chunkd_metrics_render(d);
	uv_timer_init(&d->loop, &d->metrics_timer);
	uv_timer_start(&d->metrics_timer, chunkd_metrics_tick, METRICS_MS, METRICS_MS);
	uv_unref((uv_handle_t *)&d->metrics_timer);
	return 0;
}

void chunkd_metrics_stop(struct chunkd *d)
{
	qbd_metrics_stop(d->metrics);
	d->metrics = NULL;
}
