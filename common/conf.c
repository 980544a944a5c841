/* SPDX-License-Identifier: Apache-2.0 */
/*
 * /etc/qbd/qbd.conf through libinih: the library parses (sections,
 * comments, quoting rules operators know from other INI files); this file
 * keeps every entry with its line and answers lookups.
 */
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "conf.h"
#include "log.h"

struct entry {
	char *section, *key, *value;
	int line;
};

struct qbd_conf {
	char *path;
	struct entry *e;
	size_t n, cap;
	int line;         /* line the reader returned last */
	int oom;
	FILE *f;
};

/* The reader libinih calls once per line: counting its calls gives the
 * line of the entry the handler gets next. */
static char *conf_reader(char *str, int num, void *stream)
{
	struct qbd_conf *c = stream;
	char *r = fgets(str, num, c->f);

	if (r)
		c->line++;
	return r;
}

static int conf_handler(void *user, const char *section, const char *name,
			const char *value)
{
	struct qbd_conf *c = user;
	struct entry *e;

	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 16;
		struct entry *ne = realloc(c->e, cap * sizeof *ne);
		if (!ne) {
			c->oom = 1;
			return 0;
		}
		c->e = ne;
		c->cap = cap;
	}
	e = &c->e[c->n];
	e->section = strdup(section);
	e->key = strdup(name);
	e->value = strdup(value);
	e->line = c->line;
	if (!e->section || !e->key || !e->value) {
		free(e->section);
		free(e->key);
		free(e->value);
		c->oom = 1;
		return 0;
	}
	c->n++;
	return 1;
}

void qbd_conf_free(struct qbd_conf *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		free(c->e[i].section);
		free(c->e[i].key);
		free(c->e[i].value);
	}
	free(c->e);
	free(c->path);
	free(c);
}

int qbd_conf_load(const char *path, int must_exist, struct qbd_conf **out,
		  char *err, size_t errlen)
{
	struct qbd_conf *c = calloc(1, sizeof *c);
	int rc;

	*out = NULL;
	if (!c || !(c->path = strdup(path))) {
		free(c);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	c->f = fopen(path, "re");
	if (!c->f) {
		rc = -errno;
		if (rc == -ENOENT && !must_exist) {
			*out = c;
			return 0;
		}
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		qbd_conf_free(c);
		return rc;
	}
	rc = ini_parse_stream(conf_reader, c, conf_handler, c);
	fclose(c->f);
	c->f = NULL;
	if (c->oom) {
		snprintf(err, errlen, "%s: out of memory", path);
		qbd_conf_free(c);
		return -ENOMEM;
	}
	if (rc != 0) {
		snprintf(err, errlen, "%s:%d: syntax error (want [section] or key = value)",
			 path, rc);
		qbd_conf_free(c);
		return -EINVAL;
	}
	*out = c;
	return 0;
}

int qbd_conf_open(const char *path, struct qbd_conf **out, char *err, size_t errlen)
{
	const char *env = getenv("QBD_CONFIG");

	if (!path && env && *env)
		path = env;
	return qbd_conf_load(path ? path : QBD_CONF_DEFAULT, path != NULL, out, err, errlen);
}

const char *qbd_conf_path(const struct qbd_conf *c)
{
	return c->path;
}

/* The last entry of section for key (a later line overrides an earlier). */
static const struct entry *conf_find(const struct qbd_conf *c, const char *section,
				     const char *key)
{
	for (size_t i = c->n; i-- > 0;)
		if (strcmp(c->e[i].section, section) == 0 && strcmp(c->e[i].key, key) == 0)
			return &c->e[i];
	return NULL;
}

int qbd_conf_get(const struct qbd_conf *c, const char *program, const char *instance,
		 const char *key, int cluster_too, struct qbd_conf_val *v)
{
	const struct entry *e = NULL;
	char sec[256];

	if (!c)
		return 0;
	if (instance && *instance) {
		snprintf(sec, sizeof sec, "%s.%s", program, instance);
		e = conf_find(c, sec, key);
	}
	if (!e)
		e = conf_find(c, program, key);
	if (!e && cluster_too)
		e = conf_find(c, "cluster", key);
	if (!e)
		return 0;
	v->value = e->value;
	v->section = e->section;
	v->line = e->line;
	return 1;
}

static int in_list(const char *key, const char *const *keys)
{
	for (; *keys; keys++)
		if (strcmp(key, *keys) == 0)
			return 1;
	return 0;
}

static int known_section(const char *s)
{
	static const char *const progs[] = { "chunkd", "nbd", "qbd-managerd", "csi", NULL };

	if (strcmp(s, "cluster") == 0)
		return 1;
	for (const char *const *p = progs; *p; p++) {
		size_t n = strlen(*p);
		if (strncmp(s, *p, n) == 0 && (s[n] == 0 || (s[n] == '.' && s[n + 1])))
			return 1;
	}
	return 0;
}

int qbd_conf_check_keys(const struct qbd_conf *c, const char *program,
			const char *const *keys)
{
	static const char *const cluster_keys[] = { QBD_CONF_CLUSTER_KEYS, NULL };
	size_t pn = strlen(program);
	int bad = 0;

	if (!c)
		return 0;
	for (size_t i = 0; i < c->n; i++) {
		const struct entry *e = &c->e[i];
		const char *const *list = NULL;

		if (!known_section(e->section)) {
			fprintf(stderr, "%s:%d: unknown section [%s] (want [cluster], [chunkd], "
				"[chunkd.NAME], [nbd], [nbd.VOLUME], [qbd-managerd] or [csi])\n", c->path, e->line,
				e->section);
			bad++;
			continue;
		}
		if (strcmp(e->section, "cluster") == 0)
			list = cluster_keys;
		else if (strncmp(e->section, program, pn) == 0 &&
			 (e->section[pn] == 0 || e->section[pn] == '.'))
			list = keys;
		if (list && !in_list(e->key, list)) {
			fprintf(stderr, "%s:%d: unknown key '%s' in [%s]\n", c->path, e->line,
				e->key, e->section);
			bad++;
		}
	}
	return bad;
}

int qbd_conf_resolve(const struct qbd_conf *c, const char *program, const char *instance,
		     const char *key, const char *flag, const char *env, int cluster_too,
		     struct qbd_setting *out)
{
	struct qbd_conf_val v;
	const char *e = env ? getenv(env) : NULL;

	out->value = NULL;
	out->where[0] = 0;
	if (flag) {
		out->value = flag;
		snprintf(out->where, sizeof out->where, "--%s", key);
	} else if (e && *e) {
		out->value = e;
		snprintf(out->where, sizeof out->where, "$%s", env);
	} else if (qbd_conf_get(c, program, instance, key, cluster_too, &v)) {
		out->value = v.value;
		snprintf(out->where, sizeof out->where, "%s:%d (%s in [%s])", c->path,
			 v.line, key, v.section);
	}
	return out->value != NULL;
}

void qbd_conf_export_tls(const struct qbd_conf *c)
{
	static const char *const map[][2] = {
		{ "etcd-cacert", "QBD_ETCD_CACERT" },
		{ "etcd-cert", "QBD_ETCD_CERT" },
		{ "etcd-key", "QBD_ETCD_KEY" },
	};
	struct qbd_setting s;

	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (qbd_conf_resolve(c, "cluster", NULL, map[i][0], NULL, map[i][1], 1, &s))
			setenv(map[i][1], s.value, 0);
}

/* ---- a program's settings, checked ---- */

int qbd_conf_settings(struct qbd_conf_check *k, const char *path, const char *program,
		      const char *instance, const char *const *names, const char *const *flags,
		      const char *const *envs, int n, struct qbd_conf **conf,
		      struct qbd_setting *s)
{
	char err[512];

	if (qbd_conf_open(path, conf, err, sizeof err) < 0) {
		fprintf(stderr, "%s: %s\n", k->prog, err);
		return -1;
	}
	k->problems += qbd_conf_check_keys(*conf, program, names);
	qbd_conf_export_tls(*conf);
	for (int i = 0; i < n; i++)
		qbd_conf_resolve(*conf, program, instance, names[i], flags[i], envs[i],
				 strcmp(names[i], "etcd") == 0 ||
				 strcmp(names[i], "secret-file") == 0, &s[i]);
	return 0;
}

void qbd_conf_bad(struct qbd_conf_check *k, const struct qbd_setting *s, const char *what)
{
	fprintf(stderr, "%s: %s: '%s': %s\n", k->prog, s->where, s->value, what);
	k->problems++;
}

void qbd_conf_missing(struct qbd_conf_check *k, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", k->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	k->problems++;
}

void qbd_conf_log_level(struct qbd_conf_check *k, const struct qbd_setting *s)
{
	int lvl;

	if (!s->value)
		return;
	lvl = qbd_log_parse_level(s->value);
	if (lvl < 0)
		qbd_conf_bad(k, s, "want error, warn, info or debug");
	else
		qbd_log_set_level(lvl);
}

void qbd_conf_etcd(struct qbd_conf_check *k, const struct qbd_setting *s,
		   int (*check)(const char *endpoints, char *why, size_t len))
{
	char why[512];

	if (!s->value || !*s->value)
		qbd_conf_missing(k, "no etcd: --etcd URL, $QBD_ETCD, or etcd = URL in [cluster]");
	else if (check(s->value, why, sizeof why) < 0)
		qbd_conf_bad(k, s, why);
}

void qbd_conf_secret(struct qbd_conf_check *k, const struct qbd_setting *s)
{
	struct qbd_secret secret;
	char err[512];

	if (s->value && *s->value && qbd_secret_load(s->value, &secret, err, sizeof err) < 0)
		qbd_conf_missing(k, "%s (from %s)", err, s->where);
	qbd_secret_clear(&secret);
}

int qbd_conf_verdict(const struct qbd_conf_check *k, const struct qbd_conf *conf, bool check,
		     const char *instance)
{
	if (k->problems) {
		if (!check)
			fprintf(stderr, "%s: not started: %d problem%s above (--help lists the "
				"settings)\n", k->prog, k->problems, k->problems > 1 ? "s" : "");
		return 1;
	}
	if (check) {
		printf("%s: settings are valid (%s%s%s)\n", k->prog, qbd_conf_path(conf),
		       instance ? ", instance " : "", instance ? instance : "");
		return 0;
	}
	return -1;
}
