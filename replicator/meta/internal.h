/* SPDX-License-Identifier: Apache-2.0 */
/* Metadata internals shared with the unit tests: base64 and the JSON
 * encodings of node, volume and attachment records. */
#ifndef QBD_META_INTERNAL_H
#define QBD_META_INTERNAL_H

#include <stddef.h>

#include "meta.h"

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

#endif
