/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging for every qbd program: one line per event on stderr,
 *   <program>[pid]: <level> <component>: [<context> ]<message>
 * where the context names what the process serves (qbd-nbd: "vol=NAME";
 * qbd-chunkd: "node=ID zone=Z") and messages about a replica or a request
 * say "replica N" and "request ID". Under systemd (stderr is the journal,
 * $JOURNAL_STREAM set) a line starts with its syslog priority instead,
 * "<3>error chunkd: ...", so that journald keeps the level and adds the
 * program, pid and time itself. The level test happens before any
 * formatting. errno is preserved across a log call and "%m" works.
 */
#ifndef QBD_LOG_H
#define QBD_LOG_H

enum qbd_log_level {
	QBD_LOG_ERROR = 0,
	QBD_LOG_WARN = 1,
	QBD_LOG_INFO = 2,
	QBD_LOG_DEBUG = 3,
};

extern int qbd_log_level_current;

/* Set the program name shown on every line (not copied: pass a literal or
 * argv[0]). Reads QBD_LOG_LEVEL (error|warn|info|debug) from the
 * environment. */
void qbd_log_init(const char *program);
void qbd_log_set_level(enum qbd_log_level level);
/* The context every later line carries (copied; NULL or "" for none). */
void qbd_log_set_context(const char *ctx);
/* Parse "error", "warn", "info" or "debug"; -EINVAL on anything else. */
int qbd_log_parse_level(const char *s);

void qbd_log_write(enum qbd_log_level level, const char *component,
		   const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define QBD_LOG(level, comp, ...)                                     \
	do {                                                          \
		if ((int)(level) <= qbd_log_level_current)            \
			qbd_log_write((level), (comp), __VA_ARGS__);  \
	} while (0)

#define qbd_err(comp, ...)   QBD_LOG(QBD_LOG_ERROR, (comp), __VA_ARGS__)
#define qbd_warn(comp, ...)  QBD_LOG(QBD_LOG_WARN, (comp), __VA_ARGS__)
#define qbd_info(comp, ...)  QBD_LOG(QBD_LOG_INFO, (comp), __VA_ARGS__)
#define qbd_debug(comp, ...) QBD_LOG(QBD_LOG_DEBUG, (comp), __VA_ARGS__)

#endif
