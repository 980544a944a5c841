/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kubernetes API server's REST API over libcurl: one request at a time
 * per struct kube (one per thread), a bearer token read from its file at
 * every request (projected service account tokens are rotated), the
 * server's CA. Watches are streams of newline-delimited JSON events.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

#include "internal.h"

#define KUBE_TIMEOUT_MS 30000
#define KUBE_CONNECT_MS 5000
#define KUBE_MAX_BODY (256u << 20)

struct kube {
	CURL *curl;
	char *api, *token_file, *ca_file;
	char err[CURL_ERROR_SIZE + 64];
};

struct buf {
	char *p;
	size_t len, cap;
	bool too_big;
};

static bool buf_add(struct buf *b, const char *d, size_t n)
{
	if (b->len + n + 1 > KUBE_MAX_BODY) {
		b->too_big = true;
		return false;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = qbd_xrealloc(b->p, cap);
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
	b->p[b->len] = 0;
	return true;
}

static size_t write_cb(char *d, size_t sz, size_t n, void *arg)
{
	return buf_add(arg, d, sz * n) ? sz * n : 0;
}

int kube_open(const struct kube_conf *c, struct kube **out, char *err, size_t errlen)
{
	struct kube *k = qbd_xcalloc(1, sizeof *k);

	if (!c->api || !*c->api) {
		snprintf(err, errlen, "no API server address");
		free(k);
		return -EINVAL;
	}
	k->curl = curl_easy_init();
	if (!k->curl) {
		snprintf(err, errlen, "curl_easy_init failed");
		free(k);
		return -ENOMEM;
	}
	k->api = qbd_xstrdup(c->api);
	k->token_file = c->token_file ? qbd_xstrdup(c->token_file) : NULL;
	k->ca_file = c->ca_file ? qbd_xstrdup(c->ca_file) : NULL;
	while (strlen(k->api) > 1 && k->api[strlen(k->api) - 1] == '/')
		k->api[strlen(k->api) - 1] = 0;
	*out = k;
	return 0;
}

void kube_close(struct kube *k)
{
	if (!k)
		return;
	curl_easy_cleanup(k->curl);
	free(k->api);
	free(k->token_file);
	free(k->ca_file);
	free(k);
}

const char *kube_error(struct kube *k)
{
	return k->err;
}

/* The Authorization header from the token file, or NULL (no file). */
static struct curl_slist *headers(struct kube *k, struct curl_slist *h)
{
	char tok[8192], line[8300];
	FILE *f;
	size_t n;

	h = curl_slist_append(h, "Accept: application/json");
	if (!k->token_file)
		return h;
	f = fopen(k->token_file, "re");
	if (!f)
		return h;
	n = fread(tok, 1, sizeof tok - 1, f);
	fclose(f);
	while (n && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' '))
		n--;
	tok[n] = 0;
	snprintf(line, sizeof line, "Authorization: Bearer %s", tok);
	return curl_slist_append(h, line);
}

static void setup(struct kube *k, const char *path, struct curl_slist *h)
{
	char url[4096];

	snprintf(url, sizeof url, "%s%s", k->api, path);
	curl_easy_reset(k->curl);
	curl_easy_setopt(k->curl, CURLOPT_URL, url);
	curl_easy_setopt(k->curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(k->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(k->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)KUBE_CONNECT_MS);
	curl_easy_setopt(k->curl, CURLOPT_ERRORBUFFER, k->err);
	if (k->ca_file)
		curl_easy_setopt(k->curl, CURLOPT_CAINFO, k->ca_file);
}

int kube_request(struct kube *k, const char *method, const char *path, json_object *body,
		 long *status, json_object **out)
{
	struct curl_slist *h = headers(k, NULL);
	struct buf b = { 0 };
	const char *text = NULL;
	CURLcode rc;

	*status = 0;
	if (out)
		*out = NULL;
	if (body) {
		h = curl_slist_append(h, strcmp(method, "PATCH") == 0 ?
				      "Content-Type: application/merge-patch+json" :
				      "Content-Type: application/json");
		text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
	}
	k->err[0] = 0;
	setup(k, path, h);
	curl_easy_setopt(k->curl, CURLOPT_CUSTOMREQUEST, method);
	if (text)
		curl_easy_setopt(k->curl, CURLOPT_POSTFIELDS, text);
	curl_easy_setopt(k->curl, CURLOPT_TIMEOUT_MS, (long)KUBE_TIMEOUT_MS);
	curl_easy_setopt(k->curl, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(k->curl, CURLOPT_WRITEDATA, &b);
	rc = curl_easy_perform(k->curl);
	curl_slist_free_all(h);
	if (rc != CURLE_OK) {
		if (!k->err[0])
			snprintf(k->err, sizeof k->err, "%s", curl_easy_strerror(rc));
		free(b.p);
		return b.too_big ? -EFBIG : -EIO;
	}
	curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, status);
	if (out && b.len)
		*out = json_tokener_parse(b.p);
	if (*status >= 300) {
		json_object *o = b.len ? json_tokener_parse(b.p) : NULL;
		const char *m = jstr(o, "message");

		snprintf(k->err, sizeof k->err, "%s %s: HTTP %ld%s%s", method, path, *status,
			 m ? ": " : "", m ? m : "");
		json_object_put(o);
	}
	free(b.p);
	return 0;
}

/* ---- watch ---- */

struct watch {
	struct buf line;
	int (*fn)(json_object *ev, void *arg);
	void *arg;
	volatile int *stop;
	bool gone, quit;
};

static size_t watch_cb(char *d, size_t sz, size_t n, void *arg)
{
	struct watch *w = arg;
	size_t total = sz * n;

	if (!buf_add(&w->line, d, total))
		return 0;
	for (;;) {
		char *nl = memchr(w->line.p, '\n', w->line.len);
		json_object *ev;
		size_t used;

		if (!nl)
			break;
		*nl = 0;
		used = (size_t)(nl - w->line.p) + 1;
		ev = *w->line.p ? json_tokener_parse(w->line.p) : NULL;
		if (ev) {
			const char *type = jstr(ev, "type");

			if (type && strcmp(type, "ERROR") == 0 &&
			    jint(ev, "object.code", 0) == 410) {
				w->gone = true;
			} else if (w->fn(ev, w->arg)) {
				w->quit = true;
			}
			json_object_put(ev);
		}
		memmove(w->line.p, w->line.p + used, w->line.len - used);
		w->line.len -= used;
		w->line.p[w->line.len] = 0;
		if (w->gone || w->quit)
			return 0;
	}
	return total;
}

static int progress_cb(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	struct watch *w = arg;

	(void)a, (void)b, (void)c, (void)d;
	return *w->stop ? 1 : 0;
}

int kube_watch(struct kube *k, const char *path, const char *rv,
	       int (*fn)(json_object *ev, void *arg), void *arg, volatile int *stop)
{
	struct curl_slist *h = headers(k, NULL);
	struct watch w = { .fn = fn, .arg = arg, .stop = stop };
	char full[4096];
	long status = 0;
	CURLcode rc;

	snprintf(full, sizeof full, "%s%swatch=1&allowWatchBookmarks=true&timeoutSeconds=300"
		 "&resourceVersion=%s", path, strchr(path, '?') ? "&" : "?", rv ? rv : "");
	k->err[0] = 0;
	setup(k, full, h);
	curl_easy_setopt(k->curl, CURLOPT_WRITEFUNCTION, watch_cb);
	curl_easy_setopt(k->curl, CURLOPT_WRITEDATA, &w);
	curl_easy_setopt(k->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(k->curl, CURLOPT_XFERINFOFUNCTION, progress_cb);
	curl_easy_setopt(k->curl, CURLOPT_XFERINFODATA, &w);
	/* A stream that says nothing for 6 minutes is dead (the server ends
	 * one after timeoutSeconds). */
	curl_easy_setopt(k->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(k->curl, CURLOPT_LOW_SPEED_TIME, 360L);
	rc = curl_easy_perform(k->curl);
	curl_slist_free_all(h);
	curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, &status);
	free(w.line.p);
	if (w.gone || status == 410)
		return -ESTALE;
	if (*stop || w.quit)
		return 0;
	if (rc != CURLE_OK) {
		if (!k->err[0])
			snprintf(k->err, sizeof k->err, "%s", curl_easy_strerror(rc));
		return -EIO;
	}
	if (status >= 300) {
		snprintf(k->err, sizeof k->err, "watch %s: HTTP %ld", path, status);
		return -EIO;
	}
	return 0;
}

/* ---- paths ---- */

static const struct {
	const char *api_version, *kind, *plural;
	bool namespaced;
} kinds[] = {
	{ "v1", "Node", "nodes", false },
	{ "v1", "Pod", "pods", true },
	{ "v1", "Secret", "secrets", true },
	{ "v1", "Service", "services", true },
	{ "v1", "ConfigMap", "configmaps", true },
	{ "v1", "Event", "events", true },
	{ "apps/v1", "DaemonSet", "daemonsets", true },
	{ "apps/v1", "Deployment", "deployments", true },
	{ "apps/v1", "StatefulSet", "statefulsets", true },
	{ "storage.k8s.io/v1", "CSIDriver", "csidrivers", false },
	{ "storage.k8s.io/v1", "StorageClass", "storageclasses", false },
	{ OP_GROUP_VERSION, OP_KIND, "qbdclusters", true },
	{ "coordination.k8s.io/v1", "Lease", "leases", true },
};

int kube_path(const char *api_version, const char *kind, const char *ns, const char *name,
	      char *out, size_t outlen)
{
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		if (strcmp(kinds[i].api_version, api_version) != 0 ||
		    strcmp(kinds[i].kind, kind) != 0)
			continue;
		int n = snprintf(out, outlen, "/%s%s%s%s%s/%s%s%s",
				 strchr(api_version, '/') ? "apis/" : "api/", api_version,
				 kinds[i].namespaced && ns ? "/namespaces/" : "",
				 kinds[i].namespaced && ns ? ns : "", "", kinds[i].plural,
				 name ? "/" : "", name ? name : "");

		return n > 0 && (size_t)n < outlen ? 0 : -ENAMETOOLONG;
	}
	return -EINVAL;
}
