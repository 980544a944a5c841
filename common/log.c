/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: see log.h. One write(2) per line so lines from several threads
 * or processes sharing a stderr never interleave. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

int qbd_log_level_current = QBD_LOG_INFO;
static const char *log_program = "qbd";
static char log_context[128];   /* "vol=pgdata " or empty */
static int log_journal;         /* stderr is the journal: "<N>" prefixes */
/* syslog priorities of the levels, as journald reads them ("<3>"). */
static const int log_prio[] = { 3, 4, 6, 7 };

static const char *const log_level_names[] = {
	[QBD_LOG_ERROR] = "error",
	[QBD_LOG_WARN] = "warn",
	[QBD_LOG_INFO] = "info",
	[QBD_LOG_DEBUG] = "debug",
};

int qbd_log_parse_level(const char *s)
{
	for (int i = QBD_LOG_ERROR; i <= QBD_LOG_DEBUG; i++)
		if (strcasecmp(s, log_level_names[i]) == 0)
			return i;
	return -EINVAL;
}

/* systemd sets JOURNAL_STREAM=DEV:INODE for a service whose stderr is the
 * journal; a child that writes elsewhere (a log file) inherits the
 * variable, so the stream itself is compared. */
static int log_stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	return e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 &&
	       fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

void qbd_log_init(const char *program)
{
	const char *slash = strrchr(program, '/');
	const char *env = getenv("QBD_LOG_LEVEL");

	log_program = slash ? slash + 1 : program;
	log_journal = log_stderr_is_journal();
	if (env) {
		int l = qbd_log_parse_level(env);
		if (l >= 0)
			qbd_log_level_current = l;
	}
}

void qbd_log_set_context(const char *ctx)
{
	snprintf(log_context, sizeof log_context, "%s%s", ctx ? ctx : "",
		 ctx && *ctx ? " " : "");
}

void qbd_log_set_level(enum qbd_log_level level)
{
	qbd_log_level_current = level;
}

void qbd_log_write(enum qbd_log_level level, const char *component,
		   const char *fmt, ...)
{
	int saved = errno;
	char line[1024];
	int n;
	va_list ap;

	if (log_journal)
		n = snprintf(line, sizeof line, "<%d>%s %s: %s", log_prio[level],
			     log_level_names[level], component, log_context);
	else
		n = snprintf(line, sizeof line, "%s[%d]: %s %s: %s", log_program,
			     (int)getpid(), log_level_names[level], component, log_context);
	if (n < 0 || (size_t)n >= sizeof line)
		n = 0;
	va_start(ap, fmt);
	errno = saved; /* for %m */
	int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if ((size_t)n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) == -1) {
		/* nowhere left to report it */
	}
	errno = saved;
}
