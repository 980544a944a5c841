/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The driver's socket: the path of an --endpoint, and making way for it
 * at start.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "internal.h"

int csi_endpoint_path(const char *endpoint, char *path, size_t len, char *why, size_t wlen)
{
	const char *p = endpoint;
	size_t max = sizeof(((struct sockaddr_un *)0)->sun_path);

	if (strncmp(p, "unix://", 7) == 0) {
		p += 7;
		if (*p != '/') {
			snprintf(why, wlen, "want unix:///ABSOLUTE/PATH (or unix:PATH, or a path)");
			return -EINVAL;
		}
	} else if (strncmp(p, "unix:", 5) == 0) {
		p += 5;
	} else if (strstr(p, "://") || strncmp(p, "tcp:", 4) == 0 ||
		   strncmp(p, "dns:", 4) == 0) {
		snprintf(why, wlen, "only unix sockets are served: want unix:///PATH or a path");
		return -EINVAL;
	}
	if (!*p) {
		snprintf(why, wlen, "no socket path");
		return -EINVAL;
	}
	if (strlen(p) >= max || strlen(p) >= len) {
		snprintf(why, wlen, "socket path longer than %zu bytes", max - 1);
		return -EINVAL;
	}
	snprintf(path, len, "%s", p);
	return 0;
}

int csi_socket_clear(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[sizeof sa.sun_path], *slash;
	struct stat st;
	int fd, r;

	/* Its directory first, for a clearer word than bind's. */
	snprintf(dir, sizeof dir, "%s", path);
	slash = strrchr(dir, '/');
	if (slash) {
		slash[slash == dir] = 0;    /* "/x.sock": the directory is "/" */
		if (stat(dir, &st) < 0) {
			qbd_err(CSI_COMP, "the socket's directory %s: %s", dir, strerror(errno));
			return -ENOENT;
		}
		if (!S_ISDIR(st.st_mode)) {
			qbd_err(CSI_COMP, "the socket's directory %s is not a directory", dir);
			return -ENOENT;
		}
	}
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		qbd_err(CSI_COMP, "%s exists and is not a socket", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	close(fd);
	if (r == 0) {
		qbd_err(CSI_COMP, "another server listens on %s", path);
		return -EADDRINUSE;
	}
	qbd_info(CSI_COMP, "removing the stale socket %s", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}
