/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kernel's NBD driver (/dev/nbdN) over its generic netlink family
 * "nbd" (libnl-genl-3): connect a device to sockets served by qbd-nbd,
 * hand it new sockets when one died (reconfigure), disconnect it; and the
 * device's state as sysfs shows it. Every call blocks briefly (one netlink
 * round trip, or a sysfs read) and is meant for start-up, the CLI, or the
 * rare reconnect.
 *
 * Errors are -errno as the kernel gave them, plus:
 *   -ENOPROTOOPT  the nbd module is not loaded and could not be loaded
 *   -EBUSY        the device is connected already
 */
#ifndef QBD_NBD_KERNEL_H
#define QBD_NBD_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The backend identifier of a qbd device: "qbd:<volume id hex16>:<name>".
 * The kernel keeps it with the device (sysfs "backend"); reconnects and
 * detach compare it, so a daemon can never serve another volume's device. */
#define NBD_KERNEL_BACKEND_PREFIX "qbd:"

struct nbd_kernel_cfg {
	int index;                 /* /dev/nbdN, or -1: the kernel picks a free one */
	uint64_t size;             /* bytes */
	uint32_t block_size;       /* logical block size: 512..4096 */
	uint64_t server_flags;     /* NBD transmission flags */
	unsigned timeout_s;        /* a request unanswered this long is sent
				    * again on a live socket (0 = never) */
	unsigned dead_conn_timeout_s; /* how long I/O waits for a new socket
				       * when every one died (daemon restart) */
	const char *backend;       /* backend identifier (required) */
};

/* Load the nbd module if its netlink family is missing. 0, or -ENOPROTOOPT
 * with the reason logged. */
int nbd_kernel_probe(void);

/* NBD_CMD_CONNECT with fds (the kernel's ends; it takes its own
 * references, the caller still owns and closes them). *index_out = the
 * device's index. */
int nbd_kernel_connect(const struct nbd_kernel_cfg *cfg, const int *fds,
		       unsigned n_fds, int *index_out);

/* NBD_CMD_RECONFIGURE of a connected device: replace dead sockets with fds
 * (caller-owned as above) and set the timeouts again. The backend must
 * match the device's. */
int nbd_kernel_reconfigure(const struct nbd_kernel_cfg *cfg, const int *fds,
			   unsigned n_fds);

/* NBD_CMD_RECONFIGURE of a connected device with cfg->size only: the
 * device grows (or shrinks) to it at once, mounted or not; its sockets
 * and timeouts stay. Needs Linux 5.3 or later: -EOPNOTSUPP when the
 * kernel kept its old size. cfg->index and cfg->backend as connected. */
int nbd_kernel_resize(const struct nbd_kernel_cfg *cfg);

/* NBD_CMD_DISCONNECT: the kernel sends NBD_CMD_DISC on every socket and
 * shuts them down. */
int nbd_kernel_disconnect(int index);

/* What sysfs shows of /sys/block/nbdN. */
struct nbd_kernel_dev {
	int index;
	bool exists;               /* the device node exists */
	bool connected;            /* sockets configured (sysfs pid present) */
	int pid;                   /* the process that connected it, or 0 */
	uint64_t size;             /* bytes */
	char backend[256];         /* "" when none */
};

/* 0, or -ENOENT if no such device. */
int nbd_kernel_dev_get(int index, struct nbd_kernel_dev *out);

/* Parse "/dev/nbdN", "nbdN" or "N". 0 or -EINVAL. */
int nbd_kernel_parse_device(const char *s, int *index);

/* Build the backend identifier into buf. */
void nbd_kernel_backend(char *buf, unsigned len, uint64_t volume_id,
			const char *name);

/* Split a backend identifier: false if it is not a qbd one. name gets at
 * most name_len - 1 bytes. */
bool nbd_kernel_backend_parse(const char *backend, uint64_t *volume_id,
			      char *name, unsigned name_len);

/* Call fn for every /sys/block/nbd* device (any order); stops early and
 * returns fn's value when it is non-zero. */
int nbd_kernel_for_each_dev(int (*fn)(const struct nbd_kernel_dev *d, void *arg),
			    void *arg);

#endif

/* ---- kserve.c: qbd-nbd behind /dev/nbdN ---- */

struct qbd_volume;

struct nbd_kernel_serve_opts {
	const char *volume;        /* the volume's name */
	const char *socket_path;   /* also serve on this unix socket, or NULL */
	int index;                 /* /dev/nbdN, or -1 for any free one */
	bool reattach;             /* the device is already bound to this
				    * volume: hand it new sockets */
	unsigned connections;      /* sockets, 1..16 */
	unsigned timeout_s;
	unsigned dead_conn_timeout_s;
	int ready_fd;              /* -1, or receives "OK /dev/nbdN\n" once
				    * connected or "ERR <reason>\n"; closed */
	const char *run_dir;       /* where nbdN.json is kept while serving */
	const char *metrics;       /* nbd_serve_opts.metrics */
	const char *zone;          /* nbd_serve_opts.zone */
};

/*
 * Serve vol (caller-owned) to the kernel until the device is disconnected
 * (qbd detach: NBD_CMD_DISC on the sockets) or SIGTERM (the device then
 * stays bound, its I/O waiting dead_conn_timeout_s for a restarted daemon
 * to reattach). A socket the kernel gave up on is replaced at once by
 * NBD_CMD_RECONFIGURE. Locks the process's memory and marks it an I/O
 * flusher first, so that memory pressure cannot deadlock the device.
 * 0 or -errno.
 */
int nbd_kernel_serve(struct qbd_volume *vol, const struct nbd_kernel_serve_opts *o);

/* The runtime record of a served device: "<run_dir>/nbdN.json". */
struct nbd_kernel_runtime {
	char volume[128];
	uint64_t volume_id;
	int pid;
	unsigned connections;
	uint64_t since;            /* unix time */
};
void nbd_kernel_runtime_path(char *buf, size_t len, const char *run_dir, int index);
/* 0, or -ENOENT when there is none. */
int nbd_kernel_runtime_get(const char *run_dir, int index, struct nbd_kernel_runtime *out);
/* Is pid a running qbd-nbd? */
bool nbd_kernel_daemon_alive(int pid);
