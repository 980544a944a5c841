/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd-chunkd admission: background I/O behind client I/O. Every engine
 * request of the chunk server's requests passes here (req_submit). A
 * background request (chunkd_is_background: the copies of a resync or
 * rebuild, both ends, and `qbd volume verify`'s CHECKSUM) goes into the
 * engine at once while the chunk server is not busy with clients; while
 * it is (a foreground request in the engine, or one submitted or
 * completed within CHUNKD_BUSY_WINDOW_NS), at most CHUNKD_BG_BUSY_MAX
 * background requests are in the engine and the others wait here, in
 * arrival order. Foreground requests never wait: a client's 4 KiB write
 * then queues behind one copy on the disk and the ring, not behind
 * all of them.
 *
 * Progress: a background request waits only while CHUNKD_BG_BUSY_MAX
 * (at least one) background requests are in the engine (chunkd_admit_may
 * lets one in whenever fewer are), and the completion of each of those
 * lets the next one in (chunkd_admit_run from req_on_engine). So copies
 * go on one at a time however busy clients keep the server, and nothing
 * here waits for anything but the engine: no request can starve and
 * none deadlocks (a FLUSH held behind a waiting RESYNC write of its
 * connection waits for an engine completion, like any other).
 *
 * Safety: a request that waited is no different from one that sat in
 * the engine's queues that long, but for its epoch, judged at arrival
 * (validate.c): a newer writer may have been promised meanwhile, or a
 * tombstone made. req_rejudge judges it again with the same rule
 * (chunkd_validate_epoch) before it is submitted, and answers the error
 * without touching the store when the epoch no longer holds. A waiting
 * WRITE stays on its connection's write queue (request.c), so a FLUSH
 * received after it still waits for it; and since the FLUSH is a
 * client's, its arrival lets such writes of its connection in at once
 * (chunkd_admit_flush): a FLUSH waits for the engine, never for this
 * queue. A connection that closes
 * answers (and so frees) its waiting requests (chunkd_admit_drop_conn):
 * each request is owned by the waiting queue until it leaves it, for the
 * engine or for its reply.
 *
 * Loop thread only.
 */
#include <errno.h>

#include "internal.h"
#include "common/util.h"

bool chunkd_is_background(int type, bool sparse, uint32_t engine_flags)
{
	switch (type) {
	case QBD__MSG_TYPE__READ:
		return sparse;
	case QBD__MSG_TYPE__WRITE:
		return (engine_flags & QBD_ENGINE_F_RESYNC) != 0;
	case QBD__MSG_TYPE__PULL:
	case QBD__MSG_TYPE__CHECKSUM:
		return true;
	default:
		return false;
	}
}

bool chunkd_admit_may(const struct chunkd_admit *a, uint64_t now_ns)
{
	if (a->bg_inflight < CHUNKD_BG_BUSY_MAX)
		return true;
	return a->fg_inflight == 0 && now_ns >= a->fg_last_ns + CHUNKD_BUSY_WINDOW_NS;
}

void chunkd_admit_submit(struct chunkd *d, struct chunkd_req *r)
{
	struct chunkd_admit *a = &d->admit;
	uint64_t now = qbd_now_ns();

	r->bg = chunkd_is_background(r->type, r->sparse, r->er.flags);
	if (!r->bg) {
		a->fg_inflight++;
		a->fg_last_ns = now;
		req_engine_submit(r);
		return;
	}
	/* Behind those already waiting, unless let in before (a SPARSE
	 * READ's data after its bitmap keeps its place). */
	if (r->admitted || (qbd_queue_empty(&a->waiting) && chunkd_admit_may(a, now))) {
		r->admitted = true;
		a->bg_inflight++;
		req_engine_submit(r);
		return;
	}
	r->wait_ns = now;
	r->waiting = true;
	qbd_queue_push(&a->waiting, &r->aql);
	a->nwaiting++;
	a->waited++;
}

void chunkd_admit_done(struct chunkd *d, struct chunkd_req *r)
{
	struct chunkd_admit *a = &d->admit;

	if (r->bg) {
		a->bg_inflight--;
		return;
	}
	a->fg_inflight--;
	a->fg_last_ns = qbd_now_ns();
}

/* Take r off the waiting queue and into the engine, unless its epoch no
 * longer holds or its connection closed (answered then). */
static void admit_one(struct chunkd *d, struct chunkd_req *r, uint64_t now)
{
	struct chunkd_admit *a = &d->admit;

	qbd_queue_remove(&a->waiting, &r->aql);
	r->waiting = false;
	a->nwaiting--;
	qbd_hist_add(&a->wait, now - r->wait_ns);
	if (r->c->closing) {
		req_unsubmitted_reply(r, -ECONNRESET);
		return;
	}
	if (req_rejudge(r) != 0)
		return;  /* answered: its epoch no longer holds */
	r->admitted = true;
	a->bg_inflight++;
	req_engine_submit(r);
}

void chunkd_admit_run(struct chunkd *d)
{
	struct chunkd_admit *a = &d->admit;
	uint64_t now = qbd_now_ns();

	while (a->waiting.head && chunkd_admit_may(a, now))
		admit_one(d, QBD_QUEUE_ENTRY(a->waiting.head, struct chunkd_req, aql), now);
}

void chunkd_admit_flush(struct chunkd *d, struct chunkd_conn *c, uint64_t wseq)
{
	struct qbd_qlink *l = c->wq.head, *next;
	uint64_t now = qbd_now_ns();

	for (; l; l = next) {
		struct chunkd_req *r = QBD_QUEUE_ENTRY(l, struct chunkd_req, ql);

		next = l->next;  /* admit_one may take r off wq (refused) */
		if (r->wseq > wseq)
			break;
		if (!r->waiting)
			continue;
		admit_one(d, r, now);
		/* A reply that failed to send closes c, whose waiting
		 * requests (next among them) are then freed. */
		if (c->closing)
			break;
	}
}

void chunkd_admit_drop_conn(struct chunkd *d, struct chunkd_conn *c)
{
	struct chunkd_admit *a = &d->admit;
	struct qbd_qlink *l = a->waiting.head, *next;

	for (; l; l = next) {
		struct chunkd_req *r = QBD_QUEUE_ENTRY(l, struct chunkd_req, aql);

		next = l->next;
		if (r->c != c)
			continue;
		qbd_queue_remove(&a->waiting, l);
		r->waiting = false;
		a->nwaiting--;
		req_unsubmitted_reply(r, -ECONNRESET);
	}
}
