/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's configuration file, /etc/qbd/qbd.conf: INI, parsed by libinih
 * (Debian's libinih; see docs/operations.md for the keys).
 *
 *   [cluster]          etcd, secret-file, etcd-cacert, etcd-cert, etcd-key
 *   [chunkd]           defaults of every chunk server of this node
 *   [chunkd.NAME]      the chunk server instance NAME (qbd-chunkd@NAME)
 *   [nbd]              defaults of every qbd-nbd of this node
 *   [nbd.VOLUME]       the daemon of one volume (qbd-nbd@VOLUME)
 *   [qbd-managerd]     the manager (qbd-managerd.service)
 *   [csi]              the CSI driver (qbd-csi)
 *
 * A value is looked up in [PROGRAM.INSTANCE], then [PROGRAM], then
 * [cluster]; flags and the environment override the file. Every entry
 * keeps its line, so that a bad value is reported where it is.
 */
#ifndef QBD_CONF_H
#define QBD_CONF_H

#include <stdbool.h>
#include <stddef.h>

#define QBD_CONF_DEFAULT "/etc/qbd/qbd.conf"

struct qbd_conf;

/* One value found by qbd_conf_get. */
struct qbd_conf_val {
	const char *value;
	const char *section;
	int line;
};

/*
 * Read path. 0 and *out (an empty configuration if the file is absent and
 * must_exist is false), or -errno with a message in err (a syntax error
 * names its line).
 */
int qbd_conf_load(const char *path, int must_exist, struct qbd_conf **out,
		  char *err, size_t errlen);
/* The settings file a program reads: path (its --config) if given, else
 * $QBD_CONFIG (both must exist), else QBD_CONF_DEFAULT if present. */
int qbd_conf_open(const char *path, struct qbd_conf **out, char *err, size_t errlen);
void qbd_conf_free(struct qbd_conf *c);
const char *qbd_conf_path(const struct qbd_conf *c);

/*
 * The value of key for program (e.g. "chunkd") and instance (NULL for
 * none): from [program.instance], else [program], else [cluster] when
 * cluster_too. 1 and *v when set, 0 when not.
 */
int qbd_conf_get(const struct qbd_conf *c, const char *program, const char *instance,
		 const char *key, int cluster_too, struct qbd_conf_val *v);

/*
 * Check the sections that concern program: every key of [program] and
 * [program.*] must be in keys (NULL-terminated), every key of [cluster] in
 * QBD_CONF_CLUSTER_KEYS; sections of other programs are left alone, an
 * unknown section is an error. Prints one line per problem to stderr,
 * prefixed with the file and line; returns how many there were.
 */
int qbd_conf_check_keys(const struct qbd_conf *c, const char *program,
			const char *const *keys);

/* A setting and where it came from, for messages: "--listen",
 * "$QBD_ETCD" or "/etc/qbd/qbd.conf:12 (listen)". */
struct qbd_setting {
	const char *value;    /* NULL: not set anywhere */
	char where[320];
};

/*
 * Resolve one setting: the flag's value if given, else the environment
 * variable env (may be NULL), else the file (qbd_conf_get). 1 when set.
 */
int qbd_conf_resolve(const struct qbd_conf *c, const char *program, const char *instance,
		     const char *key, const char *flag, const char *env, int cluster_too,
		     struct qbd_setting *out);

/* The etcd client TLS files of [cluster] (etcd-cacert, etcd-cert,
 * etcd-key) into $QBD_ETCD_CACERT, $QBD_ETCD_CERT, $QBD_ETCD_KEY, where
 * the metadata client reads them, unless the environment has them. */
void qbd_conf_export_tls(const struct qbd_conf *c);

#define QBD_CONF_CLUSTER_KEYS "etcd", "secret-file", "etcd-cacert", "etcd-cert", "etcd-key"

/*
 * A program's settings, read and checked the same way by qbd-chunkd,
 * qbd-managerd and qbd-csi: each problem is said on stderr as
 * "PROG: ..." and counted; the verdict ends the checks.
 */
struct qbd_conf_check {
	const char *prog;     /* "qbd-csi": each message's prefix */
	int problems;
};

/*
 * Open the settings file (qbd_conf_open: path, the --config), count its
 * unknown keys for program (the n names are its keys), export the etcd
 * TLS files, and resolve each setting names[i] from flags[i], envs[i]
 * (may be NULL) and the file (etcd and secret-file from [cluster] too)
 * into s[i]. 0 and *conf, or -1 when the file cannot be used (said).
 */
int qbd_conf_settings(struct qbd_conf_check *k, const char *path, const char *program,
		      const char *instance, const char *const *names, const char *const *flags,
		      const char *const *envs, int n, struct qbd_conf **conf,
		      struct qbd_setting *s);
/* "PROG: WHERE: 'VALUE': what", a problem. */
void qbd_conf_bad(struct qbd_conf_check *k, const struct qbd_setting *s, const char *what);
/* "PROG: " and the message, a problem. */
void qbd_conf_missing(struct qbd_conf_check *k, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* log-level, if set, is applied, or a problem. */
void qbd_conf_log_level(struct qbd_conf_check *k, const struct qbd_setting *s);
/* etcd must be set ("no etcd: ..."), and check (the metadata library's
 * endpoint check) must pass it. */
void qbd_conf_etcd(struct qbd_conf_check *k, const struct qbd_setting *s,
		   int (*check)(const char *endpoints, char *why, size_t len));
/* The cluster secret, if one is named, must load. */
void qbd_conf_secret(struct qbd_conf_check *k, const struct qbd_setting *s);
/*
 * After the checks: with problems, exit status 1 ("PROG: not started: N
 * problems above (--help lists the settings)" unless check); with check
 * (--check-config), 0 ("PROG: settings are valid (FILE[, instance
 * INSTANCE])" on stdout); else -1: the program runs.
 */
int qbd_conf_verdict(const struct qbd_conf_check *k, const struct qbd_conf *conf, bool check,
		     const char *instance);

#endif
