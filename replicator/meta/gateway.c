/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd metadata in etcd through etcd's v3 JSON gateway: libcurl for HTTP,
 * json-c for JSON. Keys and values travel base64-encoded. See meta.h for
 * the key layout and error codes.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

/* A call's time for all its attempts together (one endpoint after
 * another), and the part of it one connection attempt may take. */
#define META_CALL_MS 5000
#define META_CONNECT_MS 3000

struct qbd_meta {
	CURL *curl;
	char **urls;
	size_t nurls;
	size_t cur;                 /* the endpoint tried first */
	bool resent;                /* the last answer came after a resend */
	char *cacert, *cert, *key;  /* client TLS ($QBD_ETCD_CACERT, _CERT, _KEY) */
};

/* ---- base64 ---- */

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *meta_b64_encode(const void *data, size_t len)
{
	const uint8_t *p = data;
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	size_t o = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		out[o++] = b64chars[(v >> 18) & 63];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64chars[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

static int b64val(char c)
{
	const char *p = strchr(b64chars, c);
	return (c && p) ? (int)(p - b64chars) : -1;
}

char *meta_b64_decode(const char *text, size_t *len)
{
	size_t n = strlen(text);
	char *out;
	size_t o = 0;

	if (n % 4)
		return NULL;
	out = malloc(n / 4 * 3 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 4) {
		int a = b64val(text[i]), b = b64val(text[i + 1]);
		int c = text[i + 2] == '=' ? 0 : b64val(text[i + 2]);
		int d = text[i + 3] == '=' ? 0 : b64val(text[i + 3]);
		if (a < 0 || b < 0 || c < 0 || d < 0 ||
		    (text[i + 2] == '=' && text[i + 3] != '=') ||
		    ((text[i + 2] == '=' || text[i + 3] == '=') && i + 4 != n)) {
			free(out);
			return NULL;
		}
		uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
		out[o++] = (char)(v >> 16);
		if (text[i + 2] != '=')
			out[o++] = (char)(v >> 8);
		if (text[i + 3] != '=')
			out[o++] = (char)v;
	}
	out[o] = '\0';
	*len = o;
	return out;
}

/* ---- HTTP ---- */

static pthread_once_t meta_once = PTHREAD_ONCE_INIT;
static void meta_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct buf {
	char *p;
	size_t n;
};

static size_t meta_write_cb(char *data, size_t sz, size_t nm, void *user)
{
	struct buf *b = user;
	size_t add = sz * nm;
	char *np;

	if (b->n + add > (64u << 20))
		return 0;
	np = realloc(b->p, b->n + add + 1);
	if (!np)
		return 0;
	memcpy(np + b->n, data, add);
	b->p = np;
	b->n += add;
	b->p[b->n] = '\0';
	return add;
}

void meta_endpoints_free(char **urls, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(urls[i]);
	free(urls);
}

int meta_endpoints_parse(const char *list, char ***out, size_t *n, char *why,
			 size_t len)
{
	char **urls = NULL;
	size_t cnt = 0;
	const char *p = list;
	int r = -EINVAL;

	*out = NULL;
	*n = 0;
	if (!list) {
		snprintf(why, len, "no endpoint");
		return -EINVAL;
	}
	for (;;) {
		const char *end = strchr(p, ','), *b = p, *e;
		size_t l, host;

		if (!end)
			end = p + strlen(p);
		e = end;
		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '/'))
			e--;
		l = (size_t)(e - b);
		if (l == 0) {
			snprintf(why, len, "endpoint %zu is empty (want URL[,URL...])", cnt + 1);
			goto fail;
		}
		/* a scheme and at least one character of host */
		host = l > 7 && strncmp(b, "http://", 7) == 0 ? 7 :
		       l > 8 && strncmp(b, "https://", 8) == 0 ? 8 : 0;
		if (!host || memchr(b, ' ', l) || memchr(b, '\t', l)) {
			snprintf(why, len, "endpoint %zu '%.*s' is not an http:// or https:// URL",
				 cnt + 1, (int)(l > 200 ? 200 : l), b);
			goto fail;
		}
		if (cnt == QBD_META_MAX_ENDPOINTS) {
			snprintf(why, len, "more than %d endpoints", QBD_META_MAX_ENDPOINTS);
			goto fail;
		}
		for (size_t i = 0; i < cnt; i++)
			if (strlen(urls[i]) == l && strncmp(urls[i], b, l) == 0) {
				snprintf(why, len, "endpoint %zu '%s' is listed twice", cnt + 1,
					 urls[i]);
				goto fail;
			}
		char **nu = realloc(urls, (cnt + 1) * sizeof *nu);
		if (!nu || !(nu[cnt] = strndup(b, l))) {
			if (nu)
				urls = nu;
			snprintf(why, len, "out of memory");
			r = -ENOMEM;
			goto fail;
		}
		urls = nu;
		cnt++;
		if (!*end)
			break;
		p = end + 1;
	}
	*out = urls;
	*n = cnt;
	return 0;
fail:
	meta_endpoints_free(urls, cnt);
	return r;
}

int qbd_meta_endpoints_check(const char *list, char *why, size_t len)
{
	char **urls;
	size_t n;
	int r = meta_endpoints_parse(list, &urls, &n, why, len);

	if (r < 0)
		return r;
	meta_endpoints_free(urls, n);
	return (int)n;
}

int qbd_meta_open(const char *url, struct qbd_meta **out)
{
	struct qbd_meta *m;
	char why[256];
	int r;

	*out = NULL;
	pthread_once(&meta_once, meta_global_init);
	m = calloc(1, sizeof *m);
	if (!m)
		return -ENOMEM;
	r = meta_endpoints_parse(url, &m->urls, &m->nurls, why, sizeof why);
	if (r < 0) {
		qbd_err("meta", "etcd endpoints '%.200s': %s", url ? url : "", why);
		goto fail;
	}
	r = -ENOMEM;
	if (!(m->curl = curl_easy_init()))
		goto fail;
	{
		const char *ca = getenv("QBD_ETCD_CACERT"), *ce = getenv("QBD_ETCD_CERT");
		const char *k = getenv("QBD_ETCD_KEY");

		if ((ca && *ca && !(m->cacert = strdup(ca))) ||
		    (ce && *ce && !(m->cert = strdup(ce))) || (k && *k && !(m->key = strdup(k))))
			goto fail;
	}
	*out = m;
	return 0;
fail:
	qbd_meta_close(m);
	return r;
}

void qbd_meta_close(struct qbd_meta *m)
{
	if (!m)
		return;
	if (m->curl)
		curl_easy_cleanup(m->curl);
	meta_endpoints_free(m->urls, m->nurls);
	free(m->cacert);
	free(m->cert);
	free(m->key);
	free(m);
}

const char *meta_endpoint(const struct qbd_meta *m, size_t i)
{
	return i < m->nurls ? m->urls[i] : NULL;
}

size_t meta_endpoint_first(const struct qbd_meta *m)
{
	return m->cur;
}

bool meta_resent(const struct qbd_meta *m)
{
	return m->resent;
}

/*
 * What became of one attempt. NOT_SENT: the request cannot have reached
 * etcd (no connection, TLS handshake failed, or a member that says it
 * has no leader, which it checks before it handles a request): the next
 * endpoint may always have it. UNKNOWN: it may have been applied (sent,
 * then the answer was lost or timed out, or etcd answered that it could
 * not finish in time): resent only where resending is harmless.
 */
enum meta_attempt {
	META_ANSWERED = 1,
	META_NOT_SENT,
	META_UNKNOWN,
};

/* One HTTP POST of text to url within ms milliseconds. *b gets the
 * body, *code the HTTP status; *err the errno for a failure. */
static enum meta_attempt meta_attempt_once(struct qbd_meta *m, const char *url,
					   const char *text, long ms, struct buf *b,
					   long *code, int *err, char *what, size_t wlen)
{
	struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
	curl_off_t pre = 0;
	CURLcode cr;

	*code = 0;
	curl_easy_reset(m->curl);
	curl_easy_setopt(m->curl, CURLOPT_URL, url);
	curl_easy_setopt(m->curl, CURLOPT_POSTFIELDS, text);
	curl_easy_setopt(m->curl, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(m->curl, CURLOPT_WRITEFUNCTION, meta_write_cb);
	curl_easy_setopt(m->curl, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(m->curl, CURLOPT_CONNECTTIMEOUT_MS, ms < META_CONNECT_MS ? ms :
			 (long)META_CONNECT_MS);
	curl_easy_setopt(m->curl, CURLOPT_TIMEOUT_MS, ms);
	curl_easy_setopt(m->curl, CURLOPT_NOSIGNAL, 1L);
	/* etcd client TLS (https:// endpoints): the same for every one */
	if (m->cacert)
		curl_easy_setopt(m->curl, CURLOPT_CAINFO, m->cacert);
	if (m->cert)
		curl_easy_setopt(m->curl, CURLOPT_SSLCERT, m->cert);
	if (m->key)
		curl_easy_setopt(m->curl, CURLOPT_SSLKEY, m->key);
	cr = curl_easy_perform(m->curl);
	curl_slist_free_all(hdr);
	if (cr != CURLE_OK) {
		*err = cr == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT :
		       cr == CURLE_COULDNT_CONNECT ? -ECONNREFUSED : -EHOSTUNREACH;
		snprintf(what, wlen, "%s", curl_easy_strerror(cr));
		/* no byte of the request went out before the transfer began */
		curl_easy_getinfo(m->curl, CURLINFO_PRETRANSFER_TIME_T, &pre);
		return cr == CURLE_COULDNT_CONNECT || cr == CURLE_COULDNT_RESOLVE_HOST ||
		       cr == CURLE_SSL_CONNECT_ERROR || pre == 0 ? META_NOT_SENT : META_UNKNOWN;
	}
	curl_easy_getinfo(m->curl, CURLINFO_RESPONSE_CODE, code);
	if (*code == 503 || *code == 504) {
		/* etcd's gateway: gRPC Unavailable / DeadlineExceeded, e.g.
		 * "etcdserver: no leader", "etcdserver: request timed out" */
		*err = -ETIMEDOUT;
		snprintf(what, wlen, "HTTP %ld: %.160s", *code, b->p ? b->p : "");
		return b->p && strstr(b->p, "etcdserver: no leader") ? META_NOT_SENT : META_UNKNOWN;
	}
	return META_ANSWERED;
}

/*
 * POST body to path; *resp gets the parsed JSON (caller puts it). Tries
 * the endpoints in turn, the one that answered last first, within
 * META_CALL_MS for all attempts (one that hangs may take half of what is
 * left). An endpoint that cannot have got the request hands it on to the
 * next; one that may have applied it hands it on only if resend
 * (docs/design.md, "Metadata in etcd": which calls may be resent and
 * why). m->resent tells the caller that the answer came after such a
 * resend. Every endpoint failing is logged with what each said.
 */
int meta_post(struct qbd_meta *m, const char *path, json_object *body,
	      bool resend, json_object **resp)
{
	const char *text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
	uint64_t deadline = qbd_now_ns() + META_CALL_MS * 1000000ull;
	char tried[1024] = "";
	size_t tl = 0, attempt, first = m->cur;
	bool unknown = false;
	int err = -ECONNREFUSED;

	*resp = NULL;
	for (attempt = 0; attempt < m->nurls; attempt++) {
		size_t i = (first + attempt) % m->nurls;
		uint64_t now = qbd_now_ns();
		char url[512], what[200];
		struct buf b = { 0 };
		enum meta_attempt a;
		long code, ms;

		if (now + 10 * 1000000ull >= deadline)
			break;
		/* An endpoint that hangs may take half of what is left, so
		 * that the others still get their turn within the budget. */
		ms = (long)((deadline - now) / 1000000);
		if (attempt + 1 < m->nurls)
			ms /= 2;
		snprintf(url, sizeof url, "%s%s", m->urls[i], path);
		a = meta_attempt_once(m, url, text, ms, &b, &code, &err, what, sizeof what);
		if (a != META_ANSWERED) {
			qbd_debug("meta", "%s: %s", url, what);
			free(b.p);
			if (tl < sizeof tried)
				tl += (size_t)snprintf(tried + tl, sizeof tried - tl, "%s%s (%s)",
						       tl ? ", " : "", m->urls[i], what);
			/* the next call starts past an endpoint that failed */
			if (m->cur == i)
				m->cur = (i + 1) % m->nurls;
			if (a == META_UNKNOWN) {
				unknown = true;
				if (!resend) {
					qbd_warn("meta", "%s: %s: %s; not resent to another endpoint "
						 "(etcd may have applied it)", path, m->urls[i], what);
					return err;
				}
			}
			continue;
		}
		m->cur = i;
		m->resent = unknown;
		*resp = b.p ? json_tokener_parse(b.p) : NULL;
		if (code != 200 || !*resp) {
			qbd_warn("meta", "%s: HTTP %ld: %.200s", url, code, b.p ? b.p : "");
			/* etcd says "requested lease not found" for expired leases */
			err = code == 404 || (b.p && strstr(b.p, "not found")) ? -ENOENT : -EPROTO;
			free(b.p);
			if (*resp) {
				json_object_put(*resp);
				*resp = NULL;
			}
			return err;
		}
		free(b.p);
		return 0;
	}
	if (attempt < m->nurls && tl < sizeof tried)
		snprintf(tried + tl, sizeof tried - tl, "%snot tried in the call's %d s: %zu more",
			 tl ? "; " : "", META_CALL_MS / 1000, m->nurls - attempt);
	qbd_warn("meta", "%s: no etcd endpoint answered: %s", path, tried);
	return err;
}

/* Every etcd answer carries a "header"; its absence means a proxy or a
 * different server answered. */
int meta_need(json_object *resp, const char *field, const char *what)
{
	if (json_object_object_get_ex(resp, field, NULL))
		return 0;
	qbd_err("meta", "%s: etcd answer lacks \"%s\"", what, field);
	return -EPROTO;
}

json_object *meta_jstr_b64(const char *s, size_t len)
{
	char *e = meta_b64_encode(s, len);
	json_object *o = json_object_new_string(e ? e : "");
	free(e);
	return o;
}

uint64_t meta_jint(json_object *parent, const char *key)
{
	json_object *o;

	if (!json_object_object_get_ex(parent, key, &o))
		return 0;
	if (json_object_is_type(o, json_type_string))
		return strtoull(json_object_get_string(o), NULL, 10);
	return (uint64_t)json_object_get_int64(o);
}

void meta_kvs_free(struct kv *kvs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(kvs[i].key);
		free(kvs[i].value);
	}
	free(kvs);
}

/* Range over key (exact) or prefix. *out malloc'd. */
int meta_range(struct qbd_meta *m, const char *key, bool prefix,
	       struct kv **out, size_t *n)
{
	json_object *req = json_object_new_object(), *resp, *arr;
	size_t kl = strlen(key);
	int r;

	*out = NULL;
	*n = 0;
	json_object_object_add(req, "key", meta_jstr_b64(key, kl));
	if (prefix) {
		char *end = strdup(key);
		if (!end) {
			json_object_put(req);
			return -ENOMEM;
		}
		end[kl - 1]++;
		json_object_object_add(req, "range_end", meta_jstr_b64(end, kl));
		free(end);
	}
	r = meta_post(m, "/v3/kv/range", req, true, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	if ((r = meta_need(resp, "header", "range")) < 0) {
		json_object_put(resp);
		return r;
	}
	if (json_object_object_get_ex(resp, "kvs", &arr) &&
	    json_object_is_type(arr, json_type_array)) {
		size_t len = json_object_array_length(arr);
		struct kv *kvs = calloc(len ? len : 1, sizeof *kvs);
		if (!kvs) {
			json_object_put(resp);
			return -ENOMEM;
		}
		for (size_t i = 0; i < len; i++) {
			json_object *e = json_object_array_get_idx(arr, i), *k, *v;
			size_t dummy;
			kvs[i].mod_revision = meta_jint(e, "mod_revision");
			if (json_object_object_get_ex(e, "key", &k))
				kvs[i].key = meta_b64_decode(json_object_get_string(k), &dummy);
			if (json_object_object_get_ex(e, "value", &v))
				kvs[i].value = meta_b64_decode(json_object_get_string(v), &kvs[i].vlen);
			else
				kvs[i].value = strdup("");
			if (!kvs[i].key || !kvs[i].value) {
				qbd_err("meta", "range %s: entry %zu lacks a valid key or value",
					key, i);
				meta_kvs_free(kvs, len);
				json_object_put(resp);
				return -EPROTO;
			}
		}
		*out = kvs;
		*n = len;
	}
	json_object_put(resp);
	return 0;
}

int meta_get(struct qbd_meta *m, const char *key, struct kv *out)
{
	struct kv *kvs;
	size_t n;
	int r = meta_range(m, key, false, &kvs, &n);

	if (r < 0)
		return r;
	if (n == 0) {
		free(kvs);
		return -ENOENT;
	}
	*out = kvs[0];
	for (size_t i = 1; i < n; i++) {
		free(kvs[i].key);
		free(kvs[i].value);
	}
	free(kvs);
	return 0;
}

json_object *meta_op_put(const char *key, const char *value, int64_t lease)
{
	json_object *put = json_object_new_object(), *op = json_object_new_object();

	json_object_object_add(put, "key", meta_jstr_b64(key, strlen(key)));
	json_object_object_add(put, "value", meta_jstr_b64(value, strlen(value)));
	if (lease)
		json_object_object_add(put, "lease", json_object_new_int64(lease));
	json_object_object_add(op, "requestPut", put);
	return op;
}

json_object *meta_op_delete(const char *key)
{
	json_object *d = json_object_new_object(), *op = json_object_new_object();

	json_object_object_add(d, "key", meta_jstr_b64(key, strlen(key)));
	json_object_object_add(op, "requestDeleteRange", d);
	return op;
}

/* Compare: key's version == 0 (absent) or mod_revision == rev. */
json_object *meta_cmp_absent(const char *key)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "key", meta_jstr_b64(key, strlen(key)));
	json_object_object_add(c, "result", json_object_new_string("EQUAL"));
	json_object_object_add(c, "target", json_object_new_string("VERSION"));
	json_object_object_add(c, "version", json_object_new_int64(0));
	return c;
}

json_object *meta_cmp_mod(const char *key, uint64_t rev)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "key", meta_jstr_b64(key, strlen(key)));
	json_object_object_add(c, "result", json_object_new_string("EQUAL"));
	json_object_object_add(c, "target", json_object_new_string("MOD"));
	json_object_object_add(c, "mod_revision", json_object_new_int64((int64_t)rev));
	return c;
}

/* Compare: key's value == value (false when the key is absent). */
json_object *meta_cmp_value(const char *key, const char *value)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "key", meta_jstr_b64(key, strlen(key)));
	json_object_object_add(c, "result", json_object_new_string("EQUAL"));
	json_object_object_add(c, "target", json_object_new_string("VALUE"));
	json_object_object_add(c, "value", meta_jstr_b64(value, strlen(value)));
	return c;
}

/* Run a transaction (takes ownership of compare and success arrays).
 * Returns 0 if it succeeded, -EAGAIN if a compare failed. resend: see
 * meta_post. */
int meta_txn(struct qbd_meta *m, json_object *compare, json_object *success,
	     bool resend)
{
	return meta_txn_rev(m, compare, success, resend, NULL);
}

int meta_txn_rev(struct qbd_meta *m, json_object *compare, json_object *success,
		 bool resend, uint64_t *revision)
{
	json_object *req = json_object_new_object(), *resp, *ok, *hdr;
	int r;

	json_object_object_add(req, "compare", compare);
	json_object_object_add(req, "success", success);
	r = meta_post(m, "/v3/kv/txn", req, resend, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	/* etcd leaves out false booleans: no "succeeded" means a compare failed */
	if ((r = meta_need(resp, "header", "txn")) < 0) {
		json_object_put(resp);
		return r;
	}
	r = json_object_object_get_ex(resp, "succeeded", &ok) &&
	    json_object_get_boolean(ok) ? 0 : -EAGAIN;
	if (revision && r == 0) {
		*revision = json_object_object_get_ex(resp, "header", &hdr) ?
			    meta_jint(hdr, "revision") : 0;
		if (*revision == 0) {
			qbd_err("meta", "txn: etcd's answer lacks its revision");
			r = -EPROTO;
		}
	}
	json_object_put(resp);
	return r;
}

int meta_put(struct qbd_meta *m, const char *key, const char *value,
	     int64_t lease)
{
	json_object *put = meta_op_put(key, value, lease), *inner, *resp;
	int r;

	json_object_object_get_ex(put, "requestPut", &inner);
	json_object_get(inner);
	json_object_put(put);
	r = meta_post(m, "/v3/kv/put", inner, true, &resp);
	json_object_put(inner);
	json_object_put(resp);
	return r;
}

