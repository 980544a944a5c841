/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-managerd: the cluster's manager (docs/design.md, "Manager").
 * Settings from flags, the environment and [qbd-managerd] of
 * /etc/qbd/qbd.conf (in that order), checked in one place; then the
 * election thread campaigns, and this thread, while the instance leads,
 * looks at the cluster every MGR_ROUND_MS: down-out requests, then the
 * change of one volume nobody has attached. SIGTERM or SIGINT: the
 * volume being driven is closed (its change stays where it stood, for
 * the next writer), the leader's lease revoked, exit 0.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/svc.h"
#include "common/util.h"
#include "internal.h"

#define COMP "managerd"
#define PROG "qbd-managerd"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qbd-managerd [--config FILE] [--check-config] [--etcd URL[,URL...]]\n"
		"                    [--secret-file PATH] [--metrics ADDR:PORT]\n"
		"                    [--down-out DURATION] [--give-up DURATION]\n"
		"                    [--lease-ttl SECONDS] [--resync-rate RATE] [--log-level L]\n"
		"  --config FILE        settings file (default " QBD_CONF_DEFAULT ", or $QBD_CONFIG;\n"
		"                       the default may be absent); [qbd-managerd] and [cluster];\n"
		"                       flags and the environment override it\n"
		"  --check-config       check the settings, print what is wrong, exit 0 or 1\n"
		"  --etcd URL[,URL...]  etcd endpoints, tried in turn (default: $QBD_ETCD)\n"
		"  --secret-file PATH   cluster secret ($QBD_SECRET_FILE), to reach chunk servers\n"
		"  --metrics ADDR:PORT  serve Prometheus metrics over HTTP at /metrics\n"
		"  --down-out DURATION  a node down longer than this is treated as removed and\n"
		"                       its volumes get a new replica (e.g. 90s, 10m, 1h;\n"
		"                       default 10m; 0 or off = never)\n"
		"  --give-up DURATION   a change that makes no progress this long is given up\n"
		"                       and tried again later (default 2m)\n"
		"  --lease-ttl SECONDS  the leader's etcd lease: another instance takes over\n"
		"                       this long after the leader died (default 10; 3 to 300)\n"
		"  --resync-rate RATE   bytes/s of the copies it drives (e.g. 64M; default 0 =\n"
		"                       unlimited)\n"
		"  --log-level L        error|warn|info|debug\n");
}

enum { S_ETCD, S_SECRET, S_METRICS, S_DOWNOUT, S_GIVEUP, S_TTL, S_RESYNC, S_LOGLEVEL, S_N };
static const char *const names[S_N + 1] = {
	"etcd", "secret-file", "metrics", "down-out", "give-up", "lease-ttl", "resync-rate",
	"log-level", NULL,
};
static const char *const envs[S_N] = {
	[S_ETCD] = "QBD_ETCD", [S_SECRET] = QBD_AUTH_SECRET_ENV, [S_LOGLEVEL] = "QBD_LOG_LEVEL",
};

static struct qbd_conf_check chk = { .prog = PROG };

static void bad(const struct qbd_setting *s, const char *what)
{
	qbd_conf_bad(&chk, s, what);
}

/* A duration: "off" or 0 (0), or a count with an optional unit (s, m,
 * h; none: seconds) into *s; -EINVAL otherwise. */
static int parse_duration(const char *v, uint64_t *s)
{
	static const struct { const char *unit; uint64_t s; } units[] = {
		{ "", 1 }, { "s", 1 }, { "m", 60 }, { "h", 3600 },
	};
	unsigned long long n;
	char *end;

	if (strcmp(v, "off") == 0) {
		*s = 0;
		return 0;
	}
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || *v == '-')
		return -EINVAL;
	for (size_t i = 0; i < QBD_ARRAY_SIZE(units); i++)
		if (strcmp(end, units[i].unit) == 0) {
			if (n > UINT32_MAX / units[i].s)
				return -EINVAL;
			*s = n * units[i].s;
			return 0;
		}
	return -EINVAL;
}

struct cmdline {
	const char *flag[S_N];
	const char *conf_path;
	bool check;
};

static int parse_args(int argc, char **argv, struct cmdline *cl)
{
	static const struct option longopts[] = {
		{ "etcd", required_argument, NULL, S_ETCD },
		{ "secret-file", required_argument, NULL, S_SECRET },
		{ "metrics", required_argument, NULL, S_METRICS },
		{ "down-out", required_argument, NULL, S_DOWNOUT },
		{ "give-up", required_argument, NULL, S_GIVEUP },
		{ "lease-ttl", required_argument, NULL, S_TTL },
		{ "resync-rate", required_argument, NULL, S_RESYNC },
		{ "log-level", required_argument, NULL, S_LOGLEVEL },
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c >= 0 && c < S_N) {
			cl->flag[c] = optarg;
			continue;
		}
		switch (c) {
		case 'c': cl->conf_path = optarg; break;
		case 'C': cl->check = true; break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 1;
	}
	return -1;
}

static void check_settings(const struct qbd_setting s[S_N], struct mgr_opts *o)
{
	char host[128];
	uint16_t port;
	uint64_t n;

	qbd_conf_log_level(&chk, &s[S_LOGLEVEL]);
	o->etcd = s[S_ETCD].value;
	qbd_conf_etcd(&chk, &s[S_ETCD], qbd_meta_endpoints_check);
	o->secret_file = s[S_SECRET].value;
	qbd_conf_secret(&chk, &s[S_SECRET]);
	o->metrics = s[S_METRICS].value;
	if (o->metrics && qbd_parse_hostport(o->metrics, host, sizeof host, &port) < 0)
		bad(&s[S_METRICS], "want ADDR:PORT");
	if (s[S_DOWNOUT].value && parse_duration(s[S_DOWNOUT].value, &o->down_out_s) < 0)
		bad(&s[S_DOWNOUT], "want a duration such as 90s, 10m or 1h (0 or off = never)");
	if (s[S_GIVEUP].value &&
	    (parse_duration(s[S_GIVEUP].value, &o->give_up_s) < 0 || o->give_up_s == 0))
		bad(&s[S_GIVEUP], "want a duration of a second or more, such as 2m");
	if (s[S_TTL].value) {
		if (parse_duration(s[S_TTL].value, &n) < 0 || n < 3 || n > 300)
			bad(&s[S_TTL], "want 3 to 300 seconds");
		else
			o->lease_ttl_s = (unsigned)n;
	}
	if (s[S_RESYNC].value && qbd_parse_size(s[S_RESYNC].value, &o->resync_rate) < 0)
		bad(&s[S_RESYNC], "want bytes per second, e.g. 64M (0 = unlimited)");
}

/* ---- the loop ---- */

void mgr_say_once(struct mgr *m, const char *fmt, ...)
{
	char msg[sizeof m->said];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (!strcmp(msg, m->said))
		return;
	snprintf(m->said, sizeof m->said, "%s", msg);
	qbd_warn(COMP, "%s", msg);
}

void mgr_poll(struct mgr *m)
{
	struct signalfd_siginfo si;
	uint64_t now = qbd_now_ns();

	while (read(m->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
		if (!m->stop)
			qbd_info(COMP, "signal %u: stopping", si.ssi_signo);
		m->stop = true;
	}
	if (m->wd_usec && now - m->wd_at >= m->wd_usec * 1000ull / 2) {
		m->wd_at = now;
		sd_notify(0, "WATCHDOG=1");
	}
	mgr_metrics_publish(m, false);
}

/* One look at the cluster while leading. */
static void mgr_round(struct mgr *m, int64_t lease)
{
	struct qbd_meta_cluster_view view;
	int err = qbd_meta_cluster_view(m->m, &view);

	if (err) {
		m->view_errors++;
		mgr_say_once(m, "cannot read the cluster from etcd whole: %s; deciding nothing "
			     "until it can", strerror(-err));
		return;
	}
	if (m->said[0]) {
		qbd_info(COMP, "etcd answers whole again");
		m->said[0] = '\0';
	}
	mgr_downout_round(m, &view, lease);
	mgr_poll(m);
	if (!m->stop && mgr_elect_leading(m->el, NULL))
		mgr_drive_round(m, &view);
	qbd_meta_cluster_view_free(&view);
}

static void mgr_run_loop(struct mgr *m)
{
	uint64_t next = 0;

	while (!m->stop) {
		struct pollfd pfd = { .fd = m->sfd, .events = POLLIN };
		int64_t lease = 0;
		uint64_t now;
		bool leading;

		poll(&pfd, 1, 250);
		mgr_poll(m);
		if (m->stop)
			break;
		leading = mgr_elect_leading(m->el, &lease);
		if (leading && !m->led_since_ns) {
			m->led_since_ns = qbd_now_ns();
			mgr_metrics_publish(m, true);
		} else if (!leading && m->led_since_ns) {
			/* A new term counts down nodes afresh. */
			m->led_since_ns = 0;
			m->ndown = 0;
			mgr_metrics_publish(m, true);
		}
		now = qbd_now_ns();
		if (!leading || now < next)
			continue;
		next = now + MGR_ROUND_MS * 1000000ull;
		mgr_round(m, lease);
	}
}

static int mgr_run(struct mgr *m)
{
	sigset_t sigs;
	int err;

	/* Every thread (election, libqbd's keeper, the metrics server)
	 * inherits this mask: SIGTERM and SIGINT come to the signalfd. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	m->sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	if (m->sfd < 0) {
		qbd_err(COMP, "signalfd: %s", strerror(errno));
		return -errno;
	}
	err = qbd_meta_open(m->o.etcd, &m->m);
	if (err)
		goto out;
	if (m->o.metrics) {
		err = qbd_metrics_start(m->o.metrics, &m->metrics);
		if (err) {
			qbd_err(COMP, "metrics on %s: %s", m->o.metrics, strerror(-err));
			goto out;
		}
	}
	err = mgr_elect_start(m->o.etcd, m->o.lease_ttl_s, &m->el);
	if (err)
		goto out;
	if (sd_watchdog_enabled(0, &m->wd_usec) <= 0)
		m->wd_usec = 0;
	mgr_metrics_publish(m, true);
	if (m->o.down_out_s)
		qbd_info(COMP, "started: down-out %" PRIu64 " s, give-up %" PRIu64 " s, lease %u s",
			 m->o.down_out_s, m->o.give_up_s, m->o.lease_ttl_s);
	else
		qbd_info(COMP, "started: down-out off, give-up %" PRIu64 " s, lease %u s",
			 m->o.give_up_s, m->o.lease_ttl_s);
	qbd_svc_ready("campaigning; down-out %" PRIu64 " s", m->o.down_out_s);
	mgr_run_loop(m);
	qbd_svc_stopping("stopping");
out:
	mgr_elect_stop(m->el);
	m->el = NULL;
	qbd_metrics_stop(m->metrics);
	qbd_meta_close(m->m);
	close(m->sfd);
	free(m->down);
	free(m->retry);
	if (!err)
		qbd_info(COMP, "stopped");
	return err;
}

int main(int argc, char **argv)
{
	struct mgr m = { .o = { .down_out_s = MGR_DOWN_OUT_S, .lease_ttl_s = MGR_LEASE_TTL_S,
				.give_up_s = MGR_GIVE_UP_S }, .sfd = -1 };
	struct cmdline cl = { 0 };
	struct qbd_setting s[S_N];
	struct qbd_conf *conf = NULL;
	int rc;

	qbd_log_init(PROG);
	rc = parse_args(argc, argv, &cl);
	if (rc >= 0)
		return rc;
	if (qbd_conf_settings(&chk, cl.conf_path, "qbd-managerd", NULL, names, cl.flag, envs,
			      S_N, &conf, s) < 0)
		return 1;
	check_settings(s, &m.o);
	rc = qbd_conf_verdict(&chk, conf, cl.check, NULL);
	if (rc < 0) {
		signal(SIGPIPE, SIG_IGN);
		rc = mgr_run(&m) == 0 ? 0 : 1;
	}
	qbd_conf_free(conf);
	return rc;
}
