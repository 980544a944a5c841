/* SPDX-License-Identifier: Apache-2.0 */
/* Metadata internals shared with the unit tests: the endpoint list,
 * base64 and the JSON encodings of node, volume and attachment records. */
#ifndef QBD_META_INTERNAL_H
#define QBD_META_INTERNAL_H

#include <stddef.h>

#include "meta.h"

/* The endpoint list of qbd_meta_open: 0 and *urls (malloc'd array of
 * malloc'd strings, *n of them, trimmed of blanks and trailing slashes;
 * free with meta_endpoints_free), or -EINVAL with the reason in why,
 * -ENOMEM. */
int meta_endpoints_parse(const char *list, char ***urls, size_t *n, char *why,
			 size_t len);
void meta_endpoints_free(char **urls, size_t n);
/* Endpoint i of m (NULL past the end), and the index the next call tries
 * first: the one that answered last, or the one after a failed one. */
const char *meta_endpoint(const struct qbd_meta *m, size_t i);
size_t meta_endpoint_first(const struct qbd_meta *m);

/* Returns malloc'd NUL-terminated text, NULL on no memory. */
char *meta_b64_encode(const void *data, size_t len);
/* Returns malloc'd bytes (NUL-terminated for convenience) and *len, or
 * NULL on bad input. */
char *meta_b64_decode(const char *text, size_t *len);

/* malloc'd JSON text. */
char *meta_node_to_json(const struct qbd_node_info *n);
int meta_node_from_json(const char *json, struct qbd_node_info *n);
char *meta_volume_to_json(const struct qbd_volume_info *v);
int meta_volume_from_json(const char *json, struct qbd_volume_info *v);
/* Attachment record (see meta.h); from_json: -EPROTO unless "volume" is a
 * valid name, "volume_id" a hex id and "epoch" present. */
char *meta_attachment_to_json(const struct qbd_attachment *a);
int meta_attachment_from_json(const char *json, struct qbd_attachment *a);

/* The answer of qbd_meta_volume_scan's transaction (etcd's JSON text)
 * into *out (meta.h); -EPROTO unless every part is there and whole. */
int meta_volume_scan_from_json(const char *json, struct qbd_meta_volume_scan *out);

#endif
