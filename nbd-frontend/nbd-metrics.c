/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-nbd's Prometheus metrics: NBD requests by command, and the volume's
 * replicas as libqbd sees them (state, resync, bytes sent to each, and
 * so to other zones). Rendered by the loop thread once a second; the
 * names are listed in docs/operations.md, "Metrics".
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "internal.h"
#include "replicator/qbd.h"

static const char *cmd_name(unsigned t)
{
	switch (t) {
	case NBD_CMD_READ: return "read";
	case NBD_CMD_WRITE: return "write";
	case NBD_CMD_FLUSH: return "flush";
	case NBD_CMD_TRIM: return "trim";
	case NBD_CMD_WRITE_ZEROES: return "write_zeroes";
	case NBD_CMD_BLOCK_STATUS: return "block_status";
	default: return NULL;
	}
}

void nbd_metrics_render(struct qbd_mbuf *b, const struct nbd_stats *st,
			struct qbd_volume *vol, const char *volume, const char *zone)
{
	unsigned n = qbd_replica_count(vol), up = 0;
	uint64_t cross = 0;
	char lab[160], idb[17];

	qbd_mbuf_head(b, "qbd_nbd_info", "gauge", "The volume this daemon serves.");
	qbd_mbuf_printf(b, "qbd_nbd_info{volume=\"%s\",id=\"%s\",zone=\"%s\"} 1\n", volume,
			qbd_id_str(qbd_volume_id(vol), idb), zone ? zone : "");
	qbd_mbuf_head(b, "qbd_nbd_requests_total", "counter", "NBD requests answered, by command.");
	for (unsigned t = 0; t < NBD_STATS_CMDS; t++)
		if (cmd_name(t))
			qbd_mbuf_printf(b, "qbd_nbd_requests_total{op=\"%s\"} %llu\n", cmd_name(t),
					(unsigned long long)st->requests[t]);
	qbd_mbuf_head(b, "qbd_nbd_request_errors_total", "counter",
		      "NBD requests answered with an error, by command.");
	for (unsigned t = 0; t < NBD_STATS_CMDS; t++)
		if (cmd_name(t))
			qbd_mbuf_printf(b, "qbd_nbd_request_errors_total{op=\"%s\"} %llu\n",
					cmd_name(t), (unsigned long long)st->errors[t]);
	qbd_mbuf_head(b, "qbd_nbd_bytes_total", "counter", "Bytes read and written by clients.");
	qbd_mbuf_printf(b, "qbd_nbd_bytes_total{op=\"read\"} %llu\n",
			(unsigned long long)st->bytes[NBD_CMD_READ]);
	qbd_mbuf_printf(b, "qbd_nbd_bytes_total{op=\"write\"} %llu\n",
			(unsigned long long)st->bytes[NBD_CMD_WRITE]);
	qbd_mbuf_head(b, "qbd_nbd_request_seconds", "histogram",
		      "Time from an NBD request's arrival to its completion, by command.");
	for (unsigned t = 0; t < NBD_STATS_CMDS; t++) {
		if (!cmd_name(t))
			continue;
		snprintf(lab, sizeof lab, "op=\"%s\"", cmd_name(t));
		qbd_hist_render(b, "qbd_nbd_request_seconds", lab, &st->lat[t]);
	}
	qbd_mbuf_metric(b, "qbd_nbd_connections_total", "counter",
			"NBD connections accepted.",
			st->connections_total);

	qbd_mbuf_metric(b, "qbd_volume_epoch", "gauge",
			"This writer's epoch: every attach or takeover raises it.",
			qbd_epoch(vol));
	qbd_mbuf_metric(b, "qbd_volume_replicas", "gauge",
			"Replicas of the volume.",
			n);
	qbd_mbuf_metric(b, "qbd_volume_write_quorum", "gauge",
			"Replicas each write waits for.",
			qbd_write_quorum(vol));
	qbd_mbuf_metric(b, "qbd_volume_resync_rate_bytes", "gauge",
			"Background resync's rate limit in bytes per second (0 = unlimited): "
			"the volume's rebuild rate, or this writer's resync-rate.",
			qbd_resync_rate(vol));

	struct qbd_change_progress cp;

	qbd_change_progress(vol, &cp);
	qbd_mbuf_metric(b, "qbd_volume_change_phase", "gauge",
			"A membership change this writer carries out: 0 none, 1 copying "
			"to the new replica, 2 joint.", (uint64_t)cp.phase);
	qbd_mbuf_metric(b, "qbd_volume_change_copied_bytes", "gauge",
			"Bytes (whole chunks) copied to the new replica of the change.",
			cp.copied_bytes);
	qbd_mbuf_metric(b, "qbd_volume_change_total_bytes", "gauge",
			"Bytes (whole chunks) the new replica of the change needs in all.",
			cp.total_bytes);
	qbd_mbuf_metric(b, "qbd_volume_change_rate_bytes", "gauge",
			"Copy rate of the change, bytes per second.", cp.rate_bytes);

	struct qbd_replica_status rs[16];
	struct qbd_replica_counters rc[16];
	bool ok[16];

	if (n > 16)
		n = 16;
	for (unsigned i = 0; i < n; i++) {
		ok[i] = qbd_replica_status(vol, i, &rs[i]) == 0 &&
			qbd_replica_counters(vol, i, &rc[i]) == 0;
		if (!ok[i])
			continue;
		up += rs[i].connected ? 1 : 0;
		if (zone && strcmp(zone, rs[i].zone) != 0)
			cross += rc[i].sent_bytes;
	}
	qbd_mbuf_head(b, "qbd_replica_up", "gauge",
		      "1 when the replica is connected and promised this epoch.");
	for (unsigned i = 0; i < n; i++)
		if (ok[i])
			qbd_mbuf_printf(b, "qbd_replica_up{replica=\"%u\",node=\"%s\",zone=\"%s\"} %d\n",
					i, qbd_id_str(rs[i].node_id, idb), rs[i].zone, rs[i].connected);
	/* The per-replica counters, labelled by replica and zone. */
	static const struct {
		const char *name, *type, *help;
	} per[] = {
		{ "qbd_replica_stale_chunks", "gauge", "Chunks the replica lacks (to resync)." },
		{ "qbd_replica_resynced_chunks_total", "counter",
		  "Chunks copied to the replica since it was last current." },
		{ "qbd_replica_sent_bytes_total", "counter",
		  "Bytes sent to the replica (requests and their data)." },
		{ "qbd_replica_resync_bytes_total", "counter",
		  "Bytes of chunk data resync copied to the replica (written blocks "
		  "and their bitmaps; pulled or through this writer)." },
	};
	for (unsigned k = 0; k < sizeof per / sizeof per[0]; k++) {
		qbd_mbuf_head(b, per[k].name, per[k].type, per[k].help);
		for (unsigned i = 0; i < n; i++) {
			uint64_t v = k == 0 ? rs[i].stale_chunks : k == 1 ? rs[i].resync_done :
				     k == 2 ? rc[i].sent_bytes : rs[i].resync_bytes;
			if (ok[i])
				qbd_mbuf_printf(b, "%s{replica=\"%u\",zone=\"%s\"} %llu\n", per[k].name,
						i, rs[i].zone, (unsigned long long)v);
		}
	}
	qbd_mbuf_metric(b, "qbd_cross_zone_sent_bytes_total", "counter",
			"Bytes sent to replicas in other zones than this node's (--zone): "
			"the traffic clouds bill as cross-zone egress.",
			cross);
	qbd_mbuf_metric(b, "qbd_volume_replicas_up", "gauge",
			"Replicas connected and promised.",
			up);
}
