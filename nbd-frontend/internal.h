/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nbd-frontend's private header: the NBD server's structures and the
 * calls between its files, one section per .c file. The server's API is
 * nbd.h, the protocol's constants and codec nbd-proto.h, the kernel's
 * nbd driver kernel.h.
 *
 * Everything here runs on the server's loop thread.
 */
#ifndef QBD_NBD_INTERNAL_H
#define QBD_NBD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/metrics.h"
#include "nbd-proto.h"
#include "nbd.h"

struct qbd_volume;
struct nconn;

/* ---- nbd-metrics.c: the Prometheus text ---- */

/* What the server counts, by NBD command (index: the command type, 0..7),
 * for the metrics. Loop thread only. */
#define NBD_STATS_CMDS 8
struct nbd_stats {
	uint64_t requests[NBD_STATS_CMDS], errors[NBD_STATS_CMDS], bytes[NBD_STATS_CMDS];
	struct qbd_hist lat[NBD_STATS_CMDS];
	uint64_t connections_total;
};

/* Render the server's and the volume's metrics into b. */
void nbd_metrics_render(struct qbd_mbuf *b, const struct nbd_stats *st,
			struct qbd_volume *vol, const char *volume, const char *zone);

/* ---- server.c: the server (listen, adopt, signals, drain) ---- */

struct nbd_server {
	uv_loop_t loop;
	uv_pipe_t listener;
	uv_poll_t qpoll;
	uv_signal_t sigterm, sigint;
	uv_timer_t drain;
	uv_timer_t watchdog;   /* systemd watchdog pings (common/svc.h) */
	struct qbd_volume *vol;
	struct nbd_serve_opts o;
	const char *name;
	uint64_t size;
	struct nconn *conns;
	bool listening;     /* listener is open */
	bool bound;         /* the socket file is ours: removed at the end */
	bool started;       /* on_ready returned 0: connections may read */
	bool stopping;
	bool any_disc;      /* an adopted connection ended with DISC */
	unsigned adopted_live;
	int next_index;
	unsigned drain_ticks;
	struct nbd_stats stats;
	struct qbd_metrics *metrics;
	uv_timer_t metrics_timer;
	bool corked;              /* in on_qbd: replies wait for conn_uncork_all */
	struct nconn *cork_conns; /* connections with replies corked */
};

/* Stop accepting and reading, then drain (and close everything); why is
 * logged. Once only: later calls do nothing. */
void server_stop(struct nbd_server *s, const char *why);

/* ---- conn.c: connection plumbing (reads, corked writes, lifetime) ---- */

#define NBD_MAX_INFLIGHT 64  /* requests in flight per connection */
#define NBD_CORK_MAX 32      /* replies per write at most */

/* A connection's state machine: GREETING is sent at accept, then
 * CLIENT_FLAGS -> OPTIONS -> TRANSMISSION -> (DISC) -> DEAD; an adopted
 * connection starts in TRANSMISSION. */
enum conn_state {
	ST_CLIENT_FLAGS,
	ST_OPTIONS,
	ST_TRANSMISSION,
	ST_DEAD,
};

/* Replies sent in one write: their buffers, freed once written. */
struct ncork {
	uv_write_t w;
	unsigned n;
	void *owned[NBD_CORK_MAX];
	uv_buf_t bufs[NBD_CORK_MAX];
};

struct nconn {
	uv_pipe_t pipe;
	uv_shutdown_t shut;
	struct nbd_server *s;
	struct nconn *next;
	enum conn_state state;
	bool no_zeroes;
	bool reading;
	bool closing;   /* uv_close called */
	bool closed;    /* close callback ran */
	bool ending;    /* conn_end: closing once the replies are written */
	bool disc;
	bool adopted;   /* handed over in the transmission phase */
	int index;      /* adopted: nbd_server_adopt's index */
	unsigned neg;   /* NBD_NEG_*: structured replies, base:allocation */
	unsigned in_flight;
	uint8_t *in;    /* unconsumed input */
	size_t in_len, in_cap;
	size_t in_off;            /* consumed bytes at the start of in (conn_consume) */
	struct ncork *cork;       /* replies not yet written (s->corked) */
	struct nconn *cork_next;  /* s->cork_conns */
	bool cork_listed;
};

/* A connection of s with its pipe initialised, not linked into s->conns
 * yet; NULL when out of memory. Then either conn_link (the server owns
 * it) or conn_discard (closes the pipe and frees it). */
struct nconn *conn_new(struct nbd_server *s);
void conn_link(struct nconn *c);
void conn_discard(struct nconn *c);

/* Free c, and unlink it from its server unless nbd_serve detached it
 * (c->s NULL: it returned with requests of c still in libqbd). */
void conn_free(struct nconn *c);

/* Close at once (replies still queued are dropped). */
void conn_close(struct nconn *c);

/* Close once every reply queued so far has been written (after DISC or
 * ABORT: uv_close alone would cancel writes still queued). Nothing is
 * read or started any more. */
void conn_end(struct nconn *c);

/* Send len bytes from skip bytes into buf (malloc'd; owned by c from the
 * call on, freed after the write, without a copy). Corked (inside
 * on_qbd), the reply waits for conn_uncork_all and goes out with the
 * others of the pass; otherwise (or once NBD_CORK_MAX wait, or after
 * conn_end queued the shutdown) at once, a write of one. */
void conn_send_at(struct nconn *c, void *buf, size_t skip, size_t len);
/* conn_send_at from the start of buf. */
void conn_send(struct nconn *c, void *buf, size_t len);
/* Send a copy of p (caller-owned); closes c when out of memory. */
void conn_send_copy(struct nconn *c, const void *p, size_t len);

/* Write the corked replies of every connection of s (end of on_qbd). */
void conn_uncork_all(struct nbd_server *s);

/* The input not consumed yet (c->in_len bytes). */
uint8_t *conn_in(struct nconn *c);
/* Drop the first n bytes of input. */
void conn_consume(struct nconn *c, size_t n);

/* Consume what input c holds, as its state asks, until it needs more. */
void conn_process(struct nconn *c);

/* Start or stop reading: stop while too much is in flight or buffered,
 * after DISC, or while the server stops. */
void conn_update_reading(struct nconn *c);

/* ---- handshake.c: fixed newstyle (options, meta contexts) ---- */

/* Send the greeting to a connection just accepted; it then waits for
 * the client's flags. */
void handshake_start(struct nconn *c);

/* Consume the client's flags or one option if complete. false when more
 * input is needed or the connection was closed or ended. */
bool handshake_input(struct nconn *c);

/* ---- transmission.c: requests, replies, block status ---- */

/* Consume one request if complete and start it (or answer it); false
 * when more input (or a free in-flight slot) is needed or the
 * connection closed. */
bool conn_request(struct nconn *c);

#endif
