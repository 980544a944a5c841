/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Background scrub: walk every chunk of the store, slot by slot, and have
 * the engine verify the checksum of each written block (QBD_ENGINE_SCRUB,
 * one chunk at a time, ordered with the chunk's writes like a READ). A
 * block that fails is logged here, counted, and flags its chunk DAMAGED
 * in the engine; the volume's writer learns it from its next PING
 * (ping_report in request.c) and copies the chunk again from a good
 * replica. The walk is paced by a token bucket at the configured rate in
 * bytes per second; a pass that ends starts again from slot 0, at most
 * one pass every CHUNKD_SCRUB_PASS_MIN_NS.
 *
 * Everything runs on the loop thread; the counters reach etcd through
 * the node record (chunkd_stats_start in keepalive.c).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"
#include "common/log.h"
#include "common/util.h"

#define COMP "scrub"
#define SCRUB_TICK_MS 100
#define CHUNKD_SCRUB_PASS_MIN_NS (10ull * 1000000000ull)

static void scrub_on_done(struct qbd_engine_req *er)
{
	struct chunkd *d = er->user;
	struct chunkd_scrub *s = &d->scrub;
	unsigned bad = 0;

	s->busy = false;
	if (er->res < 0) {
		s->stats.errors++;
		qbd_err(COMP, "volume %016llx chunk %llu: scrub read failed: %s",
			(unsigned long long)er->volume, (unsigned long long)er->chunk,
			strerror(-er->res));
		return;
	}
	s->stats.bytes += (uint64_t)er->res;
	s->stats.chunks++;
	s->pass_chunks++;
	s->tokens -= er->res;
	for (unsigned b = 0; b < d->chunk_size / QBD_ENGINE_BLOCK; b++) {
		if (!(s->bad[b / 8] & (1u << (b % 8))))
			continue;
		bad++;
		qbd_err(COMP, "bad block: volume %016llx chunk %llu block %u (checksum "
			"mismatch; chunk flagged DAMAGED for repair)",
			(unsigned long long)er->volume, (unsigned long long)er->chunk, b);
	}
	s->stats.bad_blocks += bad;
	s->pass_bad += bad;
}

static void scrub_tick(uv_timer_t *t)
{
	struct chunkd *d = QBD_CONTAINER_OF(t, struct chunkd, scrub.timer);
	struct chunkd_scrub *s = &d->scrub;
	uint64_t now = qbd_now_ns(), vol, ch;
	int64_t cap = (int64_t)QBD_MAX(s->stats.rate, (uint64_t)d->chunk_size);

	/* Refill: rate bytes a second, at most a second's worth (or one
	 * chunk) saved up. */
	s->tokens += (int64_t)((double)s->stats.rate * (double)(now - s->last_ns) / 1e9);
	if (s->tokens > cap)
		s->tokens = cap;
	s->last_ns = now;
	if (s->busy || d->stopping || s->tokens <= 0 || now < s->pass_start_ns)
		return;
	if (!qbd_engine_next_chunk(d->e, &s->slot, &vol, &ch)) {
		uint64_t took = now - s->pass_start_ns;

		s->stats.passes++;
		if (s->pass_bad || took >= 60ull * 1000000000ull)
			qbd_info(COMP, "pass %llu done in %llu s: %llu chunks, %llu bad blocks",
				 (unsigned long long)s->stats.passes,
				 (unsigned long long)(took / 1000000000ull),
				 (unsigned long long)s->pass_chunks,
				 (unsigned long long)s->pass_bad);
		else
			qbd_debug(COMP, "pass %llu done: %llu chunks",
				  (unsigned long long)s->stats.passes,
				  (unsigned long long)s->pass_chunks);
		s->slot = 0;
		s->pass_chunks = s->pass_bad = 0;
		s->pass_start_ns = QBD_MAX(now, s->pass_start_ns + CHUNKD_SCRUB_PASS_MIN_NS);
		return;
	}
	memset(&s->req, 0, sizeof s->req);
	s->req.op = QBD_ENGINE_SCRUB;
	s->req.volume = vol;
	s->req.chunk = ch;
	s->req.buf = s->bad;
	s->req.cb = scrub_on_done;
	s->req.user = d;
	s->slot++;
	s->busy = true;
	qbd_engine_submit(d->e, &s->req);
}

int chunkd_scrub_start(struct chunkd *d, uint64_t rate)
{
	struct chunkd_scrub *s = &d->scrub;
	int rc;

	s->stats.rate = rate;
	if (rate == 0) {
		qbd_info(COMP, "background scrub off");
		return 0;
	}
	rc = uv_timer_init(&d->loop, &s->timer);
	if (rc < 0)
		return -ENOMEM;
	s->timer_on = true;
	s->last_ns = s->pass_start_ns = qbd_now_ns();
	uv_timer_start(&s->timer, scrub_tick, SCRUB_TICK_MS, SCRUB_TICK_MS);
	qbd_info(COMP, "background scrub at %llu bytes/s", (unsigned long long)rate);
	return 0;
}

void chunkd_scrub_stop(struct chunkd *d)
{
	struct chunkd_scrub *s = &d->scrub;

	if (!s->timer_on)
		return;
	s->timer_on = false;
	uv_close((uv_handle_t *)&s->timer, NULL);
}
