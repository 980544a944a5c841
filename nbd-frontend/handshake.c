/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fixed-newstyle handshake of qbd-nbd's server, for clients of its
 * unix socket (adopted connections skip it): the greeting, the client's
 * flags, then options until EXPORT_NAME or GO moves the connection to
 * the transmission phase. Options: EXPORT_NAME, ABORT, LIST, INFO, GO,
 * STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT (one
 * context, base:allocation); any other gets NBD_REP_ERR_UNSUP and the
 * handshake goes on. The export name is "" or the volume's name.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"

static void option_reply(struct nconn *c, uint32_t opt, uint32_t type,
			 const void *data, uint32_t len)
{
	uint8_t *b = malloc(NBD_OPTION_REPLY_SIZE + len);

	if (!b) {
		conn_close(c);
		return;
	}
	nbd_option_reply(b, opt, type, len);
	if (len)
		memcpy(b + NBD_OPTION_REPLY_SIZE, data, len);
	conn_send(c, b, NBD_OPTION_REPLY_SIZE + len);
}

static uint16_t handshake_transmission_flags(const struct nconn *c)
{
	return NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
	       NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_CAN_MULTI_CONN |
	       (c->neg & NBD_NEG_STRUCTURED ? NBD_FLAG_SEND_DF : 0);
}

static bool handshake_export_ok(struct nbd_server *s, const uint8_t *name, uint32_t len)
{
	return len == 0 || (len == strlen(s->name) && memcmp(name, s->name, len) == 0);
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
static void option_meta_context(struct nconn *c, uint32_t opt, const uint8_t *d,
				uint32_t len)
{
	bool list = opt == NBD_OPT_LIST_META_CONTEXT, found = false;
	const uint8_t *name, *q;
	uint32_t nl, n;

	if (nbd_meta_parse(d, len, &name, &nl, &n, &q) < 0) {
		option_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
		return;
	}
	if (!list && !(c->neg & NBD_NEG_STRUCTURED)) {
		qbd_warn("nbd", "SET_META_CONTEXT before structured replies were negotiated");
		option_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
		return;
	}
	if (!handshake_export_ok(c->s, name, nl)) {
		qbd_warn("nbd", "meta context for unknown export '%.*s'", (int)nl, name);
		option_reply(c, opt, NBD_REP_ERR_UNKNOWN, NULL, 0);
		return;
	}
	/* LIST without queries lists every context; unknown queries are
	 * left out of the answer. */
	found = list && n == 0;
	for (uint32_t i = 0; i < n; i++)
		found |= nbd_meta_query_base_allocation(&q, list);
	if (!list) {
		c->neg &= ~NBD_NEG_BASE_ALLOCATION;
		if (found)
			c->neg |= NBD_NEG_BASE_ALLOCATION;
	}
	if (found) {
		uint8_t b[NBD_META_REPLY_FIXED_SIZE + sizeof NBD_META_BASE_ALLOCATION - 1];

		nbd_put32(b, list ? 0 : NBD_META_ID_BASE_ALLOCATION);
		memcpy(b + NBD_META_REPLY_FIXED_SIZE, NBD_META_BASE_ALLOCATION,
		       sizeof b - NBD_META_REPLY_FIXED_SIZE);
		option_reply(c, opt, NBD_REP_META_CONTEXT, b, sizeof b);
	}
	qbd_debug("nbd", "%s_META_CONTEXT: %u queries, base:allocation %s",
		  list ? "LIST" : "SET", n, found ? "selected" : "not selected");
	option_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_EXPORT_NAME: no reply on error, the connection closes. */
static bool option_export_name(struct nconn *c, const uint8_t *d, uint32_t len)
{
	struct nbd_server *s = c->s;
	uint8_t b[NBD_EXPORT_NAME_REPLY_SIZE + NBD_EXPORT_NAME_ZEROES] = { 0 };

	if (!handshake_export_ok(s, d, len)) {
		qbd_warn("nbd", "client asked for unknown export '%.*s'", (int)len, d);
		conn_close(c);
		return false;
	}
	nbd_put64(b, s->size);
	nbd_put16(b + 8, handshake_transmission_flags(c));
	conn_send_copy(c, b, c->no_zeroes ? NBD_EXPORT_NAME_REPLY_SIZE : sizeof b);
	c->state = ST_TRANSMISSION;
	return true;
}

static bool option_list(struct nconn *c, uint32_t opt, uint32_t len)
{
	struct nbd_server *s = c->s;
	uint32_t nl = (uint32_t)strlen(s->name);
	uint8_t *b;

	if (len != 0) {
		option_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
		return true;
	}
	if (!(b = malloc(4 + nl))) {
		conn_close(c);
		return false;
	}
	nbd_put32(b, nl);
	memcpy(b + 4, s->name, nl);
	option_reply(c, opt, NBD_REP_SERVER, b, 4 + nl);
	free(b);
	option_reply(c, opt, NBD_REP_ACK, NULL, 0);
	return true;
}

/* NBD_OPT_INFO and NBD_OPT_GO: the export's size and flags, its block
 * sizes; GO then enters the transmission phase. */
static void option_go(struct nconn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
	struct nbd_server *s = c->s;
	uint8_t e[NBD_INFO_EXPORT_SIZE], bs[NBD_INFO_BLOCK_SIZE_SIZE];
	uint32_t nl;
	uint16_t nreq;

	if (len < NBD_GO_FIXED_SIZE || (nl = nbd_get32(d)) > len - NBD_GO_FIXED_SIZE ||
	    (nreq = nbd_get16(d + 4 + nl), NBD_GO_FIXED_SIZE + nl + 2u * nreq != len)) {
		qbd_warn("nbd", "malformed %s option", opt == NBD_OPT_GO ? "GO" : "INFO");
		option_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
		return;
	}
	if (!handshake_export_ok(s, d + 4, nl)) {
		qbd_warn("nbd", "client asked for unknown export '%.*s'", (int)nl, d + 4);
		option_reply(c, opt, NBD_REP_ERR_UNKNOWN, NULL, 0);
		return;
	}
	nbd_put16(e, NBD_INFO_EXPORT);
	nbd_put64(e + 2, s->size);
	nbd_put16(e + 10, handshake_transmission_flags(c));
	option_reply(c, opt, NBD_REP_INFO, e, sizeof e);
	nbd_put16(bs, NBD_INFO_BLOCK_SIZE);
	nbd_put32(bs + 2, 1);
	nbd_put32(bs + 6, NBD_BLOCK);
	nbd_put32(bs + 10, NBD_MAX_PAYLOAD);
	option_reply(c, opt, NBD_REP_INFO, bs, sizeof bs);
	option_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (opt == NBD_OPT_GO)
		c->state = ST_TRANSMISSION;
}

static void option_structured_reply(struct nconn *c, uint32_t opt, uint32_t len)
{
	if (len != 0) {
		qbd_warn("nbd", "STRUCTURED_REPLY option with %u bytes of data", len);
		option_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
		return;
	}
	c->neg |= NBD_NEG_STRUCTURED;
	option_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* Handle one option; returns false if the connection was closed or is
 * ending. */
static bool handshake_option(struct nconn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		return option_export_name(c, d, len);
	case NBD_OPT_ABORT:
		option_reply(c, opt, NBD_REP_ACK, NULL, 0);
		conn_end(c);
		return false;
	case NBD_OPT_LIST:
		return option_list(c, opt, len);
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		option_go(c, opt, d, len);
		return true;
	case NBD_OPT_STRUCTURED_REPLY:
		option_structured_reply(c, opt, len);
		return true;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		option_meta_context(c, opt, d, len);
		return true;
	default:
		qbd_debug("nbd", "unsupported option %u", opt);
		option_reply(c, opt, NBD_REP_ERR_UNSUP, NULL, 0);
		return true;
	}
}

void handshake_start(struct nconn *c)
{
	uint8_t g[NBD_GREETING_SIZE];

	c->state = ST_CLIENT_FLAGS;
	nbd_greeting(g);
	conn_send_copy(c, g, sizeof g);
}

bool handshake_input(struct nconn *c)
{
	uint32_t opt, len;

	if (c->state == ST_CLIENT_FLAGS) {
		if (c->in_len < NBD_CLIENT_FLAGS_SIZE)
			return false;
		c->no_zeroes = nbd_get32(conn_in(c)) & NBD_FLAG_C_NO_ZEROES;
		conn_consume(c, NBD_CLIENT_FLAGS_SIZE);
		c->state = ST_OPTIONS;
		return true;
	}
	if (c->in_len < NBD_OPTION_SIZE)
		return false;
	opt = nbd_get32(conn_in(c) + 8);
	len = nbd_get32(conn_in(c) + 12);
	if (nbd_get64(conn_in(c)) != NBD_IHAVEOPT || len > NBD_MAX_OPTION) {
		qbd_warn("nbd", "bad option header (length %u): closing", len);
		conn_close(c);
		return false;
	}
	if (c->in_len < NBD_OPTION_SIZE + (size_t)len)
		return false;
	if (!handshake_option(c, opt, conn_in(c) + NBD_OPTION_SIZE, len))
		return false;
	conn_consume(c, NBD_OPTION_SIZE + (size_t)len);
	return true;
}
