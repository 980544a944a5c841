/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metrics over HTTP (metrics.h). libmicrohttpd does the HTTP: request
 * parsing, limits and connection handling are a library's, well tested,
 * rather than ours.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

struct qbd_metrics {
	struct MHD_Daemon *mhd;
	uint16_t port;
	pthread_mutex_t mu;
	char *text;     /* under mu */
	size_t len;
};

static enum MHD_Result metrics_answer(void *cls, struct MHD_Connection *conn,
				      const char *url, const char *method,
				      const char *version, const char *upload_data,
				      size_t *upload_size, void **con_cls)
{
	struct qbd_metrics *m = cls;
	struct MHD_Response *r;
	enum MHD_Result rc;
	unsigned status = MHD_HTTP_OK;
	char *copy = NULL;
	size_t len = 0;

	(void)version;
	(void)upload_data;
	(void)con_cls;
	if (*upload_size) {
		*upload_size = 0;     /* no request bodies: drop them */
		return MHD_YES;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		static const char msg[] = "only GET /metrics\n";
		r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
						    MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
	} else if (strcmp(url, "/metrics") != 0) {
		static const char msg[] = "not found: the metrics are at /metrics\n";
		r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
						    MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_NOT_FOUND;
	} else {
		pthread_mutex_lock(&m->mu);
		if (m->text && (copy = malloc(m->len ? m->len : 1))) {
			memcpy(copy, m->text, m->len);
			len = m->len;
		}
		pthread_mutex_unlock(&m->mu);
		if (!copy) {
			static const char msg[] = "metrics not ready\n";
			r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
							    MHD_RESPMEM_PERSISTENT);
			status = MHD_HTTP_SERVICE_UNAVAILABLE;
		} else {
			r = MHD_create_response_from_buffer(len, copy, MHD_RESPMEM_MUST_FREE);
			if (!r)
				free(copy);
		}
	}
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
				status == MHD_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8"
						      : "text/plain; charset=utf-8");
	rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}

int qbd_metrics_start(const char *addr, struct qbd_metrics **out)
{
	char host[128], port_s[8];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *ai = NULL;
	struct qbd_metrics *m;
	const union MHD_DaemonInfo *di;
	uint16_t port;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	int rc;

	*out = NULL;
	if (qbd_parse_hostport(addr, host, sizeof host, &port) < 0)
		return -EINVAL;
	snprintf(port_s, sizeof port_s, "%u", port);
	rc = getaddrinfo(host[0] ? host : NULL, port_s, &hints, &ai);
	if (rc != 0) {
		qbd_err("metrics", "resolving '%s': %s", addr, gai_strerror(rc));
		return -EINVAL;
	}
	m = calloc(1, sizeof *m);
	if (!m) {
		freeaddrinfo(ai);
		return -ENOMEM;
	}
	pthread_mutex_init(&m->mu, NULL);
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	m->mhd = MHD_start_daemon(flags, port, NULL, NULL, metrics_answer, m,
				  MHD_OPTION_SOCK_ADDR, ai->ai_addr,
				  MHD_OPTION_CONNECTION_LIMIT, 16u,
				  MHD_OPTION_CONNECTION_TIMEOUT, 10u,
				  MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!m->mhd) {
		qbd_err("metrics", "cannot serve metrics on %s (address in use?)", addr);
		pthread_mutex_destroy(&m->mu);
		free(m);
		return -EADDRINUSE;
	}
	di = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_BIND_PORT);
	m->port = di ? di->port : port;
	qbd_info("metrics", "serving Prometheus metrics on http://%s:%u/metrics",
		 host[0] ? host : "*", m->port);
	*out = m;
	return 0;
}

uint16_t qbd_metrics_port(const struct qbd_metrics *m)
{
	return m->port;
}

void qbd_metrics_publish(struct qbd_metrics *m, char *text, size_t len)
{
	char *old;

	pthread_mutex_lock(&m->mu);
	old = m->text;
	m->text = text;
	m->len = len;
	pthread_mutex_unlock(&m->mu);
	free(old);
}

void qbd_metrics_stop(struct qbd_metrics *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->mhd);
	pthread_mutex_destroy(&m->mu);
	free(m->text);
	free(m);
}

void qbd_mbuf_printf(struct qbd_mbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap - b->len <= (size_t)n)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->failed = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

void qbd_mbuf_head(struct qbd_mbuf *b, const char *name, const char *type,
		   const char *help)
{
	qbd_mbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void qbd_mbuf_metric(struct qbd_mbuf *b, const char *name, const char *type,
		     const char *help, uint64_t value)
{
	qbd_mbuf_head(b, name, type, help);
	qbd_mbuf_printf(b, "%s %llu\n", name, (unsigned long long)value);
}

/* Upper bounds of the buckets, in ns, and as Prometheus writes them. */
static const uint64_t hist_ns[QBD_HIST_BUCKETS] = {
	50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
	25000000, 50000000, 100000000, 250000000, 1000000000, 2500000000u,
};
static const char *const hist_le[QBD_HIST_BUCKETS] = {
	"5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
	"0.025", "0.05", "0.1", "0.25", "1", "2.5",
};

void qbd_hist_add(struct qbd_hist *h, uint64_t ns)
{
	unsigned i = 0;

	while (i < QBD_HIST_BUCKETS && ns > hist_ns[i])
		i++;
	h->bucket[i]++;
	h->count++;
	h->sum_ns += ns;
}

void qbd_hist_render(struct qbd_mbuf *b, const char *name, const char *labels,
		     const struct qbd_hist *h)
{
	const char *sep = labels && *labels ? "," : "";
	uint64_t cum = 0;

	if (!labels)
		labels = "";
	for (unsigned i = 0; i < QBD_HIST_BUCKETS; i++) {
		cum += h->bucket[i];
		qbd_mbuf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep,
				hist_le[i], (unsigned long long)cum);
	}
	qbd_mbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
			(unsigned long long)h->count);
	qbd_mbuf_printf(b, "%s_sum%s%s%s %.9f\n", name, *sep ? "{" : "", labels,
			*sep ? "}" : "", (double)h->sum_ns / 1e9);
	qbd_mbuf_printf(b, "%s_count%s%s%s %llu\n", name, *sep ? "{" : "", labels,
			*sep ? "}" : "", (unsigned long long)h->count);
}
