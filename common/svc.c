/* SPDX-License-Identifier: Apache-2.0 */
/* systemd notifications and watchdog (svc.h). */
#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "svc.h"

static void svc_notify(const char *state, const char *fmt, va_list ap)
{
	char status[256];

	vsnprintf(status, sizeof status, fmt, ap);
	/* 0: not under a service manager; <0: nothing to do but note it. */
	if (sd_notifyf(0, "%s\nSTATUS=%s", state, status) < 0)
		qbd_debug("svc", "sd_notify %s failed", state);
}

void qbd_svc_ready(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	svc_notify("READY=1", fmt, ap);
	va_end(ap);
}

void qbd_svc_stopping(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	svc_notify("STOPPING=1", fmt, ap);
	va_end(ap);
}

static void svc_on_watchdog(uv_timer_t *t)
{
	(void)t;
	sd_notify(0, "WATCHDOG=1");
}

int qbd_svc_watchdog_start(uv_loop_t *loop, uv_timer_t *t)
{
	uint64_t usec = 0;

	uv_timer_init(loop, t);
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return 0;
	/* Half the period, in ms, at least 1. */
	uint64_t ms = usec / 2000 ? usec / 2000 : 1;
	uv_timer_start(t, svc_on_watchdog, 0, ms);
	/* The timer alone must not keep the loop alive past the drain. */
	uv_unref((uv_handle_t *)t);
	qbd_info("svc", "watchdog: pinging every %llu ms", (unsigned long long)ms);
	return 1;
}
