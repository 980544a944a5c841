/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC plumbing of qbd-csi (docs/design.md, "The CSI driver"): a server
 * of libgrpc's core API on a unix socket, without TLS (the socket's
 * directory is what guards it, as for every CSI driver).
 *
 * Threads and ownership. One completion-queue thread owns every call
 * while it waits on gRPC: it requests calls, looks the method up in the
 * table, receives the request message, then hands the call to a worker
 * through the work queue. The worker owns it while it decodes the request
 * (protobuf-c), runs the handler and encodes the response, then starts
 * the last batch (initial metadata, the message or none, the status, and
 * the receipt of the client's close) and never touches it again: that
 * batch's completion returns it to the completion-queue thread, which
 * frees it. A call has one owner at every moment, and no lock but the
 * work queue's.
 *
 * Workers: a fixed pool of CSI_WORKERS threads, started with the server.
 * Its use is bounded and known at start, and shutdown joins a known set.
 * A handler may block for long (an attach that waits out a dead writer's
 * lease, mkfs), but it then holds one worker and the others keep
 * answering; a second call on the same volume is refused at once
 * (inflight.c) rather than held, and calls beyond the pool wait in the
 * queue (CSI's callers, kubelet and the sidecars, send few calls at once
 * and retry on their own deadlines).
 */
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "internal.h"

#define CSI_WORKERS 8
/* Calls requested from gRPC ahead of their arrival. */
#define CSI_REQUESTS 4

enum call_stage {
	ST_REQUESTED,   /* grpc_server_request_call is pending */
	ST_RECEIVING,   /* the request message is being received */
	ST_FINISHING,   /* the response and status are being sent */
};

struct csi_call {
	struct csi_server *s;
	enum call_stage stage;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
	char method[128];
	const struct csi_method *m;    /* NULL: unknown method */
	grpc_byte_buffer *req;
	grpc_byte_buffer *resp;
	grpc_status_code code;
	char msg[512];
	grpc_slice msg_slice;
	int cancelled;                 /* GRPC_OP_RECV_CLOSE_ON_SERVER */
	struct csi_call *next;         /* in the work queue */
};

struct csi_server {
	const struct csi_opts *o;
	const struct csi_method *const *tables;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	grpc_server *server;
	grpc_completion_queue *cq;
	pthread_t cq_thread;
	bool cq_started;
	atomic_bool stopping;
	atomic_int live;               /* calls allocated and not freed */

	pthread_mutex_t lock;          /* the work queue */
	pthread_cond_t cond;
	struct csi_call *head, **tail;
	bool quit;
	pthread_t workers[CSI_WORKERS];
	int nworkers;
};

/* The tag of grpc_server_shutdown_and_notify. */
static char shutdown_tag;

/* ---- handlers' side ---- */

grpc_status_code csi_reply(struct csi_call *c, const ProtobufCMessage *resp)
{
	size_t n;
	grpc_slice sl;

	if (resp->descriptor != c->m->response) {
		return csi_fail(c, GRPC_STATUS_INTERNAL, "%s: response of type %s, want %s",
				c->method, resp->descriptor->name, c->m->response->name);
	}
	n = protobuf_c_message_get_packed_size(resp);
	sl = grpc_slice_malloc(n);
	protobuf_c_message_pack(resp, GRPC_SLICE_START_PTR(sl));
	if (c->resp)
		grpc_byte_buffer_destroy(c->resp);
	c->resp = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_slice_unref(sl);
	c->code = GRPC_STATUS_OK;
	return GRPC_STATUS_OK;
}

grpc_status_code csi_fail(struct csi_call *c, grpc_status_code code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof c->msg, fmt, ap);
	va_end(ap);
	c->code = code;
	return code;
}

const struct csi_opts *csi_call_opts(const struct csi_call *c)
{
	return c->s->o;
}

const char *csi_call_method(const struct csi_call *c)
{
	return c->method;
}

/* ---- calls ---- */

static const struct csi_method *lookup(const struct csi_server *s, const char *name)
{
	for (const struct csi_method *const *t = s->tables; *t; t++)
		for (const struct csi_method *m = *t; m->name; m++)
			if (strcmp(m->name, name) == 0)
				return m;
	return NULL;
}

static void call_free(struct csi_call *c)
{
	struct csi_server *s = c->s;

	if (c->req)
		grpc_byte_buffer_destroy(c->req);
	if (c->resp)
		grpc_byte_buffer_destroy(c->resp);
	grpc_slice_unref(c->msg_slice);
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->md);
	if (c->call)
		grpc_call_unref(c->call);
	free(c);
	atomic_fetch_sub(&s->live, 1);
}

/* Ask gRPC for the next call (completion-queue thread). */
static void request_call(struct csi_server *s)
{
	struct csi_call *c = calloc(1, sizeof *c);
	grpc_call_error e;

	if (!c) {
		qbd_err(CSI_COMP, "out of memory for a call");
		return;
	}
	c->s = s;
	c->stage = ST_REQUESTED;
	c->msg_slice = grpc_empty_slice();
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->md);
	atomic_fetch_add(&s->live, 1);
	e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq, c);
	if (e != GRPC_CALL_OK) {
		qbd_err(CSI_COMP, "grpc_server_request_call: %s", grpc_call_error_to_string(e));
		call_free(c);
	}
}

/* A call arrived: note its method, receive its message (completion-queue
 * thread). */
static void call_arrived(struct csi_call *c)
{
	grpc_op op = { .op = GRPC_OP_RECV_MESSAGE };
	size_t n = GRPC_SLICE_LENGTH(c->details.method);
	grpc_call_error e;

	if (n >= sizeof c->method)
		n = sizeof c->method - 1;
	memcpy(c->method, GRPC_SLICE_START_PTR(c->details.method), n);
	c->method[n] = 0;
	c->m = lookup(c->s, c->method);
	c->stage = ST_RECEIVING;
	op.data.recv_message.recv_message = &c->req;
	e = grpc_call_start_batch(c->call, &op, 1, c, NULL);
	if (e != GRPC_CALL_OK) {
		qbd_err(CSI_COMP, "%s: receiving the request: %s", c->method,
			grpc_call_error_to_string(e));
		call_free(c);
	}
}

static void enqueue(struct csi_server *s, struct csi_call *c)
{
	pthread_mutex_lock(&s->lock);
	c->next = NULL;
	*s->tail = c;
	s->tail = &c->next;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* Decode the request, run the handler (worker thread). */
static void call_run(struct csi_call *c)
{
	grpc_byte_buffer_reader rd;
	ProtobufCMessage *req;
	grpc_slice all;

	if (!c->m) {
		csi_fail(c, GRPC_STATUS_UNIMPLEMENTED, "%s is not served by %s%s", c->method,
			 CSI_DRIVER_NAME, c->s->o->mode == CSI_MODE_ALL ? "" :
			 c->s->o->mode == CSI_MODE_NODE ? " in node mode" : " in controller mode");
		return;
	}
	if (atomic_load(&c->s->stopping)) {
		csi_fail(c, GRPC_STATUS_UNAVAILABLE, "the driver is stopping");
		return;
	}
	if (!c->req) {
		csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: no request message", c->method);
		return;
	}
	if (!grpc_byte_buffer_reader_init(&rd, c->req)) {
		csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: unreadable request", c->method);
		return;
	}
	all = grpc_byte_buffer_reader_readall(&rd);
	grpc_byte_buffer_reader_destroy(&rd);
	req = protobuf_c_message_unpack(c->m->request, NULL, GRPC_SLICE_LENGTH(all),
					GRPC_SLICE_START_PTR(all));
	grpc_slice_unref(all);
	if (!req) {
		csi_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: the request is not a valid %s",
			 c->method, c->m->request->name);
		return;
	}
	c->code = GRPC_STATUS_UNKNOWN;
	if (c->m->handler(c, req) == GRPC_STATUS_OK && !c->resp)
		csi_fail(c, GRPC_STATUS_INTERNAL, "%s: the handler gave no response", c->method);
	protobuf_c_message_free_unpacked(req, NULL);
}

/* Send the response or the status, receive the close (worker thread);
 * after grpc_call_start_batch the call is the completion queue's. */
static void call_finish(struct csi_call *c)
{
	grpc_op ops[4] = { 0 };
	size_t n = 0;
	grpc_call_error e;

	if (c->code == GRPC_STATUS_OK) {
		qbd_debug(CSI_COMP, "%s: OK", c->method);
	} else {
		qbd_info(CSI_COMP, "%s: status %d: %s", c->method, (int)c->code, c->msg);
		c->msg_slice = grpc_slice_from_copied_string(c->msg);
	}
	ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (c->code == GRPC_STATUS_OK) {
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = c->resp;
	}
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = c->code;
	ops[n++].data.send_status_from_server.status_details =
		c->code == GRPC_STATUS_OK ? NULL : &c->msg_slice;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
	c->stage = ST_FINISHING;
	e = grpc_call_start_batch(c->call, ops, n, c, NULL);
	if (e != GRPC_CALL_OK) {
		/* No completion will come: the call is still ours to free. */
		qbd_err(CSI_COMP, "%s: sending the response: %s", c->method,
			grpc_call_error_to_string(e));
		call_free(c);
	}
}

static void *worker_main(void *arg)
{
	struct csi_server *s = arg;

	for (;;) {
		struct csi_call *c;

		pthread_mutex_lock(&s->lock);
		while (!s->head && !s->quit)
			pthread_cond_wait(&s->cond, &s->lock);
		c = s->head;
		if (!c) {
			pthread_mutex_unlock(&s->lock);
			return NULL;
		}
		s->head = c->next;
		if (!s->head)
			s->tail = &s->head;
		pthread_mutex_unlock(&s->lock);
		call_run(c);
		call_finish(c);
	}
}

/* The completion-queue thread: every event of the server's queue. It
 * ends once the server has shut down and every call is freed. */
static void *cq_main(void *arg)
{
	struct csi_server *s = arg;
	bool shut = false, cq_shut = false;

	for (int i = 0; i < CSI_REQUESTS; i++)
		request_call(s);
	for (;;) {
		gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					       gpr_time_from_millis(200, GPR_TIMESPAN));
		grpc_event ev = grpc_completion_queue_next(s->cq, dl, NULL);

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type == GRPC_OP_COMPLETE && ev.tag == &shutdown_tag) {
			shut = true;
		} else if (ev.type == GRPC_OP_COMPLETE) {
			struct csi_call *c = ev.tag;

			switch (c->stage) {
			case ST_REQUESTED:
				if (!ev.success) {      /* the server shuts down */
					call_free(c);
					break;
				}
				if (!atomic_load(&s->stopping))
					request_call(s);
				call_arrived(c);
				break;
			case ST_RECEIVING:
				if (!ev.success) {      /* cancelled by the client */
					qbd_debug(CSI_COMP, "%s: cancelled before its request",
						  c->method);
					call_free(c);
				} else {
					enqueue(s, c);
				}
				break;
			case ST_FINISHING:
				if (c->cancelled)
					qbd_debug(CSI_COMP, "%s: cancelled", c->method);
				call_free(c);
				break;
			}
		}
		if (shut && !cq_shut && atomic_load(&s->live) == 0) {
			grpc_completion_queue_shutdown(s->cq);
			cq_shut = true;
		}
	}
	return NULL;
}

/* ---- the server ---- */

/* gRPC's own messages as qbd's log lines: its errors as warnings (the
 * driver says what they mean for it), the rest at debug. */
static void grpc_log(gpr_log_func_args *a)
{
	if (a->severity == GPR_LOG_SEVERITY_ERROR)
		qbd_warn("grpc", "%s (%s:%d)", a->message, a->file, a->line);
	else
		qbd_debug("grpc", "%s (%s:%d)", a->message, a->file, a->line);
}

static void server_free(struct csi_server *s)
{
	if (s->server)
		grpc_server_destroy(s->server);
	if (s->cq)
		grpc_completion_queue_destroy(s->cq);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
	grpc_shutdown();
}

int csi_server_start(const struct csi_opts *o, const struct csi_method *const *tables,
		     struct csi_server **out)
{
	struct csi_server *s = calloc(1, sizeof *s);
	grpc_server_credentials *cred;
	char why[160], addr[sizeof s->path + 8];
	int err, port;

	if (!s)
		return -ENOMEM;
	s->o = o;
	s->tables = tables;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->tail = &s->head;
	gpr_set_log_function(grpc_log);
	grpc_init();
	err = csi_endpoint_path(o->endpoint, s->path, sizeof s->path, why, sizeof why);
	if (err) {
		qbd_err(CSI_COMP, "endpoint '%s': %s", o->endpoint, why);
		goto fail;
	}
	err = csi_socket_clear(s->path);
	if (err) {
		if (err != -EEXIST && err != -EADDRINUSE && err != -ENOENT)
			qbd_err(CSI_COMP, "%s: %s", s->path, strerror(-err));
		goto fail;
	}
	s->cq = grpc_completion_queue_create_for_next(NULL);
	s->server = grpc_server_create(NULL, NULL);
	grpc_server_register_completion_queue(s->server, s->cq, NULL);
	snprintf(addr, sizeof addr, "unix:%s", s->path);
	cred = grpc_insecure_server_credentials_create();
	port = grpc_server_add_http2_port(s->server, addr, cred);
	grpc_server_credentials_release(cred);
	if (!port) {
		qbd_err(CSI_COMP, "cannot listen on %s (does its directory exist, may this "
			"process write it?)", addr);
		grpc_server_destroy(s->server);   /* never started */
		s->server = NULL;
		err = -EADDRNOTAVAIL;
		goto fail;
	}
	grpc_server_start(s->server);
	for (; s->nworkers < CSI_WORKERS; s->nworkers++) {
		err = -pthread_create(&s->workers[s->nworkers], NULL, worker_main, s);
		if (err)
			break;
	}
	if (!err) {
		err = -pthread_create(&s->cq_thread, NULL, cq_main, s);
		s->cq_started = !err;
	}
	if (err) {
		qbd_err(CSI_COMP, "pthread_create: %s", strerror(-err));
		csi_server_stop(s);
		return err;
	}
	qbd_info(CSI_COMP, "serving %s on %s (gRPC %s, %d workers)", CSI_DRIVER_NAME, addr,
		 grpc_version_string(), CSI_WORKERS);
	*out = s;
	return 0;
fail:
	server_free(s);
	return err;
}

void csi_server_stop(struct csi_server *s)
{
	if (!s)
		return;
	atomic_store(&s->stopping, true);
	/* No new calls; those in flight are cancelled, and handlers that run
	 * finish (their replies fail); the completion-queue thread ends once
	 * the shutdown is complete and every call freed. */
	grpc_server_shutdown_and_notify(s->server, s->cq, &shutdown_tag);
	grpc_server_cancel_all_calls(s->server);
	if (s->cq_started) {
		pthread_join(s->cq_thread, NULL);
	} else {
		/* Never ran: drain the queue here. */
		grpc_event ev;

		do {
			ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
							NULL);
			if (ev.type == GRPC_OP_COMPLETE && ev.tag == &shutdown_tag)
				grpc_completion_queue_shutdown(s->cq);
		} while (ev.type != GRPC_QUEUE_SHUTDOWN);
	}
	pthread_mutex_lock(&s->lock);
	s->quit = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < s->nworkers; i++)
		pthread_join(s->workers[i], NULL);
	if (unlink(s->path) < 0 && errno != ENOENT)
		qbd_warn(CSI_COMP, "removing %s: %s", s->path, strerror(errno));
	server_free(s);
}
