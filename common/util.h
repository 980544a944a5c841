/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers shared by every qbd module: time, sizes, addresses,
 * random ids, full reads and writes. */
#ifndef QBD_UTIL_H
#define QBD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define QBD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QBD_MAX(a, b) ((a) > (b) ? (a) : (b))
#define QBD_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define QBD_ALIGN_UP(x, a) (((x) + (a) - 1) / (a) * (a))
#define QBD_ALIGN_DOWN(x, a) ((x) / (a) * (a))
#define QBD_CONTAINER_OF(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

/* Monotonic clock in nanoseconds. */
uint64_t qbd_now_ns(void);

/* Parse "4096", "64K", "1M", "1G", "2T" (powers of 1024, optional "iB"/"B").
 * Returns 0 and stores the value, or -EINVAL / -ERANGE. */
int qbd_parse_size(const char *s, uint64_t *out);

/* Format bytes as "1.0 GiB" into buf. Returns buf. */
char *qbd_format_size(uint64_t bytes, char *buf, size_t len);

/* Split "HOST:PORT" (IPv4 or name, or "[v6]:port") into host and port.
 * Returns 0 or -EINVAL. */
int qbd_parse_hostport(const char *s, char *host, size_t hostlen,
		       uint16_t *port);

/* A non-zero random 64-bit number from getrandom(2). */
uint64_t qbd_random_u64(void);

/* write/read the whole buffer at offset, retrying short transfers and EINTR.
 * A read that meets end of file fails with -EIO. Return 0 or -errno. */
int qbd_pwrite_full(int fd, const void *buf, size_t len, off_t off);
int qbd_pread_full(int fd, void *buf, size_t len, off_t off);
/* write the whole buffer to a stream fd (pipes, sockets). 0 or -errno. */
int qbd_write_full(int fd, const void *buf, size_t len);

/* Render a 64-bit id as 16 lowercase hex digits (buf >= 17 bytes). */
char *qbd_id_str(uint64_t id, char *buf);
/* Parse 1-16 hex digits. 0 or -EINVAL. */
int qbd_id_parse(const char *s, uint64_t *out);

/* Allocation that cannot fail: out of memory, the message goes to stderr
 * and the process aborts. For control-plane programs whose state is
 * rebuilt from what they observe after a restart (qbd-operator); never
 * on a data path, which answers -ENOMEM and goes on. */
void *qbd_xrealloc(void *p, size_t n);
void *qbd_xcalloc(size_t n, size_t size);
char *qbd_xstrdup(const char *s);

#endif
