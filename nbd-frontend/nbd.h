/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-nbd's NBD server: serves a libqbd volume on a unix socket
 * (clients do the fixed-newstyle handshake) and on adopted connections
 * (kernel mode), with one libuv loop, until SIGTERM. The protocol's
 * constants and codec are in nbd-proto.h; the server's insides in
 * internal.h.
 */
#ifndef QBD_NBD_H
#define QBD_NBD_H

#include <stdbool.h>
#include <stdint.h>

struct qbd_volume;
struct nbd_server;

/*
 * What nbd_serve serves, and where. Either or both of a listening unix
 * socket (clients do the handshake) and adopted connections (kernel mode:
 * one end of a socketpair each, already past the handshake, served in the
 * transmission phase with simple replies).
 */
struct nbd_serve_opts {
	const char *export_name;   /* accepted export name besides "" */
	const char *socket_path;   /* listen here (mode 0600), or NULL */
	const int *fds;            /* adopted connections; the server owns
				    * (and closes) them from the call on */
	unsigned n_fds;
	/* Loop thread, once everything is set up and before any request is
	 * read (e.g. hand the other ends of the fds to the kernel). Non-zero
	 * stops the server at once; nbd_serve then returns that value. */
	int (*on_ready)(struct nbd_server *s, void *arg);
	/* Loop thread, when an adopted connection ends (its socket is
	 * closed; requests still in flight complete unanswered): disc is true
	 * after NBD_CMD_DISC, false when the peer closed it without one (the
	 * kernel gave up on that socket) or the server stopped. index is
	 * nbd_server_adopt's. Called only after on_ready returned 0; may call
	 * nbd_server_adopt and nbd_server_stop. */
	void (*on_conn_end)(struct nbd_server *s, int index, bool disc,
			    void *arg);
	/* Loop thread, optional: the volume grew to size bytes (qbd volume
	 * resize while attached). New connections are offered the new size
	 * from then on, and requests up to it are served on every
	 * connection (e.g. tell the kernel). Called only after on_ready
	 * returned 0. */
	void (*on_resize)(struct nbd_server *s, uint64_t size, void *arg);
	void *arg;
	/* Stop (drain, return 0) once every adopted connection has ended
	 * and at least one ended with NBD_CMD_DISC. */
	bool stop_after_disc;
	/* "HOST:PORT": serve Prometheus metrics there (NULL: no). */
	const char *metrics;
	const char *zone;          /* this node's zone: cross-zone traffic */
};

/*
 * Serve vol (owned by the caller) until SIGTERM or SIGINT (or
 * nbd_server_stop, or stop_after_disc); then drain in-flight requests and
 * return 0, or -errno when it cannot be set up. Runs its own libuv loop.
 * Ignores SIGPIPE from the call on (a client may close its end while a
 * reply is written).
 */
int nbd_serve(struct qbd_volume *vol, const struct nbd_serve_opts *o);

/* Loop thread only. Adopt one more connection (owned by the server from
 * the call on, even on error) in the transmission phase; returns its
 * index (0, 1, ... in adoption order, fds of opts first) or -errno. */
int nbd_server_adopt(struct nbd_server *s, int fd);

/* Loop thread only: stop as on SIGTERM (drain, then nbd_serve returns). */
void nbd_server_stop(struct nbd_server *s);

/* Loop thread only: has the server begun to stop (signal, nbd_server_stop,
 * stop_after_disc)? Connections it closes itself then end too. */
bool nbd_server_stopping(const struct nbd_server *s);

#endif
