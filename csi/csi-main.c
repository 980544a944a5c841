/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-csi: the Container Storage Interface driver (docs/design.md, "The
 * CSI driver"). Settings from flags, the environment and [csi] of
 * /etc/qbd/qbd.conf (in that order), checked in one place; then the gRPC
 * server runs until SIGTERM or SIGINT, which stop it cleanly (the socket
 * removed, exit 0). Exit 1 on bad settings or when it cannot serve.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/log.h"
#include "internal.h"
#include "replicator/meta/meta.h"

#define PROG "qbd-csi"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: qbd-csi --endpoint unix:///PATH [--etcd URL[,URL...]] [--mode MODE]\n"
		"               [--node-id NAME] [--zone ZONE] [--config FILE] [--check-config]\n"
		"               [--state-dir DIR] [--secret-file PATH] [--log-level L]\n"
		"Serve the CSI API (Identity, and Controller and/or Node) on a unix socket.\n"
		"  --endpoint EP        unix:///ABSOLUTE/PATH, unix:PATH or a path\n"
		"                       (default: $CSI_ENDPOINT)\n"
		"  --etcd URL[,URL...]  etcd endpoints, tried in turn (default: $QBD_ETCD)\n"
		"  --mode MODE          controller, node or all (default all)\n"
		"  --node-id NAME       this node's name as the CO knows it (node mode;\n"
		"                       default: the host name)\n"
		"  --zone ZONE          this node's zone (node mode; required there)\n"
		"  --state-dir DIR      node mode: where staged volumes are recorded\n"
		"                       (default " CSI_STATE_DIR_DEFAULT ")\n"
		"  --config FILE        settings file (default " QBD_CONF_DEFAULT ", or $QBD_CONFIG;\n"
		"                       the default may be absent); [csi] and [cluster];\n"
		"                       flags and the environment override it\n"
		"  --check-config       check the settings, print what is wrong, exit 0 or 1\n"
		"  --secret-file PATH   cluster secret, mode 0600 ($QBD_SECRET_FILE; [cluster]\n"
		"                       secret-file): DeleteVolume reaches the chunk servers\n"
		"  --log-level L        error|warn|info|debug\n"
		"  --help, --version\n");
}

enum { S_ENDPOINT, S_ETCD, S_MODE, S_NODEID, S_ZONE, S_STATEDIR, S_LOGLEVEL, S_SECRET, S_N };
static const char *const names[S_N + 1] = {
	"endpoint", "etcd", "mode", "node-id", "zone", "state-dir", "log-level", "secret-file",
	NULL,
};
static const char *const envs[S_N] = {
	[S_ENDPOINT] = "CSI_ENDPOINT", [S_ETCD] = "QBD_ETCD", [S_LOGLEVEL] = "QBD_LOG_LEVEL",
	[S_SECRET] = "QBD_SECRET_FILE",
};

static struct qbd_conf_check chk = { .prog = PROG };

static void bad(const struct qbd_setting *s, const char *what)
{
	qbd_conf_bad(&chk, s, what);
}

struct cmdline {
	const char *flag[S_N];
	const char *conf_path;
	bool check;
};

/* -1: go on; else the exit status. */
static int parse_args(int argc, char **argv, struct cmdline *cl)
{
	static const struct option longopts[] = {
		{ "endpoint", required_argument, NULL, S_ENDPOINT },
		{ "etcd", required_argument, NULL, S_ETCD },
		{ "mode", required_argument, NULL, S_MODE },
		{ "node-id", required_argument, NULL, S_NODEID },
		{ "zone", required_argument, NULL, S_ZONE },
		{ "state-dir", required_argument, NULL, S_STATEDIR },
		{ "log-level", required_argument, NULL, S_LOGLEVEL },
		{ "secret-file", required_argument, NULL, S_SECRET },
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
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
		case 'V':
			printf(PROG " %s (%s)\n", QBD_VERSION, CSI_DRIVER_NAME);
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

static void check_settings(const struct qbd_setting s[S_N], struct csi_opts *o,
			   char *host, size_t hostlen)
{
	char why[512], path[256];

	qbd_conf_log_level(&chk, &s[S_LOGLEVEL]);
	o->endpoint = s[S_ENDPOINT].value;
	if (!o->endpoint || !*o->endpoint) {
		qbd_conf_missing(&chk, "no endpoint: --endpoint unix:///PATH, $CSI_ENDPOINT, or "
				 "endpoint = in [csi]");
	} else if (csi_endpoint_path(o->endpoint, path, sizeof path, why, sizeof why) < 0) {
		bad(&s[S_ENDPOINT], why);
	}
	o->etcd = s[S_ETCD].value;
	qbd_conf_etcd(&chk, &s[S_ETCD], qbd_meta_endpoints_check);
	o->mode = CSI_MODE_ALL;
	if (s[S_MODE].value) {
		if (strcmp(s[S_MODE].value, "controller") == 0)
			o->mode = CSI_MODE_CONTROLLER;
		else if (strcmp(s[S_MODE].value, "node") == 0)
			o->mode = CSI_MODE_NODE;
		else if (strcmp(s[S_MODE].value, "all") != 0) {
			bad(&s[S_MODE], "want controller, node or all");
			o->mode = 0;    /* nothing more to say about node mode */
		}
	}
	o->secret_file = s[S_SECRET].value;
	o->node_id = s[S_NODEID].value;
	o->zone = s[S_ZONE].value;
	o->state_dir = s[S_STATEDIR].value && *s[S_STATEDIR].value ? s[S_STATEDIR].value :
		       CSI_STATE_DIR_DEFAULT;
	if (!(o->mode & CSI_MODE_NODE))
		return;
	if (!o->node_id) {
		if (gethostname(host, hostlen) < 0 || !*host)
			qbd_conf_missing(&chk, "no --node-id, and no host name: %s",
					 strerror(errno));
		host[hostlen - 1] = 0;
		o->node_id = host;
	} else if (!*o->node_id) {
		bad(&s[S_NODEID], "want this node's name");
	}
	if (!o->zone || !*o->zone)
		qbd_conf_missing(&chk, "node mode needs this node's zone: --zone ZONE or zone = "
				 "in [csi] (the zone its chunk servers register)");
}

/* Serve until SIGTERM or SIGINT. */
static int run(const struct csi_opts *o)
{
	const struct csi_method *tables[4] = { csi_identity_methods };
	int nt = 1;
	struct csi_server *srv;
	sigset_t sigs;
	char ctx[320];
	int sig, err;

	/* Blocked in every thread (gRPC's too, created later): the signals
	 * come to sigwait here. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	snprintf(ctx, sizeof ctx, "mode=%s%s%s%s%s",
		 o->mode == CSI_MODE_ALL ? "all" : o->mode == CSI_MODE_NODE ? "node" : "controller",
		 o->mode & CSI_MODE_NODE ? " node=" : "", o->mode & CSI_MODE_NODE ? o->node_id : "",
		 o->mode & CSI_MODE_NODE ? " zone=" : "", o->mode & CSI_MODE_NODE ? o->zone : "");
	qbd_log_set_context(ctx);
	err = csi_identity_init(o);
	if (err)
		return err;
	if (o->mode & CSI_MODE_CONTROLLER) {
		err = csi_controller_init(o);
		if (err) {
			csi_identity_fini();
			return err;
		}
		tables[nt++] = csi_controller_methods;
	}
	if (o->mode & CSI_MODE_NODE) {
		err = csi_node_init(o);
		if (err) {
			csi_controller_fini();
			csi_identity_fini();
			return err;
		}
		tables[nt++] = csi_node_methods;
	}
	err = csi_server_start(o, tables, &srv);
	if (err) {
		csi_node_fini();
		csi_controller_fini();
		csi_identity_fini();
		return err;
	}
	if (sigwait(&sigs, &sig) == 0)
		qbd_info(CSI_COMP, "signal %d: stopping", sig);
	csi_server_stop(srv);
	csi_node_fini();
	csi_controller_fini();
	csi_identity_fini();
	qbd_info(CSI_COMP, "stopped");
	return 0;
}

int main(int argc, char **argv)
{
	struct csi_opts o = { 0 };
	struct cmdline cl = { 0 };
	struct qbd_setting s[S_N];
	struct qbd_conf *conf = NULL;
	char host[256] = "";
	int rc;

	qbd_log_init(PROG);
	rc = parse_args(argc, argv, &cl);
	if (rc >= 0)
		return rc;
	if (qbd_conf_settings(&chk, cl.conf_path, "csi", NULL, names, cl.flag, envs, S_N, &conf,
			      s) < 0)
		return 1;
	check_settings(s, &o, host, sizeof host);
	rc = qbd_conf_verdict(&chk, conf, cl.check, NULL);
	if (rc < 0)
		rc = run(&o) == 0 ? 0 : 1;
	qbd_conf_free(conf);
	return rc;
}
