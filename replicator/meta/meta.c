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
static int meta_post(struct qbd_meta *m, const char *path, json_object *body,
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
static int meta_need(json_object *resp, const char *field, const char *what)
{
	if (json_object_object_get_ex(resp, field, NULL))
		return 0;
	qbd_err("meta", "%s: etcd answer lacks \"%s\"", what, field);
	return -EPROTO;
}

static json_object *jstr_b64(const char *s, size_t len)
{
	char *e = meta_b64_encode(s, len);
	json_object *o = json_object_new_string(e ? e : "");
	free(e);
	return o;
}

static uint64_t jint(json_object *parent, const char *key)
{
	json_object *o;

	if (!json_object_object_get_ex(parent, key, &o))
		return 0;
	if (json_object_is_type(o, json_type_string))
		return strtoull(json_object_get_string(o), NULL, 10);
	return (uint64_t)json_object_get_int64(o);
}

/* One key/value from a range response. */
struct kv {
	char *key;
	char *value;
	size_t vlen;
	uint64_t mod_revision;
};

static void kvs_free(struct kv *kvs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(kvs[i].key);
		free(kvs[i].value);
	}
	free(kvs);
}

/* Range over key (exact) or prefix. *out malloc'd. */
static int meta_range(struct qbd_meta *m, const char *key, bool prefix,
		      struct kv **out, size_t *n)
{
	json_object *req = json_object_new_object(), *resp, *arr;
	size_t kl = strlen(key);
	int r;

	*out = NULL;
	*n = 0;
	json_object_object_add(req, "key", jstr_b64(key, kl));
	if (prefix) {
		char *end = strdup(key);
		if (!end) {
			json_object_put(req);
			return -ENOMEM;
		}
		end[kl - 1]++;
		json_object_object_add(req, "range_end", jstr_b64(end, kl));
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
			kvs[i].mod_revision = jint(e, "mod_revision");
			if (json_object_object_get_ex(e, "key", &k))
				kvs[i].key = meta_b64_decode(json_object_get_string(k), &dummy);
			if (json_object_object_get_ex(e, "value", &v))
				kvs[i].value = meta_b64_decode(json_object_get_string(v), &kvs[i].vlen);
			else
				kvs[i].value = strdup("");
			if (!kvs[i].key || !kvs[i].value) {
				qbd_err("meta", "range %s: entry %zu lacks a valid key or value",
					key, i);
				kvs_free(kvs, len);
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

static int meta_get(struct qbd_meta *m, const char *key, struct kv *out)
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

static json_object *op_put(const char *key, const char *value, int64_t lease)
{
	json_object *put = json_object_new_object(), *op = json_object_new_object();

	json_object_object_add(put, "key", jstr_b64(key, strlen(key)));
	json_object_object_add(put, "value", jstr_b64(value, strlen(value)));
	if (lease)
		json_object_object_add(put, "lease", json_object_new_int64(lease));
	json_object_object_add(op, "requestPut", put);
	return op;
}

static json_object *op_delete(const char *key)
{
	json_object *d = json_object_new_object(), *op = json_object_new_object();

	json_object_object_add(d, "key", jstr_b64(key, strlen(key)));
	json_object_object_add(op, "requestDeleteRange", d);
	return op;
}

/* Compare: key's version == 0 (absent) or mod_revision == rev. */
static json_object *cmp_absent(const char *key)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "key", jstr_b64(key, strlen(key)));
	json_object_object_add(c, "result", json_object_new_string("EQUAL"));
	json_object_object_add(c, "target", json_object_new_string("VERSION"));
	json_object_object_add(c, "version", json_object_new_int64(0));
	return c;
}

static json_object *cmp_mod(const char *key, uint64_t rev)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "key", jstr_b64(key, strlen(key)));
	json_object_object_add(c, "result", json_object_new_string("EQUAL"));
	json_object_object_add(c, "target", json_object_new_string("MOD"));
	json_object_object_add(c, "mod_revision", json_object_new_int64((int64_t)rev));
	return c;
}

/* Compare: key's value == value (false when the key is absent). */
static json_object *cmp_value(const char *key, const char *value)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "key", jstr_b64(key, strlen(key)));
	json_object_object_add(c, "result", json_object_new_string("EQUAL"));
	json_object_object_add(c, "target", json_object_new_string("VALUE"));
	json_object_object_add(c, "value", jstr_b64(value, strlen(value)));
	return c;
}

/* Run a transaction (takes ownership of compare and success arrays).
 * Returns 0 if it succeeded, -EAGAIN if a compare failed. resend: see
 * meta_post. */
static int meta_txn(struct qbd_meta *m, json_object *compare, json_object *success,
		    bool resend)
{
	json_object *req = json_object_new_object(), *resp, *ok;
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
	json_object_put(resp);
	return r;
}

static int meta_put(struct qbd_meta *m, const char *key, const char *value,
		    int64_t lease)
{
	json_object *put = op_put(key, value, lease), *inner, *resp;
	int r;

	json_object_object_get_ex(put, "requestPut", &inner);
	json_object_get(inner);
	json_object_put(put);
	r = meta_post(m, "/v3/kv/put", inner, true, &resp);
	json_object_put(inner);
	json_object_put(resp);
	return r;
}

/* ---- cluster, leases, nodes ---- */

int qbd_meta_cluster_id(struct qbd_meta *m, bool create, uint64_t *id)
{
	for (int tries = 0; tries < 5; tries++) {
		struct kv kv;
		int r = meta_get(m, "/qbd/cluster", &kv);

		if (r == 0) {
			json_object *o = json_tokener_parse(kv.value), *s;
			r = -EPROTO;
			if (o && json_object_object_get_ex(o, "id", &s) &&
			    qbd_id_parse(json_object_get_string(s), id) == 0)
				r = 0;
			else
				qbd_err("meta", "/qbd/cluster: malformed value");
			json_object_put(o);
			free(kv.key);
			free(kv.value);
			return r;
		}
		if (r != -ENOENT || !create)
			return r;
		char val[64], hex[17];
		snprintf(val, sizeof val, "{\"id\":\"%s\"}", qbd_id_str(qbd_random_u64(), hex));
		json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
		json_object_array_add(cmp, cmp_absent("/qbd/cluster"));
		json_object_array_add(suc, op_put("/qbd/cluster", val, 0));
		r = meta_txn(m, cmp, suc, true);
		if (r < 0 && r != -EAGAIN)
			return r;
		/* created, or someone else did: read it back */
	}
	return -EAGAIN;
}

int qbd_meta_lease_grant(struct qbd_meta *m, int ttl, int64_t *lease)
{
	json_object *req = json_object_new_object(), *resp;
	int r;

	json_object_object_add(req, "TTL", json_object_new_int(ttl));
	r = meta_post(m, "/v3/lease/grant", req, true, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	r = meta_need(resp, "ID", "lease grant");
	if (r == 0)
		*lease = (int64_t)jint(resp, "ID");
	json_object_put(resp);
	return r;
}

int qbd_meta_lease_keepalive(struct qbd_meta *m, int64_t lease)
{
	json_object *req = json_object_new_object(), *resp, *res;
	int r;

	json_object_object_add(req, "ID", json_object_new_int64(lease));
	r = meta_post(m, "/v3/lease/keepalive", req, true, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	r = meta_need(resp, "result", "lease keepalive");
	if (r == 0 && json_object_object_get_ex(resp, "result", &res) &&
	    jint(res, "TTL") == 0)
		r = -ENOENT; /* expired: etcd leaves TTL out */
	json_object_put(resp);
	return r;
}

int qbd_meta_lease_revoke(struct qbd_meta *m, int64_t lease)
{
	json_object *req = json_object_new_object(), *resp;
	int r;

	json_object_object_add(req, "ID", json_object_new_int64(lease));
	r = meta_post(m, "/v3/lease/revoke", req, true, &resp);
	json_object_put(req);
	json_object_put(resp);
	/* resent: the lost attempt may have revoked it already */
	return r == -ENOENT && m->resent ? 0 : r;
}

char *meta_node_to_json(const struct qbd_node_info *n)
{
	json_object *o = json_object_new_object(), *sc, *io, *or;
	char hex[17];
	char *s;

	json_object_object_add(o, "id", json_object_new_string(qbd_id_str(n->id, hex)));
	json_object_object_add(o, "addr", json_object_new_string(n->addr));
	json_object_object_add(o, "zone", json_object_new_string(n->zone));
	json_object_object_add(o, "capacity", json_object_new_int64((int64_t)n->capacity));
	json_object_object_add(o, "used", json_object_new_int64((int64_t)n->used));
	json_object_object_add(o, "chunk_size", json_object_new_int64(n->chunk_size));
	json_object_object_add(o, "held", json_object_new_int64((int64_t)n->held));
	json_object_object_add(o, "slots", json_object_new_int64((int64_t)n->slots));
	json_object_object_add(o, "free_slots", json_object_new_int64((int64_t)n->free_slots));
	json_object_object_add(o, "seq", json_object_new_int64((int64_t)n->seq));
	json_object_object_add(o, "updated", json_object_new_int64((int64_t)n->updated));
	sc = json_object_new_object();
	json_object_object_add(sc, "rate", json_object_new_int64((int64_t)n->scrub.rate));
	json_object_object_add(sc, "bytes", json_object_new_int64((int64_t)n->scrub.bytes));
	json_object_object_add(sc, "chunks", json_object_new_int64((int64_t)n->scrub.chunks));
	json_object_object_add(sc, "passes", json_object_new_int64((int64_t)n->scrub.passes));
	json_object_object_add(sc, "bad_blocks", json_object_new_int64((int64_t)n->scrub.bad_blocks));
	json_object_object_add(sc, "errors", json_object_new_int64((int64_t)n->scrub.errors));
	json_object_object_add(o, "scrub", sc);
	io = json_object_new_object();
	json_object_object_add(io, "data_reads", json_object_new_int64((int64_t)n->io.data_reads));
	json_object_object_add(io, "data_read_bytes",
			       json_object_new_int64((int64_t)n->io.data_read_bytes));
	json_object_object_add(io, "data_writes", json_object_new_int64((int64_t)n->io.data_writes));
	json_object_object_add(io, "data_write_bytes",
			       json_object_new_int64((int64_t)n->io.data_write_bytes));
	json_object_object_add(io, "meta_writes", json_object_new_int64((int64_t)n->io.meta_writes));
	json_object_object_add(io, "zeroings", json_object_new_int64((int64_t)n->io.zeroings));
	json_object_object_add(io, "syncs", json_object_new_int64((int64_t)n->io.syncs));
	json_object_object_add(o, "io", io);
	or = json_object_new_object();
	json_object_object_add(or, "volumes", json_object_new_int64((int64_t)n->orphaned.volumes));
	json_object_object_add(or, "chunks", json_object_new_int64((int64_t)n->orphaned.chunks));
	json_object_object_add(or, "held", json_object_new_int64((int64_t)n->orphaned.held));
	json_object_object_add(or, "found", json_object_new_int64((int64_t)n->orphaned.found));
	json_object_object_add(or, "reclaimed",
			       json_object_new_int64((int64_t)n->orphaned.reclaimed));
	json_object_object_add(or, "reclaimed_bytes",
			       json_object_new_int64((int64_t)n->orphaned.reclaimed_bytes));
	json_object_object_add(o, "orphaned", or);
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

static int jcopy(json_object *o, const char *key, char *dst, size_t len)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return -EPROTO;
	snprintf(dst, len, "%s", json_object_get_string(v));
	return 0;
}

int meta_node_from_json(const char *json, struct qbd_node_info *n)
{
	json_object *o = json_tokener_parse(json), *v;
	char hex[32];
	int r = -EPROTO;

	memset(n, 0, sizeof *n);
	if (!o)
		return -EPROTO;
	if (jcopy(o, "id", hex, sizeof hex) || qbd_id_parse(hex, &n->id) ||
	    jcopy(o, "addr", n->addr, sizeof n->addr) ||
	    jcopy(o, "zone", n->zone, sizeof n->zone) ||
	    !json_object_object_get_ex(o, "capacity", &v))
		goto out;
	n->capacity = jint(o, "capacity");
	n->used = jint(o, "used");
	n->chunk_size = (uint32_t)jint(o, "chunk_size");
	n->held = jint(o, "held");
	n->slots = jint(o, "slots");
	n->free_slots = jint(o, "free_slots");
	n->seq = jint(o, "seq");
	n->updated = jint(o, "updated");
	if (json_object_object_get_ex(o, "scrub", &v) && json_object_is_type(v, json_type_object)) {
		n->scrub.rate = jint(v, "rate");
		n->scrub.bytes = jint(v, "bytes");
		n->scrub.chunks = jint(v, "chunks");
		n->scrub.passes = jint(v, "passes");
		n->scrub.bad_blocks = jint(v, "bad_blocks");
		n->scrub.errors = jint(v, "errors");
	}
	if (json_object_object_get_ex(o, "io", &v) && json_object_is_type(v, json_type_object)) {
		n->io.data_reads = jint(v, "data_reads");
		n->io.data_read_bytes = jint(v, "data_read_bytes");
		n->io.data_writes = jint(v, "data_writes");
		n->io.data_write_bytes = jint(v, "data_write_bytes");
		n->io.meta_writes = jint(v, "meta_writes");
		n->io.zeroings = jint(v, "zeroings");
		n->io.syncs = jint(v, "syncs");
	}
	if (json_object_object_get_ex(o, "orphaned", &v) &&
	    json_object_is_type(v, json_type_object)) {
		n->orphaned.volumes = jint(v, "volumes");
		n->orphaned.chunks = jint(v, "chunks");
		n->orphaned.held = jint(v, "held");
		n->orphaned.found = jint(v, "found");
		n->orphaned.reclaimed = jint(v, "reclaimed");
		n->orphaned.reclaimed_bytes = jint(v, "reclaimed_bytes");
	}
	r = 0;
out:
	json_object_put(o);
	return r;
}

int qbd_meta_node_put(struct qbd_meta *m, const struct qbd_node_info *n)
{
	char key[64], hex[17];
	char *json = meta_node_to_json(n);
	int r;

	if (!json)
		return -ENOMEM;
	snprintf(key, sizeof key, "/qbd/nodes/%s", qbd_id_str(n->id, hex));
	r = meta_put(m, key, json, 0);
	free(json);
	return r;
}

int qbd_meta_node_register(struct qbd_meta *m, const struct qbd_node_info *n,
			   int64_t lease)
{
	char key[64], hex[17];
	char *json = meta_node_to_json(n);
	int r;

	if (!json)
		return -ENOMEM;
	snprintf(key, sizeof key, "/qbd/nodes/%s", qbd_id_str(n->id, hex));
	r = meta_put(m, key, json, 0);
	free(json);
	if (r == 0) {
		snprintf(key, sizeof key, "/qbd/alive/%s", hex);
		r = meta_put(m, key, "1", lease);
	}
	return r;
}

int qbd_meta_node_get(struct qbd_meta *m, uint64_t id, struct qbd_node_info *out)
{
	char key[64], hex[17];
	struct kv kv;
	int r;

	snprintf(key, sizeof key, "/qbd/nodes/%s", qbd_id_str(id, hex));
	r = meta_get(m, key, &kv);
	if (r < 0)
		return r;
	r = meta_node_from_json(kv.value, out);
	if (r < 0)
		qbd_err("meta", "%s: malformed node record", key);
	free(kv.key);
	free(kv.value);
	if (r == 0) {
		snprintf(key, sizeof key, "/qbd/alive/%s", hex);
		r = meta_get(m, key, &kv);
		out->alive = r == 0;
		if (r == 0) {
			free(kv.key);
			free(kv.value);
		}
		r = r == -ENOENT ? 0 : r;
	}
	return r;
}

static int node_cmp(const void *a, const void *b)
{
	const struct qbd_node_info *x = a, *y = b;
	int c = strcmp(x->zone, y->zone);

	return c ? c : (x->id < y->id ? -1 : x->id > y->id);
}

int qbd_meta_node_list(struct qbd_meta *m, struct qbd_node_info **out, size_t *n)
{
	struct kv *kvs = NULL, *alive = NULL;
	size_t nk = 0, na = 0, cnt = 0;
	struct qbd_node_info *nodes;
	int r;

	*out = NULL;
	*n = 0;
	r = meta_range(m, "/qbd/nodes/", true, &kvs, &nk);
	if (r == 0)
		r = meta_range(m, "/qbd/alive/", true, &alive, &na);
	if (r < 0)
		goto out;
	nodes = calloc(nk ? nk : 1, sizeof *nodes);
	if (!nodes) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nk; i++) {
		if (meta_node_from_json(kvs[i].value, &nodes[cnt]) < 0) {
			qbd_warn("meta", "%s: malformed node record, skipped", kvs[i].key);
			continue;
		}
		char hex[17];
		qbd_id_str(nodes[cnt].id, hex);
		for (size_t j = 0; j < na; j++)
			if (strcmp(alive[j].key + strlen("/qbd/alive/"), hex) == 0)
				nodes[cnt].alive = true;
		cnt++;
	}
	qsort(nodes, cnt, sizeof *nodes, node_cmp);
	*out = nodes;
	*n = cnt;
out:
	kvs_free(kvs, nk);
	kvs_free(alive, na);
	return r;
}

/* ---- volumes ---- */

bool qbd_meta_volume_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n >= QBD_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

char *meta_volume_to_json(const struct qbd_volume_info *v)
{
	json_object *o = json_object_new_object(), *arr = json_object_new_array();
	char hex[17];
	char *s;

	json_object_object_add(o, "name", json_object_new_string(v->name));
	json_object_object_add(o, "id", json_object_new_string(qbd_id_str(v->id, hex)));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)v->size));
	json_object_object_add(o, "chunk_size", json_object_new_int64(v->chunk_size));
	json_object_object_add(o, "replicas", json_object_new_int((int)v->replicas));
	json_object_object_add(o, "write_quorum", json_object_new_int((int)v->write_quorum));
	for (unsigned i = 0; i < v->replicas; i++)
		json_object_array_add(arr, json_object_new_string(qbd_id_str(v->nodes[i], hex)));
	json_object_object_add(o, "nodes", arr);
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

int meta_volume_from_json(const char *json, struct qbd_volume_info *v)
{
	json_object *o = json_tokener_parse(json), *arr;
	char hex[32];
	int r = -EPROTO;

	memset(v, 0, sizeof *v);
	if (!o)
		return -EPROTO;
	if (jcopy(o, "name", v->name, sizeof v->name) ||
	    jcopy(o, "id", hex, sizeof hex) || qbd_id_parse(hex, &v->id) ||
	    !json_object_object_get_ex(o, "nodes", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		goto out;
	v->size = jint(o, "size");
	v->chunk_size = (uint32_t)jint(o, "chunk_size");
	v->replicas = (unsigned)jint(o, "replicas");
	v->write_quorum = (unsigned)jint(o, "write_quorum");
	if (v->replicas == 0 || v->replicas > QBD_MAX_REPLICAS ||
	    json_object_array_length(arr) != v->replicas || v->write_quorum == 0 ||
	    v->write_quorum > v->replicas || v->size == 0 || v->chunk_size == 0)
		goto out;
	for (unsigned i = 0; i < v->replicas; i++) {
		const char *s = json_object_get_string(json_object_array_get_idx(arr, i));
		if (!s || qbd_id_parse(s, &v->nodes[i]))
			goto out;
	}
	r = 0;
out:
	json_object_put(o);
	return r;
}

int qbd_meta_volume_create(struct qbd_meta *m, const struct qbd_volume_info *v)
{
	char kvol[128], kid[64], kep[64], hex[17];
	char *json = meta_volume_to_json(v);
	json_object *cmp, *suc;
	int r;

	if (!json)
		return -ENOMEM;
	qbd_id_str(v->id, hex);
	snprintf(kvol, sizeof kvol, "/qbd/volumes/%s", v->name);
	snprintf(kid, sizeof kid, "/qbd/volume-ids/%s", hex);
	snprintf(kep, sizeof kep, "/qbd/epochs/%s", hex);
	cmp = json_object_new_array();
	suc = json_object_new_array();
	json_object_array_add(cmp, cmp_absent(kvol));
	json_object_array_add(cmp, cmp_absent(kid));
	json_object_array_add(suc, op_put(kvol, json, 0));
	json_object_array_add(suc, op_put(kid, v->name, 0));
	json_object_array_add(suc, op_put(kep, "0", 0));
	r = meta_txn(m, cmp, suc, true);
	free(json);
	if (r == -EAGAIN && m->resent) {
		/* Resent after an attempt whose answer was lost: if that one
		 * created it, the record is ours (ids are random, 64 bits). */
		struct qbd_volume_info cur;
		if (qbd_meta_volume_get(m, v->name, &cur) == 0 && cur.id == v->id)
			return 0;
	}
	return r == -EAGAIN ? -EEXIST : r;
}

int qbd_meta_volume_get(struct qbd_meta *m, const char *name,
			struct qbd_volume_info *out)
{
	char key[128];
	struct kv kv;
	int r;

	if (!qbd_meta_volume_name_ok(name))
		return -ENOENT;
	snprintf(key, sizeof key, "/qbd/volumes/%s", name);
	r = meta_get(m, key, &kv);
	if (r < 0)
		return r;
	r = meta_volume_from_json(kv.value, out);
	if (r < 0)
		qbd_err("meta", "%s: malformed volume record", key);
	free(kv.key);
	free(kv.value);
	return r;
}

static int vol_cmp(const void *a, const void *b)
{
	return strcmp(((const struct qbd_volume_info *)a)->name,
		      ((const struct qbd_volume_info *)b)->name);
}

int qbd_meta_volume_list(struct qbd_meta *m, struct qbd_volume_info **out,
			 size_t *n)
{
	struct kv *kvs;
	size_t nk, cnt = 0;
	int r = meta_range(m, "/qbd/volumes/", true, &kvs, &nk);

	*out = NULL;
	*n = 0;
	if (r < 0)
		return r;
	struct qbd_volume_info *vols = calloc(nk ? nk : 1, sizeof *vols);
	if (!vols) {
		kvs_free(kvs, nk);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nk; i++)
		if (meta_volume_from_json(kvs[i].value, &vols[cnt]) == 0)
			cnt++;
		else
			qbd_warn("meta", "%s: malformed volume record, skipped", kvs[i].key);
	kvs_free(kvs, nk);
	qsort(vols, cnt, sizeof *vols, vol_cmp);
	*out = vols;
	*n = cnt;
	return 0;
}

int qbd_meta_volume_delete(struct qbd_meta *m, const struct qbd_volume_info *v)
{
	char kvol[128], kid[64], kep[64], katt[64], kst[64], kcl[64], hex[17];
	json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
	json_object *c;
	struct qbd_attachment a;
	bool resent;
	int r;

	qbd_id_str(v->id, hex);
	snprintf(kvol, sizeof kvol, "/qbd/volumes/%s", v->name);
	snprintf(kid, sizeof kid, "/qbd/volume-ids/%s", hex);
	snprintf(kep, sizeof kep, "/qbd/epochs/%s", hex);
	snprintf(katt, sizeof katt, "/qbd/attachments/%s", hex);
	snprintf(kst, sizeof kst, "/qbd/status/%s", hex);
	snprintf(kcl, sizeof kcl, "/qbd/clean/%s", hex);
	/* Only if the volume still exists (version > 0) and nobody is attached. */
	c = cmp_absent(kvol);
	json_object_object_add(c, "result", json_object_new_string("GREATER"));
	json_object_array_add(cmp, c);
	json_object_array_add(cmp, cmp_absent(katt));
	json_object_array_add(suc, op_delete(kvol));
	json_object_array_add(suc, op_delete(kid));
	json_object_array_add(suc, op_delete(kep));
	json_object_array_add(suc, op_delete(katt));
	json_object_array_add(suc, op_delete(kst));
	json_object_array_add(suc, op_delete(kcl));
	r = meta_txn(m, cmp, suc, true);
	if (r != -EAGAIN)
		return r;
	resent = m->resent;
	/* Which compare failed? */
	r = qbd_meta_attachment_get(m, v->id, &a);
	if (r == 0 || r == -EPROTO) {
		qbd_warn("meta", "volume %s: not deleted: it has an attachment record", v->name);
		return -EBUSY;
	}
	/* gone: deleted by us if the answer came after a resend */
	return r == -ENOENT ? (resent ? 0 : -ENOENT) : r;
}

/* ---- which volumes exist (a chunk server's reclaim scan) ---- */

/* The ranges of the scan's transaction, in order. */
enum { SCAN_CLUSTER, SCAN_VOLUMES, SCAN_IDS, SCAN_EPOCHS, SCAN_N };
static const char *const scan_keys[SCAN_N] = {
	"/qbd/cluster", "/qbd/volumes/", "/qbd/volume-ids/", "/qbd/epochs/",
};

static json_object *scan_range_op(const char *key, bool prefix, bool keys_only)
{
	json_object *r = json_object_new_object(), *op = json_object_new_object();
	size_t kl = strlen(key);

	json_object_object_add(r, "key", jstr_b64(key, kl));
	if (prefix) {
		char end[64];

		snprintf(end, sizeof end, "%s", key);
		end[kl - 1]++;
		json_object_object_add(r, "range_end", jstr_b64(end, kl));
	}
	if (keys_only)
		json_object_object_add(r, "keys_only", json_object_new_boolean(true));
	json_object_object_add(op, "requestRange", r);
	return op;
}

static int scan_add(struct qbd_meta_volume_scan *s, size_t *cap, uint64_t id)
{
	if (s->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		uint64_t *ni = realloc(s->ids, nc * sizeof *ni);

		if (!ni)
			return -ENOMEM;
		s->ids = ni;
		*cap = nc;
	}
	s->ids[s->n++] = id;
	return 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* One key/value of range `which` into the scan: the cluster id, or the
 * volume id the key or the record names. */
static int scan_entry(struct qbd_meta_volume_scan *s, size_t *cap, int which,
		      const char *key, const char *value)
{
	const char *suffix = key + strlen(scan_keys[which]);
	struct qbd_volume_info v;
	uint64_t id;

	if (strncmp(key, scan_keys[which], strlen(scan_keys[which])) != 0)
		return -EPROTO;
	switch (which) {
	case SCAN_CLUSTER: {
		json_object *o = json_tokener_parse(value), *i;
		int r = -EPROTO;

		if (o && json_object_object_get_ex(o, "id", &i) &&
		    qbd_id_parse(json_object_get_string(i), &s->cluster_id) == 0)
			r = 0;
		json_object_put(o);
		return r;
	}
	case SCAN_VOLUMES:
		if (meta_volume_from_json(value, &v) < 0)
			return -EPROTO;
		return scan_add(s, cap, v.id);
	default:
		if (strlen(suffix) != 16 || qbd_id_parse(suffix, &id) < 0)
			return -EPROTO;
		return scan_add(s, cap, id);
	}
}

/* One range's answer: whole ("more" unset, "count" the entries given),
 * each entry readable. */
static int scan_range(struct qbd_meta_volume_scan *s, size_t *cap, int which,
		      json_object *rr)
{
	json_object *kvs = NULL, *more;
	size_t len = 0;

	if (!json_object_is_type(rr, json_type_object))
		return -EPROTO;
	if (json_object_object_get_ex(rr, "more", &more) && json_object_get_boolean(more)) {
		qbd_err("meta", "volume scan: %s: etcd left entries out", scan_keys[which]);
		return -EPROTO;
	}
	if (json_object_object_get_ex(rr, "kvs", &kvs)) {
		if (!json_object_is_type(kvs, json_type_array))
			return -EPROTO;
		len = json_object_array_length(kvs);
	}
	if (jint(rr, "count") != len) {
		qbd_err("meta", "volume scan: %s: %zu entries of %llu", scan_keys[which], len,
			(unsigned long long)jint(rr, "count"));
		return -EPROTO;
	}
	for (size_t i = 0; i < len; i++) {
		json_object *e = json_object_array_get_idx(kvs, i), *k, *v;
		char *key = NULL, *value = NULL;
		size_t kl, vl;
		int r = -EPROTO;

		if (json_object_object_get_ex(e, "key", &k))
			key = meta_b64_decode(json_object_get_string(k), &kl);
		if (json_object_object_get_ex(e, "value", &v))
			value = meta_b64_decode(json_object_get_string(v), &vl);
		if (key && (value || which == SCAN_IDS || which == SCAN_EPOCHS))
			r = scan_entry(s, cap, which, key, value ? value : "");
		if (r == -EPROTO)
			qbd_err("meta", "volume scan: %s: unreadable entry %.80s",
				scan_keys[which], key ? key : "(no key)");
		free(key);
		free(value);
		if (r < 0)
			return r;
	}
	return 0;
}

static int meta_volume_scan_parse(json_object *resp, struct qbd_meta_volume_scan *out)
{
	json_object *hdr, *arr;
	size_t cap = 0, u = 0;
	int r;

	memset(out, 0, sizeof *out);
	if (!json_object_object_get_ex(resp, "header", &hdr) ||
	    (out->revision = jint(hdr, "revision")) == 0 ||
	    !json_object_object_get_ex(resp, "responses", &arr) ||
	    !json_object_is_type(arr, json_type_array) ||
	    json_object_array_length(arr) != SCAN_N) {
		qbd_err("meta", "volume scan: etcd's answer lacks its revision or a range");
		return -EPROTO;
	}
	for (int i = 0; i < SCAN_N; i++) {
		json_object *rr;

		if (!json_object_object_get_ex(json_object_array_get_idx(arr, i),
					       "response_range", &rr)) {
			qbd_err("meta", "volume scan: no answer for %s", scan_keys[i]);
			r = -EPROTO;
			goto fail;
		}
		if ((r = scan_range(out, &cap, i, rr)) < 0)
			goto fail;
	}
	if (out->n) {
		qsort(out->ids, out->n, sizeof *out->ids, u64_cmp);
		for (size_t i = 1; i < out->n; i++)
			if (out->ids[i] != out->ids[u])
				out->ids[++u] = out->ids[i];
		out->n = u + 1;
	}
	return 0;
fail:
	qbd_meta_volume_scan_free(out);
	return r;
}

int meta_volume_scan_from_json(const char *json, struct qbd_meta_volume_scan *out)
{
	json_object *o = json_tokener_parse(json);
	int r;

	if (!o) {
		memset(out, 0, sizeof *out);
		return -EPROTO;
	}
	r = meta_volume_scan_parse(o, out);
	json_object_put(o);
	return r;
}

int qbd_meta_volume_scan(struct qbd_meta *m, struct qbd_meta_volume_scan *out)
{
	json_object *req = json_object_new_object(), *suc = json_object_new_array(), *resp;
	int r;

	memset(out, 0, sizeof *out);
	json_object_array_add(suc, scan_range_op(scan_keys[SCAN_CLUSTER], false, false));
	json_object_array_add(suc, scan_range_op(scan_keys[SCAN_VOLUMES], true, false));
	json_object_array_add(suc, scan_range_op(scan_keys[SCAN_IDS], true, true));
	json_object_array_add(suc, scan_range_op(scan_keys[SCAN_EPOCHS], true, true));
	json_object_object_add(req, "compare", json_object_new_array());
	json_object_object_add(req, "success", suc);
	r = meta_post(m, "/v3/kv/txn", req, true, &resp);
	json_object_put(req);
	if (r < 0)
		return r;
	r = meta_volume_scan_parse(resp, out);
	json_object_put(resp);
	return r;
}

void qbd_meta_volume_scan_free(struct qbd_meta_volume_scan *s)
{
	free(s->ids);
	memset(s, 0, sizeof *s);
}

static int meta_parse_epoch(const char *key, const char *text, uint64_t *out);

int qbd_meta_mark_clean(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch)
{
	char key[64], hex[17], val[24];

	snprintf(key, sizeof key, "/qbd/clean/%s", qbd_id_str(volume_id, hex));
	snprintf(val, sizeof val, "%" PRIu64, epoch);
	return meta_put(m, key, val, 0);
}

int qbd_meta_was_clean(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch)
{
	char key[64], hex[17];
	struct kv kv;
	uint64_t e;
	int r;

	snprintf(key, sizeof key, "/qbd/clean/%s", qbd_id_str(volume_id, hex));
	r = meta_get(m, key, &kv);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = meta_parse_epoch(key, kv.value, &e);
	free(kv.key);
	free(kv.value);
	if (r < 0)
		return r;
	return e == epoch;
}

static int meta_parse_epoch(const char *key, const char *text, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(text, &end, 10);
	if (!*text || *end || errno) {
		qbd_err("meta", "%s: epoch '%.32s' is not a number", key, text);
		return -EPROTO;
	}
	return 0;
}

int qbd_meta_epoch_get(struct qbd_meta *m, uint64_t volume_id, uint64_t *epoch)
{
	char key[64], hex[17];
	struct kv kv;
	int r;

	snprintf(key, sizeof key, "/qbd/epochs/%s", qbd_id_str(volume_id, hex));
	r = meta_get(m, key, &kv);
	if (r < 0)
		return r;
	r = meta_parse_epoch(key, kv.value, epoch);
	free(kv.key);
	free(kv.value);
	return r;
}

int qbd_meta_epoch_bump(struct qbd_meta *m, uint64_t volume_id, uint64_t *epoch)
{
	char key[64], hex[17], val[32];

	snprintf(key, sizeof key, "/qbd/epochs/%s", qbd_id_str(volume_id, hex));
	for (int tries = 0; tries < 10; tries++) {
		struct kv kv;
		int r = meta_get(m, key, &kv);
		uint64_t e;

		if (r < 0)
			return r;
		r = meta_parse_epoch(key, kv.value, &e);
		if (r < 0) {
			free(kv.key);
			free(kv.value);
			return r;
		}
		e++;
		snprintf(val, sizeof val, "%" PRIu64, e);
		json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
		json_object_array_add(cmp, cmp_mod(key, kv.mod_revision));
		json_object_array_add(suc, op_put(key, val, 0));
		free(kv.key);
		free(kv.value);
		/* Resendable: if a lost attempt applied, the resend's compare
		 * fails and the next round takes e + 1; an epoch is burnt,
		 * never shared (only a definite success returns one). */
		r = meta_txn(m, cmp, suc, true);
		if (r == 0) {
			*epoch = e;
			return 0;
		}
		if (r != -EAGAIN)
			return r;
	}
	return -EAGAIN;
}

/* ---- attachments and writer status ---- */

char *meta_attachment_to_json(const struct qbd_attachment *a)
{
	json_object *o = json_object_new_object();
	char hex[17];
	char *s;

	json_object_object_add(o, "volume", json_object_new_string(a->volume));
	json_object_object_add(o, "volume_id", json_object_new_string(qbd_id_str(a->volume_id, hex)));
	json_object_object_add(o, "epoch", json_object_new_int64((int64_t)a->epoch));
	json_object_object_add(o, "host", json_object_new_string(a->host));
	json_object_object_add(o, "zone", json_object_new_string(a->zone));
	json_object_object_add(o, "pid", json_object_new_int(a->pid));
	json_object_object_add(o, "since", json_object_new_int64((int64_t)a->since));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

int meta_attachment_from_json(const char *json, struct qbd_attachment *a)
{
	json_object *o = json_tokener_parse(json);
	char hex[32];
	int r = -EPROTO;

	memset(a, 0, sizeof *a);
	if (!o)
		return -EPROTO;
	if (!json_object_is_type(o, json_type_object) ||
	    jcopy(o, "volume", a->volume, sizeof a->volume) ||
	    !qbd_meta_volume_name_ok(a->volume) ||
	    jcopy(o, "volume_id", hex, sizeof hex) || qbd_id_parse(hex, &a->volume_id) ||
	    !json_object_object_get_ex(o, "epoch", NULL))
		goto out;
	a->epoch = jint(o, "epoch");
	/* host and zone are informative: absent means unknown */
	if (jcopy(o, "host", a->host, sizeof a->host))
		a->host[0] = '\0';
	if (jcopy(o, "zone", a->zone, sizeof a->zone))
		a->zone[0] = '\0';
	a->pid = (int)jint(o, "pid");
	a->since = jint(o, "since");
	r = 0;
out:
	json_object_put(o);
	return r;
}

static void attach_keys(uint64_t volume_id, char *kep, char *katt, char *kst)
{
	char hex[17];

	qbd_id_str(volume_id, hex);
	snprintf(kep, 64, "/qbd/epochs/%s", hex);
	snprintf(katt, 64, "/qbd/attachments/%s", hex);
	snprintf(kst, 64, "/qbd/status/%s", hex);
}

/* Read and parse the attachment record; *rev its mod_revision. */
static int attachment_read(struct qbd_meta *m, const char *katt,
			   struct qbd_attachment *out, uint64_t *rev)
{
	struct kv kv;
	int r = meta_get(m, katt, &kv);

	if (r < 0)
		return r;
	r = meta_attachment_from_json(kv.value, out);
	if (r < 0)
		qbd_err("meta", "%s: malformed attachment record", katt);
	*rev = kv.mod_revision;
	free(kv.key);
	free(kv.value);
	return r;
}

int qbd_meta_attachment_get(struct qbd_meta *m, uint64_t volume_id,
			    struct qbd_attachment *out)
{
	char kep[64], katt[64], kst[64];
	uint64_t rev;

	attach_keys(volume_id, kep, katt, kst);
	return attachment_read(m, katt, out, &rev);
}

int qbd_meta_attach(struct qbd_meta *m, struct qbd_attachment *a, int64_t lease,
		    bool force, struct qbd_attachment *holder)
{
	char kep[64], katt[64], kst[64], val[32];

	if (!qbd_meta_volume_name_ok(a->volume)) {
		qbd_err("meta", "attach: invalid volume name '%.80s'", a->volume);
		return -EINVAL;
	}
	attach_keys(a->volume_id, kep, katt, kst);
	for (int tries = 0; tries < 10; tries++) {
		struct qbd_attachment rec = *a, cur;
		struct kv kv;
		uint64_t rev;
		char *json;
		int r = meta_get(m, kep, &kv);

		if (r < 0)
			return r;
		r = meta_parse_epoch(kep, kv.value, &rec.epoch);
		free(kv.key);
		free(kv.value);
		if (r < 0)
			return r;
		rec.epoch++;
		snprintf(val, sizeof val, "%" PRIu64, rec.epoch);
		if (!(json = meta_attachment_to_json(&rec)))
			return -ENOMEM;
		json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
		json_object_array_add(cmp, cmp_mod(kep, kv.mod_revision));
		if (!force)
			json_object_array_add(cmp, cmp_absent(katt));
		json_object_array_add(suc, op_put(kep, val, 0));
		json_object_array_add(suc, op_put(katt, json, lease));
		free(json);
		/* Never resent: had a lost attempt applied, the resend would
		 * find our own record and report it as another writer's (or,
		 * forced, take a second epoch). The open fails instead; a
		 * record the lost attempt may have put goes with its lease. */
		r = meta_txn(m, cmp, suc, false);
		if (r == 0) {
			a->epoch = rec.epoch;
			return 0;
		}
		if (r != -EAGAIN)
			return r;
		if (force)
			continue; /* only the epoch compare can have failed */
		r = attachment_read(m, katt, &cur, &rev);
		if (r == 0) {
			if (holder)
				*holder = cur;
			return -EBUSY;
		}
		if (r == -EPROTO) {
			/* unreadable record: still someone's, report it as busy */
			if (holder)
				memset(holder, 0, sizeof *holder);
			return -EBUSY;
		}
		if (r != -ENOENT)
			return r;
		/* no holder: the epoch moved (or the holder just left); retry */
	}
	return -EAGAIN;
}

int qbd_meta_attach_renew(struct qbd_meta *m, const struct qbd_attachment *a,
			  int64_t lease)
{
	char kep[64], katt[64], kst[64], val[32];
	char *json = meta_attachment_to_json(a);
	int r;

	if (!json)
		return -ENOMEM;
	attach_keys(a->volume_id, kep, katt, kst);
	snprintf(val, sizeof val, "%" PRIu64, a->epoch);
	json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
	json_object_array_add(cmp, cmp_value(kep, val));
	json_object_array_add(suc, op_put(katt, json, lease));
	free(json);
	r = meta_txn(m, cmp, suc, true);
	return r == -EAGAIN ? -ESTALE : r;
}

int qbd_meta_detach(struct qbd_meta *m, const struct qbd_attachment *a)
{
	char kep[64], katt[64], kst[64];

	attach_keys(a->volume_id, kep, katt, kst);
	for (int tries = 0; tries < 10; tries++) {
		struct qbd_attachment cur;
		uint64_t rev;
		int r = attachment_read(m, katt, &cur, &rev);

		if (r == -ENOENT)
			return 0;
		if (r < 0)
			return r;
		if (cur.epoch != a->epoch)
			return -ESTALE;
		/* the status document is ours too while the record is */
		json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
		json_object_array_add(cmp, cmp_mod(katt, rev));
		json_object_array_add(suc, op_delete(katt));
		json_object_array_add(suc, op_delete(kst));
		r = meta_txn(m, cmp, suc, true);
		if (r != -EAGAIN)
			return r;
	}
	return -EAGAIN;
}

int qbd_meta_status_put(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch,
			const char *json, int64_t lease)
{
	char kep[64], katt[64], kst[64], val[32];
	int r;

	if (!json || !*json)
		return -EINVAL;
	attach_keys(volume_id, kep, katt, kst);
	snprintf(val, sizeof val, "%" PRIu64, epoch);
	json_object *cmp = json_object_new_array(), *suc = json_object_new_array();
	json_object_array_add(cmp, cmp_value(kep, val));
	json_object_array_add(suc, op_put(kst, json, lease));
	r = meta_txn(m, cmp, suc, true);
	return r == -EAGAIN ? -ESTALE : r;
}

int qbd_meta_status_get(struct qbd_meta *m, uint64_t volume_id, char **json)
{
	char kep[64], katt[64], kst[64];
	struct kv kv;
	int r;

	*json = NULL;
	attach_keys(volume_id, kep, katt, kst);
	r = meta_get(m, kst, &kv);
	if (r < 0)
		return r;
	free(kv.key);
	*json = kv.value;
	return 0;
}

int qbd_meta_place(const struct qbd_node_info *nodes, size_t n,
		   unsigned replicas, uint64_t *out, unsigned *zones_found)
{
	/* Per zone, the best alive node (least used, then lowest id); then
	 * the best `replicas` of those, in the same order. */
	const struct qbd_node_info *best[64];
	unsigned nz = 0;

	for (size_t i = 0; i < n; i++) {
		const struct qbd_node_info *x = &nodes[i];
		unsigned z;

		if (!x->alive)
			continue;
		for (z = 0; z < nz; z++)
			if (strcmp(best[z]->zone, x->zone) == 0)
				break;
		if (z == nz) {
			if (nz == QBD_ARRAY_SIZE(best))
				continue;
			best[nz++] = x;
		} else if (x->used < best[z]->used ||
			   (x->used == best[z]->used && x->id < best[z]->id)) {
			best[z] = x;
		}
	}
	*zones_found = nz;
	if (nz < replicas)
		return -ENOSPC;
	/* Choose the `replicas` least used zones' nodes. */
	for (unsigned i = 0; i < nz; i++)
		for (unsigned j = i + 1; j < nz; j++)
			if (best[j]->used < best[i]->used ||
			    (best[j]->used == best[i]->used && best[j]->id < best[i]->id)) {
				const struct qbd_node_info *t = best[i];
				best[i] = best[j];
				best[j] = t;
			}
	for (unsigned i = 0; i < replicas; i++)
		out[i] = best[i]->id;
	return 0;
}
