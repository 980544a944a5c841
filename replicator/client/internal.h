/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqbd private state: the I/O shell around the quorum core
 * (replicator/core). The core decides everything about versions, quorums,
 * recovery and resync; this shell moves its messages over TCP, feeds the
 * replies back, and turns core completions into qbd_io callbacks.
 *
 * One struct qbd_volume owns: the core, one struct qbd_conn per replica
 * (socket, send queue, receive state), an epoll fd holding every socket
 * plus a timerfd (ticks) and an eventfd (completions queued), and the
 * attachment keeper (a thread that renews the writer's etcd lease and
 * publishes its status, see attach.c).
 *
 * A message the core asks to send becomes a struct qbd_tx, queued on its
 * connection until written, then freed: replies are matched by request id
 * inside the core. Write data is not copied: the tx points at the core's
 * buffer (the core says when it moves it).
 */
#ifndef QBD_CLIENT_INTERNAL_H
#define QBD_CLIENT_INTERNAL_H

#include "common/auth.h"
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "replicator/core/core.h"
#include "replicator/meta/meta.h"
#include "replicator/qbd.h"
#include "replicator/wire/wire.h"

#define QBD_CLIENT_HANDSHAKE_NS (10ull * 1000000000ull)
#define QBD_CLIENT_RETRY_NS (1000000000ull)
/* Opening: once enough replicas promised, the others get this long. */
#define QBD_CLIENT_OPEN_GRACE_NS (1000000000ull)
/* The rest of a READ payload at least this long is read in place. */
#define QBD_CLIENT_DIRECT_MIN (32u << 10)
#define QBD_CLIENT_TICK_MS 100
/* The keeper reads a down replica's node record again this often. */
#define QBD_CLIENT_LOOKUP_EVERY_S 2
#define QBD_CLIENT_CTL_ID (1ull << 63)  /* request ids of HELLO/OPEN */
/* How long the loop waits, once per membership change, for a leaving
 * replica's TOMBSTONE to get into its socket before the close. */
#define QBD_CLIENT_TOMB_FLUSH_NS (500000000ull)

#define QBD_TX_IOV 64            /* iovecs per sendmsg (two per message) */

struct qbd_tx {
	uint64_t id;
	uint8_t hdr[QBD_WIRE_FRAME_MAX_PREFIX];
	size_t hdr_len;
	const uint8_t *data;     /* not owned */
	size_t data_len;
	size_t tx_off;           /* bytes of hdr + data written */
	struct qbd_tx *next;
};

enum qbd_conn_state {
	QBD_C_DOWN = 0,
	QBD_C_CONNECTING,
	QBD_C_HELLO,
	QBD_C_OPEN,
	QBD_C_UP,
};

struct qbd_conn {
	struct qbd_volume *v;
	unsigned idx;
	struct qbd_node_info node;
	struct sockaddr_storage sa;
	socklen_t salen;
	int fd;
	enum qbd_conn_state state;
	uint64_t deadline_ns;    /* connect/HELLO/OPEN deadline */
	uint64_t retry_ns;       /* when DOWN: next connect attempt */
	unsigned retries;        /* failed reconnects since it was last up */
	uint64_t next_ctl;
	bool want_out;           /* EPOLLOUT registered */
	bool in_feed;            /* inside qbd_wire_rx_feed */
	bool failed_open;        /* gave up during qbd_open */
	bool no_addr;            /* no node record, or its address does not
				  * resolve: down, not retried until the
				  * keeper finds an address (attach.c) */
	bool core_dropped;       /* the core asked for the close */
	bool unused;             /* a slot no replica holds (it left) */
	bool adding;             /* a change's new replica: OPEN with ADD */
	bool refused;            /* refused this writer for good (an OPEN
				  * answered EIDRM, or EPERM after attach):
				  * not tried again */
	int open_status;         /* last OPEN/HELLO status */
	uint8_t nonce[QBD_AUTH_NONCE]; /* our challenge in the last HELLO */
	uint64_t tx_bytes, rx_bytes;   /* since open, for metrics */
	struct qbd_wire_rx rx;
	struct qbd_tx *q_head, *q_tail;
};

struct qbd_attach_keeper;
struct qbd_change;

struct qbd_volume {
	struct qbd_volume_info info;
	uint64_t cluster_id;
	uint64_t epoch;
	uint64_t nchunks;
	uint64_t takeover_wait_ns;
	struct qbd_core *core;
	/* Slot r of the core is conns[r]; the record's replica i is slot
	 * rslot[i] (i at open), a change's learner a free slot (change.c). */
	struct qbd_conn conns[QBD_CORE_MAX_SLOTS];
	unsigned nslots;         /* slots below it may be in use */
	unsigned rslot[QBD_MAX_REPLICAS];
	struct qbd_change *change;
	int epfd, tfd, efd;
	bool opening, closing;
	unsigned in_flight;      /* user ios not completed */
	struct qbd_io *done_head, *done_tail; /* completions to run */
	unsigned in_process;     /* qbd_process running (nested calls counted) */
	bool efd_armed;          /* eventfd written since the completions last ran */
	unsigned plugged;        /* qbd_plug depth: sends wait for qbd_unplug */
	struct qbd_attach_keeper *keeper;
	struct qbd_secret secret;  /* len 0: links not authenticated */
};

/* A replica's address as the keeper found it in its node record, for
 * the loop to connect to (attach.c). */
struct qbd_node_addr {
	char addr[QBD_ADDR_MAX];
	char zone[QBD_ZONE_MAX];
	struct sockaddr_storage sa;
	socklen_t salen;
};

/* attach.c: the writer's attachment in etcd (see qbd_open). */
int qbd_attach_take(struct qbd_volume *v, const struct qbd_open_opts *o,
		    struct qbd_meta *m);
/* Start renewing the attachment (after a successful open). */
int qbd_attach_start(struct qbd_volume *v);
/* Hand the keeper a fresh status document (from ticks; never blocks). */
void qbd_attach_status(struct qbd_volume *v);
/* Loop side: the addresses the keeper found since the last call (a node
 * that registered again elsewhere, a record back after it was gone), in
 * out[r] for each bit r of the mask returned; 0 when there are none.
 * Takes the keeper's mutex only when there is something: never waits for
 * etcd or DNS. */
uint32_t qbd_attach_addrs(struct qbd_volume *v,
			  struct qbd_node_addr out[QBD_CORE_MAX_SLOTS]);
/* Loop side: wake the keeper now rather than at its next round (a
 * change's next step is due). Never waits for etcd. */
void qbd_attach_wake(struct qbd_volume *v);
/* Keeper side: slot r now holds node id (0: no node), with the address
 * the loop was handed (NULL: none yet; looked up when it is down). */
void qbd_attach_slot(struct qbd_attach_keeper *k, unsigned r, uint64_t id,
		     const struct qbd_node_addr *a);
/* Loop side: true with *rate when the keeper found a new resync rate for
 * the volume (its rebuild rate in etcd, or the writer's own when that
 * is unset) since the last call. Never waits for etcd. */
bool qbd_attach_rate(struct qbd_volume *v, uint64_t *rate);
/* Loop side: take a size the keeper found grown in etcd (qbd volume
 * resize): the core grows first (qbd_core_grow), then the handle's size;
 * a failure is logged and tried again at the next call. Never waits. */
void qbd_attach_grow(struct qbd_volume *v);
/* Stop the keeper; clean = a clean detach (flushed, nothing in flight). */
void qbd_attach_release(struct qbd_volume *v, bool clean);

/* ---- change.c: carrying out a membership change (docs/design.md) ---- */

/* Set up for the record's configuration (at open, before the core):
 * the core's membership masks, slot R for a change's learner. */
int qbd_change_new(struct qbd_volume *v, struct qbd_core_cfg *cfg);
void qbd_change_free(struct qbd_change *ch);
/* Loop side, each tick: take the keeper's word, take the core's steps. */
void qbd_change_tick(struct qbd_volume *v);
/* Keeper side, each round (blocks on etcd): given the record as read
 * this round, read any change request, and make the record's next step
 * when the loop is ready for it. */
void qbd_change_keep(struct qbd_volume *v, struct qbd_attach_keeper *k,
		     struct qbd_meta *m, const struct qbd_volume_info *rec,
		     uint64_t epoch);
/* Loop side: the change as the status document shows it, or NULL. */
struct json_object;
struct json_object *qbd_change_status(struct qbd_volume *v);

/* ---- client.c: completions, the core's callbacks, the loop ---- */

/* The quorum core's callbacks: its messages go out through conn_queue,
 * its completions become qbd_io callbacks (qbd_open hands them over). */
extern const struct qbd_core_ops client_core_ops;

/* ---- conn.c: a replica's connection ---- */

/* Encode m and queue it on c; sent at once unless plugged or still
 * connecting. 0, or -errno (-EPIPE: the send failed). */
int conn_queue(struct qbd_conn *c, Qbd__Msg *m, uint64_t id,
	       const void *data, size_t data_len);
/* Send what is queued on c, as many messages per sendmsg as fit. */
int conn_flush_queue(struct qbd_conn *c);
/* Start a nonblocking connect to c's address (down on failure). */
void conn_connect(struct qbd_conn *c);
/* Close c, tell the core if it was up, and retry in a second. */
void conn_fail(struct qbd_conn *c, const char *why);
/* Handle epoll events on c's socket: connected, writable, readable. */
void conn_event(struct qbd_conn *c, uint32_t events);
/* Connect to the address the keeper found from now on (attach.c). */
void conn_take_addr(struct qbd_conn *c, const struct qbd_node_addr *a);

/* ---- open.c: opening and closing a volume ---- */

/* Resolve "HOST:PORT" into *sa (blocking: getaddrinfo; never on the loop
 * thread). 0, or -EINVAL (not HOST:PORT) or -EHOSTUNREACH (does not
 * resolve), with why set to a sentence naming the address. */
int qbd_client_resolve(const char *addr, struct sockaddr_storage *sa, socklen_t *salen,
		       char *why, size_t why_len);

#endif
