/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cluster secret and HMAC challenge-response (auth.h). libsodium gives
 * HMAC-SHA-256, random nonces and constant-time comparison: nothing here
 * is cryptography of our own.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "util.h"

static int sodium_ready(void)
{
	/* Thread-safe, and a no-op after the first call. */
	return sodium_init() < 0 ? -ENOSYS : 0;
}

void qbd_secret_clear(struct qbd_secret *s)
{
	sodium_memzero(s, sizeof *s);
}

int qbd_secret_load(const char *path, struct qbd_secret *s, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd, rc;

	qbd_secret_clear(s);
	if (sodium_ready() < 0) {
		snprintf(err, errlen, "libsodium failed to initialise");
		return -ENOSYS;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "secret file %s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "secret file %s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen, "secret file %s has mode %04o: it must be 0600 (or "
			 "stricter), readable by its owner only; chmod 600 %s",
			 path, (unsigned)(st.st_mode & 07777), path);
		close(fd);
		return -EPERM;
	}
	n = read(fd, s->key, sizeof s->key);
	rc = n < 0 ? -errno : 0;
	close(fd);
	if (rc < 0) {
		snprintf(err, errlen, "secret file %s: %s", path, strerror(-rc));
		qbd_secret_clear(s);
		return rc;
	}
	if ((size_t)n == sizeof s->key) {
		snprintf(err, errlen, "secret file %s: longer than %u bytes", path,
			 QBD_AUTH_SECRET_MAX - 1);
		qbd_secret_clear(s);
		return -EINVAL;
	}
	while (n > 0 && (s->key[n - 1] == '\n' || s->key[n - 1] == '\r'))
		n--;
	if (n < QBD_AUTH_SECRET_MIN) {
		snprintf(err, errlen, "secret file %s: %zd bytes; a secret has %d at least "
			 "(qbd secret create makes one)", path, n, QBD_AUTH_SECRET_MIN);
		qbd_secret_clear(s);
		return -EINVAL;
	}
	s->len = (size_t)n;
	return 0;
}

int qbd_secret_create(const char *path)
{
	uint8_t raw[32];
	char hex[2 * sizeof raw + 2];
	int fd, rc;

	if (sodium_ready() < 0)
		return -ENOSYS;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	randombytes_buf(raw, sizeof raw);
	sodium_bin2hex(hex, sizeof hex - 1, raw, sizeof raw);
	strcat(hex, "\n");
	rc = qbd_write_full(fd, hex, strlen(hex));
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	sodium_memzero(raw, sizeof raw);
	sodium_memzero(hex, sizeof hex);
	if (rc < 0)
		unlink(path);
	return rc;
}

void qbd_auth_nonce(uint8_t nonce[QBD_AUTH_NONCE])
{
	if (sodium_ready() < 0) {
		/* Not reached in practice: sodium_init fails only without a
		 * random source, and then getrandom would too. */
		for (int i = 0; i < QBD_AUTH_NONCE; i += 8) {
			uint64_t r = qbd_random_u64();
			memcpy(nonce + i, &r, 8);
		}
		return;
	}
	randombytes_buf(nonce, QBD_AUTH_NONCE);
}

void qbd_auth_mac(const struct qbd_secret *s, enum qbd_auth_role role, uint64_t cluster_id,
		  const uint8_t first[QBD_AUTH_NONCE], const uint8_t second[QBD_AUTH_NONCE],
		  uint8_t out[QBD_AUTH_MAC])
{
	static const char label_server[] = "qbd server", label_client[] = "qbd client";
	const char *label = role == QBD_AUTH_SERVER ? label_server : label_client;
	crypto_auth_hmacsha256_state st;
	uint8_t cid[8];

	for (int i = 0; i < 8; i++)
		cid[i] = (uint8_t)(cluster_id >> (8 * i));
	crypto_auth_hmacsha256_init(&st, s->key, s->len);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label) + 1);
	crypto_auth_hmacsha256_update(&st, cid, sizeof cid);
	crypto_auth_hmacsha256_update(&st, first, QBD_AUTH_NONCE);
	crypto_auth_hmacsha256_update(&st, second, QBD_AUTH_NONCE);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof st);
}

bool qbd_auth_check(const struct qbd_secret *s, enum qbd_auth_role role,
		    uint64_t cluster_id, const uint8_t first[QBD_AUTH_NONCE],
		    const uint8_t second[QBD_AUTH_NONCE], const uint8_t *mac, size_t len)
{
	uint8_t want[QBD_AUTH_MAC];
	bool ok;

	if (!s->len || !mac || len != QBD_AUTH_MAC)
		return false;
	qbd_auth_mac(s, role, cluster_id, first, second, want);
	ok = crypto_verify_32(want, mac) == 0;
	sodium_memzero(want, sizeof want);
	return ok;
}
