/* SPDX-License-Identifier: Apache-2.0 */
/* Metadata internals shared between the files of replicator/meta and
 * with the unit tests: the gateway's endpoint list, base64 and key-value
 * primitives, and the JSON encodings of node, volume and attachment
 * records. */
#ifndef QBD_META_INTERNAL_H
#define QBD_META_INTERNAL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meta.h"

/* ---- gateway.c: base64, HTTP to etcd's JSON gateway, key-value ---- */

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
/* Whether m's last answer came after a resend to another endpoint. */
bool meta_resent(const struct qbd_meta *m);

/* Returns malloc'd NUL-terminated text, NULL on no memory. */
char *meta_b64_encode(const void *data, size_t len);
/* Returns malloc'd bytes (NUL-terminated for convenience) and *len, or
 * NULL on bad input. */
char *meta_b64_decode(const char *text, size_t *len);

/* POST body to path, trying the endpoints in turn; *resp gets the parsed
 * JSON (caller puts it). resend: whether a request that may have been
 * applied may go to the next endpoint (see gateway.c). */
int meta_post(struct qbd_meta *m, const char *path, json_object *body,
	      bool resend, json_object **resp);
/* 0 if resp has field, else -EPROTO (logged with what). */
int meta_need(json_object *resp, const char *field, const char *what);
/* A JSON string of s base64-encoded; parent's key as a number (0 if
 * absent; etcd sends 64-bit numbers as strings). */
json_object *meta_jstr_b64(const char *s, size_t len);
uint64_t meta_jint(json_object *parent, const char *key);

/* One key/value from a range response. */
struct kv {
	char *key;
	char *value;
	size_t vlen;
	uint64_t mod_revision;
};

void meta_kvs_free(struct kv *kvs, size_t n);
/* Range over key (exact) or prefix. *out malloc'd. */
int meta_range(struct qbd_meta *m, const char *key, bool prefix,
	       struct kv **out, size_t *n);
/* The one value of key: 0, or -ENOENT, or the error. */
int meta_get(struct qbd_meta *m, const char *key, struct kv *out);
/* Transaction ops: put (with lease unless 0) and delete. */
json_object *meta_op_put(const char *key, const char *value, int64_t lease);
json_object *meta_op_delete(const char *key);
/* Compares: key absent, key's mod_revision == rev, key's value == value
 * (false when the key is absent). */
json_object *meta_cmp_absent(const char *key);
json_object *meta_cmp_mod(const char *key, uint64_t rev);
json_object *meta_cmp_value(const char *key, const char *value);
/* Run a transaction (takes ownership of compare and success arrays).
 * Returns 0 if it succeeded, -EAGAIN if a compare failed. resend: see
 * meta_post. */
int meta_txn(struct qbd_meta *m, json_object *compare, json_object *success,
	     bool resend);
/* meta_txn, and on success *revision = the transaction's revision (the
 * mod_revision of every key it put); -EPROTO when etcd leaves it out. */
int meta_txn_rev(struct qbd_meta *m, json_object *compare, json_object *success,
		 bool resend, uint64_t *revision);
/* Put key = value (with lease unless 0). */
int meta_put(struct qbd_meta *m, const char *key, const char *value,
	     int64_t lease);

/* ---- node.c: cluster id, leases, node records ---- */

/* malloc'd JSON text. */
char *meta_node_to_json(const struct qbd_node_info *n);
int meta_node_from_json(const char *json, struct qbd_node_info *n);
/* Copy o's string member key into dst; -EPROTO if it is not a string. */
int meta_jcopy(json_object *o, const char *key, char *dst, size_t len);

/* ---- volume.c: volumes, the reclaim scan, clean marks, epochs ---- */

/* The record's JSON (mod_revision is not in it). from_json: -EPROTO
 * for a malformed record, "change" included. */
char *meta_volume_to_json(const struct qbd_volume_info *v);
int meta_volume_from_json(const char *json, struct qbd_volume_info *v);
/* The record's "change" member, out of and into v->change. */
json_object *meta_change_to_jobj(const struct qbd_volume_change *c);
int meta_change_from_jobj(json_object *o, struct qbd_volume_info *v);
/* The answer of qbd_meta_volume_scan's transaction (etcd's JSON text)
 * into *out (meta.h); -EPROTO unless every part is there and whole. */
int meta_volume_scan_from_json(const char *json, struct qbd_meta_volume_scan *out);
/* An epoch's decimal text (key names it in the log); -EPROTO if it is
 * not a number. */
int meta_parse_epoch(const char *key, const char *text, uint64_t *out);

/* ---- change.c: change requests, the words of a change ---- */

/* A change request's JSON (meta.h; volume_id and mod_revision are not in
 * it). from_json: -EPROTO unless kind is "replace", from an id, to an id
 * other than from or "", reason a known word; c->volume_id = volume_id. */
char *meta_change_request_to_json(const struct qbd_change_request *c);
int meta_change_request_from_json(const char *json, uint64_t volume_id,
				  struct qbd_change_request *c);

/* ---- attachment.c: attachments and the writer's status ---- */

/* Attachment record (see meta.h); from_json: -EPROTO unless "volume" is a
 * valid name, "volume_id" a hex id and "epoch" present. */
char *meta_attachment_to_json(const struct qbd_attachment *a);
int meta_attachment_from_json(const char *json, struct qbd_attachment *a);

#endif
