/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-managerd internals (docs/design.md, "Manager"): the settings, the
 * daemon's state, and a section per file. One thread does the work
 * (managerd.c's loop: read the cluster, write down-out requests, carry
 * out one change at a time); the election's thread keeps the leader's
 * lease alive; libmicrohttpd's thread serves the metrics text.
 */
#ifndef QBD_MANAGER_INTERNAL_H
#define QBD_MANAGER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replicator/meta/meta.h"

#define MGR_DOWN_OUT_S 600           /* default down-out: 10 minutes */
#define MGR_LEASE_TTL_S 10           /* default leader lease */
#define MGR_GIVE_UP_S 120            /* default: no progress this long, give up */
#define MGR_ROUND_MS 2000            /* the leader looks at the cluster this often */
#define MGR_FOLLOW_MS 2000           /* a follower tries to lead this often */
#define MGR_RETRY_MIN_S 10           /* a volume given up is tried again after */
#define MGR_RETRY_MAX_S 600          /* ... doubling up to this */

struct mgr_opts {
	const char *etcd;
	const char *secret_file;
	const char *metrics;         /* ADDR:PORT or NULL */
	uint64_t down_out_s;         /* 0: down-out off */
	unsigned lease_ttl_s;
	uint64_t give_up_s;
	uint64_t resync_rate;        /* bytes/s of the copies it drives; 0 = unlimited */
};

/* A node seen without its alive key: since when (this leader's looks). */
struct mgr_down {
	uint64_t id;
	uint64_t since_ns;           /* monotonic: the first look that found it down */
	bool seen;                   /* in the latest look (sweep) */
	bool said;                   /* "down" logged */
};

/* A volume whose change could not be carried out: when to try again. */
struct mgr_retry {
	uint64_t id;
	uint64_t at_ns;              /* monotonic */
	unsigned fails;
	char why[320];               /* said once until it changes */
};

struct mgr_elect;
struct qbd_metrics;

struct mgr {
	struct mgr_opts o;
	struct qbd_meta *m;          /* the work thread's etcd handle */
	struct mgr_elect *el;
	struct qbd_metrics *metrics;
	int sfd;                     /* signalfd: SIGTERM, SIGINT */
	bool stop;
	bool driving;                /* a volume is open right now */
	/* Counters (metrics). */
	uint64_t changes_done, changes_given_up, downout_written, view_errors;
	uint64_t metrics_at;
	uint64_t wd_usec;            /* systemd's watchdog period; 0: none */
	uint64_t wd_at;
	uint64_t led_since_ns;       /* this term's start (0: not leading) */
	struct mgr_down *down;
	size_t ndown, cdown;
	struct mgr_retry *retry;
	size_t nretry, cretry;
	char said[512];              /* the last problem of a round, said once */
};

/* ---- managerd.c: settings, signals, the loop ---- */

/* Between blocking steps of the work thread: metrics, watchdog, and a
 * SIGTERM or SIGINT waiting (sets m->stop). Never blocks. */
void mgr_poll(struct mgr *m);
/* msg (formatted) at warn level, once until another one is said. */
void mgr_say_once(struct mgr *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- elect.c: the leader's key and lease ---- */

/* Start campaigning from a thread of its own (its own etcd handle):
 * 0 and *out, or -errno. ttl_s: the lease. */
int mgr_elect_start(const char *etcd, unsigned ttl_s, struct mgr_elect **out);
/* Whether this instance leads now, and its lease: true only while the
 * lease is known to be valid (renewed less than its TTL ago, minus a
 * margin), so a leader cut off from etcd stops acting before another
 * can take over. */
bool mgr_elect_leading(struct mgr_elect *e, int64_t *lease);
/* Stop: a leader revokes its lease (the key goes at once). Accepts NULL. */
void mgr_elect_stop(struct mgr_elect *e);

/* ---- downout.c: nodes down longer than down-out ---- */

/* One down-out request to write: volume v's replica on node. */
struct mgr_downout {
	size_t vol;                  /* index into the view's vols */
	uint64_t node;
};

/*
 * Pure: which requests down-out asks for in view. A node is out when it
 * has no alive key, its record was last published more than down_out_s
 * before now_s, and down_for_s (the caller's count of how long its own
 * looks have found it down; a function of the node id, -1 if unknown)
 * is at least down_out_s too. For each volume with a replica on an out
 * node, no change request and no change standing: one entry (at most
 * max; the count that would be returned is returned). Nodes without a
 * record are never judged (nothing says how long they have been down).
 */
size_t mgr_downout_decide(const struct qbd_meta_cluster_view *view, uint64_t now_s,
			  uint64_t down_out_s, int64_t (*down_for_s)(void *, uint64_t),
			  void *arg, struct mgr_downout *out, size_t max);
/* The leader's round: count down nodes, write the requests decided. */
void mgr_downout_round(struct mgr *m, const struct qbd_meta_cluster_view *view,
		       int64_t lease);

/* A look at etcd for down-out alone (a view, then mgr_downout_round),
 * while a change is being carried out; nothing when not leading or
 * when the view cannot be read (counted). */
void mgr_downout_look(struct mgr *m);

/* ---- drive.c: changes of volumes nobody has attached ---- */

/* Carry out (at most) one change of a volume nobody has attached:
 * returns when it is done, given up, taken over by another writer, or
 * the leadership or the process stops. Blocks (qbd_open, qbd_close). */
void mgr_drive_round(struct mgr *m, const struct qbd_meta_cluster_view *view);

/* ---- metrics.c ---- */

/* Render and publish the counters (at most once a second). */
void mgr_metrics_publish(struct mgr *m, bool force);

#endif
