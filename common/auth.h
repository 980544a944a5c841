/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cluster secret and the challenge-response that proves it on every
 * link between qbd processes (docs/protocol.md, "Authentication").
 * HMAC-SHA-256 from libsodium; the secret never crosses the wire.
 *
 *   requester -> HELLO  nonce Nc
 *   server    -> HELLO  nonce Ns, mac HMAC(K, "qbd server" | cluster | Nc | Ns)
 *   requester -> AUTH   mac HMAC(K, "qbd client" | cluster | Ns | Nc)
 *
 * Each side proves it holds K over a nonce the other chose; the two
 * labels keep one side's answer from serving as the other's.
 */
#ifndef QBD_AUTH_H
#define QBD_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QBD_AUTH_NONCE 32
#define QBD_AUTH_MAC 32
#define QBD_AUTH_SECRET_MIN 16   /* bytes of secret, at least */
#define QBD_AUTH_SECRET_MAX 1024
#define QBD_AUTH_SECRET_ENV "QBD_SECRET_FILE"

struct qbd_secret {
	size_t len;              /* 0: no secret (links not authenticated) */
	uint8_t key[QBD_AUTH_SECRET_MAX];
};

/*
 * Read the secret from path: a regular file of mode 0600 or stricter
 * (else -EPERM: a secret others can read is not one), holding at least
 * QBD_AUTH_SECRET_MIN bytes (a trailing newline is not part of it).
 * 0, or -errno with the reason in err.
 */
int qbd_secret_load(const char *path, struct qbd_secret *s, char *err, size_t errlen);

/* Write a new random secret (32 bytes, hex) to path, created 0600;
 * -EEXIST if the file exists. */
int qbd_secret_create(const char *path);

void qbd_secret_clear(struct qbd_secret *s);

/* A fresh random nonce. */
void qbd_auth_nonce(uint8_t nonce[QBD_AUTH_NONCE]);

enum qbd_auth_role { QBD_AUTH_SERVER, QBD_AUTH_CLIENT };

/*
 * The proof of role over (mine, theirs): the server computes
 * mac(SERVER, Nc, Ns), the requester mac(CLIENT, Ns, Nc): first the nonce
 * the other side chose.
 */
void qbd_auth_mac(const struct qbd_secret *s, enum qbd_auth_role role, uint64_t cluster_id,
		  const uint8_t first[QBD_AUTH_NONCE], const uint8_t second[QBD_AUTH_NONCE],
		  uint8_t out[QBD_AUTH_MAC]);

/* Does mac (len bytes, as received) prove role? Constant time. */
bool qbd_auth_check(const struct qbd_secret *s, enum qbd_auth_role role,
		    uint64_t cluster_id, const uint8_t first[QBD_AUTH_NONCE],
		    const uint8_t second[QBD_AUTH_NONCE], const uint8_t *mac, size_t len);

#endif
