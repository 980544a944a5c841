/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libqbd private state. One struct qbd_volume owns: the meta handle (closed
 * after open), the placement group core state, one struct qbd_conn per
 * replica (socket, send queue, in-flight list), an epoll fd holding every
 * socket plus a timerfd (ticks) and an eventfd (completions queued).
 *
 * A user request (struct qbd_io) is split into parts, one per chunk
 * (struct qbd_part, malloc'd, owned by the volume until done and every
 * replica replied). A part sends one struct qbd_sub per replica; a sub is
 * linked in its connection's send queue until sent and in its in-flight
 * list until answered or failed.
 */
#ifndef QBD_CLIENT_H
#define QBD_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "replicator/core/core.h"
#include "replicator/meta/meta.h"
#include "replicator/qbd.h"
#include "replicator/wire/wire.h"

#define QBD_CLIENT_REQ_TIMEOUT_NS (10ull * 1000000000ull)
#define QBD_CLIENT_RETRY_NS (1000000000ull)
#define QBD_CLIENT_TICK_MS 100

struct qbd_part;

/* One message to one replica: its frame and its place in the conn lists. */
struct qbd_sub {
	struct qbd_part *part;
	unsigned replica;
	uint64_t request_id;
	uint64_t sent_ns;
	uint8_t hdr[QBD_WIRE_FRAME_MAX_PREFIX];
	size_t hdr_len;
	const uint8_t *data;     /* not owned (part buffer or copy) */
	size_t data_len;
	size_t tx_off;           /* bytes of hdr+data written */
	uint8_t *data_copy;      /* owned copy after the user completed */
	bool queued, in_flight;
	struct qbd_sub *q_next;  /* send queue */
	struct qbd_sub *f_prev, *f_next; /* in-flight list */
};

enum qbd_part_kind { QBD_P_READ = 1, QBD_P_WRITE, QBD_P_FLUSH, QBD_P_REPAIR };

struct qbd_part {
	struct qbd_volume *v;
	struct qbd_io *io;       /* NULL for repairs */
	enum qbd_part_kind kind;
	uint64_t chunk;
	uint32_t off, len;
	uint8_t *buf;            /* data (user's, or owned for repairs) */
	uint32_t wflags;         /* QBD_WIRE_F_* */
	struct qbd_pg_op op;
	struct qbd_pg_read rd;
	struct qbd_sub subs[QBD_PG_MAX_REPLICAS];
	unsigned live;           /* subs queued or in flight */
	bool completed;          /* result delivered to the io */
	uint8_t *owned;          /* repair data, freed with the part */
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
	uint64_t next_req;
	bool want_out;           /* EPOLLOUT registered */
	bool in_feed;            /* inside qbd_wire_rx_feed */
	bool failed_open;        /* gave up during qbd_open */
	int open_status;         /* last OPEN/HELLO status */
	struct qbd_wire_rx rx;
	struct qbd_sub ctl;      /* HELLO / OPEN frame */
	struct qbd_sub *q_head, *q_tail;
	struct qbd_sub *f_head;
};

struct qbd_volume {
	struct qbd_volume_info info;
	uint64_t cluster_id;
	uint64_t epoch;
	uint64_t nchunks;
	struct qbd_pg pg;
	struct qbd_conn conns[QBD_PG_MAX_REPLICAS];
	int epfd, tfd, efd;
	bool opening, closing;
	unsigned in_flight;      /* user ios not completed */
	struct qbd_io *done_head, *done_tail; /* completions to run */
};

#endif
