/* SPDX-License-Identifier: Apache-2.0 */
/* Building and reading json-c objects: the operator's objects are JSON. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

json_object *jobj(const char *key, ...)
{
	json_object *o = json_object_new_object();
	va_list ap;

	va_start(ap, key);
	while (key) {
		json_object *v = va_arg(ap, json_object *);

		if (v)
			json_object_object_add(o, key, v);
		key = va_arg(ap, const char *);
	}
	va_end(ap);
	return o;
}

json_object *jarr(json_object *first, ...)
{
	json_object *a = json_object_new_array();
	json_object *v = first;
	va_list ap;

	va_start(ap, first);
	while (v != JEND) {
		if (v)
			json_object_array_add(a, v);
		v = va_arg(ap, json_object *);
	}
	va_end(ap);
	return a;
}

json_object *js(const char *s)
{
	return json_object_new_string(s ? s : "");
}

json_object *jsf(const char *fmt, ...)
{
	char *s = NULL;
	json_object *o;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	o = json_object_new_string(s);
	free(s);
	return o;
}

json_object *ji(long long v)
{
	return json_object_new_int64(v);
}

json_object *jb(bool v)
{
	return json_object_new_boolean(v);
}

json_object *jget_key(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_is_type(o, json_type_object))
		return NULL;
	return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

json_object *jget(json_object *o, const char *path)
{
	char key[256];

	while (o && *path) {
		size_t n = strcspn(path, ".");

		if (n >= sizeof key)
			return NULL;
		memcpy(key, path, n);
		key[n] = 0;
		o = jget_key(o, key);
		path += n;
		if (*path == '.')
			path++;
	}
	return o;
}

const char *jstr(json_object *o, const char *path)
{
	json_object *v = jget(o, path);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

long long jint(json_object *o, const char *path, long long dflt)
{
	json_object *v = jget(o, path);

	return v && json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : dflt;
}

size_t jlen(json_object *arr)
{
	return arr && json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;
}

json_object *jat(json_object *arr, size_t i)
{
	return i < jlen(arr) ? json_object_array_get_idx(arr, i) : NULL;
}

bool jarr_has_str(json_object *arr, const char *s)
{
	for (size_t i = 0; i < jlen(arr); i++) {
		const char *e = json_object_get_string(jat(arr, i));

		if (e && strcmp(e, s) == 0)
			return true;
	}
	return false;
}

void jhash(json_object *o, char out[17])
{
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);

	snprintf(out, 17, "%016llx", (unsigned long long)XXH64(text, strlen(text), 0));
}
