/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Messages and parts: a part (one chunk's share of a request, or a
 * resync, repair, probe or ping) sends one message per replica; each
 * message is found again by its id when the reply comes, and failed when
 * its replica goes down. A user request completes when its last part
 * has finished. op_reply hands each answer to its kind's reply function.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/core/internal.h"

static struct sub **hslot(struct qbd_core *c, uint64_t id)
{
	return &c->htab[(id * 0x9E3779B97F4A7C15ull) >> 52 & (HBUCKETS - 1)];
}

void core_sub_unlink(struct qbd_core *c, struct sub *s)
{
	struct sub **pp = hslot(c, s->id);
	unsigned r = s->replica;

	while (*pp != s)
		pp = &(*pp)->hnext;
	*pp = s->hnext;
	if (s->rprev)
		s->rprev->rnext = s->rnext;
	else
		c->rhead[r] = s->rnext;
	if (s->rnext)
		s->rnext->rprev = s->rprev;
	else
		c->rtail[r] = s->rprev;
	s->live = false;
	s->hnext = s->rprev = s->rnext = NULL;
	c->outstanding[r]--;
	c->nsubs--;
}

struct sub *core_sub_find(struct qbd_core *c, unsigned r, uint64_t id)
{
	for (struct sub *s = *hslot(c, id); s; s = s->hnext)
		if (s->id == id)
			return s->replica == r ? s : NULL;
	return NULL;
}

/* Send part p's message to replica r. */
void core_part_send(struct part *p, unsigned r, enum qbd_core_msg_type type,
		    uint32_t off, uint32_t len, uint32_t flags, const void *data)
{
	struct qbd_core *c = p->c;
	struct sub *s = &p->subs[r];
	struct sub **slot;
	struct qbd_core_msg m = {
		.replica = r, .type = type, .chunk = p->chunk, .offset = off,
		.length = len, .expected_version = p->expected,
		.new_version = p->newv, .flags = flags, .data = data,
		.data_len = (flags & QBD_CORE_F_SPARSE) ? p->rs_len : len,
		.source = p->replica >= 0 ? (unsigned)p->replica : 0,
	};

	s->p = p;
	s->id = m.id = ++c->next_id;
	s->replica = r;
	s->sent = c->now;
	s->live = true;
	slot = hslot(c, s->id);
	s->hnext = *slot;
	*slot = s;
	s->rnext = NULL;
	s->rprev = c->rtail[r];
	if (c->rtail[r])
		c->rtail[r]->rnext = s;
	else
		c->rhead[r] = s;
	c->rtail[r] = s;
	c->outstanding[r]++;
	c->nsubs++;
	p->refs++;
	c->ops.send(c->user, &m);
}

struct part *core_part_new(struct qbd_core *c, struct uio *io, enum pkind kind,
			   uint64_t ch)
{
	struct part *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->c = c;
	p->io = io;
	p->kind = kind;
	p->chunk = ch;
	p->replica = -1;
	p->refs = 1; /* dropped by core_part_put at the end of its starter */
	return p;
}

void core_part_put(struct part *p)
{
	if (--p->refs)
		return;
	free(p->owned);
	free(p->dirty);
	free(p);
}

/* Append p to the queue head..tail (linked through wnext), with a
 * reference of its own. */
void core_part_enqueue(struct part **head, struct part **tail, struct part *p)
{
	p->wnext = NULL;
	p->refs++;
	if (*tail)
		(*tail)->wnext = p;
	else
		*head = p;
	*tail = p;
}

void core_io_done(struct qbd_core *c, struct uio *io, int res)
{
	if (res && !io->err)
		io->err = res;
	if (--io->left)
		return;
	c->pending_ios--;
	c->ops.complete(c->user, io->cookie, io->err);
	free(io);
}

/* A user part reached its result. */
void core_part_finish(struct part *p, int res)
{
	struct qbd_core *c = p->c;

	if (p->done)
		return;
	p->done = true;
	p->result = res;
	if (p->started) {
		p->started = false;
		c->wr_inflight[p->chunk]--;
	}
	/* Writes still on their way to slow replicas must not keep the
	 * user's buffer: copy it, and tell the shell. */
	if (p->kind == P_WRITE && p->pending && p->buf && !p->owned) {
		p->owned = malloc(p->len);
		if (p->owned) {
			memcpy(p->owned, p->buf, p->len);
			p->buf = p->owned;
			for (unsigned r = 0; r < c->R; r++)
				if (p->subs[r].live)
					c->ops.data_moved(c->user, r, p->subs[r].id,
							  p->owned);
		} else {
			/* No memory: give up on those replicas instead. */
			for (unsigned r = 0; r < c->R; r++)
				if (p->subs[r].live) {
					c->ops.drop(c->user, r, "out of memory");
					qbd_core_replica_down(c, r, c->now);
				}
		}
	}
	if (p->io) {
		struct uio *io = p->io;

		p->io = NULL;
		core_io_done(c, io, res);
	}
}

/*
 * The first steps of an answer to a write, a flush or a copy (every kind
 * of part but reads, probes and pings): r is no longer pending, -EPERM
 * fences the core, a success joins okset. Returns the status the part
 * goes on with (a QBD_CORE_MUTANT_NO_FENCE build takes -EPERM for a
 * success).
 */
int core_part_answered(struct part *p, unsigned r, int status)
{
	p->pending &= ~(1u << r);
#ifdef QBD_CORE_MUTANT_NO_FENCE
	if (status == -EPERM)
		status = 0;
#endif
	if (status == -EPERM)
		core_fence(p->c);
	if (status == 0)
		p->okset |= 1u << r;
	return status;
}

/* Hand an answer to the reply function of its part's kind, which lives
 * next to the code that sends that kind. */
static void op_reply(struct part *p, unsigned r, int status, uint64_t version,
		     int64_t cflags)
{
	switch (p->kind) {
	case P_READ:
		core_read_reply(p, r, status, version);
		break;
	case P_REPAIR:
		core_repair_reply(p, r, status);
		break;
	case P_PING:
		core_ping_reply(p, r, status);
		break;
	case P_WRITE:
		core_write_reply(p, r, status, version);
		break;
	case P_FLUSH:
		core_flush_reply(p, r, status);
		break;
	case P_RFLUSH:
		core_reflush_reply(p, r, status);
		break;
	case P_CFLUSH:
		core_cflush_reply(p, r, status);
		break;
	case P_RSPULL:
		core_pull_reply(p, r, status);
		break;
	case P_RSBUMP:
		core_bump_read_reply(p, r, status, version);
		break;
	case P_RSBUMPW:
		core_bump_write_reply(p, r, status);
		break;
	case P_PROBE:
		core_probe_reply(p, r, status, version, cflags);
		break;
	case P_RSREAD:
		core_resync_read_reply(p, r, status, version);
		break;
	case P_RSWRITE:
		core_resync_write_reply(p, r, status);
		break;
	}
}

void core_sub_result(struct qbd_core *c, struct sub *s, int status,
		     uint64_t version, int64_t cflags)
{
	struct part *p = s->p;
	unsigned r = s->replica;

	core_sub_unlink(c, s);
	if (status != -EPERM && status != -ENOTCONN && s->sent > c->confirmed[r])
		c->confirmed[r] = s->sent;
	op_reply(p, r, status, version, cflags);
	core_part_put(p);
}
