/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Service manager integration of the daemons (libsystemd's sd_notify):
 * READY once they serve, STOPPING when a drain starts, STATUS lines, and
 * the watchdog, pinged from the event loop itself so that a stuck loop
 * stops the pings and systemd restarts the daemon. Outside systemd (no
 * $NOTIFY_SOCKET) every call does nothing.
 */
#ifndef QBD_SVC_H
#define QBD_SVC_H

#include <uv.h>

/* READY=1 with a STATUS line. */
void qbd_svc_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* STOPPING=1 with a STATUS line. */
void qbd_svc_stopping(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * When the service manager asks for a watchdog (WatchdogSec=), ping it
 * from loop every half period through timer t (initialised here; close it
 * with the loop's other handles). Returns 1 if armed, 0 if not asked.
 */
int qbd_svc_watchdog_start(uv_loop_t *loop, uv_timer_t *t);

#endif
