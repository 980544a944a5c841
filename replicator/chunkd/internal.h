/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd internals: the structures and functions its files share, a
 * section per file. One loop thread owns all of it, except the node
 * record that the keepalive thread publishes (under ka_mu).
 */
#ifndef QBD_CHUNKD_INTERNAL_H
#define QBD_CHUNKD_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/auth.h"
#include "common/metrics.h"
#include "common/queue.h"
#include "engine/engine.h"
#include "replicator/chunkd/chunkd.h"
#include "replicator/meta/meta.h"
#include "replicator/wire/wire.h"

struct chunkd;
struct chunkd_req;
struct chunkd_reclaim_judgement;
struct peer;

/* ---- chunkd.c: the server (start-up, the engine's poll, drain, teardown) ---- */

/* The background scrubber (scrub.c). */
struct chunkd_scrub {
	uv_timer_t timer;
	bool timer_on;
	bool busy;             /* req is in the engine */
	struct qbd_engine_req req;
	uint8_t bad[32];       /* req's bad-block bitmap (256 blocks at most) */
	uint64_t slot;         /* next slot of the walk */
	int64_t tokens;        /* bytes that may be scrubbed now */
	uint64_t last_ns;      /* last refill */
	uint64_t pass_start_ns;/* this pass started (or may start) then */
	uint64_t pass_chunks, pass_bad;
	struct qbd_node_scrub stats;
};

/* ---- admit.c's state (declared here for struct chunkd) ---- */

/* Background I/O behind client I/O: what the admission counts and the
 * background requests it holds back (admit.c). */
struct chunkd_admit {
	unsigned fg_inflight;     /* foreground requests in the engine */
	unsigned bg_inflight;     /* background requests in the engine */
	uint64_t fg_last_ns;      /* last foreground request submitted or completed */
	struct qbd_queue waiting; /* background requests held back, FIFO (chunkd_req.aql) */
	unsigned nwaiting;
	uint64_t waited;          /* background requests that waited (metric) */
	struct qbd_hist wait;     /* how long they waited (metric) */
};

/* ---- reclaim.c's memory between scans (declared here for struct chunkd) ---- */

/* A volume this store holds and etcd did not have at its first
 * sighting, or had with a configuration that does not list this node:
 * when, at which revision, and which. */
struct chunkd_orphan {
	uint64_t volume;
	uint64_t first_ns;     /* monotonic time of the first sighting */
	uint64_t first_rev;    /* etcd's revision of that answer */
	uint64_t cfg;          /* 0: absent; else not a member, at this
				* configuration number */
};

/* What the decision remembers from one scan to the next. */
struct chunkd_reclaim_memory {
	struct chunkd_orphan *v;   /* n of them, sorted by volume; malloc'd */
	size_t n;
	uint64_t last_rev;         /* revision of the last answer judged */
};

/* The reclaim of deleted volumes' chunks (reclaim.c). Loop thread,
 * except scan and meta, used by the work request while it runs. */
struct chunkd_reclaim {
	uint64_t grace_ns;         /* 0: reclaim off */
	uint64_t interval_ms;      /* between scans */
	uv_timer_t timer;
	bool timer_on;
	bool busy;                 /* a scan or its deletes are under way */
	bool scanning;             /* work is queued or running */
	uv_work_t work;            /* the etcd read, in libuv's thread pool */
	struct qbd_meta *meta;     /* the work's own etcd handle */
	struct qbd_meta_volume_scan scan;  /* its answer */
	int scan_rc;
	struct qbd_engine_volume *held;    /* the store's volumes, listed before
					    * etcd was asked; malloc'd */
	struct chunkd_reclaim_judgement *verdicts; /* one per held volume */
	size_t nheld;
	size_t next;               /* next held volume to look at for deleting */
	struct qbd_engine_req req; /* the TOMBSTONE in the engine */
	uint64_t req_chunks, req_held;     /* what it frees */
	struct chunkd_reclaim_memory mem;
	/* numbers: the node record's "orphaned", and the metrics */
	struct qbd_node_orphaned numbers;
	uint64_t scans, scan_errors, reclaimed_chunks;
};

/* Requests of one message type, for the metrics. */
#define CHUNKD_OPS 13   /* message types 0..12 (QBD__MSG_TYPE__TOMBSTONE) */
struct chunkd_op_stats {
	uint64_t requests, errors, bytes;
	struct qbd_hist lat;
};

struct chunkd {
	uv_loop_t loop;
	bool loop_ready;         /* loop initialised (uv_loop_init) */
	uv_tcp_t server;
	uv_poll_t engine_poll;
	uv_signal_t sig_term, sig_int;
	uv_timer_t drain_timer;
	uv_timer_t watchdog;     /* systemd watchdog pings (common/svc.h) */
	struct qbd_engine *e;
	struct qbd_engine_req flush_req;
	struct qbd_meta *meta;
	uint64_t node_id, cluster_id;
	uint32_t chunk_size;
	struct qbd_secret secret;  /* len 0: links are not authenticated */
	struct chunkd_conn *conns;
	unsigned corked;                 /* chunkd_cork depth */
	struct chunkd_conn *cork_conns;  /* with replies corked */
	struct peer *peers;    /* connections to other chunk servers (pull.c) */
	uv_timer_t peer_timer;
	bool peer_timer_on;
	struct chunkd_scrub scrub;
	struct chunkd_reclaim reclaim;
	struct chunkd_admit admit;
	uv_timer_t stats_timer;  /* copies the numbers into node (under ka_mu) */
	bool stopping;
	uint64_t stop_start_ns;
	/* metrics (loop thread; rendered once a second by metrics.c) */
	struct chunkd_op_stats ops[CHUNKD_OPS];
	uint64_t fenced;          /* requests refused for an old epoch (EPERM) */
	uint64_t tomb_logged[8];  /* volumes whose refused OPEN (EIDRM) was logged
				   * lately, so that a writer retrying is told once */
	unsigned tomb_logged_next;
	uint64_t checksum_errors; /* reads answered EBADMSG */
	uint64_t auth_failures;   /* peers refused: no or wrong secret */
	uint64_t conns_accepted;
	const char *zone;
	struct qbd_metrics *metrics;
	uv_timer_t metrics_timer;
	/* keepalive thread (keepalive.c) */
	pthread_t ka_thread;
	bool ka_started;
	pthread_mutex_t ka_mu;
	pthread_cond_t ka_cv;
	bool ka_stop;
	int64_t lease;
	struct qbd_node_info node;   /* under ka_mu: the loop thread updates its
				      * numbers, the keepalive thread publishes */
};

/* ---- conn.c: connection plumbing (accept, reads, replies, lifetime) ---- */

#define CHUNKD_RBUF (64u << 10)
/* The rest of a payload at least this long is read straight into its
 * request's buffer, not copied out of rbuf (docs/design.md). */
#define CHUNKD_DIRECT_MIN (32u << 10)

struct chunkd_conn {
	uv_tcp_t tcp;
	struct chunkd *d;
	struct chunkd_conn *next, *prev;  /* d->conns */
	struct qbd_wire_rx rx;
	void *pend_buf;        /* WRITE data buffer between on_header and on_frame */
	unsigned inflight;     /* requests not yet fully replied */
	/* FLUSH is a barrier: it covers every WRITE received before it on the
	 * connection, so it waits for those still in the engine. */
	uint64_t next_wseq;
	unsigned ping_cursor;    /* next flagged chunk a PING reply lists (past the bound) */
	struct qbd_queue wq;   /* writes in the engine, by seq (chunkd_req.ql) */
	struct qbd_queue fq;   /* flushes waiting for them (chunkd_req.ql) */
	struct chunkd_req *cork_head, *cork_tail;  /* replies to write (corked: at chunkd_uncork) */
	struct chunkd_conn *cork_next;             /* d->cork_conns */
	bool cork_listed;
	unsigned refs;         /* 1 for the open handle + 1 per request */
	bool closing;
	bool reading;
	bool direct;           /* the read under way goes into a payload (qbd_wire_rx_direct) */
	/* Authentication (common/auth.h): with a cluster secret, nothing but
	 * HELLO and AUTH is served before the peer proved it. */
	bool hello_done, authed, auth_logged;
	uint8_t nonce_peer[QBD_AUTH_NONCE], nonce_ours[QBD_AUTH_NONCE];
	uint8_t mac_ours[QBD_AUTH_MAC];
	char peer[64];
	uint8_t rbuf[CHUNKD_RBUF];
};

/* A 4 KiB-aligned buffer of len bytes for a request's data: one of the
 * engine's registered pool when one is free and large enough, else
 * allocated (NULL when out of memory); chunkd_buf_free takes either (and
 * NULL). */
void *chunkd_buf_alloc(struct chunkd *d, size_t len);
void chunkd_buf_free(struct chunkd *d, void *buf);

/* Accept connections on d->server (the uv_listen callback). */
void chunkd_conn_accept(uv_stream_t *srv, int status);
/* Start or stop reading c as its requests in flight and the server's
 * state allow. */
void chunkd_conn_update_reading(struct chunkd_conn *c);
/* Close c's socket; c itself lives until its last request has
 * completed. Safe to call from any callback, more than once. */
void chunkd_conn_close(struct chunkd_conn *c);

/* Reply to r with status (0 or -errno) and free it once sent. */
void req_reply(struct chunkd_req *r, int status);
/* Between chunkd_cork and chunkd_uncork, replies are queued per
 * connection, then sent in one write each (the replies of one engine
 * poll pass, of one read from a client). Calls nest. */
void chunkd_cork(struct chunkd *d);
void chunkd_uncork(struct chunkd *d);

/* ---- request.c: one request, from its frame to its reply ---- */

struct chunkd_req {
	struct chunkd_conn *c;
	uint64_t start_ns;     /* arrival, for the latency histograms */
	struct qbd_engine_req er;
	Qbd__Msg reply;
	int type;
	uint64_t volume;
	uint64_t epoch;
	uint32_t length;
	void *data;            /* READ/WRITE buffer or OPEN bulk; free() */
	uint32_t data_len;     /* bytes of data sent with the reply */
	uint32_t data_off;     /* where in data they start */
	bool sparse;           /* READ with F_SPARSE: BITMAP, then READ */
	uint64_t sparse_version; /* the version its BITMAP found */
	bool close_after;
	uint64_t wseq;         /* WRITE: arrival order; FLUSH: last write before it */
	struct qbd_qlink ql;   /* on its connection's wq (WRITE) or fq (FLUSH) */
	/* Admission (admit.c): background (else foreground), as judged at
	 * its last req_submit. */
	bool bg;
	bool admitted;         /* background, let in once: a second engine
				* request of it (a SPARSE READ's data) goes
				* straight in */
	bool waiting;          /* on d->admit.waiting */
	uint64_t wait_ns;      /* when it started waiting */
	struct qbd_qlink aql;  /* on d->admit.waiting */
	struct chunkd_req *batch_next; /* corked, then sent with r->w: the rest of its write */
	unsigned hdr_len;
	uv_write_t w;
	uint8_t hdr[QBD_WIRE_FRAME_MAX_PREFIX];
};

/* What a connection's receive state machine calls (qbd_wire_rx_feed):
 * a buffer for WRITE data, then each request frame, which is validated
 * (chunkd_validate) and handed to the handler of its type. */
extern const struct qbd_wire_rx_ops chunkd_rx_ops;
/* Submit r's engine request (r->er filled); the reply follows its
 * completion. A background request may wait first (admit.c). */
void req_submit(struct chunkd_req *r, enum qbd_engine_op op);
/* Hand r's engine request (r->er filled, op set) to the engine now. */
void req_engine_submit(struct chunkd_req *r);
/* Judge again the epoch of r, which waited for admission since it was
 * judged at arrival, against its volume's promise and tombstone now
 * (chunkd_validate_epoch). 0 to submit it; else r was answered with
 * the error (and, a WRITE, left its connection's write queue), as a
 * refused request is. */
int req_rejudge(struct chunkd_req *r);
/* Answer r, never submitted, with status: a WRITE leaves its
 * connection's write queue first (the FLUSHes behind it go on). */
void req_unsubmitted_reply(struct chunkd_req *r, int status);

/* ---- admit.c: background I/O behind client I/O ---- */

/* While the chunk server is busy with clients, at most this many
 * background requests are in the engine. */
#define CHUNKD_BG_BUSY_MAX 1u
/* Busy: a foreground request in the engine, or one submitted or
 * completed this recently (a client at queue depth 1 leaves gaps of a
 * round trip between its requests; they count as busy). */
#define CHUNKD_BUSY_WINDOW_NS (2u * 1000000u)

/* Whether a request is background: copies and checks the chunk server
 * serves for the cluster, not for a client waiting on it. The source
 * side of a resync (a READ with F_SPARSE: sparse), a resync landing (a
 * WRITE with QBD_ENGINE_F_RESYNC), a PULL's store write (type PULL),
 * a CHECKSUM (`qbd volume verify`). Everything else is foreground.
 * Pure. */
bool chunkd_is_background(int type, bool sparse, uint32_t engine_flags);
/* Whether one more background request may go into the engine now, given
 * what a counts (its waiting queue aside) at now_ns. Pure. */
bool chunkd_admit_may(const struct chunkd_admit *a, uint64_t now_ns);
/* req_submit's door: r (r->er filled, op set) goes into the engine now
 * or waits its turn; foreground requests always go in. */
void chunkd_admit_submit(struct chunkd *d, struct chunkd_req *r);
/* r's engine request completed (before its completion is handled). */
void chunkd_admit_done(struct chunkd *d, struct chunkd_req *r);
/* Let in the waiting background requests that may go now: after every
 * completion of a request of the chunk server's. */
void chunkd_admit_run(struct chunkd *d);
/* A FLUSH of c arrived, covering its WRITEs up to wseq: those of them
 * waiting here go into the engine now (judged again first), so that a
 * client's FLUSH waits for the engine, never for this queue. */
void chunkd_admit_flush(struct chunkd *d, struct chunkd_conn *c, uint64_t wseq);
/* Answer (and so free) the waiting requests of c, which is closing. */
void chunkd_admit_drop_conn(struct chunkd *d, struct chunkd_conn *c);

/* ---- validate.c: the one place that judges a request at the edge ---- */

/* What a request is judged against: the server's identity, the state of
 * the connection it came on, and the promised epoch of its volume. */
struct chunkd_edge {
	uint64_t cluster_id, node_id;  /* ours */
	uint32_t chunk_size;
	bool authed;          /* the peer may send more than HELLO and AUTH */
	uint64_t promised;    /* qbd_engine_promised of m->volume_id */
	bool tombstoned;      /* qbd_engine_tombstoned of m->volume_id */
	uint64_t tombstone_epoch; /* ... its epoch */
	const char *peer;     /* for the log */
};

/* What the caller does besides replying with the error. */
struct chunkd_verdict {
	bool close;           /* close the connection after the reply */
	bool unauthed;        /* refused before authentication */
};

/* HELLO and AUTH are served before authentication, nothing else. */
bool chunkd_may(bool authed, int type);

/*
 * Judge request m (data: its bulk data, or NULL) against x; the reason
 * of a refusal is logged (an old or unknown epoch at debug level: a
 * fenced writer's requests are routine). Returns 0 to serve it, or the
 * status to answer with: -EACCES (another cluster, or before
 * authentication; v->close), -ENXIO (for another node; v->close),
 * -EINVAL (malformed: unknown type, a reply, no volume, a chunk the
 * wire cannot list, a range outside the chunk, data where none belongs,
 * unknown flags, OPEN, DELETE_VOLUME or TOMBSTONE at epoch 0, ...),
 * -EPERM (an epoch older than x->promised, or than the tombstone's),
 * -ENOTCONN (a data-path request of an epoch this replica has not
 * promised, or of a volume it promised nothing for) or -EIDRM (the
 * volume has a tombstone here: an OPEN that does not add the node back
 * at or above the tombstone's epoch, a data-path request not older than the
 * tombstone). Pure: touches nothing but the log and *v; any thread.
 */
int chunkd_validate(const struct chunkd_edge *x, const Qbd__Msg *m, const void *data,
		    struct chunkd_verdict *v);
/* The last of chunkd_validate's steps on its own: m's epoch against
 * x->promised and x's tombstone (m's type, volume_id, epoch and flags
 * count). 0, -EPERM, -ENOTCONN or -EIDRM, as chunkd_validate answers.
 * Pure, logs nothing. */
int chunkd_validate_epoch(const struct chunkd_edge *x, const Qbd__Msg *m);

/* ---- keepalive.c: the node's etcd record and lease ---- */

/* Set up and tear down the lock and condition of the keepalive thread. */
void chunkd_keepalive_init(struct chunkd *d);
void chunkd_keepalive_fini(struct chunkd *d);
/* Register the node (its record under a new lease) with bound as its
 * address unless o->advertise says otherwise; 0 or -errno (logged). */
int chunkd_register(struct chunkd *d, const struct qbd_chunkd_opts *o, const char *bound);
/* Revoke the lease, if any (the node record goes with it). */
void chunkd_unregister(struct chunkd *d);
/* Start the thread that keeps the lease alive and republishes the node
 * record when its numbers change; 0 or -errno (logged). Stop it (no-op
 * if not started). */
int chunkd_keepalive_start(struct chunkd *d);
void chunkd_keepalive_stop(struct chunkd *d);
/* Copy the engine's and the scrubber's numbers into the node record every
 * QBD_CHUNKD_STATS_MS (loop thread). */
void chunkd_stats_start(struct chunkd *d);

/* ---- metrics.c: the Prometheus endpoint ---- */

/* Serve the metrics on addr (NULL: no-op) and publish them once a
 * second; chunkd_metrics_stop before the loop closes. */
int chunkd_metrics_start(struct chunkd *d, const char *addr);
void chunkd_metrics_stop(struct chunkd *d);

/* ---- pull.c: replica-to-replica resync ---- */

/* Serve a PULL (validated, epoch checked): read the chunk from the
 * source replica, then store it as a RESYNC write; r is answered either
 * way. */
void chunkd_pull(struct chunkd *d, struct chunkd_req *r, const Qbd__Msg *m);
/* Fail every pull and close every connection to other chunk servers. */
void chunkd_peers_close(struct chunkd *d);

/* ---- scrub.c: the background scrub ---- */

/* Start the background scrub at rate bytes/s (0: off; 0 or -ENOMEM);
 * stop submitting and close its timer (a scrub in the engine still
 * completes; the drain waits for it). */
int chunkd_scrub_start(struct chunkd *d, uint64_t rate);
void chunkd_scrub_stop(struct chunkd *d);

/* ---- reclaim.c: the chunks of volumes deleted, or of replicas moved
 * away, while this node was away ---- */

/* What a scan makes of one volume the store holds. A volume is "gone"
 * when etcd does not have it (deleted) or has it with a configuration
 * that does not list this node (not a member: its replica moved away). */
enum chunkd_reclaim_verdict {
	RECLAIM_KEEP = 1,      /* etcd has it and lists this node, or cannot
				* say which nodes it lists */
	RECLAIM_FOUND,         /* gone; first seen so in this scan (or gone
				* otherwise than at the last sighting) */
	RECLAIM_WAIT,          /* gone, seen so before; the grace or a later
				* revision is still to come */
	RECLAIM_NOW,           /* gone the same way in two answers at least
				* the grace apart, the later at a later
				* revision: free its chunks, leave a
				* tombstone */
};
struct chunkd_reclaim_judgement {
	enum chunkd_reclaim_verdict verdict;
	uint64_t first_ns, first_rev;  /* the first sighting (not for KEEP) */
	uint64_t cfg;                  /* 0: absent from etcd; else not a
					* member at this configuration */
};

/*
 * The decision of one scan, pure (no I/O, no log, no clock: any thread,
 * unit-tested). held[0..nheld) are the volumes the store holds, sorted
 * by volume (qbd_engine_volumes), listed BEFORE etcd was asked for scan;
 * scan is etcd's answer at one revision (scan->members NULL: every
 * volume it has counts as listing node_id); node_id this store's node;
 * mem what the earlier scans left, updated here (sightings of volumes no
 * longer held, present and listing node_id again, or gone otherwise,
 * absent instead of not a member or at another configuration number,
 * are forgotten or started anew); now_ns the monotonic time of the
 * answer. Fills j[0..nheld). Returns 0; -EACCES (scan names another
 * cluster than cluster_id, or none) or -ESTALE (its revision is older
 * than an answer judged before: etcd went back) with every j KEEP and
 * mem emptied, so that nothing is reclaimed on the word of that etcd
 * until two of its own answers agree; -ENOMEM (mem unchanged, every j
 * KEEP).
 */
int chunkd_reclaim_decide(struct chunkd_reclaim_memory *mem, uint64_t grace_ns,
			  uint64_t cluster_id, uint64_t node_id,
			  const struct qbd_engine_volume *held, size_t nheld,
			  const struct qbd_meta_volume_scan *scan, uint64_t now_ns,
			  struct chunkd_reclaim_judgement *j);
void chunkd_reclaim_memory_free(struct chunkd_reclaim_memory *mem);
/* Keep, in place and in order, the volumes of held[0..n) the reclaim has
 * something to free of: all but those the store holds nothing of but a
 * tombstone (what a reclaim leaves). Returns how many. Pure. */
size_t chunkd_reclaim_holdings(struct qbd_engine_volume *held, size_t n);
/* Loop thread, a scan judged (d->reclaim.held, .verdicts, .nheld, busy):
 * submit the TOMBSTONE of the next volume judged RECLAIM_NOW from
 * .next on, each completion submitting the one after; at the end the
 * scan's lists are freed and busy cleared. */
void chunkd_reclaim_next(struct chunkd *d);

/* Start scanning (grace_ms 0: reclaim off, logged); 0 or -errno
 * (logged). Scans begin soon after start-up, then every interval. */
int chunkd_reclaim_start(struct chunkd *d, const struct qbd_chunkd_opts *o);
/* Stop scanning and close the timer (loop thread); a scan in libuv's
 * thread pool ends on its own, a delete in the engine completes (the
 * drain waits for it), and neither starts anything more. */
void chunkd_reclaim_stop(struct chunkd *d);
/* Free what is left once the loop has ended (accepts a server whose
 * reclaim never started). */
void chunkd_reclaim_fini(struct chunkd *d);

#endif
