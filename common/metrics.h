/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus metrics of a daemon: text exposition format over HTTP
 * (GET /metrics), served by libmicrohttpd from its own thread.
 *
 * The daemon's loop thread owns every number. Once a second (and once at
 * start) it renders them into a text buffer and publishes it here; the
 * HTTP thread only ever serves the last published text, under a mutex. A
 * scrape therefore sees numbers at most a second old, and nothing the
 * loop owns is read from another thread.
 */
#ifndef QBD_METRICS_H
#define QBD_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct qbd_metrics;

/* Serve on "HOST:PORT" (port 0: any; qbd_metrics_port tells). 0 or -errno. */
int qbd_metrics_start(const char *addr, struct qbd_metrics **out);
uint16_t qbd_metrics_port(const struct qbd_metrics *m);
/* Replace the served text; takes text (malloc'd). */
void qbd_metrics_publish(struct qbd_metrics *m, char *text, size_t len);
/* Stop serving and free. Accepts NULL. */
void qbd_metrics_stop(struct qbd_metrics *m);

/* A growing text buffer (malloc'd; on allocation failure it stops
 * growing and .failed is set). */
struct qbd_mbuf {
	char *p;
	size_t len, cap;
	int failed;
};
void qbd_mbuf_printf(struct qbd_mbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* "# HELP name help" and "# TYPE name type". */
void qbd_mbuf_head(struct qbd_mbuf *b, const char *name, const char *type,
		   const char *help);

/* head, then "name value": a metric of one value, no labels. */
void qbd_mbuf_metric(struct qbd_mbuf *b, const char *name, const char *type,
		     const char *help, uint64_t value);

/* A latency histogram with fixed buckets, 50 us to 2.5 s. */
#define QBD_HIST_BUCKETS 14
struct qbd_hist {
	uint64_t bucket[QBD_HIST_BUCKETS + 1]; /* the last: above every bound */
	uint64_t count;
	uint64_t sum_ns;
};
void qbd_hist_add(struct qbd_hist *h, uint64_t ns);
/* name_bucket{labels,le="..."}, name_sum{labels}, name_count{labels};
 * labels like op="read" (may be empty). */
void qbd_hist_render(struct qbd_mbuf *b, const char *name, const char *labels,
		     const struct qbd_hist *h);

#endif
